/* net/frame.c - see frame.h. */
#include "net/frame.h"

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
            if (r->type < TG_FRAME_JSON || r->type > TG_FRAME_PONG || r->type == TG_FRAME_BINARY) {
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
