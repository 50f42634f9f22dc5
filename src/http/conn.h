/* One downstream HTTP/1.1 connection: reading, llhttp, one request at a time to the handler,
 * keep-alive, timers, queued writes and file bodies, and its one close. The server owns the
 * memory and the list of connections; the response module writes through these functions.
 * Internal to src/http. */
#ifndef RGM_HTTP_CONN_H
#define RGM_HTTP_CONN_H

#include "http/server-int.h"

/* Set up c (zeroed, owned by the caller) as a connection of srv: its socket (a uv_pipe_t when
 * is_local, else a uv_tcp_t), timer and idle handles. Returns 0, or the socket's init error, in
 * which case nothing needs closing and the caller frees c. After 0, c ends only through
 * rgm_conn_close(); on_closed(c) runs once every handle has closed (after the request's on_close,
 * if one was pending): the owner then unlinks and frees c, and must not touch it again. */
RGM_MUST_CHECK int rgm_conn_init(struct conn *c, rgm_server_t *srv, int is_local,
                                 void (*on_closed)(struct conn *c));

/* Start an accepted connection: TCP_NODELAY (over TCP), the parser, reading and the header timer.
 */
void rgm_conn_start(struct conn *c);

/* The one way a connection ends: idempotent, the handles close asynchronously. reason is a
 * static string for the debug log. Pending writes end with UV_ECANCELED (their callbacks are
 * not run); a request still in the handler's hands gets its on_close. */
void rgm_conn_close(struct conn *c, const char *reason);

/* Hand wr (from rgm_framing_write/_error) to the socket; c takes wr in every case. Returns 0,
 * or the uv_write error (wr is freed, nothing was queued): the caller then closes c. wr->cb,
 * if set, runs with c's current request once the bytes are written and c is still open. */
RGM_MUST_CHECK int rgm_conn_send(struct conn *c, struct wreq *wr);

/* Run cb(req, status, ud) on a later loop turn, never on the caller's stack; cb NULL: nothing.
 * It does not run if c closes first, or if c has no request by then. */
void rgm_conn_defer(struct conn *c, rgm_resp_cb cb, void *ud, int status);

/* Move c forward (deferred callbacks, the file body, completion of the request) on the next
 * loop turn. A no-op once c is closing. */
void rgm_conn_schedule(struct conn *c);

/* Make reading and the timer follow c's state; call after every change of it. */
void rgm_conn_update(struct conn *c);

#endif
