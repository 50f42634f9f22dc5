/* OpenSSL client sessions over memory BIOs, and the per-process cache of SSL_CTX by
 * (ca_file, insecure). No socket I/O here: client.c moves the bytes. */
#include "http/tls.h"

#include <arpa/inet.h>
#include <uv.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/log.h"

struct ctx_entry {
    struct ctx_entry *next;
    char *ca_file; /* NULL: system CAs */
    int insecure;
    SSL_CTX *ctx;
};

struct rgm_tls {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer; owned by ssl */
    BIO *wbio; /* ciphertext to the peer; owned by ssl */
    char host[256];
};

static struct ctx_entry *ctx_cache;

/* ---- errors ---- */

static void log_ssl_error(const char *what, const char *host, SSL *ssl)
{
    unsigned long e = ERR_peek_last_error();
    long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

    if (vr != X509_V_OK) {
        rgm_log(RGM_LOG_WARN, "tls", "%s %s: certificate verification failed: %s", what, host,
                X509_verify_cert_error_string(vr));
    } else {
        char reason[256];

        if (e != 0)
            ERR_error_string_n(e, reason, sizeof(reason));
        else
            snprintf(reason, sizeof(reason), "%s", "connection closed or protocol error");
        rgm_log(RGM_LOG_WARN, "tls", "%s %s: %s", what, host, reason);
    }
    ERR_clear_error();
}

/* ---- context cache ---- */

static int same_ca(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static SSL_CTX *ctx_create(const char *ca_file, int insecure, int *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    if (!ctx) {
        *err = UV_EPROTO;
        log_ssl_error("SSL_CTX_new", "-", NULL);
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        goto fail_ctx;
    /* SSL_CTX_set_alpn_protos returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0)
        goto fail_ctx;
    if (insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (ca_file) {
            if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
                *err = UV_EINVAL;
                log_ssl_error("loading CA file", ca_file, NULL);
                SSL_CTX_free(ctx);
                return NULL;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            goto fail_ctx;
        }
    }
    return ctx;

fail_ctx:
    *err = UV_EPROTO;
    log_ssl_error("configuring context", "-", NULL);
    SSL_CTX_free(ctx);
    return NULL;
}

static SSL_CTX *ctx_get(const char *ca_file, int insecure, int *err)
{
    struct ctx_entry *e;
    SSL_CTX *ctx;

    insecure = insecure ? 1 : 0;
    for (e = ctx_cache; e; e = e->next) {
        if (e->insecure == insecure && same_ca(e->ca_file, ca_file))
            return e->ctx;
    }
    ctx = ctx_create(ca_file, insecure, err);
    if (!ctx)
        return NULL;
    e = rgm_calloc(1, sizeof(*e));
    e->ca_file = ca_file ? rgm_strdup(ca_file) : NULL;
    e->insecure = insecure;
    e->ctx = ctx;
    e->next = ctx_cache;
    ctx_cache = e;
    return ctx;
}

void rgm_tls_cache_clear(void)
{
    struct ctx_entry *e, *next;

    for (e = ctx_cache; e; e = next) {
        next = e->next;
        SSL_CTX_free(e->ctx);
        free(e->ca_file);
        free(e);
    }
    ctx_cache = NULL;
}

/* ---- sessions ---- */

int rgm_tls_is_ip(const char *s)
{
    unsigned char tmp[16];

    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

rgm_tls_t *rgm_tls_new(const char *ca_file, int insecure, const char *host, int *err)
{
    SSL_CTX *ctx;
    rgm_tls_t *t;

    ERR_clear_error();
    ctx = ctx_get(ca_file, insecure, err);
    if (!ctx)
        return NULL;
    t = rgm_calloc(1, sizeof(*t));
    snprintf(t->host, sizeof(t->host), "%s", host);
    t->ssl = SSL_new(ctx);
    if (!t->ssl)
        goto fail;
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        goto fail;
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_connect_state(t->ssl);
    if (rgm_tls_is_ip(host)) {
        if (!insecure && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) != 1)
            goto fail;
    } else {
        if (SSL_set_tlsext_host_name(t->ssl, host) != 1)
            goto fail;
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (!insecure && SSL_set1_host(t->ssl, host) != 1)
            goto fail;
    }
    return t;

fail:
    *err = UV_EPROTO;
    log_ssl_error("new session", host, NULL);
    rgm_tls_free(t);
    return NULL;
}

void rgm_tls_free(rgm_tls_t *t)
{
    if (!t)
        return;
    SSL_free(t->ssl); /* frees both BIOs */
    free(t);
}

int rgm_tls_handshake(rgm_tls_t *t)
{
    int rc, e;

    ERR_clear_error();
    rc = SSL_do_handshake(t->ssl);
    if (rc == 1)
        return 0;
    e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return RGM_TLS_WANT;
    log_ssl_error("handshake with", t->host, t->ssl);
    return UV_EPROTO;
}

int rgm_tls_feed_cipher(rgm_tls_t *t, const char *data, size_t len)
{
    while (len > 0) {
        int chunk = len > INT32_MAX ? INT32_MAX : (int)len;
        int n = BIO_write(t->rbio, data, chunk);

        if (n <= 0)
            return UV_EPROTO;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t rgm_tls_read_plain(rgm_tls_t *t, char *buf, size_t cap)
{
    int rc, e;
    int want = cap > INT32_MAX ? INT32_MAX : (int)cap;

    ERR_clear_error();
    rc = SSL_read(t->ssl, buf, want);
    if (rc > 0)
        return rc;
    e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
    if (e == SSL_ERROR_ZERO_RETURN)
        return UV_EOF;
    log_ssl_error("reading from", t->host, t->ssl);
    return UV_EPROTO;
}

int rgm_tls_write_plain(rgm_tls_t *t, const char *data, size_t len)
{
    while (len > 0) {
        int chunk = len > INT32_MAX ? INT32_MAX : (int)len;
        int rc;

        ERR_clear_error();
        rc = SSL_write(t->ssl, data, chunk);
        if (rc <= 0) {
            log_ssl_error("writing to", t->host, t->ssl);
            return UV_EPROTO;
        }
        data += rc;
        len -= (size_t)rc;
    }
    return 0;
}

size_t rgm_tls_take_cipher(rgm_tls_t *t, char **out)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    int got;

    *out = NULL;
    if (n == 0)
        return 0;
    *out = rgm_malloc(n);
    got = BIO_read(t->wbio, *out, (int)n);
    if (got <= 0) {
        RGM_FREE(*out);
        return 0;
    }
    return (size_t)got;
}
