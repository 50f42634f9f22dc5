/* Per-origin keep-alive connection pools of the upstream client, internal to src/http. An origin
 * is (scheme, host, port, TLS settings); each has a FIFO of users waiting for a connection, a
 * connection limit and a list of idle connections. New connections resolve, connect over the
 * address list (of the origin, or of its proxy: proxy.h, then CONNECT for https) and run the TLS
 * handshake (tls.h). The pool knows nothing of HTTP: it hands a
 * connection to a user (upreq.c), which writes the request, reads the response and gives the
 * connection back. */
#ifndef RGM_HTTP_POOL_H
#define RGM_HTTP_POOL_H

#include <netdb.h>
#include <uv.h>

#include "core/common.h"
#include "core/util.h"
#include "http/client.h"
#include "http/proxy.h"
#include "http/tls.h"

/* One read from the socket, or from TLS (several records). 256 KiB: a fast upstream's body
 * then costs a quarter of the reads, parser runs and fetch appends of 64 KiB (see the ingest
 * section of tests/bench/RESULTS.md). */
#define RGM_POOL_RBUF_SIZE (256 * 1024)

struct pool;
struct origin;
struct conn;
struct pool_user;

/* What the pool tells its user. Each runs from the pool's own callbacks, or from inside the
 * rgm_pool_* call that caused it. */
struct pool_user_ops {
    /* u->conn is u's from now on: a new connection, not connected yet, or a reused one (then
     * on_ready follows at once). */
    void (*on_bound)(struct pool_user *u);
    /* u->conn is connected (TLS handshake done) or reused, busy and not being read: send the
     * request and read the answer. */
    void (*on_ready)(struct pool_user *u);
    /* u->conn failed with err, or the pool is closing it (UV_ECANCELED). u must let go of it:
     * rgm_pool_retry(), or rgm_pool_detach() then rgm_pool_conn_close(). */
    void (*on_error)(struct pool_user *u, int err);
};

/* A user's place in the pool, embedded in the user (a request). The owner sets ops before
 * rgm_pool_dispatch and reads conn; every other field is the pool's. */
struct pool_user {
    const struct pool_user_ops *ops;
    struct pool_user *next; /* in the origin's queue */
    struct origin *origin;  /* set when queued; kept while bound */
    struct conn *conn;      /* the bound connection, or NULL */
    int is_queued;
    int is_fresh_only; /* a retry: waits for a new connection, not an idle one */
};

enum conn_state { C_RESOLVING, C_CONNECTING, C_TUNNEL, C_HANDSHAKE, C_BUSY, C_IDLE, C_CLOSING };

/* One connection to an origin. The pool owns it and frees it once its handles are closed and no
 * getaddrinfo is pending. While it is BUSY, its user reads it: tcp (uv_read_start with its own
 * callbacks, is_reading), timer (the read timeout), tls (ciphertext in, plaintext out) and rbuf;
 * the user writes through rgm_pool_conn_write. Every other field is the pool's. */
struct conn {
    struct pool *pool;
    struct origin *origin;
    enum conn_state state;
    uv_tcp_t tcp;
    uv_timer_t timer; /* connect or idle timeout (pool); read timeout while BUSY (user) */
    uv_getaddrinfo_t gai;
    uv_connect_t connect_req;
    struct addrinfo *ai_list;
    struct addrinfo *ai_next; /* next address to try */
    int last_err;
    int is_gai_pending;
    int is_tcp_open; /* initialised and not (being) closed */
    int is_reading;  /* with the pool's callbacks (HANDSHAKE, IDLE) or the user's (BUSY) */
    int is_reused;   /* has completed a request before */
    int n_closing;   /* handle closes pending */
    rgm_tls_t *tls;  /* https only */
    struct pool_user *user;
    struct conn *idle_next;
    struct conn *all_next;
    struct conn *all_prev;
    char *rbuf;   /* RGM_POOL_RBUF_SIZE bytes, see rgm_pool_conn_rbuf */
    char *tunnel; /* the proxy's answer to CONNECT while it arrives (C_TUNNEL only) */
    size_t tunnel_len;
};

