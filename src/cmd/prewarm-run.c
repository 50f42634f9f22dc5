/* regmirror prewarm, the run: executes the plan through the mirror. Manifests are fetched,
 * buffered and verified (pinned digest, index size, Docker-Content-Digest); an index starts
 * the manifests of the chosen platforms, an image manifest adds its blobs to the plan. A blob
 * is asked with HEAD (X-Cache: HIT and the right size is enough), else streamed with GET
 * through a hash and discarded. A 401 is answered once (prewarm-auth.c). At most --parallel
 * manifests and --parallel blobs are in flight; the run ends when nothing is left. Requests
 * to the mirror say X-Regmirror-Prewarm, so that it can keep the last pulls for nodes. With
 * --with-referrers each manifest's referrers are warmed too: the referrers API (pages followed),
 * or the <alg>-<hex> tag when the mirror answers 404, and cosign's .sig/.att/.sbom tags. */
#include "config.h"

#include "cmd/prewarm-int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/util.h"
#include "http/client.h"
#include "registry/auth.h"
#include "registry/reference.h"

#define MANIFEST_MAX   (4 * 1024 * 1024) /* the OCI spec's recommended limit */
#define TOKEN_BODY_MAX (256 * 1024)
#define ERRBODY_MAX    (16 * 1024)
#define BASIC_TTL_MS   (3600 * 1000ULL)
#define ERR_MAX        512
#define REASON_MAX     1024
#define REF_PAGES_MAX  64 /* referrers pages followed per manifest */

static const char manifest_accept[] = "application/vnd.oci.image.index.v1+json, "
                                      "application/vnd.oci.image.manifest.v1+json, "
                                      "application/vnd.docker.distribution.manifest.list.v2+json, "
                                      "application/vnd.docker.distribution.manifest.v2+json";

enum op_kind { OP_MANIFEST, OP_HEAD, OP_GET, OP_TOKEN, OP_REFERRERS };

/* What a manifest op is for, with --with-referrers: the image itself, a referrer listed by the
 * API or the tag index, the <alg>-<hex> tag (an index of referrers), or a cosign tag. A tag
 * that is not there (404) is no failure. */
enum ref_kind { REF_NONE, REF_LISTED, REF_TAG_INDEX, REF_TAG };

/* One request through the mirror (or to a token realm), from the queue to its answer. */
struct op {
    struct pw *pw;
    enum op_kind kind;
    struct op *qnext;
    struct image *img; /* OP_MANIFEST */
    struct blob *blob; /* OP_HEAD, OP_GET */
    struct op *parent; /* OP_TOKEN: the request that waits for the token */
    const char *registry;
    const char *repo;
    char *url;
    char *authz; /* Authorization sent, or NULL */
    int is_authz_cached;
    char want[RGM_REF_DIGEST_MAX + 1]; /* manifest: expected digest, "" for a tag */
    int64_t want_size;                 /* manifest from an index: descriptor size, else -1 */
    int is_child;
    enum ref_kind ref_kind;
    unsigned n_pages;                 /* OP_REFERRERS: pages asked for this subject */
    char got[RGM_REF_DIGEST_MAX + 1]; /* manifest: the verified digest */
    char plat[100];                   /* child manifest: its platform */
    unsigned n_auth;
    int status;
    rgm_buf_t body;
    EVP_MD_CTX *md;
    uint64_t n_bytes;
    char err[ERR_MAX];
    rgm_upreq_t *req;
};

static void op_send_or_fail(struct op *op);
static void pump(struct pw *pw);

/* ---- answers ---- */

static int is_hit(const char *xcache)
{
    return xcache && rgm_strcaseeq(xcache, "HIT");
}

/* "CODE: message" of an OCI error body, or "" when there is none. */
static void oci_error(const rgm_buf_t *b, char *out, size_t outlen)
{
    json_t *root = NULL, *e;
    const char *code, *msg;

    out[0] = '\0';
    if (!b->data || b->len == 0)
        return;
    root = json_loadb(b->data, b->len, 0, NULL);
    if (!root)
        return;
    e = json_array_get(json_object_get(root, "errors"), 0);
    code = json_string_value(json_object_get(e, "code"));
    msg = json_string_value(json_object_get(e, "message"));
    if (code)
        (void)snprintf(out, outlen, "%s%s%s", code, msg ? ": " : "", msg ? msg : "");
    json_decref(root);
}

