/* net/stream.h - sessions carried by one long HTTP response that the server
 * keeps writing: Server-Sent Events and chunked streams. A format says how a
 * message or notice looks on the wire; the connection part (taking over from
 * HTTP, heartbeats, flow, closing) is shared. Clients send nothing after their
 * request. Loop thread. */
#ifndef TG_NET_STREAM_H
#define TG_NET_STREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/sbuf.h"
#include "net/http.h"
#include "net/session.h"

typedef struct tg_stream_format {
    const char *name;
    int         slot;       /* TG_SLOT_*: one encoding per message per loop */
    const char *head;       /* response header lines, CRLF-terminated */
    const char *heartbeat;  /* bytes written on an idle stream */
    const char *trailer;    /* written before closing (the end of a chunked body) */
    /* The wire form of message <m> into <b>. */
    void (*message)(tg_sbuf_t *b, const tg_msgview_t *m);
    /* The wire form of a notice (JSON <json> of type <type>, about <pos>). */
    void (*notice)(tg_sbuf_t *b, const char *type, const tg_pos_t *pos, const char *json,
                   size_t len);
} tg_stream_format_t;

extern const tg_stream_format_t tg_stream_sse;     /* net/sse.c */
extern const tg_stream_format_t tg_stream_chunked; /* net/stream.c */

typedef struct tg_stream_server {
    tg_proto_t proto;
    uint32_t   heartbeat_ms; /* idle streams get the format's heartbeat this often; 0 = never */
    tg_hub_t  *hub;
} tg_stream_server_t;

void tg_stream_server_init(tg_stream_server_t *ss, uint32_t heartbeat_ms, tg_hub_t *hub);

/* Answers <req> with 200 and the format's head, and takes the connection over.
 * Returns the session, or NULL when refused (a response is queued). */
tg_session_t *tg_stream_accept(tg_stream_server_t *ss, tg_http_req_t *req,
                               const tg_stream_format_t *fmt);

#endif
