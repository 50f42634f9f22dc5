/* One downstream connection, from accept to its one close: reading into a bounded input
 * buffer, llhttp over it, one request at a time to the handler (pipelined ones wait in the
 * buffer), keep-alive, the header/idle/send/linger timers, queued writes with deferred
 * callbacks, file bodies (pread + write, or sendfile(2) on plain TCP), error answers for
 * requests that never reached the handler, and the graceful close. Over TLS (c->tls set), reads
 * go through the session into the same input buffer and every write is sealed first, so the
 * rest of the connection sees plaintext; file bodies then always take pread + write. It does
 * not build response bytes (framing.c), check the handler's calls (response.c) or accept
 * (server.c).
 *
 * The process must ignore SIGPIPE (main.c does): sendfile(2) to a peer that is gone raises it. */
#include "http/conn.h"

#include "config.h"

#include <errno.h>
#include <unistd.h>
#include <sys/types.h>
#ifdef HAVE_SYS_SENDFILE_H
#include <sys/sendfile.h>
#endif

#include <uv.h>
#include <llhttp.h>

#include "core/log.h"
#include "http/framing.h"
#include "http/reqhead.h"

#define IN_INIT       (4 * 1024)
#define IN_MAX        RGM_READ_BUF  /* pipelined input kept while a response is in progress */
#define FILE_CHUNK    (64 * 1024)   /* pread + write: one chunk in flight */
#define SENDFILE_STEP (1024 * 1024) /* per loop turn, so one fast client can't starve others */
#define LINGER_MS     2000          /* after our FIN: read and drop what the client still sends */
#define CIPHER_IN     (64 * 1024)   /* one read of TLS records, decrypted at once */

static void conn_close_graceful(struct conn *c);
static void conn_process(struct conn *c, const char *fresh, size_t fresh_len);
static void conn_kick(struct conn *c);
static void sf_step(struct conn *c);
static void tls_pull(struct conn *c);

/* ---- writes ---- */

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
        rgm_conn_close(c, "write failed");
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

/* Queue wr's bytes as they are (ciphertext over TLS). */
static int conn_write_raw(struct conn *c, struct wreq *wr)
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
    rgm_conn_update(c);
    return 0;
}

/* The ciphertext the session has ready, in one write that carries cb and is_file_chunk. */
static struct wreq *tls_take(struct conn *c, rgm_resp_cb cb, void *ud, int is_file_chunk)
{
    const size_t n = rgm_tls_cipher_pending(c->tls);
    struct wreq *wr;

    if (n == 0 && !cb && !is_file_chunk)
        return NULL;
    wr = rgm_malloc(sizeof(*wr) + n);
    memset(wr, 0, sizeof(*wr));
    wr->cb = cb;
    wr->ud = ud;
    wr->is_file_chunk = is_file_chunk;
    wr->len = rgm_tls_take_cipher_into(c->tls, wr->data, n);
    return wr;
}

/* Send whatever the session has produced (handshake flights, alerts, close_notify). */
static int tls_flush(struct conn *c)
{
    struct wreq *wr = tls_take(c, NULL, NULL, 0);

    return wr ? conn_write_raw(c, wr) : 0;
}

int rgm_conn_send(struct conn *c, struct wreq *wr)
{
    struct wreq *sealed;

    if (!c->tls)
        return conn_write_raw(c, wr);
    /* Seal the plaintext; the ciphertext write takes over wr's callback. */
    if (rgm_tls_write_plain(c->tls, wr->data, wr->len) < 0) {
        free(wr);
        return UV_EPROTO;
    }
    sealed = tls_take(c, wr->cb, wr->ud, wr->is_file_chunk);
    free(wr);
    return conn_write_raw(c, sealed);
}

void rgm_conn_defer(struct conn *c, rgm_resp_cb cb, void *ud, int status)
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
    rgm_conn_schedule(c);
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
void rgm_conn_schedule(struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (uv_idle_start(&c->idle, on_idle) < 0)
        rgm_conn_close(c, "idle start failed");
}

