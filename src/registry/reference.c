/* OCI/Docker names, tags, digests, image references and /v2 API paths. Hand-written
 * scanners over bytes (no regex, no locale, no allocation); every length is checked before a
 * copy into the fixed-size fields. Knows nothing about which registries are configured. */
#include "registry/reference.h"

#include <uv.h>

#include "core/common.h"
#include "core/util.h"

/* ---- character classes (ASCII, locale-free) ---- */

static int is_lower_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int is_alnum(unsigned char c)
{
    return is_lower_alnum(c) || (c >= 'A' && c <= 'Z');
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_lower_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f');
}

static int ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);

    return len >= n && memcmp(s + len - n, suffix, n) == 0;
}

/* Copy len bytes of s into out (outlen bytes) with a NUL; UV_ENOBUFS when it does not fit. */
static int copy_n(char *out, size_t outlen, const char *s, size_t len)
{
    if (len >= outlen)
        return UV_ENOBUFS;
    memcpy(out, s, len);
    out[len] = '\0';
    return 0;
}

/* ---- grammar ---- */

/* One run of [a-z0-9]+ starting at *i; 0 when there is none. */
static int scan_alnum_run(const char *s, size_t len, size_t *i)
{
    size_t start = *i;

    while (*i < len && is_lower_alnum((unsigned char)s[*i]))
        (*i)++;
    return *i > start;
}

int rgm_ref_valid_name_n(const char *name, size_t len)
{
    size_t i = 0;

    if (!name || len == 0 || len > RGM_REF_NAME_MAX)
        return 0;
    /* Each iteration consumes [a-z0-9]+ and then one separator ('/', '.', '_', '__', '-+')
     * that must be followed by another run. */
    for (;;) {
        if (!scan_alnum_run(name, len, &i))
            return 0;
        if (i == len)
            return 1;
        switch (name[i]) {
        case '/':
        case '.':
            i++;
            break;
        case '_':
            i++;
            if (i < len && name[i] == '_')
                i++;
            break;
        case '-':
            while (i < len && name[i] == '-')
                i++;
            break;
        default:
            return 0;
        }
    }
}

int rgm_ref_valid_name(const char *name)
{
    if (!name)
        return 0;
    return rgm_ref_valid_name_n(name, strnlen(name, RGM_REF_NAME_MAX + 1));
}

int rgm_ref_valid_tag(const char *tag)
{
    size_t i;
    size_t len;

    if (!tag)
        return 0;
    len = strnlen(tag, RGM_REF_TAG_MAX + 1);
    if (len == 0 || len > RGM_REF_TAG_MAX)
        return 0;
    if (!is_alnum((unsigned char)tag[0]) && tag[0] != '_')
        return 0;
    for (i = 1; i < len; i++) {
        unsigned char c = (unsigned char)tag[i];

        if (!is_alnum(c) && c != '_' && c != '.' && c != '-')
            return 0;
    }
    return 1;
}

int rgm_ref_valid_digest(const char *digest)
{
    size_t hex_len;
    size_t i;
    const char *hex;

    if (!digest)
        return 0;
    if (strncmp(digest, "sha256:", 7) == 0)
        hex_len = 64;
    else if (strncmp(digest, "sha512:", 7) == 0)
        hex_len = 128;
    else
        return 0;
    hex = digest + 7;
    for (i = 0; i < hex_len; i++) {
        if (!is_lower_hex((unsigned char)hex[i])) /* also stops at the NUL */
            return 0;
    }
    return hex[hex_len] == '\0';
}

