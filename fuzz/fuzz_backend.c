/* fuzz/fuzz_backend.c - arbitrary bytes as the stream a backend sends the
 * gate, through the backend-link decoder and back through the encoder
 * (gate/wire.h), with the functions checked against each other and against a
 * plain reading of docs/backend-protocol.md rather than only for crashes:
 *  - frame after frame: a header (tg_wire_head, MAX_BODY), its body, inflated
 *    when flagged (tg_wire_inflate); the first refusal, or a frame cut short,
 *    ends the stream, as it ends the link;
 *  - tg_wire_check() accepts exactly the bodies that tg_wire_next() walks to
 *    the end in at most TG_BK_MAX_PAIRS pairs of 1..TG_BK_MAX_KEY-byte keys,
 *    each pair inside the body; it refuses with -EPROTO only;
 *  - tg_wire_find() returns the first pair with its key, tg_wire_key_is() and
 *    tg_wire_u64() agree with a reference (digits only, at most 2^64 - 1);
 *  - every accepted frame is encoded again (tg_wire_begin/put/end, lz4_min
 *    128) into one encoder for the whole input: the frame decodes to the same
 *    type, id and pairs, is compressed only when that is shorter, and
 *    tg_wire_set_id() changes its id alone; at the end the encoder's stream
 *    decodes to the same frames again, so appending never disturbs the frames
 *    before. Any disagreement aborts. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gate/wire.h"

#define MAX_BODY   (1u << 20) /* the gate's configured limit, in this target */
#define MAX_FRAMES 256        /* frames checked per input */
#define LZ4_MIN    128
#define MAX_RAW    (4u << 20) /* inflated bytes per input: then stop, to stay fast */

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "fuzz_backend: check failed: %s (line %d)\n", #cond,      \
                    __LINE__);                                                         \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* What a frame decoded to, to compare with its copy in the encoder's stream. */
typedef struct digest {
    uint8_t  type;
    uint64_t id;
    int      npairs;
    uint64_t hash; /* of every key and value, lengths included */
} digest_t;

static tg_wire_pair_t pairs[TG_BK_MAX_PAIRS + 1];
static digest_t       frames[MAX_FRAMES];

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 1099511628211u;
    return h;
}

static uint64_t hash_pair(uint64_t h, const tg_wire_pair_t *kv)
{
    uint32_t lens[2] = { kv->klen, kv->vlen };
    h = fnv(h, lens, sizeof(lens));
    h = fnv(h, kv->key, kv->klen);
    return fnv(h, kv->val, kv->vlen);
}

static bool same_pair(const tg_wire_pair_t *a, const tg_wire_pair_t *b)
{
    return a->klen == b->klen && a->vlen == b->vlen && memcmp(a->key, b->key, a->klen) == 0 &&
           (a->vlen == 0 || memcmp(a->val, b->val, a->vlen) == 0);
}

/* Walks <body> with tg_wire_next into pairs[]; returns the count, or -1 when
 * it is malformed or has too many pairs. Checks each pair lies inside. */
static int walk(const uint8_t *body, size_t len)
{
    tg_wire_iter_t it;
    tg_wire_iter_init(&it, body, len);
    int n = 0, rc;
    while ((rc = tg_wire_next(&it, &pairs[n])) == 1) {
        const tg_wire_pair_t *kv = &pairs[n];
        CHECK(kv->klen >= 1 && kv->klen <= TG_BK_MAX_KEY);
        const uint8_t *k = (const uint8_t *)kv->key, *v = (const uint8_t *)kv->val;
        CHECK(k >= body && k + kv->klen + 4 == v && v + kv->vlen <= body + len);
        CHECK(it.p == v + kv->vlen); /* pairs are contiguous */
        if (++n > TG_BK_MAX_PAIRS)
            return -1;
    }
    CHECK(rc == 0 || rc == -EPROTO);
    if (rc == 0)
        CHECK(it.p == body + len);
    return rc == 0 ? n : -1;
}

