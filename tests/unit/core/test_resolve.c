/* tests/unit/core/test_resolve.c - asynchronous lookups on a loop
 * (src/core/resolve.h).
 *
 * The loop is initialised but its thread never started: the test thread is
 * the loop thread and drives it with tg_loop_run_once(). Two kinds of fixture:
 * the machine's own configuration (/etc/hosts, /etc/resolv.conf: "localhost",
 * numeric addresses, and a name under .invalid that must fail, whether the
 * nameservers answer or cannot be reached), and a fake nameserver on
 * 127.0.0.1 whose sockets sit in the same loop, so that answers, NXDOMAIN,
 * silence (timeouts) and truncation (a retry over TCP) are deterministic.
 * No packet goes anywhere but to loopback and the configured nameservers.
 * tg_resolver_check() runs after every step; tg_loop_fini() in every
 * teardown, so ASan's leak check covers the resolver freed by its mail. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/common.h"
#include "core/loop.h"
#include "core/resolve.h"

#define WAIT_MS   10000 /* longest wait for a callback that must come */
#define RESULTS   64
#define TCP_CONNS 4

/* ---- a fake nameserver on 127.0.0.1, served by the loop under test ---- */

enum fake_mode {
    FAKE_ANSWER,   /* "a.test" A: 127.0.0.7, AAAA: no data; other names: NXDOMAIN */
    FAKE_NXDOMAIN, /* every name */
    FAKE_SILENT,   /* reads and never answers */
    FAKE_TRUNCATE, /* over UDP a truncated empty answer; over TCP as FAKE_ANSWER */
};

struct fake;

struct tcp_conn {
    tg_watch_t   w; /* fd -1 when unused */
    struct fake *fk;
    uint8_t      buf[1024];
    size_t       len;
};

struct fake {
    enum fake_mode  mode;
    tg_loop_t      *loop;
    tg_watch_t      udp;
    tg_watch_t      listener;
    struct tcp_conn conns[TCP_CONNS];
    uint16_t        port;
    unsigned        udp_queries;
    unsigned        tcp_queries;
};

/* The answer to DNS query <q>,<n> into <out>; returns its length, 0 to drop. */
static size_t dns_answer(const struct fake *fk, bool tcp, const uint8_t *q, size_t n,
                         uint8_t *out)
{
    if (n < 12 || n > 512)
        return 0;
    size_t at = 12, name_end;
    char name[256];
    size_t nl = 0;
    while (at < n && q[at] != 0) { /* the question's name, as "a.test" */
        size_t len = q[at];
        if (len > 63 || at + 1 + len > n || nl + len + 1 >= sizeof(name))
            return 0;
        if (nl)
            name[nl++] = '.';
        memcpy(name + nl, q + at + 1, len);
        nl += len;
        at += 1 + len;
    }
    name[nl] = '\0';
    if (at + 5 > n)
        return 0;
    name_end = at + 1;
    uint16_t qtype = (uint16_t)(q[name_end] << 8 | q[name_end + 1]);
    size_t qlen = name_end + 4; /* header and question, copied back */
    memcpy(out, q, qlen);
    out[2] = 0x80 | (q[2] & 0x01); /* QR, RD copied */
    out[3] = 0x80;                 /* RA, NOERROR */
    memset(out + 6, 0, 6);         /* no answer, authority or additional yet */
    bool known = strcmp(name, "a.test") == 0;
    if (fk->mode == FAKE_NXDOMAIN || (!known && fk->mode != FAKE_SILENT))
        out[3] |= 3; /* NXDOMAIN */
    else if (fk->mode == FAKE_TRUNCATE && !tcp)
        out[2] |= 0x02; /* TC: ask again over TCP */
    else if (qtype == 1) {
        static const uint8_t rr[] = { 0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 7 };
        memcpy(out + qlen, rr, sizeof(rr));
        out[7] = 1; /* ANCOUNT */
        return qlen + sizeof(rr);
    }
    return qlen; /* AAAA and the rest: no data */
}

