/* fuzz/fuzz_ws.c - arbitrary bytes through the WebSocket codec (net/ws.h).
 *
 * Byte 0 chooses: bit 0 permessage-deflate on the reader, bit 1 the window
 * compressed messages are re-deflated with (9 or 15), the rest seeds the
 * splits. The other bytes are read twice, whole and in random splits, and the
 * two event logs (hashed) must agree. Every message must respect the limits
 * and, when uncompressed text, be valid UTF-8; compressed ones are inflated
 * with a small limit, and every message is deflated and inflated back. The
 * whole input is also tried as a Sec-WebSocket-Extensions value, a
 * Sec-WebSocket-Key and UTF-8 fed in pieces. Small limits so that the 1009
 * paths and the inflate limit are reachable. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/pool.h"
#include "net/ws.h"

#define MAX_MESSAGE 512
#define MAX_INFLATE 4096

static tg_pool_t pool;
static tg_ws_zlib_t zlib;

#define CHECK(cond)                                                                \
    do {                                                                           \
        if (!(cond))                                                               \
            abort();                                                               \
    } while (0)

static uint64_t mix(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * UINT64_C(0x100000001b3);
    return h;
}

static size_t flatten(const tg_buf_t *b, uint8_t *out, size_t cap)
{
    CHECK(b->len <= cap);
    return tg_buf_copy_out(b, 0, out, b->len);
}

/* What a server does with a message: check it, inflate it, round-trip it. */
static uint64_t on_message(const tg_ws_event_t *ev, const tg_buf_t *msg, int window,
                           uint64_t h)
{
    static uint8_t flat[MAX_MESSAGE], back[MAX_INFLATE + 1];
    CHECK(msg->len <= MAX_MESSAGE);
    CHECK(ev->opcode == TG_WS_OP_TEXT || ev->opcode == TG_WS_OP_BINARY);
    size_t n = flatten(msg, flat, sizeof(flat));
    h = mix(h, flat, n);
    if (ev->opcode == TG_WS_OP_TEXT && !ev->compressed)
        CHECK(tg_utf8_valid(flat, n));
    if (ev->compressed) {
        tg_buf_t out = TG_BUF_INIT;
        int rc = tg_ws_inflate(&zlib, msg, MAX_INFLATE, &out, &pool);
        CHECK(rc == 0 || rc == -EMSGSIZE || rc == -EINVAL);
        CHECK(tg_buf_check(&out) && out.len <= MAX_INFLATE + 1);
        if (rc == 0 && ev->opcode == TG_WS_OP_TEXT) {
            size_t k = flatten(&out, back, sizeof(back));
            h = mix(h, "u", tg_utf8_valid(back, k));
        }
        h = mix(h, &rc, sizeof(rc));
        tg_buf_clear(&out, &pool);
    }
    /* Whatever came in goes back out compressed and must come back intact. */
    tg_buf_t z = TG_BUF_INIT, out = TG_BUF_INIT;
    CHECK(tg_ws_deflate(&zlib, window, flat, n, &z, &pool) == 0);
    CHECK(tg_ws_inflate(&zlib, &z, n, &out, &pool) == 0);
    CHECK(out.len == n && flatten(&out, back, sizeof(back)) == n && memcmp(back, flat, n) == 0);
    tg_buf_clear(&z, &pool);
    tg_buf_clear(&out, &pool);
    return h;
}

static uint64_t on_control(const tg_ws_event_t *ev, uint64_t h)
{
    CHECK(ev->control_len <= TG_WS_CONTROL_MAX);
    CHECK(ev->opcode == TG_WS_OP_CLOSE || ev->opcode == TG_WS_OP_PING ||
          ev->opcode == TG_WS_OP_PONG);
    if (ev->opcode == TG_WS_OP_CLOSE && ev->control_len >= 2) {
        unsigned code = (unsigned)ev->control[0] << 8 | ev->control[1];
        CHECK(code >= 1000 && code <= 4999 && code != 1004 && code != 1005 && code != 1006);
        CHECK(tg_utf8_valid(ev->control + 2, ev->control_len - 2u));
        /* Echo it, as a server does: the reason must survive the cut. */
        char reason[TG_WS_CONTROL_MAX];
        size_t k = ev->control_len - 2u;
        memcpy(reason, ev->control + 2, k);
        reason[k] = '\0';
        uint8_t f[2 + TG_WS_CONTROL_MAX];
        size_t fn = tg_ws_close_frame(f, (uint16_t)code, reason);
        CHECK(fn >= 4 && fn == 2u + f[1] && tg_utf8_valid(f + 4, fn - 4));
    }
    h = mix(h, &ev->opcode, 1);
    return mix(h, ev->control, ev->control_len);
}