/* ---- error answers for requests that never reached the handler ---- */

static void conn_send_error(struct conn *c, int status, const char *code, const char *msg)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->is_active || c->is_draining) {
        rgm_conn_close(c, msg); /* a response may have started: can't answer any more */
        return;
    }
    rgm_req_free(c->req);
    c->req = NULL;
    c->is_draining = 1;
    /* The connection closes after these bytes. */
    if (rgm_conn_send(c, rgm_framing_error(status, code, msg, c->srv->error_hdrs)) < 0)
        rgm_conn_close(c, "write failed");
    conn_kick(c);
}

static void conn_parse_error(struct conn *c, llhttp_errno_t err)
{
    const int status = c->err_status ? c->err_status : 400;
    const char *code = c->err_status ? c->err_code : "UNSUPPORTED"; /* see reqhead.c */
    const char *msg = c->err_status ? c->err_msg : "malformed request";

    rgm_log(RGM_LOG_INFO, "server", "client=%s bad request: %s: %s", c->client,
            llhttp_errno_name(err), llhttp_get_error_reason(&c->parser));
    conn_send_error(c, status, code, msg);
}

/* ---- input kept behind a request ---- */

/* Keep len bytes of input behind what c->in holds. on_alloc capped the read, so c->in stays
 * within IN_MAX. */
static void in_keep(struct conn *c, const char *data, size_t len)
{
    RGM_BUG_ON(c->in_len + len > IN_MAX);
    if (c->in_len + len > c->in_cap) {
        size_t cap = c->in_cap ? c->in_cap : IN_INIT;
        while (cap < c->in_len + len)
            cap *= 2;
        c->in_cap = cap < IN_MAX ? cap : IN_MAX;
        c->in = rgm_realloc(c->in, c->in_cap);
    }
    memcpy(c->in + c->in_len, data, len);
    c->in_len += len;
}

/* Drop the first used bytes of c->in; an empty c->in is freed (an idle connection holds no
 * input memory). */
static void in_consume(struct conn *c, size_t used)
{
    RGM_BUG_ON(used > c->in_len);
    c->in_len -= used;
    if (c->in_len > 0) {
        memmove(c->in, c->in + used, c->in_len);
        return;
    }
    RGM_FREE(c->in);
    c->in_cap = 0;
}

/* ---- reading and the timer follow the state ---- */

static int flushed(const struct conn *c)
{
    return c->writes_pending == 0 && !c->defer_head && !(c->req && c->req->sf.is_active);
}

static void on_timer(uv_timer_t *t);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf);

/* Grow the input buffer towards IN_MAX; 1 when it has room. */
static int in_room(struct conn *c)
{
    if (c->in_len == c->in_cap && c->in_cap < IN_MAX) {
        c->in_cap = c->in_cap ? c->in_cap * 2 : IN_INIT;
        if (c->in_cap > IN_MAX)
            c->in_cap = IN_MAX;
        c->in = rgm_realloc(c->in, c->in_cap);
    }
    return c->in_len < c->in_cap;
}
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
        rgm_conn_close(c, "timer start failed");
}

