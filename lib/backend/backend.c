/* lib/backend/backend.c - libtidegate-backend: the link to the gate, the loop
 * behind tgb_next and tgb_run, effectively-once replies. The manual is
 * include/tidegate/backend_lib.h; the protocol docs/backend-protocol.md.
 *
 *   DOWN --link_up: dial, HELLO out, HELLO in--> UP --drop_link--> DOWN (redial)
 *     UP --tgb_drain--> DRAIN_SENT --PONG of our PING, or 5 s--> DRAIN_BARRIER
 *     DRAIN_BARRIER --nothing in flight, output written--> finish: CLOSED
 *     any --tgb_stop--> finish: CLOSED
 *
 * One turn of the loop (step): write every queued frame (the replies of the
 * last batch, in one write() when the socket takes it), run on_done hooks,
 * poll the socket and the wake pipe, read once, decode every complete frame.
 * Jobs decoded go to the ready queue; tgb_next hands them out one by one and
 * only turns the loop again once the queue is empty. A JOB whose id the memory
 * holds never reaches the ready queue: its remembered reply is queued instead.
 *
 * Sockets are blocking (this is a backend process, not the gate's loop): the
 * dial uses a non-blocking connect bounded by poll, reads come after poll, and
 * writes block, bounded by SO_SNDTIMEO at three ping intervals. */
#include "tidegate/backend_lib.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "gate/wire.h"
#include "job.h"
#include "memo.h"

#define DEFAULT_CONNECT  "127.0.0.1:7070"
#define DEFAULT_CAPACITY 64
#define MAX_CAPACITY     65536
#define READ_MIN         (64u << 10) /* free space offered to each read() */
#define IN_KEEP          (1u << 20)  /* an empty input buffer larger than this is freed */
#define BACKOFF_MIN_MS   100
#define BACKOFF_MAX_MS   5000
#define DIAL_WAIT_MS     5000  /* one connect() */
#define HELLO_WAIT_MS    10000 /* the gate's HELLO after ours */
#define DRAIN_WAIT_MS    5000  /* the PONG that closes a drain */
#define CLOSE_WAIT_MS    1000  /* the gate's EOF after our shutdown(SHUT_WR) */
#define SILENT_PINGS     3     /* a gate silent this many ping intervals is gone */
#define SEND_WAIT_MS     15000 /* a write that blocks this long, before we know ping_ms */

#define DRAINED 1 /* step(): the drain is complete */

typedef struct bytes {
    uint8_t *p;
    size_t   len;
    size_t   cap;
} bytes_t;

enum pend_kind {
    PEND_RAN,    /* a reply its handler just made */
    PEND_REPEAT, /* a remembered reply sent again */
};

/* A reply in <out> whose on_done hook runs once <end> bytes are written. */
struct pend {
    uint64_t id;
    size_t   end;
    int      kind;
};

enum drain_state { DRAIN_NONE, DRAIN_SENT, DRAIN_BARRIER };

struct tgb {
    /* Options, copied. */
    char        *host;
    char        *port;
    char        *name;
    char        *routes;
    uint32_t     capacity;
    uint32_t     max_frame;
    int          give_up_ms;
    bool         no_reconnect;
    bool         lz4;   /* we announce it */
    bool         quiet;
    tgb_done_cb *on_done;
    void        *done_arg;

    /* The link. */
    int      fd;        /* -1 while down */
    bool     hello_ok;  /* the gate's HELLO arrived on this link */
    bool     finished;  /* CLOSED: drained or stopped */
    uint32_t link;      /* generation, +1 per dial that connected */
    uint64_t epoch;     /* the gate's, from its last HELLO */
    bool     have_epoch;
    uint32_t epoch_gen; /* +1 per epoch change */
    uint32_t gate_max;  /* the gate's max_frame */
    uint32_t ping_ms;   /* the gate's ping interval; 0: no silence check */
    bool     gate_lz4;  /* compress towards the gate */
    uint64_t done_below;
    uint64_t last_read_ms;
    int      broken;    /* an error that drops the link at the next turn, or 0 */
    const char *why;    /* the violation that drops it, for the log and the ERROR */

    bytes_t        in;     /* read, not yet decoded */
    size_t         want;   /* bytes the frame in progress needs in <in> */
    bytes_t        out;    /* frames queued for the gate */
    size_t         out_done; /* of <out>, written */
    struct pend   *pend;   /* replies in <out> awaiting on_done, by <end> */
    size_t         npend;
    size_t         pend_cap;
    size_t         pend_done;
    tg_wire_enc_t  scratch; /* one frame under construction */

    tgb_job_t  *ready;      /* decoded, not handed out: FIFO */
    tgb_job_t  *ready_tail;
    tgb_job_t  *held;       /* handed out, not answered: doubly linked */
    size_t      nheld;
    tgb_job_t  *current;    /* the job tgb_run's handler is running */
    tgb_memo_t  memo;

    /* Ending: set by tgb_drain and tgb_stop from anywhere, read by the loop. */
    atomic_int  drain_req;
    atomic_int  stop_req;
    int         wake[2];    /* self-pipe: a write wakes the loop's poll */
    int         drain;      /* enum drain_state */
    uint64_t    drain_at;
    uint64_t    drain_nonce;

    tgb_stats_t stats;
};

