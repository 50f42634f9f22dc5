/* Unit tests for src/http/reqhead.c: llhttp with the server's request callbacks, fed from memory
 * (whole, or one byte per call): the target split into path and query, headers (trimmed, case-
 * insensitive, joined lists), keep-alive, the URL and header limits at and past their edges,
 * refused bodies and CONNECT, and pipelined requests. No sockets and no loop. */
#include "http/reqhead.h"

#include <uv.h>
#include <llhttp.h>

#include "tap.h"

static rgm_config_t cfg;
static rgm_server_t srv;
static struct conn conn;

static void conn_reset(void)
{
    rgm_req_free(conn.req);
    memset(&conn, 0, sizeof(conn));
    conn.srv = &srv;
    snprintf(conn.client, sizeof(conn.client), "127.0.0.1:4242");
    llhttp_init(&conn.parser, HTTP_REQUEST, &srv.settings);
}

/* Parse s on a fresh connection, all at once (step 0) or step bytes per call. Returns the
 * result of the call that stopped, as the connection's read path sees it. */
static llhttp_errno_t parse(const char *s, size_t step)
{
    const size_t len = strlen(s);
    size_t off = 0;
    llhttp_errno_t err = HPE_OK;

    conn_reset();
    if (step == 0)
        return llhttp_execute(&conn.parser, s, len);
    while (off < len && err == HPE_OK) {
        const size_t n = len - off < step ? len - off : step;
        err = llhttp_execute(&conn.parser, s + off, n);
        off += n;
    }
    return err;
}

static void test_targets(void)
{
    static const struct {
        const char *method;
        const char *target;
        const char *path;
        const char *query;
    } t[] = {
        {"GET", "/v2/x/blobs/sha256:ab?n=1&m=2", "/v2/x/blobs/sha256:ab", "n=1&m=2"},
        {"GET", "/", "/", ""},
        {"GET", "/a?", "/a", ""},
        {"GET", "/a#frag", "/a", ""},
        {"GET", "/a?b=1#frag?x", "/a", "b=1"},
        {"GET", "/%2e%2e/x%20y", "/%2e%2e/x%20y", ""},
        {"GET", "//double//slash", "//double//slash", ""},
        {"GET", "http://h:5000/v2/?x=1", "/v2/", "x=1"},
        {"GET", "https://h", "/", ""},
        {"GET", "http://h?q=1", "/", "q=1"},
        {"GET", "http://h/p#f", "/p", ""},
        {"HEAD", "http://u@h/v2/a/manifests/t?ns=docker.io", "/v2/a/manifests/t", "ns=docker.io"},
        {"OPTIONS", "*", "*", ""},
    };
    size_t i;
    size_t step;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        for (step = 0; step <= 1; step++) {
            char s[256];
            llhttp_errno_t err;

            snprintf(s, sizeof(s), "%s %s HTTP/1.1\r\nHost: h\r\n\r\n", t[i].method, t[i].target);
            err = parse(s, step);
            is_int(err, HPE_PAUSED, "%s %s (step %zu): one message, paused", t[i].method,
                   t[i].target, step);
            if (err != HPE_PAUSED || !conn.req)
                continue;
            is_str(rgm_req_path(conn.req), t[i].path, "%s (step %zu): path", t[i].target, step);
            is_str(rgm_req_query(conn.req), t[i].query, "%s (step %zu): query", t[i].target, step);
            is_str(rgm_req_method_name(conn.req), t[i].method, "%s: method name", t[i].target);
        }
    }
}

static void test_headers(void)
{
    static const char req[] = "GET /h HTTP/1.1\r\n"
                              "Host: example\r\n"
                              "X-Test:  hello world \t \r\n"
                              "X-Empty:\r\n"
                              "Accept: a/b\r\n"
                              "accept: c/d, e/f\r\n"
                              "X-Other: 1\r\n"
                              "ACCEPT: g/h\r\n"
                              "\r\n";
    static const char joined[] = "a/b, c/d, e/f, g/h";
    char out[64];
    size_t step;

    for (step = 0; step <= 1; step++) {
        ok(parse(req, step) == HPE_PAUSED && conn.req, "headers (step %zu): parsed", step);
        if (!conn.req)
            return;
        is_str(rgm_req_header(conn.req, "x-test"), "hello world",
               "headers (step %zu): value trimmed, name case-insensitive", step);
        is_str(rgm_req_header(conn.req, "X-Empty"), "", "headers (step %zu): empty value", step);
        is_str(rgm_req_header(conn.req, "Accept"), "a/b", "headers (step %zu): first of several",
               step);
        ok(rgm_req_header(conn.req, "X-Absent") == NULL, "headers (step %zu): absent", step);
        ok(rgm_req_header(conn.req, "X-Tes") == NULL && rgm_req_header(conn.req, "X-Test2") == NULL,
           "headers (step %zu): whole names only", step);
        is_int(rgm_req_header_list(conn.req, "ACCEPT", out, sizeof(out)), 1,
               "header list (step %zu): found", step);
        is_str(out, joined, "header list (step %zu): joined with \", \"", step);
    }
    is_int(rgm_req_header_list(conn.req, "Accept", out, sizeof(joined)), 1,
           "header list: exactly enough room");
    is_str(out, joined, "header list: exactly enough room, whole");
    is_int(rgm_req_header_list(conn.req, "Accept", out, sizeof(joined) - 1), UV_ENOBUFS,
           "header list: one byte short");
    is_int(rgm_req_header_list(conn.req, "Accept", out, 0), UV_ENOBUFS, "header list: no room");
    is_int(rgm_req_header_list(conn.req, "X-Absent", out, sizeof(out)), 0, "header list: absent");
    is_str(out, "", "header list: absent gives \"\"");
    is_int(rgm_req_header_list(conn.req, "X-Other", out, 2), 1, "header list: one value fits");
    is_str(out, "1", "header list: one value");
}

