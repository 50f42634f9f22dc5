/* Upstream registry requests with the auth dance: first the mirror's own identity (a cached
 * token, anonymous, or configured credentials after a challenge), then the client's
 * Authorization when the mirror's own is refused. Also the fetch slots, and what a registry
 * told us about itself: its pull budget (RateLimit-*, the 429 circuit, the reserve) and the
 * 404s it gave the mirror's own identity (negative_ttl). It does not cache content (routes
 * and cache do). */
#include <uv.h>
#include <time.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "registry/auth.h"
#include "registry/identity.h"
#include "registry/upstream.h"
#include "cluster/peers.h"
#include "cluster/rendezvous.h"

#define TOKEN_BODY_MAX  (64 * 1024)
#define TOKEN_MARGIN_MS 10000
#define TOKEN_FORM_MAX  (64 * 1024) /* the refresh_token grant's form (a helper's token: 16 KiB) */
#define URL_MAX         8192

/* Upstream HTTP requests by status class: 1xx..5xx, then "error" (no response). */
#define N_CLASSES 6

struct regstate {
    unsigned active; /* fetch slots in use */
    uint64_t requests[N_CLASSES];
    uint64_t bytes;   /* response body bytes */
    int64_t rl_limit; /* Docker Hub's ratelimit-limit / -remaining, -1 until seen */
    int64_t rl_remaining;
    unsigned failures;      /* consecutive requests that got no response at all */
    uint64_t last_fail;     /* wall ms of the last counted failure */
    uint64_t down_until;    /* wall ms: fail fast until then */
    uint64_t limited_until; /* wall ms: after a 429, no manifest request until then */
    int is_in_reserve;      /* rl_remaining is below ratelimit_reserve (warned once) */
    uint64_t pulls;         /* manifest GETs answered 2xx: what Docker Hub counts */
    uint64_t pulls_avoided; /* tag GETs answered from cache after a HEAD (manifests.c) */
    rgm_peers_t *peers;     /* a mirror registry's replicas (endpoint array, endpoint_dns) */
};

#define PEER_TRIES 3 /* replicas tried for one call when they do not answer */

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

struct rgm_upstream {
    uv_loop_t *loop;
    const rgm_config_t *cfg;
    rgm_client_t *client;
    struct regstate *regs;     /* parallel to cfg->registries */
    rgm_auth_cache_t *tokens;  /* "registry|scope" -> "Bearer <token>" */
    rgm_auth_cache_t *refused; /* "registry|repo" -> own identity refused recently */
    rgm_auth_cache_t *missing; /* "registry|repo|suffix|accept" -> 404 to the mirror's own */
    rgm_identity_t *id;        /* the mirror's own credentials */
    unsigned active;
    rgm_slot_wait_t *qhead;
    rgm_slot_wait_t *qtail;
    unsigned n_closing; /* replica sets still closing after rgm_upstream_stop */
    void (*stop_cb)(void *ud);
    void *stop_ud;
};

/* STEP_FRESH: the upstream refused kept helper/plugin credentials: run it again, once.
 * STEP_AFTER_PROOF: a "private" registry's client proved its access; now the mirror's own.
 * STEP_MAIN: the fill peer did not have it (docs/cluster.md): ask the registry. */
enum step {
    STEP_NONE = 0,
    STEP_TOKEN,
    STEP_RETRY_OWN,
    STEP_CLIENT,
    STEP_FRESH,
    STEP_AFTER_PROOF,
    STEP_MAIN
};

struct rgm_upcall {
    rgm_upstream_t *up;
    const rgm_registry_cfg_t *reg;
    struct regstate *rs;
    char *repo;
    char *method;
    char *url;
    char *accept;
    char *client_auth;
    uint64_t range_from;
    rgm_upcall_cbs_t cbs;
    void *ud;

    rgm_upreq_t *req; /* the request in flight (main or token) */
    int is_token_req;
    int is_fill_req;   /* the request in flight asks the fill peer */
    int is_filled;     /* the answer is the fill peer's */
    char *fill_url;    /* the peer's URL for this call, or NULL */
    int client_first;  /* opts.client_auth_first, for the main request after a fill */
    int is_mirror_reg; /* opts.reg->is_mirror, idem */
    enum step next;    /* what to do when the swallowed response ends */
    int tried_token;
    int tried_basic;
    int tried_client;
    int tried_fresh;
    int using_client;
    int is_proving; /* a private registry: the client's HEAD that proves its access */
    int is_proven;  /* ... succeeded: content fetched after it is private */
    int no_own;     /* a private registry and a client without credentials: anonymous only */
    int has_own;    /* own_auth is what the identity gave in this call */
    int is_own_cached;
    char *own_auth;    /* "Basic ..." of the mirror's own credentials, or NULL */
    char *own_refresh; /* or a helper's identity token: the OAuth2 refresh token, or NULL */
    enum step after_own;
    rgm_identity_wait_t *idwait;
    int is_paused;
    int is_cancelled;
    int status;
    int own_status;    /* the last main answer to the mirror's own identity; 0: none */
    int is_manifest;   /* suffix is manifests/...: counts for the pull budget */
    char *missing_key; /* manifests/ and blobs/ calls: the key of up->missing, else NULL */
    char *challenge;   /* last WWW-Authenticate seen */
    char *sent_auth;   /* Authorization of the current main request */
    rgm_buf_t tokbody;
    uint64_t started_ms;
    /* a mirror registry with replicas: the one asked, the key that chose it, and the URL
     * without its base (to ask the next one) */
    char peer_url[RGM_PEER_URL_MAX];
    char *key;
    char *tail;
    unsigned peer_tries;
    int is_head_delivered;
};

/* ---- helpers ---- */

