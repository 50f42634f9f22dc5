/* The downstream request head. llhttp's data callbacks append each span of the URL and of each
 * header into the request's one text buffer, checking the URL, header-count and header-byte
 * limits as the bytes accumulate; a request with a body is refused. Then the accessors the
 * handler reads, and the access log line. It never reads, writes or closes a socket: errors
 * go back to the connection through the parser's return code and conn->err_*. */
#include "http/reqhead.h"

#include <uv.h>
#include <llhttp.h>

#include "core/log.h"
#include "core/util.h"

#define DEF_MAX_URL       8192
#define DEF_MAX_HDR_BYTES (32 * 1024)
#define DEF_MAX_HEADERS   100

static uint64_t next_req_id = 1;

/* ---- the head storage ---- */

static rgm_req_t *req_new(struct conn *c)
{
    rgm_req_t *req = rgm_calloc(1, sizeof(*req));

    req->c = c;
    req->id = next_req_id++;
    req->start_ns = uv_hrtime();
    req->sf.fd = -1;
    return req;
}

void rgm_req_free(rgm_req_t *req)
{
    if (!req)
        return;
    free(req->text);
    free(req->hdrs);
    free(req->path);
    free(req->query);
    free(req->pending_head);
    free(req);
}

/* Callers have checked the limits, so growth is bounded by the configuration. */
static void req_append(rgm_req_t *req, const char *at, size_t len)
{
    if (req->text_len + len + 1 > req->text_cap) {
        size_t cap = req->text_cap ? req->text_cap : 256;
        while (cap < req->text_len + len + 1)
            cap *= 2;
        req->text = rgm_realloc(req->text, cap);
        req->text_cap = cap;
    }
    memcpy(req->text + req->text_len, at, len);
    req->text_len += len;
    req->text[req->text_len] = '\0';
}

/* Split the request target into path and query; absolute-form loses scheme and authority. */
static void req_split_target(rgm_req_t *req)
{
    const char *t = req->text;
    const char *end = req->text + req->url_len;
    const char *q;
    const char *hash;

    if (*t != '/') {
        const char *sep = strstr(t, "://");
        if (sep && (size_t)(sep - t) <= 5) {
            const char *slash = memchr(sep + 3, '/', (size_t)(end - (sep + 3)));
            const char *qm = memchr(sep + 3, '?', (size_t)(end - (sep + 3)));
            if (qm && (!slash || qm < slash)) {
                req->path = rgm_strdup("/");
                req->query = rgm_strndup(qm + 1, (size_t)(end - qm - 1));
                return;
            }
            t = slash ? slash : end;
        }
    }
    hash = memchr(t, '#', (size_t)(end - t));
    if (hash)
        end = hash;
    q = memchr(t, '?', (size_t)(end - t));
    if (q) {
        req->path = rgm_strndup(t, (size_t)(q - t));
        req->query = rgm_strndup(q + 1, (size_t)(end - q - 1));
    } else {
        req->path = t == end ? rgm_strdup("/") : rgm_strndup(t, (size_t)(end - t));
        req->query = rgm_strdup("");
    }
}

/* ---- llhttp callbacks: accumulate and check limits; never close ---- */

static struct conn *pconn(llhttp_t *p)
{
    return rgm_container_of(p, struct conn, parser);
}

/* The code of every refusal here is UNSUPPORTED: the OCI error table (distribution-spec
 * v1.1 "Error Codes") has no code for an HTTP-level refusal, and a 4XX JSON body must carry
 * one of its codes; "the operation is unsupported" is the one that fits (docs/architecture.md,
 * "Errors"). */
static int parse_fail(llhttp_t *p, int status, const char *code, const char *msg)
{
    struct conn *c = pconn(p);

    c->err_status = status;
    c->err_code = code;
    c->err_msg = msg;
    llhttp_set_error_reason(p, msg);
    return HPE_USER;
}

