/* Unit tests for src/core/config-value.c: every parser with good and bad JSON values (the
 * message names the file and the key), the secret file reader, and the printers, whose output
 * must parse back to the same value. Temp files live in a mkdtemp directory removed at the
 * end. */
#include "core/config-value.h"

#include <errno.h>
#include <unistd.h>

#include <uv.h>

#include "core/log.h"
#include "core/util.h"
#include "tap.h"

static char tmpdir[] = "/tmp/rgm-test-config-value-XXXXXX";
static char paths[16][512];
static size_t npaths;
static char err[512];
static const rgm_cfgval_ctx_t ctx = {"test.json", err, sizeof(err)};

static const char *write_file(const char *name, const void *data, size_t len)
{
    char *p;
    FILE *f;

    RGM_BUG_ON(npaths >= RGM_ARRAY_SIZE(paths));
    p = paths[npaths++];
    if (snprintf(p, sizeof(paths[0]), "%s/%s", tmpdir, name) < 0)
        abort();
    f = fopen(p, "w");
    RGM_BUG_ON(!f);
    RGM_BUG_ON(fwrite(data, 1, len, f) != len);
    RGM_BUG_ON(fclose(f) != 0);
    return p;
}

static void cleanup(void)
{
    size_t i;

    for (i = 0; i < npaths; i++) {
        if (unlink(paths[i]) < 0 && errno != ENOENT)
            printf("# unlink %s: %s\n", paths[i], strerror(errno));
    }
    if (rmdir(tmpdir) < 0)
        printf("# rmdir %s: %s\n", tmpdir, strerror(errno));
}

/* The JSON text as a value (decref'd by the caller). */
static json_t *J(const char *text)
{
    json_t *v = json_loads(text, JSON_DECODE_ANY, NULL);

    RGM_BUG_ON(!v);
    return v;
}

/* err holds "test.json: KEY: " followed by something containing want. */
static void is_msg(const char *key, const char *want, const char *what)
{
    char prefix[256];
    int good;

    if (snprintf(prefix, sizeof(prefix), "test.json: %s: ", key) < 0)
        abort();
    good = strncmp(err, prefix, strlen(prefix)) == 0 && strstr(err, want) != NULL;
    ok(good, "%s: message \"%s\" names the key and has '%s'", what, err, want);
}

static void test_fail(void)
{
    char small[12];
    const rgm_cfgval_ctx_t tiny = {"file.json", small, sizeof(small)};
    const rgm_cfgval_ctx_t none = {"file.json", NULL, 0};

    is_int(rgm_cfgval_fail(&ctx, "a.b", "bad %d", 5), UV_EINVAL, "fail returns UV_EINVAL");
    is_str(err, "test.json: a.b: bad 5", "fail: FILE: KEY: message");
    is_int(rgm_cfgval_fail(&ctx, NULL, "top %s", "x"), UV_EINVAL, "fail without a key");
    is_str(err, "test.json: top x", "fail without a key: FILE: message");
    is_int(rgm_cfgval_fail(&ctx, "", "empty"), UV_EINVAL, "fail with an empty key");
    is_str(err, "test.json: empty", "fail with an empty key: no empty path");
    is_int(rgm_cfgval_fail(&tiny, "long.key.path", "a long message"), UV_EINVAL, "fail: small");
    ok(strlen(small) == sizeof(small) - 1 && strncmp(small, "file.json: ", 11) == 0,
       "fail: cut short and terminated (%s)", small);
    is_int(rgm_cfgval_fail(&none, "k", "x"), UV_EINVAL, "fail with no buffer");
}

static void test_types(void)
{
    static const struct {
        const char *json, *want;
    } t[] = {
        {"{}", "an object"}, {"[]", "an array"},    {"\"s\"", "a string"},  {"1", "an integer"},
        {"1.5", "a number"}, {"true", "a boolean"}, {"false", "a boolean"}, {"null", "null"},
    };
    size_t i;
    json_t *v;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        v = J(t[i].json);
        is_str(rgm_cfgval_type_name(v), t[i].want, "type name of %s", t[i].json);
        json_decref(v);
    }
}

