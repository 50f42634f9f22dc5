/* GET/HEAD /v2/<name>/blobs/<digest>: cached blobs from the store (Range, sendfile); misses
 * become one job per digest that fetches from upstream into a cache fetch (the temp file is
 * the buffer) while every client streams from that file at its own pace. Lost upstream
 * connections resume with Range, and so does a partial kept across a restart. When the store
 * cannot take the bytes, clients are served from the fetch's memory window, uncached. */
#include "registry/blobs.h"

#include <uv.h>
#include <inttypes.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

/* A reader sends at most this much from memory per write, in at most GATHER_N pieces. */
#define GATHER_MAX     (1024 * 1024)
#define GATHER_N       16
#define RESUME_MAX     4
#define RESUME_BASE_MS 200

/* JOB_RESUME: a partial kept across a restart is being re-hashed, then asked for with Range;
 * like JOB_HEAD, clients wait for the upstream's first answer (the access rule). */
enum job_state { JOB_WAIT_SLOT = 0, JOB_HEAD, JOB_RESUME, JOB_BODY, JOB_ENDED };

struct bjob {
    struct rq_env *r;
    struct bjob *next;
    enum job_state state;
    char digest[RGM_DIGEST_MAX];
    const rgm_registry_cfg_t *reg;
    char repo[RGM_REF_NAME_MAX + 16];
    char *auth;
    char credhash[65];
    rgm_slot_wait_t slot;
    int has_slot;
    rgm_upcall_t *call;
    rgm_fetch_t *fetch;
    int is_private;
    int is_listed;
    int fetch_live;
    int append_pending;
    int upstream_done;
    int attempts;
    uint64_t skip;
    char fill_url[RGM_PEER_URL_MAX]; /* the cluster peer asked first, "" when none */
    int is_filled;                   /* the bytes come from that peer */
    uv_timer_t timer;
    int timer_state;    /* 0 none, 1 open, 2 closing */
    struct rq *waiters; /* wait for the upstream's answer */
    struct rq *parked;  /* wait for the job to end (see may_join) */
};

static void start_call(struct bjob *job);
static void attach(struct rq *q, struct bjob *job);
static void pump(struct rq *q);

/* ---- ranges ---- */

/* Parse "bytes=N-", "bytes=N-M", "bytes=-S" for a body of size bytes. 0: no usable range
 * (absent, malformed or several: serve the whole body); 1: *start..*end inclusive;
 * -1: unsatisfiable. */
static int parse_range(const char *h, uint64_t size, uint64_t *start, uint64_t *end)
{
    char a[32];
    char b[32];
    const char *dash;
    uint64_t x;
    uint64_t y;
    size_t alen;

    if (!h || strncmp(h, "bytes=", 6) != 0 || strchr(h, ','))
        return 0;
    h += 6;
    dash = strchr(h, '-');
    if (!dash)
        return 0;
    alen = (size_t)(dash - h);
    if (alen >= sizeof(a) || strlen(dash + 1) >= sizeof(b))
        return 0;
    memcpy(a, h, alen);
    a[alen] = '\0';
    memcpy(b, dash + 1, strlen(dash + 1) + 1);
    if (a[0] == '\0') {
        if (rgm_parse_uint(b, UINT64_MAX, &y) < 0)
            return 0;
        if (y == 0 || size == 0)
            return -1;
        *start = y >= size ? 0 : size - y;
        *end = size - 1;
        return 1;
    }
    if (rgm_parse_uint(a, UINT64_MAX, &x) < 0)
        return 0;
    if (b[0] == '\0') {
        y = UINT64_MAX;
    } else if (rgm_parse_uint(b, UINT64_MAX, &y) < 0 || y < x) {
        return 0;
    }
    if (x >= size)
        return -1;
    *start = x;
    *end = y >= size ? size - 1 : y;
    return 1;
}

/* Start a blob response for a body of size bytes (UINT64_MAX: unknown). Sets q->off/end.
 * Returns 0, or <0 when an answer (416) was already given. */
