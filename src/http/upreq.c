/* One upstream request in flight: it waits in the pool for a connection, writes the request,
 * reads the response along one path (socket -> TLS -> llhttp -> on_body), holds input back while
 * paused, gives the connection back (or retries once on a dead reused one), follows redirects and
 * reports the end. Connections themselves (connect, TLS handshake, idle reuse) are pool.c's.
 *
 * Lifetime: the request is freed in the close callback of its timer, after on_done returned, and
 * every on_done runs from that timer, never from inside a call of the user. */
#include "http/upreq.h"

#include "core/log.h"
#include "http/tls.h"

static void req_finish(rgm_upreq_t *r, int err);
static void req_send(rgm_upreq_t *r);
static void resp_reset(rgm_upreq_t *r);
static void update_reading(struct conn *conn);
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void conn_eof(struct conn *conn, int err);
static void drain_tls(struct conn *conn);
static void conn_input(struct conn *conn, const char *data, size_t len);
static void feed(rgm_upreq_t *r, const char *data, size_t len);
static void message_done(rgm_upreq_t *r, int has_extra);
static void follow_redirect(rgm_upreq_t *r);

/* ---- byte queues ---- */

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

/* ---- lifetime ---- */

/* The body may hold a secret (a refresh token): wiped, not just freed. */
static void drop_body(rgm_upreq_t *r)
{
    if (r->body)
        explicit_bzero(r->body, r->body_len);
    RGM_FREE(r->body);
    r->body_len = 0;
    r->has_body = 0;
}

static rgm_upreq_t *conn_req(const struct conn *conn)
{
    return conn->user ? rgm_container_of(conn->user, rgm_upreq_t, user) : NULL;
}

static void on_req_closed(uv_handle_t *h)
{
    rgm_upreq_t *r = rgm_container_of(h, rgm_upreq_t, timer);
    struct pool *p = r->pool;

    rgm_uphead_clear(&r->hdrs);
    drop_body(r);
    free(r->method);
    free(r->url);
    free(r->ca_file);
    free(r->cert_file);
    free(r->key_file);
    free(r->verify_name);
    rgm_uphead_block_free(&r->head);
    bytes_free(&r->hold);
    bytes_free(&r->raw);
    free(r);
    rgm_pool_unref(p);
}

/* Deliver what arrived while paused, then read again. */
static void req_resume_feed(rgm_upreq_t *r)
{
    struct conn *conn = r->user.conn;
    char *data = NULL;
    size_t len;

    if (r->is_paused) {
        update_reading(conn);
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
            update_reading(conn);
            return;
        }
    }
    len = bytes_take(&r->raw, &data);
    feed(r, data, len); /* also with len 0: completes a message that ended at the pause */
    free(data);
    if (r->state != R_ACTIVE || r->user.conn != conn)
        return;
    if (conn->tls)
        drain_tls(conn); /* may finish r */
    // cppcheck-suppress knownConditionTrueFalse
    if (r->state == R_ACTIVE && r->user.conn == conn)
        update_reading(conn);
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
    struct conn *conn = r->user.conn;

    if (r->state == R_DONE)
        return;
    rgm_pool_detach(&r->user);
    r->state = R_DONE;
    r->err = err;
    if (conn)
        rgm_pool_conn_close(conn);
    (void)uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

/* ---- the pool's user ---- */

static int is_retryable(const struct conn *conn, const rgm_upreq_t *r, int err)
{
    /* A request with a body is idempotent by rgm_upreq_set_body's contract. */
    int is_idempotent =
        strcmp(r->method, "GET") == 0 || strcmp(r->method, "HEAD") == 0 || r->has_body;

    return conn->is_reused && !r->is_retried && !r->has_bytes && is_idempotent &&
           (err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE);
}

static void on_bound(struct pool_user *u)
{
    rgm_upreq_t *r = rgm_container_of(u, rgm_upreq_t, user);

    r->state = R_ACTIVE;
    resp_reset(r);
}

