/* OpenSSL sessions over memory BIOs, client and server; the per-process cache of client SSL_CTX
 * by (ca_file, insecure, client pair), re-read in place on rotation; and server contexts. No
 * socket I/O here: pool.c, upreq.c and conn.c move the bytes. */
#include "http/tls.h"

#include <arpa/inet.h>
#include <time.h>
#include <uv.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/log.h"

struct ctx_entry {
    struct ctx_entry *next;
    char *ca_file; /* NULL: system CAs */
    int insecure;
    char *cert_file; /* NULL: no client certificate */
    char *key_file;
    SSL_CTX *ctx;
};

struct rgm_tls_server {
    SSL_CTX *ctx;
    char *cert_file;
    int64_t not_after; /* earliest notAfter of the chain, Unix seconds; 0: unknown */
};

struct rgm_tls {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer; owned by ssl */
    BIO *wbio; /* ciphertext to the peer; owned by ssl */
    int is_server;
    int is_done;
    enum rgm_tls_fail fail_reason;
    char host[256]; /* the server's name, or the client's address */
};

static struct ctx_entry *ctx_cache;

/* ---- errors ---- */

/* The OpenSSL error queue's last reason into out, then cleared. */
static void ssl_reason(char *out, size_t outlen)
{
    unsigned long e = ERR_peek_last_error();

    if (e != 0)
        ERR_error_string_n(e, out, outlen);
    else
        snprintf(out, outlen, "%s", "connection closed or protocol error");
    ERR_clear_error();
}

static void log_ssl_error(const char *what, const rgm_tls_t *t)
{
    const int level = t && t->is_server ? RGM_LOG_INFO : RGM_LOG_WARN;
    const long vr = t ? SSL_get_verify_result(t->ssl) : X509_V_OK;
    const char *host = t ? t->host : "-";
    char reason[256];

    if (vr != X509_V_OK) {
        rgm_log(level, "tls", "%s %s: certificate verification failed: %s", what, host,
                X509_verify_cert_error_string(vr));
        ERR_clear_error();
        return;
    }
    ssl_reason(reason, sizeof(reason));
    rgm_log(level, "tls", "%s %s: %s", what, host, reason);
}

/* Why a server handshake failed, from the error queue (before it is cleared). */
static enum rgm_tls_fail classify(const rgm_tls_t *t)
{
    const unsigned long e = ERR_peek_last_error();
    const int r = ERR_GET_REASON(e);

