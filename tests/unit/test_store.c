/* Unit tests for the blob store: layout, digest validation, tmp cleanup, put_small
 * verification, commit/open_blob, walk. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "cache/store.h"
#include "tap.h"

/* sha256("hello\n") */
#define HELLO_SHA "sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
/* sha512("hello\n") */
#define HELLO_SHA512                                                                               \
    "sha512:e7c22b994c59d9cf2b48e549b1e24666636045930d3da7c1acb299d1c3b7f931f94aae41edda2c2b207a3" \
    "6e10f8bcb8d45223e54878f5b316e7ce3b6bc019629"

static char root[256];

static int exists(const char *rel)
{
    char path[512];
    struct stat st;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    return stat(path, &st) == 0;
}

static int count_dir(const char *rel)
{
    char cmd[600];
    char path[512];
    FILE *p;
    int n = -1;

    snprintf(path, sizeof(path), "%s/%s", root, rel);
    snprintf(cmd, sizeof(cmd), "ls -A '%s' | wc -l", path);
    p = popen(cmd, "r");
    if (!p)
        return -1;
    if (fscanf(p, "%d", &n) != 1)
        n = -1;
    pclose(p);
    return n;
}

struct walk_acc {
    int n;
    int saw_hello;
    int saw_hello512;
    uint64_t hello_size;
};

static int on_walk(const char *digest, uint64_t size, void *ud)
{
    struct walk_acc *a = ud;

    a->n++;
    if (strcmp(digest, HELLO_SHA) == 0) {
        a->saw_hello = 1;
        a->hello_size = size;
    }
    if (strcmp(digest, HELLO_SHA512) == 0)
        a->saw_hello512 = 1;
    return 0;
}

static int stop_walk(const char *digest, uint64_t size, void *ud)
{
    (void)digest;
    (void)size;
    (*(int *)ud)++;
    return 42;
}

