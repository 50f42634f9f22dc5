/* Unit tests for src/core/util.c, src/core/buf.c and src/core/log.c: table-driven good and bad
 * inputs; logging to a temp file with reopen. */
#include "core/util.h"
#include "core/buf.h"
#include "core/log.h"

#include <errno.h>
#include <unistd.h>

#include <uv.h>

#include "tap.h"

static void test_size(void)
{
    static const struct {
        const char *in;
        int rc;
        uint64_t want;
    } t[] = {
        {"0", 0, 0},
        {"512", 0, 512},
        {"512B", 0, 512},
        {"10KB", 0, 10000},
        {"10MB", 0, 10000000},
        {"1GB", 0, 1000000000},
        {"2TB", 0, 2000000000000ULL},
        {"1K", 0, 1024},
        {"3M", 0, 3ULL << 20},
        {"1KiB", 0, 1024},
        {"50GiB", 0, 50ULL << 30},
        {"1.5GiB", 0, 3ULL << 29},
        {"0.5KiB", 0, 512},
        {"1TiB", 0, 1ULL << 40},
        {"18446744073709551615", 0, UINT64_MAX},
        {"", UV_EINVAL, 0},
        {"-1", UV_EINVAL, 0},
        {"5XB", UV_EINVAL, 0},
        {"1e3", UV_EINVAL, 0},
        {" 5", UV_EINVAL, 0},
        {"5 ", UV_EINVAL, 0},
        {"5kb", UV_EINVAL, 0},
        {"1.", UV_EINVAL, 0},
        {".5K", UV_EINVAL, 0},
        {"1.5", UV_EINVAL, 0},
        {"1.5B", UV_EINVAL, 0},
        {"+5", UV_EINVAL, 0},
        {"18446744073709551616", UV_ERANGE, 0},
        {"20000000TiB", UV_ERANGE, 0},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        uint64_t v = 12345;
        int rc = rgm_parse_size(t[i].in, &v);
        is_int(rc, t[i].rc, "parse_size(\"%s\") rc", t[i].in);
        if (t[i].rc == 0)
            is_int(v, t[i].want, "parse_size(\"%s\") value", t[i].in);
    }
}

static void test_duration(void)
{
    static const struct {
        const char *in;
        int rc;
        uint64_t want;
    } t[] = {
        {"0", 0, 0},
        {"90s", 0, 90000},
        {"5m", 0, 300000},
        {"1h30m", 0, 5400000},
        {"250ms", 0, 250},
        {"2d", 0, 172800000},
        {"1m30s500ms", 0, 90500},
        {"0s", 0, 0},
        {"5", UV_EINVAL, 0},
        {"", UV_EINVAL, 0},
        {"5x", UV_EINVAL, 0},
        {"-5s", UV_EINVAL, 0},
        {"1h-", UV_EINVAL, 0},
        {"1h 30m", UV_EINVAL, 0},
        {"s", UV_EINVAL, 0},
        {"1.5s", UV_EINVAL, 0},
        {"00", UV_EINVAL, 0},
        {"99999999999999999999s", UV_ERANGE, 0},
        {"9999999999999999d", UV_ERANGE, 0},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        uint64_t v = 12345;
        int rc = rgm_parse_duration(t[i].in, &v);
        is_int(rc, t[i].rc, "parse_duration(\"%s\") rc", t[i].in);
        if (t[i].rc == 0)
            is_int(v, t[i].want, "parse_duration(\"%s\") value", t[i].in);
    }
}

static void test_uint(void)
{
    static const struct {
        const char *in;
        uint64_t max;
        int rc;
        uint64_t want;
    } t[] = {
        {"0", 10, 0, 0},
        {"10", 10, 0, 10},
        {"65535", 65535, 0, 65535},
        {"11", 10, UV_ERANGE, 0},
        {"", 10, UV_EINVAL, 0},
        {"-1", 10, UV_EINVAL, 0},
        {"+1", 10, UV_EINVAL, 0},
        {" 1", 10, UV_EINVAL, 0},
        {"1 ", 10, UV_EINVAL, 0},
        {"0x10", 100, UV_EINVAL, 0},
        {"99999999999999999999", UINT64_MAX, UV_ERANGE, 0},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        uint64_t v = 7;
        int rc = rgm_parse_uint(t[i].in, t[i].max, &v);
        is_int(rc, t[i].rc, "parse_uint(\"%s\", %llu) rc", t[i].in, (unsigned long long)t[i].max);
        if (t[i].rc == 0)
            is_int(v, t[i].want, "parse_uint(\"%s\") value", t[i].in);
    }
}

