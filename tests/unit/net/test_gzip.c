/* tests/unit/net/test_gzip.c - gzip for HTTP responses (src/net/gzip.h): the
 * Accept-Encoding parser (tokens, weights, "*", identity, malformed input),
 * the media types worth compressing, and the per-loop deflater: its output
 * inflates back to the input, reuse after a reset, and the not-smaller stop. */
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

#include "core/buf.h"
#include "core/pool.h"
#include "net/gzip.h"

static bool wants(const char *value)
{
    tg_gzip_accept_t a;
    tg_gzip_accept_init(&a);
    tg_gzip_accept_parse(&a, value, strlen(value));
    return tg_gzip_accept_wants(&a);
}

static void no_header_means_no_gzip(void **state)
{
    tg_gzip_accept_t a;
    tg_gzip_accept_init(&a);
    assert_false(tg_gzip_accept_wants(&a));
    assert_false(wants(""));
    assert_false(wants(" , ,"));
}

static void plain_tokens(void **state)
{
    assert_true(wants("gzip"));
    assert_true(wants("GZip"));
    assert_true(wants("x-gzip"));
    assert_true(wants("gzip, deflate, br"));
    assert_true(wants("deflate, br, zstd, gzip"));
    assert_true(wants("br;q=1.0, gzip;q=0.8, *;q=0.1"));
    assert_false(wants("deflate, br"));
    assert_false(wants("gzipx"));
    assert_false(wants("identity"));
    assert_false(wants("gzi"));
}

static void weights(void **state)
{
    assert_false(wants("gzip;q=0"));
    assert_false(wants("gzip; q=0.000"));
    assert_false(wants("gzip ;Q=0"));
    assert_true(wants("gzip;q=0.001"));
    assert_true(wants("gzip;q=1"));
    assert_true(wants("gzip;q=1.000"));
    assert_true(wants("gzip;q=0.5"));
    /* identity preferred over gzip: honoured. */
    assert_false(wants("gzip;q=0.5, identity"));
    assert_true(wants("gzip;q=0.5, identity;q=0.5")); /* a tie goes to gzip */
    assert_true(wants("identity;q=0, gzip"));
    /* other parameters do not matter */
    assert_true(wants("gzip;level=9"));
    assert_false(wants("gzip;level=9;q=0"));
}

static void malformed_weights_drop_the_element(void **state)
{
    assert_false(wants("gzip;q=2"));
    assert_false(wants("gzip;q=1.5"));
    assert_false(wants("gzip;q=1.001"));
    assert_false(wants("gzip;q=0.1234"));
    assert_false(wants("gzip;q="));
    assert_false(wants("gzip;q=abc"));
    assert_false(wants("gzip;q=.5"));
    assert_false(wants("gzip;q=-1"));
    /* the rest of the list is still read */
    assert_true(wants("gzip;q=7, x-gzip"));
}

static void star_and_first_named_wins(void **state)
{
    assert_true(wants("*"));
    assert_true(wants("*;q=0.3"));
    assert_false(wants("*;q=0"));
    assert_true(wants("gzip, *;q=0"));  /* named beats the wildcard */
    assert_false(wants("gzip;q=0, *")); /* and a named no stays no */
    assert_false(wants("*;q=0.5, gzip;q=0.4"));
    assert_false(wants("gzip;q=0, gzip"));
    assert_true(wants("gzip, gzip;q=0"));
}

static void several_header_lines_read_together(void **state)
{
    tg_gzip_accept_t a;
    tg_gzip_accept_init(&a);
    tg_gzip_accept_parse(&a, "br", 2);
    assert_false(tg_gzip_accept_wants(&a));
    tg_gzip_accept_parse(&a, "gzip", 4);
    assert_true(tg_gzip_accept_wants(&a));
    tg_gzip_accept_init(&a);
    tg_gzip_accept_parse(&a, "gzip;q=0", 8);
    tg_gzip_accept_parse(&a, "gzip", 4);
    assert_false(tg_gzip_accept_wants(&a));
}

static void bytes_past_the_length_are_not_read(void **state)
{
    static const char v[] = "br, gzip";
    tg_gzip_accept_t a;
    tg_gzip_accept_init(&a);
    tg_gzip_accept_parse(&a, v, 6); /* "br, gz" */
    assert_false(tg_gzip_accept_wants(&a));
    char *heap = malloc(4);
    memcpy(heap, "gzip", 4); /* no NUL: ASan sees any overread */
    tg_gzip_accept_init(&a);
    tg_gzip_accept_parse(&a, heap, 4);
    assert_true(tg_gzip_accept_wants(&a));
    tg_gzip_accept_init(&a);
    memcpy(heap, "g;q=", 4);
    tg_gzip_accept_parse(&a, heap, 4);
    assert_false(tg_gzip_accept_wants(&a));
    free(heap);
}

