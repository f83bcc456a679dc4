/* gate/cache.c - see cache.h. */
#include "gate/cache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack: no allocation per key */
#include <xxhash.h>

#include "gate/job.h"
#include "gate/wire.h"

/* ---- keys (client loop) ---- */

/* Each part goes in with its length first, so that no two different
 * requests hash the same bytes ("ab"+"c" and "a"+"bc" differ). */
static void feed(XXH3_state_t *st, const void *p, size_t n)
{
    uint64_t len = n;
    (void)XXH3_128bits_update(st, &len, sizeof(len));
    if (n)
        (void)XXH3_128bits_update(st, p, n);
}

static int str_cmp(const void *a, const void *b)
{
    const tg_str_t *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->p, y->p, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

bool tg_cache_key(const tg_cache_req_t *req, tg_cache_key_t *out)
{
    /* The query's parameters sorted: "?b=2&a=1" and "?a=1&b=2" are one
     * request. Empty ones ("&&") say nothing and are left out. */
    tg_str_t params[TG_CACHE_QUERY_MAX];
    size_t n = 0;
    const char *p = req->query.p, *end = p + req->query.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop > p) {
            if (n == TG_CACHE_QUERY_MAX)
                return false;
            params[n++] = (tg_str_t){ p, (size_t)(stop - p) };
        }
        p = stop + 1;
    }
    qsort(params, n, sizeof(params[0]), str_cmp);

    XXH3_state_t st;
    (void)XXH3_128bits_reset(&st);
    feed(&st, req->route.p, req->route.len);
    feed(&st, req->kind.p, req->kind.len);
    feed(&st, req->method.p, req->method.len);
    feed(&st, req->path.p, req->path.len);
    uint64_t np = n;
    (void)XXH3_128bits_update(&st, &np, sizeof(np));
    for (size_t i = 0; i < n; i++)
        feed(&st, params[i].p, params[i].len);
    feed(&st, req->body.p, req->body.len);
    feed(&st, req->user.p, req->user.len);
    XXH128_hash_t h = XXH3_128bits_digest(&st);
    out->lo = h.low64;
    out->hi = h.high64;
    return true;
}

static tg_str_t pair_of(const tg_job_t *job, const char *key)
{
    tg_wire_pair_t kv;
    if (tg_wire_find(job->pairs, job->len, key, &kv))
        return (tg_str_t){ kv.val, kv.vlen };
    return (tg_str_t){ "", 0 };
}

static bool str_is(tg_str_t s, const char *lit)
{
    return s.len == strlen(lit) && memcmp(s.p, lit, s.len) == 0;
}

void tg_cache_prepare(tg_job_t *job, const tg_route_t *r, bool no_cache)
{
    if (!tg_route_caches(r))
        return;
    job->cache = TG_JOB_CACHE_ROUTE;
    bool http = job->kind == TG_JOB_HTTP;
    tg_cache_req_t req = { .route = { r->name, strlen(r->name) },
                           .kind = http ? TG_STR("http") : TG_STR("call") };
    if (http) {
        req.method = pair_of(job, TG_BK_K_METHOD);
        /* Other methods change things: they always reach a backend. */
        if (!str_is(req.method, "GET") && !str_is(req.method, "HEAD"))
            return;
        req.path = pair_of(job, TG_BK_K_PATH);
        req.query = pair_of(job, TG_BK_K_QUERY);
        req.body = pair_of(job, TG_BK_K_BODY);
    } else {
        req.body = pair_of(job, TG_BK_K_DATA);
    }
    if (r->cache_private) {
        req.user = pair_of(job, TG_BK_K_USER);
        if (!req.user.len)
            return; /* nobody to keep it for: sharing it would leak it */
    }
    if (!tg_cache_key(&req, &job->cache_key))
        return;
    job->cache |= TG_JOB_CACHE_STORE | (no_cache ? 0 : TG_JOB_CACHE_LOOKUP);
}

/* ---- entries (home loop) ---- */

