/* Unit tests for kubelet credential provider plugins: the kubelet's glob rules (port, label
 * count, '*', '?', classes, path prefix), Go durations, CredentialProviderConfig in YAML and
 * JSON with each validation error, CredentialProviderResponse parsing, the keyring pick, and
 * plugin runs on a real loop (request on stdin, args and env, cache keys Image, Registry and
 * Global, cacheDuration 0 and absent, apiVersion mismatch, timeout, shared jobs, forget). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "core/util.h"
#include "registry/credprovider.h"
#include "tap.h"

static char dir[256];
static uv_loop_t loop;

/* ---- globs ---- */

static void test_globs(void)
{
    static const struct {
        const char *glob, *image;
        int want;
    } cases[] = {
        {"*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.com/app", 1},
        {"*.dkr.ecr.*.amazonaws.com", "123.dkr.ecr.us-east-1.amazonaws.cn/app", 0},
        {"*.azurecr.io", "myreg.azurecr.io/x/y", 1},
        {"*.azurecr.io", "azurecr.io/x", 0},         /* label count */
        {"*.io", "a.k8s.io/x", 0},                   /* one glob, one label */
        {"*.*.registry.io", "a.b.registry.io/x", 1}, /* two globs */
        {"gcr.io", "gcr.io/project/img", 1},         /* no path: any path */
        {"gcr.io", "eu.gcr.io/project/img", 0},      /* label count */
        {"registry.io:8080/path", "registry.io:8080/path/img", 1},
        {"registry.io:8080/path", "registry.io:8080/pathology", 1}, /* a string prefix */
        {"registry.io:8080/path", "registry.io:8080/other", 0},
        {"registry.io:8080/path", "registry.io/path/img", 0}, /* port mismatch */
        {"registry.io:8080", "registry.io:8081/img", 0},      /* port mismatch */
        {"registry.io", "registry.io:8080/img", 0},           /* port: exact */
        {"registry.io:8080", "registry.io:8080/img", 1},
        {"127.0.0.1:5000", "127.0.0.1:5000/library/busybox", 1},
        {"*.0.0.1:5000", "127.0.0.1:5000/library/busybox", 1},
        {"app*.k8s.io", "app1.k8s.io/x", 1}, /* partial label */
        {"app*.k8s.io", "web.k8s.io/x", 0},
        {"k8s.*", "k8s.io/x", 1}, /* top-level glob */
        /* Go's url.Parse ends the host at '?', so in the kubelet (and here) a '?' in a
         * pattern's host leaves a host of fewer labels: it never matches a real one. */
        {"reg?.io", "reg1.io/x", 0},
        {"reg?", "reg/x", 1},
        {"reg[0-9].io", "reg7.io/x", 1},
        {"reg[0-9].io", "regx.io/x", 0},
        {"reg[^0-9].io", "regx.io/x", 1},
        {"reg[^0-9].io", "reg7.io/x", 0},
        {"reg\\*.io", "reg*.io/x", 1},
        {"reg\\*.io", "regx.io/x", 0},
        {"reg[.io", "reg[.io/x", 0}, /* malformed: no match */
        {"*", "localhost/x", 1},
        {"*", "localhost:5000/x", 0},
        {"*.*", "docker.io/library/nginx", 1},
    };
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(cases); i++)
        is_int(rgm_credprovider_match(cases[i].glob, cases[i].image), cases[i].want,
               "match %s ~ %s", cases[i].glob, cases[i].image);
    ok(rgm_credprovider_valid_glob("*.dkr.ecr.*.amazonaws.com"), "valid: ecr");
    ok(rgm_credprovider_valid_glob("registry.io:8080/path"), "valid: port and path");
    ok(!rgm_credprovider_valid_glob("reg[.io"), "invalid: open class");
    ok(!rgm_credprovider_valid_glob("reg[].io"), "invalid: empty class");
    ok(!rgm_credprovider_valid_glob("reg\\"), "invalid: trailing backslash");
    ok(!rgm_credprovider_valid_glob(""), "invalid: empty");
    ok(!rgm_credprovider_valid_glob("a b.io"), "invalid: space");
    ok(!rgm_credprovider_valid_glob("/path"), "invalid: no host");
}

