/* The admin socket from a command's side: where it is (admin_socket, else
 * <storage>/admin.sock), and one request over it with a JSON body and a JSON answer. Blocking
 * calls, for the command-line tools only (never on serve's loop). The server's side is
 * cmd/adminapi. Internal to src/cmd. */
#ifndef RGM_CMD_ADMINSOCK_H
#define RGM_CMD_ADMINSOCK_H

#include <jansson.h>

#include "core/common.h"
#include "core/config.h"

/* Request bodies the admin socket accepts (serve refuses more with 413). */
#define RGM_ADMINSOCK_MAX_BODY (64 * 1024)

/* The socket's path for cfg into buf: cfg->admin_socket when set, else <storage>/admin.sock.
 * 0, or UV_ENAMETOOLONG when it does not fit a unix socket address (set admin_socket then). */
RGM_MUST_CHECK int rgm_adminsock_path(const rgm_config_t *cfg, char *buf, size_t len);

/* Send method target with body (borrowed JSON, or NULL for none) over the socket at path and
 * read the answer: *status gets the HTTP status and *out its JSON body (the caller's; NULL
 * when the body is not JSON). 0, or <0 with the reason in msg: the socket cannot be reached,
 * the server closed the connection without an answer (it refuses peers of another uid), a
 * timeout (120 s) or an answer over 256 MiB. */
RGM_MUST_CHECK int rgm_adminsock_call(const char *path, const char *method, const char *target,
                                      const json_t *body, int *status, json_t **out, char *msg,
                                      size_t msglen);

#endif