static void fake_udp_io(tg_watch_t *w, uint32_t events)
{
    (void)events;
    struct fake *fk = tg_container_of(w, struct fake, udp);
    uint8_t q[1024], a[1024];
    struct sockaddr_storage from;
    for (;;) {
        socklen_t flen = sizeof(from);
        ssize_t n = recvfrom(w->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
        if (n <= 0)
            return;
        fk->udp_queries++;
        if (fk->mode == FAKE_SILENT)
            continue;
        size_t alen = dns_answer(fk, false, q, (size_t)n, a);
        if (alen)
            (void)sendto(w->fd, a, alen, 0, (struct sockaddr *)&from, flen);
    }
}

static void fake_close_conn(struct fake *fk, struct tcp_conn *c)
{
    tg_loop_unwatch(fk->loop, &c->w);
    close(c->w.fd);
    c->w.fd = -1;
}

static void fake_conn_io(tg_watch_t *w, uint32_t events)
{
    (void)events;
    struct tcp_conn *c = tg_container_of(w, struct tcp_conn, w);
    struct fake *fk = c->fk;
    if (w->fd == -1)
        return;
    ssize_t n = read(w->fd, c->buf + c->len, sizeof(c->buf) - c->len);
    if (n <= 0) {
        if (n == 0 || (errno != EAGAIN && errno != EINTR))
            fake_close_conn(fk, c);
        return;
    }
    c->len += (size_t)n;
    while (c->len >= 2) { /* 2-byte length, then the query (RFC 1035 4.2.2) */
        size_t qlen = (size_t)(c->buf[0] << 8 | c->buf[1]);
        if (c->len < 2 + qlen)
            return;
        fk->tcp_queries++;
        uint8_t a[1024 + 2];
        size_t alen = dns_answer(fk, true, c->buf + 2, qlen, a + 2);
        if (alen) {
            a[0] = (uint8_t)(alen >> 8);
            a[1] = (uint8_t)alen;
            assert_int_equal(write(w->fd, a, alen + 2), (ssize_t)(alen + 2));
        }
        memmove(c->buf, c->buf + 2 + qlen, c->len - 2 - qlen);
        c->len -= 2 + qlen;
    }
}

static void fake_accept_io(tg_watch_t *w, uint32_t events)
{
    (void)events;
    struct fake *fk = tg_container_of(w, struct fake, listener);
    int fd;
    while ((fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) != -1) {
        struct tcp_conn *c = NULL;
        for (int i = 0; i < TCP_CONNS && !c; i++)
            if (fk->conns[i].w.fd == -1)
                c = &fk->conns[i];
        if (!c) {
            close(fd);
            continue;
        }
        c->w.fd = fd;
        c->w.cb = fake_conn_io;
        c->fk = fk;
        c->len = 0;
        assert_int_equal(tg_loop_watch(fk->loop, &c->w, EPOLLIN), 0);
    }
}

/* Listens on 127.0.0.1, TCP and UDP on the same free port. */
static void fake_start(struct fake *fk, tg_loop_t *loop, enum fake_mode mode)
{
    memset(fk, 0, sizeof(*fk));
    fk->mode = mode;
    fk->loop = loop;
    for (int i = 0; i < TCP_CONNS; i++)
        fk->conns[i].w.fd = -1;
    for (int attempt = 0; attempt < 20; attempt++) {
        struct sockaddr_in a = { .sin_family = AF_INET };
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(l >= 0);
        socklen_t alen = sizeof(a);
        assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
        assert_int_equal(listen(l, 8), 0);
        assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
        int u = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        assert_true(u >= 0);
        if (bind(u, (struct sockaddr *)&a, sizeof(a)) != 0) { /* UDP port taken: again */
            close(u);
            close(l);
            continue;
        }
        fk->port = ntohs(a.sin_port);
        fk->udp.fd = u;
        fk->udp.cb = fake_udp_io;
        fk->listener.fd = l;
        fk->listener.cb = fake_accept_io;
        assert_int_equal(tg_loop_watch(loop, &fk->udp, EPOLLIN), 0);
        assert_int_equal(tg_loop_watch(loop, &fk->listener, EPOLLIN), 0);
        return;
    }
    fail_msg("no free port for the fake nameserver");
}

static void fake_stop(struct fake *fk)
{
    if (!fk->port)
        return;
    for (int i = 0; i < TCP_CONNS; i++)
        if (fk->conns[i].w.fd != -1)
            fake_close_conn(fk, &fk->conns[i]);
    tg_loop_unwatch(fk->loop, &fk->udp);
    tg_loop_unwatch(fk->loop, &fk->listener);
    close(fk->udp.fd);
    close(fk->listener.fd);
    fk->port = 0;
}

/* ---- fixture ---- */

struct fixture;

/* What one lookup's callback saw, and what it should do. */
struct result {
    struct fixture   *f;
    unsigned          calls;
    unsigned          inside;   /* calls made while tg_resolve was on the stack */
    int               status;
    size_t            n;
    tg_resolve_addr_t addrs[TG_RESOLVE_MAX];
    uint64_t          at_ms;    /* tg_clock_ms() of the call */
    /* behaviour */
    bool              destroy;  /* destroys the resolver */
    const char       *again;    /* starts a lookup of this host (into next_result) */
    struct result    *next_result;
    int               again_rc;
};

struct fixture {
    tg_loop_t      loop;
    tg_resolver_t *r;
    struct fake    dns;
    bool           in_resolve;
    unsigned       calls;       /* callbacks, all results */
    struct result  res[RESULTS];
};

static void on_result(int status, const tg_resolve_addr_t *addrs, size_t n, void *arg)
{
    struct result *res = arg;
    struct fixture *f = res->f;
    res->calls++;
    f->calls++;
    res->inside += f->in_resolve;
    res->status = status;
    res->n = n;
    res->at_ms = tg_clock_ms();
    TG_ASSERT(n <= TG_RESOLVE_MAX);
    TG_ASSERT((status == 0) == (n > 0));
    TG_ASSERT(n == 0 || addrs != NULL);
    if (n)
        memcpy(res->addrs, addrs, n * sizeof(*addrs));
    if (res->again) {
        f->in_resolve = true;
        res->again_rc = tg_resolve(f->r, res->again, "80", on_result, res->next_result);
        f->in_resolve = false;
    }
    if (res->destroy) {
        tg_resolver_destroy(f->r);
        f->r = NULL;
    }
}

static struct result *result(struct fixture *f, int i)
{
    struct result *res = &f->res[i];
    res->f = f;
    return res;
}

/* Starts a lookup recorded in res[<i>]; returns tg_resolve's result. */
static int resolve(struct fixture *f, int i, const char *host, const char *port)
{
    f->in_resolve = true;
    int rc = tg_resolve(f->r, host, port, on_result, result(f, i));
    f->in_resolve = false;
    assert_true(tg_resolver_check(f->r));
    return rc;
}

/* Runs the loop until <calls> callbacks in all have run, or WAIT_MS passed. */
static void run_until_calls(struct fixture *f, unsigned calls)
{
    uint64_t end = tg_clock_ms() + WAIT_MS;
    while (f->calls < calls && tg_clock_ms() < end) {
        tg_loop_run_once(&f->loop, 20);
        if (f->r)
            assert_true(tg_resolver_check(f->r));
    }
    assert_int_equal(f->calls, calls);
}

/* A few more iterations: nothing else may happen. */
static void run_idle(struct fixture *f, int iterations)
{
    unsigned calls = f->calls;
    for (int i = 0; i < iterations; i++) {
        tg_loop_run_once(&f->loop, 5);
        if (f->r)
            assert_true(tg_resolver_check(f->r));
    }
    assert_int_equal(f->calls, calls);
}

static struct fixture *fixture_new(void)
{
    struct fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    assert_int_equal(tg_loop_init(&f->loop, 0), 0);
    return f;
}

/* The machine's configuration, with short timeouts and one try. */
static int setup_system(void **state)
{
    struct fixture *f = fixture_new();
    tg_resolver_opts_t o = { .timeout_ms = 500, .tries = 1 };
    f->r = tg_resolver_create(&f->loop, &o);
    assert_non_null(f->r);
    assert_true(tg_resolver_check(f->r));
    *state = f;
    return 0;
}

static int setup_fake(void **state, enum fake_mode mode)
{
    struct fixture *f = fixture_new();
    fake_start(&f->dns, &f->loop, mode);
    char servers[32];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u", (unsigned)f->dns.port);
    tg_resolver_opts_t o = { .timeout_ms = 200, .tries = 2, .servers = servers };
    f->r = tg_resolver_create(&f->loop, &o);
    assert_non_null(f->r);
    assert_true(tg_resolver_check(f->r));
    *state = f;
    return 0;
}

static int setup_answer(void **state)
{
    return setup_fake(state, FAKE_ANSWER);
}

static int setup_nxdomain(void **state)
{
    return setup_fake(state, FAKE_NXDOMAIN);
}

static int setup_silent(void **state)
{
    return setup_fake(state, FAKE_SILENT);
}

static int setup_truncate(void **state)
{
    return setup_fake(state, FAKE_TRUNCATE);
}

/* A nameserver address where nothing listens: a UDP port just closed. */
static int setup_closed(void **state)
{
    struct fixture *f = fixture_new();
    struct sockaddr_in a = { .sin_family = AF_INET };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof(a);
    int u = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(u >= 0);
    assert_int_equal(bind(u, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(u, (struct sockaddr *)&a, &alen), 0);
    close(u);
    char servers[32];
    snprintf(servers, sizeof(servers), "127.0.0.1:%u", (unsigned)ntohs(a.sin_port));
    tg_resolver_opts_t o = { .timeout_ms = 2000, .tries = 2, .servers = servers };
    f->r = tg_resolver_create(&f->loop, &o);
    assert_non_null(f->r);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->r)
        tg_resolver_destroy(f->r);
    fake_stop(&f->dns);
    tg_loop_fini(&f->loop);
    for (int i = 0; i < RESULTS; i++)
        TG_ASSERT(f->res[i].calls <= 1 && f->res[i].inside == 0);
    free(f);
    return 0;
}

static int group_setup(void **state)
{
    (void)state;
    return tg_resolve_lib_init();
}

static int group_teardown(void **state)
{
    (void)state;
    tg_resolve_lib_fini();
    return 0;
}

static bool is_loopback(const tg_resolve_addr_t *a)
{
    if (a->sa.sa_family == AF_INET)
        return a->len == sizeof(a->in) && (ntohl(a->in.sin_addr.s_addr) >> 24) == 127;
    return a->sa.sa_family == AF_INET6 && a->len == sizeof(a->in6) &&
           IN6_IS_ADDR_LOOPBACK(&a->in6.sin6_addr);
}

static uint16_t port_of(const tg_resolve_addr_t *a)
{
    return ntohs(a->sa.sa_family == AF_INET ? a->in.sin_port : a->in6.sin6_port);
}

/* ---- the machine's configuration ---- */

static void localhost_resolves_to_loopback(void **state)
{
    struct fixture *f = *state;
    struct result *res = result(f, 0);
    assert_int_equal(resolve(f, 0, "localhost", "8080"), 0);
    assert_int_equal(res->calls, 0); /* never inside tg_resolve */
    assert_int_equal(tg_resolver_pending(f->r), 1);
    run_until_calls(f, 1);
    assert_int_equal(res->status, 0);
    assert_true(res->n >= 1);
    for (size_t i = 0; i < res->n; i++) {
        assert_true(is_loopback(&res->addrs[i]));
        assert_int_equal(port_of(&res->addrs[i]), 8080);
    }
    assert_int_equal(tg_resolver_pending(f->r), 0);
    assert_int_equal(tg_resolver_sockets(f->r), 0); /* never asked a nameserver */
    run_idle(f, 3);
}

static void numeric_ipv4_resolves_to_itself(void **state)
{
    struct fixture *f = *state;
    struct result *res = result(f, 0);
    assert_int_equal(resolve(f, 0, "127.0.0.1", "80"), 0);
    assert_int_equal(res->calls, 0);
    run_until_calls(f, 1);
    assert_int_equal(res->status, 0);
    assert_int_equal(res->n, 1);
    assert_int_equal(res->addrs[0].sa.sa_family, AF_INET);
    assert_int_equal(res->addrs[0].len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohl(res->addrs[0].in.sin_addr.s_addr), INADDR_LOOPBACK);
    assert_int_equal(port_of(&res->addrs[0]), 80);
    assert_int_equal(tg_resolver_sockets(f->r), 0);
}

static void numeric_ipv6_resolves_to_itself(void **state)
{
    struct fixture *f = *state;
    struct result *res = result(f, 0);
    assert_int_equal(resolve(f, 0, "::1", NULL), 0);
    run_until_calls(f, 1);
    assert_int_equal(res->status, 0);
    assert_int_equal(res->n, 1);
    assert_int_equal(res->addrs[0].sa.sa_family, AF_INET6);
    assert_int_equal(res->addrs[0].len, sizeof(struct sockaddr_in6));
    assert_true(IN6_IS_ADDR_LOOPBACK(&res->addrs[0].in6.sin6_addr));
    assert_int_equal(port_of(&res->addrs[0]), 0);
}

static void bad_arguments_are_refused_without_a_callback(void **state)
{
    struct fixture *f = *state;
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(resolve(f, 0, NULL, "80"), -EINVAL);
    assert_int_equal(resolve(f, 0, "", "80"), -EINVAL);
    assert_int_equal(resolve(f, 0, longname, "80"), -EINVAL);
    assert_int_equal(resolve(f, 0, "localhost", ""), -EINVAL);
    assert_int_equal(resolve(f, 0, "localhost", "http"), -EINVAL);
    assert_int_equal(resolve(f, 0, "localhost", "65536"), -EINVAL);
    assert_int_equal(resolve(f, 0, "localhost", "123456"), -EINVAL);
    assert_int_equal(resolve(f, 0, "localhost", "-1"), -EINVAL);
    assert_int_equal(resolve(f, 0, "localhost", "8o"), -EINVAL);
    assert_int_equal(tg_resolve(f->r, "localhost", "80", NULL, NULL), -EINVAL);
    assert_int_equal(tg_resolver_pending(f->r), 0);
    /* The edges that are fine. */
    assert_int_equal(resolve(f, 1, "127.0.0.1", "65535"), 0);
    assert_int_equal(resolve(f, 2, "127.0.0.1", "0"), 0);
    run_until_calls(f, 2);
    assert_int_equal(port_of(&f->res[1].addrs[0]), 65535);
    assert_int_equal(port_of(&f->res[2].addrs[0]), 0);
    assert_int_equal(f->res[0].calls, 0);
}

/* Whatever the machine's nameservers do (answer NXDOMAIN, refuse, or not be
 * reachable at all), a name under .invalid (RFC 6761 6.4) fails in bounded time. */
static void invalid_name_fails_in_bounded_time(void **state)
{
    struct fixture *f = *state;
    struct result *res = result(f, 0);
    uint64_t start = tg_clock_ms();
    assert_int_equal(resolve(f, 0, "no-such-host.invalid", "80"), 0);
    run_until_calls(f, 1);
    assert_true(res->status < 0);
    assert_int_not_equal(res->status, -ECANCELED);
    assert_int_equal(res->n, 0);
    assert_true(res->at_ms - start < WAIT_MS);
    print_message("no-such-host.invalid: %s after %llu ms\n", strerror(-res->status),
                  (unsigned long long)(res->at_ms - start));
    run_idle(f, 3);
    assert_int_equal(tg_resolver_sockets(f->r), 0);
}

static void destroy_cancels_what_has_not_run(void **state)
{
    struct fixture *f = *state;
    /* One waiting for a nameserver (or already failed), one answered but not
     * delivered, one from the hosts file: none has run. */
    assert_int_equal(resolve(f, 0, "no-such-host.invalid", "80"), 0);
    assert_int_equal(resolve(f, 1, "127.0.0.1", "80"), 0);
    assert_int_equal(resolve(f, 2, "localhost", "80"), 0);
    assert_int_equal(tg_resolver_pending(f->r), 3);
    tg_resolver_destroy(f->r);
    f->r = NULL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(f->res[i].calls, 1);
        assert_int_equal(f->res[i].status, -ECANCELED);
        assert_int_equal(f->res[i].n, 0);
    }
    run_idle(f, 3); /* the resolver's memory goes with this mail drain */
}

