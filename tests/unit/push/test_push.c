/* push: channels across loops driven on one thread, with subscribers that
 * record what they get. Every scenario checks order, no loss, no duplicate. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/loop.h"
#include "push/push.h"

#define LOOPS 3
#define GOT_MAX 4096

struct fsub {
    tg_sub_t sub;
    uint64_t got[GOT_MAX];
    int      n;
    int      ready;  /* times ready() ran */
    tg_pos_t pos;    /* ready() position */
    bool     gap;
    tg_gap_t gapv;
    size_t   behind; /* what behind() answers */
    bool     leave;  /* unsubscribe itself on the first message (a long-poll) */
    tg_push_t *push;
};

static void f_ready(tg_sub_t *s, tg_pos_t pos, const tg_gap_t *gap, tg_msg_t *const *backlog,
                    size_t n)
{
    struct fsub *f = tg_container_of(s, struct fsub, sub);
    f->ready++;
    f->pos = pos;
    f->gap = gap != NULL;
    if (gap)
        f->gapv = *gap;
    for (size_t i = 0; i < n; i++)
        f->got[f->n++] = backlog[i]->pos.seq;
    if (f->leave && (n > 0 || gap))
        tg_push_unsubscribe(f->push, s);
}

static void f_deliver(tg_sub_t *s, tg_delivery_t *d)
{
    struct fsub *f = tg_container_of(s, struct fsub, sub);
    TG_ASSERT(f->n < GOT_MAX);
    f->got[f->n++] = d->msg->pos.seq;
    if (f->leave)
        tg_push_unsubscribe(f->push, s);
}

static size_t f_behind(tg_sub_t *s)
{
    return tg_container_of(s, struct fsub, sub)->behind;
}

static const tg_sub_ops_t fops = { f_ready, f_deliver, f_behind };

struct fixture {
    tg_loop_t  loops[LOOPS];
    tg_loop_t *lp[LOOPS];
    tg_push_t *push;
    tg_pos_t   last_pub;  /* of the last publish to complete */
    uint64_t   max_seq;   /* highest position any publish got */
    int        pubs_done;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    for (int i = 0; i < LOOPS; i++) {
        assert_int_equal(tg_loop_init(&f->loops[i], i), 0);
        f->lp[i] = &f->loops[i];
    }
    tg_chan_opts_t def = { .history_len = 100, .mode = TG_MODE_ALL };
    tg_chan_rule_t rules[2] = {
        { .pattern = "px.*", .opts = { .history_len = 10, .mode = TG_MODE_LATEST } },
        { .pattern = "short*", .opts = { .history_len = 5, .mode = TG_MODE_ALL } },
    };
    f->push = tg_push_create(f->lp, LOOPS, &def, rules, 2);
    assert_non_null(f->push);
    *state = f;
    return 0;
}

/* Runs every loop until no mail is left anywhere. */
static void pump(struct fixture *f)
{
    for (int round = 0; round < 10000; round++) {
        bool idle = true;
        for (int i = 0; i < LOOPS; i++)
            if (!tg_mbox_idle(&f->loops[i].mbox))
                idle = false;
        if (idle)
            return;
        for (int i = 0; i < LOOPS; i++)
            tg_loop_run_once(&f->loops[i], 0);
    }
    fail_msg("mail never settled");
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    pump(f);
    tg_push_closing(f->push);
    for (int i = 0; i < LOOPS; i++)
        tg_loop_fini(&f->loops[i]);
    tg_push_destroy(f->push);
    free(f);
    return 0;
}

static void on_pub(void *arg, tg_pos_t pos)
{
    struct fixture *f = arg;
    f->last_pub = pos;
    if (pos.seq > f->max_seq)
        f->max_seq = pos.seq;
    f->pubs_done++;
}

static void publish(struct fixture *f, int loop, const char *ch)
{
    tg_msg_t *m = tg_msg_new_kind((tg_str_t){ ch, strlen(ch) }, "1", 1, LOOPS, TG_PAYLOAD_JSON);
    assert_non_null(m);
    assert_int_equal(tg_push_publish(f->push, &f->loops[loop], m, on_pub, f), 0);
}

static void subscribe(struct fixture *f, int loop, struct fsub *s, const char *ch,
                      const tg_pos_t *from)
{
    memset(s, 0, sizeof(*s));
    s->sub.ops = &fops;
    assert_int_equal(tg_push_subscribe(f->push, &f->loops[loop], &s->sub,
                                       (tg_str_t){ ch, strlen(ch) }, from),
                     0);
}

static void assert_run(const struct fsub *s, uint64_t first, uint64_t last)
{
    assert_int_equal(s->n, (int)(last - first + 1));
    for (int i = 0; i < s->n; i++)
        assert_int_equal(s->got[i], first + (uint64_t)i);
}

