/* Unit tests for src/cluster/rendezvous.c: canonical peer URLs (good and bad), known score
 * vectors computed outside this code, scores against a one-shot OpenSSL digest, ranking, tag
 * keys, and the property that adding or removing a replica moves only that replica's keys. */
#include "cluster/rendezvous.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/evp.h>
#include <uv.h>

#include "tap.h"

static void test_canon(void)
{
    static const struct {
        const char *in;
        int rc;
        const char *want;
    } t[] = {
        {"http://127.0.0.1:5000", 0, "http://127.0.0.1:5000"},
        {"http://127.0.0.1:5000/", 0, "http://127.0.0.1:5000"},
        {"HTTP://Node-A.Example:5000", 0, "http://node-a.example:5000"},
        {"http://node-a", 0, "http://node-a:80"},
        {"https://node-a", 0, "https://node-a:443"},
        {"HTTPS://NODE-A/", 0, "https://node-a:443"},
        {"http://[::1]:5000", 0, "http://[::1]:5000"},
        {"http://[0:0:0:0:0:0:0:1]:5000", 0, "http://[::1]:5000"},
        {"http://[FD00::0002]", 0, "http://[fd00::2]:80"},
        {"http://[2001:DB8:0:0:1:0:0:1]:1", 0, "http://[2001:db8::1:0:0:1]:1"},
        {"http://10.0.0.1:65535", 0, "http://10.0.0.1:65535"},
        {"http://regmirror-0.regmirror.default.svc:5000", 0,
         "http://regmirror-0.regmirror.default.svc:5000"},
        {"", UV_EINVAL, NULL},
        {"127.0.0.1:5000", UV_EINVAL, NULL},
        {"ftp://node-a:21", UV_EINVAL, NULL},
        {"http://", UV_EINVAL, NULL},
        {"http://node-a:0", UV_EINVAL, NULL},
        {"http://node-a:65536", UV_EINVAL, NULL},
        {"http://node-a:5000/v2", UV_EINVAL, NULL},
        {"http://node-a:5000//", UV_EINVAL, NULL},
        {"http://node-a:5000?x=1", UV_EINVAL, NULL},
        {"http://node-a:5000/?x=1", UV_EINVAL, NULL},
        {"http://node-a:5000#frag", UV_EINVAL, NULL},
        {"http://user:pw@node-a:5000", UV_EINVAL, NULL},
        {"http://::1:5000", UV_EINVAL, NULL},
        {"http://[::1%lo]:5000", UV_EINVAL, NULL},
        {"http://[::g]:5000", UV_EINVAL, NULL},
        {"http://[::1]x:5000", UV_EINVAL, NULL},
        {"http://node a:5000", UV_EINVAL, NULL},
        {"http://node-a:50a0", UV_EINVAL, NULL},
    };
    char out[RGM_PEER_URL_MAX];
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(t); i++) {
        int rc = rgm_peer_url_canon(t[i].in, out, sizeof(out));
        is_int(rc, t[i].rc, "canon \"%s\" -> %d", t[i].in, t[i].rc);
        if (t[i].rc == 0 && rc == 0)
            is_str(out, t[i].want, "canon \"%s\" = %s", t[i].in, t[i].want);
    }
    is_int(rgm_peer_url_canon(NULL, out, sizeof(out)), UV_EINVAL, "canon NULL");
    is_int(rgm_peer_url_canon("http://node-a:5000", out, 18), UV_ENOBUFS,
           "canon into a short buffer: ENOBUFS");
    is_int(rgm_peer_url_canon("http://node-a:5000", out, 19), 0, "canon into an exact buffer");
}

