/* The /v2 API: request dispatch, registry selection, OCI errors, the access rule for cached
 * private content, /healthz, /readyz and /metrics. Manifests and tag lists are in
 * manifests.c, blobs in blobs.c. */
#include <uv.h>
#include <inttypes.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "registry/routes-int.h"

static const char *const cache_names[] = {"HIT", "MISS", "JOIN", "STALE", "NONE"};

rgm_routes_t *rgm_routes_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_store_t *store,
                             rgm_index_t *index, rgm_fetches_t *fetches, rgm_upstream_t *up)
{
    rgm_routes_t *r = rgm_calloc(1, sizeof(*r));

    r->loop = loop;
    r->cfg = cfg;
    r->store = store;
    r->index = index;
    r->fetches = fetches;
    r->up = up;
    r->access = rgm_auth_cache_new(0);
    r->heads = rgm_auth_cache_new(0);
    return r;
}

void rgm_routes_set_server(rgm_routes_t *r, rgm_server_t *srv)
{
    r->srv = srv;
    rgm_server_set_error_headers(srv, RGM_V2_HDR "X-Cache: MISS\r\n");
}

void rgm_routes_free(rgm_routes_t *r)
{
    size_t i;

    if (!r)
        return;
    rgm_auth_cache_free(r->access);
    rgm_auth_cache_free(r->heads);
    for (i = 0; i < r->extra_len; i++) {
        free(r->extra[i].name);
        free(r->extra[i].endpoint);
    }
    free(r->extra);
    free(r);
}

static void stop_check(uv_timer_t *h)
{
    rgm_routes_t *r = rgm_container_of(h, rgm_routes_t, stop_timer);

    if (r->bjobs || r->mjobs)
        return;
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    r->stop_done(r->stop_ud);
}

void rgm_routes_shutdown(rgm_routes_t *r, void (*done)(void *ud), void *ud)
{
    r->is_stopping = 1;
    r->stop_done = done;
    r->stop_ud = ud;
    blobs_shutdown(r);
    manifests_shutdown(r);
    /* Jobs end through their callbacks (cancelled upcalls, fsyncs): look every 10 ms. */
    uv_timer_init(r->loop, &r->stop_timer);
    if (uv_timer_start(&r->stop_timer, stop_check, 0, 10) < 0)
        RGM_BUG_ON(1);
}

/* ---- the request context ---- */

int rq_alive(const struct rq *q)
{
    return q->req != NULL;
}

void rq_release(struct rq *q)
{
    if (q->req || q->pending > 0 || q->rd || q->job || q->mjob || q->is_sending)
        return;
    if (q->fd >= 0)
        close(q->fd);
    free(q->auth);
    free(q->accept);
    free(q);
}

static void on_req_close(rgm_req_t *req, void *ud)
{
    struct rq *q = ud;

    (void)req;
    q->req = NULL;
    q->is_sending = 0;
    blobs_detach(q);
    manifests_detach(q);
    rq_release(q);
}

void rq_set_cache(struct rq *q, const char *status)
{
    size_t i;

    q->cache_status = status;
    for (i = 0; i < RGM_ARRAY_SIZE(cache_names); i++)
        if (strcmp(cache_names[i], status) == 0)
            q->cache_idx = (int)i;
    if (q->req)
        rgm_req_set_cache_status(q->req, status);
}

void rq_count_bytes(struct rq *q, uint64_t n)
{
    q->r->m.bytes_by_cache[q->cache_idx] += n;
}

static int status_class(int status)
{
    if (status >= 100 && status < 600)
        return status / 100 - 1;
    return 5;
}

static void count_request(rgm_routes_t *r, int route, int status, int cache_idx)
{
    r->m.req_by_route_status[route][status_class(status)]++;
    r->m.req_by_cache[cache_idx]++;
    r->m.req_full[route][status_class(status)][cache_idx]++;
}

static int route_idx(const struct rq *q)
{
    switch (q->path.kind) {
    case RGM_REF_ROUTE_MANIFEST:
        return 1;
    case RGM_REF_ROUTE_BLOB:
        return 2;
    case RGM_REF_ROUTE_TAGS:
        return 3;
    default:
        return 0;
    }
}

