/* Unit tests for src/cmd/prewarm-platform.c: the --platform grammar, this machine's platform,
 * matching an index entry (variants, arm64's v8) and choosing the entries of an index. */
#include "cmd/prewarm-int.h"

#include <stdio.h>
#include <string.h>

#include <uv.h>
#include <jansson.h>

#include "tap.h"

static void test_parse(void)
{
    static const char *bad[] = {"linux",
                                "linux/",
                                "/amd64",
                                "linux//amd64",
                                "linux/amd64/v8/x",
                                "Linux/amd64",
                                "linux/amd64,",
                                ",linux/amd64",
                                "linux/amd 64",
                                "",
                                "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"};
    struct opts o;
    char s[100], list[600];
    size_t i;

    memset(&o, 0, sizeof(o));
    is_int(rgm_prewarm_platforms_parse(&o, "linux/amd64"), 0, "os/arch");
    is_int(o.n_platforms, 1, "one platform");
    is_str(o.platforms[0].os, "linux", "os");
    is_str(o.platforms[0].arch, "amd64", "arch");
    is_str(o.platforms[0].variant, "", "no variant");
    is_int(rgm_prewarm_platforms_parse(&o, "linux/arm/v7,windows/amd64"), 0, "a list");
    is_int(o.n_platforms, 3, "appended to the ones before");
    is_str(o.platforms[1].variant, "v7", "variant");
    is_str(o.platforms[2].os, "windows", "second of the list");
    rgm_prewarm_platform_str(&o.platforms[1], s, sizeof(s));
    is_str(s, "linux/arm/v7", "str with variant");
    rgm_prewarm_platform_str(&o.platforms[0], s, sizeof(s));
    is_str(s, "linux/amd64", "str without variant");
    memset(&o, 0, sizeof(o));
    is_int(rgm_prewarm_platforms_parse(&o, "a-b_c.1/x"), 0, "[a-z0-9_.-] words");
    is_int(rgm_prewarm_platforms_parse(&o, "linux/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"), 0,
           "a 31-character word");
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++) {
        memset(&o, 0, sizeof(o));
        is_int(rgm_prewarm_platforms_parse(&o, bad[i]), UV_EINVAL, "'%s' refused", bad[i]);
    }

    memset(&o, 0, sizeof(o));
    list[0] = '\0';
    for (i = 0; i < MAX_PLATFORMS; i++) {
        size_t len = strlen(list);
        (void)snprintf(list + len, sizeof(list) - len, "%slinux/a%zu", i ? "," : "", i);
    }
    is_int(rgm_prewarm_platforms_parse(&o, list), 0, "MAX_PLATFORMS platforms");
    is_int(rgm_prewarm_platforms_parse(&o, "linux/one"), UV_E2BIG, "one more: UV_E2BIG");

    rgm_prewarm_platform_host(&o.platforms[0]);
    is_str(o.platforms[0].os, "linux", "this machine: linux");
    ok(o.platforms[0].arch[0] != '\0', "this machine has an arch (%s)", o.platforms[0].arch);
}

static struct platform plat(const char *os, const char *arch, const char *variant)
{
    struct platform p;

    memset(&p, 0, sizeof(p));
    (void)snprintf(p.os, sizeof(p.os), "%s", os);
    (void)snprintf(p.arch, sizeof(p.arch), "%s", arch);
    (void)snprintf(p.variant, sizeof(p.variant), "%s", variant);
    return p;
}

/* Match want against {"os": os, "architecture": arch[, "variant": variant]}. */
static int match(const struct platform *want, const char *os, const char *arch, const char *variant)
{
    json_t *p = json_object();
    int r;

    if (os)
        json_object_set_new(p, "os", json_string(os));
    if (arch)
        json_object_set_new(p, "architecture", json_string(arch));
    if (variant)
        json_object_set_new(p, "variant", json_string(variant));
    r = rgm_prewarm_platform_matches(want, p);
    json_decref(p);
    return r;
}

static void test_matches(void)
{
    struct platform amd64 = plat("linux", "amd64", ""), armv7 = plat("linux", "arm", "v7");
    struct platform arm64 = plat("linux", "arm64", ""), arm64v8 = plat("linux", "arm64", "v8");
    struct platform arm64v9 = plat("linux", "arm64", "v9");

    is_int(match(&amd64, "linux", "amd64", NULL), 1, "same os and arch");
    is_int(match(&amd64, "linux", "amd64", "v3"), 1, "no variant wanted: any variant");
    is_int(match(&amd64, "windows", "amd64", NULL), 0, "other os");
    is_int(match(&amd64, "linux", "arm64", NULL), 0, "other arch");
    is_int(match(&amd64, NULL, "amd64", NULL), 0, "no os");
    is_int(match(&amd64, "linux", NULL, NULL), 0, "no arch");
    is_int(rgm_prewarm_platform_matches(&amd64, NULL), 0, "no platform object");
    is_int(match(&armv7, "linux", "arm", "v7"), 1, "same variant");
    is_int(match(&armv7, "linux", "arm", "v6"), 0, "other variant");
    is_int(match(&armv7, "linux", "arm", NULL), 0, "variant wanted, none given");
    is_int(match(&arm64v8, "linux", "arm64", NULL), 1, "arm64: v8 wanted, none given");
    is_int(match(&arm64v8, "linux", "arm64", ""), 1, "arm64: v8 wanted, \"\" given");
    is_int(match(&arm64v8, "linux", "arm64", "v8"), 1, "arm64: v8");
    is_int(match(&arm64, "linux", "arm64", "v8"), 1, "arm64 without variant takes v8");
    is_int(match(&arm64v9, "linux", "arm64", NULL), 0, "arm64: only v8 is the default");
    is_int(match(&arm64v8, "linux", "arm64", "v9"), 0, "arm64: v8 is not v9");
}

