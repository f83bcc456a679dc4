/* tools/cli/net.c - tidegate-cli: addresses, blocking sockets with deadlines, and one HTTP/1.1
 * exchange (Connection: close) for pub and stats. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"

bool cli_addr_parse(const char *s, cli_addr_t *a)
{
    memset(a, 0, sizeof(*a));
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s)
        return false;
    size_t hl = (size_t)(colon - s);
    if (hl >= sizeof(a->host))
        return false;
    memcpy(a->host, s, hl);
    uint64_t port;
    if (!cli_parse_uint(colon + 1, 1, 65535, &port))
        return false;

    char ip[64];
    if (a->host[0] == '[') {
        if (hl < 3 || a->host[hl - 1] != ']')
            return false;
        memcpy(ip, a->host + 1, hl - 2);
        ip[hl - 2] = '\0';
        struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&a->sa;
        if (inet_pton(AF_INET6, ip, &v6->sin6_addr) != 1)
            return false;
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        a->len = sizeof(*v6);
        snprintf(a->text, sizeof(a->text), "[%s]:%u", ip, (unsigned)port);
        return true;
    }
    /* localhost is the only name taken, so nothing is ever looked up. */
    snprintf(ip, sizeof(ip), "%s", strcmp(a->host, "localhost") == 0 ? "127.0.0.1" : a->host);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&a->sa;
    if (inet_pton(AF_INET, ip, &v4->sin_addr) != 1)
        return false;
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    a->len = sizeof(*v4);
    snprintf(a->text, sizeof(a->text), "%s:%u", ip, (unsigned)port);
    return true;
}

/* Waits for <events> on <fd> until <deadline>. Returns 0, -ETIMEDOUT, -EINTR. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        if (cli_interrupted)
            return -EINTR;
        struct pollfd pf = { .fd = fd, .events = events };
        int n = poll(&pf, 1, cli_ms_left(deadline));
        if (n > 0)
            return 0;
        if (n == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

int cli_conn_open(cli_conn_t *k, const cli_addr_t *a, size_t max, int64_t deadline)
{
    memset(k, 0, sizeof(*k));
    k->max = max;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) {
        k->fd = -1;
        return -errno;
    }
    int err = 0;
    if (connect(fd, (const struct sockaddr *)&a->sa, a->len) == -1) {
        if (errno != EINPROGRESS) {
            err = -errno;
            goto fail;
        }
        if ((err = wait_fd(fd, POLLOUT, deadline)) != 0)
            goto fail;
        socklen_t sl = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &sl) == -1)
            err = errno;
        if (err) {
            err = -err;
            goto fail;
        }
    }
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* small commands */
    k->fd = fd;
    return 0;
fail:
    close(fd);
    k->fd = -1;
    return err;
}

void cli_conn_close(cli_conn_t *k)
{
    if (k->fd >= 0)
        close(k->fd);
    k->fd = -1;
    free(k->in);
    k->in = NULL;
    k->len = k->cap = 0;
}

int cli_conn_write(cli_conn_t *k, const void *p, size_t n, int64_t deadline)
{
    const char *q = p;
    while (n > 0) {
        ssize_t w = send(k->fd, q, n, MSG_NOSIGNAL);
        if (w > 0) {
            q += w;
            n -= (size_t)w;
            continue;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = wait_fd(k->fd, POLLOUT, deadline);
        if (rc != 0)
            return rc;
    }
    return 0;
}

ssize_t cli_conn_fill(cli_conn_t *k, int64_t deadline)
{
    if (k->eof)
        return 0;
    if (k->len == k->cap) {
        if (k->cap >= k->max)
            return -EMSGSIZE;
        size_t cap = k->cap ? k->cap * 2 : 16384;
        if (cap > k->max)
            cap = k->max;
        char *in = realloc(k->in, cap);
        if (!in)
            return -ENOMEM;
        k->in = in;
        k->cap = cap;
    }
    for (;;) {
        ssize_t r = recv(k->fd, k->in + k->len, k->cap - k->len, 0);
        if (r > 0) {
            k->len += (size_t)r;
            return r;
        }
        if (r == 0) {
            k->eof = true;
            return 0;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -errno;
        int rc = wait_fd(k->fd, POLLIN, deadline);
        if (rc != 0)
            return rc;
    }
}

void cli_conn_consume(cli_conn_t *k, size_t n)
{
    memmove(k->in, k->in + n, k->len - n);
    k->len -= n;
}

void cli_url_escape(tg_sbuf_t *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~:@/", ch)) {
            tg_sbuf_put(b, s, 1);
        } else {
            char e[3] = { '%', hex[ch >> 4], hex[ch & 15] };
            tg_sbuf_put(b, e, 3);
        }
    }
}

/* The end of the head in <p>/<n> (past its blank line), or 0 when it is not complete. */
static size_t head_end(const char *p, size_t n)
{
    const char *e = n ? memmem(p, n, "\r\n\r\n", 4) : NULL;
    return e ? (size_t)(e - p) + 4 : 0;
}

/* Decodes a chunked body in place: <p>/<n> in, the data at <p> and its length in <*out>.
 * Returns 0, or -1 when malformed or cut short. */
