/* Unit tests for src/core/config.c and the schema walk of src/core/config-schema.c: defaults,
 * the documented example, good files, every class of error (message names the file, the key
 * and the problem), "//" keys, --registry, aliases; the tables themselves (widths, limits,
 * every key documented in conf/regmirror.json), null for unset keys, deep copies, serve's
 * command line, and the effective configuration (redacted, printed back unchanged). Temp
 * files live in a mkdtemp directory that is removed at the end. */
#include "core/config.h"

#include <errno.h>
#include <stdarg.h>
#include <unistd.h>

#include <uv.h>

#include "core/config-schema.h"
#include "core/log.h"
#include "tap.h"

static char tmpdir[] = "/tmp/rgm-test-config-XXXXXX";
static char paths[128][512];
static size_t npaths;

/* Write a file under tmpdir; returns its path (static storage). */
static const char *write_file(const char *name, const char *text)
{
    char *p;
    FILE *f;

    RGM_BUG_ON(npaths >= RGM_ARRAY_SIZE(paths));
    p = paths[npaths++];
    if (snprintf(p, sizeof(paths[0]), "%s/%s", tmpdir, name) < 0)
        abort();
    f = fopen(p, "w");
    RGM_BUG_ON(!f);
    fputs(text, f);
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

/* Load text as NAME into a default config; check rc and that the message contains want. */
static void load_bad(const char *name, const char *text, const char *want, const char *what)
{
    rgm_config_t cfg;
    char err[512];
    const char *path = write_file(name, text);
    int rc;

    rgm_config_init(&cfg);
    rc = rgm_config_load_file(&cfg, path, err, sizeof(err));
    is_int(rc, UV_EINVAL, "%s: rejected", what);
    ok(strstr(err, want) != NULL, "%s: message has '%s'", what, want);
    if (!strstr(err, want))
        printf("#   message: %s\n", err);
    ok(strstr(err, name) != NULL, "%s: message names the file", what);
    /* all or nothing: defaults still in place */
    is_str(cfg.listen[0], "127.0.0.1:5000", "%s: config unchanged", what);
    is_int(cfg.registries_len, 7, "%s: registries unchanged", what);
    rgm_config_free(&cfg);
}

static void test_defaults(void)
{
    rgm_config_t cfg;
    const rgm_registry_cfg_t *r;
    char err[256];

    rgm_config_init(&cfg);
    is_int(cfg.listen_len, 1, "defaults: one listen address");
    is_str(cfg.listen[0], "127.0.0.1:5000", "defaults: listen");
    is_str(cfg.storage, "./regmirror-data", "defaults: storage");
    is_int(cfg.max_cache_bytes, 0, "defaults: max_cache_bytes unlimited");
    is_str(cfg.default_registry, "docker.io", "defaults: default_registry");
    is_int(cfg.allow_any_registry, 0, "defaults: allow_any_registry");
    is_int(cfg.max_parallel_fetches, 16, "defaults: max_parallel_fetches");
    is_int(cfg.registries_len, 7, "defaults: 7 registries");
    r = rgm_config_registry(&cfg, "docker.io");
    ok(r != NULL, "defaults: docker.io configured");
    if (r) {
        is_str(r->endpoint, "https://registry-1.docker.io", "defaults: docker.io endpoint");
        is_int(r->tag_ttl_ms, 60000, "defaults: tag_ttl 60 s");
        ok(!r->username && !r->password && !r->docker_config && !r->ca_file,
           "defaults: no credentials");
    }
    r = rgm_config_registry(&cfg, "mcr.microsoft.com");
    is_str(r ? r->endpoint : NULL, "https://mcr.microsoft.com", "defaults: mcr endpoint");
    r = rgm_config_registry(&cfg, "public.ecr.aws");
    is_str(r ? r->endpoint : NULL, "https://public.ecr.aws", "defaults: ecr endpoint");
    is_int(cfg.max_connections, 4096, "defaults: max_connections");
    is_int(cfg.max_header_bytes, 16384, "defaults: max_header_bytes");
    is_int(cfg.max_headers, 64, "defaults: max_headers");
    is_int(cfg.max_url_len, 4096, "defaults: max_url_len");
    is_int(cfg.header_timeout_ms, 30000, "defaults: header_timeout");
    is_int(cfg.idle_timeout_ms, 60000, "defaults: idle_timeout");
    is_int(cfg.send_timeout_ms, 120000, "defaults: send_timeout");
    is_int(cfg.shutdown_timeout_ms, 10000, "defaults: shutdown_timeout");
    is_int(cfg.use_sendfile, 0, "defaults: sendfile off (pread+write)");
    is_int(cfg.upstream_connect_timeout_ms, 10000, "defaults: upstream_connect_timeout");
    is_int(cfg.upstream_read_timeout_ms, 60000, "defaults: upstream_read_timeout");
    is_int(cfg.auth_cache_ttl_ms, 60000, "defaults: auth_cache_ttl");
    is_int(cfg.log_level, RGM_LOG_INFO, "defaults: log_level");
    ok(cfg.log_file == NULL, "defaults: log to stderr");
    is_int(cfg.access_log, 1, "defaults: access_log");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "defaults: validate");
    rgm_config_free(&cfg);
    ok(cfg.listen == NULL && cfg.registries == NULL && cfg.registries_len == 0,
       "free: zeroes the struct");
}

static void test_aliases(void)
{
    rgm_config_t cfg;
    const rgm_registry_cfg_t *d;

    rgm_config_init(&cfg);
    d = rgm_config_registry(&cfg, "docker.io");
    ok(d && rgm_config_registry(&cfg, "index.docker.io") == d, "alias: index.docker.io");
    ok(d && rgm_config_registry(&cfg, "registry-1.docker.io") == d, "alias: registry-1.docker.io");
    ok(d && rgm_config_registry(&cfg, "Docker.IO") == d, "lookup is case-insensitive");
    ok(d && rgm_config_registry(&cfg, "INDEX.docker.io") == d, "alias is case-insensitive");
    ok(rgm_config_registry(&cfg, "example.com") == NULL, "unknown registry: NULL");
    ok(rgm_config_registry(&cfg, "docker.io.evil.com") == NULL, "no prefix match");
    ok(rgm_config_registry(&cfg, NULL) == NULL, "NULL name: NULL");
    rgm_config_free(&cfg);
}

static void test_example_files(void)
{
    const char *srcdir = getenv("RGM_SRCDIR");
    char path[1024], err[512];
    const rgm_registry_cfg_t *r;
    rgm_config_t cfg;
    int rc;

    /* conf/regmirror.json documents every key and must load as it is */
    if (snprintf(path, sizeof(path), "%s/conf/regmirror.json", srcdir ? srcdir : ".") < 0)
        abort();
    if (!srcdir && access(path, R_OK) < 0) /* run from tests/unit in the source tree */
        if (snprintf(path, sizeof(path), "../../conf/regmirror.json") < 0)
            abort();
    rgm_config_init(&cfg);
    err[0] = '\0';
    rc = rgm_config_load_file(&cfg, path, err, sizeof(err));
    is_int(rc, 0, "conf/regmirror.json loads (%s)", err);
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "conf/regmirror.json validates");
    is_int(cfg.registries_len, 7, "regmirror.json: the 7 public registries, doc keys skipped");
    is_int(cfg.max_header_bytes, 16384, "regmirror.json: max_header_bytes \"16KiB\"");
    is_int(cfg.send_timeout_ms, 120000, "regmirror.json: send_timeout \"2m\"");
    ok(cfg.log_file == NULL, "regmirror.json: log_file null");
    r = rgm_config_registry(&cfg, "docker.io");
    is_str(r ? r->endpoint : NULL, "https://registry-1.docker.io", "regmirror.json: docker.io");
    rgm_config_free(&cfg);

    /* conf/regmirror.example.json: the minimal config tests copy */
    if (snprintf(path, sizeof(path), "%s/conf/regmirror.example.json", srcdir ? srcdir : ".") < 0)
        abort();
    if (!srcdir && access(path, R_OK) < 0)
        if (snprintf(path, sizeof(path), "../../conf/regmirror.example.json") < 0)
            abort();
    rgm_config_init(&cfg);
    err[0] = '\0';
    rc = rgm_config_load_file(&cfg, path, err, sizeof(err));
    is_int(rc, 0, "conf/regmirror.example.json loads (%s)", err);
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "regmirror.example.json validates");
    is_int(cfg.registries_len, 1, "regmirror.example.json: one registry");
    rgm_config_free(&cfg);
}

