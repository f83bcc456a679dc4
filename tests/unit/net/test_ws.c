/* tests/unit/net/test_ws.c - the WebSocket codec (src/net/ws.h): handshake
 * key, permessage-deflate negotiation, frame reading with every check and its
 * close code, frame writing, UTF-8 validation and per-message deflate.
 *
 * Every read goes through run(), which feeds the bytes to a fresh reader three
 * ways (whole, one byte at a time, random pieces) and requires the same log of
 * events from each: split invariance is checked by every reading test, not
 * only by its own. Logs are text ("M1 \"Hello\"", "C9 x:0102", "E1002") so
 * that expectations read like the frames. Chunks are 61 bytes, so payloads
 * cross chunk boundaries everywhere.
 *
 * Vectors come from RFC 6455 (1.3, 5.7) and RFC 7692 (7.2.3); the offers are
 * those Chromium, Firefox, python websockets 10.4 and aiohttp 3.8 send. The
 * -ENOMEM paths use a pool whose blocks cannot be allocated (under ASan each
 * attempt prints one "failed to allocate" WARNING line: expected). The
 * compressed frame from python websockets was generated once; nothing here
 * runs Python. Deterministic: fixed-seed generator, no clock. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "core/buf.h"
#include "core/pool.h"
#include "net/ws.h"

/* Under ASan an impossible allocation must fail like malloc does, not abort:
 * the out-of-memory tests rely on it. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "allocator_may_return_null=1";
}

#include "../rng.h"

/* ---- growing byte and text buffers ---- */

struct bytes {
    uint8_t *p;
    size_t   len, cap;
};

static void bytes_add(struct bytes *b, const void *p, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        b->cap = (b->len + n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    if (n)
        memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = 0; /* so that logs are strings */
}

static void bytes_printf(struct bytes *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    bytes_add(b, tmp, (size_t)n);
}

/* ---- building client frames ---- */

static const uint8_t KEY[4] = { 0x37, 0xfa, 0x21, 0x3d }; /* RFC 6455 5.7's */

/* Appends a masked client frame: first byte <b0>, minimal length encoding. */
static void frame(struct bytes *b, uint8_t b0, const void *payload, size_t len)
{
    uint8_t h[14];
    size_t n = 0;
    h[n++] = b0;
    if (len < 126) {
        h[n++] = (uint8_t)(0x80 | len);
    } else if (len <= 0xffff) {
        h[n++] = 0x80 | 126;
        h[n++] = (uint8_t)(len >> 8);
        h[n++] = (uint8_t)len;
    } else {
        h[n++] = 0x80 | 127;
        for (int i = 0; i < 8; i++)
            h[n++] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
    }
    memcpy(h + n, KEY, 4);
    bytes_add(b, h, n + 4);
    const uint8_t *p = payload;
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i] ^ KEY[i & 3];
        bytes_add(b, &c, 1);
    }
}

static void frame_str(struct bytes *b, uint8_t b0, const char *s)
{
    frame(b, b0, s, strlen(s));
}

/* ---- reading: the event log ---- */

enum split { WHOLE, BYTE, RANDOM };

static uint64_t fnv1a(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * UINT64_C(0x100000001b3);
    return h;
}

/* A payload for the log: quoted when short and printable, hex when short,
 * else length and hash. */
static void log_payload(struct bytes *log, const uint8_t *p, size_t n)
{
    bool printable = n <= 40;
    for (size_t i = 0; i < n && printable; i++)
        printable = p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"';
    if (printable) {
        bytes_printf(log, " \"%.*s\"", (int)n, (const char *)p);
    } else if (n <= 40) {
        bytes_printf(log, " x:");
        for (size_t i = 0; i < n; i++)
            bytes_printf(log, "%02x", p[i]);
    } else {
        bytes_printf(log, " #%zu:%016llx", n,
                     (unsigned long long)fnv1a(UINT64_C(0xcbf29ce484222325), p, n));
    }
}

static void log_message(struct bytes *log, uint8_t opcode, bool compressed, const uint8_t *p,
                        size_t n)
{
    bytes_printf(log, "M%u%s", opcode, compressed ? "z" : "");
    log_payload(log, p, n);
    bytes_printf(log, "\n");
}

static void log_control(struct bytes *log, uint8_t opcode, const uint8_t *p, size_t n)
{
    bytes_printf(log, "C%u", opcode);
    log_payload(log, p, n);
    bytes_printf(log, "\n");
}

#define CHUNK 61 /* odd and small: payloads cross chunks everywhere */

/* Feeds <data> to a fresh reader cut as <how> says, logging each event; stops
 * at the first error. Checks the contract on the way: MORE only once a piece
 * is used up, the message buffer consistent, every chunk returned. */
static void run(struct bytes *log, const uint8_t *data, size_t len, bool deflate, uint64_t max,
                enum split how, uint64_t seed)
{
    tg_pool_t pool;
    tg_pool_init(&pool, sizeof(tg_chunk_t) + CHUNK, 4);
    tg_buf_t msg = TG_BUF_INIT;
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, max, deflate);
    rng_seed(seed);
    uint8_t *flat = NULL;
    bool dead = false;
    size_t off = 0;
    while (off < len && !dead) {
        size_t k = len - off;
        if (how == BYTE)
            k = 1;
        else if (how == RANDOM && k > 1)
            k = 1 + rng_below(rng_below(4) == 0 ? k : (k < 40 ? k : 40));
        const char *p = (const char *)data + off;
        size_t n = k;
        for (;;) {
            tg_ws_event_t ev;
            memset(&ev, 0x5a, sizeof(ev));
            tg_ws_result_t res = tg_ws_read(&r, &p, &n, &msg, &pool, &ev);
            assert_true(tg_buf_check(&msg));
            assert_ptr_equal(p + n, (const char *)data + off + k);
            if (res == TG_WS_MORE) {
                assert_int_equal(n, 0);
                break;
            }
            if (res == TG_WS_ERROR) {
                assert_non_null(ev.reason);
                bytes_printf(log, "E%u\n", ev.close_code);
                dead = true;
                break;
            }
            if (res == TG_WS_CONTROL) {
                assert_true(ev.control_len <= TG_WS_CONTROL_MAX);
                log_control(log, ev.opcode, ev.control, ev.control_len);
                continue;
            }
            assert_int_equal(res, TG_WS_MESSAGE);
            assert_false(tg_ws_reader_busy(&r));
            flat = realloc(flat, msg.len + 1);
            assert_non_null(flat);
            assert_int_equal(tg_buf_copy_out(&msg, 0, flat, msg.len), msg.len);
            log_message(log, ev.opcode, ev.compressed, flat, msg.len);
            tg_buf_clear(&msg, &pool);
        }
        off += k;
    }
    if (!dead && tg_ws_reader_busy(&r))
        bytes_printf(log, "busy\n");
    free(flat);
    tg_buf_clear(&msg, &pool);
    assert_int_equal(pool.taken, 0);
    tg_pool_fini(&pool);
}

/* The log of <data>, the same whichever way it is cut. Caller frees. */
static char *read_log(const uint8_t *data, size_t len, bool deflate, uint64_t max)
{
    struct bytes whole = { 0 }, byte = { 0 }, rnd = { 0 };
    bytes_add(&whole, "", 0);
    bytes_add(&byte, "", 0);
    run(&whole, data, len, deflate, max, WHOLE, 0);
    run(&byte, data, len, deflate, max, BYTE, 0);
    assert_string_equal(whole.p, byte.p);
    for (uint64_t seed = 1; seed <= 3; seed++) {
        rnd.len = 0;
        bytes_add(&rnd, "", 0);
        run(&rnd, data, len, deflate, max, RANDOM, seed);
        assert_string_equal(whole.p, rnd.p);
    }
    free(byte.p);
    free(rnd.p);
    return (char *)whole.p;
}

static void expect_log(const struct bytes *in, bool deflate, uint64_t max, const char *want)
{
    char *got = read_log(in->p, in->len, deflate, max);
    assert_string_equal(got, want);
    free(got);
}

static void expect_raw(const void *data, size_t len, bool deflate, uint64_t max,
                       const char *want)
{
    char *got = read_log(data, len, deflate, max);
    assert_string_equal(got, want);
    free(got);
}

/* ---- handshake ---- */

