/* tests/unit/core/test_conn.c - connections and their ids (src/core/conn.h)
 * as a loop (src/core/loop.h) owns them.
 *
 * The loop is initialised but its thread never started: the test thread is
 * the loop thread and drives it with tg_loop_run_once(). Each connection is one
 * end of a non-blocking AF_UNIX socketpair adopted with a small protocol that
 * records its callbacks; the test holds the other end (the peer). Waits are on
 * descriptors (epoll inside the loop, poll on the peer), with a bound that only
 * a failing test reaches. tg_loop_fini() runs in every teardown, so ASan's leak
 * check covers the slab, the pools and the mailbox. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/conn.h"
#include "core/loop.h"

#define WAIT_MS  5000 /* longest wait for an event that must come */
#define RECV_MAX (8u << 20)
#define PEERS    320 /* more than a batch of sends (TG_SENDBATCH_DEPTH) */

/* What the protocol saw, and how it should behave. */
struct fixture {
    tg_loop_t  loop;
    int        peers[PEERS]; /* our ends, closed at teardown unless -1 */
    int        npeers;
    /* recorded */
    unsigned   opens;
    unsigned   closes;
    int        last_reason;
    tg_conn_t *last_closed;
    bool       close_was_open; /* tg_conn_open() inside on_close: must be false */
    int        write_in_close; /* tg_conn_write() inside on_close: must refuse */
    unsigned   drained;
    unsigned   timers;
    unsigned   data_calls;
    char      *data;           /* bytes handed to on_data, in order */
    size_t     data_len;
    /* behaviour */
    bool       echo;           /* on_data writes back what it got */
    bool       close_on_data;  /* on_data closes the connection */
    const char *answer;        /* on_data queues this ... */
    size_t     answer_len;     /* ... many bytes */
    int        refuse_open;    /* on_open returns this */
    tg_conn_t *close_when_drained; /* on_drained of any other connection closes it */
    tg_conn_t  *relay_to;      /* on_data queues <relay_frame> on this one ... */
    tg_shared_t *relay_frame;
    uint32_t    busy_ms;       /* ... then keeps the loop busy this long */
};

static int proto_open(tg_conn_t *c)
{
    struct fixture *f = c->loop->app;
    f->opens++;
    return f->refuse_open;
}

static void proto_data(tg_conn_t *c, const char *p, size_t n)
{
    struct fixture *f = c->loop->app;
    f->data_calls++;
    TG_ASSERT(f->data_len + n <= RECV_MAX);
    memcpy(f->data + f->data_len, p, n);
    f->data_len += n;
    if (f->echo)
        TG_ASSERT(tg_conn_write(c, p, n) == 0);
    if (f->answer)
        TG_ASSERT(tg_conn_write(c, f->answer, f->answer_len) == 0);
    if (f->close_on_data)
        tg_conn_close(c, TG_CONN_REASON_USER + 1);
    if (f->relay_to)
        TG_ASSERT(tg_conn_write_ref(f->relay_to, f->relay_frame, 0, f->relay_frame->len) == 0);
    for (uint64_t until = tg_clock_ms() + f->busy_ms; tg_clock_ms() < until;)
        ; /* the work of a broadcast to thousands */
}

static void proto_drained(tg_conn_t *c)
{
    struct fixture *f = c->loop->app;
    f->drained++;
    if (f->close_when_drained && f->close_when_drained != c) {
        tg_conn_close(f->close_when_drained, TG_CONN_REASON_USER + 2);
        f->close_when_drained = NULL;
    }
}

static void proto_timer(tg_conn_t *c)
{
    struct fixture *f = c->loop->app;
    f->timers++;
}

static void proto_close(tg_conn_t *c, int reason)
{
    struct fixture *f = c->loop->app;
    f->closes++;
    f->last_reason = reason;
    f->last_closed = c;
    f->close_was_open |= tg_conn_open(c);
    f->write_in_close = tg_conn_write(c, "x", 1);
}

static const tg_proto_t test_proto = {
    .name = "test",
    .on_open = proto_open,
    .on_data = proto_data,
    .on_drained = proto_drained,
    .on_timer = proto_timer,
    .on_stop = NULL,
    .on_close = proto_close,
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->data = malloc(RECV_MAX);
    if (!f->data || tg_loop_init(&f->loop, 0) != 0) {
        free(f->data);
        free(f);
        return -1;
    }
    f->loop.app = f;
    for (int i = 0; i < PEERS; i++)
        f->peers[i] = -1;
    *state = f;
    return 0;
}

/* The same fixture, with the loop's output sent in batches (io_uring). */
static int setup_batched(void **state)
{
    if (setup(state) != 0)
        return -1;
    struct fixture *f = *state;
    char why[128];
    if (tg_loop_batch_sends(&f->loop, true, why, sizeof(why)) != 0) {
        fprintf(stderr, "io_uring: %s\n", why);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tg_loop_fini(&f->loop); /* a no-op when the test already did it */
    for (int i = 0; i < f->npeers; i++)
        if (f->peers[i] != -1)
            close(f->peers[i]);
    free(f->data);
    free(f);
    return 0;
}

static uint64_t live(const tg_loop_t *loop)
{
    return tg_counter_get(&loop->stats.live);
}

/* Adopts one end of a new socketpair into <loop>; the other end is the peer,
 * returned in <*peer> and closed at teardown. */
static tg_conn_t *adopt_pair(struct fixture *f, tg_loop_t *loop, int *peer)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    assert_true(f->npeers < PEERS);
    f->peers[f->npeers++] = sv[1];
    *peer = sv[1];
    return tg_loop_adopt(loop, sv[0], &test_proto);
}

/* Two connections of the fixture's loop, with their peers. */
static void adopt_two(struct fixture *f, tg_conn_t **a, int *pa, tg_conn_t **b, int *pb)
{
    *a = adopt_pair(f, &f->loop, pa);
    *b = adopt_pair(f, &f->loop, pb);
    assert_non_null(*a);
    assert_non_null(*b);
}

static void close_peer(struct fixture *f, int peer)
{
    for (int i = 0; i < f->npeers; i++)
        if (f->peers[i] == peer)
            f->peers[i] = -1;
    close(peer);
}

/* Reads what is available at <peer> (non-blocking) into <dst>; -1 on EOF. */
static ssize_t peer_read(int peer, void *dst, size_t cap)
{
    ssize_t n = read(peer, dst, cap);
    if (n == 0)
        return -1;
    if (n == -1) {
        assert_true(errno == EAGAIN);
        return 0;
    }
    return n;
}

