/* app/server.c - wiring: config to loops, listeners, workers and the HTTP
 * front, plus the built-in endpoints. */
#include "app/server.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "app/admin.h"
#include "app/page.h"
#include "core/log.h"
#include "core/sbuf.h"

static bool path_is(const tg_http_req_t *r, const char *p)
{
    return r->path.len == strlen(p) && memcmp(r->path.p, p, r->path.len) == 0;
}

static void respond_text(tg_http_req_t *r, int status, const char *ctype, const char *extra,
                         const char *text)
{
    tg_http_respond(r, status, ctype, extra, text, strlen(text));
}

typedef struct stats_req {
    tg_server_t   *srv;
    tg_http_req_t *req;  /* NULL once the client left */
    bool           json; /* /stats, else /metrics */
} stats_req_t;

static void stats_abort(void *arg)
{
    ((stats_req_t *)arg)->req = NULL; /* freed when the answer comes */
}

static void stats_answer(void *arg, const tg_chan_count_t *top, int ntop)
{
    stats_req_t *sr = arg;
    if (sr->req) {
        tg_sbuf_t b = TG_SBUF_INIT;
        if (sr->json)
            tg_stats_json(sr->srv, top, ntop, &b);
        else
            tg_stats_prometheus(sr->srv, top, ntop, &b);
        if (b.failed)
            respond_text(sr->req, 503, "text/plain", NULL, "503 out of memory\n");
        else
            tg_http_respond(sr->req, 200, sr->json ? "application/json" : "text/plain; version=0.0.4",
                            NULL, b.p, b.len);
        tg_sbuf_free(&b);
    }
    free(sr);
}

static void handle(tg_http_req_t *r, void *arg)
{
    tg_server_t *s = arg;
    if (tg_admin_route(s, r))
        return;
    if (tg_apphub_route(&s->hub, r))
        return;
    if (s->gate && tg_gate_http(s->gate, r))
        return;
    bool get = r->head || strcmp(r->method, "GET") == 0;
    bool known = path_is(r, "/healthz") || path_is(r, "/stats") || path_is(r, "/metrics") ||
                 path_is(r, "/");
    if (!known) {
        respond_text(r, 404, "text/plain", NULL, "404 Not Found\n");
        return;
    }
    if (!get) {
        respond_text(r, 405, "text/plain", "Allow: GET, HEAD\r\n", "405 Method Not Allowed\n");
        return;
    }
    if (path_is(r, "/")) {
        tg_http_respond(r, 200, "text/html; charset=utf-8", NULL, tg_demo_page, tg_demo_page_len);
        return;
    }
    if (path_is(r, "/healthz")) {
        respond_text(r, 200, "text/plain", NULL, "ok\n");
        return;
    }
    /* Presence comes from every loop's channels: answer once they replied. */
    stats_req_t *sr = malloc(sizeof(*sr));
    if (!sr) {
        respond_text(r, 503, "text/plain", NULL, "503 out of memory\n");
        return;
    }
    sr->srv = s;
    sr->req = r;
    sr->json = path_is(r, "/stats");
    tg_http_defer(r, stats_abort, sr);
    if (tg_push_top(s->push, r->conn->loop, stats_answer, sr) != 0) {
        sr->req = NULL;
        free(sr);
        respond_text(r, 503, "text/plain", NULL, "503 out of memory\n");
    }
}

/* Reuseport mode: each loop closes its own listener when it stops; the
 * gate's home loop stops the gate. */
static void close_own_listener(tg_loop_t *loop)
{
    tg_server_t *s = loop->app;
    if (s->gate && loop->id == 0)
        tg_gate_stop(s->gate);
    if (s->listeners)
        tg_listener_close(&s->listeners[loop->id]);
    if (s->frame_listeners)
        tg_listener_close(&s->frame_listeners[loop->id]);
}

/* Opens the listeners of one address for <proto>: one for the acceptor, or
 * one per loop (reuseport) into <*per_loop>. */