/* ---- small things ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void say(const tgb_t *b, bool error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void say(const tgb_t *b, bool error, const char *fmt, ...)
{
    if (b->quiet && !error)
        return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "tgb %s: %s\n", b->name, line);
}

/* Makes room for <n> more bytes. Returns 0 or -ENOMEM (<o> unchanged). */
static int bytes_reserve(bytes_t *o, size_t n)
{
    if (o->cap - o->len >= n)
        return 0;
    size_t cap = o->cap ? o->cap : 4096;
    while (cap - o->len < n) {
        if (cap > SIZE_MAX / 2)
            return -ENOMEM;
        cap *= 2;
    }
    uint8_t *p = realloc(o->p, cap);
    if (!p)
        return -ENOMEM;
    o->p = p;
    o->cap = cap;
    return 0;
}

static void bytes_free(bytes_t *o)
{
    free(o->p);
    memset(o, 0, sizeof(*o));
}

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* The largest body we send: the gate's limit once known. */
static uint32_t send_limit(const tgb_t *b)
{
    return b->hello_ok ? b->gate_max : TG_BK_MAX_BODY_DEFAULT;
}

/* The largest body we take: ours, and the gate's own once known. */
static uint32_t recv_limit(const tgb_t *b)
{
    return b->hello_ok && b->gate_max < b->max_frame ? b->gate_max : b->max_frame;
}

static size_t lz4_min(const tgb_t *b)
{
    return b->gate_lz4 ? TG_BK_LZ4_MIN_DEFAULT : 0;
}

static void wake(tgb_t *b)
{
    int saved = errno; /* we may be in a signal handler */
    ssize_t n = write(b->wake[1], "", 1); /* a full pipe already wakes the loop */
    (void)n;
    errno = saved;
}

static void eat_wakes(tgb_t *b)
{
    char buf[64];
    while (read(b->wake[0], buf, sizeof(buf)) > 0)
        ;
}

/* Milliseconds from now until <until>, 0 when past (never a negative poll timeout). */
static int ms_until(uint64_t until)
{
    uint64_t now = now_ms();
    return until > now ? (int)(until - now) : 0;
}

static bool ending(tgb_t *b)
{
    return atomic_load(&b->stop_req) || atomic_load(&b->drain_req);
}

/* Waits up to <ms> (-1: no limit) for <events> on <fd> (-1: none, a nap) or a
 * wake. Returns 1 when <fd> is ready, 0 on timeout or a wake, -errno. */
static int wait_fd(tgb_t *b, int fd, short events, int ms)
{
    struct pollfd pf[2] = {{.fd = b->wake[0], .events = POLLIN}, {.fd = fd, .events = events}};
    int n = poll(pf, fd >= 0 ? 2 : 1, ms);
    if (n == -1)
        return errno == EINTR ? 0 : -errno;
    if (pf[0].revents)
        eat_wakes(b);
    return fd >= 0 && pf[1].revents ? 1 : 0;
}

/* Marks the link for dropping because the gate broke the protocol. */
static int violation(tgb_t *b, const char *why)
{
    b->why = why;
    return -EPROTO;
}

/* ---- output ---- */

/* Appends frame <p>,<n> to the output; with <id>, its on_done hook of <kind>
 * runs once it is written. Out of memory breaks the link (a lost frame would
 * leave the gate waiting): returns -ENOMEM then. */
static int queue(tgb_t *b, const uint8_t *p, size_t n, uint64_t id, int kind)
{
    if (bytes_reserve(&b->out, n) != 0)
        goto nomem;
    if (id && b->on_done) {
        if (b->npend == b->pend_cap) {
            size_t cap = b->pend_cap ? b->pend_cap * 2 : 64;
            struct pend *np = realloc(b->pend, cap * sizeof(*np));
            if (!np)
                goto nomem;
            b->pend = np;
            b->pend_cap = cap;
        }
        b->pend[b->npend++] = (struct pend){id, b->out.len + n, kind};
    }
    memcpy(b->out.p + b->out.len, p, n);
    b->out.len += n;
    return 0;
nomem:
    b->broken = -ENOMEM;
    return -ENOMEM;
}

/* Queues the frame in <scratch> when the link is up. */
static int queue_scratch(tgb_t *b)
{
    if (b->fd < 0 || !b->hello_ok)
        return -ENOTCONN;
    return queue(b, b->scratch.p, b->scratch.len, 0, 0);
}

/* Runs the on_done hooks of the replies written so far. A hook may queue more
 * (a push, a reply): <pend> may move, so it is indexed afresh each time. */
static void report(tgb_t *b)
{
    while (b->pend_done < b->npend && b->pend[b->pend_done].end <= b->out_done) {
        struct pend p = b->pend[b->pend_done++];
        tgb_memo_slot_t *s = tgb_memo_find(&b->memo, p.id);
        if (p.kind == PEND_REPEAT && (!s || s->reported))
            continue; /* its first sending was reported already */
        if (s)
            s->reported = true;
        b->on_done(p.id, b->done_arg);
    }
}

/* Writes everything queued, then forgets it. Returns 0 or -errno (-ETIMEDOUT
 * when the gate took nothing for SO_SNDTIMEO). */
static int flush(tgb_t *b)
{
    if (b->fd < 0)
        return -ENOTCONN;
    while (b->out_done < b->out.len) {
        ssize_t n = send(b->fd, b->out.p + b->out_done, b->out.len - b->out_done, MSG_NOSIGNAL);
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? -ETIMEDOUT : -errno;
        }
        b->out_done += (size_t)n;
        if (b->on_done)
            report(b);
    }
    b->out.len = 0;
    b->out_done = 0;
    b->npend = 0;
    b->pend_done = 0;
    return 0;
}