int rq_start(struct rq *q, int status, const char *hdrs, int64_t len)
{
    char h[8192];
    int n;

    n = snprintf(h, sizeof(h), RGM_V2_HDR "%s", hdrs ? hdrs : "");
    if (n < 0 || (size_t)n >= sizeof(h))
        return UV_ENOBUFS;
    count_request(q->r, route_idx(q), status, q->cache_idx);
    return rgm_resp_start(q->req, status, h, len);
}

void rq_finish(struct rq *q)
{
    rgm_req_t *req = q->req;

    q->req = NULL;
    rgm_resp_finish(req);
    rq_release(q);
}

void rq_abort(struct rq *q, const char *reason)
{
    rgm_req_t *req = q->req;

    q->req = NULL;
    rgm_resp_abort(req, reason);
    rq_release(q);
}

void rq_error(struct rq *q, int status, const char *code, const char *msg, const char *hdrs)
{
    char h[4096];
    int n;
    rgm_req_t *req = q->req;

    if (!req)
        return;
    n = snprintf(h, sizeof(h), RGM_V2_HDR "%s", hdrs ? hdrs : "");
    if (n < 0 || (size_t)n >= sizeof(h))
        h[0] = '\0';
    count_request(q->r, route_idx(q), status, q->cache_idx);
    q->req = NULL;
    rgm_resp_error(req, status, code, msg, h);
    rq_release(q);
}

/* A header value from upstream, made safe to copy into ours (no CR/LF). */
static int safe_header(char *out, size_t len, const char *name, const char *value)
{
    size_t i;
    int n;

    if (!value)
        return 0;
    for (i = 0; value[i]; i++)
        if (value[i] == '\r' || value[i] == '\n')
            return 0;
    n = snprintf(out, len, "%s: %s\r\n", name, value);
    return n > 0 && (size_t)n < len;
}

void rq_relay_error(struct rq *q, int status, rgm_upcall_t *c, int err, int is_blob)
{
    char h[4096] = "";
    char msg[256];

    if (!q->req)
        return;
    if (status == 0) {
        q->r->m.upstream_errors++;
        snprintf(msg, sizeof(msg), "upstream unreachable: %s", uv_strerror(err));
        rq_error(q, err == UV_ETIMEDOUT ? 504 : 502, "UNAVAILABLE", msg, NULL);
        return;
    }
    switch (status) {
    case 401:
        if (c)
            safe_header(h, sizeof(h), "WWW-Authenticate", rgm_upcall_header(c, "WWW-Authenticate"));
        rq_error(q, 401, "UNAUTHORIZED", "authentication required", h);
        return;
    case 403:
        rq_error(q, 403, "DENIED", "requested access to the resource is denied", NULL);
        return;
    case 404:
        if (q->path.kind == RGM_REF_ROUTE_TAGS)
            rq_error(q, 404, "NAME_UNKNOWN", "repository name not known to registry", NULL);
        else if (is_blob)
            rq_error(q, 404, "BLOB_UNKNOWN", "blob unknown to registry", NULL);
        else
            rq_error(q, 404, "MANIFEST_UNKNOWN", "manifest unknown", NULL);
        return;
    case 429:
        if (c)
            safe_header(h, sizeof(h), "Retry-After", rgm_upcall_header(c, "Retry-After"));
        rq_error(q, 429, "TOOMANYREQUESTS", "too many requests to the upstream registry", h);
        return;
    default:
        q->r->m.upstream_errors++;
        snprintf(msg, sizeof(msg), "upstream answered %d", status);
        if (status >= 400 && status < 500)
            rq_error(q, status, "UNKNOWN", msg, NULL);
        else
            rq_error(q, 502, "UNAVAILABLE", msg, NULL);
    }
}

void rq_upcall_opts(struct rq *q, rgm_upcall_opts_t *o, const char *method, const char *suffix)
{
    memset(o, 0, sizeof(*o));
    o->reg = q->reg;
    o->repo = q->repo;
    o->method = method;
    o->suffix = suffix;
    o->client_auth = q->auth;
    o->client_auth_first = q->reg->is_mirror;
}

