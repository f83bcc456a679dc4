/* net/stream.c - the connection part of long HTTP responses (see stream.h),
 * and the chunked format: one chunk per message, holding its JSON envelope
 * and a newline (newline-delimited JSON). */
#include "net/stream.h"

#include <stdlib.h>
#include <string.h>

#include "net/close.h"
#include "net/sse.h"

typedef struct stream_conn {
    tg_session_t              session; /* first: c->data points at the session */
    tg_stream_server_t       *srv;
    const tg_stream_format_t *fmt;
} stream_conn_t;

static stream_conn_t *sc_of(tg_session_t *s)
{
    return tg_container_of(s, stream_conn_t, session);
}

static tg_shared_t *to_shared(tg_sbuf_t *b)
{
    tg_shared_t *f = b->failed ? NULL : tg_shared_new(b->len);
    if (f)
        memcpy(f->data, b->p, b->len);
    tg_sbuf_free(b);
    return f;
}

static void st_send_msg(tg_session_t *s, const tg_msgview_t *m, tg_shared_t **cache)
{
    const tg_stream_format_t *fmt = sc_of(s)->fmt;
    if (!cache[fmt->slot]) {
        tg_sbuf_t b = TG_SBUF_INIT;
        fmt->message(&b, m);
        cache[fmt->slot] = to_shared(&b);
    }
    tg_shared_t *f = cache[fmt->slot];
    if (!f) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    (void)tg_conn_write_ref(s->conn, f, 0, f->len);
}

static void st_send_json(tg_session_t *s, const char *type, const tg_pos_t *pos,
                         const char *json, size_t len)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    sc_of(s)->fmt->notice(&b, type, pos, json, len);
    if (b.failed)
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
    else
        (void)tg_conn_write(s->conn, b.p, b.len);
    tg_sbuf_free(&b);
}

static size_t st_backlog(tg_session_t *s)
{
    return tg_conn_pending(s->conn);
}

/* Ends the body properly, then the connection. */
static void finish(tg_conn_t *c, int reason)
{
    stream_conn_t *sc = c->data;
    if (!tg_conn_open(c))
        return;
    if (*sc->fmt->trailer)
        (void)tg_conn_write(c, sc->fmt->trailer, strlen(sc->fmt->trailer));
    tg_conn_close_after_flush(c, reason);
}

static void st_close(tg_session_t *s, int code, const char *why)
{
    char json[192];
    int n = snprintf(json, sizeof(json), "{\"type\":\"close\",\"reason\":\"%s\"}",
                     why ? why : tg_close_info(code)->name);
    st_send_json(s, "close", NULL, json, (size_t)n);
    finish(s->conn, code);
}

static const tg_transport_t stream_transport = {
    .name = "stream",
    .send_msg = st_send_msg,
    .send_json = st_send_json,
    .backlog = st_backlog,
    .close = st_close,
};

static void st_data(tg_conn_t *c, const char *p, size_t n)
{
    (void)c; /* nothing is expected from the client after its request */
    (void)p;
    (void)n;
}

static void st_timer(tg_conn_t *c)
{
    stream_conn_t *sc = c->data;
    /* Only when idle: a stream that is moving keeps proxies awake itself. */
    if (tg_conn_pending(c) == 0)
        (void)tg_conn_write(c, sc->fmt->heartbeat, strlen(sc->fmt->heartbeat));
    tg_conn_timer_arm(c, sc->srv->heartbeat_ms);
}

static void st_stop(tg_conn_t *c)
{
    finish(c, TG_CLOSE_SHUTDOWN);
}

static void st_conn_close(tg_conn_t *c, int reason)
{
    (void)reason;
    stream_conn_t *sc = c->data;
    if (!sc)
        return;
    sc->session.hub->on_close(sc->session.hub, &sc->session);
    free(sc);
    c->data = NULL;
}

void tg_stream_server_init(tg_stream_server_t *ss, uint32_t heartbeat_ms, tg_hub_t *hub)
{
    ss->heartbeat_ms = heartbeat_ms;
    ss->hub = hub;
    ss->proto = (tg_proto_t){
        .name = "stream",
        .ctx = ss,
        .on_data = st_data,
        .on_drained = tg_session_conn_drained,
        .on_timer = st_timer,
        .on_stop = st_stop,
        .on_close = st_conn_close,
    };
}

tg_session_t *tg_stream_accept(tg_stream_server_t *ss, tg_http_req_t *req,
                               const tg_stream_format_t *fmt)
{
    stream_conn_t *sc = calloc(1, sizeof(*sc));
    if (!sc) {
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        return NULL;
    }
    sc->srv = ss;
    sc->fmt = fmt;
    sc->session.conn = req->conn;
    sc->session.transport = &stream_transport;
    sc->session.hub = ss->hub;
    tg_list_init(&sc->session.items);
    tg_http_respond_head(req, 200, fmt->head);
    tg_http_takeover(req, &ss->proto, sc);
    if (ss->heartbeat_ms)
        tg_conn_timer_arm(req->conn, ss->heartbeat_ms);
    return &sc->session;
}

/* ---- the chunked format ---- */

/* One chunk: size line, <body> and a newline, chunk end. */
static void chunk_of(tg_sbuf_t *b, const tg_sbuf_t *body)
{
    tg_sbuf_printf(b, "%zx\r\n", body->len + 1);
    tg_sbuf_put(b, body->p, body->len);
    tg_sbuf_put(b, "\n\r\n", 3);
}

static void chunked_message(tg_sbuf_t *b, const tg_msgview_t *m)
{
    tg_sbuf_t env = TG_SBUF_INIT;
    tg_session_envelope(&env, m);
    if (env.failed)
        b->failed = true;
    else
        chunk_of(b, &env);
    tg_sbuf_free(&env);
}

static void chunked_notice(tg_sbuf_t *b, const char *type, const tg_pos_t *pos,
                           const char *json, size_t len)
{
    (void)type; /* the JSON names its type */
    (void)pos;
    tg_sbuf_t body = { (char *)json, len, len, false };
    chunk_of(b, &body);
}

const tg_stream_format_t tg_stream_chunked = {
    .name = "chunked",
    .slot = TG_SLOT_STREAM,
    .head = "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
            "Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n",
    .heartbeat = "1\r\n\n\r\n", /* an empty line: readers of JSON lines skip it */
    .trailer = "0\r\n\r\n",
    .message = chunked_message,
    .notice = chunked_notice,
};
