/* Single-flight blob fetches, with the temp file as the buffer. A fetch is keyed by digest;
 * one producer (the upstream download, driven by the registry layer) appends bytes, which are
 * hashed and written to store/tmp; any number of readers send up to the bytes written so far
 * (from the latest landed chunks while they keep up, else from the file) and are woken when
 * more land. Verified bytes are renamed into the
 * store. A sidecar lets a fetch cut by a restart resume; a store that cannot take the bytes
 * (full disk) makes the fetch go on from a bounded window in memory, caching nothing. It
 * knows digests, files and readers, not HTTP or registries. */
#ifndef RGM_CACHE_FETCH_H
#define RGM_CACHE_FETCH_H

#include <uv.h>
#include "core/common.h"
#include "cache/store.h"

typedef struct rgm_fetches rgm_fetches_t;
typedef struct rgm_fetch rgm_fetch_t;
typedef struct rgm_fetch_reader rgm_fetch_reader_t;

enum rgm_fetch_state { RGM_FETCH_RUNNING = 0, RGM_FETCH_DONE, RGM_FETCH_FAILED };

/* The table of fetches in flight. store is borrowed. */
rgm_fetches_t *rgm_fetches_new(uv_loop_t *loop, rgm_store_t *store);
/* Every fetch must be gone (no producer, no reader; otherwise this logs an error and leaks
 * the table). The table owns no libuv handle while no fetch is alive, so this is a plain free:
 * no loop run is needed before uv_loop_close(). NULL is a no-op. */
void rgm_fetches_free(rgm_fetches_t *t);
/* The fetch in flight for this digest, or NULL. Borrowed: take a reader to keep it. */
rgm_fetch_t *rgm_fetches_find(rgm_fetches_t *t, const char *digest);
size_t rgm_fetches_count(const rgm_fetches_t *t);
/* Called (synchronously, on the loop) when a write to the store failed, before the one retry:
 * the registry layer runs an eviction round there when max_cache_bytes is set. NULL: none. */
typedef void (*rgm_fetch_evict_fn)(void *ud);
void rgm_fetches_set_evict(rgm_fetches_t *t, rgm_fetch_evict_fn fn, void *ud);

/* ---- producer side ---- */

/* Called once when the fetch ends, after the rename on success: status 0 (verified and in the
 * store, size bytes) or <0 (UV_EINVAL: digest mismatch or a total size other than set_size;
 * UV_E2BIG: more bytes than set_size; others: the producer's error or a disk error). The
 * registry layer indexes the blob here. It runs from the loop (an idle pass), never inside a
 * call into this module, after any append cb, and is the last call the producer gets: the
 * producer's hold on f ends when it returns. Readers are woken after it. */
typedef void (*rgm_fetch_done_fn)(rgm_fetch_t *f, int status, void *ud);

/* Start a fetch for digest ("sha256:<hex>" or "sha512:<hex>"); creates the temp file and
 * enters the table. Fails with UV_EINVAL (bad digest), UV_EEXIST when one is in flight, or a
 * file error; done is then never called. On success *out is held by the producer until done
 * has run. Ended fetches (DONE/FAILED) leave the table at once, so that a later request goes
 * to the store or starts anew.
 * Store errors (rgm_store_is_disk_error: ENOSPC, EDQUOT, EIO, ...) never fail a fetch. A
 * failed batch write gets an eviction round (rgm_fetches_set_evict) and one retry; then, as
 * when the temp file cannot even be created, the fetch goes on without the file
 * (rgm_fetch_is_nofile): readers are served from a window of at most 4 MiB in memory at the
 * pace of the slowest of them (rgm_fetch_reader_at, rgm_fetch_peek), the fetch leaves the
 * table (a new request gets a fetch of its own), and done reports 0 with nothing stored
 * (rgm_fetch_is_stored). An fsync or rename error after the verification does the same with
 * the verified file. Each is counted (rgm_store_count_error) and logged once (WARN). */
RGM_MUST_CHECK int rgm_fetch_start(rgm_fetches_t *t, const char *digest, rgm_fetch_done_fn done,
                                   void *ud, rgm_fetch_t **out);
/* Resume the partial kept for digest that came through registry (rgm_store_take_partial; a
 * partial of another registry is left kept: the registry that resumes it vouches for the
 * prefix, which readers get before the digest is verified): the fetch enters the table
 * with its size from the sidecar, and libuv's pool re-hashes the prefix the sidecar vouches
 * for. Then ready runs (like an append cb: from the idle pass, status 0, or the fetch's error
 * when it failed meanwhile); rgm_fetch_written says where the download goes on: the prefix,
 * or 0 when the re-hash did not match (the file was emptied; logged). No append before ready.
 * UV_ENOENT when no partial is kept (start one with rgm_fetch_start), else rgm_fetch_start's
 * errors; done and ready are then never called. */
RGM_MUST_CHECK int rgm_fetch_resume(rgm_fetches_t *t, const char *digest, const char *registry,
                                    rgm_fetch_done_fn done, void *ud,
                                    void (*ready)(rgm_fetch_t *f, int status, void *ud),
                                    void *ready_ud, rgm_fetch_t **out);
/* Where the bytes come from, for the sidecar (copied; at most 255 bytes each). Only before the
 * first append; with a known size, the sidecar is then rewritten every 4 MiB. */
void rgm_fetch_set_origin(rgm_fetch_t *f, const char *registry, const char *repo);
/* Expected total size, when known (Content-Length); a longer body fails the fetch with
 * UV_E2BIG (also at once when more was already appended), a shorter one at finish with
 * UV_EINVAL. */
