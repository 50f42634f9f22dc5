/* Per-origin keep-alive pools: origins and their FIFO wait queues, the connection limit, idle
 * connections (reused most recent first, closed after idle_timeout or when the server speaks or
 * closes), new connections (getaddrinfo, TCP connect over the address list, a CONNECT tunnel
 * through a proxy, TLS handshake) and the pool's share of the close. Nothing of HTTP: a busy
 * connection is read by its user.
 *
 * Lifetimes: a connection is freed once its handles are closed and no getaddrinfo is pending; the
 * pool reports its end (on_closed) from a close callback when the last reference goes. */
#include "http/pool.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "core/log.h"

struct origin {
    struct pool *pool;
    struct origin *next;
    int is_https;
    char *host;
    int port;
    char *ca_file; /* https only; NULL = system CAs */
    int insecure;
    char *cert_file; /* https only; the client certificate, or NULL */
    char *key_file;
    char *verify_name; /* https only; the name the certificate is checked against, or NULL */
    enum rgm_net_policy net;
    const rgm_proxy_t *proxy; /* borrowed from the pool, or NULL: direct */
    struct conn *idle;        /* most recently used first */
    unsigned n_idle;
    unsigned n_active; /* resolving, connecting or busy */
    struct pool_user *wait_head;
    struct pool_user *wait_tail;
};

struct wreq {
    uv_write_t w;
    struct conn *conn;
    size_t len;
    char data[];
};

static void origin_kick(struct origin *o);
static void connect_next(struct conn *conn);

/* ---- the pool ---- */

void rgm_pool_init(struct pool *p, uv_loop_t *loop, const rgm_client_opts_t *opts,
                   void (*on_closed)(struct pool *p))
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->opts = *opts;
    p->on_closed = on_closed;
    (void)uv_timer_init(loop, &p->close_timer);
    (void)rgm_proxy_env_load(&p->proxy); /* an unusable value is logged and fails its requests */
    if (p->proxy.https && p->proxy.https->is_valid)
        rgm_log(RGM_LOG_INFO, "client", "https upstreams through the proxy %s:%d%s",
                p->proxy.https->host, p->proxy.https->port,
                p->proxy.no_proxy ? " (no_proxy set)" : "");
    if (p->proxy.http && p->proxy.http->is_valid)
        rgm_log(RGM_LOG_INFO, "client", "http upstreams through the proxy %s:%d%s",
                p->proxy.http->host, p->proxy.http->port,
                p->proxy.no_proxy ? " (no_proxy set)" : "");
}

static void on_pool_closed(uv_handle_t *h)
{
    struct pool *p = rgm_container_of(h, struct pool, close_timer);
    struct origin *o, *next;

    for (o = p->origins; o; o = next) {
        next = o->next;
        free(o->host);
        free(o->ca_file);
        free(o->cert_file);
        free(o->key_file);
        free(o->verify_name);
        free(o);
    }
    rgm_proxy_env_free(&p->proxy);
    p->on_closed(p); /* may free p */
}

void rgm_pool_ref(struct pool *p)
{
    p->n_refs++;
}

void rgm_pool_unref(struct pool *p)
{
    p->n_refs--;
    if (p->is_closing && p->n_refs == 0 && !p->is_close_started) {
        p->is_close_started = 1;
        uv_close((uv_handle_t *)&p->close_timer, on_pool_closed);
    }
}

void rgm_pool_close(struct pool *p)
{
    struct conn *conn, *next;

    p->is_closing = 1;
    for (conn = p->conns; conn; conn = next) {
        next = conn->all_next; /* rgm_pool_conn_close never frees synchronously */
        rgm_pool_conn_close(conn);
    }
    rgm_tls_cache_clear();
    /* Balance the reference taken here so that rgm_pool_unref can reach zero now. */
    rgm_pool_ref(p);
    rgm_pool_unref(p);
}

/* ---- origins and their queues ---- */

