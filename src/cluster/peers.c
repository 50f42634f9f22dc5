/* Cluster membership and health: static or DNS members, self detection, down/up marking with
 * backoff and /readyz probes, and the rendezvous ranking of healthy members for a key.
 * It does not talk to peers except for probes; forwarding is the registry layer's job.
 * Everything runs on the loop thread; only getaddrinfo runs on libuv's pool. */
#include "cluster/peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include "core/log.h"
#include "core/util.h"
#include "http/client.h"

#define MOD "cluster"

#define MAX_LISTEN 16

/* ---- state ---- */

struct member {
    char url[RGM_PEER_URL_MAX]; /* canonical */
    int is_self;
    int is_down;
    int is_probing;
    unsigned fails;       /* consecutive failures; drives the backoff */
    uint64_t retry_at_ms; /* loop time of the next probe while down */
    uint64_t n_forwarded, bytes_forwarded, n_fills;
};

/* One probe in flight. It names its peer by URL, because the member may be dropped by a DNS
 * refresh before the probe ends. */
struct probe {
    struct rgm_peers *peers;
    char url[RGM_PEER_URL_MAX];
    rgm_upreq_t *req; /* default probe only, until on_done */
    int status;
    size_t body_len; /* default probe: body bytes so far */
    struct probe *prev, *next;
};

struct rgm_peers {
    uv_loop_t *loop;
    uv_timer_t dns_timer;
    uv_timer_t health_timer;
    uv_getaddrinfo_t gai;
    int is_gai_pending;
    int is_started;
    int is_closing;
    int n_closing_handles;
    void (*close_cb)(void *ud);
    void *close_ud;

    int is_dns;
    int dns_is_https;
    int dns_port;
    char dns_host[256];
    uint64_t dns_interval_ms;

    char self_url[RGM_PEER_URL_MAX]; /* "" when not given */
    int find_self;
    struct sockaddr_storage listen[MAX_LISTEN];
    size_t n_listen;
    int has_warned_self;

    uint64_t backoff_min_ms;
    uint64_t backoff_max_ms;
    rgm_client_t *client;
    rgm_peers_probe_fn probe;
    void *probe_ctx;
    struct probe *probes; /* in flight */
    size_t n_probes;

    struct member m[RGM_PEERS_MAX]; /* sorted by url */
    size_t n;
    rgm_peers_stats_t stats;
};

static void schedule_health(struct rgm_peers *p);
static void maybe_finish_close(struct rgm_peers *p);

static struct member *find_member(struct rgm_peers *p, const char *url)
{
    size_t i;

    for (i = 0; i < p->n; i++) {
        if (strcmp(p->m[i].url, url) == 0)
            return &p->m[i];
    }
    return NULL;
}

static int cmp_url(const void *a, const void *b)
{
    return strcmp((const char *)a, (const char *)b);
}

/* ---- self ---- */

/* Parse a canonical URL's host as an address into *ss and its port. 0, or UV_EINVAL when the
 * host is a name. */
