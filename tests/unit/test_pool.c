/* Unit tests for http/pool: the FIFO and connection limit, handing a released connection to a
 * waiter, idle reuse and its limit, retry on a new connection, an idle connection the server
 * closes or speaks on (read with the pool's own callbacks), the idle timeout, a refused connect,
 * writes, and the close. Real sockets: the peer is a libuv TCP server on 127.0.0.1, port 0, on
 * the same loop. */
#include "http/pool.h"

#include <signal.h>
#include <unistd.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <uv.h>

#include "tap.h"

#define MAX_PEERS 16

/* ---- the peer: accepts, counts bytes, closes or writes on demand ---- */

struct peer {
    uv_tcp_t tcp;
    int is_open;
    size_t n_read;
};

static uv_loop_t *loop;
static uv_tcp_t listener;
static struct peer peers[MAX_PEERS];
static int n_accepted;
static int port;

static void on_peer_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char b[4096];

    (void)h;
    (void)suggested;
    *buf = uv_buf_init(b, sizeof(b));
}

static void on_peer_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct peer *pe = rgm_container_of(s, struct peer, tcp);

    (void)buf;
    if (nread > 0)
        pe->n_read += (size_t)nread;
    else if (nread < 0 && pe->is_open) {
        pe->is_open = 0;
        uv_close((uv_handle_t *)&pe->tcp, NULL);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    struct peer *pe;

    if (status < 0 || n_accepted >= MAX_PEERS)
        return;
    pe = &peers[n_accepted++];
    (void)uv_tcp_init(loop, &pe->tcp);
    if (uv_accept(server, (uv_stream_t *)&pe->tcp) < 0 ||
        uv_read_start((uv_stream_t *)&pe->tcp, on_peer_alloc, on_peer_read) < 0) {
        uv_close((uv_handle_t *)&pe->tcp, NULL);
        return;
    }
    pe->is_open = 1;
}

static int peer_listen(void)
{
    struct sockaddr_in sa;
    struct sockaddr_storage ss;
    int len = sizeof(ss);

    (void)uv_ip4_addr("127.0.0.1", 0, &sa);
    if (uv_tcp_init(loop, &listener) < 0 ||
        uv_tcp_bind(&listener, (const struct sockaddr *)&sa, 0) < 0 ||
        uv_listen((uv_stream_t *)&listener, 16, on_connection) < 0 ||
        uv_tcp_getsockname(&listener, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void peer_close(int i)
{
    if (peers[i].is_open) {
        peers[i].is_open = 0;
        uv_close((uv_handle_t *)&peers[i].tcp, NULL);
    }
}

static void on_peer_written(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void peer_write(int i, const char *s)
{
    uv_write_t *w = malloc(sizeof(*w));
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));

    if (uv_write(w, (uv_stream_t *)&peers[i].tcp, &b, 1, on_peer_written) < 0)
        free(w);
}

/* ---- a pool user that records what it is told ---- */

struct tuser {
    struct pool_user pu;
    int n_bound;
    int n_ready;
    int n_err;
    int err;
    struct conn *conn; /* the connection on_ready saw */
};

static void t_on_bound(struct pool_user *u)
{
    rgm_container_of(u, struct tuser, pu)->n_bound++;
}

static void t_on_ready(struct pool_user *u)
{
    struct tuser *t = rgm_container_of(u, struct tuser, pu);

    t->n_ready++;
    t->conn = u->conn;
}

/* As the contract says: let go of the connection. */
static void t_on_error(struct pool_user *u, int err)
{
    struct tuser *t = rgm_container_of(u, struct tuser, pu);
    struct conn *conn = u->conn;

    t->n_err++;
    t->err = err;
    rgm_pool_detach(u);
    rgm_pool_conn_close(conn);
}

static const struct pool_user_ops t_ops = {t_on_bound, t_on_ready, t_on_error};

static void tuser_init(struct tuser *t)
{
    memset(t, 0, sizeof(*t));
    t->pu.ops = &t_ops;
}

static void dispatch(struct pool *p, struct tuser *t, int to_port)
{
    char url[64];
    rgm_url_t u;

    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", to_port);
    if (rgm_url_parse(url, &u) == 0)
        rgm_pool_dispatch(p, &t->pu, &u, NULL, 0);
}

static void t_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)s;
    (void)nread;
    (void)buf;
}

