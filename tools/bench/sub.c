/* tools/bench/sub.c - the subscribers, on the main thread's epoll loop.
 *
 *   IDLE --dial--> CONNECTING --connected, request sent--> HEAD --101 / 200--> OPEN
 *                                                            |  (poll) 200 --> BODY --end--> HEAD
 *                                                            |  (poll) 204/304/408 --> HEAD again
 *   any state --malformed input, server close, churn--> closed (fd -1): DONE, or IDLE to reconnect
 *
 * A subscriber holds no buffer while idle: input that does not end on a message boundary is kept
 * in <pend> (malloc'd, freed as soon as it is consumed); everything else is parsed straight out of
 * one shared scratch buffer. Buffer layout while parsing a body: [0, dlen) decoded and not yet
 * consumed, [rpos, len) raw, not yet decoded (chunked bodies shrink in place).
 *
 * Each message's text is searched for "seq":N and "t":T (the publisher's members), wherever
 * the server's envelope puts them; sequence numbers are per channel. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"
#include "net/ws.h"

enum { S_IDLE, S_CONNECTING, S_HEAD, S_OPEN, S_BODY, S_DONE };

typedef struct sub {
    int       fd;
    uint32_t  gen;          /* bumped at every close: stale epoll events are ignored */
    uint8_t   state;
    bool      up;           /* this incarnation reached OPEN (or sent its first poll) */
    bool      churned;      /* a reconnected incarnation: counted apart, no loss while away */
    bool      base;         /* <next> is known */
    bool      close_after;  /* poll: the server said Connection: close */
    bool      chunked;      /* body framing of the response being read */
    bool      frag_text;
    int64_t   body_left;    /* identity body bytes left; -1 = until close */
    chunked_t ck;
    uint32_t  ch;
    uint64_t  next;         /* sequence number expected next */
    uint64_t  t_dial;
    char     *pend;         /* unparsed input, NULL when none */
    uint32_t  plen, pdlen;  /* its length and its decoded part */
    char     *frag;         /* a fragmented WebSocket message so far */
    uint32_t  frag_len;
    char      key[25];      /* Sec-WebSocket-Key of this incarnation */
    char     *pos;          /* poll: since= (tidegate) or "Last-Modified\nEtag" (nchan) */
    char      last_pos[32]; /* --resume: the last message's "pos" */
} sub_t;

static sub_t  *S;
static int     ep = -1;
static char   *scratch;
static char   *msgbuf;      /* an SSE event's data lines, joined */
static int     next_dial;   /* first subscriber not yet dialled */
static int     inflight, nup, npending;
static uint64_t next_dial_ns;
static bool     debug_gaps;

const char *chan_name(int k, char *buf, size_t cap)
{
    if (B.channels <= 1)
        snprintf(buf, cap, "%s", B.prefix);
    else
        snprintf(buf, cap, "%s%d", B.prefix, k);
    return buf;
}

int subs_init(void)
{
    S = calloc((size_t)B.subs, sizeof(*S));
    scratch = malloc(BENCH_SCRATCH + 1);
    msgbuf = malloc(BENCH_PENDING_MAX + 2 * BENCH_SCRATCH);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (!S || !scratch || !msgbuf || ep == -1)
        return -ENOMEM;
    for (int i = 0; i < B.subs; i++) {
        S[i].fd = -1;
        S[i].ch = (uint32_t)(i % B.channels);
    }
    npending = B.subs;
    debug_gaps = getenv("BENCH_DEBUG") != NULL;
    return 0;
}

static tally_t *tally_of(sub_t *s)
{
    return s->churned ? &B.churn : &B.main;
}

/* Ends this incarnation: the fd, its buffers. <again>: dial anew (churn, poll reconnect). */
static void sub_close(sub_t *s, bool again)
{
    if (s->fd != -1)
        close(s->fd);
    s->fd = -1;
    s->gen++;
    free(s->pend);
    s->pend = NULL;
    s->plen = s->pdlen = 0;
    free(s->frag);
    s->frag = NULL;
    s->frag_len = 0;
    if (!s->up && (s->state == S_CONNECTING || s->state == S_HEAD))
        inflight--; /* a reconnecting long-poll subscriber stays up */
    s->state = again ? S_IDLE : S_DONE;
}

