/* core/common.h - the few macros every module uses: assertions, container_of,
 * branch hints, relaxed single-writer counters. No state, any thread. */
#ifndef TG_CORE_COMMON_H
#define TG_CORE_COMMON_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define TG_VERSION "0.1.0"

#define tg_likely(x)   __builtin_expect(!!(x), 1)
#define tg_unlikely(x) __builtin_expect(!!(x), 0)

#define tg_container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#define TG_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Always on: an impossible state is a bug, and running on is worse than stopping. */
#define TG_ASSERT(cond)                                                                  \
    do {                                                                                 \
        if (tg_unlikely(!(cond))) {                                                      \
            fprintf(stderr, "tidegate: assertion failed: %s (%s:%d)\n", #cond, __FILE__, \
                    __LINE__);                                                           \
            abort();                                                                     \
        }                                                                                \
    } while (0)

#ifdef TG_DEBUG
#define TG_DASSERT(cond) TG_ASSERT(cond)
#else
#define TG_DASSERT(cond) ((void)0)
#endif

/* A counter written by one thread and read by any: relaxed atomics cost a plain
 * load and store on x86, and keep readers (/stats) free of data races. */
typedef _Atomic uint64_t tg_counter_t;

static inline void tg_counter_add(tg_counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline void tg_counter_sub(tg_counter_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) - n,
                          memory_order_relaxed);
}

static inline uint64_t tg_counter_get(const tg_counter_t *c)
{
    return atomic_load_explicit((tg_counter_t *)c, memory_order_relaxed);
}

/* A string that is not necessarily NUL-terminated. */
typedef struct tg_str {
    const char *p;
    size_t len;
} tg_str_t;

#define TG_STR(lit) ((tg_str_t){ (lit), sizeof(lit) - 1 })

#endif
