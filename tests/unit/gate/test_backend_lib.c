/* tests/unit/gate/test_backend_lib.c - libtidegate-backend
 * (include/tidegate/backend_lib.h, lib/backend/).
 *
 * The reply memory (lib/backend/memo.h) under directed and random operations
 * against a reference, with tgb_memo_check() after every step; JOB decoding
 * and REPLY/ERROR encoding through the gate's own codec (src/gate/wire.h);
 * then the library against a scripted fake gate on 127.0.0.1 (the test is the
 * gate, the backend runs on a thread): batching, repeats answered from memory,
 * PING, DONE_BELOW, a job held across a dropped link, a redial to the same and
 * to a new epoch, LZ4 both ways, a protocol violation, max_frame, drain, and
 * no_reconnect. cmocka asserts run on the test's thread only; the backend
 * thread records what it saw and the test reads it after the join. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "backend/job.h"
#include "backend/memo.h"
#include "gate/wire.h"
#include "tidegate/backend_lib.h"

#include "../rng.h"

/* ---- the reply memory ---- */

static void store_bytes(tgb_memo_t *m, uint64_t id, size_t len)
{
    uint8_t frame[64];
    memset(frame, (int)(id & 0xff), sizeof(frame));
    tgb_memo_slot_t *s = tgb_memo_find(m, id);
    assert_non_null(s);
    assert_int_equal(tgb_memo_store(m, s, frame, len), 0);
}

static void memo_add_find_store_del(void **state)
{
    tgb_memo_t m;
    tgb_memo_init(&m);
    assert_true(tgb_memo_check(&m));
    assert_null(tgb_memo_find(&m, 5));
    assert_null(tgb_memo_add(&m, 0)); /* 0 is no job */

    tgb_memo_slot_t *s = tgb_memo_add(&m, 5);
    assert_non_null(s);
    assert_null(s->frame);
    assert_int_equal(m.running, 1);
    assert_int_equal(tgb_memo_answered(&m), 0);
    assert_null(tgb_memo_add(&m, 5)); /* never two slots for one id */
    assert_true(tgb_memo_check(&m));

    store_bytes(&m, 5, 40);
    s = tgb_memo_find(&m, 5);
    assert_int_equal(s->len, 40);
    assert_int_equal(s->frame[0], 5);
    assert_int_equal(tgb_memo_answered(&m), 1);
    assert_int_equal(m.bytes, 40);
    assert_int_equal(tgb_memo_store(&m, s, (const uint8_t *)"x", 1), -EEXIST);
    assert_true(tgb_memo_check(&m));

    assert_true(tgb_memo_del(&m, 5));
    assert_false(tgb_memo_del(&m, 5));
    assert_null(tgb_memo_find(&m, 5));
    assert_int_equal(m.count, 0);
    assert_int_equal(m.bytes, 0);
    assert_true(tgb_memo_check(&m));
    tgb_memo_fini(&m);
}

static void memo_prune_keeps_running_and_ids_above(void **state)
{
    tgb_memo_t m;
    tgb_memo_init(&m);
    for (uint64_t id = 1; id <= 1000; id++) {
        assert_non_null(tgb_memo_add(&m, id));
        if (id % 3 != 0) /* every third stays running */
            store_bytes(&m, id, (size_t)(id % 50));
        assert_true(tgb_memo_check(&m));
    }
    size_t before = tgb_memo_answered(&m);
    size_t gone = tgb_memo_prune(&m, 500);
    assert_true(tgb_memo_check(&m));
    /* Answered below 500: ids 1..499 not divisible by 3 = 499 - 166. */
    assert_int_equal(gone, 333);
    assert_int_equal(tgb_memo_answered(&m), before - 333);
    for (uint64_t id = 1; id <= 1000; id++) {
        tgb_memo_slot_t *s = tgb_memo_find(&m, id);
        if (id < 500 && id % 3 != 0)
            assert_null(s);
        else
            assert_non_null(s);
    }
    /* Everything answered goes; the table shrinks round what is left. */
    size_t cap = m.cap;
    tgb_memo_prune(&m, UINT64_MAX);
    assert_int_equal(tgb_memo_answered(&m), 0);
    assert_int_equal(m.running, 333);
    assert_true(m.cap <= cap);
    assert_true(tgb_memo_check(&m));

    tgb_memo_clear(&m); /* a new epoch: running slots go too */
    assert_int_equal(m.count, 0);
    assert_true(tgb_memo_check(&m));
    assert_non_null(tgb_memo_add(&m, 7)); /* usable after a clear */
    assert_true(tgb_memo_check(&m));
    tgb_memo_fini(&m);
}

#define REF_IDS 3000

/* Random adds, stores, deletes, prunes and clears against a reference array,
 * ids both dense and spread over 64 bits, so that probe runs wrap round the
 * table's end and deletions shift across it. */
