/* Single-flight blob fetches: one producer appends into a bounded queue of chunks, which
 * libuv's pool hashes and writes into store/tmp in batches (the hash and the write of a batch
 * on two pool threads at once) while the producer goes on reading; any number of readers send
 * up to the readable mark and are woken when it moves: from the latest landed chunks while
 * they keep up, else from the file. Verified bytes are fsync'd and renamed into the store. A
 * sidecar beside the temp file lets a fetch cut by a restart resume (re-hashing its prefix in the
 * pool). When the store cannot take the bytes (a full disk), the fetch goes on without the file:
 * readers are served from a bounded window of the latest bytes in memory, and nothing is cached.
 * Callbacks to the producer's done and to readers' on_more are deferred to an idle pass, so none
 * runs inside a call into this module. Not here: HTTP, registries, the index (the done callback
 * does that). */
#include "cache/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/log.h"
#include "core/util.h"

#define FETCH_BUCKETS 256

/* The write queue. The producer's bytes are copied into fixed chunks; one batch at a time
 * (up to BATCH_MAX) goes to libuv's pool as two jobs on two threads, one hashing it and one
 * writing it with pwritev, so that the upstream socket, SHA-256 and the disk overlap instead of
 * taking turns (SHA-256 is sequential over the batches, the writes need not wait for it). A
 * fetch queues at most QUEUE_MAX bytes (in the pool or waiting) before its producer waits,
 * and all fetches together at most TOTAL_MAX, except that a fetch with an empty queue may
 * always take one append (so no fetch waits on another's): memory stays flat whatever the
 * network and disk speeds. Sizes measured on loopback: see tests/bench (ingest). */
#define CHUNK_SIZE    (256 * 1024)
#define BATCH_MAX     (1024 * 1024)
#define QUEUE_MAX     (4 * 1024 * 1024)
#define TOTAL_MAX     (16 * 1024 * 1024)
/* Landed chunks kept for readers near the head, per fetch and over all fetches: a reader that
 * keeps up sends from them (no read back from the page cache) in writes of up to a chunk. */
#define MEM_CHUNKS    8
#define MEM_TOTAL     32
/* The no-file fallback: bytes queued plus bytes landed in the window, per fetch. The producer
 * waits for the slowest reader when it is full. */
#define WINDOW_MAX    (4 * 1024 * 1024)
/* A reader sends at most this much of the window at once (rgm_resp_write copies it). */
#define PEEK_MAX      (64 * 1024)
/* The sidecar is rewritten (from the pool, after a batch) every this many bytes: a restart
 * loses at most this much of the download. */
#define SIDECAR_EVERY (4 * 1024 * 1024)
/* The prefix re-hash reads the temp file in blocks of this size. */
#define REHASH_BLOCK  (1024 * 1024)

struct chunk {
    struct chunk *next;
    size_t len;
    char data[CHUNK_SIZE];
};

struct rgm_fetches {
    uv_loop_t *loop;
    rgm_store_t *store;
    struct idle *idle; /* runs deferred done/on_more calls; exists only while fetches live */
    struct rgm_fetch *buckets[FETCH_BUCKETS];  /* in-flight fetches by the digest's first byte */
    size_t count;                              /* fetches in the table */
    size_t live;                               /* fetches allocated (in the table or ended) */
    size_t queued;                             /* bytes in every fetch's write queue */
    size_t mem_n;                              /* landed chunks kept for readers, all fetches */
    struct rgm_fetch *queue_head, *queue_tail; /* fetches with deferred work */
    rgm_fetch_evict_fn evict;                  /* run at once on a store write error */
    void *evict_ud;
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
    int is_new;   /* joined, not yet called */
    int is_gone;  /* left while the reader list was being walked; freed by the sweep */
    uint64_t pos; /* bytes this reader has sent (rgm_fetch_reader_at): pins the window */
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

    char *tmp_path; /* NULL once renamed into the store, unlinked or handed back */
    int wfd;        /* producer's fd */
    int rfd;        /* readers' fd: survives the rename and the unlink; -1 without a file */
    EVP_MD_CTX *md;
    int is_stored; /* DONE and renamed into the store */
    int is_keep;   /* suspended: the file and its sidecar go back to the store */

    /* The no-file fallback (is_nofile, after a store error the retry did not cure): bytes
     * [0, file_end) stay readable from rfd; later ones land in the window [win_off, written)
     * instead of the file, and are freed once every reader has sent them. */
    int is_nofile;
    int is_retried;    /* a failed batch was retried once (after an eviction round) */
    uint64_t file_end; /* bytes readable from rfd (= written while there is a file) */
    uint64_t win_off;
    size_t win_len;
    struct chunk *win_head, *win_tail;