static void subscribers_on_every_loop_get_every_message_in_order(void **state)
{
    struct fixture *f = *state;
    static struct fsub subs[30];
    for (int i = 0; i < 30; i++)
        subscribe(f, i % LOOPS, &subs[i], "news", NULL);
    pump(f);
    for (int i = 0; i < 30; i++)
        assert_int_equal(subs[i].ready, 1);
    for (int k = 0; k < 1000; k++) {
        publish(f, k % LOOPS, "news");
        if (k % 7 == 0)
            pump(f);
    }
    pump(f);
    assert_int_equal(f->pubs_done, 1000);
    assert_int_equal(f->max_seq, 1000);
    for (int i = 0; i < 30; i++) {
        assert_run(&subs[i], 1, 1000);
        tg_push_unsubscribe(f->push, &subs[i].sub);
    }
}

static void resume_gets_exactly_the_missed_messages(void **state)
{
    struct fixture *f = *state;
    static struct fsub a, b;
    subscribe(f, 1, &a, "chat", NULL);
    pump(f);
    for (int k = 0; k < 10; k++)
        publish(f, 0, "chat");
    pump(f);
    assert_run(&a, 1, 10);
    tg_pos_t seen = { f->last_pub.epoch, a.got[a.n - 1] };
    tg_push_unsubscribe(f->push, &a.sub);
    /* The loop left; the channel keeps its history. */
    for (int k = 0; k < 50; k++)
        publish(f, 2, "chat");
    pump(f);
    subscribe(f, 1, &b, "chat", &seen);
    pump(f);
    assert_int_equal(b.ready, 1);
    assert_false(b.gap);
    assert_run(&b, 11, 60);
    publish(f, 0, "chat");
    pump(f);
    assert_run(&b, 11, 61);
    tg_push_unsubscribe(f->push, &b.sub);
}

static void resume_past_the_history_is_a_gap(void **state)
{
    struct fixture *f = *state;
    static struct fsub a, b, c;
    for (int k = 0; k < 20; k++)
        publish(f, 0, "shortlived");
    pump(f);
    tg_pos_t old = { f->last_pub.epoch, 3 };
    subscribe(f, 2, &a, "shortlived", &old);
    tg_pos_t other = { f->last_pub.epoch ^ 0x5a5a, 19 };
    subscribe(f, 1, &b, "shortlived", &other);
    tg_pos_t ok = { f->last_pub.epoch, 16 }; /* 16..20 held: resume from 16 is whole */
    subscribe(f, 0, &c, "shortlived", &ok);
    pump(f);
    assert_true(a.gap);
    assert_int_equal(a.gapv.pos.seq, 20);
    assert_int_equal(a.n, 0);
    assert_true(b.gap);
    assert_false(c.gap);
    assert_run(&c, 17, 20);
    publish(f, 1, "shortlived");
    pump(f);
    assert_run(&a, 21, 21);
    assert_run(&b, 21, 21);
    assert_run(&c, 17, 21);
    tg_push_unsubscribe(f->push, &a.sub);
    tg_push_unsubscribe(f->push, &b.sub);
    tg_push_unsubscribe(f->push, &c.sub);
}

static void latest_mode_holds_only_the_newest_for_a_slow_subscriber(void **state)
{
    struct fixture *f = *state;
    static struct fsub slow, fast;
    subscribe(f, 1, &slow, "px.eurusd", NULL);
    subscribe(f, 1, &fast, "px.eurusd", NULL);
    pump(f);
    slow.behind = 1; /* its socket is full */
    for (int k = 0; k < 500; k++)
        publish(f, 0, "px.eurusd");
    pump(f);
    assert_run(&fast, 1, 500);
    assert_int_equal(slow.n, 0);
    slow.behind = 0;
    tg_push_sub_drained(f->push, &slow.sub);
    assert_run(&slow, 500, 500);
    tg_push_sub_drained(f->push, &slow.sub); /* nothing more held */
    assert_int_equal(slow.n, 1);
    uint64_t st[6];
    tg_push_stats(f->push, st);
    assert_int_equal(st[2], 499); /* conflated */
    tg_push_unsubscribe(f->push, &slow.sub);
    tg_push_unsubscribe(f->push, &fast.sub);
}

