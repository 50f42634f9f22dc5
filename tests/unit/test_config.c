/* Unit tests for src/core/config.c: defaults, the documented example, good files, every class
 * of error (message names the file, the key and the problem), "//" keys, --registry, aliases.
 * Temp files live in a mkdtemp directory that is removed at the end. */
#include "core/config.h"

#include <errno.h>
#include <unistd.h>

#include <uv.h>

#include "core/log.h"
#include "tap.h"

static char tmpdir[] = "/tmp/rgm-test-config-XXXXXX";
static char paths[64][512];
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
             "use either username with password_file, or docker_config", "both credential kinds");

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
    cleanup();
    return tap_done();
}
