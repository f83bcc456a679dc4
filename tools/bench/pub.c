/* tools/bench/pub.c - the publisher thread: --count messages at --rate per second (0: as fast
 * as the server answers), pipelined over --pub-conns keep-alive connections, on its own epoll
 * loop.
 *
 * Channel k always goes over connection k % P, so one channel's messages reach the server in
 * the order of their sequence numbers (responses come back in request order, RFC 9112 9.3.2;
 * each connection keeps a FIFO of what it waits for). A 2xx answer counts as published,
 * anything else (or no answer by the deadline, or a connection lost with requests on it) as a
 * publish error of that (channel, seq). A response that says "Connection: close" is the
 * server's last on that connection: the requests pipelined behind it were not processed (RFC
 * 9112 9.6), so they are sent again on a new connection, and that connection no longer
 * pipelines (Pushpin's publish endpoint closes after every answer).
 *
 * Owns: its connections and buffers. Writes B.issued, B.failed, B.published, B.pub_errors and
 * the publish times, then sets B.pub_done (release): the main thread reads them after that. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define PUB_WINDOW_PACED 100000 /* in flight per connection when paced: the schedule wins */
#define PUB_WINDOW_FAST  64     /* --rate 0: enough to keep the server busy */

typedef struct inflight {
    uint32_t ch;
    uint64_t seq;
} inflight_t;

typedef struct pconn {
    int         fd;
    int         idx;
    bool        connecting;
    char       *out;       /* requests not yet written: [osent, olen) */
    size_t      olen, osent, ocap;
    char       *in;        /* response bytes not yet parsed */
    size_t      ilen;
    bool        in_body;   /* the head of the current response is parsed */
    bool        chunked, close_after;
    bool        one_at_a_time; /* the server closes after each answer: no pipelining */
    int         status;
    int64_t     body_left;
    chunked_t   ck;
    inflight_t *q;         /* FIFO ring of requests waiting for their answer */
    size_t      qhead, qn, qcap;
} pconn_t;

#define PUB_IN_CAP 65536

static pconn_t *P;
static int      pep = -1;
static char    *body, *payload, *esc1, *esc2;
static size_t   body_cap;

int pub_init(void)
{
    B.issued = calloc((size_t)B.channels, sizeof(uint64_t));
    B.failed = calloc((size_t)B.channels, sizeof(uint64_t));
    P = calloc((size_t)B.pub_conns, sizeof(*P));
    size_t sz = (size_t)B.size + 256;
    body_cap = 2 * (2 * sz + 2 * (sizeof(B.pp_prefix) + sizeof(B.pp_suffix))) + 512;
    body = malloc(body_cap);
    payload = malloc(sz);
    esc1 = malloc(2 * sz);
    esc2 = malloc(2 * (sz + sizeof(B.pp_prefix) + sizeof(B.pp_suffix)));
    pep = epoll_create1(EPOLL_CLOEXEC);
    if (!B.issued || !B.failed || !P || !body || !payload || !esc1 || !esc2 || pep == -1)
        return -ENOMEM;
    for (int k = 0; k < B.pub_conns; k++) {
        P[k].fd = -1;
        P[k].idx = k;
        P[k].qcap = 256;
        P[k].q = malloc(P[k].qcap * sizeof(inflight_t));
        P[k].in = malloc(PUB_IN_CAP);
        if (!P[k].q || !P[k].in)
            return -ENOMEM;
    }
    return 0;
}

static void fail_one(uint32_t ch, const char *what, const char *data, size_t n)
{
    B.failed[ch]++;
    B.pub_errors++;
    bench_error(E_PUB, what, data, n);
}