static void memo_random_against_reference(void **state)
{
    static uint64_t ids[REF_IDS];
    static uint8_t ref[REF_IDS]; /* 0 absent, 1 running, 2 answered */
    static size_t ref_len[REF_IDS];
    tgb_memo_t m;
    tgb_memo_init(&m);
    rng_seed(42);
    for (size_t i = 0; i < REF_IDS; i++)
        ids[i] = i < REF_IDS / 2 ? i + 1 : (rng_next() | 1);
    memset(ref, 0, sizeof(ref));

    for (int step = 0; step < 60000; step++) {
        size_t i = rng_below(REF_IDS);
        unsigned op = (unsigned)rng_below(100);
        if (op < 45) {
            tgb_memo_slot_t *s = tgb_memo_add(&m, ids[i]);
            if (ref[i] == 0) {
                assert_non_null(s);
                ref[i] = 1;
            } else {
                assert_null(s);
            }
        } else if (op < 75) {
            if (ref[i] == 1) {
                ref_len[i] = rng_below(64);
                store_bytes(&m, ids[i], ref_len[i]);
                ref[i] = 2;
            }
        } else if (op < 97) {
            assert_int_equal(tgb_memo_del(&m, ids[i]), ref[i] != 0);
            ref[i] = 0;
        } else if (op < 99) {
            uint64_t below = ids[rng_below(REF_IDS)];
            size_t expect = 0;
            for (size_t j = 0; j < REF_IDS; j++)
                if (ref[j] == 2 && ids[j] < below) {
                    ref[j] = 0;
                    expect++;
                }
            assert_int_equal(tgb_memo_prune(&m, below), expect);
        } else if (rng_below(20) == 0) {
            tgb_memo_clear(&m);
            memset(ref, 0, sizeof(ref));
        }
        assert_true(tgb_memo_check(&m));
        if (step % 500 == 0) {
            size_t count = 0, running = 0, bytes = 0;
            for (size_t j = 0; j < REF_IDS; j++) {
                tgb_memo_slot_t *s = tgb_memo_find(&m, ids[j]);
                if (ref[j] == 0) {
                    assert_null(s);
                    continue;
                }
                assert_non_null(s);
                count++;
                if (ref[j] == 1) {
                    running++;
                    assert_null(s->frame);
                } else {
                    bytes += ref_len[j];
                    assert_int_equal(s->len, ref_len[j]);
                }
            }
            assert_int_equal(m.count, count);
            assert_int_equal(m.running, running);
            assert_int_equal(m.bytes, bytes);
        }
    }
    tgb_memo_fini(&m);
}

/* ---- frames: jobs in, replies out ---- */

/* A decoded frame as the gate reads it: header, pairs (inflated), raw bytes. */
struct gframe {
    tg_wire_head_t h;
    uint8_t       *raw; /* header and body as they came */
    size_t         rawlen;
    uint8_t       *body; /* the pairs */
    size_t         len;
};

static void gframe_free(struct gframe *f)
{
    free(f->raw);
    if (f->body != f->raw + TG_BK_HEADER)
        free(f->body);
    memset(f, 0, sizeof(*f));
}

/* Parses the single frame in <p>,<n>. */
static void gframe_parse(const uint8_t *p, size_t n, struct gframe *f)
{
    memset(f, 0, sizeof(*f));
    assert_true(n >= TG_BK_HEADER);
    assert_int_equal(tg_wire_head(p, TG_BK_MAX_BODY_DEFAULT, &f->h), 0);
    assert_int_equal(n, TG_BK_HEADER + f->h.len);
    f->raw = malloc(n);
    assert_non_null(f->raw);
    memcpy(f->raw, p, n);
    f->rawlen = n;
    f->body = f->raw + TG_BK_HEADER;
    f->len = f->h.len;
    if (f->h.flags & TG_BK_F_LZ4)
        assert_int_equal(
            tg_wire_inflate(f->raw + TG_BK_HEADER, f->h.len, TG_BK_MAX_BODY_DEFAULT, &f->body,
                            &f->len),
            0);
    assert_true(tg_wire_check(f->body, f->len) >= 0);
}

/* Whether <f> has <key> with value <want>,<n>. */
static bool has_n(const struct gframe *f, const char *key, const void *want, size_t n)
{
    tg_wire_pair_t kv;
    return tg_wire_find(f->body, f->len, key, &kv) && kv.vlen == n && memcmp(kv.val, want, n) == 0;
}

static bool has(const struct gframe *f, const char *key, const char *want)
{
    return has_n(f, key, want, strlen(want));
}

static bool lacks(const struct gframe *f, const char *key)
{
    tg_wire_pair_t kv;
    return !tg_wire_find(f->body, f->len, key, &kv);
}

