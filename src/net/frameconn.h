/* net/frameconn.h - sessions over TCP frames (include/tidegate/frames.h) on
 * their own listener: the same JSON commands and messages as WebSocket, in
 * length-prefixed frames, and binary payloads raw. A client's hello may turn
 * on LZ4 frames both ways (docs/protocol.md); LZ4 keeps no state, so that
 * costs nothing per connection but a flag. Loop thread. */
#ifndef TG_NET_FRAMECONN_H
#define TG_NET_FRAMECONN_H

#include <stdint.h>

#include "core/conn.h"
#include "net/session.h"

/* Per loop, written by that loop only. */
typedef struct tg_frameconn_loop {
    tg_counter_t lz4_before; /* frame bytes that went through LZ4 (either way), plain */
    tg_counter_t lz4_after;  /* the same frames as LZ4 frames on the wire */
} tg_frameconn_loop_t;

typedef struct tg_frameconn_server {
    tg_proto_t           proto;   /* what the frames listener hands connections to */
    uint32_t             max_frame;
    uint32_t             idle_ms; /* a client silent this long gets a PING; twice: closed. 0 = never */
    tg_hub_t            *hub;
    int                  nloops;
    tg_frameconn_loop_t *loops;   /* by loop id */
} tg_frameconn_server_t;

/* Boot thread. Returns 0 or -ENOMEM. */
int  tg_frameconn_server_init(tg_frameconn_server_t *fs, uint32_t max_frame, uint32_t idle_ms,
                              tg_hub_t *hub, int nloops);
/* After every loop has stopped. */
void tg_frameconn_server_fini(tg_frameconn_server_t *fs);

#endif
