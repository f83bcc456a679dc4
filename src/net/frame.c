/* net/frame.c - see frame.h. */
#include "net/frame.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

void tg_frame_reader_init(tg_frame_reader_t *r, uint32_t max)
{
    memset(r, 0, sizeof(*r));
    r->max = max;
}

size_t tg_frame_header(uint8_t out[TG_FRAME_HEADER], uint8_t type, uint32_t len)
{
    uint32_t n = len + 1; /* the type byte counts */
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    out[4] = type;
    return TG_FRAME_HEADER;
}

tg_frame_result_t tg_frame_read(tg_frame_reader_t *r, const char **in, size_t *n, tg_buf_t *body,
                                tg_pool_t *pool, const char **why)
{
    {
        if (r->left == 0 && r->hdr_len < TG_FRAME_HEADER) {
            if (*n == 0)
                return TG_FRAME_MORE;
            size_t k = TG_FRAME_HEADER - r->hdr_len;
            if (k > *n)
                k = *n;
            memcpy(r->hdr + r->hdr_len, *in, k);
            r->hdr_len += (uint8_t)k;
            *in += k;
            *n -= k;
            if (r->hdr_len < TG_FRAME_HEADER)
                return TG_FRAME_MORE;
            uint32_t len = (uint32_t)r->hdr[0] << 24 | (uint32_t)r->hdr[1] << 16 |
                           (uint32_t)r->hdr[2] << 8 | r->hdr[3];
            r->type = r->hdr[4];
            if (len == 0) {
                *why = "empty frame (the length counts the type byte)";
                return TG_FRAME_BAD;
            }
            if (r->type < TG_FRAME_JSON || r->type > TG_FRAME_LZ4 || r->type == TG_FRAME_BINARY) {
                *why = "unknown frame type";
                return TG_FRAME_BAD;
            }
            if (len - 1 > r->max) { /* refused on the header: no waiting for the bytes */
                *why = "frame too big";
                return TG_FRAME_BAD;
            }
            r->left = len - 1;
            if ((r->type == TG_FRAME_PING || r->type == TG_FRAME_PONG) && r->left != 0) {
                *why = "ping and pong frames are empty";
                return TG_FRAME_BAD;
            }
        }
        size_t k = r->left < *n ? r->left : *n;
        if (k > 0) {
            if (tg_buf_append(body, pool, *in, k) != 0) {
                *why = "out of memory";
                return TG_FRAME_BAD;
            }
            *in += k;
            *n -= k;
            r->left -= (uint32_t)k;
        }
        if (r->left > 0)
            return TG_FRAME_MORE;
        r->hdr_len = 0; /* complete: the next call starts a new frame */
        return TG_FRAME_READY;
    }
}

int tg_frame_lz4_unpack(const tg_buf_t *body, uint32_t max, uint8_t **out, uint32_t *n,
                        const char **why)
{
    uint8_t len[4];
    if (body->len < 5 || body->len - 4 > INT32_MAX) {
        *why = "malformed LZ4 frame";
        return -EPROTO;
    }
    tg_buf_copy_out(body, 0, len, 4);
    uint32_t raw = (uint32_t)len[0] << 24 | (uint32_t)len[1] << 16 | (uint32_t)len[2] << 8 | len[3];
    if (raw < 2) { /* a type and at least one byte: nothing shorter is ever worth it */
        *why = "malformed LZ4 frame";
        return -EPROTO;
    }
    if (raw - 1 > max || raw > INT32_MAX) {
        *why = "frame too big";
        return -EMSGSIZE;
    }
    size_t zlen = body->len - 4;
    char *z = malloc(zlen);
    uint8_t *plain = malloc(raw);
    if (!z || !plain) {
        free(z);
        free(plain);
        *why = "out of memory";
        return -ENOMEM;
    }
    tg_buf_copy_out(body, 4, z, zlen);
    int got = LZ4_decompress_safe(z, (char *)plain, (int)zlen, (int)raw);
    free(z);
    if (got < 0 || (uint32_t)got != raw) {
        free(plain);
        *why = "LZ4 data that does not decompress to its length";
        return -EPROTO;
    }
    if (plain[0] != TG_FRAME_JSON && plain[0] != TG_FRAME_BINARY) {
        free(plain);
        *why = "an LZ4 frame may hold only a JSON or BINARY frame";
        return -EPROTO;
    }
    *out = plain;
    *n = raw;
    return 0;
}

tg_shared_t *tg_frame_lz4_pack(const uint8_t *inner, size_t n)
{
    /* Plain: 4 + n bytes. LZ4: 4 + 1 + 4 + block. Worth it when the block is
     * at most n - 6 bytes, so that is all the room it gets. */
    if (n < 7 || n > INT32_MAX)
        return NULL;
    int room = (int)(n - 6);
    tg_shared_t *f = tg_shared_new(TG_FRAME_HEADER + 4 + (size_t)room);
    if (!f)
        return NULL;
    uint8_t *p = (uint8_t *)f->data;
    int k = LZ4_compress_default((const char *)inner, (char *)p + TG_FRAME_HEADER + 4, (int)n,
                                 room);
    if (k <= 0) {
        tg_shared_unref(f);
        return NULL;
    }
    tg_frame_header(p, TG_FRAME_LZ4, 4 + (uint32_t)k);
    p[5] = (uint8_t)(n >> 24);
    p[6] = (uint8_t)(n >> 16);
    p[7] = (uint8_t)(n >> 8);
    p[8] = (uint8_t)n;
    f->len = (uint32_t)(TG_FRAME_HEADER + 4 + (size_t)k); /* the block is not filled past it */
    return f;
}