static void accept_key_rfc6455_example(void **state)
{
    char out[29];
    const char *key = "dGhlIHNhbXBsZSBub25jZQ=="; /* RFC 6455 1.3 */
    assert_true(tg_ws_key_valid(key, strlen(key)));
    tg_ws_accept_key(key, strlen(key), out);
    assert_string_equal(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    key = "x3JJHMbDL1EzLkh9GBhXDw=="; /* RFC 6455 4.1's example request */
    tg_ws_accept_key(key, strlen(key), out);
    assert_string_equal(out, "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
}

static void key_valid_only_for_16_byte_base64(void **state)
{
    static const char *good[] = { "dGhlIHNhbXBsZSBub25jZQ==", "AAAAAAAAAAAAAAAAAAAAAA==",
                                  "+/+/+/+/+/+/+/+/+/+/+w==", "x3JJHMbDL1EzLkh9GBhXDw==" };
    static const char *bad[] = {
        "",
        "dGhlIHNhbXBsZSBub25jZQ=",    /* 23 */
        "dGhlIHNhbXBsZSBub25jZQ===",  /* 25 */
        "dGhlIHNhbXBsZSBub25jZQAA",   /* no padding: 18 bytes */
        "dGhlIHNhbXBsZSBub25jZ===",   /* padding one too early */
        "dGhlIHNhbXBsZSBub25jZQ=A",
        "dGhlIHNhbXBs ZSBub25jZQ==",
        "dGhlIHNhbXBsZSBub25j-Q==",   /* URL-safe alphabet */
        "dGhlIHNhbXBsZSBub25j_Q==",
        "dGhlIHNhbXBsZSBub2=jZQ==",
        "dGhlIHNhbXBsZSBub25jZQ==\r", /* not trimmed */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_true(tg_ws_key_valid(good[i], strlen(good[i])));
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_false(tg_ws_key_valid(bad[i], strlen(bad[i])));
    /* An embedded NUL is just a bad character. */
    assert_false(tg_ws_key_valid("dGhlIHNhbXBs\0SBub25jZQ==", 24));
}

/* ---- Sec-WebSocket-Extensions ---- */

#define ANSWER "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " \
               "client_no_context_takeover"

/* <value> parses to <accepted> with these windows, and answers <answer>. */
static void offer_is(const char *value, bool accepted, int server_bits, int client_bits,
                     const char *answer)
{
    uint8_t sb = 0;
    tg_ws_deflate_offer_t o = tg_ws_deflate_parse(value, strlen(value), &sb);
    char line[160];
    size_t n = tg_ws_deflate_response(&o, sb, line, sizeof(line));
    if (o.accepted != accepted || sb != server_bits)
        fail_msg("\"%s\": accepted %d, server bits %u", value, o.accepted, sb);
    if (!accepted) {
        assert_int_equal(n, 0);
        return;
    }
    assert_int_equal(o.client_max_window_bits, client_bits);
    assert_string_equal(line, answer);
    assert_int_equal(n, strlen(answer));
}

static void deflate_offers_of_real_clients(void **state)
{
    /* Chromium, and python websockets 10.4's default (the same string). */
    offer_is("permessage-deflate; client_max_window_bits", true, 15, 15, ANSWER "\r\n");
    /* Firefox. */
    offer_is("permessage-deflate", true, 15, 15, ANSWER "\r\n");
    /* aiohttp 3.8 ws_connect(compress=10). */
    offer_is("permessage-deflate; client_max_window_bits; server_max_window_bits=10", true, 10,
             15, ANSWER "; server_max_window_bits=10\r\n");
    /* websockets with every parameter set. */
    offer_is("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
             "server_max_window_bits=12; client_max_window_bits=11",
             true, 12, 11, ANSWER "; server_max_window_bits=12\r\n");
    /* Safari's older deflate-frame alongside. */
    offer_is("x-webkit-deflate-frame, permessage-deflate; client_max_window_bits", true, 15, 15,
             ANSWER "\r\n");
}

static void deflate_server_window_is_echoed(void **state)
{
    /* Offered, even at 15, it must be answered (python websockets insists). */
    offer_is("permessage-deflate; server_max_window_bits=15", true, 15, 15,
             ANSWER "; server_max_window_bits=15\r\n");
    offer_is("permessage-deflate; server_max_window_bits=9", true, 9, 15,
             ANSWER "; server_max_window_bits=9\r\n");
    /* 8 cannot be honoured with zlib: that offer is declined, the next taken. */
    offer_is("permessage-deflate; server_max_window_bits=8", false, 15, 15, NULL);
    offer_is("permessage-deflate; server_max_window_bits=8, permessage-deflate; "
             "server_max_window_bits=9",
             true, 9, 15, ANSWER "; server_max_window_bits=9\r\n");
    offer_is("permessage-deflate; server_max_window_bits=8, permessage-deflate", true, 15, 15,
             ANSWER "\r\n");
    /* The client's window is only noted: inflating with 15 reads any. */
    offer_is("permessage-deflate; client_max_window_bits=8", true, 15, 8, ANSWER "\r\n");
}

static void deflate_first_usable_offer_wins(void **state)
{
    offer_is("foo, permessage-deflate; client_max_window_bits=10, permessage-deflate", true, 15,
             10, ANSWER "\r\n");
    offer_is("permessage-deflate; foo, permessage-deflate; client_max_window_bits=12", true, 15,
             12, ANSWER "\r\n");
    offer_is("permessage-deflate; server_max_window_bits=10, permessage-deflate; "
             "server_max_window_bits=12",
             true, 10, 15, ANSWER "; server_max_window_bits=10\r\n");
    /* Joined from several header lines, with empty elements. */
    offer_is(" , permessage-deflate;client_max_window_bits=9 ,, ", true, 15, 9, ANSWER "\r\n");
    offer_is("PerMessage-Deflate; Client_Max_Window_Bits", true, 15, 15, ANSWER "\r\n");
    offer_is("\tpermessage-deflate \t;\t server_max_window_bits = 11 \t", true, 11, 15,
             ANSWER "; server_max_window_bits=11\r\n");
    offer_is("foo; bar=\"baz, qux\", permessage-deflate", true, 15, 15, ANSWER "\r\n");
    offer_is("x-other; server_max_window_bits=10", false, 15, 15, NULL);
}

static void deflate_quoted_values(void **state)
{
    offer_is("permessage-deflate; server_max_window_bits=\"12\"", true, 12, 15,
             ANSWER "; server_max_window_bits=12\r\n");
    offer_is("permessage-deflate; client_max_window_bits=\"10\"", true, 15, 10, ANSWER "\r\n");
    offer_is("permessage-deflate; server_max_window_bits=\"1\\3\"", true, 13, 15,
             ANSWER "; server_max_window_bits=13\r\n");
    /* Quoted, the value must still be a bare number. */
    offer_is("permessage-deflate; server_max_window_bits=\" 12\"", false, 15, 15, NULL);
    offer_is("permessage-deflate; server_max_window_bits=\"\"", false, 15, 15, NULL);
    offer_is("permessage-deflate; client_no_context_takeover=\"\"", false, 15, 15, NULL);
    /* A quoted comma or semicolon is no separator. */
    offer_is("permessage-deflate; client_max_window_bits=\"9,x\"", false, 15, 15, NULL);
    offer_is("permessage-deflate; client_max_window_bits=\"9;x\", permessage-deflate", true, 15,
             15, ANSWER "\r\n");
}

static void deflate_bad_parameters_decline_the_offer(void **state)
{
    static const char *declined[] = {
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
        "permessage-deflate; client_no_context_takeover=1",
        "permessage-deflate; server_no_context_takeover=true",
        "permessage-deflate; server_max_window_bits",
        "permessage-deflate; server_max_window_bits=16",
        "permessage-deflate; server_max_window_bits=7",
        "permessage-deflate; server_max_window_bits=010",
        "permessage-deflate; server_max_window_bits=1O",
        "permessage-deflate; server_max_window_bits=100000000000000000012",
        "permessage-deflate; client_max_window_bits=0",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; client_max_window_bits=09",
        "permessage-deflate; mux",
        "permessage-deflate; x-webkit=1",
        "permessage-deflatex",
        "x-permessage-deflate",
    };
    for (size_t i = 0; i < sizeof(declined) / sizeof(declined[0]); i++)
        offer_is(declined[i], false, 15, 15, NULL);
}

static void deflate_malformed_value_means_no_offer(void **state)
{
    static const char *junk[] = {
        "",
        " ",
        ",,,",
        "permessage-deflate;",
        "permessage-deflate; ;client_max_window_bits",
        "permessage-deflate; =10",
        "permessage-deflate; client_max_window_bits=",
        "permessage-deflate; client_max_window_bits=\"10",
        "permessage-deflate; client_max_window_bits=\"10\\",
        "permessage-deflate client_max_window_bits",
        "permessage deflate",
        ";permessage-deflate",
        "permessage-deflate/1",
        "permessage-deflate; a=b=c",
        "permessage-deflate, \"quoted\"",
        /* Junk after a good offer spoils the whole value. */
        "permessage-deflate, x y",
        "permessage-deflate, @",
        "permessage-deflate\r\n",
        "permessage-deflate; client_max_window_bits=\"1\x01\"",
        "permessage-deflate; client_max_window_bits=\"1\\\x01\"",
        "permessage-deflate; client_max_window_bits=\"1\x7f\"",
    };
    for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++)
        offer_is(junk[i], false, 15, 15, NULL);
    /* An embedded NUL is junk, not an end. */
    uint8_t sb = 0;
    assert_false(tg_ws_deflate_parse("permessage-deflate\0;x", 21, &sb).accepted);
}

static void deflate_response_line(void **state)
{
    uint8_t sb;
    char line[160];
    tg_ws_deflate_offer_t o = tg_ws_deflate_parse("permessage-deflate", 18, &sb);
    size_t want = strlen(ANSWER "\r\n");
    /* Too small by one (the NUL) fails whole. */
    assert_int_equal(tg_ws_deflate_response(&o, sb, line, want), 0);
    assert_int_equal(tg_ws_deflate_response(&o, sb, line, want + 1), want);
    assert_string_equal(line, ANSWER "\r\n");
    /* A smaller window is answered even when not offered. */
    assert_int_equal(tg_ws_deflate_response(&o, 11, line, sizeof(line)),
                     strlen(ANSWER "; server_max_window_bits=11\r\n"));
    tg_ws_deflate_offer_t none = { .accepted = false };
    assert_int_equal(tg_ws_deflate_response(&none, 15, line, sizeof(line)), 0);
}

/* ---- reading: RFC 6455 5.7 examples ---- */

static void rfc_single_frame_masked_hello(void **state)
{
    static const uint8_t hello[] = { 0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f,
                                     0x9f, 0x4d, 0x51, 0x58 };
    expect_raw(hello, sizeof(hello), false, 1000, "M1 \"Hello\"\n");
    expect_raw(hello, sizeof(hello), true, 5, "M1 \"Hello\"\n"); /* exactly at the limit */
    expect_raw(hello, sizeof(hello), false, 4, "E1009\n");
    expect_raw(hello, 10, false, 1000, "busy\n");
}

static void rfc_unmasked_frames_refused(void **state)
{
    static const uint8_t hello[] = { 0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    static const uint8_t ping[] = { 0x89, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f };
    expect_raw(hello, sizeof(hello), false, 1000, "E1002\n");
    expect_raw(hello, 2, false, 1000, "E1002\n"); /* known at the second byte */
    expect_raw(ping, sizeof(ping), false, 1000, "E1002\n");
}

static void rfc_fragmented_hello(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x01, "Hel");
    frame_str(&b, 0x80, "lo");
    expect_log(&b, false, 1000, "M1 \"Hello\"\n");
    expect_log(&b, false, 5, "M1 \"Hello\"\n");
    expect_log(&b, false, 4, "E1009\n");
    b.len -= 3;
    expect_log(&b, false, 1000, "busy\n");
    free(b.p);
}

static void rfc_ping_and_pong(void **state)
{
    static const uint8_t pong[] = { 0x8a, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f,
                                    0x9f, 0x4d, 0x51, 0x58 };
    expect_raw(pong, sizeof(pong), false, 0, "C10 \"Hello\"\n");
    struct bytes b = { 0 };
    frame_str(&b, 0x89, "Hello");
    frame_str(&b, 0x89, "");
    frame_str(&b, 0x8a, "");
    /* Control frames do not count against the message limit. */
    expect_log(&b, false, 0, "C9 \"Hello\"\nC9 \"\"\nC10 \"\"\n");
    free(b.p);
}

static void rfc_256_bytes_and_64k_lengths(void **state)
{
    uint8_t *payload = malloc(65536);
    assert_non_null(payload);
    for (size_t i = 0; i < 65536; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    struct bytes b = { 0 };
    frame(&b, 0x82, payload, 256);
    assert_int_equal(b.p[1], 0xfe); /* 126: 16-bit length follows */
    assert_int_equal(b.p[2], 0x01);
    assert_int_equal(b.p[3], 0x00);
    char want[128];
    snprintf(want, sizeof(want), "M2 #256:%016llx\n",
             (unsigned long long)fnv1a(UINT64_C(0xcbf29ce484222325), payload, 256));
    expect_log(&b, false, 256, want);
    expect_log(&b, false, 255, "E1009\n");
    b.len = 0;
    frame(&b, 0x82, payload, 65536);
    assert_int_equal(b.p[1], 0xff); /* 127: 64-bit length follows */
    static const uint8_t len64[8] = { 0, 0, 0, 0, 0, 1, 0, 0 };
    assert_memory_equal(b.p + 2, len64, 8);
    snprintf(want, sizeof(want), "M2 #65536:%016llx\n",
             (unsigned long long)fnv1a(UINT64_C(0xcbf29ce484222325), payload, 65536));
    expect_log(&b, false, 65536, want);
    expect_log(&b, false, 65535, "E1009\n");
    free(payload);
    free(b.p);
}

/* ---- reading: sequencing ---- */

static void controls_between_fragments(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x01, "one ");
    frame_str(&b, 0x89, "p1");
    frame_str(&b, 0x00, "two ");
    frame_str(&b, 0x8a, "p2");
    frame_str(&b, 0x89, "p3");
    frame_str(&b, 0x80, "three");
    frame_str(&b, 0x88, "\x03\xe8" "bye");
    expect_log(&b, false, 1000,
               "C9 \"p1\"\nC10 \"p2\"\nC9 \"p3\"\nM1 \"one two three\"\nC8 x:03e8627965\n");
    /* A close in the middle of a message is delivered too; the caller decides. */
    b.len = 0;
    frame_str(&b, 0x02, "ab");
    frame_str(&b, 0x88, "");
    expect_log(&b, false, 1000, "C8 \"\"\nbusy\n");
    free(b.p);
}

static void returns_at_each_event_leaving_the_rest(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x81, "a");
    frame_str(&b, 0x89, "b");
    frame_str(&b, 0x82, "c");
    tg_pool_t pool;
    tg_pool_init(&pool, sizeof(tg_chunk_t) + CHUNK, 4);
    tg_buf_t msg = TG_BUF_INIT;
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, 100, false);
    tg_ws_event_t ev;
    const char *p = (const char *)b.p;
    size_t n = b.len;
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_MESSAGE);
    assert_int_equal(n, 14);
    assert_int_equal(ev.opcode, TG_WS_OP_TEXT);
    assert_false(ev.compressed);
    assert_int_equal(msg.len, 1);
    tg_buf_clear(&msg, &pool);
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_CONTROL);
    assert_int_equal(n, 7);
    assert_int_equal(ev.opcode, TG_WS_OP_PING);
    assert_int_equal(ev.control_len, 1);
    assert_int_equal(ev.control[0], 'b');
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_MESSAGE);
    assert_int_equal(n, 0);
    assert_int_equal(ev.opcode, TG_WS_OP_BINARY);
    assert_ptr_equal(p, (const char *)b.p + b.len);
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_MORE);
    tg_buf_clear(&msg, &pool);
    tg_pool_fini(&pool);
    free(b.p);
}