void rgm_conn_update(struct conn *c)
{
    int want_read;
    enum tmode m;

    if (c->state != CONN_OPEN)
        return;
    want_read = !c->is_eof && (c->is_lingering || (!c->is_draining && c->in_len < IN_MAX));
    if (want_read && !c->is_reading) {
        if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) < 0) {
            rgm_conn_close(c, "read start failed");
            return;
        }
        c->is_reading = 1;
    } else if (!want_read && c->is_reading) {
        if (uv_read_stop((uv_stream_t *)&c->tcp) < 0) {
            rgm_conn_close(c, "read stop failed");
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

/* ---- closing ---- */

static void conn_free(struct conn *c)
{
    rgm_req_t *req = c->req;

    c->req = NULL;
    if (req && c->is_active && !req->is_released && req->on_close)
        req->on_close(req, req->on_close_ud);
    rgm_req_free(req);
    while (c->defer_head) {
        struct deferred *d = c->defer_head;
        c->defer_head = d->next;
        free(d);
    }
    free(c->in);
    rgm_tls_free(c->tls);
    c->tls = NULL;
    c->on_closed(c); /* the owner frees c (and may free the server): last */
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

/* Memory goes in the close callbacks, where a request still in the handler's hands gets its
 * on_close. */
void rgm_conn_close(struct conn *c, const char *reason)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    if (c->tls && !c->is_tls_counted) {
        /* the handshake never ended: the client left, or the timer closed it */
        c->is_tls_counted = 1;
        c->srv->tls_failed[RGM_TLS_FAIL_EOF]++;
    }
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
        rgm_conn_close(c, "shutdown failed");
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
        rgm_conn_close(c, "done");
        return;
    }
    if (c->tls) {
        rgm_tls_close_notify(c->tls);
        if (tls_flush(c) < 0) {
            rgm_conn_close(c, "write failed");
            return;
        }
    }
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown) < 0) {
        rgm_conn_close(c, "shutdown failed");
        return;
    }
    c->is_lingering = 1;
    in_consume(c, c->in_len);
    rgm_conn_update(c);
}

/* ---- events: timer and reads ---- */

static void on_timer(uv_timer_t *t)
{
    struct conn *c = rgm_container_of(t, struct conn, timer);
    const enum tmode m = c->tmode;

    c->tmode = T_NONE; /* one-shot: it has fired */
    switch (m) {
    case T_HEADER:
        if (c->is_head_started) {
            rgm_log(RGM_LOG_INFO, "server", "client=%s request head timeout", c->client);
            conn_send_error(c, 408, "UNSUPPORTED", "request head not received in time");
        } else {
            if (c->tls && !c->is_tls_counted) {
                c->is_tls_counted = 1;
                c->srv->tls_failed[RGM_TLS_FAIL_TIMEOUT]++;
                rgm_log(RGM_LOG_INFO, "tls", "client=%s handshake not done in time", c->client);
            }
            rgm_conn_close(c, "no request");
        }
        break;
    case T_IDLE:
        rgm_conn_close(c, "idle timeout");
        break;
    case T_SEND:
        rgm_log(RGM_LOG_INFO, "server", "client=%s send timeout", c->client);
        rgm_conn_close(c, "send timeout");
        break;
    case T_LINGER:
        rgm_conn_close(c, "linger timeout");
        break;
    case T_NONE:
        break;
    }
    rgm_conn_update(c);
}

/* Every socket reads into the server's one buffer (an idle connection holds none): on_read
 * consumes it before the loop reads another. Input that must wait behind a request in progress
 * is copied to c->in, so then the read is capped at what c->in may still take (IN_MAX). */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = rgm_container_of(h, struct conn, tcp);
    size_t room = RGM_READ_BUF;

    (void)suggested;
    if (c->tls && !c->is_lingering) {
        /* Records are fed to the session in on_read, right after this: one thread, one
         * buffer, so a TLS connection holds no ciphertext of its own. */
        static char cipher_in[CIPHER_IN];
        *buf = uv_buf_init(cipher_in, sizeof(cipher_in));
        return;
    }
    if (!c->is_lingering && (c->in_len > 0 || c->is_active))
        room = IN_MAX - c->in_len;
    if (room == 0) {
        *buf = uv_buf_init(NULL, 0); /* UV_ENOBUFS: rgm_conn_update stops reading */
        return;
    }
    *buf = uv_buf_init(c->srv->rbuf, (unsigned int)room);
}