/* Ends <s> for good: a connect error before it was up, a closed-early subscriber after. */
static void sub_fail(sub_t *s, enum err_kind kind, const char *what, const char *data, size_t n)
{
    bench_error(kind, what, data, n);
    if (!s->up) {
        B.connect_errors++;
        if (!s->churned)
            npending--;
    } else {
        B.closed_early++;
        nup--;
    }
    sub_close(s, false);
}

static void record(sub_t *s, uint64_t seq, uint64_t t)
{
    uint64_t now = now_ns();
    hist_add(&B.hist, now > t ? (now - t) / 1000 : 0);
    B.t_last_rx_ns = now;
    tally_t *c = tally_of(s);
    if (!s->base) { /* a reconnected subscriber starts from what it gets first */
        s->base = true;
        s->next = seq;
    }
    if (seq == s->next) {
        c->got++;
        s->next++;
    } else if (seq > s->next) {
        c->lost += seq - s->next;
        if (debug_gaps) /* BENCH_DEBUG=1: each gap on stderr */
            fprintf(stderr, "gap: subscriber %ld channel %u expected %llu got %llu\n",
                    (long)(s - S), s->ch, (unsigned long long)s->next, (unsigned long long)seq);
        c->got++;
        s->next = seq + 1;
    } else if (seq + 1 == s->next) {
        c->dup++;
    } else {
        c->disorder++;
    }
}

static bool parse_u64(const char *p, const char *end, uint64_t *out)
{
    uint64_t x = 0;
    const char *q = p;
    while (q < end && *q == ' ')
        q++;
    const char *d = q;
    while (q < end && *q >= '0' && *q <= '9' && q - d < 20)
        x = x * 10 + (uint64_t)(*q++ - '0');
    *out = x;
    return q > d;
}

/* Every "seq":N in <p>/<n> with the "t":T after it (before the next "seq") is one message. */
static void record_all(sub_t *s, const char *p, size_t n)
{
    const char *end = p + n, *q = memmem(p, n, "\"seq\":", 6);
    if (!q) {
        B.other_msgs++; /* a notice: tidegate's sub, an Nchan or Pushpin keep-alive */
        return;
    }
    if (B.resume) { /* the envelope's position, for a resume after a close */
        const char *pos = NULL;
        for (const char *x = p; (x = memmem(x, (size_t)(end - x), "\"pos\":\"", 7)); x += 7)
            pos = x + 7;
        const char *e = pos ? memchr(pos, '"', (size_t)(end - pos)) : NULL;
        if (e && (size_t)(e - pos) < sizeof(s->last_pos)) {
            memcpy(s->last_pos, pos, (size_t)(e - pos));
            s->last_pos[e - pos] = '\0';
        }
    }
    while (q) {
        q += 6;
        const char *nq = memmem(q, (size_t)(end - q), "\"seq\":", 6);
        const char *lim = nq ? nq : end, *t = memmem(q, (size_t)(lim - q), "\"t\":", 4);
        uint64_t seq, ts;
        if (parse_u64(q, lim, &seq) && t && parse_u64(t + 4, lim, &ts))
            record(s, seq, ts);
        else
            bench_error(E_BODY, "a message with \"seq\" but no number or \"t\"", q - 6,
                        (size_t)(lim - q + 6) < 200 ? (size_t)(lim - q + 6) : 200);
        q = nq;
    }
}

static int write_all(sub_t *s, const void *p, size_t n)
{
    ssize_t w = write(s->fd, p, n);
    return w == (ssize_t)n ? 0 : -1; /* a fresh socket's buffer takes a request whole */
}