static void busy_while_anything_is_pending(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x01, "ab");  /* 8 bytes */
    frame_str(&b, 0x89, "p");   /* 7 bytes */
    frame_str(&b, 0x80, "c");   /* 7 bytes */
    tg_pool_t pool;
    tg_pool_init(&pool, sizeof(tg_chunk_t) + CHUNK, 4);
    tg_buf_t msg = TG_BUF_INIT;
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, 100, false);
    tg_ws_event_t ev;
    assert_false(tg_ws_reader_busy(&r));
    const char *p = (const char *)b.p;
    size_t n = 1; /* half a header */
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_MORE);
    assert_true(tg_ws_reader_busy(&r));
    n = 6; /* rest of the header: payload pending */
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_MORE);
    assert_true(tg_ws_reader_busy(&r));
    n = 1 + 7; /* last payload byte and the ping */
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_CONTROL);
    assert_true(tg_ws_reader_busy(&r)); /* the message is still open */
    assert_int_equal(msg.len, 2);
    n = 7;
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_MESSAGE);
    assert_false(tg_ws_reader_busy(&r));
    assert_int_equal(msg.len, 3);
    tg_buf_clear(&msg, &pool);
    tg_pool_fini(&pool);
    free(b.p);
}

static void empty_frames(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x81, "");
    frame_str(&b, 0x02, "");
    frame_str(&b, 0x00, "");
    frame_str(&b, 0x80, "");
    frame_str(&b, 0x88, "");
    expect_log(&b, false, 0, "M1 \"\"\nM2 \"\"\nC8 \"\"\n");
    free(b.p);
}

static void refuses_bad_sequencing(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x80, "x"); /* continuation first */
    expect_log(&b, false, 100, "E1002\n");
    b.len = 0;
    frame_str(&b, 0x00, "x");
    expect_log(&b, false, 100, "E1002\n");
    b.len = 0;
    frame_str(&b, 0x01, "x"); /* a new message inside one */
    frame_str(&b, 0x81, "y");
    expect_log(&b, false, 100, "E1002\n");
    b.len = 0;
    frame_str(&b, 0x02, "x");
    frame_str(&b, 0x89, "p");
    frame_str(&b, 0x02, "y");
    expect_log(&b, false, 100, "C9 \"p\"\nE1002\n");
    b.len = 0;
    frame_str(&b, 0x81, "x"); /* a finished message, then a stray continuation */
    frame_str(&b, 0x80, "y");
    expect_log(&b, false, 100, "M1 \"x\"\nE1002\n");
    free(b.p);
}

/* ---- reading: header checks ---- */

static void refuses_reserved_bits(void **state)
{
    struct bytes b = { 0 };
    static const uint8_t firsts[] = { 0xa1, 0x91, 0xb1, 0xa9, 0x92 };
    for (size_t i = 0; i < sizeof(firsts); i++) {
        b.len = 0;
        frame_str(&b, firsts[i], "x");
        expect_log(&b, false, 100, "E1002\n");
        expect_log(&b, true, 100, "E1002\n");
    }
    /* RSV1: refused without deflate, on continuations, on control frames. */
    b.len = 0;
    frame_str(&b, 0xc1, "x");
    expect_log(&b, false, 100, "E1002\n");
    expect_log(&b, true, 100, "M1z \"x\"\n");
    b.len = 0;
    frame_str(&b, 0x42, "x");
    frame_str(&b, 0xc0, "y");
    expect_log(&b, true, 100, "E1002\n");
    b.len = 0;
    frame_str(&b, 0xc9, "x");
    expect_log(&b, true, 100, "E1002\n");
    b.len = 0;
    frame_str(&b, 0xc8, "");
    expect_log(&b, true, 100, "E1002\n");
    free(b.p);
}

