/* regmirror gc, ls and verify: offline maintenance of a storage directory. They open the same
 * store and index as serve (SQLite WAL allows a running server beside them). */
#include <getopt.h>
#include <fcntl.h>
#include <unistd.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <uv.h>

#include "core/common.h"
#include "core/config.h"
#include "core/log.h"
#include "core/util.h"
#include "cache/store.h"
#include "cache/index.h"
#include "cmd/cachemgmt.h"
#include "cmd/cmd.h"

struct admin {
    rgm_config_t cfg;
    rgm_store_t *store;
    rgm_index_t *index;
    int is_json;
    int is_images;
};

static void admin_usage(FILE *out, const char *cmd)
{
    fprintf(out, "usage: regmirror %s [--config FILE] [--storage DIR]%s\n", cmd,
            strcmp(cmd, "gc") == 0 ? " [--max-size SIZE]" : "");
    if (strcmp(cmd, "gc") == 0)
        fprintf(out,
                "Evicts least recently used objects until the cache is under max_cache_bytes.\n");
    else if (strcmp(cmd, "ls") == 0)
        fprintf(out, "Lists cached tags and objects; --images [--json]: one line per image.\n");
    else
        fprintf(out, "Re-hashes every cached object; corrupt ones are removed (exit 1).\n");
}

/* 0 ok, 1 --help printed, 2 usage error. */
static int admin_args(struct admin *a, const char *cmd, int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"storage", required_argument, NULL, 's'},
        {"max-size", required_argument, NULL, 'm'},
        {"json", no_argument, NULL, 'j'},
        {"images", no_argument, NULL, 'i'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    char err[512];
    int c;

    rgm_config_init(&a->cfg);
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:s:m:jh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (rgm_config_load_file(&a->cfg, optarg, err, sizeof(err)) < 0) {
                fprintf(stderr, "regmirror: %s\n", err);
                return 2;
            }
            break;
        case 's':
            free(a->cfg.storage);
            a->cfg.storage = rgm_strdup(optarg);
            break;
        case 'm':
            if (rgm_parse_size(optarg, &a->cfg.max_cache_bytes) < 0) {
                fprintf(stderr, "regmirror: --max-size: bad size \"%s\"\n", optarg);
                return 2;
            }
            break;
        case 'j':
            a->is_json = 1;
            break;
        case 'i':
            a->is_images = 1;
            break;
        case 'h':
            admin_usage(stdout, cmd);
            return 1;
        default:
            admin_usage(stderr, cmd);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "regmirror %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
        return 2;
    }
    return 0;
}

static int admin_open(struct admin *a)
{
    char path[4096];
    int err;

    if (rgm_log_open(NULL, RGM_LOG_WARN) < 0)
        return 1;
    err = rgm_store_open(a->cfg.storage, &a->store);
    if (err == 0)
        err = rgm_store_index_path(a->store, path, sizeof(path));
    if (err == 0)
        err = rgm_index_open(path, &a->index);
    /* Beside a running server, its fetches in tmp/ and its newest rows must be left alone. */
    if (err == 0 && rgm_store_is_owner(a->store))
        err = rgm_index_reconcile(a->index, a->store);
    else if (err == 0)
        fprintf(stderr, "regmirror: a server is using %s; not reconciling\n", a->cfg.storage);
    if (err < 0) {
        fprintf(stderr, "regmirror: cannot open storage %s: %s\n", a->cfg.storage,
                uv_strerror(err));
        return 1;
    }
    return 0;
}

static int admin_close(struct admin *a, int rc)
{
    rgm_index_close(a->index);
    if (a->store)
        rgm_store_close(a->store);
    rgm_config_free(&a->cfg);
    rgm_log_close();
    return rc;
}

/* Run cmd's setup; returns -1 to go on, else the exit status. */
static int admin_start(struct admin *a, const char *cmd, int argc, char **argv)
{
    int rc;

    memset(a, 0, sizeof(*a));
    rc = admin_args(a, cmd, argc, argv);
    if (rc != 0) {
        rgm_config_free(&a->cfg);
        return rc == 1 ? 0 : rc;
    }
    if (admin_open(a) != 0)
        return admin_close(a, 1);
    return -1;
}