static void test_good_file(void)
{
    char text[4096], err[512];
    const rgm_registry_cfg_t *r;
    const char *pw, *dc, *ca, *path;
    rgm_config_t cfg;
    int rc;

    pw = write_file("pw", "s3cret\n");
    dc = write_file("docker-config.json", "{\"auths\":{}}\n");
    ca = write_file("ca.pem", "-----BEGIN CERTIFICATE-----\n");
    rc = snprintf(
        text, sizeof(text),
        "{\n"
        "  \"//\": \"doc\",\n"
        "  \"listen\": [\"0.0.0.0:5000\", \"[::1]:5001\"],\n"
        "  \"storage\": \"/var/lib/regmirror\",\n"
        "  \"max_cache_bytes\": \"50GiB\",\n"
        "  \"default_registry\": \"registry.example.com:5000\",\n"
        "  \"allow_any_registry\": true,\n"
        "  \"max_parallel_fetches\": 8,\n"
        "  \"registries\": {\n"
        "    \"//docker.io\": {\"endpoint\": 5},\n"
        "    \"docker.io\": {\"endpoint\": \"https://registry-1.docker.io/\",\n"
        "       \"tag_ttl\": \"5m\", \"//x\": 1,\n"
        "       \"credentials\": {\"docker_config\": \"%s\", \"//y\": []}},\n"
        "    \"registry.example.com:5000\": {\n"
        "       \"endpoint\": \"https://registry.example.com:5000\",\n"
        "       \"ca_file\": \"%s\", \"insecure_skip_verify\": true,\n"
        "       \"max_parallel_fetches\": 2, \"tag_ttl\": \"0\",\n"
        "       \"credentials\": {\"username\": \"u\", \"password_file\": \"%s\"}},\n"
        "    \"ghcr.io\": {\"endpoint\": \"http://cluster-mirror:5000\", \"mirror\": true}\n"
        "  },\n"
        "  \"max_connections\": 100, \"max_header_bytes\": 8192, \"max_headers\": 32,\n"
        "  \"max_url_length\": \"2KiB\", \"header_timeout\": \"5s\",\n"
        "  \"idle_timeout\": \"1m\", \"send_timeout\": \"1h30m\",\n"
        "  \"shutdown_timeout\": \"0\", \"upstream_connect_timeout\": \"250ms\",\n"
        "  \"upstream_timeout\": \"2m\", \"auth_cache_ttl\": \"0\",\n"
        "  \"sendfile\": true, \"log_level\": \"debug\",\n"
        "  \"log_file\": \"/var/log/regmirror.log\", \"access_log\": false\n"
        "}\n",
        dc, ca, pw);
    RGM_BUG_ON(rc < 0 || (size_t)rc >= sizeof(text));
    path = write_file("good.json", text);
    rgm_config_init(&cfg);
    rc = rgm_config_load_file(&cfg, path, err, sizeof(err));
    is_int(rc, 0, "good file loads (%s)", rc < 0 ? err : "");
    if (rc < 0) {
        rgm_config_free(&cfg);
        return;
    }
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "good file validates");
    is_int(cfg.listen_len, 2, "listen array");
    is_str(cfg.listen[1], "[::1]:5001", "listen IPv6");
    is_str(cfg.storage, "/var/lib/regmirror", "storage");
    is_int(cfg.max_cache_bytes, 50ULL << 30, "max_cache_bytes 50GiB");
    is_str(cfg.default_registry, "registry.example.com:5000", "default_registry");
    is_int(cfg.allow_any_registry, 1, "allow_any_registry");
    is_int(cfg.max_parallel_fetches, 8, "max_parallel_fetches");
    is_int(cfg.registries_len, 3, "registries replace the embedded set; doc keys skipped");
    ok(rgm_config_registry(&cfg, "quay.io") == NULL, "embedded quay.io gone");
    r = rgm_config_registry(&cfg, "docker.io");
    ok(r != NULL, "docker.io present");
    if (r) {
        is_str(r->endpoint, "https://registry-1.docker.io", "endpoint trailing slash stripped");
        is_int(r->tag_ttl_ms, 300000, "tag_ttl 5m");
        is_str(r->docker_config, dc, "docker_config path");
        ok(!r->username && !r->password, "docker_config only");
    }
    r = rgm_config_registry(&cfg, "registry.example.com:5000");
    ok(r != NULL, "registry with port present");
    if (r) {
        is_str(r->username, "u", "username");
        is_str(r->password, "s3cret", "password read, newline stripped");
        is_str(r->ca_file, ca, "ca_file");
        is_int(r->insecure_skip_verify, 1, "insecure_skip_verify");
        is_int(r->max_parallel_fetches, 2, "per-registry max_parallel_fetches");
        is_int(r->tag_ttl_ms, 0, "tag_ttl 0");
        is_int(r->is_mirror, 0, "mirror default false");
    }
    r = rgm_config_registry(&cfg, "ghcr.io");
    ok(r && r->is_mirror == 1, "mirror true");
    ok(r && r->tag_ttl_ms == 60000, "tag_ttl default for a file registry");
    is_int(cfg.max_connections, 100, "max_connections");
    is_int(cfg.max_header_bytes, 8192, "max_header_bytes integer");
    is_int(cfg.max_headers, 32, "max_headers");
    is_int(cfg.max_url_len, 2048, "max_url_length size string");
    is_int(cfg.header_timeout_ms, 5000, "header_timeout");
    is_int(cfg.idle_timeout_ms, 60000, "idle_timeout");
    is_int(cfg.send_timeout_ms, 5400000, "send_timeout 1h30m");
    is_int(cfg.shutdown_timeout_ms, 0, "shutdown_timeout 0");
    is_int(cfg.upstream_connect_timeout_ms, 250, "upstream_connect_timeout");
    is_int(cfg.upstream_read_timeout_ms, 120000, "upstream_timeout");
    is_int(cfg.auth_cache_ttl_ms, 0, "auth_cache_ttl 0");
    is_int(cfg.use_sendfile, 1, "sendfile true");
    is_int(cfg.log_level, RGM_LOG_DEBUG, "log_level debug");
    is_str(cfg.log_file, "/var/log/regmirror.log", "log_file");
    is_int(cfg.access_log, 0, "access_log false");

    /* a second file over the first: only the keys it names change */
    path = write_file("second.json", "{\"listen\": \"127.0.0.1:0\", \"log_file\": null}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "second file loads");
    is_int(cfg.listen_len, 1, "listen as a single string");
    is_str(cfg.listen[0], "127.0.0.1:0", "listen port 0");
    ok(cfg.log_file == NULL, "log_file null resets to stderr");
    is_int(cfg.registries_len, 3, "registries kept when not named");
    rgm_config_free(&cfg);
}

