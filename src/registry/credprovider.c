/* kubelet credential provider plugins: the config (YAML via libyaml, JSON via jansson, both
 * into one jansson tree that is then checked), the kubelet's image globs, the response and
 * its cache, and jobs that run the matching providers in order for one image. The rules
 * follow the kubelet's pkg/credentialprovider (keyring URL matching) and its plugin package
 * (cache keys, durations, apiVersion check), read from their documentation and behaviour. */
#include "registry/credprovider.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/log.h"
#include "core/util.h"

#define IMAGE_MAX  2048
#define CACHE_MAX  1024 /* entries per provider */
#define YAML_DEPTH 32
#define FIELD_MAX  65536
#define CFG_API_V1 "kubelet.config.k8s.io/v1"
#define REQ_API_V1 "credentialprovider.kubelet.k8s.io/v1"
#define GLOBAL_KEY "global"

/* ---- globs: Go's filepath.Match on one host label ---- */

/* Match one character class at p (just after '['); *end gets the byte after ']'.
 * 1 match, 0 no match, -1 malformed. */
static int match_class(const char *p, char c, const char **end)
{
    int negate = 0;
    int matched = 0;
    int n = 0;
    char lo;
    char hi;

    if (*p == '^') {
        negate = 1;
        p++;
    }
    for (;;) {
        if (*p == ']' && n > 0)
            break;
        if (*p == '\0' || *p == '-' || *p == ']')
            return -1;
        if (*p == '\\')
            p++;
        if (*p == '\0')
            return -1;
        lo = *p++;
        hi = lo;
        if (*p == '-') {
            p++;
            if (*p == '\\')
                p++;
            if (*p == '\0' || *p == ']')
                return -1;
            hi = *p++;
        }
        if (lo <= c && c <= hi)
            matched = 1;
        n++;
    }
    *end = p + 1;
    return matched != negate;
}

/* Does pattern p (len plen) match the whole of s (len slen)? 1, 0, or -1 when malformed. */
static int match_label(const char *p, size_t plen, const char *s, size_t slen)
{
    char pat[256];
    char str[256];
    const char *pp;
    const char *star_p = NULL;
    const char *star_s = NULL;
    const char *sp;
    const char *end;
    int r;

    if (plen >= sizeof(pat) || slen >= sizeof(str))
        return 0;
    memcpy(pat, p, plen);
    pat[plen] = '\0';
    memcpy(str, s, slen);
    str[slen] = '\0';
    pp = pat;
    sp = str;
    /* Greedy with one backtrack point: '*' never matches '/', and labels have none. */
    for (;;) {
        if (*pp == '*') {
            while (*pp == '*')
                pp++;
            star_p = pp;
            star_s = sp;
            continue;
        }
        if (*sp == '\0') {
            if (*pp == '\0')
                return 1;
            goto backtrack;
        }
        if (*pp == '?') {
            pp++;
            sp++;
            continue;
        }
        if (*pp == '[') {
            r = match_class(pp + 1, *sp, &end);
            if (r < 0)
                return -1;
            if (r == 1) {
                pp = end;
                sp++;
                continue;
            }
            goto backtrack;
        }
        if (*pp == '\\') {
            pp++;
            if (*pp == '\0')
                return -1;
        }
        if (*pp != '\0' && *pp == *sp) {
            pp++;
            sp++;
            continue;
        }
backtrack:
        if (!star_p || *star_s == '\0')
            return 0;
        star_s++;
        pp = star_p;
        sp = star_s;
    }
}

/* Syntax check of one label pattern, as Go reports ErrBadPattern. */
static int label_ok(const char *p, size_t len)
{
    char pat[256];
    const char *q;
    const char *end;

    if (len >= sizeof(pat))
        return 0;
    memcpy(pat, p, len);
    pat[len] = '\0';
    for (q = pat; *q;) {
        if (*q == '[') {
            if (match_class(q + 1, 'a', &end) < 0)
                return 0;
            q = end;
        } else if (*q == '\\') {
            if (q[1] == '\0')
                return 0;
            q += 2;
        } else {
            q++;
        }
    }
    return 1;
}

/* Split a schemeless URL as Go's url.Parse("https://" + s) and net.SplitHostPort do:
 * host up to the first '/', '?' or '#'; the port after the last ':' when the host splits
 * cleanly (else no port); the path from the '/'. */
struct surl {
    const char *host;
    size_t host_len;
    const char *port;
    size_t port_len;
    const char *path;
};

static void split_url(const char *s, struct surl *u)
{
    size_t n = strcspn(s, "/?#");
    const char *colon;
    const char *c;
    int colons = 0;

    u->host = s;
    u->host_len = n;
    u->port = "";
    u->port_len = 0;
    u->path = s[n] == '/' ? s + n : "";
    if (n > 0 && s[0] == '[') {
        c = memchr(s, ']', n);
        if (c && c + 1 < s + n && c[1] == ':') {
            u->host = s + 1;
            u->host_len = (size_t)(c - s - 1);
            u->port = c + 2;
            u->port_len = (size_t)(s + n - c - 2);
        }
        return;
    }
    colon = NULL;
    for (c = s; c < s + n; c++) {
        if (*c == ':') {
            colons++;
            colon = c;
        }
    }
    if (colons == 1) {
        u->host_len = (size_t)(colon - s);
        u->port = colon + 1;
        u->port_len = (size_t)(s + n - colon - 1);
    }
}

static size_t count_labels(const char *h, size_t len)
{
    size_t n = 1;
    size_t i;

    for (i = 0; i < len; i++)
        if (h[i] == '.')
            n++;
    return n;
}

