/* Unit tests for src/cluster/forward.c, over real sockets on 127.0.0.1 in one loop: two "owner"
 * servers (http/server) with canned answers, a "front" server that forwards everything, and
 * http/client as the client. Checks the relayed status, headers, X-Cache and bytes; the headers
 * passed on (Authorization, Range, Accept, the query, the hop and fill headers); HEAD; a 401;
 * a dead peer (left to the caller, marked down); a body cut mid-way and resumed from the next
 * member; a cut that cannot be resumed; a client that leaves; and the per-peer counters. */
#include "cluster/forward.h"

#include <inttypes.h>
#include <stdarg.h>

#include <uv.h>

#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "tap.h"

#define BIG (3 * 1024 * 1024 + 17)

static uv_loop_t loop;
static rgm_config_t cfg;
static unsigned char *big;
static rgm_client_t *client;
static rgm_peers_t *peers;
static int cutter_port; /* the owner server on this port cuts /v2/r/blobs/big half-way */

/* ---- the owners ---- */

struct owner {
    rgm_server_t *srv;
    int port;
    int n_requests;
};
static struct owner owners[2];

struct cut_state {
    rgm_req_t *req;
};

static void on_half_written(rgm_req_t *req, int status, void *ud)
{
    (void)status;
    (void)ud;
    rgm_resp_abort(req, "test cut");
}

static void serve_big(rgm_req_t *req, int is_cutter)
{
    const char *range = rgm_req_header(req, "Range");
    uint64_t first = 0, last = BIG - 1;
    char h[256];
    int status = 200;

    if (range) {
        if (rgm_fwd_parse_range(range, &first, &last) < 0 || first >= BIG) {
            rgm_resp_simple(req, 416, NULL, NULL, NULL, 0);
            return;
        }
        if (last >= BIG)
            last = BIG - 1;
        status = 206;
    }
    if (status == 206)
        (void)snprintf(h, sizeof(h),
                       "Content-Type: application/octet-stream\r\nDocker-Content-Digest: "
                       "sha256:big\r\nContent-Range: bytes %" PRIu64 "-%" PRIu64 "/%d\r\n",
                       first, last, BIG);
    else
        (void)snprintf(h, sizeof(h),
                       "Content-Type: application/octet-stream\r\n"
                       "Docker-Content-Digest: sha256:big\r\nAccept-Ranges: bytes\r\n");
    rgm_req_set_cache_status(req, "HIT");
    if (rgm_resp_start(req, status, h, (int64_t)(last - first + 1)) < 0)
        return;
    if (is_cutter) {
        if (rgm_resp_write(req, big + first, (last - first + 1) / 2, on_half_written, NULL) < 0)
            rgm_resp_abort(req, "write failed");
        return;
    }
    if (rgm_resp_write(req, big + first, last - first + 1, NULL, NULL) < 0) {
        rgm_resp_abort(req, "write failed");
        return;
    }
    rgm_resp_finish(req);
}

static void on_owner_request(rgm_req_t *req, void *ud)
{
    struct owner *o = ud;
    const char *path = rgm_req_path(req);
    char body[1024];
    const char *auth;
    char accept[256];

    o->n_requests++;
    if (strcmp(path, "/v2/r/blobs/big") == 0) {
        serve_big(req, o->port == cutter_port || cutter_port == -1);
        return;
    }
    if (strcmp(path, "/v2/r/manifests/private") == 0) {
        auth = rgm_req_header(req, "Authorization");
        if (auth && strcmp(auth, "Bearer good") == 0) {
            rgm_req_set_cache_status(req, "MISS");
            rgm_resp_simple(req, 200, "Docker-Content-Digest: sha256:priv\r\n",
                            "application/vnd.oci.image.manifest.v1+json", "secret", 6);
        } else {
            rgm_resp_simple(req, 401,
                            "WWW-Authenticate: Bearer realm=\"http://auth/token\"\r\n"
                            "Docker-Distribution-Api-Version: registry/2.0\r\n",
                            "application/json", "{}", 2);
        }
        return;
    }
    if (strcmp(path, "/echo") == 0) {
        if (rgm_req_header_list(req, "Accept", accept, sizeof(accept)) != 1)
            (void)snprintf(accept, sizeof(accept), "-");
        (void)snprintf(body, sizeof(body), "%s hop=%s oic=%s auth=%s range=%s accept=%s query=%s",
                       rgm_req_method_name(req),
                       rgm_req_header(req, RGM_HDR_HOP) ? rgm_req_header(req, RGM_HDR_HOP) : "-",
                       rgm_req_header(req, RGM_HDR_ONLY_IF_CACHED)
                           ? rgm_req_header(req, RGM_HDR_ONLY_IF_CACHED)
                           : "-",
                       rgm_req_header(req, "Authorization") ? rgm_req_header(req, "Authorization")
                                                            : "-",
                       rgm_req_header(req, "Range") ? rgm_req_header(req, "Range") : "-", accept,
                       rgm_req_query(req));
        rgm_req_set_cache_status(req, "NONE");
        rgm_resp_simple(req, 200, "X-Cache: WEIRD\r\n", "text/plain", body, strlen(body));
        return;
    }
    rgm_resp_error(req, 404, "NAME_UNKNOWN", "no such thing", NULL);
}