static void job_decodes_pairs(void **state)
{
    static const char body[] = "a\0b"; /* a NUL inside a value */
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_JOB, 42);
    tg_wire_put_str(&e, "route", "orders");
    tg_wire_put_str(&e, "kind", "http");
    tg_wire_put_str(&e, "attempt", "2");
    tg_wire_put_str(&e, "conn", "123456789012");
    tg_wire_put_str(&e, "method", "POST");
    tg_wire_put_str(&e, "path", "/x");
    tg_wire_put_str(&e, "h:content-type", "text/plain");
    tg_wire_put_str(&e, "h:x-a", "1");
    tg_wire_put_str(&e, "h:x-a", "2");
    tg_wire_put(&e, "body", body, 3);
    tg_wire_put(&e, "query", "", 0);
    assert_int_equal(tg_wire_end(&e, 0), 0);

    const uint8_t *b = e.p + TG_BK_HEADER;
    size_t len = e.len - TG_BK_HEADER;
    int n = tg_wire_check(b, len);
    assert_int_equal(n, 11);
    tgb_job_t *job = tgb_job__decode(42, b, len, (size_t)n);
    assert_non_null(job);

    assert_int_equal(tgb_job_id(job), 42);
    assert_int_equal(tgb_job_kind(job), TGB_KIND_HTTP);
    assert_string_equal(tgb_job_route(job), "orders");
    assert_int_equal(tgb_job_attempt(job), 2);
    assert_int_equal(tgb_job_conn(job), 123456789012ull);
    size_t vlen;
    const char *v = tgb_job_body(job, &vlen);
    assert_int_equal(vlen, 3);
    assert_memory_equal(v, body, 3);
    assert_int_equal(v[3], '\0');
    assert_string_equal(tgb_job_get(job, "path", NULL), "/x");
    assert_string_equal(tgb_job_get(job, "h:x-a", NULL), "1"); /* the first */
    v = tgb_job_get(job, "query", &vlen);
    assert_non_null(v);
    assert_int_equal(vlen, 0);
    assert_null(tgb_job_get(job, "user", &vlen));
    assert_int_equal(vlen, 0);
    assert_null(tgb_job_data(job, NULL));

    assert_int_equal(tgb_job_npairs(job), 11);
    assert_string_equal(tgb_job_pair(job, 0)->key, "route");
    assert_null(tgb_job_pair(job, 11));

    size_t pos = 0;
    tgb_pair_t h;
    const char *want[][2] = {{"content-type", "text/plain"}, {"x-a", "1"}, {"x-a", "2"}};
    for (int i = 0; i < 3; i++) {
        assert_true(tgb_job_header(job, &pos, &h));
        assert_string_equal(h.key, want[i][0]);
        assert_int_equal(h.klen, strlen(want[i][0]));
        assert_string_equal(h.val, want[i][1]);
    }
    assert_false(tgb_job_header(job, &pos, &h));
    tgb_job__free(job);

    /* A call with nothing but its data; an unknown kind. */
    tg_wire_enc_reset(&e);
    tg_wire_begin(&e, TG_BK_JOB, 7);
    tg_wire_put_str(&e, "kind", "call");
    tg_wire_put_str(&e, "data", "{\"n\":1}");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    job = tgb_job__decode(7, e.p + TG_BK_HEADER, e.len - TG_BK_HEADER, 2);
    assert_int_equal(tgb_job_kind(job), TGB_KIND_CALL);
    assert_string_equal(tgb_job_data(job, NULL), "{\"n\":1}");
    assert_string_equal(tgb_job_route(job), "");
    assert_int_equal(tgb_job_conn(job), 0);
    assert_int_equal(tgb_job_attempt(job), 1);
    tgb_job__free(job);
    job = tgb_job__decode(8, (const uint8_t *)"", 0, 0);
    assert_int_equal(tgb_job_kind(job), TGB_KIND_OTHER);
    assert_int_equal(tgb_job_npairs(job), 0);
    tgb_job__free(job);
    tg_wire_enc_fini(&e);
}