static void destroy_inside_a_callback_cancels_the_rest(void **state)
{
    struct fixture *f = *state;
    result(f, 0)->destroy = true;
    assert_int_equal(resolve(f, 0, "127.0.0.1", "80"), 0);
    assert_int_equal(resolve(f, 1, "no-such-host.invalid", "80"), 0);
    assert_int_equal(resolve(f, 2, "::1", "80"), 0);
    run_until_calls(f, 3);
    assert_null(f->r);
    assert_int_equal(f->res[0].status, 0);
    assert_int_equal(f->res[1].status, -ECANCELED);
    assert_int_equal(f->res[2].status, -ECANCELED);
    run_idle(f, 3);
}

static void a_callback_may_start_another_lookup(void **state)
{
    struct fixture *f = *state;
    struct result *first = result(f, 0);
    first->again = "127.0.0.1";
    first->next_result = result(f, 1);
    assert_int_equal(resolve(f, 0, "localhost", "80"), 0);
    run_until_calls(f, 2);
    assert_int_equal(first->again_rc, 0);
    assert_int_equal(f->res[1].status, 0);
    assert_int_equal(f->res[1].inside, 0); /* not inside the nested tg_resolve either */
}

static void cancelled_lookups_never_call_back(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(resolve(f, 0, "127.0.0.1", "80"), 0);
    assert_int_equal(resolve(f, 1, "localhost", "80"), 0);
    assert_int_equal(resolve(f, 2, "127.0.0.1", "81"), 0);
    tg_resolve_cancel(f->r, &f->res[0]);
    tg_resolve_cancel(f->r, &f->res[2]);
    assert_true(tg_resolver_check(f->r));
    run_until_calls(f, 1);
    run_idle(f, 3);
    assert_int_equal(f->res[0].calls, 0);
    assert_int_equal(f->res[1].calls, 1);
    assert_int_equal(f->res[2].calls, 0);
    assert_int_equal(tg_resolver_pending(f->r), 0);
}

