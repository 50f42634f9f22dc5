/* Unit tests for src/registry/auth.c: WWW-Authenticate challenges, token responses, Docker
 * config.json lookups, Basic headers, credential hashes, scopes, token URLs and the TTL cache. */
#include "registry/auth.h"

#include <fcntl.h>
#include <unistd.h>

#include <uv.h>

#include "core/util.h"
#include "tap.h"

/* ---- challenges ---- */

static void test_challenges(void)
{
    rgm_auth_challenge_t ch[4];
    char big[3000];
    char hdr[3200];
    int n;

    n = rgm_auth_parse_challenges("Bearer realm=\"https://auth.docker.io/token\","
                                  "service=\"registry.docker.io\","
                                  "scope=\"repository:library/nginx:pull\"",
                                  ch, 4);
    is_int(n, 1, "docker hub challenge: one");
    is_int(ch[0].scheme, RGM_AUTH_SCHEME_BEARER, "scheme bearer");
    is_str(ch[0].realm, "https://auth.docker.io/token", "realm");
    is_str(ch[0].service, "registry.docker.io", "service");
    is_str(ch[0].scope, "repository:library/nginx:pull", "scope");
    is_str(ch[0].error, "", "no error");

    n = rgm_auth_parse_challenges("Bearer realm=\"a,b\",service=\"x\", Basic realm=\"y\"", ch, 4);
    is_int(n, 2, "two challenges");
    is_str(ch[0].realm, "a,b", "comma inside quotes");
    is_str(ch[0].service, "x", "service of first");
    is_int(ch[1].scheme, RGM_AUTH_SCHEME_BASIC, "second is basic");
    is_str(ch[1].realm, "y", "realm of second");

    n = rgm_auth_parse_challenges("bearer REALM = \"r\" , Service=s ,scope=\"a b\"", ch, 4);
    is_int(n, 1, "lowercase scheme, spaces around '='");
    is_int(ch[0].scheme, RGM_AUTH_SCHEME_BEARER, "lowercase bearer");
    is_str(ch[0].realm, "r", "uppercase param name");
    is_str(ch[0].service, "s", "unquoted token value");
    is_str(ch[0].scope, "a b", "space in quoted scope");

    n = rgm_auth_parse_challenges("Bearer realm=\"a\\\"b\\\\c\",error=\"insufficient_scope\"", ch,
                                  4);
    is_int(n, 1, "escaped quotes");
    is_str(ch[0].realm, "a\"b\\c", "backslash escapes decoded");
    is_str(ch[0].error, "insufficient_scope", "error parameter");

    n = rgm_auth_parse_challenges("Negotiate YWJjZA==, Basic realm=\"x\"", ch, 4);
    is_int(n, 2, "token68 challenge then basic");
    is_int(ch[0].scheme, RGM_AUTH_SCHEME_OTHER, "negotiate is other");
    is_str(ch[1].realm, "x", "basic after token68");

    n = rgm_auth_parse_challenges("Negotiate abc/def, NTLM", ch, 4);
    is_int(n, 2, "token68 without padding, bare scheme");

    n = rgm_auth_parse_challenges("Basic", ch, 4);
    is_int(n, 1, "bare Basic");
    is_str(ch[0].realm, "", "bare Basic: no realm");

    n = rgm_auth_parse_challenges("Bearer realm=\"r\", unknown=\"z\", , service=\"s\"", ch, 4);
    is_int(n, 1, "unknown param and empty list element");
    is_str(ch[0].service, "s", "param after empty element");

    n = rgm_auth_parse_challenges("A, B, C, D, E realm=x", ch, 2);
    is_int(n, 2, "max bounds the stored count");

    is_int(rgm_auth_parse_challenges("", ch, 4), 0, "empty value");
    is_int(rgm_auth_parse_challenges("   ", ch, 4), 0, "blank value");
    is_int(rgm_auth_parse_challenges(NULL, ch, 4), UV_EINVAL, "NULL value");

    {
        static const char *garbage[] = {
            "Bearer realm=\"unterminated",
            "realm=\"x\"",
            "=",
            "Bearer realm=\"x\", service=",
            "Bearer realm=\"a\" junk",
            "Bearer realm=\"a\"\"b\"",
            "Bearer realm=\"a\x01\"",
            "Bearer realm=\"a\\",
            "\"Bearer\"",
            "Bearer realm=x;y",
            "@@@",
            "Bearer ,realm=\"a\" \"b\"",
        };
        size_t i;

        for (i = 0; i < RGM_ARRAY_SIZE(garbage); i++)
            ok(rgm_auth_parse_challenges(garbage[i], ch, 4) < 0, "garbage %zu rejected", i);
    }

    memset(big, 'a', 2100);
    big[2100] = '\0';
    snprintf(hdr, sizeof(hdr), "Bearer realm=\"%s\"", big);
    is_int(rgm_auth_parse_challenges(hdr, ch, 4), UV_ENOBUFS, "over-long realm");
    snprintf(hdr, sizeof(hdr), "Bearer realm=\"r\",scope=\"%s\"", big);
    is_int(rgm_auth_parse_challenges(hdr, ch, 4), UV_ENOBUFS, "over-long scope");
    snprintf(hdr, sizeof(hdr), "Bearer realm=\"r\",other=\"%s\"", big);
    is_int(rgm_auth_parse_challenges(hdr, ch, 4), 1, "over-long unknown param ignored");
    big[1023] = '\0';
    snprintf(hdr, sizeof(hdr), "Bearer realm=%s", big);
    is_int(rgm_auth_parse_challenges(hdr, ch, 4), 1, "1023-byte realm fits");
    big[1023] = 'a';
    big[1024] = '\0';
    snprintf(hdr, sizeof(hdr), "Bearer realm=%s", big);
    is_int(rgm_auth_parse_challenges(hdr, ch, 4), UV_ENOBUFS, "1024-byte realm does not fit");
}

