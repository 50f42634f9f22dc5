/* Single-flight blob fetches: one producer appends into store/tmp (hashed as it goes), any
 * number of readers pread the same file up to the readable mark and are woken when it moves.
 * Verified bytes are fsync'd and renamed into the store. Callbacks to the producer's done and
 * to readers' on_more are deferred to an idle pass, so none runs inside a call into this
 * module. Not here: HTTP, registries, the index (the done callback does that). */
#include "cache/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/log.h"

#define FETCH_BUCKETS 256

struct rgm_fetches {
    uv_loop_t *loop;
    rgm_store_t *store;
    struct idle *idle; /* runs deferred done/on_more calls; exists only while fetches live */
    struct rgm_fetch *buckets[FETCH_BUCKETS];  /* in-flight fetches by the digest's first byte */
    size_t count;                              /* fetches in the table */
    size_t live;                               /* fetches allocated (in the table or ended) */
    struct rgm_fetch *queue_head, *queue_tail; /* fetches with deferred work */
};

/* Allocated apart from the table and closed when the last fetch dies: with nothing in flight
 * the table owns no handle, so that rgm_fetches_free is a plain free and a shutdown that walks
 * and closes every handle of the loop never meets ours. */
struct idle {
    uv_idle_t h;
    rgm_fetches_t *t;
};

struct rgm_fetch_reader {
    struct rgm_fetch_reader *next, *prev;
    rgm_fetch_t *f;
    void (*on_more)(rgm_fetch_reader_t *rd, void *ud);
    void *ud;
    uint64_t seen_readable; /* what on_more last reported: called again only on change */
    int seen_state;
    int is_new;  /* joined, not yet called */
    int is_gone; /* left while the reader list was being walked; freed by the sweep */
};

/* Owner rules: the table, the producer (through the rgm_fetch_* producer calls, until done has
 * run) and the libuv callbacks touch the state; readers only read it and their own node. */
struct rgm_fetch {
    rgm_fetches_t *t;
    struct rgm_fetch *next; /* table bucket chain, while is_in_table */
    int is_in_table;
    int refs; /* producer (until done ran) + readers + queued + each pending fs request */
    char digest[RGM_DIGEST_MAX];

    enum rgm_fetch_state state;
    int error;
    int has_producer; /* done not called yet */
    rgm_fetch_done_fn done;
    void *done_ud;

    char *tmp_path; /* NULL once renamed into the store or unlinked */
    int wfd;        /* producer's fd */
    int rfd;        /* readers' fd: survives the rename and the unlink */
    EVP_MD_CTX *md;

    uint64_t size;     /* expected, UINT64_MAX when not known */
    uint64_t appended; /* accepted by rgm_fetch_append (hashed) */
    uint64_t written;  /* in the file */
    uint64_t readable_at_fail;

    uv_fs_t write_req;
    int is_writing;
    int is_finishing; /* rgm_fetch_finish was called */
    int is_syncing;
    char *wbuf;
    size_t wbuf_cap, wbuf_len, wbuf_off;
    void (*append_cb)(rgm_fetch_t *f, int status, void *ud);
    void *append_ud;
    uv_fs_t fsync_req;

    struct rgm_fetch *queue_next;
    int is_queued;
    int notifying; /* > 0 while readers' on_more are being called */
    struct rgm_fetch_reader *readers_head, *readers_tail;
};

static void on_idle(uv_idle_t *h);

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
    RGM_BUG_ON(t->idle != NULL);
    free(t);
}

static void on_idle_closed(uv_handle_t *h)
{
    free(rgm_container_of((uv_idle_t *)h, struct idle, h));
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

/* ---- lifetime ---- */

static void fetch_ref(rgm_fetch_t *f)
{
    f->refs++;
}

static void fetch_dispose(rgm_fetch_t *f)
{
    RGM_BUG_ON(f->is_in_table || f->is_writing || f->is_syncing || f->readers_head);
    /* close(2) of a regular file is cheap; no need for uv_fs_close here. */
    if (f->wfd >= 0)
        close(f->wfd);
    if (f->rfd >= 0)
        close(f->rfd);
    if (f->tmp_path)
        (void)unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->wbuf);
    EVP_MD_CTX_free(f->md);
    if (--f->t->live == 0)
        idle_release(f->t); /* nothing can be queued: queued fetches are alive */
    free(f);
}

