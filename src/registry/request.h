/* One client request to the /v2 API (struct rq) and what all requests share (struct rq_env):
 * answering (OCI errors, relayed upstream errors, start, finish, abort, cached files),
 * counting, upstream HEADs with the client's credentials, and the rule that the cache never
 * widens access to private content. Internal to src/registry. It knows no handler: one that
 * parks a request sets q->detach, which runs if the client leaves. */
#ifndef RGM_REGISTRY_REQUEST_H
#define RGM_REGISTRY_REQUEST_H

#include <uv.h>
#include "core/config.h"
#include "http/server.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cache/fetch.h"
#include "cache/refs.h"
#include "cache/inuse.h"
#include "registry/auth.h"
#include "registry/reference.h"
#include "registry/upstream.h"
#include "registry/metrics.h"
#include "cluster/peers.h"

#define RGM_V2_HDR "Docker-Distribution-API-Version: registry/2.0\r\n"

struct bjob;
struct mjob;

/* Shared by every request of one rgm_routes_t, and lives as long as it. Services are
 * borrowed. */
struct rq_env {
    uv_loop_t *loop;
    const rgm_config_t *cfg;
    rgm_store_t *store;
    rgm_index_t *index;
    rgm_fetches_t *fetches;
    rgm_upstream_t *up;
    rgm_server_t *srv;        /* for /metrics (open connections); NULL until set */
    rgm_auth_cache_t *access; /* "credhash|registry|repo" -> "1": upstream accepted */
    rgm_refs_t *refs;         /* manifests record their references here; NULL: not kept */
    rgm_inuse_t *inuse;       /* stored files open for responses (eviction skips them) */
    int is_stopping;
    struct metrics m;
    /* Handler state: only the file named touches it. */
    struct bjob *bjobs;      /* blobs.c: jobs in flight */
    struct mjob *mjobs;      /* manifests.c: jobs in flight */
    rgm_auth_cache_t *heads; /* manifests.c: public HEAD answers for uncached tags */
    /* cluster (docs/cluster.md): NULL without one; borrowed */
    rgm_peers_t *peers;
    rgm_client_t *client;  /* forwards */
    unsigned n_forwarding; /* routes.c: forwards in flight (shutdown waits for them) */
};

/* One client request that needs async work. Lives until the response ends and no upstream
 * call or job references it. */
struct rq {
    struct rq_env *r;
    rgm_req_t *req; /* NULL once the client is gone */
    rgm_ref_path_t path;
    const rgm_registry_cfg_t *reg;
    char repo[RGM_REF_NAME_MAX + 16];
    char *auth;   /* the client's Authorization, copied; NULL when none */
    char *accept; /* the client's Accept lines joined, or the default list (manifests.c) */
    char credhash[65];
    int is_head;
    int is_only_cached; /* X-Regmirror-Only-If-Cached: answer from the store or 404, never fetch */
    int may_fill;       /* a cluster owner's miss: ask the previous owner first */
    int pending;        /* upstream calls in flight that point at this rq */
    /* Set by the handler that may park q on its jobs: unlinks q from them when the client
     * leaves. NULL: nothing to unlink. */
    void (*detach)(struct rq *q);

