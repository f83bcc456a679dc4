/* gate/backend.c - one backend link on the home loop: frames in, HELLO,
 * replies, pushes, pings, drain, violations; JOB frames out. See backend.h and
 * docs/backend-protocol.md. */
#include "gate/backend.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "gate/dial.h"
#include "net/close.h"

static tg_gate_t *gate_of(const tg_conn_t *c)
{
    return c->proto->ctx;
}

/* ---- writing ---- */

/* Sends a frame of type <type> for <id> whose pairs are in <e> (begun by the
 * caller with tg_wire_begin). */
static void send_enc(tg_backend_t *b, tg_wire_enc_t *e, bool compress)
{
    if (tg_wire_end(e, compress && b->lz4 ? b->gate->cfg.lz4_min : 0) == 0)
        (void)tg_conn_write(b->conn, e->p, e->len);
    tg_wire_enc_fini(e);
}

static void send_error(tg_backend_t *b, const char *code, const char *message)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_ERROR, 0);
    tg_wire_put_str(&e, TG_BK_K_CODE, code);
    tg_wire_put_str(&e, TG_BK_K_MESSAGE, message);
    send_enc(b, &e, false);
}

static void violation(tg_backend_t *b, const char *why)
{
    tg_gate_t *g = b->gate;
    tg_counter_add(&g->stats.violations, 1);
    tg_log_warn("gate: backend %s broke the protocol (%s): closing its link, resubmitting "
                "its %u jobs",
                b->name[0] ? b->name : "(no HELLO yet)", why, b->outstanding);
    send_error(b, "protocol", why);
    tg_conn_close_after_flush(b->conn, TG_CLOSE_PROTOCOL);
}

static size_t put_pair(uint8_t *p, const char *key, const char *val, size_t vlen)
{
    size_t klen = strlen(key);
    p[0] = (uint8_t)(klen >> 8);
    p[1] = (uint8_t)klen;
    memcpy(p + 2, key, klen);
    p[2 + klen] = (uint8_t)(vlen >> 24);
    p[3 + klen] = (uint8_t)(vlen >> 16);
    p[4 + klen] = (uint8_t)(vlen >> 8);
    p[5 + klen] = (uint8_t)vlen;
    memcpy(p + 6 + klen, val, vlen);
    return 6 + klen + vlen;
}

int tg_backend__send_job(tg_backend_t *b, tg_job_t *job, uint64_t now_ms)
{
    uint8_t dyn[TG_BK_HEADER + 64];
    char num[24];
    size_t n = TG_BK_HEADER;
    n += put_pair(dyn + n, TG_BK_K_ATTEMPT, num, (size_t)snprintf(num, sizeof(num), "%u", job->attempt));
    uint64_t left = job->due_ms > now_ms ? job->due_ms - now_ms : 0;
    n += put_pair(dyn + n, TG_BK_K_DEADLINE, num,
                  (size_t)snprintf(num, sizeof(num), "%llu", (unsigned long long)left));
    size_t body = n - TG_BK_HEADER + job->len;
    tg_gate_t *g = b->gate;
    if (b->lz4 && g->cfg.lz4_min && body >= g->cfg.lz4_min) {
        tg_wire_enc_t e;
        tg_wire_enc_init(&e);
        tg_wire_begin(&e, TG_BK_JOB, job->id);
        tg_wire_put_raw(&e, dyn + TG_BK_HEADER, n - TG_BK_HEADER);
        tg_wire_put_raw(&e, job->pairs, job->len);
        int rc = tg_wire_end(&e, g->cfg.lz4_min);
        if (rc == 0 && (e.p[3] & TG_BK_F_LZ4)) {
            tg_counter_add(&g->stats.lz4_out, 1);
            tg_counter_add(&g->stats.lz4_before, TG_BK_HEADER + body);
            tg_counter_add(&g->stats.lz4_after, e.len);
        }
        if (rc == 0)
            rc = tg_conn_write(b->conn, e.p, e.len);
        tg_wire_enc_fini(&e);
        return rc;
    }
    dyn[0] = TG_BK_MAGIC;
    dyn[1] = TG_BK_VERSION;
    dyn[2] = TG_BK_JOB;
    dyn[3] = 0;
    dyn[4] = (uint8_t)(body >> 24);
    dyn[5] = (uint8_t)(body >> 16);
    dyn[6] = (uint8_t)(body >> 8);
    dyn[7] = (uint8_t)body;
    tg_wire_set_id(dyn, job->id);
    int rc = tg_conn_write(b->conn, dyn, n);
    if (rc == 0 && job->len)
        rc = tg_conn_write(b->conn, job->pairs, job->len);
    return rc;
}

