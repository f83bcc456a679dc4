/* gate/job.c - see job.h. */
#include "gate/job.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sbuf.h"
#include "gate/wire.h"
#include "net/json.h"

static uint64_t key_hash(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)p[i]) * 1099511628211ull;
    return h | 1; /* 0 means "no key" */
}

static bool query_field(tg_str_t q, const char *name, tg_str_t *out)
{
    size_t n = strlen(name);
    const char *p = q.p, *end = q.p + q.len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > n && memcmp(p, name, n) == 0 && p[n] == '=') {
            *out = (tg_str_t){ p + n + 1, (size_t)(stop - p - (ptrdiff_t)n - 1) };
            return true;
        }
        p = stop + 1;
    }
    return false;
}

static bool data_field(tg_str_t data, const char *name, tg_str_t *out)
{
    tg_json_member_t m[TG_CMD_MEMBERS_MAX];
    int n = tg_json_object(data.p, data.len, m, TG_CMD_MEMBERS_MAX);
    for (int i = 0; i < n; i++) {
        if (m[i].key.len == strlen(name) && memcmp(m[i].key.p, name, m[i].key.len) == 0) {
            *out = m[i].value;
            return true;
        }
    }
    return false;
}

/* <path>: the HTTP request path, kept after the pairs on caching routes. */
static tg_job_t *job_from(const tg_route_t *r, tg_wire_enc_t *e, tg_conn_id_t client,
                          uint8_t kind, tg_str_t key, tg_str_t path)
{
    if (key.len)
        tg_wire_put(e, TG_BK_K_KEY, key.p, key.len);
    if (!tg_route_caches(r))
        path.len = 0;
    if (e->nomem || e->len > UINT32_MAX || path.len > UINT32_MAX)
        return NULL;
    tg_job_t *job = malloc(sizeof(*job) + e->len + path.len);
    if (!job)
        return NULL;
    memset(job, 0, sizeof(*job));
    job->client = client;
    job->kind = kind;
    job->key_hash = key.len ? key_hash(key.p, key.len) : 0;
    memcpy(job->route_name, r->name, strlen(r->name) + 1);
    job->len = (uint32_t)e->len;
    memcpy(job->pairs, e->p, e->len);
    job->path_len = (uint32_t)path.len;
    if (path.len)
        memcpy(job->pairs + e->len, path.p, path.len);
    return job;
}

static void put_common(tg_wire_enc_t *e, const tg_route_t *r, tg_conn_id_t client,
                       const char *kind)
{
    tg_wire_put_str(e, TG_BK_K_ROUTE, r->name);
    tg_wire_put_str(e, TG_BK_K_KIND, kind);
    tg_wire_put_u64(e, TG_BK_K_CONN, client);
}

tg_job_t *tg_job_from_http(const tg_route_t *r, const tg_http_req_t *req, tg_str_t rest,
                           int *status, const char **why)
{
    tg_str_t key = { NULL, 0 };
    char conn_key[24];
    if (r->policy == TG_ROUTE_BY_KEY) {
        const tg_str_t *h;
        bool found = false;
        if (r->key == TG_KEY_HEADER && (h = tg_http_header(req, r->key_name))) {
            key = *h;
            found = true;
        } else if (r->key == TG_KEY_QUERY) {
            found = query_field(req->query, r->key_name, &key);
        } else if (r->key == TG_KEY_CONN) {
            key = (tg_str_t){ conn_key, (size_t)snprintf(conn_key, sizeof(conn_key), "%llu",
                                                         (unsigned long long)tg_conn_id(req->conn)) };
            found = true;
        }
        if (!found || key.len == 0 || key.len > 1024) {
            *status = 400;
            *why = "the route dispatches by a key this request does not carry";
            return NULL;
        }
    }
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_conn_id_t client = tg_conn_id(req->conn);
    put_common(&e, r, client, "http");
    tg_wire_put_str(&e, TG_BK_K_METHOD, req->method);
    tg_wire_put(&e, TG_BK_K_PATH, rest.p, rest.len);
    if (req->query.len)
        tg_wire_put(&e, TG_BK_K_QUERY, req->query.p, req->query.len);
    char name[TG_BK_MAX_KEY + 1] = "h:";
    for (unsigned i = 0; i < req->nheaders; i++) {
        const tg_http_header_t *h = &req->headers[i];
        if (h->name.len == 0 || h->name.len > TG_BK_MAX_KEY - 2)
            continue;
        for (size_t k = 0; k < h->name.len; k++) {
            char c = h->name.p[k];
            name[2 + k] = (char)(c >= 'A' && c <= 'Z' ? c + 32 : c);
        }
        uint8_t *v = tg_wire_put_space(&e, name, 2 + h->name.len, h->value.len);
        if (v && h->value.len)
            memcpy(v, h->value.p, h->value.len);
    }
    if (req->body->len) {
        uint8_t *v = tg_wire_put_space(&e, TG_BK_K_BODY, strlen(TG_BK_K_BODY), req->body->len);
        if (v)
            tg_buf_copy_out(req->body, 0, v, req->body->len);
    }
    tg_job_t *job = job_from(r, &e, client, TG_JOB_HTTP, key, req->path);
    tg_wire_enc_fini(&e);
    if (!job) {
        *status = 503;
        *why = "out of memory";
        return NULL;
    }
    tg_cache_prepare(job, r,
                     tg_http_header_has(req, "Cache-Control", "no-cache") ||
                         tg_http_header_has(req, "Pragma", "no-cache"));
    return job;
}

