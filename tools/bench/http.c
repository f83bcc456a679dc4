/* tools/bench/http.c - the load client's plumbing: URL templates, loopback dialling, a strict
 * HTTP/1.1 response-head parser, an in-place chunked decoder, error counting, the latency
 * histogram. The parsers never trust their input: malformed bytes give -1, never a crash. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int bench_subst(const char *tpl, const char *ch, int i, char *out, size_t cap)
{
    size_t o = 0;
    char num[16];
    snprintf(num, sizeof(num), "%d", i);
    for (const char *p = tpl; *p;) {
        const char *put = NULL;
        if (strncmp(p, "{ch}", 4) == 0) {
            put = ch;
            p += 4;
        } else if (strncmp(p, "{i}", 3) == 0) {
            put = num;
            p += 3;
        }
        if (put) {
            size_t n = strlen(put);
            if (o + n >= cap)
                return -ENAMETOOLONG;
            memcpy(out + o, put, n);
            o += n;
        } else {
            if (o + 1 >= cap)
                return -ENAMETOOLONG;
            out[o++] = *p++;
        }
    }
    out[o] = '\0';
    return 0;
}

int bench_url_parse(const char *s, url_t *u, const char **why)
{
    memset(u, 0, sizeof(*u));
    const char *p;
    if (strncmp(s, "ws://", 5) == 0) {
        u->ws = true;
        p = s + 5;
    } else if (strncmp(s, "http://", 7) == 0) {
        p = s + 7;
    } else {
        *why = "only ws:// and http:// URLs (no TLS: loopback only)";
        return -EINVAL;
    }
    size_t hl = strcspn(p, ":/?");
    if (hl == 0 || hl >= sizeof(u->host)) {
        *why = "bad host";
        return -EINVAL;
    }
    memcpy(u->host, p, hl);
    u->host[hl] = '\0';
    p += hl;
    u->port = 80;
    if (*p == ':') {
        char *end;
        long port = strtol(p + 1, &end, 10);
        if (end == p + 1 || port <= 0 || port > 65535) {
            *why = "bad port";
            return -EINVAL;
        }
        u->port = (uint16_t)port;
        p = end;
    }
    struct in_addr a;
    if (strcmp(u->host, "localhost") == 0) {
        u->addr = INADDR_LOOPBACK;
    } else if (inet_pton(AF_INET, u->host, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127) {
        u->addr = ntohl(a.s_addr);
    } else {
        *why = "refusing a non-loopback host: this tool sends load to 127.0.0.0/8 only";
        return -EINVAL;
    }
    if (*p != '\0' && *p != '/' && *p != '?') {
        *why = "bad URL after the host";
        return -EINVAL;
    }
    int n = snprintf(u->path, sizeof(u->path), "%s%s", *p == '/' ? "" : "/", p);
    if (n < 0 || (size_t)n >= sizeof(u->path)) {
        *why = "URL too long";
        return -EINVAL;
    }
    for (const char *c = u->path; *c; c++)
        if ((unsigned char)*c <= ' ' || *c == 0x7f) {
            *why = "spaces or control characters in the URL";
            return -EINVAL;
        }
    return 0;
}

int bench_dial(const url_t *u, int i)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    int one = 1;
    /* The port is chosen at connect(), per (source, destination): 253 sources x ~28,000
     * ports each, so ephemeral ports never run out. */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in src = { .sin_family = AF_INET };
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)((unsigned)i % 253u)); /* .2 .. .254 */
    struct sockaddr_in dst = { .sin_family = AF_INET, .sin_port = htons(u->port) };
    dst.sin_addr.s_addr = htonl(u->addr);
    if (bind(fd, (struct sockaddr *)&src, sizeof(src)) == -1 ||
        (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) == -1 && errno != EINPROGRESS)) {
        int err = -errno;
        close(fd);
        return err;
    }
    return fd;
}

/* ---- response heads ---- */

static bool tchar(int c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static void copy_value(char *dst, size_t cap, const char *v, size_t n)
{
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, v, n);
    dst[n] = '\0';
}

/* Whether comma-separated list <v>/<n> holds <tok> (case-insensitive). */
static bool list_has(const char *v, size_t n, const char *tok)
{
    size_t tl = strlen(tok);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',')
            i++;
        size_t e = i;
        while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t'))
            e--;
        if (e - s == tl && strncasecmp(v + s, tok, tl) == 0)
            return true;
    }
    return false;
}

