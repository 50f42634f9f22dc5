/* Unit tests for src/http/framing.c: the bytes of response heads, body pieces (Content-Length
 * and chunked), the JSON error bodies and the server's own error answers. No sockets: each test
 * fills a request's response fields as rgm_resp_start would and checks the bytes. */
#include "http/framing.h"

#include <uv.h>

#include "tap.h"

/* A request whose response has been started with these values. */
static void req_init(rgm_req_t *req, int status, int64_t content_length, int is_chunked,
                     int is_keep_alive, const char *cache)
{
    *req = (rgm_req_t){.status = status,
                       .content_length = content_length,
                       .is_chunked = is_chunked,
                       .is_keep_alive = is_keep_alive,
                       .cache_status = cache};
}

static int has_line(const char *head, const char *line)
{
    const char *p = strstr(head, line);

    return p && (p == head || p[-1] == '\n') && strncmp(p + strlen(line), "\r\n", 2) == 0;
}

/* The head with its Date line blanked out, so that it can be compared whole. */
static char *head_undated(const rgm_req_t *req, const char *hdrs, size_t *len)
{
    char *h = rgm_framing_head(req, hdrs, hdrs ? strlen(hdrs) : 0, len);
    char *d = strstr(h, "\r\nDate: ");
    char *e = d ? strstr(d + 2, "\r\n") : NULL;

    if (d && e)
        memmove(d + 2, e + 2, strlen(e + 2) + 1);
    *len = strlen(h);
    return h;
}

static void test_reason(void)
{
    static const struct {
        int status;
        const char *want;
    } t[] = {
        {200, "OK"},
        {206, "Partial Content"},
        {304, "Not Modified"},
        {404, "Not Found"},
        {413, "Content Too Large"},
        {431, "Request Header Fields Too Large"},
        {504, "Gateway Timeout"},
        {299, "Unknown"},
        {0, "Unknown"},
        {-1, "Unknown"},
        {999, "Unknown"},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++)
        is_str(rgm_framing_reason(t[i].status), t[i].want, "reason %d", t[i].status);
}

static void test_error_json(void)
{
    static const struct {
        const char *code;
        const char *msg;
        const char *want;
    } t[] = {
        {"BLOB_UNKNOWN", "blob unknown to registry",
         "{\"errors\":[{\"code\":\"BLOB_UNKNOWN\",\"message\":\"blob unknown to registry\"}]}"},
        {"", "", "{\"errors\":[{\"code\":\"\",\"message\":\"\"}]}"},
        {"X", "say \"hi\" \\ bye",
         "{\"errors\":[{\"code\":\"X\",\"message\":\"say \\\"hi\\\" \\\\ bye\"}]}"},
        {"X", "tab\there\nnl\x01\x1f",
         "{\"errors\":[{\"code\":\"X\",\"message\":\"tab\\u0009here\\u000anl\\u0001\\u001f\"}]}"},
        {"\"", "\x7f\xc3\xa9", "{\"errors\":[{\"code\":\"\\\"\",\"message\":\"\x7f\xc3\xa9\"}]}"},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        size_t len = 0;
        char *body = rgm_framing_error_json(t[i].code, t[i].msg, &len);

        is_str(body, t[i].want, "error json %zu", i);
        is_int(len, strlen(t[i].want), "error json %zu: length", i);
        free(body);
    }
    {
        /* every byte a control character: the worst case of the 6x escaping room */
        char msg[300];
        size_t len = 0;
        char *body;

        memset(msg, '\x02', sizeof(msg) - 1);
        msg[sizeof(msg) - 1] = '\0';
        body = rgm_framing_error_json("C", msg, &len);
        is_int(len, strlen("{\"errors\":[{\"code\":\"C\",\"message\":\"\"}]}") + 6 * 299,
               "error json: 299 control characters escaped in full");
        free(body);
    }
}

