/* The references table in index.db: edges parent -> child (and subject -> referrer), the set
 * of manifests whose edges are recorded, and the back-fill that scans the others. Statements
 * are prepared once; every value is bound. Manifests are parsed with jansson. */
#include "cache/refs.h"

#include <jansson.h>
#include <sqlite3.h>
#include <uv.h>

#include "core/log.h"
#include "cache/sql.h"

/* Manifests are at most 4 MiB (registry/manifests). */
#define MANIFEST_MAX (4u * 1024 * 1024)

enum {
    RS_ADD_EDGE,
    RS_MARK,
    RS_UNSCANNED,
    RS_CHILDREN,
    RS_PARENTS,
    RS_TOPS,
    RS_ORPHANS,
    RS_DEL_EDGES,
    RS_DEL_MARK,
    RS_COUNT
};

static const char *const rs_sql[RS_COUNT] = {
    [RS_ADD_EDGE] = "INSERT OR IGNORE INTO refs(parent, child, kind) VALUES (?1, ?2, ?3)",
    [RS_MARK] = "INSERT OR IGNORE INTO refs_scanned(digest) VALUES (?1)",
    [RS_UNSCANNED] = "SELECT digest FROM objects WHERE kind = 'manifest' AND digest > ?1 AND NOT "
                     "EXISTS (SELECT 1 FROM refs_scanned s WHERE s.digest = objects.digest) "
                     "ORDER BY digest LIMIT ?2",
    [RS_CHILDREN] = "SELECT r.child, r.kind FROM refs r JOIN objects o ON o.digest = r.child "
                    "WHERE r.parent = ?1",
    [RS_PARENTS] = "SELECT r.parent, r.kind FROM refs r JOIN objects o ON o.digest = r.parent "
                   "WHERE r.child = ?1",
    [RS_TOPS] = "SELECT digest, size, media_type, kind, created, last_access, hits FROM objects o "
                "WHERE kind = 'manifest' AND (last_access, digest) > (?1, ?2) AND NOT EXISTS "
                "(SELECT 1 FROM refs r JOIN objects p ON p.digest = r.parent WHERE r.child = "
                "o.digest) ORDER BY last_access, digest LIMIT ?3",
    [RS_ORPHANS] = "SELECT digest, size, media_type, kind, created, last_access, hits, NOT EXISTS "
                   "(SELECT 1 FROM refs r JOIN objects p ON p.digest = r.parent WHERE r.child = "
                   "o.digest) FROM objects o WHERE kind = 'blob' AND (last_access, digest) > "
                   "(?1, ?2) AND last_access < ?3 ORDER BY last_access, digest LIMIT ?4",
    [RS_DEL_EDGES] = "DELETE FROM refs WHERE parent = ?1",
    [RS_DEL_MARK] = "DELETE FROM refs_scanned WHERE digest = ?1",
};

/* An index on tags(digest) serves cache/pins and the listing (which tags name an image).
 * objects_manifests serves RS_TOPS: the manifests in the order of use, from a cursor. Without
 * it that walk went through every blob first (2.9 s at 1,000,000 blobs and no manifest, 13 s
 * while eviction ran: the image tally's first step after the reconcile held the loop that
 * long). A partial index: manifests are few; an older index.db gets it at the next start (one
 * pass over the objects, 0.1 s at 1,000,000 rows here). */
