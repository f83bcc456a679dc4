/* tests/unit/core/test_timer.c - the timing wheel (src/core/timer.h).
 *
 * Every test drives a wheel by hand through run_to(), which runs the wheel to a
 * target time and checks tg_wheel_check() after every step. Timers live in a
 * fixture and record what happened to them; the checks compare that record with
 * what the contract promises: due order, never early, never later than the step
 * that crossed the due time, cancel means never, and tg_wheel_next_ms() is never
 * later than the earliest armed timer. Deterministic: one fixed-seed generator. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/common.h"
#include "core/timer.h"

#define ROTATION     (UINT64_C(1) << 36) /* what six levels of 64 slots cover */
#define MAX_DELAY    (ROTATION - 1)      /* longer delays are clamped to this */
#define HOUR_MS      UINT64_C(3600000)
#define NTIMERS      64                  /* timers in the fixture */
#define MILLION      1000000

#include "../rng.h"

/* A value below 2^bits with bits uniform in [0, max_bits]: every level gets its share. */
static uint64_t rng_magnitude(unsigned max_bits)
{
    unsigned bits = (unsigned)(rng_next() % (max_bits + 1));
    return bits == 0 ? 0 : rng_next() & ((UINT64_C(1) << bits) - 1);
}

/* ---- fixture ---- */

struct fixture;

/* A timer and what happened to it. */
struct ttimer {
    tg_timer_t      t;
    struct fixture *f;
    unsigned        fires;      /* callbacks so far */
    uint64_t        fired_due;  /* t.due_ms when it last fired */
    uint64_t        fired_now;  /* the wheel's clock inside the last callback */
    uint64_t        fired_seq;  /* 1 + global firing rank of the last callback */
    uint64_t        expect_due; /* due time set by the last arm() */
    /* What the callback does besides recording. */
    struct ttimer  *cancel;     /* cancels this timer */
    struct ttimer  *arm;        /* arms this timer ... */
    uint64_t        arm_ms;     /* ... with this delay */
    uint64_t        period;     /* re-arms itself with this delay while fires < limit */
    unsigned        limit;
    bool            cancel_self;
};

struct fixture {
    tg_wheel_t    wheel;
    uint64_t      start;        /* the wheel's starting time */
    uint64_t      now;          /* target of the last run */
    uint64_t      target;       /* target of the run in progress */
    uint64_t      seq;          /* callbacks so far, all timers */
    uint64_t      last_due;     /* due of the last timer fired */
    unsigned      out_of_order; /* a timer fired with a due before the previous one's */
    unsigned      early;        /* a timer fired before its due time */
    unsigned      still_armed;  /* a timer was still armed when its callback began */
    struct ttimer timers[NTIMERS];
};

static void on_fire(tg_timer_t *t)
{
    struct ttimer *tt = tg_container_of(t, struct ttimer, t);
    struct fixture *f = tt->f;
    if (tg_timer_armed(t))
        f->still_armed++; /* "the timer is disarmed first" */
    if (t->due_ms > f->target || t->due_ms > f->wheel.now_ms)
        f->early++;
    if (f->seq > 0 && t->due_ms < f->last_due)
        f->out_of_order++;
    f->last_due = t->due_ms;
    tt->fires++;
    tt->fired_due = t->due_ms;
    tt->fired_now = f->wheel.now_ms;
    tt->fired_seq = ++f->seq;
    if (tt->cancel)
        tg_timer_cancel(&f->wheel, &tt->cancel->t);
    if (tt->cancel_self)
        tg_timer_cancel(&f->wheel, t);
    if (tt->arm)
        tg_timer_arm(&f->wheel, &tt->arm->t, tt->arm_ms);
    if (tt->period && tt->fires < tt->limit)
        tg_timer_arm(&f->wheel, t, tt->period);
}

static void fixture_reset(struct fixture *f, uint64_t start)
{
    memset(f, 0, sizeof(*f));
    tg_wheel_init(&f->wheel, start);
    f->start = f->now = f->target = start;
    for (int i = 0; i < NTIMERS; i++) {
        f->timers[i].f = f;
        tg_timer_init(&f->timers[i].t, on_fire);
    }
    assert_true(tg_wheel_check(&f->wheel));
}

