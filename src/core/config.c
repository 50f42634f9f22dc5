/* Configuration: the struct's life (embedded defaults, load, free), --registry and the other
 * command-line flags over it, the checks between keys, and the effective configuration as
 * JSON. Loading is strict and all-or-nothing: the file is applied to a copy, which replaces
 * the config only when every key is valid. The keys themselves are core/config-schema's table;
 * this file reads small files synchronously and runs at startup, before the loop. */
#include "core/config.h"

#include <errno.h>
#include <getopt.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "core/config-schema.h"
#include "core/config-value.h"
#include "core/log.h"
#include "core/util.h"

/* ---- the struct ---- */

void rgm_config_init(rgm_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    rgm_cfgschema_defaults(&rgm_cfgschema_top, cfg);
}

void rgm_config_free(rgm_config_t *cfg)
{
    rgm_cfgschema_free(&rgm_cfgschema_top, cfg);
}

int rgm_config_valid_registry_name(const char *name)
{
    return rgm_cfgval_is_registry_name(name);
}

int rgm_config_load_file(rgm_config_t *cfg, const char *path, char *err, size_t errlen)
{
    rgm_cfgval_ctx_t c = {path, err, errlen};
    json_error_t jerr;
    rgm_config_t tmp;
    json_t *root;
    int rc;

    if (errlen > 0)
        err[0] = '\0';
    root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (errlen > 0) {
            if (jerr.line > 0)
                snprintf(err, errlen, "%s:%d:%d: JSON syntax error: %s", path, jerr.line,
                         jerr.column, jerr.text);
            else
                snprintf(err, errlen, "%s: %s", path, jerr.text);
        }
        return UV_EINVAL;
    }
    if (!json_is_object(root)) {
        rc = rgm_cfgval_fail(&c, NULL, "the top level must be a JSON object, not %s",
                             rgm_cfgval_type_name(root));
        json_decref(root);
        return rc;
    }
    rgm_cfgschema_copy(&rgm_cfgschema_top, &tmp, cfg);
    rc = rgm_cfgschema_apply(&c, &rgm_cfgschema_top, &tmp, "", root);
    json_decref(root);
    if (rc < 0) {
        rgm_config_free(&tmp);
        return rc;
    }
    rgm_config_free(cfg);
    *cfg = tmp;
    return 0;
}

int rgm_config_set_registry(rgm_config_t *cfg, const char *arg, char *err, size_t errlen)
{
    rgm_cfgval_ctx_t c = {"--registry", err, errlen};
    char *name = NULL, *endpoint = NULL;
    rgm_registry_cfg_t *r = NULL;
    const char *eq;
    size_t i;
    int rc = 0;

    if (errlen > 0)
        err[0] = '\0';
    eq = strchr(arg, '=');
    if (!eq)
        return rgm_cfgval_fail(&c, NULL, "bad argument \"%.200s\" (use NAME=URL)", arg);
    name = rgm_strndup(arg, (size_t)(eq - arg));
    rc = rgm_cfgval_regname(&c, NULL, name);
    if (rc == 0)
        rc = rgm_cfgval_endpoint(&c, name, eq + 1, &endpoint);
    if (rc < 0)
        goto out;
    for (i = 0; i < cfg->registries_len; i++) {
        if (strcmp(cfg->registries[i].name, name) == 0)
            r = &cfg->registries[i];
    }
    if (!r) {
        cfg->registries =
            rgm_realloc(cfg->registries, (cfg->registries_len + 1) * sizeof(*cfg->registries));
        r = &cfg->registries[cfg->registries_len++];
        memset(r, 0, sizeof(*r));
        r->name = name;
        name = NULL;
        rgm_cfgschema_defaults(&rgm_cfgschema_registry, r);
    }
    free(r->endpoint);
    r->endpoint = endpoint;
    endpoint = NULL;
    for (i = 0; i < r->endpoints_len; i++)
        free(r->endpoints[i]);
    RGM_FREE(r->endpoints); /* one endpoint now: no replica list */
    r->endpoints_len = 0;
    RGM_FREE(r->endpoint_dns);
out:
    free(name);
    free(endpoint);
    return rc;
}

/* 0 when s is a base URL (rgm_cfgval_base_url), else UV_EINVAL with the message in c. */
static int check_base_url(const rgm_cfgval_ctx_t *c, const char *key, const char *s)
{
    json_t *v = json_string(s);
    int rc;

    if (!v)
        return rgm_cfgval_fail(c, key, "not UTF-8");
    rc = rgm_cfgval_base_url(c, key, v);
    json_decref(v);
    return rc;
}

