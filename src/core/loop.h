/* core/loop.h - one IO loop: an epoll set, its timing wheel, its mailbox, its
 * pools and the connections it owns. A loop runs on its own thread; only that
 * thread touches anything in it except the mailbox (tg_loop_post) and the
 * counters (read by anyone). Knows nothing of any protocol.
 *
 * One iteration: due timers, epoll_wait, due timers again (the clock moved),
 * IO callbacks, mailbox (bounded),
 * flush of connections with pending output, deferred frees. */
#ifndef TG_CORE_LOOP_H
#define TG_CORE_LOOP_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "core/list.h"
#include "core/mbox.h"
#include "core/pool.h"
#include "core/sendbatch.h"
#include "core/timer.h"

#define TG_LOOP_EVENTS    256   /* epoll events per wait */
#define TG_LOOP_MAIL      1024  /* mails per iteration */
#define TG_LOOP_MAX       256   /* loops per process: 8 bits of a connection id */
#define TG_CHUNK_SIZE     16384 /* IO chunk, pool block size */
#define TG_READ_SIZE      65536 /* one read() at most */
#define TG_REASONS        64    /* close reasons counted per loop */
#define TG_COALESCE_COUNT_MAX 255 /* messages one hold gathers at most */
#define TG_WORK_MS_MAX        1000 /* work_ms beyond this counts as this */
#define TG_FLUSH_MAX          256  /* connections written per flush; more wait an iteration */

typedef struct tg_loop tg_loop_t;
typedef struct tg_conn tg_conn_t;
typedef struct tg_proto tg_proto_t;

/* Anything registered in a loop's epoll set: epoll's data points here. */
typedef struct tg_watch tg_watch_t;
typedef void tg_watch_cb(tg_watch_t *w, uint32_t events);
struct tg_watch {
    int          fd;
    uint32_t     events; /* current interest */
    tg_watch_cb *cb;
};

/* Figures a loop keeps about itself. Written by the loop, read by anyone. */
typedef struct tg_loop_stats {
    tg_counter_t live;      /* connections open now */
    tg_counter_t accepted;  /* connections adopted */
    tg_counter_t closed;    /* connections closed */
    tg_counter_t bytes_in;
    tg_counter_t bytes_out;
    tg_counter_t mails;     /* mailbox entries handled */
    tg_counter_t wakeups;   /* epoll_wait returns */
    tg_counter_t nomem;     /* connections closed for want of memory */
    tg_counter_t batches;   /* batches of sends the kernel took (io_uring) */
    tg_counter_t batched;   /* sends that went in them */
    tg_counter_t coalesced; /* broadcast messages that joined a held write */
    tg_counter_t reasons[TG_REASONS]; /* closes by reason (see tg_conn_close) */
} tg_loop_stats_t;

typedef struct tg_conn_slab {
    tg_conn_t **chunks;     /* TG_SLAB_CHUNK connections each */
    uint32_t    nchunks;
    uint32_t    cap;        /* entries in <chunks> */
    tg_link_t   free;       /* free connections, most recently freed first */
} tg_conn_slab_t;