static void reply_encodes_and_decodes(void **state)
{
    tg_wire_enc_t e;
    struct gframe f;
    tg_wire_enc_init(&e);

    tgb_header_t hs[] = {{"content-type", "text/html"}, {"x-y", "z"}};
    tgb_reply_t r = {.status = 201, .headers = hs, .nheaders = 2, .body = "<p>", .body_len = 3,
                     .cache_ttl_ms = 30, .set_user = "u1"};
    assert_int_equal(tgb_job__reply(&e, 9, &r, TG_BK_MAX_BODY_DEFAULT, 0), 0);
    gframe_parse(e.p, e.len, &f);
    assert_int_equal(f.h.type, TG_BK_REPLY);
    assert_int_equal(f.h.id, 9);
    assert_true(has(&f, "status", "201"));
    assert_true(has(&f, "h:content-type", "text/html"));
    assert_true(has(&f, "h:x-y", "z"));
    assert_true(has(&f, "body", "<p>"));
    assert_true(has(&f, "cache_ttl", "30"));
    assert_true(has(&f, "set_user", "u1"));
    assert_true(lacks(&f, "data"));
    gframe_free(&f);

    /* Defaults: status 200, an empty data is still sent. */
    tgb_reply_t d = {.data = "", .data_len = 0};
    assert_int_equal(tgb_job__reply(&e, 10, &d, TG_BK_MAX_BODY_DEFAULT, 0), 0);
    gframe_parse(e.p, e.len, &f);
    assert_true(has(&f, "status", "200"));
    assert_true(has(&f, "data", ""));
    assert_true(lacks(&f, "body") && lacks(&f, "cache_ttl") && lacks(&f, "set_user"));
    gframe_free(&f);

    /* no_cache: cache_ttl 0, whatever cache_ttl_ms says. */
    tgb_reply_t nc = {.data = "1", .data_len = 1, .cache_ttl_ms = 500, .no_cache = true};
    assert_int_equal(tgb_job__reply(&e, 11, &nc, TG_BK_MAX_BODY_DEFAULT, 0), 0);
    gframe_parse(e.p, e.len, &f);
    assert_true(has(&f, "cache_ttl", "0"));
    gframe_free(&f);

    /* Refusals. */
    char name[300];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    tgb_header_t bad = {name, "v"};
    tgb_reply_t r2 = {.headers = &bad, .nheaders = 1};
    assert_int_equal(tgb_job__reply(&e, 1, &r2, TG_BK_MAX_BODY_DEFAULT, 0), -EINVAL);
    name[253] = '\0'; /* "h:" + 253 = 255: the longest key */
    assert_int_equal(tgb_job__reply(&e, 1, &r2, TG_BK_MAX_BODY_DEFAULT, 0), 0);
    tgb_reply_t r3 = {.status = 42};
    assert_int_equal(tgb_job__reply(&e, 1, &r3, TG_BK_MAX_BODY_DEFAULT, 0), -EINVAL);
    tgb_reply_t r4 = {.body_len = 3};
    assert_int_equal(tgb_job__reply(&e, 1, &r4, TG_BK_MAX_BODY_DEFAULT, 0), -EINVAL);
    assert_int_equal(tgb_job__reply(&e, 0, &d, TG_BK_MAX_BODY_DEFAULT, 0), -EINVAL);

    /* max_frame counts the pairs before compression. */
    static char big[4096];
    memset(big, 'a', sizeof(big));
    tgb_reply_t r5 = {.body = big, .body_len = sizeof(big)};
    assert_int_equal(tgb_job__reply(&e, 1, &r5, 4000, TG_BK_LZ4_MIN_DEFAULT), -EMSGSIZE);
    assert_int_equal(tgb_job__reply(&e, 1, &r5, 5000, TG_BK_LZ4_MIN_DEFAULT), 0);
    assert_true(e.len < 1000); /* compressed */
    gframe_parse(e.p, e.len, &f);
    assert_true(f.h.flags & TG_BK_F_LZ4);
    assert_true(has_n(&f, "body", big, sizeof(big)));
    gframe_free(&f);

    assert_int_equal(tgb_job__error(&e, 3, 422, "bad_input", "no", 1000, 0), 0);
    gframe_parse(e.p, e.len, &f);
    assert_int_equal(f.h.type, TG_BK_ERROR);
    assert_int_equal(f.h.id, 3);
    assert_true(has(&f, "code", "bad_input") && has(&f, "message", "no") &&
                has(&f, "status", "422"));
    gframe_free(&f);
    assert_int_equal(tgb_job__error(&e, 0, 0, "protocol", NULL, 1000, 0), 0);
    gframe_parse(e.p, e.len, &f);
    assert_true(lacks(&f, "status") && lacks(&f, "message"));
    gframe_free(&f);
    assert_int_equal(tgb_job__error(&e, 3, 0, "", NULL, 1000, 0), -EINVAL);
    tg_wire_enc_fini(&e);
}

/* ---- a fake gate ---- */

#define WAIT_MS 5000

static int gate_listen(uint16_t *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &al), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int gate_accept(int lfd)
{
    struct pollfd pf = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&pf, 1, WAIT_MS), 1);
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fd >= 0);
    struct timeval tv = {.tv_sec = WAIT_MS / 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    return fd;
}

/* Reads <n> bytes; false on EOF before the first. Fails the test on a timeout. */
static bool read_full(int fd, void *p, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)p + got, n - got);
        if (r == 0 && got == 0)
            return false;
        assert_true(r > 0);
        got += (size_t)r;
    }
    return true;
}

/* The next frame from the backend into <f>; false on EOF. */
static bool gate_read(int fd, struct gframe *f)
{
    uint8_t head[TG_BK_HEADER];
    tg_wire_head_t h;
    if (!read_full(fd, head, sizeof(head)))
        return false;
    assert_int_equal(tg_wire_head(head, TG_BK_MAX_BODY_DEFAULT, &h), 0);
    uint8_t *raw = malloc(TG_BK_HEADER + h.len);
    assert_non_null(raw);
    memcpy(raw, head, TG_BK_HEADER);
    if (h.len)
        assert_true(read_full(fd, raw + TG_BK_HEADER, h.len));
    gframe_parse(raw, TG_BK_HEADER + h.len, f);
    free(raw);
    return true;
}

/* The next frame, which must be of <type> about <id>. */
static void gate_expect(int fd, struct gframe *f, uint8_t type, uint64_t id)
{
    assert_true(gate_read(fd, f));
    assert_int_equal(f->h.type, type);
    assert_int_equal(f->h.id, id);
}

static void gate_expect_eof(int fd)
{
    struct gframe f;
    assert_false(gate_read(fd, &f));
}

static void gate_send(int fd, const tg_wire_enc_t *e)
{
    assert_int_equal(write(fd, e->p, e->len), (ssize_t)e->len);
}

/* Reads the backend's HELLO and answers with <epoch>, <max_frame>. */
static void gate_hello(int fd, uint64_t epoch, uint64_t max_frame, const char *name)
{
    struct gframe f;
    gate_expect(fd, &f, TG_BK_HELLO, 0);
    assert_true(has(&f, "version", "1"));
    assert_true(has(&f, "name", name));
    assert_true(has(&f, "features", "lz4"));
    gframe_free(&f);
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_HELLO, 0);
    tg_wire_put_str(&e, "version", "1");
    tg_wire_put_u64(&e, "epoch", epoch);
    tg_wire_put_u64(&e, "max_frame", max_frame);
    tg_wire_put_str(&e, "ping_ms", "0"); /* no silence check: a test may pause */
    tg_wire_put_str(&e, "features", "lz4");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    gate_send(fd, &e);
    tg_wire_enc_fini(&e);
}