/* Why the answer to op cannot be used: the transport error (err < 0), or "HTTP 404
 * MANIFEST_UNKNOWN: ..." for a status other than 200, into out. 0 for a usable answer. */
static int answer_error(const struct op *op, int err, char *out, size_t len)
{
    char oe[300];

    if (err < 0) {
        (void)snprintf(out, len, "%s", op->err[0] ? op->err : uv_strerror(err));
        return err;
    }
    if (op->status != 200) {
        oci_error(&op->body, oe, sizeof(oe));
        (void)snprintf(out, len, "HTTP %d%s%s", op->status, oe[0] ? " " : "", oe);
        return UV_EPROTO;
    }
    return 0;
}

/* ---- the end of the run ---- */

static void on_timer_closed(uv_handle_t *h)
{
    struct pw *pw = rgm_container_of((uv_timer_t *)h, struct pw, timer);

    pw->is_timer_open = 0;
}

static void on_client_closed(void *ud)
{
    (void)ud;
}

/* The run is over when every image is finished and no request is in flight: close the timer
 * and the client, which lets uv_run return. Called after every change that may end it. */
static void maybe_finish(struct pw *pw)
{
    if (pw->is_closing || pw->n_unfinished > 0 || pw->n_ops > 0)
        return;
    pw->is_closing = 1;
    if (pw->is_timer_open) {
        rgm_prewarm_live_clear(pw);
        fflush(stdout);
        uv_close((uv_handle_t *)&pw->timer, on_timer_closed);
    }
    rgm_client_close(pw->client, on_client_closed, pw);
}

/* ---- requests ---- */

static struct op *op_new(struct pw *pw, enum op_kind kind, const char *registry, const char *repo,
                         char *url_take)
{
    struct op *op = rgm_calloc(1, sizeof(*op));

    op->pw = pw;
    op->kind = kind;
    op->registry = registry;
    op->repo = repo;
    op->url = url_take;
    op->want_size = -1;
    rgm_buf_init(&op->body, ERRBODY_MAX);
    pw->n_ops++;
    return op;
}

static void op_free(struct op *op)
{
    struct pw *pw = op->pw;

    RGM_BUG_ON(op->req != NULL);
    rgm_buf_free(&op->body);
    EVP_MD_CTX_free(op->md);
    free(op->url);
    free(op->authz);
    free(op);
    pw->n_ops--;
    maybe_finish(pw);
}

static char *api_url(struct pw *pw, const char *registry, const char *repo, const char *what,
                     const char *ref)
{
    char ns[RGM_REF_HOST_MAX * 3 + 1];
    rgm_buf_t b;
    char *s;

    if (rgm_url_encode(registry, ns, sizeof(ns)) < 0)
        ns[0] = '\0';
    rgm_buf_init(&b, 8192);
    if (rgm_buf_appendf(&b, "%s/v2/%s/%s/%s?ns=%s", pw->o->base, repo, what, ref, ns) < 0) {
        rgm_buf_free(&b);
        return NULL;
    }
    s = rgm_strdup(rgm_buf_cstr(&b));
    rgm_buf_free(&b);
    return s;
}

/* The op could not complete: record the reason (copied) where it belongs, free the op. */
static void op_fail(struct op *op, const char *reason)
{
    struct pw *pw = op->pw;

    switch (op->kind) {
    case OP_MANIFEST:
    case OP_REFERRERS:
        if (op->kind == OP_REFERRERS)
            rgm_prewarm_image_fail(op->img, "referrers of %s: %s", op->want, reason);
        else if (op->ref_kind != REF_NONE)
            rgm_prewarm_image_fail(op->img, "referrer %s: %s", op->want, reason);
        else if (op->is_child)
            rgm_prewarm_image_fail(op->img, "manifest %s (%s): %s", op->want, op->plat, reason);
        else
            rgm_prewarm_image_fail(op->img, "manifest: %s", reason);
        pw->n_mf_inflight--;
        op->img->n_pending--;
        rgm_prewarm_image_check_done(pw, op->img);
        break;
    case OP_HEAD:
    case OP_GET:
        pw->n_blob_inflight--;
        rgm_prewarm_blob_finish(pw, op->blob, 0, reason);
        break;
    case OP_TOKEN:
        op_fail(op->parent, reason);
        break;
    }
    op_free(op);
    pump(pw);
}

