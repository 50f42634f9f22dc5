/* Upstream HTTP/1.1 client on the loop: origins with keep-alive pools and FIFO wait queues,
 * connections (getaddrinfo, TCP connect over the address list, optional TLS filter), requests
 * (write, llhttp response parse, pause/resume, redirects, one retry on a dead reused connection).
 * It knows nothing of registries, auth or caches.
 *
 * Lifetimes: a request is freed in the close callback of its timer, after on_done returned; a
 * connection is freed once its handles are closed and no getaddrinfo is pending. Every on_done
 * runs from the request's own timer, never from inside a call of the user. */
#include "http/client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <llhttp.h>

#include "core/log.h"
#include "core/util.h"
#include "http/tls.h"

#define MAX_RESP_HEADERS      64
#define MAX_RESP_HEADER_BYTES (64 * 1024)
#define READ_BUF_SIZE         (64 * 1024)

/* ---- small byte buffer (rgm_buf is not needed for these private queues) ---- */

struct bytes {
    char *data;
    size_t len;
    size_t cap;
};

static void bytes_append(struct bytes *b, const char *p, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;

        while (cap < b->len + n)
            cap *= 2;
        b->data = rgm_realloc(b->data, cap);
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void bytes_free(struct bytes *b)
{
    RGM_FREE(b->data);
    b->len = 0;
    b->cap = 0;
}

/* Move the contents out of b (the caller frees *out). */
static size_t bytes_take(struct bytes *b, char **out)
{
    size_t n = b->len;

    *out = b->data;
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    return n;
}

/* ---- types ---- */

struct hdr {
    struct hdr *next;
    char *name;
    char *value;
};

struct conn;

struct origin {
    struct origin *next;
    int is_https;
    char *host;
    int port;
    char *ca_file; /* https only; NULL = system CAs */
    int insecure;
    struct conn *idle; /* most recently used first */
    unsigned n_idle;
    unsigned n_active; /* resolving, connecting or busy */
    rgm_upreq_t *wait_head;
    rgm_upreq_t *wait_tail;
};

enum conn_state { C_RESOLVING, C_CONNECTING, C_HANDSHAKE, C_BUSY, C_IDLE, C_CLOSING };

struct conn {
    rgm_client_t *client;
    struct origin *origin;
    enum conn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect, read or idle timeout, depending on state */
    uv_getaddrinfo_t gai;
    uv_connect_t connect_req;
    struct addrinfo *ai_list;
    struct addrinfo *ai_next; /* next address to try */
    int last_err;
    int is_gai_pending;
    int is_tcp_open; /* initialised and not (being) closed */
    int is_reading;
    int is_reused; /* has completed a request before */
    int n_closing; /* handle closes pending */
    rgm_tls_t *tls;
    rgm_upreq_t *req;
    struct conn *idle_next;
    struct conn *all_next;
    struct conn *all_prev;
    char *rbuf;
};

enum req_state { R_NEW, R_QUEUED, R_ACTIVE, R_DONE };

struct rgm_upreq {
    rgm_client_t *client;
    enum req_state state;
    char *method;
    char *url; /* current, after redirects */
    rgm_url_t u;
    int orig_https;
    char orig_host[256];
    int orig_port;
    char *ca_file;
    int insecure;
    struct hdr *hdrs;
    struct hdr *hdrs_tail;
    int has_bad_header;
    unsigned max_redirects;
    unsigned n_redirects;
    rgm_upreq_cbs_t cbs;
    void *ud;
    struct origin *origin;
    struct conn *conn;
    rgm_upreq_t *wait_next;
    uv_timer_t timer; /* deferred resume and on_done */
    int err;
    int is_done_called;
    int is_retried;
    int is_fresh_only;
    int is_paused;
    int is_resume_pending;
    /* response being parsed */
    llhttp_t parser;
    int status;
    int is_redirect;
    int is_msg_complete;
    int is_keep_alive;
    int has_bytes;
    int parse_err;
    int in_field;
    int value_open;
    size_t n_hdr;
    size_t name_off[MAX_RESP_HEADERS];
    size_t value_off[MAX_RESP_HEADERS];
    struct bytes hbuf;
    struct bytes hold; /* decoded body bytes that arrived while paused */
    struct bytes raw;  /* unparsed input kept while paused */
    int64_t content_length;
};

struct rgm_client {
    uv_loop_t *loop;
    rgm_client_opts_t opts;
    struct origin *origins;
    struct conn *conns;
    unsigned n_live; /* connections and requests not yet freed */
    int is_closing;
    int is_close_started;
    uv_timer_t close_timer; /* only closed, to report the end asynchronously */
    void (*close_cb)(void *ud);
    void *close_ud;
};

struct wreq {
    uv_write_t w;
    struct conn *conn;
    size_t len;
    char data[];
};

static void conn_close(struct conn *conn);
static void conn_fail(struct conn *conn, int err);
static void conn_update_reading(struct conn *conn);
static void conn_drain_tls(struct conn *conn);
static void origin_kick(struct origin *o);
static void req_finish(rgm_upreq_t *r, int err);
static void dispatch(rgm_upreq_t *r);
static void feed(rgm_upreq_t *r, const char *data, size_t len);
static void message_done(rgm_upreq_t *r, int has_extra);

/* ---- helpers ---- */

static int ascii_caseeq(const char *a, const char *b)
{
    for (;; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;

        if (x >= 'A' && x <= 'Z')
            x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (unsigned char)(y - 'A' + 'a');
        if (x != y)
            return 0;
        if (x == '\0')
            return 1;
    }
}

static int default_port(int is_https)
{
    return is_https ? 443 : 80;
}

/* "scheme://host[:port]" with brackets for IPv6, the port only when not the default. */
static void format_origin(int is_https, const char *host, int port, char *out, size_t len)
{
    int v6 = strchr(host, ':') != NULL;

    if (port == default_port(is_https))
        snprintf(out, len, "%s://%s%s%s", is_https ? "https" : "http", v6 ? "[" : "", host,
                 v6 ? "]" : "");
    else
        snprintf(out, len, "%s://%s%s%s:%d", is_https ? "https" : "http", v6 ? "[" : "", host,
                 v6 ? "]" : "", port);
}

/* A header name or value: no CR or LF, which would inject headers. */
static int is_token_safe(const char *s)
{
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n' || *s == '\0')
            return 0;
    }
    return 1;
}

