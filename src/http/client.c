/* The upstream client's front: the client object and its defaults, building a request (URL,
 * TLS settings, headers, redirect limit) and reading its response head. Running a request is
 * upreq.c (rgm_upreq_start, _pause, _resume, _cancel); connections and their pools are pool.c.
 * It knows nothing of registries, auth or caches. */
#include "http/client.h"

#include "core/util.h"
#include "http/pool.h"
#include "http/uphead.h"
#include "http/upreq.h"

struct rgm_client {
    struct pool pool;
    void (*close_cb)(void *ud);
    void *close_ud;
};

/* ---- client ---- */

static void on_pool_closed(struct pool *p)
{
    rgm_client_t *c = rgm_container_of(p, rgm_client_t, pool);

    if (c->close_cb)
        c->close_cb(c->close_ud);
    free(c);
}

rgm_client_t *rgm_client_new(uv_loop_t *loop, const rgm_client_opts_t *opts)
{
    rgm_client_t *c = rgm_calloc(1, sizeof(*c));
    rgm_client_opts_t o = {0};

    if (opts)
        o = *opts;
    if (o.connect_timeout_ms == 0)
        o.connect_timeout_ms = 10000;
    if (o.read_timeout_ms == 0)
        o.read_timeout_ms = 60000;
    if (o.max_idle_per_origin == 0)
        o.max_idle_per_origin = 8;
    if (o.max_conns_per_origin == 0)
        o.max_conns_per_origin = 32;
    if (o.idle_timeout_ms == 0)
        o.idle_timeout_ms = 30000;
    rgm_pool_init(&c->pool, loop, &o, on_pool_closed);
    return c;
}

void rgm_client_close(rgm_client_t *c, void (*cb)(void *ud), void *ud)
{
    c->close_cb = cb;
    c->close_ud = ud;
    rgm_pool_close(&c->pool);
}

/* ---- requests: building ---- */

rgm_upreq_t *rgm_upreq_new(rgm_client_t *c, const char *method, const char *url,
                           const rgm_tls_opts_t *tls)
{
    rgm_upreq_t *r;
    rgm_url_t u;

    if (!method || !url || rgm_url_parse(url, &u) < 0)
        return NULL;
    if (!tls)
        tls = c->pool.opts.tls; /* the client's default, e.g. the cluster's peer_* files */
    r = rgm_calloc(1, sizeof(*r));
    r->pool = &c->pool;
    r->state = R_NEW;
    r->method = rgm_strdup(method);
    r->url = rgm_strdup(url);
    r->u = u;
    r->orig_https = u.is_https;
    snprintf(r->orig_host, sizeof(r->orig_host), "%s", u.host);
    r->orig_port = u.port;
    if (tls) {
        r->ca_file = tls->ca_file ? rgm_strdup(tls->ca_file) : NULL;
        r->verify_name = tls->server_name ? rgm_strdup(tls->server_name) : NULL;
        r->insecure = tls->insecure_skip_verify ? 1 : 0;
        if (tls->client_cert_file && tls->client_key_file) {
            r->cert_file = rgm_strdup(tls->client_cert_file);
            r->key_file = rgm_strdup(tls->client_key_file);
        }
    }
    r->max_redirects = 5;
    rgm_uphead_block_init(&r->head);
    r->content_length = -1;
    if (!rgm_uphead_is_url_safe(method) || !rgm_uphead_is_url_safe(url))
        r->has_bad_header = 1;
    (void)uv_timer_init(c->pool.loop, &r->timer);
    rgm_pool_ref(&c->pool);
    return r;
}

void rgm_upreq_set_net_policy(rgm_upreq_t *r, enum rgm_net_policy p)
{
    r->net = p;
}

void rgm_upreq_add_header(rgm_upreq_t *r, const char *name, const char *value)
{
    if (!rgm_uphead_is_field_safe(name) || !rgm_uphead_is_field_safe(value) || name[0] == '\0' ||
        strchr(name, ':')) {
        r->has_bad_header = 1; /* refused at start: a CR or LF would inject headers */
        return;
    }
    /* The framing is the client's: Content-Length comes with rgm_upreq_set_body. */
    if (rgm_strcaseeq(name, "Host") || rgm_strcaseeq(name, "Connection") ||
        rgm_strcaseeq(name, "Content-Length") || rgm_strcaseeq(name, "Transfer-Encoding"))
        return;
    rgm_uphead_add(&r->hdrs, name, value);
}

void rgm_upreq_set_body(rgm_upreq_t *r, const char *content_type, const void *data, size_t len)
{
    if (r->body)
        explicit_bzero(r->body, r->body_len);
    RGM_FREE(r->body);
    r->body = rgm_malloc(len ? len : 1);
    if (len > 0)
        memcpy(r->body, data, len);
    r->body_len = len;
    r->has_body = 1;
    rgm_uphead_remove(&r->hdrs, "Content-Type");
    if (content_type)
        rgm_upreq_add_header(r, "Content-Type", content_type);
}

void rgm_upreq_set_max_redirects(rgm_upreq_t *r, unsigned max)
{
    r->max_redirects = max;
}

/* ---- requests: the response head ---- */

int rgm_upreq_status(const rgm_upreq_t *r)
{
    return r->status;
}

const char *rgm_upreq_header(const rgm_upreq_t *r, const char *name)
{
    return rgm_uphead_get(&r->head, name);
}

int64_t rgm_upreq_content_length(const rgm_upreq_t *r)
{
    return r->content_length;
}

const char *rgm_upreq_url(const rgm_upreq_t *r)
{
    return r->url;
}
