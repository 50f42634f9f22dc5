/* CIDR prefixes and address classes: inet_pton, a bit mask compare, and the special-purpose
 * ranges of RFC 6890 that a server-side fetch must not reach. */
#include "core/cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <uv.h>

#include "core/util.h"

int rgm_cidr_parse(const char *s, rgm_cidr_t *out)
{
    char ip[INET6_ADDRSTRLEN + 1];
    const char *slash = strchr(s, '/');
    const size_t iplen = slash ? (size_t)(slash - s) : strlen(s);
    uint64_t bits = 0;
    unsigned max, i;

    memset(out, 0, sizeof(*out));
    if (iplen == 0 || iplen >= sizeof(ip))
        return UV_EINVAL;
    memcpy(ip, s, iplen);
    ip[iplen] = '\0';
    if (inet_pton(AF_INET, ip, out->addr) == 1) {
        out->family = AF_INET;
        max = 32;
    } else if (inet_pton(AF_INET6, ip, out->addr) == 1) {
        out->family = AF_INET6;
        max = 128;
    } else {
        return UV_EINVAL;
    }
    if (!slash)
        bits = max;
    else if (slash[1] == '\0' || rgm_parse_uint(slash + 1, max, &bits) < 0)
        return UV_EINVAL;
    out->bits = (unsigned)bits;
    /* host bits must be zero: "10.1.2.3/8" is a mistake worth reporting */
    for (i = out->bits; i < max; i++) {
        if (out->addr[i / 8] & (0x80u >> (i % 8)))
            return UV_EINVAL;
    }
    return 0;
}

int rgm_cidr_parse_list(char *const *strs, size_t n, rgm_cidr_t **out, const char **bad)
{
    rgm_cidr_t *list = n ? rgm_calloc(n, sizeof(*list)) : NULL;
    size_t i;

    *out = NULL;
    for (i = 0; i < n; i++) {
        if (rgm_cidr_parse(strs[i], &list[i]) < 0) {
            *bad = strs[i];
            free(list);
            return UV_EINVAL;
        }
    }
    *out = list;
    return 0;
}

/* sa as (family, 4 or 16 bytes); IPv4-mapped IPv6 becomes IPv4. 0 or -1. */
static int addr_of(const struct sockaddr *sa, int *family, unsigned char *b)
{
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

    if (sa->sa_family == AF_INET) {
        memcpy(b, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
        *family = AF_INET;
        return 0;
    }
    if (sa->sa_family != AF_INET6)
        return -1;
    memcpy(b, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
    *family = AF_INET6;
    if (memcmp(b, mapped, sizeof(mapped)) == 0) {
        memmove(b, b + 12, 4);
        *family = AF_INET;
    }
    return 0;
}

static int prefix_has(const rgm_cidr_t *c, const unsigned char *b)
{
    const unsigned full = c->bits / 8;
    const unsigned rest = c->bits % 8;

    if (memcmp(c->addr, b, full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    return ((c->addr[full] ^ b[full]) & (0xffu << (8 - rest)) & 0xffu) == 0;
}

int rgm_cidr_match(const rgm_cidr_t *list, size_t n, const struct sockaddr *sa)
{
    unsigned char b[16];
    int family;
    size_t i;

    if (addr_of(sa, &family, b) < 0)
        return 0;
    for (i = 0; i < n; i++) {
        if (list[i].family == family && prefix_has(&list[i], b))
            return 1;
    }
    return 0;
}

static enum rgm_addr_class classify4(const unsigned char *b)
{
    if (b[0] == 127)
        return RGM_ADDR_LOOPBACK;
    if (b[0] == 169 && b[1] == 254)
        return RGM_ADDR_LINKLOCAL;
    if (b[0] == 10 || (b[0] == 172 && (b[1] & 0xf0) == 16) || (b[0] == 192 && b[1] == 168) ||
        (b[0] == 100 && (b[1] & 0xc0) == 64))
        return RGM_ADDR_PRIVATE;
    if ((b[0] & 0xf0) == 224)
        return RGM_ADDR_MULTICAST;
    if (b[0] == 0 || (b[0] & 0xf0) == 240)
        return RGM_ADDR_UNSPECIFIED; /* "this network", reserved and broadcast */
    return RGM_ADDR_PUBLIC;
}

enum rgm_addr_class rgm_addr_classify(const struct sockaddr *sa)
{
    static const unsigned char zero[16];
    unsigned char b[16];
    int family;

    if (addr_of(sa, &family, b) < 0)
        return RGM_ADDR_UNSPECIFIED;
    if (family == AF_INET)
        return classify4(b);
    if (memcmp(b, zero, 15) == 0 && b[15] == 1)
        return RGM_ADDR_LOOPBACK;
    if (memcmp(b, zero, 16) == 0)
        return RGM_ADDR_UNSPECIFIED;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return RGM_ADDR_LINKLOCAL;
    if ((b[0] & 0xfe) == 0xfc)
        return RGM_ADDR_PRIVATE;
    if (b[0] == 0xff)
        return RGM_ADDR_MULTICAST;
    return RGM_ADDR_PUBLIC;
}

const char *rgm_addr_class_name(enum rgm_addr_class c)
{
    switch (c) {
    case RGM_ADDR_PUBLIC:
        return "public";
    case RGM_ADDR_LOOPBACK:
        return "loopback";
    case RGM_ADDR_LINKLOCAL:
        return "link-local";
    case RGM_ADDR_PRIVATE:
        return "private";
    case RGM_ADDR_MULTICAST:
        return "multicast";
    case RGM_ADDR_UNSPECIFIED:
        break;
    }
    return "unspecified";
}
