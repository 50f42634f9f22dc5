/* GET/HEAD /v2/<name>/manifests/<tag or digest> and GET /v2/<name>/tags/list. Manifests are
 * small: fetched whole into memory (one upstream GET per registry/repository/reference/Accept
 * in flight, shared by every waiter), verified, stored as blobs and indexed with their tag.
 * Tags are served from the index for tag_ttl, then revalidated with a HEAD; stale tags are
 * served while the upstream fails, up to max_stale. A tag not here is resolved with a shared
 * HEAD first, so that a GET (a pull) is spent only on a digest not cached; upstream 404s to
 * the mirror's own identity are remembered (negative_ttl). Schema 1 manifests are refused,
 * never cached. */
#include "registry/manifests.h"

#include <uv.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <jansson.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"

#define RGM_MANIFEST_MAX (4u * 1024 * 1024)
#define RGM_TAGLIST_MAX  (4u * 1024 * 1024)

#define DEFAULT_ACCEPT                                                                             \
    "application/vnd.oci.image.index.v1+json, "                                                    \
    "application/vnd.oci.image.manifest.v1+json, "                                                 \
    "application/vnd.docker.distribution.manifest.list.v2+json, "                                  \
    "application/vnd.docker.distribution.manifest.v2+json"

/* Docker image manifest v2, schema 1. Its digest is that of the JWS payload, not of the bytes
 * served, so the mirror cannot verify it the way it verifies everything else; containerd 2 and
 * current Docker refuse it too. It is refused with 404 MANIFEST_UNKNOWN, never cached, and not
 * asked for (DEFAULT_ACCEPT). */
#define MT_SCHEMA1_SIGNED "application/vnd.docker.distribution.manifest.v1+prettyjws"
#define MT_SCHEMA1        "application/vnd.docker.distribution.manifest.v1+json"

enum mj_kind { MJ_MANIFEST = 0, MJ_TAGS, MJ_HEAD };

#define PREWARM_HDR "X-Regmirror-Prewarm" /* sent by `regmirror prewarm` (cmd/prewarm-run.c) */

struct mjob {
    struct rq_env *r;
    struct mjob *next;
    enum mj_kind kind;
    char *key;
    const rgm_registry_cfg_t *reg;
    char repo[RGM_REF_NAME_MAX + 16];
    char ref[RGM_REF_DIGEST_MAX + 1];
    int ref_is_digest;
    char credhash[65];
    rgm_upcall_t *call;
    int status;
    int is_answered;
    int used_client;
    char *content_type;
    char *link;
    char *digest_hdr;
    int64_t head_len; /* MJ_HEAD: the upstream's Content-Length, -1 unknown */
    rgm_buf_t body;
    struct rq *waiters;
};

/* The client's Accept (all its Accept lines), or the full modern list when it sent none.
 * Valid until the next call for the same request. */
static const char *accept_of(struct rq *q)
{
    if (!q->accept) {
        char buf[4096];

        if (rgm_req_header_list(q->req, "Accept", buf, sizeof(buf)) == 1 && buf[0])
            q->accept = rgm_strdup(buf);
        else
            q->accept = rgm_strdup(DEFAULT_ACCEPT);
    }
    return q->accept;
}

static int digest_of(const char *algo_of, const void *data, size_t len, char *out, size_t outlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    int is512 = algo_of && strncmp(algo_of, "sha512:", 7) == 0;

    if (EVP_Digest(data, len, md, &mdlen, is512 ? EVP_sha512() : EVP_sha256(), NULL) != 1)
        return UV_EIO;
    rgm_hex(md, mdlen, hex);
    snprintf(out, outlen, "%s:%s", is512 ? "sha512" : "sha256", hex);
    return 0;
}

/* Does the client's Accept admit media type mt? No Accept, a wildcard or an unknown stored
 * type admit anything. Parameters (";q=0.5") are ignored. */
