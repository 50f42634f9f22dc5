/* Downstream HTTP/1.1 server: listeners, connections (llhttp with limits, keep-alive,
 * pipelining, timeouts) and responses (copied writes, chunked framing, sendfile(2) on plain TCP
 * or pread + write). It knows bytes and messages, nothing of registries or caches.
 *
 * Over cfg->max_connections a new connection is accepted and closed at once: leaving it in the
 * kernel backlog would hold the client with no timeout of ours. The process must ignore SIGPIPE
 * (main.c does): sendfile(2) to a peer that is gone raises it. */
#include "http/server.h"

#include "config.h"

#include <errno.h>
#include <inttypes.h>
#include <unistd.h>
#include <sys/types.h>
#include <sys/socket.h>
#include <netinet/in.h>
#ifdef HAVE_SYS_SENDFILE_H
#include <sys/sendfile.h>
#endif

#include <uv.h>
#include <llhttp.h>

#include "core/log.h"
#include "core/util.h"

#define IN_INIT           (4 * 1024)
#define IN_MAX            (64 * 1024)   /* pipelined input kept while a response is in progress */
#define FILE_CHUNK        (64 * 1024)   /* pread + write: one chunk in flight */
#define SENDFILE_STEP     (1024 * 1024) /* per loop turn, so one fast client can't starve others */
#define WRITE_MAX         ((size_t)1 << 30)
#define LINGER_MS         2000 /* after our FIN: read and drop what the client still sends */
#define HEAD_EXTRA        256
#define DEF_MAX_URL       8192
#define DEF_MAX_HDR_BYTES (32 * 1024)
#define DEF_MAX_HEADERS   100

enum conn_state { CONN_OPEN, CONN_CLOSING };
enum tmode { T_NONE, T_HEADER, T_IDLE, T_SEND, T_LINGER };
enum sf_mode { SF_SENDFILE, SF_PREAD };

struct hdr {
    size_t name_off;
    size_t value_off;
};

struct listener {
    uv_tcp_t tcp;
    rgm_server_t *srv;
};

/* A callback that must run later (async contract): HEAD body writes, sendfile completion. */
struct deferred {
    struct deferred *next;
    rgm_resp_cb cb;
    void *ud;
    int status;
};

/* One uv_write: the request and its bytes share one allocation until on_write. */
struct wreq {
    uv_write_t w;
    struct conn *c;
    rgm_resp_cb cb;
    void *ud;
    int is_file_chunk;
    size_t len;
    char data[];
};

struct sendfile_state {
    int is_active;
    int is_in_flight; /* pread mode: a chunk is being written */
    enum sf_mode mode;
    int fd;
    uint64_t off;
    uint64_t left;
    rgm_resp_cb cb;
    void *ud;
};

struct rgm_req {
    struct conn *c; /* always valid while the request is */
    uint64_t id;
    uint64_t start_ns;
    enum rgm_method method;
    uint8_t method_raw;
    int is_keep_alive; /* the client's wish, then the response's decision */

    /* head storage: the URL, NUL, then "name\0value\0" per header (offsets: text may move) */
    char *text;
    size_t text_len;
    size_t text_cap;
    size_t url_len;
    struct hdr *hdrs;
    unsigned hdrs_len;
    unsigned hdrs_cap;
    int is_in_field;
    size_t header_bytes;
    char *path;
    char *query;

    const char *cache_status;
    void (*on_close)(rgm_req_t *req, void *ud);
    void *on_close_ud;

    /* response */
    int status;
    int is_started;
    int is_finished;
    int is_released; /* finished or aborted: the handler let go, on_close won't run */
    int is_chunked;
    int has_body; /* false for HEAD, 1xx, 204, 304: body bytes are discarded */
    int64_t content_length;
    uint64_t body_sent; /* accepted from the handler, for framing checks */
    uint64_t bytes_out; /* body bytes handed to the socket, for the access log */
    char *pending_head;
    size_t pending_head_len;
    struct sendfile_state sf;
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_idle_t idle;
    uv_poll_t poll; /* on a dup() of the socket, only while sendfile(2) has been used */
    uv_shutdown_t shut;
    rgm_server_t *srv;
    struct conn *prev;
    struct conn *next;
    enum conn_state state;
    int pending_closes;
    int has_poll;
    int is_polling;
    int poll_fd;

    llhttp_t parser;
    char *in; /* unparsed input, from the start */
    size_t in_len;
    size_t in_cap;
    rgm_req_t *req; /* being parsed, or handed to the handler (is_active) */
    int is_active;
    int is_reading;
    int is_eof;
    int is_draining;   /* no more requests: close once flushed */
    int is_lingering;  /* FIN sent, dropping input until EOF or LINGER_MS */
    int is_processing; /* conn_process on the stack */
    int is_head_started;
    unsigned n_requests;
    enum tmode tmode;
    size_t writes_pending;
    struct deferred *defer_head;
    struct deferred *defer_tail;

    int err_status; /* set by parser callbacks that return an error */
    const char *err_code;
    const char *err_msg;
    char client[64];
};

struct rgm_server {
    uv_loop_t *loop;
    const rgm_config_t *cfg;
    const char *error_hdrs; /* extra lines on the errors the server answers itself */
    rgm_handler_fn handler;
    void *ud;
    llhttp_settings_t settings;
    struct listener **listeners;
    int *ports;
    size_t listeners_len;
    struct conn *conns;
    size_t conn_count;
    size_t handles_open; /* listeners + connections + the shutdown timer */
    int is_shutting_down;
    int has_timer;
    int is_timer_closing;
    int is_done;
    uv_timer_t shutdown_timer;
    void (*done)(rgm_server_t *srv, void *ud);
    void *done_ud;
};

static uint64_t next_req_id = 1;

static void conn_close(struct conn *c, const char *reason);
static void conn_close_graceful(struct conn *c);
static void conn_process(struct conn *c);
static void conn_update(struct conn *c);
static void conn_kick(struct conn *c);
static void conn_schedule(struct conn *c);
static void sf_step(struct conn *c);

/* ---- small helpers ---- */

static size_t lim(size_t v, size_t def)
{
    return v ? v : def;
}

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

static const char *reason_phrase(int status)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(reasons); i++) {
        if (reasons[i].status == status)
            return reasons[i].text;
    }
    return "Unknown";
}

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

/* {"errors":[...]} into a new string; *len gets its length. */
static char *error_body(const char *code, const char *message, size_t *len)
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

/* ---- server-level handle accounting ---- */

