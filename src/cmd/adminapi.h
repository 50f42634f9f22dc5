/* serve's admin API, on the admin socket only (never on a TCP listener): GET /images,
 * POST /purge, POST /pin, DELETE /pin and GET /stats, with JSON bodies (the socket's listener
 * limits them; http/server checks the peer's uid). Each is one cmd/imageops call on serve's
 * store, index and cache management, answered at once. Internal to src/cmd. */
#ifndef RGM_CMD_ADMINAPI_H
#define RGM_CMD_ADMINAPI_H

#include "http/server.h"
#include "cmd/imageops.h"

/* ud for rgm_adminapi_handle: the operations' targets, borrowed (they outlive the server). */
struct rgm_adminapi {
    struct rgm_imageops ops;
};

/* An rgm_handler_fn (ud: struct rgm_adminapi *). Answers every request before it returns:
 * 200 with the operation's JSON, 400 for a body that is not the operation's JSON, 404 for an
 * unknown path, 405 for a method the path does not take, 500 on an index error. */
void rgm_adminapi_handle(rgm_req_t *req, void *ud);

#endif