static int on_head(rgm_upreq_t *r, int status, void *ud)
{
    struct op *op = ud;
    int64_t cl = rgm_upreq_content_length(r);

    op->status = status;
    op->n_bytes = 0;
    rgm_buf_free(&op->body);
    if (status != 200) {
        rgm_buf_init(&op->body, ERRBODY_MAX);
        return 0;
    }
    switch (op->kind) {
    case OP_MANIFEST:
    case OP_REFERRERS:
        if (cl > MANIFEST_MAX) {
            (void)snprintf(op->err, sizeof(op->err), "manifest too large (%" PRId64 " bytes)", cl);
            return UV_E2BIG;
        }
        rgm_buf_init(&op->body, MANIFEST_MAX);
        break;
    case OP_TOKEN:
        rgm_buf_init(&op->body, TOKEN_BODY_MAX);
        break;
    case OP_GET:
        if (cl >= 0 && (uint64_t)cl != op->blob->size) {
            (void)snprintf(op->err, sizeof(op->err),
                           "Content-Length %" PRId64 " but the descriptor says %" PRIu64, cl,
                           op->blob->size);
            return UV_EPROTO;
        }
        EVP_MD_CTX_free(op->md);
        op->md = rgm_prewarm_verify_blob_start(op->blob->digest);
        if (!op->md) {
            (void)snprintf(op->err, sizeof(op->err), "cannot hash");
            return UV_EIO;
        }
        op->blob->got = 0;
        break;
    case OP_HEAD:
        break;
    }
    return 0;
}

static int on_body(rgm_upreq_t *r, const char *data, size_t len, void *ud)
{
    struct op *op = ud;

    (void)r;
    if (op->status == 200 && op->kind == OP_GET) {
        op->n_bytes += len;
        op->blob->got = op->n_bytes;
        if (op->n_bytes > op->blob->size) {
            (void)snprintf(op->err, sizeof(op->err), "more bytes than the descriptor's %" PRIu64,
                           op->blob->size);
            return UV_EPROTO;
        }
        if (EVP_DigestUpdate(op->md, data, len) != 1) {
            (void)snprintf(op->err, sizeof(op->err), "cannot hash");
            return UV_EIO;
        }
        return 0;
    }
    if (op->status == 200 &&
        (op->kind == OP_MANIFEST || op->kind == OP_TOKEN || op->kind == OP_REFERRERS)) {
        if (rgm_buf_append(&op->body, data, len) < 0) {
            (void)snprintf(op->err, sizeof(op->err), "response too large");
            return UV_E2BIG;
        }
        return 0;
    }
    /* An error body: keep its beginning for the message. */
    if (op->body.len < op->body.max) {
        size_t n = op->body.max - op->body.len;
        if (rgm_buf_append(&op->body, data, len < n ? len : n) < 0)
            return 0;
    }
    return 0;
}

/* ---- auth ---- */

/* A 401 from the mirror: answer the challenge (token or Basic) and retry once. 0 when a retry
 * or a token request is under way, else <0 with the reason in op->err. */
static int answer_challenge(struct op *op, rgm_upreq_t *r)
{
    struct pw *pw = op->pw;
    char key[RGM_PREWARM_AUTH_KEY_MAX], basic[1024], *url = NULL;
    struct op *tok;
    int answer;

    rgm_prewarm_auth_key(op->registry, op->repo, key, sizeof(key));
    if (op->is_authz_cached)
        (void)rgm_auth_cache_del(pw->auth, key);
    if (op->n_auth >= 1) {
        (void)snprintf(op->err, sizeof(op->err), "unauthorized: credentials rejected");
        return UV_EACCES;
    }
    op->n_auth++;
    answer =
        rgm_prewarm_auth_answer(pw, op->registry, op->repo, rgm_upreq_header(r, "www-authenticate"),
                                basic, sizeof(basic), &url, op->err, sizeof(op->err));
    if (answer < 0)
        return answer;
    if (answer == RGM_PREWARM_AUTH_BASIC) {
        rgm_auth_cache_put(pw->auth, key, basic, rgm_time_ms() + BASIC_TTL_MS);
        free(op->authz);
        op->authz = rgm_strdup(basic);
        op->is_authz_cached = 0;
        op_send_or_fail(op);
        return 0;
    }
    tok = op_new(pw, OP_TOKEN, op->registry, op->repo, url);
    tok->parent = op;
    if (basic[0])
        tok->authz = rgm_strdup(basic);
    op_send_or_fail(tok);
    return 0;
}

