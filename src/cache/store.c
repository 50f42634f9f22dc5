/* Content-addressed blob files on disk (DESIGN "On disk"). Paths are built only from
 * validated digests. Synchronous small file-system calls; no rows, no readers, no HTTP. Also
 * the partial fetches kept across restarts (their sidecar format and the list of them) and
 * the count of store write errors. */
#include "cache/store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <inttypes.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>
#include <openssl/evp.h>

#include "core/log.h"
#include "core/util.h"

#define STORE_PATH_MAX 4096

/* A partial fetch kept for resuming (see store.h). */
struct kept {
    struct kept *next;
    char *path;
    rgm_store_partial_t p;
};

/* errno names counted in regmirror_store_errors_total; the last slot is "other". */
static const struct {
    int err;
    const char *name;
} errno_names[] = {
    {UV_ENOSPC, "ENOSPC"}, {-EDQUOT, "EDQUOT"},   {UV_EIO, "EIO"},       {UV_EROFS, "EROFS"},
    {UV_EFBIG, "EFBIG"},   {UV_ENOMEM, "ENOMEM"}, {UV_EACCES, "EACCES"}, {UV_EPERM, "EPERM"},
    {UV_EBADF, "EBADF"},   {UV_ENOENT, "ENOENT"}, {UV_EEXIST, "EEXIST"}, {UV_EMFILE, "EMFILE"},
    {UV_EINVAL, "EINVAL"},
};
#define ERRNO_SLOTS (RGM_ARRAY_SIZE(errno_names) + 1)

struct rgm_store {
    char *dir;
    uint64_t tmp_counter;
    int lock_fd;  /* <dir>/.lock, flock'ed when is_owner */
    int is_owner; /* no other process holds the storage */
    struct kept *kept;
    size_t kept_count;
    uint64_t errors[RGM_STORE_OP_COUNT][ERRNO_SLOTS];
};

static const char *const algos[] = {"sha256", "sha512"};

/* ---- digests ---- */

static int is_lower_hex(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return 0;
    }
    return 1;
}

/* Length of the hex part for an algorithm name, 0 when unknown. */
static size_t algo_hex_len(const char *algo, size_t algo_len)
{
    if (algo_len == 6 && memcmp(algo, "sha256", 6) == 0)
        return 64;
    if (algo_len == 6 && memcmp(algo, "sha512", 6) == 0)
        return 128;
    return 0;
}

int rgm_digest_check(const char *digest)
{
    const char *colon;
    size_t hex_len;

    if (!digest)
        return UV_EINVAL;
    colon = strchr(digest, ':');
    if (!colon)
        return UV_EINVAL;
    hex_len = algo_hex_len(digest, (size_t)(colon - digest));
    if (hex_len == 0 || strlen(colon + 1) != hex_len || !is_lower_hex(colon + 1, hex_len))
        return UV_EINVAL;
    return 0;
}

/* ---- paths ---- */

static int path_fmt(char *buf, size_t len, const char *fmt, ...) RGM_PRINTF(3, 4);

static int path_fmt(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= len)
        return UV_ENAMETOOLONG;
    return 0;
}

int rgm_store_blob_path(const rgm_store_t *s, const char *digest, char *buf, size_t len)
{
    const char *hex;

    if (rgm_digest_check(digest) < 0)
        return UV_EINVAL;
    hex = digest + 7; /* "sha256:" and "sha512:" are both 7 bytes */
    return path_fmt(buf, len, "%s/blobs/%.6s/%.2s/%s", s->dir, digest, hex, hex);
}

int rgm_store_index_path(const rgm_store_t *s, char *buf, size_t len)
{
    return path_fmt(buf, len, "%s/index.db", s->dir);
}

const char *rgm_store_dir(const rgm_store_t *s)
{
    return s->dir;
}

