/* Registry auth helpers: WWW-Authenticate parsing (RFC 7235), token responses (docker token
 * spec, OAuth2), Docker config.json credentials, Basic headers, keyed credential hashes, a
 * bounded TTL cache and scope strings. No networking and no logging of secrets; the upstream
 * module drives the token flows with these pieces. */
#include "registry/auth.h"

#include <time.h>

#include <uv.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "core/common.h"
#include "core/util.h"
#include "registry/reference.h"

/* ---- WWW-Authenticate ---- */

static char ascii_lower(char c)
{
    if (c >= 'A' && c <= 'Z')
        return (char)(c + ('a' - 'A'));
    return c;
}

static int is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* token68 also allows '/' (base64); its trailing '=' are handled by the caller. */
static int is_token68_char(unsigned char c)
{
    return is_tchar(c) || c == '/';
}

static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/* One parameter value, decoded into val (vallen bytes). *p is at the opening quote or the
 * first token character; on return it is after the value. A value that does not fit sets
 * *is_long and is skipped, so that the caller decides whether it matters. */
static int scan_value(const char **p, char *val, size_t vallen, int *is_long)
{
    const char *s = *p;
    size_t n = 0;
    unsigned char c;

    *is_long = 0;
    if (*s != '"') {
        while (is_tchar((unsigned char)*s)) {
            if (n + 1 < vallen)
                val[n++] = *s;
            else
                *is_long = 1;
            s++;
        }
        goto out;
    }
    for (s++;; s++) {
        c = (unsigned char)*s;
        if (c == '"')
            break;
        if (c == '\\') {
            s++;
            c = (unsigned char)*s;
        }
        if (c == '\0' || (c < 0x20 && c != '\t') || c == 0x7f)
            return UV_EINVAL; /* unterminated, or a control character */
        if (n + 1 < vallen)
            val[n++] = (char)c;
        else
            *is_long = 1;
    }
    s++;
out:
    val[n] = '\0';
    *p = s;
    return 0;
}

static int store_param(rgm_auth_challenge_t *ch, const char *name, size_t name_len, const char *val,
                       int is_long)
{
    static const struct {
        const char *name;
        size_t off;
        size_t size;
    } params[] = {
        {"realm", offsetof(rgm_auth_challenge_t, realm), RGM_AUTH_REALM_MAX},
        {"service", offsetof(rgm_auth_challenge_t, service), RGM_AUTH_SERVICE_MAX},
        {"scope", offsetof(rgm_auth_challenge_t, scope), RGM_AUTH_SCOPE_MAX},
        {"error", offsetof(rgm_auth_challenge_t, error), RGM_AUTH_ERROR_MAX},
    };
    char lname[16];
    size_t i;
    size_t val_len = strlen(val);

    if (name_len >= sizeof(lname))
        return 0; /* not one of ours */
    for (i = 0; i < name_len; i++)
        lname[i] = ascii_lower(name[i]);
    lname[name_len] = '\0';
    for (i = 0; i < RGM_ARRAY_SIZE(params); i++) {
        if (strcmp(lname, params[i].name) != 0)
            continue;
        if (is_long || val_len >= params[i].size)
            return UV_ENOBUFS;
        memcpy((char *)ch + params[i].off, val, val_len + 1);
        return 0;
    }
    return 0;
}

static rgm_auth_scheme_t scheme_of(const char *s, size_t len)
{
    if (len == 6 && strncasecmp(s, "bearer", 6) == 0)
        return RGM_AUTH_SCHEME_BEARER;
    if (len == 5 && strncasecmp(s, "basic", 5) == 0)
        return RGM_AUTH_SCHEME_BASIC;
    return RGM_AUTH_SCHEME_OTHER;
}

/* After a parameter or a token68: only whitespace, then ',' or the end. */
static int expect_list_sep(const char **p)
{
    *p = skip_ows(*p);
    return (**p == ',' || **p == '\0') ? 0 : UV_EINVAL;
}