/* Drops the connection: whatever it still waits for failed. Dials again unless <final>. */
static void pc_reset(pconn_t *c, const char *why, bool final)
{
    for (; c->qn; c->qn--, c->qhead = (c->qhead + 1) % c->qcap)
        fail_one(c->q[c->qhead].ch, why, NULL, 0);
    if (c->fd != -1)
        close(c->fd);
    c->fd = -1;
    c->olen = c->osent = c->ilen = 0;
    c->in_body = false;
    if (final)
        return;
    url_t u;
    const char *uwhy;
    char url[2048];
    if (bench_subst(B.pub_tpl, B.prefix, 0, url, sizeof(url)) != 0 ||
        bench_url_parse(url, &u, &uwhy) != 0)
        return;
    int fd = bench_dial(&u, c->idx);
    if (fd < 0) {
        bench_error(E_PUB, "publisher connect failed", strerror(-fd), strlen(strerror(-fd)));
        return;
    }
    c->fd = fd;
    c->connecting = true;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = (uint32_t)c->idx };
    epoll_ctl(pep, EPOLL_CTL_ADD, fd, &ev);
}

static int pc_publish(pconn_t *c, uint32_t ch, uint64_t seq);

/* The server closed after an answer: what it did not answer goes again, in order, on a new
 * connection. */
static void pc_resend(pconn_t *c)
{
    size_t n = c->qn;
    inflight_t *again = n ? malloc(n * sizeof(*again)) : NULL;
    if (n && !again) {
        pc_reset(c, "out of memory", false);
        return;
    }
    for (size_t k = 0; k < n; k++)
        again[k] = c->q[(c->qhead + k) % c->qcap];
    c->qn = 0;
    c->one_at_a_time = true;
    pc_reset(c, "", false);
    for (size_t k = 0; k < n; k++)
        if (pc_publish(c, again[k].ch, again[k].seq) != 0)
            fail_one(again[k].ch, "could not build a publish request", NULL, 0);
    free(again);
}