static void token_done(struct op *op, int err)
{
    struct op *parent = op->parent;
    struct pw *pw = op->pw;
    char key[RGM_PREWARM_AUTH_KEY_MAX], why[ERR_MAX], reason[REASON_MAX], *val = NULL;
    uint64_t expires_ms = 0;

    if (answer_error(op, err, why, sizeof(why)) < 0) {
        (void)snprintf(reason, sizeof(reason), "token request: %s%s", why,
                       err == 0 && op->status == 401 ? " (credentials rejected)" : "");
        op_fail(op, reason);
        return;
    }
    if (rgm_prewarm_auth_bearer(op->body.data, op->body.len, &val, &expires_ms) < 0) {
        op_fail(op, "token request: unusable answer");
        return;
    }
    rgm_prewarm_auth_key(op->registry, op->repo, key, sizeof(key));
    rgm_auth_cache_put(pw->auth, key, val, expires_ms);
    free(parent->authz);
    parent->authz = val;
    parent->is_authz_cached = 0;
    op->parent = NULL;
    op_free(op);
    op_send_or_fail(parent);
}

/* ---- manifests ---- */

static void start_manifest(struct pw *pw, struct image *img, const char *digest, int64_t size,
                           const char *plat);

static void append_platform(struct image *img, const char *plat)
{
    size_t len = strlen(img->platforms);

    (void)snprintf(img->platforms + len, sizeof(img->platforms) - len, "%s%s", len ? "," : "",
                   plat);
}

/* An index: start the manifests of the chosen platforms. 0 or <0 (image failed). */
static int handle_index(struct pw *pw, struct op *op, json_t *list)
{
    struct image *img = op->img;
    json_t *chosen[MAX_PLATFORMS * 4];
    char plat[100], why[600];
    size_t n_chosen = 0, j;

    if (op->is_child) {
        rgm_prewarm_image_fail(img, "manifest %s: nested index not supported", op->want);
        return UV_EINVAL;
    }
    if (rgm_prewarm_platform_choose(pw->o, list, chosen, RGM_ARRAY_SIZE(chosen), &n_chosen, why,
                                    sizeof(why)) < 0) {
        rgm_prewarm_image_fail(img, "%s", why);
        return UV_ENOENT;
    }
    for (j = 0; j < n_chosen; j++) {
        const char *digest = json_string_value(json_object_get(chosen[j], "digest"));
        json_t *size = json_object_get(chosen[j], "size");
        if (!digest || !rgm_ref_valid_digest(digest) || !json_is_integer(size)) {
            rgm_prewarm_image_fail(img, "index: bad manifest descriptor");
            return UV_EINVAL;
        }
        rgm_prewarm_platform_of(chosen[j], plat, sizeof(plat));
        append_platform(img, plat);
        start_manifest(pw, img, digest, (int64_t)json_integer_value(size), plat);
    }
    return 0;
}

/* Verify the body (prewarm-verify.c) and set the image's digest from it. 0 or <0 (op->err). */
static int verify_manifest(struct op *op, rgm_upreq_t *r)
{
    char digest[RGM_REF_DIGEST_MAX + 1];
    int err;

    err = rgm_prewarm_verify_manifest(op->body.data, op->body.len, op->want, op->want_size,
                                      rgm_upreq_header(r, "docker-content-digest"), digest,
                                      sizeof(digest), op->err, sizeof(op->err));
    if (err < 0)
        return err;
    (void)snprintf(op->got, sizeof(op->got), "%s", digest);
    if (!op->is_child && op->ref_kind == REF_NONE)
        (void)snprintf(op->img->digest, sizeof(op->img->digest), "%s", digest);
    return 0;
}

