/* Client-side TLS as a filter over memory BIOs: the caller moves ciphertext between the socket
 * and this object, and plaintext between this object and HTTP. It never touches sockets and the
 * HTTP code never sees an SSL *. Contexts (CA bundle, verify mode) are cached per process. */
#ifndef RGM_HTTP_TLS_H
#define RGM_HTTP_TLS_H

#include <stddef.h>
#include <sys/types.h>
#include "core/common.h"

typedef struct rgm_tls rgm_tls_t;

/* Returned by rgm_tls_handshake while it needs more ciphertext from the peer. */
#define RGM_TLS_WANT 1

/* A client session for host (SNI and certificate name check; an IP literal is checked against
 * the certificate's IP addresses and gets no SNI). The context for (ca_file, insecure) is
 * created on first use and cached: ca_file NULL means the system CAs; insecure disables
 * verification. TLS 1.2 or later, ALPN "http/1.1". Returns NULL with *err = UV_EINVAL (ca_file
 * unreadable) or UV_EPROTO (OpenSSL failure); the reason is logged at WARN. The caller owns the
 * result and frees it with rgm_tls_free. */
rgm_tls_t *rgm_tls_new(const char *ca_file, int insecure, const char *host, int *err);
void rgm_tls_free(rgm_tls_t *t);

/* Drive the handshake. 0 when done, RGM_TLS_WANT when more ciphertext is needed (send what
 * rgm_tls_take_cipher gives first), UV_EPROTO on failure (verification included; the OpenSSL
 * reason is logged at WARN, module "tls"). */
RGM_MUST_CHECK int rgm_tls_handshake(rgm_tls_t *t);
/* Ciphertext received from the socket (copied). 0 or UV_EPROTO. */
RGM_MUST_CHECK int rgm_tls_feed_cipher(rgm_tls_t *t, const char *data, size_t len);
/* Decrypted bytes into buf: >0 bytes, 0 when more ciphertext is needed, UV_EOF on the peer's
 * close_notify, UV_EPROTO on error. */
ssize_t rgm_tls_read_plain(rgm_tls_t *t, char *buf, size_t cap);
/* Encrypt len bytes (all of them; the output waits in rgm_tls_take_cipher). 0 or UV_EPROTO. */
RGM_MUST_CHECK int rgm_tls_write_plain(rgm_tls_t *t, const char *data, size_t len);
/* Ciphertext waiting to be sent: returns its length and a malloc'd copy in *out (caller frees),
 * or 0 and *out = NULL when there is none. */
size_t rgm_tls_take_cipher(rgm_tls_t *t, char **out);

/* 1 when s is an IPv4 or IPv6 literal. */
int rgm_tls_is_ip(const char *s);
/* Free every cached context (sessions still alive keep their own reference). */
void rgm_tls_cache_clear(void);

#endif