static struct regstate *regstate(rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    size_t i = (size_t)(reg - up->cfg->registries);

    if (i < up->cfg->registries_len)
        return &up->regs[i];
    return NULL;
}

/* The peer set of a mirror registry with several replicas; none when it has one endpoint. */
static void start_replicas(rgm_upstream_t *up, const rgm_registry_cfg_t *reg, struct regstate *rs)
{
    rgm_peers_opts_t o;
    int err = 0;

    if (!reg->is_mirror || (reg->endpoints_len < 2 && !reg->endpoint_dns))
        return;
    memset(&o, 0, sizeof(o));
    o.urls = (const char *const *)reg->endpoints;
    o.n_urls = reg->endpoint_dns ? 0 : reg->endpoints_len;
    o.dns_url = reg->endpoint_dns;
    o.client = up->client;
    rs->peers = rgm_peers_new(up->loop, &o, &err);
    if (rs->peers && rgm_peers_start(rs->peers) < 0) {
        rgm_peers_close(rs->peers, NULL, NULL);
        rs->peers = NULL;
    }
    if (!rs->peers)
        rgm_log(RGM_LOG_ERROR, "upstream", "registry %s: no replica set; using %s", reg->name,
                reg->endpoint ? reg->endpoint : "nothing");
    else
        rgm_log(RGM_LOG_INFO, "upstream", "registry %s: each digest to its owner among %s",
                reg->name, reg->endpoint_dns ? reg->endpoint_dns : "the endpoints");
}

rgm_upstream_t *rgm_upstream_new(uv_loop_t *loop, const rgm_config_t *cfg, rgm_client_t *client)
{
    rgm_upstream_t *up = rgm_calloc(1, sizeof(*up));
    rgm_config_t nocp;
    char msg[512];
    size_t i;

    up->loop = loop;
    up->cfg = cfg;
    up->client = client;
    up->regs = rgm_calloc(cfg->registries_len ? cfg->registries_len : 1, sizeof(*up->regs));
    up->id = rgm_identity_new(loop, cfg, msg, sizeof(msg));
    if (!up->id) {
        /* serve checks the provider config first (rgm_identity_check): not reached there. */
        rgm_log(RGM_LOG_ERROR, "upstream", "%s; running without credential providers", msg);
        nocp = *cfg;
        nocp.cred_provider_config = NULL;
        up->id = rgm_identity_new(loop, &nocp, msg, sizeof(msg));
        RGM_BUG_ON(!up->id);
    }
    for (i = 0; i < cfg->registries_len; i++) {
        up->regs[i].rl_limit = -1;
        up->regs[i].rl_remaining = -1;
        if (cfg->registries[i].insecure_skip_verify)
            rgm_log(RGM_LOG_WARN, "upstream",
                    "registry %s: TLS verification is OFF (insecure_skip_verify)",
                    cfg->registries[i].name);
    }
    up->tokens = rgm_auth_cache_new(4096);
    up->refused = rgm_auth_cache_new(4096);
    up->missing = rgm_auth_cache_new(4096);
    for (i = 0; i < cfg->registries_len; i++)
        start_replicas(up, &cfg->registries[i], &up->regs[i]);
    return up;
}

static void on_replicas_closed(void *ud)
{
    rgm_upstream_t *up = ud;

    if (--up->n_closing == 0 && up->stop_cb)
        up->stop_cb(up->stop_ud);
}

void rgm_upstream_stop(rgm_upstream_t *up, void (*cb)(void *ud), void *ud)
{
    size_t i;

    up->stop_cb = cb;
    up->stop_ud = ud;
    up->n_closing = 1; /* held until every close is started */
    for (i = 0; i < up->cfg->registries_len; i++) {
        if (!up->regs[i].peers)
            continue;
        up->n_closing++;
        rgm_peers_close(up->regs[i].peers, on_replicas_closed, up);
        up->regs[i].peers = NULL;
    }
    on_replicas_closed(up);
}

void rgm_upstream_free(rgm_upstream_t *up)
{
    if (!up)
        return;
    rgm_identity_free(up->id);
    free(up->regs);
    rgm_auth_cache_free(up->tokens);
    rgm_auth_cache_free(up->refused);
    rgm_auth_cache_free(up->missing);
    free(up);
}

void rgm_upstream_prune(rgm_upstream_t *up)
{
    uint64_t now = rgm_time_ms();

    rgm_auth_cache_prune(up->tokens, now);
    rgm_auth_cache_prune(up->refused, now);
    rgm_auth_cache_prune(up->missing, now);
}

static void scope_key(const rgm_upcall_t *c, const char *what, char *out, size_t len)
{
    int n = snprintf(out, len, "%s|%s|%s", what, c->reg->name, c->repo);

    if (n < 0 || (size_t)n >= len)
        out[0] = '\0';
}

/* ---- the request state machine ---- */

static int on_req_head(rgm_upreq_t *r, int status, void *ud);
static int on_req_body(rgm_upreq_t *r, const char *data, size_t len, void *ud);
static void on_req_done(rgm_upreq_t *r, int err, void *ud);

static const rgm_upreq_cbs_t req_cbs = {on_req_head, on_req_body, on_req_done};

static rgm_tls_opts_t tls_of(const rgm_registry_cfg_t *reg)
{
    rgm_tls_opts_t t;

    memset(&t, 0, sizeof(t)); /* every field, server_name included */
    t.ca_file = reg->ca_file;
    t.insecure_skip_verify = reg->insecure_skip_verify;
    t.client_cert_file = reg->client_cert_file;
    t.client_key_file = reg->client_key_file;
    return t;
}

