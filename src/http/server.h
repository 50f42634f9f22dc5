/* HTTP/1.1 server: accept, llhttp request parsing with limits, keep-alive and pipelining,
 * responses from memory or from a file (sendfile(2) on plain TCP). It knows bytes,
 * connections and messages; it knows nothing of registries or caches. Built from server.c
 * (listeners, accept, shutdown), conn.c (one connection), reqhead.c, response.c and framing.c,
 * which share the private types of http/server-int.h. */
#ifndef RGM_HTTP_SERVER_H
#define RGM_HTTP_SERVER_H

#include <sys/uio.h>
#include <uv.h>
#include "core/common.h"
#include "core/buf.h"
#include "core/config.h"
#include "http/tls.h"

typedef struct rgm_server rgm_server_t;
typedef struct rgm_req rgm_req_t;

enum rgm_method { RGM_M_OTHER = 0, RGM_M_GET, RGM_M_HEAD };

/* Called once per parsed request, headers complete. The handler answers now or later, with
 * rgm_resp_*; until it does, later pipelined requests on the connection wait. The request
 * stays valid until rgm_resp_finish() or rgm_resp_abort(), or until the connection dies, in
 * which case the callback set with rgm_req_on_close() runs (once) and the request is freed. */
typedef void (*rgm_handler_fn)(rgm_req_t *req, void *ud);

/* A new server on loop. cfg is borrowed and must outlive the server: limits come from it
 * (max_connections, max_header_bytes, max_headers, max_url_len, header_timeout_ms,
 * idle_timeout_ms, send_timeout_ms, shutdown_timeout_ms, use_sendfile), and allow_clients
 * (already validated): a connection from elsewhere is closed at accept and counted. Over TLS
 * (rgm_server_set_tls), header_timeout_ms also bounds the handshake, and file bodies are always
 * pread + write. */
rgm_server_t *rgm_server_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_handler_fn handler,
                             void *ud);

/* Listen on "host:port" ("[::1]:5000" for IPv6; port 0 picks a free port). May be called
 * several times. Returns 0 or a UV_E* code (logged by the caller). */
RGM_MUST_CHECK int rgm_server_listen(rgm_server_t *srv, const char *addr);

/* Like rgm_server_listen for a health address: always plain HTTP, and its requests say so
 * (rgm_req_is_health). */
RGM_MUST_CHECK int rgm_server_listen_health(rgm_server_t *srv, const char *addr);

/* Listen on a unix socket at path (an existing socket file there is replaced; any other file
 * is UV_EEXIST; too long for sun_path is UV_ENAMETOOLONG). The socket gets mode 0600 before it
 * listens, and a peer is let in only when SO_PEERCRED says it runs as the server's uid or as
 * root (others are closed at accept and counted). Its requests may carry a body of at most
 * max_body bytes (413 beyond; rgm_req_body); TCP listeners refuse every body. Always plain
 * HTTP. The file is unlinked at shutdown. Returns 0 or a UV_E* code (logged by the caller). */
RGM_MUST_CHECK int rgm_server_listen_unix(rgm_server_t *srv, const char *path, size_t max_body);

/* Serve HTTPS on the (non-health) listeners from now on, with tls (the server takes it; NULL:
 * plain HTTP again). The context in use before is freed; connections that have it keep it
 * until they close. Call before the first listen for every connection to be TLS. */
void rgm_server_set_tls(rgm_server_t *srv, rgm_tls_server_t *tls);

/* Append the server's own metrics (Prometheus text: TLS handshakes by result, the served
 * certificate chain's expiry, connections refused at accept by reason) to b. Every family is
 * declared with TLS off too. 0, or <0 when b is full. */
RGM_MUST_CHECK int rgm_server_metrics(const rgm_server_t *srv, rgm_buf_t *b);

/* The port actually bound by the nth successful listen (useful with port 0), or -1. */
int rgm_server_port(const rgm_server_t *srv, size_t nth);

/* Stop accepting; let responses in progress finish for at most cfg->shutdown_timeout_ms, then
 * close every connection and handle. done runs once, when every handle of the server is
 * closed; after it, rgm_server_free() may be called. */
void rgm_server_shutdown(rgm_server_t *srv, void (*done)(rgm_server_t *srv, void *ud), void *ud);
void rgm_server_free(rgm_server_t *srv);

/* Extra "Name: value\r\n" lines for the errors the server answers itself, before any handler
 * (400, 405 with a body, 408, 414, 431). hdrs is borrowed (a static string); NULL: none. */
void rgm_server_set_error_headers(rgm_server_t *srv, const char *hdrs);