    /* The sidecar (see store.h). sc is filled on the loop before the first batch
     * (rgm_fetch_set_origin) and only read by the pool after that; sc_at is the pool's. */
    char *sc_path; /* tmp_path + RGM_STORE_KEEP_SUFFIX; kept until dispose */
    int sc_fd;     /* the sidecar, opened by the first write job that writes it; else -1 */
    rgm_store_partial_t sc;
    int has_origin;
    uint64_t sc_at; /* written when the sidecar was last written */
    /* rgm_fetch_resume: the pool re-hashes the first rehash_want bytes (is_writing meanwhile) */
    uint64_t rehash_want;
    int rehash_ok; /* pool: the prefix matched */

    uint64_t size;     /* expected, UINT64_MAX when not known */
    uint64_t appended; /* accepted by rgm_fetch_append (hashed) */
    uint64_t written;  /* landed: in the file, or (no file) hashed into the window */
    uint64_t readable_at_fail;

    /* The write queue (loop side): chunks waiting, then the batch in the pool. While a batch
     * is in the pool (is_writing), the hash job owns md, the write job owns wfd's file offset
     * past written and sc, and both read the batch's chunks; the loop touches none of them
     * until batch_complete. */
    struct chunk *q_head, *q_tail; /* waiting for the pool, in order */
    struct chunk *batch;           /* in the pool */
    struct chunk *spare;           /* recycled chunks (at most QUEUE_MAX / CHUNK_SIZE + 1) */
    size_t queued;                 /* bytes waiting + in the pool */
    size_t batch_len;
    ssize_t batch_result; /* pool (write job): bytes written, or -errno */
    int hash_result;      /* pool (hash job): 0 or UV_EIO */
    int batch_is_hashed;  /* the batch was hashed already (its write is being retried) */
    uv_work_t work;       /* the write job (and the re-hash of a resume) */
    uv_work_t hwork;      /* the hash job, beside the write job on another pool thread */
    int jobs;             /* jobs of the batch still in the pool */
    int job_status;       /* the first uv_work status < 0 of the batch's jobs */
    int is_writing;       /* a batch (or the re-hash) is in the pool */
    /* The sidecar for the prefix [0, sc_due) is to be written by the next write job (0: none);
     * its prefix was computed on the loop, while no hash job ran. */
    uint64_t sc_due;
    /* Landed chunks kept in memory for readers that keep up: [mem_off, written) minus what was
     * dropped; at most MEM_CHUNKS per fetch and MEM_TOTAL over all. Readers further behind
     * read the file (they lag on disk, never pinning memory). */
    struct chunk *mem_head, *mem_tail;
    uint64_t mem_off;
    size_t mem_n;     /* chunks in the list */
    int is_finishing; /* rgm_fetch_finish was called */
    int is_syncing;
    int is_append_due;    /* append_cb is to run from the idle pass */
    int is_producer_fail; /* failed by rgm_fetch_fail (append cbs then get UV_ECANCELED) */
    void (*append_cb)(rgm_fetch_t *f, int status, void *ud);
    void *append_ud;
    uv_fs_t fsync_req;

    struct rgm_fetch *queue_next;
    int is_queued;
    int notifying; /* > 0 while readers' on_more are being called */
    struct rgm_fetch_reader *readers_head, *readers_tail;
};

static void on_idle(uv_idle_t *h);
static void chunks_free(struct chunk **head);
static void queue_drop(rgm_fetch_t *f);
static void release_file(rgm_fetch_t *f);
static void append_settle(rgm_fetch_t *f);
static void mem_release(rgm_fetch_t *f);

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
    release_file(f);
    free(f->sc_path);
    if (f->sc_fd >= 0)
        close(f->sc_fd);
    RGM_BUG_ON(f->queued != 0); /* queue_drop ran at the end; no batch is in the pool */
    mem_release(f);             /* (before the spares: it may recycle) */
    chunks_free(&f->q_head);
    chunks_free(&f->spare);
    chunks_free(&f->win_head);
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
    mem_release(f);
    f->state = RGM_FETCH_FAILED;
    f->error = err < 0 ? err : UV_EIO;
    queue_drop(f); /* a batch in the pool comes back to on_batch_done */
    chunks_free(&f->win_head);
    f->win_tail = NULL;
    f->win_len = 0;
    table_remove(f);
    if (!f->is_writing)
        release_file(f); /* else when the batch (or the re-hash) is back */
    queue(f);
}

/* The temp file and its sidecar, once no batch is in the pool: handed back to the store when
 * the fetch was suspended (for a later resume), else deleted. */
static void release_file(rgm_fetch_t *f)
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
static void store_error(rgm_fetch_t *f, enum rgm_store_op op, int err, const char *then)
{
    rgm_store_count_error(f->t->store, op, err);
    rgm_log(RGM_LOG_WARN, "fetch", "store %s failed for %s: %s (%s); %s", rgm_store_op_name(op),
            f->digest, uv_strerror(err), rgm_store_errno_name(err), then);
}

