/* tests/unit/core/test_mbox.c - the mailbox (src/core/mbox.h).
 *
 * The consumer side is driven the way a loop drives it: tg_mbox_arm_sleep(),
 * then a wait on the eventfd (poll, standing in for epoll_wait) only when it
 * said yes, tg_mbox_woke(), tg_mbox_drain(). Producers are real threads. A
 * sleep that times out while mail is still owed is a lost wakeup and fails the
 * test; nothing waits on a clock otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <poll.h>
#include <pthread.h>
#include <unistd.h>

#include "core/common.h"
#include "core/mbox.h"

#define PRODUCERS      4
#define POSTS_EACH     200000
#define LOST_WAKEUP_MS 20000 /* a sleep this long with mail owed: the wakeup was lost */

struct note {
    tg_mail_t mail;
    uint32_t  producer;
    uint32_t  seq;
};

/* What the consumer saw. */
struct inbox {
    uint64_t received;
    uint32_t next_seq[PRODUCERS]; /* per producer: the seq expected next */
    uint64_t out_of_order;        /* lost, duplicated or reordered mail */
    uint64_t bad_arg;
    uint32_t order[64];           /* single-thread tests: seqs in arrival order */
};

static void on_note(tg_mail_t *m, void *arg)
{
    struct inbox *in = arg;
    struct note *n = tg_container_of(m, struct note, mail);
    if (n->producer >= PRODUCERS) {
        in->bad_arg++;
        return;
    }
    if (n->seq != in->next_seq[n->producer])
        in->out_of_order++;
    in->next_seq[n->producer] = n->seq + 1;
    if (in->received < TG_ARRAY_LEN(in->order))
        in->order[in->received] = n->seq;
    in->received++;
}

