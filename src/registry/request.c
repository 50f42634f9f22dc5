/* The request context of the /v2 API: its life (new, begin, release, the client leaving),
 * its answers (OCI errors, relayed upstream errors, start, finish, abort, a cached file as
 * the body), its counters, upstream HEADs on its behalf and the access rule for cached
 * private content. Which handler serves a request is routes.c's business; the handlers
 * (blobs.c, manifests.c) are reached only through q->detach and q->after_access. */
#include "registry/request.h"

#include <uv.h>
#include <unistd.h>

#include "core/common.h"
#include "core/log.h"
#include "core/util.h"

/* ---- life ---- */

struct rq *rq_new(struct rq_env *r, rgm_req_t *req)
{
    struct rq *q = rgm_calloc(1, sizeof(*q));

    q->r = r;
    q->req = req;
    q->fd = -1;
    q->is_head = rgm_req_method(req) == RGM_M_HEAD;
    q->cache_idx = 1;
    return q;
}

void rq_release(struct rq *q)
{
    if (q->req || q->pending > 0 || q->rd || q->job || q->mjob || q->is_sending)
        return;
    if (q->fd >= 0)
        close(q->fd);
    if (q->held[0])
        rgm_inuse_release(q->r->inuse, q->held);
    free(q->auth);
    free(q->accept);
    free(q);
}

void rq_hold_file(struct rq *q)
{
    if (!q->r->inuse || q->held[0] || q->fd < 0)
        return;
    snprintf(q->held, sizeof(q->held), "%s", q->digest);
    rgm_inuse_hold(q->r->inuse, q->held);
}

static void on_req_close(rgm_req_t *req, void *ud)
{
    struct rq *q = ud;

    (void)req;
    q->req = NULL;
    q->is_sending = 0;
    if (q->detach)
        q->detach(q);
    rq_release(q);
}

void rq_begin(struct rq *q)
{
    const char *auth = rgm_req_header(q->req, "Authorization");

    if (auth && auth[0]) {
        q->auth = rgm_strdup(auth);
        rgm_auth_cred_hash(auth, q->credhash);
    }
    rgm_req_on_close(q->req, on_req_close, q);
}

/* ---- counting ---- */

void rq_set_cache(struct rq *q, const char *status)
{
    int i = metrics_cache_idx(status);

    q->cache_status = status;
    if (i >= 0)
        q->cache_idx = i;
    if (q->req)
        rgm_req_set_cache_status(q->req, status);
}

