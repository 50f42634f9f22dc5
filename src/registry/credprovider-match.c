/* The kubelet's keyring URL rules for matchImages and auth keys: a glob is split as a
 * schemeless URL; ports must be equal, hosts have as many labels, each matched as Go's
 * filepath.Match matches it, and the glob's path is a prefix of the image's. Pure string work:
 * it knows nothing of the config, the plugins or their responses. Read from the kubelet's
 * pkg/credentialprovider documentation and behaviour. */
#include "registry/credprovider-int.h"

#include <string.h>

/* ---- globs: Go's filepath.Match on one host label ---- */

/* Match one character class at p (just after '['); *end gets the byte after ']'.
 * 1 match, 0 no match, -1 malformed. */
static int match_class(const char *p, char c, const char **end)
{
    int negate = 0;
    int matched = 0;
    int n = 0;
    char lo;
    char hi;

    if (*p == '^') {
        negate = 1;
        p++;
    }
    for (;;) {
        if (*p == ']' && n > 0)
            break;
        if (*p == '\0' || *p == '-' || *p == ']')
            return -1;
        if (*p == '\\')
            p++;
        if (*p == '\0')
            return -1;
        lo = *p++;
        hi = lo;
        if (*p == '-') {
            p++;
            if (*p == '\\')
                p++;
            if (*p == '\0' || *p == ']')
                return -1;
            hi = *p++;
        }
        if (lo <= c && c <= hi)
            matched = 1;
        n++;
    }
    *end = p + 1;
    return matched != negate;
}

/* Does pattern p (len plen) match the whole of s (len slen)? 1, 0, or -1 when malformed. */
static int match_label(const char *p, size_t plen, const char *s, size_t slen)
{
    char pat[256];
    char str[256];
    const char *pp;
    const char *star_p = NULL;
    const char *star_s = NULL;
    const char *sp;
    const char *end;
    int r;

    if (plen >= sizeof(pat) || slen >= sizeof(str))
        return 0;
    memcpy(pat, p, plen);
    pat[plen] = '\0';
    memcpy(str, s, slen);
    str[slen] = '\0';
    pp = pat;
    sp = str;
    /* Greedy with one backtrack point: '*' never matches '/', and labels have none. */
    for (;;) {
        if (*pp == '*') {
            while (*pp == '*')
                pp++;
            star_p = pp;
            star_s = sp;
            continue;
        }
        if (*sp == '\0') {
            if (*pp == '\0')
                return 1;
            goto backtrack;
        }
        if (*pp == '?') {
            pp++;
            sp++;
            continue;
        }
        if (*pp == '[') {
            r = match_class(pp + 1, *sp, &end);
            if (r < 0)
                return -1;
            if (r == 1) {
                pp = end;
                sp++;
                continue;
            }
            goto backtrack;
        }
        if (*pp == '\\') {
            pp++;
            if (*pp == '\0')
                return -1;
        }
        if (*pp != '\0' && *pp == *sp) {
            pp++;
            sp++;
            continue;
        }
backtrack:
        if (!star_p || *star_s == '\0')
            return 0;
        star_s++;
        pp = star_p;
        sp = star_s;
    }
}

/* Syntax check of one label pattern, as Go reports ErrBadPattern. */
static int label_ok(const char *p, size_t len)
{
    char pat[256];
    const char *q;
    const char *end;

    if (len >= sizeof(pat))
        return 0;
    memcpy(pat, p, len);
    pat[len] = '\0';
    for (q = pat; *q;) {
        if (*q == '[') {
            if (match_class(q + 1, 'a', &end) < 0)
                return 0;
            q = end;
        } else if (*q == '\\') {
            if (q[1] == '\0')
                return 0;
            q += 2;
        } else {
            q++;
        }
    }
    return 1;
}

/* Split a schemeless URL as Go's url.Parse("https://" + s) and net.SplitHostPort do:
 * host up to the first '/', '?' or '#'; the port after the last ':' when the host splits
 * cleanly (else no port); the path from the '/'. */
struct surl {
    const char *host;
    size_t host_len;
    const char *port;
    size_t port_len;
    const char *path;
};

static void split_url(const char *s, struct surl *u)
{
    size_t n = strcspn(s, "/?#");
    const char *colon;
    const char *c;
    int colons = 0;

    u->host = s;
    u->host_len = n;
    u->port = "";
    u->port_len = 0;
    u->path = s[n] == '/' ? s + n : "";
    if (n > 0 && s[0] == '[') {
        c = memchr(s, ']', n);
        if (c && c + 1 < s + n && c[1] == ':') {
            u->host = s + 1;
            u->host_len = (size_t)(c - s - 1);
            u->port = c + 2;
            u->port_len = (size_t)(s + n - c - 2);
        }
        return;
    }
    colon = NULL;
    for (c = s; c < s + n; c++) {
        if (*c == ':') {
            colons++;
            colon = c;
        }
    }
    if (colons == 1) {
        u->host_len = (size_t)(colon - s);
        u->port = colon + 1;
        u->port_len = (size_t)(s + n - colon - 1);
    }
}

static size_t count_labels(const char *h, size_t len)
{
    size_t n = 1;
    size_t i;

    for (i = 0; i < len; i++)
        if (h[i] == '.')
            n++;
    return n;
}

int rgm_credprovider_match(const char *glob, const char *image)
{
    struct surl g;
    struct surl t;
    const char *gp;
    const char *tp;
    const char *gdot;
    const char *tdot;
    size_t glen;
    size_t tlen;

    split_url(glob, &g);
    split_url(image, &t);
    if (g.port_len != t.port_len || memcmp(g.port, t.port, g.port_len) != 0)
        return 0;
    if (count_labels(g.host, g.host_len) != count_labels(t.host, t.host_len))
        return 0;
    if (strncmp(t.path, g.path, strlen(g.path)) != 0)
        return 0;
    gp = g.host;
    tp = t.host;
    for (;;) {
        gdot = memchr(gp, '.', (size_t)(g.host + g.host_len - gp));
        tdot = memchr(tp, '.', (size_t)(t.host + t.host_len - tp));
        glen = gdot ? (size_t)(gdot - gp) : (size_t)(g.host + g.host_len - gp);
        tlen = tdot ? (size_t)(tdot - tp) : (size_t)(t.host + t.host_len - tp);
        if (match_label(gp, glen, tp, tlen) != 1)
            return 0;
        if (!gdot || !tdot)
            return 1;
        gp = gdot + 1;
        tp = tdot + 1;
    }
}

int rgm_credprovider_valid_glob(const char *glob)
{
    struct surl g;
    const char *p;
    const char *dot;
    size_t len;

    if (!glob[0] || strlen(glob) >= IMAGE_MAX)
        return 0;
    for (p = glob; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return 0;
    split_url(glob, &g);
    if (g.host_len == 0)
        return 0;
    for (p = g.host;; p = dot + 1) {
        dot = memchr(p, '.', (size_t)(g.host + g.host_len - p));
        len = dot ? (size_t)(dot - p) : (size_t)(g.host + g.host_len - p);
        if (!label_ok(p, len))
            return 0;
        if (!dot)
            return 1;
    }
}

/* ---- images ---- */

/* docker.io images are also known as index.docker.io ones to the keyring. */
int rgm_credprovider_match_image(const char *key, const char *image)
{
    char alt[IMAGE_MAX + 32];

    if (rgm_credprovider_match(key, image))
        return 1;
    if (strncmp(image, "docker.io/", 10) == 0) {
        snprintf(alt, sizeof(alt), "index.docker.io/%s", image + 10);
        return rgm_credprovider_match(key, alt);
    }
    return 0;
}