/* Appends a JOB to <e>: <route>, a call with <data>, or http with <body>. */
static void add_job(tg_wire_enc_t *e, uint64_t id, const char *route, const char *data,
                    const void *body, size_t blen, size_t lz4)
{
    tg_wire_begin(e, TG_BK_JOB, id);
    tg_wire_put_str(e, "route", route);
    tg_wire_put_str(e, "kind", data ? "call" : "http");
    tg_wire_put_str(e, "conn", "77");
    if (data) {
        tg_wire_put_str(e, "data", data);
    } else {
        tg_wire_put_str(e, "method", "POST");
        tg_wire_put_str(e, "path", "/");
        tg_wire_put_str(e, "h:content-type", "text/plain");
        tg_wire_put(e, "body", body, blen);
    }
    assert_int_equal(tg_wire_end(e, lz4), 0);
}

static void gate_job(int fd, uint64_t id, const char *route, const char *data)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    add_job(&e, id, route, data, NULL, 0, 0);
    gate_send(fd, &e);
    tg_wire_enc_fini(&e);
}

/* ---- the backend under test, on its own thread ---- */

struct backend {
    tgb_options_t    o;
    char             connect[32];
    bool             use_run;  /* tgb_run with on_job; else the tgb_next loop */
    _Atomic(tgb_t *) handle;   /* for tgb_drain from the test's thread */
    int              rc;       /* what tgb_next or tgb_run ended with */
    int              connect_errno;
    int              errors;   /* replies the library refused, unexpectedly */
    tgb_stats_t      stats;    /* at the end */
    uint64_t         ran[64];  /* jobs handed out, in order */
    size_t           nran;
    uint64_t         done[64]; /* on_done calls, in order */
    size_t           ndone;
    pthread_t        thread;
};

static void on_done(uint64_t id, void *arg)
{
    struct backend *k = arg;
    if (k->ndone < 64)
        k->done[k->ndone++] = id;
}

/* Answers one job by its route: "echo" echoes, "memo" tells how many replies
 * are remembered, "big" answers 300 bytes, "slow" echoes after 500 ms,
 * "forget" does not answer (tgb_run answers for it). A reply the gate's
 * max_frame refuses becomes ERROR "too_big". */
static void answer(tgb_t *b, tgb_job_t *job, struct backend *k)
{
    const char *route = tgb_job_route(job);
    size_t len;
    int rc = 0;
    if (strcmp(route, "forget") == 0)
        return;
    if (strcmp(route, "slow") == 0)
        usleep(500 * 1000);
    if (strcmp(route, "memo") == 0) {
        char n[24];
        snprintf(n, sizeof(n), "%zu", tgb_remembered(b));
        rc = tgb_reply_data(b, job, 200, n, strlen(n));
    } else if (strcmp(route, "big") == 0) {
        static char big[300];
        memset(big, 'z', sizeof(big));
        rc = tgb_reply_body(b, job, 200, NULL, big, sizeof(big));
    } else if (tgb_job_kind(job) == TGB_KIND_CALL) {
        const char *d = tgb_job_data(job, &len);
        rc = tgb_reply_data(b, job, 200, d, len);
    } else {
        const char *body = tgb_job_body(job, &len);
        rc = tgb_reply_body(b, job, 200, tgb_job_get(job, "h:content-type", NULL), body, len);
    }
    if (rc == -EMSGSIZE)
        rc = tgb_error(b, job, 500, "too_big", NULL);
    if (rc != 0)
        k->errors++; /* no cmocka assert here: this is the backend's thread */
}

static void on_job(tgb_t *b, tgb_job_t *job, void *arg)
{
    struct backend *k = arg;
    if (k->nran < 64)
        k->ran[k->nran++] = tgb_job_id(job);
    answer(b, job, k);
}

/* The blocking API: a job of route "hold" is kept unanswered until the next
 * job (or a drain's -EBUSY) comes, then answered with data "held". */
static int next_loop(tgb_t *b, struct backend *k)
{
    tgb_job_t *held[8];
    size_t nheld = 0;
    tgb_job_t *job;
    for (;;) {
        int rc = tgb_next(b, &job);
        if (rc == 0) {
            if (k->nran < 64)
                k->ran[k->nran++] = tgb_job_id(job);
            if (strcmp(tgb_job_route(job), "hold") == 0 && nheld < 8) {
                held[nheld++] = job;
                continue;
            }
            answer(b, job, k);
        } else if (rc != -EBUSY) {
            return rc;
        }
        while (nheld)
            tgb_reply_data(b, held[--nheld], 200, "\"held\"", 6);
    }
}

static void *backend_main(void *arg)
{
    struct backend *k = arg;
    tgb_t *b = tgb_connect(&k->o);
    if (!b) {
        k->connect_errno = errno;
        return NULL;
    }
    atomic_store(&k->handle, b);
    k->rc = k->use_run ? tgb_run(b, on_job, k) : next_loop(b, k);
    tgb_stats(b, &k->stats);
    atomic_store(&k->handle, NULL);
    tgb_close(b);
    return NULL;
}

