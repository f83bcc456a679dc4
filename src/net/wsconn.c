/* net/wsconn.c - see wsconn.h.
 *
 *  OPEN --close frame received: echo it, close after flush--> (closed)
 *    \---- protocol error: close frame with the code, close after flush --/
 * The session ends (hub told) as soon as the connection leaves OPEN. */
#include "net/wsconn.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "net/close.h"

/* Reading state, held only while a frame or message is mid-arrival: an idle
 * connection keeps none of it. */
typedef struct ws_rx {
    tg_ws_reader_t reader;
    tg_buf_t       msg; /* the message being assembled */
} ws_rx_t;

typedef struct ws_conn {
    tg_session_t        session; /* first: c->data points at the session */
    tg_wsconn_server_t *srv;
    ws_rx_t            *rx;      /* NULL between messages */
    uint8_t             deflate_bits; /* permessage-deflate window we compress with; 0: off */
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

static void ws_send_json(tg_session_t *s, const char *type, const tg_pos_t *pos,
                         const char *json, size_t len)
{
    (void)type; /* the JSON says it all */
    (void)pos;
    send_frame(s->conn, TG_WS_OP_TEXT, json, len);
}

/* A whole frame around <len> bytes, compressed (RSV1) or not. */
static tg_shared_t *frame_of(uint8_t opcode, bool rsv1, const tg_buf_t *body, const char *flat,
                             size_t len)
{
    uint8_t hdr[TG_WS_HEADER_MAX];
    size_t h = tg_ws_frame_header(hdr, opcode, rsv1, len);
    tg_shared_t *f = tg_shared_new(h + len);
    if (!f)
        return NULL;
    memcpy(f->data, hdr, h);
    if (body)
        tg_buf_copy_out(body, 0, f->data + h, len);
    else
        memcpy(f->data + h, flat, len);
    return f;
}

/* One frame per message per loop (and per compression), shared by every
 * subscriber that takes that form. <deflate_bits> 0: uncompressed. */
static tg_shared_t *encode(const tg_msgview_t *m, tg_conn_t *c, tg_wsconn_server_t *ws,
                           int deflate_bits)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    /* Binary payloads travel raw in binary frames, behind a JSON header. */
    uint8_t opcode = m->kind == 2 ? TG_WS_OP_BINARY : TG_WS_OP_TEXT;
    if (opcode == TG_WS_OP_BINARY)
        tg_session_binary(&b, m);
    else
        tg_session_envelope(&b, m);
    tg_shared_t *f = NULL;
    if (b.failed) {
        tg_sbuf_free(&b);
        return NULL;
    }
    if (deflate_bits && b.len >= TG_WS_DEFLATE_MIN) {
        tg_buf_t z = TG_BUF_INIT;
        if (tg_ws_deflate(&ws->zlib[c->loop->id], deflate_bits, b.p, b.len, &z,
                          &c->loop->chunks) == 0 &&
            (f = frame_of(opcode, true, &z, NULL, z.len)) != NULL) {
            tg_counter_add(&ws->loops[c->loop->id].deflate_before, b.len);
            tg_counter_add(&ws->loops[c->loop->id].deflate_after, z.len);
        }
        tg_buf_clear(&z, &c->loop->chunks);
    } else {
        f = frame_of(opcode, false, NULL, b.p, b.len);
    }
    tg_sbuf_free(&b);
    return f;
}

