/* net/json.c - see json.h.
 *
 * One scanner serves validation and object splitting: scan_value() walks one
 * value and returns the index just past it, or BAD. It is iterative: the open
 * containers live in a 64-bit mask (bit d set: level d is an object), which is
 * exactly TG_JSON_DEPTH levels, so deep input costs no stack and is refused at
 * the limit. Every byte is looked at a bounded number of times: linear time. */
#include "net/json.h"

#include <string.h>

#define BAD SIZE_MAX

_Static_assert(TG_JSON_DEPTH <= 64, "the container stack is one uint64_t");

static size_t skip_ws(const char *p, size_t n, size_t i)
{
    /* RFC 8259 2: exactly these four; no form feed, no BOM, no NBSP. */
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

static int hex_val(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The four hex digits at <p>[i..i+3] (bounds checked by the caller). */
static long hex4(const char *p, size_t i)
{
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int d = hex_val((unsigned char)p[i + k]);
        if (d < 0)
            return -1;
        v = v << 4 | d;
    }
    return v;
}

/* Length of the UTF-8 sequence at <s> (<avail> bytes readable, s[0] >= 0x80),
 * or 0 when it is not well formed: RFC 3629 4, which rules out overlong forms,
 * encoded surrogates (ED A0..BF) and anything above U+10FFFF (F4 90.. and F5..). */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* range of the second byte */
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else
        return 0; /* 80..C1 (continuation or overlong lead), F5..FF */
    if (avail < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < len; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* <p>[i] is the opening quote. Returns the index past the closing quote. */
static size_t scan_string(const char *p, size_t n, size_t i)
{
    i++;
    while (i < n) {
        unsigned char c = (unsigned char)p[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return BAD; /* RFC 8259 7: control characters must be escaped */
        if (c >= 0x80) {
            size_t len = utf8_len((const unsigned char *)p + i, n - i);
            if (len == 0)
                return BAD;
            i += len;
            continue;
        }
        if (c != '\\') {
            i++;
            continue;
        }
        if (i + 1 >= n)
            return BAD;
        switch (p[i + 1]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            i += 2;
            continue;
        case 'u':
            break;
        default:
            return BAD;
        }
        if (n - i < 6)
            return BAD;
        long u = hex4(p, i + 2);
        if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
            return BAD; /* a low surrogate with no high one before it */
        i += 6;
        if (u >= 0xD800 && u <= 0xDBFF) {
            /* A high surrogate stands for nothing alone: the next escape must be
             * its low half, or the string does not encode Unicode text. */
            if (n - i < 6 || p[i] != '\\' || p[i + 1] != 'u')
                return BAD;
            long lo = hex4(p, i + 2);
            if (lo < 0xDC00 || lo > 0xDFFF)
                return BAD;
            i += 6;
        }
    }
    return BAD;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 8259 6: -? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)? */
static size_t scan_number(const char *p, size_t n, size_t i)
{
    if (i < n && p[i] == '-')
        i++;
    if (i >= n || !is_digit(p[i]))
        return BAD;
    if (p[i] == '0')
        i++; /* a following digit is then a syntax error at the caller */
    else
        while (i < n && is_digit(p[i]))
            i++;
    if (i < n && p[i] == '.') {
        i++;
        if (i >= n || !is_digit(p[i]))
            return BAD;
        while (i < n && is_digit(p[i]))
            i++;
    }
    if (i < n && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < n && (p[i] == '+' || p[i] == '-'))
            i++;
        if (i >= n || !is_digit(p[i]))
            return BAD;
        while (i < n && is_digit(p[i]))
            i++;
    }
    return i;
}

static size_t scan_literal(const char *p, size_t n, size_t i, const char *lit, size_t len)
{
    if (n - i < len || memcmp(p + i, lit, len) != 0)
        return BAD;
    return i + len;
}

/* A scalar (string, number, literal) at <p>[i], which is not whitespace. */
static size_t scan_scalar(const char *p, size_t n, size_t i)
{
    switch (p[i]) {
    case '"':
        return scan_string(p, n, i);
    case 't':
        return scan_literal(p, n, i, "true", 4);
    case 'f':
        return scan_literal(p, n, i, "false", 5);
    case 'n':
        return scan_literal(p, n, i, "null", 4);
    default:
        return scan_number(p, n, i);
    }
}

/* `ws string ws :` from <i>; returns the index past the colon and, when <key>
 * is not NULL, sets it to the text between the quotes. */
static size_t scan_key(const char *p, size_t n, size_t i, tg_str_t *key)
{
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != '"')
        return BAD;
    size_t start = i + 1;
    i = scan_string(p, n, i);
    if (i == BAD)
        return BAD;
    if (key)
        *key = (tg_str_t){ p + start, i - 1 - start };
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ':')
        return BAD;
    return i + 1;
}