/* Go on without the file: what is in it stays readable through rfd, later bytes land in the
 * window only, nothing is cached, and the fetch leaves the table (a new request for the digest
 * gets a fetch of its own). With no reader left there is no one to serve: the fetch fails. */
static void go_nofile(rgm_fetch_t *f)
{
    mem_release(f);
    f->is_nofile = 1;
    f->file_end = f->written;
    f->win_off = f->written;
    if (f->wfd >= 0)
        close(f->wfd);
    f->wfd = -1;
    f->is_keep = 0;
    release_file(f); /* unlinked: frees its blocks once the last reader closes rfd */
    table_remove(f);
    chunks_free(&f->spare);
    if (!f->readers_head)
        fail_internal(f, UV_ECANCELED);
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
        release_file(f);
        queue(f); /* failed by the producer meanwhile: let done run */
        fetch_unref(f);
        return;
    }
    err = result;
    if (err < 0) {
        store_error(f, RGM_STORE_OP_FSYNC, err, "served from the temp file, not cached");
    } else {
        err = rgm_store_commit(f->t->store, f->tmp_path, f->digest);
        if (err < 0)
            store_error(f, RGM_STORE_OP_RENAME, err, "served from the temp file, not cached");
    }
    if (err < 0) {
        release_file(f); /* verified bytes stay readable through rfd */
    } else {
        RGM_FREE(f->tmp_path);
        if (f->sc_path)
            (void)unlink(f->sc_path);
        f->is_stored = 1;
    }
    done_ok(f);
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
    chunks_free(&f->spare); /* every byte is in the file */
    if (strcmp(hex, f->digest + 7) != 0) {
        rgm_log(RGM_LOG_WARN, "fetch", "digest mismatch for %s: got %.6s:%s", f->digest, f->digest,
                hex);
        fail_internal(f, UV_EINVAL);
        return;
    }
    if (f->is_nofile) {
        done_ok(f); /* nothing to store */
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

/* ---- the write queue ---- */

static void chunks_free(struct chunk **head)
{
    struct chunk *c;

    while ((c = *head) != NULL) {
        *head = c->next;
        free(c);
    }
}

static void chunks_recycle(rgm_fetch_t *f, struct chunk *list)
{
    struct chunk *c;

    while ((c = list) != NULL) {
        list = c->next;
        c->next = f->spare;
        c->len = 0;
        f->spare = c;
    }
}

/* No more bytes will be queued (the fetch ended or all were appended): drop what is queued
 * and the spares; a batch in the pool is freed when it comes back. */
static void queue_drop(rgm_fetch_t *f)
{
    size_t pending = f->queued - (f->is_writing ? f->batch_len : 0);

    chunks_free(&f->q_head);
    f->q_tail = NULL;
    chunks_free(&f->spare);
    f->queued -= pending;
    f->t->queued -= pending;
}

/* Room for another append: under this fetch's limit and the table's, or an empty queue.
 * Without a file, the window counts too, and nothing passes a full window. */
static int has_room(const rgm_fetch_t *f)
{
    if (f->is_nofile)
        return (f->queued == 0 && f->win_len == 0) ||
               (f->queued + f->win_len < WINDOW_MAX && f->t->queued < TOTAL_MAX);
    if (f->queued == 0)
        return 1;
    return f->queued < QUEUE_MAX && f->t->queued < TOTAL_MAX;
}

/* Loop, between batches (no hash job runs): the sidecar for the prefix [0, written) that md
 * covers now, for the next write job to put in place (sidecar_flush). */
static void sidecar_prepare(rgm_fetch_t *f)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    unsigned int i;
    EVP_MD_CTX *c = EVP_MD_CTX_new();

    if (!c || EVP_MD_CTX_copy_ex(c, f->md) != 1 || EVP_DigestFinal_ex(c, md, &md_len) != 1) {
        EVP_MD_CTX_free(c);
        return;
    }
    EVP_MD_CTX_free(c);
    memcpy(f->sc.prefix, f->digest, 7);
    for (i = 0; i < md_len; i++) {
        f->sc.prefix[7 + 2 * i] = "0123456789abcdef"[md[i] >> 4];
        f->sc.prefix[7 + 2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    f->sc.prefix[7 + 2 * md_len] = '\0';
    f->sc.size = f->size;
    f->sc.written = f->written;
    f->sc_due = f->written;
    f->sc_at = f->written;
}

/* Pool thread (write job): rewrite the prepared sidecar in place: one pwrite of a few hundred
 * bytes, which a crash of the process cannot tear. (A new file renamed over the old one cost an
 * inode creation per 4 MiB, a few % of an ingest in perf.) A sidecar torn by a power loss
 * fails to parse, or its prefix fails the re-hash: the resume then starts from zero, never
 * from wrong bytes. Errors only cost the resume: they are ignored. */
static void sidecar_flush(rgm_fetch_t *f)
{
    char text[2048];
    size_t done = 0;
    ssize_t r;
    int n;

    n = rgm_store_partial_format(&f->sc, text, sizeof(text));
    if (n < 0)
        return;
    if (f->sc_fd < 0)
        f->sc_fd = open(f->sc_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (f->sc_fd < 0)
        return;
    while (done < (size_t)n) {
        r = pwrite(f->sc_fd, text + done, (size_t)n - done, (off_t)done);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return;
        done += (size_t)r;
    }
    if (ftruncate(f->sc_fd, (off_t)n) < 0)
        return; /* the text only grows (written gains digits): nothing stale is left anyway */
}

/* Pool thread: hash the batch. Only md and the batch (read-only) are touched; the write job
 * reads the same chunks at the same time on another thread. */
static void on_hash_work(uv_work_t *w)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, hwork);
    const struct chunk *c;

    f->hash_result = 0;
    for (c = f->batch; c; c = c->next) {
        if (EVP_DigestUpdate(f->md, c->data, c->len) != 1) {
            f->hash_result = UV_EIO;
            return;
        }
    }
}

/* Pool thread: write the batch at offset written (after the sidecar that is due). Only wfd,
 * sc and the batch (read-only) are touched (see the struct). */
static void on_write_work(uv_work_t *w)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);
    struct iovec iov[BATCH_MAX / CHUNK_SIZE + 1];
    const struct chunk *c;
    uint64_t off = f->written;
    size_t done = 0;
    int n = 0;
    int i = 0;
    ssize_t r;

    if (f->sc_due > 0)
        sidecar_flush(f);
    for (c = f->batch; c; c = c->next) {
        iov[n].iov_base = (void *)c->data;
        iov[n].iov_len = c->len;
        n++;
    }
    while (done < f->batch_len) {
        r = pwritev(f->wfd, iov + i, n - i, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            f->batch_result = r < 0 ? -errno : UV_EIO; /* 0: no progress on a regular file */
            return;
        }
        done += (size_t)r;
        while (i < n && (size_t)r >= iov[i].iov_len) {
            r -= (ssize_t)iov[i].iov_len;
            i++;
        }
        if (i < n) {
            iov[i].iov_base = (char *)iov[i].iov_base + r;
            iov[i].iov_len -= (size_t)r;
        }
    }
    f->batch_result = (ssize_t)done;
}