static int on_message_begin(llhttp_t *p)
{
    struct conn *c = pconn(p);

    RGM_BUG_ON(c->req != NULL);
    c->req = req_new(c);
    c->is_head_started = 1;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = pconn(p);
    rgm_req_t *req = c->req;

    if (req->text_len + len > rgm_cfg_lim(c->srv->cfg->max_url_len, DEF_MAX_URL))
        return parse_fail(p, 414, "UNSUPPORTED", "request target too long");
    req_append(req, at, len);
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    rgm_req_t *req = pconn(p)->req;

    req->url_len = req->text_len;
    req_append(req, "", 0);
    req->text_len++; /* keep the NUL */
    return 0;
}

static int header_bytes_add(llhttp_t *p, size_t n)
{
    struct conn *c = pconn(p);

    c->req->header_bytes += n;
    if (c->req->header_bytes > rgm_cfg_lim(c->srv->cfg->max_header_bytes, DEF_MAX_HDR_BYTES))
        return parse_fail(p, 431, "UNSUPPORTED", "request headers too large");
    return 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = pconn(p);
    rgm_req_t *req = c->req;

    if (!req->is_in_field) {
        if (req->hdrs_len >= rgm_cfg_lim(c->srv->cfg->max_headers, DEF_MAX_HEADERS))
            return parse_fail(p, 431, "UNSUPPORTED", "too many request headers");
        if (req->hdrs_len == req->hdrs_cap) {
            req->hdrs_cap = req->hdrs_cap ? req->hdrs_cap * 2 : 16;
            req->hdrs = rgm_realloc(req->hdrs, req->hdrs_cap * sizeof(*req->hdrs));
        }
        req->hdrs[req->hdrs_len].name_off = req->text_len;
        req->hdrs[req->hdrs_len].value_off = req->text_len;
        req->hdrs_len++;
        req->is_in_field = 1;
        if (header_bytes_add(p, 4) != 0) /* ": " and CRLF */
            return HPE_USER;
    }
    if (header_bytes_add(p, len) != 0)
        return HPE_USER;
    req_append(req, at, len);
    return 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    rgm_req_t *req = pconn(p)->req;

    req_append(req, "", 0);
    req->text_len++;
    req->hdrs[req->hdrs_len - 1].value_off = req->text_len;
    req->is_in_field = 0;
    return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    if (header_bytes_add(p, len) != 0)
        return HPE_USER;
    req_append(pconn(p)->req, at, len);
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    rgm_req_t *req = pconn(p)->req;
    const size_t voff = req->hdrs[req->hdrs_len - 1].value_off;

    while (req->text_len > voff &&
           (req->text[req->text_len - 1] == ' ' || req->text[req->text_len - 1] == '\t'))
        req->text_len--;
    req_append(req, "", 0);
    req->text_len++;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = pconn(p);
    rgm_req_t *req = c->req;
    int has_body;

    req->method_raw = llhttp_get_method(p);
    req->method = req->method_raw == HTTP_GET    ? RGM_M_GET
                  : req->method_raw == HTTP_HEAD ? RGM_M_HEAD
                                                 : RGM_M_OTHER;
    if (req->method_raw == HTTP_CONNECT) {
        parse_fail(p, 400, "UNSUPPORTED", "CONNECT not supported");
        return -1;
    }
    has_body = (p->flags & (F_CHUNKED | F_TRANSFER_ENCODING)) != 0 ||
               ((p->flags & F_CONTENT_LENGTH) != 0 && p->content_length > 0);
    if (has_body) {
        /* The mirror is read-only: bodies are refused, never buffered. */
        if (req->method != RGM_M_OTHER)
            parse_fail(p, 400, "UNSUPPORTED", "request body not allowed");
        else
            parse_fail(p, 405, "UNSUPPORTED", "request body not allowed: read-only mirror");
        return -1;
    }
    /* We never switch protocols: an Upgrade request is served as plain HTTP/1.1. */
    p->upgrade = 0;
    req->is_keep_alive = llhttp_should_keep_alive(p);
    if (!req->text) {
        req_append(req, "", 0);
        req->text_len++;
    }
    req_split_target(req);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    pconn(p)->is_head_started = 0;
    return HPE_PAUSED; /* one request at a time: conn_process dispatches it */
}