/* Every prefix and a set of byte mutations of a valid header: never crash (ASan checks),
 * always a count in range or an error. */
static void test_challenge_fuzz(void)
{
    static const char base[] = "Bearer realm=\"https://a/t?x=\\\"1\\\"\",service=s, Basic "
                               "realm=\"y\", Negotiate Zm9v==";
    static const char bytes[] = "\"\\=, \t\x01\x7f\xff"
                                "a";
    rgm_auth_challenge_t ch[2];
    char buf[sizeof(base)];
    size_t i;
    size_t j;
    int bad = 0;
    int n;

    for (i = 0; i < sizeof(base); i++) {
        memcpy(buf, base, i);
        buf[i] = '\0';
        n = rgm_auth_parse_challenges(buf, ch, 2);
        if (n > 2)
            bad++;
        for (j = 0; j + 1 < sizeof(bytes) && i + 1 < sizeof(base); j++) {
            memcpy(buf, base, sizeof(base));
            buf[i] = bytes[j];
            n = rgm_auth_parse_challenges(buf, ch, 2);
            if (n > 2)
                bad++;
        }
    }
    is_int(bad, 0, "mutated headers: counts in range, no crash");
}

/* ---- token responses ---- */

static void test_tokens(void)
{
    rgm_auth_token_t tok;
    const uint64_t now = 1700000000000ull; /* 2023-11-14T22:13:20Z */
    const char *j;

    j = "{\"token\":\"abc\",\"access_token\":\"def\",\"expires_in\":300}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "token and access_token");
    is_str(tok.token, "abc", "token preferred");
    is_int(tok.expires_ms, now + 300000, "expires_in 300");
    rgm_auth_token_clear(&tok);
    ok(tok.token == NULL, "clear frees the token");

    j = "{\"access_token\":\"def\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "access_token only");
    is_str(tok.token, "def", "access_token used");
    is_int(tok.expires_ms, now + 60000, "default 60 s");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"\",\"access_token\":\"def\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "empty token");
    is_str(tok.token, "def", "empty token falls back to access_token");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"t\",\"expires_in\":10}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "short expires_in");
    is_int(tok.expires_ms, now + 60000, "expires_in raised to 60");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"t\",\"expires_in\":\"300\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "string expires_in");
    is_int(tok.expires_ms, now + 60000, "string expires_in ignored");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"t\",\"expires_in\":300,\"issued_at\":\"2023-11-14T22:10:00Z\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "issued_at");
    is_int(tok.expires_ms, now - 200000 + 300000, "expiry from issued_at");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"t\",\"expires_in\":300,\"issued_at\":\"2023-11-14T23:10:00.250+01:00\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "issued_at with offset");
    is_int(tok.expires_ms, now - 200000 + 250 + 300000, "offset and fraction applied");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"t\",\"expires_in\":300,\"issued_at\":\"2023-11-14T23:00:00Z\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "issued_at in future");
    is_int(tok.expires_ms, now + 300000, "future issued_at capped at now + expires_in");
    rgm_auth_token_clear(&tok);

    j = "{\"token\":\"t\",\"issued_at\":\"yesterday\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), 0, "bad issued_at");
    is_int(tok.expires_ms, now + 60000, "bad issued_at ignored");
    rgm_auth_token_clear(&tok);

    j = "{\"expires_in\":300}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), UV_EINVAL, "no token");
    ok(tok.token == NULL, "no token: NULL");
    j = "{\"token\":\"a\\r\\nX-Evil: 1\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), UV_EINVAL, "CRLF in token");
    j = "{\"token\":\"a b\"}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), UV_EINVAL, "space in token");
    j = "{\"token\":42}";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), UV_EINVAL, "number token");
    j = "[\"token\"]";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), UV_EINVAL, "array");
    j = "{\"token\":\"abc\"";
    is_int(rgm_auth_parse_token_response(j, strlen(j), now, &tok), UV_EINVAL, "truncated JSON");
    is_int(rgm_auth_parse_token_response("", 0, now, &tok), UV_EINVAL, "empty body");

    {
        size_t n = RGM_AUTH_TOKEN_MAX + 1;
        char *big = rgm_malloc(n + 32);

        memcpy(big, "{\"token\":\"", 10);
        memset(big + 10, 'x', n);
        memcpy(big + 10 + n, "\"}", 3);
        is_int(rgm_auth_parse_token_response(big, strlen(big), now, &tok), UV_E2BIG,
               "over-long token");
        free(big);
    }
}

