/* fuzz/fuzz_cmd.c - arbitrary bytes through the client command parser and the
 * JSON pieces under it (net/cmd.h, net/json.h), with the functions checked
 * against each other rather than only for crashes:
 *  - tg_json_object() splits exactly the inputs that are valid JSON objects,
 *    into members whose values are valid JSON on their own;
 *  - an accepted command is valid JSON, borrows only from the input, and each
 *    field obeys the rule for its op; a refused one has a reason and is zeroed;
 *  - what tg_pos_parse() and tg_json_uint() accept is their canonical form;
 *  - escaping gives a string that unescapes back (valid JSON when the input is
 *    valid JSON, hence valid UTF-8), and base64 round trips both ways. */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sbuf.h"
#include "net/cmd.h"
#include "net/json.h"

#define CHECK(cond)                                                               \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "fuzz_cmd: check failed: %s (line %d)\n", #cond, __LINE__); \
            abort();                                                              \
        }                                                                         \
    } while (0)

static const char *in_p;
static size_t in_n;

/* Whether <s> lies inside the input: fields borrow, never copy. */
static bool borrowed(tg_str_t s)
{
    return s.len == 0 || (s.p >= in_p && s.p + s.len <= in_p + in_n);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_object_text(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && is_ws(p[i]))
        i++;
    return i < n && p[i] == '{';
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The inverse of tg_json_escape() for what it writes: returns the length, or
 * -1 when <p> holds something it never writes. */
static long unescape(const char *p, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        CHECK(c >= 0x20 && c != '"');
        if (c == 0xE2 && i + 2 < n && (unsigned char)p[i + 1] == 0x80)
            CHECK(((unsigned char)p[i + 2] & 0xFE) != 0xA8); /* U+2028/9 never raw */
        if (c != '\\') {
            out[o++] = (char)c;
            continue;
        }
        if (++i >= n)
            return -1;
        switch (p[i]) {
        case '"': out[o++] = '"'; break;
        case '\\': out[o++] = '\\'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'u':
            if (n - i < 5)
                return -1;
            if (memcmp(p + i + 1, "202", 3) == 0 && (p[i + 4] == '8' || p[i + 4] == '9')) {
                memcpy(out + o, p[i + 4] == '8' ? "\xe2\x80\xa8" : "\xe2\x80\xa9", 3);
                o += 3;
            } else if (memcmp(p + i + 1, "00", 2) == 0 && hexv(p[i + 3]) >= 0 &&
                       hexv(p[i + 4]) >= 0) {
                out[o] = (char)(hexv(p[i + 3]) << 4 | hexv(p[i + 4]));
                CHECK((unsigned char)out[o] < 0x20); /* only controls go as \u00XX */
                o++;
            } else {
                return -1;
            }
            i += 4;
            break;
        default:
            return -1;
        }
    }
    return (long)o;
}

static void check_object(const char *p, size_t n, bool valid)
{
    /* An object needs at least 5 bytes per member ("":0,), so this never overflows. */
    int max = (int)(n / 4 + 1);
    tg_json_member_t *m = malloc(sizeof(*m) * (size_t)max);
    CHECK(m);
    int k = tg_json_object(p, n, m, max);
    CHECK((k >= 0) == (valid && is_object_text(p, n)));
    for (int i = 0; i < k; i++) {
        CHECK(borrowed(m[i].key) && borrowed(m[i].value));
        CHECK(m[i].key.p[-1] == '"' && m[i].key.p[m[i].key.len] == '"');
        CHECK(m[i].value.len > 0 && !is_ws(m[i].value.p[0]));
        CHECK(!is_ws(m[i].value.p[m[i].value.len - 1]));
        CHECK(tg_json_valid(m[i].value.p, m[i].value.len));
        CHECK(tg_json_valid(m[i].key.p - 1, m[i].key.len + 2));
    }
    if (k > 0) /* one member fewer than it has: refused, not truncated */
        CHECK(tg_json_object(p, n, m, k - 1) == -1);
    free(m);
}

