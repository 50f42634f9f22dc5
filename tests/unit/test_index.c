/* Unit tests for the SQLite index: persistence, objects, origins, tags, touch/flush,
 * reconcile with the store, hostile strings stored verbatim. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sqlite3.h>
#include <uv.h>

#include "cache/index.h"
#include "tap.h"

#define D1   "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
#define D2   "sha256:41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3"
/* sha256("x") */
#define D3   "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"
#define EVIL "x'); DROP TABLE objects; --\"\\%s\n"

static char root[256];
static char dbpath[512];

struct tags_acc {
    char buf[1024];
    int n;
    int stop_after;
};

static int on_tag(const char *tag, void *ud)
{
    struct tags_acc *a = ud;
    size_t used = strlen(a->buf);

    snprintf(a->buf + used, sizeof(a->buf) - used, "%s%s", a->n ? "," : "", tag);
    a->n++;
    return a->stop_after && a->n >= a->stop_after;
}

static const char *list(rgm_index_t *idx, const char *reg, const char *repo, const char *after,
                        size_t n, struct tags_acc *a)
{
    memset(a, 0, sizeof(*a));
    if (rgm_index_list_tags(idx, reg, repo, after, n, on_tag, a) < 0)
        return "(error)";
    return a->buf;
}

/* Direct SQL on the database file, to check what flush wrote. */
static long long sql_int(const char *sql, const char *arg)
{
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    long long v = -1;

    if (sqlite3_open_v2(dbpath, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
        goto out;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        goto out;
    if (arg)
        sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static int put(rgm_index_t *idx, const char *digest, uint64_t size, int kind, const char *mt,
               uint64_t created)
{
    rgm_index_object_t o;

    memset(&o, 0, sizeof(o));
    snprintf(o.digest, sizeof(o.digest), "%s", digest);
    snprintf(o.media_type, sizeof(o.media_type), "%s", mt);
    o.size = size;
    o.kind = kind;
    o.created_ms = created;
    return rgm_index_put_object(idx, &o);
}

struct lru_acc {
    char first[RGM_DIGEST_MAX];
    int n;
};

static int on_lru(const rgm_index_object_t *o, void *ud)
{
    struct lru_acc *a = ud;

    if (a->n++ == 0)
        snprintf(a->first, sizeof(a->first), "%s", o->digest);
    return 0;
}

static void test_objects_and_origins(rgm_index_t *idx)
{
    rgm_index_object_t o;
    uint64_t n = 0, bytes = 0;
    int is_public = -1;

    is_int(rgm_index_get_object(idx, D1, &o), UV_ENOENT, "absent object");
    is_int(put(idx, D1, 6, RGM_OBJ_MANIFEST, "application/vnd.oci.image.manifest.v1+json", 1000), 0,
           "put manifest");
    is_int(put(idx, D2, 1000, RGM_OBJ_BLOB, "", 2000), 0, "put blob");
    is_int(rgm_index_get_object(idx, D1, &o), 0, "get object");
    is_int(o.size, 6, "size");
    is_int(o.kind, RGM_OBJ_MANIFEST, "kind");
    is_str(o.media_type, "application/vnd.oci.image.manifest.v1+json", "media type");
    is_int(o.created_ms, 1000, "created");
    is_int(o.last_access_ms, 1000, "last access starts at created");
    is_int(o.hits, 0, "no hits");
    is_str(o.digest, D1, "digest");
    is_int(put(idx, D1, 7, RGM_OBJ_MANIFEST, "other", 5000), 0, "put again");
    is_int(rgm_index_get_object(idx, D1, &o), 0, "get again");
    is_int(o.size, 7, "updated size");
    is_str(o.media_type, "other", "updated media type");
    is_int(o.created_ms, 1000, "created kept");
    is_int(put(idx, D1, 6, RGM_OBJ_MANIFEST, "application/vnd.oci.image.manifest.v1+json", 0), 0,
           "restore");

    is_int(rgm_index_stats(idx, &n, &bytes), 0, "stats");
    is_int(n, 2, "stats objects");
    is_int(bytes, 1006, "stats bytes");

    is_int(rgm_index_has_public_origin(idx, D1), 0, "no origin yet");
    is_int(rgm_index_add_origin(idx, D1, "docker.io", "library/alpine", 0), 0, "private origin");
    is_int(rgm_index_has_public_origin(idx, D1), 0, "private is not public");
    is_int(rgm_index_has_origin(idx, D1, "docker.io", "library/alpine", &is_public), 1,
           "has origin");
    is_int(is_public, 0, "origin private");
    is_int(rgm_index_has_origin(idx, D1, "docker.io", "library/other", NULL), 0,
           "other repo: no origin");
    is_int(rgm_index_has_origin(idx, D1, "ghcr.io", "library/alpine", NULL), 0,
           "other registry: no origin");
    is_int(rgm_index_add_origin(idx, D1, "ghcr.io", "org/app", 1), 0, "public origin");
    is_int(rgm_index_has_public_origin(idx, D1), 1, "public now");
    is_int(rgm_index_has_public_origin(idx, D2), 0, "other digest not public");
    is_int(rgm_index_add_origin(idx, D1, "ghcr.io", "org/app", 0), 0, "origin becomes private");
    is_int(rgm_index_has_public_origin(idx, D1), 0, "is_public replaced");
    is_int(rgm_index_add_origin(idx, D1, "ghcr.io", "org/app", 1), 0, "public again");
}

static void test_tags(rgm_index_t *idx)
{
    struct tags_acc a;
    char digest[RGM_DIGEST_MAX];
    uint64_t checked = 0;

    is_int(rgm_index_get_tag(idx, "docker.io", "library/alpine", "latest", digest, &checked),
           UV_ENOENT, "absent tag");
    is_int(rgm_index_put_tag(idx, "docker.io", "library/alpine", "latest", D2, 10), 0, "put tag");
    is_int(rgm_index_put_tag(idx, "docker.io", "library/alpine", "latest", D1, 20), 0,
           "replace tag");
    is_int(rgm_index_get_tag(idx, "docker.io", "library/alpine", "latest", digest, &checked), 0,
           "get tag");
    is_str(digest, D1, "tag digest replaced");
    is_int(checked, 20, "checked");
    is_int(rgm_index_put_tag(idx, "docker.io", "library/alpine", "3.19", D1, 1), 0, "tag 3.19");
    is_int(rgm_index_put_tag(idx, "docker.io", "library/alpine", "3.18", D1, 1), 0, "tag 3.18");
    is_int(rgm_index_put_tag(idx, "docker.io", "library/alpine", "edge", D1, 1), 0, "tag edge");
    is_int(rgm_index_put_tag(idx, "docker.io", "library/other", "aaa", D1, 1), 0, "other repo");
    is_int(rgm_index_put_tag(idx, "ghcr.io", "library/alpine", "bbb", D1, 1), 0, "other reg");
    is_str(list(idx, "docker.io", "library/alpine", NULL, 0, &a), "3.18,3.19,edge,latest",
           "list all, sorted");
    is_str(list(idx, "docker.io", "library/alpine", "", 2, &a), "3.18,3.19", "list n=2");
    is_str(list(idx, "docker.io", "library/alpine", "3.19", 0, &a), "edge,latest",
           "list after 3.19");
    is_str(list(idx, "docker.io", "library/alpine", "3.19", 1, &a), "edge", "after + n");
    is_str(list(idx, "docker.io", "library/alpine", "latest", 0, &a), "", "after last: empty");
    is_str(list(idx, "docker.io", "library/none", NULL, 0, &a), "", "unknown repo: empty");
    memset(&a, 0, sizeof(a));
    a.stop_after = 1;
    is_int(rgm_index_list_tags(idx, "docker.io", "library/alpine", NULL, 0, on_tag, &a), 1,
           "callback stops listing");
}

static void test_evil(rgm_index_t *idx)
{
    char digest[RGM_DIGEST_MAX];
    struct tags_acc a;
    uint64_t checked = 0;
    int is_public = 0;

    is_int(rgm_index_put_tag(idx, EVIL, EVIL, EVIL, D2, 7), 0, "hostile tag stored");
    is_int(rgm_index_get_tag(idx, EVIL, EVIL, EVIL, digest, &checked), 0, "hostile tag read");
    is_str(digest, D2, "hostile tag digest");
    is_str(list(idx, EVIL, EVIL, NULL, 0, &a), EVIL, "hostile tag listed verbatim");
    is_int(rgm_index_add_origin(idx, D2, EVIL, EVIL, 1), 0, "hostile origin");
    is_int(rgm_index_has_origin(idx, D2, EVIL, EVIL, &is_public), 1, "hostile origin found");
    is_int(rgm_index_has_origin(idx, D2, "x", EVIL, NULL), 0, "no wildcard match");
    is_int(rgm_index_remove_object(idx, D2), 0, "remove D2");
    is_int(rgm_index_has_origin(idx, D2, EVIL, EVIL, NULL), 0, "origins removed with object");
    is_int(put(idx, D2, 1000, RGM_OBJ_BLOB, EVIL, 2000), 0, "hostile media type");
    is_int(sql_int("SELECT COUNT(*) FROM objects WHERE media_type = ?1", EVIL), 1,
           "media type verbatim, table intact");
}

static void test_touch(rgm_index_t *idx)
{
    rgm_index_object_t o;
    struct lru_acc lru = {{0}, 0};

    rgm_index_touch(idx, D1, 50000);
    rgm_index_touch(idx, D1, 40000);
    rgm_index_touch(idx, D1, 60000);
    rgm_index_touch(idx, D3, 70000); /* no row: ignored by flush */
    is_int(sql_int("SELECT hits FROM objects WHERE digest = ?1", D1), 0,
           "touch writes nothing before flush");
    is_int(rgm_index_get_object(idx, D1, &o), 0, "get with pending touches");
    is_int(o.hits, 3, "pending hits visible");
    is_int(o.last_access_ms, 60000, "pending last access visible");
    is_int(rgm_index_flush(idx), 0, "flush");
    is_int(sql_int("SELECT hits FROM objects WHERE digest = ?1", D1), 3, "hits flushed");
    is_int(sql_int("SELECT last_access FROM objects WHERE digest = ?1", D1), 60000,
           "last access flushed (max)");
    is_int(sql_int("SELECT COUNT(*) FROM objects WHERE digest = ?1", D3), 0,
           "touch does not create rows");
    rgm_index_touch(idx, D1, 10);
    is_int(rgm_index_flush(idx), 0, "flush older");
    is_int(sql_int("SELECT hits FROM objects WHERE digest = ?1", D1), 4, "hits add up");
    is_int(sql_int("SELECT last_access FROM objects WHERE digest = ?1", D1), 60000,
           "last access never goes back");
    is_int(rgm_index_flush(idx), 0, "empty flush");
    is_int(rgm_index_walk_lru(idx, 0, on_lru, &lru), 2, "lru walk count");
    is_str(lru.first, D2, "least recently used first");
    rgm_index_touch(idx, D2, 99000);
    memset(&lru, 0, sizeof(lru));
    is_int(rgm_index_walk_lru(idx, 1, on_lru, &lru), 1, "lru walk n=1");
    is_str(lru.first, D1, "lru after touch");
}

static void test_reconcile(void)
{
    rgm_index_t *idx = NULL;
    rgm_store_t *s = NULL;
    rgm_index_object_t o;
    char storage[300];

    snprintf(storage, sizeof(storage), "%s/st", root);
    is_int(rgm_store_open(storage, &s), 0, "store open");
    is_int(rgm_index_open(dbpath, &idx), 0, "reopen index");
    /* D1 (6 bytes "hello\n") has a row and gets a file; D2 has a row and no file; D3 has a
     * file and no row. */
    is_int(rgm_store_put_small(s, D1, "hello\n", 6), 0, "file for D1");
    is_int(rgm_store_put_small(s, D3, "x", 1), 0, "file for D3");
    is_int(rgm_index_reconcile(idx, s), 0, "reconcile");
    is_int(rgm_index_get_object(idx, D1, &o), 0, "row with file kept");
    is_int(rgm_store_has(s, D1, NULL), 1, "file with row kept");
    is_int(rgm_index_get_object(idx, D2, &o), UV_ENOENT, "row without file dropped");
    is_int(rgm_store_has(s, D3, NULL), 0, "file without row deleted");
    is_int(sql_int("SELECT COUNT(*) FROM origins WHERE digest = ?1", D2), 0,
           "origins of dropped row gone");
    is_int(rgm_index_has_public_origin(idx, D1), 1, "origins of kept row kept");

    /* a row whose file has another size: both go */
    is_int(put(idx, D1, 999, RGM_OBJ_MANIFEST, "", 0), 0, "wrong size row");
    is_int(rgm_index_reconcile(idx, s), 0, "reconcile size");
    is_int(rgm_index_get_object(idx, D1, &o), UV_ENOENT, "size mismatch row dropped");
    is_int(rgm_store_has(s, D1, NULL), 0, "size mismatch file deleted");
    rgm_index_close(idx);
    rgm_store_close(s);
}

/* Run sql on the database file (a script's or an older build's change). 0 or -1. */
static int sql_exec(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    int rc = -1;

    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) == SQLITE_OK &&
        sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK)
        rc = 0;
    sqlite3_close(db);
    return rc;
}

/* 3000 tag rows from tag number first, one commit each. 0 or -1. */
static int put_tags(rgm_index_t *idx, int first)
{
    char tag[32];
    int i;

    for (i = first; i < first + 3000; i++) {
        snprintf(tag, sizeof(tag), "t%d", i);
        if (rgm_index_put_tag(idx, "docker.io", "x/y", tag, D2, (uint64_t)i) < 0)
            return -1;
    }
    return 0;
}

/* object_totals (stats in constant time) follows every change of objects, ours or not, and a
 * store without it is counted once on open. */
static void test_totals(void)
{
    rgm_index_t *idx = NULL;
    uint64_t n = 0, bytes = 0;
    char p2[600];
    uv_loop_t loop;

    snprintf(p2, sizeof(p2), "%s/totals.db", root);
    is_int(rgm_index_open(p2, &idx), 0, "totals: open");
    is_int(put(idx, D1, 10, RGM_OBJ_BLOB, "", 1), 0, "totals: put D1");
    is_int(put(idx, D2, 200, RGM_OBJ_BLOB, "", 2), 0, "totals: put D2");
    is_int(put(idx, D2, 300, RGM_OBJ_BLOB, "", 2), 0, "totals: D2 again, another size");
    is_int(rgm_index_stats(idx, &n, &bytes), 0, "totals: stats");
    ok(n == 2 && bytes == 310, "totals: 2 objects, 310 bytes (%llu, %llu)", (unsigned long long)n,
       (unsigned long long)bytes);
    is_int(rgm_index_add_origin(idx, D2, "docker.io", "x/y", 1), 0, "totals: an origin");
    is_int(rgm_index_remove_object(idx, D1), 0, "totals: remove D1");
    is_int(rgm_index_remove_object(idx, D3), 0, "totals: remove D3 (absent)");
    is_int(rgm_index_stats(idx, &n, &bytes), 0, "totals: stats after");
    ok(n == 1 && bytes == 300, "totals: D2 left (%llu, %llu)", (unsigned long long)n,
       (unsigned long long)bytes);
    is_int(rgm_index_remove_object(idx, D2), 0, "totals: remove D2");
    is_int(rgm_index_stats(idx, &n, &bytes), 0, "totals: stats empty");
    ok(n == 0 && bytes == 0, "totals: empty (%llu, %llu)", (unsigned long long)n,
       (unsigned long long)bytes);
    is_int(rgm_index_has_public_origin(idx, D2), 0, "totals: remove took the origins");
    is_int(put(idx, D1, 10, RGM_OBJ_BLOB, "", 1), 0, "totals: put D1 again");
    rgm_index_close(idx);
    idx = NULL;

    /* an older build's store: no totals table, rows it inserted itself */
    ok(sql_exec(p2, "DROP TABLE object_totals; DROP TRIGGER IF EXISTS object_totals_ins;"
                    "DROP TRIGGER IF EXISTS object_totals_del;"
                    "DROP TRIGGER IF EXISTS object_totals_upd;"
                    "INSERT INTO objects VALUES ('" D2 "', 5, '', 'blob', 1, 1, 0);") == 0,
       "totals: make an older store");
    is_int(rgm_index_open(p2, &idx), 0, "totals: open the older store");
    is_int(rgm_index_stats(idx, &n, &bytes), 0, "totals: stats");
    ok(n == 2 && bytes == 15, "totals: counted once on open (%llu, %llu)", (unsigned long long)n,
       (unsigned long long)bytes);
    rgm_index_close(idx);
    idx = NULL;
    /* a script's rows (mkstore.py) keep it right too */
    ok(sql_exec(p2, "INSERT INTO objects VALUES ('" D3 "', 7, '', 'blob', 1, 1, 0);"
                    "DELETE FROM objects WHERE digest = '" D1 "';") == 0,
       "totals: rows changed behind our back");
    is_int(rgm_index_open(p2, &idx), 0, "totals: reopen");
    is_int(rgm_index_stats(idx, &n, &bytes), 0, "totals: stats");
    ok(n == 2 && bytes == 12, "totals: followed by the triggers (%llu, %llu)",
       (unsigned long long)n, (unsigned long long)bytes);

    /* checkpoints on the pool: commits past 1000 WAL pages queue one (an active request on the
     * loop: none without rgm_index_use_loop); the index may close while it runs */
    ok(uv_loop_init(&loop) == 0, "ckpt: loop");
    is_int(put_tags(idx, 0), 0, "ckpt: 3000 commits without a loop");
    is_int(uv_loop_alive(&loop), 0, "ckpt: nothing queued without use_loop");
    rgm_index_use_loop(idx, &loop);
    is_int(put_tags(idx, 3000), 0, "ckpt: 3000 commits");
    is_int(uv_loop_alive(&loop), 1, "ckpt: a checkpoint queued on the pool");
    is_int(uv_run(&loop, UV_RUN_DEFAULT), 0, "ckpt: the loop runs it to its end");
    is_int(put_tags(idx, 6000), 0, "ckpt: 3000 more commits");
    is_int(uv_loop_alive(&loop), 1, "ckpt: another queued");
    rgm_index_close(idx); /* with it in flight: it frees itself when done */
    is_int(uv_run(&loop, UV_RUN_DEFAULT), 0, "ckpt: finishes after the close");
    is_int(uv_loop_close(&loop), 0, "ckpt: nothing left on the loop");
    {
        sqlite3 *db = NULL;
        sqlite3_stmt *st = NULL;
        long long v = -1;

        if (sqlite3_open_v2(p2, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK &&
            sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM tags", -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        sqlite3_close(db);
        is_int(v, 9000, "ckpt: every commit is in the database");
    }
}

/* The referrers section: answers per (registry, repository, subject, query), the "no
 * referrers API" mark, pruning of week-old rows, and a version-1 database without the tables. */
static void test_referrers(rgm_index_t *idx)
{
    rgm_index_referrers_t in;
    rgm_index_referrers_t out;
    const char body[] = "{\"schemaVersion\":2,\"manifests\":[]}\0tail";
    uint64_t at = 0;

    memset(&in, 0, sizeof(in));
    in.body = (char *)body;
    in.body_len = sizeof(body) - 1; /* a NUL inside: stored as bytes, not text */
    snprintf(in.link, sizeof(in.link), "</v2/a/referrers/%s?last=x>; rel=\"next\"", D1);
    snprintf(in.filters, sizeof(in.filters), "artifactType");
    in.is_public = 0;
    in.checked_ms = 10 * 24 * 3600 * 1000ull;
    is_int(rgm_index_get_referrers(idx, "r", "a", D1, "", &out), UV_ENOENT, "referrers: miss");
    ok(out.body == NULL, "referrers: no body on a miss");
    is_int(rgm_index_put_referrers(idx, "r", "a", D1, "artifactType=x", &in), 0, "referrers: put");
    is_int(rgm_index_get_referrers(idx, "r", "a", D1, "", &out), UV_ENOENT,
           "referrers: another query is another answer");
    is_int(rgm_index_get_referrers(idx, "r", "b", D1, "artifactType=x", &out), UV_ENOENT,
           "referrers: another repository is another answer");
    is_int(rgm_index_get_referrers(idx, "r2", "a", D1, "artifactType=x", &out), UV_ENOENT,
           "referrers: another registry is another answer");
    is_int(rgm_index_get_referrers(idx, "r", "a", D1, "artifactType=x", &out), 0, "referrers: hit");
    ok(out.body_len == in.body_len && out.body && memcmp(out.body, body, in.body_len) == 0,
       "referrers: body bytes kept");
    is_str(out.link, in.link, "referrers: link kept");
    is_str(out.filters, "artifactType", "referrers: filters kept");
    is_int(out.is_public, 0, "referrers: private kept");
    ok(out.checked_ms == in.checked_ms, "referrers: checked kept");
    free(out.body);

    in.is_public = 1;
    in.body_len = 2;
    in.checked_ms += 1000;
    is_int(rgm_index_put_referrers(idx, "r", "a", D1, "artifactType=x", &in), 0,
           "referrers: replace");
    is_int(rgm_index_get_referrers(idx, "r", "a", D1, "artifactType=x", &out), 0,
           "referrers: hit after replace");
    ok(out.body_len == 2 && out.is_public == 1, "referrers: replaced row");
    free(out.body);
    is_int(rgm_index_put_referrers(idx, EVIL, EVIL, D2, EVIL, &in), 0, "referrers: hostile key");
    is_int(rgm_index_get_referrers(idx, EVIL, EVIL, D2, EVIL, &out), 0,
           "referrers: hostile key found verbatim");
    free(out.body);

    /* rows checked over a week before a new row are pruned when it is written */
    in.checked_ms = 18 * 24 * 3600 * 1000ull;
    is_int(rgm_index_put_referrers(idx, "r", "a", D3, "", &in), 0, "referrers: a week later");
    is_int(rgm_index_get_referrers(idx, "r", "a", D1, "artifactType=x", &out), UV_ENOENT,
           "referrers: week-old row pruned");
    is_int(rgm_index_get_referrers(idx, "r", "a", D3, "", &out), 0, "referrers: new row kept");
    free(out.body);

    is_int(rgm_index_get_referrers_api(idx, "r", &at), 1, "no-api: nothing recorded");
    is_int(rgm_index_put_referrers_api(idx, "r", 0, 1234), 0, "no-api: record");
    is_int(rgm_index_get_referrers_api(idx, "r", &at), 0, "no-api: recorded");
    ok(at == 1234, "no-api: when");
    is_int(rgm_index_get_referrers_api(idx, "r2", &at), 1, "no-api: per registry");
    is_int(rgm_index_put_referrers_api(idx, "r", 1, 0), 0, "no-api: forget");
    is_int(rgm_index_get_referrers_api(idx, "r", &at), 1, "no-api: forgotten");
    is_int(rgm_index_put_referrers_api(idx, "r", 0, 99), 0, "no-api: record again");
}

/* A version-1 database written before the referrers tables gains them when opened. */
static void test_referrers_upgrade(void)
{
    sqlite3 *db = NULL;
    rgm_index_t *idx = NULL;
    char p2[600];
    uint64_t at = 0;

    snprintf(p2, sizeof(p2), "%s/old.db", root);
    is_int(rgm_index_open(p2, &idx), 0, "old db: create");
    rgm_index_close(idx);
    idx = NULL;
    ok(sqlite3_open(p2, &db) == SQLITE_OK &&
           sqlite3_exec(db, "DROP TABLE referrers; DROP TABLE referrers_noapi", NULL, NULL, NULL) ==
               SQLITE_OK,
       "old db: drop the referrers tables");
    sqlite3_close(db);
    is_int(rgm_index_open(p2, &idx), 0, "old db: opens");
    is_int(rgm_index_get_referrers_api(idx, "r", &at), 1, "old db: referrers tables back");
    rgm_index_close(idx);
}

/* A COMMIT that fails (here a deferred foreign key another table holds on the row) must not
 * leave the removal's transaction open: the row stays and the next write is its own. */
static void test_remove_commit_fails(void)
{
    rgm_index_t *idx = NULL;
    rgm_index_object_t obj;
    char p2[600];
    sqlite3 *db;

    snprintf(p2, sizeof(p2), "%s/commitfail.db", root);
    is_int(rgm_index_open(p2, &idx), 0, "commit fails: open");
    is_int(put(idx, D1, 10, RGM_OBJ_BLOB, "", 1), 0, "commit fails: put D1");
    db = rgm_index_db_write(idx);
    ok(sqlite3_exec(db,
                    "PRAGMA foreign_keys = ON; CREATE TABLE fk(d TEXT REFERENCES objects(digest) "
                    "DEFERRABLE INITIALLY DEFERRED); INSERT INTO fk VALUES ('" D1 "');",
                    NULL, NULL, NULL) == SQLITE_OK,
       "commit fails: a deferred reference to D1");
    ok(rgm_index_remove_object(idx, D1) < 0, "commit fails: remove D1 fails");
    ok(sqlite3_get_autocommit(db) != 0, "commit fails: no transaction left open");
    is_int(rgm_index_get_object(idx, D1, &obj), 0, "commit fails: D1 is still there");
    ok(sqlite3_exec(db, "DROP TABLE fk", NULL, NULL, NULL) == SQLITE_OK,
       "commit fails: drop the reference");
    is_int(rgm_index_remove_object(idx, D1), 0, "commit fails: remove D1 now");
    is_int(rgm_index_get_object(idx, D1, &obj), UV_ENOENT, "commit fails: D1 gone");
    rgm_index_close(idx);
}

int main(void)
{
    rgm_index_t *idx = NULL;
    rgm_index_object_t o;
    char cmd[400];

    snprintf(root, sizeof(root), "/tmp/rgm-test-index.XXXXXX");
    if (!mkdtemp(root)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    snprintf(dbpath, sizeof(dbpath), "%s/index.db", root);

    is_int(rgm_index_open(dbpath, &idx), 0, "open");
    is_int(sql_int("PRAGMA user_version", NULL), RGM_INDEX_SCHEMA_VERSION, "user_version");
    test_objects_and_origins(idx);
    test_tags(idx);
    test_evil(idx);
    test_touch(idx);
    test_referrers(idx);

    /* pending touches are flushed by close, and everything persists */
    rgm_index_touch(idx, D1, 61000);
    rgm_index_close(idx);
    idx = NULL;
    is_int(sql_int("SELECT hits FROM objects WHERE digest = ?1", D1), 5, "close flushes");
    is_int(rgm_index_open(dbpath, &idx), 0, "reopen");
    is_int(rgm_index_get_object(idx, D1, &o), 0, "object persists");
    is_int(o.size, 6, "size persists");
    is_int(o.hits, 5, "hits persist");
    {
        char digest[RGM_DIGEST_MAX];
        uint64_t checked = 0;

        is_int(rgm_index_get_tag(idx, "docker.io", "library/alpine", "latest", digest, &checked), 0,
               "tag persists");
        is_str(digest, D1, "tag digest persists");
    }
    {
        char wal[600];

        is_int(rgm_index_put_tag(idx, "r", "p", "t", D1, 1), 0, "a write");
        snprintf(wal, sizeof(wal), "%s-wal", dbpath);
        ok(access(wal, F_OK) == 0, "WAL journal in use");
    }
    rgm_index_close(idx);
    idx = NULL;

    /* a database from a newer build is refused */
    {
        sqlite3 *db = NULL;
        char p2[600];

        snprintf(p2, sizeof(p2), "%s/future.db", root);
        ok(sqlite3_open(p2, &db) == SQLITE_OK &&
               sqlite3_exec(db, "PRAGMA user_version = 99", NULL, NULL, NULL) == SQLITE_OK,
           "make future db");
        sqlite3_close(db);
        is_int(rgm_index_open(p2, &idx), UV_EIO, "newer schema refused");
        ok(idx == NULL, "no handle on error");
    }

    test_reconcile();
    test_totals();
    test_remove_commit_fails();
    test_referrers_upgrade();

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
    if (system(cmd) != 0)
        printf("# cleanup failed\n");
    return tap_done();
}