static void backend_start(struct backend *k, uint16_t port, const char *name)
{
    memset(k, 0, sizeof(*k));
    snprintf(k->connect, sizeof(k->connect), "127.0.0.1:%u", port);
    k->o.connect = k->connect;
    k->o.routes = "echo,hold,memo";
    k->o.name = name;
    k->o.capacity = 8;
    k->o.quiet = true;
    k->o.on_done = on_done;
    k->o.done_arg = k;
    atomic_init(&k->handle, NULL);
}

static void backend_go(struct backend *k)
{
    assert_int_equal(pthread_create(&k->thread, NULL, backend_main, k), 0);
}

/* The backend's handle, once tgb_connect has returned on its thread. */
static tgb_t *backend_handle(struct backend *k)
{
    for (int i = 0; i < WAIT_MS; i++) {
        tgb_t *b = atomic_load(&k->handle);
        if (b)
            return b;
        usleep(1000);
    }
    fail_msg("the backend never linked");
    return NULL;
}

static size_t count_of(const uint64_t *ids, size_t n, uint64_t id)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ids[i] == id;
    return c;
}

/* Effectively-once across everything a link can go through. */
static void fake_gate_effectively_once(void **state)
{
    static struct backend k; /* static: a failed assert must not free what its thread writes */
    struct gframe f, r1, r2;
    tg_wire_enc_t e;
    uint16_t port;
    int lfd = gate_listen(&port);
    tg_wire_enc_init(&e);
    backend_start(&k, port, "t1");
    backend_go(&k);

    /* HELLO both ways: name, routes, capacity, features. */
    int fd = gate_accept(lfd);
    assert_true(gate_read(fd, &f));
    assert_int_equal(f.h.type, TG_BK_HELLO);
    assert_true(has(&f, "routes", "echo,hold,memo") && has(&f, "capacity", "8"));
    gframe_free(&f);
    tg_wire_begin(&e, TG_BK_HELLO, 0);
    tg_wire_put_str(&e, "version", "1");
    tg_wire_put_str(&e, "epoch", "7");
    tg_wire_put_str(&e, "ping_ms", "0");
    tg_wire_put_str(&e, "features", "x,lz4");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    /* Two jobs in the same write as the HELLO: one batch, replies in order. */
    add_job(&e, 1, "echo", NULL, "hi", 2, 0);
    add_job(&e, 2, "echo", "{\"a\":1}", NULL, 0, 0);
    gate_send(fd, &e);
    tg_wire_enc_reset(&e);
    gate_expect(fd, &r1, TG_BK_REPLY, 1);
    assert_true(has(&r1, "status", "200") && has(&r1, "body", "hi") &&
                has(&r1, "h:content-type", "text/plain"));
    gate_expect(fd, &r2, TG_BK_REPLY, 2);
    assert_true(has(&r2, "data", "{\"a\":1}"));

    /* Job 1 again: the same bytes, from memory. */
    gate_job(fd, 1, "echo", NULL);
    gate_expect(fd, &f, TG_BK_REPLY, 1);
    assert_int_equal(f.rawlen, r1.rawlen);
    assert_memory_equal(f.raw, r1.raw, r1.rawlen);
    gframe_free(&f);

    /* PING: PONG with its id and pairs. */
    tg_wire_begin(&e, TG_BK_PING, 99);
    tg_wire_put_str(&e, "x", "y");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    gate_send(fd, &e);
    tg_wire_enc_reset(&e);
    gate_expect(fd, &f, TG_BK_PONG, 99);
    assert_true(has(&f, "x", "y"));
    gframe_free(&f);

    /* DONE_BELOW 2 forgets job 1: one reply (job 2's) remembered. */
    tg_wire_begin(&e, TG_BK_DONE_BELOW, 2);
    assert_int_equal(tg_wire_end(&e, 0), 0);
    add_job(&e, 3, "memo", "null", NULL, 0, 0);
    gate_send(fd, &e);
    tg_wire_enc_reset(&e);
    gate_expect(fd, &f, TG_BK_REPLY, 3);
    assert_true(has(&f, "data", "1"));
    gframe_free(&f);

    /* Job 4 is held by the application when the link drops. */
    gate_job(fd, 4, "hold", "null");
    usleep(50 * 1000); /* let it be handed out before the link goes */
    close(fd);

    /* Redial, same epoch: memory kept. Job 4 resubmitted joins the running one;
     * job 2 is a repeat; job 5 runs, and then the application answers 4, whose
     * reply goes to this link. */
    fd = gate_accept(lfd);
    gate_hello(fd, 7, TG_BK_MAX_BODY_DEFAULT, "t1");
    add_job(&e, 4, "hold", "null", NULL, 0, 0);
    add_job(&e, 2, "echo", "{\"a\":1}", NULL, 0, 0);
    add_job(&e, 5, "echo", "5", NULL, 0, 0);
    gate_send(fd, &e);
    tg_wire_enc_reset(&e);
    bool got[6] = {false};
    for (int i = 0; i < 3; i++) {
        assert_true(gate_read(fd, &f));
        assert_int_equal(f.h.type, TG_BK_REPLY);
        assert_true(f.h.id == 2 || f.h.id == 4 || f.h.id == 5);
        assert_false(got[f.h.id]);
        got[f.h.id] = true;
        if (f.h.id == 2)
            assert_memory_equal(f.raw, r2.raw, r2.rawlen);
        if (f.h.id == 4)
            assert_true(has(&f, "data", "\"held\""));
        gframe_free(&f);
    }
    close(fd);

    /* A new epoch: memory cleared, job 2 runs again. LZ4 both ways. */
    fd = gate_accept(lfd);
    gate_hello(fd, 8, TG_BK_MAX_BODY_DEFAULT, "t1");
    gate_job(fd, 2, "echo", "\"again\"");
    gate_expect(fd, &f, TG_BK_REPLY, 2);
    assert_true(has(&f, "data", "\"again\""));
    gframe_free(&f);
    static char big[8192];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = "abcdefgh"[i % 8 + (i / 4096)];
    add_job(&e, 6, "echo", NULL, big, sizeof(big), TG_BK_LZ4_MIN_DEFAULT);
    assert_true(e.p[3] & TG_BK_F_LZ4);
    gate_send(fd, &e);
    tg_wire_enc_reset(&e);
    gate_expect(fd, &f, TG_BK_REPLY, 6);
    assert_true(f.h.flags & TG_BK_F_LZ4);
    assert_true(has_n(&f, "body", big, sizeof(big)));
    gframe_free(&f);

    /* A bad frame: ERROR "protocol", the link closes, the backend redials. */
    static const uint8_t junk[TG_BK_HEADER] = {'X', 1, 2};
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    gate_expect(fd, &f, TG_BK_ERROR, 0);
    assert_true(has(&f, "code", "protocol"));
    gframe_free(&f);
    gate_expect_eof(fd);
    close(fd);
    fd = gate_accept(lfd);
    gate_hello(fd, 8, TG_BK_MAX_BODY_DEFAULT, "t1");
    gate_job(fd, 6, "echo", NULL); /* a repeat, still remembered */
    gate_expect(fd, &f, TG_BK_REPLY, 6);
    assert_true(has_n(&f, "body", big, sizeof(big)));
    gframe_free(&f);

    /* Drain: DRAIN, then a PING; a job sent before the PONG still runs; after
     * the PONG the backend closes. */
    tgb_drain(backend_handle(&k));
    gate_expect(fd, &f, TG_BK_DRAIN, 0);
    gframe_free(&f);
    struct gframe ping;
    gate_expect(fd, &ping, TG_BK_PING, 0);
    gate_job(fd, 7, "echo", "7");
    gate_expect(fd, &f, TG_BK_REPLY, 7);
    gframe_free(&f);
    tg_wire_begin(&e, TG_BK_PONG, ping.h.id);
    tg_wire_put_raw(&e, ping.body, ping.len);
    assert_int_equal(tg_wire_end(&e, 0), 0);
    gate_send(fd, &e);
    gframe_free(&ping);
    gate_expect_eof(fd);
    close(fd);
    assert_int_equal(pthread_join(k.thread, NULL), 0);

    assert_int_equal(k.rc, -ESHUTDOWN);
    assert_int_equal(k.errors, 0);
    /* Handler runs: 1 2 3 4 5, 2 in epoch 8, 6, 7; never 4 twice. */
    assert_int_equal(k.nran, 8);
    assert_int_equal(count_of(k.ran, k.nran, 4), 1);
    assert_int_equal(count_of(k.ran, k.nran, 2), 2);
    assert_int_equal(k.stats.jobs, 8);
    assert_int_equal(k.stats.repeats, 3); /* 1, 2, 6 */
    assert_int_equal(k.stats.joined, 1); /* 4 */
    assert_int_equal(k.stats.links, 4);
    assert_int_equal(k.stats.drops, 3);
    assert_int_equal(k.stats.violations, 1);
    assert_int_equal(k.stats.pruned, 1);
    assert_int_equal(k.stats.inflight, 0);
    assert_int_equal(k.stats.epoch, 8);
    /* on_done: once per handler run, after its reply was written. */
    assert_int_equal(k.ndone, 8);
    for (uint64_t id = 1; id <= 7; id++)
        assert_int_equal(count_of(k.done, k.ndone, id), count_of(k.ran, k.nran, id));

    gframe_free(&r1);
    gframe_free(&r2);
    tg_wire_enc_fini(&e);
    close(lfd);
}

