/* net/frameconn.c - see frameconn.h. */
#include "net/frameconn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "net/close.h"
#include "net/frame.h"

typedef struct frame_rx { /* held only while a frame is mid-arrival */
    tg_frame_reader_t reader;
    tg_buf_t          body;
} frame_rx_t;

typedef struct frame_conn {
    tg_session_t           session; /* first: c->data points at the session */
    tg_frameconn_server_t *srv;
    frame_rx_t            *rx;
    bool                   pinged;  /* a ping is out, unanswered */
    bool                   lz4;     /* a hello turned LZ4 frames on */
} frame_conn_t;

static frame_conn_t *fc_of(tg_session_t *s)
{
    return (frame_conn_t *)s; /* the session is the first member */
}

static tg_frameconn_loop_t *loop_stats(frame_conn_t *f)
{
    return &f->srv->loops[f->session.conn->loop->id];
}

/* The LZ4 form of plain frame <plain> when that is shorter, else <plain>
 * itself; a new reference either way (NULL when memory is short). */
static tg_shared_t *lz4_of(frame_conn_t *f, tg_shared_t *plain)
{
    tg_shared_t *z = NULL;
    if (plain->len - 4 >= TG_FRAME_LZ4_MIN)
        z = tg_frame_lz4_pack((const uint8_t *)plain->data + 4, plain->len - 4);
    if (!z) {
        tg_shared_ref(plain);
        return plain;
    }
    tg_counter_add(&loop_stats(f)->lz4_before, plain->len);
    tg_counter_add(&loop_stats(f)->lz4_after, z->len);
    return z;
}

static void send_frame(tg_conn_t *c, uint8_t type, const void *p, size_t n)
{
    uint8_t hdr[TG_FRAME_HEADER];
    tg_frame_header(hdr, type, (uint32_t)n);
    if (tg_conn_write(c, hdr, sizeof(hdr)) == 0 && n > 0)
        (void)tg_conn_write(c, p, n);
}

static tg_shared_t *encode(const tg_msgview_t *m)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_put(&b, "01234", TG_FRAME_HEADER); /* room for the header */
    uint8_t type = TG_FRAME_JSON;
    if (m->kind == 2) { /* binary: a JSON header, then the payload raw */
        tg_session_binary(&b, m);
        type = TG_FRAME_BINARY;
    } else {
        tg_session_envelope(&b, m);
    }
    tg_shared_t *f = NULL;
    if (!b.failed && (f = tg_shared_new(b.len)) != NULL) {
        memcpy(f->data, b.p, b.len);
        tg_frame_header((uint8_t *)f->data, type, (uint32_t)(b.len - TG_FRAME_HEADER));
    }
    tg_sbuf_free(&b);
    return f;
}

static void fc_send_msg(tg_session_t *s, const tg_msgview_t *m, tg_shared_t **cache)
{
    if (!cache[TG_SLOT_FRAME])
        cache[TG_SLOT_FRAME] = encode(m);
    tg_shared_t *f = cache[TG_SLOT_FRAME];
    /* Compressed once per loop, like the plain frame, and shared the same way. */
    if (f && fc_of(s)->lz4) {
        if (!cache[TG_SLOT_FRAME_LZ4])
            cache[TG_SLOT_FRAME_LZ4] = lz4_of(fc_of(s), f);
        f = cache[TG_SLOT_FRAME_LZ4];
    }
    if (!f) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    (void)tg_conn_write_ref(s->conn, f, 0, f->len);
}

static void fc_send_json(tg_session_t *s, const char *type, const tg_pos_t *pos, const char *json,
                         size_t len)
{
    (void)type;
    (void)pos;
    frame_conn_t *f = fc_of(s);
    if (!f->lz4 || len + 1 < TG_FRAME_LZ4_MIN) {
        send_frame(s->conn, TG_FRAME_JSON, json, len);
        return;
    }
    tg_shared_t *plain = tg_shared_new(TG_FRAME_HEADER + len);
    if (!plain) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    tg_frame_header((uint8_t *)plain->data, TG_FRAME_JSON, (uint32_t)len);
    memcpy(plain->data + TG_FRAME_HEADER, json, len);
    tg_shared_t *out = lz4_of(f, plain);
    tg_shared_unref(plain);
    if (!out) {
        tg_conn_close(s->conn, TG_CLOSE_NOMEM);
        return;
    }
    (void)tg_conn_write_ref(s->conn, out, 0, out->len);
    tg_shared_unref(out);
}

