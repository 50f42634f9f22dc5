/* Fuzz target: /v2 paths, image references and the name/tag/digest grammar. Peer input reaches
 * these parsers directly (request paths, prewarm lists), so they must never crash, read out of
 * bounds or return unvalidated bytes. */
#include <stdint.h>
#include <stddef.h>
#include <string.h>
#include <stdlib.h>

#include "core/common.h"
#include "registry/reference.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int any_registry(void *ud, const char *host)
{
    (void)ud;
    return host[0] != 'x'; /* accept most, refuse some: both branches run */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    rgm_ref_path_t p;
    rgm_ref_image_t img;
    char err[256];
    char buf[RGM_REF_IMAGE_STR_MAX];
    int rc;

    if (!s)
        return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    rc = rgm_ref_parse_path(s, &p);
    if (rc == 0 && p.kind != RGM_REF_ROUTE_ROOT && !rgm_ref_valid_name(p.name))
        abort(); /* a parsed name is always valid */
    if (rc == 0 && p.is_digest && !rgm_ref_valid_digest(p.reference))
        abort();
    rc = rgm_ref_parse_path_ex(s, any_registry, NULL, &p);
    if (rc == 0 && (p.kind == RGM_REF_ROUTE_BLOB || p.kind == RGM_REF_ROUTE_REFERRERS) &&
        (!p.is_digest || !rgm_ref_valid_digest(p.reference)))
        abort(); /* blobs and referrers take a valid digest only */
    if (rgm_ref_parse_image(s, &img, err, sizeof(err)) == 0) {
        if (rgm_ref_image_format(&img, buf, sizeof(buf)) < 0)
            abort();
        if (!rgm_ref_valid_name(img.repository) ||
            (img.digest[0] && !rgm_ref_valid_digest(img.digest)) ||
            (img.tag[0] && !rgm_ref_valid_tag(img.tag)))
            abort();
    }
    (void)rgm_ref_valid_tag(s);
    (void)rgm_ref_valid_host(s);
    free(s);
    return 0;
}