static void fetch_unref(rgm_fetch_t *f)
{
    RGM_BUG_ON(f->refs <= 0);
    if (--f->refs == 0)
        fetch_dispose(f);
}

/* Defer done and on_more calls to the idle pass. */
static void queue(rgm_fetch_t *f)
{
    rgm_fetches_t *t = f->t;

    if (f->is_queued)
        return;
    f->is_queued = 1;
    fetch_ref(f);
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
        RGM_BUG_ON(uv_idle_start(&t->idle->h, on_idle) != 0);
}

/* ---- state changes ---- */

static void fail_internal(rgm_fetch_t *f, int err)
{
    if (f->state != RGM_FETCH_RUNNING)
        return;
    f->readable_at_fail = rgm_fetch_readable(f);
    f->state = RGM_FETCH_FAILED;
    f->error = err < 0 ? err : UV_EIO;
    table_remove(f);
    if (f->tmp_path && unlink(f->tmp_path) < 0)
        rgm_log(RGM_LOG_WARN, "fetch", "cannot unlink %s: %s", f->tmp_path, strerror(errno));
    RGM_FREE(f->tmp_path);
    queue(f);
}

static void on_fsync(uv_fs_t *req)
{
    rgm_fetch_t *f = rgm_container_of(req, rgm_fetch_t, fsync_req);
    int result = (int)req->result;
    int err;

    uv_fs_req_cleanup(req);
    f->is_syncing = 0;
    if (f->state != RGM_FETCH_RUNNING) {
        queue(f); /* failed by the producer meanwhile: let done run */
    } else if (result < 0) {
        fail_internal(f, result);
    } else {
        err = rgm_store_commit(f->t->store, f->tmp_path, f->digest);
        if (err < 0) {
            rgm_log(RGM_LOG_ERROR, "fetch", "cannot rename %s into the store: %s", f->digest,
                    uv_strerror(err));
            fail_internal(f, err);
        } else {
            RGM_FREE(f->tmp_path);
            f->state = RGM_FETCH_DONE;
            f->size = f->written;
            table_remove(f);
            queue(f);
        }
    }
    fetch_unref(f);
}

static void begin_verify(rgm_fetch_t *f)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int md_len = 0;
    unsigned int i;
    int err;

    if (f->size != UINT64_MAX && f->written != f->size) {
        fail_internal(f, UV_EINVAL);
        return;
    }
    if (EVP_DigestFinal_ex(f->md, md, &md_len) != 1) {
        fail_internal(f, UV_EIO);
        return;
    }
    for (i = 0; i < md_len; i++) {
        hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    hex[2 * md_len] = '\0';
    if (strcmp(hex, f->digest + 7) != 0) {
        rgm_log(RGM_LOG_WARN, "fetch", "digest mismatch for %s: got %.6s:%s", f->digest, f->digest,
                hex);
        fail_internal(f, UV_EINVAL);
        return;
    }
    fetch_ref(f);
    f->is_syncing = 1;
    err = uv_fs_fsync(f->t->loop, &f->fsync_req, f->wfd, on_fsync);
    if (err < 0) {
        f->is_syncing = 0;
        fetch_unref(f);
        fail_internal(f, err);
    }
}

static void on_write(uv_fs_t *req);

static int issue_write(rgm_fetch_t *f)
{
    uv_buf_t b = uv_buf_init(f->wbuf + f->wbuf_off, (unsigned)(f->wbuf_len - f->wbuf_off));

    return uv_fs_write(f->t->loop, &f->write_req, f->wfd, &b, 1, (int64_t)f->written, on_write);
}

/* Handle one completed uv_fs_write; returns 1 when the rest of the chunk was re-issued. */
static int write_progress(rgm_fetch_t *f, int *result)
{
    int err;

    if (*result < 0 || f->state != RGM_FETCH_RUNNING)
        return 0;
    f->written += (uint64_t)*result;
    f->wbuf_off += (size_t)*result;
    if (f->wbuf_off >= f->wbuf_len)
        return 0;
    if (*result == 0) {
        *result = UV_EIO; /* no progress on a regular file: give up rather than spin */
        return 0;
    }
    err = issue_write(f);
    if (err == 0)
        return 1;
    *result = err;
    return 0;
}