/* A URL goes into the request line: no spaces or control characters. */
static int is_url_safe(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    }
    return 1;
}

static int is_get_or_head(const rgm_upreq_t *r)
{
    return strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0;
}

static void client_unlive(rgm_client_t *c);

/* ---- origins ---- */

static int same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static struct origin *origin_get(rgm_client_t *c, const rgm_upreq_t *r)
{
    const char *ca = r->u.is_https ? r->ca_file : NULL;
    int insecure = r->u.is_https ? r->insecure : 0;
    struct origin *o;

    for (o = c->origins; o; o = o->next) {
        if (o->is_https == r->u.is_https && o->port == r->u.port &&
            ascii_caseeq(o->host, r->u.host) && same_str(o->ca_file, ca) && o->insecure == insecure)
            return o;
    }
    o = rgm_calloc(1, sizeof(*o));
    o->is_https = r->u.is_https;
    o->host = rgm_strdup(r->u.host);
    o->port = r->u.port;
    o->ca_file = ca ? rgm_strdup(ca) : NULL;
    o->insecure = insecure;
    o->next = c->origins;
    c->origins = o;
    return o;
}

static void wait_remove(struct origin *o, rgm_upreq_t *r)
{
    rgm_upreq_t **pp;

    for (pp = &o->wait_head; *pp; pp = &(*pp)->wait_next) {
        if (*pp == r) {
            *pp = r->wait_next;
            break;
        }
    }
    o->wait_tail = NULL;
    for (r = o->wait_head; r; r = r->wait_next)
        o->wait_tail = r;
}

static void wait_push(struct origin *o, rgm_upreq_t *r, int at_head)
{
    r->state = R_QUEUED;
    r->origin = o;
    if (at_head) {
        r->wait_next = o->wait_head;
        o->wait_head = r;
        if (!o->wait_tail)
            o->wait_tail = r;
        return;
    }
    r->wait_next = NULL;
    if (o->wait_tail)
        o->wait_tail->wait_next = r;
    else
        o->wait_head = r;
    o->wait_tail = r;
}

static void idle_remove(struct origin *o, struct conn *conn)
{
    struct conn **pp;

    for (pp = &o->idle; *pp; pp = &(*pp)->idle_next) {
        if (*pp == conn) {
            *pp = conn->idle_next;
            conn->idle_next = NULL;
            o->n_idle--;
            return;
        }
    }
}

/* ---- response parsing (llhttp callbacks) ---- */

static void resp_reset(rgm_upreq_t *r);

static int hbuf_add(rgm_upreq_t *r, const char *p, size_t n)
{
    if (r->hbuf.len + n > MAX_RESP_HEADER_BYTES) {
        r->parse_err = UV_EPROTO;
        llhttp_set_error_reason(&r->parser, "response headers too large");
        return HPE_USER;
    }
    bytes_append(&r->hbuf, p, n);
    return 0;
}

static int end_value(rgm_upreq_t *r)
{
    if (!r->value_open)
        return 0;
    r->value_open = 0;
    return hbuf_add(r, "", 1);
}

static int on_message_begin(llhttp_t *p)
{
    rgm_upreq_t *r = p->data;

    r->n_hdr = 0;
    r->hbuf.len = 0;
    r->in_field = 0;
    r->value_open = 0;
    r->status = 0;
    r->content_length = -1;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    rgm_upreq_t *r = p->data;

    if (!r->in_field) {
        int rc = end_value(r);

        if (rc != 0)
            return rc;
        if (r->n_hdr >= MAX_RESP_HEADERS) {
            r->parse_err = UV_EPROTO;
            llhttp_set_error_reason(p, "too many response headers");
            return HPE_USER;
        }
        r->name_off[r->n_hdr++] = r->hbuf.len;
        r->in_field = 1;
    }
    return hbuf_add(r, at, len);
}

static int on_header_field_complete(llhttp_t *p)
{
    rgm_upreq_t *r = p->data;
    int rc = hbuf_add(r, "", 1);

    if (rc != 0)
        return rc;
    r->in_field = 0;
    r->value_open = 1;
    r->value_off[r->n_hdr - 1] = r->hbuf.len;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    return hbuf_add(p->data, at, len);
}

static int on_header_value_complete(llhttp_t *p)
{
    return end_value(p->data);
}

