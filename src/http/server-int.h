/* Internal to the downstream HTTP server (server.c, conn.c, reqhead.c, response.c, framing.c):
 * the private structs behind rgm_server_t and rgm_req_t. Types and tiny helpers only; each
 * module's functions are declared in its own header. Not an API for other layers. */
#ifndef RGM_HTTP_SERVER_INT_H
#define RGM_HTTP_SERVER_INT_H

#include <uv.h>
#include <llhttp.h>
#include "core/common.h"
#include "core/cidr.h"
#include "core/config.h"
#include "http/server.h"
#include "http/tls.h"

enum conn_state { CONN_OPEN, CONN_CLOSING };

/* The loop's one read buffer (rgm_server.rbuf): every socket is read into it and parsed in
 * place; a connection keeps (copies) only input left behind a request in progress. */
#define RGM_READ_BUF (64 * 1024)
enum tmode { T_NONE, T_HEADER, T_IDLE, T_SEND, T_LINGER };
enum sf_mode { SF_SENDFILE, SF_PREAD };

struct conn;
struct listener;

struct hdr {
    size_t name_off;
    size_t value_off;
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
    void (*on_closed)(struct conn *c); /* the owner's: every handle closed, c may be freed */
    enum conn_state state;
    int pending_closes;
    int has_poll;
    int is_polling;
    int poll_fd;

    llhttp_t parser;
    char *in; /* unparsed input kept behind a request, from the start; NULL when none */
    size_t in_len;
    size_t in_cap;
    rgm_req_t *req; /* being parsed, or handed to the handler (is_active) */
    int is_active;
    int is_reading;
    int is_eof;
    int is_draining;   /* no more requests: close once flushed */
    int is_lingering;  /* FIN sent, dropping input until EOF or the linger timeout */
    int is_processing; /* conn_process on the stack */
    int is_head_started;
    int is_health;      /* from a health_listen address: only probes and /metrics */
    int is_tls_counted; /* the handshake's end (ok or failed) is in the server's counts */
    rgm_tls_t *tls;     /* NULL on plain connections; the session until the close */
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
    char *rbuf; /* RGM_READ_BUF bytes: conn.c's on_alloc, consumed before the next read */
    rgm_tls_server_t *tls; /* new handshakes use it; NULL: plain HTTP */
    rgm_cidr_t *allow;     /* allow_clients, parsed; NULL: everyone */
    size_t allow_len;
    uint64_t tls_ok; /* handshakes completed */
    uint64_t tls_failed[RGM_TLS_FAIL_N];
    uint64_t refused_allow; /* closed at accept: outside allow_clients */
    uint64_t refused_max;   /* closed at accept: over max_connections */
    size_t handles_open;    /* listeners + connections + the shutdown timer */
    int is_shutting_down;
    int has_timer;
    int is_timer_closing;
    int is_done;
    uv_timer_t shutdown_timer;
    void (*done)(rgm_server_t *srv, void *ud);
    void *done_ud;
};

/* A configured limit, or def when the configuration leaves it at 0. */
static inline size_t rgm_cfg_lim(size_t v, size_t def)
{
    return v ? v : def;
}

#endif