static int url_addr(const char *url, struct sockaddr_storage *ss, int *port)
{
    rgm_url_t u;

    memset(ss, 0, sizeof(*ss));
    if (rgm_url_parse(url, &u) < 0)
        return UV_EINVAL;
    *port = u.port;
    if (uv_ip4_addr(u.host, u.port, (struct sockaddr_in *)ss) == 0)
        return 0;
    memset(ss, 0, sizeof(*ss));
    if (uv_ip6_addr(u.host, u.port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return UV_EINVAL;
}

/* 1 when a and b (same family) are equal under mask (all ones when mask is NULL). */
static int addr_eq_masked(const unsigned char *a, const unsigned char *b, const unsigned char *mask,
                          size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char m = mask ? mask[i] : 0xff;
        if ((a[i] & m) != (b[i] & m))
            return 0;
    }
    return 1;
}

static int is_local_addr(const struct sockaddr_storage *ss, const uv_interface_address_t *ifs,
                         int n_ifs)
{
    int i;

    for (i = 0; i < n_ifs; i++) {
        const uv_interface_address_t *ifa = &ifs[i];
        const unsigned char *a, *b, *mask;
        size_t len;

        if (ss->ss_family != ifa->address.address4.sin_family)
            continue;
        if (ss->ss_family == AF_INET) {
            a = (const unsigned char *)&((const struct sockaddr_in *)ss)->sin_addr;
            b = (const unsigned char *)&ifa->address.address4.sin_addr;
            mask = (const unsigned char *)&ifa->netmask.netmask4.sin_addr;
            len = 4;
        } else {
            a = (const unsigned char *)&((const struct sockaddr_in6 *)ss)->sin6_addr;
            b = (const unsigned char *)&ifa->address.address6.sin6_addr;
            mask = (const unsigned char *)&ifa->netmask.netmask6.sin6_addr;
            len = 16;
        }
        /* Linux answers on every address of a loopback interface's network (127.0.0.0/8), so
         * those count as ours; elsewhere only the interface's own address does. */
        if (addr_eq_masked(a, b, ifa->is_internal ? mask : NULL, len))
            return 1;
    }
    return 0;
}

/* The port of ss, and whether its address is the wildcard; 0 or UV_EINVAL (other family). */
static int listen_info(const struct sockaddr_storage *ss, int *port, int *is_any)
{
    static const unsigned char zero[16];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in4 = (const struct sockaddr_in *)(const void *)ss;
        *port = ntohs(in4->sin_port);
        *is_any = in4->sin_addr.s_addr == htonl(INADDR_ANY);
        return 0;
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)ss;
        *port = ntohs(in6->sin6_port);
        *is_any = memcmp(&in6->sin6_addr, zero, 16) == 0;
        return 0;
    }
    return UV_EINVAL;
}

/* 1 when a and b hold the same address (ports aside). */
static int same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)(const void *)a)->sin_addr,
                      &((const struct sockaddr_in *)(const void *)b)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr, 16) == 0;
}

int rgm_peers_match_self(const char *const *urls, size_t n, const uv_interface_address_t *ifs,
                         int n_ifs, const struct sockaddr_storage *listen, size_t n_listen)
{
    struct sockaddr_storage ss;
    int found = -1, port, lport, is_any;
    size_t i, j;

    for (i = 0; i < n; i++) {
        int is_match = 0;

        if (url_addr(urls[i], &ss, &port) < 0)
            continue;
        for (j = 0; j < n_listen && !is_match; j++) {
            if (listen_info(&listen[j], &lport, &is_any) < 0 || lport != port)
                continue;
            /* 0.0.0.0 takes IPv4 only; :: is dual-stack (libuv binds it without V6ONLY). */
            if (is_any && listen[j].ss_family == AF_INET && ss.ss_family != AF_INET)
                continue;
            is_match = is_any ? is_local_addr(&ss, ifs, n_ifs) : same_addr(&ss, &listen[j]);
        }
        if (!is_match)
            continue;
        if (found >= 0)
            return -2;
        found = (int)i;
    }
    return found;
}

/* Set is_self on the members. Logs once when self is unknown or ambiguous. */
static void determine_self(struct rgm_peers *p)
{
    const char *urls[RGM_PEERS_MAX];
    uv_interface_address_t *ifs = NULL;
    int n_ifs = 0, idx = -1, rc;
    size_t i;

    for (i = 0; i < p->n; i++) {
        p->m[i].is_self = 0;
        urls[i] = p->m[i].url;
    }
    if (p->self_url[0]) {
        struct member *me = find_member(p, p->self_url);
        if (me) {
            me->is_self = 1;
            p->has_warned_self = 0;
        } else if (!p->has_warned_self && p->n > 0) {
            rgm_log(RGM_LOG_WARN, MOD, "self %s is not among the %zu peers: forwarding only",
                    p->self_url, p->n);
            p->has_warned_self = 1;
        }
        return;
    }
    if (!p->find_self || p->n == 0)
        return;
    rc = uv_interface_addresses(&ifs, &n_ifs);
    if (rc == 0) {
        idx = rgm_peers_match_self(urls, p->n, ifs, n_ifs, p->listen, p->n_listen);
        uv_free_interface_addresses(ifs, n_ifs);
    }
    if (idx >= 0) {
        p->m[idx].is_self = 1;
        p->has_warned_self = 0;
        return;
    }
    if (!p->has_warned_self) {
        rgm_log(RGM_LOG_WARN, MOD,
                "self not found among the %zu peers (%s): forwarding only; "
                "set cluster.self",
                p->n,
                rc < 0      ? uv_strerror(rc)
                : idx == -2 ? "several match"
                            : "none is local");
        p->has_warned_self = 1;
    }
}

