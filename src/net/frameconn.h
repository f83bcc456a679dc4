/* net/frameconn.h - sessions over TCP frames (include/tidegate/frames.h) on
 * their own listener: the same JSON commands and messages as WebSocket, in
 * length-prefixed frames, and binary payloads raw. Loop thread. */
#ifndef TG_NET_FRAMECONN_H
#define TG_NET_FRAMECONN_H

#include <stdint.h>

#include "core/conn.h"
#include "net/session.h"

typedef struct tg_frameconn_server {
    tg_proto_t proto;   /* what the frames listener hands connections to */
    uint32_t   max_frame;
    uint32_t   idle_ms; /* a client silent this long gets a PING; twice: closed. 0 = never */
    tg_hub_t  *hub;
} tg_frameconn_server_t;

void tg_frameconn_server_init(tg_frameconn_server_t *fs, uint32_t max_frame, uint32_t idle_ms,
                              tg_hub_t *hub);

#endif
