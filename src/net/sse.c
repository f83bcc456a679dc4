/* net/sse.c - see sse.h. */
#include "net/sse.h"

#include <stdlib.h>
#include <string.h>

#include "core/sbuf.h"
#include "net/close.h"
#include "net/json.h"

typedef struct sse_conn {
    tg_session_t     session; /* first: c->data points at the session */
    tg_sse_server_t *srv;
} sse_conn_t;

/* "data:" lines for <n> bytes of text: every line end (CRLF, CR or LF) starts
 * a new data line, so the client's EventSource joins them back with LF. */
static void data_lines(tg_sbuf_t *b, const char *p, size_t n)
{
    size_t i = 0;
    do {
        size_t start = i;
        while (i < n && p[i] != '\r' && p[i] != '\n')
            i++;
        tg_sbuf_put(b, "data: ", 6);
        tg_sbuf_put(b, p + start, i - start);
        tg_sbuf_put(b, "\n", 1);
        if (i < n && p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')
            i++;
        if (i < n)
            i++;
        else
            break;
    } while (1);
}

static tg_shared_t *to_shared(tg_sbuf_t *b)
{
    tg_shared_t *f = b->failed ? NULL : tg_shared_new(b->len);
    if (f)
        memcpy(f->data, b->p, b->len);
    tg_sbuf_free(b);
    return f;
}

static tg_shared_t *encode(const tg_msgview_t *m)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    char pos[TG_POS_TEXT_MAX];
    tg_pos_format(m->pos, pos);
    tg_sbuf_printf(&b, "id: %s\nevent: %s\n", pos, m->kind == 2 ? "message-base64" : "message");
    if (m->kind == 2) {
        tg_sbuf_put(&b, "data: ", 6);
        tg_base64(&b, m->data, m->len);
        tg_sbuf_put(&b, "\n", 1);
    } else {
        data_lines(&b, m->data, m->len);
    }
    tg_sbuf_put(&b, "\n", 1);
    return to_shared(&b);
}

static void sse_send_msg(tg_session_t *s, const tg_msgview_t *m, tg_shared_t **cache)
{
    if (!cache[TG_SLOT_SSE])
        cache[TG_SLOT_SSE] = encode(m);
    tg_shared_t *f = cache[TG_SLOT_SSE];
    if (!f) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    (void)tg_conn_write_ref(s->conn, f, 0, f->len);
}

static void sse_send_json(tg_session_t *s, const char *type, const tg_pos_t *pos,
                          const char *json, size_t len)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    if (pos) {
        char p[TG_POS_TEXT_MAX];
        tg_pos_format(*pos, p);
        tg_sbuf_printf(&b, "id: %s\n", p);
    }
    tg_sbuf_printf(&b, "event: %s\n", type);
    data_lines(&b, json, len);
    tg_sbuf_put(&b, "\n", 1);
    if (b.failed)
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
    else
        (void)tg_conn_write(s->conn, b.p, b.len);
    tg_sbuf_free(&b);
}

static size_t sse_backlog(tg_session_t *s)
{
    return tg_conn_pending(s->conn);
}

static void sse_close(tg_session_t *s, int code, const char *why)
{
    if (!tg_conn_open(s->conn))
        return;
    sse_send_json(s, "close", NULL, why ? why : "", why ? strlen(why) : 0);
    tg_conn_close_after_flush(s->conn, code);
}

static const tg_transport_t sse_transport = {
    .name = "sse",
    .send_msg = sse_send_msg,
    .send_json = sse_send_json,
    .backlog = sse_backlog,
    .close = sse_close,
};

static void sse_data(tg_conn_t *c, const char *p, size_t n)
{
    (void)c; /* nothing is expected from the client after its request */
    (void)p;
    (void)n;
}

static void sse_timer(tg_conn_t *c)
{
    sse_conn_t *e = c->data;
    /* Only when idle: a stream that is moving keeps proxies awake itself. */
    if (tg_conn_pending(c) == 0)
        (void)tg_conn_write(c, ": heartbeat\n\n", 13);
    tg_conn_timer_arm(c, e->srv->heartbeat_ms);
}

static void sse_drained(tg_conn_t *c)
{
    sse_conn_t *e = c->data;
    if (e->session.hub->on_drained)
        e->session.hub->on_drained(e->session.hub, &e->session);
}

static void sse_stop(tg_conn_t *c)
{
    tg_conn_close_after_flush(c, TG_CLOSE_SHUTDOWN);
}

static void sse_conn_close(tg_conn_t *c, int reason)
{
    (void)reason;
    sse_conn_t *e = c->data;
    if (!e)
        return;
    e->session.hub->on_close(e->session.hub, &e->session);
    free(e);
    c->data = NULL;
}

void tg_sse_server_init(tg_sse_server_t *sse, uint32_t heartbeat_ms, tg_hub_t *hub)
{
    sse->heartbeat_ms = heartbeat_ms;
    sse->hub = hub;
    sse->proto = (tg_proto_t){
        .name = "sse",
        .ctx = sse,
        .on_data = sse_data,
        .on_drained = sse_drained,
        .on_timer = sse_timer,
        .on_stop = sse_stop,
        .on_close = sse_conn_close,
    };
}

bool tg_sse_wanted(const tg_http_req_t *req)
{
    return tg_http_header_has(req, "Accept", "text/event-stream");
}

tg_session_t *tg_sse_accept(tg_sse_server_t *sse, tg_http_req_t *req)
{
    sse_conn_t *e = calloc(1, sizeof(*e));
    if (!e) {
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        return NULL;
    }
    e->srv = sse;
    e->session.conn = req->conn;
    e->session.transport = &sse_transport;
    e->session.hub = sse->hub;
    tg_list_init(&e->session.items);
    /* The stream ends when the connection does: no length, and not reusable. */
    tg_http_respond_head(req, 200, "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
                                   "X-Accel-Buffering: no\r\nConnection: close\r\n");
    tg_http_takeover(req, &sse->proto, e);
    if (sse->heartbeat_ms)
        tg_conn_timer_arm(req->conn, sse->heartbeat_ms);
    return &e->session;
}
