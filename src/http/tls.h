/* TLS as a filter over memory BIOs, both ways: the caller moves ciphertext between the socket
 * and this object, and plaintext between this object and HTTP. It never touches sockets and the
 * HTTP code never sees an SSL *. Client contexts (CA bundle, verify mode, client certificate)
 * are cached per process and can be re-read in place (rotation); a server context (certificate
 * chain, key, client CA) is an object the server holds and swaps. */
#ifndef RGM_HTTP_TLS_H
#define RGM_HTTP_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include "core/common.h"

typedef struct rgm_tls rgm_tls_t;
typedef struct rgm_tls_server rgm_tls_server_t;

/* Returned by rgm_tls_handshake while it needs more ciphertext from the peer. */
#define RGM_TLS_WANT 1

/* What a client session presents and trusts. All strings are borrowed paths, or NULL. */
typedef struct rgm_tls_client_cfg {
    const char *ca_file;   /* NULL: the system CAs */
    int insecure;          /* no verification at all */
    const char *cert_file; /* client certificate chain (PEM), with key_file; NULL: none */
    const char *key_file;
    const char *verify_name; /* the name checked (and sent as SNI) instead of host; NULL: host */
} rgm_tls_client_cfg_t;

/* ---- client sessions ---- */

/* A client session for host (SNI and certificate name check, against cfg->verify_name instead
 * when set; an IP literal is checked against the certificate's IP addresses and gets no SNI). The
 * context for cfg is created on first use and cached. TLS 1.2 or later, ALPN "http/1.1". Returns
 * NULL with *err = UV_EINVAL (a file unreadable or a mismatched pair) or UV_EPROTO (OpenSSL
 * failure); the reason is logged at WARN. The caller owns the result and frees it with
 * rgm_tls_free. */
rgm_tls_t *rgm_tls_new(const rgm_tls_client_cfg_t *cfg, const char *host, int *err);

/* Create (or find) the cached context for cfg now, so that a bad file is found at start-up.
 * 0, or UV_EINVAL with "FILE: OpenSSL reason" in msg. */
RGM_MUST_CHECK int rgm_tls_client_check(const rgm_tls_client_cfg_t *cfg, char *msg, size_t msglen);

/* Re-read the files of every cached client context (SIGHUP, or a file changed). A context that
 * loads replaces the old one for new sessions (live sessions keep theirs); one that fails is
 * kept, and the reason is logged at ERROR. Returns the number of failures. */
int rgm_tls_client_reload(void);

/* Free every cached context (sessions still alive keep their own reference). */
void rgm_tls_cache_clear(void);

/* ---- server contexts and sessions ---- */

/* A server context: cert_file (PEM, leaf first, then the chain) and key_file, which must match;
 * client_ca_file NULL or the CAs that sign acceptable client certificates (then a client
 * without one is refused during the handshake). TLS 1.2 and 1.3 only, ALPN http/1.1, the
 * server's preference among AEAD ciphers, no session tickets or session cache. Returns NULL
 * with "FILE: OpenSSL reason" in msg. The caller owns it (rgm_tls_server_free). */
rgm_tls_server_t *rgm_tls_server_new(const char *cert_file, const char *key_file,
                                     const char *client_ca_file, char *msg, size_t msglen);
/* Sessions made from s keep their own reference: free s whenever it is replaced. */
void rgm_tls_server_free(rgm_tls_server_t *s);
/* The cert_file s was loaded from (owned by s). */
const char *rgm_tls_server_cert_file(const rgm_tls_server_t *s);
/* When the first certificate of s's chain expires (the earliest notAfter of the leaf and the
 * chain), Unix seconds, read at load; 0 when OpenSSL could not read it. */
int64_t rgm_tls_server_not_after(const rgm_tls_server_t *s);

/* A server session from s; peer ("ip:port", copied) names the client in log lines. */
rgm_tls_t *rgm_tls_accept(rgm_tls_server_t *s, const char *peer);

/* ---- either side ---- */

void rgm_tls_free(rgm_tls_t *t);

/* Drive the handshake. 0 when done, RGM_TLS_WANT when more ciphertext is needed (send what
 * rgm_tls_take_cipher gives first), UV_EPROTO on failure (verification included). The OpenSSL
 * reason is logged, module "tls": at WARN for a client session, INFO for a server one (a
 * client's mistake); rgm_tls_fail_reason then names it. */
RGM_MUST_CHECK int rgm_tls_handshake(rgm_tls_t *t);
/* Why a server handshake failed, for metrics. The last two are the caller's to tell (the
 * connection ended before the handshake did). */
enum rgm_tls_fail {
    RGM_TLS_FAIL_PROTOCOL,        /* any other TLS error */
    RGM_TLS_FAIL_NO_CLIENT_CERT,  /* client_ca_file set, no certificate sent */
    RGM_TLS_FAIL_BAD_CLIENT_CERT, /* a certificate that does not verify */
    RGM_TLS_FAIL_VERSION,         /* below TLS 1.2 */
    RGM_TLS_FAIL_CIPHER,          /* no cipher in common */
    RGM_TLS_FAIL_NOT_TLS,         /* plain HTTP sent to an HTTPS listener */
    RGM_TLS_FAIL_TIMEOUT,         /* not done within header_timeout */
    RGM_TLS_FAIL_EOF,             /* the client left */
    RGM_TLS_FAIL_N
};
/* After a failed handshake: why (RGM_TLS_FAIL_PROTOCOL before). */
enum rgm_tls_fail rgm_tls_fail_reason(const rgm_tls_t *t);
/* A static label for metrics ("no_client_cert", ...). */
const char *rgm_tls_fail_name(enum rgm_tls_fail f);
/* 1 once the handshake is done. */
int rgm_tls_is_done(const rgm_tls_t *t);
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
/* Ciphertext waiting to be sent, in bytes. */
size_t rgm_tls_cipher_pending(rgm_tls_t *t);
/* Move the waiting ciphertext into out (cap bytes at most); returns the bytes moved. */
size_t rgm_tls_take_cipher_into(rgm_tls_t *t, char *out, size_t cap);
/* Queue a close_notify (then send rgm_tls_take_cipher's bytes). */
void rgm_tls_close_notify(rgm_tls_t *t);
/* The peer certificate's subject ("/CN=node-1/O=..."), or "-" without one, into out. */
void rgm_tls_peer_subject(const rgm_tls_t *t, char *out, size_t outlen);
/* Protocol version and cipher of a finished handshake ("TLSv1.3", "TLS_AES_128_GCM_SHA256"). */
const char *rgm_tls_version(const rgm_tls_t *t);
const char *rgm_tls_cipher(const rgm_tls_t *t);

/* 1 when s is an IPv4 or IPv6 literal. */
int rgm_tls_is_ip(const char *s);

#endif