static void refuses_unknown_opcodes(void **state)
{
    struct bytes b = { 0 };
    static const uint8_t ops[] = { 3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf };
    for (size_t i = 0; i < sizeof(ops); i++) {
        b.len = 0;
        frame_str(&b, (uint8_t)(0x80 | ops[i]), "x");
        expect_log(&b, false, 100, "E1002\n");
        expect_raw(b.p, 2, false, 100, "E1002\n");
    }
    free(b.p);
}

static void refuses_bad_control_frames(void **state)
{
    uint8_t big[126];
    memset(big, 'a', sizeof(big));
    struct bytes b = { 0 };
    frame_str(&b, 0x09, "x"); /* ping without FIN */
    expect_log(&b, false, 1000, "E1002\n");
    b.len = 0;
    frame(&b, 0x89, big, 125);
    char want[300];
    snprintf(want, sizeof(want), "C9 #125:%016llx\n",
             (unsigned long long)fnv1a(UINT64_C(0xcbf29ce484222325), big, 125));
    expect_log(&b, false, 1000, want);
    b.len = 0;
    frame(&b, 0x89, big, 126); /* 126: needs the 16-bit length */
    expect_log(&b, false, 1000, "E1002\n");
    expect_raw(b.p, 2, false, 1000, "E1002\n");
    b.len = 0;
    frame(&b, 0x8a, big, 126);
    expect_raw(b.p, 2, false, 1000, "E1002\n");
    static const uint8_t ping127[] = { 0x89, 0xff };
    expect_raw(ping127, 2, false, 1000, "E1002\n");
    free(b.p);
}

static void close_payload_checks(void **state)
{
    struct bytes b = { 0 };
    frame_str(&b, 0x88, "\x03");
    expect_log(&b, false, 100, "E1002\n");
    static const unsigned valid[] = { 1000, 1001, 1002, 1003, 1007, 1008, 1009,
                                      1010, 1011, 3000, 3999, 4000, 4999 };
    static const unsigned invalid[] = { 0,    1,    999,  1004, 1005, 1006, 1012, 1013, 1014,
                                        1015, 1016, 1100, 2000, 2999, 5000, 65535 };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        uint8_t p[2] = { (uint8_t)(valid[i] >> 8), (uint8_t)valid[i] };
        b.len = 0;
        frame(&b, 0x88, p, 2);
        char want[32];
        snprintf(want, sizeof(want), "C8 x:%04x\n", valid[i]);
        expect_log(&b, false, 100, want);
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++) {
        uint8_t p[2] = { (uint8_t)(invalid[i] >> 8), (uint8_t)invalid[i] };
        b.len = 0;
        frame(&b, 0x88, p, 2);
        expect_log(&b, false, 100, "E1002\n");
    }
    b.len = 0;
    frame_str(&b, 0x88, "\x03\xe8" "caf\xc3\xa9"); /* UTF-8 reason */
    expect_log(&b, false, 100, "C8 x:03e8636166c3a9\n");
    b.len = 0;
    frame_str(&b, 0x88, "\x03\xe8" "caf\xc3"); /* cut short */
    expect_log(&b, false, 100, "E1007\n");
    b.len = 0;
    frame_str(&b, 0x88, "\x0f\xa0" "\xed\xa0\x80"); /* 4000, a surrogate */
    expect_log(&b, false, 100, "E1007\n");
    free(b.p);
}

static void size_limit_checked_on_the_header(void **state)
{
    /* Only the header arrives: the error must not wait for the payload. */
    static const uint8_t h7[] = { 0x82, 0x80 | 101 };
    static const uint8_t h16[] = { 0x82, 0x80 | 126, 0x01, 0x00 };
    static const uint8_t h64[] = { 0x82, 0x80 | 127, 0, 0, 0, 0, 0x10, 0, 0, 0 };
    expect_raw(h7, sizeof(h7), false, 100, "E1009\n");
    expect_raw(h7, sizeof(h7), false, 101, "busy\n");
    expect_raw(h16, sizeof(h16), false, 255, "E1009\n");
    expect_raw(h16, sizeof(h16), false, 256, "busy\n");
    expect_raw(h64, sizeof(h64), false, 1u << 20, "E1009\n");
    expect_raw(h64, sizeof(h64), false, 1u << 28, "busy\n");
    /* Fragments add up; control frames in between do not count. */
    struct bytes b = { 0 }, want = { 0 };
    uint8_t x[100];
    memset(x, 'x', sizeof(x));
    frame(&b, 0x01, x, 60);
    frame(&b, 0x89, x, 60);
    frame(&b, 0x00, x, 40);
    frame(&b, 0x80, x, 0);
    log_control(&want, TG_WS_OP_PING, x, 60);
    log_message(&want, TG_WS_OP_TEXT, false, x, 100);
    expect_log(&b, false, 100, (char *)want.p);
    b.len = 0;
    frame(&b, 0x01, x, 60);
    frame(&b, 0x00, x, 40);
    frame(&b, 0x80, x, 1);
    expect_log(&b, false, 100, "E1009\n");
    /* The limit is per message: the next one starts from zero. */
    b.len = 0;
    frame(&b, 0x82, x, 60);
    frame(&b, 0x82, x, 60);
    want.len = 0;
    log_message(&want, TG_WS_OP_BINARY, false, x, 60);
    log_message(&want, TG_WS_OP_BINARY, false, x, 60);
    expect_log(&b, false, 60, (char *)want.p);
    free(b.p);
    free(want.p);
}

static void refuses_bad_lengths(void **state)
{
    /* RFC 6455 5.2: the top bit of a 64-bit length is 0, lengths are minimal. */
    static const uint8_t msb[] = { 0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 1 };
    static const uint8_t msb_ping[] = { 0x82, 0xff, 0xff, 0xff, 0xff, 0xff,
                                        0xff, 0xff, 0xff, 0xff };
    static const uint8_t short16[] = { 0x82, 0xfe, 0x00, 0x7d };
    static const uint8_t zero16[] = { 0x81, 0xfe, 0x00, 0x00 };
    static const uint8_t short64[] = { 0x82, 0xff, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    static const uint8_t ok16[] = { 0x82, 0xfe, 0x00, 0x7e };
    static const uint8_t ok64[] = { 0x82, 0xff, 0, 0, 0, 0, 0, 1, 0, 0 };
    uint64_t max = UINT64_MAX;
    expect_raw(msb, sizeof(msb), false, max, "E1002\n");
    expect_raw(msb_ping, sizeof(msb_ping), false, max, "E1002\n");
    expect_raw(short16, sizeof(short16), false, max, "E1002\n");
    expect_raw(zero16, sizeof(zero16), false, max, "E1002\n");
    expect_raw(short64, sizeof(short64), false, max, "E1002\n");
    expect_raw(ok16, sizeof(ok16), false, max, "busy\n");
    expect_raw(ok64, sizeof(ok64), false, max, "busy\n");
    /* The largest legal length passes the checks with no limit. */
    static const uint8_t top[] = { 0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff,
                                   0xff, 0xff, 0xff, 1, 2, 3, 4, 5 };
    expect_raw(top, sizeof(top), false, max, "busy\n");
}

/* ---- reading: UTF-8 of text ---- */

static void text_utf8_fails_fast(void **state)
{
    /* A 10-byte text frame whose second byte is invalid: only 2 payload bytes
     * are given, and the error must come anyway. */
    struct bytes b = { 0 };
    frame(&b, 0x81, "a\xff" "cdefghij", 10);
    expect_raw(b.p, 6 + 2, false, 100, "E1007\n");
    expect_raw(b.p, 6 + 1, false, 100, "busy\n");
    /* An overlong, a surrogate, past U+10FFFF, each failing on its byte. */
    static const char *bad[] = { "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                                 "\xf8\x88\x80\x80\x80", "\x80" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        b.len = 0;
        frame_str(&b, 0x81, bad[i]);
        expect_log(&b, false, 100, "E1007\n");
        /* The second byte (or the first) already decides. */
        expect_raw(b.p, 6 + (bad[i][0] == '\x80' || bad[i][0] == '\xf8' ? 1 : 2), false, 100,
                   "E1007\n");
    }
    /* In a later fragment, and binary is never checked. */
    b.len = 0;
    frame_str(&b, 0x01, "ok");
    frame_str(&b, 0x80, "\xff");
    expect_log(&b, false, 100, "E1007\n");
    b.len = 0;
    frame_str(&b, 0x82, "\xff\xfe");
    expect_log(&b, false, 100, "M2 x:fffe\n");
    free(b.p);
}

static void text_utf8_across_fragments(void **state)
{
    struct bytes b = { 0 };
    /* U+1F600 split over three fragments, with a ping in between. */
    frame_str(&b, 0x01, "a\xf0");
    frame_str(&b, 0x00, "\x9f\x98");
    frame_str(&b, 0x89, "");
    frame_str(&b, 0x80, "\x80" "b");
    expect_log(&b, false, 100, "C9 \"\"\nM1 x:61f09f988062\n");
    /* A message may not end inside a character. */
    b.len = 0;
    frame_str(&b, 0x01, "a\xf0");
    frame_str(&b, 0x80, "\x9f\x98");
    expect_log(&b, false, 100, "E1007\n");
    b.len = 0;
    frame_str(&b, 0x81, "\xe2\x82");
    expect_log(&b, false, 100, "E1007\n");
    free(b.p);
}

static void compressed_text_is_flagged_not_checked(void **state)
{
    /* RFC 7692 7.2.3.1: "Hello" compressed, RSV1 on the first frame only. */
    static const uint8_t hello_z[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    struct bytes b = { 0 };
    frame(&b, 0xc1, hello_z, sizeof(hello_z));
    expect_log(&b, true, 100, "M1z x:f248cdc9c90700\n");
    b.len = 0;
    frame(&b, 0x41, hello_z, 3);
    frame(&b, 0x80, hello_z + 3, 4);
    expect_log(&b, true, 100, "M1z x:f248cdc9c90700\n");
    expect_log(&b, true, 6, "E1009\n"); /* the limit counts compressed bytes */
    /* A compressed message is followed by an uncompressed one, checked again. */
    frame_str(&b, 0x81, "\xff");
    expect_log(&b, true, 100, "M1z x:f248cdc9c90700\nE1007\n");
    free(b.p);
}

static void out_of_memory_is_1011(void **state)
{
    /* Blocks no allocator can give. */
    tg_pool_t pool;
    tg_pool_init(&pool, (size_t)1 << 46, 0);
    tg_buf_t msg = TG_BUF_INIT;
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, 100, false);
    struct bytes b = { 0 };
    frame_str(&b, 0x89, "ping"); /* control frames need no memory */
    frame_str(&b, 0x81, "x");
    const char *p = (const char *)b.p;
    size_t n = b.len;
    tg_ws_event_t ev;
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_CONTROL);
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &pool, &ev), TG_WS_ERROR);
    assert_int_equal(ev.close_code, TG_WS_CLOSE_INTERNAL);
    assert_true(tg_buf_check(&msg));
    assert_int_equal(pool.taken, 0);
    tg_pool_fini(&pool);
    free(b.p);
}

