/* GET/HEAD /v2/<name>/referrers/<digest>[?query] (OCI distribution-spec 1.1, end-12a/12b):
 * one upstream GET per client miss, its answer cached per registry, repository, subject and
 * query (each page of a Link-paginated list is its own query) for tag_ttl, served stale while
 * the upstream fails. Only an exact OCI image index is cached. A 404 means "no referrers API"
 * (spec: a registry with the API never answers 404): clients get 404 UNSUPPORTED, and the
 * registry is remembered as such for tag_ttl. Not here: the referrer manifests themselves
 * (plain manifests, manifests.c) and the tag-schema fallback (plain tags). */
#include "registry/referrers.h"

#include <uv.h>
#include <jansson.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"

#define RGM_REFERRERS_MAX (4u * 1024 * 1024)
#define QUERY_MAX         1024
#define MT_INDEX          "application/vnd.oci.image.index.v1+json"

/* One upstream GET on behalf of one client. */
struct rcall {
    struct rq *q; /* held through q->pending */
    char query[QUERY_MAX];
    int status;
    int used_client;
    char content_type[256];
    char link[2048];
    char filters[256];
    rgm_buf_t body;
    rgm_index_referrers_t row; /* the cached answer, expired or not ours yet; has_row */
    int has_row;
};

/* ---- queries and headers ---- */

static int is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* One query item: RFC 3986 query characters, and well-formed %XX escapes. */
static int query_item_ok(const char *s, size_t len)
{
    size_t i;

    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c == '%') {
            if (i + 2 >= len || !is_hex((unsigned char)s[i + 1]) ||
                !is_hex((unsigned char)s[i + 2]))
                return 0;
            i += 2;
            continue;
        }
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (c == '\0' || !strchr("-._~!$'()*+,;=:@/?", c))
            return 0;
    }
    return 1;
}

/* The query sent upstream, which is also the cache key: the client's items in its order,
 * without ns= (it picks the registry here) and empty items. 0, or UV_EINVAL (a character
 * outside the query grammar, or longer than outlen). */