static void test_head(void)
{
    static const struct {
        int status;
        int64_t content_length;
        int is_chunked;
        int is_keep_alive;
        const char *cache;
        const char *hdrs;
        const char *want;
    } t[] = {
        {200, 5, 0, 1, NULL, NULL,
         "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\n"},
        {200, -1, 1, 0, "MISS", "Content-Type: x/y\r\n",
         "HTTP/1.1 200 OK\r\nContent-Type: x/y\r\nTransfer-Encoding: chunked\r\n"
         "X-Cache: MISS\r\nConnection: close\r\n\r\n"},
        /* HEAD of a chunked-size answer: neither framing line */
        {200, -1, 0, 1, NULL, NULL, "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\n\r\n"},
        {204, 0, 0, 1, NULL, NULL, "HTTP/1.1 204 No Content\r\nConnection: keep-alive\r\n\r\n"},
        {304, 42, 0, 1, "HIT", NULL,
         "HTTP/1.1 304 Not Modified\r\nContent-Length: 42\r\nX-Cache: HIT\r\n"
         "Connection: keep-alive\r\n\r\n"},
        {100, 0, 0, 1, NULL, NULL, "HTTP/1.1 100 Continue\r\nConnection: keep-alive\r\n\r\n"},
        {599, 0, 0, 0, NULL, NULL,
         "HTTP/1.1 599 Unknown\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"},
        {206, 9223372036854775807LL, 0, 1, NULL, "A: 1\r\nB: 2\r\n",
         "HTTP/1.1 206 Partial Content\r\nA: 1\r\nB: 2\r\nContent-Length: 9223372036854775807\r\n"
         "Connection: keep-alive\r\n\r\n"},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        rgm_req_t req;
        size_t len = 0;
        char *h;

        req_init(&req, t[i].status, t[i].content_length, t[i].is_chunked, t[i].is_keep_alive,
                 t[i].cache);
        h = head_undated(&req, t[i].hdrs, &len);
        is_str(h, t[i].want, "head %zu (%d)", i, t[i].status);
        free(h);
    }
    {
        /* the Date line, and a header block larger than the fixed room */
        rgm_req_t req;
        char big[5000];
        size_t len = 0;
        char *h;

        memset(big, 'v', sizeof(big));
        memcpy(big, "X-Big: ", 7);
        memcpy(big + sizeof(big) - 3, "\r\n", 3);
        req_init(&req, 200, 1, 0, 1, "STALE");
        h = rgm_framing_head(&req, big, strlen(big), &len);
        is_int(len, strlen(h), "big head: length matches");
        ok(strstr(h, big) == h + strlen("HTTP/1.1 200 OK\r\n"), "big head: caller's lines intact");
        ok(strstr(h, "\r\nDate: ") && strstr(h, " GMT\r\n"), "head: Date line");
        ok(has_line(h, "X-Cache: STALE"), "big head: X-Cache after the caller's lines");
        ok(len >= 4 && memcmp(h + len - 4, "\r\n\r\n", 4) == 0, "head: ends with a blank line");
        free(h);
    }
}

