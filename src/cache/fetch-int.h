/* Internal to the fetch module (fetch.c, fetch-write.c, fetch-read.c): the private structs
 * behind rgm_fetches_t, rgm_fetch_t and rgm_fetch_reader_t, and the calls between the three
 * files. Calls go one way: fetch-read.c -> fetch-write.c -> fetch.c (and fetch-read.c ->
 * fetch.c); fetch.c reaches the readers only through the idle pass (rgm_fetch_on_idle), which
 * libuv runs. Not an API for other modules: they use cache/fetch.h. */
#ifndef RGM_CACHE_FETCH_INT_H
#define RGM_CACHE_FETCH_INT_H

#include <sys/types.h>
#include <uv.h>
#include <openssl/evp.h>
#include "core/common.h"
#include "cache/fetch.h"
#include "cache/store.h"

#define FETCH_BUCKETS 256
/* The write queue's unit: the producer's bytes are copied into chunks of this size (the other
 * sizes of the queue, the memory kept for readers and the window are in fetch-write.c). */
#define CHUNK_SIZE    (256 * 1024)

struct chunk {
    struct chunk *next;
    size_t len;
    char data[CHUNK_SIZE];
};

struct rgm_fetches {
    uv_loop_t *loop;
    rgm_store_t *store;
    struct idle *idle; /* runs deferred done/on_more calls; exists only while fetches live */
    struct rgm_fetch *buckets[FETCH_BUCKETS];  /* in-flight fetches by the digest's first byte */
    size_t count;                              /* fetches in the table */
    size_t live;                               /* fetches allocated (in the table or ended) */
    size_t queued;                             /* bytes in every fetch's write queue */
    size_t mem_n;                              /* landed chunks kept for readers, all fetches */
    struct rgm_fetch *queue_head, *queue_tail; /* fetches with deferred work */
    struct lanes *lanes;                       /* lanes' wake-up; exists only while fetches live */
    struct rgm_fetch *lanes_head;              /* fetches whose lane is out */
    rgm_fetch_evict_fn evict;                  /* run at once on a store write error */
    void *evict_ud;
};

/* Allocated apart from the table and closed when the last fetch dies: with nothing in flight
 * the table owns no handle, so that rgm_fetches_free is a plain free and a shutdown that walks
 * and closes every handle of the loop never meets ours. */
struct idle {
    uv_idle_t h;
    rgm_fetches_t *t;
};

/* The lanes' wake-up (uv_async_send from the pool after each landed batch): the loop collects
 * what every lane out has landed. Same lifetime as struct idle. */
struct lanes {
    uv_async_t h;
    rgm_fetches_t *t;
};

struct rgm_fetch_reader {
    struct rgm_fetch_reader *next, *prev;
    rgm_fetch_t *f;
    void (*on_more)(rgm_fetch_reader_t *rd, void *ud);
    void *ud;
    uint64_t seen_readable; /* what on_more last reported: called again only on change */
    int seen_state;
    int is_new;   /* joined, not yet called */
    int is_gone;  /* left while the reader list was being walked; freed by the sweep */
    uint64_t pos; /* bytes this reader has sent (rgm_fetch_reader_at): pins the window */
};

/* Owner rules: the table, the producer (through the rgm_fetch_* producer calls, until done has
 * run) and the libuv callbacks touch the state; readers only read it and their own node. */
struct rgm_fetch {
    rgm_fetches_t *t;
    struct rgm_fetch *next; /* table bucket chain, while is_in_table */
    int is_in_table;
    int refs; /* producer (until done ran) + readers + queued + each pending fs request */
    char digest[RGM_DIGEST_MAX];

    enum rgm_fetch_state state;
    int error;
    int has_producer; /* done not called yet */
    rgm_fetch_done_fn done;
    void *done_ud;

    char *tmp_path; /* NULL once renamed into the store, unlinked or handed back */
    int wfd;        /* producer's fd */
    int rfd;        /* readers' fd: survives the rename and the unlink; -1 without a file */
    EVP_MD_CTX *md;
    int is_stored; /* DONE and renamed into the store */
    int is_keep;   /* suspended: the file and its sidecar go back to the store */

    /* The no-file fallback (is_nofile, after a store error the retry did not cure): bytes
     * [0, file_end) stay readable from rfd; later ones land in the window [win_off, written)
     * instead of the file, and are freed once every reader has sent them. */
    int is_nofile;
    int is_retried;    /* a failed batch was retried once (after an eviction round) */
    uint64_t file_end; /* bytes readable from rfd (= written while there is a file) */
    uint64_t win_off;
    size_t win_len;
    struct chunk *win_head, *win_tail;

    /* The sidecar (see store.h). sc is filled on the loop before the first lane starts
     * (rgm_fetch_set_origin, lane_start) and only the lane touches it after that. */
    char *sc_path; /* tmp_path + RGM_STORE_KEEP_SUFFIX; kept until dispose */
    int sc_fd;     /* the sidecar, opened by the lane that first writes it; else -1 */
    rgm_store_partial_t sc;
    int has_origin;
    int is_sc_on;   /* lane: write the sidecar (snapshot of has_origin, size, no file) */
    uint64_t sc_at; /* lane: written when the sidecar was last written */
    /* rgm_fetch_resume: the pool re-hashes the first rehash_want bytes (is_writing meanwhile) */
    uint64_t rehash_want;
    int rehash_ok; /* pool: the prefix matched */

    uint64_t size;     /* expected, UINT64_MAX when not known */
    uint64_t appended; /* accepted by rgm_fetch_append (hashed) */
    uint64_t written;  /* landed: in the file, or (no file) hashed into the window */
    uint64_t readable_at_fail;