static void server_handle_closed(rgm_server_t *srv)
{
    RGM_BUG_ON(srv->handles_open == 0);
    srv->handles_open--;
    if (srv->is_shutting_down && srv->handles_open == 0 && !srv->is_done) {
        srv->is_done = 1;
        if (srv->done)
            srv->done(srv, srv->done_ud); /* may free srv: nothing after this */
    }
}

static void on_shutdown_timer_close(uv_handle_t *h)
{
    rgm_server_t *srv = rgm_container_of(h, rgm_server_t, shutdown_timer);

    server_handle_closed(srv);
}

static void shutdown_check(rgm_server_t *srv)
{
    if (srv->is_shutting_down && srv->conn_count == 0 && srv->has_timer && !srv->is_timer_closing) {
        srv->is_timer_closing = 1;
        uv_close((uv_handle_t *)&srv->shutdown_timer, on_shutdown_timer_close);
    }
}

/* ---- requests ---- */

static rgm_req_t *req_new(struct conn *c)
{
    rgm_req_t *req = rgm_calloc(1, sizeof(*req));

    req->c = c;
    req->id = next_req_id++;
    req->start_ns = uv_hrtime();
    req->sf.fd = -1;
    return req;
}

static void req_free(rgm_req_t *req)
{
    if (!req)
        return;
    free(req->text);
    free(req->hdrs);
    free(req->path);
    free(req->query);
    free(req->pending_head);
    free(req);
}

/* Callers have checked the limits, so growth is bounded by the configuration. */
static void req_append(rgm_req_t *req, const char *at, size_t len)
{
    if (req->text_len + len + 1 > req->text_cap) {
        size_t cap = req->text_cap ? req->text_cap : 256;
        while (cap < req->text_len + len + 1)
            cap *= 2;
        req->text = rgm_realloc(req->text, cap);
        req->text_cap = cap;
    }
    memcpy(req->text + req->text_len, at, len);
    req->text_len += len;
    req->text[req->text_len] = '\0';
}

/* Split the request target into path and query; absolute-form loses scheme and authority. */
static void req_split_target(rgm_req_t *req)
{
    const char *t = req->text;
    const char *end = req->text + req->url_len;
    const char *q;
    const char *hash;

    if (*t != '/') {
        const char *sep = strstr(t, "://");
        if (sep && (size_t)(sep - t) <= 5) {
            const char *slash = memchr(sep + 3, '/', (size_t)(end - (sep + 3)));
            const char *qm = memchr(sep + 3, '?', (size_t)(end - (sep + 3)));
            if (qm && (!slash || qm < slash)) {
                req->path = rgm_strdup("/");
                req->query = rgm_strndup(qm + 1, (size_t)(end - qm - 1));
                return;
            }
            t = slash ? slash : end;
        }
    }
    hash = memchr(t, '#', (size_t)(end - t));
    if (hash)
        end = hash;
    q = memchr(t, '?', (size_t)(end - t));
    if (q) {
        req->path = rgm_strndup(t, (size_t)(q - t));
        req->query = rgm_strndup(q + 1, (size_t)(end - q - 1));
    } else {
        req->path = t == end ? rgm_strdup("/") : rgm_strndup(t, (size_t)(end - t));
        req->query = rgm_strdup("");
    }
}

/* ---- llhttp callbacks: accumulate and check limits; never close ---- */

static struct conn *pconn(llhttp_t *p)
{
    return rgm_container_of(p, struct conn, parser);
}

static int parse_fail(llhttp_t *p, int status, const char *code, const char *msg)
{
    struct conn *c = pconn(p);

    c->err_status = status;
    c->err_code = code;
    c->err_msg = msg;
    llhttp_set_error_reason(p, msg);
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = pconn(p);

    RGM_BUG_ON(c->req != NULL);
    c->req = req_new(c);
    c->is_head_started = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = pconn(p);
    rgm_req_t *req = c->req;

    if (req->text_len + len > lim(c->srv->cfg->max_url_len, DEF_MAX_URL))
        return parse_fail(p, 414, "URI_TOO_LONG", "request target too long");
    req_append(req, at, len);
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    rgm_req_t *req = pconn(p)->req;

    req->url_len = req->text_len;
    req_append(req, "", 0);
    req->text_len++; /* keep the NUL */
    return 0;
}