static int upstream_query(const char *in, char *out, size_t outlen)
{
    const char *p = in;
    size_t n = 0;
    size_t len;

    out[0] = '\0';
    while (*p) {
        len = strcspn(p, "&");
        if (len > 0 && !(len >= 3 && memcmp(p, "ns=", 3) == 0) &&
            !(len == 2 && memcmp(p, "ns", 2) == 0)) {
            if (!query_item_ok(p, len) || n + len + 2 > outlen)
                return UV_EINVAL;
            if (n > 0)
                out[n++] = '&';
            memcpy(out + n, p, len);
            n += len;
            out[n] = '\0';
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return 0;
}

static int is_header_safe(const char *v)
{
    return v && !strpbrk(v, "\r\n");
}

/* The upstream's Link (`<url>; rel="next"`) pointed back at this mirror the way this client
 * addressed it (path prefix or ns=). Only url's query is kept; the path is the client's own,
 * so a Link cannot send the client to another repository or host. 0, or <0: drop it. */
static int next_link(struct rq *q, const char *link, char *out, size_t outlen)
{
    const char *lt = strchr(link, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    const char *qm = gt ? memchr(lt, '?', (size_t)(gt - lt)) : NULL;
    char raw[QUERY_MAX];
    char query[QUERY_MAX];
    char ns[RGM_REF_HOST_MAX + 1];
    char enc[3 * RGM_REF_HOST_MAX + 8] = "";
    const char *reg = q->path.registry;
    int n;

    if (!qm || (size_t)(gt - qm) > sizeof(raw))
        return -1;
    memcpy(raw, qm + 1, (size_t)(gt - qm - 1));
    raw[gt - qm - 1] = '\0';
    if (upstream_query(raw, query, sizeof(query)) < 0 || !query[0])
        return -1;
    if (!reg[0] && rgm_query_get(rgm_req_query(q->req), "ns", ns, sizeof(ns)) == 1) {
        memcpy(enc, "&ns=", 5);
        if (rgm_url_encode(ns, enc + 4, sizeof(enc) - 4) < 0)
            return -1;
    }
    n = snprintf(out, outlen, "</v2/%s%s%s/referrers/%s?%s%s>%s", reg, reg[0] ? "/" : "",
                 q->path.name, q->path.reference, query, enc, gt + 1);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* ---- access: request.c's rule, for answers that are not objects ---- */

/* The key of request.c's per-repository decisions ("the upstream accepted these credentials
 * for this repository"), which rq_mark_origin and rq_check_access share. */
static void access_key(struct rq *q, char *key, size_t len)
{
    snprintf(key, len, "%s|%s|%s", q->credhash, q->reg->name, q->repo);
}

/* May q be served this cached answer? A public one (the mirror's own identity got it): yes.
 * A private one: only when the upstream accepted q's credentials for the repository within
 * auth_cache_ttl; otherwise the upstream decides, with q's credentials. */
static int is_vouched(struct rq *q, const rgm_index_referrers_t *row)
{
    char key[1024];

    if (row->is_public)
        return 1;
    if (!q->auth)
        return 0;
    access_key(q, key, sizeof(key));
    return rgm_auth_cache_get(q->r->access, key, rgm_time_ms()) != NULL;
}

static void grant(struct rq *q)
{
    char key[1024];

    if (!q->auth)
        return;
    access_key(q, key, sizeof(key));
    rgm_auth_cache_put(q->r->access, key, "1", rgm_time_ms() + q->r->cfg->auth_cache_ttl_ms);
}

/* ---- answers ---- */

static void answer(struct rq *q, const char *body, size_t len, const char *ct, const char *link,
                   const char *filters)
{
    char h[4096];
    char next[2048];
    int n;

    n = snprintf(h, sizeof(h), "Content-Type: %s\r\n", is_header_safe(ct) && ct[0] ? ct : MT_INDEX);
    if (link && link[0] && is_header_safe(link) && next_link(q, link, next, sizeof(next)) == 0)
        n += snprintf(h + n, sizeof(h) - (size_t)n, "Link: %s\r\n", next);
    if (filters && filters[0] && is_header_safe(filters) && (size_t)n < sizeof(h))
        snprintf(h + n, sizeof(h) - (size_t)n, "OCI-Filters-Applied: %s\r\n", filters);
    if (rq_start(q, 200, h, (int64_t)len) < 0) {
        rq_abort(q, "cannot start response");
        return;
    }
    if (!q->is_head && len > 0) {
        if (rgm_resp_write(q->req, body, len, NULL, NULL) < 0) {
            rq_abort(q, "write failed");
            return;
        }
        rq_count_bytes(q, len);
    }
    rq_finish(q);
}

static void answer_row(struct rq *q, const rgm_index_referrers_t *row, const char *cache)
{
    rq_set_cache(q, cache);
    answer(q, row->body, row->body_len, MT_INDEX, row->link, row->filters);
}

static void unsupported(struct rq *q)
{
    rq_error(q, 404, "UNSUPPORTED",
             "the upstream registry has no referrers API: use the referrers tag schema "
             "(<alg>-<hex>)",
             NULL);
}

/* ---- upstream answers ---- */

/* An OCI error body whose first code is NAME_UNKNOWN: the upstream understood the route (it
 * has the API) and does not know, or hides, the repository. */
static int is_name_unknown(const rgm_buf_t *body)
{
    json_t *doc = body->len ? json_loadb(body->data, body->len, 0, NULL) : NULL;
    const char *code = json_string_value(
        json_object_get(json_array_get(json_object_get(doc, "errors"), 0), "code"));
    int yes = code && strcmp(code, "NAME_UNKNOWN") == 0;

    json_decref(doc);
    return yes;
}

/* Cacheable: exactly the OCI image index type, and a JSON object with a manifests array. */
static int is_index(const struct rcall *rc)
{
    json_t *doc;
    int yes;

    if (strcmp(rc->content_type, MT_INDEX) != 0)
        return 0;
    doc = json_loadb(rc->body.data, rc->body.len, 0, NULL);
    yes = json_is_object(doc) && json_is_array(json_object_get(doc, "manifests"));
    json_decref(doc);
    return yes;
}

static void store(struct rcall *rc)
{
    struct rq *q = rc->q;
    rgm_index_referrers_t row;

    memset(&row, 0, sizeof(row));
    row.body = rc->body.data;
    row.body_len = rc->body.len;
    snprintf(row.link, sizeof(row.link), "%s", rc->link);
    snprintf(row.filters, sizeof(row.filters), "%s", rc->filters);
    row.is_public = !rc->used_client;
    row.checked_ms = rgm_time_ms();
    if (rgm_index_put_referrers(q->r->index, q->reg->name, q->repo, q->path.reference, rc->query,
                                &row) < 0)
        rgm_log(RGM_LOG_WARN, "referrers", "cannot cache referrers of %s", q->path.reference);
    if (rgm_index_put_referrers_api(q->r->index, q->reg->name, 1, 0) < 0)
        rgm_log(RGM_LOG_WARN, "referrers", "cannot record the referrers API of %s", q->reg->name);
}

static void remember_no_api(struct rcall *rc)
{
    struct rq *q = rc->q;

    if (is_name_unknown(&rc->body))
        return;
    rgm_log(RGM_LOG_INFO, "referrers", "%s has no referrers API (404); asking again in %llu s",
            q->reg->name, (unsigned long long)(q->reg->tag_ttl_ms / 1000));
    if (rgm_index_put_referrers_api(q->r->index, q->reg->name, 0, rgm_time_ms()) < 0)
        rgm_log(RGM_LOG_WARN, "referrers", "cannot record that %s has no referrers API",
                q->reg->name);
}

static void copy_header(rgm_upcall_t *c, const char *name, char *out, size_t len)
{
    const char *v = rgm_upcall_header(c, name);

    out[0] = '\0';
    if (is_header_safe(v) && strlen(v) < len)
        snprintf(out, len, "%s", v);
}

static int rc_on_head(rgm_upcall_t *c, int status, void *ud)
{
    struct rcall *rc = ud;

    rc->status = status;
    rc->used_client = rgm_upcall_used_client_auth(c);
    if (status == 200) {
        copy_header(c, "Content-Type", rc->content_type, sizeof(rc->content_type));
        copy_header(c, "Link", rc->link, sizeof(rc->link));
        copy_header(c, "OCI-Filters-Applied", rc->filters, sizeof(rc->filters));
    }
    return 0; /* error bodies are read too: a 404's says whether the route was understood */
}

static int rc_on_body(rgm_upcall_t *c, const char *data, size_t len, void *ud)
{
    struct rcall *rc = ud;

    (void)c;
    if (rc->status != 200 && rc->status != 404)
        return 0;
    return rgm_buf_append(&rc->body, data, len) < 0 ? UV_E2BIG : 0;
}

/* The upstream failed (no answer, 5xx, 429, a body over the limit): the cached answer if q
 * may have it, else the upstream's error. */
static void answer_failure(struct rcall *rc, rgm_upcall_t *c, int err)
{
    struct rq *q = rc->q;

    if (rc->has_row && is_vouched(q, &rc->row)) {
        answer_row(q, &rc->row, "STALE");
        return;
    }
    if (err == UV_E2BIG)
        rq_relay_error(q, 502, NULL, 0, 0);
    else
        rq_relay_error(q, err ? 0 : rc->status, c, err ? err : UV_EPROTO, 0);
}

static void rc_on_done(rgm_upcall_t *c, int err, void *ud)
{
    struct rcall *rc = ud;
    struct rq *q = rc->q;
    int is_cacheable = err == 0 && rc->status == 200 && is_index(rc);

    q->pending--;
    if (is_cacheable)
        store(rc);
    if (err == 0 && rc->status == 404)
        remember_no_api(rc);
    if (!q->req) {
        rq_release(q);
    } else if (err == 0 && rc->status == 200) {
        if (rc->used_client)
            grant(q);
        if (!is_cacheable)
            rgm_log(RGM_LOG_INFO, "referrers", "not caching referrers of %s: Content-Type %s",
                    q->path.reference, rc->content_type[0] ? rc->content_type : "(none)");
        rq_set_cache(q, "MISS");
        answer(q, rc->body.data, rc->body.len, rc->content_type, rc->link, rc->filters);
    } else if (err == 0 && rc->status == 404) {
        unsupported(q);
    } else if (err == 0 && rc->status >= 400 && rc->status < 500 && rc->status != 429) {
        rq_relay_error(q, rc->status, c, 0, 0); /* 401 with the challenge, 403, 400 ... */
    } else {
        answer_failure(rc, c, err);
    }
    rgm_buf_free(&rc->body);
    free(rc->row.body);
    free(rc);
}

static const rgm_upcall_cbs_t rc_cbs = {rc_on_head, rc_on_body, rc_on_done};

/* Ask the upstream; row (may be NULL) is the cached answer to fall back on, and becomes the
 * call's. */
static void ask_upstream(struct rq *q, const char *query, rgm_index_referrers_t *row)
{
    struct rcall *rc = rgm_calloc(1, sizeof(*rc));
    rgm_upcall_opts_t o;
    char suffix[RGM_REF_DIGEST_MAX + 16];
    int err;

    rc->q = q;
    snprintf(rc->query, sizeof(rc->query), "%s", query);
    rgm_buf_init(&rc->body, RGM_REFERRERS_MAX);
    if (row) {
        rc->row = *row;
        rc->has_row = 1;
        row->body = NULL;
    }
    snprintf(suffix, sizeof(suffix), "referrers/%s", q->path.reference);
    rq_upcall_opts(q, &o, "GET", suffix);
    o.query = query[0] ? query : NULL;
    o.accept = MT_INDEX;
    err = rgm_upcall_start(q->r->up, &o, &rc_cbs, rc, NULL);
    if (err < 0) {
        answer_failure(rc, NULL, err);
        rgm_buf_free(&rc->body);
        free(rc->row.body);
        free(rc);
        return;
    }
    q->r->m.upstream_requests++;
    q->pending++;
}

/* ---- entry point ---- */

void referrers_handle(struct rq *q)
{
    struct rq_env *r = q->r;
    rgm_index_referrers_t row;
    char query[QUERY_MAX];
    uint64_t now = rgm_time_ms();
    uint64_t noapi_ms = 0;
    int has_row;

    if (upstream_query(rgm_req_query(q->req), query, sizeof(query)) < 0) {
        rq_error(q, 400, "UNSUPPORTED", "invalid query", NULL);
        return;
    }
    has_row = rgm_index_get_referrers(r->index, q->reg->name, q->repo, q->path.reference, query,
                                      &row) == 0;
    if (has_row && now < row.checked_ms + q->reg->tag_ttl_ms && is_vouched(q, &row)) {
        answer_row(q, &row, "HIT");
        free(row.body);
        return;
    }
    /* A private answer this client is not known to be allowed: the upstream decides. */
    if (!has_row && rgm_index_get_referrers_api(r->index, q->reg->name, &noapi_ms) == 0 &&
        now < noapi_ms + q->reg->tag_ttl_ms) {
        unsupported(q);
        return;
    }
    if (r->is_stopping) {
        if (has_row && is_vouched(q, &row))
            answer_row(q, &row, "STALE");
        else
            rq_error(q, 503, "UNAVAILABLE", "shutting down", NULL);
        free(row.body);
        return;
    }
    ask_upstream(q, query, has_row ? &row : NULL);
    free(row.body);
}
