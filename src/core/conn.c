/* core/conn.c - connections: slab, ids, reading, writing, closing. See conn.h. */
#include "core/conn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"

#define IOV_MAX_BATCH 64

static void on_io(tg_watch_t *w, uint32_t events);
static void on_timer(tg_timer_t *t);

/* ---- slab ---- */

static int grow_slab(tg_loop_t *loop)
{
    tg_conn_slab_t *s = &loop->slab;
    if ((uint64_t)(s->nchunks + 1) * TG_SLAB_CHUNK > UINT32_MAX)
        return -ENOSPC;
    if (s->nchunks == s->cap) {
        uint32_t cap = s->cap ? s->cap * 2 : 16;
        tg_conn_t **chunks = realloc(s->chunks, cap * sizeof(*chunks));
        if (!chunks)
            return -ENOMEM;
        s->chunks = chunks;
        s->cap = cap;
    }
    tg_conn_t *chunk = calloc(TG_SLAB_CHUNK, sizeof(tg_conn_t));
    if (!chunk)
        return -ENOMEM;
    uint32_t base = s->nchunks * TG_SLAB_CHUNK;
    s->chunks[s->nchunks++] = chunk;
    for (int i = TG_SLAB_CHUNK - 1; i >= 0; i--) {
        tg_conn_t *c = &chunk[i];
        c->slot = base + (uint32_t)i;
        c->gen = 1; /* so that id 0 is never valid */
        c->state = TG_CONN_FREE;
        tg_list_push(&s->free, &c->link);
    }
    return 0;
}

tg_conn_t *tg_conn__new(tg_loop_t *loop, int fd)
{
    tg_conn_slab_t *s = &loop->slab;
    if (tg_list_empty(&s->free) && grow_slab(loop) != 0)
        return NULL;
    /* Most recently freed first: its memory is the warmest. */
    tg_link_t *l = s->free.prev;
    tg_link_remove(l);
    tg_conn_t *c = tg_container_of(l, tg_conn_t, link);
    uint32_t slot = c->slot, gen = c->gen;
    memset(c, 0, sizeof(*c));
    c->slot = slot;
    c->gen = gen;
    c->w.fd = fd;
    c->w.cb = on_io;
    c->loop = loop;
    c->state = TG_CONN_OPEN;
    c->mark_ms = (uint32_t)loop->now_ms - UINT32_MAX / 2; /* never written */
    tg_timer_init(&c->timer, on_timer);
    return c;
}

void tg_conn__free_closed(tg_loop_t *loop)
{
    tg_link_t *l;
    while ((l = tg_list_shift(&loop->closed)) != NULL) {
        tg_conn_t *c = tg_container_of(l, tg_conn_t, link);
        c->gen = (c->gen + 1) & 0xffffff;
        if (c->gen == 0)
            c->gen = 1;
        c->state = TG_CONN_FREE;
        tg_list_push(&loop->slab.free, &c->link);
    }
}

void tg_conn__slab_fini(tg_loop_t *loop)
{
    tg_conn_slab_t *s = &loop->slab;
    for (uint32_t i = 0; i < s->nchunks; i++)
        free(s->chunks[i]);
    free(s->chunks);
    memset(s, 0, sizeof(*s));
    tg_list_init(&s->free);
}

tg_conn_t *tg_conn_lookup(tg_loop_t *loop, tg_conn_id_t id)
{
    if (tg_conn_id_loop(id) != loop->id)
        return NULL;
    uint32_t slot = (uint32_t)id;
    uint32_t gen = (uint32_t)(id >> 32) & 0xffffff;
    if (slot / TG_SLAB_CHUNK >= loop->slab.nchunks)
        return NULL;
    tg_conn_t *c = &loop->slab.chunks[slot / TG_SLAB_CHUNK][slot % TG_SLAB_CHUNK];
    if (c->state != TG_CONN_OPEN || c->gen != gen)
        return NULL;
    return c;
}

void tg_loop_each_conn(tg_loop_t *loop, void (*fn)(tg_conn_t *c, void *arg), void *arg)
{
    for (uint32_t i = 0; i < loop->slab.nchunks; i++)
        for (int j = 0; j < TG_SLAB_CHUNK; j++)
            if (loop->slab.chunks[i][j].state == TG_CONN_OPEN)
                fn(&loop->slab.chunks[i][j], arg);
}

