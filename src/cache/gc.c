/* LRU eviction over the index and the store, in batches. */
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

int rgm_gc_step(rgm_index_t *idx, rgm_store_t *store, uint64_t max_bytes, uint64_t target_bytes,
                uint64_t *freed_bytes, uint64_t *freed_objects)
{
    struct victims *v;
    uint64_t objects = 0;
    uint64_t bytes = 0;
    size_t evicted = 0;
    size_t i;
    int err;

    if (max_bytes == 0)
        return 0;
    err = rgm_index_stats(idx, &objects, &bytes);
    if (err < 0)
        return err;
    if (bytes <= max_bytes)
        return 0;
    if (target_bytes > max_bytes)
        target_bytes = max_bytes;
    v = rgm_calloc(1, sizeof(*v));
    v->need = bytes - target_bytes;
    err = rgm_index_walk_lru(idx, RGM_GC_BATCH, collect, v);
    if (err < 0)
        goto out;
    for (i = 0; i < v->n; i++) {
        if (rgm_store_remove(store, v->obj[i].digest) < 0 ||
            rgm_index_remove_object(idx, v->obj[i].digest) < 0) {
            rgm_log(RGM_LOG_WARN, "gc", "cannot evict %s", v->obj[i].digest);
            continue;
        }
        rgm_log(RGM_LOG_DEBUG, "gc", "evicted %s (%llu bytes)", v->obj[i].digest,
                (unsigned long long)v->obj[i].size);
        if (freed_bytes)
            *freed_bytes += v->obj[i].size;
        if (freed_objects)
            (*freed_objects)++;
        evicted++;
        bytes -= v->obj[i].size < bytes ? v->obj[i].size : bytes;
    }
    /* Nothing evictable in this batch (files that cannot be removed): stop rather than spin. */
    err = evicted > 0 && bytes > target_bytes ? 1 : 0;
out:
    free(v);
    return err;
}
