/* Eviction by image: the closure of a top-level manifest (what goes with it and what it
 * shares), orphans first, then the least recently used images, and the protections. */
#include "cache/evict.h"

#include <uv.h>

#include "core/log.h"
#include "core/util.h"

/* Top-level manifests looked at per choice: the one least recently used, counting the
 * accesses of its own manifests (a platform manifest pulled by digest), goes. */
#define WINDOW         8
/* Blobs an orphan scan examines per step: its cost is bounded by this, not by how few orphans
 * there are (a whole scan of a big cache holds the loop for seconds). */
#define ORPHAN_SCAN    1000
/* After a whole pass found no orphan, rest this long unless eviction left one behind. */
#define ORPHAN_REST_MS 60000
/* The cache's size is a scan of every row (index stats): in serve (a budget set) it is read
 * at most this often, and estimated from what eviction freed in between. */
#define STATS_EVERY_MS 5000
#define CLOSURE_MAX    4096

struct rgm_evict {
    rgm_index_t *idx;
    rgm_store_t *store;
    rgm_refs_t *refs;
    rgm_pins_t *pins;
    rgm_fetches_t *fetches;
    rgm_inuse_t *inuse;
    rgm_evict_counters_t counters;
    int is_stuck_logged;
    rgm_refs_cursor_t orphan_at; /* where the orphan pass stands */
    size_t orphans_seen;         /* orphans found by the pass so far */
    uint64_t orphan_rest_until;  /* a whole pass found none: no scan before this */
    int is_orphan_dirty;         /* a busy object was left: it may be an orphan now */
    uint64_t bytes_est;          /* the cache's size as last read, less what went since */
    uint64_t stats_at_ms;        /* when it was read; 0: never */
    rgm_evict_tally_t tally;     /* the last completed pass */
    rgm_evict_tally_t partial;   /* the pass in progress */
    uint64_t tally_after_ms;     /* where it stands in the walk by last use */
    char tally_after[RGM_DIGEST_MAX];
};

/* An image's objects: the first n_unique go with it, the rest are shared with another. */
struct member {
    rgm_index_object_t obj;
    int is_unique;
};

struct closure {
    struct member *m;
    size_t n;
    uint64_t last_used_ms;
    int is_protected; /* the top itself may not go */
    int err;
};

struct ctx {
    rgm_evict_t *e;
    const rgm_evict_opts_t *o;
    uint64_t now;
    uint64_t t0; /* uv_hrtime() at the start of the step's removals */
};

/* The step has used its time (o->budget_us; never without one). */
static int is_out_of_time(const struct ctx *c)
{
    return c->o->budget_us > 0 && (uv_hrtime() - c->t0) / 1000 >= c->o->budget_us;
}

rgm_evict_t *rgm_evict_new(rgm_index_t *idx, rgm_store_t *store, rgm_refs_t *refs, rgm_pins_t *pins,
                           rgm_fetches_t *fetches, rgm_inuse_t *inuse)
{
    rgm_evict_t *e = rgm_calloc(1, sizeof(*e));

    e->idx = idx;
    e->store = store;
    e->refs = refs;
    e->pins = pins;
    e->fetches = fetches;
    e->inuse = inuse;
    return e;
}

void rgm_evict_free(rgm_evict_t *e)
{
    free(e);
}

const rgm_evict_counters_t *rgm_evict_counters(const rgm_evict_t *e)
{
    return &e->counters;
}

/* ---- protections ---- */

static int is_busy(const rgm_evict_t *e, const char *digest)
{
    return (e->fetches && rgm_fetches_find(e->fetches, digest) != NULL) ||
           rgm_inuse_is_held(e->inuse, digest);
}

