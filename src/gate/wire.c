/* gate/wire.c - backend-link frames: see wire.h. */
#include "gate/wire.h"

#include <errno.h>
#include <lz4.h>
#include <stdlib.h>
#include <string.h>

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void set32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int tg_wire_head(const uint8_t *p, uint32_t max_body, tg_wire_head_t *h)
{
    if (p[0] != TG_BK_MAGIC || p[1] != TG_BK_VERSION)
        return -EPROTO;
    h->type = p[2];
    h->flags = p[3];
    h->len = get32(p + 4);
    h->id = get64(p + 8);
    if (h->type == 0 || h->type > TG_BK_TYPE_MAX || (h->flags & ~TG_BK_F_ALL))
        return -EPROTO;
    if (h->len > max_body)
        return -EMSGSIZE;
    return 0;
}

int tg_wire_next(tg_wire_iter_t *it, tg_wire_pair_t *kv)
{
    size_t left = (size_t)(it->end - it->p);
    if (left == 0)
        return 0;
    if (left < 2)
        return -EPROTO;
    uint16_t klen = get16(it->p);
    if (klen == 0 || klen > TG_BK_MAX_KEY || left - 2 < (size_t)klen + 4)
        return -EPROTO;
    uint32_t vlen = get32(it->p + 2 + klen);
    if (left - 2 - klen - 4 < vlen)
        return -EPROTO;
    kv->key = (const char *)it->p + 2;
    kv->klen = klen;
    kv->val = (const char *)it->p + 2 + klen + 4;
    kv->vlen = vlen;
    it->p += 2 + (size_t)klen + 4 + vlen;
    return 1;
}

int tg_wire_check(const uint8_t *body, size_t len)
{
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    int n = 0, rc;
    tg_wire_iter_init(&it, body, len);
    while ((rc = tg_wire_next(&it, &kv)) == 1)
        if (++n > TG_BK_MAX_PAIRS)
            return -EPROTO;
    return rc < 0 ? rc : n;
}

bool tg_wire_key_is(const tg_wire_pair_t *kv, const char *key)
{
    size_t n = strlen(key);
    return kv->klen == n && memcmp(kv->key, key, n) == 0;
}

bool tg_wire_find(const uint8_t *body, size_t len, const char *key, tg_wire_pair_t *kv)
{
    tg_wire_iter_t it;
    tg_wire_iter_init(&it, body, len);
    while (tg_wire_next(&it, kv) == 1)
        if (tg_wire_key_is(kv, key))
            return true;
    return false;
}