/* ---- referrers (--with-referrers) ---- */

/* Queue a manifest op of img on the manifest queue; img waits for it. */
static void queue_manifest_op(struct pw *pw, struct op *op)
{
    op->img->n_pending++;
    if (pw->mq_tail)
        pw->mq_tail->qnext = op;
    else
        pw->mq_head = op;
    pw->mq_tail = op;
}

/* A referrer op of img on url_take (NULL: the URL was too long, img fails), queued. */
static struct op *queue_ref_op(struct pw *pw, struct image *img, enum op_kind kind, char *url_take,
                               const char *want)
{
    struct op *op;

    if (!url_take) {
        rgm_prewarm_image_fail(img, "URL too long");
        return NULL;
    }
    op = op_new(pw, kind, img->ref.registry, img->ref.repository, url_take);
    op->img = img;
    (void)snprintf(op->want, sizeof(op->want), "%s", want);
    queue_manifest_op(pw, op);
    return op;
}

/* Queue the referrer manifest ref (a digest, want_size its descriptor's size, or a tag). */
static void start_referrer(struct pw *pw, struct image *img, const char *ref, int64_t want_size,
                           enum ref_kind kind)
{
    char *url = api_url(pw, img->ref.registry, img->ref.repository, "manifests", ref);
    struct op *op = queue_ref_op(pw, img, OP_MANIFEST, url, kind == REF_LISTED ? ref : "");

    if (op) {
        op->ref_kind = kind;
        op->want_size = want_size;
    }
}

/* Queue one referrers page of subject: url_take, or the first page when NULL. */
static void start_referrers_page(struct pw *pw, struct image *img, const char *subject,
                                 char *url_take, unsigned n_pages)
{
    char *url = url_take
                    ? url_take
                    : api_url(pw, img->ref.registry, img->ref.repository, "referrers", subject);
    struct op *op = queue_ref_op(pw, img, OP_REFERRERS, url, subject);

    if (op)
        op->n_pages = n_pages;
}

/* The <alg>-<hex><suffix> tag of digest into out; <0 when it is no tag (sha512 is too long). */
static int fallback_tag(const char *digest, const char *suffix, char *out, size_t len)
{
    const char *colon = strchr(digest, ':');
    int n;

    if (!colon)
        return UV_EINVAL;
    n = snprintf(out, len, "%.*s-%s%s", (int)(colon - digest), digest, colon + 1, suffix);
    return n > 0 && (size_t)n < len && (size_t)n <= RGM_REF_TAG_MAX ? 0 : UV_ENAMETOOLONG;
}

/* Warm what refers to manifest digest of img: the referrers API, and cosign's tags. */
static void start_referrers(struct pw *pw, struct image *img, const char *digest)
{
    static const char *const cosign[] = {".sig", ".att", ".sbom"};
    char tag[RGM_REF_TAG_MAX + 8];
    size_t i;

    start_referrers_page(pw, img, digest, NULL, 1);
    for (i = 0; i < RGM_ARRAY_SIZE(cosign); i++)
        if (fallback_tag(digest, cosign[i], tag, sizeof(tag)) == 0)
            start_referrer(pw, img, tag, -1, REF_TAG);
}

/* The descriptors of a referrers list (an index's "manifests", borrowed) become referrers. */
static void start_listed(struct pw *pw, struct image *img, json_t *list)
{
    json_t *d;
    size_t i;

    json_array_foreach(list, i, d)
    {
        const char *digest = json_string_value(json_object_get(d, "digest"));
        json_t *size = json_object_get(d, "size");

        if (!digest || !rgm_ref_valid_digest(digest) || !json_is_integer(size)) {
            rgm_prewarm_image_fail(img, "referrers: bad descriptor");
            return;
        }
        start_referrer(pw, img, digest, (int64_t)json_integer_value(size), REF_LISTED);
    }
}

/* The next page of a Link header (the mirror's own path), as a URL of the mirror; NULL when
 * there is none or it is not a path of the mirror. */
