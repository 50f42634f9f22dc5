/* Forwarding one client request to a cluster peer and relaying the peer's answer (status,
 * headers, body, X-Cache) unchanged, streamed with backpressure and cached nowhere. A body cut
 * by a dying peer is resumed from the key's next healthy member with a Range request. It knows
 * HTTP and cluster/peers; which requests to forward, and what a key is, is the caller's. */
#ifndef RGM_CLUSTER_FORWARD_H
#define RGM_CLUSTER_FORWARD_H

#include "cluster/peers.h"
#include "core/common.h"
#include "http/client.h"
#include "http/server.h"

/* The headers of the tier protocol (docs/cluster.md). */
#define RGM_HDR_HOP            "X-Regmirror-Hop"
#define RGM_HDR_ONLY_IF_CACHED "X-Regmirror-Only-If-Cached"

enum rgm_fwd_result {
    RGM_FWD_DONE = 0,    /* the peer's answer was relayed whole; the response is finished */
    RGM_FWD_UNREACHABLE, /* no answer at all (refused, timeout, cut before the status line):
                          * nothing was sent, the request is still the caller's to answer */
    RGM_FWD_CUT,         /* the body was cut and could not be resumed: the response was aborted */
    RGM_FWD_CLIENT_GONE, /* the client left; the request is gone */
};

typedef struct rgm_fwd_opts {
    rgm_client_t *client; /* borrowed; outlives the forward */
    rgm_peers_t *peers;   /* borrowed: health reports, counters and resume candidates */
    const char *key;      /* the request's rendezvous key (copied), for resuming; NULL: none */
    size_t key_len;
    int is_fill; /* 1: X-Regmirror-Only-If-Cached: 1 as well (ask a peer's cache only) */
} rgm_fwd_opts_t;

/* Called once when the forward ends. req is valid only for RGM_FWD_UNREACHABLE. */
typedef void (*rgm_fwd_done_fn)(rgm_req_t *req, enum rgm_fwd_result result, void *ud);

/* Send req (GET or HEAD) to peer_url (canonical, from rgm_peers_rank) with the same path and
 * query, the client's Authorization, Range and Accept, and X-Regmirror-Hop: 1; relay the answer.
 * While it runs the forward owns req's on_close callback (rgm_req_on_close); on
 * RGM_FWD_UNREACHABLE it gives it back unset. Returns 0 (done runs exactly once, later) or <0
 * (UV_EINVAL: a URL that cannot be built; nothing started, done never runs). */
RGM_MUST_CHECK int rgm_fwd_start(rgm_req_t *req, const char *peer_url, const rgm_fwd_opts_t *o,
                                 rgm_fwd_done_fn done, void *ud);

/* ---- pieces, exported for tests ---- */

/* Parse a Range header of one range, "bytes=F-" or "bytes=F-L". 0 with *first and *last
 * (UINT64_MAX for an open end), or UV_EINVAL (anything else: suffix ranges, lists). */
RGM_MUST_CHECK int rgm_fwd_parse_range(const char *v, uint64_t *first, uint64_t *last);
/* Parse a Content-Range "bytes F-L/T" (T may be "*"). 0 or UV_EINVAL. *total is UINT64_MAX for
 * "*". */
RGM_MUST_CHECK int rgm_fwd_parse_content_range(const char *v, uint64_t *first, uint64_t *last,
                                               uint64_t *total);

#endif