/* One value starting at <i> (leading whitespace allowed), nested at most
 * <max_depth> levels. Returns the index just past it (trailing whitespace not
 * consumed), or BAD. */
static size_t scan_value(const char *p, size_t n, size_t i, int max_depth)
{
    uint64_t objects = 0; /* bit d: the container at depth d+1 is an object */
    int depth = 0;
    for (;;) {
        /* A value is expected at i. */
        i = skip_ws(p, n, i);
        if (i >= n)
            return BAD;
        char c = p[i];
        if (c == '{' || c == '[') {
            if (depth >= max_depth)
                return BAD;
            if (c == '{')
                objects |= UINT64_C(1) << depth;
            else
                objects &= ~(UINT64_C(1) << depth);
            depth++;
            i = skip_ws(p, n, i + 1);
            if (i < n && p[i] == (c == '{' ? '}' : ']')) {
                i++;
                depth--;
            } else if (c == '{') {
                if ((i = scan_key(p, n, i, NULL)) == BAD)
                    return BAD;
                continue;
            } else {
                continue;
            }
        } else if ((i = scan_scalar(p, n, i)) == BAD) {
            return BAD;
        }
        /* A value ended at i: close containers until one wants another value. */
        for (;;) {
            if (depth == 0)
                return i;
            bool obj = objects >> (depth - 1) & 1;
            i = skip_ws(p, n, i);
            if (i >= n)
                return BAD;
            if (p[i] == ',') {
                i++;
                if (obj && (i = scan_key(p, n, i, NULL)) == BAD)
                    return BAD;
                break;
            }
            if (p[i] != (obj ? '}' : ']'))
                return BAD;
            i++;
            depth--;
        }
    }
}

bool tg_json_valid(const char *p, size_t n)
{
    size_t i = scan_value(p, n, 0, TG_JSON_DEPTH);
    return i != BAD && skip_ws(p, n, i) == n;
}

int tg_json_object(const char *p, size_t n, tg_json_member_t *out, int max)
{
    size_t i = skip_ws(p, n, 0);
    if (i >= n || p[i] != '{')
        return -1;
    i = skip_ws(p, n, i + 1);
    int count = 0;
    if (i < n && p[i] == '}') {
        i++;
    } else {
        for (;;) {
            /* The object is level 1, so its values may nest one level less. */
            tg_str_t key;
            size_t v = scan_key(p, n, i, &key);
            if (v == BAD)
                return -1;
            v = skip_ws(p, n, v);
            size_t end = scan_value(p, n, v, TG_JSON_DEPTH - 1);
            if (end == BAD || count >= max)
                return -1;
            out[count].key = key;
            out[count].value = (tg_str_t){ p + v, end - v };
            count++;
            i = skip_ws(p, n, end);
            if (i < n && p[i] == ',') {
                i++;
                continue;
            }
            if (i < n && p[i] == '}') {
                i++;
                break;
            }
            return -1;
        }
    }
    return skip_ws(p, n, i) == n ? count : -1;
}

int tg_json_array(const char *p, size_t n, tg_str_t *out, int max)
{
    size_t i = skip_ws(p, n, 0);
    if (i >= n || p[i] != '[')
        return -1;
    i = skip_ws(p, n, i + 1);
    int count = 0;
    if (i < n && p[i] == ']') {
        i++;
    } else {
        for (;;) {
            size_t end = scan_value(p, n, i, TG_JSON_DEPTH - 1);
            if (end == BAD || count >= max)
                return -1;
            out[count++] = (tg_str_t){ p + i, end - i };
            i = skip_ws(p, n, end);
            if (i < n && p[i] == ',') {
                i = skip_ws(p, n, i + 1);
                continue;
            }
            if (i < n && p[i] == ']') {
                i++;
                break;
            }
            return -1;
        }
    }
    return skip_ws(p, n, i) == n ? count : -1;
}

