/* tests/unit/net/test_cmd.c - positions, channel names and client commands
 * (src/net/cmd.h): every op, every refusal with its reason, positions and
 * names at their bounds. Inputs are literals: deterministic, no fixture. */
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

#include "core/common.h"
#include "net/cmd.h"

static bool str_is(tg_str_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

static void parse_ok(const char *text, tg_cmd_t *cmd)
{
    const char *why = NULL;
    int rc = tg_cmd_parse(text, strlen(text), cmd, &why);
    if (rc != 0)
        fail_msg("refused (%s): %s", why ? why : "no reason", text);
}

static void parse_refused(const char *text, size_t n, const char *reason)
{
    tg_cmd_t cmd;
    const char *why = NULL;
    int rc = tg_cmd_parse(text, n, &cmd, &why);
    if (rc != -EINVAL || !why || strcmp(why, reason) != 0)
        fail_msg("rc %d, why \"%s\", want \"%s\": %.*s", rc, why ? why : "(null)", reason, (int)n,
                 text);
}

/* ---- positions ---- */

static void pos_parse_accepts_bounds(void **state)
{
    tg_pos_t p;
    assert_true(tg_pos_parse("0:0", 3, &p));
    assert_int_equal(p.epoch, 0);
    assert_int_equal(p.seq, 0);
    assert_true(tg_pos_parse("7:42", 4, &p));
    assert_int_equal(p.epoch, 7);
    assert_int_equal(p.seq, 42);
    static const char max[] = "4294967295:18446744073709551615";
    assert_int_equal(sizeof(max), TG_POS_TEXT_MAX);
    assert_true(tg_pos_parse(max, sizeof(max) - 1, &p));
    assert_true(p.epoch == UINT32_MAX);
    assert_true(p.seq == UINT64_MAX);
    assert_true(tg_pos_parse("4294967294:18446744073709551614", 31, &p));
    assert_true(p.epoch == UINT32_MAX - 1 && p.seq == UINT64_MAX - 1);
    assert_true(tg_pos_parse("1:10", 4, &p)); /* a zero that is not leading */
    assert_int_equal(p.seq, 10);
}

static void pos_parse_refuses_malformed_and_out_of_range(void **state)
{
    static const struct {
        const char *p;
        size_t      n;
    } bad[] = {
#define B(lit) { (lit), sizeof(lit) - 1 }
        B(""), B(":"), B("1"), B("1:"), B(":1"), B("1:2:3"), B("1::2"), B("01:1"), B("1:01"),
        B("00:0"), B("0:00"), B("+1:1"), B("1:+1"), B("-1:1"), B("1:-1"), B(" 1:1"), B("1:1 "),
        B("1 :1"), B("1: 1"), B("a:1"), B("1:b"), B("1:0x1"), B("1.0:1"), B("1:1e3"),
        B("4294967296:0"), B("9999999999:0"), B("42949672950:0"), B("0:18446744073709551616"),
        B("0:99999999999999999999"), B("0:184467440737095516150"), B("1:1\0"), B("\0:1"),
        B("\"1:1\""), B("1;1"), B("1/1"),
#undef B
    };
    tg_pos_t p = { 5, 6 };
    for (size_t i = 0; i < TG_ARRAY_LEN(bad); i++)
        if (tg_pos_parse(bad[i].p, bad[i].n, &p))
            fail_msg("accepted case %zu: %.*s", i, (int)bad[i].n, bad[i].p);
    assert_int_equal(p.epoch, 5); /* untouched on refusal */
    assert_int_equal(p.seq, 6);
}

static void pos_format_round_trips(void **state)
{
    static const tg_pos_t cases[] = {
        { 0, 0 }, { 1, 1 }, { 10, 100 }, { UINT32_MAX, 0 }, { 0, UINT64_MAX },
        { UINT32_MAX, UINT64_MAX }, { 123456789, UINT64_C(9876543210123) },
    };
    for (size_t i = 0; i < TG_ARRAY_LEN(cases); i++) {
        char text[TG_POS_TEXT_MAX];
        size_t n = tg_pos_format(cases[i], text);
        assert_int_equal(n, strlen(text));
        tg_pos_t back;
        assert_true(tg_pos_parse(text, n, &back));
        assert_int_equal(back.epoch, cases[i].epoch);
        assert_true(back.seq == cases[i].seq);
    }
    char text[TG_POS_TEXT_MAX];
    assert_int_equal(tg_pos_format((tg_pos_t){ UINT32_MAX, UINT64_MAX }, text), 31);
    assert_string_equal(text, "4294967295:18446744073709551615");
    assert_int_equal(tg_pos_format((tg_pos_t){ 0, 0 }, text), 3);
    assert_string_equal(text, "0:0");
}

/* ---- channel names ---- */

static void chan_name_accepts_its_alphabet_up_to_the_limit(void **state)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789_.:@/=+-";
    assert_true(tg_chan_name_valid(alphabet, sizeof(alphabet) - 1));
    char name[TG_CHAN_NAME_MAX + 1];
    memset(name, 'a', sizeof(name));
    assert_true(tg_chan_name_valid(name, 1));
    assert_true(tg_chan_name_valid(name, TG_CHAN_NAME_MAX));
    assert_false(tg_chan_name_valid(name, TG_CHAN_NAME_MAX + 1));
    assert_false(tg_chan_name_valid(name, 0));
    assert_false(tg_chan_name_valid(NULL, 0));
    for (int c = 0; c < 256; c++) {
        char b = (char)c;
        bool want = c != 0 && strchr(alphabet, c) != NULL;
        if (tg_chan_name_valid(&b, 1) != want)
            fail_msg("byte 0x%02x: want %d", c, want);
        /* One bad byte anywhere spoils a name. */
        name[TG_CHAN_NAME_MAX - 1] = b;
        assert_int_equal(tg_chan_name_valid(name, TG_CHAN_NAME_MAX), want);
        name[TG_CHAN_NAME_MAX - 1] = 'a';
    }
}

