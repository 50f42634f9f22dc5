/* The cache-by-image operations behind ls --images, purge, pin and unpin, and the admin API's
 * stats: each takes and gives JSON, so that the admin socket and the offline commands share
 * them. Listing reads each image's manifest and config for its platforms. */
#include "cmd/imageops.h"

#include <inttypes.h>
#include <stdarg.h>
#include <time.h>
#include <uv.h>

#include "core/common.h"
#include "core/util.h"
#include "registry/filter.h"
#include "registry/reference.h"

#define MANIFEST_MAX (4u * 1024 * 1024)
#define CONFIG_MAX   (1u * 1024 * 1024)

/* ---- helpers ---- */

static void line_addv(json_t *arr, const char *fmt, va_list ap) RGM_PRINTF(2, 0);

static void line_addv(json_t *arr, const char *fmt, va_list ap)
{
    char buf[2048];

    if (vsnprintf(buf, sizeof(buf), fmt, ap) < 0)
        buf[0] = '\0';
    json_array_append_new(arr, json_string(buf));
}

static void line_add(json_t *arr, const char *fmt, ...) RGM_PRINTF(2, 3);

static void line_add(json_t *arr, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    line_addv(arr, fmt, ap);
    va_end(ap);
}

/* The "references" array of req (absent: empty): 0, or <0 with msg. */
static int req_refs(const json_t *req, const json_t **out, char *msg, size_t msglen)
{
    const json_t *refs = json_object_get(req, "references");
    const json_t *v;
    size_t i;

    *out = refs;
    if (!refs)
        return 0;
    if (!json_is_array(refs)) {
        snprintf(msg, msglen, "\"references\" must be an array of strings");
        return UV_EINVAL;
    }
    json_array_foreach(refs, i, v)
    {
        if (!json_is_string(v)) {
            snprintf(msg, msglen, "\"references\" must be an array of strings");
            return UV_EINVAL;
        }
    }
    return 0;
}

/* ---- the listing ---- */

/* One reference per tagged digest (its first tag), so that the listing walks the tags once,
 * not once per image. */
static int map_tag(const char *reg, const char *repo, const char *tag, const char *digest,
                   uint64_t checked_ms, void *ud)
{
    json_t *map = ud;
    char ref[RGM_REF_IMAGE_STR_MAX];

    (void)checked_ms;
    if (json_object_get(map, digest))
        return 0;
    snprintf(ref, sizeof(ref), "%s/%s:%s", reg, repo, tag);
    json_object_set_new(map, digest, json_string(ref));
    return 0;
}

/* "os/arch[/variant]" of one platform object into the array. */
static void add_platform(json_t *arr, const json_t *p)
{
    const char *os = json_string_value(json_object_get(p, "os"));
    const char *arch = json_string_value(json_object_get(p, "architecture"));
    const char *var = json_string_value(json_object_get(p, "variant"));
    char buf[256];

    if (!os || !arch)
        return;
    snprintf(buf, sizeof(buf), "%s/%s%s%s", os, arch, var ? "/" : "", var ? var : "");
    json_array_append_new(arr, json_string(buf));
}

static json_t *read_json(rgm_store_t *store, const char *digest, size_t max)
{
    void *data = NULL;
    size_t len = 0;
    json_t *doc;

    if (rgm_store_read_small(store, digest, max, &data, &len) < 0)
        return NULL;
    doc = json_loadb(data, len, 0, NULL);
    free(data);
    return doc;
}

/* An index's platforms from its entries; a manifest's from its config. */
static json_t *platforms_of(rgm_store_t *store, const char *digest)
{
    json_t *arr = json_array();
    json_t *doc = read_json(store, digest, MANIFEST_MAX);
    const json_t *list = json_object_get(doc, "manifests");
    const char *cd = json_string_value(json_object_get(json_object_get(doc, "config"), "digest"));
    json_t *cfg;
    size_t i;

    for (i = 0; json_is_array(list) && i < json_array_size(list); i++)
        add_platform(arr, json_object_get(json_array_get(list, i), "platform"));
    if (cd && rgm_digest_check(cd) == 0) {
        cfg = read_json(store, cd, CONFIG_MAX);
        if (cfg)
            add_platform(arr, cfg);
        json_decref(cfg);
    }
    json_decref(doc);
    return arr;
}

static void rfc3339(uint64_t ms, char *buf, size_t len)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;

    if (!gmtime_r(&t, &tm) || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, len, "?");
}

struct listing {
    const struct rgm_imageops *o;
    json_t *arr;
    json_t *tags; /* digest: reference */
    int err;
};