/* ---- interest ---- */

static void update_interest(tg_conn_t *c)
{
    uint32_t want = 0;
    if (c->state == TG_CONN_OPEN ? !c->rd_off : !c->rd_eof)
        want |= EPOLLIN | EPOLLRDHUP; /* RDHUP: a paused connection still sees the peer leave */
    if (c->out.len > 0)
        want |= EPOLLOUT;
    if (want != c->w.events && tg_loop_rewatch(c->loop, &c->w, want) != 0)
        tg_conn_close(c, TG_CONN_IOERR);
}

void tg_conn_pause(tg_conn_t *c)
{
    c->paused = true; /* read interest stays until bytes come (on_io) */
}

void tg_conn_resume(tg_conn_t *c)
{
    if (!c->paused)
        return;
    c->paused = false;
    if (c->rd_off) {
        c->rd_off = false;
        if (c->state == TG_CONN_OPEN)
            update_interest(c);
    }
}

void tg_conn_timer_arm(tg_conn_t *c, uint64_t after_ms)
{
    tg_timer_arm(&c->loop->wheel, &c->timer, after_ms);
}

void tg_conn_timer_cancel(tg_conn_t *c)
{
    tg_timer_cancel(&c->loop->wheel, &c->timer);
}

/* ---- closing ---- */

void tg_conn_close(tg_conn_t *c, int reason)
{
    if (c->state == TG_CONN_CLOSED || c->state == TG_CONN_FREE)
        return;
    tg_loop_t *loop = c->loop;
    if (c->state == TG_CONN_OPEN) {
        c->reason = (uint8_t)reason;
        c->state = TG_CONN_CLOSED; /* before the callback: it must not queue output */
        if (c->proto && c->proto->on_close)
            c->proto->on_close(c, reason);
    }
    c->state = TG_CONN_CLOSED;
    tg_conn_timer_cancel(c);
    tg_buf_clear(&c->out, &loop->chunks);
    if (c->dirty) {
        tg_link_remove(&c->link);
        c->dirty = false;
        c->held = false;
    }
    /* close() also drops the fd from the epoll set: it is never dup'ed. */
    close(c->w.fd);
    c->w.fd = -1;
    tg_counter_sub(&loop->stats.live, 1);
    tg_counter_add(&loop->stats.closed, 1);
    tg_counter_add(&loop->stats.reasons[c->reason < TG_REASONS ? c->reason : 0], 1);
    tg_list_push(&loop->closed, &c->link);
}

static void start_linger(tg_conn_t *c)
{
    if (c->rd_eof || shutdown(c->w.fd, SHUT_WR) == -1) {
        tg_conn_close(c, c->reason);
        return;
    }
    c->state = TG_CONN_LINGER;
    tg_conn_timer_arm(c, TG_LINGER_MS);
    update_interest(c);
}

void tg_conn_close_after_flush(tg_conn_t *c, int reason)
{
    if (c->state != TG_CONN_OPEN)
        return;
    c->reason = (uint8_t)reason;
    c->state = TG_CONN_DRAINING;
    if (c->proto && c->proto->on_close)
        c->proto->on_close(c, reason);
    /* A peer that does not read its response does not hold the slot forever. */
    tg_conn_timer_arm(c, c->loop->drain_ms);
    if (reason == TG_CONN_EOF)
        c->rd_eof = true;
    if (c->out.len == 0)
        start_linger(c);
    else
        update_interest(c);
}

static void on_timer(tg_timer_t *t)
{
    tg_conn_t *c = tg_container_of(t, tg_conn_t, timer);
    if (c->state == TG_CONN_OPEN)
        c->proto->on_timer(c);
    else
        tg_conn_close(c, c->reason);
}

/* ---- writing ---- */

static int queued(tg_conn_t *c, int rc, size_t n)
{
    if (rc != 0) {
        tg_counter_add(&c->loop->stats.nomem, 1);
        tg_conn_close(c, TG_CONN_NOMEM);
        return -ENOMEM;
    }
    if (!c->dirty && n > 0) {
        c->dirty = true;
        tg_list_push(&c->loop->dirty, &c->link);
    }
    return 0;
}