static bool efd_readable(int efd)
{
    struct pollfd p = { .fd = efd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

struct fixture {
    tg_mbox_t    mb;
    struct inbox in;
    struct note  notes[16];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f || tg_mbox_init(&f->mb) != 0) {
        free(f);
        return -1;
    }
    for (uint32_t i = 0; i < TG_ARRAY_LEN(f->notes); i++) {
        f->notes[i].mail.cb = on_note;
        f->notes[i].seq = i;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tg_mbox_fini(&f->mb);
    free(f);
    return 0;
}

/* ---- single thread ---- */

static void new_mailbox_is_idle_and_may_sleep(void **state)
{
    struct fixture *f = *state;
    assert_true(f->mb.efd >= 0);
    assert_true(tg_mbox_idle(&f->mb));
    assert_int_equal(tg_mbox_drain(&f->mb, 10, &f->in), 0);
    assert_true(tg_mbox_arm_sleep(&f->mb));
    tg_mbox_woke(&f->mb, false);
    assert_int_equal(atomic_load(&f->mb.kicks), 0);
    assert_false(efd_readable(f->mb.efd));
}

static void post_to_an_awake_loop_does_not_kick_the_eventfd(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 5; i++)
        tg_mbox_post(&f->mb, &f->notes[i].mail);
    assert_int_equal(atomic_load(&f->mb.kicks), 0);
    assert_false(efd_readable(f->mb.efd));
    assert_false(tg_mbox_idle(&f->mb));
    assert_int_equal(tg_mbox_drain(&f->mb, 100, &f->in), 5);
    assert_true(tg_mbox_idle(&f->mb));

    /* Armed, then woken without sleeping: awake again, posts stay free. */
    assert_true(tg_mbox_arm_sleep(&f->mb));
    tg_mbox_woke(&f->mb, false);
    tg_mbox_post(&f->mb, &f->notes[5].mail);
    assert_int_equal(atomic_load(&f->mb.kicks), 0);
    assert_false(efd_readable(f->mb.efd));
    assert_int_equal(tg_mbox_drain(&f->mb, 100, &f->in), 1);
    assert_int_equal(f->in.received, 6);
    assert_int_equal(f->in.out_of_order, 0);
}

static void post_after_arm_sleep_kicks_the_eventfd_once(void **state)
{
    struct fixture *f = *state;
    assert_true(tg_mbox_arm_sleep(&f->mb));
    tg_mbox_post(&f->mb, &f->notes[0].mail);
    assert_int_equal(atomic_load(&f->mb.kicks), 1);
    assert_true(efd_readable(f->mb.efd));
    /* The flag is off now: more posts before the loop wakes cost nothing. */
    tg_mbox_post(&f->mb, &f->notes[1].mail);
    tg_mbox_post(&f->mb, &f->notes[2].mail);
    assert_int_equal(atomic_load(&f->mb.kicks), 1);

    tg_mbox_woke(&f->mb, true); /* resets the eventfd */
    assert_false(efd_readable(f->mb.efd));
    assert_int_equal(tg_mbox_drain(&f->mb, 100, &f->in), 3);
    assert_int_equal(f->in.out_of_order, 0);

    /* A second sleep gets its own kick. */
    assert_true(tg_mbox_arm_sleep(&f->mb));
    tg_mbox_post(&f->mb, &f->notes[3].mail);
    assert_int_equal(atomic_load(&f->mb.kicks), 2);
    assert_true(efd_readable(f->mb.efd));
    tg_mbox_woke(&f->mb, true);
    assert_int_equal(tg_mbox_drain(&f->mb, 100, &f->in), 1);
    assert_true(tg_mbox_idle(&f->mb));
}

static void arm_sleep_refuses_while_mail_waits(void **state)
{
    struct fixture *f = *state;
    tg_mbox_post(&f->mb, &f->notes[0].mail);
    assert_false(tg_mbox_arm_sleep(&f->mb));
    /* Refused: the flag is not left on, so the next post does not kick. */
    tg_mbox_post(&f->mb, &f->notes[1].mail);
    assert_int_equal(atomic_load(&f->mb.kicks), 0);
    assert_int_equal(tg_mbox_drain(&f->mb, 1, &f->in), 1);
    assert_false(tg_mbox_arm_sleep(&f->mb)); /* one is left */
    assert_int_equal(tg_mbox_drain(&f->mb, 1, &f->in), 1);
    assert_true(tg_mbox_arm_sleep(&f->mb));
    tg_mbox_woke(&f->mb, false);
}

static void drain_hands_mail_over_in_post_order_and_bounded(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 16; i++)
        tg_mbox_post(&f->mb, &f->notes[i].mail);
    assert_int_equal(tg_mbox_drain(&f->mb, 0, &f->in), 0);
    assert_int_equal(tg_mbox_drain(&f->mb, 5, &f->in), 5);
    assert_int_equal(f->in.received, 5);
    assert_false(tg_mbox_idle(&f->mb));
    assert_int_equal(tg_mbox_drain(&f->mb, 10, &f->in), 10);
    assert_int_equal(tg_mbox_drain(&f->mb, 10, &f->in), 1);
    assert_int_equal(tg_mbox_drain(&f->mb, 10, &f->in), 0);
    assert_true(tg_mbox_idle(&f->mb));
    for (uint32_t i = 0; i < 16; i++)
        assert_int_equal(f->in.order[i], i);
    assert_int_equal(f->in.out_of_order, 0);

    /* The same mails again, interleaving posts and drains one by one: the
     * stub is re-linked each time the queue runs dry. */
    memset(&f->in, 0, sizeof(f->in));
    for (int i = 0; i < 16; i++) {
        tg_mbox_post(&f->mb, &f->notes[i].mail);
        if (i % 3 != 2)
            assert_int_equal(tg_mbox_drain(&f->mb, 1, &f->in), 1);
    }
    while (tg_mbox_drain(&f->mb, 1, &f->in) == 1)
        ;
    assert_int_equal(f->in.received, 16);
    assert_int_equal(f->in.out_of_order, 0);
    assert_true(tg_mbox_idle(&f->mb));
}

/* A mail callback may post again (a retry, a follow-up): it is handed over
 * by a later drain, or by this one while <max> allows. */
static struct fixture *repost_fixture;
static int reposts_left;

static void on_repost(tg_mail_t *m, void *arg)
{
    struct inbox *in = arg;
    in->received++;
    if (reposts_left-- > 0)
        tg_mbox_post(&repost_fixture->mb, m);
}