static int setup(void **state)
{
    struct fixture *f = malloc(sizeof(*f));
    if (!f)
        return -1;
    fixture_reset(f, 1000);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

/* Runs the wheel to <t>; checks the invariants, the fired count and that
 * nothing fired early. Returns how many fired. */
static unsigned run_to(struct fixture *f, uint64_t t)
{
    uint64_t before = f->seq;
    f->target = t;
    unsigned n = tg_wheel_run(&f->wheel, t);
    f->now = t;
    assert_true(tg_wheel_check(&f->wheel));
    assert_int_equal(n, f->seq - before);
    assert_int_equal(f->early, 0);
    assert_int_equal(f->still_armed, 0);
    assert_int_equal(f->out_of_order, 0);
    return n;
}

static void arm(struct fixture *f, struct ttimer *tt, uint64_t after_ms)
{
    tg_timer_arm(&f->wheel, &tt->t, after_ms);
    tt->expect_due = f->wheel.now_ms + (after_ms > MAX_DELAY ? MAX_DELAY : after_ms);
    assert_int_equal(tt->t.due_ms, tt->expect_due);
    assert_true(tg_timer_armed(&tt->t));
    assert_true(tg_wheel_check(&f->wheel));
}

/* The earliest due among armed fixture timers, or UINT64_MAX. */
static uint64_t earliest_due(const struct fixture *f)
{
    uint64_t best = UINT64_MAX;
    for (int i = 0; i < NTIMERS; i++)
        if (tg_timer_armed(&f->timers[i].t) && f->timers[i].t.due_ms < best)
            best = f->timers[i].t.due_ms;
    return best;
}

/* tg_wheel_next_ms() is -1 exactly when nothing is armed and is otherwise
 * never later than <earliest> (an absolute time). */
static void assert_next_not_late(struct fixture *f, uint64_t earliest)
{
    int next = tg_wheel_next_ms(&f->wheel);
    if (earliest == UINT64_MAX) {
        assert_int_equal(next, -1);
        return;
    }
    assert_true(next >= 0);
    uint64_t until = earliest > f->now ? earliest - f->now : 0;
    assert_true((uint64_t)next <= until);
}

/* ---- basics ---- */

static void empty_wheel_has_nothing_to_run(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
    assert_int_equal(run_to(f, f->now + 1), 0);
    assert_int_equal(run_to(f, f->now + 5 * HOUR_MS), 0);
    assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
    assert_int_equal(f->wheel.armed, 0);
}

static void timer_fires_once_at_its_due_time(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0];
    arm(f, a, 10);
    assert_int_equal(a->t.due_ms, f->now + 10);
    assert_int_equal(f->wheel.armed, 1);
    uint64_t due = f->now + 10;
    assert_int_equal(run_to(f, due - 1), 0);
    assert_int_equal(run_to(f, due), 1);
    assert_int_equal(a->fires, 1);
    assert_int_equal(a->fired_now, due);
    assert_false(tg_timer_armed(&a->t));
    assert_int_equal(run_to(f, due + 1000), 0);
    assert_int_equal(a->fires, 1);
    assert_int_equal(f->wheel.armed, 0);
    assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
}

static void zero_delay_fires_at_the_next_run(void **state)
{
    struct fixture *f = *state;
    arm(f, &f->timers[0], 0);
    assert_int_equal(tg_wheel_next_ms(&f->wheel), 0);
    assert_int_equal(run_to(f, f->now), 1); /* same time: due is now */
    assert_int_equal(f->timers[0].fires, 1);
}

