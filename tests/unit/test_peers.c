/* Unit tests for src/cluster/peers.c: members from resolver answers (A before AAAA, distinct,
 * sorted, capped), self detection against interface tables, option checks, owner and fill
 * source, down/up with backoff and probes (injected, and the real GET /readyz against a tiny
 * server on 127.0.0.1), peers_dns through the system resolver (localhost), and closing with
 * work in flight. */
#include "cluster/peers.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <uv.h>

#include "core/log.h"
#include "http/client.h"
#include "tap.h"

/* ---- resolver answers ---- */

struct fake_ai {
    struct addrinfo ai;
    struct sockaddr_storage ss;
};

/* Chain n fake entries of "v4:" / "v6:" addresses. */
static struct addrinfo *fake_chain(struct fake_ai *f, const char *const *addrs, size_t n)
{
    size_t i;

    memset(f, 0, n * sizeof(*f));
    for (i = 0; i < n; i++) {
        const char *a = addrs[i] + 3;
        if (strncmp(addrs[i], "v4:", 3) == 0) {
            (void)uv_ip4_addr(a, 0, (struct sockaddr_in *)&f[i].ss);
            f[i].ai.ai_family = AF_INET;
            f[i].ai.ai_addrlen = sizeof(struct sockaddr_in);
        } else {
            (void)uv_ip6_addr(a, 0, (struct sockaddr_in6 *)&f[i].ss);
            f[i].ai.ai_family = AF_INET6;
            f[i].ai.ai_addrlen = sizeof(struct sockaddr_in6);
        }
        f[i].ai.ai_socktype = SOCK_STREAM;
        f[i].ai.ai_addr = (struct sockaddr *)&f[i].ss;
        f[i].ai.ai_next = i + 1 < n ? &f[i + 1].ai : NULL;
    }
    return n ? &f[0].ai : NULL;
}

static void test_from_addrinfo(void)
{
    static const char *const dual[] = {"v6:fd00::3",  "v4:10.0.0.3", "v6:fd00::1",
                                       "v4:10.0.0.1", "v4:10.0.0.3", "v4:10.0.0.2"};
    static const char *const v6only[] = {"v6:fd00::0b", "v6:fd00::a", "v6:fd00::a"};
    struct fake_ai f[8];
    char out[4][RGM_PEER_URL_MAX];
    size_t dropped = 99;
    int n;

    n = rgm_peers_from_addrinfo(fake_chain(f, dual, 6), 0, 5000, out, 4, &dropped);
    is_int(n, 3, "A and AAAA: the 3 distinct A records only");
    is_str(out[0], "http://10.0.0.1:5000", "sorted 1");
    is_str(out[1], "http://10.0.0.2:5000", "sorted 2");
    is_str(out[2], "http://10.0.0.3:5000", "sorted 3");
    is_int(dropped, 0, "none dropped");
    n = rgm_peers_from_addrinfo(fake_chain(f, v6only, 3), 1, 443, out, 4, &dropped);
    is_int(n, 2, "AAAA only: used, duplicates once");
    is_str(out[0], "https://[fd00::a]:443", "v6 1");
    is_str(out[1], "https://[fd00::b]:443", "v6 2");
    n = rgm_peers_from_addrinfo(fake_chain(f, dual, 6), 0, 5000, out, 2, &dropped);
    is_int(n, 2, "capped at max");
    is_int(dropped, 1, "one dropped past max");
    is_str(out[1], "http://10.0.0.2:5000", "the lowest URLs are kept");
    n = rgm_peers_from_addrinfo(NULL, 0, 5000, out, 4, &dropped);
    is_int(n, 0, "no answer, no members");
    n = rgm_peers_from_addrinfo(fake_chain(f, dual, 6), 0, 0, out, 4, &dropped);
    is_int(n, UV_EINVAL, "port 0 refused");
}

/* ---- self ---- */

