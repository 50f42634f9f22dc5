/* Configuration: embedded defaults, the JSON file (jansson) and --registry overrides. Loading is
 * strict and all-or-nothing: the file is applied to a copy, which replaces the config only when
 * every key is valid. Keys starting with "//" are documentation and skipped at every level.
 * This module reads small files synchronously; it runs at startup, before the loop. */
#include "core/config.h"

#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include <jansson.h>
#include <uv.h>

#include "core/log.h"
#include "core/util.h"

#define KEY_MAX      512
#define PASSWORD_MAX 4096
#define DURATION_MAX (365ULL * 86400 * 1000)

struct ctx {
    const char *file; /* prefix of every message: the file name or "--registry" */
    char *err;
    size_t errlen;
};

static int fail(struct ctx *c, const char *key, const char *fmt, ...) RGM_PRINTF(3, 4);

static int fail(struct ctx *c, const char *key, const char *fmt, ...)
{
    char msg[512];
    va_list ap;

    va_start(ap, fmt);
    if (vsnprintf(msg, sizeof(msg), fmt, ap) < 0)
        msg[0] = '\0';
    va_end(ap);
    if (c->errlen > 0) {
        if (key && *key)
            snprintf(c->err, c->errlen, "%s: %s: %s", c->file, key, msg);
        else
            snprintf(c->err, c->errlen, "%s: %s", c->file, msg);
    }
    return UV_EINVAL;
}

static int is_doc_key(const char *key)
{
    return key[0] == '/' && key[1] == '/';
}

/* prefix.key into out (KEY_MAX bytes); a key path too long for it is cut short, which only
 * shortens an error message. */
static void join_key(char *out, const char *prefix, const char *key)
{
    int n;

    if (prefix && *prefix)
        n = snprintf(out, KEY_MAX, "%s.%s", prefix, key);
    else
        n = snprintf(out, KEY_MAX, "%s", key);
    if (n < 0)
        out[0] = '\0';
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
    default:
        return "null";
    }
}

/* ---- defaults, copies, freeing ---- */

static const char *const default_registries[][2] = {
    {"docker.io", "https://registry-1.docker.io"},
    {"ghcr.io", "https://ghcr.io"},
    {"quay.io", "https://quay.io"},
    {"registry.k8s.io", "https://registry.k8s.io"},
    {"gcr.io", "https://gcr.io"},
    {"public.ecr.aws", "https://public.ecr.aws"},
    {"mcr.microsoft.com", "https://mcr.microsoft.com"},
};

static void registry_defaults(rgm_registry_cfg_t *r, const char *name, const char *endpoint)
{
    memset(r, 0, sizeof(*r));
    r->name = rgm_strdup(name);
    r->endpoint = rgm_strdup(endpoint);
    r->tag_ttl_ms = 60 * 1000;
}

static void registry_free(rgm_registry_cfg_t *r)
{
    RGM_FREE(r->name);
    RGM_FREE(r->endpoint);
    RGM_FREE(r->ca_file);
    RGM_FREE(r->username);
    if (r->password) {
        /* don't leave the secret in freed memory */
        explicit_bzero(r->password, strlen(r->password));
        RGM_FREE(r->password);
    }
    RGM_FREE(r->docker_config);
}

static void registries_free(rgm_registry_cfg_t *regs, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        registry_free(&regs[i]);
    free(regs);
}

static char *dup_or_null(const char *s)
{
    return s ? rgm_strdup(s) : NULL;
}

static void registry_copy(rgm_registry_cfg_t *dst, const rgm_registry_cfg_t *src)
{
    *dst = *src;
    dst->name = dup_or_null(src->name);
    dst->endpoint = dup_or_null(src->endpoint);
    dst->ca_file = dup_or_null(src->ca_file);
    dst->username = dup_or_null(src->username);
    dst->password = dup_or_null(src->password);
    dst->docker_config = dup_or_null(src->docker_config);
}

