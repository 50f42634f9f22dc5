/* The fetch object: the table of fetches in flight (single flight by digest), a fetch's
 * lifetime (references, dispose), its chunk lists, the queue of deferred work with its idle
 * handle, and its end (verify, fsync, rename into the store, or fail; the no-file fallback).
 * The write queue is fetch-write.c and the readers are fetch-read.c; both call down into this
 * file, which reaches them only through the idle pass (rgm_fetch_on_idle in fetch-read.c, run
 * by libuv). Not here: HTTP, registries, the index (the done callback does that). */
#include "cache/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache/fetch-int.h"
#include "core/log.h"
#include "core/util.h"

/* ---- table ---- */

static size_t bucket_of(const char *digest)
{
    unsigned v = 0;
    int i;

    /* digest is valid: two lowercase hex characters after "shaNNN:" */
    for (i = 7; i < 9; i++)
        v = v * 16 + (unsigned)(digest[i] <= '9' ? digest[i] - '0' : digest[i] - 'a' + 10);
    return v % FETCH_BUCKETS;
}

rgm_fetches_t *rgm_fetches_new(uv_loop_t *loop, rgm_store_t *store)
{
    rgm_fetches_t *t = rgm_calloc(1, sizeof(*t));

    t->loop = loop;
    t->store = store;
    return t;
}

void rgm_fetches_free(rgm_fetches_t *t)
{
    if (!t)
        return;
    if (t->live != 0) {
        /* A caller bug; leaking beats freeing memory that callbacks still point to. */
        rgm_log(RGM_LOG_ERROR, "fetch", "%zu fetches still alive at shutdown", t->live);
        return;
    }
    RGM_BUG_ON(t->idle != NULL || t->lanes != NULL);
    free(t);
}

static void on_idle_closed(uv_handle_t *h)
{
    free(rgm_container_of((uv_idle_t *)h, struct idle, h));
}

static void on_lanes_closed(uv_handle_t *h)
{
    free(rgm_container_of((uv_async_t *)h, struct lanes, h));
}

/* The lanes' wake-up (made by fetch-write.c when the first lane goes out), with the last
 * fetch: no lane can be out then. */
static void lanes_release(rgm_fetches_t *t)
{
    if (!t->lanes)
        return;
    uv_close((uv_handle_t *)&t->lanes->h, on_lanes_closed);
    t->lanes = NULL;
}

static void idle_release(rgm_fetches_t *t)
{
    if (!t->idle)
        return;
    uv_close((uv_handle_t *)&t->idle->h, on_idle_closed);
    t->idle = NULL;
}

rgm_fetch_t *rgm_fetches_find(rgm_fetches_t *t, const char *digest)
{
    rgm_fetch_t *f;

    if (rgm_digest_check(digest) < 0)
        return NULL;
    for (f = t->buckets[bucket_of(digest)]; f; f = f->next) {
        if (strcmp(f->digest, digest) == 0)
            return f;
    }
    return NULL;
}

size_t rgm_fetches_count(const rgm_fetches_t *t)
{
    return t->count;
}

static void table_remove(rgm_fetch_t *f)
{
    rgm_fetch_t **pp;

    if (!f->is_in_table)
        return;
    for (pp = &f->t->buckets[bucket_of(f->digest)]; *pp; pp = &(*pp)->next) {
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    }
    f->next = NULL;
    f->is_in_table = 0;
    f->t->count--;
}

/* ---- chunk lists ---- */

void rgm_fetch_chunks_free(struct chunk **head)
{
    struct chunk *c;

    while ((c = *head) != NULL) {
        *head = c->next;
        free(c);
    }
}

void rgm_fetch_chunks_recycle(rgm_fetch_t *f, struct chunk *list)
{
    struct chunk *c;

    while ((c = list) != NULL) {
        list = c->next;
        c->next = f->spare;
        c->len = 0;
        f->spare = c;
    }
}

/* The fetch ended: what waits in the queue is dropped (a lane out stops after its batch; that
 * batch and what it landed are freed when it is back: fetch-write.c), and the spares. */
