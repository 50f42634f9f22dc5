/* Unit tests for eviction by image (cache/evict over cache/refs and cache/pins): the least
 * recently used image goes whole, a shared layer stays, an index's platforms go with it,
 * referrers go with their subject, orphans go first, pins and readers are respected, and
 * nothing is removed before the back-fill. */
#include <stdlib.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <sqlite3.h>
#include <uv.h>

#include "core/util.h"
#include "cache/evict.h"
#include "tap.h"

static char root[256];
static rgm_store_t *store;
static rgm_index_t *idx;
static rgm_refs_t *refs;
static rgm_pins_t *pins;

static void digest_of(const char *data, size_t len, char *out)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int n = 0;

    if (EVP_Digest(data, len, md, &n, EVP_sha256(), NULL) != 1)
        abort();
    rgm_hex(md, n, hex);
    snprintf(out, RGM_DIGEST_MAX, "sha256:%s", hex);
}

/* Store data as an object last accessed at ms; a manifest records its references. */
static void put(const char *data, size_t len, int is_manifest, uint64_t ms, char *d)
{
    rgm_index_object_t o;

    digest_of(data, len, d);
    memset(&o, 0, sizeof(o));
    snprintf(o.digest, sizeof(o.digest), "%s", d);
    o.size = len;
    o.kind = is_manifest ? RGM_OBJ_MANIFEST : RGM_OBJ_BLOB;
    o.created_ms = ms;
    if (rgm_store_put_small(store, d, data, len) < 0 || rgm_index_put_object(idx, &o) < 0 ||
        (is_manifest && rgm_refs_record(refs, d, data, len) < 0))
        abort();
}

static void put_blob(size_t size, char fill, uint64_t ms, char *d)
{
    char *b = rgm_malloc(size);

    memset(b, fill, size);
    put(b, size, 0, ms, d);
    free(b);
}

static void put_manifest(const char *cfg, const char *l1, const char *l2, const char *subject,
                         uint64_t ms, char *d)
{
    char m[2048];
    int n = snprintf(m, sizeof(m),
                     "{\"schemaVersion\":2,\"config\":{\"digest\":\"%s\"},\"layers\":[{\"digest\":"
                     "\"%s\"},{\"digest\":\"%s\"}]%s%s%s}",
                     cfg, l1, l2, subject ? ",\"subject\":{\"digest\":\"" : "",
                     subject ? subject : "", subject ? "\"}" : "");

    put(m, (size_t)n, 1, ms, d);
}

static int has(const char *d)
{
    return rgm_store_has(store, d, NULL) == 1;
}

static uint64_t total(void)
{
    uint64_t objects = 0, bytes = 0;

    if (rgm_index_stats(idx, &objects, &bytes) < 0)
        abort();
    return bytes;
}

static void open_all(void)
{
    char path[512];

    snprintf(root, sizeof(root), "/tmp/rgm-test-evict-XXXXXX");
    if (!mkdtemp(root) || rgm_store_open(root, &store) < 0 ||
        rgm_store_index_path(store, path, sizeof(path)) < 0 || rgm_index_open(path, &idx) < 0 ||
        rgm_refs_open(idx, store, &refs) < 0 || rgm_pins_open(idx, &pins) < 0)
        abort();
}

static void close_all(void)
{
    char cmd[300];

    rgm_pins_close(pins);
    rgm_refs_close(refs);
    rgm_index_close(idx);
    rgm_store_close(store);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
    if (system(cmd) != 0)
        abort();
}

/* A COMMIT of rgm_refs_record that fails (a deferred foreign key a trigger adds) must not
 * leave its transaction open: the next write is its own, and the mark is not kept. */