    if (SSL_get_verify_result(t->ssl) != X509_V_OK || r == SSL_R_CERTIFICATE_VERIFY_FAILED)
        return RGM_TLS_FAIL_BAD_CLIENT_CERT;
    if (r == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return RGM_TLS_FAIL_NO_CLIENT_CERT;
    if (r == SSL_R_HTTP_REQUEST || r == SSL_R_HTTPS_PROXY_REQUEST)
        return RGM_TLS_FAIL_NOT_TLS;
    if (r == SSL_R_UNSUPPORTED_PROTOCOL || r == SSL_R_NO_PROTOCOLS_AVAILABLE ||
        r == SSL_R_VERSION_TOO_LOW)
        return RGM_TLS_FAIL_VERSION;
    if (r == SSL_R_NO_SHARED_CIPHER)
        return RGM_TLS_FAIL_CIPHER;
    return RGM_TLS_FAIL_PROTOCOL;
}

const char *rgm_tls_fail_name(enum rgm_tls_fail f)
{
    static const char *const names[RGM_TLS_FAIL_N] = {
        [RGM_TLS_FAIL_PROTOCOL] = "protocol",
        [RGM_TLS_FAIL_NO_CLIENT_CERT] = "no_client_cert",
        [RGM_TLS_FAIL_BAD_CLIENT_CERT] = "bad_client_cert",
        [RGM_TLS_FAIL_VERSION] = "version",
        [RGM_TLS_FAIL_CIPHER] = "cipher",
        [RGM_TLS_FAIL_NOT_TLS] = "not_tls",
        [RGM_TLS_FAIL_TIMEOUT] = "timeout",
        [RGM_TLS_FAIL_EOF] = "eof",
    };

    return (unsigned)f < RGM_TLS_FAIL_N ? names[f] : "protocol";
}

/* ---- client contexts ---- */

static int same_str(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

/* "FILE: reason" into msg. */
static int load_fail(const char *file, char *msg, size_t msglen)
{
    char reason[256];

    ssl_reason(reason, sizeof(reason));
    snprintf(msg, msglen, "%s: %s", file, reason);
    return UV_EINVAL;
}

/* The certificate chain and its key, checked to match. 0 or UV_EINVAL with msg. */
static int load_pair(SSL_CTX *ctx, const char *cert_file, const char *key_file, char *msg,
                     size_t msglen)
{
    if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1)
        return load_fail(cert_file, msg, msglen);
    if (SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1)
        return load_fail(key_file, msg, msglen);
    if (SSL_CTX_check_private_key(ctx) != 1)
        return load_fail(key_file, msg, msglen);
    return 0;
}

static SSL_CTX *ctx_create(const rgm_tls_client_cfg_t *cfg, char *msg, size_t msglen, int *err)
{
    static const unsigned char alpn[] = "\x08http/1.1";
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

    ERR_clear_error();
    *err = UV_EPROTO;
    if (!ctx) {
        ssl_reason(msg, msglen);
        return NULL;
    }
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
        goto fail_ctx;
    /* SSL_CTX_set_alpn_protos returns 0 on success. */
    if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof(alpn) - 1) != 0)
        goto fail_ctx;
    if (cfg->insecure) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        if (cfg->ca_file) {
            if (SSL_CTX_load_verify_locations(ctx, cfg->ca_file, NULL) != 1) {
                *err = load_fail(cfg->ca_file, msg, msglen);
                SSL_CTX_free(ctx);
                return NULL;
            }
        } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
            goto fail_ctx;
        }
    }
    if (cfg->cert_file && cfg->key_file) {
        *err = load_pair(ctx, cfg->cert_file, cfg->key_file, msg, msglen);
        if (*err < 0) {
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;

fail_ctx:
    ssl_reason(msg, msglen);
    SSL_CTX_free(ctx);
    return NULL;
}

static struct ctx_entry *entry_find(const rgm_tls_client_cfg_t *cfg)
{
    struct ctx_entry *e;
    const int insecure = cfg->insecure ? 1 : 0;

    for (e = ctx_cache; e; e = e->next) {
        if (e->insecure == insecure && same_str(e->ca_file, cfg->ca_file) &&
            same_str(e->cert_file, cfg->cert_file) && same_str(e->key_file, cfg->key_file))
            return e;
    }
    return NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? rgm_strdup(s) : NULL;
}

static SSL_CTX *ctx_get(const rgm_tls_client_cfg_t *cfg, char *msg, size_t msglen, int *err)
{
    struct ctx_entry *e = entry_find(cfg);
    SSL_CTX *ctx;

    if (e)
        return e->ctx;
    ctx = ctx_create(cfg, msg, msglen, err);
    if (!ctx)
        return NULL;
    e = rgm_calloc(1, sizeof(*e));
    e->ca_file = dup_or_null(cfg->ca_file);
    e->insecure = cfg->insecure ? 1 : 0;
    e->cert_file = dup_or_null(cfg->cert_file);
    e->key_file = dup_or_null(cfg->key_file);
    e->ctx = ctx;
    e->next = ctx_cache;
    ctx_cache = e;
    return ctx;
}

int rgm_tls_client_check(const rgm_tls_client_cfg_t *cfg, char *msg, size_t msglen)
{
    int err = 0;

    msg[0] = '\0';
    return ctx_get(cfg, msg, msglen, &err) ? 0 : err;
}

int rgm_tls_client_reload(void)
{
    struct ctx_entry *e;
    char msg[512];
    int failures = 0;
    int err;

    for (e = ctx_cache; e; e = e->next) {
        const rgm_tls_client_cfg_t cfg = {e->ca_file, e->insecure, e->cert_file, e->key_file, NULL};
        SSL_CTX *ctx = ctx_create(&cfg, msg, sizeof(msg), &err);

        if (!ctx) {
            rgm_log(RGM_LOG_ERROR, "tls",
                    "re-reading client TLS files failed, keeping the old "
                    "ones: %s",
                    msg);
            failures++;
            continue;
        }
        SSL_CTX_free(e->ctx); /* live sessions hold their own reference */
        e->ctx = ctx;
    }
    return failures;
}

void rgm_tls_cache_clear(void)
{
    struct ctx_entry *e, *next;

    for (e = ctx_cache; e; e = next) {
        next = e->next;
        SSL_CTX_free(e->ctx);
        free(e->ca_file);
        free(e->cert_file);
        free(e->key_file);
        free(e);
    }
    ctx_cache = NULL;
}

/* ---- server contexts ---- */

/* ALPN: http/1.1 when the client offers it; otherwise go on without ALPN. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h11[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    unsigned char sel_len = 0;

    (void)ssl;
    (void)arg;
    if (SSL_select_next_proto(&sel, &sel_len, h11, sizeof(h11) - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    *out = sel;
    *outlen = sel_len;
    return SSL_TLSEXT_ERR_OK;
}

/* TLS 1.2 suites: ECDHE with AEAD only, in the server's order. TLS 1.3's are all AEAD. */
#define SERVER_CIPHERS                                                                             \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"     \
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"

static int server_settings(SSL_CTX *ctx)
{
    if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1)
        return -1;
    if (SSL_CTX_set_cipher_list(ctx, SERVER_CIPHERS) != 1)
        return -1;
    /* No resumption: replicas share no ticket keys, and keys that never rotate are a risk. */
    SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET |
                                 SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    if (SSL_CTX_set_num_tickets(ctx, 0) != 1)
        return -1;
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_alpn_select_cb(ctx, on_alpn, NULL);
    /* An idle connection gives its record buffers back: a few KiB each instead of ~34 KiB. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    return 0;
}

static int load_client_ca(SSL_CTX *ctx, const char *ca_file, char *msg, size_t msglen)
{
    STACK_OF(X509_NAME) * names;

    if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1)
        return load_fail(ca_file, msg, msglen);
    names = SSL_load_client_CA_file(ca_file);
    if (!names)
        return load_fail(ca_file, msg, msglen);
    SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

/* Unix seconds of t, or 0 when OpenSSL cannot read it. */
static int64_t asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;

    memset(&tm, 0, sizeof(tm));
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* The earliest notAfter of the leaf and the chain loaded in ctx: the first to expire breaks
 * every handshake. 0 when none can be read. */
static int64_t earliest_not_after(SSL_CTX *ctx)
{
    STACK_OF(X509) *chain = NULL;
    int64_t best;
    int64_t v;
    int i;

    best = asn1_time_unix(X509_get0_notAfter(SSL_CTX_get0_certificate(ctx)));
    if (SSL_CTX_get0_chain_certs(ctx, &chain) != 1 || !chain)
        return best;
    for (i = 0; i < sk_X509_num(chain); i++) {
        v = asn1_time_unix(X509_get0_notAfter(sk_X509_value(chain, i)));
        if (v > 0 && (best == 0 || v < best))
            best = v;
    }
    return best;
}

rgm_tls_server_t *rgm_tls_server_new(const char *cert_file, const char *key_file,
                                     const char *client_ca_file, char *msg, size_t msglen)
{
    rgm_tls_server_t *s;
    SSL_CTX *ctx;

    ERR_clear_error();
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || server_settings(ctx) < 0) {
        ssl_reason(msg, msglen);
        SSL_CTX_free(ctx);
        return NULL;
    }
    if (load_pair(ctx, cert_file, key_file, msg, msglen) < 0 ||
        (client_ca_file && load_client_ca(ctx, client_ca_file, msg, msglen) < 0)) {
        SSL_CTX_free(ctx);
        return NULL;
    }
    s = rgm_calloc(1, sizeof(*s));
    s->ctx = ctx;
    s->cert_file = rgm_strdup(cert_file);
    s->not_after = earliest_not_after(ctx);
    return s;
}

