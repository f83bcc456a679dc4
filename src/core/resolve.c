/* core/resolve.c - c-ares on an IO loop: see resolve.h.
 *
 * c-ares tells us which sockets it wants watched (sock_state_cb) and when its
 * next timeout falls (ares_timeout); we register the sockets in the loop's
 * epoll set, keep one wheel timer on the earliest timeout, and call
 * ares_process_fd from the IO and timer callbacks. c-ares' own callbacks only
 * record results on the <done> list; user callbacks run from deliver(), once
 * c-ares has returned, so they may start lookups or destroy the resolver
 * (c-ares forbids both inside its callbacks).
 *
 * Socket watches outlive their sockets. epoll may already have returned an
 * event for a socket that an earlier callback of the same iteration closed:
 * the watch is kept (fd -1, ignored) and reused only from the next iteration
 * on, told apart by the loop's wakeup counter; the resolver itself is freed
 * by a mail, which the loop handles after every event of the iteration. */
#include "core/resolve.h"

#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>

#include "core/common.h"
#include "core/list.h"

#define HOST_MAX 255 /* bytes of a host name; DNS allows 253 (RFC 1035 2.3.4) */

typedef struct sock_watch sock_watch_t;
struct sock_watch {
    tg_watch_t     w;         /* fd -1 while unused */
    tg_resolver_t *r;
    uint64_t       freed_at;  /* the loop's wakeup count when it was let go */
    sock_watch_t  *next;      /* every watch of the resolver */
};

/* One lookup, from tg_resolve until its callback has run. */
typedef struct req {
    tg_link_t         link;   /* on r->pending, then on r->done */
    tg_resolver_t    *r;
    tg_resolve_cb    *cb;     /* NULL once cancelled */
    void             *arg;
    uint16_t          port;
    int               status; /* once done */
    size_t            n;
    tg_resolve_addr_t addrs[TG_RESOLVE_MAX];
} req_t;

struct tg_resolver {
    tg_loop_t    *loop;
    ares_channel  channel;   /* NULL once destroyed */
    tg_timer_t    timeout;   /* c-ares' next timeout */
    tg_timer_t    deliver;   /* runs callbacks of lookups answered inside tg_resolve */
    tg_link_t     pending;   /* requests c-ares holds */
    tg_link_t     done;      /* answered; callback not run yet */
    size_t        count;     /* requests on both lists */
    sock_watch_t *watches;
    bool          delivering;
    bool          closing;
    tg_mail_t     free_mail; /* frees the resolver after the iteration (destroy) */
};

/* ---- process setup ---- */

int tg_resolve_lib_init(void)
{
    return ares_library_init(ARES_LIB_INIT_ALL) == ARES_SUCCESS ? 0 : -ENOMEM;
}

void tg_resolve_lib_fini(void)
{
    ares_library_cleanup();
}

/* ---- results ---- */

static int errno_of(int status)
{
    switch (status) {
    case ARES_SUCCESS:
        return 0;
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
        return -ENOENT;
    case ARES_ETIMEOUT:
        return -ETIMEDOUT;
    case ARES_ECONNREFUSED:
    case ARES_EREFUSED:
        return -ECONNREFUSED;
    case ARES_ESERVFAIL:
        return -EAGAIN;
    case ARES_EBADNAME:
    case ARES_EBADFAMILY:
    case ARES_EBADFLAGS:
    case ARES_EBADHINTS:
    case ARES_ESERVICE:
        return -EINVAL;
    case ARES_EFORMERR:
    case ARES_EBADRESP:
    case ARES_EBADQUERY:
        return -EPROTO;
    case ARES_ENOMEM:
        return -ENOMEM;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
        return -ECANCELED;
    default:
        return -EIO;
    }
}

/* c-ares' end of a lookup (inside ares_getaddrinfo, ares_process_fd or
 * ares_destroy): records it and takes nothing else; deliver() runs the callback. */