/* ---- jobs in the library ---- */

static void held_add(tgb_t *b, tgb_job_t *job)
{
    job->prev = NULL;
    job->next = b->held;
    if (b->held)
        b->held->prev = job;
    b->held = job;
    b->nheld++;
}

static void held_del(tgb_t *b, tgb_job_t *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        b->held = job->next;
    if (job->next)
        job->next->prev = job->prev;
    b->nheld--;
}

/* Forgets the jobs decoded but never handed out: their link is gone, the gate
 * resubmits them, and their handler has not run, so nothing is remembered. */
static void drop_ready(tgb_t *b)
{
    while (b->ready) {
        tgb_job_t *job = b->ready;
        b->ready = job->next;
        if (job->epoch_gen == b->epoch_gen)
            tgb_memo_del(&b->memo, job->id);
        tgb_job__free(job);
        b->stats.inflight--;
    }
    b->ready_tail = NULL;
}

/* Sends the answer in <scratch> for <job> and remembers it, then frees <job>.
 *
 * The answer goes to the link that asked last (a resubmission of a job still
 * running here moves it there); a job from a link that dropped since is
 * answered in memory only. A job of an earlier gate epoch is just dropped: no
 * gate will ask for it again. */
static void settle(tgb_t *b, tgb_job_t *job)
{
    uint64_t id = job->id;
    tgb_memo_slot_t *s = job->epoch_gen == b->epoch_gen ? tgb_memo_find(&b->memo, id) : NULL;
    bool to_gate = s && b->fd >= 0 && b->hello_ok && s->link == b->link;

    b->stats.replies++;
    if (to_gate)
        (void)queue(b, b->scratch.p, b->scratch.len, id, PEND_RAN); /* -ENOMEM: broken */
    else
        b->stats.unsent++;
    if (s) {
        if (id < b->done_below) {
            /* Settled at its deadline: the gate still takes the reply but never
             * resubmits the job, so there is nothing to remember. */
            tgb_memo_del(&b->memo, id);
        } else if (tgb_memo_store(&b->memo, s, b->scratch.p, b->scratch.len) != 0) {
            tgb_memo_del(&b->memo, id);
            say(b, true, "out of memory: the reply to job %llu is not remembered",
                (unsigned long long)id);
        }
    }
    if (b->current == job)
        b->current = NULL;
    held_del(b, job);
    tgb_job__free(job);
    b->stats.inflight--;
}

/* ---- frames from the gate ---- */

