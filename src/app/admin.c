/* app/admin.c - see admin.h. */
#include "app/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define PURGE_ARG_MAX 1024 /* bytes of a decoded prefix */

static bool path_is(const tg_http_req_t *r, const char *p)
{
    return r->path.len == strlen(p) && memcmp(r->path.p, p, r->path.len) == 0;
}

static void respond_json(tg_http_req_t *req, int status, const char *extra, const char *json)
{
    tg_http_respond(req, status, "application/json", extra, json, strlen(json));
}

/* 127.0.0.1 or ::1 (also as ::ffff:127.0.0.1): a process on this machine that
 * did not pick another source address on purpose. */
static bool peer_is_local(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getpeername(fd, (struct sockaddr *)&ss, &len) == -1)
        return false;
    if (ss.ss_family == AF_INET)
        return ((struct sockaddr_in *)&ss)->sin_addr.s_addr == htonl(INADDR_LOOPBACK);
    if (ss.ss_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    static const uint8_t mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1 };
    return IN6_IS_ADDR_LOOPBACK(a) || memcmp(a->s6_addr, mapped, 16) == 0;
}

/* "Bearer KEY" with KEY equal to <key>, compared in time independent of
 * where they differ. */
static bool bearer_ok(const tg_str_t *h, const char *key)
{
    size_t n = strlen(key);
    if (!h || h->len != 7 + n || strncasecmp(h->p, "Bearer ", 7) != 0)
        return false;
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(h->p[7 + i] ^ key[i]);
    return diff == 0;
}

/* 0 when <req> may use the admin endpoints, else the status to refuse it with. */
static int guard(const tg_server_t *s, const tg_http_req_t *req)
{
    if (s->cfg.admin_key[0])
        return bearer_ok(tg_http_header(req, "Authorization"), s->cfg.admin_key) ? 0 : 401;
    return peer_is_local(req->conn->w.fd) ? 0 : 403;
}

static int hex(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The query parameter <name>, percent-decoded into <out> (<cap> bytes).
 * Returns its length, 0 when absent or empty, -1 when malformed or too long. */
static int query_arg(tg_str_t q, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = q.p, *end = q.p + q.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
            size_t n = 0;
            for (const char *v = p + nl + 1; v < stop; v++) {
                char c = *v;
                if (c == '%') {
                    if (stop - v < 3 || hex(v[1]) < 0 || hex(v[2]) < 0)
                        return -1;
                    c = (char)(hex(v[1]) * 16 + hex(v[2]));
                    v += 2;
                } else if (c == '+') {
                    c = ' ';
                }
                if (n == cap)
                    return -1;
                out[n++] = c;
            }
            return (int)n;
        }
        p = stop + 1;
    }
    return 0;
}

/* ---- purge: client loop -> home loop -> client loop ---- */

/* A deferred purge request, found again by its connection id and token. */
typedef struct purge_wait {
    uint64_t       token;
    tg_http_req_t *req;
} purge_wait_t;

typedef struct purge {
    tg_mail_t    mail;
    tg_server_t *srv;
    tg_conn_id_t client;
    uint64_t     token;
    long         result; /* entries dropped, or -ENOENT */
    int          route_len, prefix_len;
    char         route[TG_ROUTE_NAME_MAX + 1];
    char         prefix[PURGE_ARG_MAX];
} purge_t;

static atomic_uint_fast64_t next_token;

static void purge_abort(void *arg)
{
    free(arg); /* the answer finds no request and is dropped */
}

/* Client loop: the home loop has done it. */
static void purge_done(tg_mail_t *m, void *arg)
{
    purge_t *p = tg_container_of(m, purge_t, mail);
    tg_conn_t *c = tg_conn_lookup(arg, p->client);
    purge_wait_t *w = c ? tg_http_deferred(c, purge_abort) : NULL;
    if (w && w->token == p->token) {
        tg_http_req_t *req = w->req;
        free(w);
        char body[64];
        if (p->result < 0)
            respond_json(req, 404, NULL,
                         "{\"error\":\"no_such_route\",\"message\":\"no route has that name\"}\n");
        else {
            snprintf(body, sizeof(body), "{\"purged\":%ld}\n", p->result);
            respond_json(req, 200, NULL, body);
        }
    }
    free(p);
}

/* Home loop. */
static void purge_run(tg_mail_t *m, void *arg)
{
    (void)arg;
    purge_t *p = tg_container_of(m, purge_t, mail);
    tg_server_t *s = p->srv;
    p->result = tg_gate_cache_purge(s->gate, (tg_str_t){ p->route, (size_t)p->route_len },
                                    (tg_str_t){ p->prefix, (size_t)p->prefix_len });
    p->mail.cb = purge_done;
    tg_loop_post(s->loop_ptrs[tg_conn_id_loop(p->client)], &p->mail);
}

static void purge(tg_server_t *s, tg_http_req_t *req)
{
    if (strcmp(req->method, "POST") != 0) {
        respond_json(req, 405, "Allow: POST\r\n",
                     "{\"error\":\"method\",\"message\":\"purge with POST\"}\n");
        return;
    }
    purge_t *p = calloc(1, sizeof(*p));
    if (!p) {
        respond_json(req, 503, NULL, "{\"error\":\"out_of_memory\"}\n");
        return;
    }
    p->prefix_len = query_arg(req->query, "prefix", p->prefix, sizeof(p->prefix));
    p->route_len = query_arg(req->query, "route", p->route, sizeof(p->route) - 1);
    if (p->prefix_len < 0 || p->route_len < 0) {
        free(p);
        respond_json(req, 400, NULL,
                     "{\"error\":\"bad_request\",\"message\":\"prefix or route malformed or too "
                     "long\"}\n");
        return;
    }
    if (!s->gate) {
        free(p);
        respond_json(req, 200, NULL, "{\"purged\":0}\n"); /* no gate, nothing cached */
        return;
    }
    purge_wait_t *w = malloc(sizeof(*w));
    if (!w) {
        free(p);
        respond_json(req, 503, NULL, "{\"error\":\"out_of_memory\"}\n");
        return;
    }
    w->token = atomic_fetch_add_explicit(&next_token, 1, memory_order_relaxed);
    w->req = req;
    p->srv = s;
    p->client = tg_conn_id(req->conn);
    p->token = w->token;
    p->mail.cb = purge_run;
    tg_http_defer(req, purge_abort, w);
    tg_loop_post(s->hub.gate_home, &p->mail);
}

bool tg_admin_route(tg_server_t *s, tg_http_req_t *req)
{
    static const char pre[] = "/admin/";
    if (req->path.len < sizeof(pre) - 1 || memcmp(req->path.p, pre, sizeof(pre) - 1) != 0)
        return false;
    int refuse = guard(s, req);
    if (refuse == 401) {
        respond_json(req, 401, "WWW-Authenticate: Bearer realm=\"tidegate admin\"\r\n",
                     "{\"error\":\"unauthorized\",\"message\":\"admin endpoints want "
                     "Authorization: Bearer KEY\"}\n");
    } else if (refuse) {
        respond_json(req, 403, NULL,
                     "{\"error\":\"forbidden\",\"message\":\"admin endpoints answer local "
                     "peers only when admin.key is not set\"}\n");
    } else if (path_is(req, "/admin/cache/purge")) {
        purge(s, req);
    } else {
        respond_json(req, 404, NULL, "{\"error\":\"not_found\"}\n");
    }
    return true;
}