static void test_durations(void)
{
    uint64_t ms = 1;

    ok(rgm_credprovider_parse_duration("0", &ms) == 0 && ms == 0, "duration 0");
    ok(rgm_credprovider_parse_duration("0s", &ms) == 0 && ms == 0, "duration 0s");
    ok(rgm_credprovider_parse_duration("12h", &ms) == 0 && ms == 12 * 3600000ULL, "duration 12h");
    ok(rgm_credprovider_parse_duration("1h30m", &ms) == 0 && ms == 5400000, "duration 1h30m");
    ok(rgm_credprovider_parse_duration("1.5h", &ms) == 0 && ms == 5400000, "duration 1.5h");
    ok(rgm_credprovider_parse_duration("500ms", &ms) == 0 && ms == 500, "duration 500ms");
    ok(rgm_credprovider_parse_duration("5m0s", &ms) == 0 && ms == 300000, "duration 5m0s");
    ok(rgm_credprovider_parse_duration("1500us", &ms) == 0 && ms == 1, "duration 1500us");
    is_int(rgm_credprovider_parse_duration("-1s", &ms), UV_EINVAL, "duration: negative");
    is_int(rgm_credprovider_parse_duration("5", &ms), UV_EINVAL, "duration: no unit");
    is_int(rgm_credprovider_parse_duration("5d", &ms), UV_EINVAL, "duration: no such unit");
    is_int(rgm_credprovider_parse_duration("", &ms), UV_EINVAL, "duration: empty");
    is_int(rgm_credprovider_parse_duration("h", &ms), UV_EINVAL, "duration: no number");
    is_int(rgm_credprovider_parse_duration("9999999999h", &ms), UV_ERANGE, "duration: too long");
}

/* ---- config ---- */

static const char *yaml_ok = "apiVersion: kubelet.config.k8s.io/v1\n"
                             "kind: CredentialProviderConfig\n"
                             "providers:\n"
                             "  - name: ecr-credential-provider\n"
                             "    matchImages:\n"
                             "      - \"*.dkr.ecr.*.amazonaws.com\"\n"
                             "      - 127.0.0.1:5000\n"
                             "    defaultCacheDuration: \"12h\"\n"
                             "    apiVersion: credentialprovider.kubelet.k8s.io/v1\n"
                             "    args: [get-credentials]\n"
                             "    env:\n"
                             "      - name: AWS_PROFILE\n"
                             "        value: example\n";

static const char *json_ok =
    "{\"apiVersion\":\"kubelet.config.k8s.io/v1\",\"kind\":\"CredentialProviderConfig\","
    "\"providers\":[{\"name\":\"acr\",\"matchImages\":[\"*.azurecr.io\"],"
    "\"defaultCacheDuration\":\"10m\",\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\"}]}";

static int parse(const char *text, char *err, size_t errlen)
{
    rgm_credproviders_t *p = NULL;
    int e = rgm_credproviders_parse(NULL, text, strlen(text), "/bin", 0, err, errlen, &p);

    rgm_credproviders_free(p);
    return e;
}

static void replace(const char *src, const char *from, const char *to, char *out, size_t len)
{
    const char *at = strstr(src, from);

    if (!at) {
        snprintf(out, len, "%s", src);
        return;
    }
    snprintf(out, len, "%.*s%s%s", (int)(at - src), src, to, at + strlen(from));
}

