/* gate/scatter.c - scatter/gather routes: parts out, answers in, one reduced
 * answer back. See scatter.h. */
#include "gate/scatter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sbuf.h"
#include "net/json.h"

struct tg_gather {
    tg_link_t    node;    /* g->gathers */
    tg_job_t    *parent;  /* the client's job: in g->live (it holds the low water), not sent */
    gate_route_t *route;
    uint16_t     parts;
    uint16_t     left;    /* parts unanswered, plus one while the parts are being made */
    tg_answer_t *got[];   /* per part, once answered */
};

/* ---- making the parts ---- */

/* The parent's pairs without those a part replaces, then the part's own. */
static tg_job_t *part_job(const tg_job_t *parent, uint16_t part, uint16_t parts,
                          const tg_str_t *payload)
{
    bool call = parent->kind == TG_JOB_CALL;
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, parent->pairs, parent->len);
    while (tg_wire_next(&it, &kv) == 1) {
        if (tg_wire_key_is(&kv, TG_BK_K_KEY) ||
            (payload && (tg_wire_key_is(&kv, TG_BK_K_BODY) || tg_wire_key_is(&kv, TG_BK_K_DATA))))
            continue;
        uint8_t *v = tg_wire_put_space(&e, kv.key, kv.klen, kv.vlen);
        if (v)
            memcpy(v, kv.val, kv.vlen);
    }
    tg_wire_put_u64(&e, TG_BK_K_PART, part);
    tg_wire_put_u64(&e, TG_BK_K_PARTS, parts);
    if (payload)
        tg_wire_put(&e, call ? TG_BK_K_DATA : TG_BK_K_BODY, payload->p, payload->len);
    tg_job_t *job = e.nomem ? NULL : malloc(sizeof(*job) + e.len);
    if (job) {
        memset(job, 0, sizeof(*job));
        job->gate = parent->gate;
        job->client = parent->client;
        job->due_ms = parent->due_ms;
        job->kind = parent->kind;
        memcpy(job->route_name, parent->route_name, sizeof(job->route_name));
        job->part = part;
        job->len = (uint32_t)e.len;
        memcpy(job->pairs, e.p, e.len);
    }
    tg_wire_enc_fini(&e);
    return job;
}

/* The request's JSON array (an HTTP body, a call's data). */
static tg_str_t payload_of(const tg_job_t *job)
{
    tg_wire_pair_t kv;
    const char *key = job->kind == TG_JOB_CALL ? TG_BK_K_DATA : TG_BK_K_BODY;
    if (tg_wire_find(job->pairs, job->len, key, &kv))
        return (tg_str_t){ kv.val, kv.vlen };
    return (tg_str_t){ "", 0 };
}

/* Slices <elems> into <parts> JSON arrays as even as can be, in order. */
static int slice(const tg_str_t *elems, int n, uint16_t parts, tg_sbuf_t *out)
{
    for (uint16_t i = 0; i < parts; i++) {
        int from = (int)((long)n * i / parts), to = (int)((long)n * (i + 1) / parts);
        tg_sbuf_put(&out[i], "[", 1);
        for (int k = from; k < to; k++) {
            if (k > from)
                tg_sbuf_put(&out[i], ",", 1);
            tg_sbuf_put(&out[i], elems[k].p, elems[k].len);
        }
        tg_sbuf_put(&out[i], "]", 1);
        if (out[i].failed)
            return -1;
    }
    return 0;
}

static void refuse_parent(tg_gate_t *g, tg_job_t *job, int status, const char *code,
                          const char *msg)
{
    tg_gate__answer(g, job, tg_answer_error(job, status, code, msg));
    tg_job_free(job);
}