/* The cluster keys, whether they came from a file or from flags (which set them unchecked). */
static int validate_cluster(const rgm_config_t *cfg, const rgm_cfgval_ctx_t *c)
{
    char key[64];
    size_t i;

    if (cfg->cluster_peers_len > 0 && cfg->cluster_peers_dns)
        return rgm_cfgval_fail(c, "cluster", "use either peers or peers_dns");
    if (cfg->cluster_self && cfg->cluster_peers_len == 0 && !cfg->cluster_peers_dns)
        return rgm_cfgval_fail(c, "cluster.self", "needs peers or peers_dns");
    for (i = 0; i < cfg->cluster_peers_len; i++) {
        (void)snprintf(key, sizeof(key), "cluster.peers[%zu]", i);
        if (check_base_url(c, key, cfg->cluster_peers[i]) < 0)
            return UV_EINVAL;
    }
    if (cfg->cluster_peers_dns &&
        check_base_url(c, "cluster.peers_dns", cfg->cluster_peers_dns) < 0)
        return UV_EINVAL;
    if (cfg->cluster_self && check_base_url(c, "cluster.self", cfg->cluster_self) < 0)
        return UV_EINVAL;
    return 0;
}

int rgm_config_validate(const rgm_config_t *cfg, char *err, size_t errlen)
{
    rgm_cfgval_ctx_t c = {"config", err, errlen};
    char host[256];
    size_t i;
    int port;

    if (errlen > 0)
        err[0] = '\0';
    if (cfg->listen_len == 0)
        return rgm_cfgval_fail(&c, "listen", "no address to listen on");
    for (i = 0; i < cfg->listen_len; i++) {
        if (rgm_parse_hostport(cfg->listen[i], host, sizeof(host), &port) < 0)
            return rgm_cfgval_fail(&c, "listen", "bad address \"%.200s\" (use HOST:PORT)",
                                   cfg->listen[i]);
    }
    for (i = 0; i < cfg->health_listen_len; i++) {
        if (rgm_parse_hostport(cfg->health_listen[i], host, sizeof(host), &port) < 0)
            return rgm_cfgval_fail(&c, "health_listen", "bad address \"%.200s\" (use HOST:PORT)",
                                   cfg->health_listen[i]);
    }
    if (!cfg->tls_cert_file != !cfg->tls_key_file)
        return rgm_cfgval_fail(&c, "tls", "cert_file and key_file go together");
    if (cfg->tls_client_ca_file && !cfg->tls_cert_file)
        return rgm_cfgval_fail(&c, "tls", "client_ca_file needs cert_file and key_file");
    if (!cfg->storage || !*cfg->storage)
        return rgm_cfgval_fail(&c, "storage", "no storage directory");
    if (cfg->max_parallel_fetches == 0)
        return rgm_cfgval_fail(&c, "max_parallel_fetches", "must be at least 1");
    if (!cfg->default_registry)
        return rgm_cfgval_fail(&c, "default_registry", "not set");
    if (!rgm_config_registry(cfg, cfg->default_registry))
        return rgm_cfgval_fail(&c, "default_registry",
                               "\"%.200s\" is not one of the configured registries",
                               cfg->default_registry);
    /* The kubelet needs both of its flags; so do we. */
    if (!cfg->cred_provider_config != !cfg->cred_provider_bin_dir)
        return rgm_cfgval_fail(&c, "credential_providers",
                               "config and bin_dir (--image-credential-provider-config, "
                               "--image-credential-provider-bin-dir) go together");
    if (cfg->cred_provider_timeout_ms > 60000)
        return rgm_cfgval_fail(&c, "credential_providers.timeout",
                               "at most 1m (the kubelet's timeout; it may only be shortened)");
    return validate_cluster(cfg, &c);
}

const rgm_registry_cfg_t *rgm_config_registry(const rgm_config_t *cfg, const char *name)
{
    static const char *const docker_aliases[] = {"index.docker.io", "registry-1.docker.io"};
    size_t i;

    if (!name)
        return NULL;
    for (i = 0; i < cfg->registries_len; i++) {
        if (rgm_strcaseeq(cfg->registries[i].name, name))
            return &cfg->registries[i];
    }
    for (i = 0; i < RGM_ARRAY_SIZE(docker_aliases); i++) {
        if (rgm_strcaseeq(name, docker_aliases[i]))
            return rgm_config_registry(cfg, "docker.io");
    }
    return NULL;
}