static void test_hostport(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *host;
        int port;
    } t[] = {
        {"127.0.0.1:5000", 0, "127.0.0.1", 5000},
        {"0.0.0.0:0", 0, "0.0.0.0", 0},
        {"localhost:65535", 0, "localhost", 65535},
        {"[::1]:443", 0, "::1", 443},
        {"[::]:5000", 0, "::", 5000},
        {"cluster-mirror:5000", 0, "cluster-mirror", 5000},
        {"localhost", UV_EINVAL, NULL, 0},
        {":5000", UV_EINVAL, NULL, 0},
        {"host:", UV_EINVAL, NULL, 0},
        {"host:65536", UV_EINVAL, NULL, 0},
        {"host:-1", UV_EINVAL, NULL, 0},
        {"host:5x", UV_EINVAL, NULL, 0},
        {"::1:5000", UV_EINVAL, NULL, 0},
        {"[::1]5000", UV_EINVAL, NULL, 0},
        {"[]:5000", UV_EINVAL, NULL, 0},
        {"[::1:5000", UV_EINVAL, NULL, 0},
        {"ho st:5000", UV_EINVAL, NULL, 0},
        {"", UV_EINVAL, NULL, 0},
    };
    char host[64];
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        int port = -1;
        int rc = rgm_parse_hostport(t[i].in, host, sizeof(host), &port);
        is_int(rc, t[i].rc, "parse_hostport(\"%s\") rc", t[i].in);
        if (t[i].rc == 0) {
            is_str(host, t[i].host, "parse_hostport(\"%s\") host", t[i].in);
            is_int(port, t[i].port, "parse_hostport(\"%s\") port", t[i].in);
        }
    }
    {
        int port = -1;
        is_int(rgm_parse_hostport("averylonghostname:1", host, 8, &port), UV_EINVAL,
               "parse_hostport: host longer than the buffer");
    }
}

static void test_url(void)
{
    static const struct {
        const char *in;
        int rc;
        int is_https;
        const char *host;
        int port;
        const char *path;
    } t[] = {
        {"https://registry-1.docker.io", 0, 1, "registry-1.docker.io", 443, "/"},
        {"http://127.0.0.1:5000/v2/", 0, 0, "127.0.0.1", 5000, "/v2/"},
        {"HTTPS://Quay.IO/", 0, 1, "quay.io", 443, "/"},
        {"http://[::1]:8080/a?b=c", 0, 0, "::1", 8080, "/a?b=c"},
        {"http://[::1]", 0, 0, "::1", 80, "/"},
        {"https://h?x=1", 0, 1, "h", 443, "/?x=1"},
        {"https://h/p#frag", 0, 1, "h", 443, "/p"},
        {"ftp://h/", UV_EINVAL, 0, NULL, 0, NULL},
        {"h:5000", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://", UV_EINVAL, 0, NULL, 0, NULL},
        {"https:///x", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://h:/", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://h:0/", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://h:99999/", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://user:pw@h/", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://h/a b", UV_EINVAL, 0, NULL, 0, NULL},
        {"https://::1/", UV_EINVAL, 0, NULL, 0, NULL},
        {"", UV_EINVAL, 0, NULL, 0, NULL},
    };
    rgm_url_t u;
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        int rc = rgm_url_parse(t[i].in, &u);
        is_int(rc, t[i].rc, "url_parse(\"%s\") rc", t[i].in);
        if (t[i].rc == 0) {
            is_int(u.is_https, t[i].is_https, "url_parse(\"%s\") https", t[i].in);
            is_str(u.host, t[i].host, "url_parse(\"%s\") host", t[i].in);
            is_int(u.port, t[i].port, "url_parse(\"%s\") port", t[i].in);
            is_str(u.path, t[i].path, "url_parse(\"%s\") path", t[i].in);
        }
    }
}

static void test_query(void)
{
    static const struct {
        const char *q, *key;
        int rc;
        const char *want;
    } t[] = {
        {"ns=docker.io", "ns", 1, "docker.io"},
        {"a=1&ns=ghcr.io&b=2", "ns", 1, "ghcr.io"},
        {"?ns=quay.io", "ns", 1, "quay.io"},
        {"a=1&b=2", "ns", 0, NULL},
        {"nss=x&ns=y", "ns", 1, "y"},
        {"xns=x", "ns", 0, NULL},
        {"ns", "ns", 1, ""},
        {"ns=", "ns", 1, ""},
        {"scope=repository%3Alib%2Fubuntu%3Apull", "scope", 1, "repository:lib/ubuntu:pull"},
        {"q=a+b", "q", 1, "a b"},
        {"ns=%zz", "ns", UV_EINVAL, NULL},
        {"ns=%4", "ns", UV_EINVAL, NULL},
        {"ns=a%00b", "ns", UV_EINVAL, NULL},
        {"ns=0123456789abcdef0123456789abcdef", "ns", UV_ENOBUFS, NULL},
        {"", "ns", 0, NULL},
    };
    char out[32];
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        int rc = rgm_query_get(t[i].q, t[i].key, out, sizeof(out));
        is_int(rc, t[i].rc, "query_get(\"%s\", \"%s\") rc", t[i].q, t[i].key);
        if (t[i].rc == 1)
            is_str(out, t[i].want, "query_get(\"%s\", \"%s\") value", t[i].q, t[i].key);
    }
    is_int(rgm_url_encode("repository:lib/x:pull a~b", out, 16), UV_ENOBUFS,
           "url_encode: too long for the buffer");
    {
        char big[128];
        is_int(rgm_url_encode("repository:lib/x:pull a~b", big, sizeof(big)), 0, "url_encode rc");
        is_str(big, "repository%3Alib%2Fx%3Apull%20a~b", "url_encode value");
        is_int(rgm_query_get("s=repository%3Alib%2Fx%3Apull%20a~b", "s", big, sizeof(big)), 1,
               "query_get decodes url_encode");
        is_str(big, "repository:lib/x:pull a~b", "url_encode round trip");
    }
}

