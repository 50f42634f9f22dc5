/* The /v2 API's front: picks the handler for each request (blobs, manifests, tag lists,
 * referrers, or /healthz, /readyz and /metrics), after checking the method and path and
 * choosing the registry; owns the shared state (struct rq_env) and stops the handlers' jobs
 * at shutdown. Answering, counting and the access rule are request.c's; serving is the
 * handlers'. */
#include "registry/routes.h"

#include <uv.h>

#include "core/common.h"
#include "core/util.h"
#include "registry/request.h"
#include "registry/metrics.h"
#include "registry/blobs.h"
#include "registry/manifests.h"
#include "registry/filter.h"
#include "registry/referrers.h"
#include "cluster/forward.h"
#include "cluster/rendezvous.h"

/* A request whose owners do not answer is forwarded at most this often, then served here. */
#define MAX_FORWARDS 3

struct rgm_routes {
    struct rq_env env;         /* what the handlers share: their q->r */
    rgm_registry_cfg_t *extra; /* registries made for allow_any_registry */
    size_t extra_len;
    void (*stop_done)(void *ud);
    void *stop_ud;
    uv_timer_t stop_timer;
};

rgm_routes_t *rgm_routes_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_store_t *store,
                             rgm_index_t *index, rgm_fetches_t *fetches, rgm_upstream_t *up)
{
    rgm_routes_t *r = rgm_calloc(1, sizeof(*r));
    struct rq_env *env = &r->env;

    env->loop = loop;
    env->cfg = cfg;
    env->store = store;
    env->index = index;
    env->fetches = fetches;
    env->up = up;
    env->access = rgm_auth_cache_new(0);
    env->heads = rgm_auth_cache_new(0);
    env->inuse = rgm_inuse_new();
    return r;
}

void rgm_routes_set_refs(rgm_routes_t *r, rgm_refs_t *refs)
{
    r->env.refs = refs;
}

rgm_inuse_t *rgm_routes_inuse(rgm_routes_t *r)
{
    return r->env.inuse;
}

void rgm_routes_set_server(rgm_routes_t *r, rgm_server_t *srv)
{
    r->env.srv = srv;
    rgm_server_set_error_headers(srv, RGM_V2_HDR "X-Cache: MISS\r\n");
}

void rgm_routes_set_cluster(rgm_routes_t *r, rgm_peers_t *peers, rgm_client_t *client)
{
    r->env.peers = peers;
    r->env.client = client;
}

void rgm_routes_free(rgm_routes_t *r)
{
    size_t i;

    if (!r)
        return;
    rgm_auth_cache_free(r->env.access);
    rgm_auth_cache_free(r->env.heads);
    rgm_inuse_free(r->env.inuse);
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

    if (r->env.bjobs || r->env.mjobs || r->env.n_forwarding > 0)
        return;
    uv_timer_stop(h);
    uv_close((uv_handle_t *)h, NULL);
    r->stop_done(r->stop_ud);
}

void rgm_routes_shutdown(rgm_routes_t *r, void (*done)(void *ud), void *ud)
{
    r->env.is_stopping = 1;
    r->stop_done = done;
    r->stop_ud = ud;
    blobs_shutdown(&r->env);
    manifests_shutdown(&r->env);
    /* Jobs end through their callbacks (cancelled upcalls, fsyncs): look every 10 ms. */
    uv_timer_init(r->env.loop, &r->stop_timer);
    if (uv_timer_start(&r->stop_timer, stop_check, 0, 10) < 0)
        RGM_BUG_ON(1);
}

/* ---- registry selection ---- */

static int is_registry(void *ud, const char *host)
{
    rgm_routes_t *r = ud;

    return rgm_config_registry(r->env.cfg, host) != NULL ||
           (r->env.cfg->allow_any_registry && rgm_ref_valid_host(host));
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
    reg->is_unlisted = 1;
    return reg;
}

/* Picks q->reg and q->repo. Answers the error itself and returns <0 when it cannot. */
static int select_registry(rgm_routes_t *r, struct rq *q)
{
    const rgm_config_t *cfg = r->env.cfg;
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
        name = cfg->default_registry;
    q->reg = rgm_config_registry(cfg, name);
    if (!q->reg && cfg->allow_any_registry && rgm_ref_valid_host(name))
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
    /* Filters apply to cached content too: a denied repository is not served at all. */
    if (rgm_filter_check(q->reg, q->repo, msg, sizeof(msg)) != 0) {
        rq_error(q, 403, "DENIED", msg, NULL);
        return -1;
    }
    return 0;
}

/* ---- cluster: each key to its owner ---- */

static void handle(rgm_routes_t *r, rgm_req_t *req, unsigned n_forwards);

struct forwarding {
    rgm_routes_t *r;
    unsigned n_forwards; /* forwards of this request so far, this one included */
};

/* The rendezvous key of q's object: its digest, or registry/repository:tag. 0, or <0 when q
 * has none (a tag list is served by whoever is asked). */
static int shard_key(const struct rq *q, char *key, size_t len)
{
    if (q->path.kind != RGM_REF_ROUTE_BLOB && q->path.kind != RGM_REF_ROUTE_MANIFEST)
        return UV_EINVAL;
    if (q->path.is_digest) {
        if (strlen(q->path.reference) >= len)
            return UV_ENOBUFS;
        memcpy(key, q->path.reference, strlen(q->path.reference) + 1);
        return 0;
    }
    return rgm_rendezvous_tag_key(q->reg->name, q->repo, q->path.reference, key, len);
}

