/* The in-use set: a small chained hash of digest -> holder count. */
#include "cache/inuse.h"

#include "cache/store.h"

#define INUSE_BUCKETS 256

struct held {
    struct held *next;
    unsigned long count;
    char digest[RGM_DIGEST_MAX];
};

struct rgm_inuse {
    struct held *b[INUSE_BUCKETS];
};

static size_t bucket(const char *digest)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    while (*digest) {
        h ^= (unsigned char)*digest++;
        h *= 16777619u;
    }
    return h % INUSE_BUCKETS;
}

rgm_inuse_t *rgm_inuse_new(void)
{
    return rgm_calloc(1, sizeof(rgm_inuse_t));
}

void rgm_inuse_free(rgm_inuse_t *u)
{
    struct held *h;
    size_t i;

    if (!u)
        return;
    for (i = 0; i < INUSE_BUCKETS; i++) {
        while ((h = u->b[i]) != NULL) {
            u->b[i] = h->next;
            free(h);
        }
    }
    free(u);
}

void rgm_inuse_hold(rgm_inuse_t *u, const char *digest)
{
    size_t i = bucket(digest);
    struct held *h;

    for (h = u->b[i]; h; h = h->next) {
        if (strcmp(h->digest, digest) == 0) {
            h->count++;
            return;
        }
    }
    h = rgm_calloc(1, sizeof(*h));
    snprintf(h->digest, sizeof(h->digest), "%s", digest);
    h->count = 1;
    h->next = u->b[i];
    u->b[i] = h;
}

void rgm_inuse_release(rgm_inuse_t *u, const char *digest)
{
    struct held **pp;
    struct held *h;

    for (pp = &u->b[bucket(digest)]; (h = *pp) != NULL; pp = &h->next) {
        if (strcmp(h->digest, digest) != 0)
            continue;
        if (--h->count == 0) {
            *pp = h->next;
            free(h);
        }
        return;
    }
}

int rgm_inuse_is_held(const rgm_inuse_t *u, const char *digest)
{
    const struct held *h;

    if (!u)
        return 0;
    for (h = u->b[bucket(digest)]; h; h = h->next)
        if (strcmp(h->digest, digest) == 0)
            return 1;
    return 0;
}
