/* regmirror ls --images, purge, pin and unpin: the cache by image, on a storage directory.
 * They open the store and index as the other offline commands do, back-fill references when
 * needed, and act through cache/evict and cache/pins. (The admin socket, for a storage that
 * a running server owns, is not built yet: beside a server they act on the index directly,
 * which SQLite's WAL allows; removed files stay readable to the server's readers.) */
#include <getopt.h>
#include <inttypes.h>
#include <time.h>
#include <jansson.h>
#include <uv.h>

#include "core/common.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "cache/store.h"
#include "cache/index.h"
#include "registry/filter.h"
#include "registry/reference.h"
#include "cmd/cachemgmt.h"
#include "cmd/cmd.h"

#define MANIFEST_MAX (4u * 1024 * 1024)
#define CONFIG_MAX   (1u * 1024 * 1024)

struct images {
    rgm_config_t cfg;
    rgm_store_t *store;
    rgm_index_t *index;
    struct rgm_cachemgmt cm;
    int is_force;
    char *registry;
    char *repository;
    uint64_t older_than_ms;
    int has_older_than;
};

/* ---- opening ---- */

static void images_usage(FILE *out, const char *cmd)
{
    if (strcmp(cmd, "purge") == 0)
        fprintf(out, "usage: regmirror purge [--config FILE] [--storage DIR] [--force]\n"
                     "                       [REF...] [--registry NAME] [--repository NAME/REPO]\n"
                     "                       [--older-than DURATION]\n"
                     "Removes images the way eviction does. Pinned images need --force, which\n"
                     "also unpins them.\n");
    else
        fprintf(out,
                "usage: regmirror %s [--config FILE] [--storage DIR] REF...\n"
                "%s\n",
                cmd,
                strcmp(cmd, "pin") == 0 ? "Pins images (references or globs): never evicted."
                                        : "Removes pins recorded by regmirror pin.");
}