static int start_body(struct rq *q, uint64_t size)
{
    char h[1024];
    uint64_t start = 0;
    uint64_t end = 0;
    int rng = 0;
    int n;
    int status = 200;
    int64_t len;

    if (size != UINT64_MAX)
        rng = parse_range(rgm_req_header(q->req, "Range"), size, &start, &end);
    if (rng < 0) {
        n = snprintf(h, sizeof(h), "Content-Range: bytes */%" PRIu64 "\r\n", size);
        rq_error(q, 416, "SIZE_INVALID", "requested range not satisfiable", n > 0 ? h : NULL);
        return -1;
    }
    n = snprintf(h, sizeof(h),
                 "Content-Type: application/octet-stream\r\n"
                 "Docker-Content-Digest: %s\r\nAccept-Ranges: bytes\r\n"
                 "Cache-Control: max-age=31536000\r\n",
                 q->digest);
    if (rng == 1) {
        status = 206;
        snprintf(h + n, sizeof(h) - (size_t)n,
                 "Content-Range: bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64 "\r\n", start, end, size);
        q->off = start;
        q->end = end + 1;
        len = (int64_t)(end + 1 - start);
    } else {
        q->off = 0;
        q->end = size;
        len = size == UINT64_MAX ? -1 : (int64_t)size;
    }
    if (rq_start(q, status, h, len) < 0) {
        rq_abort(q, "cannot start response");
        return -1;
    }
    return 0;
}

/* ---- cached blobs ---- */

static void serve_cached(struct rq *q)
{
    uint64_t size = 0;
    int err;

    if (q->fd < 0) {
        err = rgm_store_open_blob(q->r->store, q->digest, &q->fd, &size);
        if (err < 0) {
            /* Evicted meanwhile: start over as a miss. */
            blobs_handle(q);
            return;
        }
    } else {
        size = q->end;
    }
    rq_hold_file(q);
    rq_set_cache(q, "HIT");
    rgm_index_touch(q->r->index, q->digest, rgm_time_ms());
    if (start_body(q, size) < 0)
        return;
    if (q->is_head || q->off >= q->end) {
        rq_finish(q);
        return;
    }
    rq_send_file(q);
}

/* ---- readers of a fetch in flight ---- */

static void on_more(rgm_fetch_reader_t *rd, void *ud)
{
    struct rq *q = ud;

    (void)rd;
    pump(q);
}

static void reader_end(struct rq *q, int is_ok, const char *reason)
{
    rgm_fetch_reader_t *rd = q->rd;

    q->rd = NULL;
    rgm_fetch_leave(rd);
    if (is_ok)
        rq_finish(q);
    else
        rq_abort(q, reason);
}

static void on_reader_sent(rgm_req_t *req, int status, void *ud)
{
    struct rq *q = ud;

    (void)req;
    q->is_sending = 0;
    if (status < 0) {
        reader_end(q, 0, "file read error");
        return;
    }
    if (q->rd)
        rgm_fetch_reader_at(q->rd, q->off);
    pump(q);
}

/* From memory: the n bytes at data (at q->off) and those that follow in memory, up to
 * GATHER_MAX, into iov for one write (a reader that sent a chunk per loop turn fell behind
 * what the lane lands). Returns the bytes gathered. */
static size_t gather(const struct rq *q, const char *data, size_t n, struct iovec *iov, int *iov_n)
{
    uint64_t at = q->off + n;
    size_t total = n;
    const char *d;
    size_t len;

    iov[0].iov_base = (void *)data;
    iov[0].iov_len = n;
    *iov_n = 1;
    while (*iov_n < GATHER_N && total < GATHER_MAX && at < q->end) {
        if (rgm_fetch_peek(q->rd, at, &d, &len) != 0 || len == 0)
            break;
        if (len > q->end - at)
            len = (size_t)(q->end - at);
        if (len > GATHER_MAX - total)
            len = GATHER_MAX - total;
        iov[*iov_n].iov_base = (void *)d;
        iov[*iov_n].iov_len = len;
        (*iov_n)++;
        total += len;
        at += len;
    }
    return total;
}

/* Send what the fetch has for q now: from its file (sendfile), or from memory (the last landed
 * chunks, or the window when the store could not take the bytes; copied). */
static void pump(struct rq *q)
{
    struct iovec iov[GATHER_N];
    int iov_n = 0;
    rgm_fetch_t *f;
    enum rgm_fetch_state st;
    const char *data = NULL;
    size_t n = 0;
    int rc;
    int err;

    if (q->is_sending || !q->rd || !q->req)
        return;
    f = rgm_fetch_reader_fetch(q->rd);
    st = rgm_fetch_state(f);
    rc = q->off < q->end ? rgm_fetch_peek(q->rd, q->off, &data, &n) : 1;
    if (rc < 0) {
        reader_end(q, 0,
                   st == RGM_FETCH_FAILED ? "upstream fetch failed"
                                          : "fell behind the fetch's memory window");
        return;
    }
    if (n > q->end - q->off)
        n = (size_t)(q->end - q->off);
    if (n > 0) {
        q->is_sending = 1;
        if (rc == 1) {
            rq_count_bytes(q, n);
            err = rgm_resp_sendfile(q->req, rgm_fetch_fd(f), q->off, n, on_reader_sent, q);
        } else {
            n = gather(q, data, n, iov, &iov_n);
            rq_count_bytes(q, n);
            err = rgm_resp_writev(q->req, iov, iov_n, on_reader_sent, q);
        }
        if (err < 0) {
            q->is_sending = 0;
            reader_end(q, 0, "sendfile failed");
            return;
        }
        q->off += n;
        return;
    }
    if (q->off >= q->end || (st == RGM_FETCH_DONE && q->off >= rgm_fetch_readable(f))) {
        reader_end(q, 1, NULL);
        return;
    }
    if (st == RGM_FETCH_FAILED)
        reader_end(q, 0, "upstream fetch failed");
}

static void attach(struct rq *q, struct bjob *job)
{
    uint64_t size;

    q->rd = rgm_fetch_join(job->fetch, on_more, q);
    size = rgm_fetch_size(job->fetch);
    if (start_body(q, size) < 0) {
        /* start_body answered and dropped q->req; leave the fetch. */
        rgm_fetch_reader_t *rd = q->rd;

        q->rd = NULL;
        rgm_fetch_leave(rd);
        rq_release(q);
        return;
    }
    if (q->is_head) {
        reader_end(q, 1, NULL);
        return;
    }
    rgm_fetch_reader_at(q->rd, q->off);
    pump(q);
}

/* May q read this job's bytes? 1 yes; 0 after an access check; -1 not through this job at all:
 * a private fetch from another registry cannot vouch for q's registry (q waits for the job to
 * end, then fetches through its own registry). Public jobs: anyone. Private: the client whose
 * credentials fetched it, or one the same registry accepted for q's repository. */
static int may_join(struct rq *q, struct bjob *job)
{
    if (!job->is_private)
        return 1;
    if (q->reg != job->reg)
        return -1;
    if (q->access_status == 200)
        return 1;
    if (q->auth && strcmp(q->credhash, job->credhash) == 0 && strcmp(q->repo, job->repo) == 0)
        return 1;
    return 0;
}

static void recheck(struct rq *q)
{
    /* Access verified upstream for this request: route it again, without asking twice. */
    q->access_status = 200;
    blobs_handle(q);
}

static void attach_checked(struct rq *q, struct bjob *job)
{
    int ok = may_join(q, job);

    if (ok > 0) {
        attach(q, job);
        return;
    }
    if (ok < 0) {
        q->job = job;
        q->is_parked = 1;
        q->next_waiter = job->parked;
        job->parked = q;
        return;
    }
    q->after_access = recheck;
    rq_check_access(q);
}

/* ---- jobs ---- */

static struct bjob *find_job(struct rq_env *r, const char *digest)
{
    struct bjob *j;

    for (j = r->bjobs; j; j = j->next)
        if (j->is_listed && strcmp(j->digest, digest) == 0 &&
            !(j->fetch && rgm_fetch_is_nofile(j->fetch)))
            return j; /* a fetch without its file takes no one new: they get their own */
    return NULL;
}

/* The job no longer takes new readers (it ended, or its fetch did); parked requests are routed
 * again now. */
static void unlist(struct bjob *job)
{
    struct bjob **pp;
    struct rq *q;

    if (!job->is_listed)
        return;
    for (pp = &job->r->bjobs; *pp; pp = &(*pp)->next) {
        if (*pp == job) {
            *pp = job->next;
            break;
        }
    }
    job->is_listed = 0;
    while ((q = job->parked) != NULL) {
        job->parked = q->next_waiter;
        q->next_waiter = NULL;
        q->job = NULL;
        q->is_parked = 0;
        if (q->req)
            blobs_handle(q);
        else
            rq_release(q);
    }
}

static void release_slot(struct bjob *job)
{
    if (!job->has_slot)
        return;
    job->has_slot = 0;
    rgm_upstream_slot_release(job->r->up, job->reg);
}

static void maybe_free(struct bjob *job)
{
    if (job->call || job->fetch_live || job->timer_state != 0 || job->append_pending ||
        job->waiters || (job->parked && job->is_listed))
        return;
    release_slot(job);
    unlist(job);
    free(job->auth);
    free(job);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct bjob *job = rgm_container_of((uv_timer_t *)h, struct bjob, timer);

    job->timer_state = 0;
    maybe_free(job);
}

static void close_timer(struct bjob *job)
{
    if (job->timer_state == 1) {
        job->timer_state = 2;
        uv_close((uv_handle_t *)&job->timer, on_timer_closed);
    }
}

/* 401/403/404 to the job's identity says nothing about another client's, or another
 * repository's: those get their own try. */
static int same_identity(const struct rq *q, const struct bjob *job)
{
    return q->reg == job->reg && strcmp(q->repo, job->repo) == 0 &&
           strcmp(q->credhash, job->credhash) == 0;
}

/* The next waiter for the head whose client is still there, taken off the job; NULL when
 * none is left. Waiters whose client left are dropped on the way. */
static struct rq *take_waiter(struct bjob *job)
{
    struct rq *q;

    while ((q = job->waiters) != NULL) {
        job->waiters = q->next_waiter;
        q->next_waiter = NULL;
        q->job = NULL;
        if (q->req)
            return q;
        rq_release(q);
    }
    return NULL;
}

/* Answer every waiter that is still waiting for the head. The job takes nobody new. */
static void fail_waiters(struct bjob *job, int status, rgm_upcall_t *c, int err)
{
    struct rq *q;

    unlist(job);
    while ((q = take_waiter(job)) != NULL) {
        if ((status == 401 || status == 403 || status == 404) && !same_identity(q, job) &&
            !job->r->is_stopping) {
            blobs_handle(q);
            continue;
        }
        rq_relay_error(q, status, c, err, 1);
    }
}

static void on_fetch_done(rgm_fetch_t *f, int status, void *ud)
{
    struct bjob *job = ud;
    struct rq_env *r = job->r;
    rgm_index_object_t obj;
    int err;

    job->fetch_live = 0;
    job->state = JOB_ENDED;
    unlist(job);
    if (status == 0 && !rgm_fetch_is_stored(f)) {
        rgm_log(RGM_LOG_INFO, "blobs",
                "served %s (%" PRIu64 " bytes) from %s/%s without caching it (store error)",
                job->digest, rgm_fetch_written(f), job->reg->name, job->repo);
    } else if (status == 0) {
        r->m.fetches_done++;
        memset(&obj, 0, sizeof(obj));
        snprintf(obj.digest, sizeof(obj.digest), "%s", job->digest);
        obj.size = rgm_fetch_written(job->fetch);
        obj.kind = RGM_OBJ_BLOB;
        snprintf(obj.media_type, sizeof(obj.media_type), "application/octet-stream");
        err = rgm_index_put_object(r->index, &obj);
        if (err == 0)
            err = rgm_index_add_origin(r->index, job->digest, job->reg->name, job->repo,
                                       !job->is_private);
        if (err < 0) {
            /* Only this row is lost: the file is re-indexed or re-fetched later. */
            rgm_store_count_error(r->store, RGM_STORE_OP_INDEX, err);
            rgm_log(RGM_LOG_WARN, "blobs", "cannot index %s: %s (%s)", job->digest,
                    uv_strerror(err), rgm_store_errno_name(err));
        }
        rgm_log(RGM_LOG_INFO, "blobs", "cached %s (%" PRIu64 " bytes) from %s/%s", job->digest,
                obj.size, job->reg->name, job->repo);
    } else if (status == UV_EINVAL) {
        r->m.digest_mismatches++;
        r->m.fetches_failed++;
        rgm_log(RGM_LOG_ERROR, "blobs",
                "digest mismatch for %s from %s/%s: nothing cached, clients cut short", job->digest,
                job->reg->name, job->repo);
    } else {
        r->m.fetches_failed++;
        rgm_log(RGM_LOG_WARN, "blobs", "fetch of %s from %s/%s failed: %s", job->digest,
                job->reg->name, job->repo, uv_strerror(status));
    }
    job->fetch = NULL;
    maybe_free(job);
}

static void on_appended(rgm_fetch_t *f, int status, void *ud)
{
    struct bjob *job = ud;

    (void)f;
    job->append_pending = 0;
    if (status < 0) {
        /* The fetch has failed itself; stop the upstream. */
        if (job->call)
            rgm_upcall_cancel(job->call);
    } else if (job->upstream_done) {
        job->upstream_done = 0;
        release_slot(job);
        rgm_fetch_finish(job->fetch);
    } else if (job->call) {
        rgm_upcall_resume(job->call);
    }
    maybe_free(job);
}

/* "bytes <from>-<last>/<total>" with from and total as expected. */
static int is_content_range(const char *cr, uint64_t from, uint64_t total)
{
    char want[64];
    const char *slash;
    uint64_t t = 0;

    snprintf(want, sizeof(want), "bytes %" PRIu64 "-", from);
    if (!cr || strncmp(cr, want, strlen(want)) != 0)
        return 0;
    slash = strchr(cr, '/');
    return slash && rgm_parse_uint(slash + 1, UINT64_MAX, &t) == 0 && t == total;
}

/* The first answer for a partial kept across a restart: 206 from where its prefix ends (or
 * 200, whose first bytes are skipped) for a blob of the sidecar's size. Then the waiters join
 * as after a first 200. Another status goes to the waiters, and the partial is kept for a
 * later try. */
static int on_resumed_head(struct bjob *job, rgm_upcall_t *c, int status)
{
    uint64_t w = rgm_fetch_written(job->fetch);
    uint64_t size = rgm_fetch_size(job->fetch);
    int64_t len = rgm_upcall_content_length(c);
    struct rq *q;

    if (status != 200 && status != 206) {
        job->state = JOB_ENDED;
        fail_waiters(job, status, c, 0);
        rgm_fetch_suspend(job->fetch);
        return 0; /* the (small) error body is read and dropped: the connection is reused */
    }
    if (status == 206 && !is_content_range(rgm_upcall_header(c, "Content-Range"), w, size))
        return UV_EPROTO;
    if (status == 200 && len >= 0 && (uint64_t)len != size)
        return UV_EPROTO;
    job->skip = status == 200 ? w : 0;
    job->state = JOB_BODY;
    job->is_private = rgm_upcall_used_client_auth(c);
    rgm_log(RGM_LOG_INFO, "blobs", "resumed %s from %s/%s at %" PRIu64 " bytes (%d)", job->digest,
            job->reg->name, job->repo, w, status);
    while ((q = take_waiter(job)) != NULL)
        attach_checked(q, job);
    return 0;
}

static int on_head(rgm_upcall_t *c, int status, void *ud)
{
    struct bjob *job = ud;
    struct rq_env *r = job->r;
    int64_t len = rgm_upcall_content_length(c);
    const char *cr;
    char want[64];
    struct rq *q;
    int err;

    if (job->state == JOB_RESUME)
        return on_resumed_head(job, c, status);
    if (job->state == JOB_BODY) {
        /* A resume. 206 must start where we are; 200 restarts: skip what we have. */
        uint64_t w = rgm_fetch_written(job->fetch);

        snprintf(want, sizeof(want), "bytes %" PRIu64 "-", w);
        cr = rgm_upcall_header(c, "Content-Range");
        if (status == 206 && cr && strncmp(cr, want, strlen(want)) == 0)
            return 0;
        if (status == 200) {
            job->skip = w;
            return 0;
        }
        return UV_EPROTO;
    }
    if (status != 200) {
        job->state = JOB_ENDED;
        fail_waiters(job, status, c, 0);
        return 0; /* the (small) error body is read and dropped: the connection is reused */
    }
    err = rgm_fetch_start(r->fetches, job->digest, on_fetch_done, job, &job->fetch);
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "blobs", "cannot start fetch of %s: %s", job->digest,
                uv_strerror(err));
        job->state = JOB_ENDED;
        fail_waiters(job, 0, NULL, err);
        return err;
    }
    r->m.fetches_started++;
    job->fetch_live = 1;
    job->state = JOB_BODY;
    job->is_private = rgm_upcall_used_client_auth(c);
    job->is_filled = rgm_upcall_was_filled(c);
    if (job->is_filled) {
        r->m.cluster_filled++;
        rgm_log(RGM_LOG_INFO, "blobs", "%s filled from peer %s", job->digest, job->fill_url);
    }
    if (len >= 0)
        rgm_fetch_set_size(job->fetch, (uint64_t)len);
    rgm_fetch_set_origin(job->fetch, job->reg->name, job->repo);
    while ((q = take_waiter(job)) != NULL)
        attach_checked(q, job);
    return 0;
}

