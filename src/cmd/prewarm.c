/* regmirror prewarm: pull a list of images through a mirror exactly as a node would
 * (manifests by tag or digest, the chosen platforms of an index, config and layers), so that
 * the mirror's cache holds them before a rollout. Manifests are buffered and verified; blobs
 * are streamed through a hash and discarded. It stores nothing itself and never talks to a
 * registry directly, except to the token realm a 401 challenge names. */
#include "config.h"

#include "cmd/cmd.h"
#include "cmd/prewarm-int.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <uv.h>
#include <jansson.h>
#include <openssl/evp.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/util.h"
#include "http/client.h"
#include "registry/auth.h"
#include "registry/reference.h"

#define DEFAULT_MIRROR   "http://127.0.0.1:5000"
#define DEFAULT_PARALLEL 4
#define MAX_PARALLEL     64
#define MAX_IMAGES       100000
#define MANIFEST_MAX     (4 * 1024 * 1024) /* the OCI spec's recommended limit */
#define TOKEN_BODY_MAX   (256 * 1024)
#define ERRBODY_MAX      (16 * 1024)
#define MAX_CHALLENGES   4
#define BASIC_TTL_MS     (3600 * 1000ULL)
#define ERR_MAX          512

static const char manifest_accept[] = "application/vnd.oci.image.index.v1+json, "
                                      "application/vnd.oci.image.manifest.v1+json, "
                                      "application/vnd.docker.distribution.manifest.list.v2+json, "
                                      "application/vnd.docker.distribution.manifest.v2+json";

enum op_kind { OP_MANIFEST, OP_HEAD, OP_GET, OP_TOKEN };

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
    char plat[100]; /* child manifest: its platform */
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
static void maybe_finish(struct pw *pw);

/* ---- small helpers ---- */

static char *vfmt(const char *fmt, va_list ap) RGM_PRINTF(1, 0);
static char *vfmt(const char *fmt, va_list ap)
{
    char buf[1024];

    if (vsnprintf(buf, sizeof(buf), fmt, ap) < 0)
        buf[0] = '\0';
    return rgm_strdup(buf);
}

static int is_hit(const char *xcache)
{
    return xcache && rgm_strcaseeq(xcache, "HIT");
}

/* "algo:hex" of data with the algorithm of like_digest ("sha256:..." or "sha512:..."). */
static int digest_of(const char *like_digest, const void *data, size_t len, char *out,
                     size_t outlen)
{
    const EVP_MD *md = EVP_sha256();
    const char *algo = "sha256";
    unsigned char h[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned hlen = 0;

    if (like_digest && strncmp(like_digest, "sha512:", 7) == 0) {
        md = EVP_sha512();
        algo = "sha512";
    }
    if (EVP_Digest(data, len, h, &hlen, md, NULL) != 1)
        return UV_EIO;
    rgm_hex(h, hlen, hex);
    if (snprintf(out, outlen, "%s:%s", algo, hex) >= (int)outlen)
        return UV_ENOBUFS;
    return 0;
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

static void platform_str(const struct platform *p, char *out, size_t len)
{
    (void)snprintf(out, len, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "", p->variant);
}

/* ---- arguments ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: regmirror prewarm [--mirror URL] [--platform os/arch[/variant],...]\n"
            "                         [--all-platforms] [--parallel N]\n"
            "                         [--creds USER:PASS | --docker-config FILE] [--json]\n"
            "                         FILE|-\n"
            "\n"
            "Pull every image listed in FILE (one reference per line, '#' comments; '-' reads\n"
            "standard input) through the mirror, as a node would, so that the mirror caches\n"
            "the manifests and blobs. Blob bytes are verified and discarded.\n"
            "\n"
            "  --mirror URL          the mirror (default " DEFAULT_MIRROR ")\n"
            "  --platform LIST       platforms to take from multi-arch images\n"
            "                        (default: this machine's, e.g. linux/amd64)\n"
            "  --all-platforms       every platform of multi-arch images\n"
            "  --parallel N          blob transfers in flight, 1..64 (default 4)\n"
            "  --creds USER:PASS     credentials for registries that ask for them\n"
            "  --docker-config FILE  credentials from a Docker config.json, per registry\n"
            "  --json                one JSON document on stdout instead of the table\n"
            "  -h, --help            this text\n"
            "\n"
            "Exit status: 0 every image is cached, 1 some image failed, 2 usage error.\n");
}

static int is_plat_word(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len >= 32)
        return 0;
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* Parse "os/arch[/variant]" (len bytes) into p. 0 or UV_EINVAL. */
static int parse_one_platform(const char *s, size_t len, struct platform *p)
{
    const char *parts[3];
    size_t plen[3];
    size_t n = 0, i;
    const char *start = s;

    memset(p, 0, sizeof(*p));
    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '/') {
            if (n == 3)
                return UV_EINVAL;
            parts[n] = start;
            plen[n] = (size_t)(s + i - start);
            if (!is_plat_word(parts[n], plen[n]))
                return UV_EINVAL;
            n++;
            start = s + i + 1;
        }
    }
    if (n < 2)
        return UV_EINVAL;
    memcpy(p->os, parts[0], plen[0]);
    memcpy(p->arch, parts[1], plen[1]);
    if (n == 3)
        memcpy(p->variant, parts[2], plen[2]);
    return 0;
}