/* TLS: the ciphertext of one read. Handshake first; then decrypt into the input buffer. */
static void tls_input(struct conn *c, const char *data, size_t len)
{
    char subject[256];
    int rc;

    if (rgm_tls_feed_cipher(c->tls, data, len) < 0) {
        rgm_conn_close(c, "tls feed failed");
        return;
    }
    if (!rgm_tls_is_done(c->tls)) {
        rc = rgm_tls_handshake(c->tls);
        if (tls_flush(c) < 0 && rc >= 0)
            rc = UV_EPIPE;
        if (rc < 0) {
            c->is_tls_counted = 1;
            c->srv->tls_failed[rgm_tls_fail_reason(c->tls)]++;
            rgm_conn_close(c, "tls handshake failed"); /* the alert, if any, is lost: fine */
            return;
        }
        if (rc == RGM_TLS_WANT)
            return;
        c->is_tls_counted = 1;
        c->srv->tls_ok++;
        rgm_tls_peer_subject(c->tls, subject, sizeof(subject));
        rgm_log(RGM_LOG_INFO, "tls", "client=%s handshake %s %s subject=%s", c->client,
                rgm_tls_version(c->tls), rgm_tls_cipher(c->tls), subject);
    }
    tls_pull(c);
}

/* Move decrypted bytes into the input buffer while it has room (the session keeps the rest
 * until a request completes and conn_process calls again). */
static void tls_pull(struct conn *c)
{
    ssize_t n;

    while (c->state == CONN_OPEN && !c->is_eof && in_room(c)) {
        n = rgm_tls_read_plain(c->tls, c->in + c->in_len, c->in_cap - c->in_len);
        if (n == 0)
            break;
        if (n == UV_EOF) {
            c->is_eof = 1; /* close_notify: like a FIN */
            break;
        }
        if (n < 0) {
            rgm_conn_close(c, "tls read failed");
            return;
        }
        c->in_len += (size_t)n;
    }
    if (c->state == CONN_OPEN && tls_flush(c) < 0) /* e.g. a KeyUpdate answer */
        rgm_conn_close(c, "write failed");
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = rgm_container_of(s, struct conn, tcp);

    if (c->state != CONN_OPEN || nread == 0)
        return;
    if (nread == UV_ENOBUFS) {
        rgm_conn_update(c);
        return;
    }
    if (nread < 0) {
        c->is_eof = 1;
        if (nread != UV_EOF || c->is_lingering || (!c->is_active && !c->is_draining)) {
            rgm_conn_close(c, nread == UV_EOF ? "eof" : uv_strerror((int)nread));
            return;
        }
        /* Half-close with a request in progress: answer it, then close. A client that is
         * really gone shows up as a failed write. */
        rgm_conn_update(c);
        return;
    }
    if (c->is_lingering)
        return; /* dropped */
    if (c->tls) {
        tls_input(c, buf->base, (size_t)nread); /* plaintext into c->in */
        conn_process(c, NULL, 0);
        return;
    }
    if (c->in_len > 0 || c->is_active) {
        in_keep(c, buf->base, (size_t)nread); /* behind what is queued */
        conn_process(c, NULL, 0);
        return;
    }
    conn_process(c, buf->base, (size_t)nread);
}

/* ---- requests in turn ---- */

static void dispatch(struct conn *c)
{
    rgm_req_t *req = c->req;

    c->is_active = 1;
    c->n_requests++;
    c->is_head_started = 0;
    c->err_status = 0;
    rgm_conn_update(c);
    c->srv->handler(req, c->srv->ud);
}

/* Parse input and hand complete requests to the handler, one at a time. fresh is input just
 * read into the server's buffer (NULL: none), parsed in place while nothing is queued; what
 * follows a complete request is copied to c->in before the request is dispatched, since the
 * buffer is reused by the next read. Then c->in is parsed, request by request. */