static void queue_drop(rgm_fetch_t *f)
{
    size_t pending;

    uv_mutex_lock(&f->mu);
    f->is_lane_stop = 1;
    pending = f->q_len;
    rgm_fetch_chunks_free(&f->q_head);
    f->q_tail = NULL;
    f->q_len = 0;
    uv_mutex_unlock(&f->mu);
    rgm_fetch_chunks_free(&f->spare);
    f->queued -= pending;
    f->t->queued -= pending;
}

/* Drop the oldest kept chunk (recycled while more appends may come). */
void rgm_fetch_mem_drop_head(rgm_fetch_t *f)
{
    struct chunk *c = f->mem_head;

    f->mem_head = c->next;
    if (!f->mem_head)
        f->mem_tail = NULL;
    f->mem_off += c->len;
    f->mem_n--;
    f->t->mem_n--;
    c->next = NULL;
    if (f->state == RGM_FETCH_RUNNING && !f->is_finishing)
        rgm_fetch_chunks_recycle(f, c);
    else
        free(c);
}

/* Readers read the file from now on (the fetch ended, or has no file). */
static void mem_release(rgm_fetch_t *f)
{
    while (f->mem_head)
        rgm_fetch_mem_drop_head(f);
}

/* ---- lifetime ---- */

void rgm_fetch_dispose(rgm_fetch_t *f)
{
    RGM_BUG_ON(f->is_in_table || f->is_writing || f->is_syncing || f->readers_head);
    /* close(2) of a regular file is cheap; no need for uv_fs_close here. */
    if (f->wfd >= 0)
        close(f->wfd);
    if (f->rfd >= 0)
        close(f->rfd);
    rgm_fetch_release_file(f);
    free(f->sc_path);
    if (f->sc_fd >= 0)
        close(f->sc_fd);
    RGM_BUG_ON(f->queued != 0); /* the queue was dropped at the end; the lane is back */
    mem_release(f);             /* (before the spares: it may recycle) */
    rgm_fetch_chunks_free(&f->q_head);
    rgm_fetch_chunks_free(&f->spare);
    rgm_fetch_chunks_free(&f->win_head);
    rgm_fetch_chunks_free(&f->done_head);
    rgm_fetch_chunks_free(&f->batch);
    EVP_MD_CTX_free(f->md);
    if (f->has_mu)
        uv_mutex_destroy(&f->mu);
    if (--f->t->live == 0) {
        idle_release(f->t); /* nothing can be queued: queued fetches are alive */
        lanes_release(f->t);
    }
    free(f);
}

void rgm_fetch_unref(rgm_fetch_t *f)
{
    RGM_BUG_ON(f->refs <= 0);
    if (--f->refs == 0)
        rgm_fetch_dispose(f);
}

/* Defer done and on_more calls to the idle pass. */
void rgm_fetch_queue(rgm_fetch_t *f)
{
    rgm_fetches_t *t = f->t;

    if (f->is_queued)
        return;
    f->is_queued = 1;
    rgm_fetch_ref(f);
    f->queue_next = NULL;
    if (t->queue_tail)
        t->queue_tail->queue_next = f;
    else
        t->queue_head = f;
    t->queue_tail = f;
    if (!t->idle) {
        t->idle = rgm_malloc(sizeof(*t->idle));
        t->idle->t = t;
        /* uv_idle_init and uv_idle_start cannot fail on a valid loop and handle */
        RGM_BUG_ON(uv_idle_init(t->loop, &t->idle->h) != 0);
    }
    if (!uv_is_active((uv_handle_t *)&t->idle->h))
        RGM_BUG_ON(uv_idle_start(&t->idle->h, rgm_fetch_on_idle) != 0);
}

/* ---- state changes ---- */