/* 0 ok, 1 --help printed, 2 usage error. */
static int images_args(struct images *im, const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"storage", required_argument, NULL, 's'},
        {"registry", required_argument, NULL, 'r'},
        {"repository", required_argument, NULL, 'p'},
        {"older-than", required_argument, NULL, 'o'},
        {"force", no_argument, NULL, 'f'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int is_purge = strcmp(cmd, "purge") == 0;
    char err[512];
    int c;

    optind = 1;
    while ((c = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
        if (!is_purge && (c == 'r' || c == 'p' || c == 'o' || c == 'f'))
            c = '?';
        switch (c) {
        case 'c':
            if (rgm_config_load_file(&im->cfg, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "regmirror: %s\n", err);
                return 2;
            }
            break;
        case 's':
            free(im->cfg.storage);
            im->cfg.storage = rgm_strdup(optarg);
            break;
        case 'r':
            free(im->registry);
            im->registry = rgm_strdup(rgm_ref_normalize_registry(optarg));
            break;
        case 'p':
            free(im->repository);
            im->repository = rgm_strdup(optarg);
            break;
        case 'o':
            if (rgm_parse_duration(optarg, &im->older_than_ms) < 0) {
                fprintf(stderr, "regmirror purge: --older-than: bad duration \"%s\"\n", optarg);
                return 2;
            }
            im->has_older_than = 1;
            break;
        case 'f':
            im->is_force = 1;
            break;
        case 'h':
            images_usage(stdout, cmd);
            return 1;
        default:
            images_usage(stderr, cmd);
            return 2;
        }
    }
    if (optind >= argc && !(is_purge && (im->registry || im->repository || im->has_older_than))) {
        fprintf(stderr, "regmirror %s: name at least one image%s\n", cmd,
                is_purge ? " (or --registry, --repository, --older-than)" : "");
        return 2;
    }
    return 0;
}

static int images_open(struct images *im)
{
    char path[4096];
    char err[600];
    int rc;

    if (rgm_log_open(NULL, RGM_LOG_WARN) < 0)
        return 1;
    rc = rgm_store_open(im->cfg.storage, &im->store);
    if (rc == 0)
        rc = rgm_store_index_path(im->store, path, sizeof(path));
    if (rc == 0)
        rc = rgm_index_open(path, &im->index);
    if (rc < 0) {
        fprintf(stderr, "regmirror: cannot open storage %s: %s\n", im->cfg.storage,
                uv_strerror(rc));
        return 1;
    }
    if (rgm_cachemgmt_open(&im->cm, &im->cfg, im->index, im->store, NULL, NULL, err, sizeof(err)) <
            0 ||
        rgm_refs_backfill(im->cm.refs) < 0) {
        fprintf(stderr, "regmirror: %s\n", err[0] ? err : "cannot back-fill references");
        return 1;
    }
    return 0;
}

static int images_close(struct images *im, int rc)
{
    rgm_cachemgmt_close(&im->cm);
    rgm_index_close(im->index);
    if (im->store)
        rgm_store_close(im->store);
    rgm_config_free(&im->cfg);
    free(im->registry);
    free(im->repository);
    rgm_log_close();
    return rc;
}

/* -1 to go on, else the exit status. */
static int images_start(struct images *im, const char *cmd, int argc, char **argv)
{
    int rc;

    memset(im, 0, sizeof(*im));
    rgm_config_init(&im->cfg);
    rc = images_args(im, cmd, argc, argv);
    if (rc != 0)
        return images_close(im, rc == 1 ? 0 : rc);
    if (images_open(im) != 0)
        return images_close(im, 1);
    return -1;
}

/* ---- ls --images ---- */

struct tagref {
    const char *digest;
    char ref[RGM_REF_IMAGE_STR_MAX];
};

static int find_tag(const char *reg, const char *repo, const char *tag, const char *digest,
                    uint64_t checked_ms, void *ud)
{
    struct tagref *t = ud;

    (void)checked_ms;
    if (strcmp(digest, t->digest) != 0)
        return 0;
    snprintf(t->ref, sizeof(t->ref), "%s/%s:%s", reg, repo, tag);
    return 1;
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
    struct images *im;
    json_t *arr;
    int err;
};

static int list_one(const rgm_index_object_t *top, void *ud)
{
    struct listing *l = ud;
    rgm_evict_image_t info;
    struct tagref t;
    char when[64];
    json_t *o;

    l->err = rgm_evict_describe(l->im->cm.evict, top, &l->im->cm.opts, &info);
    if (l->err < 0)
        return 1;
    t.digest = top->digest;
    snprintf(t.ref, sizeof(t.ref), "(untagged)");
    if (rgm_index_walk_tags(l->im->index, find_tag, &t) < 0) {
        l->err = UV_EIO;
        return 1;
    }
    rfc3339(info.last_used_ms, when, sizeof(when));
    o = json_pack("{s:s, s:s, s:o, s:I, s:I, s:s, s:b}", "reference", t.ref, "digest", top->digest,
                  "platforms", platforms_of(l->im->store, top->digest), "unique_bytes",
                  (json_int_t)info.unique_bytes, "shared_bytes", (json_int_t)info.shared_bytes,
                  "last_used", when, "pinned", info.is_pinned);
    if (o)
        json_array_append_new(l->arr, o);
    return 0;
}

static void print_table(const json_t *arr)
{
    const json_t *o;
    const json_t *p;
    char plats[256];
    size_t i, k, n;

    printf("%-44s %-19s %-22s %12s %12s %-20s %s\n", "REFERENCE", "DIGEST", "PLATFORMS", "UNIQUE",
           "SHARED", "LAST USED", "PINNED");
    json_array_foreach(arr, i, o)
    {
        n = 0;
        plats[0] = '\0';
        json_array_foreach(json_object_get(o, "platforms"), k, p)
        {
            int w =
                snprintf(plats + n, sizeof(plats) - n, "%s%s", k ? "," : "", json_string_value(p));

            if (w < 0 || (size_t)w >= sizeof(plats) - n)
                break;
            n += (size_t)w;
        }
        printf("%-44s %.19s %-22s %12" JSON_INTEGER_FORMAT " %12" JSON_INTEGER_FORMAT " %-20s %s\n",
               json_string_value(json_object_get(o, "reference")),
               json_string_value(json_object_get(o, "digest")), plats[0] ? plats : "-",
               json_integer_value(json_object_get(o, "unique_bytes")),
               json_integer_value(json_object_get(o, "shared_bytes")),
               json_string_value(json_object_get(o, "last_used")),
               json_is_true(json_object_get(o, "pinned")) ? "yes" : "no");
    }
}

int rgm_images_list(rgm_config_t *cfg, rgm_store_t *store, rgm_index_t *idx, int is_json)
{
    struct images im;
    struct listing l;
    char err[600];
    char *text;
    int rc = 1;

    memset(&im, 0, sizeof(im));
    im.store = store;
    im.index = idx;
    if (rgm_cachemgmt_open(&im.cm, cfg, idx, store, NULL, NULL, err, sizeof(err)) < 0 ||
        rgm_refs_backfill(im.cm.refs) < 0) {
        fprintf(stderr, "regmirror: %s\n", err[0] ? err : "cannot back-fill references");
        goto out;
    }
    l.im = &im;
    l.arr = json_array();
    l.err = 0;
    if (rgm_index_flush(idx) < 0 || rgm_refs_walk_tops(im.cm.refs, 0, "", 0, list_one, &l) < 0 ||
        l.err < 0) {
        json_decref(l.arr);
        goto out;
    }
    if (is_json) {
        text = json_dumps(l.arr, JSON_INDENT(2));
        printf("%s\n", text ? text : "[]");
        free(text);
    } else {
        print_table(l.arr);
    }
    json_decref(l.arr);
    rc = 0;
out:
    rgm_cachemgmt_close(&im.cm);
    return rc;
}

/* ---- purge ---- */

/* A reference given on the command line to the digest of its cached top-level manifest.
 * 0, or <0 (printed). */
static int resolve(struct images *im, const char *arg, char *digest)
{
    rgm_ref_image_t img;
    char err[512];
    int rc;

    if (rgm_ref_valid_digest(arg)) {
        snprintf(digest, RGM_DIGEST_MAX, "%s", arg);
        return 0;
    }
    if (rgm_ref_parse_image(arg, &img, err, sizeof(err)) < 0) {
        fprintf(stderr, "regmirror purge: %s\n", err);
        return UV_EINVAL;
    }
    if (img.digest[0]) {
        snprintf(digest, RGM_DIGEST_MAX, "%s", img.digest);
        return 0;
    }
    rc = rgm_index_get_tag(im->index, img.registry, img.repository, img.tag, digest, NULL);
    if (rc < 0)
        fprintf(stderr, "regmirror purge: %s: not cached\n", arg);
    return rc;
}

/* Purge one image: refused when pinned without --force; --force removes the stored pins
 * that hold it (a config pin stays: it is the config's). 1 purged, 0 refused, <0. */
static int purge_one(struct images *im, const char *digest, const char *label)
{
    char pin[1024];
    uint64_t freed = 0;
    int is_config = 0;
    int n;
    int rc;

    for (;;) {
        rc = rgm_pins_match(im->cm.pins, digest, rgm_time_ms(), im->cm.opts.tag_ttl_ms, pin,
                            sizeof(pin), &is_config);
        if (rc <= 0)
            break;
        if (!im->is_force) {
            fprintf(stderr, "regmirror purge: %s is pinned by \"%s\"; --force purges it anyway\n",
                    label, pin);
            return 0;
        }
        if (is_config) {
            fprintf(stderr, "regmirror purge: %s is pinned by the config's \"%s\"; purging it\n",
                    label, pin);
            break;
        }
        if (rgm_pins_remove(im->cm.pins, pin) <= 0)
            return UV_EIO;
        printf("unpinned %s\n", pin);
    }
    if (rc < 0)
        return rc;
    n = rgm_evict_remove_image(im->cm.evict, digest, RGM_EVICT_PURGE, &im->cm.opts, &freed);
    if (n < 0)
        return n;
    printf("purged %s %s (%d objects, %" PRIu64 " bytes)\n", label, digest, n, freed);
    return 1;
}

struct selection {
    struct images *im;
    char (*d)[RGM_DIGEST_MAX];
    size_t n;
};

/* Tops matching --registry, --repository and --older-than (all given must hold). */
static int select_top(const rgm_index_object_t *top, void *ud)
{
    struct selection *s = ud;
    struct images *im = s->im;
    char reg[RGM_REF_HOST_MAX + 1];
    const char *slash;
    int rc;

    if (im->has_older_than && top->last_access_ms + im->older_than_ms > rgm_time_ms())
        return 0;
    if (im->registry && rgm_index_has_registry_origin(im->index, top->digest, im->registry) != 1)
        return 0;
    if (im->repository) {
        slash = strchr(im->repository, '/');
        if (!slash || (size_t)(slash - im->repository) >= sizeof(reg))
            return 0;
        snprintf(reg, sizeof(reg), "%.*s", (int)(slash - im->repository), im->repository);
        rc = rgm_index_has_origin(im->index, top->digest, rgm_ref_normalize_registry(reg),
                                  slash + 1, NULL);
        if (rc != 1)
            return 0;
    }
    s->d = rgm_realloc(s->d, (s->n + 1) * RGM_DIGEST_MAX);
    snprintf(s->d[s->n++], RGM_DIGEST_MAX, "%s", top->digest);
    return 0;
}

int rgm_cmd_purge(int argc, char **argv)
{
    struct images im;
    struct selection sel = {NULL, NULL, 0};
    char digest[RGM_DIGEST_MAX];
    size_t i;
    int rc = images_start(&im, "purge", argc, argv);
    int status = 0;
    int i_arg;

    if (rc >= 0)
        return rc;
    sel.im = &im;
    if ((im.registry || im.repository || im.has_older_than) &&
        (rgm_index_flush(im.index) < 0 ||
         rgm_refs_walk_tops(im.cm.refs, 0, "", 0, select_top, &sel) < 0)) {
        free(sel.d);
        return images_close(&im, 1);
    }
    for (i = 0; i < sel.n; i++) {
        rc = purge_one(&im, sel.d[i], "image");
        if (rc <= 0)
            status = 1;
    }
    free(sel.d);
    for (i_arg = optind; i_arg < argc; i_arg++) {
        if (resolve(&im, argv[i_arg], digest) < 0 || purge_one(&im, digest, argv[i_arg]) <= 0)
            status = 1;
    }
    return images_close(&im, status);
}

/* ---- pin, unpin ---- */

static int pin_cmd(int argc, char **argv, int is_pin)
{
    struct images im;
    char pattern[1024];
    char err[512];
    int rc = images_start(&im, is_pin ? "pin" : "unpin", argc, argv);
    int status = 0;
    int i;

    if (rc >= 0)
        return rc;
    for (i = optind; i < argc; i++) {
        if (rgm_filter_pin_normalize(argv[i], pattern, sizeof(pattern), err, sizeof(err)) < 0) {
            fprintf(stderr, "regmirror: %s\n", err);
            status = 2;
            continue;
        }
        rc = is_pin ? rgm_pins_add(im.cm.pins, pattern) : rgm_pins_remove(im.cm.pins, pattern);
        if (rc < 0) {
            status = 1;
        } else if (!is_pin && rc == 0) {
            fprintf(stderr, "regmirror unpin: %s was not pinned\n", pattern);
            status = 1;
        } else {
            printf("%s %s\n", is_pin ? "pinned" : "unpinned", pattern);
        }
    }
    return images_close(&im, status);
}

int rgm_cmd_pin(int argc, char **argv)
{
    return pin_cmd(argc, argv, 1);
}

int rgm_cmd_unpin(int argc, char **argv)
{
    return pin_cmd(argc, argv, 0);
}
