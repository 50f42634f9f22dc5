/* Upstream registry requests with the auth dance: first the mirror's own identity (a cached
 * token, anonymous, or configured credentials after a challenge), then the client's
 * Authorization when the mirror's own is refused; a cluster peer first for a fill. The token
 * requests, replica sets, what a registry told us about itself (budget, back-off, 404s), the
 * fetch slots and the metrics are the upstream-*.c files' (upstream-int.h). It does not cache
 * content (routes and cache do). */
#include <uv.h>

#include "core/common.h"
#include "core/buf.h"
#include "core/log.h"
#include "core/util.h"
#include "registry/auth.h"
#include "registry/identity.h"
#include "registry/upstream.h"
#include "registry/upstream-int.h"
#include "cluster/peers.h"

#define TOKEN_BODY_MAX (64 * 1024)

/* ---- helpers ---- */

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
        rgm_upstream_replicas_start(up, &cfg->registries[i], &up->regs[i]);
    return up;
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

static int send_token(rgm_upcall_t *c, const rgm_auth_challenge_t *ch)
{
    rgm_tls_opts_t tls = tls_of(c->reg);
    char ours[1024];
    int err;

    if (rgm_auth_pull_scope(c->repo, ours, sizeof(ours)) < 0)
        return UV_EINVAL;
    /* The realm is another origin: never the client's credentials, only the mirror's own. */
    c->req = rgm_upstream_token_req_new(c, ch, ch->scope[0] ? ch->scope : ours, &tls);
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
        rgm_upstream_note_budget(c, r, status);
    if (c->is_token_req)
        return 0;
    c->status = status;
    if (!c->using_client)
        c->own_status = status;
    rgm_upstream_note_missing(c, status);
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
    char key[1024];
    char bearer[8192];
    int status = c->status;

    if (err == UV_EPERM) {
        finish(c, err); /* the realm's address is refused: 403, not a challenge */
        return;
    }
    scope_key(c, "token", key, sizeof(key));
    if (err == 0 && status == 200 && rgm_upstream_token_take(c, key, bearer, sizeof(bearer)) == 0) {
        err = send_main(c, bearer);
    } else if (err == 0 && (status == 401 || (status == 400 && c->own_refresh)) &&
               c->is_own_cached && !c->tried_fresh) {
        /* Kept helper or plugin credentials refused by the realm (an OAuth2 server answers a
         * refresh token it does not take with 400 invalid_grant): ask it again, once. */
        c->tried_fresh = 1;
        c->has_own = 0;
        c->status = 401;
        rgm_identity_forget(c->up->id, c->reg, c->repo);
        err = with_own(c, STEP_TOKEN);
    } else {
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

static void on_req_done(rgm_upreq_t *r, int err, void *ud)
{
    rgm_upcall_t *c = ud;
    int is_token = c->is_token_req;
    int st = rgm_upreq_status(r);
    int serr;

    if (rgm_upstream_replica_next(c, st, err) && send_main(c, c->sent_auth) == 0)
        return;
    if (c->rs && !c->is_fill_req)
        rgm_upstream_count_outcome(c, st, err);
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

int rgm_upcall_start(rgm_upstream_t *up, const rgm_upcall_opts_t *o, const rgm_upcall_cbs_t *cbs,
                     void *ud, rgm_upcall_t **out)
{
    rgm_upcall_t *c;
    char url[URL_MAX];
    char ns[600];
    char key[1024];
    struct regstate *rs = rgm_upstream_regstate(up, o->reg);
    int n;
    int err;

    if (rs && rs->down_until > rgm_time_ms())
        return UV_ECONNREFUSED; /* backing off: see upstream-limits.c */
    if (rs && rs->limited_until > rgm_time_ms() && rgm_upstream_is_manifest_suffix(o->suffix))
        return UV_EAGAIN; /* the registry said stop (429): upstream-limits.c */
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
    c->rs = rgm_upstream_regstate(up, o->reg);
    c->repo = rgm_strdup(o->repo);
    c->method = rgm_strdup(o->method);
    c->tail = rgm_strdup(url);
    c->url = rgm_upstream_join_url(o->reg->endpoint ? o->reg->endpoint : "", url);
    c->accept = o->accept ? rgm_strdup(o->accept) : NULL;
    c->client_auth = o->client_auth && o->client_auth[0] ? rgm_strdup(o->client_auth) : NULL;
    c->range_from = o->range_from;
    c->is_manifest = rgm_upstream_is_manifest_suffix(o->suffix);
    if (rgm_upstream_missing_key(o, key, sizeof(key)) == 0)
        c->missing_key = rgm_strdup(key);
    c->started_ms = rgm_time_ms();
    c->cbs = *cbs;
    c->ud = ud;
    c->client_first = o->client_auth_first; /* a tier mirror relays the client's as they are */
    c->is_mirror_reg = o->reg->is_mirror;
    rgm_buf_init(&c->tokbody, TOKEN_BODY_MAX);
    if (c->rs && c->rs->peers) {
        c->key = rgm_upstream_replica_key(o);
        if (rgm_upstream_replica_pick(c) < 0 && !o->reg->endpoint) {
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
