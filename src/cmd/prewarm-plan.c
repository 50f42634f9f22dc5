/* regmirror prewarm, the plan: the list of images as read (FILE:LINE errors, comments,
 * duplicates by normalized name), the blobs each image references (one entry per digest across
 * all images, queued once), and the accounting that says when an image is finished and whether
 * it was cached, fetched or failed. It sends no request: prewarm-run.c executes the plan and
 * reports every answer here. */
#include "config.h"

#include "cmd/prewarm-int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <uv.h>
#include <jansson.h>

#include "core/common.h"
#include "registry/reference.h"

#define MAX_IMAGES 100000

static char *vfmt(const char *fmt, va_list ap) RGM_PRINTF(1, 0);
static char *vfmt(const char *fmt, va_list ap)
{
    char buf[1024];

    if (vsnprintf(buf, sizeof(buf), fmt, ap) < 0)
        buf[0] = '\0';
    return rgm_strdup(buf);
}

/* ---- the list of images ---- */

/* Cut comments and surrounding blanks in place; returns the start of what is left. */
static char *clean_line(char *s)
{
    char *p, *end;

    s[strcspn(s, "\r\n")] = '\0';
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '#') {
        *s = '\0';
        return s;
    }
    for (p = s; *p; p++) {
        if (*p == '#' && (p[-1] == ' ' || p[-1] == '\t')) {
            *p = '\0';
            break;
        }
    }
    end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    return s;
}

static int is_duplicate(const struct pw *pw, const char *name)
{
    size_t i;

    for (i = 0; i < pw->n_images; i++)
        if (!pw->images[i].is_bad_line && strcmp(pw->images[i].name, name) == 0)
            return 1;
    return 0;
}

int rgm_prewarm_plan_read_list(struct pw *pw, const char *file)
{
    const char *label = strcmp(file, "-") == 0 ? "stdin" : file;
    FILE *f = strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    char *line = NULL, *s;
    size_t cap = 0, cap_images = 0;
    unsigned lineno = 0;
    char err[256], why[300];
    struct image *img;
    rgm_ref_image_t ref;
    int rc = 0;

    if (!f) {
        rc = -errno;
        fprintf(stderr, "regmirror prewarm: %s: %s\n", file, strerror(errno));
        return rc;
    }
    while (getline(&line, &cap, f) >= 0) {
        lineno++;
        s = clean_line(line);
        if (*s == '\0')
            continue;
        if (pw->n_images == MAX_IMAGES) {
            fprintf(stderr, "regmirror prewarm: %s: more than %d images\n", label, MAX_IMAGES);
            break;
        }
        err[0] = '\0';
        if (rgm_ref_parse_image(s, &ref, err, sizeof(err)) == 0) {
            char name[RGM_REF_IMAGE_STR_MAX];
            if (rgm_ref_image_format(&ref, name, sizeof(name)) < 0 || is_duplicate(pw, name))
                continue;
        }
        if (pw->n_images == cap_images) {
            cap_images = cap_images ? cap_images * 2 : 16;
            pw->images = rgm_realloc(pw->images, cap_images * sizeof(*pw->images));
        }
        img = &pw->images[pw->n_images++];
        memset(img, 0, sizeof(*img));
        img->line = lineno;
        img->text = rgm_strdup(s);
        img->is_all_hit = 1;
        if (err[0] != '\0' || rgm_ref_parse_image(s, &img->ref, err, sizeof(err)) < 0) {
            img->is_bad_line = 1;
            img->is_done = 1;
            (void)snprintf(why, sizeof(why), "%s:%u: %s", label, lineno,
                           err[0] ? err : "invalid reference");
            img->error = rgm_strdup(why);
            (void)snprintf(img->name, sizeof(img->name), "%s", s);
            fprintf(stderr, "%s:%u: \"%s\": %s\n", label, lineno, s,
                    err[0] ? err : "invalid reference");
            continue;
        }
        if (rgm_ref_image_format(&img->ref, img->name, sizeof(img->name)) < 0)
            img->name[0] = '\0';
    }
    if (ferror(f)) {
        fprintf(stderr, "regmirror prewarm: %s: read error\n", label);
        rc = UV_EIO;
    }
    free(line);
    if (f != stdin)
        fclose(f);
    return rc;
}

/* ---- images ---- */

void rgm_prewarm_image_fail(struct image *img, const char *fmt, ...)
{
    va_list ap;

    if (img->error)
        return;
    va_start(ap, fmt);
    img->error = vfmt(fmt, ap);
    va_end(ap);
}

void rgm_prewarm_image_check_done(struct pw *pw, struct image *img)
{
    if (img->is_done || img->n_pending > 0)
        return;
    img->is_done = 1;
    img->t_end = uv_hrtime();
    if (!img->is_started)
        img->t_start = img->t_end;
    rgm_prewarm_print_result_line(pw, img);
    pw->n_unfinished--;
}

static int add_descriptor(struct pw *pw, struct image *img, json_t *d)
{
    const char *digest = json_string_value(json_object_get(d, "digest"));
    const char *mt = json_string_value(json_object_get(d, "mediaType"));
    json_t *size = json_object_get(d, "size");

    if (!digest || !rgm_ref_valid_digest(digest) || !json_is_integer(size) ||
        json_integer_value(size) < 0) {
        rgm_prewarm_image_fail(img, "manifest: bad descriptor");
        return UV_EINVAL;
    }
    /* Non-distributable layers (Docker's "foreign", OCI's "nondistributable"; Windows base
     * layers, with urls) are not the registry's to serve: never fetched. */
    if (mt && (strstr(mt, "foreign") != NULL || strstr(mt, "nondistributable") != NULL))
        return 0;
    rgm_prewarm_image_add_blob(pw, img, digest, (uint64_t)json_integer_value(size));
    return 0;
}