static int parse_platforms(struct opts *o, const char *list)
{
    const char *p = list, *comma;
    size_t len;

    for (;;) {
        comma = strchr(p, ',');
        len = comma ? (size_t)(comma - p) : strlen(p);
        if (o->n_platforms == MAX_PLATFORMS)
            return UV_E2BIG;
        if (parse_one_platform(p, len, &o->platforms[o->n_platforms]) < 0)
            return UV_EINVAL;
        o->n_platforms++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

/* This machine's platform, as Go (and so containerd) names it. */
static void host_platform(struct platform *p)
{
    static const struct {
        const char *machine, *arch, *variant;
    } map[] = {
        {"x86_64", "amd64", ""}, {"amd64", "amd64", ""},     {"aarch64", "arm64", ""},
        {"arm64", "arm64", ""},  {"armv7l", "arm", "v7"},    {"armv6l", "arm", "v6"},
        {"i686", "386", ""},     {"i386", "386", ""},        {"ppc64le", "ppc64le", ""},
        {"s390x", "s390x", ""},  {"riscv64", "riscv64", ""}, {"mips64", "mips64", ""},
    };
    struct utsname u;
    size_t i;

    memset(p, 0, sizeof(*p));
    memcpy(p->os, "linux", 6);
    memcpy(p->arch, "amd64", 6);
    if (uname(&u) != 0)
        return;
    for (i = 0; i < RGM_ARRAY_SIZE(map); i++) {
        if (strcmp(u.machine, map[i].machine) == 0) {
            (void)snprintf(p->arch, sizeof(p->arch), "%s", map[i].arch);
            (void)snprintf(p->variant, sizeof(p->variant), "%s", map[i].variant);
            return;
        }
    }
}

enum {
    OPT_MIRROR = 256,
    OPT_PLATFORM,
    OPT_ALL_PLATFORMS,
    OPT_PARALLEL,
    OPT_CREDS,
    OPT_DOCKER_CONFIG,
    OPT_JSON,
    OPT_HELP,
};

static const struct option long_opts[] = {
    {"mirror", required_argument, NULL, OPT_MIRROR},
    {"platform", required_argument, NULL, OPT_PLATFORM},
    {"all-platforms", no_argument, NULL, OPT_ALL_PLATFORMS},
    {"parallel", required_argument, NULL, OPT_PARALLEL},
    {"creds", required_argument, NULL, OPT_CREDS},
    {"docker-config", required_argument, NULL, OPT_DOCKER_CONFIG},
    {"json", no_argument, NULL, OPT_JSON},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

static int usage_error(const char *fmt, ...) RGM_PRINTF(1, 2);
static int usage_error(const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "regmirror prewarm: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'regmirror prewarm --help'.\n");
    return 2;
}

static int check_mirror(struct opts *o)
{
    rgm_url_t u;
    int is_v6;

    if (rgm_url_parse(o->mirror, &u) < 0)
        return usage_error("--mirror: not an http(s) URL: %s", o->mirror);
    if (strcmp(u.path, "/") != 0)
        return usage_error("--mirror: no path or query allowed: %s", o->mirror);
    is_v6 = strchr(u.host, ':') != NULL;
    if (snprintf(o->base, sizeof(o->base), "%s://%s%s%s:%d", u.is_https ? "https" : "http",
                 is_v6 ? "[" : "", u.host, is_v6 ? "]" : "", u.port) >= (int)sizeof(o->base))
        return usage_error("--mirror: too long");
    return 0;
}

/* 0 to run, 1 for --help (exit 0), 2 for a usage error (message printed). */
static int parse_args(int argc, char **argv, struct opts *o)
{
    uint64_t n;
    int c;

    o->mirror = DEFAULT_MIRROR;
    o->parallel = DEFAULT_PARALLEL;
    optind = 1;
    opterr = 1;
    for (;;) {
        c = getopt_long(argc, argv, "h", long_opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case OPT_MIRROR:
            o->mirror = optarg;
            break;
        case OPT_PLATFORM:
            if (parse_platforms(o, optarg) < 0)
                return usage_error("--platform: expected os/arch[/variant][,...]: %s", optarg);
            break;
        case OPT_ALL_PLATFORMS:
            o->is_all_platforms = 1;
            break;
        case OPT_PARALLEL:
            if (rgm_parse_uint(optarg, MAX_PARALLEL, &n) < 0 || n == 0)
                return usage_error("--parallel: expected 1..%d: %s", MAX_PARALLEL, optarg);
            o->parallel = (unsigned)n;
            break;
        case OPT_CREDS:
            o->creds = optarg;
            if (!strchr(optarg, ':') || optarg[0] == ':')
                return usage_error("--creds: expected USER:PASS");
            break;
        case OPT_DOCKER_CONFIG:
            o->docker_config = optarg;
            break;
        case OPT_JSON:
            o->is_json = 1;
            break;
        case 'h':
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "Try 'regmirror prewarm --help'.\n");
            return 2;
        }
    }
    if (optind >= argc)
        return usage_error("missing FILE (a list of images, or - for standard input)");
    if (optind + 1 < argc)
        return usage_error("unexpected argument '%s'", argv[optind + 1]);
    o->file = argv[optind];
    if (o->creds && o->docker_config)
        return usage_error("--creds and --docker-config are exclusive");
    if (o->is_all_platforms && o->n_platforms > 0)
        return usage_error("--platform and --all-platforms are exclusive");
    if (o->n_platforms == 0) {
        host_platform(&o->platforms[0]);
        o->n_platforms = 1;
    }
    return check_mirror(o);
}

/* ---- the list of images ---- */

/* Cut comments and surrounding blanks in place; returns the start of what is left. */
static char *clean_line(char *s)
{
    char *p, *end;

    s[strcspn(s, "\r\n")] = '\0';
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '#') {
        *s = '\0';
        return s;
    }
    for (p = s; *p; p++) {
        if (*p == '#' && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    }
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return s;
}

static int is_duplicate(const struct pw *pw, const char *name)
{
    size_t i;

    for (i = 0; i < pw->n_images; i++)
        if (!pw->images[i].is_bad_line && strcmp(pw->images[i].name, name) == 0)
            return 1;
    return 0;
}

/* Read the list. Bad lines become failed images (reported on stderr). 0, or 1 when the file
 * cannot be read (message printed). */
static int read_list(struct pw *pw, const char *file)
{
    const char *label = strcmp(file, "-") == 0 ? "stdin" : file;
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    char *line = NULL, *s;
    size_t cap = 0, cap_images = 0;
    unsigned lineno = 0;
    char err[256], why[300];
    struct image *img;
    rgm_ref_image_t ref;

    if (!f) {
        fprintf(stderr, "regmirror prewarm: %s: %s\n", file, strerror(errno));
        return 1;
    }
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        s = clean_line(line);
        if (*s == '\0')
            continue;
        if (pw->n_images == MAX_IMAGES) {
            fprintf(stderr, "regmirror prewarm: %s: more than %d images\n", label, MAX_IMAGES);
            break;
        }
        err[0] = '\0';
        if (rgm_ref_parse_image(s, &ref, err, sizeof(err)) == 0) {
            char name[RGM_REF_IMAGE_STR_MAX];
            if (rgm_ref_image_format(&ref, name, sizeof(name)) < 0 || is_duplicate(pw, name))
                continue;
        }
        if (pw->n_images == cap_images) {
            cap_images = cap_images ? cap_images * 2 : 16;
            pw->images = rgm_realloc(pw->images, cap_images * sizeof(*pw->images));
        }
        img = &pw->images[pw->n_images++];
        memset(img, 0, sizeof(*img));
        img->line = lineno;
        img->text = rgm_strdup(s);
        img->is_all_hit = 1;
        if (err[0] != '\0' || rgm_ref_parse_image(s, &img->ref, err, sizeof(err)) < 0) {
            img->is_bad_line = 1;
            img->is_done = 1;
            (void)snprintf(why, sizeof(why), "%s:%u: %s", label, lineno,
                           err[0] ? err : "invalid reference");
            img->error = rgm_strdup(why);
            (void)snprintf(img->name, sizeof(img->name), "%s", s);
            fprintf(stderr, "%s:%u: \"%s\": %s\n", label, lineno, s,
                    err[0] ? err : "invalid reference");
            continue;
        }
        if (rgm_ref_image_format(&img->ref, img->name, sizeof(img->name)) < 0)
            img->name[0] = '\0';
    }
    if (ferror(f)) {
        fprintf(stderr, "regmirror prewarm: %s: read error\n", label);
        free(line);
        if (f != stdin)
            fclose(f);
        return 1;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return 0;
}

/* ---- credentials ---- */

/* Credentials for registry, borrowed (*user NULL when there are none). */
static void creds_for(struct pw *pw, const char *registry, const char **user, const char **pass)
{
    struct cred *c;
    size_t i;
    char *u = NULL, *p = NULL;

    *user = NULL;
    *pass = NULL;
    for (i = 0; i < pw->n_creds; i++) {
        if (strcmp(pw->creds[i].registry, registry) == 0) {
            *user = pw->creds[i].user;
            *pass = pw->creds[i].pass;
            return;
        }
    }
    if (pw->o->creds) {
        const char *colon = strchr(pw->o->creds, ':');
        u = rgm_strndup(pw->o->creds, (size_t)(colon - pw->o->creds));
        p = rgm_strdup(colon + 1);
    } else if (pw->o->docker_config) {
        /* A small synchronous file read, once per registry: the loop has nothing else that
         * is latency-sensitive (we are the only client). */
        int err = rgm_auth_docker_config_lookup(pw->o->docker_config, registry, &u, &p);
        if (err < 0 && err != UV_ENOENT)
            fprintf(stderr, "regmirror prewarm: %s: %s\n", pw->o->docker_config, uv_strerror(err));
        if (err < 0) {
            u = NULL;
            p = NULL;
        }
    }
    pw->creds = rgm_realloc(pw->creds, (pw->n_creds + 1) * sizeof(*pw->creds));
    c = &pw->creds[pw->n_creds++];
    c->registry = rgm_strdup(registry);
    c->user = u;
    c->pass = p;
    *user = u;
    *pass = p;
}

static void auth_key(const char *registry, const char *repo, char *out, size_t len)
{
    (void)snprintf(out, len, "a|%s|%s", registry, repo);
}

/* ---- images ---- */

static void image_fail(struct image *img, const char *fmt, ...) RGM_PRINTF(2, 3);
static void image_fail(struct image *img, const char *fmt, ...)
{
    va_list ap;

    if (img->error)
        return;
    va_start(ap, fmt);
    img->error = vfmt(fmt, ap);
    va_end(ap);
}

static void image_check_done(struct pw *pw, struct image *img)
{
    if (img->is_done || img->n_pending > 0)
        return;
    img->is_done = 1;
    img->t_end = uv_hrtime();
    if (!img->is_started)
        img->t_start = img->t_end;
    rgm_prewarm_print_result_line(pw, img);
    pw->n_unfinished--;
    maybe_finish(pw);
}

/* ---- blobs ---- */

static size_t blob_hash(const char *digest)
{
    size_t h = 5381;

    for (; *digest; digest++)
        h = h * 33 + (unsigned char)*digest;
    return h % BLOB_BUCKETS;
}

static void blob_apply(struct blob *b, struct image *img)
{
    if (b->state == B_FAILED) {
        image_fail(img, "blob %s: %s", b->digest, b->error);
        return;
    }
    img->n_blobs_done++;
    if (!b->is_hit) {
        img->is_all_hit = 0;
        img->fetched_bytes += b->size;
    }
}

/* Reference blob (digest, size) from img; fetch it unless it is known. */
static void image_add_blob(struct pw *pw, struct image *img, const char *digest, uint64_t size)
{
    struct blob *b;
    size_t i, h = blob_hash(digest);

    for (i = 0; i < img->n_blobs; i++)
        if (strcmp(img->blobs[i]->digest, digest) == 0)
            return;
    for (b = pw->buckets[h]; b; b = b->hnext)
        if (strcmp(b->digest, digest) == 0)
            break;
    if (!b) {
        b = rgm_calloc(1, sizeof(*b));
        (void)snprintf(b->digest, sizeof(b->digest), "%s", digest);
        b->size = size;
        b->registry = img->ref.registry;
        b->repo = img->ref.repository;
        b->state = B_QUEUED;
        b->hnext = pw->buckets[h];
        pw->buckets[h] = b;
        if (pw->bq_tail)
            pw->bq_tail->qnext = b;
        else
            pw->bq_head = b;
        pw->bq_tail = b;
        pw->n_blobs++;
    }
    if (img->n_blobs == img->cap_blobs) {
        img->cap_blobs = img->cap_blobs ? img->cap_blobs * 2 : 8;
        img->blobs = rgm_realloc(img->blobs, img->cap_blobs * sizeof(*img->blobs));
    }
    img->blobs[img->n_blobs++] = b;
    img->total_bytes += size;
    if (b->state == B_DONE || b->state == B_FAILED) {
        blob_apply(b, img);
        return;
    }
    if (b->n_waiters == b->cap_waiters) {
        b->cap_waiters = b->cap_waiters ? b->cap_waiters * 2 : 4;
        b->waiters = rgm_realloc(b->waiters, b->cap_waiters * sizeof(*b->waiters));
    }
    b->waiters[b->n_waiters++] = img;
    img->n_pending++;
}

/* The blob's transfer ended: error NULL (verified) or a reason (copied). */
static void blob_finish(struct pw *pw, struct blob *b, int hit, const char *error)
{
    size_t i;

    b->state = error ? B_FAILED : B_DONE;
    b->is_hit = hit;
    if (error)
        b->error = rgm_strdup(error);
    else if (!hit)
        pw->n_blobs_fetched++;
    for (i = 0; i < b->n_waiters; i++) {
        struct image *img = b->waiters[i];
        blob_apply(b, img);
        img->n_pending--;
    }
    /* image_check_done may end the run; count first, then check. */
    for (i = 0; i < b->n_waiters; i++)
        image_check_done(pw, b->waiters[i]);
    RGM_FREE(b->waiters);
    b->n_waiters = 0;
    b->cap_waiters = 0;
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

/* The op could not complete: record the reason where it belongs, free the op. */
static void op_fail(struct op *op, const char *fmt, ...) RGM_PRINTF(2, 3);
static void op_fail(struct op *op, const char *fmt, ...)
{
    struct pw *pw = op->pw;
    char msg[1024];
    va_list ap;

    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    switch (op->kind) {
    case OP_MANIFEST:
        if (op->is_child)
            image_fail(op->img, "manifest %s (%s): %s", op->want, op->plat, msg);
        else
            image_fail(op->img, "manifest: %s", msg);
        pw->n_mf_inflight--;
        op->img->n_pending--;
        image_check_done(pw, op->img);
        break;
    case OP_HEAD:
    case OP_GET:
        pw->n_blob_inflight--;
        blob_finish(pw, op->blob, 0, msg);
        break;
    case OP_TOKEN:
        op_fail(op->parent, "%s", msg);
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
        op->md = EVP_MD_CTX_new();
        if (!op->md ||
            EVP_DigestInit_ex(
                op->md, strncmp(op->blob->digest, "sha512:", 7) == 0 ? EVP_sha512() : EVP_sha256(),
                NULL) != 1) {
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
    if (op->status == 200 && (op->kind == OP_MANIFEST || op->kind == OP_TOKEN)) {
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

/* "HTTP 404 MANIFEST_UNKNOWN: ..." for a non-200 answer. */
static void status_msg(struct op *op, char *out, size_t len)
{
    char oe[300];

    oci_error(&op->body, oe, sizeof(oe));
    (void)snprintf(out, len, "HTTP %d%s%s", op->status, oe[0] ? " " : "", oe);
}

static void on_done(rgm_upreq_t *r, int err, void *ud);

/* ---- auth ---- */

/* A 401 from the mirror: answer the challenge (token or Basic) and retry once. 0 when a retry
 * or a token request is under way, else <0 with the reason in op->err. */
static int answer_challenge(struct op *op, rgm_upreq_t *r)
{
    struct pw *pw = op->pw;
    const char *www = rgm_upreq_header(r, "www-authenticate");
    rgm_auth_challenge_t *ch = NULL, *pick = NULL;
    const char *user, *pass;
    char key[600], basic[1024], scope[RGM_AUTH_SCOPE_MAX], *url = NULL;
    struct op *tok;
    int n, i, rc = UV_EACCES;

    auth_key(op->registry, op->repo, key, sizeof(key));
    if (op->is_authz_cached)
        (void)rgm_auth_cache_del(pw->auth, key);
    if (op->n_auth >= 1) {
        (void)snprintf(op->err, sizeof(op->err), "unauthorized: credentials rejected");
        return UV_EACCES;
    }
    op->n_auth++;
    if (!www) {
        (void)snprintf(op->err, sizeof(op->err), "unauthorized (no challenge)");
        return UV_EACCES;
    }
    ch = rgm_calloc(MAX_CHALLENGES, sizeof(*ch));
    n = rgm_auth_parse_challenges(www, ch, MAX_CHALLENGES);
    for (i = 0; i < n && !pick; i++)
        if (ch[i].scheme == RGM_AUTH_SCHEME_BEARER)
            pick = &ch[i];
    for (i = 0; i < n && !pick; i++)
        if (ch[i].scheme == RGM_AUTH_SCHEME_BASIC)
            pick = &ch[i];
    if (!pick) {
        (void)snprintf(op->err, sizeof(op->err), "unauthorized (unsupported challenge)");
        goto out;
    }
    creds_for(pw, op->registry, &user, &pass);
    basic[0] = '\0';
    if (user && rgm_auth_basic_header(user, pass, basic, sizeof(basic)) < 0) {
        (void)snprintf(op->err, sizeof(op->err), "unusable credentials for %s", op->registry);
        goto out;
    }
    if (pick->scheme == RGM_AUTH_SCHEME_BASIC) {
        if (!user) {
            (void)snprintf(op->err, sizeof(op->err),
                           "unauthorized: %s wants credentials (--creds or --docker-config)",
                           op->registry);
            goto out;
        }
        rgm_auth_cache_put(pw->auth, key, basic, rgm_time_ms() + BASIC_TTL_MS);
        free(op->authz);
        op->authz = rgm_strdup(basic);
        op->is_authz_cached = 0;
        op_send_or_fail(op);
        rc = 0;
        goto out;
    }
    url = rgm_malloc(RGM_AUTH_REALM_MAX + 3 * RGM_AUTH_SCOPE_MAX + 3 * RGM_AUTH_SERVICE_MAX + 32);
    scope[0] = '\0';
    if (pick->scope[0] == '\0' && rgm_auth_pull_scope(op->repo, scope, sizeof(scope)) < 0)
        scope[0] = '\0';
    if (rgm_auth_token_url(pick, scope[0] ? scope : NULL, url,
                           RGM_AUTH_REALM_MAX + 3 * RGM_AUTH_SCOPE_MAX + 3 * RGM_AUTH_SERVICE_MAX +
                               32) < 0) {
        (void)snprintf(op->err, sizeof(op->err), "unauthorized (bad token realm)");
        goto out;
    }
    tok = op_new(pw, OP_TOKEN, op->registry, op->repo, url);
    url = NULL;
    tok->parent = op;
    if (basic[0])
        tok->authz = rgm_strdup(basic);
    op_send_or_fail(tok);
    rc = 0;
out:
    free(url);
    free(ch);
    return rc;
}

static void token_done(struct op *op, int err)
{
    struct op *parent = op->parent;
    struct pw *pw = op->pw;
    rgm_auth_token_t tok = {0};
    char key[600], msg[400], *val;
    size_t len;

    if (err < 0) {
        op_fail(op, "token request: %s", op->err[0] ? op->err : uv_strerror(err));
        return;
    }
    if (op->status != 200) {
        status_msg(op, msg, sizeof(msg));
        op_fail(op, "token request: %s%s", msg, op->status == 401 ? " (credentials rejected)" : "");
        return;
    }
    if (rgm_auth_parse_token_response(op->body.data ? op->body.data : "", op->body.len,
                                      rgm_time_ms(), &tok) < 0) {
        op_fail(op, "token request: unusable answer");
        return;
    }
    len = strlen(tok.token) + 8;
    val = rgm_malloc(len);
    (void)snprintf(val, len, "Bearer %s", tok.token);
    auth_key(op->registry, op->repo, key, sizeof(key));
    rgm_auth_cache_put(pw->auth, key, val, tok.expires_ms);
    rgm_auth_token_clear(&tok);
    free(parent->authz);
    parent->authz = val;
    parent->is_authz_cached = 0;
    op->parent = NULL;
    op_free(op);
    op_send_or_fail(parent);
}

/* ---- manifests ---- */

static int platform_matches(const struct platform *want, json_t *p)
{
    const char *os = json_string_value(json_object_get(p, "os"));
    const char *arch = json_string_value(json_object_get(p, "architecture"));
    const char *variant = json_string_value(json_object_get(p, "variant"));

    if (!os || !arch || strcmp(os, want->os) != 0 || strcmp(arch, want->arch) != 0)
        return 0;
    if (want->variant[0] == '\0')
        return 1;
    if (!variant)
        variant = "";
    if (strcmp(variant, want->variant) == 0)
        return 1;
    /* arm64 has one variant in practice: "" and "v8" are the same. */
    return strcmp(want->arch, "arm64") == 0 && (strcmp(variant, "v8") == 0 || variant[0] == '\0') &&
           strcmp(want->variant, "v8") == 0;
}

static void desc_platform(json_t *d, char *out, size_t len)
{
    json_t *p = json_object_get(d, "platform");
    const char *os = json_string_value(json_object_get(p, "os"));
    const char *arch = json_string_value(json_object_get(p, "architecture"));
    const char *variant = json_string_value(json_object_get(p, "variant"));

    (void)snprintf(out, len, "%s/%s%s%s", os ? os : "?", arch ? arch : "?",
                   variant && variant[0] ? "/" : "", variant ? variant : "");
}

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
    char plat[100], have[400];
    size_t n_chosen = 0, i, j, k;
    json_t *d;

    if (op->is_child) {
        image_fail(img, "manifest %s: nested index not supported", op->want);
        return UV_EINVAL;
    }
    json_array_foreach(list, i, d)
    {
        int pick = pw->o->is_all_platforms;
        for (k = 0; !pick && k < pw->o->n_platforms; k++)
            pick = platform_matches(&pw->o->platforms[k], json_object_get(d, "platform"));
        for (j = 0; pick && j < n_chosen; j++)
            if (json_equal(json_object_get(chosen[j], "digest"), json_object_get(d, "digest")))
                pick = 0;
        if (pick && n_chosen < RGM_ARRAY_SIZE(chosen))
            chosen[n_chosen++] = d;
    }
    for (k = 0; !pw->o->is_all_platforms && k < pw->o->n_platforms; k++) {
        int found = 0;
        for (j = 0; j < n_chosen && !found; j++)
            found = platform_matches(&pw->o->platforms[k], json_object_get(chosen[j], "platform"));
        if (!found) {
            have[0] = '\0';
            json_array_foreach(list, i, d)
            {
                size_t len = strlen(have);
                desc_platform(d, plat, sizeof(plat));
                (void)snprintf(have + len, sizeof(have) - len, "%s%s", len ? ", " : "", plat);
            }
            platform_str(&pw->o->platforms[k], plat, sizeof(plat));
            image_fail(img, "no manifest for platform %s (the index has: %s)", plat, have);
            return UV_ENOENT;
        }
    }
    for (j = 0; j < n_chosen; j++) {
        const char *digest = json_string_value(json_object_get(chosen[j], "digest"));
        json_t *size = json_object_get(chosen[j], "size");
        if (!digest || !rgm_ref_valid_digest(digest) || !json_is_integer(size)) {
            image_fail(img, "index: bad manifest descriptor");
            return UV_EINVAL;
        }
        desc_platform(chosen[j], plat, sizeof(plat));
        append_platform(img, plat);
        start_manifest(pw, img, digest, (int64_t)json_integer_value(size), plat);
    }
    return 0;
}

static int add_descriptor(struct pw *pw, struct image *img, json_t *d)
{
    const char *digest = json_string_value(json_object_get(d, "digest"));
    const char *mt = json_string_value(json_object_get(d, "mediaType"));
    json_t *size = json_object_get(d, "size");

    if (!digest || !rgm_ref_valid_digest(digest) || !json_is_integer(size) ||
        json_integer_value(size) < 0) {
        image_fail(img, "manifest: bad descriptor");
        return UV_EINVAL;
    }
    /* Foreign (non-distributable) layers are not served by registries. */
    if (mt && strstr(mt, "foreign") != NULL)
        return 0;
    image_add_blob(pw, img, digest, (uint64_t)json_integer_value(size));
    return 0;
}

static int handle_manifest(struct pw *pw, struct op *op, json_t *root)
{
    struct image *img = op->img;
    json_t *layers = json_object_get(root, "layers");
    json_t *d;
    size_t i;

    if (!json_is_array(layers) || !json_is_object(json_object_get(root, "config"))) {
        image_fail(img, "manifest: neither an image manifest nor an index (schema 1?)");
        return UV_EINVAL;
    }
    if (add_descriptor(pw, img, json_object_get(root, "config")) < 0)
        return UV_EINVAL;
    json_array_foreach(layers, i, d)
    {
        if (add_descriptor(pw, img, d) < 0)
            return UV_EINVAL;
        img->n_layers++;
    }
    return 0;
}

/* Check the body against the pinned digest and Docker-Content-Digest; set img->digest. */
static int verify_manifest(struct op *op, rgm_upreq_t *r)
{
    const char *dcd = rgm_upreq_header(r, "docker-content-digest");
    char got[RGM_REF_DIGEST_MAX + 1];
    const char *body = op->body.data ? op->body.data : "";

    got[0] = '\0';
    if (op->want_size >= 0 && (uint64_t)op->want_size != op->body.len) {
        (void)snprintf(op->err, sizeof(op->err), "%zu bytes, the index says %" PRId64, op->body.len,
                       op->want_size);
        return UV_EINVAL;
    }
    if (op->want[0]) {
        if (digest_of(op->want, body, op->body.len, got, sizeof(got)) < 0 ||
            strcmp(got, op->want) != 0) {
            (void)snprintf(op->err, sizeof(op->err), "digest mismatch: got %s", got);
            return UV_EINVAL;
        }
    }
    if (dcd && rgm_ref_valid_digest(dcd)) {
        if (digest_of(dcd, body, op->body.len, got, sizeof(got)) < 0 || strcmp(got, dcd) != 0) {
            (void)snprintf(op->err, sizeof(op->err),
                           "digest mismatch: body is %s, Docker-Content-Digest says %s", got, dcd);
            return UV_EINVAL;
        }
    } else if (!op->want[0] && digest_of(NULL, body, op->body.len, got, sizeof(got)) < 0) {
        return UV_EIO;
    }
    if (!op->is_child)
        (void)snprintf(op->img->digest, sizeof(op->img->digest), "%s",
                       op->want[0] ? op->want : (dcd && rgm_ref_valid_digest(dcd) ? dcd : got));
    return 0;
}

static void manifest_done(struct op *op, rgm_upreq_t *r, int err)
{
    struct pw *pw = op->pw;
    struct image *img = op->img;
    json_t *root = NULL, *list;
    char msg[400];

    if (err < 0) {
        op_fail(op, "%s", op->err[0] ? op->err : uv_strerror(err));
        return;
    }
    if (op->status != 200) {
        status_msg(op, msg, sizeof(msg));
        op_fail(op, "%s", msg);
        return;
    }
    if (verify_manifest(op, r) < 0) {
        op_fail(op, "%s", op->err);
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
    if (!img->error) {
        list = json_object_get(root, "manifests");
        if (json_is_array(list))
            (void)handle_index(pw, op, list);
        else
            (void)handle_manifest(pw, op, root);
    }
    json_decref(root);
    pw->n_mf_inflight--;
    img->n_pending--;
    image_check_done(pw, img);
    op_free(op);
    pump(pw);
}

static void start_manifest(struct pw *pw, struct image *img, const char *digest, int64_t size,
                           const char *plat)
{
    const char *ref = digest ? digest : rgm_ref_image_reference(&img->ref);
    struct op *op;
    char *url = api_url(pw, img->ref.registry, img->ref.repository, "manifests", ref);

    if (!url) {
        image_fail(img, "URL too long");
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
    img->n_pending++;
    if (pw->mq_tail)
        pw->mq_tail->qnext = op;
    else
        pw->mq_head = op;
    pw->mq_tail = op;
}

/* ---- blob transfers ---- */

static void head_done(struct op *op, rgm_upreq_t *r, int err)
{
    struct pw *pw = op->pw;
    struct blob *b = op->blob;
    int64_t cl;

    if (err == 0 && op->status == 200 && is_hit(rgm_upreq_header(r, "x-cache"))) {
        cl = rgm_upreq_content_length(r);
        if (cl < 0 || (uint64_t)cl == b->size) {
            pw->n_blob_inflight--;
            blob_finish(pw, b, 1, NULL);
            op_free(op);
            pump(pw);
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
    unsigned char h[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1], msg[400];
    const char *colon = strchr(b->digest, ':');
    unsigned hlen = 0;

    if (err < 0) {
        op_fail(op, "%s", op->err[0] ? op->err : uv_strerror(err));
        return;
    }
    if (op->status != 200) {
        status_msg(op, msg, sizeof(msg));
        op_fail(op, "%s", msg);
        return;
    }
    if (op->n_bytes != b->size) {
        op_fail(op, "got %" PRIu64 " bytes, the descriptor says %" PRIu64, op->n_bytes, b->size);
        return;
    }
    if (!op->md || EVP_DigestFinal_ex(op->md, h, &hlen) != 1) {
        op_fail(op, "cannot hash");
        return;
    }
    rgm_hex(h, hlen, hex);
    if (!colon || strcmp(colon + 1, hex) != 0) {
        op_fail(op, "digest mismatch: the bytes hash to %s:%s",
                strncmp(b->digest, "sha512:", 7) == 0 ? "sha512" : "sha256", hex);
        return;
    }
    pw->fetched_bytes += op->n_bytes;
    pw->n_blob_inflight--;
    blob_finish(pw, b, 0, NULL);
    op_free(op);
    pump(pw);
}

static void on_done(rgm_upreq_t *r, int err, void *ud)
{
    struct op *op = ud;

    op->req = NULL;
    if (err == 0 && op->status == 401 && op->kind != OP_TOKEN) {
        if (answer_challenge(op, r) < 0)
            op_fail(op, "%s", op->err);
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
    }
}

static const rgm_upreq_cbs_t op_cbs = {on_head, on_body, on_done};

/* Send op's request; on a failure to start, fail the op. */
static void op_send_or_fail(struct op *op)
{
    struct pw *pw = op->pw;
    const char *cached;
    char key[600];
    rgm_upreq_t *r;
    int err;

    if (op->kind != OP_TOKEN && !op->authz) {
        auth_key(op->registry, op->repo, key, sizeof(key));
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
    if (op->authz)
        rgm_upreq_add_header(r, "Authorization", op->authz);
    op->status = 0;
    op->err[0] = '\0';
    op->req = r;
    err = rgm_upreq_start(r, &op_cbs, op);
    if (err < 0) {
        op->req = NULL;
        op_fail(op, "%s", uv_strerror(err));
    }
}

/* Start queued manifests and blobs up to the limits. */
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
        b = pw->bq_head;
        pw->bq_head = b->qnext;
        if (!pw->bq_head)
            pw->bq_tail = NULL;
        b->qnext = NULL;
        b->state = B_RUNNING;
        pw->n_blob_inflight++;
        url = api_url(pw, b->registry, b->repo, "blobs", b->digest);
        if (!url) {
            pw->n_blob_inflight--;
            blob_finish(pw, b, 0, "URL too long");
            continue;
        }
        op = op_new(pw, OP_HEAD, b->registry, b->repo, url);
        op->blob = b;
        op_send_or_fail(op);
    }
}

/* ---- the run ---- */

static void on_timer(uv_timer_t *t)
{
    struct pw *pw = rgm_container_of(t, struct pw, timer);

    rgm_prewarm_render(pw);
}

static void on_client_closed(void *ud)
{
    (void)ud;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct pw *pw = rgm_container_of((uv_timer_t *)h, struct pw, timer);

    pw->is_timer_open = 0;
}

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

static void pw_free(struct pw *pw)
{
    size_t i;

    for (i = 0; i < BLOB_BUCKETS; i++) {
        struct blob *b = pw->buckets[i], *next;
        for (; b; b = next) {
            next = b->hnext;
            free(b->waiters);
            free(b->error);
            free(b);
        }
    }
    for (i = 0; i < pw->n_images; i++) {
        free(pw->images[i].text);
        free(pw->images[i].error);
        free(pw->images[i].blobs);
    }
    free(pw->images);
    for (i = 0; i < pw->n_creds; i++) {
        free(pw->creds[i].registry);
        free(pw->creds[i].user);
        free(pw->creds[i].pass);
    }
    free(pw->creds);
    rgm_auth_cache_free(pw->auth);
}

static int run(struct pw *pw)
{
    rgm_client_opts_t copts = {0};
    uv_loop_t loop;
    size_t i;
    int err, rc = 0;

    err = uv_loop_init(&loop);
    if (err < 0) {
        fprintf(stderr, "regmirror prewarm: %s\n", uv_strerror(err));
        return 1;
    }
    copts.max_conns_per_origin = pw->o->parallel * 2 + 2;
    copts.max_idle_per_origin = pw->o->parallel * 2 + 2;
    pw->client = rgm_client_new(&loop, &copts);
    pw->auth = rgm_auth_cache_new(0);
    pw->t0 = uv_hrtime();
    pw->rate_last_t = pw->t0;
    if (pw->is_tty) {
        err = uv_timer_init(&loop, &pw->timer);
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
            image_check_done(pw, img);
    }
    pump(pw);
    maybe_finish(pw);
    err = uv_run(&loop, UV_RUN_DEFAULT);
    (void)err;
    RGM_BUG_ON(pw->n_ops != 0);
    err = uv_loop_close(&loop);
    if (err < 0) {
        fprintf(stderr, "regmirror prewarm: loop not closed cleanly: %s\n", uv_strerror(err));
        rc = 1;
    }
    for (i = 0; i < pw->n_images; i++)
        if (pw->images[i].error)
            rc = 1;
    if (pw->o->is_json)
        rgm_prewarm_print_json(pw, uv_hrtime() - pw->t0);
    else
        rgm_prewarm_print_table(pw, uv_hrtime() - pw->t0);
    return rc;
}

int rgm_cmd_prewarm(int argc, char **argv)
{
    struct opts o;
    struct pw pw;
    int rc;

    memset(&o, 0, sizeof(o));
    memset(&pw, 0, sizeof(pw));
    rc = parse_args(argc, argv, &o);
    if (rc == 1)
        return 0;
    if (rc != 0)
        return 2;
    pw.o = &o;
    pw.is_tty = !o.is_json && isatty(STDOUT_FILENO);
    if (read_list(&pw, o.file) != 0) {
        pw_free(&pw);
        return 1;
    }
    rc = run(&pw);
    pw_free(&pw);
    return rc;
}