/* Busy, pinned, or a tagged manifest served within tag_ttl: 1 kept, 0 may go, <0. */
static int is_kept(const struct ctx *c, const rgm_index_object_t *obj)
{
    int rc;

    if (is_busy(c->e, obj->digest))
        return 1;
    rc = rgm_pins_match(c->e->pins, obj->digest, c->now, c->o->tag_ttl_ms, NULL, 0, NULL);
    if (rc != 0)
        return rc;
    if (!c->o->is_served_kept || obj->kind != RGM_OBJ_MANIFEST ||
        obj->last_access_ms + c->o->tag_ttl_ms < c->now)
        return 0;
    return rgm_pins_is_tagged(c->e->pins, obj->digest);
}

/* ---- the closure of an image ---- */

static int closure_has(const struct closure *cl, const char *digest)
{
    size_t i;

    for (i = 0; i < cl->n; i++)
        if (strcmp(cl->m[i].obj.digest, digest) == 0)
            return 1;
    return 0;
}

static void closure_add(struct closure *cl, const rgm_index_object_t *obj, int is_unique)
{
    if (cl->n >= CLOSURE_MAX)
        return;
    cl->m = rgm_realloc(cl->m, (cl->n + 1) * sizeof(*cl->m));
    cl->m[cl->n].obj = *obj;
    cl->m[cl->n].is_unique = is_unique;
    cl->n++;
    if (is_unique && obj->kind == RGM_OBJ_MANIFEST && obj->last_access_ms > cl->last_used_ms)
        cl->last_used_ms = obj->last_access_ms;
}

struct parents {
    const struct closure *cl;
    int is_outside; /* a cached parent that is not going */
};

static int on_parent(const char *digest, int kind, void *ud)
{
    struct parents *p = ud;
    size_t i;

    (void)kind;
    for (i = 0; i < p->cl->n; i++) {
        if (p->cl->m[i].is_unique && strcmp(p->cl->m[i].obj.digest, digest) == 0)
            return 0;
    }
    p->is_outside = 1;
    return 1;
}

struct children {
    struct closure *cl;
    const struct ctx *c;
    int is_parent_unique;
    char (*todo)[RGM_DIGEST_MAX];
    size_t n;
};

static int on_child(const char *digest, int kind, void *ud)
{
    struct children *ch = ud;

    (void)kind;
    if (ch->n >= 256)
        return 1;
    snprintf(ch->todo[ch->n++], RGM_DIGEST_MAX, "%s", digest);
    return 0;
}

/* Decide one child of member i: unique when its parent is, every cached parent is unique, and
 * it is not kept; else shared. */
static int add_child(struct closure *cl, const struct ctx *c, const char *digest,
                     int is_parent_unique)
{
    rgm_index_object_t obj;
    struct parents p = {cl, 0};
    int rc;

    if (closure_has(cl, digest))
        return 0;
    rc = rgm_index_get_object(c->e->idx, digest, &obj);
    if (rc == UV_ENOENT)
        return 0;
    if (rc < 0)
        return rc;
    if (!is_parent_unique) {
        closure_add(cl, &obj, 0);
        return 0;
    }
    rc = rgm_refs_parents(c->e->refs, digest, on_parent, &p);
    if (rc < 0)
        return rc;
    rc = p.is_outside ? 1 : is_kept(c, &obj);
    if (rc < 0)
        return rc;
    closure_add(cl, &obj, rc == 0);
    return 0;
}

/* Breadth first from the top: an index's manifests are all decided before their layers, so
 * a layer two platforms share is seen with both parents going. */
static void closure_build(struct closure *cl, const struct ctx *c, const rgm_index_object_t *top)
{
    struct children ch;
    size_t i, k;
    int rc;

    memset(cl, 0, sizeof(*cl));
    rc = is_kept(c, top);
    if (rc < 0) {
        cl->err = rc;
        return;
    }
    cl->is_protected = rc;
    closure_add(cl, top, 1);
    ch.todo = rgm_malloc(256 * RGM_DIGEST_MAX);
    for (i = 0; i < cl->n && cl->err == 0; i++) {
        ch.cl = cl;
        ch.c = c;
        ch.n = 0;
        ch.is_parent_unique = cl->m[i].is_unique;
        rc = rgm_refs_children(c->e->refs, cl->m[i].obj.digest, on_child, &ch);
        for (k = 0; rc >= 0 && k < ch.n; k++)
            rc = add_child(cl, c, ch.todo[k], ch.is_parent_unique);
        if (rc < 0)
            cl->err = rc;
    }
    free(ch.todo);
}

