/* core/resolve.h - asynchronous host name lookups on an IO loop, with c-ares.
 *
 * One resolver per IO loop, made by whoever owns the loop: create it on the
 * boot thread before tg_loop_start or on the loop's thread, then use and
 * destroy it on that loop's thread only. It owns a c-ares channel whose
 * sockets sit in the loop's epoll set (a tg_watch_t each) and whose timeouts
 * are one tg_timer_t in the loop's wheel: a lookup never blocks the loop.
 * Names are looked up in /etc/hosts first, then with the nameservers of
 * /etc/resolv.conf ("localhost" never leaves the machine); numeric addresses
 * are answered without any lookup.
 *
 * Process setup: c-ares wants ares_library_init() before the first channel
 * and ares_library_cleanup() after the last, on one thread. app/main.c calls
 * tg_resolve_lib_init() on the boot thread before any loop creates its
 * resolver and tg_resolve_lib_fini() after every loop has been finalised;
 * tests call them in their group setup and teardown.
 *
 * Cost: a lookup mallocs one request (about 600 bytes) until its callback has
 * run; boot and reconnect paths only, never per message. Reading /etc/hosts
 * happens inside tg_resolve (a local file, as getaddrinfo does); service names
 * are not looked up at all (numeric ports only), so no NSS module ever runs.
 *
 *   tg_resolve --hosts file, numeric, bad name--> DONE --next wheel run--> callback
 *        \---query sent--> PENDING --answer, error, timeout--> DONE (in the IO callback)
 *   tg_resolver_destroy: PENDING and DONE --> callback(-ECANCELED), before it returns
 *   tg_resolve_cancel:   the callback never runs (the query itself runs its course) */
#ifndef TG_CORE_RESOLVE_H
#define TG_CORE_RESOLVE_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/loop.h"

#define TG_RESOLVE_MAX 16 /* addresses handed to a callback at most */

typedef struct tg_resolver tg_resolver_t; /* opaque; owned by its loop's owner */

/* One address found, port included: ready for connect(fd, &a->sa, a->len). */
typedef struct tg_resolve_addr {
    union {
        struct sockaddr     sa;
        struct sockaddr_in  in;  /* sa.sa_family == AF_INET */
        struct sockaddr_in6 in6; /* sa.sa_family == AF_INET6 */
    };
    socklen_t len; /* sizeof(in) or sizeof(in6) */
} tg_resolve_addr_t;

/* The end of a lookup, on the loop thread, exactly once per accepted
 * tg_resolve, never from inside tg_resolve. <status> is 0 with 1..<n> addresses
 * in <addrs> (c-ares' preference order, RFC 6724; borrowed for the call), or a
 * negative errno with <n> 0:
 *   -ENOENT        no such name, or it has no address (NXDOMAIN, NODATA)
 *   -ETIMEDOUT     no nameserver answered in time
 *   -ECONNREFUSED  the nameservers refused or could not be reached
 *   -EAGAIN        temporary failure (SERVFAIL)
 *   -EINVAL        a name c-ares will not look up
 *   -EPROTO        a malformed answer
 *   -ENOMEM, -EIO  (anything else)
 *   -ECANCELED     the resolver was destroyed first
 * The callback may call tg_resolve, tg_resolve_cancel and tg_resolver_destroy. */
typedef void tg_resolve_cb(int status, const tg_resolve_addr_t *addrs, size_t n, void *arg);

/* Settings; zero means c-ares' default. */
typedef struct tg_resolver_opts {
    uint32_t    timeout_ms; /* first try's timeout per nameserver (5000); c-ares doubles it
                             * for each round over the nameservers */
    unsigned    tries;      /* rounds over the nameservers (4) */
    const char *servers;    /* "IP:PORT,..." instead of /etc/resolv.conf's (tests) */
} tg_resolver_opts_t;

/* Lifecycle. */

/* Boot thread, once per process, before the first create. Returns 0 or -ENOMEM. */
int  tg_resolve_lib_init(void);
/* Boot thread, once, after the last destroy. */
void tg_resolve_lib_fini(void);

/* A resolver for <loop>, which must be initialised (tg_loop_init), with
 * <opts> (NULL: defaults). Reads /etc/resolv.conf and friends. Returns NULL on
 * failure (out of memory, or bad <opts>->servers). */
tg_resolver_t *tg_resolver_create(tg_loop_t *loop, const tg_resolver_opts_t *opts);
/* Loop thread (or after the loop's thread was joined), before tg_loop_fini;
 * also from inside a tg_resolve_cb. Ends every lookup whose callback has not
 * run: those callbacks run now, with -ECANCELED, and may not start new lookups
 * (tg_resolve returns -ECANCELED). Closes the sockets at once; the last bytes
 * of memory go with the loop's next mailbox drain (or tg_loop_fini), since
 * epoll may still hold events for this iteration that point into them. */
void tg_resolver_destroy(tg_resolver_t *r);

/* Use. Loop thread. */

/* Looks up <host> (a name, or a numeric IPv4 or IPv6 address) for TCP port
 * <port> (decimal digits, 0..65535; NULL means 0), IPv4 and IPv6 both. Borrows
 * both strings for the call. Returns 0, and <cb> will run once with <arg>; or
 * -EINVAL (empty or over-long host, bad port), -ENOMEM, or -ECANCELED (the
 * resolver is being destroyed), and <cb> will not run. */
int tg_resolve(tg_resolver_t *r, const char *host, const char *port, tg_resolve_cb *cb,
               void *arg);

/* Every lookup started with <arg> ends without its callback: for an owner
 * that goes away first. The queries themselves run their course. */
void tg_resolve_cancel(tg_resolver_t *r, void *arg);

/* Introspection (tests). */

/* Lookups whose callback has not run (cancelled ones included until c-ares is
 * done with them). */
size_t tg_resolver_pending(const tg_resolver_t *r);
/* Sockets of the resolver currently in the loop's epoll set. */
size_t tg_resolver_sockets(const tg_resolver_t *r);
/* Invariants hold: counts match the lists, a lookup in c-ares has its timeout
 * timer armed, an answer waiting has its delivery armed, watched sockets are
 * distinct. */
bool tg_resolver_check(const tg_resolver_t *r);

#endif