/* ---- commands: each op ---- */

static void sub_with_and_without_from(void **state)
{
    tg_cmd_t c;
    parse_ok("{\"op\":\"sub\",\"ch\":\"news\"}", &c);
    assert_int_equal(c.op, TG_CMD_SUB);
    assert_true(str_is(c.ch, "news"));
    assert_false(c.has_from);
    assert_int_equal(c.id.len, 0);
    assert_int_equal(c.data.len, 0);

    parse_ok("{\"op\":\"sub\",\"ch\":\"a/b:c@d=e+f-g_h.i\",\"from\":\"3:17\",\"id\":1}", &c);
    assert_int_equal(c.op, TG_CMD_SUB);
    assert_true(str_is(c.ch, "a/b:c@d=e+f-g_h.i"));
    assert_true(c.has_from);
    assert_int_equal(c.from.epoch, 3);
    assert_int_equal(c.from.seq, 17);
    assert_true(str_is(c.id, "1"));

    parse_ok("{\"from\":\"4294967295:18446744073709551615\",\"ch\":\"x\",\"op\":\"sub\"}", &c);
    assert_true(c.has_from && c.from.epoch == UINT32_MAX && c.from.seq == UINT64_MAX);
}

static void unsub_pub_ping_call(void **state)
{
    tg_cmd_t c;
    parse_ok("{\"op\":\"unsub\",\"ch\":\"news\",\"id\":\"u1\"}", &c);
    assert_int_equal(c.op, TG_CMD_UNSUB);
    assert_true(str_is(c.ch, "news"));
    assert_true(str_is(c.id, "\"u1\""));

    parse_ok("{\"op\":\"pub\",\"ch\":\"room.1\",\"data\":{\"text\":\"hi\",\"n\":[1,2]}}", &c);
    assert_int_equal(c.op, TG_CMD_PUB);
    assert_true(str_is(c.ch, "room.1"));
    assert_true(str_is(c.data, "{\"text\":\"hi\",\"n\":[1,2]}"));
    assert_int_equal(c.id.len, 0);

    parse_ok("{\"op\":\"ping\"}", &c);
    assert_int_equal(c.op, TG_CMD_PING);
    assert_int_equal(c.id.len + c.ch.len + c.data.len + c.route.len, 0);
    parse_ok("{\"op\":\"ping\",\"id\":-12.5e3}", &c);
    assert_true(str_is(c.id, "-12.5e3"));

    parse_ok("{\"op\":\"call\",\"route\":\"users/get\",\"data\":[1,\"x\"],\"id\":7}", &c);
    assert_int_equal(c.op, TG_CMD_CALL);
    assert_true(str_is(c.route, "users/get"));
    assert_true(str_is(c.data, "[1,\"x\"]"));
    assert_true(str_is(c.id, "7"));
    assert_int_equal(c.ch.len, 0);
}