/* ---- a fake nameserver on loopback ---- */

static void name_is_found_by_the_nameserver(void **state)
{
    struct fixture *f = *state;
    struct result *res = result(f, 0);
    assert_int_equal(resolve(f, 0, "a.test", "443"), 0);
    assert_true(tg_resolver_sockets(f->r) >= 1); /* a UDP socket in the loop */
    run_until_calls(f, 1);
    assert_int_equal(res->status, 0);
    assert_int_equal(res->n, 1);
    assert_int_equal(res->addrs[0].sa.sa_family, AF_INET);
    assert_int_equal(ntohl(res->addrs[0].in.sin_addr.s_addr), 0x7f000007);
    assert_int_equal(port_of(&res->addrs[0]), 443);
    assert_int_equal(f->dns.udp_queries, 2); /* A and AAAA */
    assert_int_equal(f->dns.tcp_queries, 0);
    run_idle(f, 2);
    assert_int_equal(tg_resolver_sockets(f->r), 0); /* closed once idle */
}

static void unknown_name_is_enoent(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(resolve(f, 0, "b.test", "80"), 0);
    run_until_calls(f, 1);
    assert_int_equal(f->res[0].status, -ENOENT);
    assert_int_equal(f->res[0].n, 0);
}

static void silent_nameserver_times_out(void **state)
{
    struct fixture *f = *state;
    uint64_t start = tg_clock_ms();
    assert_int_equal(resolve(f, 0, "a.test", "80"), 0);
    run_until_calls(f, 1);
    uint64_t took = f->res[0].at_ms - start;
    assert_int_equal(f->res[0].status, -ETIMEDOUT);
    /* Two tries of 200 then 400 ms: not before the first has passed, and not
     * much after the second (the timer follows c-ares' own deadline). */
    assert_true(took >= 200);
    assert_true(took < 3000);
    assert_int_equal(f->dns.udp_queries, 4);
    run_idle(f, 2);
    assert_int_equal(tg_resolver_sockets(f->r), 0);
}

