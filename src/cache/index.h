/* The cache index in SQLite (WAL): objects (size, media type, kind, access stats), the
 * registry/repository each object came through and whether that repository is public, and
 * tags. Statements are prepared once at open; every string is bound as a parameter. Hot-path
 * access updates (rgm_index_touch) are coalesced in memory and written by rgm_index_flush.
 * Calls are synchronous single-row queries on the loop thread; it knows rows, not HTTP. */
#ifndef RGM_CACHE_INDEX_H
#define RGM_CACHE_INDEX_H

#include <uv.h>

#include "core/common.h"
#include "cache/store.h"

/* PRAGMA user_version of the schema this code writes. */
#define RGM_INDEX_SCHEMA_VERSION 1

typedef struct rgm_index rgm_index_t;

enum rgm_object_kind { RGM_OBJ_BLOB = 0, RGM_OBJ_MANIFEST = 1 };

typedef struct rgm_index_object {
    char digest[RGM_DIGEST_MAX];
    uint64_t size;
    char media_type[256]; /* "" when not known; longer values are truncated */
    int kind;             /* enum rgm_object_kind */
    uint64_t created_ms;  /* put_object: 0 means now */
    uint64_t last_access_ms;
    uint64_t hits;
} rgm_index_object_t;

/* Open or create the database at path (WAL, synchronous=NORMAL, busy_timeout), create or check
 * the schema. *out is the caller's (rgm_index_close). 0 or UV_EIO (logged). */
RGM_MUST_CHECK int rgm_index_open(const char *path, rgm_index_t **out);
/* Flush pending touches, finalise statements, close. NULL is a no-op. */
void rgm_index_close(rgm_index_t *idx);

/* Read batching (serve): reads share one read transaction until rgm_index_end_batch, which
 * the server calls once per loop turn; writes end the batch first. Off by default. */
void rgm_index_set_batching(rgm_index_t *idx, int on);
void rgm_index_end_batch(rgm_index_t *idx);

/* Fill *obj (pending touches included). 0, UV_ENOENT or UV_EIO. */
RGM_MUST_CHECK int rgm_index_get_object(rgm_index_t *idx, const char *digest,
                                        rgm_index_object_t *obj);
/* Insert, or update size/media type/kind of an existing row (created, last access and hits of
 * an existing row are kept). A new row's last access is its creation time. 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_index_put_object(rgm_index_t *idx, const rgm_index_object_t *obj);
/* Delete the object and its origins (tags are left: they name digests, which are refetched
 * when missing). 0 (also when absent) or UV_EIO. */
RGM_MUST_CHECK int rgm_index_remove_object(rgm_index_t *idx, const char *digest);

/* Record that digest was fetched through registry/repo; is_public replaces an earlier value.
 * 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_index_add_origin(rgm_index_t *idx, const char *digest, const char *registry,
                                        const char *repo, int is_public);
/* 1 when some origin of digest is public, 0 when none, <0 (UV_EIO). */
int rgm_index_has_public_origin(rgm_index_t *idx, const char *digest);
/* 1 when digest came through registry/repo (*is_public set when not NULL), 0 when not, <0. */
int rgm_index_has_origin(rgm_index_t *idx, const char *digest, const char *registry,
                         const char *repo, int *is_public);

/* 1 when digest came through some repository of registry, 0 when not, <0 (UV_EIO). */
int rgm_index_has_registry_origin(rgm_index_t *idx, const char *digest, const char *registry);

/* Tag -> digest (digest_out has RGM_DIGEST_MAX bytes), and when it was last checked upstream.
 * 0, UV_ENOENT or UV_EIO. */
RGM_MUST_CHECK int rgm_index_get_tag(rgm_index_t *idx, const char *registry, const char *repo,
                                     const char *tag, char *digest_out, uint64_t *checked_ms);
/* Insert or replace. 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_index_put_tag(rgm_index_t *idx, const char *registry, const char *repo,
                                     const char *tag, const char *digest, uint64_t checked_ms);
/* Called per tag, in byte order; tag is borrowed for the call. Non-zero stops the listing. */
typedef int (*rgm_index_tag_fn)(const char *tag, void *ud);
/* Tags of registry/repo sorted, strictly after `after` (NULL or "" = from the start), at most
 * n (0 = no limit); for the tags/list fallback. Returns the number of tags given to cb, or
 * UV_EIO. */
int rgm_index_list_tags(rgm_index_t *idx, const char *registry, const char *repo, const char *after,
                        size_t n, rgm_index_tag_fn cb, void *ud);

/* Record a hit (hot path): coalesced in memory, no SQL. Written by the next flush. (Only when
 * more than 65536 distinct digests are pending does it flush inline.) */
void rgm_index_touch(rgm_index_t *idx, const char *digest, uint64_t now_ms);
/* Write every pending touch in one transaction (last_access = max, hits += n); the caller's
 * timer calls it every few seconds, and close calls it. Pending touches are dropped on error.
 * 0 or UV_EIO. */
int rgm_index_flush(rgm_index_t *idx);

/* Count of object rows and the sum of their sizes, from one row kept by triggers (constant
 * time at any size). 0 or UV_EIO. */