const char *rgm_tls_server_cert_file(const rgm_tls_server_t *s)
{
    return s->cert_file;
}

int64_t rgm_tls_server_not_after(const rgm_tls_server_t *s)
{
    return s->not_after;
}

void rgm_tls_server_free(rgm_tls_server_t *s)
{
    if (!s)
        return;
    SSL_CTX_free(s->ctx);
    free(s->cert_file);
    free(s);
}

/* ---- sessions ---- */

int rgm_tls_is_ip(const char *s)
{
    unsigned char tmp[16];

    return inet_pton(AF_INET, s, tmp) == 1 || inet_pton(AF_INET6, s, tmp) == 1;
}

/* A session on ctx with its two memory BIOs, or NULL. */
static rgm_tls_t *session_new(SSL_CTX *ctx, const char *host)
{
    rgm_tls_t *t = rgm_calloc(1, sizeof(*t));

    snprintf(t->host, sizeof(t->host), "%s", host);
    t->fail_reason = RGM_TLS_FAIL_PROTOCOL;
    t->ssl = SSL_new(ctx);
    if (!t->ssl) {
        free(t);
        return NULL;
    }
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->rbio || !t->wbio) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        return NULL;
    }
    /* An empty read BIO means "want read", not EOF. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    return t;
}

rgm_tls_t *rgm_tls_new(const rgm_tls_client_cfg_t *cfg, const char *host, int *err)
{
    char msg[512];
    SSL_CTX *ctx;
    rgm_tls_t *t;

    ERR_clear_error();
    ctx = ctx_get(cfg, msg, sizeof(msg), err);
    if (!ctx) {
        rgm_log(RGM_LOG_WARN, "tls", "TLS context for %s: %s", host, msg);
        return NULL;
    }
    t = session_new(ctx, host);
    if (!t)
        goto fail;
    SSL_set_connect_state(t->ssl);
    if (cfg->verify_name)
        host = cfg->verify_name; /* e.g. cluster peers found by address, certified by name */
    if (rgm_tls_is_ip(host)) {
        if (!cfg->insecure && X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(t->ssl), host) != 1)
            goto fail;
    } else {
        if (SSL_set_tlsext_host_name(t->ssl, host) != 1)
            goto fail;
        SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        if (!cfg->insecure && SSL_set1_host(t->ssl, host) != 1)
            goto fail;
    }
    return t;

