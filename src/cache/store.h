/* Content-addressed blob files: <storage>/blobs/<algo>/<aa>/<hex>, fetches in progress in
 * <storage>/tmp/ (cleaned at open: only partials with a valid sidecar stay, for resuming), the
 * index at <storage>/index.db (DESIGN "On disk"), and the count of store write errors.
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
 * (only then) it cleans dir/tmp: partials with a valid sidecar are kept for resuming, every
 * other file is deleted (the leftovers of a crash are never served). When another process holds the
 * lock, the store opens without it: see rgm_store_is_owner. dir is copied. *out is owned by the
 * caller (rgm_store_close). 0 or a negative errno. */
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

/* ---- partial fetches kept across restarts ----
 * A fetch in tmp/ ("<hex>.<n>.partial") keeps a sidecar "<hex>.<n>.partial" RGM_STORE_KEEP_SUFFIX
 * that says what its prefix is: the digest, the expected size, how many bytes of the file the
 * prefix hash covers, that hash, and where it came from. At open, the store keeps each partial
 * whose sidecar parses, names the partial's digest and is younger than
 * RGM_STORE_PARTIAL_MAX_AGE_S; every other file of tmp/ is deleted. A fetch of that digest then
 * takes it (rgm_store_take_partial), re-hashes the prefix and resumes with a Range request. */
#define RGM_STORE_KEEP_SUFFIX        ".keep"
#define RGM_STORE_PARTIAL_MAX_AGE_S  (24 * 3600)
#define RGM_STORE_PARTIAL_ORIGIN_MAX 256

typedef struct rgm_store_partial {
    char digest[RGM_DIGEST_MAX]; /* of the whole blob */
    uint64_t size;               /* the blob's expected size; written < size */
    uint64_t written;            /* bytes of the file that prefix covers */
    char prefix[RGM_DIGEST_MAX]; /* "<algo>:<hex>": the digest's algorithm over those bytes */
    char registry[RGM_STORE_PARTIAL_ORIGIN_MAX];
    char repo[RGM_STORE_PARTIAL_ORIGIN_MAX];
} rgm_store_partial_t;

/* The sidecar's text for p into buf (pure: safe from libuv's pool). Its length, or
 * UV_ENAMETOOLONG when buf is too small, UV_EINVAL when a field is not valid. */
RGM_MUST_CHECK int rgm_store_partial_format(const rgm_store_partial_t *p, char *buf, size_t len);
/* Parse a sidecar's text (len bytes, need not be NUL-terminated): 0, or UV_EINVAL when a line
 * is missing, unknown, malformed or inconsistent (bad digest, written >= size). */
RGM_MUST_CHECK int rgm_store_partial_parse(const char *text, size_t len, rgm_store_partial_t *p);
/* Take the kept partial of digest fetched through registry (NULL: any), if any: 1 (*path
 * malloc'd, the caller's to free, and the caller now owns the file and its sidecar path
 * "<*path>" RGM_STORE_KEEP_SUFFIX), or 0. A partial of another registry stays kept: a
 * registry cannot vouch for bytes another one delivered. */
int rgm_store_take_partial(rgm_store_t *s, const char *digest, const char *registry, char **path,
                           rgm_store_partial_t *p);
/* Give a partial back (a fetch stopped by shutdown or suspended): its sidecar is read again and
 * it is kept for a later take. 0; or UV_EINVAL/UV_ENOENT/another errno when the sidecar is
 * missing or does not parse, and then both files are deleted. path is borrowed. */
RGM_MUST_CHECK int rgm_store_keep_partial(rgm_store_t *s, const char *path);
/* Partials kept now (not taken). */
size_t rgm_store_partial_count(const rgm_store_t *s);

/* ---- store write errors ----
 * Counted where they are handled (fetch, blobs), by operation and errno name, for /metrics:
 * regmirror_store_errors_total{op,error}. */
enum rgm_store_op {
    RGM_STORE_OP_WRITE = 0,
    RGM_STORE_OP_FSYNC,
    RGM_STORE_OP_RENAME,
    RGM_STORE_OP_INDEX,
    RGM_STORE_OP_COUNT
};
/* "write", "fsync", "rename", "index". */
const char *rgm_store_op_name(enum rgm_store_op op);
/* The errno name of err (<0, a UV_E* or -errno): "ENOSPC", "EDQUOT", "EIO", ...; "other" for
 * one outside the table. Static strings. */
const char *rgm_store_errno_name(int err);
/* 1 when err means the disk cannot take bytes now (ENOSPC, EDQUOT, EIO, EROFS, EFBIG), else 0. */
int rgm_store_is_disk_error(int err);
void rgm_store_count_error(rgm_store_t *s, enum rgm_store_op op, int err);
/* cb for every non-zero count (op and error are static strings). */
typedef void (*rgm_store_error_fn)(const char *op, const char *error, uint64_t count, void *ud);
void rgm_store_errors_each(const rgm_store_t *s, rgm_store_error_fn cb, void *ud);

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