static int header_bytes_add(llhttp_t *p, size_t n)
{
    struct conn *c = pconn(p);

    c->req->header_bytes += n;
    if (c->req->header_bytes > lim(c->srv->cfg->max_header_bytes, DEF_MAX_HDR_BYTES))
        return parse_fail(p, 431, "HEADERS_TOO_LARGE", "request headers too large");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = pconn(p);
    rgm_req_t *req = c->req;

    if (!req->is_in_field) {
        if (req->hdrs_len >= lim(c->srv->cfg->max_headers, DEF_MAX_HEADERS))
            return parse_fail(p, 431, "HEADERS_TOO_LARGE", "too many request headers");
        if (req->hdrs_len == req->hdrs_cap) {
            req->hdrs_cap = req->hdrs_cap ? req->hdrs_cap * 2 : 16;
            req->hdrs = rgm_realloc(req->hdrs, req->hdrs_cap * sizeof(*req->hdrs));
        }
        req->hdrs[req->hdrs_len].name_off = req->text_len;
        req->hdrs[req->hdrs_len].value_off = req->text_len;
        req->hdrs_len++;
        req->is_in_field = 1;
        if (header_bytes_add(p, 4) != 0) /* ": " and CRLF */
            return HPE_USER;
    }
    if (header_bytes_add(p, len) != 0)
        return HPE_USER;
    req_append(req, at, len);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    rgm_req_t *req = pconn(p)->req;

    req_append(req, "", 0);
    req->text_len++;
    req->hdrs[req->hdrs_len - 1].value_off = req->text_len;
    req->is_in_field = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    if (header_bytes_add(p, len) != 0)
        return HPE_USER;
    req_append(pconn(p)->req, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    rgm_req_t *req = pconn(p)->req;
    const size_t voff = req->hdrs[req->hdrs_len - 1].value_off;

    while (req->text_len > voff &&
           (req->text[req->text_len - 1] == ' ' || req->text[req->text_len - 1] == '\t'))
        req->text_len--;
    req_append(req, "", 0);
    req->text_len++;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = pconn(p);
    rgm_req_t *req = c->req;
    int has_body;

    req->method_raw = llhttp_get_method(p);
    req->method = req->method_raw == HTTP_GET    ? RGM_M_GET
                  : req->method_raw == HTTP_HEAD ? RGM_M_HEAD
                                                 : RGM_M_OTHER;
    if (req->method_raw == HTTP_CONNECT) {
        parse_fail(p, 400, "BAD_REQUEST", "CONNECT not supported");
        return -1;
    }
    has_body = (p->flags & (F_CHUNKED | F_TRANSFER_ENCODING)) != 0 ||
               ((p->flags & F_CONTENT_LENGTH) != 0 && p->content_length > 0);
    if (has_body) {
        /* The mirror is read-only: bodies are refused, never buffered. */
        if (req->method != RGM_M_OTHER)
            parse_fail(p, 400, "BAD_REQUEST", "request body not allowed");
        else
            parse_fail(p, 405, "UNSUPPORTED", "request body not allowed: read-only mirror");
        return -1;
    }
    /* We never switch protocols: an Upgrade request is served as plain HTTP/1.1. */
    p->upgrade = 0;
    req->is_keep_alive = llhttp_should_keep_alive(p);
    if (!req->text) {
        req_append(req, "", 0);
        req->text_len++;
    }
    req_split_target(req);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    pconn(p)->is_head_started = 0;
    return HPE_PAUSED; /* one request at a time: conn_process dispatches it */
}

/* ---- writes ---- */

/* A write of the pending head, then body_len bytes (copied from body when not NULL, else left
 * for the caller at *body_at) framed as a chunk when chunked, then the last chunk if is_last. */
static struct wreq *wreq_build(rgm_req_t *req, const void *body, size_t body_len, int is_last,
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

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = rgm_container_of(w, struct wreq, w);
    struct conn *c = wr->c;
    const rgm_resp_cb cb = wr->cb;
    void *const ud = wr->ud;
    const int is_file_chunk = wr->is_file_chunk;

    free(wr);
    RGM_BUG_ON(c->writes_pending == 0);
    c->writes_pending--;
    if (c->state != CONN_OPEN)
        return; /* UV_ECANCELED: the connection is closing, nothing to tell */
    if (status < 0) {
        rgm_log(RGM_LOG_INFO, "server", "client=%s write failed: %s", c->client,
                uv_strerror(status));
        conn_close(c, "write failed");
        return;
    }
    if (c->tmode == T_SEND && c->srv->cfg->send_timeout_ms > 0) {
        /* progress: re-arm */
        c->tmode = T_NONE;
    }
    if (is_file_chunk && c->req)
        c->req->sf.is_in_flight = 0;
    if (cb && c->req)
        cb(c->req, 0, ud);
    conn_kick(c);
}

static int wreq_send(struct conn *c, struct wreq *wr)
{
    uv_buf_t b = uv_buf_init(wr->data, (unsigned int)wr->len);
    int err;

    wr->c = c;
    err = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (err < 0) {
        free(wr);
        return err;
    }
    c->writes_pending++;
    conn_update(c);
    return 0;
}

/* Bytes not tied to a request (error answers): the connection closes after them. */
static void conn_write_raw(struct conn *c, const char *head, size_t head_len, const char *body,
                           size_t body_len)
{
    struct wreq *wr = rgm_malloc(sizeof(*wr) + head_len + body_len);

    memset(wr, 0, sizeof(*wr));
    memcpy(wr->data, head, head_len);
    memcpy(wr->data + head_len, body, body_len);
    wr->len = head_len + body_len;
    if (wreq_send(c, wr) < 0)
        conn_close(c, "write failed");
}

static void defer_cb(struct conn *c, rgm_resp_cb cb, void *ud, int status)
{
    struct deferred *d;

    if (!cb)
        return;
    d = rgm_calloc(1, sizeof(*d));
    d->cb = cb;
    d->ud = ud;
    d->status = status;
    if (c->defer_tail)
        c->defer_tail->next = d;
    else
        c->defer_head = d;
    c->defer_tail = d;
    conn_schedule(c);
}

static void on_idle(uv_idle_t *h)
{
    struct conn *c = rgm_container_of(h, struct conn, idle);

    if (uv_idle_stop(h) < 0)
        return; /* never fails on a valid handle */
    while (c->state == CONN_OPEN && c->defer_head) {
        struct deferred *d = c->defer_head;
        const rgm_resp_cb cb = d->cb;
        void *const ud = d->ud;
        const int status = d->status;

        c->defer_head = d->next;
        if (!c->defer_head)
            c->defer_tail = NULL;
        free(d);
        if (c->req)
            cb(c->req, status, ud);
    }
    conn_kick(c);
}

/* Run conn_kick (and deferred callbacks) on the next loop turn, never on the caller's stack. */
static void conn_schedule(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (uv_idle_start(&c->idle, on_idle) < 0)
        conn_close(c, "idle start failed");
}

/* ---- error answers for requests that never reached the handler ---- */

static void conn_send_error(struct conn *c, int status, const char *code, const char *msg)
{
    char date[32];
    char head[1024];
    char *body;
    size_t body_len;
    int n;

    if (c->state != CONN_OPEN)
        return;
    if (c->is_active || c->is_draining) {
        conn_close(c, msg); /* a response may have started: can't answer any more */
        return;
    }
    req_free(c->req);
    c->req = NULL;
    c->is_draining = 1;
    body = error_body(code, msg, &body_len);
    rgm_http_date(date);
    n = snprintf(head, sizeof(head),
                 "HTTP/1.1 %d %s\r\nDate: %s\r\nContent-Type: application/json\r\n%s"
                 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                 status, reason_phrase(status), date, c->srv->error_hdrs ? c->srv->error_hdrs : "",
                 body_len);
    conn_write_raw(c, head, n > 0 ? (size_t)n : 0, body, body_len);
    free(body);
    conn_kick(c);
}

static void conn_parse_error(struct conn *c, llhttp_errno_t err)
{
    const int status = c->err_status ? c->err_status : 400;
    const char *code = c->err_status ? c->err_code : "BAD_REQUEST";
    const char *msg = c->err_status ? c->err_msg : "malformed request";

    rgm_log(RGM_LOG_INFO, "server", "client=%s bad request: %s: %s", c->client,
            llhttp_errno_name(err), llhttp_get_error_reason(&c->parser));
    conn_send_error(c, status, code, msg);
}

/* ---- connection life ---- */

static int flushed(const struct conn *c)
{
    return c->writes_pending == 0 && !c->defer_head && !(c->req && c->req->sf.is_active);
}

static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static uint64_t tmode_ms(const struct conn *c, enum tmode m)
{
    const rgm_config_t *cfg = c->srv->cfg;

    switch (m) {
    case T_HEADER:
        return cfg->header_timeout_ms;
    case T_IDLE:
        return cfg->idle_timeout_ms;
    case T_SEND:
        return cfg->send_timeout_ms;
    case T_LINGER:
        return LINGER_MS;
    case T_NONE:
        break;
    }
    return 0;
}

static void set_timer(struct conn *c, enum tmode m)
{
    uint64_t ms;

    if (m == c->tmode)
        return;
    if (uv_timer_stop(&c->timer) < 0)
        return;
    c->tmode = m;
    ms = tmode_ms(c, m);
    if (m != T_NONE && ms > 0 && uv_timer_start(&c->timer, on_timer, ms, 0) < 0)
        conn_close(c, "timer start failed");
}

/* Reading and the timer follow the state; called after every change. */
static void conn_update(struct conn *c)
{
    int want_read;
    enum tmode m;

    if (c->state != CONN_OPEN)
        return;
    want_read = !c->is_eof && (c->is_lingering || (!c->is_draining && c->in_len < IN_MAX));
    if (want_read && !c->is_reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            conn_close(c, "read start failed");
            return;
        }
        c->is_reading = 1;
    } else if (!want_read && c->is_reading) {
        if (uv_read_stop((uv_stream_t *)&c->tcp) < 0) {
            conn_close(c, "read stop failed");
            return;
        }
        c->is_reading = 0;
    }
    if (c->is_lingering)
        m = T_LINGER;
    else if (c->writes_pending > 0 || (c->req && c->req->sf.is_active))
        m = T_SEND;
    else if (c->is_active || c->is_draining)
        m = T_NONE;
    else if (c->is_head_started || c->n_requests == 0)
        m = T_HEADER;
    else
        m = T_IDLE;
    set_timer(c, m);
}

