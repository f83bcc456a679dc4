/* core/mbox.c - Vyukov's intrusive MPSC queue with a stub node, plus the
 * sleeping flag described in mbox.h. */
#include "core/mbox.h"

#include <errno.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/common.h"

int tg_mbox_init(tg_mbox_t *mb)
{
    atomic_init(&mb->stub.next, NULL);
    mb->stub.cb = NULL;
    atomic_init(&mb->tail, &mb->stub);
    mb->head = &mb->stub;
    atomic_init(&mb->sleeping, false);
    atomic_init(&mb->kicks, 0);
    mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return mb->efd == -1 ? -errno : 0;
}

void tg_mbox_fini(tg_mbox_t *mb)
{
    if (mb->efd != -1)
        close(mb->efd);
    mb->efd = -1;
}

static void push(tg_mbox_t *mb, tg_mail_t *m)
{
    atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
    tg_mail_t *prev = atomic_exchange_explicit(&mb->tail, m, memory_order_seq_cst);
    /* Between the exchange and this store the queue is briefly unlinked; the
     * consumer sees tail != head and stays awake until the link appears. */
    atomic_store_explicit(&prev->next, m, memory_order_release);
}

void tg_mbox_post(tg_mbox_t *mb, tg_mail_t *m)
{
    TG_DASSERT(m->cb != NULL);
    push(mb, m);
    if (atomic_exchange_explicit(&mb->sleeping, false, memory_order_seq_cst)) {
        uint64_t one = 1;
        atomic_fetch_add_explicit(&mb->kicks, 1, memory_order_relaxed);
        /* EAGAIN means the counter is already non-zero: the loop will wake. */
        (void)!write(mb->efd, &one, sizeof(one));
    }
}

bool tg_mbox_idle(tg_mbox_t *mb)
{
    /* The queue is empty only when the stub is both the next to take and the last
     * linked: any other node, even one a producer is still linking, is mail. */
    return mb->head == &mb->stub &&
           atomic_load_explicit(&mb->tail, memory_order_seq_cst) == &mb->stub;
}

bool tg_mbox_arm_sleep(tg_mbox_t *mb)
{
    atomic_store_explicit(&mb->sleeping, true, memory_order_seq_cst);
    if (tg_mbox_idle(mb))
        return true;
    atomic_store_explicit(&mb->sleeping, false, memory_order_relaxed);
    return false;
}

void tg_mbox_woke(tg_mbox_t *mb, bool efd_ready)
{
    atomic_store_explicit(&mb->sleeping, false, memory_order_relaxed);
    if (efd_ready) {
        uint64_t v;
        (void)!read(mb->efd, &v, sizeof(v));
    }
}

/* Takes the oldest mail, or NULL when none is (fully) linked yet. */
static tg_mail_t *pop(tg_mbox_t *mb)
{
    tg_mail_t *head = mb->head;
    tg_mail_t *next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (head == &mb->stub) {
        if (!next)
            return NULL;
        mb->head = next;
        head = next;
        next = atomic_load_explicit(&head->next, memory_order_acquire);
    }
    if (next) {
        mb->head = next;
        return head;
    }
    if (head != atomic_load_explicit(&mb->tail, memory_order_acquire))
        return NULL; /* a producer is between its exchange and its link */
    /* <head> is the last mail: put the stub behind it so that it can be taken. */
    push(mb, &mb->stub);
    next = atomic_load_explicit(&head->next, memory_order_acquire);
    if (next) {
        mb->head = next;
        return head;
    }
    return NULL;
}

unsigned tg_mbox_drain(tg_mbox_t *mb, unsigned max, void *arg)
{
    unsigned n = 0;
    tg_mail_t *m;
    while (n < max && (m = pop(mb)) != NULL) {
        n++;
        m->cb(m, arg); /* may free <m> */
    }
    return n;
}