static void closure_free(struct closure *cl)
{
    RGM_FREE(cl->m);
    cl->n = 0;
}

/* Remove the unique members; busy ones are left (they become orphans). */
static size_t closure_remove(rgm_evict_t *e, const struct closure *cl, enum rgm_evict_reason why,
                             uint64_t *freed)
{
    size_t i, n = 0;

    for (i = 0; i < cl->n; i++) {
        const rgm_index_object_t *o = &cl->m[i].obj;

        if (!cl->m[i].is_unique)
            continue;
        if (is_busy(e, o->digest)) {
            e->is_orphan_dirty = 1; /* left behind: an orphan once released */
            continue;
        }
        if (rgm_refs_remove(e->refs, o->digest) < 0) {
            rgm_log(RGM_LOG_WARN, "evict", "cannot remove %s", o->digest);
            continue;
        }
        rgm_log(RGM_LOG_DEBUG, "evict", "removed %s (%llu bytes, %s)", o->digest,
                (unsigned long long)o->size,
                why == RGM_EVICT_ORPHAN  ? "orphan"
                : why == RGM_EVICT_PURGE ? "purge"
                                         : "lru-image");
        e->counters.objects[why]++;
        e->counters.bytes[why] += o->size;
        *freed += o->size;
        n++;
    }
    if (n > 0 && why != RGM_EVICT_ORPHAN)
        e->counters.images[why]++;
    return n;
}

/* ---- the step ---- */

struct window {
    rgm_index_object_t obj[WINDOW];
    size_t n;
};

static int on_top(const rgm_index_object_t *obj, void *ud)
{
    struct window *w = ud;

    w->obj[w->n++] = *obj;
    return w->n >= WINDOW;
}

struct orphans {
    rgm_index_object_t obj[RGM_EVICT_BATCH];
    size_t n;
};

static int on_orphan(const rgm_index_object_t *obj, void *ud)
{
    struct orphans *o = ud;

    o->obj[o->n++] = *obj;
    return o->n >= RGM_EVICT_BATCH;
}

/* One window of the orphan pass (at most ORPHAN_SCAN blobs from where it stands) into *o.
 * 0, or <0. When the window reaches the end the pass starts over; a whole pass that found
 * nothing rests for ORPHAN_REST_MS, unless eviction left a busy object behind since. */
static int orphan_window(rgm_evict_t *e, uint64_t before_ms, uint64_t now, struct orphans *o)
{
    int rc;

    if (!e->is_orphan_dirty && now < e->orphan_rest_until)
        return 0;
    rc = rgm_refs_scan_orphans(e->refs, &e->orphan_at, before_ms, ORPHAN_SCAN, on_orphan, o);
    if (rc < 0)
        return rc;
    e->orphans_seen += o->n;
    if (o->n < RGM_EVICT_BATCH && (size_t)rc < ORPHAN_SCAN) {
        /* the end: the next window starts a new pass */
        if (e->orphans_seen == 0) {
            e->orphan_rest_until = now + ORPHAN_REST_MS;
            e->is_orphan_dirty = 0;
        }
        memset(&e->orphan_at, 0, sizeof(e->orphan_at));
        e->orphans_seen = 0;
    }
    return 0;
}

/* The pass stops at obj next time (it was not used: need was met first). */
static void orphan_rewind(rgm_evict_t *e, const rgm_index_object_t *obj)
{
    /* just before obj in (last_access, digest) order: the same time, a digest below it */
    e->orphan_at.after_ms = obj->last_access_ms;
    snprintf(e->orphan_at.after, sizeof(e->orphan_at.after), "%.*s", (int)strlen(obj->digest) - 1,
             obj->digest);
}