void rq_mark_origin(struct rq *q, const char *digest, int is_private)
{
    char key[1024];

    if (rgm_index_add_origin(q->r->index, digest, q->reg->name, q->repo, !is_private) < 0)
        rgm_log(RGM_LOG_WARN, "routes", "cannot record origin of %s", digest);
    if (is_private && q->auth) {
        snprintf(key, sizeof(key), "%s|%s|%s", q->credhash, q->reg->name, q->repo);
        rgm_auth_cache_put(q->r->access, key, "1", rgm_time_ms() + q->r->cfg->auth_cache_ttl_ms);
    }
}

int rq_ignore_body(rgm_upcall_t *c, const char *data, size_t len, void *ud)
{
    (void)c;
    (void)data;
    (void)len;
    (void)ud;
    return 0;
}

/* ---- access: the cache never widens it ---- */

static int access_on_head(rgm_upcall_t *c, int status, void *ud)
{
    struct rq *q = ud;

    q->access_status = status;
    if (status >= 200 && status < 300) {
        /* The registry the object came through serves it in this repository: to this
         * client only (its credentials were needed), or to anyone. */
        if (rgm_index_has_registry_origin(q->r->index, q->digest, q->reg->name) == 1)
            rq_mark_origin(q, q->digest, rgm_upcall_used_client_auth(c));
        return 0; /* a HEAD: no body follows; 0 keeps the connection for reuse */
    }
    q->r->m.access_denied++;
    rq_relay_error(q, status, c, 0, q->path.kind == RGM_REF_ROUTE_BLOB);
    return 0;
}

static void access_on_done(rgm_upcall_t *c, int err, void *ud)
{
    struct rq *q = ud;

    (void)c;
    q->pending--;
    if (q->req) {
        if (q->access_status >= 200 && q->access_status < 300) {
            q->after_access(q);
            return;
        }
        if (q->access_status == 0) {
            q->r->m.access_denied++;
            rq_error(q, err == UV_ETIMEDOUT ? 504 : 503, "UNAVAILABLE",
                     "cannot verify access to private content: upstream unreachable", NULL);
            return;
        }
    }
    rq_release(q);
}

static const rgm_upcall_cbs_t access_cbs = {access_on_head, rq_ignore_body, access_on_done};

int rq_may_vouch(struct rq *q, const char *digest)
{
    return rgm_index_has_public_origin(q->r->index, digest) == 1 ||
           rgm_index_has_registry_origin(q->r->index, digest, q->reg->name) == 1;
}

int rq_decision_cached(struct rq *q, const char *digest)
{
    char key[1024];

    if (!q->auth || rgm_index_has_origin(q->r->index, digest, q->reg->name, q->repo, NULL) != 1)
        return 0;
    snprintf(key, sizeof(key), "%s|%s|%s", q->credhash, q->reg->name, q->repo);
    return rgm_auth_cache_get(q->r->access, key, rgm_time_ms()) != NULL;
}

void rq_check_access(struct rq *q)
{
    rgm_upcall_opts_t o;
    char suffix[256];
    int err;

    /* Public content: anyone, through any repository. Private content: the decision cached
     * for this client and repository, but only for objects known to be in that repository
     * (a decision about one repository says nothing about another's objects). */
    if (rgm_index_has_public_origin(q->r->index, q->digest) == 1 ||
        rq_decision_cached(q, q->digest)) {
        q->after_access(q);
        return;
    }
    /* Otherwise the upstream decides, with this client's credentials. */
    q->r->m.access_checks++;
    snprintf(suffix, sizeof(suffix), "%s/%s",
             q->path.kind == RGM_REF_ROUTE_BLOB ? "blobs" : "manifests", q->digest);
    rq_upcall_opts(q, &o, "HEAD", suffix);
    o.accept = "application/vnd.oci.image.index.v1+json, "
               "application/vnd.oci.image.manifest.v1+json, "
               "application/vnd.docker.distribution.manifest.list.v2+json, "
               "application/vnd.docker.distribution.manifest.v2+json, */*";
    q->access_status = 0;
    err = rgm_upcall_start(q->r->up, &o, &access_cbs, q, NULL);
    if (err < 0) {
        rq_error(q, 503, "UNAVAILABLE", "cannot verify access to private content", NULL);
        return;
    }
    q->r->m.upstream_requests++;
    q->pending++;
}