static void on_answer(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    (void)timeouts;
    req_t *q = arg;
    q->status = errno_of(status);
    q->n = 0;
    if (status == ARES_SUCCESS && ai) {
        for (const struct ares_addrinfo_node *a = ai->nodes; a && q->n < TG_RESOLVE_MAX;
             a = a->ai_next) {
            tg_resolve_addr_t *out = &q->addrs[q->n];
            memset(out, 0, sizeof(*out));
            if (a->ai_family == AF_INET && a->ai_addrlen >= sizeof(out->in)) {
                memcpy(&out->in, a->ai_addr, sizeof(out->in));
                out->in.sin_port = htons(q->port);
                out->len = sizeof(out->in);
            } else if (a->ai_family == AF_INET6 && a->ai_addrlen >= sizeof(out->in6)) {
                memcpy(&out->in6, a->ai_addr, sizeof(out->in6));
                out->in6.sin6_port = htons(q->port);
                out->len = sizeof(out->in6);
            } else {
                continue;
            }
            q->n++;
        }
        if (q->n == 0)
            q->status = -ENOENT;
    }
    if (ai)
        ares_freeaddrinfo(ai);
    tg_link_remove(&q->link);
    tg_list_push(&q->r->done, &q->link);
}

/* Runs the callbacks of answered lookups, in answer order, including those a
 * callback starts that are answered at once. A callback may destroy the
 * resolver: destroy empties <done> itself, and the memory stays until the
 * loop's mail frees it, so the loop below just ends. */
static void deliver(tg_resolver_t *r)
{
    tg_link_t *l;
    if (r->delivering)
        return;
    r->delivering = true;
    while ((l = tg_list_shift(&r->done)) != NULL) {
        req_t *q = tg_container_of(l, req_t, link);
        r->count--;
        if (q->cb)
            q->cb(q->status, q->n ? q->addrs : NULL, q->n, q->arg);
        free(q);
    }
    r->delivering = false;
}

/* ---- time ---- */

/* Arms the timeout timer on c-ares' earliest timeout, or cancels it when
 * c-ares holds no query. */
static void rearm(tg_resolver_t *r)
{
    struct timeval tv, *next = ares_timeout(r->channel, NULL, &tv);
    if (!next) {
        tg_timer_cancel(&r->loop->wheel, &r->timeout);
        return;
    }
    /* c-ares rounds its offset down to the millisecond; one more keeps the
     * timer from firing just before the query is due and going round again. */
    uint64_t ms = (uint64_t)next->tv_sec * 1000 + (uint64_t)next->tv_usec / 1000 + 1;
    tg_timer_arm(&r->loop->wheel, &r->timeout, ms);
}

/* After every call into c-ares from the loop: timer, then callbacks. */
static void settle(tg_resolver_t *r)
{
    rearm(r);
    deliver(r);
}

static void on_timeout(tg_timer_t *t)
{
    tg_resolver_t *r = tg_container_of(t, tg_resolver_t, timeout);
    ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD); /* timeouts only */
    settle(r);
}

static void on_deliver(tg_timer_t *t)
{
    deliver(tg_container_of(t, tg_resolver_t, deliver));
}

/* ---- sockets ---- */

static uint64_t wakeups(const tg_resolver_t *r)
{
    return tg_counter_get(&r->loop->stats.wakeups);
}

static void on_io(tg_watch_t *w, uint32_t events)
{
    sock_watch_t *sw = tg_container_of(w, sock_watch_t, w);
    if (w->fd == -1)
        return; /* closed by an earlier callback of this iteration */
    tg_resolver_t *r = sw->r;
    /* An error or hangup is reported through a read, which c-ares turns into
     * "try the next server". */
    ares_socket_t rd = events & (EPOLLIN | EPOLLERR | EPOLLHUP) ? w->fd : ARES_SOCKET_BAD;
    ares_socket_t wr = events & EPOLLOUT ? w->fd : ARES_SOCKET_BAD;
    ares_process_fd(r->channel, rd, wr);
    settle(r); /* <sw> may be unused now: do not touch it */
}

static sock_watch_t *find_watch(tg_resolver_t *r, int fd)
{
    for (sock_watch_t *sw = r->watches; sw; sw = sw->next)
        if (sw->w.fd == fd)
            return sw;
    return NULL;
}

/* An unused watch that epoll cannot still hold an event for, or a new one. */
static sock_watch_t *take_watch(tg_resolver_t *r)
{
    for (sock_watch_t *sw = r->watches; sw; sw = sw->next)
        if (sw->w.fd == -1 && sw->freed_at != wakeups(r))
            return sw;
    sock_watch_t *sw = calloc(1, sizeof(*sw));
    if (!sw)
        return NULL;
    sw->w.fd = -1;
    sw->w.cb = on_io;
    sw->r = r;
    sw->next = r->watches;
    r->watches = sw;
    return sw;
}