void tg_backend__done_below(tg_backend_t *b, bool force)
{
    uint64_t lw = tg_gate__low_water(b->gate);
    if (!b->hello || lw <= b->done_below || (!force && lw - b->done_below < TG_DONE_BELOW_STEP))
        return;
    uint8_t h[TG_BK_HEADER] = { TG_BK_MAGIC, TG_BK_VERSION, TG_BK_DONE_BELOW, 0, 0, 0, 0, 0 };
    tg_wire_set_id(h, lw);
    if (tg_conn_write(b->conn, h, sizeof(h)) == 0)
        b->done_below = lw;
}

void tg_backend__tick(tg_gate_t *g)
{
    uint64_t now = g->home->now_ms;
    for (tg_link_t *l = g->backends.next, *next; l != &g->backends; l = next) {
        next = l->next;
        tg_backend_t *b = tg_container_of(l, tg_backend_t, node);
        if (!b->hello || !tg_conn_open(b->conn))
            continue;
        if (now - b->last_rx_ms > 3 * (uint64_t)g->cfg.ping_ms) {
            tg_log_warn("gate: backend %s silent for %llu ms: closing its link, resubmitting "
                        "its %u jobs",
                        b->name, (unsigned long long)(now - b->last_rx_ms), b->outstanding);
            tg_conn_close(b->conn, TG_CLOSE_PING_TIMEOUT);
            continue;
        }
        uint8_t h[TG_BK_HEADER] = { TG_BK_MAGIC, TG_BK_VERSION, TG_BK_PING, 0, 0, 0, 0, 0 };
        tg_wire_set_id(h, 0);
        (void)tg_conn_write(b->conn, h, sizeof(h));
        tg_backend__done_below(b, true);
    }
}

/* ---- reading ---- */

static bool list_has(tg_str_t list, const char *item)
{
    size_t n = strlen(item);
    const char *p = list.p, *end = list.p + list.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        while (p < stop && *p == ' ')
            p++;
        if ((size_t)(stop - p) == n && memcmp(p, item, n) == 0)
            return true;
        p = stop + 1;
    }
    return false;
}

