/* Path globs: '*' within a segment, '**' across segments. Matching is a dynamic programme
 * over (pattern position, text position), so a pattern of many stars cannot take
 * exponential time on a long repository name. */
#include "core/glob.h"

int rgm_glob_is_pattern(const char *s)
{
    return strchr(s, '*') != NULL;
}

/* Rows of the table: is[j] says pattern[0..i) matches text[0..j). Two rows, reused. */
int rgm_glob_match(const char *pattern, const char *text)
{
    size_t plen = strlen(pattern);
    size_t tlen = strlen(text);
    unsigned char *prev = rgm_calloc(tlen + 1, 1);
    unsigned char *cur = rgm_calloc(tlen + 1, 1);
    unsigned char *tmp;
    size_t i = 0, j;
    int is_match;

    prev[0] = 1;
    while (i < plen) {
        int is_star = pattern[i] == '*';
        int is_double = is_star && pattern[i + 1] == '*';
        size_t step = is_double ? 2 : 1;

        memset(cur, 0, tlen + 1);
        for (j = 0; j <= tlen; j++) {
            if (is_star) {
                /* zero characters, or one more character the star may take */
                cur[j] = prev[j] || (j > 0 && cur[j - 1] && (is_double || text[j - 1] != '/'));
            } else {
                cur[j] = j > 0 && prev[j - 1] && text[j - 1] == pattern[i];
            }
        }
        tmp = prev;
        prev = cur;
        cur = tmp;
        i += step;
    }
    is_match = prev[tlen];
    free(prev);
    free(cur);
    return is_match;
}