/* tg_wire_u64 against the rule: 1..20 ASCII digits worth at most 2^64 - 1. */
static void check_u64(const tg_wire_pair_t *kv)
{
    unsigned __int128 v = 0;
    uint64_t got = 12345;
    bool ok = kv->vlen >= 1 && kv->vlen <= 20;
    for (uint32_t i = 0; ok && i < kv->vlen; i++) {
        ok = kv->val[i] >= '0' && kv->val[i] <= '9';
        v = v * 10 + (unsigned)(kv->val[i] - '0');
    }
    ok = ok && v <= UINT64_MAX;
    int rc = tg_wire_u64(kv->val, kv->vlen, &got);
    CHECK(rc == 0 || rc == -EINVAL);
    CHECK((rc == 0) == ok);
    if (ok)
        CHECK(got == (uint64_t)v);
    else
        CHECK(got == 12345); /* untouched on refusal */
}

/* The key as a C string, when it has no NUL byte. */
static bool key_cstr(const tg_wire_pair_t *kv, char *buf)
{
    if (memchr(kv->key, 0, kv->klen))
        return false;
    memcpy(buf, kv->key, kv->klen);
    buf[kv->klen] = '\0';
    return true;
}

/* Lookups: the first pair with each key (the first 64 pairs), and a key that
 * is not there. */
static void check_find(const uint8_t *body, size_t len, int n)
{
    char key[TG_BK_MAX_KEY + 1];
    for (int i = 0; i < n && i < 64; i++) {
        if (!key_cstr(&pairs[i], key))
            continue;
        CHECK(tg_wire_key_is(&pairs[i], key));
        int first = 0;
        while (!tg_wire_key_is(&pairs[first], key))
            first++;
        tg_wire_pair_t kv;
        CHECK(tg_wire_find(body, len, key, &kv));
        CHECK(kv.key == pairs[first].key && kv.val == pairs[first].val &&
              kv.vlen == pairs[first].vlen);
        key[kv.klen - 1] ^= 0x20; /* a near miss, unless some pair has it */
        bool there = false;
        for (int j = 0; j < n && !there; j++)
            there = tg_wire_key_is(&pairs[j], key);
        CHECK(tg_wire_find(body, len, key, &kv) == there);
    }
    tg_wire_pair_t kv;
    CHECK(!tg_wire_find(body, len, "", &kv)); /* keys are never empty */
}

/* Whether <kv>'s value is the canonical decimal of a u64 tg_wire_u64 takes. */
static bool canonical_u64(const tg_wire_pair_t *kv, uint64_t *v)
{
    if (tg_wire_u64(kv->val, kv->vlen, v) != 0)
        return false;
    return kv->vlen == 1 || kv->val[0] != '0';
}

/* Appends <n> pairs[] as a frame, with whichever encoder call fits each pair
 * (raw bytes for a key with a NUL, which tg_wire_put cannot take). */
static void encode(tg_wire_enc_t *e, uint8_t type, uint64_t id, int n)
{
    char key[TG_BK_MAX_KEY + 1];
    tg_wire_begin(e, type, id);
    for (int i = 0; i < n; i++) {
        const tg_wire_pair_t *kv = &pairs[i];
        uint64_t v;
        if (!key_cstr(kv, key))
            tg_wire_put_raw(e, kv->key - 2, 2 + (size_t)kv->klen + 4 + kv->vlen);
        else if (canonical_u64(kv, &v))
            tg_wire_put_u64(e, key, v);
        else if (i % 2 && !memchr(kv->val, 0, kv->vlen) && kv->vlen < 4096) {
            char val[4096];
            memcpy(val, kv->val, kv->vlen);
            val[kv->vlen] = '\0';
            tg_wire_put_str(e, key, val);
        } else
            tg_wire_put(e, key, kv->val, kv->vlen);
    }
    CHECK(tg_wire_end(e, LZ4_MIN) == 0);
}

/* Decodes the frame at <p> (<avail> bytes) into a digest; returns its size on
 * the wire. When <want> is given, its pairs must equal pairs[]. */
