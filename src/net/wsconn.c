/* net/wsconn.c - see wsconn.h.
 *
 *  OPEN --close frame received: echo it, close after flush--> (closed)
 *    \---- protocol error: close frame with the code, close after flush --/
 * The session ends (hub told) as soon as the connection leaves OPEN. */
#include "net/wsconn.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "net/close.h"

typedef struct ws_conn {
    tg_session_t        session; /* first: the transport's callbacks get it */
    tg_wsconn_server_t *srv;
    tg_ws_reader_t      reader;
    tg_buf_t            msg;     /* a message mid-arrival */
    bool                close_sent;
} ws_conn_t;

static ws_conn_t *ws_of(tg_session_t *s)
{
    return tg_container_of(s, ws_conn_t, session);
}

/* ---- output ---- */

static void send_frame(tg_conn_t *c, uint8_t opcode, const void *p, size_t n)
{
    uint8_t hdr[TG_WS_HEADER_MAX];
    size_t h = tg_ws_frame_header(hdr, opcode, false, n);
    if (tg_conn_write(c, hdr, h) == 0 && n > 0)
        (void)tg_conn_write(c, p, n);
}

static void ws_send_json(tg_session_t *s, const char *json, size_t len)
{
    send_frame(s->conn, TG_WS_OP_TEXT, json, len);
}

/* One text frame per message per loop, shared by every subscriber. */
static tg_shared_t *encode(const tg_msgview_t *m)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_put(&b, "0123456789", TG_WS_HEADER_MAX); /* room for the header */
    tg_session_envelope(&b, m);
    tg_shared_t *f = NULL;
    if (!b.failed) {
        size_t body = b.len - TG_WS_HEADER_MAX;
        uint8_t hdr[TG_WS_HEADER_MAX];
        size_t h = tg_ws_frame_header(hdr, TG_WS_OP_TEXT, false, body);
        f = tg_shared_new(h + body);
        if (f) {
            memcpy(f->data, hdr, h);
            memcpy(f->data + h, b.p + TG_WS_HEADER_MAX, body);
        }
    }
    tg_sbuf_free(&b);
    return f;
}

static void ws_send_msg(tg_session_t *s, const tg_msgview_t *m, tg_shared_t **cache)
{
    if (!cache[TG_SLOT_WS])
        cache[TG_SLOT_WS] = encode(m);
    tg_shared_t *f = cache[TG_SLOT_WS];
    if (!f) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    (void)tg_conn_write_ref(s->conn, f, 0, f->len);
}

static size_t ws_backlog(tg_session_t *s)
{
    return tg_conn_pending(s->conn);
}

static void ws_close(tg_session_t *s, int code, const char *why)
{
    ws_conn_t *w = ws_of(s);
    tg_conn_t *c = s->conn;
    if (!tg_conn_open(c))
        return;
    if (!w->close_sent) {
        uint8_t frame[2 + TG_WS_CONTROL_MAX];
        size_t n = tg_ws_close_frame(frame, tg_close_info(code)->ws_code, why ? why : "");
        (void)tg_conn_write(c, frame, n); /* a whole frame, header included */
        w->close_sent = true;
    }
    tg_conn_close_after_flush(c, code);
}

static const tg_transport_t ws_transport = {
    .name = "websocket",
    .send_msg = ws_send_msg,
    .send_json = ws_send_json,
    .backlog = ws_backlog,
    .close = ws_close,
};

/* ---- input ---- */

static int close_reason_of(uint16_t ws_code)
{
    switch (ws_code) {
    case TG_WS_CLOSE_TOO_BIG: return TG_CLOSE_TOO_BIG;
    case TG_WS_CLOSE_INVALID_DATA: return TG_CLOSE_INVALID_DATA;
    case TG_WS_CLOSE_UNSUPPORTED: return TG_CLOSE_UNSUPPORTED;
    case TG_WS_CLOSE_INTERNAL: return TG_CLOSE_NOMEM;
    default: return TG_CLOSE_PROTOCOL;
    }
}

static void on_message(ws_conn_t *w, const tg_ws_event_t *ev)
{
    tg_conn_t *c = w->session.conn;
    if (ev->opcode == TG_WS_OP_BINARY) {
        tg_buf_clear(&w->msg, &c->loop->chunks);
        ws_close(&w->session, TG_CLOSE_UNSUPPORTED, "commands are JSON text frames");
        return;
    }
    /* Commands are small: make the message contiguous when it spans chunks. */
    size_t n = w->msg.len;
    char stack[4096];
    char *p = n <= sizeof(stack) ? stack : malloc(n);
    if (!p) {
        tg_buf_clear(&w->msg, &c->loop->chunks);
        tg_conn_close(c, TG_CLOSE_NOMEM);
        return;
    }
    tg_buf_copy_out(&w->msg, 0, p, n);
    tg_buf_clear(&w->msg, &c->loop->chunks);
    tg_session_command(&w->session, p, n);
    if (p != stack)
        free(p);
}

static void on_control(ws_conn_t *w, const tg_ws_event_t *ev)
{
    tg_conn_t *c = w->session.conn;
    switch (ev->opcode) {
    case TG_WS_OP_PING:
        send_frame(c, TG_WS_OP_PONG, ev->control, ev->control_len);
        break;
    case TG_WS_OP_CLOSE:
        /* RFC 6455 5.5.1: answer with a close frame, echoing the code. */
        if (!w->close_sent) {
            send_frame(c, TG_WS_OP_CLOSE, ev->control, ev->control_len >= 2 ? 2 : 0);
            w->close_sent = true;
        }
        tg_conn_close_after_flush(c, TG_CLOSE_EOF);
        break;
    default: /* PONG: the client is alive; nothing to do */
        break;
    }
}

