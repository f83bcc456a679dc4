/* app/hub.c - see hub.h. */
#include "app/hub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "net/close.h"
#include "net/json.h"

/* A session's subscription to one channel. */
typedef struct hub_sub {
    tg_sub_t      sub;
    tg_link_t     item;    /* in session->items */
    tg_session_t *session;
    uint8_t       id_len;  /* the sub command's id, echoed when ready (longer: not echoed) */
    char          id[23];
} hub_sub_t;

static hub_sub_t *hs_of(tg_sub_t *s)
{
    return tg_container_of(s, hub_sub_t, sub);
}

static bool prefix(tg_str_t path, const char *p, tg_str_t *rest)
{
    size_t n = strlen(p);
    if (path.len < n || memcmp(path.p, p, n) != 0)
        return false;
    *rest = (tg_str_t){ path.p + n, path.len - n };
    return true;
}

/* The value of query parameter <name>, raw (positions and modes need no decoding). */
static bool query_param(tg_str_t q, const char *name, tg_str_t *out)
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

static tg_msgview_t view_of(const tg_msg_t *m)
{
    return (tg_msgview_t){ tg_msg_chan(m), m->pos, m->kind, tg_msg_payload(m), m->len };
}

static void reply(tg_session_t *s, const char *type, tg_str_t ch, const tg_pos_t *pos,
                  tg_str_t id)
{
    char buf[384], p[TG_POS_TEXT_MAX];
    int n = snprintf(buf, sizeof(buf), "{\"type\":\"%s\",\"ch\":\"%.*s\"", type, (int)ch.len, ch.p);
    if (pos) {
        tg_pos_format(*pos, p);
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"pos\":\"%s\"", p);
    }
    if (id.len)
        n += snprintf(buf + n, sizeof(buf) - (size_t)n, ",\"id\":%.*s", (int)id.len, id.p);
    n += snprintf(buf + n, sizeof(buf) - (size_t)n, "}");
    s->transport->send_json(s, type, pos, buf, (size_t)n);
}

/* ---- push's side of a subscription ---- */

static void sub_ready(tg_sub_t *sub, tg_pos_t pos, const tg_gap_t *gap, tg_msg_t *const *backlog,
                      size_t n)
{
    hub_sub_t *hs = hs_of(sub);
    tg_session_t *s = hs->session;
    tg_str_t ch = tg_sub_chan(sub);
    char buf0[384], at[TG_POS_TEXT_MAX];
    tg_pos_format(pos, at);
    int k0 = snprintf(buf0, sizeof(buf0), "{\"type\":\"sub\",\"ch\":\"%.*s\",\"pos\":\"%s\"",
                      (int)ch.len, ch.p, at);
    if (hs->id_len)
        k0 += snprintf(buf0 + k0, sizeof(buf0) - (size_t)k0, ",\"id\":%.*s", hs->id_len, hs->id);
    k0 += snprintf(buf0 + k0, sizeof(buf0) - (size_t)k0, "}");
    /* The position this notice stands for (an SSE client's Last-Event-ID) is
     * the one before the backlog that follows it, never past it. */
    tg_pos_t stands = n ? (tg_pos_t){ backlog[0]->pos.epoch, backlog[0]->pos.seq - 1 } : pos;
    s->transport->send_json(s, "sub", gap ? NULL : &stands, buf0, (size_t)k0);
    if (gap) {
        char buf[384], from[TG_POS_TEXT_MAX], to[TG_POS_TEXT_MAX];
        tg_pos_format(gap->from, from);
        tg_pos_format(gap->pos, to);
        int k = snprintf(buf, sizeof(buf), "{\"type\":\"gap\",\"ch\":\"%.*s\",\"from\":\"%s\","
                                           "\"pos\":\"%s\"}",
                         (int)ch.len, ch.p, from, to);
        s->transport->send_json(s, "gap", &gap->pos, buf, (size_t)k);
    }
    for (size_t i = 0; i < n && tg_conn_open(s->conn); i++) {
        tg_shared_t *cache[TG_SLOTS] = { 0 };
        tg_msgview_t v = view_of(backlog[i]);
        s->transport->send_msg(s, &v, cache);
        for (int k = 0; k < TG_SLOTS; k++)
            tg_shared_unref(cache[k]);
    }
}

static void sub_deliver(tg_sub_t *sub, tg_delivery_t *d)
{
    hub_sub_t *hs = hs_of(sub);
    tg_session_t *s = hs->session;
    tg_msgview_t v = view_of(d->msg);
    s->transport->send_msg(s, &v, d->frames);
    /* An all-mode subscriber that cannot keep up is let go with a reason; it
     * resumes from its last position. Others are not slowed by it. */
    tg_apphub_t *h = (tg_apphub_t *)s->hub;
    if (tg_conn_open(s->conn) && s->transport->backlog(s) > h->max_output) {
        tg_log_info("hub: connection %llx is a slow consumer on %.*s",
                    (unsigned long long)tg_conn_id(s->conn), (int)v.ch.len, v.ch.p);
        s->transport->close(s, TG_CLOSE_SLOW, "slow consumer: resume from your last position");
    }
}