static void on_ready(struct pool_user *u)
{
    rgm_upreq_t *r = rgm_container_of(u, rgm_upreq_t, user);
    struct conn *conn = u->conn;

    req_send(r);
    /* A new TLS connection may hold bytes that came with the handshake's last flight. */
    if (conn->tls && !conn->is_reused && conn->state == C_BUSY)
        drain_tls(conn);
}

/* The connection failed under r: one retry on a fresh connection when a reused keep-alive
 * connection died before answering, else r ends with err. */
static void on_conn_error(struct pool_user *u, int err)
{
    rgm_upreq_t *r = rgm_container_of(u, rgm_upreq_t, user);

    if (is_retryable(u->conn, r, err)) {
        r->is_retried = 1;
        r->state = R_QUEUED; /* before: the retry may bind r at once */
        rgm_pool_retry(u);
        return;
    }
    req_finish(r, err); /* closes the connection */
}

static const struct pool_user_ops user_ops = {
    .on_bound = on_bound,
    .on_ready = on_ready,
    .on_error = on_conn_error,
};

static void dispatch(rgm_upreq_t *r)
{
    const rgm_tls_client_cfg_t tls = {r->ca_file, r->insecure, r->cert_file, r->key_file,
                                      r->verify_name};

    r->state = R_QUEUED;
    r->user.ops = &user_ops;
    rgm_pool_dispatch(r->pool, &r->user, &r->u, &tls, r->net);
}

/* ---- writing the request ---- */

/* host[:port], IPv6 in brackets, the port only when not the scheme's default. */
static void append_authority(const rgm_upreq_t *r, struct bytes *b)
{
    const char *host = r->u.host;
    const int v6 = strchr(host, ':') != NULL;
    char line[24];
    int n;

    if (v6)
        bytes_append(b, "[", 1);
    bytes_append(b, host, strlen(host));
    if (v6)
        bytes_append(b, "]", 1);
    if (r->u.port != (r->u.is_https ? 443 : 80)) {
        n = snprintf(line, sizeof(line), ":%d", r->u.port);
        bytes_append(b, line, (size_t)n);
    }
}

/* The request; through a forwarding proxy (fwd) in absolute form with its Proxy-Authorization. */
static void build_request(const rgm_upreq_t *r, const rgm_proxy_t *fwd, struct bytes *b)
{
    static const char fixed[] = "\r\nUser-Agent: regmirror/0.1\r\nAccept-Encoding: identity\r\n"
                                "Connection: keep-alive\r\n";
    char line[24];
    const struct uphdr *h;
    int n;

    /* Appended piece by piece: no fixed buffer for the method, path or host to outgrow. */
    bytes_append(b, r->method, strlen(r->method));
    bytes_append(b, " ", 1);
    if (fwd) {
        bytes_append(b, "http://", 7);
        append_authority(r, b);
    }
    bytes_append(b, r->u.path, strlen(r->u.path));
    bytes_append(b, " HTTP/1.1\r\nHost: ", 17);
    append_authority(r, b);
    bytes_append(b, fixed, sizeof(fixed) - 1);
    if (fwd && fwd->auth) {
        bytes_append(b, "Proxy-Authorization: ", 21);
        bytes_append(b, fwd->auth, strlen(fwd->auth));
        bytes_append(b, "\r\n", 2);
    }
    for (h = r->hdrs.head; h; h = h->next) {
        bytes_append(b, h->name, strlen(h->name));
        bytes_append(b, ": ", 2);
        bytes_append(b, h->value, strlen(h->value));
        bytes_append(b, "\r\n", 2);
    }
    if (r->has_body) {
        n = snprintf(line, sizeof(line), "%zu", r->body_len);
        bytes_append(b, "Content-Length: ", 16);
        bytes_append(b, line, (size_t)n);
        bytes_append(b, "\r\n", 2);
    }
    bytes_append(b, "\r\n", 2);
    if (r->has_body)
        bytes_append(b, r->body, r->body_len);
}

