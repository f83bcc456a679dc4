/* net/frame.h - reading TCP frames (include/tidegate/frames.h) from a byte
 * stream in any split, with the size limit checked on the header; packing and
 * unpacking LZ4 frames. A pure codec: no connection, no state. Loop thread. */
#ifndef TG_NET_FRAME_H
#define TG_NET_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/shared.h"
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

/* Unpacks the body of an LZ4 frame: a u32 BE length N, then an LZ4 block that
 * must decompress to exactly N bytes, the inner frame's type and body. N - 1
 * over <max> is refused before anything is decompressed, so memory and time
 * stay bounded by <max> whatever the block says. On success, *<out> is a
 * malloc'd block of N bytes (the caller frees it), its first byte the inner
 * type: JSON or BINARY (the caller decides whether that direction allows it).
 * Returns 0, -EMSGSIZE (too big), -EPROTO (malformed) or -ENOMEM, with a
 * static reason in <*why>. */
int tg_frame_lz4_unpack(const tg_buf_t *body, uint32_t max, uint8_t **out, uint32_t *n,
                        const char **why);

/* A whole LZ4 frame holding <inner>,<n> (an inner frame's type byte, then its
 * body), in a new shared block (one reference for the caller). NULL when the
 * LZ4 frame would not be shorter than the plain one, or memory is short. */
tg_shared_t *tg_frame_lz4_pack(const uint8_t *inner, size_t n);

#endif