static size_t sub_behind(tg_sub_t *sub)
{
    tg_session_t *s = hs_of(sub)->session;
    return s->transport->backlog(s);
}

static const tg_sub_ops_t sub_ops = { sub_ready, sub_deliver, sub_behind };

/* ---- users: a session bound to a user listens on the user's own channel,
 * whose name clients cannot type ('~' is not a channel-name character), and
 * gets what is published there as "push" messages. ---- */

#define USER_CHAN "~user:"

static void drop_sub(tg_apphub_t *h, hub_sub_t *hs);

static void user_ready(tg_sub_t *sub, tg_pos_t pos, const tg_gap_t *gap, tg_msg_t *const *backlog,
                       size_t n)
{
    (void)sub, (void)pos, (void)gap, (void)backlog, (void)n; /* only what comes from now on */
}

static void user_deliver(tg_sub_t *sub, tg_delivery_t *d)
{
    tg_session_t *s = hs_of(sub)->session;
    const tg_msg_t *m = d->msg;
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_put(&b, "{\"type\":\"push\",\"data\":", 22);
    if (m->kind == TG_PAYLOAD_JSON) {
        tg_sbuf_put(&b, tg_msg_payload(m), m->len);
    } else {
        tg_sbuf_put(&b, "\"", 1);
        tg_json_escape(&b, tg_msg_payload(m), m->len);
        tg_sbuf_put(&b, "\"", 1);
    }
    tg_sbuf_put(&b, "}", 1);
    if (!b.failed)
        s->transport->send_json(s, "push", NULL, b.p, b.len);
    tg_sbuf_free(&b);
}

static const tg_sub_ops_t user_ops = { user_ready, user_deliver, sub_behind };

