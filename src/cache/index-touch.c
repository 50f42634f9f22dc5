/* The hot path's access updates: rgm_index_touch records a hit in a small in-memory hash
 * table (no SQL) and rgm_index_flush writes every pending one in one transaction. Reads of an
 * object add the pending hits themselves (rgm_index_touch_find). */
#include "cache/index.h"

#include <uv.h>

#include "cache/index-int.h"

#define TOUCH_MAX_PENDING 65536

/* ---- touches ---- */

static size_t touch_bucket(const char *digest)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    while (*digest) {
        h ^= (unsigned char)*digest++;
        h *= 16777619u;
    }
    return h % TOUCH_BUCKETS;
}

struct touch *rgm_index_touch_find(const rgm_index_t *idx, const char *digest)
{
    struct touch *t;

    for (t = idx->touches[touch_bucket(digest)]; t; t = t->next) {
        if (strcmp(t->digest, digest) == 0)
            return t;
    }
    return NULL;
}

void rgm_index_touch(rgm_index_t *idx, const char *digest, uint64_t now)
{
    struct touch *t;
    size_t b;

    if (strlen(digest) >= RGM_DIGEST_MAX)
        return;
    t = rgm_index_touch_find(idx, digest);
    if (!t) {
        if (idx->touch_count >= TOUCH_MAX_PENDING)
            (void)rgm_index_flush(idx);
        b = touch_bucket(digest);
        t = rgm_calloc(1, sizeof(*t));
        snprintf(t->digest, sizeof(t->digest), "%s", digest);
        t->next = idx->touches[b];
        idx->touches[b] = t;
        idx->touch_count++;
    }
    if (now > t->last_ms)
        t->last_ms = now;
    t->hits++;
}

void rgm_index_touches_clear(rgm_index_t *idx)
{
    struct touch *t;
    size_t b;

    for (b = 0; b < TOUCH_BUCKETS; b++) {
        while ((t = idx->touches[b]) != NULL) {
            idx->touches[b] = t->next;
            free(t);
        }
    }
    idx->touch_count = 0;
}

int rgm_index_flush(rgm_index_t *idx)
{
    sqlite3_stmt *st = idx->st[ST_TOUCH];
    struct touch *t;
    size_t b;
    int err;
    int rc;

    rgm_index_read_end(idx);
    if (idx->touch_count == 0)
        return 0;
    err = rgm_index_exec_st(idx, ST_BEGIN, "flush: begin");
    for (b = 0; err == 0 && b < TOUCH_BUCKETS; b++) {
        for (t = idx->touches[b]; err == 0 && t; t = t->next) {
            (void)bind_text(st, 1, t->digest);
            (void)sqlite3_bind_int64(st, 2, to_i64(t->last_ms));
            (void)sqlite3_bind_int64(st, 3, to_i64(t->hits));
            rc = sqlite3_step(st);
            st_done(st);
            if (rc != SQLITE_DONE)
                err = rgm_index_fail(idx, "flush: update");
        }
    }
    if (err == 0)
        err = rgm_index_exec_st(idx, ST_COMMIT, "flush: commit");
    /* A failed COMMIT can leave the transaction open: every later write would join it. */
    if (err < 0 && !sqlite3_get_autocommit(idx->db))
        (void)rgm_index_exec_st(idx, ST_ROLLBACK, "flush: rollback");
    rgm_index_touches_clear(idx);
    return err;
}