int rgm_ref_valid_host(const char *s)
{
    size_t i = 0;
    size_t len;
    size_t ndig;

    if (!s)
        return 0;
    len = strnlen(s, RGM_REF_HOST_MAX + 1);
    if (len == 0 || len > RGM_REF_HOST_MAX)
        return 0;
    if (s[0] == '[') {
        i = 1;
        while (i < len && (is_alnum((unsigned char)s[i]) || s[i] == ':' || s[i] == '.'))
            i++;
        if (i == 1 || i == len || s[i] != ']')
            return 0;
        i++;
    } else {
        if (!is_alnum((unsigned char)s[0]))
            return 0;
        while (i < len && (is_alnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '-'))
            i++;
    }
    if (i == len)
        return 1;
    if (s[i] != ':')
        return 0;
    i++;
    for (ndig = 0; i < len && is_digit((unsigned char)s[i]); i++)
        ndig++;
    return i == len && ndig >= 1 && ndig <= 5;
}

/* ---- registry prefix ---- */

static int looks_like_host(const char *s, size_t len)
{
    return memchr(s, '.', len) || memchr(s, ':', len) ||
           (len == 9 && memcmp(s, "localhost", 9) == 0);
}

int rgm_ref_split_registry_prefix(const char *name, rgm_ref_is_registry_fn is_registry, void *ud,
                                  char *registry, size_t registry_len, const char **rest)
{
    const char *slash;
    size_t host_len;

    if (registry && registry_len > 0)
        registry[0] = '\0';
    *rest = name;
    if (!name || !is_registry || !registry)
        return 0;
    slash = strchr(name, '/');
    if (!slash || slash[1] == '\0')
        return 0;
    host_len = (size_t)(slash - name);
    if (!looks_like_host(name, host_len) || copy_n(registry, registry_len, name, host_len) < 0)
        return 0;
    if (!rgm_ref_valid_host(registry) || is_registry(ud, registry) != 1) {
        registry[0] = '\0';
        return 0;
    }
    *rest = slash + 1;
    return 1;
}

/* ---- /v2 API paths ---- */

/* Validate and store the name part (len bytes at s), splitting a registry prefix first. */
static int path_set_name(const char *s, size_t len, rgm_ref_is_registry_fn is_registry, void *ud,
                         rgm_ref_path_t *out)
{
    char buf[RGM_REF_HOST_MAX + 1 + RGM_REF_NAME_MAX + 1];
    const char *rest = NULL;

    if (copy_n(buf, sizeof(buf), s, len) < 0)
        return RGM_REF_ENAME;
    (void)rgm_ref_split_registry_prefix(buf, is_registry, ud, out->registry, sizeof(out->registry),
                                        &rest);
    if (!rgm_ref_valid_name(rest))
        return RGM_REF_ENAME;
    if (copy_n(out->name, sizeof(out->name), rest, strlen(rest)) < 0)
        return RGM_REF_ENAME;
    return 0;
}

static int path_set_reference(const char *s, size_t len, rgm_ref_path_t *out)
{
    int is_digest = out->kind == RGM_REF_ROUTE_BLOB || out->kind == RGM_REF_ROUTE_REFERRERS ||
                    memchr(s, ':', len) != NULL;
    int err = is_digest ? RGM_REF_EDIGEST : RGM_REF_ETAG;

    if (copy_n(out->reference, sizeof(out->reference), s, len) < 0)
        return err;
    if (is_digest ? !rgm_ref_valid_digest(out->reference) : !rgm_ref_valid_tag(out->reference))
        return err;
    out->is_digest = is_digest;
    return 0;
}