static int list_one(const rgm_index_object_t *top, void *ud)
{
    struct listing *l = ud;
    struct rgm_cachemgmt *cm = l->o->cm;
    rgm_evict_image_t info;
    const char *ref = json_string_value(json_object_get(l->tags, top->digest));
    char when[64];
    json_t *obj;

    l->err = rgm_evict_describe(cm->evict, top, &cm->opts, &info);
    if (l->err < 0)
        return 1;
    rfc3339(info.last_used_ms, when, sizeof(when));
    obj = json_pack("{s:s, s:s, s:o, s:I, s:I, s:s, s:b}", "reference", ref ? ref : "(untagged)",
                    "digest", top->digest, "platforms", platforms_of(l->o->store, top->digest),
                    "unique_bytes", (json_int_t)info.unique_bytes, "shared_bytes",
                    (json_int_t)info.shared_bytes, "last_used", when, "pinned", info.is_pinned);
    if (obj)
        json_array_append_new(l->arr, obj);
    return 0;
}

json_t *rgm_imageops_list(const struct rgm_imageops *o)
{
    struct listing l = {o, json_array(), json_object(), 0};
    const int is_failed = rgm_index_flush(o->index) < 0 ||
                          rgm_index_walk_tags(o->index, map_tag, l.tags) < 0 ||
                          rgm_refs_walk_tops(o->cm->refs, 0, "", 0, list_one, &l) < 0 || l.err < 0;

    json_decref(l.tags);
    if (is_failed) {
        json_decref(l.arr);
        return NULL;
    }
    return l.arr;
}

/* ---- purge ---- */

struct purge {
    const struct rgm_imageops *o;
    json_t *res;
    int is_force;
    const char *registry; /* normalised */
    const char *repository;
    uint64_t older_than_ms;
    int has_older_than;
    int status;
};

static void purge_err(struct purge *p, const char *fmt, ...) RGM_PRINTF(2, 3);

static void purge_err(struct purge *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    line_addv(json_object_get(p->res, "err"), fmt, ap);
    va_end(ap);
    p->status = 1;
}

/* A reference to the digest of its cached top-level manifest. 0, or <0 (reported). */
static int resolve(struct purge *p, const char *arg, char *digest)
{
    rgm_ref_image_t img;
    char err[512];
    int rc;

    if (rgm_ref_valid_digest(arg)) {
        snprintf(digest, RGM_DIGEST_MAX, "%s", arg);
        return 0;
    }
    if (rgm_ref_parse_image(arg, &img, err, sizeof(err)) < 0) {
        purge_err(p, "regmirror purge: %s", err);
        return UV_EINVAL;
    }
    if (img.digest[0]) {
        snprintf(digest, RGM_DIGEST_MAX, "%s", img.digest);
        return 0;
    }
    rc = rgm_index_get_tag(p->o->index, img.registry, img.repository, img.tag, digest, NULL);
    if (rc < 0)
        purge_err(p, "regmirror purge: %s: not cached", arg);
    return rc;
}

/* Purge one image: refused when pinned without force; force removes the stored pins that
 * hold it (a config pin stays: it is the config's). */
static void purge_one(struct purge *p, const char *digest, const char *label)
{
    struct rgm_cachemgmt *cm = p->o->cm;
    json_t *out = json_object_get(p->res, "out");
    char pin[1024];
    uint64_t freed = 0;
    int is_config = 0;
    int n;
    int rc;

    for (;;) {
        rc = rgm_pins_match(cm->pins, digest, rgm_time_ms(), cm->opts.tag_ttl_ms, pin, sizeof(pin),
                            &is_config);
        if (rc <= 0)
            break;
        if (!p->is_force) {
            json_array_append_new(
                json_object_get(p->res, "refused"),
                json_pack("{s:s, s:s, s:s}", "reference", label, "digest", digest, "pin", pin));
            purge_err(p, "regmirror purge: %s is pinned by \"%s\"; --force purges it anyway", label,
                      pin);
            return;
        }
        if (is_config) {
            line_add(json_object_get(p->res, "err"),
                     "regmirror purge: %s is pinned by the config's \"%s\"; purging it", label,
                     pin);
            break;
        }
        if (rgm_pins_remove(cm->pins, pin) <= 0) {
            purge_err(p, "regmirror purge: %s: cannot remove the pin \"%s\"", label, pin);
            return;
        }
        json_array_append_new(json_object_get(p->res, "unpinned"), json_string(pin));
        line_add(out, "unpinned %s", pin);
    }
    if (rc < 0) {
        purge_err(p, "regmirror purge: %s: index error", label);
        return;
    }
    n = rgm_evict_remove_image(cm->evict, digest, RGM_EVICT_PURGE, &cm->opts, &freed);
    if (n < 0) {
        purge_err(p, "regmirror purge: %s: %s", label, uv_strerror(n));
        return;
    }
    json_array_append_new(json_object_get(p->res, "purged"),
                          json_pack("{s:s, s:s, s:i, s:I}", "reference", label, "digest", digest,
                                    "objects", n, "bytes", (json_int_t)freed));
    line_add(out, "purged %s %s (%d objects, %" PRIu64 " bytes)", label, digest, n, freed);
}