static void conn_free(struct conn *c)
{
    rgm_server_t *srv = c->srv;
    rgm_req_t *req = c->req;

    c->req = NULL;
    if (req && c->is_active && !req->is_released && req->on_close)
        req->on_close(req, req->on_close_ud);
    req_free(req);
    while (c->defer_head) {
        struct deferred *d = c->defer_head;
        c->defer_head = d->next;
        free(d);
    }
    free(c->in);
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    srv->conn_count--;
    free(c);
    shutdown_check(srv);
    server_handle_closed(srv); /* may free srv: last */
}

static void conn_handle_closed(struct conn *c)
{
    RGM_BUG_ON(c->pending_closes <= 0);
    if (--c->pending_closes == 0)
        conn_free(c);
}

static void on_tcp_close(uv_handle_t *h)
{
    conn_handle_closed(rgm_container_of(h, struct conn, tcp));
}

static void on_timer_close(uv_handle_t *h)
{
    conn_handle_closed(rgm_container_of(h, struct conn, timer));
}

static void on_idle_close(uv_handle_t *h)
{
    conn_handle_closed(rgm_container_of(h, struct conn, idle));
}

static void on_poll_close(uv_handle_t *h)
{
    struct conn *c = rgm_container_of(h, struct conn, poll);

    if (c->poll_fd >= 0 && close(c->poll_fd) < 0)
        rgm_log(RGM_LOG_WARN, "server", "close(dup fd): %s", strerror(errno));
    c->poll_fd = -1;
    conn_handle_closed(c);
}

/* The one way a connection ends. Idempotent; memory goes in the close callbacks, where a
 * request still in the handler's hands gets its on_close. Pending writes end with
 * UV_ECANCELED before that. */
static void conn_close(struct conn *c, const char *reason)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    rgm_log(RGM_LOG_DEBUG, "server", "client=%s closed: %s", c->client, reason);
    uv_close((uv_handle_t *)&c->tcp, on_tcp_close);
    uv_close((uv_handle_t *)&c->timer, on_timer_close);
    uv_close((uv_handle_t *)&c->idle, on_idle_close);
    if (c->has_poll)
        uv_close((uv_handle_t *)&c->poll, on_poll_close);
}

static void on_shutdown(uv_shutdown_t *sr, int status)
{
    struct conn *c = rgm_container_of(sr, struct conn, shut);

    if (status < 0 && c->state == CONN_OPEN)
        conn_close(c, "shutdown failed");
}

/* No more requests on this connection: once everything is flushed, send FIN and drop input
 * until the client closes (or LINGER_MS), so that a client still sending doesn't get a RST
 * that would destroy the response in its receive buffer. */