static int on_body(rgm_upcall_t *c, const char *data, size_t len, void *ud)
{
    struct bjob *job = ud;
    int err;

    if (job->state != JOB_BODY)
        return 0; /* an error answer's body */
    if (job->skip > 0) {
        size_t n = job->skip < len ? (size_t)job->skip : len;

        job->skip -= n;
        data += n;
        len -= n;
        if (len == 0)
            return 0;
    }
    if (!job->is_filled)
        job->r->m.upstream_bytes += len;
    err = rgm_fetch_write(job->fetch, data, len);
    if (err != UV_EAGAIN)
        return err;
    err = rgm_fetch_append(job->fetch, data, len, on_appended, job);
    if (err < 0)
        return err;
    job->append_pending = 1;
    rgm_upcall_pause(c);
    return 0;
}

static void on_resume_timer(uv_timer_t *t)
{
    struct bjob *job = rgm_container_of(t, struct bjob, timer);

    if (job->append_pending) {
        if (uv_timer_start(t, on_resume_timer, 20, 0) == 0)
            return;
    }
    close_timer(job);
    if (job->r->is_stopping || !job->fetch) {
        if (job->fetch)
            rgm_fetch_suspend(job->fetch);
        return;
    }
    start_call(job);
}

static void on_done(rgm_upcall_t *c, int err, void *ud)
{
    struct bjob *job = ud;
    uint64_t size;
    uint64_t delay;

    (void)c;
    job->call = NULL;
    if (job->state == JOB_RESUME && job->fetch) {
        /* No usable first answer for a kept partial: keep it for a later try, unless the
         * upstream disagreed about the blob. */
        fail_waiters(job, 0, NULL, err ? err : UV_EPROTO);
        release_slot(job);
        if (err == UV_EPROTO)
            rgm_fetch_fail(job->fetch, err);
        else
            rgm_fetch_suspend(job->fetch);
        maybe_free(job);
        return;
    }
    if (job->state != JOB_BODY || !job->fetch) {
        job->state = JOB_ENDED;
        fail_waiters(job, 0, NULL, err ? err : UV_EPROTO);
        release_slot(job);
        maybe_free(job);
        return;
    }
    if (err == 0) {
        if (job->append_pending) {
            job->upstream_done = 1;
        } else {
            release_slot(job);
            rgm_fetch_finish(job->fetch);
        }
        maybe_free(job);
        return;
    }
    size = rgm_fetch_size(job->fetch);
    if (err != UV_ECANCELED && !job->r->is_stopping && job->attempts < RESUME_MAX &&
        size != UINT64_MAX && rgm_fetch_state(job->fetch) == RGM_FETCH_RUNNING) {
        job->attempts++;
        job->r->m.resumes++;
        delay = (uint64_t)RESUME_BASE_MS << (job->attempts - 1);
        rgm_log(RGM_LOG_WARN, "blobs",
                "upstream lost during %s at %" PRIu64 " bytes (%s): "
                "resuming in %" PRIu64 " ms",
                job->digest, rgm_fetch_written(job->fetch), uv_strerror(err), delay);
        if (job->timer_state == 0) {
            uv_timer_init(job->r->loop, &job->timer);
            job->timer_state = 1;
        }
        if (uv_timer_start(&job->timer, on_resume_timer, delay, 0) == 0)
            return;
        close_timer(job);
    }
    job->r->m.upstream_errors++;
    release_slot(job);
    if (rgm_fetch_state(job->fetch) == RGM_FETCH_RUNNING && job->r->is_stopping)
        rgm_fetch_suspend(job->fetch); /* a restart resumes it */
    else if (rgm_fetch_state(job->fetch) == RGM_FETCH_RUNNING)
        rgm_fetch_fail(job->fetch, err);
    maybe_free(job);
}