static int evict_orphans(const struct ctx *c, uint64_t need, uint64_t *freed, size_t *removed)
{
    rgm_evict_t *e = c->e;
    struct orphans *o;
    size_t i;
    int rc;

    if (c->now < c->o->orphan_grace_ms)
        return 0;
    o = rgm_calloc(1, sizeof(*o));
    rc = orphan_window(e, c->now - c->o->orphan_grace_ms, c->now, o);
    for (i = 0; rc >= 0 && i < o->n; i++) {
        if (*freed >= need || (i > 0 && is_out_of_time(c))) {
            orphan_rewind(e, &o->obj[i]); /* the next step starts with it */
            break;
        }
        if (is_busy(e, o->obj[i].digest) || rgm_refs_remove(e->refs, o->obj[i].digest) < 0)
            continue;
        e->counters.objects[RGM_EVICT_ORPHAN]++;
        e->counters.bytes[RGM_EVICT_ORPHAN] += o->obj[i].size;
        *freed += o->obj[i].size;
        (*removed)++;
    }
    free(o);
    return rc < 0 ? rc : 0;
}

/* The least recently used image of the next window that may go, built into *best; 1 found, 0
 * none left, <0. Protected tops are stepped over (the cursor moves past them). */
static int choose_image(const struct ctx *c, uint64_t *after_ms, char *after_d,
                        struct closure *best)
{
    struct window w;
    struct closure cl;
    size_t i;
    int rc;
    int found = 0;

    for (;;) {
        w.n = 0;
        rc = rgm_refs_walk_tops(c->e->refs, *after_ms, after_d, WINDOW, on_top, &w);
        if (rc < 0 || w.n == 0)
            return rc < 0 ? rc : 0;
        for (i = 0; i < w.n; i++) {
            /* Tops come by their own last use, and an image's last use is never earlier than
             * its top's: none from here on can be less recently used than best. */
            if (found && best->last_used_ms <= w.obj[i].last_access_ms)
                return 1;
            closure_build(&cl, c, &w.obj[i]);
            if (cl.err < 0) {
                rc = cl.err;
                closure_free(&cl);
                if (found)
                    closure_free(best);
                return rc;
            }
            if (cl.is_protected && !found) {
                *after_ms = w.obj[i].last_access_ms; /* never again in this step */
                snprintf(after_d, RGM_DIGEST_MAX, "%s", w.obj[i].digest);
            }
            if (cl.is_protected || (found && cl.last_used_ms >= best->last_used_ms)) {
                closure_free(&cl);
                continue;
            }
            if (found)
                closure_free(best);
            *best = cl;
            found = 1;
        }
        if (found)
            return 1;
    }
}

/* Cluster mode: unreferenced blobs (they may be layers of another replica's images) and
 * images, each in the order of its last access, until need is freed or the batch is done:
 * a blob older than the least recently used image that may go is removed first. What is left
 * of need goes to the step's image loop. */
static int evict_by_access(const struct ctx *c, uint64_t need, uint64_t *freed, size_t *removed)
{
    rgm_refs_cursor_t from;
    rgm_evict_t *e = c->e;
    struct orphans *o = rgm_calloc(1, sizeof(*o));
    struct closure best;
    uint64_t after_ms = 0;
    char after_d[RGM_DIGEST_MAX] = "";
    size_t i = 0;
    int has_best = 0;
    int rc;

    /* the oldest ORPHAN_SCAN blobs: an unreferenced blob newer than all of them waits for
     * a later step, when those are gone */
    memset(&from, 0, sizeof(from));
    rc = rgm_refs_scan_orphans(e->refs, &from, c->now + 1, ORPHAN_SCAN, on_orphan, o);
    while (rc >= 0 && *freed < need && *removed < RGM_EVICT_BATCH &&
           (i == 0 || !is_out_of_time(c))) { /* one candidate a step whatever the scan cost */
        const rgm_index_object_t *b;

        while (i < o->n && is_busy(e, o->obj[i].digest))
            i++;
        if (i == o->n)
            break; /* images only from here: the step's loop */
        if (!has_best) {
            rc = choose_image(c, &after_ms, after_d, &best);
            if (rc < 0)
                break;
            has_best = rc == 1;
        }
        b = &o->obj[i++];
        if (has_best && best.last_used_ms <= b->last_access_ms)
            break; /* the image is older: the step's loop takes it */
        if (rgm_refs_remove(e->refs, b->digest) < 0)
            continue;
        e->counters.objects[RGM_EVICT_LRU_IMAGE]++;
        e->counters.bytes[RGM_EVICT_LRU_IMAGE] += b->size;
        *freed += b->size;
        (*removed)++;
    }
    if (has_best)
        closure_free(&best);
    free(o);
    return rc < 0 ? rc : 0;
}