struct selection {
    struct purge *p;
    char (*d)[RGM_DIGEST_MAX];
    size_t n;
};

/* Tops matching registry, repository and older_than (all given must hold). */
static int select_top(const rgm_index_object_t *top, void *ud)
{
    struct selection *s = ud;
    const struct purge *p = s->p;
    rgm_index_t *idx = p->o->index;
    char reg[RGM_REF_HOST_MAX + 1];
    const char *slash;
    const uint64_t now = rgm_time_ms();
    int rc;

    /* The age, not last_access + older_than: a huge older_than must not wrap to "all". */
    if (p->has_older_than &&
        (top->last_access_ms > now || now - top->last_access_ms < p->older_than_ms))
        return 0;
    if (p->registry && rgm_index_has_registry_origin(idx, top->digest, p->registry) != 1)
        return 0;
    if (p->repository) {
        slash = strchr(p->repository, '/');
        if (!slash || (size_t)(slash - p->repository) >= sizeof(reg))
            return 0;
        snprintf(reg, sizeof(reg), "%.*s", (int)(slash - p->repository), p->repository);
        rc = rgm_index_has_origin(idx, top->digest, rgm_ref_normalize_registry(reg), slash + 1,
                                  NULL);
        if (rc != 1)
            return 0;
    }
    s->d = rgm_realloc(s->d, (s->n + 1) * RGM_DIGEST_MAX);
    snprintf(s->d[s->n++], RGM_DIGEST_MAX, "%s", top->digest);
    return 0;
}

/* The selectors of req into p: 0, or <0 with msg. */
static int purge_args(struct purge *p, const json_t *req, const json_t **refs, char *msg,
                      size_t msglen)
{
    const json_t *reg = json_object_get(req, "registry");
    const json_t *repo = json_object_get(req, "repository");
    const json_t *older = json_object_get(req, "older_than");
    const json_t *force = json_object_get(req, "force");

    if (!json_is_object(req)) {
        snprintf(msg, msglen, "the request must be a JSON object");
        return UV_EINVAL;
    }
    if (req_refs(req, refs, msg, msglen) < 0)
        return UV_EINVAL;
    if ((reg && !json_is_string(reg)) || (repo && !json_is_string(repo)) ||
        (older && !json_is_string(older)) || (force && !json_is_boolean(force))) {
        snprintf(msg, msglen, "registry, repository and older_than are strings, force a boolean");
        return UV_EINVAL;
    }
    if (older && rgm_parse_duration(json_string_value(older), &p->older_than_ms) < 0) {
        snprintf(msg, msglen, "older_than: bad duration");
        return UV_EINVAL;
    }
    if (!reg && !repo && !older && json_array_size(*refs) == 0) {
        snprintf(msg, msglen,
                 "name at least one image (references, or registry, repository, older_than)");
        return UV_EINVAL;
    }
    p->has_older_than = older != NULL;
    p->registry = reg ? rgm_ref_normalize_registry(json_string_value(reg)) : NULL;
    p->repository = repo ? json_string_value(repo) : NULL;
    p->is_force = json_is_true(force);
    return 0;
}

json_t *rgm_imageops_purge(const struct rgm_imageops *o, const json_t *req, char *msg,
                           size_t msglen)
{
    struct purge p;
    struct selection sel;
    const json_t *refs = NULL;
    const json_t *v;
    char digest[RGM_DIGEST_MAX];
    size_t i;

    memset(&p, 0, sizeof(p));
    p.o = o;
    if (purge_args(&p, req, &refs, msg, msglen) < 0)
        return NULL;
    p.res =
        json_pack("{s:[], s:[], s:[], s:[], s:[]}", "purged", "unpinned", "refused", "out", "err");
    memset(&sel, 0, sizeof(sel));
    sel.p = &p;
    if ((p.registry || p.repository || p.has_older_than) &&
        (rgm_index_flush(o->index) < 0 ||
         rgm_refs_walk_tops(o->cm->refs, 0, "", 0, select_top, &sel) < 0))
        purge_err(&p, "regmirror purge: cannot read the index");
    for (i = 0; i < sel.n; i++)
        purge_one(&p, sel.d[i], "image");
    free(sel.d);
    json_array_foreach(refs, i, v)
    {
        if (resolve(&p, json_string_value(v), digest) == 0)
            purge_one(&p, digest, json_string_value(v));
    }
    json_object_set_new(p.res, "status", json_integer(p.status));
    return p.res;
}

