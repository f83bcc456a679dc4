/* tools/cli/client.c - tidegate-cli: a client session over WebSocket (GET /ws, RFC 6455
 * client side, no compression offered) or TCP frames (include/tidegate/frames.h).
 *
 *   open --connected, upgraded--> OPEN --send/recv--> OPEN --close or server close--> CLOSED
 *
 * Both carry the same JSON commands and messages (docs/protocol.md). A message whose payload
 * is binary (a BINARY frame: u16 header length, JSON header, raw payload) is handed out as
 * the text transports give it: the header with "data" (base64) and "enc":"base64" added. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cli.h"
#include "net/json.h"
#include "net/ws.h"
#include "tidegate/frames.h"

#define HEAD_MAX 16384 /* an upgrade response longer than this is malformed */

bool cli_transport_parse(const char *s, cli_transport_t *tr)
{
    if (strcmp(s, "ws") == 0)
        *tr = CLI_WS;
    else if (strcmp(s, "frames") == 0)
        *tr = CLI_FRAMES;
    else
        return false;
    return true;
}

/* Prints the failure of an IO call returning <rc> (not -ETIMEDOUT nor -EINTR, which the
 * caller judges) and returns the code to hand up. */
static int io_fail(cli_client_t *cl, int rc, const char *doing)
{
    if (rc == -ETIMEDOUT || rc == -EINTR)
        return rc;
    if (rc == 0)
        return cli_error(cl->c, CLI_FAIL, "the server closed the connection%s%s",
                         doing ? " " : "", doing ? doing : "");
    if (rc == -EMSGSIZE)
        return cli_error(cl->c, CLI_FAIL, "a message from the server is over %u MiB",
                         CLI_MSG_MAX >> 20);
    return cli_error(cl->c, CLI_FAIL, "%s%s%s", doing ? doing : "", doing ? ": " : "",
                     strerror(-rc));
}

/* ---- WebSocket ---- */