static const rgm_upcall_cbs_t job_cbs = {on_head, on_body, on_done};

static void start_call(struct bjob *job)
{
    rgm_upcall_opts_t o;
    char suffix[256];
    int err;

    snprintf(suffix, sizeof(suffix), "blobs/%s", job->digest);
    memset(&o, 0, sizeof(o));
    o.reg = job->reg;
    o.repo = job->repo;
    o.method = "GET";
    o.suffix = suffix;
    o.client_auth = job->auth;
    o.client_auth_first = job->reg->is_mirror;
    if (job->state == JOB_HEAD && job->fill_url[0])
        o.fill_url = job->fill_url; /* a resume goes to the registry */
    if (job->state == JOB_BODY || job->state == JOB_RESUME) {
        o.range_from = rgm_fetch_written(job->fetch);
        /* A private fetch resumes with the credentials that started it. */
        o.client_auth_first = o.client_auth_first || job->is_private;
    }
    job->skip = 0;
    err = rgm_upcall_start(job->r->up, &o, &job_cbs, job, &job->call);
    if (err < 0) {
        job->call = NULL;
        if (job->state == JOB_BODY || job->state == JOB_RESUME) {
            if (job->state == JOB_RESUME)
                fail_waiters(job, 0, NULL, err);
            release_slot(job);
            rgm_fetch_fail(job->fetch, err);
        } else {
            job->state = JOB_ENDED;
            fail_waiters(job, 0, NULL, err);
            release_slot(job);
        }
        maybe_free(job);
        return;
    }
    job->r->m.upstream_requests++;
}

