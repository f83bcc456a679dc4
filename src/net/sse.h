/* net/sse.h - Server-Sent Events (text/event-stream): a session the server
 * writes to. Each message is an event whose id is its position, so a browser's
 * EventSource resumes by itself (Last-Event-ID); comment lines keep idle
 * connections alive through proxies. The connection part is net/stream.c's.
 * Loop thread. */
#ifndef TG_NET_SSE_H
#define TG_NET_SSE_H

#include <stdint.h>

#include "net/http.h"
#include "net/stream.h"

/* Whether <req> asks for an event stream (Accept: text/event-stream). */
bool tg_sse_wanted(const tg_http_req_t *req);

/* The format, for tg_stream_accept (net/stream.h). */
extern const tg_stream_format_t tg_stream_sse;

#endif
