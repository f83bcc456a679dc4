/* tests/unit/net/test_json.c - the strict validator, the object splitter, the
 * scalar readers and the writers of src/net/json.h.
 *
 * The validator runs over tables of valid and invalid documents in the spirit
 * of JSONTestSuite (y_ and n_ cases: numbers, strings, escapes, surrogates,
 * UTF-8, structure, whitespace), at and beyond the nesting limit, and over
 * every proper prefix of valid documents. Writers are checked against known
 * vectors (RFC 4648 10 for base64) and by round trips over all bytes and
 * fixed-seed random input. Lengths are explicit: several cases hold a NUL. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/common.h"
#include "core/sbuf.h"
#include "net/json.h"

typedef struct doc {
    const char *p;
    size_t      n;
} doc_t;

#define D(lit) { (lit), sizeof(lit) - 1 }

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

static const doc_t valid_docs[] = {
    /* structure */
    D("[]"), D("{}"), D("[[]]"), D("[{}]"), D("{\"a\":[]}"), D("{\"a\":{}}"), D("[1,[2,[3]]]"),
    D("{\"a\":1,\"b\":[true,false,null],\"c\":{\"d\":\"e\"}}"), D("{\"\":0}"),
    D("{\"a\":1,\"a\":2}"), /* duplicate keys are valid JSON; cmd.c refuses them */
    D("[\"a\",\"b\"]"), D("[[] ]"), D("[null]"), D("[1,2,3,4,5,6,7,8,9,10]"),
    /* scalars at the top level (RFC 8259 allows any value) */
    D("0"), D("-0"), D("1"), D("\"\""), D("\"x\""), D("true"), D("false"), D("null"),
    /* whitespace: exactly space, tab, LF, CR, anywhere between tokens */
    D(" [] "), D("\t\n\r [ 1 , 2 ]\r\n\t"), D("{ \"a\" : 1 , \"b\" : 2 }"), D("[\n]"),
    D(" 1 "), D("{\r\"a\"\t:\n[\r]\n}"),
    /* numbers */
    D("[0]"), D("[-0]"), D("[-1]"), D("[123]"), D("[1.5]"), D("[-0.0]"), D("[0.5]"),
    D("[0e1]"), D("[0E+1]"), D("[0e-1]"), D("[1E22]"), D("[1e1]"), D("[1E-2]"), D("[1e+2]"),
    D("[-123.456e-789]"), D("[123e65]"), D("[1.5e+9999]"), D("[-1e-9999]"),
    D("[100000000000000000000000000000000000000000000000000000000000000000000000000]"),
    D("[-237462374673276894279832749832423479823246327846]"), D("[123.456789e0]"),
    D("18446744073709551616"), D("[1,-1,0.1,-0.1]"),
    /* strings and escapes */
    D("[\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"]"), D("[\"\\u0000\"]"), D("[\"\\u001f\"]"),
    D("[\"\\u00e9\"]"), D("[\"\\u00E9\"]"), D("[\"\\uFFFF\"]"), D("[\"\\uffff\"]"),
    D("[\"\\uD834\\uDD1E\"]"), D("[\"\\ud834\\udd1e\"]"), D("[\"\\uD800\\uDC00\"]"),
    D("[\"\\uDBFF\\uDFFF\"]"), D("[\"\\u0041\\u2028\\u2029\"]"), D("[\"a/*b*/c\"]"),
    D("[\"\\\\u0000\"]"), /* an escaped backslash then plain text */
    D("[\" \"]"), D("[\"\x7f\"]"), D("[\"'\"]"), D("[\"\\/\"]"), D("[\"#\"]"),
    /* raw UTF-8: 2, 3, 4 bytes, the edges of each range */
    D("[\"\xc2\x80\"]"), D("[\"\xdf\xbf\"]"), D("[\"\xc3\xa9\"]"), D("[\"\xe0\xa0\x80\"]"),
    D("[\"\xe2\x82\xac\"]"), D("[\"\xed\x9f\xbf\"]"), D("[\"\xee\x80\x80\"]"),
    D("[\"\xef\xbf\xbf\"]"), D("[\"\xef\xbb\xbf\"]"), D("[\"\xe2\x80\xa8\xe2\x80\xa9\"]"),
    D("[\"\xf0\x90\x80\x80\"]"), D("[\"\xf0\x9d\x84\x9e\"]"), D("[\"\xf4\x8f\xbf\xbf\"]"),
    D("[\"\xf3\xbf\xbf\xbf\"]"), D("{\"\xc3\xa9\":\"\xf0\x9f\x98\x80\"}"),
};

