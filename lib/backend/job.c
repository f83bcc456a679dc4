/* lib/backend/job.c - jobs and their answers: see job.h. */
#include "job.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

tgb_job_t *tgb_job__decode(uint64_t id, const uint8_t *body, size_t len, size_t npairs)
{
    /* Pair headers (6 bytes each) make room for the two NULs per pair, so
     * <len> bytes of strings always suffice. */
    size_t size = sizeof(tgb_job_t) + npairs * sizeof(tgb_pair_t) + len + 1;
    tgb_job_t *job = malloc(size);
    if (!job)
        return NULL;
    memset(job, 0, sizeof(*job));
    job->id = id;
    job->pairs = (tgb_pair_t *)(job + 1);
    char *s = (char *)(job->pairs + npairs);

    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, body, len);
    while (job->npairs < npairs && tg_wire_next(&it, &kv) == 1) {
        tgb_pair_t *p = &job->pairs[job->npairs++];
        memcpy(s, kv.key, kv.klen);
        s[kv.klen] = '\0';
        p->key = s;
        p->klen = kv.klen;
        s += kv.klen + 1;
        if (kv.vlen)
            memcpy(s, kv.val, kv.vlen);
        s[kv.vlen] = '\0';
        p->val = s;
        p->vlen = kv.vlen;
        s += (size_t)kv.vlen + 1;
    }

    const char *kind = tgb_job_get(job, TG_BK_K_KIND, NULL);
    if (kind && strcmp(kind, "http") == 0)
        job->kind = TGB_KIND_HTTP;
    else if (kind && strcmp(kind, "call") == 0)
        job->kind = TGB_KIND_CALL;
    else
        job->kind = TGB_KIND_OTHER;
    return job;
}

void tgb_job__free(tgb_job_t *job)
{
    free(job);
}

/* ---- accessors (public) ---- */

uint64_t tgb_job_id(const tgb_job_t *job)
{
    return job->id;
}

tgb_kind_t tgb_job_kind(const tgb_job_t *job)
{
    return job->kind;
}

const char *tgb_job_get(const tgb_job_t *job, const char *key, size_t *len)
{
    size_t klen = strlen(key);
    for (size_t i = 0; i < job->npairs; i++) {
        const tgb_pair_t *p = &job->pairs[i];
        if (p->klen == klen && memcmp(p->key, key, klen) == 0) {
            if (len)
                *len = p->vlen;
            return p->val;
        }
    }
    if (len)
        *len = 0;
    return NULL;
}

const char *tgb_job_route(const tgb_job_t *job)
{
    const char *r = tgb_job_get(job, TG_BK_K_ROUTE, NULL);
    return r ? r : "";
}

/* A decimal value of <key>, or <dflt> when absent or not a number. */
static uint64_t number(const tgb_job_t *job, const char *key, uint64_t dflt)
{
    size_t n;
    uint64_t v;
    const char *s = tgb_job_get(job, key, &n);
    return s && tg_wire_u64(s, n, &v) == 0 ? v : dflt;
}

uint64_t tgb_job_conn(const tgb_job_t *job)
{
    return number(job, TG_BK_K_CONN, 0);
}

uint32_t tgb_job_attempt(const tgb_job_t *job)
{
    uint64_t a = number(job, TG_BK_K_ATTEMPT, 1);
    return a > UINT32_MAX ? UINT32_MAX : (uint32_t)a;
}

const char *tgb_job_body(const tgb_job_t *job, size_t *len)
{
    return tgb_job_get(job, TG_BK_K_BODY, len);
}

const char *tgb_job_data(const tgb_job_t *job, size_t *len)
{
    return tgb_job_get(job, TG_BK_K_DATA, len);
}

size_t tgb_job_npairs(const tgb_job_t *job)
{
    return job->npairs;
}

const tgb_pair_t *tgb_job_pair(const tgb_job_t *job, size_t i)
{
    return i < job->npairs ? &job->pairs[i] : NULL;
}