/* Data is any JSON value, kept raw, without the whitespace around it. */
static void data_is_any_value_kept_raw(void **state)
{
    static const char *values[] = {
        "null", "true", "false", "0", "-1.5e-3", "\"\"", "\"a\\nb\\u00e9\"", "[]", "{}",
        "[1,{\"a\":[null]}]", "{\"op\":\"unsub\"}", "\"\xe2\x80\xa8\"",
    };
    for (size_t i = 0; i < TG_ARRAY_LEN(values); i++) {
        char text[256];
        snprintf(text, sizeof(text), "{\"op\":\"pub\",\"ch\":\"c\",\"data\": \t%s\n}", values[i]);
        tg_cmd_t c;
        parse_ok(text, &c);
        assert_true(str_is(c.data, values[i]));
    }
}

static void id_is_a_number_or_string_kept_raw(void **state)
{
    static const char *ids[] = {
        "0", "-0", "42", "-7", "1.5", "1e400", "123456789012345678901234567890", "\"\"",
        "\"abc\"", "\"a\\\"b\"", "\"\\u00e9\"", "\"\xc3\xa9\"",
    };
    for (size_t i = 0; i < TG_ARRAY_LEN(ids); i++) {
        char text[256];
        snprintf(text, sizeof(text), "{\"op\":\"ping\",\"id\":%s}", ids[i]);
        tg_cmd_t c;
        parse_ok(text, &c);
        assert_true(str_is(c.id, ids[i]));
    }
    static const char *bad[] = { "true", "false", "null", "[]", "[1]", "{}", "{\"a\":1}" };
    for (size_t i = 0; i < TG_ARRAY_LEN(bad); i++) {
        char text[256];
        snprintf(text, sizeof(text), "{\"op\":\"ping\",\"id\":%s}", bad[i]);
        parse_refused(text, strlen(text), "bad id");
    }
}

/* Members nobody reads are ignored, and so are known ones the op does not take
 * (unchecked: a ping's "ch" may be anything). Whitespace is allowed throughout. */
static void unknown_and_unused_members_are_ignored(void **state)
{
    tg_cmd_t c;
    parse_ok(" {\n \"v\" : 2 , \"op\" : \"ping\" , \"extra\" : {\"op\":\"pub\"} }\r\n", &c);
    assert_int_equal(c.op, TG_CMD_PING);
    parse_ok("{\"op\":\"ping\",\"ch\":\"bad name!\",\"data\":1,\"route\":7,\"from\":\"x\"}", &c);
    assert_int_equal(c.op, TG_CMD_PING);
    assert_int_equal(c.ch.len + c.data.len + c.route.len, 0);
    assert_false(c.has_from);
    parse_ok("{\"op\":\"unsub\",\"ch\":\"a\",\"from\":\"nope\",\"data\":{}}", &c);
    assert_int_equal(c.op, TG_CMD_UNSUB);
    assert_false(c.has_from);
    assert_int_equal(c.data.len, 0);
    parse_ok("{\"op\":\"pub\",\"ch\":\"a\",\"data\":0,\"from\":\"nope\",\"route\":\"!\"}", &c);
    assert_int_equal(c.op, TG_CMD_PUB);
    assert_false(c.has_from);
    parse_ok("{\"op\":\"call\",\"route\":\"r\",\"data\":0,\"id\":1,\"ch\":\"!\"}", &c);
    assert_int_equal(c.op, TG_CMD_CALL);
    assert_int_equal(c.ch.len, 0);
    /* Keys are matched raw: an escaped "op" is some other member. */
    parse_ok("{\"\\u006fp\":\"pub\",\"op\":\"ping\"}", &c);
    assert_int_equal(c.op, TG_CMD_PING);
}

static void channel_names_at_their_bounds(void **state)
{
    char name[TG_CHAN_NAME_MAX + 2], text[512];
    memset(name, 'n', sizeof(name));
    snprintf(text, sizeof(text), "{\"op\":\"sub\",\"ch\":\"%.*s\"}", TG_CHAN_NAME_MAX, name);
    tg_cmd_t c;
    parse_ok(text, &c);
    assert_int_equal(c.ch.len, TG_CHAN_NAME_MAX);
    snprintf(text, sizeof(text), "{\"op\":\"sub\",\"ch\":\"%.*s\"}", TG_CHAN_NAME_MAX + 1, name);
    parse_refused(text, strlen(text), "bad channel name");
    parse_ok("{\"op\":\"pub\",\"ch\":\"x\",\"data\":1}", &c);
    assert_true(str_is(c.ch, "x"));
    snprintf(text, sizeof(text), "{\"op\":\"call\",\"route\":\"%.*s\",\"data\":1,\"id\":1}",
             TG_CHAN_NAME_MAX, name);
    parse_ok(text, &c);
    assert_int_equal(c.route.len, TG_CHAN_NAME_MAX);
    snprintf(text, sizeof(text), "{\"op\":\"call\",\"route\":\"%.*s\",\"data\":1,\"id\":1}",
             TG_CHAN_NAME_MAX + 1, name);
    parse_refused(text, strlen(text), "bad route");
}

