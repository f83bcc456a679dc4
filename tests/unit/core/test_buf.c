/* tests/unit/core/test_buf.c - block pools (src/core/pool.h) and the chunk
 * chains built on them (src/core/buf.h).
 *
 * Buffers are checked against a flat reference byte array under random
 * appends, consumes, clears, copy_outs and iovs, with tg_buf_check() after every
 * step and the pool's taken count matching the chunks the buffer holds. Tiny
 * chunk capacities (1, 7, 64 bytes) make every operation cross boundaries.
 * Deterministic: one fixed-seed generator. The -ENOMEM path of tg_buf_append is
 * not provoked here (the pool takes from malloc). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/common.h"
#include "core/loop.h" /* TG_CHUNK_SIZE */
#include "core/pool.h"

#include "../rng.h"

/* ---- fixture: a pool with small chunks, a buffer, a reference ---- */

#define REF_MAX (1u << 20)

struct fixture {
    tg_pool_t pool;
    tg_pool_t refs;     /* reference chunks */
    tg_buf_t  buf;
    size_t    cap;      /* payload bytes per chunk */
    char     *ref;      /* what the buffer should hold, flat */
    size_t    ref_len;
    char     *scratch;  /* copy_out and iov targets */
    uint8_t   next_byte;
};

static struct fixture *fixture_new(size_t cap, uint32_t keep)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (!f)
        return NULL;
    tg_pool_init(&f->pool, sizeof(tg_chunk_t) + cap, keep);
    tg_pool_init(&f->refs, sizeof(tg_chunk_t), keep);
    f->pool.refs = &f->refs;
    f->buf = TG_BUF_INIT;
    f->cap = cap;
    f->ref = malloc(REF_MAX);
    f->scratch = malloc(REF_MAX);
    if (!f->ref || !f->scratch) {
        free(f->ref);
        free(f->scratch);
        free(f);
        return NULL;
    }
    return f;
}

static void fixture_free(struct fixture *f)
{
    tg_buf_clear(&f->buf, &f->pool);
    tg_pool_fini(&f->pool);
    tg_pool_fini(&f->refs);
    free(f->ref);
    free(f->scratch);
    free(f);
}

static int setup_cap7(void **state)
{
    *state = fixture_new(7, 4);
    return *state ? 0 : -1;
}

static int teardown(void **state)
{
    fixture_free(*state);
    return 0;
}

static size_t chunks_held(const tg_buf_t *b)
{
    size_t n = 0;
    for (const tg_chunk_t *c = b->head; c; c = c->next)
        n++;
    return n;
}

/* The buffer matches the reference: length, bytes (read through copy_out and
 * through iov), invariants, and the pool lends exactly the chunks it holds.
 * An empty buffer holds no chunk. */
static void assert_matches(struct fixture *f)
{
    assert_true(tg_buf_check(&f->buf));
    assert_int_equal(f->buf.len, f->ref_len);
    assert_int_equal(tg_buf_empty(&f->buf), f->ref_len == 0);
    assert_int_equal(f->pool.taken + f->refs.taken, chunks_held(&f->buf));
    if (f->ref_len == 0) {
        assert_null(f->buf.head);
        assert_null(f->buf.tail);
        return;
    }
    /* No more chunks than the bytes need, give or take a partly read head
     * and a partly written tail. */
    assert_true(f->pool.taken <= (f->ref_len + f->cap - 1) / f->cap + 1 + f->refs.taken);
    memset(f->scratch, 0xee, f->ref_len);
    assert_int_equal(tg_buf_copy_out(&f->buf, 0, f->scratch, f->ref_len), f->ref_len);
    assert_memory_equal(f->scratch, f->ref, f->ref_len);
}

static void append(struct fixture *f, size_t n)
{
    TG_ASSERT(f->ref_len + n <= REF_MAX);
    char *src = malloc(n ? n : 1); /* a heap source: ASan sees any overread */
    assert_non_null(src);
    for (size_t i = 0; i < n; i++)
        src[i] = (char)f->next_byte++;
    assert_int_equal(tg_buf_append(&f->buf, &f->pool, src, n), 0);
    memcpy(f->ref + f->ref_len, src, n);
    f->ref_len += n;
    free(src);
    assert_matches(f);
}