static void ws_data(tg_conn_t *c, const char *p, size_t n)
{
    ws_conn_t *w = c->data;
    while (n > 0 && tg_conn_open(c)) {
        tg_ws_event_t ev;
        tg_ws_result_t r = tg_ws_read(&w->reader, &p, &n, &w->msg, &c->loop->chunks, &ev);
        if (r == TG_WS_MORE)
            break;
        if (r == TG_WS_ERROR) {
            tg_log_info("ws: closing connection %llx: %s (%u)", (unsigned long long)tg_conn_id(c),
                        ev.reason ? ev.reason : "protocol error", ev.close_code);
            tg_buf_clear(&w->msg, &c->loop->chunks);
            ws_close(&w->session, close_reason_of(ev.close_code), ev.reason);
            return;
        }
        if (r == TG_WS_MESSAGE)
            on_message(w, &ev);
        else
            on_control(w, &ev);
    }
}

static void ws_drained(tg_conn_t *c)
{
    ws_conn_t *w = c->data;
    if (w->session.hub->on_drained)
        w->session.hub->on_drained(w->session.hub, &w->session);
}

static void ws_timer(tg_conn_t *c)
{
    /* Heartbeat: a ping keeps proxies from cutting an idle connection. */
    ws_conn_t *w = c->data;
    send_frame(c, TG_WS_OP_PING, NULL, 0);
    if (w->srv->cfg.ping_ms)
        tg_conn_timer_arm(c, w->srv->cfg.ping_ms);
}

static void ws_stop(tg_conn_t *c)
{
    ws_close(&((ws_conn_t *)c->data)->session, TG_CLOSE_SHUTDOWN, "server shutting down");
}

static void ws_conn_close(tg_conn_t *c, int reason)
{
    (void)reason;
    ws_conn_t *w = c->data;
    if (!w)
        return;
    w->session.hub->on_close(w->session.hub, &w->session);
    tg_buf_clear(&w->msg, &c->loop->chunks);
    free(w);
    c->data = NULL;
}

void tg_wsconn_server_init(tg_wsconn_server_t *ws, const tg_wsconn_cfg_t *cfg, tg_hub_t *hub)
{
    ws->cfg = *cfg;
    ws->hub = hub;
    ws->proto = (tg_proto_t){
        .name = "websocket",
        .ctx = ws,
        .on_data = ws_data,
        .on_drained = ws_drained,
        .on_timer = ws_timer,
        .on_stop = ws_stop,
        .on_close = ws_conn_close,
    };
}

/* ---- handshake ---- */

static tg_session_t *refuse(tg_http_req_t *req, int status, const char *why)
{
    const char *extra = status == 426 ? "Sec-WebSocket-Version: 13\r\n" : NULL;
    char body[160];
    int n = snprintf(body, sizeof(body), "%d %s: %s\n", status, tg_http_reason(status), why);
    tg_http_respond(req, status, "text/plain", extra, body, (size_t)n);
    return NULL;
}

tg_session_t *tg_wsconn_accept(tg_wsconn_server_t *ws, tg_http_req_t *req)
{
    /* RFC 6455 4.2.1: a GET over HTTP/1.1 with these headers. */
    if (strcmp(req->method, "GET") != 0)
        return refuse(req, 400, "a WebSocket opening is a GET");
    if (req->major != 1 || req->minor < 1)
        return refuse(req, 400, "a WebSocket opening needs HTTP/1.1");
    if (!tg_http_header_has(req, "Upgrade", "websocket"))
        return refuse(req, 426, "Upgrade: websocket expected");
    if (!tg_http_header_has(req, "Connection", "upgrade"))
        return refuse(req, 400, "Connection: upgrade expected");
    const tg_str_t *ver = tg_http_header(req, "Sec-WebSocket-Version");
    if (!ver || ver->len != 2 || memcmp(ver->p, "13", 2) != 0)
        return refuse(req, 426, "Sec-WebSocket-Version 13 expected");
    const tg_str_t *key = tg_http_header(req, "Sec-WebSocket-Key");
    if (!key || !tg_ws_key_valid(key->p, key->len))
        return refuse(req, 400, "bad Sec-WebSocket-Key");

    ws_conn_t *w = calloc(1, sizeof(*w));
    if (!w)
        return refuse(req, 503, "out of memory");
    w->srv = ws;
    w->session.conn = req->conn;
    w->session.transport = &ws_transport;
    w->session.hub = ws->hub;
    tg_list_init(&w->session.items);
    /* Compression is not offered back yet: a client that offered
     * permessage-deflate then sends and receives uncompressed frames. */
    tg_ws_reader_init(&w->reader, ws->cfg.max_message, false);

    char accept[29];
    tg_ws_accept_key(key->p, key->len, accept);
    char extra[160];
    snprintf(extra, sizeof(extra),
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n", accept);
    tg_http_respond_head(req, 101, extra);
    tg_http_takeover(req, &ws->proto, w);
    if (ws->cfg.ping_ms)
        tg_conn_timer_arm(req->conn, ws->cfg.ping_ms);
    return &w->session;
}