static char *next_page_url(struct pw *pw, const char *link)
{
    const char *lt = link ? strchr(link, '<') : NULL;
    const char *gt = lt ? strchr(lt, '>') : NULL;
    rgm_buf_t b;
    char *s = NULL;

    if (!lt || !gt || strncmp(lt + 1, "/v2/", 4) != 0 || !strstr(gt, "next"))
        return NULL;
    rgm_buf_init(&b, 8192);
    if (rgm_buf_appendf(&b, "%s%.*s", pw->o->base, (int)(gt - lt - 1), lt + 1) == 0)
        s = rgm_strdup(rgm_buf_cstr(&b));
    rgm_buf_free(&b);
    return s;
}

static void referrers_done(struct op *op, rgm_upreq_t *r, int err)
{
    struct pw *pw = op->pw;
    struct image *img = op->img;
    json_t *root, *list;
    char why[ERR_MAX], tag[RGM_REF_TAG_MAX + 8];
    char *next;

    if (err == 0 && op->status == 404) {
        /* No referrers API (the mirror says UNSUPPORTED): the referrers tag schema. */
        if (fallback_tag(op->want, "", tag, sizeof(tag)) == 0)
            start_referrer(pw, img, tag, -1, REF_TAG_INDEX);
    } else if (answer_error(op, err, why, sizeof(why)) < 0) {
        op_fail(op, why);
        return;
    } else {
        root = json_loadb(op->body.data ? op->body.data : "", op->body.len, 0, NULL);
        list = json_object_get(root, "manifests");
        if (!json_is_array(list)) {
            json_decref(root);
            op_fail(op, "not an image index");
            return;
        }
        start_listed(pw, img, list);
        json_decref(root);
        next = op->n_pages < REF_PAGES_MAX ? next_page_url(pw, rgm_upreq_header(r, "link")) : NULL;
        if (next)
            start_referrers_page(pw, img, op->want, next, op->n_pages + 1);
    }
    pw->n_mf_inflight--;
    img->n_pending--;
    rgm_prewarm_image_check_done(pw, img);
    op_free(op);
    pump(pw);
}

/* A referrer manifest arrived (verified): its blobs, or for the tag index its list. */
static void referrer_manifest(struct pw *pw, struct op *op, json_t *root)
{
    json_t *list = json_object_get(root, "manifests");

    if (op->ref_kind == REF_TAG_INDEX && json_is_array(list))
        start_listed(pw, op->img, list);
    else
        (void)rgm_prewarm_plan_add_referrer(pw, op->img, root);
}

static void manifest_done(struct op *op, rgm_upreq_t *r, int err)
{
    struct pw *pw = op->pw;
    struct image *img = op->img;
    json_t *root = NULL, *list;
    char why[ERR_MAX];

    if (err == 0 && op->status == 404 &&
        (op->ref_kind == REF_TAG || op->ref_kind == REF_TAG_INDEX)) {
        op->status = 200; /* no such tag: nothing refers to it that way */
        goto out;
    }
    if (answer_error(op, err, why, sizeof(why)) < 0) {
        op_fail(op, why);
        return;
    }
    if (verify_manifest(op, r) < 0) {
        op_fail(op, op->err);
        return;
    }
    if (!is_hit(rgm_upreq_header(r, "x-cache")))
        img->is_all_hit = 0;
    root = json_loadb(op->body.data ? op->body.data : "", op->body.len, 0, NULL);
    if (!json_is_object(root)) {
        json_decref(root);
        op_fail(op, "not JSON");
        return;
    }
    if (!img->error && op->ref_kind != REF_NONE) {
        referrer_manifest(pw, op, root);
    } else if (!img->error) {
        list = json_object_get(root, "manifests");
        if (json_is_array(list))
            (void)handle_index(pw, op, list);
        else
            (void)rgm_prewarm_plan_add_manifest(pw, img, root);
        if (pw->o->with_referrers && !img->error)
            start_referrers(pw, img, op->got);
    }
    json_decref(root);
out:
    pw->n_mf_inflight--;
    img->n_pending--;
    rgm_prewarm_image_check_done(pw, img);
    op_free(op);
    pump(pw);
}