struct tg_loop {
    int             id;        /* 0..TG_LOOP_MAX-1 */
    int             epfd;
    pthread_t       thread;
    bool            started;
    uint64_t        now_ms;    /* loop clock, read once per iteration */
    uint64_t        woke_ms;   /* when the last epoll_wait returned */
    uint32_t        work_ms;   /* how long the loop then ran before waiting again */
    tg_wheel_t      wheel;
    tg_mbox_t       mbox;
    tg_watch_t      mbox_watch;
    tg_pool_t       chunks;    /* TG_CHUNK_SIZE blocks for tg_buf_t */
    tg_pool_t       refs;      /* tg_buf_t reference chunks (see chunks.refs) */
    char           *rbuf;      /* TG_READ_SIZE scratch for read() */
    tg_conn_slab_t  slab;
    tg_link_t       dirty;     /* connections with output to flush */
    tg_link_t       held;      /* connections with broadcast output held for coalescing */
    tg_timer_t      held_timer; /* flushes each of <held> coalesce_ms after its hold */
    uint32_t        coalesce_ms; /* 0: broadcast output goes out in its own iteration */
    uint32_t        coalesce_count; /* a held connection goes once it holds this many */
    /* Load-triggered coalescing: while this loop queues more than
     * <coalesce_above> broadcast writes a second, <coalesce_ms> is
     * <coalesce_busy_ms> and <coalesce_count> what brings the writes back to
     * about that rate; below half of it, 0. Measured over 100 ms windows by
     * <rate_timer>, armed only while writes come. */
    uint32_t        coalesce_busy_ms; /* 0: off (coalesce_ms stays as set) */
    uint32_t        coalesce_above;
    uint32_t        ref_writes;  /* broadcast writes in the current window */
    tg_timer_t      rate_timer;
    tg_sendbatch_t *sendbatch; /* NULL: output goes with one send() per connection */
    tg_link_t       closed;    /* connections to free after this iteration */
    atomic_int      inbound;   /* sockets posted to this loop, not yet adopted */
    atomic_bool     stop_asked;
    tg_mail_t       stop_mail;
    uint32_t        stop_grace_ms;
    bool            stopping;
    uint64_t        stop_deadline_ms;
    uint32_t        drain_ms;  /* longest wait for a closing connection's output */
    void           *app;       /* the owner's context, for protocol code */
    void          (*on_stop)(tg_loop_t *loop); /* called once on the loop thread at stop */
    tg_loop_stats_t stats;
};

/* Lifecycle (boot thread). Returns 0 or a negative errno. */
int  tg_loop_init(tg_loop_t *loop, int id);
/* Closes every connection still open and frees everything. The thread must be
 * joined (or never started). Mail still queued is handled first. */
void tg_loop_fini(tg_loop_t *loop);
int  tg_loop_start(tg_loop_t *loop);
/* Any thread: asks the loop to stop. It stops reading new requests, lets work
 * in flight finish for up to <grace_ms>, closes the rest, and its thread exits. */
void tg_loop_stop(tg_loop_t *loop, uint32_t grace_ms);
void tg_loop_join(tg_loop_t *loop);

/* One iteration, waiting at most <max_wait_ms> (-1: until something happens).
 * For tests and fuzzers that drive a loop on their own thread. */
void tg_loop_run_once(tg_loop_t *loop, int max_wait_ms);

/* Any thread. Queues <m> for the loop. */
static inline void tg_loop_post(tg_loop_t *loop, tg_mail_t *m)
{
    tg_mbox_post(&loop->mbox, m);
}

/* Loop thread: epoll registration of <w>. Return 0 or a negative errno. */
int  tg_loop_watch(tg_loop_t *loop, tg_watch_t *w, uint32_t events);
int  tg_loop_rewatch(tg_loop_t *loop, tg_watch_t *w, uint32_t events);
void tg_loop_unwatch(tg_loop_t *loop, tg_watch_t *w);

/* Loop thread: takes ownership of connected socket <fd> and hands it to
 * <proto>. Returns the connection, or NULL with <fd> closed. */
tg_conn_t *tg_loop_adopt(tg_loop_t *loop, int fd, const tg_proto_t *proto);
/* Any thread: hands <fd> to <loop> to adopt with <proto>; counts it inbound. */
void tg_loop_post_fd(tg_loop_t *loop, int fd, const tg_proto_t *proto);
/* conn.c: a broadcast write was queued (it feeds load-triggered coalescing). */
void tg_loop__count_ref_write(tg_loop_t *loop);

/* Boot thread, or the loop's: with <on>, the output of many connections at the
 * end of an iteration goes out in one system call (core/sendbatch.h). Returns
 * 0, or -ENOTSUP with <why> filled when the kernel refuses io_uring (sends
 * then go one by one). */
int  tg_loop_batch_sends(tg_loop_t *loop, bool on, char *why, size_t cap);

/* Calls <fn> for every open connection (loop thread; <fn> may close it). */
void tg_loop_each_conn(tg_loop_t *loop, void (*fn)(tg_conn_t *c, void *arg), void *arg);

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
uint64_t tg_clock_ms(void);

#endif