/* Open connections right now (for /metrics). */
size_t rgm_server_conn_count(const rgm_server_t *srv);

/* ---- the request (valid while the request is) ---- */

enum rgm_method rgm_req_method(const rgm_req_t *req);
const char *rgm_req_method_name(const rgm_req_t *req); /* "GET", "PUT", ... */
/* Path of the request target, without the query, as sent (no percent-decoding). */
const char *rgm_req_path(const rgm_req_t *req);
/* Raw query string without '?', or "" when there is none. */
const char *rgm_req_query(const rgm_req_t *req);
/* First header with this name (case-insensitive), or NULL. Values are trimmed. */
const char *rgm_req_header(const rgm_req_t *req, const char *name);
/* Every header with this name, joined with ", " (RFC 9110 list headers such as Accept may be
 * split over several lines). 1 found, 0 absent (out ""), UV_ENOBUFS when out is too small. */
int rgm_req_header_list(const rgm_req_t *req, const char *name, char *out, size_t outlen);
/* The request body on a listener that takes bodies (rgm_server_listen_unix), NUL-terminated;
 * NULL with *len 0 when there is none. Borrowed: valid while the request is. */
const char *rgm_req_body(const rgm_req_t *req, size_t *len);
/* Peer address "ip:port" ("unix:uid=N,pid=N" on a unix socket). */
const char *rgm_req_client(const rgm_req_t *req);
/* 1 when the request came on a health_listen address (serve only probes and metrics). */
int rgm_req_is_health(const rgm_req_t *req);
uint64_t rgm_req_id(const rgm_req_t *req);
/* Cache result for the access log and the X-Cache header user ("HIT", "MISS", ...). The
 * string must be static. */
void rgm_req_set_cache_status(rgm_req_t *req, const char *status);
/* cb runs once if the connection dies before the response is finished or aborted; the request
 * is freed right after cb returns. Pending rgm_resp_* callbacks are then never called. */
void rgm_req_on_close(rgm_req_t *req, void (*cb)(rgm_req_t *req, void *ud), void *ud);

/* ---- the response ---- */

typedef void (*rgm_resp_cb)(rgm_req_t *req, int status, void *ud);

/* Status line and headers. hdrs is a block of "Name: value\r\n" lines, or NULL; the server
 * adds Date, Content-Length (when content_length >= 0; chunked framing when -1 and the method
 * is not HEAD), Connection and X-Cache (from rgm_req_set_cache_status). For HEAD, body writes
 * are accepted and discarded, and their callbacks still run. */
RGM_MUST_CHECK int rgm_resp_start(rgm_req_t *req, int status, const char *hdrs,
                                  int64_t content_length);

/* Queue len bytes (copied). cb (may be NULL) runs once the bytes are handed to the socket and
 * the connection is below its write watermark: that is the signal to produce more. Returns 0,
 * or <0 (nothing queued, cb never runs). */
RGM_MUST_CHECK int rgm_resp_write(rgm_req_t *req, const void *data, size_t len, rgm_resp_cb cb,
                                  void *ud);
/* The same for the n pieces of iov, copied into one write. */
RGM_MUST_CHECK int rgm_resp_writev(rgm_req_t *req, const struct iovec *iov, int n, rgm_resp_cb cb,
                                   void *ud);

/* Send len bytes of fd starting at off (fd is borrowed; the caller keeps it open until cb).
 * sendfile(2) when enabled and possible, else pread + write in chunks of at most 64 KiB.
 * cb runs once: status 0 when every byte was handed to the socket, <0 on a file error. */
RGM_MUST_CHECK int rgm_resp_sendfile(rgm_req_t *req, int fd, uint64_t off, uint64_t len,
                                     rgm_resp_cb cb, void *ud);

/* The response is complete (no pending write may remain except queued ones). Writes the access
 * log line; the request is freed once its bytes are flushed; the next request proceeds. */
void rgm_resp_finish(rgm_req_t *req);

/* Cut the response short: the connection is closed without completing the body, so the client
 * sees a truncated response. The request is freed; on_close is not called. */
void rgm_resp_abort(rgm_req_t *req, const char *reason);

/* start + write + finish for a small body. content_type may be NULL. */
void rgm_resp_simple(rgm_req_t *req, int status, const char *hdrs, const char *content_type,
                     const void *body, size_t len);

/* An OCI error: {"errors":[{"code":code,"message":message}]} with application/json. */
void rgm_resp_error(rgm_req_t *req, int status, const char *code, const char *message,
                    const char *hdrs);

#endif