/* Send the main request with this Authorization (NULL: none). */
static int send_main(rgm_upcall_t *c, const char *auth)
{
    rgm_tls_opts_t tls = tls_of(c->reg);
    char range[64];
    int err;

    c->req = rgm_upreq_new(c->up->client, c->is_proving ? "HEAD" : c->method, c->url, &tls);
    if (c->req && c->reg->is_unlisted)
        rgm_upreq_set_net_policy(c->req, RGM_NET_PUBLIC);
    if (!c->req)
        return UV_EINVAL;
    c->is_token_req = 0;
    free(c->sent_auth);
    c->sent_auth = auth ? rgm_strdup(auth) : NULL;
    if (auth)
        rgm_upreq_add_header(c->req, "Authorization", auth);
    if (c->accept)
        rgm_upreq_add_header(c->req, "Accept", c->accept);
    if (c->range_from > 0) {
        snprintf(range, sizeof(range), "bytes=%llu-", (unsigned long long)c->range_from);
        rgm_upreq_add_header(c->req, "Range", range);
    }
    err = rgm_upreq_start(c->req, &req_cbs, c);
    if (err < 0)
        c->req = NULL;
    return err;
}

/* A new request for the token: the OAuth2 POST of the refresh_token grant to the realm when the
 * mirror's identity is an identity token (as docker does), else GET <realm>?service=...&scope=...
 * with the mirror's Basic credentials, if any. NULL when the realm or the scope is unusable. */
static rgm_upreq_t *new_token_req(rgm_upcall_t *c, const rgm_auth_challenge_t *ch,
                                  const char *scope)
{
    char url[URL_MAX];
    rgm_tls_opts_t tls = tls_of(c->reg);
    rgm_upreq_t *r;
    rgm_buf_t form;

    if (!c->own_refresh) {
        if (rgm_auth_token_url(ch, scope, url, sizeof(url)) < 0)
            return NULL;
        r = rgm_upreq_new(c->up->client, "GET", url, &tls);
        if (r && c->own_auth)
            rgm_upreq_add_header(r, "Authorization", c->own_auth);
        return r;
    }
    rgm_buf_init(&form, TOKEN_FORM_MAX);
    r = NULL;
    if (rgm_auth_token_form(ch, scope, c->own_refresh, &form) == 0)
        r = rgm_upreq_new(c->up->client, "POST", ch->realm, &tls);
    if (r)
        rgm_upreq_set_body(r, "application/x-www-form-urlencoded", form.data, form.len);
    if (form.data)
        explicit_bzero(form.data, form.len);
    rgm_buf_free(&form);
    return r;
}

static int send_token(rgm_upcall_t *c, const rgm_auth_challenge_t *ch)
{
    char ours[1024];
    int err;

    if (rgm_auth_pull_scope(c->repo, ours, sizeof(ours)) < 0)
        return UV_EINVAL;
    /* The realm is another origin: never the client's credentials, only the mirror's own. */
    c->req = new_token_req(c, ch, ch->scope[0] ? ch->scope : ours);
    if (!c->req)
        return UV_EINVAL;
    /* A realm is named by the registry's answer: no link-local (cloud metadata) even for a
     * configured one; only public addresses for a host a client chose. */
    rgm_upreq_set_net_policy(c->req, c->reg->is_unlisted ? RGM_NET_PUBLIC : RGM_NET_NO_LINKLOCAL);
    c->is_token_req = 1;
    rgm_buf_reset(&c->tokbody);
    err = rgm_upreq_start(c->req, &req_cbs, c);
    if (err < 0)
        c->req = NULL;
    return err;
}

static void free_own(rgm_upcall_t *c)
{
    if (c->own_auth)
        explicit_bzero(c->own_auth, strlen(c->own_auth));
    RGM_FREE(c->own_auth);
    if (c->own_refresh)
        explicit_bzero(c->own_refresh, strlen(c->own_refresh));
    RGM_FREE(c->own_refresh);
}

static void upcall_free(rgm_upcall_t *c)
{
    free(c->fill_url);
    free(c->key);
    free(c->tail);
    free(c->repo);
    free(c->method);
    free(c->url);
    free(c->accept);
    free(c->client_auth);
    free(c->challenge);
    free(c->sent_auth);
    free(c->missing_key);
    free_own(c);
    rgm_buf_free(&c->tokbody);
    free(c);
}

static void finish(rgm_upcall_t *c, int err)
{
    c->req = NULL;
    c->cbs.on_done(c, err, c->ud);
    upcall_free(c);
}

/* Ask the fill peer: GET fill_url with the hop and only-if-cached headers. */
static int send_fill(rgm_upcall_t *c)
{
    c->req = rgm_upreq_new(c->up->client, "GET", c->fill_url, NULL);
    if (!c->req)
        return UV_EINVAL;
    c->is_token_req = 0;
    c->is_fill_req = 1;
    rgm_upreq_set_max_redirects(c->req, 0);
    if (c->client_auth)
        rgm_upreq_add_header(c->req, "Authorization", c->client_auth);
    if (c->accept)
        rgm_upreq_add_header(c->req, "Accept", c->accept);
    rgm_upreq_add_header(c->req, "X-Regmirror-Hop", "1");
    rgm_upreq_add_header(c->req, "X-Regmirror-Only-If-Cached", "1");
    return rgm_upreq_start(c->req, &req_cbs, c);
}

/* The registry request: the client's credentials first for a tier mirror (or when the
 * mirror's own were refused recently), a private registry's proof, else a cached token or
 * nothing. */