int rgm_ref_parse_path_ex(const char *path, rgm_ref_is_registry_fn is_registry, void *ud,
                          rgm_ref_path_t *out)
{
    const char *body;
    const char *slash;
    size_t n;
    size_t body_len;
    size_t pre_len;
    int err;

    memset(out, 0, sizeof(*out));
    if (!path)
        return RGM_REF_EROUTE;
    n = strcspn(path, "?");
    if (n < 3 || memcmp(path, "/v2", 3) != 0)
        return RGM_REF_EROUTE;
    if (n == 3 || (n == 4 && path[3] == '/')) {
        out->kind = RGM_REF_ROUTE_ROOT;
        return 0;
    }
    if (path[3] != '/')
        return RGM_REF_EROUTE;
    body = path + 4;
    body_len = n - 4;

    if (ends_with(body, body_len, "/tags/list")) {
        out->kind = RGM_REF_ROUTE_TAGS;
        err = path_set_name(body, body_len - 10, is_registry, ud, out);
        goto out;
    }
    slash = memrchr(body, '/', body_len);
    if (!slash)
        return RGM_REF_EROUTE;
    pre_len = (size_t)(slash - body);
    if (ends_with(body, pre_len, "/manifests")) {
        out->kind = RGM_REF_ROUTE_MANIFEST;
        pre_len -= 10;
    } else if (ends_with(body, pre_len, "/blobs")) {
        out->kind = RGM_REF_ROUTE_BLOB;
        pre_len -= 6;
    } else if (ends_with(body, pre_len, "/referrers")) {
        out->kind = RGM_REF_ROUTE_REFERRERS;
        pre_len -= 10;
    } else {
        return RGM_REF_EROUTE;
    }
    err = path_set_name(body, pre_len, is_registry, ud, out);
    if (err == 0)
        err = path_set_reference(slash + 1, (size_t)(body + body_len - slash - 1), out);

out:
    if (err < 0) {
        out->registry[0] = '\0';
        out->name[0] = '\0';
        out->reference[0] = '\0';
        out->is_digest = 0;
    }
    return err;
}

int rgm_ref_parse_path(const char *path, rgm_ref_path_t *out)
{
    return rgm_ref_parse_path_ex(path, NULL, NULL, out);
}

const char *rgm_ref_err_code(int err)
{
    switch (err) {
    case RGM_REF_ENAME:
        return "NAME_INVALID";
    case RGM_REF_EDIGEST:
        return "DIGEST_INVALID";
    case RGM_REF_ETAG:
        return "MANIFEST_UNKNOWN";
    default:
        return "UNSUPPORTED"; /* no such route: distribution answers a bare 404 */
    }
}

int rgm_ref_err_status(int err)
{
    switch (err) {
    case RGM_REF_ENAME:
    case RGM_REF_EDIGEST:
        return 400;
    default:
        return 404;
    }
}

/* ---- docker.io normalisation ---- */

const char *rgm_ref_normalize_registry(const char *registry)
{
    if (rgm_strcaseeq(registry, "index.docker.io") || rgm_strcaseeq(registry, "docker.io") ||
        rgm_strcaseeq(registry, "registry-1.docker.io"))
        return "docker.io";
    return registry;
}

int rgm_ref_normalize_repo(const char *registry, const char *repo, char *reg_out, size_t reg_len,
                           char *repo_out, size_t repo_len)
{
    const char *reg = rgm_ref_normalize_registry(registry);
    int is_library = strcmp(reg, "docker.io") == 0 && !strchr(repo, '/');
    int n;

    if (copy_n(reg_out, reg_len, reg, strlen(reg)) < 0)
        return UV_ENOBUFS;
    n = snprintf(repo_out, repo_len, "%s%s", is_library ? "library/" : "", repo);
    if (n < 0 || (size_t)n >= repo_len || n > RGM_REF_NAME_MAX) {
        if (repo_len > 0)
            repo_out[0] = '\0';
        return UV_ENOBUFS;
    }
    return 0;
}

/* ---- image references ---- */

static int image_fail(char *err, size_t errlen, const char *what)
{
    if (err && errlen > 0)
        (void)snprintf(err, errlen, "%s", what);
    return UV_EINVAL;
}

static const char *check_tag(const char *tag)
{
    size_t len = strlen(tag);

    if (len == 0)
        return "empty tag";
    if (len > RGM_REF_TAG_MAX)
        return "tag longer than 128 characters";
    if (!rgm_ref_valid_tag(tag)) {
        if (!is_alnum((unsigned char)tag[0]) && tag[0] != '_')
            return "tag must start with a letter, a digit or '_'";
        return "invalid character in tag (allowed: letters, digits, '_', '.', '-')";
    }
    return NULL;
}