int http_parse_head(const char *p, size_t n, http_head_t *h, const char **why)
{
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (!end) {
        if (n >= BENCH_HEAD_MAX) {
            *why = "response head too long";
            return -1;
        }
        if (n >= 5 && memcmp(p, "HTTP/", 5) != 0) {
            *why = "not an HTTP response";
            return -1;
        }
        return 0;
    }
    memset(h, 0, sizeof(*h));
    h->clen = -1;
    size_t hl = (size_t)(end - p) + 4;
    /* Status line: HTTP/1.x SP 3DIGIT [SP reason] CRLF (RFC 9112 4). */
    if (hl < 14 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]) || (p[12] != ' ' && p[12] != '\r')) {
        *why = "malformed status line";
        return -1;
    }
    bool http10 = p[7] == '0', keep_alive = false;
    h->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    const char *l = memchr(p, '\n', hl);
    if (!l || l[-1] != '\r') {
        *why = "bare LF in the status line";
        return -1;
    }
    for (l++; l < end + 2;) {
        const char *le = memchr(l, '\n', (size_t)(end + 4 - l));
        if (!le || le == l || le[-1] != '\r') {
            *why = "header line not ended by CRLF";
            return -1;
        }
        const char *colon = l;
        while (colon < le && tchar((unsigned char)*colon))
            colon++;
        if (colon == l || *colon != ':') {
            *why = "malformed header line";
            return -1;
        }
        size_t nl = (size_t)(colon - l);
        const char *v = colon + 1, *ve = le - 1;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        size_t vn = (size_t)(ve - v);
        for (size_t k = 0; k < vn; k++)
            if ((unsigned char)v[k] < ' ' && v[k] != '\t') {
                *why = "control character in a header value";
                return -1;
            }
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(l, name, nl) == 0)
        if (IS("Content-Length")) {
            int64_t x = 0;
            if (vn == 0 || vn > 15 || h->clen != -1) {
                *why = "bad or repeated Content-Length";
                return -1;
            }
            for (size_t k = 0; k < vn; k++) {
                if (!isdigit((unsigned char)v[k])) {
                    *why = "bad Content-Length";
                    return -1;
                }
                x = x * 10 + (v[k] - '0');
            }
            h->clen = x;
        } else if (IS("Transfer-Encoding")) {
            if (!list_has(v, vn, "chunked")) {
                *why = "a transfer coding other than chunked";
                return -1;
            }
            h->chunked = true;
        } else if (IS("Connection")) {
            h->close |= list_has(v, vn, "close");
            keep_alive |= list_has(v, vn, "keep-alive");
        } else if (IS("Upgrade")) {
            h->upgrade_ws = list_has(v, vn, "websocket");
        } else if (IS("Sec-WebSocket-Accept")) {
            copy_value(h->accept, sizeof(h->accept), v, vn);
        } else if (IS("X-Position")) {
            copy_value(h->xpos, sizeof(h->xpos), v, vn);
        } else if (IS("Last-Modified")) {
            copy_value(h->lastmod, sizeof(h->lastmod), v, vn);
        } else if (IS("Etag")) {
            copy_value(h->etag, sizeof(h->etag), v, vn);
        }
#undef IS
        l = le + 1;
    }
    if (h->chunked && h->clen != -1) {
        *why = "both Content-Length and chunked";
        return -1;
    }
    if (http10 && !keep_alive)
        h->close = true;
    return (int)hl;
}

/* ---- chunked bodies (RFC 9112 7.1) ---- */

enum { CK_SIZE, CK_DATA, CK_DATA_END, CK_TRAILER, CK_DONE };