static void delays_beyond_two_to_the_36_are_clamped(void **state)
{
    struct fixture *f = *state;
    arm(f, &f->timers[0], UINT64_MAX / 2);
    assert_int_equal(f->timers[0].t.due_ms, f->now + MAX_DELAY);
    arm(f, &f->timers[1], ROTATION);
    assert_int_equal(f->timers[1].t.due_ms, f->now + MAX_DELAY);
    uint64_t due = f->now + MAX_DELAY;
    assert_int_equal(run_to(f, due - 1), 0);
    assert_int_equal(run_to(f, due), 2);
}

/* ---- ordering ---- */

/* Every timer of 0..n-1 fired once, in due order (each run_to() checks the
 * order as it goes; this checks the ranks across runs too), and on time for
 * the due it was armed with. */
static void assert_fired_in_due_order(struct fixture *f, int n)
{
    for (int i = 0; i < n; i++) {
        struct ttimer *a = &f->timers[i];
        assert_int_equal(a->fires, 1);
        assert_int_equal(a->fired_due, a->expect_due);
        assert_true(a->fired_now >= a->fired_due);
        for (int j = 0; j < n; j++) {
            struct ttimer *b = &f->timers[j];
            if (a->fired_due < b->fired_due)
                assert_true(a->fired_seq < b->fired_seq);
        }
    }
    assert_int_equal(f->wheel.armed, 0);
    assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
}

/* Level boundaries, duplicates and random delays, on timers 0..NTIMERS-1. */
static const uint64_t mix_delays[] = { 0,   1,    2,    5,    63,   64,   65,   100, 127,
                                       128, 500,  1000, 4095, 4096, 4097, 4160, 5000, 7,
                                       7,   64,   4096, 3,    4000, 63,   129,  2047 };

static void arm_mix(struct fixture *f, uint64_t random_max)
{
    int n = 0;
    for (size_t i = 0; i < TG_ARRAY_LEN(mix_delays); i++)
        arm(f, &f->timers[n++], mix_delays[i]);
    while (n < NTIMERS)
        arm(f, &f->timers[n++], rng_next() % random_max);
    assert_int_equal(f->wheel.armed, NTIMERS);
}

static void timers_fire_in_due_order_step_by_step(void **state)
{
    struct fixture *f = *state;
    rng_seed(1);
    arm_mix(f, 6000);
    uint64_t end = f->now + 6000;
    while (f->now < end) {
        assert_next_not_late(f, earliest_due(f));
        run_to(f, f->now + 1);
    }
    assert_fired_in_due_order(f, NTIMERS);
    for (int i = 0; i < NTIMERS; i++) /* 1 ms steps: the wheel's clock was the due time */
        assert_int_equal(f->timers[i].fired_now, f->timers[i].expect_due);
}

static void timers_fire_in_due_order_in_one_jump(void **state)
{
    struct fixture *f = *state;
    rng_seed(2);
    arm_mix(f, 6000);
    assert_int_equal(run_to(f, f->now + 6000), NTIMERS);
    assert_fired_in_due_order(f, NTIMERS);
}

static void timers_fire_in_due_order_in_random_steps(void **state)
{
    struct fixture *f = *state;
    rng_seed(3);
    arm_mix(f, 1 << 20);
    while (f->wheel.armed > 0) {
        uint64_t before = f->now;
        assert_next_not_late(f, earliest_due(f));
        run_to(f, f->now + 1 + rng_magnitude(16));
        assert_true(earliest_due(f) > f->now); /* nothing due was left behind */
        for (int i = 0; i < NTIMERS; i++)      /* what fired now was due in this step */
            if (f->timers[i].fired_now > before)
                assert_true(f->timers[i].fired_due > before || before == f->start);
    }
    assert_fired_in_due_order(f, NTIMERS);
}

/* ---- cancel ---- */

static void cancelled_timer_never_fires(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0];
    tg_timer_cancel(&f->wheel, &a->t); /* never armed: a no-op */
    assert_true(tg_wheel_check(&f->wheel));
    arm(f, a, 10);
    tg_timer_cancel(&f->wheel, &a->t);
    assert_false(tg_timer_armed(&a->t));
    assert_int_equal(f->wheel.armed, 0);
    assert_true(tg_wheel_check(&f->wheel));
    tg_timer_cancel(&f->wheel, &a->t); /* twice: still a no-op */
    assert_int_equal(f->wheel.armed, 0);
    assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
    run_to(f, f->now + 1000);
    assert_int_equal(a->fires, 0);
}