/* tgb_run: an unanswered job gets ERROR 500; a reply past the gate's max_frame
 * is refused (the handler sends an ERROR instead); a JOB past it is a
 * violation; with no_reconnect the lost link ends tgb_run. */
static void fake_gate_run_limits_no_reconnect(void **state)
{
    static struct backend k; /* static: a failed assert must not free what its thread writes */
    struct gframe f;
    tg_wire_enc_t e;
    uint16_t port;
    int lfd = gate_listen(&port);
    tg_wire_enc_init(&e);
    backend_start(&k, port, "t2");
    k.use_run = true;
    k.o.routes = "echo,forget,big";
    k.o.no_reconnect = true;
    backend_go(&k);

    int fd = gate_accept(lfd);
    gate_hello(fd, 1, 200, "t2");
    gate_job(fd, 1, "forget", "null");
    gate_expect(fd, &f, TG_BK_ERROR, 1);
    assert_true(has(&f, "code", "internal") && has(&f, "status", "500"));
    gframe_free(&f);

    gate_job(fd, 2, "big", "null"); /* its 300-byte answer is past 200 */
    gate_expect(fd, &f, TG_BK_ERROR, 2);
    assert_true(has(&f, "code", "too_big"));
    gframe_free(&f);

    static char body2[300];
    memset(body2, 'c', sizeof(body2));
    add_job(&e, 3, "echo", NULL, body2, sizeof(body2), 0);
    gate_send(fd, &e);
    gate_expect(fd, &f, TG_BK_ERROR, 0);
    assert_true(has(&f, "code", "protocol"));
    gframe_free(&f);
    gate_expect_eof(fd);
    close(fd);
    assert_int_equal(pthread_join(k.thread, NULL), 0);
    assert_int_equal(k.rc, -ECONNRESET);
    assert_int_equal(k.errors, 0);
    assert_int_equal(k.stats.jobs, 2);
    assert_int_equal(k.stats.violations, 1);
    /* Nothing to accept: the backend did not redial. */
    struct pollfd pf = {.fd = lfd, .events = POLLIN};
    assert_int_equal(poll(&pf, 1, 300), 0);
    tg_wire_enc_fini(&e);
    close(lfd);
}