static int on_hello(tgb_t *b, const uint8_t *body, size_t len)
{
    tg_wire_pair_t kv;
    uint64_t v, epoch = 0, max = TG_BK_MAX_BODY_DEFAULT, ping = 0;

    if (b->hello_ok)
        return violation(b, "a second HELLO");
    if (!tg_wire_find(body, len, TG_BK_K_VERSION, &kv) || tg_wire_u64(kv.val, kv.vlen, &v) != 0 ||
        v != TG_BK_VERSION)
        return violation(b, "HELLO without version 1");
    if (tg_wire_find(body, len, TG_BK_K_EPOCH, &kv) && tg_wire_u64(kv.val, kv.vlen, &v) == 0)
        epoch = v;
    if (tg_wire_find(body, len, TG_BK_K_MAX_FRAME, &kv) && tg_wire_u64(kv.val, kv.vlen, &v) == 0 &&
        v > 0)
        max = v > UINT32_MAX ? UINT32_MAX : v;
    if (tg_wire_find(body, len, TG_BK_K_PING_MS, &kv) && tg_wire_u64(kv.val, kv.vlen, &v) == 0)
        ping = v > 3600000 ? 3600000 : v;
    bool lz4 = false;
    if (tg_wire_find(body, len, TG_BK_K_FEATURES, &kv)) {
        /* A comma-separated list: look for the whole word. */
        for (size_t i = 0; i + 3 <= kv.vlen; i++)
            if (memcmp(kv.val + i, "lz4", 3) == 0 && (i == 0 || kv.val[i - 1] == ',') &&
                (i + 3 == kv.vlen || kv.val[i + 3] == ','))
                lz4 = true;
    }

    if (!b->have_epoch || epoch != b->epoch) {
        if (b->have_epoch)
            say(b, false, "gate epoch %llu (was %llu): %zu remembered replies forgotten",
                (unsigned long long)epoch, (unsigned long long)b->epoch,
                tgb_memo_answered(&b->memo));
        tgb_memo_clear(&b->memo);
        b->epoch_gen++;
        b->epoch = epoch;
        b->have_epoch = true;
        b->done_below = 0;
    } else {
        say(b, false, "same gate epoch %llu: %zu remembered replies kept",
            (unsigned long long)epoch, tgb_memo_answered(&b->memo));
    }
    b->gate_max = (uint32_t)max;
    b->ping_ms = (uint32_t)ping;
    b->gate_lz4 = lz4 && b->lz4;
    b->hello_ok = true;
    b->stats.links++;
    b->stats.epoch = epoch;

    /* A gate that takes nothing for three ping intervals is gone (it would
     * close the link itself): do not block on it longer. */
    uint64_t ms = ping ? SILENT_PINGS * ping : SEND_WAIT_MS;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    (void)setsockopt(b->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return 0;
}

static int on_job(tgb_t *b, uint64_t id, const uint8_t *body, size_t len, size_t npairs)
{
    if (id == 0)
        return violation(b, "a JOB with id 0");
    tgb_memo_slot_t *s = tgb_memo_find(&b->memo, id);
    if (s && s->frame) {
        /* Resubmitted, and answered here before: the reply again, not the handler. */
        b->stats.repeats++;
        return queue(b, s->frame, s->len, id, PEND_REPEAT);
    }
    if (s) {
        /* Resubmitted while its handler still holds it (it came on a link that
         * dropped): its one reply will go to this link. */
        s->link = b->link;
        b->stats.joined++;
        return 0;
    }
    tgb_job_t *job = tgb_job__decode(id, body, len, npairs);
    if (!job)
        return -ENOMEM;
    s = tgb_memo_add(&b->memo, id);
    if (!s) {
        tgb_job__free(job);
        return -ENOMEM;
    }
    s->link = b->link;
    job->link = b->link;
    job->epoch_gen = b->epoch_gen;
    job->next = NULL;
    if (b->ready_tail)
        b->ready_tail->next = job;
    else
        b->ready = job;
    b->ready_tail = job;
    b->stats.inflight++;
    return 0;
}

static int on_frame(tgb_t *b, const tg_wire_head_t *h, const uint8_t *body, size_t len,
                    size_t npairs)
{
    tg_wire_pair_t kv;
    uint64_t v;

    if (h->type == TG_BK_HELLO)
        return on_hello(b, body, len);
    if (!b->hello_ok)
        return violation(b, "a frame before HELLO");
    switch (h->type) {
    case TG_BK_JOB:
        return on_job(b, h->id, body, len, npairs);
    case TG_BK_PING:
        /* The PONG carries the PING's id and pairs (docs/backend-protocol.md). */
        tg_wire_enc_reset(&b->scratch);
        tg_wire_begin(&b->scratch, TG_BK_PONG, h->id);
        tg_wire_put_raw(&b->scratch, body, len);
        if (tg_wire_end(&b->scratch, lz4_min(b)) != 0)
            return -ENOMEM;
        return queue(b, b->scratch.p, b->scratch.len, 0, 0);
    case TG_BK_PONG:
        if (b->drain == DRAIN_SENT && tg_wire_find(body, len, "drain", &kv) &&
            tg_wire_u64(kv.val, kv.vlen, &v) == 0 && v == b->drain_nonce)
            b->drain = DRAIN_BARRIER; /* the gate saw our DRAIN: no job comes after this */
        return 0;
    case TG_BK_DONE_BELOW:
        if (h->id > b->done_below)
            b->done_below = h->id;
        b->stats.pruned += tgb_memo_prune(&b->memo, h->id);
        return 0;
    case TG_BK_ERROR: {
        char code[64] = "?", msg[256] = "";
        if (tg_wire_find(body, len, TG_BK_K_CODE, &kv))
            snprintf(code, sizeof(code), "%.*s", (int)kv.vlen, kv.val);
        if (tg_wire_find(body, len, TG_BK_K_MESSAGE, &kv))
            snprintf(msg, sizeof(msg), "%.*s", (int)kv.vlen, kv.val);
        if (h->id)
            say(b, true, "gate error on job %llu: %s: %s", (unsigned long long)h->id, code, msg);
        else
            say(b, true, "gate error: %s: %s (the link will close)", code, msg);
        return 0;
    }
    default:
        return violation(b, "a frame type the gate does not send");
    }
}

/* Checks, inflates and handles the complete frame at <raw>. */
static int frame(tgb_t *b, const tg_wire_head_t *h, const uint8_t *raw)
{
    const uint8_t *body = raw;
    size_t len = h->len;
    uint8_t *inflated = NULL;
    int rc;

    if (h->flags & TG_BK_F_LZ4) {
        if (!b->lz4)
            return violation(b, "an LZ4 body, lz4 not announced");
        rc = tg_wire_inflate(raw, h->len, recv_limit(b), &inflated, &len);
        if (rc == -ENOMEM)
            return rc;
        if (rc != 0)
            return violation(b, "an undecodable LZ4 body");
        body = inflated;
    }
    int n = tg_wire_check(body, len);
    rc = n < 0 ? violation(b, "a malformed pair list") : on_frame(b, h, body, len, (size_t)n);
    free(inflated);
    return rc;
}

/* Handles every complete frame in <in> and keeps the rest. */
static int decode(tgb_t *b)
{
    size_t off = 0;
    int rc = 0;
    b->want = 0;
    while (b->in.len - off >= TG_BK_HEADER) {
        tg_wire_head_t h;
        rc = tg_wire_head(b->in.p + off, recv_limit(b), &h);
        if (rc != 0) {
            rc = violation(b, rc == -EMSGSIZE ? "a frame over max_frame" : "a bad frame header");
            break;
        }
        size_t whole = TG_BK_HEADER + (size_t)h.len;
        if (b->in.len - off < whole) {
            b->want = whole;
            break;
        }
        rc = frame(b, &h, b->in.p + off + TG_BK_HEADER);
        off += whole;
        if (rc != 0)
            break;
    }
    if (off) {
        memmove(b->in.p, b->in.p + off, b->in.len - off);
        b->in.len -= off;
    }
    if (b->in.len == 0 && b->in.cap > IN_KEEP)
        bytes_free(&b->in); /* one large frame does not pin its buffer */
    return rc;
}

/* One read, as large as the buffer allows, then decode. */
static int pull(tgb_t *b)
{
    size_t need = READ_MIN;
    if (b->want > b->in.len && b->want - b->in.len > need)
        need = b->want - b->in.len;
    if (bytes_reserve(&b->in, need) != 0)
        return -ENOMEM;
    ssize_t n = read(b->fd, b->in.p + b->in.len, b->in.cap - b->in.len);
    if (n == 0)
        return -ECONNRESET; /* EOF: the gate closed the link */
    if (n == -1)
        return errno == EINTR || errno == EAGAIN ? 0 : -errno;
    b->in.len += (size_t)n;
    b->last_read_ms = now_ms();
    return decode(b);
}

/* ---- the link ---- */

/* Splits "HOST:PORT" or "[V6]:PORT". Returns 0 or -EINVAL. */
static int split_addr(const char *a, char **host, char **port)
{
    const char *colon = strrchr(a, ':');
    if (!colon || colon[1] == '\0' || colon == a)
        return -EINVAL;
    const char *h = a;
    size_t hlen = (size_t)(colon - a);
    if (*a == '[') {
        if (hlen < 3 || a[hlen - 1] != ']')
            return -EINVAL;
        h = a + 1;
        hlen -= 2;
    }
    *host = malloc(hlen + 1);
    *port = dup_str(colon + 1);
    if (!*host || !*port)
        return -ENOMEM;
    memcpy(*host, h, hlen);
    (*host)[hlen] = '\0';
    return 0;
}

/* Connects to the gate: each address getaddrinfo gives, DIAL_WAIT_MS each.
 * Returns a blocking socket, or -errno (-ESHUTDOWN when woken to end). */
static int dial(tgb_t *b)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res, *ai;
    int err = -EHOSTUNREACH;

    int g = getaddrinfo(b->host, b->port, &hints, &res);
    if (g != 0) {
        b->why = gai_strerror(g);
        return g == EAI_SYSTEM ? -errno : -EHOSTUNREACH;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                        ai->ai_protocol);
        if (fd == -1) {
            err = -errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
            if (errno != EINPROGRESS) {
                err = -errno;
                close(fd);
                continue;
            }
            uint64_t until = now_ms() + DIAL_WAIT_MS;
            int rc = 0;
            while (rc == 0 && !ending(b) && now_ms() < until)
                rc = wait_fd(b, fd, POLLOUT, ms_until(until));
            int soerr = 0;
            socklen_t sl = sizeof(soerr);
            if (rc < 0)
                err = rc;
            else if (ending(b))
                err = -ESHUTDOWN;
            else if (rc == 0)
                err = -ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
                err = -errno;
            else if (soerr != 0)
                err = -soerr;
            else
                err = 0;
            if (err != 0) {
                close(fd);
                if (err == -ESHUTDOWN)
                    break;
                continue;
            }
        }
        int one = 1;
        /* Replies are batched into one write already; Nagle would only delay them. */
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        int fl = fcntl(fd, F_GETFL);
        if (fl == -1 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) == -1) {
            err = -errno;
            close(fd);
            continue;
        }
        freeaddrinfo(res);
        return fd;
    }
    freeaddrinfo(res);
    return err;
}