static void set_if(uv_interface_address_t *i, const char *addr, const char *mask, int internal)
{
    memset(i, 0, sizeof(*i));
    i->is_internal = internal;
    if (strchr(addr, ':')) {
        (void)uv_ip6_addr(addr, 0, &i->address.address6);
        (void)uv_ip6_addr(mask, 0, &i->netmask.netmask6);
    } else {
        (void)uv_ip4_addr(addr, 0, &i->address.address4);
        (void)uv_ip4_addr(mask, 0, &i->netmask.netmask4);
    }
}

/* A listen address "host" and port. */
static struct sockaddr_storage laddr(const char *host, int port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(host, ':'))
        (void)uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
    else
        (void)uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    return ss;
}

static void test_match_self(void)
{
    uv_interface_address_t ifs[4];
    static const char *const pod[] = {"http://10.0.0.4:5000", "http://10.0.0.5:5000",
                                      "http://10.0.0.6:5000"};
    static const char *const lo[] = {"http://127.0.0.1:5001", "http://127.0.0.1:5002",
                                     "http://127.0.0.1:5003"};
    static const char *const lo_addrs[] = {"http://127.0.0.2:5000", "http://127.0.0.3:5000"};
    static const char *const names[] = {"http://node-a:5000", "http://node-b:5000"};
    static const char *const v6[] = {"http://[fd00::1]:5000", "http://[fd00::2]:5000"};
    static const char *const twice[] = {"http://127.0.0.1:5000", "http://10.0.0.5:5000"};
    struct sockaddr_storage p5000[1], p5002[2], p6000[1], v6any[1], at2[1], at3[2], u[1];

    p5000[0] = laddr("0.0.0.0", 5000);
    p5002[0] = laddr("0.0.0.0", 6000);
    p5002[1] = laddr("127.0.0.1", 5002);
    p6000[0] = laddr("0.0.0.0", 6000);
    v6any[0] = laddr("::", 5000);
    at2[0] = laddr("127.0.0.2", 5000);
    at3[0] = laddr("127.0.0.9", 5000);
    at3[1] = laddr("127.0.0.3", 5000);
    memset(u, 0, sizeof(u));
    u[0].ss_family = AF_UNIX;

    set_if(&ifs[0], "127.0.0.1", "255.0.0.0", 1);
    set_if(&ifs[1], "10.0.0.5", "255.255.255.0", 0);
    set_if(&ifs[2], "::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 1);
    set_if(&ifs[3], "fd00::2", "ffff:ffff:ffff:ffff::", 0);
    is_int(rgm_peers_match_self(pod, 3, ifs, 4, p5000, 1), 1, "pod address and port");
    is_int(rgm_peers_match_self(pod, 3, ifs, 4, p6000, 1), -1, "address, but not a listen port");
    is_int(rgm_peers_match_self(pod, 3, ifs, 1, p5000, 1), -1,
           "no such interface (10.0.0.4/.6 are neighbours, not ours)");
    is_int(rgm_peers_match_self(lo, 3, ifs, 4, p5002, 2), 1, "loopback peers told by port");
    is_int(rgm_peers_match_self(lo_addrs, 2, ifs, 4, p5000, 1), -2,
           "0.0.0.0: 127.0.0.2 and .3 are both inside lo's /8: ambiguous");
    is_int(rgm_peers_match_self(lo_addrs, 2, ifs, 4, at2, 1), 0,
           "listening on 127.0.0.2 itself: that member");
    is_int(rgm_peers_match_self(lo_addrs, 2, ifs, 4, at3, 2), 1,
           "listening on 127.0.0.9 and 127.0.0.3: the .3 member");
    is_int(rgm_peers_match_self(pod, 3, ifs, 4, at2, 1), -1,
           "listening on one address: other local addresses are not self");
    is_int(rgm_peers_match_self(v6, 2, ifs, 4, v6any, 1), 1, "IPv6 wildcard listen");
    is_int(rgm_peers_match_self(pod, 3, ifs, 4, v6any, 1), 1, "the IPv6 wildcard is dual-stack");
    is_int(rgm_peers_match_self(pod, 3, ifs, 4, u, 1), -1, "a listen address of another family");
    is_int(rgm_peers_match_self(lo_addrs + 1, 1, ifs, 4, p5000, 1), 0,
           "127.0.0.3 alone is inside lo's /8: ours");
    is_int(rgm_peers_match_self(names, 2, ifs, 4, p5000, 1), -1, "names never match");
    is_int(rgm_peers_match_self(v6, 2, ifs, 4, p5000, 1), -1,
           "an IPv4 wildcard does not listen on IPv6 members");
    is_int(rgm_peers_match_self(twice, 2, ifs, 4, p5000, 1), -2, "two local members: ambiguous");
    is_int(rgm_peers_match_self(pod, 3, NULL, 0, p5000, 1), -1, "no interfaces");
}

/* ---- options ---- */

static void test_new_errors(void)
{
    uv_loop_t loop;
    static const char *const good[] = {"http://10.0.0.1:5000", "http://10.0.0.2:5000"};
    static const char *const dup[] = {"http://Node-A", "http://node-a:80/"};
    static const char *const bad[] = {"http://10.0.0.1:5000", "http://10.0.0.2:5000/v2"};
    static const char *many[RGM_PEERS_MAX + 1];
    static char many_buf[RGM_PEERS_MAX + 1][40];
    rgm_peers_opts_t o;
    int err = 0;
    size_t i;

    ok(uv_loop_init(&loop) == 0, "loop");
    memset(&o, 0, sizeof(o));
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "neither peers nor peers_dns");
    o.urls = good;
    o.n_urls = 2;
    o.dns_url = "http://regmirror:5000";
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "both peers and peers_dns");
    o.dns_url = NULL;
    o.urls = dup;
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "the same peer twice (canonically)");
    o.urls = bad;
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "a peer URL with a path");
    o.urls = good;
    o.self_url = "10.0.0.1:5000";
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "a bad self URL");
    o.self_url = NULL;
    for (i = 0; i <= RGM_PEERS_MAX; i++) {
        (void)snprintf(many_buf[i], sizeof(many_buf[i]), "http://10.0.1.%zu:5000", i);
        many[i] = many_buf[i];
    }
    o.urls = many;
    o.n_urls = RGM_PEERS_MAX + 1;
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "more than %d peers", RGM_PEERS_MAX);
    o.urls = NULL;
    o.n_urls = 0;
    o.dns_url = "http://regmirror:5000/x";
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "peers_dns with a path");
    o.dns_url = "regmirror:5000";
    ok(!rgm_peers_new(&loop, &o, &err) && err == UV_EINVAL, "peers_dns without a scheme");
    is_int(uv_loop_close(&loop), 0, "nothing left on the loop");
}