int rgm_credprovider_match(const char *glob, const char *image)
{
    struct surl g;
    struct surl t;
    const char *gp;
    const char *tp;
    const char *gdot;
    const char *tdot;
    size_t glen;
    size_t tlen;

    split_url(glob, &g);
    split_url(image, &t);
    if (g.port_len != t.port_len || memcmp(g.port, t.port, g.port_len) != 0)
        return 0;
    if (count_labels(g.host, g.host_len) != count_labels(t.host, t.host_len))
        return 0;
    if (strncmp(t.path, g.path, strlen(g.path)) != 0)
        return 0;
    gp = g.host;
    tp = t.host;
    for (;;) {
        gdot = memchr(gp, '.', (size_t)(g.host + g.host_len - gp));
        tdot = memchr(tp, '.', (size_t)(t.host + t.host_len - tp));
        glen = gdot ? (size_t)(gdot - gp) : (size_t)(g.host + g.host_len - gp);
        tlen = tdot ? (size_t)(tdot - tp) : (size_t)(t.host + t.host_len - tp);
        if (match_label(gp, glen, tp, tlen) != 1)
            return 0;
        if (!gdot || !tdot)
            return 1;
        gp = gdot + 1;
        tp = tdot + 1;
    }
}

int rgm_credprovider_valid_glob(const char *glob)
{
    struct surl g;
    const char *p;
    const char *dot;
    size_t len;

    if (!glob[0] || strlen(glob) >= IMAGE_MAX)
        return 0;
    for (p = glob; *p; p++)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f)
            return 0;
    split_url(glob, &g);
    if (g.host_len == 0)
        return 0;
    for (p = g.host;; p = dot + 1) {
        dot = memchr(p, '.', (size_t)(g.host + g.host_len - p));
        len = dot ? (size_t)(dot - p) : (size_t)(g.host + g.host_len - p);
        if (!label_ok(p, len))
            return 0;
        if (!dot)
            return 1;
    }
}

/* ---- Go durations ---- */

static int unit_ns(const char **p, uint64_t *ns)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {
        {"ns", 1},       {"us", 1000},         {"\xc2\xb5s", 1000},   {"\xce\xbcs", 1000},
        {"ms", 1000000}, {"s", 1000000000ULL}, {"m", 60000000000ULL}, {"h", 3600000000000ULL}};
    size_t i;
    size_t n;
    size_t best = 0;
    int found = -1;

    for (i = 0; i < RGM_ARRAY_SIZE(units); i++) {
        n = strlen(units[i].name);
        if (strncmp(*p, units[i].name, n) == 0 && n > best) {
            best = n;
            found = (int)i;
        }
    }
    if (found < 0)
        return UV_EINVAL;
    *p += best;
    *ns = units[found].ns;
    return 0;
}

int rgm_credprovider_parse_duration(const char *s, uint64_t *out_ms)
{
    const char *p = s;
    long double total = 0;
    long double v;
    long double scale;
    uint64_t ns;
    int digits;

    if (*p == '+')
        p++;
    if (*p == '-' || *p == '\0')
        return UV_EINVAL;
    if (strcmp(p, "0") == 0) {
        *out_ms = 0;
        return 0;
    }
    while (*p) {
        v = 0;
        digits = 0;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (*p++ - '0');
            digits++;
        }
        if (*p == '.') {
            p++;
            scale = 0.1L;
            while (*p >= '0' && *p <= '9') {
                v += (*p++ - '0') * scale;
                scale /= 10;
                digits++;
            }
        }
        if (digits == 0 || unit_ns(&p, &ns) < 0)
            return UV_EINVAL;
        total += v * (long double)ns;
        if (total > 9.2e18L) /* Go's int64 nanoseconds */
            return UV_ERANGE;
    }
    *out_ms = (uint64_t)(total / 1e6L);
    return 0;
}

/* ---- YAML into a jansson tree (every scalar a string: the schema has only strings) ---- */

static json_t *yaml_node_to_json(yaml_document_t *doc, yaml_node_t *node, int depth)
{
    json_t *out = NULL;
    yaml_node_item_t *it;
    yaml_node_pair_t *pair;
    yaml_node_t *k;
    yaml_node_t *v;
    json_t *child;

    if (!node || depth > YAML_DEPTH)
        return NULL;
    switch (node->type) {
    case YAML_SCALAR_NODE:
        if (node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (node->data.scalar.length == 0 ||
             (node->data.scalar.length == 1 && node->data.scalar.value[0] == '~') ||
             strcmp((const char *)node->data.scalar.value, "null") == 0))
            return json_null();
        return json_stringn((const char *)node->data.scalar.value, node->data.scalar.length);
    case YAML_SEQUENCE_NODE:
        out = json_array();
        for (it = node->data.sequence.items.start; it < node->data.sequence.items.top; it++) {
            child = yaml_node_to_json(doc, yaml_document_get_node(doc, *it), depth + 1);
            if (!child || json_array_append_new(out, child) < 0)
                goto fail;
        }
        return out;
    case YAML_MAPPING_NODE:
        out = json_object();
        for (pair = node->data.mapping.pairs.start; pair < node->data.mapping.pairs.top; pair++) {
            k = yaml_document_get_node(doc, pair->key);
            v = yaml_document_get_node(doc, pair->value);
            if (!k || k->type != YAML_SCALAR_NODE)
                goto fail;
            child = yaml_node_to_json(doc, v, depth + 1);
            if (!child || json_object_set_new(out, (const char *)k->data.scalar.value, child) < 0)
                goto fail;
        }
        return out;
    default:
        return NULL;
    }
fail:
    json_decref(out);
    return NULL;
}

