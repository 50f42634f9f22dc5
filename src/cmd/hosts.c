/* regmirror hosts: write containerd hosts.toml files (one per registry, config_path layout
 * <out>/<registry>/hosts.toml) that send pulls through a mirror first and fall back to the real
 * registry. Each file is written to a temp file and renamed, so containerd never reads half a
 * file. It does not talk to the mirror or to containerd. */
#include "config.h"

#include "cmd/cmd.h"

#include <errno.h>
#include <getopt.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <fcntl.h>
#include <unistd.h>
#include <uv.h>

#include "core/common.h"
#include "core/config.h"
#include "core/util.h"

#define MAX_REGISTRIES 64
#define DEFAULT_NS     "_default"

struct hosts_opts {
    const char *mirror;   /* as given */
    char mirror_url[300]; /* normalised: scheme://host[:port] */
    int mirror_https;
    const char *registries[MAX_REGISTRIES];
    size_t registries_len;
    int is_all;
    int is_default;
    const char *out;
    char out_buf[4096]; /* out without trailing slashes */
    int cap_pull;
    int cap_resolve;
    int cap_referrers;      /* containerd 2.2+; older ones refuse unknown capabilities */
    int has_referrers_flag; /* --referrers, whatever --capabilities says */
    int skip_verify;
    const char *ca;
    const char *server_override;
};

static void usage(FILE *out)
{
    fprintf(out, "usage: regmirror hosts --mirror URL [--registry NAME]... [--all] [--default]\n"
                 "                       --out DIR [--capabilities pull,resolve] [--referrers]\n"
                 "                       [--skip-verify] [--ca FILE] [--server-override URL]\n"
                 "\n"
                 "Write containerd hosts.toml files that send pulls through the mirror first and\n"
                 "fall back to the real registry (DIR/<NAME>/hosts.toml; point containerd's\n"
                 "registry config_path at DIR, usually /etc/containerd/certs.d).\n"
                 "\n"
                 "  --mirror URL            the mirror, http:// or https://host[:port] (required)\n"
                 "  --registry NAME         a registry host[:port] to configure; repeatable\n"
                 "                          (default when no registry is named: docker.io)\n"
                 "  --all                   every registry of the embedded default config\n"
                 "  --default               also write DIR/_default/hosts.toml: every other\n"
                 "                          registry goes through the mirror too\n"
                 "  --out DIR               the containerd hosts directory (required)\n"
                 "  --capabilities LIST     of pull,resolve,referrers (default: pull,resolve)\n"
                 "  --referrers             add the referrers capability (OCI 1.1 referrers API\n"
                 "                          through the mirror); needs containerd 2.2 or later,\n"
                 "                          older ones reject the file\n"
                 "  --skip-verify           https mirror: do not verify its certificate\n"
                 "  --ca FILE               https mirror: CA file (absolute path on the node)\n"
                 "  --server-override URL   fallback server instead of the real registry\n"
                 "  -h, --help              this text\n"
                 "\n"
                 "Exit status: 0 written, 1 I/O error, 2 usage error.\n");
}

/* ---- validation ---- */

/* A registry host as containerd names its hosts directory: DNS labels or an IPv4 address,
 * optional :port. No IPv6 literal: "[::1]:5000" is not a portable directory name. */
static int is_valid_registry(const char *name)
{
    const char *p = name;
    size_t label_len = 0, host_len = 0;
    char prev = '.';
    uint64_t port;

    for (; *p && *p != ':'; p++, host_len++) {
        char c = *p;
        if (c == '.') {
            if (label_len == 0 || prev == '-')
                return 0;
            label_len = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
            label_len++;
        } else if (c == '-') {
            if (label_len == 0)
                return 0;
            label_len++;
        } else {
            return 0;
        }
        if (label_len > 63)
            return 0;
        prev = c;
    }
    if (host_len == 0 || host_len > 253 || label_len == 0 || prev == '-')
        return 0;
    if (*p == ':') {
        if (rgm_parse_uint(p + 1, 65535, &port) < 0 || port == 0)
            return 0;
    }
    return 1;
}

static int is_docker_hub(const char *name)
{
    return rgm_strcaseeq(name, "docker.io") || rgm_strcaseeq(name, "index.docker.io") ||
           rgm_strcaseeq(name, "registry-1.docker.io");
}

