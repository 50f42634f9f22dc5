/* Cluster membership: the set of peers (a static list, or every A record of a name, re-resolved
 * every 15 s), which of them is this replica, and which are healthy. It ranks peers for a key
 * with cluster/rendezvous. It does not forward anything: callers report what their own
 * requests to peers saw, and the set probes a down peer's /readyz with backoff. */
#ifndef RGM_CLUSTER_PEERS_H
#define RGM_CLUSTER_PEERS_H

#include <sys/socket.h>
#include <netdb.h>
#include <uv.h>

#include "cluster/rendezvous.h"
#include "core/common.h"

#define RGM_PEERS_MAX 64 /* members beyond this (a huge DNS answer) are dropped, with a warning */

typedef struct rgm_peers rgm_peers_t;
typedef struct rgm_client rgm_client_t;

/* A probe of one peer: call done(probe_ud, is_ready) exactly once, later, unless it returns
 * <0 (then the probe counts as failed and done is never called). The default probe (probe
 * NULL) is GET <url>/readyz through opts.client, ready when it answers 200. */
typedef void (*rgm_peers_probe_done_fn)(void *probe_ud, int is_ready);
typedef int (*rgm_peers_probe_fn)(void *ctx, const char *url, rgm_peers_probe_done_fn done,
                                  void *probe_ud);

typedef struct rgm_peers_opts {
    /* Exactly one of urls/n_urls (static members, canonicalised) or dns_url
     * ("http[s]://NAME:PORT"; the members are NAME's addresses at PORT). Borrowed. */
    const char *const *urls;
    size_t n_urls;
    const char *dns_url;
    /* This replica's base URL, or NULL to find it from the listen addresses (see
     * rgm_peers_match_self). Borrowed. A set without self (the node tier) only forwards. */
    const char *self_url;
    const struct sockaddr_storage *listen; /* bound addresses, ports included; borrowed */
    size_t n_listen;
    int find_self; /* 1: look for self as above when self_url is NULL; 0: no self at all */
    uint64_t dns_interval_ms; /* default 15 s */
    uint64_t backoff_min_ms;  /* first retry of a down peer; default 1 s */
    uint64_t backoff_max_ms;  /* retries double up to this; default 30 s */
    rgm_client_t *client;     /* for the default probe; borrowed, outlives the set */
    rgm_peers_probe_fn probe; /* tests replace the probe */
    void *probe_ctx;
} rgm_peers_opts_t;

/* Validate opts and build the set. Static members and self_url are canonicalised and
 * checked here (duplicates refused); self is found for static members at once. Nothing runs
 * until rgm_peers_start(). Returns the set (the caller owns it: rgm_peers_close), or NULL with
 * *err = UV_EINVAL (bad URL, both or neither of urls and dns_url, more than RGM_PEERS_MAX
 * static members, duplicate member). A problem is logged with its reason. */
rgm_peers_t *rgm_peers_new(uv_loop_t *loop, const rgm_peers_opts_t *opts, int *err);
/* Start the DNS timer (first resolution now) and the health checks. 0 or a libuv error. */
RGM_MUST_CHECK int rgm_peers_start(rgm_peers_t *p);
/* Stop everything, cancel probes, close handles; cb(ud) runs once every handle is closed and
 * every pending resolution and probe has ended, and the set is freed just before. cb may be
 * NULL. */
void rgm_peers_close(rgm_peers_t *p, void (*cb)(void *ud), void *ud);

/* One peer of a ranking. Copies, so they stay valid across membership changes. */
typedef struct rgm_peer_pick {
    char url[RGM_PEER_URL_MAX];
    int is_self;
    int is_up;
    /* rgm_peers_member only (zero in rankings): what was asked of this peer */
    uint64_t n_forwarded;     /* requests forwarded to it */
    uint64_t bytes_forwarded; /* body bytes relayed from it */
    uint64_t n_fills;         /* only-if-cached requests to it */
} rgm_peer_pick_t;

/* The members in rendezvous order for key (key_len bytes), best first, into out[0..max):
 * healthy peers only when only_up is 1, every member otherwise. Self counts as healthy. Returns
 * the count written. 0 (no member, or none healthy) means: serve locally. */
size_t rgm_peers_rank(const rgm_peers_t *p, const char *key, size_t key_len, int only_up,
                      rgm_peer_pick_t *out, size_t max);
/* The owner of key among healthy members into *owner. Returns 1 when this replica should serve
 * it itself (self owns it, or there is no healthy member), 0 when owner names another peer. */
int rgm_peers_owner(const rgm_peers_t *p, const char *key, size_t key_len, rgm_peer_pick_t *owner);
/* Where self, the owner of key, fills a miss from: the first healthy member ranked after self
 * (the previous owner when a member joined). Returns 1 with *src set, or 0 when there is none
 * (single member, self not a member, or self not ranked first among healthy members). */
int rgm_peers_fill_source(const rgm_peers_t *p, const char *key, size_t key_len,
                          rgm_peer_pick_t *src);

/* What a request to peer url (canonical, as picked) saw: is_ok 1 for any HTTP answer, 0 for a
 * refused connection, a timeout, or a cut. A failure marks the peer down at once and schedules
 * its probe after the backoff; a success marks it up. Unknown URLs (removed meanwhile) and
 * self are ignored. */
void rgm_peers_report(rgm_peers_t *p, const char *url, int is_ok);

/* Count one request to peer url (forwarded, or a fill when is_fill) and the body bytes it gave.
 * Unknown URLs are ignored. */
void rgm_peers_count(rgm_peers_t *p, const char *url, int is_fill, uint64_t bytes);

/* Counts for metrics: members, healthy members (self included), whether self is known. */
typedef struct rgm_peers_stats {
    size_t n_members;
    size_t n_up;
    int has_self;
    uint64_t n_marked_down; /* transitions up -> down since start */
    uint64_t n_marked_up;   /* transitions down -> up */
    uint64_t n_resolutions; /* DNS answers applied */
} rgm_peers_stats_t;
void rgm_peers_stats(const rgm_peers_t *p, rgm_peers_stats_t *out);
/* Member i (0 <= i < n_members, sorted by URL) into *out. 0, or UV_EINVAL past the end. */
RGM_MUST_CHECK int rgm_peers_member(const rgm_peers_t *p, size_t i, rgm_peer_pick_t *out);

/* ---- pieces, exported for tests ---- */

/* Members from a resolver answer: the distinct AF_INET addresses of res, or, when it has none,
 * the distinct AF_INET6 ones, as canonical URLs with is_https and port, sorted by strcmp, at
 * most max. Returns the count, or <0 (UV_ENOBUFS when out is too small for a URL). Members past
 * max are dropped (the caller logs it when the return value equals max and more existed:
 * *n_dropped). */
int rgm_peers_from_addrinfo(const struct addrinfo *res, int is_https, int port,
                            char (*out)[RGM_PEER_URL_MAX], size_t max, size_t *n_dropped);

/* The index of self among n canonical URLs: the one whose host is an IP literal and whose port
 * is the port of a listen address, where that listen address is the member's address, or is a
 * wildcard (0.0.0.0, ::) and the member's address is one of ifs[0..n_ifs) (or inside the
 * network of an internal, i.e. loopback, interface). Returns the index, -1 when none matches,
 * -2 when several do (ambiguous: set self explicitly). */
int rgm_peers_match_self(const char *const *urls, size_t n, const uv_interface_address_t *ifs,
                         int n_ifs, const struct sockaddr_storage *listen, size_t n_listen);

#endif
