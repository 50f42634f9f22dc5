/* Making index and store agree: rows checked against their files in batches (rows without
 * their file, or of another size, dropped; origins without an object dropped), files without a
 * row deleted, and the whole pass for the offline commands. The stepping from the loop is
 * cache/reconcile's. */
#include "cache/index.h"

#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"
#include "cache/index-int.h"

/* ---- reconcile ---- */

void rgm_index_check_files(rgm_index_t *idx, rgm_store_t *store, const char *after)
{
    idx->check_store = store;
    snprintf(idx->check_after, sizeof(idx->check_after), "%s", after ? after : "");
}

static int gc_origins(rgm_index_t *idx, const char *after, const char *upto)
{
    sqlite3_stmt *st = idx->st[ST_GC_ORIGINS];
    int rc;

    rgm_index_read_end(idx);
    (void)bind_text(st, 1, after);
    (void)bind_text(st, 2, upto);
    rc = sqlite3_step(st);
    st_done(st);
    return rc == SQLITE_DONE ? 0 : rgm_index_fail(idx, "reconcile: origins");
}

int rgm_index_reconcile_rows(rgm_index_t *idx, rgm_store_t *store, char *after, size_t max,
                             size_t *dropped)
{
    sqlite3_stmt *st = idx->st[ST_ROWS_AFTER];
    struct row {
        char digest[RGM_DIGEST_MAX];
        uint64_t size;
    } *rows = rgm_malloc((max ? max : 1) * sizeof(*rows));
    size_t n = 0, i;
    int rc = SQLITE_DONE;
    int err = 0;

    rgm_index_read_begin(idx);
    (void)bind_text(st, 1, after);
    (void)sqlite3_bind_int64(st, 2, (sqlite3_int64)max);
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        col_text(st, 0, rows[n].digest, sizeof(rows[n].digest));
        rows[n].size = col_u64(st, 1);
        n++;
    }
    if (n < max && rc != SQLITE_DONE)
        err = rgm_index_fail(idx, "reconcile: rows");
    st_done(st);
    for (i = 0; err == 0 && i < n; i++) {
        err = rgm_index_check_row(idx, store, rows[i].digest, rows[i].size);
        if (err == 1) {
            (*dropped)++;
            err = 0;
        }
    }
    /* the origins of this range; after the last row, all the rest */
    if (err == 0)
        err = gc_origins(idx, after, n == max ? rows[n - 1].digest : "~");
    if (err == 0 && n > 0)
        snprintf(after, RGM_DIGEST_MAX, "%s", rows[n - 1].digest);
    free(rows);
    if (err < 0)
        return err;
    return n == max && max > 0 ? 1 : 0;
}

int rgm_index_reconcile_file(rgm_index_t *idx, rgm_store_t *store, const char *digest)
{
    rgm_index_object_t obj;
    int err = rgm_index_get_object(idx, digest, &obj);

    if (err != UV_ENOENT)
        return err; /* 0: it has a row; or UV_EIO */
    return rgm_store_remove(store, digest) == 0 ? 1 : 0;
}

struct reconcile {
    rgm_index_t *idx;
    rgm_store_t *store;
    unsigned long files_deleted;
    int err;
};

static int reconcile_file(const char *digest, uint64_t size, void *ud)
{
    struct reconcile *r = ud;
    int rc;

    (void)size; /* sizes were compared from the rows' side */
    rc = rgm_index_reconcile_file(r->idx, r->store, digest);
    if (rc < 0) {
        r->err = rc;
        return 1;
    }
    r->files_deleted += (unsigned long)rc;
    return 0;
}

int rgm_index_reconcile(rgm_index_t *idx, rgm_store_t *store)
{
    struct reconcile r = {idx, store, 0, 0};
    char after[RGM_DIGEST_MAX] = "";
    size_t n = 0;
    int err;

    do
        err = rgm_index_reconcile_rows(idx, store, after, 1000, &n);
    while (err > 0);
    if (err < 0)
        return err;
    err = rgm_store_walk(store, reconcile_file, &r);
    if (r.err < 0)
        return r.err;
    if (err < 0) {
        rgm_log(RGM_LOG_ERROR, "index", "reconcile: walk: %s", uv_strerror(err));
        return err;
    }
    rgm_log(RGM_LOG_INFO, "index",
            "reconcile: %zu rows without file dropped, %lu files "
            "without row deleted",
            n, r.files_deleted);
    return 0;
}