static void cancel_leaves_the_other_timers_of_its_slot(void **state)
{
    struct fixture *f = *state;
    /* Same due, then the same level-1 slot with different dues. */
    for (int i = 0; i < 6; i++)
        arm(f, &f->timers[i], i < 3 ? 10 : 4000 + (uint64_t)i);
    tg_timer_cancel(&f->wheel, &f->timers[1].t);
    tg_timer_cancel(&f->wheel, &f->timers[4].t);
    assert_true(tg_wheel_check(&f->wheel));
    assert_int_equal(f->wheel.armed, 4);
    while (f->now < f->start + 5000)
        run_to(f, f->now + 7);
    for (int i = 0; i < 6; i++)
        assert_int_equal(f->timers[i].fires, i == 1 || i == 4 ? 0 : 1);
}

static void cancel_at_every_level_then_the_wheel_is_empty(void **state)
{
    struct fixture *f = *state;
    const uint64_t d[] = { 1, 63, 64, 4095, 4096, 262143, 262144, UINT64_C(1) << 24,
                           UINT64_C(1) << 30, UINT64_C(1) << 35, MAX_DELAY };
    for (int round = 0; round < 3; round++) {
        for (size_t i = 0; i < TG_ARRAY_LEN(d); i++)
            arm(f, &f->timers[i], d[i]);
        for (size_t i = 0; i < TG_ARRAY_LEN(d); i++) {
            tg_timer_cancel(&f->wheel, &f->timers[(i * 5) % TG_ARRAY_LEN(d)].t);
            assert_true(tg_wheel_check(&f->wheel));
        }
        assert_int_equal(f->wheel.armed, 0);
        assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
        run_to(f, f->now + MAX_DELAY + 1);
        assert_int_equal(f->seq, 0);
    }
}

static void cancel_inside_callback_stops_a_later_timer(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0], *b = &f->timers[1], *c = &f->timers[2];
    a->cancel = b;
    arm(f, a, 10);
    arm(f, b, 20);   /* due after <a>: cancelled before its time */
    arm(f, c, 30);
    run_to(f, f->now + 100); /* one jump: <b> is already on its way to the due list */
    assert_int_equal(a->fires, 1);
    assert_int_equal(b->fires, 0);
    assert_int_equal(c->fires, 1);
    assert_int_equal(f->wheel.armed, 0);
}

static void cancel_inside_callback_stops_a_timer_due_at_the_same_tick(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0], *b = &f->timers[1];
    a->cancel = b;
    b->cancel = a;
    arm(f, a, 4100);
    arm(f, b, 4100);
    run_to(f, f->now + 5000);
    /* Ties fire in no promised order, but whichever goes first cancels the other. */
    assert_int_equal(a->fires + b->fires, 1);
    assert_int_equal(f->wheel.armed, 0);
    assert_int_equal(tg_wheel_next_ms(&f->wheel), -1);
}

static void cancel_self_inside_callback_is_harmless(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0], *b = &f->timers[1];
    a->cancel_self = true;
    arm(f, a, 10);
    arm(f, b, 20);
    run_to(f, f->now + 15);
    assert_int_equal(a->fires, 1);
    assert_int_equal(f->wheel.armed, 1);
    run_to(f, f->now + 15);
    assert_int_equal(b->fires, 1);
    assert_int_equal(f->wheel.armed, 0);
}

/* ---- re-arm ---- */