uint64_t tg_cache_ttl(const tg_route_t *r, uint8_t type, const uint8_t *pairs, size_t len)
{
    uint64_t ttl = r->cache_ttl_ms, status = type == TG_BK_REPLY ? 200 : 502, n;
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, pairs, len);
    while (tg_wire_next(&it, &kv) == 1) {
        if (tg_wire_key_is(&kv, TG_BK_K_STATUS) && tg_wire_u64(kv.val, kv.vlen, &n) == 0)
            status = n;
        else if (tg_wire_key_is(&kv, TG_BK_K_CACHE_TTL) && tg_wire_u64(kv.val, kv.vlen, &n) == 0)
            ttl = n;
        else if (tg_wire_key_is(&kv, TG_BK_K_SET_USER))
            return 0;
    }
    if (!r->cache_errors && (type != TG_BK_REPLY || status < 200 || status > 299))
        return 0;
    return ttl < TG_CACHE_TTL_MAX ? ttl : TG_CACHE_TTL_MAX;
}

static uint64_t slot_id(const tg_cache_key_t *k)
{
    return k->lo | 1; /* 0 is the map's "empty" */
}

static void drop(tg_cache_t *c, tg_cache_entry_t *e, tg_counter_t *why)
{
    tg_idmap_del(&c->entries, slot_id(&e->key));
    tg_link_remove(&e->lru);
    tg_timer_cancel(c->wheel, &e->expiry);
    c->bytes -= e->bytes;
    tg_counter_sub(&c->stats->bytes, e->bytes);
    tg_counter_sub(&c->stats->entries, 1);
    if (why)
        tg_counter_add(why, 1);
    tg_shared_unref(e->pairs); /* answers on their way keep the bytes alive */
    free(e);
}

static void expired(tg_timer_t *t)
{
    tg_cache_entry_t *e = tg_container_of(t, tg_cache_entry_t, expiry);
    drop(e->cache, e, &e->cache->stats->expirations);
}

void tg_cache_init(tg_cache_t *c, tg_wheel_t *wheel, uint64_t cap, tg_cache_stats_t *stats)
{
    memset(c, 0, sizeof(*c));
    c->wheel = wheel;
    c->cap = cap;
    c->stats = stats;
    tg_list_init(&c->lru);
}

void tg_cache_fini(tg_cache_t *c)
{
    /* The wheel is left alone: at shutdown it may be gone with its loop. */
    while (!tg_list_empty(&c->lru)) {
        tg_cache_entry_t *e = tg_container_of(tg_list_shift(&c->lru), tg_cache_entry_t, lru);
        tg_counter_sub(&c->stats->bytes, e->bytes);
        tg_counter_sub(&c->stats->entries, 1);
        tg_shared_unref(e->pairs);
        free(e);
    }
    c->bytes = 0;
    for (size_t i = 0; i < c->flights.cap; i++)
        if (c->flights.slots[i].id)
            free(c->flights.slots[i].val);
    tg_idmap_fini(&c->entries);
    tg_idmap_fini(&c->flights);
}

tg_cache_entry_t *tg_cache_get(tg_cache_t *c, const tg_cache_key_t *key, uint64_t now_ms)
{
    tg_cache_entry_t *e = tg_idmap_get(&c->entries, slot_id(key));
    if (!e || !tg_cache_key_eq(&e->key, key))
        return NULL;
    if (now_ms >= e->expiry.due_ms) {
        drop(c, e, &c->stats->expirations);
        return NULL;
    }
    tg_link_remove(&e->lru);
    tg_list_push(&c->lru, &e->lru);
    return e;
}