/* ---- the front ---- */

static char front_target[RGM_PEER_URL_MAX]; /* where the front forwards */
static int front_is_fill;
static int front_with_key;
static enum rgm_fwd_result last_result = (enum rgm_fwd_result) - 1;
static int n_results;

static void on_fwd_done(rgm_req_t *req, enum rgm_fwd_result result, void *ud)
{
    (void)ud;
    last_result = result;
    n_results++;
    if (result == RGM_FWD_UNREACHABLE)
        rgm_resp_simple(req, 299, NULL, "text/plain", "local", 5);
}

static void on_front_request(rgm_req_t *req, void *ud)
{
    rgm_fwd_opts_t o;

    (void)ud;
    memset(&o, 0, sizeof(o));
    o.client = client;
    o.peers = peers;
    o.is_fill = front_is_fill;
    if (front_with_key) {
        o.key = "sha256:big";
        o.key_len = strlen(o.key);
    }
    if (rgm_fwd_start(req, front_target, &o, on_fwd_done, NULL) < 0)
        rgm_resp_simple(req, 500, NULL, NULL, NULL, 0);
}

/* ---- the client ---- */

struct result {
    int is_done;
    int err;
    int status;
    char xcache[32];
    char digest[64];
    char www_auth[128];
    char content_range[64];
    char content_type[96];
    int64_t content_length;
    unsigned char *body;
    size_t len;
    int cancel_after; /* cancel the request after this many body bytes (0: never) */
};

static int on_cli_head(rgm_upreq_t *r, int status, void *ud)
{
    struct result *res = ud;
    const char *v;

    res->status = status;
    res->content_length = rgm_upreq_content_length(r);
#define COPY_HDR(name, field)                                                                      \
    v = rgm_upreq_header(r, name);                                                                 \
    (void)snprintf(res->field, sizeof(res->field), "%s", v ? v : "")
    COPY_HDR("X-Cache", xcache);
    COPY_HDR("Docker-Content-Digest", digest);
    COPY_HDR("WWW-Authenticate", www_auth);
    COPY_HDR("Content-Range", content_range);
    COPY_HDR("Content-Type", content_type);
#undef COPY_HDR
    return 0;
}

static int on_cli_body(rgm_upreq_t *r, const char *data, size_t len, void *ud)
{
    struct result *res = ud;

    res->body = rgm_realloc(res->body, res->len + len + 1);
    memcpy(res->body + res->len, data, len);
    res->len += len;
    res->body[res->len] = '\0';
    if (res->cancel_after && res->len >= (size_t)res->cancel_after) {
        rgm_upreq_cancel(r);
        res->cancel_after = 0;
    }
    return 0;
}

static void on_cli_done(rgm_upreq_t *r, int err, void *ud)
{
    struct result *res = ud;

    (void)r;
    res->err = err;
    res->is_done = 1;
}

#define RUN_UNTIL(cond)                                                                            \
    do {                                                                                           \
        uint64_t until_ = uv_hrtime() + 10000000000ULL;                                            \
        while (!(cond) && uv_hrtime() < until_)                                                    \
            (void)uv_run(&loop, UV_RUN_ONCE);                                                      \
    } while (0)

static int front_port;

/* GET (or HEAD) path of the front with extra headers "Name", "value", ..., NULL. */
static void fetch(struct result *res, const char *method, const char *path, ...)
{
    static const rgm_upreq_cbs_t cbs = {on_cli_head, on_cli_body, on_cli_done};
    char url[256];
    rgm_upreq_t *r;
    va_list ap;
    const char *name, *value;
    int cancel_after = res->cancel_after;

    memset(res, 0, sizeof(*res));
    res->cancel_after = cancel_after;
    (void)snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", front_port, path);
    r = rgm_upreq_new(client, method, url, NULL);
    va_start(ap, path);
    while ((name = va_arg(ap, const char *)) != NULL) {
        value = va_arg(ap, const char *);
        rgm_upreq_add_header(r, name, value);
    }
    va_end(ap);
    if (!r || rgm_upreq_start(r, &cbs, res) < 0) {
        res->is_done = 1;
        res->err = UV_EINVAL;
        return;
    }
    RUN_UNTIL(res->is_done);
}

