/* tidegate/frames.h - the TCP frame protocol between tidegate and native
 * clients (docs/protocol.md, "TCP frames"): what a client written in C
 * compiles against. A frame is a 4-byte big-endian length of what follows,
 * a type byte, then the body. */
#ifndef TIDEGATE_FRAMES_H
#define TIDEGATE_FRAMES_H

#include <stdint.h>

#define TG_FRAME_HEADER 5           /* length (4) + type (1) */
#define TG_FRAME_MAX_DEFAULT 1048576 /* body bytes, unless configured */

enum tg_frame_type {
    TG_FRAME_JSON = 1,   /* both ways: one command or message, as JSON */
    TG_FRAME_BINARY = 2, /* server to client: u16 BE header length, JSON header, raw payload */
    TG_FRAME_PING = 3,   /* both ways, empty: answered with PONG */
    TG_FRAME_PONG = 4,   /* both ways, empty */
    TG_FRAME_LZ4 = 5,    /* both ways, once a hello negotiated "lz4": u32 BE length N of the
                          * inner frame's type and body, then one LZ4 block holding those N
                          * bytes; the inner type is JSON or (server to client) BINARY */
};

#define TG_FRAME_LZ4_MIN 128 /* inner frames (type and body) shorter than this go as they are */

#endif
