/* HTTP/1.1 response bytes for the downstream server: status line and header block, body
 * pieces framed into writes (Content-Length or chunked), and the JSON error answers. It builds
 * bytes and knows nothing of sockets, connections or timers. Internal to src/http. */
#ifndef RGM_HTTP_FRAMING_H
#define RGM_HTTP_FRAMING_H

#include "http/server-int.h"

/* The reason phrase of status ("Not Found"), or "Unknown". A static string. */
const char *rgm_framing_reason(int status);

/* {"errors":[{"code":code,"message":message}]} with both strings JSON-escaped. Returns a new
 * string (the caller frees it); *len gets its length. code and message are borrowed. */
char *rgm_framing_error_json(const char *code, const char *message, size_t *len);

/* The status line and header block of req's response, through the blank line: hdrs (hdrs_len
 * bytes of "Name: value\r\n" lines; 0 for none), then Date, Content-Length (content_length >= 0
 * and a status other than 1xx and 204) or Transfer-Encoding: chunked (is_chunked), X-Cache (the
 * cache status, if set) and Connection (is_keep_alive). Reads req->status, content_length,
 * is_chunked, cache_status and is_keep_alive. Returns a new string the caller owns (it becomes
 * req->pending_head); *len gets its length. */
char *rgm_framing_head(const rgm_req_t *req, const char *hdrs, size_t hdrs_len, size_t *len);

/* One write for req: the pending head, if any (taken: req->pending_head is freed and cleared),
 * then body_len body bytes, framed as one chunk when req->is_chunked, then the last chunk when
 * is_last and chunked. The body bytes are copied from body, or, when body is NULL, left for the
 * caller to fill at *body_at (body_at may be NULL otherwise). Adds body_len to req->bytes_out.
 * Returns a new write the caller owns (it goes to rgm_conn_send); cb and ud are zero. */
struct wreq *rgm_framing_write(rgm_req_t *req, const void *body, size_t body_len, int is_last,
                               char **body_at);

/* A whole answer for a request that never reached the handler: status, Date, application/json,
 * extra_hdrs ("Name: value\r\n" lines, or NULL), Content-Length, Connection: close and the JSON
 * error body of code and msg. Returns a new write the caller owns; cb and ud are zero. */
struct wreq *rgm_framing_error(int status, const char *code, const char *msg,
                               const char *extra_hdrs);

#endif