/* Normalise the mirror URL into o->mirror_url. 0 or UV_EINVAL with a message on stderr. */
static int parse_mirror(struct hosts_opts *o)
{
    rgm_url_t u;
    int n, is_v6;

    if (rgm_url_parse(o->mirror, &u) < 0) {
        fprintf(stderr, "regmirror hosts: --mirror: not an http(s) URL: %s\n", o->mirror);
        return UV_EINVAL;
    }
    if (strcmp(u.path, "/") != 0) {
        /* containerd appends /v2/... to the host URL; the mirror serves from the root. */
        fprintf(stderr, "regmirror hosts: --mirror: the URL must not have a path or query: %s\n",
                o->mirror);
        return UV_EINVAL;
    }
    is_v6 = strchr(u.host, ':') != NULL;
    if (u.port == (u.is_https ? 443 : 80))
        n = snprintf(o->mirror_url, sizeof(o->mirror_url), "%s://%s%s%s",
                     u.is_https ? "https" : "http", is_v6 ? "[" : "", u.host, is_v6 ? "]" : "");
    else
        n = snprintf(o->mirror_url, sizeof(o->mirror_url), "%s://%s%s%s:%d",
                     u.is_https ? "https" : "http", is_v6 ? "[" : "", u.host, is_v6 ? "]" : "",
                     u.port);
    if (n < 0 || (size_t)n >= sizeof(o->mirror_url))
        return UV_EINVAL;
    o->mirror_https = u.is_https;
    return 0;
}

static int parse_capabilities(struct hosts_opts *o, const char *list)
{
    const char *p = list;
    size_t len;

    o->cap_pull = 0;
    o->cap_resolve = 0;
    o->cap_referrers = 0;
    for (;;) {
        len = strcspn(p, ",");
        if (len == 4 && memcmp(p, "pull", 4) == 0 && !o->cap_pull) {
            o->cap_pull = 1;
        } else if (len == 7 && memcmp(p, "resolve", 7) == 0 && !o->cap_resolve) {
            o->cap_resolve = 1;
        } else if (len == 9 && memcmp(p, "referrers", 9) == 0 && !o->cap_referrers) {
            o->cap_referrers = 1;
        } else {
            /* push is refused on purpose: the mirror is read-only (405 on writes). */
            fprintf(stderr,
                    "regmirror hosts: --capabilities: '%.*s': expected a list of "
                    "pull,resolve,referrers\n",
                    (int)len, p);
            return UV_EINVAL;
        }
        if (p[len] == '\0')
            break;
        p += len + 1;
    }
    return 0;
}

static int add_registry(struct hosts_opts *o, const char *name)
{
    size_t i;

    if (!is_valid_registry(name)) {
        fprintf(stderr, "regmirror hosts: --registry: not a registry host[:port]: '%s'\n", name);
        return UV_EINVAL;
    }
    for (i = 0; i < o->registries_len; i++)
        if (rgm_strcaseeq(o->registries[i], name))
            return 0;
    if (o->registries_len == MAX_REGISTRIES) {
        fprintf(stderr, "regmirror hosts: too many registries (at most %d)\n", MAX_REGISTRIES);
        return UV_EINVAL;
    }
    o->registries[o->registries_len++] = name;
    return 0;
}

/* ---- writing ---- */

/* s as a TOML basic string (quotes included) into out. 0 or UV_EINVAL (control characters,
 * which have no place in a path or URL here) / UV_ENOBUFS. */
static int toml_quote(const char *s, char *out, size_t outlen)
{
    size_t o = 0;

    if (outlen < 3)
        return UV_ENOBUFS;
    out[o++] = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            return UV_EINVAL;
        if (o + 4 > outlen)
            return UV_ENOBUFS;
        if (c == '"' || c == '\\')
            out[o++] = '\\';
        out[o++] = (char)c;
    }
    out[o++] = '"';
    out[o] = '\0';
    return 0;
}

/* mkdir -p with mode 0755 for the directories it creates. */
static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path), i;

    if (len == 0 || len >= sizeof(buf))
        return UV_ENAMETOOLONG;
    memcpy(buf, path, len + 1);
    for (i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0755) == 0) {
            if (chmod(buf, 0755) < 0) /* umask must not make it unreadable for containerd */
                return -errno;
        } else if (errno != EEXIST) {
            return -errno;
        }
        if (i < len)
            buf[i] = '/';
    }
    return 0;
}