static int send_request(sub_t *s, int idx)
{
    char ch[160], url[2048], req[4096];
    url_t u;
    const char *why;
    chan_name((int)s->ch, ch, sizeof(ch));
    if (bench_subst(B.sub_tpl, ch, idx, url, sizeof(url)) != 0 || bench_url_parse(url, &u, &why))
        return -1;
    int n;
    if (B.transport == T_WS) {
        uint8_t raw[16];
        for (int k = 0; k < 16; k += 8) {
            uint64_t r = bench_rand();
            memcpy(raw + k, &r, 8);
        }
        bench_base64(raw, 16, s->key);
        const char *sep = strchr(u.path, '?') ? "&" : "?";
        n = snprintf(req, sizeof(req),
                     "GET %s%s%s%s HTTP/1.1\r\nHost: %s:%u\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13"
                     "\r\n\r\n",
                     u.path, s->last_pos[0] ? sep : "", s->last_pos[0] ? "from=" : "",
                     s->last_pos, u.host, u.port, s->key);
    } else if (B.transport == T_SSE) {
        n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: %s:%u\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                     u.path, u.host, u.port);
    } else if (B.transport == T_STREAM) {
        n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%u\r\n\r\n", u.path, u.host,
                     u.port);
    } else if (B.poll_style == POLL_TIDEGATE) {
        /* The first poll asks from "0:0", a position of no epoch: tidegate answers
         * at once with a gap to where the channel stands, so the subscriber has
         * a position before the first message is published (a poll without
         * one would only see what comes after its subscription is live). */
        const char *sep = strchr(u.path, '?') ? "&" : "?";
        n = snprintf(req, sizeof(req), "GET %s%ssince=%s HTTP/1.1\r\nHost: %s:%u\r\n\r\n",
                     u.path, sep, s->pos ? s->pos : "0:0", u.host, u.port);
    } else {
        /* Nchan: the previous answer's Last-Modified and Etag say where we are. */
        const char *lm = s->pos ? s->pos : NULL, *nl = lm ? strchr(lm, '\n') : NULL;
        n = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: %s:%u\r\n", u.path, u.host,
                     u.port);
        if (nl && n > 0 && (size_t)n < sizeof(req))
            n += snprintf(req + n, sizeof(req) - (size_t)n,
                          "If-Modified-Since: %.*s\r\nIf-None-Match: %s\r\n", (int)(nl - lm), lm,
                          nl + 1);
        if (n > 0 && (size_t)n < sizeof(req))
            n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n");
    }
    if (n <= 0 || (size_t)n >= sizeof(req))
        return -1;
    return write_all(s, req, (size_t)n);
}

static void mark_up(sub_t *s)
{
    if (s->up)
        return;
    s->up = true;
    inflight--;
    nup++;
    if (!s->churned) {
        B.connected++;
        npending--;
    }
}

static void dial(int i)
{
    sub_t *s = &S[i];
    char ch[160], url[2048];
    url_t u;
    const char *why = "template";
    chan_name((int)s->ch, ch, sizeof(ch));
    s->state = S_CONNECTING;
    s->t_dial = now_ns();
    if (!s->up)
        inflight++; /* a long-poll subscriber dialling again stays up */
    if (bench_subst(B.sub_tpl, ch, i, url, sizeof(url)) != 0 || bench_url_parse(url, &u, &why)) {
        sub_fail(s, E_CONNECT, why, url, strlen(url));
        return;
    }
    int fd = bench_dial(&u, i + (int)s->gen);
    if (fd < 0) {
        s->fd = -1;
        sub_fail(s, E_CONNECT, strerror(-fd), NULL, 0);
        return;
    }
    s->fd = fd;
    struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN,
                              .data.u64 = (uint64_t)(uint32_t)i | (uint64_t)s->gen << 32 };
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == -1)
        sub_fail(s, E_CONNECT, "epoll_ctl", NULL, 0);
}