static int open_listeners(tg_server_t *s, const char *addr, const tg_proto_t *proto,
                          tg_listener_t **per_loop, char *bound, size_t bound_cap, char *err,
                          size_t cap)
{
    struct sockaddr_storage ss;
    socklen_t len;
    if (tg_addr_parse(addr, &ss, &len) != 0) {
        snprintf(err, cap, "listen: cannot parse '%s' (HOST:PORT, [V6]:PORT or :PORT)", addr);
        return -EINVAL;
    }
    int n = s->cfg.reuseport ? s->nloops : 1;
    tg_listener_t *ls = NULL;
    if (s->cfg.reuseport) {
        ls = *per_loop = calloc((size_t)n, sizeof(*ls));
        if (!ls)
            return -ENOMEM;
        for (int i = 0; i < n; i++)
            ls[i].w.fd = -1;
    }
    for (int i = 0; i < n; i++) {
        int fd = tg_listen_open(&ss, len, s->cfg.reuseport, s->cfg.backlog);
        if (fd < 0) {
            snprintf(err, cap, "listen %s: %s", addr, strerror(-fd));
            return fd;
        }
        /* Accepted sockets inherit the listener's send buffer size (and its
         * lock against autotuning). */
        int sndbuf = (int)s->cfg.sndbuf;
        if (sndbuf && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == -1) {
            int e = errno;
            close(fd);
            snprintf(err, cap, "listen %s: SO_SNDBUF: %s", addr, strerror(e));
            return -e;
        }
        if (i == 0) {
            /* Port 0 picks one port: the other listeners share it. */
            tg_addr_local(fd, bound, bound_cap);
            struct sockaddr_storage got;
            socklen_t glen = sizeof(got);
            if (getsockname(fd, (struct sockaddr *)&got, &glen) == 0) {
                ss = got;
                len = glen;
            }
        }
        int rc = s->cfg.reuseport ? tg_listener_attach(&ls[i], &s->loops[i], fd, proto)
                                  : tg_acceptor_add(&s->acceptor, fd, proto);
        if (rc != 0) {
            snprintf(err, cap, "listen %s: %s", addr, strerror(-rc));
            return rc;
        }
    }
    return 0;
}

/* The gate lives on loop 0 (its home): backend links, routes and jobs. */
static int start_gate(tg_server_t *s, char *err, size_t cap)
{
    const tg_config_t *cfg = &s->cfg;
    tg_routes_t *routes = malloc(sizeof(*routes));
    if (!routes)
        return -ENOMEM;
    tg_config_routes(cfg, routes);
    if (!cfg->gate_listen[0] && !cfg->gate_backends[0] && routes->n == 0) {
        free(routes);
        return 0; /* no way for a backend to reach us: the gate is off */
    }
    tg_gate_cfg_t gc = { .max_frame = cfg->gate_max_frame,
                         .lz4_min = cfg->gate_lz4_min,
                         .ping_ms = cfg->gate_ping_ms,
                         .hello_ms = 5000,
                         .cache_size = cfg->gate_cache_size };
    snprintf(gc.listen, sizeof(gc.listen), "%s", cfg->gate_listen);
    snprintf(gc.backends, sizeof(gc.backends), "%s", cfg->gate_backends);
    s->hub.loops = s->loop_ptrs;
    s->hub.gate_home = &s->loops[0];
    tg_gate_hooks_t hooks = tg_apphub_gate_hooks(&s->hub);
    s->gate = tg_gate_create(&gc, routes, &s->loops[0], s->loop_ptrs, s->nloops, &hooks, err, cap);
    free(routes);
    if (!s->gate)
        return -ENOMEM;
    int rc = tg_gate_start(s->gate, err, cap);
    if (rc != 0)
        return rc;
    s->hub.gate = s->gate;
    if (tg_gate_bound(s->gate)[0])
        tg_log_info("backend listener on %s", tg_gate_bound(s->gate));
    return 0;
}