static int start_main(rgm_upcall_t *c)
{
    char key[1024];
    const char *auth = NULL;

    c->is_fill_req = 0;
    scope_key(c, "refused", key, sizeof(key));
    if (c->client_auth &&
        (c->client_first || rgm_auth_cache_get(c->up->refused, key, rgm_time_ms()))) {
        c->tried_client = 1;
        c->using_client = 1;
        auth = c->client_auth;
    } else if (c->reg->is_private && !c->is_mirror_reg) {
        /* "private": the client proves its access with a HEAD of its own first; a client
         * without credentials gets what anonymous gets. */
        c->no_own = !c->client_auth;
        c->is_proving = c->client_auth != NULL;
        c->tried_client = c->is_proving;
        c->using_client = c->is_proving;
        auth = c->client_auth;
    } else {
        scope_key(c, "token", key, sizeof(key));
        /* A cached token that is refused still gets one fresh token fetch. */
        auth = rgm_auth_cache_get(c->up->tokens, key, rgm_time_ms());
    }
    return send_main(c, auth);
}

/* Decide what a 401/403/404 to the mirror's own identity means. Returns the next step, or
 * STEP_NONE to deliver the response as final. */
static enum step after_refusal(rgm_upcall_t *c, int status)
{
    rgm_auth_challenge_t ch[4];
    int n;
    int i;

    if (c->using_client)
        return STEP_NONE;
    if (status == 401 && c->challenge) {
        n = rgm_auth_parse_challenges(c->challenge, ch, RGM_ARRAY_SIZE(ch));
        for (i = 0; i < n; i++) {
            if (ch[i].scheme == RGM_AUTH_SCHEME_BEARER && !c->tried_token && ch[i].realm[0]) {
                return STEP_TOKEN;
            }
            if (ch[i].scheme == RGM_AUTH_SCHEME_BASIC && !c->tried_basic && !c->no_own &&
                rgm_identity_has(c->up->id, c->reg, c->repo)) {
                return STEP_RETRY_OWN;
            }
            /* Kept helper or plugin credentials refused: ask it again, once. */
            if (ch[i].scheme == RGM_AUTH_SCHEME_BASIC && c->tried_basic && c->is_own_cached &&
                !c->tried_fresh && c->sent_auth && c->own_auth &&
                strcmp(c->sent_auth, c->own_auth) == 0) {
                return STEP_FRESH;
            }
        }
    }
    if ((status == 401 || status == 403 || status == 404) && c->client_auth && !c->tried_client)
        return STEP_CLIENT;
    return STEP_NONE;
}

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
static void note_budget(rgm_upcall_t *c, rgm_upreq_t *r, int status)
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

/* A 404 to the mirror's own identity is remembered for negative_ttl (it answers requests that
 * carry no credentials of their own); a 2xx to it forgets one. */
static void note_missing(rgm_upcall_t *c, int status)
{
    uint64_t ttl = rgm_config_negative_ttl(c->up->cfg, c->reg);

    if (!c->missing_key || c->using_client)
        return;
    if (status == 404 && ttl > 0)
        rgm_auth_cache_put(c->up->missing, c->missing_key, "1", rgm_time_ms() + ttl);
    else if (status >= 200 && status < 300)
        (void)rgm_auth_cache_del(c->up->missing, c->missing_key);
}

static int on_req_head(rgm_upreq_t *r, int status, void *ud)
{
    rgm_upcall_t *c = ud;
    const char *wa;

    if (c->is_fill_req) {
        if (status != 200) {
            c->next = STEP_MAIN; /* not there: swallow the answer, then ask the registry */
            return 0;
        }
        c->is_filled = 1;
        /* The peer applied the access rule to the client's credentials: content filled with
         * them is treated as private (the cache never widens access). */
        c->using_client = c->client_auth != NULL;
        c->status = status;
        c->next = STEP_NONE;
        return c->cbs.on_head(c, status, c->ud);
    }
    if (c->rs)
        note_budget(c, r, status);
    if (c->is_token_req)
        return 0;
    c->status = status;
    if (!c->using_client)
        c->own_status = status;
    note_missing(c, status);
    if (c->rs && c->is_manifest && status >= 200 && status < 300 && strcmp(c->method, "GET") == 0)
        c->rs->pulls++;
    if (c->is_proving && status >= 200 && status < 300) {
        c->next = STEP_AFTER_PROOF; /* a HEAD: no body to swallow */
        return 0;
    }
    if (status == 401 || status == 403 || status == 404) {
        wa = rgm_upreq_header(r, "WWW-Authenticate");
        if (wa) {
            free(c->challenge);
            c->challenge = rgm_strdup(wa);
        }
        c->next = after_refusal(c, status);
        if (c->next != STEP_NONE)
            return 0; /* swallow this body; the next step starts in on_done */
    }
    c->next = STEP_NONE;
    if (c->peer_url[0] && c->rs && c->rs->peers)
        rgm_peers_report(c->rs->peers, c->peer_url, 1);
    c->is_head_delivered = 1;
    return c->cbs.on_head(c, status, c->ud);
}

static int on_req_body(rgm_upreq_t *r, const char *data, size_t len, void *ud)
{
    rgm_upcall_t *c = ud;

    (void)r;
    if (c->rs && !c->is_fill_req)
        c->rs->bytes += len;
    if (c->is_token_req)
        return rgm_buf_append(&c->tokbody, data, len) < 0 ? UV_E2BIG : 0;
    if (c->next != STEP_NONE)
        return 0;
    return c->cbs.on_body(c, data, len, c->ud);
}

/* ---- the mirror's own credentials, from rgm_identity (static, helper, plugin) ---- */

static int next_step(rgm_upcall_t *c);