/* TG_CMD_MEMBERS_MAX members, ignored ones included, and not one more. */
static void member_count_at_the_limit(void **state)
{
    char text[1024];
    for (int extra = 0; extra <= 1; extra++) {
        int n = snprintf(text, sizeof(text), "{\"op\":\"ping\"");
        for (int i = 1; i < TG_CMD_MEMBERS_MAX + extra; i++)
            n += snprintf(text + n, sizeof(text) - (size_t)n, ",\"m%d\":%d", i, i);
        n += snprintf(text + n, sizeof(text) - (size_t)n, "}");
        if (extra) {
            parse_refused(text, (size_t)n, "too many members");
        } else {
            tg_cmd_t c;
            parse_ok(text, &c);
            assert_int_equal(c.op, TG_CMD_PING);
        }
    }
}

/* ---- commands: every refusal, and its reason ---- */

static const struct {
    const char *text;
    const char *why;
} refusals[] = {
    { "", "not a JSON object" },
    { "   ", "not a JSON object" },
    { "[]", "not a JSON object" },
    { "\"op\"", "not a JSON object" },
    { "null", "not a JSON object" },
    { "{", "not a JSON object" },
    { "{\"op\":\"ping\"", "not a JSON object" },
    { "{\"op\":\"ping\",}", "not a JSON object" },
    { "{\"op\":\"ping\"} x", "not a JSON object" },
    { "{\"op\":\"ping\"}{}", "not a JSON object" },
    { "{'op':'ping'}", "not a JSON object" },
    { "{\"op\":\"ping\",\"x\":01}", "not a JSON object" },
    { "{\"op\":\"ping\",\"x\":\"\\uD800\"}", "not a JSON object" },
    { "{\"op\":\"ping\",\"x\":\"\xc0\xaf\"}", "not a JSON object" },
    { "{\"op\":\"ping\",\"op\":\"ping\"}", "duplicate member" },
    { "{\"op\":\"pub\",\"ch\":\"a\",\"data\":1,\"data\":2}", "duplicate member" },
    { "{\"op\":\"ping\",\"x\":1,\"x\":1}", "duplicate member" },
    { "{\"op\":\"ping\",\"id\":1,\"id\":2}", "duplicate member" },
    { "{}", "missing op" },
    { "{\"ch\":\"a\"}", "missing op" },
    { "{\"OP\":\"ping\"}", "missing op" },
    { "{\"\\u006fp\":\"ping\"}", "missing op" },
    { "{\"op\":\"subscribe\"}", "unknown op" },
    { "{\"op\":\"\"}", "unknown op" },
    { "{\"op\":\"PING\"}", "unknown op" },
    { "{\"op\":\"ping \"}", "unknown op" },
    { "{\"op\":\"pin\"}", "unknown op" },
    { "{\"op\":\"p\\u0069ng\"}", "unknown op" },
    { "{\"op\":1}", "unknown op" },
    { "{\"op\":null}", "unknown op" },
    { "{\"op\":[\"ping\"]}", "unknown op" },
    { "{\"op\":\"ping\",\"id\":true}", "bad id" },
    { "{\"op\":\"ping\",\"id\":null}", "bad id" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"id\":[1]}", "bad id" },
    { "{\"op\":\"call\",\"route\":\"r\",\"data\":1}", "missing id" },
    { "{\"op\":\"sub\"}", "missing ch" },
    { "{\"op\":\"unsub\",\"id\":1}", "missing ch" },
    { "{\"op\":\"pub\",\"data\":1}", "missing ch" },
    { "{\"op\":\"sub\",\"ch\":\"\"}", "bad channel name" },
    { "{\"op\":\"sub\",\"ch\":\"a b\"}", "bad channel name" },
    { "{\"op\":\"sub\",\"ch\":\"a\\\"b\"}", "bad channel name" },
    { "{\"op\":\"sub\",\"ch\":\"\\u0061\"}", "bad channel name" },
    { "{\"op\":\"sub\",\"ch\":\"caf\xc3\xa9\"}", "bad channel name" },
    { "{\"op\":\"sub\",\"ch\":\"a#b\"}", "bad channel name" },
    { "{\"op\":\"unsub\",\"ch\":1}", "bad channel name" },
    { "{\"op\":\"pub\",\"ch\":[\"a\"],\"data\":1}", "bad channel name" },
    { "{\"op\":\"pub\",\"ch\":null,\"data\":1}", "bad channel name" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"1\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"01:1\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"4294967296:0\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"0:18446744073709551616\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"1:-1\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":\"1\\u003a1\"}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":12}", "bad from" },
    { "{\"op\":\"sub\",\"ch\":\"a\",\"from\":null}", "bad from" },
    { "{\"op\":\"call\",\"data\":1,\"id\":1}", "missing route" },
    { "{\"op\":\"call\",\"route\":\"\",\"data\":1,\"id\":1}", "bad route" },
    { "{\"op\":\"call\",\"route\":\"a?b\",\"data\":1,\"id\":1}", "bad route" },
    { "{\"op\":\"call\",\"route\":{},\"data\":1,\"id\":1}", "bad route" },
    { "{\"op\":\"pub\",\"ch\":\"a\"}", "missing data" },
    { "{\"op\":\"pub\",\"ch\":\"a\",\"Data\":1}", "missing data" },
    { "{\"op\":\"call\",\"route\":\"r\",\"id\":1}", "missing data" },
};