static void test_write(void)
{
    rgm_req_t req;
    struct wreq *wr;
    char *at = NULL;
    size_t len = 0;

    /* Content-Length body: the head goes out with the first piece, and only once */
    req_init(&req, 200, 10, 0, 1, NULL);
    req.pending_head = rgm_framing_head(&req, NULL, 0, &req.pending_head_len);
    len = req.pending_head_len;
    wr = rgm_framing_write(&req, "hello", 5, 0, NULL);
    ok(wr->len == len + 5 && memcmp(wr->data + len, "hello", 5) == 0, "fixed: head + body");
    ok(!req.pending_head && req.pending_head_len == 0, "fixed: head taken");
    ok(!wr->cb && !wr->ud && !wr->c && !wr->is_file_chunk, "fixed: write fields zero");
    free(wr);
    wr = rgm_framing_write(&req, "world", 5, 1, NULL);
    ok(wr->len == 5 && memcmp(wr->data, "world", 5) == 0, "fixed: last piece has no trailer");
    is_int(req.bytes_out, 10, "fixed: bytes_out counts body bytes only");
    free(wr);

    /* chunked: each piece framed, the last chunk on is_last */
    req_init(&req, 200, -1, 1, 1, NULL);
    wr = rgm_framing_write(&req, "hello chunked world", 19, 0, NULL);
    ok(wr->len == 4 + 19 + 2 && memcmp(wr->data, "13\r\nhello chunked world\r\n", 25) == 0,
       "chunked: size line, bytes, CRLF");
    free(wr);
    wr = rgm_framing_write(&req, NULL, 0x1000, 0, &at);
    ok(at == wr->data + 6 && memcmp(wr->data, "1000\r\n", 6) == 0, "chunked: body_at after size");
    ok(wr->len == 6 + 0x1000 + 2 && memcmp(wr->data + wr->len - 2, "\r\n", 2) == 0,
       "chunked: room left for the caller, then CRLF");
    free(wr);
    wr = rgm_framing_write(&req, NULL, 0, 0, NULL);
    is_int(wr->len, 0, "chunked: an empty piece is no chunk (it would end the body)");
    free(wr);
    wr = rgm_framing_write(&req, NULL, 0, 1, NULL);
    ok(wr->len == 5 && memcmp(wr->data, "0\r\n\r\n", 5) == 0, "chunked: last chunk");
    free(wr);
    wr = rgm_framing_write(&req, "ab", 2, 1, NULL);
    ok(wr->len == 3 + 2 + 2 + 5 && memcmp(wr->data, "2\r\nab\r\n0\r\n\r\n", 12) == 0,
       "chunked: piece and last chunk in one write");
    is_int(req.bytes_out, 19 + 0x1000 + 2, "chunked: bytes_out without framing");
    free(wr);
}

static void test_error(void)
{
    static const char extra[] = "Docker-Distribution-API-Version: registry/2.0\r\n";
    struct wreq *wr;
    char *body;
    char *text;
    char want[64];
    size_t body_len = 0;

    wr = rgm_framing_error(431, "UNSUPPORTED", "too many request headers", extra);
    text = rgm_strndup(wr->data, wr->len);
    body = rgm_framing_error_json("UNSUPPORTED", "too many request headers", &body_len);
    ok(strncmp(text, "HTTP/1.1 431 Request Header Fields Too Large\r\nDate: ", 52) == 0,
       "error: status line, then Date");
    ok(has_line(text, "Content-Type: application/json"), "error: JSON type");
    ok(has_line(text, "Docker-Distribution-API-Version: registry/2.0"), "error: extra headers");
    snprintf(want, sizeof(want), "Content-Length: %zu", body_len);
    ok(has_line(text, want), "error: %s", want);
    ok(has_line(text, "Connection: close"), "error: Connection: close");
    ok(wr->len > body_len && memcmp(wr->data + wr->len - body_len, body, body_len) == 0 &&
           memcmp(wr->data + wr->len - body_len - 4, "\r\n\r\n", 4) == 0,
       "error: blank line, then the JSON body");
    ok(!wr->cb && !wr->c, "error: write fields zero");
    free(text);
    free(body);
    free(wr);

    wr = rgm_framing_error(408, "UNSUPPORTED", "request head not received in time", NULL);
    text = rgm_strndup(wr->data, wr->len);
    ok(strncmp(text, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0, "error 408: status line");
    ok(strstr(text, "application/json\r\nContent-Length: "), "error: no extra headers: none");
    free(text);
    free(wr);

    {
        /* extra headers longer than a fixed head buffer would hold */
        char big[3000];

        memset(big, 'h', sizeof(big));
        memcpy(big, "X-Long: ", 8);
        memcpy(big + sizeof(big) - 3, "\r\n", 3);
        wr = rgm_framing_error(400, "UNSUPPORTED", "malformed request", big);
        text = rgm_strndup(wr->data, wr->len);
        ok(strstr(text, big) != NULL && has_line(text, "Connection: close") &&
               strstr(text, "\"code\":\"UNSUPPORTED\""),
           "error: long extra headers kept whole");
        free(text);
        free(wr);
    }
}

int main(void)
{
    test_reason();
    test_error_json();
    test_head();
    test_write();
    test_error();
    return tap_done();
}