static const doc_t invalid_docs[] = {
    /* nothing, or only whitespace */
    D(""), D(" "), D("\n\t\r "),
    /* structure */
    D("["), D("]"), D("{"), D("}"), D("[1"), D("[1,"), D("[1,]"), D("[,1]"), D("[,]"),
    D("[1,,2]"), D("[1 2]"), D("[}"), D("{]"), D("[[]"), D("[]]"), D("{}}"), D("{\"a\":1,}"),
    D("{,}"), D("{,\"a\":1}"), D("{\"a\" 1}"), D("{\"a\":}"), D("{\"a\"}"), D("{\"a\"::1}"),
    D("{\"a\":1:2}"), D("{\"a\":1 \"b\":2}"), D("{\"a\":1,,\"b\":2}"), D("{a:1}"),
    D("{'a':1}"), D("{1:1}"), D("{null:1}"), D("{[]:1}"), D("{\"a\":1"), D("{\"a\""),
    D("{\"a\":"), D("[\"a\":1]"), D("{\"a\",1}"), D("[1]x"), D("[1][2]"), D("1 2"),
    D("{} {}"), D("\"a\" \"b\""), D("[1]]"), D("[]\0"), D("\0[]"), D("[\0]"),
    /* comments, BOM and other whitespace-looking bytes */
    D("/* c */ []"), D("[]//"), D("[] # c"), D("\xef\xbb\xbf[]"), D("[\f]"), D("[\v]"),
    D("[\xc2\xa0]"), D("[\xe2\x80\xa8]"), D("\f1"),
    /* numbers */
    D("[01]"), D("[-01]"), D("[00]"), D("[012.5]"), D("[+1]"), D("[.5]"), D("[-.5]"),
    D("[1.]"), D("[1.e1]"), D("[1e]"), D("[1e+]"), D("[1E-]"), D("[1e1.5]"), D("[1ee1]"),
    D("[-]"), D("[--1]"), D("[- 1]"), D("[0x1]"), D("[0X1F]"), D("[1 000]"), D("[1_000]"),
    D("[NaN]"), D("[-NaN]"), D("[Infinity]"), D("[-Infinity]"), D("[1.5e]"), D("[2.]"),
    D("[.]"), D("[e1]"), D("[1e1e1]"), D("[1a]"), D("[-1x]"), D("[0.1.2]"), D("[\xef\xbc\x91]"),
    D("01"), D("-"), D("1."), D("+0"), D("0."),
    /* literals */
    D("[tru]"), D("[True]"), D("[TRUE]"), D("[nul]"), D("[nulll]"), D("[fals]"),
    D("[falsey]"), D("[truefalse]"), D("[undefined]"), D("t"), D("nil"), D("[n]"),
    /* strings: quotes and escapes */
    D("\""), D("[\"a]"), D("[\"a"), D("[\"\\\"]"), D("[\"\\\"]\"]\""), D("['a']"),
    D("[\"\\x41\"]"), D("[\"\\'\"]"), D("[\"\\a\"]"), D("[\"\\ \"]"), D("[\"\\0\"]"),
    D("[\"\\U0041\"]"), D("[\"\\u\"]"), D("[\"\\u1\"]"), D("[\"\\u12\"]"), D("[\"\\u123\"]"),
    D("[\"\\u12G4\"]"), D("[\"\\u-123\"]"), D("[\"\\u 123\"]"), D("[\"\\"), D("[\"\\u00"),
    D("[\"\\\xc3\xa9\"]"), D("[\\u0041]"), D("[\"\\\"]"),
    /* strings: raw control characters */
    D("[\"\t\"]"), D("[\"\n\"]"), D("[\"\r\"]"), D("[\"\0\"]"), D("[\"\x1f\"]"),
    D("[\"\x01\"]"), D("[\"a\x08" "b\"]"),
    /* strings: surrogate escapes that do not pair up */
    D("[\"\\uD800\"]"), D("[\"\\uDBFF\"]"), D("[\"\\uDC00\"]"), D("[\"\\uDFFF\"]"),
    D("[\"\\uD800x\"]"), D("[\"\\uD800\\u0041\"]"), D("[\"\\uD800\\uD800\"]"),
    D("[\"\\uDD1E\\uD834\"]"), D("[\"\\uD800\\\"]"), D("[\"\\uD800\\n\"]"),
    D("[\"\\uD800\\uDC0\"]"), D("[\"\\uD800\\"), D("[\"\\uD800\\u"), D("[\"\\uD834\\uDD1\"]"),
    D("[\"a\\uDC00b\"]"), D("[\"\\uD800\\uE000\"]"), D("[\"\\uD800\\uDBFF\"]"),
    /* strings: raw bytes that are not UTF-8 (RFC 3629) */
    D("[\"\x80\"]"), D("[\"\xbf\"]"), D("[\"\xc0\x80\"]"), D("[\"\xc1\xbf\"]"),
    D("[\"\xc2\"]"), D("[\"\xc2\x41\"]"), D("[\"\xc2\xc0\"]"), D("[\"\xe0\x80\xaf\"]"),
    D("[\"\xe0\x9f\xbf\"]"), D("[\"\xe2\x82\"]"), D("[\"\xe2\x82\x41\"]"),
    D("[\"\xed\xa0\x80\"]"), D("[\"\xed\xbf\xbf\"]"), D("[\"\xed\xa0\xbd\xed\xb8\x80\"]"),
    D("[\"\xf0\x80\x80\xaf\"]"), D("[\"\xf0\x8f\xbf\xbf\"]"), D("[\"\xf4\x90\x80\x80\"]"),
    D("[\"\xf5\x80\x80\x80\"]"), D("[\"\xf7\xbf\xbf\xbf\"]"), D("[\"\xf8\x88\x80\x80\x80\"]"),
    D("[\"\xfc\x84\x80\x80\x80\x80\"]"), D("[\"\xfe\"]"), D("[\"\xff\"]"),
    D("[\"\xf0\x9d\x84\"]"), D("[\"\xf0\x9d\"]"), D("\"\xe9\""), D("[\"\xc3\xa9\xc3\"]"),
    D("[\xc3\xa9]"), D("\xf0\x9f\x98\x80"),
    /* a low surrogate encoded in UTF-8 (CESU-style), alone */
    D("[\"\xed\xb0\x80\"]"),
};

