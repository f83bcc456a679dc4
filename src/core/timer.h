/* core/timer.h - hierarchical timing wheel, one per IO loop. Loop thread only
 * (other threads post to the loop's mailbox). Arm and cancel are O(1) and never
 * allocate: timers are embedded in their owners (a connection, a job).
 *
 * Six levels of 64 slots with 1 ms ticks cover 2^36 ms (about two years); longer
 * delays are clamped, and the rare timer whose due tick lies past the top
 * level's current rotation waits on a far list re-filed once per rotation. A timer sits at the level of the highest bit in which its
 * due tick differs from the wheel's current tick, so a slot is only ever looked
 * at when time reaches it: running the wheel costs O(levels + timers touched),
 * however long the loop slept, and a million idle timers cost nothing per tick.
 * Timers fire in due order; ties fire in no promised order. */
#ifndef TG_CORE_TIMER_H
#define TG_CORE_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"

#define TG_WHEEL_LEVELS 6
#define TG_WHEEL_SLOTS  64

typedef struct tg_timer tg_timer_t;
typedef void tg_timer_cb(tg_timer_t *t);

struct tg_timer {
    tg_link_t    link;   /* slot list; private to timer.c */
    uint64_t     due_ms; /* absolute, wheel clock */
    tg_timer_cb *cb;     /* called once when due; the timer is disarmed first */
};

typedef struct tg_wheel {
    uint64_t  now_ms;                                   /* last tick run */
    uint64_t  occupied[TG_WHEEL_LEVELS];                /* bit per slot; may be stale-set */
    tg_link_t slots[TG_WHEEL_LEVELS][TG_WHEEL_SLOTS];
    tg_link_t due;                                      /* armed at or before now */
    tg_link_t far;                                      /* beyond the top level's rotation */
    uint64_t  armed;                                    /* timers currently armed */
} tg_wheel_t;

/* Lifecycle. <now_ms> is the wheel's starting time (any monotonic clock). */
void tg_wheel_init(tg_wheel_t *w, uint64_t now_ms);

/* Zeroes <t> and sets its callback; call once before the first arm. */
void tg_timer_init(tg_timer_t *t, tg_timer_cb *cb);
/* Arms <t> to fire <after_ms> from the wheel's now; re-arming an armed timer moves it. */
void tg_timer_arm(tg_wheel_t *w, tg_timer_t *t, uint64_t after_ms);
/* Disarms <t>. A no-op when not armed; safe inside any timer callback. */
void tg_timer_cancel(tg_wheel_t *w, tg_timer_t *t);
static inline bool tg_timer_armed(const tg_timer_t *t)
{
    return tg_link_linked(&t->link);
}

/* Advances the wheel to <now_ms> and fires every timer due by then, in due
 * order. Callbacks may arm and cancel any timer. Returns how many fired. */
unsigned tg_wheel_run(tg_wheel_t *w, uint64_t now_ms);
/* Milliseconds until the wheel next needs running (never late, may be early),
 * or -1 when no timer is armed: the epoll_wait timeout. */
int tg_wheel_next_ms(tg_wheel_t *w);

/* Introspection: invariants hold (for tests). */
bool tg_wheel_check(const tg_wheel_t *w);

#endif