/* Read a busy connection with the user's own callbacks, as upreq.c does (they ignore EOF). */
static void t_read(struct conn *conn)
{
    if (uv_read_start((uv_stream_t *)&conn->tcp, on_peer_alloc, t_on_read) == 0)
        conn->is_reading = 1;
}

/* The user is done with its connection: give it back. */
static void release(struct tuser *t, int keep)
{
    struct conn *conn = t->pu.conn;

    rgm_pool_detach(&t->pu);
    rgm_pool_release(conn, keep);
}

/* ---- running the loop, bounded ---- */

static uv_timer_t tick;

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

static uint64_t deadline(uint64_t ms)
{
    uv_update_time(loop);
    return uv_now(loop) + ms;
}

/* One turn of the loop, at most about 5 ms long. */
static void turn(void)
{
    (void)uv_timer_start(&tick, on_tick, 5, 0);
    (void)uv_run(loop, UV_RUN_ONCE);
}

/* Run the loop until cond holds or ms have passed; the value of cond. */
#define RUN_UNTIL(cond, ms)                                                                        \
    ({                                                                                             \
        uint64_t end_ = deadline(ms);                                                              \
        while (!(cond) && uv_now(loop) < end_)                                                     \
            turn();                                                                                \
        (cond);                                                                                    \
    })

static int n_conns(const struct pool *p)
{
    const struct conn *c;
    int n = 0;

    for (c = p->conns; c; c = c->all_next)
        n++;
    return n;
}

static int closed_port(void)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int cport = -1;

    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
        cport = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return cport;
}

/* ---- tests ---- */

static int n_pool_closed;

static void on_closed(struct pool *p)
{
    (void)p;
    n_pool_closed++;
}

static void test_limit_and_reuse(struct pool *p)
{
    struct tuser a, b, c, d;
    struct conn *conn_b;

    tuser_init(&a);
    tuser_init(&b);
    tuser_init(&c);
    dispatch(p, &a, port);
    dispatch(p, &b, port);
    dispatch(p, &c, port);
    ok(a.n_bound == 1 && b.n_bound == 1, "under the limit: bound to new connections at once");
    ok(c.n_bound == 0 && c.pu.is_queued, "at max_conns_per_origin: the third waits");
    ok(RUN_UNTIL(a.n_ready == 1 && b.n_ready == 1 && n_accepted == 2, 3000),
       "both connected: two connections made");
    ok(a.n_ready == 1 && a.conn->state == C_BUSY && !a.conn->is_reading,
       "a ready connection is busy and not read by the pool");

    t_read(a.conn);
    release(&a, 1);
    ok(c.n_bound == 1 && c.n_ready == 1 && c.conn == a.conn,
       "a released connection goes to the waiter at once");
    ok(c.conn->is_reused && !c.conn->is_reading, "marked reused, handed over not read");
    is_int(n_accepted, 2, "no new connection for it");

    conn_b = b.conn;
    t_read(conn_b);
    release(&b, 1);
    ok(conn_b->state == C_IDLE && conn_b->is_reading, "no waiter: the connection is idle, read");
    release(&c, 1);
    ok(RUN_UNTIL(n_conns(p) <= 1, 2000), "past max_idle_per_origin (1): closed");

    tuser_init(&d);
    dispatch(p, &d, port);
    ok(d.n_ready == 1 && d.conn == conn_b, "an idle connection is reused at once");
    ok(!d.conn->is_reading, "a reused connection is not read by the pool");
    is_int(n_accepted, 2, "still two connections made");

    rgm_pool_retry(&d.pu);
    ok(RUN_UNTIL(d.n_ready == 2 && n_accepted == 3, 3000) && d.conn != conn_b &&
           !d.conn->is_reused,
       "retry: the user gets a new connection");
    ok(RUN_UNTIL(n_conns(p) <= 1, 2000), "the old connection is closed");
    release(&d, 0);
    ok(RUN_UNTIL(n_conns(p) == 0, 2000), "release without keep closes");
}