static void rearm_moves_a_timer(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0];
    arm(f, a, 100);
    arm(f, a, 50); /* earlier */
    assert_int_equal(f->wheel.armed, 1);
    run_to(f, f->start + 49);
    assert_int_equal(a->fires, 0);
    run_to(f, f->start + 50);
    assert_int_equal(a->fires, 1);
    run_to(f, f->start + 200);
    assert_int_equal(a->fires, 1);

    arm(f, a, 100);   /* level 1 ... */
    arm(f, a, 70000); /* ... to level 2: later */
    assert_int_equal(f->wheel.armed, 1);
    run_to(f, f->now + 100);
    assert_int_equal(a->fires, 1);
    uint64_t due = a->expect_due;
    arm(f, a, due - f->now - 1); /* moved by a millisecond, within the wheel */
    arm(f, a, due - f->now);
    run_to(f, due - 1);
    assert_int_equal(a->fires, 1);
    run_to(f, due);
    assert_int_equal(a->fires, 2);

    arm(f, a, MAX_DELAY); /* from the top level ... */
    arm(f, a, 3);         /* ... to level 0 */
    run_to(f, f->now + 3);
    assert_int_equal(a->fires, 3);
    assert_int_equal(f->wheel.armed, 0);
}

static void rearm_inside_callback_makes_a_periodic_timer(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0], *b = &f->timers[1];
    a->period = 7;
    a->limit = 100;
    arm(f, a, 7);
    run_to(f, f->now + 10000); /* one jump: all 100 fall inside it */
    assert_int_equal(a->fires, 100);
    assert_int_equal(a->fired_due, f->start + 700);
    assert_false(tg_timer_armed(&a->t));

    b->period = 64; /* level boundary, 1 ms at a time */
    b->limit = 70;
    arm(f, b, 64);
    uint64_t from = f->now;
    while (b->fires < 70) {
        unsigned before = b->fires;
        run_to(f, f->now + 1);
        if (b->fires != before)
            assert_int_equal(f->now, from + 64 * b->fires);
    }
    assert_int_equal(f->wheel.armed, 0);
}

static void callback_arms_an_earlier_timer_during_a_jump(void **state)
{
    struct fixture *f = *state;
    struct ttimer *a = &f->timers[0], *c = &f->timers[1], *d = &f->timers[2];
    struct ttimer *e = &f->timers[3];
    a->arm = c; /* at start+10, <c> for start+15 */
    a->arm_ms = 5;
    c->arm = e; /* at start+15, moves <e> from start+1000000 to start+4111 */
    c->arm_ms = 4096;
    arm(f, a, 10);
    arm(f, d, 500);
    arm(f, e, 1000000);
    run_to(f, f->now + 5000);
    assert_int_equal(c->fires, 1);
    assert_int_equal(c->fired_due, f->start + 15);
    assert_true(a->fired_seq < c->fired_seq && c->fired_seq < d->fired_seq);
    assert_int_equal(e->fires, 1);
    assert_int_equal(e->fired_due, f->start + 4111);
    assert_true(d->fired_seq < e->fired_seq);
    assert_int_equal(f->wheel.armed, 0);
}

/* ---- level boundaries and the top rotation ---- */

static const uint64_t edge_starts[] = {
    0, 1, 63, 64, 4095, 262143, 123456789, 0xdeadbeef, ROTATION - 4096, ROTATION - 64,
    ROTATION - 1, ROTATION, ROTATION + 5, 3 * ROTATION - 7, (UINT64_C(1) << 40) + 12345,
};
static const uint64_t edge_delays[] = {
    1,
    2,
    63,
    64,
    65,
    4095,
    4096,
    4097,
    262143,
    262144,
    262145,
    (UINT64_C(1) << 24) - 1,
    UINT64_C(1) << 24,
    (UINT64_C(1) << 24) + 1,
    (UINT64_C(1) << 30) - 1,
    UINT64_C(1) << 30,
    HOUR_MS,
    10 * HOUR_MS,
    24 * HOUR_MS,
    30 * 24 * HOUR_MS,
    (UINT64_C(1) << 35) + 1,
    MAX_DELAY - 1,
    MAX_DELAY,
};

/* Runs the wheel as a loop would: to now + tg_wheel_next_ms() (at least 1 ms
 * when it says 0 with nothing due yet) until nothing is armed. Since the wait
 * is never late, every timer then fires exactly at its due time. */