static void test_config(void)
{
    static const struct {
        const char *from, *to, *want;
    } bad[] = {
        {"apiVersion: kubelet.config.k8s.io/v1\n", "apiVersion: kubelet.config.k8s.io/v2\n",
         "apiVersion:"},
        {"kind: CredentialProviderConfig", "kind: Other", "kind:"},
        {"  - name: ecr-credential-provider", "  - name: ../ecr", "providers[0].name:"},
        {"  - name: ecr-credential-provider", "  - name: \"\"", "providers[0].name: required"},
        {"\"*.dkr.ecr.*.amazonaws.com\"", "\"reg[.io\"", "providers[0].matchImages[0]:"},
        {"    defaultCacheDuration: \"12h\"\n", "", "providers[0].defaultCacheDuration: required"},
        {"\"12h\"", "\"-5m\"", "providers[0].defaultCacheDuration:"},
        {"    apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
         "    apiVersion: credentialprovider.kubelet.k8s.io/v2\n", "providers[0].apiVersion:"},
        {"    args: [get-credentials]", "    args: {a: b}", "providers[0].args:"},
        {"      - name: AWS_PROFILE", "      - name: \"A=B\"", "providers[0].env[0]:"},
        {"providers:\n", "providers: []\nx:\n", "providers:"},
        {"kind: CredentialProviderConfig\n", "kind: [unclosed\n", ":"},
    };
    rgm_credproviders_t *p = NULL;
    char text[2048];
    char err[512];
    size_t i;

    is_int(rgm_credproviders_parse(NULL, yaml_ok, strlen(yaml_ok), "/bin", 0, err, sizeof(err), &p),
           0, "config: YAML");
    ok(p && rgm_credproviders_count(p) == 1, "config: one provider");
    ok(p && rgm_credproviders_matches(p, "1.dkr.ecr.eu-west-1.amazonaws.com/app"),
       "config: the ECR pattern");
    ok(p && rgm_credproviders_matches(p, "127.0.0.1:5000/private/app"),
       "config: the host:port pattern");
    ok(p && !rgm_credproviders_matches(p, "docker.io/library/nginx"), "config: not docker.io");
    rgm_credproviders_free(p);
    p = NULL;
    is_int(rgm_credproviders_parse(NULL, json_ok, strlen(json_ok), "/bin", 0, err, sizeof(err), &p),
           0, "config: JSON");
    ok(p && rgm_credproviders_matches(p, "x.azurecr.io/a"), "config: JSON pattern");
    rgm_credproviders_free(p);

    replace(yaml_ok, "providers:\n",
            "providers:\n  - name: ecr-credential-provider\n    matchImages: [a.io]\n"
            "    defaultCacheDuration: 1m\n"
            "    apiVersion: credentialprovider.kubelet.k8s.io/v1\n",
            text, sizeof(text));
    ok(parse(text, err, sizeof(err)) == UV_EINVAL && strstr(err, "duplicate"),
       "config: duplicate names (%s)", err);
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++) {
        replace(yaml_ok, bad[i].from, bad[i].to, text, sizeof(text));
        err[0] = '\0';
        ok(parse(text, err, sizeof(err)) == UV_EINVAL && strstr(err, bad[i].want),
           "config: bad %zu gives \"%s\" (%s)", i, bad[i].want, err);
    }
    ok(parse("{\"apiVersion\": ", err, sizeof(err)) == UV_EINVAL, "config: bad JSON (%s)", err);
    ok(parse("", err, sizeof(err)) == UV_EINVAL, "config: empty (%s)", err);
    ok(parse("- a\n- b\n", err, sizeof(err)) == UV_EINVAL, "config: a list (%s)", err);
    ok(rgm_credproviders_load(NULL, "/nonexistent/x.yaml", "/bin", 0, err, sizeof(err), &p) ==
               UV_EIO &&
           strstr(err, "/nonexistent/x.yaml"),
       "config: missing file (%s)", err);
}

/* ---- responses ---- */