/* c-ares opened, changed or is about to close (both 0) socket <fd>. A socket
 * that cannot be watched (out of memory) is left to its query's timeout. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    tg_resolver_t *r = data;
    uint32_t events = (readable ? EPOLLIN : 0u) | (writable ? EPOLLOUT : 0u);
    sock_watch_t *sw = find_watch(r, fd);
    if (!events) {
        if (sw) {
            tg_loop_unwatch(r->loop, &sw->w);
            sw->w.fd = -1;
            sw->freed_at = wakeups(r);
        }
        return;
    }
    if (sw) {
        if (sw->w.events != events && tg_loop_rewatch(r->loop, &sw->w, events) != 0)
            sw->w.events = 0; /* retried at the next change */
        return;
    }
    if (!(sw = take_watch(r)))
        return;
    sw->w.fd = fd;
    if (tg_loop_watch(r->loop, &sw->w, events) != 0) {
        sw->w.fd = -1;
        sw->freed_at = wakeups(r);
    }
}

/* ---- lifecycle ---- */

tg_resolver_t *tg_resolver_create(tg_loop_t *loop, const tg_resolver_opts_t *opts)
{
    TG_ASSERT(ares_library_initialized() == ARES_SUCCESS); /* tg_resolve_lib_init first */
    tg_resolver_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->loop = loop;
    tg_timer_init(&r->timeout, on_timeout);
    tg_timer_init(&r->deliver, on_deliver);
    tg_list_init(&r->pending);
    tg_list_init(&r->done);

    struct ares_options o;
    memset(&o, 0, sizeof(o));
    int mask = ARES_OPT_SOCK_STATE_CB;
    o.sock_state_cb = on_sock_state;
    o.sock_state_cb_data = r;
    if (opts && opts->timeout_ms) {
        o.timeout = opts->timeout_ms > INT32_MAX ? INT32_MAX : (int)opts->timeout_ms;
        mask |= ARES_OPT_TIMEOUTMS;
    }
    if (opts && opts->tries) {
        o.tries = opts->tries > 100 ? 100 : (int)opts->tries;
        mask |= ARES_OPT_TRIES;
    }
    if (ares_init_options(&r->channel, &o, mask) != ARES_SUCCESS)
        goto fail;
    if (opts && opts->servers &&
        ares_set_servers_ports_csv(r->channel, opts->servers) != ARES_SUCCESS)
        goto fail;
    return r;
fail:
    if (r->channel)
        ares_destroy(r->channel);
    free(r);
    return NULL;
}

static void free_all(tg_resolver_t *r)
{
    sock_watch_t *sw = r->watches;
    while (sw) {
        sock_watch_t *next = sw->next;
        free(sw);
        sw = next;
    }
    free(r);
}

static void on_free_mail(tg_mail_t *m, void *arg)
{
    (void)arg;
    free_all(tg_container_of(m, tg_resolver_t, free_mail));
}

void tg_resolver_destroy(tg_resolver_t *r)
{
    if (!r || r->closing)
        return; /* a callback run by this destroy destroys again */
    r->closing = true;
    tg_timer_cancel(&r->loop->wheel, &r->timeout);
    tg_timer_cancel(&r->loop->wheel, &r->deliver);
    /* Ends every query (on_answer: ARES_EDESTRUCTION) and closes every socket
     * (on_sock_state: unwatched). */
    ares_destroy(r->channel);
    r->channel = NULL;
    TG_ASSERT(tg_list_empty(&r->pending));
    for (tg_link_t *l = r->done.next; l != &r->done; l = l->next) {
        req_t *q = tg_container_of(l, req_t, link);
        q->status = -ECANCELED;
        q->n = 0;
    }
    bool nested = r->delivering; /* destroyed from a callback: deliver the rest here */
    r->delivering = false;
    deliver(r);
    TG_ASSERT(r->count == 0);
    if (r->loop->epfd == -1 && !nested) {
        free_all(r); /* the loop is gone: no event or caller can point here any more */
        return;
    }
    r->free_mail.cb = on_free_mail;
    tg_loop_post(r->loop, &r->free_mail);
}

/* ---- use ---- */

/* <s> as a port: NULL is 0; otherwise 1 to 5 digits, at most 65535. */
static int parse_port(const char *s, uint16_t *port)
{
    uint32_t v = 0;
    size_t i = 0;
    if (s) {
        for (; s[i]; i++) {
            if (s[i] < '0' || s[i] > '9' || i == 5)
                return -EINVAL;
            v = v * 10 + (uint32_t)(s[i] - '0');
        }
        if (i == 0 || v > 65535)
            return -EINVAL;
    }
    *port = (uint16_t)v;
    return 0;
}