/* ---- owners, failure, probes ---- */

struct probe_log {
    uv_loop_t *loop;
    int n_calls;
    int ready_after; /* probes answer "not ready" until this many calls */
    char last_url[RGM_PEER_URL_MAX];
    uv_timer_t t;
    rgm_peers_probe_done_fn done;
    void *done_ud;
    int is_pending;
};

static void on_fake_probe_timer(uv_timer_t *t)
{
    struct probe_log *pl = rgm_container_of(t, struct probe_log, t);

    pl->is_pending = 0;
    pl->done(pl->done_ud, pl->n_calls >= pl->ready_after);
}

/* Answers after 1 ms, from a timer, as the contract requires. */
static int fake_probe(void *ctx, const char *url, rgm_peers_probe_done_fn done, void *probe_ud)
{
    struct probe_log *pl = ctx;

    if (pl->is_pending)
        return UV_EBUSY; /* the test uses one peer at a time */
    pl->n_calls++;
    (void)snprintf(pl->last_url, sizeof(pl->last_url), "%s", url);
    pl->done = done;
    pl->done_ud = probe_ud;
    pl->is_pending = 1;
    return uv_timer_start(&pl->t, on_fake_probe_timer, 1, 0);
}

static int closed_count;

static void on_peers_closed(void *ud)
{
    int *flag = ud;

    *flag = 1;
    closed_count++;
}

