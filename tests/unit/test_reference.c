/* Unit tests for src/registry/reference.c: name/tag/digest grammar, /v2 paths, registry
 * prefixes, docker.io normalisation and image references. */
#include "registry/reference.h"

#include <uv.h>

#include "tap.h"

#define SHA256_HEX "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define D256       "sha256:" SHA256_HEX
#define D512                                                                                       \
    "sha512:"                                                                                      \
    "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318"       \
    "d2877eec2f63b931bd47417a81a538327af927da3e"

static char *repeat(char *buf, char c, size_t n)
{
    memset(buf, c, n);
    buf[n] = '\0';
    return buf;
}

static void test_names(void)
{
    static const char *good[] = {"a",
                                 "library/nginx",
                                 "a/b/c/d",
                                 "a.b",
                                 "a_b",
                                 "a__b",
                                 "a-b",
                                 "a---b",
                                 "0",
                                 "a0/b1.c2",
                                 "ghcr.io/org/app",
                                 "foo/manifests/bar"};
    static const char *bad[] = {"",     "A",      "Nginx", "a//b",  "/a",  "a/",   "a___b",
                                "-a",   "a-",     ".a",    "a.",    "_a",  "a..b", "a._b",
                                "../x", "a/../b", "a b",   "a%2fb", "a:b", "a@b",  "ä"};
    char buf[300];
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(good); i++)
        is_int(rgm_ref_valid_name(good[i]), 1, "name '%s' valid", good[i]);
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++)
        is_int(rgm_ref_valid_name(bad[i]), 0, "name '%s' invalid", bad[i]);
    is_int(rgm_ref_valid_name(NULL), 0, "NULL name invalid");
    is_int(rgm_ref_valid_name(repeat(buf, 'a', 255)), 1, "255-char name valid");
    is_int(rgm_ref_valid_name(repeat(buf, 'a', 256)), 0, "256-char name invalid");
    is_int(rgm_ref_valid_name_n("abc/def", 3), 1, "valid_name_n looks at len bytes only");
    is_int(rgm_ref_valid_name_n("abc/", 4), 0, "valid_name_n trailing slash");
}

static void test_tags(void)
{
    static const char *good[] = {"latest", "v1.2.3", "_x", "A", "3.5", "a-b_c.D", "0"};
    static const char *bad[] = {"", ".x", "-x", "a:b", "a/b", "a b", "a%20", "a@b", "ä"};
    char buf[200];
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(good); i++)
        is_int(rgm_ref_valid_tag(good[i]), 1, "tag '%s' valid", good[i]);
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++)
        is_int(rgm_ref_valid_tag(bad[i]), 0, "tag '%s' invalid", bad[i]);
    is_int(rgm_ref_valid_tag(repeat(buf, 'x', 128)), 1, "128-char tag valid");
    is_int(rgm_ref_valid_tag(repeat(buf, 'x', 129)), 0, "129-char tag invalid");
}

static void test_digests(void)
{
    static const char *bad[] = {
        "",
        "sha256:",
        "sha256:totallywrong",
        "../x",
        "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85",
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8555",
        "sha384:" SHA256_HEX,
        "md5:d41d8cd98f00b204e9800998ecf8427e",
        "SHA256:" SHA256_HEX,
        "sha256:" SHA256_HEX "/../x",
        "sha512:" SHA256_HEX,
        "sha256:g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        " " D256,
    };
    size_t i;

    is_int(rgm_ref_valid_digest(D256), 1, "sha256 digest valid");
    is_int(rgm_ref_valid_digest(D512), 1, "sha512 digest valid");
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++)
        is_int(rgm_ref_valid_digest(bad[i]), 0, "digest '%s' invalid", bad[i]);
    is_int(rgm_ref_valid_digest(NULL), 0, "NULL digest invalid");
}

