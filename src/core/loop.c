/* core/loop.c - the IO loop's iteration, its thread, adoption of sockets and
 * the orderly stop. See loop.h. */
#include "core/loop.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/conn.h"
#include "core/log.h"

#define CHUNKS_KEPT 64   /* free IO chunks a loop keeps: 1 MiB */
#define REFS_KEPT   4096 /* free reference chunks: 128 KiB */

typedef struct fd_mail {
    tg_mail_t         mail;
    int               fd;
    const tg_proto_t *proto;
} fd_mail_t;

uint64_t tg_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_mbox_io(tg_watch_t *w, uint32_t events)
{
    (void)events;
    /* Reset the eventfd; the iteration drains the mailbox after every wait. */
    uint64_t v;
    (void)!read(w->fd, &v, sizeof(v));
}

static void release_held(tg_timer_t *t);
static void rate_tick(tg_timer_t *t);

int tg_loop_init(tg_loop_t *loop, int id)
{
    memset(loop, 0, sizeof(*loop));
    TG_ASSERT(id >= 0 && id < TG_LOOP_MAX);
    loop->id = id;
    loop->mbox.efd = -1;
    loop->drain_ms = 60000;
    loop->coalesce_count = TG_COALESCE_COUNT_MAX;
    loop->now_ms = tg_clock_ms();
    loop->woke_ms = loop->now_ms;
    tg_wheel_init(&loop->wheel, loop->now_ms);
    tg_pool_init(&loop->chunks, TG_CHUNK_SIZE, CHUNKS_KEPT);
    tg_pool_init(&loop->refs, sizeof(tg_chunk_t), REFS_KEPT);
    loop->chunks.refs = &loop->refs;
    tg_list_init(&loop->dirty);
    tg_list_init(&loop->held);
    tg_timer_init(&loop->held_timer, release_held);
    tg_timer_init(&loop->rate_timer, rate_tick);
    tg_list_init(&loop->closed);
    tg_list_init(&loop->slab.free);
    int err;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd == -1)
        return -errno;
    if ((err = tg_mbox_init(&loop->mbox)) != 0)
        goto fail;
    loop->rbuf = malloc(TG_READ_SIZE);
    if (!loop->rbuf) {
        err = -ENOMEM;
        goto fail;
    }
    loop->mbox_watch.fd = loop->mbox.efd;
    loop->mbox_watch.cb = on_mbox_io;
    if ((err = tg_loop_watch(loop, &loop->mbox_watch, EPOLLIN)) != 0)
        goto fail;
    return 0;
fail:
    free(loop->rbuf);
    loop->rbuf = NULL;
    tg_mbox_fini(&loop->mbox);
    close(loop->epfd);
    loop->epfd = -1;
    return err;
}

static void close_one(tg_conn_t *c, void *arg)
{
    (void)arg;
    tg_conn_close(c, TG_CONN_SHUTDOWN);
}

/* Connections in DRAINING or LINGER are not OPEN: close those too. */
static void close_everything(tg_loop_t *loop)
{
    tg_loop_each_conn(loop, close_one, NULL);
    for (uint32_t i = 0; i < loop->slab.nchunks; i++)
        for (int j = 0; j < TG_SLAB_CHUNK; j++) {
            tg_conn_t *c = &loop->slab.chunks[i][j];
            if (c->state == TG_CONN_DRAINING || c->state == TG_CONN_LINGER)
                tg_conn_close(c, c->reason);
        }
}

void tg_loop_fini(tg_loop_t *loop)
{
    if (loop->epfd == -1)
        return;
    /* Mail still queued (sockets handed over, work done) is handled first, so
     * that whatever it owns is released through its usual path. */
    while (tg_mbox_drain(&loop->mbox, TG_LOOP_MAIL, loop) > 0)
        ;
    close_everything(loop);
    tg_conn__free_closed(loop);
    tg_conn__slab_fini(loop);
    tg_pool_fini(&loop->chunks);
    tg_pool_fini(&loop->refs);
    tg_mbox_fini(&loop->mbox);
    close(loop->epfd);
    loop->epfd = -1;
    free(loop->rbuf);
    loop->rbuf = NULL;
    tg_sendbatch_destroy(loop->sendbatch);
    loop->sendbatch = NULL;
}

int tg_loop_watch(tg_loop_t *loop, tg_watch_t *w, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, w->fd, &ev) == -1)
        return -errno;
    w->events = events;
    return 0;
}

