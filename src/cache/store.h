#ifndef RGM_CACHE_STORE_H
#define RGM_CACHE_STORE_H
/* not written yet */
#endif
