/* net/cmd.h - the client command set, whatever the transport (docs/protocol.md):
 * positions in their wire form, and parsing of one JSON command. The parsed
 * command borrows from the input; nothing is allocated. Any thread. */
#ifndef TG_NET_CMD_H
#define TG_NET_CMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/common.h"

/* A message's place in its channel: seq grows by one per message; epoch
 * changes when history may have been lost. Wire form: "EPOCH:SEQ", decimal. */
typedef struct tg_pos {
    uint32_t epoch;
    uint64_t seq;
} tg_pos_t;

#define TG_POS_TEXT_MAX 32 /* "4294967295:18446744073709551615" and a NUL */

/* Parses "EPOCH:SEQ" (the whole of <p>); false when malformed or out of range. */
bool   tg_pos_parse(const char *p, size_t n, tg_pos_t *out);
/* Writes the wire form and a NUL; returns its length. */
size_t tg_pos_format(tg_pos_t pos, char out[TG_POS_TEXT_MAX]);

/* Channel names: 1..TG_CHAN_NAME_MAX bytes of [A-Za-z0-9_.:@/=+-]. Anything
 * else is refused, so names never need escaping in JSON, URLs or logs. */
#define TG_CHAN_NAME_MAX 128
bool tg_chan_name_valid(const char *p, size_t n);

typedef enum tg_cmd_op {
    TG_CMD_SUB = 1, /* {"op":"sub","ch":NAME[,"from":"E:S"][,"id":ID]} */
    TG_CMD_UNSUB,   /* {"op":"unsub","ch":NAME[,"id":ID]} */
    TG_CMD_PUB,     /* {"op":"pub","ch":NAME,"data":VALUE[,"id":ID]} */
    TG_CMD_PING,    /* {"op":"ping"[,"id":ID]} */
    TG_CMD_CALL,    /* {"op":"call","route":NAME,"data":VALUE,"id":ID} (the gate) */
    TG_CMD_HELLO,   /* {"op":"hello"[,"compress":CODEC][,"id":ID]} (the transport's) */
} tg_cmd_op_t;

typedef struct tg_cmd {
    tg_cmd_op_t op;
    tg_str_t    id;       /* raw JSON number or string to echo back; len 0 when absent */
    tg_str_t    ch;       /* SUB, UNSUB, PUB: a valid channel name */
    bool        has_from; /* SUB: resume after <from> */
    tg_pos_t    from;
    tg_str_t    data;     /* PUB, CALL: raw JSON value */
    tg_str_t    route;    /* CALL: a name as for channels */
    tg_str_t    compress; /* HELLO: the codec asked for (a plain string); len 0 when absent */
} tg_cmd_t;

#define TG_CMD_MEMBERS_MAX 32 /* members in one command, ignored ones included */

/* Parses one command (a JSON object, as in a WebSocket text frame). Unknown
 * members are ignored, and so are known ones the op does not take. Refused:
 * a missing or ill-typed required member (a call's "id" is required), an
 * unknown op, a bad channel name, route or position, an "id" that is not a
 * number or string, a duplicate member (keys compared raw), more than
 * TG_CMD_MEMBERS_MAX members. Returns 0, or -EINVAL with a short reason
 * (static text) in <*why>, e.g. "unknown op", "bad channel name", and <*cmd>
 * zeroed. <why> may be NULL. */
int tg_cmd_parse(const char *p, size_t n, tg_cmd_t *cmd, const char **why);

#endif