int tg_loop_rewatch(tg_loop_t *loop, tg_watch_t *w, uint32_t events)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, w->fd, &ev) == -1)
        return -errno;
    w->events = events;
    return 0;
}

void tg_loop_unwatch(tg_loop_t *loop, tg_watch_t *w)
{
    (void)epoll_ctl(loop->epfd, EPOLL_CTL_DEL, w->fd, NULL);
    w->events = 0;
}

/* ---- adoption ---- */

tg_conn_t *tg_loop_adopt(tg_loop_t *loop, int fd, const tg_proto_t *proto)
{
    tg_conn_t *c = tg_conn__new(loop, fd);
    if (!c) {
        tg_counter_add(&loop->stats.nomem, 1);
        close(fd);
        return NULL;
    }
    /* Responses and pushes are written whole, in one call per iteration:
     * Nagle would only delay them. Fails harmlessly on non-TCP sockets. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    tg_counter_add(&loop->stats.live, 1);
    if (tg_loop_watch(loop, &c->w, EPOLLIN | EPOLLRDHUP) != 0) {
        tg_conn_close(c, TG_CONN_IOERR); /* no protocol yet: nothing to tell it */
        return NULL;
    }
    tg_counter_add(&loop->stats.accepted, 1);
    c->proto = proto;
    if (proto->on_open && proto->on_open(c) != 0) {
        tg_counter_add(&loop->stats.nomem, 1);
        tg_conn_close(c, TG_CONN_NOMEM);
        return NULL;
    }
    return c;
}

static void on_fd_mail(tg_mail_t *m, void *arg)
{
    tg_loop_t *loop = arg;
    fd_mail_t *fm = tg_container_of(m, fd_mail_t, mail);
    atomic_fetch_sub_explicit(&loop->inbound, 1, memory_order_relaxed);
    if (loop->stopping || loop->epfd == -1 || loop->stop_asked)
        close(fm->fd);
    else
        tg_loop_adopt(loop, fm->fd, fm->proto);
    free(fm);
}

void tg_loop_post_fd(tg_loop_t *loop, int fd, const tg_proto_t *proto)
{
    fd_mail_t *fm = malloc(sizeof(*fm));
    if (!fm) {
        close(fd);
        return;
    }
    fm->mail.cb = on_fd_mail;
    fm->fd = fd;
    fm->proto = proto;
    atomic_fetch_add_explicit(&loop->inbound, 1, memory_order_relaxed);
    tg_loop_post(loop, &fm->mail);
}

/* ---- stop ---- */

static void stop_one(tg_conn_t *c, void *arg)
{
    (void)arg;
    if (c->proto->on_stop)
        c->proto->on_stop(c);
    else
        tg_conn_close(c, TG_CONN_SHUTDOWN);
}

static void on_stop_mail(tg_mail_t *m, void *arg)
{
    (void)m; /* embedded in the loop */
    tg_loop_t *loop = arg;
    loop->stop_deadline_ms = tg_clock_ms() + loop->stop_grace_ms;
    loop->stopping = true;
    tg_timer_cancel(&loop->wheel, &loop->held_timer);
    tg_timer_cancel(&loop->wheel, &loop->rate_timer);
    release_held(&loop->held_timer); /* what is held goes out now */
    if (loop->on_stop)
        loop->on_stop(loop);
    tg_loop_each_conn(loop, stop_one, NULL);
}

void tg_loop_stop(tg_loop_t *loop, uint32_t grace_ms)
{
    if (atomic_exchange(&loop->stop_asked, true))
        return;
    /* Written before the post; the mailbox orders it before the loop reads it. */
    loop->stop_grace_ms = grace_ms;
    loop->stop_mail.cb = on_stop_mail;
    tg_loop_post(loop, &loop->stop_mail);
}

/* ---- iteration ---- */

/* Holds that have lasted coalesce_ms end: their output joins the dirty. The
 * held list is in the order holds began, so the first not due yet is where
 * the timer waits next. Stopping (or a window of 0) ends every hold. */