static void set_own(rgm_upcall_t *c, const rgm_cred_t *cred, int is_cached)
{
    char hdr[4096];

    free_own(c);
    c->has_own = 1;
    c->is_own_cached = is_cached;
    if (!cred || !cred->username)
        return;
    if (cred->is_identity_token) {
        /* An OAuth2 refresh token, for the realm's refresh_token grant (send_token). */
        c->own_refresh = rgm_strdup(cred->secret);
        return;
    }
    if (rgm_auth_basic_header(cred->username, cred->secret, hdr, sizeof(hdr)) == 0)
        c->own_auth = rgm_strdup(hdr);
    else
        rgm_log(RGM_LOG_WARN, "upstream",
                "registry %s: unusable credentials (':' or a control byte in the username); "
                "going on anonymously",
                c->reg->name);
    explicit_bzero(hdr, sizeof(hdr));
}

/* Step STEP_TOKEN or STEP_RETRY_OWN, now that own_auth is known. */
static int do_own_step(rgm_upcall_t *c, enum step step)
{
    rgm_auth_challenge_t ch[4];
    int n;
    int i;

    if (step == STEP_TOKEN) {
        n = rgm_auth_parse_challenges(c->challenge, ch, RGM_ARRAY_SIZE(ch));
        for (i = 0; i < n; i++)
            if (ch[i].scheme == RGM_AUTH_SCHEME_BEARER && ch[i].realm[0])
                return send_token(c, &ch[i]);
        return UV_EACCES;
    }
    if (c->own_auth) {
        c->tried_basic = 1;
        return send_main(c, c->own_auth);
    }
    if (c->own_refresh)
        rgm_log(RGM_LOG_WARN, "upstream",
                "registry %s: an identity token is for a token (Bearer) registry, but this one "
                "asks for Basic: going on without it",
                c->reg->name);
    /* No credentials after all (anonymous, or the source failed): the refusal stands. */
    if (c->client_auth && !c->tried_client) {
        c->next = STEP_CLIENT;
        return next_step(c);
    }
    return UV_EACCES;
}

static void on_identity(const rgm_cred_t *cred, void *ud)
{
    rgm_upcall_t *c = ud;
    int err;

    c->idwait = NULL;
    set_own(c, cred, 0);
    err = do_own_step(c, c->after_own);
    if (err < 0) {
        if (c->cbs.on_head(c, c->status, c->ud) >= 0)
            err = 0;
        finish(c, err);
    }
}

/* Run step with the mirror's own credentials: at once when they are known, else when the
 * helper or plugin answers (0 then: nothing in flight but the identity wait). */
static int with_own(rgm_upcall_t *c, enum step step)
{
    rgm_cred_t now;
    int is_cached = 0;

    if (c->no_own || c->has_own) {
        if (!c->has_own)
            set_own(c, NULL, 0);
        return do_own_step(c, step);
    }
    c->after_own = step;
    if (rgm_identity_get(c->up->id, c->reg, c->repo, on_identity, c, &c->idwait, &now,
                         &is_cached) == 0)
        return 0;
    set_own(c, &now, is_cached);
    rgm_cred_clear(&now);
    return do_own_step(c, step);
}

static int next_step(rgm_upcall_t *c)
{
    char key[1024];

    switch (c->next) {
    case STEP_TOKEN:
        c->tried_token = 1;
        return with_own(c, STEP_TOKEN);
    case STEP_RETRY_OWN:
        c->tried_basic = 1;
        return with_own(c, STEP_RETRY_OWN);
    case STEP_FRESH:
        c->tried_fresh = 1;
        c->has_own = 0;
        rgm_identity_forget(c->up->id, c->reg, c->repo);
        return with_own(c, STEP_RETRY_OWN);
    case STEP_AFTER_PROOF:
        /* The client may pull this: fetch it with the mirror's own identity, as private. */
        c->is_proving = 0;
        c->is_proven = 1;
        c->using_client = 0;
        c->tried_client = 0;
        scope_key(c, "token", key, sizeof(key));
        return send_main(c, rgm_auth_cache_get(c->up->tokens, key, rgm_time_ms()));
    case STEP_CLIENT:
        /* The mirror's own identity is refused for this repository: remember it briefly, so
         * that the next request with client credentials goes straight to them. */
        scope_key(c, "refused", key, sizeof(key));
        rgm_auth_cache_put(c->up->refused, key, "1", rgm_time_ms() + c->up->cfg->auth_cache_ttl_ms);
        c->tried_client = 1;
        c->using_client = 1;
        return send_main(c, c->client_auth);
    case STEP_MAIN:
        return start_main(c);
    default:
        return UV_EINVAL;
    }
}

static void token_done(rgm_upcall_t *c, int err)
{
    rgm_auth_token_t tok;
    char key[1024];
    char bearer[8192];
    uint64_t now = rgm_time_ms();
    int status = c->status;

    memset(&tok, 0, sizeof(tok));
    if (err == UV_EPERM) {
        finish(c, err); /* the realm's address is refused: 403, not a challenge */
        return;
    }
    if (err == 0 && status == 200 &&
        rgm_auth_parse_token_response(c->tokbody.data, c->tokbody.len, now, &tok) == 0 &&
        snprintf(bearer, sizeof(bearer), "Bearer %s", tok.token) < (int)sizeof(bearer)) {
        scope_key(c, "token", key, sizeof(key));
        /* A private registry's anonymous token is not the mirror's to keep for others. */
        if (tok.expires_ms > now + TOKEN_MARGIN_MS && !c->no_own)
            rgm_auth_cache_put(c->up->tokens, key, bearer, tok.expires_ms - TOKEN_MARGIN_MS);
        rgm_auth_token_clear(&tok);
        err = send_main(c, bearer);
    } else if (err == 0 && (status == 401 || (status == 400 && c->own_refresh)) &&
               c->is_own_cached && !c->tried_fresh) {
        /* Kept helper or plugin credentials refused by the realm (an OAuth2 server answers a
         * refresh token it does not take with 400 invalid_grant): ask it again, once. */
        rgm_auth_token_clear(&tok);
        c->tried_fresh = 1;
        c->has_own = 0;
        c->status = 401;
        rgm_identity_forget(c->up->id, c->reg, c->repo);
        err = with_own(c, STEP_TOKEN);
    } else {
        rgm_auth_token_clear(&tok);
        rgm_log(RGM_LOG_WARN, "upstream", "registry %s: token request%s failed (status %d, %s)",
                c->reg->name, c->own_refresh ? " (OAuth2 refresh_token grant)" : "", status,
                err < 0 ? uv_strerror(err) : "refused");
        /* The mirror cannot get a token: go on with the client's credentials, or answer the
         * challenge we have. */
        c->status = 401;
        if (c->client_auth && !c->tried_client) {
            c->next = STEP_CLIENT;
            err = next_step(c);
        } else {
            err = UV_EACCES;
        }
    }
    if (err < 0) {
        if (err == UV_EACCES && c->cbs.on_head(c, 401, c->ud) >= 0)
            err = 0;
        finish(c, err);
    }
}

