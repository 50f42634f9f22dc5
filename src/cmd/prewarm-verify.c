/* regmirror prewarm, verification: the bytes the mirror sent against what the client already
 * knew. A manifest is checked whole (the index's size, the pinned digest, the mirror's
 * Docker-Content-Digest); a blob is hashed as it streams and checked at its end. The sizes of
 * a blob (Content-Length, bytes counted) are prewarm-run.c's, which has them at hand. */
#include "config.h"

#include "cmd/prewarm-int.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>
#include <openssl/evp.h>

#include "core/common.h"
#include "core/util.h"
#include "registry/reference.h"

static int is_sha512(const char *digest)
{
    return digest && strncmp(digest, "sha512:", 7) == 0;
}

/* "algo:hex" of data with the algorithm of like_digest ("sha256:..." or "sha512:..."). */
static int digest_of(const char *like_digest, const void *data, size_t len, char *out,
                     size_t outlen)
{
    const EVP_MD *md = EVP_sha256();
    const char *algo = "sha256";
    unsigned char h[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned hlen = 0;

    if (is_sha512(like_digest)) {
        md = EVP_sha512();
        algo = "sha512";
    }
    if (EVP_Digest(data, len, h, &hlen, md, NULL) != 1)
        return UV_EIO;
    rgm_hex(h, hlen, hex);
    if (snprintf(out, outlen, "%s:%s", algo, hex) >= (int)outlen)
        return UV_ENOBUFS;
    return 0;
}

int rgm_prewarm_verify_manifest(const char *body, size_t len, const char *want, int64_t want_size,
                                const char *dcd, char *digest, size_t digest_len, char *err,
                                size_t err_len)
{
    char got[RGM_REF_DIGEST_MAX + 1];
    int is_dcd = dcd && rgm_ref_valid_digest(dcd);

    got[0] = '\0';
    err[0] = '\0';
    if (!body)
        body = "";
    if (want_size >= 0 && (uint64_t)want_size != len) {
        (void)snprintf(err, err_len, "%zu bytes, the index says %" PRId64, len, want_size);
        return UV_EINVAL;
    }
    if (want[0]) {
        if (digest_of(want, body, len, got, sizeof(got)) < 0 || strcmp(got, want) != 0) {
            (void)snprintf(err, err_len, "digest mismatch: got %s", got);
            return UV_EINVAL;
        }
    }
    if (is_dcd) {
        if (digest_of(dcd, body, len, got, sizeof(got)) < 0 || strcmp(got, dcd) != 0) {
            (void)snprintf(err, err_len,
                           "digest mismatch: body is %s, Docker-Content-Digest says %s", got, dcd);
            return UV_EINVAL;
        }
    } else if (!want[0] && digest_of(NULL, body, len, got, sizeof(got)) < 0) {
        return UV_EIO;
    }
    (void)snprintf(digest, digest_len, "%s", want[0] ? want : (is_dcd ? dcd : got));
    return 0;
}

EVP_MD_CTX *rgm_prewarm_verify_blob_start(const char *digest)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();

    if (!md)
        return NULL;
    if (EVP_DigestInit_ex(md, is_sha512(digest) ? EVP_sha512() : EVP_sha256(), NULL) != 1) {
        EVP_MD_CTX_free(md);
        return NULL;
    }
    return md;
}

int rgm_prewarm_verify_blob_end(EVP_MD_CTX *md, const char *digest, char *err, size_t err_len)
{
    unsigned char h[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    const char *colon = strchr(digest, ':');
    unsigned hlen = 0;

    if (!md || EVP_DigestFinal_ex(md, h, &hlen) != 1) {
        (void)snprintf(err, err_len, "cannot hash");
        return UV_EIO;
    }
    rgm_hex(h, hlen, hex);
    if (!colon || strcmp(colon + 1, hex) != 0) {
        (void)snprintf(err, err_len, "digest mismatch: the bytes hash to %s:%s",
                       is_sha512(digest) ? "sha512" : "sha256", hex);
        return UV_EINVAL;
    }
    return 0;
}
