/* Rendezvous (highest random weight) hashing of cache keys onto cluster peers: the canonical
 * peer URL, the score of a (key, peer) pair, the order of peers for a key, and the keys
 * themselves. Pure functions; no I/O, no state. This is a wire contract shared by every
 * replica and the node tier (docs/cluster.md): changing any byte of it reshuffles the cache. */
#ifndef RGM_CLUSTER_RENDEZVOUS_H
#define RGM_CLUSTER_RENDEZVOUS_H

#include <sys/socket.h>

#include "core/common.h"

/* "https://" + 255-byte host + "[]" + ":65535" fits with room to spare. */
#define RGM_PEER_URL_MAX 288

/* Write the canonical form of a peer base URL into out:
 * - scheme and host lowercased ("HTTP://Node-A" -> "http://node-a");
 * - an IP literal in the form inet_ntop writes it (RFC 5952 for IPv6: "[::1]"), brackets
 *   around IPv6;
 * - the port always explicit (":80" / ":443" when the URL has none);
 * - no path: "" and "/" are accepted; any other path, a query, a fragment or userinfo is
 *   UV_EINVAL.
 * Returns 0, UV_EINVAL (not such a URL) or UV_ENOBUFS (outlen too small). */
RGM_MUST_CHECK int rgm_peer_url_canon(const char *url, char *out, size_t outlen);

/* The canonical URL of the peer at address sa (AF_INET or AF_INET6; peers_dns members),
 * "http[s]://<address>:<port>". Returns 0, UV_EINVAL (other family, port not 1..65535) or
 * UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_peer_url_from_addr(int is_https, const struct sockaddr *sa, int port,
                                          char *out, size_t outlen);

/* Score of peer_url (canonical) for key: the first 8 bytes, as a big-endian unsigned
 * integer, of SHA-256(key || "\n" || peer_url). key is key_len bytes (no NUL needed). */
uint64_t rgm_rendezvous_score(const char *key, size_t key_len, const char *peer_url);

typedef struct rgm_rdv_rank {
    uint64_t score;
    size_t idx; /* index into the urls array given to rgm_rendezvous_rank */
} rgm_rdv_rank_t;

/* Rank n peers (canonical URLs, borrowed) for key: out[0..n) gets every index, by score from
 * highest to lowest; equal scores by ascending strcmp of the URL (so that the order is total
 * and the same everywhere). out[0] is the owner, out[1] the next owner, and so on. */
void rgm_rendezvous_rank(const char *key, size_t key_len, const char *const *urls, size_t n,
                         rgm_rdv_rank_t *out);

/* The key of a tag: "<registry>/<repository>:<tag>" into out, registry lowercased (it is a
 * host name), repository and tag as given. Returns 0, UV_EINVAL (an empty part) or
 * UV_ENOBUFS. Blobs and manifests by digest use the digest string ("sha256:<hex>") itself. */
RGM_MUST_CHECK int rgm_rendezvous_tag_key(const char *registry, const char *repository,
                                          const char *tag, char *out, size_t outlen);

#endif
