/* Internal to the upstream calls (upstream.c and its upstream-*.c helpers): the private
 * structs behind rgm_upstream_t and rgm_upcall_t, and the functions the files share. Reading
 * order, each file calling only the ones below it: upstream.c (one call and its auth dance),
 * upstream-token.c (token requests), upstream-replicas.c (a mirror registry's replica sets),
 * upstream-limits.c (back-off, 429 circuit, pull budget, negative cache, fetch slots),
 * upstream-metrics.c (their counters as text). Not an interface for other modules. */
#ifndef RGM_REGISTRY_UPSTREAM_INT_H
#define RGM_REGISTRY_UPSTREAM_INT_H

#include <uv.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/config.h"
#include "http/client.h"
#include "registry/auth.h"
#include "registry/identity.h"
#include "registry/upstream.h"
#include "cluster/peers.h"

#define URL_MAX 8192

/* Upstream HTTP requests by status class: 1xx..5xx, then "error" (no response). */
#define N_CLASSES 6

struct regstate {
    unsigned active; /* fetch slots in use */
    uint64_t requests[N_CLASSES];
    uint64_t bytes;   /* response body bytes */
    int64_t rl_limit; /* Docker Hub's ratelimit-limit / -remaining, -1 until seen */
    int64_t rl_remaining;
    unsigned failures;      /* consecutive requests that got no response at all */
    uint64_t last_fail;     /* wall ms of the last counted failure */
    uint64_t down_until;    /* wall ms: fail fast until then */
    uint64_t limited_until; /* wall ms: after a 429, no manifest request until then */
    int is_in_reserve;      /* rl_remaining is below ratelimit_reserve (warned once) */
    uint64_t pulls;         /* manifest GETs answered 2xx: what Docker Hub counts */
    uint64_t pulls_avoided; /* tag GETs answered from cache after a HEAD (manifests.c) */
    rgm_peers_t *peers;     /* a mirror registry's replicas (endpoint array, endpoint_dns) */
};

struct rgm_upstream {
    uv_loop_t *loop;
    const rgm_config_t *cfg;
    rgm_client_t *client;
    struct regstate *regs;     /* parallel to cfg->registries */
    rgm_auth_cache_t *tokens;  /* "registry|scope" -> "Bearer <token>" */
    rgm_auth_cache_t *refused; /* "registry|repo" -> own identity refused recently */
    rgm_auth_cache_t *missing; /* "registry|repo|suffix|accept" -> 404 to the mirror's own */
    rgm_identity_t *id;        /* the mirror's own credentials */
    unsigned active;
    rgm_slot_wait_t *qhead;
    rgm_slot_wait_t *qtail;
    unsigned n_closing; /* replica sets still closing after rgm_upstream_stop */
    void (*stop_cb)(void *ud);
    void *stop_ud;
};

/* STEP_FRESH: the upstream refused kept helper/plugin credentials: run it again, once.
 * STEP_AFTER_PROOF: a "private" registry's client proved its access; now the mirror's own.
 * STEP_MAIN: the fill peer did not have it (docs/cluster.md): ask the registry. */
enum step {
    STEP_NONE = 0,
    STEP_TOKEN,
    STEP_RETRY_OWN,
    STEP_CLIENT,
    STEP_FRESH,
    STEP_AFTER_PROOF,
    STEP_MAIN
};

struct rgm_upcall {
    rgm_upstream_t *up;
    const rgm_registry_cfg_t *reg;
    struct regstate *rs;
    char *repo;
    char *method;
    char *url;
    char *accept;
    char *client_auth;
    uint64_t range_from;
    rgm_upcall_cbs_t cbs;
    void *ud;

