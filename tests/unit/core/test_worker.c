/* tests/unit/core/test_worker.c - the worker pool (src/core/worker.h).
 *
 * A loop is initialised but not started: the test thread is its thread and
 * drives it with tg_loop_run_once(), which wakes on the loop's mailbox when a
 * completion is posted. Jobs record which thread ran them and which thread
 * completed them. To stop the pool with jobs still queued, the first jobs hold
 * every worker until tg_workers_stop() has begun: they wait on the pool's own
 * condition variable for <stopping>, which stop sets and broadcasts under the
 * pool's lock, so nothing here depends on timing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <pthread.h>

#include "core/common.h"
#include "core/loop.h"
#include "core/worker.h"

#define WORKERS 3
#define JOBS    1000
#define WAIT_MS 5000 /* longest wait for a completion that must come */

struct fixture;

struct job {
    tg_work_t       work;
    struct fixture *f;
    int             index;
    atomic_int      runs;           /* written on a worker */
    bool            ran_on_tester;  /* run called on the test thread */
    bool            blocker;        /* holds its worker until stop begins */
    unsigned        dones;          /* on the loop (test) thread */
    bool            done_cancelled; /* <cancelled> as done saw it */
    bool            done_off_loop;  /* done called on another thread */
};

struct fixture {
    tg_loop_t       loop;
    tg_workers_t    pool;
    bool            pool_stopped;
    pthread_t       tester;
    struct job     *jobs;
    unsigned        done_total;
    /* blockers tell the test they are running */
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    int             blocking;
};

static void job_run(tg_work_t *w)
{
    struct job *j = tg_container_of(w, struct job, work);
    struct fixture *f = j->f;
    atomic_fetch_add(&j->runs, 1);
    j->ran_on_tester = pthread_equal(pthread_self(), f->tester);
    if (!j->blocker)
        return;
    /* Wait for the other blockers first: until every worker is busy, a
     * waiter on the pool's condition variable could take a wakeup meant for
     * an idle worker. */
    pthread_mutex_lock(&f->lock);
    f->blocking++;
    pthread_cond_broadcast(&f->cond);
    while (f->blocking < WORKERS)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
    /* Hold this worker until tg_workers_stop() has set <stopping>. */
    pthread_mutex_lock(&f->pool.lock);
    while (!f->pool.stopping)
        pthread_cond_wait(&f->pool.wake, &f->pool.lock);
    pthread_mutex_unlock(&f->pool.lock);
}

static void job_done(tg_work_t *w)
{
    struct job *j = tg_container_of(w, struct job, work);
    j->dones++;
    j->done_cancelled = w->cancelled;
    j->done_off_loop = !pthread_equal(pthread_self(), j->f->tester);
    j->f->done_total++;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->jobs = calloc(JOBS, sizeof(*f->jobs));
    if (!f->jobs || tg_loop_init(&f->loop, 1) != 0) {
        free(f->jobs);
        free(f);
        return -1;
    }
    if (tg_workers_start(&f->pool, WORKERS) != 0) {
        tg_loop_fini(&f->loop);
        free(f->jobs);
        free(f);
        return -1;
    }
    f->tester = pthread_self();
    pthread_mutex_init(&f->lock, NULL);
    pthread_cond_init(&f->cond, NULL);
    for (int i = 0; i < JOBS; i++) {
        struct job *j = &f->jobs[i];
        j->f = f;
        j->index = i;
        atomic_init(&j->runs, 0);
        j->work.loop = &f->loop;
        j->work.run = job_run;
        j->work.done = job_done;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (!f->pool_stopped)
        tg_workers_stop(&f->pool);
    tg_loop_fini(&f->loop); /* delivers any completion still queued */
    tg_workers_fini(&f->pool);
    pthread_cond_destroy(&f->cond);
    pthread_mutex_destroy(&f->lock);
    free(f->jobs);
    free(f);
    return 0;
}

/* Drives the loop until <want> completions have been delivered. An iteration
 * may end with nothing delivered (a completion still being linked into the
 * mailbox keeps the loop awake), so only a long stretch without progress
 * means a completion, or its wakeup, was lost. */
static void run_until_done(struct fixture *f, unsigned want)
{
    uint64_t progress_at = tg_clock_ms();
    while (f->done_total < want) {
        unsigned before = f->done_total;
        tg_loop_run_once(&f->loop, WAIT_MS); /* woken by the mailbox's eventfd */
        if (f->done_total != before)
            progress_at = tg_clock_ms();
        assert_true(tg_clock_ms() - progress_at < 2 * WAIT_MS);
    }
    assert_int_equal(f->done_total, want);
}

static void every_job_runs_on_a_worker_and_completes_on_the_loop(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < JOBS; i++)
        assert_int_equal(tg_work_submit(&f->pool, &f->jobs[i].work), 0);
    run_until_done(f, JOBS);
    for (int i = 0; i < JOBS; i++) {
        struct job *j = &f->jobs[i];
        assert_int_equal(atomic_load(&j->runs), 1);
        assert_false(j->ran_on_tester);
        assert_int_equal(j->dones, 1);
        assert_false(j->done_off_loop);
        assert_false(j->done_cancelled);
    }
    assert_int_equal(atomic_load(&f->pool.done), JOBS);
    tg_loop_run_once(&f->loop, 0); /* nothing more arrives */
    assert_int_equal(f->done_total, JOBS);
    assert_true(tg_mbox_idle(&f->loop.mbox));

    tg_workers_stop(&f->pool);
    f->pool_stopped = true;
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(f->done_total, JOBS); /* stop completes nothing twice */
}

