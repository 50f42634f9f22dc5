/* The proxy settings from the environment: parsing a proxy URL (userinfo into a ready
 * Proxy-Authorization value), the no_proxy list, the choice per origin. No sockets: the pool
 * connects, and nothing here logs a credential. */
#include "http/proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/socket.h>

#include <uv.h>

#include "core/cidr.h"
#include "core/log.h"
#include "core/util.h"

#define USERINFO_MAX 1024

/* ---- parsing a proxy URL ---- */

/* Percent-decode len bytes of s into out (outlen bytes, NUL-terminated). 0 or UV_EINVAL. */
static int pct_decode(const char *s, size_t len, char *out, size_t outlen)
{
    size_t i, n = 0;

    for (i = 0; i < len; i++) {
        char c = s[i];

        if (c == '%') {
            char hex[3];

            if (i + 2 >= len || !isxdigit((unsigned char)s[i + 1]) ||
                !isxdigit((unsigned char)s[i + 2]))
                return UV_EINVAL;
            hex[0] = s[i + 1];
            hex[1] = s[i + 2];
            hex[2] = '\0';
            c = (char)strtoul(hex, NULL, 16);
            i += 2;
        }
        if (c == '\0' || n + 1 >= outlen)
            return UV_EINVAL;
        out[n++] = c;
    }
    out[n] = '\0';
    return 0;
}

/* "Basic base64(userinfo decoded)" into p->auth. 0 or UV_EINVAL. */
static int set_auth(rgm_proxy_t *p, const char *ui, size_t len)
{
    char plain[USERINFO_MAX];
    char b64[USERINFO_MAX * 4 / 3 + 8];
    size_t plen;
    int n;

    if (pct_decode(ui, len, plain, sizeof(plain)) < 0)
        return UV_EINVAL;
    plen = strlen(plain);
    if (!memchr(plain, ':', plen)) {
        if (plen + 2 > sizeof(plain))
            return UV_EINVAL;
        plain[plen++] = ':'; /* a user without a password: an empty one, as curl sends */
        plain[plen] = '\0';
    }
    n = rgm_b64_encode(plain, plen, b64, sizeof(b64));
    explicit_bzero(plain, sizeof(plain));
    if (n < 0)
        return UV_EINVAL;
    p->auth = rgm_malloc((size_t)n + 7);
    memcpy(p->auth, "Basic ", 6);
    memcpy(p->auth + 6, b64, (size_t)n + 1);
    explicit_bzero(b64, sizeof(b64));
    return 0;
}

/* host[:port] of len bytes, IPv6 in brackets, into p. 0 or UV_EINVAL. */
static int set_hostport(rgm_proxy_t *p, const char *s, size_t len)
{
    const char *end = s + len;
    const char *h = s, *he, *colon;
    char port[8];
    char *pe = NULL;
    unsigned long v;

    if (len > 0 && s[0] == '[') {
        h = s + 1;
        he = memchr(h, ']', len - 1);
        if (!he)
            return UV_EINVAL;
        colon = he + 1 < end ? he + 1 : NULL;
        if (colon && *colon != ':')
            return UV_EINVAL;
    } else {
        colon = memchr(s, ':', len);
        he = colon ? colon : end;
    }
    if (he == h || (size_t)(he - h) >= sizeof(p->host))
        return UV_EINVAL;
    memcpy(p->host, h, (size_t)(he - h));
    p->host[he - h] = '\0';
    p->port = 1080;
    if (!colon)
        return 0;
    if ((size_t)(end - colon - 1) == 0 || (size_t)(end - colon - 1) >= sizeof(port))
        return UV_EINVAL;
    memcpy(port, colon + 1, (size_t)(end - colon - 1));
    port[end - colon - 1] = '\0';
    if (port[0] < '0' || port[0] > '9')
        return UV_EINVAL;
    v = strtoul(port, &pe, 10);
    if (*pe != '\0' || v == 0 || v > 65535)
        return UV_EINVAL;
    p->port = (int)v;
    return 0;
}

int rgm_proxy_parse(const char *url, rgm_proxy_t *out)
{
    const char *s = url, *sep, *at, *end;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!url)
        return UV_EINVAL;
    sep = strstr(s, "://");
    if (sep) {
        if (!(sep - s == 4 && strncasecmp(s, "http", 4) == 0))
            return UV_ENOTSUP;
        s = sep + 3;
    }
    end = s + strcspn(s, "/?#");
    /* Nothing after host:port but a lone "/" ("http://proxy:3128/" is common). */
    if (*end != '\0' && !(end[0] == '/' && end[1] == '\0'))
        return UV_EINVAL;
    at = NULL;
    for (sep = s; sep < end; sep++) {
        if (*sep == '@')
            at = sep; /* the last one: a password may hold an unescaped '@' */
    }
    if (at) {
        rc = set_auth(out, s, (size_t)(at - s));
        if (rc < 0)
            goto fail;
        s = at + 1;
    }
    rc = set_hostport(out, s, (size_t)(end - s));
    if (rc < 0)
        goto fail;
    out->is_valid = 1;
    return 0;
fail:
    rgm_proxy_clear(out);
    return rc;
}

