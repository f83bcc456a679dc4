/* tests/unit/gate/test_wire.c - the backend-link encoder and decoder
 * (src/gate/wire.h, include/tidegate/backend.h).
 *
 * Frames are built byte by byte where the test is about what the decoder
 * refuses (so the encoder cannot hide a mistake), and with the encoder where
 * it is about round trips. Every body handed to the decoder sits in a buffer
 * of exactly its size, so ASan catches any read past a length. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>
#include <lz4.h>

#include "gate/wire.h"

#include "../rng.h"

/* ---- helpers ---- */

/* A 16-byte header. */
static void head_bytes(uint8_t *p, uint8_t magic, uint8_t version, uint8_t type, uint8_t flags,
                       uint32_t len, uint64_t id)
{
    p[0] = magic;
    p[1] = version;
    p[2] = type;
    p[3] = flags;
    for (int i = 0; i < 4; i++)
        p[4 + i] = (uint8_t)(len >> (24 - 8 * i));
    for (int i = 0; i < 8; i++)
        p[8 + i] = (uint8_t)(id >> (56 - 8 * i));
}

/* A body under construction, byte by byte. */
struct raw {
    uint8_t b[70000];
    size_t  n;
};

static void raw_u16(struct raw *r, uint16_t v)
{
    r->b[r->n++] = (uint8_t)(v >> 8);
    r->b[r->n++] = (uint8_t)v;
}

static void raw_u32(struct raw *r, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        r->b[r->n++] = (uint8_t)(v >> (24 - 8 * i));
}

static void raw_bytes(struct raw *r, const void *p, size_t n)
{
    memcpy(r->b + r->n, p, n);
    r->n += n;
}

/* A well-formed pair. */
static void raw_pair(struct raw *r, const char *key, const char *val)
{
    raw_u16(r, (uint16_t)strlen(key));
    raw_bytes(r, key, strlen(key));
    raw_u32(r, (uint32_t)strlen(val));
    raw_bytes(r, val, strlen(val));
}

/* tg_wire_check on a copy of <r> in a buffer of exactly its size. */
static int check_exact(const struct raw *r)
{
    uint8_t *copy = malloc(r->n ? r->n : 1);
    assert_non_null(copy);
    memcpy(copy, r->b, r->n);
    int rc = tg_wire_check(copy, r->n);
    free(copy);
    return rc;
}

/* A decoded frame, its body inflated when it was compressed. */
struct frame {
    tg_wire_head_t h;
    const uint8_t *body;
    size_t         len;
    uint8_t       *inflated; /* to free, or NULL */
    size_t         wire;     /* bytes on the wire, header included */
};

/* Decodes the frame at <p> (<avail> bytes) into <f>: it must be well formed. */
static void decode(const uint8_t *p, size_t avail, struct frame *f)
{
    memset(f, 0, sizeof(*f));
    assert_true(avail >= TG_BK_HEADER);
    assert_int_equal(tg_wire_head(p, TG_BK_MAX_BODY_DEFAULT, &f->h), 0);
    assert_true(avail - TG_BK_HEADER >= f->h.len);
    f->body = p + TG_BK_HEADER;
    f->len = f->h.len;
    f->wire = TG_BK_HEADER + f->h.len;
    if (f->h.flags & TG_BK_F_LZ4) {
        assert_int_equal(tg_wire_inflate(f->body, f->len, TG_BK_MAX_BODY_DEFAULT, &f->inflated,
                                         &f->len),
                         0);
        f->body = f->inflated;
    }
    assert_true(tg_wire_check(f->body, f->len) >= 0);
}

static void frame_free(struct frame *f)
{
    free(f->inflated);
    f->inflated = NULL;
}

/* The <i>th pair of <f>. */
static tg_wire_pair_t pair_at(const struct frame *f, int i)
{
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, f->body, f->len);
    for (int k = 0; k <= i; k++)
        assert_int_equal(tg_wire_next(&it, &kv), 1);
    return kv;
}

static void assert_pair(const tg_wire_pair_t *kv, const char *key, const void *val, size_t vlen)
{
    assert_true(tg_wire_key_is(kv, key));
    assert_int_equal(kv->vlen, vlen);
    if (vlen)
        assert_memory_equal(kv->val, val, vlen);
}

static void assert_pair_str(const tg_wire_pair_t *kv, const char *key, const char *val)
{
    assert_pair(kv, key, val, strlen(val));
}

/* ---- headers ---- */