int tg_cache_put(tg_cache_t *c, const tg_cache_key_t *key, const void *owner, tg_str_t path,
                 uint8_t type, tg_shared_t *pairs, uint64_t ttl_ms, uint64_t now_ms)
{
    uint64_t bytes = sizeof(tg_cache_entry_t) + path.len + sizeof(tg_shared_t) + pairs->len +
                     TG_CACHE_OVERHEAD;
    if (bytes > c->cap || bytes > UINT32_MAX)
        return -E2BIG;
    tg_cache_entry_t *old = tg_idmap_get(&c->entries, slot_id(key));
    if (old)
        drop(c, old, NULL); /* replaced: a fresher reply, or the rare slot shared by two keys */
    while (c->bytes + bytes > c->cap)
        drop(c, tg_container_of(c->lru.next, tg_cache_entry_t, lru), &c->stats->evictions);
    tg_cache_entry_t *e = malloc(sizeof(*e) + path.len);
    if (!e)
        return -ENOMEM;
    if (tg_idmap_put(&c->entries, slot_id(key), e) != 0) {
        free(e);
        return -ENOMEM;
    }
    e->cache = c;
    e->key = *key;
    e->owner = owner;
    e->pairs = pairs;
    tg_shared_ref(pairs);
    e->stored_ms = now_ms;
    e->bytes = (uint32_t)bytes;
    e->type = type;
    e->path_len = (uint32_t)path.len;
    if (path.len)
        memcpy(e->path, path.p, path.len);
    e->lru.next = NULL;
    tg_list_push(&c->lru, &e->lru);
    tg_timer_init(&e->expiry, expired);
    tg_timer_arm(c->wheel, &e->expiry, ttl_ms < TG_CACHE_TTL_MAX ? ttl_ms : TG_CACHE_TTL_MAX);
    c->bytes += bytes;
    tg_counter_add(&c->stats->bytes, bytes);
    tg_counter_add(&c->stats->entries, 1);
    tg_counter_add(&c->stats->stored, 1);
    return 0;
}

size_t tg_cache_purge(tg_cache_t *c, const void *owner, tg_str_t prefix)
{
    size_t n = 0;
    tg_link_t *l = c->lru.next;
    while (l != &c->lru) {
        tg_cache_entry_t *e = tg_container_of(l, tg_cache_entry_t, lru);
        l = l->next;
        if (owner && e->owner != owner)
            continue;
        if (prefix.len && (e->path_len < prefix.len || memcmp(e->path, prefix.p, prefix.len)))
            continue;
        drop(c, e, &c->stats->purged);
        n++;
    }
    return n;
}

uint32_t tg_cache_age(const tg_cache_entry_t *e, uint64_t now_ms)
{
    return now_ms > e->stored_ms ? (uint32_t)((now_ms - e->stored_ms) / 1000) : 0;
}

/* ---- flights (home loop) ---- */

tg_cache_flight_t *tg_cache_flight(const tg_cache_t *c, const tg_cache_key_t *key)
{
    tg_cache_flight_t *f = tg_idmap_get(&c->flights, slot_id(key));
    return f && tg_cache_key_eq(&f->key, key) ? f : NULL;
}

tg_cache_flight_t *tg_cache_flight_open(tg_cache_t *c, const tg_cache_key_t *key,
                                        struct tg_job *leader)
{
    if (tg_idmap_get(&c->flights, slot_id(key)))
        return NULL;
    tg_cache_flight_t *f = malloc(sizeof(*f));
    if (!f)
        return NULL;
    if (tg_idmap_put(&c->flights, slot_id(key), f) != 0) {
        free(f);
        return NULL;
    }
    f->key = *key;
    f->leader = leader;
    tg_list_init(&f->waiters);
    f->nwaiters = 0;
    return f;
}

void tg_cache_flight_close(tg_cache_t *c, tg_cache_flight_t *f)
{
    TG_ASSERT(tg_list_empty(&f->waiters));
    tg_idmap_del(&c->flights, slot_id(&f->key));
    free(f);
}

/* ---- introspection ---- */

bool tg_cache_check(const tg_cache_t *c)
{
    uint64_t bytes = 0;
    size_t n = 0;
    for (const tg_link_t *l = c->lru.next; l != &c->lru; l = l->next) {
        const tg_cache_entry_t *e = tg_container_of(l, tg_cache_entry_t, lru);
        if (tg_idmap_get(&c->entries, slot_id(&e->key)) != e || !tg_timer_armed(&e->expiry))
            return false;
        bytes += e->bytes;
        n++;
    }
    return bytes == c->bytes && bytes <= c->cap && n == tg_idmap_count(&c->entries) &&
           bytes == tg_counter_get(&c->stats->bytes) &&
           n == tg_counter_get(&c->stats->entries);
}