fail:
    *err = UV_EPROTO;
    log_ssl_error("new session", NULL);
    rgm_tls_free(t);
    return NULL;
}

rgm_tls_t *rgm_tls_accept(rgm_tls_server_t *s, const char *peer)
{
    rgm_tls_t *t = session_new(s->ctx, peer);

    if (!t) {
        log_ssl_error("new server session", NULL);
        return NULL;
    }
    t->is_server = 1;
    SSL_set_accept_state(t->ssl);
    return t;
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
    if (rc == 1) {
        t->is_done = 1;
        return 0;
    }
    e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return RGM_TLS_WANT;
    if (t->is_server)
        t->fail_reason = classify(t);
    log_ssl_error(t->is_server ? "handshake from" : "handshake with", t);
    return UV_EPROTO;
}

enum rgm_tls_fail rgm_tls_fail_reason(const rgm_tls_t *t)
{
    return t->fail_reason;
}

int rgm_tls_is_done(const rgm_tls_t *t)
{
    return t->is_done;
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
    log_ssl_error("reading from", t);
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
            log_ssl_error("writing to", t);
            return UV_EPROTO;
        }
        data += rc;
        len -= (size_t)rc;
    }
    return 0;
}

size_t rgm_tls_cipher_pending(rgm_tls_t *t)
{
    return BIO_ctrl_pending(t->wbio);
}

size_t rgm_tls_take_cipher_into(rgm_tls_t *t, char *out, size_t cap)
{
    const size_t n = BIO_ctrl_pending(t->wbio);
    int got;

    if (n == 0 || cap == 0)
        return 0;
    got = BIO_read(t->wbio, out, (int)(n < cap ? n : cap));
    return got > 0 ? (size_t)got : 0;
}

size_t rgm_tls_take_cipher(rgm_tls_t *t, char **out)
{
    size_t n = BIO_ctrl_pending(t->wbio);
    size_t got;

    *out = NULL;
    if (n == 0)
        return 0;
    *out = rgm_malloc(n);
    got = rgm_tls_take_cipher_into(t, *out, n);
    if (got == 0)
        RGM_FREE(*out);
    return got;
}

void rgm_tls_close_notify(rgm_tls_t *t)
{
    ERR_clear_error();
    if (t->is_done && SSL_shutdown(t->ssl) < 0)
        ERR_clear_error(); /* the peer may be gone already: nothing to do */
}

void rgm_tls_peer_subject(const rgm_tls_t *t, char *out, size_t outlen)
{
    X509 *peer = SSL_get1_peer_certificate(t->ssl);

    snprintf(out, outlen, "-");
    if (!peer)
        return;
    if (!X509_NAME_oneline(X509_get_subject_name(peer), out, (int)outlen))
        snprintf(out, outlen, "?");
    X509_free(peer);
}

const char *rgm_tls_version(const rgm_tls_t *t)
{
    return SSL_get_version(t->ssl);
}

const char *rgm_tls_cipher(const rgm_tls_t *t)
{
    const char *c = SSL_get_cipher_name(t->ssl);

    return c ? c : "-";
}