int chunked_decode(chunked_t *c, char *buf, size_t *dlen, size_t *rpos, size_t len)
{
    while (*rpos < len || c->st == CK_DONE) {
        size_t avail = len - *rpos;
        char *r = buf + *rpos;
        switch (c->st) {
        case CK_SIZE: {
            char *le = memchr(r, '\n', avail);
            if (!le)
                return avail > 1024 ? -1 : 0;
            if (le == r || le[-1] != '\r')
                return -1;
            uint64_t x = 0;
            char *q = r;
            for (; isxdigit((unsigned char)*q); q++) {
                if (x >> 56)
                    return -1;
                x = x * 16 + (uint64_t)(isdigit((unsigned char)*q) ? *q - '0'
                                                                   : (tolower(*q) - 'a' + 10));
            }
            if (q == r || (*q != '\r' && *q != ';' && *q != ' ' && *q != '\t'))
                return -1; /* extensions after ';' are ignored */
            *rpos += (size_t)(le + 1 - r);
            c->left = x;
            c->st = x ? CK_DATA : CK_TRAILER;
            break;
        }
        case CK_DATA: {
            size_t take = avail < c->left ? avail : (size_t)c->left;
            memmove(buf + *dlen, r, take);
            *dlen += take;
            *rpos += take;
            c->left -= take;
            if (!c->left)
                c->st = CK_DATA_END;
            break;
        }
        case CK_DATA_END:
            if (avail < 2)
                return 0;
            if (r[0] != '\r' || r[1] != '\n')
                return -1;
            *rpos += 2;
            c->st = CK_SIZE;
            break;
        case CK_TRAILER: {
            char *le = memchr(r, '\n', avail);
            if (!le)
                return avail > 4096 ? -1 : 0;
            if (le == r || le[-1] != '\r')
                return -1;
            *rpos += (size_t)(le + 1 - r);
            if (le == r + 1)
                c->st = CK_DONE;
            break;
        }
        case CK_DONE:
            return 1;
        }
    }
    return 0;
}

/* ---- errors ---- */

static pthread_mutex_t err_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t        err_count[E_KINDS];
static const char     *err_names[E_KINDS] = {
    "connect", "status", "head", "accept", "frame", "chunk", "body", "closed", "publish",
};

void bench_error(enum err_kind kind, const char *what, const char *data, size_t n)
{
    pthread_mutex_lock(&err_lock);
    if (err_count[kind]++ == 0) {
        char show[241];
        size_t k = 0;
        for (size_t j = 0; j < n && k + 4 < sizeof(show); j++) {
            unsigned char ch = (unsigned char)data[j];
            if (ch >= ' ' && ch < 0x7f && ch != '\\') {
                show[k++] = (char)ch;
            } else {
                k += (size_t)snprintf(show + k, sizeof(show) - k, "\\x%02x", ch);
            }
        }
        show[k] = '\0';
        fprintf(stderr, "tidegate-bench: first %s error: %s%s%s%s\n", err_names[kind], what,
                n ? " [" : "", show, n ? "]" : "");
    }
    pthread_mutex_unlock(&err_lock);
}

uint64_t bench_errors(enum err_kind kind)
{
    pthread_mutex_lock(&err_lock);
    uint64_t n = err_count[kind];
    pthread_mutex_unlock(&err_lock);
    return n;
}

uint64_t bench_errors_total(void)
{
    uint64_t n = 0;
    for (int k = 0; k < E_KINDS; k++)
        n += bench_errors((enum err_kind)k);
    return n;
}

/* ---- latency histogram ---- */

static unsigned bucket_of(uint64_t v)
{
    if (v < 64)
        return (unsigned)v;
    unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
    unsigned idx = 64 + (e - 6) * 64 + (unsigned)((v >> (e - 6)) - 64);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* The largest value of bucket <idx>. */
static uint64_t bucket_top(unsigned idx)
{
    if (idx < 64)
        return idx;
    unsigned e = (idx - 64) / 64 + 6, m = (idx - 64) % 64 + 64;
    return (((uint64_t)m + 1) << (e - 6)) - 1;
}

void hist_add(hist_t *h, uint64_t us)
{
    h->b[bucket_of(us)]++;
    h->n++;
    if (us > h->max)
        h->max = us;
}

uint64_t hist_pct(const hist_t *h, double q)
{
    if (!h->n)
        return 0;
    uint64_t want = (uint64_t)((double)h->n * q), acc = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        acc += h->b[b];
        if (acc > want) {
            uint64_t top = bucket_top(b);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

/* ---- randomness: xorshift64*, seeded once (not for secrets: WebSocket keys only need to
 * differ, RFC 6455 4.1) ---- */

uint64_t bench_rand(void)
{
    static _Thread_local uint64_t x;
    if (!x) {
        if (getrandom(&x, sizeof(x), 0) != (ssize_t)sizeof(x) || !x)
            x = now_ns() | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    return x * 0x2545F4914F6CDD1Dull;
}

void bench_base64(const uint8_t *p, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = i + 1 < n ? al[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? al[v & 63] : '=';
    }
    out[o] = '\0';
}