void rgm_fetch_set_size(rgm_fetch_t *f, uint64_t size);
/* Append len bytes (copied) to the fetch's write queue; libuv's pool hashes and writes them
 * (in order, in batches) while the producer goes on reading. cb runs once the queue has room
 * for more (status 0: at once, from the idle pass, when it already has; else when a batch has
 * landed), or with the fetch's error when it failed meanwhile (a write error; UV_ECANCELED
 * when the producer failed it). At most one append may be pending: the producer stops reading
 * upstream until cb, so the upstream runs at the speed of the disk and the hash (never at a
 * client's), with at most 4 MiB queued per fetch and 16 MiB over all fetches.
 * Returns <0 without calling cb: the fetch's error when it already ended, UV_EBUSY (an append
 * is pending), UV_EINVAL (after finish), UV_E2BIG (beyond set_size: the fetch is failed), or
 * a uv_queue_work error (the fetch is failed). RGM_FAULT("store.write") fails a batch's write.
 * Bytes are readable (rgm_fetch_readable) once they are in the file, not when cb runs. */
RGM_MUST_CHECK int rgm_fetch_append(rgm_fetch_t *f, const void *data, size_t len,
                                    void (*cb)(rgm_fetch_t *f, int status, void *ud), void *ud);
/* The same without a callback, when the queue has room now: 0 (queued: the producer may go on
 * reading at once), UV_EAGAIN (the queue is full: nothing was queued; call rgm_fetch_append and
 * wait for its cb), or rgm_fetch_append's errors. This saves a pause and resume of the
 * upstream connection per chunk while the disk keeps up. */
RGM_MUST_CHECK int rgm_fetch_write(rgm_fetch_t *f, const void *data, size_t len);
/* All bytes were appended: once the queue has landed, verify the digest, fsync and rename
 * into the store (async); then done runs and readers are woken. May be called while the last
 * append is pending or batches are in the pool (it waits for them). Ignored once the fetch has
 * ended or after a first finish. */
void rgm_fetch_finish(rgm_fetch_t *f);
/* The producer gives up (err < 0, else UV_EIO): readers are woken and see FAILED; temp file
 * removed. Allowed while an append or the finish is pending (nothing enters the store); a
 * no-op once the fetch has ended. done still runs once, later. */
void rgm_fetch_fail(rgm_fetch_t *f, int err);
/* Like rgm_fetch_fail(f, UV_ECANCELED), but the temp file and its last sidecar are handed back
 * to the store (rgm_store_keep_partial) for a later rgm_fetch_resume: for shutdown. */
void rgm_fetch_suspend(rgm_fetch_t *f);
/* 1 once DONE with the blob renamed into the store; 0 otherwise (also DONE without a file). */
int rgm_fetch_is_stored(const rgm_fetch_t *f);
/* 1 when the fetch goes on without its file (see rgm_fetch_start), else 0. */
int rgm_fetch_is_nofile(const rgm_fetch_t *f);
/* Bytes appended so far (where a resume with Range should start). */
uint64_t rgm_fetch_written(const rgm_fetch_t *f);
const char *rgm_fetch_digest(const rgm_fetch_t *f);

/* ---- reader side ---- */

/* Join a fetch. on_more runs (never from inside this call) whenever readable bytes grow or the
 * state changes, and once soon after joining, so a reader needs one code path; it may call
 * rgm_fetch_leave (for itself or another reader) and rgm_fetch_join. Joining an ended fetch
 * (through a reader already holding it) is allowed. The reader keeps the fetch (and its fd)
 * alive until rgm_fetch_leave(), which frees rd (NULL is a no-op). Readers leaving do not stop
 * the producer: the fetch still finishes into the cache. */
rgm_fetch_reader_t *rgm_fetch_join(rgm_fetch_t *f,
                                   void (*on_more)(rgm_fetch_reader_t *rd, void *ud), void *ud);
void rgm_fetch_leave(rgm_fetch_reader_t *rd);
rgm_fetch_t *rgm_fetch_reader_fetch(const rgm_fetch_reader_t *rd);

enum rgm_fetch_state rgm_fetch_state(const rgm_fetch_t *f);
int rgm_fetch_error(const rgm_fetch_t *f);
/* Bytes a reader may send now. While running, the last byte is held back until the digest is
 * verified, so that a client of a corrupt blob is always cut short before its last byte. */
uint64_t rgm_fetch_readable(const rgm_fetch_t *f);
/* Expected total size, or UINT64_MAX when not known yet. */
uint64_t rgm_fetch_size(const rgm_fetch_t *f);
/* A read-only fd on the file, valid while the reader is joined (across the rename); -1 when
 * the fetch never had a file. */
int rgm_fetch_fd(const rgm_fetch_t *f);
/* What a reader at off may send now: 1 with *len bytes of the fd at off (sendfile them), 0
 * with *len bytes at *data (memory, valid until the loop runs on or until a call into this
 * module other than rgm_fetch_peek; copy them:
 * the latest landed chunks, kept for readers that keep up, or the no-file window), *len 0 when
 * nothing is there yet; or UV_ENOBUFS when off fell out of the window (or the fetch failed and
 * freed it): cut the client. *len is 0 or more, never past rgm_fetch_readable. */
RGM_MUST_CHECK int rgm_fetch_peek(const rgm_fetch_reader_t *rd, uint64_t off, const char **data,
                                  size_t *len);
/* The reader has sent everything before off: without a file, the window drops bytes that every
 * reader has sent, and the producer goes on. A reader should say so at join (its start) and
 * whenever a send completes. */
void rgm_fetch_reader_at(rgm_fetch_reader_t *rd, uint64_t off);

#endif
