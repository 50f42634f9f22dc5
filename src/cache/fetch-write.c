/* The write queue of a fetch: the producer's bytes copied into chunks and handed to the lane,
 * one pool job that hashes and writes them batch after batch, with flow control so that the
 * upstream runs at the speed of the disk and of SHA-256; landed chunks kept for readers near
 * the head; the sidecar that lets a fetch resume after a restart, and the resume itself (the
 * prefix re-hash). Calls down into fetch.c (lifetime, the end of a fetch); not here: readers
 * (fetch-read.c). */
#include "cache/fetch.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "cache/fetch-int.h"
#include "core/log.h"

/* The write queue. The producer's bytes are copied into fixed chunks. The lane, one libuv pool
 * job per fetch at a time, takes the sealed chunks (all but a tail that is still filling) in
 * batches of up to BATCH_MAX, hashes each and writes it with pwritev, puts it on the done list
 * and wakes the loop, which collects the landed bytes for readers. It goes on to the next
 * batch without a round trip through the loop (one per batch cost about as much as the hash:
 * see tests/bench, ingest), and ends when nothing sealed is left, after LANE_MAX bytes (so
 * that other fetches' lanes and other pool work get a thread), at an error, or when the fetch
 * ends; its after-work sends it out again when more is waiting. A fetch queues at most
 * QUEUE_MAX bytes (waiting, in the lane, or landed and not collected) before its producer
 * waits, and all fetches together at most TOTAL_MAX, except that a fetch with an empty queue
 * may always take one append (so no fetch waits on another's): memory stays flat whatever the
 * network and disk speeds. */
#define LANE_MAX       (16 * 1024 * 1024)
#define BATCH_MAX      (1024 * 1024)
#define QUEUE_MAX      (4 * 1024 * 1024)
#define TOTAL_MAX      (16 * 1024 * 1024)
/* Landed chunks kept for readers near the head, per fetch and over all fetches: a reader that
 * keeps up sends from them (no read back from the page cache). Past MEM_CHUNKS (MEM_TOTAL) a
 * chunk goes once no reader sending from memory still needs it; past MEM_HARD (MEM_TOTAL_HARD)
 * it goes anyway, and a reader that needed it reads the file (a stalled reader lags on disk).
 * The room between the two holds what the loop collects at once when it was busy while the
 * lane ran on (up to a queue's worth, QUEUE_MAX), for readers that have not sent it yet. */
#define MEM_CHUNKS     8
#define MEM_TOTAL      32
#define MEM_HARD       (MEM_CHUNKS + QUEUE_MAX / CHUNK_SIZE + 8)
#define MEM_TOTAL_HARD (2 * MEM_TOTAL)
/* The no-file fallback: bytes queued plus bytes landed in the window, per fetch. The producer
 * waits for the slowest reader when it is full. */
#define WINDOW_MAX     (4 * 1024 * 1024)
/* The sidecar is rewritten (from the pool, after a batch) every this many bytes: a restart
 * loses at most this much of the download. */
#define SIDECAR_EVERY  (4 * 1024 * 1024)
/* The prefix re-hash reads the temp file in blocks of this size. */
#define REHASH_BLOCK   (1024 * 1024)

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

/* ---- the lane (pool side) ---- */

/* Lane: after the batch that reached lane_off, the sidecar for that prefix, every
 * SIDECAR_EVERY bytes: one pwrite of a few hundred bytes in place, which a crash of the process
 * cannot tear. (A new file renamed over the old one cost an inode creation per 4 MiB, a few %
 * of an ingest in perf.) A sidecar torn by a power loss fails to parse, or its prefix fails the
 * re-hash: the resume then starts from zero, never from wrong bytes. Errors only cost the
 * resume: they are ignored. */
static void sidecar_write(rgm_fetch_t *f)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    unsigned int i;
    char text[2048];
    size_t done = 0;
    EVP_MD_CTX *c;
    ssize_t r;
    int n;

    if (!f->is_sc_on || f->lane_off >= f->sc.size || f->lane_off < f->sc_at + SIDECAR_EVERY)
        return;
    f->sc_at = f->lane_off;
    c = EVP_MD_CTX_new();
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
    f->sc.written = f->lane_off;
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

/* Lane, under mu: take the next batch, whole sealed chunks from the head, at most BATCH_MAX
 * (a chunk is sealed once it is full, or when the loop sealed the tail). 0: nothing sealed, or
 * told to stop. */
