/* net/wsconn.h - WebSocket connections: the opening handshake on an HTTP
 * request, then a session carried by JSON text frames (docs/protocol.md).
 * Pings answered, close handshake, limits enforced with their close codes.
 *
 * Loop thread. The server object is read-only after boot. */
#ifndef TG_NET_WSCONN_H
#define TG_NET_WSCONN_H

#include <stdint.h>

#include "core/conn.h"
#include "net/http.h"
#include "net/session.h"
#include "net/ws.h"

typedef struct tg_wsconn_cfg {
    uint64_t max_message;  /* bytes of one client message: 1009 past it */
    uint32_t ping_ms;      /* ping an idle client this often; 0 = never */
} tg_wsconn_cfg_t;

/* Per loop, written by that loop only. */
typedef struct tg_wsconn_loop {
    tg_counter_t deflate_before; /* message payloads deflated or inflated, uncompressed */
    tg_counter_t deflate_after;  /* the same, compressed */
} tg_wsconn_loop_t;

typedef struct tg_wsconn_server {
    tg_proto_t        proto;
    tg_wsconn_cfg_t   cfg;
    tg_hub_t         *hub;
    int               nloops;
    tg_ws_zlib_t     *zlib;  /* one per loop: permessage-deflate keeps no per-connection state */
    tg_wsconn_loop_t *loops; /* by loop id */
} tg_wsconn_server_t;

/* Messages shorter than this go out uncompressed: alone, a tiny JSON message
 * compresses to about its own size (docs/protocol.md). */
#define TG_WS_DEFLATE_MIN 128

/* Returns 0 or -ENOMEM. */
int  tg_wsconn_server_init(tg_wsconn_server_t *ws, const tg_wsconn_cfg_t *cfg, tg_hub_t *hub,
                           int nloops);
void tg_wsconn_server_fini(tg_wsconn_server_t *ws);

/* Answers an upgrade request: checks it (400 or 426 with a reason when it is
 * not a valid WebSocket opening), replies 101 and takes the connection over.
 * Returns the new session, or NULL when refused (the response is queued). */
tg_session_t *tg_wsconn_accept(tg_wsconn_server_t *ws, tg_http_req_t *req);

#endif