static void test_from_addr(void)
{
    struct sockaddr_in in4;
    struct sockaddr_in6 in6;
    struct sockaddr sa;
    char out[RGM_PEER_URL_MAX];

    ok(uv_ip4_addr("10.1.2.3", 0, &in4) == 0, "ip4 addr");
    ok(uv_ip6_addr("fd00:0::5", 0, &in6) == 0, "ip6 addr");
    is_int(rgm_peer_url_from_addr(0, (struct sockaddr *)&in4, 5000, out, sizeof(out)), 0, "v4");
    is_str(out, "http://10.1.2.3:5000", "v4 URL");
    is_int(rgm_peer_url_from_addr(1, (struct sockaddr *)&in6, 443, out, sizeof(out)), 0, "v6");
    is_str(out, "https://[fd00::5]:443", "v6 URL in brackets, RFC 5952");
    is_int(rgm_peer_url_from_addr(0, (struct sockaddr *)&in4, 0, out, sizeof(out)), UV_EINVAL,
           "port 0 refused");
    is_int(rgm_peer_url_from_addr(0, (struct sockaddr *)&in4, 65536, out, sizeof(out)), UV_EINVAL,
           "port 65536 refused");
    memset(&sa, 0, sizeof(sa));
    sa.sa_family = AF_UNIX;
    is_int(rgm_peer_url_from_addr(0, &sa, 5000, out, sizeof(out)), UV_EINVAL, "AF_UNIX refused");
    is_int(rgm_peer_url_from_addr(0, NULL, 5000, out, sizeof(out)), UV_EINVAL, "NULL refused");
    is_int(rgm_peer_url_from_addr(0, (struct sockaddr *)&in4, 5000, out, 10), UV_ENOBUFS,
           "short buffer");
}

/* Generated outside this code base, with Python's hashlib:
 *   def score(k, u):
 *       return int.from_bytes(hashlib.sha256((k + "\n" + u).encode()).digest()[:8], "big")
 * so that the C code is checked against an independent implementation of the contract. */