static void test_reqhead_fields(void)
{
    uint64_t id;

    ok(parse("GET /x HTTP/1.1\r\n\r\n", 0) == HPE_PAUSED && conn.req, "fields: parsed");
    if (!conn.req)
        return;
    is_int(rgm_req_method(conn.req), RGM_M_GET, "fields: GET");
    is_str(rgm_req_client(conn.req), "127.0.0.1:4242", "fields: client of the connection");
    ok(conn.req->c == &conn, "fields: request points at its connection");
    ok(conn.req->sf.fd == -1, "fields: no file body");
    ok(!conn.is_head_started, "fields: head no longer in progress after the message");
    ok(conn.req->is_keep_alive, "fields: HTTP/1.1 keeps alive");
    rgm_req_set_cache_status(conn.req, "HIT");
    is_str(conn.req->cache_status, "HIT", "fields: cache status");
    id = rgm_req_id(conn.req);
    ok(parse("HEAD /x HTTP/1.1\r\n\r\n", 0) == HPE_PAUSED && conn.req, "fields: second parsed");
    if (!conn.req)
        return;
    is_int(rgm_req_method(conn.req), RGM_M_HEAD, "fields: HEAD");
    ok(rgm_req_id(conn.req) > id, "fields: ids increase");
    ok(parse("DELETE /x HTTP/1.1\r\n\r\n", 0) == HPE_PAUSED && conn.req,
       "fields: a write method without a body parses");
    if (conn.req) {
        is_int(rgm_req_method(conn.req), RGM_M_OTHER, "fields: DELETE is OTHER");
        is_str(rgm_req_method_name(conn.req), "DELETE", "fields: DELETE by name");
    }
    ok(parse("POST /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0) == HPE_PAUSED,
       "fields: POST with an empty body parses");

    ok(parse("GET /x HTTP/1.1\r\nHost: h\r\n", 0) == HPE_OK && conn.is_head_started,
       "incomplete head: head in progress");
    ok(parse("GET /x HTTP/1.0\r\n\r\n", 0) == HPE_PAUSED && !conn.req->is_keep_alive,
       "HTTP/1.0: not kept alive");
    ok(parse("GET /x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0) == HPE_PAUSED &&
           conn.req->is_keep_alive,
       "HTTP/1.0 with keep-alive: kept");
    ok(parse("GET /x HTTP/1.1\r\nConnection: close\r\n\r\n", 0) == HPE_PAUSED &&
           !conn.req->is_keep_alive,
       "Connection: close: not kept");
    ok(parse("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0) ==
               HPE_PAUSED &&
           conn.req && strcmp(rgm_req_path(conn.req), "/ws") == 0,
       "Upgrade: served as a plain request, never HPE_PAUSED_UPGRADE");
}

static void check_refused(const char *s, int status, const char *code, const char *what)
{
    size_t step;

    for (step = 0; step <= 1; step++) {
        const llhttp_errno_t err = parse(s, step);

        ok(err != HPE_OK && err != HPE_PAUSED, "%s (step %zu): parse error (%s)", what, step,
           llhttp_errno_name(err));
        is_int(conn.err_status, status, "%s (step %zu): status", what, step);
        is_str(conn.err_code, code, "%s (step %zu): code", what, step);
    }
}

/* Requests with a run of n filler bytes, formatted into one buffer (n < FILL). */
#define FILL 9000
static char fill[FILL];
static char big[FILL + 256];

#define WITH_FILL(fmt, n) (snprintf(big, sizeof(big), (fmt), (int)(n), fill), (const char *)big)

static void test_limits(void)
{
    char many[2048];
    size_t i;
    size_t off;
    const char *s;

    cfg.max_url_len = 16;
    cfg.max_headers = 3;
    cfg.max_header_bytes = 64;

    s = WITH_FILL("GET /%.*s HTTP/1.1\r\n\r\n", 15); /* 16 bytes of URL */
    ok(parse(s, 0) == HPE_PAUSED && parse(s, 1) == HPE_PAUSED, "URL at the limit: accepted");
    s = WITH_FILL("GET /%.*s HTTP/1.1\r\n\r\n", 16);
    check_refused(s, 414, "UNSUPPORTED", "URL one over the limit");

    off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\n");
    for (i = 0; i < 3; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "H%zu: v\r\n", i);
    snprintf(many + off, sizeof(many) - off, "\r\n");
    ok(parse(many, 0) == HPE_PAUSED && parse(many, 1) == HPE_PAUSED, "3 headers: accepted");
    snprintf(many + off, sizeof(many) - off, "H3: v\r\n\r\n");
    check_refused(many, 431, "UNSUPPORTED", "4 headers of 3");
    is_str(conn.err_msg, "too many request headers", "4 headers: the count is the reason");

    /* a header counts its name, its value and 4 bytes of ": " and CRLF */
    s = WITH_FILL("GET / HTTP/1.1\r\nX: %.*s\r\n\r\n", 59);
    ok(parse(s, 0) == HPE_PAUSED && parse(s, 1) == HPE_PAUSED, "64 header bytes: accepted");
    s = WITH_FILL("GET / HTTP/1.1\r\nX: %.*s\r\n\r\n", 60);
    check_refused(s, 431, "UNSUPPORTED", "65 header bytes");
    is_str(conn.err_msg, "request headers too large", "65 header bytes: the size is the reason");
    s = WITH_FILL("GET / HTTP/1.1\r\n%.*s: v\r\n\r\n", 60);
    check_refused(s, 431, "UNSUPPORTED", "a long header name counts too");

    /* 0 in the configuration: the defaults (8192 bytes of URL) */
    cfg.max_url_len = 0;
    s = WITH_FILL("GET /%.*s HTTP/1.1\r\n\r\n", 8191);
    ok(parse(s, 0) == HPE_PAUSED, "default URL limit: 8192 accepted");
    s = WITH_FILL("GET /%.*s HTTP/1.1\r\n\r\n", 8192);
    check_refused(s, 414, "UNSUPPORTED", "default URL limit: 8193");
    cfg.max_headers = 0;
    cfg.max_header_bytes = 0;
    off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\n");
    for (i = 0; i < 101; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "H%zu: v\r\n", i);
    snprintf(many + off, sizeof(many) - off, "\r\n");
    check_refused(many, 431, "UNSUPPORTED", "default header count: 101");

    check_refused("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 400, "UNSUPPORTED",
                  "GET with a body");
    check_refused("HEAD / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                  "UNSUPPORTED", "HEAD with a chunked body");
    check_refused("POST /x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", 405, "UNSUPPORTED",
                  "POST with a body");
    check_refused("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n", 400, "UNSUPPORTED", "CONNECT");
    ok(parse("GARBAGE\r\n\r\n", 0) != HPE_PAUSED && conn.err_status == 0,
       "malformed request line: llhttp's error, not ours");
}

static void test_pipeline(void)
{
    static const char two[] = "GET /one?n=1 HTTP/1.1\r\n\r\nHEAD /two HTTP/1.1\r\nX: 2\r\n\r\n";
    const char *pos;
    llhttp_errno_t err;

    err = parse(two, 0);
    ok(err == HPE_PAUSED && conn.req && strcmp(rgm_req_path(conn.req), "/one") == 0,
       "pipeline: the first request alone");
    pos = llhttp_get_error_pos(&conn.parser);
    ok(pos == two + strlen("GET /one?n=1 HTTP/1.1\r\n\r\n"), "pipeline: stopped after it");
    rgm_req_free(conn.req); /* as the connection does once the response is done */
    conn.req = NULL;
    llhttp_resume(&conn.parser);
    err = llhttp_execute(&conn.parser, pos, strlen(pos));
    ok(err == HPE_PAUSED && conn.req && rgm_req_method(conn.req) == RGM_M_HEAD &&
           strcmp(rgm_req_path(conn.req), "/two") == 0,
       "pipeline: then the second");
    is_str(conn.req ? rgm_req_header(conn.req, "x") : NULL, "2", "pipeline: second's headers");
    is_str(conn.req ? rgm_req_header(conn.req, "n") : NULL, NULL, "pipeline: nothing of the first");
}

int main(void)
{
    memset(fill, 'x', sizeof(fill));
    memset(&cfg, 0, sizeof(cfg));
    memset(&srv, 0, sizeof(srv));
    srv.cfg = &cfg;
    rgm_req_parser_settings(&srv);
    cfg.max_url_len = 1024;
    cfg.max_headers = 50;
    cfg.max_header_bytes = 8192;
    test_targets();
    test_headers();
    test_reqhead_fields();
    test_limits();
    test_pipeline();
    rgm_req_free(conn.req);
    rgm_req_free(NULL);
    return tap_done();
}