static char u_owner[2][64];

static void owner_url(int i, char *out, size_t outlen)
{
    (void)snprintf(out, outlen, "http://127.0.0.1:%d", owners[i].port);
}

static int url_port(const char *url)
{
    rgm_url_t u;

    return rgm_url_parse(url, &u) == 0 ? u.port : 0;
}

/* ---- scenarios ---- */

static void test_relay(void)
{
    struct result res = {0};

    owner_url(0, front_target, sizeof(front_target));
    fetch(&res, "GET", "/v2/r/blobs/big", NULL);
    ok(res.is_done && res.err == 0, "big: complete (%s)", res.err ? uv_strerror(res.err) : "ok");
    is_int(res.status, 200, "big: 200 relayed");
    ok(res.len == BIG && memcmp(res.body, big, BIG) == 0, "big: every byte right (%zu)", res.len);
    is_int(res.content_length, BIG, "big: Content-Length relayed");
    is_str(res.xcache, "HIT", "big: the owner's X-Cache");
    is_str(res.digest, "sha256:big", "big: Docker-Content-Digest relayed");
    is_str(res.content_type, "application/octet-stream", "big: Content-Type relayed");
    is_int(last_result, RGM_FWD_DONE, "big: forward done");
    free(res.body);

    fetch(&res, "GET", "/v2/r/blobs/big", "Range", "bytes=1000-1999", NULL);
    is_int(res.status, 206, "range: 206 relayed");
    is_str(res.content_range, "bytes 1000-1999/3145745", "range: Content-Range relayed");
    ok(res.len == 1000 && memcmp(res.body, big + 1000, 1000) == 0, "range: the bytes asked");
    free(res.body);

    fetch(&res, "HEAD", "/v2/r/blobs/big", NULL);
    ok(res.status == 200 && res.len == 0 && res.content_length == BIG,
       "HEAD: 200, length, no body");
    free(res.body);

    fetch(&res, "GET", "/echo?ns=docker.io&x=%2F", "Authorization", "Bearer abc", "Range",
          "bytes=5-", "Accept", "application/a", "Accept", "application/b", NULL);
    is_str((char *)res.body,
           "GET hop=1 oic=- auth=Bearer abc range=bytes=5- accept=application/a, application/b "
           "query=ns=docker.io&x=%2F",
           "passed on: Authorization, Range, both Accept lines, the query, the hop header");
    is_str(res.xcache, "WEIRD", "an X-Cache value the server does not know, unchanged");
    free(res.body);
    fetch(&res, "GET", "/echo", NULL);
    is_str((char *)res.body, "GET hop=1 oic=- auth=- range=- accept=- query=",
           "nothing invented when the client sent nothing");
    free(res.body);
    front_is_fill = 1;
    fetch(&res, "GET", "/echo", NULL);
    is_str((char *)res.body, "GET hop=1 oic=1 auth=- range=- accept=- query=",
           "a fill carries the hop and the only-if-cached headers");
    front_is_fill = 0;
    free(res.body);

    fetch(&res, "GET", "/v2/r/manifests/private", NULL);
    is_int(res.status, 401, "private without credentials: the owner's 401");
    is_str(res.www_auth, "Bearer realm=\"http://auth/token\"", "401: WWW-Authenticate relayed");
    free(res.body);
    fetch(&res, "GET", "/v2/r/manifests/private", "Authorization", "Bearer good", NULL);
    ok(res.status == 200 && res.len == 6 && memcmp(res.body, "secret", 6) == 0,
       "private with the right credentials: served");
    is_str(res.content_type, "application/vnd.oci.image.manifest.v1+json", "manifest type");
    free(res.body);

    fetch(&res, "GET", "/v2/nothing/manifests/x", NULL);
    is_int(res.status, 404, "404 relayed");
    free(res.body);
}

static void test_counters(void)
{
    rgm_peer_pick_t m;
    size_t i;
    int found = 0;
    char url[64];

    owner_url(0, url, sizeof(url));
    for (i = 0; rgm_peers_member(peers, i, &m) == 0; i++) {
        if (strcmp(m.url, url) != 0)
            continue;
        found = 1;
        ok(m.n_forwarded == 8, "counters: 8 forwarded to owner 0 (%" PRIu64 ")", m.n_forwarded);
        is_int(m.n_fills, 1, "counters: one fill");
        ok(m.bytes_forwarded > BIG + 1000, "counters: bytes (%" PRIu64 ")", m.bytes_forwarded);
    }
    ok(found, "counters: owner 0 is a member");
}