/* The kept partial's prefix was re-hashed (rgm_fetch_resume's ready): ask for the rest. */
static void on_resume_ready(rgm_fetch_t *f, int status, void *ud)
{
    struct bjob *job = ud;

    (void)f;
    job->append_pending = 0;
    if (status < 0 || job->r->is_stopping) {
        fail_waiters(job, 0, NULL, status < 0 ? status : UV_ECANCELED);
        release_slot(job);
        if (status == 0)
            rgm_fetch_suspend(job->fetch);
        maybe_free(job);
        return;
    }
    start_call(job);
}

static void on_slot(rgm_slot_wait_t *w)
{
    struct bjob *job = rgm_container_of(w, struct bjob, slot);
    struct rq_env *r = job->r;

    job->has_slot = 1;
    /* Only a partial this registry delivered: its answer vouches for the prefix. */
    if (rgm_fetch_resume(r->fetches, job->digest, job->reg->name, on_fetch_done, job,
                         on_resume_ready, job, &job->fetch) == 0) {
        r->m.fetches_started++;
        job->state = JOB_RESUME;
        job->fetch_live = 1;
        job->append_pending = 1; /* until on_resume_ready */
        return;
    }
    job->fetch = NULL;
    job->state = JOB_HEAD;
    start_call(job);
}

