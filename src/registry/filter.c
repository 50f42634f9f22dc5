/* Repository filters: deny first, then allow. The message names the registry, the list and
 * the index of the rule, so that an operator can find it in the config. */
#include "registry/filter.h"

#include <uv.h>

#include "core/glob.h"
#include "registry/reference.h"

int rgm_filter_check(const rgm_registry_cfg_t *reg, const char *repo, char *msg, size_t msglen)
{
    size_t i;

    for (i = 0; i < reg->repo_deny_len; i++) {
        if (rgm_glob_match(reg->repo_deny[i], repo)) {
            snprintf(msg, msglen,
                     "repository %.256s is denied by registries.%.256s.repositories.deny[%zu] "
                     "\"%.256s\"",
                     repo, reg->name, i, reg->repo_deny[i]);
            return 1;
        }
    }
    if (reg->repo_allow_len == 0)
        return 0;
    for (i = 0; i < reg->repo_allow_len; i++)
        if (rgm_glob_match(reg->repo_allow[i], repo))
            return 0;
    snprintf(msg, msglen,
             "repository %.256s matches no rule of registries.%.256s.repositories.allow", repo,
             reg->name);
    return 1;
}

/* ---- pin patterns ---- */

static int is_host_part(const char *s, size_t n)
{
    return memchr(s, '.', n) || memchr(s, ':', n) || (n == 9 && strncmp(s, "localhost", 9) == 0);
}

static int glob_normalize(const char *in, char *out, size_t len, char *err, size_t errlen)
{
    const char *slash = strchr(in, '/');
    const char *reg = "docker.io";
    char host[RGM_REF_HOST_MAX + 1];
    const char *rest = in;
    const char *p;
    int n;

    for (p = in; *p; p++) {
        if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && !(*p >= '0' && *p <= '9') &&
            !strchr("._-/:*", *p)) {
            snprintf(err, errlen, "\"%.200s\": '%c' is not allowed in a pattern", in, *p);
            return UV_EINVAL;
        }
    }
    if (slash && is_host_part(in, (size_t)(slash - in)) && (size_t)(slash - in) < sizeof(host)) {
        snprintf(host, sizeof(host), "%.*s", (int)(slash - in), in);
        reg = rgm_ref_normalize_registry(host);
        rest = slash + 1;
    }
    if (!rest[0] || rest[0] == ':') {
        snprintf(err, errlen, "\"%.200s\": no repository", in);
        return UV_EINVAL;
    }
    /* docker.io's single-segment repositories are library/NAME */
    if (strcmp(reg, "docker.io") == 0 && !strchr(rest, '/') && strncmp(rest, "**", 2) != 0)
        n = snprintf(out, len, "%s/library/%s", reg, rest);
    else
        n = snprintf(out, len, "%s/%s", reg, rest);
    if (n < 0 || (size_t)n >= len) {
        snprintf(err, errlen, "\"%.200s\": too long", in);
        return UV_EINVAL;
    }
    return 0;
}

int rgm_filter_pin_normalize(const char *in, char *out, size_t len, char *err, size_t errlen)
{
    rgm_ref_image_t img;
    int n;

    if (rgm_glob_is_pattern(in))
        return glob_normalize(in, out, len, err, errlen);
    if (rgm_ref_parse_image(in, &img, err, errlen) < 0)
        return UV_EINVAL;
    if (img.digest[0])
        n = snprintf(out, len, "%s/%s@%s", img.registry, img.repository, img.digest);
    else
        n = snprintf(out, len, "%s/%s:%s", img.registry, img.repository, img.tag);
    if (n < 0 || (size_t)n >= len) {
        snprintf(err, errlen, "\"%.200s\": too long", in);
        return UV_EINVAL;
    }
    return 0;
}