static void conn_close_graceful(struct conn *c)
{
    if (c->state != CONN_OPEN || c->is_lingering)
        return;
    c->is_draining = 1;
    if (!flushed(c) || c->is_active)
        return; /* conn_kick calls again */
    if (c->is_eof) {
        conn_close(c, "done");
        return;
    }
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        conn_close(c, "shutdown failed");
        return;
    }
    c->is_lingering = 1;
    c->in_len = 0;
    conn_update(c);
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = rgm_container_of(t, struct conn, timer);
    const enum tmode m = c->tmode;

    c->tmode = T_NONE; /* one-shot: it has fired */
    switch (m) {
    case T_HEADER:
        if (c->is_head_started) {
            rgm_log(RGM_LOG_INFO, "server", "client=%s request head timeout", c->client);
            conn_send_error(c, 408, "REQUEST_TIMEOUT", "request head not received in time");
        } else {
            conn_close(c, "no request");
        }
        break;
    case T_IDLE:
        conn_close(c, "idle timeout");
        break;
    case T_SEND:
        rgm_log(RGM_LOG_INFO, "server", "client=%s send timeout", c->client);
        conn_close(c, "send timeout");
        break;
    case T_LINGER:
        conn_close(c, "linger timeout");
        break;
    case T_NONE:
        break;
    }
    conn_update(c);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = rgm_container_of(h, struct conn, tcp);

    (void)suggested;
    if (c->is_lingering) {
        static char discard[16 * 1024]; /* lingering input is dropped; one thread, one buffer */
        *buf = uv_buf_init(discard, sizeof(discard));
        return;
    }
    if (c->in_len == c->in_cap && c->in_cap < IN_MAX) {
        c->in_cap = c->in_cap ? c->in_cap * 2 : IN_INIT;
        if (c->in_cap > IN_MAX)
            c->in_cap = IN_MAX;
        c->in = rgm_realloc(c->in, c->in_cap);
    }
    if (c->in_len == c->in_cap) {
        *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: conn_update stops reading */
        return;
    }
    *buf = uv_buf_init(c->in + c->in_len, (unsigned int)(c->in_cap - c->in_len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = rgm_container_of(s, struct conn, tcp);

    (void)buf;
    if (c->state != CONN_OPEN || nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        conn_update(c);
        return;
    }
    if (nread < 0) {
        c->is_eof = 1;
        if (nread != UV_EOF || c->is_lingering || (!c->is_active && !c->is_draining)) {
            conn_close(c, nread == UV_EOF ? "eof" : uv_strerror((int)nread));
            return;
        }
        /* Half-close with a request in progress: answer it, then close. A client that is
         * really gone shows up as a failed write. */
        conn_update(c);
        return;
    }
    if (c->is_lingering)
        return;
    c->in_len += (size_t)nread;
    conn_process(c);
}

static void dispatch(struct conn *c)
{
    rgm_req_t *req = c->req;

    c->is_active = 1;
    c->n_requests++;
    c->is_head_started = 0;
    c->err_status = 0;
    conn_update(c);
    c->srv->handler(req, c->srv->ud);
}

/* Parse buffered input and hand complete requests to the handler, one at a time. */
static void conn_process(struct conn *c)
{
    if (c->is_processing)
        return; /* the loop below on the stack picks up the change */
    c->is_processing = 1;
    while (c->state == CONN_OPEN && !c->is_active && !c->is_draining && c->in_len > 0) {
        const llhttp_errno_t err = llhttp_execute(&c->parser, c->in, c->in_len);
        size_t used;

        if (err == HPE_OK) {
            c->in_len = 0;
            break;
        }
        if (err != HPE_PAUSED) {
            conn_parse_error(c, err);
            break;
        }
        used = (size_t)(llhttp_get_error_pos(&c->parser) - c->in);
        memmove(c->in, c->in + used, c->in_len - used);
        c->in_len -= used;
        llhttp_resume(&c->parser);
        dispatch(c);
    }
    c->is_processing = 0;
    if (c->state == CONN_OPEN && !c->is_active && !c->is_draining && c->is_eof)
        conn_close(c, "eof");
    conn_update(c);
}

/* One logfmt line per request. cut: why the response was cut short, or NULL. The query is
 * part of the path (containerd's ns=), quoted and escaped like every request-derived string. */
static void access_log(const rgm_req_t *req, const char *cut)
{
    const struct conn *c = req->c;
    char target[1024];
    char path[1100];
    char why[128];

    if (!c->srv->cfg->access_log || RGM_LOG_INFO > rgm_log_level_cur)
        return;
    snprintf(target, sizeof(target), "%s%s%s", req->path ? req->path : "",
             req->query && req->query[0] ? "?" : "", req->query ? req->query : "");
    rgm_log_kv(RGM_LOG_INFO, "access",
               "method=%s path=%s status=%d bytes=%llu dur_ms=%.1f client=%s cache=%s id=%llu%s%s",
               llhttp_method_name((llhttp_method_t)req->method_raw),
               rgm_log_quote(target, path, sizeof(path)), req->status,
               (unsigned long long)req->bytes_out, (double)(uv_hrtime() - req->start_ns) / 1e6,
               c->client, req->cache_status ? req->cache_status : "-", (unsigned long long)req->id,
               cut ? " cut=" : "", cut ? rgm_log_quote(cut, why, sizeof(why)) : "");
}

/* The response is finished and flushed: log, free, next request or close. */
static void req_complete(struct conn *c)
{
    rgm_req_t *req = c->req;
    const int keep = req->is_keep_alive && !c->srv->is_shutting_down && !c->is_draining;

    access_log(req, NULL);
    c->req = NULL;
    c->is_active = 0;
    req_free(req);
    if (!keep) {
        conn_close_graceful(c);
        return;
    }
    conn_process(c);
}

/* Move the connection forward after any completion. Safe to call any time. */
static void conn_kick(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->is_active && c->req) {
        if (c->req->sf.is_active)
            sf_step(c);
        if (c->state == CONN_OPEN && c->req->is_finished && flushed(c)) {
            req_complete(c);
            return;
        }
    } else if (c->is_draining && flushed(c)) {
        conn_close_graceful(c);
    }
    conn_update(c);
}

/* ---- sendfile ---- */

static void sf_done(struct conn *c, int status)
{
    struct sendfile_state *sf = &c->req->sf;

    sf->is_active = 0;
    if (c->is_polling) {
        if (uv_poll_stop(&c->poll) < 0) {
            conn_close(c, "poll stop failed");
            return;
        }
        c->is_polling = 0;
    }
    defer_cb(c, sf->cb, sf->ud, status);
}

