/* Fuzz target: WWW-Authenticate challenges, token responses and Docker config JSON — all
 * bytes an upstream (or a config file) controls. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>

#include "core/common.h"
#include "registry/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    rgm_auth_challenge_t ch[4];
    rgm_auth_token_t tok;
    char *user = NULL;
    char *pass = NULL;
    char url[4096];
    int n;
    int i;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    n = rgm_auth_parse_challenges(s, ch, 4);
    if (n > 4)
        abort();
    for (i = 0; i < n; i++)
        if (ch[i].scheme == RGM_AUTH_SCHEME_BEARER &&
            rgm_auth_token_url(&ch[i], "repository:a/b:pull", url, sizeof(url)) == 0 &&
            (strchr(url, '\r') || strchr(url, '\n')))
            abort(); /* a token URL never carries a line break */
    memset(&tok, 0, sizeof(tok));
    if (rgm_auth_parse_token_response(s, size, 1000, &tok) == 0) {
        if (!tok.token || strpbrk(tok.token, "\r\n "))
            abort(); /* the token goes into a header */
        rgm_auth_token_clear(&tok);
    }
    if (rgm_auth_docker_config_lookup_json(s, size, "docker.io", &user, &pass) == 0) {
        if (!user || !pass)
            abort();
    }
    free(user);
    free(pass);
    free(s);
    return 0;
}
