/* Requests to upstream registries, with their auth: the mirror's own token flow (anonymous or
 * configured credentials), then the client's Authorization when the mirror's own is refused.
 * One rgm_upcall is one logical request (GET/HEAD of a manifest, blob or tag list); it may
 * make several HTTP requests (token fetches, retries). Also: per-registry fetch slots
 * (max_parallel_fetches, FIFO). */
#ifndef RGM_REGISTRY_UPSTREAM_H
#define RGM_REGISTRY_UPSTREAM_H

#include <uv.h>
#include "core/common.h"
#include "core/config.h"
#include "http/client.h"
#include "core/buf.h"

typedef struct rgm_upstream rgm_upstream_t;
typedef struct rgm_upcall rgm_upcall_t;

/* cfg and client are borrowed and outlive the upstream. A mirror registry whose endpoint is
 * an array, or endpoint_dns, gets a peer set (cluster/peers, no self): each digest and tag is
 * sent to its owner among the replicas (docs/cluster.md), the next one when it does not
 * answer. */
rgm_upstream_t *rgm_upstream_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_client_t *client);
/* Close the peer sets; cb(ud) runs once their timers and probes have ended (maybe at once,
 * inside this call, when there are none). Call once, when no call is in flight, before the
 * client closes and before rgm_upstream_free. */
void rgm_upstream_stop(rgm_upstream_t *up, void (*cb)(void *ud), void *ud);
void rgm_upstream_free(rgm_upstream_t *up);
/* Drop expired tokens and decisions (timer). */
void rgm_upstream_prune(rgm_upstream_t *up);

typedef struct rgm_upcall_opts {
    const rgm_registry_cfg_t *reg; /* borrowed */
    const char *repo;              /* normalized repository ("library/nginx") */
    const char *method;            /* "GET" or "HEAD" */
    const char *suffix;            /* "manifests/<ref>", "blobs/<digest>", "tags/list" */
    const char *query;             /* extra query ("n=10&last=x") or NULL */
    const char *accept;            /* Accept header or NULL */
    const char *client_auth;       /* the client's Authorization, or NULL */
    int client_auth_first;         /* try the client's Authorization before the mirror's own */
    uint64_t range_from;           /* >0: Range: bytes=<range_from>- */
    /* A cluster peer's base URL to ask first (docs/cluster.md "fill"), GET only: with
     * X-Regmirror-Hop and X-Regmirror-Only-If-Cached, ?ns= and the client's Authorization. A
     * 200 is the answer; anything else (or no answer) and the registry is asked as usual. */
    const char *fill_url;
} rgm_upcall_opts_t;

typedef struct rgm_upcall_cbs {
    /* The final response head (after auth retries). rgm_upcall_used_client_auth() tells
     * whether the content is private: the client's credentials were needed, or the registry
     * is "private" and the client proved its access. Return 0 to read the body, <0 to stop. */
    int (*on_head)(rgm_upcall_t *c, int status, void *ud);
    /* Body bytes of a 2xx response; may call rgm_upcall_pause(). */
    int (*on_body)(rgm_upcall_t *c, const char *data, size_t len, void *ud);
    /* Exactly once, never from inside rgm_upcall_start(); the call is freed after. err as in
     * client.h (0: complete). */
    void (*on_done)(rgm_upcall_t *c, int err, void *ud);
} rgm_upcall_cbs_t;

/* Strings in opts are copied. Returns 0, or <0 (nothing will run): UV_ECONNREFUSED while
 * the registry is backed off (it did not answer), UV_EAGAIN for a manifests/ call while its
 * 429 circuit is open (rgm_upstream_limited_ms). */
RGM_MUST_CHECK int rgm_upcall_start(rgm_upstream_t *up, const rgm_upcall_opts_t *opts,
                                    const rgm_upcall_cbs_t *cbs, void *ud, rgm_upcall_t **out);
void rgm_upcall_pause(rgm_upcall_t *c);
void rgm_upcall_resume(rgm_upcall_t *c);
/* on_done(UV_ECANCELED) follows unless it already ran. */
void rgm_upcall_cancel(rgm_upcall_t *c);

/* Valid from on_head until on_done returns. */
int rgm_upcall_status(const rgm_upcall_t *c);
const char *rgm_upcall_header(const rgm_upcall_t *c, const char *name);
int64_t rgm_upcall_content_length(const rgm_upcall_t *c);
/* 1 when what this call fetched is private to clients that prove their access: the client's
 * credentials were needed, or a "private" registry's client proved its access first. */
int rgm_upcall_used_client_auth(const rgm_upcall_t *c);
/* 1 when the answer came from the fill peer (opts.fill_url), not from the registry. */
int rgm_upcall_was_filled(const rgm_upcall_t *c);
/* The status of the last answer the mirror's own identity (a token, configured credentials,
 * or none) got on this call; 0 when it was never asked (a tier mirror's client credentials
 * go first). Registries answer 404 for private repositories too: a 404 here says nothing
 * about what a client's credentials would get. */
int rgm_upcall_own_status(const rgm_upcall_t *c);

/* ---- what a registry told the mirror about itself ---- */

/* 1 when the upstream answered 404 to the mirror's own identity for this call (o's reg, repo,
 * suffix and accept, as for rgm_upcall_start) within the registry's negative_ttl, else 0.
 * Only for requests the mirror would send with its own identity: the caller skips it for a
 * request that carries a client's Authorization. A 2xx to the own identity forgets it. */
int rgm_upstream_known_missing(rgm_upstream_t *up, const rgm_upcall_opts_t *o);
/* Milliseconds until reg's 429 circuit closes (Retry-After or RateLimit-Reset of its last
 * 429; 60 s when it gave neither); 0 when closed. While it is open, rgm_upcall_start of a
 * manifests/ call returns UV_EAGAIN (blobs are not stopped: they are not pulls). */
uint64_t rgm_upstream_limited_ms(const rgm_upstream_t *up, const rgm_registry_cfg_t *reg);
/* 1 while reg's RateLimit-Remaining is below its ratelimit_reserve (one WARN when it falls
 * below; the gauge regmirror_upstream_ratelimit_reserve), else 0. */
int rgm_upstream_in_reserve(const rgm_upstream_t *up, const rgm_registry_cfg_t *reg);
/* Count a manifest GET that a HEAD made unnecessary (regmirror_upstream_pulls_avoided_total). */
void rgm_upstream_count_avoided(rgm_upstream_t *up, const rgm_registry_cfg_t *reg);

/* Append the per-registry upstream counters in Prometheus text format. 0 or UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_upstream_metrics(const rgm_upstream_t *up, rgm_buf_t *out);

/* ---- fetch slots: at most max_parallel_fetches overall and per registry ---- */
typedef struct rgm_slot_wait {
    void (*on_slot)(struct rgm_slot_wait *w); /* the slot is granted */
    const rgm_registry_cfg_t *reg;
    struct rgm_slot_wait *next;
} rgm_slot_wait_t;
/* Calls w->on_slot now if a slot is free, else queues w (FIFO). */
void rgm_upstream_slot_acquire(rgm_upstream_t *up, rgm_slot_wait_t *w);
/* Remove a queued waiter (it will not be called). 1 if it was queued. */
int rgm_upstream_slot_cancel(rgm_upstream_t *up, rgm_slot_wait_t *w);
void rgm_upstream_slot_release(rgm_upstream_t *up, const rgm_registry_cfg_t *reg);
size_t rgm_upstream_slots_used(const rgm_upstream_t *up);
size_t rgm_upstream_slots_queued(const rgm_upstream_t *up);

#endif
