/* gate/cache.h - the gate's reply cache and its single flights.
 *
 * A route with `cache` set keeps replies by a 128-bit key: XXH3-128 of the
 * route, the kind, the method, the path, the query with its parameters
 * sorted, the body (a call's data), and on private routes the user. The key
 * is computed on the client loop when the job is built (tg_cache_prepare), so
 * the hashing is spread over every loop; the store itself lives on the gate's
 * home loop, which sees every job anyway: no lock anywhere.
 *
 * An entry holds the REPLY's pairs in a refcounted block (core/shared.h): an
 * answer made from it takes a reference instead of a copy, so an entry evicted
 * while answers are on their way stays alive until the last one is written.
 * Memory is bounded by <cap> bytes, each entry counted with its key, path,
 * pairs and bookkeeping; the least recently used go first. Each entry expires
 * by a timer on the home loop's wheel (O(1), nothing per tick).
 *
 * A flight is a miss being computed: the job sent for a key (its leader) and
 * the identical jobs that arrived meanwhile (its waiters), which get the
 * leader's answer instead of a job of their own. gate.c owns the jobs; a
 * flight only links them.
 *
 * Threads: tg_cache_prepare on the job's client loop (it reads only the job);
 * everything else on the home loop. */
#ifndef TG_GATE_CACHE_H
#define TG_GATE_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "core/idmap.h"
#include "core/list.h"
#include "core/shared.h"
#include "core/timer.h"
#include "gate/route.h"

#define TG_CACHE_TTL_MAX    (30ull * 24 * 3600 * 1000) /* longer TTLs are cut to this */
#define TG_CACHE_QUERY_MAX  64 /* parameters sorted for a key; more: not cached */
/* What an entry costs besides its struct, path and pairs: two malloc headers
 * (entry, block) and the map's slots (it keeps at least 4/3 per entry). */
#define TG_CACHE_OVERHEAD   (2 * 16 + 2 * sizeof(tg_idmap_slot_t))

typedef struct tg_cache_key {
    uint64_t lo, hi;
} tg_cache_key_t;

/* Written by the home loop, read by anyone (/stats). A request on a cached
 * route is one of: hit, miss (it sent a job) or coalesced (it waited for an
 * identical one in flight). */
typedef struct tg_cache_stats {
    tg_counter_t hits;
    tg_counter_t misses;
    tg_counter_t coalesced;
    tg_counter_t stored;      /* replies stored */
    tg_counter_t evictions;   /* entries dropped for room (least recently used) */
    tg_counter_t expirations; /* entries dropped at their TTL */
    tg_counter_t purged;      /* entries dropped by a purge */
    tg_counter_t entries;     /* held now */
    tg_counter_t bytes;       /* held now, as counted against the cap */
} tg_cache_stats_t;

typedef struct tg_cache tg_cache_t;

typedef struct tg_cache_entry {
    tg_link_t      lru;       /* cache->lru, least recent first */
    tg_timer_t     expiry;    /* on cache->wheel */
    tg_cache_t    *cache;
    tg_cache_key_t key;
    const void    *owner;     /* the route it was stored for (purges by route) */
    tg_shared_t   *pairs;     /* the REPLY's (or ERROR's) pairs; one reference held */
    uint64_t       stored_ms; /* home loop clock, for Age */
    uint32_t       bytes;     /* counted against the cap */
    uint8_t        type;      /* TG_BK_REPLY or TG_BK_ERROR */
    uint32_t       path_len;
    char           path[];    /* the HTTP request path (prefix purges); empty for calls */
} tg_cache_entry_t;

struct tg_job;

typedef struct tg_cache_flight {
    tg_cache_key_t key;
    struct tg_job *leader;   /* the job sent for the key */
    tg_link_t      waiters;  /* tg_job_t.node, arrival order */
    uint32_t       nwaiters;
} tg_cache_flight_t;