static void hello(tg_backend_t *b, const uint8_t *body, size_t len)
{
    tg_gate_t *g = b->gate;
    tg_wire_iter_t it;
    tg_wire_pair_t kv;
    tg_str_t routes = { "", 0 };
    uint64_t cap = TG_BACKEND_CAPACITY;
    tg_wire_iter_init(&it, body, len);
    while (tg_wire_next(&it, &kv) == 1) {
        if (tg_wire_key_is(&kv, TG_BK_K_VERSION)) {
            if (kv.vlen != 1 || kv.val[0] != '1')
                return violation(b, "unsupported protocol version");
        } else if (tg_wire_key_is(&kv, TG_BK_K_NAME)) {
            size_t n = kv.vlen < TG_BACKEND_NAME_MAX ? kv.vlen : TG_BACKEND_NAME_MAX;
            for (size_t i = 0; i < n; i++)
                b->name[i] = (kv.val[i] > ' ' && kv.val[i] < 127) ? kv.val[i] : '?';
            b->name[n] = '\0';
        } else if (tg_wire_key_is(&kv, TG_BK_K_ROUTES)) {
            routes = (tg_str_t){ kv.val, kv.vlen };
        } else if (tg_wire_key_is(&kv, TG_BK_K_CAPACITY)) {
            if (tg_wire_u64(kv.val, kv.vlen, &cap) != 0 || cap == 0 ||
                cap > TG_BACKEND_CAPACITY_MAX)
                return violation(b, "capacity must be 1 to 65536");
        } else if (tg_wire_key_is(&kv, TG_BK_K_FEATURES)) {
            b->lz4 = list_has((tg_str_t){ kv.val, kv.vlen }, "lz4");
        }
    }
    if (!b->name[0])
        snprintf(b->name, sizeof(b->name), "backend-%u", b->conn->slot);
    b->capacity = (uint32_t)cap;
    const char *p = routes.p, *end = routes.p + routes.len;
    while (p < end) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma ? comma : end;
        while (p < stop && *p == ' ')
            p++;
        gate_route_t *r = p < stop ? tg_gate__route(g, p, (size_t)(stop - p), true) : NULL;
        if (!r && p < stop)
            tg_log_warn("gate: backend %s serves route '%.*s', which is not configured (and "
                        "auto routes are off, or the name is not valid): ignored",
                        b->name, (int)(stop - p), p);
        bool dup = false;
        for (uint32_t i = 0; r && i < b->nroutes; i++)
            dup |= b->routes[i] == r;
        if (r && !dup && b->nroutes < TG_BACKEND_ROUTES_MAX)
            b->routes[b->nroutes++] = r;
        p = stop + 1;
    }
    b->hello = true;
    tg_counter_add(&g->stats.links, 1);
    tg_counter_add(&g->stats.links_total, 1);
    tg_conn_timer_cancel(b->conn);
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_HELLO, 0);
    tg_wire_put_str(&e, TG_BK_K_VERSION, "1");
    tg_wire_put_u64(&e, TG_BK_K_EPOCH, g->epoch);
    tg_wire_put_u64(&e, TG_BK_K_MAX_FRAME, g->cfg.max_frame);
    tg_wire_put_u64(&e, TG_BK_K_PING_MS, g->cfg.ping_ms);
    tg_wire_put_str(&e, TG_BK_K_FEATURES, "lz4");
    send_enc(b, &e, false);
    tg_log_info("gate: backend %s joined (%.*s), capacity %u", b->name, (int)routes.len,
                routes.p, b->capacity);
    tg_gate__joined(g, b);
}

static tg_str_t pair_str(const uint8_t *body, size_t len, const char *key, bool *found)
{
    tg_wire_pair_t kv;
    *found = tg_wire_find(body, len, key, &kv);
    return *found ? (tg_str_t){ kv.val, kv.vlen } : (tg_str_t){ "", 0 };
}

static bool conn_of(const uint8_t *body, size_t len, tg_conn_id_t *id)
{
    tg_wire_pair_t kv;
    return tg_wire_find(body, len, TG_BK_K_CONN, &kv) && tg_wire_u64(kv.val, kv.vlen, id) == 0;
}

static void push(tg_backend_t *b, const uint8_t *body, size_t len)
{
    tg_gate_t *g = b->gate;
    static const struct {
        const char      *key;
        tg_gate_target_t target;
    } targets[] = { { TG_BK_K_CONN, TG_GATE_CONN },
                    { TG_BK_K_USER, TG_GATE_USER },
                    { TG_BK_K_CHANNEL, TG_GATE_CHANNEL } };
    bool found, has_data;
    tg_str_t data = pair_str(body, len, TG_BK_K_DATA, &has_data);
    for (size_t i = 0; i < TG_ARRAY_LEN(targets); i++) {
        tg_str_t to = pair_str(body, len, targets[i].key, &found);
        if (!found)
            continue;
        if (g->hooks.push(g->hooks.arg, targets[i].target, to, data) != 0)
            tg_counter_add(&g->stats.push_dropped, 1);
        return;
    }
    violation(b, "PUSH names no conn, user or channel");
}

static void subscribe(tg_backend_t *b, const uint8_t *body, size_t len, bool on)
{
    tg_gate_t *g = b->gate;
    tg_conn_id_t id;
    bool found;
    tg_str_t ch = pair_str(body, len, TG_BK_K_CHANNEL, &found);
    if (!conn_of(body, len, &id) || !found)
        return violation(b, "SUBSCRIBE needs conn and channel");
    if (g->hooks.subscribe(g->hooks.arg, id, ch, on) != 0)
        tg_counter_add(&g->stats.push_dropped, 1);
}

