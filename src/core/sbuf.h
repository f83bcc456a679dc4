/* core/sbuf.h - a growable text buffer for building replies that are not on a
 * hot path (/stats, /metrics, error bodies). Any thread; owned by its builder.
 * Out of memory makes it "failed" rather than failing each call: check once. */
#ifndef TG_CORE_SBUF_H
#define TG_CORE_SBUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct tg_sbuf {
    char  *p;
    size_t len;
    size_t cap;
    bool   failed; /* an append ran out of memory; the text is incomplete */
} tg_sbuf_t;

#define TG_SBUF_INIT ((tg_sbuf_t){ NULL, 0, 0, false })

void tg_sbuf_printf(tg_sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void tg_sbuf_put(tg_sbuf_t *b, const char *s, size_t n);
void tg_sbuf_free(tg_sbuf_t *b);

#endif
