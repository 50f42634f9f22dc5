/* regmirror prewarm, auth: the credentials of each registry (--creds, or --docker-config read
 * once per registry), and how to answer a 401 from the mirror: which challenge to take, the
 * Basic header, the token realm's URL, the Bearer value of a token answer. It sends nothing:
 * prewarm-run.c makes the requests and keeps the Authorization cache. */
#include "config.h"

#include "cmd/prewarm-int.h"

#include <stdio.h>
#include <string.h>

#include <uv.h>

#include "core/common.h"
#include "core/util.h"
#include "registry/auth.h"

#define MAX_CHALLENGES 4
#define TOKEN_URL_MAX  (RGM_AUTH_REALM_MAX + 3 * RGM_AUTH_SCOPE_MAX + 3 * RGM_AUTH_SERVICE_MAX + 32)

/* ---- credentials ---- */

/* Credentials for registry, borrowed (*user NULL when there are none). */
static void creds_for(struct pw *pw, const char *registry, const char **user, const char **pass)
{
    struct cred *c;
    size_t i;
    char *u = NULL, *p = NULL;

    *user = NULL;
    *pass = NULL;
    for (i = 0; i < pw->n_creds; i++) {
        if (strcmp(pw->creds[i].registry, registry) == 0) {
            *user = pw->creds[i].user;
            *pass = pw->creds[i].pass;
            return;
        }
    }
    if (pw->o->creds) {
        const char *colon = strchr(pw->o->creds, ':');
        u = rgm_strndup(pw->o->creds, (size_t)(colon - pw->o->creds));
        p = rgm_strdup(colon + 1);
    } else if (pw->o->docker_config) {
        /* A small synchronous file read, once per registry: the loop has nothing else that
         * is latency-sensitive (we are the only client). */
        int err = rgm_auth_docker_config_lookup(pw->o->docker_config, registry, &u, &p);
        if (err < 0 && err != UV_ENOENT)
            fprintf(stderr, "regmirror prewarm: %s: %s\n", pw->o->docker_config, uv_strerror(err));
        if (err < 0) {
            u = NULL;
            p = NULL;
        }
    }
    pw->creds = rgm_realloc(pw->creds, (pw->n_creds + 1) * sizeof(*pw->creds));
    c = &pw->creds[pw->n_creds++];
    c->registry = rgm_strdup(registry);
    c->user = u;
    c->pass = p;
    *user = u;
    *pass = p;
}

void rgm_prewarm_auth_free(struct pw *pw)
{
    size_t i;

    for (i = 0; i < pw->n_creds; i++) {
        free(pw->creds[i].registry);
        free(pw->creds[i].user);
        free(pw->creds[i].pass);
    }
    RGM_FREE(pw->creds);
    pw->n_creds = 0;
}

/* ---- challenges and tokens ---- */

void rgm_prewarm_auth_key(const char *registry, const char *repo, char *out, size_t len)
{
    (void)snprintf(out, len, "a|%s|%s", registry, repo);
}

/* The token realm's URL of a Bearer challenge, malloc'd into *url. 0 or <0. */
static int token_url(const rgm_auth_challenge_t *ch, const char *repo, char **url)
{
    char scope[RGM_AUTH_SCOPE_MAX];

    *url = rgm_malloc(TOKEN_URL_MAX);
    scope[0] = '\0';
    if (ch->scope[0] == '\0' && rgm_auth_pull_scope(repo, scope, sizeof(scope)) < 0)
        scope[0] = '\0';
    if (rgm_auth_token_url(ch, scope[0] ? scope : NULL, *url, TOKEN_URL_MAX) < 0) {
        RGM_FREE(*url);
        return UV_EINVAL;
    }
    return 0;
}

int rgm_prewarm_auth_answer(struct pw *pw, const char *registry, const char *repo, const char *www,
                            char *basic, size_t basic_len, char **token_url_out, char *err,
                            size_t err_len)
{
    rgm_auth_challenge_t *ch = NULL, *pick = NULL;
    const char *user, *pass;
    int n, i, rc = UV_EACCES;

    *token_url_out = NULL;
    basic[0] = '\0';
    if (!www) {
        (void)snprintf(err, err_len, "unauthorized (no challenge)");
        return UV_EACCES;
    }
    ch = rgm_calloc(MAX_CHALLENGES, sizeof(*ch));
    n = rgm_auth_parse_challenges(www, ch, MAX_CHALLENGES);
    for (i = 0; i < n && !pick; i++)
        if (ch[i].scheme == RGM_AUTH_SCHEME_BEARER)
            pick = &ch[i];
    for (i = 0; i < n && !pick; i++)
        if (ch[i].scheme == RGM_AUTH_SCHEME_BASIC)
            pick = &ch[i];
    if (!pick) {
        (void)snprintf(err, err_len, "unauthorized (unsupported challenge)");
        goto out;
    }
    creds_for(pw, registry, &user, &pass);
    if (user && rgm_auth_basic_header(user, pass, basic, basic_len) < 0) {
        basic[0] = '\0';
        (void)snprintf(err, err_len, "unusable credentials for %s", registry);
        goto out;
    }
    if (pick->scheme == RGM_AUTH_SCHEME_BASIC) {
        if (!user) {
            (void)snprintf(err, err_len,
                           "unauthorized: %s wants credentials (--creds or --docker-config)",
                           registry);
            goto out;
        }
        rc = RGM_PREWARM_AUTH_BASIC;
        goto out;
    }
    if (token_url(pick, repo, token_url_out) < 0) {
        (void)snprintf(err, err_len, "unauthorized (bad token realm)");
        goto out;
    }
    rc = RGM_PREWARM_AUTH_TOKEN;
out:
    free(ch);
    return rc;
}

int rgm_prewarm_auth_bearer(const char *body, size_t len, char **value, uint64_t *expires_ms)
{
    rgm_auth_token_t tok = {0};
    size_t n;
    int err;

    *value = NULL;
    err = rgm_auth_parse_token_response(body ? body : "", len, rgm_time_ms(), &tok);
    if (err < 0)
        return err;
    n = strlen(tok.token) + 8;
    *value = rgm_malloc(n);
    (void)snprintf(*value, n, "Bearer %s", tok.token);
    *expires_ms = tok.expires_ms;
    rgm_auth_token_clear(&tok);
    return 0;
}