static void content_types(void **state)
{
    assert_true(tg_gzip_type_ok("application/json"));
    assert_true(tg_gzip_type_ok("text/plain; version=0.0.4"));
    assert_true(tg_gzip_type_ok("text/html; charset=utf-8"));
    assert_true(tg_gzip_type_ok("image/svg+xml"));
    assert_true(tg_gzip_type_ok("Image/SVG+XML; charset=utf-8"));
    assert_true(tg_gzip_type_ok("application/javascript"));
    assert_false(tg_gzip_type_ok("image/png"));
    assert_false(tg_gzip_type_ok("IMAGE/jpeg"));
    assert_false(tg_gzip_type_ok("video/mp4"));
    assert_false(tg_gzip_type_ok("audio/ogg"));
    assert_false(tg_gzip_type_ok("application/zip"));
    assert_false(tg_gzip_type_ok("application/gzip"));
    assert_false(tg_gzip_type_ok("application/octet-stream"));
    assert_false(tg_gzip_type_ok("font/woff2"));
    assert_false(tg_gzip_type_ok(" application/zip ;x=y"));
    assert_false(tg_gzip_type_ok(""));
    assert_true(tg_gzip_type_ok("application/zipper")); /* whole names only */
}

/* Inflates a gzip member held in <b>; returns the length or -1. */
static long gunzip(const tg_buf_t *b, uint8_t *out, size_t cap)
{
    size_t n = b->len;
    uint8_t *in = malloc(n ? n : 1);
    tg_buf_copy_out(b, 0, in, n);
    z_stream z;
    memset(&z, 0, sizeof(z));
    assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
    z.next_in = in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    int rc = inflate(&z, Z_FINISH);
    long got = rc == Z_STREAM_END ? (long)z.total_out : -1;
    inflateEnd(&z);
    free(in);
    return got;
}

static void compress_round_trips_and_reuses_the_deflater(void **state)
{
    tg_pool_t pool;
    tg_pool_init(&pool, sizeof(tg_chunk_t) + 1000, 8); /* small chunks: many boundaries */
    tg_gzip_t g = TG_GZIP_INIT;
    size_t n = 300000;
    char *text = malloc(n);
    for (size_t i = 0; i < n; i++)
        text[i] = "{\"type\":\"msg\",\"ch\":\"prices\",\"data\":12345}"[i % 41] + (char)(i % 7 == 0);
    uint8_t *back = malloc(n + 1);
    for (int round = 0; round < 3; round++) {
        size_t len = round == 1 ? 200 : n;
        tg_buf_t out = TG_BUF_INIT;
        assert_int_equal(tg_gzip_compress(&g, round == 2 ? 6 : 1, text, len, &out, &pool), 0);
        assert_true(out.len < len);
        assert_true(tg_buf_check(&out));
        assert_int_equal(gunzip(&out, back, n + 1), (long)len);
        assert_memory_equal(back, text, len);
        tg_buf_clear(&out, &pool);
    }
    tg_gzip_fini(&g);
    assert_int_equal(pool.taken, 0);
    tg_pool_fini(&pool);
    free(text);
    free(back);
}

static void incompressible_stops_at_the_input_size(void **state)
{
    tg_pool_t pool;
    tg_pool_init(&pool, sizeof(tg_chunk_t) + 4096, 8);
    tg_gzip_t g = TG_GZIP_INIT;
    uint8_t noise[4096];
    uint32_t x = 2463534242u;
    for (size_t i = 0; i < sizeof(noise); i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        noise[i] = (uint8_t)x;
    }
    tg_buf_t out = TG_BUF_INIT;
    assert_int_equal(tg_gzip_compress(&g, 1, noise, sizeof(noise), &out, &pool), -E2BIG);
    assert_true(out.len < sizeof(noise));
    tg_buf_clear(&out, &pool);
    /* tiny input: the gzip header and trailer alone are 18 bytes */
    assert_int_equal(tg_gzip_compress(&g, 1, "hello", 5, &out, &pool), -E2BIG);
    tg_buf_clear(&out, &pool);
    /* and the deflater is fine for the next response */
    static const char again[] = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    assert_int_equal(tg_gzip_compress(&g, 1, again, sizeof(again) - 1, &out, &pool), 0);
    uint8_t back[128];
    assert_int_equal(gunzip(&out, back, sizeof(back)), (long)(sizeof(again) - 1));
    tg_buf_clear(&out, &pool);
    tg_gzip_fini(&g);
    tg_pool_fini(&pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(no_header_means_no_gzip),
        cmocka_unit_test(plain_tokens),
        cmocka_unit_test(weights),
        cmocka_unit_test(malformed_weights_drop_the_element),
        cmocka_unit_test(star_and_first_named_wins),
        cmocka_unit_test(several_header_lines_read_together),
        cmocka_unit_test(bytes_past_the_length_are_not_read),
        cmocka_unit_test(content_types),
        cmocka_unit_test(compress_round_trips_and_reuses_the_deflater),
        cmocka_unit_test(incompressible_stops_at_the_input_size),
    };
    if (getenv("TG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("net/gzip", tests, NULL, NULL);
}