/* ---- membership ---- */

int rgm_peers_from_addrinfo(const struct addrinfo *res, int is_https, int port,
                            char (*out)[RGM_PEER_URL_MAX], size_t max, size_t *n_dropped)
{
    const struct addrinfo *ai;
    char(*all)[RGM_PEER_URL_MAX] = NULL;
    size_t n_all = 0, n = 0, i;
    int family = AF_INET6, rc = 0;

    *n_dropped = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        n_all++;
        if (ai->ai_family == AF_INET)
            family = AF_INET; /* a dual-stack member is one peer: its A record */
    }
    if (n_all == 0)
        return 0;
    all = rgm_calloc(n_all, sizeof(*all));
    n_all = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != family || !ai->ai_addr)
            continue;
        rc = rgm_peer_url_from_addr(is_https, ai->ai_addr, port, all[n_all], sizeof(all[0]));
        if (rc < 0)
            goto out;
        n_all++;
    }
    qsort(all, n_all, sizeof(all[0]), cmp_url);
    for (i = 0; i < n_all; i++) {
        if (i > 0 && strcmp(all[i - 1], all[i]) == 0)
            continue; /* one address per socket type and protocol: keep it once */
        if (n == max) {
            (*n_dropped)++;
            continue;
        }
        memcpy(out[n], all[i], sizeof(all[0]));
        n++;
    }
    rc = (int)n;
out:
    free(all);
    return rc;
}

/* Replace the members by urls[0..n) (sorted, distinct), keeping the health of those that
 * stay. */
static void apply_members(struct rgm_peers *p, char (*urls)[RGM_PEER_URL_MAX], size_t n)
{
    struct member next[RGM_PEERS_MAX];
    size_t i;

    memset(next, 0, sizeof(next));
    for (i = 0; i < n; i++) {
        const struct member *old = find_member(p, urls[i]);
        if (old) {
            next[i] = *old;
        } else {
            memcpy(next[i].url, urls[i], sizeof(next[i].url));
            if (p->is_started)
                rgm_log(RGM_LOG_INFO, MOD, "peer added url=%s", next[i].url);
        }
    }
    for (i = 0; i < p->n; i++) {
        size_t j;
        int stays = 0;
        for (j = 0; j < n && !stays; j++)
            stays = strcmp(p->m[i].url, urls[j]) == 0;
        if (!stays)
            rgm_log(RGM_LOG_INFO, MOD, "peer removed url=%s", p->m[i].url);
    }
    memcpy(p->m, next, sizeof(next));
    p->n = n;
    determine_self(p);
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct rgm_peers *p = rgm_container_of(req, struct rgm_peers, gai);
    char urls[RGM_PEERS_MAX][RGM_PEER_URL_MAX];
    size_t n_dropped = 0;
    int n;

    p->is_gai_pending = 0;
    if (p->is_closing) {
        uv_freeaddrinfo(res);
        maybe_finish_close(p);
        return;
    }
    if (status < 0) {
        /* Keep the last members: a resolver hiccup must not collapse the cluster to one. */
        rgm_log(RGM_LOG_WARN, MOD, "peers_dns %s: %s; keeping %zu peers", p->dns_host,
                uv_strerror(status), p->n);
        return;
    }
    n = rgm_peers_from_addrinfo(res, p->dns_is_https, p->dns_port, urls, RGM_PEERS_MAX, &n_dropped);
    uv_freeaddrinfo(res);
    if (n < 0) {
        rgm_log(RGM_LOG_WARN, MOD, "peers_dns %s: %s; keeping %zu peers", p->dns_host,
                uv_strerror(n), p->n);
        return;
    }
    if (n_dropped > 0)
        rgm_log(RGM_LOG_WARN, MOD, "peers_dns %s: %zu addresses past %d dropped", p->dns_host,
                n_dropped, RGM_PEERS_MAX);
    apply_members(p, urls, (size_t)n);
    p->stats.n_resolutions++;
}

