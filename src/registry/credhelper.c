/* Docker credential helpers: one entry per (helper, server URL) holds the last answer and its
 * expiry, the run in flight and the waiters that share it. A failed run is kept as
 * "anonymous" for a short while (FAIL_KEEP_MS), so that a broken helper is not started again
 * for every request; a 401 still forgets it at once. */
#include "registry/credhelper.h"

#include <jansson.h>

#include "core/log.h"
#include "core/util.h"

#define NOT_FOUND_MSG "credentials not found in native keychain"
#define FAIL_KEEP_MS  10000
#define MAX_ENTRIES   1024
#define FIELD_MAX     16384

struct entry {
    struct entry *next;
    rgm_credhelper_t *h;
    char *helper;
    char *server_url;
    char *registry;
    rgm_cred_t cred;
    int has_answer;
    uint64_t expires_ms;
    uint64_t run_lifetime_ms; /* lifetime asked for by the run in flight */
    rgm_credrun_t *run;
    uint64_t run_seq; /* which run the waiters below joined */
    rgm_credhelper_wait_t *waiters;
};

struct rgm_credhelper_wait {
    rgm_credhelper_wait_t *next;
    struct entry *e;
    uint64_t seq;
    rgm_credhelper_cb cb;
    void *ud;
};

struct rgm_credhelper {
    uv_loop_t *loop;
    struct entry *entries;
    size_t n_entries;
    uint64_t runs;
    unsigned live_runs;
    int is_freeing;
};

/* ---- entries ---- */

rgm_credhelper_t *rgm_credhelper_new(uv_loop_t *loop)
{
    rgm_credhelper_t *h = rgm_calloc(1, sizeof(*h));

    h->loop = loop;
    return h;
}

static void entry_free(struct entry *e)
{
    rgm_credhelper_wait_t *w;

    while (e->waiters) {
        w = e->waiters;
        e->waiters = w->next;
        free(w);
    }
    rgm_cred_clear(&e->cred);
    free(e->helper);
    free(e->server_url);
    free(e->registry);
    free(e);
}

void rgm_credhelper_free(rgm_credhelper_t *h)
{
    struct entry *e;
    struct entry *next;

    if (!h)
        return;
    h->is_freeing = 1;
    h->live_runs++; /* a cancel may end its run at once: h must outlive this loop */
    for (e = h->entries; e; e = next) {
        next = e->next;
        if (e->run) {
            rgm_credrun_cancel(e->run); /* on_run_done frees e, and h after the last */
        } else {
            entry_free(e);
        }
    }
    h->entries = NULL;
    if (--h->live_runs == 0)
        free(h);
}

static struct entry *find(rgm_credhelper_t *h, const char *helper, const char *server_url)
{
    struct entry *e;

    for (e = h->entries; e; e = e->next)
        if (strcmp(e->helper, helper) == 0 && strcmp(e->server_url, server_url) == 0)
            return e;
    return NULL;
}

/* Drop idle entries whose answer has expired, oldest first, while over MAX_ENTRIES. */
static void trim(rgm_credhelper_t *h, uint64_t now)
{
    struct entry **pp = &h->entries;
    struct entry *e;

    while (*pp && h->n_entries >= MAX_ENTRIES) {
        e = *pp;
        if (!e->run && !e->waiters && (!e->has_answer || e->expires_ms <= now)) {
            *pp = e->next;
            h->n_entries--;
            entry_free(e);
            continue;
        }
        pp = &e->next;
    }
}

/* ---- protocol ---- */

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static const char *field(json_t *root, const char *name, int *bad)
{
    json_t *v = json_object_get(root, name);
    const char *s;

    if (!v || json_is_null(v))
        return "";
    s = json_string_value(v);
    if (!s || strlen(s) > FIELD_MAX || has_ctl(s)) {
        *bad = 1;
        return "";
    }
    return s;
}

