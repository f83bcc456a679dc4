/* net/ws.h - RFC 6455 WebSocket codec, server side: the opening handshake's
 * checks and accept key, frame reading (unmasking, fragmentation, control
 * frames, limits, UTF-8 of text), frame headers for writing, and
 * permessage-deflate (RFC 7692) without per-connection zlib state.
 *
 * A pure codec: it knows no connection, socket or loop. The caller feeds bytes
 * and writes what it is given. Loop thread of the caller; no global state
 * except the read-only tables.
 *
 * Memory: a tg_ws_reader_t is small and holds no buffer; the payload of a
 * message being assembled goes to a tg_buf_t the caller passes (taken from the
 * caller's pool only while a message is mid-arrival).
 *
 * Compression: answered with server_no_context_takeover and
 * client_no_context_takeover (RFC 7692 7.1.1: the server may add both), so every
 * message is compressed alone and one deflater and one inflater per loop
 * (tg_ws_zlib_t) serve every connection of that loop. */
#ifndef TG_NET_WS_H
#define TG_NET_WS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/pool.h"

enum {
    TG_WS_OP_CONT = 0x0,
    TG_WS_OP_TEXT = 0x1,
    TG_WS_OP_BINARY = 0x2,
    TG_WS_OP_CLOSE = 0x8,
    TG_WS_OP_PING = 0x9,
    TG_WS_OP_PONG = 0xA,
};

/* RFC 6455 7.4.1 close codes used by tidegate. */
enum {
    TG_WS_CLOSE_NORMAL = 1000,
    TG_WS_CLOSE_GOING_AWAY = 1001,
    TG_WS_CLOSE_PROTOCOL = 1002,
    TG_WS_CLOSE_UNSUPPORTED = 1003,
    TG_WS_CLOSE_NO_STATUS = 1005,   /* never sent */
    TG_WS_CLOSE_ABNORMAL = 1006,    /* never sent */
    TG_WS_CLOSE_INVALID_DATA = 1007,
    TG_WS_CLOSE_POLICY = 1008,
    TG_WS_CLOSE_TOO_BIG = 1009,
    TG_WS_CLOSE_INTERNAL = 1011,
};

#define TG_WS_CONTROL_MAX 125
#define TG_WS_HEADER_MAX  10 /* server frames are never masked */

/* ---- handshake ---- */

/* Whether <key> (Sec-WebSocket-Key) is the base64 form of 16 bytes: 22
 * characters of the standard alphabet and "==". The 4 unused low bits of the
 * 22nd character are not checked (RFC 4648 3.5 lets decoders ignore them). */
bool tg_ws_key_valid(const char *key, size_t len);
/* Writes the 28-character Sec-WebSocket-Accept value for <key> and a NUL.
 * <key> is at most 64 bytes (asserted; a valid one has 24). */
void tg_ws_accept_key(const char *key, size_t len, char out[29]);

typedef struct tg_ws_deflate_offer {
    bool    accepted;               /* answer with permessage-deflate */
    uint8_t client_max_window_bits; /* 8..15; what the client will compress with */
    uint8_t server_max_window_bits; /* 0, or 9..15 as offered: the answer repeats it */
} tg_ws_deflate_offer_t;

/* Reads a Sec-WebSocket-Extensions value (several headers joined with ", ")
 * and picks the first permessage-deflate offer tidegate can honour: one whose
 * parameters are all among server_no_context_takeover and
 * client_no_context_takeover (without value), server_max_window_bits=9..15 and
 * client_max_window_bits (with or without 8..15), each at most once; values
 * may be quoted, names match case-insensitively. Other offers are skipped,
 * among them server_max_window_bits=8 (zlib cannot deflate raw with a window
 * of 256 bytes, and a larger one is not allowed). <*server_window_bits> gets
 * the window to compress with: the offered server_max_window_bits, else 15
 * (also when nothing is accepted). A syntax error anywhere in <value> means no
 * offer. Returns the choice. */
