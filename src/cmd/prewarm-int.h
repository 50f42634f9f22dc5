/* regmirror prewarm, internal: the run's state shared by the pull logic (prewarm.c) and the
 * output (prewarm-report.c: live progress display, result lines, summary table, JSON). Not an
 * interface for other modules. */
#ifndef RGM_CMD_PREWARM_INT_H
#define RGM_CMD_PREWARM_INT_H

#include <uv.h>

#include "core/common.h"
#include "http/client.h"
#include "registry/auth.h"
#include "registry/reference.h"

#define MAX_PLATFORMS  32
#define REDRAW_MS      200
#define LIVE_LINES_MAX 10
#define BLOB_BUCKETS   1024

struct platform {
    char os[32];
    char arch[32];
    char variant[32];
};

struct opts {
    const char *mirror;
    char base[300]; /* scheme://host[:port], no trailing slash */
    struct platform platforms[MAX_PLATFORMS];
    size_t n_platforms;
    int is_all_platforms;
    unsigned parallel;
    const char *creds;
    const char *docker_config;
    int is_json;
    const char *file;
};

struct image {
    unsigned line;
    char *text;  /* the line as written */
    char *error; /* first failure reason, NULL while fine */
    int is_bad_line;
    rgm_ref_image_t ref;
    char name[RGM_REF_IMAGE_STR_MAX];
    char digest[RGM_REF_DIGEST_MAX + 1];
    char platforms[512]; /* chosen platforms of an index, comma separated */
    unsigned n_layers;
    unsigned n_pending; /* manifest ops and blobs not finished */
    int is_started;
    int is_done;
    int is_all_hit;
    uint64_t t_start; /* uv_hrtime */
    uint64_t t_end;
    uint64_t total_bytes;
    uint64_t fetched_bytes;
    struct blob **blobs; /* every blob it references, once */
    size_t n_blobs, cap_blobs;
    unsigned n_blobs_done;
};

enum blob_state { B_QUEUED, B_RUNNING, B_DONE, B_FAILED };

struct blob {
    struct blob *hnext; /* hash chain */
    struct blob *qnext; /* run queue */
    char digest[RGM_REF_DIGEST_MAX + 1];
    uint64_t size;
    const char *registry; /* of the first image that asked; images outlive blobs */
    const char *repo;
    enum blob_state state;
    int is_hit;
    uint64_t got;
    char *error;
    struct image **waiters;
    size_t n_waiters, cap_waiters;
};

struct cred {
    char *registry;
    char *user; /* NULL: none */
    char *pass;
};

struct pw {
    struct opts *o;
    rgm_client_t *client;
    uv_timer_t timer;
    int is_tty;
    int is_timer_open;
    int is_closing;
    struct image *images;
    size_t n_images;
    size_t n_unfinished;
    size_t n_ops;
    struct blob *buckets[BLOB_BUCKETS];
    struct blob *bq_head, *bq_tail;
    unsigned n_blob_inflight;
    struct op *mq_head, *mq_tail;
    unsigned n_mf_inflight;
    rgm_auth_cache_t *auth;
    struct cred *creds;
    size_t n_creds;
    uint64_t t0;
    uint64_t fetched_bytes; /* unique blob bytes downloaded */
    size_t n_blobs;
    size_t n_blobs_fetched;
    unsigned live_lines;
    uint64_t rate_last_bytes;
    uint64_t rate_last_t;
    double rate; /* bytes/s, smoothed */
};

/* ---- prewarm-report.c ---- */

/* Nanoseconds to seconds. */
double rgm_prewarm_secs(uint64_t ns);
/* "12.3 MB" (powers of 1000) into out. */
void rgm_prewarm_human_bytes(uint64_t n, char *out, size_t len);
/* "cached", "fetched" or "failed". Returns a static string. */
const char *rgm_prewarm_image_status(const struct image *img);
/* Erase the live display (terminal only); the next redraw brings it back. */
void rgm_prewarm_live_clear(struct pw *pw);
/* The "ok ..." / "FAIL ...: reason" line of a finished image: stdout, or stderr with --json. */
void rgm_prewarm_print_result_line(struct pw *pw, const struct image *img);
/* Redraw the live display (terminal only; called from the redraw timer). */
void rgm_prewarm_render(struct pw *pw);
/* After the run: the JSON document or the summary table on stdout; elapsed in ns. */
void rgm_prewarm_print_json(struct pw *pw, uint64_t elapsed);
void rgm_prewarm_print_table(struct pw *pw, uint64_t elapsed);

#endif
