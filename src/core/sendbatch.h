/* core/sendbatch.h - sends to many sockets in one system call (io_uring).
 *
 * A loop that has output for many connections at the end of an iteration (a
 * broadcast, usually) queues one send per connection here and submits them
 * together: one io_uring_enter instead of one send() each. On kernels that pay
 * for every system call's entry and exit (page-table isolation, retpolines)
 * that halves the CPU of a small send.
 *
 * Every send is non-blocking (MSG_DONTWAIT): it completes during the submit,
 * with the bytes the socket took or -EAGAIN, never later. So a batch is
 * finished when tg_sendbatch_submit returns, and nothing it was given (the
 * buffers the iovecs point to) needs to live longer.
 *
 * Created on one thread and used on another (the loop's): so the ring's fd is
 * not registered (IORING_REGISTER_RING_FDS is per thread).
 *
 * A send of several small parts is copied into one staging buffer and goes
 * as a plain send: the kernel then skips copying in a msghdr and an iovec
 * array, which costs more than the copy.
 *
 * Owned by one loop, loop thread only. Holds the ring, TG_SENDBATCH_DEPTH
 * slots of TG_SENDBATCH_IOV iovecs and the staging buffer (64 KiB); allocates
 * nothing after create. */
#ifndef TG_CORE_SENDBATCH_H
#define TG_CORE_SENDBATCH_H

#include <stddef.h>
#include <sys/uio.h>

#define TG_SENDBATCH_DEPTH 256 /* sends per submit */
#define TG_SENDBATCH_IOV   16  /* iovecs per send; the rest goes in a later send */

typedef struct tg_sendbatch tg_sendbatch_t;

/* <tag> is what was given to tg_sendbatch_add; <res> the bytes sent (of
 * <asked>) or a negative errno. */
typedef void tg_sendbatch_cb(void *tag, long res, size_t asked, void *arg);

/* NULL when the kernel refuses io_uring (too old, disabled by
 * kernel.io_uring_disabled, seccomp); then <why> says why. */
tg_sendbatch_t *tg_sendbatch_create(char *why, size_t cap);
void            tg_sendbatch_destroy(tg_sendbatch_t *b);

/* The iovecs of the next send, to fill (at most TG_SENDBATCH_IOV); NULL when
 * the batch is full, or when a submit has failed (then sends go one by one). */
struct iovec *tg_sendbatch_iov(tg_sendbatch_t *b);
/* Queues the send of the <n> iovecs just filled to <fd>. */
void tg_sendbatch_add(tg_sendbatch_t *b, int fd, int n, void *tag);
/* Sends queued, not yet submitted. */
int tg_sendbatch_queued(const tg_sendbatch_t *b);
/* Sends what was queued and calls <done> once per send, in the order added.
 * Returns 0, or the negative errno of a submit the kernel refused: those sends
 * went out one by one (sendmsg), and every later batch is refused. */
int tg_sendbatch_submit(tg_sendbatch_t *b, tg_sendbatch_cb *done, void *arg);

#endif