/* Per-registry counters and the back-off. Only a request started after the previous failure
 * counts as another failure: a burst of concurrent requests lost in one outage is one. */
static void count_outcome(rgm_upcall_t *c, int st, int err)
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

/* base followed by tail, malloc'd. */
static char *join_url(const char *base, const char *tail)
{
    size_t blen = strlen(base), tlen = strlen(tail);
    char *u = rgm_malloc(blen + tlen + 1);

    memcpy(u, base, blen);
    memcpy(u + blen, tail, tlen + 1);
    return u;
}

/* The replica for c's key: the owner among healthy ones, else any member. 0, or
 * UV_EHOSTUNREACH when the set is empty (nothing resolved yet). */
static int pick_replica(rgm_upcall_t *c)
{
    rgm_peer_pick_t p;
    rgm_peers_t *peers = c->rs->peers;

    if (rgm_peers_rank(peers, c->key, strlen(c->key), 1, &p, 1) == 0 &&
        rgm_peers_rank(peers, c->key, strlen(c->key), 0, &p, 1) == 0)
        return UV_EHOSTUNREACH;
    memcpy(c->peer_url, p.url, sizeof(c->peer_url));
    free(c->url);
    c->url = join_url(p.url, c->tail);
    return 0;
}

/* A replica that gave no answer at all: mark it down, ask the key's next owner. 1 when a new
 * request is on its way. */
static int next_replica(rgm_upcall_t *c, int st, int err)
{
    if (!c->peer_url[0] || !c->rs || !c->rs->peers || c->is_head_delivered || st > 0 || err >= 0 ||
        err == UV_ECANCELED || c->is_cancelled || c->is_token_req || c->is_fill_req ||
        ++c->peer_tries >= PEER_TRIES)
        return 0;
    rgm_peers_report(c->rs->peers, c->peer_url, 0);
    if (pick_replica(c) < 0)
        return 0;
    rgm_log(RGM_LOG_INFO, "upstream", "registry %s: replica did not answer (%s); asking %s",
            c->reg->name, uv_strerror(err), c->peer_url);
    return send_main(c, c->sent_auth) == 0;
}

static void on_req_done(rgm_upreq_t *r, int err, void *ud)
{
    rgm_upcall_t *c = ud;
    int is_token = c->is_token_req;
    int st = rgm_upreq_status(r);
    int serr;

    if (next_replica(c, st, err))
        return;
    if (c->rs && !c->is_fill_req)
        count_outcome(c, st, err);
    if (c->is_fill_req && c->next == STEP_NONE && !c->is_filled && !c->is_cancelled) {
        /* The peer gave no answer at all: ask the registry. */
        c->next = STEP_MAIN;
        err = 0;
    }
    if (is_token)
        c->status = rgm_upreq_status(r);
    c->req = NULL;
    if (c->is_cancelled) {
        finish(c, UV_ECANCELED);
        return;
    }
    if (is_token) {
        token_done(c, err);
        return;
    }
    if (c->next == STEP_NONE) {
        finish(c, err);
        return;
    }
    serr = next_step(c);
    if (serr < 0) {
        /* The refusal stands: report it as the final answer. */
        if (c->cbs.on_head(c, c->status, c->ud) >= 0)
            serr = 0;
        finish(c, serr);
    }
}

static int is_manifest_suffix(const char *suffix)
{
    return strncmp(suffix, "manifests/", 10) == 0;
}

/* The key of up->missing for a call; 0, or <0 when the call has none (not a manifest or blob,
 * or too long). */
static int missing_key(const rgm_upcall_opts_t *o, char *out, size_t len)
{
    int n;

    if (!is_manifest_suffix(o->suffix) && strncmp(o->suffix, "blobs/", 6) != 0)
        return UV_EINVAL;
    n = snprintf(out, len, "%s|%s|%s|%s", o->reg->name, o->repo, o->suffix,
                 o->accept ? o->accept : "");
    return n > 0 && (size_t)n < len ? 0 : UV_ENAMETOOLONG;
}

int rgm_upstream_known_missing(rgm_upstream_t *up, const rgm_upcall_opts_t *o)
{
    char key[4096];

    if (rgm_config_negative_ttl(up->cfg, o->reg) == 0 || missing_key(o, key, sizeof(key)) < 0)
        return 0;
    return rgm_auth_cache_get(up->missing, key, rgm_time_ms()) != NULL;
}

uint64_t rgm_upstream_limited_ms(const rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    const struct regstate *rs = regstate((rgm_upstream_t *)up, reg);
    uint64_t now = rgm_time_ms();

    return rs && rs->limited_until > now ? rs->limited_until - now : 0;
}