/* Closes the link in any state and forgets what belonged to it: input, queued
 * output (replies in it are remembered; the gate resubmits their jobs), jobs
 * not handed out. Jobs held by the application stay: their replies go to
 * memory. A violation is told to the gate first, after the replies queued. */
static void drop_link(tgb_t *b, int why)
{
    if (b->fd < 0)
        return;
    if (why == -EPROTO) {
        b->stats.violations++;
        say(b, true, "protocol violation by the gate: %s; closing the link", b->why);
        if (tgb_job__error(&b->scratch, 0, 0, "protocol", b->why, TG_BK_MAX_BODY_DEFAULT, 0) ==
                0 &&
            queue(b, b->scratch.p, b->scratch.len, 0, 0) == 0)
            (void)flush(b); /* best effort: the replies before it settle their jobs */
    } else if (b->hello_ok) {
        say(b, false, "link lost: %s", why == -ECONNRESET ? "closed by the gate" : strerror(-why));
    }
    if (b->hello_ok)
        b->stats.drops++;
    close(b->fd);
    b->fd = -1;
    b->hello_ok = false;
    b->broken = 0;
    b->in.len = 0;
    b->want = 0;
    b->out.len = 0;
    b->out_done = 0;
    b->npend = 0;
    b->pend_done = 0;
    b->drain = DRAIN_NONE;
    drop_ready(b);
}

/* Dials and exchanges HELLO. Returns 0 with the link UP, or -errno. */
static int link_up(tgb_t *b)
{
    b->why = NULL;
    int fd = dial(b);
    if (fd < 0)
        return fd;
    b->fd = fd;
    b->link++;
    b->hello_ok = false;
    b->last_read_ms = now_ms();

    tg_wire_enc_reset(&b->scratch);
    tg_wire_begin(&b->scratch, TG_BK_HELLO, 0);
    tg_wire_put_u64(&b->scratch, TG_BK_K_VERSION, TG_BK_VERSION);
    tg_wire_put_str(&b->scratch, TG_BK_K_NAME, b->name);
    tg_wire_put_str(&b->scratch, TG_BK_K_ROUTES, b->routes);
    tg_wire_put_u64(&b->scratch, TG_BK_K_CAPACITY, b->capacity);
    tg_wire_put_str(&b->scratch, TG_BK_K_FEATURES, b->lz4 ? "lz4" : "");
    int rc = tg_wire_end(&b->scratch, 0); /* the gate's features are not known yet */
    if (rc == 0)
        rc = queue(b, b->scratch.p, b->scratch.len, 0, 0);
    if (rc == 0)
        rc = flush(b);
    uint64_t until = now_ms() + HELLO_WAIT_MS;
    while (rc == 0 && !b->hello_ok) {
        uint64_t now = now_ms();
        if (ending(b))
            rc = -ESHUTDOWN;
        else if (now >= until)
            rc = -ETIMEDOUT;
        else if ((rc = wait_fd(b, b->fd, POLLIN, (int)(until - now))) == 1)
            rc = pull(b); /* jobs after the HELLO in the same read are queued too */
    }
    if (rc != 0) {
        const char *why = b->why;
        drop_link(b, rc == -EPROTO ? -EPROTO : 0);
        b->why = why;
        return rc;
    }
    return 0;
}