static void mail_callback_may_post_again(void **state)
{
    struct fixture *f = *state;
    repost_fixture = f;
    reposts_left = 10;
    f->notes[0].mail.cb = on_repost;
    tg_mbox_post(&f->mb, &f->notes[0].mail);
    unsigned total = 0, n;
    while ((n = tg_mbox_drain(&f->mb, 4, &f->in)) > 0)
        total += n;
    assert_int_equal(total, 11);
    assert_int_equal(f->in.received, 11);
    assert_true(tg_mbox_idle(&f->mb));
}

/* ---- producers on threads ---- */

struct producer {
    pthread_t    thread;
    tg_mbox_t   *mb;
    uint32_t     id;
    struct note *notes; /* POSTS_EACH of them */
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (uint32_t i = 0; i < POSTS_EACH; i++) {
        p->notes[i].mail.cb = on_note;
        p->notes[i].producer = p->id;
        p->notes[i].seq = i;
        tg_mbox_post(p->mb, &p->notes[i].mail);
    }
    return NULL;
}

static void many_producers_lose_and_duplicate_nothing(void **state)
{
    struct fixture *f = *state;
    struct producer prod[PRODUCERS];
    for (uint32_t i = 0; i < PRODUCERS; i++) {
        prod[i].mb = &f->mb;
        prod[i].id = i;
        prod[i].notes = calloc(POSTS_EACH, sizeof(struct note));
        assert_non_null(prod[i].notes);
    }
    for (uint32_t i = 0; i < PRODUCERS; i++)
        assert_int_equal(pthread_create(&prod[i].thread, NULL, produce, &prod[i]), 0);

    /* The loop: sleep only when the mailbox agrees, wake on the eventfd, drain
     * a bounded batch. */
    const uint64_t total = (uint64_t)PRODUCERS * POSTS_EACH;
    uint64_t sleeps = 0, spins = 0;
    while (f->in.received < total) {
        bool asleep = tg_mbox_arm_sleep(&f->mb);
        struct pollfd p = { .fd = f->mb.efd, .events = POLLIN };
        int n = poll(&p, 1, asleep ? LOST_WAKEUP_MS : 0);
        assert_true(n >= 0);
        if (asleep) {
            sleeps++;
            assert_int_equal(n, 1); /* else the wakeup was lost */
        } else {
            spins++;
        }
        tg_mbox_woke(&f->mb, n == 1 && (p.revents & POLLIN));
        tg_mbox_drain(&f->mb, 1024, &f->in);
        assert_int_equal(f->in.out_of_order, 0);
        assert_int_equal(f->in.bad_arg, 0);
    }
    for (uint32_t i = 0; i < PRODUCERS; i++)
        assert_int_equal(pthread_join(prod[i].thread, NULL), 0);

    assert_int_equal(f->in.received, total);
    for (uint32_t i = 0; i < PRODUCERS; i++)
        assert_int_equal(f->in.next_seq[i], POSTS_EACH);
    assert_int_equal(tg_mbox_drain(&f->mb, 1024, &f->in), 0); /* none duplicated late */
    assert_true(tg_mbox_idle(&f->mb));
    /* A kick per round of the loop at most (each arm_sleep may earn one),
     * never one per message. */
    assert_true(atomic_load(&f->mb.kicks) <= sleeps + spins);
    print_message("      %llu sleeps, %llu busy rounds, %lu kicks for %llu mails\n",
                  (unsigned long long)sleeps, (unsigned long long)spins,
                  atomic_load(&f->mb.kicks), (unsigned long long)total);
    for (uint32_t i = 0; i < PRODUCERS; i++)
        free(prod[i].notes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(new_mailbox_is_idle_and_may_sleep, setup, teardown),
        cmocka_unit_test_setup_teardown(post_to_an_awake_loop_does_not_kick_the_eventfd, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(post_after_arm_sleep_kicks_the_eventfd_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(arm_sleep_refuses_while_mail_waits, setup, teardown),
        cmocka_unit_test_setup_teardown(drain_hands_mail_over_in_post_order_and_bounded, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(mail_callback_may_post_again, setup, teardown),
        cmocka_unit_test_setup_teardown(many_producers_lose_and_duplicate_nothing, setup,
                                        teardown),
    };
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='post*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("core/mbox", tests, NULL, NULL);
}
