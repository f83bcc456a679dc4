/* core/accept.c - see accept.h. */
#include "core/accept.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "core/log.h"

/* ---- addresses ---- */

int tg_addr_parse(const char *spec, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(spec, ':');
    if (!colon || colon[1] == '\0')
        return -EINVAL;
    size_t hlen = (size_t)(colon - spec);
    if (hlen >= sizeof(host))
        return -EINVAL;
    memcpy(host, spec, hlen);
    host[hlen] = '\0';
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (errno || *end || port < 0 || port > 65535)
        return -EINVAL;

    memset(ss, 0, sizeof(*ss));
    if (hlen >= 2 && host[0] == '[' && host[hlen - 1] == ']') {
        struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
            return -EINVAL;
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*a6);
        return 0;
    }
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    a4->sin_family = AF_INET;
    a4->sin_port = htons((uint16_t)port);
    *len = sizeof(*a4);
    if (hlen == 0)
        a4->sin_addr.s_addr = htonl(INADDR_ANY);
    else if (strcmp(host, "localhost") == 0)
        a4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
        return -EINVAL;
    return 0;
}

void tg_addr_local(int fd, char *buf, size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
            inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
            port = ntohs(a6->sin6_port);
            snprintf(buf, cap, "[%s]:%u", host, port);
            return;
        }
        struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a4->sin_addr, host, sizeof(host));
        port = ntohs(a4->sin_port);
    }
    snprintf(buf, cap, "%s:%u", host, port);
}

int tg_listen_open(const struct sockaddr_storage *ss, socklen_t len, bool reuseport, int backlog)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    int one = 1, err;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1)
        goto fail;
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) == -1)
        goto fail;
    if (bind(fd, (const struct sockaddr *)ss, len) == -1 || listen(fd, backlog) == -1)
        goto fail;
    return fd;
fail:
    err = -errno; /* read it before close() can change it */
    close(fd);
    return err;
}

/* True for accept() failures that mean "not now" rather than "this socket". */
static bool out_of_resources(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

static void count_starved(tg_accept_stats_t *st, const char *where)
{
    /* Logged once per episode: a listener stays set aside between retries, so
     * a steady EMFILE logs once every few thousand refusals, not per refusal. */
    uint64_t n = atomic_fetch_add_explicit(&st->emfile, 1, memory_order_relaxed);
    if ((n & 1023) == 0)
        tg_log_warn("%s: out of file descriptors or memory, accepting again in %d ms "
                    "(%llu times so far)",
                    where, TG_ACCEPT_RETRY_MS, (unsigned long long)n + 1);
}

/* ---- reuseport mode ---- */

static void listener_retry(tg_timer_t *t)
{
    tg_listener_t *l = tg_container_of(t, tg_listener_t, retry);
    l->starved = false;
    if (l->w.fd != -1)
        (void)tg_loop_rewatch(l->loop, &l->w, EPOLLIN);
}

static void listener_ready(tg_watch_t *w, uint32_t events)
{
    (void)events;
    tg_listener_t *l = tg_container_of(w, tg_listener_t, w);
    for (int i = 0; i < TG_ACCEPT_BATCH && !l->loop->stopping; i++) {
        int fd = accept4(l->w.fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (out_of_resources(errno)) {
                count_starved(&l->stats, "accept");
                l->starved = true;
                (void)tg_loop_rewatch(l->loop, &l->w, 0);
                tg_timer_arm(&l->loop->wheel, &l->retry, TG_ACCEPT_RETRY_MS);
            }
            return; /* EAGAIN: drained */
        }
        atomic_fetch_add_explicit(&l->stats.accepted, 1, memory_order_relaxed);
        tg_loop_adopt(l->loop, fd, l->proto);
    }
}

int tg_listener_attach(tg_listener_t *l, tg_loop_t *loop, int fd, const tg_proto_t *proto)
{
    memset(l, 0, sizeof(*l));
    l->w.fd = fd;
    l->w.cb = listener_ready;
    l->loop = loop;
    l->proto = proto;
    tg_timer_init(&l->retry, listener_retry);
    int rc = tg_loop_watch(loop, &l->w, EPOLLIN);
    if (rc != 0) {
        close(fd);
        l->w.fd = -1;
    }
    return rc;
}

void tg_listener_close(tg_listener_t *l)
{
    if (l->w.fd == -1)
        return;
    tg_timer_cancel(&l->loop->wheel, &l->retry);
    tg_loop_unwatch(l->loop, &l->w);
    close(l->w.fd);
    l->w.fd = -1;
}

/* ---- acceptor mode ---- */

int tg_acceptor_init(tg_acceptor_t *a, tg_loop_t **loops, int nloops)
{
    memset(a, 0, sizeof(*a));
    a->loops = loops;
    a->nloops = nloops;
    a->stop_efd = -1;
    a->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (a->epfd == -1)
        return -errno;
    a->stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = UINT32_MAX };
    if (a->stop_efd == -1 || epoll_ctl(a->epfd, EPOLL_CTL_ADD, a->stop_efd, &ev) == -1) {
        int err = -errno;
        if (a->stop_efd != -1)
            close(a->stop_efd);
        close(a->epfd);
        a->epfd = a->stop_efd = -1;
        return err;
    }
    return 0;
}