static bool peer_readable(int peer, int wait_ms)
{
    struct pollfd p = { .fd = peer, .events = POLLIN };
    return poll(&p, 1, wait_ms) == 1;
}

static void peer_write_all(int peer, const void *p, size_t n)
{
    assert_int_equal(write(peer, p, n), (ssize_t)n);
}

/* ---- ids ---- */

static void adopted_connection_looks_up_by_its_id(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    assert_int_equal(f->opens, 1);
    assert_true(tg_conn_open(c));
    assert_ptr_equal(c->loop, &f->loop);
    assert_ptr_equal(c->proto, &test_proto);
    assert_null(c->out.head); /* idle: no buffer */
    assert_int_equal(live(&f->loop), 1);
    assert_int_equal(tg_counter_get(&f->loop.stats.accepted), 1);

    tg_conn_id_t id = tg_conn_id(c);
    assert_true(id != 0);
    assert_int_equal(tg_conn_id_loop(id), f->loop.id);
    assert_ptr_equal(tg_conn_lookup(&f->loop, id), c);
    tg_loop_run_once(&f->loop, 0); /* nothing happens to it */
    assert_ptr_equal(tg_conn_lookup(&f->loop, id), c);
    assert_int_equal(tg_conn_id(c), id);
}

static void closed_slot_is_reused_and_old_id_goes_stale(void **state)
{
    struct fixture *f = *state;
    int peer1, peer2;
    tg_conn_t *c1 = adopt_pair(f, &f->loop, &peer1);
    assert_non_null(c1);
    tg_conn_id_t old = tg_conn_id(c1);
    uint32_t slot = c1->slot;

    tg_conn_close(c1, TG_CONN_REASON_USER);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->last_reason, TG_CONN_REASON_USER);
    assert_false(f->close_was_open);
    assert_int_equal(f->write_in_close, -EPIPE);
    assert_null(tg_conn_lookup(&f->loop, old)); /* closed: stale at once */
    assert_int_equal(live(&f->loop), 0);
    tg_conn_close(c1, TG_CONN_REASON_USER); /* twice: harmless */
    assert_int_equal(f->closes, 1);
    assert_int_equal(tg_counter_get(&f->loop.stats.closed), 1);
    assert_int_equal(tg_counter_get(&f->loop.stats.reasons[TG_CONN_REASON_USER]), 1);

    tg_loop_run_once(&f->loop, 0); /* the end of the iteration frees the slot */
    char b[8];
    assert_int_equal(peer_read(peer1, b, sizeof(b)), -1); /* the peer saw the close */

    tg_conn_t *c2 = adopt_pair(f, &f->loop, &peer2);
    assert_non_null(c2);
    assert_int_equal(c2->slot, slot);  /* the same slot ... */
    tg_conn_id_t now = tg_conn_id(c2);
    assert_true(now != old);           /* ... under a new generation */
    assert_true(now != 0);
    assert_null(tg_conn_lookup(&f->loop, old));
    assert_ptr_equal(tg_conn_lookup(&f->loop, now), c2);
    assert_int_equal(live(&f->loop), 1);
}

static void ids_are_never_zero_nor_reused_by_a_new_generation(void **state)
{
    struct fixture *f = *state; /* loop 0: slot 0 with generation 0 would be id 0 */
    enum { CYCLES = 3000 };
    tg_conn_id_t *ids = malloc(CYCLES * sizeof(*ids));
    assert_non_null(ids);
    for (int i = 0; i < CYCLES; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        tg_conn_t *c = tg_loop_adopt(&f->loop, sv[0], &test_proto);
        assert_non_null(c);
        assert_int_equal(c->slot, 0); /* the most recently freed comes back */
        ids[i] = tg_conn_id(c);
        assert_true(ids[i] != 0);
        if (i > 0) {
            assert_true(ids[i] != ids[i - 1]);
            assert_null(tg_conn_lookup(&f->loop, ids[i - 1]));
        }
        tg_conn_close(c, TG_CONN_REASON_USER);
        tg_loop_run_once(&f->loop, 0);
        close(sv[1]);
    }
    for (int i = 0; i < CYCLES; i++)
        assert_null(tg_conn_lookup(&f->loop, ids[i]));
    free(ids);

    /* The generation wraps after 2^24 frees; it skips 0 so that slot 0 of
     * loop 0 never makes id 0. Jump there instead of looping 16 million times. */
    tg_conn_t *slot0 = &f->loop.slab.chunks[0][0];
    assert_int_equal(slot0->state, TG_CONN_FREE);
    slot0->gen = 0xffffff;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_ptr_equal(c, slot0);
    tg_conn_id_t last = tg_conn_id(c);
    assert_ptr_equal(tg_conn_lookup(&f->loop, last), c);
    tg_conn_close(c, TG_CONN_REASON_USER);
    tg_loop_run_once(&f->loop, 0);
    c = adopt_pair(f, &f->loop, &peer);
    assert_ptr_equal(c, slot0);
    assert_true(tg_conn_id(c) != 0);
    assert_true(tg_conn_id(c) != last);
    assert_null(tg_conn_lookup(&f->loop, last));
    assert_ptr_equal(tg_conn_lookup(&f->loop, tg_conn_id(c)), c);
}

static void live_connections_have_distinct_ids_across_slab_chunks(void **state)
{
    struct fixture *f = *state;
    enum { N = TG_SLAB_CHUNK + 100 }; /* a second slab chunk */
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    if (rl.rlim_cur < 2 * N + 64) {
        rl.rlim_cur = rl.rlim_max < 2 * N + 64 ? rl.rlim_max : 2 * N + 64;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
        if (rl.rlim_cur < 2 * N + 64)
            skip(); /* not enough descriptors allowed here */
    }
    tg_conn_t **conns = calloc(N, sizeof(*conns));
    tg_conn_id_t *ids = calloc(N, sizeof(*ids));
    int *peers = calloc(N, sizeof(*peers));
    assert_non_null(conns);
    assert_non_null(ids);
    assert_non_null(peers);
    for (int i = 0; i < N; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
        conns[i] = tg_loop_adopt(&f->loop, sv[0], &test_proto);
        assert_non_null(conns[i]);
        peers[i] = sv[1];
        ids[i] = tg_conn_id(conns[i]);
        assert_true(ids[i] != 0);
    }
    assert_int_equal(f->loop.slab.nchunks, 2);
    assert_int_equal(live(&f->loop), N);
    for (int i = 0; i < N; i++) {
        assert_ptr_equal(tg_conn_lookup(&f->loop, ids[i]), conns[i]);
        for (int j = i + 1; j < N; j++)
            assert_true(conns[i]->slot != conns[j]->slot);
    }
    /* Close every other one: those ids go stale, the rest stay good. */
    for (int i = 0; i < N; i += 2)
        tg_conn_close(conns[i], TG_CONN_REASON_USER);
    tg_loop_run_once(&f->loop, 0);
    for (int i = 0; i < N; i++)
        assert_ptr_equal(tg_conn_lookup(&f->loop, ids[i]), i % 2 ? conns[i] : NULL);
    assert_int_equal(live(&f->loop), N / 2);
    tg_loop_fini(&f->loop); /* closes the rest */
    assert_int_equal(f->closes, N);
    assert_int_equal(f->last_reason, TG_CONN_SHUTDOWN);
    for (int i = 0; i < N; i++)
        close(peers[i]);
    free(peers);
    free(ids);
    free(conns);
}