static size_t fc_backlog(tg_session_t *s)
{
    return tg_conn_pending(s->conn);
}

static void fc_close(tg_session_t *s, int code, const char *why)
{
    if (!tg_conn_open(s->conn))
        return;
    char json[192];
    int n = snprintf(json, sizeof(json), "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}",
                     tg_close_info(code)->name, why ? why : "");
    send_frame(s->conn, TG_FRAME_JSON, json, (size_t)n);
    tg_conn_close_after_flush(s->conn, code);
}

/* {"op":"hello","compress":"lz4"} turns LZ4 frames on from the answer on;
 * a hello without it (or with a codec not served) turns them off. */
static void fc_hello(tg_session_t *s, const tg_cmd_t *cmd)
{
    frame_conn_t *f = fc_of(s);
    /* The answer goes out plain, so the client reads it before any LZ4 frame. */
    f->lz4 = false;
    bool lz4 = cmd->compress.len == 3 && memcmp(cmd->compress.p, "lz4", 3) == 0;
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "{\"type\":\"hello\"%s", lz4 ? ",\"compress\":\"lz4\"" : "");
    if (cmd->id.len && cmd->id.len < 64)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"id\":%.*s", (int)cmd->id.len,
                      cmd->id.p);
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
    send_frame(s->conn, TG_FRAME_JSON, buf, (size_t)n);
    f->lz4 = lz4;
}

static const tg_transport_t frame_transport = {
    .name = "frames",
    .send_msg = fc_send_msg,
    .send_json = fc_send_json,
    .backlog = fc_backlog,
    .close = fc_close,
    .hello = fc_hello,
};

static void rx_release(frame_conn_t *f, tg_conn_t *c)
{
    if (!f->rx)
        return;
    tg_buf_clear(&f->rx->body, &c->loop->chunks);
    free(f->rx);
    f->rx = NULL;
}

/* A JSON frame's body: a command. <p> is the caller's. */
static void command(frame_conn_t *f, const char *p, size_t n)
{
    tg_session_command(&f->session, p, n);
}

/* An LZ4 frame: checked, decompressed within max_frame, then read as the
 * frame it holds. Bad data closes like any other protocol error. */
static void on_lz4(frame_conn_t *f, tg_conn_t *c, tg_buf_t *body)
{
    const char *why = "LZ4 frames need a hello that turns them on";
    uint8_t *plain = NULL;
    uint32_t n = 0;
    int rc = f->lz4 ? tg_frame_lz4_unpack(body, f->srv->max_frame, &plain, &n, &why) : -EPROTO;
    size_t wire = TG_FRAME_HEADER + body->len;
    tg_buf_clear(body, &c->loop->chunks);
    if (rc == 0 && plain[0] != TG_FRAME_JSON) {
        rc = -EPROTO;
        why = "BINARY frames go from server to client only";
    }
    if (rc != 0) {
        free(plain);
        if (rc == -ENOMEM) {
            tg_conn_close(c, TG_CLOSE_NOMEM);
            return;
        }
        tg_log_info("frames: closing connection %llx: %s", (unsigned long long)tg_conn_id(c), why);
        fc_close(&f->session, rc == -EMSGSIZE ? TG_CLOSE_TOO_BIG : TG_CLOSE_PROTOCOL, why);
        return;
    }
    tg_counter_add(&loop_stats(f)->lz4_before, 4 + (size_t)n);
    tg_counter_add(&loop_stats(f)->lz4_after, wire);
    command(f, (const char *)plain + 1, n - 1);
    free(plain);
}

static void on_frame(frame_conn_t *f, tg_conn_t *c)
{
    tg_buf_t *body = &f->rx->body;
    switch (f->rx->reader.type) {
    case TG_FRAME_PING:
        send_frame(c, TG_FRAME_PONG, NULL, 0);
        break;
    case TG_FRAME_PONG:
        break;
    case TG_FRAME_LZ4:
        on_lz4(f, c, body);
        return;
    default: { /* JSON: a command */
        size_t n = body->len;
        char stack[4096];
        char *p = n <= sizeof(stack) ? stack : malloc(n);
        if (!p) {
            tg_conn_close(c, TG_CLOSE_NOMEM);
            return;
        }
        tg_buf_copy_out(body, 0, p, n);
        tg_buf_clear(body, &c->loop->chunks);
        command(f, p, n);
        if (p != stack)
            free(p);
        return;
    }
    }
    tg_buf_clear(body, &c->loop->chunks);
}