static void drive_by_next_ms(struct fixture *f)
{
    unsigned wakeups = 0;
    int next;
    while ((next = tg_wheel_next_ms(&f->wheel)) >= 0) {
        assert_next_not_late(f, earliest_due(f));
        run_to(f, f->now + (next > 0 ? (uint64_t)next : 1));
        assert_true(earliest_due(f) > f->now);
        assert_true(++wakeups < 100000);
    }
    assert_int_equal(f->wheel.armed, 0);
}

static void delays_across_level_boundaries_fire_on_time(void **state)
{
    struct fixture *f = *state;
    rng_seed(4);
    for (size_t s = 0; s < TG_ARRAY_LEN(edge_starts); s++) {
        for (size_t d = 0; d < TG_ARRAY_LEN(edge_delays); d++) {
            uint64_t delay = edge_delays[d];
            struct ttimer *a = &f->timers[0];

            /* One jump to just before, then the due tick. */
            fixture_reset(f, edge_starts[s]);
            arm(f, a, delay);
            uint64_t due = a->expect_due;
            assert_next_not_late(f, due);
            run_to(f, due - 1);
            assert_int_equal(a->fires, 0);
            assert_true(tg_timer_armed(&a->t));
            assert_next_not_late(f, due);
            run_to(f, due);
            assert_int_equal(a->fires, 1);
            assert_int_equal(a->fired_due, due);

            /* Random stops on the way. */
            fixture_reset(f, edge_starts[s]);
            arm(f, a, delay);
            for (int k = 0; k < 8 && f->now + 1 < due; k++) {
                run_to(f, f->now + 1 + rng_next() % (due - f->now - 1));
                assert_int_equal(a->fires, 0);
                assert_next_not_late(f, due);
            }
            run_to(f, due);
            assert_int_equal(a->fires, 1);

            /* The way a loop runs it: waking when next_ms says. */
            fixture_reset(f, edge_starts[s]);
            arm(f, a, delay);
            drive_by_next_ms(f);
            assert_int_equal(a->fires, 1);
            assert_int_equal(a->fired_now, due);
        }

        /* Every delay at once, from this start: in due order and on time. */
        fixture_reset(f, edge_starts[s]);
        for (size_t d = 0; d < TG_ARRAY_LEN(edge_delays); d++)
            arm(f, &f->timers[d], edge_delays[d]);
        drive_by_next_ms(f);
        assert_fired_in_due_order(f, (int)TG_ARRAY_LEN(edge_delays));
        for (size_t d = 0; d < TG_ARRAY_LEN(edge_delays); d++)
            assert_int_equal(f->timers[d].fired_now, f->timers[d].expect_due);

        fixture_reset(f, edge_starts[s]);
        for (size_t d = 0; d < TG_ARRAY_LEN(edge_delays); d++)
            arm(f, &f->timers[d], edge_delays[d]);
        run_to(f, f->now + MAX_DELAY);
        assert_fired_in_due_order(f, (int)TG_ARRAY_LEN(edge_delays));
    }
}

static void delays_crossing_the_top_rotation_fire_on_time(void **state)
{
    struct fixture *f = *state;
    const uint64_t d[] = { 0,    1,    9,       10,      11,           63,
                           64,   100,  5000,    1 << 20, MAX_DELAY - 1, MAX_DELAY,
                           4096, 4106, 262154, 262144 };
    const uint64_t starts[] = { ROTATION - 10, 2 * ROTATION - 10, ROTATION - 4106 };
    for (size_t s = 0; s < TG_ARRAY_LEN(starts); s++) {
        /* 1 ms at a time across the boundary, then as a loop would. */
        fixture_reset(f, starts[s]);
        for (size_t i = 0; i < TG_ARRAY_LEN(d); i++)
            arm(f, &f->timers[i], d[i]);
        while (f->now < starts[s] + 6000)
            run_to(f, f->now + 1);
        drive_by_next_ms(f);
        assert_fired_in_due_order(f, (int)TG_ARRAY_LEN(d));

        /* One jump over everything. */
        fixture_reset(f, starts[s]);
        for (size_t i = 0; i < TG_ARRAY_LEN(d); i++)
            arm(f, &f->timers[i], d[i]);
        run_to(f, f->now + MAX_DELAY);
        assert_fired_in_due_order(f, (int)TG_ARRAY_LEN(d));

        /* Just before the boundary, then arm timers that cross it from there. */
        fixture_reset(f, starts[s] - 1000);
        arm(f, &f->timers[0], MAX_DELAY); /* waits on the far list */
        run_to(f, starts[s]);
        for (size_t i = 1; i < TG_ARRAY_LEN(d); i++)
            arm(f, &f->timers[i], d[i]);
        drive_by_next_ms(f);
        assert_fired_in_due_order(f, (int)TG_ARRAY_LEN(d));
    }
}