/* Run the loop until cond or about 3 s. */
#define RUN_UNTIL(loop, cond)                                                                      \
    do {                                                                                           \
        uint64_t until_ = uv_hrtime() + 3000000000ULL;                                             \
        while (!(cond) && uv_hrtime() < until_)                                                    \
            (void)uv_run((loop), UV_RUN_ONCE);                                                     \
    } while (0)

static void test_owner_and_health(void)
{
    static const char *const urls[] = {"http://127.0.0.1:5003", "http://127.0.0.1:5001",
                                       "http://127.0.0.1:5002"};
    /* From test_rendezvous' vectors: k0 ranks 5003, 5001, 5002; k1 ranks 5002, 5001, 5003. */
    const char *k0 = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    const char *k1 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    uv_loop_t loop;
    rgm_peers_opts_t o;
    rgm_peers_t *p;
    rgm_peer_pick_t pick, r[4];
    rgm_peers_stats_t st;
    struct probe_log pl;
    int err = -1, is_closed = 0;
    uint64_t t0;

    ok(uv_loop_init(&loop) == 0, "loop");
    memset(&pl, 0, sizeof(pl));
    pl.loop = &loop;
    pl.ready_after = 3;
    ok(uv_timer_init(&loop, &pl.t) == 0, "probe timer");
    memset(&o, 0, sizeof(o));
    o.urls = urls;
    o.n_urls = 3;
    o.self_url = "HTTP://127.0.0.1:5001/";
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 40;
    o.probe = fake_probe;
    o.probe_ctx = &pl;
    p = rgm_peers_new(&loop, &o, &err);
    ok(p && err == 0, "static set of 3");
    if (!p)
        return;
    ok(rgm_peers_start(p) == 0, "start");
    rgm_peers_stats(p, &st);
    ok(st.n_members == 3 && st.n_up == 3 && st.has_self, "3 members, all up, self known");
    ok(rgm_peers_member(p, 0, &pick) == 0 && strcmp(pick.url, "http://127.0.0.1:5001") == 0 &&
           pick.is_self,
       "members sorted by URL; the first is self");
    ok(rgm_peers_member(p, 3, &pick) == UV_EINVAL, "member past the end");

    is_int(rgm_peers_owner(p, k0, strlen(k0), &pick), 0, "k0 is not ours");
    is_str(pick.url, "http://127.0.0.1:5003", "k0's owner is 5003");
    is_int(rgm_peers_owner(p, k1, strlen(k1), &pick), 0, "k1 is not ours");
    is_str(pick.url, "http://127.0.0.1:5002", "k1's owner is 5002");
    ok(!rgm_peers_fill_source(p, k0, strlen(k0), &pick), "no fill source for a key not ours");
    is_int(rgm_peers_rank(p, k0, strlen(k0), 1, r, 4), 3, "rank of k0: 3 peers");
    ok(strcmp(r[1].url, "http://127.0.0.1:5001") == 0 && r[1].is_self, "self second for k0");
    is_int(rgm_peers_rank(p, k0, strlen(k0), 1, r, 2), 2, "rank honours max");

    /* 5003 refuses a connection: down at once, k0 moves to self, which fills from 5002. */
    rgm_peers_report(p, "http://127.0.0.1:5003", 0);
    rgm_peers_stats(p, &st);
    ok(st.n_up == 2 && st.n_marked_down == 1, "5003 down");
    is_int(rgm_peers_owner(p, k0, strlen(k0), &pick), 1, "k0 is now ours");
    ok(pick.is_self, "the owner pick is self");
    ok(rgm_peers_fill_source(p, k0, strlen(k0), &pick) &&
           strcmp(pick.url, "http://127.0.0.1:5002") == 0,
       "fill k0 from the next healthy peer, 5002");
    is_int(rgm_peers_rank(p, k0, strlen(k0), 0, r, 4), 3, "rank of every member: 3");
    ok(!r[0].is_up && strcmp(r[0].url, "http://127.0.0.1:5003") == 0, "the down one listed down");
    rgm_peers_report(p, "http://127.0.0.1:5003", 0);
    rgm_peers_stats(p, &st);
    is_int(st.n_marked_down, 1, "a second report while down changes nothing");
    rgm_peers_report(p, "http://127.0.0.1:5001", 0);
    rgm_peers_report(p, "http://127.0.0.1:9999", 0);
    rgm_peers_stats(p, &st);
    ok(st.n_up == 2, "reports about self or strangers are ignored");

    /* Probes: not ready twice (20 ms, then 40 ms backoff), ready the third time. */
    t0 = uv_now(&loop);
    RUN_UNTIL(&loop, (rgm_peers_stats(p, &st), st.n_up == 3));
    is_int(pl.n_calls, 3, "three probes until ready");
    is_str(pl.last_url, "http://127.0.0.1:5003", "the probes went to 5003");
    ok(uv_now(&loop) - t0 >= 20 + 40, "backoff between probes (%llu ms)",
       (unsigned long long)(uv_now(&loop) - t0));
    ok(st.n_marked_up == 1, "marked up once");
    is_int(rgm_peers_owner(p, k0, strlen(k0), &pick), 0, "k0 back to 5003");
    is_str(pick.url, "http://127.0.0.1:5003", "owner 5003 again");

    /* A forward that got an answer marks a down peer up without waiting for its probe. */
    rgm_peers_report(p, "http://127.0.0.1:5002", 0);
    rgm_peers_report(p, "http://127.0.0.1:5002", 1);
    rgm_peers_stats(p, &st);
    ok(st.n_up == 3 && st.n_marked_up == 2, "an answer marks 5002 up again");

    /* Every other peer down: everything is ours. */
    rgm_peers_report(p, "http://127.0.0.1:5002", 0);
    rgm_peers_report(p, "http://127.0.0.1:5003", 0);
    is_int(rgm_peers_owner(p, k1, strlen(k1), &pick), 1, "all others down: k1 served here");
    ok(!rgm_peers_fill_source(p, k1, strlen(k1), &pick), "and nobody to fill from");

    /* Close while a probe is pending: the callback waits for it. */
    pl.ready_after = 1000;
    RUN_UNTIL(&loop, pl.is_pending);
    ok(pl.is_pending, "a probe in flight");
    rgm_peers_close(p, on_peers_closed, &is_closed);
    RUN_UNTIL(&loop, is_closed);
    ok(is_closed, "closed after the probe ended");
    uv_close((uv_handle_t *)&pl.t, NULL);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "nothing left on the loop");
}

