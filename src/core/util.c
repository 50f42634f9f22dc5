/* Strict small parsers (sizes, durations, numbers, host:port, URLs, query strings), base64, hex
 * and time helpers. No allocation, no locale: every function works on caller buffers. */
#include "core/util.h"

#include <errno.h>
#include <unistd.h>

#include <strings.h>
#include <time.h>

#include <uv.h>

/* ---- character classes (locale-free) ---- */

static int is_digit(int c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int to_lower(int c)
{
    return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int rgm_strcaseeq(const char *a, const char *b)
{
    while (*a && *b) {
        if (to_lower((unsigned char)*a) != to_lower((unsigned char)*b))
            return 0;
        a++;
        b++;
    }
    return *a == *b;
}

/* ---- numbers ---- */

/* Leading decimal digits of s into *out; *end after them. 0, UV_EINVAL (no digit),
 * UV_ERANGE. */
static int parse_digits(const char *s, const char **end, uint64_t *out)
{
    uint64_t v = 0;
    const char *p = s;

    if (!is_digit((unsigned char)*p))
        return UV_EINVAL;
    for (; is_digit((unsigned char)*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return UV_ERANGE;
        v = v * 10 + d;
    }
    *end = p;
    *out = v;
    return 0;
}

int rgm_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    const char *end = NULL;
    uint64_t v;
    int err;

    if (!s)
        return UV_EINVAL;
    err = parse_digits(s, &end, &v);
    if (err < 0)
        return err;
    if (*end != '\0')
        return UV_EINVAL;
    if (v > max)
        return UV_ERANGE;
    *out = v;
    return 0;
}

struct unit {
    const char *name;
    uint64_t mult;
};

static const struct unit size_units[] = {
    {"", 1},
    {"B", 1},
    {"KB", 1000ULL},
    {"MB", 1000ULL * 1000},
    {"GB", 1000ULL * 1000 * 1000},
    {"TB", 1000ULL * 1000 * 1000 * 1000},
    {"K", 1ULL << 10},
    {"M", 1ULL << 20},
    {"G", 1ULL << 30},
    {"T", 1ULL << 40},
    {"KiB", 1ULL << 10},
    {"MiB", 1ULL << 20},
    {"GiB", 1ULL << 30},
    {"TiB", 1ULL << 40},
};

int rgm_parse_size(const char *s, uint64_t *out)
{
    const char *p = NULL;
    uint64_t ip, frac = 0, scale = 1, mult = 0;
    unsigned __int128 v;
    size_t i;
    int err;

    if (!s)
        return UV_EINVAL;
    err = parse_digits(s, &p, &ip);
    if (err < 0)
        return err;
    if (*p == '.') {
        p++;
        if (!is_digit((unsigned char)*p))
            return UV_EINVAL;
        for (; is_digit((unsigned char)*p); p++) {
            if (scale < 1000000000ULL) { /* digits past 9 are dropped (sub-byte anyway) */
                frac = frac * 10 + (uint64_t)(*p - '0');
                scale *= 10;
            }
        }
    }
    for (i = 0; i < RGM_ARRAY_SIZE(size_units); i++) {
        if (strcmp(p, size_units[i].name) == 0) {
            mult = size_units[i].mult;
            break;
        }
    }
    if (mult == 0)
        return UV_EINVAL;
    if (scale > 1 && mult == 1)
        return UV_EINVAL; /* a fraction of a byte */
    v = (unsigned __int128)ip * mult + (unsigned __int128)frac * mult / scale;
    if (v > UINT64_MAX)
        return UV_ERANGE;
    *out = (uint64_t)v;
    return 0;
}

static const struct unit dur_units[] = {
    {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {"d", 86400000},
};

int rgm_parse_duration(const char *s, uint64_t *out_ms)
{
    const char *p = s;
    uint64_t total = 0;

    if (!s || !*s)
        return UV_EINVAL;
    if (strcmp(s, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    while (*p) {
        uint64_t n = 0, mult = 0;
        size_t i, ulen = 0;
        int err = parse_digits(p, &p, &n);

        if (err < 0)
            return err;
        /* longest unit first: "ms" before "m" */
        for (i = 0; i < RGM_ARRAY_SIZE(dur_units); i++) {
            size_t l = strlen(dur_units[i].name);
            if (strncmp(p, dur_units[i].name, l) == 0 && l > ulen) {
                mult = dur_units[i].mult;
                ulen = l;
            }
        }
        if (mult == 0)
            return UV_EINVAL;
        p += ulen;
        if (n > UINT64_MAX / mult || total > UINT64_MAX - n * mult)
            return UV_ERANGE;
        total += n * mult;
    }
    *out_ms = total;
    return 0;
}

/* ---- host:port and URLs ---- */

/* Port digits, 0..65535. */
static int parse_port(const char *s, size_t len, int *port)
{
    uint64_t v = 0;
    size_t i;

    if (len == 0 || len > 5)
        return UV_EINVAL;
    for (i = 0; i < len; i++) {
        if (!is_digit((unsigned char)s[i]))
            return UV_EINVAL;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > 65535)
        return UV_EINVAL;
    *port = (int)v;
    return 0;
}

/* Host of len bytes: a bracketed IPv6 literal ("[::1]") or a reg-name/IPv4. Copied without
 * brackets, lowercased when lower. */
static int copy_host(const char *h, size_t len, char *hostbuf, size_t hostlen, int lower)
{
    size_t i;
    int c;

    if (len >= 2 && h[0] == '[' && h[len - 1] == ']') {
        h++;
        len -= 2;
        if (len == 0)
            return UV_EINVAL;
        for (i = 0; i < len; i++) {
            c = (unsigned char)h[i];
            if (hexval(c) < 0 && c != ':' && c != '.' && c != '%')
                return UV_EINVAL;
        }
    } else {
        if (len == 0)
            return UV_EINVAL;
        for (i = 0; i < len; i++) {
            c = (unsigned char)h[i];
            if (!is_alpha(c) && !is_digit(c) && c != '-' && c != '.' && c != '_')
                return UV_EINVAL;
        }
    }
    if (len >= hostlen)
        return UV_EINVAL;
    for (i = 0; i < len; i++)
        hostbuf[i] = (char)(lower ? to_lower((unsigned char)h[i]) : h[i]);
    hostbuf[len] = '\0';
    return 0;
}

/* Split an authority "host", "host:port", "[v6]", "[v6]:port" of len bytes. *port is left
 * alone when there is no port. */
static int split_authority(const char *s, size_t len, char *hostbuf, size_t hostlen, int *port,
                           int lower, int need_port)
{
    const char *colon = NULL;
    size_t hlen;

    if (len > 0 && s[0] == '[') {
        const char *rb = memchr(s, ']', len);
        if (!rb)
            return UV_EINVAL;
        hlen = (size_t)(rb - s) + 1;
        if (hlen < len) {
            if (s[hlen] != ':')
                return UV_EINVAL;
            colon = s + hlen;
        }
    } else {
        size_t i;
        for (i = 0; i < len; i++) {
            if (s[i] == ':') {
                if (colon)
                    return UV_EINVAL; /* unbracketed IPv6 is ambiguous */
                colon = s + i;
            }
        }
        hlen = colon ? (size_t)(colon - s) : len;
    }
    if (!colon && need_port)
        return UV_EINVAL;
    if (copy_host(s, hlen, hostbuf, hostlen, lower) < 0)
        return UV_EINVAL;
    if (colon)
        return parse_port(colon + 1, len - (size_t)(colon + 1 - s), port);
    return 0;
}

int rgm_parse_hostport(const char *s, char *hostbuf, size_t hostlen, int *port)
{
    int p = 0;

    if (!s || split_authority(s, strlen(s), hostbuf, hostlen, &p, 0, 1) < 0)
        return UV_EINVAL;
    *port = p;
    return 0;
}

int rgm_url_parse(const char *url, rgm_url_t *out)
{
    const char *p, *auth, *end;
    size_t alen, plen;
    const unsigned char *q;
    int port;

    if (!url)
        return UV_EINVAL;
    for (q = (const unsigned char *)url; *q; q++) {
        if (*q <= 0x20 || *q >= 0x7f)
            return UV_EINVAL;
    }
    memset(out, 0, sizeof(*out));
    if (strncasecmp(url, "https://", 8) == 0) {
        out->is_https = 1;
        auth = url + 8;
        port = 443;
    } else if (strncasecmp(url, "http://", 7) == 0) {
        auth = url + 7;
        port = 80;
    } else {
        return UV_EINVAL;
    }
    alen = strcspn(auth, "/?#");
    if (memchr(auth, '@', alen))
        return UV_EINVAL; /* no userinfo: credentials never live in URLs */
    if (split_authority(auth, alen, out->host, sizeof(out->host), &port, 1, 0) < 0)
        return UV_EINVAL;
    if (port == 0)
        return UV_EINVAL;
    out->port = port;
    p = auth + alen;
    end = p + strcspn(p, "#");
    plen = (size_t)(end - p);
    if (plen == 0 || p[0] == '?') {
        if (plen + 2 > sizeof(out->path))
            return UV_EINVAL;
        out->path[0] = '/';
        memcpy(out->path + 1, p, plen);
        out->path[plen + 1] = '\0';
    } else {
        if (plen + 1 > sizeof(out->path))
            return UV_EINVAL;
        memcpy(out->path, p, plen);
        out->path[plen] = '\0';
    }
    return 0;
}

/* ---- query strings ---- */

/* Percent-decode [v, end) into out ('+' is a space). 1, UV_EINVAL or UV_ENOBUFS. */
static int decode_value(const char *v, const char *end, char *out, size_t outlen)
{
    size_t o = 0;

    if (outlen == 0)
        return UV_ENOBUFS;
    for (; v < end; v++) {
        char c = *v;
        if (c == '%') {
            int h1, h2;
            if (end - v < 3)
                return UV_EINVAL;
            h1 = hexval((unsigned char)v[1]);
            h2 = hexval((unsigned char)v[2]);
            if (h1 < 0 || h2 < 0 || (h1 == 0 && h2 == 0)) /* no NUL inside a C string */
                return UV_EINVAL;
            c = (char)(h1 * 16 + h2);
            v += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= outlen)
            return UV_ENOBUFS;
        out[o++] = c;
    }
    out[o] = '\0';
    return 1;
}

int rgm_query_get(const char *query, const char *key, char *out, size_t outlen)
{
    const char *p = query;
    size_t klen = strlen(key);

    if (!p)
        return 0;
    if (*p == '?')
        p++;
    while (*p) {
        const char *amp = strchr(p, '&'), *eq;
        if (!amp)
            amp = p + strlen(p);
        eq = memchr(p, '=', (size_t)(amp - p));
        if ((size_t)((eq ? eq : amp) - p) == klen && memcmp(p, key, klen) == 0)
            return decode_value(eq ? eq + 1 : amp, amp, out, outlen);
        p = *amp ? amp + 1 : amp;
    }
    return 0;
}

int rgm_url_encode(const char *s, char *out, size_t outlen)
{
    static const char hexd[] = "0123456789ABCDEF";
    size_t o = 0;
    const unsigned char *p;

    for (p = (const unsigned char *)s; *p; p++) {
        if (is_alpha(*p) || is_digit(*p) || *p == '-' || *p == '.' || *p == '_' || *p == '~') {
            if (o + 1 >= outlen)
                return UV_ENOBUFS;
            out[o++] = (char)*p;
        } else {
            if (o + 3 >= outlen)
                return UV_ENOBUFS;
            out[o++] = '%';
            out[o++] = hexd[*p >> 4];
            out[o++] = hexd[*p & 15];
        }
    }
    if (outlen == 0)
        return UV_ENOBUFS;
    out[o] = '\0';
    return 0;
}

/* ---- base64, hex ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

int rgm_b64_encode(const void *in, size_t len, char *out, size_t outlen)
{
    const unsigned char *s = in;
    size_t need, i, o = 0;
    uint32_t v;

    if (len > (SIZE_MAX - 1) / 4 * 3 - 3)
        return UV_ENOBUFS;
    need = (len + 2) / 3 * 4;
    if (outlen < need + 1)
        return UV_ENOBUFS;
    for (i = 0; i + 2 < len; i += 3) {
        v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = b64chars[v >> 6 & 63];
        out[o++] = b64chars[v & 63];
    }
    if (i < len) {
        v = (uint32_t)s[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)s[i + 1] << 8;
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
        out[o++] = '=';
    }
    out[o] = '\0';
    return (int)o;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Padding is optional on input; characters after padding, or bits left over in the last
 * symbol, are errors. The output gets a NUL after the decoded bytes. */
int rgm_b64_decode(const char *in, size_t len, unsigned char *out, size_t outlen)
{
    size_t i, o = 0, n = len, nsym = 0;
    uint32_t acc = 0;

    while (n > 0 && in[n - 1] == '=')
        n--;
    if (len - n > 2 || (len != n && len % 4 != 0))
        return UV_EINVAL;
    if (n % 4 == 1)
        return UV_EINVAL;
    if (outlen < n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0) + 1)
        return UV_ENOBUFS;
    if ((n / 4 * 3) > INT32_MAX)
        return UV_ENOBUFS;
    for (i = 0; i < n; i++) {
        int v = b64val((unsigned char)in[i]);
        if (v < 0)
            return UV_EINVAL;
        acc = acc << 6 | (uint32_t)v;
        if (++nsym == 4) {
            out[o++] = (unsigned char)(acc >> 16);
            out[o++] = (unsigned char)(acc >> 8);
            out[o++] = (unsigned char)acc;
            acc = 0;
            nsym = 0;
        }
    }
    if (nsym == 2) {
        if (acc & 0xf)
            return UV_EINVAL;
        out[o++] = (unsigned char)(acc >> 4);
    } else if (nsym == 3) {
        if (acc & 0x3)
            return UV_EINVAL;
        out[o++] = (unsigned char)(acc >> 10);
        out[o++] = (unsigned char)(acc >> 2);
    }
    out[o] = '\0';
    return (int)o;
}

void rgm_hex(const unsigned char *in, size_t len, char *out)
{
    static const char hexd[] = "0123456789abcdef";
    size_t i;

    for (i = 0; i < len; i++) {
        out[2 * i] = hexd[in[i] >> 4];
        out[2 * i + 1] = hexd[in[i] & 15];
    }
    out[2 * len] = '\0';
}

/* ---- time ---- */

uint64_t rgm_time_ms(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void rgm_http_date(char out[32])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = time(NULL);
    struct tm tm;

    if (!gmtime_r(&t, &tm)) {
        out[0] = '\0';
        return;
    }
    /* fields come from gmtime_r, so the 29 characters always fit */
    if (snprintf(out, 32, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7], tm.tm_mday,
                 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec) < 0)
        out[0] = '\0';
}

int rgm_write_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    ssize_t n;

    while (len > 0) {
        n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
