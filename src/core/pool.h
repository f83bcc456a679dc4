/* core/pool.h - free list of fixed-size blocks, one per IO loop and block size.
 * Loop thread only. Take and give are O(1) and touch no lock; blocks beyond
 * <keep> free ones go back to malloc so that a burst does not pin memory
 * forever (connection storms must return RSS to baseline). */
#ifndef TG_CORE_POOL_H
#define TG_CORE_POOL_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg_pool_block {
    struct tg_pool_block *next;
} tg_pool_block_t;

typedef struct tg_pool {
    size_t           size;  /* bytes per block */
    tg_pool_block_t *free;  /* free list */
    uint32_t         nfree; /* blocks on the free list */
    uint32_t         keep;  /* most blocks kept free */
    uint64_t         taken; /* blocks out, for stats and leak checks */
    struct tg_pool  *refs;  /* tg_buf: where reference chunks come from (NULL: none) */
} tg_pool_t;

void tg_pool_init(tg_pool_t *p, size_t size, uint32_t keep);
/* Frees the free list. Blocks still taken are the caller's bug (asserted). */
void tg_pool_fini(tg_pool_t *p);

/* A block of p->size bytes, uninitialised, or NULL when memory is out. */
void *tg_pool_take(tg_pool_t *p);
/* Returns <b>, which must come from this pool. NULL is a no-op. */
void tg_pool_give(tg_pool_t *p, void *b);

#endif