/* Queue the manifest of img: by its reference (digest NULL), or an index's entry for plat. */
static void start_manifest(struct pw *pw, struct image *img, const char *digest, int64_t size,
                           const char *plat)
{
    const char *ref = digest ? digest : rgm_ref_image_reference(&img->ref);
    struct op *op;
    char *url = api_url(pw, img->ref.registry, img->ref.repository, "manifests", ref);

    if (!url) {
        rgm_prewarm_image_fail(img, "URL too long");
        return;
    }
    op = op_new(pw, OP_MANIFEST, img->ref.registry, img->ref.repository, url);
    op->img = img;
    op->want_size = size;
    if (digest) {
        op->is_child = 1;
        (void)snprintf(op->want, sizeof(op->want), "%s", digest);
        (void)snprintf(op->plat, sizeof(op->plat), "%s", plat);
    } else if (img->ref.digest[0]) {
        (void)snprintf(op->want, sizeof(op->want), "%s", img->ref.digest);
    }
    queue_manifest_op(pw, op);
}

/* ---- blob transfers ---- */

/* The blob of op is verified, or a cache hit: record it, free the op, start what waits. */
static void blob_op_done(struct op *op, int is_cache_hit)
{
    struct pw *pw = op->pw;

    pw->n_blob_inflight--;
    rgm_prewarm_blob_finish(pw, op->blob, is_cache_hit, NULL);
    op_free(op);
    pump(pw);
}

static void head_done(struct op *op, rgm_upreq_t *r, int err)
{
    struct pw *pw = op->pw;
    struct blob *b = op->blob;
    int64_t cl;

    if (err == 0 && op->status == 200 && is_hit(rgm_upreq_header(r, "x-cache"))) {
        cl = rgm_upreq_content_length(r);
        if (cl < 0 || (uint64_t)cl == b->size) {
            blob_op_done(op, 1);
            return;
        }
    }
    /* Not in the cache (or unsure): GET it through the mirror. */
    op->kind = OP_GET;
    op->status = 0;
    op->err[0] = '\0';
    free(op->url);
    op->url = api_url(pw, b->registry, b->repo, "blobs", b->digest);
    if (!op->url) {
        op_fail(op, "URL too long");
        return;
    }
    op_send_or_fail(op);
}

static void get_done(struct op *op, int err)
{
    struct pw *pw = op->pw;
    struct blob *b = op->blob;
    char reason[REASON_MAX];

    if (answer_error(op, err, reason, sizeof(reason)) < 0) {
        op_fail(op, reason);
        return;
    }
    if (op->n_bytes != b->size) {
        (void)snprintf(reason, sizeof(reason),
                       "got %" PRIu64 " bytes, the descriptor says %" PRIu64, op->n_bytes, b->size);
        op_fail(op, reason);
        return;
    }
    if (rgm_prewarm_verify_blob_end(op->md, b->digest, reason, sizeof(reason)) < 0) {
        op_fail(op, reason);
        return;
    }
    pw->fetched_bytes += op->n_bytes;
    blob_op_done(op, 0);
}

static void on_done(rgm_upreq_t *r, int err, void *ud)
{
    struct op *op = ud;

    op->req = NULL;
    if (err == 0 && op->status == 401 && op->kind != OP_TOKEN) {
        if (answer_challenge(op, r) < 0)
            op_fail(op, op->err);
        return;
    }
    switch (op->kind) {
    case OP_MANIFEST:
        manifest_done(op, r, err);
        break;
    case OP_HEAD:
        head_done(op, r, err);
        break;
    case OP_GET:
        get_done(op, err);
        break;
    case OP_TOKEN:
        token_done(op, err);
        break;
    case OP_REFERRERS:
        referrers_done(op, r, err);
        break;
    }
}

static const rgm_upreq_cbs_t op_cbs = {on_head, on_body, on_done};

