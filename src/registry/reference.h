/* OCI/Docker names, tags, digests, image references and /v2 API paths: pure, synchronous
 * validation and parsing (hand-written scanners, no regex, no allocation). It does not know
 * which registries are configured: callers pass a callback for that. */
#ifndef RGM_REGISTRY_REFERENCE_H
#define RGM_REGISTRY_REFERENCE_H

#include "core/common.h"

#define RGM_REF_NAME_MAX   255 /* repository name, bytes */
#define RGM_REF_TAG_MAX    128 /* tag, bytes */
#define RGM_REF_DIGEST_MAX 135 /* "sha512:" + 128 hex */
#define RGM_REF_HOST_MAX   255 /* registry host[:port] */
/* Enough for rgm_ref_image_format: host/name:tag@digest and the NUL. */
#define RGM_REF_IMAGE_STR_MAX                                                                      \
    (RGM_REF_HOST_MAX + RGM_REF_NAME_MAX + RGM_REF_TAG_MAX + RGM_REF_DIGEST_MAX + 4)

/* ---- grammar ---- */

/* 1 when name matches the OCI distribution grammar: components
 * [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)* separated by single '/', total length <= 255; else 0. */
int rgm_ref_valid_name(const char *name);
/* Same for the first len bytes of name (no NUL needed). */
int rgm_ref_valid_name_n(const char *name, size_t len);
/* 1 when tag matches [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}; else 0. */
int rgm_ref_valid_tag(const char *tag);
/* 1 only for "sha256:" + 64 or "sha512:" + 128 lowercase hex digits; else 0. */
int rgm_ref_valid_digest(const char *digest);
/* 1 when s has the shape of a registry host: [a-zA-Z0-9.-]+ or "[v6 address]", optionally
 * ":port" (1-5 digits), at most 255 bytes; else 0. It does not say the host is configured. */
int rgm_ref_valid_host(const char *s);

/* ---- the /v2 API paths served by the mirror ---- */

typedef enum rgm_ref_route {
    RGM_REF_ROUTE_UNKNOWN = 0,
    RGM_REF_ROUTE_ROOT,      /* /v2 or /v2/ */
    RGM_REF_ROUTE_MANIFEST,  /* /v2/<name>/manifests/<tag or digest> */
    RGM_REF_ROUTE_BLOB,      /* /v2/<name>/blobs/<digest> */
    RGM_REF_ROUTE_TAGS,      /* /v2/<name>/tags/list */
    RGM_REF_ROUTE_REFERRERS, /* /v2/<name>/referrers/<digest> (OCI 1.1) */
} rgm_ref_route_t;

/* Parse errors of rgm_ref_parse_path. Not UV_E* codes (rule zero): the router needs four
 * different answers, so each error names the OCI error it maps to. */
enum {
    RGM_REF_EROUTE = -1,  /* unknown route: 404 UNSUPPORTED */
    RGM_REF_ENAME = -2,   /* 400 NAME_INVALID */
    RGM_REF_EDIGEST = -3, /* 400 DIGEST_INVALID */
    /* 404 MANIFEST_UNKNOWN: no manifest can have that tag, and the OCI conformance suite
     * (01_pull_test.go, ".INVALID_MANIFEST_NAME") wants 404; TAG_INVALID is not in the
     * spec's error table. */
    RGM_REF_ETAG = -4,
};

typedef struct rgm_ref_path {
    rgm_ref_route_t kind;
    char registry[RGM_REF_HOST_MAX + 1];    /* path-prefix registry, "" when none */
    char name[RGM_REF_NAME_MAX + 1];        /* repository, prefix removed; "" for ROOT */
    char reference[RGM_REF_DIGEST_MAX + 1]; /* tag or digest (MANIFEST, BLOB, REFERRERS) */
    int is_digest;                          /* reference is a digest */
} rgm_ref_path_t;

/* Callback: 1 when host (NUL-terminated, as written in the path) names a configured registry. */
typedef int (*rgm_ref_is_registry_fn)(void *ud, const char *host);

