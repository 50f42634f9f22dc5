/* LRU eviction over the index and the store, in batches: the victims' rows go in one
 * transaction, then their files. rgm_gc_step unlinks them itself (the gc command); a server's
 * rgm_gc_t unlinks them on libuv's pool, so a batch holds the loop only for its SQL. */
#include <unistd.h>
#include <errno.h>

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

/* ---- a server's eviction: unlinks on the pool ---- */

struct rgm_gc {
    uv_loop_t *loop;
    rgm_index_t *idx;
    rgm_store_t *store;
    uv_work_t work;
    char *paths[RGM_GC_BATCH]; /* the batch being unlinked; the pool's until on_unlinked */
    size_t paths_len;
    size_t failed; /* set by the pool */
    int is_unlinking;
    int is_freed; /* rgm_gc_free ran while the pool had the batch */
};

rgm_gc_t *rgm_gc_new(uv_loop_t *loop, rgm_index_t *idx, rgm_store_t *store)
{
    rgm_gc_t *gc = rgm_calloc(1, sizeof(*gc));

    gc->loop = loop;
    gc->idx = idx;
    gc->store = store;
    return gc;
}

static void paths_free(rgm_gc_t *gc)
{
    size_t i;

    for (i = 0; i < gc->paths_len; i++)
        RGM_FREE(gc->paths[i]);
    gc->paths_len = 0;
}

/* On the pool: only the paths. */
static void on_unlink_work(uv_work_t *w)
{
    rgm_gc_t *gc = rgm_container_of(w, rgm_gc_t, work);
    size_t i;

    gc->failed = 0;
    for (i = 0; i < gc->paths_len; i++) {
        if (unlink(gc->paths[i]) < 0 && errno != ENOENT)
            gc->failed++;
    }
}

static void on_unlinked(uv_work_t *w, int status)
{
    rgm_gc_t *gc = rgm_container_of(w, rgm_gc_t, work);

    (void)status;
    gc->is_unlinking = 0;
    if (gc->failed > 0)
        rgm_log(RGM_LOG_WARN, "gc", "%zu evicted files could not be unlinked (orphans now)",
                gc->failed);
    paths_free(gc);
    if (gc->is_freed)
        free(gc);
}

int rgm_gc_tick(rgm_gc_t *gc, uint64_t max_bytes, uint64_t target_bytes, uint64_t *freed_bytes,
                uint64_t *freed_objects)
{
    struct victims *v;
    char path[4096];
    uint64_t bytes = 0;
    size_t i;
    int err;

    if (gc->is_unlinking)
        return 1; /* the last batch's files first: one batch on the pool at a time */
    v = rgm_calloc(1, sizeof(*v));
    err = batch(gc->idx, max_bytes, target_bytes, v, &bytes);
    for (i = 0; i < v->n; i++) {
        if (rgm_store_blob_path(gc->store, v->obj[i].digest, path, sizeof(path)) == 0)
            gc->paths[gc->paths_len++] = rgm_strdup(path);
    }
    account(v, freed_bytes, freed_objects);
    if (gc->paths_len > 0) {
        if (uv_queue_work(gc->loop, &gc->work, on_unlink_work, on_unlinked) == 0) {
            gc->is_unlinking = 1;
        } else {
            on_unlink_work(&gc->work); /* no pool: here */
            on_unlinked(&gc->work, 0);
        }
    }
    if (err == 0)
        err = v->n > 0 && bytes > target_bytes ? 1 : 0;
    free(v);
    return err;
}

void rgm_gc_free(rgm_gc_t *gc)
{
    if (!gc)
        return;
    if (gc->is_unlinking) {
        gc->is_freed = 1; /* on_unlinked frees it */
        return;
    }
    free(gc);
}