size_t tg_apphub_user_channel(tg_str_t user, char *out, size_t cap)
{
    int n = snprintf(out, cap, USER_CHAN "%.*s", (int)user.len, user.p);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

static hub_sub_t *user_sub(tg_session_t *s)
{
    for (tg_link_t *l = s->items.next; l != &s->items; l = l->next) {
        hub_sub_t *hs = tg_container_of(l, hub_sub_t, item);
        if (hs->sub.ops == &user_ops)
            return hs;
    }
    return NULL;
}

tg_str_t tg_apphub_user(tg_session_t *s)
{
    hub_sub_t *hs = s->hub ? user_sub(s) : NULL;
    if (!hs)
        return (tg_str_t){ NULL, 0 };
    tg_str_t ch = tg_sub_chan(&hs->sub);
    return (tg_str_t){ ch.p + strlen(USER_CHAN), ch.len - strlen(USER_CHAN) };
}

int tg_apphub_bind_user(tg_apphub_t *h, tg_session_t *s, tg_str_t user)
{
    char ch[TG_CHAN_NAME_MAX + 1];
    size_t n = user.len && user.len <= TG_USER_MAX ? tg_apphub_user_channel(user, ch, sizeof(ch))
                                                   : 0;
    if (!n || !tg_chan_name_valid(user.p, user.len))
        return -EINVAL; /* user ids: the characters of channel names, never escaped anywhere */
    hub_sub_t *old = user_sub(s);
    if (old)
        drop_sub(h, old); /* a new login replaces the old one */
    hub_sub_t *hs = calloc(1, sizeof(*hs));
    if (!hs)
        return -ENOMEM;
    hs->sub.ops = &user_ops;
    hs->session = s;
    tg_list_push(&s->items, &hs->item);
    int rc = tg_push_subscribe(h->push, s->conn->loop, &hs->sub, (tg_str_t){ ch, n }, NULL);
    if (rc != 0) {
        tg_link_remove(&hs->item);
        free(hs);
    }
    return rc;
}

/* ---- sessions ---- */

static hub_sub_t *find_sub(tg_session_t *s, tg_str_t ch)
{
    for (tg_link_t *l = s->items.next; l != &s->items; l = l->next) {
        hub_sub_t *hs = tg_container_of(l, hub_sub_t, item);
        tg_str_t name = tg_sub_chan(&hs->sub);
        if (name.len == ch.len && memcmp(name.p, ch.p, ch.len) == 0)
            return hs;
    }
    return NULL;
}

static int subscribe(tg_apphub_t *h, tg_session_t *s, tg_str_t ch, const tg_pos_t *from,
                     tg_str_t id)
{
    if (find_sub(s, ch)) {
        tg_session_error(s, "bad_command", "already subscribed", id);
        return -EEXIST;
    }
    hub_sub_t *hs = calloc(1, sizeof(*hs));
    if (!hs) {
        tg_session_error(s, "internal", "out of memory", id);
        return -ENOMEM;
    }
    hs->sub.ops = &sub_ops;
    hs->session = s;
    if (id.len > 0 && id.len < sizeof(hs->id)) {
        memcpy(hs->id, id.p, id.len);
        hs->id_len = (uint8_t)id.len;
    }
    tg_list_push(&s->items, &hs->item);
    int rc = tg_push_subscribe(h->push, s->conn->loop, &hs->sub, ch, from);
    if (rc != 0) {
        tg_link_remove(&hs->item);
        free(hs);
        tg_session_error(s, "internal", "out of memory", id);
    }
    return rc;
}

static void drop_sub(tg_apphub_t *h, hub_sub_t *hs)
{
    tg_push_unsubscribe(h->push, &hs->sub);
    tg_link_remove(&hs->item);
    free(hs);
}

typedef struct pub_ctx {
    tg_conn_id_t conn;     /* the session that asked, if it still exists */
    uint8_t      id_len;
    char         id[31];
    uint8_t      ch_len;
    char         ch[TG_CHAN_NAME_MAX];
    tg_loop_t   *loop;
    tg_http_req_t *req;    /* HTTP publish: answered when done; NULL once aborted */
} pub_ctx_t;

static void session_pub_done(void *arg, tg_pos_t pos)
{
    pub_ctx_t *pc = arg;
    tg_conn_t *c = tg_conn_lookup(pc->loop, pc->conn);
    if (c && c->data) { /* a session's connection: c->data starts with its session */
        tg_session_t *s = c->data;
        if (pos.epoch == 0)
            tg_session_error(s, "internal", "not published", (tg_str_t){ pc->id, pc->id_len });
        else
            reply(s, "pub", (tg_str_t){ pc->ch, pc->ch_len }, &pos,
                  (tg_str_t){ pc->id, pc->id_len });
    }
    free(pc);
}

static void hub_command(tg_hub_t *base, tg_session_t *s, const tg_cmd_t *cmd)
{
    tg_apphub_t *h = (tg_apphub_t *)base;
    switch (cmd->op) {
    case TG_CMD_SUB:
        subscribe(h, s, cmd->ch, cmd->has_from ? &cmd->from : NULL, cmd->id);
        break;
    case TG_CMD_UNSUB: {
        hub_sub_t *hs = find_sub(s, cmd->ch);
        if (!hs) {
            tg_session_error(s, "bad_command", "not subscribed", cmd->id);
            break;
        }
        drop_sub(h, hs);
        reply(s, "unsub", cmd->ch, NULL, cmd->id);
        break;
    }
    case TG_CMD_PUB: {
        if (!tg_push_opts(h->push, cmd->ch)->client_publish) {
            tg_session_error(s, "forbidden", "clients may not publish here", cmd->id);
            break;
        }
        pub_ctx_t *pc = calloc(1, sizeof(*pc));
        tg_msg_t *m = pc ? tg_msg_new_kind(cmd->ch, cmd->data.p, cmd->data.len, h->nloops,
                                           TG_PAYLOAD_JSON)
                         : NULL;
        if (!m) {
            free(pc);
            tg_session_error(s, "internal", "out of memory", cmd->id);
            break;
        }
        pc->conn = tg_conn_id(s->conn);
        pc->loop = s->conn->loop;
        memcpy(pc->ch, cmd->ch.p, cmd->ch.len);
        pc->ch_len = (uint8_t)cmd->ch.len;
        if (cmd->id.len > 0 && cmd->id.len < sizeof(pc->id)) {
            memcpy(pc->id, cmd->id.p, cmd->id.len);
            pc->id_len = (uint8_t)cmd->id.len;
        }
        if (tg_push_publish(h->push, s->conn->loop, m, session_pub_done, pc) != 0) {
            free(pc);
            tg_session_error(s, "internal", "out of memory", cmd->id);
        }
        break;
    }
    case TG_CMD_PING: {
        char buf[96];
        int n = cmd->id.len && cmd->id.len < 64
                    ? snprintf(buf, sizeof(buf), "{\"type\":\"pong\",\"id\":%.*s}",
                               (int)cmd->id.len, cmd->id.p)
                    : snprintf(buf, sizeof(buf), "{\"type\":\"pong\"}");
        s->transport->send_json(s, "pong", NULL, buf, (size_t)n);
        break;
    }
    case TG_CMD_CALL:
        if (h->gate)
            tg_gate_call(h->gate, s, cmd);
        else
            tg_session_error(s, "no_such_route", "the gate is off", cmd->id);
        break;
    case TG_CMD_HELLO: /* answered by the transport (tg_session_command) */
        break;
    }
}

static void hub_close(tg_hub_t *base, tg_session_t *s)
{
    tg_apphub_t *h = (tg_apphub_t *)base;
    while (!tg_list_empty(&s->items))
        drop_sub(h, tg_container_of(s->items.next, hub_sub_t, item));
}

static void hub_drained(tg_hub_t *base, tg_session_t *s)
{
    tg_apphub_t *h = (tg_apphub_t *)base;
    for (tg_link_t *l = s->items.next, *next; l != &s->items; l = next) {
        next = l->next;
        tg_push_sub_drained(h->push, &tg_container_of(l, hub_sub_t, item)->sub);
        if (!tg_conn_open(s->conn))
            return;
    }
}

/* ---- long-poll: a subscription that lives for one answer ---- */

typedef struct poll_wait {
    tg_sub_t       sub;
    tg_apphub_t   *hub;
    tg_http_req_t *req;    /* NULL once answered or the client left */
    tg_loop_t     *loop;
    tg_timer_t     timer;
    tg_pos_t       pos;    /* where the channel stood: the answer to a timeout */
} poll_wait_t;

static void poll_end(poll_wait_t *pw)
{
    tg_timer_cancel(&pw->loop->wheel, &pw->timer);
    tg_push_unsubscribe(pw->hub->push, &pw->sub);
    free(pw);
}

/* Answers with <n> messages (and/or a gap), then ends the wait. */
static void poll_answer(poll_wait_t *pw, tg_msg_t *const *msgs, size_t n, const tg_gap_t *gap)
{
    tg_http_req_t *req = pw->req;
    pw->req = NULL;
    tg_str_t ch = tg_sub_chan(&pw->sub);
    tg_pos_t next = gap ? gap->pos : msgs[n - 1]->pos;
    char p[TG_POS_TEXT_MAX];
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_printf(&b, "{\"ch\":\"%.*s\",\"messages\":[", (int)ch.len, ch.p);
    for (size_t i = 0; i < n; i++) {
        tg_msgview_t v = view_of(msgs[i]);
        if (i)
            tg_sbuf_put(&b, ",", 1);
        tg_session_envelope(&b, &v);
    }
    tg_sbuf_put(&b, "]", 1);
    if (gap) {
        char from[TG_POS_TEXT_MAX];
        tg_pos_format(gap->from, from);
        tg_pos_format(gap->pos, p);
        tg_sbuf_printf(&b, ",\"gap\":{\"from\":\"%s\",\"pos\":\"%s\"}", from, p);
    }
    tg_pos_format(next, p);
    tg_sbuf_printf(&b, ",\"next\":\"%s\"}\n", p);
    if (b.failed)
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
    else
        tg_http_respond(req, 200, "application/json", "Cache-Control: no-cache\r\n", b.p, b.len);
    tg_sbuf_free(&b);
}

static void poll_ready(tg_sub_t *sub, tg_pos_t pos, const tg_gap_t *gap, tg_msg_t *const *backlog,
                       size_t n)
{
    poll_wait_t *pw = tg_container_of(sub, poll_wait_t, sub);
    pw->pos = pos;
    if (gap || n > 0) {
        poll_answer(pw, backlog, n, gap);
        poll_end(pw);
    }
}

static void poll_deliver(tg_sub_t *sub, tg_delivery_t *d)
{
    poll_wait_t *pw = tg_container_of(sub, poll_wait_t, sub);
    poll_answer(pw, &d->msg, 1, NULL);
    poll_end(pw);
}

static size_t poll_behind(tg_sub_t *sub)
{
    (void)sub;
    return 0;
}

static const tg_sub_ops_t poll_ops = { poll_ready, poll_deliver, poll_behind };

static void poll_timeout(tg_timer_t *t)
{
    poll_wait_t *pw = tg_container_of(t, poll_wait_t, timer);
    tg_http_req_t *req = pw->req;
    pw->req = NULL;
    char extra[96], p[TG_POS_TEXT_MAX];
    tg_pos_format(pw->pos, p);
    snprintf(extra, sizeof(extra), "X-Position: %s\r\nCache-Control: no-cache\r\n", p);
    tg_http_respond(req, 204, "text/plain", extra, NULL, 0);
    poll_end(pw);
}

static void poll_abort(void *arg)
{
    poll_wait_t *pw = arg;
    pw->req = NULL;
    poll_end(pw);
}

static void long_poll(tg_apphub_t *h, tg_http_req_t *req, tg_str_t ch, const tg_pos_t *since)
{
    poll_wait_t *pw = calloc(1, sizeof(*pw));
    if (!pw) {
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        return;
    }
    pw->hub = h;
    pw->req = req;
    pw->loop = req->conn->loop;
    pw->sub.ops = &poll_ops;
    if (since)
        pw->pos = *since;
    tg_timer_init(&pw->timer, poll_timeout);
    tg_http_defer(req, poll_abort, pw);
    tg_timer_arm(&pw->loop->wheel, &pw->timer, h->poll_timeout_ms);
    /* The answer may come at once (held messages after <since>): then <pw>
     * is gone when this returns. */
    if (tg_push_subscribe(h->push, pw->loop, &pw->sub, ch, since) != 0 && pw->req) {
        tg_http_req_t *r = pw->req;
        pw->req = NULL;
        tg_http_respond(r, 503, "text/plain", NULL, "503 out of memory\n", 18);
        tg_timer_cancel(&pw->loop->wheel, &pw->timer);
        free(pw);
    }
}

/* ---- pull: what a channel holds ---- */

typedef struct pull_ctx {
    tg_http_req_t *req;      /* NULL once the client left */
    bool           messages; /* /messages, else the channel's info */
    uint8_t        ch_len;
    char           ch[TG_CHAN_NAME_MAX];
} pull_ctx_t;

static void pull_abort(void *arg)
{
    ((pull_ctx_t *)arg)->req = NULL; /* freed when the answer comes */
}

static void pull_answer(void *arg, const tg_chan_info_t *in)
{
    pull_ctx_t *pc = arg;
    tg_http_req_t *req = pc->req;
    if (!req)
        goto done;
    if (!in->exists) {
        static const char msg[] = "404 no such channel\n";
        tg_http_respond(req, 404, "text/plain", NULL, msg, sizeof(msg) - 1);
        goto done;
    }
    tg_sbuf_t b = TG_SBUF_INIT;
    char last[TG_POS_TEXT_MAX];
    tg_pos_format(in->last, last);
    if (!pc->messages) {
        tg_sbuf_printf(&b, "{\"ch\":\"%.*s\",\"subscribers\":%llu,\"last\":\"%s\",\"history\":%u}\n",
                       pc->ch_len, pc->ch, (unsigned long long)in->subscribers, last, in->held);
    } else {
        tg_sbuf_printf(&b, "{\"ch\":\"%.*s\",\"messages\":[", pc->ch_len, pc->ch);
        for (uint32_t i = 0; i < in->n; i++) {
            tg_msgview_t v = view_of(in->msgs[i]);
            if (i)
                tg_sbuf_put(&b, ",", 1);
            tg_session_envelope(&b, &v);
        }
        tg_sbuf_put(&b, "]", 1);
        char next[TG_POS_TEXT_MAX];
        if (in->gap) {
            char from[TG_POS_TEXT_MAX];
            tg_pos_format(in->gapv.from, from);
            tg_sbuf_printf(&b, ",\"gap\":{\"from\":\"%s\",\"pos\":\"%s\"}", from, last);
            tg_pos_format(in->last, next);
        } else if (in->n) {
            tg_pos_format(in->msgs[in->n - 1]->pos, next);
        } else {
            tg_pos_format(in->last, next);
        }
        tg_sbuf_printf(&b, ",\"next\":\"%s\"}\n", next);
    }
    if (b.failed)
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
    else
        tg_http_respond(req, 200, "application/json", "Cache-Control: no-cache\r\n", b.p, b.len);
    tg_sbuf_free(&b);
done:
    free(pc);
}

static void pull(tg_apphub_t *h, tg_http_req_t *req, tg_str_t rest)
{
    static const char bad[] = "400 bad channel name, since or limit\n";
    tg_str_t ch = rest;
    bool messages = false;
    const char *slash = memchr(rest.p, '/', rest.len);
    if (slash) {
        ch.len = (size_t)(slash - rest.p);
        tg_str_t tail = { slash, rest.len - ch.len };
        if (tail.len != 9 || memcmp(tail.p, "/messages", 9) != 0) {
            tg_http_respond(req, 404, "text/plain", NULL, "404 Not Found\n", 14);
            return;
        }
        messages = true;
    }
    tg_str_t v;
    tg_pos_t since;
    uint64_t limit = 100;
    bool has_since = messages && query_param(req->query, "since", &v);
    if (!tg_chan_name_valid(ch.p, ch.len) || (has_since && !tg_pos_parse(v.p, v.len, &since)) ||
        (messages && query_param(req->query, "limit", &v) &&
         (!tg_json_uint(v, &limit) || limit == 0 || limit > 1000))) {
        tg_http_respond(req, 400, "text/plain", NULL, bad, sizeof(bad) - 1);
        return;
    }
    pull_ctx_t *pc = calloc(1, sizeof(*pc));
    if (!pc) {
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        return;
    }
    pc->req = req;
    pc->messages = messages;
    memcpy(pc->ch, ch.p, ch.len);
    pc->ch_len = (uint8_t)ch.len;
    tg_http_defer(req, pull_abort, pc);
    if (tg_push_query(h->push, req->conn->loop, ch, has_since ? &since : NULL, (uint32_t)limit,
                      pull_answer, pc) != 0) {
        pc->req = NULL;
        free(pc);
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
    }
}

/* ---- HTTP routes ---- */

/* ---- batch publish: POST /pub with a JSON body ---- */

#define BATCH_MAX 1000

typedef struct batch {
    tg_http_req_t *req;       /* NULL once the client left */
    uint32_t       n;
    uint32_t       pending;   /* publishes not answered yet */
    struct {
        tg_pos_t pos;
        uint8_t  ch_len;
        char     ch[TG_CHAN_NAME_MAX];
    } items[];
} batch_t;

typedef struct batch_item {
    batch_t *b;
    uint32_t i;
} batch_item_t;

static void batch_abort(void *arg)
{
    ((batch_t *)arg)->req = NULL;
}

static void batch_finish(batch_t *b)
{
    if (b->req) {
        tg_sbuf_t out = TG_SBUF_INIT;
        bool ok = true;
        tg_sbuf_put(&out, "{\"results\":[", 12);
        for (uint32_t i = 0; i < b->n; i++) {
            char p[TG_POS_TEXT_MAX];
            tg_pos_format(b->items[i].pos, p);
            ok = ok && b->items[i].pos.epoch != 0;
            tg_sbuf_printf(&out, "%s{\"ch\":\"%.*s\",\"pos\":\"%s\"}", i ? "," : "",
                           b->items[i].ch_len, b->items[i].ch, p);
        }
        tg_sbuf_put(&out, "]}\n", 3);
        if (out.failed || !ok)
            tg_http_respond(b->req, 503, "text/plain", NULL, "503 not all published\n", 22);
        else
            tg_http_respond(b->req, 202, "application/json", NULL, out.p, out.len);
        tg_sbuf_free(&out);
    }
    free(b);
}

static void batch_done(void *arg, tg_pos_t pos)
{
    batch_item_t *it = arg;
    batch_t *b = it->b;
    b->items[it->i].pos = pos;
    free(it);
    if (--b->pending == 0)
        batch_finish(b);
}

static bool batch_add(batch_t *b, tg_str_t ch, tg_str_t data)
{
    if (!tg_chan_name_valid(ch.p, ch.len) || b->n == BATCH_MAX)
        return false;
    memcpy(b->items[b->n].ch, ch.p, ch.len);
    b->items[b->n].ch_len = (uint8_t)ch.len;
    b->items[b->n].pos = (tg_pos_t){ 0, 0 };
    b->n++;
    return data.p != NULL;
}

/* {"messages":[{"ch":..,"data":..},...]} or {"channels":[..],"data":..}. */
static void http_publish_batch(tg_apphub_t *h, tg_http_req_t *req)
{
    static const char bad[] = "400 expected {\"messages\":[{\"ch\":...,\"data\":...}]} or "
                              "{\"channels\":[...],\"data\":...} with valid channel names, "
                              "at most 1000\n";
    size_t n = req->body->len;
    char *body = malloc(n ? n : 1);
    batch_t *b = calloc(1, sizeof(*b) + BATCH_MAX * sizeof(b->items[0]));
    tg_str_t *els = malloc(BATCH_MAX * sizeof(*els));
    tg_str_t *datas = malloc(BATCH_MAX * sizeof(*datas));
    if (!body || !b || !els || !datas) {
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        goto out;
    }
    tg_buf_copy_out(req->body, 0, body, n);
    tg_json_member_t top[4];
    int nt = tg_json_object(body, n, top, 4);
    tg_str_t msgs = { NULL, 0 }, chans = { NULL, 0 }, data = { NULL, 0 };
    for (int i = 0; i < nt; i++) {
        tg_str_t k = top[i].key;
        if (k.len == 8 && !memcmp(k.p, "messages", 8))
            msgs = top[i].value;
        else if (k.len == 8 && !memcmp(k.p, "channels", 8))
            chans = top[i].value;
        else if (k.len == 4 && !memcmp(k.p, "data", 4))
            data = top[i].value;
    }
    bool ok = nt > 0 && (msgs.p != NULL) != (chans.p != NULL);
    if (ok && msgs.p) {
        int m = tg_json_array(msgs.p, msgs.len, els, BATCH_MAX);
        ok = m > 0;
        for (int i = 0; ok && i < m; i++) {
            tg_json_member_t f[8];
            int nf = tg_json_object(els[i].p, els[i].len, f, 8);
            tg_str_t ch = { NULL, 0 }, d = { NULL, 0 };
            for (int j = 0; j < nf; j++) {
                if (f[j].key.len == 2 && !memcmp(f[j].key.p, "ch", 2))
                    tg_json_plain_string(f[j].value, &ch);
                else if (f[j].key.len == 4 && !memcmp(f[j].key.p, "data", 4))
                    d = f[j].value;
            }
            ok = nf > 0 && ch.p && d.p && batch_add(b, ch, d);
            datas[i] = d;
        }
    } else if (ok) {
        int m = tg_json_array(chans.p, chans.len, els, BATCH_MAX);
        ok = m > 0 && data.p;
        for (int i = 0; ok && i < m; i++) {
            tg_str_t ch;
            ok = tg_json_plain_string(els[i], &ch) && batch_add(b, ch, data);
            datas[i] = data;
        }
    }
    if (!ok) {
        tg_http_respond(req, 400, "text/plain", NULL, bad, sizeof(bad) - 1);
        goto out;
    }
    /* Every message is made before any is published: all or nothing. */
    tg_msg_t **made = calloc(b->n, sizeof(*made));
    batch_item_t **items = calloc(b->n, sizeof(*items));
    bool made_all = made && items;
    for (uint32_t i = 0; made_all && i < b->n; i++) {
        made[i] = tg_msg_new_kind((tg_str_t){ b->items[i].ch, b->items[i].ch_len }, datas[i].p,
                                  datas[i].len, h->nloops, TG_PAYLOAD_JSON);
        items[i] = malloc(sizeof(**items));
        made_all = made[i] && items[i];
    }
    if (!made_all) {
        for (uint32_t i = 0; made && i < b->n; i++)
            if (made[i])
                tg_msg_unref(made[i]);
        for (uint32_t i = 0; items && i < b->n; i++)
            free(items[i]);
        free(made);
        free(items);
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        goto out;
    }
    b->req = req;
    b->pending = b->n + 1; /* one for this function, so the answer waits for the loop's end */
    tg_http_defer(req, batch_abort, b);
    for (uint32_t i = 0; i < b->n; i++) {
        items[i]->b = b;
        items[i]->i = i;
        if (tg_push_publish(h->push, req->conn->loop, made[i], batch_done, items[i]) != 0) {
            free(items[i]);
            b->pending--; /* its position stays 0: the answer says not all were published */
        }
    }
    free(made);
    free(items);
    if (--b->pending == 0)
        batch_finish(b);
    b = NULL;
out:
    free(b);
    free(body);
    free(els);
    free(datas);
}

static void http_pub_done(void *arg, tg_pos_t pos)
{
    pub_ctx_t *pc = arg;
    if (pc->req) {
        tg_http_req_t *req = pc->req;
        if (pos.epoch == 0) {
            tg_http_respond(req, 503, "text/plain", NULL, "503 not published\n", 18);
        } else {
            char body[320], p[TG_POS_TEXT_MAX];
            tg_str_t ch = { pc->ch, pc->ch_len };
            tg_pos_format(pos, p);
            int n = snprintf(body, sizeof(body), "{\"ch\":\"%.*s\",\"pos\":\"%s\"}\n", (int)ch.len,
                             ch.p, p);
            tg_http_respond(req, 202, "application/json", NULL, body, (size_t)n);
        }
    }
    free(pc);
}

static void http_pub_abort(void *arg)
{
    ((pub_ctx_t *)arg)->req = NULL; /* freed when the publish completes */
}

static void http_publish(tg_apphub_t *h, tg_http_req_t *req, tg_str_t ch)
{
    static const char bad[] = "400 bad channel name\n";
    if (!tg_chan_name_valid(ch.p, ch.len)) {
        tg_http_respond(req, 400, "text/plain", NULL, bad, sizeof(bad) - 1);
        return;
    }
    size_t n = req->body->len;
    char *body = n ? malloc(n) : NULL;
    if (n && !body) {
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        return;
    }
    tg_buf_copy_out(req->body, 0, body, n);
    tg_msg_t *m = tg_msg_new(ch, body, n, h->nloops);
    free(body);
    pub_ctx_t *pc = m ? calloc(1, sizeof(*pc)) : NULL;
    if (!pc) {
        if (m)
            tg_msg_unref(m);
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
        return;
    }
    memcpy(pc->ch, ch.p, ch.len);
    pc->ch_len = (uint8_t)ch.len;
    pc->req = req;
    tg_http_defer(req, http_pub_abort, pc);
    if (tg_push_publish(h->push, req->conn->loop, m, http_pub_done, pc) != 0) {
        pc->req = NULL;
        free(pc);
        tg_http_respond(req, 503, "text/plain", NULL, "503 out of memory\n", 18);
    }
}

int tg_apphub_subscribe(tg_apphub_t *h, tg_session_t *s, tg_str_t ch)
{
    if (!tg_chan_name_valid(ch.p, ch.len))
        return -EINVAL;
    return subscribe(h, s, ch, NULL, (tg_str_t){ NULL, 0 });
}

int tg_apphub_unsubscribe(tg_apphub_t *h, tg_session_t *s, tg_str_t ch)
{
    hub_sub_t *hs = tg_chan_name_valid(ch.p, ch.len) ? find_sub(s, ch) : NULL;
    if (!hs)
        return -ENOENT;
    drop_sub(h, hs);
    reply(s, "unsub", ch, NULL, (tg_str_t){ NULL, 0 });
    return 0;
}

bool tg_apphub_route(tg_apphub_t *h, tg_http_req_t *req)
{
    tg_str_t rest;
    if (req->path.len == 3 && memcmp(req->path.p, "/ws", 3) == 0) {
        tg_wsconn_accept(&h->ws, req);
        return true;
    }
    if (prefix(req->path, "/channels/", &rest)) {
        if (!req->head && strcmp(req->method, "GET") != 0) {
            static const char msg[] = "405 channels are read with GET\n";
            tg_http_respond(req, 405, "text/plain", "Allow: GET, HEAD\r\n", msg, sizeof(msg) - 1);
            return true;
        }
        pull(h, req, rest);
        return true;
    }
    if (req->path.len == 4 && memcmp(req->path.p, "/pub", 4) == 0) {
        if (strcmp(req->method, "POST") != 0) {
            static const char msg[] = "405 publish with POST\n";
            tg_http_respond(req, 405, "text/plain", "Allow: POST\r\n", msg, sizeof(msg) - 1);
            return true;
        }
        http_publish_batch(h, req);
        return true;
    }
    if (prefix(req->path, "/pub/", &rest)) {
        if (strcmp(req->method, "POST") != 0 && strcmp(req->method, "PUT") != 0) {
            static const char msg[] = "405 publish with POST\n";
            tg_http_respond(req, 405, "text/plain", "Allow: POST, PUT\r\n", msg, sizeof(msg) - 1);
            return true;
        }
        http_publish(h, req, rest);
        return true;
    }
    if (prefix(req->path, "/sub/", &rest)) {
        static const char bad[] = "400 bad channel name or position\n";
        tg_str_t from_s;
        tg_pos_t from;
        /* ?from= first; SSE clients resume with the id they saw last. */
        bool has_from = query_param(req->query, "from", &from_s);
        const tg_str_t *last_id = tg_http_header(req, "Last-Event-ID");
        if (!has_from && last_id && last_id->len > 0) {
            from_s = *last_id;
            has_from = true;
        }
        if (!tg_chan_name_valid(rest.p, rest.len) ||
            (has_from && !tg_pos_parse(from_s.p, from_s.len, &from))) {
            tg_http_respond(req, 400, "text/plain", NULL, bad, sizeof(bad) - 1);
            return true;
        }
        tg_str_t mode = { "", 0 };
        query_param(req->query, "mode", &mode);
        bool stream = mode.len == 6 && memcmp(mode.p, "stream", 6) == 0;
        if (mode.len == 4 && memcmp(mode.p, "poll", 4) == 0) {
            tg_str_t since_s;
            tg_pos_t since;
            bool has_since = query_param(req->query, "since", &since_s);
            if (has_since && !tg_pos_parse(since_s.p, since_s.len, &since)) {
                tg_http_respond(req, 400, "text/plain", NULL, bad, sizeof(bad) - 1);
                return true;
            }
            long_poll(h, req, rest, has_since ? &since : (has_from ? &from : NULL));
            return true;
        }
        tg_session_t *s;
        if (tg_http_header_has(req, "Upgrade", "websocket")) {
            s = tg_wsconn_accept(&h->ws, req);
        } else if (stream && req->minor >= 1) {
            s = tg_stream_accept(&h->streams, req, &tg_stream_chunked);
        } else if (tg_sse_wanted(req) || (mode.len == 3 && memcmp(mode.p, "sse", 3) == 0)) {
            s = tg_stream_accept(&h->streams, req, &tg_stream_sse);
        } else {
            static const char msg[] = "501 choose a transport: WebSocket, Accept: "
                                      "text/event-stream, ?mode=stream (HTTP/1.1) or "
                                      "?mode=poll\n";
            tg_http_respond(req, 501, "text/plain", NULL, msg, sizeof(msg) - 1);
            return true;
        }
        if (s)
            subscribe(h, s, rest, has_from ? &from : NULL, (tg_str_t){ NULL, 0 });
        return true;
    }
    return false;
}

int tg_apphub_init(tg_apphub_t *h, tg_push_t *push, int nloops, const tg_wsconn_cfg_t *ws,
                   uint32_t sse_heartbeat_ms, uint32_t poll_timeout_ms, uint64_t max_output,
                   uint32_t max_frame, uint32_t frame_idle_ms)
{
    memset(h, 0, sizeof(*h));
    h->base.on_command = hub_command;
    h->base.on_close = hub_close;
    h->base.on_drained = hub_drained;
    h->push = push;
    h->nloops = nloops;
    h->max_output = max_output;
    h->poll_timeout_ms = poll_timeout_ms;
    tg_stream_server_init(&h->streams, sse_heartbeat_ms, &h->base);
    int rc = tg_frameconn_server_init(&h->frames, max_frame, frame_idle_ms, &h->base, nloops);
    return rc != 0 ? rc : tg_wsconn_server_init(&h->ws, ws, &h->base, nloops);
}

void tg_apphub_fini(tg_apphub_t *h)
{
    tg_wsconn_server_fini(&h->ws);
    tg_frameconn_server_fini(&h->frames);
}