/* Parse a request path (no query string: parsing stops at the first '?'). The name may
 * contain '/'; the last "/manifests/<ref>", "/blobs/<digest>", "/referrers/<digest>" or
 * trailing "/tags/list" splits it. A manifest reference containing ':' is a digest, else a
 * tag; blobs and referrers take only a digest. Nothing is
 * percent-decoded: '%' in a name or reference is invalid. out is always written: on
 * RGM_REF_EROUTE kind is UNKNOWN; on the other errors kind is the recognised route, and name
 * and reference are "" (never unvalidated bytes). Returns 0 or RGM_REF_EROUTE / _ENAME /
 * _EDIGEST / _ETAG. */
int rgm_ref_parse_path(const char *path, rgm_ref_path_t *out);
/* Same, and when is_registry is not NULL and the name's first component looks like a host
 * (see rgm_ref_split_registry_prefix) that is_registry accepts, that component is split off
 * into out->registry before the rest is validated as the name. is_registry runs synchronously
 * at most once. */
int rgm_ref_parse_path_ex(const char *path, rgm_ref_is_registry_fn is_registry, void *ud,
                          rgm_ref_path_t *out);

/* Registry path prefix: when name's first component contains '.' or ':' or is "localhost",
 * is followed by a non-empty rest, and is_registry(ud, host) says it is configured, copy the
 * host into registry (registry_len bytes) and point *rest into name after the '/'; return
 * 1. Otherwise return 0 and leave registry "" and *rest = name. The rest is not validated. */
int rgm_ref_split_registry_prefix(const char *name, rgm_ref_is_registry_fn is_registry, void *ud,
                                  char *registry, size_t registry_len, const char **rest);

/* OCI error code for a parse error ("NAME_INVALID" ...) and its HTTP status. */
const char *rgm_ref_err_code(int err);
int rgm_ref_err_status(int err);

/* ---- docker.io normalisation ---- */

/* "index.docker.io" and "registry-1.docker.io" -> "docker.io"; any other registry is
 * returned as is (a static string or registry itself, both borrowed). */
const char *rgm_ref_normalize_registry(const char *registry);
/* Normalised registry into reg_out and repository into repo_out: for docker.io a
 * single-component repository gets "library/". 0, UV_ENOBUFS (an output too small, or the
 * repository grows over 255 bytes). Nothing is validated. */
RGM_MUST_CHECK int rgm_ref_normalize_repo(const char *registry, const char *repo, char *reg_out,
                                          size_t reg_len, char *repo_out, size_t repo_len);

/* ---- image references ("nginx", "ghcr.io/org/app:v1@sha256:...") ---- */

typedef struct rgm_ref_image {
    char registry[RGM_REF_HOST_MAX + 1];   /* "docker.io", "localhost:5000", lowercase */
    char repository[RGM_REF_NAME_MAX + 1]; /* "library/nginx" */
    char tag[RGM_REF_TAG_MAX + 1];         /* "" only when a digest is given without tag */
    char digest[RGM_REF_DIGEST_MAX + 1];   /* "" when none; wins over the tag */
} rgm_ref_image_t;

/* Parse an image reference as Docker and Kubernetes do: the first component is a registry
 * when it contains '.' or ':' or is "localhost", otherwise the registry is docker.io;
 * index.docker.io and registry-1.docker.io become docker.io; single-component docker.io
 * repositories get "library/"; the tag defaults to "latest" when there is no digest.
 * Every part is validated. Returns 0, or UV_EINVAL with a message in err (errlen bytes,
 * may be NULL) saying which part is wrong and why. */
RGM_MUST_CHECK int rgm_ref_parse_image(const char *s, rgm_ref_image_t *img, char *err,
                                       size_t errlen);

/* Canonical form "registry/repository[:tag][@digest]" ("docker.io/library/nginx:latest",
 * "ghcr.io/a/b:v1@sha256:..."). Returns the length, or UV_ENOBUFS when buf is too small
 * (buf then holds ""). RGM_REF_IMAGE_STR_MAX bytes are always enough. */
int rgm_ref_image_format(const rgm_ref_image_t *img, char *buf, size_t buflen);

/* The reference to request from /v2/<repo>/manifests/: the digest when pinned, else the tag. */
static inline const char *rgm_ref_image_reference(const rgm_ref_image_t *img)
{
    return img->digest[0] != '\0' ? img->digest : img->tag;
}

#endif