/* The file's text for one namespace (name NULL: _default) into out. 0 or <0. */
static int render(const struct hosts_opts *o, const char *name, char *out, size_t outlen)
{
    char server[600], ca[4200], qserver[1300];
    size_t n = 0;
    int r;

#define APPEND(...)                                                                                \
    do {                                                                                           \
        r = snprintf(out + n, outlen - n, __VA_ARGS__);                                            \
        if (r < 0 || (size_t)r >= outlen - n)                                                      \
            return UV_ENOBUFS;                                                                     \
        n += (size_t)r;                                                                            \
    } while (0)

    APPEND("# written by regmirror hosts\n");
    server[0] = '\0';
    if (o->server_override) {
        r = snprintf(server, sizeof(server), "%s", o->server_override);
    } else if (!name) {
        /* _default: no server line, containerd then falls back to the registry the image
         * names (docker.io: registry-1.docker.io), see containerd docs/hosts.md. */
        r = 0;
    } else if (is_docker_hub(name)) {
        r = snprintf(server, sizeof(server), "https://registry-1.docker.io");
    } else {
        r = snprintf(server, sizeof(server), "https://%s", name);
    }
    if (r < 0 || (size_t)r >= sizeof(server))
        return UV_ENOBUFS;
    if (server[0]) {
        r = toml_quote(server, qserver, sizeof(qserver));
        if (r < 0)
            return r;
        APPEND("server = %s\n", qserver);
    }
    APPEND("\n[host.\"%s\"]\n", o->mirror_url);
    APPEND("  capabilities = [%s%s%s%s%s]\n", o->cap_pull ? "\"pull\"" : "",
           o->cap_pull && o->cap_resolve ? ", " : "", o->cap_resolve ? "\"resolve\"" : "",
           o->cap_referrers && (o->cap_pull || o->cap_resolve) ? ", " : "",
           o->cap_referrers ? "\"referrers\"" : "");
    if (o->ca) {
        r = toml_quote(o->ca, ca, sizeof(ca));
        if (r < 0)
            return r;
        APPEND("  ca = %s\n", ca);
    }
    if (o->skip_verify)
        APPEND("  skip_verify = true\n");
#undef APPEND
    return 0;
}

/* Write <out>/<dir>/hosts.toml atomically (temp file in the same directory, fsync, rename). */
static int write_hosts_file(const struct hosts_opts *o, const char *dir, const char *text,
                            char *path, size_t pathlen)
{
    char dirpath[4096], tmp[4200];
    int fd = -1, r, n;

    n = snprintf(dirpath, sizeof(dirpath), "%s%s%s", o->out, strcmp(o->out, "/") == 0 ? "" : "/",
                 dir);
    if (n < 0 || (size_t)n >= sizeof(dirpath))
        return UV_ENAMETOOLONG;
    n = snprintf(path, pathlen, "%s/hosts.toml", dirpath);
    if (n < 0 || (size_t)n >= pathlen)
        return UV_ENAMETOOLONG;
    n = snprintf(tmp, sizeof(tmp), "%s/.hosts.toml.XXXXXX", dirpath);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return UV_ENAMETOOLONG;
    r = mkdir_p(dirpath);
    if (r < 0)
        return r;
    fd = mkstemp(tmp);
    if (fd < 0)
        return -errno;
    if (RGM_FAULT("hosts.write")) {
        r = UV_EIO;
        goto fail_tmp;
    }
    r = rgm_write_all(fd, text, strlen(text));
    if (r < 0)
        goto fail_tmp;
    if (fchmod(fd, 0644) < 0 || fsync(fd) < 0) {
        r = -errno;
        goto fail_tmp;
    }
    r = close(fd);
    fd = -1;
    if (r < 0) {
        r = -errno;
        goto fail_tmp;
    }
    if (rename(tmp, path) < 0) {
        r = -errno;
        goto fail_tmp;
    }
    return 0;

fail_tmp:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return r;
}

static int write_one(const struct hosts_opts *o, const char *name)
{
    char text[8192], path[4200];
    int r;

    r = render(o, name, text, sizeof(text));
    if (r < 0) {
        fprintf(stderr, "regmirror hosts: %s: cannot render: %s\n", name ? name : DEFAULT_NS,
                uv_strerror(r));
        return 2;
    }
    r = write_hosts_file(o, name ? name : DEFAULT_NS, text, path, sizeof(path));
    if (r < 0) {
        fprintf(stderr, "regmirror hosts: %s/%s/hosts.toml: %s\n", o->out, name ? name : DEFAULT_NS,
                uv_strerror(r));
        return 1;
    }
    printf("wrote %s\n", path);
    return 0;
}

/* ---- command ---- */

enum {
    OPT_MIRROR = 'm',
    OPT_REGISTRY = 'r',
    OPT_OUT = 'o',
    OPT_HELP = 'h',
    OPT_ALL = 256,
    OPT_DEFAULT,
    OPT_CAPS,
    OPT_SKIP_VERIFY,
    OPT_CA,
    OPT_SERVER_OVERRIDE,
    OPT_REFERRERS,
};