static void test_errors(void)
{
    load_bad("syntax.json", "{\n  \"listen\": \"127.0.0.1:5000\",\n  \"storage\": ,\n}\n",
             "syntax.json:3:", "syntax error gives line");
    load_bad("trailing.json", "{\"storage\": \"x\"} x", ":1:", "trailing garbage");
    load_bad("dup.json", "{\"storage\": \"a\",\n\"storage\": \"b\"}",
             "dup.json:2:", "duplicate key");
    load_bad("array.json", "[1, 2]", "top level must be a JSON object", "top level not object");
    load_bad("unknown.json", "{\"listen\": \"127.0.0.1:1\", \"lisen\": 1}", "lisen: unknown key",
             "unknown top-level key");
    load_bad("unknown2.json",
             "{\"registries\": {\"docker.io\": {\"endpoint\": \"https://x\", \"ttl\": \"5s\"}}}",
             "registries.docker.io.ttl: unknown key", "unknown registry key");
    load_bad("unknown3.json",
             "{\"registries\": {\"docker.io\": {\"endpoint\": \"https://x\", "
             "\"credentials\": {\"user\": \"u\"}}}}",
             "registries.docker.io.credentials.user: unknown key", "unknown credentials key");
    load_bad("size.json", "{\"max_cache_bytes\": \"5XB\"}", "max_cache_bytes: bad size \"5XB\"",
             "bad size");
    load_bad("size2.json", "{\"max_cache_bytes\": -1}", "max_cache_bytes: bad size -1",
             "negative size");
    load_bad("size3.json", "{\"max_header_bytes\": \"1GiB\"}",
             "max_header_bytes: ", "size out of range");
    load_bad(
        "dur.json",
        "{\"registries\": {\"docker.io\": {\"endpoint\": \"https://x\", \"tag_ttl\": \"5x\"}}}",
        "registries.docker.io.tag_ttl: bad duration \"5x\" (use 90s, 5m, 1h)", "bad duration");
    load_bad("dur2.json", "{\"idle_timeout\": 60}", "idle_timeout: expected a duration string",
             "duration as integer");
    load_bad("dur3.json", "{\"header_timeout\": \"0\"}", "header_timeout: must be greater than 0",
             "zero timeout");
    load_bad("bool.json", "{\"allow_any_registry\": \"yes\"}",
             "allow_any_registry: expected true or false, got a string", "bad bool type");
    load_bad("bool2.json", "{\"sendfile\": 1}", "sendfile: expected true or false",
             "bool given as integer");
    load_bad("int.json", "{\"max_parallel_fetches\": 0}", "max_parallel_fetches: 0 is out of range",
             "int below range");
    load_bad("int2.json", "{\"max_parallel_fetches\": 1.5}",
             "max_parallel_fetches: expected an integer", "int given as real");
    load_bad("url.json", "{\"registries\": {\"docker.io\": {\"endpoint\": \"ftp://x\"}}}",
             "registries.docker.io.endpoint: bad URL \"ftp://x\"", "bad URL scheme");
    load_bad("url2.json", "{\"registries\": {\"docker.io\": {\"endpoint\": \"https://x/?a=b\"}}}",
             "registries.docker.io.endpoint: bad URL", "URL with query");
    load_bad("noendpoint.json", "{\"registries\": {\"docker.io\": {\"tag_ttl\": \"5s\"}}}",
             "registries.docker.io: endpoint is required", "missing endpoint");
    load_bad("regname.json", "{\"registries\": {\"Docker.IO\": {\"endpoint\": \"https://x\"}}}",
             "registries.Docker.IO: bad registry name", "uppercase registry name");
    load_bad("regname2.json", "{\"registries\": {\"a_b\": {\"endpoint\": \"https://x\"}}}",
             "registries.a_b: bad registry name", "registry name with underscore");
    load_bad("regname3.json", "{\"registries\": {\"x.io:0\": {\"endpoint\": \"https://x\"}}}",
             "bad registry name", "registry name with port 0");
    load_bad("defreg.json", "{\"default_registry\": \"-x.io\"}",
             "default_registry: bad registry name", "bad default_registry");
    load_bad("pwfile.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"username\": \"u\", \"password_file\": \"/nonexistent/regmirror-pw\"}}}}",
             "registries.r.io.credentials.password_file: cannot read \"/nonexistent/regmirror-pw\"",
             "missing password_file");
    load_bad("nopw.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"username\": \"u\"}}}}",
             "registries.r.io.credentials: username needs password_file", "username alone");
    load_bad("dockercfg.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"docker_config\": \"/nonexistent/config.json\"}}}}",
             "registries.r.io.credentials.docker_config: cannot read", "missing docker_config");
    load_bad("cafile.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"ca_file\": "
             "\"/nonexistent/ca.pem\"}}}",
             "registries.r.io.ca_file: cannot read", "missing ca_file");
    load_bad("listen.json", "{\"listen\": \"5000\"}", "listen: bad address \"5000\"", "bad listen");
    load_bad("listen2.json", "{\"listen\": [\"127.0.0.1:1\", \"x:99999\"]}",
             "listen[1]: bad address \"x:99999\"", "bad listen in array");
    load_bad("listen3.json", "{\"listen\": []}", "listen: must list at least one address",
             "empty listen");
    load_bad("listen4.json", "{\"listen\": 5000}", "listen: expected a string or an array",
             "listen of the wrong type");
    load_bad("level.json", "{\"log_level\": \"verbose\"}", "log_level: expected one of",
             "bad log_level");
    load_bad("empty.json", "{\"storage\": \"\"}", "storage: must not be empty", "empty storage");
    load_bad("regs.json", "{\"registries\": []}", "registries: expected an object",
             "registries of the wrong type");
    load_bad("creds.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"username\": \"u\", \"password_file\": \"x\", \"docker_config\": \"y\"}}}}",
             "use one of: username with password_file, docker_config, helper",
             "both credential kinds");

    {
        rgm_config_t cfg;
        char err[256];

        rgm_config_init(&cfg);
        is_int(rgm_config_load_file(&cfg, "/nonexistent/regmirror.json", err, sizeof(err)),
               UV_EINVAL, "missing file: error");
        ok(strstr(err, "/nonexistent/regmirror.json") != NULL, "missing file: named (%s)", err);
        rgm_config_free(&cfg);
    }
}

static void test_set_registry(void)
{
    rgm_config_t cfg;
    const rgm_registry_cfg_t *r;
    char err[256];
    const char *path;

    rgm_config_init(&cfg);
    is_int(rgm_config_set_registry(&cfg, "registry.local:5000=http://127.0.0.1:5001/", err,
                                   sizeof(err)),
           0, "--registry adds");
    is_int(cfg.registries_len, 8, "--registry: one more registry");
    r = rgm_config_registry(&cfg, "registry.local:5000");
    is_str(r ? r->endpoint : NULL, "http://127.0.0.1:5001", "--registry: endpoint");
    ok(r && r->tag_ttl_ms == 60000 && !r->username, "--registry: defaults for the rest");

    path = write_file("creds-docker.json",
                      "{\"registries\": {\"docker.io\": {\"endpoint\": \"https://a\", "
                      "\"tag_ttl\": \"5m\", \"mirror\": true}}}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "file before --registry");
    is_int(rgm_config_set_registry(&cfg, "docker.io=http://127.0.0.1:5002", err, sizeof(err)), 0,
           "--registry replaces");
    is_int(cfg.registries_len, 1, "--registry: replaced, not added");
    r = rgm_config_registry(&cfg, "docker.io");
    is_str(r ? r->endpoint : NULL, "http://127.0.0.1:5002", "--registry: new endpoint");
    ok(r && r->tag_ttl_ms == 300000 && r->is_mirror, "--registry: other settings kept");

    is_int(rgm_config_set_registry(&cfg, "docker.io", err, sizeof(err)), UV_EINVAL,
           "--registry without '='");
    ok(strstr(err, "--registry") && strstr(err, "NAME=URL"), "--registry message (%s)", err);
    is_int(rgm_config_set_registry(&cfg, "Bad_Name=https://x", err, sizeof(err)), UV_EINVAL,
           "--registry bad name");
    ok(strstr(err, "bad registry name") != NULL, "--registry bad name message (%s)", err);
    is_int(rgm_config_set_registry(&cfg, "x.io=ftp://x", err, sizeof(err)), UV_EINVAL,
           "--registry bad URL");
    ok(strstr(err, "bad URL") != NULL, "--registry bad URL message (%s)", err);
    is_int(cfg.registries_len, 1, "--registry failures change nothing");
    rgm_config_free(&cfg);
}

static void test_validate(void)
{
    rgm_config_t cfg;
    char err[256];
    const char *path;

    rgm_config_init(&cfg);
    path = write_file("nodefault.json",
                      "{\"registries\": {\"ghcr.io\": {\"endpoint\": \"https://ghcr.io\"}}}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "registries without docker.io");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), UV_EINVAL,
           "validate: default_registry not configured");
    ok(strstr(err, "default_registry") && strstr(err, "docker.io"), "validate message (%s)", err);
    free(cfg.default_registry);
    cfg.default_registry = rgm_strdup("ghcr.io");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "validate: ok after the fix");
    cfg.listen_len = 0;
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), UV_EINVAL, "validate: listen empty");
    ok(strstr(err, "listen") != NULL, "validate: listen message (%s)", err);
    cfg.listen_len = 1;
    rgm_config_free(&cfg);
}

static void test_names(void)
{
    static const char *const good[] = {
        "docker.io", "registry.k8s.io",      "localhost:5000", "127.0.0.1:5000",
        "a",         "x-y.example.com:65535"};
    static const char *const bad[] = {"",        "Docker.io", "-a.io",  "a-.io",     "a..io",
                                      ".io",     "io.",       "a.io:",  "a.io:0",    "a.io:65536",
                                      "a.io:5x", "a_b.io",    "a.io/x", "[::1]:5000"};
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(good); i++)
        ok(rgm_config_valid_registry_name(good[i]), "registry name \"%s\" ok", good[i]);
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++)
        ok(!rgm_config_valid_registry_name(bad[i]), "registry name \"%s\" rejected", bad[i]);
}