static json_t *parse_yaml(const char *text, size_t len, char *err, size_t errlen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    json_t *root = NULL;

    if (!yaml_parser_initialize(&parser)) {
        snprintf(err, errlen, "cannot start the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        snprintf(err, errlen, "%zu:%zu: %s", parser.problem_mark.line + 1,
                 parser.problem_mark.column + 1, parser.problem ? parser.problem : "bad YAML");
        yaml_parser_delete(&parser);
        return NULL;
    }
    root = yaml_node_to_json(&doc, yaml_document_get_root_node(&doc), 0);
    if (!root)
        snprintf(err, errlen, "empty document, or nested too deep");
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return root;
}

static json_t *parse_text(const char *text, size_t len, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root;
    size_t i = 0;

    while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n'))
        i++;
    if (i < len && text[i] == '{') {
        root = json_loadb(text, len, 0, &jerr);
        if (!root)
            snprintf(err, errlen, "%d:%d: %s", jerr.line, jerr.column, jerr.text);
        return root;
    }
    return parse_yaml(text, len, err, errlen);
}

/* ---- the config ---- */

struct cache_entry {
    struct cache_entry *next;
    char *key;
    json_t *auth; /* normalised key -> {username, password} */
    uint64_t expires_ms;
};

struct provider {
    char *name;
    char *file;
    char *api_version;
    char **match;
    size_t n_match;
    uint64_t default_cache_ms;
    char **args; /* NULL-terminated */
    char **env;  /* "NAME=VALUE", NULL-terminated */
    struct cache_entry *cache;
    size_t n_cache;
};

struct job {
    struct job *next;
    rgm_credproviders_t *p;
    char *image;
    size_t idx; /* the provider running or to look at next */
    rgm_credrun_t *run;
    json_t *combined; /* normalised key -> {username, password, provider}; first wins */
    int first_err;
    char *first_err_provider;
    rgm_credproviders_wait_t *waiters;
};

struct rgm_credproviders_wait {
    rgm_credproviders_wait_t *next;
    struct job *job;
    rgm_credproviders_cb cb;
    void *ud;
};

struct rgm_credproviders {
    uv_loop_t *loop;
    struct provider *provs;
    size_t n_provs;
    uint64_t timeout_ms;
    struct job *jobs;
    uint64_t runs;
    unsigned live_runs;
    int is_freeing;
};

static int cfail(char *err, size_t errlen, const char *where, const char *msg)
{
    snprintf(err, errlen, "%s: %s", where, msg);
    return UV_EINVAL;
}

static const char *str_of(json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));

    return s && strlen(s) < FIELD_MAX ? s : NULL;
}

static int is_req_api(const char *v)
{
    return v && (strcmp(v, REQ_API_V1) == 0 ||
                 strcmp(v, "credentialprovider.kubelet.k8s.io/v1beta1") == 0 ||
                 strcmp(v, "credentialprovider.kubelet.k8s.io/v1alpha1") == 0);
}

static char **str_list(json_t *arr, const char *where, char *err, size_t errlen, int *bad)
{
    char **out;
    size_t i;
    const char *s;
    char w[256];

    if (!arr || json_is_null(arr))
        return rgm_calloc(1, sizeof(char *));
    if (!json_is_array(arr)) {
        *bad = cfail(err, errlen, where, "must be a list");
        return NULL;
    }
    out = rgm_calloc(json_array_size(arr) + 1, sizeof(char *));
    for (i = 0; i < json_array_size(arr); i++) {
        s = json_string_value(json_array_get(arr, i));
        if (!s) {
            snprintf(w, sizeof(w), "%s[%zu]", where, i);
            *bad = cfail(err, errlen, w, "must be a string");
            break;
        }
        out[i] = rgm_strdup(s);
    }
    return out;
}

static void free_list(char **l)
{
    size_t i;

    for (i = 0; l && l[i]; i++)
        free(l[i]);
    free(l);
}

static void cache_drop_all(struct provider *pv)
{
    struct cache_entry *e;

    while (pv->cache) {
        e = pv->cache;
        pv->cache = e->next;
        free(e->key);
        json_decref(e->auth);
        free(e);
    }
    pv->n_cache = 0;
}

static void provider_free(struct provider *pv)
{
    free(pv->name);
    free(pv->file);
    free(pv->api_version);
    free_list(pv->match);
    free_list(pv->args);
    free_list(pv->env);
    cache_drop_all(pv);
}

static int parse_env(struct provider *pv, json_t *env, const char *where, char *err, size_t errlen)
{
    size_t i;
    const char *name;
    const char *value;
    char w[256];
    char kv[FIELD_MAX];

    pv->env = rgm_calloc(json_is_array(env) ? json_array_size(env) + 1 : 1, sizeof(char *));
    if (!env || json_is_null(env))
        return 0;
    if (!json_is_array(env))
        return cfail(err, errlen, where, "must be a list of {name, value}");
    for (i = 0; i < json_array_size(env); i++) {
        snprintf(w, sizeof(w), "%s[%zu]", where, i);
        name = str_of(json_array_get(env, i), "name");
        value = str_of(json_array_get(env, i), "value");
        if (!name || !name[0] || strchr(name, '='))
            return cfail(err, errlen, w, "name must be a non-empty string without '='");
        if (!value)
            value = "";
        snprintf(kv, sizeof(kv), "%s=%s", name, value);
        pv->env[i] = rgm_strdup(kv);
    }
    return 0;
}