static json_t *entry(const char *digest, const char *os, const char *arch, const char *variant)
{
    json_t *p = json_object(), *d = json_object();

    if (os)
        json_object_set_new(p, "os", json_string(os));
    if (arch)
        json_object_set_new(p, "architecture", json_string(arch));
    if (variant)
        json_object_set_new(p, "variant", json_string(variant));
    json_object_set_new(d, "digest", json_string(digest));
    json_object_set_new(d, "size", json_integer(100));
    json_object_set_new(d, "platform", p);
    return d;
}

static void test_choose(void)
{
    json_t *list = json_array(), *chosen[8];
    struct opts o;
    size_t n = 99;
    char why[600], s[100];

    json_array_append_new(list, entry("sha256:1", "linux", "amd64", NULL));
    json_array_append_new(list, entry("sha256:2", "linux", "arm64", "v8"));
    json_array_append_new(list, entry("sha256:3", "linux", "arm", "v7"));
    json_array_append_new(list, entry("sha256:1", "linux", "amd64", NULL));
    json_array_append_new(list, entry("sha256:4", "unknown", "unknown", NULL));
    json_array_append_new(list, entry("sha256:5", NULL, NULL, NULL));

    rgm_prewarm_platform_of(json_array_get(list, 2), s, sizeof(s));
    is_str(s, "linux/arm/v7", "platform of an entry");
    rgm_prewarm_platform_of(json_array_get(list, 5), s, sizeof(s));
    is_str(s, "?/?", "platform of an entry without one");

    memset(&o, 0, sizeof(o));
    is_int(rgm_prewarm_platforms_parse(&o, "linux/amd64"), 0, "want linux/amd64");
    is_int(
        rgm_prewarm_platform_choose(&o, list, chosen, RGM_ARRAY_SIZE(chosen), &n, why, sizeof(why)),
        0, "chosen");
    is_int(n, 1, "one entry: the same digest twice counts once");
    ok(n == 1 && chosen[0] == json_array_get(list, 0), "the first of them");

    is_int(rgm_prewarm_platforms_parse(&o, "linux/arm64"), 0, "and linux/arm64");
    is_int(
        rgm_prewarm_platform_choose(&o, list, chosen, RGM_ARRAY_SIZE(chosen), &n, why, sizeof(why)),
        0, "chosen");
    is_int(n, 2, "two entries");
    ok(n == 2 && chosen[1] == json_array_get(list, 1), "in list order");

    is_int(rgm_prewarm_platforms_parse(&o, "linux/s390x"), 0, "and linux/s390x");
    is_int(
        rgm_prewarm_platform_choose(&o, list, chosen, RGM_ARRAY_SIZE(chosen), &n, why, sizeof(why)),
        UV_ENOENT, "a wanted platform the index lacks");
    is_int(n, 0, "nothing chosen");
    is_str(why,
           "no manifest for platform linux/s390x (the index has: linux/amd64, linux/arm64/v8, "
           "linux/arm/v7, linux/amd64, unknown/unknown, ?/?)",
           "the reason lists what the index has");

    memset(&o, 0, sizeof(o));
    o.is_all_platforms = 1;
    is_int(
        rgm_prewarm_platform_choose(&o, list, chosen, RGM_ARRAY_SIZE(chosen), &n, why, sizeof(why)),
        0, "--all-platforms");
    is_int(n, 5, "every distinct digest");
    is_int(rgm_prewarm_platform_choose(&o, list, chosen, 2, &n, why, sizeof(why)), 0,
           "--all-platforms, room for two");
    is_int(n, 2, "at most max");
    json_decref(list);

    list = json_array();
    memset(&o, 0, sizeof(o));
    is_int(rgm_prewarm_platforms_parse(&o, "linux/amd64"), 0, "want linux/amd64");
    is_int(
        rgm_prewarm_platform_choose(&o, list, chosen, RGM_ARRAY_SIZE(chosen), &n, why, sizeof(why)),
        UV_ENOENT, "an empty index");
    is_str(why, "no manifest for platform linux/amd64 (the index has: )", "empty index reason");
    json_decref(list);
}

int main(void)
{
    test_parse();
    test_matches();
    test_choose();
    return tap_done();
}