/* ---- registry selection ---- */

static int is_registry(void *ud, const char *host)
{
    rgm_routes_t *r = ud;

    return rgm_config_registry(r->cfg, host) != NULL ||
           (r->cfg->allow_any_registry && rgm_ref_valid_host(host));
}

static const rgm_registry_cfg_t *any_registry(rgm_routes_t *r, const char *name)
{
    rgm_registry_cfg_t *reg;
    size_t i;
    char url[600];

    for (i = 0; i < r->extra_len; i++)
        if (strcmp(r->extra[i].name, name) == 0)
            return &r->extra[i];
    if (r->extra_len >= 256)
        return NULL;
    /* Pointers into this array are held by requests: grow it only while none can be live.
     * A fixed capacity keeps earlier entries in place. */
    if (!r->extra)
        r->extra = rgm_calloc(256, sizeof(*r->extra));
    reg = &r->extra[r->extra_len++];
    snprintf(url, sizeof(url), "https://%s", name);
    reg->name = rgm_strdup(name);
    reg->endpoint = rgm_strdup(url);
    reg->tag_ttl_ms = 60000;
    return reg;
}

/* Picks q->reg and q->repo. Answers the error itself and returns <0 when it cannot. */
static int select_registry(struct rq *q)
{
    rgm_routes_t *r = q->r;
    char ns[RGM_REF_HOST_MAX + 1];
    char regname[RGM_REF_HOST_MAX + 1];
    const char *name = NULL;
    char msg[512];
    int found;

    found = rgm_query_get(rgm_req_query(q->req), "ns", ns, sizeof(ns));
    if (found < 0) {
        rq_error(q, 400, "NAME_INVALID", "invalid ns parameter", NULL);
        return -1;
    }
    if (found == 1 && ns[0])
        name = rgm_ref_normalize_registry(ns);
    else if (q->path.registry[0])
        name = rgm_ref_normalize_registry(q->path.registry);
    else
        name = r->cfg->default_registry;
    q->reg = rgm_config_registry(r->cfg, name);
    if (!q->reg && r->cfg->allow_any_registry && rgm_ref_valid_host(name))
        q->reg = any_registry(r, name);
    if (!q->reg) {
        snprintf(msg, sizeof(msg), "registry %.300s is not configured on this mirror", name);
        rq_error(q, 403, "DENIED", msg, NULL);
        return -1;
    }
    if (rgm_ref_normalize_repo(q->reg->name, q->path.name, regname, sizeof(regname), q->repo,
                               sizeof(q->repo)) < 0 ||
        !rgm_ref_valid_name(q->repo)) {
        rq_error(q, 400, "NAME_INVALID", "invalid repository name", NULL);
        return -1;
    }
    return 0;
}

/* ---- health and metrics ---- */

static void metric(rgm_buf_t *b, const char *name, const char *type, const char *help)
{
    if (rgm_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type) < 0)
        return;
}