static void test_string(void)
{
    const char *s = "unset";
    json_t *v;

    v = J("\"abc\"");
    is_int(rgm_cfgval_string(&ctx, "k", v, 0, &s), 0, "string: accepted");
    is_str(s, "abc", "string: value");
    json_decref(v);
    v = J("null");
    is_int(rgm_cfgval_string(&ctx, "k", v, 1, &s), 0, "string: null when nullable");
    ok(s == NULL, "string: null gives NULL");
    is_int(rgm_cfgval_string(&ctx, "k", v, 0, &s), UV_EINVAL, "string: null refused otherwise");
    is_msg("k", "expected a string, got null", "string: null");
    json_decref(v);
    v = J("\"\"");
    is_int(rgm_cfgval_string(&ctx, "k", v, 1, &s), UV_EINVAL, "string: empty refused");
    is_msg("k", "must not be empty", "string: empty");
    json_decref(v);
    v = json_stringn("a\0b", 3);
    is_int(rgm_cfgval_string(&ctx, "k", v, 0, &s), UV_EINVAL, "string: NUL refused");
    is_msg("k", "contains a NUL character", "string: NUL");
    json_decref(v);
    v = J("5");
    is_int(rgm_cfgval_string(&ctx, "x.y", v, 1, &s), UV_EINVAL, "string: integer refused");
    is_msg("x.y", "expected a string, got an integer", "string: integer");
    json_decref(v);
}

static void test_bool_uint(void)
{
    uint64_t u = 7;
    json_t *v;
    int b = 5;

    v = J("true");
    ok(rgm_cfgval_bool(&ctx, "k", v, &b) == 0 && b == 1, "bool: true");
    json_decref(v);
    v = J("false");
    ok(rgm_cfgval_bool(&ctx, "k", v, &b) == 0 && b == 0, "bool: false");
    json_decref(v);
    v = J("1");
    is_int(rgm_cfgval_bool(&ctx, "k", v, &b), UV_EINVAL, "bool: 1 refused");
    is_msg("k", "expected true or false, got an integer", "bool: 1");
    json_decref(v);
    v = J("\"true\"");
    is_int(rgm_cfgval_bool(&ctx, "k", v, &b), UV_EINVAL, "bool: \"true\" refused");
    is_int(b, 0, "bool: nothing stored on error");
    json_decref(v);

    v = J("16");
    ok(rgm_cfgval_uint(&ctx, "k", v, 1, 1024, &u) == 0 && u == 16, "uint: in range");
    json_decref(v);
    v = J("1024");
    ok(rgm_cfgval_uint(&ctx, "k", v, 1, 1024, &u) == 0 && u == 1024, "uint: at max");
    json_decref(v);
    v = J("1025");
    is_int(rgm_cfgval_uint(&ctx, "k", v, 1, 1024, &u), UV_EINVAL, "uint: above max");
    is_msg("k", "1025 is out of range 1..1024", "uint: above max");
    is_int(u, 1024, "uint: nothing stored on error");
    json_decref(v);
    v = J("-3");
    is_int(rgm_cfgval_uint(&ctx, "k", v, 0, 9, &u), UV_EINVAL, "uint: negative");
    is_msg("k", "-3 is out of range 0..9", "uint: negative");
    json_decref(v);
    v = J("2.0");
    is_int(rgm_cfgval_uint(&ctx, "k", v, 0, 9, &u), UV_EINVAL, "uint: real refused");
    is_msg("k", "expected an integer, got a number", "uint: real");
    json_decref(v);
    v = J("\"5\"");
    is_int(rgm_cfgval_uint(&ctx, "k", v, 0, 9, &u), UV_EINVAL, "uint: string refused");
    json_decref(v);
}