/* ---- docker config.json ---- */

static char *b64(const char *s, char *out, size_t outlen)
{
    if (rgm_b64_encode(s, strlen(s), out, outlen) < 0)
        out[0] = '\0';
    return out;
}

static int lookup(const char *json, const char *registry, char **user, char **pass)
{
    return rgm_auth_docker_config_lookup_json(json, strlen(json), registry, user, pass);
}

static void test_docker_config(void)
{
    char json[2048];
    char a1[64], a2[64], a3[64];
    char path[] = "/tmp/rgm-test-auth-XXXXXX";
    char *user = NULL;
    char *pass = NULL;
    int fd;

    snprintf(json, sizeof(json),
             "{\"auths\":{"
             "\"https://index.docker.io/v1/\":{\"auth\":\"%s\"},"
             "\"https://GHCR.io\":{\"username\":\"gh\",\"password\":\"ghpw\"},"
             "\"localhost:5000\":{\"auth\":\"%s\"},"
             "\"quay.io\":{\"identitytoken\":\"xyz\"},"
             "\"bad.io\":{\"auth\":\"%%%%%%\"},"
             "\"nocolon.io\":{\"auth\":\"%s\"}"
             "}}",
             b64("hubuser:hub:pw", a1, sizeof(a1)), b64("lu:lp", a2, sizeof(a2)),
             b64("justuser", a3, sizeof(a3)));

    is_int(lookup(json, "docker.io", &user, &pass), 0, "docker.io via index URL key");
    is_str(user, "hubuser", "auth user");
    is_str(pass, "hub:pw", "auth password keeps later colons");
    RGM_FREE(user);
    RGM_FREE(pass);
    is_int(lookup(json, "registry-1.docker.io", &user, &pass), 0, "registry-1 alias");
    is_str(user, "hubuser", "alias user");
    RGM_FREE(user);
    RGM_FREE(pass);
    is_int(lookup(json, "ghcr.io", &user, &pass), 0, "ghcr.io via https://GHCR.io");
    is_str(user, "gh", "username field");
    is_str(pass, "ghpw", "password field");
    RGM_FREE(user);
    RGM_FREE(pass);
    is_int(lookup(json, "localhost:5000", &user, &pass), 0, "host:port key");
    is_str(user, "lu", "host:port user");
    RGM_FREE(user);
    RGM_FREE(pass);
    is_int(lookup(json, "localhost", &user, &pass), UV_ENOENT, "port matters");
    is_int(lookup(json, "quay.io", &user, &pass), UV_ENOENT, "identitytoken only: no creds");
    is_int(lookup(json, "example.com", &user, &pass), UV_ENOENT, "missing registry");
    ok(user == NULL && pass == NULL, "outputs NULL when missing");
    is_int(lookup(json, "bad.io", &user, &pass), UV_EINVAL, "bad base64");
    is_int(lookup(json, "nocolon.io", &user, &pass), UV_EINVAL, "auth without ':'");
    is_int(lookup("{}", "docker.io", &user, &pass), UV_ENOENT, "no auths");
    is_int(lookup("{\"auths\":[]}", "docker.io", &user, &pass), UV_ENOENT, "auths not object");
    is_int(lookup("not json", "docker.io", &user, &pass), UV_EINVAL, "not JSON");

    snprintf(json, sizeof(json),
             "{\"auths\":{\"docker.io\":{\"auth\":\"%s\"},"
             "\"https://index.docker.io/v1/\":{\"auth\":\"%s\"}}}",
             b64("exact:1", a1, sizeof(a1)), b64("url:2", a2, sizeof(a2)));
    is_int(lookup(json, "docker.io", &user, &pass), 0, "two docker.io keys");
    is_str(user, "exact", "exact key wins");
    RGM_FREE(user);
    RGM_FREE(pass);

    fd = mkstemp(path);
    ok(fd >= 0, "temp file");
    if (fd >= 0) {
        ok(write(fd, json, strlen(json)) == (ssize_t)strlen(json), "write config");
        close(fd);
        is_int(rgm_auth_docker_config_lookup(path, "index.docker.io", &user, &pass), 0,
               "lookup from file");
        is_str(user, "exact", "file: first matching key in file order");
        RGM_FREE(user);
        RGM_FREE(pass);
        unlink(path);
    }
    is_int(rgm_auth_docker_config_lookup("/nonexistent/rgm/config.json", "docker.io", &user, &pass),
           UV_EIO, "missing file");
}