static int parse_match(struct provider *pv, json_t *m, const char *where, char *err, size_t errlen)
{
    size_t i;
    char w[256];
    int bad = 0;

    if (!json_is_array(m) || json_array_size(m) == 0)
        return cfail(err, errlen, where, "required: a non-empty list of image patterns");
    pv->match = str_list(m, where, err, errlen, &bad);
    if (bad)
        return bad;
    pv->n_match = json_array_size(m);
    for (i = 0; i < pv->n_match; i++) {
        snprintf(w, sizeof(w), "%s[%zu]", where, i);
        if (!rgm_credprovider_valid_glob(pv->match[i]))
            return cfail(err, errlen, w, "not a valid image pattern");
    }
    return 0;
}

static int parse_provider(struct provider *pv, json_t *o, size_t idx, const char *bin_dir,
                          char *err, size_t errlen)
{
    char where[64];
    char w[128];
    char file[4096];
    const char *name;
    const char *api;
    const char *dur;
    int bad = 0;
    int n;

    snprintf(where, sizeof(where), "providers[%zu]", idx);
    if (!json_is_object(o))
        return cfail(err, errlen, where, "must be a mapping");
    name = str_of(o, "name");
    snprintf(w, sizeof(w), "%s.name", where);
    if (!name || !name[0])
        return cfail(err, errlen, w, "required");
    if (strchr(name, '/') || strchr(name, ' ') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return cfail(err, errlen, w, "must be a file name (no '/', no space, not . or ..)");
    pv->name = rgm_strdup(name);
    n = snprintf(file, sizeof(file), "%s/%s", bin_dir ? bin_dir : ".", name);
    if (n < 0 || (size_t)n >= sizeof(file))
        return cfail(err, errlen, w, "path too long");
    pv->file = rgm_strdup(file);
    api = str_of(o, "apiVersion");
    snprintf(w, sizeof(w), "%s.apiVersion", where);
    if (!is_req_api(api))
        return cfail(err, errlen, w,
                     "required: credentialprovider.kubelet.k8s.io/v1 (or v1beta1, v1alpha1)");
    pv->api_version = rgm_strdup(api);
    snprintf(w, sizeof(w), "%s.matchImages", where);
    bad = parse_match(pv, json_object_get(o, "matchImages"), w, err, errlen);
    if (bad)
        return bad;
    dur = str_of(o, "defaultCacheDuration");
    snprintf(w, sizeof(w), "%s.defaultCacheDuration", where);
    if (!dur)
        return cfail(err, errlen, w, "required (a duration such as \"12h\" or \"0\")");
    if (rgm_credprovider_parse_duration(dur, &pv->default_cache_ms) < 0)
        return cfail(err, errlen, w, "not a duration >= 0");
    snprintf(w, sizeof(w), "%s.args", where);
    pv->args = str_list(json_object_get(o, "args"), w, err, errlen, &bad);
    if (bad)
        return bad;
    snprintf(w, sizeof(w), "%s.env", where);
    return parse_env(pv, json_object_get(o, "env"), w, err, errlen);
}

static int parse_root(rgm_credproviders_t *p, json_t *root, const char *bin_dir, char *err,
                      size_t errlen)
{
    const char *api = str_of(root, "apiVersion");
    const char *kind = str_of(root, "kind");
    json_t *provs = json_object_get(root, "providers");
    size_t i;
    size_t k;
    int e;

    if (!json_is_object(root))
        return cfail(err, errlen, "document", "not a mapping");
    if (!api ||
        (strcmp(api, CFG_API_V1) != 0 && strcmp(api, "kubelet.config.k8s.io/v1beta1") != 0 &&
         strcmp(api, "kubelet.config.k8s.io/v1alpha1") != 0))
        return cfail(err, errlen, "apiVersion", "must be " CFG_API_V1 " (or v1beta1, v1alpha1)");
    if (!kind || strcmp(kind, "CredentialProviderConfig") != 0)
        return cfail(err, errlen, "kind", "must be CredentialProviderConfig");
    if (!json_is_array(provs) || json_array_size(provs) == 0)
        return cfail(err, errlen, "providers", "required: at least one provider");
    p->provs = rgm_calloc(json_array_size(provs), sizeof(*p->provs));
    for (i = 0; i < json_array_size(provs); i++) {
        p->n_provs = i + 1;
        e = parse_provider(&p->provs[i], json_array_get(provs, i), i, bin_dir, err, errlen);
        if (e < 0)
            return e;
        for (k = 0; k < i; k++)
            if (strcmp(p->provs[k].name, p->provs[i].name) == 0)
                return cfail(err, errlen, "providers", "duplicate provider name");
    }
    return 0;
}

int rgm_credproviders_parse(uv_loop_t *loop, const char *text, size_t len, const char *bin_dir,
                            uint64_t timeout_ms, char *err, size_t errlen,
                            rgm_credproviders_t **out)
{
    rgm_credproviders_t *p;
    json_t *root;
    int e;

    *out = NULL;
    root = parse_text(text, len, err, errlen);
    if (!root)
        return UV_EINVAL;
    p = rgm_calloc(1, sizeof(*p));
    p->loop = loop;
    p->timeout_ms = timeout_ms ? timeout_ms : RGM_CREDPROVIDER_TIMEOUT_MS;
    e = parse_root(p, root, bin_dir, err, errlen);
    json_decref(root);
    if (e < 0) {
        rgm_credproviders_free(p);
        return e;
    }
    *out = p;
    return 0;
}

int rgm_credproviders_load(uv_loop_t *loop, const char *path, const char *bin_dir,
                           uint64_t timeout_ms, char *err, size_t errlen, rgm_credproviders_t **out)
{
    char *text;
    char msg[512];
    struct stat st;
    ssize_t n;
    size_t got = 0;
    int fd;
    int e;

    *out = NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &st) < 0 || st.st_size > RGM_CREDPROVIDER_CONFIG_MAX) {
        snprintf(err, errlen, "%s: %s", path,
                 fd < 0 ? strerror(errno) : "cannot be read, or larger than 1 MiB");
        if (fd >= 0)
            close(fd);
        return UV_EIO;
    }
    text = rgm_malloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        n = read(fd, text + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    text[got] = '\0';
    e = rgm_credproviders_parse(loop, text, got, bin_dir, timeout_ms, msg, sizeof(msg), out);
    free(text);
    if (e < 0)
        snprintf(err, errlen, "%s: %s", path, msg);
    return e;
}