/* ---- the command line ---- */

enum flag_kind { F_CONFIG, F_LIST, F_STRING, F_FILE, F_REGISTRY, F_SIZE, F_TRUE, F_LEVEL, F_HELP };

/* serve's flags. Each sets its member as it is: whether the value makes sense is
 * rgm_config_validate's question, as it is for the file's values. */
struct flag {
    const char *name;
    char short_name; /* 0: none */
    enum flag_kind kind;
    size_t off;  /* the member of rgm_config_t, where the kind needs one */
    size_t off2; /* F_LIST: its count */
};

static const struct flag flags[] = {
    {"config", 'c', F_CONFIG, 0, 0},
    {"listen", 'l', F_LIST, offsetof(rgm_config_t, listen), offsetof(rgm_config_t, listen_len)},
    {"storage", 's', F_STRING, offsetof(rgm_config_t, storage), 0},
    {"registry", 'r', F_REGISTRY, 0, 0},
    {"default-registry", 0, F_STRING, offsetof(rgm_config_t, default_registry), 0},
    {"max-size", 0, F_SIZE, offsetof(rgm_config_t, max_cache_bytes), 0},
    {"allow-any-registry", 0, F_TRUE, offsetof(rgm_config_t, allow_any_registry), 0},
    {"log-level", 0, F_LEVEL, offsetof(rgm_config_t, log_level), 0},
    {"log-file", 0, F_STRING, offsetof(rgm_config_t, log_file), 0},
    {"tls-cert", 0, F_FILE, offsetof(rgm_config_t, tls_cert_file), 0},
    {"tls-key", 0, F_FILE, offsetof(rgm_config_t, tls_key_file), 0},
    {"tls-client-ca", 0, F_FILE, offsetof(rgm_config_t, tls_client_ca_file), 0},
    {"health-listen", 0, F_LIST, offsetof(rgm_config_t, health_listen),
     offsetof(rgm_config_t, health_listen_len)},
    {"peer", 0, F_LIST, offsetof(rgm_config_t, cluster_peers),
     offsetof(rgm_config_t, cluster_peers_len)},
    {"peers-dns", 0, F_STRING, offsetof(rgm_config_t, cluster_peers_dns), 0},
    {"self", 0, F_STRING, offsetof(rgm_config_t, cluster_self), 0},
    {"image-credential-provider-config", 0, F_STRING, offsetof(rgm_config_t, cred_provider_config),
     0},
    {"image-credential-provider-bin-dir", 0, F_STRING,
     offsetof(rgm_config_t, cred_provider_bin_dir), 0},
    {"help", 'h', F_HELP, 0, 0},
};

#define FLAG_LONG 256 /* getopt's value for flags[i] without a short name: FLAG_LONG + i */

/* getopt_long's view of flags: opts (RGM_ARRAY_SIZE(flags) + 1) and the short ones. */
static void flag_options(struct option *opts, char *shorts, size_t shorts_size)
{
    size_t i, n = 0;

    for (i = 0; i < RGM_ARRAY_SIZE(flags); i++) {
        opts[i].name = flags[i].name;
        opts[i].has_arg =
            flags[i].kind == F_TRUE || flags[i].kind == F_HELP ? no_argument : required_argument;
        opts[i].flag = NULL;
        opts[i].val = flags[i].short_name ? flags[i].short_name : FLAG_LONG + (int)i;
        if (flags[i].short_name && n + 3 <= shorts_size) {
            shorts[n++] = flags[i].short_name;
            if (opts[i].has_arg == required_argument)
                shorts[n++] = ':';
        }
    }
    memset(&opts[i], 0, sizeof(opts[i]));
    shorts[n] = '\0';
}

static const struct flag *flag_of(int val)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(flags); i++) {
        if (val == (flags[i].short_name ? flags[i].short_name : FLAG_LONG + (int)i))
            return &flags[i];
    }
    return NULL;
}

