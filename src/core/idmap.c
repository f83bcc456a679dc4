/* core/idmap.c - see idmap.h. */
#include "core/idmap.h"

#include <errno.h>
#include <stdlib.h>

static size_t slot_of(uint64_t id, size_t cap)
{
    id ^= id >> 33; /* ids are often sequential: mix before masking */
    id *= 0xff51afd7ed558ccdull;
    id ^= id >> 33;
    return (size_t)id & (cap - 1);
}

static void insert(tg_idmap_slot_t *slots, size_t cap, uint64_t id, void *val)
{
    size_t i = slot_of(id, cap);
    while (slots[i].id)
        i = (i + 1) & (cap - 1);
    slots[i].id = id;
    slots[i].val = val;
}

static int resize(tg_idmap_t *m, size_t cap)
{
    tg_idmap_slot_t *s = calloc(cap, sizeof(*s));
    if (!s)
        return -ENOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].id)
            insert(s, cap, m->slots[i].id, m->slots[i].val);
    free(m->slots);
    m->slots = s;
    m->cap = cap;
    return 0;
}

void tg_idmap_fini(tg_idmap_t *m)
{
    free(m->slots);
    *m = TG_IDMAP_INIT;
}

int tg_idmap_put(tg_idmap_t *m, uint64_t id, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3 && resize(m, m->cap ? m->cap * 2 : 16) != 0)
        return -ENOMEM;
    insert(m->slots, m->cap, id, val);
    m->n++;
    return 0;
}

void *tg_idmap_get(const tg_idmap_t *m, uint64_t id)
{
    if (!m->cap || !id)
        return NULL;
    for (size_t i = slot_of(id, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (m->slots[i].id == id)
            return m->slots[i].val;
        if (!m->slots[i].id)
            return NULL;
    }
}

void *tg_idmap_del(tg_idmap_t *m, uint64_t id)
{
    if (!m->cap || !id)
        return NULL;
    size_t mask = m->cap - 1, i = slot_of(id, m->cap);
    while (m->slots[i].id != id) {
        if (!m->slots[i].id)
            return NULL;
        i = (i + 1) & mask;
    }
    void *val = m->slots[i].val;
    /* Backward shift: pull later entries of the run into the hole when their
     * home slot is not between the hole and them. */
    for (size_t j = (i + 1) & mask; m->slots[j].id; j = (j + 1) & mask) {
        size_t home = slot_of(m->slots[j].id, m->cap);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->slots[i] = m->slots[j];
            i = j;
        }
    }
    m->slots[i].id = 0;
    m->slots[i].val = NULL;
    m->n--;
    if (m->cap > 16 && m->n * 8 < m->cap)
        (void)resize(m, m->cap / 2); /* failing to shrink is harmless */
    return val;
}
