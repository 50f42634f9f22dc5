/* Forwarding to a peer: one upstream request per client request, its answer relayed as it
 * comes (the upstream connection is paused while a write to the client is pending), nothing
 * cached. A peer that dies mid-body is reported down and the rest is asked of the key's next
 * healthy member with a Range request; a peer that never answers is left to the caller. */
#include "cluster/forward.h"

#include <inttypes.h>

#include <uv.h>

#include "core/log.h"
#include "core/util.h"

#define MOD         "cluster"
#define MAX_RESUMES 2

/* Response headers relayed as they are; the server writes Content-Length, Date, Connection
 * and (from rgm_req_set_cache_status) X-Cache itself. */
static const char *const relayed[] = {
    "Content-Type",
    "Docker-Content-Digest",
    "Docker-Distribution-Api-Version",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
    "WWW-Authenticate",
    "Retry-After",
    "Link",
    "Location",
    "Cache-Control",
};

/* X-Cache values the server can log; others are relayed as a plain header. */
static const char *const cache_names[] = {"HIT", "MISS", "JOIN", "STALE", "NONE"};

struct fwd {
    rgm_req_t *req; /* NULL once the client left */
    rgm_client_t *client;
    rgm_peers_t *peers;
    char *key;
    size_t key_len;
    int is_fill;
    int is_head;
    char url[RGM_PEER_URL_MAX]; /* the peer being asked */
    char *target;               /* path?query */
    rgm_upreq_t *up;            /* until its on_done */
    rgm_fwd_done_fn done;
    void *ud;

    int is_started;      /* rgm_resp_start was called */
    int is_up_done;      /* the peer's answer has ended well; finish once writes drain */
    int status;          /* first answer's status */
    uint64_t base_first; /* offset of the first relayed body byte in the whole blob */
    int64_t body_len;    /* the relayed body's length, -1 unknown */
    uint64_t sent;       /* body bytes handed to the client */
    uint64_t peer_bytes; /* from the current peer, for its counters */
    unsigned n_resumes;
    unsigned n_writes; /* rgm_resp_write callbacks pending */
    int is_paused;
    int is_refused; /* we stopped the answer (a bad resume, a client write failed): the
                     * peer is not to blame */
};

static void fwd_free(struct fwd *f)
{
    free(f->key);
    free(f->target);
    free(f);
}

static void count_peer(struct fwd *f)
{
    if (f->peers)
        rgm_peers_count(f->peers, f->url, f->is_fill, f->peer_bytes);
    f->peer_bytes = 0;
}

/* ---- headers ---- */

/* The response header block for the peer's answer r; malloc'd. */
static char *relay_headers(struct fwd *f, rgm_upreq_t *r)
{
    size_t cap = 256, n = 0, i;
    char *h;
    const char *v;
    int is_known = 0;

    for (i = 0; i < RGM_ARRAY_SIZE(relayed); i++) {
        v = rgm_upreq_header(r, relayed[i]);
        if (v)
            cap += strlen(relayed[i]) + strlen(v) + 4;
    }
    v = rgm_upreq_header(r, "X-Cache");
    if (v)
        cap += strlen(v) + 16;
    h = rgm_malloc(cap);
    h[0] = '\0';
    for (i = 0; i < RGM_ARRAY_SIZE(relayed); i++) {
        v = rgm_upreq_header(r, relayed[i]);
        if (v)
            n += (size_t)snprintf(h + n, cap - n, "%s: %s\r\n", relayed[i], v);
    }
    v = rgm_upreq_header(r, "X-Cache");
    for (i = 0; v && i < RGM_ARRAY_SIZE(cache_names); i++) {
        if (strcmp(v, cache_names[i]) == 0) {
            rgm_req_set_cache_status(f->req, cache_names[i]);
            is_known = 1;
        }
    }
    if (v && !is_known)
        n += (size_t)snprintf(h + n, cap - n, "X-Cache: %s\r\n", v);
    (void)n;
    return h;
}

/* ---- ranges ---- */

static int parse_u64(const char *s, const char *end, uint64_t *out)
{
    char buf[24];
    size_t len = (size_t)(end - s);

    if (len == 0 || len >= sizeof(buf))
        return UV_EINVAL;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return rgm_parse_uint(buf, UINT64_MAX - 1, out);
}

int rgm_fwd_parse_range(const char *v, uint64_t *first, uint64_t *last)
{
    const char *dash, *end;

    if (!v || strncmp(v, "bytes=", 6) != 0)
        return UV_EINVAL;
    v += 6;
    dash = strchr(v, '-');
    if (!dash || strchr(v, ','))
        return UV_EINVAL;
    if (parse_u64(v, dash, first) < 0)
        return UV_EINVAL;
    end = dash + 1 + strlen(dash + 1);
    if (end == dash + 1) {
        *last = UINT64_MAX;
        return 0;
    }
    if (parse_u64(dash + 1, end, last) < 0 || *last < *first)
        return UV_EINVAL;
    return 0;
}