static const char *check_digest(const char *digest)
{
    if (digest[0] == '\0')
        return "empty digest";
    if (!rgm_ref_valid_digest(digest)) {
        return "invalid digest (expected sha256: and 64 or sha512: and 128 lowercase hex "
               "digits)";
    }
    return NULL;
}

static const char *check_repository(const char *repo)
{
    size_t len = strlen(repo);
    const char *p;

    if (len == 0)
        return "empty repository name";
    for (p = repo; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            return "uppercase letters in repository name";
    }
    if (repo[0] == '/')
        return "repository name starts with '/'";
    if (repo[len - 1] == '/')
        return "repository name ends with '/'";
    if (strstr(repo, "//"))
        return "empty path component ('//') in repository name";
    if (len > RGM_REF_NAME_MAX)
        return "repository name longer than 255 characters";
    if (!rgm_ref_valid_name(repo))
        return "invalid repository name (components of [a-z0-9] joined by '.', '_', '__' or "
               "'-', separated by '/')";
    return NULL;
}

/* Split buf (modified in place) into registry and repository pointers. */
static const char *split_domain(char *buf, const char **registry, const char **repo)
{
    char *slash = strchr(buf, '/');
    char *p;

    *registry = "docker.io";
    *repo = buf;
    if (!slash || !looks_like_host(buf, (size_t)(slash - buf)))
        return NULL;
    *slash = '\0';
    if (!rgm_ref_valid_host(buf))
        return "invalid registry host";
    for (p = buf; *p != '\0'; p++) {
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
    }
    *registry = rgm_ref_normalize_registry(buf);
    *repo = slash + 1;
    return NULL;
}

int rgm_ref_parse_image(const char *s, rgm_ref_image_t *img, char *err, size_t errlen)
{
    char buf[2048];
    const char *why = NULL;
    const char *registry = NULL;
    const char *repo = NULL;
    char *at;
    char *colon;
    char *last_slash;
    size_t len;

    memset(img, 0, sizeof(*img));
    if (err && errlen > 0)
        err[0] = '\0';
    if (!s || s[0] == '\0')
        return image_fail(err, errlen, "empty image reference");
    len = strlen(s);
    if (copy_n(buf, sizeof(buf), s, len) < 0)
        return image_fail(err, errlen, "image reference too long");

    at = strchr(buf, '@');
    if (at) {
        *at = '\0';
        why = check_digest(at + 1);
        if (why)
            return image_fail(err, errlen, why);
        memcpy(img->digest, at + 1, strlen(at + 1) + 1);
    }
    if (buf[0] == '\0')
        return image_fail(err, errlen, "empty repository name");

    last_slash = strrchr(buf, '/');
    colon = strchr(last_slash ? last_slash : buf, ':');
    if (colon) {
        *colon = '\0';
        why = check_tag(colon + 1);
        if (why)
            return image_fail(err, errlen, why);
        memcpy(img->tag, colon + 1, strlen(colon + 1) + 1);
    }

    why = split_domain(buf, &registry, &repo);
    if (!why)
        why = check_repository(repo);
    if (why)
        return image_fail(err, errlen, why);
    if (rgm_ref_normalize_repo(registry, repo, img->registry, sizeof(img->registry),
                               img->repository, sizeof(img->repository)) < 0)
        return image_fail(err, errlen, "repository name longer than 255 characters");

    if (img->tag[0] == '\0' && img->digest[0] == '\0')
        memcpy(img->tag, "latest", sizeof("latest"));
    return 0;
}

int rgm_ref_image_format(const rgm_ref_image_t *img, char *buf, size_t buflen)
{
    int n;

    n = snprintf(buf, buflen, "%s/%s%s%s%s%s", img->registry, img->repository,
                 img->tag[0] != '\0' ? ":" : "", img->tag, img->digest[0] != '\0' ? "@" : "",
                 img->digest);
    if (n < 0 || (size_t)n >= buflen) {
        if (buflen > 0)
            buf[0] = '\0';
        return UV_ENOBUFS;
    }
    return n;
}
