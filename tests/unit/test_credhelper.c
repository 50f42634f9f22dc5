/* Unit tests for credential programs and docker credential helpers on a real loop, with
 * helper scripts written to a temp dir: the answer and its parsing, what goes on stdin,
 * "credentials not found", garbage, exit status, a hang killed at its timeout (with a child
 * that holds the pipe), a helper that is not there, the lifetime cache, shared runs,
 * forgetting, and freeing with a run in flight. */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "core/util.h"
#include "registry/credhelper.h"
#include "tap.h"

static char dir[256];
static uv_loop_t loop;

struct got {
    int calls;
    int err;
    char user[256];
    char secret[256];
    int is_token;
};

static void on_cred(int err, const rgm_cred_t *c, void *ud)
{
    struct got *g = ud;

    g->calls++;
    g->err = err;
    snprintf(g->user, sizeof(g->user), "%s", c->username ? c->username : "(null)");
    snprintf(g->secret, sizeof(g->secret), "%s", c->secret ? c->secret : "(null)");
    g->is_token = c->is_identity_token;
}

static void write_script(const char *name, const char *body)
{
    char path[512];
    FILE *f;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "w");
    if (!f)
        return;
    fprintf(f, "#!/bin/sh\n%s\n", body);
    fclose(f);
    if (chmod(path, 0755) != 0)
        printf("# chmod %s: %s\n", path, strerror(errno));
}

static void helper_path(const char *name, char *out, size_t len)
{
    snprintf(out, len, "%s/%s", dir, name);
}

/* Run the loop until g has its callback, at most limit_ms. */
static void run_until(const struct got *g, int calls, uint64_t limit_ms)
{
    uint64_t end = rgm_time_ms() + limit_ms;

    while (g->calls < calls && rgm_time_ms() < end)
        uv_run(&loop, UV_RUN_ONCE);
}

static int get(rgm_credhelper_t *h, const char *helper, const char *url, uint64_t life,
               uint64_t timeout, struct got *g, rgm_cred_t *now)
{
    rgm_credhelper_req_t rq = {helper, url, "reg.test", life, timeout};
    rgm_credhelper_wait_t *w = NULL;

    return rgm_credhelper_get(h, &rq, on_cred, g, &w, now);
}

static int parse_str(const char *s, rgm_cred_t *c)
{
    return rgm_credhelper_parse(s, strlen(s), c);
}

static void test_parse(void)
{
    rgm_cred_t c;

    ok(parse_str("{\"ServerURL\":\"x\",\"Username\":\"u\",\"Secret\":\"s\"}", &c) == 0 &&
           strcmp(c.username, "u") == 0 && strcmp(c.secret, "s") == 0 && !c.is_identity_token,
       "parse: user and secret");
    rgm_cred_clear(&c);
    ok(parse_str("{\"Username\":\"<token>\",\"Secret\":\"rt\"}", &c) == 0 && c.is_identity_token &&
           strcmp(c.secret, "rt") == 0,
       "parse: <token> is an identity token");
    rgm_cred_clear(&c);
    ok(parse_str("{}", &c) == 0 && c.username == NULL, "parse: {} is anonymous");
    ok(parse_str("{\"Username\":\"\",\"Secret\":\"\"}", &c) == 0 && !c.username,
       "parse: empty strings are anonymous");
    is_int(parse_str("not json", &c), UV_EINVAL, "parse: garbage");
    is_int(parse_str("[1]", &c), UV_EINVAL, "parse: not an object");
    is_int(parse_str("{\"Username\":1,\"Secret\":\"s\"}", &c), UV_EINVAL,
           "parse: a number for Username");
    is_int(parse_str("{\"Username\":\"u\"}", &c), UV_EINVAL, "parse: a username without a secret");
    is_int(parse_str("{\"Username\":\"u\",\"Secret\":\"a\\nb\"}", &c), UV_EINVAL,
           "parse: a control byte in the secret");
    is_int(parse_str("{\"Username\":\"u\",\"Username\":\"v\",\"Secret\":\"s\"}", &c), UV_EINVAL,
           "parse: a duplicate key");
    ok(rgm_credhelper_is_not_found("credentials not found in native keychain\n", 41),
       "not found: docker's message");
    ok(!rgm_credhelper_is_not_found("credentials not found\n", 22), "not found: another message");
}