static void truncated_answer_is_asked_again_over_tcp(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(resolve(f, 0, "a.test", "80"), 0);
    run_until_calls(f, 1);
    assert_int_equal(f->res[0].status, 0);
    assert_int_equal(ntohl(f->res[0].addrs[0].in.sin_addr.s_addr), 0x7f000007);
    assert_true(f->dns.udp_queries >= 1);
    assert_true(f->dns.tcp_queries >= 1);
    run_idle(f, 2);
    assert_int_equal(tg_resolver_sockets(f->r), 0);
}

/* The kernel reports the refusal (ICMP port unreachable) as an error on the
 * socket: the lookup fails at once, without waiting for the 2 s timeout. */
static void unreachable_nameserver_fails_fast(void **state)
{
    struct fixture *f = *state;
    uint64_t start = tg_clock_ms();
    assert_int_equal(resolve(f, 0, "a.test", "80"), 0);
    run_until_calls(f, 1);
    print_message("closed port: %s after %llu ms\n", strerror(-f->res[0].status),
                  (unsigned long long)(f->res[0].at_ms - start));
    assert_int_equal(f->res[0].status, -ECONNREFUSED);
    assert_true(f->res[0].at_ms - start < 1000);
    run_idle(f, 2);
    assert_int_equal(tg_resolver_sockets(f->r), 0);
}

