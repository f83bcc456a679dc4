/* core/worker.h - M worker threads for work that may block or take long (file
 * IO, CPU-heavy transforms), so that IO loops never do. A loop submits a job;
 * a worker runs it; its completion is posted back to the submitting loop and
 * runs there. The queue takes a mutex: it is never on the message path.
 *
 * Ownership: the submitter owns the job; it is lent to the pool from submit
 * until its done callback runs (on the submitter's loop), exactly once. */
#ifndef TG_CORE_WORKER_H
#define TG_CORE_WORKER_H

#include <pthread.h>
#include <stdbool.h>

#include "core/loop.h"
#include "core/mbox.h"

typedef struct tg_work tg_work_t;
typedef void tg_work_cb(tg_work_t *w);

struct tg_work {
    tg_mail_t   mail;    /* private: carries the completion home */
    tg_work_t  *next;    /* private: the pool's queue */
    tg_loop_t  *loop;    /* where <done> runs */
    tg_work_cb *run;     /* on a worker thread */
    tg_work_cb *done;    /* on <loop>'s thread, after run (or instead, if cancelled) */
    bool        cancelled; /* the pool stopped before running it */
};

typedef struct tg_workers {
    pthread_mutex_t lock;
    pthread_cond_t  wake;
    tg_work_t      *head;
    tg_work_t      *tail;
    bool            stopping;
    int             n;
    pthread_t      *threads;
    tg_counter_t    done;  /* jobs run, any thread (fetch_add) */
} tg_workers_t;

/* Starts <n> threads. Returns 0 or a negative errno. */
int  tg_workers_start(tg_workers_t *p, int n);
/* Joins the threads; jobs not yet started complete with <cancelled> set.
 * Submitting afterwards is refused (-ESHUTDOWN) until tg_workers_fini. */
void tg_workers_stop(tg_workers_t *p);
/* Releases the queue's lock. Nothing may submit any more: call it once the
 * loops that could have are finalised. */
void tg_workers_fini(tg_workers_t *p);

/* Any thread. <w>'s loop, run and done must be set. Returns 0, or -ESHUTDOWN. */
int  tg_work_submit(tg_workers_t *p, tg_work_t *w);

#endif