static size_t decode_copy(const uint8_t *p, size_t avail, digest_t *d, int want)
{
    tg_wire_head_t h;
    CHECK(avail >= TG_BK_HEADER);
    CHECK(tg_wire_head(p, UINT32_MAX, &h) == 0);
    CHECK(avail - TG_BK_HEADER >= h.len);
    const uint8_t *body = p + TG_BK_HEADER;
    size_t len = h.len;
    uint8_t *raw = NULL;
    if (h.flags & TG_BK_F_LZ4) {
        size_t rawlen;
        CHECK(tg_wire_inflate(body, len, MAX_BODY, &raw, &rawlen) == 0);
        CHECK(rawlen >= LZ4_MIN && len < rawlen); /* compressed only when shorter */
        body = raw;
        len = rawlen;
    }
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    int n = 0, rc;
    d->type = h.type;
    d->id = h.id;
    d->hash = 14695981039346656037u;
    tg_wire_iter_init(&it, body, len);
    while ((rc = tg_wire_next(&it, &kv)) == 1) {
        if (want >= 0) {
            CHECK(n < want);
            CHECK(same_pair(&kv, &pairs[n]));
        }
        d->hash = hash_pair(d->hash, &kv);
        n++;
    }
    CHECK(rc == 0);
    CHECK(tg_wire_check(body, len) == n);
    if (want >= 0)
        CHECK(n == want);
    d->npairs = n;
    free(raw);
    return TG_BK_HEADER + (size_t)h.len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static tg_wire_enc_t enc;
    static bool ready;
    if (!ready) {
        tg_wire_enc_init(&enc);
        ready = true;
    }
    tg_wire_enc_reset(&enc);

    size_t off = 0, inflated = 0;
    int nframes = 0;
    while (size - off >= TG_BK_HEADER && nframes < MAX_FRAMES && inflated <= MAX_RAW) {
        tg_wire_head_t h;
        int rc = tg_wire_head(data + off, MAX_BODY, &h);
        if (rc != 0) {
            CHECK(rc == -EPROTO || rc == -EMSGSIZE);
            CHECK(rc == -EPROTO || h.len > MAX_BODY);
            break; /* the link closes */
        }
        CHECK(h.type >= 1 && h.type <= TG_BK_TYPE_MAX && !(h.flags & ~TG_BK_F_ALL));
        if (size - off - TG_BK_HEADER < h.len)
            break; /* the rest has not arrived */
        const uint8_t *body = data + off + TG_BK_HEADER;
        size_t len = h.len;
        off += TG_BK_HEADER + (size_t)h.len;

        uint8_t *raw = NULL;
        if (h.flags & TG_BK_F_LZ4) {
            size_t rawlen = 0;
            rc = tg_wire_inflate(body, len, MAX_BODY, &raw, &rawlen);
            CHECK(rc == 0 || rc == -EPROTO);
            if (rc != 0)
                break;
            CHECK(rawlen <= MAX_BODY);
            inflated += rawlen;
            body = raw;
            len = rawlen;
        }

        int n = tg_wire_check(body, len);
        int walked = walk(body, len);
        CHECK(n == walked || (n == -EPROTO && walked == -1));
        if (n < 0) {
            free(raw);
            break;
        }
        for (int i = 0; i < n; i++)
            check_u64(&pairs[i]);
        check_find(body, len, n);

        /* Encode it again, appended to the frames before. */
        size_t start = enc.len;
        encode(&enc, h.type, h.id, n);
        CHECK(enc.start == start);
        digest_t *d = &frames[nframes++];
        CHECK(decode_copy(enc.p + start, enc.len - start, d, n) == enc.len - start);
        CHECK(d->type == h.type && d->id == h.id && d->npairs == n);

        /* A resubmitted job gets a new id in place; nothing else moves. */
        uint8_t before[TG_BK_HEADER];
        memcpy(before, enc.p + start, TG_BK_HEADER);
        tg_wire_set_id(enc.p + start, ~h.id);
        tg_wire_head_t h2;
        CHECK(tg_wire_head(enc.p + start, UINT32_MAX, &h2) == 0 && h2.id == ~h.id);
        CHECK(memcmp(before, enc.p + start, 8) == 0);
        tg_wire_set_id(enc.p + start, h.id);
        CHECK(memcmp(before, enc.p + start, TG_BK_HEADER) == 0);
        free(raw);
    }

    /* The whole encoder: the same frames, in order. */
    size_t at = 0;
    for (int i = 0; i < nframes; i++) {
        digest_t d;
        at += decode_copy(enc.p + at, enc.len - at, &d, -1);
        CHECK(d.type == frames[i].type && d.id == frames[i].id &&
              d.npairs == frames[i].npairs && d.hash == frames[i].hash);
    }
    CHECK(at == enc.len);
    return 0;
}