void tg_scatter_start(tg_gate_t *g, gate_route_t *r, tg_job_t *job)
{
    uint16_t parts = r->cfg.split ? r->cfg.split : (uint16_t)r->nbackends;
    tg_sbuf_t *slices = NULL;
    if (parts > TG_SCATTER_PARTS_MAX)
        parts = TG_SCATTER_PARTS_MAX;
    if (r->refusing || (!r->cfg.split && r->nbackends == 0)) {
        tg_counter_add(&g->stats.no_backend, 1);
        refuse_parent(g, job, 503, "no_backend", "no backend of this route is connected");
        return;
    }
    if (r->cfg.split) {
        tg_str_t body = payload_of(job);
        int max = (int)(body.len / 2 + 1), n;
        tg_str_t *elems = malloc((size_t)max * sizeof(*elems));
        if (!elems || (n = tg_json_array(body.p, body.len, elems, max)) < 0) {
            free(elems);
            refuse_parent(g, job, 400, "bad_request",
                          "a split route takes a JSON array as the request's body or data");
            return;
        }
        if (n < parts)
            parts = n > 0 ? (uint16_t)n : 1;
        slices = calloc(parts, sizeof(*slices));
        if (!slices || slice(elems, n, parts, slices) != 0) {
            for (uint16_t i = 0; slices && i < parts; i++)
                tg_sbuf_free(&slices[i]);
            free(slices);
            free(elems);
            refuse_parent(g, job, 503, "out_of_memory", "the gate is out of memory");
            return;
        }
        free(elems);
    }
    tg_gather_t *gt = calloc(1, sizeof(*gt) + parts * sizeof(gt->got[0]));
    tg_job_t **made = calloc(parts, sizeof(*made));
    bool ok = gt && made;
    for (uint16_t i = 0; ok && i < parts; i++) {
        tg_str_t s = slices ? (tg_str_t){ slices[i].p, slices[i].len } : (tg_str_t){ NULL, 0 };
        ok = (made[i] = part_job(job, i, parts, slices ? &s : NULL)) != NULL;
    }
    for (uint16_t i = 0; slices && i < parts; i++)
        tg_sbuf_free(&slices[i]);
    free(slices);
    if (!ok) {
        for (uint16_t i = 0; made && i < parts; i++)
            tg_job_free(made[i]);
        free(made);
        free(gt);
        refuse_parent(g, job, 503, "out_of_memory", "the gate is out of memory");
        return;
    }
    gt->parent = job;
    gt->route = r;
    gt->parts = parts;
    gt->left = (uint16_t)(parts + 1); /* a part refused at once must not end it early */
    tg_list_push(&g->gathers, &gt->node);
    tg_gate__hold(g, job);
    tg_counter_add(&g->stats.scatters, 1);
    for (uint16_t i = 0; i < parts; i++) {
        tg_job_t *p = made[i];
        p->gather = gt;
        p->id = tg_gate__next_id(g);
        if (!r->cfg.split && i < r->nbackends)
            p->pin = r->backends[i]; /* one part for every backend */
        tg_counter_add(&g->stats.parts, 1);
        tg_gate__admit(g, r, p);
    }
    free(made);
    tg_scatter_part(g, gt, UINT16_MAX, NULL); /* the parts are out */
}

/* ---- reducing the answers ---- */

typedef struct part_view {
    bool     ok;     /* a REPLY with a 2xx status */
    int      status;
    tg_str_t payload; /* body, else data */
    tg_str_t code;
} part_view_t;

static void view_part(const tg_answer_t *a, part_view_t *v)
{
    memset(v, 0, sizeof(*v));
    if (!a) {
        v->status = 503;
        v->code = (tg_str_t){ "out_of_memory", 13 };
        return;
    }
    v->status = a->type == TG_BK_ERROR ? 502 : 200;
    bool has_body = false;
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, tg_answer_pairs(a), a->len);
    while (tg_wire_next(&it, &kv) == 1) {
        uint64_t n;
        if (tg_wire_key_is(&kv, TG_BK_K_STATUS)) {
            if (tg_wire_u64(kv.val, kv.vlen, &n) == 0 && n >= 100 && n <= 599)
                v->status = (int)n;
        } else if (tg_wire_key_is(&kv, TG_BK_K_BODY)) {
            v->payload = (tg_str_t){ kv.val, kv.vlen };
            has_body = true;
        } else if (tg_wire_key_is(&kv, TG_BK_K_DATA) && !has_body) {
            v->payload = (tg_str_t){ kv.val, kv.vlen };
        } else if (tg_wire_key_is(&kv, TG_BK_K_CODE)) {
            v->code = (tg_str_t){ kv.val, kv.vlen };
        }
    }
    v->ok = a->type == TG_BK_REPLY && v->status >= 200 && v->status < 300;
    if (!v->ok && !v->code.len)
        v->code = (tg_str_t){ "status", 6 };
}

