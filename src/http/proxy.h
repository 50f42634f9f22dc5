/* Egress through an HTTP proxy, chosen from the environment with curl's rules: https_proxy /
 * HTTPS_PROXY for https origins, http_proxy / HTTP_PROXY for http ones (the lower-case name
 * first), and no_proxy / NO_PROXY for the hosts that go direct. Parsing and matching only: the
 * pool (pool.c) opens the CONNECT tunnel and upreq.c writes absolute-form requests. The proxy's
 * credentials are never logged; rgm_proxy_t keeps them only as the ready header value. */
#ifndef RGM_HTTP_PROXY_H
#define RGM_HTTP_PROXY_H

#include "core/common.h"

typedef struct rgm_proxy {
    int is_valid;   /* 0: the variable was set but unusable (logged); requests through it fail */
    char host[256]; /* without brackets for IPv6 */
    int port;       /* default 1080, as curl's */
    char *auth;     /* "Basic base64(user:pass)" from the URL's userinfo, or NULL */
} rgm_proxy_t;

typedef struct rgm_proxy_env {
    rgm_proxy_t *https; /* NULL: https origins go direct */
    rgm_proxy_t *http;
    char *no_proxy; /* NULL or the list as given */
} rgm_proxy_env_t;

/* Parse a proxy URL, "[http://][user[:password]@]host[:port][/]" (userinfo percent-decoded),
 * into *out (out->auth allocated; free with rgm_proxy_clear). 0, UV_EINVAL (no host, bad port,
 * bad escape, a path) or UV_ENOTSUP (a scheme other than http: no TLS or SOCKS to the proxy). */
RGM_MUST_CHECK int rgm_proxy_parse(const char *url, rgm_proxy_t *out);
/* Wipe and free out->auth. */
void rgm_proxy_clear(rgm_proxy_t *p);

/* 1 when host (a name, or an IP literal without brackets) goes direct by the no_proxy list:
 * entries separated by commas or spaces; "*" matches every host; a name matches itself and its
 * subdomains, case-insensitively, a leading or trailing dot ignored ("example.com" and
 * ".example.com" both match "example.com" and "a.example.com"); an IP literal host matches an
 * address or CIDR entry ("10.0.0.0/8", "::1", "[::1]"), never a name. 0 otherwise, and for a
 * NULL or empty list. */
int rgm_proxy_bypass(const char *no_proxy, const char *host);

/* Read the variables into *e (zeroed first; free with rgm_proxy_env_free). An unusable value is
 * logged as an ERROR and kept as an invalid proxy, so that its requests fail instead of going
 * direct. 0, or UV_EINVAL when a value was unusable. */
int rgm_proxy_env_load(rgm_proxy_env_t *e);
void rgm_proxy_env_free(rgm_proxy_env_t *e);

/* The proxy for an origin (borrowed from e), or NULL to connect directly. */
const rgm_proxy_t *rgm_proxy_for(const rgm_proxy_env_t *e, int is_https, const char *host);

#endif
