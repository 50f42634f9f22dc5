/* The mirror's counters, and the answers to /healthz, /readyz and /metrics. The counters are
 * plain fields that the registry files bump where things happen (no call on the hot path);
 * this module renders them in the Prometheus text format. It knows no request context, only
 * a route index, a status and a cache index. */
#ifndef RGM_REGISTRY_METRICS_H
#define RGM_REGISTRY_METRICS_H

#include <stdint.h>
#include "http/server.h"

struct metrics {
    uint64_t req_by_route_status[5][6]; /* route kind x status class (1xx..5xx, other) */
    uint64_t req_by_cache[6];           /* HIT MISS JOIN STALE none NEGATIVE */
    uint64_t req_full[5][6][6];         /* route x status class x cache */
    uint64_t bytes_by_cache[6];
    uint64_t upstream_requests;
    uint64_t upstream_errors;
    uint64_t upstream_bytes;
    uint64_t joins;
    uint64_t digest_mismatches;
    uint64_t fetches_started;
    uint64_t fetches_done;
    uint64_t fetches_failed;
    uint64_t resumes;
    uint64_t access_checks;
    uint64_t access_denied;
    /* cluster (docs/cluster.md) */
    uint64_t cluster_owned;              /* requests for keys this replica owns, served here */
    uint64_t cluster_hop;                /* requests with the hop header, served here */
    uint64_t cluster_fill_asks;          /* only-if-cached requests from peers, served here */
    uint64_t cluster_forwarded;          /* requests handed to their owner */
    uint64_t cluster_unreachable;        /* owners that did not answer a forward */
    uint64_t cluster_local;              /* not owned, but served here: no owner answered */
    uint64_t cluster_fills;              /* misses asked of the previous owner */
    uint64_t cluster_filled;             /* ... that it answered */
    uint64_t cluster_only_cached_misses; /* only-if-cached requests answered 404 */
    uint64_t stale_refused;              /* cached tags not served: older than max_stale (503) */
};

/* 0..4 for 1xx..5xx, 5 for anything else. */
static inline int metrics_status_class(int status)
{
    return status >= 100 && status < 600 ? status / 100 - 1 : 5;
}

/* Count one answered request. route: 0 other, 1 manifest, 2 blob, 3 tags, 4 health;
 * cache_idx: see metrics_cache_idx. */
static inline void metrics_count(struct metrics *m, int route, int status, int cache_idx)
{
    m->req_by_route_status[route][metrics_status_class(status)]++;
    m->req_by_cache[cache_idx]++;
    m->req_full[route][metrics_status_class(status)][cache_idx]++;
}

/* The counters' index of an X-Cache value: 0 "HIT", 1 "MISS", 2 "JOIN", 3 "STALE",
 * 4 "NONE", 5 "NEGATIVE" (a remembered upstream 404); -1 for anything else. */
int metrics_cache_idx(const char *status);

struct rq_env;

/* Answer a GET or HEAD of /healthz, /readyz (503 while r is stopping or its store is not
 * writable) or /metrics (counted as route 4) on req, which the answer finishes. Returns 1
 * when it answered, 0 when path is none of those (req untouched). r is borrowed. */
int metrics_serve(struct rq_env *r, rgm_req_t *req, const char *path);

#endif
