/* Config values: one strict parser per kind of value, from a JSON value to a C value, with a
 * message that names the key; and the printers that write a stored value back as JSON the
 * parser accepts, so that the effective configuration can be fed back unchanged. Which key
 * has which kind is core/config-schema's business, not this file's. */
#include "core/config-value.h"

#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include <uv.h>

#include "core/log.h"
#include "core/util.h"

#define SECRET_MAX   4096
#define DURATION_MAX (365ULL * 86400 * 1000)

int rgm_cfgval_fail(const rgm_cfgval_ctx_t *c, const char *key, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (c->errlen == 0)
        return UV_EINVAL;
    if (key && *key)
        n = snprintf(c->err, c->errlen, "%s: %s: ", c->file, key);
    else
        n = snprintf(c->err, c->errlen, "%s: ", c->file);
    if (n < 0) {
        c->err[0] = '\0';
        n = 0;
    }
    if ((size_t)n < c->errlen) {
        va_start(ap, fmt);
        if (vsnprintf(c->err + n, c->errlen - (size_t)n, fmt, ap) < 0)
            c->err[n] = '\0';
        va_end(ap);
    }
    return UV_EINVAL;
}

const char *rgm_cfgval_type_name(const json_t *v)
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

/* ---- scalars ---- */

int rgm_cfgval_string(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, int is_nullable,
                      const char **out)
{
    if (is_nullable && json_is_null(v)) {
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v))
        return rgm_cfgval_fail(c, key, "expected a string, got %s", rgm_cfgval_type_name(v));
    if (json_string_length(v) == 0)
        return rgm_cfgval_fail(c, key, "must not be empty");
    if (strlen(json_string_value(v)) != json_string_length(v))
        return rgm_cfgval_fail(c, key, "contains a NUL character");
    *out = json_string_value(v);
    return 0;
}

int rgm_cfgval_bool(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, int *out)
{
    if (!json_is_boolean(v))
        return rgm_cfgval_fail(c, key, "expected true or false, got %s", rgm_cfgval_type_name(v));
    *out = json_is_true(v) ? 1 : 0;
    return 0;
}

static int check_range(const rgm_cfgval_ctx_t *c, const char *key, uint64_t u, uint64_t min,
                       uint64_t max)
{
    if (u < min || u > max)
        return rgm_cfgval_fail(c, key, "%llu is out of range %llu..%llu", (unsigned long long)u,
                               (unsigned long long)min, (unsigned long long)max);
    return 0;
}

int rgm_cfgval_uint(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, uint64_t min,
                    uint64_t max, uint64_t *out)
{
    json_int_t i;

    if (!json_is_integer(v))
        return rgm_cfgval_fail(c, key, "expected an integer, got %s", rgm_cfgval_type_name(v));
    i = json_integer_value(v);
    if (i < 0)
        return rgm_cfgval_fail(c, key, "%lld is out of range %llu..%llu", (long long)i,
                               (unsigned long long)min, (unsigned long long)max);
    if (check_range(c, key, (uint64_t)i, min, max) < 0)
        return UV_EINVAL;
    *out = (uint64_t)i;
    return 0;
}

int rgm_cfgval_size(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, uint64_t min,
                    uint64_t max, uint64_t *out)
{
    uint64_t u = 0;
    json_int_t i;
    int err;

    if (json_is_integer(v)) {
        i = json_integer_value(v);
        if (i < 0)
            return rgm_cfgval_fail(c, key, "bad size %lld (must not be negative)", (long long)i);
        u = (uint64_t)i;
    } else if (json_is_string(v)) {
        err = rgm_parse_size(json_string_value(v), &u);
        if (err < 0)
            return rgm_cfgval_fail(c, key, "bad size \"%.100s\"%s (use 512, 10MB, 50GiB)",
                                   json_string_value(v), err == UV_ERANGE ? ": too large" : "");
    } else {
        return rgm_cfgval_fail(c, key,
                               "expected a size (\"10MB\", \"50GiB\" or an integer), got %s",
                               rgm_cfgval_type_name(v));
    }
    if (check_range(c, key, u, min, max) < 0)
        return UV_EINVAL;
    *out = u;
    return 0;
}