void subs_start_connects(void)
{
    uint64_t now = now_ns();
    while (next_dial < B.subs && inflight < B.max_inflight) {
        if (B.connect_rate > 0) {
            if (now < next_dial_ns)
                break;
            next_dial_ns = (next_dial_ns ? next_dial_ns : now) + (uint64_t)(1e9 / B.connect_rate);
        }
        sub_t *s = &S[next_dial];
        s->base = true; /* first incarnations expect every message from seq 0 */
        dial(next_dial++);
    }
}

int subs_pending(void)
{
    return npending;
}

int subs_up(void)
{
    return nup;
}

/* Churn: closes one random subscriber that is up and dials it again at once. */
void subs_churn_one(void)
{
    for (int tries = 0; tries < 64; tries++) {
        int i = (int)(bench_rand() % (uint64_t)B.subs);
        sub_t *s = &S[i];
        if (s->state == S_DONE || s->state == S_IDLE || !s->up)
            continue;
        nup--;
        sub_close(s, true);
        free(s->pos);
        s->pos = NULL;
        s->up = false;
        s->churned = true;
        s->base = false; /* starts from whatever it gets first */
        s->next = 0;
        B.churned++;
        dial(i);
        return;
    }
}

/* ---- WebSocket ---- */

static void ws_send(sub_t *s, uint8_t op, const uint8_t *p, size_t n)
{
    uint8_t f[2 + 4 + TG_WS_CONTROL_MAX];
    uint64_t r = bench_rand();
    f[0] = 0x80 | op;
    f[1] = 0x80 | (uint8_t)n; /* clients mask every frame (RFC 6455 5.3) */
    memcpy(f + 2, &r, 4);
    for (size_t k = 0; k < n; k++)
        f[6 + k] = p[k] ^ f[2 + k % 4];
    (void)write_all(s, f, 6 + n);
}

/* Whole frames out of <b>[*rpos, len). Returns -1 once <s> is closed. */
static int ws_frames(sub_t *s, char *b, size_t *rpos, size_t len)
{
    for (;;) {
        const uint8_t *f = (const uint8_t *)b + *rpos;
        size_t avail = len - *rpos;
        if (avail < 2)
            return 0;
        uint8_t op = f[0] & 0x0f;
        bool fin = f[0] & 0x80;
        uint64_t n = f[1] & 0x7f;
        size_t hl = 2;
        if (f[0] & 0x70 || f[1] & 0x80 || (op > 2 && op < 8) || op > 10 ||
            (op >= 8 && (!fin || n > TG_WS_CONTROL_MAX))) {
            sub_fail(s, E_FRAME, "reserved bits, masked server frame, bad opcode or control frame",
                     (const char *)f, avail < 16 ? avail : 16);
            return -1;
        }
        if (n == 126) {
            if (avail < 4)
                return 0;
            n = (uint64_t)f[2] << 8 | f[3];
            hl = 4;
        } else if (n == 127) {
            if (avail < 10)
                return 0;
            n = 0;
            for (int k = 0; k < 8; k++)
                n = n << 8 | f[2 + k];
            hl = 10;
        }
        if (n > BENCH_PENDING_MAX / 2) {
            sub_fail(s, E_FRAME, "frame larger than the tool's limit", (const char *)f, hl);
            return -1;
        }
        if (avail < hl + n)
            return 0;
        const char *pl = (const char *)f + hl;
        *rpos += hl + (size_t)n;
        if (op == TG_WS_OP_PING) {
            ws_send(s, TG_WS_OP_PONG, (const uint8_t *)pl, (size_t)n);
        } else if (op == TG_WS_OP_PONG) {
            /* unasked pongs are allowed (RFC 6455 5.5.3) */
        } else if (op == TG_WS_OP_CLOSE) {
            if (n == 1) {
                sub_fail(s, E_FRAME, "a close frame of one byte", pl, 1);
                return -1;
            }
            ws_send(s, TG_WS_OP_CLOSE, (const uint8_t *)pl, n >= 2 ? 2 : 0);
            if (B.resume && s->last_pos[0]) {
                /* Cut (a slow consumer, say): come back for what came after. */
                B.resumed++;
                sub_close(s, true);
                dial((int)(s - S));
                return -1;
            }
            sub_fail(s, E_CLOSED, "the server sent a WebSocket close", pl, (size_t)n);
            return -1;
        } else if (op == TG_WS_OP_CONT) {
            if (!s->frag) {
                sub_fail(s, E_FRAME, "continuation without a first fragment", NULL, 0);
                return -1;
            }
            if (s->frag_len + n > BENCH_PENDING_MAX) {
                sub_fail(s, E_FRAME, "fragmented message too large", NULL, 0);
                return -1;
            }
            char *g = realloc(s->frag, s->frag_len + (size_t)n);
            if (!g) {
                sub_fail(s, E_FRAME, "out of memory", NULL, 0);
                return -1;
            }
            s->frag = g;
            memcpy(g + s->frag_len, pl, (size_t)n);
            s->frag_len += (uint32_t)n;
            if (fin) {
                record_all(s, s->frag, s->frag_len);
                free(s->frag);
                s->frag = NULL;
                s->frag_len = 0;
            }
        } else { /* text or binary: tidegate's binary frames carry a JSON header first */
            if (s->frag) {
                sub_fail(s, E_FRAME, "a new message inside a fragmented one", NULL, 0);
                return -1;
            }
            if (fin) {
                record_all(s, pl, (size_t)n);
            } else {
                s->frag = malloc(n ? (size_t)n : 1);
                if (!s->frag) {
                    sub_fail(s, E_FRAME, "out of memory", NULL, 0);
                    return -1;
                }
                memcpy(s->frag, pl, (size_t)n);
                s->frag_len = (uint32_t)n;
            }
        }
    }
}