static void valid_documents_are_accepted(void **state)
{
    for (size_t i = 0; i < TG_ARRAY_LEN(valid_docs); i++) {
        if (!tg_json_valid(valid_docs[i].p, valid_docs[i].n))
            fail_msg("refused valid case %zu: %.*s", i, (int)valid_docs[i].n, valid_docs[i].p);
    }
}

static void invalid_documents_are_refused(void **state)
{
    for (size_t i = 0; i < TG_ARRAY_LEN(invalid_docs); i++) {
        if (tg_json_valid(invalid_docs[i].p, invalid_docs[i].n))
            fail_msg("accepted invalid case %zu: %.*s", i, (int)invalid_docs[i].n,
                     invalid_docs[i].p);
    }
}

/* A value is complete only at its last byte (scalars at the top level excepted:
 * "12" has the valid prefix "1"), so every proper prefix of a container fails. */
static void every_prefix_of_a_container_is_refused(void **state)
{
    for (size_t i = 0; i < TG_ARRAY_LEN(valid_docs); i++) {
        const doc_t *d = &valid_docs[i];
        size_t end = d->n;
        while (end > 0 && strchr(" \t\r\n", d->p[end - 1]))
            end--;
        if (end == 0 || (d->p[end - 1] != ']' && d->p[end - 1] != '}'))
            continue;
        for (size_t k = 0; k < end; k++)
            if (tg_json_valid(d->p, k))
                fail_msg("accepted prefix %zu of case %zu: %.*s", k, i, (int)k, d->p);
    }
}

/* <levels> containers, each holding the next: "[[[1]]]" or {"a":{"a":1}}. */
static char *nest(int levels, bool object, size_t *len)
{
    size_t cap = (size_t)levels * 6 + 2;
    char *p = malloc(cap), *q = p;
    assert_non_null(p);
    for (int i = 0; i < levels; i++) {
        const char *open = object ? "{\"a\":" : "[";
        memcpy(q, open, strlen(open));
        q += strlen(open);
    }
    *q++ = '1';
    for (int i = 0; i < levels; i++)
        *q++ = object ? '}' : ']';
    *len = (size_t)(q - p);
    return p;
}