static void test_size(void)
{
    static const struct {
        const char *json;
        uint64_t want;
    } good[] = {
        {"0", 0},
        {"512", 512},
        {"\"512\"", 512},
        {"\"10MB\"", 10000000},
        {"\"1.5GiB\"", 3ULL << 29},
        {"\"16KiB\"", 16384},
    };
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"-1", "bad size -1 (must not be negative)"},
        {"\"5XB\"", "bad size \"5XB\" (use 512, 10MB, 50GiB)"},
        {"\"99999999999TiB\"", "bad size \"99999999999TiB\": too large"},
        {"1.5", "expected a size (\"10MB\", \"50GiB\" or an integer), got a number"},
        {"true", "expected a size"},
        {"\"2TiB\"", "2199023255552 is out of range 0..1099511627776"},
    };
    uint64_t u;
    size_t i;
    json_t *v;

    for (i = 0; i < RGM_ARRAY_SIZE(good); i++) {
        u = 1;
        v = J(good[i].json);
        is_int(rgm_cfgval_size(&ctx, "k", v, 0, 1ULL << 40, &u), 0, "size %s", good[i].json);
        is_int(u, good[i].want, "size %s: value", good[i].json);
        json_decref(v);
    }
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++) {
        v = J(bad[i].json);
        is_int(rgm_cfgval_size(&ctx, "max_cache_bytes", v, 0, 1ULL << 40, &u), UV_EINVAL,
               "size %s refused", bad[i].json);
        is_msg("max_cache_bytes", bad[i].want, bad[i].json);
        json_decref(v);
    }
    v = J("\"512\"");
    is_int(rgm_cfgval_size(&ctx, "k", v, 1024, 2048, &u), UV_EINVAL, "size below min");
    is_msg("k", "512 is out of range 1024..2048", "size below min");
    json_decref(v);
}

static void test_duration(void)
{
    static const struct {
        const char *json;
        uint64_t want;
    } good[] = {
        {"\"0\"", 0},
        {"\"250ms\"", 250},
        {"\"90s\"", 90000},
        {"\"1h30m\"", 5400000},
        {"\"365d\"", 365ULL * 86400000},
    };
    static const struct {
        const char *json, *want;
    } bad[] = {
        {"\"5x\"", "bad duration \"5x\" (use 90s, 5m, 1h)"},
        {"\"60\"", "bad duration \"60\""},
        {"\"\"", "bad duration \"\""},
        {"60", "expected a duration string (\"90s\", \"5m\", \"1h\"), got an integer"},
        {"\"366d\"", "duration \"366d\" is too long (at most 365d)"},
        {"\"99999999999999999999d\"", "bad duration"},
    };
    uint64_t u;
    size_t i;
    json_t *v;

    for (i = 0; i < RGM_ARRAY_SIZE(good); i++) {
        u = 1;
        v = J(good[i].json);
        is_int(rgm_cfgval_duration(&ctx, "k", v, 0, &u), 0, "duration %s", good[i].json);
        is_int(u, good[i].want, "duration %s: value", good[i].json);
        json_decref(v);
    }
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++) {
        v = J(bad[i].json);
        is_int(rgm_cfgval_duration(&ctx, "registries.r.io.tag_ttl", v, 0, &u), UV_EINVAL,
               "duration %s refused", bad[i].json);
        is_msg("registries.r.io.tag_ttl", bad[i].want, bad[i].json);
        json_decref(v);
    }
    v = J("\"0\"");
    is_int(rgm_cfgval_duration(&ctx, "k", v, 1, &u), UV_EINVAL, "duration 0 with min 1");
    is_msg("k", "must be greater than 0", "duration 0 with min 1");
    json_decref(v);
    v = J("\"1s\"");
    is_int(rgm_cfgval_duration(&ctx, "k", v, 5000, &u), UV_EINVAL, "duration below min 5s");
    is_msg("k", "must be at least 5000ms", "duration below min 5s");
    json_decref(v);
}