/* Queues <n> bytes of a fresh shared block by reference, from offset <off>;
 * the buffer's own reference keeps the block alive after ours is dropped. */
static void append_ref(struct fixture *f, size_t off, size_t n)
{
    TG_ASSERT(f->ref_len + n <= REF_MAX);
    tg_shared_t *s = tg_shared_new(off + n + 3);
    assert_non_null(s);
    for (size_t i = 0; i < s->len; i++)
        s->data[i] = (char)(i >= off && i < off + n ? f->next_byte++ : 0x55);
    assert_int_equal(tg_buf_append_ref(&f->buf, &f->pool, s, off, n), 0);
    memcpy(f->ref + f->ref_len, s->data + off, n);
    f->ref_len += n;
    tg_shared_unref(s);
    assert_matches(f);
}

static void consume(struct fixture *f, size_t n)
{
    tg_buf_consume(&f->buf, &f->pool, n);
    memmove(f->ref, f->ref + n, f->ref_len - n);
    f->ref_len -= n;
    assert_matches(f);
}

/* The iovecs list the unread bytes in order, none empty. */
static void assert_iov_matches(struct fixture *f, int max)
{
    struct iovec iov[64];
    TG_ASSERT(max <= 64);
    int n = tg_buf_iov(&f->buf, iov, max);
    assert_true(n >= 0 && n <= max);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        assert_true(iov[i].iov_len > 0);
        assert_true(off + iov[i].iov_len <= f->ref_len);
        assert_memory_equal(iov[i].iov_base, f->ref + off, iov[i].iov_len);
        off += iov[i].iov_len;
    }
    if (n < max) /* not cut short by <max>: everything was listed */
        assert_int_equal(off, f->ref_len);
    if (f->ref_len > 0 && max > 0)
        assert_true(n > 0);
}

/* ---- pool ---- */

static void pool_counts_blocks_taken_and_given(void **state)
{
    tg_pool_t p;
    void *b[10];
    tg_pool_init(&p, 100, 4);
    assert_int_equal(p.size, 100);
    for (int i = 0; i < 10; i++) {
        b[i] = tg_pool_take(&p);
        assert_non_null(b[i]);
        memset(b[i], i, 100); /* the whole block is usable */
        assert_int_equal(p.taken, (uint64_t)i + 1);
    }
    for (int i = 0; i < 10; i++)
        for (int j = i + 1; j < 10; j++)
            assert_ptr_not_equal(b[i], b[j]);
    for (int i = 0; i < 10; i++) {
        tg_pool_give(&p, b[i]);
        assert_int_equal(p.taken, 9 - (uint64_t)i);
    }
    assert_int_equal(p.taken, 0);
    tg_pool_fini(&p);
}

static void pool_keeps_at_most_keep_free_blocks(void **state)
{
    tg_pool_t p;
    void *b[10];
    tg_pool_init(&p, 64, 4);
    for (int i = 0; i < 10; i++)
        b[i] = tg_pool_take(&p);
    assert_int_equal(p.nfree, 0);
    for (int i = 0; i < 10; i++) {
        tg_pool_give(&p, b[i]);
        assert_int_equal(p.nfree, i < 4 ? (uint32_t)i + 1 : 4);
    }
    /* Kept blocks come back before malloc is asked again. */
    void *again[4];
    for (int i = 0; i < 4; i++) {
        again[i] = tg_pool_take(&p);
        bool kept = false;
        for (int j = 0; j < 10; j++)
            kept |= again[i] == b[j];
        assert_true(kept);
        assert_int_equal(p.nfree, 3 - (uint32_t)i);
    }
    for (int i = 0; i < 4; i++)
        tg_pool_give(&p, again[i]);
    assert_int_equal(p.taken, 0);
    assert_int_equal(p.nfree, 4);
    tg_pool_fini(&p);
    assert_int_equal(p.nfree, 0);
    assert_null(p.free);
}