/* ---- headers, hashes, scopes, token URLs ---- */

static void test_helpers(void)
{
    char out[512];
    char h1[65], h2[65], h3[65];
    rgm_auth_challenge_t ch;

    is_int(rgm_auth_basic_header("user", "pass", out, sizeof(out)), 0, "basic header");
    is_str(out, "Basic dXNlcjpwYXNz", "basic header value");
    is_int(rgm_auth_basic_header("a", "b:c", out, sizeof(out)), 0, "password with ':'");
    is_str(out, "Basic YTpiOmM=", "password with ':' value");
    is_int(rgm_auth_basic_header("a:b", "c", out, sizeof(out)), UV_EINVAL, "user with ':'");
    is_int(rgm_auth_basic_header("a", "b\r\n", out, sizeof(out)), UV_EINVAL, "CRLF in password");
    is_int(rgm_auth_basic_header("user", "pass", out, 18), UV_ENOBUFS, "buffer one short");
    is_int(rgm_auth_basic_header("user", "pass", out, 19), 0, "exact buffer");

    rgm_auth_cred_hash("Basic dXNlcjpwYXNz", h1);
    rgm_auth_cred_hash("Basic dXNlcjpwYXNz", h2);
    rgm_auth_cred_hash("Basic dXNlcjpwYXNx", h3);
    is_int(strlen(h1), 64, "hash is 64 hex characters");
    is_int(strspn(h1, "0123456789abcdef"), 64, "hash is lowercase hex");
    is_str(h1, h2, "hash stable");
    ok(strcmp(h1, h3) != 0, "different credentials, different hash");
    ok(strstr(h1, "dXNlcjpwYXNz") == NULL && strstr(h1, "user") == NULL &&
           strstr(h1, "pass") == NULL,
       "hash does not contain the secret");
    ok(strcmp(h1, "b7a0d4b3c0a1b3c1d0b1d2c9e3e5a8c2d9f4c1a7e5b6d3c8a9f0e1d2c3b4a5f6") != 0,
       "hash is not a constant");

    is_int(rgm_auth_pull_scope("library/nginx", out, sizeof(out)), 0, "pull scope");
    is_str(out, "repository:library/nginx:pull", "pull scope value");
    is_int(rgm_auth_pull_scope("Bad Name", out, sizeof(out)), UV_EINVAL, "invalid repo");
    is_int(rgm_auth_pull_scope("a", out, 10), UV_ENOBUFS, "small scope buffer");

    memset(&ch, 0, sizeof(ch));
    snprintf(ch.realm, sizeof(ch.realm), "https://auth.docker.io/token");
    snprintf(ch.service, sizeof(ch.service), "registry.docker.io");
    is_int(rgm_auth_token_url(&ch, "repository:library/nginx:pull", out, sizeof(out)), 0,
           "token url");
    is_str(out,
           "https://auth.docker.io/token?service=registry.docker.io"
           "&scope=repository%3Alibrary%2Fnginx%3Apull",
           "token url value");
    snprintf(ch.realm, sizeof(ch.realm), "https://ghcr.io/token?x=1");
    ch.service[0] = '\0';
    snprintf(ch.scope, sizeof(ch.scope), "repository:a:pull");
    is_int(rgm_auth_token_url(&ch, NULL, out, sizeof(out)), 0, "token url, realm with query");
    is_str(out, "https://ghcr.io/token?x=1&scope=repository%3Aa%3Apull",
           "challenge scope, '&' separator, no service");
    snprintf(ch.realm, sizeof(ch.realm), "file:///etc/passwd");
    is_int(rgm_auth_token_url(&ch, NULL, out, sizeof(out)), UV_EINVAL, "non-http realm");
    snprintf(ch.realm, sizeof(ch.realm), "https://a/token");
    is_int(rgm_auth_token_url(&ch, NULL, out, 20), UV_ENOBUFS, "token url buffer too small");
}