int rgm_credhelper_parse(const char *out, size_t len, rgm_cred_t *cred)
{
    json_t *root;
    json_error_t jerr;
    const char *user;
    const char *secret;
    int bad = 0;

    memset(cred, 0, sizeof(*cred));
    root = json_loadb(out, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return UV_EINVAL;
    if (!json_is_object(root)) {
        json_decref(root);
        return UV_EINVAL;
    }
    user = field(root, "Username", &bad);
    secret = field(root, "Secret", &bad);
    if (bad || (user[0] && !secret[0])) {
        json_decref(root);
        return UV_EINVAL;
    }
    if (secret[0]) {
        cred->username = rgm_strdup(user);
        cred->secret = rgm_strdup(secret);
        cred->is_identity_token = strcmp(user, "<token>") == 0;
    }
    json_decref(root);
    return 0;
}

int rgm_credhelper_is_not_found(const char *out, size_t len)
{
    size_t n = strlen(NOT_FOUND_MSG);

    while (len > 0 && (*out == ' ' || *out == '\t' || *out == '\r' || *out == '\n')) {
        out++;
        len--;
    }
    while (len > 0 && (out[len - 1] == ' ' || out[len - 1] == '\t' || out[len - 1] == '\r' ||
                       out[len - 1] == '\n'))
        len--;
    return len == n && memcmp(out, NOT_FOUND_MSG, n) == 0;
}

/* ---- runs ---- */

static void fmt_ms(uint64_t ms, char *out, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, len, "%llums", (unsigned long long)ms);
}

/* Read the run's result into e->cred; returns 0 (credentials or anonymous) or <0 (logged). */
static int judge(struct entry *e, const rgm_credrun_result_t *res)
{
    char host[300];
    char why[600];
    char life[32];
    char user[128];

    rgm_log_quote(e->server_url, host, sizeof(host));
    if (res->err_line[0]) {
        rgm_log_quote(res->err_line, why, sizeof(why));
        rgm_log(RGM_LOG_WARN, "credhelper", "helper %s for %s: stderr: %s", e->helper, host, why);
    }
    if (res->err == UV_ETIMEDOUT) {
        rgm_log(RGM_LOG_WARN, "credhelper",
                "helper %s for %s: killed after %llu ms (timeout); going on anonymously", e->helper,
                host, (unsigned long long)res->elapsed_ms);
        return UV_ETIMEDOUT;
    }
    if (res->err == UV_E2BIG) {
        rgm_log(RGM_LOG_WARN, "credhelper",
                "helper %s for %s: more than %d bytes on stdout; killed, going on anonymously",
                e->helper, host, RGM_CREDHELPER_OUT_MAX);
        return UV_E2BIG;
    }
    if (res->err < 0)
        return res->err;
    if (res->exit_status != 0 || res->term_signal != 0) {
        if (res->term_signal == 0 && rgm_credhelper_is_not_found(res->out, res->out_len)) {
            rgm_log(RGM_LOG_INFO, "credhelper",
                    "helper %s for %s: credentials not found in %llu ms; anonymous", e->helper,
                    host, (unsigned long long)res->elapsed_ms);
            return 0;
        }
        rgm_log(RGM_LOG_WARN, "credhelper",
                "helper %s for %s: exit status %lld, signal %d (stdout not logged); going on "
                "anonymously",
                e->helper, host, (long long)res->exit_status, res->term_signal);
        return UV_EPROTO;
    }
    if (rgm_credhelper_parse(res->out, res->out_len, &e->cred) < 0) {
        rgm_log(RGM_LOG_WARN, "credhelper",
                "helper %s for %s: answer is not a credentials JSON object (%zu bytes, not "
                "logged); going on anonymously",
                e->helper, host, res->out_len);
        return UV_EPROTO;
    }
    fmt_ms(e->run_lifetime_ms, life, sizeof(life));
    rgm_log_quote(e->cred.username, user, sizeof(user));
    rgm_log(RGM_LOG_INFO, "credhelper",
            "helper %s for %s (registry %s): exit 0 in %llu ms, username %s%s, secret <redacted>, "
            "kept %s",
            e->helper, host, e->registry, (unsigned long long)res->elapsed_ms,
            e->cred.username ? user : "(none: anonymous)",
            e->cred.is_identity_token ? " (identity token)" : "", life);
    return 0;
}

static rgm_credhelper_wait_t *take_waiter(struct entry *e, uint64_t seq)
{
    rgm_credhelper_wait_t **pp;
    rgm_credhelper_wait_t *w;

    for (pp = &e->waiters; *pp; pp = &(*pp)->next) {
        if ((*pp)->seq == seq) {
            w = *pp;
            *pp = w->next;
            return w;
        }
    }
    return NULL;
}