/* ---- SSE, NDJSON, poll bodies: consumers of [0, dlen). Return bytes consumed, or -1. ---- */

static long sse_events(sub_t *s, char *b, size_t dlen)
{
    size_t off = 0;
    for (;;) {
        /* An event ends at a blank line; line ends are LF or CRLF (a lone CR is not sent by
         * any server this tool targets and is refused as malformed). */
        size_t e = off, msg = 0;
        bool complete = false, has_data = false;
        while (e < dlen) {
            char *lf = memchr(b + e, '\n', dlen - e);
            if (!lf)
                break;
            size_t ll = (size_t)(lf - (b + e));
            const char *line = b + e;
            if (ll && line[ll - 1] == '\r')
                ll--;
            e = (size_t)(lf - b) + 1;
            if (ll == 0) {
                complete = true;
                break;
            }
            if (memchr(line, '\r', ll)) {
                sub_fail(s, E_BODY, "a CR inside an SSE line", line, ll);
                return -1;
            }
            if (line[0] == ':')
                continue; /* a comment: heartbeat */
            const char *colon = memchr(line, ':', ll);
            size_t fl = colon ? (size_t)(colon - line) : ll;
            const char *v = colon ? colon + 1 : line + ll;
            if (v < line + ll && *v == ' ')
                v++;
            size_t vl = (size_t)(line + ll - v);
            if (fl == 4 && memcmp(line, "data", 4) == 0) {
                if (has_data)
                    msgbuf[msg++] = '\n';
                memcpy(msgbuf + msg, v, vl);
                msg += vl;
                has_data = true;
            } else if (!((fl == 2 && memcmp(line, "id", 2) == 0) ||
                         (fl == 5 && memcmp(line, "event", 5) == 0) ||
                         (fl == 5 && memcmp(line, "retry", 5) == 0))) {
                sub_fail(s, E_BODY, "an unknown SSE field", line, ll);
                return -1;
            }
        }
        if (!complete)
            return (long)off;
        if (has_data)
            record_all(s, msgbuf, msg);
        if (s->fd == -1)
            return -1;
        off = e;
    }
}