static int is_redirect_status(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

static int on_headers_complete(llhttp_t *p)
{
    rgm_upreq_t *r = p->data;
    int is_head = strcmp(r->method, "HEAD") == 0;
    int rc;

    rc = end_value(r);
    if (rc != 0)
        return rc;
    r->status = p->status_code;
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (r->status < 200)
        return 0; /* interim response: llhttp parses the next one */
    r->is_redirect = 0;
    if (r->max_redirects > 0 && is_redirect_status(r->status) && rgm_upreq_header(r, "Location")) {
        if (r->n_redirects >= r->max_redirects) {
            r->parse_err = UV_ELOOP;
            return HPE_USER;
        }
        r->is_redirect = 1; /* its body is read and discarded */
        return is_head ? 1 : 0;
    }
    if (r->cbs.on_head) {
        rc = r->cbs.on_head(r, r->status, r->ud);
        if (r->state != R_ACTIVE)
            return HPE_USER; /* cancelled from the callback */
        if (rc < 0) {
            r->parse_err = rc;
            return HPE_USER;
        }
    }
    return is_head ? 1 : 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    rgm_upreq_t *r = p->data;
    int rc;

    if (r->is_redirect || len == 0)
        return 0;
    /* llhttp counts the span as consumed whatever we return, so keep it while paused. */
    if (r->is_paused) {
        bytes_append(&r->hold, at, len);
        return HPE_PAUSED;
    }
    if (!r->cbs.on_body)
        return 0;
    rc = r->cbs.on_body(r, at, len, r->ud);
    if (r->state != R_ACTIVE)
        return HPE_USER;
    if (rc < 0) {
        r->parse_err = rc;
        return HPE_USER;
    }
    return r->is_paused ? HPE_PAUSED : 0;
}

static int on_message_complete(llhttp_t *p)
{
    rgm_upreq_t *r = p->data;

    if (r->status >= 100 && r->status < 200 && r->status != 101)
        return 0;
    r->is_msg_complete = 1;
    r->is_keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED; /* nothing after this message belongs to this request */
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void resp_reset(rgm_upreq_t *r)
{
    llhttp_init(&r->parser, HTTP_RESPONSE, &parser_settings);
    r->parser.data = r;
    r->status = 0;
    r->is_redirect = 0;
    r->is_msg_complete = 0;
    r->is_keep_alive = 0;
    r->has_bytes = 0;
    r->parse_err = 0;
    r->in_field = 0;
    r->value_open = 0;
    r->n_hdr = 0;
    r->hbuf.len = 0;
    bytes_free(&r->hold);
    bytes_free(&r->raw);
    r->content_length = -1;
    r->is_resume_pending = 0;
}

/* ---- writes ---- */

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = rgm_container_of(w, struct wreq, w);
    struct conn *conn = wr->conn;

    free(wr);
    if (status < 0 && status != UV_ECANCELED && conn->state != C_CLOSING)
        conn_fail(conn, status);
}

static int tcp_write(struct conn *conn, const char *data, size_t len)
{
    struct wreq *wr = rgm_malloc(sizeof(*wr) + len);
    uv_buf_t b;
    int rc;

    wr->conn = conn;
    wr->len = len;
    memcpy(wr->data, data, len);
    b = uv_buf_init(wr->data, (unsigned)len);
    rc = uv_write(&wr->w, (uv_stream_t *)&conn->tcp, &b, 1, on_write);
    if (rc < 0)
        free(wr);
    return rc;
}

static int conn_flush_cipher(struct conn *conn)
{
    char *out = NULL;
    size_t n = rgm_tls_take_cipher(conn->tls, &out);
    int rc = 0;

    if (n > 0)
        rc = tcp_write(conn, out, n);
    free(out);
    return rc;
}

static int conn_write(struct conn *conn, const char *data, size_t len)
{
    int rc;

    if (!conn->tls)
        return tcp_write(conn, data, len);
    rc = rgm_tls_write_plain(conn->tls, data, len);
    if (rc < 0)
        return rc;
    return conn_flush_cipher(conn);
}

/* ---- requests on a connection ---- */

static void build_request(const rgm_upreq_t *r, struct bytes *b)
{
    static const char fixed[] = "\r\nUser-Agent: regmirror/0.1\r\nAccept-Encoding: identity\r\n"
                                "Connection: keep-alive\r\n";
    char line[2600];
    const struct hdr *h;
    const char *host = r->u.host;
    int v6 = strchr(host, ':') != NULL;
    int n;

    n = snprintf(line, sizeof(line), "%s %s HTTP/1.1\r\nHost: %s%s%s", r->method, r->u.path,
                 v6 ? "[" : "", host, v6 ? "]" : "");
    bytes_append(b, line, (size_t)n);
    if (r->u.port != default_port(r->u.is_https)) {
        n = snprintf(line, sizeof(line), ":%d", r->u.port);
        bytes_append(b, line, (size_t)n);
    }
    bytes_append(b, fixed, sizeof(fixed) - 1);
    for (h = r->hdrs; h; h = h->next) {
        bytes_append(b, h->name, strlen(h->name));
        bytes_append(b, ": ", 2);
        bytes_append(b, h->value, strlen(h->value));
        bytes_append(b, "\r\n", 2);
    }
    bytes_append(b, "\r\n", 2);
}

/* The connection is ready (BUSY) and bound to r: send the request. */
static void req_send(rgm_upreq_t *r)
{
    struct conn *conn = r->conn;
    struct bytes b = {0};
    int rc;

    build_request(r, &b);
    rc = conn_write(conn, b.data, b.len);
    bytes_free(&b);
    if (rc < 0) {
        conn_fail(conn, rc);
        return;
    }
    conn_update_reading(conn);
}

static void bind_req(rgm_upreq_t *r, struct conn *conn)
{
    r->conn = conn;
    r->origin = conn->origin;
    r->state = R_ACTIVE;
    conn->req = r;
    resp_reset(r);
}

static void req_detach(rgm_upreq_t *r)
{
    if (r->state == R_QUEUED && r->origin)
        wait_remove(r->origin, r);
    if (r->conn) {
        r->conn->req = NULL;
        r->conn = NULL;
    }
}

static void on_req_closed(uv_handle_t *h)
{
    rgm_upreq_t *r = rgm_container_of(h, rgm_upreq_t, timer);
    rgm_client_t *c = r->client;
    struct hdr *hd, *next;

    for (hd = r->hdrs; hd; hd = next) {
        next = hd->next;
        free(hd->name);
        free(hd->value);
        free(hd);
    }
    free(r->method);
    free(r->url);
    free(r->ca_file);
    bytes_free(&r->hbuf);
    bytes_free(&r->hold);
    bytes_free(&r->raw);
    free(r);
    client_unlive(c);
}

/* Deliver what arrived while paused, then read again. */
static void req_resume_feed(rgm_upreq_t *r)
{
    struct conn *conn = r->conn;
    char *data = NULL;
    size_t len;

    if (r->is_paused) {
        conn_update_reading(conn);
        return;
    }
    if (r->hold.len > 0) {
        int rc;

        len = bytes_take(&r->hold, &data);
        rc = r->cbs.on_body ? r->cbs.on_body(r, data, len, r->ud) : 0;
        free(data);
        if (r->state != R_ACTIVE)
            return;
        if (rc < 0) {
            req_finish(r, rc);
            return;
        }
        if (r->is_paused) {
            conn_update_reading(conn);
            return;
        }
    }
    len = bytes_take(&r->raw, &data);
    feed(r, data, len); /* also with len 0: completes a message that ended at the pause */
    free(data);
    if (r->state != R_ACTIVE || r->conn != conn)
        return;
    if (conn->tls)
        conn_drain_tls(conn); /* may finish r */
    // cppcheck-suppress knownConditionTrueFalse
    if (r->state == R_ACTIVE && r->conn == conn)
        conn_update_reading(conn);
}

static void on_req_timer(uv_timer_t *t)
{
    rgm_upreq_t *r = rgm_container_of(t, rgm_upreq_t, timer);

    if (r->state == R_DONE) {
        if (!r->is_done_called) {
            r->is_done_called = 1;
            if (r->cbs.on_done)
                r->cbs.on_done(r, r->err, r->ud);
        }
        uv_close((uv_handle_t *)&r->timer, on_req_closed);
        return;
    }
    if (r->state == R_ACTIVE && r->is_resume_pending) {
        r->is_resume_pending = 0;
        req_resume_feed(r);
    }
}

/* End r with err: a connection still attached is closed, not pooled. on_done runs later. */
static void req_finish(rgm_upreq_t *r, int err)
{
    struct conn *conn = r->conn;

    if (r->state == R_DONE)
        return;
    req_detach(r);
    r->state = R_DONE;
    r->err = err;
    if (conn)
        conn_close(conn);
    (void)uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

/* ---- connections ---- */

static void conn_maybe_free(struct conn *conn)
{
    rgm_client_t *c = conn->client;

    if (conn->state != C_CLOSING || conn->n_closing > 0 || conn->is_gai_pending)
        return;
    if (conn->all_prev)
        conn->all_prev->all_next = conn->all_next;
    else
        c->conns = conn->all_next;
    if (conn->all_next)
        conn->all_next->all_prev = conn->all_prev;
    if (conn->ai_list)
        uv_freeaddrinfo(conn->ai_list);
    rgm_tls_free(conn->tls);
    free(conn->rbuf);
    free(conn);
    client_unlive(c);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *conn = h->data;

    conn->n_closing--;
    conn_maybe_free(conn);
}

/* One idempotent close. A request still attached gets UV_ECANCELED. */
static void conn_close(struct conn *conn)
{
    struct origin *o = conn->origin;
    rgm_upreq_t *r;

    if (conn->state == C_CLOSING)
        return;
    if (conn->state == C_IDLE)
        idle_remove(o, conn);
    else
        o->n_active--;
    conn->state = C_CLOSING;
    r = conn->req;
    if (r)
        req_finish(r, UV_ECANCELED);
    if (conn->is_gai_pending)
        (void)uv_cancel((uv_req_t *)&conn->gai);
    (void)uv_timer_stop(&conn->timer);
    conn->n_closing++;
    uv_close((uv_handle_t *)&conn->timer, on_conn_handle_closed);
    if (conn->is_tcp_open) {
        conn->is_tcp_open = 0;
        conn->n_closing++;
        uv_close((uv_handle_t *)&conn->tcp, on_conn_handle_closed);
    }
    origin_kick(o);
}

static int is_retryable(const struct conn *conn, const rgm_upreq_t *r, int err)
{
    return conn->is_reused && !r->is_retried && !r->has_bytes && is_get_or_head(r) &&
           (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE);
}

/* The connection failed with err: its request gets the error, or one retry on a fresh
 * connection when a reused keep-alive connection died before answering. */
static void conn_fail(struct conn *conn, int err)
{
    rgm_upreq_t *r = conn->req;

    if (conn->state == C_CLOSING)
        return;
    if (r && is_retryable(conn, r, err)) {
        rgm_log(RGM_LOG_DEBUG, "client", "reused connection to %s:%d died, retrying",
                conn->origin->host, conn->origin->port);
        req_detach(r);
        r->is_retried = 1;
        r->is_fresh_only = 1;
        wait_push(conn->origin, r, 1);
        conn_close(conn);
        return;
    }
    if (r) {
        req_finish(r, err); /* closes conn */
        return;
    }
    conn_close(conn);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct conn *conn = rgm_container_of(t, struct conn, timer);

    if (conn->state == C_IDLE)
        conn_close(conn);
    else
        conn_fail(conn, UV_ETIMEDOUT);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *conn = rgm_container_of(h, struct conn, tcp);

    (void)suggested;
    if (!conn->rbuf)
        conn->rbuf = rgm_malloc(READ_BUF_SIZE);
    *buf = uv_buf_init(conn->rbuf, READ_BUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

/* Read while there is room for the bytes: always while handshaking or idle (to see the server
 * close), and while busy unless the request is paused or has input waiting. The read timeout
 * runs only while a busy connection reads. */
static void conn_update_reading(struct conn *conn)
{
    const rgm_upreq_t *r = conn->req;
    int want = 0;

    switch (conn->state) {
    case C_HANDSHAKE:
    case C_IDLE:
        want = 1;
        break;
    case C_BUSY:
        want = r && !r->is_paused && !r->is_resume_pending && r->raw.len == 0 && r->hold.len == 0;
        break;
    default:
        return;
    }
    if (want && !conn->is_reading) {
        int rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
        if (rc < 0) {
            conn_fail(conn, rc);
            return;
        }
        conn->is_reading = 1;
    } else if (!want && conn->is_reading) {
        (void)uv_read_stop((uv_stream_t *)&conn->tcp);
        conn->is_reading = 0;
    }
    if (conn->state == C_BUSY) {
        if (want)
            (void)uv_timer_start(&conn->timer, on_conn_timer, conn->client->opts.read_timeout_ms,
                                 0);
        else
            (void)uv_timer_stop(&conn->timer);
    }
}

/* Response bytes (plaintext) for the busy connection. */
static void conn_input(struct conn *conn, const char *data, size_t len)
{
    rgm_upreq_t *r = conn->req;

    if (conn->state != C_BUSY || !r) {
        conn_close(conn); /* bytes nobody asked for: the connection is out of sync */
        return;
    }
    r->has_bytes = 1;
    (void)uv_timer_start(&conn->timer, on_conn_timer, conn->client->opts.read_timeout_ms, 0);
    feed(r, data, len);
}

static void conn_eof(struct conn *conn, int err)
{
    rgm_upreq_t *r = conn->req;

    if (conn->state == C_IDLE || !r) {
        conn_close(conn);
        return;
    }
    if (conn->state != C_BUSY) {
        conn_fail(conn, err == UV_EOF ? UV_ECONNRESET : err);
        return;
    }
    if (is_retryable(conn, r, err)) {
        conn_fail(conn, err);
        return;
    }
    if (err == UV_EOF) {
        (void)llhttp_finish(&r->parser); /* completes a close-delimited body */
        if (r->state != R_ACTIVE)
            return;
        if (r->is_msg_complete) {
            message_done(r, 1);
            return;
        }
        err = r->has_bytes ? UV_EOF : UV_ECONNRESET;
    }
    conn_fail(conn, err);
}

/* Decrypt and hand on what the TLS layer holds, unless the request is paused. */
static void conn_drain_tls(struct conn *conn)
{
    if (!conn->rbuf)
        conn->rbuf = rgm_malloc(READ_BUF_SIZE);
    for (;;) {
        ssize_t n;

        if (conn->state == C_BUSY) {
            const rgm_upreq_t *r = conn->req;

            if (!r || r->is_paused || r->is_resume_pending || r->raw.len > 0 || r->hold.len > 0)
                break;
        } else if (conn->state != C_IDLE) {
            break;
        }
        n = rgm_tls_read_plain(conn->tls, conn->rbuf, READ_BUF_SIZE);
        if (n == 0)
            break;
        if (n < 0) {
            conn_eof(conn, (int)n);
            return;
        }
        conn_input(conn, conn->rbuf, (size_t)n);
    }
    if (conn->state != C_CLOSING && conn_flush_cipher(conn) < 0)
        conn_fail(conn, UV_EPROTO);
}

static void conn_ready(struct conn *conn)
{
    (void)uv_timer_stop(&conn->timer);
    conn->state = C_BUSY;
    if (!conn->req) {
        conn_close(conn);
        return;
    }
    req_send(conn->req);
}

static void tls_step(struct conn *conn)
{
    int rc = rgm_tls_handshake(conn->tls);

    if (conn_flush_cipher(conn) < 0 && rc >= 0)
        rc = UV_EPROTO;
    if (rc == RGM_TLS_WANT)
        return;
    if (rc < 0) {
        conn_fail(conn, UV_EPROTO);
        return;
    }
    conn_ready(conn);
    if (conn->state == C_BUSY)
        conn_drain_tls(conn);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *conn = rgm_container_of(s, struct conn, tcp);

    (void)buf;
    if (nread == 0 || conn->state == C_CLOSING)
        return;
    if (nread < 0) {
        conn_eof(conn, (int)nread);
        return;
    }
    if (!conn->tls) {
        conn_input(conn, buf->base, (size_t)nread);
        return;
    }
    if (rgm_tls_feed_cipher(conn->tls, buf->base, (size_t)nread) < 0) {
        conn_fail(conn, UV_EPROTO);
        return;
    }
    if (conn->state == C_HANDSHAKE)
        tls_step(conn);
    else
        conn_drain_tls(conn);
}

static void connect_next(struct conn *conn);

static void on_tcp_closed_retry(uv_handle_t *h)
{
    struct conn *conn = h->data;

    conn->n_closing--;
    if (conn->state == C_CLOSING)
        conn_maybe_free(conn);
    else
        connect_next(conn);
}

/* Close the socket of a failed attempt; the next address is tried from the close callback. */
static void connect_failed(struct conn *conn, int err)
{
    conn->last_err = err;
    conn->is_tcp_open = 0;
    conn->is_reading = 0;
    conn->n_closing++;
    uv_close((uv_handle_t *)&conn->tcp, on_tcp_closed_retry);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *conn = rgm_container_of(req, struct conn, connect_req);
    int err = 0;

    if (status == UV_ECANCELED || conn->state == C_CLOSING)
        return;
    if (status < 0) {
        connect_failed(conn, status);
        return;
    }
    (void)uv_tcp_nodelay(&conn->tcp, 1);
    if (!conn->origin->is_https) {
        conn_ready(conn);
        return;
    }
    conn->tls =
        rgm_tls_new(conn->origin->ca_file, conn->origin->insecure, conn->origin->host, &err);
    if (!conn->tls) {
        conn_fail(conn, err);
        return;
    }
    conn->state = C_HANDSHAKE;
    conn_update_reading(conn);
    if (conn->state == C_HANDSHAKE)
        tls_step(conn);
}

static void connect_next(struct conn *conn)
{
    struct addrinfo *ai;
    int rc;

    while ((ai = conn->ai_next) != NULL) {
        conn->ai_next = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        rc = uv_tcp_init(conn->client->loop, &conn->tcp);
        if (rc < 0) {
            conn_fail(conn, rc);
            return;
        }
        conn->tcp.data = conn;
        conn->is_tcp_open = 1;
        rc = uv_tcp_connect(&conn->connect_req, &conn->tcp, ai->ai_addr, on_connect);
        if (rc < 0)
            connect_failed(conn, rc);
        return;
    }
    conn_fail(conn, conn->last_err < 0 ? conn->last_err : UV_EADDRNOTAVAIL);
}

static void on_gai(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    struct conn *conn = rgm_container_of(req, struct conn, gai);

    conn->is_gai_pending = 0;
    conn->ai_list = res;
    conn->ai_next = res;
    if (conn->state == C_CLOSING) {
        conn_maybe_free(conn);
        return;
    }
    if (status < 0) {
        rgm_log(RGM_LOG_DEBUG, "client", "resolving %s: %s", conn->origin->host,
                uv_strerror(status));
        conn_fail(conn, status);
        return;
    }
    conn->state = C_CONNECTING;
    connect_next(conn);
}

/* A new connection for r (which counts against the origin's limit from now on). */
static void conn_new(struct origin *o, rgm_upreq_t *r)
{
    rgm_client_t *c = r->client;
    struct conn *conn = rgm_calloc(1, sizeof(*conn));
    struct addrinfo hints;
    char port[16];
    int rc;

    conn->client = c;
    conn->origin = o;
    conn->state = C_RESOLVING;
    c->n_live++;
    conn->all_next = c->conns;
    if (c->conns)
        c->conns->all_prev = conn;
    c->conns = conn;
    o->n_active++;
    (void)uv_timer_init(c->loop, &conn->timer);
    conn->timer.data = conn;
    bind_req(r, conn);
    (void)uv_timer_start(&conn->timer, on_conn_timer, c->opts.connect_timeout_ms, 0);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    snprintf(port, sizeof(port), "%d", o->port);
    conn->is_gai_pending = 1;
    rc = uv_getaddrinfo(c->loop, &conn->gai, on_gai, o->host, port, &hints);
    if (rc < 0) {
        conn->is_gai_pending = 0;
        conn_fail(conn, rc);
    }
}

/* The connection finished a request: give it to a waiter, keep it idle, or close it. */
static void conn_release(struct conn *conn, int keep)
{
    struct origin *o = conn->origin;
    rgm_upreq_t *w;

    if (!keep || conn->client->is_closing) {
        conn_close(conn);
        return;
    }
    conn->is_reused = 1;
    for (w = o->wait_head; w; w = w->wait_next) {
        if (!w->is_fresh_only)
            break;
    }
    if (w) {
        wait_remove(o, w);
        bind_req(w, conn);
        req_send(w);
        return;
    }
    if (o->n_idle >= conn->client->opts.max_idle_per_origin) {
        conn_close(conn);
        return;
    }
    o->n_active--;
    o->n_idle++;
    conn->state = C_IDLE;
    conn->idle_next = o->idle;
    o->idle = conn;
    (void)uv_timer_start(&conn->timer, on_conn_timer, conn->client->opts.idle_timeout_ms, 0);
    conn_update_reading(conn);
    origin_kick(o);
}

/* Start waiting requests: on idle connections, or on new ones while under the limit. */
static void origin_kick(struct origin *o)
{
    rgm_upreq_t *r;
    struct conn *conn;

    while ((r = o->wait_head) != NULL && !r->client->is_closing) {
        if (!r->is_fresh_only && o->idle) {
            conn = o->idle;
            o->idle = conn->idle_next;
            conn->idle_next = NULL;
            o->n_idle--;
            o->n_active++;
            conn->state = C_BUSY;
            wait_remove(o, r);
            bind_req(r, conn);
            req_send(r);
            continue;
        }
        if (o->n_active >= r->client->opts.max_conns_per_origin)
            break;
        wait_remove(o, r);
        conn_new(o, r);
    }
}

static void dispatch(rgm_upreq_t *r)
{
    struct origin *o = origin_get(r->client, r);

    wait_push(o, r, 0);
    origin_kick(o);
}

/* ---- redirects ---- */

static void remove_authorization(rgm_upreq_t *r)
{
    struct hdr **pp = &r->hdrs;
    struct hdr *h;

    r->hdrs_tail = NULL;
    while ((h = *pp) != NULL) {
        if (ascii_caseeq(h->name, "Authorization")) {
            *pp = h->next;
            free(h->name);
            free(h->value);
            free(h);
            continue;
        }
        r->hdrs_tail = h;
        pp = &h->next;
    }
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        char a = *s, b = *prefix;

        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

/* Resolve a Location value against the current URL into out. 0 or UV_EINVAL. */
static int resolve_location(const rgm_upreq_t *r, const char *loc, char *out, size_t len)
{
    char origin[300];
    const char *cur = r->u.path;
    size_t dir_len, loc_len = strcspn(loc, "#");
    int n;

    format_origin(r->u.is_https, r->u.host, r->u.port, origin, sizeof(origin));
    if (has_prefix_ci(loc, "http://") || has_prefix_ci(loc, "https://"))
        n = snprintf(out, len, "%.*s", (int)loc_len, loc);
    else if (loc[0] == '/' && loc[1] == '/')
        n = snprintf(out, len, "%s:%.*s", r->u.is_https ? "https" : "http", (int)loc_len, loc);
    else if (loc[0] == '/')
        n = snprintf(out, len, "%s%.*s", origin, (int)loc_len, loc);
    else {
        dir_len = strcspn(cur, "?");
        while (dir_len > 0 && cur[dir_len - 1] != '/')
            dir_len--;
        n = snprintf(out, len, "%s%.*s%.*s", origin, (int)dir_len, cur, (int)loc_len, loc);
    }
    if (n < 0 || (size_t)n >= len)
        return UV_EINVAL;
    return 0;
}

static void follow_redirect(rgm_upreq_t *r)
{
    const char *loc = rgm_upreq_header(r, "Location");
    char next[4096];
    rgm_url_t nu;

    if (!loc || resolve_location(r, loc, next, sizeof(next)) < 0 || !is_url_safe(next) ||
        rgm_url_parse(next, &nu) < 0) {
        req_finish(r, UV_EPROTO);
        return;
    }
    r->n_redirects++;
    if (r->status == 303 && strcmp(r->method, "HEAD") != 0) {
        free(r->method);
        r->method = rgm_strdup("GET");
    }
    if (nu.is_https != r->orig_https || nu.port != r->orig_port ||
        !ascii_caseeq(nu.host, r->orig_host)) {
        remove_authorization(r); /* and never added back: the list is ours */
        /* A registry's private CA and insecure_skip_verify are trust in that registry, not
         * in the CDN or object store it redirects to: those are verified with the system CAs. */
        RGM_FREE(r->ca_file);
        r->insecure = 0;
    }
    rgm_log(RGM_LOG_DEBUG, "client", "redirect %d (%u of %u)", r->status, r->n_redirects,
            r->max_redirects);
    free(r->url);
    r->url = rgm_strdup(next);
    r->u = nu;
    resp_reset(r);
    r->state = R_NEW;
    dispatch(r);
}

/* ---- feeding the parser ---- */

static void message_done(rgm_upreq_t *r, int has_extra)
{
    struct conn *conn = r->conn;
    int keep = r->is_keep_alive && !has_extra;

    req_detach(r);
    if (conn) /* always bound here; the check keeps gcc -O2 -Wnull-dereference quiet */
        conn_release(conn, keep);
    if (r->is_redirect)
        follow_redirect(r);
    else
        req_finish(r, 0);
}

static void feed(rgm_upreq_t *r, const char *data, size_t len)
{
    struct conn *conn = r->conn;
    llhttp_errno_t e;

    if (!data)
        data = "";
    if (r->is_paused || r->is_resume_pending || r->raw.len > 0 || r->hold.len > 0) {
        bytes_append(&r->raw, data, len); /* keeps the order of the bytes */
        conn_update_reading(conn);
        return;
    }
    e = llhttp_execute(&r->parser, data, len);
    if (r->state != R_ACTIVE)
        return;
    if (e == HPE_OK && !r->is_msg_complete)
        return;
    if (e == HPE_PAUSED || e == HPE_OK) {
        /* Paused by on_body or on_message_complete: the input from pos on is not parsed. */
        const char *pos = e == HPE_PAUSED ? llhttp_get_error_pos(&r->parser) : NULL;
        size_t rest = 0;

        if (e == HPE_PAUSED)
            llhttp_resume(&r->parser);
        if (pos && pos >= data && pos <= data + len)
            rest = (size_t)(data + len - pos);
        if (r->is_msg_complete) {
            message_done(r, rest > 0);
            return;
        }
        bytes_append(&r->raw, pos, rest);
        conn_update_reading(conn);
        return;
    }
    if (r->parse_err == 0)
        rgm_log(RGM_LOG_DEBUG, "client", "bad response from %s:%d: %s (%s)", r->u.host, r->u.port,
                llhttp_errno_name(e), llhttp_get_error_reason(&r->parser));
    req_finish(r, r->parse_err < 0 ? r->parse_err : UV_EPROTO);
}

/* ---- client ---- */

static void on_client_closed(uv_handle_t *h)
{
    rgm_client_t *c = rgm_container_of(h, rgm_client_t, close_timer);
    struct origin *o, *next;

    for (o = c->origins; o; o = next) {
        next = o->next;
        free(o->host);
        free(o->ca_file);
        free(o);
    }
    if (c->close_cb)
        c->close_cb(c->close_ud);
    free(c);
}

static void client_unlive(rgm_client_t *c)
{
    c->n_live--;
    if (c->is_closing && c->n_live == 0 && !c->is_close_started) {
        c->is_close_started = 1;
        uv_close((uv_handle_t *)&c->close_timer, on_client_closed);
    }
}

rgm_client_t *rgm_client_new(uv_loop_t *loop, const rgm_client_opts_t *opts)
{
    rgm_client_t *c = rgm_calloc(1, sizeof(*c));

    c->loop = loop;
    if (opts)
        c->opts = *opts;
    if (c->opts.connect_timeout_ms == 0)
        c->opts.connect_timeout_ms = 10000;
    if (c->opts.read_timeout_ms == 0)
        c->opts.read_timeout_ms = 60000;
    if (c->opts.max_idle_per_origin == 0)
        c->opts.max_idle_per_origin = 8;
    if (c->opts.max_conns_per_origin == 0)
        c->opts.max_conns_per_origin = 32;
    if (c->opts.idle_timeout_ms == 0)
        c->opts.idle_timeout_ms = 30000;
    (void)uv_timer_init(loop, &c->close_timer);
    return c;
}

void rgm_client_close(rgm_client_t *c, void (*cb)(void *ud), void *ud)
{
    struct conn *conn, *next;

    c->is_closing = 1;
    c->close_cb = cb;
    c->close_ud = ud;
    for (conn = c->conns; conn; conn = next) {
        next = conn->all_next; /* conn_close never frees synchronously */
        conn_close(conn);
    }
    rgm_tls_cache_clear();
    /* Balance the reference taken here so that client_unlive can reach zero now. */
    c->n_live++;
    client_unlive(c);
}

/* ---- requests: public API ---- */

rgm_upreq_t *rgm_upreq_new(rgm_client_t *c, const char *method, const char *url,
                           const rgm_tls_opts_t *tls)
{
    rgm_upreq_t *r;
    rgm_url_t u;

    if (!method || !url || rgm_url_parse(url, &u) < 0)
        return NULL;
    r = rgm_calloc(1, sizeof(*r));
    r->client = c;
    r->state = R_NEW;
    r->method = rgm_strdup(method);
    r->url = rgm_strdup(url);
    r->u = u;
    r->orig_https = u.is_https;
    snprintf(r->orig_host, sizeof(r->orig_host), "%s", u.host);
    r->orig_port = u.port;
    if (tls) {
        r->ca_file = tls->ca_file ? rgm_strdup(tls->ca_file) : NULL;
        r->insecure = tls->insecure_skip_verify ? 1 : 0;
    }
    r->max_redirects = 5;
    r->content_length = -1;
    if (!is_url_safe(method) || !is_url_safe(url))
        r->has_bad_header = 1;
    (void)uv_timer_init(c->loop, &r->timer);
    c->n_live++;
    return r;
}

void rgm_upreq_add_header(rgm_upreq_t *r, const char *name, const char *value)
{
    struct hdr *h;

    if (!is_token_safe(name) || !is_token_safe(value) || name[0] == '\0' || strchr(name, ':')) {
        r->has_bad_header = 1; /* refused at start: a CR or LF would inject headers */
        return;
    }
    if (ascii_caseeq(name, "Host") || ascii_caseeq(name, "Connection"))
        return;
    h = rgm_calloc(1, sizeof(*h));
    h->name = rgm_strdup(name);
    h->value = rgm_strdup(value);
    if (r->hdrs_tail)
        r->hdrs_tail->next = h;
    else
        r->hdrs = h;
    r->hdrs_tail = h;
}

void rgm_upreq_set_max_redirects(rgm_upreq_t *r, unsigned max)
{
    r->max_redirects = max;
}

int rgm_upreq_start(rgm_upreq_t *r, const rgm_upreq_cbs_t *cbs, void *ud)
{
    if (r->state != R_NEW)
        return UV_EINVAL;
    if (r->has_bad_header || r->client->is_closing) {
        int err = r->has_bad_header ? UV_EINVAL : UV_ECANCELED;

        r->state = R_DONE;
        r->is_done_called = 1;
        uv_close((uv_handle_t *)&r->timer, on_req_closed);
        return err;
    }
    if (cbs)
        r->cbs = *cbs;
    r->ud = ud;
    dispatch(r);
    return 0;
}

void rgm_upreq_pause(rgm_upreq_t *r)
{
    if (r->is_paused || r->state == R_DONE)
        return;
    r->is_paused = 1;
    if (r->conn)
        conn_update_reading(r->conn);
}

void rgm_upreq_resume(rgm_upreq_t *r)
{
    if (!r->is_paused || r->state == R_DONE)
        return;
    r->is_paused = 0;
    if (r->state != R_ACTIVE || !r->conn)
        return;
    /* Deferred so that on_body never runs inside the caller's own call. */
    r->is_resume_pending = 1;
    conn_update_reading(r->conn);
    (void)uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

void rgm_upreq_cancel(rgm_upreq_t *r)
{
    if (r->state == R_DONE)
        return;
    req_finish(r, UV_ECANCELED);
}

int rgm_upreq_status(const rgm_upreq_t *r)
{
    return r->status;
}

const char *rgm_upreq_header(const rgm_upreq_t *r, const char *name)
{
    size_t i;

    for (i = 0; i < r->n_hdr; i++) {
        if (ascii_caseeq(r->hbuf.data + r->name_off[i], name))
            return r->hbuf.data + r->value_off[i];
    }
    return NULL;
}

int64_t rgm_upreq_content_length(const rgm_upreq_t *r)
{
    return r->content_length;
}

const char *rgm_upreq_url(const rgm_upreq_t *r)
{
    return r->url;
}