static void good_header_decodes(void **state)
{
    uint8_t p[TG_BK_HEADER];
    tg_wire_head_t h;
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_REPLY, TG_BK_F_LZ4, 1234,
               UINT64_C(0x0102030405060708));
    assert_int_equal(tg_wire_head(p, 1234, &h), 0); /* the limit itself is allowed */
    assert_int_equal(h.type, TG_BK_REPLY);
    assert_int_equal(h.flags, TG_BK_F_LZ4);
    assert_int_equal(h.len, 1234);
    assert_int_equal(h.id, UINT64_C(0x0102030405060708));
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_TYPE_MAX, 0, 0, UINT64_MAX);
    assert_int_equal(tg_wire_head(p, 0, &h), 0);
    assert_int_equal(h.id, UINT64_MAX);
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, 1, 0, UINT32_MAX, 0);
    assert_int_equal(tg_wire_head(p, UINT32_MAX, &h), 0);
    assert_int_equal(h.len, UINT32_MAX);
}

static void bad_magic_or_version_is_eproto(void **state)
{
    uint8_t p[TG_BK_HEADER];
    tg_wire_head_t h;
    head_bytes(p, 't', TG_BK_VERSION, TG_BK_PING, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    head_bytes(p, 0, TG_BK_VERSION, TG_BK_PING, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    head_bytes(p, TG_BK_MAGIC, 0, TG_BK_PING, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION + 1, TG_BK_PING, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    head_bytes(p, TG_BK_MAGIC, 0xff, TG_BK_PING, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
}

static void type_zero_or_past_max_is_eproto(void **state)
{
    uint8_t p[TG_BK_HEADER];
    tg_wire_head_t h;
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, 0, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_TYPE_MAX + 1, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, 0xff, 0, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
    for (int t = 1; t <= TG_BK_TYPE_MAX; t++) {
        head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, (uint8_t)t, 0, 0, 0);
        assert_int_equal(tg_wire_head(p, 100, &h), 0);
        assert_int_equal(h.type, t);
    }
}

static void unknown_flags_are_eproto(void **state)
{
    uint8_t p[TG_BK_HEADER];
    tg_wire_head_t h;
    for (int bit = 0; bit < 8; bit++) {
        uint8_t flag = (uint8_t)(1u << bit);
        head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_JOB, flag, 0, 0);
        assert_int_equal(tg_wire_head(p, 100, &h), (flag & TG_BK_F_ALL) ? 0 : -EPROTO);
    }
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_JOB, TG_BK_F_LZ4 | 0x80, 0, 0);
    assert_int_equal(tg_wire_head(p, 100, &h), -EPROTO);
}

static void body_past_the_limit_is_emsgsize(void **state)
{
    uint8_t p[TG_BK_HEADER];
    tg_wire_head_t h;
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_REPLY, 0, 1001, 7);
    assert_int_equal(tg_wire_head(p, 1000, &h), -EMSGSIZE);
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_REPLY, 0, UINT32_MAX, 7);
    assert_int_equal(tg_wire_head(p, TG_BK_MAX_BODY_DEFAULT, &h), -EMSGSIZE);
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, TG_BK_REPLY, 0, 1, 7);
    assert_int_equal(tg_wire_head(p, 0, &h), -EMSGSIZE);
    /* A malformed header is a protocol error whatever its length says. */
    head_bytes(p, TG_BK_MAGIC, TG_BK_VERSION, 0, 0, UINT32_MAX, 7);
    assert_int_equal(tg_wire_head(p, 1000, &h), -EPROTO);
}

/* ---- pairs ---- */

static void empty_body_has_no_pairs(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    assert_int_equal(check_exact(r), 0);
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, r->b, 0);
    assert_int_equal(tg_wire_next(&it, &kv), 0);
    assert_false(tg_wire_find(r->b, 0, "a", &kv));
    free(r);
}

static void well_formed_pairs_are_walked_in_order(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    raw_pair(r, "status", "200");
    raw_pair(r, "body", "");         /* empty value */
    raw_u16(r, 1);                    /* a value with NUL bytes */
    raw_bytes(r, "v", 1);
    raw_u32(r, 3);
    raw_bytes(r, "a\0b", 3);
    char key255[TG_BK_MAX_KEY + 1];
    memset(key255, 'k', TG_BK_MAX_KEY);
    key255[TG_BK_MAX_KEY] = '\0';
    raw_pair(r, key255, "x");         /* the longest key */
    assert_int_equal(check_exact(r), 4);

    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, r->b, r->n);
    assert_int_equal(tg_wire_next(&it, &kv), 1);
    assert_pair_str(&kv, "status", "200");
    assert_int_equal(tg_wire_next(&it, &kv), 1);
    assert_pair_str(&kv, "body", "");
    assert_int_equal(tg_wire_next(&it, &kv), 1);
    assert_pair(&kv, "v", "a\0b", 3);
    assert_int_equal(tg_wire_next(&it, &kv), 1);
    assert_int_equal(kv.klen, TG_BK_MAX_KEY);
    assert_pair_str(&kv, key255, "x");
    assert_int_equal(tg_wire_next(&it, &kv), 0);
    assert_int_equal(tg_wire_next(&it, &kv), 0); /* stays at the end */
    free(r);
}