/* A completion submits the next job, as a loop would for a task in steps. */
static void chain_done(tg_work_t *w)
{
    struct job *j = tg_container_of(w, struct job, work);
    job_done(w);
    if (j->index + 1 < 50)
        TG_ASSERT(tg_work_submit(&j->f->pool, &j->f->jobs[j->index + 1].work) == 0);
}

static void jobs_submitted_from_a_done_callback_run_too(void **state)
{
    struct fixture *f = *state;
    enum { CHAIN = 50 };
    for (int i = 0; i < CHAIN; i++)
        f->jobs[i].work.done = chain_done;
    assert_int_equal(tg_work_submit(&f->pool, &f->jobs[0].work), 0);
    run_until_done(f, CHAIN);
    for (int i = 0; i < CHAIN; i++) {
        assert_int_equal(atomic_load(&f->jobs[i].runs), 1);
        assert_false(f->jobs[i].ran_on_tester);
        assert_int_equal(f->jobs[i].dones, 1);
        assert_false(f->jobs[i].done_off_loop);
    }
}

static void stop_cancels_jobs_still_queued(void **state)
{
    struct fixture *f = *state;
    enum { QUEUED = 100 };
    /* Occupy every worker. */
    for (int i = 0; i < WORKERS; i++) {
        f->jobs[i].blocker = true;
        assert_int_equal(tg_work_submit(&f->pool, &f->jobs[i].work), 0);
    }
    pthread_mutex_lock(&f->lock);
    while (f->blocking < WORKERS)
        pthread_cond_wait(&f->cond, &f->lock);
    pthread_mutex_unlock(&f->lock);
    /* No worker is free: these stay queued. */
    for (int i = WORKERS; i < WORKERS + QUEUED; i++)
        assert_int_equal(tg_work_submit(&f->pool, &f->jobs[i].work), 0);

    tg_workers_stop(&f->pool); /* releases the blockers, joins, cancels the rest */
    f->pool_stopped = true;
    run_until_done(f, WORKERS + QUEUED);

    for (int i = 0; i < WORKERS + QUEUED; i++) {
        struct job *j = &f->jobs[i];
        bool started = i < WORKERS;
        assert_int_equal(atomic_load(&j->runs), started ? 1 : 0);
        assert_int_equal(j->dones, 1);
        assert_int_equal(j->done_cancelled, !started);
        assert_false(j->done_off_loop);
    }
    assert_int_equal(atomic_load(&f->pool.done), WORKERS);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(f->done_total, WORKERS + QUEUED);
}

static void submit_after_stop_is_refused(void **state)
{
    struct fixture *f = *state;
    tg_workers_stop(&f->pool);
    f->pool_stopped = true;
    /* worker.h: "Returns 0, or -ESHUTDOWN" - a loop may still try, e.g. from
     * the done callback of a job the stop cancelled, which runs after stop
     * returned. The pool's mutex must still be usable then: ASan cannot see
     * a destroyed mutex being locked, TSan reports it. */
    assert_int_equal(tg_work_submit(&f->pool, &f->jobs[0].work), -ESHUTDOWN);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(f->jobs[0].dones, 0);
    assert_int_equal(atomic_load(&f->jobs[0].runs), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(every_job_runs_on_a_worker_and_completes_on_the_loop,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(jobs_submitted_from_a_done_callback_run_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(stop_cancels_jobs_still_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(submit_after_stop_is_refused, setup, teardown),
    };
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='stop*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("core/worker", tests, NULL, NULL);
}