/* Brings the link up, redialing with backoff. Returns 0, -ESHUTDOWN (asked
 * to end meanwhile), -ETIMEDOUT (give_up_ms passed) or the dial's error
 * (no_reconnect). */
static int relink(tgb_t *b)
{
    uint64_t start = now_ms();
    int delay = BACKOFF_MIN_MS;
    unsigned fails = 0;
    for (;;) {
        if (ending(b))
            return -ESHUTDOWN;
        int rc = link_up(b);
        if (rc == 0) {
            if (fails)
                say(b, false, "linked to %s:%s after %u failed dials", b->host, b->port, fails);
            return 0;
        }
        if (rc == -ESHUTDOWN)
            return rc;
        if (fails++ == 0) /* once per outage, not once per attempt */
            say(b, b->no_reconnect, "gate %s:%s: %s%s", b->host, b->port,
                b->why ? b->why : strerror(-rc),
                b->no_reconnect ? "" : "; redialing");
        if (b->no_reconnect)
            return rc;
        uint64_t until = now_ms() + (uint64_t)delay;
        if (b->give_up_ms > 0) {
            uint64_t last = start + (uint64_t)b->give_up_ms;
            if (now_ms() >= last) {
                say(b, true, "no gate for %d ms: giving up", b->give_up_ms);
                return -ETIMEDOUT;
            }
            if (until > last)
                until = last; /* one last dial at the limit */
        }
        while (!ending(b) && now_ms() < until)
            (void)wait_fd(b, -1, 0, ms_until(until));
        delay = delay * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : delay * 2;
    }
}

/* CLOSED: writes what is queued, closes our side, waits briefly for the
 * gate's EOF so that nothing unread turns our close into a reset. */
static void finish(tgb_t *b)
{
    if (b->fd >= 0) {
        if (!b->broken && flush(b) == 0 && shutdown(b->fd, SHUT_WR) == 0) {
            uint64_t until = now_ms() + CLOSE_WAIT_MS;
            char buf[4096];
            while (now_ms() < until) {
                struct pollfd pf = {.fd = b->fd, .events = POLLIN};
                if (poll(&pf, 1, ms_until(until)) <= 0)
                    break;
                if (read(b->fd, buf, sizeof(buf)) <= 0)
                    break;
            }
        }
        say(b, false, "link closed (%s)", atomic_load(&b->stop_req) ? "stopped" : "drained");
        close(b->fd);
        b->fd = -1;
        b->hello_ok = false;
    }
    drop_ready(b);
    b->finished = true;
}

/* Sends DRAIN, then a PING whose PONG tells us the gate has read the DRAIN:
 * the gate handles a link's frames in order, so every job it sent before
 * comes before that PONG, and none after. */
static int start_drain(tgb_t *b)
{
    b->drain_nonce = now_ms() ^ ((uint64_t)getpid() << 32);
    b->drain_nonce %= 1000000000000000000ull; /* 18 digits: tg_wire_u64 reads it back */
    tg_wire_enc_reset(&b->scratch);
    tg_wire_begin(&b->scratch, TG_BK_DRAIN, 0);
    int rc = tg_wire_end(&b->scratch, 0);
    if (rc == 0)
        rc = queue(b, b->scratch.p, b->scratch.len, 0, 0);
    if (rc != 0)
        return rc;
    tg_wire_enc_reset(&b->scratch);
    tg_wire_begin(&b->scratch, TG_BK_PING, 0);
    tg_wire_put_u64(&b->scratch, "drain", b->drain_nonce);
    rc = tg_wire_end(&b->scratch, 0);
    if (rc == 0)
        rc = queue(b, b->scratch.p, b->scratch.len, 0, 0);
    if (rc != 0)
        return rc;
    b->drain = DRAIN_SENT;
    b->drain_at = now_ms();
    say(b, false, "draining: %llu jobs in flight", (unsigned long long)b->stats.inflight);
    return flush(b);
}

/* One turn with an empty ready queue: write, drain, wait, read. Returns 0,
 * DRAINED, -EBUSY (drained but jobs are held) or -errno (drop the link). */
