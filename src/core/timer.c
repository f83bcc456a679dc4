/* core/timer.c - see timer.h for the scheme. */
#include "core/timer.h"

#include <string.h>

#include "core/common.h"

#define LEVEL_BITS 6
#define ROTATION_BITS (TG_WHEEL_LEVELS * LEVEL_BITS)
#define MAX_DELAY     ((UINT64_C(1) << ROTATION_BITS) - 1)

void tg_wheel_init(tg_wheel_t *w, uint64_t now_ms)
{
    memset(w, 0, sizeof(*w));
    w->now_ms = now_ms;
    for (int l = 0; l < TG_WHEEL_LEVELS; l++)
        for (int s = 0; s < TG_WHEEL_SLOTS; s++)
            tg_list_init(&w->slots[l][s]);
    tg_list_init(&w->due);
    tg_list_init(&w->far);
}

void tg_timer_init(tg_timer_t *t, tg_timer_cb *cb)
{
    memset(t, 0, sizeof(*t));
    t->cb = cb;
}

/* Files <t> by its due tick relative to the wheel's now. */
static void place(tg_wheel_t *w, tg_timer_t *t)
{
    if (t->due_ms <= w->now_ms) {
        tg_list_push(&w->due, &t->link);
        return;
    }
    uint64_t diff = t->due_ms ^ w->now_ms;
    int level = (63 - __builtin_clzll(diff)) / LEVEL_BITS;
    if (level >= TG_WHEEL_LEVELS) {
        tg_list_push(&w->far, &t->link);
        return;
    }
    int slot = (int)((t->due_ms >> (level * LEVEL_BITS)) & (TG_WHEEL_SLOTS - 1));
    tg_list_push(&w->slots[level][slot], &t->link);
    w->occupied[level] |= UINT64_C(1) << slot;
}

void tg_timer_arm(tg_wheel_t *w, tg_timer_t *t, uint64_t after_ms)
{
    if (tg_link_linked(&t->link))
        tg_link_remove(&t->link);
    else
        w->armed++;
    if (after_ms > MAX_DELAY)
        after_ms = MAX_DELAY;
    t->due_ms = w->now_ms + after_ms;
    place(w, t);
}

void tg_timer_cancel(tg_wheel_t *w, tg_timer_t *t)
{
    if (!tg_link_linked(&t->link))
        return;
    /* The slot's occupied bit stays set; the next scan finds the slot empty
     * and clears it. That keeps cancel free of any slot bookkeeping. */
    tg_link_remove(&t->link);
    w->armed--;
}

/* The tick at which slot <slot> of <level> begins, in the current rotation. */
static uint64_t slot_start(const tg_wheel_t *w, int level, int slot)
{
    int shift = (level + 1) * LEVEL_BITS;
    uint64_t base = shift >= 64 ? 0 : (w->now_ms >> shift) << shift;
    return base | ((uint64_t)slot << (level * LEVEL_BITS));
}

/* The earliest tick at which some non-empty slot must be looked at, or
 * UINT64_MAX. Clears stale occupied bits on the way. */
static uint64_t next_event(tg_wheel_t *w)
{
    uint64_t best = UINT64_MAX;
    if (!tg_list_empty(&w->far))
        best = ((w->now_ms >> ROTATION_BITS) + 1) << ROTATION_BITS;
    for (int l = 0; l < TG_WHEEL_LEVELS; l++) {
        while (w->occupied[l]) {
            int s = __builtin_ctzll(w->occupied[l]);
            if (!tg_list_empty(&w->slots[l][s])) {
                uint64_t at = slot_start(w, l, s);
                if (at < best)
                    best = at;
                break;
            }
            w->occupied[l] &= ~(UINT64_C(1) << s);
        }
    }
    return best;
}

static unsigned fire_due(tg_wheel_t *w)
{
    unsigned fired = 0;
    tg_link_t *l;
    while ((l = tg_list_shift(&w->due)) != NULL) {
        tg_timer_t *t = tg_container_of(l, tg_timer_t, link);
        w->armed--;
        fired++;
        t->cb(t); /* may free <t>: touch nothing of it afterwards */
    }
    return fired;
}

unsigned tg_wheel_run(tg_wheel_t *w, uint64_t now_ms)
{
    unsigned fired = fire_due(w);
    if (now_ms < w->now_ms)
        return fired;
    for (;;) {
        uint64_t at = next_event(w);
        if (at > now_ms) {
            w->now_ms = now_ms;
            break;
        }
        w->now_ms = at;
        if ((at & MAX_DELAY) == 0 && !tg_list_empty(&w->far)) {
            tg_link_t moving;
            tg_list_init(&moving);
            tg_list_splice(&moving, &w->far);
            tg_link_t *l;
            while ((l = tg_list_shift(&moving)) != NULL)
                place(w, tg_container_of(l, tg_timer_t, link));
        }
        /* Every slot that begins at <at> is re-filed: timers due now land on
         * the due list, later ones drop to a lower level. Top level first, so
         * that order among equal due ticks is kept. */
        for (int lv = TG_WHEEL_LEVELS - 1; lv >= 0; lv--) {
            int s = (int)((at >> (lv * LEVEL_BITS)) & (TG_WHEEL_SLOTS - 1));
            if (slot_start(w, lv, s) != at || !(w->occupied[lv] & (UINT64_C(1) << s)))
                continue;
            w->occupied[lv] &= ~(UINT64_C(1) << s);
            tg_link_t moving;
            tg_list_init(&moving);
            tg_list_splice(&moving, &w->slots[lv][s]);
            tg_link_t *l;
            while ((l = tg_list_shift(&moving)) != NULL)
                place(w, tg_container_of(l, tg_timer_t, link));
        }
        fired += fire_due(w);
    }
    return fired;
}

int tg_wheel_next_ms(tg_wheel_t *w)
{
    if (w->armed == 0)
        return -1;
    if (!tg_list_empty(&w->due))
        return 0;
    uint64_t at = next_event(w);
    if (at == UINT64_MAX)
        return -1;
    uint64_t d = at - w->now_ms;
    return d > INT32_MAX ? INT32_MAX : (int)d;
}

bool tg_wheel_check(const tg_wheel_t *w)
{
    uint64_t n = 0;
    for (const tg_link_t *l = w->due.next; l != &w->due; l = l->next) {
        if (tg_container_of(l, tg_timer_t, link)->due_ms > w->now_ms)
            return false;
        n++;
    }
    for (const tg_link_t *l = w->far.next; l != &w->far; l = l->next) {
        if ((tg_container_of(l, tg_timer_t, link)->due_ms >> ROTATION_BITS) ==
            (w->now_ms >> ROTATION_BITS))
            return false;
        n++;
    }
    for (int lv = 0; lv < TG_WHEEL_LEVELS; lv++) {
        for (int s = 0; s < TG_WHEEL_SLOTS; s++) {
            const tg_link_t *head = &w->slots[lv][s];
            if (!tg_list_empty(head) && !(w->occupied[lv] & (UINT64_C(1) << s)))
                return false;
            for (const tg_link_t *l = head->next; l != head; l = l->next) {
                const tg_timer_t *t = tg_container_of(l, tg_timer_t, link);
                uint64_t diff = t->due_ms ^ w->now_ms;
                if (t->due_ms <= w->now_ms || (63 - __builtin_clzll(diff)) / LEVEL_BITS != lv)
                    return false;
                if ((int)((t->due_ms >> (lv * LEVEL_BITS)) & (TG_WHEEL_SLOTS - 1)) != s)
                    return false;
                n++;
            }
        }
    }
    return n == w->armed;
}