/* Sends one masked frame (RFC 6455 5.3: every client frame is masked). */
static int ws_send(cli_client_t *cl, uint8_t op, const char *p, size_t n, int64_t deadline)
{
    uint8_t h[14];
    size_t hl = 2;
    h[0] = 0x80 | op;
    if (n < 126) {
        h[1] = 0x80 | (uint8_t)n;
    } else if (n <= 0xffff) {
        h[1] = 0x80 | 126;
        h[2] = (uint8_t)(n >> 8);
        h[3] = (uint8_t)n;
        hl = 4;
    } else {
        h[1] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[2 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
        hl = 10;
    }
    uint8_t *mask = h + hl;
    if (getrandom(mask, 4, 0) != 4)
        return -EIO;
    hl += 4;
    char *f = malloc(hl + n);
    if (!f)
        return -ENOMEM;
    memcpy(f, h, hl);
    for (size_t i = 0; i < n; i++)
        f[hl + i] = (char)(p[i] ^ mask[i % 4]);
    int rc = cli_conn_write(&cl->conn, f, hl + n, deadline);
    free(f);
    return rc;
}

static int ws_open(cli_client_t *cl, const cli_addr_t *a, int64_t deadline)
{
    uint8_t raw[16];
    if (getrandom(raw, sizeof(raw), 0) != sizeof(raw))
        return cli_error(cl->c, CLI_FAIL, "getrandom: %s", strerror(errno));
    tg_sbuf_t key = TG_SBUF_INIT, req = TG_SBUF_INIT;
    tg_base64(&key, raw, sizeof(raw));
    tg_sbuf_printf(&req,
                   "GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: %.*s\r\nSec-WebSocket-Version: 13\r\n\r\n",
                   cl->c->server, (int)key.len, key.p);
    char expect[29];
    int code = CLI_FAIL;
    if (key.failed || req.failed) {
        cli_error(cl->c, CLI_FAIL, "out of memory");
        goto out;
    }
    tg_ws_accept_key(key.p, key.len, expect);

    int rc = cli_conn_write(&cl->conn, req.p, req.len, deadline);
    const char *end = NULL;
    while (rc == 0 &&
           !(cl->conn.len && (end = memmem(cl->conn.in, cl->conn.len, "\r\n\r\n", 4)))) {
        ssize_t got = cli_conn_fill(&cl->conn, deadline);
        rc = got > 0 ? 0 : (int)got;
        if (cl->conn.len > HEAD_MAX) {
            cli_error(cl->c, CLI_FAIL, "the WebSocket upgrade response from %s is too long",
                      a->text);
            goto out;
        }
    }
    if (rc != 0) {
        code = io_fail(cl, rc, "during the WebSocket upgrade");
        goto out;
    }
    size_t hl = (size_t)(end - cl->conn.in) + 4;
    char *head = cl->conn.in;
    if (hl < 12 || memcmp(head, "HTTP/1.1 101", 12) != 0) {
        const char *eol = memmem(head, hl, "\r\n", 2);
        cli_error(cl->c, CLI_FAIL, "%s refused the WebSocket upgrade: %.*s", a->text,
                  (int)(eol - head), head);
        goto out;
    }
    /* The accept key must answer ours (RFC 6455 4.1, client checks). */
    char want[64];
    snprintf(want, sizeof(want), "\r\nSec-WebSocket-Accept: %s\r\n", expect);
    if (!memmem(head, hl, want, strlen(want))) {
        cli_error(cl->c, CLI_FAIL, "%s answered the upgrade with a wrong Sec-WebSocket-Accept",
                  a->text);
        goto out;
    }
    cli_conn_consume(&cl->conn, hl);
    code = CLI_OK;
out:
    tg_sbuf_free(&key);
    tg_sbuf_free(&req);
    return code;
}

/* Turns a binary message (u16 BE header length, JSON header, raw payload) in <p>/<n> into
 * JSON text in <out>. Returns 0, or -1 when malformed. */
static int binary_to_json(const char *p, size_t n, tg_sbuf_t *out)
{
    if (n < 2)
        return -1;
    size_t hl = (size_t)(uint8_t)p[0] << 8 | (uint8_t)p[1];
    if (hl > n - 2 || !tg_json_valid(p + 2, hl))
        return -1;
    const char *h = p + 2;
    size_t e = hl;
    while (e > 0 && h[e - 1] != '}')
        e--;
    if (e == 0)
        return -1;
    out->len = 0;
    tg_sbuf_put(out, h, e - 1);
    tg_sbuf_put(out, ",\"data\":\"", 9);
    tg_base64(out, p + 2 + hl, n - 2 - hl);
    tg_sbuf_put(out, "\",\"enc\":\"base64\"}", 17);
    return 0;
}

/* Reads WebSocket frames until a whole data message is in <cl->msg>. */
static int ws_recv(cli_client_t *cl, int64_t deadline)
{
    cli_conn_t *k = &cl->conn;
    cl->msg.len = 0;
    for (;;) {
        const uint8_t *f = (const uint8_t *)k->in;
        size_t avail = k->len, hl = 2;
        uint64_t n = 0;
        if (avail >= 2) {
            n = f[1] & 0x7f;
            if (n == 126 && avail >= 4) {
                n = (uint64_t)f[2] << 8 | f[3];
                hl = 4;
            } else if (n == 127 && avail >= 10) {
                n = 0;
                for (int i = 0; i < 8; i++)
                    n = n << 8 | f[2 + i];
                hl = 10;
            } else if (n >= 126) {
                hl = 0; /* the length is not all in yet */
            }
        }
        if (avail < 2 || hl == 0 || avail - hl < n) {
            if (hl && n > CLI_MSG_MAX)
                return io_fail(cl, -EMSGSIZE, NULL);
            ssize_t got = cli_conn_fill(k, deadline);
            if (got <= 0)
                return io_fail(cl, (int)got, NULL);
            continue;
        }
        uint8_t op = f[0] & 0x0f;
        bool fin = f[0] & 0x80;
        if (f[0] & 0x70 || f[1] & 0x80)
            return cli_error(cl->c, CLI_FAIL, "malformed WebSocket frame from the server");
        const char *pl = k->in + hl;
        if (op == TG_WS_OP_PING) {
            int rc = ws_send(cl, TG_WS_OP_PONG, pl, (size_t)n, deadline);
            if (rc != 0)
                return io_fail(cl, rc, NULL);
        } else if (op == TG_WS_OP_CLOSE) {
            unsigned code = n >= 2 ? (uint8_t)pl[0] << 8 | (uint8_t)pl[1] : 0;
            int rl = n > 2 ? (int)n - 2 : 0;
            (void)ws_send(cl, TG_WS_OP_CLOSE, pl, n >= 2 ? 2 : 0, deadline);
            return cli_error(cl->c, CLI_FAIL, "the server closed the WebSocket: %u%s%.*s", code,
                             rl ? " " : "", rl, pl + 2);
        } else if (op == TG_WS_OP_TEXT || op == TG_WS_OP_BINARY || op == TG_WS_OP_CONT) {
            if ((op == TG_WS_OP_CONT) != (cl->frag != 0))
                return cli_error(cl->c, CLI_FAIL, "badly fragmented WebSocket message");
            if (op != TG_WS_OP_CONT)
                cl->frag = op;
            if (cl->msg.len + n > CLI_MSG_MAX)
                return io_fail(cl, -EMSGSIZE, NULL);
            tg_sbuf_put(&cl->msg, pl, (size_t)n);
        } else if (op != TG_WS_OP_PONG) {
            return cli_error(cl->c, CLI_FAIL, "unknown WebSocket opcode %u", op);
        }
        cli_conn_consume(k, hl + (size_t)n);
        if (op <= TG_WS_OP_BINARY && fin) {
            int kind = cl->frag;
            cl->frag = 0;
            if (kind == TG_WS_OP_TEXT)
                return 0;
            tg_sbuf_t json = TG_SBUF_INIT;
            int rc = binary_to_json(cl->msg.p, cl->msg.len, &json);
            tg_sbuf_free(&cl->msg);
            cl->msg = json;
            return rc == 0 ? 0 : cli_error(cl->c, CLI_FAIL, "malformed binary message");
        }
    }
}

/* ---- TCP frames ---- */

static int frames_send(cli_client_t *cl, uint8_t type, const char *p, size_t n,
                       int64_t deadline)
{
    uint8_t h[TG_FRAME_HEADER] = { (uint8_t)((n + 1) >> 24), (uint8_t)((n + 1) >> 16),
                                   (uint8_t)((n + 1) >> 8), (uint8_t)(n + 1), type };
    int rc = cli_conn_write(&cl->conn, h, sizeof(h), deadline);
    return rc == 0 && n ? cli_conn_write(&cl->conn, p, n, deadline) : rc;
}

static int frames_recv(cli_client_t *cl, int64_t deadline)
{
    cli_conn_t *k = &cl->conn;
    for (;;) {
        if (k->len >= TG_FRAME_HEADER) {
            const uint8_t *h = (const uint8_t *)k->in;
            uint32_t len = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | h[2] << 8 | h[3];
            if (len == 0 || len > CLI_MSG_MAX)
                return cli_error(cl->c, CLI_FAIL, "malformed frame from the server");
            if (k->len >= 4 + (size_t)len) {
                const char *body = k->in + TG_FRAME_HEADER;
                size_t n = len - 1;
                int rc = 0;
                cl->msg.len = 0;
                if (h[4] == TG_FRAME_JSON)
                    tg_sbuf_put(&cl->msg, body, n);
                else if (h[4] == TG_FRAME_BINARY)
                    rc = binary_to_json(body, n, &cl->msg) == 0 ? 1 : -1;
                else if (h[4] == TG_FRAME_PING)
                    rc = frames_send(cl, TG_FRAME_PONG, NULL, 0, deadline) == 0 ? 2 : -2;
                else if (h[4] == TG_FRAME_PONG)
                    rc = 2;
                else
                    rc = -1;
                cli_conn_consume(k, 4 + (size_t)len);
                if (rc == -1)
                    return cli_error(cl->c, CLI_FAIL, "malformed frame from the server");
                if (rc == -2)
                    return io_fail(cl, -EPIPE, NULL);
                if (rc != 2)
                    return 0;
                continue;
            }
        }
        ssize_t got = cli_conn_fill(k, deadline);
        if (got <= 0)
            return io_fail(cl, (int)got, NULL);
    }
}

/* ---- the session ---- */

int cli_client_open(cli_client_t *cl, const cli_t *c, cli_transport_t tr, int64_t deadline)
{
    memset(cl, 0, sizeof(*cl));
    cl->c = c;
    cl->tr = tr;
    cl->msg = TG_SBUF_INIT;
    cl->conn.fd = -1;
    const char *target = tr == CLI_WS ? c->server : c->frames;
    cli_addr_t a;
    if (!cli_addr_parse(target, &a))
        return cli_error(c, CLI_USAGE, "'%s' is not HOST:PORT", target);
    int rc = cli_conn_open(&cl->conn, &a, CLI_MSG_MAX + 64, deadline);
    if (rc == -EINTR)
        return rc;
    if (rc != 0)
        return cli_error(c, rc == -ETIMEDOUT ? CLI_TIMEOUT : CLI_FAIL, "cannot connect to %s: %s",
                         a.text, strerror(-rc));
    if (tr == CLI_WS && (rc = ws_open(cl, &a, deadline)) != 0) {
        cli_conn_close(&cl->conn);
        if (rc == -ETIMEDOUT)
            return cli_error(c, CLI_TIMEOUT, "no WebSocket upgrade from %s in time", a.text);
        return rc;
    }
    return 0;
}

int cli_client_send(cli_client_t *cl, const char *json, size_t n, int64_t deadline)
{
    int rc = cl->tr == CLI_WS ? ws_send(cl, TG_WS_OP_TEXT, json, n, deadline)
                              : frames_send(cl, TG_FRAME_JSON, json, n, deadline);
    if (rc == -ETIMEDOUT)
        return cli_error(cl->c, CLI_TIMEOUT, "could not send in time");
    return rc == 0 || rc == -EINTR ? rc : io_fail(cl, rc, "sending");
}

int cli_client_recv(cli_client_t *cl, int64_t deadline, const char **p, size_t *n)
{
    int rc = cl->tr == CLI_WS ? ws_recv(cl, deadline) : frames_recv(cl, deadline);
    if (rc != 0)
        return rc;
    if (cl->msg.failed)
        return cli_error(cl->c, CLI_FAIL, "out of memory");
    if (cl->msg.len == 0 || !tg_json_valid(cl->msg.p, cl->msg.len))
        return cli_error(cl->c, CLI_FAIL, "the server sent a message that is not JSON: '%.*s'",
                         (int)(cl->msg.len < 80 ? cl->msg.len : 80),
                         cl->msg.len ? cl->msg.p : "");
    *p = cl->msg.p;
    *n = cl->msg.len;
    return 0;
}

void cli_client_close(cli_client_t *cl)
{
    if (cl->conn.fd >= 0 && cl->tr == CLI_WS) {
        /* A close frame, then the server's answer or EOF (briefly), so that the server sees
         * a clean close rather than a reset. */
        static const char normal[2] = { 1000 >> 8, (char)(1000 & 0xff) };
        int64_t deadline = cli_deadline(500);
        if (ws_send(cl, TG_WS_OP_CLOSE, normal, 2, deadline) == 0 &&
            shutdown(cl->conn.fd, SHUT_WR) == 0) {
            cl->conn.len = 0;
            while (cli_conn_fill(&cl->conn, deadline) > 0)
                cl->conn.len = 0;
        }
    }
    cli_conn_close(&cl->conn);
    tg_sbuf_free(&cl->msg);
}