static void on_write(uv_fs_t *req)
{
    rgm_fetch_t *f = rgm_container_of(req, rgm_fetch_t, write_req);
    void (*cb)(rgm_fetch_t *, int, void *) = f->append_cb;
    void *cb_ud = f->append_ud;
    int result = (int)req->result;
    int status;

    uv_fs_req_cleanup(req);
    if (RGM_FAULT("store.write"))
        result = UV_EIO;
    if (write_progress(f, &result))
        return;
    f->is_writing = 0;
    f->append_cb = NULL;
    f->append_ud = NULL;
    if (f->state != RGM_FETCH_RUNNING) {
        status = UV_ECANCELED; /* the producer failed the fetch meanwhile */
        queue(f);
    } else if (result < 0) {
        rgm_log(RGM_LOG_ERROR, "fetch", "write %s: %s", f->digest, uv_strerror(result));
        status = result;
        fail_internal(f, result);
    } else {
        status = 0;
        queue(f); /* readable grew */
    }
    if (cb)
        cb(f, status, cb_ud);
    if (f->state == RGM_FETCH_RUNNING && f->is_finishing && !f->is_writing && !f->is_syncing)
        begin_verify(f);
    fetch_unref(f);
}

/* ---- producer side ---- */

int rgm_fetch_start(rgm_fetches_t *t, const char *digest, rgm_fetch_done_fn done, void *ud,
                    rgm_fetch_t **out)
{
    rgm_fetch_t *f;
    size_t b;
    int err;

    *out = NULL;
    if (rgm_digest_check(digest) < 0)
        return UV_EINVAL;
    if (rgm_fetches_find(t, digest))
        return UV_EEXIST;
    f = rgm_calloc(1, sizeof(*f));
    f->t = t;
    f->wfd = -1;
    f->rfd = -1;
    f->size = UINT64_MAX;
    snprintf(f->digest, sizeof(f->digest), "%s", digest);
    t->live++;
    err = rgm_store_tmp_open(t->store, digest, &f->wfd, &f->tmp_path);
    if (err < 0)
        goto fail;
    f->rfd = open(f->tmp_path, O_RDONLY | O_CLOEXEC);
    if (f->rfd < 0) {
        err = -errno;
        goto fail;
    }
    f->md = EVP_MD_CTX_new();
    if (!f->md ||
        EVP_DigestInit_ex(f->md, strncmp(digest, "sha512:", 7) == 0 ? EVP_sha512() : EVP_sha256(),
                          NULL) != 1) {
        err = UV_ENOMEM;
        goto fail;
    }
    f->refs = 1; /* the producer's, until done has run */
    f->has_producer = 1;
    f->done = done;
    f->done_ud = ud;
    b = bucket_of(digest);
    f->next = t->buckets[b];
    t->buckets[b] = f;
    f->is_in_table = 1;
    t->count++;
    *out = f;
    return 0;

fail:
    fetch_dispose(f); /* unlinks the temp file */
    return err;
}

void rgm_fetch_set_size(rgm_fetch_t *f, uint64_t size)
{
    if (f->state != RGM_FETCH_RUNNING)
        return;
    if (f->appended > size) {
        fail_internal(f, UV_E2BIG);
        return;
    }
    f->size = size;
}

int rgm_fetch_append(rgm_fetch_t *f, const void *data, size_t len,
                     void (*cb)(rgm_fetch_t *f, int status, void *ud), void *ud)
{
    int err;

    if (f->state != RGM_FETCH_RUNNING)
        return f->error;
    if (f->is_writing)
        return UV_EBUSY;
    if (f->is_finishing)
        return UV_EINVAL;
    if (f->size != UINT64_MAX && len > f->size - f->appended) {
        fail_internal(f, UV_E2BIG);
        return UV_E2BIG;
    }
    if (len > f->wbuf_cap) {
        free(f->wbuf);
        f->wbuf = rgm_malloc(len);
        f->wbuf_cap = len;
    }
    if (len > 0)
        memcpy(f->wbuf, data, len);
    if (EVP_DigestUpdate(f->md, data, len) != 1) {
        fail_internal(f, UV_EIO);
        return UV_EIO;
    }
    f->appended += len;
    f->wbuf_len = len;
    f->wbuf_off = 0;
    f->append_cb = cb;
    f->append_ud = ud;
    f->is_writing = 1;
    fetch_ref(f);
    err = issue_write(f);
    if (err < 0) {
        f->is_writing = 0;
        f->append_cb = NULL;
        fetch_unref(f);
        fail_internal(f, err);
        return err;
    }
    return 0;
}