/* A set with no self (the node tier) ranks others only; a self not among peers is no member. */
static void test_no_self(void)
{
    static const char *const urls[] = {"http://127.0.0.1:5003", "http://127.0.0.1:5001"};
    const char *k0 = "sha256:0000000000000000000000000000000000000000000000000000000000000000";
    uv_loop_t loop;
    rgm_peers_opts_t o;
    rgm_peers_t *p;
    rgm_peer_pick_t pick;
    rgm_peers_stats_t st;
    int err, is_closed = 0;

    ok(uv_loop_init(&loop) == 0, "loop");
    memset(&o, 0, sizeof(o));
    o.urls = urls;
    o.n_urls = 2;
    o.self_url = "http://127.0.0.1:5002";
    p = rgm_peers_new(&loop, &o, &err);
    ok(p != NULL, "set with a self that is not listed");
    if (!p)
        return;
    rgm_peers_stats(p, &st);
    ok(!st.has_self && st.n_up == 2, "self unknown");
    is_int(rgm_peers_owner(p, k0, strlen(k0), &pick), 0, "k0 forwarded");
    is_str(pick.url, "http://127.0.0.1:5003", "to 5003");
    rgm_peers_report(p, "http://127.0.0.1:5003", 0);
    is_int(rgm_peers_owner(p, k0, strlen(k0), &pick), 0, "5003 down: still forwarded");
    is_str(pick.url, "http://127.0.0.1:5001", "to 5001");
    rgm_peers_report(p, "http://127.0.0.1:5001", 0);
    is_int(rgm_peers_owner(p, k0, strlen(k0), &pick), 1, "nobody up: served here");
    rgm_peers_close(p, on_peers_closed, &is_closed);
    RUN_UNTIL(&loop, is_closed);
    ok(is_closed, "closed (never started)");
    is_int(uv_loop_close(&loop), 0, "nothing left on the loop");

    /* find_self over static loopback peers: this host answers on 127.0.0.1:5001..5003; the
     * listen port picks the member. */
    ok(uv_loop_init(&loop) == 0, "loop");
    {
        static const char *const lo[] = {"http://127.0.0.1:5001", "http://127.0.0.1:5002",
                                         "http://127.0.0.1:5003"};
        struct sockaddr_storage port = laddr("0.0.0.0", 5002);
        rgm_peer_pick_t m;

        memset(&o, 0, sizeof(o));
        o.urls = lo;
        o.n_urls = 3;
        o.find_self = 1;
        o.listen = &port;
        o.n_listen = 1;
        p = rgm_peers_new(&loop, &o, &err);
        ok(p != NULL, "set with self found from interfaces");
        if (!p)
            return;
        ok(rgm_peers_member(p, 1, &m) == 0 && m.is_self && strcmp(m.url, lo[1]) == 0,
           "self is 127.0.0.1:5002");
        ok(rgm_peers_member(p, 0, &m) == 0 && !m.is_self, "5001 is not self");
        is_closed = 0;
        rgm_peers_close(p, on_peers_closed, &is_closed);
        RUN_UNTIL(&loop, is_closed);
        is_int(uv_loop_close(&loop), 0, "nothing left on the loop");
    }
}