size_t rgm_credproviders_count(const rgm_credproviders_t *p)
{
    return p->n_provs;
}

/* ---- responses and the keyring pick ---- */

static int rfail(char *why, size_t whylen, const char *msg)
{
    snprintf(why, whylen, "%s", msg);
    return UV_EINVAL;
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 1;
    return 0;
}

static int check_auth(json_t *auth, char *why, size_t whylen)
{
    const char *key;
    json_t *v;
    const char *u;
    const char *pw;

    if (!auth || json_is_null(auth))
        return 0;
    if (!json_is_object(auth))
        return rfail(why, whylen, "auth is not a map");
    json_object_foreach(auth, key, v)
    {
        u = str_of(v, "username");
        pw = str_of(v, "password");
        if (!json_is_object(v) || !key[0] || has_ctl(key))
            return rfail(why, whylen, "an auth entry is not {username, password}");
        if ((json_object_get(v, "username") && !u) || (json_object_get(v, "password") && !pw))
            return rfail(why, whylen, "auth username/password must be strings");
        if ((u && has_ctl(u)) || (pw && has_ctl(pw)))
            return rfail(why, whylen, "control bytes in auth username/password");
    }
    return 0;
}

int rgm_credprovider_parse_response(const char *out, size_t len, const char *api_version,
                                    rgm_credprovider_keytype_t *keytype, int *has_duration,
                                    uint64_t *duration_ms, json_t **auth, char *why, size_t whylen)
{
    json_error_t jerr;
    json_t *root;
    const char *s;
    json_t *a;
    int e = UV_EINVAL;

    *auth = NULL;
    *has_duration = 0;
    *duration_ms = 0;
    root = json_loadb(out, len, 0, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return rfail(why, whylen, "not a JSON object");
    }
    s = str_of(root, "apiVersion");
    if (!s || strcmp(s, api_version) != 0) {
        snprintf(why, whylen, "apiVersion %s is not the configured %s", s ? s : "(none)",
                 api_version);
        goto out;
    }
    s = str_of(root, "kind");
    if (!s || strcmp(s, "CredentialProviderResponse") != 0) {
        rfail(why, whylen, "kind is not CredentialProviderResponse");
        goto out;
    }
    s = str_of(root, "cacheKeyType");
    if (s && strcmp(s, "Image") == 0) {
        *keytype = RGM_CP_KEY_IMAGE;
    } else if (s && strcmp(s, "Registry") == 0) {
        *keytype = RGM_CP_KEY_REGISTRY;
    } else if (s && strcmp(s, "Global") == 0) {
        *keytype = RGM_CP_KEY_GLOBAL;
    } else {
        rfail(why, whylen, "cacheKeyType is not Image, Registry or Global");
        goto out;
    }
    a = json_object_get(root, "cacheDuration");
    if (a && !json_is_null(a)) {
        s = json_string_value(a);
        if (!s || rgm_credprovider_parse_duration(s, duration_ms) < 0) {
            rfail(why, whylen, "cacheDuration is not a duration >= 0");
            goto out;
        }
        *has_duration = 1;
    }
    a = json_object_get(root, "auth");
    if (check_auth(a, why, whylen) < 0)
        goto out;
    *auth = json_is_object(a) ? json_deep_copy(a) : json_object();
    e = 0;
out:
    json_decref(root);
    return e;
}

/* The keyring's key for an auth entry: no scheme, a /v1/ or /v2/ prefix dropped, no
 * trailing "/" path. */
static void norm_key(const char *k, char *out, size_t len)
{
    const char *slash;

    if (strncmp(k, "https://", 8) == 0)
        k += 8;
    else if (strncmp(k, "http://", 7) == 0)
        k += 7;
    slash = strchr(k, '/');
    if (!slash) {
        snprintf(out, len, "%s", k);
        return;
    }
    if (strncmp(slash, "/v1/", 4) == 0 || strncmp(slash, "/v2/", 4) == 0) {
        if (slash[4] == '\0')
            snprintf(out, len, "%.*s", (int)(slash - k), k);
        else
            snprintf(out, len, "%.*s%s", (int)(slash - k), k, slash + 3);
        return;
    }
    if (strcmp(slash, "/") == 0)
        snprintf(out, len, "%.*s", (int)(slash - k), k);
    else
        snprintf(out, len, "%s", k);
}

static int cmp_rev(const void *a, const void *b)
{
    return strcmp(*(const char *const *)b, *(const char *const *)a);
}