static void id_from_another_loop_is_refused(void **state)
{
    struct fixture *f = *state;
    tg_loop_t *other = malloc(sizeof(*other));
    assert_non_null(other);
    assert_int_equal(tg_loop_init(other, 5), 0);
    other->app = f;

    int p1, p2;
    tg_conn_t *c1 = adopt_pair(f, &f->loop, &p1);
    tg_conn_t *c2 = adopt_pair(f, other, &p2);
    assert_non_null(c1);
    assert_non_null(c2);
    tg_conn_id_t id1 = tg_conn_id(c1), id2 = tg_conn_id(c2);
    /* Same slot and generation in both loops: only the loop bits differ. */
    assert_int_equal(c1->slot, c2->slot);
    assert_int_equal(c1->gen, c2->gen);
    assert_int_equal(tg_conn_id_loop(id1), 0);
    assert_int_equal(tg_conn_id_loop(id2), 5);
    assert_true(id1 != id2);

    assert_ptr_equal(tg_conn_lookup(&f->loop, id1), c1);
    assert_ptr_equal(tg_conn_lookup(other, id2), c2);
    assert_null(tg_conn_lookup(other, id1));
    assert_null(tg_conn_lookup(&f->loop, id2));

    /* Forged ids: another loop, a slot past the slab, a wrong generation, zero. */
    tg_conn_id_t mask_loop = ~(UINT64_C(0xff) << 56);
    assert_null(tg_conn_lookup(&f->loop, (id1 & mask_loop) | (UINT64_C(7) << 56)));
    assert_null(tg_conn_lookup(&f->loop, (id1 & ~UINT64_C(0xffffffff)) | (1u << 20)));
    assert_null(tg_conn_lookup(&f->loop, (id1 & ~UINT64_C(0xffffffff)) | 0xffffffffu));
    assert_null(tg_conn_lookup(&f->loop, id1 ^ (UINT64_C(1) << 32)));
    assert_null(tg_conn_lookup(&f->loop, 0));
    assert_ptr_equal(tg_conn_lookup(&f->loop, id1), c1);

    tg_loop_fini(other);
    free(other);
    assert_int_equal(f->closes, 1);
    assert_ptr_equal(f->last_closed, c2);
}

/* ---- bytes both ways ---- */

/* A shared frame queued on two connections reaches both peers in order with
 * owned bytes around it, and each queue's reference goes once written. */
static void shared_frame_reaches_every_peer_without_copy(void **state)
{
    struct fixture *f = *state;
    int p1, p2;
    tg_conn_t *a, *b;
    adopt_two(f, &a, &p1, &b, &p2);
    tg_shared_t *frame = tg_shared_new(5);
    assert_non_null(frame);
    memcpy(frame->data, "FRAME", 5);
    assert_int_equal(tg_conn_write(a, "<", 1), 0);
    assert_int_equal(tg_conn_write_ref(a, frame, 0, 5), 0);
    assert_int_equal(tg_conn_write(a, ">", 1), 0);
    assert_int_equal(tg_conn_write_ref(b, frame, 1, 3), 0);
    assert_int_equal(atomic_load(&frame->refs), 3);
    tg_loop_run_once(&f->loop, 0);
    char buf[16];
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 7);
    assert_memory_equal(buf, "<FRAME>", 7);
    assert_int_equal(peer_read(p2, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "RAM", 3);
    assert_int_equal(atomic_load(&frame->refs), 1);
    assert_int_equal(f->loop.refs.taken, 0);
    assert_int_equal(f->loop.chunks.taken, 0);
    tg_shared_unref(frame);
}

/* More connections than one batch holds: every peer gets the frame after one
 * iteration, and every reference goes back. */
static void broadcast_to_many_connections_goes_out_in_one_iteration(void **state)
{
    struct fixture *f = *state;
    enum { N = 300 };
    int peers[N];
    tg_shared_t *frame = tg_shared_new(3);
    assert_non_null(frame);
    memcpy(frame->data, "msg", 3);
    for (int i = 0; i < N; i++) {
        tg_conn_t *c = adopt_pair(f, &f->loop, &peers[i]);
        assert_non_null(c);
        assert_int_equal(tg_conn_write_ref(c, frame, 0, 3), 0);
    }
    tg_loop_run_once(&f->loop, 0);
    char buf[8];
    for (int i = 0; i < N; i++) {
        assert_int_equal(peer_read(peers[i], buf, sizeof(buf)), 3);
        assert_memory_equal(buf, "msg", 3);
    }
    assert_int_equal(atomic_load(&frame->refs), 1);
    assert_int_equal(f->drained, N);
    assert_int_equal(tg_counter_get(&f->loop.stats.bytes_out), 3 * N);
    if (f->loop.sendbatch) /* two batches: the ring holds 256 sends */
        assert_int_equal(tg_counter_get(&f->loop.stats.batched), N);
    else
        assert_int_equal(tg_counter_get(&f->loop.stats.batches), 0);
    tg_shared_unref(frame);
}

/* Outputs of a few small parts each (sent from one staging buffer when
 * batched), more of them than that buffer holds: the rest go as they are,
 * and every peer gets its bytes in order. */
