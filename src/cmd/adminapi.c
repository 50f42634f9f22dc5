/* The admin API's routes: method and path to a cmd/imageops call, the JSON body in, the
 * JSON result out. Every operation is logged at INFO with the peer (its uid). */
#include "cmd/adminapi.h"

#include <jansson.h>

#include "core/log.h"

enum op { OP_NONE, OP_IMAGES, OP_STATS, OP_PURGE, OP_PIN, OP_UNPIN };

static void answer_json(rgm_req_t *req, json_t *doc)
{
    char *text = json_dumps(doc, JSON_INDENT(2));

    json_decref(doc);
    if (!text) {
        rgm_resp_error(req, 500, "UNKNOWN", "cannot encode the answer", NULL);
        return;
    }
    rgm_resp_simple(req, 200, NULL, "application/json", text, strlen(text));
    free(text);
}

/* The operation for method and path; 404 and 405 are answered here (OP_NONE). */
static enum op route(rgm_req_t *req)
{
    const char *path = rgm_req_path(req);
    const char *m = rgm_req_method_name(req);
    const int is_get = strcmp(m, "GET") == 0;

    if (strcmp(path, "/images") == 0 && is_get)
        return OP_IMAGES;
    if (strcmp(path, "/stats") == 0 && is_get)
        return OP_STATS;
    if (strcmp(path, "/purge") == 0 && strcmp(m, "POST") == 0)
        return OP_PURGE;
    if (strcmp(path, "/pin") == 0 && strcmp(m, "POST") == 0)
        return OP_PIN;
    if (strcmp(path, "/pin") == 0 && strcmp(m, "DELETE") == 0)
        return OP_UNPIN;
    if (strcmp(path, "/images") == 0 || strcmp(path, "/stats") == 0 ||
        strcmp(path, "/purge") == 0 || strcmp(path, "/pin") == 0)
        rgm_resp_error(req, 405, "UNSUPPORTED", "method not allowed here", NULL);
    else
        rgm_resp_error(req, 404, "NOT_FOUND",
                       "the admin API has GET /images, GET /stats, POST /purge, POST and "
                       "DELETE /pin",
                       NULL);
    return OP_NONE;
}

void rgm_adminapi_handle(rgm_req_t *req, void *ud)
{
    struct rgm_adminapi *a = ud;
    const enum op op = route(req);
    const char *body;
    json_t *doc = NULL;
    json_t *res = NULL;
    json_error_t jerr;
    char msg[512];
    size_t len = 0;

    if (op == OP_NONE)
        return;
    rgm_log(RGM_LOG_INFO, "admin", "client=%s %s %s id=%llu", rgm_req_client(req),
            rgm_req_method_name(req), rgm_req_path(req), (unsigned long long)rgm_req_id(req));
    body = rgm_req_body(req, &len);
    if (op == OP_PURGE || op == OP_PIN || op == OP_UNPIN) {
        doc = len > 0 ? json_loadb(body, len, 0, &jerr) : json_object();
        if (!doc) {
            snprintf(msg, sizeof(msg), "the body is not JSON: %s", jerr.text);
            rgm_resp_error(req, 400, "BAD_REQUEST", msg, NULL);
            return;
        }
    }
    msg[0] = '\0';
    switch (op) {
    case OP_IMAGES:
        res = rgm_imageops_list(&a->ops);
        break;
    case OP_STATS:
        res = rgm_imageops_stats(&a->ops);
        break;
    case OP_PURGE:
        res = rgm_imageops_purge(&a->ops, doc, msg, sizeof(msg));
        break;
    case OP_PIN:
    case OP_UNPIN:
        res = rgm_imageops_pin(&a->ops, doc, op == OP_PIN, msg, sizeof(msg));
        break;
    case OP_NONE:
        break;
    }
    json_decref(doc);
    if (!res && msg[0])
        rgm_resp_error(req, 400, "BAD_REQUEST", msg, NULL);
    else if (!res)
        rgm_resp_error(req, 500, "UNKNOWN", "index error (see the server's log)", NULL);
    else
        answer_json(req, res);
}