static void pc_want_out(pconn_t *c, bool on)
{
    struct epoll_event ev = { .events = EPOLLIN | (on ? EPOLLOUT : 0u),
                              .data.u32 = (uint32_t)c->idx };
    epoll_ctl(pep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void pc_flush(pconn_t *c)
{
    if (c->fd == -1 || c->connecting)
        return;
    while (c->osent < c->olen) {
        ssize_t w = write(c->fd, c->out + c->osent, c->olen - c->osent);
        if (w == -1) {
            if (errno == EAGAIN) {
                pc_want_out(c, true);
                return;
            }
            if (errno == EINTR)
                continue;
            pc_reset(c, "publisher write failed", false);
            return;
        }
        c->osent += (size_t)w;
    }
    c->olen = c->osent = 0;
}

/* JSON string contents of <p>/<n> into <out>. */
static size_t json_escape(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t k = 0; k < n; k++) {
        unsigned char ch = (unsigned char)p[k];
        if (ch == '"' || ch == '\\') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (ch == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else if (ch < ' ') {
            o += (size_t)sprintf(out + o, "\\u%04x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    return o;
}

/* Queues the request publishing <seq> on channel <ch>. Returns 0 or -ENOMEM. */
static int pc_publish(pconn_t *c, uint32_t ch, uint64_t seq)
{
    char name[160], url[2048];
    url_t u;
    const char *why;
    chan_name((int)ch, name, sizeof(name));
    if (bench_subst(B.pub_tpl, name, (int)seq, url, sizeof(url)) != 0 ||
        bench_url_parse(url, &u, &why) != 0)
        return -EINVAL;
    /* The payload: {"seq":N,"t":T,"p":"xxx..."} padded to --size bytes. */
    int pn = snprintf(payload, 96, "{\"seq\":%llu,\"t\":%llu,\"p\":\"", (unsigned long long)seq,
                      (unsigned long long)now_ns());
    size_t plen = (size_t)pn;
    while (plen + 2 < (size_t)B.size)
        payload[plen++] = 'x';
    payload[plen++] = '"';
    payload[plen++] = '}';
    const char *bp = payload;
    size_t blen = plen;
    if (B.pub_format == PUB_PUSHPIN) {
        size_t e1 = json_escape(payload, plen, esc1), e2 = 0;
        e2 += json_escape(B.pp_prefix, strlen(B.pp_prefix), esc2);
        e2 += json_escape(payload, plen, esc2 + e2);
        e2 += json_escape(B.pp_suffix, strlen(B.pp_suffix), esc2 + e2);
        int n = snprintf(body, body_cap,
                         "{\"items\":[{\"channel\":\"%s\",\"formats\":{\"ws-message\":{\"content\":"
                         "\"%.*s\"},\"http-stream\":{\"content\":\"%.*s\"}}}]}",
                         name, (int)e1, esc1, (int)e2, esc2);
        if (n < 0 || (size_t)n >= body_cap)
            return -EINVAL;
        bp = body;
        blen = (size_t)n;
    }
    char head[2600];
    int hn = snprintf(head, sizeof(head),
                      "POST %s HTTP/1.1\r\nHost: %s:%u\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      u.path, u.host, u.port, blen);
    if (hn < 0 || (size_t)hn >= sizeof(head))
        return -EINVAL;
    size_t need = c->olen + (size_t)hn + blen;
    if (need > c->ocap) {
        size_t cap = c->ocap ? c->ocap : 65536;
        while (cap < need)
            cap *= 2;
        char *g = realloc(c->out, cap);
        if (!g)
            return -ENOMEM;
        c->out = g;
        c->ocap = cap;
    }
    memcpy(c->out + c->olen, head, (size_t)hn);
    memcpy(c->out + c->olen + (size_t)hn, bp, blen);
    c->olen = need;
    if (c->qn == c->qcap) {
        inflight_t *g = malloc(2 * c->qcap * sizeof(*g));
        if (!g)
            return -ENOMEM;
        for (size_t k = 0; k < c->qn; k++)
            g[k] = c->q[(c->qhead + k) % c->qcap];
        free(c->q);
        c->q = g;
        c->qhead = 0;
        c->qcap *= 2;
    }
    c->q[(c->qhead + c->qn++) % c->qcap] = (inflight_t){ ch, seq };
    return 0;
}

/* One whole response answered the oldest request. */
static void pc_answered(pconn_t *c, const char *head, size_t hn)
{
    if (!c->qn) {
        bench_error(E_PUB, "a response to no request", head, hn);
        return;
    }
    inflight_t r = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qn--;
    if (c->status >= 200 && c->status < 300)
        B.published++;
    else
        fail_one(r.ch, "publish not answered 2xx", head, hn);
}

static void pc_read(pconn_t *c)
{
    ssize_t r = read(c->fd, c->in + c->ilen, PUB_IN_CAP - c->ilen);
    if (r == -1 && (errno == EAGAIN || errno == EINTR))
        return;
    if (r <= 0) {
        pc_reset(c, "the server closed a publishing connection", false);
        return;
    }
    c->ilen += (size_t)r;
    for (;;) {
        if (!c->in_body) {
            http_head_t h;
            const char *why = NULL;
            int hl = http_parse_head(c->in, c->ilen, &h, &why);
            if (hl == 0 && c->ilen == PUB_IN_CAP)
                hl = -1, why = "publish response head too long";
            if (hl == 0)
                return;
            if (hl < 0) {
                bench_error(E_PUB, why, c->in, c->ilen < 200 ? c->ilen : 200);
                pc_reset(c, "malformed publish response", false);
                return;
            }
            c->status = h.status;
            c->chunked = h.chunked;
            c->close_after = h.close;
            c->body_left = h.clen;
            memset(&c->ck, 0, sizeof(c->ck));
            if (!h.chunked && h.clen < 0) {
                if (h.status == 204 || h.status == 304 || h.status < 200) {
                    c->body_left = 0;
                } else {
                    bench_error(E_PUB, "publish response without a length", c->in, (size_t)hl);
                    pc_reset(c, "publish response without a length", false);
                    return;
                }
            }
            pc_answered(c, c->in, (size_t)hl);
            memmove(c->in, c->in + hl, c->ilen - (size_t)hl);
            c->ilen -= (size_t)hl;
            c->in_body = true;
        }
        /* The body is read and dropped. */
        int end;
        if (c->chunked) {
            size_t dlen = 0, rpos = 0;
            end = chunked_decode(&c->ck, c->in, &dlen, &rpos, c->ilen);
            if (end < 0) {
                pc_reset(c, "malformed chunked publish response", false);
                return;
            }
            memmove(c->in, c->in + rpos, c->ilen - rpos);
            c->ilen -= rpos;
        } else {
            size_t take = c->ilen < (uint64_t)c->body_left ? c->ilen : (size_t)c->body_left;
            memmove(c->in, c->in + take, c->ilen - take);
            c->ilen -= take;
            c->body_left -= (int64_t)take;
            end = c->body_left == 0;
        }
        if (!end)
            return;
        c->in_body = false;
        if (c->close_after) {
            pc_resend(c);
            return;
        }
    }
}

static void on_pub_event(pconn_t *c, uint32_t events)
{
    if (c->fd == -1)
        return;
    if (c->connecting) {
        int err = 0;
        socklen_t el = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            bench_error(E_PUB, "publisher connect failed", strerror(err), strlen(strerror(err)));
            pc_reset(c, "publisher connect failed", true); /* dialled again when needed */
            return;
        }
        c->connecting = false;
        pc_want_out(c, c->olen > c->osent);
    }
    if (events & EPOLLOUT) {
        pc_want_out(c, false);
        pc_flush(c);
    }
    if (c->fd != -1 && events & (EPOLLIN | EPOLLHUP | EPOLLERR))
        pc_read(c);
}

static uint32_t pick_channel(uint64_t i)
{
    if (B.channels <= 1)
        return 0;
    if (B.pub_random)
        return (uint32_t)(bench_rand() % (uint64_t)B.channels);
    return (uint32_t)(i % (uint64_t)B.channels);
}

void *pub_main(void *arg)
{
    (void)arg;
    for (int k = 0; k < B.pub_conns; k++)
        pc_reset(&P[k], "", false);
    uint64_t start = now_ns(), i = 0;
    uint64_t gap = B.rate > 0 ? 1000000000ull / (uint64_t)B.rate : 0;
    size_t window = B.rate > 0 ? PUB_WINDOW_PACED : PUB_WINDOW_FAST;
    if (B.pub_format == PUB_PUSHPIN)
        window = 1; /* Pushpin's publish endpoint reads pipelined requests as an overlong body */
    int64_t pick = -1;
    B.t_first_ns = start;
    atomic_store_explicit(&B.pub_started, true, memory_order_release);
    struct epoll_event evs[64];
    for (;;) {
        uint64_t now = now_ns();
        if (atomic_load_explicit(&B.pub_stop, memory_order_acquire) || now > B.pub_deadline_ns)
            break;
        while (i < (uint64_t)B.count && (!gap || start + i * gap <= now)) {
            if (pick < 0)
                pick = pick_channel(i);
            pconn_t *c = &P[(uint32_t)pick % (uint32_t)B.pub_conns];
            if (c->fd == -1) {
                pc_reset(c, "", false); /* dial again; this message waits for it */
                break;
            }
            if (c->qn >= (c->one_at_a_time ? 1 : window))
                break;
            uint32_t ch = (uint32_t)pick;
            if (pc_publish(c, ch, B.issued[ch]) != 0) {
                bench_error(E_PUB, "could not build a publish request", NULL, 0);
                break;
            }
            B.issued[ch]++;
            B.pub_sent++;
            B.t_last_ns = now_ns();
            pick = -1;
            i++;
        }
        size_t waiting = 0;
        for (int k = 0; k < B.pub_conns; k++) {
            pc_flush(&P[k]);
            waiting += P[k].qn;
        }
        if (i >= (uint64_t)B.count && !waiting)
            break;
        int ms = 100;
        if (gap && i < (uint64_t)B.count) {
            uint64_t due = start + i * gap;
            ms = due > now ? (int)((due - now + 999999) / 1000000) : 0;
            if (ms > 100)
                ms = 100;
        }
        int n = epoll_wait(pep, evs, 64, ms);
        for (int k = 0; k < n; k++)
            on_pub_event(&P[evs[k].data.u32], evs[k].events);
    }
    for (int k = 0; k < B.pub_conns; k++)
        pc_reset(&P[k], "publish unanswered at the deadline", true);
    atomic_store_explicit(&B.pub_done, true, memory_order_release);
    return NULL;
}