int rgm_cfgval_duration(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, uint64_t min,
                        uint64_t *out_ms)
{
    const char *s;
    uint64_t ms = 0;

    if (!json_is_string(v))
        return rgm_cfgval_fail(c, key,
                               "expected a duration string (\"90s\", \"5m\", \"1h\"), got %s",
                               rgm_cfgval_type_name(v));
    s = json_string_value(v);
    if (rgm_parse_duration(s, &ms) < 0)
        return rgm_cfgval_fail(c, key, "bad duration \"%.100s\" (use 90s, 5m, 1h)", s);
    if (ms < min && min <= 1)
        return rgm_cfgval_fail(c, key, "must be greater than 0");
    if (ms < min)
        return rgm_cfgval_fail(c, key, "must be at least %llums", (unsigned long long)min);
    if (ms > DURATION_MAX)
        return rgm_cfgval_fail(c, key, "duration \"%.100s\" is too long (at most 365d)", s);
    *out_ms = ms;
    return 0;
}

/* Indexed by enum rgm_log_level; rgm_log_parse_level is the authority, the unit test checks
 * that the two agree. */
static const char *const level_names[] = {"error", "warn", "info", "debug"};

int rgm_cfgval_level(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, int *out)
{
    int level = -1;

    if (json_is_string(v))
        level = rgm_log_parse_level(json_string_value(v));
    if (level < 0)
        return rgm_cfgval_fail(c, key, "expected one of \"error\", \"warn\", \"info\", \"debug\"");
    *out = level;
    return 0;
}

const char *rgm_cfgval_level_name(int level)
{
    if (level < 0 || (size_t)level >= RGM_ARRAY_SIZE(level_names))
        return NULL;
    return level_names[level];
}

/* ---- names, addresses, URLs ---- */

/* One DNS label of the name: [a-z0-9-], 1..63 bytes, no '-' at either end. */
static int is_label(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len > 63 || s[0] == '-' || s[len - 1] == '-')
        return 0;
    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return 0;
    }
    return 1;
}

int rgm_cfgval_is_registry_name(const char *name)
{
    const char *colon, *dot, *p;
    size_t host_len;
    uint64_t port;

    if (!name)
        return 0;
    colon = strchr(name, ':');
    host_len = colon ? (size_t)(colon - name) : strlen(name);
    if (host_len == 0 || host_len > 253)
        return 0;
    for (p = name; p < name + host_len; p = dot + 1) {
        dot = memchr(p, '.', (size_t)(name + host_len - p));
        if (!dot)
            dot = name + host_len;
        if (!is_label(p, (size_t)(dot - p)))
            return 0;
        if (dot == name + host_len - 1)
            return 0; /* "io." */
    }
    if (colon && (colon[1] == '0' || rgm_parse_uint(colon + 1, 65535, &port) < 0 || port == 0))
        return 0;
    return 1;
}

int rgm_cfgval_regname(const rgm_cfgval_ctx_t *c, const char *key, const char *s)
{
    if (!rgm_cfgval_is_registry_name(s))
        return rgm_cfgval_fail(
            c, key, "bad registry name \"%.200s\" (a lowercase host name with an optional :port)",
            s);
    return 0;
}

int rgm_cfgval_endpoint(const rgm_cfgval_ctx_t *c, const char *key, const char *s, char **out)
{
    rgm_url_t url;
    size_t len;

    if (rgm_url_parse(s, &url) < 0 || strpbrk(s, "?#"))
        return rgm_cfgval_fail(
            c, key, "bad URL \"%.200s\" (use http://HOST[:PORT] or https://HOST[:PORT])", s);
    len = strlen(s);
    while (len > 0 && s[len - 1] == '/')
        len--;
    *out = rgm_strndup(s, len);
    return 0;
}

int rgm_cfgval_base_url(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v)
{
    rgm_url_t url;
    const char *s;

    if (!json_is_string(v))
        return rgm_cfgval_fail(c, key, "expected an \"http://HOST:PORT\" string, got %s",
                               rgm_cfgval_type_name(v));
    s = json_string_value(v);
    if (rgm_url_parse(s, &url) < 0 || strpbrk(s, "?#") || strcmp(url.path, "/") != 0)
        return rgm_cfgval_fail(
            c, key,
            "bad base URL \"%.200s\" (use http://HOST:PORT or https://HOST:PORT, "
            "no path)",
            s);
    return 0;
}

int rgm_cfgval_hostport(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v)
{
    char host[256];
    int port;

    if (!json_is_string(v))
        return rgm_cfgval_fail(c, key, "expected a \"HOST:PORT\" string, got %s",
                               rgm_cfgval_type_name(v));
    if (rgm_parse_hostport(json_string_value(v), host, sizeof(host), &port) < 0)
        return rgm_cfgval_fail(
            c, key, "bad address \"%.200s\" (use HOST:PORT, e.g. 0.0.0.0:5000 or [::]:5000)",
            json_string_value(v));
    return 0;
}