static void listen_free(char **listen, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        free(listen[i]);
    free(listen);
}

static void config_copy(rgm_config_t *dst, const rgm_config_t *src)
{
    size_t i;

    *dst = *src;
    dst->listen = rgm_calloc(src->listen_len, sizeof(char *));
    for (i = 0; i < src->listen_len; i++)
        dst->listen[i] = rgm_strdup(src->listen[i]);
    dst->storage = dup_or_null(src->storage);
    dst->default_registry = dup_or_null(src->default_registry);
    dst->log_file = dup_or_null(src->log_file);
    dst->registries = rgm_calloc(src->registries_len, sizeof(rgm_registry_cfg_t));
    for (i = 0; i < src->registries_len; i++)
        registry_copy(&dst->registries[i], &src->registries[i]);
}

void rgm_config_init(rgm_config_t *cfg)
{
    size_t i;

    memset(cfg, 0, sizeof(*cfg));
    cfg->listen = rgm_calloc(1, sizeof(char *));
    cfg->listen[0] = rgm_strdup("127.0.0.1:5000");
    cfg->listen_len = 1;
    cfg->storage = rgm_strdup("./regmirror-data");
    cfg->max_cache_bytes = 0;
    cfg->default_registry = rgm_strdup("docker.io");
    cfg->allow_any_registry = 0;
    cfg->max_parallel_fetches = 16;
    cfg->registries_len = RGM_ARRAY_SIZE(default_registries);
    cfg->registries = rgm_calloc(cfg->registries_len, sizeof(rgm_registry_cfg_t));
    for (i = 0; i < cfg->registries_len; i++)
        registry_defaults(&cfg->registries[i], default_registries[i][0], default_registries[i][1]);

    cfg->max_connections = 4096;
    cfg->max_header_bytes = 16384;
    cfg->max_headers = 64;
    cfg->max_url_len = 4096;
    cfg->header_timeout_ms = 30 * 1000;
    cfg->idle_timeout_ms = 60 * 1000;
    cfg->send_timeout_ms = 120 * 1000;
    cfg->shutdown_timeout_ms = 10 * 1000;
    cfg->use_sendfile = 0; /* pread+write measured faster on loopback (tests/bench) */

    cfg->upstream_connect_timeout_ms = 10 * 1000;
    cfg->upstream_read_timeout_ms = 60 * 1000;
    cfg->auth_cache_ttl_ms = 60 * 1000;

    cfg->log_level = RGM_LOG_INFO;
    cfg->log_file = NULL;
    cfg->access_log = 1;
}