static void serve_metrics(rgm_routes_t *r, rgm_req_t *req)
{
    static const char *const routes[] = {"other", "manifest", "blob", "tags", "health"};
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    const struct metrics *m = &r->m;
    uint64_t objects = 0;
    uint64_t bytes = 0;
    rgm_buf_t b;
    size_t i;
    size_t j;
    size_t k;
    int err = 0;

    rgm_buf_init(&b, 1024 * 1024);
    metric(&b, "regmirror_requests_total", "counter", "Requests answered, by route and status.");
    for (i = 0; i < RGM_ARRAY_SIZE(routes); i++)
        for (j = 0; j < RGM_ARRAY_SIZE(classes); j++)
            err |= rgm_buf_appendf(
                &b, "regmirror_requests_total{route=\"%s\",status=\"%s\"} %" PRIu64 "\n", routes[i],
                classes[j], m->req_by_route_status[i][j]);
    metric(&b, "regmirror_http_requests_total", "counter",
           "Requests answered, by route, status class and cache result (non-zero series).");
    for (i = 0; i < RGM_ARRAY_SIZE(routes); i++)
        for (j = 0; j < RGM_ARRAY_SIZE(classes); j++)
            for (k = 0; k < RGM_ARRAY_SIZE(cache_names); k++)
                if (m->req_full[i][j][k] > 0)
                    err |= rgm_buf_appendf(
                        &b,
                        "regmirror_http_requests_total{route=\"%s\",status=\"%s\",cache=\"%s\"} "
                        "%" PRIu64 "\n",
                        routes[i], classes[j], cache_names[k], m->req_full[i][j][k]);
    metric(&b, "regmirror_cache_requests_total", "counter", "Requests by cache result.");
    for (i = 0; i < RGM_ARRAY_SIZE(cache_names); i++)
        err |= rgm_buf_appendf(&b, "regmirror_cache_requests_total{cache=\"%s\"} %" PRIu64 "\n",
                               cache_names[i], m->req_by_cache[i]);
    metric(&b, "regmirror_served_bytes_total", "counter", "Body bytes served, by cache result.");
    for (i = 0; i < RGM_ARRAY_SIZE(cache_names); i++)
        err |= rgm_buf_appendf(&b, "regmirror_served_bytes_total{cache=\"%s\"} %" PRIu64 "\n",
                               cache_names[i], m->bytes_by_cache[i]);
#define SIMPLE(name, type, help, value)                                                            \
    do {                                                                                           \
        metric(&b, name, type, help);                                                              \
        err |= rgm_buf_appendf(&b, "%s %" PRIu64 "\n", name, (uint64_t)(value));                   \
    } while (0)
    SIMPLE("regmirror_upstream_requests_total", "counter", "Logical upstream requests started.",
           m->upstream_requests);
    SIMPLE("regmirror_upstream_bytes_total", "counter", "Blob bytes received from upstreams.",
           m->upstream_bytes);
    SIMPLE("regmirror_upstream_errors_total", "counter",
           "Upstream requests that failed or answered 5xx.", m->upstream_errors);
    SIMPLE("regmirror_joins_total", "counter", "Requests that joined a fetch in flight.", m->joins);
    SIMPLE("regmirror_fetches_started_total", "counter", "Blob fetches started.",
           m->fetches_started);
    SIMPLE("regmirror_fetches_completed_total", "counter", "Blob fetches verified and stored.",
           m->fetches_done);
    SIMPLE("regmirror_fetches_failed_total", "counter", "Blob fetches that failed.",
           m->fetches_failed);
    SIMPLE("regmirror_fetch_resumes_total", "counter", "Blob fetches resumed with Range.",
           m->resumes);
    SIMPLE("regmirror_digest_mismatches_total", "counter", "Upstream bytes that did not match.",
           m->digest_mismatches);
    SIMPLE("regmirror_access_checks_total", "counter", "Upstream checks of private content.",
           m->access_checks);
    SIMPLE("regmirror_access_denied_total", "counter", "Private content refused.",
           m->access_denied);
    SIMPLE("regmirror_fetches_in_flight", "gauge", "Upstream fetch slots in use.",
           rgm_upstream_slots_used(r->up));
    SIMPLE("regmirror_fetches_queued", "gauge", "Fetches waiting for a slot.",
           rgm_upstream_slots_queued(r->up));
    SIMPLE("regmirror_open_connections", "gauge", "Client connections open.",
           r->srv ? rgm_server_conn_count(r->srv) : 0);
    if (rgm_index_stats(r->index, &objects, &bytes) < 0)
        objects = bytes = 0;
    SIMPLE("regmirror_cache_objects", "gauge", "Objects in the cache.", objects);
    SIMPLE("regmirror_cache_bytes", "gauge", "Bytes in the cache.", bytes);
    SIMPLE("regmirror_cache_max_bytes", "gauge", "Cache size limit (max_cache_bytes); 0: none.",
           r->cfg->max_cache_bytes);
#undef SIMPLE
    if (rgm_upstream_metrics(r->up, &b) < 0)
        err = -1;
    if (err < 0) {
        rgm_resp_error(req, 500, "UNKNOWN", "metrics too large", NULL);
    } else {
        r->m.req_by_route_status[4][1]++;
        rgm_resp_simple(req, 200, NULL, "text/plain; version=0.0.4", b.data, b.len);
    }
    rgm_buf_free(&b);
}

