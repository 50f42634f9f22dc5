/* The CredentialProviderConfig, read and checked as the kubelet checks it: YAML (through
 * libyaml) or JSON, both into one jansson tree, then each field into struct provider; and Go
 * duration strings, which the responses use too. It starts no plugin and holds no cache
 * (credprovider.c). Read from the kubelet's plugin package documentation and behaviour. */
#include "registry/credprovider-int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/util.h"

#define YAML_DEPTH 32
#define FIELD_MAX  65536
#define CFG_API_V1 "kubelet.config.k8s.io/v1"
#define REQ_API_V1 "credentialprovider.kubelet.k8s.io/v1"

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

static int cfail(char *err, size_t errlen, const char *where, const char *msg)
{
    snprintf(err, errlen, "%s: %s", where, msg);
    return UV_EINVAL;
}

const char *rgm_credprovider_str(json_t *obj, const char *key)
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

static void provider_free(struct provider *pv)
{
    free(pv->name);
    free(pv->file);
    free(pv->api_version);
    free_list(pv->match);
    free_list(pv->args);
    free_list(pv->env);
}

void rgm_credprovider_provs_free(rgm_credproviders_t *p)
{
    size_t i;

    for (i = 0; i < p->n_provs; i++)
        provider_free(&p->provs[i]);
    free(p->provs);
    p->provs = NULL;
    p->n_provs = 0;
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
        name = rgm_credprovider_str(json_array_get(env, i), "name");
        value = rgm_credprovider_str(json_array_get(env, i), "value");
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
    name = rgm_credprovider_str(o, "name");
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
    api = rgm_credprovider_str(o, "apiVersion");
    snprintf(w, sizeof(w), "%s.apiVersion", where);
    if (!is_req_api(api))
        return cfail(err, errlen, w,
                     "required: credentialprovider.kubelet.k8s.io/v1 (or v1beta1, v1alpha1)");
    pv->api_version = rgm_strdup(api);
    snprintf(w, sizeof(w), "%s.matchImages", where);
    bad = parse_match(pv, json_object_get(o, "matchImages"), w, err, errlen);
    if (bad)
        return bad;
    dur = rgm_credprovider_str(o, "defaultCacheDuration");
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
    const char *api = rgm_credprovider_str(root, "apiVersion");
    const char *kind = rgm_credprovider_str(root, "kind");
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
        /* No job or cache yet: what rgm_credproviders_free would do, without its jobs. */
        rgm_credprovider_provs_free(p);
        free(p);
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
