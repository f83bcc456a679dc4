/* gate/dial.c - see dial.h. */
#include "gate/dial.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/resolve.h"

typedef struct dialer {
    tg_dialers_t *set;
    char          host[256];
    char          port[8];
    tg_timer_t    timer;      /* the next attempt */
    uint32_t      backoff_ms; /* the wait after the next failure */
    tg_conn_t    *conn;       /* the link, while there is one */
    bool          warned;     /* failures of this episode were logged */
} dialer_t;

struct tg_dialers {
    tg_loop_t        *loop;
    const tg_proto_t *proto;
    tg_resolver_t    *resolver;
    bool              stopped;
    int               n;
    dialer_t          d[TG_DIALERS_MAX];
};

static void retry(dialer_t *d, const char *why)
{
    if (!d->warned)
        tg_log_warn("gate: backend %s:%s: %s; dialing again every %u ms at most", d->host,
                    d->port, why, TG_DIAL_MAX_MS);
    d->warned = true;
    if (d->set->stopped)
        return;
    tg_timer_arm(&d->set->loop->wheel, &d->timer, d->backoff_ms);
    d->backoff_ms = d->backoff_ms * 2 > TG_DIAL_MAX_MS ? TG_DIAL_MAX_MS : d->backoff_ms * 2;
}

static int connect_to(const tg_resolve_addr_t *a)
{
    int fd = socket(a->sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1)
        return -errno;
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, &a->sa, a->len) == -1 && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void resolved(int status, const tg_resolve_addr_t *addrs, size_t n, void *arg)
{
    dialer_t *d = arg;
    if (status == -ECANCELED || d->set->stopped)
        return;
    if (status != 0) {
        char why[96];
        snprintf(why, sizeof(why), "cannot resolve the name (%s)", strerror(-status));
        retry(d, why);
        return;
    }
    int fd = -1;
    for (size_t i = 0; i < n && fd < 0; i++)
        fd = connect_to(&addrs[i]);
    if (fd < 0) {
        retry(d, strerror(-fd));
        return;
    }
    d->conn = tg_loop_adopt(d->set->loop, fd, d->set->proto);
    if (!d->conn)
        retry(d, "out of memory");
    /* A refused connection shows as the link closing: tg_dial__closed. */
}

static void dial(tg_timer_t *t)
{
    dialer_t *d = tg_container_of(t, dialer_t, timer);
    if (d->set->stopped || d->conn)
        return;
    int rc = tg_resolve(d->set->resolver, d->host, d->port, resolved, d);
    if (rc != 0)
        retry(d, strerror(-rc));
}

tg_dialers_t *tg_dialers_create(tg_loop_t *loop, const char *list, const tg_proto_t *proto,
                                char *err, size_t cap)
{
    tg_dialers_t *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, cap, "gate: out of memory");
        return NULL;
    }
    s->loop = loop;
    s->proto = proto;
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *colon = memrchr(p, ':', len);
        size_t hlen = colon ? (size_t)(colon - p) : 0, plen = colon ? len - hlen - 1 : 0;
        if (s->n == TG_DIALERS_MAX || !colon || hlen == 0 || hlen >= sizeof(s->d[0].host) ||
            plen == 0 || plen >= sizeof(s->d[0].port) || strspn(colon + 1, "0123456789") < plen) {
            snprintf(err, cap, "gate.backends: '%.*s' is not HOST:PORT (at most %d of them)",
                     (int)len, p, TG_DIALERS_MAX);
            free(s);
            return NULL;
        }
        dialer_t *d = &s->d[s->n++];
        d->set = s;
        const char *h = p;
        if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') { /* [v6]:port */
            h++;
            hlen -= 2;
        }
        memcpy(d->host, h, hlen);
        memcpy(d->port, colon + 1, plen);
        d->backoff_ms = TG_DIAL_MIN_MS;
        tg_timer_init(&d->timer, dial);
        p += len + (comma ? 1 : 0);
    }
    s->resolver = tg_resolver_create(loop, NULL);
    if (!s->resolver) {
        snprintf(err, cap, "gate: cannot set up the resolver");
        free(s);
        return NULL;
    }
    for (int i = 0; i < s->n; i++)
        tg_timer_arm(&loop->wheel, &s->d[i].timer, 0);
    return s;
}

void tg_dialers_stop(tg_dialers_t *s)
{
    if (!s || s->stopped)
        return;
    s->stopped = true;
    for (int i = 0; i < s->n; i++)
        tg_timer_cancel(&s->loop->wheel, &s->d[i].timer);
    tg_resolver_destroy(s->resolver); /* pending lookups end with -ECANCELED */
    s->resolver = NULL;
}

void tg_dialers_destroy(tg_dialers_t *s)
{
    if (!s)
        return;
    if (s->resolver)
        tg_resolver_destroy(s->resolver);
    free(s);
}

void tg_dial__closed(tg_dialers_t *s, tg_conn_t *c, bool up)
{
    for (int i = 0; s && i < s->n; i++) {
        dialer_t *d = &s->d[i];
        if (d->conn != c)
            continue;
        d->conn = NULL;
        if (up) {
            d->backoff_ms = TG_DIAL_MIN_MS;
            d->warned = false;
        }
        retry(d, up ? "the link dropped" : "cannot connect");
        return;
    }
}
