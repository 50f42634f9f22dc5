/* Unit tests for src/cmd/prewarm-verify.c: a manifest's bytes against the index's size, the
 * pinned digest and Docker-Content-Digest; a streamed blob against its digest. */
#include "cmd/prewarm-int.h"

#include <string.h>

#include <uv.h>
#include <openssl/evp.h>

#include "tap.h"

#define BODY     "{}"
#define BODY_256 "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define BODY_512                                                                                   \
    "sha512:27c74670adb75075fad058d5ceaf7b20c4e7786c83bae8a32f626f9782af34c9a33c2046ef60fd2a7878d" \
    "378e29fec851806bbd9a67878f3a9f1cda4830763fd"
#define EMPTY_256 "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define HELLO_256 "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define HELLO_512                                                                                  \
    "sha512:9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca72323c3d99ba5c11d7c7ac" \
    "c6e14b8c5da0c4663475c2e5c3adef46f73bcdec043"

static char digest[RGM_REF_DIGEST_MAX + 1], err[512];

static int verify(const char *want, int64_t want_size, const char *dcd)
{
    digest[0] = '\0';
    return rgm_prewarm_verify_manifest(BODY, 2, want, want_size, dcd, digest, sizeof(digest), err,
                                       sizeof(err));
}

static void test_manifest(void)
{
    is_int(verify("", -1, NULL), 0, "a tag, no Docker-Content-Digest");
    is_str(digest, BODY_256, "the digest is the sha256 of the bytes");
    is_int(verify(BODY_256, -1, NULL), 0, "pinned sha256");
    is_str(digest, BODY_256, "the pinned digest");
    is_int(verify(BODY_512, -1, NULL), 0, "pinned sha512");
    is_str(digest, BODY_512, "a sha512 pin stays sha512");
    is_int(verify(EMPTY_256, -1, NULL), UV_EINVAL, "pinned digest of other bytes");
    is_str(err, "digest mismatch: got " BODY_256, "the reason says what the bytes hash to");
    is_int(verify("", -1, BODY_256), 0, "Docker-Content-Digest that matches");
    is_str(digest, BODY_256, "its digest");
    is_int(verify("", -1, BODY_512), 0, "a sha512 Docker-Content-Digest");
    is_str(digest, BODY_512, "is taken as it is");
    is_int(verify("", -1, EMPTY_256), UV_EINVAL, "Docker-Content-Digest of other bytes");
    is_str(err, "digest mismatch: body is " BODY_256 ", Docker-Content-Digest says " EMPTY_256,
           "the reason names both");
    is_int(verify(BODY_256, -1, EMPTY_256), UV_EINVAL, "pin right, Docker-Content-Digest wrong");
    is_int(verify("", -1, "garbage"), 0, "a Docker-Content-Digest that is no digest is ignored");
    is_str(digest, BODY_256, "then the bytes' sha256");
    is_int(verify(BODY_256, 2, NULL), 0, "the index's size matches");
    is_int(verify(BODY_256, 3, NULL), UV_EINVAL, "the index's size differs");
    is_str(err, "2 bytes, the index says 3", "the size reason");
    is_int(verify(BODY_256, 0, NULL), UV_EINVAL, "an index size of 0 is a size too");
    is_int(rgm_prewarm_verify_manifest(NULL, 0, "", -1, NULL, digest, sizeof(digest), err,
                                       sizeof(err)),
           0, "no body at all");
    is_str(digest, EMPTY_256, "the digest of no bytes");
}

/* Hash data in two pieces as a stream would, then check it against want. */
static int blob(const char *hash_as, const char *data, const char *want)
{
    EVP_MD_CTX *md = rgm_prewarm_verify_blob_start(hash_as);
    size_t len = strlen(data);
    int r;

    if (!md)
        return -1000;
    if (EVP_DigestUpdate(md, data, len / 2) != 1 ||
        EVP_DigestUpdate(md, data + len / 2, len - len / 2) != 1) {
        EVP_MD_CTX_free(md);
        return -1001;
    }
    r = rgm_prewarm_verify_blob_end(md, want, err, sizeof(err));
    EVP_MD_CTX_free(md);
    return r;
}

static void test_blob(void)
{
    is_int(blob(HELLO_256, "hello", HELLO_256), 0, "sha256 blob verified");
    is_int(blob(HELLO_512, "hello", HELLO_512), 0, "sha512 blob verified");
    is_int(blob(HELLO_256, "hellO", HELLO_256), UV_EINVAL, "other bytes");
    ok(strncmp(err, "digest mismatch: the bytes hash to sha256:", 42) == 0 &&
           strlen(err) == 42 + 64,
       "the reason gives the bytes' digest (%s)", err);
    is_int(blob(HELLO_512, "hellO", HELLO_512), UV_EINVAL, "other bytes, sha512");
    ok(strncmp(err, "digest mismatch: the bytes hash to sha512:", 42) == 0,
       "sha512 named in the reason");
    is_int(blob(HELLO_256, "", EMPTY_256), 0, "an empty blob");
    is_int(blob(HELLO_256, "hello", "nocolon"), UV_EINVAL, "a digest without ':'");
    is_int(rgm_prewarm_verify_blob_end(NULL, HELLO_256, err, sizeof(err)), UV_EIO, "no hash");
    is_str(err, "cannot hash", "its reason");
}

int main(void)
{
    test_manifest();
    test_blob();
    return tap_done();
}
