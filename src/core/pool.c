/* core/pool.c - see pool.h. */
#include "core/pool.h"

#include <stdlib.h>

#include "core/common.h"

void tg_pool_init(tg_pool_t *p, size_t size, uint32_t keep)
{
    p->size = size < sizeof(tg_pool_block_t) ? sizeof(tg_pool_block_t) : size;
    p->free = NULL;
    p->nfree = 0;
    p->keep = keep;
    p->taken = 0;
    p->refs = NULL;
}

void tg_pool_fini(tg_pool_t *p)
{
    TG_ASSERT(p->taken == 0);
    while (p->free) {
        tg_pool_block_t *b = p->free;
        p->free = b->next;
        free(b);
    }
    p->nfree = 0;
}

void *tg_pool_take(tg_pool_t *p)
{
    tg_pool_block_t *b = p->free;
    if (b) {
        p->free = b->next;
        p->nfree--;
    } else {
        b = malloc(p->size);
        if (!b)
            return NULL;
    }
    p->taken++;
    return b;
}

void tg_pool_give(tg_pool_t *p, void *ptr)
{
    if (!ptr)
        return;
    TG_DASSERT(p->taken > 0);
    p->taken--;
    if (p->nfree >= p->keep) {
        free(ptr);
        return;
    }
    tg_pool_block_t *b = ptr;
    b->next = p->free;
    p->free = b;
    p->nfree++;
}