/* Queue one job of the batch; 0 or a uv_queue_work error (the job is then not counted). */
static int job_queue(rgm_fetch_t *f, uv_work_t *w, uv_work_cb work, uv_after_work_cb after)
{
    int err;

    fetch_ref(f);
    f->jobs++;
    f->is_writing = 1;
    err = uv_queue_work(f->t->loop, w, work, after);
    if (err < 0) {
        f->jobs--;
        f->is_writing = f->jobs > 0;
        fetch_unref(f); /* f still has its producer's reference */
    }
    return err;
}

static void on_hash_done(uv_work_t *w, int status);
static void on_write_done(uv_work_t *w, int status);

/* Hand the next batch (whole chunks from the head, at most BATCH_MAX; the tail chunk too once
 * it is full or all bytes were appended) to the pool. */
static int batch_start(rgm_fetch_t *f)
{
    struct chunk **pp = &f->q_head;
    size_t len = 0;
    int err;

    if (f->is_writing || !f->q_head || f->state != RGM_FETCH_RUNNING)
        return 0;
    while (*pp && len + (*pp)->len <= BATCH_MAX) {
        if (*pp == f->q_tail && (*pp)->len < CHUNK_SIZE && !f->is_finishing && len > 0)
            break; /* let the tail fill up unless nothing else is waiting */
        len += (*pp)->len;
        pp = &(*pp)->next;
    }
    f->batch = f->q_head;
    f->q_head = *pp;
    *pp = NULL;
    if (!f->q_head)
        f->q_tail = NULL;
    f->batch_len = len;
    f->batch_result = f->is_nofile ? (ssize_t)len : 0; /* no file: hashed, lands in the window */
    f->hash_result = 0;
    f->batch_is_hashed = 0;
    /* SHA-256 is sequential, the write is not: both jobs run at once, on two pool threads. */
    err = job_queue(f, &f->hwork, on_hash_work, on_hash_done);
    if (err == 0 && !f->is_nofile)
        err = job_queue(f, &f->work, on_write_work, on_write_done);
    if (err < 0 && f->jobs == 0) {
        chunks_recycle(f, f->batch);
        f->batch = NULL;
    } else if (err < 0) {
        f->batch_result = err; /* the hash job comes back; the batch then fails the fetch */
        err = 0;
    }
    return err;
}

/* The producer's pending append may complete: now, or from the idle pass (status 0), or with
 * the fetch's end. */