static void pool_with_keep_zero_keeps_nothing(void **state)
{
    tg_pool_t p;
    tg_pool_init(&p, 32, 0);
    void *a = tg_pool_take(&p), *b = tg_pool_take(&p);
    tg_pool_give(&p, a);
    tg_pool_give(&p, b);
    assert_int_equal(p.nfree, 0);
    assert_int_equal(p.taken, 0);
    tg_pool_fini(&p);
}

static void pool_give_null_is_a_noop(void **state)
{
    tg_pool_t p;
    tg_pool_init(&p, 32, 2);
    tg_pool_give(&p, NULL);
    assert_int_equal(p.taken, 0);
    assert_int_equal(p.nfree, 0);
    tg_pool_fini(&p);
}

static void pool_rounds_tiny_blocks_up_to_a_free_list_link(void **state)
{
    tg_pool_t p;
    tg_pool_init(&p, 1, 2);
    assert_true(p.size >= sizeof(tg_pool_block_t));
    void *a = tg_pool_take(&p);
    memset(a, 0x5a, p.size);
    tg_pool_give(&p, a);
    assert_int_equal(p.nfree, 1);
    tg_pool_fini(&p);
}

/* ---- buffer ---- */

static void empty_buffer_holds_no_chunk(void **state)
{
    struct fixture *f = *state;
    assert_true(tg_buf_check(&f->buf));
    assert_true(tg_buf_empty(&f->buf));
    append(f, 0); /* nothing: no chunk taken */
    assert_null(f->buf.head);
    assert_int_equal(f->pool.taken, 0);
    assert_int_equal(tg_buf_iov(&f->buf, (struct iovec[1]){ 0 }, 1), 0);
    assert_int_equal(tg_buf_copy_out(&f->buf, 0, f->scratch, 10), 0);
    tg_buf_consume(&f->buf, &f->pool, 0);
    tg_buf_clear(&f->buf, &f->pool);
    assert_matches(f);

    append(f, 5);
    consume(f, 5); /* consumed whole: the chunk goes back at once */
    assert_null(f->buf.head);
    assert_int_equal(f->pool.taken, 0);

    append(f, 30);
    consume(f, 29);
    consume(f, 1);
    assert_null(f->buf.head);
    assert_int_equal(f->pool.taken, 0);
}

static void append_fills_the_tail_before_taking_a_chunk(void **state)
{
    struct fixture *f = *state; /* 7 bytes per chunk */
    append(f, 3);
    assert_int_equal(chunks_held(&f->buf), 1);
    append(f, 4); /* exactly full */
    assert_int_equal(chunks_held(&f->buf), 1);
    append(f, 1);
    assert_int_equal(chunks_held(&f->buf), 2);
    append(f, 6 + 7 + 7 + 2); /* fills the tail, two whole chunks, two bytes */
    assert_int_equal(chunks_held(&f->buf), 5);
    assert_int_equal(f->buf.tail->wr - f->buf.tail->rd, 2);
    append(f, 5 + 7 * 100 + 3); /* one call: the tail, 100 whole chunks, 3 bytes */
    assert_int_equal(chunks_held(&f->buf), 5 + 101);
    assert_iov_matches(f, 64);
}

static void iov_lists_unread_bytes_in_order(void **state)
{
    struct fixture *f = *state;
    append(f, 20); /* 7 + 7 + 6 */
    struct iovec iov[8];
    assert_int_equal(tg_buf_iov(&f->buf, iov, 8), 3);
    assert_int_equal(iov[0].iov_len, 7);
    assert_int_equal(iov[1].iov_len, 7);
    assert_int_equal(iov[2].iov_len, 6);
    consume(f, 3); /* the head is now partly read */
    assert_int_equal(tg_buf_iov(&f->buf, iov, 8), 3);
    assert_int_equal(iov[0].iov_len, 4);
    assert_memory_equal(iov[0].iov_base, f->ref, 4);
    assert_int_equal(tg_buf_iov(&f->buf, iov, 2), 2); /* cut short by <max> */
    assert_int_equal(tg_buf_iov(&f->buf, iov, 0), 0);
    for (int max = 0; max <= 4; max++)
        assert_iov_matches(f, max);
}

