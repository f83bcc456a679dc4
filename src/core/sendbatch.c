/* core/sendbatch.c - many sends, one system call. See sendbatch.h. */
#include "core/sendbatch.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/common.h"

#define SEND_FLAGS (MSG_NOSIGNAL | MSG_DONTWAIT)
/* A send of several small iovecs (a few messages held for one subscriber) is
 * copied into one buffer: a plain send costs the kernel less than a sendmsg,
 * which copies in the header and the iovec array first. Bigger ones are not:
 * there the copy would cost more than it saves. */
#define STAGE_SIZE  65536
#define STAGE_LIMIT 2048

typedef struct slot {
    int           fd;
    int           niov;
    void         *tag;
    long          res;
    struct msghdr msg; /* for a send of several iovecs (IORING_OP_SENDMSG) */
    struct iovec  iov[TG_SENDBATCH_IOV];
} slot_t;

struct tg_sendbatch {
    struct io_uring ring;
    int             n;      /* sends queued */
    int             broken; /* 0, or why a submit failed: no batch any more */
    size_t          staged; /* bytes of <stage> taken by the sends queued */
    slot_t          slots[TG_SENDBATCH_DEPTH];
    char            stage[STAGE_SIZE];
};

tg_sendbatch_t *tg_sendbatch_create(char *why, size_t cap)
{
    tg_sendbatch_t *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(why, cap, "%s", strerror(ENOMEM));
        return NULL;
    }
    int rc = io_uring_queue_init(TG_SENDBATCH_DEPTH, &b->ring, 0);
    if (rc < 0) {
        snprintf(why, cap, "io_uring_setup: %s", strerror(-rc));
        free(b);
        return NULL;
    }
    return b;
}

void tg_sendbatch_destroy(tg_sendbatch_t *b)
{
    if (!b)
        return;
    io_uring_queue_exit(&b->ring);
    free(b);
}

struct iovec *tg_sendbatch_iov(tg_sendbatch_t *b)
{
    return !b->broken && b->n < TG_SENDBATCH_DEPTH ? b->slots[b->n].iov : NULL;
}

void tg_sendbatch_add(tg_sendbatch_t *b, int fd, int n, void *tag)
{
    TG_ASSERT(b->n < TG_SENDBATCH_DEPTH && n > 0 && n <= TG_SENDBATCH_IOV);
    slot_t *s = &b->slots[b->n];
    s->fd = fd;
    s->niov = n;
    s->tag = tag;
    s->res = -ECANCELED;
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    TG_ASSERT(sqe != NULL); /* the ring has a slot's worth of entries */
    size_t total = 0;
    for (int i = 0; n > 1 && i < n; i++)
        total += s->iov[i].iov_len;
    if (n == 1) {
        io_uring_prep_send(sqe, fd, s->iov[0].iov_base, s->iov[0].iov_len, SEND_FLAGS);
    } else if (total <= STAGE_LIMIT && total <= STAGE_SIZE - b->staged) {
        char *p = b->stage + b->staged;
        for (int i = 0; i < n; i++) {
            memcpy(p, s->iov[i].iov_base, s->iov[i].iov_len);
            p += s->iov[i].iov_len;
        }
        io_uring_prep_send(sqe, fd, b->stage + b->staged, total, SEND_FLAGS);
        b->staged += total;
    } else {
        memset(&s->msg, 0, sizeof(s->msg));
        s->msg.msg_iov = s->iov;
        s->msg.msg_iovlen = (size_t)n;
        io_uring_prep_sendmsg(sqe, fd, &s->msg, SEND_FLAGS);
    }
    io_uring_sqe_set_data64(sqe, (uint64_t)b->n);
    b->n++;
}

int tg_sendbatch_queued(const tg_sendbatch_t *b)
{
    return b->n;
}

/* Sends <from>..n-1 one by one: the ring did not take them. */
static void send_each(tg_sendbatch_t *b, int from)
{
    for (int i = from; i < b->n; i++) {
        slot_t *s = &b->slots[i];
        struct msghdr msg = { .msg_iov = s->iov, .msg_iovlen = (size_t)s->niov };
        ssize_t r;
        do
            r = sendmsg(s->fd, &msg, SEND_FLAGS);
        while (r == -1 && errno == EINTR);
        s->res = r == -1 ? -errno : r;
    }
}

/* Collects the completions of the first <sent> sends. Non-blocking sends
 * complete during the submit; the wait is for a kernel that would run one
 * asynchronously. */
static void reap(tg_sendbatch_t *b, int sent)
{
    int seen = 0;
    while (seen < sent) {
        struct io_uring_cqe *cqe;
        int rc = io_uring_wait_cqe(&b->ring, &cqe);
        if (rc == -EINTR)
            continue;
        TG_ASSERT(rc == 0);
        uint64_t i = io_uring_cqe_get_data64(cqe);
        TG_ASSERT(i < (uint64_t)sent);
        b->slots[i].res = cqe->res;
        io_uring_cqe_seen(&b->ring, cqe);
        seen++;
    }
}

int tg_sendbatch_submit(tg_sendbatch_t *b, tg_sendbatch_cb *done, void *arg)
{
    int n = b->n, sent = 0, err = 0;
    while (sent < n) {
        int rc = io_uring_submit(&b->ring);
        if (rc == -EINTR)
            continue;
        if (rc <= 0) {
            err = rc < 0 ? rc : -EIO;
            break;
        }
        sent += rc;
    }
    reap(b, sent);
    b->staged = 0;
    if (sent < n) {
        /* The kernel refused entries (out of memory, say). They stay in the
         * ring, which is therefore never submitted again: these sends, and
         * every later one, go one by one. */
        b->broken = err;
        send_each(b, sent);
    }
    b->n = 0;
    for (int i = 0; i < n; i++) {
        slot_t *s = &b->slots[i];
        size_t asked = 0;
        for (int j = 0; j < s->niov; j++)
            asked += s->iov[j].iov_len;
        done(s->tag, s->res, asked, arg);
    }
    return err;
}
