/* core/accept.h - listening sockets and the ways accepted sockets reach a loop.
 *
 * Acceptor mode (default): one thread waits on every listener, accepts, and
 * hands each socket to the loop with the fewest live connections (counting
 * those already on their way). Reuseport mode: each loop has its own
 * SO_REUSEPORT listener in its epoll set and accepts for itself; the kernel
 * spreads connections. No protocol knowledge: a listener names the protocol
 * its connections speak.
 *
 * Out of descriptors (EMFILE, ENFILE) or memory while accepting: the listener
 * is set aside for TG_ACCEPT_RETRY_MS (existing connections keep being served,
 * nothing spins), the event is counted, and it is logged once per episode. */
#ifndef TG_CORE_ACCEPT_H
#define TG_CORE_ACCEPT_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "core/conn.h"
#include "core/loop.h"
#include "core/timer.h"

#define TG_ACCEPT_RETRY_MS 100
#define TG_ACCEPT_BATCH    64 /* accepts per readiness event */
#define TG_LISTENERS_MAX   8

/* Parses "HOST:PORT", "[V6]:PORT" or ":PORT" (all interfaces) into <ss>.
 * Numeric hosts and "localhost" only: boot must not block on a resolver.
 * Returns 0 or -EINVAL. */
int tg_addr_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len);
/* "HOST:PORT" of a bound or connected socket's local side, into <buf>. */
void tg_addr_local(int fd, char *buf, size_t cap);

/* A listening socket (non-blocking, close-on-exec); port 0 picks a free one.
 * Returns the fd or a negative errno. */
int tg_listen_open(const struct sockaddr_storage *ss, socklen_t len, bool reuseport,
                   int backlog);

typedef struct tg_accept_stats {
    tg_counter_t accepted;  /* sockets accepted */
    tg_counter_t emfile;    /* accepts refused for want of descriptors or memory */
} tg_accept_stats_t;

/* Reuseport mode: a listener owned by one loop. */
typedef struct tg_listener {
    tg_watch_t        w;
    tg_loop_t        *loop;
    const tg_proto_t *proto;
    tg_timer_t        retry;
    bool              starved; /* set aside after EMFILE until the retry */
    tg_accept_stats_t stats;
} tg_listener_t;

/* Boot thread, before the loop starts, or its own loop thread: <loop> accepts
 * on <fd> (taken) for <proto>. Returns 0 or a negative errno. */
int  tg_listener_attach(tg_listener_t *l, tg_loop_t *loop, int fd, const tg_proto_t *proto);
/* Loop thread (its on_stop): stops accepting and closes the socket. */
void tg_listener_close(tg_listener_t *l);

/* Acceptor mode. */
typedef struct tg_acceptor {
    pthread_t         thread;
    int               epfd;
    int               stop_efd;
    int               nfds;
    int               fds[TG_LISTENERS_MAX];
    const tg_proto_t *protos[TG_LISTENERS_MAX];
    tg_loop_t       **loops;
    int               nloops;
    bool              started;
    tg_accept_stats_t stats;
} tg_acceptor_t;

int  tg_acceptor_init(tg_acceptor_t *a, tg_loop_t **loops, int nloops);
/* Boot thread, before start: accept on <fd> (taken) for <proto>. */
int  tg_acceptor_add(tg_acceptor_t *a, int fd, const tg_proto_t *proto);
int  tg_acceptor_start(tg_acceptor_t *a);
/* Any thread but the acceptor's: stops accepting, closes the listeners, joins. */
void tg_acceptor_stop(tg_acceptor_t *a);

#endif
