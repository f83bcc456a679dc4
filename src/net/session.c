/* net/session.c - see session.h. */
#include "net/session.h"

#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "core/sbuf.h"
#include "net/close.h"
#include "net/json.h"

void tg_session_envelope(tg_sbuf_t *b, const tg_msgview_t *m)
{
    char pos[TG_POS_TEXT_MAX];
    tg_pos_format(m->pos, pos);
    tg_sbuf_printf(b, "{\"type\":\"msg\",\"ch\":\"%.*s\",\"pos\":\"%s\",\"data\":", (int)m->ch.len,
                   m->ch.p, pos);
    switch (m->kind) {
    case 0:
        tg_sbuf_put(b, m->data, m->len);
        tg_sbuf_put(b, "}", 1);
        break;
    case 1:
        tg_sbuf_put(b, "\"", 1);
        tg_json_escape(b, m->data, m->len);
        tg_sbuf_put(b, "\"}", 2);
        break;
    default:
        tg_sbuf_put(b, "\"", 1);
        tg_base64(b, m->data, m->len);
        tg_sbuf_put(b, "\",\"enc\":\"base64\"}", 17);
        break;
    }
}

void tg_session_binary(tg_sbuf_t *b, const tg_msgview_t *m)
{
    char pos[TG_POS_TEXT_MAX];
    tg_pos_format(m->pos, pos);
    tg_sbuf_put(b, "00", 2);
    size_t at = b->len;
    tg_sbuf_printf(b, "{\"type\":\"msg\",\"ch\":\"%.*s\",\"pos\":\"%s\"}", (int)m->ch.len,
                   m->ch.p, pos);
    size_t hl = b->len - at;
    if (!b->failed) {
        b->p[at - 2] = (char)(hl >> 8);
        b->p[at - 1] = (char)hl;
    }
    tg_sbuf_put(b, m->data, m->len);
}

void tg_session_error(tg_session_t *s, const char *code, const char *msg, tg_str_t id)
{
    char buf[256];
    int n;
    if (id.len > 0 && id.len < 64)
        n = snprintf(buf, sizeof(buf), "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\","
                                       "\"id\":%.*s}",
                     code, msg, (int)id.len, id.p);
    else
        n = snprintf(buf, sizeof(buf), "{\"type\":\"error\",\"code\":\"%s\",\"message\":\"%s\"}",
                     code, msg);
    s->transport->send_json(s, "error", NULL, buf, (size_t)n);
}

void tg_session_command(tg_session_t *s, const char *p, size_t n)
{
    tg_cmd_t cmd;
    const char *why = NULL;
    if (tg_cmd_parse(p, n, &cmd, &why) != 0) {
        tg_session_error(s, "bad_command", why ? why : "bad command", (tg_str_t){ NULL, 0 });
        if (++s->bad_commands >= TG_SESSION_BAD_COMMANDS_MAX) {
            tg_log_info("session %llx: closed after %d bad commands",
                        (unsigned long long)tg_conn_id(s->conn), TG_SESSION_BAD_COMMANDS_MAX);
            s->transport->close(s, TG_CLOSE_POLICY, "too many bad commands");
        }
        return;
    }
    s->bad_commands = 0;
    if (cmd.op == TG_CMD_HELLO) {
        if (s->transport->hello) {
            s->transport->hello(s, &cmd);
        } else { /* nothing to negotiate here: no "compress" in the answer */
            char buf[96];
            int k = cmd.id.len && cmd.id.len < 64
                        ? snprintf(buf, sizeof(buf), "{\"type\":\"hello\",\"id\":%.*s}",
                                   (int)cmd.id.len, cmd.id.p)
                        : snprintf(buf, sizeof(buf), "{\"type\":\"hello\"}");
            s->transport->send_json(s, "hello", NULL, buf, (size_t)k);
        }
        return;
    }
    s->hub->on_command(s->hub, s, &cmd);
}

tg_session_t *tg_session_of(tg_conn_t *c)
{
    return c->proto->on_drained == tg_session_conn_drained ? c->data : NULL;
}

void tg_session_conn_drained(tg_conn_t *c)
{
    tg_session_t *s = c->data;
    if (s && s->hub->on_drained)
        s->hub->on_drained(s->hub, s);
}