int rgm_upstream_in_reserve(const rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    const struct regstate *rs = regstate((rgm_upstream_t *)up, reg);

    return rs && rs->is_in_reserve;
}

void rgm_upstream_count_avoided(rgm_upstream_t *up, const rgm_registry_cfg_t *reg)
{
    struct regstate *rs = regstate(up, reg);

    if (rs)
        rs->pulls_avoided++;
}

/* The rendezvous key of a call (docs/cluster.md): the digest of a blob or of a manifest by
 * digest, "registry/repository:tag" for a tag, the repository for anything else (tag lists:
 * any replica will do, this one spreads them). malloc'd. */
static char *replica_key(const rgm_upcall_opts_t *o)
{
    char key[RGM_PEER_URL_MAX + 1024];
    const char *ref = NULL;

    if (strncmp(o->suffix, "blobs/", 6) == 0)
        return rgm_strdup(o->suffix + 6);
    if (strncmp(o->suffix, "manifests/", 10) == 0)
        ref = o->suffix + 10;
    if (ref && strchr(ref, ':'))
        return rgm_strdup(ref);
    if (ref && rgm_rendezvous_tag_key(o->reg->name, o->repo, ref, key, sizeof(key)) == 0)
        return rgm_strdup(key);
    return rgm_strdup(o->repo);
}

int rgm_upcall_start(rgm_upstream_t *up, const rgm_upcall_opts_t *o, const rgm_upcall_cbs_t *cbs,
                     void *ud, rgm_upcall_t **out)
{
    rgm_upcall_t *c;
    char url[URL_MAX];
    char ns[600];
    char key[1024];
    struct regstate *rs = regstate(up, o->reg);
    int n;
    int err;

    if (rs && rs->down_until > rgm_time_ms())
        return UV_ECONNREFUSED; /* backing off: see BACKOFF_AFTER */
    if (rs && rs->limited_until > rgm_time_ms() && is_manifest_suffix(o->suffix))
        return UV_EAGAIN; /* the registry said stop (429): see note_budget */
    /* url holds the part after the base URL first: the replicas' bases differ */
    if (o->reg->is_mirror) {
        if (rgm_url_encode(o->reg->name, ns, sizeof(ns)) < 0)
            return UV_EINVAL;
        n = snprintf(url, sizeof(url), "/v2/%s/%s?%s%sns=%s", o->repo, o->suffix,
                     o->query ? o->query : "", o->query ? "&" : "", ns);
    } else {
        n = snprintf(url, sizeof(url), "/v2/%s/%s%s%s", o->repo, o->suffix, o->query ? "?" : "",
                     o->query ? o->query : "");
    }
    if (n < 0 || (size_t)n >= sizeof(url) - (o->reg->endpoint ? strlen(o->reg->endpoint) : 0))
        return UV_ENAMETOOLONG;
    if (!o->reg->endpoint && !(rs && rs->peers))
        return UV_EHOSTUNREACH; /* endpoint_dns without its replica set */

    c = rgm_calloc(1, sizeof(*c));
    c->up = up;
    c->reg = o->reg;
    c->rs = regstate(up, o->reg);
    c->repo = rgm_strdup(o->repo);
    c->method = rgm_strdup(o->method);
    c->tail = rgm_strdup(url);
    c->url = join_url(o->reg->endpoint ? o->reg->endpoint : "", url);
    c->accept = o->accept ? rgm_strdup(o->accept) : NULL;
    c->client_auth = o->client_auth && o->client_auth[0] ? rgm_strdup(o->client_auth) : NULL;
    c->range_from = o->range_from;
    c->is_manifest = is_manifest_suffix(o->suffix);
    if (missing_key(o, key, sizeof(key)) == 0)
        c->missing_key = rgm_strdup(key);
    c->started_ms = rgm_time_ms();
    c->cbs = *cbs;
    c->ud = ud;
    c->client_first = o->client_auth_first; /* a tier mirror relays the client's as they are */
    c->is_mirror_reg = o->reg->is_mirror;
    rgm_buf_init(&c->tokbody, TOKEN_BODY_MAX);
    if (c->rs && c->rs->peers) {
        c->key = replica_key(o);
        if (pick_replica(c) < 0 && !o->reg->endpoint) {
            upcall_free(c);
            return UV_EHOSTUNREACH;
        }
    }

    if (o->fill_url && strcmp(o->method, "GET") == 0 && o->range_from == 0 &&
        rgm_url_encode(o->reg->name, ns, sizeof(ns)) == 0 &&
        snprintf(url, sizeof(url), "%s/v2/%s/%s?ns=%s", o->fill_url, o->repo, o->suffix, ns) <
            (int)sizeof(url)) {
        c->fill_url = rgm_strdup(url);
        err = send_fill(c);
        if (err < 0) {
            c->req = NULL;
            err = start_main(c);
        }
    } else {
        err = start_main(c);
    }
    if (err < 0) {
        upcall_free(c);
        return err;
    }
    if (out)
        *out = c;
    return 0;
}

void rgm_upcall_pause(rgm_upcall_t *c)
{
    c->is_paused = 1;
    if (c->req)
        rgm_upreq_pause(c->req);
}

void rgm_upcall_resume(rgm_upcall_t *c)
{
    c->is_paused = 0;
    if (c->req)
        rgm_upreq_resume(c->req);
}

void rgm_upcall_cancel(rgm_upcall_t *c)
{
    c->is_cancelled = 1;
    if (c->req) {
        rgm_upreq_cancel(c->req);
    } else if (c->idwait) {
        /* Waiting for a helper or plugin: nothing else is in flight. */
        rgm_identity_cancel(c->idwait);
        c->idwait = NULL;
        finish(c, UV_ECANCELED);
    }
}

