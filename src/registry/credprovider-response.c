/* A plugin's CredentialProviderResponse, checked (apiVersion, kind, cacheKeyType,
 * cacheDuration, the auth map; no secret in any reason), and the keyring's pick from an auth
 * map: keys normalised, tried longest-first, matched by credprovider-match.c. It runs nothing
 * and caches nothing (credprovider.c). */
#include "registry/credprovider-int.h"

#include <stdlib.h>
#include <string.h>

#include "core/util.h"

/* ---- the response ---- */

static int rfail(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return UV_EINVAL;
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static int check_auth(json_t *auth, char *why, size_t whylen)
{
    const char *key;
    json_t *v;
    const char *u;
    const char *pw;

    if (!auth || json_is_null(auth))
        return 0;
    if (!json_is_object(auth))
        return rfail(why, whylen, "auth is not a map");
    json_object_foreach(auth, key, v)
    {
        u = rgm_credprovider_str(v, "username");
        pw = rgm_credprovider_str(v, "password");
        if (!json_is_object(v) || !key[0] || has_ctl(key))
            return rfail(why, whylen, "an auth entry is not {username, password}");
        if ((json_object_get(v, "username") && !u) || (json_object_get(v, "password") && !pw))
            return rfail(why, whylen, "auth username/password must be strings");
        if ((u && has_ctl(u)) || (pw && has_ctl(pw)))
            return rfail(why, whylen, "control bytes in auth username/password");
    }
    return 0;
}

int rgm_credprovider_parse_response(const char *out, size_t len, const char *api_version,
                                    rgm_credprovider_keytype_t *keytype, int *has_duration,
                                    uint64_t *duration_ms, json_t **auth, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *root;
    const char *s;
    json_t *a;
    int e = UV_EINVAL;

    *auth = NULL;
    *has_duration = 0;
    *duration_ms = 0;
    root = json_loadb(out, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return rfail(why, whylen, "not a JSON object");
    }
    s = rgm_credprovider_str(root, "apiVersion");
    if (!s || strcmp(s, api_version) != 0) {
        snprintf(why, whylen, "apiVersion %s is not the configured %s", s ? s : "(none)",
                 api_version);
        goto out;
    }
    s = rgm_credprovider_str(root, "kind");
    if (!s || strcmp(s, "CredentialProviderResponse") != 0) {
        rfail(why, whylen, "kind is not CredentialProviderResponse");
        goto out;
    }
    s = rgm_credprovider_str(root, "cacheKeyType");
    if (s && strcmp(s, "Image") == 0) {
        *keytype = RGM_CP_KEY_IMAGE;
    } else if (s && strcmp(s, "Registry") == 0) {
        *keytype = RGM_CP_KEY_REGISTRY;
    } else if (s && strcmp(s, "Global") == 0) {
        *keytype = RGM_CP_KEY_GLOBAL;
    } else {
        rfail(why, whylen, "cacheKeyType is not Image, Registry or Global");
        goto out;
    }
    a = json_object_get(root, "cacheDuration");
    if (a && !json_is_null(a)) {
        s = json_string_value(a);
        if (!s || rgm_credprovider_parse_duration(s, duration_ms) < 0) {
            rfail(why, whylen, "cacheDuration is not a duration >= 0");
            goto out;
        }
        *has_duration = 1;
    }
    a = json_object_get(root, "auth");
    if (check_auth(a, why, whylen) < 0)
        goto out;
    *auth = json_is_object(a) ? json_deep_copy(a) : json_object();
    e = 0;
out:
    json_decref(root);
    return e;
}

/* ---- the keyring pick ---- */

/* The keyring's key for an auth entry: no scheme, a /v1/ or /v2/ prefix dropped, no
 * trailing "/" path. */
static void norm_key(const char *k, char *out, size_t len)
{
    const char *slash;

    if (strncmp(k, "https://", 8) == 0)
        k += 8;
    else if (strncmp(k, "http://", 7) == 0)
        k += 7;
    slash = strchr(k, '/');
    if (!slash) {
        snprintf(out, len, "%s", k);
        return;
    }
    if (strncmp(slash, "/v1/", 4) == 0 || strncmp(slash, "/v2/", 4) == 0) {
        if (slash[4] == '\0')
            snprintf(out, len, "%.*s", (int)(slash - k), k);
        else
            snprintf(out, len, "%.*s%s", (int)(slash - k), k, slash + 3);
        return;
    }
    if (strcmp(slash, "/") == 0)
        snprintf(out, len, "%.*s", (int)(slash - k), k);
    else
        snprintf(out, len, "%s", k);
}

static int cmp_rev(const void *a, const void *b)
{
    return strcmp(*(const char *const *)b, *(const char *const *)a);
}

json_t *rgm_credprovider_pick_entry(json_t *auth, const char *image)
{
    const char **keys;
    const char *key;
    json_t *v;
    json_t *found = NULL;
    size_t n = 0;
    size_t i;

    if (!json_is_object(auth) || json_object_size(auth) == 0)
        return NULL;
    keys = rgm_calloc(json_object_size(auth), sizeof(*keys));
    json_object_foreach(auth, key, v)
    {
        keys[n++] = key;
    }
    qsort(keys, n, sizeof(*keys), cmp_rev);
    for (i = 0; i < n && !found; i++)
        if (rgm_credprovider_match_image(keys[i], image))
            found = json_object_get(auth, keys[i]);
    free(keys);
    return found;
}

/* A copy of auth with its keys normalised (the first of two that normalise alike wins). */
json_t *rgm_credprovider_normalised(json_t *auth)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    char nk[IMAGE_MAX];

    json_object_foreach(auth, key, v)
    {
        norm_key(key, nk, sizeof(nk));
        if (!json_object_get(out, nk))
            json_object_set(out, nk, v);
    }
    return out;
}

int rgm_credprovider_pick(json_t *auth, const char *image, rgm_cred_t *cred)
{
    json_t *norm = rgm_credprovider_normalised(auth);
    json_t *e = rgm_credprovider_pick_entry(norm, image);
    const char *u;
    const char *pw;

    memset(cred, 0, sizeof(*cred));
    if (e) {
        u = rgm_credprovider_str(e, "username");
        pw = rgm_credprovider_str(e, "password");
        cred->username = rgm_strdup(u ? u : "");
        cred->secret = rgm_strdup(pw ? pw : "");
    }
    json_decref(norm);
    return e ? 1 : 0;
}