static int lane_take(rgm_fetch_t *f)
{
    struct chunk **pp = &f->q_head;
    size_t len = 0;

    if (f->is_lane_stop)
        return 0;
    while (*pp && len + (*pp)->len <= BATCH_MAX) {
        if (*pp == f->q_tail && (*pp)->len < CHUNK_SIZE && !f->is_tail_sealed)
            break;
        len += (*pp)->len;
        pp = &(*pp)->next;
    }
    if (pp == &f->q_head)
        return 0;
    f->batch = f->q_head;
    f->q_head = *pp;
    *pp = NULL;
    if (!f->q_head) {
        f->q_tail = NULL;
        f->is_tail_sealed = 0;
    }
    f->q_len -= len;
    f->batch_len = len;
    f->batch_is_hashed = 0;
    return 1;
}

static int lane_hash(rgm_fetch_t *f)
{
    const struct chunk *c;

    for (c = f->batch; c; c = c->next) {
        if (EVP_DigestUpdate(f->md, c->data, c->len) != 1)
            return UV_EIO;
    }
    return 0;
}

/* Lane: write the batch at lane_off. 0 or -errno. */
static int lane_write(rgm_fetch_t *f)
{
    struct iovec iov[BATCH_MAX / CHUNK_SIZE + 1];
    const struct chunk *c;
    size_t done = 0;
    int n = 0;
    int i = 0;
    ssize_t r;

    if (f->is_lane_fault)
        return UV_EIO;
    for (c = f->batch; c; c = c->next) {
        iov[n].iov_base = (void *)c->data;
        iov[n].iov_len = c->len;
        n++;
    }
    while (done < f->batch_len) {
        r = pwritev(f->wfd, iov + i, n - i, (off_t)(f->lane_off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? -errno : UV_EIO; /* 0: no progress on a regular file */
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
    return 0;
}

/* Pool thread: the lane. Batch after batch: hash (unless a retried batch was hashed), write
 * (unless the fetch has no file: then the batch lands in the window), land on the done list,
 * wake the loop. A batch that fails stays in batch with lane_err set. */
static void on_lane_work(uv_work_t *w)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);
    size_t total = 0;
    int is_stop;
    int err;

    f->lane_err = 0;
    for (;;) {
        if (!f->batch) {
            uv_mutex_lock(&f->mu);
            err = lane_take(f);
            uv_mutex_unlock(&f->mu);
            if (!err)
                return;
        }
        if (!f->batch_is_hashed) {
            err = lane_hash(f);
            if (err < 0) {
                f->lane_err = err;
                return;
            }
            f->batch_is_hashed = 1;
        }
        if (!f->is_nofile) {
            err = lane_write(f);
            if (err < 0) {
                f->lane_err = err;
                return;
            }
        }
        f->lane_off += f->batch_len;
        if (!f->is_nofile)
            sidecar_write(f);
        total += f->batch_len;
        uv_mutex_lock(&f->mu);
        if (f->done_tail)
            f->done_tail->next = f->batch;
        else
            f->done_head = f->batch;
        for (f->done_tail = f->batch; f->done_tail->next; f->done_tail = f->done_tail->next)
            ;
        f->done_len += f->batch_len;
        is_stop = f->is_lane_stop;
        uv_mutex_unlock(&f->mu);
        f->batch = NULL;
        f->batch_len = 0;
        (void)uv_async_send(&f->t->lanes->h);
        if (is_stop || total >= LANE_MAX)
            return;
    }
}

/* ---- the lane (loop side) ---- */

static void on_lanes_wake(uv_async_t *h);
static void on_lane_done(uv_work_t *w, int status);

/* Does a reader sending from memory (at or past mem_off) still need the oldest kept chunk? */
static int mem_head_is_needed(const rgm_fetch_t *f)
{
    const uint64_t end = f->mem_off + f->mem_head->len;
    const rgm_fetch_reader_t *rd;

    for (rd = f->readers_head; rd; rd = rd->next) {
        if (!rd->is_gone && rd->pos >= f->mem_off && rd->pos < end)
            return 1;
    }
    return 0;
}

/* A landed batch, [written - len, written): kept for readers that keep up, within the limits;
 * the oldest chunks go first. Without readers nothing is kept. */
static void mem_keep(rgm_fetch_t *f, struct chunk *list, size_t len)
{
    struct chunk *c;

    if (!f->mem_head)
        f->mem_off = f->written - len;
    for (c = list; c; c = c->next) {
        f->mem_n++;
        f->t->mem_n++;
        if (!c->next)
            break;
    }
    if (f->mem_tail)
        f->mem_tail->next = list;
    else
        f->mem_head = list;
    f->mem_tail = c;
    while (f->mem_head &&
           (!f->readers_head || f->mem_n > MEM_HARD || f->t->mem_n > MEM_TOTAL_HARD ||
            ((f->mem_n > MEM_CHUNKS || f->t->mem_n > MEM_TOTAL) && !mem_head_is_needed(f))))
        rgm_fetch_mem_drop_head(f);
}

/* Landed bytes (hashed, and written when there is a file): readable, and kept for readers or
 * recycled, or kept in the window without a file. After the end they are only freed. */
static void land(rgm_fetch_t *f, struct chunk *list, size_t len)
{
    f->queued -= len;
    f->t->queued -= len;
    if (f->state != RGM_FETCH_RUNNING) {
        rgm_fetch_chunks_free(&list);
        return;
    }
    f->written += len;
    if (f->is_nofile) {
        if (f->win_tail)
            f->win_tail->next = list;
        else
            f->win_head = list;
        for (f->win_tail = list; f->win_tail->next; f->win_tail = f->win_tail->next)
            ;
        f->win_len += len;
        return;
    }
    f->file_end = f->written;
    mem_keep(f, list, len);
}

/* Take what the lane has landed since the last call. */
static void lane_collect(rgm_fetch_t *f)
{
    struct chunk *list;
    size_t len;

    uv_mutex_lock(&f->mu);
    list = f->done_head;
    len = f->done_len;
    f->done_head = f->done_tail = NULL;
    f->done_len = 0;
    uv_mutex_unlock(&f->mu);
    if (!list)
        return;
    land(f, list, len);
    rgm_fetch_queue(f); /* readable grew */
    rgm_fetch_append_settle(f);
}

static void on_lanes_wake(uv_async_t *h)
{
    rgm_fetches_t *t = rgm_container_of(h, struct lanes, h)->t;
    rgm_fetch_t *f;

    for (f = t->lanes_head; f; f = f->lane_next)
        lane_collect(f); /* defers all callbacks: the list stays as it is */
}

static void lanes_unlist(rgm_fetch_t *f)
{
    rgm_fetch_t **pp;

    for (pp = &f->t->lanes_head; *pp; pp = &(*pp)->lane_next) {
        if (*pp == f) {
            *pp = f->lane_next;
            break;
        }
    }
    f->lane_next = NULL;
}

/* Send the lane out when it is not and there is something for it: a retried batch, or a
 * sealed chunk. A tail still filling is sealed only when is_seal (rgm_fetch_finish, and the
 * idle pass after the loop turn that queued it: the turn's other reads fill it first, and a
 * slow upstream's bytes still move on). */
static int lane_start(rgm_fetch_t *f, int is_seal)
{
    rgm_fetches_t *t = f->t;
    int has_sealed;
    int err;

    if (f->is_writing || f->state != RGM_FETCH_RUNNING)
        return 0;
    if (!f->batch) {
        /* no lane out: mu is only for form's sake */
        uv_mutex_lock(&f->mu);
        has_sealed = f->q_head &&
                     (f->q_head != f->q_tail || f->q_head->len == CHUNK_SIZE || f->is_tail_sealed);
        if (!has_sealed && f->q_tail && is_seal) {
            f->is_tail_sealed = 1;
            has_sealed = 1;
        }
        uv_mutex_unlock(&f->mu);
        if (!has_sealed) {
            if (f->q_tail && !f->is_seal_due) {
                f->is_seal_due = 1;
                rgm_fetch_queue(f);
            }
            return 0;
        }
    }
    if (!t->lanes) {
        t->lanes = rgm_malloc(sizeof(*t->lanes));
        t->lanes->t = t;
        err = uv_async_init(t->loop, &t->lanes->h, on_lanes_wake);
        if (err < 0) {
            free(t->lanes);
            t->lanes = NULL;
            return err;
        }
        uv_unref((uv_handle_t *)&t->lanes->h); /* the pool job keeps the loop alive */
    }
    f->is_sc_on = f->has_origin && f->size != UINT64_MAX && !f->is_nofile;
    f->sc.size = f->size;
    f->lane_off = f->written;
    f->is_lane_fault = !f->is_nofile && RGM_FAULT("store.write");
    rgm_fetch_ref(f);
    f->is_writing = 1;
    err = uv_queue_work(t->loop, &f->work, on_lane_work, on_lane_done);
    if (err < 0) {
        f->is_writing = 0;
        rgm_fetch_unref(f); /* f still has its producer's reference */
        return err;
    }
    f->lane_next = t->lanes_head;
    t->lanes_head = f;
    return 0;
}

/* A batch's write failed: an eviction round (when configured) and one retry of the same batch
 * (already hashed); when that fails too, the fetch goes on without the file and the batch
 * lands in the window. */
static void batch_failed(rgm_fetch_t *f, int err)
{
    struct chunk *list = f->batch;
    size_t len = f->batch_len;

    if (!f->is_retried) {
        f->is_retried = 1;
        rgm_store_count_error(f->t->store, RGM_STORE_OP_WRITE, err); /* logged if it stays */
        if (f->t->evict)
            f->t->evict(f->t->evict_ud);
        return; /* lane_start sends the lane out with the batch again */
    }
    rgm_fetch_store_error(f, RGM_STORE_OP_WRITE, err, "serving it uncached from memory");
    f->batch = NULL;
    f->batch_len = 0;
    rgm_fetch_go_nofile(f);
    land(f, list, len); /* hashed: it lands in the window (or is freed: no reader left) */
    rgm_fetch_queue(f);
}

/* The lane is back: collect what it landed; a failed batch is retried, lands without a file or
 * fails the fetch; then the lane goes out again when more is waiting, or the end comes. */
static void on_lane_done(uv_work_t *w, int status)
{
    rgm_fetch_t *f = rgm_container_of(w, rgm_fetch_t, work);
    int err = status < 0 ? status : f->lane_err;

    f->is_writing = 0;
    lanes_unlist(f);
    lane_collect(f);
    if (f->state == RGM_FETCH_RUNNING && f->batch) {
        if (err < 0 && f->batch_is_hashed && status == 0 && !f->is_nofile) {
            batch_failed(f, err);
        } else {
            rgm_log(RGM_LOG_ERROR, "fetch", "write %s: %s", f->digest,
                    uv_strerror(err < 0 ? err : UV_EIO));
            rgm_fetch_fail_internal(f, err < 0 ? err : UV_EIO);
        }
    }
    if (f->state != RGM_FETCH_RUNNING) {
        f->queued -= f->batch_len;
        f->t->queued -= f->batch_len;
        rgm_fetch_chunks_free(&f->batch);
        f->batch_len = 0;
        rgm_fetch_release_file(f);
        rgm_fetch_queue(f); /* failed meanwhile: let the append cb and done run */
    } else {
        err = lane_start(f, f->is_finishing);
        if (err < 0)
            rgm_fetch_fail_internal(f, err);
        else if (f->is_finishing && !f->is_writing && f->queued == 0)
            rgm_fetch_begin_verify(f);
    }
    rgm_fetch_append_settle(f);
    rgm_fetch_unref(f);
}

void rgm_fetch_seal_due(rgm_fetch_t *f)
{
    int err;

    if (!f->is_seal_due)
        return;
    f->is_seal_due = 0;
    err = lane_start(f, 1);
    if (err < 0)
        rgm_fetch_fail_internal(f, err);
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

/* Copy len bytes to the queue's tail, in as many chunks as they take. The bytes go in outside
 * mu (a lane never reads past a chunk's len, nor takes a tail that is filling); lengths and
 * links change under it. */
static void queue_copy(rgm_fetch_t *f, const char *data, size_t len)
{
    struct chunk *c;
    size_t n;

    while (len > 0) {
        uv_mutex_lock(&f->mu);
        c = f->q_tail;
        if (c && (c->len == CHUNK_SIZE || f->is_tail_sealed))
            c = NULL;
        uv_mutex_unlock(&f->mu);
        if (c) {
            n = CHUNK_SIZE - c->len < len ? CHUNK_SIZE - c->len : len;
            memcpy(c->data + c->len, data, n);
            uv_mutex_lock(&f->mu);
            c->len += n;
        } else {
            c = f->spare;
            if (c)
                f->spare = c->next;
            else
                c = rgm_malloc(sizeof(*c));
            n = CHUNK_SIZE < len ? CHUNK_SIZE : len;
            memcpy(c->data, data, n);
            c->next = NULL;
            c->len = n;
            uv_mutex_lock(&f->mu);
            if (f->q_tail)
                f->q_tail->next = c;
            else
                f->q_head = c;
            f->q_tail = c;
            f->is_tail_sealed = 0;
        }
        f->q_len += n;
        uv_mutex_unlock(&f->mu);
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
    err = lane_start(f, 0);
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
    uv_mutex_lock(&f->mu);
    if (f->q_tail)
        f->is_tail_sealed = 1; /* a lane out takes the tail too */
    uv_mutex_unlock(&f->mu);
    err = lane_start(f, 1);
    if (err < 0)
        rgm_fetch_fail_internal(f, err);
    else if (!f->is_writing)
        rgm_fetch_begin_verify(f);
}