static void test_b64(void)
{
    static const struct {
        const char *plain, *enc;
    } t[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
        {"user:pass", "dXNlcjpwYXNz"},
    };
    static const char *const bad[] = {
        "Zg=", "Z", "Zm9v!", "Zg==Zg==", "Zh==", "Zm9=", "====", "Zg==="};
    char enc[64];
    unsigned char dec[64];
    size_t i;
    int n;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        n = rgm_b64_encode(t[i].plain, strlen(t[i].plain), enc, sizeof(enc));
        is_int(n, strlen(t[i].enc), "b64_encode(\"%s\") length", t[i].plain);
        is_str(enc, t[i].enc, "b64_encode(\"%s\")", t[i].plain);
        n = rgm_b64_decode(t[i].enc, strlen(t[i].enc), dec, sizeof(dec));
        is_int(n, strlen(t[i].plain), "b64_decode(\"%s\") length", t[i].enc);
        is_str((char *)dec, t[i].plain, "b64_decode(\"%s\")", t[i].enc);
    }
    n = rgm_b64_decode("Zm9vYg", 6, dec, sizeof(dec));
    is_int(n, 4, "b64_decode without padding");
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++)
        is_int(rgm_b64_decode(bad[i], strlen(bad[i]), dec, sizeof(dec)), UV_EINVAL,
               "b64_decode(\"%s\") rejected", bad[i]);
    is_int(rgm_b64_encode("foo", 3, enc, 4), UV_ENOBUFS, "b64_encode: no room for the NUL");
    is_int(rgm_b64_encode("foo", 3, enc, 5), 4, "b64_encode: exact room");
    is_int(rgm_b64_decode("Zm9v", 4, dec, 3), UV_ENOBUFS, "b64_decode: no room for the NUL");
    is_int(rgm_b64_decode("Zm9v", 4, dec, 4), 3, "b64_decode: exact room");
}

static void test_misc(void)
{
    static const unsigned char bytes[] = {0x00, 0x01, 0xab, 0xff};
    char hex[9], date[32];
    uint64_t t0;

    rgm_hex(bytes, sizeof(bytes), hex);
    is_str(hex, "0001abff", "hex");
    t0 = rgm_time_ms();
    ok(t0 > 1600000000000ULL, "time_ms is after 2020 (%llu)", (unsigned long long)t0);
    rgm_http_date(date);
    is_int(strlen(date), 29, "http_date length (%s)", date);
    ok(strcmp(date + 25, " GMT") == 0 && date[3] == ',', "http_date shape");
    ok(rgm_strcaseeq("Docker.IO", "docker.io"), "strcaseeq equal");
    ok(!rgm_strcaseeq("docker.io", "docker.i"), "strcaseeq prefix differs");
    ok(!rgm_strcaseeq("a", "b"), "strcaseeq differs");
    ok(rgm_strcaseeq("", ""), "strcaseeq empty");
}

