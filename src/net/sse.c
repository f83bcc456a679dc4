/* net/sse.c - see sse.h. */
#include "net/sse.h"

#include <string.h>

#include "net/json.h"

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

static void sse_message(tg_sbuf_t *b, const tg_msgview_t *m)
{
    char pos[TG_POS_TEXT_MAX];
    tg_pos_format(m->pos, pos);
    tg_sbuf_printf(b, "id: %s\nevent: %s\n", pos, m->kind == 2 ? "message-base64" : "message");
    if (m->kind == 2) {
        tg_sbuf_put(b, "data: ", 6);
        tg_base64(b, m->data, m->len);
        tg_sbuf_put(b, "\n", 1);
    } else {
        data_lines(b, m->data, m->len);
    }
    tg_sbuf_put(b, "\n", 1);
}

static void sse_notice(tg_sbuf_t *b, const char *type, const tg_pos_t *pos, const char *json,
                       size_t len)
{
    if (pos) {
        char p[TG_POS_TEXT_MAX];
        tg_pos_format(*pos, p);
        tg_sbuf_printf(b, "id: %s\n", p);
    }
    tg_sbuf_printf(b, "event: %s\n", type);
    data_lines(b, json, len);
    tg_sbuf_put(b, "\n", 1);
}

bool tg_sse_wanted(const tg_http_req_t *req)
{
    return tg_http_header_has(req, "Accept", "text/event-stream");
}

/* The stream ends when the connection does: no length, and not reusable. */
const tg_stream_format_t tg_stream_sse = {
    .name = "sse",
    .slot = TG_SLOT_SSE,
    .head = "Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            "X-Accel-Buffering: no\r\nConnection: close\r\n",
    .heartbeat = ": heartbeat\n\n",
    .trailer = "",
    .message = sse_message,
    .notice = sse_notice,
};