static void many_small_multi_part_outputs_all_arrive_in_order(void **state)
{
    struct fixture *f = *state;
    enum { N = 60, BODY = 1500 }; /* 60 x 1,502 bytes: more than 64 KiB */
    int peers[N];
    tg_shared_t *frame = tg_shared_new(BODY);
    assert_non_null(frame);
    for (int i = 0; i < BODY; i++)
        frame->data[i] = (char)('a' + i % 26);
    for (int i = 0; i < N; i++) {
        tg_conn_t *c = adopt_pair(f, &f->loop, &peers[i]);
        assert_non_null(c);
        char head = (char)('0' + i % 10);
        assert_int_equal(tg_conn_write(c, &head, 1), 0);
        assert_int_equal(tg_conn_write_ref(c, frame, 0, BODY), 0);
        assert_int_equal(tg_conn_write(c, ">", 1), 0);
    }
    tg_loop_run_once(&f->loop, 0);
    char buf[BODY + 8];
    for (int i = 0; i < N; i++) {
        assert_int_equal(peer_read(peers[i], buf, sizeof(buf)), BODY + 2);
        assert_int_equal(buf[0], '0' + i % 10);
        assert_memory_equal(buf + 1, frame->data, BODY);
        assert_int_equal(buf[BODY + 1], '>');
    }
    assert_int_equal(atomic_load(&frame->refs), 1);
    assert_int_equal(f->loop.chunks.taken, 0);
    tg_shared_unref(frame);
}

/* In one flush: a socket that takes part of its output waits for EPOLLOUT,
 * one whose peer has gone is closed, and the others are not disturbed. */
static void full_and_broken_sockets_among_others_in_one_flush(void **state)
{
    struct fixture *f = *state;
    enum { BIG = 4 << 20 };
    char *big = malloc(BIG);
    assert_non_null(big);
    for (size_t i = 0; i < BIG; i++)
        big[i] = (char)(i * 7);
    int pf, pg, pb;
    tg_conn_t *full = adopt_pair(f, &f->loop, &pf);
    tg_conn_t *gone = adopt_pair(f, &f->loop, &pg);
    tg_conn_t *fine = adopt_pair(f, &f->loop, &pb);
    assert_non_null(full);
    assert_non_null(gone);
    assert_non_null(fine);
    close_peer(f, pg);
    assert_int_equal(tg_conn_write(full, big, BIG), 0);
    assert_int_equal(tg_conn_write(gone, "lost", 4), 0);
    assert_int_equal(tg_conn_write(fine, "ok", 2), 0);
    tg_loop_run_once(&f->loop, 0);
    char b[4];
    assert_int_equal(peer_read(pb, b, sizeof(b)), 2);
    assert_memory_equal(b, "ok", 2);
    assert_true(tg_conn_pending(full) > 0);
    assert_true(tg_conn_pending(full) < BIG);
    assert_int_equal(f->closes, 1);
    assert_ptr_equal(f->last_closed, gone);
    assert_int_equal(f->last_reason, TG_CONN_IOERR);
    size_t got = 0;
    char *rx = malloc(BIG);
    assert_non_null(rx);
    for (int i = 0; i < 10000 && got < BIG; i++) {
        ssize_t n = peer_read(pf, rx + got, BIG - got);
        assert_true(n >= 0);
        got += (size_t)n;
        tg_loop_run_once(&f->loop, n > 0 ? 0 : WAIT_MS);
    }
    assert_int_equal(got, BIG);
    assert_memory_equal(rx, big, BIG);
    assert_int_equal(tg_conn_pending(full), 0);
    assert_int_equal(tg_counter_get(&f->loop.stats.batched), f->loop.sendbatch ? 3 : 0);
    free(rx);
    free(big);
}

/* A callback run for one send of a flush closes a connection whose send comes
 * later in the same flush: nothing more is done with it. */
static void connection_closed_by_an_earlier_callback_of_the_flush(void **state)
{
    struct fixture *f = *state;
    int p1, p2;
    tg_conn_t *a, *b;
    adopt_two(f, &a, &p1, &b, &p2);
    assert_int_equal(tg_conn_write(a, "a", 1), 0);
    assert_int_equal(tg_conn_write(b, "b", 1), 0);
    f->close_when_drained = b; /* a drains first: its callback closes b */
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(f->closes, 1);
    assert_ptr_equal(f->last_closed, b);
    assert_int_equal(f->drained, 1);
    char buf[4];
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 1);
    assert_int_equal(f->loop.chunks.taken, 0);
}

/* The io_uring ring's descriptor in this process, or -1. */
static int ring_fd(void)
{
    int found = -1;
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char path[300], target[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n > 0) {
            target[n] = '\0';
            if (strstr(target, "io_uring"))
                found = atoi(e->d_name);
        }
    }
    closedir(d);
    return found;
}

/* A kernel that refuses a batch (here: the ring's descriptor replaced behind
 * its back): that batch's sends go one by one, and so does every later flush. */
static void refused_batch_falls_back_to_one_send_each(void **state)
{
    struct fixture *f = *state;
    int p1, p2;
    tg_conn_t *a, *b;
    adopt_two(f, &a, &p1, &b, &p2);
    bool batched = f->loop.sendbatch != NULL;
    int ring = batched ? ring_fd() : -1;
    if (batched) {
        assert_true(ring >= 0);
        int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
        assert_true(devnull >= 0);
        assert_int_equal(dup2(devnull, ring), ring); /* io_uring_enter: not a ring */
        close(devnull);
    }
    for (int round = 0; round < 2; round++) {
        assert_int_equal(tg_conn_write(a, "a;", 2), 0);
        assert_int_equal(tg_conn_write(b, "b;", 2), 0);
        tg_loop_run_once(&f->loop, 0);
        char buf[8];
        assert_int_equal(peer_read(p1, buf, sizeof(buf)), 2);
        assert_memory_equal(buf, "a;", 2);
        assert_int_equal(peer_read(p2, buf, sizeof(buf)), 2);
        assert_memory_equal(buf, "b;", 2);
    }
    assert_null(f->loop.sendbatch);
    assert_int_equal(tg_counter_get(&f->loop.stats.batches), 0);
    assert_int_equal(f->closes, 0);
    assert_int_equal(f->loop.chunks.taken, 0);
}

static tg_shared_t *frame_of(const char *text)
{
    tg_shared_t *frame = tg_shared_new(strlen(text));
    assert_non_null(frame);
    memcpy(frame->data, text, strlen(text));
    return frame;
}

/* Queues all of <frame> on <c>, runs one iteration, and returns how many
 * bytes <peer> has then (0: held). */
static ssize_t broadcast_once(struct fixture *f, tg_conn_t *c, int peer, tg_shared_t *frame)
{
    assert_int_equal(tg_conn_write_ref(c, frame, 0, frame->len), 0);
    tg_loop_run_once(&f->loop, 0);
    char buf[64];
    return peer_read(peer, buf, sizeof(buf));
}

/* Runs the loop until <peer> has bytes to read (a hold's window ends). */
static void run_until_readable(struct fixture *f, int peer)
{
    for (int i = 0; i < 20 && !peer_readable(peer, 0); i++)
        tg_loop_run_once(&f->loop, WAIT_MS);
}

