/* The write queue of a fetch: the producer's bytes copied into chunks, handed to libuv's pool
 * in batches (hashed and written on two pool threads at once), with flow control so that the
 * upstream runs at the speed of the disk; landed chunks kept for readers near the head; the
 * sidecar that lets a fetch resume after a restart, and the resume itself (the prefix re-hash).
 * Calls down into fetch.c (lifetime, the end of a fetch); not here: readers (fetch-read.c). */
#include "cache/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache/fetch-int.h"
#include "core/log.h"

/* The write queue. The producer's bytes are copied into fixed chunks; one batch at a time
 * (up to BATCH_MAX) goes to libuv's pool as two jobs on two threads, one hashing it and one
 * writing it with pwritev, so that the upstream socket, SHA-256 and the disk overlap instead of
 * taking turns (SHA-256 is sequential over the batches, the writes need not wait for it). A
 * fetch queues at most QUEUE_MAX bytes (in the pool or waiting) before its producer waits,
 * and all fetches together at most TOTAL_MAX, except that a fetch with an empty queue may
 * always take one append (so no fetch waits on another's): memory stays flat whatever the
 * network and disk speeds. Sizes measured on loopback: see tests/bench (ingest). */
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
/* The sidecar is rewritten (from the pool, after a batch) every this many bytes: a restart
 * loses at most this much of the download. */
#define SIDECAR_EVERY (4 * 1024 * 1024)
/* The prefix re-hash reads the temp file in blocks of this size. */
#define REHASH_BLOCK  (1024 * 1024)

/* ---- flow control ---- */

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

/* The producer's pending append may complete: now, or from the idle pass (status 0), or with
 * the fetch's end. */
void rgm_fetch_append_settle(rgm_fetch_t *f)
{
    if (!f->append_cb || f->is_append_due)
        return;
    if (f->state == RGM_FETCH_RUNNING && !has_room(f))
        return;
    f->is_append_due = 1;
    rgm_fetch_queue(f);
}

/* ---- batches in the pool ---- */

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

    rgm_fetch_ref(f);
    f->jobs++;
    f->is_writing = 1;
    err = uv_queue_work(f->t->loop, w, work, after);
    if (err < 0) {
        f->jobs--;
        f->is_writing = f->jobs > 0;
        rgm_fetch_unref(f); /* f still has its producer's reference */
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
        rgm_fetch_chunks_recycle(f, f->batch);
        f->batch = NULL;
    } else if (err < 0) {
        f->batch_result = err; /* the hash job comes back; the batch then fails the fetch */
        err = 0;
    }
    return err;
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
    rgm_fetch_store_error(f, RGM_STORE_OP_WRITE, err, "serving it uncached from memory");
    rgm_fetch_go_nofile(f);
    return 0;
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
        rgm_fetch_mem_drop_head(f);
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
        rgm_fetch_chunks_recycle(f, f->batch);
    } else {
        rgm_fetch_chunks_free(&f->batch); /* no more appends: no spares needed */
        rgm_fetch_chunks_free(&f->spare);
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
        rgm_fetch_release_file(f);
        rgm_fetch_queue(f); /* failed meanwhile: let the append cb and done run */
    } else if (result < 0) {
        rgm_log(RGM_LOG_ERROR, "fetch", "write %s: %s", f->digest, uv_strerror((int)result));
        rgm_fetch_fail_internal(f, (int)result);
    } else {
        rgm_fetch_queue(f); /* readable grew */
        if (f->has_origin && f->size != UINT64_MAX && f->written < f->size && !f->is_nofile &&
            f->written >= f->sc_at + SIDECAR_EVERY)
            sidecar_prepare(f);
        err = batch_start(f);
        if (err < 0)
            rgm_fetch_fail_internal(f, err);
        else if (f->is_finishing && !f->is_writing)
            rgm_fetch_begin_verify(f);
    }
    rgm_fetch_append_settle(f);
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
    rgm_fetch_unref(f);
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
        (void)EVP_DigestInit_ex(f->md, rgm_fetch_digest_md(f->digest), NULL);
    }
    if (ftruncate(f->wfd, (off_t)f->rehash_want) < 0)
        f->rehash_ok = -1; /* cannot cut it: the bytes past the prefix would stay */
}

static void on_rehash_done(uv_work_t *w, int status)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);

    f->is_writing = 0;
    if (f->state == RGM_FETCH_RUNNING && (status < 0 || f->rehash_ok < 0)) {
        rgm_fetch_fail_internal(f, status < 0 ? status : UV_EIO);
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
        rgm_fetch_queue(f);
    } else {
        rgm_fetch_release_file(f);
        rgm_fetch_queue(f);
    }
    rgm_fetch_unref(f);
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
    f = rgm_fetch_new(t, digest);
    if (!f) {
        free(path);
        return UV_ENOMEM;
    }
    f->tmp_path = path;
    err = rgm_fetch_open_file(f, 0);
    if (err < 0) {
        rgm_fetch_dispose(f); /* deletes both files */
        return err;
    }
    f->sc = p;
    f->has_origin = 1;
    f->size = p.size;
    f->rehash_want = p.written;
    rgm_fetch_enter(f, done, ud, 1);
    f->append_cb = ready;
    f->append_ud = ready_ud;
    f->is_writing = 1;
    rgm_fetch_ref(f);
    err = uv_queue_work(t->loop, &f->work, on_rehash_work, on_rehash_done);
    if (err < 0) {
        f->is_writing = 0;
        f->append_cb = NULL;
        rgm_fetch_unref(f);
        rgm_fetch_fail_internal(f, err);
        f->has_producer = 0;
        rgm_fetch_unref(f); /* done never runs: this call fails */
        return err;
    }
    *out = f;
    return 0;
}

/* ---- producer side ---- */

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
        rgm_fetch_fail_internal(f, UV_E2BIG);
        return UV_E2BIG;
    }
    queue_copy(f, data, len);
    f->appended += len;
    err = batch_start(f);
    if (err < 0)
        rgm_fetch_fail_internal(f, err);
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
    rgm_fetch_append_settle(f);
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
        rgm_fetch_fail_internal(f, err);
    else if (!f->is_writing)
        rgm_fetch_begin_verify(f);
}
