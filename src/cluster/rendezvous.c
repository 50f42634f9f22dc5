/* Rendezvous hashing: canonical peer URLs, scores, the per-key order of peers and tag keys.
 * It knows nothing of membership or health (cluster/peers.c); the formulas here are the
 * contract of docs/cluster.md, so a change is a change of every replica's shard. */
#include "cluster/rendezvous.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/evp.h>
#include <uv.h>

#include "core/util.h"

/* ---- canonical URLs ---- */

/* Join the parts into out. 0 or UV_ENOBUFS. */
static int format_url(int is_https, const char *host, int is_v6, int port, char *out, size_t outlen)
{
    int n;

    n = snprintf(out, outlen, "%s://%s%s%s:%d", is_https ? "https" : "http", is_v6 ? "[" : "", host,
                 is_v6 ? "]" : "", port);
    if (n < 0 || (size_t)n >= outlen)
        return UV_ENOBUFS;
    return 0;
}

/* 1 when s is digits and dots only (a candidate IPv4 literal). */
static int looks_v4(const char *s)
{
    for (; *s; s++) {
        if ((*s < '0' || *s > '9') && *s != '.')
            return 0;
    }
    return 1;
}

int rgm_peer_url_canon(const char *url, char *out, size_t outlen)
{
    rgm_url_t u;
    unsigned char bin[sizeof(struct in6_addr)];
    char addr[INET6_ADDRSTRLEN];
    const char *host;
    int is_v6 = 0;

    /* rgm_url_parse drops a fragment silently and keeps a query in path: refuse both here,
     * since a base URL with either is a configuration mistake, not something to guess at. */
    if (!url || strpbrk(url, "?#"))
        return UV_EINVAL;
    if (rgm_url_parse(url, &u) < 0)
        return UV_EINVAL;
    if (strcmp(u.path, "/") != 0)
        return UV_EINVAL;
    host = u.host;
    if (strchr(u.host, ':')) {
        if (inet_pton(AF_INET6, u.host, bin) != 1 || !inet_ntop(AF_INET6, bin, addr, sizeof(addr)))
            return UV_EINVAL; /* zones ("%eth0") are refused too: they name no address */
        host = addr;
        is_v6 = 1;
    } else if (looks_v4(u.host) && inet_pton(AF_INET, u.host, bin) == 1) {
        if (!inet_ntop(AF_INET, bin, addr, sizeof(addr)))
            return UV_EINVAL;
        host = addr;
    }
    return format_url(u.is_https, host, is_v6, u.port, out, outlen);
}

int rgm_peer_url_from_addr(int is_https, const struct sockaddr *sa, int port, char *out,
                           size_t outlen)
{
    char addr[INET6_ADDRSTRLEN];

    if (!sa || port < 1 || port > 65535)
        return UV_EINVAL;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)sa;
        if (!inet_ntop(AF_INET, &in4->sin_addr, addr, sizeof(addr)))
            return UV_EINVAL;
        return format_url(is_https, addr, 0, port, out, outlen);
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        if (!inet_ntop(AF_INET6, &in6->sin6_addr, addr, sizeof(addr)))
            return UV_EINVAL;
        return format_url(is_https, addr, 1, port, out, outlen);
    }
    return UV_EINVAL;
}

/* ---- scores and order ---- */

uint64_t rgm_rendezvous_score(const char *key, size_t key_len, const char *peer_url)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint64_t v = 0;
    int i;

    /* SHA-256 cannot fail on a working OpenSSL; if it did, every replica would disagree
     * silently, so stop rather than shard on garbage. */
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, key, key_len) != 1 || EVP_DigestUpdate(ctx, "\n", 1) != 1 ||
        EVP_DigestUpdate(ctx, peer_url, strlen(peer_url)) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len < 8) {
        (void)fprintf(stderr, "FATAL: SHA-256 failed in rendezvous hashing\n");
        abort();
    }
    EVP_MD_CTX_free(ctx);
    for (i = 0; i < 8; i++)
        v = (v << 8) | md[i];
    return v;
}

/* 1 when a ranks before b. */
static int ranks_before(const rgm_rdv_rank_t *a, const rgm_rdv_rank_t *b, const char *const *urls)
{
    if (a->score != b->score)
        return a->score > b->score;
    return strcmp(urls[a->idx], urls[b->idx]) < 0;
}

void rgm_rendezvous_rank(const char *key, size_t key_len, const char *const *urls, size_t n,
                         rgm_rdv_rank_t *out)
{
    size_t i, j;
    rgm_rdv_rank_t cur;

    for (i = 0; i < n; i++) {
        cur.score = rgm_rendezvous_score(key, key_len, urls[i]);
        cur.idx = i;
        /* Insertion sort: clusters are a handful of peers (RGM_PEERS_MAX at most). */
        for (j = i; j > 0 && ranks_before(&cur, &out[j - 1], urls); j--)
            out[j] = out[j - 1];
        out[j] = cur;
    }
}

/* ---- keys ---- */

int rgm_rendezvous_tag_key(const char *registry, const char *repository, const char *tag, char *out,
                           size_t outlen)
{
    size_t rlen, i;
    int n;

    if (!registry || !repository || !tag || !*registry || !*repository || !*tag)
        return UV_EINVAL;
    n = snprintf(out, outlen, "%s/%s:%s", registry, repository, tag);
    if (n < 0 || (size_t)n >= outlen)
        return UV_ENOBUFS;
    rlen = strlen(registry);
    for (i = 0; i < rlen; i++) {
        if (out[i] >= 'A' && out[i] <= 'Z')
            out[i] = (char)(out[i] - 'A' + 'a');
    }
    return 0;
}
