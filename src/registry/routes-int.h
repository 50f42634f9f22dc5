/* Internal to routes.c, blobs.c and manifests.c: the per-request context and shared helpers.
 * Not an API for other layers. */
#ifndef RGM_REGISTRY_ROUTES_INT_H
#define RGM_REGISTRY_ROUTES_INT_H

#include <uv.h>
#include "core/config.h"
#include "http/server.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cache/fetch.h"
#include "registry/auth.h"
#include "registry/reference.h"
#include "registry/upstream.h"
#include "registry/routes.h"

#define RGM_MANIFEST_MAX (4u * 1024 * 1024)
#define RGM_TAGLIST_MAX  (4u * 1024 * 1024)
#define RGM_V2_HDR       "Docker-Distribution-API-Version: registry/2.0\r\n"

struct bjob;
struct mjob;

struct metrics {
    uint64_t req_by_route_status[5][6]; /* route kind x status class (1xx..5xx, other) */
    uint64_t req_by_cache[5];           /* HIT MISS JOIN STALE none */
    uint64_t req_full[5][6][5];         /* route x status class x cache */
    uint64_t bytes_by_cache[5];
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
};

struct rgm_routes {
    uv_loop_t *loop;
    const rgm_config_t *cfg;
    rgm_store_t *store;
    rgm_index_t *index;
    rgm_fetches_t *fetches;
    rgm_upstream_t *up;
    rgm_server_t *srv;
    struct bjob *bjobs;
    struct mjob *mjobs;
    rgm_auth_cache_t *access;  /* "credhash|registry|repo" -> "1": upstream accepted */
    rgm_auth_cache_t *heads;   /* public HEAD answers for uncached tags (manifests.c) */
    rgm_registry_cfg_t *extra; /* registries made for allow_any_registry */
    size_t extra_len;
    int is_stopping;
    void (*stop_done)(void *ud);
    void *stop_ud;
    uv_timer_t stop_timer;
    struct metrics m;
};

/* One client request that needs async work. Lives until the response ends and no upstream
 * call or job references it. */
struct rq {
    rgm_routes_t *r;
    rgm_req_t *req; /* NULL once the client is gone */
    rgm_ref_path_t path;
    const rgm_registry_cfg_t *reg;
    char repo[RGM_REF_NAME_MAX + 16];
    char *auth;   /* the client's Authorization, copied; NULL when none */
    char *accept; /* the client's Accept lines joined, or the default list (manifests.c) */
    char credhash[65];
    int is_head;
    int pending; /* upstream calls in flight that point at this rq */

    /* blob streaming */
    struct bjob *job; /* waiting for this job's head, or parked on it */
    int is_parked;
    struct rq *next_waiter;
    rgm_fetch_reader_t *rd;
    int fd; /* cached blob file, or -1 */
    uint64_t off;
    uint64_t end; /* exclusive; UINT64_MAX when the size is unknown */
    int is_sending;
    int has_range;
    uint64_t range_start;
    uint64_t range_end;   /* inclusive; UINT64_MAX for "to the end" */
    int64_t range_suffix; /* bytes=-N: N, else -1 */

    /* manifests and tag lists */
    struct mjob *mjob;
    struct rq *next_mwaiter;
    char digest[RGM_DIGEST_MAX];
    rgm_index_object_t obj;   /* the index row of digest, when has_obj */
    uint64_t tag_fresh_until; /* a fresh cached tag: when it is due for revalidation */
    int has_obj;
    void (*after_access)(struct rq *q);
    int access_status; /* final status of the access HEAD, 0 before it */
    const char *cache_status;
    int cache_idx;
};

/* routes.c */
void rq_release(struct rq *q);
int rq_alive(const struct rq *q);
void rq_error(struct rq *q, int status, const char *code, const char *msg, const char *hdrs);
void rq_relay_error(struct rq *q, int status, rgm_upcall_t *c, int err, int is_blob);
void rq_set_cache(struct rq *q, const char *status);
void rq_count_bytes(struct rq *q, uint64_t n);
/* Serve only after the cache-never-widens-access rule holds for q->digest; then run
 * q->after_access(q). Answers the denial itself. */
void rq_check_access(struct rq *q);
/* May q's registry vouch for digest: it is public, or it came through that registry? When
 * not, a cached copy must be treated as a miss and fetched (verified) through q->reg: a
 * registry that never delivered an object cannot grant access to it. */
int rq_may_vouch(struct rq *q, const char *digest);
/* Is access to digest, in q's repository, cached for q's credentials? */
int rq_decision_cached(struct rq *q, const char *digest);
void rq_upcall_opts(struct rq *q, rgm_upcall_opts_t *o, const char *method, const char *suffix);
void rq_mark_origin(struct rq *q, const char *digest, int is_private);
/* An upcall body callback for HEADs and answers whose body nobody wants. */
int rq_ignore_body(rgm_upcall_t *c, const char *data, size_t len, void *ud);
/* rgm_resp_start with the mirror's common headers, counted in the metrics. */
RGM_MUST_CHECK int rq_start(struct rq *q, int status, const char *hdrs, int64_t len);
/* Finish the response and drop the request. */
void rq_finish(struct rq *q);
void rq_abort(struct rq *q, const char *reason);

/* blobs.c */
void blobs_handle(struct rq *q);
void blobs_detach(struct rq *q);
void blobs_shutdown(rgm_routes_t *r);

/* manifests.c */
void manifests_handle(struct rq *q);
void tags_handle(struct rq *q);
void manifests_detach(struct rq *q);
void manifests_shutdown(rgm_routes_t *r);

#endif