static void on_dns_timer(uv_timer_t *t)
{
    struct rgm_peers *p = rgm_container_of(t, struct rgm_peers, dns_timer);
    struct addrinfo hints;
    int rc;

    if (p->is_gai_pending)
        return; /* a slow resolver: the answer in flight will do */
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = uv_getaddrinfo(p->loop, &p->gai, on_gai, p->dns_host, NULL, &hints);
    if (rc < 0) {
        rgm_log(RGM_LOG_WARN, MOD, "peers_dns %s: %s", p->dns_host, uv_strerror(rc));
        return;
    }
    p->is_gai_pending = 1;
}

/* ---- health ---- */

static uint64_t backoff_ms(const struct rgm_peers *p, unsigned fails)
{
    uint64_t d = p->backoff_min_ms;
    unsigned i;

    for (i = 1; i < fails && d < p->backoff_max_ms; i++)
        d *= 2;
    return d < p->backoff_max_ms ? d : p->backoff_max_ms;
}

static void mark_up(struct rgm_peers *p, struct member *m)
{
    if (m->is_down) {
        m->is_down = 0;
        p->stats.n_marked_up++;
        rgm_log(RGM_LOG_INFO, MOD, "peer up url=%s after %u failures", m->url, m->fails);
    }
    m->fails = 0;
}

/* One more failure: down now, next probe after the backoff. */
static void mark_failed(struct rgm_peers *p, struct member *m)
{
    m->fails++;
    if (!m->is_down) {
        m->is_down = 1;
        p->stats.n_marked_down++;
        rgm_log(RGM_LOG_WARN, MOD, "peer down url=%s", m->url);
    }
    m->retry_at_ms = uv_now(p->loop) + backoff_ms(p, m->fails);
    schedule_health(p);
}

void rgm_peers_report(rgm_peers_t *p, const char *url, int is_ok)
{
    struct member *m = find_member(p, url);

    if (!m || m->is_self || p->is_closing)
        return;
    if (is_ok) {
        mark_up(p, m);
        return;
    }
    if (m->is_down)
        return; /* already down: its probe schedule decides when it is tried again */
    mark_failed(p, m);
}

static void probe_unlink(struct rgm_peers *p, struct probe *pr)
{
    if (pr->prev)
        pr->prev->next = pr->next;
    else
        p->probes = pr->next;
    if (pr->next)
        pr->next->prev = pr->prev;
    p->n_probes--;
}

/* The end of a probe, whichever kind. Frees pr. */
static void on_probe_done(void *probe_ud, int is_ready)
{
    struct probe *pr = probe_ud;
    struct rgm_peers *p = pr->peers;
    struct member *m;

    probe_unlink(p, pr);
    if (p->is_closing) {
        free(pr);
        maybe_finish_close(p);
        return;
    }
    m = find_member(p, pr->url);
    if (m) {
        m->is_probing = 0;
        if (is_ready)
            mark_up(p, m);
        else if (m->is_down)
            mark_failed(p, m);
    }
    free(pr);
}

static int on_probe_head(rgm_upreq_t *r, int status, void *ud)
{
    struct probe *pr = ud;

    (void)r;
    pr->status = status;
    return 0;
}

/* /readyz answers a few bytes: a peer that sends more is not ready, and cannot keep the probe
 * (and its connection) busy with an endless body. */
#define PROBE_BODY_MAX 4096

static int on_probe_body(rgm_upreq_t *r, const char *data, size_t len, void *ud)
{
    struct probe *pr = ud;

    (void)r;
    (void)data;
    pr->body_len += len;
    return pr->body_len > PROBE_BODY_MAX ? UV_E2BIG : 0;
}