static int serve_health(rgm_routes_t *r, rgm_req_t *req, const char *path)
{
    if (strcmp(path, "/healthz") == 0) {
        rgm_resp_simple(req, 200, NULL, "text/plain", "ok\n", 3);
        return 1;
    }
    if (strcmp(path, "/readyz") == 0) {
        if (r->is_stopping)
            rgm_resp_simple(req, 503, NULL, "text/plain", "stopping\n", 9);
        else if (rgm_store_is_writable(r->store) < 0)
            rgm_resp_simple(req, 503, NULL, "text/plain", "store not writable\n", 19);
        else
            rgm_resp_simple(req, 200, NULL, "text/plain", "ready\n", 6);
        return 1;
    }
    if (strcmp(path, "/metrics") == 0) {
        serve_metrics(r, req);
        return 1;
    }
    return 0;
}

/* ---- dispatch ---- */

void rgm_routes_handle(rgm_req_t *req, void *ud)
{
    rgm_routes_t *r = ud;
    const char *path = rgm_req_path(req);
    enum rgm_method m = rgm_req_method(req);
    const char *auth;
    struct rq *q;
    int err;

    rgm_req_set_cache_status(req, "MISS");
    if (path[0] != '/' || (strncmp(path, "/v2", 3) != 0 || (path[3] != '\0' && path[3] != '/'))) {
        if ((m == RGM_M_GET || m == RGM_M_HEAD) && serve_health(r, req, path))
            return;
        rgm_resp_error(req, 404, "NOT_FOUND", "no such route", RGM_V2_HDR);
        return;
    }
    if (m != RGM_M_GET && m != RGM_M_HEAD) {
        rgm_resp_error(req, 405, "UNSUPPORTED", "this mirror is read-only",
                       RGM_V2_HDR "Allow: GET, HEAD\r\n");
        return;
    }
    q = rgm_calloc(1, sizeof(*q));
    q->r = r;
    q->req = req;
    q->fd = -1;
    q->is_head = m == RGM_M_HEAD;
    q->cache_idx = 1;
    err = rgm_ref_parse_path_ex(path, is_registry, r, &q->path);
    if (err < 0) {
        rq_error(q, rgm_ref_err_status(err), rgm_ref_err_code(err),
                 err == RGM_REF_EROUTE    ? "no such route"
                 : err == RGM_REF_EDIGEST ? "invalid digest (sha256: and 64, or sha512: and 128 "
                                            "lowercase hex digits)"
                 : err == RGM_REF_ETAG    ? "invalid tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})"
                                          : "invalid repository name",
                 NULL);
        return;
    }
    if (q->path.kind == RGM_REF_ROUTE_ROOT) {
        count_request(r, 0, 200, 1);
        q->req = NULL;
        rgm_resp_simple(req, 200, RGM_V2_HDR, "application/json", "{}", 2);
        rq_release(q);
        return;
    }
    if (select_registry(q) < 0)
        return;
    auth = rgm_req_header(req, "Authorization");
    if (auth && auth[0]) {
        q->auth = rgm_strdup(auth);
        rgm_auth_cred_hash(auth, q->credhash);
    }
    rgm_req_on_close(req, on_req_close, q);
    switch (q->path.kind) {
    case RGM_REF_ROUTE_BLOB:
        blobs_handle(q);
        break;
    case RGM_REF_ROUTE_MANIFEST:
        manifests_handle(q);
        break;
    case RGM_REF_ROUTE_TAGS:
        tags_handle(q);
        break;
    default:
        rq_error(q, 404, "NOT_FOUND", "no such route", NULL);
    }
}