void rgm_proxy_clear(rgm_proxy_t *p)
{
    if (p->auth)
        explicit_bzero(p->auth, strlen(p->auth));
    RGM_FREE(p->auth);
}

/* ---- no_proxy ---- */

/* An IP literal host against one entry: an address or prefix, IPv6 maybe in brackets. */
static int ip_entry_match(const struct sockaddr *sa, const char *ent, size_t len)
{
    char tmp[64];
    rgm_cidr_t c;

    if (len >= 2 && ent[0] == '[') {
        const char *rb = memchr(ent, ']', len);

        if (!rb)
            return 0;
        /* "[::1]" or "[fd00::]/8" */
        if ((size_t)(rb - ent - 1) + (size_t)(ent + len - rb - 1) >= sizeof(tmp))
            return 0;
        memcpy(tmp, ent + 1, (size_t)(rb - ent - 1));
        memcpy(tmp + (rb - ent - 1), rb + 1, (size_t)(ent + len - rb - 1));
        tmp[(rb - ent - 1) + (ent + len - rb - 1)] = '\0';
    } else {
        if (len >= sizeof(tmp))
            return 0;
        memcpy(tmp, ent, len);
        tmp[len] = '\0';
    }
    if (rgm_cidr_parse(tmp, &c) < 0)
        return 0;
    return rgm_cidr_match(&c, 1, sa);
}

static int name_entry_match(const char *host, size_t hlen, const char *ent, size_t len)
{
    char a[256], b[256];

    while (len > 0 && ent[0] == '.') {
        ent++;
        len--;
    }
    while (len > 0 && ent[len - 1] == '.')
        len--;
    if (len == 0 || len > hlen || len >= sizeof(b) || hlen >= sizeof(a))
        return 0;
    memcpy(a, host + hlen - len, len);
    a[len] = '\0';
    memcpy(b, ent, len);
    b[len] = '\0';
    if (!rgm_strcaseeq(a, b))
        return 0;
    return len == hlen || host[hlen - len - 1] == '.';
}

int rgm_proxy_bypass(const char *no_proxy, const char *host)
{
    struct sockaddr_storage ss;
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    const char *p = no_proxy;
    size_t hlen;
    int is_ip = 0;

    if (!no_proxy || !host)
        return 0;
    memset(&ss, 0, sizeof(ss));
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        is_ip = 1;
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        is_ip = 1;
    }
    hlen = strlen(host);
    while (hlen > 0 && host[hlen - 1] == '.')
        hlen--;
    while (*p) {
        size_t len;

        p += strspn(p, ", \t");
        len = strcspn(p, ", \t");
        if (len == 0)
            break;
        if (len == 1 && p[0] == '*')
            return 1;
        if (is_ip ? ip_entry_match((const struct sockaddr *)&ss, p, len)
                  : name_entry_match(host, hlen, p, len))
            return 1;
        p += len;
    }
    return 0;
}

/* ---- the environment ---- */

/* The first of names that is set and not empty, or NULL. */
static const char *env_first(const char *lower, const char *upper)
{
    const char *v = getenv(lower);

    if (v && *v)
        return v;
    v = getenv(upper);
    return v && *v ? v : NULL;
}

/* The proxy named by the variable, or NULL when it is not set. */
static rgm_proxy_t *load_one(const char *lower, const char *upper, int *is_bad)
{
    const char *v = env_first(lower, upper);
    rgm_proxy_t *p;
    int rc;

    if (!v)
        return NULL;
    p = rgm_calloc(1, sizeof(*p));
    rc = rgm_proxy_parse(v, p);
    if (rc < 0) {
        /* The value may hold a password: name the variable, not the value. */
        rgm_log(RGM_LOG_ERROR, "client", "%s: %s; requests through it fail",
                getenv(lower) && *getenv(lower) ? lower : upper,
                rc == UV_ENOTSUP ? "only http:// proxies are supported" : "not a proxy URL");
        *is_bad = 1;
    }
    return p;
}

int rgm_proxy_env_load(rgm_proxy_env_t *e)
{
    const char *np;
    int is_bad = 0;

    memset(e, 0, sizeof(*e));
    e->https = load_one("https_proxy", "HTTPS_PROXY", &is_bad);
    e->http = load_one("http_proxy", "HTTP_PROXY", &is_bad);
    np = env_first("no_proxy", "NO_PROXY");
    e->no_proxy = np ? rgm_strdup(np) : NULL;
    return is_bad ? UV_EINVAL : 0;
}

void rgm_proxy_env_free(rgm_proxy_env_t *e)
{
    if (e->https)
        rgm_proxy_clear(e->https);
    if (e->http)
        rgm_proxy_clear(e->http);
    RGM_FREE(e->https);
    RGM_FREE(e->http);
    RGM_FREE(e->no_proxy);
}

const rgm_proxy_t *rgm_proxy_for(const rgm_proxy_env_t *e, int is_https, const char *host)
{
    const rgm_proxy_t *p = is_https ? e->https : e->http;

    if (!p || rgm_proxy_bypass(e->no_proxy, host))
        return NULL;
    return p;
}