static const char refs_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS refs("
    " parent TEXT NOT NULL,"
    " child TEXT NOT NULL,"
    " kind INTEGER NOT NULL,"
    " PRIMARY KEY (parent, child)"
    ") WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS refs_child ON refs(child);"
    "CREATE TABLE IF NOT EXISTS refs_scanned(digest TEXT PRIMARY KEY NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS tags_digest ON tags(digest);"
    "CREATE INDEX IF NOT EXISTS objects_manifests ON objects(last_access, digest) "
    "WHERE kind = 'manifest';";

struct rgm_refs {
    rgm_index_t *idx;
    rgm_store_t *store;
    sqlite3_stmt *st[RS_COUNT];
    char backfill_after[RGM_DIGEST_MAX];
    int is_complete;
};

/* ---- helpers ---- */

/* A statement that returns no rows. */
static int run_st(rgm_refs_t *r, int which, const char *what)
{
    sqlite3 *db = rgm_index_db_write(r->idx);
    sqlite3_stmt *st = r->st[which];
    int rc = sqlite3_step(st);

    rgm_sql_done(st);
    return rc == SQLITE_DONE ? 0 : rgm_sql_fail(db, "refs", what);
}

/* ---- open / close ---- */

int rgm_refs_open(rgm_index_t *idx, rgm_store_t *store, rgm_refs_t **out)
{
    rgm_refs_t *r = rgm_calloc(1, sizeof(*r));
    sqlite3 *db = rgm_index_db_write(idx);
    int i;

    *out = NULL;
    r->idx = idx;
    r->store = store;
    if (rgm_sql_exec(db, "refs", refs_schema_sql) < 0)
        goto fail;
    for (i = 0; i < RS_COUNT; i++) {
        if (sqlite3_prepare_v3(db, rs_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &r->st[i], NULL) !=
            SQLITE_OK) {
            (void)rgm_sql_fail(db, "refs", rs_sql[i]);
            goto fail;
        }
    }
    *out = r;
    return 0;

fail:
    rgm_refs_close(r);
    return UV_EIO;
}

void rgm_refs_close(rgm_refs_t *r)
{
    int i;

    if (!r)
        return;
    for (i = 0; i < RS_COUNT; i++)
        sqlite3_finalize(r->st[i]);
    free(r);
}

/* ---- recording ---- */

static int add_edge(rgm_refs_t *r, const char *parent, const char *child, int kind)
{
    sqlite3_stmt *st = r->st[RS_ADD_EDGE];

    if (rgm_digest_check(child) < 0 || strcmp(parent, child) == 0)
        return 0; /* not a digest we could hold */
    rgm_sql_bind_text(st, 1, parent);
    rgm_sql_bind_text(st, 2, child);
    (void)sqlite3_bind_int(st, 3, kind);
    return run_st(r, RS_ADD_EDGE, "add edge");
}

/* Every element's member `key` of the array doc[list]. */
static int add_list(rgm_refs_t *r, const char *digest, const json_t *doc, const char *list,
                    const char *key)
{
    const json_t *arr = json_object_get(doc, list);
    const json_t *d;
    size_t i;
    int err = 0;

    for (i = 0; err == 0 && json_is_array(arr) && i < json_array_size(arr); i++) {
        d = json_object_get(json_array_get(arr, i), key);
        if (json_is_string(d))
            err = add_edge(r, digest, json_string_value(d), RGM_REF_CHILD);
    }
    return err;
}

static int record_doc(rgm_refs_t *r, const char *digest, const json_t *doc)
{
    const json_t *d;
    int err = 0;

    d = json_object_get(json_object_get(doc, "config"), "digest");
    if (json_is_string(d))
        err = add_edge(r, digest, json_string_value(d), RGM_REF_CHILD);
    if (err == 0)
        err = add_list(r, digest, doc, "layers", "digest");
    if (err == 0)
        err = add_list(r, digest, doc, "manifests", "digest");
    if (err == 0)
        err = add_list(r, digest, doc, "blobs", "digest"); /* OCI artifact manifests */
    if (err == 0)
        err = add_list(r, digest, doc, "fsLayers", "blobSum"); /* Docker schema 1 */
    d = json_object_get(json_object_get(doc, "subject"), "digest");
    /* subject -> referrer: the referrer is kept while its subject is, and goes with it */
    if (err == 0 && json_is_string(d))
        err = add_edge(r, json_string_value(d), digest, RGM_REF_REFERRER);
    return err;
}

int rgm_refs_record(rgm_refs_t *r, const char *digest, const void *data, size_t len)
{
    sqlite3 *db = rgm_index_db_write(r->idx);
    json_t *doc = json_loadb(data, len, 0, NULL);
    int err;

    if (rgm_sql_exec(db, "refs", "BEGIN IMMEDIATE") < 0) {
        json_decref(doc);
        return UV_EIO;
    }
    err = json_is_object(doc) ? record_doc(r, digest, doc) : 0;
    json_decref(doc);
    if (err == 0) {
        rgm_sql_bind_text(r->st[RS_MARK], 1, digest);
        err = run_st(r, RS_MARK, "mark scanned");
    }
    if (err == 0)
        err = rgm_sql_exec(db, "refs", "COMMIT");
    /* a failed COMMIT can leave the transaction open: every later write would join it */
    if (err < 0 && !sqlite3_get_autocommit(db))
        (void)rgm_sql_exec(db, "refs", "ROLLBACK");
    return err;
}

/* ---- back-fill ---- */

int rgm_refs_is_complete(const rgm_refs_t *r)
{
    return r->is_complete;
}

int rgm_refs_backfill_step(rgm_refs_t *r, size_t max)
{
    sqlite3 *db = rgm_index_db_read(r->idx);
    sqlite3_stmt *st = r->st[RS_UNSCANNED];
    char(*todo)[RGM_DIGEST_MAX] = rgm_calloc(max ? max : 1, RGM_DIGEST_MAX);
    void *data = NULL;
    size_t len = 0, n = 0, i;
    int rc;
    int err = 0;

    rgm_sql_bind_text(st, 1, r->backfill_after);
    (void)sqlite3_bind_int64(st, 2, rgm_sql_i64(max));
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW)
        rgm_sql_col_text(st, 0, todo[n++], RGM_DIGEST_MAX);
    if (n < max && rc != SQLITE_DONE)
        err = rgm_sql_fail(db, "refs", "back-fill: manifests");
    rgm_sql_done(st);
    for (i = 0; err == 0 && i < n; i++) {
        /* small synchronous reads from the page cache: a manifest is a few KiB */
        if (rgm_store_read_small(r->store, todo[i], MANIFEST_MAX, &data, &len) < 0) {
            data = NULL;
            len = 0;
        }
        err = rgm_refs_record(r, todo[i], data ? data : "", len);
        RGM_FREE(data);
    }
    if (err == 0 && n > 0)
        snprintf(r->backfill_after, sizeof(r->backfill_after), "%s", todo[n - 1]);
    free(todo);
    if (err < 0)
        return err;
    if (n == max && max > 0)
        return 1;
    r->is_complete = 1;
    return 0;
}

