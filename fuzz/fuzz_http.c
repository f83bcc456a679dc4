/* fuzz/fuzz_http.c - arbitrary bytes, in arbitrary splits, through the HTTP
 * request layer of a real loop and connection (a socketpair stands in for the
 * client). The first input byte seeds the split sizes. Small limits so that
 * every refusal path and the pipelining back-pressure path are reachable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/conn.h"
#include "core/loop.h"
#include "net/http.h"

static tg_loop_t loop;
static tg_http_server_t http;

static void handle(tg_http_req_t *req, void *arg)
{
    (void)arg;
    /* Touch everything a handler may read, so ASan checks the pointers. */
    size_t sum = req->path.len + req->query.len + req->body->len;
    for (unsigned i = 0; i < req->nheaders; i++) {
        const tg_http_header_t *h = &req->headers[i];
        for (size_t k = 0; k < h->name.len; k++)
            sum += (unsigned char)h->name.p[k];
        for (size_t k = 0; k < h->value.len; k++)
            sum += (unsigned char)h->value.p[k];
    }
    char body[4096];
    size_t n = req->target.len < sizeof(body) ? req->target.len : sizeof(body);
    memcpy(body, req->target.p, n);
    tg_http_respond(req, sum % 7 ? 200 : 404, "text/plain", NULL, body, n);
}

static void drain(int fd)
{
    char buf[65536];
    while (read(fd, buf, sizeof(buf)) > 0)
        ;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        tg_http_limits_t lim;
        tg_http_limits_default(&lim);
        lim.max_uri = 256;
        lim.max_header_size = 1024;
        lim.max_headers = 16;
        lim.max_body = 4096;
        lim.max_out = 2048;
        if (tg_loop_init(&loop, 0) != 0 || tg_http_server_init(&http, &lim, 1, handle, NULL) != 0)
            abort();
        ready = 1;
    }
    if (size == 0)
        return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) != 0)
        abort();
    tg_conn_t *c = tg_loop_adopt(&loop, sv[0], &http.proto);
    if (!c)
        abort();
    uint32_t seed = data[0];
    size_t off = 1;
    while (off < size && tg_conn_open(c)) {
        seed = seed * 1103515245u + 12345u;
        size_t k = 1 + (seed >> 16) % 97;
        if (k > size - off)
            k = size - off;
        c->proto->on_data(c, (const char *)data + off, k);
        off += k;
        if ((seed >> 8) % 4 == 0) { /* let output go and back-pressure lift */
            tg_loop_run_once(&loop, 0);
            drain(sv[1]);
        }
    }
    for (int i = 0; i < 4; i++) {
        tg_loop_run_once(&loop, 0);
        drain(sv[1]);
    }
    if (c->state != TG_CONN_FREE && c->state != TG_CONN_CLOSED)
        tg_conn_close(c, TG_CONN_SHUTDOWN);
    tg_loop_run_once(&loop, 0);
    close(sv[1]);
    return 0;
}