void rgm_fetch_fail_internal(rgm_fetch_t *f, int err)
{
    if (f->state != RGM_FETCH_RUNNING)
        return;
    f->readable_at_fail = rgm_fetch_readable(f);
    mem_release(f);
    f->state = RGM_FETCH_FAILED;
    f->error = err < 0 ? err : UV_EIO;
    queue_drop(f); /* a lane out comes back to on_lane_done */
    rgm_fetch_chunks_free(&f->win_head);
    f->win_tail = NULL;
    f->win_len = 0;
    table_remove(f);
    if (!f->is_writing)
        rgm_fetch_release_file(f); /* else when the batch (or the re-hash) is back */
    rgm_fetch_queue(f);
}

/* The temp file and its sidecar, once no batch is in the pool: handed back to the store when
 * the fetch was suspended (for a later resume), else deleted. */
void rgm_fetch_release_file(rgm_fetch_t *f)
{
    int err;

    if (!f->tmp_path)
        return;
    if (f->is_keep && f->state == RGM_FETCH_FAILED) {
        err = rgm_store_keep_partial(f->t->store, f->tmp_path);
        if (err == 0)
            rgm_log(RGM_LOG_INFO, "fetch", "kept the partial of %s for a later resume", f->digest);
    } else {
        if (unlink(f->tmp_path) < 0)
            rgm_log(RGM_LOG_WARN, "fetch", "cannot unlink %s: %s", f->tmp_path, strerror(errno));
        if (f->sc_path)
            (void)unlink(f->sc_path);
    }
    RGM_FREE(f->tmp_path);
}

/* A store error: count it, and say once per fetch what failed. */
void rgm_fetch_store_error(rgm_fetch_t *f, enum rgm_store_op op, int err, const char *then)
{
    rgm_store_count_error(f->t->store, op, err);
    rgm_log(RGM_LOG_WARN, "fetch", "store %s failed for %s: %s (%s); %s", rgm_store_op_name(op),
            f->digest, uv_strerror(err), rgm_store_errno_name(err), then);
}

/* Go on without the file: what is in it stays readable through rfd, later bytes land in the
 * window only, nothing is cached, and the fetch leaves the table (a new request for the digest
 * gets a fetch of its own). With no reader left there is no one to serve: the fetch fails. */
void rgm_fetch_go_nofile(rgm_fetch_t *f)
{
    mem_release(f);
    f->is_nofile = 1;
    f->file_end = f->written;
    f->win_off = f->written;
    if (f->wfd >= 0)
        close(f->wfd);
    f->wfd = -1;
    f->is_keep = 0;
    rgm_fetch_release_file(f); /* unlinked: frees its blocks once the last reader closes rfd */
    table_remove(f);
    rgm_fetch_chunks_free(&f->spare);
    if (!f->readers_head)
        rgm_fetch_fail_internal(f, UV_ECANCELED);
}

/* Verified: readers may send every byte. */
static void done_ok(rgm_fetch_t *f)
{
    mem_release(f);
    f->state = RGM_FETCH_DONE;
    f->size = f->written;
    if (!f->is_nofile)
        f->file_end = f->written;
    table_remove(f);
    rgm_fetch_queue(f);
}

static void on_fsync(uv_fs_t *req)
{
    rgm_fetch_t *f = rgm_container_of(req, rgm_fetch_t, fsync_req);
    int result = (int)req->result;
    int err;

    uv_fs_req_cleanup(req);
    f->is_syncing = 0;
    if (f->state != RGM_FETCH_RUNNING) {
        rgm_fetch_release_file(f);
        rgm_fetch_queue(f); /* failed by the producer meanwhile: let done run */
        rgm_fetch_unref(f);
        return;
    }
    err = result;
    if (err < 0) {
        rgm_fetch_store_error(f, RGM_STORE_OP_FSYNC, err, "served from the temp file, not cached");
    } else {
        err = rgm_store_commit(f->t->store, f->tmp_path, f->digest);
        if (err < 0)
            rgm_fetch_store_error(f, RGM_STORE_OP_RENAME, err,
                                  "served from the temp file, not cached");
    }
    if (err < 0) {
        rgm_fetch_release_file(f); /* verified bytes stay readable through rfd */
    } else {
        RGM_FREE(f->tmp_path);
        if (f->sc_path)
            (void)unlink(f->sc_path);
        f->is_stored = 1;
    }
    done_ok(f);
    rgm_fetch_unref(f);
}