/* ---- reading: split invariance on random streams ---- */

static void random_utf8(struct bytes *b, size_t size)
{
    size_t end = b->len + size;
    while (b->len < end) {
        uint32_t cp;
        size_t kind = rng_below(10);
        if (kind < 6)
            cp = 0x20 + (uint32_t)rng_below(0x5f);
        else if (kind < 7)
            cp = 0x80 + (uint32_t)rng_below(0x780);
        else if (kind < 9)
            do
                cp = 0x800 + (uint32_t)rng_below(0x10000 - 0x800);
            while (cp >= 0xd800 && cp <= 0xdfff);
        else
            cp = 0x10000 + (uint32_t)rng_below(0x100000);
        uint8_t u[4];
        size_t n;
        if (cp < 0x80) {
            u[0] = (uint8_t)cp;
            n = 1;
        } else if (cp < 0x800) {
            u[0] = (uint8_t)(0xc0 | cp >> 6);
            u[1] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 2;
        } else if (cp < 0x10000) {
            u[0] = (uint8_t)(0xe0 | cp >> 12);
            u[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            u[2] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 3;
        } else {
            u[0] = (uint8_t)(0xf0 | cp >> 18);
            u[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
            u[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
            u[3] = (uint8_t)(0x80 | (cp & 0x3f));
            n = 4;
        }
        bytes_add(b, u, n);
    }
}

static void random_control(struct bytes *stream, struct bytes *expect)
{
    uint8_t p[TG_WS_CONTROL_MAX];
    size_t n = rng_below(4) == 0 ? TG_WS_CONTROL_MAX - rng_below(3) : rng_below(20);
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)rng_next();
    uint8_t op = rng_below(2) ? TG_WS_OP_PING : TG_WS_OP_PONG;
    if (rng_below(8) == 0) { /* a close with a code and a short reason */
        op = TG_WS_OP_CLOSE;
        p[0] = 0x0f; /* 4000 + something */
        p[1] = (uint8_t)rng_below(200);
        n = 2 + rng_below(10);
        for (size_t i = 2; i < n; i++)
            p[i] = (uint8_t)('a' + rng_below(26));
    }
    frame(stream, (uint8_t)(0x80 | op), p, n);
    log_control(expect, op, p, n);
}

/* A stream of random messages, fragmented at random with random control
 * frames between fragments and messages, and the log reading it must give. */
static void random_stream(struct bytes *stream, struct bytes *expect, bool deflate)
{
    struct bytes content = { 0 };
    size_t messages = 10 + rng_below(20);
    for (size_t m = 0; m < messages; m++) {
        uint8_t op = rng_below(2) ? TG_WS_OP_TEXT : TG_WS_OP_BINARY;
        bool compressed = deflate && rng_below(3) == 0;
        size_t size = rng_below(16) == 0 ? 65536 + rng_below(3000) : rng_below(400);
        content.len = 0;
        if (op == TG_WS_OP_TEXT && !compressed) {
            random_utf8(&content, size);
        } else {
            for (size_t i = 0; i < size; i++) {
                uint8_t c = (uint8_t)rng_next();
                bytes_add(&content, &c, 1);
            }
        }
        size_t frags = 1 + rng_below(4), at = 0;
        for (size_t f = 0; f < frags; f++) {
            bool last = f == frags - 1;
            size_t k = last ? content.len - at : rng_below(content.len - at + 1);
            uint8_t b0 = (uint8_t)((f == 0 ? op : 0) | (last ? 0x80 : 0) |
                                   (f == 0 && compressed ? 0x40 : 0));
            frame(stream, b0, content.p + at, k);
            at += k;
            if (!last && rng_below(3) == 0)
                random_control(stream, expect);
        }
        log_message(expect, op, compressed, content.p, content.len);
        if (rng_below(4) == 0)
            random_control(stream, expect);
    }
    /* Half the streams end with a violation. */
    switch (rng_below(8)) {
    case 0:
        bytes_add(stream, "\x81\x01x", 3); /* unmasked */
        bytes_printf(expect, "E1002\n");
        break;
    case 1:
        frame_str(stream, 0x81, "ok\xc3\x28");
        bytes_printf(expect, "E1007\n");
        break;
    case 2:
        frame_str(stream, 0x80, "stray");
        bytes_printf(expect, "E1002\n");
        break;
    case 3:
        frame_str(stream, 0x83, "");
        bytes_printf(expect, "E1002\n");
        break;
    default:
        break;
    }
    free(content.p);
}

static void random_streams_read_alike_however_split(void **state)
{
    for (uint64_t seed = 1; seed <= 12; seed++) {
        struct bytes stream = { 0 }, expect = { 0 };
        bytes_add(&expect, "", 0);
        rng_seed(seed * 977);
        random_stream(&stream, &expect, seed % 2 == 0);
        char *got = read_log(stream.p, stream.len, seed % 2 == 0, 1u << 20);
        assert_string_equal(got, (char *)expect.p);
        free(got);
        free(stream.p);
        free(expect.p);
    }
}

/* ---- writing ---- */

static void frame_header_sizes(void **state)
{
    uint8_t h[TG_WS_HEADER_MAX];
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_TEXT, false, 0), 2);
    assert_memory_equal(h, "\x81\x00", 2);
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_TEXT, true, 125), 2);
    assert_memory_equal(h, "\xc1\x7d", 2);
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_BINARY, false, 126), 4);
    assert_memory_equal(h, "\x82\x7e\x00\x7e", 4);
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_BINARY, false, 65535), 4);
    assert_memory_equal(h, "\x82\x7e\xff\xff", 4);
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_BINARY, true, 65536), 10);
    assert_memory_equal(h, "\xc2\x7f\x00\x00\x00\x00\x00\x01\x00\x00", 10);
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_PONG, false, UINT64_C(0x123456789a)), 10);
    assert_memory_equal(h, "\x8a\x7f\x00\x00\x00\x12\x34\x56\x78\x9a", 10);
    assert_int_equal(tg_ws_frame_header(h, TG_WS_OP_CLOSE, false, 2), 2);
    assert_memory_equal(h, "\x88\x02", 2);
}

