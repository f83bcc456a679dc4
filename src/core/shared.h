/* core/shared.h - an immutable block of bytes with a reference count: one
 * encoded frame or message referenced by every connection that still has to
 * send it, so that a broadcast is never copied per subscriber. Any thread may
 * take or drop a reference (atomic); the bytes never change after creation. */
#ifndef TG_CORE_SHARED_H
#define TG_CORE_SHARED_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tg_shared tg_shared_t;
typedef void tg_shared_release_cb(tg_shared_t *s);

struct tg_shared {
    atomic_uint           refs;
    uint32_t              len;     /* bytes in <data> */
    tg_shared_release_cb *release; /* frees the block when the last reference goes; NULL: free() */
    char                  data[];
};

/* A block of <len> bytes (contents for the caller to fill before sharing), one
 * reference held by the caller; NULL when memory is out. */
tg_shared_t *tg_shared_new(size_t len);

static inline void tg_shared_ref(tg_shared_t *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

/* Drops a reference; the last one releases the block. NULL is a no-op. */
void tg_shared_unref(tg_shared_t *s);

#endif
