/* core/buf.h - byte queues made of chained chunks from a loop's pool.
 * Loop thread only. An empty buffer holds no chunk: chunks are taken when bytes
 * arrive and given back as soon as they are consumed, so an idle connection
 * costs only the 24-byte head embedded in it.
 *
 * A chunk either holds its bytes (taken from the pool) or refers to a range of
 * a shared block (tg_shared_t, a small node from pool->refs): queueing one
 * broadcast frame on many connections copies nothing. */
#ifndef TG_CORE_BUF_H
#define TG_CORE_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "core/pool.h"
#include "core/shared.h"

typedef struct tg_chunk {
    struct tg_chunk    *next;
    uint32_t            rd;     /* first unread byte */
    uint32_t            wr;     /* first free byte (end of the range, for a reference) */
    struct tg_shared   *ref;    /* NULL: bytes in <data>; else bytes in ref->data */
    char                data[]; /* pool block size minus this header */
} tg_chunk_t;

typedef struct tg_buf {
    tg_chunk_t *head;
    tg_chunk_t *tail;
    size_t      len; /* unread bytes */
} tg_buf_t;

#define TG_BUF_INIT ((tg_buf_t){ NULL, NULL, 0 })

static inline bool tg_buf_empty(const tg_buf_t *b)
{
    return b->len == 0;
}

/* Bytes of payload one chunk of <pool> holds. */
static inline size_t tg_chunk_cap(const tg_pool_t *pool)
{
    return pool->size - sizeof(tg_chunk_t);
}

/* Copies <n> bytes to the end of <b>. Returns 0, or -ENOMEM with <b> unchanged. */
int tg_buf_append(tg_buf_t *b, tg_pool_t *pool, const void *src, size_t n);
/* Queues bytes [<off>, <off>+<len>) of <s> without copying them; takes a
 * reference on <s>. Needs pool->refs. Returns 0, or -ENOMEM with <b> unchanged. */
int tg_buf_append_ref(tg_buf_t *b, tg_pool_t *pool, tg_shared_t *s, size_t off, size_t len);

/* Fills up to <max> iovecs with the unread bytes, in order; returns how many. */
int tg_buf_iov(const tg_buf_t *b, struct iovec *iov, int max);
/* Drops the first <n> unread bytes, giving emptied chunks back to <pool> (and
 * references to pool->refs, dropping the reference they held). */
void tg_buf_consume(tg_buf_t *b, tg_pool_t *pool, size_t n);
/* Drops everything; <b> then holds no chunk. */
void tg_buf_clear(tg_buf_t *b, tg_pool_t *pool);
/* Copies up to <n> unread bytes starting <off> bytes in to <dst>; returns how many. */
size_t tg_buf_copy_out(const tg_buf_t *b, size_t off, void *dst, size_t n);

/* Introspection: len matches the chunks, tail is last (for tests). */
bool tg_buf_check(const tg_buf_t *b);

#endif