/* For a server: WAL checkpoints run on loop's pool (one at a time, on a connection of their own)
 * instead of inside the loop's commits, whose fsync held the loop tens of ms. Without it (the
 * command-line tools) SQLite checkpoints in the commit. Once, after rgm_index_open. A
 * checkpoint still running at rgm_index_close finishes on its own; the loop must run until
 * then (uv_run does: the work is an active request). */
void rgm_index_use_loop(rgm_index_t *idx, uv_loop_t *loop);

RGM_MUST_CHECK int rgm_index_stats(rgm_index_t *idx, uint64_t *objects, uint64_t *bytes);

/* Called per object; obj is borrowed for the call. Non-zero stops. */
typedef int (*rgm_index_object_fn)(const rgm_index_object_t *obj, void *ud);
/* Objects by last access, oldest first, at most n (0 = all), for ls. Pending touches
 * are flushed first. The callback must not modify the index (collect, then remove). Returns
 * the number given to cb, or UV_EIO. */
int rgm_index_walk_lru(rgm_index_t *idx, size_t n, rgm_index_object_fn cb, void *ud);

/* Every tag row, ordered by registry, repository, tag (for ls). Strings are borrowed for the
 * call; non-zero from cb stops. Returns the number given to cb, or UV_EIO. */
typedef int (*rgm_index_tagrow_fn)(const char *registry, const char *repo, const char *tag,
                                   const char *digest, uint64_t checked_ms, void *ud);
int rgm_index_walk_tags(rgm_index_t *idx, rgm_index_tagrow_fn cb, void *ud);

/* Make index and store agree (synchronous, for the offline commands): rows without a file
 * (or whose file size differs) are dropped, files without a row are deleted, origins without
 * an object are dropped. Counts are logged. 0 or <0 (UV_EIO, store errors). */
RGM_MUST_CHECK int rgm_index_reconcile(rgm_index_t *idx, rgm_store_t *store);

/* The same in steps (cache/reconcile drives them from the loop). Rows: check at most max rows
 * after `after` (digest order; "" from the start; RGM_DIGEST_MAX bytes, advanced to the last
 * row checked), drop those without their file, and the origins in that range without an
 * object; *dropped counts the rows dropped. 1 when there are more rows, 0 when done, <0. */
RGM_MUST_CHECK int rgm_index_reconcile_rows(rgm_index_t *idx, rgm_store_t *store, char *after,
                                            size_t max, size_t *dropped);
/* Files: delete digest's file when it has no row. 1 deleted, 0 kept, <0 (UV_EIO). */
RGM_MUST_CHECK int rgm_index_reconcile_file(rgm_index_t *idx, rgm_store_t *store,
                                            const char *digest);
/* While rows are being checked in steps: rgm_index_get_object of a digest after `after` (not
 * checked yet) checks the file first, and a row without its file is dropped and reported as
 * UV_ENOENT, so that it is a miss. store NULL ends it. store and after are borrowed (after is
 * copied). */
void rgm_index_check_files(rgm_index_t *idx, rgm_store_t *store, const char *after);

/* ---- the shared connection ----
 * For modules with their own tables in index.db (cache/refs, cache/pins): the connection,
 * borrowed, valid until rgm_index_close. _read joins the current read batch; _write ends it
 * first, so that the caller's writes run in their own transactions. */
struct sqlite3;
struct sqlite3 *rgm_index_db_read(rgm_index_t *idx);
struct sqlite3 *rgm_index_db_write(rgm_index_t *idx);

/* ---- referrers answers (registry/referrers.c) ---- */

/* One cached answer of an upstream's referrers API (one page, one query). */
typedef struct rgm_index_referrers {
    char *body; /* get: malloc'd (the caller frees), NUL-terminated; put: borrowed */
    size_t body_len;
    char link[2048];   /* the upstream's Link header as it sent it, "" when none */
    char filters[256]; /* its OCI-Filters-Applied, "" when none */
    int is_public;     /* fetched with the mirror's own identity */
    uint64_t checked_ms;
} rgm_index_referrers_t;

/* The answer cached for (registry, repo, digest, query); query is the upstream query string
 * ("" for none). 0 (out->body is the caller's), UV_ENOENT (out->body NULL) or UV_EIO. */
RGM_MUST_CHECK int rgm_index_get_referrers(rgm_index_t *idx, const char *registry, const char *repo,
                                           const char *digest, const char *query,
                                           rgm_index_referrers_t *out);
/* Insert or replace; in is borrowed. Also drops up to 100 rows checked over 7 days before
 * in->checked_ms. 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_index_put_referrers(rgm_index_t *idx, const char *registry, const char *repo,
                                           const char *digest, const char *query,
                                           const rgm_index_referrers_t *in);
/* "registry has no referrers API", recorded at *checked_ms: 0 (recorded), 1 (nothing
 * recorded: it has one, or nobody asked) or UV_EIO. */
int rgm_index_get_referrers_api(rgm_index_t *idx, const char *registry, uint64_t *checked_ms);
/* Record that registry has no referrers API (has_api 0, at checked_ms), or forget that
 * (has_api 1). 0 or UV_EIO. */
RGM_MUST_CHECK int rgm_index_put_referrers_api(rgm_index_t *idx, const char *registry, int has_api,
                                               uint64_t checked_ms);

#endif
