/* Unit tests for src/cmd/prewarm-auth.c: which challenge a 401 is answered with, the Basic
 * header and token URL built for it, credentials from --creds and --docker-config (looked up
 * once per registry), and the Bearer value of a token answer. */
#include "cmd/prewarm-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "core/util.h"
#include "tap.h"

#define BEARER "Bearer realm=\"https://auth.example/token\",service=\"reg.example\""
#define BASIC  "Basic realm=\"reg\""

static char basic[1024], err[512];
static char *url;

static int answer(struct pw *pw, const char *registry, const char *www)
{
    RGM_FREE(url);
    err[0] = '\0';
    return rgm_prewarm_auth_answer(pw, registry, "library/x", www, basic, sizeof(basic), &url, err,
                                   sizeof(err));
}

static void test_creds(void)
{
    struct opts o;
    struct pw pw;

    memset(&o, 0, sizeof(o));
    memset(&pw, 0, sizeof(pw));
    pw.o = &o;
    o.creds = "user:pa:ss";
    is_int(answer(&pw, "reg.example", BEARER), RGM_PREWARM_AUTH_TOKEN, "Bearer: ask for a token");
    ok(url &&
           strcmp(url, "https://auth.example/token?service=reg.example&scope=repository%3Alibrary%2"
                       "Fx%3Apull") == 0,
       "token URL with service and the pull scope (%s)", url ? url : "(null)");
    is_str(basic, "Basic dXNlcjpwYTpzcw==", "the token request carries the credentials");
    is_int(answer(&pw, "reg.example", BASIC), RGM_PREWARM_AUTH_BASIC, "Basic: send again");
    ok(!url, "no token URL for Basic");
    is_str(basic, "Basic dXNlcjpwYTpzcw==", "the Basic header");
    is_int(answer(&pw, "reg.example", BASIC ", " BEARER), RGM_PREWARM_AUTH_TOKEN,
           "both offered: Bearer wins");
    is_int(answer(&pw, "reg.example", "Bearer realm=\"https://auth.example/t\",scope=\"own\""),
           RGM_PREWARM_AUTH_TOKEN, "a challenge with its own scope");
    is_str(url, "https://auth.example/t?scope=own", "its scope is used");
    is_int(answer(&pw, "reg.example", "Bearer realm=\"ftp://auth.example/t\""), UV_EACCES,
           "a realm that is no http(s) URL");
    is_str(err, "unauthorized (bad token realm)", "its reason");
    ok(!url, "no URL left to free");
    is_int(answer(&pw, "reg.example", NULL), UV_EACCES, "no WWW-Authenticate");
    is_str(err, "unauthorized (no challenge)", "its reason");
    is_int(answer(&pw, "reg.example", "Negotiate abc"), UV_EACCES, "an unknown scheme");
    is_str(err, "unauthorized (unsupported challenge)", "its reason");
    is_int(pw.n_creds, 1, "credentials looked up once per registry");
    rgm_prewarm_auth_free(&pw);

    memset(&o, 0, sizeof(o));
    memset(&pw, 0, sizeof(pw));
    pw.o = &o;
    is_int(answer(&pw, "reg.example", BASIC), UV_EACCES, "Basic without credentials");
    is_str(err, "unauthorized: reg.example wants credentials (--creds or --docker-config)",
           "says how to give them");
    is_int(answer(&pw, "reg.example", BEARER), RGM_PREWARM_AUTH_TOKEN,
           "Bearer without credentials: an anonymous token");
    is_str(basic, "", "no Basic header for the token request");
    rgm_prewarm_auth_free(&pw);
    RGM_FREE(url);
}

static void test_docker_config(void)
{
    static const char json[] = "{\"auths\":{\"reg.example\":{\"auth\":\"ZGM6cHc=\"}}}";
    char path[] = "/tmp/rgm-test-prewarm-auth-XXXXXX";
    struct opts o;
    struct pw pw;
    int fd = mkstemp(path);

    ok(fd >= 0, "temp file");
    if (fd < 0)
        return;
    ok(write(fd, json, sizeof(json) - 1) == (ssize_t)(sizeof(json) - 1), "write config");
    close(fd);
    memset(&o, 0, sizeof(o));
    memset(&pw, 0, sizeof(pw));
    pw.o = &o;
    o.docker_config = path;
    is_int(answer(&pw, "reg.example", BASIC), RGM_PREWARM_AUTH_BASIC, "credentials from the file");
    is_str(basic, "Basic ZGM6cHc=", "dc:pw");
    is_int(answer(&pw, "other.example", BASIC), UV_EACCES, "a registry the file lacks");
    is_int(pw.n_creds, 2, "both lookups remembered");
    unlink(path);
    is_int(answer(&pw, "reg.example", BASIC), RGM_PREWARM_AUTH_BASIC,
           "the file is read once per registry");
    rgm_prewarm_auth_free(&pw);
    ok(pw.creds == NULL && pw.n_creds == 0, "freed");
}

static void test_bearer(void)
{
    static const char ok_body[] = "{\"token\":\"abc\",\"expires_in\":300}";
    char key[RGM_PREWARM_AUTH_KEY_MAX];
    char *value = NULL;
    uint64_t exp = 0, now = rgm_time_ms();

    is_int(rgm_prewarm_auth_bearer(ok_body, sizeof(ok_body) - 1, &value, &exp), 0, "token answer");
    is_str(value, "Bearer abc", "the Authorization value");
    ok(exp >= now + 299 * 1000 && exp <= now + 302 * 1000, "expires in 300 s");
    RGM_FREE(value);
    is_int(rgm_prewarm_auth_bearer("{\"nope\":1}", 10, &value, &exp), UV_EINVAL, "no token");
    ok(value == NULL, "no value");
    is_int(rgm_prewarm_auth_bearer(NULL, 0, &value, &exp), UV_EINVAL, "an empty answer");
    rgm_prewarm_auth_key("reg.example", "a/b", key, sizeof(key));
    is_str(key, "a|reg.example|a/b", "cache key per registry and repository");
}

int main(void)
{
    test_creds();
    test_docker_config();
    test_bearer();
    return tap_done();
}