int rgm_refs_backfill(rgm_refs_t *r)
{
    int rc;

    do
        rc = rgm_refs_backfill_step(r, 256);
    while (rc > 0);
    return rc;
}

/* ---- walks ---- */

static int walk_digests(rgm_refs_t *r, int which, const char *digest, rgm_refs_fn cb, void *ud)
{
    sqlite3 *db = rgm_index_db_read(r->idx);
    sqlite3_stmt *st = r->st[which];
    char d[RGM_DIGEST_MAX];
    int count = 0;
    int rc;

    rgm_sql_bind_text(st, 1, digest);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        rgm_sql_col_text(st, 0, d, sizeof(d));
        count++;
        if (cb(d, sqlite3_column_int(st, 1), ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    rgm_sql_done(st);
    return rc == SQLITE_DONE ? count : rgm_sql_fail(db, "refs", "walk edges");
}

int rgm_refs_children(rgm_refs_t *r, const char *parent, rgm_refs_fn cb, void *ud)
{
    return walk_digests(r, RS_CHILDREN, parent, cb, ud);
}

int rgm_refs_parents(rgm_refs_t *r, const char *child, rgm_refs_fn cb, void *ud)
{
    return walk_digests(r, RS_PARENTS, child, cb, ud);
}

/* Rows of the objects' columns, as the index's own walks give them. */
static void row_object(sqlite3_stmt *st, rgm_index_object_t *obj);

static int walk_objects(rgm_refs_t *r, sqlite3_stmt *st, rgm_index_object_fn cb, void *ud)
{
    sqlite3 *db = rgm_index_db_read(r->idx);
    rgm_index_object_t obj;
    int count = 0;
    int rc;

    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_object(st, &obj);
        count++;
        if (cb(&obj, ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    rgm_sql_done(st);
    return rc == SQLITE_DONE ? count : rgm_sql_fail(db, "refs", "walk objects");
}

int rgm_refs_walk_tops(rgm_refs_t *r, uint64_t after_ms, const char *after_digest, size_t n,
                       rgm_index_object_fn cb, void *ud)
{
    sqlite3_stmt *st = r->st[RS_TOPS];

    (void)rgm_index_db_read(r->idx);
    (void)sqlite3_bind_int64(st, 1, rgm_sql_i64(after_ms));
    rgm_sql_bind_text(st, 2, after_digest);
    (void)sqlite3_bind_int64(st, 3, n == 0 ? -1 : rgm_sql_i64(n));
    return walk_objects(r, st, cb, ud);
}

/* One row of an objects query (the columns of walk_objects' statements) into obj. */
static void row_object(sqlite3_stmt *st, rgm_index_object_t *obj)
{
    const unsigned char *kind;

    memset(obj, 0, sizeof(*obj));
    rgm_sql_col_text(st, 0, obj->digest, sizeof(obj->digest));
    obj->size = rgm_sql_col_u64(st, 1);
    rgm_sql_col_text(st, 2, obj->media_type, sizeof(obj->media_type));
    kind = sqlite3_column_text(st, 3);
    obj->kind =
        kind && strcmp((const char *)kind, "manifest") == 0 ? RGM_OBJ_MANIFEST : RGM_OBJ_BLOB;
    obj->created_ms = rgm_sql_col_u64(st, 4);
    obj->last_access_ms = rgm_sql_col_u64(st, 5);
    obj->hits = rgm_sql_col_u64(st, 6);
}

int rgm_refs_scan_orphans(rgm_refs_t *r, rgm_refs_cursor_t *cur, uint64_t before_ms, size_t rows,
                          rgm_index_object_fn cb, void *ud)
{
    sqlite3 *db = rgm_index_db_read(r->idx);
    sqlite3_stmt *st = r->st[RS_ORPHANS];
    rgm_index_object_t obj;
    int count = 0;
    int rc;

    (void)sqlite3_bind_int64(st, 1, rgm_sql_i64(cur->after_ms));
    rgm_sql_bind_text(st, 2, cur->after);
    (void)sqlite3_bind_int64(st, 3, rgm_sql_i64(before_ms));
    (void)sqlite3_bind_int64(st, 4, rgm_sql_i64(rows));
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_object(st, &obj);
        count++;
        cur->after_ms = obj.last_access_ms;
        snprintf(cur->after, sizeof(cur->after), "%s", obj.digest);
        if (sqlite3_column_int(st, 7) != 0 && cb(&obj, ud) != 0) {
            rc = SQLITE_DONE;
            break;
        }
    }
    rgm_sql_done(st);
    return rc == SQLITE_DONE ? count : rgm_sql_fail(db, "refs", "scan orphans");
}

/* ---- removal ---- */

int rgm_refs_remove(rgm_refs_t *r, const char *digest)
{
    int err = rgm_store_remove(r->store, digest);

    if (err == 0)
        err = rgm_index_remove_object(r->idx, digest);
    if (err == 0) {
        rgm_sql_bind_text(r->st[RS_DEL_EDGES], 1, digest);
        err = run_st(r, RS_DEL_EDGES, "remove edges");
    }
    if (err == 0) {
        rgm_sql_bind_text(r->st[RS_DEL_MARK], 1, digest);
        err = run_st(r, RS_DEL_MARK, "remove scanned mark");
    }
    return err;
}