static void close_frame_cuts_reason_at_a_character(void **state)
{
    uint8_t f[2 + TG_WS_CONTROL_MAX];
    assert_int_equal(tg_ws_close_frame(f, 1000, "bye"), 7);
    assert_memory_equal(f, "\x88\x05\x03\xe8" "bye", 7);
    assert_int_equal(tg_ws_close_frame(f, 1009, NULL), 4);
    assert_memory_equal(f, "\x88\x02\x03\xf1", 4);
    assert_int_equal(tg_ws_close_frame(f, 0, "ignored"), 2);
    assert_memory_equal(f, "\x88\x00", 2);
    /* Reasons of 123 bytes fit; longer ones are cut before the character
     * that would cross byte 123. */
    static const struct {
        size_t      pad;  /* ASCII bytes first */
        const char *tail; /* then this */
        size_t      kept; /* reason bytes kept */
    } cases[] = {
        { 123, "", 123 },       { 200, "", 123 },        { 122, "\xc3\xa9", 122 },
        { 121, "\xc3\xa9", 123 }, { 121, "\xe2\x82\xac", 121 }, { 120, "\xe2\x82\xac", 123 },
        { 120, "\xf0\x9f\x98\x80", 120 }, { 119, "\xf0\x9f\x98\x80", 123 },
        { 122, "\xf0\x9f\x98\x80", 122 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char reason[300];
        memset(reason, 'r', cases[i].pad);
        strcpy(reason + cases[i].pad, cases[i].tail);
        size_t n = tg_ws_close_frame(f, 4000, reason);
        assert_int_equal(n, 4 + cases[i].kept);
        assert_int_equal(f[1], 2 + cases[i].kept);
        assert_memory_equal(f + 4, reason, cases[i].kept);
        assert_true(tg_utf8_valid(f + 4, cases[i].kept));
        /* What tidegate sends, tidegate would accept. */
        struct bytes b = { 0 };
        frame(&b, f[0], f + 2, n - 2);
        char *log = read_log(b.p, b.len, false, 0);
        assert_true(log[0] == 'C');
        free(log);
        free(b.p);
    }
}

/* ---- UTF-8 ---- */

static bool ref_utf8_valid(const uint8_t *s, size_t n)
{
    static const uint32_t min[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        uint32_t cp;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            len = 2;
            cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            len = 3;
            cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i < len)
            return false;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += len;
    }
    return true;
}

static void utf8_edge_cases(void **state)
{
    static const char *valid[] = {
        "",
        "plain ASCII, long enough for the 8-byte path",
        "\x00\x7f",
        "\xc2\x80",         /* U+0080 */
        "\xdf\xbf",         /* U+07FF */
        "\xe0\xa0\x80",     /* U+0800 */
        "\xed\x9f\xbf",     /* U+D7FF */
        "\xee\x80\x80",     /* U+E000 */
        "\xef\xbf\xbf",     /* U+FFFF */
        "\xef\xbb\xbf",     /* BOM */
        "\xf0\x90\x80\x80", /* U+10000 */
        "\xf4\x8f\xbf\xbf", /* U+10FFFF */
        "\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5",
        "abcdefg\xc3\xa9" "abcdefgh",
    };
    static const char *invalid[] = {
        "\x80",             "\xbf",             "\xc0\x80",         "\xc1\xbf",
        "\xe0\x80\x80",     "\xe0\x9f\xbf",     "\xed\xa0\x80",     "\xed\xbf\xbf",
        "\xf0\x80\x80\x80", "\xf0\x8f\xbf\xbf", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80",
        "\xf8\x88\x80\x80\x80", "\xfe",         "\xff",             "\xc2\x41",
        "\xe1\x80\x41",     "\xc2",             "\xe1\x80",         "\xf1\x80\x80",
        "abcdefgh\x80",     "abcdefghijklmno\xc3",
    };
    for (size_t i = 0; i < sizeof(valid) / sizeof(valid[0]); i++) {
        size_t n = i == 2 ? 2 : strlen(valid[i]);
        assert_true(tg_utf8_valid((const uint8_t *)valid[i], n));
    }
    for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); i++)
        assert_false(tg_utf8_valid((const uint8_t *)invalid[i], strlen(invalid[i])));
    /* Mid-sequence is neither accept nor reject; reject stays. */
    uint32_t s = tg_utf8_step(TG_UTF8_ACCEPT, (const uint8_t *)"\xf0\x9f", 2);
    assert_true(s != TG_UTF8_ACCEPT && s != TG_UTF8_REJECT);
    assert_int_equal(tg_utf8_step(s, (const uint8_t *)"\x98\x80", 2), TG_UTF8_ACCEPT);
    assert_int_equal(tg_utf8_step(TG_UTF8_REJECT, (const uint8_t *)"a", 1), TG_UTF8_REJECT);
    assert_int_equal(tg_utf8_step(TG_UTF8_REJECT, (const uint8_t *)"", 0), TG_UTF8_REJECT);
    assert_int_equal(tg_utf8_step(s, (const uint8_t *)"", 0), s);
}

static void utf8_matches_a_reference_decoder(void **state)
{
    uint8_t s[4];
    /* Every string of 1 to 3 bytes. */
    for (unsigned a = 0; a < 256; a++) {
        s[0] = (uint8_t)a;
        assert_int_equal(tg_utf8_valid(s, 1), ref_utf8_valid(s, 1));
        for (unsigned b = 0; b < 256; b++) {
            s[1] = (uint8_t)b;
            assert_int_equal(tg_utf8_valid(s, 2), ref_utf8_valid(s, 2));
            if (a < 0xc0 && a >= 0x80)
                continue; /* a leading continuation byte decides alone */
            for (unsigned c = 0; c < 256; c++) {
                s[2] = (uint8_t)c;
                if (tg_utf8_valid(s, 3) != ref_utf8_valid(s, 3))
                    fail_msg("%02x %02x %02x", a, b, c);
            }
        }
    }
    /* 4-byte leads with every second byte and the boundary values after. */
    static const uint8_t edges[] = { 0x00, 0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf, 0xc0, 0xff };
    for (unsigned a = 0xf0; a < 256; a++)
        for (unsigned b = 0; b < 256; b++)
            for (size_t c = 0; c < sizeof(edges); c++)
                for (size_t d = 0; d < sizeof(edges); d++) {
                    s[0] = (uint8_t)a;
                    s[1] = (uint8_t)b;
                    s[2] = edges[c];
                    s[3] = edges[d];
                    if (tg_utf8_valid(s, 4) != ref_utf8_valid(s, 4))
                        fail_msg("%02x %02x %02x %02x", a, b, s[2], s[3]);
                }
}

static void utf8_step_is_split_invariant(void **state)
{
    rng_seed(7);
    struct bytes b = { 0 };
    for (int round = 0; round < 200; round++) {
        b.len = 0;
        random_utf8(&b, 1 + rng_below(100));
        if (round % 2) /* spoil one byte */
            b.p[rng_below(b.len)] = (uint8_t)rng_next();
        bool whole = tg_utf8_valid(b.p, b.len);
        assert_int_equal(whole, ref_utf8_valid(b.p, b.len));
        uint32_t st = TG_UTF8_ACCEPT;
        for (size_t at = 0; at < b.len;) {
            size_t k = 1 + rng_below(b.len - at);
            st = tg_utf8_step(st, b.p + at, k);
            at += k;
        }
        assert_int_equal(st == TG_UTF8_ACCEPT, whole);
    }
    free(b.p);
}

/* ---- permessage-deflate ---- */

struct zfx {
    tg_ws_zlib_t z;
    tg_pool_t    pool;
    tg_buf_t     in, out;
};

static int zfx_setup(void **state)
{
    struct zfx *f = calloc(1, sizeof(*f));
    if (!f || tg_ws_zlib_init(&f->z) != 0)
        return -1;
    tg_pool_init(&f->pool, sizeof(tg_chunk_t) + CHUNK, 16);
    f->in = f->out = TG_BUF_INIT;
    *state = f;
    return 0;
}

static int zfx_teardown(void **state)
{
    struct zfx *f = *state;
    tg_buf_clear(&f->in, &f->pool);
    tg_buf_clear(&f->out, &f->pool);
    if (f->pool.taken != 0)
        return -1;
    tg_pool_fini(&f->pool);
    tg_ws_zlib_fini(&f->z);
    free(f);
    return 0;
}

static int zfx_inflate(struct zfx *f, const void *p, size_t n, uint64_t max)
{
    tg_buf_clear(&f->in, &f->pool);
    tg_buf_clear(&f->out, &f->pool);
    assert_int_equal(tg_buf_append(&f->in, &f->pool, p, n), 0);
    int rc = tg_ws_inflate(&f->z, &f->in, max, &f->out, &f->pool);
    assert_true(tg_buf_check(&f->out));
    return rc;
}

static bool out_is(struct zfx *f, const void *p, size_t n)
{
    if (f->out.len != n)
        return false;
    uint8_t *flat = malloc(n + 1);
    assert_non_null(flat);
    tg_buf_copy_out(&f->out, 0, flat, n);
    bool same = memcmp(flat, p, n) == 0;
    free(flat);
    return same;
}