static void test_digests(void)
{
    ok(rgm_digest_check(HELLO_SHA) == 0, "sha256 digest valid");
    ok(rgm_digest_check(HELLO_SHA512) == 0, "sha512 digest valid");
    is_int(
        rgm_digest_check("sha256:5891B5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
        UV_EINVAL, "uppercase hex refused");
    is_int(rgm_digest_check("sha256:5891b5"), UV_EINVAL, "short hex refused");
    is_int(rgm_digest_check("sha256:../../../../etc/passwd"), UV_EINVAL, "traversal refused");
    is_int(rgm_digest_check("md5:d41d8cd98f00b204e9800998ecf8427e"), UV_EINVAL,
           "unknown algorithm refused");
    is_int(rgm_digest_check(HELLO_SHA "0"), UV_EINVAL, "long hex refused");
    is_int(rgm_digest_check("sha256:"
                            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
                            "/x"),
           UV_EINVAL, "trailing slash refused");
    is_int(rgm_digest_check(""), UV_EINVAL, "empty refused");
    is_int(rgm_digest_check(NULL), UV_EINVAL, "NULL refused");
}

static void test_errno_names(void)
{
    is_str(rgm_store_errno_name(UV_ENOSPC), "ENOSPC", "errno name: ENOSPC");
    is_str(rgm_store_errno_name(-EDQUOT), "EDQUOT", "errno name: EDQUOT (quota)");
    is_str(rgm_store_errno_name(UV_EIO), "EIO", "errno name: EIO");
    is_str(rgm_store_errno_name(UV_EROFS), "EROFS", "errno name: EROFS");
    is_str(rgm_store_errno_name(-12345), "other", "errno name: unknown is other");
    ok(rgm_store_is_disk_error(-EDQUOT) && rgm_store_is_disk_error(UV_ENOSPC) &&
           rgm_store_is_disk_error(UV_EIO) && !rgm_store_is_disk_error(UV_EINVAL),
       "disk errors: ENOSPC, EDQUOT, EIO yes; EINVAL no");
    is_str(rgm_store_op_name(RGM_STORE_OP_INDEX), "index", "op name: index");
}

static void on_err(const char *op, const char *error, uint64_t count, void *ud)
{
    char *out = ud;
    size_t n = strlen(out);

    snprintf(out + n, 128 - n, "%s/%s=%llu;", op, error, (unsigned long long)count);
}

static void test_partial_format(const char *dir)
{
    rgm_store_partial_t p, q;
    rgm_store_t *s = NULL;
    char text[2048];
    char path[1024];
    char errs[128] = "";
    char *taken = NULL;
    int n;
    FILE *f;

    memset(&p, 0, sizeof(p));
    snprintf(p.digest, sizeof(p.digest), "%s", HELLO_SHA);
    snprintf(p.prefix, sizeof(p.prefix), "sha256:%064d", 0);
    p.size = 100;
    p.written = 40;
    snprintf(p.registry, sizeof(p.registry), "docker.io");
    snprintf(p.repo, sizeof(p.repo), "library/app");
    n = rgm_store_partial_format(&p, text, sizeof(text));
    ok(n > 0, "sidecar: formatted (%d bytes)", n);
    is_int(rgm_store_partial_parse(text, (size_t)n, &q), 0, "sidecar: parses back");
    ok(q.size == 100 && q.written == 40 && strcmp(q.prefix, p.prefix) == 0 &&
           strcmp(q.repo, "library/app") == 0,
       "sidecar: same fields");
    is_int(rgm_store_partial_parse(text, (size_t)n - 1, &q), UV_EINVAL, "sidecar: truncated");
    text[0] = 'X';
    is_int(rgm_store_partial_parse(text, (size_t)n, &q), UV_EINVAL, "sidecar: bad magic");
    p.written = 100;
    is_int(rgm_store_partial_format(&p, text, sizeof(text)), UV_EINVAL,
           "sidecar: written must be below size");
    p.written = 40;
    snprintf(p.repo, sizeof(p.repo), "a\nb");
    is_int(rgm_store_partial_format(&p, text, sizeof(text)), UV_EINVAL, "sidecar: no newline");
    snprintf(p.repo, sizeof(p.repo), "library/app");

    /* a kept partial survives open and is taken once */
    n = rgm_store_partial_format(&p, text, sizeof(text));
    snprintf(path, sizeof(path), "%s/tmp/%s.9.partial.keep", dir, HELLO_SHA + 7);
    f = fopen(path, "w");
    ok(f && fwrite(text, 1, (size_t)n, f) == (size_t)n && fclose(f) == 0, "sidecar written");
    snprintf(path, sizeof(path), "%s/tmp/%s.9.partial", dir, HELLO_SHA + 7);
    f = fopen(path, "w");
    ok(f && fclose(f) == 0, "partial written");
    is_int(rgm_store_open(dir, &s), 0, "open with a partial");
    is_int((int)rgm_store_partial_count(s), 1, "partial kept");
    is_int(rgm_store_take_partial(s, HELLO_SHA, "evil.test", &taken, &q), 0,
           "another registry does not take it");
    is_int((int)rgm_store_partial_count(s), 1, "... and it stays kept");
    is_int(rgm_store_take_partial(s, HELLO_SHA, "docker.io", &taken, &q), 1, "partial taken");
    ok(taken && strcmp(taken, path) == 0 && q.written == 40, "taken: its path and prefix");
    free(taken);
    is_int(rgm_store_take_partial(s, HELLO_SHA, NULL, &taken, &q), 0, "taken once");
    is_int(rgm_store_keep_partial(s, path), 0, "given back");
    is_int((int)rgm_store_partial_count(s), 1, "kept again");
    rgm_store_count_error(s, RGM_STORE_OP_WRITE, UV_ENOSPC);
    rgm_store_count_error(s, RGM_STORE_OP_WRITE, UV_ENOSPC);
    rgm_store_count_error(s, RGM_STORE_OP_INDEX, -EDQUOT);
    rgm_store_errors_each(s, on_err, errs);
    is_str(errs, "write/ENOSPC=2;index/EDQUOT=1;", "store errors by op and errno name");
    rgm_store_close(s);
}

int main(void)
{
    rgm_store_t *s = NULL;
    char path[1024], want[1024];
    char *tmp_path = NULL;
    struct walk_acc acc = {0};
    void *data = NULL;
    uint64_t size = 0;
    size_t len = 0;
    int fd = -1;
    int stops = 0;
    FILE *fp;

    test_digests();
    test_errno_names();

    snprintf(root, sizeof(root), "/tmp/rgm-test-store.XXXXXX");
    if (!mkdtemp(root)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }

    /* open creates the layout */
    is_int(rgm_store_open(root, &s), 0, "open");
    ok(exists("blobs/sha256") && exists("blobs/sha512") && exists("tmp"), "layout created");
    is_str(rgm_store_dir(s), root, "dir");
    ok(rgm_store_index_path(s, path, sizeof(path)) == 0, "index path");
    snprintf(want, sizeof(want), "%s/index.db", root);
    is_str(path, want, "index path is <storage>/index.db");

    /* paths */
    ok(rgm_store_blob_path(s, HELLO_SHA, path, sizeof(path)) == 0, "blob path");
    snprintf(want, sizeof(want), "%s/blobs/sha256/58/%s", root, HELLO_SHA + 7);
    is_str(path, want, "sha256 path layout");
    ok(rgm_store_blob_path(s, HELLO_SHA512, path, sizeof(path)) == 0, "blob path 512");
    snprintf(want, sizeof(want), "%s/blobs/sha512/e7/%s", root, HELLO_SHA512 + 7);
    is_str(path, want, "sha512 path layout");
    is_int(rgm_store_blob_path(s, "sha256:../x", path, sizeof(path)), UV_EINVAL,
           "bad digest: no path");
    is_int(rgm_store_blob_path(s, HELLO_SHA, path, 10), UV_ENAMETOOLONG, "short buffer");
    is_int(rgm_store_open_blob(s, "sha256:..", &fd, &size), UV_EINVAL, "open_blob bad digest");
    is_int(rgm_store_put_small(s, "sha1:abc", "x", 1), UV_EINVAL, "put_small bad digest");
    is_int(rgm_store_remove(s, "../index.db"), UV_EINVAL, "remove bad digest");
    is_int(rgm_store_has(s, "nope", NULL), UV_EINVAL, "has bad digest");
    is_int(rgm_store_tmp_open(s, "nope", &fd, &tmp_path), UV_EINVAL, "tmp_open bad digest");

    /* absent */
    is_int(rgm_store_open_blob(s, HELLO_SHA, &fd, &size), UV_ENOENT, "absent: ENOENT");
    is_int(fd, -1, "absent: no fd");
    is_int(rgm_store_has(s, HELLO_SHA, &size), 0, "absent: has 0");

    /* put_small verifies */
    is_int(rgm_store_put_small(s, HELLO_SHA, "hellO\n", 6), UV_EINVAL, "put_small mismatch");
    is_int(rgm_store_has(s, HELLO_SHA, NULL), 0, "nothing stored on mismatch");
    is_int(count_dir("tmp"), 0, "tmp clean after mismatch");
    is_int(rgm_store_put_small(s, HELLO_SHA, "hello\n", 6), 0, "put_small");
    is_int(rgm_store_put_small(s, HELLO_SHA512, "hello\n", 6), 0, "put_small sha512");
    is_int(rgm_store_put_small(s, HELLO_SHA512, "hello", 5), UV_EINVAL, "put_small 512 mismatch");
    is_int(count_dir("tmp"), 0, "tmp clean after put_small");
    is_int(rgm_store_has(s, HELLO_SHA, &size), 1, "has");
    is_int(size, 6, "has size");
    snprintf(want, sizeof(want), "blobs/sha256/58/%s", HELLO_SHA + 7);
    ok(exists(want), "file at layout path");

    is_int(rgm_store_read_small(s, HELLO_SHA, 100, &data, &len), 0, "read_small");
    is_int(len, 6, "read_small len");
    ok(data && memcmp(data, "hello\n", 6) == 0, "read_small bytes");
    free(data);
    data = NULL;
    is_int(rgm_store_read_small(s, HELLO_SHA, 5, &data, &len), UV_E2BIG, "read_small max");
    ok(data == NULL, "no data on E2BIG");

    is_int(rgm_store_open_blob(s, HELLO_SHA, &fd, &size), 0, "open_blob");
    is_int(size, 6, "open_blob size");
    ok(fd >= 0 && (fcntl(fd, F_GETFD) & FD_CLOEXEC), "open_blob fd cloexec");
    ok(fd >= 0 && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDONLY, "open_blob read-only");
    if (fd >= 0)
        close(fd);

    /* tmp_open + commit */
    {
        /* sha256 of 1000 'a' */
        const char *dg = "sha256:41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3";
        char buf[1000];
        char *tmp2 = NULL;
        int fd2 = -1;

        memset(buf, 'a', sizeof(buf));
        is_int(rgm_store_tmp_open(s, dg, &fd, &tmp_path), 0, "tmp_open");
        is_int(rgm_store_tmp_open(s, dg, &fd2, &tmp2), 0, "tmp_open twice: unique");
        ok(tmp_path && tmp2 && strcmp(tmp_path, tmp2) != 0, "distinct temp names");
        ok(tmp_path && strstr(tmp_path, "/tmp/41edece4") && strstr(tmp_path, ".partial"),
           "temp name tmp/<hex>.<n>.partial");
        ok(fd >= 0 && write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf), "write temp");
        is_int(count_dir("tmp"), 2, "two temp files");
        is_int(rgm_store_commit(s, tmp_path, dg), 0, "commit");
        is_int(rgm_store_has(s, dg, &size), 1, "committed");
        is_int(size, 1000, "committed size");
        is_int(count_dir("tmp"), 1, "temp renamed away");
        ok(exists("blobs/sha256/41"), "prefix dir created by commit");
        close(fd);
        if (fd2 >= 0)
            close(fd2);
        free(tmp_path);
        tmp_path = NULL;
        /* tmp2 left behind, like a crash */
        free(tmp2);
    }

    /* writable */
    is_int(rgm_store_is_writable(s), 0, "writable");
    is_int(count_dir("tmp"), 1, "writable probe cleaned up");

    /* foreign files are skipped by walk */
    snprintf(path, sizeof(path), "%s/blobs/sha256/58/junk", root);
    fp = fopen(path, "w");
    ok(fp != NULL, "create foreign file");
    if (fp)
        fclose(fp);
    is_int(rgm_store_walk(s, on_walk, &acc), 0, "walk");
    is_int(acc.n, 3, "walk sees 3 blobs");
    ok(acc.saw_hello && acc.saw_hello512, "walk digests");
    is_int(acc.hello_size, 6, "walk size");
    is_int(rgm_store_walk(s, stop_walk, &stops), 42, "walk stops on non-zero");
    is_int(stops, 1, "walk stopped after one");

    /* reopen: tmp emptied, blobs kept */
    rgm_store_close(s);
    s = NULL;
    is_int(count_dir("tmp"), 1, "leftover before reopen");
    is_int(rgm_store_open(root, &s), 0, "reopen");
    is_int(count_dir("tmp"), 0, "tmp emptied at open");
    is_int(rgm_store_has(s, HELLO_SHA, NULL), 1, "blob survives reopen");

    /* remove */
    is_int(rgm_store_remove(s, HELLO_SHA), 0, "remove");
    is_int(rgm_store_has(s, HELLO_SHA, NULL), 0, "removed");
    is_int(rgm_store_remove(s, HELLO_SHA), 0, "remove absent is fine");
    memset(&acc, 0, sizeof(acc));
    is_int(rgm_store_walk(s, on_walk, &acc), 0, "walk again");
    is_int(acc.n, 2, "walk after remove");

    /* open on a path that cannot be a directory */
    {
        rgm_store_t *bad = NULL;

        snprintf(path, sizeof(path), "%s/blobs/sha256/58/junk/sub", root);
        ok(rgm_store_open(path, &bad) < 0 && bad == NULL, "open under a file fails");
    }

    rgm_store_close(s);
    test_partial_format(root);
    snprintf(path, sizeof(path), "rm -rf '%s'", root);
    if (system(path) != 0)
        printf("# cleanup failed\n");
    return tap_done();
}