static void test_level(void)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    char text[32];
    size_t i;
    json_t *v;
    int level = -1;

    for (i = 0; i < RGM_ARRAY_SIZE(names); i++) {
        if (snprintf(text, sizeof(text), "\"%s\"", names[i]) < 0)
            abort();
        v = J(text);
        ok(rgm_cfgval_level(&ctx, "log_level", v, &level) == 0 &&
               level == rgm_log_parse_level(names[i]),
           "level %s parses as the log module's", names[i]);
        is_str(rgm_cfgval_level_name(level), names[i], "level %s: name printed back", names[i]);
        json_decref(v);
    }
    v = J("\"loud\"");
    is_int(rgm_cfgval_level(&ctx, "log_level", v, &level), UV_EINVAL, "level: unknown name");
    is_msg("log_level", "expected one of \"error\", \"warn\", \"info\", \"debug\"", "level");
    json_decref(v);
    v = J("2");
    is_int(rgm_cfgval_level(&ctx, "log_level", v, &level), UV_EINVAL, "level: number refused");
    json_decref(v);
    ok(rgm_cfgval_level_name(-1) == NULL && rgm_cfgval_level_name(4) == NULL,
       "level name: NULL outside the levels");
}

static void test_names_urls(void)
{
    char *out = NULL;

    is_int(rgm_cfgval_regname(&ctx, "default_registry", "ghcr.io"), 0, "regname: good");
    is_int(rgm_cfgval_regname(&ctx, "default_registry", "GHCR.io"), UV_EINVAL, "regname: upper");
    is_msg("default_registry", "bad registry name \"GHCR.io\" (a lowercase host name", "regname");
    ok(rgm_cfgval_is_registry_name("a.b-c.io:5000") && !rgm_cfgval_is_registry_name("a.io.") &&
           !rgm_cfgval_is_registry_name(NULL),
       "is_registry_name: port, trailing dot, NULL");

    is_int(rgm_cfgval_endpoint(&ctx, "endpoint", "https://r.io:5000//", &out), 0, "endpoint ok");
    is_str(out, "https://r.io:5000", "endpoint: trailing slashes stripped");
    RGM_FREE(out);
    is_int(rgm_cfgval_endpoint(&ctx, "endpoint", "http://127.0.0.1:5001/prefix", &out), 0,
           "endpoint with a path");
    is_str(out, "http://127.0.0.1:5001/prefix", "endpoint: path kept");
    RGM_FREE(out);
    is_int(rgm_cfgval_endpoint(&ctx, "e", "https://u:p@r.io", &out), UV_EINVAL,
           "endpoint: userinfo");
    is_msg("e", "bad URL", "endpoint: userinfo");
    is_int(rgm_cfgval_endpoint(&ctx, "e", "https://r.io#f", &out), UV_EINVAL, "endpoint: fragment");
    is_int(rgm_cfgval_endpoint(&ctx, "e", "ftp://r.io", &out), UV_EINVAL, "endpoint: scheme");
    is_msg("e", "bad URL \"ftp://r.io\" (use http://HOST[:PORT] or https://HOST[:PORT])", "ftp");
    ok(out == NULL, "endpoint: nothing allocated on error");
}