/* ---- the schema ---- */

static int fits_width(const rgm_cfgkey_t *k)
{
    if (k->size == sizeof(uint32_t))
        return k->max <= UINT32_MAX;
    return k->size == sizeof(uint64_t);
}

/* Widths, limits and flags of every key of t and its sub-tables. */
static void check_table(const rgm_cfgtable_t *t)
{
    const rgm_cfgkey_t *k;
    size_t i, j;
    int good;

    for (i = 0; i < t->len; i++) {
        k = &t->keys[i];
        good = k->name && *k->name && k->desc && *k->desc && k->off + k->size <= t->size;
        for (j = 0; j < i; j++)
            good = good && strcmp(t->keys[j].name, k->name) != 0;
        switch (k->type) {
        case RGM_CFG_STRING:
        case RGM_CFG_FILE:
        case RGM_CFG_REGNAME:
        case RGM_CFG_URL:
            good = good && k->size == sizeof(char *);
            break;
        case RGM_CFG_BOOL:
        case RGM_CFG_LEVEL:
            good = good && k->size == sizeof(int) && !(k->flags & RGM_CFGKEY_SECRET);
            break;
        case RGM_CFG_UINT:
        case RGM_CFG_SIZE:
            good = good && fits_width(k) && k->min <= k->max;
            break;
        case RGM_CFG_DURATION:
            good = good && k->size == sizeof(uint64_t);
            break;
        case RGM_CFG_ADDRS:
        case RGM_CFG_CIDRS:
        case RGM_CFG_STRINGS:
        case RGM_CFG_URLS:
        case RGM_CFG_REGISTRIES:
            good = good && k->off2 != k->off && k->off2 + sizeof(size_t) <= t->size;
            good = good && (k->type != RGM_CFG_REGISTRIES || k->sub);
            break;
        case RGM_CFG_OBJECT:
            good = good && k->sub && k->sub->size == t->size;
            break;
        }
        ok(good, "schema: %s%s: name, width, limits and flags agree", t->path, k->name);
        if (k->sub)
            check_table(k->sub);
    }
}

/* Every key of t that a file may set has a "//key" entry in doc, and every "//key" of doc
 * (but "//" alone and "//example ...") names a key. */
static void check_documented(const rgm_cfgtable_t *t, const json_t *doc, const char *what)
{
    const char *name;
    char dockey[128];
    json_t *v;
    size_t i;

    for (i = 0; i < t->len; i++) {
        if (t->keys[i].flags & RGM_CFGKEY_DERIVED)
            continue;
        if (snprintf(dockey, sizeof(dockey), "//%s", t->keys[i].name) < 0)
            abort();
        ok(json_object_get(doc, dockey) != NULL, "%s documents %s%s", what, t->path,
           t->keys[i].name);
    }
    json_object_foreach((json_t *)doc, name, v)
    {
        const rgm_cfgkey_t *k = NULL;

        if (strncmp(name, "//", 2) != 0 || name[2] == '\0' || strncmp(name, "//example", 9) == 0)
            continue;
        for (i = 0; i < t->len; i++) {
            if (strcmp(t->keys[i].name, name + 2) == 0)
                k = &t->keys[i];
        }
        ok(k != NULL || strcmp(name, "//NAME") == 0, "%s: \"%s\" is a key of the schema", what,
           name);
    }
}

static const char *conf_path(const char *name, char *buf, size_t len)
{
    const char *srcdir = getenv("RGM_SRCDIR");

    if (snprintf(buf, len, "%s/conf/%s", srcdir ? srcdir : ".", name) < 0)
        abort();
    if (!srcdir && access(buf, R_OK) < 0 && snprintf(buf, len, "../../conf/%s", name) < 0)
        abort();
    return buf;
}

static void test_schema_tables(void)
{
    const rgm_cfgkey_t *creds = NULL;
    json_t *doc, *regdoc;
    char path[1024];
    const char *text;
    size_t i;

    check_table(&rgm_cfgschema_top);
    doc = json_load_file(conf_path("regmirror.json", path, sizeof(path)), 0, NULL);
    ok(doc != NULL, "conf/regmirror.json parses");
    if (!doc)
        return;
    check_documented(&rgm_cfgschema_top, doc, "conf/regmirror.json");
    regdoc = json_object_get(json_object_get(doc, "registries"), "//NAME");
    ok(json_is_object(regdoc), "conf/regmirror.json documents registries.//NAME");
    check_documented(&rgm_cfgschema_registry, regdoc, "conf/regmirror.json registries.//NAME");
    for (i = 0; i < rgm_cfgschema_registry.len; i++) {
        if (rgm_cfgschema_registry.keys[i].type == RGM_CFG_OBJECT &&
            strcmp(rgm_cfgschema_registry.keys[i].name, "credentials") == 0)
            creds = &rgm_cfgschema_registry.keys[i];
    }
    for (i = 0; i < rgm_cfgschema_top.len; i++) {
        if (strcmp(rgm_cfgschema_top.keys[i].name, "cluster") == 0)
            check_documented(rgm_cfgschema_top.keys[i].sub, json_object_get(doc, "cluster"),
                             "conf/regmirror.json cluster");
    }
    text = json_string_value(json_object_get(regdoc, "//credentials"));
    ok(creds && text, "credentials is an object key, documented");
    for (i = 0; creds && text && i < creds->sub->len; i++) {
        if (creds->sub->keys[i].flags & RGM_CFGKEY_DERIVED)
            continue;
        ok(strstr(text, creds->sub->keys[i].name) != NULL, "//credentials mentions %s",
           creds->sub->keys[i].name);
    }
    json_decref(doc);
}