/* A store write failed: before its one retry, an eviction round at once. The disk filled up
 * before max_cache_bytes did, so evict as if the cache were over a limit 10 % below its size
 * (one batch of cache/evict: orphans, then whole images; pins and readers are respected).
 * Nothing without max_cache_bytes. */
/* Objects and bytes eviction has removed so far, all reasons. */
static void evicted_sum(const rgm_evict_t *e, uint64_t *objects, uint64_t *bytes)
{
    const rgm_evict_counters_t *c = rgm_evict_counters(e);
    int i;

    *objects = *bytes = 0;
    for (i = 0; i < RGM_EVICT_NR; i++) {
        *objects += c->objects[i];
        *bytes += c->bytes[i];
    }
}

static void evict_now(void *ud)
{
    struct rq_env *r = ud;
    rgm_evict_opts_t o;
    uint64_t objects = 0, bytes = 0;
    uint64_t obj0, bytes0, obj1, bytes1;
    int rc;

    if (!r->evict || r->cfg->max_cache_bytes == 0 ||
        rgm_index_stats(r->index, &objects, &bytes) < 0 || bytes == 0)
        return;
    evicted_sum(r->evict, &obj0, &bytes0);
    o = *r->evict_opts;
    o.max_bytes = bytes - 1 < o.max_bytes ? bytes - 1 : o.max_bytes;
    o.target_bytes = o.max_bytes / 10 * 9;
    rc = rgm_evict_step(r->evict, &o);
    evicted_sum(r->evict, &obj1, &bytes1);
    rgm_log(RGM_LOG_INFO, "blobs",
            "store write failed: evicted %" PRIu64 " objects (%" PRIu64 " bytes) at once%s",
            obj1 - obj0, bytes1 - bytes0, rc < 0 ? " (index error)" : "");
}