static int step(tgb_t *b)
{
    int rc;
    if (b->broken)
        return b->broken;
    if ((rc = flush(b)) != 0)
        return rc;
    if (atomic_load(&b->drain_req) && b->drain == DRAIN_NONE)
        return start_drain(b);

    if (b->drain == DRAIN_BARRIER)
        return b->nheld ? -EBUSY : DRAINED;

    /* Both deadlines are judged only after a poll found nothing to read: after
     * a long handler the gate's PING, or the drain's PONG, may be waiting. */
    uint64_t silent_at = b->ping_ms ? b->last_read_ms + (uint64_t)SILENT_PINGS * b->ping_ms : 0;
    uint64_t pong_by = b->drain == DRAIN_SENT ? b->drain_at + DRAIN_WAIT_MS : 0;
    uint64_t until = silent_at;
    if (pong_by && (!until || pong_by < until))
        until = pong_by;
    rc = wait_fd(b, b->fd, POLLIN, until ? ms_until(until) : -1);
    if (rc != 0)
        return rc == 1 ? pull(b) : rc;
    uint64_t now = now_ms();
    if (silent_at && now >= silent_at) {
        say(b, true, "the gate was silent for %u ms", SILENT_PINGS * b->ping_ms);
        return -ETIMEDOUT;
    }
    if (pong_by && now >= pong_by) {
        say(b, true, "no PONG %d ms after DRAIN: closing anyway", DRAIN_WAIT_MS);
        b->drain = DRAIN_BARRIER;
    }
    return 0;
}

/* ---- lifecycle ---- */

tgb_t *tgb_connect(const tgb_options_t *o)
{
    int err = -EINVAL;
    if (!o || !o->routes || !*o->routes || o->capacity > MAX_CAPACITY || o->give_up_ms < 0) {
        errno = EINVAL;
        return NULL;
    }
    tgb_t *b = calloc(1, sizeof(*b));
    if (!b) {
        errno = ENOMEM;
        return NULL;
    }
    b->fd = -1;
    b->wake[0] = b->wake[1] = -1;
    tgb_memo_init(&b->memo);
    tg_wire_enc_init(&b->scratch);
    atomic_init(&b->drain_req, 0);
    atomic_init(&b->stop_req, 0);
    b->capacity = o->capacity ? o->capacity : DEFAULT_CAPACITY;
    b->max_frame = o->max_frame ? o->max_frame : TG_BK_MAX_BODY_DEFAULT;
    b->give_up_ms = o->give_up_ms;
    b->no_reconnect = o->no_reconnect;
    b->lz4 = !o->no_lz4;
    b->quiet = o->quiet;
    b->on_done = o->on_done;
    b->done_arg = o->done_arg;

    b->routes = dup_str(o->routes);
    if (o->name) {
        b->name = dup_str(o->name);
    } else {
        char buf[128];
        size_t first = strcspn(o->routes, ",");
        snprintf(buf, sizeof(buf), "%.*s-%ld", (int)(first < 64 ? first : 64), o->routes,
                 (long)getpid());
        b->name = dup_str(buf);
    }
    if (!b->routes || !b->name) {
        err = -ENOMEM;
        goto fail;
    }
    if ((err = split_addr(o->connect ? o->connect : DEFAULT_CONNECT, &b->host, &b->port)) != 0)
        goto fail;
    if (pipe2(b->wake, O_NONBLOCK | O_CLOEXEC) == -1) {
        err = -errno;
        goto fail;
    }
    if ((err = relink(b)) != 0)
        goto fail;
    say(b, false, "linked to %s:%s, routes %s, capacity %u", b->host, b->port, b->routes,
        b->capacity);
    return b;
fail:
    tgb_close(b);
    errno = -err;
    return NULL;
}

void tgb_close(tgb_t *b)
{
    if (!b)
        return;
    if (b->fd >= 0) {
        if (!b->broken)
            (void)flush(b);
        close(b->fd);
    }
    b->fd = -1;
    drop_ready(b);
    while (b->held) {
        tgb_job_t *job = b->held;
        held_del(b, job);
        tgb_job__free(job);
    }
    tgb_memo_fini(&b->memo);
    tg_wire_enc_fini(&b->scratch);
    bytes_free(&b->in);
    bytes_free(&b->out);
    free(b->pend);
    if (b->wake[0] >= 0)
        close(b->wake[0]);
    if (b->wake[1] >= 0)
        close(b->wake[1]);
    free(b->host);
    free(b->port);
    free(b->name);
    free(b->routes);
    free(b);
}

/* ---- receiving ---- */

int tgb_next(tgb_t *b, tgb_job_t **jobp)
{
    *jobp = NULL;
    for (;;) {
        if (b->finished)
            return -ESHUTDOWN;
        if (atomic_load(&b->stop_req)) {
            finish(b);
            return -ESHUTDOWN;
        }
        if (b->ready) {
            tgb_job_t *job = b->ready;
            b->ready = job->next;
            if (!b->ready)
                b->ready_tail = NULL;
            held_add(b, job);
            b->stats.jobs++;
            *jobp = job;
            return 0;
        }
        if (b->fd < 0) {
            if (atomic_load(&b->drain_req)) {
                finish(b); /* nothing on a link to finish */
                return -ESHUTDOWN;
            }
            int rc = relink(b);
            if (rc == -ESHUTDOWN)
                continue; /* stop or drain: handled above */
            if (rc != 0)
                return rc;
            continue;
        }
        int rc = step(b);
        if (rc == DRAINED) {
            finish(b);
            return -ESHUTDOWN;
        }
        if (rc == -EBUSY)
            return rc;
        if (rc < 0) {
            drop_link(b, rc);
            if (b->no_reconnect)
                return -ECONNRESET;
        }
    }
}

int tgb_run(tgb_t *b, tgb_handler_cb *h, void *arg)
{
    tgb_job_t *job;
    int rc;
    while ((rc = tgb_next(b, &job)) == 0) {
        b->current = job;
        h(b, job, arg);
        if (b->current == job &&
            tgb_error(b, job, 500, "internal", "the handler did not reply") != 0) {
            /* Not even an ERROR fits: forget the job; the gate gives it up at
             * its deadline, or resubmits it after the link drops. */
            say(b, true, "job %llu left without an answer", (unsigned long long)tgb_job_id(job));
            tgb_memo_del(&b->memo, job->id);
            held_del(b, job);
            tgb_job__free(job);
            b->stats.inflight--;
        }
        b->current = NULL;
    }
    return rc == -ESHUTDOWN ? 0 : rc;
}