static void truncated_key_length_is_eproto(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    raw_pair(r, "a", "1");
    r->b[r->n++] = 0; /* half a key length */
    assert_int_equal(check_exact(r), -EPROTO);
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, r->b, r->n);
    assert_int_equal(tg_wire_next(&it, &kv), 1); /* the good pair first */
    assert_int_equal(tg_wire_next(&it, &kv), -EPROTO);
    free(r);
}

static void key_length_zero_is_eproto(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    raw_u16(r, 0);
    raw_u32(r, 1);
    raw_bytes(r, "x", 1);
    assert_int_equal(check_exact(r), -EPROTO);
    free(r);
}

static void key_longer_than_255_is_eproto(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    char key[TG_BK_MAX_KEY + 2];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    raw_pair(r, key, "x"); /* 256 bytes, all present */
    assert_int_equal(check_exact(r), -EPROTO);
    r->n = 0;
    raw_u16(r, 0xffff); /* and one whose bytes are missing */
    raw_bytes(r, "kk", 2);
    assert_int_equal(check_exact(r), -EPROTO);
    free(r);
}

static void key_or_value_length_past_the_end_is_eproto(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    /* The key runs past the end. */
    raw_u16(r, 10);
    raw_bytes(r, "abc", 3);
    assert_int_equal(check_exact(r), -EPROTO);
    /* The key is whole but its value length is cut. */
    r->n = 0;
    raw_u16(r, 3);
    raw_bytes(r, "abc", 3);
    raw_bytes(r, "\0\0", 2);
    assert_int_equal(check_exact(r), -EPROTO);
    /* The value runs past the end by one byte, then by 4 GiB. */
    r->n = 0;
    raw_u16(r, 1);
    raw_bytes(r, "k", 1);
    raw_u32(r, 4);
    raw_bytes(r, "abc", 3);
    assert_int_equal(check_exact(r), -EPROTO);
    r->n = 0;
    raw_u16(r, 1);
    raw_bytes(r, "k", 1);
    raw_u32(r, UINT32_MAX);
    raw_bytes(r, "abc", 3);
    assert_int_equal(check_exact(r), -EPROTO);
    /* A bad pair after good ones spoils the body. */
    r->n = 0;
    raw_pair(r, "a", "1");
    raw_pair(r, "b", "2");
    raw_u16(r, 1);
    raw_bytes(r, "c", 1);
    raw_u32(r, 2);
    assert_int_equal(check_exact(r), -EPROTO);
    tg_wire_pair_t kv;
    assert_true(tg_wire_find(r->b, r->n, "b", &kv)); /* what comes before is readable */
    assert_false(tg_wire_find(r->b, r->n, "c", &kv));
    free(r);
}

static void more_than_1024_pairs_is_eproto(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    for (int i = 0; i < TG_BK_MAX_PAIRS; i++)
        raw_pair(r, "k", "");
    assert_int_equal(check_exact(r), TG_BK_MAX_PAIRS);
    raw_pair(r, "k", "");
    assert_int_equal(check_exact(r), -EPROTO);
    free(r);
}

/* ---- lookups and numbers ---- */

static void find_returns_the_first_of_a_key(void **state)
{
    struct raw *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    raw_pair(r, "h:accept", "text/html");
    raw_pair(r, "status", "200");
    raw_pair(r, "h:accept", "*/*");
    raw_pair(r, "stat", "x");
    tg_wire_pair_t kv;
    assert_true(tg_wire_find(r->b, r->n, "h:accept", &kv));
    assert_pair_str(&kv, "h:accept", "text/html");
    assert_true(tg_wire_find(r->b, r->n, "stat", &kv));
    assert_pair_str(&kv, "stat", "x");
    assert_true(tg_wire_find(r->b, r->n, "status", &kv));
    assert_pair_str(&kv, "status", "200");
    assert_false(tg_wire_find(r->b, r->n, "statu", &kv)); /* prefixes do not match */
    assert_false(tg_wire_find(r->b, r->n, "statuses", &kv));
    assert_false(tg_wire_find(r->b, r->n, "Status", &kv)); /* keys are case-sensitive */
    assert_false(tg_wire_find(r->b, r->n, "", &kv));
    free(r);
}

static void key_is_compares_whole_keys(void **state)
{
    tg_wire_pair_t kv = { .key = "body", .klen = 4, .val = "", .vlen = 0 };
    assert_true(tg_wire_key_is(&kv, "body"));
    assert_false(tg_wire_key_is(&kv, "bod"));
    assert_false(tg_wire_key_is(&kv, "bodyx"));
    assert_false(tg_wire_key_is(&kv, "BODY"));
    kv.klen = 3; /* the key is "bod" */
    assert_true(tg_wire_key_is(&kv, "bod"));
    assert_false(tg_wire_key_is(&kv, "body"));
}

