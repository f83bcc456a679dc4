/* core/conn.h - a client connection as its IO loop sees it: a socket, an
 * output queue, one timer and a protocol. Loop thread only: other threads hold a
 * tg_conn_id_t and post to the loop, which looks the id up (a stale id, whose
 * connection has closed, looks up as NULL).
 *
 * Connections live in a per-loop slab of fixed-size entries; the slot index and
 * a generation bumped at every free make the id. An idle connection holds no
 * buffer: bytes read are lent to the protocol from the loop's scratch buffer,
 * and output waits in pool chunks only until it is written (right after the
 * read that caused it, or at the end of the iteration) or, when the socket is
 * full, until it drains.
 *
 *   OPEN --tg_conn_close_after_flush--> DRAINING --output written--> LINGER
 *     |                                   |                            |
 *     +----- tg_conn_close, EOF, error ---+------- EOF or timeout -----+--> CLOSED
 *
 * In DRAINING and LINGER bytes read are discarded: lingering (shutdown of our
 * side, then reading until the peer closes) keeps the kernel from resetting the
 * connection, and the error response with it, while the peer is still sending. */
#ifndef TG_CORE_CONN_H
#define TG_CORE_CONN_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/sendbatch.h"
#include "core/timer.h"

typedef uint64_t tg_conn_id_t; /* loop:8 | generation:24 | slot:32; 0 is never valid */

#define TG_SLAB_CHUNK 1024 /* connections per slab chunk */
#define TG_LINGER_MS  2000 /* at most, after an error response */

/* Close reasons known to the core; protocols number theirs from TG_CONN_REASON_USER. */
enum {
    TG_CONN_EOF = 1,      /* the peer closed */
    TG_CONN_IOERR,        /* read or write failed (reset, ...) */
    TG_CONN_NOMEM,        /* out of memory on this connection's path */
    TG_CONN_SHUTDOWN,     /* the server is stopping */
    TG_CONN_LINGER_DONE,  /* an error response went out, then the peer closed */
    TG_CONN_REASON_USER = 8,
};

typedef enum tg_conn_state {
    TG_CONN_FREE,
    TG_CONN_OPEN,
    TG_CONN_DRAINING,
    TG_CONN_LINGER,
    TG_CONN_CLOSED, /* fd closed, struct freed at the end of the iteration */
} tg_conn_state_t;

/* What a protocol does with a connection. Every callback runs on the loop
 * thread; any of them may close the connection. */
struct tg_proto {
    const char *name;
    void       *ctx;  /* the protocol instance's context (a server), for callbacks */
    /* The connection was adopted. Return 0, or a negative errno to close it. */
    int  (*on_open)(tg_conn_t *c);
    /* <n> bytes arrived, lent until the call returns. */
    void (*on_data)(tg_conn_t *c, const char *p, size_t n);
    /* The output queue became empty (all written). May be NULL. */
    void (*on_drained)(tg_conn_t *c);
    /* The connection's timer fired (tg_conn_timer_arm). */
    void (*on_timer)(tg_conn_t *c);
    /* The loop is stopping: close now if idle, or once work in flight is done. */
    void (*on_stop)(tg_conn_t *c);
    /* The connection is leaving OPEN for <reason>: release protocol state.
     * Output can no longer be queued. */
    void (*on_close)(tg_conn_t *c, int reason);
};