static void test_nulls_and_hints(void)
{
    char text[1024], err[512];
    const rgm_registry_cfg_t *r;
    const char *path;
    rgm_config_t cfg;
    int rc;

    load_bad("credsunknown.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"user\": \"u\"}}}}",
             "registries.r.io.credentials.user: unknown key (expected username, password_file, "
             "docker_config, helper, lifetime or timeout)",
             "unknown credentials key lists the keys");
    load_bad("credspw.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"username\": \"u\", \"password\": \"p\"}}}}",
             "registries.r.io.credentials.password: unknown key",
             "password is not a file key (only password_file)");
    load_bad("credsarray.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": []}}}",
             "registries.r.io.credentials: expected an object, got an array",
             "credentials of the wrong type");
    load_bad("regstring.json", "{\"registries\": {\"r.io\": \"https://r.io\"}}",
             "registries.r.io: expected an object, got a string", "registry of the wrong type");
    load_bad("pwnouser.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"password_file\": \"/nonexistent/pw\"}}}}",
             "registries.r.io.credentials: password_file needs username", "password_file alone");
    load_bad("nullstorage.json", "{\"storage\": null}", "storage: expected a string, got null",
             "null for a key with a default");
    load_bad("nullendpoint.json", "{\"registries\": {\"r.io\": {\"endpoint\": null}}}",
             "registries.r.io: endpoint is required", "null for a required key");
    load_bad("ep-list.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": [\"http://a:1\", \"http://b:1\"]}}}",
             "registries.r.io: an endpoint array needs \"mirror\": true",
             "an endpoint array, no mirror");
    load_bad("ep-dns.json", "{\"registries\": {\"r.io\": {\"endpoint_dns\": \"http://a:1\"}}}",
             "registries.r.io: endpoint_dns needs \"mirror\": true", "endpoint_dns, no mirror");
    load_bad("ep-both.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"http://a:1\", \"endpoint_dns\": "
             "\"http://b:1\", \"mirror\": true}}}",
             "registries.r.io: use either endpoint or endpoint_dns", "endpoint and endpoint_dns");
    load_bad("ep-empty.json", "{\"registries\": {\"r.io\": {\"endpoint\": [], \"mirror\": true}}}",
             "registries.r.io.endpoint: must list at least one URL", "an empty endpoint array");
    load_bad("ep-bad.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": [\"http://a:1\", 5], \"mirror\": true}}}",
             "registries.r.io.endpoint[1]: expected a URL string",
             "a bad element of an endpoint array");
    load_bad("ep-path.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": [\"http://a:1\", \"http://b:1/x\"], "
             "\"mirror\": true}}}",
             "registries.r.io.endpoint: bad base URL \"http://b:1/x\"",
             "a replica URL with a path");
    load_bad("ep-dnspath.json",
             "{\"registries\": {\"r.io\": {\"endpoint_dns\": \"http://b:1/x\", \"mirror\": true}}}",
             "registries.r.io.endpoint_dns: bad base URL", "endpoint_dns with a path");
    load_bad("ep-bad2.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": [\"ftp://a:1\"], \"mirror\": true}}}",
             "registries.r.io.endpoint[0]: bad URL", "a non-http endpoint in an array");
    load_bad("nulllisten.json", "{\"listen\": null}", "listen: expected a string or an array",
             "null listen");
    load_bad("nullttl.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"tag_ttl\": null}}}",
             "registries.r.io.tag_ttl: expected a duration string", "null duration");
    load_bad("mpf.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", "
             "\"max_parallel_fetches\": 1025}}}",
             "registries.r.io.max_parallel_fetches: 1025 is out of range 0..1024",
             "per-registry integer out of range");
    load_bad("second-bad.json",
             "{\"storage\": \"/ok\", \"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\"}},"
             " \"max_headers\": 7}",
             "max_headers: 7 is out of range 8..1024", "a bad key after good ones");

    rc = snprintf(text, sizeof(text),
                  "{\"log_file\": null, \"registries\": {\"r.io\": {\"endpoint\": "
                  "\"https://r.io\", \"ca_file\": null, \"credentials\": {\"username\": null, "
                  "\"password_file\": null, \"docker_config\": null}}}, \"default_registry\": "
                  "\"r.io\"}");
    RGM_BUG_ON(rc < 0 || (size_t)rc >= sizeof(text));
    path = write_file("nulls.json", text);
    rgm_config_init(&cfg);
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0,
           "null is accepted for keys without a default (%s)", err);
    r = rgm_config_registry(&cfg, "r.io");
    ok(r && !r->ca_file && !r->username && !r->password_file && !r->password && !r->docker_config,
       "null: unset");
    ok(r && r->tag_ttl_ms == 60000 && r->max_parallel_fetches == 0,
       "a file registry gets the table's defaults");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "nulls: validates");
    rgm_config_free(&cfg);
}

static void test_copy(void)
{
    rgm_config_t a, b;
    char err[512], text[1024];
    char *da, *db;
    const char *pw, *path;
    int rc;

    pw = write_file("copy-pw", "copy-secret\n");
    rc = snprintf(text, sizeof(text),
                  "{\"listen\": [\"127.0.0.1:1\", \"127.0.0.1:2\"], \"log_file\": \"/l\", "
                  "\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
                  "{\"username\": \"u\", \"password_file\": \"%s\"}}}, \"default_registry\": "
                  "\"r.io\"}",
                  pw);
    RGM_BUG_ON(rc < 0 || (size_t)rc >= sizeof(text));
    path = write_file("copy.json", text);
    rgm_config_init(&a);
    is_int(rgm_config_load_file(&a, path, err, sizeof(err)), 0, "copy: source loads (%s)", err);
    rgm_cfgschema_copy(&rgm_cfgschema_top, &b, &a);
    da = rgm_config_dump(&a, err, sizeof(err));
    ok(b.listen != a.listen && b.registries != a.registries && b.log_file != a.log_file &&
           b.registries[0].password != a.registries[0].password,
       "copy: every owned pointer is new");
    rgm_config_free(&a);
    is_str(b.registries[0].password, "copy-secret", "copy: the secret survives the source");
    db = rgm_config_dump(&b, err, sizeof(err));
    is_str(db, da, "copy: the same effective configuration");
    rgm_config_free(&b);
    free(da);
    free(db);
}

/* ---- serve's command line ---- */

/* rgm_config_parse_args on a default config with the NULL-terminated words. */
static int args(rgm_config_t *cfg, int max_files, char *err, size_t errlen, ...)
{
    char *argv[32];
    va_list ap;
    int argc = 0, rc;

    va_start(ap, errlen);
    while (argc < 31 && (argv[argc] = va_arg(ap, char *)) != NULL)
        argc++;
    va_end(ap);
    argv[argc] = NULL;
    rgm_config_init(cfg);
    rc = rgm_config_parse_args(cfg, argc, argv, max_files, err, errlen);
    return rc;
}

/* A mirror registry's endpoint as a list of a cluster's replicas, or endpoint_dns. */
static void test_endpoint_list(void)
{
    rgm_config_t cfg, copy;
    const rgm_registry_cfg_t *r;
    char err[512], *text;
    const char *path;

    rgm_config_init(&cfg);
    path = write_file("eplist.json", "{\"registries\": {\"docker.io\": {\"endpoint\": "
                                     "[\"http://10.0.0.1:5000/\", \"http://10.0.0.2:5000\"], "
                                     "\"mirror\": true}, \"ghcr.io\": {\"endpoint_dns\": "
                                     "\"http://regmirror-peers:5000\", \"mirror\": true}}}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "endpoint list loads (%s)", err);
    r = rgm_config_registry(&cfg, "docker.io");
    ok(r && r->endpoints_len == 2 && strcmp(r->endpoints[0], "http://10.0.0.1:5000") == 0 &&
           strcmp(r->endpoint, "http://10.0.0.1:5000") == 0,
       "endpoint list: every URL, trailing slash dropped, the first as endpoint");
    r = rgm_config_registry(&cfg, "ghcr.io");
    ok(r && !r->endpoint && r->endpoint_dns && r->endpoints_len == 0, "endpoint_dns alone");
    rgm_cfgschema_copy(&rgm_cfgschema_top, &copy, &cfg);
    r = rgm_config_registry(&copy, "docker.io");
    ok(r && r->endpoints_len == 2 && strcmp(r->endpoints[1], "http://10.0.0.2:5000") == 0,
       "endpoint list: deep-copied");
    rgm_config_free(&copy);
    text = rgm_config_dump(&cfg, err, sizeof(err));
    ok(text && strstr(text, "\"endpoint\": [\n        \"http://10.0.0.1:5000\",") != NULL,
       "endpoint list: printed as an array");
    ok(text && strstr(text, "\"endpoint_dns\": \"http://regmirror-peers:5000\"") != NULL,
       "endpoint_dns printed");
    free(text);
    is_int(rgm_config_set_registry(&cfg, "docker.io=http://one:1", err, sizeof(err)), 0,
           "--registry over an endpoint list");
    r = rgm_config_registry(&cfg, "docker.io");
    ok(r && r->endpoints_len == 0 && !r->endpoints && strcmp(r->endpoint, "http://one:1") == 0,
       "--registry: one endpoint, the list gone");
    is_int(rgm_config_set_registry(&cfg, "ghcr.io=http://two:2", err, sizeof(err)), 0,
           "--registry over endpoint_dns");
    r = rgm_config_registry(&cfg, "ghcr.io");
    ok(r && !r->endpoint_dns && strcmp(r->endpoint, "http://two:2") == 0, "--registry: dns gone");
    rgm_config_free(&cfg);
}

/* cluster: peers (one or a list of base URLs) or peers_dns, and self; from files and flags. */
static void test_cluster(void)
{
    rgm_config_t cfg;
    char err[512];
    const char *path;
    int rc;

    rgm_config_init(&cfg);
    ok(cfg.cluster_peers_len == 0 && !cfg.cluster_peers_dns && !cfg.cluster_self,
       "cluster: none by default");
    path = write_file("cluster.json",
                      "{\"cluster\": {\"peers\": [\"http://10.0.0.1:5000\", "
                      "\"HTTP://Node-B:5000/\"], \"self\": \"http://10.0.0.1:5000\"}}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "cluster: peers and self (%s)",
           err);
    ok(cfg.cluster_peers_len == 2 && strcmp(cfg.cluster_peers[1], "HTTP://Node-B:5000/") == 0,
       "cluster: peers kept as written (canonical form is the cluster module's)");
    is_str(cfg.cluster_self, "http://10.0.0.1:5000", "cluster: self");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "cluster: valid (%s)", err);
    path = write_file("cluster2.json", "{\"cluster\": {\"peers\": null, \"peers_dns\": "
                                       "\"http://regmirror-peers:5000/\", \"self\": null}}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "cluster: peers_dns (%s)", err);
    ok(cfg.cluster_peers_len == 0 && !cfg.cluster_self, "cluster: null clears peers and self");
    is_str(cfg.cluster_peers_dns, "http://regmirror-peers:5000", "cluster: peers_dns, no slash");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), 0, "cluster: peers_dns valid (%s)", err);
    path = write_file("cluster3.json", "{\"cluster\": {\"peers\": \"http://[::1]:5000\"}}");
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "cluster: one peer string");
    ok(cfg.cluster_peers_len == 1, "cluster: a single string is a list of one");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), UV_EINVAL, "cluster: both is invalid");
    ok(strstr(err, "cluster: use either peers or peers_dns") != NULL, "cluster: both (%s)", err);
    rgm_config_free(&cfg);

    load_bad("cl-empty.json", "{\"cluster\": {\"peers\": []}}",
             "cluster.peers: must list at least one URL", "cluster: empty peers");
    load_bad("cl-path.json", "{\"cluster\": {\"peers\": [\"http://a:1\", \"http://b:1/v2\"]}}",
             "cluster.peers[1]: bad base URL \"http://b:1/v2\"", "cluster: a peer with a path");
    load_bad("cl-query.json", "{\"cluster\": {\"peers\": \"http://a:1?x\"}}",
             "cluster.peers: bad base URL", "cluster: a peer with a query");
    load_bad("cl-type.json", "{\"cluster\": {\"peers\": 5}}",
             "cluster.peers: expected a string or an array", "cluster: peers of the wrong type");
    load_bad("cl-elem.json", "{\"cluster\": {\"peers\": [true]}}",
             "cluster.peers[0]: expected an \"http://HOST:PORT\" string", "cluster: a bool peer");
    load_bad("cl-dns.json", "{\"cluster\": {\"peers_dns\": \"regmirror:5000\"}}",
             "cluster.peers_dns: bad URL", "cluster: peers_dns without a scheme");
    load_bad("cl-key.json", "{\"cluster\": {\"peer\": \"http://a:1\"}}",
             "cluster.peer: unknown key", "cluster: unknown key");
    load_bad("cl-obj.json", "{\"cluster\": [\"http://a:1\"]}", "cluster: expected an object",
             "cluster: not an object");

    path = write_file("cl-self.json", "{\"cluster\": {\"self\": \"http://a:1\"}}");
    rgm_config_init(&cfg);
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "cluster: self alone loads");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), UV_EINVAL, "cluster: self alone invalid");
    ok(strstr(err, "cluster.self: needs peers or peers_dns") != NULL, "cluster: self (%s)", err);
    rgm_config_free(&cfg);
    path = write_file("cl-dnspath.json", "{\"cluster\": {\"peers_dns\": \"http://a:1/x\"}}");
    rgm_config_init(&cfg);
    is_int(rgm_config_load_file(&cfg, path, err, sizeof(err)), 0, "cluster: dns with a path loads");
    is_int(rgm_config_validate(&cfg, err, sizeof(err)), UV_EINVAL, "cluster: dns path invalid");
    ok(strstr(err, "cluster.peers_dns: bad base URL") != NULL, "cluster: dns path (%s)", err);
    rgm_config_free(&cfg);

    path =
        write_file("cl-args.json", "{\"cluster\": {\"peers\": [\"http://a:1\", \"http://b:1\"]}}");
    rc = args(&cfg, 0, err, sizeof(err), "serve", "-c", (char *)path, "--peer", "http://c:1",
              "--peer", "http://d:1", "--self", "http://d:1", NULL);
    is_int(rc, 0, "cluster: --peer and --self (%s)", err);
    ok(cfg.cluster_peers_len == 2 && strcmp(cfg.cluster_peers[0], "http://c:1") == 0 &&
           strcmp(cfg.cluster_peers[1], "http://d:1") == 0,
       "cluster: the first --peer replaces the file's peers, the next adds");
    is_str(cfg.cluster_self, "http://d:1", "cluster: --self");
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "--peers-dns", "http://regmirror:5000", NULL);
    is_int(rc, 0, "cluster: --peers-dns (%s)", err);
    is_str(cfg.cluster_peers_dns, "http://regmirror:5000", "cluster: --peers-dns set");
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "--peer", "10.0.0.1:5000", NULL);
    is_int(rc, UV_EINVAL, "cluster: --peer without a scheme");
    ok(strstr(err, "cluster.peers[0]: bad base URL") != NULL, "cluster: --peer message (%s)", err);
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "--peer", "http://a:1", "--peers-dns",
              "http://b:1", NULL);
    is_int(rc, UV_EINVAL, "cluster: --peer with --peers-dns");
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "--self", "http://a:1/", "--peers-dns",
              "http://b:1", NULL);
    is_int(rc, 0, "cluster: --self with a trailing slash (%s)", err);
    rgm_config_free(&cfg);
}