struct counting_mail {
    tg_mail_t mail;
    const int *peers;
    int        n;
    int        readable; /* peers with bytes when the mail was handled */
};

static void count_readable(tg_mail_t *m, void *arg)
{
    (void)arg;
    struct counting_mail *cm = tg_container_of(m, struct counting_mail, mail);
    for (int i = 0; i < cm->n; i++)
        cm->readable += peer_readable(cm->peers[i], 0);
}

/* A broadcast to more connections than one flush takes goes out in parts,
 * and mail (a publish to answer, say) is handled between them instead of
 * after all of it. */
static void mail_waits_for_one_part_of_a_large_broadcast_not_all(void **state)
{
    struct fixture *f = *state;
    enum { N = 300 };
    int peers[N];
    tg_shared_t *frame = frame_of("msg");
    for (int i = 0; i < N; i++) {
        tg_conn_t *c = adopt_pair(f, &f->loop, &peers[i]);
        assert_non_null(c);
        assert_int_equal(tg_conn_write_ref(c, frame, 0, 3), 0);
    }
    struct counting_mail cm = { .mail.cb = count_readable, .peers = peers, .n = N };
    tg_loop_post(&f->loop, &cm.mail);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(cm.readable, TG_FLUSH_MAX);
    char buf[8];
    for (int i = 0; i < N; i++) /* the rest followed in the same iteration */
        assert_int_equal(peer_read(peers[i], buf, sizeof(buf)), 3);
    tg_shared_unref(frame);
}

/* push.coalesce: a message to a connection not written lately goes at once;
 * those that follow it within the window wait and leave in one write; a
 * reply sends what is held at once. */
static void coalesced_broadcasts_leave_together(void **state)
{
    struct fixture *f = *state;
    f->loop.coalesce_ms = 30;
    int p1, p2;
    tg_conn_t *a, *b;
    adopt_two(f, &a, &p1, &b, &p2);
    tg_shared_t *frame = frame_of("m;");
    char buf[16];
    assert_int_equal(tg_conn_write_ref(a, frame, 0, 2), 0);
    assert_int_equal(tg_conn_write_ref(b, frame, 0, 2), 0);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 2); /* a lone message: now */
    assert_int_equal(peer_read(p2, buf, sizeof(buf)), 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(tg_conn_write_ref(a, frame, 0, 2), 0);
        assert_int_equal(tg_conn_write_ref(b, frame, 0, 2), 0);
        tg_loop_run_once(&f->loop, 0);
    }
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 0); /* held */
    assert_int_equal(peer_read(p2, buf, sizeof(buf)), 0);
    assert_int_equal(tg_conn_write(b, "r;", 2), 0);          /* a reply: now */
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(peer_read(p2, buf, sizeof(buf)), 6);
    assert_memory_equal(buf, "m;m;r;", 6);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 0);
    run_until_readable(f, p1);                               /* the window ends */
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "m;m;", 4);
    assert_int_equal(f->loop.refs.taken, 0);
    tg_shared_unref(frame);
}

/* A hold ends as soon as it has gathered coalesce_count messages, long
 * before its window. */
static void hold_ends_once_it_has_enough_messages(void **state)
{
    struct fixture *f = *state;
    f->loop.coalesce_ms = 60000;
    f->loop.coalesce_count = 3;
    int p1;
    tg_conn_t *a = adopt_pair(f, &f->loop, &p1);
    assert_non_null(a);
    tg_shared_t *frame = frame_of("m;");
    assert_int_equal(broadcast_once(f, a, p1, frame), 2);
    assert_int_equal(broadcast_once(f, a, p1, frame), 0); /* held */
    assert_int_equal(broadcast_once(f, a, p1, frame), 0);
    assert_int_equal(broadcast_once(f, a, p1, frame), 6); /* the third held: all go */
    tg_shared_unref(frame);
}

/* Each hold lasts its own window from when it began: one that began later
 * is not cut short by an earlier one's end. */
static void each_hold_ends_a_window_after_it_began(void **state)
{
    struct fixture *f = *state;
    f->loop.coalesce_ms = 300;
    int p1, p2;
    tg_conn_t *a, *b;
    adopt_two(f, &a, &p1, &b, &p2);
    tg_shared_t *frame = frame_of("m;");
    char buf[16];
    assert_int_equal(broadcast_once(f, a, p1, frame), 2);
    assert_int_equal(broadcast_once(f, b, p2, frame), 2);
    assert_int_equal(broadcast_once(f, a, p1, frame), 0); /* held */
    tg_loop_run_once(&f->loop, 150);                        /* half a window on */
    assert_int_equal(broadcast_once(f, b, p2, frame), 0); /* held */
    run_until_readable(f, p1);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 2);
    assert_int_equal(peer_read(p2, buf, sizeof(buf)), 0); /* its window goes on */
    run_until_readable(f, p2);
    assert_int_equal(peer_read(p2, buf, sizeof(buf)), 2);
    tg_shared_unref(frame);
}

/* Load-triggered coalescing: writes go at once while few, are held once a
 * 100 ms window saw more than coalesce_above a second (for as many messages
 * as bring the writes back to that rate), and go at once again after a
 * quiet window, which also ends the holds. */
static void busy_loop_coalesces_and_a_quiet_one_stops(void **state)
{
    struct fixture *f = *state;
    f->loop.coalesce_busy_ms = 1000;
    f->loop.coalesce_above = 100; /* 10 writes in a window */
    int p1;
    tg_conn_t *a = adopt_pair(f, &f->loop, &p1);
    assert_non_null(a);
    tg_shared_t *frame = frame_of("m;");
    char buf[64];
    for (int i = 0; i < 20; i++) /* not busy yet: each goes out in its iteration */
        assert_int_equal(broadcast_once(f, a, p1, frame), 2);
    for (int i = 0; i < 20 && f->loop.coalesce_ms == 0; i++)
        tg_loop_run_once(&f->loop, WAIT_MS); /* the window ends: 200/s, busy */
    assert_int_equal(f->loop.coalesce_ms, 1000);
    assert_int_equal(f->loop.coalesce_count, 3); /* 200/s in writes of 3: 67/s */
    assert_int_equal(broadcast_once(f, a, p1, frame), 0); /* held */
    for (int i = 0; i < 20 && f->loop.coalesce_ms != 0; i++)
        tg_loop_run_once(&f->loop, WAIT_MS); /* a window with one write: quiet */
    assert_int_equal(f->loop.coalesce_ms, 0);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 2); /* the held one went */
    assert_int_equal(broadcast_once(f, a, p1, frame), 2); /* at once again */
    tg_shared_unref(frame);
}

