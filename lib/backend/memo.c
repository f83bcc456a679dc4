/* lib/backend/memo.c - the reply memory: see memo.h. */
#include "memo.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define MEMO_MIN 64 /* slots of the smallest table */

static size_t home(const tgb_memo_t *m, uint64_t id)
{
    /* Fibonacci hashing: job ids are mostly consecutive, the multiply spreads them. */
    return (size_t)((id * UINT64_C(0x9e3779b97f4a7c15)) >> m->shift);
}

static unsigned log2_of(size_t cap)
{
    unsigned n = 0;
    while ((size_t)1 << n < cap)
        n++;
    return n;
}

/* Rebuilds the table with <cap> slots (a power of two, at least twice the
 * count). Returns 0, or -ENOMEM with the table unchanged. */
static int resize(tgb_memo_t *m, size_t cap)
{
    tgb_memo_slot_t *slots = calloc(cap, sizeof(*slots));
    if (!slots)
        return -ENOMEM;
    tgb_memo_slot_t *old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    m->shift = 64 - log2_of(cap);
    for (size_t i = 0; i < old_cap; i++) {
        if (old[i].id == 0)
            continue;
        size_t j = home(m, old[i].id);
        while (slots[j].id != 0)
            j = (j + 1) & (cap - 1);
        slots[j] = old[i];
    }
    free(old);
    return 0;
}

void tgb_memo_init(tgb_memo_t *m)
{
    memset(m, 0, sizeof(*m));
}

void tgb_memo_fini(tgb_memo_t *m)
{
    for (size_t i = 0; i < m->cap; i++)
        free(m->slots[i].frame);
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

static size_t index_of(const tgb_memo_t *m, uint64_t id, bool *found)
{
    size_t i = home(m, id);
    while (m->slots[i].id != 0) {
        if (m->slots[i].id == id) {
            *found = true;
            return i;
        }
        i = (i + 1) & (m->cap - 1);
    }
    *found = false;
    return i;
}

tgb_memo_slot_t *tgb_memo_find(tgb_memo_t *m, uint64_t id)
{
    bool found;
    if (m->count == 0 || id == 0)
        return NULL;
    size_t i = index_of(m, id, &found);
    return found ? &m->slots[i] : NULL;
}

tgb_memo_slot_t *tgb_memo_add(tgb_memo_t *m, uint64_t id)
{
    bool found;
    if (id == 0)
        return NULL;
    if ((m->count + 1) * 2 > m->cap && resize(m, m->cap ? m->cap * 2 : MEMO_MIN) != 0)
        return NULL;
    size_t i = index_of(m, id, &found);
    if (found)
        return NULL; /* the caller looks first; a second slot for one id would hide it */
    tgb_memo_slot_t *s = &m->slots[i];
    memset(s, 0, sizeof(*s));
    s->id = id;
    m->count++;
    m->running++;
    return s;
}

int tgb_memo_store(tgb_memo_t *m, tgb_memo_slot_t *s, const uint8_t *frame, size_t len)
{
    if (s->frame)
        return -EEXIST;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, frame, len);
    s->frame = copy;
    s->len = len;
    m->running--;
    m->bytes += len;
    return 0;
}

/* Empties slot <i> and moves later slots of its probe run back into the hole,
 * so that every id stays reachable from its home without tombstones. A slot
 * at <j> may move to the hole at <i> only if its home is not cyclically in
 * (i, j]. */
static void remove_at(tgb_memo_t *m, size_t i)
{
    tgb_memo_slot_t *s = &m->slots[i];
    if (s->frame) {
        m->bytes -= s->len;
        free(s->frame);
    } else {
        m->running--;
    }
    m->count--;
    size_t mask = m->cap - 1;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (m->slots[j].id == 0)
            break;
        size_t k = home(m, m->slots[j].id);
        bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
        if (stays)
            continue;
        m->slots[i] = m->slots[j];
        i = j;
    }
    memset(&m->slots[i], 0, sizeof(m->slots[i]));
}

bool tgb_memo_del(tgb_memo_t *m, uint64_t id)
{
    bool found;
    if (m->count == 0 || id == 0)
        return false;
    size_t i = index_of(m, id, &found);
    if (found)
        remove_at(m, i);
    return found;
}

size_t tgb_memo_prune(tgb_memo_t *m, uint64_t below)
{
    size_t gone = 0;
    /* After a removal slot <i> holds the slot shifted into it, so it is looked
     * at again. Shifts only move slots towards <i> (cyclically): one not yet
     * seen never lands behind the scan; one that wraps round from the start is
     * looked at twice, which is harmless. */
    for (size_t i = 0; i < m->cap;) {
        tgb_memo_slot_t *s = &m->slots[i];
        if (s->id != 0 && s->frame && s->id < below) {
            remove_at(m, i);
            gone++;
        } else {
            i++;
        }
    }
    if (m->cap > MEMO_MIN && m->count * 8 < m->cap) {
        size_t cap = MEMO_MIN;
        while (cap < m->count * 4)
            cap *= 2;
        (void)resize(m, cap); /* shrinking is optional: on -ENOMEM the table stays as it is */
    }
    return gone;
}

void tgb_memo_clear(tgb_memo_t *m)
{
    tgb_memo_fini(m);
}

bool tgb_memo_check(tgb_memo_t *m)
{
    size_t count = 0, running = 0, bytes = 0;
    if (m->cap == 0)
        return m->slots == NULL && m->count == 0 && m->running == 0 && m->bytes == 0;
    if ((m->cap & (m->cap - 1)) != 0 || m->shift != 64 - log2_of(m->cap))
        return false;
    for (size_t i = 0; i < m->cap; i++) {
        tgb_memo_slot_t *s = &m->slots[i];
        if (s->id == 0) {
            if (s->frame)
                return false;
            continue;
        }
        count++;
        if (s->frame)
            bytes += s->len;
        else
            running++;
        if (tgb_memo_find(m, s->id) != s)
            return false;
    }
    return count == m->count && running == m->running && bytes == m->bytes &&
           m->count * 2 <= m->cap;
}
