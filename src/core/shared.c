/* core/shared.c - see shared.h. */
#include "core/shared.h"

#include <stdlib.h>

#include "core/common.h"

tg_shared_t *tg_shared_new(size_t len)
{
    if (len > UINT32_MAX)
        return NULL;
    tg_shared_t *s = malloc(sizeof(*s) + len);
    if (!s)
        return NULL;
    atomic_init(&s->refs, 1);
    s->len = (uint32_t)len;
    s->release = NULL;
    return s;
}

void tg_shared_unref(tg_shared_t *s)
{
    if (!s)
        return;
    /* Release ordering on the way down, acquire at zero: every write made by
     * other holders happens before the block is freed. */
    if (atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (s->release)
        s->release(s);
    else
        free(s);
}