static void on_probe_http_done(rgm_upreq_t *r, int err, void *ud)
{
    struct probe *pr = ud;

    (void)r;
    pr->req = NULL;
    on_probe_done(pr, err == 0 && pr->status == 200);
}

/* The default probe: GET <url>/readyz, ready on 200. 0, or <0 when it could not start. */
static int start_http_probe(struct rgm_peers *p, struct probe *pr)
{
    static const rgm_upreq_cbs_t cbs = {on_probe_head, on_probe_body, on_probe_http_done};
    char url[RGM_PEER_URL_MAX + 16];
    int n;

    if (!p->client)
        return UV_EINVAL;
    n = snprintf(url, sizeof(url), "%s/readyz", pr->url);
    if (n < 0 || (size_t)n >= sizeof(url))
        return UV_ENOBUFS;
    pr->req = rgm_upreq_new(p->client, "GET", url, NULL);
    if (!pr->req)
        return UV_EINVAL;
    rgm_upreq_set_max_redirects(pr->req, 0);
    if (rgm_upreq_start(pr->req, &cbs, pr) < 0) {
        pr->req = NULL;
        return UV_EIO;
    }
    return 0;
}

static void start_probe(struct rgm_peers *p, struct member *m)
{
    struct probe *pr = rgm_calloc(1, sizeof(*pr));
    int rc;

    pr->peers = p;
    memcpy(pr->url, m->url, sizeof(pr->url));
    pr->next = p->probes;
    if (p->probes)
        p->probes->prev = pr;
    p->probes = pr;
    p->n_probes++;
    m->is_probing = 1;
    if (p->probe)
        rc = p->probe(p->probe_ctx, pr->url, on_probe_done, pr);
    else
        rc = start_http_probe(p, pr);
    if (rc < 0) {
        rgm_log(RGM_LOG_DEBUG, MOD, "probe of %s not started: %s", m->url, uv_strerror(rc));
        probe_unlink(p, pr);
        free(pr);
        m->is_probing = 0;
        m->fails++;
        m->retry_at_ms = uv_now(p->loop) + backoff_ms(p, m->fails);
    }
}

static void on_health_timer(uv_timer_t *t)
{
    struct rgm_peers *p = rgm_container_of(t, struct rgm_peers, health_timer);
    uint64_t now = uv_now(p->loop);
    size_t i;

    for (i = 0; i < p->n; i++) {
        struct member *m = &p->m[i];
        if (m->is_down && !m->is_probing && m->retry_at_ms <= now)
            start_probe(p, m);
    }
    schedule_health(p);
}

/* Arm the health timer for the earliest due probe, if any. */
static void schedule_health(struct rgm_peers *p)
{
    uint64_t now = uv_now(p->loop), next = UINT64_MAX;
    size_t i;
    int rc;

    if (p->is_closing || !p->is_started)
        return;
    for (i = 0; i < p->n; i++) {
        const struct member *m = &p->m[i];
        if (m->is_down && !m->is_probing && m->retry_at_ms < next)
            next = m->retry_at_ms;
    }
    if (next == UINT64_MAX) {
        (void)uv_timer_stop(&p->health_timer); /* cannot fail on an initialised timer */
        return;
    }
    rc = uv_timer_start(&p->health_timer, on_health_timer, next > now ? next - now : 0, 0);
    if (rc < 0)
        rgm_log(RGM_LOG_ERROR, MOD, "health timer: %s", uv_strerror(rc));
}

/* ---- ranking ---- */

size_t rgm_peers_rank(const rgm_peers_t *p, const char *key, size_t key_len, int only_up,
                      rgm_peer_pick_t *out, size_t max)
{
    const char *urls[RGM_PEERS_MAX] = {NULL}; /* gcc 12 cannot see that n bounds the reads */
    const struct member *who[RGM_PEERS_MAX];
    rgm_rdv_rank_t rank[RGM_PEERS_MAX];
    size_t n = 0, i;

    for (i = 0; i < p->n; i++) {
        const struct member *m = &p->m[i];
        if (only_up && m->is_down && !m->is_self)
            continue;
        urls[n] = m->url;
        who[n] = m;
        n++;
    }
    rgm_rendezvous_rank(key, key_len, urls, n, rank);
    for (i = 0; i < n && i < max; i++) {
        const struct member *m = who[rank[i].idx];
        memset(&out[i], 0, sizeof(out[i]));
        memcpy(out[i].url, m->url, sizeof(out[i].url));
        out[i].is_self = m->is_self;
        out[i].is_up = m->is_self || !m->is_down;
    }
    return i;
}

