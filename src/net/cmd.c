/* net/cmd.c - see cmd.h. A command is split by tg_json_object() (which has
 * validated the whole of it), then each member the op takes is checked in a
 * fixed order, so that one input always gets the same reason:
 *   object, member count, duplicates, op, id, ch, from, route, data. */
#include "net/cmd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "net/json.h"

/* Decimal digits, "0" or no leading zero, at most <max>. */
static bool parse_dec(const char *p, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || (p[0] == '0' && n > 1))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (max - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

bool tg_pos_parse(const char *p, size_t n, tg_pos_t *out)
{
    const char *colon = n ? memchr(p, ':', n) : NULL;
    if (!colon)
        return false;
    size_t k = (size_t)(colon - p);
    uint64_t epoch, seq;
    if (!parse_dec(p, k, UINT32_MAX, &epoch) || !parse_dec(colon + 1, n - k - 1, UINT64_MAX, &seq))
        return false;
    out->epoch = (uint32_t)epoch;
    out->seq = seq;
    return true;
}

size_t tg_pos_format(tg_pos_t pos, char out[TG_POS_TEXT_MAX])
{
    int len = snprintf(out, TG_POS_TEXT_MAX, "%" PRIu32 ":%" PRIu64, pos.epoch, pos.seq);
    TG_ASSERT(len > 0 && len < TG_POS_TEXT_MAX);
    return (size_t)len;
}

static bool name_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '.' || c == ':' || c == '@' || c == '/' || c == '=' || c == '+' ||
           c == '-';
}

bool tg_chan_name_valid(const char *p, size_t n)
{
    if (n == 0 || n > TG_CHAN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!name_byte(p[i]))
            return false;
    return true;
}

static bool key_is(tg_str_t key, const char *name)
{
    size_t len = strlen(name);
    return key.len == len && memcmp(key.p, name, len) == 0;
}

static bool same(tg_str_t a, tg_str_t b)
{
    return a.len == b.len && memcmp(a.p, b.p, a.len) == 0;
}

/* The value of member <name>, or NULL. Keys are unique by now. */
static const tg_str_t *find(const tg_json_member_t *m, int count, const char *name)
{
    for (int i = 0; i < count; i++)
        if (key_is(m[i].key, name))
            return &m[i].value;
    return NULL;
}

/* A plain string holding a valid name (channels and routes share the rules). */
static bool name_value(const tg_str_t *v, tg_str_t *out)
{
    return tg_json_plain_string(*v, out) && tg_chan_name_valid(out->p, out->len);
}

static int refuse(const char **why, const char *reason)
{
    if (why)
        *why = reason;
    return -EINVAL;
}

static int parse(const char *p, size_t n, tg_cmd_t *cmd, const char **why)
{
    static const struct {
        const char *name;
        tg_cmd_op_t op;
    } ops[] = {
        { "sub", TG_CMD_SUB },   { "unsub", TG_CMD_UNSUB }, { "pub", TG_CMD_PUB },
        { "ping", TG_CMD_PING }, { "call", TG_CMD_CALL }, { "hello", TG_CMD_HELLO },
    };
    tg_json_member_t m[TG_CMD_MEMBERS_MAX];

    int count = tg_json_object(p, n, m, TG_CMD_MEMBERS_MAX);
    if (count < 0) {
        /* Only on refusal: tell an oversized object from text that is none. */
        size_t i = 0;
        while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
            i++;
        bool object = i < n && p[i] == '{' && tg_json_valid(p, n);
        return refuse(why, object ? "too many members" : "not a JSON object");
    }
    /* A duplicate is read differently by different JSON parsers (first or last
     * wins), so a command that a backend might read otherwise is refused.
     * Quadratic, but over at most TG_CMD_MEMBERS_MAX short keys. */
    for (int i = 1; i < count; i++)
        for (int j = 0; j < i; j++)
            if (same(m[i].key, m[j].key))
                return refuse(why, "duplicate member");

    const tg_str_t *v = find(m, count, "op");
    tg_str_t s;
    if (!v)
        return refuse(why, "missing op");
    if (!tg_json_plain_string(*v, &s))
        return refuse(why, "unknown op");
    for (size_t i = 0; i < TG_ARRAY_LEN(ops) && !cmd->op; i++)
        if (key_is(s, ops[i].name))
            cmd->op = ops[i].op;
    if (!cmd->op)
        return refuse(why, "unknown op");

    /* The id is echoed back as it came: a valid number or string, nothing else. */
    if ((v = find(m, count, "id"))) {
        if (v->p[0] != '"' && v->p[0] != '-' && (v->p[0] < '0' || v->p[0] > '9'))
            return refuse(why, "bad id");
        cmd->id = *v;
    } else if (cmd->op == TG_CMD_CALL) {
        return refuse(why, "missing id"); /* the gate's reply is matched by it */
    }

    if (cmd->op == TG_CMD_SUB || cmd->op == TG_CMD_UNSUB || cmd->op == TG_CMD_PUB) {
        if (!(v = find(m, count, "ch")))
            return refuse(why, "missing ch");
        if (!name_value(v, &cmd->ch))
            return refuse(why, "bad channel name");
    }
    if (cmd->op == TG_CMD_SUB && (v = find(m, count, "from"))) {
        if (!tg_json_plain_string(*v, &s) || !tg_pos_parse(s.p, s.len, &cmd->from))
            return refuse(why, "bad from");
        cmd->has_from = true;
    }
    if (cmd->op == TG_CMD_CALL) {
        if (!(v = find(m, count, "route")))
            return refuse(why, "missing route");
        if (!name_value(v, &cmd->route))
            return refuse(why, "bad route");
    }
    if (cmd->op == TG_CMD_HELLO && (v = find(m, count, "compress")) &&
        !tg_json_plain_string(*v, &cmd->compress))
        return refuse(why, "bad compress");
    if (cmd->op == TG_CMD_PUB || cmd->op == TG_CMD_CALL) {
        if (!(v = find(m, count, "data")))
            return refuse(why, "missing data");
        cmd->data = *v;
    }
    return 0;
}

int tg_cmd_parse(const char *p, size_t n, tg_cmd_t *cmd, const char **why)
{
    memset(cmd, 0, sizeof(*cmd));
    int rc = parse(p, n, cmd, why);
    if (rc != 0)
        memset(cmd, 0, sizeof(*cmd)); /* nothing half-parsed is left to misuse */
    return rc;
}