struct tg_cache {
    tg_wheel_t       *wheel;   /* the home loop's: entries' expiry timers */
    uint64_t          cap;     /* bytes */
    uint64_t          bytes;
    tg_idmap_t        entries; /* key.lo | 1 -> entry; the full key is compared */
    tg_idmap_t        flights; /* key.lo | 1 -> flight */
    tg_link_t         lru;
    tg_cache_stats_t *stats;
};

/* ---- lifecycle (boot thread, or the home loop) ---- */

/* Embedded: <wheel> is the home loop's; <stats> outlives the cache. */
void tg_cache_init(tg_cache_t *c, tg_wheel_t *wheel, uint64_t cap, tg_cache_stats_t *stats);
/* Frees every entry and every flight, without touching the wheel (it may be
 * gone: entries' timers must not run afterwards); the flights' jobs are the
 * gate's to free. */
void tg_cache_fini(tg_cache_t *c);

/* ---- client loop ---- */

/* Sets <job>'s cache flags and key for route <r>, from the job's pairs (and
 * its user). <no_cache>: the client asked for a fresh reply. A route without
 * `cache` leaves the job alone; GET and HEAD requests and calls use the
 * cache, other requests and private routes without a user only say so. */
void tg_cache_prepare(struct tg_job *job, const tg_route_t *r, bool no_cache);

/* The key of one request, from its parts; <query> is canonicalised here.
 * False when it cannot be cached (too many query parameters). */
typedef struct tg_cache_req {
    tg_str_t route, kind, method, path, query, body, user;
} tg_cache_req_t;
bool tg_cache_key(const tg_cache_req_t *req, tg_cache_key_t *out);

/* ---- home loop: entries ---- */

/* How long a backend's answer of <type> holding <pairs> may be kept on route
 * <r>: the REPLY's `cache_ttl` (milliseconds) or the route's TTL; 0 when it
 * must not be: `cache_ttl` 0, a `set_user` (a login is nobody else's), or an
 * error or a non-2xx status on a route without `cache_errors`. */
uint64_t tg_cache_ttl(const tg_route_t *r, uint8_t type, const uint8_t *pairs, size_t len);

/* The live entry of <key> (made most recently used), or NULL. An entry past
 * its time is dropped here even when its timer has not run yet. */
tg_cache_entry_t *tg_cache_get(tg_cache_t *c, const tg_cache_key_t *key, uint64_t now_ms);
/* Stores <pairs> (takes a reference on success) for <ttl_ms> under <key>,
 * replacing what was there, evicting the least recently used for room.
 * Returns 0, -E2BIG (it alone is over the cap) or -ENOMEM. */
int tg_cache_put(tg_cache_t *c, const tg_cache_key_t *key, const void *owner, tg_str_t path,
                 uint8_t type, tg_shared_t *pairs, uint64_t ttl_ms, uint64_t now_ms);
/* Drops the entries of <owner> (NULL: any) whose path starts with <prefix>
 * (empty: every path, calls' entries included). Returns how many. O(entries). */
size_t tg_cache_purge(tg_cache_t *c, const void *owner, tg_str_t prefix);
/* Seconds since <e> was stored. */
uint32_t tg_cache_age(const tg_cache_entry_t *e, uint64_t now_ms);

/* ---- home loop: flights ---- */

/* The flight of <key>, or NULL. */
tg_cache_flight_t *tg_cache_flight(const tg_cache_t *c, const tg_cache_key_t *key);
/* A new flight for <key> led by <leader>; NULL when out of memory or when a
 * flight holds the map's slot for another key (the job then runs alone). */
tg_cache_flight_t *tg_cache_flight_open(tg_cache_t *c, const tg_cache_key_t *key,
                                        struct tg_job *leader);
/* Forgets <f>, which must have no waiters left. */
void tg_cache_flight_close(tg_cache_t *c, tg_cache_flight_t *f);

/* ---- introspection ---- */

/* Invariants: the map, the LRU list and the byte count agree (for tests). */
bool tg_cache_check(const tg_cache_t *c);

static inline bool tg_cache_key_eq(const tg_cache_key_t *a, const tg_cache_key_t *b)
{
    return a->lo == b->lo && a->hi == b->hi;
}

#endif
