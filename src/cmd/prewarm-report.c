/* regmirror prewarm, output: the live progress display on a terminal (ANSI cursor movement,
 * redrawn from a timer), one line per finished image, the summary table and the --json
 * document. It only reads the run's state; the pull logic is in prewarm-run.c. */
#include "config.h"

#include "cmd/prewarm-int.h"

#include <inttypes.h>
#include <stdio.h>

#include <jansson.h>

#include "core/common.h"

double rgm_prewarm_secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

void rgm_prewarm_human_bytes(uint64_t n, char *out, size_t len)
{
    static const char *const units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = (double)n;
    size_t u = 0;

    while (v >= 1000.0 && u + 1 < RGM_ARRAY_SIZE(units)) {
        v /= 1000.0;
        u++;
    }
    if (u == 0)
        (void)snprintf(out, len, "%" PRIu64 " B", n);
    else
        (void)snprintf(out, len, "%.1f %s", v, units[u]);
}

const char *rgm_prewarm_image_status(const struct image *img)
{
    if (img->error)
        return "failed";
    return img->is_all_hit ? "cached" : "fetched";
}

void rgm_prewarm_live_clear(struct pw *pw)
{
    if (pw->live_lines > 0)
        printf("\r\033[%uA\033[J", pw->live_lines);
    pw->live_lines = 0;
}

void rgm_prewarm_print_result_line(struct pw *pw, const struct image *img)
{
    FILE *out = pw->o->is_json ? stderr : stdout;
    char b[32];

    if (pw->is_tty)
        rgm_prewarm_live_clear(pw);
    if (img->error) {
        fprintf(out, "FAIL %s: %s\n", img->name, img->error);
    } else {
        rgm_prewarm_human_bytes(img->total_bytes, b, sizeof(b));
        fprintf(out, "ok %s %s %u layer%s %s %s %.1f s\n", img->name, img->digest, img->n_layers,
                img->n_layers == 1 ? "" : "s", b, rgm_prewarm_image_status(img),
                rgm_prewarm_secs(img->t_end - img->t_start));
    }
    fflush(out);
}

/* ---- progress display ---- */

static uint64_t image_bytes_done(const struct image *img)
{
    uint64_t n = 0;
    size_t i;

    for (i = 0; i < img->n_blobs; i++) {
        const struct blob *b = img->blobs[i];
        n += b->state == B_DONE ? b->size : (b->state == B_RUNNING ? b->got : 0);
    }
    return n;
}

void rgm_prewarm_render(struct pw *pw)
{
    uint64_t now = uv_hrtime(), done = 0, total = 0, inflight = 0;
    char b1[32], b2[32], b3[32], eta[32];
    unsigned shown = 0, lines = 0, n_done = 0;
    size_t i;
    double dt;

    rgm_prewarm_live_clear(pw);
    for (i = 0; i < pw->n_images; i++) {
        struct image *img = &pw->images[i];
        uint64_t d;
        if (img->is_done) {
            n_done++;
            continue;
        }
        if (!img->is_started)
            continue;
        d = image_bytes_done(img);
        if (shown < LIVE_LINES_MAX) {
            dt = rgm_prewarm_secs(now - img->t_start);
            rgm_prewarm_human_bytes(d, b1, sizeof(b1));
            rgm_prewarm_human_bytes(img->total_bytes, b2, sizeof(b2));
            rgm_prewarm_human_bytes(dt > 0.05 ? (uint64_t)((double)d / dt) : 0, b3, sizeof(b3));
            printf("  %-50.50s %3u/%-3zu blobs %10s / %-10s %10s/s\n", img->name, img->n_blobs_done,
                   img->n_blobs, b1, b2, b3);
            lines++;
        }
        shown++;
    }
    if (shown > LIVE_LINES_MAX) {
        printf("  ... and %u more\n", shown - LIVE_LINES_MAX);
        lines++;
    }
    for (i = 0; i < BLOB_BUCKETS; i++) {
        const struct blob *b;
        for (b = pw->buckets[i]; b; b = b->hnext) {
            total += b->size;
            if (b->state == B_DONE || b->state == B_FAILED)
                done += b->size;
            else if (b->state == B_RUNNING)
                inflight += b->got;
        }
    }
    dt = rgm_prewarm_secs(now - pw->rate_last_t);
    if (dt > 0.1) {
        double inst = (double)(pw->fetched_bytes + inflight - pw->rate_last_bytes) / dt;
        pw->rate = pw->rate == 0 ? inst : 0.7 * pw->rate + 0.3 * inst;
        pw->rate_last_bytes = pw->fetched_bytes + inflight;
        pw->rate_last_t = now;
    }
    done += inflight;
    rgm_prewarm_human_bytes(done, b1, sizeof(b1));
    rgm_prewarm_human_bytes(total, b2, sizeof(b2));
    rgm_prewarm_human_bytes((uint64_t)pw->rate, b3, sizeof(b3));
    if (pw->rate > 1 && total > done) {
        uint64_t s = (uint64_t)((double)(total - done) / pw->rate);
        (void)snprintf(eta, sizeof(eta), "ETA %" PRIu64 ":%02" PRIu64, s / 60, s % 60);
    } else {
        eta[0] = '\0';
    }
    printf("[%u/%zu images] %s / %s  %s/s  %.0f s  %s\n", n_done, pw->n_images, b1, b2, b3,
           rgm_prewarm_secs(now - pw->t0), eta);
    lines++;
    pw->live_lines = lines;
    fflush(stdout);
}