int tg_server_start(tg_server_t *s, const tg_config_t *cfg, char *err, size_t cap)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->acceptor.epfd = -1;
    s->started_ms = tg_clock_ms();
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    s->nloops = cfg->io_threads > 0 ? cfg->io_threads : (cores > 0 ? (int)cores : 1);
    if (s->nloops > TG_LOOP_MAX)
        s->nloops = TG_LOOP_MAX;

    int rc = -ENOMEM;
    s->loops = calloc((size_t)s->nloops, sizeof(*s->loops));
    s->loop_ptrs = calloc((size_t)s->nloops, sizeof(*s->loop_ptrs));
    if (!s->loops || !s->loop_ptrs)
        goto fail;
    for (int i = 0; i < s->nloops; i++)
        s->loops[i].epfd = -1;
    if ((rc = tg_http_server_init(&s->http, &cfg->http, s->nloops, handle, s)) != 0)
        goto fail;
    for (int i = 0; i < s->nloops; i++) {
        if ((rc = tg_loop_init(&s->loops[i], i)) != 0) {
            snprintf(err, cap, "io loop: %s", strerror(-rc));
            goto fail;
        }
        s->loops[i].app = s;
        s->loops[i].on_stop = close_own_listener;
        s->loops[i].drain_ms = cfg->http.send_timeout_ms;
        s->loops[i].coalesce_ms = cfg->push_coalesce_ms;
        if (!cfg->push_coalesce_ms) { /* a fixed hold wins */
            s->loops[i].coalesce_busy_ms = cfg->push_coalesce_busy_ms;
            s->loops[i].coalesce_above = cfg->push_coalesce_above;
        }
        s->loop_ptrs[i] = &s->loops[i];
        char why[128];
        if (tg_loop_batch_sends(&s->loops[i], cfg->io_uring, why, sizeof(why)) != 0 && i == 0)
            tg_log_info("io_uring unavailable (%s): one send() per connection", why);
    }
    tg_chan_opts_t chan_defaults;
    tg_chan_rule_t rules[TG_CHAN_RULES_MAX];
    int nrules = tg_config_chan_rules(cfg, &chan_defaults, rules);
    s->push = tg_push_create(s->loop_ptrs, s->nloops, &chan_defaults, rules, nrules);
    if (!s->push) {
        rc = -ENOMEM;
        goto fail;
    }
    tg_wsconn_cfg_t ws = { .max_message = cfg->ws_max_message, .ping_ms = cfg->ws_ping_ms };
    if ((rc = tg_apphub_init(&s->hub, s->push, s->nloops, &ws, cfg->sse_heartbeat_ms,
                             cfg->poll_timeout_ms, cfg->push_max_output, cfg->frames_max,
                             cfg->frames_idle_ms)) != 0)
        goto fail;
    if ((rc = start_gate(s, err, cap)) != 0)
        goto fail;
    if (!cfg->reuseport && (rc = tg_acceptor_init(&s->acceptor, s->loop_ptrs, s->nloops)) != 0) {
        snprintf(err, cap, "acceptor: %s", strerror(-rc));
        goto fail;
    }
    if ((rc = open_listeners(s, cfg->listen, &s->http.proto, &s->listeners, s->bound,
                             sizeof(s->bound), err, cap)) != 0)
        goto fail;
    if (cfg->frames_listen[0] &&
        (rc = open_listeners(s, cfg->frames_listen, &s->hub.frames.proto, &s->frame_listeners,
                             s->frames_bound, sizeof(s->frames_bound), err, cap)) != 0)
        goto fail;
    if ((rc = tg_workers_start(&s->workers, cfg->workers)) != 0) {
        snprintf(err, cap, "workers: %s", strerror(-rc));
        goto fail;
    }
    for (int i = 0; i < s->nloops; i++)
        if ((rc = tg_loop_start(&s->loops[i])) != 0) {
            snprintf(err, cap, "io thread: %s", strerror(-rc));
            goto fail_threads;
        }
    if (!cfg->reuseport && (rc = tg_acceptor_start(&s->acceptor)) != 0) {
        snprintf(err, cap, "acceptor thread: %s", strerror(-rc));
        goto fail_threads;
    }
    tg_log_info("listening on %s (%d io threads, %d workers, %s)", s->bound, s->nloops,
                cfg->workers, cfg->reuseport ? "reuseport" : "acceptor");
    if (cfg->frames_listen[0])
        tg_log_info("TCP frames listening on %s", s->frames_bound);
    return 0;

fail_threads:
    tg_server_stop(s);
    return rc;
fail:
    if (rc == -ENOMEM && !*err)
        snprintf(err, cap, "out of memory");
    s->cfg.shutdown_grace_ms = 0;
    tg_server_stop(s);
    return rc;
}

void tg_server_stop(tg_server_t *s)
{
    tg_acceptor_stop(&s->acceptor); /* no new connections from here */
    for (int i = 0; s->loops && i < s->nloops; i++)
        if (s->loops[i].started)
            tg_loop_stop(&s->loops[i], s->cfg.shutdown_grace_ms);
    for (int i = 0; s->loops && i < s->nloops; i++)
        tg_loop_join(&s->loops[i]);
    bool workers = s->workers.threads != NULL;
    if (workers)
        tg_workers_stop(&s->workers);
    if (s->gate)
        tg_gate_stop(s->gate); /* if loop 0 never ran its on_stop */
    if (s->push)
        tg_push_closing(s->push); /* mail still queued is released, not acted on */
    for (int i = 0; s->loops && i < s->nloops; i++) {
        if (s->listeners && s->listeners[i].w.fd != -1)
            tg_listener_close(&s->listeners[i]);
        if (s->frame_listeners && s->frame_listeners[i].w.fd != -1)
            tg_listener_close(&s->frame_listeners[i]);
        tg_loop_fini(&s->loops[i]); /* also runs completions the workers posted */
    }
    if (workers)
        tg_workers_fini(&s->workers);
    tg_gate_destroy(s->gate);
    s->gate = NULL;
    tg_push_destroy(s->push);
    s->push = NULL;
    tg_apphub_fini(&s->hub);
    if (s->http.loops)
        tg_http_server_fini(&s->http);
    free(s->listeners);
    free(s->frame_listeners);
    free(s->loop_ptrs);
    free(s->loops);
    s->listeners = NULL;
    s->frame_listeners = NULL;
    s->loop_ptrs = NULL;
    s->loops = NULL;
}