static void test_buf(void)
{
    rgm_buf_t b;
    char big[100];
    int i, rc = 0;

    rgm_buf_init(&b, 100);
    is_int(b.len, 0, "buf: empty at init");
    is_str(rgm_buf_cstr(&b), "", "buf: cstr of empty buffer");
    is_int(rgm_buf_append(&b, "hello", 5), 0, "buf: append");
    is_int(rgm_buf_appendc(&b, ' '), 0, "buf: appendc");
    is_int(rgm_buf_appendf(&b, "%s %d", "world", 42), 0, "buf: appendf");
    is_int(b.len, 14, "buf: len counts no NUL");
    is_str(rgm_buf_cstr(&b), "hello world 42", "buf: contents");
    ok(b.len <= b.cap && b.cap <= b.max, "buf: invariant len <= cap <= max");
    rgm_buf_consume(&b, 6);
    is_str(rgm_buf_cstr(&b), "world 42", "buf: consume drops the front");
    rgm_buf_consume(&b, b.len);
    is_int(b.len, 0, "buf: consume all");
    memset(big, 'x', sizeof(big));
    is_int(rgm_buf_append(&b, big, 100), 0, "buf: append up to max");
    is_int(b.cap, 100, "buf: cap capped at max");
    is_int(rgm_buf_appendc(&b, 'y'), UV_ENOBUFS, "buf: appendc past max");
    is_int(b.len, 100, "buf: nothing appended on ENOBUFS");
    ok(rgm_buf_cstr(&b)[100] == '\0', "buf: cstr works when full");
    rgm_buf_reset(&b);
    is_int(rgm_buf_appendf(&b, "%0101d", 1), UV_ENOBUFS, "buf: appendf past max");
    is_int(b.len, 0, "buf: appendf appends nothing on ENOBUFS");
    is_int(rgm_buf_append(&b, big, 101), UV_ENOBUFS, "buf: append past max");
    rgm_buf_free(&b);
    ok(b.data == NULL && b.len == 0 && b.max == 100, "buf: free keeps max");

    rgm_buf_init(&b, 1 << 20);
    for (i = 0; i < 10000 && rc == 0; i++)
        rc = rgm_buf_appendf(&b, "%04d", i);
    is_int(rc, 0, "buf: many appends grow");
    is_int(b.len, 40000, "buf: grown length");
    ok(memcmp(b.data + 39996, "9999", 4) == 0, "buf: grown contents");
    rgm_buf_free(&b);
}

static void test_log(void)
{
    char tmpl[] = "/tmp/rgm-test-log-XXXXXX", path[64], moved[64], q[16], line[512];
    FILE *f;
    int n = 0;

    is_str(rgm_log_quote("a\"b\\c\n\x01", line, sizeof(line)), "\"a\\\"b\\\\c\\n\\x01\"",
           "log_quote escapes");
    is_str(rgm_log_quote(NULL, line, sizeof(line)), "\"\"", "log_quote NULL");
    is_str(rgm_log_quote("0123456789abcdef", q, sizeof(q)), "\"0123456789...\"",
           "log_quote truncates with ...");
    is_int(strlen(q), 15, "log_quote fits the buffer");
    is_int(rgm_log_parse_level("warn"), RGM_LOG_WARN, "parse_level warn");
    ok(rgm_log_parse_level("WARN") < 0 && rgm_log_parse_level("") < 0, "parse_level unknown");
    if (!mkdtemp(tmpl)) {
        ok(0, "mkdtemp: %s", strerror(errno));
        return;
    }
    if (snprintf(path, sizeof(path), "%s/log", tmpl) < 0 ||
        snprintf(moved, sizeof(moved), "%s/log.1", tmpl) < 0)
        abort();
    is_int(rgm_log_open("/nonexistent/dir/log", RGM_LOG_INFO), -ENOENT, "log_open: bad path");
    is_int(rgm_log_open(path, RGM_LOG_INFO), 0, "log_open file");
    rgm_log(RGM_LOG_DEBUG, "test", "hidden %d", n++);
    is_int(n, 0, "disabled level does not evaluate arguments");
    rgm_log(RGM_LOG_INFO, "test", "first \"%s\"", "x");
    ok(rename(path, moved) == 0, "rotate");
    is_int(rgm_log_reopen(), 0, "log_reopen");
    rgm_log_kv(RGM_LOG_WARN, "access", "status=%d", 200);
    rgm_log_close();
    f = fopen(moved, "r");
    ok(f && fgets(line, sizeof(line), f), "rotated file has the first line");
    ok(strncmp(line, "time=", 5) == 0 && line[15] == 'T' && line[28] == 'Z',
       "line starts with an RFC 3339 time (%.30s)", line);
    ok(strstr(line, "Z level=info mod=test msg=\"first \\\"x\\\"\"\n") != NULL, "logfmt line: %s",
       line);
    ok(f && !fgets(line, sizeof(line), f), "one line only (debug hidden)");
    if (f && fclose(f) != 0)
        abort();
    f = fopen(path, "r");
    ok(f && fgets(line, sizeof(line), f) && strstr(line, "level=warn mod=access status=200\n"),
       "reopened file has the next line");
    if (f && fclose(f) != 0)
        abort();
    ok(unlink(path) == 0 && unlink(moved) == 0 && rmdir(tmpl) == 0, "temp files removed");
    rgm_log_level_cur = RGM_LOG_INFO;
}

int main(void)
{
    test_size();
    test_duration();
    test_uint();
    test_hostport();
    test_url();
    test_query();
    test_b64();
    test_misc();
    test_buf();
    test_log();
    return tap_done();
}
