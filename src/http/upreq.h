/* One upstream request, internal to src/http: the object behind rgm_upreq_t. client.c creates,
 * configures and inspects it (rgm_upreq_new, _add_header, _set_max_redirects, the accessors);
 * upreq.c runs it (rgm_upreq_start, _pause, _resume, _cancel): it writes the request on a pooled
 * connection (pool.h), parses the response, follows redirects and frees the request after on_done.
 * Not an interface for other layers: they use http/client.h. */
#ifndef RGM_HTTP_UPREQ_H
#define RGM_HTTP_UPREQ_H

#include <uv.h>

#include <llhttp.h>

#include "core/common.h"
#include "core/util.h"
#include "http/client.h"
#include "http/pool.h"
#include "http/uphead.h"

/* A small unbounded byte queue (upreq.c's; the response head has the bounded rgm_buf). */
struct bytes {
    char *data;
    size_t len;
    size_t cap;
};

enum req_state { R_NEW, R_QUEUED, R_ACTIVE, R_DONE };

/* client.c initialises the request and sets the fields above the response part before
 * rgm_upreq_start, and reads the response part from on_head until on_done returns; every other
 * access is upreq.c's. */
struct rgm_upreq {
    struct pool *pool;
    enum req_state state;
    char *method;
    char *url; /* current, after redirects */
    rgm_url_t u;
    int orig_https; /* the first URL's origin: Authorization and TLS trust belong to it */
    char orig_host[256];
    int orig_port;
    char *ca_file;
    int insecure;
    enum rgm_net_policy net;
    char *cert_file; /* the client certificate presented to the first URL's origin */
    char *key_file;
    char *verify_name; /* the first URL's origin's certificate name instead of its host */
    struct uphdr_list hdrs;
    int has_bad_header;
    char *body; /* rgm_upreq_set_body's copy (may hold a secret: wiped when freed) */
    size_t body_len;
    int has_body;
    unsigned max_redirects;
    unsigned n_redirects;
    rgm_upreq_cbs_t cbs;
    void *ud;
    struct pool_user user; /* queued for, then bound to, a connection */
    uv_timer_t timer;      /* deferred resume and on_done */
    int err;
    int is_done_called;
    int is_retried;
    int is_paused;
    int is_resume_pending;
    /* response being parsed */
    llhttp_t parser;
    int status;
    int is_redirect;
    int is_msg_complete;
    int is_keep_alive;
    int has_bytes;
    int parse_err;
    struct uphead_block head;
    struct bytes hold; /* decoded body bytes that arrived while paused */
    struct bytes raw;  /* unparsed input kept while paused */
    int64_t content_length;
};

#endif
