/* The handler's side of a response (rgm_resp_*): one start, body writes accounted against
 * Content-Length, HEAD and bodiless statuses discarding body bytes (callbacks still run),
 * file bodies handed to the connection, then finish or abort. It checks and records; the bytes
 * come from framing.c and go out through conn.c, which also runs the file body. */
#include "http/server.h"

#include <uv.h>

#include "core/log.h"
#include "http/conn.h"
#include "http/framing.h"
#include "http/reqhead.h"

#define WRITE_MAX ((size_t)1 << 30)

int rgm_resp_start(rgm_req_t *req, int status, const char *hdrs, int64_t content_length)
{
    struct conn *c = req->c;
    const size_t hdrs_len = hdrs ? strlen(hdrs) : 0;

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
    req->pending_head = rgm_framing_head(req, hdrs, hdrs_len, &req->pending_head_len);
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
    err = rgm_conn_send(req->c, rgm_framing_write(req, NULL, 0, 0, NULL));
    if (err < 0)
        rgm_conn_close(req->c, "write failed");
    return err;
}

int rgm_resp_writev(rgm_req_t *req, const struct iovec *iov, int n, rgm_resp_cb cb, void *ud)
{
    struct conn *c = req->c;
    struct wreq *wr;
    size_t len = 0;
    char *at;
    int err;
    int i;

    for (i = 0; i < n; i++) {
        if (iov[i].iov_len > WRITE_MAX - len)
            return UV_EINVAL;
        len += iov[i].iov_len;
    }
    err = resp_body_check(req, len);
    if (err < 0)
        return err;
    req->body_sent += len;
    if (!req->has_body || len == 0) {
        /* discarded (HEAD...), or nothing: a zero-size chunk would end the body */
        err = resp_flush_head(req);
        if (err < 0)
            return err;
        rgm_conn_defer(c, cb, ud, 0);
        return 0;
    }
    wr = rgm_framing_write(req, NULL, len, 0, &at);
    for (i = 0; i < n; i++) {
        memcpy(at, iov[i].iov_base, iov[i].iov_len);
        at += iov[i].iov_len;
    }
    wr->cb = cb;
    wr->ud = ud;
    err = rgm_conn_send(c, wr);
    if (err < 0)
        rgm_conn_close(c, "write failed");
    return err;
}

int rgm_resp_write(rgm_req_t *req, const void *data, size_t len, rgm_resp_cb cb, void *ud)
{
    struct iovec iov;

    iov.iov_base = (void *)data;
    iov.iov_len = len;
    return rgm_resp_writev(req, &iov, 1, cb, ud);
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
        rgm_conn_defer(c, cb, ud, 0);
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
    rgm_conn_schedule(c); /* start on the next turn: cb must never run from here */
    rgm_conn_update(c);
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
        rgm_conn_close(c, "finish without response");
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
        if (rgm_conn_send(c, rgm_framing_write(req, NULL, 0, 1, NULL)) < 0) {
            rgm_conn_close(c, "write failed");
            return;
        }
    }
    rgm_conn_schedule(c); /* completion on the next turn, never on the caller's stack */
}

void rgm_resp_abort(rgm_req_t *req, const char *reason)
{
    struct conn *c = req->c;

    if (req->is_released)
        return;
    req->is_released = 1;
    rgm_log(RGM_LOG_INFO, "server", "client=%s id=%llu response aborted: %s", c->client,
            (unsigned long long)req->id, reason ? reason : "?");
    rgm_req_log_access(req, reason ? reason : "aborted");
    rgm_conn_close(c, reason ? reason : "aborted"); /* the request goes with the connection */
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
    char *body = rgm_framing_error_json(code, message, &len);

    rgm_resp_simple(req, status, hdrs, "application/json", body, len);
    free(body);
}
