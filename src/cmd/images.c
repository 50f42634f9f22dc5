/* regmirror ls --images, purge, pin and unpin: the cache by image, on a storage directory.
 * When a server owns the storage (its flock on .lock), they ask it through the admin socket
 * (cmd/adminsock), so that its in-use set and pins apply; else they open the store and index,
 * back-fill references when needed and do the work themselves (cmd/imageops). Either way the
 * same JSON comes back and is printed the same. With a server that has no admin socket (an
 * older build, or the socket is gone), they fall back to the index directly, which SQLite's
 * WAL allows. */
#include <getopt.h>
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
#include "cmd/imageops.h"
#include "cmd/adminsock.h"
#include "cmd/cmd.h"

struct images {
    rgm_config_t cfg;
    rgm_store_t *store;
    rgm_index_t *index;
    struct rgm_cachemgmt cm;
    int has_cm;
    int is_cfg_borrowed; /* cfg is the caller's: not freed here */
    char sock[256];      /* the server's admin socket, when a server owns the storage */
    int is_force;
    char *registry;
    char *repository;
    char *older_than; /* as given; checked here, parsed by cmd/imageops */
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
    uint64_t ms = 0;
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
            if (rgm_parse_duration(optarg, &ms) < 0) {
                fprintf(stderr, "regmirror purge: --older-than: bad duration \"%s\"\n", optarg);
                return 2;
            }
            free(im->older_than);
            im->older_than = rgm_strdup(optarg);
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

/* The index and the cache management, for doing the work here. 0 or 1 (printed). */
static int images_open_index(struct images *im)
{
    char path[4096];
    char err[600];
    int rc;

    rc = rgm_store_index_path(im->store, path, sizeof(path));
    if (rc == 0)
        rc = rgm_index_open(path, &im->index);
    if (rc < 0) {
        fprintf(stderr, "regmirror: cannot open the index in %s: %s\n", im->cfg.storage,
                uv_strerror(rc));
        return 1;
    }
    im->has_cm = 1;
    if (rgm_cachemgmt_open(&im->cm, &im->cfg, im->index, im->store, NULL, NULL, err, sizeof(err)) <
            0 ||
        rgm_refs_backfill(im->cm.refs) < 0) {
        fprintf(stderr, "regmirror: %s\n", err[0] ? err : "cannot back-fill references");
        return 1;
    }
    return 0;
}

static int images_open(struct images *im)
{
    int rc;

    if (rgm_log_open(NULL, RGM_LOG_WARN) < 0)
        return 1;
    rc = rgm_store_open(im->cfg.storage, &im->store);
    if (rc < 0) {
        fprintf(stderr, "regmirror: cannot open storage %s: %s\n", im->cfg.storage,
                uv_strerror(rc));
        return 1;
    }
    if (!rgm_store_is_owner(im->store) &&
        rgm_adminsock_path(&im->cfg, im->sock, sizeof(im->sock)) == 0)
        return 0; /* a server owns it: the index is opened only if its socket is not there */
    im->sock[0] = '\0';
    return images_open_index(im);
}

static int images_close(struct images *im, int rc)
{
    if (im->has_cm)
        rgm_cachemgmt_close(&im->cm);
    rgm_index_close(im->index);
    if (im->store)
        rgm_store_close(im->store);
    if (!im->is_cfg_borrowed)
        rgm_config_free(&im->cfg);
    free(im->registry);
    free(im->repository);
    free(im->older_than);
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

/* ---- one operation, through the server or here ---- */

typedef json_t *(*local_fn)(struct images *im, const json_t *req, char *msg, size_t msglen);

/* Ask the server at im->sock; a socket that is not there (no such file, nobody listening)
 * means doing it here. The result, or NULL with *rc set (printed). */
static json_t *call(struct images *im, const char *method, const char *target, const json_t *req,
                    local_fn local, int *rc)
{
    char msg[1024];
    json_t *res = NULL;
    int status = 0;
    int err;

    msg[0] = '\0';
    if (im->sock[0]) {
        err = rgm_adminsock_call(im->sock, method, target, req, &status, &res, msg, sizeof(msg));
        if (err == 0 && status == 200 && res)
            return res;
        if (err == 0) {
            const char *why = json_string_value(
                json_object_get(json_array_get(json_object_get(res, "errors"), 0), "message"));
            fprintf(stderr, "regmirror: the server answered %d: %s\n", status, why ? why : "?");
            json_decref(res);
            *rc = status == 400 ? 2 : 1;
            return NULL;
        }
        if (err != UV_ENOENT && err != UV_ECONNREFUSED) {
            fprintf(stderr, "regmirror: %s\n", msg);
            *rc = 1;
            return NULL;
        }
        fprintf(stderr,
                "regmirror: a server owns %s but its admin socket is not there (%s); "
                "acting on the index directly\n",
                im->cfg.storage, im->sock);
        im->sock[0] = '\0';
        if (images_open_index(im) != 0) {
            *rc = 1;
            return NULL;
        }
    }
    res = local(im, req, msg, sizeof(msg));
    if (!res) {
        fprintf(stderr, "regmirror: %s\n", msg[0] ? msg : "index error");
        *rc = msg[0] ? 2 : 1;
    }
    return res;
}

static struct rgm_imageops ops_of(struct images *im)
{
    struct rgm_imageops o = {im->store, im->index, &im->cm};

    return o;
}

/* The lines a result carries (its "out" lines on out), then its status. */
static int print_result(const json_t *res, FILE *out_file)
{
    const json_t *err = json_object_get(res, "err");
    const json_t *out = json_object_get(res, "out");
    size_t i;

    for (i = 0; i < json_array_size(err); i++)
        fprintf(stderr, "%s\n", json_string_value(json_array_get(err, i)));
    for (i = 0; i < json_array_size(out); i++)
        fprintf(out_file, "%s\n", json_string_value(json_array_get(out, i)));
    return (int)json_integer_value(json_object_get(res, "status"));
}

/* call with req (taken), print the result's lines (its out lines on out), close im; the exit
 * status. */
static int run_op(struct images *im, const char *method, const char *target, json_t *req,
                  local_fn local, FILE *out)
{
    json_t *res;
    int rc = 1;

    res = call(im, method, target, req, local, &rc);
    json_decref(req);
    if (res) {
        rc = print_result(res, out);
        json_decref(res);
    }
    return images_close(im, rc);
}

/* ---- ls --images ---- */

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

static json_t *local_list(struct images *im, const json_t *req, char *msg, size_t msglen)
{
    const struct rgm_imageops o = ops_of(im);

    (void)req;
    (void)msg;
    (void)msglen;
    return rgm_imageops_list(&o);
}

int rgm_images_list(rgm_config_t *cfg, rgm_store_t *store, rgm_index_t *idx, int is_json)
{
    struct images im;
    json_t *arr;
    char err[600];
    char *text;
    int rc = 1;

    memset(&im, 0, sizeof(im));
    im.cfg = *cfg; /* borrowed: never freed here */
    im.store = store;
    im.index = idx;
    if (!rgm_store_is_owner(store) && rgm_adminsock_path(cfg, im.sock, sizeof(im.sock)) < 0)
        im.sock[0] = '\0';
    if (!im.sock[0]) {
        im.has_cm = 1;
        if (rgm_cachemgmt_open(&im.cm, cfg, idx, store, NULL, NULL, err, sizeof(err)) < 0 ||
            rgm_refs_backfill(im.cm.refs) < 0) {
            fprintf(stderr, "regmirror: %s\n", err[0] ? err : "cannot back-fill references");
            goto out;
        }
    }
    arr = call(&im, "GET", "/images", NULL, local_list, &rc);
    if (!arr)
        goto out;
    if (is_json) {
        text = json_dumps(arr, JSON_INDENT(2));
        printf("%s\n", text ? text : "[]");
        free(text);
    } else {
        print_table(arr);
    }
    json_decref(arr);
    rc = 0;
out:
    if (im.has_cm)
        rgm_cachemgmt_close(&im.cm);
    return rc;
}

/* ---- purge ---- */

static json_t *local_purge(struct images *im, const json_t *req, char *msg, size_t msglen)
{
    const struct rgm_imageops o = ops_of(im);

    return rgm_imageops_purge(&o, req, msg, msglen);
}

int rgm_cmd_purge(int argc, char **argv)
{
    struct images im;
    json_t *req;
    int rc = images_start(&im, "purge", argc, argv);
    int i;

    if (rc >= 0)
        return rc;
    req = json_pack("{s:[], s:b}", "references", "force", im.is_force);
    for (i = optind; i < argc; i++)
        json_array_append_new(json_object_get(req, "references"), json_string(argv[i]));
    if (im.registry)
        json_object_set_new(req, "registry", json_string(im.registry));
    if (im.repository)
        json_object_set_new(req, "repository", json_string(im.repository));
    if (im.has_older_than)
        json_object_set_new(req, "older_than", json_string(im.older_than));
    return run_op(&im, "POST", "/purge", req, local_purge, stdout);
}

/* ---- pin, unpin ---- */

static json_t *local_pin(struct images *im, const json_t *req, char *msg, size_t msglen)
{
    const struct rgm_imageops o = ops_of(im);

    return rgm_imageops_pin(&o, req, 1, msg, msglen);
}

static json_t *local_unpin(struct images *im, const json_t *req, char *msg, size_t msglen)
{
    const struct rgm_imageops o = ops_of(im);

    return rgm_imageops_pin(&o, req, 0, msg, msglen);
}

static int pin_cmd(int argc, char **argv, int is_pin)
{
    struct images im;
    json_t *req;
    int rc = images_start(&im, is_pin ? "pin" : "unpin", argc, argv);
    int i;

    if (rc >= 0)
        return rc;
    req = json_pack("{s:[]}", "references");
    for (i = optind; i < argc; i++)
        json_array_append_new(json_object_get(req, "references"), json_string(argv[i]));
    return run_op(&im, is_pin ? "POST" : "DELETE", "/pin", req, is_pin ? local_pin : local_unpin,
                  stdout);
}

int rgm_cmd_pin(int argc, char **argv)
{
    return pin_cmd(argc, argv, 1);
}

int rgm_cmd_unpin(int argc, char **argv)
{
    return pin_cmd(argc, argv, 0);
}

int rgm_images_pin(const rgm_config_t *cfg, char *const *refs, size_t n)
{
    struct images im;
    json_t *req;
    size_t i;

    memset(&im, 0, sizeof(im));
    im.cfg = *cfg;
    im.is_cfg_borrowed = 1;
    if (images_open(&im) != 0)
        return images_close(&im, 1);
    req = json_pack("{s:[]}", "references");
    for (i = 0; i < n; i++)
        json_array_append_new(json_object_get(req, "references"), json_string(refs[i]));
    return run_op(&im, "POST", "/pin", req, local_pin, stderr);
}