tg_ws_deflate_offer_t tg_ws_deflate_parse(const char *value, size_t len,
                                          uint8_t *server_window_bits);
/* The response header line for <offer> ("Sec-WebSocket-Extensions: ...\r\n"),
 * NUL-terminated, into <out>; returns its length, 0 when nothing was accepted
 * or <cap> is too small (160 is enough). It always has
 * server_no_context_takeover and client_no_context_takeover, and
 * server_max_window_bits=<server_window_bits> when the client offered that
 * parameter or the window is below 15; never client_max_window_bits (tidegate
 * inflates with a window of 15, which reads any smaller one). */
size_t tg_ws_deflate_response(const tg_ws_deflate_offer_t *offer, uint8_t server_window_bits,
                              char *out, size_t cap);

/* ---- reading ---- */

typedef enum tg_ws_result {
    TG_WS_MORE,    /* all input consumed, nothing complete yet */
    TG_WS_MESSAGE, /* a whole data message is in <msg>: see ev.opcode, ev.compressed */
    TG_WS_CONTROL, /* a control frame: ev.opcode, payload in ev.control */
    TG_WS_ERROR,   /* protocol violation: ev.close_code, ev.reason; close the connection */
} tg_ws_result_t;

typedef struct tg_ws_event {
    uint8_t     opcode;       /* TEXT, BINARY, CLOSE, PING or PONG */
    bool        compressed;   /* MESSAGE: RSV1 was set (permessage-deflate) */
    uint16_t    close_code;   /* ERROR: what to close with */
    const char *reason;       /* ERROR: short static text for the log and the close frame */
    uint8_t     control_len;
    uint8_t     control[TG_WS_CONTROL_MAX]; /* CONTROL: payload, unmasked */
} tg_ws_event_t;

typedef struct tg_ws_reader {
    uint64_t max_message;  /* bytes of one message (compressed as received): 1009 past it */
    bool     deflate;      /* permessage-deflate negotiated: RSV1 allowed on first frames */
    /* private */
    uint8_t  hdr[14];
    uint8_t  hdr_len;
    uint8_t  opcode;       /* of the frame being read */
    bool     fin;
    bool     rsv1;
    uint8_t  mask[4];
    uint8_t  mask_pos;
    uint64_t left;         /* payload bytes of this frame still to come */
    uint8_t  msg_opcode;   /* TEXT or BINARY while a message is in progress, else 0 */
    bool     msg_compressed;
    uint64_t msg_len;
    uint32_t utf8_state;   /* incremental check of an uncompressed text message */
    uint8_t  ctl_len;
    uint8_t  ctl[TG_WS_CONTROL_MAX];
} tg_ws_reader_t;

/* Sets the limits; the rest starts empty. */
void tg_ws_reader_init(tg_ws_reader_t *r, uint64_t max_message, bool deflate);

/* Reads frames from <*in> (<*n> bytes), advancing both past what it used, and
 * stops at the first complete message or control frame, or an error; input
 * may be split anywhere (one byte at a time works). TG_WS_MORE means all of
 * it was used. Data payloads are unmasked and appended to <msg> (taking
 * chunks from <pool>).
 * Control frames may arrive between the fragments of a message (RFC 6455
 * 5.4); <msg> then keeps the partial message. After TG_WS_MESSAGE the caller
 * consumes <msg> (and, if compressed, inflates it) before reading on.
 * Checks: client frames must be masked, RSV bits unused (RSV1 only on the
 * first frame of a message when deflate is on), known opcodes, control frames
 * unfragmented and at most 125 bytes, a close payload of 0 or >=2 bytes with a
 * valid code and UTF-8 reason, continuation only inside a message, a new
 * message only outside one, the size limit, and UTF-8 of uncompressed text
 * messages (1007). Each check runs as soon as its bytes are in: a length past
 * the limit fails on the header, before the payload; a bad UTF-8 byte fails on
 * arrival. Lengths must be minimally encoded with the top bit clear (RFC 6455
 * 5.2, else 1002). Close codes allowed: 1000-1003, 1007-1011, 3000-4999.
 * Compressed text is for the caller to check once inflated (tg_utf8_valid).
 * Running out of memory yields TG_WS_ERROR with 1011. After TG_WS_ERROR the
 * reader is done with (the connection closes). */