static void test_record_commit_fails(void)
{
    static const char m[] = "{\"schemaVersion\":2,\"layers\":[]}";
    char d[RGM_DIGEST_MAX];
    sqlite3 *db = rgm_index_db_write(idx);
    int rc;

    digest_of(m, sizeof(m) - 1, d);
    ok(sqlite3_exec(db,
                    "PRAGMA foreign_keys = ON; CREATE TABLE fk(d TEXT REFERENCES objects(digest) "
                    "DEFERRABLE INITIALLY DEFERRED); CREATE TRIGGER fk_mark AFTER INSERT ON "
                    "refs_scanned BEGIN INSERT INTO fk VALUES (NEW.digest); END;",
                    NULL, NULL, NULL) == SQLITE_OK,
       "record fails: a deferred reference on every mark");
    ok(rgm_refs_record(refs, d, m, sizeof(m) - 1) < 0, "record fails: a manifest with no row");
    ok(sqlite3_get_autocommit(db) != 0, "record fails: no transaction left open");
    rc = sqlite3_exec(db, "DROP TRIGGER fk_mark; DROP TABLE fk; PRAGMA foreign_keys = OFF;", NULL,
                      NULL, NULL);
    ok(rc == SQLITE_OK, "record fails: drop the reference (%d)", rc);
}