static void nesting_at_the_limit_is_accepted_beyond_it_refused(void **state)
{
    for (int object = 0; object <= 1; object++) {
        size_t n;
        char *p = nest(TG_JSON_DEPTH, object, &n);
        assert_true(tg_json_valid(p, n));
        free(p);
        p = nest(TG_JSON_DEPTH + 1, object, &n);
        assert_false(tg_json_valid(p, n));
        free(p);
        p = nest(1, object, &n);
        assert_true(tg_json_valid(p, n));
        free(p);
    }
    /* Mixed, and empty containers at the deepest level count too. */
    char mixed[2 * TG_JSON_DEPTH + 8];
    for (int extra = 0; extra <= 1; extra++) {
        int levels = TG_JSON_DEPTH + extra;
        size_t n = 0;
        for (int i = 0; i < levels; i++)
            mixed[n++] = '[';
        for (int i = 0; i < levels; i++)
            mixed[n++] = ']';
        assert_int_equal(tg_json_valid(mixed, n), extra == 0);
    }
}

/* Far deeper than any stack would take if the validator recursed per level. */
static void very_deep_nesting_is_refused_without_recursion(void **state)
{
    size_t n = 1000000;
    char *p = malloc(2 * n);
    assert_non_null(p);
    memset(p, '[', n);
    memset(p + n, ']', n);
    assert_false(tg_json_valid(p, 2 * n));
    assert_false(tg_json_valid(p, n));
    for (size_t i = 0; i < n; i += 5)
        memcpy(p + i, "{\"a\":", 5);
    assert_false(tg_json_valid(p, n));
    assert_int_equal(tg_json_object(p, n, NULL, 0), -1);
    free(p);
}

/* Long but flat input: a million numbers, and a string of 4 MB. */
static void long_flat_documents_are_accepted(void **state)
{
    size_t count = 1000000, n = 0;
    char *p = malloc(count * 4 + 2);
    assert_non_null(p);
    p[n++] = '[';
    for (size_t i = 0; i < count; i++) {
        memcpy(p + n, i ? ",-1" : "-1", i ? 3 : 2);
        n += i ? 3 : 2;
    }
    p[n++] = ']';
    assert_true(tg_json_valid(p, n));
    p[n - 1] = ',';
    assert_false(tg_json_valid(p, n));
    free(p);

    n = 4 << 20;
    p = malloc(n);
    assert_non_null(p);
    for (size_t i = 1; i + 1 < n; i += 2)
        memcpy(p + i, "\xc3\xa9", 2);
    p[0] = '"';
    p[n - 1] = '"';
    assert_true(tg_json_valid(p, n));
    p[n / 2 | 1] = '\x01';
    assert_false(tg_json_valid(p, n));
    free(p);
}