static void test_dead_peer(void)
{
    struct result res = {0};
    rgm_peers_stats_t before, after;
    uv_tcp_t t;
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    (void)uv_ip4_addr("127.0.0.1", 0, &sa);
    ok(uv_tcp_init(&loop, &t) == 0 && uv_tcp_bind(&t, (struct sockaddr *)&sa, 0) == 0 &&
           uv_tcp_getsockname(&t, (struct sockaddr *)&ss, &len) == 0,
       "a free port");
    (void)snprintf(front_target, sizeof(front_target), "http://127.0.0.1:%d",
                   ntohs(((struct sockaddr_in *)&ss)->sin_port));
    uv_close((uv_handle_t *)&t, NULL);
    rgm_peers_stats(peers, &before);
    fetch(&res, "GET", "/v2/r/blobs/big", NULL);
    is_int(last_result, RGM_FWD_UNREACHABLE, "dead peer: unreachable, left to the caller");
    ok(res.status == 299 && res.len == 5, "dead peer: the caller answered (status %d)", res.status);
    rgm_peers_stats(peers, &after);
    is_int(after.n_marked_down, before.n_marked_down, "a non-member's failure is not counted");
    free(res.body);
}

static void test_resume(void)
{
    struct result res = {0};
    rgm_peer_pick_t first;
    rgm_peers_stats_t st;

    /* The member ranked first for the key cuts half-way; the front resumes from the other. */
    ok(rgm_peers_rank(peers, "sha256:big", 10, 1, &first, 1) == 1, "a first member for the key");
    (void)snprintf(front_target, sizeof(front_target), "%s", first.url);
    cutter_port = url_port(first.url);
    front_with_key = 1;
    owners[0].n_requests = owners[1].n_requests = 0;
    fetch(&res, "GET", "/v2/r/blobs/big", NULL);
    ok(res.is_done && res.err == 0, "cut: the client still gets a complete answer (%s)",
       res.err ? uv_strerror(res.err) : "ok");
    is_int(res.status, 200, "cut: status 200");
    ok(res.len == BIG && memcmp(res.body, big, BIG) == 0, "cut: every byte right (%zu)", res.len);
    is_int(last_result, RGM_FWD_DONE, "cut: forward done after a resume");
    ok(owners[0].n_requests == 1 && owners[1].n_requests == 1, "cut: one request to each owner");
    rgm_peers_stats(peers, &st);
    is_int(st.n_up, 1, "cut: the cutter is marked down");
    free(res.body);

    /* With the other one cutting too, nobody has the rest: the client sees a cut. */
    cutter_port = -1; /* both cut: see on_owner_request */
    rgm_peers_report(peers, first.url, 1);
    fetch(&res, "GET", "/v2/r/blobs/big", NULL);
    ok(res.err != 0 || res.len < BIG, "both cut: the client sees a truncated answer (%zu)",
       res.len);
    free(res.body);
    cutter_port = 0;
    rgm_peers_report(peers, u_owner[0], 1);
    rgm_peers_report(peers, u_owner[1], 1);

    /* No key (no resume candidates): a cut is a cut. */
    front_with_key = 0;
    rgm_peers_report(peers, first.url, 1);
    cutter_port = url_port(first.url);
    fetch(&res, "GET", "/v2/r/blobs/big", NULL);
    ok(res.err != 0 && res.len < BIG, "no key: truncated (%zu bytes, %s)", res.len,
       uv_strerror(res.err));
    is_int(last_result, RGM_FWD_CUT, "no key: forward cut");
    free(res.body);
    cutter_port = 0;
    rgm_peers_report(peers, first.url, 1);
}

static void test_client_gone(void)
{
    struct result res = {0};

    owner_url(1, front_target, sizeof(front_target));
    n_results = 0;
    res.cancel_after = 1;
    fetch(&res, "GET", "/v2/r/blobs/big", NULL);
    is_int(res.err, UV_ECANCELED, "the client left after its first bytes");
    RUN_UNTIL(n_results == 1);
    is_int(last_result, RGM_FWD_CLIENT_GONE, "the forward saw the client go");
    free(res.body);
}

