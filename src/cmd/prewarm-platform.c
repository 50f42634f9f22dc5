/* regmirror prewarm, platforms: "os/arch[/variant]" as --platform names them, this machine's
 * platform as Go (and so containerd) names it, and which entries of an image index match the
 * platforms asked for. It reads index entries as JSON; it knows nothing of requests or of the
 * run's state. */
#include "config.h"

#include "cmd/prewarm-int.h"

#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>

#include <jansson.h>

#include "core/common.h"

/* ---- parsing ---- */

static int is_plat_word(const char *s, size_t len)
{
    size_t i;

    if (len == 0 || len >= 32)
        return 0;
    for (i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

/* Parse "os/arch[/variant]" (len bytes) into p. 0 or UV_EINVAL. */
static int parse_one_platform(const char *s, size_t len, struct platform *p)
{
    const char *parts[3];
    size_t plen[3];
    size_t n = 0, i;
    const char *start = s;

    memset(p, 0, sizeof(*p));
    for (i = 0; i <= len; i++) {
        if (i == len || s[i] == '/') {
            if (n == 3)
                return UV_EINVAL;
            parts[n] = start;
            plen[n] = (size_t)(s + i - start);
            if (!is_plat_word(parts[n], plen[n]))
                return UV_EINVAL;
            n++;
            start = s + i + 1;
        }
    }
    if (n < 2)
        return UV_EINVAL;
    memcpy(p->os, parts[0], plen[0]);
    memcpy(p->arch, parts[1], plen[1]);
    if (n == 3)
        memcpy(p->variant, parts[2], plen[2]);
    return 0;
}

int rgm_prewarm_platforms_parse(struct opts *o, const char *list)
{
    const char *p = list, *comma;
    size_t len;

    for (;;) {
        comma = strchr(p, ',');
        len = comma ? (size_t)(comma - p) : strlen(p);
        if (o->n_platforms == MAX_PLATFORMS)
            return UV_E2BIG;
        if (parse_one_platform(p, len, &o->platforms[o->n_platforms]) < 0)
            return UV_EINVAL;
        o->n_platforms++;
        if (!comma)
            return 0;
        p = comma + 1;
    }
}

void rgm_prewarm_platform_host(struct platform *p)
{
    static const struct {
        const char *machine, *arch, *variant;
    } map[] = {
        {"x86_64", "amd64", ""}, {"amd64", "amd64", ""},     {"aarch64", "arm64", ""},
        {"arm64", "arm64", ""},  {"armv7l", "arm", "v7"},    {"armv6l", "arm", "v6"},
        {"i686", "386", ""},     {"i386", "386", ""},        {"ppc64le", "ppc64le", ""},
        {"s390x", "s390x", ""},  {"riscv64", "riscv64", ""}, {"mips64", "mips64", ""},
    };
    struct utsname u;
    size_t i;

    memset(p, 0, sizeof(*p));
    memcpy(p->os, "linux", 6);
    memcpy(p->arch, "amd64", 6);
    if (uname(&u) != 0)
        return;
    for (i = 0; i < RGM_ARRAY_SIZE(map); i++) {
        if (strcmp(u.machine, map[i].machine) == 0) {
            (void)snprintf(p->arch, sizeof(p->arch), "%s", map[i].arch);
            (void)snprintf(p->variant, sizeof(p->variant), "%s", map[i].variant);
            return;
        }
    }
}

void rgm_prewarm_platform_str(const struct platform *p, char *out, size_t len)
{
    (void)snprintf(out, len, "%s/%s%s%s", p->os, p->arch, p->variant[0] ? "/" : "", p->variant);
}

/* ---- index entries ---- */

int rgm_prewarm_platform_matches(const struct platform *want, json_t *platform)
{
    const char *os = json_string_value(json_object_get(platform, "os"));
    const char *arch = json_string_value(json_object_get(platform, "architecture"));
    const char *variant = json_string_value(json_object_get(platform, "variant"));

    if (!os || !arch || strcmp(os, want->os) != 0 || strcmp(arch, want->arch) != 0)
        return 0;
    if (want->variant[0] == '\0')
        return 1;
    if (!variant)
        variant = "";
    if (strcmp(variant, want->variant) == 0)
        return 1;
    /* arm64 has one variant in practice: "" and "v8" are the same. */
    return strcmp(want->arch, "arm64") == 0 && (strcmp(variant, "v8") == 0 || variant[0] == '\0') &&
           strcmp(want->variant, "v8") == 0;
}

void rgm_prewarm_platform_of(json_t *desc, char *out, size_t len)
{
    json_t *p = json_object_get(desc, "platform");
    const char *os = json_string_value(json_object_get(p, "os"));
    const char *arch = json_string_value(json_object_get(p, "architecture"));
    const char *variant = json_string_value(json_object_get(p, "variant"));

    (void)snprintf(out, len, "%s/%s%s%s", os ? os : "?", arch ? arch : "?",
                   variant && variant[0] ? "/" : "", variant ? variant : "");
}

/* "no manifest for platform P (the index has: A, B, ...)" into why. */
static void explain_missing(const struct platform *want, json_t *list, char *why, size_t why_len)
{
    char plat[100], have[400];
    size_t i;
    json_t *d;

    have[0] = '\0';
    json_array_foreach(list, i, d)
    {
        size_t len = strlen(have);
        rgm_prewarm_platform_of(d, plat, sizeof(plat));
        (void)snprintf(have + len, sizeof(have) - len, "%s%s", len ? ", " : "", plat);
    }
    rgm_prewarm_platform_str(want, plat, sizeof(plat));
    (void)snprintf(why, why_len, "no manifest for platform %s (the index has: %s)", plat, have);
}

int rgm_prewarm_platform_choose(const struct opts *o, json_t *list, json_t **chosen, size_t max,
                                size_t *n_chosen, char *why, size_t why_len)
{
    size_t n = 0, i, j, k;
    json_t *d;

    *n_chosen = 0;
    json_array_foreach(list, i, d)
    {
        int pick = o->is_all_platforms;
        for (k = 0; !pick && k < o->n_platforms; k++)
            pick = rgm_prewarm_platform_matches(&o->platforms[k], json_object_get(d, "platform"));
        for (j = 0; pick && j < n; j++)
            if (json_equal(json_object_get(chosen[j], "digest"), json_object_get(d, "digest")))
                pick = 0;
        if (pick && n < max)
            chosen[n++] = d;
    }
    for (k = 0; !o->is_all_platforms && k < o->n_platforms; k++) {
        int found = 0;
        for (j = 0; j < n && !found; j++)
            found = rgm_prewarm_platform_matches(&o->platforms[k],
                                                 json_object_get(chosen[j], "platform"));
        if (!found) {
            explain_missing(&o->platforms[k], list, why, why_len);
            return UV_ENOENT;
        }
    }
    *n_chosen = n;
    return 0;
}
