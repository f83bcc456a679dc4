/* app/orders.c - what backends ask of the rest of the server (PUSH,
 * SUBSCRIBE, UNSUBSCRIBE, KICK): the gate's hooks. They run on the gate's
 * home loop; an order for a connection travels to that connection's loop by
 * mail and is carried out there, or dropped (and counted) when the
 * connection has gone or carries no session. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "app/hub.h"
#include "core/sbuf.h"
#include "net/close.h"
#include "net/json.h"

typedef enum order_op { ORDER_PUSH = 1, ORDER_SUB, ORDER_UNSUB, ORDER_KICK } order_op_t;

typedef struct order {
    tg_mail_t    mail;
    tg_apphub_t *hub;
    tg_conn_id_t conn;
    uint8_t      op;
    uint8_t      ch_len;
    char         ch[TG_CHAN_NAME_MAX];
    uint32_t     len;
    char         data[];
} order_t;

static void push_to(tg_session_t *s, const char *p, size_t n)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    tg_sbuf_put(&b, "{\"type\":\"push\",\"data\":", 22);
    if (tg_json_valid(p, n)) {
        tg_sbuf_put(&b, p, n);
    } else {
        tg_sbuf_put(&b, "\"", 1);
        tg_json_escape(&b, p, n);
        tg_sbuf_put(&b, "\"", 1);
    }
    tg_sbuf_put(&b, "}", 1);
    if (!b.failed)
        s->transport->send_json(s, "push", NULL, b.p, b.len);
    tg_sbuf_free(&b);
}

static void order_arrived(tg_mail_t *m, void *arg)
{
    order_t *o = tg_container_of(m, order_t, mail);
    tg_conn_t *c = tg_conn_lookup(arg, o->conn);
    tg_session_t *s = c ? tg_session_of(c) : NULL;
    tg_str_t ch = { o->ch, o->ch_len };
    int rc = s ? 0 : -ENOENT;
    if (s) {
        switch (o->op) {
        case ORDER_PUSH:
            push_to(s, o->data, o->len);
            break;
        case ORDER_SUB:
            rc = tg_apphub_subscribe(o->hub, s, ch);
            break;
        case ORDER_UNSUB:
            rc = tg_apphub_unsubscribe(o->hub, s, ch);
            break;
        case ORDER_KICK:
            s->transport->close(s, TG_CLOSE_KICKED, o->len ? o->data : "kicked");
            break;
        }
    }
    if (rc != 0)
        tg_counter_add(&o->hub->orders_dropped, 1);
    free(o);
}

static int post(tg_apphub_t *h, tg_conn_id_t conn, uint8_t op, tg_str_t ch, tg_str_t data)
{
    int loop = tg_conn_id_loop(conn);
    if (loop >= h->nloops || ch.len > TG_CHAN_NAME_MAX || data.len > UINT32_MAX - 1)
        return -ENOENT;
    order_t *o = malloc(sizeof(*o) + data.len + 1);
    if (!o)
        return -ENOMEM;
    o->mail.cb = order_arrived;
    o->hub = h;
    o->conn = conn;
    o->op = op;
    o->ch_len = (uint8_t)ch.len;
    memcpy(o->ch, ch.p, ch.len);
    o->len = (uint32_t)data.len;
    memcpy(o->data, data.p, data.len);
    o->data[data.len] = '\0'; /* a KICK's reason is used as a C string */
    tg_loop_post(h->loops[loop], &o->mail);
    return 0;
}

static bool conn_id(tg_str_t to, tg_conn_id_t *id)
{
    if (to.len == 0 || to.len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < to.len; i++) {
        if (to.p[i] < '0' || to.p[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(to.p[i] - '0');
    }
    *id = v;
    return v != 0;
}

static int hook_push(void *arg, tg_gate_target_t target, tg_str_t to, tg_str_t data)
{
    tg_apphub_t *h = arg;
    tg_conn_id_t id;
    if (target == TG_GATE_CONN)
        return conn_id(to, &id) ? post(h, id, ORDER_PUSH, (tg_str_t){ "", 0 }, data) : -ENOENT;
    if (target == TG_GATE_CHANNEL) {
        if (!tg_chan_name_valid(to.p, to.len))
            return -ENOENT;
        tg_msg_t *m = tg_msg_new(to, data.p, data.len, h->nloops);
        if (!m)
            return -ENOMEM;
        return tg_push_publish(h->push, h->gate_home, m, NULL, NULL);
    }
    char ch[TG_CHAN_NAME_MAX + 1];
    size_t n = to.len <= TG_USER_MAX ? tg_apphub_user_channel(to, ch, sizeof(ch)) : 0;
    if (!n)
        return -ENOENT;
    tg_msg_t *m = tg_msg_new((tg_str_t){ ch, n }, data.p, data.len, h->nloops);
    if (!m)
        return -ENOMEM;
    return tg_push_publish(h->push, h->gate_home, m, NULL, NULL);
}

static tg_str_t hook_user_of(void *arg, tg_session_t *s)
{
    (void)arg;
    return tg_apphub_user(s);
}

static int hook_bind_user(void *arg, tg_session_t *s, tg_str_t user)
{
    return tg_apphub_bind_user(arg, s, user);
}

static int hook_subscribe(void *arg, tg_conn_id_t conn, tg_str_t channel, bool on)
{
    return post(arg, conn, on ? ORDER_SUB : ORDER_UNSUB, channel, (tg_str_t){ "", 0 });
}

static int hook_kick(void *arg, tg_conn_id_t conn, tg_str_t why)
{
    return post(arg, conn, ORDER_KICK, (tg_str_t){ "", 0 }, why);
}

tg_gate_hooks_t tg_apphub_gate_hooks(tg_apphub_t *h)
{
    return (tg_gate_hooks_t){ .arg = h,
                              .push = hook_push,
                              .subscribe = hook_subscribe,
                              .kick = hook_kick,
                              .user_of = hook_user_of,
                              .bind_user = hook_bind_user };
}