static void release_held(tg_timer_t *t)
{
    tg_loop_t *loop = tg_container_of(t, tg_loop_t, held_timer);
    while (!tg_list_empty(&loop->held)) {
        tg_conn_t *c = tg_container_of(loop->held.next, tg_conn_t, link);
        uint32_t age = (uint32_t)loop->now_ms - c->mark_ms;
        if (!loop->stopping && age < loop->coalesce_ms) {
            tg_timer_arm(&loop->wheel, t, loop->coalesce_ms - age);
            return;
        }
        tg_link_remove(&c->link);
        c->held = false;
        tg_list_push(&loop->dirty, &c->link);
    }
}

#define RATE_WINDOW_MS 100

/* The end of a 100 ms window: coalesce while broadcast writes are many
 * (the CPU a write costs is then worth saving), not when they are few (the
 * latency a hold costs is then not). A hold ends after as many messages as
 * bring the loop's writes back to about coalesce_above a second: no longer
 * than that saves, so the latency added is no more than the load asks. */
static void rate_tick(tg_timer_t *t)
{
    tg_loop_t *loop = tg_container_of(t, tg_loop_t, rate_timer);
    uint64_t per_s = (uint64_t)loop->ref_writes * (1000 / RATE_WINDOW_MS);
    if (per_s > loop->coalesce_above)
        loop->coalesce_ms = loop->coalesce_busy_ms;
    else if (per_s < loop->coalesce_above / 2)
        loop->coalesce_ms = 0;
    uint64_t count = loop->coalesce_above ? per_s / loop->coalesce_above + 1
                                          : TG_COALESCE_COUNT_MAX;
    loop->coalesce_count = (uint32_t)(count < 2 ? 2
                                      : count > TG_COALESCE_COUNT_MAX ? TG_COALESCE_COUNT_MAX
                                                                     : count);
    bool active = loop->ref_writes > 0;
    loop->ref_writes = 0;
    if (active && !loop->stopping)
        tg_timer_arm(&loop->wheel, &loop->rate_timer, RATE_WINDOW_MS);
    else
        loop->coalesce_ms = 0; /* a quiet window: nothing to save */
    if (!loop->coalesce_ms)
        release_held(&loop->held_timer); /* no load left to save on */
}

void tg_loop__count_ref_write(tg_loop_t *loop)
{
    if (!loop->coalesce_busy_ms)
        return;
    loop->ref_writes++;
    if (!tg_timer_armed(&loop->rate_timer))
        tg_timer_arm(&loop->wheel, &loop->rate_timer, RATE_WINDOW_MS);
}

static void batch_sent(void *tag, long res, size_t asked, void *arg)
{
    (void)arg;
    tg_conn__batch_sent(tag, res, asked);
}

/* Up to a batch of connections with output, sent with one system call.
 * Returns how many connections it took. */
static int flush_batch(tg_loop_t *loop)
{
    tg_conn_t *rest[TG_SENDBATCH_DEPTH];
    int nrest = 0;
    tg_link_t *l;
    while (nrest < TG_SENDBATCH_DEPTH && tg_sendbatch_iov(loop->sendbatch) &&
           (l = tg_list_shift(&loop->dirty)) != NULL) {
        tg_conn_t *c = tg_container_of(l, tg_conn_t, link);
        c->dirty = false;
        if (!tg_conn__batch(c, loop->sendbatch))
            rest[nrest++] = c; /* after the batch: its callbacks must not run before */
    }
    int queued = tg_sendbatch_queued(loop->sendbatch);
    int err = tg_sendbatch_submit(loop->sendbatch, batch_sent, NULL);
    if (err == 0) {
        tg_counter_add(&loop->stats.batches, 1);
        tg_counter_add(&loop->stats.batched, (uint64_t)queued);
    } else {
        tg_log_warn("loop %d: io_uring refused a batch of sends (%s): sending one by one "
                    "from now on", loop->id, strerror(-err));
        tg_sendbatch_destroy(loop->sendbatch);
        loop->sendbatch = NULL;
    }
    for (int i = 0; i < nrest; i++)
        tg_conn__flush(rest[i]);
    return queued + nrest;
}

/* Sends the output of up to TG_FLUSH_MAX dirty connections; returns true
 * when some are left for the next iteration. Bounded so that a broadcast to
 * many thousands does not keep mail and reads waiting for all of it: a
 * publish answered through another loop would otherwise take two of its
 * whole rounds, and the publisher could send no faster than that. */