int rgm_upcall_status(const rgm_upcall_t *c)
{
    return c->status;
}

const char *rgm_upcall_header(const rgm_upcall_t *c, const char *name)
{
    if (c->req && !c->is_token_req)
        return rgm_upreq_header(c->req, name);
    if (rgm_strcaseeq(name, "WWW-Authenticate"))
        return c->challenge;
    return NULL;
}

int64_t rgm_upcall_content_length(const rgm_upcall_t *c)
{
    if (c->req && !c->is_token_req)
        return rgm_upreq_content_length(c->req);
    return -1;
}

int rgm_upcall_used_client_auth(const rgm_upcall_t *c)
{
    return c->using_client || c->is_proven;
}

int rgm_upcall_own_status(const rgm_upcall_t *c)
{
    return c->own_status;
}

int rgm_upcall_was_filled(const rgm_upcall_t *c)
{
    return c->is_filled;
}

/* One family with a series for every configured registry (from start-up, zeros too). off:
 * the regstate member, an int (is_in_reserve) or a uint64_t. */
static int per_registry(const rgm_upstream_t *up, rgm_buf_t *out, const char *name,
                        const char *type, const char *help, size_t off)
{
    const char *p;
    uint64_t v;
    int iv;
    size_t i;
    int err = 0;

    err |= rgm_buf_appendf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (i = 0; i < up->cfg->registries_len; i++) {
        p = (const char *)&up->regs[i] + off;
        if (off == offsetof(struct regstate, is_in_reserve)) {
            memcpy(&iv, p, sizeof(iv));
            v = (uint64_t)iv;
        } else {
            memcpy(&v, p, sizeof(v));
        }
        err |= rgm_buf_appendf(out, "%s{registry=\"%s\"} %llu\n", name, up->cfg->registries[i].name,
                               (unsigned long long)v);
    }
    return err;
}

int rgm_upstream_metrics(const rgm_upstream_t *up, rgm_buf_t *out)
{
    static const char *const classes[N_CLASSES] = {"1xx", "2xx", "3xx", "4xx", "5xx", "error"};
    size_t i;
    size_t k;
    int err = 0;

    err |= rgm_buf_appendf(out, "# HELP regmirror_upstream_http_requests_total HTTP requests to "
                                "upstreams (token requests included), by registry and status.\n"
                                "# TYPE regmirror_upstream_http_requests_total counter\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        for (k = 0; k < N_CLASSES; k++)
            err |= rgm_buf_appendf(out,
                                   "regmirror_upstream_http_requests_total{registry=\"%s\","
                                   "status=\"%s\"} %llu\n",
                                   up->cfg->registries[i].name, classes[k],
                                   (unsigned long long)up->regs[i].requests[k]);
    err |= rgm_buf_appendf(out, "# HELP regmirror_upstream_http_bytes_total Response body bytes "
                                "received from upstreams, by registry.\n"
                                "# TYPE regmirror_upstream_http_bytes_total counter\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        err |= rgm_buf_appendf(out, "regmirror_upstream_http_bytes_total{registry=\"%s\"} %llu\n",
                               up->cfg->registries[i].name, (unsigned long long)up->regs[i].bytes);
    err |= rgm_buf_appendf(out, "# HELP regmirror_upstream_ratelimit_remaining Pulls left in the "
                                "upstream's rate-limit window (RateLimit-Remaining), where seen.\n"
                                "# TYPE regmirror_upstream_ratelimit_remaining gauge\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        if (up->regs[i].rl_remaining >= 0)
            err |= rgm_buf_appendf(
                out, "regmirror_upstream_ratelimit_remaining{registry=\"%s\"} %lld\n",
                up->cfg->registries[i].name, (long long)up->regs[i].rl_remaining);
    err |=
        rgm_buf_appendf(out, "# HELP regmirror_upstream_ratelimit_limit The upstream's rate-limit "
                             "window size (RateLimit-Limit), where seen.\n"
                             "# TYPE regmirror_upstream_ratelimit_limit gauge\n");
    for (i = 0; i < up->cfg->registries_len; i++)
        if (up->regs[i].rl_limit >= 0)
            err |=
                rgm_buf_appendf(out, "regmirror_upstream_ratelimit_limit{registry=\"%s\"} %lld\n",
                                up->cfg->registries[i].name, (long long)up->regs[i].rl_limit);
    err |= per_registry(up, out, "regmirror_upstream_ratelimit_reserve", "gauge",
                        "1 while RateLimit-Remaining is below ratelimit_reserve (prewarm is "
                        "refused), else 0.",
                        offsetof(struct regstate, is_in_reserve));
    err |= per_registry(up, out, "regmirror_upstream_pulls_total", "counter",
                        "Manifest GETs the upstream answered 2xx (what Docker Hub counts as "
                        "pulls).",
                        offsetof(struct regstate, pulls));
    err |= per_registry(up, out, "regmirror_upstream_pulls_avoided_total", "counter",
                        "Tag GETs answered from cache after a HEAD named a digest already here "
                        "(resolve by digest first).",
                        offsetof(struct regstate, pulls_avoided));
    err |= rgm_identity_metrics(up->id, out);
    return err < 0 ? UV_ENOBUFS : 0;
}

/* ---- fetch slots ---- */

void rgm_upstream_slot_acquire(rgm_upstream_t *up, rgm_slot_wait_t *w)
{
    struct regstate *rs = regstate(up, w->reg);
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
    struct regstate *rs = regstate(up, reg);
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
        struct regstate *wrs = regstate(up, w->reg);
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