int rgm_cmd_gc(int argc, char **argv)
{
    struct admin a;
    struct rgm_cachemgmt cm;
    const rgm_evict_counters_t *c;
    uint64_t freed = 0;
    uint64_t nobj = 0;
    uint64_t objects = 0;
    uint64_t bytes = 0;
    char err[600];
    int rc = admin_start(&a, "gc", argc, argv);
    int step;

    if (rc >= 0)
        return rc;
    if (a.cfg.max_cache_bytes == 0) {
        fprintf(stderr, "regmirror gc: no limit (set max_cache_bytes or --max-size)\n");
        return admin_close(&a, 2);
    }
    /* By image, as serve evicts; the references of an older cache are back-filled first. */
    if (rgm_cachemgmt_open(&cm, &a.cfg, a.index, a.store, NULL, NULL, err, sizeof(err)) < 0 ||
        rgm_refs_backfill(cm.refs) < 0) {
        fprintf(stderr, "regmirror gc: %s\n", err[0] ? err : "cannot back-fill references");
        rgm_cachemgmt_close(&cm);
        return admin_close(&a, 1);
    }
    do {
        step = rgm_evict_step(cm.evict, &cm.opts);
    } while (step == 1);
    c = rgm_evict_counters(cm.evict);
    nobj = c->objects[RGM_EVICT_LRU_IMAGE] + c->objects[RGM_EVICT_ORPHAN];
    freed = c->bytes[RGM_EVICT_LRU_IMAGE] + c->bytes[RGM_EVICT_ORPHAN];
    rgm_cachemgmt_close(&cm);
    if (rgm_index_stats(a.index, &objects, &bytes) < 0 || step < 0)
        return admin_close(&a, 1);
    printf("evicted %" PRIu64 " objects (%" PRIu64 " bytes); cache now %" PRIu64
           " objects, %" PRIu64 " bytes\n",
           nobj, freed, objects, bytes);
    return admin_close(&a, 0);
}

static int print_tag(const char *reg, const char *repo, const char *tag, const char *digest,
                     uint64_t checked_ms, void *ud)
{
    (void)ud;
    printf("tag     %s/%s:%s -> %s (checked %" PRIu64 " s ago)\n", reg, repo, tag, digest,
           (rgm_time_ms() - checked_ms) / 1000);
    return 0;
}

static int print_obj(const rgm_index_object_t *o, void *ud)
{
    (void)ud;
    printf("%-7s %s %12" PRIu64 " hits=%" PRIu64 " %s\n",
           o->kind == RGM_OBJ_MANIFEST ? "manifest" : "blob", o->digest, o->size, o->hits,
           o->media_type);
    return 0;
}

int rgm_cmd_ls(int argc, char **argv)
{
    struct admin a;
    int rc = admin_start(&a, "ls", argc, argv);

    if (rc >= 0)
        return rc;
    if (a.is_images)
        return admin_close(&a, rgm_images_list(&a.cfg, a.store, a.index, a.is_json));
    if (rgm_index_walk_tags(a.index, print_tag, NULL) < 0 ||
        rgm_index_walk_lru(a.index, 0, print_obj, NULL) < 0)
        return admin_close(&a, 1);
    return admin_close(&a, 0);
}

struct verify {
    struct admin *a;
    uint64_t ok;
    uint64_t bad;
    uint64_t unreadable;
};

static int hash_file(const char *path, const char *digest, char *out, size_t outlen)
{
    unsigned char buf[65536];
    unsigned char md[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int mdlen = 0;
    int is512 = strncmp(digest, "sha512:", 7) == 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    ssize_t n;
    int fd;
    int err = 0;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || !ctx || EVP_DigestInit_ex(ctx, is512 ? EVP_sha512() : EVP_sha256(), NULL) != 1) {
        err = UV_EIO;
        goto out;
    }
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1)
            break;
    if (n != 0 || EVP_DigestFinal_ex(ctx, md, &mdlen) != 1) {
        err = UV_EIO;
        goto out;
    }
    rgm_hex(md, mdlen, hex);
    snprintf(out, outlen, "%s:%s", is512 ? "sha512" : "sha256", hex);
out:
    if (fd >= 0)
        close(fd);
    EVP_MD_CTX_free(ctx);
    return err;
}

static int verify_one(const char *digest, uint64_t size, void *ud)
{
    struct verify *v = ud;
    char path[4096];
    char got[RGM_DIGEST_MAX];
    int err;

    (void)size;
    if (rgm_store_blob_path(v->a->store, digest, path, sizeof(path)) < 0)
        return 0;
    err = hash_file(path, digest, got, sizeof(got));
    if (err < 0) {
        fprintf(stderr, "regmirror verify: cannot read %s: %s (left in place)\n", digest,
                uv_strerror(err));
        v->unreadable++;
        return 0;
    }
    if (strcmp(got, digest) == 0) {
        v->ok++;
        return 0;
    }
    v->bad++;
    printf("corrupt %s: removed\n", digest);
    if (rgm_store_remove(v->a->store, digest) < 0 ||
        rgm_index_remove_object(v->a->index, digest) < 0)
        fprintf(stderr, "regmirror verify: cannot remove %s\n", digest);
    return 0;
}

int rgm_cmd_verify(int argc, char **argv)
{
    struct admin a;
    struct verify v;
    int rc = admin_start(&a, "verify", argc, argv);

    if (rc >= 0)
        return rc;
    memset(&v, 0, sizeof(v));
    v.a = &a;
    if (rgm_store_walk(a.store, verify_one, &v) < 0)
        return admin_close(&a, 1);
    printf("%" PRIu64 " objects verified, %" PRIu64 " corrupt, %" PRIu64 " unreadable\n", v.ok,
           v.bad, v.unreadable);
    return admin_close(&a, v.bad || v.unreadable ? 1 : 0);
}