int rgm_evict_step(rgm_evict_t *e, const rgm_evict_opts_t *o)
{
    struct ctx c = {e, o, rgm_time_ms(), 0};
    struct closure best;
    uint64_t objects = 0, bytes = 0, freed = 0, need;
    uint64_t after_ms = 0;
    char after_d[RGM_DIGEST_MAX] = "";
    size_t removed = 0, n;
    uint64_t t0;
    int rc;

    if (o->max_bytes == 0)
        return 0;
    if (rgm_index_flush(e->idx) < 0)
        return UV_EIO;
    if (o->budget_us == 0 || e->stats_at_ms == 0 || c.now >= e->stats_at_ms + STATS_EVERY_MS) {
        if (rgm_index_stats(e->idx, &objects, &bytes) < 0)
            return UV_EIO;
        e->bytes_est = bytes;
        e->stats_at_ms = c.now;
    }
    bytes = e->bytes_est;
    if (bytes <= o->max_bytes) {
        e->is_stuck_logged = 0;
        e->stats_at_ms = 0; /* the next step reads the size again */
        return 0;
    }
    if (!rgm_refs_is_complete(e->refs))
        return 0; /* edges may be missing: nothing is safe to call unreferenced yet */
    if (rgm_pins_refresh(e->pins) < 0)
        return UV_EIO;
    need = bytes - (o->target_bytes < o->max_bytes ? o->target_bytes : o->max_bytes);
    t0 = uv_hrtime();
    c.t0 = t0;
    if (o->is_cluster)
        rc = evict_by_access(&c, need, &freed, &removed);
    else
        rc = evict_orphans(&c, need, &freed, &removed);
    /* one image a step when the orphans freed nothing, whatever their scan cost */
    while (rc >= 0 && freed < need && removed < RGM_EVICT_BATCH &&
           (removed == 0 || !is_out_of_time(&c))) {
        rc = choose_image(&c, &after_ms, after_d, &best);
        if (rc <= 0)
            break;
        n = closure_remove(e, &best, RGM_EVICT_LRU_IMAGE, &freed);
        if (n > 0)
            rgm_log(RGM_LOG_INFO, "evict", "evicted image %s (%zu objects)", best.m[0].obj.digest,
                    n);
        removed += n;
        closure_free(&best);
        if (n == 0)
            break; /* nothing of it could go: do not pick it again and again */
    }
    e->bytes_est = freed < e->bytes_est ? e->bytes_est - freed : 0;
    if (rc < 0)
        return rc;
    if (freed == 0 && ((o->budget_us > 0 && (uv_hrtime() - t0) / 1000 >= o->budget_us) ||
                       e->orphan_at.after[0] != '\0'))
        return 1; /* out of time, or the orphan pass is not over: not stuck */
    if (freed == 0) {
        if (!e->is_stuck_logged)
            rgm_log(RGM_LOG_WARN, "evict",
                    "cache is %llu bytes, over max_cache_bytes %llu, and nothing more may go: "
                    "the rest is pinned, in use, served within tag_ttl or orphans within "
                    "orphan_grace; eviction stops until that changes",
                    (unsigned long long)bytes, (unsigned long long)o->max_bytes);
        e->is_stuck_logged = 1;
        return 0;
    }
    return bytes - freed > o->target_bytes ? 1 : 0;
}

/* ---- one image: describe, remove ---- */

