/* net/ws.c - see ws.h.
 *
 * Reader states, named by the fields of tg_ws_reader_t:
 *
 *   HEADER (left == 0) --2 bytes: check_start--> --extended length: check_length-->
 *          --mask key: frame begins--> PAYLOAD (left > 0) --last byte--> FRAME END
 *   HEADER --a frame of 0 bytes--> FRAME END
 *   FRAME END --control frame--> TG_WS_CONTROL, back to HEADER
 *             --data frame, FIN--> TG_WS_MESSAGE, back to HEADER (msg_opcode = 0)
 *             --data frame, no FIN--> HEADER (msg_opcode stays: a message is in progress)
 *   any check failing --> TG_WS_ERROR; the reader is then done with.
 *
 * Every check runs as soon as the bytes it needs have arrived, never later: a
 * bad first byte fails before the length, a length past the limit before the
 * mask key, a bad UTF-8 byte before the rest of its frame. */
#include "net/ws.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/sha.h>

/* ---- handshake ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static bool is_b64(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '+' || c == '/';
}

/* Base64 (RFC 4648 4, padded) of <n> bytes into <out>, NUL-terminated. */
static void b64_encode(const uint8_t *in, size_t n, char *out)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        *out++ = b64_alphabet[v >> 18];
        *out++ = b64_alphabet[(v >> 12) & 63];
        *out++ = i + 1 < n ? b64_alphabet[(v >> 6) & 63] : '=';
        *out++ = i + 2 < n ? b64_alphabet[v & 63] : '=';
    }
    *out = '\0';
}

bool tg_ws_key_valid(const char *key, size_t len)
{
    /* 16 bytes are 128 bits: 21 characters of 6 bits, a 22nd holding the last
     * 2 bits, then "==" for the missing third byte of the last group. */
    if (len != 24 || key[22] != '=' || key[23] != '=')
        return false;
    for (size_t i = 0; i < 22; i++)
        if (!is_b64(key[i]))
            return false;
    return true;
}

void tg_ws_accept_key(const char *key, size_t len, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"; /* RFC 6455 1.3 */
    uint8_t buf[64 + sizeof(guid) - 1];
    uint8_t md[SHA_DIGEST_LENGTH];
    TG_ASSERT(len <= 64);
    memcpy(buf, key, len);
    memcpy(buf + len, guid, sizeof(guid) - 1);
    SHA1(buf, len + sizeof(guid) - 1, md);
    b64_encode(md, sizeof(md), out);
}

/* ---- Sec-WebSocket-Extensions ----
 * RFC 6455 9.1: extension-list = 1#( token *( ";" token [ "=" (token | quoted-string) ] ) ),
 * with token and quoted-string from RFC 7230 3.2.6, optional whitespace around
 * every separator, and empty list elements tolerated (RFC 7230 7). */

struct lex {
    const char *p;
    const char *end;
};

#define VALUE_MAX 8 /* longer values are no window size: kept only as a length */

struct value {
    bool   present;
    size_t len;
    char   s[VALUE_MAX];
};

