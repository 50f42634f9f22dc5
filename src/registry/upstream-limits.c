/* What a registry told the mirror about itself, and how much the mirror asks of it: the
 * per-registry state behind the back-off (no answer), the 429 circuit and the pull budget
 * (RateLimit-*, ratelimit_reserve), the 404s to the mirror's own identity (negative_ttl), and
 * the fetch slots (max_parallel_fetches, FIFO). It sends nothing; upstream.c tells it each
 * answer. */
#include "registry/upstream-int.h"

#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/util.h"

/* A 429 without Retry-After or RateLimit-Reset closes the circuit this long; a longer wait
 * than LIMIT_MAX_MS is cut to it (a registry's mistake must not stop pulls for days). */
#define LIMIT_DEFAULT_MS 60000
#define LIMIT_MAX_MS     (24ull * 3600 * 1000)

/* A registry that fails this many times in a row is not asked again for a while (doubling from
 * BACKOFF_MIN_MS to BACKOFF_MAX_MS), so that a dead upstream is not hammered and clients get
 * their answer (often a stale tag) at once. Any response, even an error status, resets it. */
#define BACKOFF_AFTER  3
#define BACKOFF_MIN_MS 1000
#define BACKOFF_MAX_MS 30000

struct regstate *rgm_upstream_regstate(rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    size_t i = (size_t)(reg - up->cfg->registries);

    if (i < up->cfg->registries_len)
        return &up->regs[i];
    return NULL;
}

/* ---- the pull budget and the 429 circuit ---- */

/* "76;w=21600" -> 76; -1 when absent or not a number. */
static int64_t ratelimit_value(const char *v)
{
    char num[24];
    uint64_t x;
    size_t n;

    if (!v)
        return -1;
    n = strspn(v, "0123456789");
    if (n == 0 || n >= sizeof(num))
        return -1;
    memcpy(num, v, n);
    num[n] = '\0';
    return rgm_parse_uint(num, INT64_MAX, &x) == 0 ? (int64_t)x : -1;
}

/* Seconds to wait after a 429: Retry-After (seconds or an HTTP date), else RateLimit-Reset
 * (seconds); -1 when neither says. */
static int64_t retry_after_s(rgm_upreq_t *r)
{
    const char *v = rgm_upreq_header(r, "Retry-After");
    struct tm tm;
    int64_t s = ratelimit_value(v);
    time_t t;

    if (s >= 0 && v[strspn(v, "0123456789")] == '\0')
        return s;
    memset(&tm, 0, sizeof(tm));
    if (v && strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
        t = timegm(&tm);
        return t > time(NULL) ? (int64_t)(t - time(NULL)) : 0;
    }
    return ratelimit_value(rgm_upreq_header(r, "RateLimit-Reset"));
}

/* What the registry says about its budget: RateLimit-*, the reserve, a 429's circuit. */
void rgm_upstream_note_budget(rgm_upcall_t *c, rgm_upreq_t *r, int status)
{
    struct regstate *rs = c->rs;
    int64_t v;
    int64_t reserve = (int64_t)rgm_config_ratelimit_reserve(c->up->cfg, c->reg);
    uint64_t wait;

    v = ratelimit_value(rgm_upreq_header(r, "RateLimit-Limit"));
    if (v >= 0)
        rs->rl_limit = v;
    v = ratelimit_value(rgm_upreq_header(r, "RateLimit-Remaining"));
    if (v >= 0) {
        rs->rl_remaining = v;
        if (v < reserve && !rs->is_in_reserve) {
            rs->is_in_reserve = 1;
            rgm_log(RGM_LOG_WARN, "upstream",
                    "registry %s: %lld pulls left, below ratelimit_reserve %lld: prewarm is "
                    "refused until the budget recovers",
                    c->reg->name, (long long)v, (long long)reserve);
        } else if (v >= reserve && rs->is_in_reserve) {
            rs->is_in_reserve = 0;
            rgm_log(RGM_LOG_INFO, "upstream", "registry %s: %lld pulls left, above the reserve",
                    c->reg->name, (long long)v);
        }
    }
    if (status != 429 || c->is_token_req)
        return;
    v = retry_after_s(r);
    wait = v < 0 ? LIMIT_DEFAULT_MS : (uint64_t)v * 1000;
    if (wait > LIMIT_MAX_MS)
        wait = LIMIT_MAX_MS;
    if (rgm_time_ms() + wait > rs->limited_until) {
        rs->limited_until = rgm_time_ms() + wait;
        rgm_log(RGM_LOG_WARN, "upstream",
                "registry %s answered 429: no manifest requests for %llu ms; cached tags are "
                "served stale",
                c->reg->name, (unsigned long long)wait);
    }
}

/* ---- the back-off ---- */

/* Per-registry counters and the back-off. Only a request started after the previous failure
 * counts as another failure: a burst of concurrent requests lost in one outage is one. */
void rgm_upstream_count_outcome(rgm_upcall_t *c, int st, int err)
{
    struct regstate *rs = c->rs;
    unsigned shift;
    uint64_t wait;

    rs->requests[st >= 100 && st < 600 ? st / 100 - 1 : N_CLASSES - 1]++;
    if (st > 0) {
        rs->failures = 0;
        return;
    }
    if (err >= 0 || err == UV_ECANCELED || c->started_ms < rs->last_fail)
        return;
    rs->last_fail = rgm_time_ms();
    if (++rs->failures < BACKOFF_AFTER)
        return;
    shift = rs->failures - BACKOFF_AFTER;
    wait = shift >= 5 ? BACKOFF_MAX_MS : (uint64_t)BACKOFF_MIN_MS << shift;
    if (wait > BACKOFF_MAX_MS)
        wait = BACKOFF_MAX_MS;
    rs->down_until = rs->last_fail + wait;
    rgm_log(RGM_LOG_WARN, "upstream",
            "registry %s: %u failures in a row (%s); backing off for %llu ms", c->reg->name,
            rs->failures, uv_strerror(err), (unsigned long long)wait);
}