static void kick(tg_backend_t *b, const uint8_t *body, size_t len)
{
    tg_gate_t *g = b->gate;
    tg_conn_id_t id;
    bool found;
    tg_str_t why = pair_str(body, len, TG_BK_K_MESSAGE, &found);
    if (!conn_of(body, len, &id))
        return violation(b, "KICK needs conn");
    if (g->hooks.kick(g->hooks.arg, id, why) != 0)
        tg_counter_add(&g->stats.push_dropped, 1);
}

static void pong(tg_backend_t *b, uint64_t id, const uint8_t *body, size_t len)
{
    tg_wire_enc_t e;
    tg_wire_enc_init(&e);
    tg_wire_begin(&e, TG_BK_PONG, id);
    tg_wire_put_raw(&e, body, len);
    send_enc(b, &e, false);
}

/* One whole frame. The link may be closed when this returns. */
static void frame(tg_backend_t *b, const tg_wire_head_t *h, const uint8_t *body)
{
    tg_gate_t *g = b->gate;
    uint8_t *raw = NULL;
    size_t len = h->len;
    if (h->flags & TG_BK_F_LZ4) {
        tg_counter_add(&g->stats.lz4_in, 1);
        int rc = tg_wire_inflate(body, h->len, g->cfg.max_frame, &raw, &len);
        if (rc != 0)
            return violation(b, rc == -ENOMEM ? "out of memory" : "an LZ4 body that does not "
                                                                  "inflate");
        body = raw;
        tg_counter_add(&g->stats.lz4_before, TG_BK_HEADER + len);
        tg_counter_add(&g->stats.lz4_after, TG_BK_HEADER + (size_t)h->len);
    }
    if (tg_wire_check(body, len) < 0) {
        violation(b, "malformed pairs");
        goto done;
    }
    if (!b->hello && h->type != TG_BK_HELLO) {
        violation(b, "the first frame must be HELLO");
        goto done;
    }
    switch (h->type) {
    case TG_BK_HELLO:
        if (b->hello)
            violation(b, "a second HELLO");
        else
            hello(b, body, len);
        break;
    case TG_BK_REPLY:
    case TG_BK_ERROR:
        if (h->type == TG_BK_ERROR && h->id == 0) {
            bool f;
            tg_str_t m = pair_str(body, len, TG_BK_K_MESSAGE, &f);
            tg_log_warn("gate: backend %s says: %.*s", b->name, (int)(m.len > 200 ? 200 : m.len),
                        m.p);
        } else if (tg_gate__answered(g, b, h->type, h->id, body, len) != 0) {
            violation(b, "an answer to a job it does not hold");
        }
        break;
    case TG_BK_PUSH:
        push(b, body, len);
        break;
    case TG_BK_SUBSCRIBE:
    case TG_BK_UNSUBSCRIBE:
        subscribe(b, body, len, h->type == TG_BK_SUBSCRIBE);
        break;
    case TG_BK_KICK:
        kick(b, body, len);
        break;
    case TG_BK_PING:
        pong(b, h->id, body, len);
        break;
    case TG_BK_PONG:
        break;
    case TG_BK_DRAIN:
        if (!b->draining)
            tg_log_info("gate: backend %s drains: no new jobs, %u in flight", b->name,
                        b->outstanding);
        b->draining = true;
        break;
    default: /* JOB, DONE_BELOW: the gate's to send */
        violation(b, "a frame only the gate sends");
        break;
    }
done:
    free(raw);
}

/* Handles the whole frames in <p>,<n>; returns the bytes used, or -1 once the
 * link is closed. */
static long frames(tg_backend_t *b, const uint8_t *p, size_t n)
{
    tg_conn_t *c = b->conn; /* outlives <b>, which a close frees, until the iteration ends */
    size_t used = 0;
    while (n - used >= TG_BK_HEADER) {
        tg_wire_head_t h;
        int rc = tg_wire_head(p + used, b->gate->cfg.max_frame, &h);
        if (rc != 0) {
            violation(b, rc == -EMSGSIZE ? "a frame over max_frame" : "a bad frame header");
            return -1;
        }
        if (n - used - TG_BK_HEADER < h.len)
            break;
        frame(b, &h, p + used + TG_BK_HEADER);
        used += TG_BK_HEADER + h.len;
        if (!tg_conn_open(c))
            return -1;
    }
    return (long)used;
}