/* docker.io images are also known as index.docker.io ones to the keyring. */
static int image_matches(const char *key, const char *image)
{
    char alt[IMAGE_MAX + 32];

    if (rgm_credprovider_match(key, image))
        return 1;
    if (strncmp(image, "docker.io/", 10) == 0) {
        snprintf(alt, sizeof(alt), "index.docker.io/%s", image + 10);
        return rgm_credprovider_match(key, alt);
    }
    return 0;
}

static json_t *pick_entry(json_t *auth, const char *image)
{
    const char **keys;
    const char *key;
    json_t *v;
    json_t *found = NULL;
    size_t n = 0;
    size_t i;

    if (!json_is_object(auth) || json_object_size(auth) == 0)
        return NULL;
    keys = rgm_calloc(json_object_size(auth), sizeof(*keys));
    json_object_foreach(auth, key, v)
    {
        keys[n++] = key;
    }
    qsort(keys, n, sizeof(*keys), cmp_rev);
    for (i = 0; i < n && !found; i++)
        if (image_matches(keys[i], image))
            found = json_object_get(auth, keys[i]);
    free(keys);
    return found;
}

/* A copy of auth with its keys normalised (the first of two that normalise alike wins). */
static json_t *normalised(json_t *auth)
{
    json_t *out = json_object();
    const char *key;
    json_t *v;
    char nk[IMAGE_MAX];

    json_object_foreach(auth, key, v)
    {
        norm_key(key, nk, sizeof(nk));
        if (!json_object_get(out, nk))
            json_object_set(out, nk, v);
    }
    return out;
}

int rgm_credprovider_pick(json_t *auth, const char *image, rgm_cred_t *cred)
{
    json_t *norm = normalised(auth);
    json_t *e = pick_entry(norm, image);
    const char *u;
    const char *pw;

    memset(cred, 0, sizeof(*cred));
    if (e) {
        u = str_of(e, "username");
        pw = str_of(e, "password");
        cred->username = rgm_strdup(u ? u : "");
        cred->secret = rgm_strdup(pw ? pw : "");
    }
    json_decref(norm);
    return e ? 1 : 0;
}

/* ---- the cache ---- */

static void image_registry(const char *image, char *out, size_t len)
{
    size_t n = strcspn(image, "/");

    snprintf(out, len, "%.*s", (int)n, image);
}

static struct cache_entry *cache_find(struct provider *pv, const char *key, uint64_t now)
{
    struct cache_entry **pp;
    struct cache_entry *e;

    for (pp = &pv->cache; *pp;) {
        e = *pp;
        if (e->expires_ms <= now) {
            *pp = e->next;
            pv->n_cache--;
            free(e->key);
            json_decref(e->auth);
            free(e);
            continue;
        }
        if (strcmp(e->key, key) == 0)
            return e;
        pp = &e->next;
    }
    return NULL;
}

/* The kubelet looks up the Image key, then the Registry key, then the Global one. */
static json_t *cache_lookup(struct provider *pv, const char *image, uint64_t now)
{
    char reg[IMAGE_MAX];
    struct cache_entry *e = cache_find(pv, image, now);

    if (!e) {
        image_registry(image, reg, sizeof(reg));
        e = cache_find(pv, reg, now);
    }
    if (!e)
        e = cache_find(pv, GLOBAL_KEY, now);
    return e ? e->auth : NULL;
}

static void cache_del(struct provider *pv, const char *key)
{
    struct cache_entry **pp;
    struct cache_entry *e;

    for (pp = &pv->cache; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->key, key) == 0) {
            e = *pp;
            *pp = e->next;
            pv->n_cache--;
            free(e->key);
            json_decref(e->auth);
            free(e);
            return;
        }
    }
}

static void cache_put(struct provider *pv, const char *key, json_t *auth, uint64_t expires_ms)
{
    struct cache_entry *e;
    struct cache_entry **pp;

    cache_del(pv, key);
    if (pv->n_cache >= CACHE_MAX) {
        /* Drop the oldest (the list's tail). */
        for (pp = &pv->cache; (*pp)->next; pp = &(*pp)->next)
            ;
        e = *pp;
        *pp = NULL;
        pv->n_cache--;
        free(e->key);
        json_decref(e->auth);
        free(e);
    }
    e = rgm_calloc(1, sizeof(*e));
    e->key = rgm_strdup(key);
    e->auth = normalised(auth);
    e->expires_ms = expires_ms;
    e->next = pv->cache;
    pv->cache = e;
    pv->n_cache++;
}

void rgm_credproviders_forget(rgm_credproviders_t *p, const char *image)
{
    char reg[IMAGE_MAX];
    size_t i;

    image_registry(image, reg, sizeof(reg));
    for (i = 0; i < p->n_provs; i++) {
        cache_del(&p->provs[i], image);
        cache_del(&p->provs[i], reg);
        cache_del(&p->provs[i], GLOBAL_KEY);
    }
}

/* ---- jobs ---- */

static int prov_matches(const struct provider *pv, const char *image)
{
    size_t i;

    for (i = 0; i < pv->n_match; i++)
        if (image_matches(pv->match[i], image))
            return 1;
    return 0;
}

int rgm_credproviders_matches(const rgm_credproviders_t *p, const char *image)
{
    size_t i;

    for (i = 0; i < p->n_provs; i++)
        if (prov_matches(&p->provs[i], image))
            return 1;
    return 0;
}

