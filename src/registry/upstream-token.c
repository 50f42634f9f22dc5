/* Token requests: the request to a registry's realm for the mirror's own token (GET with its
 * Basic credentials, or the OAuth2 refresh_token POST for a helper's identity token), and its
 * answer, kept in up->tokens while it lives. When to ask, and what to do when refused, is
 * upstream.c's; the challenge and token formats are auth.c's. */
#include "registry/upstream-int.h"

#include <string.h>

#include "core/log.h"
#include "core/util.h"

#define TOKEN_MARGIN_MS 10000
#define TOKEN_FORM_MAX  (64 * 1024) /* the refresh_token grant's form (a helper's token: 16 KiB) */

/* A new request for the token: the OAuth2 POST of the refresh_token grant to the realm when the
 * mirror's identity is an identity token (as docker does), else GET <realm>?service=...&scope=...
 * with the mirror's Basic credentials, if any. NULL when the realm or the scope is unusable. */
rgm_upreq_t *rgm_upstream_token_req_new(rgm_upcall_t *c, const rgm_auth_challenge_t *ch,
                                        const char *scope, const rgm_tls_opts_t *tls)
{
    char url[URL_MAX];
    rgm_upreq_t *r;
    rgm_buf_t form;

    if (!c->own_refresh) {
        if (rgm_auth_token_url(ch, scope, url, sizeof(url)) < 0)
            return NULL;
        r = rgm_upreq_new(c->up->client, "GET", url, tls);
        if (r && c->own_auth)
            rgm_upreq_add_header(r, "Authorization", c->own_auth);
        return r;
    }
    rgm_buf_init(&form, TOKEN_FORM_MAX);
    r = NULL;
    if (rgm_auth_token_form(ch, scope, c->own_refresh, &form) == 0)
        r = rgm_upreq_new(c->up->client, "POST", ch->realm, tls);
    if (r)
        rgm_upreq_set_body(r, "application/x-www-form-urlencoded", form.data, form.len);
    if (form.data)
        explicit_bzero(form.data, form.len);
    rgm_buf_free(&form);
    return r;
}

int rgm_upstream_token_take(rgm_upcall_t *c, const char *key, char *bearer, size_t len)
{
    rgm_auth_token_t tok;
    uint64_t now = rgm_time_ms();
    int err = UV_EINVAL;

    memset(&tok, 0, sizeof(tok));
    if (rgm_auth_parse_token_response(c->tokbody.data, c->tokbody.len, now, &tok) == 0 &&
        snprintf(bearer, len, "Bearer %s", tok.token) < (int)len) {
        /* A private registry's anonymous token is not the mirror's to keep for others. */
        if (tok.expires_ms > now + TOKEN_MARGIN_MS && !c->no_own)
            rgm_auth_cache_put(c->up->tokens, key, bearer, tok.expires_ms - TOKEN_MARGIN_MS);
        err = 0;
    }
    rgm_auth_token_clear(&tok);
    return err;
}
