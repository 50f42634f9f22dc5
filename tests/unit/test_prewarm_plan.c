/* Unit tests for src/cmd/prewarm-plan.c: reading the list (comments, blanks, CRLF, duplicates
 * by normalized name, bad lines as FILE:LINE failures, unreadable files), image manifests into
 * blobs, and the blob table's accounting (shared digests, hits, fetches, failures). */
#include "cmd/prewarm-int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>
#include <jansson.h>

#include "tap.h"

#define D_A "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
#define D_B "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
#define D_C "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

static char path[] = "/tmp/rgm-test-prewarm-plan-XXXXXX";

/* Write text into the temp file; 0 or -1. */
static int write_list(const char *text)
{
    FILE *f = fopen(path, "w");

    if (!f)
        return -1;
    if (fputs(text, f) < 0) {
        fclose(f);
        return -1;
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* A run's state for the list in text: result lines go to stderr (--json), not into TAP. */
static int load(struct pw *pw, struct opts *o, const char *text)
{
    memset(pw, 0, sizeof(*pw));
    memset(o, 0, sizeof(*o));
    o->is_json = 1;
    pw->o = o;
    if (write_list(text) < 0)
        return -1;
    return rgm_prewarm_plan_read_list(pw, path);
}

static int starts_with(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

static void test_list(void)
{
    struct opts o;
    struct pw pw;
    char want[400];

    is_int(load(&pw, &o,
                "# a comment line\n"
                "\n"
                "   \t \n"
                "  alpine   # the same as the next line\n"
                "docker.io/library/alpine:latest\n"
                "nginx:1.25\r\n"
                "ghcr.io/org/app@" D_A "\n"
                "bad ref\n"
                "a#b\n"
                "UPPER/case\n"
                "bad ref\n"
                "quay.io/x/y:1"),
           0, "list read");
    is_int(pw.n_images, 8, "8 entries: comments, blanks and a duplicate skipped");
    is_str(pw.images[0].name, "docker.io/library/alpine:latest", "normalized name");
    is_str(pw.images[0].text, "alpine", "text as written, comment and blanks cut");
    is_int(pw.images[0].line, 4, "line number counts comments and blanks");
    ok(!pw.images[0].is_bad_line && !pw.images[0].error && pw.images[0].is_all_hit,
       "good line: no error, all hit until told otherwise");
    is_str(pw.images[1].name, "docker.io/library/nginx:1.25", "CRLF line");
    is_int(pw.images[1].line, 6, "CRLF line number");
    is_str(pw.images[2].name, "ghcr.io/org/app@" D_A, "pinned by digest");
    is_str(pw.images[2].ref.digest, D_A, "digest parsed");
    ok(pw.images[3].is_bad_line && pw.images[3].is_done, "a reference with a blank is a bad line");
    (void)snprintf(want, sizeof(want), "%s:8: ", path);
    ok(starts_with(pw.images[3].error, want), "error is FILE:LINE: reason (%s)",
       pw.images[3].error ? pw.images[3].error : "(null)");
    ok(strlen(pw.images[3].error) > strlen(want), "the reason is not empty");
    is_str(pw.images[3].name, "bad ref", "a bad line is named as written");
    ok(pw.images[4].is_bad_line, "'#' without a blank before it is no comment");
    is_str(pw.images[4].text, "a#b", "text keeps the '#'");
    ok(pw.images[5].is_bad_line, "uppercase repository is a bad line");
    (void)snprintf(want, sizeof(want), "%s:10: ", path);
    ok(starts_with(pw.images[5].error, want), "its line is 10");
    is_int(pw.images[6].line, 11, "a repeated bad line is kept: both are reported");
    ok(pw.images[6].is_bad_line, "repeated bad line still bad");
    is_str(pw.images[7].name, "quay.io/x/y:1", "the last line, without a newline");
    rgm_prewarm_plan_free(&pw);

    is_int(load(&pw, &o, "# only comments\n\n"), 0, "a list of comments");
    is_int(pw.n_images, 0, "has no images");
    rgm_prewarm_plan_free(&pw);

    is_int(load(&pw, &o, ""), 0, "an empty file");
    is_int(pw.n_images, 0, "has no images");
    rgm_prewarm_plan_free(&pw);

    memset(&pw, 0, sizeof(pw));
    pw.o = &o;
    is_int(rgm_prewarm_plan_read_list(&pw, "/nonexistent/rgm/list.txt"), UV_ENOENT,
           "a missing file: UV_ENOENT");
    is_int(pw.n_images, 0, "no images");
    is_int(rgm_prewarm_plan_read_list(&pw, "/"), UV_EIO, "a directory: read error");
    rgm_prewarm_plan_free(&pw);
}

static void test_manifest(void)
{
    struct opts o;
    struct pw pw;
    json_t *root;

    is_int(load(&pw, &o, "a/b:1\nc/d:2\ne/f:3\n"), 0, "three images");
    root = json_pack("{s{s:s,s:i},s[{s:s,s:i},{s:s,s:s,s:i}]}", "config", "digest", D_A, "size", 7,
                     "layers", "digest", D_B, "size", 100, "mediaType",
                     "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", "digest", D_C,
                     "size", 50);
    is_int(rgm_prewarm_plan_add_manifest(&pw, &pw.images[0], root), 0, "image manifest taken");
    is_int(pw.images[0].n_layers, 2, "two layers counted");
    is_int(pw.images[0].n_blobs, 2, "config and one layer: the foreign layer is not fetched");
    is_int(pw.images[0].total_bytes, 107, "bytes of the blobs to fetch");
    is_str(pw.images[0].blobs[0]->digest, D_A, "config first");
    is_int(pw.images[0].n_pending, 2, "the image waits for both");
    json_decref(root);

    root = json_pack("{s{s:s,s:i},s[{s:s,s:i}]}", "config", "digest", D_A, "size", 7, "layers",
                     "digest", "sha256:nothex", "size", 1);
    is_int(rgm_prewarm_plan_add_manifest(&pw, &pw.images[1], root), UV_EINVAL, "bad layer digest");
    is_str(pw.images[1].error, "manifest: bad descriptor", "its reason");
    json_decref(root);

    root = json_pack("{s{s:s,s:i},s[{s:s,s:i}]}", "config", "digest", D_A, "size", 7, "layers",
                     "digest", D_B, "size", -1);
    is_int(rgm_prewarm_plan_add_manifest(&pw, &pw.images[2], root), UV_EINVAL, "negative size");
    json_decref(root);

    root = json_pack("{s:i,s[]}", "schemaVersion", 1, "fsLayers");
    RGM_FREE(pw.images[2].error);
    rgm_prewarm_image_fail(&pw.images[2], "first");
    rgm_prewarm_image_fail(&pw.images[2], "second");
    is_str(pw.images[2].error, "first", "only the first reason is kept");
    RGM_FREE(pw.images[2].error);
    is_int(rgm_prewarm_plan_add_manifest(&pw, &pw.images[2], root), UV_EINVAL, "schema 1");
    is_str(pw.images[2].error, "manifest: neither an image manifest nor an index (schema 1?)",
           "schema 1 reason");
    json_decref(root);
    rgm_prewarm_plan_free(&pw);
}

static void test_blobs(void)
{
    struct opts o;
    struct pw pw;
    struct image *a, *b, *c;
    struct blob *x, *y, *z;

    is_int(load(&pw, &o, "a/a:1\nb/b:1\nc/c:1\n"), 0, "three images");
    pw.n_unfinished = 3;
    a = &pw.images[0];
    b = &pw.images[1];
    c = &pw.images[2];
    rgm_prewarm_image_add_blob(&pw, a, D_A, 10);
    rgm_prewarm_image_add_blob(&pw, a, D_B, 5);
    rgm_prewarm_image_add_blob(&pw, a, D_A, 10);
    rgm_prewarm_image_add_blob(&pw, b, D_A, 10);
    is_int(pw.n_blobs, 2, "two distinct blobs");
    is_int(a->n_blobs, 2, "a blob counts once per image");
    is_int(a->total_bytes, 15, "a's bytes");
    is_int(b->total_bytes, 10, "b's bytes");
    is_int(a->n_pending, 2, "a waits for two");
    is_int(b->n_pending, 1, "b waits for one");
    x = rgm_prewarm_plan_take_blob(&pw);
    y = rgm_prewarm_plan_take_blob(&pw);
    ok(x && strcmp(x->digest, D_A) == 0, "queue order: first seen first");
    ok(y && strcmp(y->digest, D_B) == 0, "then the next");
    ok(rgm_prewarm_plan_take_blob(&pw) == NULL, "a shared blob is queued once");
    ok(x && x->state == B_RUNNING && !x->qnext, "a taken blob is running");
    ok(x && strcmp(x->registry, "docker.io") == 0 && strcmp(x->repo, "a/a") == 0,
       "fetched through the first image that asked");
    if (!x || !y)
        goto out;

    rgm_prewarm_blob_finish(&pw, x, 1, NULL);
    is_int(x->state, B_DONE, "hit: done");
    ok(b->is_done && !b->error && b->is_all_hit, "b finished, all hit");
    is_int(b->fetched_bytes, 0, "nothing fetched for b");
    ok(!a->is_done, "a still waits");
    is_int(pw.n_unfinished, 2, "one image out of the count");
    is_int(pw.n_blobs_fetched, 0, "a hit is not a fetch");

    rgm_prewarm_blob_finish(&pw, y, 0, NULL);
    ok(a->is_done && !a->error && !a->is_all_hit, "a finished, fetched");
    is_int(a->fetched_bytes, 5, "a fetched 5 bytes");
    is_int(a->n_blobs_done, 2, "both of a's blobs done");
    is_int(pw.n_blobs_fetched, 1, "one fetch counted");

    rgm_prewarm_image_add_blob(&pw, c, D_B, 5);
    is_int(c->n_pending, 0, "a blob already over: nothing to wait for");
    is_int(c->n_blobs_done, 1, "its result taken at once");
    ok(!c->is_all_hit, "c took the fetch");
    rgm_prewarm_image_add_blob(&pw, c, D_C, 3);
    z = rgm_prewarm_plan_take_blob(&pw);
    ok(z && strcmp(z->digest, D_C) == 0, "a new blob is queued");
    if (!z)
        goto out;
    rgm_prewarm_blob_finish(&pw, z, 0, "HTTP 500");
    is_str(c->error, "blob " D_C ": HTTP 500", "a failed blob fails its image");
    ok(c->is_done, "c finished");
    is_int(pw.n_unfinished, 0, "every image out of the count");
    rgm_prewarm_image_add_blob(&pw, b, D_C, 3);
    is_str(b->error, "blob " D_C ": HTTP 500", "a later image takes the failure too");
    is_int(pw.n_blobs_fetched, 1, "a failure is not a fetch");
out:
    rgm_prewarm_plan_free(&pw);
}

int main(void)
{
    int fd = mkstemp(path);

    if (fd < 0) {
        perror("mkstemp");
        return 1;
    }
    close(fd);
    test_list();
    test_manifest();
    test_blobs();
    unlink(path);
    return tap_done();
}