void rgm_fetch_begin_verify(rgm_fetch_t *f)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int md_len = 0;
    unsigned int i;
    int err;

    if (f->size != UINT64_MAX && f->written != f->size) {
        rgm_fetch_fail_internal(f, UV_EINVAL);
        return;
    }
    if (EVP_DigestFinal_ex(f->md, md, &md_len) != 1) {
        rgm_fetch_fail_internal(f, UV_EIO);
        return;
    }
    for (i = 0; i < md_len; i++) {
        hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    hex[2 * md_len] = '\0';
    rgm_fetch_chunks_free(&f->spare); /* every byte is in the file */
    if (strcmp(hex, f->digest + 7) != 0) {
        rgm_log(RGM_LOG_WARN, "fetch", "digest mismatch for %s: got %.6s:%s", f->digest, f->digest,
                hex);
        rgm_fetch_fail_internal(f, UV_EINVAL);
        return;
    }
    if (f->is_nofile) {
        done_ok(f); /* nothing to store */
        return;
    }
    rgm_fetch_ref(f);
    f->is_syncing = 1;
    err = uv_fs_fsync(f->t->loop, &f->fsync_req, f->wfd, on_fsync);
    if (err < 0) {
        f->is_syncing = 0;
        rgm_fetch_unref(f);
        rgm_fetch_fail_internal(f, err);
    }
}

/* ---- producer side ---- */

const EVP_MD *rgm_fetch_digest_md(const char *digest)
{
    return strncmp(digest, "sha512:", 7) == 0 ? EVP_sha512() : EVP_sha256();
}

/* A new fetch, not in the table yet, with its md ready. */
rgm_fetch_t *rgm_fetch_new(rgm_fetches_t *t, const char *digest)
{
    rgm_fetch_t *f = rgm_calloc(1, sizeof(*f));

    f->t = t;
    f->wfd = -1;
    f->rfd = -1;
    f->sc_fd = -1;
    f->size = UINT64_MAX;
    snprintf(f->digest, sizeof(f->digest), "%s", digest);
    snprintf(f->sc.digest, sizeof(f->sc.digest), "%s", digest);
    t->live++;
    f->has_mu = uv_mutex_init(&f->mu) == 0;
    f->md = EVP_MD_CTX_new();
    if (!f->has_mu || !f->md || EVP_DigestInit_ex(f->md, rgm_fetch_digest_md(digest), NULL) != 1) {
        rgm_fetch_dispose(f);
        return NULL;
    }
    return f;
}

/* Open the fds on f->tmp_path and name its sidecar. 0 or a negative errno. */
int rgm_fetch_open_file(rgm_fetch_t *f, int wflags)
{
    size_t n = strlen(f->tmp_path);

    f->sc_path = rgm_malloc(n + sizeof(RGM_STORE_KEEP_SUFFIX));
    memcpy(f->sc_path, f->tmp_path, n);
    memcpy(f->sc_path + n, RGM_STORE_KEEP_SUFFIX, sizeof(RGM_STORE_KEEP_SUFFIX));
    if (f->wfd < 0) {
        f->wfd = open(f->tmp_path, O_RDWR | O_CLOEXEC | wflags);
        if (f->wfd < 0)
            return -errno;
    }
    f->rfd = open(f->tmp_path, O_RDONLY | O_CLOEXEC);
    if (f->rfd < 0)
        return -errno;
    return 0;
}

void rgm_fetch_enter(rgm_fetch_t *f, rgm_fetch_done_fn done, void *ud, int is_in_table)
{
    size_t b = bucket_of(f->digest);

    f->refs = 1; /* the producer's, until done has run */
    f->has_producer = 1;
    f->done = done;
    f->done_ud = ud;
    if (!is_in_table)
        return;
    f->next = f->t->buckets[b];
    f->t->buckets[b] = f;
    f->is_in_table = 1;
    f->t->count++;
}