void rgm_config_free(rgm_config_t *cfg)
{
    listen_free(cfg->listen, cfg->listen_len);
    free(cfg->storage);
    free(cfg->default_registry);
    free(cfg->log_file);
    registries_free(cfg->registries, cfg->registries_len);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- validation helpers ---- */

int rgm_config_valid_registry_name(const char *name)
{
    const char *p = name, *colon;
    size_t len, label = 0, i;
    uint64_t port;

    if (!name)
        return 0;
    colon = strchr(name, ':');
    len = colon ? (size_t)(colon - name) : strlen(name);
    if (len == 0 || len > 253)
        return 0;
    for (i = 0; i < len; i++) {
        char c = p[i];
        if (c == '.') {
            if (label == 0 || p[i - 1] == '-')
                return 0;
            label = 0;
            continue;
        }
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
            return 0;
        if (c == '-' && label == 0)
            return 0;
        if (++label > 63)
            return 0;
    }
    if (label == 0 || p[len - 1] == '-')
        return 0;
    if (colon) {
        if (rgm_parse_uint(colon + 1, 65535, &port) < 0 || port == 0 || colon[1] == '0')
            return 0;
    }
    return 1;
}

/* An http(s) endpoint without query or fragment; stored without trailing slashes. */
static int check_endpoint(struct ctx *c, const char *key, const char *s, char **out)
{
    rgm_url_t url;
    size_t len;

    if (rgm_url_parse(s, &url) < 0 || strpbrk(s, "?#"))
        return fail(c, key, "bad URL \"%.200s\" (use http://HOST[:PORT] or https://HOST[:PORT])",
                    s);
    len = strlen(s);
    while (len > 0 && s[len - 1] == '/')
        len--;
    free(*out);
    *out = rgm_strndup(s, len);
    return 0;
}

static int check_readable(struct ctx *c, const char *key, const char *path)
{
    if (access(path, R_OK) < 0)
        return fail(c, key, "cannot read \"%.200s\": %s", path, strerror(errno));
    return 0;
}

/* ---- scalar fields ---- */

enum kind {
    K_STR,       /* non-empty string */
    K_STR_NULL,  /* non-empty string or null */
    K_FILE_NULL, /* readable file or null */
    K_REGNAME,   /* registry name */
    K_URL,       /* http(s) endpoint */
    K_BOOL,      /* int */
    K_UINT,      /* unsigned, min..max */
    K_SIZE64,    /* uint64_t, size string or integer */
    K_SIZET,     /* size_t, size string or integer */
    K_DUR,       /* uint64_t ms, duration string, min..DURATION_MAX */
    K_LEVEL,     /* int, log level name */
    K_LISTEN,    /* special: rgm_config_t.listen */
    K_REGS,      /* special: rgm_config_t.registries */
    K_CREDS,     /* special: rgm_registry_cfg_t credentials */
};

struct field {
    const char *key;
    enum kind kind;
    size_t off;
    uint64_t min, max;
};

#define CF(k, kind, member, min, max)                                                              \
    {                                                                                              \
        k, kind, offsetof(rgm_config_t, member), min, max                                          \
    }
#define RF(k, kind, member, min, max)                                                              \
    {                                                                                              \
        k, kind, offsetof(rgm_registry_cfg_t, member), min, max                                    \
    }

static const struct field top_fields[] = {
    CF("listen", K_LISTEN, listen, 0, 0),
    CF("storage", K_STR, storage, 0, 0),
    CF("max_cache_bytes", K_SIZE64, max_cache_bytes, 0, UINT64_MAX),
    CF("default_registry", K_REGNAME, default_registry, 0, 0),
    CF("allow_any_registry", K_BOOL, allow_any_registry, 0, 0),
    CF("max_parallel_fetches", K_UINT, max_parallel_fetches, 1, 1024),
    CF("registries", K_REGS, registries, 0, 0),
    CF("max_connections", K_UINT, max_connections, 1, 1000000),
    CF("max_header_bytes", K_SIZET, max_header_bytes, 1024, 1 << 20),
    CF("max_headers", K_UINT, max_headers, 8, 1024),
    CF("max_url_length", K_SIZET, max_url_len, 256, 1 << 20),
    CF("header_timeout", K_DUR, header_timeout_ms, 1, 0),
    CF("idle_timeout", K_DUR, idle_timeout_ms, 1, 0),
    CF("send_timeout", K_DUR, send_timeout_ms, 1, 0),
    CF("shutdown_timeout", K_DUR, shutdown_timeout_ms, 0, 0),
    CF("upstream_connect_timeout", K_DUR, upstream_connect_timeout_ms, 1, 0),
    CF("upstream_timeout", K_DUR, upstream_read_timeout_ms, 1, 0),
    CF("auth_cache_ttl", K_DUR, auth_cache_ttl_ms, 0, 0),
    CF("sendfile", K_BOOL, use_sendfile, 0, 0),
    CF("log_level", K_LEVEL, log_level, 0, 0),
    CF("log_file", K_STR_NULL, log_file, 0, 0),
    CF("access_log", K_BOOL, access_log, 0, 0),
};

static const struct field reg_fields[] = {
    RF("endpoint", K_URL, endpoint, 0, 0),
    RF("tag_ttl", K_DUR, tag_ttl_ms, 0, 0),
    RF("ca_file", K_FILE_NULL, ca_file, 0, 0),
    RF("insecure_skip_verify", K_BOOL, insecure_skip_verify, 0, 0),
    RF("mirror", K_BOOL, is_mirror, 0, 0),
    RF("max_parallel_fetches", K_UINT, max_parallel_fetches, 0, 1024),
    RF("credentials", K_CREDS, username, 0, 0),
};

static int get_string(struct ctx *c, const char *key, const json_t *v, int nullable,
                      const char **out)
{
    if (nullable && json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return fail(c, key, "expected a string, got %s", json_type_name(v));
    if (json_string_length(v) == 0)
        return fail(c, key, "must not be empty");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return fail(c, key, "contains a NUL character");
    *out = json_string_value(v);
    return 0;
}

static int get_size(struct ctx *c, const char *key, const json_t *v, const struct field *f,
                    uint64_t *out)
{
    json_int_t i;
    int err;

    if (json_is_integer(v)) {
        i = json_integer_value(v);
        if (i < 0)
            return fail(c, key, "bad size %lld (must not be negative)", (long long)i);
        *out = (uint64_t)i;
    } else if (json_is_string(v)) {
        err = rgm_parse_size(json_string_value(v), out);
        if (err < 0)
            return fail(c, key, "bad size \"%.100s\"%s (use 512, 10MB, 50GiB)",
                        json_string_value(v), err == UV_ERANGE ? ": too large" : "");
    } else {
        return fail(c, key, "expected a size (\"10MB\", \"50GiB\" or an integer), got %s",
                    json_type_name(v));
    }
    if (*out < f->min || *out > f->max)
        return fail(c, key, "%llu is out of range %llu..%llu", (unsigned long long)*out,
                    (unsigned long long)f->min, (unsigned long long)f->max);
    return 0;
}

static int get_duration(struct ctx *c, const char *key, const json_t *v, const struct field *f,
                        uint64_t *out)
{
    if (!json_is_string(v))
        return fail(c, key, "expected a duration string (\"90s\", \"5m\", \"1h\"), got %s",
                    json_type_name(v));
    if (rgm_parse_duration(json_string_value(v), out) < 0)
        return fail(c, key, "bad duration \"%.100s\" (use 90s, 5m, 1h)", json_string_value(v));
    if (*out < f->min)
        return fail(c, key, "must be greater than 0");
    if (*out > DURATION_MAX)
        return fail(c, key, "duration \"%.100s\" is too long (at most 365d)", json_string_value(v));
    return 0;
}

/* One scalar field of base (a rgm_config_t or rgm_registry_cfg_t). */
static int set_scalar(struct ctx *c, void *base, const struct field *f, const char *key,
                      const json_t *v)
{
    char *p = (char *)base + f->off;
    const char *s = NULL;
    uint64_t u = 0;
    json_int_t i;
    int err, level;

    switch (f->kind) {
    case K_STR:
    case K_STR_NULL:
    case K_FILE_NULL:
    case K_REGNAME:
    case K_URL:
        err = get_string(c, key, v, f->kind == K_STR_NULL || f->kind == K_FILE_NULL, &s);
        if (err < 0)
            return err;
        if (f->kind == K_URL)
            return check_endpoint(c, key, s, (char **)p);
        if (f->kind == K_REGNAME && !rgm_config_valid_registry_name(s))
            return fail(c, key,
                        "bad registry name \"%.200s\" (a lowercase host name with an "
                        "optional :port)",
                        s);
        if (f->kind == K_FILE_NULL && s) {
            err = check_readable(c, key, s);
            if (err < 0)
                return err;
        }
        free(*(char **)p);
        *(char **)p = s ? rgm_strdup(s) : NULL;
        return 0;
    case K_BOOL:
        if (!json_is_boolean(v))
            return fail(c, key, "expected true or false, got %s", json_type_name(v));
        *(int *)p = json_is_true(v) ? 1 : 0;
        return 0;
    case K_UINT:
        if (!json_is_integer(v))
            return fail(c, key, "expected an integer, got %s", json_type_name(v));
        i = json_integer_value(v);
        if (i < 0 || (uint64_t)i < f->min || (uint64_t)i > f->max)
            return fail(c, key, "%lld is out of range %llu..%llu", (long long)i,
                        (unsigned long long)f->min, (unsigned long long)f->max);
        *(unsigned *)p = (unsigned)i;
        return 0;
    case K_SIZE64:
    case K_SIZET:
        err = get_size(c, key, v, f, &u);
        if (err < 0)
            return err;
        if (f->kind == K_SIZE64)
            *(uint64_t *)p = u;
        else
            *(size_t *)p = (size_t)u;
        return 0;
    case K_DUR:
        return get_duration(c, key, v, f, (uint64_t *)p);
    case K_LEVEL:
        if (!json_is_string(v) || (level = rgm_log_parse_level(json_string_value(v))) < 0)
            return fail(c, key, "expected one of \"error\", \"warn\", \"info\", \"debug\"");
        *(int *)p = level;
        return 0;
    case K_LISTEN:
    case K_REGS:
    case K_CREDS:
    default:
        RGM_BUG_ON(1);
        return UV_EINVAL;
    }
}

/* ---- structured fields ---- */

static int check_listen(struct ctx *c, const char *key, const json_t *v)
{
    char host[256];
    int port;

    if (!json_is_string(v))
        return fail(c, key, "expected a \"HOST:PORT\" string, got %s", json_type_name(v));
    if (rgm_parse_hostport(json_string_value(v), host, sizeof(host), &port) < 0)
        return fail(c, key,
                    "bad address \"%.200s\" (use HOST:PORT, e.g. 0.0.0.0:5000 or "
                    "[::]:5000)",
                    json_string_value(v));
    return 0;
}

static int set_listen(struct ctx *c, rgm_config_t *cfg, const char *key, const json_t *v)
{
    char ikey[KEY_MAX];
    size_t i, n;
    int err;

    if (json_is_string(v)) {
        err = check_listen(c, key, v);
        if (err < 0)
            return err;
        listen_free(cfg->listen, cfg->listen_len);
        cfg->listen = rgm_calloc(1, sizeof(char *));
        cfg->listen[0] = rgm_strdup(json_string_value(v));
        cfg->listen_len = 1;
        return 0;
    }
    if (!json_is_array(v))
        return fail(c, key, "expected a string or an array of strings, got %s", json_type_name(v));
    n = json_array_size(v);
    if (n == 0)
        return fail(c, key, "must list at least one address");
    for (i = 0; i < n; i++) {
        snprintf(ikey, sizeof(ikey), "%s[%zu]", key, i);
        err = check_listen(c, ikey, json_array_get(v, i));
        if (err < 0)
            return err;
    }
    listen_free(cfg->listen, cfg->listen_len);
    cfg->listen = rgm_calloc(n, sizeof(char *));
    for (i = 0; i < n; i++)
        cfg->listen[i] = rgm_strdup(json_string_value(json_array_get(v, i)));
    cfg->listen_len = n;
    return 0;
}

static int read_password(struct ctx *c, const char *key, const char *path, char **out)
{
    char buf[PASSWORD_MAX + 1];
    size_t n;
    FILE *f;
    int err = 0;

    f = fopen(path, "re");
    if (!f)
        return fail(c, key, "cannot read \"%.200s\": %s", path, strerror(errno));
    n = fread(buf, 1, sizeof(buf), f);
    if (ferror(f)) {
        err = fail(c, key, "cannot read \"%.200s\": %s", path, strerror(errno));
        goto out;
    }
    if (n > PASSWORD_MAX) {
        err = fail(c, key, "\"%.200s\" is larger than %d bytes", path, PASSWORD_MAX);
        goto out;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (n == 0) {
        err = fail(c, key, "\"%.200s\" is empty", path);
        goto out;
    }
    if (memchr(buf, '\0', n)) {
        err = fail(c, key, "\"%.200s\" contains a NUL byte", path);
        goto out;
    }
    *out = rgm_strndup(buf, n);
out:
    explicit_bzero(buf, sizeof(buf));
    if (fclose(f) != 0 && err == 0) {
        /* read-only stream: nothing was lost */
    }
    return err;
}

static int set_credentials(struct ctx *c, rgm_registry_cfg_t *r, const char *prefix,
                           const json_t *obj)
{
    const char *key, *s, *username = NULL, *password_file = NULL, *docker_config = NULL;
    char kpath[KEY_MAX];
    json_t *v;
    int err;

    if (!json_is_object(obj))
        return fail(c, prefix, "expected an object, got %s", json_type_name(obj));
    json_object_foreach((json_t *)obj, key, v)
    {
        if (is_doc_key(key))
            continue;
        join_key(kpath, prefix, key);
        if (strcmp(key, "username") != 0 && strcmp(key, "password_file") != 0 &&
            strcmp(key, "docker_config") != 0)
            return fail(c, kpath,
                        "unknown key (expected username, password_file or "
                        "docker_config)");
        err = get_string(c, kpath, v, 0, &s);
        if (err < 0)
            return err;
        if (strcmp(key, "username") == 0)
            username = s;
        else if (strcmp(key, "password_file") == 0)
            password_file = s;
        else
            docker_config = s;
    }
    if (docker_config && (username || password_file))
        return fail(c, prefix, "use either username with password_file, or docker_config");
    if (username && !password_file)
        return fail(c, prefix, "username needs password_file");
    if (password_file && !username)
        return fail(c, prefix, "password_file needs username");
    if (password_file) {
        join_key(kpath, prefix, "password_file");
        err = read_password(c, kpath, password_file, &r->password);
        if (err < 0)
            return err;
        r->username = rgm_strdup(username);
    }
    if (docker_config) {
        join_key(kpath, prefix, "docker_config");
        err = check_readable(c, kpath, docker_config);
        if (err < 0)
            return err;
        r->docker_config = rgm_strdup(docker_config);
    }
    return 0;
}

static const struct field *find_field(const struct field *fields, size_t n, const char *key)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (strcmp(fields[i].key, key) == 0)
            return &fields[i];
    }
    return NULL;
}

static int parse_registry(struct ctx *c, rgm_registry_cfg_t *r, const char *prefix,
                          const json_t *obj)
{
    char kpath[KEY_MAX];
    const struct field *f;
    const char *key;
    json_t *v;
    int err;

    if (!json_is_object(obj))
        return fail(c, prefix, "expected an object, got %s", json_type_name(obj));
    json_object_foreach((json_t *)obj, key, v)
    {
        if (is_doc_key(key))
            continue;
        join_key(kpath, prefix, key);
        f = find_field(reg_fields, RGM_ARRAY_SIZE(reg_fields), key);
        if (!f)
            return fail(c, kpath, "unknown key");
        if (f->kind == K_CREDS)
            err = set_credentials(c, r, kpath, v);
        else
            err = set_scalar(c, r, f, kpath, v);
        if (err < 0)
            return err;
    }
    if (!r->endpoint)
        return fail(c, prefix, "endpoint is required");
    return 0;
}

static int set_registries(struct ctx *c, rgm_config_t *cfg, const char *prefix, const json_t *obj)
{
    rgm_registry_cfg_t *regs = NULL;
    char kpath[KEY_MAX];
    const char *key;
    size_t n = 0;
    json_t *v;
    int err = 0;

    if (!json_is_object(obj))
        return fail(c, prefix, "expected an object of NAME: {endpoint...}, got %s",
                    json_type_name(obj));
    regs = rgm_calloc(json_object_size(obj), sizeof(*regs));
    json_object_foreach((json_t *)obj, key, v)
    {
        if (is_doc_key(key))
            continue;
        join_key(kpath, prefix, key);
        if (!rgm_config_valid_registry_name(key)) {
            err = fail(c, kpath,
                       "bad registry name \"%.200s\" (a lowercase host name with an "
                       "optional :port)",
                       key);
            goto out;
        }
        memset(&regs[n], 0, sizeof(regs[n]));
        regs[n].name = rgm_strdup(key);
        regs[n].tag_ttl_ms = 60 * 1000;
        n++;
        err = parse_registry(c, &regs[n - 1], kpath, v);
        if (err < 0)
            goto out;
    }
    registries_free(cfg->registries, cfg->registries_len);
    cfg->registries = regs;
    cfg->registries_len = n;
    regs = NULL;
out:
    if (regs)
        registries_free(regs, n);
    return err;
}

static int apply_json(struct ctx *c, rgm_config_t *cfg, const json_t *root)
{
    const struct field *f;
    const char *key;
    json_t *v;
    int err;

    if (!json_is_object(root))
        return fail(c, NULL, "the top level must be a JSON object, not %s", json_type_name(root));
    json_object_foreach((json_t *)root, key, v)
    {
        if (is_doc_key(key))
            continue;
        f = find_field(top_fields, RGM_ARRAY_SIZE(top_fields), key);
        if (!f)
            return fail(c, key, "unknown key");
        if (f->kind == K_LISTEN)
            err = set_listen(c, cfg, key, v);
        else if (f->kind == K_REGS)
            err = set_registries(c, cfg, key, v);
        else
            err = set_scalar(c, cfg, f, key, v);
        if (err < 0)
            return err;
    }
    return 0;
}

/* ---- public ---- */

int rgm_config_load_file(rgm_config_t *cfg, const char *path, char *err, size_t errlen)
{
    struct ctx c = {path, err, errlen};
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
    config_copy(&tmp, cfg);
    rc = apply_json(&c, &tmp, root);
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
    struct ctx c = {"--registry", err, errlen};
    char *name = NULL, *endpoint = NULL;
    rgm_registry_cfg_t *r = NULL;
    const char *eq;
    size_t i;
    int rc = 0;

    if (errlen > 0)
        err[0] = '\0';
    eq = strchr(arg, '=');
    if (!eq)
        return fail(&c, NULL, "bad argument \"%.200s\" (use NAME=URL)", arg);
    name = rgm_strndup(arg, (size_t)(eq - arg));
    if (!rgm_config_valid_registry_name(name)) {
        rc = fail(&c, NULL,
                  "bad registry name \"%.200s\" (a lowercase host name with an "
                  "optional :port)",
                  name);
        goto out;
    }
    rc = check_endpoint(&c, name, eq + 1, &endpoint);
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
        registry_defaults(r, name, eq + 1);
    }
    free(r->endpoint);
    r->endpoint = endpoint;
    endpoint = NULL;
out:
    free(name);
    free(endpoint);
    return rc;
}

int rgm_config_validate(const rgm_config_t *cfg, char *err, size_t errlen)
{
    struct ctx c = {"config", err, errlen};
    char host[256];
    size_t i;
    int port;

    if (errlen > 0)
        err[0] = '\0';
    if (cfg->listen_len == 0)
        return fail(&c, "listen", "no address to listen on");
    for (i = 0; i < cfg->listen_len; i++) {
        if (rgm_parse_hostport(cfg->listen[i], host, sizeof(host), &port) < 0)
            return fail(&c, "listen", "bad address \"%.200s\" (use HOST:PORT)", cfg->listen[i]);
    }
    if (!cfg->storage || !*cfg->storage)
        return fail(&c, "storage", "no storage directory");
    if (cfg->max_parallel_fetches == 0)
        return fail(&c, "max_parallel_fetches", "must be at least 1");
    if (!cfg->default_registry)
        return fail(&c, "default_registry", "not set");
    if (!rgm_config_registry(cfg, cfg->default_registry))
        return fail(&c, "default_registry", "\"%.200s\" is not one of the configured registries",
                    cfg->default_registry);
    return 0;
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