tg_job_t *tg_job_from_call(const tg_route_t *r, tg_session_t *s, tg_str_t user,
                           const tg_cmd_t *cmd, const char **why)
{
    if (cmd->id.len > TG_JOB_CALL_ID_MAX) {
        *why = "the call's id is too long";
        return NULL;
    }
    tg_conn_id_t client = tg_conn_id(s->conn);
    tg_str_t key = { NULL, 0 };
    char conn_key[24];
    if (r->policy == TG_ROUTE_BY_KEY) {
        bool found = false;
        if (r->key == TG_KEY_FIELD) {
            found = data_field(cmd->data, r->key_name, &key);
        } else if (r->key == TG_KEY_USER) {
            key = user;
            found = user.len > 0;
        } else if (r->key == TG_KEY_CONN) {
            key = (tg_str_t){ conn_key, (size_t)snprintf(conn_key, sizeof(conn_key), "%llu",
                                                         (unsigned long long)client) };
            found = true;
        }
        if (!found || key.len == 0 || key.len > 1024) {
            *why = "the route dispatches by a key this call does not carry";
            return NULL;
        }
    }
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    put_common(&e, r, client, "call");
    if (user.len)
        tg_wire_put(&e, TG_BK_K_USER, user.p, user.len);
    tg_wire_put(&e, TG_BK_K_DATA, cmd->data.p, cmd->data.len);
    tg_job_t *job = job_from(r, &e, client, TG_JOB_CALL, key, (tg_str_t){ NULL, 0 });
    tg_wire_enc_fini(&e);
    if (!job) {
        *why = "out of memory";
        return NULL;
    }
    tg_cache_prepare(job, r, false);
    job->call_id_len = (uint8_t)cmd->id.len;
    memcpy(job->call_id, cmd->id.p, cmd->id.len);
    return job;
}

void tg_job_free(tg_job_t *job)
{
    free(job);
}

static tg_answer_t *answer_new(const tg_job_t *job, uint8_t type, size_t inline_len)
{
    tg_answer_t *a = malloc(sizeof(*a) + inline_len);
    if (!a)
        return NULL;
    memset(a, 0, sizeof(*a));
    a->gate = job->gate;
    a->client = job->client;
    a->job_id = job->id;
    a->type = type;
    a->kind = job->kind;
    a->cache = job->cache ? TG_ANSWER_MISS : TG_ANSWER_UNCACHED;
    a->call_id_len = job->call_id_len;
    memcpy(a->call_id, job->call_id, job->call_id_len);
    return a;
}

tg_answer_t *tg_answer_create(const tg_job_t *job, uint8_t type, const void *pairs, size_t len)
{
    tg_answer_t *a = answer_new(job, type, len);
    if (!a)
        return NULL;
    a->len = (uint32_t)len;
    if (len)
        memcpy(a->pairs, pairs, len);
    return a;
}