static void append_settle(rgm_fetch_t *f)
{
    if (!f->append_cb || f->is_append_due)
        return;
    if (f->state == RGM_FETCH_RUNNING && !has_room(f))
        return;
    f->is_append_due = 1;
    queue(f);
}

/* A batch's write failed: an eviction round (when configured) and one retry of the same
 * batch (already hashed); when that fails too, the fetch goes on without the file. 1 when the
 * batch was handed to the pool again, 0 when it now lands in the window. */
static int batch_failed(rgm_fetch_t *f, int err)
{
    if (!f->is_retried) {
        f->is_retried = 1;
        rgm_store_count_error(f->t->store, RGM_STORE_OP_WRITE, err); /* logged if it stays */
        if (f->t->evict)
            f->t->evict(f->t->evict_ud);
        f->batch_result = 0;
        if (job_queue(f, &f->work, on_write_work, on_write_done) == 0)
            return 1; /* batch_is_hashed stays set: the retry only writes */
    }
    store_error(f, RGM_STORE_OP_WRITE, err, "serving it uncached from memory");
    go_nofile(f);
    return 0;
}

/* Landed bytes of a batch: recycled once in the file; kept in the window without one. */
/* Drop the oldest kept chunk (recycled while more appends may come). */
static void mem_drop_head(rgm_fetch_t *f)
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
        chunks_recycle(f, c);
    else
        free(c);
}

/* Readers read the file from now on (the fetch ended, or has no file). */
static void mem_release(rgm_fetch_t *f)
{
    while (f->mem_head)
        mem_drop_head(f);
}

/* A landed batch, [written - batch_len, written): kept for readers that keep up, within the
 * limits; the oldest chunks go first. Without readers nothing is kept. */
static void mem_keep(rgm_fetch_t *f)
{
    struct chunk *c;

    if (!f->mem_head)
        f->mem_off = f->written - f->batch_len;
    for (c = f->batch; c; c = c->next) {
        f->mem_n++;
        f->t->mem_n++;
        if (!c->next)
            break;
    }
    if (f->mem_tail)
        f->mem_tail->next = f->batch;
    else
        f->mem_head = f->batch;
    f->mem_tail = c;
    while (f->mem_head && (f->mem_n > MEM_CHUNKS || f->t->mem_n > MEM_TOTAL || !f->readers_head))
        mem_drop_head(f);
}

/* Landed bytes of a batch (is_landed: all of them): kept for readers, recycled, or kept in the
 * window without a file. */
static void batch_landed(rgm_fetch_t *f, int is_landed)
{
    if (f->is_nofile && f->state == RGM_FETCH_RUNNING) {
        if (f->win_tail)
            f->win_tail->next = f->batch;
        else
            f->win_head = f->batch;
        for (f->win_tail = f->batch; f->win_tail->next; f->win_tail = f->win_tail->next)
            ;
        f->win_len += f->batch_len;
    } else if (f->state == RGM_FETCH_RUNNING && is_landed && f->batch) {
        mem_keep(f);
    } else if (f->state == RGM_FETCH_RUNNING && !f->is_finishing) {
        chunks_recycle(f, f->batch);
    } else {
        chunks_free(&f->batch); /* no more appends: no spares needed */
        chunks_free(&f->spare);
    }
    f->batch = NULL;
}

/* Both jobs of the batch are back (or its write's retry is): it lands, or is retried, or fails
 * the fetch; then the next batch goes. */
static void batch_complete(rgm_fetch_t *f, int status)
{
    ssize_t result = status < 0 ? status : f->batch_result;
    int err;

    if (f->hash_result < 0 && !f->batch_is_hashed)
        result = f->hash_result;
    else if (status == 0)
        f->batch_is_hashed = 1;
    f->is_writing = 0;
    if (!f->is_nofile && RGM_FAULT("store.write"))
        result = UV_EIO;
    if (f->state == RGM_FETCH_RUNNING && result < 0 && f->batch_is_hashed && status == 0 &&
        batch_failed(f, (int)result))
        return; /* the retry holds its own reference */
    if (f->state == RGM_FETCH_RUNNING && f->is_nofile)
        result = (ssize_t)f->batch_len;
    f->queued -= f->batch_len;
    f->t->queued -= f->batch_len;
    if (f->state == RGM_FETCH_RUNNING && result >= 0) {
        f->written += (uint64_t)result;
        if (!f->is_nofile)
            f->file_end = f->written;
    }
    batch_landed(f, result == (ssize_t)f->batch_len);
    f->batch_len = 0;
    if (f->state != RGM_FETCH_RUNNING) {
        release_file(f);
        queue(f); /* failed meanwhile: let the append cb and done run */
    } else if (result < 0) {
        rgm_log(RGM_LOG_ERROR, "fetch", "write %s: %s", f->digest, uv_strerror((int)result));
        fail_internal(f, (int)result);
    } else {
        queue(f); /* readable grew */
        if (f->has_origin && f->size != UINT64_MAX && f->written < f->size && !f->is_nofile &&
            f->written >= f->sc_at + SIDECAR_EVERY)
            sidecar_prepare(f);
        err = batch_start(f);
        if (err < 0)
            fail_internal(f, err);
        else if (f->is_finishing && !f->is_writing)
            begin_verify(f);
    }
    append_settle(f);
}

