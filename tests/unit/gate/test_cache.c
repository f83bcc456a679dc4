/* tests/unit/gate/test_cache.c - the gate's reply cache (src/gate/cache.h):
 * keys, least-recently-used eviction under a byte cap, expiry on a wheel
 * driven by hand, purges, flights, and what a reply's pairs allow.
 *
 * tg_cache_check() (the map, the LRU list and the byte count agree) runs
 * after every step that changes the store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <errno.h>

#include "gate/cache.h"
#include "gate/job.h"
#include "gate/wire.h"

struct fixture {
    tg_wheel_t       wheel;
    uint64_t         now;
    tg_cache_stats_t stats;
    tg_cache_t       cache;
};

#define CAP 4096

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->now = 1000;
    tg_wheel_init(&f->wheel, f->now);
    tg_cache_init(&f->cache, &f->wheel, CAP, &f->stats);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tg_cache_fini(&f->cache);
    assert_int_equal(tg_counter_get(&f->stats.bytes), 0);
    assert_int_equal(tg_counter_get(&f->stats.entries), 0);
    free(f);
    return 0;
}

static void advance(struct fixture *f, uint64_t ms)
{
    f->now += ms;
    tg_wheel_run(&f->wheel, f->now);
    assert_true(tg_wheel_check(&f->wheel));
    assert_true(tg_cache_check(&f->cache));
}

static tg_cache_key_t key_n(uint64_t n)
{
    return (tg_cache_key_t){ .lo = n * 0x9e3779b97f4a7c15ull, .hi = n };
}

static tg_shared_t *block(size_t len, char fill)
{
    tg_shared_t *s = tg_shared_new(len);
    memset(s->data, fill, len);
    return s;
}

/* Stores <len> bytes under key <n>; returns tg_cache_put's result. */
static int put(struct fixture *f, uint64_t n, size_t len, uint64_t ttl, const char *path)
{
    tg_shared_t *s = block(len, (char)n);
    tg_cache_key_t k = key_n(n);
    int rc = tg_cache_put(&f->cache, &k, NULL, (tg_str_t){ path, strlen(path) }, TG_BK_REPLY, s,
                          ttl, f->now);
    tg_shared_unref(s);
    assert_true(tg_cache_check(&f->cache));
    return rc;
}

static bool has(struct fixture *f, uint64_t n)
{
    tg_cache_key_t k = key_n(n);
    return tg_cache_get(&f->cache, &k, f->now) != NULL;
}

static uint64_t cost(size_t len, const char *path)
{
    return sizeof(tg_cache_entry_t) + strlen(path) + sizeof(tg_shared_t) + len +
           TG_CACHE_OVERHEAD;
}

/* ---- keys ---- */

static tg_cache_key_t key_of(const char *query, const char *body, const char *user)
{
    tg_cache_req_t r = { TG_STR("orders"), TG_STR("http"), TG_STR("GET"), TG_STR("/a"),
                         { query, strlen(query) }, { body, strlen(body) }, { user, strlen(user) } };
    tg_cache_key_t k;
    assert_true(tg_cache_key(&r, &k));
    return k;
}

static void query_order_does_not_matter_but_everything_else_does(void **state)
{
    (void)state;
    tg_cache_key_t a = key_of("b=2&a=1", "", ""), b = key_of("a=1&b=2", "", "");
    assert_true(tg_cache_key_eq(&a, &b));
    b = key_of("a=1&&b=2&", "", ""); /* empty parameters say nothing */
    assert_true(tg_cache_key_eq(&a, &b));
    b = key_of("a=1&b=3", "", "");
    assert_false(tg_cache_key_eq(&a, &b));
    b = key_of("b=2&a=1", "x", "");
    assert_false(tg_cache_key_eq(&a, &b));
    b = key_of("b=2&a=1", "", "ann");
    assert_false(tg_cache_key_eq(&a, &b));
    /* Boundaries are part of the key: "a=1b" + "" is not "a=1" + "b". */
    tg_cache_key_t c = key_of("a=1b", "", ""), d = key_of("a=1", "b", "");
    assert_false(tg_cache_key_eq(&c, &d));
}