static void u64_takes_values_up_to_2_64_minus_1(void **state)
{
    uint64_t v = 77;
    assert_int_equal(tg_wire_u64("", 0, &v), -EINVAL);
    assert_int_equal(v, 77); /* untouched on refusal */
    assert_int_equal(tg_wire_u64("0", 1, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(tg_wire_u64("007", 3, &v), 0);
    assert_int_equal(v, 7);
    assert_int_equal(tg_wire_u64("9999999999999999999", 19, &v), 0);
    assert_int_equal(v, UINT64_C(9999999999999999999));
    assert_int_equal(tg_wire_u64("0000000000000000001", 19, &v), 0);
    assert_int_equal(v, 1);
    v = 77;
    /* Up to 2^64 - 1, and no further; never more than 20 digits. */
    assert_int_equal(tg_wire_u64("18446744073709551615", 20, &v), 0);
    assert_int_equal(v, UINT64_MAX);
    assert_int_equal(tg_wire_u64("00000000000000000001", 20, &v), 0);
    assert_int_equal(v, 1);
    v = 77;
    assert_int_equal(tg_wire_u64("18446744073709551616", 20, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("99999999999999999999", 20, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("000000000000000000001", 21, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("12a", 3, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("-1", 2, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("+1", 2, &v), -EINVAL);
    assert_int_equal(tg_wire_u64(" 1", 2, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("1 ", 2, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("1\0", 2, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("0x10", 4, &v), -EINVAL);
    assert_int_equal(tg_wire_u64("/", 1, &v), -EINVAL); /* '0' - 1 */
    assert_int_equal(tg_wire_u64(":", 1, &v), -EINVAL); /* '9' + 1 */
    assert_int_equal(v, 77);
    assert_int_equal(tg_wire_u64("123456", 3, &v), 0); /* only <n> bytes are read */
    assert_int_equal(v, 123);
}

/* ---- encoding, round trips ---- */

static void several_frames_in_one_encoder_round_trip(void **state)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_HELLO, 0);
    tg_wire_put_str(&e, TG_BK_K_VERSION, "1");
    tg_wire_put_str(&e, TG_BK_K_FEATURES, "lz4");
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);
    tg_wire_begin(&e, TG_BK_PING, 0);
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0); /* no pairs */
    tg_wire_begin(&e, TG_BK_JOB, UINT64_MAX);
    tg_wire_put_str(&e, TG_BK_K_METHOD, "GET");
    tg_wire_put_u64(&e, TG_BK_K_DEADLINE, 30000);
    tg_wire_put_u64(&e, TG_BK_K_ATTEMPT, 0);
    tg_wire_put(&e, TG_BK_K_BODY, "a\0b", 3);
    tg_wire_put(&e, TG_BK_K_QUERY, NULL, 0);
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);

    struct frame f;
    size_t at = 0;
    decode(e.p + at, e.len - at, &f);
    assert_int_equal(f.h.type, TG_BK_HELLO);
    assert_int_equal(f.h.id, 0);
    assert_int_equal(tg_wire_check(f.body, f.len), 2);
    tg_wire_pair_t kv = pair_at(&f, 0);
    assert_pair_str(&kv, "version", "1");
    kv = pair_at(&f, 1);
    assert_pair_str(&kv, "features", "lz4");
    at += f.wire;
    frame_free(&f);

    decode(e.p + at, e.len - at, &f);
    assert_int_equal(f.h.type, TG_BK_PING);
    assert_int_equal(f.h.len, 0);
    assert_int_equal(f.wire, TG_BK_HEADER);
    at += f.wire;
    frame_free(&f);

    decode(e.p + at, e.len - at, &f);
    assert_int_equal(f.h.type, TG_BK_JOB);
    assert_int_equal(f.h.id, UINT64_MAX);
    assert_int_equal(f.h.flags, 0); /* short: never compressed */
    assert_int_equal(tg_wire_check(f.body, f.len), 5);
    kv = pair_at(&f, 0);
    assert_pair_str(&kv, "method", "GET");
    uint64_t v;
    assert_true(tg_wire_find(f.body, f.len, "deadline_ms", &kv));
    assert_int_equal(tg_wire_u64(kv.val, kv.vlen, &v), 0);
    assert_int_equal(v, 30000);
    assert_true(tg_wire_find(f.body, f.len, "attempt", &kv));
    assert_pair_str(&kv, "attempt", "0");
    kv = pair_at(&f, 3);
    assert_pair(&kv, "body", "a\0b", 3);
    kv = pair_at(&f, 4);
    assert_pair_str(&kv, "query", "");
    at += f.wire;
    frame_free(&f);
    assert_int_equal(at, e.len);

    /* Reset keeps the memory and starts over. */
    uint8_t *mem = e.p;
    tg_wire_enc_reset(&e);
    assert_int_equal(e.len, 0);
    tg_wire_begin(&e, TG_BK_PONG, 5);
    assert_int_equal(tg_wire_end(&e, 0), 0);
    assert_ptr_equal(e.p, mem);
    decode(e.p, e.len, &f);
    assert_int_equal(f.h.type, TG_BK_PONG);
    assert_int_equal(f.h.id, 5);
    frame_free(&f);
    tg_wire_enc_fini(&e);
    assert_null(e.p);
}

static void repeated_keys_keep_their_order(void **state)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_REPLY, 9);
    tg_wire_put_str(&e, "h:set-cookie", "a=1");
    tg_wire_put_u64(&e, TG_BK_K_STATUS, 200);
    tg_wire_put_str(&e, "h:set-cookie", "b=2");
    tg_wire_put_str(&e, "h:set-cookie", "c=3");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    struct frame f;
    decode(e.p, e.len, &f);
    const char *want[] = { "a=1", "b=2", "c=3" };
    int seen = 0;
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, f.body, f.len);
    while (tg_wire_next(&it, &kv) == 1)
        if (tg_wire_key_is(&kv, "h:set-cookie"))
            assert_pair_str(&kv, "h:set-cookie", want[seen++]);
    assert_int_equal(seen, 3);
    assert_true(tg_wire_find(f.body, f.len, "h:set-cookie", &kv));
    assert_pair_str(&kv, "h:set-cookie", "a=1");
    frame_free(&f);
    tg_wire_enc_fini(&e);
}

static void u64_values_round_trip(void **state)
{
    const uint64_t values[] = { 0, 1, 9, 10, 99, 100, 4294967295u, 4294967296u,
                                UINT64_C(999999999999999999), UINT64_C(1000000000000000000),
                                UINT64_C(9999999999999999999) };
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_PUSH, 1);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++)
        tg_wire_put_u64(&e, "n", values[i]);
    tg_wire_put_u64(&e, "max", UINT64_MAX);
    assert_int_equal(tg_wire_end(&e, 0), 0);
    struct frame f;
    decode(e.p, e.len, &f);
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        tg_wire_pair_t kv = pair_at(&f, (int)i);
        uint64_t v;
        assert_int_equal(tg_wire_u64(kv.val, kv.vlen, &v), 0);
        assert_int_equal(v, values[i]);
    }
    /* The largest value goes out in 20 digits and comes back. */
    tg_wire_pair_t kv = pair_at(&f, (int)(sizeof(values) / sizeof(values[0])));
    assert_pair_str(&kv, "max", "18446744073709551615");
    uint64_t v;
    assert_int_equal(tg_wire_u64(kv.val, kv.vlen, &v), 0);
    assert_int_equal(v, UINT64_MAX);
    frame_free(&f);
    tg_wire_enc_fini(&e);
}