static void job_done(rgm_fetch_t *f, int status)
{
    if (status < 0 && f->job_status == 0)
        f->job_status = status;
    if (--f->jobs == 0) {
        status = f->job_status;
        f->job_status = 0;
        batch_complete(f, status);
    }
    fetch_unref(f);
}

static void on_hash_done(uv_work_t *w, int status)
{
    job_done(rgm_container_of(w, rgm_fetch_t, hwork), status);
}

static void on_write_done(uv_work_t *w, int status)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);

    f->sc_due = 0; /* written by it (or not: then only a resume loses) */
    job_done(f, status);
}

/* ---- producer side ---- */

static const EVP_MD *digest_md(const char *digest)
{
    return strncmp(digest, "sha512:", 7) == 0 ? EVP_sha512() : EVP_sha256();
}

/* A new fetch, not in the table yet, with its md ready. */
static rgm_fetch_t *fetch_new(rgm_fetches_t *t, const char *digest)
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
    f->md = EVP_MD_CTX_new();
    if (!f->md || EVP_DigestInit_ex(f->md, digest_md(digest), NULL) != 1) {
        fetch_dispose(f);
        return NULL;
    }
    return f;
}

/* Open the fds on f->tmp_path and name its sidecar. 0 or a negative errno. */
static int fetch_open_file(rgm_fetch_t *f, int wflags)
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

static void fetch_enter(rgm_fetch_t *f, rgm_fetch_done_fn done, void *ud, int is_in_table)
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
    f = fetch_new(t, digest);
    if (!f)
        return UV_ENOMEM;
    err = rgm_store_tmp_open(t->store, digest, &f->wfd, &f->tmp_path);
    if (err == 0)
        err = fetch_open_file(f, 0);
    if (err < 0 && rgm_store_is_disk_error(err)) {
        /* No room even for an empty file: the same fallback as a failed write, from byte 0. */
        store_error(f, RGM_STORE_OP_WRITE, err, "serving it uncached from memory");
        release_file(f);
        if (f->wfd >= 0)
            close(f->wfd);
        f->wfd = -1;
        f->is_nofile = 1;
        fetch_enter(f, done, ud, 0);
        *out = f;
        return 0;
    }
    if (err < 0) {
        fetch_dispose(f); /* unlinks the temp file */
        return err;
    }
    fetch_enter(f, done, ud, 1);
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
        return; /* the pool may read sc from the first batch on */
    snprintf(f->sc.registry, sizeof(f->sc.registry), "%s", registry);
    snprintf(f->sc.repo, sizeof(f->sc.repo), "%s", repo);
    f->has_origin = 1;
}

/* ---- resuming a partial kept across a restart ---- */

/* Pool thread: hash the first rehash_want bytes of the file; compare with the sidecar. On a
 * mismatch (or a short file), start over: md fresh and the file empty. Either way the file is
 * cut where the download goes on. */
static void on_rehash_work(uv_work_t *w)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);
    unsigned char md[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int md_len = 0;
    unsigned int i;
    char *buf = rgm_malloc(REHASH_BLOCK);
    EVP_MD_CTX *c = NULL;
    uint64_t off = 0;
    ssize_t n;

    f->rehash_ok = 0;
    while (off < f->rehash_want) {
        n = pread(f->wfd, buf,
                  f->rehash_want - off < REHASH_BLOCK ? (size_t)(f->rehash_want - off)
                                                      : REHASH_BLOCK,
                  (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0 || EVP_DigestUpdate(f->md, buf, (size_t)n) != 1)
            break;
        off += (uint64_t)n;
    }
    free(buf);
    c = EVP_MD_CTX_new();
    if (off == f->rehash_want && c && EVP_MD_CTX_copy_ex(c, f->md) == 1 &&
        EVP_DigestFinal_ex(c, md, &md_len) == 1) {
        for (i = 0; i < md_len; i++) {
            hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
            hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
        }
        hex[2 * md_len] = '\0';
        f->rehash_ok = strcmp(hex, f->sc.prefix + 7) == 0;
    }
    EVP_MD_CTX_free(c);
    if (!f->rehash_ok) {
        f->rehash_want = 0;
        (void)EVP_DigestInit_ex(f->md, digest_md(f->digest), NULL);
    }
    if (ftruncate(f->wfd, (off_t)f->rehash_want) < 0)
        f->rehash_ok = -1; /* cannot cut it: the bytes past the prefix would stay */
}

static void on_rehash_done(uv_work_t *w, int status)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);

    f->is_writing = 0;
    if (f->state == RGM_FETCH_RUNNING && (status < 0 || f->rehash_ok < 0)) {
        fail_internal(f, status < 0 ? status : UV_EIO);
    } else if (f->state == RGM_FETCH_RUNNING) {
        f->appended = f->written = f->file_end = f->rehash_want;
        f->sc_at = f->written;
        if (f->rehash_ok)
            rgm_log(RGM_LOG_INFO, "fetch",
                    "resuming %s at %" PRIu64 " of %" PRIu64 " bytes (prefix re-hashed, matches)",
                    f->digest, f->written, f->size);
        else
            rgm_log(RGM_LOG_WARN, "fetch",
                    "partial of %s does not match its sidecar (re-hash): fetching it from zero",
                    f->digest);
        f->is_append_due = 1;
        queue(f);
    } else {
        release_file(f);
        queue(f);
    }
    fetch_unref(f);
}