/* ---- results ---- */

static json_t *image_json(const struct image *img)
{
    json_t *o = json_object(), *plats = json_array();
    char buf[512], *p, *save = NULL;

    (void)snprintf(buf, sizeof(buf), "%s", img->platforms);
    for (p = strtok_r(buf, ",", &save); p; p = strtok_r(NULL, ",", &save))
        json_array_append_new(plats, json_string(p));
    json_object_set_new(o, "ref", json_string(img->name));
    json_object_set_new(o, "line", json_integer(img->line));
    json_object_set_new(o, "digest", img->digest[0] ? json_string(img->digest) : json_null());
    json_object_set_new(o, "platforms", plats);
    json_object_set_new(o, "layers", json_integer(img->n_layers));
    json_object_set_new(o, "referrers", json_integer(img->n_referrers));
    json_object_set_new(o, "blobs", json_integer((json_int_t)img->n_blobs));
    json_object_set_new(o, "bytes", json_integer((json_int_t)img->total_bytes));
    json_object_set_new(o, "fetched_bytes", json_integer((json_int_t)img->fetched_bytes));
    json_object_set_new(o, "status", json_string(rgm_prewarm_image_status(img)));
    json_object_set_new(o, "error", img->error ? json_string(img->error) : json_null());
    json_object_set_new(o, "seconds", json_real(rgm_prewarm_secs(img->t_end - img->t_start)));
    return o;
}

void rgm_prewarm_print_json(struct pw *pw, uint64_t elapsed)
{
    json_t *root = json_object(), *arr = json_array(), *totals = json_object();
    size_t i, n_cached = 0, n_fetched = 0, n_failed = 0;
    uint64_t bytes = 0;

    for (i = 0; i < pw->n_images; i++) {
        const struct image *img = &pw->images[i];
        const char *st = rgm_prewarm_image_status(img);
        json_array_append_new(arr, image_json(img));
        n_cached += strcmp(st, "cached") == 0;
        n_fetched += strcmp(st, "fetched") == 0;
        n_failed += strcmp(st, "failed") == 0;
        bytes += img->total_bytes;
    }
    json_object_set_new(root, "mirror", json_string(pw->o->base));
    json_object_set_new(root, "images", arr);
    json_object_set_new(totals, "images", json_integer((json_int_t)pw->n_images));
    json_object_set_new(totals, "cached", json_integer((json_int_t)n_cached));
    json_object_set_new(totals, "fetched", json_integer((json_int_t)n_fetched));
    json_object_set_new(totals, "failed", json_integer((json_int_t)n_failed));
    json_object_set_new(totals, "blobs", json_integer((json_int_t)pw->n_blobs));
    json_object_set_new(totals, "blobs_fetched", json_integer((json_int_t)pw->n_blobs_fetched));
    json_object_set_new(totals, "bytes", json_integer((json_int_t)bytes));
    json_object_set_new(totals, "fetched_bytes", json_integer((json_int_t)pw->fetched_bytes));
    json_object_set_new(totals, "seconds", json_real(rgm_prewarm_secs(elapsed)));
    json_object_set_new(root, "totals", totals);
    if (json_dumpf(root, stdout, JSON_INDENT(2)) < 0)
        fprintf(stderr, "regmirror prewarm: cannot write JSON\n");
    printf("\n");
    json_decref(root);
}

void rgm_prewarm_print_table(struct pw *pw, uint64_t elapsed)
{
    size_t i, w = 5, n_failed = 0, n_cached = 0;
    char dg[32], sz[32], tm[32];

    for (i = 0; i < pw->n_images; i++) {
        size_t len = strlen(pw->images[i].name);
        if (len > w)
            w = len;
    }
    if (w > 80)
        w = 80;
    printf("\n%-*s  %-19s  %-20s  %6s  %10s  %-7s  %7s\n", (int)w, "IMAGE", "DIGEST", "PLATFORMS",
           "LAYERS", "SIZE", "STATUS", "TIME");
    for (i = 0; i < pw->n_images; i++) {
        const struct image *img = &pw->images[i];
        (void)snprintf(dg, sizeof(dg), "%.19s", img->digest[0] ? img->digest : "-");
        rgm_prewarm_human_bytes(img->total_bytes, sz, sizeof(sz));
        (void)snprintf(tm, sizeof(tm), "%.1fs", rgm_prewarm_secs(img->t_end - img->t_start));
        printf("%-*.*s  %-19s  %-20s  %6u  %10s  %-7s  %7s\n", (int)w, (int)w, img->name, dg,
               img->platforms[0] ? img->platforms : "-", img->n_layers, sz,
               rgm_prewarm_image_status(img), tm);
        n_failed += img->error != NULL;
        n_cached += !img->error && img->is_all_hit;
    }
    rgm_prewarm_human_bytes(pw->fetched_bytes, sz, sizeof(sz));
    printf("\n%zu images: %zu cached, %zu fetched, %zu failed; %zu blobs (%zu fetched, %s) in "
           "%.1f s\n",
           pw->n_images, n_cached, pw->n_images - n_cached - n_failed, n_failed, pw->n_blobs,
           pw->n_blobs_fetched, sz, rgm_prewarm_secs(elapsed));
    if (n_failed > 0) {
        printf("\nfailed:\n");
        for (i = 0; i < pw->n_images; i++)
            if (pw->images[i].error)
                printf("  %s: %s\n", pw->images[i].name, pw->images[i].error);
    }
    fflush(stdout);
}
