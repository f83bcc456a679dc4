/* net/json.h - the little JSON tidegate needs: strict validation (RFC 8259) to
 * classify payloads, a flat object scanner for client commands, and writers
 * for string escapes and base64. No allocation, no global state; any thread.
 * Nesting is limited to TG_JSON_DEPTH so that validation costs bounded stack. */
#ifndef TG_NET_JSON_H
#define TG_NET_JSON_H

#include <stdbool.h>
#include <stddef.h>

#include "core/common.h"
#include "core/sbuf.h"

#define TG_JSON_DEPTH 64

/* Whether <p> is exactly one JSON value (surrounding whitespace allowed), with
 * valid UTF-8 in strings and at most TG_JSON_DEPTH levels of nesting. */
bool tg_json_valid(const char *p, size_t n);

typedef struct tg_json_member {
    tg_str_t key;   /* raw, between the quotes (escapes left as they are) */
    tg_str_t value; /* raw JSON text of the value (a string keeps its quotes) */
} tg_json_member_t;

/* Splits a JSON object into its top-level members, in order, each value left
 * raw. Returns how many (up to <max>), or -1 when <p> is not a valid object or
 * has more than <max> members. Keys are compared raw: a key with escapes never
 * matches a plain name, which is what a command parser wants. */
int tg_json_object(const char *p, size_t n, tg_json_member_t *out, int max);

/* Splits a JSON array into its elements, each raw; returns how many (up to
 * <max>), or -1 when <p> is not a valid array or has more than <max>. */
int tg_json_array(const char *p, size_t n, tg_str_t *out, int max);

/* If <v> is a JSON string without escapes, sets <*out> to its contents and
 * returns true. */
bool tg_json_plain_string(tg_str_t v, tg_str_t *out);
/* If <v> is a JSON integer in 0..UINT64_MAX, sets <*out>. */
bool tg_json_uint(tg_str_t v, uint64_t *out);

/* Appends <n> bytes of UTF-8 text as the inside of a JSON string (no quotes):
 * quotes, backslashes and control characters escaped, and U+2028/U+2029 too
 * (line ends in JavaScript); other bytes are copied as they are. */
void tg_json_escape(tg_sbuf_t *b, const char *p, size_t n);
/* Appends the standard base64 (RFC 4648, with padding) of <n> bytes. */
void tg_base64(tg_sbuf_t *b, const void *p, size_t n);
/* Decodes standard base64 with padding into <out> (at least n*3/4 bytes);
 * returns the decoded length or -1 when <p> is not valid base64 (whitespace,
 * missing padding and non-zero bits under the padding included). */
long tg_base64_decode(const char *p, size_t n, void *out);

#endif