int rgm_auth_parse_challenges(const char *value, rgm_auth_challenge_t *out, size_t max)
{
    rgm_auth_challenge_t scratch; /* challenges past max are parsed here and dropped */
    rgm_auth_challenge_t *cur = NULL;
    char val[RGM_AUTH_SCOPE_MAX];
    const char *p = value;
    const char *tok;
    const char *q;
    size_t tok_len;
    size_t count = 0;
    int after_scheme = 0;
    int is_long;
    int err;

    if (!value)
        return UV_EINVAL;
    for (;;) {
        p = skip_ows(p);
        if (*p == '\0')
            break;
        if (*p == ',') {
            p++;
            after_scheme = 0;
            continue;
        }
        tok = p;
        while (after_scheme ? is_token68_char((unsigned char)*p) : is_tchar((unsigned char)*p))
            p++;
        tok_len = (size_t)(p - tok);
        if (tok_len == 0)
            return UV_EINVAL;
        q = skip_ows(p);

        if (cur && *q == '=') {
            q = skip_ows(q + 1);
            if (*q == '"' || is_tchar((unsigned char)*q)) {
                err = scan_value(&q, val, sizeof(val), &is_long);
                if (err == 0)
                    err = store_param(cur, tok, tok_len, val, is_long);
            } else if (after_scheme && (*q == '=' || *q == ',' || *q == '\0')) {
                while (*q == '=') /* token68 with padding, e.g. "Negotiate YWJj==" */
                    q++;
                err = 0;
            } else {
                err = UV_EINVAL;
            }
            p = q;
            if (err == 0)
                err = expect_list_sep(&p);
            if (err < 0)
                return err;
            after_scheme = 0;
            continue;
        }
        if (after_scheme) { /* token68 without padding */
            p = q;
            err = expect_list_sep(&p);
            if (err < 0)
                return err;
            after_scheme = 0;
            continue;
        }

        /* A new challenge starts with its scheme. */
        cur = count < max ? &out[count] : &scratch;
        memset(cur, 0, sizeof(*cur));
        cur->scheme = scheme_of(tok, tok_len);
        count++;
        if (*p == ' ' || *p == '\t')
            after_scheme = 1;
        else if (*p != ',' && *p != '\0')
            return UV_EINVAL;
    }
    return (int)(count < max ? count : max);
}

/* ---- token responses ---- */

