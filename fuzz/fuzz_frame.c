/* fuzz/fuzz_frame.c - arbitrary bytes through the TCP frame reader, whole and
 * in random splits (seeded by the first byte): both must see the same frames,
 * the same error at the same point, and the reader must never overrun. LZ4
 * frames are unpacked within the limit, and what unpacks packs and unpacks
 * back to the same bytes. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/pool.h"
#include "net/frame.h"

#define MAX_BODY 4096
#define MAX_EVENTS 512

typedef struct trace {
    int      n;
    uint8_t  type[MAX_EVENTS];
    uint32_t len[MAX_EVENTS];
    uint32_t sum[MAX_EVENTS];
    int      bad; /* 1 + event index of the error, 0 when none */
} trace_t;

static uint32_t checksum(const tg_buf_t *b)
{
    uint32_t h = 2166136261u;
    for (const tg_chunk_t *c = b->head; c; c = c->next)
        for (uint32_t i = c->rd; i < c->wr; i++)
            h = (h ^ (uint8_t)c->data[i]) * 16777619u;
    return h;
}

/* The frame an LZ4 frame holds, checked; its checksum mixed into <sum>. */
static uint32_t unpack(const tg_buf_t *body, uint32_t sum)
{
    uint8_t *plain = NULL;
    uint32_t n = 0;
    const char *why = NULL;
    int rc = tg_frame_lz4_unpack(body, MAX_BODY, &plain, &n, &why);
    if (rc != 0) {
        if (!why || plain || (rc != -EPROTO && rc != -EMSGSIZE && rc != -ENOMEM))
            abort();
        return sum ^ (uint32_t)-rc;
    }
    if (n < 2 || n - 1 > MAX_BODY || (plain[0] != TG_FRAME_JSON && plain[0] != TG_FRAME_BINARY))
        abort();
    tg_shared_t *z = tg_frame_lz4_pack(plain, n);
    if (z) { /* shorter than the plain frame, and the same bytes once unpacked */
        if (z->len >= 4 + n || (uint8_t)z->data[4] != TG_FRAME_LZ4)
            abort();
        static tg_pool_t pool;
        if (!pool.size)
            tg_pool_init(&pool, sizeof(tg_chunk_t) + 256, 16);
        tg_buf_t again = TG_BUF_INIT;
        if (tg_buf_append(&again, &pool, z->data + TG_FRAME_HEADER, z->len - TG_FRAME_HEADER))
            abort();
        uint8_t *back = NULL;
        uint32_t m = 0;
        if (tg_frame_lz4_unpack(&again, MAX_BODY, &back, &m, &why) != 0 || m != n ||
            memcmp(back, plain, n) != 0)
            abort();
        free(back);
        tg_buf_clear(&again, &pool);
        tg_shared_unref(z);
    }
    uint32_t h = sum;
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ plain[i]) * 16777619u;
    free(plain);
    return h;
}

static void run(const uint8_t *data, size_t size, uint32_t seed, trace_t *t, tg_pool_t *pool)
{
    tg_frame_reader_t r;
    tg_frame_reader_init(&r, MAX_BODY);
    tg_buf_t body = TG_BUF_INIT;
    memset(t, 0, sizeof(*t));
    size_t off = 0;
    while (off < size && !t->bad && t->n < MAX_EVENTS) {
        size_t k = size - off;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            size_t want = 1 + (seed >> 16) % 17;
            if (want < k)
                k = want;
        }
        const char *p = (const char *)data + off;
        size_t n = k;
        while (n > 0 && !t->bad && t->n < MAX_EVENTS) {
            const char *why = NULL;
            tg_frame_result_t res = tg_frame_read(&r, &p, &n, &body, pool, &why);
            if (res == TG_FRAME_MORE)
                break;
            if (res == TG_FRAME_BAD) {
                if (!why)
                    abort();
                t->bad = t->n + 1;
                break;
            }
            if (body.len > MAX_BODY)
                abort();
            t->type[t->n] = r.type;
            t->len[t->n] = (uint32_t)body.len;
            t->sum[t->n] = checksum(&body);
            if (r.type == TG_FRAME_LZ4)
                t->sum[t->n] = unpack(&body, t->sum[t->n]);
            t->n++;
            tg_buf_clear(&body, pool);
        }
        off += k;
    }
    tg_buf_clear(&body, pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tg_pool_t pool;
    static int ready;
    if (!ready) {
        tg_pool_init(&pool, sizeof(tg_chunk_t) + 64, 16); /* small chunks: many boundaries */
        ready = 1;
    }
    if (size == 0)
        return 0;
    static trace_t whole, split;
    run(data + 1, size - 1, 0, &whole, &pool);
    run(data + 1, size - 1, data[0] | 1u, &split, &pool);
    if (whole.n != split.n || whole.bad != split.bad ||
        memcmp(whole.type, split.type, (size_t)whole.n) != 0 ||
        memcmp(whole.len, split.len, (size_t)whole.n * sizeof(uint32_t)) != 0 ||
        memcmp(whole.sum, split.sum, (size_t)whole.n * sizeof(uint32_t)) != 0)
        abort();
    if (pool.taken != 0)
        abort();
    return 0;
}
