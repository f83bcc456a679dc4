/* core/idmap.h - a hash map from non-zero 64-bit ids to pointers: open
 * addressing, linear probing, deletion by backward shift (no tombstones), so
 * lookups stay short however many inserts and deletes a long-lived map sees.
 * It grows at 3/4 full and shrinks below 1/8 (never under 16 slots). One
 * thread; O(1) expected per operation. */
#ifndef TG_CORE_IDMAP_H
#define TG_CORE_IDMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct tg_idmap_slot {
    uint64_t id; /* 0: empty */
    void    *val;
} tg_idmap_slot_t;

typedef struct tg_idmap {
    tg_idmap_slot_t *slots;
    size_t           cap; /* a power of two, or 0 before the first insert */
    size_t           n;
} tg_idmap_t;

#define TG_IDMAP_INIT ((tg_idmap_t){ NULL, 0, 0 })

void  tg_idmap_fini(tg_idmap_t *m);
/* Maps <id> (non-zero, not present) to <val>. Returns 0 or -ENOMEM. */
int   tg_idmap_put(tg_idmap_t *m, uint64_t id, void *val);
/* The value of <id>, or NULL. */
void *tg_idmap_get(const tg_idmap_t *m, uint64_t id);
/* Removes <id>; returns its value, or NULL when absent. */
void *tg_idmap_del(tg_idmap_t *m, uint64_t id);

static inline size_t tg_idmap_count(const tg_idmap_t *m)
{
    return m->n;
}

#endif
