/* Object rows: get (with pending touches, and the file check of a row the background
 * reconcile has not reached), put, remove (with its origins), the totals and the LRU walk
 * (for ls). Origins and tags are in their own files. */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"
#include "cache/index-int.h"

/* ---- helpers ---- */

static int col_kind(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);

    return s && strcmp((const char *)s, "manifest") == 0 ? RGM_OBJ_MANIFEST : RGM_OBJ_BLOB;
}

static uint64_t now_ms(void)
{
    uv_timeval64_t tv;

    if (uv_gettimeofday(&tv) < 0)
        return 0;
    return (uint64_t)tv.tv_sec * 1000 + (uint64_t)tv.tv_usec / 1000;
}

/* ---- objects ---- */

/* Does the row's file exist with the row's size? If not, drop the row (and a file of another
 * size: it is not what the row describes). 0 kept, 1 dropped, <0 on a database error. One
 * stat(2) from the page cache, plus a delete when dropped. */
int rgm_index_check_row(rgm_index_t *idx, rgm_store_t *store, const char *digest, uint64_t size)
{
    uint64_t fsize = 0;
    int has = rgm_store_has(store, digest, &fsize);
    int err;

    if (has == 1 && fsize == size)
        return 0;
    if (has == 1 && rgm_store_remove(store, digest) < 0)
        rgm_log(RGM_LOG_WARN, "index", "reconcile: cannot remove %s", digest);
    err = rgm_index_remove_object(idx, digest);
    return err < 0 ? err : 1;
}

/* A row the background reconcile has not reached yet (rgm_index_check_files). */
static int is_unchecked(const rgm_index_t *idx, const char *digest)
{
    return idx->check_store && strcmp(digest, idx->check_after) > 0;
}

/* Vouching for a digest (its origins) is what lets a file be served: a row not checked yet
 * is checked first, and vouches only when its file is there with the row's size. 1 when the
 * row was dropped. */
int rgm_index_drop_if_unchecked(rgm_index_t *idx, const char *digest)
{
    rgm_index_object_t obj;

    return is_unchecked(idx, digest) && rgm_index_get_object(idx, digest, &obj) == UV_ENOENT;
}

int rgm_index_get_object(rgm_index_t *idx, const char *digest, rgm_index_object_t *obj)
{
    sqlite3_stmt *st = idx->st[ST_GET_OBJECT];
    const struct touch *t;
    int rc;

    rgm_index_read_begin(idx);
    memset(obj, 0, sizeof(*obj));
    (void)bind_text(st, 1, digest);
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        st_done(st);
        return rc == SQLITE_DONE ? UV_ENOENT : rgm_index_fail(idx, "get object");
    }
    snprintf(obj->digest, sizeof(obj->digest), "%s", digest);
    obj->size = col_u64(st, 0);
    col_text(st, 1, obj->media_type, sizeof(obj->media_type));
    obj->kind = col_kind(st, 2);
    obj->created_ms = col_u64(st, 3);
    obj->last_access_ms = col_u64(st, 4);
    obj->hits = col_u64(st, 5);
    st_done(st);
    t = rgm_index_touch_find(idx, digest);
    if (t) {
        obj->hits += t->hits;
        if (t->last_ms > obj->last_access_ms)
            obj->last_access_ms = t->last_ms;
    }
    if (is_unchecked(idx, digest))
        return rgm_index_check_row(idx, idx->check_store, digest, obj->size) == 1 ? UV_ENOENT : 0;
    return 0;
}

int rgm_index_put_object(rgm_index_t *idx, const rgm_index_object_t *obj)
{
    sqlite3_stmt *st = idx->st[ST_PUT_OBJECT];
    uint64_t created = obj->created_ms ? obj->created_ms : now_ms();
    int rc;

    rgm_index_read_end(idx);
    (void)bind_text(st, 1, obj->digest);
    (void)sqlite3_bind_int64(st, 2, to_i64(obj->size));
    (void)bind_text(st, 3, obj->media_type);
    (void)bind_text(st, 4, obj->kind == RGM_OBJ_MANIFEST ? "manifest" : "blob");
    (void)sqlite3_bind_int64(st, 5, to_i64(created));
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "put object");
}

int rgm_index_remove_object(rgm_index_t *idx, const char *digest)
{
    int err;

    rgm_index_read_end(idx);
    err = rgm_index_exec_st(idx, ST_BEGIN, "remove: begin");
    if (err < 0)
        return err;
    (void)bind_text(idx->st[ST_DEL_OBJECT], 1, digest);
    err = rgm_index_exec_st(idx, ST_DEL_OBJECT, "remove object");
    if (err == 0) {
        (void)bind_text(idx->st[ST_DEL_ORIGINS], 1, digest);
        err = rgm_index_exec_st(idx, ST_DEL_ORIGINS, "remove origins");
    }
    if (err == 0)
        err = rgm_index_exec_st(idx, ST_COMMIT, "remove: commit");
    /* a failed COMMIT can leave the transaction open: every later write would join it */
    if (err < 0 && !sqlite3_get_autocommit(idx->db))
        (void)rgm_index_exec_st(idx, ST_ROLLBACK, "remove: rollback");
    return err;
}

int rgm_index_stats(rgm_index_t *idx, uint64_t *objects, uint64_t *bytes)
{
    sqlite3_stmt *st = idx->st[ST_STATS];
    int rc;

    rgm_index_read_begin(idx);
    *objects = 0;
    *bytes = 0;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *objects = col_u64(st, 0);
        *bytes = col_u64(st, 1);
    }
    st_done(st);
    return rc == SQLITE_ROW ? 0 : rgm_index_fail(idx, "stats");
}

int rgm_index_walk_lru(rgm_index_t *idx, size_t n, rgm_index_object_fn cb, void *ud)
{
    sqlite3_stmt *st = idx->st[ST_LRU];
    rgm_index_object_t obj;
    int count = 0;
    int rc;

    if (rgm_index_flush(idx) < 0)
        return UV_EIO;
    (void)sqlite3_bind_int64(st, 1, n == 0 ? -1 : to_i64(n));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        memset(&obj, 0, sizeof(obj));
        col_text(st, 0, obj.digest, sizeof(obj.digest));
        obj.size = col_u64(st, 1);
        col_text(st, 2, obj.media_type, sizeof(obj.media_type));
        obj.kind = col_kind(st, 3);
        obj.created_ms = col_u64(st, 4);
        obj.last_access_ms = col_u64(st, 5);
        obj.hits = col_u64(st, 6);
        count++;
        if (cb(&obj, ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    st_done(st);
    return rc == SQLITE_DONE ? count : rgm_index_fail(idx, "walk lru");
}