static bool is_tchar(unsigned char c)
{
    return c > 0x20 && c < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

static void skip_ows(struct lex *lx)
{
    while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t'))
        lx->p++;
}

static bool at(const struct lex *lx, char c)
{
    return lx->p < lx->end && *lx->p == c;
}

static bool lex_token(struct lex *lx, tg_str_t *tok)
{
    tok->p = lx->p;
    while (lx->p < lx->end && is_tchar((unsigned char)*lx->p))
        lx->p++;
    tok->len = (size_t)(lx->p - tok->p);
    return tok->len > 0;
}

static void value_add(struct value *v, char c)
{
    if (v->len < VALUE_MAX)
        v->s[v->len] = c;
    v->len++;
}

/* A token or a quoted-string, unescaped into <v>. False on a syntax error. */
static bool lex_value(struct lex *lx, struct value *v)
{
    v->present = true;
    v->len = 0;
    if (!at(lx, '"')) {
        tg_str_t tok;
        if (!lex_token(lx, &tok))
            return false;
        for (size_t i = 0; i < tok.len; i++)
            value_add(v, tok.p[i]);
        return true;
    }
    lx->p++;
    while (lx->p < lx->end) {
        unsigned char c = (unsigned char)*lx->p++;
        if (c == '"')
            return true;
        if (c == '\\') { /* quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text ) */
            if (lx->p == lx->end)
                return false;
            c = (unsigned char)*lx->p++;
            if (c != '\t' && (c < 0x20 || c == 0x7f))
                return false;
        } else if (c != '\t' && (c < 0x20 || c == 0x7f)) { /* qdtext */
            return false;
        }
        value_add(v, (char)c);
    }
    return false; /* no closing quote */
}

static bool name_is(tg_str_t name, const char *lit)
{
    /* Tokens compare case-insensitively, as HTTP parameter names do. */
    size_t n = strlen(lit);
    return name.len == n && strncasecmp(name.p, lit, n) == 0;
}

/* 8..15 written without leading zeros (RFC 7692 7.1.2.1), else 0. A quoted
 * value counts once unescaped (RFC 7692 7.1). */
static int window_bits(const struct value *v)
{
    if (v->len == 1 && v->s[0] >= '8' && v->s[0] <= '9')
        return v->s[0] - '0';
    if (v->len == 2 && v->s[0] == '1' && v->s[1] >= '0' && v->s[1] <= '5')
        return 10 + (v->s[1] - '0');
    return 0;
}

/* One extension offer, judged as a permessage-deflate offer. */
struct offer {
    bool    usable;      /* every parameter known, valid and given once */
    uint8_t seen;        /* PARAM_* bits */
    uint8_t server_bits; /* server_max_window_bits, 0 when absent */
    uint8_t client_bits; /* client_max_window_bits, 15 when absent or without value */
};

enum {
    PARAM_SERVER_NCT = 1,
    PARAM_CLIENT_NCT = 2,
    PARAM_SERVER_BITS = 4,
    PARAM_CLIENT_BITS = 8,
};

static void offer_param(struct offer *o, tg_str_t name, const struct value *v)
{
    uint8_t bit;
    if (name_is(name, "server_no_context_takeover"))
        bit = PARAM_SERVER_NCT;
    else if (name_is(name, "client_no_context_takeover"))
        bit = PARAM_CLIENT_NCT;
    else if (name_is(name, "server_max_window_bits"))
        bit = PARAM_SERVER_BITS;
    else if (name_is(name, "client_max_window_bits"))
        bit = PARAM_CLIENT_BITS;
    else
        bit = 0;
    /* RFC 7692 7.1: an unknown parameter, a repeated one or a bad value
     * makes the offer one to decline. */
    if (bit == 0 || (o->seen & bit)) {
        o->usable = false;
        return;
    }
    o->seen |= bit;
    int bits = v->present ? window_bits(v) : 0;
    switch (bit) {
    case PARAM_SERVER_NCT:
    case PARAM_CLIENT_NCT:
        if (v->present)
            o->usable = false;
        break;
    case PARAM_SERVER_BITS:
        /* The value is required. 8 cannot be honoured: zlib refuses a raw
         * deflate window of 256 bytes, and RFC 7692 7.1.2.1 forbids a larger
         * one, so such an offer is declined. */
        if (bits < 9)
            o->usable = false;
        else
            o->server_bits = (uint8_t)bits;
        break;
    case PARAM_CLIENT_BITS:
        if (v->present && bits == 0)
            o->usable = false;
        else if (bits)
            o->client_bits = (uint8_t)bits;
        break;
    }
}

tg_ws_deflate_offer_t tg_ws_deflate_parse(const char *value, size_t len,
                                          uint8_t *server_window_bits)
{
    const tg_ws_deflate_offer_t none = { .accepted = false, .client_max_window_bits = 15 };
    tg_ws_deflate_offer_t pick = none;
    struct lex lx = { value, value + len };
    *server_window_bits = 15;
    /* The whole value is read even after a pick: a syntax error anywhere
     * means the header cannot be trusted, and the answer is no deflate. */
    for (;;) {
        skip_ows(&lx);
        if (lx.p == lx.end)
            break;
        if (at(&lx, ',')) {
            lx.p++;
            continue;
        }
        tg_str_t name;
        if (!lex_token(&lx, &name))
            return none;
        struct offer o = { .usable = true, .client_bits = 15 };
        skip_ows(&lx);
        while (at(&lx, ';')) {
            lx.p++;
            skip_ows(&lx);
            tg_str_t pname;
            struct value v = { .present = false };
            if (!lex_token(&lx, &pname))
                return none;
            skip_ows(&lx);
            if (at(&lx, '=')) {
                lx.p++;
                skip_ows(&lx);
                if (!lex_value(&lx, &v))
                    return none;
                skip_ows(&lx);
            }
            offer_param(&o, pname, &v);
        }
        if (lx.p < lx.end && !at(&lx, ','))
            return none;
        if (!pick.accepted && o.usable && name_is(name, "permessage-deflate")) {
            pick.accepted = true;
            pick.client_max_window_bits = o.client_bits;
            pick.server_max_window_bits = o.server_bits;
        }
    }
    if (pick.accepted && pick.server_max_window_bits)
        *server_window_bits = pick.server_max_window_bits;
    return pick;
}

size_t tg_ws_deflate_response(const tg_ws_deflate_offer_t *offer, uint8_t server_window_bits,
                              char *out, size_t cap)
{
    if (!offer->accepted)
        return 0;
    TG_ASSERT(server_window_bits >= 9 && server_window_bits <= 15);
    /* Both no_context_takeover parameters always (RFC 7692 7.1.1.1 and
     * 7.1.1.2 let the server add them): every message then stands alone, which
     * is what lets one zlib state per loop serve every connection. */
    int n;
    if (offer->server_max_window_bits || server_window_bits < 15)
        n = snprintf(out, cap,
                     "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover; server_max_window_bits=%u\r\n",
                     (unsigned)server_window_bits);
    else
        n = snprintf(out, cap,
                     "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
                     "client_no_context_takeover\r\n");
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ---- UTF-8 ----
 * A DFA after Bjoern Hoehrmann's design: bytes map to 12 classes, states are
 * multiples of 12 so that state + class indexes the transition table. Only
 * shortest forms of U+0000..U+D7FF and U+E000..U+10FFFF reach ACCEPT: the
 * second byte's class is restricted after E0 (overlongs), ED (surrogates), F0
 * (overlongs) and F4 (past U+10FFFF), and C0, C1, F5..FF never lead. */

enum {
    C_ASCII,  /* 00..7F */
    C_CONT1,  /* 80..8F */
    C_CONT2,  /* 90..9F */
    C_CONT3,  /* A0..BF */
    C_LEAD2,  /* C2..DF */
    C_E0,     /* E0: second byte A0..BF */
    C_LEAD3,  /* E1..EC, EE, EF */
    C_ED,     /* ED: second byte 80..9F */
    C_F0,     /* F0: second byte 90..BF */
    C_LEAD4,  /* F1..F3 */
    C_F4,     /* F4: second byte 80..8F */
    C_BAD,    /* C0, C1, F5..FF */
};

enum {
    S_ACCEPT = 0,
    S_REJECT = 12,
    S_TAIL1 = 24, /* one continuation byte to go */
    S_TAIL2 = 36, /* two to go */
    S_E0 = 48,    /* after E0 */
    S_ED = 60,    /* after ED */
    S_TAIL3 = 72, /* three to go */
    S_F0 = 84,    /* after F0 */
    S_F4 = 96,    /* after F4 */
};

/* clang-format off */
static const uint8_t utf8_class[256] = {
    /* 00..7F */
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    /* 80..8F, 90..9F */
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2,
    /* A0..BF */
    3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3,
    /* C0..DF */
    11, 11, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4,
    /* E0..EF */
    5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 7, 6, 6,
    /* F0..FF */
    8, 9, 9, 9, 10, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11, 11,
};

/* Next state, at [state + class]; 12 = S_REJECT. */
static const uint8_t utf8_next[108] = {
    /*         ASC CO1 CO2 CO3 LD2 E0  LD3 ED  F0  LD4 F4  BAD */
    /* ACC */  0,  12, 12, 12, 24, 48, 36, 60, 84, 72, 96, 12,
    /* REJ */  12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    /* T1 */   12, 0,  0,  0,  12, 12, 12, 12, 12, 12, 12, 12,
    /* T2 */   12, 24, 24, 24, 12, 12, 12, 12, 12, 12, 12, 12,
    /* E0 */   12, 12, 12, 24, 12, 12, 12, 12, 12, 12, 12, 12,
    /* ED */   12, 24, 24, 12, 12, 12, 12, 12, 12, 12, 12, 12,
    /* T3 */   12, 36, 36, 36, 12, 12, 12, 12, 12, 12, 12, 12,
    /* F0 */   12, 12, 36, 36, 12, 12, 12, 12, 12, 12, 12, 12,
    /* F4 */   12, 36, 12, 12, 12, 12, 12, 12, 12, 12, 12, 12,
};
/* clang-format on */

uint32_t tg_utf8_step(uint32_t state, const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        if (state == S_ACCEPT) {
            /* Text is mostly ASCII: skip it 8 bytes at a time. */
            while (n - i >= 8) {
                uint64_t w;
                memcpy(&w, p + i, 8);
                if (w & UINT64_C(0x8080808080808080))
                    break;
                i += 8;
            }
            if (i == n)
                break;
        }
        state = utf8_next[state + utf8_class[p[i++]]];
        if (state == S_REJECT)
            break; /* absorbing: nothing after it matters */
    }
    return state;
}

bool tg_utf8_valid(const uint8_t *p, size_t n)
{
    return tg_utf8_step(TG_UTF8_ACCEPT, p, n) == TG_UTF8_ACCEPT;
}

/* ---- buffer spans: writing straight into a tg_buf_t's chunks ---- */

/* Where the next bytes of <b> may go: the free room of its tail chunk (unless
 * that refers to a shared block), or a new chunk from <pool>, linked in only if
 * span_close() puts bytes in it (an empty buffer must hold no chunk). NULL
 * when memory is out. Writing in place saves tg_buf_append's extra copy. */
static uint8_t *span_open(tg_buf_t *b, tg_pool_t *pool, tg_chunk_t **c, size_t *room)
{
    size_t cap = tg_chunk_cap(pool);
    tg_chunk_t *t = b->tail;
    if (t && !t->ref && t->wr < cap) {
        *c = t;
        *room = cap - t->wr;
        return (uint8_t *)t->data + t->wr;
    }
    t = tg_pool_take(pool);
    if (!t)
        return NULL;
    t->next = NULL;
    t->rd = t->wr = 0;
    t->ref = NULL;
    *c = t;
    *room = cap;
    return (uint8_t *)t->data;
}

/* Commits the first <k> bytes written to the span of <c>. */
static void span_close(tg_buf_t *b, tg_pool_t *pool, tg_chunk_t *c, size_t k)
{
    if (c != b->tail) {
        if (k == 0) {
            tg_pool_give(pool, c);
            return;
        }
        if (b->tail)
            b->tail->next = c;
        else
            b->head = c;
        b->tail = c;
    }
    c->wr += (uint32_t)k;
    b->len += k;
}

/* ---- reading ---- */

void tg_ws_reader_init(tg_ws_reader_t *r, uint64_t max_message, bool deflate)
{
    memset(r, 0, sizeof(*r));
    r->max_message = max_message;
    r->deflate = deflate;
}

static bool is_control(uint8_t opcode)
{
    return opcode & 0x8;
}

static tg_ws_result_t fail(tg_ws_event_t *ev, uint16_t code, const char *reason)
{
    ev->close_code = code;
    ev->reason = reason;
    return TG_WS_ERROR;
}

/* Bytes of extended payload length announced by the second header byte. */
static size_t ext_len_size(uint8_t b1)
{
    uint8_t len7 = b1 & 0x7f;
    return len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
}

static uint64_t frame_length(const uint8_t *hdr)
{
    uint64_t len = hdr[1] & 0x7f;
    size_t ext = ext_len_size(hdr[1]);
    if (ext) {
        len = 0;
        for (size_t i = 0; i < ext; i++)
            len = len << 8 | hdr[2 + i];
    }
    return len;
}

/* The first two header bytes (RFC 6455 5.2), checked before anything else
 * arrives. TG_WS_MORE when they pass. */
static tg_ws_result_t check_start(tg_ws_reader_t *r, tg_ws_event_t *ev)
{
    uint8_t b0 = r->hdr[0], b1 = r->hdr[1];
    uint8_t len7 = b1 & 0x7f;
    r->fin = b0 & 0x80;
    r->rsv1 = b0 & 0x40;
    r->opcode = b0 & 0x0f;
    if (b0 & 0x30)
        return fail(ev, TG_WS_CLOSE_PROTOCOL, "reserved bit set");
    switch (r->opcode) {
    case TG_WS_OP_CONT:
        if (r->msg_opcode == 0)
            return fail(ev, TG_WS_CLOSE_PROTOCOL, "continuation outside a message");
        break;
    case TG_WS_OP_TEXT:
    case TG_WS_OP_BINARY:
        if (r->msg_opcode != 0)
            return fail(ev, TG_WS_CLOSE_PROTOCOL, "new message inside a message");
        break;
    case TG_WS_OP_CLOSE:
    case TG_WS_OP_PING:
    case TG_WS_OP_PONG:
        /* RFC 6455 5.5: control frames are never fragmented and carry at most 125 bytes. */
        if (!r->fin)
            return fail(ev, TG_WS_CLOSE_PROTOCOL, "fragmented control frame");
        if (len7 > TG_WS_CONTROL_MAX)
            return fail(ev, TG_WS_CLOSE_PROTOCOL, "control frame over 125 bytes");
        break;
    default:
        return fail(ev, TG_WS_CLOSE_PROTOCOL, "unknown opcode");
    }
    /* RFC 7692 6: RSV1 marks a compressed message, on its first frame only. */
    if (r->rsv1 && (!r->deflate || is_control(r->opcode) || r->opcode == TG_WS_OP_CONT))
        return fail(ev, TG_WS_CLOSE_PROTOCOL, "reserved bit set");
    if (!(b1 & 0x80)) /* RFC 6455 5.1 */
        return fail(ev, TG_WS_CLOSE_PROTOCOL, "unmasked client frame");
    if (!is_control(r->opcode) && len7 < 126 && len7 > r->max_message - r->msg_len)
        return fail(ev, TG_WS_CLOSE_TOO_BIG, "message too big");
    return TG_WS_MORE;
}

/* The extended length, checked as soon as it is complete (before the mask). */
static tg_ws_result_t check_length(tg_ws_reader_t *r, tg_ws_event_t *ev)
{
    uint64_t len = frame_length(r->hdr);
    /* RFC 6455 5.2: the most significant bit MUST be 0, and the minimal
     * number of bytes MUST be used. */
    if (len >> 63)
        return fail(ev, TG_WS_CLOSE_PROTOCOL, "frame length over 2^63");
    if ((r->hdr[1] & 0x7f) == 126 ? len < 126 : len <= 0xffff)
        return fail(ev, TG_WS_CLOSE_PROTOCOL, "frame length not minimally encoded");
    if (len > r->max_message - r->msg_len) /* control frames never get here */
        return fail(ev, TG_WS_CLOSE_TOO_BIG, "message too big");
    return TG_WS_MORE;
}

/* Accumulates header bytes. 1: the header is complete and the frame has
 * begun; 0: all input used, more needed; -1: <ev> holds the error. */
static int read_header(tg_ws_reader_t *r, const uint8_t **p, size_t *avail, tg_ws_event_t *ev)
{
    for (;;) {
        size_t need = r->hdr_len < 2 ? 2 : 2 + ext_len_size(r->hdr[1]) + 4;
        if (r->hdr_len == need)
            break;
        if (*avail == 0)
            return 0;
        size_t k = need - r->hdr_len;
        if (k > *avail)
            k = *avail;
        size_t before = r->hdr_len;
        memcpy(r->hdr + before, *p, k);
        r->hdr_len = (uint8_t)(before + k);
        *p += k;
        *avail -= k;
        if (before < 2) {
            if (r->hdr_len == 2 && check_start(r, ev) != TG_WS_MORE)
                return -1;
            continue;
        }
        size_t ext_end = 2 + ext_len_size(r->hdr[1]);
        if (ext_end > 2 && before < ext_end && r->hdr_len >= ext_end &&
            check_length(r, ev) != TG_WS_MORE)
            return -1;
    }
    uint64_t len = frame_length(r->hdr);
    memcpy(r->mask, r->hdr + r->hdr_len - 4, 4);
    r->mask_pos = 0;
    r->hdr_len = 0;
    r->left = len;
    if (is_control(r->opcode)) {
        r->ctl_len = 0;
        return 1;
    }
    if (r->opcode != TG_WS_OP_CONT) {
        r->msg_opcode = r->opcode;
        r->msg_compressed = r->rsv1;
        r->utf8_state = TG_UTF8_ACCEPT;
    }
    r->msg_len += len;
    return 1;
}

/* Copies <n> bytes to <dst> unmasked (RFC 6455 5.3), the mask being at phase
 * <pos>. Eight bytes at a time: the mask repeats every 4, so a rotated 8-byte
 * copy of it is xored with each word. */
static void unmask_copy(uint8_t *dst, const uint8_t *src, size_t n, const uint8_t mask[4],
                        unsigned pos)
{
    size_t i = 0;
    if (n >= 8) {
        uint8_t m8[8];
        for (unsigned j = 0; j < 8; j++)
            m8[j] = mask[(pos + j) & 3];
        uint64_t m;
        memcpy(&m, m8, 8);
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, src + i, 8);
            w ^= m;
            memcpy(dst + i, &w, 8);
        }
    }
    for (; i < n; i++)
        dst[i] = src[i] ^ mask[(pos + i) & 3];
}