void rgm_req_parser_settings(rgm_server_t *srv)
{
    llhttp_settings_init(&srv->settings);
    srv->settings.on_message_begin = on_message_begin;
    srv->settings.on_url = on_url;
    srv->settings.on_url_complete = on_url_complete;
    srv->settings.on_header_field = on_header_field;
    srv->settings.on_header_field_complete = on_header_field_complete;
    srv->settings.on_header_value = on_header_value;
    srv->settings.on_header_value_complete = on_header_value_complete;
    srv->settings.on_headers_complete = on_headers_complete;
    srv->settings.on_message_complete = on_message_complete;
}

/* ---- request accessors ---- */

enum rgm_method rgm_req_method(const rgm_req_t *req)
{
    return req->method;
}

const char *rgm_req_method_name(const rgm_req_t *req)
{
    return llhttp_method_name((llhttp_method_t)req->method_raw);
}

const char *rgm_req_path(const rgm_req_t *req)
{
    return req->path;
}

const char *rgm_req_query(const rgm_req_t *req)
{
    return req->query;
}

const char *rgm_req_header(const rgm_req_t *req, const char *name)
{
    unsigned i;

    for (i = 0; i < req->hdrs_len; i++) {
        if (rgm_strcaseeq(req->text + req->hdrs[i].name_off, name))
            return req->text + req->hdrs[i].value_off;
    }
    return NULL;
}

int rgm_req_header_list(const rgm_req_t *req, const char *name, char *out, size_t outlen)
{
    size_t len = 0;
    unsigned i;
    int found = 0;

    if (outlen == 0)
        return UV_ENOBUFS;
    out[0] = '\0';
    for (i = 0; i < req->hdrs_len; i++) {
        const char *v = req->text + req->hdrs[i].value_off;
        const size_t vlen = strlen(v);

        if (!rgm_strcaseeq(req->text + req->hdrs[i].name_off, name))
            continue;
        if (len + (found ? 2 : 0) + vlen + 1 > outlen)
            return UV_ENOBUFS;
        if (found) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, v, vlen + 1);
        len += vlen;
        found = 1;
    }
    return found;
}

const char *rgm_req_client(const rgm_req_t *req)
{
    return req->c->client;
}

uint64_t rgm_req_id(const rgm_req_t *req)
{
    return req->id;
}

void rgm_req_set_cache_status(rgm_req_t *req, const char *status)
{
    req->cache_status = status;
}

void rgm_req_on_close(rgm_req_t *req, void (*cb)(rgm_req_t *req, void *ud), void *ud)
{
    req->on_close = cb;
    req->on_close_ud = ud;
}

/* ---- the access log ---- */

/* The query is part of the path (containerd's ns=), quoted and escaped like every
 * request-derived string. */
void rgm_req_log_access(const rgm_req_t *req, const char *cut)
{
    const struct conn *c = req->c;
    char target[1024];
    char path[1100];
    char why[128];

    if (!c->srv->cfg->access_log || RGM_LOG_INFO > rgm_log_level_cur)
        return;
    snprintf(target, sizeof(target), "%s%s%s", req->path ? req->path : "",
             req->query && req->query[0] ? "?" : "", req->query ? req->query : "");
    rgm_log_kv(RGM_LOG_INFO, "access",
               "method=%s path=%s status=%d bytes=%llu dur_ms=%.1f client=%s cache=%s id=%llu%s%s",
               llhttp_method_name((llhttp_method_t)req->method_raw),
               rgm_log_quote(target, path, sizeof(path)), req->status,
               (unsigned long long)req->bytes_out, (double)(uv_hrtime() - req->start_ns) / 1e6,
               c->client, req->cache_status ? req->cache_status : "-", (unsigned long long)req->id,
               cut ? " cut=" : "", cut ? rgm_log_quote(cut, why, sizeof(why)) : "");
}