tg_answer_t *tg_answer_shared(const tg_job_t *job, uint8_t type, tg_shared_t *pairs)
{
    tg_answer_t *a = answer_new(job, type, 0);
    if (!a)
        return NULL;
    tg_shared_ref(pairs);
    a->shared = pairs;
    a->len = pairs->len;
    return a;
}

tg_answer_t *tg_answer_copy(const tg_answer_t *a, const tg_job_t *job)
{
    if (a->shared)
        return tg_answer_shared(job, a->type, a->shared);
    return tg_answer_create(job, a->type, a->pairs, a->len);
}

void tg_answer_free(tg_answer_t *a)
{
    if (!a)
        return;
    tg_shared_unref(a->shared);
    free(a);
}

tg_answer_t *tg_answer_error(const tg_job_t *job, int status, const char *code,
                             const char *message)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_put_u64(&e, TG_BK_K_STATUS, (uint64_t)status);
    tg_wire_put_str(&e, TG_BK_K_CODE, code);
    tg_wire_put_str(&e, TG_BK_K_MESSAGE, message);
    if (status == 503)
        tg_wire_put_str(&e, "h:retry-after", "1");
    tg_answer_t *a = e.nomem ? NULL : tg_answer_create(job, TG_BK_ERROR, e.p, e.len);
    tg_wire_enc_fini(&e);
    return a;
}

/* ---- answers as the client sees them ---- */

typedef struct answer_view {
    int      status;
    tg_str_t body, data, code, message, content_type;
    bool     has_body, has_data;
} answer_view_t;

static tg_str_t str_of(const tg_wire_pair_t *kv)
{
    return (tg_str_t){ kv->val, kv->vlen };
}

static void view(const tg_answer_t *a, answer_view_t *v)
{
    memset(v, 0, sizeof(*v));
    v->status = a->type == TG_BK_ERROR ? 502 : 200;
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, tg_answer_pairs(a), a->len);
    while (tg_wire_next(&it, &kv) == 1) {
        uint64_t n;
        if (tg_wire_key_is(&kv, TG_BK_K_STATUS)) {
            if (tg_wire_u64(kv.val, kv.vlen, &n) == 0 && n >= 200 && n <= 599)
                v->status = (int)n;
        } else if (tg_wire_key_is(&kv, TG_BK_K_BODY)) {
            v->body = str_of(&kv);
            v->has_body = true;
        } else if (tg_wire_key_is(&kv, TG_BK_K_DATA)) {
            v->data = str_of(&kv);
            v->has_data = true;
        } else if (tg_wire_key_is(&kv, TG_BK_K_CODE)) {
            v->code = str_of(&kv);
        } else if (tg_wire_key_is(&kv, TG_BK_K_MESSAGE)) {
            v->message = str_of(&kv);
        } else if (tg_wire_key_is(&kv, "h:content-type")) {
            v->content_type = str_of(&kv);
        }
    }
}

static bool token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
}

/* Header lines a backend may set: a token name, a value without control
 * characters, and none of the ones the HTTP layer owns. */
static bool header_ok(const tg_wire_pair_t *kv)
{
    static const char *const owned[] = { "h:content-type", "h:content-length", "h:connection",
                                         "h:transfer-encoding", "h:keep-alive", "h:upgrade",
                                         "h:date", "h:server", "h:te", "h:trailer" };
    if (kv->klen <= 2 || kv->vlen > 8192)
        return false;
    for (size_t i = 0; i < TG_ARRAY_LEN(owned); i++)
        if (tg_wire_key_is(kv, owned[i]))
            return false;
    for (uint16_t i = 2; i < kv->klen; i++)
        if (!token_char(kv->key[i]))
            return false;
    for (uint32_t i = 0; i < kv->vlen; i++)
        if ((uint8_t)kv->val[i] < 0x20 && kv->val[i] != '\t')
            return false;
    return true;
}