/* ---- pin, unpin ---- */

json_t *rgm_imageops_pin(const struct rgm_imageops *o, const json_t *req, int is_pin, char *msg,
                         size_t msglen)
{
    const json_t *refs = NULL;
    const json_t *v;
    json_t *res;
    json_t *done;
    json_t *out;
    json_t *err_lines;
    char pattern[1024];
    char err[512];
    size_t i;
    int status = 0;
    int rc;

    if (!json_is_object(req) || req_refs(req, &refs, msg, msglen) < 0 ||
        json_array_size(refs) == 0) {
        if (!json_is_object(req) || json_array_size(refs) == 0)
            snprintf(msg, msglen, "name at least one image in \"references\"");
        return NULL;
    }
    res = json_pack("{s:[], s:[], s:[]}", is_pin ? "pinned" : "unpinned", "out", "err");
    done = json_object_get(res, is_pin ? "pinned" : "unpinned");
    out = json_object_get(res, "out");
    err_lines = json_object_get(res, "err");
    json_array_foreach(refs, i, v)
    {
        if (rgm_filter_pin_normalize(json_string_value(v), pattern, sizeof(pattern), err,
                                     sizeof(err)) < 0) {
            line_add(err_lines, "regmirror: %s", err);
            status = 2;
            continue;
        }
        rc = is_pin ? rgm_pins_add(o->cm->pins, pattern) : rgm_pins_remove(o->cm->pins, pattern);
        if (rc < 0) {
            line_add(err_lines, "regmirror: %s: index error", pattern);
            status = status ? status : 1;
        } else if (!is_pin && rc == 0) {
            line_add(err_lines, "regmirror unpin: %s was not pinned", pattern);
            status = status ? status : 1;
        } else {
            json_array_append_new(done, json_string(pattern));
            line_add(out, "%s %s", is_pin ? "pinned" : "unpinned", pattern);
        }
    }
    json_object_set_new(res, "status", json_integer(status));
    return res;
}

/* ---- stats ---- */

struct tally {
    const struct rgm_imageops *o;
    uint64_t images;
    uint64_t pinned_images;
    uint64_t pinned_bytes;
    uint64_t unique_bytes;
    uint64_t shared_bytes;
    int err;
};

static int tally_one(const rgm_index_object_t *top, void *ud)
{
    struct tally *t = ud;
    rgm_evict_image_t info;

    t->err = rgm_evict_describe(t->o->cm->evict, top, &t->o->cm->opts, &info);
    if (t->err < 0)
        return 1;
    t->images++;
    t->unique_bytes += info.unique_bytes;
    t->shared_bytes += info.shared_bytes;
    if (info.is_pinned) {
        t->pinned_images++;
        t->pinned_bytes += info.unique_bytes + info.shared_bytes;
    }
    return 0;
}

json_t *rgm_imageops_stats(const struct rgm_imageops *o)
{
    static const char *const reasons[RGM_EVICT_NR] = {"lru-image", "orphan", "purge"};
    const rgm_evict_counters_t *c = rgm_evict_counters(o->cm->evict);
    struct tally t;
    uint64_t objects = 0;
    uint64_t bytes = 0;
    json_t *ev;
    json_t *res;
    int i;

    memset(&t, 0, sizeof(t));
    t.o = o;
    if (rgm_index_flush(o->index) < 0 || rgm_index_stats(o->index, &objects, &bytes) < 0 ||
        rgm_refs_walk_tops(o->cm->refs, 0, "", 0, tally_one, &t) < 0 || t.err < 0)
        return NULL;
    ev = json_object();
    for (i = 0; i < RGM_EVICT_NR; i++)
        json_object_set_new(ev, reasons[i],
                            json_pack("{s:I, s:I, s:I}", "objects", (json_int_t)c->objects[i],
                                      "bytes", (json_int_t)c->bytes[i], "images",
                                      (json_int_t)c->images[i]));
    res = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b, s:o}", "objects",
                    (json_int_t)objects, "bytes", (json_int_t)bytes, "images", (json_int_t)t.images,
                    "pinned_images", (json_int_t)t.pinned_images, "pinned_bytes",
                    (json_int_t)t.pinned_bytes, "unique_bytes", (json_int_t)t.unique_bytes,
                    "shared_bytes", (json_int_t)t.shared_bytes, "max_bytes",
                    (json_int_t)o->cm->opts.max_bytes, "backfill_complete",
                    rgm_refs_is_complete(o->cm->refs), "evictions", ev);
    return res;
}