static void put_raw_appends_an_encoded_body(void **state)
{
    tg_wire_enc_t a, b;
    tg_wire_enc_init(&a);
    tg_wire_enc_init(&b);
    tg_wire_begin(&a, TG_BK_JOB, 3);
    tg_wire_put_str(&a, "route", "orders");
    tg_wire_put_str(&a, "path", "/x");
    assert_int_equal(tg_wire_end(&a, 0), 0);
    tg_wire_begin(&b, TG_BK_JOB, 4);
    tg_wire_put_u64(&b, "attempt", 2);
    tg_wire_put_raw(&b, a.p + TG_BK_HEADER, a.len - TG_BK_HEADER);
    tg_wire_put_raw(&b, NULL, 0);
    assert_int_equal(tg_wire_end(&b, 0), 0);
    struct frame f;
    decode(b.p, b.len, &f);
    assert_int_equal(tg_wire_check(f.body, f.len), 3);
    tg_wire_pair_t kv = pair_at(&f, 0);
    assert_pair_str(&kv, "attempt", "2");
    kv = pair_at(&f, 1);
    assert_pair_str(&kv, "route", "orders");
    kv = pair_at(&f, 2);
    assert_pair_str(&kv, "path", "/x");
    frame_free(&f);
    tg_wire_enc_fini(&a);
    tg_wire_enc_fini(&b);
}

/* A key the decoder would refuse makes the frame fail, not go out. */
static void overlong_key_fails_the_frame(void **state)
{
    char key[TG_BK_MAX_KEY + 2];
    memset(key, 'k', sizeof(key) - 1);
    key[sizeof(key) - 1] = '\0';
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_REPLY, 1);
    tg_wire_put_str(&e, key, "v");
    assert_true(tg_wire_end(&e, 0) < 0);
    assert_int_equal(e.len, 0); /* nothing usable */
    /* The encoder is usable again afterwards. */
    tg_wire_begin(&e, TG_BK_REPLY, 2);
    key[TG_BK_MAX_KEY] = '\0';
    tg_wire_put_str(&e, key, "v");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    struct frame f;
    decode(e.p, e.len, &f);
    assert_int_equal(f.h.id, 2);
    assert_int_equal(pair_at(&f, 0).klen, TG_BK_MAX_KEY);
    frame_free(&f);
    tg_wire_enc_fini(&e);
}