static void many_lookups_at_once_each_call_back_once(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < RESULTS; i++) {
        const char *host = i % 4 == 0 ? "127.0.0.1" : i % 4 == 1 ? "b.test" : "a.test";
        assert_int_equal(resolve(f, i, host, "80"), 0);
    }
    assert_int_equal(tg_resolver_pending(f->r), RESULTS);
    run_until_calls(f, RESULTS);
    for (int i = 0; i < RESULTS; i++) {
        assert_int_equal(f->res[i].calls, 1);
        assert_int_equal(f->res[i].status, i % 4 == 1 ? -ENOENT : 0);
    }
    assert_int_equal(tg_resolver_pending(f->r), 0);
}

/* c-ares closes its socket whenever it is idle and opens another for the next
 * query: the watches are reused and every lookup still ends. */
static void lookups_one_after_another_reopen_sockets(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 20; i++) {
        assert_int_equal(resolve(f, i, i % 2 ? "b.test" : "a.test", "80"), 0);
        run_until_calls(f, (unsigned)i + 1);
        assert_int_equal(f->res[i].status, i % 2 ? -ENOENT : 0);
        assert_int_equal(tg_resolver_sockets(f->r), 0);
    }
    assert_int_equal(f->dns.udp_queries, 40);
}

/* c-ares 1.18 sends an IPv4 literal to the nameservers when asked for any
 * family; ours never leaves the process. */