static void test_runs(void)
{
    rgm_credhelper_t *h = rgm_credhelper_new(&loop);
    struct got g1 = {0}, g2 = {0}, g3 = {0};
    rgm_cred_t now;
    char path[512];
    char seen[512];
    FILE *f;
    size_t n;
    uint64_t t0;

    snprintf(seen, sizeof(seen),
             "cat > %s/stdin.seen\n"
             "echo '{\"ServerURL\":\"x\",\"Username\":\"alice\",\"Secret\":\"pw1\"}'",
             dir);
    write_script("good", seen);
    helper_path("good", path, sizeof(path));

    is_int(get(h, path, "reg.test:5000", 60000, 5000, &g1, &now), 0, "good: a run starts");
    is_int(get(h, path, "reg.test:5000", 60000, 5000, &g2, &now), 0, "good: a second need joins");
    run_until(&g2, 1, 5000);
    ok(g1.calls == 1 && g2.calls == 1, "good: both waiters called once");
    ok(g1.err == 0 && strcmp(g1.user, "alice") == 0 && strcmp(g1.secret, "pw1") == 0,
       "good: the credentials");
    is_int(rgm_credhelper_runs(h), 1, "good: one run for two needs");
    snprintf(path, sizeof(path), "%s/stdin.seen", dir);
    f = fopen(path, "r");
    n = f ? fread(seen, 1, sizeof(seen) - 1, f) : 0;
    seen[n] = '\0';
    if (f)
        fclose(f);
    is_str(seen, "reg.test:5000", "good: stdin is the server URL, as docker sends it");

    helper_path("good", path, sizeof(path));
    is_int(get(h, path, "reg.test:5000", 60000, 5000, &g3, &now), 1, "good: cached answer");
    ok(now.username && strcmp(now.username, "alice") == 0, "good: cached credentials");
    rgm_cred_clear(&now);
    is_int(rgm_credhelper_runs(h), 1, "good: no new run inside the lifetime");
    rgm_credhelper_forget(h, path, "reg.test:5000");
    is_int(get(h, path, "reg.test:5000", 60000, 5000, &g3, &now), 0, "forget: a fresh run");
    run_until(&g3, 1, 5000);
    is_int(rgm_credhelper_runs(h), 2, "forget: two runs");

    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "other:1", 0, 5000, &g1, &now), 0, "lifetime 0: runs");
    run_until(&g1, 1, 5000);
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "other:1", 0, 5000, &g1, &now), 0, "lifetime 0: runs again");
    run_until(&g1, 1, 5000);
    is_int(rgm_credhelper_runs(h), 4, "lifetime 0: every get runs");

    write_script("notfound", "echo 'credentials not found in native keychain'; exit 1");
    helper_path("notfound", path, sizeof(path));
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "reg.test", 60000, 5000, &g1, &now), 0, "not found: runs");
    run_until(&g1, 1, 5000);
    ok(g1.calls == 1 && g1.err == 0 && strcmp(g1.user, "(null)") == 0,
       "not found: anonymous, not an error");

    write_script("garbage", "echo 'Secret: hunter2 {'");
    helper_path("garbage", path, sizeof(path));
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "reg.test", 60000, 5000, &g1, &now), 0, "garbage: runs");
    run_until(&g1, 1, 5000);
    ok(g1.calls == 1 && g1.err == UV_EPROTO && strcmp(g1.user, "(null)") == 0,
       "garbage: UV_EPROTO, no credentials");
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "reg.test", 60000, 5000, &g1, &now), 1,
           "garbage: the failure is kept briefly (no run storm)");
    ok(now.username == NULL, "garbage: kept as anonymous");

    write_script("fails", "echo oops >&2; echo 'some error'; exit 3");
    helper_path("fails", path, sizeof(path));
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "reg.test", 60000, 5000, &g1, &now), 0, "exit 3: runs");
    run_until(&g1, 1, 5000);
    is_int(g1.err, UV_EPROTO, "exit 3: UV_EPROTO");

    /* The shell waits on a sleep that also holds stdout: only a group kill ends it. */
    write_script("hang", "sleep 30; echo '{}'");
    helper_path("hang", path, sizeof(path));
    memset(&g1, 0, sizeof(g1));
    t0 = rgm_time_ms();
    is_int(get(h, path, "reg.test", 60000, 300, &g1, &now), 0, "hang: runs");
    run_until(&g1, 1, 5000);
    ok(g1.calls == 1 && g1.err == UV_ETIMEDOUT, "hang: UV_ETIMEDOUT");
    ok(rgm_time_ms() - t0 < 3000, "hang: killed at its timeout (%llu ms)",
       (unsigned long long)(rgm_time_ms() - t0));

    is_int(get(h, "no-such-helper-xyz", "reg.test", 60000, 300, &g1, &now), UV_ENOENT,
           "missing: UV_ENOENT at once");
    is_int(get(h, "", "reg.test", 60000, 300, &g1, &now), UV_EINVAL, "empty helper: UV_EINVAL");

    write_script("big", "head -c 100000 /dev/zero | tr '\\\\0' a");
    helper_path("big", path, sizeof(path));
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "reg.test", 60000, 5000, &g1, &now), 0, "big: runs");
    run_until(&g1, 1, 5000);
    is_int(g1.err, UV_E2BIG, "big: more than the stdout limit is UV_E2BIG");

    /* Free with a run in flight: no callback, the loop still closes. */
    helper_path("hang", path, sizeof(path));
    memset(&g1, 0, sizeof(g1));
    is_int(get(h, path, "inflight", 60000, 5000, &g1, &now), 0, "free in flight: runs");
    rgm_credhelper_free(h);
    t0 = rgm_time_ms();
    while (uv_run(&loop, UV_RUN_ONCE) != 0 && rgm_time_ms() - t0 < 5000)
        ;
    is_int(g1.calls, 0, "free in flight: the waiter is dropped");
}

int main(void)
{
    const char *tmp = getenv("TMPDIR");

    signal(SIGPIPE, SIG_IGN); /* as main.c: a helper that exits before reading its stdin */

    snprintf(dir, sizeof(dir), "%s/rgm-credhelper-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        printf("Bail out! mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    if (uv_loop_init(&loop) != 0) {
        printf("Bail out! uv_loop_init\n");
        return 1;
    }
    test_parse();
    test_runs();
    is_int(uv_loop_close(&loop), 0, "uv_loop_close() == 0");
    {
        char cmd[600];

        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            printf("# could not remove %s\n", dir);
    }
    return tap_done();
}