static int same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static char *dup_or_null(const char *s)
{
    return s ? rgm_strdup(s) : NULL;
}

static struct origin *origin_get(struct pool *p, const rgm_url_t *url,
                                 const rgm_tls_client_cfg_t *tls, enum rgm_net_policy net)
{
    static const rgm_tls_client_cfg_t none = {NULL, 0, NULL, NULL, NULL};
    const rgm_tls_client_cfg_t *t = url->is_https && tls ? tls : &none;
    const int insecure = t->insecure ? 1 : 0;
    struct origin *o;

    for (o = p->origins; o; o = o->next) {
        if (o->is_https == url->is_https && o->port == url->port &&
            rgm_strcaseeq(o->host, url->host) && same_str(o->ca_file, t->ca_file) &&
            o->insecure == insecure && same_str(o->cert_file, t->cert_file) &&
            same_str(o->key_file, t->key_file) && same_str(o->verify_name, t->verify_name) &&
            o->net == net)
            return o;
    }
    o = rgm_calloc(1, sizeof(*o));
    o->pool = p;
    o->is_https = url->is_https;
    o->host = rgm_strdup(url->host);
    o->port = url->port;
    o->ca_file = dup_or_null(t->ca_file);
    o->insecure = insecure;
    o->cert_file = dup_or_null(t->cert_file);
    o->key_file = dup_or_null(t->key_file);
    o->verify_name = dup_or_null(t->verify_name);
    o->net = net;
    o->proxy = rgm_proxy_for(&p->proxy, url->is_https, url->host);
    o->next = p->origins;
    p->origins = o;
    return o;
}

static void wait_remove(struct origin *o, struct pool_user *u)
{
    struct pool_user **pp;

    for (pp = &o->wait_head; *pp; pp = &(*pp)->next) {
        if (*pp == u) {
            *pp = u->next;
            break;
        }
    }
    u->is_queued = 0;
    o->wait_tail = NULL;
    for (u = o->wait_head; u; u = u->next)
        o->wait_tail = u;
}