/* Random frames, random pairs: everything put comes back, in order. */
static void random_frames_round_trip(void **state)
{
    rng_seed(11);
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    static char vals[64][3000];
    static char keys[64][TG_BK_MAX_KEY + 1];
    static size_t vlens[64];
    for (int round = 0; round < 200; round++) {
        tg_wire_enc_reset(&e);
        uint8_t type = (uint8_t)(1 + rng_below(TG_BK_TYPE_MAX));
        uint64_t id = rng_next();
        int n = (int)rng_below(64);
        tg_wire_begin(&e, type, id);
        for (int i = 0; i < n; i++) {
            size_t klen = 1 + rng_below(rng_below(2) ? 8 : TG_BK_MAX_KEY);
            for (size_t k = 0; k < klen; k++)
                keys[i][k] = (char)('a' + rng_below(26));
            keys[i][klen] = '\0';
            vlens[i] = rng_below(rng_below(2) ? 16 : sizeof(vals[i]));
            bool text = rng_below(2);
            for (size_t k = 0; k < vlens[i]; k++)
                vals[i][k] = text ? (char)('a' + rng_below(3)) : (char)rng_next();
            tg_wire_put(&e, keys[i], vals[i], vlens[i]);
        }
        assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);
        struct frame f;
        decode(e.p, e.len, &f);
        assert_int_equal(f.wire, e.len);
        assert_int_equal(f.h.type, type);
        assert_int_equal(f.h.id, id);
        assert_int_equal(tg_wire_check(f.body, f.len), n);
        tg_wire_iter_t it;
        tg_wire_pair_t kv;
        tg_wire_iter_init(&it, f.body, f.len);
        for (int i = 0; i < n; i++) {
            assert_int_equal(tg_wire_next(&it, &kv), 1);
            assert_pair(&kv, keys[i], vals[i], vlens[i]);
        }
        assert_int_equal(tg_wire_next(&it, &kv), 0);
        frame_free(&f);
    }
    tg_wire_enc_fini(&e);
}

/* ---- LZ4 ---- */

static void compressible_body_is_flagged_and_inflates_back(void **state)
{
    char body[10240];
    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = "{\"item\":1,\"name\":\"widget\"},"[i % 27];
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_REPLY, 77);
    tg_wire_put_u64(&e, TG_BK_K_STATUS, 200);
    tg_wire_put(&e, TG_BK_K_BODY, body, sizeof(body));
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);
    size_t raw_len = (2 + 6 + 4 + 3) + (2 + 4 + 4 + sizeof(body));

    tg_wire_head_t h;
    assert_int_equal(tg_wire_head(e.p, TG_BK_MAX_BODY_DEFAULT, &h), 0);
    assert_int_equal(h.flags, TG_BK_F_LZ4);
    assert_int_equal(h.id, 77);
    assert_int_equal(h.len, e.len - TG_BK_HEADER);
    assert_true(h.len < raw_len / 4);
    /* The compressed body: the raw length, then the block. */
    const uint8_t *w = e.p + TG_BK_HEADER;
    assert_int_equal((uint32_t)w[0] << 24 | (uint32_t)w[1] << 16 | (uint32_t)w[2] << 8 | w[3],
                     raw_len);
    uint8_t *raw;
    size_t n;
    assert_int_equal(tg_wire_inflate(w, h.len, TG_BK_MAX_BODY_DEFAULT, &raw, &n), 0);
    assert_int_equal(n, raw_len);
    assert_int_equal(tg_wire_check(raw, n), 2);
    tg_wire_pair_t kv;
    assert_true(tg_wire_find(raw, n, "body", &kv));
    assert_pair(&kv, "body", body, sizeof(body));
    free(raw);

    /* The same frame without compression, and with a threshold above it. */
    tg_wire_enc_reset(&e);
    tg_wire_begin(&e, TG_BK_REPLY, 77);
    tg_wire_put(&e, TG_BK_K_BODY, body, sizeof(body));
    assert_int_equal(tg_wire_end(&e, 0), 0);
    assert_int_equal(e.p[3], 0);
    tg_wire_begin(&e, TG_BK_REPLY, 78);
    tg_wire_put(&e, TG_BK_K_BODY, body, sizeof(body));
    assert_int_equal(tg_wire_end(&e, sizeof(body) * 2), 0);
    assert_int_equal(e.p[e.start + 3], 0);
    tg_wire_enc_fini(&e);
}

