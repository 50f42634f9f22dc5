/* LRU eviction over the index and the store, in batches: the victims' rows go in one
 * transaction, then their files. */
#include <uv.h>

#include "core/common.h"
#include "core/log.h"
#include "cache/gc.h"

struct victims {
    rgm_index_object_t obj[RGM_GC_BATCH];
    size_t n;
    uint64_t need;
    uint64_t sum;
};

static int collect(const rgm_index_object_t *obj, void *ud)
{
    struct victims *v = ud;

    v->obj[v->n++] = *obj;
    v->sum += obj->size;
    return v->n >= RGM_GC_BATCH || v->sum >= v->need;
}

/* Choose a batch and delete its rows. Returns 0 with v->n == 0 when under max_bytes (or max is
 * 0), 0 with the victims in v, or <0. *bytes is what remains after the batch. Rows first, in
 * one transaction (one commit per batch, not per object): once they are gone the objects are
 * misses, so a file whose unlink fails is an orphan, never served, and the next start's
 * reconcile deletes it. */
static int batch(rgm_index_t *idx, uint64_t max_bytes, uint64_t target_bytes, struct victims *v,
                 uint64_t *bytes)
{
    const char *digests[RGM_GC_BATCH];
    uint64_t objects = 0;
    size_t i;
    int err;

    v->n = 0;
    if (max_bytes == 0)
        return 0;
    err = rgm_index_stats(idx, &objects, bytes);
    if (err < 0 || *bytes <= max_bytes)
        return err;
    if (target_bytes > max_bytes)
        target_bytes = max_bytes;
    v->need = *bytes - target_bytes;
    v->sum = 0;
    err = rgm_index_walk_lru(idx, RGM_GC_BATCH, collect, v);
    if (err < 0) {
        v->n = 0;
        return err;
    }
    for (i = 0; i < v->n; i++)
        digests[i] = v->obj[i].digest;
    err = rgm_index_remove_objects(idx, digests, v->n);
    if (err < 0) {
        v->n = 0;
        return err;
    }
    *bytes -= v->sum < *bytes ? v->sum : *bytes;
    return 0;
}

static void account(const struct victims *v, uint64_t *freed_bytes, uint64_t *freed_objects)
{
    size_t i;

    for (i = 0; i < v->n; i++)
        rgm_log(RGM_LOG_DEBUG, "gc", "evicted %s (%llu bytes)", v->obj[i].digest,
                (unsigned long long)v->obj[i].size);
    if (freed_bytes)
        *freed_bytes += v->sum;
    if (freed_objects)
        *freed_objects += v->n;
}

int rgm_gc_step(rgm_index_t *idx, rgm_store_t *store, uint64_t max_bytes, uint64_t target_bytes,
                uint64_t *freed_bytes, uint64_t *freed_objects)
{
    struct victims *v = rgm_calloc(1, sizeof(*v));
    uint64_t bytes = 0;
    size_t i;
    int err;

    err = batch(idx, max_bytes, target_bytes, v, &bytes);
    for (i = 0; i < v->n; i++) {
        if (rgm_store_remove(store, v->obj[i].digest) < 0)
            rgm_log(RGM_LOG_WARN, "gc", "evicted %s, but its file stays", v->obj[i].digest);
    }
    account(v, freed_bytes, freed_objects);
    if (err == 0)
        err = v->n > 0 && bytes > target_bytes ? 1 : 0;
    free(v);
    return err;
}