/* ---- next_ms against brute force ---- */

static void next_ms_is_never_later_than_the_earliest_timer(void **state)
{
    struct fixture *f = *state;
    rng_seed(5);
    fixture_reset(f, ROTATION - (UINT64_C(1) << 22));
    /* Some callbacks arm a later-numbered timer: no cycles, so a run ends. */
    for (int i = 0; i < NTIMERS - 1; i++) {
        if (rng_next() % 4 == 0) {
            f->timers[i].arm = &f->timers[i + 1 + (int)(rng_next() % (NTIMERS - 1 - i))];
            f->timers[i].arm_ms = rng_magnitude(37);
        }
    }
    for (int op = 0; op < 200000; op++) {
        unsigned r = (unsigned)(rng_next() % 100);
        struct ttimer *t = &f->timers[rng_next() % NTIMERS];
        if (r < 40) {
            tg_timer_arm(&f->wheel, &t->t, rng_magnitude(37));
            assert_true(tg_wheel_check(&f->wheel));
        } else if (r < 50) {
            tg_timer_cancel(&f->wheel, &t->t);
            assert_true(tg_wheel_check(&f->wheel));
        } else if (r < 85) {
            run_to(f, f->now + rng_magnitude(r < 80 ? 24 : 38));
            assert_true(earliest_due(f) > f->now); /* nothing due was left behind */
        } else {
            int next = tg_wheel_next_ms(&f->wheel);
            run_to(f, f->now + (next > 0 ? (uint64_t)next : 0));
            assert_true(earliest_due(f) > f->now);
        }
        assert_next_not_late(f, earliest_due(f));
        uint64_t armed = 0;
        for (int i = 0; i < NTIMERS; i++)
            armed += tg_timer_armed(&f->timers[i].t);
        assert_int_equal(armed, f->wheel.armed);
    }
}

/* ---- a million timers ---- */

struct mtimer {
    tg_timer_t t;
    uint32_t   fires;
};

static struct {
    const tg_wheel_t *w;
    uint64_t          prev;     /* target of the previous run */
    uint64_t          target;   /* target of this run */
    unsigned          steps;    /* runs finished */
    uint64_t          fired;
    uint64_t          last_due;
    uint64_t          early, late, out_of_order;
} M;