    rgm_upreq_t *req; /* the request in flight (main or token) */
    int is_token_req;
    int is_fill_req;   /* the request in flight asks the fill peer */
    int is_filled;     /* the answer is the fill peer's */
    char *fill_url;    /* the peer's URL for this call, or NULL */
    int client_first;  /* opts.client_auth_first, for the main request after a fill */
    int is_mirror_reg; /* opts.reg->is_mirror, idem */
    enum step next;    /* what to do when the swallowed response ends */
    int tried_token;
    int tried_basic;
    int tried_client;
    int tried_fresh;
    int using_client;
    int is_proving; /* a private registry: the client's HEAD that proves its access */
    int is_proven;  /* ... succeeded: content fetched after it is private */
    int no_own;     /* a private registry and a client without credentials: anonymous only */
    int has_own;    /* own_auth is what the identity gave in this call */
    int is_own_cached;
    char *own_auth;    /* "Basic ..." of the mirror's own credentials, or NULL */
    char *own_refresh; /* or a helper's identity token: the OAuth2 refresh token, or NULL */
    enum step after_own;
    rgm_identity_wait_t *idwait;
    int is_paused;
    int is_cancelled;
    int status;
    int own_status;    /* the last main answer to the mirror's own identity; 0: none */
    int is_manifest;   /* suffix is manifests/...: counts for the pull budget */
    char *missing_key; /* manifests/ and blobs/ calls: the key of up->missing, else NULL */
    char *challenge;   /* last WWW-Authenticate seen */
    char *sent_auth;   /* Authorization of the current main request */
    rgm_buf_t tokbody;
    uint64_t started_ms;
    /* a mirror registry with replicas: the one asked, the key that chose it, and the URL
     * without its base (to ask the next one) */
    char peer_url[RGM_PEER_URL_MAX];
    char *key;
    char *tail;
    unsigned peer_tries;
    int is_head_delivered;
};

/* ---- upstream-token.c ---- */

/* A new request for the token (c's own_auth or own_refresh, see the .c), or NULL when the realm
 * or the scope is unusable. tls is copied. */
rgm_upreq_t *rgm_upstream_token_req_new(rgm_upcall_t *c, const rgm_auth_challenge_t *ch,
                                        const char *scope, const rgm_tls_opts_t *tls);
/* Take the token answer in c->tokbody: 0 and "Bearer <token>" in bearer (kept in up->tokens
 * under key while it lives, unless c->no_own), or <0 when it is not a usable token. */
int rgm_upstream_token_take(rgm_upcall_t *c, const char *key, char *bearer, size_t len);

/* ---- upstream-replicas.c ---- */

/* base followed by tail, malloc'd. */
char *rgm_upstream_join_url(const char *base, const char *tail);
/* Start reg's peer set into rs->peers when it is a mirror registry with several replicas. */
void rgm_upstream_replicas_start(rgm_upstream_t *up, const rgm_registry_cfg_t *reg,
                                 struct regstate *rs);
/* The rendezvous key of a call, malloc'd. */
char *rgm_upstream_replica_key(const rgm_upcall_opts_t *o);
/* Point c->url at the replica that owns c->key. 0, or UV_EHOSTUNREACH (none known). */
int rgm_upstream_replica_pick(rgm_upcall_t *c);
/* After a request that got no answer (st, err of on_req_done): 1 when c->url now names the next
 * replica to ask (the caller sends again), else 0. */
int rgm_upstream_replica_next(rgm_upcall_t *c, int st, int err);

/* ---- upstream-limits.c ---- */

/* reg's state, or NULL when reg is not one of up's registries (a client-chosen host). */
struct regstate *rgm_upstream_regstate(rgm_upstream_t *up, const rgm_registry_cfg_t *reg);
/* 1 when a call's suffix is manifests/...: what the 429 circuit and the pull budget count. */
int rgm_upstream_is_manifest_suffix(const char *suffix);
/* The key of up->missing for a call; 0, or <0 when the call has none. */
int rgm_upstream_missing_key(const rgm_upcall_opts_t *o, char *out, size_t len);
/* Note what the answer r (status) says about the registry's budget; c->rs is not NULL. */
void rgm_upstream_note_budget(rgm_upcall_t *c, rgm_upreq_t *r, int status);
/* Remember or forget a 404 to the mirror's own identity (negative_ttl). */
void rgm_upstream_note_missing(rgm_upcall_t *c, int status);
/* Count one finished request (st: its status, 0 if none; err) and run the back-off. */
void rgm_upstream_count_outcome(rgm_upcall_t *c, int st, int err);

#endif