static void too_many_query_parameters_are_not_cached(void **state)
{
    (void)state;
    char q[TG_CACHE_QUERY_MAX * 4 + 8];
    size_t n = 0;
    for (int i = 0; i <= TG_CACHE_QUERY_MAX; i++)
        n += (size_t)snprintf(q + n, sizeof(q) - n, "%s%c", i ? "&" : "", 'a' + i % 26);
    tg_cache_req_t r = { .query = { q, n } };
    tg_cache_key_t k;
    assert_false(tg_cache_key(&r, &k));
}

/* A job as a client loop builds it, for tg_cache_prepare. */
static tg_job_t *job_with(uint8_t kind, const char *method, const char *user)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_put_str(&e, TG_BK_K_ROUTE, "r");
    if (user)
        tg_wire_put_str(&e, TG_BK_K_USER, user);
    if (kind == TG_JOB_HTTP) {
        tg_wire_put_str(&e, TG_BK_K_METHOD, method);
        tg_wire_put_str(&e, TG_BK_K_PATH, "/x");
    } else {
        tg_wire_put_str(&e, TG_BK_K_DATA, "{\"a\":1}");
    }
    tg_job_t *job = calloc(1, sizeof(*job) + e.len);
    job->kind = kind;
    job->len = (uint32_t)e.len;
    memcpy(job->pairs, e.p, e.len);
    tg_wire_enc_fini(&e);
    return job;
}

static void prepare_caches_reads_and_calls_and_keeps_private_replies_apart(void **state)
{
    (void)state;
    tg_route_t r = { .name = "r", .cache_ttl_ms = 1000 };
    tg_job_t *get = job_with(TG_JOB_HTTP, "GET", NULL), *post = job_with(TG_JOB_HTTP, "POST", NULL);
    tg_job_t *call = job_with(TG_JOB_CALL, NULL, NULL);
    tg_cache_prepare(get, &r, false);
    tg_cache_prepare(post, &r, false);
    tg_cache_prepare(call, &r, false);
    assert_int_equal(get->cache, TG_JOB_CACHE_ROUTE | TG_JOB_CACHE_LOOKUP | TG_JOB_CACHE_STORE);
    assert_int_equal(post->cache, TG_JOB_CACHE_ROUTE); /* says X-Cache: miss, nothing more */
    assert_int_equal(call->cache, TG_JOB_CACHE_ROUTE | TG_JOB_CACHE_LOOKUP | TG_JOB_CACHE_STORE);
    free(get);
    get = job_with(TG_JOB_HTTP, "GET", NULL);
    tg_cache_prepare(get, &r, true); /* no-cache: fetch, then store */
    assert_int_equal(get->cache, TG_JOB_CACHE_ROUTE | TG_JOB_CACHE_STORE);

    r.cache_private = true;
    tg_job_t *anon = job_with(TG_JOB_CALL, NULL, NULL), *ann = job_with(TG_JOB_CALL, NULL, "ann"),
             *bob = job_with(TG_JOB_CALL, NULL, "bob");
    tg_cache_prepare(anon, &r, false);
    tg_cache_prepare(ann, &r, false);
    tg_cache_prepare(bob, &r, false);
    assert_int_equal(anon->cache, TG_JOB_CACHE_ROUTE);
    assert_true(ann->cache & TG_JOB_CACHE_LOOKUP);
    assert_false(tg_cache_key_eq(&ann->cache_key, &bob->cache_key));

    r.cache_ttl_ms = 0;
    tg_job_t *off = job_with(TG_JOB_HTTP, "GET", NULL);
    tg_cache_prepare(off, &r, false);
    assert_int_equal(off->cache, 0);
    /* A scatter's answer is the gate's own: never cached, whatever its route says. */
    tg_route_t sc = { .name = "s", .cache_ttl_ms = 1000, .mode = TG_ROUTE_SCATTER };
    tg_job_t *part = job_with(TG_JOB_HTTP, "GET", NULL);
    tg_cache_prepare(part, &sc, false);
    assert_int_equal(part->cache, 0);
    free(get), free(post), free(call), free(anon), free(ann), free(bob), free(off), free(part);
}

/* ---- the store ---- */