static void test_responses(void)
{
    static const char *api = "credentialprovider.kubelet.k8s.io/v1";
    rgm_credprovider_keytype_t kt;
    int has;
    uint64_t d;
    json_t *auth = NULL;
    char why[256];
    rgm_cred_t c;
    const char *r1 =
        "{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":"
        "\"CredentialProviderResponse\",\"cacheKeyType\":\"Registry\",\"cacheDuration\":\"5m\","
        "\"auth\":{\"*.example.com\":{\"username\":\"wild\",\"password\":\"p1\"},"
        "\"https://a.example.com/v2/\":{\"username\":\"exact\",\"password\":\"p2\"},"
        "\"a.example.com/team\":{\"username\":\"team\",\"password\":\"p3\"}}}";

    ok(rgm_credprovider_parse_response(r1, strlen(r1), api, &kt, &has, &d, &auth, why,
                                       sizeof(why)) == 0 &&
           kt == RGM_CP_KEY_REGISTRY && has && d == 300000 && json_object_size(auth) == 3,
       "response: parsed");
    ok(rgm_credprovider_pick(auth, "a.example.com/team/app", &c) == 1 &&
           strcmp(c.username, "team") == 0,
       "pick: the longest key first (a path)");
    rgm_cred_clear(&c);
    ok(rgm_credprovider_pick(auth, "a.example.com/other", &c) == 1 &&
           strcmp(c.username, "exact") == 0,
       "pick: scheme and /v2/ dropped from keys");
    rgm_cred_clear(&c);
    ok(rgm_credprovider_pick(auth, "b.example.com/x", &c) == 1 && strcmp(c.username, "wild") == 0,
       "pick: a glob key");
    rgm_cred_clear(&c);
    ok(rgm_credprovider_pick(auth, "example.com/x", &c) == 0 && !c.username,
       "pick: nothing for another label count");
    json_decref(auth);

#define BAD_RESPONSE(text, want, name)                                                             \
    do {                                                                                           \
        auth = NULL;                                                                               \
        why[0] = '\0';                                                                             \
        ok(rgm_credprovider_parse_response(text, strlen(text), api, &kt, &has, &d, &auth, why,     \
                                           sizeof(why)) == UV_EINVAL &&                            \
               strstr(why, want) && !auth,                                                         \
           "response: %s (%s)", name, why);                                                        \
    } while (0)
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1beta1\",\"kind\":"
                 "\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\"}",
                 "apiVersion", "another apiVersion is rejected");
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"X\","
                 "\"cacheKeyType\":\"Image\"}",
                 "kind", "wrong kind");
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":"
                 "\"CredentialProviderResponse\"}",
                 "cacheKeyType", "no cacheKeyType");
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":"
                 "\"CredentialProviderResponse\",\"cacheKeyType\":\"Node\"}",
                 "cacheKeyType", "unknown cacheKeyType");
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":"
                 "\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\",\"cacheDuration\":"
                 "\"soon\"}",
                 "cacheDuration", "bad cacheDuration");
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":"
                 "\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\",\"auth\":{\"a.io\":"
                 "{\"username\":1}}}",
                 "strings", "a number for a username");
    BAD_RESPONSE("{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":"
                 "\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\",\"auth\":[]}",
                 "map", "auth not a map");
    BAD_RESPONSE("garbage", "JSON", "garbage");
}

/* ---- runs ---- */

struct got {
    int calls;
    int err;
    char user[128];
    char provider[64];
};

static void on_cred(int err, const rgm_cred_t *c, const char *provider, void *ud)
{
    struct got *g = ud;

    g->calls++;
    g->err = err;
    snprintf(g->user, sizeof(g->user), "%s", c->username ? c->username : "(null)");
    snprintf(g->provider, sizeof(g->provider), "%s", provider);
}

static void write_plugin(const char *name, const char *body)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    if (chmod(path, 0755) != 0)
        printf("# chmod: %s\n", strerror(errno));
}

/* A plugin that logs its stdin, args and $TEST_ENV, and answers with keytype and duration. */
static void write_answering(const char *name, const char *keytype, const char *duration,
                            const char *user)
{
    char body[2048];

    snprintf(body, sizeof(body),
             "echo \"$* $TEST_ENV $(cat)\" >> %s/%s.log\n"
             "echo '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\","
             "\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"%s\"%s%s%s,"
             "\"auth\":{\"*.test:5000\":{\"username\":\"%s\",\"password\":\"pw\"}}}'",
             dir, name, keytype, duration ? ",\"cacheDuration\":\"" : "", duration ? duration : "",
             duration ? "\"" : "", user);
    write_plugin(name, body);
}

static rgm_credproviders_t *make(const char *providers_yaml, uint64_t timeout_ms)
{
    char text[4096];
    char err[256];
    rgm_credproviders_t *p = NULL;

    snprintf(text, sizeof(text),
             "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n"
             "providers:\n%s",
             providers_yaml);
    if (rgm_credproviders_parse(&loop, text, strlen(text), dir, timeout_ms, err, sizeof(err), &p) <
        0)
        printf("# config: %s\n", err);
    return p;
}