/* ---- the negative cache ---- */

/* A 404 to the mirror's own identity is remembered for negative_ttl (it answers requests that
 * carry no credentials of their own); a 2xx to it forgets one. */
void rgm_upstream_note_missing(rgm_upcall_t *c, int status)
{
    uint64_t ttl = rgm_config_negative_ttl(c->up->cfg, c->reg);

    if (!c->missing_key || c->using_client)
        return;
    if (status == 404 && ttl > 0)
        rgm_auth_cache_put(c->up->missing, c->missing_key, "1", rgm_time_ms() + ttl);
    else if (status >= 200 && status < 300)
        (void)rgm_auth_cache_del(c->up->missing, c->missing_key);
}

int rgm_upstream_is_manifest_suffix(const char *suffix)
{
    return strncmp(suffix, "manifests/", 10) == 0;
}

/* The key of up->missing for a call; 0, or <0 when the call has none (not a manifest or blob,
 * or too long). */
int rgm_upstream_missing_key(const rgm_upcall_opts_t *o, char *out, size_t len)
{
    int n;

    if (!rgm_upstream_is_manifest_suffix(o->suffix) && strncmp(o->suffix, "blobs/", 6) != 0)
        return UV_EINVAL;
    n = snprintf(out, len, "%s|%s|%s|%s", o->reg->name, o->repo, o->suffix,
                 o->accept ? o->accept : "");
    return n > 0 && (size_t)n < len ? 0 : UV_ENAMETOOLONG;
}

int rgm_upstream_known_missing(rgm_upstream_t *up, const rgm_upcall_opts_t *o)
{
    char key[4096];

    if (rgm_config_negative_ttl(up->cfg, o->reg) == 0 ||
        rgm_upstream_missing_key(o, key, sizeof(key)) < 0)
        return 0;
    return rgm_auth_cache_get(up->missing, key, rgm_time_ms()) != NULL;
}

uint64_t rgm_upstream_limited_ms(const rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    const struct regstate *rs = rgm_upstream_regstate((rgm_upstream_t *)up, reg);
    uint64_t now = rgm_time_ms();

    return rs && rs->limited_until > now ? rs->limited_until - now : 0;
}

int rgm_upstream_in_reserve(const rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    const struct regstate *rs = rgm_upstream_regstate((rgm_upstream_t *)up, reg);

    return rs && rs->is_in_reserve;
}

void rgm_upstream_count_avoided(rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    struct regstate *rs = rgm_upstream_regstate(up, reg);

    if (rs)
        rs->pulls_avoided++;
}

/* ---- fetch slots ---- */

void rgm_upstream_slot_acquire(rgm_upstream_t *up, rgm_slot_wait_t *w)
{
    struct regstate *rs = rgm_upstream_regstate(up, w->reg);
    unsigned per = w->reg->max_parallel_fetches;

    w->next = NULL;
    if (!up->qhead && up->active < up->cfg->max_parallel_fetches &&
        (per == 0 || !rs || rs->active < per)) {
        up->active++;
        if (rs)
            rs->active++;
        w->on_slot(w);
        return;
    }
    if (up->qtail)
        up->qtail->next = w;
    else
        up->qhead = w;
    up->qtail = w;
}

int rgm_upstream_slot_cancel(rgm_upstream_t *up, rgm_slot_wait_t *w)
{
    rgm_slot_wait_t **pp;
    rgm_slot_wait_t *prev = NULL;

    for (pp = &up->qhead; *pp; prev = *pp, pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            if (up->qtail == w)
                up->qtail = prev;
            return 1;
        }
    }
    return 0;
}

void rgm_upstream_slot_release(rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    struct regstate *rs = rgm_upstream_regstate(up, reg);
    rgm_slot_wait_t **pp;
    rgm_slot_wait_t *prev = NULL;

    RGM_BUG_ON(up->active == 0);
    up->active--;
    if (rs && rs->active > 0)
        rs->active--;
    /* Grant the first waiter (FIFO) whose registry has room. */
    for (pp = &up->qhead; *pp && up->active < up->cfg->max_parallel_fetches;
         prev = *pp, pp = &(*pp)->next) {
        rgm_slot_wait_t *w = *pp;
        struct regstate *wrs = rgm_upstream_regstate(up, w->reg);
        unsigned per = w->reg->max_parallel_fetches;

        if (per != 0 && wrs && wrs->active >= per)
            continue;
        *pp = w->next;
        if (up->qtail == w)
            up->qtail = prev;
        up->active++;
        if (wrs)
            wrs->active++;
        w->on_slot(w);
        return;
    }
}

size_t rgm_upstream_slots_used(const rgm_upstream_t *up)
{
    return up->active;
}

size_t rgm_upstream_slots_queued(const rgm_upstream_t *up)
{
    size_t n = 0;
    const rgm_slot_wait_t *w;

    for (w = up->qhead; w; w = w->next)
        n++;
    return n;
}