static const struct option long_opts[] = {
    {"mirror", required_argument, NULL, OPT_MIRROR},
    {"registry", required_argument, NULL, OPT_REGISTRY},
    {"all", no_argument, NULL, OPT_ALL},
    {"default", no_argument, NULL, OPT_DEFAULT},
    {"out", required_argument, NULL, OPT_OUT},
    {"capabilities", required_argument, NULL, OPT_CAPS},
    {"skip-verify", no_argument, NULL, OPT_SKIP_VERIFY},
    {"ca", required_argument, NULL, OPT_CA},
    {"server-override", required_argument, NULL, OPT_SERVER_OVERRIDE},
    {"referrers", no_argument, NULL, OPT_REFERRERS},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

/* Parse argv into o. 0, 1 for --help (exit 0), or 2 for a usage error (message printed). */
static int parse_args(int argc, char **argv, struct hosts_opts *o)
{
    int c;

    optind = 1;
    opterr = 1;
    for (;;) {
        c = getopt_long(argc, argv, "+hm:r:o:", long_opts, NULL);
        if (c == -1)
            break;
        switch (c) {
        case OPT_MIRROR:
            o->mirror = optarg;
            break;
        case OPT_REGISTRY:
            if (add_registry(o, optarg) < 0)
                return 2;
            break;
        case OPT_ALL:
            o->is_all = 1;
            break;
        case OPT_DEFAULT:
            o->is_default = 1;
            break;
        case OPT_OUT:
            o->out = optarg;
            break;
        case OPT_CAPS:
            if (parse_capabilities(o, optarg) < 0)
                return 2;
            break;
        case OPT_SKIP_VERIFY:
            o->skip_verify = 1;
            break;
        case OPT_CA:
            o->ca = optarg;
            break;
        case OPT_SERVER_OVERRIDE:
            o->server_override = optarg;
            break;
        case OPT_REFERRERS:
            o->has_referrers_flag = 1;
            break;
        case OPT_HELP:
            usage(stdout);
            return 1;
        default:
            fprintf(stderr, "Try 'regmirror hosts --help'.\n");
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "regmirror hosts: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    return 0;
}

/* Cross-option checks after parsing. 0 or 2 (message printed). */
static int check_opts(struct hosts_opts *o)
{
    rgm_url_t u;
    size_t len;

    if (!o->mirror || !o->out) {
        fprintf(stderr, "regmirror hosts: --mirror and --out are required\n");
        return 2;
    }
    if (o->has_referrers_flag)
        o->cap_referrers = 1;
    len = strlen(o->out);
    while (len > 1 && o->out[len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof(o->out_buf)) {
        fprintf(stderr, "regmirror hosts: --out: empty or too long\n");
        return 2;
    }
    memcpy(o->out_buf, o->out, len);
    o->out_buf[len] = '\0';
    o->out = o->out_buf;
    if (parse_mirror(o) < 0)
        return 2;
    if ((o->skip_verify || o->ca) && !o->mirror_https) {
        fprintf(stderr, "regmirror hosts: --ca and --skip-verify need an https mirror\n");
        return 2;
    }
    if (o->skip_verify && o->ca) {
        fprintf(stderr, "regmirror hosts: --ca and --skip-verify exclude each other\n");
        return 2;
    }
    if (o->ca && o->ca[0] != '/') {
        /* containerd resolves a relative path against the hosts.toml directory. */
        fprintf(stderr, "regmirror hosts: --ca: give an absolute path: %s\n", o->ca);
        return 2;
    }
    if (o->server_override &&
        (rgm_url_parse(o->server_override, &u) < 0 || strcmp(u.path, "/") != 0)) {
        fprintf(stderr,
                "regmirror hosts: --server-override: not an http(s) URL without path: "
                "%s\n",
                o->server_override);
        return 2;
    }
    return 0;
}

int rgm_cmd_hosts(int argc, char **argv)
{
    struct hosts_opts o;
    rgm_config_t cfg;
    int has_cfg = 0, r;
    size_t i;

    memset(&o, 0, sizeof(o));
    o.cap_pull = 1;
    o.cap_resolve = 1;
    r = parse_args(argc, argv, &o);
    if (r == 1)
        return 0;
    if (r != 0)
        return r;
    r = check_opts(&o);
    if (r != 0)
        return r;
    if (o.is_all) {
        /* The names live in cfg until the end: o.registries borrows them. */
        rgm_config_init(&cfg);
        has_cfg = 1;
        for (i = 0; i < cfg.registries_len; i++) {
            if (add_registry(&o, cfg.registries[i].name) < 0) {
                r = 2;
                goto out;
            }
        }
    }
    if (o.registries_len == 0) {
        r = add_registry(&o, "docker.io") < 0 ? 2 : 0;
        if (r != 0)
            goto out;
    }
    for (i = 0; i < o.registries_len; i++) {
        r = write_one(&o, o.registries[i]);
        if (r != 0)
            goto out;
    }
    if (o.is_default)
        r = write_one(&o, NULL);
out:
    if (has_cfg)
        rgm_config_free(&cfg);
    return r;
}