bool tg_json_plain_string(tg_str_t v, tg_str_t *out)
{
    if (v.len < 2 || v.p[0] != '"' || scan_string(v.p, v.len, 0) != v.len ||
        memchr(v.p, '\\', v.len))
        return false;
    *out = (tg_str_t){ v.p + 1, v.len - 2 };
    return true;
}

bool tg_json_uint(tg_str_t v, uint64_t *out)
{
    if (v.len == 0 || (v.p[0] == '0' && v.len > 1))
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v.len; i++) {
        if (!is_digit(v.p[i]))
            return false;
        unsigned d = (unsigned)(v.p[i] - '0');
        if (x > (UINT64_MAX - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

void tg_json_escape(tg_sbuf_t *b, const char *p, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0; /* start of the bytes not yet written */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        char esc[7] = { '\\', 0 };
        size_t len = 2, skip = 1;
        if (c == '"' || c == '\\') {
            esc[1] = (char)c;
        } else if (c < 0x20) {
            switch (c) {
            case '\n': esc[1] = 'n'; break;
            case '\r': esc[1] = 'r'; break;
            case '\t': esc[1] = 't'; break;
            case '\b': esc[1] = 'b'; break;
            case '\f': esc[1] = 'f'; break;
            default:
                memcpy(esc + 1, "u00", 3);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                len = 6;
            }
        } else if (c == 0xE2 && n - i >= 3 && (unsigned char)p[i + 1] == 0x80 &&
                   ((unsigned char)p[i + 2] & 0xFE) == 0xA8) {
            /* U+2028 and U+2029 are valid in JSON strings but end a line in
             * JavaScript before ES2019: escaped, the text is safe in a script. */
            memcpy(esc + 1, (unsigned char)p[i + 2] == 0xA8 ? "u2028" : "u2029", 5);
            len = 6;
            skip = 3;
        } else {
            continue;
        }
        tg_sbuf_put(b, p + run, i - run);
        tg_sbuf_put(b, esc, len);
        i += skip - 1;
        run = i + 1;
    }
    tg_sbuf_put(b, p + run, n - run);
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

void tg_base64(tg_sbuf_t *b, const void *p, size_t n)
{
    const unsigned char *s = p;
    char out[256]; /* a multiple of 4: whole quads per flush */
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        size_t left = n - i;
        uint32_t v = (uint32_t)s[i] << 16;
        if (left > 1)
            v |= (uint32_t)s[i + 1] << 8;
        if (left > 2)
            v |= s[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[v >> 12 & 63];
        out[o++] = left > 1 ? b64[v >> 6 & 63] : '=';
        out[o++] = left > 2 ? b64[v & 63] : '=';
        if (o == sizeof(out)) {
            tg_sbuf_put(b, out, o);
            o = 0;
        }
    }
    if (o > 0 || n == 0)
        tg_sbuf_put(b, out, o); /* n == 0: still terminates an empty buffer */
}

static int b64_val(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long tg_base64_decode(const char *p, size_t n, void *out)
{
    unsigned char *d = out;
    size_t o = 0;
    if (n % 4 != 0)
        return -1; /* padding is required */
    for (size_t i = 0; i < n; i += 4) {
        bool last = i + 4 == n;
        int pad = 0;
        if (last && p[i + 3] == '=')
            pad = p[i + 2] == '=' ? 2 : 1;
        uint32_t v = 0;
        for (int k = 0; k < 4; k++) {
            int x = k < 4 - pad ? b64_val((unsigned char)p[i + k]) : 0;
            if (x < 0)
                return -1; /* outside the alphabet, or '=' before the end */
            v = v << 6 | (uint32_t)x;
        }
        /* RFC 4648 3.5: the bits under the padding must be zero. Refusing them
         * keeps one text per byte string, so encode(decode(t)) == t. */
        if ((pad == 1 && (v & 0xFF)) || (pad == 2 && (v & 0xFFFF)))
            return -1;
        d[o++] = (unsigned char)(v >> 16);
        if (pad < 2)
            d[o++] = (unsigned char)(v >> 8);
        if (pad < 1)
            d[o++] = (unsigned char)v;
    }
    return (long)o;
}