static bool flush_dirty(tg_loop_t *loop)
{
    tg_link_t *l;
    int done = 0;
    while (!tg_list_empty(&loop->dirty)) {
        if (done >= TG_FLUSH_MAX)
            return true;
        /* One connection: send() costs what one submit costs. */
        if (loop->sendbatch && loop->dirty.next->next != &loop->dirty) {
            done += flush_batch(loop);
            continue;
        }
        l = tg_list_shift(&loop->dirty);
        tg_conn_t *c = tg_container_of(l, tg_conn_t, link);
        c->dirty = false;
        tg_conn__flush(c);
        done++;
    }
    return false;
}

int tg_loop_batch_sends(tg_loop_t *loop, bool on, char *why, size_t cap)
{
    if (!on) {
        tg_sendbatch_destroy(loop->sendbatch);
        loop->sendbatch = NULL;
        return 0;
    }
    if (!loop->sendbatch && !(loop->sendbatch = tg_sendbatch_create(why, cap)))
        return -ENOTSUP;
    return 0;
}

/* Returns false once the loop has stopped for good. */
static bool iterate(tg_loop_t *loop, int max_wait_ms)
{
    struct epoll_event ev[TG_LOOP_EVENTS];

    /* Timers that fell due while the last batch ran, so the wait is not late. */
    loop->now_ms = tg_clock_ms();
    tg_wheel_run(&loop->wheel, loop->now_ms);
    bool more = flush_dirty(loop);

    int wait_ms = more ? 0 : tg_wheel_next_ms(&loop->wheel);
    if (max_wait_ms >= 0 && (wait_ms < 0 || wait_ms > max_wait_ms))
        wait_ms = max_wait_ms;
    if (loop->stopping) {
        int left = loop->stop_deadline_ms > loop->now_ms
                       ? (int)(loop->stop_deadline_ms - loop->now_ms) : 0;
        if (wait_ms < 0 || wait_ms > left)
            wait_ms = left;
    }
    if (wait_ms != 0 && !tg_mbox_arm_sleep(&loop->mbox))
        wait_ms = 0;
    uint64_t ran = tg_clock_ms() - loop->woke_ms;
    loop->work_ms = (uint32_t)(ran < TG_WORK_MS_MAX ? ran : TG_WORK_MS_MAX);
    int n = epoll_wait(loop->epfd, ev, TG_LOOP_EVENTS, wait_ms);
    /* Awake from here on: posts made while IO runs need no eventfd write. */
    tg_mbox_woke(&loop->mbox, false);
    if (n == -1)
        n = 0; /* EINTR: a signal aimed at another thread; just go round */
    tg_counter_add(&loop->stats.wakeups, 1);
    /* The wheel's clock moves before any callback runs: a timer armed by IO
     * (a new connection's header timeout) counts from now, not from before
     * the sleep. */
    loop->now_ms = tg_clock_ms();
    loop->woke_ms = loop->now_ms;
    tg_wheel_run(&loop->wheel, loop->now_ms);
    for (int i = 0; i < n; i++) {
        tg_watch_t *w = ev[i].data.ptr;
        w->cb(w, ev[i].events);
    }
    unsigned mails = tg_mbox_drain(&loop->mbox, TG_LOOP_MAIL, loop);
    tg_counter_add(&loop->stats.mails, mails);
    flush_dirty(loop);
    tg_conn__free_closed(loop);

    if (!loop->stopping)
        return true;
    if (tg_counter_get(&loop->stats.live) == 0 &&
        atomic_load_explicit(&loop->inbound, memory_order_relaxed) == 0)
        return false;
    if (tg_clock_ms() >= loop->stop_deadline_ms) {
        close_everything(loop);
        tg_conn__free_closed(loop);
        return false;
    }
    return true;
}

void tg_loop_run_once(tg_loop_t *loop, int max_wait_ms)
{
    (void)iterate(loop, max_wait_ms);
}

static void *loop_main(void *arg)
{
    tg_loop_t *loop = arg;
    while (iterate(loop, -1))
        ;
    return NULL;
}

int tg_loop_start(tg_loop_t *loop)
{
    int rc = pthread_create(&loop->thread, NULL, loop_main, loop);
    if (rc != 0)
        return -rc;
    loop->started = true;
    char name[16];
    snprintf(name, sizeof(name), "tg-io-%u", (unsigned)loop->id % 1000u);
    pthread_setname_np(loop->thread, name);
    return 0;
}

void tg_loop_join(tg_loop_t *loop)
{
    if (loop->started)
        pthread_join(loop->thread, NULL);
    loop->started = false;
}