static void short_or_incompressible_body_is_not_flagged(void **state)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    /* Incompressible, above the threshold. */
    uint8_t noise[200];
    rng_seed(5);
    for (size_t i = 0; i < sizeof(noise); i++)
        noise[i] = (uint8_t)rng_next();
    tg_wire_begin(&e, TG_BK_REPLY, 1);
    tg_wire_put(&e, TG_BK_K_BODY, noise, sizeof(noise));
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);
    assert_int_equal(e.p[3], 0);
    assert_int_equal(e.len, TG_BK_HEADER + 2 + 4 + 4 + sizeof(noise));
    struct frame f;
    decode(e.p, e.len, &f);
    tg_wire_pair_t kv = pair_at(&f, 0);
    assert_pair(&kv, "body", noise, sizeof(noise));
    frame_free(&f);
    /* Compressible but below the threshold: one byte short of it. */
    char zeros[TG_BK_LZ4_MIN_DEFAULT] = { 0 };
    size_t start = e.len;
    tg_wire_begin(&e, TG_BK_REPLY, 2);
    tg_wire_put(&e, "b", zeros, TG_BK_LZ4_MIN_DEFAULT - 1 - (2 + 1 + 4));
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);
    assert_int_equal(e.p[start + 3], 0);
    assert_int_equal(e.len - start, TG_BK_HEADER + TG_BK_LZ4_MIN_DEFAULT - 1);
    /* At the threshold it is compressed (zeros shrink). */
    start = e.len;
    tg_wire_begin(&e, TG_BK_REPLY, 3);
    tg_wire_put(&e, "b", zeros, TG_BK_LZ4_MIN_DEFAULT - (2 + 1 + 4));
    assert_int_equal(tg_wire_end(&e, TG_BK_LZ4_MIN_DEFAULT), 0);
    assert_int_equal(e.p[start + 3], TG_BK_F_LZ4);
    /* The first frames were left as they were. */
    decode(e.p, e.len, &f);
    assert_int_equal(f.h.id, 1);
    frame_free(&f);
    tg_wire_enc_fini(&e);
}

/* An LZ4 body of <raw>,<n> as the wire carries it (u32 BE length, block),
 * with the length field set to <claim>. Returns its size. */
static size_t lz4_body(const void *raw, size_t n, uint32_t claim, uint8_t *out, size_t cap)
{
    int got = LZ4_compress_default(raw, (char *)out + 4, (int)n, (int)(cap - 4));
    assert_true(got > 0);
    out[0] = (uint8_t)(claim >> 24);
    out[1] = (uint8_t)(claim >> 16);
    out[2] = (uint8_t)(claim >> 8);
    out[3] = (uint8_t)claim;
    return 4 + (size_t)got;
}

static void inflate_refuses_a_lying_length_or_garbage(void **state)
{
    char raw[4000];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (char)('a' + i % 7);
    uint8_t body[LZ4_COMPRESSBOUND(4000) + 4];
    uint8_t *out = NULL;
    size_t n = 0;
    size_t len = lz4_body(raw, sizeof(raw), sizeof(raw), body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, 1u << 20, &out, &n), 0);
    assert_int_equal(n, sizeof(raw));
    assert_memory_equal(out, raw, sizeof(raw));
    free(out);
    out = NULL;
    /* The length claims more, or less, than the block holds. */
    len = lz4_body(raw, sizeof(raw), sizeof(raw) + 1, body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, 1u << 20, &out, &n), -EPROTO);
    len = lz4_body(raw, sizeof(raw), sizeof(raw) - 1, body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, 1u << 20, &out, &n), -EPROTO);
    len = lz4_body(raw, sizeof(raw), 0, body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, 1u << 20, &out, &n), -EPROTO);
    /* A block cut short. */
    len = lz4_body(raw, sizeof(raw), sizeof(raw), body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len - 1, 1u << 20, &out, &n), -EPROTO);
    /* Garbage, or nothing, after the length. */
    rng_seed(9);
    for (int round = 0; round < 200; round++) {
        size_t glen = 4 + rng_below(64);
        uint8_t *g = malloc(glen);
        assert_non_null(g);
        for (size_t i = 4; i < glen; i++)
            g[i] = (uint8_t)rng_next();
        uint32_t claim = (uint32_t)(1000 + rng_below(5000));
        g[0] = 0;
        g[1] = 0;
        g[2] = (uint8_t)(claim >> 8);
        g[3] = (uint8_t)claim;
        uint8_t *o = NULL;
        int rc = tg_wire_inflate(g, glen, 1u << 20, &o, &n);
        assert_int_equal(rc, -EPROTO); /* random bytes never make exactly <claim> bytes */
        assert_null(o);
        free(g);
    }
    static const uint8_t only_len[] = { 0, 0, 0, 10 };
    assert_int_equal(tg_wire_inflate(only_len, 4, 1u << 20, &out, &n), -EPROTO);
    assert_int_equal(tg_wire_inflate(only_len, 3, 1u << 20, &out, &n), -EPROTO);
    assert_int_equal(tg_wire_inflate(only_len, 0, 1u << 20, &out, &n), -EPROTO);
    assert_null(out);
}