int rgm_fwd_parse_content_range(const char *v, uint64_t *first, uint64_t *last, uint64_t *total)
{
    const char *dash, *slash;

    if (!v || strncmp(v, "bytes ", 6) != 0)
        return UV_EINVAL;
    v += 6;
    dash = strchr(v, '-');
    slash = dash ? strchr(dash, '/') : NULL;
    if (!slash || parse_u64(v, dash, first) < 0 || parse_u64(dash + 1, slash, last) < 0 ||
        *last < *first)
        return UV_EINVAL;
    if (strcmp(slash + 1, "*") == 0) {
        *total = UINT64_MAX;
        return 0;
    }
    if (parse_u64(slash + 1, slash + 1 + strlen(slash + 1), total) < 0 || *last >= *total)
        return UV_EINVAL;
    return 0;
}

/* ---- the peer's answer ---- */

static int start_request(struct fwd *f, const char *range);

static void on_written(rgm_req_t *req, int status, void *ud)
{
    struct fwd *f = ud;

    (void)req;
    (void)status;
    f->n_writes--;
    if (f->n_writes > 0)
        return;
    if (f->is_up_done) {
        rgm_resp_finish(f->req);
        f->done(NULL, RGM_FWD_DONE, f->ud);
        fwd_free(f);
        return;
    }
    if (f->is_paused && f->up) {
        f->is_paused = 0;
        rgm_upreq_resume(f->up);
    }
}

/* The first answer: relay its status and headers. */
static int start_response(struct fwd *f, rgm_upreq_t *r, int status)
{
    uint64_t first = 0, last = 0, total = 0;
    char *hdrs;
    int rc;

    f->status = status;
    f->body_len = rgm_upreq_content_length(r);
    if (status == 206 && rgm_fwd_parse_content_range(rgm_upreq_header(r, "Content-Range"), &first,
                                                     &last, &total) == 0)
        f->base_first = first;
    hdrs = relay_headers(f, r);
    rc = rgm_resp_start(f->req, status, hdrs, f->body_len);
    free(hdrs);
    if (rc < 0)
        return rc;
    f->is_started = 1;
    return 0;
}

/* A resumed answer must be the missing bytes exactly: 206 from base_first + sent. */
static int check_resumed(struct fwd *f, rgm_upreq_t *r, int status)
{
    uint64_t first = 0, last = 0, total = 0;

    if (status != 206 ||
        rgm_fwd_parse_content_range(rgm_upreq_header(r, "Content-Range"), &first, &last, &total) <
            0 ||
        first != f->base_first + f->sent || last + 1 != f->base_first + (uint64_t)f->body_len) {
        rgm_log(RGM_LOG_WARN, MOD, "id=%llu resume from %s: status %d, not the bytes asked",
                (unsigned long long)rgm_req_id(f->req), f->url, status);
        f->is_refused = 1;
        return UV_EPROTO;
    }
    return 0;
}

static int on_head(rgm_upreq_t *r, int status, void *ud)
{
    struct fwd *f = ud;

    if (!f->req)
        return UV_ECANCELED;
    if (f->peers)
        rgm_peers_report(f->peers, f->url, 1);
    if (f->is_started)
        return check_resumed(f, r, status);
    if (start_response(f, r, status) < 0) {
        f->is_refused = 1;
        return UV_EPIPE;
    }
    return 0;
}

static int on_body(rgm_upreq_t *r, const char *data, size_t len, void *ud)
{
    struct fwd *f = ud;
    int rc;

    if (!f->req)
        return UV_ECANCELED;
    if (len == 0)
        return 0;
    f->n_writes++;
    rc = rgm_resp_write(f->req, data, len, on_written, f);
    if (rc < 0) {
        f->n_writes--;
        f->is_refused = 1;
        return rc;
    }
    f->sent += len;
    f->peer_bytes += len;
    if (!f->is_paused) {
        f->is_paused = 1;
        rgm_upreq_pause(r);
    }
    return 0;
}

/* The range still missing after a cut, or 0 when a resume is not possible. */
static int resume_range(const struct fwd *f, char *out, size_t outlen)
{
    uint64_t from = f->base_first + f->sent;
    int n;

    if (f->is_head || f->is_fill || !f->key || !f->peers || f->n_resumes >= MAX_RESUMES)
        return 0;
    if ((f->status != 200 && f->status != 206) || f->body_len < 0 ||
        f->sent >= (uint64_t)f->body_len)
        return 0;
    n = snprintf(out, outlen, "bytes=%" PRIu64 "-%" PRIu64, from,
                 f->base_first + (uint64_t)f->body_len - 1);
    return n > 0 && (size_t)n < outlen;
}

/* After a cut: the next healthy member for the key (self included: it is asked over HTTP like
 * any peer, with the hop header, so it answers from its own cache or upstream). 0 or <0. */