static void unsubscribe_before_the_answer_gets_no_callback(void **state)
{
    struct fixture *f = *state;
    static struct fsub a, b;
    publish(f, 0, "x");
    pump(f);
    tg_pos_t from = { f->last_pub.epoch, 0 };
    subscribe(f, 2, &a, "x", &from);
    subscribe(f, 2, &b, "x", NULL);
    tg_push_unsubscribe(f->push, &a.sub);
    tg_push_unsubscribe(f->push, &b.sub);
    pump(f);
    assert_int_equal(a.ready, 0);
    assert_int_equal(b.ready, 0);
    uint64_t st[6];
    tg_push_stats(f->push, st);
    assert_int_equal(st[5], 0); /* no subscriber left */
}

static void unused_channel_without_history_is_forgotten(void **state)
{
    struct fixture *f = *state;
    static struct fsub a;
    tg_push_destroy(f->push);
    tg_chan_opts_t none = { .history_len = 0 };
    f->push = tg_push_create(f->lp, LOOPS, &none, NULL, 0);
    subscribe(f, 1, &a, "tmp", NULL);
    pump(f);
    publish(f, 0, "tmp");
    pump(f);
    assert_run(&a, 1, 1);
    uint64_t st[6];
    tg_push_stats(f->push, st);
    assert_int_equal(st[4], 1);
    tg_push_unsubscribe(f->push, &a.sub);
    pump(f);
    tg_push_stats(f->push, st);
    assert_int_equal(st[4], 0);
    /* Published to nobody: positioned, then forgotten; a new epoch next time. */
    publish(f, 0, "tmp");
    pump(f);
    tg_pos_t first = f->last_pub;
    publish(f, 0, "tmp");
    pump(f);
    assert_int_equal(f->last_pub.seq, 1);
    assert_int_not_equal(f->last_pub.epoch, first.epoch);
}

/* The last subscriber of a loop leaving inside its own callbacks (during a
 * fan-out, and while a resume answer is handed over) frees nothing early. */
static void subscriber_leaving_in_its_callback_is_safe(void **state)
{
    struct fixture *f = *state;
    static struct fsub a, b;
    subscribe(f, 2, &a, "poll", NULL);
    a.leave = true;
    a.push = f->push;
    pump(f);
    publish(f, 0, "poll");
    publish(f, 1, "poll");
    pump(f);
    assert_int_equal(a.n, 1); /* left after the first */
    tg_pos_t from = { f->last_pub.epoch, 0 };
    subscribe(f, 1, &b, "poll", &from);
    b.leave = true;
    b.push = f->push;
    pump(f);
    assert_run(&b, 1, 2);
    uint64_t st[6];
    tg_push_stats(f->push, st);
    assert_int_equal(st[5], 0);
}

/* The loop where a publish to <ch> completes at once: the channel's home. */
static int home_loop(struct fixture *f, const char *ch)
{
    for (int i = 0; i < LOOPS; i++) {
        int before = f->pubs_done;
        publish(f, i, ch);
        bool sync = f->pubs_done == before + 1;
        pump(f);
        if (sync)
            return i;
    }
    fail_msg("no loop is home to %s", ch);
    return -1;
}

/* A resume on the channel's home loop, with a publish from another loop queued
 * behind the question: the answer must not skip what was published between
 * the question and the answer (whether the loop had joined or not). */
static void resume_on_the_home_loop_misses_nothing_published_meanwhile(void **state)
{
    struct fixture *f = *state;
    static struct fsub live, joined, first;
    int home = home_loop(f, "race");
    int other = (home + 1) % LOOPS;
    tg_pos_t from = f->last_pub;

    subscribe(f, home, &first, "race", &from); /* the loop's first subscription */
    publish(f, other, "race");
    pump(f);
    assert_false(first.gap);
    assert_run(&first, from.seq + 1, from.seq + 1);

    subscribe(f, home, &live, "race", NULL);
    pump(f);
    from = f->last_pub;
    subscribe(f, home, &joined, "race", &from); /* the loop has live subscribers */
    publish(f, other, "race");
    pump(f);
    assert_false(joined.gap);
    assert_run(&joined, from.seq + 1, from.seq + 1);
    assert_run(&first, from.seq, from.seq + 1);
    tg_push_unsubscribe(f->push, &first.sub);
    tg_push_unsubscribe(f->push, &joined.sub);
    tg_push_unsubscribe(f->push, &live.sub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(subscribers_on_every_loop_get_every_message_in_order,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(resume_gets_exactly_the_missed_messages, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(resume_past_the_history_is_a_gap, setup, teardown),
        cmocka_unit_test_setup_teardown(
            resume_on_the_home_loop_misses_nothing_published_meanwhile, setup, teardown),
        cmocka_unit_test_setup_teardown(latest_mode_holds_only_the_newest_for_a_slow_subscriber,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(unsubscribe_before_the_answer_gets_no_callback, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(unused_channel_without_history_is_forgotten, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(subscriber_leaving_in_its_callback_is_safe, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("push", tests, NULL, NULL);
}