/* Issue 15: credentials.helper, lifetime, timeout, private, credential_providers, and the
 * kubelet's flag names. */
static void test_cred_keys(void)
{
    const rgm_registry_cfg_t *r;
    const char *f, *yaml;
    rgm_config_t cfg;
    char err[512];
    char text[1024];
    int rc;

    f = write_file("helper.json",
                   "{\"registries\": {\"r.io:5000\": {\"endpoint\": \"https://r.io:5000\", "
                   "\"private\": true, \"credentials\": {\"helper\": \"ecr-login\", "
                   "\"lifetime\": \"0\", \"timeout\": \"2s\"}}, \"docker.io\": {\"endpoint\": "
                   "\"https://registry-1.docker.io\"}}}");
    rgm_config_init(&cfg);
    rc = rgm_config_load_file(&cfg, f, err, sizeof(err));
    is_int(rc, 0, "helper: loads (%s)", err);
    r = rgm_config_registry(&cfg, "r.io:5000");
    ok(r && r->cred_helper && strcmp(r->cred_helper, "ecr-login") == 0, "helper: the name");
    ok(r && r->cred_lifetime_ms == 0 && r->cred_timeout_ms == 2000, "helper: lifetime 0, 2s");
    ok(r && r->is_private, "private: true");
    r = rgm_config_registry(&cfg, "docker.io");
    ok(r && !r->cred_helper && r->cred_lifetime_ms == 300000 && r->cred_timeout_ms == 10000 &&
           !r->is_private,
       "helper: defaults 5m and 10s, private false");
    ok(cfg.cred_provider_config == NULL && cfg.cred_provider_timeout_ms == 60000,
       "credential_providers: none by default, timeout 1m");
    rgm_config_free(&cfg);

    load_bad("helper2.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"helper\": \"x\", \"docker_config\": \"y\"}}}}",
             "use one of", "helper with docker_config");
    load_bad("helper3.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"credentials\": "
             "{\"helper\": \"x\", \"timeout\": \"0\"}}}}",
             "credentials.timeout", "helper timeout 0");
    load_bad("private.json",
             "{\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io\", \"private\": 1}}}",
             "registries.r.io.private", "private not a boolean");
    load_bad("cp1.json", "{\"credential_providers\": {\"config\": \"/nonexistent/cp.yaml\"}}",
             "credential_providers.config", "provider config not readable");
    load_bad("cp3.json", "{\"credential_providers\": {\"cfg\": \"x\"}}",
             "credential_providers.cfg: unknown key", "provider unknown key");

    yaml = write_file("cp.yaml", "apiVersion: kubelet.config.k8s.io/v1\n");
    snprintf(text, sizeof(text),
             "{\"credential_providers\": {\"config\": \"%s\", \"bin_dir\": \"/bin\", "
             "\"timeout\": \"5s\"}}",
             yaml);
    f = write_file("cp4.json", text);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "-c", (char *)f, NULL);
    ok(rc == 0 && strcmp(cfg.cred_provider_config, yaml) == 0 &&
           strcmp(cfg.cred_provider_bin_dir, "/bin") == 0 && cfg.cred_provider_timeout_ms == 5000,
       "credential_providers: config, bin_dir, timeout (%s)", err);
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "--image-credential-provider-config",
              (char *)yaml, "--image-credential-provider-bin-dir", "/usr/libexec/kubernetes", NULL);
    ok(rc == 0 && strcmp(cfg.cred_provider_config, yaml) == 0 &&
           strcmp(cfg.cred_provider_bin_dir, "/usr/libexec/kubernetes") == 0,
       "the kubelet's flag names (%s)", err);
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "--image-credential-provider-config",
              (char *)yaml, NULL);
    ok(rc == UV_EINVAL && strstr(err, "credential_providers"), "config without bin_dir: %s", err);
    rgm_config_free(&cfg);
    f = write_file("cp5.json", "{\"credential_providers\": {\"timeout\": \"2m\"}}");
    rc = args(&cfg, 0, err, sizeof(err), "serve", "-c", (char *)f, NULL);
    ok(rc == UV_EINVAL && strstr(err, "credential_providers.timeout"),
       "provider timeout over the kubelet's 1m: %s", err);
    rgm_config_free(&cfg);
}