/* Embedded in the client. Fields are the pool's; users read loop, opts and is_closing. */
struct pool {
    uv_loop_t *loop;
    rgm_client_opts_t opts; /* defaults applied */
    rgm_proxy_env_t proxy;  /* read from the environment at init */
    struct origin *origins;
    struct conn *conns; /* every connection not yet freed */
    unsigned n_refs;    /* connections and rgm_pool_ref holders not yet gone */
    int is_closing;
    int is_close_started;
    uv_timer_t close_timer; /* only closed, to report the end asynchronously */
    void (*on_closed)(struct pool *p);
};

/* ---- the pool ---- */

/* Set up p on loop with opts (defaults already applied; copied) and the proxy variables of the
 * environment (an unusable one is logged; its requests fail). on_closed runs once, after
 * rgm_pool_close, when every connection is freed and every reference is dropped; it may free
 * the memory that holds p. */
void rgm_pool_init(struct pool *p, uv_loop_t *loop, const rgm_client_opts_t *opts,
                   void (*on_closed)(struct pool *p));
/* Close every connection (a bound user gets on_error(UV_ECANCELED)), forget the cached TLS
 * contexts and hand out no more connections. on_closed runs later, never from inside this
 * call. */
void rgm_pool_close(struct pool *p);
/* Hold on_closed back until the matching unref: for each object (a request) that must be freed
 * before the pool is. */
void rgm_pool_ref(struct pool *p);
void rgm_pool_unref(struct pool *p);

/* ---- users ---- */

/* Queue u (ops set, not queued or bound) for a connection to url's scheme, host and port, with
 * the TLS settings tls for https (NULL: system CAs, verify, no client certificate; the strings
 * are copied), connecting only where net allows (pooled separately per policy). on_bound runs when
 * an idle connection is free or a new one may be opened: from inside this call or later. */
void rgm_pool_dispatch(struct pool *p, struct pool_user *u, const rgm_url_t *url,
                       const rgm_tls_client_cfg_t *tls, enum rgm_net_policy net);
/* u lets go: leaves its queue, or is unbound from its connection, which is neither closed nor
 * released (the caller does one of them). Idempotent. */
void rgm_pool_detach(struct pool_user *u);
/* u's reused connection died before any byte of the answer: close it and queue u first, for a
 * new connection only. */
void rgm_pool_retry(struct pool_user *u);

/* ---- connections ---- */

/* conn (BUSY, its user detached) finished an exchange: give it to the first waiter that may
 * reuse it, keep it idle (when keep is 1 and under max_idle_per_origin) or close it. */
void rgm_pool_release(struct conn *conn, int keep);
/* The one idempotent close: a bound user gets on_error(UV_ECANCELED); freed later. */
void rgm_pool_conn_close(struct conn *conn);
/* conn failed with err: its user gets on_error(err); without a user it is closed. Nothing once
 * it is closing. */
void rgm_pool_conn_fail(struct conn *conn, int err);
/* Send len bytes of data (copied) on conn, through TLS for https. 0 or <0 (a libuv or TLS
 * error); an error reported later by libuv fails the connection. */
RGM_MUST_CHECK int rgm_pool_conn_write(struct conn *conn, const char *data, size_t len);
/* Send the ciphertext TLS has produced (handshake, alerts, session tickets...); 0 when there is
 * none or no TLS. 0 or <0. */
RGM_MUST_CHECK int rgm_pool_conn_flush(struct conn *conn);
/* conn's read buffer of RGM_POOL_RBUF_SIZE bytes: allocated on first use, freed with conn. */
char *rgm_pool_conn_rbuf(struct conn *conn);
/* The proxy that conn (plain http) forwards through: requests on it are in absolute form and
 * carry its Proxy-Authorization (borrowed; valid while conn is). NULL: direct, or a tunnel. */
const rgm_proxy_t *rgm_pool_conn_forward(const struct conn *conn);

#endif