static long ndjson_lines(sub_t *s, char *b, size_t dlen)
{
    size_t off = 0;
    char *lf;
    while (off < dlen && (lf = memchr(b + off, '\n', dlen - off))) {
        size_t ll = (size_t)(lf - (b + off));
        if (ll && b[off + ll - 1] == '\r')
            ll--;
        if (ll)
            record_all(s, b + off, ll); /* an empty line is a heartbeat */
        if (s->fd == -1)
            return -1;
        off = (size_t)(lf - b) + 1;
    }
    return (long)off;
}

/* A whole long-poll answer: its messages, and where to poll from next. */
static void poll_body(sub_t *s, const char *b, size_t n)
{
    bool first = B.poll_style == POLL_TIDEGATE && !s->up;
    if (first)
        mark_up(s); /* the answer to "0:0": it knows where the channel stands */
    if (n && !(first && memmem(b, n, "\"gap\"", 5)))
        record_all(s, b, n);
    /* tidegate's 200 carries the position in the body ("next":"EPOCH:SEQ"), its 204 in
     * X-Position (taken with the head). */
    if (B.poll_style == POLL_TIDEGATE) {
        const char *nx = NULL;
        for (const char *q = b; (q = memmem(q, n - (size_t)(q - b), "\"next\":\"", 8));)
            nx = (q += 8);
        if (nx) {
            const char *e = memchr(nx, '"', n - (size_t)(nx - b));
            if (e && e - nx < 60) {
                free(s->pos);
                s->pos = strndup(nx, (size_t)(e - nx));
            }
        } else if (n) {
            bench_error(E_BODY, "a long-poll answer without \"next\"", b, n < 200 ? n : 200);
        }
    }
}

/* ---- the response head ---- */

/* Returns the head's length, 0 for more, -1 once <s> is closed. */
static int on_head(sub_t *s, char *b, size_t len)
{
    http_head_t h;
    const char *why = NULL;
    int hl = http_parse_head(b, len, &h, &why);
    if (hl == 0)
        return 0;
    if (hl < 0) {
        sub_fail(s, E_HEAD, why, b, len < 200 ? len : 200);
        return -1;
    }
    s->chunked = h.chunked;
    s->body_left = h.clen;
    memset(&s->ck, 0, sizeof(s->ck));
    s->close_after = h.close;
    if (B.transport == T_WS) {
        char expect[29];
        tg_ws_accept_key(s->key, strlen(s->key), expect);
        if (h.status != 101) {
            sub_fail(s, E_STATUS, "WebSocket upgrade not answered 101", b, (size_t)hl);
            return -1;
        }
        if (!h.upgrade_ws || strcmp(h.accept, expect) != 0) {
            sub_fail(s, E_ACCEPT, "no Upgrade: websocket or a wrong Sec-WebSocket-Accept", b,
                     (size_t)hl);
            return -1;
        }
        s->state = S_OPEN;
        mark_up(s);
        return hl;
    }
    if (B.transport != T_POLL) {
        if (h.status != 200) {
            sub_fail(s, E_STATUS, "stream not answered 200", b, (size_t)hl);
            return -1;
        }
        if (!h.chunked && h.clen < 0)
            s->body_left = -1; /* until the connection closes */
        s->state = S_OPEN;
        mark_up(s);
        return hl;
    }
    /* Long-poll: 200 with messages; a time-out is 204 (tidegate), 304 or 408 (Nchan). */
    if (h.status != 200 && h.status != 204 && h.status != 304 && h.status != 408) {
        sub_fail(s, E_STATUS, "long-poll answered neither 200 nor a time-out", b, (size_t)hl);
        return -1;
    }
    if (!h.chunked && h.clen < 0) {
        if (h.status == 200) {
            sub_fail(s, E_HEAD, "a long-poll answer without a length", b, (size_t)hl);
            return -1;
        }
        s->body_left = 0;
    }
    if (B.poll_style == POLL_TIDEGATE && h.xpos[0]) {
        free(s->pos);
        s->pos = strdup(h.xpos);
    } else if (B.poll_style == POLL_NCHAN && h.status == 200 && (h.lastmod[0] || h.etag[0])) {
        free(s->pos);
        size_t n = strlen(h.lastmod) + strlen(h.etag) + 2;
        s->pos = malloc(n);
        if (s->pos)
            snprintf(s->pos, n, "%s\n%s", h.lastmod, h.etag);
    }
    s->state = S_BODY;
    return hl;
}