static void test_parse_args(void)
{
    const char *a, *b, *bad;
    const rgm_registry_cfg_t *r;
    rgm_config_t cfg;
    char err[512];
    int rc;

    a = write_file("args-a.json", "{\"listen\": \"0.0.0.0:9\", \"storage\": \"/a\", "
                                  "\"log_level\": \"warn\"}");
    b = write_file("args-b.json", "{\"storage\": \"/b\"}");
    bad = write_file("args-bad.json", "{\"storage\": 5}");

    rc = args(&cfg, 0, err, sizeof(err), "serve", "--listen", "127.0.0.1:1", "-c", (char *)a,
              "--listen", "[::1]:2", NULL);
    is_int(rc, 0, "args: --config after --listen (%s)", err);
    ok(cfg.listen_len == 2 && strcmp(cfg.listen[0], "127.0.0.1:1") == 0 &&
           strcmp(cfg.listen[1], "[::1]:2") == 0,
       "args: the first --listen replaces the file's list, the next ones add");
    is_str(cfg.storage, "/a", "args: --config is read first wherever it stands");
    is_int(cfg.log_level, RGM_LOG_WARN, "args: the file's other keys stay");
    rgm_config_free(&cfg);

    rc = args(&cfg, 0, err, sizeof(err), "serve", "--conf", (char *)a, "-c", (char *)b, "--storage",
              "/flag", NULL);
    is_int(rc, 0, "args: two files, --conf abbreviated (%s)", err);
    is_str(cfg.storage, "/flag", "args: the flag over both files");
    is_int(cfg.log_level, RGM_LOG_WARN, "args: the first file's keys under the second's");
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", "-c", (char *)a, "-c", (char *)b, NULL);
    is_str(rc == 0 ? cfg.storage : NULL, "/b", "args: files in order, the last one wins");
    rgm_config_free(&cfg);

    rc = args(&cfg, 1, err, sizeof(err), "config", "--storage", "/flag", (char *)a, NULL);
    is_int(rc, 0, "args: a FILE argument where allowed (%s)", err);
    ok(strcmp(cfg.storage, "/flag") == 0 && strcmp(cfg.listen[0], "0.0.0.0:9") == 0,
       "args: FILE read before the flags");
    rgm_config_free(&cfg);
    rc = args(&cfg, 1, err, sizeof(err), "config", "-c", (char *)b, (char *)a, NULL);
    is_str(rc == 0 ? cfg.storage : NULL, "/a", "args: FILE read after --config");
    rgm_config_free(&cfg);
    rc = args(&cfg, 0, err, sizeof(err), "serve", (char *)a, NULL);
    is_int(rc, UV_EINVAL, "args: no FILE argument for serve");
    ok(strstr(err, "serve: unexpected argument \"") != NULL, "args: unexpected (%s)", err);
    rgm_config_free(&cfg);
    rc = args(&cfg, 1, err, sizeof(err), "config", (char *)a, "extra", NULL);
    is_int(rc, UV_EINVAL, "args: a second FILE");
    is_str(err, "config: unexpected argument \"extra\"", "args: the second FILE named");
    rgm_config_free(&cfg);
    rc = args(&cfg, 1, err, sizeof(err), "config", (char *)bad, NULL);
    is_int(rc, UV_EINVAL, "args: a bad FILE");
    ok(strstr(err, bad) && strstr(err, "storage: expected a string"), "args: bad FILE (%s)", err);
    rgm_config_free(&cfg);

    rc = args(&cfg, 0, err, sizeof(err), "serve", "--max-size", "1.5GiB", "--log-level", "debug",
              "--registry", "x.io=http://127.0.0.1:9/", "--default-registry", "x.io",
              "--allow-any-registry", "--log-file", "/var/log/r.log", "-s", "/s", "-l",
              "127.0.0.1:7", NULL);
    is_int(rc, 0, "args: every flag (%s)", err);
    is_int(cfg.max_cache_bytes, 3ULL << 29, "args: --max-size");
    is_int(cfg.log_level, RGM_LOG_DEBUG, "args: --log-level");
    r = rgm_config_registry(&cfg, "x.io");
    is_str(r ? r->endpoint : NULL, "http://127.0.0.1:9", "args: --registry");
    is_str(cfg.default_registry, "x.io", "args: --default-registry");
    is_int(cfg.allow_any_registry, 1, "args: --allow-any-registry");
    is_str(cfg.log_file, "/var/log/r.log", "args: --log-file");
    is_str(cfg.storage, "/s", "args: -s");
    ok(cfg.listen_len == 1 && strcmp(cfg.listen[0], "127.0.0.1:7") == 0, "args: -l");
    rgm_config_free(&cfg);

    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--max-size", "5x", NULL), UV_EINVAL,
           "args: bad --max-size");
    is_str(err, "--max-size: bad size \"5x\" (use 50GiB, 500MB)", "args: --max-size message");
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--log-level", "loud", NULL), UV_EINVAL,
           "args: bad --log-level");
    is_str(err, "--log-level: unknown level \"loud\"", "args: --log-level message");
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--registry", "NoEquals", NULL), UV_EINVAL,
           "args: bad --registry");
    is_str(err, "--registry: --registry: bad argument \"NoEquals\" (use NAME=URL)",
           "args: --registry message, as serve has always printed it");
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--default-registry", "nope.io", NULL),
           UV_EINVAL, "args: validated at the end");
    ok(strstr(err, "config: default_registry: \"nope.io\" is not one of") != NULL,
       "args: validate's message (%s)", err);
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--listen", "5000", NULL), UV_EINVAL,
           "args: a bad --listen");
    ok(strstr(err, "config: listen: bad address \"5000\"") != NULL, "args: --listen (%s)", err);
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--log-level", "loud", "-c", (char *)bad, NULL),
           UV_EINVAL, "args: file errors before flag errors");
    ok(strstr(err, bad) != NULL, "args: the file's error first (%s)", err);
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--storage", "/x", "--help", NULL), 1,
           "args: --help gives 1");
    rgm_config_free(&cfg);
    printf("# getopt's own message on stderr is expected here:\n");
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--bogus-flag", NULL), UV_EINVAL,
           "args: an unknown flag");
    is_str(err, "", "args: unknown flag: getopt printed it, err is empty");
    rgm_config_free(&cfg);
    is_int(args(&cfg, 0, err, sizeof(err), "serve", "--listen", NULL), UV_EINVAL,
           "args: a flag without its argument");
    is_str(err, "", "args: missing argument: getopt printed it");
    rgm_config_free(&cfg);
}

/* ---- the effective configuration ---- */

/* Remove every "password": "<redacted>" from the dump's registries. */
static void strip_redacted(json_t *root)
{
    json_t *regs = json_object_get(root, "registries"), *reg, *creds;
    const char *name;

    json_object_foreach(regs, name, reg)
    {
        creds = json_object_get(reg, "credentials");
        if (json_is_string(json_object_get(creds, "password")))
            RGM_BUG_ON(json_object_del(creds, "password") != 0);
    }
}