static void consume_partial_and_whole_chunks(void **state)
{
    struct fixture *f = *state;
    append(f, 50); /* 8 chunks: 7 * 7 + 1 */
    assert_int_equal(chunks_held(&f->buf), 8);
    consume(f, 1); /* partial head */
    assert_int_equal(chunks_held(&f->buf), 8);
    consume(f, 6); /* the rest of the head, exactly */
    assert_int_equal(chunks_held(&f->buf), 7);
    consume(f, 7 + 3); /* a whole chunk and part of the next */
    assert_int_equal(chunks_held(&f->buf), 6);
    consume(f, 0);
    assert_int_equal(chunks_held(&f->buf), 6);
    append(f, 13); /* appending after consuming */
    consume(f, f->ref_len - 1); /* all but the last byte */
    assert_int_equal(chunks_held(&f->buf), 1);
    consume(f, 1);
    assert_int_equal(f->pool.taken, 0);
}

static void clear_gives_every_chunk_back(void **state)
{
    struct fixture *f = *state;
    append(f, 1000);
    consume(f, 10);
    assert_true(f->pool.taken > 100);
    tg_buf_clear(&f->buf, &f->pool);
    f->ref_len = 0;
    assert_matches(f);
    assert_int_equal(f->pool.taken, 0);
    assert_int_equal(f->pool.nfree, f->pool.keep); /* the rest went back to malloc */
    tg_buf_clear(&f->buf, &f->pool); /* on an empty buffer */
    assert_matches(f);
    append(f, 9); /* and it is usable again */
}

static void copy_out_at_offsets(void **state)
{
    struct fixture *f = *state;
    append(f, 40);
    consume(f, 5); /* the head chunk is partly read */
    size_t len = f->ref_len;
    for (size_t off = 0; off <= len + 2; off++) {
        for (size_t n = 0; n <= len + 2; n++) {
            memset(f->scratch, 0xee, n + 1);
            size_t want = off >= len ? 0 : (n < len - off ? n : len - off);
            assert_int_equal(tg_buf_copy_out(&f->buf, off, f->scratch, n), want);
            assert_memory_equal(f->scratch, f->ref + (off < len ? off : 0), want);
            assert_int_equal((unsigned char)f->scratch[want], 0xee); /* nothing past it */
        }
    }
    assert_matches(f); /* copy_out consumes nothing */
}

/* Random operations against the reference, on chunks of <cap> bytes. */
static void random_operations(size_t cap, uint64_t seed, int ops, size_t max_append)
{
    struct fixture *f = fixture_new(cap, 8);
    assert_non_null(f);
    rng_seed(seed);
    for (int op = 0; op < ops; op++) {
        unsigned r = (unsigned)(rng_next() % 100);
        if (r < 30) {
            size_t n = rng_below(rng_below(4) == 0 ? max_append * 8 : max_append + 1);
            if (f->ref_len + n > REF_MAX / 2)
                n = 0;
            append(f, n);
        } else if (r < 40) {
            size_t n = rng_below(max_append * 2 + 1);
            if (f->ref_len + n > REF_MAX / 2)
                n = 0;
            append_ref(f, rng_below(5), n);
        } else if (r < 75) {
            /* Often at or just around a chunk boundary. */
            size_t n = rng_below(f->ref_len + 1);
            if (rng_below(3) == 0 && f->buf.head) {
                size_t head = f->buf.head->wr - f->buf.head->rd;
                n = head + rng_below(3) - 1;
                if (n > f->ref_len)
                    n = f->ref_len;
            }
            consume(f, n);
        } else if (r < 85) {
            size_t off = rng_below(f->ref_len + 2), n = rng_below(f->ref_len + 2);
            size_t want = off >= f->ref_len ? 0 : (n < f->ref_len - off ? n : f->ref_len - off);
            assert_int_equal(tg_buf_copy_out(&f->buf, off, f->scratch, n), want);
            if (want)
                assert_memory_equal(f->scratch, f->ref + off, want);
        } else if (r < 97) {
            assert_iov_matches(f, (int)rng_below(65));
        } else {
            tg_buf_clear(&f->buf, &f->pool);
            f->ref_len = 0;
            assert_matches(f);
        }
        assert_true(tg_buf_check(&f->buf));
    }
    consume(f, f->ref_len);
    assert_null(f->buf.head);
    assert_int_equal(f->pool.taken, 0);
    assert_int_equal(f->refs.taken, 0);
    fixture_free(f);
}

