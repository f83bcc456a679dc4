/* tests/unit/rng.h - a small deterministic generator (splitmix64) for the unit
 * tests' random operations: the same seed gives the same run everywhere. */
#ifndef TG_TESTS_RNG_H
#define TG_TESTS_RNG_H

#include <stddef.h>
#include <stdint.h>

static uint64_t rng_state;

static inline void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

static inline uint64_t rng_next(void)
{
    uint64_t z = (rng_state += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* Uniform in [0, n); 0 when n is 0. */
static inline size_t rng_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(rng_next() % n);
}

#endif