/* ---- peers_dns through the system resolver ---- */

static void test_dns(void)
{
    uv_loop_t loop;
    rgm_peers_opts_t o;
    rgm_peers_t *p;
    rgm_peer_pick_t m;
    rgm_peers_stats_t st;
    struct sockaddr_storage port = laddr("0.0.0.0", 5999);
    int err, is_closed = 0;

    ok(uv_loop_init(&loop) == 0, "loop");
    memset(&o, 0, sizeof(o));
    o.dns_url = "http://LOCALHOST:5999";
    o.find_self = 1;
    o.listen = &port;
    o.n_listen = 1;
    o.dns_interval_ms = 30;
    p = rgm_peers_new(&loop, &o, &err);
    ok(p != NULL, "peers_dns set");
    if (!p)
        return;
    rgm_peers_stats(p, &st);
    is_int(st.n_members, 0, "no members before the first answer");
    ok(rgm_peers_start(p) == 0, "start");
    RUN_UNTIL(&loop, (rgm_peers_stats(p, &st), st.n_resolutions >= 3));
    ok(st.n_resolutions >= 3, "re-resolved every interval (%llu answers)",
       (unsigned long long)st.n_resolutions);
    is_int(st.n_members, 1, "localhost: one member (A record only)");
    ok(rgm_peers_member(p, 0, &m) == 0 && strcmp(m.url, "http://127.0.0.1:5999") == 0,
       "member http://127.0.0.1:5999 (the address, not the name)");
    ok(m.is_self, "which is self: a loopback address and a listen port");
    /* Health survives a refresh. */
    rgm_peers_close(p, on_peers_closed, &is_closed);
    RUN_UNTIL(&loop, is_closed);
    ok(is_closed, "closed, with a resolution maybe in flight");
    is_int(uv_loop_close(&loop), 0, "nothing left on the loop");
}

/* ---- the real probe: GET /readyz ---- */

struct tiny {
    uv_tcp_t srv;
    int status;     /* what /readyz answers */
    int is_endless; /* a 200 whose body never ends */
    int n_requests;
    char last_line[64];
};

