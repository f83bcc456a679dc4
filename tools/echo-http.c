/* tools/echo-http.c - an HTTP/1.1 echo server on tidegate's own loop and HTTP
 * layer: the backend behind nginx in bench/gate.sh.
 *
 * Every request gets 200 with the request's body and its content-type (else
 * application/octet-stream), as examples/echo answers a gate job, over
 * keep-alive. One IO loop on one thread (the main thread only waits for a
 * signal), so it matches examples/echo, which also answers on one thread: the
 * benchmark then compares the proxies in front of them. SIGTERM or SIGINT
 * stops it (requests in flight get up to 1 s).
 *
 *   echo-http [--listen HOST:PORT] [--max-body SIZE]
 *
 * Prints "echo-http: listening on HOST:PORT" to stderr once it accepts. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/accept.h"
#include "core/buf.h"
#include "core/loop.h"
#include "net/http.h"

static struct {
    tg_loop_t loop;
    tg_http_server_t http;
    tg_listener_t listener;
    char *scratch; /* max_body bytes: a body split over chunks is copied here */
} E;

/* A body that arrived in one chunk is answered from that chunk; one spread over
 * several is copied once into the scratch buffer (loop thread only). */
static const void *body_bytes(const tg_buf_t *b)
{
    if (b->len == 0)
        return NULL;
    if (b->head == b->tail && !b->head->ref)
        return b->head->data + b->head->rd;
    tg_buf_copy_out(b, 0, E.scratch, b->len);
    return E.scratch;
}

static void handle(tg_http_req_t *req, void *arg)
{
    (void)arg;
    char ctype[256] = "application/octet-stream";
    const tg_str_t *t = tg_http_header(req, "content-type");
    if (t && t->len > 0 && t->len < sizeof(ctype)) { /* llhttp refuses CR and LF in values */
        memcpy(ctype, t->p, t->len);
        ctype[t->len] = '\0';
    }
    tg_http_respond(req, 200, ctype, NULL, body_bytes(req->body), req->body->len);
}

/* The loop's on_stop, on its thread: no new connections from here. */
static void close_listener(tg_loop_t *loop)
{
    (void)loop;
    tg_listener_close(&E.listener);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: echo-http [options]\n"
            "  --listen HOST:PORT  where to listen (127.0.0.1:8081; port 0: any free one)\n"
            "  --max-body BYTES    largest request body, else 413 (1048576)\n"
            "  --help\n"
            "Every request gets 200 with its body and content-type back. SIGTERM/SIGINT stop.\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"listen", required_argument, NULL, 'l'},
        {"max-body", required_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *listen_at = "127.0.0.1:8081";
    tg_http_limits_t lim;
    tg_http_limits_default(&lim);
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen_at = optarg;
            break;
        case 'b': {
            char *end;
            unsigned long long n = strtoull(optarg, &end, 10);
            if (*end || n == 0 || n > (1ull << 30)) {
                fprintf(stderr, "echo-http: --max-body takes 1 to 1073741824\n");
                return 2;
            }
            lim.max_body = n;
            break;
        }
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    if (tg_addr_parse(listen_at, &ss, &sslen) != 0) {
        fprintf(stderr, "echo-http: cannot parse '%s' (HOST:PORT, [V6]:PORT or :PORT)\n",
                listen_at);
        return 2;
    }

    /* As in tidegate's main: signals are blocked in every thread and taken
     * here, so the loop thread never runs a handler. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);

    int rc, fd;
    E.loop.epfd = -1;
    E.listener.w.fd = -1;
    E.scratch = malloc(lim.max_body);
    if (!E.scratch) {
        fprintf(stderr, "echo-http: out of memory\n");
        return 1;
    }
    if ((rc = tg_http_server_init(&E.http, &lim, 1, handle, NULL)) != 0)
        goto fail;
    E.http.server_name = "echo-http";
    if ((rc = tg_loop_init(&E.loop, 0)) != 0)
        goto fail;
    E.loop.on_stop = close_listener;
    E.loop.drain_ms = lim.send_timeout_ms;
    if ((fd = tg_listen_open(&ss, sslen, false, 4096)) < 0) {
        rc = fd;
        goto fail;
    }
    char bound[128];
    tg_addr_local(fd, bound, sizeof(bound));
    if ((rc = tg_listener_attach(&E.listener, &E.loop, fd, &E.http.proto)) != 0) /* takes fd */
        goto fail;
    if ((rc = tg_loop_start(&E.loop)) != 0)
        goto fail;
    fprintf(stderr, "echo-http: listening on %s\n", bound);

    for (;;) {
        int sig = sigwaitinfo(&sigs, NULL);
        if (sig == SIGTERM || sig == SIGINT)
            break; /* else EINTR */
    }
    tg_loop_stop(&E.loop, 1000);
    tg_loop_join(&E.loop);
    tg_listener_close(&E.listener); /* if the loop never ran its on_stop */
    tg_loop_fini(&E.loop);
    tg_http_server_fini(&E.http);
    free(E.scratch);
    return 0;
fail:
    fprintf(stderr, "echo-http: %s: %s\n", listen_at, strerror(-rc));
    tg_listener_close(&E.listener); /* a no-op unless attached */
    tg_loop_fini(&E.loop);          /* a no-op unless initialised */
    if (E.http.loops)
        tg_http_server_fini(&E.http);
    free(E.scratch);
    return 1;
}
