/* Content-addressed blob files: <storage>/blobs/<algo>/<aa>/<hex>, fetches in progress in
 * <storage>/tmp/ (emptied at open), the index at <storage>/index.db (DESIGN "On disk").
 * Every digest is validated before it touches a path. The calls here are small synchronous
 * file-system calls (open, rename, mkdir, unlink); bulk I/O is the caller's (uv_fs_*).
 * It knows digests and files, not rows (index) or readers (fetch). */
#ifndef RGM_CACHE_STORE_H
#define RGM_CACHE_STORE_H

#include "core/common.h"

/* "sha512:" + 128 hex + NUL, rounded up. */
#define RGM_DIGEST_MAX 144

typedef struct rgm_store rgm_store_t;

/* 0 when digest is "sha256:" + 64 lowercase hex or "sha512:" + 128 lowercase hex, else
 * UV_EINVAL. */
RGM_MUST_CHECK int rgm_digest_check(const char *digest);

/* Open (creating with mode 0755 when missing) dir, dir/blobs/sha256, dir/blobs/sha512 and
 * dir/tmp. The store takes an exclusive flock on dir/.lock for its lifetime when it can; then
 * (only then) it deletes everything left in dir/tmp (the leftovers of a crash are never
 * served). When another process holds the lock, the store opens without it: see
 * rgm_store_is_owner.
 * dir is copied. *out is owned by the caller (rgm_store_close). 0 or a negative errno. */
RGM_MUST_CHECK int rgm_store_open(const char *dir, rgm_store_t **out);
void rgm_store_close(rgm_store_t *s);
/* 1 when this store holds dir/.lock (no other regmirror process uses dir), else 0. */
int rgm_store_is_owner(const rgm_store_t *s);
/* The storage directory, as given to open. Borrowed. */
const char *rgm_store_dir(const rgm_store_t *s);
/* "<dir>/index.db" into buf. 0 or UV_ENAMETOOLONG. */
RGM_MUST_CHECK int rgm_store_index_path(const rgm_store_t *s, char *buf, size_t len);

/* "<dir>/blobs/<algo>/<aa>/<hex>" into buf. 0, UV_EINVAL (bad digest) or UV_ENAMETOOLONG. */
RGM_MUST_CHECK int rgm_store_blob_path(const rgm_store_t *s, const char *digest, char *buf,
                                       size_t len);
/* Open a stored blob O_RDONLY|O_CLOEXEC; *fd is the caller's to close. UV_ENOENT when absent,
 * UV_EINVAL on a bad digest, or another negative errno. */
RGM_MUST_CHECK int rgm_store_open_blob(const rgm_store_t *s, const char *digest, int *fd,
                                       uint64_t *size);
/* 1 (present, *size set when size is not NULL), 0 (absent) or <0 (UV_EINVAL, I/O error). */
int rgm_store_has(const rgm_store_t *s, const char *digest, uint64_t *size);

/* A partial fetch in tmp/ survives rgm_store_open when a sidecar file of this suffix sits
 * next to it: "tmp/<x>.partial" is kept while "tmp/<x>.partial.keep" exists (and the sidecar
 * while its partial exists); everything else in tmp/ is deleted. This is the hook for fetches
 * that resume across restarts: the sidecar holds what a resume needs (written by that
 * feature, not by the store), and whoever owns it removes both. */
#define RGM_STORE_KEEP_SUFFIX ".keep"

/* Create a new temp file for digest: tmp/<hex>.<counter>.partial, O_RDWR|O_CREAT|O_EXCL|
 * O_CLOEXEC, mode 0644. *fd is the caller's to close; *path is malloc'd, the caller's to free.
 * 0 or a negative errno. */
RGM_MUST_CHECK int rgm_store_tmp_open(rgm_store_t *s, const char *digest, int *fd, char **path);
/* Rename a complete, verified and fsync'd temp file into place (creating blobs/<algo>/<aa>).
 * An existing blob is replaced (same content). The caller checks the digest and fsyncs
 * (asynchronously) before this. 0 or a negative errno (the temp file is left to the caller). */
RGM_MUST_CHECK int rgm_store_commit(rgm_store_t *s, const char *tmp_path, const char *digest);

/* Store a small object (manifest) whose bytes are all in memory: verify that data hashes to
 * digest (UV_EINVAL otherwise, nothing written), write a temp file, fsync, rename. This is
 * synchronous on purpose: manifests are a few KiB and rare next to blob traffic, and the
 * ordering (fsync before rename) is simpler to get right here. 0 or a negative errno. */
RGM_MUST_CHECK int rgm_store_put_small(rgm_store_t *s, const char *digest, const void *data,
                                       size_t len);
/* Read a stored object of at most max bytes (synchronous; for manifests). *data is malloc'd
 * (NUL-terminated for convenience, not counted in *len), the caller's to free. UV_ENOENT when
 * absent, UV_E2BIG when larger than max, UV_EINVAL on a bad digest, or another errno. */
RGM_MUST_CHECK int rgm_store_read_small(const rgm_store_t *s, const char *digest, size_t max,
                                        void **data, size_t *len);
/* Delete a blob. 0 (also when absent), UV_EINVAL or another negative errno. */
RGM_MUST_CHECK int rgm_store_remove(rgm_store_t *s, const char *digest);
/* Create and unlink a file in tmp/ (for /readyz). 0 or a negative errno. */
RGM_MUST_CHECK int rgm_store_is_writable(rgm_store_t *s);

/* Called for every stored blob; digest is borrowed for the call. The callback may remove the
 * blob it is given. Return 0 to go on, anything else to stop the walk (returned by walk). */
typedef int (*rgm_store_walk_fn)(const char *digest, uint64_t size, void *ud);
/* Visit every blob file under blobs/ (synchronous: for reconcile, gc, verify and ls, not the
 * request path). Files whose names are not digests are skipped with a warning. 0, the
 * callback's non-zero value, or a negative errno. */
int rgm_store_walk(rgm_store_t *s, rgm_store_walk_fn cb, void *ud);

/* The same walk in steps (for the background reconcile): each call visits at most max
 * entries of blobs/. changed_ms is the file's ctime (a rename sets it), so that a walk can
 * tell files committed after it began. Directories stay open between calls; files added or
 * removed meanwhile may or may not be visited. */
typedef struct rgm_store_cursor rgm_store_cursor_t;
typedef int (*rgm_store_entry_fn)(const char *digest, uint64_t size, uint64_t changed_ms, void *ud);
/* s is borrowed and outlives the cursor. Owned by the caller (rgm_store_cursor_free). */
rgm_store_cursor_t *rgm_store_cursor_new(rgm_store_t *s);
/* >0: more to visit; 0: the walk is over; <0: an errno (opendir/openat), or the callback's
 * value when it returned <0 (UV_ECANCELED when >0), which stops the walk. */
RGM_MUST_CHECK int rgm_store_cursor_next(rgm_store_cursor_t *c, size_t max, rgm_store_entry_fn cb,
                                         void *ud);
void rgm_store_cursor_free(rgm_store_cursor_t *c);

#endif