int rgm_peers_owner(const rgm_peers_t *p, const char *key, size_t key_len, rgm_peer_pick_t *owner)
{
    if (rgm_peers_rank(p, key, key_len, 1, owner, 1) == 0)
        return 1;
    return owner->is_self;
}

int rgm_peers_fill_source(const rgm_peers_t *p, const char *key, size_t key_len,
                          rgm_peer_pick_t *src)
{
    rgm_peer_pick_t best[2];

    if (rgm_peers_rank(p, key, key_len, 1, best, 2) < 2 || !best[0].is_self)
        return 0;
    *src = best[1];
    return 1;
}

void rgm_peers_count(rgm_peers_t *p, const char *url, int is_fill, uint64_t bytes)
{
    struct member *m = find_member(p, url);

    if (!m)
        return;
    if (is_fill)
        m->n_fills++;
    else
        m->n_forwarded++;
    m->bytes_forwarded += bytes;
}

void rgm_peers_stats(const rgm_peers_t *p, rgm_peers_stats_t *out)
{
    size_t i;

    *out = p->stats;
    out->n_members = p->n;
    out->n_up = 0;
    out->has_self = 0;
    for (i = 0; i < p->n; i++) {
        if (p->m[i].is_self || !p->m[i].is_down)
            out->n_up++;
        if (p->m[i].is_self)
            out->has_self = 1;
    }
}

int rgm_peers_member(const rgm_peers_t *p, size_t i, rgm_peer_pick_t *out)
{
    if (i >= p->n)
        return UV_EINVAL;
    memset(out, 0, sizeof(*out));
    memcpy(out->url, p->m[i].url, sizeof(out->url));
    out->is_self = p->m[i].is_self;
    out->is_up = p->m[i].is_self || !p->m[i].is_down;
    out->n_forwarded = p->m[i].n_forwarded;
    out->bytes_forwarded = p->m[i].bytes_forwarded;
    out->n_fills = p->m[i].n_fills;
    return 0;
}

/* ---- life cycle ---- */

/* Parse dns_url into the set. 0 or UV_EINVAL (logged). */
static int set_dns(struct rgm_peers *p, const char *dns_url)
{
    rgm_url_t u;
    size_t len;

    if (strpbrk(dns_url, "?#") || rgm_url_parse(dns_url, &u) < 0 || strcmp(u.path, "/") != 0) {
        rgm_log(RGM_LOG_ERROR, MOD, "peers_dns %s: not http[s]://NAME:PORT", dns_url);
        return UV_EINVAL;
    }
    len = strlen(u.host);
    if (len >= sizeof(p->dns_host))
        return UV_EINVAL;
    memcpy(p->dns_host, u.host, len + 1);
    p->dns_is_https = u.is_https;
    p->dns_port = u.port;
    p->is_dns = 1;
    return 0;
}

/* Canonicalise the static members into the set (sorted). 0 or UV_EINVAL (logged). */
static int set_static(struct rgm_peers *p, const char *const *urls, size_t n)
{
    char canon[RGM_PEERS_MAX][RGM_PEER_URL_MAX];
    size_t i;

    if (n > RGM_PEERS_MAX) {
        rgm_log(RGM_LOG_ERROR, MOD, "%zu peers: at most %d", n, RGM_PEERS_MAX);
        return UV_EINVAL;
    }
    for (i = 0; i < n; i++) {
        if (rgm_peer_url_canon(urls[i], canon[i], sizeof(canon[i])) < 0) {
            rgm_log(RGM_LOG_ERROR, MOD, "peer %s: not an http[s]://host[:port] base URL",
                    urls[i] ? urls[i] : "(null)");
            return UV_EINVAL;
        }
    }
    qsort(canon, n, sizeof(canon[0]), cmp_url);
    for (i = 1; i < n; i++) {
        if (strcmp(canon[i - 1], canon[i]) == 0) {
            rgm_log(RGM_LOG_ERROR, MOD, "peer %s listed twice", canon[i]);
            return UV_EINVAL;
        }
    }
    apply_members(p, canon, n);
    return 0;
}