/* Add a provider's (normalised) auth to the job's, keeping earlier providers' entries. */
static void merge(json_t *combined, json_t *auth, const char *provider)
{
    const char *key;
    json_t *v;
    json_t *c;

    json_object_foreach(auth, key, v)
    {
        if (json_object_get(combined, key))
            continue;
        c = json_deep_copy(v);
        json_object_set_new(c, "provider", json_string(provider));
        json_object_set_new(combined, key, c);
    }
}

static void job_free(struct job *j)
{
    rgm_credproviders_wait_t *w;

    while (j->waiters) {
        w = j->waiters;
        j->waiters = w->next;
        free(w);
    }
    json_decref(j->combined);
    free(j->first_err_provider);
    free(j->image);
    free(j);
}

static void job_unlink(rgm_credproviders_t *p, struct job *j)
{
    struct job **pp;

    for (pp = &p->jobs; *pp; pp = &(*pp)->next) {
        if (*pp == j) {
            *pp = j->next;
            return;
        }
    }
}

static void job_fail(struct job *j, int err, const char *provider)
{
    if (j->first_err == 0) {
        j->first_err = err;
        j->first_err_provider = rgm_strdup(provider);
    }
}

/* The result of a finished job: cred filled or anonymous; returns err for the callback. */
static int job_result(struct job *j, rgm_cred_t *cred, const char **provider)
{
    json_t *e = pick_entry(j->combined, j->image);
    const char *u;
    const char *pw;

    memset(cred, 0, sizeof(*cred));
    *provider = j->first_err_provider ? j->first_err_provider : "";
    if (!e)
        return j->first_err;
    u = str_of(e, "username");
    pw = str_of(e, "password");
    cred->username = rgm_strdup(u ? u : "");
    cred->secret = rgm_strdup(pw ? pw : "");
    *provider = str_of(e, "provider");
    return 0;
}

static void on_plugin_done(const rgm_credrun_result_t *res, void *ud);

static int start_plugin(struct job *j, struct provider *pv)
{
    rgm_credrun_opts_t o;
    json_t *req;
    char *body;
    char img[IMAGE_MAX + 8];
    int err;

    req = json_pack("{s:s, s:s, s:s}", "apiVersion", pv->api_version, "kind",
                    "CredentialProviderRequest", "image", j->image);
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body)
        return UV_ENOMEM;
    memset(&o, 0, sizeof(o));
    o.file = pv->file;
    o.args = (const char *const *)pv->args;
    o.env = pv->env[0] ? (const char *const *)pv->env : NULL;
    o.input = body;
    o.input_len = strlen(body);
    o.timeout_ms = j->p->timeout_ms;
    o.stdout_max = RGM_CREDPROVIDER_OUT_MAX;
    err = rgm_credrun_start(j->p->loop, &o, on_plugin_done, j, &j->run);
    free(body);
    if (err < 0) {
        j->run = NULL;
        rgm_log(RGM_LOG_WARN, "credprovider", "provider %s for %s: cannot run %s: %s", pv->name,
                rgm_log_quote(j->image, img, sizeof(img)), pv->file, uv_strerror(err));
        return err;
    }
    j->p->runs++;
    j->p->live_runs++;
    return 0;
}

/* Go on from provider j->idx: use cached answers, start the next run. 1 when the job is
 * done, 0 when a run is in flight. */
static int job_step(struct job *j)
{
    rgm_credproviders_t *p = j->p;
    struct provider *pv;
    json_t *cached;
    uint64_t now = rgm_time_ms();
    int err;

    for (; j->idx < p->n_provs; j->idx++) {
        pv = &p->provs[j->idx];
        if (!prov_matches(pv, j->image))
            continue;
        cached = cache_lookup(pv, j->image, now);
        if (cached) {
            merge(j->combined, cached, pv->name);
            continue;
        }
        err = start_plugin(j, pv);
        if (err == 0)
            return 0;
        job_fail(j, err, pv->name);
    }
    return 1;
}

static void fmt_dur(uint64_t ms, char *out, size_t len)
{
    if (ms % 1000 == 0)
        snprintf(out, len, "%llus", (unsigned long long)(ms / 1000));
    else
        snprintf(out, len, "%llums", (unsigned long long)ms);
}

static const char *const keytype_names[] = {"Image", "Registry", "Global"};