struct tiny_conn {
    uv_tcp_t h;
    struct tiny *t;
    char buf[1024];
    size_t len;
    uv_write_t w;
    char resp[128];
};

static void on_tiny_closed(uv_handle_t *h)
{
    free(rgm_container_of((uv_tcp_t *)h, struct tiny_conn, h));
}

static char endless_chunk[16384];

static void on_tiny_written(uv_write_t *w, int status)
{
    struct tiny_conn *c = rgm_container_of(w, struct tiny_conn, w);
    uv_buf_t out = uv_buf_init(endless_chunk, sizeof(endless_chunk));

    if (status == 0 && c->t->is_endless && !uv_is_closing((uv_handle_t *)&c->h) &&
        uv_write(&c->w, (uv_stream_t *)&c->h, &out, 1, on_tiny_written) == 0)
        return;
    if (!uv_is_closing((uv_handle_t *)&c->h))
        uv_close((uv_handle_t *)&c->h, on_tiny_closed);
}

static void on_tiny_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    struct tiny_conn *c = rgm_container_of((uv_tcp_t *)h, struct tiny_conn, h);

    (void)hint;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - 1 - c->len));
}

static void on_tiny_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct tiny_conn *c = rgm_container_of((uv_tcp_t *)s, struct tiny_conn, h);
    uv_buf_t out;
    int n;
    size_t eol;

    (void)b;
    if (nread < 0) {
        uv_close((uv_handle_t *)&c->h, on_tiny_closed);
        return;
    }
    c->len += (size_t)nread;
    c->buf[c->len] = '\0';
    if (!strstr(c->buf, "\r\n\r\n"))
        return;
    (void)uv_read_stop(s);
    c->t->n_requests++;
    eol = strcspn(c->buf, "\r");
    (void)snprintf(c->t->last_line, sizeof(c->t->last_line), "%.*s", (int)eol, c->buf);
    if (c->t->is_endless)
        n = snprintf(c->resp, sizeof(c->resp),
                     "HTTP/1.1 200 X\r\nContent-Length: 4000000000\r\n\r\n");
    else
        n = snprintf(c->resp, sizeof(c->resp),
                     "HTTP/1.1 %d X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                     c->t->status);
    out = uv_buf_init(c->resp, (unsigned)n);
    if (uv_write(&c->w, s, &out, 1, on_tiny_written) < 0)
        uv_close((uv_handle_t *)&c->h, on_tiny_closed);
}

static void on_tiny_conn(uv_stream_t *srv, int status)
{
    struct tiny *t = rgm_container_of((uv_tcp_t *)srv, struct tiny, srv);
    struct tiny_conn *c;

    if (status < 0)
        return;
    c = rgm_calloc(1, sizeof(*c));
    c->t = t;
    (void)uv_tcp_init(srv->loop, &c->h);
    if (uv_accept(srv, (uv_stream_t *)&c->h) < 0 ||
        uv_read_start((uv_stream_t *)&c->h, on_tiny_alloc, on_tiny_read) < 0)
        uv_close((uv_handle_t *)&c->h, on_tiny_closed);
}

static void on_client_closed(void *ud)
{
    *(int *)ud = 1;
}

