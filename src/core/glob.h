/* Path globs for repository filters and pins: '*' matches any run of characters within one
 * '/'-separated segment, '**' any run including '/', anything else itself. Pure and
 * synchronous; it knows strings, not references (registry/filter and cache/pins use it). */
#ifndef RGM_CORE_GLOB_H
#define RGM_CORE_GLOB_H

#include "core/common.h"

/* 1 when text matches pattern as a whole, else 0. Both are borrowed. "library/\*" matches
 * "library/nginx" but not "library/a/b"; "org/\*\*" matches "org/a" and "org/a/b" but not
 * "org" (the backslashes only keep this comment a comment). The work is bounded by len(pattern) *
 * len(text) (no backtracking blow-up). */
int rgm_glob_match(const char *pattern, const char *text);

/* 1 when s holds a '*', else 0. */
int rgm_glob_is_pattern(const char *s);

#endif