static void on_run_done(const rgm_credrun_result_t *res, void *ud)
{
    struct entry *e = ud;
    rgm_credhelper_t *h = e->h;
    rgm_credhelper_wait_t *w;
    uint64_t seq = e->run_seq;
    uint64_t keep;
    int err;

    e->run = NULL;
    h->live_runs--;
    if (h->is_freeing) {
        entry_free(e);
        if (h->live_runs == 0)
            free(h);
        return;
    }
    rgm_cred_clear(&e->cred);
    err = judge(e, res);
    if (err < 0)
        rgm_cred_clear(&e->cred);
    keep = err < 0 && e->run_lifetime_ms > FAIL_KEEP_MS ? FAIL_KEEP_MS : e->run_lifetime_ms;
    e->has_answer = keep > 0;
    e->expires_ms = rgm_time_ms() + keep;
    /* A callback may start a new run of this entry (its waiters join that one) or cancel
     * other waits: unlink one waiter of this run at a time. */
    while ((w = take_waiter(e, seq)) != NULL) {
        w->cb(err, &e->cred, w->ud);
        free(w);
    }
}

static int start_run(rgm_credhelper_t *h, struct entry *e, uint64_t timeout_ms)
{
    rgm_credrun_opts_t o;
    static const char *const args[] = {"get", NULL};
    char file[4096];
    char host[300];
    int n;
    int err;

    if (strchr(e->helper, '/'))
        n = snprintf(file, sizeof(file), "%s", e->helper);
    else
        n = snprintf(file, sizeof(file), "docker-credential-%s", e->helper);
    if (n < 0 || (size_t)n >= sizeof(file))
        return UV_ENAMETOOLONG;
    memset(&o, 0, sizeof(o));
    o.file = file;
    o.args = args;
    o.input = e->server_url;
    o.input_len = strlen(e->server_url);
    o.timeout_ms = timeout_ms ? timeout_ms : RGM_CREDHELPER_DEFAULT_TIME;
    o.stdout_max = RGM_CREDHELPER_OUT_MAX;
    err = rgm_credrun_start(h->loop, &o, on_run_done, e, &e->run);
    if (err < 0) {
        rgm_log_quote(e->server_url, host, sizeof(host));
        rgm_log(RGM_LOG_WARN, "credhelper",
                "helper %s for %s: cannot run %s: %s; going on "
                "anonymously",
                e->helper, host, file, uv_strerror(err));
        e->run = NULL;
        return err;
    }
    h->runs++;
    h->live_runs++;
    e->run_seq++;
    return 0;
}

int rgm_credhelper_get(rgm_credhelper_t *h, const rgm_credhelper_req_t *req, rgm_credhelper_cb cb,
                       void *ud, rgm_credhelper_wait_t **out, rgm_cred_t *now_cred)
{
    struct entry *e;
    rgm_credhelper_wait_t *w;
    uint64_t now = rgm_time_ms();
    int err;

    *out = NULL;
    memset(now_cred, 0, sizeof(*now_cred));
    if (!req->helper || !req->helper[0] || !req->server_url || !req->server_url[0])
        return UV_EINVAL;
    e = find(h, req->helper, req->server_url);
    if (e && !e->run && e->has_answer && e->expires_ms > now) {
        rgm_cred_copy(now_cred, &e->cred);
        return 1;
    }
    if (!e) {
        trim(h, now);
        e = rgm_calloc(1, sizeof(*e));
        e->h = h;
        e->helper = rgm_strdup(req->helper);
        e->server_url = rgm_strdup(req->server_url);
        e->registry = rgm_strdup(req->registry ? req->registry : req->server_url);
        e->next = h->entries;
        h->entries = e;
        h->n_entries++;
    }
    if (!e->run) {
        e->has_answer = 0;
        e->run_lifetime_ms = req->lifetime_ms;
        err = start_run(h, e, req->timeout_ms);
        if (err < 0) {
            /* Not found on PATH and the like: anonymous, and again for a while. */
            rgm_cred_clear(&e->cred);
            e->has_answer = req->lifetime_ms > 0;
            e->expires_ms =
                now + (req->lifetime_ms < FAIL_KEEP_MS ? req->lifetime_ms : FAIL_KEEP_MS);
            return err;
        }
    }
    w = rgm_calloc(1, sizeof(*w));
    w->e = e;
    w->seq = e->run_seq;
    w->cb = cb;
    w->ud = ud;
    w->next = e->waiters;
    e->waiters = w;
    *out = w;
    return 0;
}

void rgm_credhelper_cancel(rgm_credhelper_wait_t *w)
{
    rgm_credhelper_wait_t **pp;

    for (pp = &w->e->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            free(w);
            return;
        }
    }
}

void rgm_credhelper_forget(rgm_credhelper_t *h, const char *helper, const char *server_url)
{
    struct entry *e = find(h, helper, server_url);

    if (e && !e->run)
        e->has_answer = 0;
}

uint64_t rgm_credhelper_runs(const rgm_credhelper_t *h)
{
    return h->runs;
}