static void inflate_refuses_a_raw_length_over_the_limit(void **state)
{
    char raw[2000];
    memset(raw, 'z', sizeof(raw));
    uint8_t body[LZ4_COMPRESSBOUND(2000) + 4];
    uint8_t *out = NULL;
    size_t n = 0;
    size_t len = lz4_body(raw, sizeof(raw), sizeof(raw), body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, sizeof(raw) - 1, &out, &n), -EPROTO);
    assert_null(out);
    assert_int_equal(tg_wire_inflate(body, len, sizeof(raw), &out, &n), 0); /* at it: fine */
    assert_int_equal(n, sizeof(raw));
    free(out);
    out = NULL;
    /* A huge claim is refused before anything is allocated for it. */
    len = lz4_body(raw, sizeof(raw), UINT32_MAX, body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, UINT32_MAX, &out, &n), -EPROTO);
    len = lz4_body(raw, sizeof(raw), TG_BK_MAX_BODY_DEFAULT + 1, body, sizeof(body));
    assert_int_equal(tg_wire_inflate(body, len, TG_BK_MAX_BODY_DEFAULT, &out, &n), -EPROTO);
    assert_null(out);
}

/* ---- ids ---- */

static void set_id_patches_one_frame_in_place(void **state)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_JOB, 1);
    tg_wire_put_str(&e, "route", "a");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    size_t second = e.len;
    tg_wire_begin(&e, TG_BK_JOB, 2);
    tg_wire_put_str(&e, "route", "b");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    uint8_t *copy = malloc(e.len);
    assert_non_null(copy);
    memcpy(copy, e.p, e.len);

    tg_wire_set_id(e.p + second, UINT64_C(0xfedcba9876543210));
    tg_wire_head_t h;
    assert_int_equal(tg_wire_head(e.p + second, 100, &h), 0);
    assert_int_equal(h.id, UINT64_C(0xfedcba9876543210));
    assert_int_equal(h.type, TG_BK_JOB);
    assert_int_equal(h.len, e.len - second - TG_BK_HEADER);
    /* Only the eight id bytes changed. */
    for (size_t i = 0; i < e.len; i++)
        if (i < second + 8 || i >= second + 16)
            assert_int_equal(e.p[i], copy[i]);
    static const uint8_t be[] = { 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54, 0x32, 0x10 };
    assert_memory_equal(e.p + second + 8, be, 8);
    assert_int_equal(tg_wire_head(e.p, 100, &h), 0);
    assert_int_equal(h.id, 1);
    tg_wire_set_id(e.p + second, 2);
    assert_memory_equal(e.p, copy, e.len);
    tg_wire_set_id(e.p, 0);
    assert_int_equal(tg_wire_head(e.p, 100, &h), 0);
    assert_int_equal(h.id, 0);
    free(copy);
    tg_wire_enc_fini(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(good_header_decodes),
        cmocka_unit_test(bad_magic_or_version_is_eproto),
        cmocka_unit_test(type_zero_or_past_max_is_eproto),
        cmocka_unit_test(unknown_flags_are_eproto),
        cmocka_unit_test(body_past_the_limit_is_emsgsize),
        cmocka_unit_test(empty_body_has_no_pairs),
        cmocka_unit_test(well_formed_pairs_are_walked_in_order),
        cmocka_unit_test(truncated_key_length_is_eproto),
        cmocka_unit_test(key_length_zero_is_eproto),
        cmocka_unit_test(key_longer_than_255_is_eproto),
        cmocka_unit_test(key_or_value_length_past_the_end_is_eproto),
        cmocka_unit_test(more_than_1024_pairs_is_eproto),
        cmocka_unit_test(find_returns_the_first_of_a_key),
        cmocka_unit_test(key_is_compares_whole_keys),
        cmocka_unit_test(u64_takes_values_up_to_2_64_minus_1),
        cmocka_unit_test(several_frames_in_one_encoder_round_trip),
        cmocka_unit_test(repeated_keys_keep_their_order),
        cmocka_unit_test(u64_values_round_trip),
        cmocka_unit_test(put_raw_appends_an_encoded_body),
        cmocka_unit_test(overlong_key_fails_the_frame),
        cmocka_unit_test(random_frames_round_trip),
        cmocka_unit_test(compressible_body_is_flagged_and_inflates_back),
        cmocka_unit_test(short_or_incompressible_body_is_not_flagged),
        cmocka_unit_test(inflate_refuses_a_lying_length_or_garbage),
        cmocka_unit_test(inflate_refuses_a_raw_length_over_the_limit),
        cmocka_unit_test(set_id_patches_one_frame_in_place),
    };
    if (getenv("TG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("gate/wire", tests, NULL, NULL);
}
