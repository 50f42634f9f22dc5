/* /healthz, /readyz and /metrics: readiness from the stopping flag and the store, and the
 * counters of struct metrics (plus the upstream's, the index's and the server's own figures)
 * in the Prometheus text format. Counting happens where things happen; this only renders. */
#include "registry/metrics.h"

#include <inttypes.h>

#include "core/common.h"
#include "core/buf.h"
#include "registry/request.h"

static const char *const cache_names[] = {"HIT", "MISS", "JOIN", "STALE", "NONE", "NEGATIVE"};

int metrics_cache_idx(const char *status)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(cache_names); i++)
        if (strcmp(cache_names[i], status) == 0)
            return (int)i;
    return -1;
}

/* ---- health and metrics ---- */

struct store_errors {
    rgm_buf_t *b;
    int err;
};

static void on_store_error(const char *op, const char *error, uint64_t count, void *ud)
{
    struct store_errors *se = ud;

    se->err |=
        rgm_buf_appendf(se->b, "regmirror_store_errors_total{op=\"%s\",error=\"%s\"} %" PRIu64 "\n",
                        op, error, count);
}

static void metric(rgm_buf_t *b, const char *name, const char *type, const char *help)
{
    if (rgm_buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type) < 0)
        return;
}

/* The cluster's series (docs/cluster.md): where requests went, fills, and each peer. */
static int cluster_metrics(const struct rq_env *r, rgm_buf_t *b)
{
    const struct metrics *m = &r->m;
    rgm_peers_stats_t st;
    rgm_peer_pick_t p;
    size_t i;
    int err = 0;

    if (!r->peers)
        return 0;
    rgm_peers_stats(r->peers, &st);
    metric(b, "regmirror_cluster_requests_total", "counter",
           "Requests for sharded keys: owned (served here as owner), hop (forwarded by a peer), "
           "fill (a peer's only-if-cached question), forwarded (to the owner), local (not "
           "owned, but no owner answered).");
    err |= rgm_buf_appendf(b,
                           "regmirror_cluster_requests_total{path=\"owned\"} %" PRIu64 "\n"
                           "regmirror_cluster_requests_total{path=\"hop\"} %" PRIu64 "\n"
                           "regmirror_cluster_requests_total{path=\"fill\"} %" PRIu64 "\n"
                           "regmirror_cluster_requests_total{path=\"forwarded\"} %" PRIu64 "\n"
                           "regmirror_cluster_requests_total{path=\"local\"} %" PRIu64 "\n",
                           m->cluster_owned, m->cluster_hop, m->cluster_fill_asks,
                           m->cluster_forwarded, m->cluster_local);
    metric(b, "regmirror_cluster_forward_failures_total", "counter",
           "Forwards whose owner gave no answer (then the next owner was asked).");
    err |= rgm_buf_appendf(b, "regmirror_cluster_forward_failures_total %" PRIu64 "\n",
                           m->cluster_unreachable);
    metric(b, "regmirror_cluster_fills_total", "counter",
           "Misses of an owner asked of the previous owner, and those it answered.");
    err |= rgm_buf_appendf(b,
                           "regmirror_cluster_fills_total{result=\"asked\"} %" PRIu64 "\n"
                           "regmirror_cluster_fills_total{result=\"filled\"} %" PRIu64 "\n",
                           m->cluster_fills, m->cluster_filled);
    metric(b, "regmirror_cluster_only_if_cached_misses_total", "counter",
           "Only-if-cached requests from peers answered 404.");
    err |= rgm_buf_appendf(b, "regmirror_cluster_only_if_cached_misses_total %" PRIu64 "\n",
                           m->cluster_only_cached_misses);
    metric(b, "regmirror_cluster_peers", "gauge", "Cluster members, and those healthy.");
    err |= rgm_buf_appendf(b,
                           "regmirror_cluster_peers{state=\"member\"} %zu\n"
                           "regmirror_cluster_peers{state=\"up\"} %zu\n",
                           st.n_members, st.n_up);
    metric(b, "regmirror_cluster_peer_transitions_total", "counter",
           "Peers marked down, and marked up again.");
    err |= rgm_buf_appendf(b,
                           "regmirror_cluster_peer_transitions_total{to=\"down\"} %" PRIu64 "\n"
                           "regmirror_cluster_peer_transitions_total{to=\"up\"} %" PRIu64 "\n",
                           st.n_marked_down, st.n_marked_up);
    metric(b, "regmirror_cluster_peer_up", "gauge", "1 when the peer is healthy (self: 1).");
    for (i = 0; rgm_peers_member(r->peers, i, &p) == 0; i++)
        err |= rgm_buf_appendf(b, "regmirror_cluster_peer_up{peer=\"%s\",self=\"%d\"} %d\n", p.url,
                               p.is_self, p.is_up);
    metric(b, "regmirror_cluster_peer_forwarded_total", "counter",
           "Requests forwarded to each peer.");
    for (i = 0; rgm_peers_member(r->peers, i, &p) == 0; i++)
        err |=
            rgm_buf_appendf(b, "regmirror_cluster_peer_forwarded_total{peer=\"%s\"} %" PRIu64 "\n",
                            p.url, p.n_forwarded);
    metric(b, "regmirror_cluster_peer_forwarded_bytes_total", "counter",
           "Body bytes relayed from each peer.");
    for (i = 0; rgm_peers_member(r->peers, i, &p) == 0; i++)
        err |= rgm_buf_appendf(
            b, "regmirror_cluster_peer_forwarded_bytes_total{peer=\"%s\"} %" PRIu64 "\n", p.url,
            p.bytes_forwarded);
    metric(b, "regmirror_cluster_peer_fills_total", "counter", "Fills asked of each peer.");
    for (i = 0; rgm_peers_member(r->peers, i, &p) == 0; i++)
        err |= rgm_buf_appendf(b, "regmirror_cluster_peer_fills_total{peer=\"%s\"} %" PRIu64 "\n",
                               p.url, p.n_fills);
    return err;
}

static void serve_metrics(struct rq_env *r, rgm_req_t *req)
{
    static const char *const routes[] = {"other", "manifest", "blob", "tags", "health"};
    static const char *const classes[] = {"1xx", "2xx", "3xx", "4xx", "5xx", "other"};
    const struct metrics *m = &r->m;
    struct store_errors se;
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
    SIMPLE("regmirror_stale_refused_total", "counter",
           "Cached tags not served stale because they were older than max_stale (503).",
           m->stale_refused);
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
    metric(&b, "regmirror_store_errors_total", "counter",
           "Store errors (the blob was served uncached, or its index row lost), by operation "
           "and errno name (non-zero series).");
    se.b = &b;
    se.err = 0;
    rgm_store_errors_each(r->store, on_store_error, &se);
    err |= se.err;
    if (rgm_upstream_metrics(r->up, &b) < 0 || cluster_metrics(r, &b) < 0)
        err = -1;
    if (r->srv && rgm_server_metrics(r->srv, &b) < 0)
        err = -1;
    if (err < 0) {
        rgm_resp_error(req, 500, "UNKNOWN", "metrics too large", NULL);
    } else {
        r->m.req_by_route_status[4][1]++;
        rgm_resp_simple(req, 200, NULL, "text/plain; version=0.0.4", b.data, b.len);
    }
    rgm_buf_free(&b);
}

int metrics_serve(struct rq_env *r, rgm_req_t *req, const char *path)
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