int rgm_fetch_resume(rgm_fetches_t *t, const char *digest, const char *registry,
                     rgm_fetch_done_fn done, void *ud,
                     void (*ready)(rgm_fetch_t *f, int status, void *ud), void *ready_ud,
                     rgm_fetch_t **out)
{
    rgm_store_partial_t p;
    rgm_fetch_t *f;
    char *path = NULL;
    int err;

    *out = NULL;
    if (rgm_digest_check(digest) < 0)
        return UV_EINVAL;
    if (rgm_fetches_find(t, digest))
        return UV_EEXIST;
    if (rgm_store_take_partial(t->store, digest, registry, &path, &p) != 1)
        return UV_ENOENT;
    f = fetch_new(t, digest);
    if (!f) {
        free(path);
        return UV_ENOMEM;
    }
    f->tmp_path = path;
    err = fetch_open_file(f, 0);
    if (err < 0) {
        fetch_dispose(f); /* deletes both files */
        return err;
    }
    f->sc = p;
    f->has_origin = 1;
    f->size = p.size;
    f->rehash_want = p.written;
    fetch_enter(f, done, ud, 1);
    f->append_cb = ready;
    f->append_ud = ready_ud;
    f->is_writing = 1;
    fetch_ref(f);
    err = uv_queue_work(t->loop, &f->work, on_rehash_work, on_rehash_done);
    if (err < 0) {
        f->is_writing = 0;
        f->append_cb = NULL;
        fetch_unref(f);
        fail_internal(f, err);
        f->has_producer = 0;
        fetch_unref(f); /* done never runs: this call fails */
        return err;
    }
    *out = f;
    return 0;
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

/* Copy len bytes to the queue's tail, in as many chunks as they take. */
static void queue_copy(rgm_fetch_t *f, const char *data, size_t len)
{
    struct chunk *c = f->q_tail;
    size_t n;

    while (len > 0) {
        if (!c || c->len == CHUNK_SIZE) {
            c = f->spare;
            if (c)
                f->spare = c->next;
            else
                c = rgm_malloc(sizeof(*c));
            c->next = NULL;
            c->len = 0;
            if (f->q_tail)
                f->q_tail->next = c;
            else
                f->q_head = c;
            f->q_tail = c;
        }
        n = CHUNK_SIZE - c->len < len ? CHUNK_SIZE - c->len : len;
        memcpy(c->data + c->len, data, n);
        c->len += n;
        data += n;
        len -= n;
        f->queued += n;
        f->t->queued += n;
    }
}

/* The checks and the queueing shared by rgm_fetch_write (is_wait 0: only when there is room)
 * and rgm_fetch_append (is_wait 1). */
static int enqueue(rgm_fetch_t *f, const void *data, size_t len, int is_wait)
{
    int err;

    if (f->state != RGM_FETCH_RUNNING)
        return f->error;
    if (f->append_cb)
        return UV_EBUSY;
    if (f->is_finishing)
        return UV_EINVAL;
    if (!is_wait && !has_room(f))
        return UV_EAGAIN;
    if (f->size != UINT64_MAX && len > f->size - f->appended) {
        fail_internal(f, UV_E2BIG);
        return UV_E2BIG;
    }
    queue_copy(f, data, len);
    f->appended += len;
    err = batch_start(f);
    if (err < 0)
        fail_internal(f, err);
    return err;
}

int rgm_fetch_write(rgm_fetch_t *f, const void *data, size_t len)
{
    return enqueue(f, data, len, 0);
}

int rgm_fetch_append(rgm_fetch_t *f, const void *data, size_t len,
                     void (*cb)(rgm_fetch_t *f, int status, void *ud), void *ud)
{
    int err = enqueue(f, data, len, 1);

    if (err < 0)
        return err;
    f->append_cb = cb;
    f->append_ud = ud;
    append_settle(f);
    return 0;
}

void rgm_fetch_finish(rgm_fetch_t *f)
{
    int err;

    if (f->state != RGM_FETCH_RUNNING || f->is_finishing)
        return;
    f->is_finishing = 1;
    err = batch_start(f); /* the tail chunk, when it was waiting to fill up */
    if (err < 0)
        fail_internal(f, err);
    else if (!f->is_writing)
        begin_verify(f);
}

void rgm_fetch_fail(rgm_fetch_t *f, int err)
{
    if (f->state == RGM_FETCH_RUNNING)
        f->is_producer_fail = 1;
    fail_internal(f, err < 0 ? err : UV_EIO);
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

/* No file: drop the window's chunks that every reader has sent, and let the producer go on.
 * A reader that already stands before the window (it joined late) pins nothing: it is cut. */
static void window_trim(rgm_fetch_t *f)
{
    const rgm_fetch_reader_t *rd;
    uint64_t low = f->written;
    struct chunk *c;

    if (!f->is_nofile)
        return;
    for (rd = f->readers_head; rd; rd = rd->next)
        if (!rd->is_gone && rd->pos < low && (rd->pos >= f->win_off || f->win_off == f->file_end))
            low = rd->pos;
    while ((c = f->win_head) != NULL && f->win_off + c->len <= low) {
        f->win_head = c->next;
        if (!f->win_head)
            f->win_tail = NULL;
        f->win_off += c->len;
        f->win_len -= c->len;
        c->next = NULL;
        if (f->state == RGM_FETCH_RUNNING && !f->is_finishing)
            chunks_recycle(f, c);
        else
            free(c);
    }
    append_settle(f);
}

void rgm_fetch_reader_at(rgm_fetch_reader_t *rd, uint64_t off)
{
    rd->pos = off;
    window_trim(rd->f);
}

int rgm_fetch_peek(const rgm_fetch_reader_t *rd, uint64_t off, const char **data, size_t *len)
{
    const rgm_fetch_t *f = rd->f;
    uint64_t readable = rgm_fetch_readable(f);
    uint64_t at;
    const struct chunk *c;

    *data = NULL;
    *len = 0;
    if (f->mem_head && off >= f->mem_off && off < readable) {
        /* near the head: from the landed chunks still in memory (f has a file here) */
        for (at = f->mem_off, c = f->mem_head; c; at += c->len, c = c->next) {
            if (off < at + c->len) {
                *data = c->data + (off - at);
                *len = (size_t)((at + c->len < readable ? at + c->len : readable) - off);
                return 0;
            }
        }
    }
    if (off < f->file_end && (!f->is_nofile || f->win_off == f->file_end)) {
        at = readable < f->file_end ? readable : f->file_end;
        *len = at > off ? (size_t)(at - off < SIZE_MAX ? at - off : SIZE_MAX) : 0;
        return 1;
    }
    if (!f->is_nofile) {
        return 1; /* nothing more yet */
    }
    if (off < f->win_off || (f->state == RGM_FETCH_FAILED && off < readable))
        return UV_ENOBUFS;
    for (at = f->win_off, c = f->win_head; c; at += c->len, c = c->next) {
        if (off < at + c->len) {
            *data = c->data + (off - at);
            *len = (size_t)(at + c->len - off);
            if (*len > readable - off)
                *len = off < readable ? (size_t)(readable - off) : 0;
            if (*len > PEEK_MAX)
                *len = PEEK_MAX;
            break;
        }
    }
    return 0;
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
    if (f->is_nofile && !f->readers_head && f->state == RGM_FETCH_RUNNING)
        fail_internal(f, UV_ECANCELED); /* no file and no one to serve: stop the upstream */
    window_trim(f);
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

/* Deferred work of one fetch: the producer's append cb when it is due (or the fetch ended),
 * done once the fetch ended and its I/O is over, then readers. */
static void process(rgm_fetch_t *f)
{
    void (*cb)(rgm_fetch_t *, int, void *) = f->append_cb;
    void *cb_ud = f->append_ud;
    int status;

    if (cb && (f->is_append_due || f->state != RGM_FETCH_RUNNING)) {
        f->append_cb = NULL;
        f->append_ud = NULL;
        f->is_append_due = 0;
        status = 0;
        if (f->state == RGM_FETCH_FAILED)
            status = f->is_producer_fail ? UV_ECANCELED : f->error;
        cb(f, status, cb_ud); /* may append again, finish or fail */
    }
    if (f->state != RGM_FETCH_RUNNING && f->has_producer && !f->is_writing && !f->is_syncing &&
        !f->append_cb) {
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

int rgm_fetch_is_nofile(const rgm_fetch_t *f)
{
    return f->is_nofile;
}
