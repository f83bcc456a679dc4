/* core/mbox.h - a loop's mailbox: the only way other threads talk to it.
 * A lock-free multi-producer, single-consumer queue of intrusive mails plus an
 * eventfd that wakes the loop's epoll_wait. A post pays for the eventfd write
 * only when the loop may be asleep: the loop sets <sleeping> before it blocks
 * and re-checks the queue (seq_cst), the poster pushes and then swaps
 * <sleeping> off; whichever comes second sees the other.
 *
 * Any thread may post; only the owning loop arms, drains and finalises. */
#ifndef TG_CORE_MBOX_H
#define TG_CORE_MBOX_H

#include <stdatomic.h>
#include <stdbool.h>

typedef struct tg_mail tg_mail_t;
/* Handles <m> on the owning loop's thread; owns <m> from then on. */
typedef void tg_mail_cb(tg_mail_t *m, void *arg);

struct tg_mail {
    _Atomic(tg_mail_t *) next; /* private to mbox.c */
    tg_mail_cb          *cb;
};                             /* embedded in whatever the poster sends */

typedef struct tg_mbox {
    _Atomic(tg_mail_t *) tail;     /* producers swap themselves in here */
    tg_mail_t           *head;     /* consumer side: the oldest node (a mail or the stub) */
    tg_mail_t            stub;
    atomic_bool          sleeping; /* the loop may be in epoll_wait */
    int                  efd;      /* eventfd, registered in the loop's epoll */
    _Atomic unsigned long kicks;   /* eventfd writes, for tests and stats */
} tg_mbox_t;

/* Returns 0 or a negative errno (eventfd failed). */
int  tg_mbox_init(tg_mbox_t *mb);
/* Closes the eventfd. Mails still queued are the caller's to drain first. */
void tg_mbox_fini(tg_mbox_t *mb);

/* Any thread. Queues <m> (its cb must be set) and wakes the loop if asleep. */
void tg_mbox_post(tg_mbox_t *mb, tg_mail_t *m);

/* Loop thread. Declares the intent to sleep; returns false (stay awake) when
 * mail is already waiting. */
bool tg_mbox_arm_sleep(tg_mbox_t *mb);
/* Loop thread, after epoll_wait returns: clears the flag and resets the eventfd
 * if <efd_ready> (it was among the events). */
void tg_mbox_woke(tg_mbox_t *mb, bool efd_ready);
/* Loop thread. Hands up to <max> mails to their callbacks in post order, with
 * <arg>; returns how many. Bounded, so that a flood of mail does not starve IO. */
unsigned tg_mbox_drain(tg_mbox_t *mb, unsigned max, void *arg);
/* Loop thread. True when no mail is queued (a mail being linked counts as queued). */
bool tg_mbox_idle(tg_mbox_t *mb);

#endif