static void test_token_form(void)
{
    rgm_auth_challenge_t ch;
    rgm_buf_t b;
    char big[3000];

    rgm_buf_init(&b, 4096);
    memset(&ch, 0, sizeof(ch));
    snprintf(ch.realm, sizeof(ch.realm), "https://auth.example/token");
    snprintf(ch.service, sizeof(ch.service), "registry.example");
    snprintf(ch.scope, sizeof(ch.scope), "repository:from/challenge:pull");
    is_int(rgm_auth_token_form(&ch, "repository:team/app:pull", "rt+/=&x y", &b), 0, "token form");
    is_str(rgm_buf_cstr(&b),
           "grant_type=refresh_token&refresh_token=rt%2B%2F%3D%26x%20y"
           "&service=registry.example&scope=repository%3Ateam%2Fapp%3Apull&client_id=regmirror",
           "token form: refresh_token grant, values percent-encoded, client_id regmirror");
    is_int(rgm_auth_token_form(&ch, NULL, "t", &b), 0, "token form, challenge scope");
    is_str(rgm_buf_cstr(&b),
           "grant_type=refresh_token&refresh_token=t&service=registry.example"
           "&scope=repository%3Afrom%2Fchallenge%3Apull&client_id=regmirror",
           "token form: scope NULL is the challenge's; out emptied first");
    ch.service[0] = '\0';
    is_int(rgm_auth_token_form(&ch, "", "t", &b), 0, "token form, no service, no scope");
    is_str(rgm_buf_cstr(&b), "grant_type=refresh_token&refresh_token=t&client_id=regmirror",
           "token form: empty service and scope left out");
    is_int(rgm_auth_token_form(&ch, NULL, "", &b), UV_EINVAL, "token form: empty token");
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    big[10] = '%'; /* 3 bytes encoded */
    is_int(rgm_auth_token_form(&ch, NULL, big, &b), 0, "token form: 3 KB token fits 4 KiB");
    big[11] = '%';
    memset(big + 12, '/', 800); /* 2,400 bytes encoded */
    is_int(rgm_auth_token_form(&ch, NULL, big, &b), UV_ENOBUFS, "token form: past max");
    is_int(b.len, 0, "token form: out empty after UV_ENOBUFS");
    rgm_buf_free(&b);
}