bool tgb_job_header(const tgb_job_t *job, size_t *pos, tgb_pair_t *h)
{
    const size_t plen = sizeof(TG_BK_K_HEADER) - 1;
    for (size_t i = *pos; i < job->npairs; i++) {
        const tgb_pair_t *p = &job->pairs[i];
        if (p->klen > plen && memcmp(p->key, TG_BK_K_HEADER, plen) == 0) {
            h->key = p->key + plen;
            h->klen = p->klen - plen;
            h->val = p->val;
            h->vlen = p->vlen;
            *pos = i + 1;
            return true;
        }
    }
    *pos = job->npairs;
    return false;
}

/* ---- frames ---- */

int tgb_job__end(tg_wire_enc_t *e, uint32_t max_body, size_t lz4_min)
{
    /* The limit is on the pairs, before compression: the gate inflates them
     * and checks the same bound (docs/backend-protocol.md, Limits). */
    if (!e->nomem && e->len - e->start - TG_BK_HEADER > max_body) {
        tg_wire_enc_reset(e);
        return -EMSGSIZE;
    }
    return tg_wire_end(e, lz4_min);
}

/* Whether <status> may go in a frame: 0 (left out) or three digits. */
static bool status_ok(int status)
{
    return status == 0 || (status >= 100 && status <= 999);
}

int tgb_job__reply(tg_wire_enc_t *e, uint64_t id, const tgb_reply_t *r, uint32_t max_body,
                   size_t lz4_min)
{
    const size_t plen = sizeof(TG_BK_K_HEADER) - 1;
    char key[TG_BK_MAX_KEY + 1];

    if (id == 0 || !status_ok(r->status) || (!r->body && r->body_len) ||
        (!r->data && r->data_len) || (r->nheaders && !r->headers))
        return -EINVAL;
    for (size_t i = 0; i < r->nheaders; i++) {
        size_t n = r->headers[i].name ? strlen(r->headers[i].name) : 0;
        if (n == 0 || plen + n > TG_BK_MAX_KEY || !r->headers[i].value)
            return -EINVAL;
    }

    tg_wire_enc_reset(e);
    tg_wire_begin(e, TG_BK_REPLY, id);
    tg_wire_put_u64(e, TG_BK_K_STATUS, r->status ? (uint64_t)r->status : 200);
    memcpy(key, TG_BK_K_HEADER, plen);
    for (size_t i = 0; i < r->nheaders; i++) {
        size_t n = strlen(r->headers[i].name);
        memcpy(key + plen, r->headers[i].name, n + 1);
        tg_wire_put_str(e, key, r->headers[i].value);
    }
    if (r->body)
        tg_wire_put(e, TG_BK_K_BODY, r->body, r->body_len);
    if (r->data)
        tg_wire_put(e, TG_BK_K_DATA, r->data, r->data_len);
    if (r->cache_ttl_ms || r->no_cache)
        tg_wire_put_u64(e, TG_BK_K_CACHE_TTL, r->no_cache ? 0 : r->cache_ttl_ms);
    if (r->set_user)
        tg_wire_put_str(e, TG_BK_K_SET_USER, r->set_user);
    return tgb_job__end(e, max_body, lz4_min);
}

int tgb_job__error(tg_wire_enc_t *e, uint64_t id, int status, const char *code,
                   const char *message, uint32_t max_body, size_t lz4_min)
{
    if (!code || !*code || !status_ok(status))
        return -EINVAL;
    tg_wire_enc_reset(e);
    tg_wire_begin(e, TG_BK_ERROR, id);
    tg_wire_put_str(e, TG_BK_K_CODE, code);
    if (message)
        tg_wire_put_str(e, TG_BK_K_MESSAGE, message);
    if (status)
        tg_wire_put_u64(e, TG_BK_K_STATUS, (uint64_t)status);
    return tgb_job__end(e, max_body, lz4_min);
}
