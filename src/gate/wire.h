/* gate/wire.h - encoder and decoder of backend-link frames
 * (include/tidegate/backend.h). Pure functions over memory: no loop, no
 * socket, no global state, so the gate and libtidegate-backend share them and
 * a fuzzer drives them directly. Any thread.
 *
 * Decoding never trusts a length: every pair is checked against the body's
 * end, and a compressed body is inflated only up to the limit given. */
#ifndef TG_GATE_WIRE_H
#define TG_GATE_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tidegate/backend.h"

/* A decoded frame header. */
typedef struct tg_wire_head {
    uint8_t  type;
    uint8_t  flags;
    uint32_t len; /* body bytes on the wire, after the header */
    uint64_t id;
} tg_wire_head_t;

/* One key/value pair, pointing into the body. */
typedef struct tg_wire_pair {
    const char *key;
    uint16_t    klen;
    const char *val;
    uint32_t    vlen;
} tg_wire_pair_t;

/* Walks the pairs of a body. */
typedef struct tg_wire_iter {
    const uint8_t *p;
    const uint8_t *end;
} tg_wire_iter_t;

/* A growing frame under construction (malloc'd; owned by the caller). */
typedef struct tg_wire_enc {
    uint8_t *p;
    size_t   len;
    size_t   cap;
    size_t   start; /* offset of the current frame's header */
    bool     nomem; /* an append failed: the frame is unusable */
} tg_wire_enc_t;

/* Decoding. */

/* Parses the TG_BK_HEADER bytes at <p>. Returns 0, -EPROTO (magic, version,
 * type or unknown flags) or -EMSGSIZE (body longer than <max_body>). */
int tg_wire_head(const uint8_t *p, uint32_t max_body, tg_wire_head_t *h);

/* Checks that <body>,<len> is a well-formed sequence of at most
 * TG_BK_MAX_PAIRS pairs with keys of 1..TG_BK_MAX_KEY bytes. Returns the
 * number of pairs, or -EPROTO. */
int tg_wire_check(const uint8_t *body, size_t len);

static inline void tg_wire_iter_init(tg_wire_iter_t *it, const uint8_t *body, size_t len)
{
    it->p = body;
    it->end = body + len;
}

/* The next pair into <kv>: 1, or 0 at the end, or -EPROTO when malformed. */
int tg_wire_next(tg_wire_iter_t *it, tg_wire_pair_t *kv);

/* The first value of <key> in a checked body: true with <kv> set, or false. */
bool tg_wire_find(const uint8_t *body, size_t len, const char *key, tg_wire_pair_t *kv);

/* Whether <kv>'s key equals NUL-terminated <key>. */
bool tg_wire_key_is(const tg_wire_pair_t *kv, const char *key);

/* Parses a decimal value up to 2^64 - 1 (what tg_wire_put_u64 writes).
 * Returns 0 or -EINVAL. */
int tg_wire_u64(const char *p, size_t n, uint64_t *out);

/* Inflates a TG_BK_F_LZ4 body into a new malloc'd buffer (*<out>, *<outlen>),
 * refusing a raw size above <max_body>. Returns 0, -EPROTO or -ENOMEM. */
int tg_wire_inflate(const uint8_t *in, size_t n, uint32_t max_body, uint8_t **out,
                    size_t *outlen);

/* Encoding. A frame: begin, put pairs, end. Several frames may be appended
 * to one encoder (one write for many). */

void tg_wire_enc_init(tg_wire_enc_t *e);
void tg_wire_enc_fini(tg_wire_enc_t *e);
/* Forgets the contents, keeps the memory. */
void tg_wire_enc_reset(tg_wire_enc_t *e);

void tg_wire_begin(tg_wire_enc_t *e, uint8_t type, uint64_t id);
void tg_wire_put(tg_wire_enc_t *e, const char *key, const void *val, size_t vlen);
/* Appends a pair whose value the caller writes: returns where its <vlen>
 * bytes go (valid until the next append), or NULL (the encoder is then
 * marked failed; tg_wire_end reports it). <key> is <klen> bytes, not NUL-ended. */
uint8_t *tg_wire_put_space(tg_wire_enc_t *e, const char *key, size_t klen, size_t vlen);
void tg_wire_put_str(tg_wire_enc_t *e, const char *key, const char *val);
void tg_wire_put_u64(tg_wire_enc_t *e, const char *key, uint64_t val);
/* Appends pairs already encoded (a body made earlier). */
void tg_wire_put_raw(tg_wire_enc_t *e, const void *pairs, size_t len);
/* Completes the frame. With <lz4_min> > 0, a body of at least that many bytes
 * is LZ4-compressed when that makes it shorter. Returns 0, or -ENOMEM (the
 * encoder then holds nothing usable), or -EMSGSIZE past 4 GiB. */
int  tg_wire_end(tg_wire_enc_t *e, size_t lz4_min);

/* Patches the id of the frame whose header starts at <frame>. */
void tg_wire_set_id(uint8_t *frame, uint64_t id);

#endif