static void test_ranges(void)
{
    uint64_t f = 0, l = 0, t = 0;

    ok(rgm_fwd_parse_range("bytes=0-", &f, &l) == 0 && f == 0 && l == UINT64_MAX, "range 0-");
    ok(rgm_fwd_parse_range("bytes=5-9", &f, &l) == 0 && f == 5 && l == 9, "range 5-9");
    ok(rgm_fwd_parse_range("bytes=9-5", &f, &l) < 0, "range 9-5 refused");
    ok(rgm_fwd_parse_range("bytes=-5", &f, &l) < 0, "suffix range refused");
    ok(rgm_fwd_parse_range("bytes=1-2,4-5", &f, &l) < 0, "range list refused");
    ok(rgm_fwd_parse_range("items=1-2", &f, &l) < 0, "other unit refused");
    ok(rgm_fwd_parse_range("bytes=a-2", &f, &l) < 0, "garbage refused");
    ok(rgm_fwd_parse_range(NULL, &f, &l) < 0, "NULL refused");
    ok(rgm_fwd_parse_content_range("bytes 5-9/10", &f, &l, &t) == 0 && f == 5 && l == 9 && t == 10,
       "content-range 5-9/10");
    ok(rgm_fwd_parse_content_range("bytes 5-9/*", &f, &l, &t) == 0 && t == UINT64_MAX,
       "content-range total *");
    ok(rgm_fwd_parse_content_range("bytes 5-10/10", &f, &l, &t) < 0, "last past total refused");
    ok(rgm_fwd_parse_content_range("bytes */10", &f, &l, &t) < 0, "unsatisfied form refused");
    ok(rgm_fwd_parse_content_range("bytes 5-9", &f, &l, &t) < 0, "no total refused");
}

static int n_stopped;

static void on_srv_down(rgm_server_t *srv, void *ud)
{
    (void)srv;
    (void)ud;
    n_stopped++;
}

static void on_closed(void *ud)
{
    (*(int *)ud)++;
}

int main(void)
{
    rgm_server_t *front;
    rgm_peers_opts_t po;
    const char *urls[2];
    int err, i, n_closed = 0;

    if (rgm_log_open(NULL, getenv("RGM_TEST_DEBUG") ? RGM_LOG_DEBUG : RGM_LOG_ERROR) < 0)
        return 1;
    test_ranges();
    ok(uv_loop_init(&loop) == 0, "loop");
    rgm_config_init(&cfg);
    cfg.access_log = 0;
    big = rgm_malloc(BIG);
    for (i = 0; i < BIG; i++)
        big[i] = (unsigned char)(i * 7 + (i >> 13));
    client = rgm_client_new(&loop, NULL);
    for (i = 0; i < 2; i++) {
        owners[i].srv = rgm_server_new(&loop, &cfg, on_owner_request, &owners[i]);
        ok(owners[i].srv && rgm_server_listen(owners[i].srv, "127.0.0.1:0") == 0, "owner %d", i);
        owners[i].port = rgm_server_port(owners[i].srv, 0);
    }
    front = rgm_server_new(&loop, &cfg, on_front_request, NULL);
    ok(front && rgm_server_listen(front, "127.0.0.1:0") == 0, "front");
    front_port = rgm_server_port(front, 0);
    owner_url(0, u_owner[0], sizeof(u_owner[0]));
    owner_url(1, u_owner[1], sizeof(u_owner[1]));
    urls[0] = u_owner[0];
    urls[1] = u_owner[1];
    memset(&po, 0, sizeof(po));
    po.urls = urls;
    po.n_urls = 2;
    po.client = client;
    po.backoff_min_ms = 60000; /* no probes during the test: reports decide */
    peers = rgm_peers_new(&loop, &po, &err);
    ok(peers && rgm_peers_start(peers) == 0, "peers: the two owners");

    test_relay();
    test_counters();
    test_dead_peer();
    test_resume();
    test_client_gone();

    rgm_peers_close(peers, on_closed, &n_closed);
    rgm_server_shutdown(front, on_srv_down, NULL);
    rgm_server_shutdown(owners[0].srv, on_srv_down, NULL);
    rgm_server_shutdown(owners[1].srv, on_srv_down, NULL);
    RUN_UNTIL(n_stopped == 3 && n_closed == 1);
    rgm_client_close(client, on_closed, &n_closed);
    RUN_UNTIL(n_closed == 2);
    rgm_server_free(front);
    rgm_server_free(owners[0].srv);
    rgm_server_free(owners[1].srv);
    (void)uv_run(&loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(&loop), 0, "nothing left on the loop");
    rgm_config_free(&cfg);
    free(big);
    return tap_done();
}