static void put_then_get_and_bytes_are_counted(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(put(f, 1, 100, 10000, "/api/a"), 0);
    assert_true(has(f, 1));
    assert_false(has(f, 2));
    assert_int_equal(f->cache.bytes, cost(100, "/api/a"));
    assert_int_equal(tg_counter_get(&f->stats.entries), 1);
    /* The same key again replaces the entry: one entry, the new bytes. */
    assert_int_equal(put(f, 1, 300, 10000, "/api/a"), 0);
    assert_int_equal(f->cache.bytes, cost(300, "/api/a"));
    tg_cache_key_t k = key_n(1);
    tg_cache_entry_t *e = tg_cache_get(&f->cache, &k, f->now);
    assert_int_equal(e->pairs->len, 300);
    assert_int_equal(tg_counter_get(&f->stats.stored), 2);
}

static void least_recently_used_go_first_and_the_cap_holds(void **state)
{
    struct fixture *f = *state;
    size_t len = 600; /* a few entries fit in CAP */
    uint64_t each = cost(len, "");
    uint64_t fit = CAP / each;
    assert_true(fit >= 3);
    for (uint64_t i = 1; i <= fit; i++)
        assert_int_equal(put(f, i, len, 10000, ""), 0);
    assert_int_equal(tg_counter_get(&f->stats.evictions), 0);
    assert_true(has(f, 1)); /* 1 is now the most recently used; 2 the least */
    assert_int_equal(put(f, 100, len, 10000, ""), 0);
    assert_int_equal(tg_counter_get(&f->stats.evictions), 1);
    assert_false(has(f, 2));
    assert_true(has(f, 1) && has(f, 100));
    assert_true(f->cache.bytes <= CAP);
    /* Thousands more: never over the cap. */
    for (uint64_t i = 1000; i < 3000; i++) {
        assert_int_equal(put(f, i, 1 + i % 900, 10000, "/p"), 0);
        assert_true(f->cache.bytes <= CAP);
    }
    assert_true(tg_counter_get(&f->stats.evictions) > 1000);
}

static void an_entry_larger_than_the_cap_is_refused(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(put(f, 1, 10, 1000, ""), 0);
    assert_int_equal(put(f, 2, CAP, 1000, ""), -E2BIG);
    assert_true(has(f, 1)); /* nothing evicted for it */
    assert_int_equal(tg_counter_get(&f->stats.evictions), 0);
}

static void entries_expire_at_their_ttl(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(put(f, 1, 10, 300, ""), 0);
    assert_int_equal(put(f, 2, 10, 5000, ""), 0);
    advance(f, 299);
    assert_true(has(f, 1));
    advance(f, 1);
    assert_false(has(f, 1));
    assert_true(has(f, 2));
    assert_int_equal(tg_counter_get(&f->stats.expirations), 1);
    assert_int_equal(tg_counter_get(&f->stats.entries), 1);
    /* Past due before the wheel has run: a lookup does not serve it. */
    f->now += 5000;
    assert_false(has(f, 2));
    assert_int_equal(tg_counter_get(&f->stats.expirations), 2);
    advance(f, 0);
    assert_int_equal(tg_counter_get(&f->stats.entries), 0);
}

static void age_counts_whole_seconds(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(put(f, 1, 10, 60000, ""), 0);
    tg_cache_key_t k = key_n(1);
    advance(f, 2500);
    tg_cache_entry_t *e = tg_cache_get(&f->cache, &k, f->now);
    assert_non_null(e);
    assert_int_equal(tg_cache_age(e, f->now), 2);
}

static void evicted_bytes_live_on_while_referenced(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(put(f, 1, 100, 1000, ""), 0);
    tg_cache_key_t k = key_n(1);
    tg_cache_entry_t *e = tg_cache_get(&f->cache, &k, f->now);
    tg_shared_t *held = e->pairs;
    tg_shared_ref(held); /* as an answer on its way would */
    assert_int_equal(tg_cache_purge(&f->cache, NULL, (tg_str_t){ "", 0 }), 1);
    assert_int_equal(held->data[99], 1); /* ASan: still there */
    tg_shared_unref(held);
}