/* The end of a long-poll answer: poll again, on this connection or a new one. */
static int poll_again(sub_t *s, int idx)
{
    if (s->close_after) {
        sub_close(s, true);
        dial(idx); /* stays up: its position is kept */
        return -1;
    }
    if (send_request(s, idx) != 0) {
        sub_fail(s, E_CLOSED, "long-poll request write failed", NULL, 0);
        return -1;
    }
    s->state = S_HEAD;
    return 0;
}

/* Parses <b>/<len> (the subscriber's pending input then the new bytes); keeps what is left
 * over in <s->pend>. */
static void feed(sub_t *s, int idx, char *b, size_t len, bool eof)
{
    size_t dlen = s->pdlen, rpos = s->pdlen;
    s->pdlen = 0;
    for (;;) {
        if (s->fd == -1)
            return;
        if (s->state == S_HEAD) {
            if (dlen) {
                sub_fail(s, E_BODY, "data after a long-poll answer", b, dlen);
                return;
            }
            int hl = on_head(s, b + rpos, len - rpos);
            if (hl < 0)
                return;
            if (hl == 0)
                break;
            rpos += (size_t)hl;
            continue;
        }
        if (s->state == S_OPEN && B.transport == T_WS) {
            if (ws_frames(s, b, &rpos, len) < 0)
                return;
            break;
        }
        /* A body: decode what arrived, then hand the decoded bytes to the consumer. */
        int end = 0;
        if (s->chunked) {
            end = chunked_decode(&s->ck, b, &dlen, &rpos, len);
            if (end < 0) {
                sub_fail(s, E_CHUNK, "malformed chunked body", b + rpos,
                         len - rpos < 64 ? len - rpos : 64);
                return;
            }
        } else {
            size_t take = len - rpos;
            if (s->body_left >= 0 && (uint64_t)s->body_left < take)
                take = (size_t)s->body_left;
            if (dlen != rpos)
                memmove(b + dlen, b + rpos, take);
            dlen += take;
            rpos += take;
            if (s->body_left >= 0) {
                s->body_left -= (int64_t)take;
                end = s->body_left == 0;
            }
        }
        if (s->state == S_BODY) { /* long-poll: the answer whole, then poll again */
            if (!end)
                break;
            poll_body(s, b, dlen);
            memmove(b, b + rpos, len - rpos);
            len -= rpos;
            dlen = rpos = 0;
            if (s->fd == -1 || poll_again(s, idx) < 0)
                return;
            continue;
        }
        long used = B.transport == T_SSE ? sse_events(s, b, dlen) : ndjson_lines(s, b, dlen);
        if (used < 0)
            return;
        memmove(b, b + used, dlen - (size_t)used);
        dlen -= (size_t)used;
        if (end) {
            sub_fail(s, E_CLOSED, "the server ended the stream", NULL, 0);
            return;
        }
        break;
    }
    if (eof) {
        if (!s->up)
            sub_fail(s, E_CONNECT, "closed before the response", b, len < 200 ? len : 200);
        else
            sub_fail(s, E_CLOSED, "the server closed a subscriber", b, len < 200 ? len : 200);
        return;
    }
    /* Keep the leftover: decoded [0, dlen) then raw [rpos, len). */
    size_t left = dlen + (len - rpos);
    if (left > BENCH_PENDING_MAX) {
        sub_fail(s, E_BODY, "a message larger than the tool's limit", b, 64);
        return;
    }
    if (!left) {
        free(s->pend);
        s->pend = NULL;
        s->plen = 0;
        return;
    }
    if (b != s->pend) {
        char *keep = malloc(left);
        if (!keep) {
            sub_fail(s, E_BODY, "out of memory", NULL, 0);
            return;
        }
        memcpy(keep, b, dlen);
        memcpy(keep + dlen, b + rpos, len - rpos);
        s->pend = keep;
    } else {
        memmove(b + dlen, b + rpos, len - rpos);
    }
    s->plen = (uint32_t)left;
    s->pdlen = (uint32_t)dlen;
}