/* A loop that runs for longer than its window before it waits again (a
 * broadcast to thousands) still holds the connections it wrote in that run:
 * were the next message written alone, such a loop would never catch up. */
static void loop_busier_than_its_window_still_holds(void **state)
{
    struct fixture *f = *state;
    f->loop.coalesce_ms = 100;
    int p1, p2;
    tg_conn_t *a, *b;
    adopt_two(f, &a, &p1, &b, &p2);
    tg_shared_t *frame = frame_of("m;");
    char buf[16];
    f->relay_to = a; /* each byte to <b> broadcasts one message to <a> */
    f->relay_frame = frame;
    f->busy_ms = 300;
    peer_write_all(p2, "x", 1);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 2); /* a lone message: now */
    f->busy_ms = 0;
    peer_write_all(p2, "y", 1); /* 300 ms after that write, as the loop sees it */
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 0); /* held */
    run_until_readable(f, p1);
    assert_int_equal(peer_read(p1, buf, sizeof(buf)), 2);
    f->relay_to = NULL;
    tg_shared_unref(frame);
}

static void written_bytes_reach_the_peer_after_one_iteration(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    assert_int_equal(tg_conn_write(c, "hello ", 6), 0);
    assert_int_equal(tg_conn_write(c, "world", 5), 0);
    assert_int_equal(tg_conn_write(c, "", 0), 0);
    assert_int_equal(tg_conn_pending(c), 11);
    assert_false(peer_readable(peer, 0)); /* batched until the iteration ends */

    tg_loop_run_once(&f->loop, 0);
    assert_true(peer_readable(peer, 0));
    char b[64];
    assert_int_equal(peer_read(peer, b, sizeof(b)), 11);
    assert_memory_equal(b, "hello world", 11);
    assert_int_equal(tg_conn_pending(c), 0);
    assert_null(c->out.head); /* drained: no chunk held */
    assert_null(c->out.tail);
    assert_int_equal(f->loop.chunks.taken, 0);
    assert_int_equal(f->drained, 1);
    assert_int_equal(tg_counter_get(&f->loop.stats.bytes_out), 11);
    assert_true(tg_conn_open(c));
}

static void large_write_drains_as_the_peer_reads(void **state)
{
    struct fixture *f = *state;
    enum { TOTAL = 4 << 20 }; /* far more than the socket buffer */
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    char *src = malloc(TOTAL), *got = malloc(TOTAL);
    assert_non_null(src);
    assert_non_null(got);
    for (size_t i = 0; i < TOTAL; i++)
        src[i] = (char)(i * 31 + i / 4093);
    /* In uneven pieces, so that chunk boundaries fall anywhere. */
    for (size_t off = 0, k = 1; off < TOTAL; k = k * 7 % 65521 + 1) {
        size_t n = k < TOTAL - off ? k : TOTAL - off;
        assert_int_equal(tg_conn_write(c, src + off, n), 0);
        off += n;
    }
    assert_int_equal(tg_conn_pending(c), TOTAL);

    tg_loop_run_once(&f->loop, 0);
    assert_true(tg_conn_pending(c) > 0); /* the socket filled up */
    assert_int_equal(f->drained, 0);
    size_t have = 0;
    unsigned rounds = 0;
    while (have < TOTAL) {
        ssize_t n = peer_read(peer, got + have, TOTAL - have);
        assert_true(n >= 0);
        have += (size_t)n;
        if (n == 0) {
            /* The peer's side is empty: the loop has room to write, wakes on
             * EPOLLOUT and flushes more. */
            size_t before = tg_conn_pending(c);
            tg_loop_run_once(&f->loop, WAIT_MS);
            assert_true(tg_conn_pending(c) < before);
        }
        assert_true(++rounds < 100000);
        assert_true(tg_buf_check(&c->out));
    }
    assert_memory_equal(got, src, TOTAL);
    assert_int_equal(tg_conn_pending(c), 0);
    assert_null(c->out.head);
    assert_int_equal(f->loop.chunks.taken, 0);
    assert_int_equal(f->drained, 1);
    assert_true(f->loop.chunks.nfree <= f->loop.chunks.keep); /* the burst went back */
    assert_int_equal(tg_counter_get(&f->loop.stats.bytes_out), TOTAL);
    free(src);
    free(got);
}

static void peer_bytes_reach_on_data_in_order(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    peer_write_all(peer, "ping", 4);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->data_calls, 1);
    assert_int_equal(f->data_len, 4);
    assert_memory_equal(f->data, "ping", 4);

    /* More than one read's worth, written as fast as the socket takes it. */
    enum { TOTAL = 1 << 20 };
    char *src = malloc(TOTAL);
    assert_non_null(src);
    for (size_t i = 0; i < TOTAL; i++)
        src[i] = (char)(i ^ (i >> 9));
    size_t sent = 0;
    while (f->data_len < 4 + TOTAL) {
        ssize_t n = sent < TOTAL ? write(peer, src + sent, TOTAL - sent) : 0;
        if (n > 0)
            sent += (size_t)n;
        else
            assert_true(n == 0 || errno == EAGAIN);
        size_t before = f->data_len;
        tg_loop_run_once(&f->loop, WAIT_MS);
        assert_true(f->data_len > before);
    }
    assert_int_equal(f->data_len, 4 + TOTAL);
    assert_memory_equal(f->data + 4, src, TOTAL);
    assert_int_equal(tg_counter_get(&f->loop.stats.bytes_in), 4 + TOTAL);
    assert_null(c->out.head);
    assert_ptr_equal(tg_conn_lookup(&f->loop, tg_conn_id(c)), c);
    free(src);
}

static void echo_from_on_data_goes_back_to_the_peer(void **state)
{
    struct fixture *f = *state;
    f->echo = true;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    char b[64];
    for (int i = 0; i < 50; i++) {
        int n = snprintf(b, sizeof(b), "line %d\n", i);
        peer_write_all(peer, b, (size_t)n);
        tg_loop_run_once(&f->loop, WAIT_MS); /* read, echo queued, flushed */
        char back[64];
        assert_int_equal(peer_read(peer, back, sizeof(back)), n);
        assert_memory_equal(back, b, (size_t)n);
        assert_null(c->out.head);
    }
    assert_int_equal(f->drained, 50);
    assert_int_equal(f->loop.chunks.taken, 0);
}

/* ---- closing ---- */

