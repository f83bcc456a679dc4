/* core/buf.c - see buf.h. */
#include "core/buf.h"

#include <errno.h>
#include <string.h>

#include "core/common.h"

static tg_chunk_t *chunk_new(tg_pool_t *pool)
{
    tg_chunk_t *c = tg_pool_take(pool);
    if (c) {
        c->next = NULL;
        c->rd = c->wr = 0;
        c->ref = NULL;
    }
    return c;
}

static void chunk_give(tg_pool_t *pool, tg_chunk_t *c)
{
    if (c->ref) {
        tg_shared_unref(c->ref);
        tg_pool_give(pool->refs, c);
    } else {
        tg_pool_give(pool, c);
    }
}

static const char *chunk_bytes(const tg_chunk_t *c)
{
    return c->ref ? c->ref->data : c->data;
}

int tg_buf_append_ref(tg_buf_t *b, tg_pool_t *pool, tg_shared_t *s, size_t off, size_t len)
{
    TG_ASSERT(pool->refs != NULL && off + len <= s->len);
    if (len == 0)
        return 0;
    tg_chunk_t *c = tg_pool_take(pool->refs);
    if (!c)
        return -ENOMEM;
    tg_shared_ref(s);
    c->next = NULL;
    c->ref = s;
    c->rd = (uint32_t)off;
    c->wr = (uint32_t)(off + len);
    if (b->tail)
        b->tail->next = c;
    else
        b->head = c;
    b->tail = c;
    b->len += len;
    return 0;
}

int tg_buf_append(tg_buf_t *b, tg_pool_t *pool, const void *src, size_t n)
{
    size_t cap = tg_chunk_cap(pool);
    size_t room = b->tail && !b->tail->ref ? cap - b->tail->wr : 0;
    /* Take every chunk first, so that a failure leaves <b> as it was. */
    tg_chunk_t *first = NULL, *last = NULL;
    for (size_t need = n > room ? n - room : 0; need > 0; need -= need < cap ? need : cap) {
        tg_chunk_t *c = chunk_new(pool);
        if (!c) {
            while (first) {
                tg_chunk_t *next = first->next;
                chunk_give(pool, first);
                first = next;
            }
            return -ENOMEM;
        }
        if (last)
            last->next = c;
        else
            first = c;
        last = c;
    }
    const char *p = src;
    size_t left = n;
    if (room && left) {
        size_t k = left < room ? left : room;
        memcpy(b->tail->data + b->tail->wr, p, k);
        b->tail->wr += (uint32_t)k;
        p += k;
        left -= k;
    }
    for (tg_chunk_t *c = first; c; c = c->next) {
        size_t k = left < cap ? left : cap;
        memcpy(c->data, p, k);
        c->wr = (uint32_t)k;
        p += k;
        left -= k;
    }
    if (first) {
        if (b->tail)
            b->tail->next = first;
        else
            b->head = first;
        b->tail = last;
    }
    b->len += n;
    return 0;
}

int tg_buf_iov(const tg_buf_t *b, struct iovec *iov, int max)
{
    int n = 0;
    for (tg_chunk_t *c = b->head; c && n < max; c = c->next) {
        if (c->wr == c->rd)
            continue;
        iov[n].iov_base = (char *)chunk_bytes(c) + c->rd;
        iov[n].iov_len = c->wr - c->rd;
        n++;
    }
    return n;
}

void tg_buf_consume(tg_buf_t *b, tg_pool_t *pool, size_t n)
{
    TG_ASSERT(n <= b->len);
    b->len -= n;
    while (b->head) {
        tg_chunk_t *c = b->head;
        size_t have = c->wr - c->rd;
        if (n < have) {
            c->rd += (uint32_t)n;
            return;
        }
        n -= have;
        b->head = c->next;
        if (!b->head)
            b->tail = NULL;
        chunk_give(pool, c);
    }
}

void tg_buf_clear(tg_buf_t *b, tg_pool_t *pool)
{
    tg_buf_consume(b, pool, b->len);
}

size_t tg_buf_copy_out(const tg_buf_t *b, size_t off, void *dst, size_t n)
{
    char *out = dst;
    size_t done = 0;
    for (tg_chunk_t *c = b->head; c && done < n; c = c->next) {
        size_t have = c->wr - c->rd;
        if (off >= have) {
            off -= have;
            continue;
        }
        size_t k = have - off;
        if (k > n - done)
            k = n - done;
        memcpy(out + done, chunk_bytes(c) + c->rd + off, k);
        done += k;
        off = 0;
    }
    return done;
}

bool tg_buf_check(const tg_buf_t *b)
{
    size_t len = 0;
    const tg_chunk_t *last = NULL;
    for (const tg_chunk_t *c = b->head; c; c = c->next) {
        if (c->rd > c->wr || (c->ref && c->wr > c->ref->len))
            return false;
        len += c->wr - c->rd;
        last = c;
    }
    if (last != b->tail || len != b->len)
        return false;
    return b->len > 0 || b->head == NULL;
}