int rgm_evict_describe(rgm_evict_t *e, const rgm_index_object_t *top, const rgm_evict_opts_t *o,
                       rgm_evict_image_t *out)
{
    struct ctx c = {e, o, rgm_time_ms(), 0};
    struct closure cl;
    size_t i;
    int rc;

    memset(out, 0, sizeof(*out));
    snprintf(out->digest, sizeof(out->digest), "%s", top->digest);
    snprintf(out->media_type, sizeof(out->media_type), "%s", top->media_type);
    rc = rgm_pins_match(e->pins, top->digest, c.now, o->tag_ttl_ms, out->pin, sizeof(out->pin),
                        NULL);
    if (rc < 0)
        return rc;
    out->is_pinned = rc;
    closure_build(&cl, &c, top);
    if (cl.err < 0) {
        closure_free(&cl);
        return cl.err;
    }
    for (i = 0; i < cl.n; i++) {
        if (cl.m[i].is_unique) {
            out->unique_bytes += cl.m[i].obj.size;
            out->unique_objects++;
        } else {
            out->shared_bytes += cl.m[i].obj.size;
        }
    }
    out->last_used_ms = cl.last_used_ms;
    closure_free(&cl);
    return 0;
}

int rgm_evict_remove_image(rgm_evict_t *e, const char *digest, enum rgm_evict_reason reason,
                           const rgm_evict_opts_t *o, uint64_t *freed)
{
    struct ctx c = {e, o, rgm_time_ms(), 0};
    rgm_index_object_t top;
    struct closure cl;
    uint64_t f = 0;
    size_t n;
    int rc = rgm_index_get_object(e->idx, digest, &top);

    if (rc < 0)
        return rc;
    closure_build(&cl, &c, &top);
    if (cl.err < 0) {
        closure_free(&cl);
        return cl.err;
    }
    cl.m[0].is_unique = 1; /* the top goes even when pinned: the caller decided */
    n = closure_remove(e, &cl, reason, &f);
    closure_free(&cl);
    if (freed)
        *freed += f;
    return (int)n;
}

/* ---- the tally for /metrics ---- */

struct tally_walk {
    rgm_evict_t *e;
    const rgm_evict_opts_t *o;
    size_t seen;
    int err;
};

static int tally_one(const rgm_index_object_t *top, void *ud)
{
    struct tally_walk *w = ud;
    rgm_evict_t *e = w->e;
    rgm_evict_image_t info;

    w->seen++;
    e->tally_after_ms = top->last_access_ms;
    snprintf(e->tally_after, sizeof(e->tally_after), "%s", top->digest);
    w->err = rgm_evict_describe(e, top, w->o, &info);
    if (w->err < 0)
        return 1;
    e->partial.images++;
    e->partial.unique_bytes += info.unique_bytes;
    e->partial.shared_bytes += info.shared_bytes;
    if (info.is_pinned) {
        e->partial.pinned_images++;
        e->partial.pinned_bytes += info.unique_bytes + info.shared_bytes;
    }
    return 0;
}

int rgm_evict_tally_step(rgm_evict_t *e, const rgm_evict_opts_t *o, size_t n)
{
    struct tally_walk w = {e, o, 0, 0};
    int rc;

    if (n == 0)
        n = RGM_EVICT_BATCH; /* 0 would mean every image in one go */
    rc = rgm_refs_walk_tops(e->refs, e->tally_after_ms, e->tally_after, n, tally_one, &w);
    if (rc < 0 || w.err < 0) {
        memset(&e->partial, 0, sizeof(e->partial));
        e->tally_after_ms = 0;
        e->tally_after[0] = '\0';
        return rc < 0 ? rc : w.err;
    }
    if (w.seen == n)
        return 1;
    e->partial.passes = e->tally.passes + 1;
    e->tally = e->partial;
    memset(&e->partial, 0, sizeof(e->partial));
    e->tally_after_ms = 0;
    e->tally_after[0] = '\0';
    return 0;
}

const rgm_evict_tally_t *rgm_evict_tally(const rgm_evict_t *e)
{
    return &e->tally;
}