static void on_event(int idx, uint32_t events)
{
    sub_t *s = &S[idx];
    if (s->state == S_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el) == -1)
            err = errno;
        if (err) {
            sub_fail(s, E_CONNECT, strerror(err), NULL, 0);
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLIN | EPOLLHUP | EPOLLERR)))
            return;
        struct epoll_event ev = { .events = EPOLLIN,
                                  .data.u64 = (uint64_t)(uint32_t)idx | (uint64_t)s->gen << 32 };
        epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
        if (send_request(s, idx) != 0) {
            sub_fail(s, E_CONNECT, "request write failed", NULL, 0);
            return;
        }
        s->state = S_HEAD;
        if (B.transport == T_POLL && B.poll_style == POLL_NCHAN)
            mark_up(s); /* an Nchan long-poll subscriber is up once its first poll is sent */
        return;
    }
    if (s->fd == -1)
        return;
    char *b;
    size_t cap;
    if (s->pend) {
        size_t want = (size_t)s->plen + 65536;
        char *g = realloc(s->pend, want);
        if (!g) {
            sub_fail(s, E_BODY, "out of memory", NULL, 0);
            return;
        }
        s->pend = g;
        b = g + s->plen;
        cap = 65536;
    } else {
        b = scratch;
        cap = BENCH_SCRATCH;
    }
    ssize_t r = read(s->fd, b, cap);
    if (r < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    bool eof = r <= 0;
    if (r < 0)
        r = 0;
    if (s->pend)
        feed(s, idx, s->pend, s->plen + (size_t)r, eof);
    else
        feed(s, idx, scratch, (size_t)r, eof);
}

void subs_run(int ms)
{
    struct epoll_event evs[512];
    int n = epoll_wait(ep, evs, 512, ms);
    for (int k = 0; k < n; k++) {
        uint32_t idx = (uint32_t)evs[k].data.u64, gen = (uint32_t)(evs[k].data.u64 >> 32);
        if (idx < (uint32_t)B.subs && S[idx].gen == gen && S[idx].fd != -1)
            on_event((int)idx, evs[k].events);
    }
    /* Connects that never got an answer (a full backlog drops SYNs, retried for seconds). */
    static uint64_t last_check;
    uint64_t now = now_ns();
    if (now - last_check > 100000000ull) {
        last_check = now;
        for (int i = 0; i < next_dial && inflight > 0; i++) {
            sub_t *s = &S[i];
            if (s->fd != -1 && !s->up && (s->state == S_CONNECTING || s->state == S_HEAD) &&
                now - s->t_dial > (uint64_t)(B.connect_timeout_s * 1e9))
                sub_fail(s, E_CONNECT, "no response within --connect-timeout", NULL, 0);
        }
    }
}

bool subs_all_complete(void)
{
    for (int i = 0; i < B.subs; i++) {
        sub_t *s = &S[i];
        if (s->fd == -1 || !s->up || !s->base)
            continue; /* gone, or a reconnected one that has nothing yet */
        if (s->next < B.issued[s->ch])
            return false;
    }
    return true;
}

void subs_finish(void)
{
    uint64_t failed = 0;
    for (int i = 0; i < B.subs; i++) {
        sub_t *s = &S[i];
        if (s->fd != -1 && s->up && s->base && s->next < B.issued[s->ch])
            tally_of(s)->lost += B.issued[s->ch] - s->next; /* never arrived */
        if (!s->churned && s->up)
            failed += B.failed[s->ch];
        if (s->fd != -1)
            sub_close(s, false);
        free(s->pos);
        s->pos = NULL;
    }
    /* A publish that failed was counted lost by every subscriber of its channel. */
    B.main.lost -= failed < B.main.lost ? failed : B.main.lost;
}