int tg_wire_u64(const char *p, size_t n, uint64_t *out)
{
    if (n == 0 || n > 20)
        return -EINVAL;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -EINVAL;
        uint64_t d = (uint64_t)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -EINVAL; /* past 2^64 - 1 */
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

int tg_wire_inflate(const uint8_t *in, size_t n, uint32_t max_body, uint8_t **out,
                    size_t *outlen)
{
    if (n < 4 || n - 4 > INT32_MAX)
        return -EPROTO;
    uint32_t raw = get32(in);
    if (raw > max_body || raw > INT32_MAX)
        return -EPROTO;
    uint8_t *buf = malloc(raw ? raw : 1);
    if (!buf)
        return -ENOMEM;
    int got = LZ4_decompress_safe((const char *)in + 4, (char *)buf, (int)(n - 4), (int)raw);
    if (got < 0 || (uint32_t)got != raw) {
        free(buf);
        return -EPROTO;
    }
    *out = buf;
    *outlen = raw;
    return 0;
}

void tg_wire_enc_init(tg_wire_enc_t *e)
{
    memset(e, 0, sizeof(*e));
}

void tg_wire_enc_fini(tg_wire_enc_t *e)
{
    free(e->p);
    memset(e, 0, sizeof(*e));
}

void tg_wire_enc_reset(tg_wire_enc_t *e)
{
    e->len = 0;
    e->start = 0;
    e->nomem = false;
}

static uint8_t *grow(tg_wire_enc_t *e, size_t n)
{
    if (e->nomem)
        return NULL;
    if (e->cap - e->len < n) {
        size_t cap = e->cap ? e->cap : 256;
        while (cap - e->len < n)
            cap *= 2;
        uint8_t *p = realloc(e->p, cap);
        if (!p) {
            e->nomem = true;
            return NULL;
        }
        e->p = p;
        e->cap = cap;
    }
    uint8_t *at = e->p + e->len;
    e->len += n;
    return at;
}

void tg_wire_begin(tg_wire_enc_t *e, uint8_t type, uint64_t id)
{
    e->start = e->len;
    uint8_t *h = grow(e, TG_BK_HEADER);
    if (!h)
        return;
    h[0] = TG_BK_MAGIC;
    h[1] = TG_BK_VERSION;
    h[2] = type;
    h[3] = 0;
    set32(h + 4, 0);
    tg_wire_set_id(h, id);
}

uint8_t *tg_wire_put_space(tg_wire_enc_t *e, const char *key, size_t klen, size_t vlen)
{
    if (vlen > UINT32_MAX || klen == 0 || klen > TG_BK_MAX_KEY) {
        e->nomem = true;
        return NULL;
    }
    uint8_t *p = grow(e, 2 + klen + 4 + vlen);
    if (!p)
        return NULL;
    p[0] = (uint8_t)(klen >> 8);
    p[1] = (uint8_t)klen;
    memcpy(p + 2, key, klen);
    set32(p + 2 + klen, (uint32_t)vlen);
    return p + 2 + klen + 4;
}

void tg_wire_put(tg_wire_enc_t *e, const char *key, const void *val, size_t vlen)
{
    uint8_t *v = tg_wire_put_space(e, key, strlen(key), vlen);
    if (v && vlen)
        memcpy(v, val, vlen);
}

void tg_wire_put_str(tg_wire_enc_t *e, const char *key, const char *val)
{
    tg_wire_put(e, key, val, strlen(val));
}

void tg_wire_put_u64(tg_wire_enc_t *e, const char *key, uint64_t val)
{
    char buf[24];
    int i = (int)sizeof(buf);
    do {
        buf[--i] = (char)('0' + val % 10);
        val /= 10;
    } while (val);
    tg_wire_put(e, key, buf + i, sizeof(buf) - (size_t)i);
}

void tg_wire_put_raw(tg_wire_enc_t *e, const void *pairs, size_t len)
{
    uint8_t *p = grow(e, len);
    if (p && len)
        memcpy(p, pairs, len);
}

/* Replaces the body after the header at <e->start> by its LZ4 form when
 * shorter; leaves it as it is otherwise (or when memory is short). */
static void compress_body(tg_wire_enc_t *e)
{
    size_t body = e->start + TG_BK_HEADER;
    size_t raw = e->len - body;
    if (raw > INT32_MAX)
        return;
    int bound = LZ4_compressBound((int)raw);
    uint8_t *tmp = malloc(4 + (size_t)bound);
    if (!tmp)
        return;
    int n = LZ4_compress_default((const char *)e->p + body, (char *)tmp + 4, (int)raw, bound);
    if (n > 0 && 4 + (size_t)n < raw) {
        set32(tmp, (uint32_t)raw);
        memcpy(e->p + body, tmp, 4 + (size_t)n);
        e->len = body + 4 + (size_t)n;
        e->p[e->start + 3] |= TG_BK_F_LZ4;
    }
    free(tmp);
}

int tg_wire_end(tg_wire_enc_t *e, size_t lz4_min)
{
    if (e->nomem) {
        tg_wire_enc_reset(e);
        return -ENOMEM;
    }
    size_t raw = e->len - e->start - TG_BK_HEADER;
    if (raw > UINT32_MAX) {
        e->len = e->start;
        return -EMSGSIZE;
    }
    if (lz4_min && raw >= lz4_min)
        compress_body(e);
    set32(e->p + e->start + 4, (uint32_t)(e->len - e->start - TG_BK_HEADER));
    return 0;
}

void tg_wire_set_id(uint8_t *frame, uint64_t id)
{
    set32(frame + 8, (uint32_t)(id >> 32));
    set32(frame + 12, (uint32_t)id);
}