static void keep(tg_backend_t *b, const uint8_t *p, size_t n)
{
    if (b->in_cap < n) {
        uint8_t *in = realloc(b->in, n);
        if (!in) {
            tg_conn_close(b->conn, TG_CLOSE_NOMEM);
            return;
        }
        b->in = in;
        b->in_cap = n;
    }
    memmove(b->in, p, n);
    b->in_len = n;
}

static void backend_data(tg_conn_t *c, const char *p, size_t n)
{
    tg_backend_t *b = c->data;
    b->last_rx_ms = c->loop->now_ms;
    long used;
    if (b->in_len == 0) {
        used = frames(b, (const uint8_t *)p, n);
        if (used >= 0 && (size_t)used < n)
            keep(b, (const uint8_t *)p + used, n - (size_t)used);
    } else {
        size_t total = b->in_len + n;
        if (total > b->in_cap) {
            /* Grow to what the frame begun needs, no more: its length was checked. */
            size_t want = total;
            if (b->in_len >= TG_BK_HEADER) {
                tg_wire_head_t h;
                if (tg_wire_head(b->in, b->gate->cfg.max_frame, &h) == 0 &&
                    TG_BK_HEADER + (size_t)h.len > want)
                    want = TG_BK_HEADER + (size_t)h.len;
            }
            uint8_t *in = realloc(b->in, want);
            if (!in) {
                tg_conn_close(c, TG_CLOSE_NOMEM);
                return;
            }
            b->in = in;
            b->in_cap = want;
        }
        memcpy(b->in + b->in_len, p, n);
        b->in_len = total;
        used = frames(b, b->in, b->in_len);
        if (used > 0) {
            memmove(b->in, b->in + used, b->in_len - (size_t)used);
            b->in_len -= (size_t)used;
        }
        if (used >= 0 && b->in_len == 0) {
            free(b->in); /* idle holds nothing */
            b->in = NULL;
            b->in_cap = 0;
        }
    }
    if (!tg_conn_open(c))
        return;
    tg_gate__pump(b->gate, b);
    tg_backend__done_below(b, false);
    if (c->loop->stopping && b->outstanding == 0)
        tg_conn_close_after_flush(c, TG_CLOSE_SHUTDOWN);
}

/* ---- the connection ---- */

static int backend_open(tg_conn_t *c)
{
    tg_gate_t *g = gate_of(c);
    tg_backend_t *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->gate = g;
    b->conn = c;
    tg_list_init(&b->inflight);
    tg_list_push(&g->backends, &b->node);
    b->last_rx_ms = c->loop->now_ms;
    c->data = b;
    tg_conn_timer_arm(c, g->cfg.hello_ms);
    return 0;
}

static void backend_timer(tg_conn_t *c)
{
    tg_backend_t *b = c->data;
    if (!b->hello)
        violation(b, "no HELLO in time");
}

static void backend_stop(tg_conn_t *c)
{
    tg_backend_t *b = c->data;
    if (b->outstanding == 0)
        tg_conn_close_after_flush(c, TG_CLOSE_SHUTDOWN);
}

static void backend_close(tg_conn_t *c, int reason)
{
    tg_backend_t *b = c->data;
    tg_gate_t *g = b->gate;
    if (b->hello)
        tg_log_info("gate: backend %s left (%s), %u jobs to resubmit", b->name,
                    tg_close_info(reason)->name, b->outstanding);
    tg_gate__left(g, b);
    tg_link_remove(&b->node);
    tg_dial__closed(g->dialers, c, b->hello);
    if (b->hello)
        tg_counter_sub(&g->stats.links, 1);
    free(b->in);
    free(b);
    c->data = NULL;
}

const tg_proto_t tg_backend_proto = {
    .name = "backend",
    .on_open = backend_open,
    .on_data = backend_data,
    .on_timer = backend_timer,
    .on_stop = backend_stop,
    .on_close = backend_close,
};