/* Which helper docker would run (credHelpers by the exact key, else credsStore). */
static void test_config_helper(void)
{
    static const char json[] = "{\"credHelpers\":{"
                               "\"https://index.docker.io/v1/\":\"hub\","
                               "\"docker.io\":\"not-this-key\","
                               "\"127.0.0.1:5000\":\"local\","
                               "\"ghcr.io\":\"\"},"
                               "\"credsStore\":\"store\"}";
    char path[] = "/tmp/rgm-test-auth-helper-XXXXXX";
    char *h = NULL;
    int fd;

    is_str(rgm_auth_helper_server_url("docker.io"), "https://index.docker.io/v1/",
           "helper stdin for docker.io: the v1 index URL");
    is_str(rgm_auth_helper_server_url("registry-1.docker.io"), "https://index.docker.io/v1/",
           "helper stdin for registry-1.docker.io: the v1 index URL");
    is_str(rgm_auth_helper_server_url("index.docker.io"), "https://index.docker.io/v1/",
           "helper stdin for index.docker.io: the v1 index URL");
    is_str(rgm_auth_helper_server_url("127.0.0.1:5000"), "127.0.0.1:5000",
           "helper stdin for another registry: host:port");
    fd = mkstemp(path);
    ok(fd >= 0, "helper config: temp file");
    if (fd < 0)
        return;
    ok(write(fd, json, strlen(json)) == (ssize_t)strlen(json), "helper config: written");
    close(fd);
    is_int(rgm_auth_docker_config_helper(path, "docker.io", &h), 1, "docker.io: a helper");
    is_str(h, "hub", "docker.io: credHelpers' https://index.docker.io/v1/ key, not docker.io");
    RGM_FREE(h);
    is_int(rgm_auth_docker_config_helper(path, "registry-1.docker.io", &h), 1, "alias: a helper");
    is_str(h, "hub", "registry-1.docker.io: the same key");
    RGM_FREE(h);
    is_int(rgm_auth_docker_config_helper(path, "127.0.0.1:5000", &h), 1, "host:port: a helper");
    is_str(h, "local", "host:port: its exact key");
    RGM_FREE(h);
    is_int(rgm_auth_docker_config_helper(path, "127.0.0.1", &h), 1, "port differs: a helper");
    is_str(h, "store", "port differs: not the host:port key, credsStore");
    RGM_FREE(h);
    is_int(rgm_auth_docker_config_helper(path, "ghcr.io", &h), 1, "empty credHelpers entry");
    is_str(h, "store", "empty credHelpers entry: credsStore");
    RGM_FREE(h);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ok(fd >= 0 && write(fd, "{\"credHelpers\":{\"docker.io\":\"x\"}}", 33) == 33,
       "helper config without credsStore");
    if (fd >= 0)
        close(fd);
    is_int(rgm_auth_docker_config_helper(path, "docker.io", &h), 0,
           "docker.io with only a \"docker.io\" key: no helper (docker's key is the v1 URL)");
    ok(h == NULL, "no helper: NULL");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ok(fd >= 0 && write(fd, "{\"credsStore\":\"../evil\"}", 24) == 24, "credsStore with '/'");
    if (fd >= 0)
        close(fd);
    is_int(rgm_auth_docker_config_helper(path, "docker.io", &h), 0, "a '/' in a name: refused");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ok(fd >= 0 && write(fd, "{bad", 4) == 4, "bad JSON written");
    if (fd >= 0)
        close(fd);
    is_int(rgm_auth_docker_config_helper(path, "docker.io", &h), UV_EINVAL, "bad JSON: UV_EINVAL");
    unlink(path);
    is_int(rgm_auth_docker_config_helper(path, "docker.io", &h), UV_EIO, "no file: UV_EIO");
}

