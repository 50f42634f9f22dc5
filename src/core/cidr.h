/* Network prefixes (CIDR, IPv4 and IPv6) and the address classes the mirror cares about: who may
 * connect (allow_clients) and where the mirror may connect (no SSRF: loopback, link-local,
 * private, ULA, multicast, unspecified). Parsing and matching only; no sockets, no DNS. */
#ifndef RGM_CORE_CIDR_H
#define RGM_CORE_CIDR_H

#include <sys/socket.h>
#include "core/common.h"

typedef struct rgm_cidr {
    int family; /* AF_INET or AF_INET6 */
    unsigned bits;
    unsigned char addr[16]; /* network order; 4 bytes used for AF_INET */
} rgm_cidr_t;

/* "10.0.0.0/8", "fd00::/8", or an address alone (a /32 or /128). Host bits must be zero.
 * 0 or UV_EINVAL. */
RGM_MUST_CHECK int rgm_cidr_parse(const char *s, rgm_cidr_t *out);

/* Parse n strings into a new array (*out, caller frees). 0, or UV_EINVAL naming the bad one in
 * *bad (borrowed from strs). */
RGM_MUST_CHECK int rgm_cidr_parse_list(char *const *strs, size_t n, rgm_cidr_t **out,
                                       const char **bad);

/* 1 when sa (AF_INET or AF_INET6; an IPv4-mapped IPv6 address counts as IPv4) is in one of the
 * n prefixes, else 0. */
int rgm_cidr_match(const rgm_cidr_t *list, size_t n, const struct sockaddr *sa);

enum rgm_addr_class {
    RGM_ADDR_PUBLIC = 0,
    RGM_ADDR_LOOPBACK,    /* 127/8, ::1 */
    RGM_ADDR_LINKLOCAL,   /* 169.254/16 (cloud metadata), fe80::/10 */
    RGM_ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
    RGM_ADDR_MULTICAST,   /* 224/4, ff00::/8 */
    RGM_ADDR_UNSPECIFIED, /* 0/8, ::, 240/4 and broadcast */
};

/* The class of sa (IPv4-mapped IPv6 as IPv4). */
enum rgm_addr_class rgm_addr_classify(const struct sockaddr *sa);
/* A static name for a class ("loopback", ...). */
const char *rgm_addr_class_name(enum rgm_addr_class c);

#endif