static void test_hosts(void)
{
    is_int(rgm_ref_valid_host("docker.io"), 1, "host docker.io");
    is_int(rgm_ref_valid_host("localhost:5000"), 1, "host localhost:5000");
    is_int(rgm_ref_valid_host("[::1]:5000"), 1, "host [::1]:5000");
    is_int(rgm_ref_valid_host("Registry.Example.COM"), 1, "host mixed case");
    is_int(rgm_ref_valid_host("a:"), 0, "host empty port");
    is_int(rgm_ref_valid_host("a:123456"), 0, "host 6-digit port");
    is_int(rgm_ref_valid_host("a_b.io"), 0, "host with '_'");
    is_int(rgm_ref_valid_host(".io"), 0, "host starting with '.'");
    is_int(rgm_ref_valid_host(""), 0, "empty host");
}

struct path_case {
    const char *path;
    int err;
    rgm_ref_route_t kind;
    const char *name;
    const char *reference;
    int is_digest;
};

static void test_paths(void)
{
    static const struct path_case cases[] = {
        {"/v2/", 0, RGM_REF_ROUTE_ROOT, "", "", 0},
        {"/v2", 0, RGM_REF_ROUTE_ROOT, "", "", 0},
        {"/v2/?x=1", 0, RGM_REF_ROUTE_ROOT, "", "", 0},
        {"/v2/library/nginx/manifests/latest", 0, RGM_REF_ROUTE_MANIFEST, "library/nginx", "latest",
         0},
        {"/v2/library/nginx/manifests/latest?ns=docker.io", 0, RGM_REF_ROUTE_MANIFEST,
         "library/nginx", "latest", 0},
        {"/v2/a/b/c/d/manifests/" D256, 0, RGM_REF_ROUTE_MANIFEST, "a/b/c/d", D256, 1},
        {"/v2/a/blobs/" D256, 0, RGM_REF_ROUTE_BLOB, "a", D256, 1},
        {"/v2/a/b/blobs/" D512, 0, RGM_REF_ROUTE_BLOB, "a/b", D512, 1},
        {"/v2/org/app/tags/list", 0, RGM_REF_ROUTE_TAGS, "org/app", "", 0},
        {"/v2/org/app/tags/list?n=10", 0, RGM_REF_ROUTE_TAGS, "org/app", "", 0},
        {"/v2/foo/manifests/bar/manifests/v1", 0, RGM_REF_ROUTE_MANIFEST, "foo/manifests/bar", "v1",
         0},
        {"/v2/foo/blobs/x/manifests/v1", 0, RGM_REF_ROUTE_MANIFEST, "foo/blobs/x", "v1", 0},
        /* OCI 1.1 referrers: a digest only; the query is not the parser's */
        {"/v2/a/referrers/" D256, 0, RGM_REF_ROUTE_REFERRERS, "a", D256, 1},
        {"/v2/a/b/referrers/" D512, 0, RGM_REF_ROUTE_REFERRERS, "a/b", D512, 1},
        {"/v2/a/referrers/" D256 "?artifactType=application/vnd.x", 0, RGM_REF_ROUTE_REFERRERS, "a",
         D256, 1},
        {"/v2/foo/referrers/manifests/v1", 0, RGM_REF_ROUTE_MANIFEST, "foo/referrers", "v1", 0},
        {"/v2/foo/manifests/referrers/" D256, 0, RGM_REF_ROUTE_REFERRERS, "foo/manifests", D256, 1},
        /* unknown routes */
        {"/", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v1/", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2x", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2/_catalog", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2/a/b", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2/a/blobs/uploads/", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2/a/tags/list/", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2/a/referrers", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"/v2/referrers/" D256, RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        {"v2/a/manifests/x", RGM_REF_EROUTE, RGM_REF_ROUTE_UNKNOWN, "", "", 0},
        /* bad parts */
        {"/v2/Library/nginx/manifests/latest", RGM_REF_ENAME, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a//b/manifests/latest", RGM_REF_ENAME, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2//manifests/latest", RGM_REF_ENAME, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/../x/manifests/latest", RGM_REF_ENAME, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a%2fb/manifests/latest", RGM_REF_ENAME, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/localhost:5000/a/manifests/latest", RGM_REF_ENAME, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/manifests/"
         "sha256:totallywrong",
         RGM_REF_EDIGEST, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/manifests/md5:abc", RGM_REF_EDIGEST, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/blobs/latest", RGM_REF_EDIGEST, RGM_REF_ROUTE_BLOB, "", "", 0},
        {"/v2/a/blobs/..", RGM_REF_EDIGEST, RGM_REF_ROUTE_BLOB, "", "", 0},
        {"/v2/a/blobs/sha256%3A" SHA256_HEX, RGM_REF_EDIGEST, RGM_REF_ROUTE_BLOB, "", "", 0},
        {"/v2/a/manifests/", RGM_REF_ETAG, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/manifests/.hidden", RGM_REF_ETAG, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/manifests/a%20b", RGM_REF_ETAG, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/manifests/.INVALID_MANIFEST_NAME", RGM_REF_ETAG, RGM_REF_ROUTE_MANIFEST, "", "", 0},
        {"/v2/a/referrers/latest", RGM_REF_EDIGEST, RGM_REF_ROUTE_REFERRERS, "", "", 0},
        {"/v2/a/referrers/", RGM_REF_EDIGEST, RGM_REF_ROUTE_REFERRERS, "", "", 0},
        {"/v2/a/referrers/sha256:" SHA256_HEX "0", RGM_REF_EDIGEST, RGM_REF_ROUTE_REFERRERS, "", "",
         0},
        {"/v2/a/referrers/sha256%3A" SHA256_HEX, RGM_REF_EDIGEST, RGM_REF_ROUTE_REFERRERS, "", "",
         0},
        {"/v2/A/referrers/" D256, RGM_REF_ENAME, RGM_REF_ROUTE_REFERRERS, "", "", 0},
    };
    rgm_ref_path_t p;
    size_t i;
    int err;

    for (i = 0; i < RGM_ARRAY_SIZE(cases); i++) {
        const struct path_case *c = &cases[i];

        err = rgm_ref_parse_path(c->path, &p);
        is_int(err, c->err, "path %s: result", c->path);
        is_int(p.kind, c->kind, "path %s: kind", c->path);
        is_str(p.name, c->name, "path %s: name", c->path);
        is_str(p.reference, c->reference, "path %s: reference", c->path);
        is_int(p.is_digest, c->is_digest, "path %s: is_digest", c->path);
        is_str(p.registry, "", "path %s: no registry without callback", c->path);
    }

    {
        char longpath[600];
        char name[301];

        snprintf(longpath, sizeof(longpath), "/v2/%s/manifests/latest", repeat(name, 'a', 256));
        is_int(rgm_ref_parse_path(longpath, &p), RGM_REF_ENAME, "256-char name in path");
        snprintf(longpath, sizeof(longpath), "/v2/a/manifests/%s", repeat(name, 't', 129));
        is_int(rgm_ref_parse_path(longpath, &p), RGM_REF_ETAG, "129-char tag in path");
        snprintf(longpath, sizeof(longpath), "/v2/a/blobs/%s", repeat(name, 'b', 300));
        is_int(rgm_ref_parse_path(longpath, &p), RGM_REF_EDIGEST, "300-char digest in path");
    }
    is_int(rgm_ref_parse_path(NULL, &p), RGM_REF_EROUTE, "NULL path");

    is_str(rgm_ref_err_code(RGM_REF_ENAME), "NAME_INVALID", "code for ENAME");
    is_str(rgm_ref_err_code(RGM_REF_EDIGEST), "DIGEST_INVALID", "code for EDIGEST");
    /* OCI: an impossible tag names no manifest (404), TAG_INVALID is no spec code */
    is_str(rgm_ref_err_code(RGM_REF_ETAG), "MANIFEST_UNKNOWN", "code for ETAG");
    is_int(rgm_ref_err_status(RGM_REF_ETAG), 404, "status for ETAG");
    is_int(rgm_ref_err_status(RGM_REF_EDIGEST), 400, "status for EDIGEST");
    is_str(rgm_ref_err_code(RGM_REF_EROUTE), "UNSUPPORTED", "code for EROUTE (no NOT_FOUND in the spec)");
    is_int(rgm_ref_err_status(RGM_REF_ENAME), 400, "status for ENAME");
    is_int(rgm_ref_err_status(RGM_REF_EROUTE), 404, "status for EROUTE");
}

static int calls;

static int is_configured(void *ud, const char *host)
{
    const char *const *list = ud;

    calls++;
    for (; *list; list++) {
        if (strcmp(*list, host) == 0)
            return 1;
    }
    return 0;
}

static void test_prefix(void)
{
    static const char *const regs[] = {"ghcr.io", "localhost:5000", "localhost", "quay.io", NULL};
    char reg[256];
    const char *rest = NULL;
    rgm_ref_path_t p;

    is_int(rgm_ref_split_registry_prefix("ghcr.io/org/app", is_configured, (void *)regs, reg,
                                         sizeof(reg), &rest),
           1, "ghcr.io prefix split");
    is_str(reg, "ghcr.io", "registry ghcr.io");
    is_str(rest, "org/app", "rest org/app");

    is_int(rgm_ref_split_registry_prefix("localhost:5000/a/b", is_configured, (void *)regs, reg,
                                         sizeof(reg), &rest),
           1, "localhost:5000 prefix split");
    is_str(reg, "localhost:5000", "registry localhost:5000");
    is_str(rest, "a/b", "rest a/b");

    is_int(rgm_ref_split_registry_prefix("localhost/x", is_configured, (void *)regs, reg,
                                         sizeof(reg), &rest),
           1, "localhost prefix split");

    calls = 0;
    is_int(rgm_ref_split_registry_prefix("library/nginx", is_configured, (void *)regs, reg,
                                         sizeof(reg), &rest),
           0, "no host-like first component");
    is_int(calls, 0, "callback not asked for a plain component");
    is_str(rest, "library/nginx", "rest is the whole name");
    is_str(reg, "", "registry empty");

    is_int(rgm_ref_split_registry_prefix("example.com/a", is_configured, (void *)regs, reg,
                                         sizeof(reg), &rest),
           0, "unconfigured host not split");
    is_str(rest, "example.com/a", "unconfigured: rest is the whole name");
    is_int(rgm_ref_split_registry_prefix("ghcr.io", is_configured, (void *)regs, reg, sizeof(reg),
                                         &rest),
           0, "host without rest not split");
    is_int(rgm_ref_split_registry_prefix("ghcr.io/", is_configured, (void *)regs, reg, sizeof(reg),
                                         &rest),
           0, "host with empty rest not split");
    is_int(rgm_ref_split_registry_prefix("ghcr.io/a", NULL, NULL, reg, sizeof(reg), &rest), 0,
           "no callback, no split");

    is_int(
        rgm_ref_parse_path_ex("/v2/ghcr.io/org/app/manifests/v1", is_configured, (void *)regs, &p),
        0, "path with ghcr.io prefix");
    is_str(p.registry, "ghcr.io", "path prefix registry");
    is_str(p.name, "org/app", "path prefix name");
    is_str(p.reference, "v1", "path prefix reference");
    is_int(rgm_ref_parse_path_ex("/v2/localhost:5000/a/b/blobs/" D256, is_configured, (void *)regs,
                                 &p),
           0, "path with localhost:5000 prefix");
    is_str(p.registry, "localhost:5000", "path prefix registry with port");
    is_str(p.name, "a/b", "path prefix name a/b");
    is_int(p.kind, RGM_REF_ROUTE_BLOB, "path prefix blob");
    is_int(rgm_ref_parse_path_ex("/v2/ghcr.io/org/app/referrers/" D256 "?artifactType=a%2Fb",
                                 is_configured, (void *)regs, &p),
           0, "referrers with ghcr.io prefix");
    is_int(p.kind, RGM_REF_ROUTE_REFERRERS, "path prefix referrers");
    is_str(p.registry, "ghcr.io", "referrers: prefix registry");
    is_str(p.name, "org/app", "referrers: prefix name");
    is_str(p.reference, D256, "referrers: subject digest");
    is_int(
        rgm_ref_parse_path_ex("/v2/localhost:5000/A/manifests/v1", is_configured, (void *)regs, &p),
        RGM_REF_ENAME, "prefix split, rest invalid");
    is_str(p.registry, "", "registry cleared on error");
    is_int(
        rgm_ref_parse_path_ex("/v2/localhost:6000/a/manifests/v1", is_configured, (void *)regs, &p),
        RGM_REF_ENAME, "unconfigured host:port is an invalid name");
    is_int(rgm_ref_parse_path_ex("/v2/example.com/a/manifests/v1", is_configured, (void *)regs, &p),
           0, "unconfigured dotted host stays in the name");
    is_str(p.registry, "", "no registry for unconfigured host");
    is_str(p.name, "example.com/a", "name keeps the host");
    is_int(rgm_ref_parse_path_ex("/v2/ghcr.io/tags/list", is_configured, (void *)regs, &p), 0,
           "host-only name is not split");
    is_str(p.name, "ghcr.io", "host-only name");
}

static void test_normalize(void)
{
    char reg[256];
    char repo[256];
    char big[300];

    is_str(rgm_ref_normalize_registry("index.docker.io"), "docker.io", "index.docker.io");
    is_str(rgm_ref_normalize_registry("registry-1.docker.io"), "docker.io", "registry-1.docker.io");
    is_str(rgm_ref_normalize_registry("ghcr.io"), "ghcr.io", "ghcr.io unchanged");

    ok(rgm_ref_normalize_repo("docker.io", "nginx", reg, sizeof(reg), repo, sizeof(repo)) == 0,
       "normalize docker.io nginx");
    is_str(reg, "docker.io", "normalized registry");
    is_str(repo, "library/nginx", "library/ prepended");
    ok(rgm_ref_normalize_repo("index.docker.io", "org/app", reg, sizeof(reg), repo, sizeof(repo)) ==
           0,
       "normalize index.docker.io org/app");
    is_str(reg, "docker.io", "index.docker.io -> docker.io");
    is_str(repo, "org/app", "two components unchanged");
    ok(rgm_ref_normalize_repo("ghcr.io", "app", reg, sizeof(reg), repo, sizeof(repo)) == 0,
       "normalize ghcr.io app");
    is_str(repo, "app", "no library/ outside docker.io");
    is_int(rgm_ref_normalize_repo("docker.io", repeat(big, 'a', 250), reg, sizeof(reg), repo,
                                  sizeof(repo)),
           UV_ENOBUFS, "library/ pushing over 255 bytes");
    is_int(rgm_ref_normalize_repo("docker.io", "nginx", reg, 4, repo, sizeof(repo)), UV_ENOBUFS,
           "small registry buffer");
}

struct image_case {
    const char *in;
    const char *registry;
    const char *repository;
    const char *tag;
    const char *digest;
    const char *formatted;
};

static void test_images(void)
{
    static const struct image_case good[] = {
        {"nginx", "docker.io", "library/nginx", "latest", "", "docker.io/library/nginx:latest"},
        {"library/nginx", "docker.io", "library/nginx", "latest", "",
         "docker.io/library/nginx:latest"},
        {"docker.io/nginx", "docker.io", "library/nginx", "latest", "",
         "docker.io/library/nginx:latest"},
        {"index.docker.io/nginx", "docker.io", "library/nginx", "latest", "",
         "docker.io/library/nginx:latest"},
        {"registry-1.docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25", "",
         "docker.io/library/nginx:1.25"},
        {"registry.k8s.io/pause:3.5", "registry.k8s.io", "pause", "3.5", "",
         "registry.k8s.io/pause:3.5"},
        {"localhost:5000/a/b", "localhost:5000", "a/b", "latest", "", "localhost:5000/a/b:latest"},
        {"localhost/a", "localhost", "a", "latest", "", "localhost/a:latest"},
        {"a/b/c:tag", "docker.io", "a/b/c", "tag", "", "docker.io/a/b/c:tag"},
        {"GHCR.IO/org/app:V1", "ghcr.io", "org/app", "V1", "", "ghcr.io/org/app:V1"},
        {"nginx@" D256, "docker.io", "library/nginx", "", D256, "docker.io/library/nginx@" D256},
        {"nginx:1.25@" D256, "docker.io", "library/nginx", "1.25", D256,
         "docker.io/library/nginx:1.25@" D256},
        {"localhost:5000/a@" D512, "localhost:5000", "a", "", D512, "localhost:5000/a@" D512},
        {"localhost:5000", "docker.io", "library/localhost", "5000", "",
         "docker.io/library/localhost:5000"},
    };
    static const struct {
        const char *in;
        const char *why;
    } bad[] = {
        {"", "empty image reference"},
        {"Nginx", "uppercase letters in repository name"},
        {"docker.io/Library/nginx", "uppercase letters in repository name"},
        {"nginx:", "empty tag"},
        {"nginx:.x", "tag must start"},
        {"nginx:a+b", "invalid character in tag"},
        {"nginx@sha256:totallywrong", "invalid digest"},
        {"nginx@", "empty digest"},
        {"nginx@sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
         "invalid digest"},
        {"nginx/", "repository name ends with '/'"},
        {"ghcr.io/", "empty repository name"},
        {"a//b", "empty path component"},
        {"/a", "repository name starts with '/'"},
        {"a___b", "invalid repository name"},
        {"my_reg.io/x", "invalid registry host"},
        {":tag", "empty repository name"},
        {"@" D256, "empty repository name"},
    };
    rgm_ref_image_t img;
    char err[256];
    char fmt[RGM_REF_IMAGE_STR_MAX];
    char longtag[200];
    char in[400];
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(good); i++) {
        const struct image_case *c = &good[i];
        int rc = rgm_ref_parse_image(c->in, &img, err, sizeof(err));

        is_int(rc, 0, "image '%s' parses", c->in);
        if (rc != 0)
            printf("#   error: %s\n", err);
        is_str(img.registry, c->registry, "image '%s': registry", c->in);
        is_str(img.repository, c->repository, "image '%s': repository", c->in);
        is_str(img.tag, c->tag, "image '%s': tag", c->in);
        is_str(img.digest, c->digest, "image '%s': digest", c->in);
        ok(rgm_ref_image_format(&img, fmt, sizeof(fmt)) > 0, "image '%s': formats", c->in);
        is_str(fmt, c->formatted, "image '%s': canonical form", c->in);
        is_str(rgm_ref_image_reference(&img), c->digest[0] ? c->digest : c->tag,
               "image '%s': reference to fetch", c->in);
    }
    for (i = 0; i < RGM_ARRAY_SIZE(bad); i++) {
        int rc = rgm_ref_parse_image(bad[i].in, &img, err, sizeof(err));

        is_int(rc, UV_EINVAL, "image '%s' rejected", bad[i].in);
        ok(strstr(err, bad[i].why) != NULL, "image '%s': error says '%s' (got '%s')", bad[i].in,
           bad[i].why, err);
    }
    snprintf(in, sizeof(in), "nginx:%s", repeat(longtag, 't', 129));
    is_int(rgm_ref_parse_image(in, &img, err, sizeof(err)), UV_EINVAL, "129-char tag rejected");
    is_str(err, "tag longer than 128 characters", "129-char tag: message");
    snprintf(in, sizeof(in), "nginx:%s", repeat(longtag, 't', 128));
    is_int(rgm_ref_parse_image(in, &img, err, sizeof(err)), 0, "128-char tag accepted");
    is_int(rgm_ref_parse_image(NULL, &img, NULL, 0), UV_EINVAL, "NULL reference, NULL err");
    is_int(rgm_ref_parse_image("nginx", &img, err, sizeof(err)), 0, "nginx again");
    is_int(rgm_ref_image_format(&img, fmt, 10), UV_ENOBUFS, "format into a small buffer");
    is_str(fmt, "", "small buffer left empty");
}

int main(void)
{
    test_names();
    test_tags();
    test_digests();
    test_hosts();
    test_paths();
    test_prefix();
    test_normalize();
    test_images();
    return tap_done();
}