/* The connection is ready (BUSY) and bound to r: send the request, then read the answer. */
static void req_send(rgm_upreq_t *r)
{
    struct conn *conn = r->user.conn;
    const rgm_proxy_t *fwd = rgm_pool_conn_forward(conn);
    struct bytes b = {0};
    int rc;

    build_request(r, fwd, &b);
    rc = rgm_pool_conn_write(conn, b.data, b.len);
    if (r->has_body || (fwd && fwd->auth))
        explicit_bzero(b.data, b.len); /* a body or proxy credentials: secrets */
    bytes_free(&b);
    if (rc < 0) {
        rgm_pool_conn_fail(conn, rc);
        return;
    }
    update_reading(conn);
}

/* ---- the read path: socket -> TLS -> llhttp -> on_body ---- */

static void on_read_timeout(uv_timer_t *t)
{
    rgm_pool_conn_fail(rgm_container_of(t, struct conn, timer), UV_ETIMEDOUT);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *conn = rgm_container_of(h, struct conn, tcp);

    (void)suggested;
    *buf = uv_buf_init(rgm_pool_conn_rbuf(conn), RGM_POOL_RBUF_SIZE);
}

/* A busy connection reads while its request has room for the bytes: not paused and no input
 * waiting. The read timeout runs only while it reads. (The pool reads while it handshakes and
 * while it is idle; nothing is read while it connects.) */
static void update_reading(struct conn *conn)
{
    const rgm_upreq_t *r = conn_req(conn);
    int want;

    if (conn->state != C_BUSY)
        return;
    want = r && !r->is_paused && !r->is_resume_pending && r->raw.len == 0 && r->hold.len == 0;
    if (want && !conn->is_reading) {
        int rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
        if (rc < 0) {
            rgm_pool_conn_fail(conn, rc);
            return;
        }
        conn->is_reading = 1;
    } else if (!want && conn->is_reading) {
        (void)uv_read_stop((uv_stream_t *)&conn->tcp);
        conn->is_reading = 0;
    }
    if (want)
        (void)uv_timer_start(&conn->timer, on_read_timeout, conn->pool->opts.read_timeout_ms, 0);
    else
        (void)uv_timer_stop(&conn->timer);
}

/* Bytes from the socket: plaintext goes to the parser, ciphertext through TLS first. */
static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *conn = rgm_container_of(s, struct conn, tcp);

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
        rgm_pool_conn_fail(conn, UV_EPROTO);
        return;
    }
    drain_tls(conn);
}

