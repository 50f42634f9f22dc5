/* Unit tests for core/glob (star within a segment, double star across) and the repository
 * filters and pin normalisation of registry/filter. */
#include "core/glob.h"
#include "registry/filter.h"
#include "tap.h"

static void test_glob(void)
{
    ok(rgm_glob_match("library/nginx", "library/nginx"), "literal");
    ok(!rgm_glob_match("library/nginx", "library/nginx2"), "literal is whole");
    ok(rgm_glob_match("library/*", "library/nginx"), "* one segment");
    ok(!rgm_glob_match("library/*", "library/a/b"), "* not across /");
    ok(!rgm_glob_match("library/*", "library"), "* needs its segment's slash");
    ok(rgm_glob_match("org/**", "org/a"), "** one segment");
    ok(rgm_glob_match("org/**", "org/a/b/c"), "** any depth");
    ok(!rgm_glob_match("org/**", "org"), "** not the parent itself");
    ok(!rgm_glob_match("org/**", "orgx/a"), "** after a literal prefix");
    ok(rgm_glob_match("**/nginx", "a/b/nginx"), "leading **");
    ok(rgm_glob_match("a/*/c", "a/b/c") && !rgm_glob_match("a/*/c", "a/b/x/c"), "inner *");
    ok(rgm_glob_match("pau*", "pause") && rgm_glob_match("*", "") && !rgm_glob_match("", "x"),
       "* inside a segment, empty strings");
    ok(!rgm_glob_match("a*a*a*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
       "many stars, no match (bounded work)");
    ok(rgm_glob_is_pattern("a/*") && !rgm_glob_is_pattern("a/b"), "is_pattern");
}

static void test_filter(void)
{
    char *allow[] = {"library/*", "org/**"};
    char *deny[] = {"library/bad", "org/secret/**"};
    rgm_registry_cfg_t reg;
    char msg[512];

    memset(&reg, 0, sizeof(reg));
    reg.name = "docker.io";
    is_int(rgm_filter_check(&reg, "any/thing/x", msg, sizeof(msg)), 0, "no rules: allowed");
    reg.repo_allow = allow;
    reg.repo_allow_len = 2;
    reg.repo_deny = deny;
    reg.repo_deny_len = 2;
    is_int(rgm_filter_check(&reg, "library/nginx", msg, sizeof(msg)), 0, "allowed by library/*");
    is_int(rgm_filter_check(&reg, "org/a/b", msg, sizeof(msg)), 0, "allowed by org/**");
    is_int(rgm_filter_check(&reg, "library/bad", msg, sizeof(msg)), 1, "deny beats allow");
    ok(strstr(msg, "registries.docker.io.repositories.deny[0]") && strstr(msg, "library/bad"),
       "the message names the rule (%s)", msg);
    is_int(rgm_filter_check(&reg, "org/secret/x/y", msg, sizeof(msg)), 1, "deny with **");
    ok(strstr(msg, "deny[1]") != NULL, "second deny rule named");
    is_int(rgm_filter_check(&reg, "other/x", msg, sizeof(msg)), 1, "outside allow");
    ok(strstr(msg, "repositories.allow") != NULL, "the allow list named (%s)", msg);
    is_int(rgm_filter_check(&reg, "library/a/b", msg, sizeof(msg)), 1, "* is one segment");
}

static void pin_is(const char *in, const char *want)
{
    char out[1024], err[512];
    int rc = rgm_filter_pin_normalize(in, out, sizeof(out), err, sizeof(err));

    if (want)
        is_str(rc == 0 ? out : err, want, "pin %s", in);
    else
        ok(rc < 0, "pin %s refused (%s)", in, rc < 0 ? err : out);
}

static void test_pins(void)
{
    pin_is("nginx:1.27", "docker.io/library/nginx:1.27");
    pin_is("nginx", "docker.io/library/nginx:latest");
    pin_is("index.docker.io/library/nginx:1.27", "docker.io/library/nginx:1.27");
    pin_is("registry.k8s.io/pause:*", "registry.k8s.io/pause:*");
    pin_is("pause:*", "docker.io/library/pause:*");
    pin_is("ghcr.io/org/**", "ghcr.io/org/**");
    pin_is("localhost:5000/a/*", "localhost:5000/a/*");
    pin_is("ghcr.io/a/b@sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03",
           "ghcr.io/a/b@sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03");
    pin_is("Bad Ref", NULL);
    pin_is("ghcr.io/*$x", NULL);
    pin_is("ghcr.io/", NULL);
}

int main(void)
{
    test_glob();
    test_filter();
    test_pins();
    return tap_done();
}
