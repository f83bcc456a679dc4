/* net/sse.h - Server-Sent Events (text/event-stream): a session the server
 * writes to. Each message is an event whose id is its position, so a browser's
 * EventSource resumes by itself (Last-Event-ID); comment lines keep idle
 * connections alive through proxies. Clients send nothing after the request.
 * Loop thread. */
#ifndef TG_NET_SSE_H
#define TG_NET_SSE_H

#include <stdint.h>

#include "net/http.h"
#include "net/session.h"

typedef struct tg_sse_server {
    tg_proto_t proto;
    uint32_t   heartbeat_ms; /* comment line this often; 0 = never */
    tg_hub_t  *hub;
} tg_sse_server_t;

void tg_sse_server_init(tg_sse_server_t *sse, uint32_t heartbeat_ms, tg_hub_t *hub);

/* Whether <req> asks for an event stream (Accept: text/event-stream). */
bool tg_sse_wanted(const tg_http_req_t *req);

/* Answers <req> with 200 text/event-stream and takes the connection over.
 * Returns the session, or NULL when refused (a response is queued). */
tg_session_t *tg_sse_accept(tg_sse_server_t *sse, tg_http_req_t *req);

#endif