static void peer_eof_closes_the_connection(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_id_t id = tg_conn_id(c);
    assert_int_equal(live(&f->loop), 1);
    close_peer(f, peer);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(live(&f->loop), 0);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->last_reason, TG_CONN_EOF);
    assert_null(tg_conn_lookup(&f->loop, id));
    assert_int_equal(c->state, TG_CONN_FREE); /* freed at the end of that iteration */
    assert_int_equal(tg_counter_get(&f->loop.stats.reasons[TG_CONN_EOF]), 1);
    assert_int_equal(f->loop.chunks.taken, 0);
}

static void close_drops_queued_output(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    char big[40000];
    memset(big, 'z', sizeof(big));
    assert_int_equal(tg_conn_write(c, big, sizeof(big)), 0);
    assert_true(f->loop.chunks.taken > 0);
    tg_conn_close(c, TG_CONN_REASON_USER);
    assert_int_equal(f->loop.chunks.taken, 0);
    assert_int_equal(tg_conn_write(c, "x", 1), -EPIPE);
    tg_loop_run_once(&f->loop, 0);
    char b[16];
    assert_int_equal(peer_read(peer, b, sizeof(b)), -1); /* EOF, and nothing before it */
    assert_int_equal(live(&f->loop), 0);
}

static void close_inside_on_data_is_safe(void **state)
{
    struct fixture *f = *state;
    f->close_on_data = true;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_id_t id = tg_conn_id(c);
    peer_write_all(peer, "quit", 4);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->last_reason, TG_CONN_REASON_USER + 1);
    assert_null(tg_conn_lookup(&f->loop, id));
    assert_int_equal(live(&f->loop), 0);
}

static void close_after_flush_writes_then_lingers_until_the_peer_closes(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_id_t id = tg_conn_id(c);
    assert_int_equal(tg_conn_write(c, "bye", 3), 0);
    tg_conn_close_after_flush(c, TG_CONN_REASON_USER);
    assert_int_equal(f->closes, 1); /* the protocol lets go now */
    assert_int_equal(tg_conn_write(c, "more", 4), -EPIPE);
    assert_null(tg_conn_lookup(&f->loop, id));

    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(c->state, TG_CONN_LINGER); /* written, our side shut */
    assert_null(c->out.head);
    assert_int_equal(live(&f->loop), 1);
    char b[16];
    assert_int_equal(peer_read(peer, b, sizeof(b)), 3);
    assert_memory_equal(b, "bye", 3);
    assert_int_equal(peer_read(peer, b, sizeof(b)), -1);

    peer_write_all(peer, "ignored", 7); /* discarded while lingering */
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->data_len, 0);
    assert_int_equal(live(&f->loop), 1);

    close_peer(f, peer);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(live(&f->loop), 0);
    assert_int_equal(f->closes, 1); /* on_close once only */
    assert_int_equal(c->state, TG_CONN_FREE);
}

static void half_closed_peer_still_gets_its_answer(void **state)
{
    struct fixture *f = *state;
    enum { TOTAL = 3 << 20 }; /* more than the socket takes at once */
    char *answer = malloc(TOTAL), *got = malloc(TOTAL);
    assert_non_null(answer);
    assert_non_null(got);
    for (size_t i = 0; i < TOTAL; i++)
        answer[i] = (char)(i * 7 + (i >> 12));
    f->answer = answer;
    f->answer_len = TOTAL;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    peer_write_all(peer, "GET", 3);
    assert_int_equal(shutdown(peer, SHUT_WR), 0); /* the request is all we send */

    size_t have = 0;
    bool eof = false;
    uint64_t progress_at = tg_clock_ms();
    while (!eof) {
        tg_loop_run_once(&f->loop, 0);
        ssize_t n;
        while ((n = peer_read(peer, got + have, TOTAL - have)) > 0) {
            have += (size_t)n;
            progress_at = tg_clock_ms();
        }
        eof = n == -1;
        if (!eof && tg_conn_pending(c) > 0)
            tg_loop_run_once(&f->loop, WAIT_MS); /* wakes on EPOLLOUT */
        assert_true(tg_clock_ms() - progress_at < WAIT_MS);
    }
    assert_int_equal(f->data_len, 3);
    assert_int_equal(have, TOTAL); /* every byte of the answer, then EOF */
    assert_memory_equal(got, answer, TOTAL);
    assert_int_equal(f->closes, 1);
    assert_int_equal(f->last_reason, TG_CONN_EOF);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(live(&f->loop), 0);
    assert_int_equal(f->loop.chunks.taken, 0);
    free(answer);
    free(got);
}

static void paused_connection_reads_nothing_until_resumed(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_pause(c);
    tg_conn_pause(c); /* twice: harmless */
    peer_write_all(peer, "held", 4);
    tg_loop_run_once(&f->loop, 0);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(f->data_calls, 0);
    /* Writing still works while reads are paused. */
    assert_int_equal(tg_conn_write(c, "out", 3), 0);
    tg_loop_run_once(&f->loop, 0);
    char b[8];
    assert_int_equal(peer_read(peer, b, sizeof(b)), 3);

    tg_conn_resume(c);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->data_len, 4);
    assert_memory_equal(f->data, "held", 4);
}

/* A pause costs no epoll_ctl until bytes come: a request waiting for its
 * answer is paused and resumed with the peer silent, the common case. */
static void pause_leaves_the_epoll_set_only_when_bytes_come(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    assert_true(c->w.events & EPOLLIN);
    tg_conn_pause(c);
    tg_loop_run_once(&f->loop, 0);
    assert_true(c->w.events & EPOLLIN); /* nothing came: interest untouched */
    tg_conn_resume(c);
    assert_true(c->w.events & EPOLLIN);

    tg_conn_pause(c);
    peer_write_all(peer, "later", 5);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->data_calls, 0);
    assert_false(c->w.events & EPOLLIN); /* bytes came: now it leaves the set */
    tg_loop_run_once(&f->loop, 0);      /* and is not woken for them again */
    assert_int_equal(f->data_calls, 0);
    tg_conn_resume(c);
    assert_true(c->w.events & EPOLLIN);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->data_len, 5);
    assert_memory_equal(f->data, "later", 5);
}

/* A long-poll's client that closes its side is noticed while its request
 * waits: FIN alone (EPOLLIN | EPOLLRDHUP, no HUP) closes the connection. */
static void paused_connection_notices_a_half_close(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_pause(c);
    assert_int_equal(shutdown(peer, SHUT_WR), 0);
    tg_loop_run_once(&f->loop, WAIT_MS);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->closes, 1);
    assert_int_equal(live(&f->loop), 0);
}

static void paused_connection_still_notices_the_peer_is_gone(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_pause(c);
    close_peer(f, peer);
    tg_loop_run_once(&f->loop, WAIT_MS);
    assert_int_equal(f->closes, 1);
    assert_int_equal(live(&f->loop), 0);
}