/* The inside of a JSON array or object (between its brackets), if <s> is one. */
static bool inside(tg_str_t s, char open, tg_str_t *in)
{
    while (s.len && (s.p[0] == ' ' || s.p[0] == '\t' || s.p[0] == '\r' || s.p[0] == '\n')) {
        s.p++;
        s.len--;
    }
    while (s.len && (s.p[s.len - 1] == ' ' || s.p[s.len - 1] == '\t' ||
                     s.p[s.len - 1] == '\r' || s.p[s.len - 1] == '\n'))
        s.len--;
    if (s.len < 2 || s.p[0] != open || !tg_json_valid(s.p, s.len))
        return false;
    *in = (tg_str_t){ s.p + 1, s.len - 2 };
    while (in->len && (in->p[0] == ' ' || in->p[0] == '\n' || in->p[0] == '\r' ||
                       in->p[0] == '\t')) {
        in->p++;
        in->len--;
    }
    return true;
}

static void concat(tg_sbuf_t *b, part_view_t *v, uint16_t n)
{
    bool first = true;
    tg_sbuf_put(b, "[", 1);
    for (uint16_t i = 0; i < n; i++) {
        tg_str_t in;
        if (!v[i].ok)
            continue;
        if (!inside(v[i].payload, '[', &in)) {
            v[i].ok = false; /* not what this route promised */
            v[i].code = (tg_str_t){ "not_an_array", 12 };
            continue;
        }
        if (in.len == 0)
            continue;
        if (!first)
            tg_sbuf_put(b, ",", 1);
        tg_sbuf_put(b, in.p, in.len);
        first = false;
    }
    tg_sbuf_put(b, "]", 1);
}

#define MERGE_MEMBERS_MAX 65536 /* members of all parts' objects together */

static uint64_t key_hash(tg_str_t k)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < k.len; i++)
        h = (h ^ (uint8_t)k.p[i]) * 1099511628211ull;
    return h;
}

/* Objects merged member by member, in part order; a key that comes again in
 * a later part takes that part's value. */
static void merge(tg_sbuf_t *b, part_view_t *v, uint16_t n)
{
    size_t total = 0;
    for (uint16_t i = 0; i < n; i++)
        if (v[i].ok)
            total += v[i].payload.len / 4 + 1; /* a member takes at least 4 bytes ("":0) */
    if (total > MERGE_MEMBERS_MAX)
        total = MERGE_MEMBERS_MAX;
    size_t cap = 16;
    while (cap < total * 2)
        cap <<= 1;
    tg_json_member_t *m = malloc((total + 1) * sizeof(*m));
    int32_t *last = malloc(cap * sizeof(*last)); /* key -> index of its last member */
    if (!m || !last) {
        b->failed = true;
        goto out;
    }
    memset(last, 0xff, cap * sizeof(*last));
    size_t used = 0;
    for (uint16_t i = 0; i < n; i++) {
        if (!v[i].ok)
            continue;
        int c = tg_json_object(v[i].payload.p, v[i].payload.len, m + used, (int)(total - used));
        if (c < 0) {
            v[i].ok = false;
            v[i].code = (tg_str_t){ "not_an_object", 13 };
            continue;
        }
        for (size_t k = used; k < used + (size_t)c; k++) {
            size_t at = key_hash(m[k].key) & (cap - 1);
            while (last[at] >= 0 && (m[last[at]].key.len != m[k].key.len ||
                                     memcmp(m[last[at]].key.p, m[k].key.p, m[k].key.len) != 0))
                at = (at + 1) & (cap - 1);
            last[at] = (int32_t)k;
        }
        used += (size_t)c;
    }
    tg_sbuf_put(b, "{", 1);
    bool first = true;
    for (size_t k = 0; k < used; k++) {
        size_t at = key_hash(m[k].key) & (cap - 1);
        while (m[last[at]].key.len != m[k].key.len ||
               memcmp(m[last[at]].key.p, m[k].key.p, m[k].key.len) != 0)
            at = (at + 1) & (cap - 1);
        if ((size_t)last[at] != k)
            continue; /* a later part has this key */
        if (!first)
            tg_sbuf_put(b, ",", 1);
        tg_sbuf_printf(b, "\"%.*s\":", (int)m[k].key.len, m[k].key.p);
        tg_sbuf_put(b, m[k].value.p, m[k].value.len);
        first = false;
    }
    tg_sbuf_put(b, "}", 1);
out:
    free(m);
    free(last);
}

