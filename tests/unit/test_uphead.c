/* Unit tests for http/uphead: CR/LF and request-line checks, the request's header list, the
 * response header block (pieces, lookup, limits) and Location resolution. */
#include "http/uphead.h"

#include <uv.h>

#include "tap.h"

static void test_safety(void)
{
    ok(rgm_uphead_is_field_safe("Bearer abc def"), "a value with spaces is a safe field");
    ok(!rgm_uphead_is_field_safe("x\r\nInjected: 1"), "CR LF in a field is refused");
    ok(!rgm_uphead_is_field_safe("x\ny"), "a lone LF in a field is refused");
    ok(!rgm_uphead_is_field_safe("x\ry"), "a lone CR in a field is refused");
    ok(rgm_uphead_is_url_safe("https://h/v2/x?a=1&b=%20"), "a plain URL is safe");
    ok(!rgm_uphead_is_url_safe("http://h/a b"), "a space in the URL is refused");
    ok(!rgm_uphead_is_url_safe("http://h/a\tb"), "a tab in the URL is refused");
    ok(!rgm_uphead_is_url_safe("http://h/a\x7f"), "DEL in the URL is refused");
    ok(!rgm_uphead_is_url_safe("GET\r\n"), "CR LF in the method is refused");
}

static void test_list(void)
{
    struct uphdr_list l = {0};
    const struct uphdr *h;

    rgm_uphead_add(&l, "Authorization", "Basic s3cret");
    rgm_uphead_add(&l, "Accept", "a/b");
    rgm_uphead_add(&l, "authorization", "Bearer t");
    rgm_uphead_remove(&l, "AUTHORIZATION");
    ok(l.head && strcmp(l.head->name, "Accept") == 0 && !l.head->next,
       "remove drops every header of that name, whatever its case");
    ok(l.tail == l.head, "remove leaves the tail on the last header kept");
    rgm_uphead_add(&l, "Range", "bytes=5-");
    h = l.head;
    ok(h && h->next && strcmp(h->next->name, "Range") == 0 &&
           strcmp(h->next->value, "bytes=5-") == 0 && l.tail == h->next,
       "add after remove appends at the end");
    rgm_uphead_remove(&l, "Accept");
    rgm_uphead_remove(&l, "Range");
    ok(!l.head && !l.tail, "removing every header empties the list");
    rgm_uphead_add(&l, "X-A", "1");
    ok(l.head && l.head == l.tail, "an emptied list takes headers again");
    rgm_uphead_clear(&l);
    ok(!l.head && !l.tail, "clear empties the list");
}

/* One header from pieces as llhttp may cut them; value may be NULL (no value piece at all). */
static int put(struct uphead_block *b, const char *name, const char *value)
{
    size_t half = strlen(name) / 2;
    int rc = rgm_uphead_field(b, name, half);

    if (rc == 0)
        rc = rgm_uphead_field(b, name + half, strlen(name) - half);
    if (rc == 0)
        rc = rgm_uphead_field_done(b);
    if (rc == 0 && value)
        rc = rgm_uphead_value(b, value, strlen(value));
    if (rc == 0)
        rc = rgm_uphead_value_done(b);
    return rc;
}

static void test_block(void)
{
    struct uphead_block b;
    char name[16];
    int i, rc = 0;

    rgm_uphead_block_init(&b);
    ok(!rgm_uphead_get(&b, "Location"), "an empty block has no header");
    is_int(put(&b, "Content-Type", "text/plain"), 0, "a header from pieces");
    is_int(put(&b, "X-Empty", NULL), 0, "a header with an empty value");
    is_int(put(&b, "content-type", "second"), 0, "a repeated header");
    is_str(rgm_uphead_get(&b, "CONTENT-TYPE"), "text/plain",
           "lookup ignores case and gives the first of a name");
    is_str(rgm_uphead_get(&b, "X-Empty"), "", "an empty value is \"\", not NULL");
    ok(!rgm_uphead_get(&b, "Content"), "a prefix of a name does not match");
    is_int(rgm_uphead_value_done(&b), 0, "value_done is idempotent");
    rgm_uphead_block_reset(&b);
    ok(!rgm_uphead_get(&b, "Content-Type"), "reset forgets the headers");

    for (i = 0; i < RGM_UPHEAD_MAX_HEADERS && rc == 0; i++) {
        snprintf(name, sizeof(name), "H%d", i);
        rc = put(&b, name, "v");
    }
    is_int(rc, 0, "%d headers fit", RGM_UPHEAD_MAX_HEADERS);
    is_int(put(&b, "One-Too-Many", "v"), UV_E2BIG, "one more header: UV_E2BIG");
    is_str(rgm_uphead_get(&b, "H63"), "v", "the headers before the limit stay readable");
    rgm_uphead_block_free(&b);
    rgm_uphead_block_init(&b);

    {
        /* name "A", NUL, value, NUL: exactly RGM_UPHEAD_MAX_BYTES */
        size_t vlen = RGM_UPHEAD_MAX_BYTES - 3;
        char *v = malloc(vlen + 2);

        memset(v, 'v', vlen + 1);
        v[vlen] = '\0';
        is_int(put(&b, "A", v), 0, "names and values of exactly the byte limit fit");
        rgm_uphead_block_reset(&b);
        v[vlen] = 'v';
        v[vlen + 1] = '\0';
        is_int(put(&b, "A", v), UV_ENOBUFS, "one byte over the limit: UV_ENOBUFS");
        free(v);
    }
    rgm_uphead_block_free(&b);
}

static void resolves(const char *base, const char *loc, const char *want)
{
    rgm_url_t u;
    char out[512];
    int rc = rgm_url_parse(base, &u);

    if (rc == 0)
        rc = rgm_uphead_resolve_location(&u, loc, out, sizeof(out));
    if (rc < 0)
        snprintf(out, sizeof(out), "error %d", rc);
    is_str(out, want, "%s + %s", base, loc);
}

static void test_resolve(void)
{
    const char *b = "https://reg.example/v2/lib/blobs/sha256:ab?x=/y/z";
    rgm_url_t u;
    char small[22]; /* "https://reg.example/p" and its NUL */

    resolves(b, "https://cdn.example/o?sig=1#frag", "https://cdn.example/o?sig=1");
    resolves(b, "HTTP://Other:8080/x", "HTTP://Other:8080/x");
    resolves(b, "//cdn.example/p", "https://cdn.example/p");
    resolves(b, "/v2/other#f", "https://reg.example/v2/other");
    resolves(b, "next?y=2", "https://reg.example/v2/lib/blobs/next?y=2");
    resolves("http://127.0.0.1:5000", "a", "http://127.0.0.1:5000/a");
    resolves("http://127.0.0.1:80/d/", "/x", "http://127.0.0.1/x");
    resolves("https://[::1]:8443/d/f", "g", "https://[::1]:8443/d/g");
    resolves("https://[::1]/d/f", "/g", "https://[::1]/g");
    ok(rgm_url_parse(b, &u) == 0 &&
           rgm_uphead_resolve_location(&u, "/a/long/path", small, sizeof(small)) == UV_EINVAL,
       "a result longer than the output: UV_EINVAL");
    ok(rgm_uphead_resolve_location(&u, "/p", small, sizeof(small)) == 0 &&
           strcmp(small, "https://reg.example/p") == 0,
       "a result that fits exactly is kept");
}

int main(void)
{
    test_safety();
    test_list();
    test_block();
    test_resolve();
    return tap_done();
}