static void random_operations_match_a_flat_reference(void **state)
{
    random_operations(1, 11, 20000, 20);
    random_operations(7, 12, 40000, 100);
    random_operations(64, 13, 40000, 300);
    random_operations(TG_CHUNK_SIZE - sizeof(tg_chunk_t), 14, 5000, 40000); /* a loop's */
}

/* Bytes appended after a reference go to a new owned chunk, never into the
 * shared block; consuming drops the buffer's reference. */
static void references_share_bytes_without_copying(void **state)
{
    struct fixture *f = *state;
    tg_shared_t *s = tg_shared_new(10);
    assert_non_null(s);
    memcpy(s->data, "0123456789", 10);
    append(f, 3);
    assert_int_equal(tg_buf_append_ref(&f->buf, &f->pool, s, 2, 5), 0);
    memcpy(f->ref + f->ref_len, "23456", 5);
    f->ref_len += 5;
    assert_int_equal(atomic_load(&s->refs), 2);
    append(f, 4);
    assert_memory_equal(s->data, "0123456789", 10);
    struct iovec iov[8];
    int n = tg_buf_iov(&f->buf, iov, 8);
    assert_true(n >= 3);
    assert_ptr_equal(iov[1].iov_base, s->data + 2); /* the shared bytes themselves */
    consume(f, 3 + 4);                              /* into the reference */
    assert_int_equal(atomic_load(&s->refs), 2);
    consume(f, 1);                                  /* past it: reference dropped */
    assert_int_equal(atomic_load(&s->refs), 1);
    assert_int_equal(f->refs.taken, 0);
    tg_shared_unref(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_counts_blocks_taken_and_given),
        cmocka_unit_test(pool_keeps_at_most_keep_free_blocks),
        cmocka_unit_test(pool_with_keep_zero_keeps_nothing),
        cmocka_unit_test(pool_give_null_is_a_noop),
        cmocka_unit_test(pool_rounds_tiny_blocks_up_to_a_free_list_link),
        cmocka_unit_test_setup_teardown(empty_buffer_holds_no_chunk, setup_cap7, teardown),
        cmocka_unit_test_setup_teardown(append_fills_the_tail_before_taking_a_chunk, setup_cap7,
                                        teardown),
        cmocka_unit_test_setup_teardown(iov_lists_unread_bytes_in_order, setup_cap7, teardown),
        cmocka_unit_test_setup_teardown(consume_partial_and_whole_chunks, setup_cap7, teardown),
        cmocka_unit_test_setup_teardown(clear_gives_every_chunk_back, setup_cap7, teardown),
        cmocka_unit_test_setup_teardown(copy_out_at_offsets, setup_cap7, teardown),
        cmocka_unit_test_setup_teardown(references_share_bytes_without_copying, setup_cap7,
                                        teardown),
        cmocka_unit_test(random_operations_match_a_flat_reference),
    };
    if (getenv("TG_TEST_FILTER")) /* e.g. TG_TEST_FILTER='pool*' */
        cmocka_set_test_filter(getenv("TG_TEST_FILTER"));
    return cmocka_run_group_tests_name("core/buf", tests, NULL, NULL);
}
