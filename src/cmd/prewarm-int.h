/* regmirror prewarm, internal: the run's state and the functions its files share. Not an
 * interface for other modules. Reading order, each file calling only the ones below it:
 * prewarm.c (command line, the loop), prewarm-run.c (requests), prewarm-auth.c (401 answers),
 * prewarm-verify.c (digests), prewarm-plan.c (the list, images and blobs), prewarm-platform.c
 * (os/arch), prewarm-report.c (what the user sees). */
#ifndef RGM_CMD_PREWARM_INT_H
#define RGM_CMD_PREWARM_INT_H

#include <uv.h>
#include <jansson.h>
#include <openssl/evp.h>

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
    int with_referrers; /* also warm signatures and attestations (referrers, fallback tags) */
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
    unsigned n_referrers; /* referrer manifests warmed (--with-referrers) */
    unsigned n_pending;   /* manifest ops and blobs not finished */
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

/* ---- prewarm-platform.c ---- */

/* Append the platforms of list ("os/arch[/variant],...") to o->platforms. 0, UV_E2BIG (more
 * than MAX_PLATFORMS in all) or UV_EINVAL (a bad entry; the ones before it stay appended). */
RGM_MUST_CHECK int rgm_prewarm_platforms_parse(struct opts *o, const char *list);
/* This machine's platform as Go (and so containerd) names it; linux/amd64 when uname(2) fails
 * or names a machine we do not know. */
void rgm_prewarm_platform_host(struct platform *p);
/* "os/arch[/variant]" of p into out (truncated to len). */
void rgm_prewarm_platform_str(const struct platform *p, char *out, size_t len);
/* Predicate: the "platform" object of an index entry (borrowed, may be NULL) is want. A want
 * without a variant takes any variant; on arm64, "v8" and no variant are the same. */
int rgm_prewarm_platform_matches(const struct platform *want, json_t *platform);
/* "os/arch[/variant]" of an index entry's platform into out, "?" for a missing field. */
void rgm_prewarm_platform_of(json_t *desc, char *out, size_t len);
/* The entries of an index's "manifests" list (borrowed) that o asks for: every entry with
 * --all-platforms, else those matching one of o->platforms, one per digest, in list order, at
 * most max. The pointers in chosen are borrowed from list. 0 with *n_chosen set, or UV_ENOENT
 * when a wanted platform has no entry ("no manifest for platform ... (the index has: ...)" in
 * why). */
RGM_MUST_CHECK int rgm_prewarm_platform_choose(const struct opts *o, json_t *list, json_t **chosen,
                                               size_t max, size_t *n_chosen, char *why,
                                               size_t why_len);

/* ---- prewarm-plan.c ---- */

/* Read the list of images from file ("-": standard input) into pw->images, in order, once
 * per normalized name. '#' starts a comment at the start of a line or after a blank; blank
 * lines are skipped. A line that is not a reference becomes a failed image (is_bad_line,
 * error "FILE:LINE: reason") and is reported on stderr. 0, or a negative errno when the file
 * cannot be opened or read (message on stderr). More than MAX_IMAGES: the rest is ignored. */
RGM_MUST_CHECK int rgm_prewarm_plan_read_list(struct pw *pw, const char *file);
/* Record why img failed; only the first reason is kept. */
void rgm_prewarm_image_fail(struct image *img, const char *fmt, ...) RGM_PRINTF(2, 3);
/* When nothing of img is pending any more: mark it finished, print its result line and count
 * it out of pw->n_unfinished. Whether the whole run is over is the caller's to check. */
void rgm_prewarm_image_check_done(struct pw *pw, struct image *img);
/* The config and layers of an image manifest (root, borrowed) become blobs of img. 0, or
 * UV_EINVAL when it is not an image manifest or has a bad descriptor; img is then failed with
 * the reason, so a caller may ignore the result. */
int rgm_prewarm_plan_add_manifest(struct pw *pw, struct image *img, json_t *root);
/* The blobs of a referrer (a signature, an attestation: root, borrowed) become blobs of img,
 * without counting as its layers. An index, or anything without blobs, adds nothing. 0, or
 * UV_EINVAL (a bad descriptor; img is failed with the reason). */
int rgm_prewarm_plan_add_referrer(struct pw *pw, struct image *img, json_t *root);
/* Add blob (digest, size) to img. A digest seen before (in any image) is shared: img waits for
 * it, or takes its result at once when it is over. A new one is queued on pw->bq_*. */
