/* tools/tidegate-bench.c - a fan-out load client for WebSocket subscribers.
 *
 * Opens N WebSocket subscribers (one epoll loop, source addresses spread over
 * 127.0.0.2-254 so ephemeral ports never run out), checks every handshake
 * (Sec-WebSocket-Accept), then publishes M messages at R per second over one
 * keep-alive HTTP connection. Each payload carries its sequence number and its
 * send time; every subscriber checks it gets each message once, in order, and
 * the publish-to-receive latency goes into a histogram. Loopback targets only;
 * bounded in time by --duration and a drain deadline.
 *
 *   tidegate-bench --port 8080 --channel fan --subs 10000 --rate 100 --count 2000
 *
 * Prints a summary and one line starting with RESULT. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "net/ws.h"

#define HIST_BUCKETS 200000 /* 10 us each: 0 .. 2 s, then the last bucket */
#define HIST_US      10

typedef struct sub {
    int      fd;
    bool     open;     /* handshake done, subscribed */
    uint64_t next;     /* sequence number expected next */
    uint64_t got, lost, dup, disorder;
    size_t   len;
    char     buf[65536];
} sub_t;

static struct {
    int       port;
    char      channel[128];
    int       subs;
    int       rate;
    int       count;
    int       size;
    int       duration;
    sub_t    *s;
    uint64_t  hist[HIST_BUCKETS];
    uint64_t  lat_max_us;
    volatile bool publishing_done;
    uint64_t  published;
    uint64_t  pub_errors;
    uint64_t  t_first_ns, t_last_ns;
} B = { .port = 8080, .channel = "bench", .subs = 1000, .rate = 100, .count = 1000,
        .size = 64, .duration = 60 };

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *msg)
{
    perror(msg);
    exit(1);
}

static int dial(int i)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd == -1)
        die("socket");
    struct sockaddr_in src = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % 253)); /* 127.0.0.2 .. 254 */
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == -1)
        die("bind");
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons((uint16_t)B.port) };
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == -1)
        die("connect");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void read_until(int fd, char *buf, size_t cap, size_t *len, const char *marker)
{
    while (!memmem(buf, *len, marker, strlen(marker))) {
        ssize_t n = read(fd, buf + *len, cap - *len);
        if (n <= 0)
            die("handshake read");
        *len += (size_t)n;
    }
}