/* ---- answering ---- */

int tgb_reply(tgb_t *b, tgb_job_t *job, const tgb_reply_t *r)
{
    int rc = tgb_job__reply(&b->scratch, job->id, r, send_limit(b), lz4_min(b));
    if (rc != 0)
        return rc;
    settle(b, job);
    return 0;
}

int tgb_reply_body(tgb_t *b, tgb_job_t *job, int status, const char *content_type,
                   const void *body, size_t len)
{
    tgb_header_t ct = {"content-type", content_type};
    tgb_reply_t r = {.status = status, .body = body ? body : "", .body_len = body ? len : 0};
    if (content_type) {
        r.headers = &ct;
        r.nheaders = 1;
    }
    return tgb_reply(b, job, &r);
}

int tgb_reply_data(tgb_t *b, tgb_job_t *job, int status, const char *json, size_t len)
{
    tgb_reply_t r = {.status = status, .data = json ? json : "null", .data_len = json ? len : 4};
    return tgb_reply(b, job, &r);
}

int tgb_error(tgb_t *b, tgb_job_t *job, int status, const char *code, const char *message)
{
    int rc =
        tgb_job__error(&b->scratch, job->id, status, code, message, send_limit(b), lz4_min(b));
    if (rc != 0)
        return rc;
    settle(b, job);
    return 0;
}

/* ---- backend-initiated frames ---- */

/* PUSH to one target: <key> = <target>, data = <data>. */
static int push(tgb_t *b, const char *key, const char *target, const void *data, size_t len)
{
    if (!target || (!data && len))
        return -EINVAL;
    if (b->fd < 0 || !b->hello_ok)
        return -ENOTCONN;
    tg_wire_enc_reset(&b->scratch);
    tg_wire_begin(&b->scratch, TG_BK_PUSH, 0);
    tg_wire_put_str(&b->scratch, key, target);
    tg_wire_put(&b->scratch, TG_BK_K_DATA, data ? data : "", len);
    int rc = tgb_job__end(&b->scratch, send_limit(b), lz4_min(b));
    return rc ? rc : queue_scratch(b);
}

int tgb_push_conn(tgb_t *b, uint64_t conn, const void *data, size_t len)
{
    char id[24];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)conn);
    return conn ? push(b, TG_BK_K_CONN, id, data, len) : -EINVAL;
}

int tgb_push_user(tgb_t *b, const char *user, const void *data, size_t len)
{
    return push(b, TG_BK_K_USER, user, data, len);
}

int tgb_push_channel(tgb_t *b, const char *channel, const void *data, size_t len)
{
    return push(b, TG_BK_K_CHANNEL, channel, data, len);
}

/* A frame about client connection <conn>, with <key> = <val> when <val>. */
static int about_conn(tgb_t *b, uint8_t type, uint64_t conn, const char *key, const char *val)
{
    if (conn == 0)
        return -EINVAL;
    if (b->fd < 0 || !b->hello_ok)
        return -ENOTCONN;
    tg_wire_enc_reset(&b->scratch);
    tg_wire_begin(&b->scratch, type, 0);
    tg_wire_put_u64(&b->scratch, TG_BK_K_CONN, conn);
    if (val)
        tg_wire_put_str(&b->scratch, key, val);
    int rc = tgb_job__end(&b->scratch, send_limit(b), lz4_min(b));
    return rc ? rc : queue_scratch(b);
}

int tgb_subscribe(tgb_t *b, uint64_t conn, const char *channel)
{
    return channel && *channel ? about_conn(b, TG_BK_SUBSCRIBE, conn, TG_BK_K_CHANNEL, channel)
                               : -EINVAL;
}

int tgb_unsubscribe(tgb_t *b, uint64_t conn, const char *channel)
{
    return channel && *channel ? about_conn(b, TG_BK_UNSUBSCRIBE, conn, TG_BK_K_CHANNEL, channel)
                               : -EINVAL;
}

int tgb_kick(tgb_t *b, uint64_t conn, const char *message)
{
    return about_conn(b, TG_BK_KICK, conn, TG_BK_K_MESSAGE, message);
}

int tgb_flush(tgb_t *b)
{
    if (b->fd < 0 || !b->hello_ok)
        return -ENOTCONN;
    if (b->broken)
        return b->broken;
    int rc = flush(b);
    if (rc != 0)
        b->broken = rc;
    return rc;
}

/* ---- ending ---- */

void tgb_drain(tgb_t *b)
{
    atomic_store(&b->drain_req, 1);
    wake(b);
}

void tgb_stop(tgb_t *b)
{
    atomic_store(&b->stop_req, 1);
    wake(b);
}

/* ---- introspection ---- */

size_t tgb_remembered(const tgb_t *b)
{
    return tgb_memo_answered(&b->memo);
}

void tgb_stats(const tgb_t *b, tgb_stats_t *s)
{
    *s = b->stats;
    s->remembered = tgb_memo_answered(&b->memo);
    s->remembered_bytes = b->memo.bytes;
}

bool tgb_connected(const tgb_t *b)
{
    return b->fd >= 0 && b->hello_ok;
}