static void every_refusal_names_its_reason(void **state)
{
    for (size_t i = 0; i < TG_ARRAY_LEN(refusals); i++)
        parse_refused(refusals[i].text, strlen(refusals[i].text), refusals[i].why);
}

/* The whole input counts: a NUL inside or after the object is not whitespace. */
static void embedded_nul_is_refused(void **state)
{
    static const char text[] = "{\"op\":\"ping\"}\0";
    parse_refused(text, sizeof(text) - 1, "not a JSON object");
    static const char inside[] = "{\"op\":\"pi\0ng\"}";
    parse_refused(inside, sizeof(inside) - 1, "not a JSON object");
    tg_cmd_t c;
    const char *why = "untouched";
    assert_int_equal(tg_cmd_parse(text, sizeof(text) - 2, &c, &why), 0);
    assert_int_equal(c.op, TG_CMD_PING);
}

/* A refused command leaves nothing that looks parsed, and <why> may be NULL. */
static void refusal_without_why_and_cleared_command(void **state)
{
    tg_cmd_t c;
    memset(&c, 0xAA, sizeof(c));
    assert_int_equal(tg_cmd_parse("[]", 2, &c, NULL), -EINVAL);
    assert_int_equal(c.op, 0);
    assert_int_equal(c.ch.len + c.id.len + c.data.len + c.route.len, 0);
    assert_false(c.has_from);
    /* Refused late, after op and id were read: still nothing. */
    memset(&c, 0xAA, sizeof(c));
    static const char late[] = "{\"op\":\"sub\",\"id\":1,\"ch\":\"a\",\"from\":\"x\"}";
    assert_int_equal(tg_cmd_parse(late, sizeof(late) - 1, &c, NULL), -EINVAL);
    assert_int_equal(c.op, 0);
    assert_int_equal(c.ch.len + c.id.len + c.data.len + c.route.len, 0);
    assert_false(c.has_from);
}

static void hello_with_and_without_compress(void **state)
{
    tg_cmd_t c;
    parse_ok("{\"op\":\"hello\",\"compress\":\"lz4\",\"id\":3}", &c);
    assert_int_equal(c.op, TG_CMD_HELLO);
    assert_true(str_is(c.compress, "lz4"));
    assert_true(str_is(c.id, "3"));
    parse_ok("{\"op\":\"hello\"}", &c);
    assert_int_equal(c.op, TG_CMD_HELLO);
    assert_int_equal(c.compress.len, 0);
    static const char bad[] = "{\"op\":\"hello\",\"compress\":5}";
    parse_refused(bad, sizeof(bad) - 1, "bad compress");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pos_parse_accepts_bounds),
        cmocka_unit_test(pos_parse_refuses_malformed_and_out_of_range),
        cmocka_unit_test(pos_format_round_trips),
        cmocka_unit_test(chan_name_accepts_its_alphabet_up_to_the_limit),
        cmocka_unit_test(sub_with_and_without_from),
        cmocka_unit_test(unsub_pub_ping_call),
        cmocka_unit_test(data_is_any_value_kept_raw),
        cmocka_unit_test(id_is_a_number_or_string_kept_raw),
        cmocka_unit_test(unknown_and_unused_members_are_ignored),
        cmocka_unit_test(channel_names_at_their_bounds),
        cmocka_unit_test(member_count_at_the_limit),
        cmocka_unit_test(every_refusal_names_its_reason),
        cmocka_unit_test(embedded_nul_is_refused),
        cmocka_unit_test(refusal_without_why_and_cleared_command),
        cmocka_unit_test(hello_with_and_without_compress),
    };
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='pos*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("net/cmd", tests, NULL, NULL);
}
