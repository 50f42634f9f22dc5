#ifndef RGM_CACHE_INDEX_H
#define RGM_CACHE_INDEX_H
/* not written yet */
#endif