static int dechunk(char *p, size_t n, size_t *out)
{
    size_t r = 0, w = 0;
    for (;;) {
        char *end;
        const char *eol = memmem(p + r, n - r, "\r\n", 2);
        if (!eol)
            return -1;
        errno = 0;
        unsigned long long size = strtoull(p + r, &end, 16);
        if (errno || end == p + r || (end != eol && *end != ';'))
            return -1;
        r = (size_t)(eol - p) + 2;
        if (size == 0)
            break;
        if (size > n - r || n - r - size < 2 || memcmp(p + r + size, "\r\n", 2) != 0)
            return -1;
        memmove(p + w, p + r, size);
        w += size;
        r += size + 2;
    }
    *out = w;
    return 0;
}

/* The value of header <name> in <head> (the status line and header lines), or NULL; the
 * length in <*len>. */
static const char *header(const char *head, size_t n, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    const char *p = memmem(head, n, "\r\n", 2);
    while (p && (size_t)(p - head) + 2 < n) {
        const char *line = p + 2;
        const char *eol = memmem(line, n - (size_t)(line - head), "\r\n", 2);
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && line[nl] == ':' && strncasecmp(line, name, nl) == 0) {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = eol;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *len = (size_t)(e - v);
            return v;
        }
        p = eol;
    }
    return NULL;
}

/* Parses the whole response in <k->in> (read until EOF) into <r>. Returns 0 or -1. */
static int parse_response(cli_conn_t *k, cli_http_resp_t *r)
{
    size_t hl = head_end(k->in, k->len);
    if (!hl || k->len < 12 || memcmp(k->in, "HTTP/1.", 7) != 0 || k->in[8] != ' ')
        return -1;
    uint64_t status;
    char code[4] = { k->in[9], k->in[10], k->in[11], 0 };
    if (!cli_parse_uint(code, 100, 999, &status))
        return -1;
    r->status = (int)status;

    char *body = k->in + hl;
    size_t n = k->len - hl, vl;
    const char *te = header(k->in, hl, "Transfer-Encoding", &vl);
    const char *cl = header(k->in, hl, "Content-Length", &vl);
    if (te) {
        if (dechunk(body, n, &n) != 0)
            return -1;
    } else if (cl) {
        char num[24];
        uint64_t want;
        if (vl >= sizeof(num))
            return -1;
        memcpy(num, cl, vl);
        num[vl] = '\0';
        if (!cli_parse_uint(num, 0, UINT64_MAX, &want) || want > n)
            return -1;
        n = (size_t)want;
    }
    r->body = malloc(n + 1);
    if (!r->body)
        return -1;
    memcpy(r->body, body, n);
    r->body[n] = '\0';
    r->body_len = n;
    return 0;
}

int cli_http(const cli_t *c, const char *method, const char *path, const char *ctype,
             const char *body, size_t len, int64_t deadline, cli_http_resp_t *r)
{
    memset(r, 0, sizeof(*r));
    cli_addr_t a;
    if (!cli_addr_parse(c->server, &a))
        return cli_error(c, CLI_USAGE, "'%s' is not HOST:PORT", c->server);

    tg_sbuf_t req = TG_SBUF_INIT;
    tg_sbuf_printf(&req, "%s %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n", method, path,
                   c->server);
    if (body)
        tg_sbuf_printf(&req, "Content-Type: %s\r\nContent-Length: %zu\r\n", ctype, len);
    tg_sbuf_put(&req, "\r\n", 2);
    if (req.failed) {
        tg_sbuf_free(&req);
        return cli_error(c, CLI_FAIL, "out of memory");
    }

    cli_conn_t k;
    int code = CLI_FAIL;
    int rc = cli_conn_open(&k, &a, CLI_MSG_MAX, deadline);
    if (rc != 0) {
        code = rc == -ETIMEDOUT ? CLI_TIMEOUT : CLI_FAIL;
        cli_error(c, code, "cannot connect to %s: %s", a.text, strerror(-rc));
        goto out;
    }
    if ((rc = cli_conn_write(&k, req.p, req.len, deadline)) != 0 ||
        (body && (rc = cli_conn_write(&k, body, len, deadline)) != 0))
        goto io_error;
    ssize_t got;
    while ((got = cli_conn_fill(&k, deadline)) > 0)
        ;
    if (got < 0) {
        rc = (int)got;
        goto io_error;
    }
    if (parse_response(&k, r) != 0) {
        cli_error(c, CLI_FAIL, "malformed HTTP response from %s", a.text);
        goto out;
    }
    code = CLI_OK;
    goto out;
io_error:
    code = rc == -ETIMEDOUT ? CLI_TIMEOUT : CLI_FAIL;
    if (rc == -ETIMEDOUT)
        cli_error(c, code, "no response from %s in time", a.text);
    else if (rc != -EINTR)
        cli_error(c, code, "%s %s on %s: %s", method, path, a.text, strerror(-rc));
out:
    cli_conn_close(&k);
    tg_sbuf_free(&req);
    return code;
}

void cli_http_free(cli_http_resp_t *r)
{
    free(r->body);
    r->body = NULL;
}