/* Judge one plugin run: 0 with the response cached and merged, or <0 (logged). */
static int take_response(struct job *j, struct provider *pv, const rgm_credrun_result_t *res)
{
    rgm_credprovider_keytype_t kt = RGM_CP_KEY_IMAGE;
    json_t *auth = NULL;
    uint64_t dur = 0;
    int has_dur = 0;
    char why[300];
    char img[IMAGE_MAX + 8];
    char key[IMAGE_MAX];
    char life[32];
    char qwhy[600];

    rgm_log_quote(j->image, img, sizeof(img));
    if (res->err_line[0])
        rgm_log(RGM_LOG_WARN, "credprovider", "provider %s for %s: stderr: %s", pv->name, img,
                rgm_log_quote(res->err_line, qwhy, sizeof(qwhy)));
    if (res->err == UV_ETIMEDOUT) {
        rgm_log(RGM_LOG_WARN, "credprovider",
                "provider %s for %s: killed after %llu ms (timeout); going on without it", pv->name,
                img, (unsigned long long)res->elapsed_ms);
        return UV_ETIMEDOUT;
    }
    if (res->err < 0) {
        rgm_log(RGM_LOG_WARN, "credprovider", "provider %s for %s: %s; going on without it",
                pv->name, img,
                res->err == UV_E2BIG ? "too much output (killed)" : uv_strerror(res->err));
        return res->err;
    }
    if (res->exit_status != 0 || res->term_signal != 0) {
        rgm_log(RGM_LOG_WARN, "credprovider",
                "provider %s for %s: exit status %lld, signal %d (stdout not logged); going on "
                "without it",
                pv->name, img, (long long)res->exit_status, res->term_signal);
        return UV_EPROTO;
    }
    if (rgm_credprovider_parse_response(res->out, res->out_len, pv->api_version, &kt, &has_dur,
                                        &dur, &auth, why, sizeof(why)) < 0) {
        rgm_log(RGM_LOG_WARN, "credprovider",
                "provider %s for %s: bad CredentialProviderResponse (%s; %zu bytes, not "
                "logged); going on without it",
                pv->name, img, why, res->out_len);
        return UV_EPROTO;
    }
    if (!has_dur)
        dur = pv->default_cache_ms;
    if (kt == RGM_CP_KEY_IMAGE)
        snprintf(key, sizeof(key), "%s", j->image);
    else if (kt == RGM_CP_KEY_REGISTRY)
        image_registry(j->image, key, sizeof(key));
    else
        snprintf(key, sizeof(key), "%s", GLOBAL_KEY);
    if (dur > 0)
        cache_put(pv, key, auth, rgm_time_ms() + dur);
    fmt_dur(dur, life, sizeof(life));
    rgm_log(RGM_LOG_INFO, "credprovider",
            "provider %s for %s: exit 0 in %llu ms, %zu auth entries (passwords <redacted>), "
            "cacheKeyType %s, %s %s%s",
            pv->name, img, (unsigned long long)res->elapsed_ms, json_object_size(auth),
            keytype_names[kt], has_dur ? "cacheDuration" : "defaultCacheDuration", life,
            dur > 0 ? "" : " (not cached)");
    {
        json_t *norm = normalised(auth);

        merge(j->combined, norm, pv->name);
        json_decref(norm);
    }
    json_decref(auth);
    return 0;
}

static void job_finish(struct job *j)
{
    rgm_credproviders_t *p = j->p;
    rgm_credproviders_wait_t *w;
    rgm_cred_t cred;
    const char *prov;
    int err;

    job_unlink(p, j);
    err = job_result(j, &cred, &prov);
    while (j->waiters) {
        w = j->waiters;
        j->waiters = w->next;
        w->cb(err, &cred, prov ? prov : "", w->ud);
        free(w);
    }
    rgm_cred_clear(&cred);
    job_free(j);
}

static void on_plugin_done(const rgm_credrun_result_t *res, void *ud)
{
    struct job *j = ud;
    rgm_credproviders_t *p = j->p;
    struct provider *pv;
    int err;

    j->run = NULL;
    p->live_runs--;
    if (p->is_freeing) {
        job_free(j);
        if (p->live_runs == 0)
            rgm_credproviders_free(p);
        return;
    }
    pv = &p->provs[j->idx];
    err = take_response(j, pv, res);
    if (err < 0)
        job_fail(j, err, pv->name);
    j->idx++;
    if (job_step(j))
        job_finish(j);
}

int rgm_credproviders_get(rgm_credproviders_t *p, const char *image, rgm_credproviders_cb cb,
                          void *ud, rgm_credproviders_wait_t **out, rgm_cred_t *now)
{
    struct job *j;
    rgm_credproviders_wait_t *w;
    const char *prov;
    int err;

    *out = NULL;
    memset(now, 0, sizeof(*now));
    if (!image || !image[0] || strlen(image) >= IMAGE_MAX)
        return UV_EINVAL;
    for (j = p->jobs; j; j = j->next)
        if (strcmp(j->image, image) == 0)
            break;
    if (!j) {
        j = rgm_calloc(1, sizeof(*j));
        j->p = p;
        j->image = rgm_strdup(image);
        j->combined = json_object();
        if (job_step(j)) {
            /* Everything came from the cache (or nothing matched, or nothing could start). */
            err = job_result(j, now, &prov);
            job_free(j);
            return err < 0 ? err : 1;
        }
        j->next = p->jobs;
        p->jobs = j;
    }
    w = rgm_calloc(1, sizeof(*w));
    w->job = j;
    w->cb = cb;
    w->ud = ud;
    w->next = j->waiters;
    j->waiters = w;
    *out = w;
    return 0;
}

void rgm_credproviders_cancel(rgm_credproviders_wait_t *w)
{
    rgm_credproviders_wait_t **pp;

    for (pp = &w->job->waiters; *pp; pp = &(*pp)->next) {
        if (*pp == w) {
            *pp = w->next;
            free(w);
            return;
        }
    }
}

uint64_t rgm_credproviders_runs(const rgm_credproviders_t *p)
{
    return p->runs;
}

void rgm_credproviders_free(rgm_credproviders_t *p)
{
    struct job *j;
    struct job *next;
    size_t i;

    if (!p)
        return;
    if (!p->is_freeing) {
        p->is_freeing = 1;
        /* A cancel may call on_plugin_done at once: hold a count so it cannot free p here. */
        p->live_runs++;
        for (j = p->jobs; j; j = next) {
            next = j->next;
            if (j->run)
                rgm_credrun_cancel(j->run); /* on_plugin_done frees j, then p */
        }
        p->jobs = NULL;
        p->live_runs--;
    }
    if (p->live_runs > 0)
        return;
    for (i = 0; i < p->n_provs; i++)
        provider_free(&p->provs[i]);
    free(p->provs);
    free(p);
}