static int try_resume(struct fwd *f)
{
    rgm_peer_pick_t pick;
    char range[64];

    if (!resume_range(f, range, sizeof(range)))
        return UV_ECANCELED;
    if (rgm_peers_rank(f->peers, f->key, f->key_len, 1, &pick, 1) == 0 ||
        strcmp(pick.url, f->url) == 0)
        return UV_EHOSTUNREACH;
    rgm_log(RGM_LOG_INFO, MOD, "id=%llu %s cut at %" PRIu64 " bytes: resuming from %s",
            (unsigned long long)rgm_req_id(f->req), f->url, f->sent, pick.url);
    memcpy(f->url, pick.url, sizeof(f->url));
    f->n_resumes++;
    return start_request(f, range);
}

static void on_done(rgm_upreq_t *r, int err, void *ud)
{
    struct fwd *f = ud;

    (void)r;
    f->up = NULL;
    f->is_paused = 0;
    count_peer(f);
    if (!f->req) {
        f->done(NULL, RGM_FWD_CLIENT_GONE, f->ud);
        fwd_free(f);
        return;
    }
    if (err == 0) {
        f->is_up_done = 1;
        if (f->n_writes == 0) {
            rgm_resp_finish(f->req);
            f->done(NULL, RGM_FWD_DONE, f->ud);
            fwd_free(f);
        }
        return;
    }
    if (f->peers && !f->is_refused)
        rgm_peers_report(f->peers, f->url, 0);
    if (!f->is_started && f->is_refused) {
        rgm_resp_abort(f->req, "cannot relay the peer's answer");
        f->done(NULL, RGM_FWD_CUT, f->ud);
        fwd_free(f);
        return;
    }
    if (!f->is_started) {
        rgm_log(RGM_LOG_WARN, MOD, "id=%llu peer %s: %s", (unsigned long long)rgm_req_id(f->req),
                f->url, uv_strerror(err));
        rgm_req_on_close(f->req, NULL, NULL);
        f->done(f->req, RGM_FWD_UNREACHABLE, f->ud);
        fwd_free(f);
        return;
    }
    if (!f->is_refused && try_resume(f) == 0)
        return;
    rgm_resp_abort(f->req, "peer cut the body");
    f->done(NULL, RGM_FWD_CUT, f->ud);
    fwd_free(f);
}

static void on_client_close(rgm_req_t *req, void *ud)
{
    struct fwd *f = ud;

    (void)req;
    f->req = NULL;
    if (f->up)
        rgm_upreq_cancel(f->up); /* on_done(UV_ECANCELED) ends the forward */
}

/* One request to f->url for the client's request; range overrides the client's Range (a
 * resume). 0, or <0 when it could not start. */
static int start_request(struct fwd *f, const char *range)
{
    static const rgm_upreq_cbs_t cbs = {on_head, on_body, on_done};
    char accept[2048];
    const char *auth = rgm_req_header(f->req, "Authorization");
    size_t len = strlen(f->url) + strlen(f->target) + 1;
    char *url = rgm_malloc(len);
    int rc;

    (void)snprintf(url, len, "%s%s", f->url, f->target);
    f->up = rgm_upreq_new(f->client, f->is_head ? "HEAD" : "GET", url, NULL);
    free(url);
    if (!f->up)
        return UV_EINVAL;
    rgm_upreq_set_max_redirects(f->up, 0);
    if (auth)
        rgm_upreq_add_header(f->up, "Authorization", auth);
    if (!range)
        range = rgm_req_header(f->req, "Range");
    if (range)
        rgm_upreq_add_header(f->up, "Range", range);
    if (rgm_req_header_list(f->req, "Accept", accept, sizeof(accept)) == 1)
        rgm_upreq_add_header(f->up, "Accept", accept);
    rgm_upreq_add_header(f->up, RGM_HDR_HOP, "1");
    if (f->is_fill)
        rgm_upreq_add_header(f->up, RGM_HDR_ONLY_IF_CACHED, "1");
    rc = rgm_upreq_start(f->up, &cbs, f);
    if (rc < 0)
        f->up = NULL;
    return rc;
}

int rgm_fwd_start(rgm_req_t *req, const char *peer_url, const rgm_fwd_opts_t *o,
                  rgm_fwd_done_fn done, void *ud)
{
    struct fwd *f = rgm_calloc(1, sizeof(*f));
    const char *path = rgm_req_path(req), *query = rgm_req_query(req);
    size_t len;
    int rc;

    if (strlen(peer_url) >= sizeof(f->url) || path[0] != '/') {
        free(f);
        return UV_EINVAL;
    }
    memcpy(f->url, peer_url, strlen(peer_url) + 1);
    len = strlen(path) + strlen(query) + 2;
    f->target = rgm_malloc(len);
    (void)snprintf(f->target, len, "%s%s%s", path, query[0] ? "?" : "", query);
    f->req = req;
    f->client = o->client;
    f->peers = o->peers;
    f->is_fill = o->is_fill;
    f->is_head = rgm_req_method(req) == RGM_M_HEAD;
    f->body_len = -1;
    if (o->key) {
        f->key = rgm_strndup(o->key, o->key_len);
        f->key_len = o->key_len;
    }
    f->done = done;
    f->ud = ud;
    rc = start_request(f, NULL);
    if (rc < 0) {
        fwd_free(f);
        return rc;
    }
    rgm_req_on_close(req, on_client_close, f);
    return 0;
}
