/* Internal to the kubelet credential provider plugins: the structs behind rgm_credproviders_t
 * and the functions its files share. Not an interface for other modules (they use
 * credprovider.h). Reading order, each file calling only the ones below it: credprovider.c
 * (the cache and the jobs), credprovider-response.c (a plugin's answer, the keyring pick),
 * credprovider-config.c (the CredentialProviderConfig, Go durations), credprovider-match.c
 * (the kubelet's image globs). */
#ifndef RGM_REGISTRY_CREDPROVIDER_INT_H
#define RGM_REGISTRY_CREDPROVIDER_INT_H

#include <jansson.h>
#include <uv.h>

#include "core/common.h"
#include "registry/credprovider.h"

#define IMAGE_MAX 2048

struct cache_entry; /* credprovider.c */
struct job;         /* credprovider.c */

/* One configured plugin; the config fields are set by credprovider-config.c and read-only
 * after it, the cache is credprovider.c's. */
struct provider {
    char *name;
    char *file;
    char *api_version;
    char **match;
    size_t n_match;
    uint64_t default_cache_ms;
    char **args; /* NULL-terminated */
    char **env;  /* "NAME=VALUE", NULL-terminated */
    struct cache_entry *cache;
    size_t n_cache;
};

struct rgm_credproviders {
    uv_loop_t *loop;
    struct provider *provs;
    size_t n_provs;
    uint64_t timeout_ms;
    struct job *jobs;
    uint64_t runs;
    unsigned live_runs;
    int is_freeing;
};

/* ---- credprovider-config.c ---- */

/* obj[key] when it is a string shorter than the config's field limit, else NULL. Borrowed
 * from obj. */
const char *rgm_credprovider_str(json_t *obj, const char *key);
/* Free every provider's config fields and the array (n_provs becomes 0). The caches must be
 * empty already: credprovider.c drops them first. */
void rgm_credprovider_provs_free(rgm_credproviders_t *p);

/* ---- credprovider-response.c ---- */

/* A new object with auth's values (shared, not copied) under keys normalised as the keyring
 * does (scheme and a /v1/ or /v2/ prefix dropped; the first of two alike wins). Caller owns. */
json_t *rgm_credprovider_normalised(json_t *auth);
/* The entry of a normalised auth map that answers for image (longest key first), borrowed
 * from auth, or NULL. */
json_t *rgm_credprovider_pick_entry(json_t *auth, const char *image);

/* ---- credprovider-match.c ---- */

/* rgm_credprovider_match, where a docker.io image also goes by index.docker.io. 1 or 0. */
int rgm_credprovider_match_image(const char *key, const char *image);

#endif