static void fc_data(tg_conn_t *c, const char *p, size_t n)
{
    frame_conn_t *f = c->data;
    f->pinged = false; /* the client is alive */
    if (f->srv->idle_ms)
        tg_conn_timer_arm(c, f->srv->idle_ms);
    if (!f->rx) {
        f->rx = malloc(sizeof(*f->rx));
        if (!f->rx) {
            tg_conn_close(c, TG_CLOSE_NOMEM);
            return;
        }
        tg_frame_reader_init(&f->rx->reader, f->srv->max_frame);
        f->rx->body = TG_BUF_INIT;
    }
    while (n > 0 && tg_conn_open(c)) {
        const char *why = NULL;
        tg_frame_result_t r = tg_frame_read(&f->rx->reader, &p, &n, &f->rx->body,
                                            &c->loop->chunks, &why);
        if (r == TG_FRAME_MORE)
            break;
        if (r == TG_FRAME_BAD) {
            tg_log_info("frames: closing connection %llx: %s", (unsigned long long)tg_conn_id(c),
                        why);
            rx_release(f, c);
            fc_close(&f->session, strcmp(why, "frame too big") == 0 ? TG_CLOSE_TOO_BIG
                                                                     : TG_CLOSE_PROTOCOL,
                     why);
            return;
        }
        on_frame(f, c);
    }
    if (tg_conn_open(c) && !tg_frame_reader_busy(&f->rx->reader) && tg_buf_empty(&f->rx->body))
        rx_release(f, c);
}

static int fc_open(tg_conn_t *c)
{
    tg_frameconn_server_t *fs = c->proto->ctx;
    frame_conn_t *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->srv = fs;
    f->session.conn = c;
    f->session.transport = &frame_transport;
    f->session.hub = fs->hub;
    tg_list_init(&f->session.items);
    c->data = f;
    if (fs->idle_ms)
        tg_conn_timer_arm(c, fs->idle_ms);
    return 0;
}

static void fc_timer(tg_conn_t *c)
{
    frame_conn_t *f = c->data;
    if (f->pinged) { /* silent through a whole interval after a ping */
        tg_conn_close(c, TG_CLOSE_PING_TIMEOUT);
        return;
    }
    send_frame(c, TG_FRAME_PING, NULL, 0);
    f->pinged = true;
    tg_conn_timer_arm(c, f->srv->idle_ms);
}

static void fc_stop(tg_conn_t *c)
{
    fc_close(&((frame_conn_t *)c->data)->session, TG_CLOSE_SHUTDOWN, "server shutting down");
}

static void fc_conn_close(tg_conn_t *c, int reason)
{
    (void)reason;
    frame_conn_t *f = c->data;
    if (!f)
        return;
    f->session.hub->on_close(f->session.hub, &f->session);
    rx_release(f, c);
    free(f);
    c->data = NULL;
}

int tg_frameconn_server_init(tg_frameconn_server_t *fs, uint32_t max_frame, uint32_t idle_ms,
                             tg_hub_t *hub, int nloops)
{
    memset(fs, 0, sizeof(*fs));
    fs->max_frame = max_frame;
    fs->idle_ms = idle_ms;
    fs->hub = hub;
    fs->nloops = nloops;
    fs->loops = calloc((size_t)nloops, sizeof(*fs->loops));
    if (!fs->loops)
        return -ENOMEM;
    fs->proto = (tg_proto_t){
        .name = "frames",
        .ctx = fs,
        .on_open = fc_open,
        .on_data = fc_data,
        .on_drained = tg_session_conn_drained,
        .on_timer = fc_timer,
        .on_stop = fc_stop,
        .on_close = fc_conn_close,
    };
    return 0;
}

void tg_frameconn_server_fini(tg_frameconn_server_t *fs)
{
    free(fs->loops);
    fs->loops = NULL;
}