static void wait_push(struct origin *o, struct pool_user *u, int at_head)
{
    u->origin = o;
    u->is_queued = 1;
    if (at_head) {
        u->next = o->wait_head;
        o->wait_head = u;
        if (!o->wait_tail)
            o->wait_tail = u;
        return;
    }
    u->next = NULL;
    if (o->wait_tail)
        o->wait_tail->next = u;
    else
        o->wait_head = u;
    o->wait_tail = u;
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

/* ---- users ---- */

static void bind_user(struct pool_user *u, struct conn *conn)
{
    u->conn = conn;
    u->origin = conn->origin;
    conn->user = u;
    u->ops->on_bound(u);
}

void rgm_pool_dispatch(struct pool *p, struct pool_user *u, const rgm_url_t *url,
                       const rgm_tls_client_cfg_t *tls, enum rgm_net_policy net)
{
    struct origin *o = origin_get(p, url, tls, net);

    wait_push(o, u, 0);
    origin_kick(o);
}

void rgm_pool_detach(struct pool_user *u)
{
    if (u->is_queued)
        wait_remove(u->origin, u);
    if (u->conn) {
        u->conn->user = NULL;
        u->conn = NULL;
    }
}

void rgm_pool_retry(struct pool_user *u)
{
    struct conn *conn = u->conn;

    rgm_log(RGM_LOG_DEBUG, "client", "reused connection to %s:%d died, retrying",
            conn->origin->host, conn->origin->port);
    rgm_pool_detach(u);
    u->is_fresh_only = 1;
    wait_push(conn->origin, u, 1);
    rgm_pool_conn_close(conn); /* starts u on a new connection */
}

/* ---- connections: close and failure ---- */

static void conn_maybe_free(struct conn *conn)
{
    struct pool *p = conn->pool;

    if (conn->state != C_CLOSING || conn->n_closing > 0 || conn->is_gai_pending)
        return;
    if (conn->all_prev)
        conn->all_prev->all_next = conn->all_next;
    else
        p->conns = conn->all_next;
    if (conn->all_next)
        conn->all_next->all_prev = conn->all_prev;
    if (conn->ai_list)
        uv_freeaddrinfo(conn->ai_list);
    rgm_tls_free(conn->tls);
    free(conn->rbuf);
    free(conn->tunnel);
    free(conn);
    rgm_pool_unref(p);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    struct conn *conn = h->data;

    conn->n_closing--;
    conn_maybe_free(conn);
}

void rgm_pool_conn_close(struct conn *conn)
{
    struct origin *o = conn->origin;

    if (conn->state == C_CLOSING)
        return;
    if (conn->state == C_IDLE)
        idle_remove(o, conn);
    else
        o->n_active--;
    conn->state = C_CLOSING;
    if (conn->user)
        conn->user->ops->on_error(conn->user, UV_ECANCELED);
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

void rgm_pool_conn_fail(struct conn *conn, int err)
{
    if (conn->state == C_CLOSING)
        return;
    if (conn->user) {
        conn->user->ops->on_error(conn->user, err); /* retries, or finishes and closes */
        return;
    }
    rgm_pool_conn_close(conn);
}

static void on_conn_timer(uv_timer_t *t)
{
    struct conn *conn = rgm_container_of(t, struct conn, timer);

    if (conn->state == C_IDLE)
        rgm_pool_conn_close(conn);
    else
        rgm_pool_conn_fail(conn, UV_ETIMEDOUT);
}

/* ---- connections: writes ---- */

static void on_write(uv_write_t *w, int status)
{
    struct wreq *wr = rgm_container_of(w, struct wreq, w);
    struct conn *conn = wr->conn;

    free(wr);
    if (status < 0 && status != UV_ECANCELED && conn->state != C_CLOSING)
        rgm_pool_conn_fail(conn, status);
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

int rgm_pool_conn_flush(struct conn *conn)
{
    char *out = NULL;
    size_t n;
    int rc = 0;

    if (!conn->tls)
        return 0;
    n = rgm_tls_take_cipher(conn->tls, &out);
    if (n > 0)
        rc = tcp_write(conn, out, n);
    free(out);
    return rc;
}

int rgm_pool_conn_write(struct conn *conn, const char *data, size_t len)
{
    int rc;

    if (!conn->tls)
        return tcp_write(conn, data, len);
    rc = rgm_tls_write_plain(conn->tls, data, len);
    if (rc < 0)
        return rc;
    return rgm_pool_conn_flush(conn);
}

/* ---- connections: the pool's reads (handshake, idle) ---- */

char *rgm_pool_conn_rbuf(struct conn *conn)
{
    if (!conn->rbuf)
        conn->rbuf = rgm_malloc(RGM_POOL_RBUF_SIZE);
    return conn->rbuf;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *conn = rgm_container_of(h, struct conn, tcp);

    (void)suggested;
    *buf = uv_buf_init(rgm_pool_conn_rbuf(conn), RGM_POOL_RBUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void tunnel_input(struct conn *conn, const char *data, size_t len);

/* The pool reads a connection while it handshakes, and while it is idle to see the server close
 * it; a busy connection is read by its user, with the user's callbacks. */
static void read_start(struct conn *conn)
{
    int rc;

    if (conn->is_reading)
        (void)uv_read_stop((uv_stream_t *)&conn->tcp); /* the user's callbacks */
    conn->is_reading = 0;
    rc = uv_read_start((uv_stream_t *)&conn->tcp, on_alloc, on_read);
    if (rc < 0) {
        rgm_pool_conn_fail(conn, rc);
        return;
    }
    conn->is_reading = 1;
}

static void read_stop(struct conn *conn)
{
    if (!conn->is_reading)
        return;
    (void)uv_read_stop((uv_stream_t *)&conn->tcp);
    conn->is_reading = 0;
}

/* Ready for a request: hand it, not reading, to its user, which sends and reads. */
static void conn_ready(struct conn *conn)
{
    (void)uv_timer_stop(&conn->timer);
    read_stop(conn);
    conn->state = C_BUSY;
    if (!conn->user) {
        rgm_pool_conn_close(conn);
        return;
    }
    conn->user->ops->on_ready(conn->user);
}

static void tls_step(struct conn *conn)
{
    int rc = rgm_tls_handshake(conn->tls);

    if (rgm_pool_conn_flush(conn) < 0 && rc >= 0)
        rc = UV_EPROTO;
    if (rc == RGM_TLS_WANT)
        return;
    if (rc < 0) {
        rgm_pool_conn_fail(conn, UV_EPROTO);
        return;
    }
    conn_ready(conn);
}

/* Idle and TLS: plaintext (the server speaks out of turn) or a TLS close ends the connection. */
static void idle_drain_tls(struct conn *conn)
{
    ssize_t n = rgm_tls_read_plain(conn->tls, rgm_pool_conn_rbuf(conn), RGM_POOL_RBUF_SIZE);

    if (n != 0 || rgm_pool_conn_flush(conn) < 0)
        rgm_pool_conn_close(conn);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *conn = rgm_container_of(s, struct conn, tcp);

    if (nread == 0 || conn->state == C_CLOSING)
        return;
    if (nread < 0) {
        if (conn->state == C_TUNNEL)
            rgm_log(RGM_LOG_WARN, "client", "proxy %s:%d closed before answering CONNECT %s:%d",
                    conn->origin->proxy->host, conn->origin->proxy->port, conn->origin->host,
                    conn->origin->port);
        rgm_pool_conn_fail(conn, nread == UV_EOF ? UV_ECONNRESET : (int)nread);
        return;
    }
    if (conn->state == C_TUNNEL) {
        tunnel_input(conn, buf->base, (size_t)nread);
        return;
    }
    if (!conn->tls) {
        rgm_pool_conn_close(conn); /* bytes on an idle connection: it is out of sync */
        return;
    }
    if (rgm_tls_feed_cipher(conn->tls, buf->base, (size_t)nread) < 0) {
        rgm_pool_conn_fail(conn, UV_EPROTO);
        return;
    }
    if (conn->state == C_HANDSHAKE)
        tls_step(conn);
    else
        idle_drain_tls(conn);
}

/* ---- connections: resolving and connecting ---- */

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

/* Connected to the origin, or through the tunnel: the TLS handshake with the origin (its name
 * for SNI and verification, whatever carries the bytes). */
static void tls_start(struct conn *conn)
{
    struct origin *o = conn->origin;
    const rgm_tls_client_cfg_t tls = {o->ca_file, o->insecure, o->cert_file, o->key_file,
                                      o->verify_name};
    int err = 0;

    conn->tls = rgm_tls_new(&tls, o->host, &err);
    if (!conn->tls) {
        rgm_pool_conn_fail(conn, err);
        return;
    }
    conn->state = C_HANDSHAKE;
    read_start(conn);
    if (conn->state == C_HANDSHAKE)
        tls_step(conn);
}

/* ---- connections: through a proxy ---- */

#define TUNNEL_HEAD_MAX 8192 /* the proxy's answer to CONNECT: a status line and a few headers */

static void proxy_fail(struct conn *conn, int err, const char *why)
{
    const struct origin *o = conn->origin;

    rgm_log(RGM_LOG_WARN, "client", "proxy %s:%d for %s:%d: %s", o->proxy->host, o->proxy->port,
            o->host, o->port, why);
    rgm_pool_conn_fail(conn, err);
}

/* Connected to the proxy for an https origin: ask for a tunnel (the proxy resolves and
 * connects; its credentials go in Proxy-Authorization, never in a log line). */
static void tunnel_start(struct conn *conn)
{
    const struct origin *o = conn->origin;
    const char *auth = o->proxy->auth;
    const int v6 = strchr(o->host, ':') != NULL;
    char target[300];
    char req[2048];
    int n, rc;

    snprintf(target, sizeof(target), "%s%s%s:%d", v6 ? "[" : "", o->host, v6 ? "]" : "", o->port);
    n = snprintf(req, sizeof(req),
                 "CONNECT %s HTTP/1.1\r\nHost: %s\r\n%s%s%sUser-Agent: regmirror/0.1\r\n\r\n",
                 target, target, auth ? "Proxy-Authorization: " : "", auth ? auth : "",
                 auth ? "\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof(req)) {
        explicit_bzero(req, sizeof(req));
        proxy_fail(conn, UV_EINVAL, "CONNECT request too long");
        return;
    }
    conn->state = C_TUNNEL;
    conn->tunnel = rgm_malloc(TUNNEL_HEAD_MAX);
    conn->tunnel_len = 0;
    rc = tcp_write(conn, req, (size_t)n);
    explicit_bzero(req, sizeof(req));
    if (rc < 0) {
        rgm_pool_conn_fail(conn, rc);
        return;
    }
    read_start(conn);
}

/* Bytes of the proxy's answer to CONNECT: a 2xx opens the tunnel; anything else fails the
 * connection (407: UV_EACCES, otherwise UV_EHOSTUNREACH) with the proxy's status logged. */
static void tunnel_input(struct conn *conn, const char *data, size_t len)
{
    const struct origin *o = conn->origin;
    const char *t, *end;
    char why[64];
    size_t head_len;
    int status;

    if (len > TUNNEL_HEAD_MAX - conn->tunnel_len) {
        proxy_fail(conn, UV_EPROTO, "answer to CONNECT too long");
        return;
    }
    memcpy(conn->tunnel + conn->tunnel_len, data, len);
    conn->tunnel_len += len;
    t = conn->tunnel;
    end = memmem(t, conn->tunnel_len, "\r\n\r\n", 4);
    if (!end)
        return;
    head_len = (size_t)(end - t) + 4;
    if (head_len < 16 || memcmp(t, "HTTP/1.", 7) != 0 || t[8] != ' ' || t[9] < '1' || t[9] > '5' ||
        t[10] < '0' || t[10] > '9' || t[11] < '0' || t[11] > '9') {
        proxy_fail(conn, UV_EPROTO, "not an HTTP answer to CONNECT");
        return;
    }
    status = (t[9] - '0') * 100 + (t[10] - '0') * 10 + (t[11] - '0');
    if (status / 100 != 2) {
        snprintf(why, sizeof(why), "CONNECT refused with %d", status);
        proxy_fail(conn, status == 407 ? UV_EACCES : UV_EHOSTUNREACH, why);
        return;
    }
    if (head_len != conn->tunnel_len) {
        /* The origin speaks only after our ClientHello: these bytes are not its. */
        proxy_fail(conn, UV_EPROTO, "bytes after the answer to CONNECT");
        return;
    }
    RGM_FREE(conn->tunnel);
    conn->tunnel_len = 0;
    read_stop(conn);
    rgm_log(RGM_LOG_DEBUG, "client", "tunnel to %s:%d through %s:%d", o->host, o->port,
            o->proxy->host, o->proxy->port);
    tls_start(conn);
}

const rgm_proxy_t *rgm_pool_conn_forward(const struct conn *conn)
{
    const struct origin *o = conn->origin;

    return o->proxy && !o->is_https ? o->proxy : NULL;
}

/* ---- connections: connected, allowed addresses, resolving ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *conn = rgm_container_of(req, struct conn, connect_req);
    const struct origin *o = conn->origin;

    if (status == UV_ECANCELED || conn->state == C_CLOSING)
        return;
    if (status < 0) {
        connect_failed(conn, status);
        return;
    }
    (void)uv_tcp_nodelay(&conn->tcp, 1);
    if (o->proxy && o->is_https)
        tunnel_start(conn);
    else if (o->is_https)
        tls_start(conn);
    else
        conn_ready(conn); /* direct, or forwarding through the proxy */
}

/* 1 when the origin's policy lets conn connect to sa (logged when not). */
static int net_allows(const struct conn *conn, const struct sockaddr *sa)
{
    const struct origin *o = conn->origin;
    const struct pool *p = conn->pool;
    const enum rgm_addr_class cl = rgm_addr_classify(sa);
    char ip[INET6_ADDRSTRLEN] = "?";
    int ok;

    switch (o->net) {
    case RGM_NET_ANY:
        return 1;
    case RGM_NET_NO_LINKLOCAL:
        ok = cl != RGM_ADDR_LINKLOCAL;
        break;
    case RGM_NET_PUBLIC:
    default:
        ok = (cl == RGM_ADDR_PUBLIC && !rgm_tls_is_ip(o->host)) ||
             rgm_cidr_match(p->opts.allow_nets, p->opts.allow_nets_len, sa);
        break;
    }
    if (!ok) {
        if (sa->sa_family == AF_INET6)
            (void)uv_ip6_name((const struct sockaddr_in6 *)(const void *)sa, ip, sizeof(ip));
        else
            (void)uv_ip4_name((const struct sockaddr_in *)(const void *)sa, ip, sizeof(ip));
        rgm_log(RGM_LOG_WARN, "client", "not connecting to %s (%s%s) for %s: not allowed", ip,
                rgm_addr_class_name(cl), rgm_tls_is_ip(o->host) ? ", an IP literal" : "", o->host);
    }
    return ok;
}

/* Through a proxy, the proxy resolves the origin's name and connects: its addresses cannot be
 * checked here, that is the proxy's job. Refused before any byte goes out: an IP literal that
 * the policy refuses, and for RGM_NET_PUBLIC "localhost" and its subdomains. 1 when allowed. */
static int net_allows_name(const struct conn *conn)
{
    const struct origin *o = conn->origin;
    struct sockaddr_storage ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    const size_t len = strlen(o->host);

    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, o->host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        return net_allows(conn, (const struct sockaddr *)&ss);
    }
    if (inet_pton(AF_INET6, o->host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        return net_allows(conn, (const struct sockaddr *)&ss);
    }
    if (o->net == RGM_NET_PUBLIC &&
        (rgm_strcaseeq(o->host, "localhost") ||
         (len > 10 && rgm_strcaseeq(o->host + len - 10, ".localhost")))) {
        rgm_log(RGM_LOG_WARN, "client", "not asking the proxy for %s: not allowed", o->host);
        return 0;
    }
    return 1;
}

static void connect_next(struct conn *conn)
{
    struct addrinfo *ai;
    int rc;

    while ((ai = conn->ai_next) != NULL) {
        conn->ai_next = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        /* A proxy's address is the operator's choice: trusted as written. */
        if (!conn->origin->proxy && !net_allows(conn, ai->ai_addr)) {
            conn->last_err = UV_EPERM;
            continue;
        }
        rc = uv_tcp_init(conn->pool->loop, &conn->tcp);
        if (rc < 0) {
            rgm_pool_conn_fail(conn, rc);
            return;
        }
        conn->tcp.data = conn;
        conn->is_tcp_open = 1;
        rc = uv_tcp_connect(&conn->connect_req, &conn->tcp, ai->ai_addr, on_connect);
        if (rc < 0)
            connect_failed(conn, rc);
        return;
    }
    if (conn->origin->proxy) {
        proxy_fail(conn, conn->last_err < 0 ? conn->last_err : UV_EADDRNOTAVAIL,
                   uv_strerror(conn->last_err < 0 ? conn->last_err : UV_EADDRNOTAVAIL));
        return;
    }
    rgm_pool_conn_fail(conn, conn->last_err < 0 ? conn->last_err : UV_EADDRNOTAVAIL);
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
    if (status < 0 && conn->origin->proxy) {
        proxy_fail(conn, status, uv_strerror(status));
        return;
    }
    if (status < 0) {
        rgm_log(RGM_LOG_DEBUG, "client", "resolving %s: %s", conn->origin->host,
                uv_strerror(status));
        rgm_pool_conn_fail(conn, status);
        return;
    }
    conn->state = C_CONNECTING;
    connect_next(conn);
}

/* A new connection for u (which counts against the origin's limit from now on). */
static void conn_new(struct origin *o, struct pool_user *u)
{
    struct pool *p = o->pool;
    struct conn *conn = rgm_calloc(1, sizeof(*conn));
    struct addrinfo hints;
    char port[16];
    int rc;

    conn->pool = p;
    conn->origin = o;
    conn->state = C_RESOLVING;
    rgm_pool_ref(p);
    conn->all_next = p->conns;
    if (p->conns)
        p->conns->all_prev = conn;
    p->conns = conn;
    o->n_active++;
    (void)uv_timer_init(p->loop, &conn->timer);
    conn->timer.data = conn;
    bind_user(u, conn);
    (void)uv_timer_start(&conn->timer, on_conn_timer, p->opts.connect_timeout_ms, 0);

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    if (o->proxy && (!o->proxy->is_valid || !net_allows_name(conn))) {
        rgm_pool_conn_fail(conn, o->proxy->is_valid ? UV_EPERM : UV_EINVAL);
        return;
    }
    snprintf(port, sizeof(port), "%d", o->proxy ? o->proxy->port : o->port);
    conn->is_gai_pending = 1;
    rc = uv_getaddrinfo(p->loop, &conn->gai, on_gai, o->proxy ? o->proxy->host : o->host, port,
                        &hints);
    if (rc < 0) {
        conn->is_gai_pending = 0;
        rgm_pool_conn_fail(conn, rc);
    }
}

/* ---- connections: reuse ---- */

/* Give conn, busy and unbound, to u, which sends at once and reads with its own callbacks. */
static void hand_over(struct conn *conn, struct pool_user *u)
{
    read_stop(conn);
    wait_remove(conn->origin, u);
    bind_user(u, conn);
    u->ops->on_ready(u);
}

void rgm_pool_release(struct conn *conn, int keep)
{
    struct pool *p = conn->pool;
    struct origin *o = conn->origin;
    struct pool_user *w;

    if (!keep || p->is_closing) {
        rgm_pool_conn_close(conn);
        return;
    }
    conn->is_reused = 1;
    for (w = o->wait_head; w; w = w->next) {
        if (!w->is_fresh_only)
            break;
    }
    if (w) {
        hand_over(conn, w);
        return;
    }
    if (o->n_idle >= p->opts.max_idle_per_origin) {
        rgm_pool_conn_close(conn);
        return;
    }
    o->n_active--;
    o->n_idle++;
    conn->state = C_IDLE;
    conn->idle_next = o->idle;
    o->idle = conn;
    (void)uv_timer_start(&conn->timer, on_conn_timer, p->opts.idle_timeout_ms, 0);
    read_start(conn);
    origin_kick(o);
}

/* Start waiting users: on idle connections, or on new ones while under the limit. */
static void origin_kick(struct origin *o)
{
    struct pool *p = o->pool;
    struct pool_user *u;
    struct conn *conn;

    while ((u = o->wait_head) != NULL && !p->is_closing) {
        if (!u->is_fresh_only && o->idle) {
            conn = o->idle;
            o->idle = conn->idle_next;
            conn->idle_next = NULL;
            o->n_idle--;
            o->n_active++;
            conn->state = C_BUSY;
            hand_over(conn, u);
            continue;
        }
        if (o->n_active >= p->opts.max_conns_per_origin)
            break;
        wait_remove(o, u);
        conn_new(o, u);
    }
}