static bool str_is(tg_str_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static void object_splits_top_level_members_raw(void **state)
{
    static const char text[] = " { \"op\" : \"pub\",\"data\":{\"x\":[1,{\"y\":2}]} ,"
                               "\"k\\u0041\":\"a\\\"b\", \"\":[ 1 , 2 ] ,\"n\":-1.5e3,"
                               "\"t\":true}\n";
    tg_json_member_t m[8];
    int k = tg_json_object(text, sizeof(text) - 1, m, 8);
    assert_int_equal(k, 6);
    assert_true(str_is(m[0].key, "op"));
    assert_true(str_is(m[0].value, "\"pub\""));
    assert_true(str_is(m[1].key, "data"));
    assert_true(str_is(m[1].value, "{\"x\":[1,{\"y\":2}]}"));
    assert_true(str_is(m[2].key, "k\\u0041")); /* raw: escapes kept */
    assert_true(str_is(m[2].value, "\"a\\\"b\""));
    assert_true(str_is(m[3].key, ""));
    assert_true(str_is(m[3].value, "[ 1 , 2 ]"));
    assert_true(str_is(m[4].key, "n"));
    assert_true(str_is(m[4].value, "-1.5e3"));
    assert_true(str_is(m[5].key, "t"));
    assert_true(str_is(m[5].value, "true"));

    assert_int_equal(tg_json_object("{}", 2, m, 8), 0);
    assert_int_equal(tg_json_object(" {\t} ", 5, m, 0), 0);
    assert_int_equal(tg_json_object("{\"a\":1,\"a\":2}", 13, m, 8), 2); /* caller's call */
}

static void object_refuses_non_objects_and_overflow(void **state)
{
    static const doc_t bad[] = {
        D(""), D("[]"), D("1"), D("\"{}\""), D("null"), D("{"), D("{\"a\":1,}"),
        D("{\"a\":1}x"), D("{\"a\":1}{}"), D("{\"a\":01}"), D("{\"a\":\"\\uD800\"}"),
        D("{\"\xff\":1}"), D("{\"a\":[}"), D("{\"a\" 1}"), D("\xef\xbb\xbf{}"), D("{\"a\":1"),
    };
    tg_json_member_t m[4];
    for (size_t i = 0; i < TG_ARRAY_LEN(bad); i++)
        if (tg_json_object(bad[i].p, bad[i].n, m, 4) != -1)
            fail_msg("accepted case %zu: %.*s", i, (int)bad[i].n, bad[i].p);
    /* More members than room: refused, not truncated. */
    static const char four[] = "{\"a\":1,\"b\":2,\"c\":3,\"d\":4}";
    assert_int_equal(tg_json_object(four, sizeof(four) - 1, m, 4), 4);
    assert_int_equal(tg_json_object(four, sizeof(four) - 1, m, 3), -1);
    assert_int_equal(tg_json_object(four, sizeof(four) - 1, m, 0), -1);
}

/* The object is the first level: a member value nests one level less. */
static void object_values_share_the_depth_limit(void **state)
{
    for (int extra = 0; extra <= 1; extra++) {
        size_t n;
        char *inner = nest(TG_JSON_DEPTH - 1 + extra, false, &n);
        char *p = malloc(n + 8);
        assert_non_null(p);
        memcpy(p, "{\"a\":", 5);
        memcpy(p + 5, inner, n);
        p[5 + n] = '}';
        tg_json_member_t m[1];
        assert_int_equal(tg_json_object(p, n + 6, m, 1), extra ? -1 : 1);
        assert_int_equal(tg_json_valid(p, n + 6), !extra);
        free(inner);
        free(p);
    }
}

static void plain_string_takes_strings_without_escapes(void **state)
{
    tg_str_t out;
    assert_true(tg_json_plain_string(TG_STR("\"abc\""), &out));
    assert_true(str_is(out, "abc"));
    assert_true(tg_json_plain_string(TG_STR("\"\""), &out));
    assert_int_equal(out.len, 0);
    assert_true(tg_json_plain_string(TG_STR("\"\xc3\xa9/\""), &out));
    assert_true(str_is(out, "\xc3\xa9/"));

    static const doc_t bad[] = {
        D(""), D("\""), D("abc"), D("1"), D("null"), D("[\"a\"]"), D("\"a\\nb\""),
        D("\"\\u0041\""), D("\"a\"b\""), D("\"a\" "), D(" \"a\""), D("\"a\x01\""),
        D("\"\xff\""), D("\"a"), D("'a'"),
    };
    for (size_t i = 0; i < TG_ARRAY_LEN(bad); i++)
        if (tg_json_plain_string((tg_str_t){ bad[i].p, bad[i].n }, &out))
            fail_msg("accepted case %zu: %.*s", i, (int)bad[i].n, bad[i].p);
}

static void uint_reads_integers_up_to_uint64_max(void **state)
{
    uint64_t v = 7;
    assert_true(tg_json_uint(TG_STR("0"), &v));
    assert_int_equal(v, 0);
    assert_true(tg_json_uint(TG_STR("42"), &v));
    assert_int_equal(v, 42);
    assert_true(tg_json_uint(TG_STR("18446744073709551615"), &v));
    assert_true(v == UINT64_MAX);
    assert_true(tg_json_uint(TG_STR("18446744073709551609"), &v));
    assert_true(v == UINT64_MAX - 6);

    static const doc_t bad[] = {
        D(""), D("-1"), D("-0"), D("+1"), D("01"), D("00"), D("1.0"), D("1e2"), D("1E0"),
        D(" 1"), D("1 "), D("18446744073709551616"), D("18446744073709551620"),
        D("99999999999999999999"), D("\"1\""), D("0x10"), D("1a"), D("1\0"),
    };
    v = 7;
    for (size_t i = 0; i < TG_ARRAY_LEN(bad); i++)
        if (tg_json_uint((tg_str_t){ bad[i].p, bad[i].n }, &v))
            fail_msg("accepted case %zu: %.*s", i, (int)bad[i].n, bad[i].p);
    assert_int_equal(v, 7); /* untouched on refusal */
}

static void assert_escapes(const char *in, size_t n, const char *want)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_json_escape(&b, in, n);
    assert_false(b.failed);
    if (b.len != strlen(want) || memcmp(b.p, want, b.len) != 0)
        fail_msg("escape of %.*s gave [%.*s], want [%s]", (int)n, in, (int)b.len, b.p, want);
    tg_sbuf_free(&b);
}