static const struct {
    const char *key;
    const char *url;
    uint64_t score;
} vectors[] = {
    {"sha256:0000000000000000000000000000000000000000000000000000000000000000",
     "http://127.0.0.1:5001", 0x54aa6adc911a3365ULL},
    {"sha256:0000000000000000000000000000000000000000000000000000000000000000",
     "http://127.0.0.1:5002", 0x08a368213f285abeULL},
    {"sha256:0000000000000000000000000000000000000000000000000000000000000000",
     "http://127.0.0.1:5003", 0xe9e35a5163941306ULL},
    {"sha256:0000000000000000000000000000000000000000000000000000000000000000", "http://[::1]:5000",
     0x426d0ced1b6a212bULL},
    {"sha256:0000000000000000000000000000000000000000000000000000000000000000",
     "https://regmirror-0.regmirror:443", 0x03f30b229c9d30acULL},
    {"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "http://127.0.0.1:5001", 0x55949a88fa3ca93cULL},
    {"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "http://127.0.0.1:5002", 0x90a9d55f1464f4baULL},
    {"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "http://127.0.0.1:5003", 0x3caa3ded6a36cd2eULL},
    {"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", "http://[::1]:5000",
     0xba106be52bb55e66ULL},
    {"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
     "https://regmirror-0.regmirror:443", 0x5f6b4f9b6c7104f7ULL},
    {"docker.io/library/alpine:3.19", "http://127.0.0.1:5001", 0xcea5f79983d7df61ULL},
    {"docker.io/library/alpine:3.19", "http://127.0.0.1:5002", 0x95826f6dfff44740ULL},
    {"docker.io/library/alpine:3.19", "http://127.0.0.1:5003", 0x69efa75e306632b0ULL},
    {"docker.io/library/alpine:3.19", "http://[::1]:5000", 0x22f3a95b7ade5e94ULL},
    {"docker.io/library/alpine:3.19", "https://regmirror-0.regmirror:443", 0xd260aa91554dc32dULL},
    {"", "http://127.0.0.1:5001", 0xadf62e5c6e749977ULL},
    {"", "http://127.0.0.1:5002", 0x3596a86209f78007ULL},
    {"", "http://127.0.0.1:5003", 0x16a4769bb13b2dd1ULL},
    {"", "http://[::1]:5000", 0x55177215967004faULL},
    {"", "https://regmirror-0.regmirror:443", 0xf8e1af0afe10247fULL},
};

static void test_vectors(void)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(vectors); i++) {
        uint64_t s = rgm_rendezvous_score(vectors[i].key, strlen(vectors[i].key), vectors[i].url);
        ok(s == vectors[i].score, "score(\"%.20s\", %s) = %016llx (got %016llx)", vectors[i].key,
           vectors[i].url, (unsigned long long)vectors[i].score, (unsigned long long)s);
    }
}

/* The same contract through OpenSSL's one-shot EVP_Digest over one concatenated buffer. */
static uint64_t oneshot_score(const char *key, const char *url)
{
    char buf[512];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    uint64_t v = 0;
    int n = snprintf(buf, sizeof(buf), "%s\n%s", key, url), i;

    if (n < 0 || (size_t)n >= sizeof(buf) ||
        EVP_Digest(buf, (size_t)n, md, &md_len, EVP_sha256(), NULL) != 1)
        return 0;
    for (i = 0; i < 8; i++)
        v = (v << 8) | md[i];
    return v;
}

/* Key number i: "sha256:" + hex of SHA-256 of the decimal i, like a real digest. */
static void make_key(unsigned i, char *out, size_t outlen)
{
    char num[16];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    static const char hexd[] = "0123456789abcdef";
    unsigned j;
    int n = snprintf(num, sizeof(num), "%u", i);

    (void)EVP_Digest(num, (size_t)n, md, &md_len, EVP_sha256(), NULL);
    (void)snprintf(out, outlen, "sha256:");
    for (j = 0; j < 32 && 7 + 2 * j + 2 < outlen; j++) {
        out[7 + 2 * j] = hexd[md[j] >> 4];
        out[7 + 2 * j + 1] = hexd[md[j] & 15];
    }
    out[7 + 64] = '\0';
}

static void test_oneshot(void)
{
    static const char *const urls[] = {"http://10.0.0.1:5000", "https://[fd00::1]:443",
                                       "http://regmirror-2.regmirror:5000"};
    char key[80];
    unsigned i, bad = 0;
    size_t u;

    for (i = 0; i < 300; i++) {
        make_key(i, key, sizeof(key));
        for (u = 0; u < RGM_ARRAY_SIZE(urls); u++) {
            if (rgm_rendezvous_score(key, strlen(key), urls[u]) != oneshot_score(key, urls[u]))
                bad++;
        }
    }
    is_int(bad, 0, "900 scores agree with a one-shot EVP_Digest of key \"\\n\" url");
    /* key_len is honoured: the key is not read up to a NUL. */
    ok(rgm_rendezvous_score("abcXYZ", 3, "http://a:1") == oneshot_score("abc", "http://a:1"),
       "key_len bytes only");
}

static void test_rank(void)
{
    static const char *const urls[] = {"http://127.0.0.1:5001", "http://127.0.0.1:5002",
                                       "http://127.0.0.1:5003"};
    const char *k0 = vectors[0].key, *k1 = vectors[5].key;
    rgm_rdv_rank_t r[3];

    /* From the vectors: k0 scores 5003 > 5001 > 5002; k1 scores 5002 > 5001 > 5003. */
    rgm_rendezvous_rank(k0, strlen(k0), urls, 3, r);
    ok(r[0].idx == 2 && r[1].idx == 0 && r[2].idx == 1, "k0: 5003, 5001, 5002");
    ok(r[0].score == 0xe9e35a5163941306ULL, "rank carries the score");
    rgm_rendezvous_rank(k1, strlen(k1), urls, 3, r);
    ok(r[0].idx == 1 && r[1].idx == 0 && r[2].idx == 2, "k1: 5002, 5001, 5003");
    rgm_rendezvous_rank(k1, strlen(k1), urls + 1, 2, r);
    ok(r[0].idx == 0 && r[1].idx == 1, "k1 without 5001: 5002, 5003 (order kept)");
    rgm_rendezvous_rank(k1, strlen(k1), urls, 0, r);
    ok(1, "rank of no peers does nothing");
}

static void test_tag_key(void)
{
    char out[64];

    is_int(rgm_rendezvous_tag_key("Docker.IO", "library/Alpine", "3.19", out, sizeof(out)), 0,
           "tag key");
    is_str(out, "docker.io/library/Alpine:3.19", "registry lowercased, the rest as given");
    is_int(rgm_rendezvous_tag_key("", "a", "b", out, sizeof(out)), UV_EINVAL, "empty registry");
    is_int(rgm_rendezvous_tag_key("r", "", "b", out, sizeof(out)), UV_EINVAL, "empty repository");
    is_int(rgm_rendezvous_tag_key("r", "a", "", out, sizeof(out)), UV_EINVAL, "empty tag");
    is_int(rgm_rendezvous_tag_key(NULL, "a", "b", out, sizeof(out)), UV_EINVAL, "NULL registry");
    is_int(rgm_rendezvous_tag_key("r", "a", "b", out, 5), UV_ENOBUFS, "short buffer (needs 6)");
    is_int(rgm_rendezvous_tag_key("r", "a", "b", out, 6), 0, "exact buffer");
}

#define N_KEYS 2000

/* Owner index of key among urls[0..n). */
static size_t owner_of(const char *key, const char *const *urls, size_t n)
{
    rgm_rdv_rank_t r[8];

    rgm_rendezvous_rank(key, strlen(key), urls, n, r);
    return r[0].idx;
}

/* Adding a replica moves only the keys the new one now owns; removing one moves only the
 * removed one's keys, each to its second choice; and the shares are near 1/n. */
static void test_stability(void)
{
    static const char *const urls[] = {"http://10.0.0.1:5000", "http://10.0.0.2:5000",
                                       "http://10.0.0.3:5000", "http://10.0.0.4:5000"};
    static char keys[N_KEYS][80];
    unsigned i, moved_wrong = 0, moved = 0, kept_wrong = 0, removed_wrong = 0;
    unsigned share[4] = {0, 0, 0, 0};

    for (i = 0; i < N_KEYS; i++)
        make_key(i, keys[i], sizeof(keys[i]));
    for (i = 0; i < N_KEYS; i++) {
        size_t before = owner_of(keys[i], urls, 3), after = owner_of(keys[i], urls, 4);
        share[after]++;
        if (before != after) {
            moved++;
            if (after != 3)
                moved_wrong++;
        }
    }
    is_int(moved_wrong, 0, "3 -> 4 replicas: every key that moved went to the new replica");
    is_int(moved, share[3], "3 -> 4 replicas: the new replica's keys are exactly those moved");
    for (i = 0; i < 4; i++)
        ok(share[i] > N_KEYS / 4 * 8 / 10 && share[i] < N_KEYS / 4 * 12 / 10,
           "replica %u owns %u of %d keys (within 20%% of 1/4)", i, share[i], N_KEYS);
    for (i = 0; i < N_KEYS; i++) {
        /* Remove replica 0 from the four: the others keep theirs; replica 0's keys go to the
         * peer ranked second among the four. */
        rgm_rdv_rank_t r[4];
        size_t after;

        rgm_rendezvous_rank(keys[i], strlen(keys[i]), urls, 4, r);
        after = owner_of(keys[i], urls + 1, 3) + 1;
        if (r[0].idx != 0 && after != r[0].idx)
            kept_wrong++;
        if (r[0].idx == 0 && after != r[1].idx)
            removed_wrong++;
    }
    is_int(kept_wrong, 0, "removing a replica: the others keep every key they owned");
    is_int(removed_wrong, 0, "removing a replica: its keys go to their second choice");
}

int main(void)
{
    test_canon();
    test_from_addr();
    test_vectors();
    test_oneshot();
    test_rank();
    test_tag_key();
    test_stability();
    return tap_done();
}