void rgm_fetch_finish(rgm_fetch_t *f)
{
    if (f->state != RGM_FETCH_RUNNING || f->is_finishing)
        return;
    f->is_finishing = 1;
    if (!f->is_writing)
        begin_verify(f);
}

void rgm_fetch_fail(rgm_fetch_t *f, int err)
{
    fail_internal(f, err < 0 ? err : UV_EIO);
}

uint64_t rgm_fetch_written(const rgm_fetch_t *f)
{
    return f->appended;
}

const char *rgm_fetch_digest(const rgm_fetch_t *f)
{
    return f->digest;
}

/* ---- readers ---- */

rgm_fetch_reader_t *rgm_fetch_join(rgm_fetch_t *f,
                                   void (*on_more)(rgm_fetch_reader_t *rd, void *ud), void *ud)
{
    rgm_fetch_reader_t *rd = rgm_calloc(1, sizeof(*rd));

    rd->f = f;
    rd->on_more = on_more;
    rd->ud = ud;
    rd->is_new = 1;
    rd->prev = f->readers_tail;
    if (f->readers_tail)
        f->readers_tail->next = rd;
    else
        f->readers_head = rd;
    f->readers_tail = rd;
    fetch_ref(f);
    queue(f); /* first on_more, so that a reader needs only one code path */
    return rd;
}

static void reader_free(rgm_fetch_reader_t *rd)
{
    rgm_fetch_t *f = rd->f;

    if (rd->prev)
        rd->prev->next = rd->next;
    else
        f->readers_head = rd->next;
    if (rd->next)
        rd->next->prev = rd->prev;
    else
        f->readers_tail = rd->prev;
    free(rd);
    fetch_unref(f);
}

void rgm_fetch_leave(rgm_fetch_reader_t *rd)
{
    if (!rd)
        return;
    if (rd->f->notifying > 0) {
        rd->is_gone = 1; /* the walk in notify_readers holds a pointer to it */
        return;
    }
    reader_free(rd);
}

rgm_fetch_t *rgm_fetch_reader_fetch(const rgm_fetch_reader_t *rd)
{
    return rd->f;
}

/* Call on_more of every reader whose view changed (or that is new). Readers may leave or join
 * from inside on_more: leavers are only marked, and swept once the walk is over. The caller
 * holds a reference. */
static void notify_readers(rgm_fetch_t *f)
{
    rgm_fetch_reader_t *rd, *next;
    uint64_t readable;

    f->notifying++;
    for (rd = f->readers_head; rd; rd = rd->next) {
        readable = rgm_fetch_readable(f);
        if (rd->is_gone)
            continue;
        if (!rd->is_new && rd->seen_readable == readable && rd->seen_state == (int)f->state)
            continue;
        rd->is_new = 0;
        rd->seen_readable = readable;
        rd->seen_state = (int)f->state;
        rd->on_more(rd, rd->ud);
    }
    f->notifying--;
    if (f->notifying > 0)
        return;
    for (rd = f->readers_head; rd; rd = next) {
        next = rd->next;
        if (rd->is_gone)
            reader_free(rd);
    }
}

/* Deferred work of one fetch: done once the fetch ended and its I/O is over, then readers. */
static void process(rgm_fetch_t *f)
{
    int status;

    if (f->state != RGM_FETCH_RUNNING && f->has_producer && !f->is_writing && !f->is_syncing) {
        f->has_producer = 0;
        status = f->state == RGM_FETCH_DONE ? 0 : f->error;
        if (f->done)
            f->done(f, status, f->done_ud);
        fetch_unref(f); /* the producer's; the queue's keeps f alive */
    }
    notify_readers(f);
}

static void on_idle(uv_idle_t *h)
{
    rgm_fetches_t *t = rgm_container_of(h, struct idle, h)->t;
    rgm_fetch_t *f, *next;

    f = t->queue_head;
    t->queue_head = NULL;
    t->queue_tail = NULL;
    for (; f; f = next) {
        next = f->queue_next;
        f->queue_next = NULL;
        f->is_queued = 0;
        process(f);
        fetch_unref(f);
    }
    /* h may be closing now (the last fetch died above): only use t->idle. */
    if (!t->queue_head && t->idle)
        (void)uv_idle_stop(&t->idle->h);
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