/* One flag over cfg; *n_seen counts this flag so far. 0, 1 for --help, or UV_EINVAL. */
static int apply_flag(rgm_config_t *cfg, const struct flag *f, const char *arg, int *n_seen,
                      char *err, size_t errlen)
{
    char *member = (char *)cfg + f->off;
    char ***list = (char ***)(void *)member;
    size_t *list_len = (size_t *)(void *)((char *)cfg + f->off2);
    char msg[512];
    uint64_t size = 0;
    size_t i;
    int level;

    switch (f->kind) {
    case F_CONFIG: /* read by the first pass */
        return 0;
    case F_HELP:
        return 1;
    case F_LIST:
        if ((*n_seen)++ == 0) { /* the first one replaces the config's list */
            for (i = 0; i < *list_len; i++)
                free((*list)[i]);
            *list_len = 0;
        }
        *list = rgm_realloc(*list, (*list_len + 1) * sizeof(char *));
        (*list)[(*list_len)++] = rgm_strdup(arg);
        return 0;
    case F_FILE:
        if (access(arg, R_OK) < 0) {
            snprintf(err, errlen, "--%s: cannot read \"%.200s\": %s", f->name, arg,
                     strerror(errno));
            return UV_EINVAL;
        }
        free(*(char **)(void *)member);
        *(char **)(void *)member = rgm_strdup(arg);
        return 0;
    case F_STRING:
        free(*(char **)(void *)member);
        *(char **)(void *)member = rgm_strdup(arg);
        return 0;
    case F_TRUE:
        *(int *)(void *)member = 1;
        return 0;
    case F_REGISTRY:
        if (rgm_config_set_registry(cfg, arg, msg, sizeof(msg)) == 0)
            return 0;
        snprintf(err, errlen, "--%s: %s", f->name, msg);
        return UV_EINVAL;
    case F_SIZE:
        if (rgm_parse_size(arg, &size) < 0) {
            snprintf(err, errlen, "--%s: bad size \"%s\" (use 50GiB, 500MB)", f->name, arg);
            return UV_EINVAL;
        }
        *(uint64_t *)(void *)member = size;
        return 0;
    case F_LEVEL:
        level = rgm_log_parse_level(arg);
        if (level < 0) {
            snprintf(err, errlen, "--%s: unknown level \"%s\"", f->name, arg);
            return UV_EINVAL;
        }
        *(int *)(void *)member = level;
        return 0;
    }
    return UV_EINVAL;
}

int rgm_config_parse_args(rgm_config_t *cfg, int argc, char **argv, int max_files, char *err,
                          size_t errlen)
{
    struct option opts[RGM_ARRAY_SIZE(flags) + 1];
    char shorts[2 * RGM_ARRAY_SIZE(flags) + 1];
    const struct flag *f;
    int seen[RGM_ARRAY_SIZE(flags)] = {0};
    int c, rc, files = 0;

    RGM_BUG_ON(errlen == 0);
    err[0] = '\0';
    flag_options(opts, shorts, sizeof(shorts));
    /* First pass, silent: the config files, so that flags override them wherever they stand.
     * optind 0 makes glibc start over (and permute the arguments again). */
    opterr = 0;
    optind = 0;
    while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        if (c == 'c' && rgm_config_load_file(cfg, optarg, err, errlen) < 0)
            return UV_EINVAL;
    }
    for (; files < max_files && optind + files < argc; files++) {
        if (rgm_config_load_file(cfg, argv[optind + files], err, errlen) < 0)
            return UV_EINVAL;
    }
    opterr = 1;
    optind = 0;
    while ((c = getopt_long(argc, argv, shorts, opts, NULL)) != -1) {
        f = flag_of(c);
        if (!f) /* getopt said what is wrong */
            return UV_EINVAL;
        rc = apply_flag(cfg, f, optarg, &seen[f - flags], err, errlen);
        if (rc != 0)
            return rc;
    }
    if (optind + files < argc) {
        snprintf(err, errlen, "%s: unexpected argument \"%s\"", argv[0], argv[optind + files]);
        return UV_EINVAL;
    }
    return rgm_config_validate(cfg, err, errlen);
}

/* ---- the effective configuration ---- */

char *rgm_config_dump(const rgm_config_t *cfg, char *err, size_t errlen)
{
    rgm_cfgval_ctx_t c = {"config", err, errlen};
    char *text, *out;
    json_t *root;
    size_t len;

    if (errlen > 0)
        err[0] = '\0';
    root = rgm_cfgschema_dump(&c, &rgm_cfgschema_top, cfg);
    if (!root)
        return NULL;
    text = json_dumps(root, JSON_INDENT(2));
    json_decref(root);
    if (!text) {
        rgm_cfgval_fail(&c, NULL, "cannot write the configuration as JSON");
        return NULL;
    }
    len = strlen(text);
    out = rgm_malloc(len + 2);
    memcpy(out, text, len);
    out[len] = '\n';
    out[len + 1] = '\0';
    free(text);
    return out;
}

void rgm_config_describe(FILE *out)
{
    rgm_cfgschema_describe(&rgm_cfgschema_top, out);
}