/* Appends <n> payload bytes of a data frame to <msg>, unmasked, checking the
 * UTF-8 of uncompressed text as it goes. */
static tg_ws_result_t append_payload(tg_ws_reader_t *r, const uint8_t *src, size_t n,
                                     tg_buf_t *msg, tg_pool_t *pool, tg_ws_event_t *ev)
{
    bool check = r->msg_opcode == TG_WS_OP_TEXT && !r->msg_compressed;
    unsigned pos = r->mask_pos;
    while (n > 0) {
        tg_chunk_t *c;
        size_t room;
        uint8_t *dst = span_open(msg, pool, &c, &room);
        if (!dst)
            return fail(ev, TG_WS_CLOSE_INTERNAL, "out of memory");
        size_t k = n < room ? n : room;
        unmask_copy(dst, src, k, r->mask, pos);
        span_close(msg, pool, c, k);
        if (check) {
            r->utf8_state = tg_utf8_step(r->utf8_state, dst, k);
            if (r->utf8_state == TG_UTF8_REJECT)
                return fail(ev, TG_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in text");
        }
        pos = (pos + (unsigned)k) & 3;
        src += k;
        n -= k;
    }
    return TG_WS_MORE;
}

static bool close_code_valid(unsigned code)
{
    /* RFC 6455 7.4: 1004 is reserved, 1005, 1006 and 1015 must never be
     * sent, 1012..2999 belong to the protocol and its extensions, 3000..4999
     * to libraries and applications. */
    return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
           (code >= 3000 && code <= 4999);
}

/* A frame's last byte arrived (or it had none). */
static tg_ws_result_t frame_end(tg_ws_reader_t *r, tg_ws_event_t *ev)
{
    if (is_control(r->opcode)) {
        if (r->opcode == TG_WS_OP_CLOSE && r->ctl_len > 0) { /* RFC 6455 5.5.1 */
            if (r->ctl_len < 2)
                return fail(ev, TG_WS_CLOSE_PROTOCOL, "close payload of 1 byte");
            if (!close_code_valid((unsigned)r->ctl[0] << 8 | r->ctl[1]))
                return fail(ev, TG_WS_CLOSE_PROTOCOL, "invalid close code");
            if (!tg_utf8_valid(r->ctl + 2, r->ctl_len - 2u))
                return fail(ev, TG_WS_CLOSE_INVALID_DATA, "invalid UTF-8 in close reason");
        }
        ev->opcode = r->opcode;
        ev->compressed = false;
        ev->control_len = r->ctl_len;
        memcpy(ev->control, r->ctl, r->ctl_len);
        r->ctl_len = 0;
        return TG_WS_CONTROL;
    }
    if (!r->fin)
        return TG_WS_MORE;
    if (r->msg_opcode == TG_WS_OP_TEXT && !r->msg_compressed && r->utf8_state != TG_UTF8_ACCEPT)
        return fail(ev, TG_WS_CLOSE_INVALID_DATA, "truncated UTF-8 in text");
    ev->opcode = r->msg_opcode;
    ev->compressed = r->msg_compressed;
    ev->control_len = 0;
    r->msg_opcode = 0;
    r->msg_compressed = false;
    r->msg_len = 0;
    r->utf8_state = TG_UTF8_ACCEPT;
    return TG_WS_MESSAGE;
}

tg_ws_result_t tg_ws_read(tg_ws_reader_t *r, const char **in, size_t *n, tg_buf_t *msg,
                          tg_pool_t *pool, tg_ws_event_t *ev)
{
    const uint8_t *p = (const uint8_t *)*in;
    size_t avail = *n;
    tg_ws_result_t res;
    for (;;) {
        if (r->left == 0) {
            int rc = read_header(r, &p, &avail, ev);
            if (rc <= 0) {
                res = rc < 0 ? TG_WS_ERROR : TG_WS_MORE;
                break;
            }
        }
        if (r->left > 0) {
            if (avail == 0) {
                res = TG_WS_MORE;
                break;
            }
            size_t k = r->left < avail ? (size_t)r->left : avail;
            if (is_control(r->opcode)) {
                unmask_copy(r->ctl + r->ctl_len, p, k, r->mask, r->mask_pos);
                r->ctl_len = (uint8_t)(r->ctl_len + k);
            } else if (append_payload(r, p, k, msg, pool, ev) == TG_WS_ERROR) {
                res = TG_WS_ERROR;
                break;
            }
            r->mask_pos = (uint8_t)((r->mask_pos + k) & 3);
            r->left -= k;
            p += k;
            avail -= k;
            if (r->left > 0) {
                res = TG_WS_MORE;
                break;
            }
        }
        res = frame_end(r, ev);
        if (res != TG_WS_MORE)
            break;
    }
    *in = (const char *)p;
    *n = avail;
    return res;
}

/* ---- writing ---- */

size_t tg_ws_frame_header(uint8_t out[TG_WS_HEADER_MAX], uint8_t opcode, bool rsv1,
                          uint64_t len)
{
    TG_DASSERT(len >> 63 == 0);
    out[0] = (uint8_t)(0x80 | (rsv1 ? 0x40 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xffff) {
        out[1] = 126;
        out[2] = (uint8_t)(len >> 8);
        out[3] = (uint8_t)len;
        return 4;
    }
    out[1] = 127;
    for (int i = 0; i < 8; i++)
        out[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t tg_ws_close_frame(uint8_t out[2 + TG_WS_CONTROL_MAX], uint16_t code, const char *reason)
{
    if (code == 0)
        return tg_ws_frame_header(out, TG_WS_OP_CLOSE, false, 0);
    size_t rlen = reason ? strlen(reason) : 0;
    if (rlen > TG_WS_CONTROL_MAX - 2) {
        /* Cut where a character starts: the reason must stay UTF-8 (RFC 6455 5.5.1). */
        rlen = TG_WS_CONTROL_MAX - 2;
        while (rlen > 0 && ((uint8_t)reason[rlen] & 0xc0) == 0x80)
            rlen--;
    }
    size_t h = tg_ws_frame_header(out, TG_WS_OP_CLOSE, false, 2 + rlen);
    out[h] = (uint8_t)(code >> 8);
    out[h + 1] = (uint8_t)code;
    if (rlen)
        memcpy(out + h + 2, reason, rlen);
    return h + 2 + rlen;
}

/* ---- permessage-deflate ---- */

static const uint8_t sync_tail[4] = { 0x00, 0x00, 0xff, 0xff };

int tg_ws_zlib_init(tg_ws_zlib_t *z)
{
    memset(z, 0, sizeof(*z));
    if (deflateInit2(&z->deflater, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    z->deflate_bits = 15;
    if (inflateInit2(&z->inflater, -15) != Z_OK) {
        deflateEnd(&z->deflater);
        return -ENOMEM;
    }
    z->ready = true;
    return 0;
}

void tg_ws_zlib_fini(tg_ws_zlib_t *z)
{
    if (!z->ready)
        return;
    if (z->deflate_bits)
        deflateEnd(&z->deflater);
    inflateEnd(&z->inflater);
    z->ready = false;
}

int tg_ws_deflate(tg_ws_zlib_t *z, int window_bits, const void *p, size_t n, tg_buf_t *out,
                  tg_pool_t *pool)
{
    TG_ASSERT(z->ready && window_bits >= 9 && window_bits <= 15);
    z_stream *s = &z->deflater;
    if (window_bits != z->deflate_bits) {
        /* zlib cannot change the window of a stream: another connection
         * negotiated another size, so the deflater is made anew. Rare: most
         * clients never ask for a smaller window. */
        if (z->deflate_bits)
            deflateEnd(s);
        z->deflate_bits = 0;
        memset(s, 0, sizeof(*s));
        if (deflateInit2(s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -window_bits, 8,
                         Z_DEFAULT_STRATEGY) != Z_OK)
            return -ENOMEM;
        z->deflate_bits = window_bits;
    } else {
        deflateReset(s); /* no context takeover: each message alone */
    }
    /* Output goes through a small buffer that always keeps its last 4 bytes
     * back: when deflate is done they are the 00 00 ff ff that RFC 7692 7.2.1
     * drops, wherever the chunk boundaries fall. */
    uint8_t tmp[8192];
    size_t held = 0;
    const uint8_t *src = p;
    size_t left = n;
    do {
        uInt k = left > (1u << 30) ? (1u << 30) : (uInt)left;
        s->next_in = (Bytef *)(uintptr_t)src;
        s->avail_in = k;
        src += k;
        left -= k;
        int flush = left ? Z_NO_FLUSH : Z_SYNC_FLUSH;
        do {
            s->next_out = tmp + held;
            s->avail_out = (uInt)(sizeof(tmp) - held);
            int rc = deflate(s, flush);
            TG_ASSERT(rc == Z_OK || rc == Z_BUF_ERROR);
            size_t have = sizeof(tmp) - s->avail_out;
            if (have > 4) {
                if (tg_buf_append(out, pool, tmp, have - 4) != 0)
                    return -ENOMEM;
                memmove(tmp, tmp + have - 4, 4);
                held = 4;
            } else {
                held = have;
            }
        } while (s->avail_out == 0);
    } while (left);
    TG_DASSERT(held == 4 && memcmp(tmp, sync_tail, 4) == 0);
    return 0;
}

struct inflating {
    z_stream  *s;
    uint64_t   max;
    uint64_t   produced;
    tg_buf_t  *out;
    tg_pool_t *pool;
    bool       ended;   /* the final block was read */
    size_t     nrest;
    uint8_t    rest[5]; /* input after the final block */
};

static int keep_rest(struct inflating *st, const uint8_t *p, size_t n)
{
    if (n > sizeof(st->rest) - st->nrest)
        return -EINVAL;
    memcpy(st->rest + st->nrest, p, n);
    st->nrest += n;
    return 0;
}

/* Inflates the <n> bytes at <p>, output straight into <out>'s chunks. */
static int inflate_piece(struct inflating *st, const uint8_t *p, size_t n)
{
    if (st->ended)
        return keep_rest(st, p, n);
    z_stream *s = st->s;
    TG_DASSERT(n <= UINT_MAX);
    s->next_in = (Bytef *)(uintptr_t)p;
    s->avail_in = (uInt)n;
    for (;;) {
        tg_chunk_t *c;
        size_t room;
        uint8_t *dst = span_open(st->out, st->pool, &c, &room);
        if (!dst)
            return -ENOMEM;
        /* Room for one byte past <max> at most: seeing it is enough to
         * refuse, so a zip bomb costs max + 1 bytes and the CPU to make them. */
        uint64_t allow = st->max - st->produced;
        if (allow < room)
            room = (size_t)allow + 1;
        if (room > UINT_MAX)
            room = UINT_MAX;
        uInt in_before = s->avail_in;
        s->next_out = dst;
        s->avail_out = (uInt)room;
        int rc = inflate(s, Z_NO_FLUSH);
        size_t got = room - s->avail_out;
        span_close(st->out, st->pool, c, got);
        st->produced += got;
        if (st->produced > st->max)
            return -EMSGSIZE;
        if (rc == Z_STREAM_END) {
            st->ended = true;
            return keep_rest(st, s->next_in, s->avail_in);
        }
        if (rc == Z_MEM_ERROR)
            return -ENOMEM;
        if (rc != Z_OK && rc != Z_BUF_ERROR)
            return -EINVAL; /* Z_DATA_ERROR; Z_NEED_DICT cannot happen raw */
        if (s->avail_in == 0 && s->avail_out > 0)
            return 0; /* all input used and all output out */
        if (got == 0 && s->avail_in == in_before)
            return -EINVAL; /* no progress with input and room: never loop */
    }
}

int tg_ws_inflate(tg_ws_zlib_t *z, const tg_buf_t *in, uint64_t max, tg_buf_t *out,
                  tg_pool_t *pool)
{
    TG_ASSERT(z->ready);
    if (in->len == 0)
        return 0; /* a sender's empty message is "00" (RFC 7692 7.2.3.6); nothing is empty too */
    struct inflating st = { .s = &z->inflater, .max = max, .out = out, .pool = pool };
    inflateReset(st.s);
    int rc = 0;
    for (const tg_chunk_t *c = in->head; c && rc == 0; c = c->next) {
        const char *bytes = c->ref ? c->ref->data : c->data; /* as buf.h defines them */
        rc = inflate_piece(&st, (const uint8_t *)bytes + c->rd, c->wr - c->rd);
    }
    if (rc == 0)
        rc = inflate_piece(&st, sync_tail, sizeof(sync_tail));
    if (rc != 0)
        return rc;
    if (st.ended) {
        /* A sender may end with a BFINAL block (RFC 7692 7.2.3.4), and then
         * the only bytes that may follow are the header byte of an empty
         * stored block (0x00) and the 00 00 ff ff appended here. */
        static const uint8_t stored[5] = { 0x00, 0x00, 0x00, 0xff, 0xff };
        bool ok = st.nrest == 0 || (st.nrest == 4 && memcmp(st.rest, sync_tail, 4) == 0) ||
                  (st.nrest == 5 && memcmp(st.rest, stored, 5) == 0);
        return ok ? 0 : -EINVAL;
    }
    /* The appended tail ends an empty stored block, so a whole message leaves
     * inflate between blocks; anywhere else, the message was cut short. */
    return (st.s->data_type & 128) ? 0 : -EINVAL;
}