static void start_job(struct rq *q)
{
    struct bjob *job = rgm_calloc(1, sizeof(*job));
    struct rq_env *r = q->r;

    job->r = r;
    snprintf(job->digest, sizeof(job->digest), "%s", q->digest);
    snprintf(job->repo, sizeof(job->repo), "%s", q->repo);
    job->reg = q->reg;
    job->auth = q->auth ? rgm_strdup(q->auth) : NULL;
    memcpy(job->credhash, q->credhash, sizeof(job->credhash));
    if (!rq_fill_source(q, job->fill_url, sizeof(job->fill_url)))
        job->fill_url[0] = '\0';
    job->next = r->bjobs;
    job->is_listed = 1;
    r->bjobs = job;
    job->waiters = q;
    q->job = job;
    job->slot.reg = q->reg;
    job->slot.on_slot = on_slot;
    rgm_fetches_set_evict(r->fetches, evict_now, r); /* the same r every time: idempotent */
    rgm_upstream_slot_acquire(r->up, &job->slot);
}

/* ---- HEAD of a blob that is not here: ask upstream, fetch nothing ---- */

static int head_on_head(rgm_upcall_t *c, int status, void *ud)
{
    struct rq *q = ud;
    char h[512];
    const char *ct = rgm_upcall_header(c, "Content-Type");
    int64_t len = rgm_upcall_content_length(c);

    q->access_status = status;
    if (!q->req)
        return 0; /* HEAD: no body; the connection stays reusable */
    if (status != 200) {
        rq_relay_error(q, status, c, 0, 1);
        return 0; /* HEAD: no body; the connection stays reusable */
    }
    snprintf(h, sizeof(h),
             "Content-Type: %s\r\nDocker-Content-Digest: %s\r\n"
             "Accept-Ranges: bytes\r\n",
             ct && !strpbrk(ct, "\r\n") ? ct : "application/octet-stream", q->digest);
    if (rq_start(q, 200, h, len) < 0) {
        rq_abort(q, "cannot start response");
        return 0; /* HEAD: no body; the connection stays reusable */
    }
    rq_finish(q);
    return 0; /* HEAD: no body; the connection stays reusable */
}