static void on_million(tg_timer_t *t)
{
    struct mtimer *m = tg_container_of(t, struct mtimer, t);
    if (t->due_ms > M.target || t->due_ms > M.w->now_ms)
        M.early++;
    if (M.steps > 0 && t->due_ms <= M.prev) /* should have fired in an earlier run */
        M.late++;
    if (M.fired > 0 && t->due_ms < M.last_due)
        M.out_of_order++;
    M.last_due = t->due_ms;
    M.fired++;
    m->fires++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Arms <n> timers with random delays (below 2^<bits>), then runs the wheel to
 * completion in steps that grow with the elapsed time (or in one jump). */
static void run_many_timers(uint64_t start, size_t n, unsigned bits, bool one_jump)
{
    tg_wheel_t *w = malloc(sizeof(*w));
    struct mtimer *tm = calloc(n, sizeof(*tm));
    uint64_t *dues = malloc(n * sizeof(*dues));
    assert_non_null(w);
    assert_non_null(tm);
    assert_non_null(dues);
    memset(&M, 0, sizeof(M));
    M.w = w;
    tg_wheel_init(w, start);
    for (size_t i = 0; i < n; i++) {
        tg_timer_init(&tm[i].t, on_million);
        tg_timer_arm(w, &tm[i].t, rng_magnitude(bits));
        dues[i] = tm[i].t.due_ms;
    }
    assert_true(tg_wheel_check(w));
    assert_int_equal(w->armed, n);
    qsort(dues, n, sizeof(*dues), cmp_u64);

    uint64_t now = start;
    size_t due_by_now = 0; /* dues[] entries <= now */
    M.prev = start;
    while (w->armed > 0) {
        int next = tg_wheel_next_ms(w);
        assert_true(next >= 0);
        assert_true(now + (uint64_t)next <= dues[due_by_now]);
        uint64_t step = one_jump ? dues[n - 1] - now + 1
                                 : 1 + rng_next() % (64 + (now - start) / 2);
        M.target = now + step;
        unsigned fired = tg_wheel_run(w, M.target);
        assert_true(tg_wheel_check(w));
        M.prev = now = M.target;
        M.steps++;
        while (due_by_now < n && dues[due_by_now] <= now)
            due_by_now++;
        assert_int_equal(M.fired, due_by_now); /* exactly those due by now */
        assert_int_equal(w->armed, n - due_by_now);
        assert_true(fired <= n);
        assert_int_equal(M.early, 0);
        assert_int_equal(M.late, 0);
        assert_int_equal(M.out_of_order, 0);
    }
    for (size_t i = 0; i < n; i++)
        assert_int_equal(tm[i].fires, 1);
    assert_int_equal(M.fired, n);
    assert_int_equal(tg_wheel_next_ms(w), -1);
    free(dues);
    free(tm);
    free(w);
}

static void a_million_random_timers_each_fire_once_on_time(void **state)
{
    rng_seed(6);
    /* Starts 2^29 ms before the top rotation ends; delays up to 2^31 ms cross it. */
    run_many_timers(ROTATION - (UINT64_C(1) << 29), MILLION, 31, false);
}

static void many_random_timers_fire_in_due_order_in_one_jump(void **state)
{
    rng_seed(7);
    run_many_timers(ROTATION - (UINT64_C(1) << 20), 200000, 37, true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(empty_wheel_has_nothing_to_run, setup, teardown),
        cmocka_unit_test_setup_teardown(timer_fires_once_at_its_due_time, setup, teardown),
        cmocka_unit_test_setup_teardown(zero_delay_fires_at_the_next_run, setup, teardown),
        cmocka_unit_test_setup_teardown(delays_beyond_two_to_the_36_are_clamped, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(timers_fire_in_due_order_step_by_step, setup, teardown),
        cmocka_unit_test_setup_teardown(timers_fire_in_due_order_in_one_jump, setup, teardown),
        cmocka_unit_test_setup_teardown(timers_fire_in_due_order_in_random_steps, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancelled_timer_never_fires, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_leaves_the_other_timers_of_its_slot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancel_at_every_level_then_the_wheel_is_empty, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancel_inside_callback_stops_a_later_timer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancel_inside_callback_stops_a_timer_due_at_the_same_tick,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_self_inside_callback_is_harmless, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(rearm_moves_a_timer, setup, teardown),
        cmocka_unit_test_setup_teardown(rearm_inside_callback_makes_a_periodic_timer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(callback_arms_an_earlier_timer_during_a_jump, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(delays_across_level_boundaries_fire_on_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(delays_crossing_the_top_rotation_fire_on_time, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(next_ms_is_never_later_than_the_earliest_timer, setup,
                                        teardown),
        cmocka_unit_test(a_million_random_timers_each_fire_once_on_time),
        cmocka_unit_test(many_random_timers_fire_in_due_order_in_one_jump),
    };
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='cancel*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("core/timer", tests, NULL, NULL);
}