void rq_count_bytes(struct rq *q, uint64_t n)
{
    q->r->m.bytes_by_cache[q->cache_idx] += n;
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

/* ---- answers ---- */

int rq_start(struct rq *q, int status, const char *hdrs, int64_t len)
{
    char h[8192];
    int n;

    n = snprintf(h, sizeof(h), RGM_V2_HDR "%s", hdrs ? hdrs : "");
    if (n < 0 || (size_t)n >= sizeof(h))
        return UV_ENOBUFS;
    metrics_count(&q->r->m, route_idx(q), status, q->cache_idx);
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

static void on_file_sent(rgm_req_t *req, int status, void *ud)
{
    struct rq *q = ud;

    (void)req;
    q->is_sending = 0;
    if (status < 0) {
        rq_abort(q, "file read error");
        return;
    }
    rq_count_bytes(q, q->end - q->off);
    rq_finish(q);
}

void rq_send_file(struct rq *q)
{
    int err;

    q->is_sending = 1;
    err = rgm_resp_sendfile(q->req, q->fd, q->off, q->end - q->off, on_file_sent, q);
    if (err < 0) {
        q->is_sending = 0;
        rq_abort(q, "sendfile failed");
    }
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
    metrics_count(&q->r->m, route_idx(q), status, q->cache_idx);
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
    if (status == 0 && err == UV_EPERM) {
        rq_error(q, 403, "DENIED", "the upstream address is not allowed", NULL);
        return;
    }
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
    case 410: /* gone: unknown from now on, said louder */
        if (q->path.kind == RGM_REF_ROUTE_TAGS)
            rq_error(q, status, "NAME_UNKNOWN", "repository name not known to registry", NULL);
        else if (is_blob)
            rq_error(q, status, "BLOB_UNKNOWN", "blob unknown to registry", NULL);
        else
            rq_error(q, status, "MANIFEST_UNKNOWN", "manifest unknown", NULL);
        return;
    case 429:
        if (c)
            safe_header(h, sizeof(h), "Retry-After", rgm_upcall_header(c, "Retry-After"));
        rq_error(q, 429, "TOOMANYREQUESTS", "too many requests to the upstream registry", h);
        return;
    default:
        q->r->m.upstream_errors++;
        snprintf(msg, sizeof(msg), "upstream answered %d", status);
        /* A 4XX keeps its status with a code of the spec's table (416: the range does not
         * fit the size; anything else, 400 405 406 413 ...: the operation is unsupported).
         * 5xx bodies are not bound to the table: UNAVAILABLE, distribution's 503 code, which
         * docker and containerd retry (they do not retry UNSUPPORTED or DENIED). */
        if (status == 416)
            rq_error(q, status, "SIZE_INVALID", msg, NULL);
        else if (status >= 400 && status < 500)
            rq_error(q, status, "UNSUPPORTED", msg, NULL);
        else
            rq_error(q, 502, "UNAVAILABLE", msg, NULL);
    }
}

/* ---- upstream calls ---- */

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

int rq_fill_source(struct rq *q, char *out, size_t outlen)
{
    rgm_peer_pick_t src;
    const char *key = q->path.reference;

    if (!q->may_fill || !q->r->peers || !q->path.is_digest ||
        !rgm_peers_fill_source(q->r->peers, key, strlen(key), &src) || strlen(src.url) >= outlen)
        return 0;
    memcpy(out, src.url, strlen(src.url) + 1);
    q->r->m.cluster_fills++;
    rgm_peers_count(q->r->peers, src.url, 1, 0);
    return 1;
}

void rq_only_cached_miss(struct rq *q, int is_blob)
{
    q->r->m.cluster_only_cached_misses++;
    if (is_blob)
        rq_error(q, 404, "BLOB_UNKNOWN", "blob not cached here", NULL);
    else
        rq_error(q, 404, "MANIFEST_UNKNOWN", "manifest not cached here", NULL);
}

int rq_head(struct rq *q, const char *suffix, const char *accept, const rgm_upcall_cbs_t *cbs)
{
    rgm_upcall_opts_t o;
    int err;

    rq_upcall_opts(q, &o, "HEAD", suffix);
    o.accept = accept;
    q->access_status = 0;
    err = rgm_upcall_start(q->r->up, &o, cbs, q, NULL);
    if (err < 0)
        return err;
    q->r->m.upstream_requests++;
    q->pending++;
    return 0;
}

void rq_head_on_done(rgm_upcall_t *c, int err, void *ud)
{
    struct rq *q = ud;

    (void)c;
    q->pending--;
    if (q->req && q->access_status == 0)
        rq_relay_error(q, 0, NULL, err ? err : UV_EPROTO, q->path.kind == RGM_REF_ROUTE_BLOB);
    else
        rq_release(q);
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

int rq_is_public(struct rq *q, const char *digest)
{
    int is_public = 0;

    if (q->path.kind != RGM_REF_ROUTE_MANIFEST || q->path.is_digest)
        return rgm_index_has_public_origin(q->r->index, digest) == 1;
    return rgm_index_has_origin(q->r->index, digest, q->reg->name, q->repo, &is_public) == 1 &&
           is_public;
}

/* Is access to digest, in q's repository, cached for q's credentials? */
static int decision_cached(struct rq *q, const char *digest)
{
    char key[1024];

    if (!q->auth || rgm_index_has_origin(q->r->index, digest, q->reg->name, q->repo, NULL) != 1)
        return 0;
    snprintf(key, sizeof(key), "%s|%s|%s", q->credhash, q->reg->name, q->repo);
    return rgm_auth_cache_get(q->r->access, key, rgm_time_ms()) != NULL;
}

void rq_check_access(struct rq *q)
{
    char suffix[256];

    /* Public content: anyone, through any repository (a tag: its repository's). Private
     * content: the decision cached for this client and repository, but only for objects
     * known to be in that repository (a decision about one repository says nothing about
     * another's objects). */
    if (rq_is_public(q, q->digest) || decision_cached(q, q->digest)) {
        q->after_access(q);
        return;
    }
    /* Otherwise the upstream decides, with this client's credentials. */
    q->r->m.access_checks++;
    snprintf(suffix, sizeof(suffix), "%s/%s",
             q->path.kind == RGM_REF_ROUTE_BLOB ? "blobs" : "manifests", q->digest);
    if (rq_head(q, suffix,
                "application/vnd.oci.image.index.v1+json, "
                "application/vnd.oci.image.manifest.v1+json, "
                "application/vnd.docker.distribution.manifest.list.v2+json, "
                "application/vnd.docker.distribution.manifest.v2+json, */*",
                &access_cbs) < 0)
        rq_error(q, 503, "UNAVAILABLE", "cannot verify access to private content", NULL);
}