static void sf_pread_step(struct conn *c)
{
    rgm_req_t *req = c->req;
    struct sendfile_state *sf = &req->sf;
    const size_t n = sf->left < FILE_CHUNK ? (size_t)sf->left : FILE_CHUNK;
    struct wreq *wr;
    char *at = NULL;
    size_t got = 0;
    int err;

    if (sf->is_in_flight)
        return;
    wr = wreq_build(req, NULL, n, 0, &at);
    /* A synchronous pread: the bytes are in the page cache (a blob just written by a fetch,
     * or a hot one in the store); uv_fs_read would add a thread-pool round trip per 64 KiB
     * for no gain. sendfile(2) is the fast path anyway. */
    while (got < n) {
        const ssize_t r = pread(sf->fd, at + got, n - got, (off_t)(sf->off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            err = r < 0 ? -errno : UV_EIO; /* 0: the file is shorter than promised */
            req->bytes_out -= n;
            free(wr);
            sf_done(c, err);
            return;
        }
        got += (size_t)r;
    }
    wr->is_file_chunk = 1;
    sf->off += n;
    sf->left -= n;
    sf->is_in_flight = 1;
    err = wreq_send(c, wr);
    if (err < 0) {
        sf->is_in_flight = 0;
        conn_close(c, "write failed");
    }
}

static void on_poll(uv_poll_t *h, int status, int events);

/* Wait for the socket to become writable (UV_WRITABLE stays armed until sf_done). */
static int sf_poll(struct conn *c, int sock)
{
    int err;

    if (!c->has_poll) {
        /* libuv refuses a second watcher on the same fd: poll a dup of it. */
        const int fd = dup(sock);
        if (fd < 0)
            return -errno;
        err = uv_poll_init(c->srv->loop, &c->poll, fd);
        if (err < 0) {
            if (close(fd) < 0)
                rgm_log(RGM_LOG_WARN, "server", "close(dup fd): %s", strerror(errno));
            return err;
        }
        c->has_poll = 1;
        c->poll_fd = fd;
        c->pending_closes++;
    }
    if (!c->is_polling) {
        err = uv_poll_start(&c->poll, UV_WRITABLE, on_poll);
        if (err < 0)
            return err;
        c->is_polling = 1;
    }
    return 0;
}

static void sf_sendfile_step(struct conn *c)
{
#ifdef HAVE_SENDFILE
    rgm_req_t *req = c->req;
    struct sendfile_state *sf = &req->sf;
    uv_os_fd_t sock;
    size_t step = 0;

    if (c->writes_pending > 0)
        return; /* libuv's queue first, or bytes would be reordered; on_write kicks again */
    if (uv_fileno((uv_handle_t *)&c->tcp, &sock) < 0) {
        conn_close(c, "no fd");
        return;
    }
    while (sf->left > 0 && step < SENDFILE_STEP) {
        const size_t budget = SENDFILE_STEP - step;
        const size_t want = sf->left < budget ? (size_t)sf->left : budget;
        off_t o = (off_t)sf->off;
        const ssize_t n = sendfile(sock, sf->fd, &o, want);

        if (n > 0) {
            sf->off += (uint64_t)n;
            sf->left -= (uint64_t)n;
            req->bytes_out += (uint64_t)n;
            step += (size_t)n;
            continue;
        }
        if (n == 0) {
            sf_done(c, UV_EIO); /* the file is shorter than promised */
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            break;
        if (errno == EINVAL || errno == ENOSYS) {
            sf->mode = SF_PREAD; /* not a regular file: copy the rest */
            sf_pread_step(c);
            return;
        }
        if (errno == EPIPE || errno == ECONNRESET || errno == ENOTCONN) {
            rgm_log(RGM_LOG_INFO, "server", "client=%s sendfile: %s", c->client, strerror(errno));
            conn_close(c, "client gone");
            return;
        }
        sf_done(c, -errno);
        return;
    }
    if (step > 0 && c->tmode == T_SEND)
        c->tmode = T_NONE; /* progress: conn_update re-arms */
    if (sf->left == 0) {
        sf_done(c, 0);
        return;
    }
    if (sf_poll(c, sock) < 0) {
        sf->mode = SF_PREAD; /* no poll handle: copy the rest */
        sf_pread_step(c);
    }
#else
    c->req->sf.mode = SF_PREAD;
    sf_pread_step(c);
#endif
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct conn *c = rgm_container_of(h, struct conn, poll);

    (void)events;
    if (c->state != CONN_OPEN)
        return;
    if (status < 0) {
        conn_close(c, "poll error");
        return;
    }
    if (!c->req || !c->req->sf.is_active) {
        if (uv_poll_stop(h) < 0)
            conn_close(c, "poll stop failed");
        c->is_polling = 0;
        return;
    }
    sf_sendfile_step(c);
    conn_update(c);
}

static void sf_step(struct conn *c)
{
    struct sendfile_state *sf = &c->req->sf;

    if (!sf->is_active || c->state != CONN_OPEN)
        return;
    if (sf->left == 0) {
        if (!sf->is_in_flight)
            sf_done(c, 0);
        return;
    }
    if (sf->mode == SF_PREAD)
        sf_pread_step(c);
    else if (!c->is_polling)
        sf_sendfile_step(c); /* when polling, on_poll continues */
}

/* ---- accept ---- */

static void conn_peer(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];

    snprintf(c->client, sizeof(c->client), "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (uv_ip6_name(a, ip, sizeof(ip)) == 0)
            snprintf(c->client, sizeof(c->client), "[%s]:%u", ip, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (uv_ip4_name(a, ip, sizeof(ip)) == 0)
            snprintf(c->client, sizeof(c->client), "%s:%u", ip, ntohs(a->sin_port));
    }
}

static void on_connection(uv_stream_t *ls, int status)
{
    struct listener *l = rgm_container_of(ls, struct listener, tcp);
    rgm_server_t *srv = l->srv;
    struct conn *c;

    if (status < 0) {
        rgm_log(RGM_LOG_WARN, "server", "accept: %s", uv_strerror(status));
        return;
    }
    c = rgm_calloc(1, sizeof(*c));
    c->srv = srv;
    c->poll_fd = -1;
    if (uv_tcp_init(srv->loop, &c->tcp) < 0) {
        free(c);
        return;
    }
    /* Timer and idle init only fill in structs on unix; they cannot fail there. */
    RGM_BUG_ON(uv_timer_init(srv->loop, &c->timer) != 0);
    RGM_BUG_ON(uv_idle_init(srv->loop, &c->idle) != 0);
    c->pending_closes = 3;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->conn_count++;
    srv->handles_open++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        conn_close(c, "accept failed");
        return;
    }
    conn_peer(c);
    if (srv->conn_count > lim(srv->cfg->max_connections, 1024)) {
        rgm_log(RGM_LOG_WARN, "server", "client=%s refused: max_connections (%u) reached",
                c->client, srv->cfg->max_connections);
        conn_close(c, "max_connections");
        return;
    }
    if (uv_tcp_nodelay(&c->tcp, 1) < 0)
        rgm_log(RGM_LOG_DEBUG, "server", "client=%s: TCP_NODELAY failed", c->client);
    llhttp_init(&c->parser, HTTP_REQUEST, &srv->settings);
    conn_update(c);
}

/* ---- server ---- */

rgm_server_t *rgm_server_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_handler_fn handler,
                             void *ud)
{
    rgm_server_t *srv = rgm_calloc(1, sizeof(*srv));

    srv->loop = loop;
    srv->cfg = cfg;
    srv->handler = handler;
    srv->ud = ud;
    llhttp_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_url_complete = on_url_complete;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_field_complete = on_header_field_complete;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_header_value_complete = on_header_value_complete;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_message_complete = on_message_complete;
    return srv;
}

static void on_listener_close(uv_handle_t *h)
{
    struct listener *l = rgm_container_of(h, struct listener, tcp);
    rgm_server_t *srv = l->srv;

    free(l);
    server_handle_closed(srv);
}

