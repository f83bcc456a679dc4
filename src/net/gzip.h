/* net/gzip.h - gzip for whole HTTP responses (docs/protocol.md, "Compression"):
 * what a request's Accept-Encoding allows (RFC 9110 12.5.3), which media types
 * are worth compressing, and the deflater each IO loop keeps.
 *
 * Memory: one deflater per loop (about 256 KiB at memLevel 8), made on first
 * use and reset (deflateReset), never re-made, per response. Nothing per
 * connection. Streams (SSE, chunked) are never gzipped: a zlib stream per
 * connection would break the budget of an idle subscriber.
 *
 * The parser and the type check: any thread, no state. A tg_gzip_t: the loop
 * thread that owns it. */
#ifndef TG_NET_GZIP_H
#define TG_NET_GZIP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zlib.h>

#include "core/buf.h"
#include "core/pool.h"

/* The weights (q, in thousandths: 0..1000) a request gave; -1: not named. */
typedef struct tg_gzip_accept {
    int16_t gzip;     /* "gzip" or "x-gzip" (RFC 9110 8.4.1.3), first named wins */
    int16_t identity; /* "identity" */
    int16_t any;      /* "*" */
} tg_gzip_accept_t;

/* Nothing named: what a request without Accept-Encoding says. */
void tg_gzip_accept_init(tg_gzip_accept_t *a);
/* Reads one Accept-Encoding field value (call once per header line): a
 * comma-separated list of codings, each with an optional ";q=" weight. Names
 * are case-insensitive. An element with a malformed weight (not 0..1 with at
 * most three decimals) is ignored, as are empty elements and other codings.
 * Linear in <n>; never fails. */
void tg_gzip_accept_parse(tg_gzip_accept_t *a, const char *v, size_t n);
/* Whether to answer in gzip: gzip's weight (named, else that of "*", else 0)
 * is above zero and not below identity's (named, else that of "*"). A tie goes
 * to gzip. So "gzip;q=0" is a no, and so is no header at all. */
bool tg_gzip_accept_wants(const tg_gzip_accept_t *a);

/* Whether a body of media type <content_type> (parameters allowed) is worth
 * compressing: false for types that already are (image/ but SVG, audio/,
 * video/, font/woff and woff2, zip, gzip and other archives, and
 * application/octet-stream, which is opaque). */
bool tg_gzip_type_ok(const char *content_type);

typedef struct tg_gzip {
    z_stream z;
    int      level; /* the deflater's level; 0: not made yet */
} tg_gzip_t;

#define TG_GZIP_INIT ((tg_gzip_t){ .level = 0 })

/* Compresses <n> bytes into one gzip member (RFC 1952) appended to <out>
 * (chunks from <pool>), at <level> (1..9). Returns 0; -E2BIG as soon as the
 * output reaches <n> bytes (not worth it: <out> then holds part of it, for the
 * caller to clear); -ENOMEM. */
int  tg_gzip_compress(tg_gzip_t *g, int level, const void *p, size_t n, tg_buf_t *out,
                      tg_pool_t *pool);
/* Frees the deflater, if made. */
void tg_gzip_fini(tg_gzip_t *g);

#endif