static const rgm_upcall_cbs_t head_cbs = {head_on_head, rq_ignore_body, rq_head_on_done};

static void head_upstream(struct rq *q)
{
    char suffix[256];
    int err;

    snprintf(suffix, sizeof(suffix), "blobs/%s", q->digest);
    err = rq_head(q, suffix, NULL, &head_cbs);
    if (err < 0)
        rq_relay_error(q, 0, NULL, err, 1);
}

/* ---- remembered 404s (negative_ttl) ---- */

/* Did the upstream answer 404 to the mirror's own identity for this blob, within
 * negative_ttl? Only a request without a client's credentials may take that answer: the
 * mirror would send it with the same identity. */
static int known_missing(struct rq *q)
{
    rgm_upcall_opts_t o;
    char suffix[256];

    if (q->auth)
        return 0;
    snprintf(suffix, sizeof(suffix), "blobs/%s", q->digest);
    rq_upcall_opts(q, &o, "GET", suffix);
    return rgm_upstream_known_missing(q->r->up, &o);
}

/* ---- entry points ---- */

/* The client left: stop reading the fetch, leave the job's lists. */
static void detach(struct rq *q)
{
    struct rq **pp;

    if (q->rd) {
        rgm_fetch_reader_t *rd = q->rd;

        q->rd = NULL;
        rgm_fetch_leave(rd);
    }
    if (q->job) {
        for (pp = q->is_parked ? &q->job->parked : &q->job->waiters; *pp;
             pp = &(*pp)->next_waiter) {
            if (*pp == q) {
                *pp = q->next_waiter;
                break;
            }
        }
        q->job = NULL;
        q->is_parked = 0;
    }
}

void blobs_handle(struct rq *q)
{
    struct bjob *job;
    uint64_t size = 0;
    int err;

    q->detach = detach;
    snprintf(q->digest, sizeof(q->digest), "%s", q->path.reference);
    if (q->fd < 0) {
        err = rgm_store_open_blob(q->r->store, q->digest, &q->fd, &size);
        if (err == 0 && !rq_may_vouch(q, q->digest)) {
            /* Here, but private and never delivered by this registry: fetch it through this
             * registry (verified), as if it were not here. */
            close(q->fd);
            q->fd = -1;
            err = UV_ENOENT;
        }
        if (err == 0) {
            q->end = size;
            if (q->access_status == 200) {
                serve_cached(q);
            } else {
                q->after_access = serve_cached;
                rq_check_access(q);
            }
            return;
        }
    }
    if (q->is_only_cached) {
        rq_only_cached_miss(q, 1); /* a peer's fill: never fetch for it */
        return;
    }
    job = find_job(q->r, q->digest);
    if (job) {
        rq_set_cache(q, "JOIN");
        q->r->m.joins++;
        if (job->state == JOB_BODY) {
            attach_checked(q, job);
        } else {
            q->job = job;
            q->next_waiter = job->waiters;
            job->waiters = q;
        }
        return;
    }
    rq_set_cache(q, "MISS");
    if (q->r->is_stopping) {
        rq_error(q, 503, "UNAVAILABLE", "shutting down", NULL);
        return;
    }
    if (known_missing(q)) {
        rq_set_cache(q, "NEGATIVE");
        rq_relay_error(q, 404, NULL, 0, 1);
        return;
    }
    if (q->is_head) {
        head_upstream(q);
        return;
    }
    start_job(q);
}

void blobs_shutdown(struct rq_env *r)
{
    struct bjob *job;
    struct bjob *next;

    for (job = r->bjobs; job; job = next) {
        next = job->next;
        if (job->state == JOB_WAIT_SLOT && rgm_upstream_slot_cancel(r->up, &job->slot)) {
            job->state = JOB_ENDED;
            fail_waiters(job, 0, NULL, UV_ECANCELED);
            maybe_free(job);
            continue;
        }
        if (job->call)
            rgm_upcall_cancel(job->call);
        if (job->timer_state == 1 && !job->call) {
            uv_timer_stop(&job->timer);
            close_timer(job);
            if (job->fetch && rgm_fetch_state(job->fetch) == RGM_FETCH_RUNNING)
                rgm_fetch_suspend(job->fetch);
        }
    }
}