static void test_lists(void)
{
    char **list = NULL;
    size_t n = 0;
    json_t *v;

    v = J("\"0.0.0.0:5000\"");
    is_int(rgm_cfgval_list(&ctx, "listen", v, "address", rgm_cfgval_hostport, &list, &n), 0,
           "list: one string");
    ok(n == 1 && strcmp(list[0], "0.0.0.0:5000") == 0, "list: one string is a list of one");
    free(list[0]);
    RGM_FREE(list);
    json_decref(v);
    v = J("[\"127.0.0.1:1\", \"[::1]:2\"]");
    is_int(rgm_cfgval_list(&ctx, "listen", v, "address", rgm_cfgval_hostport, &list, &n), 0,
           "list: array");
    ok(n == 2 && strcmp(list[1], "[::1]:2") == 0, "list: array copied in order");
    free(list[0]);
    free(list[1]);
    RGM_FREE(list);
    json_decref(v);
    v = J("[\"127.0.0.1:1\", 5]");
    is_int(rgm_cfgval_list(&ctx, "listen", v, "address", rgm_cfgval_hostport, &list, &n), UV_EINVAL,
           "list: element of the wrong type");
    is_msg("listen[1]", "expected a \"HOST:PORT\" string, got an integer", "list element");
    ok(list == NULL, "list: nothing allocated on error");
    json_decref(v);
    v = J("[\"127.0.0.1:99999\"]");
    is_int(rgm_cfgval_list(&ctx, "listen", v, "address", rgm_cfgval_hostport, &list, &n), UV_EINVAL,
           "list: bad element");
    is_msg("listen[0]", "bad address \"127.0.0.1:99999\"", "list: bad element");
    json_decref(v);
    v = J("[]");
    is_int(rgm_cfgval_list(&ctx, "listen", v, "address", rgm_cfgval_hostport, &list, &n), UV_EINVAL,
           "list: empty");
    is_msg("listen", "must list at least one address", "list: empty");
    json_decref(v);
    v = J("{}");
    is_int(rgm_cfgval_list(&ctx, "listen", v, "address", rgm_cfgval_hostport, &list, &n), UV_EINVAL,
           "list: object");
    is_msg("listen", "expected a string or an array of strings, got an object", "list: object");
    json_decref(v);
}

static void test_files(void)
{
    char big[4097];
    const char *pw, *crlf, *empty, *nul, *large, *max;
    char *out = NULL;

    pw = write_file("pw", "s3cr3t-value\n", 13);
    crlf = write_file("crlf", "abc\r\n\r\n", 7);
    empty = write_file("empty", "\n", 1);
    nul = write_file("nul", "hunter2\0x", 9);
    memset(big, 'x', sizeof(big));
    large = write_file("large", big, sizeof(big));
    max = write_file("max", big, sizeof(big) - 1);

    is_int(rgm_cfgval_readable(&ctx, "ca_file", pw), 0, "readable: a file");
    is_int(rgm_cfgval_readable(&ctx, "ca_file", "/nonexistent/x"), UV_EINVAL, "readable: missing");
    is_msg("ca_file", "cannot read \"/nonexistent/x\": No such file", "readable: missing");

    is_int(rgm_cfgval_secret_file(&ctx, "pf", pw, &out), 0, "secret: read");
    is_str(out, "s3cr3t-value", "secret: newline stripped");
    RGM_FREE(out);
    is_int(rgm_cfgval_secret_file(&ctx, "pf", crlf, &out), 0, "secret: CR LF");
    is_str(out, "abc", "secret: every trailing CR and LF stripped");
    RGM_FREE(out);
    is_int(rgm_cfgval_secret_file(&ctx, "pf", max, &out), 0, "secret: 4096 bytes");
    ok(out && strlen(out) == 4096, "secret: 4096 bytes kept");
    RGM_FREE(out);
    is_int(rgm_cfgval_secret_file(&ctx, "pf", large, &out), UV_EINVAL, "secret: too large");
    is_msg("pf", "is larger than 4096 bytes", "secret: too large");
    is_int(rgm_cfgval_secret_file(&ctx, "pf", empty, &out), UV_EINVAL, "secret: empty");
    is_msg("pf", "is empty", "secret: empty");
    is_int(rgm_cfgval_secret_file(&ctx, "pf", nul, &out), UV_EINVAL, "secret: NUL");
    is_msg("pf", "contains a NUL byte", "secret: NUL");
    ok(!strstr(err, "hunter2"), "secret: the content is not in the message");
    is_int(rgm_cfgval_secret_file(&ctx, "pf", "/nonexistent/pw", &out), UV_EINVAL,
           "secret: missing");
    is_msg("pf", "cannot read \"/nonexistent/pw\"", "secret: missing");
    is_int(rgm_cfgval_secret_file(&ctx, "pf", tmpdir, &out), UV_EINVAL, "secret: a directory");
    ok(out == NULL, "secret: nothing allocated on errors");
    is_int(rgm_cfgval_secret_file(&ctx, "pf", pw, &out), 0, "secret: read again");
    ok(!strstr(err, "s3cr3t"), "secret: no message mentions the content");
    RGM_FREE(out);
}