static void test_http_probe(void)
{
    uv_loop_t loop;
    struct tiny t;
    struct sockaddr_in sa;
    struct sockaddr_storage bound;
    int blen = sizeof(bound), err, is_closed = 0, is_client_closed = 0;
    char urls[2][64];
    const char *up[2];
    rgm_peers_opts_t o;
    rgm_peers_t *p;
    rgm_peers_stats_t st;
    rgm_client_t *cl;
    rgm_client_opts_t co;
    uv_tcp_t dead;
    int dead_port;

    ok(uv_loop_init(&loop) == 0, "loop");
    memset(&t, 0, sizeof(t));
    t.status = 503;
    (void)uv_ip4_addr("127.0.0.1", 0, &sa);
    ok(uv_tcp_init(&loop, &t.srv) == 0 && uv_tcp_bind(&t.srv, (struct sockaddr *)&sa, 0) == 0 &&
           uv_listen((uv_stream_t *)&t.srv, 8, on_tiny_conn) == 0,
       "tiny /readyz server");
    (void)uv_tcp_getsockname(&t.srv, (struct sockaddr *)&bound, &blen);
    (void)snprintf(urls[0], sizeof(urls[0]), "http://127.0.0.1:%d",
                   ntohs(((struct sockaddr_in *)&bound)->sin_port));
    /* A port nobody listens on: bind one, read its number, close it. */
    ok(uv_tcp_init(&loop, &dead) == 0 && uv_tcp_bind(&dead, (struct sockaddr *)&sa, 0) == 0,
       "a free port");
    blen = sizeof(bound);
    (void)uv_tcp_getsockname(&dead, (struct sockaddr *)&bound, &blen);
    dead_port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
    uv_close((uv_handle_t *)&dead, NULL);
    (void)snprintf(urls[1], sizeof(urls[1]), "http://127.0.0.1:%d", dead_port);
    up[0] = urls[0];
    up[1] = urls[1];

    memset(&co, 0, sizeof(co));
    co.connect_timeout_ms = 500;
    co.read_timeout_ms = 500;
    cl = rgm_client_new(&loop, &co);
    memset(&o, 0, sizeof(o));
    o.urls = up;
    o.n_urls = 2;
    o.client = cl;
    o.backoff_min_ms = 20;
    o.backoff_max_ms = 20;
    p = rgm_peers_new(&loop, &o, &err);
    ok(p && cl, "set over the tiny server and a dead port");
    if (!p)
        return;
    ok(rgm_peers_start(p) == 0, "start");
    rgm_peers_report(p, urls[0], 0);
    rgm_peers_report(p, urls[1], 0);
    RUN_UNTIL(&loop, t.n_requests >= 2);
    rgm_peers_stats(p, &st);
    ok(t.n_requests >= 2 && st.n_up == 0, "/readyz 503: stays down (%d probes)", t.n_requests);
    is_str(t.last_line, "GET /readyz HTTP/1.1", "the probe is GET /readyz");
    t.status = 200;
    RUN_UNTIL(&loop, (rgm_peers_stats(p, &st), st.n_up >= 1));
    is_int(st.n_up, 1, "/readyz 200: up; the dead port stays down");
    {
        rgm_peer_pick_t m0, m1;
        ok(rgm_peers_member(p, 0, &m0) == 0 && rgm_peers_member(p, 1, &m1) == 0, "members");
        ok((strcmp(m0.url, urls[0]) == 0 ? m0.is_up && !m1.is_up : m1.is_up && !m0.is_up),
           "the up one is the tiny server");
    }
    /* A 200 with an endless body: the probe gives up on it (not ready) and tries again. */
    t.is_endless = 1;
    t.n_requests = 0;
    rgm_peers_report(p, urls[0], 0);
    RUN_UNTIL(&loop, t.n_requests >= 2);
    rgm_peers_stats(p, &st);
    ok(t.n_requests >= 2 && st.n_up == 0,
       "/readyz endless body: the probe ends, not ready (%d probes)", t.n_requests);
    rgm_peers_close(p, on_peers_closed, &is_closed);
    RUN_UNTIL(&loop, is_closed);
    ok(is_closed, "closed with probes maybe in flight (cancelled)");
    rgm_client_close(cl, on_client_closed, &is_client_closed);
    uv_close((uv_handle_t *)&t.srv, NULL);
    RUN_UNTIL(&loop, is_client_closed);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "nothing left on the loop");
}

int main(void)
{
    if (rgm_log_open(NULL, getenv("RGM_TEST_DEBUG") ? RGM_LOG_DEBUG : RGM_LOG_ERROR) < 0)
        return 1;
    test_from_addrinfo();
    test_match_self();
    test_new_errors();
    test_owner_and_health();
    test_no_self();
    test_dns();
    test_http_probe();
    is_int(closed_count, 5, "every close callback ran once");
    return tap_done();
}
