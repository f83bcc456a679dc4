/* lib/backend/memo.h - the reply memory of libtidegate-backend: one slot per
 * job id, from the job's arrival (running: no reply yet) until DONE_BELOW
 * settles it (answered: the encoded reply frame, resent as it is when the gate
 * resubmits the job). Private to lib/backend/; the backend's thread only.
 *
 * An open-addressing table (linear probing, Fibonacci hash of the id,
 * backward-shift deletion: no tombstones), at most half full, shrunk when a
 * prune leaves it under 1/8. Find, add and delete are O(1) on average; prune
 * and clear walk the table. Slot pointers are valid until the next add, del,
 * prune or clear. */
#ifndef TGB_MEMO_H
#define TGB_MEMO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tgb_memo_slot {
    uint64_t id;       /* 0: an empty slot (job ids are never 0) */
    uint8_t *frame;    /* the REPLY or ERROR frame, header included, malloc'd and
                        * owned here; NULL while the job is running */
    size_t   len;      /* bytes of <frame> */
    uint32_t link;     /* running: the link generation that waits for the reply */
    bool     reported; /* the on_done hook ran for this job */
} tgb_memo_slot_t;

typedef struct tgb_memo {
    tgb_memo_slot_t *slots; /* NULL while empty and never grown */
    size_t           cap;   /* a power of two, or 0 */
    unsigned         shift; /* 64 - log2(cap) */
    size_t           count; /* slots in use */
    size_t           running; /* of those, without a reply */
    size_t           bytes; /* sum of the replies' lengths */
} tgb_memo_t;

/* Lifecycle. */
void tgb_memo_init(tgb_memo_t *m);
/* Frees every reply and the table. */
void tgb_memo_fini(tgb_memo_t *m);

/* Use. */

/* The slot of <id>, or NULL. */
tgb_memo_slot_t *tgb_memo_find(tgb_memo_t *m, uint64_t id);
/* Adds a running slot for <id> (not 0, not present). Returns it, or NULL
 * when the table cannot grow (the memory is unchanged). */
tgb_memo_slot_t *tgb_memo_add(tgb_memo_t *m, uint64_t id);
/* Copies <frame>,<len> into running slot <s>, which becomes answered.
 * Returns 0, or -ENOMEM (<s> stays running), -EEXIST (already answered). */
int tgb_memo_store(tgb_memo_t *m, tgb_memo_slot_t *s, const uint8_t *frame, size_t len);
/* Removes <id>, running or answered, freeing its reply. Returns whether it was there. */
bool tgb_memo_del(tgb_memo_t *m, uint64_t id);
/* DONE_BELOW: removes every answered slot with an id below <below>; running
 * ones stay (their job still gets its reply). Returns how many went. */
size_t tgb_memo_prune(tgb_memo_t *m, uint64_t below);
/* A new gate epoch: removes every slot, running ones too. */
void tgb_memo_clear(tgb_memo_t *m);

/* Introspection. */

/* Answered slots (remembered replies). */
static inline size_t tgb_memo_answered(const tgb_memo_t *m)
{
    return m->count - m->running;
}
/* Invariants, for tests: counts and byte sum match the slots, every id is
 * found from its home slot, the table is at most half full. */
bool tgb_memo_check(tgb_memo_t *m);

#endif