static void refused_open_closes_the_connection(void **state)
{
    struct fixture *f = *state;
    f->refuse_open = -ENOMEM;
    int peer;
    assert_null(adopt_pair(f, &f->loop, &peer));
    assert_int_equal(f->opens, 1);
    assert_int_equal(live(&f->loop), 0);
    tg_loop_run_once(&f->loop, 0);
    char b[4];
    assert_int_equal(peer_read(peer, b, sizeof(b)), -1);
}

static void adopting_an_unpollable_fd_fails_cleanly(void **state)
{
    struct fixture *f = *state;
    int fd = memfd_create("not-a-socket", MFD_CLOEXEC); /* epoll refuses regular files */
    assert_true(fd >= 0);
    assert_null(tg_loop_adopt(&f->loop, fd, &test_proto));
    assert_int_equal(fcntl(fd, F_GETFD), -1); /* "NULL with <fd> closed" */
    assert_int_equal(errno, EBADF);
    assert_int_equal(live(&f->loop), 0);
    tg_loop_run_once(&f->loop, 0);
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer); /* the slot is usable again */
    assert_non_null(c);
    assert_ptr_equal(tg_conn_lookup(&f->loop, tg_conn_id(c)), c);
}

static void connection_timer_calls_on_timer(void **state)
{
    struct fixture *f = *state;
    int peer;
    tg_conn_t *c = adopt_pair(f, &f->loop, &peer);
    assert_non_null(c);
    tg_conn_timer_arm(c, 0);
    tg_loop_run_once(&f->loop, 0);
    assert_int_equal(f->timers, 1);

    tg_conn_timer_arm(c, 3);
    tg_conn_timer_cancel(c);
    tg_conn_timer_arm(c, 2);
    /* The loop sleeps until its timer is due (then fires it at the start of
     * the next iteration). The bound only caps the wait that follows the
     * firing, when nothing is left to wake the loop. */
    for (int i = 0; i < 1000 && f->timers < 2; i++)
        tg_loop_run_once(&f->loop, 10);
    assert_int_equal(f->timers, 2);
    assert_true(tg_wheel_check(&f->loop.wheel));

    tg_conn_timer_arm(c, 1000000);
    tg_conn_close(c, TG_CONN_REASON_USER); /* takes its timer with it */
    assert_false(tg_timer_armed(&c->timer));
    assert_int_equal(f->loop.wheel.armed, 0);
}

static void loop_fini_closes_what_is_still_open(void **state)
{
    struct fixture *f = *state;
    int peers[3];
    for (int i = 0; i < 3; i++) {
        tg_conn_t *c = adopt_pair(f, &f->loop, &peers[i]);
        assert_non_null(c);
        assert_int_equal(tg_conn_write(c, "queued", 6), 0); /* never flushed */
    }
    tg_loop_fini(&f->loop);
    assert_int_equal(f->closes, 3);
    assert_int_equal(f->last_reason, TG_CONN_SHUTDOWN);
    for (int i = 0; i < 3; i++) {
        char b[8];
        assert_int_equal(peer_read(peers[i], b, sizeof(b)), -1);
    }
}

/* Every test runs twice: with one send() per connection, and with the loop's
 * output sent in batches. */
#define TESTS(setup_fn)                                                                        \
    {                                                                                          \
        cmocka_unit_test_setup_teardown(adopted_connection_looks_up_by_its_id, setup_fn,       \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(closed_slot_is_reused_and_old_id_goes_stale, setup_fn, \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(ids_are_never_zero_nor_reused_by_a_new_generation,     \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(live_connections_have_distinct_ids_across_slab_chunks, \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(id_from_another_loop_is_refused, setup_fn, teardown),  \
        cmocka_unit_test_setup_teardown(shared_frame_reaches_every_peer_without_copy,          \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(broadcast_to_many_connections_goes_out_in_one_iteration, \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(many_small_multi_part_outputs_all_arrive_in_order,      \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(full_and_broken_sockets_among_others_in_one_flush,     \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(connection_closed_by_an_earlier_callback_of_the_flush, \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(refused_batch_falls_back_to_one_send_each, setup_fn,   \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(written_bytes_reach_the_peer_after_one_iteration,      \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(large_write_drains_as_the_peer_reads, setup_fn,        \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(peer_bytes_reach_on_data_in_order, setup_fn, teardown), \
        cmocka_unit_test_setup_teardown(echo_from_on_data_goes_back_to_the_peer, setup_fn,     \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(peer_eof_closes_the_connection, setup_fn, teardown),   \
        cmocka_unit_test_setup_teardown(close_drops_queued_output, setup_fn, teardown),        \
        cmocka_unit_test_setup_teardown(close_inside_on_data_is_safe, setup_fn, teardown),     \
        cmocka_unit_test_setup_teardown(                                                       \
            close_after_flush_writes_then_lingers_until_the_peer_closes, setup_fn, teardown),  \
        cmocka_unit_test_setup_teardown(half_closed_peer_still_gets_its_answer, setup_fn,      \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(paused_connection_reads_nothing_until_resumed,         \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(pause_leaves_the_epoll_set_only_when_bytes_come,       \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(paused_connection_still_notices_the_peer_is_gone,      \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(paused_connection_notices_a_half_close, setup_fn,      \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(coalesced_broadcasts_leave_together, setup_fn,         \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(hold_ends_once_it_has_enough_messages, setup_fn,       \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(each_hold_ends_a_window_after_it_began, setup_fn,      \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(busy_loop_coalesces_and_a_quiet_one_stops, setup_fn,   \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(loop_busier_than_its_window_still_holds, setup_fn,     \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(mail_waits_for_one_part_of_a_large_broadcast_not_all,  \
                                        setup_fn, teardown),                                   \
        cmocka_unit_test_setup_teardown(refused_open_closes_the_connection, setup_fn,          \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(adopting_an_unpollable_fd_fails_cleanly, setup_fn,     \
                                        teardown),                                             \
        cmocka_unit_test_setup_teardown(connection_timer_calls_on_timer, setup_fn, teardown),  \
        cmocka_unit_test_setup_teardown(loop_fini_closes_what_is_still_open, setup_fn,         \
                                        teardown),                                             \
    }

int main(void)
{
    const struct CMUnitTest one_by_one[] = TESTS(setup);
    const struct CMUnitTest batched[] = TESTS(setup_batched);
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='close*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    int failed = cmocka_run_group_tests_name("core/conn", one_by_one, NULL, NULL);
    failed += cmocka_run_group_tests_name("core/conn, batched sends", batched, NULL, NULL);
    return failed;
}