/* The config (when there is one) and the layers of root; n_layers (may be NULL) counts them. */
static int add_blobs(struct pw *pw, struct image *img, json_t *root, unsigned *n_layers)
{
    json_t *config = json_object_get(root, "config");
    json_t *d;
    size_t i;

    if (json_is_object(config) && add_descriptor(pw, img, config) < 0)
        return UV_EINVAL;
    json_array_foreach(json_object_get(root, "layers"), i, d)
    {
        if (add_descriptor(pw, img, d) < 0)
            return UV_EINVAL;
        if (n_layers)
            (*n_layers)++;
    }
    return 0;
}

int rgm_prewarm_plan_add_manifest(struct pw *pw, struct image *img, json_t *root)
{
    if (!json_is_array(json_object_get(root, "layers")) ||
        !json_is_object(json_object_get(root, "config"))) {
        rgm_prewarm_image_fail(img, "manifest: neither an image manifest nor an index (schema 1?)");
        return UV_EINVAL;
    }
    return add_blobs(pw, img, root, &img->n_layers);
}

int rgm_prewarm_plan_add_referrer(struct pw *pw, struct image *img, json_t *root)
{
    if (add_blobs(pw, img, root, NULL) < 0)
        return UV_EINVAL;
    img->n_referrers++;
    return 0;
}

/* ---- blobs ---- */

static size_t blob_hash(const char *digest)
{
    size_t h = 5381;

    for (; *digest; digest++)
        h = h * 33 + (unsigned char)*digest;
    return h % BLOB_BUCKETS;
}

static void blob_apply(struct blob *b, struct image *img)
{
    if (b->state == B_FAILED) {
        rgm_prewarm_image_fail(img, "blob %s: %s", b->digest, b->error);
        return;
    }
    img->n_blobs_done++;
    if (!b->is_hit) {
        img->is_all_hit = 0;
        img->fetched_bytes += b->size;
    }
}

void rgm_prewarm_image_add_blob(struct pw *pw, struct image *img, const char *digest, uint64_t size)
{
    struct blob *b;
    size_t i, h = blob_hash(digest);

    for (i = 0; i < img->n_blobs; i++)
        if (strcmp(img->blobs[i]->digest, digest) == 0)
            return;
    for (b = pw->buckets[h]; b; b = b->hnext)
        if (strcmp(b->digest, digest) == 0)
            break;
    if (!b) {
        b = rgm_calloc(1, sizeof(*b));
        (void)snprintf(b->digest, sizeof(b->digest), "%s", digest);
        b->size = size;
        b->registry = img->ref.registry;
        b->repo = img->ref.repository;
        b->state = B_QUEUED;
        b->hnext = pw->buckets[h];
        pw->buckets[h] = b;
        if (pw->bq_tail)
            pw->bq_tail->qnext = b;
        else
            pw->bq_head = b;
        pw->bq_tail = b;
        pw->n_blobs++;
    }
    if (img->n_blobs == img->cap_blobs) {
        img->cap_blobs = img->cap_blobs ? img->cap_blobs * 2 : 8;
        img->blobs = rgm_realloc(img->blobs, img->cap_blobs * sizeof(*img->blobs));
    }
    img->blobs[img->n_blobs++] = b;
    img->total_bytes += size;
    if (b->state == B_DONE || b->state == B_FAILED) {
        blob_apply(b, img);
        return;
    }
    if (b->n_waiters == b->cap_waiters) {
        b->cap_waiters = b->cap_waiters ? b->cap_waiters * 2 : 4;
        b->waiters = rgm_realloc(b->waiters, b->cap_waiters * sizeof(*b->waiters));
    }
    b->waiters[b->n_waiters++] = img;
    img->n_pending++;
}

struct blob *rgm_prewarm_plan_take_blob(struct pw *pw)
{
    struct blob *b = pw->bq_head;

    if (!b)
        return NULL;
    pw->bq_head = b->qnext;
    if (!pw->bq_head)
        pw->bq_tail = NULL;
    b->qnext = NULL;
    b->state = B_RUNNING;
    return b;
}

void rgm_prewarm_blob_finish(struct pw *pw, struct blob *b, int is_hit, const char *error)
{
    size_t i;

    b->state = error ? B_FAILED : B_DONE;
    b->is_hit = is_hit;
    if (error)
        b->error = rgm_strdup(error);
    else if (!is_hit)
        pw->n_blobs_fetched++;
    for (i = 0; i < b->n_waiters; i++) {
        struct image *img = b->waiters[i];
        blob_apply(b, img);
        img->n_pending--;
    }
    /* Count first, then check: once an image finishes, the caller may end the run, which
     * must not happen while another waiter still counts this blob as pending. */
    for (i = 0; i < b->n_waiters; i++)
        rgm_prewarm_image_check_done(pw, b->waiters[i]);
    RGM_FREE(b->waiters);
    b->n_waiters = 0;
    b->cap_waiters = 0;
}

void rgm_prewarm_plan_free(struct pw *pw)
{
    size_t i;

    for (i = 0; i < BLOB_BUCKETS; i++) {
        struct blob *b = pw->buckets[i], *next;
        for (; b; b = next) {
            next = b->hnext;
            free(b->waiters);
            free(b->error);
            free(b);
        }
    }
    for (i = 0; i < pw->n_images; i++) {
        free(pw->images[i].text);
        free(pw->images[i].error);
        free(pw->images[i].blobs);
    }
    free(pw->images);
}