static int parse_fixed_digits(const char **p, int n, int *out)
{
    int v = 0;
    int i;

    for (i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return UV_EINVAL;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect_char(const char **p, const char *allowed)
{
    if (**p == '\0' || !strchr(allowed, **p))
        return UV_EINVAL;
    (*p)++;
    return 0;
}

/* RFC 3339 date-time ("2024-01-31T12:00:00.5Z", "...+02:00") to ms since the epoch. */
static int parse_rfc3339(const char *s, uint64_t *out_ms)
{
    struct tm tm;
    int year, mon, day, hour, min, sec, oh = 0, om = 0;
    int sign = 0;
    int64_t t;
    int64_t ms = 0;
    int64_t scale = 100;

    memset(&tm, 0, sizeof(tm));
    if (parse_fixed_digits(&s, 4, &year) < 0 || expect_char(&s, "-") < 0 ||
        parse_fixed_digits(&s, 2, &mon) < 0 || expect_char(&s, "-") < 0 ||
        parse_fixed_digits(&s, 2, &day) < 0 || expect_char(&s, "Tt ") < 0 ||
        parse_fixed_digits(&s, 2, &hour) < 0 || expect_char(&s, ":") < 0 ||
        parse_fixed_digits(&s, 2, &min) < 0 || expect_char(&s, ":") < 0 ||
        parse_fixed_digits(&s, 2, &sec) < 0)
        return UV_EINVAL;
    if (year < 1970 || mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 ||
        sec > 60)
        return UV_EINVAL;
    if (*s == '.') {
        s++;
        if (*s < '0' || *s > '9')
            return UV_EINVAL;
        for (; *s >= '0' && *s <= '9'; s++) {
            ms += (*s - '0') * scale;
            scale /= 10;
        }
    }
    if (*s == 'Z' || *s == 'z') {
        s++;
    } else if (*s == '+' || *s == '-') {
        sign = *s == '+' ? 1 : -1;
        s++;
        if (parse_fixed_digits(&s, 2, &oh) < 0 || expect_char(&s, ":") < 0 ||
            parse_fixed_digits(&s, 2, &om) < 0 || oh > 23 || om > 59)
            return UV_EINVAL;
    } else {
        return UV_EINVAL;
    }
    if (*s != '\0')
        return UV_EINVAL;
    tm.tm_year = year - 1900;
    tm.tm_mon = mon - 1;
    tm.tm_mday = day;
    tm.tm_hour = hour;
    tm.tm_min = min;
    tm.tm_sec = sec;
    t = (int64_t)timegm(&tm);
    t -= (int64_t)sign * (oh * 3600 + om * 60);
    if (t < 0)
        return UV_EINVAL;
    *out_ms = (uint64_t)t * 1000 + (uint64_t)ms;
    return 0;
}

static const char *token_string(json_t *root)
{
    const char *s = json_string_value(json_object_get(root, "token"));

    if (s && s[0] != '\0')
        return s;
    s = json_string_value(json_object_get(root, "access_token"));
    return (s && s[0] != '\0') ? s : NULL;
}

/* Seconds of validity: at least 60 (the docker token spec's default and minimum), at most a
 * year so that the arithmetic below cannot overflow. */
static uint64_t token_lifetime_s(json_t *root)
{
    json_t *v = json_object_get(root, "expires_in");
    double d = -1;

    if (json_is_integer(v))
        d = (double)json_integer_value(v);
    else if (json_is_real(v))
        d = json_real_value(v);
    if (!(d >= 60))
        return 60;
    if (d > 365.0 * 86400)
        return (uint64_t)365 * 86400;
    return (uint64_t)d;
}

int rgm_auth_parse_token_response(const char *json, size_t len, uint64_t now_ms,
                                  rgm_auth_token_t *tok)
{
    json_error_t jerr;
    json_t *root = NULL;
    const char *s;
    const char *issued;
    const unsigned char *c;
    uint64_t life_ms;
    uint64_t issued_ms;
    int err = UV_EINVAL;

    memset(tok, 0, sizeof(*tok));
    root = json_loadb(json, len, 0, &jerr);
    if (!json_is_object(root))
        goto out;
    s = token_string(root);
    if (!s)
        goto out;
    for (c = (const unsigned char *)s; *c != '\0'; c++) {
        if (*c <= 0x20 || *c >= 0x7f)
            goto out; /* it goes into an Authorization header */
    }
    if ((size_t)(c - (const unsigned char *)s) > RGM_AUTH_TOKEN_MAX) {
        err = UV_E2BIG;
        goto out;
    }
    life_ms = token_lifetime_s(root) * 1000;
    tok->expires_ms = now_ms + life_ms;
    issued = json_string_value(json_object_get(root, "issued_at"));
    if (issued && parse_rfc3339(issued, &issued_ms) == 0 && issued_ms + life_ms < tok->expires_ms)
        tok->expires_ms = issued_ms + life_ms;
    tok->token = rgm_strdup(s);
    err = 0;
out:
    json_decref(root);
    return err;
}

void rgm_auth_token_clear(rgm_auth_token_t *tok)
{
    if (tok->token)
        OPENSSL_cleanse(tok->token, strlen(tok->token));
    RGM_FREE(tok->token);
    tok->expires_ms = 0;
}

/* ---- Docker config.json credentials ---- */

#define AUTH_B64_MAX 8192

/* Host of an "auths" key ("https://index.docker.io/v1/" -> "docker.io"), lowercase. */
static int key_host(const char *key, char *out, size_t outlen)
{
    const char *p = key;
    size_t n;
    size_t i;

    if (strncasecmp(p, "https://", 8) == 0)
        p += 8;
    else if (strncasecmp(p, "http://", 7) == 0)
        p += 7;
    n = strcspn(p, "/");
    if (n == 0 || n >= outlen)
        return UV_EINVAL;
    for (i = 0; i < n; i++)
        out[i] = ascii_lower(p[i]);
    out[n] = '\0';
    p = rgm_ref_normalize_registry(out);
    if (p != out)
        memcpy(out, p, strlen(p) + 1); /* "docker.io" is shorter than every alias */
    return 0;
}

static int entry_creds(json_t *entry, char **user, char **pass)
{
    const char *auth = json_string_value(json_object_get(entry, "auth"));
    const char *u = json_string_value(json_object_get(entry, "username"));
    const char *pw = json_string_value(json_object_get(entry, "password"));
    unsigned char *dec = NULL;
    char *colon;
    size_t auth_len;
    int n;
    int err = UV_EINVAL;

    if (!auth || auth[0] == '\0') {
        if (!u || u[0] == '\0' || !pw)
            return UV_ENOENT;
        *user = rgm_strdup(u);
        *pass = rgm_strdup(pw);
        return 0;
    }
    auth_len = strlen(auth);
    if (auth_len > AUTH_B64_MAX)
        return UV_EINVAL;
    dec = rgm_malloc(auth_len + 1);
    n = rgm_b64_decode(auth, auth_len, dec, auth_len + 1);
    if (n < 0 || memchr(dec, '\0', (size_t)n))
        goto out;
    dec[n] = '\0';
    colon = strchr((char *)dec, ':');
    if (!colon || colon == (char *)dec)
        goto out;
    *colon = '\0';
    *user = rgm_strdup((char *)dec);
    *pass = rgm_strdup(colon + 1);
    err = 0;
out:
    OPENSSL_cleanse(dec, auth_len + 1);
    free(dec);
    return err;
}

static int lookup_auths(json_t *root, const char *registry, char **user, char **pass)
{
    json_t *auths = json_object_get(root, "auths");
    json_t *entry;
    const char *key;
    char want[RGM_REF_HOST_MAX + 1];
    char host[RGM_REF_HOST_MAX + 1];
    int pass_no;
    int err;

    if (!json_is_object(auths) || key_host(registry, want, sizeof(want)) < 0)
        return UV_ENOENT;
    /* Pass 0: the key exactly as the caller wrote the registry; pass 1: by host. */
    for (pass_no = 0; pass_no < 2; pass_no++) {
        json_object_foreach(auths, key, entry)
        {
            if (!json_is_object(entry))
                continue;
            if (pass_no == 0 && strcmp(key, registry) != 0)
                continue;
            if (pass_no == 1 && (key_host(key, host, sizeof(host)) < 0 || strcmp(host, want) != 0))
                continue;
            err = entry_creds(entry, user, pass);
            if (err != UV_ENOENT)
                return err;
        }
    }
    return UV_ENOENT;
}

int rgm_auth_docker_config_lookup_json(const char *json, size_t len, const char *registry,
                                       char **user, char **pass)
{
    json_error_t jerr;
    json_t *root;
    int err;

    *user = NULL;
    *pass = NULL;
    root = json_loadb(json, len, 0, &jerr);
    if (!json_is_object(root)) {
        json_decref(root);
        return UV_EINVAL;
    }
    err = lookup_auths(root, registry, user, pass);
    json_decref(root);
    return err;
}

int rgm_auth_docker_config_lookup(const char *path, const char *registry, char **user, char **pass)
{
    json_error_t jerr;
    json_t *root;
    int err;

    *user = NULL;
    *pass = NULL;
    root = json_load_file(path, 0, &jerr);
    if (!root)
        return json_error_code(&jerr) == json_error_cannot_open_file ? UV_EIO : UV_EINVAL;
    if (!json_is_object(root)) {
        json_decref(root);
        return UV_EINVAL;
    }
    err = lookup_auths(root, registry, user, pass);
    json_decref(root);
    return err;
}

const char *rgm_auth_helper_server_url(const char *registry)
{
    const char *n = rgm_ref_normalize_registry(registry);

    return strcmp(n, "docker.io") == 0 ? "https://index.docker.io/v1/" : registry;
}

int rgm_auth_docker_config_helper(const char *path, const char *registry, char **helper)
{
    json_error_t jerr;
    json_t *root;
    const char *h;
    const char *key = rgm_auth_helper_server_url(registry);

    *helper = NULL;
    root = json_load_file(path, 0, &jerr);
    if (!root)
        return json_error_code(&jerr) == json_error_cannot_open_file ? UV_EIO : UV_EINVAL;
    /* docker/cli: credHelpers by the exact key, else credsStore for every registry. */
    h = json_string_value(json_object_get(json_object_get(root, "credHelpers"), key));
    if (!h || !h[0])
        h = json_string_value(json_object_get(root, "credsStore"));
    if (h && h[0] && !strchr(h, '/'))
        *helper = rgm_strdup(h);
    json_decref(root);
    return *helper ? 1 : 0;
}

/* ---- headers, hashes, scopes ---- */

static int has_ctl(const char *s)
{
    for (; *s != '\0'; s++) {
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    }
    return 0;
}

int rgm_auth_basic_header(const char *user, const char *pass, char *out, size_t outlen)
{
    size_t ulen = strlen(user);
    size_t plen = strlen(pass);
    size_t raw_len = ulen + 1 + plen;
    char *raw;
    int n;

    if (strchr(user, ':') || has_ctl(user) || has_ctl(pass))
        return UV_EINVAL;
    if (outlen < 6 || raw_len > (outlen - 6) / 4 * 3)
        return UV_ENOBUFS;
    raw = rgm_malloc(raw_len + 1);
    (void)snprintf(raw, raw_len + 1, "%s:%s", user, pass);
    memcpy(out, "Basic ", 6);
    n = rgm_b64_encode(raw, raw_len, out + 6, outlen - 6);
    OPENSSL_cleanse(raw, raw_len + 1);
    free(raw);
    if (n < 0) {
        out[0] = '\0';
        return UV_ENOBUFS;
    }
    return 0;
}

void rgm_auth_cred_hash(const char *authorization, char out[65])
{
    /* One loop thread: the lazy initialisation needs no lock. */
    static unsigned char key[32];
    static int has_key;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    const char *s = authorization ? authorization : "";

    if (!has_key) {
        if (RAND_bytes(key, sizeof(key)) != 1) {
            (void)fprintf(stderr, "FATAL: RAND_bytes failed\n");
            abort();
        }
        has_key = 1;
    }
    if (!HMAC(EVP_sha256(), key, (int)sizeof(key), (const unsigned char *)s, strlen(s), md,
              &md_len) ||
        md_len != 32) {
        (void)fprintf(stderr, "FATAL: HMAC-SHA256 failed\n");
        abort();
    }
    rgm_hex(md, 32, out);
}

int rgm_auth_pull_scope(const char *repo, char *out, size_t outlen)
{
    int n;

    if (!rgm_ref_valid_name(repo))
        return UV_EINVAL;
    n = snprintf(out, outlen, "repository:%s:pull", repo);
    if (n < 0 || (size_t)n >= outlen)
        return UV_ENOBUFS;
    return 0;
}

static int append_param(char *out, size_t outlen, size_t *off, const char *sep, const char *name,
                        const char *val)
{
    int n;

    n = snprintf(out + *off, outlen - *off, "%s%s=", sep, name);
    if (n < 0 || (size_t)n >= outlen - *off)
        return UV_ENOBUFS;
    *off += (size_t)n;
    if (rgm_url_encode(val, out + *off, outlen - *off) < 0)
        return UV_ENOBUFS;
    *off += strlen(out + *off);
    return 0;
}

int rgm_auth_token_url(const rgm_auth_challenge_t *ch, const char *scope, char *out, size_t outlen)
{
    rgm_url_t url;
    size_t off;
    const char *sep;
    int err = 0;

    if (outlen == 0)
        return UV_ENOBUFS;
    out[0] = '\0';
    if (!scope)
        scope = ch->scope;
    if (rgm_url_parse(ch->realm, &url) < 0 || strchr(ch->realm, '#'))
        return UV_EINVAL;
    off = strlen(ch->realm);
    if (off >= outlen)
        return UV_ENOBUFS;
    memcpy(out, ch->realm, off + 1);
    sep = strchr(ch->realm, '?') ? "&" : "?";
    if (ch->service[0] != '\0') {
        err = append_param(out, outlen, &off, sep, "service", ch->service);
        sep = "&";
    }
    if (err == 0 && scope[0] != '\0')
        err = append_param(out, outlen, &off, sep, "scope", scope);
    if (err < 0)
        out[0] = '\0';
    return err;
}

/* "&name=<val percent-encoded>" ("name=..." first) onto out. */
static int form_param(rgm_buf_t *out, const char *name, const char *val)
{
    size_t cap = strlen(val) * 3 + 1;
    char *enc = rgm_malloc(cap);
    int err;

    err = rgm_url_encode(val, enc, cap);
    if (err == 0)
        err = rgm_buf_appendf(out, "%s%s=%s", out->len > 0 ? "&" : "", name, enc);
    OPENSSL_cleanse(enc, cap); /* the refresh token passes through here */
    free(enc);
    return err;
}

int rgm_auth_token_form(const rgm_auth_challenge_t *ch, const char *scope,
                        const char *refresh_token, rgm_buf_t *out)
{
    int err;

    if (out->data)
        OPENSSL_cleanse(out->data, out->len);
    rgm_buf_reset(out);
    if (refresh_token[0] == '\0')
        return UV_EINVAL;
    if (!scope)
        scope = ch->scope;
    err = form_param(out, "grant_type", "refresh_token");
    if (err == 0)
        err = form_param(out, "refresh_token", refresh_token);
    if (err == 0 && ch->service[0] != '\0')
        err = form_param(out, "service", ch->service);
    if (err == 0 && scope[0] != '\0')
        err = form_param(out, "scope", scope);
    if (err == 0)
        err = form_param(out, "client_id", RGM_AUTH_CLIENT_ID);
    if (err < 0) {
        if (out->data)
            OPENSSL_cleanse(out->data, out->len);
        rgm_buf_reset(out);
    }
    return err;
}

/* ---- TTL cache ---- */

/* Entries are in a hash table (chained) and in a list by write order, oldest first, which is
 * the eviction order once the cache is full. */
struct cache_entry {
    struct cache_entry *hnext;
    struct cache_entry *prev;
    struct cache_entry *next;
    uint64_t expires_ms;
    uint32_t hash;
    char *value;
    char key[];
};

struct rgm_auth_cache {
    struct cache_entry **buckets;
    size_t nbuckets; /* power of two */
    size_t count;
    size_t max;
    struct cache_entry *oldest;
    struct cache_entry *newest;
};

static uint32_t hash_key(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 16777619u;
    }
    return h;
}

rgm_auth_cache_t *rgm_auth_cache_new(size_t max_entries)
{
    rgm_auth_cache_t *c = rgm_calloc(1, sizeof(*c));

    c->max = max_entries ? max_entries : RGM_AUTH_CACHE_DEFAULT_MAX;
    c->nbuckets = 16;
    while (c->nbuckets < c->max && c->nbuckets < ((size_t)1 << 20))
        c->nbuckets <<= 1;
    c->buckets = rgm_calloc(c->nbuckets, sizeof(struct cache_entry *));
    return c;
}

static void list_unlink(rgm_auth_cache_t *c, struct cache_entry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        c->oldest = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        c->newest = e->prev;
    e->prev = NULL;
    e->next = NULL;
}

static void list_append(rgm_auth_cache_t *c, struct cache_entry *e)
{
    e->prev = c->newest;
    e->next = NULL;
    if (c->newest)
        c->newest->next = e;
    else
        c->oldest = e;
    c->newest = e;
}

static void free_value(char *v)
{
    if (v)
        OPENSSL_cleanse(v, strlen(v)); /* values may be tokens */
    free(v);
}

static struct cache_entry **find_slot(rgm_auth_cache_t *c, const char *key, uint32_t h)
{
    struct cache_entry **pp = &c->buckets[h & (c->nbuckets - 1)];

    while (*pp && ((*pp)->hash != h || strcmp((*pp)->key, key) != 0))
        pp = &(*pp)->hnext;
    return pp;
}

static void remove_entry(rgm_auth_cache_t *c, struct cache_entry *e)
{
    struct cache_entry **pp = find_slot(c, e->key, e->hash);

    RGM_BUG_ON(*pp != e);
    *pp = e->hnext;
    list_unlink(c, e);
    free_value(e->value);
    free(e);
    c->count--;
}

void rgm_auth_cache_free(rgm_auth_cache_t *c)
{
    struct cache_entry *e;
    struct cache_entry *next;

    if (!c)
        return;
    for (e = c->oldest; e; e = next) {
        next = e->next;
        free_value(e->value);
        free(e);
    }
    free(c->buckets);
    free(c);
}

void rgm_auth_cache_put(rgm_auth_cache_t *c, const char *key, const char *value,
                        uint64_t expires_ms)
{
    uint32_t h = hash_key(key);
    struct cache_entry **pp = find_slot(c, key, h);
    struct cache_entry *e = *pp;

    if (e) {
        free_value(e->value);
        list_unlink(c, e);
    } else {
        size_t klen;

        while (c->count >= c->max && c->oldest)
            remove_entry(c, c->oldest);
        pp = find_slot(c, key, h); /* an eviction may have changed the chain */
        klen = strlen(key);
        e = rgm_calloc(1, sizeof(*e) + klen + 1);
        memcpy(e->key, key, klen + 1);
        e->hash = h;
        *pp = e;
        c->count++;
    }
    e->value = rgm_strdup(value);
    e->expires_ms = expires_ms;
    list_append(c, e);
}

const char *rgm_auth_cache_get(rgm_auth_cache_t *c, const char *key, uint64_t now_ms)
{
    struct cache_entry *e = *find_slot(c, key, hash_key(key));

    if (!e)
        return NULL;
    if (e->expires_ms <= now_ms) {
        remove_entry(c, e);
        return NULL;
    }
    return e->value;
}

int rgm_auth_cache_del(rgm_auth_cache_t *c, const char *key)
{
    struct cache_entry *e = *find_slot(c, key, hash_key(key));

    if (!e)
        return 0;
    remove_entry(c, e);
    return 1;
}

size_t rgm_auth_cache_prune(rgm_auth_cache_t *c, uint64_t now_ms)
{
    struct cache_entry *e;
    struct cache_entry *next;
    size_t n = 0;

    for (e = c->oldest; e; e = next) {
        next = e->next;
        if (e->expires_ms <= now_ms) {
            remove_entry(c, e);
            n++;
        }
    }
    return n;
}

size_t rgm_auth_cache_count(const rgm_auth_cache_t *c)
{
    return c->count;
}