/* A held connection's output joins the dirty, to go at the iteration's end. */
static void unhold(tg_conn_t *c)
{
    tg_link_remove(&c->link);
    c->held = false;
    tg_list_push(&c->loop->dirty, &c->link);
}

int tg_conn_write(tg_conn_t *c, const void *p, size_t n)
{
    if (c->state != TG_CONN_OPEN)
        return -EPIPE;
    if (c->held) /* a reply: it goes now, with what was held */
        unhold(c);
    return queued(c, tg_buf_append(&c->out, &c->loop->chunks, p, n), n);
}

int tg_conn_write_ref(tg_conn_t *c, tg_shared_t *s, size_t off, size_t len)
{
    if (c->state != TG_CONN_OPEN)
        return -EPIPE;
    tg_loop_t *loop = c->loop;
    tg_loop__count_ref_write(loop);
    int rc = tg_buf_append_ref(&c->out, &loop->chunks, s, off, len);
    if (rc != 0 || len == 0)
        return queued(c, rc, len);
    if (c->held) {
        tg_counter_add(&loop->stats.coalesced, 1);
        if (++c->held_n >= loop->coalesce_count)
            unhold(c);
        return 0;
    }
    /* Written within the window: what follows may share the next write. A
     * write carries its iteration's time, and the loop may have run on for
     * longer than the window before it waited again (a broadcast to
     * thousands): that time counts as the window's too, or a loop slower
     * than its window would never hold and never catch up. */
    uint32_t now = (uint32_t)loop->now_ms;
    if (!c->dirty && loop->coalesce_ms && !loop->stopping &&
        now - c->mark_ms < loop->coalesce_ms + loop->work_ms) {
        c->dirty = true;
        c->held = true;
        c->held_n = 1;
        c->mark_ms = now;
        tg_list_push(&loop->held, &c->link);
        if (!tg_timer_armed(&loop->held_timer))
            tg_timer_arm(&loop->wheel, &loop->held_timer, loop->coalesce_ms);
        return 0;
    }
    return queued(c, 0, len);
}

/* <n> bytes of the queue went out. */
static void sent(tg_conn_t *c, size_t n)
{
    tg_counter_add(&c->loop->stats.bytes_out, (uint64_t)n);
    tg_buf_consume(&c->out, &c->loop->chunks, n);
    c->mark_ms = (uint32_t)c->loop->now_ms;
}

void tg_conn__flush(tg_conn_t *c)
{
    if (c->state == TG_CONN_CLOSED || c->state == TG_CONN_LINGER)
        return;
    while (c->out.len > 0) {
        struct iovec iov[IOV_MAX_BATCH];
        int k = tg_buf_iov(&c->out, iov, IOV_MAX_BATCH);
        size_t asked = 0;
        for (int i = 0; i < k; i++)
            asked += iov[i].iov_len;
        /* One buffer (a broadcast frame, usually) takes send(): the socket
         * call skips the file-position and iterator set-up of writev. */
        ssize_t n = k == 1 ? send(c->w.fd, iov[0].iov_base, iov[0].iov_len, MSG_NOSIGNAL)
                           : writev(c->w.fd, iov, k);
        if (n == -1 && errno == ENOTSOCK && k == 1)
            n = write(c->w.fd, iov[0].iov_base, iov[0].iov_len);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                update_interest(c);
                return;
            }
            tg_conn_close(c, TG_CONN_IOERR);
            return;
        }
        sent(c, (size_t)n);
        if ((size_t)n < asked) { /* the socket is full: wait for EPOLLOUT */
            update_interest(c);
            return;
        }
    }
    update_interest(c);
    if (c->state == TG_CONN_DRAINING)
        start_linger(c);
    else if (c->state == TG_CONN_OPEN && c->proto->on_drained)
        c->proto->on_drained(c);
}