static void inflate_rfc7692_samples(void **state)
{
    struct zfx *f = *state;
    /* 7.2.3.1 one block; 7.2.3.3 stored; 7.2.3.4 BFINAL plus the 0x00 it
     * asks for; 7.2.3.5 two blocks; 7.2.3.6 the empty message. */
    static const uint8_t one[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    static const uint8_t stored[] = { 0x00, 0x05, 0x00, 0xfa, 0xff, 0x48,
                                      0x65, 0x6c, 0x6c, 0x6f, 0x00 };
    static const uint8_t bfinal[] = { 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00 };
    static const uint8_t two[] = { 0xf2, 0x48, 0x05, 0x00, 0x00, 0x00, 0xff,
                                   0xff, 0xca, 0xc9, 0xc9, 0x07, 0x00 };
    static const uint8_t empty[] = { 0x00 };
    assert_int_equal(zfx_inflate(f, one, sizeof(one), 100), 0);
    assert_true(out_is(f, "Hello", 5));
    assert_int_equal(zfx_inflate(f, stored, sizeof(stored), 100), 0);
    assert_true(out_is(f, "Hello", 5));
    assert_int_equal(zfx_inflate(f, bfinal, sizeof(bfinal), 100), 0);
    assert_true(out_is(f, "Hello", 5));
    assert_int_equal(zfx_inflate(f, bfinal, sizeof(bfinal) - 1, 100), 0); /* without it */
    assert_true(out_is(f, "Hello", 5));
    assert_int_equal(zfx_inflate(f, two, sizeof(two), 100), 0);
    assert_true(out_is(f, "Hello", 5));
    assert_int_equal(zfx_inflate(f, empty, sizeof(empty), 100), 0);
    assert_int_equal(f->out.len, 0);
    assert_int_equal(zfx_inflate(f, "", 0, 100), 0);
    assert_int_equal(f->out.len, 0);
    /* A BFINAL empty stored block completed by the appended tail. */
    assert_int_equal(zfx_inflate(f, "\x01", 1, 100), 0);
    assert_int_equal(f->out.len, 0);
    /* The limit is on the output: 5 bytes pass at 5, not at 4. */
    assert_int_equal(zfx_inflate(f, one, sizeof(one), 5), 0);
    assert_int_equal(zfx_inflate(f, one, sizeof(one), 4), -EMSGSIZE);
    assert_true(f->out.len <= 5);
}

static void inflate_refuses_corrupt_data(void **state)
{
    struct zfx *f = *state;
    static const uint8_t one[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    static const uint8_t bfinal[] = { 0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    uint8_t buf[64];
    /* Not deflate at all (BTYPE 11 is reserved). */
    assert_int_equal(zfx_inflate(f, "\xff\xff\xff\xff", 4, 100), -EINVAL);
    /* Cut inside a block. */
    assert_int_equal(zfx_inflate(f, one, 3, 100), -EINVAL);
    assert_int_equal(zfx_inflate(f, one, 6, 100), -EINVAL);
    /* A stored block whose NLEN does not match LEN. */
    assert_int_equal(zfx_inflate(f, "\x00\x05\x00\xfb\xff" "Hello\x00", 11, 100), -EINVAL);
    /* Data after the final block, other than RFC 7692's lone 0x00. */
    memcpy(buf, bfinal, sizeof(bfinal));
    memcpy(buf + sizeof(bfinal), "xyz", 3);
    assert_int_equal(zfx_inflate(f, buf, sizeof(bfinal) + 3, 100), -EINVAL);
    memcpy(buf + sizeof(bfinal), "\x00\x00", 2);
    assert_int_equal(zfx_inflate(f, buf, sizeof(bfinal) + 2, 100), -EINVAL);
    memcpy(buf + sizeof(bfinal), "\x01", 1);
    assert_int_equal(zfx_inflate(f, buf, sizeof(bfinal) + 1, 100), -EINVAL);
    /* Two whole messages in one: the second after a BFINAL block. */
    memcpy(buf + sizeof(bfinal), bfinal, sizeof(bfinal));
    assert_int_equal(zfx_inflate(f, buf, 2 * sizeof(bfinal), 100), -EINVAL);
    /* A message that kept its 00 00 ff ff (RFC 7692 7.2.1 says remove it). */
    assert_int_equal(zfx_inflate(f, "\xf2\x48\xcd\xc9\xc9\x07\x00\x00\x00\xff\xff", 11, 100),
                     -EINVAL);
    /* The inflater recovers for the next message. */
    assert_int_equal(zfx_inflate(f, one, sizeof(one), 100), 0);
    assert_true(out_is(f, "Hello", 5));
}

static void deflate_hello_matches_rfc7692(void **state)
{
    struct zfx *f = *state;
    assert_int_equal(tg_ws_deflate(&f->z, 15, "Hello", 5, &f->out, &f->pool), 0);
    static const uint8_t want[] = { 0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00 };
    assert_true(out_is(f, want, sizeof(want)));
    tg_buf_clear(&f->out, &f->pool);
    /* No context takeover: the same message compresses the same again. */
    assert_int_equal(tg_ws_deflate(&f->z, 15, "Hello", 5, &f->out, &f->pool), 0);
    assert_true(out_is(f, want, sizeof(want)));
    tg_buf_clear(&f->out, &f->pool);
    /* The empty message is the 0x00 of RFC 7692 7.2.3.6. */
    assert_int_equal(tg_ws_deflate(&f->z, 15, "", 0, &f->out, &f->pool), 0);
    assert_true(out_is(f, "\x00", 1));
}

/* Text that compresses somewhat, with repeats further apart than 512 bytes. */
static void fill_text(uint8_t *p, size_t n, uint64_t seed)
{
    static const char *words[] = { "tide", "gate", "push", "socket", "frame", "deflate",
                                   "window", "message", " ", "\n", "{\"id\":", "}" };
    rng_seed(seed);
    size_t i = 0;
    while (i < n) {
        const char *w = words[rng_below(sizeof(words) / sizeof(words[0]))];
        for (size_t k = 0; w[k] && i < n; k++)
            p[i++] = (uint8_t)w[k];
    }
}

static void deflate_round_trip(void **state)
{
    struct zfx *f = *state;
    size_t sizes[] = { 0, 1, 5, 1000, 70000, 300000 };
    int windows[] = { 15, 9, 12, 12, 15, 9 };
    uint8_t *data = malloc(300000);
    uint8_t *back = malloc(300000);
    assert_non_null(data);
    assert_non_null(back);
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
        for (int kind = 0; kind < 2; kind++) {
            if (kind == 0) {
                fill_text(data, sizes[s], s);
            } else {
                rng_seed(s + 100);
                for (size_t i = 0; i < sizes[s]; i++) /* incompressible */
                    data[i] = (uint8_t)rng_next();
            }
            for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
                tg_buf_t z = TG_BUF_INIT;
                assert_int_equal(
                    tg_ws_deflate(&f->z, windows[w], data, sizes[s], &z, &f->pool), 0);
                assert_int_equal(f->z.deflate_bits, windows[w]);
                tg_buf_clear(&f->out, &f->pool);
                assert_int_equal(tg_ws_inflate(&f->z, &z, sizes[s], &f->out, &f->pool), 0);
                assert_int_equal(f->out.len, sizes[s]);
                tg_buf_copy_out(&f->out, 0, back, sizes[s]);
                assert_memory_equal(back, data, sizes[s]);
                if (sizes[s] > 0) { /* one byte less is too big */
                    tg_buf_clear(&f->out, &f->pool);
                    assert_int_equal(
                        tg_ws_inflate(&f->z, &z, sizes[s] - 1, &f->out, &f->pool), -EMSGSIZE);
                }
                tg_buf_clear(&z, &f->pool);
            }
        }
    }
    free(data);
    free(back);
}

static void deflate_honours_a_small_window(void **state)
{
    /* Output made with a window of 2^9 must inflate with a window of 2^9:
     * that is what server_max_window_bits=9 promises the client. */
    struct zfx *f = *state;
    size_t n = 200000;
    uint8_t *data = malloc(n), *back = malloc(n), *flat = malloc(n + 64);
    assert_non_null(data);
    assert_non_null(back);
    assert_non_null(flat);
    fill_text(data, n, 3);
    for (int bits = 9; bits <= 15; bits++) {
        tg_buf_clear(&f->out, &f->pool);
        assert_int_equal(tg_ws_deflate(&f->z, bits, data, n, &f->out, &f->pool), 0);
        size_t zn = f->out.len;
        assert_true(zn + 4 <= n + 64);
        tg_buf_copy_out(&f->out, 0, flat, zn);
        memcpy(flat + zn, "\x00\x00\xff\xff", 4);
        z_stream s;
        memset(&s, 0, sizeof(s));
        assert_int_equal(inflateInit2(&s, -bits), Z_OK);
        s.next_in = flat;
        s.avail_in = (uInt)(zn + 4);
        s.next_out = back;
        s.avail_out = (uInt)n;
        int rc = inflate(&s, Z_SYNC_FLUSH);
        assert_true(rc == Z_OK || rc == Z_BUF_ERROR);
        assert_int_equal(s.total_out, n);
        assert_memory_equal(back, data, n);
        inflateEnd(&s);
    }
    free(data);
    free(back);
    free(flat);
}

static void inflate_zip_bomb_stops_at_max(void **state)
{
    struct zfx *f = *state;
    size_t n = 10u << 20;
    uint8_t *zeros = calloc(1, n);
    assert_non_null(zeros);
    /* Big chunks for the 10 MB, so the test stays quick. */
    tg_pool_t big;
    tg_pool_init(&big, sizeof(tg_chunk_t) + 65536, 4);
    tg_buf_t z = TG_BUF_INIT, out = TG_BUF_INIT;
    assert_int_equal(tg_ws_deflate(&f->z, 15, zeros, n, &z, &big), 0);
    assert_true(z.len < 16384); /* about 1000:1 */
    uint64_t max = 64 * 1024;
    assert_int_equal(tg_ws_inflate(&f->z, &z, max, &out, &big), -EMSGSIZE);
    assert_true(out.len <= max + 1); /* bounded memory: it stopped at the limit */
    assert_true(big.taken <= z.len / 65536 + 1 + max / 65536 + 2);
    tg_buf_clear(&out, &big);
    /* With room for all of it, all of it comes back. */
    assert_int_equal(tg_ws_inflate(&f->z, &z, n, &out, &big), 0);
    assert_int_equal(out.len, n);
    uint8_t *flat = malloc(n);
    assert_non_null(flat);
    tg_buf_copy_out(&out, 0, flat, n);
    assert_memory_equal(flat, zeros, n);
    free(flat);
    tg_buf_clear(&out, &big);
    tg_buf_clear(&z, &big);
    tg_pool_fini(&big);
    free(zeros);
}

static void inflate_input_across_one_byte_chunks(void **state)
{
    struct zfx *f = *state;
    tg_pool_t tiny;
    tg_pool_init(&tiny, sizeof(tg_chunk_t) + 1, 64);
    tg_buf_t z = TG_BUF_INIT, out = TG_BUF_INIT;
    uint8_t data[3000], back[3000];
    fill_text(data, sizeof(data), 11);
    assert_int_equal(tg_ws_deflate(&f->z, 10, data, sizeof(data), &z, &tiny), 0);
    assert_int_equal(tg_ws_inflate(&f->z, &z, sizeof(data), &out, &tiny), 0);
    assert_true(tg_buf_check(&out));
    assert_int_equal(out.len, sizeof(data));
    tg_buf_copy_out(&out, 0, back, sizeof(back));
    assert_memory_equal(back, data, sizeof(data));
    /* Appending to a buffer that already holds bytes. */
    assert_int_equal(tg_ws_inflate(&f->z, &z, sizeof(data), &out, &tiny), 0);
    assert_int_equal(out.len, 2 * sizeof(data));
    tg_buf_clear(&out, &tiny);
    tg_buf_clear(&z, &tiny);
    assert_int_equal(tiny.taken, 0);
    tg_pool_fini(&tiny);
}

static void compressed_message_through_the_reader(void **state)
{
    struct zfx *f = *state;
    uint8_t data[5000];
    fill_text(data, sizeof(data), 5);
    assert_int_equal(tg_ws_deflate(&f->z, 15, data, sizeof(data), &f->in, &f->pool), 0);
    uint8_t *z = malloc(f->in.len);
    assert_non_null(z);
    size_t zn = tg_buf_copy_out(&f->in, 0, z, f->in.len);
    struct bytes b = { 0 };
    frame(&b, 0x41, z, zn / 2); /* RSV1 on the first fragment only */
    frame(&b, 0x89, "", 0);
    frame(&b, 0x80, z + zn / 2, zn - zn / 2);
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, zn, true);
    tg_buf_t msg = TG_BUF_INIT;
    tg_ws_event_t ev;
    const char *p = (const char *)b.p;
    size_t n = b.len;
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &f->pool, &ev), TG_WS_CONTROL);
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &f->pool, &ev), TG_WS_MESSAGE);
    assert_true(ev.compressed);
    assert_int_equal(ev.opcode, TG_WS_OP_TEXT);
    tg_buf_clear(&f->out, &f->pool);
    assert_int_equal(tg_ws_inflate(&f->z, &msg, sizeof(data), &f->out, &f->pool), 0);
    assert_true(out_is(f, data, sizeof(data)));
    tg_buf_clear(&msg, &f->pool);
    free(z);
    free(b.p);
}