    /* The write queue (see fetch-write.c). The loop copies the producer's bytes into q_tail;
     * the lane, one pool job at a time (is_writing), takes sealed chunks from q_head into
     * batch, hashes and writes them, and moves them to the done list, which the loop collects.
     * mu guards the q list's links and its chunks' len, q_len, is_tail_sealed, the done list
     * and is_lane_stop. While the lane is out it alone touches md, batch*, lane_*, wfd's file
     * offset past written and the sidecar; the loop touches none of them. */
    uv_mutex_t mu;
    int has_mu;
    struct chunk *q_head, *q_tail; /* waiting for the lane, in order */
    size_t q_len;                  /* bytes in the q list */
    int is_tail_sealed;            /* q_tail takes no more bytes: the lane may take it */
    int is_seal_due; /* loop: the idle pass is to seal the tail (rgm_fetch_seal_due) */
    struct chunk *done_head, *done_tail; /* landed by the lane, not collected yet */
    size_t done_len;
    int is_lane_stop;    /* the fetch ended: the lane stops after its batch */
    struct chunk *batch; /* the lane's batch; after a failed lane, the batch that failed */
    size_t batch_len;
    int batch_is_hashed; /* the batch was hashed already (its write is being retried) */
    int lane_err;        /* the lane stopped at an error (-errno, or UV_EIO from the hash) */
    int is_lane_fault;   /* RGM_FAULT("store.write") fails the lane's writes (set by the loop) */
    uint64_t lane_off;   /* lane: bytes landed so far (= written + done_len) */
    struct rgm_fetch *lane_next; /* t->lanes_head list, while the lane is out */
    struct chunk *spare; /* recycled chunks: at most as many as were queued and kept at once */
    size_t queued;       /* bytes appended and not collected: waiting, in the lane, done */
    uv_work_t work;      /* the lane (and the re-hash of a resume) */
    int is_writing;      /* the lane (or the re-hash) is in the pool */
    /* Landed chunks kept in memory for readers that keep up: [mem_off, written) minus what was
     * dropped; at most MEM_CHUNKS per fetch and MEM_TOTAL over all. Readers further behind
     * read the file (they lag on disk, never pinning memory). */
    struct chunk *mem_head, *mem_tail;
    uint64_t mem_off;
    size_t mem_n;     /* chunks in the list */
    int is_finishing; /* rgm_fetch_finish was called */
    int is_syncing;
    int is_append_due;    /* append_cb is to run from the idle pass */
    int is_producer_fail; /* failed by rgm_fetch_fail (append cbs then get UV_ECANCELED) */
    void (*append_cb)(rgm_fetch_t *f, int status, void *ud);
    void *append_ud;
    uv_fs_t fsync_req;

    struct rgm_fetch *queue_next;
    int is_queued;
    int notifying; /* > 0 while readers' on_more are being called */
    struct rgm_fetch_reader *readers_head, *readers_tail;
};

/* ---- fetch.c: the fetch object ---- */

static inline void rgm_fetch_ref(rgm_fetch_t *f)
{
    f->refs++;
}
/* Drop a reference; the last one disposes f (closes its fds, frees its chunks). */
void rgm_fetch_unref(rgm_fetch_t *f);
/* Free f at once: for a fetch that never entered the table or has no reference left. */
void rgm_fetch_dispose(rgm_fetch_t *f);
/* A new fetch, not in the table yet, with its md ready; NULL when OpenSSL fails. */
rgm_fetch_t *rgm_fetch_new(rgm_fetches_t *t, const char *digest);
/* Open the fds on f->tmp_path and name its sidecar. 0 or a negative errno. */
RGM_MUST_CHECK int rgm_fetch_open_file(rgm_fetch_t *f, int wflags);
/* The producer's reference, and (is_in_table) the entry in the table. */
void rgm_fetch_enter(rgm_fetch_t *f, rgm_fetch_done_fn done, void *ud, int is_in_table);
const EVP_MD *rgm_fetch_digest_md(const char *digest);
/* Defer f's append cb, done and readers' on_more to the idle pass (rgm_fetch_on_idle). */
void rgm_fetch_queue(rgm_fetch_t *f);
/* End f as FAILED with err (<0, else UV_EIO); no-op once ended. The append cb and done run
 * from the idle pass. */
void rgm_fetch_fail_internal(rgm_fetch_t *f, int err);
/* The temp file and its sidecar, once no batch is in the pool: kept or deleted. */
void rgm_fetch_release_file(rgm_fetch_t *f);
/* Count a store error and log it once (WARN), saying what happens then. */
void rgm_fetch_store_error(rgm_fetch_t *f, enum rgm_store_op op, int err, const char *then);
/* Go on without the file (see rgm_fetch_start); fails f when no reader is left. */
void rgm_fetch_go_nofile(rgm_fetch_t *f);
/* Every byte has landed: check the size and the digest, then fsync and rename (async). */
void rgm_fetch_begin_verify(rgm_fetch_t *f);
void rgm_fetch_chunks_free(struct chunk **head);
/* Put the chunks of list on f's spares. */
void rgm_fetch_chunks_recycle(rgm_fetch_t *f, struct chunk *list);
/* Drop the oldest landed chunk kept for readers. */
void rgm_fetch_mem_drop_head(rgm_fetch_t *f);

/* ---- fetch-write.c: the write queue ---- */

/* The producer's pending append may complete: now (from the idle pass) or with the end. */
void rgm_fetch_append_settle(rgm_fetch_t *f);
/* From the idle pass: seal a tail still filling and send the lane out with it (no lane out). */
void rgm_fetch_seal_due(rgm_fetch_t *f);

/* ---- fetch-read.c: readers and the idle pass ---- */

/* The idle pass: runs the deferred work of every queued fetch (rgm_fetch_queue). */
void rgm_fetch_on_idle(uv_idle_t *h);

#endif