struct tg_conn {
    tg_watch_t        w;       /* fd and epoll interest */
    tg_loop_t        *loop;
    const tg_proto_t *proto;
    void             *data;    /* the protocol's state; NULL while it needs none */
    tg_buf_t          out;     /* bytes queued for writing */
    tg_timer_t        timer;   /* one per connection: its protocol's current deadline */
    tg_link_t         link;    /* on loop->dirty, loop->closed or the slab's free list */
    uint32_t          slot;
    uint32_t          gen;     /* 24 bits used */
    uint8_t           state;   /* tg_conn_state_t */
    uint8_t           reason;  /* why it is closing */
    bool              paused;  /* reads stopped by the protocol */
    bool              rd_off;  /* paused, and EPOLLIN taken out since data came meanwhile */
    bool              held;    /* on loop->held rather than loop->dirty (dirty is set too) */
    bool              dirty;   /* on loop->dirty */
    bool              rd_eof;  /* the peer will send nothing more */
    uint8_t           held_n;  /* while held: broadcast writes held */
    uint32_t          flags;   /* free for the protocol */
    /* Loop clock, low 32 bits: while held, when the hold began (loop->held is
     * in that order); otherwise, when output last went out. */
    uint32_t          mark_ms;
};

/* Loop thread. The id other threads use to name <c>. */
static inline tg_conn_id_t tg_conn_id(const tg_conn_t *c)
{
    return ((uint64_t)c->loop->id << 56) | ((uint64_t)(c->gen & 0xffffff) << 32) | c->slot;
}
static inline int tg_conn_id_loop(tg_conn_id_t id)
{
    return (int)(id >> 56);
}
/* Loop thread of the id's loop. NULL when <id> names no open connection now. */
tg_conn_t *tg_conn_lookup(tg_loop_t *loop, tg_conn_id_t id);

/* Queues <n> bytes for writing; they go out at the end of this iteration,
 * batched with anything else queued meanwhile. Returns 0, or -ENOMEM after
 * closing the connection, or -EPIPE when it no longer takes output. */
int tg_conn_write(tg_conn_t *c, const void *p, size_t n);
/* Queues bytes [<off>, <off>+<len>) of <s> by reference (a broadcast frame):
 * no copy; the queue holds a reference until they are written. Same returns.
 * With loop->coalesce_ms set, a write to a connection written less than that
 * long ago is held, so that the messages that follow share its system call:
 * it goes once loop->coalesce_count messages are held, or coalesce_ms after
 * the hold began (any other write, or a read on the connection, sends it at
 * once). A connection written longer ago gets the message at once: holding
 * it would delay a lone message and save nothing. */
int tg_conn_write_ref(tg_conn_t *c, tg_shared_t *s, size_t off, size_t len);
static inline size_t tg_conn_pending(const tg_conn_t *c)
{
    return c->out.len;
}

/* Stops / restarts delivering bytes (flow control; a pipelining limit).
 * Lazily: read interest leaves the epoll set only if bytes arrive while
 * paused, so a pause that ends before the peer sends again (a request
 * waiting for its answer) costs no system call. */
void tg_conn_pause(tg_conn_t *c);
void tg_conn_resume(tg_conn_t *c);

void tg_conn_timer_arm(tg_conn_t *c, uint64_t after_ms);
void tg_conn_timer_cancel(tg_conn_t *c);

/* Closes now: queued output is dropped. Safe to call more than once. */
void tg_conn_close(tg_conn_t *c, int reason);
/* Writes what is queued, then lingers and closes (see the state diagram). */
void tg_conn_close_after_flush(tg_conn_t *c, int reason);
static inline bool tg_conn_open(const tg_conn_t *c)
{
    return c->state == TG_CONN_OPEN;
}

/* Used by loop.c. */
tg_conn_t *tg_conn__new(tg_loop_t *loop, int fd);
void       tg_conn__flush(tg_conn_t *c);
/* Batched flush (loop.c): queues a send of <c>'s output in <b>. False when
 * there is nothing to send, or no room: tg_conn__flush does it then. */
bool       tg_conn__batch(tg_conn_t *c, tg_sendbatch_t *b);
/* That send took <res> bytes of <asked>, or failed with -<res>. */
void       tg_conn__batch_sent(tg_conn_t *c, long res, size_t asked);
void       tg_conn__free_closed(tg_loop_t *loop);
void       tg_conn__slab_fini(tg_loop_t *loop);

#endif