void rgm_prewarm_image_add_blob(struct pw *pw, struct image *img, const char *digest,
                                uint64_t size);
/* The first queued blob, taken off the queue and marked running (its transfer starts), or NULL
 * when the queue is empty. The blob stays the plan's. */
struct blob *rgm_prewarm_plan_take_blob(struct pw *pw);
/* Blob b is over: verified (error NULL; is_hit when the mirror had it) or failed (error, copied).
 * Every image waiting for it takes the result and may finish (rgm_prewarm_image_check_done). */
void rgm_prewarm_blob_finish(struct pw *pw, struct blob *b, int is_hit, const char *error);
/* Free the images and the blobs. */
void rgm_prewarm_plan_free(struct pw *pw);

/* ---- prewarm-verify.c ---- */

/* Check a manifest's bytes (body, len bytes; NULL when empty) against want_size (the index
 * descriptor's size, -1: none), want (the pinned or the index's digest, "": a tag) and dcd (the
 * mirror's Docker-Content-Digest; NULL or not a digest: not checked). 0 with the manifest's
 * digest in digest (want, else dcd, else the sha256 of the bytes), or UV_EINVAL (a mismatch,
 * the reason in err) or UV_EIO (cannot hash). */
RGM_MUST_CHECK int rgm_prewarm_verify_manifest(const char *body, size_t len, const char *want,
                                               int64_t want_size, const char *dcd, char *digest,
                                               size_t digest_len, char *err, size_t err_len);
/* A hash for the bytes of blob digest ("sha256:..." or "sha512:..."), to feed with
 * EVP_DigestUpdate. The caller owns it (EVP_MD_CTX_free). NULL when OpenSSL fails. */
EVP_MD_CTX *rgm_prewarm_verify_blob_start(const char *digest);
/* All bytes are in md (borrowed; NULL: no hash was made): 0 when they hash to digest, else
 * UV_EINVAL ("digest mismatch: ...") or UV_EIO ("cannot hash") with the reason in err. */
RGM_MUST_CHECK int rgm_prewarm_verify_blob_end(EVP_MD_CTX *md, const char *digest, char *err,
                                               size_t err_len);

/* ---- prewarm-auth.c ---- */

#define RGM_PREWARM_AUTH_KEY_MAX 600

enum rgm_prewarm_auth_answer { RGM_PREWARM_AUTH_BASIC, RGM_PREWARM_AUTH_TOKEN };

/* The key of the Authorization cached for (registry, repo) in pw->auth. */
void rgm_prewarm_auth_key(const char *registry, const char *repo, char *out, size_t len);
/* How to answer a 401 from the mirror for (registry, repo); www is its WWW-Authenticate (NULL:
 * none). Bearer is preferred to Basic. Credentials come from --creds or --docker-config.
 * RGM_PREWARM_AUTH_BASIC: send again with the Basic header written to basic.
 * RGM_PREWARM_AUTH_TOKEN: ask *token_url (malloc'd, the caller frees it) for a token, with the
 * Basic header in basic ("" without credentials). Else UV_EACCES, the reason in err. */
RGM_MUST_CHECK int rgm_prewarm_auth_answer(struct pw *pw, const char *registry, const char *repo,
                                           const char *www, char *basic, size_t basic_len,
                                           char **token_url, char *err, size_t err_len);
/* The Authorization value ("Bearer ...", malloc'd into *value) and its expiry of a token
 * answer (body: len bytes, not NUL-terminated). 0 or <0 (not a usable answer). */
RGM_MUST_CHECK int rgm_prewarm_auth_bearer(const char *body, size_t len, char **value,
                                           uint64_t *expires_ms);
/* Free the credentials looked up so far. */
void rgm_prewarm_auth_free(struct pw *pw);

/* ---- prewarm-run.c ---- */

/* Start the run on loop: the client, the redraw timer (terminal only), the manifest of every
 * image that is not a bad line, and the first requests up to --parallel. The loop then runs
 * until every image is finished and no request is in flight; then the client and the timer
 * close, so uv_run returns. pw->client and pw->auth are created here; the caller frees
 * pw->auth after the loop (the client frees itself when closed). */
void rgm_prewarm_run_start(struct pw *pw, uv_loop_t *loop);

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