int rgm_server_listen(rgm_server_t *srv, const char *addr)
{
    char host[256];
    struct sockaddr_storage ss;
    struct listener *l = NULL;
    unsigned int flags = 0;
    int port = 0;
    int len;
    int err;

    if (srv->is_shutting_down)
        return UV_EINVAL;
    err = rgm_parse_hostport(addr, host, sizeof(host), &port);
    if (err < 0)
        return err;
    if (host[0] == '\0' || strcmp(host, "*") == 0)
        snprintf(host, sizeof(host), "0.0.0.0");
    else if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    memset(&ss, 0, sizeof(ss));
    if (strchr(host, ':')) {
        err = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss);
        flags = UV_TCP_IPV6ONLY;
    } else {
        err = uv_ip4_addr(host, port, (struct sockaddr_in *)&ss);
    }
    if (err < 0)
        return err;
    l = rgm_calloc(1, sizeof(*l));
    l->srv = srv;
    err = uv_tcp_init(srv->loop, &l->tcp);
    if (err < 0) {
        free(l);
        return err;
    }
    srv->handles_open++;
    /* libuv sets SO_REUSEADDR on bind. */
    err = uv_tcp_bind(&l->tcp, (const struct sockaddr *)&ss, flags);
    if (err < 0)
        goto fail_close;
    err = uv_listen((uv_stream_t *)&l->tcp, 511, on_connection);
    if (err < 0)
        goto fail_close;
    len = sizeof(ss);
    err = uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&ss, &len);
    if (err < 0)
        goto fail_close;
    srv->listeners = rgm_realloc(srv->listeners, (srv->listeners_len + 1) * sizeof(l));
    srv->ports = rgm_realloc(srv->ports, (srv->listeners_len + 1) * sizeof(int));
    srv->listeners[srv->listeners_len] = l;
    srv->ports[srv->listeners_len] = ss.ss_family == AF_INET6
                                         ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                         : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    srv->listeners_len++;
    return 0;

fail_close:
    uv_close((uv_handle_t *)&l->tcp, on_listener_close);
    return err;
}

int rgm_server_port(const rgm_server_t *srv, size_t nth)
{
    return nth < srv->listeners_len ? srv->ports[nth] : -1;
}

size_t rgm_server_conn_count(const rgm_server_t *srv)
{
    return srv->conn_count;
}

static void on_shutdown_timer(uv_timer_t *t)
{
    rgm_server_t *srv = rgm_container_of(t, rgm_server_t, shutdown_timer);
    struct conn *c;

    rgm_log(RGM_LOG_INFO, "server", "shutdown grace over: closing %zu connections",
            srv->conn_count);
    for (c = srv->conns; c; c = c->next)
        conn_close(c, "shutdown timeout");
}

void rgm_server_shutdown(rgm_server_t *srv, void (*done)(rgm_server_t *srv, void *ud), void *ud)
{
    struct conn *c;
    size_t i;

    if (srv->is_shutting_down)
        return;
    srv->is_shutting_down = 1;
    srv->done = done;
    srv->done_ud = ud;
    for (i = 0; i < srv->listeners_len; i++) {
        if (srv->listeners[i]) {
            uv_close((uv_handle_t *)&srv->listeners[i]->tcp, on_listener_close);
            srv->listeners[i] = NULL;
        }
    }
    /* Idle connections go now; busy ones answer with Connection: close, then go. */
    for (c = srv->conns; c; c = c->next) {
        if (!c->is_active)
            conn_close(c, "shutdown");
    }
    RGM_BUG_ON(uv_timer_init(srv->loop, &srv->shutdown_timer) != 0);
    srv->has_timer = 1;
    srv->handles_open++;
    if (srv->conn_count > 0 && uv_timer_start(&srv->shutdown_timer, on_shutdown_timer,
                                              srv->cfg->shutdown_timeout_ms, 0) < 0)
        on_shutdown_timer(&srv->shutdown_timer);
    shutdown_check(srv);
}

void rgm_server_free(rgm_server_t *srv)
{
    if (!srv)
        return;
    RGM_BUG_ON(srv->handles_open != 0);
    free(srv->listeners);
    free(srv->ports);
    free(srv);
}

/* ---- request accessors ---- */

enum rgm_method rgm_req_method(const rgm_req_t *req)
{
    return req->method;
}

const char *rgm_req_method_name(const rgm_req_t *req)
{
    return llhttp_method_name((llhttp_method_t)req->method_raw);
}

const char *rgm_req_path(const rgm_req_t *req)
{
    return req->path;
}

const char *rgm_req_query(const rgm_req_t *req)
{
    return req->query;
}

const char *rgm_req_header(const rgm_req_t *req, const char *name)
{
    unsigned i;

    for (i = 0; i < req->hdrs_len; i++) {
        if (rgm_strcaseeq(req->text + req->hdrs[i].name_off, name))
            return req->text + req->hdrs[i].value_off;
    }
    return NULL;
}

void rgm_server_set_error_headers(rgm_server_t *srv, const char *hdrs)
{
    srv->error_hdrs = hdrs;
}

int rgm_req_header_list(const rgm_req_t *req, const char *name, char *out, size_t outlen)
{
    size_t len = 0;
    unsigned i;
    int found = 0;

    if (outlen == 0)
        return UV_ENOBUFS;
    out[0] = '\0';
    for (i = 0; i < req->hdrs_len; i++) {
        const char *v = req->text + req->hdrs[i].value_off;
        const size_t vlen = strlen(v);

        if (!rgm_strcaseeq(req->text + req->hdrs[i].name_off, name))
            continue;
        if (len + (found ? 2 : 0) + vlen + 1 > outlen)
            return UV_ENOBUFS;
        if (found) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, v, vlen + 1);
        len += vlen;
        found = 1;
    }
    return found;
}

const char *rgm_req_client(const rgm_req_t *req)
{
    return req->c->client;
}

uint64_t rgm_req_id(const rgm_req_t *req)
{
    return req->id;
}

void rgm_req_set_cache_status(rgm_req_t *req, const char *status)
{
    req->cache_status = status;
}

void rgm_req_on_close(rgm_req_t *req, void (*cb)(rgm_req_t *req, void *ud), void *ud)
{
    req->on_close = cb;
    req->on_close_ud = ud;
}

/* ---- responses ---- */