/* ,"missing":[..],"errors":{"I":{"status":S,"error":"CODE"},..} */
static void put_missing(tg_sbuf_t *b, const part_view_t *v, uint16_t n)
{
    tg_sbuf_put(b, ",\"missing\":[", 12);
    for (uint16_t i = 0, k = 0; i < n; i++)
        if (!v[i].ok)
            tg_sbuf_printf(b, "%s%u", k++ ? "," : "", i);
    tg_sbuf_put(b, "],\"errors\":{", 12);
    for (uint16_t i = 0, k = 0; i < n; i++) {
        if (v[i].ok)
            continue;
        tg_sbuf_printf(b, "%s\"%u\":{\"status\":%d,\"error\":\"", k++ ? "," : "", i,
                       v[i].status);
        tg_json_escape(b, v[i].code.p, v[i].code.len);
        tg_sbuf_put(b, "\"}", 2);
    }
    tg_sbuf_put(b, "}", 1);
}

/* Hands the parts to the reducer route as a job of its own, in the parent's
 * place (its id, its client). */
static void to_reducer(tg_gate_t *g, tg_gather_t *gt, const part_view_t *v)
{
    tg_job_t *parent = gt->parent;
    gate_route_t *rr = tg_gate__route(g, gt->route->cfg.reducer, strlen(gt->route->cfg.reducer),
                                      true);
    if (!rr) {
        tg_counter_add(&g->stats.no_route, 1);
        refuse_parent(g, parent, 404, "no_such_route", "the reducer route is not served");
        return;
    }
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_put_str(&e, TG_BK_K_ROUTE, rr->cfg.name);
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, parent->pairs, parent->len);
    while (tg_wire_next(&it, &kv) == 1) {
        if (tg_wire_key_is(&kv, TG_BK_K_ROUTE) || tg_wire_key_is(&kv, TG_BK_K_KEY) ||
            tg_wire_key_is(&kv, TG_BK_K_BODY) || tg_wire_key_is(&kv, TG_BK_K_DATA))
            continue;
        uint8_t *val = tg_wire_put_space(&e, kv.key, kv.klen, kv.vlen);
        if (val)
            memcpy(val, kv.val, kv.vlen);
    }
    tg_wire_put_u64(&e, TG_BK_K_PARTS, gt->parts);
    tg_sbuf_t missing = TG_SBUF_INIT;
    for (uint16_t i = 0; i < gt->parts; i++) {
        char key[24];
        if (!v[i].ok) {
            tg_sbuf_printf(&missing, "%s%u", missing.len ? "," : "", i);
            continue;
        }
        int kl = snprintf(key, sizeof(key), "part:%u", i);
        uint8_t *val = tg_wire_put_space(&e, key, (size_t)kl, v[i].payload.len);
        if (val)
            memcpy(val, v[i].payload.p, v[i].payload.len);
    }
    if (missing.len)
        tg_wire_put(&e, TG_BK_K_MISSING, missing.p, missing.len);
    bool failed = e.nomem || missing.failed;
    tg_sbuf_free(&missing);
    tg_job_t *job = failed ? NULL : malloc(sizeof(*job) + e.len);
    if (!job) {
        tg_wire_enc_fini(&e);
        refuse_parent(g, parent, 503, "out_of_memory", "the gate is out of memory");
        return;
    }
    memcpy(job, parent, sizeof(*job));
    memset(&job->node, 0, sizeof(job->node));
    memset(&job->live, 0, sizeof(job->live));
    job->route = NULL;
    job->gather = NULL;
    job->pin = NULL;
    job->key_hash = 0;
    job->due_ms = g->home->now_ms + rr->cfg.deadline_ms; /* the reducer's own time */
    memcpy(job->route_name, rr->cfg.name, sizeof(job->route_name));
    job->len = (uint32_t)e.len;
    memcpy(job->pairs, e.p, e.len);
    tg_wire_enc_fini(&e);
    tg_job_free(parent);
    tg_gate__admit(g, rr, job);
}

