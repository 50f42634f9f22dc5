/* The downstream request head: llhttp callbacks that gather the URL and headers of one request
 * into one allocation under the configured limits, and the request's access log line. The
 * accessors handlers use (rgm_req_*) are declared in http/server.h. Internal to src/http. */
#ifndef RGM_HTTP_REQHEAD_H
#define RGM_HTTP_REQHEAD_H

#include <llhttp.h>
#include "http/server-int.h"

/* Fill srv->settings with the request callbacks (once, at rgm_server_new). A parser run with
 * them must be embedded in a struct conn, whose server's cfg gives the limits (max_url_len,
 * max_headers, max_header_bytes). A message begin makes a new request at conn->req, owned by
 * the connection. A body is read into the request when conn->max_body allows it (413 beyond).
 * A limit exceeded, CONNECT or a request body elsewhere sets conn->err_status, err_code
 * and err_msg and returns an error: the callbacks never close. A complete message returns
 * HPE_PAUSED, so that the connection hands one request at a time to its handler. */
void rgm_req_parser_settings(rgm_server_t *srv);

/* Free req and everything it owns (not its on_close: the caller decides). NULL is fine. */
void rgm_req_free(rgm_req_t *req);

/* Write req's logfmt "access" line, if cfg->access_log and INFO is logged. cut: why the
 * response was cut short (logged as cut=...), or NULL for a complete one. */
void rgm_req_log_access(const rgm_req_t *req, const char *cut);

#endif