/* The stream ended (UV_EOF from the socket or a TLS close) or failed with err. */
static void conn_eof(struct conn *conn, int err)
{
    rgm_upreq_t *r = conn_req(conn);

    if (conn->state == C_IDLE || !r) {
        rgm_pool_conn_close(conn);
        return;
    }
    if (is_retryable(conn, r, err)) {
        rgm_pool_conn_fail(conn, err);
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
    rgm_pool_conn_fail(conn, err);
}

/* Decrypt into rbuf until it is full or TLS has nothing more (a record is at most 16 KiB: one
 * parser run and fetch append per buffer, not per record). Returns the last rgm_tls_read_plain
 * result (0: no more for now, >0: rbuf is full, <0: EOF or error after *got bytes; OpenSSL
 * reports those again on the next read). */
static ssize_t drain_fill(struct conn *conn, char *rbuf, size_t *got)
{
    ssize_t n;

    *got = 0;
    do {
        n = rgm_tls_read_plain(conn->tls, rbuf + *got, RGM_POOL_RBUF_SIZE - *got);
        if (n > 0)
            *got += (size_t)n;
    } while (n > 0 && *got < RGM_POOL_RBUF_SIZE);
    return n;
}

/* Decrypt and hand on what the TLS layer holds, unless the request is paused. When the exchange
 * ends in the loop the connection is idle: a further byte or a TLS close ends it, as in the
 * pool's idle reader. */
static void drain_tls(struct conn *conn)
{
    char *rbuf = rgm_pool_conn_rbuf(conn);

    for (;;) {
        ssize_t n;
        size_t got;

        if (conn->state == C_BUSY) {
            const rgm_upreq_t *r = conn_req(conn);

            if (!r || r->is_paused || r->is_resume_pending || r->raw.len > 0 || r->hold.len > 0)
                break;
        } else if (conn->state != C_IDLE) {
            break;
        }
        n = drain_fill(conn, rbuf, &got);
        if (got > 0) {
            conn_input(conn, rbuf, got);
            if (n != 0)
                continue; /* more (or an EOF or error, which TLS reports again) */
            break;
        }
        if (n == 0)
            break;
        if (n < 0) {
            conn_eof(conn, (int)n);
            return;
        }
    }
    if (conn->state != C_CLOSING && rgm_pool_conn_flush(conn) < 0)
        rgm_pool_conn_fail(conn, UV_EPROTO);
}

/* Response bytes (plaintext) for the busy connection. */
static void conn_input(struct conn *conn, const char *data, size_t len)
{
    rgm_upreq_t *r = conn_req(conn);

    if (conn->state != C_BUSY || !r) {
        rgm_pool_conn_close(conn); /* bytes nobody asked for: the connection is out of sync */
        return;
    }
    r->has_bytes = 1;
    (void)uv_timer_start(&conn->timer, on_read_timeout, conn->pool->opts.read_timeout_ms, 0);
    feed(r, data, len);
}

/* Parse plaintext; llhttp's callbacks below take the head and the body. While r is paused or
 * older input waits, the bytes queue behind it. */
static void feed(rgm_upreq_t *r, const char *data, size_t len)
{
    struct conn *conn = r->user.conn;
    llhttp_errno_t e;

    if (!data)
        data = "";
    if (r->is_paused || r->is_resume_pending || r->raw.len > 0 || r->hold.len > 0) {
        bytes_append(&r->raw, data, len); /* keeps the order of the bytes */
        update_reading(conn);
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
        update_reading(conn);
        return;
    }
    if (r->parse_err == 0)
        rgm_log(RGM_LOG_DEBUG, "client", "bad response from %s:%d: %s (%s)", r->u.host, r->u.port,
                llhttp_errno_name(e), llhttp_get_error_reason(&r->parser));
    req_finish(r, r->parse_err < 0 ? r->parse_err : UV_EPROTO);
}

/* ---- the read path: llhttp callbacks ---- */

/* The result of a header block call (uphead.h) as llhttp wants it. */
static int head_result(llhttp_t *p, int rc)
{
    rgm_upreq_t *r = p->data;

    if (rc == 0)
        return 0;
    r->parse_err = UV_EPROTO;
    llhttp_set_error_reason(p, rc == UV_E2BIG ? "too many response headers"
                                              : "response headers too large");
    return HPE_USER;
}

static struct uphead_block *head_of(const llhttp_t *p)
{
    return &((rgm_upreq_t *)p->data)->head;
}

static int on_message_begin(llhttp_t *p)
{
    rgm_upreq_t *r = p->data;

    rgm_uphead_block_reset(&r->head);
    r->status = 0;
    r->content_length = -1;
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    return head_result(p, rgm_uphead_field(head_of(p), at, len));
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    return head_result(p, rgm_uphead_value(head_of(p), at, len));
}

static int on_header_field_complete(llhttp_t *p)
{
    return head_result(p, rgm_uphead_field_done(head_of(p)));
}

static int on_header_value_complete(llhttp_t *p)
{
    return head_result(p, rgm_uphead_value_done(head_of(p)));
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

    rc = head_result(p, rgm_uphead_value_done(&r->head));
    if (rc != 0)
        return rc;
    r->status = p->status_code;
    r->content_length = (p->flags & F_CONTENT_LENGTH) ? (int64_t)p->content_length : -1;
    if (r->status < 200)
        return 0; /* interim response: llhttp parses the next one */
    r->is_redirect = 0;
    if (r->max_redirects > 0 && is_redirect_status(r->status) &&
        rgm_uphead_get(&r->head, "Location")) {
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
    rgm_uphead_block_reset(&r->head);
    bytes_free(&r->hold);
    bytes_free(&r->raw);
    r->content_length = -1;
    r->is_resume_pending = 0;
}

/* The whole response arrived: the connection goes back to the pool (kept alive unless bytes
 * followed the message), then r follows the redirect or ends. */
static void message_done(rgm_upreq_t *r, int has_extra)
{
    struct conn *conn = r->user.conn;
    int keep = r->is_keep_alive && !has_extra;

    rgm_pool_detach(&r->user);
    if (conn) /* always bound here; the check keeps gcc -O2 -Wnull-dereference quiet */
        rgm_pool_release(conn, keep);
    if (r->is_redirect)
        follow_redirect(r);
    else
        req_finish(r, 0);
}

/* ---- redirects ---- */

static void follow_redirect(rgm_upreq_t *r)
{
    const char *loc = rgm_uphead_get(&r->head, "Location");
    char next[4096];
    rgm_url_t nu;

    if (!loc || rgm_uphead_resolve_location(&r->u, loc, next, sizeof(next)) < 0 ||
        !rgm_uphead_is_url_safe(next) || rgm_url_parse(next, &nu) < 0) {
        req_finish(r, UV_EPROTO);
        return;
    }
    r->n_redirects++;
    if ((r->status == 303 && strcmp(r->method, "HEAD") != 0) ||
        ((r->status == 301 || r->status == 302) && strcmp(r->method, "POST") == 0)) {
        free(r->method);
        r->method = rgm_strdup("GET");
        drop_body(r);
        rgm_uphead_remove(&r->hdrs, "Content-Type");
    }
    if (nu.is_https != r->orig_https || nu.port != r->orig_port ||
        !rgm_strcaseeq(nu.host, r->orig_host)) {
        if (r->has_body) {
            req_finish(r, UV_EPERM); /* the body (a secret, maybe) stays with its origin */
            return;
        }
        rgm_uphead_remove(&r->hdrs, "Authorization"); /* and never added back: the list is ours */
        /* A registry's private CA and insecure_skip_verify are trust in that registry, not
         * in the CDN or object store it redirects to: those are verified with the system CAs. */
        RGM_FREE(r->ca_file);
        r->insecure = 0;
        RGM_FREE(r->cert_file); /* nor does the client certificate go there */
        RGM_FREE(r->key_file);
        RGM_FREE(r->verify_name);
        /* Nor the trust in its addresses: a redirect may name any host. */
        if (r->net == RGM_NET_ANY)
            r->net = RGM_NET_NO_LINKLOCAL;
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

/* ---- public: running a request (client.h) ---- */

int rgm_upreq_start(rgm_upreq_t *r, const rgm_upreq_cbs_t *cbs, void *ud)
{
    if (r->state != R_NEW)
        return UV_EINVAL;
    if (r->has_bad_header || r->pool->is_closing) {
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
    if (r->user.conn)
        update_reading(r->user.conn);
}

void rgm_upreq_resume(rgm_upreq_t *r)
{
    if (!r->is_paused || r->state == R_DONE)
        return;
    r->is_paused = 0;
    if (r->state != R_ACTIVE || !r->user.conn)
        return;
    /* Deferred so that on_body never runs inside the caller's own call. */
    r->is_resume_pending = 1;
    update_reading(r->user.conn);
    (void)uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

void rgm_upreq_cancel(rgm_upreq_t *r)
{
    if (r->state == R_DONE)
        return;
    req_finish(r, UV_ECANCELED);
}
