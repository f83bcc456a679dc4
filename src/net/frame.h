/* net/frame.h - reading TCP frames (include/tidegate/frames.h) from a byte
 * stream in any split, with the size limit checked on the header. A pure codec:
 * no connection, no allocation but the caller's buffer chunks. Loop thread. */
#ifndef TG_NET_FRAME_H
#define TG_NET_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "tidegate/frames.h"

typedef enum tg_frame_result {
    TG_FRAME_MORE,  /* all input used, no frame complete */
    TG_FRAME_READY, /* a frame: <type>, body in <body> */
    TG_FRAME_BAD,   /* unknown type, empty frame, or over the limit: <why> */
} tg_frame_result_t;

typedef struct tg_frame_reader {
    uint32_t max;      /* largest body accepted */
    uint8_t  hdr[TG_FRAME_HEADER];
    uint8_t  hdr_len;
    uint8_t  type;     /* of the frame being read, or the one returned */
    uint32_t left;     /* body bytes still to come */
} tg_frame_reader_t;

void tg_frame_reader_init(tg_frame_reader_t *r, uint32_t max);
/* Reads from <*in>,<*n> (advanced past what was used) until a frame is
 * complete; its body goes to <body> (chunks from <pool>). On TG_FRAME_BAD,
 * <*why> says what (static text) and the reader is done. -ENOMEM is BAD with
 * why "out of memory". */
tg_frame_result_t tg_frame_read(tg_frame_reader_t *r, const char **in, size_t *n, tg_buf_t *body,
                                tg_pool_t *pool, const char **why);
/* Whether a frame is part-way in (the caller keeps its state). */
static inline bool tg_frame_reader_busy(const tg_frame_reader_t *r)
{
    return r->hdr_len != 0 || r->left != 0;
}
/* Writes a frame header for <len> body bytes of <type>; returns TG_FRAME_HEADER. */
size_t tg_frame_header(uint8_t out[TG_FRAME_HEADER], uint8_t type, uint32_t len);

#endif