static void test_idle_ends(struct pool *p)
{
    struct tuser a, b;
    int first = n_accepted;

    tuser_init(&a);
    dispatch(p, &a, port);
    ok(RUN_UNTIL(a.n_ready == 1 && n_accepted == first + 1, 3000), "connected");
    t_read(a.conn);
    release(&a, 1);
    peer_close(first);
    ok(RUN_UNTIL(n_conns(p) == 0, 2000), "an idle connection the server closes is dropped");

    tuser_init(&b);
    dispatch(p, &b, port);
    ok(RUN_UNTIL(b.n_ready == 1 && n_accepted == first + 2, 3000),
       "the next user gets a new connection");
    ok(rgm_pool_conn_write(b.conn, "hello", 5) == 0, "write on a busy connection");
    t_read(b.conn);
    release(&b, 1);
    ok(RUN_UNTIL(peers[first + 1].n_read == 5, 2000), "the peer got the bytes");
    peer_write(first + 1, "unasked");
    ok(RUN_UNTIL(n_conns(p) == 0, 2000), "bytes on an idle connection close it");
}

static void test_idle_timeout_and_refused(uv_loop_t *l)
{
    rgm_client_opts_t o = {.connect_timeout_ms = 2000,
                           .read_timeout_ms = 2000,
                           .max_idle_per_origin = 4,
                           .max_conns_per_origin = 4,
                           .idle_timeout_ms = 50};
    struct pool q;
    struct tuser a, r;
    int cport = closed_port();

    rgm_pool_init(&q, l, &o, on_closed);
    tuser_init(&a);
    dispatch(&q, &a, port);
    ok(RUN_UNTIL(a.n_ready >= 1, 3000), "connected (short idle timeout)");
    release(&a, 1);
    ok(n_conns(&q) == 1, "kept idle");
    ok(RUN_UNTIL(n_conns(&q) == 0, 2000), "closed after idle_timeout");

    tuser_init(&r);
    dispatch(&q, &r, cport);
    ok(RUN_UNTIL(r.n_err >= 1, 3000) && r.err == UV_ECONNREFUSED && r.n_ready == 0,
       "a refused connect: on_error(UV_ECONNREFUSED), never ready");

    tuser_init(&a);
    dispatch(&q, &a, port);
    ok(RUN_UNTIL(a.n_ready >= 1, 3000), "connected, then the pool closes");
    rgm_pool_close(&q);
    ok(a.n_err == 1 && a.err == UV_ECANCELED, "close: the bound user gets UV_ECANCELED");
    is_int(n_pool_closed, 0, "on_closed not run from inside rgm_pool_close");
    ok(RUN_UNTIL(n_pool_closed >= 1, 2000), "on_closed runs once the connections are freed");
}

int main(void)
{
    rgm_client_opts_t o = {.connect_timeout_ms = 2000,
                           .read_timeout_ms = 2000,
                           .max_idle_per_origin = 1,
                           .max_conns_per_origin = 2,
                           .idle_timeout_ms = 30000};
    struct pool p;
    int i;

    alarm(60);
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    (void)uv_timer_init(loop, &tick);
    port = peer_listen();
    ok(port > 0, "peer listening on %d", port);
    if (port <= 0)
        return tap_done();
    rgm_pool_init(&p, loop, &o, on_closed);
    test_limit_and_reuse(&p);
    test_idle_ends(&p);
    test_idle_timeout_and_refused(loop);

    n_pool_closed = 0;
    rgm_pool_ref(&p);
    rgm_pool_close(&p);
    ok(!RUN_UNTIL(n_pool_closed == 1, 50), "a reference held keeps on_closed back");
    rgm_pool_unref(&p);
    ok(RUN_UNTIL(n_pool_closed >= 1, 2000), "on_closed after the last unref");
    for (i = 0; i < n_accepted; i++)
        peer_close(i);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_close((uv_handle_t *)&tick, NULL);
    (void)uv_run(loop, UV_RUN_DEFAULT);
    is_int(uv_loop_close(loop), 0, "loop closed cleanly");
    return tap_done();
}