int tg_acceptor_add(tg_acceptor_t *a, int fd, const tg_proto_t *proto)
{
    if (a->nfds == TG_LISTENERS_MAX) {
        close(fd);
        return -ENOSPC;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = (uint32_t)a->nfds };
    if (epoll_ctl(a->epfd, EPOLL_CTL_ADD, fd, &ev) == -1) {
        int err = -errno;
        close(fd);
        return err;
    }
    a->fds[a->nfds] = fd;
    a->protos[a->nfds] = proto;
    a->nfds++;
    return 0;
}

/* The loop with the fewest connections, counting those on their way to it. */
static tg_loop_t *least_loaded(tg_acceptor_t *a)
{
    tg_loop_t *best = a->loops[0];
    uint64_t best_n = UINT64_MAX;
    for (int i = 0; i < a->nloops; i++) {
        tg_loop_t *l = a->loops[i];
        uint64_t n = tg_counter_get(&l->stats.live) +
                     (uint64_t)atomic_load_explicit(&l->inbound, memory_order_relaxed);
        if (n < best_n) {
            best = l;
            best_n = n;
        }
    }
    return best;
}

/* Accepts what is pending on listener <i>; false when starved. */
static bool accept_some(tg_acceptor_t *a, int i)
{
    for (int k = 0; k < TG_ACCEPT_BATCH; k++) {
        int fd = accept4(a->fds[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd == -1) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (out_of_resources(errno)) {
                count_starved(&a->stats, "accept");
                return false;
            }
            return true;
        }
        atomic_fetch_add_explicit(&a->stats.accepted, 1, memory_order_relaxed);
        tg_loop_post_fd(least_loaded(a), fd, a->protos[i]);
    }
    return true;
}

static void set_listening(tg_acceptor_t *a, bool on)
{
    for (int i = 0; i < a->nfds; i++) {
        struct epoll_event ev = { .events = on ? EPOLLIN : 0, .data.u32 = (uint32_t)i };
        (void)epoll_ctl(a->epfd, EPOLL_CTL_MOD, a->fds[i], &ev);
    }
}

static void *acceptor_main(void *arg)
{
    tg_acceptor_t *a = arg;
    struct epoll_event ev[TG_LISTENERS_MAX + 1];
    bool starved = false;
    for (;;) {
        int n = epoll_wait(a->epfd, ev, TG_LISTENERS_MAX + 1, starved ? TG_ACCEPT_RETRY_MS : -1);
        if (n == -1 && errno != EINTR)
            break;
        if (starved && n <= 0) {
            starved = false;
            set_listening(a, true);
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (ev[i].data.u32 == UINT32_MAX)
                return NULL; /* stop */
            if (!starved && !accept_some(a, (int)ev[i].data.u32)) {
                starved = true;
                set_listening(a, false);
            }
        }
    }
    return NULL;
}

int tg_acceptor_start(tg_acceptor_t *a)
{
    int rc = pthread_create(&a->thread, NULL, acceptor_main, a);
    if (rc != 0)
        return -rc;
    a->started = true;
    pthread_setname_np(a->thread, "tg-accept");
    return 0;
}

void tg_acceptor_stop(tg_acceptor_t *a)
{
    if (a->epfd == -1)
        return;
    if (a->started) {
        uint64_t one = 1;
        (void)!write(a->stop_efd, &one, sizeof(one));
        pthread_join(a->thread, NULL);
        a->started = false;
    }
    for (int i = 0; i < a->nfds; i++)
        close(a->fds[i]);
    a->nfds = 0;
    close(a->stop_efd);
    close(a->epfd);
    a->epfd = a->stop_efd = -1;
}