static void ws_send_msg(tg_session_t *s, const tg_msgview_t *m, tg_shared_t **cache)
{
    ws_conn_t *w = ws_of(s);
    tg_shared_t *f, *own = NULL;
    if (!w->deflate_bits) {
        if (!cache[TG_SLOT_WS])
            cache[TG_SLOT_WS] = encode(m, s->conn, w->srv, 0);
        f = cache[TG_SLOT_WS];
    } else if (w->deflate_bits == 15) {
        if (!cache[TG_SLOT_WS_DEFLATE])
            cache[TG_SLOT_WS_DEFLATE] = encode(m, s->conn, w->srv, 15);
        f = cache[TG_SLOT_WS_DEFLATE];
    } else {
        f = own = encode(m, s->conn, w->srv, w->deflate_bits); /* a rare window: alone */
    }
    if (!f) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    (void)tg_conn_write_ref(s->conn, f, 0, f->len);
    tg_shared_unref(own);
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
    tg_buf_t *msg = &w->rx->msg;
    if (ev->opcode == TG_WS_OP_BINARY) {
        tg_buf_clear(msg, &c->loop->chunks);
        ws_close(&w->session, TG_CLOSE_UNSUPPORTED, "commands are JSON text frames");
        return;
    }
    if (ev->compressed) {
        tg_buf_t plain = TG_BUF_INIT;
        size_t wire = msg->len;
        int rc = tg_ws_inflate(&w->srv->zlib[c->loop->id], msg, w->srv->cfg.max_message, &plain,
                               &c->loop->chunks);
        if (rc == 0) {
            tg_counter_add(&w->srv->loops[c->loop->id].deflate_before, plain.len);
            tg_counter_add(&w->srv->loops[c->loop->id].deflate_after, wire);
        }
        tg_buf_clear(msg, &c->loop->chunks);
        *msg = plain;
        if (rc != 0) {
            tg_buf_clear(msg, &c->loop->chunks);
            if (rc == -ENOMEM)
                tg_conn_close(c, TG_CLOSE_NOMEM);
            else
                ws_close(&w->session, rc == -EMSGSIZE ? TG_CLOSE_TOO_BIG : TG_CLOSE_INVALID_DATA,
                         rc == -EMSGSIZE ? "message too big" : "message does not inflate");
            return;
        }
        /* The reader checks UTF-8 of what it sees; inflated text is ours to check. */
        uint32_t st = TG_UTF8_ACCEPT;
        for (const tg_chunk_t *ch = msg->head; ch && st != TG_UTF8_REJECT; ch = ch->next)
            st = tg_utf8_step(st, (const uint8_t *)ch->data + ch->rd, ch->wr - ch->rd);
        if (st != TG_UTF8_ACCEPT) {
            tg_buf_clear(msg, &c->loop->chunks);
            ws_close(&w->session, TG_CLOSE_INVALID_DATA, "text is not UTF-8");
            return;
        }
    }
    /* Commands are small: make the message contiguous when it spans chunks. */
    size_t n = msg->len;
    char stack[4096];
    char *p = n <= sizeof(stack) ? stack : malloc(n);
    if (!p) {
        tg_buf_clear(msg, &c->loop->chunks);
        tg_conn_close(c, TG_CLOSE_NOMEM);
        return;
    }
    tg_buf_copy_out(msg, 0, p, n);
    tg_buf_clear(msg, &c->loop->chunks);
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

static void rx_release(ws_conn_t *w, tg_conn_t *c)
{
    if (!w->rx)
        return;
    tg_buf_clear(&w->rx->msg, &c->loop->chunks);
    free(w->rx);
    w->rx = NULL;
}

static void ws_data(tg_conn_t *c, const char *p, size_t n)
{
    ws_conn_t *w = c->data;
    if (!w->rx) {
        w->rx = malloc(sizeof(*w->rx));
        if (!w->rx) {
            tg_conn_close(c, TG_CLOSE_NOMEM);
            return;
        }
        tg_ws_reader_init(&w->rx->reader, w->srv->cfg.max_message, w->deflate_bits != 0);
        w->rx->msg = TG_BUF_INIT;
    }
    while (n > 0 && tg_conn_open(c)) {
        tg_ws_event_t ev;
        tg_ws_result_t r = tg_ws_read(&w->rx->reader, &p, &n, &w->rx->msg, &c->loop->chunks, &ev);
        if (r == TG_WS_MORE)
            break;
        if (r == TG_WS_ERROR) {
            tg_log_info("ws: closing connection %llx: %s (%u)", (unsigned long long)tg_conn_id(c),
                        ev.reason ? ev.reason : "protocol error", ev.close_code);
            rx_release(w, c);
            ws_close(&w->session, close_reason_of(ev.close_code), ev.reason);
            return;
        }
        if (r == TG_WS_MESSAGE)
            on_message(w, &ev);
        else
            on_control(w, &ev);
    }
    /* The connection may have closed (and <w> gone) in a callback. */
    if (tg_conn_open(c) && !tg_ws_reader_busy(&w->rx->reader) && tg_buf_empty(&w->rx->msg))
        rx_release(w, c);
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
    rx_release(w, c);
    free(w);
    c->data = NULL;
}

int tg_wsconn_server_init(tg_wsconn_server_t *ws, const tg_wsconn_cfg_t *cfg, tg_hub_t *hub,
                          int nloops)
{
    ws->cfg = *cfg;
    ws->hub = hub;
    ws->nloops = nloops;
    ws->zlib = calloc((size_t)nloops, sizeof(*ws->zlib));
    ws->loops = calloc((size_t)nloops, sizeof(*ws->loops));
    if (!ws->zlib || !ws->loops) {
        tg_wsconn_server_fini(ws);
        return -ENOMEM;
    }
    for (int i = 0; i < nloops; i++)
        if (tg_ws_zlib_init(&ws->zlib[i]) != 0) {
            tg_wsconn_server_fini(ws);
            return -ENOMEM;
        }
    ws->proto = (tg_proto_t){
        .name = "websocket",
        .ctx = ws,
        .on_data = ws_data,
        .on_drained = tg_session_conn_drained,
        .on_timer = ws_timer,
        .on_stop = ws_stop,
        .on_close = ws_conn_close,
    };
    return 0;
}

void tg_wsconn_server_fini(tg_wsconn_server_t *ws)
{
    for (int i = 0; ws->zlib && i < ws->nloops; i++)
        tg_ws_zlib_fini(&ws->zlib[i]);
    free(ws->zlib);
    free(ws->loops);
    ws->zlib = NULL;
    ws->loops = NULL;
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
    char deflate_line[160] = "";
    const tg_str_t *ext = tg_http_header(req, "Sec-WebSocket-Extensions");
    if (ext) {
        uint8_t bits = 15;
        tg_ws_deflate_offer_t offer = tg_ws_deflate_parse(ext->p, ext->len, &bits);
        if (offer.accepted &&
            tg_ws_deflate_response(&offer, bits, deflate_line, sizeof(deflate_line)) > 0)
            w->deflate_bits = bits;
    }

    char accept[29];
    tg_ws_accept_key(key->p, key->len, accept);
    char extra[320];
    snprintf(extra, sizeof(extra),
             "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s", accept,
             deflate_line);
    tg_http_respond_head(req, 101, extra);
    tg_http_takeover(req, &ws->proto, w);
    if (ws->cfg.ping_ms)
        tg_conn_timer_arm(req->conn, ws->cfg.ping_ms);
    return &w->session;
}