static void on_forwarded(rgm_req_t *req, enum rgm_fwd_result result, void *ud)
{
    struct forwarding *fw = ud;
    rgm_routes_t *r = fw->r;
    unsigned n = fw->n_forwards;

    free(fw);
    r->env.n_forwarding--;
    if (result != RGM_FWD_UNREACHABLE)
        return;
    /* The owner is marked down now: the key's next owner, maybe this replica, serves it. */
    r->env.m.cluster_unreachable++;
    handle(r, req, n);
}

/* Hand q to the owner of its key when that is another healthy peer. Returns 1 when q went to
 * a peer (q is released), 0 when it is served here. */
static int route_to_owner(rgm_routes_t *r, struct rq *q, unsigned n_forwards)
{
    struct rq_env *env = &r->env;
    rgm_req_t *req = q->req;
    rgm_peer_pick_t owner;
    struct forwarding *fw;
    rgm_fwd_opts_t o;
    char key[RGM_REF_HOST_MAX + RGM_REF_NAME_MAX + RGM_REF_DIGEST_MAX + 8];

    q->may_fill = 1; /* rq_fill_source decides: only an owner fills */
    if (!env->peers)
        return 0; /* no cluster: the hop headers mean nothing here, from anyone */
    q->is_only_cached = rgm_req_header(req, RGM_HDR_ONLY_IF_CACHED) != NULL;
    if (q->is_only_cached) {
        env->m.cluster_fill_asks++; /* a peer's fill: from the store or 404, here */
        return 0;
    }
    if (rgm_req_header(req, RGM_HDR_HOP)) {
        env->m.cluster_hop++; /* the loop guard: a hop is never forwarded again */
        return 0;
    }
    if (shard_key(q, key, sizeof(key)) < 0)
        return 0;
    if (rgm_peers_owner(env->peers, key, strlen(key), &owner)) {
        if (rgm_peers_rank(env->peers, key, strlen(key), 1, &owner, 1) == 1 && owner.is_self)
            env->m.cluster_owned++;
        else
            env->m.cluster_local++;
        return 0;
    }
    if (n_forwards >= MAX_FORWARDS) {
        env->m.cluster_local++;
        return 0;
    }
    memset(&o, 0, sizeof(o));
    o.client = env->client;
    o.peers = env->peers;
    o.key = key;
    o.key_len = strlen(key);
    fw = rgm_calloc(1, sizeof(*fw));
    fw->r = r;
    fw->n_forwards = n_forwards + 1;
    if (rgm_fwd_start(req, owner.url, &o, on_forwarded, fw) < 0) {
        free(fw);
        env->m.cluster_local++;
        return 0;
    }
    env->m.cluster_forwarded++;
    env->n_forwarding++;
    q->req = NULL;
    rq_release(q);
    return 1;
}

/* ---- dispatch ---- */

void rgm_routes_handle(rgm_req_t *req, void *ud)
{
    handle(ud, req, 0);
}

static void handle(rgm_routes_t *r, rgm_req_t *req, unsigned n_forwards)
{
    const char *path = rgm_req_path(req);
    enum rgm_method m = rgm_req_method(req);
    struct rq *q;
    int err;

    rgm_req_set_cache_status(req, "MISS");
    if (rgm_req_is_health(req)) {
        /* a health_listen address: probes and scrapes only, whatever the path */
        if ((m == RGM_M_GET || m == RGM_M_HEAD) && metrics_serve(&r->env, req, path))
            return;
        rgm_resp_error(req, 404, "UNSUPPORTED", "only /healthz, /readyz and /metrics here",
                       RGM_V2_HDR);
        return;
    }
    if (path[0] != '/' || (strncmp(path, "/v2", 3) != 0 || (path[3] != '\0' && path[3] != '/'))) {
        if ((m == RGM_M_GET || m == RGM_M_HEAD) && metrics_serve(&r->env, req, path))
            return;
        rgm_resp_error(req, 404, "UNSUPPORTED", "no such route", RGM_V2_HDR);
        return;
    }
    if (m != RGM_M_GET && m != RGM_M_HEAD) {
        rgm_resp_error(req, 405, "UNSUPPORTED", "this mirror is read-only",
                       RGM_V2_HDR "Allow: GET, HEAD\r\n");
        return;
    }
    q = rq_new(&r->env, req);
    err = rgm_ref_parse_path_ex(path, is_registry, r, &q->path);
    if (err < 0) {
        rq_error(q, rgm_ref_err_status(err), rgm_ref_err_code(err),
                 err == RGM_REF_EROUTE    ? "no such route"
                 : err == RGM_REF_EDIGEST ? "invalid digest (sha256: and 64, or sha512: and 128 "
                                            "lowercase hex digits)"
                 : err == RGM_REF_ETAG    ? "manifest unknown: no tag can be named so "
                                            "([A-Za-z0-9_][A-Za-z0-9._-]{0,127})"
                                          : "invalid repository name",
                 NULL);
        return;
    }
    if (q->path.kind == RGM_REF_ROUTE_ROOT) {
        metrics_count(&r->env.m, 0, 200, 1);
        q->req = NULL;
        rgm_resp_simple(req, 200, RGM_V2_HDR, "application/json", "{}", 2);
        rq_release(q);
        return;
    }
    if (select_registry(r, q) < 0)
        return;
    if (route_to_owner(r, q, n_forwards))
        return;
    rq_begin(q);
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
    case RGM_REF_ROUTE_REFERRERS:
        referrers_handle(q);
        break;
    default:
        rq_error(q, 404, "UNSUPPORTED", "no such route", NULL);
    }
}