static void purge_by_owner_and_path_prefix(void **state)
{
    struct fixture *f = *state;
    static const char *paths[] = { "/api/orders/1", "/api/orders/12", "/api/carts/1", "" };
    int owners[2];
    for (uint64_t i = 0; i < 4; i++) {
        tg_shared_t *s = block(10, 'x');
        tg_cache_key_t k = key_n(i + 1);
        assert_int_equal(tg_cache_put(&f->cache, &k, &owners[i >= 2],
                                      (tg_str_t){ paths[i], strlen(paths[i]) }, TG_BK_REPLY, s,
                                      1000, f->now),
                         0);
        tg_shared_unref(s);
    }
    assert_int_equal(tg_cache_purge(&f->cache, NULL, TG_STR("/api/orders/1")), 2);
    assert_true(tg_cache_check(&f->cache));
    assert_true(has(f, 3) && has(f, 4));
    assert_int_equal(tg_cache_purge(&f->cache, &owners[0], TG_STR("")), 0);
    assert_int_equal(tg_cache_purge(&f->cache, &owners[1], TG_STR("")), 2); /* the call's too */
    assert_int_equal(tg_counter_get(&f->stats.purged), 4);
    assert_int_equal(tg_counter_get(&f->stats.entries), 0);
}

/* ---- flights ---- */

static void one_flight_per_key(void **state)
{
    struct fixture *f = *state;
    tg_job_t *leader = (tg_job_t *)(uintptr_t)0x1000;
    tg_cache_key_t a = key_n(1), b = key_n(2);
    assert_null(tg_cache_flight(&f->cache, &a));
    tg_cache_flight_t *fa = tg_cache_flight_open(&f->cache, &a, leader);
    assert_non_null(fa);
    assert_ptr_equal(tg_cache_flight(&f->cache, &a), fa);
    assert_null(tg_cache_flight_open(&f->cache, &a, leader));
    assert_null(tg_cache_flight(&f->cache, &b));
    /* A key sharing the map's slot is not mistaken for this one. */
    tg_cache_key_t twin = { a.lo, a.hi + 1 };
    assert_null(tg_cache_flight(&f->cache, &twin));
    tg_cache_flight_close(&f->cache, fa);
    assert_null(tg_cache_flight(&f->cache, &a));
    /* The last is left open: fini frees it. */
    assert_non_null(tg_cache_flight_open(&f->cache, &b, leader));
}

/* ---- what a reply allows ---- */

static uint64_t ttl_of(const tg_route_t *r, uint8_t type, const char *status, const char *ttl,
                       bool login)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    if (status)
        tg_wire_put_str(&e, TG_BK_K_STATUS, status);
    if (ttl)
        tg_wire_put_str(&e, TG_BK_K_CACHE_TTL, ttl);
    if (login)
        tg_wire_put_str(&e, TG_BK_K_SET_USER, "ann");
    tg_wire_put_str(&e, TG_BK_K_BODY, "x");
    uint64_t v = tg_cache_ttl(r, type, e.p, e.len);
    tg_wire_enc_fini(&e);
    return v;
}

static void reply_ttl_overrides_and_errors_stay_out_by_default(void **state)
{
    (void)state;
    tg_route_t r = { .cache_ttl_ms = 10000 };
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, NULL, NULL, false), 10000);
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "204", "250", false), 250);
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "200", "0", false), 0);
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "200", "soon", false), 10000); /* not a number */
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "200", NULL, true), 0);         /* a login */
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "404", NULL, false), 0);
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "301", NULL, false), 0);
    assert_int_equal(ttl_of(&r, TG_BK_ERROR, NULL, NULL, false), 0);
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "200", "999999999999", false), TG_CACHE_TTL_MAX);
    r.cache_errors = true;
    assert_int_equal(ttl_of(&r, TG_BK_REPLY, "404", NULL, false), 10000);
    assert_int_equal(ttl_of(&r, TG_BK_ERROR, "503", "50", false), 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(query_order_does_not_matter_but_everything_else_does),
        cmocka_unit_test(too_many_query_parameters_are_not_cached),
        cmocka_unit_test(prepare_caches_reads_and_calls_and_keeps_private_replies_apart),
        cmocka_unit_test_setup_teardown(put_then_get_and_bytes_are_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(least_recently_used_go_first_and_the_cap_holds, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(an_entry_larger_than_the_cap_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(entries_expire_at_their_ttl, setup, teardown),
        cmocka_unit_test_setup_teardown(age_counts_whole_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(evicted_bytes_live_on_while_referenced, setup, teardown),
        cmocka_unit_test_setup_teardown(purge_by_owner_and_path_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(one_flight_per_key, setup, teardown),
        cmocka_unit_test(reply_ttl_overrides_and_errors_stay_out_by_default),
    };
    if (getenv("TG_TEST_FILTER"))
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("gate/cache", tests, NULL, NULL);
}