void tg_answer_http(tg_http_req_t *req, const tg_answer_t *a)
{
    answer_view_t v;
    view(a, &v);
    tg_sbuf_t extra = TG_SBUF_INIT, body = TG_SBUF_INIT;
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_wire_iter_init(&it, tg_answer_pairs(a), a->len);
    while (tg_wire_next(&it, &kv) == 1) {
        if (kv.klen > 2 && kv.key[0] == 'h' && kv.key[1] == ':' && header_ok(&kv) &&
            !(a->cache && (tg_wire_key_is(&kv, "h:age") || tg_wire_key_is(&kv, "h:x-cache"))))
            tg_sbuf_printf(&extra, "%.*s: %.*s\r\n", (int)kv.klen - 2, kv.key + 2, (int)kv.vlen,
                           kv.val);
    }
    /* On caching routes the gate says where the answer came from. */
    if (a->cache == TG_ANSWER_HIT)
        tg_sbuf_printf(&extra, "X-Cache: hit\r\nAge: %u\r\n", a->age_s);
    else if (a->cache == TG_ANSWER_MISS)
        tg_sbuf_put(&extra, "X-Cache: miss\r\n", 15);
    char ctype[256] = "application/octet-stream";
    if (v.content_type.len && v.content_type.len < sizeof(ctype) &&
        !memchr(v.content_type.p, '\r', v.content_type.len) &&
        !memchr(v.content_type.p, '\n', v.content_type.len)) {
        memcpy(ctype, v.content_type.p, v.content_type.len);
        ctype[v.content_type.len] = '\0';
    }
    const char *p = v.body.p;
    size_t n = v.body.len;
    if (a->type == TG_BK_ERROR) {
        tg_sbuf_put(&body, "{\"error\":\"", 10);
        tg_json_escape(&body, v.code.len ? v.code.p : "backend_error",
                       v.code.len ? v.code.len : 13);
        tg_sbuf_put(&body, "\",\"message\":\"", 13);
        tg_json_escape(&body, v.message.p ? v.message.p : "", v.message.len);
        tg_sbuf_put(&body, "\"}\n", 3);
        p = body.p;
        n = body.len;
        strcpy(ctype, "application/json");
    } else if (!v.has_body && v.has_data) {
        p = v.data.p;
        n = v.data.len;
        if (!v.content_type.len)
            strcpy(ctype, "application/json");
    }
    if (extra.failed || body.failed)
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
    else
        tg_http_respond(req, v.status, ctype, extra.len ? extra.p : NULL, p, n);
    tg_sbuf_free(&extra);
    tg_sbuf_free(&body);
}

tg_str_t tg_answer_set_user(const tg_answer_t *a)
{
    tg_wire_pair_t kv;
    if (a->type == TG_BK_REPLY && tg_wire_find(tg_answer_pairs(a), a->len, TG_BK_K_SET_USER, &kv))
        return (tg_str_t){ kv.val, kv.vlen };
    return (tg_str_t){ "", 0 };
}

void tg_answer_call(tg_session_t *s, const tg_answer_t *a)
{
    answer_view_t v;
    view(a, &v);
    tg_sbuf_t b = TG_SBUF_INIT;
    if (a->type == TG_BK_ERROR) {
        tg_sbuf_put(&b, "{\"type\":\"error\",\"code\":\"", 24);
        tg_json_escape(&b, v.code.len ? v.code.p : "backend_error", v.code.len ? v.code.len : 13);
        tg_sbuf_put(&b, "\",\"message\":\"", 13);
        tg_json_escape(&b, v.message.p ? v.message.p : "", v.message.len);
        tg_sbuf_printf(&b, "\",\"status\":%d,\"id\":%.*s}", v.status, a->call_id_len, a->call_id);
    } else {
        tg_sbuf_printf(&b, "{\"type\":\"reply\",\"id\":%.*s,\"status\":%d,\"data\":",
                       a->call_id_len, a->call_id, v.status);
        if (v.has_data && tg_json_valid(v.data.p, v.data.len)) {
            tg_sbuf_put(&b, v.data.p, v.data.len);
        } else if (v.has_body) {
            tg_sbuf_put(&b, "\"", 1);
            tg_json_escape(&b, v.body.p, v.body.len);
            tg_sbuf_put(&b, "\"", 1);
        } else {
            tg_sbuf_put(&b, "null", 4);
        }
        tg_sbuf_put(&b, "}", 1);
    }
    if (!b.failed)
        s->transport->send_json(s, a->type == TG_BK_ERROR ? "error" : "reply", NULL, b.p, b.len);
    tg_sbuf_free(&b);
}