tg_ws_result_t tg_ws_read(tg_ws_reader_t *r, const char **in, size_t *n, tg_buf_t *msg,
                          tg_pool_t *pool, tg_ws_event_t *ev);

/* True when a message has started and not finished (the caller keeps <msg>). */
static inline bool tg_ws_reader_busy(const tg_ws_reader_t *r)
{
    return r->msg_opcode != 0 || r->hdr_len != 0 || r->left != 0;
}

/* ---- writing ---- */

/* Writes a server frame header (FIN set, unmasked) for <len> payload bytes into
 * <out>; returns its size (2, 4 or 10). <rsv1> marks a compressed message. */
size_t tg_ws_frame_header(uint8_t out[TG_WS_HEADER_MAX], uint8_t opcode, bool rsv1,
                          uint64_t len);
/* A whole close frame, its 2-byte header included (write <out> as it is: no
 * tg_ws_frame_header in front), into <out>: the code big-endian and the reason
 * cut to fit (at most 123 bytes, never inside a UTF-8 sequence). Returns its
 * size, 2..127. <reason> may be NULL; <code> 0 makes an empty close frame (the
 * answer to one, RFC 6455 5.5.1). */
size_t tg_ws_close_frame(uint8_t out[2 + TG_WS_CONTROL_MAX], uint16_t code, const char *reason);

/* ---- UTF-8 ---- */

#define TG_UTF8_ACCEPT 0u
#define TG_UTF8_REJECT 12u
/* Advances the incremental validator over <n> bytes; returns the new state
 * (ACCEPT: complete so far, REJECT: invalid, else mid-sequence). */
uint32_t tg_utf8_step(uint32_t state, const uint8_t *p, size_t n);
bool     tg_utf8_valid(const uint8_t *p, size_t n);

/* ---- permessage-deflate, one per loop ---- */

typedef struct tg_ws_zlib {
    z_stream deflater;    /* raw deflate, reset per message */
    int      deflate_bits;  /* window bits the deflater was made with */
    z_stream inflater;    /* raw inflate, window 15, reset per message */
    bool     ready;
} tg_ws_zlib_t;

/* Returns 0 or -ENOMEM. */
int  tg_ws_zlib_init(tg_ws_zlib_t *z);
void tg_ws_zlib_fini(tg_ws_zlib_t *z);
/* Compresses <n> bytes as one message (trailing 00 00 ff ff removed, RFC 7692
 * 7.2.1) with a window of <window_bits> (9..15), appending to <out>. Returns 0,
 * or -ENOMEM (<out> may then hold part of the output). A window other than the
 * last one used re-creates the deflater. */
int tg_ws_deflate(tg_ws_zlib_t *z, int window_bits, const void *p, size_t n, tg_buf_t *out,
                  tg_pool_t *pool);
/* Inflates the compressed message in <in> (00 00 ff ff appended, RFC 7692
 * 7.2.2) into <out>, refusing past <max> bytes of output: it stops after
 * max + 1, so a zip bomb costs bounded memory and time. Returns 0, -EMSGSIZE
 * (too big: close 1009), -EINVAL (corrupt: close 1007) or -ENOMEM; on error
 * <out> may hold part of the output. Corrupt includes a message cut inside a
 * block and data after a final (BFINAL) block, except the lone 0x00 that RFC
 * 7692 7.2.3.4 puts there. An empty <in> inflates to nothing. */
int tg_ws_inflate(tg_ws_zlib_t *z, const tg_buf_t *in, uint64_t max, tg_buf_t *out,
                  tg_pool_t *pool);

#endif