int rgm_cfgval_list(const rgm_cfgval_ctx_t *c, const char *key, const json_t *v, const char *what,
                    int (*check)(const rgm_cfgval_ctx_t *c, const char *key, const json_t *elem),
                    char ***out, size_t *out_len)
{
    char ikey[512];
    size_t i, n;

    if (json_is_string(v)) {
        if (check(c, key, v) < 0)
            return UV_EINVAL;
        *out = rgm_calloc(1, sizeof(char *));
        (*out)[0] = rgm_strdup(json_string_value(v));
        *out_len = 1;
        return 0;
    }
    if (!json_is_array(v))
        return rgm_cfgval_fail(c, key, "expected a string or an array of strings, got %s",
                               rgm_cfgval_type_name(v));
    n = json_array_size(v);
    if (n == 0)
        return rgm_cfgval_fail(c, key, "must list at least one %s", what);
    for (i = 0; i < n; i++) {
        if (snprintf(ikey, sizeof(ikey), "%s[%zu]", key, i) < 0)
            ikey[0] = '\0';
        if (check(c, ikey, json_array_get(v, i)) < 0)
            return UV_EINVAL;
    }
    *out = rgm_calloc(n, sizeof(char *));
    for (i = 0; i < n; i++)
        (*out)[i] = rgm_strdup(json_string_value(json_array_get(v, i)));
    *out_len = n;
    return 0;
}

/* ---- files ---- */

int rgm_cfgval_readable(const rgm_cfgval_ctx_t *c, const char *key, const char *path)
{
    if (access(path, R_OK) < 0)
        return rgm_cfgval_fail(c, key, "cannot read \"%.200s\": %s", path, strerror(errno));
    return 0;
}

int rgm_cfgval_secret_file(const rgm_cfgval_ctx_t *c, const char *key, const char *path, char **out)
{
    char buf[SECRET_MAX + 1];
    size_t n;
    FILE *f;
    int err = 0;

    f = fopen(path, "re");
    if (!f)
        return rgm_cfgval_fail(c, key, "cannot read \"%.200s\": %s", path, strerror(errno));
    n = fread(buf, 1, sizeof(buf), f);
    if (ferror(f))
        err = rgm_cfgval_fail(c, key, "cannot read \"%.200s\": %s", path, strerror(errno));
    else if (n > SECRET_MAX)
        err = rgm_cfgval_fail(c, key, "\"%.200s\" is larger than %d bytes", path, SECRET_MAX);
    while (err == 0 && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
        n--;
    if (err == 0 && n == 0)
        err = rgm_cfgval_fail(c, key, "\"%.200s\" is empty", path);
    else if (err == 0 && memchr(buf, '\0', n))
        err = rgm_cfgval_fail(c, key, "\"%.200s\" contains a NUL byte", path);
    if (err == 0)
        *out = rgm_strndup(buf, n);
    explicit_bzero(buf, sizeof(buf));
    /* a read-only stream: a failing fclose loses nothing */
    (void)fclose(f);
    return err;
}

/* ---- printers ---- */

json_t *rgm_cfgval_size_json(uint64_t n)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB"};
    char text[32];
    size_t i;
    int shown = -1;

    for (i = 0; i < RGM_ARRAY_SIZE(units); i++) {
        if (n == 0 || n % (1ULL << (10 * (i + 1))) != 0)
            break;
        shown = (int)i;
    }
    if (shown >= 0) {
        if (snprintf(text, sizeof(text), "%llu%s", (unsigned long long)(n >> (10 * (shown + 1))),
                     units[shown]) < 0)
            return NULL;
        return json_string(text);
    }
    if (n <= (uint64_t)INT64_MAX)
        return json_integer((json_int_t)n);
    if (snprintf(text, sizeof(text), "%llu", (unsigned long long)n) < 0) /* above JSON's int */
        return NULL;
    return json_string(text);
}

json_t *rgm_cfgval_duration_json(uint64_t ms)
{
    static const struct {
        const char *name;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}, {"ms", 1}};
    char text[128];
    size_t i, len = 0;
    int n;

    if (ms == 0)
        return json_string("0");
    for (i = 0; i < RGM_ARRAY_SIZE(units); i++) {
        if (ms < units[i].ms)
            continue;
        n = snprintf(text + len, sizeof(text) - len, "%llu%s",
                     (unsigned long long)(ms / units[i].ms), units[i].name);
        if (n < 0 || (size_t)n >= sizeof(text) - len)
            return NULL;
        len += (size_t)n;
        ms %= units[i].ms;
    }
    return json_string(text);
}