static int mkdir_one(const char *path)
{
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* ---- partials kept across restarts ---- */

/* One "key value" line of a sidecar into out (NUL-terminated). 0, or UV_EINVAL when the next
 * line is not key or its value does not fit. *pos moves past the line. */
static int sidecar_line(const char *text, size_t len, size_t *pos, const char *key, char *out,
                        size_t out_len)
{
    size_t klen = strlen(key);
    const char *line = text + *pos;
    const char *nl;
    size_t n;

    if (*pos >= len)
        return UV_EINVAL;
    nl = memchr(line, '\n', len - *pos);
    if (!nl)
        return UV_EINVAL;
    n = (size_t)(nl - line);
    if (n <= klen + 1 || memcmp(line, key, klen) != 0 || line[klen] != ' ' ||
        n - klen - 1 >= out_len)
        return UV_EINVAL;
    memcpy(out, line + klen + 1, n - klen - 1);
    out[n - klen - 1] = '\0';
    if (memchr(out, '\0', n - klen - 1) || strchr(out, '\r'))
        return UV_EINVAL;
    *pos += n + 1;
    return 0;
}

#define SIDECAR_MAGIC "regmirror-partial 1\n"

int rgm_store_partial_parse(const char *text, size_t len, rgm_store_partial_t *p)
{
    char num[32];
    size_t pos = sizeof(SIDECAR_MAGIC) - 1;
    int err = 0;

    memset(p, 0, sizeof(*p));
    if (len < pos || memcmp(text, SIDECAR_MAGIC, pos) != 0)
        return UV_EINVAL;
    err |= sidecar_line(text, len, &pos, "digest", p->digest, sizeof(p->digest));
    err |= sidecar_line(text, len, &pos, "size", num, sizeof(num));
    if (err == 0)
        err |= rgm_parse_uint(num, UINT64_MAX - 1, &p->size);
    err |= sidecar_line(text, len, &pos, "written", num, sizeof(num));
    if (err == 0)
        err |= rgm_parse_uint(num, UINT64_MAX - 1, &p->written);
    err |= sidecar_line(text, len, &pos, "prefix", p->prefix, sizeof(p->prefix));
    err |= sidecar_line(text, len, &pos, "registry", p->registry, sizeof(p->registry));
    err |= sidecar_line(text, len, &pos, "repo", p->repo, sizeof(p->repo));
    if (err != 0 || pos != len || rgm_digest_check(p->digest) < 0 ||
        rgm_digest_check(p->prefix) < 0 || strncmp(p->digest, p->prefix, 7) != 0 ||
        p->written >= p->size)
        return UV_EINVAL;
    return 0;
}

int rgm_store_partial_format(const rgm_store_partial_t *p, char *buf, size_t len)
{
    int n;

    if (rgm_digest_check(p->digest) < 0 || rgm_digest_check(p->prefix) < 0 ||
        p->written >= p->size || strpbrk(p->registry, "\r\n") || strpbrk(p->repo, "\r\n") ||
        !p->registry[0] || !p->repo[0])
        return UV_EINVAL;
    n = snprintf(buf, len,
                 SIDECAR_MAGIC "digest %s\nsize %" PRIu64 "\nwritten %" PRIu64
                               "\nprefix %s\nregistry %s\nrepo %s\n",
                 p->digest, p->size, p->written, p->prefix, p->registry, p->repo);
    if (n < 0 || (size_t)n >= len)
        return UV_ENAMETOOLONG;
    return n;
}

/* Read and check the sidecar of the partial dir/name: 0 with *p, or <0. The partial's name
 * must start with the digest's hex, and the sidecar must be younger than max_age_s. */
static int sidecar_read(int dfd, const char *name, uint64_t max_age_s, rgm_store_partial_t *p)
{
    char sidecar[NAME_MAX + 1];
    char text[2048];
    struct stat st;
    ssize_t n;
    size_t hex_len;
    int fd;
    int err;

    err = path_fmt(sidecar, sizeof(sidecar), "%s%s", name, RGM_STORE_KEEP_SUFFIX);
    if (err < 0)
        return err;
    fd = openat(dfd, sidecar, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return UV_EINVAL;
    }
    n = read(fd, text, sizeof(text));
    close(fd);
    if (n < 0)
        return UV_EIO;
    if ((uint64_t)st.st_mtim.tv_sec + max_age_s < (uint64_t)time(NULL))
        return UV_ETIMEDOUT;
    if ((size_t)n >= sizeof(text) || rgm_store_partial_parse(text, (size_t)n, p) < 0)
        return UV_EINVAL;
    hex_len = strlen(p->digest + 7);
    if (strncmp(name, p->digest + 7, hex_len) != 0 || name[hex_len] != '.')
        return UV_EINVAL;
    if (fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
        return UV_ENOENT;
    return 0;
}

/* Remember a partial; a second one of the same digest keeps the longer prefix, and the other
 * one's files are deleted. */
static void kept_add(rgm_store_t *s, const char *path, const rgm_store_partial_t *p)
{
    struct kept *k;
    char sc[STORE_PATH_MAX];
    const char *loser = path;

    for (k = s->kept; k; k = k->next) {
        if (strcmp(k->p.digest, p->digest) != 0)
            continue;
        if (p->written > k->p.written) {
            loser = k->path;
            k->path = rgm_strdup(path);
            k->p = *p;
        }
        if (path_fmt(sc, sizeof(sc), "%s%s", loser, RGM_STORE_KEEP_SUFFIX) == 0)
            (void)unlink(sc);
        (void)unlink(loser);
        if (loser != path)
            free((char *)loser);
        return;
    }
    k = rgm_calloc(1, sizeof(*k));
    k->path = rgm_strdup(path);
    k->p = *p;
    k->next = s->kept;
    s->kept = k;
    s->kept_count++;
}

/* 1 when name is the sidecar of a partial in dir (the partial decides for both). */
static int is_sidecar_of_partial(int dfd, const char *name)
{
    char partial[NAME_MAX + 1];
    size_t len = strlen(name);
    size_t ks = sizeof(RGM_STORE_KEEP_SUFFIX) - 1;
    struct stat st;

    if (len <= ks + 8 || strcmp(name + len - ks, RGM_STORE_KEEP_SUFFIX) != 0 ||
        len - ks >= sizeof(partial))
        return 0;
    memcpy(partial, name, len - ks);
    partial[len - ks] = '\0';
    return strcmp(partial + len - ks - 8, ".partial") == 0 &&
           fstatat(dfd, partial, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Clean dir/tmp (files only: we never create directories there): keep each partial with a
 * valid, young sidecar (and that sidecar); delete the rest, including kept partials' sidecars
 * whose partial goes. Two passes: partials decide, then the sidecars left are litter. */
static int clean_tmp(rgm_store_t *s, const char *tmp_dir)
{
    char path[STORE_PATH_MAX];
    rgm_store_partial_t p;
    DIR *d;
    struct dirent *de;
    unsigned long n = 0;
    size_t len;
    int pass;

    for (pass = 0; pass < 2; pass++) {
        d = opendir(tmp_dir);
        if (!d)
            return -errno;
        while ((de = readdir(d)) != NULL) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            len = strlen(de->d_name);
            if (pass == 0 && len > 8 && strcmp(de->d_name + len - 8, ".partial") == 0 &&
                sidecar_read(dirfd(d), de->d_name, RGM_STORE_PARTIAL_MAX_AGE_S, &p) == 0 &&
                path_fmt(path, sizeof(path), "%s/%s", tmp_dir, de->d_name) == 0) {
                kept_add(s, path, &p);
                continue;
            }
            if (is_sidecar_of_partial(dirfd(d), de->d_name))
                continue; /* its partial decides (pass 0) and stays with it (pass 1) */
            if (pass == 1 && !(len > sizeof(RGM_STORE_KEEP_SUFFIX) &&
                               strcmp(de->d_name + len - sizeof(RGM_STORE_KEEP_SUFFIX) + 1,
                                      RGM_STORE_KEEP_SUFFIX) == 0))
                continue; /* pass 1 only deletes sidecars whose partial went in pass 0 */
            if (unlinkat(dirfd(d), de->d_name, 0) < 0)
                rgm_log(RGM_LOG_WARN, "store", "cannot delete tmp/%s: %s", de->d_name,
                        strerror(errno));
            else
                n++;
        }
        closedir(d);
    }
    if (n > 0)
        rgm_log(RGM_LOG_INFO, "store", "deleted %lu leftover temp files", n);
    if (s->kept_count > 0)
        rgm_log(RGM_LOG_INFO, "store", "kept %zu partial fetches for resuming", s->kept_count);
    return 0;
}

int rgm_store_take_partial(rgm_store_t *s, const char *digest, const char *registry, char **path,
                           rgm_store_partial_t *p)
{
    struct kept **pp;
    struct kept *k;

    *path = NULL;
    for (pp = &s->kept; (k = *pp) != NULL; pp = &k->next) {
        if (strcmp(k->p.digest, digest) != 0 || (registry && strcmp(k->p.registry, registry) != 0))
            continue;
        *pp = k->next;
        s->kept_count--;
        *path = k->path;
        *p = k->p;
        free(k);
        return 1;
    }
    return 0;
}

int rgm_store_keep_partial(rgm_store_t *s, const char *path)
{
    char dir[STORE_PATH_MAX];
    char sc[STORE_PATH_MAX];
    rgm_store_partial_t p;
    const char *slash = strrchr(path, '/');
    int dfd;
    int err;

    if (!slash || (size_t)(slash - path) >= sizeof(dir))
        return UV_EINVAL;
    memcpy(dir, path, (size_t)(slash - path));
    dir[slash - path] = '\0';
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    err = sidecar_read(dfd, slash + 1, RGM_STORE_PARTIAL_MAX_AGE_S, &p);
    close(dfd);
    if (err == 0) {
        kept_add(s, path, &p);
        return 0;
    }
    if (path_fmt(sc, sizeof(sc), "%s%s", path, RGM_STORE_KEEP_SUFFIX) == 0)
        (void)unlink(sc);
    (void)unlink(path);
    return err;
}

size_t rgm_store_partial_count(const rgm_store_t *s)
{
    return s->kept_count;
}

/* ---- store write errors ---- */

const char *rgm_store_op_name(enum rgm_store_op op)
{
    static const char *const names[RGM_STORE_OP_COUNT] = {"write", "fsync", "rename", "index"};

    return (unsigned)op < RGM_STORE_OP_COUNT ? names[op] : "other";
}

static size_t errno_slot(int err)
{
    size_t i;

    for (i = 0; i < RGM_ARRAY_SIZE(errno_names); i++)
        if (errno_names[i].err == err)
            return i;
    return RGM_ARRAY_SIZE(errno_names);
}

const char *rgm_store_errno_name(int err)
{
    size_t i = errno_slot(err);

    return i < RGM_ARRAY_SIZE(errno_names) ? errno_names[i].name : "other";
}

int rgm_store_is_disk_error(int err)
{
    return err == UV_ENOSPC || err == -EDQUOT || err == UV_EIO || err == UV_EROFS ||
           err == UV_EFBIG;
}

void rgm_store_count_error(rgm_store_t *s, enum rgm_store_op op, int err)
{
    if ((unsigned)op < RGM_STORE_OP_COUNT)
        s->errors[op][errno_slot(err)]++;
}

void rgm_store_errors_each(const rgm_store_t *s, rgm_store_error_fn cb, void *ud)
{
    size_t op;
    size_t i;

    for (op = 0; op < RGM_STORE_OP_COUNT; op++)
        for (i = 0; i < ERRNO_SLOTS; i++)
            if (s->errors[op][i] > 0)
                cb(rgm_store_op_name((enum rgm_store_op)op),
                   i < RGM_ARRAY_SIZE(errno_names) ? errno_names[i].name : "other",
                   s->errors[op][i], ud);
}

int rgm_store_open(const char *dir, rgm_store_t **out)
{
    char path[STORE_PATH_MAX];
    rgm_store_t *s;
    size_t i;
    int err;

    *out = NULL;
    s = rgm_calloc(1, sizeof(*s));
    s->dir = rgm_strdup(dir);
    s->lock_fd = -1;
    err = mkdir_one(dir);
    if (err < 0)
        goto fail;
    /* One owner per storage: a second serve must not empty the first one's tmp/, and an
     * offline command beside a running server must leave its fetches alone. */
    err = path_fmt(path, sizeof(path), "%s/.lock", dir);
    if (err < 0)
        goto fail;
    s->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0) {
        err = -errno;
        goto fail;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) == 0)
        s->is_owner = 1;
    else if (errno != EWOULDBLOCK) {
        err = -errno;
        goto fail;
    }
    err = path_fmt(path, sizeof(path), "%s/blobs", dir);
    if (err == 0)
        err = mkdir_one(path);
    for (i = 0; err == 0 && i < RGM_ARRAY_SIZE(algos); i++) {
        err = path_fmt(path, sizeof(path), "%s/blobs/%s", dir, algos[i]);
        if (err == 0)
            err = mkdir_one(path);
    }
    if (err == 0)
        err = path_fmt(path, sizeof(path), "%s/tmp", dir);
    if (err == 0)
        err = mkdir_one(path);
    if (err == 0 && s->is_owner)
        err = clean_tmp(s, path);
    if (err < 0)
        goto fail;
    *out = s;
    return 0;

fail:
    rgm_log(RGM_LOG_ERROR, "store", "cannot open storage %s: %s", dir, uv_strerror(err));
    rgm_store_close(s);
    return err;
}

int rgm_store_is_owner(const rgm_store_t *s)
{
    return s->is_owner;
}

void rgm_store_close(rgm_store_t *s)
{
    struct kept *k;

    if (!s)
        return;
    if (s->lock_fd >= 0)
        close(s->lock_fd); /* releases the flock */
    while ((k = s->kept) != NULL) {
        s->kept = k->next;
        free(k->path);
        free(k);
    }
    free(s->dir);
    free(s);
}

/* ---- blobs ---- */

int rgm_store_open_blob(const rgm_store_t *s, const char *digest, int *fd, uint64_t *size)
{
    char path[STORE_PATH_MAX];
    struct stat st;
    int err;
    int f;

    *fd = -1;
    err = rgm_store_blob_path(s, digest, path, sizeof(path));
    if (err < 0)
        return err;
    f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -errno;
    if (fstat(f, &st) < 0) {
        err = -errno;
        close(f);
        return err;
    }
    *fd = f;
    if (size)
        *size = (uint64_t)st.st_size;
    return 0;
}

int rgm_store_has(const rgm_store_t *s, const char *digest, uint64_t *size)
{
    char path[STORE_PATH_MAX];
    struct stat st;
    int err;

    err = rgm_store_blob_path(s, digest, path, sizeof(path));
    if (err < 0)
        return err;
    if (stat(path, &st) < 0)
        return errno == ENOENT ? 0 : -errno;
    if (size)
        *size = (uint64_t)st.st_size;
    return 1;
}

int rgm_store_tmp_open(rgm_store_t *s, const char *digest, int *fd, char **path)
{
    char buf[STORE_PATH_MAX];
    int attempt;
    int err;
    int f;

    *fd = -1;
    *path = NULL;
    if (rgm_digest_check(digest) < 0)
        return UV_EINVAL;
    for (attempt = 0; attempt < 100; attempt++) {
        err = path_fmt(buf, sizeof(buf), "%s/tmp/%s.%" PRIu64 ".partial", s->dir, digest + 7,
                       s->tmp_counter++);
        if (err < 0)
            return err;
        f = open(buf, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (f >= 0) {
            *fd = f;
            *path = rgm_strdup(buf);
            return 0;
        }
        if (errno != EEXIST)
            return -errno;
    }
    return UV_EEXIST;
}

int rgm_store_commit(rgm_store_t *s, const char *tmp_path, const char *digest)
{
    char path[STORE_PATH_MAX];
    char *slash;
    int err;

    err = rgm_store_blob_path(s, digest, path, sizeof(path));
    if (err < 0)
        return err;
    slash = strrchr(path, '/');
    *slash = '\0';
    err = mkdir_one(path);
    *slash = '/';
    if (err < 0)
        return err;
    if (rename(tmp_path, path) < 0)
        return -errno;
    return 0;
}

static const EVP_MD *digest_md(const char *digest)
{
    return strncmp(digest, "sha512:", 7) == 0 ? EVP_sha512() : EVP_sha256();
}

/* 0 when data hashes to digest (already validated), else UV_EINVAL. */
static int verify_data(const char *digest, const void *data, size_t len)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    unsigned int md_len = 0;
    unsigned int i;

    if (EVP_Digest(data, len, md, &md_len, digest_md(digest), NULL) != 1)
        return UV_EIO;
    for (i = 0; i < md_len; i++) {
        hex[2 * i] = "0123456789abcdef"[md[i] >> 4];
        hex[2 * i + 1] = "0123456789abcdef"[md[i] & 15];
    }
    hex[2 * md_len] = '\0';
    return strcmp(hex, digest + 7) == 0 ? 0 : UV_EINVAL;
}

int rgm_store_put_small(rgm_store_t *s, const char *digest, const void *data, size_t len)
{
    char *tmp_path = NULL;
    int fd = -1;
    int err;

    if (rgm_digest_check(digest) < 0)
        return UV_EINVAL;
    err = verify_data(digest, data, len);
    if (err < 0)
        return err;
    err = rgm_store_tmp_open(s, digest, &fd, &tmp_path);
    if (err < 0)
        return err;
    err = rgm_write_all(fd, data, len);
    if (err == 0 && fsync(fd) < 0)
        err = -errno;
    if (close(fd) < 0 && err == 0)
        err = -errno;
    if (err == 0)
        err = rgm_store_commit(s, tmp_path, digest);
    if (err < 0)
        (void)unlink(tmp_path);
    free(tmp_path);
    return err;
}

int rgm_store_read_small(const rgm_store_t *s, const char *digest, size_t max, void **data,
                         size_t *len)
{
    uint64_t size = 0;
    char *buf = NULL;
    size_t got = 0;
    ssize_t n;
    int fd = -1;
    int err;

    *data = NULL;
    *len = 0;
    err = rgm_store_open_blob(s, digest, &fd, &size);
    if (err < 0)
        return err;
    if (size > max) {
        err = UV_E2BIG;
        goto out;
    }
    buf = rgm_malloc((size_t)size + 1);
    while (got < size) {
        n = pread(fd, buf + got, (size_t)size - got, (off_t)got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = -errno;
            goto out;
        }
        if (n == 0) {
            err = UV_EIO; /* shrank under us */
            goto out;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return err;
}

int rgm_store_remove(rgm_store_t *s, const char *digest)
{
    char path[STORE_PATH_MAX];
    int err;

    err = rgm_store_blob_path(s, digest, path, sizeof(path));
    if (err < 0)
        return err;
    if (unlink(path) < 0 && errno != ENOENT)
        return -errno;
    return 0;
}

int rgm_store_is_writable(rgm_store_t *s)
{
    char path[STORE_PATH_MAX];
    int err;
    int fd;

    err = path_fmt(path, sizeof(path), "%s/tmp/.writable.%" PRIu64, s->dir, s->tmp_counter++);
    if (err < 0)
        return err;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    close(fd);
    if (unlink(path) < 0)
        return -errno;
    return 0;
}

/* ---- walk ---- */

/* One blobs/<algo>/<aa> directory. */
/* ---- walking blobs/, a few entries at a time ---- */

/* Where a walk stands: algos[algo], the two-hex-digit directory open as d (NULL between
 * directories), and the algorithm directory's listing. Between calls to rgm_store_cursor_next
 * the directories stay open, so a walk resumes where it stopped; files added or removed
 * meanwhile may or may not be visited (readdir's rules). */
struct rgm_store_cursor {
    rgm_store_t *s;
    size_t algo;
    DIR *top; /* blobs/<algo> */
    DIR *d;   /* blobs/<algo>/<aa> */
    char prefix[3];
    int is_done;
};

rgm_store_cursor_t *rgm_store_cursor_new(rgm_store_t *s)
{
    rgm_store_cursor_t *c = rgm_calloc(1, sizeof(*c));

    c->s = s;
    return c;
}

void rgm_store_cursor_free(rgm_store_cursor_t *c)
{
    if (!c)
        return;
    if (c->d)
        closedir(c->d);
    if (c->top)
        closedir(c->top);
    free(c);
}

/* Open the next blobs/<algo>/<aa> into c->d. 1 when one is open, 0 at the end, <0. */
static int cursor_next_dir(rgm_store_cursor_t *c)
{
    char path[STORE_PATH_MAX];
    struct dirent *de;
    int fd;
    int err;

    while (c->algo < RGM_ARRAY_SIZE(algos)) {
        if (!c->top) {
            err = path_fmt(path, sizeof(path), "%s/blobs/%s", c->s->dir, algos[c->algo]);
            if (err < 0)
                return err;
            c->top = opendir(path);
            if (!c->top) {
                if (errno != ENOENT)
                    return -errno;
                c->algo++;
                continue;
            }
        }
        while ((de = readdir(c->top)) != NULL) {
            if (de->d_name[0] == '.')
                continue;
            if (strlen(de->d_name) != 2 || !is_lower_hex(de->d_name, 2)) {
                rgm_log(RGM_LOG_WARN, "store", "skipping foreign entry blobs/%s/%.80s",
                        algos[c->algo], de->d_name);
                continue;
            }
            fd = openat(dirfd(c->top), de->d_name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            if (fd < 0)
                return -errno;
            c->d = fdopendir(fd);
            if (!c->d) {
                err = -errno;
                close(fd);
                return err;
            }
            memcpy(c->prefix, de->d_name, 3);
            return 1;
        }
        closedir(c->top);
        c->top = NULL;
        c->algo++;
    }
    return 0;
}

int rgm_store_cursor_next(rgm_store_cursor_t *c, size_t max, rgm_store_entry_fn cb, void *ud)
{
    const char *algo;
    char digest[RGM_DIGEST_MAX];
    struct dirent *de;
    struct stat st;
    size_t n = 0;
    int rc;

    while (!c->is_done && n < max) {
        if (!c->d) {
            rc = cursor_next_dir(c);
            if (rc < 0)
                return rc;
            if (rc == 0) {
                c->is_done = 1;
                break;
            }
        }
        de = readdir(c->d);
        if (!de) {
            closedir(c->d);
            c->d = NULL;
            continue;
        }
        if (de->d_name[0] == '.')
            continue;
        n++;
        algo = algos[c->algo];
        if (path_fmt(digest, sizeof(digest), "%s:%s", algo, de->d_name) < 0 ||
            rgm_digest_check(digest) < 0 || strncmp(de->d_name, c->prefix, 2) != 0) {
            rgm_log(RGM_LOG_WARN, "store", "skipping foreign file blobs/%s/%s/%.80s", algo,
                    c->prefix, de->d_name);
            continue;
        }
        if (fstatat(dirfd(c->d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
            continue;
        rc = cb(digest, (uint64_t)st.st_size,
                (uint64_t)st.st_ctim.tv_sec * 1000 + (uint64_t)st.st_ctim.tv_nsec / 1000000, ud);
        if (rc != 0)
            return rc < 0 ? rc : UV_ECANCELED;
    }
    return c->is_done ? 0 : 1;
}

struct walk_all {
    rgm_store_walk_fn cb;
    void *ud;
    int rc;
};

static int on_walk_entry(const char *digest, uint64_t size, uint64_t changed_ms, void *ud)
{
    struct walk_all *w = ud;

    (void)changed_ms;
    w->rc = w->cb(digest, size, w->ud);
    return w->rc != 0;
}

int rgm_store_walk(rgm_store_t *s, rgm_store_walk_fn cb, void *ud)
{
    rgm_store_cursor_t *c = rgm_store_cursor_new(s);
    struct walk_all w = {cb, ud, 0};
    int rc;

    do
        rc = rgm_store_cursor_next(c, SIZE_MAX, on_walk_entry, &w);
    while (rc > 0);
    rgm_store_cursor_free(c);
    if (w.rc != 0)
        return w.rc;
    return rc;
}