/* value printed by the printer, and the parser's reading of it */
static void printed_size(uint64_t n, const char *want_text, json_int_t want_int)
{
    json_t *v = rgm_cfgval_size_json(n);
    uint64_t back = 0;

    if (want_text)
        is_str(json_string_value(v), want_text, "size %llu printed", (unsigned long long)n);
    else
        ok(json_is_integer(v) && json_integer_value(v) == want_int,
           "size %llu printed as an integer", (unsigned long long)n);
    ok(rgm_cfgval_size(&ctx, "k", v, 0, UINT64_MAX, &back) == 0 && back == n,
       "size %llu parses back", (unsigned long long)n);
    json_decref(v);
}

static void printed_duration(uint64_t ms, const char *want)
{
    json_t *v = rgm_cfgval_duration_json(ms);
    uint64_t back = 1;

    is_str(json_string_value(v), want, "duration %llu ms printed", (unsigned long long)ms);
    ok(rgm_cfgval_duration(&ctx, "k", v, 0, &back) == 0 && back == ms,
       "duration %llu ms parses back", (unsigned long long)ms);
    json_decref(v);
}

static void test_printers(void)
{
    uint64_t ms;

    printed_size(0, NULL, 0);
    printed_size(1023, NULL, 1023);
    printed_size(1024, "1KiB", 0);
    printed_size(4096, "4KiB", 0);
    printed_size(16384, "16KiB", 0);
    printed_size(1000000, NULL, 1000000);
    printed_size(1025, NULL, 1025);
    printed_size(3ULL << 29, "1536MiB", 0);
    printed_size(50ULL << 30, "50GiB", 0);
    printed_size(1ULL << 40, "1TiB", 0);
    printed_size(1ULL << 50, "1024TiB", 0);
    printed_size((uint64_t)INT64_MAX, NULL, INT64_MAX);
    printed_size(UINT64_MAX, "18446744073709551615", 0);

    printed_duration(0, "0");
    printed_duration(1, "1ms");
    printed_duration(250, "250ms");
    printed_duration(1000, "1s");
    printed_duration(60000, "1m");
    printed_duration(90000, "1m30s");
    printed_duration(5400000, "1h30m");
    printed_duration(86400001, "1d1ms");
    printed_duration(365ULL * 86400000, "365d");
    printed_duration(90061001, "1d1h1m1s1ms");
    /* a sweep: every printed duration parses back to itself (util's parser: no 365d cap) */
    for (ms = 1; ms < 400ULL * 86400000; ms = ms * 7 + 3) {
        json_t *v = rgm_cfgval_duration_json(ms);
        uint64_t back = 0;
        int same = v && rgm_parse_duration(json_string_value(v), &back) == 0 && back == ms;

        json_decref(v);
        if (!same)
            break;
    }
    ok(ms >= 400ULL * 86400000, "duration sweep: every value round-trips (stopped at %llu)",
       (unsigned long long)ms);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_fail();
    test_types();
    test_string();
    test_bool_uint();
    test_size();
    test_duration();
    test_level();
    test_names_urls();
    test_lists();
    test_files();
    test_printers();
    cleanup();
    return tap_done();
}