static void numeric_addresses_never_reach_the_nameserver(void **state)
{
    struct fixture *f = *state;
    uint64_t start = tg_clock_ms();
    assert_int_equal(resolve(f, 0, "127.0.0.1", "80"), 0);
    assert_int_equal(resolve(f, 1, "::1", "80"), 0);
    assert_int_equal(resolve(f, 2, "10.1.2.3", "80"), 0);
    assert_int_equal(tg_resolver_sockets(f->r), 0);
    run_until_calls(f, 3);
    assert_true(f->res[2].at_ms - start < 150); /* the server's timeout is 200 ms */
    for (int i = 0; i < 3; i++)
        assert_int_equal(f->res[i].status, 0);
    assert_int_equal(ntohl(f->res[2].addrs[0].in.sin_addr.s_addr), 0x0a010203);
    run_idle(f, 3);
    assert_int_equal(f->dns.udp_queries, 0);
}

static void destroy_with_a_query_in_flight(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(resolve(f, 0, "a.test", "80"), 0);
    assert_int_equal(resolve(f, 1, "b.test", "80"), 0);
    tg_loop_run_once(&f->loop, 0); /* the queries reach the (silent) server */
    assert_true(tg_resolver_sockets(f->r) >= 1);
    tg_resolver_destroy(f->r);
    f->r = NULL;
    assert_int_equal(f->res[0].status, -ECANCELED);
    assert_int_equal(f->res[1].status, -ECANCELED);
    run_idle(f, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(localhost_resolves_to_loopback, setup_system, teardown),
        cmocka_unit_test_setup_teardown(numeric_ipv4_resolves_to_itself, setup_system, teardown),
        cmocka_unit_test_setup_teardown(numeric_ipv6_resolves_to_itself, setup_system, teardown),
        cmocka_unit_test_setup_teardown(bad_arguments_are_refused_without_a_callback,
                                        setup_system, teardown),
        cmocka_unit_test_setup_teardown(invalid_name_fails_in_bounded_time, setup_system,
                                        teardown),
        cmocka_unit_test_setup_teardown(destroy_cancels_what_has_not_run, setup_system,
                                        teardown),
        cmocka_unit_test_setup_teardown(destroy_inside_a_callback_cancels_the_rest,
                                        setup_system, teardown),
        cmocka_unit_test_setup_teardown(a_callback_may_start_another_lookup, setup_system,
                                        teardown),
        cmocka_unit_test_setup_teardown(cancelled_lookups_never_call_back, setup_system,
                                        teardown),
        cmocka_unit_test_setup_teardown(name_is_found_by_the_nameserver, setup_answer, teardown),
        cmocka_unit_test_setup_teardown(unknown_name_is_enoent, setup_nxdomain, teardown),
        cmocka_unit_test_setup_teardown(silent_nameserver_times_out, setup_silent, teardown),
        cmocka_unit_test_setup_teardown(truncated_answer_is_asked_again_over_tcp,
                                        setup_truncate, teardown),
        cmocka_unit_test_setup_teardown(unreachable_nameserver_fails_fast, setup_closed,
                                        teardown),
        cmocka_unit_test_setup_teardown(many_lookups_at_once_each_call_back_once, setup_answer,
                                        teardown),
        cmocka_unit_test_setup_teardown(lookups_one_after_another_reopen_sockets, setup_answer,
                                        teardown),
        cmocka_unit_test_setup_teardown(numeric_addresses_never_reach_the_nameserver,
                                        setup_silent, teardown),
        cmocka_unit_test_setup_teardown(destroy_with_a_query_in_flight, setup_silent, teardown),
    };
    if (getenv("TG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("core/resolve", tests, group_setup, group_teardown);
}