static int accept_admits(const char *accept, const char *mt)
{
    size_t mlen = strlen(mt);
    const char *p = accept;

    if (!accept || !accept[0] || mlen == 0)
        return 1;
    while (*p) {
        size_t n;

        while (*p == ' ' || *p == ',')
            p++;
        n = strcspn(p, ",;");
        while (n > 0 && p[n - 1] == ' ')
            n--;
        if ((n == mlen && strncmp(p, mt, n) == 0) || (n == 3 && strncmp(p, "*/*", 3) == 0))
            return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

static int header_ok(const char *v)
{
    return v && !strpbrk(v, "\r\n");
}

/* Predicate: media type ct (parameters ignored; NULL: none) is mt. */
static int type_is(const char *ct, const char *mt)
{
    size_t n = strlen(mt);

    return ct && strncmp(ct, mt, n) == 0 && (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

/* Predicate: a schema 1 manifest, by its Content-Type, or by its body when the type says
 * nothing more than JSON (registries before distribution 2.3 served schema 1 so). */
static int is_schema1(const char *ct, const rgm_buf_t *body)
{
    json_t *doc;
    int yes;

    if (type_is(ct, MT_SCHEMA1_SIGNED) || type_is(ct, MT_SCHEMA1))
        return 1;
    if (!body || body->len == 0 || (ct && ct[0] && !type_is(ct, "application/json")))
        return 0;
    doc = json_loadb(body->data, body->len, 0, NULL);
    yes = json_integer_value(json_object_get(doc, "schemaVersion")) == 1;
    json_decref(doc);
    return yes;
}

static void refuse_schema1(struct rq *q)
{
    rq_error(q, 404, "MANIFEST_UNKNOWN",
             "schema 1 manifests (" MT_SCHEMA1_SIGNED ") are not supported: their digest "
             "cannot be verified; push the image as Docker schema 2 or OCI",
             NULL);
}

static void head_remember(struct rq *q, const char *d, const char *ct, int64_t len,
                          uint64_t expires_ms);
static void mjob_join(struct rq *q, enum mj_kind kind, const char *suffix, const char *query,
                      const char *accept);

/* The answer to an upstream call that could not start: 429 with the time left while the
 * registry's 429 circuit is open, else 502 (or 504). */
static void answer_not_started(struct rq *q, int err)
{
    uint64_t ms = rgm_upstream_limited_ms(q->r->up, q->reg);
    char h[64];

    if (err != UV_EAGAIN || ms == 0) {
        rq_relay_error(q, 0, NULL, err, 0);
        return;
    }
    snprintf(h, sizeof(h), "Retry-After: %llu\r\n", (unsigned long long)(ms + 999) / 1000);
    rq_error(q, 429, "TOOMANYREQUESTS", "the upstream registry asked the mirror to wait (429)", h);
}

/* Did the upstream answer 404 to the mirror's own identity for this, within negative_ttl?
 * Only a request the mirror sends with that identity may take the answer: one that carries
 * a client's credentials gets its own try (a private repository answers 404 to strangers). */
static int known_missing(struct rq *q, const char *suffix)
{
    rgm_upcall_opts_t o;

    if (q->auth)
        return 0;
    rq_upcall_opts(q, &o, "GET", suffix);
    o.accept = accept_of(q);
    return rgm_upstream_known_missing(q->r->up, &o);
}

static void answer_negative(struct rq *q)
{
    rq_set_cache(q, "NEGATIVE");
    rq_relay_error(q, 404, NULL, 0, 0);
}

/* How long past its freshness q's cached tag is, in ms (0 when fresh or unknown). */
static uint64_t stale_age(struct rq *q)
{
    char d[RGM_DIGEST_MAX];
    uint64_t checked = 0;
    uint64_t due;

    if (q->path.is_digest ||
        rgm_index_get_tag(q->r->index, q->reg->name, q->repo, q->path.reference, d, &checked) < 0)
        return 0;
    due = checked + q->reg->tag_ttl_ms;
    return rgm_time_ms() > due ? rgm_time_ms() - due : 0;
}

/* The cached manifest digest, if it may answer q: indexed as a manifest, deliverable
 * through q's registry, and of a type q accepts. Fills q->obj. 1 or 0. */
static int cached_manifest(struct rq *q, const char *digest)
{
    if (!rgm_ref_valid_digest(digest) || rgm_index_get_object(q->r->index, digest, &q->obj) < 0 ||
        q->obj.kind != RGM_OBJ_MANIFEST || !rq_may_vouch(q, digest))
        return 0;
    q->has_obj = 1;
    return rgm_req_header(q->req, "Accept") == NULL ||
           accept_admits(accept_of(q), q->obj.media_type);
}

/* ---- serving a cached manifest ---- */

static void serve_cached(struct rq *q)
{
    rgm_index_object_t *obj = &q->obj;
    uint64_t size = 0;
    char h[1024];
    int err;

    if ((!q->has_obj || strcmp(obj->digest, q->digest) != 0) &&
        rgm_index_get_object(q->r->index, q->digest, obj) < 0) {
        rq_error(q, 404, "MANIFEST_UNKNOWN", "manifest unknown", NULL);
        return;
    }
    q->has_obj = 1;
    if (is_schema1(obj->media_type, NULL)) {
        refuse_schema1(q); /* cached before schema 1 was refused */
        return;
    }
    size = obj->size;
    if (!q->is_head) {
        err = rgm_store_open_blob(q->r->store, q->digest, &q->fd, &size);
        if (err == UV_ENOENT && !q->path.is_digest) {
            /* The row outlived its file (removed by hand): forget it and ask upstream. */
            rgm_log(RGM_LOG_WARN, "manifests", "%s indexed but missing from the store", q->digest);
            if (rgm_index_remove_object(q->r->index, q->digest) == 0) {
                q->has_obj = 0;
                manifests_handle(q);
                return;
            }
        }
        if (err < 0) {
            rq_error(q, 404, "MANIFEST_UNKNOWN", "manifest unknown", NULL);
            return;
        }
        rq_hold_file(q);
    }
    if (!q->cache_status || strcmp(q->cache_status, "STALE") != 0)
        rq_set_cache(q, "HIT");
    rgm_index_touch(q->r->index, q->digest, rgm_time_ms());
    /* A fresh tag's public answer is kept in memory until the tag is due for revalidation:
     * the next HEADs skip the index (the cached-HEAD rate is the index's cost). */
    if (q->is_head && !q->path.is_digest && q->tag_fresh_until > 0 && rq_is_public(q, q->digest))
        head_remember(q, q->digest,
                      obj->media_type[0] ? obj->media_type
                                         : "application/vnd.oci.image.manifest.v1+json",
                      (int64_t)size, q->tag_fresh_until);
    snprintf(h, sizeof(h), "Content-Type: %s\r\nDocker-Content-Digest: %s\r\n",
             obj->media_type[0] ? obj->media_type : "application/vnd.oci.image.manifest.v1+json",
             q->digest);
    if (rq_start(q, 200, h, (int64_t)size) < 0) {
        rq_abort(q, "cannot start response");
        return;
    }
    if (q->is_head || size == 0) {
        rq_finish(q);
        return;
    }
    q->end = size; /* q->off is 0: manifests are sent whole */
    rq_send_file(q);
}

static void serve_cached_checked(struct rq *q)
{
    if (q->access_status == 200) {
        serve_cached(q);
        return;
    }
    q->after_access = serve_cached;
    rq_check_access(q);
}

/* ---- manifest jobs: one upstream GET, many waiters ---- */

static void mjob_free(struct mjob *j)
{
    struct mjob **pp;

    for (pp = &j->r->mjobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            break;
        }
    }
    free(j->key);
    free(j->content_type);
    free(j->link);
    free(j->digest_hdr);
    rgm_buf_free(&j->body);
    free(j);
}

/* The next waiter whose client is still there, taken off the job; NULL when none is left.
 * Waiters whose client left are dropped on the way. */
static struct rq *take_waiter(struct mjob *j)
{
    struct rq *q;

    while ((q = j->waiters) != NULL) {
        j->waiters = q->next_mwaiter;
        q->next_mwaiter = NULL;
        q->mjob = NULL;
        if (q->req)
            return q;
        rq_release(q);
    }
    return NULL;
}

static void answer_error(struct mjob *j, int status, rgm_upcall_t *c, int err)
{
    struct rq *q;

    j->is_answered = 1;
    while ((q = take_waiter(j)) != NULL) {
        /* A refusal of the first client's identity is not another client's answer. */
        if ((status == 401 || status == 403 || status == 404) &&
            strcmp(q->credhash, j->credhash) != 0 && !j->r->is_stopping) {
            if (j->kind == MJ_TAGS)
                tags_handle(q);
            else
                manifests_handle(q);
            continue;
        }
        rq_relay_error(q, status, c, err, 0);
    }
}

static void answer_schema1(struct mjob *j)
{
    struct rq *q;

    rgm_log(RGM_LOG_INFO, "manifests", "refused schema 1 manifest %s/%s:%s", j->reg->name, j->repo,
            j->ref);
    j->is_answered = 1;
    while ((q = take_waiter(j)) != NULL)
        refuse_schema1(q);
}

static void send_body(struct rq *q, int status, const char *hdrs, const rgm_buf_t *body)
{
    if (rq_start(q, status, hdrs, (int64_t)body->len) < 0) {
        rq_abort(q, "cannot start response");
        return;
    }
    if (!q->is_head && body->len > 0) {
        if (rgm_resp_write(q->req, body->data, body->len, NULL, NULL) < 0) {
            rq_abort(q, "write failed");
            return;
        }
        rq_count_bytes(q, body->len);
    }
    rq_finish(q);
}

static void answer_manifest(struct mjob *j, const char *digest)
{
    struct rq *q;
    char h[1024];

    snprintf(h, sizeof(h), "Content-Type: %s\r\nDocker-Content-Digest: %s\r\n",
             j->content_type ? j->content_type : "application/vnd.oci.image.manifest.v1+json",
             digest);
    j->is_answered = 1;
    while ((q = take_waiter(j)) != NULL) {
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
        if (j->used_client && strcmp(q->credhash, j->credhash) != 0) {
            /* Fetched with someone else's credentials: this client must pass on its own. */
            q->after_access = serve_cached;
            rq_check_access(q);
            continue;
        }
        send_body(q, 200, h, &j->body);
    }
}

static void serve_cached(struct rq *q);
static void serve_cached_checked(struct rq *q);

/* A shared HEAD answered 200: HEAD waiters get its head; a GET waiter of a tag gets the
 * cached manifest when the digest is here (no pull spent), else it joins a GET. */
static void head_complete(struct mjob *j)
{
    struct rq *q;
    const char *d = j->digest_hdr;
    const char *ct = j->content_type;
    char h[1024];
    char suffix[512];

    snprintf(h, sizeof(h), "Content-Type: %s\r\n%s%s%s",
             ct ? ct : "application/vnd.oci.image.manifest.v1+json",
             d ? "Docker-Content-Digest: " : "", d ? d : "", d ? "\r\n" : "");
    j->is_answered = 1;
    while ((q = take_waiter(j)) != NULL) {
        if (j->used_client && strcmp(q->credhash, j->credhash) != 0) {
            manifests_handle(q); /* someone else's credentials were needed: its own try */
            continue;
        }
        if (q->is_head) {
            if (!j->used_client && !j->ref_is_digest && d && ct)
                head_remember(q, d, ct, j->head_len, rgm_time_ms() + j->reg->tag_ttl_ms);
            if (rq_start(q, 200, h, j->head_len) < 0)
                rq_abort(q, "cannot start response");
            else
                rq_finish(q);
            continue;
        }
        if (d && cached_manifest(q, d)) {
            rgm_upstream_count_avoided(j->r->up, j->reg);
            /* The upstream named d as this repository's tag, to this identity: d is in the
             * repository (public when the mirror's own identity was answered). */
            rq_mark_origin(q, d, j->used_client);
            snprintf(q->digest, sizeof(q->digest), "%s", d);
            serve_cached_checked(q);
            continue;
        }
        snprintf(suffix, sizeof(suffix), "manifests/%s", q->path.reference);
        mjob_join(q, MJ_MANIFEST, suffix, NULL, accept_of(q));
    }
}

/* Verify, store and index the manifest in j->body; then answer everyone. */
static void manifest_complete(struct mjob *j)
{
    struct rq_env *r = j->r;
    rgm_index_object_t obj;
    char digest[RGM_DIGEST_MAX];
    const char *want = j->ref_is_digest ? j->ref : j->digest_hdr;

    if (is_schema1(j->content_type, &j->body)) {
        answer_schema1(j); /* before the digest: a signed one would not match */
        return;
    }
    if (digest_of(want, j->body.data, j->body.len, digest, sizeof(digest)) < 0) {
        answer_error(j, 502, NULL, 0);
        return;
    }
    if (want && rgm_ref_valid_digest(want) && strcmp(want, digest) != 0) {
        r->m.digest_mismatches++;
        rgm_log(RGM_LOG_ERROR, "manifests", "digest mismatch for %s/%s:%s: want %s, got %s",
                j->reg->name, j->repo, j->ref, want, digest);
        answer_error(j, 502, NULL, 0);
        return;
    }
    if (rgm_store_put_small(r->store, digest, j->body.data, j->body.len) < 0) {
        rgm_log(RGM_LOG_ERROR, "manifests", "cannot store %s; serving it uncached", digest);
    } else {
        memset(&obj, 0, sizeof(obj));
        snprintf(obj.digest, sizeof(obj.digest), "%s", digest);
        obj.size = j->body.len;
        obj.kind = RGM_OBJ_MANIFEST;
        snprintf(obj.media_type, sizeof(obj.media_type), "%s",
                 j->content_type ? j->content_type : "");
        if (rgm_index_put_object(r->index, &obj) < 0 ||
            rgm_index_add_origin(r->index, digest, j->reg->name, j->repo, !j->used_client) < 0 ||
            (!j->ref_is_digest &&
             rgm_index_put_tag(r->index, j->reg->name, j->repo, j->ref, digest, rgm_time_ms()) < 0))
            rgm_log(RGM_LOG_ERROR, "manifests", "cannot index %s", digest);
        else if (r->refs && rgm_refs_record(r->refs, digest, j->body.data, j->body.len) < 0)
            rgm_log(RGM_LOG_ERROR, "manifests", "cannot record the references of %s", digest);
    }
    answer_manifest(j, digest);
}

/* The upstream's Link names its own /v2/<repo>/tags/list?...: point it back at us the way this
 * client addressed the registry (path prefix or ns=). 0, or <0 to drop the header. */
static int rewrite_link(struct rq *q, const char *link, char *out, size_t outlen)
{
    const char *lt = strchr(link, '<');
    const char *gt = lt ? strchr(lt, '>') : NULL;
    const char *v2;
    char ns[RGM_REF_HOST_MAX + 1];
    char enc[3 * RGM_REF_HOST_MAX + 1];
    int n;

    if (!lt || !gt)
        return -1;
    v2 = strstr(lt, "/v2/");
    if (!v2 || v2 > gt)
        return -1;
    if (q->path.registry[0]) {
        n = snprintf(out, outlen, "</v2/%s/%.*s%s", q->path.registry, (int)(gt - v2 - 4), v2 + 4,
                     gt);
    } else if (rgm_query_get(rgm_req_query(q->req), "ns", ns, sizeof(ns)) == 1 &&
               rgm_url_encode(ns, enc, sizeof(enc)) == 0) {
        n = snprintf(out, outlen, "<%.*s%sns=%s%s", (int)(gt - v2), v2,
                     memchr(v2, '?', (size_t)(gt - v2)) ? "&" : "?", enc, gt);
    } else {
        n = snprintf(out, outlen, "<%.*s%s", (int)(gt - v2), v2, gt);
    }
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

static void tags_complete(struct mjob *j)
{
    struct rq *q;
    char h[4096];
    char link[2048];
    int n;

    j->is_answered = 1;
    while ((q = take_waiter(j)) != NULL) {
        n = snprintf(h, sizeof(h), "Content-Type: %s\r\n",
                     header_ok(j->content_type) ? j->content_type : "application/json");
        if (header_ok(j->link) && rewrite_link(q, j->link, link, sizeof(link)) == 0)
            snprintf(h + n, sizeof(h) - (size_t)n, "Link: %s\r\n", link);
        send_body(q, 200, h, &j->body);
    }
}

static void tags_fallback(struct mjob *j, int err);

static int mj_on_head(rgm_upcall_t *c, int status, void *ud)
{
    struct mjob *j = ud;
    const char *v;

    j->status = status;
    j->used_client = rgm_upcall_used_client_auth(c);
    if (status != 200) {
        /* The error body is read and dropped (mj_on_body), so the connection is reused. */
        if (!(j->kind == MJ_TAGS && status >= 500))
            answer_error(j, status, c, 0);
        return 0; /* tags: on_done falls back to the index */
    }
    if (rgm_upcall_was_filled(c))
        j->r->m.cluster_filled++;
    v = rgm_upcall_header(c, "Content-Type");
    if (header_ok(v))
        j->content_type = rgm_strdup(v);
    if (j->kind != MJ_TAGS && is_schema1(v, NULL)) {
        answer_schema1(j); /* no tag recorded, nothing kept; the body is dropped */
        return 0;
    }
    v = rgm_upcall_header(c, "Link");
    if (header_ok(v))
        j->link = rgm_strdup(v);
    v = rgm_upcall_header(c, "Docker-Content-Digest");
    if (v && rgm_ref_valid_digest(v))
        j->digest_hdr = rgm_strdup(v);
    if (j->kind == MJ_HEAD) {
        j->head_len = rgm_upcall_content_length(c);
        if (!j->digest_hdr && j->ref_is_digest)
            j->digest_hdr = rgm_strdup(j->ref);
        if (j->digest_hdr && !j->ref_is_digest &&
            rgm_index_put_tag(j->r->index, j->reg->name, j->repo, j->ref, j->digest_hdr,
                              rgm_time_ms()) < 0)
            rgm_log(RGM_LOG_WARN, "manifests", "cannot record tag %s", j->ref);
    }
    return 0;
}

static int mj_on_body(rgm_upcall_t *c, const char *data, size_t len, void *ud)
{
    struct mjob *j = ud;

    (void)c;
    if (j->status != 200 || j->is_answered)
        return 0;
    return rgm_buf_append(&j->body, data, len) < 0 ? UV_E2BIG : 0;
}

static void mj_on_done(rgm_upcall_t *c, int err, void *ud)
{
    struct mjob *j = ud;

    (void)c;
    j->call = NULL;
    if (!j->is_answered) {
        if (err == 0 && j->status == 200) {
            if (j->kind == MJ_MANIFEST)
                manifest_complete(j);
            else if (j->kind == MJ_HEAD)
                head_complete(j);
            else
                tags_complete(j);
        } else if (j->kind == MJ_TAGS) {
            tags_fallback(j, err);
        } else {
            answer_error(j, err == UV_E2BIG ? 502 : 0, NULL, err ? err : UV_EPROTO);
        }
    }
    mjob_free(j);
}

static const rgm_upcall_cbs_t mj_cbs = {mj_on_head, mj_on_body, mj_on_done};

static void mjob_join(struct rq *q, enum mj_kind kind, const char *suffix, const char *query,
                      const char *accept)
{
    struct rq_env *r = q->r;
    struct mjob *j;
    rgm_upcall_opts_t o;
    char key[4096];
    char fill_url[RGM_PEER_URL_MAX];
    int n;
    int err;

    /* A tag list is not content-addressed: it is shared only by clients of one identity.
     * Manifests are checked per waiter when they come back (answer_manifest). */
    n = snprintf(key, sizeof(key), "%d|%s|%s|%s|%s|%s|%s", (int)kind, q->reg->name, q->repo, suffix,
                 query ? query : "", accept ? accept : "", kind == MJ_TAGS ? q->credhash : "");
    if (n < 0 || (size_t)n >= sizeof(key)) {
        rq_error(q, 400, "UNSUPPORTED", "request too large", NULL);
        return;
    }
    for (j = r->mjobs; j; j = j->next) {
        if (!j->is_answered && strcmp(j->key, key) == 0) {
            rq_set_cache(q, "JOIN");
            r->m.joins++;
            q->mjob = j;
            q->next_mwaiter = j->waiters;
            j->waiters = q;
            return;
        }
    }
    if (r->is_stopping) {
        rq_error(q, 503, "UNAVAILABLE", "shutting down", NULL);
        return;
    }
    if (kind == MJ_MANIFEST && rgm_req_header(q->req, PREWARM_HDR) &&
        rgm_upstream_in_reserve(r->up, q->reg)) {
        /* A pull from the last of the budget is kept for the nodes that need it. */
        rq_error(q, 429, "TOOMANYREQUESTS",
                 "the upstream's pull budget is below ratelimit_reserve: prewarm refused", NULL);
        return;
    }
    j = rgm_calloc(1, sizeof(*j));
    j->r = r;
    j->kind = kind;
    j->key = rgm_strdup(key);
    j->reg = q->reg;
    snprintf(j->repo, sizeof(j->repo), "%s", q->repo);
    snprintf(j->ref, sizeof(j->ref), "%s", q->path.reference);
    j->ref_is_digest = q->path.is_digest;
    memcpy(j->credhash, q->credhash, sizeof(j->credhash));
    rgm_buf_init(&j->body, kind == MJ_MANIFEST ? RGM_MANIFEST_MAX : RGM_TAGLIST_MAX);
    j->head_len = -1;
    rq_upcall_opts(q, &o, kind == MJ_HEAD ? "HEAD" : "GET", suffix);
    o.query = query;
    o.accept = accept;
    if (kind == MJ_MANIFEST && rq_fill_source(q, fill_url, sizeof(fill_url)))
        o.fill_url = fill_url;
    err = rgm_upcall_start(r->up, &o, &mj_cbs, j, &j->call);
    if (err < 0) {
        rgm_buf_free(&j->body);
        free(j->key);
        free(j);
        answer_not_started(q, err);
        return;
    }
    r->m.upstream_requests++;
    j->next = r->mjobs;
    r->mjobs = j;
    rq_set_cache(q, "MISS");
    q->mjob = j;
    j->waiters = q;
}

/* ---- HEAD of a manifest not here, and tag revalidation ---- */

/* The upstream fails (no answer, 5xx, 429, backing off): the cached tag, up to max_stale
 * past its freshness. Content by digest cannot be stale. */
static void serve_stale(struct rq *q)
{
    uint64_t bound = rgm_config_max_stale(q->r->cfg, q->reg);

    if (bound != UINT64_MAX && stale_age(q) > bound) {
        q->r->m.stale_refused++;
        rq_error(q, 503, "UNAVAILABLE",
                 "the upstream is failing and the cached copy is older than max_stale", NULL);
        return;
    }
    rq_set_cache(q, "STALE");
    serve_cached_checked(q);
}

/* The upstream says the tag is gone (404 to the mirror's own identity): with
 * stale_on_not_found, public content only, whatever its age. 1 served, 0 not allowed. */
static int serve_deleted(struct rq *q)
{
    if (!rgm_config_stale_on_not_found(q->r->cfg, q->reg) || !rq_is_public(q, q->digest))
        return 0;
    rq_set_cache(q, "STALE");
    serve_cached_checked(q);
    return 1;
}

/* HEAD-only clients (a resolve that never GETs, update checkers) ask for tags whose manifest
 * is not cached. The upstream's public answer (digest, type, size: no content) is kept for
 * tag_ttl, in memory, per registry, repository, tag and Accept; answers that needed the
 * client's credentials are never kept. */
static void head_key(struct rq *q, char *key, size_t len)
{
    int n =
        snprintf(key, len, "%s|%s|%s|%s", q->reg->name, q->repo, q->path.reference, accept_of(q));

    if (n < 0 || (size_t)n >= len)
        key[0] = '\0';
}

static void head_remember(struct rq *q, const char *d, const char *ct, int64_t len,
                          uint64_t expires_ms)
{
    char key[4096];
    char val[1024];
    int n;

    if (!d || !rgm_ref_valid_digest(d) || !header_ok(ct) || len < 0)
        return;
    head_key(q, key, sizeof(key));
    n = snprintf(val, sizeof(val), "%s %lld %s", d, (long long)len, ct);
    if (key[0] && n > 0 && (size_t)n < sizeof(val))
        rgm_auth_cache_put(q->r->heads, key, val, expires_ms);
}

/* Answer a HEAD from the remembered upstream answer. 1 answered, 0 not known. */
static int head_recall(struct rq *q)
{
    char key[4096];
    char d[RGM_DIGEST_MAX];
    char h[1024];
    const char *val;
    const char *sp;
    const char *sp2;
    long long len;

    head_key(q, key, sizeof(key));
    val = key[0] ? rgm_auth_cache_get(q->r->heads, key, rgm_time_ms()) : NULL;
    if (!val)
        return 0;
    sp = strchr(val, ' ');
    sp2 = sp ? strchr(sp + 1, ' ') : NULL;
    if (!sp || !sp2 || (size_t)(sp - val) >= sizeof(d))
        return 0;
    memcpy(d, val, (size_t)(sp - val));
    d[sp - val] = '\0';
    len = strtoll(sp + 1, NULL, 10);
    snprintf(h, sizeof(h), "Content-Type: %s\r\nDocker-Content-Digest: %s\r\n", sp2 + 1, d);
    rq_set_cache(q, "HIT");
    rgm_index_touch(q->r->index, d, rgm_time_ms()); /* counts for the LRU when it is cached */
    if (rq_start(q, 200, h, len) < 0) {
        rq_abort(q, "cannot start response");
        return 1;
    }
    rq_finish(q);
    return 1;
}

/* The HEAD of a stale tag (q->digest is what we have). */
static int head_on_head(rgm_upcall_t *c, int status, void *ud)
{
    struct rq *q = ud;
    const char *d = rgm_upcall_header(c, "Docker-Content-Digest");

    q->access_status = status;
    if (!q->req)
        return 0;
    if (status == 200 && is_schema1(rgm_upcall_header(c, "Content-Type"), NULL)) {
        q->access_status = 1004; /* the tag moved to a schema 1 manifest: refuse it */
        return 0;
    }
    if (status == 200 && d && rgm_ref_valid_digest(d) && !q->path.is_digest) {
        if (rgm_index_put_tag(q->r->index, q->reg->name, q->repo, q->path.reference, d,
                              rgm_time_ms()) < 0)
            rgm_log(RGM_LOG_WARN, "manifests", "cannot record tag %s", q->path.reference);
    }
    /* The same digest means our copy is current; the upstream accepted this client for the
     * repository, so no further access check is needed. */
    if (status == 200 && d && rgm_ref_valid_digest(d)) {
        int is_here = strcmp(d, q->digest) == 0 || cached_manifest(q, d);

        if (is_here || rgm_index_has_origin(q->r->index, d, q->reg->name, q->repo, NULL) == 1)
            rq_mark_origin(q, d, rgm_upcall_used_client_auth(c));
        if (is_here) {
            /* Resolved by digest: a tag that moved to a digest cached (and deliverable
             * through this registry) costs no pull. */
            if (strcmp(d, q->digest) != 0 && !q->is_head)
                rgm_upstream_count_avoided(q->r->up, q->reg);
            snprintf(q->digest, sizeof(q->digest), "%s", d);
            q->access_status = 1000; /* serve in on_done, after this call is over */
            return 0;
        }
        q->access_status = 1001; /* changed and not here: GET it */
        return 0;
    }
    if (status == 404 && rgm_upcall_own_status(c) == 404 &&
        rgm_config_stale_on_not_found(q->r->cfg, q->reg)) {
        q->access_status = 1003; /* deleted upstream: maybe serve it (serve_deleted) */
        return 0;
    }
    if (status == 401 || status == 403 || status == 404) {
        rq_relay_error(q, status, c, 0, 0);
        return 0;
    }
    q->access_status = 1002; /* upstream trouble: stale */
    return 0;
}

static void head_on_done(rgm_upcall_t *c, int err, void *ud)
{
    struct rq *q = ud;
    char suffix[512];

    if (!q->req) {
        rq_head_on_done(c, err, q);
        return;
    }
    q->pending--;
    if (q->access_status == 1000) {
        q->access_status = 200;
        serve_cached(q);
    } else if (q->access_status == 1001 && !q->is_head) {
        snprintf(suffix, sizeof(suffix), "manifests/%s", q->path.reference);
        mjob_join(q, MJ_MANIFEST, suffix, NULL, accept_of(q));
    } else if (q->access_status == 1001) {
        /* A HEAD and the new digest is not here: answer from upstream. */
        q->digest[0] = '\0';
        q->access_status = 0;
        manifests_handle(q);
    } else if (q->access_status == 1003) {
        if (!serve_deleted(q))
            rq_relay_error(q, 404, NULL, 0, 0);
    } else if (q->access_status == 1004) {
        refuse_schema1(q);
    } else {
        serve_stale(q);
    }
}

static const rgm_upcall_cbs_t head_cbs = {head_on_head, rq_ignore_body, head_on_done};

/* Revalidate q's cached tag (q->digest) with a HEAD of its own: the answer is this client's. */
static void revalidate(struct rq *q)
{
    char suffix[512];

    snprintf(suffix, sizeof(suffix), "manifests/%s", q->path.reference);
    if (rq_head(q, suffix, accept_of(q), &head_cbs) < 0)
        serve_stale(q);
}

/* A tag's cached manifest suits this client only if its Accept admits the stored media type;
 * otherwise the upstream decides (it may have another manifest for it, or refuse). */
static int cached_admitted(struct rq *q, const char *digest)
{
    if (rgm_index_get_object(q->r->index, digest, &q->obj) < 0)
        return 0;
    q->has_obj = 1;
    if (rgm_req_header(q->req, "Accept") == NULL)
        return 1; /* no preference: whatever we hold */
    return accept_admits(accept_of(q), q->obj.media_type);
}

/* ---- entry points ---- */

/* The client left: leave the job's waiters. */
static void detach(struct rq *q)
{
    struct rq **pp;

    if (!q->mjob)
        return;
    for (pp = &q->mjob->waiters; *pp; pp = &(*pp)->next_mwaiter) {
        if (*pp == q) {
            *pp = q->next_mwaiter;
            break;
        }
    }
    q->mjob = NULL;
}

void manifests_handle(struct rq *q)
{
    struct rq_env *r = q->r;
    char digest[RGM_DIGEST_MAX];
    char suffix[512];
    uint64_t checked = 0;
    uint64_t now = rgm_time_ms();

    q->detach = detach;
    q->digest[0] = '\0';
    if (q->is_head && !q->path.is_digest && head_recall(q))
        return;
    if (q->path.is_digest) {
        /* Cached as a manifest (not only fetched through /blobs/, which records no media
         * type), and deliverable through this registry. */
        if (rgm_index_get_object(r->index, q->path.reference, &q->obj) == 0 &&
            q->obj.kind == RGM_OBJ_MANIFEST && rq_may_vouch(q, q->path.reference)) {
            q->has_obj = 1;
            snprintf(q->digest, sizeof(q->digest), "%s", q->path.reference);
            serve_cached_checked(q);
            return;
        }
    } else if (rgm_index_get_tag(r->index, q->reg->name, q->repo, q->path.reference, digest,
                                 &checked) == 0 &&
               cached_admitted(q, digest) && rq_may_vouch(q, digest)) {
        snprintf(q->digest, sizeof(q->digest), "%s", digest);
        if (now < checked + q->reg->tag_ttl_ms) {
            q->tag_fresh_until = checked + q->reg->tag_ttl_ms;
            serve_cached_checked(q);
            return;
        }
        if (r->is_stopping) {
            serve_stale(q);
            return;
        }
        if (q->is_only_cached) {
            serve_stale(q); /* a peer's question: what we have, never upstream */
            return;
        }
        snprintf(suffix, sizeof(suffix), "manifests/%s", q->path.reference);
        if (known_missing(q, suffix)) {
            if (!serve_deleted(q))
                answer_negative(q);
            return;
        }
        revalidate(q); /* q->digest says what we have */
        return;
    }
    if (q->is_only_cached) {
        rq_only_cached_miss(q, 0);
        return;
    }
    if (r->is_stopping) {
        rq_error(q, 503, "UNAVAILABLE", "shutting down", NULL);
        return;
    }
    snprintf(suffix, sizeof(suffix), "manifests/%s", q->path.reference);
    if (known_missing(q, suffix)) {
        answer_negative(q);
        return;
    }
    /* HEADs, and GETs of a tag (resolve by digest first: the HEAD is free, the GET a pull),
     * share one upstream HEAD; a GET by digest is fetched at once. */
    mjob_join(q, q->is_head || !q->path.is_digest ? MJ_HEAD : MJ_MANIFEST, suffix, NULL,
              accept_of(q));
}

/* ---- tags/list ---- */

struct taglist {
    struct rq_env *r;
    const char *registry;
    const char *repo;
    json_t *tags;
};

static int add_public_tag(const char *tag, void *ud)
{
    struct taglist *t = ud;
    char digest[RGM_DIGEST_MAX];
    uint64_t checked;
    int is_public = 0;

    if (rgm_index_get_tag(t->r->index, t->registry, t->repo, tag, digest, &checked) == 0 &&
        rgm_index_has_origin(t->r->index, digest, t->registry, t->repo, &is_public) == 1 &&
        is_public)
        json_array_append_new(t->tags, json_string(tag));
    return 0;
}

/* The upstream failed: answer from the index, public tags only. */
static void tags_fallback(struct mjob *j, int err)
{
    struct taglist t;
    struct rq *q;
    json_t *doc;
    char *text;
    rgm_buf_t body;

    t.r = j->r;
    t.registry = j->reg->name;
    t.repo = j->repo;
    t.tags = json_array();
    if (rgm_index_list_tags(j->r->index, j->reg->name, j->repo, NULL, 0, add_public_tag, &t) < 0 ||
        json_array_size(t.tags) == 0) {
        json_decref(t.tags);
        answer_error(j, j->status >= 500 ? j->status : 0, NULL, err ? err : UV_EPROTO);
        return;
    }
    doc = json_pack("{s:s, s:o}", "name", j->repo, "tags", t.tags);
    text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!text) {
        answer_error(j, 502, NULL, 0);
        return;
    }
    rgm_buf_init(&body, RGM_TAGLIST_MAX);
    if (rgm_buf_append(&body, text, strlen(text)) < 0)
        body.len = 0;
    free(text);
    j->is_answered = 1;
    while ((q = take_waiter(j)) != NULL) {
        rq_set_cache(q, "STALE");
        send_body(q, 200, "Content-Type: application/json\r\n", &body);
    }
    rgm_buf_free(&body);
}

void tags_handle(struct rq *q)
{
    char n[32];
    char last[RGM_REF_TAG_MAX + 1];
    char enc[3 * RGM_REF_TAG_MAX + 1];
    char query[512];
    int has_n;
    int has_last;
    uint64_t nv;

    q->detach = detach;
    if (q->is_head) {
        rq_error(q, 405, "UNSUPPORTED", "HEAD is not supported on tags/list", NULL);
        return;
    }
    has_n = rgm_query_get(rgm_req_query(q->req), "n", n, sizeof(n));
    has_last = rgm_query_get(rgm_req_query(q->req), "last", last, sizeof(last));
    if (has_n < 0 || has_last < 0 || (has_n == 1 && rgm_parse_uint(n, 100000, &nv) < 0) ||
        (has_last == 1 && rgm_url_encode(last, enc, sizeof(enc)) < 0)) {
        rq_error(q, 400, "UNSUPPORTED", "invalid n or last", NULL);
        return;
    }
    snprintf(query, sizeof(query), "%s%s%s%s%s", has_n == 1 ? "n=" : "", has_n == 1 ? n : "",
             has_n == 1 && has_last == 1 ? "&" : "", has_last == 1 ? "last=" : "",
             has_last == 1 ? enc : "");
    mjob_join(q, MJ_TAGS, "tags/list", query[0] ? query : NULL, "application/json");
}

void manifests_shutdown(struct rq_env *r)
{
    struct mjob *j;

    for (j = r->mjobs; j; j = j->next)
        if (j->call)
            rgm_upcall_cancel(j->call);
}
