/* The downstream HTTP/1.1 server: the server object, its listeners, accepting connections
 * (which it owns and counts), the handle accounting that tells when the server is fully closed,
 * and the graceful shutdown. What happens on a connection is conn.c's; requests, responses and
 * their bytes are reqhead.c, response.c and framing.c. Nothing of registries or caches.
 *
 * Over cfg->max_connections a new connection is accepted and closed at once: leaving it in the
 * kernel backlog would hold the client with no timeout of ours. So is one from outside
 * cfg->allow_clients. With a TLS context set, connections of the main listeners get a TLS
 * session (conn.c runs it); health listeners stay plain. */
#include "http/server.h"

#include <inttypes.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <uv.h>

#include "core/log.h"
#include "core/util.h"
#include "http/conn.h"
#include "http/reqhead.h"

struct listener {
    uv_tcp_t tcp;
    rgm_server_t *srv;
    int is_health;
};

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

/* ---- accept ---- */

/* Every handle of c has closed (rgm_conn_init's on_closed): unlink and free it. */
static void on_conn_closed(struct conn *c)
{
    rgm_server_t *srv = c->srv;

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

/* c->client from the peer address; 1 when allow_clients lets it in. */
static int conn_peer(struct conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[INET6_ADDRSTRLEN];
    const rgm_server_t *srv = c->srv;

    snprintf(c->client, sizeof(c->client), "?");
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) < 0)
        return srv->allow_len == 0;
    if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        if (uv_ip6_name(a, ip, sizeof(ip)) == 0)
            snprintf(c->client, sizeof(c->client), "[%s]:%u", ip, ntohs(a->sin6_port));
    } else if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        if (uv_ip4_name(a, ip, sizeof(ip)) == 0)
            snprintf(c->client, sizeof(c->client), "%s:%u", ip, ntohs(a->sin_port));
    }
    return srv->allow_len == 0 ||
           rgm_cidr_match(srv->allow, srv->allow_len, (const struct sockaddr *)&ss);
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
    if (rgm_conn_init(c, srv, on_conn_closed) < 0) {
        free(c);
        return;
    }
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    srv->conn_count++;
    srv->handles_open++;
    if (uv_accept(ls, (uv_stream_t *)&c->tcp) < 0) {
        rgm_conn_close(c, "accept failed");
        return;
    }
    if (!conn_peer(c)) {
        srv->refused_allow++;
        rgm_log(RGM_LOG_INFO, "server", "client=%s refused: not in allow_clients", c->client);
        rgm_conn_close(c, "allow_clients");
        return;
    }
    if (srv->conn_count > rgm_cfg_lim(srv->cfg->max_connections, 1024)) {
        srv->refused_max++;
        rgm_log(RGM_LOG_WARN, "server", "client=%s refused: max_connections (%u) reached",
                c->client, srv->cfg->max_connections);
        rgm_conn_close(c, "max_connections");
        return;
    }
    c->is_health = l->is_health;
    if (srv->tls && !l->is_health) {
        c->tls = rgm_tls_accept(srv->tls, c->client);
        if (!c->tls) {
            rgm_conn_close(c, "no TLS session");
            return;
        }
    }
    rgm_conn_start(c);
}

int rgm_req_is_health(const rgm_req_t *req)
{
    return req->c->is_health;
}

void rgm_server_set_tls(rgm_server_t *srv, rgm_tls_server_t *tls)
{
    rgm_tls_server_free(srv->tls); /* live sessions hold their own reference */
    srv->tls = tls;
}