rgm_peers_t *rgm_peers_new(uv_loop_t *loop, const rgm_peers_opts_t *opts, int *err)
{
    struct rgm_peers *p = rgm_calloc(1, sizeof(*p));
    int has_static = opts->n_urls > 0, has_dns = opts->dns_url && *opts->dns_url;
    size_t i;

    p->loop = loop;
    p->dns_interval_ms = opts->dns_interval_ms ? opts->dns_interval_ms : 15000;
    p->backoff_min_ms = opts->backoff_min_ms ? opts->backoff_min_ms : 1000;
    p->backoff_max_ms = opts->backoff_max_ms ? opts->backoff_max_ms : 30000;
    if (p->backoff_max_ms < p->backoff_min_ms)
        p->backoff_max_ms = p->backoff_min_ms;
    p->client = opts->client;
    p->probe = opts->probe;
    p->probe_ctx = opts->probe_ctx;
    p->find_self = opts->find_self;
    if (has_static == has_dns) {
        rgm_log(RGM_LOG_ERROR, MOD, "cluster: give exactly one of peers and peers_dns");
        goto fail;
    }
    if (opts->n_listen > MAX_LISTEN)
        goto fail;
    for (i = 0; i < opts->n_listen; i++)
        p->listen[i] = opts->listen[i];
    p->n_listen = opts->n_listen;
    if (opts->self_url &&
        rgm_peer_url_canon(opts->self_url, p->self_url, sizeof(p->self_url)) < 0) {
        rgm_log(RGM_LOG_ERROR, MOD, "self %s: not an http[s]://host[:port] base URL",
                opts->self_url);
        goto fail;
    }
    if (has_dns && set_dns(p, opts->dns_url) < 0)
        goto fail;
    if (has_static && set_static(p, opts->urls, opts->n_urls) < 0)
        goto fail;
    /* Both cannot fail on a valid loop (they only fill the handle in). */
    (void)uv_timer_init(loop, &p->dns_timer);
    (void)uv_timer_init(loop, &p->health_timer);
    *err = 0;
    return p;
fail:
    free(p);
    *err = UV_EINVAL;
    return NULL;
}

int rgm_peers_start(rgm_peers_t *p)
{
    int rc;

    p->is_started = 1;
    if (p->is_dns) {
        rc = uv_timer_start(&p->dns_timer, on_dns_timer, 0, p->dns_interval_ms);
        if (rc < 0)
            return rc;
    }
    schedule_health(p);
    return 0;
}

static void maybe_finish_close(struct rgm_peers *p)
{
    void (*cb)(void *ud) = p->close_cb;
    void *ud = p->close_ud;

    if (p->n_closing_handles > 0 || p->is_gai_pending || p->n_probes > 0)
        return;
    free(p);
    if (cb)
        cb(ud);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct rgm_peers *p = h->data;

    p->n_closing_handles--;
    maybe_finish_close(p);
}

void rgm_peers_close(rgm_peers_t *p, void (*cb)(void *ud), void *ud)
{
    struct probe *pr;

    RGM_BUG_ON(p->is_closing);
    p->is_closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    if (p->is_gai_pending)
        (void)uv_cancel((uv_req_t *)&p->gai); /* may be running already: on_gai ends it */
    /* Default probes end through on_done(UV_ECANCELED); custom ones end when they end. */
    for (pr = p->probes; pr; pr = pr->next) {
        if (pr->req)
            rgm_upreq_cancel(pr->req);
    }
    p->dns_timer.data = p;
    p->health_timer.data = p;
    p->n_closing_handles = 2;
    uv_close((uv_handle_t *)&p->dns_timer, on_timer_closed);
    uv_close((uv_handle_t *)&p->health_timer, on_timer_closed);
}