bool tg_conn__batch(tg_conn_t *c, tg_sendbatch_t *b)
{
    if ((c->state != TG_CONN_OPEN && c->state != TG_CONN_DRAINING) || c->out.len == 0)
        return false;
    struct iovec *iov = tg_sendbatch_iov(b);
    if (!iov)
        return false;
    tg_sendbatch_add(b, c->w.fd, tg_buf_iov(&c->out, iov, TG_SENDBATCH_IOV), c);
    return true;
}

void tg_conn__batch_sent(tg_conn_t *c, long res, size_t asked)
{
    /* Callbacks run for sends earlier in the batch may have closed <c> (its
     * output is gone with it) or queued more (it follows what was sent). */
    if (c->state == TG_CONN_CLOSED || c->state == TG_CONN_LINGER)
        return;
    if (res == -EAGAIN) {
        update_interest(c);
        return;
    }
    if (res < 0 && res != -EINTR && res != -ENOTSOCK) {
        tg_conn_close(c, TG_CONN_IOERR);
        return;
    }
    if (res > 0) {
        sent(c, (size_t)res);
        if ((size_t)res < asked) { /* the socket is full: wait for EPOLLOUT */
            update_interest(c);
            return;
        }
    }
    /* What is left (more than one send's iovecs, or a retry), and what an
     * emptied queue means (interest, on_drained, linger). */
    tg_conn__flush(c);
}

/* ---- reading ---- */

static void on_read(tg_conn_t *c)
{
    tg_loop_t *loop = c->loop;
    ssize_t n;
    do
        n = read(c->w.fd, loop->rbuf, TG_READ_SIZE);
    while (n == -1 && errno == EINTR);
    if (n > 0) {
        tg_counter_add(&loop->stats.bytes_in, (uint64_t)n);
        if (c->state == TG_CONN_OPEN)
            c->proto->on_data(c, loop->rbuf, (size_t)n);
        /* DRAINING and LINGER discard what the peer still sends. */
        return;
    }
    if (n == -1 && errno == EAGAIN)
        return;
    int reason = n == 0 ? TG_CONN_EOF : TG_CONN_IOERR;
    switch (c->state) {
    case TG_CONN_OPEN:
        if (reason == TG_CONN_EOF)
            tg_conn_close_after_flush(c, TG_CONN_EOF); /* answer a half-closed peer */
        else
            tg_conn_close(c, reason);
        break;
    case TG_CONN_DRAINING:
        if (reason == TG_CONN_EOF && c->out.len > 0) {
            /* Keep writing what is queued; EPOLLIN would fire forever now. */
            c->rd_eof = true;
            update_interest(c);
        } else {
            tg_conn_close(c, c->reason);
        }
        break;
    default:
        tg_conn_close(c, c->reason);
        break;
    }
}

static void on_io(tg_watch_t *w, uint32_t events)
{
    tg_conn_t *c = tg_container_of(w, tg_conn_t, w);
    if (c->state == TG_CONN_CLOSED)
        return; /* closed earlier in this batch of events */
    if (events & EPOLLOUT) {
        tg_conn__flush(c);
        if (c->state == TG_CONN_CLOSED)
            return;
    }
    bool hold = (events & EPOLLIN) && c->paused && c->state == TG_CONN_OPEN;
    if (hold && (events & EPOLLRDHUP) && !(events & (EPOLLERR | EPOLLHUP))) {
        /* The peer closed while its request waits (a long-poll): as on_read
         * does at EOF, answer what is queued and close. */
        tg_conn_close_after_flush(c, TG_CONN_EOF);
    } else if (hold && !(events & (EPOLLERR | EPOLLHUP))) {
        c->rd_off = true; /* bytes wait in the socket until tg_conn_resume */
        update_interest(c);
    } else if ((events & EPOLLIN) && !hold) {
        on_read(c);
        /* Answers to what was just read go out now, in one write: the chunk
         * they sit in goes straight back to the pool instead of piling up
         * until the end of the iteration (one per busy connection). */
        if (c->dirty) {
            tg_link_remove(&c->link);
            c->dirty = false;
            c->held = false;
            tg_conn__flush(c);
        }
    } else if (events & (EPOLLERR | EPOLLHUP)) {
        /* Reported even while reads are paused: the peer is gone both ways. */
        tg_conn_close(c, (events & EPOLLERR) ? TG_CONN_IOERR : TG_CONN_EOF);
    }
}