/* Send op's request; on a failure to start, fail the op. */
static void op_send_or_fail(struct op *op)
{
    struct pw *pw = op->pw;
    const char *cached;
    char key[RGM_PREWARM_AUTH_KEY_MAX];
    rgm_upreq_t *r;
    int err;

    if (op->kind != OP_TOKEN && !op->authz) {
        rgm_prewarm_auth_key(op->registry, op->repo, key, sizeof(key));
        cached = rgm_auth_cache_get(pw->auth, key, rgm_time_ms());
        if (cached) {
            op->authz = rgm_strdup(cached);
            op->is_authz_cached = 1;
        }
    }
    r = rgm_upreq_new(pw->client, op->kind == OP_HEAD ? "HEAD" : "GET", op->url, NULL);
    if (!r) {
        op_fail(op, "bad URL");
        return;
    }
    if (op->kind == OP_MANIFEST)
        rgm_upreq_add_header(r, "Accept", manifest_accept);
    if (op->kind == OP_REFERRERS)
        rgm_upreq_add_header(r, "Accept", "application/vnd.oci.image.index.v1+json");
    /* The mirror refuses prewarm's pulls (429) while a registry's budget is below
     * ratelimit_reserve (registry/manifests.c PREWARM_HDR); token requests go elsewhere. */
    if (op->kind != OP_TOKEN)
        rgm_upreq_add_header(r, "X-Regmirror-Prewarm", "1");
    if (op->authz)
        rgm_upreq_add_header(r, "Authorization", op->authz);
    op->status = 0;
    op->err[0] = '\0';
    op->req = r;
    err = rgm_upreq_start(r, &op_cbs, op);
    if (err < 0) {
        op->req = NULL;
        op_fail(op, uv_strerror(err));
    }
}

/* Start queued manifests and blobs up to the limits, then end the run if nothing is left. */
static void pump(struct pw *pw)
{
    struct op *op;
    struct blob *b;
    char *url;

    if (pw->is_closing)
        return;
    while (pw->mq_head && pw->n_mf_inflight < pw->o->parallel) {
        op = pw->mq_head;
        pw->mq_head = op->qnext;
        if (!pw->mq_head)
            pw->mq_tail = NULL;
        op->qnext = NULL;
        if (!op->img->is_started) {
            op->img->is_started = 1;
            op->img->t_start = uv_hrtime();
        }
        pw->n_mf_inflight++;
        op_send_or_fail(op);
    }
    while (pw->bq_head && pw->n_blob_inflight < pw->o->parallel) {
        b = rgm_prewarm_plan_take_blob(pw);
        pw->n_blob_inflight++;
        url = api_url(pw, b->registry, b->repo, "blobs", b->digest);
        if (!url) {
            pw->n_blob_inflight--;
            rgm_prewarm_blob_finish(pw, b, 0, "URL too long");
            continue;
        }
        op = op_new(pw, OP_HEAD, b->registry, b->repo, url);
        op->blob = b;
        op_send_or_fail(op);
    }
    /* An image finished by the plan (rgm_prewarm_blob_finish, _image_check_done) does not end
     * the run itself: every path that may finish one comes through here or through op_free. */
    maybe_finish(pw);
}

/* ---- the run ---- */

static void on_timer(uv_timer_t *t)
{
    struct pw *pw = rgm_container_of(t, struct pw, timer);

    rgm_prewarm_render(pw);
}

void rgm_prewarm_run_start(struct pw *pw, uv_loop_t *loop)
{
    rgm_client_opts_t copts = {0};
    size_t i;
    int err;

    copts.max_conns_per_origin = pw->o->parallel * 2 + 2;
    copts.max_idle_per_origin = pw->o->parallel * 2 + 2;
    pw->client = rgm_client_new(loop, &copts);
    pw->auth = rgm_auth_cache_new(0);
    pw->t0 = uv_hrtime();
    pw->rate_last_t = pw->t0;
    if (pw->is_tty) {
        err = uv_timer_init(loop, &pw->timer);
        if (err == 0) {
            pw->is_timer_open = 1;
            err = uv_timer_start(&pw->timer, on_timer, REDRAW_MS, REDRAW_MS);
        }
        if (err < 0)
            fprintf(stderr, "regmirror prewarm: no progress display: %s\n", uv_strerror(err));
    }
    for (i = 0; i < pw->n_images; i++) {
        struct image *img = &pw->images[i];
        if (img->is_bad_line)
            continue;
        pw->n_unfinished++;
        start_manifest(pw, img, NULL, -1, NULL);
        if (img->n_pending == 0)
            rgm_prewarm_image_check_done(pw, img);
    }
    pump(pw);
}
