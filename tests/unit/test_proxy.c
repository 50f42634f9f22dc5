/* Unit tests for src/http/proxy.c: proxy URLs (good and bad), the no_proxy list with curl's
 * rules, the choice per origin from the environment. */
#include "http/proxy.h"

#include <stdlib.h>

#include <uv.h>

#include "tap.h"

static void test_parse(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *host;
        int port;
        const char *auth;
    } t[] = {
        {"http://proxy.corp:3128", 0, "proxy.corp", 3128, NULL},
        {"http://proxy.corp:3128/", 0, "proxy.corp", 3128, NULL},
        {"HTTP://proxy.corp", 0, "proxy.corp", 1080, NULL},
        {"proxy.corp:8080", 0, "proxy.corp", 8080, NULL},
        {"http://[::1]:3128", 0, "::1", 3128, NULL},
        {"http://u:p@10.0.0.1:3128", 0, "10.0.0.1", 3128, "Basic dTpw"},
        {"http://u%40x:p%3A@h:1", 0, "h", 1, "Basic dUB4OnA6"},
        {"http://u@h:1", 0, "h", 1, "Basic dTo="},
        {"http://u:p@ss@h:1", 0, "h", 1, "Basic dTpwQHNz"},
        {"https://proxy:443", UV_ENOTSUP, NULL, 0, NULL},
        {"socks5://proxy:1080", UV_ENOTSUP, NULL, 0, NULL},
        {"http://", UV_EINVAL, NULL, 0, NULL},
        {"http://:3128", UV_EINVAL, NULL, 0, NULL},
        {"http://h:0", UV_EINVAL, NULL, 0, NULL},
        {"http://h:65536", UV_EINVAL, NULL, 0, NULL},
        {"http://h:12x", UV_EINVAL, NULL, 0, NULL},
        {"http://h:", UV_EINVAL, NULL, 0, NULL},
        {"http://h:+1", UV_EINVAL, NULL, 0, NULL},
        {"http://h/path", UV_EINVAL, NULL, 0, NULL},
        {"http://[::1", UV_EINVAL, NULL, 0, NULL},
        {"http://[::1]x", UV_EINVAL, NULL, 0, NULL},
        {"http://u%4:p@h", UV_EINVAL, NULL, 0, NULL},
        {"http://u%00:p@h", UV_EINVAL, NULL, 0, NULL},
        {"", UV_EINVAL, NULL, 0, NULL},
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        rgm_proxy_t p;
        int rc = rgm_proxy_parse(t[i].in, &p);

        is_int(rc, t[i].rc, "parse %s", t[i].in);
        if (rc == 0 && t[i].rc == 0) {
            is_str(p.host, t[i].host, "  host");
            is_int(p.port, t[i].port, "  port");
            if (t[i].auth)
                is_str(p.auth, t[i].auth, "  auth");
            else
                ok(p.auth == NULL, "  no auth");
            ok(p.is_valid == 1, "  valid");
        }
        rgm_proxy_clear(&p);
    }
}

static void test_bypass(void)
{
    static const struct {
        const char *list;
        const char *host;
        int want;
    } t[] = {
        {"*", "anything.example", 1},
        {"*", "10.0.0.1", 1},
        {"a.com,*", "b.com", 1},
        {"example.com", "example.com", 1},
        {"example.com", "EXAMPLE.com", 1},
        {"example.com", "a.example.com", 1},
        {"example.com", "badexample.com", 0},
        {".example.com", "example.com", 1},
        {".example.com", "a.b.example.com", 1},
        {"example.com.", "a.example.com", 1},
        {"example.com", "example.com.", 1},
        {"example.com", "example.org", 0},
        {"a.com, b.com", "b.com", 1},
        {"a.com\tb.com", "b.com", 1},
        {" , ,", "b.com", 0},
        {"", "b.com", 0},
        {NULL, "b.com", 0},
        {"10.0.0.0/8", "10.1.2.3", 1},
        {"10.0.0.0/8", "11.1.2.3", 0},
        {"10.0.0.0/8", "ten.example", 0},
        {"127.0.0.1", "127.0.0.1", 1},
        {"127.0.0.1", "localhost", 0},
        {"localhost", "127.0.0.1", 0},
        {"::1", "::1", 1},
        {"[::1]", "::1", 1},
        {"[fd00::]/8", "fd12::1", 1},
        {"fd00::/8", "fe80::1", 0},
        {"10.0.0.0/33", "10.0.0.1", 0},
        {"*.example.com", "a.example.com", 0}, /* curl: no globs besides a lone "*" */
    };
    size_t i;

    for (i = 0; i < sizeof(t) / sizeof(t[0]); i++)
        is_int(rgm_proxy_bypass(t[i].list, t[i].host), t[i].want, "no_proxy \"%s\" for %s",
               t[i].list ? t[i].list : "(null)", t[i].host);
}

static void test_env(void)
{
    rgm_proxy_env_t e;
    const rgm_proxy_t *p;

    unsetenv("https_proxy");
    unsetenv("http_proxy");
    unsetenv("no_proxy");
    setenv("HTTPS_PROXY", "http://upper:3128", 1);
    setenv("https_proxy", "http://lower:3128", 1);
    setenv("HTTP_PROXY", "http://plain:80", 1);
    setenv("NO_PROXY", "internal.test", 1);
    is_int(rgm_proxy_env_load(&e), 0, "env: loads");
    p = rgm_proxy_for(&e, 1, "registry-1.docker.io");
    ok(p && strcmp(p->host, "lower") == 0, "env: https_proxy wins over HTTPS_PROXY");
    p = rgm_proxy_for(&e, 0, "registry-1.docker.io");
    ok(p && strcmp(p->host, "plain") == 0 && p->port == 80, "env: HTTP_PROXY for http");
    ok(rgm_proxy_for(&e, 1, "r.internal.test") == NULL, "env: NO_PROXY goes direct");
    rgm_proxy_env_free(&e);

    setenv("https_proxy", "", 1); /* empty: the upper-case one */
    setenv("HTTP_PROXY", "socks5://s:1", 1);
    is_int(rgm_proxy_env_load(&e), UV_EINVAL, "env: an unusable value is reported");
    p = rgm_proxy_for(&e, 1, "x.test");
    ok(p && strcmp(p->host, "upper") == 0, "env: an empty lower-case value is unset");
    p = rgm_proxy_for(&e, 0, "x.test");
    ok(p && !p->is_valid, "env: the unusable proxy is kept, invalid (no direct fallback)");
    rgm_proxy_env_free(&e);

    unsetenv("https_proxy");
    unsetenv("HTTPS_PROXY");
    unsetenv("HTTP_PROXY");
    unsetenv("NO_PROXY");
    is_int(rgm_proxy_env_load(&e), 0, "env: nothing set");
    ok(rgm_proxy_for(&e, 1, "x.test") == NULL && rgm_proxy_for(&e, 0, "x.test") == NULL,
       "env: nothing set goes direct");
    rgm_proxy_env_free(&e);
}

int main(void)
{
    test_parse();
    test_bypass();
    test_env();
    return tap_done();
}
