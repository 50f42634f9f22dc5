/* HTTP/1.1 response bytes: reason phrases, the status line and header block, body pieces framed
 * for Content-Length or chunked transfer, and the JSON error answers of the server and the
 * registry. Pure byte building: no I/O, no connection state beyond the request fields it reads,
 * no policy (the response module decides what to frame, the connection sends it). */
#include "http/framing.h"

#include <inttypes.h>

#include "core/util.h"

#define HEAD_EXTRA 256 /* room for our own lines: status line, Date, framing, Connection */

static const struct {
    int status;
    const char *text;
} reasons[] = {
    {100, "Continue"},
    {200, "OK"},
    {201, "Created"},
    {202, "Accepted"},
    {204, "No Content"},
    {206, "Partial Content"},
    {301, "Moved Permanently"},
    {302, "Found"},
    {303, "See Other"},
    {304, "Not Modified"},
    {307, "Temporary Redirect"},
    {308, "Permanent Redirect"},
    {400, "Bad Request"},
    {401, "Unauthorized"},
    {403, "Forbidden"},
    {404, "Not Found"},
    {405, "Method Not Allowed"},
    {408, "Request Timeout"},
    {409, "Conflict"},
    {411, "Length Required"},
    {413, "Content Too Large"},
    {414, "URI Too Long"},
    {416, "Range Not Satisfiable"},
    {429, "Too Many Requests"},
    {431, "Request Header Fields Too Large"},
    {500, "Internal Server Error"},
    {501, "Not Implemented"},
    {502, "Bad Gateway"},
    {503, "Service Unavailable"},
    {504, "Gateway Timeout"},
};

const char *rgm_framing_reason(int status)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(reasons); i++) {
        if (reasons[i].status == status)
            return reasons[i].text;
    }
    return "Unknown";
}

/* ---- JSON error bodies ---- */

/* JSON string body of s into out (NUL-terminated, truncated if needed). */
static void json_escape(const char *s, char *out, size_t outlen)
{
    static const char hexd[] = "0123456789abcdef";
    size_t o = 0;

    for (; *s && o + 7 < outlen; s++) {
        const unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20) {
            out[o++] = '\\';
            out[o++] = 'u';
            out[o++] = '0';
            out[o++] = '0';
            out[o++] = hexd[ch >> 4];
            out[o++] = hexd[ch & 15];
        } else {
            out[o++] = (char)ch;
        }
    }
    out[o] = '\0';
}

char *rgm_framing_error_json(const char *code, const char *message, size_t *len)
{
    const size_t cap = 6 * (strlen(code) + strlen(message)) + 64;
    char *ecode = rgm_malloc(6 * strlen(code) + 8);
    char *emsg = rgm_malloc(6 * strlen(message) + 8);
    char *body = rgm_malloc(cap);
    int n;

    json_escape(code, ecode, 6 * strlen(code) + 8);
    json_escape(message, emsg, 6 * strlen(message) + 8);
    n = snprintf(body, cap, "{\"errors\":[{\"code\":\"%s\",\"message\":\"%s\"}]}", ecode, emsg);
    free(ecode);
    free(emsg);
    *len = n > 0 ? (size_t)n : 0;
    return body;
}

/* ---- heads ---- */

char *rgm_framing_head(const rgm_req_t *req, const char *hdrs, size_t hdrs_len, size_t *len)
{
    const int status = req->status;
    const char *cache = req->cache_status;
    const size_t cap = hdrs_len + HEAD_EXTRA + (cache ? strlen(cache) : 0);
    char *h = rgm_malloc(cap);
    char date[32];
    size_t n;

    rgm_http_date(date);
    n = (size_t)snprintf(h, cap, "HTTP/1.1 %d %s\r\n", status, rgm_framing_reason(status));
    memcpy(h + n, hdrs ? hdrs : "", hdrs_len);
    n += hdrs_len;
    n += (size_t)snprintf(h + n, cap - n, "Date: %s\r\n", date);
    if (req->content_length >= 0 && status >= 200 && status != 204)
        n += (size_t)snprintf(h + n, cap - n, "Content-Length: %" PRId64 "\r\n",
                              req->content_length);
    else if (req->is_chunked)
        n += (size_t)snprintf(h + n, cap - n, "Transfer-Encoding: chunked\r\n");
    if (cache)
        n += (size_t)snprintf(h + n, cap - n, "X-Cache: %s\r\n", cache);
    n += (size_t)snprintf(h + n, cap - n, "Connection: %s\r\n\r\n",
                          req->is_keep_alive ? "keep-alive" : "close");
    RGM_BUG_ON(n >= cap);
    *len = n;
    return h;
}

/* ---- writes ---- */

struct wreq *rgm_framing_write(rgm_req_t *req, const void *body, size_t body_len, int is_last,
                               char **body_at)
{
    const int is_framed = req->is_chunked && body_len > 0;
    char hex[24];
    size_t hexlen = 0;
    size_t total;
    struct wreq *wr;
    char *p;

    if (is_framed) {
        const int n = snprintf(hex, sizeof(hex), "%zx\r\n", body_len);
        hexlen = n > 0 ? (size_t)n : 0;
    }
    total = req->pending_head_len + hexlen + body_len + (is_framed ? 2 : 0) +
            (is_last && req->is_chunked ? 5 : 0);
    wr = rgm_malloc(sizeof(*wr) + total);
    memset(wr, 0, sizeof(*wr));
    p = wr->data;
    if (req->pending_head) {
        memcpy(p, req->pending_head, req->pending_head_len);
        p += req->pending_head_len;
        RGM_FREE(req->pending_head);
        req->pending_head_len = 0;
    }
    memcpy(p, hex, hexlen);
    p += hexlen;
    if (body_at)
        *body_at = p;
    if (body)
        memcpy(p, body, body_len);
    p += body_len;
    if (is_framed) {
        memcpy(p, "\r\n", 2);
        p += 2;
    }
    if (is_last && req->is_chunked) {
        memcpy(p, "0\r\n\r\n", 5);
        p += 5;
    }
    wr->len = (size_t)(p - wr->data);
    req->bytes_out += body_len;
    return wr;
}

struct wreq *rgm_framing_error(int status, const char *code, const char *msg,
                               const char *extra_hdrs)
{
    const char *extra = extra_hdrs ? extra_hdrs : "";
    size_t body_len;
    char *body = rgm_framing_error_json(code, msg, &body_len);
    const size_t head_cap = HEAD_EXTRA + strlen(extra);
    struct wreq *wr = rgm_malloc(sizeof(*wr) + head_cap + body_len);
    char date[32];
    int n;

    memset(wr, 0, sizeof(*wr));
    rgm_http_date(date);
    n = snprintf(wr->data, head_cap,
                 "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n%s"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 status, rgm_framing_reason(status), date, extra, body_len);
    RGM_BUG_ON(n < 0 || (size_t)n >= head_cap);
    memcpy(wr->data + n, body, body_len);
    wr->len = (size_t)n + body_len;
    free(body);
    return wr;
}