int rgm_resp_start(rgm_req_t *req, int status, const char *hdrs, int64_t content_length)
{
    struct conn *c = req->c;
    const size_t hdrs_len = hdrs ? strlen(hdrs) : 0;
    const char *cache = req->cache_status;
    char date[32];
    size_t cap;
    size_t n;
    char *h;

    if (req->is_started || req->is_released || status < 100 || status > 999)
        return UV_EINVAL;
    if (hdrs_len > 0 && (hdrs_len < 2 || memcmp(hdrs + hdrs_len - 2, "\r\n", 2) != 0))
        return UV_EINVAL;
    if (c->state != CONN_OPEN)
        return UV_ECANCELED;
    req->is_started = 1;
    req->status = status;
    req->has_body = req->method != RGM_M_HEAD && status >= 200 && status != 204 && status != 304;
    req->is_chunked = content_length < 0 && req->has_body;
    req->content_length = content_length;
    req->is_keep_alive = req->is_keep_alive && !c->srv->is_shutting_down && !c->is_eof;
    cap = hdrs_len + HEAD_EXTRA + (cache ? strlen(cache) : 0);
    h = rgm_malloc(cap);
    rgm_http_date(date);
    n = (size_t)snprintf(h, cap, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    memcpy(h + n, hdrs ? hdrs : "", hdrs_len);
    n += hdrs_len;
    n += (size_t)snprintf(h + n, cap - n, "Date: %s\r\n", date);
    if (content_length >= 0 && status >= 200 && status != 204)
        n += (size_t)snprintf(h + n, cap - n, "Content-Length: %" PRId64 "\r\n", content_length);
    else if (req->is_chunked)
        n += (size_t)snprintf(h + n, cap - n, "Transfer-Encoding: chunked\r\n");
    if (cache)
        n += (size_t)snprintf(h + n, cap - n, "X-Cache: %s\r\n", cache);
    n += (size_t)snprintf(h + n, cap - n, "Connection: %s\r\n\r\n",
                          req->is_keep_alive ? "keep-alive" : "close");
    RGM_BUG_ON(n >= cap);
    req->pending_head = h;
    req->pending_head_len = n;
    return 0;
}

/* Checks shared by write and sendfile; accounts len against Content-Length. */
static int resp_body_check(rgm_req_t *req, uint64_t len)
{
    if (!req->is_started || req->is_finished || req->is_released)
        return UV_EINVAL;
    if (req->c->state != CONN_OPEN)
        return UV_ECANCELED;
    if (req->sf.is_active)
        return UV_EBUSY;
    if (req->content_length >= 0 && req->body_sent + len > (uint64_t)req->content_length)
        return UV_EINVAL;
    return 0;
}

/* Send the head now if it is still pending (nothing else to carry it). */
static int resp_flush_head(rgm_req_t *req)
{
    int err;

    if (!req->pending_head)
        return 0;
    err = wreq_send(req->c, wreq_build(req, NULL, 0, 0, NULL));
    if (err < 0)
        conn_close(req->c, "write failed");
    return err;
}

int rgm_resp_write(rgm_req_t *req, const void *data, size_t len, rgm_resp_cb cb, void *ud)
{
    struct conn *c = req->c;
    struct wreq *wr;
    int err;

    if (len > WRITE_MAX)
        return UV_EINVAL;
    err = resp_body_check(req, len);
    if (err < 0)
        return err;
    req->body_sent += len;
    if (!req->has_body || len == 0) {
        /* discarded (HEAD...), or nothing: a zero-size chunk would end the body */
        err = resp_flush_head(req);
        if (err < 0)
            return err;
        defer_cb(c, cb, ud, 0);
        return 0;
    }
    wr = wreq_build(req, data, len, 0, NULL);
    wr->cb = cb;
    wr->ud = ud;
    err = wreq_send(c, wr);
    if (err < 0)
        conn_close(c, "write failed");
    return err;
}

int rgm_resp_sendfile(rgm_req_t *req, int fd, uint64_t off, uint64_t len, rgm_resp_cb cb, void *ud)
{
    struct conn *c = req->c;
    struct sendfile_state *sf = &req->sf;
    int err;

    if (fd < 0)
        return UV_EBADF;
    err = resp_body_check(req, len);
    if (err < 0)
        return err;
    req->body_sent += len;
    err = resp_flush_head(req);
    if (err < 0)
        return err;
    if (!req->has_body || len == 0) {
        defer_cb(c, cb, ud, 0);
        return 0;
    }
    memset(sf, 0, sizeof(*sf));
    sf->is_active = 1;
    sf->fd = fd;
    sf->off = off;
    sf->left = len;
    sf->cb = cb;
    sf->ud = ud;
    /* Chunked framing needs our own writes around the bytes: copy those. */
    sf->mode = c->srv->cfg->use_sendfile && !req->is_chunked ? SF_SENDFILE : SF_PREAD;
    conn_schedule(c); /* start on the next turn: cb must never run from here */
    conn_update(c);
    return 0;
}

void rgm_resp_finish(rgm_req_t *req)
{
    struct conn *c = req->c;

    if (req->is_released)
        return;
    req->is_released = 1;
    req->is_finished = 1;
    if (c->state != CONN_OPEN)
        return; /* freed with the connection, without on_close */
    if (!req->is_started && rgm_resp_start(req, 500, NULL, 0) < 0) {
        conn_close(c, "finish without response");
        return;
    }
    if (req->has_body && req->content_length >= 0 &&
        req->body_sent != (uint64_t)req->content_length) {
        /* The body is shorter than announced: the client must see the connection end. */
        rgm_log(RGM_LOG_WARN, "server", "id=%llu body %llu of %lld bytes: closing",
                (unsigned long long)req->id, (unsigned long long)req->body_sent,
                (long long)req->content_length);
        c->is_draining = 1;
        req->is_keep_alive = 0;
    }
    if (req->pending_head || (req->is_chunked)) {
        if (wreq_send(c, wreq_build(req, NULL, 0, 1, NULL)) < 0) {
            conn_close(c, "write failed");
            return;
        }
    }
    conn_schedule(c); /* completion on the next turn, never on the caller's stack */
}

void rgm_resp_abort(rgm_req_t *req, const char *reason)
{
    struct conn *c = req->c;

    if (req->is_released)
        return;
    req->is_released = 1;
    rgm_log(RGM_LOG_INFO, "server", "client=%s id=%llu response aborted: %s", c->client,
            (unsigned long long)req->id, reason ? reason : "?");
    access_log(req, reason ? reason : "aborted");
    conn_close(c, reason ? reason : "aborted"); /* the request goes with the connection */
}

void rgm_resp_simple(rgm_req_t *req, int status, const char *hdrs, const char *content_type,
                     const void *body, size_t len)
{
    char *h = NULL;
    int err;

    if (content_type) {
        const size_t cap = strlen(content_type) + (hdrs ? strlen(hdrs) : 0) + 20;
        h = rgm_malloc(cap);
        snprintf(h, cap, "Content-Type: %s\r\n%s", content_type, hdrs ? hdrs : "");
    }
    err = rgm_resp_start(req, status, h ? h : hdrs, (int64_t)len);
    free(h);
    if (err == 0 && len > 0)
        err = rgm_resp_write(req, body, len, NULL, NULL);
    if (err < 0) {
        rgm_resp_abort(req, "response failed");
        return;
    }
    rgm_resp_finish(req);
}

void rgm_resp_error(rgm_req_t *req, int status, const char *code, const char *message,
                    const char *hdrs)
{
    size_t len;
    char *body = error_body(code, message, &len);

    rgm_resp_simple(req, status, hdrs, "application/json", body, len);
    free(body);
}