static int get(rgm_credproviders_t *p, const char *image, struct got *g)
{
    rgm_credproviders_wait_t *w = NULL;
    rgm_cred_t now;
    int r;

    memset(g, 0, sizeof(*g));
    r = rgm_credproviders_get(p, image, on_cred, g, &w, &now);
    if (r == 1) {
        g->calls = 1;
        g->err = 0;
        snprintf(g->user, sizeof(g->user), "%s", now.username ? now.username : "(null)");
        rgm_cred_clear(&now);
    }
    return r;
}

static void run_until(const struct got *g, uint64_t limit_ms)
{
    uint64_t end = rgm_time_ms() + limit_ms;

    while (g->calls < 1 && rgm_time_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
}

static int count_lines(const char *name)
{
    char path[512];
    char line[1024];
    FILE *f;
    int n = 0;

    snprintf(path, sizeof(path), "%s/%s.log", dir, name);
    f = fopen(path, "r");
    if (!f)
        return 0;
    while (fgets(line, sizeof(line), f))
        n++;
    fclose(f);
    return n;
}

#define PROV(name, match, def)                                                                     \
    "  - name: " name "\n    matchImages: [\"" match "\"]\n    defaultCacheDuration: " def "\n"    \
    "    apiVersion: credentialprovider.kubelet.k8s.io/v1\n"

static void test_runs(void)
{
    rgm_credproviders_t *p;
    struct got g, g2;
    char path[512];
    char line[1024];
    FILE *f;
    uint64_t t0;

    /* Registry key, with args and env; two images of one registry share the answer. */
    write_answering("regkey", "Registry", "5m", "ruser");
    p = make(PROV("regkey", "*.test:5000", "1m") "    args: [get-credentials, -v]\n"
                                                 "    env: [{name: TEST_ENV, value: hello}]\n",
             5000);
    is_int(get(p, "a.test:5000/team/app", &g), 0, "registry key: a run starts");
    is_int(get(p, "a.test:5000/team/app", &g2), 0, "registry key: the same image joins");
    run_until(&g2, 5000);
    ok(g.calls == 1 && g.err == 0 && strcmp(g.user, "ruser") == 0 &&
           strcmp(g.provider, "regkey") == 0,
       "registry key: credentials from regkey");
    is_int(rgm_credproviders_runs(p), 1, "registry key: one run for two needs");
    snprintf(path, sizeof(path), "%s/regkey.log", dir);
    f = fopen(path, "r");
    line[0] = '\0';
    if (f) {
        if (!fgets(line, sizeof(line), f))
            line[0] = '\0';
        fclose(f);
    }
    ok(strstr(line, "get-credentials -v hello ") == line, "args and env reach the plugin");
    ok(strstr(line, "\"image\":\"a.test:5000/team/app\"") &&
           strstr(line, "\"kind\":\"CredentialProviderRequest\"") &&
           strstr(line, "\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\""),
       "the request on stdin: %.*s", (int)strcspn(line, "\n"), line);
    is_int(get(p, "a.test:5000/other/img", &g), 1, "registry key: another image is cached");
    is_str(g.user, "ruser", "registry key: cached credentials");
    rgm_credproviders_forget(p, "a.test:5000/other/img");
    is_int(get(p, "a.test:5000/other/img", &g), 0, "forget: runs again");
    run_until(&g, 5000);
    is_int(count_lines("regkey"), 2, "forget: two runs in all");
    rgm_credproviders_free(p);

    /* Image key: another image of the same registry runs again. */
    write_answering("imgkey", "Image", "5m", "iuser");
    p = make(PROV("imgkey", "*.test:5000", "1m"), 5000);
    is_int(get(p, "a.test:5000/one", &g), 0, "image key: runs");
    run_until(&g, 5000);
    is_int(get(p, "a.test:5000/one", &g), 1, "image key: the same image is cached");
    is_int(get(p, "a.test:5000/two", &g), 0, "image key: another image runs");
    run_until(&g, 5000);
    is_int(count_lines("imgkey"), 2, "image key: two runs");
    rgm_credproviders_free(p);

    /* cacheDuration 0: no cache; absent with defaultCacheDuration 0: no cache either. */
    write_answering("zero", "Global", "0s", "z");
    p = make(PROV("zero", "*.test:5000", "1h"), 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "cacheDuration 0: runs");
    run_until(&g, 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "cacheDuration 0: runs again");
    run_until(&g, 5000);
    is_str(g.user, "z", "cacheDuration 0: credentials");
    rgm_credproviders_free(p);
    write_answering("nodur", "Global", NULL, "n");
    p = make(PROV("nodur", "*.test:5000", "0"), 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "no cacheDuration, default 0: runs");
    run_until(&g, 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "no cacheDuration, default 0: runs again");
    run_until(&g, 5000);
    rgm_credproviders_free(p);
    write_answering("defdur", "Global", NULL, "d");
    p = make(PROV("defdur", "*.test:5000", "1h"), 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "no cacheDuration, default 1h: runs");
    run_until(&g, 5000);
    is_int(get(p, "b.test:5000/y", &g), 1, "no cacheDuration, default 1h: Global key cached");
    rgm_credproviders_free(p);

    /* apiVersion mismatch, a hang, a missing plugin: errors, then the next provider. */
    write_plugin("oldapi", "echo '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1beta1\","
                           "\"kind\":\"CredentialProviderResponse\",\"cacheKeyType\":\"Image\"}'");
    p = make(PROV("oldapi", "*.test:5000", "1m"), 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "wrong apiVersion: runs");
    run_until(&g, 5000);
    ok(g.calls == 1 && g.err == UV_EPROTO && strcmp(g.user, "(null)") == 0 &&
           strcmp(g.provider, "oldapi") == 0,
       "wrong apiVersion: rejected (UV_EPROTO)");
    rgm_credproviders_free(p);

    write_plugin("hang", "sleep 30");
    write_answering("second", "Image", "1m", "second");
    p = make(PROV("hang", "*.test:5000", "1m") PROV("second", "a.test:5000", "1m"), 300);
    t0 = rgm_time_ms();
    is_int(get(p, "a.test:5000/x", &g), 0, "timeout: runs");
    run_until(&g, 5000);
    ok(g.calls == 1 && g.err == 0 && strcmp(g.user, "second") == 0,
       "timeout: killed, the next provider answers");
    ok(rgm_time_ms() - t0 < 3000, "timeout: at the deadline (%llu ms)",
       (unsigned long long)(rgm_time_ms() - t0));
    rgm_credproviders_free(p);

    p = make(PROV("missing-plugin", "*.test:5000", "1m"), 300);
    is_int(get(p, "a.test:5000/x", &g), UV_ENOENT, "missing plugin: UV_ENOENT at once");
    is_int(get(p, "other.host/x", &g), 1, "no provider matches: answered at once");
    is_str(g.user, "(null)", "no provider matches: anonymous");
    rgm_credproviders_free(p);

    /* Two providers with the same key: the earlier wins. */
    write_answering("first", "Image", "1m", "first");
    p = make(PROV("first", "*.test:5000", "1m") PROV("second", "*.test:5000", "1m"), 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "two providers: runs");
    run_until(&g, 5000);
    ok(strcmp(g.user, "first") == 0 && strcmp(g.provider, "first") == 0,
       "two providers: the earlier provider's entry wins");

    /* Free with a job in flight. */
    rgm_credproviders_free(p);
    p = make(PROV("hang", "*.test:5000", "1m"), 5000);
    is_int(get(p, "a.test:5000/x", &g), 0, "free in flight: runs");
    rgm_credproviders_free(p);
    t0 = rgm_time_ms();
    while (uv_run(&loop, UV_RUN_ONCE) != 0 && rgm_time_ms() - t0 < 5000)
        ;
    is_int(g.calls, 0, "free in flight: the waiter is dropped");
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");
    char cmd[600];

    signal(SIGPIPE, SIG_IGN); /* as main.c */
    snprintf(dir, sizeof(dir), "%s/rgm-credprovider-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir) || uv_loop_init(&loop) != 0) {
        printf("Bail out! setup: %s\n", strerror(errno));
        return 1;
    }
    test_globs();
    test_durations();
    test_config();
    test_responses();
    test_runs();
    is_int(uv_loop_close(&loop), 0, "uv_loop_close() == 0");
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        printf("# could not remove %s\n", dir);
    return tap_done();
}