/* Every part is in: the one answer. */
static void finish(tg_gate_t *g, tg_gather_t *gt)
{
    tg_job_t *parent = gt->parent;
    part_view_t *v = calloc(gt->parts, sizeof(*v));
    tg_link_remove(&gt->node);
    tg_gate__unhold(g, parent);
    if (!v) {
        refuse_parent(g, parent, 503, "out_of_memory", "the gate is out of memory");
        goto out;
    }
    for (uint16_t i = 0; i < gt->parts; i++)
        view_part(gt->got[i], &v[i]);
    uint8_t reduce = gt->route->cfg.reduce;
    if (reduce == TG_REDUCE_ROUTE) {
        to_reducer(g, gt, v);
        goto out;
    }
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_printf(&b, "{\"parts\":%u,\"result\":", gt->parts);
    if (reduce == TG_REDUCE_CONCAT)
        concat(&b, v, gt->parts);
    else
        merge(&b, v, gt->parts);
    uint16_t ok = 0, late = 0;
    for (uint16_t i = 0; i < gt->parts; i++) {
        ok += v[i].ok;
        late += !v[i].ok && v[i].status == 504;
    }
    tg_sbuf_printf(&b, ",\"partial\":%s", ok < gt->parts ? "true" : "false");
    if (ok < gt->parts) {
        tg_counter_add(&g->stats.partial, 1);
        put_missing(&b, v, gt->parts);
    }
    tg_sbuf_put(&b, "}", 1);
    if (b.failed) {
        refuse_parent(g, parent, 503, "out_of_memory", "the gate is out of memory");
    } else if (ok == 0) {
        /* Nothing to reduce: the client gets an error, with what each part said. */
        tg_wire_enc_t e;
        tg_wire_enc_init(&e);
        tg_wire_put_u64(&e, TG_BK_K_STATUS, late == gt->parts ? 504 : 502);
        tg_wire_put_str(&e, TG_BK_K_CODE, late == gt->parts ? "deadline" : "no_part");
        tg_wire_put_str(&e, TG_BK_K_MESSAGE, "no part of the scatter was answered");
        tg_gate__answer(g, parent, e.nomem ? NULL : tg_answer_create(parent, TG_BK_ERROR, e.p, e.len));
        tg_wire_enc_fini(&e);
        tg_job_free(parent);
    } else {
        tg_wire_enc_t e;
        tg_wire_enc_init(&e);
        tg_wire_put_u64(&e, TG_BK_K_STATUS, 200);
        if (parent->kind == TG_JOB_CALL) {
            tg_wire_put(&e, TG_BK_K_DATA, b.p, b.len);
        } else {
            tg_wire_put_str(&e, "h:content-type", "application/json");
            tg_wire_put(&e, TG_BK_K_BODY, b.p, b.len);
        }
        tg_gate__answer(g, parent,
                        e.nomem ? NULL : tg_answer_create(parent, TG_BK_REPLY, e.p, e.len));
        tg_wire_enc_fini(&e);
        tg_job_free(parent);
    }
    tg_sbuf_free(&b);
out:
    free(v);
    for (uint16_t i = 0; i < gt->parts; i++)
        tg_answer_free(gt->got[i]);
    free(gt);
}

void tg_scatter_part(tg_gate_t *g, tg_gather_t *gt, uint16_t part, tg_answer_t *a)
{
    if (part < gt->parts)
        gt->got[part] = a; /* NULL: out of memory, and the part counts as failed */
    if (--gt->left == 0)
        finish(g, gt);
}

void tg_scatter_destroy_all(tg_gate_t *g)
{
    while (!tg_list_empty(&g->gathers)) {
        tg_gather_t *gt = tg_container_of(g->gathers.next, tg_gather_t, node);
        tg_link_remove(&gt->node);
        for (uint16_t i = 0; i < gt->parts; i++)
            tg_answer_free(gt->got[i]);
        tg_job_free(gt->parent);
        free(gt);
    }
}
