/* Upstream HTTP/1.1 client on the same loop: per-origin keep-alive pools, DNS through
 * uv_getaddrinfo, TLS (tls.h) for https, llhttp response parsing (Content-Length, chunked,
 * close-delimited), timeouts, redirects. It knows nothing of registries, auth or caches.
 * Implemented by client.c (the client, building a request, its response head), upreq.c (running
 * a request: start, pause, resume, cancel), pool.c (connections) and uphead.c (heads as data). */
#ifndef RGM_HTTP_CLIENT_H
#define RGM_HTTP_CLIENT_H

#include <uv.h>
#include "core/cidr.h"
#include "core/common.h"

typedef struct rgm_client rgm_client_t;
typedef struct rgm_upreq rgm_upreq_t;

/* TLS settings of one request's origin; connections are pooled per (origin, tls settings). */
typedef struct rgm_tls_opts {
    const char *ca_file;          /* PEM bundle, or NULL for the system CAs */
    int insecure_skip_verify;     /* no verification at all (logged as a warning by the caller) */
    const char *client_cert_file; /* PEM chain presented to the server, or NULL */
    const char *client_key_file;  /* its key; both or neither */
    const char *server_name;      /* the certificate is checked against this name (and it is
                                   * the SNI) instead of the URL's host; NULL: the host */
} rgm_tls_opts_t;

typedef struct rgm_client_opts {
    uint64_t connect_timeout_ms;   /* DNS + TCP + TLS handshake; default 10 s */
    uint64_t read_timeout_ms;      /* no byte received for this long; default 60 s */
    unsigned max_idle_per_origin;  /* idle keep-alive connections kept; default 8 */
    unsigned max_conns_per_origin; /* more requests wait in FIFO order; default 32 */
    uint64_t idle_timeout_ms;      /* idle pooled connections closed after; default 30 s */
    const rgm_cidr_t *allow_nets;  /* RGM_NET_PUBLIC may reach these all the same (borrowed) */
    size_t allow_nets_len;
    const rgm_tls_opts_t *tls; /* for requests made with tls NULL (borrowed); NULL: none */
} rgm_client_opts_t;

/* Where a request may connect, checked on each address before connecting to it (so that a
 * name that resolves, or rebinds, to a refused address is refused too). A refusal ends the
 * request with UV_EPERM before any connection to that address is attempted. */
enum rgm_net_policy {
    RGM_NET_ANY = 0,      /* a configured registry: trusted as written */
    RGM_NET_NO_LINKLOCAL, /* its redirects and token realms: no 169.254/16, fe80::/10 */
    RGM_NET_PUBLIC,       /* a host a client chose: public addresses only, no IP literal,
                           * unless allow_nets names it */
};

typedef struct rgm_upreq_cbs {
    /* Final status line and headers arrived (after redirects were followed). Return 0 to read
     * the body, or <0 to stop (on_done then runs with that code). */
    int (*on_head)(rgm_upreq_t *r, int status, void *ud);
    /* Body bytes (de-chunked). The callee may call rgm_upreq_pause() to stop reading. Return 0,
     * or <0 to stop (on_done then runs with that code). */
    int (*on_body)(rgm_upreq_t *r, const char *data, size_t len, void *ud);
    /* Exactly once, never from inside rgm_upreq_start(): err 0 when the whole message arrived,
     * else <0 (UV_ETIMEDOUT, UV_ECONNRESET, UV_EOF for a body cut short, UV_EPROTO for a
     * malformed response or a TLS/verification failure, UV_ECANCELED, UV_ELOOP for too many
     * redirects...). The request is freed after on_done returns. */
    void (*on_done)(rgm_upreq_t *r, int err, void *ud);
} rgm_upreq_cbs_t;

/* opts may be NULL (defaults). */
rgm_client_t *rgm_client_new(uv_loop_t *loop, const rgm_client_opts_t *opts);
/* Close idle connections and free the client; every request must have finished (on_done run).
 * cb runs when every handle is closed. */
void rgm_client_close(rgm_client_t *c, void (*cb)(void *ud), void *ud);

/* A request for url ("http://host:port/path?query" or https). method is "GET" or "HEAD" (any
 * token is sent as is). tls may be NULL: the client's opts.tls, else system CAs and verify.
 * Returns NULL for a URL that cannot be parsed. */
rgm_upreq_t *rgm_upreq_new(rgm_client_t *c, const char *method, const char *url,
                           const rgm_tls_opts_t *tls);
/* Add a request header (copied). Host, Connection, Accept-Encoding: identity and User-Agent are
 * added by the client; a Host, Connection, Content-Length or Transfer-Encoding given here is
 * ignored. */
void rgm_upreq_add_header(rgm_upreq_t *r, const char *name, const char *value);
/* Send len bytes of data as the request body (copied), with Content-Type content_type (NULL:
 * none) and a Content-Length, never chunked; a second call replaces the first. The body goes
 * out again whenever the request does: on the one retry after a reused keep-alive connection
 * died before answering (so a request with a body counts as idempotent, like a GET: use it for
 * requests that are, such as an OAuth2 token request) and on a 307 or 308 redirect. A 303, and
 * a 301 or 302 of a POST, turn it into a GET without the body. The body may hold a secret, so
 * it never follows a redirect to another origin: a 307 or 308 there ends the request with
 * UV_EPERM. A CR or LF in content_type makes rgm_upreq_start refuse the request (UV_EINVAL). */
void rgm_upreq_set_body(rgm_upreq_t *r, const char *content_type, const void *data, size_t len);
/* Where r may connect (default RGM_NET_ANY). A redirect to another origin turns RGM_NET_ANY
 * into RGM_NET_NO_LINKLOCAL. */
void rgm_upreq_set_net_policy(rgm_upreq_t *r, enum rgm_net_policy p);
/* Follow at most max redirects (301, 302, 303, 307, 308; default 5; 0 = return them). On a
 * redirect to another origin (scheme, host or port differ) the Authorization header is dropped
 * and never sent again for this request. */
void rgm_upreq_set_max_redirects(rgm_upreq_t *r, unsigned max);
/* Start. Returns 0 (then on_done runs exactly once, later) or <0 (nothing will run; the
 * request is freed). */
RGM_MUST_CHECK int rgm_upreq_start(rgm_upreq_t *r, const rgm_upreq_cbs_t *cbs, void *ud);
/* Stop / restart reading the response body (backpressure). Idempotent. */
void rgm_upreq_pause(rgm_upreq_t *r);
void rgm_upreq_resume(rgm_upreq_t *r);
/* Abandon the request; on_done(UV_ECANCELED) runs later, unless it already ran. */
void rgm_upreq_cancel(rgm_upreq_t *r);

/* Valid from on_head until on_done returns. */
int rgm_upreq_status(const rgm_upreq_t *r);
const char *rgm_upreq_header(const rgm_upreq_t *r, const char *name); /* case-insensitive */
int64_t rgm_upreq_content_length(const rgm_upreq_t *r);               /* -1 when unknown */
const char *rgm_upreq_url(const rgm_upreq_t *r);                      /* after redirects */

#endif