int rgm_fetch_start(rgm_fetches_t *t, const char *digest, rgm_fetch_done_fn done, void *ud,
                    rgm_fetch_t **out)
{
    rgm_fetch_t *f;
    int err;

    *out = NULL;
    if (rgm_digest_check(digest) < 0)
        return UV_EINVAL;
    if (rgm_fetches_find(t, digest))
        return UV_EEXIST;
    f = rgm_fetch_new(t, digest);
    if (!f)
        return UV_ENOMEM;
    err = rgm_store_tmp_open(t->store, digest, &f->wfd, &f->tmp_path);
    if (err == 0)
        err = rgm_fetch_open_file(f, 0);
    if (err < 0 && rgm_store_is_disk_error(err)) {
        /* No room even for an empty file: the same fallback as a failed write, from byte 0. */
        rgm_fetch_store_error(f, RGM_STORE_OP_WRITE, err, "serving it uncached from memory");
        rgm_fetch_release_file(f);
        if (f->wfd >= 0)
            close(f->wfd);
        f->wfd = -1;
        f->is_nofile = 1;
        rgm_fetch_enter(f, done, ud, 0);
        *out = f;
        return 0;
    }
    if (err < 0) {
        rgm_fetch_dispose(f); /* unlinks the temp file */
        return err;
    }
    rgm_fetch_enter(f, done, ud, 1);
    *out = f;
    return 0;
}

void rgm_fetches_set_evict(rgm_fetches_t *t, rgm_fetch_evict_fn fn, void *ud)
{
    t->evict = fn;
    t->evict_ud = ud;
}

void rgm_fetch_set_origin(rgm_fetch_t *f, const char *registry, const char *repo)
{
    if (f->has_origin || f->appended > 0 || f->is_writing)
        return; /* the lane may read sc from the first batch on */
    snprintf(f->sc.registry, sizeof(f->sc.registry), "%s", registry);
    snprintf(f->sc.repo, sizeof(f->sc.repo), "%s", repo);
    f->has_origin = 1;
}

void rgm_fetch_set_size(rgm_fetch_t *f, uint64_t size)
{
    if (f->state != RGM_FETCH_RUNNING)
        return;
    if (f->appended > size) {
        rgm_fetch_fail_internal(f, UV_E2BIG);
        return;
    }
    f->size = size;
}

void rgm_fetch_fail(rgm_fetch_t *f, int err)
{
    if (f->state == RGM_FETCH_RUNNING)
        f->is_producer_fail = 1;
    rgm_fetch_fail_internal(f, err < 0 ? err : UV_EIO);
}

void rgm_fetch_suspend(rgm_fetch_t *f)
{
    if (f->state == RGM_FETCH_RUNNING && !f->is_nofile)
        f->is_keep = 1;
    rgm_fetch_fail(f, UV_ECANCELED);
}

int rgm_fetch_is_stored(const rgm_fetch_t *f)
{
    return f->is_stored;
}

uint64_t rgm_fetch_written(const rgm_fetch_t *f)
{
    return f->appended;
}

const char *rgm_fetch_digest(const rgm_fetch_t *f)
{
    return f->digest;
}

/* ---- state for readers ---- */

enum rgm_fetch_state rgm_fetch_state(const rgm_fetch_t *f)
{
    return f->state;
}

int rgm_fetch_error(const rgm_fetch_t *f)
{
    return f->error;
}

uint64_t rgm_fetch_readable(const rgm_fetch_t *f)
{
    switch (f->state) {
    case RGM_FETCH_DONE:
        return f->written;
    case RGM_FETCH_FAILED:
        return f->readable_at_fail;
    default:
        return f->written > 0 ? f->written - 1 : 0;
    }
}

uint64_t rgm_fetch_size(const rgm_fetch_t *f)
{
    return f->size;
}

int rgm_fetch_fd(const rgm_fetch_t *f)
{
    return f->rfd;
}

int rgm_fetch_is_nofile(const rgm_fetch_t *f)
{
    return f->is_nofile;
}