int main(void)
{
    char base[RGM_DIGEST_MAX], c1[RGM_DIGEST_MAX], c2[RGM_DIGEST_MAX], l1[RGM_DIGEST_MAX];
    char l2[RGM_DIGEST_MAX], m1[RGM_DIGEST_MAX], m2[RGM_DIGEST_MAX], sig[RGM_DIGEST_MAX];
    char sigl[RGM_DIGEST_MAX], orphan[RGM_DIGEST_MAX], idxd[RGM_DIGEST_MAX];
    char pl[RGM_DIGEST_MAX], p1[RGM_DIGEST_MAX], p2[RGM_DIGEST_MAX], pc[RGM_DIGEST_MAX];
    char doc[1024];
    rgm_evict_opts_t o;
    rgm_evict_t *e;
    rgm_inuse_t *inuse;
    uint64_t now = rgm_time_ms();
    int n;

    open_all();
    {
        /* the walk of the manifests by last use goes through their own index, not every blob */
        sqlite3_stmt *st = NULL;
        int uses = 0;

        if (sqlite3_prepare_v2(rgm_index_db_read(idx),
                               "EXPLAIN QUERY PLAN SELECT digest FROM objects WHERE kind = "
                               "'manifest' AND (last_access, digest) > (0, '') "
                               "ORDER BY last_access, digest LIMIT 8",
                               -1, &st, NULL) == SQLITE_OK) {
            while (sqlite3_step(st) == SQLITE_ROW)
                uses |=
                    strstr((const char *)sqlite3_column_text(st, 3), "objects_manifests") != NULL;
        }
        sqlite3_finalize(st);
        ok(uses, "refs: manifests walked through objects_manifests");
    }
    inuse = rgm_inuse_new();
    put_blob(10000, 'b', now - 90000, base);
    put_blob(100, '1', now - 90000, c1);
    put_blob(3000, 'x', now - 90000, l1);
    put_manifest(c1, base, l1, NULL, now - 80000, m1);
    put_blob(101, '2', now - 50000, c2);
    put_blob(3001, 'y', now - 50000, l2);
    put_manifest(c2, base, l2, NULL, now - 40000, m2);
    put_blob(50, 's', now - 40000, sigl);
    put_manifest(c2, sigl, sigl, m2, now - 40000, sig); /* a referrer of m2 */
    put_blob(2000, 'o', now - 7200000, orphan);

    memset(&o, 0, sizeof(o));
    /* just over the limit: the least recent image (3.3 kB) is enough */
    o.max_bytes = total() - 1;
    o.target_bytes = total() - 3000;
    o.orphan_grace_ms = 3600000;
    o.tag_ttl_ms = 60000;
    e = rgm_evict_new(idx, store, refs, pins, NULL, inuse);
    is_int(rgm_evict_step(e, &o), 0, "nothing before the back-fill");
    ok(has(orphan) && has(m1), "nothing removed before the back-fill");
    is_int(rgm_refs_backfill(refs), 0, "back-fill complete");

    rgm_inuse_hold(inuse, orphan);
    n = rgm_evict_step(e, &o);
    ok(n >= 0, "a step");
    ok(has(orphan), "an orphan being read stays");
    ok(!has(m1) && !has(c1) && !has(l1), "the least recent image went whole");
    ok(has(base), "the shared base layer stays");
    ok(has(m2) && has(c2) && has(l2) && has(sig) && has(sigl),
       "the recent image and its referrer stay");
    rgm_inuse_release(inuse, orphan);
    o.max_bytes = total() - 1;
    o.target_bytes = total() - 1000;
    (void)rgm_evict_step(e, &o);
    ok(!has(orphan), "an old orphan goes first once released");
    ok(has(m2), "then nothing more is needed");

    /* pinned: m2 stays although least recent; an index goes with its platforms */
    put_blob(5000, 'p', now - 30000, pl);
    put_blob(102, 'q', now - 30000, pc);
    put_manifest(pc, pl, base, NULL, now - 30000, p1);
    put_manifest(pc, pl, base, NULL, now - 29000, p2);
    n = snprintf(doc, sizeof(doc),
                 "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"%s\"},{\"digest\":\"%s\"}]}",
                 p1, p2);
    put(doc, (size_t)n, 1, now - 20000, idxd);
    n = snprintf(doc, sizeof(doc), "docker.io/library/app@%s", m2);
    if (rgm_pins_add(pins, doc) < 0)
        abort();
    o.max_bytes = 1000;
    o.target_bytes = 900;
    (void)rgm_evict_step(e, &o);
    ok(has(m2) && has(c2) && has(l2) && has(sig), "a pinned image survives as the least recent");
    ok(!has(idxd) && !has(p1) && !has(p2) && !has(pl) && !has(pc),
       "an index goes with its platforms and their layers");
    ok(has(base), "a layer the pinned image shares stays");
    is_int(rgm_evict_step(e, &o), 0, "pins over the limit: the step stops");
    ok(has(m2) && has(base), "no thrash");

    /* purge: the pinned image goes when the caller says so, referrer included */
    n = rgm_evict_remove_image(e, m2, RGM_EVICT_PURGE, &o, NULL);
    ok(n >= 5 && !has(m2) && !has(sig) && !has(sigl) && !has(base), "purge removes it whole (%d)",
       n);
    is_int((int)rgm_evict_counters(e)->images[RGM_EVICT_PURGE], 1, "counted as a purge");
    ok(rgm_evict_counters(e)->objects[RGM_EVICT_ORPHAN] == 1 &&
           rgm_evict_counters(e)->images[RGM_EVICT_LRU_IMAGE] == 2,
       "counted by reason");
    rgm_evict_free(e);

    /* cluster mode: an unreferenced blob is no orphan; it goes by its last access */
    {
        char old_b[RGM_DIGEST_MAX], new_b[RGM_DIGEST_MAX], cm[RGM_DIGEST_MAX];
        char cc[RGM_DIGEST_MAX], cl[RGM_DIGEST_MAX];

        put_blob(1000, 'O', now - 10000, old_b); /* older than the image */
        put_blob(1001, 'N', now - 1000, new_b);  /* more recent than the image, no grace */
        put_blob(103, 'c', now - 5000, cc);
        put_blob(4000, 'l', now - 5000, cl);
        put_manifest(cc, cl, cl, NULL, now - 5000, cm);
        if (rgm_refs_backfill(refs) < 0)
            abort();
        e = rgm_evict_new(idx, store, refs, pins, NULL, inuse);
        o.is_cluster = 1;
        o.orphan_grace_ms = 3600000;
        /* small steps: blobs left unreferenced above, older still, may go before it */
        for (n = 0; n < 10 && has(old_b); n++) {
            o.max_bytes = total() - 1;
            o.target_bytes = total() - 100;
            (void)rgm_evict_step(e, &o);
        }
        ok(!has(old_b) && has(cm) && has(new_b), "cluster: the older unreferenced blob goes first");
        o.max_bytes = total() - 1;
        o.target_bytes = total() - 4500; /* the image is enough */
        (void)rgm_evict_step(e, &o);
        ok(!has(cm) && !has(cl) && has(new_b),
           "cluster: then the image older than the remaining blob, not the blob (within grace)");
        o.max_bytes = total() - 1;
        o.target_bytes = total() - 100;
        (void)rgm_evict_step(e, &o);
        ok(!has(new_b), "cluster: a recent unreferenced blob goes by last access, no grace");
        ok(rgm_evict_counters(e)->objects[RGM_EVICT_ORPHAN] == 0 &&
               rgm_evict_counters(e)->objects[RGM_EVICT_LRU_IMAGE] >= 5,
           "cluster: nothing counted as an orphan");
        rgm_evict_free(e);
    }
    rgm_inuse_free(inuse);
    test_record_commit_fails();
    close_all();
    return tap_done();
}
