/* regmirror prewarm: pull a list of images through a mirror exactly as a node would
 * (manifests by tag or digest, the chosen platforms of an index, config and layers), so that
 * the mirror's cache holds them before a rollout. Manifests are buffered and verified; blobs
 * are streamed through a hash and discarded. It stores nothing itself and never talks to a
 * registry directly, except to the token realm a 401 challenge names. This file is the
 * command line and the loop; the work is in prewarm-plan.c, prewarm-run.c and the others. */
#include "config.h"

#include "cmd/cmd.h"
#include "cmd/prewarm-int.h"

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "core/common.h"
#include "core/util.h"
#include "registry/auth.h"

#define DEFAULT_MIRROR   "http://127.0.0.1:5000"
#define DEFAULT_PARALLEL 4
#define MAX_PARALLEL     64

/* ---- arguments ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: regmirror prewarm [--mirror URL] [--platform os/arch[/variant],...]\n"
            "                         [--all-platforms] [--parallel N]\n"
            "                         [--creds USER:PASS | --docker-config FILE] [--json]\n"
            "                         [--with-referrers]\n"
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
            "  --with-referrers      also warm each image's signatures and attestations\n"
            "                        (the referrers API, then the fallback tags)\n"
            "  -h, --help            this text\n"
            "\n"
            "Exit status: 0 every image is cached, 1 some image failed, 2 usage error.\n");
}

enum {
    OPT_MIRROR = 256,
    OPT_PLATFORM,
    OPT_ALL_PLATFORMS,
    OPT_PARALLEL,
    OPT_CREDS,
    OPT_DOCKER_CONFIG,
    OPT_JSON,
    OPT_WITH_REFERRERS,
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
    {"with-referrers", no_argument, NULL, OPT_WITH_REFERRERS},
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
            if (rgm_prewarm_platforms_parse(o, optarg) < 0)
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
        case OPT_WITH_REFERRERS:
            o->with_referrers = 1;
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
        rgm_prewarm_platform_host(&o->platforms[0]);
        o->n_platforms = 1;
    }
    return check_mirror(o);
}

/* ---- the run ---- */

static void pw_free(struct pw *pw)
{
    rgm_prewarm_plan_free(pw);
    rgm_prewarm_auth_free(pw);
    rgm_auth_cache_free(pw->auth);
}

static int run(struct pw *pw)
{
    uv_loop_t loop;
    size_t i;
    int err, rc = 0;

    err = uv_loop_init(&loop);
    if (err < 0) {
        fprintf(stderr, "regmirror prewarm: %s\n", uv_strerror(err));
        return 1;
    }
    rgm_prewarm_run_start(pw, &loop);
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
    if (rgm_prewarm_plan_read_list(&pw, o.file) < 0) {
        pw_free(&pw);
        return 1;
    }
    rc = run(&pw);
    pw_free(&pw);
    return rc;
}