int rgm_server_metrics(const rgm_server_t *srv, rgm_buf_t *b)
{
    char file[512];
    int err = 0;
    int i;

    /* Declared without TLS too: every family is in a fresh scrape (a reload may turn TLS on),
     * and dashboards and alerts are checked against one. */
    err |= rgm_buf_appendf(b, "# HELP regmirror_tls_handshakes_total TLS handshakes by "
                              "result.\n# TYPE regmirror_tls_handshakes_total counter\n");
    if (srv->tls) {
        err |= rgm_buf_appendf(b, "regmirror_tls_handshakes_total{result=\"ok\"} %" PRIu64 "\n",
                               srv->tls_ok);
        for (i = 0; i < RGM_TLS_FAIL_N; i++)
            err |= rgm_buf_appendf(b,
                                   "regmirror_tls_handshakes_total{result=\"failed\","
                                   "reason=\"%s\"} %" PRIu64 "\n",
                                   rgm_tls_fail_name((enum rgm_tls_fail)i), srv->tls_failed[i]);
    }
    err |= rgm_buf_appendf(b, "# HELP regmirror_tls_cert_expiry_seconds When the served "
                              "certificate chain expires (its earliest notAfter, Unix time), "
                              "read at load and reload.\n# TYPE regmirror_tls_cert_expiry_seconds "
                              "gauge\n");
    if (srv->tls && rgm_tls_server_not_after(srv->tls) > 0)
        err |=
            rgm_buf_appendf(b, "regmirror_tls_cert_expiry_seconds{file=%s} %" PRId64 "\n",
                            rgm_log_quote(rgm_tls_server_cert_file(srv->tls), file, sizeof(file)),
                            rgm_tls_server_not_after(srv->tls));
    err |= rgm_buf_appendf(b, "# HELP regmirror_connections_refused_total Client connections "
                              "closed at accept.\n# TYPE regmirror_connections_refused_total "
                              "counter\n");
    err |= rgm_buf_appendf(
        b,
        "regmirror_connections_refused_total{reason=\"allow_clients\"} %" PRIu64
        "\nregmirror_connections_refused_total{reason=\"max_connections\"} %" PRIu64 "\n",
        srv->refused_allow, srv->refused_max);
    return err < 0 ? UV_ENOBUFS : 0;
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
    srv->rbuf = rgm_malloc(RGM_READ_BUF);
    rgm_req_parser_settings(srv);
    if (cfg->allow_clients_len > 0) {
        const char *bad = NULL;

        /* validated at load: a failure here is a bug */
        RGM_BUG_ON(
            rgm_cidr_parse_list(cfg->allow_clients, cfg->allow_clients_len, &srv->allow, &bad) < 0);
        srv->allow_len = cfg->allow_clients_len;
    }
    return srv;
}

static void on_listener_close(uv_handle_t *h)
{
    struct listener *l = rgm_container_of(h, struct listener, tcp);
    rgm_server_t *srv = l->srv;

    free(l);
    server_handle_closed(srv);
}

static int server_listen(rgm_server_t *srv, const char *addr, int is_health)
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
    l->is_health = is_health;
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

int rgm_server_listen(rgm_server_t *srv, const char *addr)
{
    return server_listen(srv, addr, 0);
}

int rgm_server_listen_health(rgm_server_t *srv, const char *addr)
{
    return server_listen(srv, addr, 1);
}

int rgm_server_port(const rgm_server_t *srv, size_t nth)
{
    return nth < srv->listeners_len ? srv->ports[nth] : -1;
}

size_t rgm_server_conn_count(const rgm_server_t *srv)
{
    return srv->conn_count;
}

void rgm_server_set_error_headers(rgm_server_t *srv, const char *hdrs)
{
    srv->error_hdrs = hdrs;
}

/* ---- shutdown ---- */

static void on_shutdown_timer(uv_timer_t *t)
{
    rgm_server_t *srv = rgm_container_of(t, rgm_server_t, shutdown_timer);
    struct conn *c;

    rgm_log(RGM_LOG_INFO, "server", "shutdown grace over: closing %zu connections",
            srv->conn_count);
    for (c = srv->conns; c; c = c->next)
        rgm_conn_close(c, "shutdown timeout");
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
            rgm_conn_close(c, "shutdown");
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
    free(srv->rbuf);
    free(srv->allow);
    rgm_tls_server_free(srv->tls);
    free(srv);
}