static void conn_process(struct conn *c, const char *fresh, size_t fresh_len)
{
    if (c->is_processing) {
        RGM_BUG_ON(fresh != NULL); /* on_read never runs inside the handler */
        return;                    /* the loop below on the stack picks up the change */
    }
    if (c->tls && rgm_tls_is_done(c->tls) && !c->is_active && !c->is_draining)
        tls_pull(c); /* room again: what the session held back */
    c->is_processing = 1;
    while (c->state == CONN_OPEN && !c->is_active && !c->is_draining) {
        const char *data = fresh ? fresh : c->in;
        const size_t len = fresh ? fresh_len : c->in_len;
        llhttp_errno_t err;
        size_t used;

        if (len == 0)
            break;
        err = llhttp_execute(&c->parser, data, len);
        if (err != HPE_OK && err != HPE_PAUSED) {
            conn_parse_error(c, err);
            break;
        }
        used = err == HPE_OK ? len : (size_t)(llhttp_get_error_pos(&c->parser) - data);
        if (fresh) {
            if (err == HPE_PAUSED && used < len)
                in_keep(c, fresh + used, len - used);
            fresh = NULL;
        } else {
            in_consume(c, used);
        }
        if (err == HPE_OK)
            break; /* all used: a partial head is in the request already */
        llhttp_resume(&c->parser);
        dispatch(c);
    }
    c->is_processing = 0;
    if (c->state == CONN_OPEN && !c->is_active && !c->is_draining && c->is_eof)
        rgm_conn_close(c, "eof");
    rgm_conn_update(c);
}

/* The response is finished and flushed: log, free, next request or close. */
static void req_complete(struct conn *c)
{
    rgm_req_t *req = c->req;
    const int keep = req->is_keep_alive && !c->srv->is_shutting_down && !c->is_draining;

    rgm_req_log_access(req, NULL);
    c->req = NULL;
    c->is_active = 0;
    rgm_req_free(req);
    if (!keep) {
        conn_close_graceful(c);
        return;
    }
    conn_process(c, NULL, 0);
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
    rgm_conn_update(c);
}

/* ---- file bodies: pread + write, or sendfile(2) ---- */

static void sf_done(struct conn *c, int status)
{
    struct sendfile_state *sf = &c->req->sf;

    sf->is_active = 0;
    if (c->is_polling) {
        if (uv_poll_stop(&c->poll) < 0) {
            rgm_conn_close(c, "poll stop failed");
            return;
        }
        c->is_polling = 0;
    }
    rgm_conn_defer(c, sf->cb, sf->ud, status);
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
    wr = rgm_framing_write(req, NULL, n, 0, &at);
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
    err = rgm_conn_send(c, wr);
    if (err < 0) {
        sf->is_in_flight = 0;
        rgm_conn_close(c, "write failed");
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
        rgm_conn_close(c, "no fd");
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
            rgm_conn_close(c, "client gone");
            return;
        }
        sf_done(c, -errno);
        return;
    }
    if (step > 0 && c->tmode == T_SEND)
        c->tmode = T_NONE; /* progress: rgm_conn_update re-arms */
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
        rgm_conn_close(c, "poll error");
        return;
    }
    if (!c->req || !c->req->sf.is_active) {
        if (uv_poll_stop(h) < 0)
            rgm_conn_close(c, "poll stop failed");
        c->is_polling = 0;
        return;
    }
    sf_sendfile_step(c);
    rgm_conn_update(c);
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
    if (sf->mode == SF_PREAD || c->tls) /* sendfile(2) would bypass the session */
        sf_pread_step(c);
    else if (!c->is_polling)
        sf_sendfile_step(c); /* when polling, on_poll continues */
}

/* ---- start ---- */

int rgm_conn_init(struct conn *c, rgm_server_t *srv, void (*on_closed)(struct conn *c))
{
    int err;

    c->srv = srv;
    c->on_closed = on_closed;
    c->poll_fd = -1;
    err = uv_tcp_init(srv->loop, &c->tcp);
    if (err < 0)
        return err;
    /* Timer and idle init only fill in structs on unix; they cannot fail there. */
    RGM_BUG_ON(uv_timer_init(srv->loop, &c->timer) != 0);
    RGM_BUG_ON(uv_idle_init(srv->loop, &c->idle) != 0);
    c->pending_closes = 3;
    return 0;
}

void rgm_conn_start(struct conn *c)
{
    if (uv_tcp_nodelay(&c->tcp, 1) < 0)
        rgm_log(RGM_LOG_DEBUG, "server", "client=%s: TCP_NODELAY failed", c->client);
    llhttp_init(&c->parser, HTTP_REQUEST, &c->srv->settings);
    rgm_conn_update(c);
}