/* Reads <data> in pieces (all of it at once when <seed> is 0); returns the
 * hash of the events. */
static uint64_t read_all(const uint8_t *data, size_t size, bool deflate, int window,
                         uint32_t seed)
{
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, MAX_MESSAGE, deflate);
    tg_buf_t msg = TG_BUF_INIT;
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    size_t off = 0;
    bool dead = false;
    while (off < size && !dead) {
        size_t k = size - off;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            k = 1 + (seed >> 16) % 97;
            if (k > size - off)
                k = size - off;
        }
        const char *p = (const char *)data + off;
        size_t n = k;
        for (;;) {
            tg_ws_event_t ev;
            tg_ws_result_t res = tg_ws_read(&r, &p, &n, &msg, &pool, &ev);
            CHECK(tg_buf_check(&msg));
            CHECK(msg.len <= MAX_MESSAGE);
            if (res == TG_WS_MORE) { /* how often depends on the splits: not logged */
                CHECK(n == 0);
                break;
            }
            h = mix(h, &res, sizeof(res));
            if (res == TG_WS_ERROR) {
                CHECK(ev.reason != NULL);
                CHECK(ev.close_code == TG_WS_CLOSE_PROTOCOL ||
                      ev.close_code == TG_WS_CLOSE_INVALID_DATA ||
                      ev.close_code == TG_WS_CLOSE_TOO_BIG);
                h = mix(h, &ev.close_code, sizeof(ev.close_code));
                dead = true;
                break;
            }
            if (res == TG_WS_CONTROL) {
                h = on_control(&ev, h);
                continue;
            }
            CHECK(res == TG_WS_MESSAGE && !tg_ws_reader_busy(&r));
            h = on_message(&ev, &msg, window, h);
            tg_buf_clear(&msg, &pool);
        }
        off += k;
    }
    h = mix(h, "b", dead ? 2 : tg_ws_reader_busy(&r));
    tg_buf_clear(&msg, &pool);
    return h;
}

static void headers(const uint8_t *data, size_t size)
{
    uint8_t bits = 0;
    tg_ws_deflate_offer_t o = tg_ws_deflate_parse((const char *)data, size, &bits);
    char line[160];
    size_t n = tg_ws_deflate_response(&o, bits, line, sizeof(line));
    if (o.accepted) {
        CHECK(bits >= 9 && bits <= 15 && n > 0 && n == strlen(line));
        CHECK(o.client_max_window_bits >= 8 && o.client_max_window_bits <= 15);
    } else {
        CHECK(bits == 15 && n == 0);
    }
    if (tg_ws_key_valid((const char *)data, size)) {
        char accept[29];
        tg_ws_accept_key((const char *)data, size, accept);
        CHECK(strlen(accept) == 28);
    }
    /* UTF-8 fed in two pieces agrees with all at once. */
    size_t cut = size ? data[0] % (size + 1) : 0;
    uint32_t s = tg_utf8_step(TG_UTF8_ACCEPT, data, cut);
    s = tg_utf8_step(s, data + cut, size - cut);
    CHECK((s == TG_UTF8_ACCEPT) == tg_utf8_valid(data, size));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        tg_pool_init(&pool, sizeof(tg_chunk_t) + 61, 64);
        if (tg_ws_zlib_init(&zlib) != 0)
            abort();
        ready = 1;
    }
    headers(data, size);
    if (size == 0)
        return 0;
    bool deflate = data[0] & 1;
    int window = data[0] & 2 ? 9 : 15;
    uint32_t seed = data[0] | 0x100u; /* never 0: 0 means whole */
    uint64_t whole = read_all(data + 1, size - 1, deflate, window, 0);
    uint64_t split = read_all(data + 1, size - 1, deflate, window, seed);
    CHECK(whole == split);
    CHECK(pool.taken == 0);
    return 0;
}