/* Upgrade, check the accept key, send the sub command, wait for its reply. */
static void open_sub(sub_t *s, int i)
{
    static const char key[] = "dGhlIHNhbXBsZSBub25jZQ==";
    char req[512], expect[29];
    s->fd = dial(i);
    int n = snprintf(req, sizeof(req),
                     "GET /sub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                     B.channel, key);
    if (write(s->fd, req, (size_t)n) != n)
        die("write");
    read_until(s->fd, s->buf, sizeof(s->buf), &s->len, "\"type\":\"sub\"");
    tg_ws_accept_key(key, strlen(key), expect);
    char *head_end = memmem(s->buf, s->len, "\r\n\r\n", 4);
    if (!head_end || !memmem(s->buf, (size_t)(head_end - s->buf), expect, 28) ||
        strncmp(s->buf, "HTTP/1.1 101 ", 13) != 0) {
        fprintf(stderr, "tidegate-bench: bad handshake: %.*s\n", (int)(head_end - s->buf), s->buf);
        exit(1);
    }
    s->len = 0; /* the sub reply is the only frame so far: drop it */
    s->open = true;
}

static void record(sub_t *s, const char *p, size_t n)
{
    /* {"type":"msg",...,"data":{"i":I,"t":T,...}} */
    const char *ip = memmem(p, n, "\"i\":", 4), *tp = memmem(p, n, "\"t\":", 4);
    if (!ip || !tp)
        return; /* another message type */
    uint64_t i = strtoull(ip + 4, NULL, 10), t = strtoull(tp + 4, NULL, 10);
    uint64_t us = (now_ns() - t) / 1000;
    uint64_t b = us / HIST_US;
    B.hist[b < HIST_BUCKETS ? b : HIST_BUCKETS - 1]++;
    if (us > B.lat_max_us)
        B.lat_max_us = us;
    if (i == s->next) {
        s->got++;
        s->next++;
    } else if (i > s->next) {
        s->lost += i - s->next;
        s->got++;
        s->next = i + 1;
    } else if (i + 1 == s->next) {
        s->dup++;
    } else {
        s->disorder++;
    }
}

/* Parses whole server frames (unmasked) out of s->buf. */
static void consume(sub_t *s)
{
    size_t off = 0;
    for (;;) {
        const uint8_t *b = (const uint8_t *)s->buf + off;
        size_t avail = s->len - off;
        if (avail < 2)
            break;
        uint64_t len = b[1] & 0x7f;
        size_t hl = 2;
        if (len == 126) {
            if (avail < 4)
                break;
            len = (uint64_t)b[2] << 8 | b[3];
            hl = 4;
        } else if (len == 127) {
            if (avail < 10)
                break;
            len = 0;
            for (int k = 0; k < 8; k++)
                len = len << 8 | b[2 + k];
            hl = 10;
        }
        if (avail < hl + len)
            break;
        if ((b[0] & 0x0f) == TG_WS_OP_TEXT)
            record(s, (const char *)b + hl, (size_t)len);
        off += hl + (size_t)len;
    }
    memmove(s->buf, s->buf + off, s->len - off);
    s->len -= off;
}

/* Reads the publish responses, so that the publisher never waits for one:
 * requests are pipelined on schedule even when the server answers late. */
static void *pub_reader(void *arg)
{
    int fd = *(int *)arg;
    char resp[65536];
    size_t rl = 0;
    uint64_t answered = 0;
    while (answered < (uint64_t)B.count) {
        ssize_t k = read(fd, resp + rl, sizeof(resp) - rl - 1);
        if (k <= 0)
            die("publish read");
        rl += (size_t)k;
        resp[rl] = '\0';
        for (;;) { /* whole responses: head, then Content-Length bytes */
            char *he = strstr(resp, "\r\n\r\n"), *cl = strstr(resp, "Content-Length: ");
            if (!he || !cl || cl > he)
                break;
            size_t total = (size_t)(he + 4 - resp) + strtoul(cl + 16, NULL, 10);
            if (rl < total)
                break;
            if (strncmp(resp, "HTTP/1.1 202", 12) != 0)
                B.pub_errors++;
            answered++;
            memmove(resp, resp + total, rl - total);
            rl -= total;
            resp[rl] = '\0';
        }
    }
    return NULL;
}

static void *publisher(void *arg)
{
    (void)arg;
    int fd = dial(0);
    pthread_t reader;
    pthread_create(&reader, NULL, pub_reader, &fd);
    char pad[8192];
    memset(pad, 'x', sizeof(pad));
    int padn = B.size > 40 ? B.size - 40 : 0;
    if (padn > (int)sizeof(pad))
        padn = sizeof(pad);
    uint64_t start = now_ns(), gap = 1000000000ull / (uint64_t)(B.rate > 0 ? B.rate : 1);
    B.t_first_ns = start;
    char req[16384];
    for (int i = 0; i < B.count; i++) {
        uint64_t due = start + (uint64_t)i * gap;
        while (B.rate > 0 && now_ns() < due) {
            struct timespec ts = { 0, 200000 };
            nanosleep(&ts, NULL);
        }
        char body[9000];
        int bn = snprintf(body, sizeof(body), "{\"i\":%d,\"t\":%llu,\"p\":\"%.*s\"}", i,
                          (unsigned long long)now_ns(), padn, pad);
        int n = snprintf(req, sizeof(req),
                         "POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\n\r\n%s",
                         B.channel, bn, body);
        if (write(fd, req, (size_t)n) != n)
            die("publish write");
        B.published++;
    }
    B.t_last_ns = now_ns();
    pthread_join(reader, NULL);
    close(fd);
    B.publishing_done = true;
    return NULL;
}

static uint64_t percentile(uint64_t total, double q)
{
    uint64_t want = (uint64_t)(total * q), acc = 0;
    for (int b = 0; b < HIST_BUCKETS; b++) {
        acc += B.hist[b];
        if (acc > want)
            return (uint64_t)(b + 1) * HIST_US;
    }
    return B.lat_max_us;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        { "port", required_argument, NULL, 'p' },  { "channel", required_argument, NULL, 'c' },
        { "subs", required_argument, NULL, 'n' },  { "rate", required_argument, NULL, 'r' },
        { "count", required_argument, NULL, 'm' }, { "size", required_argument, NULL, 's' },
        { "duration", required_argument, NULL, 'd' }, { NULL, 0, NULL, 0 },
    };
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p': B.port = atoi(optarg); break;
        case 'c': snprintf(B.channel, sizeof(B.channel), "%s", optarg); break;
        case 'n': B.subs = atoi(optarg); break;
        case 'r': B.rate = atoi(optarg); break;
        case 'm': B.count = atoi(optarg); break;
        case 's': B.size = atoi(optarg); break;
        case 'd': B.duration = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: tidegate-bench --port P --channel C --subs N --rate R "
                            "--count M [--size B] [--duration S]\n");
            return 2;
        }
    }
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    B.s = calloc((size_t)B.subs, sizeof(sub_t));
    if (!B.s)
        die("calloc");
    uint64_t t0 = now_ns();
    for (int i = 0; i < B.subs; i++)
        open_sub(&B.s[i], i);
    double connect_s = (double)(now_ns() - t0) / 1e9;
    int ep = epoll_create1(0);
    for (int i = 0; i < B.subs; i++) {
        struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)i };
        epoll_ctl(ep, EPOLL_CTL_ADD, B.s[i].fd, &ev);
    }
    pthread_t pub;
    pthread_create(&pub, NULL, publisher, NULL);
    uint64_t deadline = now_ns() + (uint64_t)B.duration * 1000000000ull, drain_end = 0;
    struct epoll_event evs[512];
    for (;;) {
        uint64_t now = now_ns();
        if (now > deadline)
            break;
        if (B.publishing_done && !drain_end)
            drain_end = now + 2000000000ull; /* 2 s for the last deliveries */
        if (drain_end && now > drain_end)
            break;
        int n = epoll_wait(ep, evs, 512, 100);
        for (int k = 0; k < n; k++) {
            sub_t *s = &B.s[evs[k].data.u32];
            ssize_t r = read(s->fd, s->buf + s->len, sizeof(s->buf) - s->len);
            if (r <= 0) {
                epoll_ctl(ep, EPOLL_CTL_DEL, s->fd, NULL);
                s->open = false;
                continue;
            }
            s->len += (size_t)r;
            consume(s);
        }
        if (B.publishing_done) { /* all in? stop early */
            bool all = true;
            for (int i = 0; i < B.subs && all; i++)
                all = B.s[i].next >= (uint64_t)B.count || !B.s[i].open;
            if (all)
                break;
        }
    }
    pthread_join(pub, NULL);
    uint64_t got = 0, lost = 0, dup = 0, disorder = 0, closed = 0;
    for (int i = 0; i < B.subs; i++) {
        sub_t *s = &B.s[i];
        got += s->got;
        lost += s->lost + ((uint64_t)B.count - s->next); /* never arrived at all */
        dup += s->dup;
        disorder += s->disorder;
        closed += !s->open;
        close(s->fd);
    }
    double pub_s = (double)(B.t_last_ns - B.t_first_ns) / 1e9;
    printf("subscribers %d (connected in %.2f s), published %llu in %.2f s (%d/s asked), "
           "%llu publish errors\n",
           B.subs, connect_s, (unsigned long long)B.published, pub_s, B.rate,
           (unsigned long long)B.pub_errors);
    printf("deliveries %llu (%.0f/s), lost %llu, duplicated %llu, out of order %llu, "
           "closed early %llu\n",
           (unsigned long long)got, pub_s > 0 ? (double)got / pub_s : 0.0,
           (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)disorder,
           (unsigned long long)closed);
    printf("latency publish->receive: p50 %llu us, p90 %llu us, p99 %llu us, max %llu us\n",
           (unsigned long long)percentile(got, 0.50), (unsigned long long)percentile(got, 0.90),
           (unsigned long long)percentile(got, 0.99), (unsigned long long)B.lat_max_us);
    printf("RESULT fanout subs=%d rate=%d count=%d deliveries=%llu per_s=%.0f p50_us=%llu "
           "p99_us=%llu max_us=%llu lost=%llu dup=%llu disorder=%llu\n",
           B.subs, B.rate, B.count, (unsigned long long)got,
           pub_s > 0 ? (double)got / pub_s : 0.0, (unsigned long long)percentile(got, 0.50),
           (unsigned long long)percentile(got, 0.99), (unsigned long long)B.lat_max_us,
           (unsigned long long)lost, (unsigned long long)dup, (unsigned long long)disorder);
    return lost || dup || disorder || B.pub_errors ? 1 : 0;
}