/* Answers <q> when <host> is a numeric IPv4 (dotted quad) or IPv6 address.
 * c-ares 1.18 does not, for AF_UNSPEC: its fake_addrinfo() gives up on an
 * IPv4 literal once it is not also an IPv6 one, and sends the string to the
 * nameservers (the answer is right in the end, but only after they reply or
 * time out). */
static bool answer_numeric(req_t *q, const char *host)
{
    tg_resolve_addr_t *a = &q->addrs[0];
    memset(a, 0, sizeof(*a));
    if (inet_pton(AF_INET, host, &a->in.sin_addr) == 1) {
        a->in.sin_family = AF_INET;
        a->in.sin_port = htons(q->port);
        a->len = sizeof(a->in);
    } else if (inet_pton(AF_INET6, host, &a->in6.sin6_addr) == 1) {
        a->in6.sin6_family = AF_INET6;
        a->in6.sin6_port = htons(q->port);
        a->len = sizeof(a->in6);
    } else {
        return false;
    }
    q->status = 0;
    q->n = 1;
    return true;
}

int tg_resolve(tg_resolver_t *r, const char *host, const char *port, tg_resolve_cb *cb,
               void *arg)
{
    if (r->closing)
        return -ECANCELED;
    uint16_t p;
    if (!host || !host[0] || strnlen(host, HOST_MAX + 1) > HOST_MAX || !cb ||
        parse_port(port, &p) != 0)
        return -EINVAL;
    req_t *q = malloc(sizeof(*q));
    if (!q)
        return -ENOMEM;
    memset(q, 0, offsetof(req_t, addrs)); /* the addresses are written as found */
    q->r = r;
    q->cb = cb;
    q->arg = arg;
    q->port = p;
    r->count++;

    if (answer_numeric(q, host)) {
        tg_list_push(&r->done, &q->link);
    } else {
        /* No service: the port is ours to set, so c-ares never looks one up. */
        tg_list_push(&r->pending, &q->link);
        struct ares_addrinfo_hints hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        ares_getaddrinfo(r->channel, host, NULL, &hints, on_answer, q);
        rearm(r);
    }
    /* Answered already (hosts file, numeric, refused name): the callback waits
     * for the next wheel run, so it never runs inside this call. */
    if (!tg_list_empty(&r->done) && !r->delivering)
        tg_timer_arm(&r->loop->wheel, &r->deliver, 0);
    return 0;
}

void tg_resolve_cancel(tg_resolver_t *r, void *arg)
{
    tg_link_t *lists[] = { &r->pending, &r->done };
    for (size_t i = 0; i < TG_ARRAY_LEN(lists); i++)
        for (tg_link_t *l = lists[i]->next; l != lists[i]; l = l->next) {
            req_t *q = tg_container_of(l, req_t, link);
            if (q->arg == arg)
                q->cb = NULL;
        }
}

/* ---- introspection ---- */

size_t tg_resolver_pending(const tg_resolver_t *r)
{
    return r->count;
}

size_t tg_resolver_sockets(const tg_resolver_t *r)
{
    size_t n = 0;
    for (const sock_watch_t *sw = r->watches; sw; sw = sw->next)
        n += sw->w.fd != -1;
    return n;
}

static size_t list_len(const tg_link_t *head, const tg_resolver_t *r, bool *ok)
{
    size_t n = 0;
    for (const tg_link_t *l = head->next; l != head; l = l->next) {
        const req_t *q = tg_container_of(l, req_t, link);
        if (q->r != r)
            *ok = false;
        n++;
    }
    return n;
}

bool tg_resolver_check(const tg_resolver_t *r)
{
    bool ok = true;
    size_t pending = list_len(&r->pending, r, &ok);
    size_t done = list_len(&r->done, r, &ok);
    if (pending + done != r->count)
        return false;
    if (r->closing)
        return ok && r->count == 0 && tg_resolver_sockets(r) == 0;
    if (pending > 0 && !tg_timer_armed(&r->timeout))
        return false;
    if (done > 0 && !r->delivering && !tg_timer_armed(&r->deliver))
        return false;
    for (const sock_watch_t *sw = r->watches; sw; sw = sw->next) {
        if (sw->r != r || sw->w.cb != on_io)
            return false;
        if (sw->w.fd != -1 && (sw->w.events & ~(uint32_t)(EPOLLIN | EPOLLOUT)))
            return false;
        for (const sock_watch_t *o = sw->next; o; o = o->next)
            if (sw->w.fd != -1 && o->w.fd == sw->w.fd)
                return false;
    }
    return ok;
}