static void python_websockets_frame(void **state)
{
    /* A client frame from python websockets 10.4 (PerMessageDeflate, no
     * context takeover, mask 12 34 56 78), generated once. */
    struct zfx *f = *state;
    static const uint8_t wire[] = {
        0xc1, 0x9c, 0x12, 0x34, 0x56, 0x78, 0xd8, 0x0c, 0xea, 0x4a, 0x35, 0x13,
        0x09, 0xd9, 0x36, 0x07, 0x73, 0x4d, 0x2f, 0x85, 0x72, 0x2d, 0x55, 0x15,
        0xd5, 0xf8, 0x92, 0xf6, 0xd1, 0x81, 0x21, 0x2e, 0x56, 0x78,
    };
    static const char text[] = "h\xc3\xa9llo tidegate, h\xc3\xa9llo tidegate, h\xc3\xa9llo "
                               "tidegate \xf0\x9f\x98\x80";
    char *log = read_log(wire, sizeof(wire), true, 28);
    assert_true(strncmp(log, "M1z x:", 6) == 0);
    free(log);
    tg_ws_reader_t r;
    tg_ws_reader_init(&r, 28, true);
    tg_buf_t msg = TG_BUF_INIT;
    tg_ws_event_t ev;
    const char *p = (const char *)wire;
    size_t n = sizeof(wire);
    assert_int_equal(tg_ws_read(&r, &p, &n, &msg, &f->pool, &ev), TG_WS_MESSAGE);
    assert_true(ev.compressed);
    assert_int_equal(tg_ws_inflate(&f->z, &msg, 1000, &f->out, &f->pool), 0);
    assert_true(out_is(f, text, strlen(text)));
    tg_buf_clear(&msg, &f->pool);
}

static void zlib_out_of_memory(void **state)
{
    struct zfx *f = *state;
    tg_pool_t none;
    tg_pool_init(&none, (size_t)1 << 46, 0);
    tg_buf_t in = TG_BUF_INIT, out = TG_BUF_INIT;
    assert_int_equal(tg_ws_deflate(&f->z, 15, "Hello", 5, &out, &none), -ENOMEM);
    assert_int_equal(out.len, 0);
    assert_int_equal(tg_buf_append(&in, &f->pool, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7), 0);
    assert_int_equal(tg_ws_inflate(&f->z, &in, 100, &out, &none), -ENOMEM);
    assert_int_equal(out.len, 0);
    assert_int_equal(none.taken, 0);
    tg_pool_fini(&none);
    tg_buf_clear(&in, &f->pool);
    /* And everything still works afterwards. */
    assert_int_equal(zfx_inflate(f, "\xf2\x48\xcd\xc9\xc9\x07\x00", 7, 100), 0);
    assert_true(out_is(f, "Hello", 5));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accept_key_rfc6455_example),
        cmocka_unit_test(key_valid_only_for_16_byte_base64),
        cmocka_unit_test(deflate_offers_of_real_clients),
        cmocka_unit_test(deflate_server_window_is_echoed),
        cmocka_unit_test(deflate_first_usable_offer_wins),
        cmocka_unit_test(deflate_quoted_values),
        cmocka_unit_test(deflate_bad_parameters_decline_the_offer),
        cmocka_unit_test(deflate_malformed_value_means_no_offer),
        cmocka_unit_test(deflate_response_line),
        cmocka_unit_test(rfc_single_frame_masked_hello),
        cmocka_unit_test(rfc_unmasked_frames_refused),
        cmocka_unit_test(rfc_fragmented_hello),
        cmocka_unit_test(rfc_ping_and_pong),
        cmocka_unit_test(rfc_256_bytes_and_64k_lengths),
        cmocka_unit_test(controls_between_fragments),
        cmocka_unit_test(returns_at_each_event_leaving_the_rest),
        cmocka_unit_test(busy_while_anything_is_pending),
        cmocka_unit_test(empty_frames),
        cmocka_unit_test(refuses_bad_sequencing),
        cmocka_unit_test(refuses_reserved_bits),
        cmocka_unit_test(refuses_unknown_opcodes),
        cmocka_unit_test(refuses_bad_control_frames),
        cmocka_unit_test(close_payload_checks),
        cmocka_unit_test(size_limit_checked_on_the_header),
        cmocka_unit_test(refuses_bad_lengths),
        cmocka_unit_test(text_utf8_fails_fast),
        cmocka_unit_test(text_utf8_across_fragments),
        cmocka_unit_test(compressed_text_is_flagged_not_checked),
        cmocka_unit_test(out_of_memory_is_1011),
        cmocka_unit_test(random_streams_read_alike_however_split),
        cmocka_unit_test(frame_header_sizes),
        cmocka_unit_test(close_frame_cuts_reason_at_a_character),
        cmocka_unit_test(utf8_edge_cases),
        cmocka_unit_test(utf8_matches_a_reference_decoder),
        cmocka_unit_test(utf8_step_is_split_invariant),
        cmocka_unit_test_setup_teardown(inflate_rfc7692_samples, zfx_setup, zfx_teardown),
        cmocka_unit_test_setup_teardown(inflate_refuses_corrupt_data, zfx_setup, zfx_teardown),
        cmocka_unit_test_setup_teardown(deflate_hello_matches_rfc7692, zfx_setup, zfx_teardown),
        cmocka_unit_test_setup_teardown(deflate_round_trip, zfx_setup, zfx_teardown),
        cmocka_unit_test_setup_teardown(deflate_honours_a_small_window, zfx_setup,
                                        zfx_teardown),
        cmocka_unit_test_setup_teardown(inflate_zip_bomb_stops_at_max, zfx_setup, zfx_teardown),
        cmocka_unit_test_setup_teardown(inflate_input_across_one_byte_chunks, zfx_setup,
                                        zfx_teardown),
        cmocka_unit_test_setup_teardown(compressed_message_through_the_reader, zfx_setup,
                                        zfx_teardown),
        cmocka_unit_test_setup_teardown(python_websockets_frame, zfx_setup, zfx_teardown),
        cmocka_unit_test_setup_teardown(zlib_out_of_memory, zfx_setup, zfx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