static void test_dump(void)
{
    char text[2048], err[512], path[1024];
    char *dflt, *conf, *out, *again;
    rgm_config_t cfg;
    const char *pw, *dc, *file, *back;
    json_t *root;
    int rc;

    rgm_config_init(&cfg);
    dflt = rgm_config_dump(&cfg, err, sizeof(err));
    rgm_config_free(&cfg);
    ok(dflt && dflt[strlen(dflt) - 1] == '\n', "dump: the defaults, ending in a newline");
    ok(dflt && !strstr(dflt, "\"password\""), "dump: no password key where none was read");
    ok(dflt && strstr(dflt, "\"max_header_bytes\": \"16KiB\"") &&
           strstr(dflt, "\"send_timeout\": \"2m\"") && strstr(dflt, "\"log_file\": null") &&
           strstr(dflt, "\"ca_file\": null") && strstr(dflt, "\"tag_ttl\": \"1m\""),
       "dump: defaults filled in, in the parsers' own notation");
    rgm_config_init(&cfg);
    rc = rgm_config_load_file(&cfg, conf_path("regmirror.json", path, sizeof(path)), err,
                              sizeof(err));
    conf = rc == 0 ? rgm_config_dump(&cfg, err, sizeof(err)) : NULL;
    rgm_config_free(&cfg);
    ok(conf && dflt && strcmp(conf, dflt) == 0,
       "dump: conf/regmirror.json (documented as the defaults) is the built-in default");
    if (conf && dflt && strcmp(conf, dflt) != 0)
        printf("# conf:\n%s# defaults:\n%s", conf, dflt);

    pw = write_file("dump-pw", "dump-secret-42\n");
    dc = write_file("dump-dc.json", "{\"auths\":{}}\n");
    rc = snprintf(text, sizeof(text),
                  "{\"listen\": \"127.0.0.1:0\", \"max_cache_bytes\": \"1.5GiB\", "
                  "\"shutdown_timeout\": \"0\", \"send_timeout\": \"1h30m\", "
                  "\"registries\": {\"r.io\": {\"endpoint\": \"https://r.io/\", "
                  "\"credentials\": {\"username\": \"u\", \"password_file\": \"%s\"}}, "
                  "\"d.io\": {\"endpoint\": \"http://127.0.0.1:9\", \"mirror\": true, "
                  "\"credentials\": {\"docker_config\": \"%s\"}}}, \"default_registry\": "
                  "\"r.io\", \"log_file\": \"/var/log/x.log\"}",
                  pw, dc);
    RGM_BUG_ON(rc < 0 || (size_t)rc >= sizeof(text));
    file = write_file("dump.json", text);
    rgm_config_init(&cfg);
    is_int(rgm_config_load_file(&cfg, file, err, sizeof(err)), 0, "dump: file loads (%s)", err);
    out = rgm_config_dump(&cfg, err, sizeof(err));
    rgm_config_free(&cfg);
    ok(out && !strstr(out, "dump-secret-42"), "dump: the password is not printed");
    ok(out && strstr(out, "\"password\": \"<redacted>\""), "dump: the password is <redacted>");
    ok(out && strstr(out, pw) && strstr(out, dc), "dump: the files' paths are printed");
    ok(out && strstr(out, "\"endpoint\": \"https://r.io\"") &&
           strstr(out, "\"max_cache_bytes\": \"1536MiB\"") &&
           strstr(out, "\"shutdown_timeout\": \"0\"") && strstr(out, "\"send_timeout\": \"1h30m\""),
       "dump: the values as stored");
    ok(out && strstr(out, "\"r.io\"") < strstr(out, "\"d.io\""), "dump: registries in order");

    /* feed it back, minus the redacted secret: the same text */
    root = out ? json_loads(out, 0, NULL) : NULL;
    ok(root != NULL, "dump: valid JSON");
    again = NULL;
    if (root) {
        strip_redacted(root);
        back = write_file("dump-back.json", "");
        RGM_BUG_ON(json_dump_file(root, back, 0) != 0);
        json_decref(root);
        rgm_config_init(&cfg);
        is_int(rgm_config_load_file(&cfg, back, err, sizeof(err)), 0, "dump: the output loads (%s)",
               err);
        again = rgm_config_dump(&cfg, err, sizeof(err));
        rgm_config_free(&cfg);
    }
    ok(out && again && strcmp(out, again) == 0, "dump: printed back unchanged");

    rgm_config_init(&cfg);
    free(cfg.storage);
    cfg.storage = rgm_strdup("/data/\xff\xfe");
    ok(rgm_config_dump(&cfg, err, sizeof(err)) == NULL, "dump: a value that is not UTF-8");
    ok(strstr(err, "storage") && strstr(err, "UTF-8"), "dump: the key is named (%s)", err);
    rgm_config_free(&cfg);
    rgm_config_init(&cfg);
    cfg.log_level = 9;
    ok(rgm_config_dump(&cfg, err, sizeof(err)) == NULL, "dump: a log level out of range");
    ok(strstr(err, "log_level: 9 is not a log level") != NULL, "dump: log level named (%s)", err);
    rgm_config_free(&cfg);

    free(dflt);
    free(conf);
    free(out);
    free(again);
}

static void test_describe(void)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    RGM_BUG_ON(!f);
    rgm_config_describe(f);
    RGM_BUG_ON(fclose(f) != 0);
    ok(strstr(buf, "  listen (HOST:PORT list, default 127.0.0.1:5000): ") != NULL,
       "describe: a top-level key with its default");
    ok(strstr(buf, "  registries.NAME.endpoint (URL): ") != NULL, "describe: a registry key");
    ok(strstr(buf, "  registries.NAME.credentials.password (string, secret, set at load): ") !=
           NULL,
       "describe: the secret");
    ok(strstr(buf, "  access_log (boolean, default true): ") != NULL, "describe: the last key");
    free(buf);
}

/* Issue 12's failure keys: per registry, the top level's when unset (null or absent). */
static void test_failure_keys(void)
{
    rgm_config_t cfg;
    rgm_registry_cfg_t zero;
    const rgm_registry_cfg_t *a, *b;
    char err[512];
    const char *path;
    int rc;

    rgm_config_init(&cfg);
    a = rgm_config_registry(&cfg, "docker.io");
    ok(a && rgm_config_max_stale(&cfg, a) == UINT64_MAX, "default max_stale: no bound");
    ok(a && rgm_config_negative_ttl(&cfg, a) == 10000, "default negative_ttl: 10 s");
    ok(a && rgm_config_ratelimit_reserve(&cfg, a) == 10, "default ratelimit_reserve: 10");
    ok(a && rgm_config_stale_on_not_found(&cfg, a) == 0, "default stale_on_not_found: false");
    path =
        write_file("failure.json",
                   "{\"max_stale\": \"5m\", \"negative_ttl\": \"0\", \"stale_on_not_found\": true,"
                   " \"ratelimit_reserve\": 3, \"registries\": {"
                   " \"a.test\": {\"endpoint\": \"http://a\", \"max_stale\": \"0\","
                   "  \"negative_ttl\": \"30s\", \"stale_on_not_found\": false,"
                   "  \"ratelimit_reserve\": 0},"
                   " \"b.test\": {\"endpoint\": \"http://b\", \"max_stale\": null}},"
                   " \"default_registry\": \"a.test\"}");
    rc = rgm_config_load_file(&cfg, path, err, sizeof(err));
    is_int(rc, 0, "failure keys load (%s)", err);
    a = rgm_config_registry(&cfg, "a.test");
    b = rgm_config_registry(&cfg, "b.test");
    ok(a && rgm_config_max_stale(&cfg, a) == 0, "a registry's \"0\": never stale");
    ok(a && rgm_config_negative_ttl(&cfg, a) == 30000, "a registry's own negative_ttl");
    ok(a && rgm_config_stale_on_not_found(&cfg, a) == 0, "a registry's false beats the top's true");
    ok(a && rgm_config_ratelimit_reserve(&cfg, a) == 0, "a registry's reserve 0");
    ok(b && rgm_config_max_stale(&cfg, b) == 300000, "null: the top level's max_stale");
    ok(b && rgm_config_negative_ttl(&cfg, b) == 0, "absent: the top level's negative_ttl \"0\"");
    ok(b && rgm_config_stale_on_not_found(&cfg, b) == 1, "absent: the top level's true");
    ok(b && rgm_config_ratelimit_reserve(&cfg, b) == 3, "absent: the top level's reserve");
    memset(&zero, 0, sizeof(zero));
    ok(rgm_config_max_stale(&cfg, &zero) == 300000, "a zeroed registry inherits everything");
    rgm_config_free(&cfg);
    load_bad("fk1.json", "{\"max_stale\": \"5x\"}", "max_stale", "max_stale: bad duration");
    load_bad("fk2.json", "{\"ratelimit_reserve\": -1}", "ratelimit_reserve", "reserve: negative");
    load_bad("fk3.json", "{\"stale_on_not_found\": \"yes\"}", "stale_on_not_found",
             "stale_on_not_found: not a boolean");
    load_bad("fk4.json", "{\"negative_ttl\": null}", "negative_ttl", "top negative_ttl: null");
}

int main(void)
{
    if (!mkdtemp(tmpdir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    test_defaults();
    test_aliases();
    test_example_files();
    test_good_file();
    test_errors();
    test_set_registry();
    test_validate();
    test_names();
    test_schema_tables();
    test_nulls_and_hints();
    test_copy();
    test_parse_args();
    test_cred_keys();
    test_cluster();
    test_endpoint_list();
    test_dump();
    test_describe();
    test_failure_keys();
    cleanup();
    return tap_done();
}
