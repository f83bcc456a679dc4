/* core/worker.c - see worker.h. */
#include "core/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

static void deliver(tg_mail_t *m, void *arg)
{
    (void)arg;
    tg_work_t *w = tg_container_of(m, tg_work_t, mail);
    w->done(w); /* may free <w> */
}

static void complete(tg_work_t *w)
{
    w->mail.cb = deliver;
    tg_loop_post(w->loop, &w->mail);
}

static void *worker_main(void *arg)
{
    tg_workers_t *p = arg;
    for (;;) {
        pthread_mutex_lock(&p->lock);
        while (!p->head && !p->stopping)
            pthread_cond_wait(&p->wake, &p->lock);
        tg_work_t *w = p->head;
        if (!w) { /* stopping and nothing left */
            pthread_mutex_unlock(&p->lock);
            return NULL;
        }
        if (p->stopping) {
            pthread_mutex_unlock(&p->lock);
            return NULL; /* tg_workers_stop cancels the rest */
        }
        p->head = w->next;
        if (!p->head)
            p->tail = NULL;
        pthread_mutex_unlock(&p->lock);
        w->run(w);
        atomic_fetch_add_explicit(&p->done, 1, memory_order_relaxed);
        complete(w);
    }
}

int tg_workers_start(tg_workers_t *p, int n)
{
    p->head = p->tail = NULL;
    p->stopping = false;
    p->n = 0;
    atomic_init(&p->done, 0);
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->wake, NULL);
    p->threads = calloc((size_t)(n > 0 ? n : 1), sizeof(pthread_t));
    if (!p->threads) {
        tg_workers_fini(p);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        int rc = pthread_create(&p->threads[i], NULL, worker_main, p);
        if (rc != 0) {
            tg_workers_stop(p);
            tg_workers_fini(p);
            return -rc;
        }
        char name[16];
        snprintf(name, sizeof(name), "tg-work-%u", (unsigned)i % 1000u);
        pthread_setname_np(p->threads[i], name);
        p->n++;
    }
    return 0;
}

void tg_workers_stop(tg_workers_t *p)
{
    pthread_mutex_lock(&p->lock);
    p->stopping = true;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i], NULL);
    p->n = 0;
    free(p->threads);
    p->threads = NULL;
    /* Whatever never ran still goes home, marked, so its owner can release it. */
    tg_work_t *w = p->head;
    p->head = p->tail = NULL;
    while (w) {
        tg_work_t *next = w->next;
        w->cancelled = true;
        complete(w);
        w = next;
    }
}

void tg_workers_fini(tg_workers_t *p)
{
    pthread_cond_destroy(&p->wake);
    pthread_mutex_destroy(&p->lock);
}

int tg_work_submit(tg_workers_t *p, tg_work_t *w)
{
    w->next = NULL;
    w->cancelled = false;
    pthread_mutex_lock(&p->lock);
    if (p->stopping) {
        pthread_mutex_unlock(&p->lock);
        return -ESHUTDOWN;
    }
    if (p->tail)
        p->tail->next = w;
    else
        p->head = w;
    p->tail = w;
    pthread_cond_signal(&p->wake);
    pthread_mutex_unlock(&p->lock);
    return 0;
}