#define ESC(lit, want) assert_escapes((lit), sizeof(lit) - 1, (want))

static void escape_known_vectors(void **state)
{
    ESC("", "");
    ESC("plain text", "plain text");
    ESC("a\"b", "a\\\"b");
    ESC("a\\b", "a\\\\b");
    ESC("\n\r\t\b\f", "\\n\\r\\t\\b\\f");
    ESC("\0", "\\u0000");
    ESC("\x01\x1f\x0b", "\\u0001\\u001f\\u000b");
    ESC("\x7f/'<>&", "\x7f/'<>&");                       /* only what JSON requires */
    ESC("\xc3\xa9\xf0\x9f\x98\x80", "\xc3\xa9\xf0\x9f\x98\x80"); /* UTF-8 stays */
    ESC("a\xe2\x80\xa8" "b\xe2\x80\xa9" "c", "a\\u2028b\\u2029c");
    ESC("\xe2\x80\xaa\xe2\x80\xa7", "\xe2\x80\xaa\xe2\x80\xa7"); /* neighbours stay */
    ESC("\xe2\x80", "\xe2\x80");                         /* a cut sequence is copied */
    ESC("\xff\xfe", "\xff\xfe");                         /* so are invalid bytes */
    ESC("\"\"\\\\", "\\\"\\\"\\\\\\\\");
}

/* Every single byte below 0x80 escapes to a valid JSON string with the same
 * meaning, and a long text crosses any internal chunking intact. */
static void escape_output_is_a_valid_json_string(void **state)
{
    for (int c = 0; c < 0x80; c++) {
        char in = (char)c;
        tg_sbuf_t b = TG_SBUF_INIT;
        tg_sbuf_put(&b, "\"", 1);
        tg_json_escape(&b, &in, 1);
        tg_sbuf_put(&b, "\"", 1);
        assert_false(b.failed);
        assert_true(tg_json_valid(b.p, b.len));
        if (c >= 0x20 && c != '"' && c != '\\')
            assert_int_equal(b.len, 3);
        tg_sbuf_free(&b);
    }
    size_t n = 100000;
    char *in = malloc(n);
    assert_non_null(in);
    rng_state = 1;
    for (size_t i = 0; i < n; i++)
        in[i] = (char)(rng_next() % 0x80);
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_put(&b, "\"", 1);
    tg_json_escape(&b, in, n);
    tg_sbuf_put(&b, "\"", 1);
    assert_false(b.failed);
    assert_true(tg_json_valid(b.p, b.len));
    for (size_t i = 1; i + 1 < b.len; i++)
        assert_true((unsigned char)b.p[i] >= 0x20);
    tg_sbuf_free(&b);
    free(in);
}