/* ping_ms 100: a handler busy for 500 ms does not count as the gate's
 * silence (its PING waits unread and is answered), but 300 ms of real silence
 * drops the link. */
static void fake_gate_silence(void **state)
{
    static struct backend k; /* static: a failed assert must not free what its thread writes */
    struct gframe f;
    tg_wire_enc_t e;
    uint16_t port;
    int lfd = gate_listen(&port);
    tg_wire_enc_init(&e);
    backend_start(&k, port, "t3");
    k.use_run = true;
    k.o.routes = "slow";
    k.o.no_reconnect = true;
    backend_go(&k);

    int fd = gate_accept(lfd);
    gate_expect(fd, &f, TG_BK_HELLO, 0);
    gframe_free(&f);
    tg_wire_begin(&e, TG_BK_HELLO, 0);
    tg_wire_put_str(&e, "version", "1");
    tg_wire_put_str(&e, "epoch", "1");
    tg_wire_put_str(&e, "ping_ms", "100");
    assert_int_equal(tg_wire_end(&e, 0), 0);
    add_job(&e, 1, "slow", "1", NULL, 0, 0);
    gate_send(fd, &e);
    tg_wire_enc_reset(&e);
    usleep(150 * 1000); /* the handler is busy: this PING waits unread */
    tg_wire_begin(&e, TG_BK_PING, 5);
    assert_int_equal(tg_wire_end(&e, 0), 0);
    gate_send(fd, &e);
    gate_expect(fd, &f, TG_BK_REPLY, 1);
    gframe_free(&f);
    gate_expect(fd, &f, TG_BK_PONG, 5);
    gframe_free(&f);
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    gate_expect_eof(fd); /* now silent: the backend gives up on us */
    gettimeofday(&t1, NULL);
    long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_usec - t0.tv_usec) / 1000;
    assert_true(ms >= 200 && ms < 2000);
    close(fd);
    assert_int_equal(pthread_join(k.thread, NULL), 0);
    assert_int_equal(k.rc, -ECONNRESET);
    assert_int_equal(k.errors, 0);
    assert_int_equal(k.stats.jobs, 1);
    assert_int_equal(k.stats.drops, 1);
    tg_wire_enc_fini(&e);
    close(lfd);
}

/* A gate that is not there: one dial with no_reconnect, give_up_ms otherwise;
 * bad options. */
static void connect_fails_cleanly(void **state)
{
    uint16_t port;
    int lfd = gate_listen(&port);
    close(lfd); /* a port nobody listens on */
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%u", port);
    tgb_options_t o = {.connect = addr, .routes = "x", .no_reconnect = true, .quiet = true};
    errno = 0;
    assert_null(tgb_connect(&o));
    assert_int_equal(errno, ECONNREFUSED);

    o.no_reconnect = false;
    o.give_up_ms = 350; /* dials at 0, 100, 300 ms, then gives up */
    assert_null(tgb_connect(&o));
    assert_int_equal(errno, ETIMEDOUT);

    tgb_options_t bad = {.connect = "no-port", .routes = "x"};
    assert_null(tgb_connect(&bad));
    assert_int_equal(errno, EINVAL);
    bad.connect = NULL;
    bad.routes = NULL;
    assert_null(tgb_connect(&bad));
    assert_int_equal(errno, EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(memo_add_find_store_del),
        cmocka_unit_test(memo_prune_keeps_running_and_ids_above),
        cmocka_unit_test(memo_random_against_reference),
        cmocka_unit_test(job_decodes_pairs),
        cmocka_unit_test(reply_encodes_and_decodes),
        cmocka_unit_test(fake_gate_effectively_once),
        cmocka_unit_test(fake_gate_run_limits_no_reconnect),
        cmocka_unit_test(fake_gate_silence),
        cmocka_unit_test(connect_fails_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