static void check_cmd(const char *p, size_t n, bool valid)
{
    tg_cmd_t c;
    const char *why = NULL;
    int rc = tg_cmd_parse(p, n, &c, &why);
    if (rc != 0) {
        static const tg_cmd_t zero;
        CHECK(rc == -EINVAL && why && why[0]);
        CHECK(memcmp(&c, &zero, sizeof(c)) == 0);
        if (!valid || !is_object_text(p, n))
            CHECK(strcmp(why, "not a JSON object") == 0);
        return;
    }
    CHECK(valid && is_object_text(p, n));
    CHECK(c.op >= TG_CMD_SUB && c.op <= TG_CMD_CALL);
    CHECK(borrowed(c.id) && borrowed(c.ch) && borrowed(c.data) && borrowed(c.route));
    if (c.id.len) {
        CHECK(tg_json_valid(c.id.p, c.id.len));
        CHECK(c.id.p[0] == '"' || c.id.p[0] == '-' || (c.id.p[0] >= '0' && c.id.p[0] <= '9'));
    }
    CHECK(c.op != TG_CMD_CALL || c.id.len);
    bool has_ch = c.op == TG_CMD_SUB || c.op == TG_CMD_UNSUB || c.op == TG_CMD_PUB;
    CHECK(has_ch ? tg_chan_name_valid(c.ch.p, c.ch.len) : c.ch.len == 0);
    CHECK(!has_ch || (c.ch.p[-1] == '"' && c.ch.p[c.ch.len] == '"'));
    CHECK(c.op == TG_CMD_CALL ? tg_chan_name_valid(c.route.p, c.route.len) : c.route.len == 0);
    bool has_data = c.op == TG_CMD_PUB || c.op == TG_CMD_CALL;
    CHECK(has_data ? tg_json_valid(c.data.p, c.data.len) : c.data.len == 0);
    CHECK(c.op == TG_CMD_SUB || !c.has_from);
}

static void check_scalars(const char *p, size_t n)
{
    char text[64];
    tg_pos_t pos;
    if (tg_pos_parse(p, n, &pos)) { /* one text per position */
        size_t len = tg_pos_format(pos, text);
        CHECK(len == n && memcmp(text, p, n) == 0);
    }
    uint64_t u;
    if (tg_json_uint((tg_str_t){ p, n }, &u)) {
        int len = snprintf(text, sizeof(text), "%" PRIu64, u);
        CHECK((size_t)len == n && memcmp(text, p, n) == 0);
        CHECK(tg_json_valid(p, n));
    }
    tg_str_t s;
    if (tg_json_plain_string((tg_str_t){ p, n }, &s)) {
        CHECK(tg_json_valid(p, n));
        CHECK(s.p == p + 1 && s.len == n - 2 && !memchr(s.p, '\\', s.len));
    }
    if (tg_chan_name_valid(p, n)) {
        CHECK(n >= 1 && n <= TG_CHAN_NAME_MAX);
        CHECK(!memchr(p, '"', n) && !memchr(p, '\\', n));
    }
}

static void check_writers(const char *p, size_t n, bool valid)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_put(&b, "\"", 1);
    tg_json_escape(&b, p, n);
    tg_sbuf_put(&b, "\"", 1);
    CHECK(!b.failed);
    if (valid) /* valid JSON is valid UTF-8, so its escape is a valid string */
        CHECK(tg_json_valid(b.p, b.len));
    char *back = malloc(b.len + 1);
    CHECK(back);
    long len = unescape(b.p + 1, b.len - 2, back);
    CHECK(len == (long)n && memcmp(back, p, n) == 0);
    free(back);
    tg_sbuf_free(&b);

    tg_base64(&b, p, n);
    CHECK(!b.failed && b.len == (n + 2) / 3 * 4);
    char *raw = malloc(b.len / 4 * 3 + 1);
    CHECK(raw);
    CHECK(tg_base64_decode(b.p, b.len, raw) == (long)n && memcmp(raw, p, n) == 0);
    free(raw);
    tg_sbuf_free(&b);

    /* The other way: whatever decodes is the canonical text of its bytes. */
    raw = malloc(n / 4 * 3 + 1);
    CHECK(raw);
    long dn = tg_base64_decode(p, n, raw);
    if (dn >= 0) {
        tg_base64(&b, raw, (size_t)dn);
        CHECK(b.len == n && memcmp(b.p, p, n) == 0);
        tg_sbuf_free(&b);
    }
    free(raw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A private copy, exactly <size> long, so ASan catches any read past it. */
    char *p = malloc(size ? size : 1);
    CHECK(p);
    memcpy(p, data, size);
    in_p = p;
    in_n = size;
    bool valid = tg_json_valid(p, size);
    check_object(p, size, valid);
    check_cmd(p, size, valid);
    check_scalars(p, size);
    check_writers(p, size, valid);
    free(p);
    return 0;
}
