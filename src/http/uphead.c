/* Heads of upstream requests and responses as data: the request's header list, the response's
 * header block (bounded in count and bytes while it accumulates) and Location resolution. No
 * I/O, no parser state beyond which piece comes next: upreq.c calls in from llhttp callbacks. */
#include "http/uphead.h"

#include <string.h>

#include <uv.h>

/* ---- the request's own headers ---- */

int rgm_uphead_is_field_safe(const char *s)
{
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n')
            return 0;
    }
    return 1;
}

int rgm_uphead_is_url_safe(const char *s)
{
    for (; *s; s++) {
        if ((unsigned char)*s <= 0x20 || (unsigned char)*s == 0x7f)
            return 0;
    }
    return 1;
}

void rgm_uphead_add(struct uphdr_list *l, const char *name, const char *value)
{
    struct uphdr *h = rgm_calloc(1, sizeof(*h));

    h->name = rgm_strdup(name);
    h->value = rgm_strdup(value);
    if (l->tail)
        l->tail->next = h;
    else
        l->head = h;
    l->tail = h;
}

static void uphdr_free(struct uphdr *h)
{
    free(h->name);
    free(h->value);
    free(h);
}

void rgm_uphead_remove(struct uphdr_list *l, const char *name)
{
    struct uphdr **pp = &l->head;
    struct uphdr *h;

    l->tail = NULL;
    while ((h = *pp) != NULL) {
        if (rgm_strcaseeq(h->name, name)) {
            *pp = h->next;
            uphdr_free(h);
            continue;
        }
        l->tail = h;
        pp = &h->next;
    }
}

void rgm_uphead_clear(struct uphdr_list *l)
{
    struct uphdr *h, *next;

    for (h = l->head; h; h = next) {
        next = h->next;
        uphdr_free(h);
    }
    l->head = NULL;
    l->tail = NULL;
}

/* ---- the response's header block ---- */

void rgm_uphead_block_init(struct uphead_block *b)
{
    memset(b, 0, sizeof(*b));
    rgm_buf_init(&b->buf, RGM_UPHEAD_MAX_BYTES);
}

void rgm_uphead_block_reset(struct uphead_block *b)
{
    rgm_buf_reset(&b->buf);
    b->n = 0;
    b->in_field = 0;
    b->value_open = 0;
}

void rgm_uphead_block_free(struct uphead_block *b)
{
    rgm_buf_free(&b->buf);
    b->n = 0;
    b->in_field = 0;
    b->value_open = 0;
}

int rgm_uphead_value_done(struct uphead_block *b)
{
    if (!b->value_open)
        return 0;
    b->value_open = 0;
    return rgm_buf_appendc(&b->buf, '\0');
}

int rgm_uphead_field(struct uphead_block *b, const char *at, size_t len)
{
    if (!b->in_field) {
        int rc = rgm_uphead_value_done(b);

        if (rc < 0)
            return rc;
        if (b->n >= RGM_UPHEAD_MAX_HEADERS)
            return UV_E2BIG;
        b->name_off[b->n++] = b->buf.len;
        b->in_field = 1;
    }
    return rgm_buf_append(&b->buf, at, len);
}

int rgm_uphead_field_done(struct uphead_block *b)
{
    int rc = rgm_buf_appendc(&b->buf, '\0');

    if (rc < 0)
        return rc;
    b->in_field = 0;
    b->value_open = 1;
    b->value_off[b->n - 1] = b->buf.len;
    return 0;
}

int rgm_uphead_value(struct uphead_block *b, const char *at, size_t len)
{
    return rgm_buf_append(&b->buf, at, len);
}

const char *rgm_uphead_get(const struct uphead_block *b, const char *name)
{
    size_t i;

    for (i = 0; i < b->n; i++) {
        if (rgm_strcaseeq(b->buf.data + b->name_off[i], name))
            return b->buf.data + b->value_off[i];
    }
    return NULL;
}

/* ---- redirects ---- */

static int default_port(int is_https)
{
    return is_https ? 443 : 80;
}

/* "scheme://host[:port]" with brackets for IPv6, the port only when not the default. */
static void format_origin(const rgm_url_t *u, char *out, size_t len)
{
    const char *scheme = u->is_https ? "https" : "http";
    int v6 = strchr(u->host, ':') != NULL;

    if (u->port == default_port(u->is_https))
        snprintf(out, len, "%s://%s%s%s", scheme, v6 ? "[" : "", u->host, v6 ? "]" : "");
    else
        snprintf(out, len, "%s://%s%s%s:%d", scheme, v6 ? "[" : "", u->host, v6 ? "]" : "",
                 u->port);
}

static int has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++) {
        char a = *s, b = *prefix;

        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return 0;
    }
    return 1;
}

int rgm_uphead_resolve_location(const rgm_url_t *base, const char *loc, char *out, size_t len)
{
    char origin[300];
    const char *cur = base->path;
    size_t dir_len, loc_len = strcspn(loc, "#");
    int n;

    format_origin(base, origin, sizeof(origin));
    if (has_prefix_ci(loc, "http://") || has_prefix_ci(loc, "https://"))
        n = snprintf(out, len, "%.*s", (int)loc_len, loc);
    else if (loc[0] == '/' && loc[1] == '/')
        n = snprintf(out, len, "%s:%.*s", base->is_https ? "https" : "http", (int)loc_len, loc);
    else if (loc[0] == '/')
        n = snprintf(out, len, "%s%.*s", origin, (int)loc_len, loc);
    else {
        dir_len = strcspn(cur, "?");
        while (dir_len > 0 && cur[dir_len - 1] != '/')
            dir_len--;
        n = snprintf(out, len, "%s%.*s%.*s", origin, (int)dir_len, cur, (int)loc_len, loc);
    }
    if (n < 0 || (size_t)n >= len)
        return UV_EINVAL;
    return 0;
}