static const struct {
    const char *raw, *b64;
} rfc4648[] = {
    /* RFC 4648 section 10 */
    { "", "" },          { "f", "Zg==" },         { "fo", "Zm8=" },        { "foo", "Zm9v" },
    { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
};

static void base64_rfc4648_vectors(void **state)
{
    for (size_t i = 0; i < TG_ARRAY_LEN(rfc4648); i++) {
        const char *raw = rfc4648[i].raw, *b64 = rfc4648[i].b64;
        tg_sbuf_t b = TG_SBUF_INIT;
        tg_base64(&b, raw, strlen(raw));
        assert_false(b.failed);
        assert_int_equal(b.len, strlen(b64));
        assert_memory_equal(b.p, b64, b.len);
        tg_sbuf_free(&b);
        char out[16];
        assert_int_equal(tg_base64_decode(b64, strlen(b64), out), strlen(raw));
        assert_memory_equal(out, raw, strlen(raw));
    }
    /* Both extra alphabet characters, and high bytes. */
    static const unsigned char hi[] = { 0xfb, 0xff, 0xbf, 0x00, 0x10, 0x83 };
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_base64(&b, hi, sizeof(hi));
    assert_string_equal(b.p, "+/+/ABCD");
    tg_sbuf_free(&b);
}

static void base64_decode_refuses_malformed_text(void **state)
{
    static const doc_t bad[] = {
        D("Zg"), D("Zg="), D("Zm9"), D("Z"), D("Zm9vY"),          /* padding missing */
        D("Zg=="  "Zg=="), D("Zg=a"), D("Z==="), D("===="), D("=Zg="), /* '=' misplaced */
        D("Zm 9v"), D("Zm9v\n"), D(" Zm9v"), D("Zm9v\r\n"), D("Zm\t9v"), /* whitespace */
        D("Zm9-"), D("Zm9_"), D("Zm9*"), D("Zm9\0"), D("Zm9\xc3"),     /* alphabet */
        D("Zh=="), D("Zm9="), D("AB=="), D("AAB="),                   /* pad bits set */
    };
    char out[16];
    for (size_t i = 0; i < TG_ARRAY_LEN(bad); i++)
        if (tg_base64_decode(bad[i].p, bad[i].n, out) != -1)
            fail_msg("accepted case %zu: %.*s", i, (int)bad[i].n, bad[i].p);
}

/* decode(encode(x)) == x for every length up to 300, and every byte value. */
static void base64_round_trips(void **state)
{
    unsigned char in[300], out[300];
    rng_state = 42;
    for (size_t n = 0; n <= sizeof(in); n++) {
        for (size_t i = 0; i < n; i++)
            in[i] = (unsigned char)(n < 256 && i == 0 ? n : rng_next());
        tg_sbuf_t b = TG_SBUF_INIT;
        tg_base64(&b, in, n);
        assert_false(b.failed);
        assert_int_equal(b.len, (n + 2) / 3 * 4);
        assert_int_equal(tg_base64_decode(b.p, b.len, out), n);
        assert_memory_equal(out, in, n);
        tg_sbuf_free(&b);
    }
}

static void array_splits_elements_raw(void **state)
{
    (void)state;
    tg_str_t el[4];
    const char *doc = " [ 1 , \"a,b\" , {\"k\":[2,3]} , [] ] ";
    assert_int_equal(tg_json_array(doc, strlen(doc), el, 4), 4);
    assert_int_equal(el[0].len, 1);
    assert_memory_equal(el[1].p, "\"a,b\"", 5);
    assert_memory_equal(el[2].p, "{\"k\":[2,3]}", 11);
    assert_memory_equal(el[3].p, "[]", 2);
    assert_int_equal(tg_json_array("[]", 2, el, 4), 0);
    assert_int_equal(tg_json_array("[1,2,3,4,5]", 11, el, 4), -1); /* more than max */
    assert_int_equal(tg_json_array("[1,]", 4, el, 4), -1);
    assert_int_equal(tg_json_array("{}", 2, el, 4), -1);
    assert_int_equal(tg_json_array("[1] x", 5, el, 4), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(array_splits_elements_raw),
        cmocka_unit_test(valid_documents_are_accepted),
        cmocka_unit_test(invalid_documents_are_refused),
        cmocka_unit_test(every_prefix_of_a_container_is_refused),
        cmocka_unit_test(nesting_at_the_limit_is_accepted_beyond_it_refused),
        cmocka_unit_test(very_deep_nesting_is_refused_without_recursion),
        cmocka_unit_test(long_flat_documents_are_accepted),
        cmocka_unit_test(object_splits_top_level_members_raw),
        cmocka_unit_test(object_refuses_non_objects_and_overflow),
        cmocka_unit_test(object_values_share_the_depth_limit),
        cmocka_unit_test(plain_string_takes_strings_without_escapes),
        cmocka_unit_test(uint_reads_integers_up_to_uint64_max),
        cmocka_unit_test(escape_known_vectors),
        cmocka_unit_test(escape_output_is_a_valid_json_string),
        cmocka_unit_test(base64_rfc4648_vectors),
        cmocka_unit_test(base64_decode_refuses_malformed_text),
        cmocka_unit_test(base64_round_trips),
    };
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='base64*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("net/json", tests, NULL, NULL);
}