/* ---- TTL cache ---- */

static void test_cache(void)
{
    rgm_auth_cache_t *c = rgm_auth_cache_new(3);
    char key[32];
    int i;
    int misses = 0;

    is_int(rgm_auth_cache_count(c), 0, "new cache empty");
    ok(rgm_auth_cache_get(c, "token|a", 0) == NULL, "miss on empty");
    rgm_auth_cache_put(c, "token|a", "A", 1000);
    is_str(rgm_auth_cache_get(c, "token|a", 999), "A", "hit before expiry");
    ok(rgm_auth_cache_get(c, "token|a", 1000) == NULL, "miss at expiry");
    is_int(rgm_auth_cache_count(c), 0, "expired entry dropped by get");

    rgm_auth_cache_put(c, "k1", "v1", 100);
    rgm_auth_cache_put(c, "k2", "v2", 200);
    rgm_auth_cache_put(c, "k1", "v1b", 300);
    is_int(rgm_auth_cache_count(c), 2, "replace keeps count");
    is_str(rgm_auth_cache_get(c, "k1", 150), "v1b", "replaced value and expiry");
    rgm_auth_cache_put(c, "k3", "v3", 400);
    rgm_auth_cache_put(c, "k4", "v4", 400);
    is_int(rgm_auth_cache_count(c), 3, "bounded at 3");
    ok(rgm_auth_cache_get(c, "k2", 0) == NULL, "oldest written (k2) evicted");
    is_str(rgm_auth_cache_get(c, "k1", 0), "v1b", "rewritten k1 kept");
    is_str(rgm_auth_cache_get(c, "k4", 0), "v4", "newest kept");

    is_int(rgm_auth_cache_prune(c, 350), 1, "prune drops k1 (300)");
    is_int(rgm_auth_cache_count(c), 2, "two left");
    is_int(rgm_auth_cache_del(c, "k3"), 1, "del present");
    is_int(rgm_auth_cache_del(c, "k3"), 0, "del absent");
    is_int(rgm_auth_cache_prune(c, 1000), 1, "prune the rest");
    is_int(rgm_auth_cache_count(c), 0, "empty after prune");
    rgm_auth_cache_free(c);

    c = rgm_auth_cache_new(0);
    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "access|h|r|%d", i);
        rgm_auth_cache_put(c, key, "1", 10000);
    }
    is_int(rgm_auth_cache_count(c), RGM_AUTH_CACHE_DEFAULT_MAX, "default bound 4096");
    for (i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "access|h|r|%d", i);
        if (!rgm_auth_cache_get(c, key, 0))
            misses++;
    }
    is_int(misses, 5000 - RGM_AUTH_CACHE_DEFAULT_MAX, "first 904 evicted, rest present");
    ok(rgm_auth_cache_get(c, "access|h|r|4999", 0) != NULL, "last written present");
    ok(rgm_auth_cache_get(c, "access|h|r|0", 0) == NULL, "first written evicted");
    rgm_auth_cache_free(c);
    rgm_auth_cache_free(NULL);
}

int main(void)
{
    test_challenges();
    test_challenge_fuzz();
    test_tokens();
    test_docker_config();
    test_helpers();
    test_token_form();
    test_config_helper();
    test_cache();
    return tap_done();
}
