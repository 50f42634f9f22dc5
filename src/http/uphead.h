/* Heads of upstream requests and responses as data, internal to src/http: the request's own
 * header list and the checks that keep CR, LF and spaces out of what goes on the wire; the
 * response's header block, joined from llhttp's pieces under fixed limits; a redirect's Location
 * resolved against the request URL. No I/O, no llhttp: upreq.c drives the parser. */
#ifndef RGM_HTTP_UPHEAD_H
#define RGM_HTTP_UPHEAD_H

#include "core/buf.h"
#include "core/util.h"

#define RGM_UPHEAD_MAX_HEADERS 64          /* response headers kept; more is an error */
#define RGM_UPHEAD_MAX_BYTES   (64 * 1024) /* names and values of one response, NULs included */

/* ---- the request's own headers ---- */

struct uphdr {
    struct uphdr *next;
    char *name;
    char *value;
};

/* In the order added. Empty when zeroed. */
struct uphdr_list {
    struct uphdr *head;
    struct uphdr *tail;
};

/* 1 when s may go into a header name or value (no CR or LF, which would inject headers), else 0. */
int rgm_uphead_is_field_safe(const char *s);
/* 1 when s may go into the request line (no space, control character or DEL), else 0. */
int rgm_uphead_is_url_safe(const char *s);
/* Append a copy of name and value; the caller has checked them. */
void rgm_uphead_add(struct uphdr_list *l, const char *name, const char *value);
/* Remove every header called name (case-insensitive). */
void rgm_uphead_remove(struct uphdr_list *l, const char *name);
/* Free every header; the list is empty and reusable afterwards. */
void rgm_uphead_clear(struct uphdr_list *l);

/* ---- the response's header block ---- */

/* Names and values, each NUL-terminated, in one buffer. llhttp delivers a name or a value in
 * several pieces (rgm_uphead_field / _value) and says when each ends (_done). Only
 * rgm_uphead_* touch the fields. */
struct uphead_block {
    rgm_buf_t buf;
    size_t n;
    size_t name_off[RGM_UPHEAD_MAX_HEADERS];
    size_t value_off[RGM_UPHEAD_MAX_HEADERS];
    int in_field;
    int value_open;
};

/* An empty block; allocates nothing. */
void rgm_uphead_block_init(struct uphead_block *b);
/* Empty the block for the next message, keeping its memory. */
void rgm_uphead_block_reset(struct uphead_block *b);
void rgm_uphead_block_free(struct uphead_block *b);
/* A piece of a header name (the first piece starts a header, ending the previous value). 0,
 * UV_E2BIG past RGM_UPHEAD_MAX_HEADERS headers, UV_ENOBUFS past RGM_UPHEAD_MAX_BYTES. */
RGM_MUST_CHECK int rgm_uphead_field(struct uphead_block *b, const char *at, size_t len);
/* The name is complete. 0 or UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_uphead_field_done(struct uphead_block *b);
/* A piece of the current header's value. 0 or UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_uphead_value(struct uphead_block *b, const char *at, size_t len);
/* The value is complete (also when no piece came: an empty value). Idempotent. 0 or
 * UV_ENOBUFS. */
RGM_MUST_CHECK int rgm_uphead_value_done(struct uphead_block *b);
/* The value of the first header called name (case-insensitive), or NULL. Owned by b, valid until
 * it is reset or freed. */
const char *rgm_uphead_get(const struct uphead_block *b, const char *name);

/* ---- redirects ---- */

/* Resolve a Location value against base into out (len bytes): an absolute URL, a
 * scheme-relative one ("//host/p"), an absolute path or a path relative to base's directory.
 * The fragment is dropped; the result is not parsed or checked. 0, or UV_EINVAL when out is too
 * small. */
RGM_MUST_CHECK int rgm_uphead_resolve_location(const rgm_url_t *base, const char *loc, char *out,
                                               size_t len);

#endif