    /* blob streaming */
    struct bjob *job; /* waiting for this job's head, or parked on it */
    int is_parked;
    struct rq *next_waiter;
    rgm_fetch_reader_t *rd;
    int fd;                    /* cached blob file, or -1 */
    char held[RGM_DIGEST_MAX]; /* the digest held in r->inuse while fd is open; "" none */
    uint64_t off;
    uint64_t end; /* exclusive; UINT64_MAX when the size is unknown */
    int is_sending;

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

/* ---- life ---- */

/* A zeroed context for req (GET or HEAD) in r: no fd, cache "MISS". Both are borrowed. The
 * caller fills path, then reg and repo, then calls rq_begin; until then an rq_error (or
 * clearing q->req and rq_release) ends it. Never NULL. */
struct rq *rq_new(struct rq_env *r, rgm_req_t *req);
/* q (path, reg and repo filled) goes to a handler now: copies the client's Authorization,
 * and makes q outlive a client that leaves (q->detach runs then, and the client's hold on q
 * is dropped). */
void rq_begin(struct rq *q);
/* Free q if nothing holds it any more: the client (q->req), an upstream call (q->pending),
 * a fetch reader, a job, or a body being sent. Safe to call after dropping any of those. */
void rq_release(struct rq *q);

/* q->fd holds q->digest's stored file: eviction leaves that digest alone until q is
 * released. Idempotent. */
void rq_hold_file(struct rq *q);

/* ---- answers: each ends the client's part of q (q->req becomes NULL) ---- */

/* An OCI error. hdrs: extra "Name: value\r\n" lines, or NULL. A no-op when the client is
 * gone. Counted. */
void rq_error(struct rq *q, int status, const char *code, const char *msg, const char *hdrs);
/* The client's answer to an upstream failure: status 0 (err: no answer, 502 or 504), 401
 * (with the upstream's WWW-Authenticate from c, which may be NULL), 403, 404 and 410 (blob,
 * manifest or repository unknown; is_blob picks BLOB_UNKNOWN), 429 (with Retry-After), 416
 * (SIZE_INVALID), other 4xx (UNSUPPORTED), or 502 (UNAVAILABLE). Every 4xx code is one of the
 * distribution-spec's. A no-op when the client is gone. */
void rq_relay_error(struct rq *q, int status, rgm_upcall_t *c, int err, int is_blob);
/* rgm_resp_start with the mirror's common headers, counted in the metrics. Returns 0, or <0
 * (headers too long, or the server's error): then the caller aborts. */
RGM_MUST_CHECK int rq_start(struct rq *q, int status, const char *hdrs, int64_t len);
/* Send bytes [q->off, q->end) of q->fd as the started response's body, then finish q; on a
 * send or read error abort it. The bytes are counted; q->fd stays q's. */
void rq_send_file(struct rq *q);
/* Finish the response and drop the client's hold on q. */
void rq_finish(struct rq *q);
void rq_abort(struct rq *q, const char *reason);

/* ---- counting ---- */

/* X-Cache for q ("HIT", "MISS", "JOIN", "STALE"; a static string), also the metrics'
 * cache label of what q answers from now on. */
void rq_set_cache(struct rq *q, const char *status);
void rq_count_bytes(struct rq *q, uint64_t n);

/* ---- upstream calls for q ---- */

/* Options for a call in q's registry and repository with q's credentials (the client's
 * first for a mirror registry). suffix is borrowed until the call starts. */
void rq_upcall_opts(struct rq *q, rgm_upcall_opts_t *o, const char *method, const char *suffix);
/* The cluster peer that q's miss is filled from (the previous owner of q's digest) into out:
 * 1 when q->may_fill and there is one, else 0. Counts the fill. */
int rq_fill_source(struct rq *q, char *out, size_t outlen);
/* Answer 404 (blob or manifest unknown) to an only-if-cached request that missed. Counted. */
void rq_only_cached_miss(struct rq *q, int is_blob);

/* Start a HEAD of suffix ("blobs/<digest>", "manifests/<ref>") for q; accept may be NULL.
 * Sets q->access_status to 0 and holds q (q->pending) for cbs, which get q as ud; cbs'
 * on_done must drop that hold (rq_head_on_done does). Returns 0, or <0 when nothing started:
 * then no callback runs and the client is not answered. Counted. */
RGM_MUST_CHECK int rq_head(struct rq *q, const char *suffix, const char *accept,
                           const rgm_upcall_cbs_t *cbs);
/* An on_done for rq_head: drops the hold, and answers 502/504 when the HEAD got no status
 * (q->access_status still 0) and the client is still there. */
void rq_head_on_done(rgm_upcall_t *c, int err, void *ud);
/* An upcall body callback for HEADs and answers whose body nobody wants. */
int rq_ignore_body(rgm_upcall_t *c, const char *data, size_t len, void *ud);

/* ---- access: the cache never widens it ---- */

/* Record that digest came through q's registry and repository (public or not); a private
 * one also caches the upstream's acceptance of q's credentials for that repository. */
void rq_mark_origin(struct rq *q, const char *digest, int is_private);
/* Is digest public for q? Content named by digest: when any origin of it is public (public
 * content is anyone's, through any repository). A manifest named by a tag: only when its
 * origin in q's registry and repository is public, since a tag is a name in one repository
 * and a private repository's tags are not public because their content is public elsewhere. */
int rq_is_public(struct rq *q, const char *digest);
/* Serve only after the cache-never-widens-access rule holds for q->digest; then run
 * q->after_access(q) (maybe at once, inside this call). Answers the denial itself. */
void rq_check_access(struct rq *q);
/* May q's registry vouch for digest: it is public, or it came through that registry? When
 * not, a cached copy must be treated as a miss and fetched (verified) through q->reg: a
 * registry that never delivered an object cannot grant access to it. */
int rq_may_vouch(struct rq *q, const char *digest);

#endif
