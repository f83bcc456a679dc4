/* net/session.h - one client's session, whatever transport carries it. The
 * transport (WebSocket, SSE, long-poll, chunked stream, TCP frames) turns bytes
 * into commands and messages into bytes; the session is what the layers above
 * (push, the gate) talk to, never the transport itself.
 *
 * Loop thread of the session's connection only. */
#ifndef TG_NET_SESSION_H
#define TG_NET_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/conn.h"
#include "core/list.h"
#include "core/shared.h"
#include "net/cmd.h"

/* A message as transports see it: flat, owned by the caller for the call. */
typedef struct tg_msgview {
    tg_str_t    ch;
    tg_pos_t    pos;
    uint8_t     kind; /* 0 JSON, 1 UTF-8 text, 2 binary (push's tg_payload_t) */
    const char *data;
    size_t      len;
} tg_msgview_t;

/* Encodings of one message shared by every session of a loop during one
 * fan-out: a slot per wire format. */
enum {
    TG_SLOT_WS = 0,    /* WebSocket text frame, uncompressed */
    TG_SLOT_WS_DEFLATE,
    TG_SLOT_SSE,
    TG_SLOT_STREAM,
    TG_SLOT_FRAME,     /* TCP frame */
    TG_SLOT_FRAME_LZ4, /* TCP frame in an LZ4 frame, or the plain one when that is no shorter */
    TG_SLOTS
};

typedef struct tg_session tg_session_t;

typedef struct tg_transport {
    const char *name;
    /* Queues message <m>, encoding it into <cache>[its slot] unless there. */
    void   (*send_msg)(tg_session_t *s, const tg_msgview_t *m, tg_shared_t **cache);
    /* Queues a reply or notice: a JSON object whose "type" is <type>, about
     * position <pos> when not NULL (SSE makes it the event's id). */
    void   (*send_json)(tg_session_t *s, const char *type, const tg_pos_t *pos, const char *json,
                        size_t len);
    /* Output the client has not taken yet, in bytes. */
    size_t (*backlog)(tg_session_t *s);
    /* Ends the session: <code> is a tg_close_t; <why> is for the client. */
    void   (*close)(tg_session_t *s, int code, const char *why);
    /* Answers a hello (features of the transport, such as compression); NULL:
     * the transport has none to offer, and the answer says so. */
    void   (*hello)(tg_session_t *s, const tg_cmd_t *cmd);
} tg_transport_t;

/* What the application does with sessions (set once at boot). */
typedef struct tg_hub {
    /* A command arrived. */
    void (*on_command)(struct tg_hub *hub, tg_session_t *s, const tg_cmd_t *cmd);
    /* The session is ending: release everything linked on s->items. */
    void (*on_close)(struct tg_hub *hub, tg_session_t *s);
    /* The client took all pending output (latest-mode subscriptions resume). */
    void (*on_drained)(struct tg_hub *hub, tg_session_t *s);
} tg_hub_t;

struct tg_session {
    tg_conn_t            *conn;
    const tg_transport_t *transport;
    tg_hub_t             *hub;
    tg_link_t             items;        /* the hub's nodes for this session */
    uint16_t              bad_commands; /* in a row; too many closes the session */
};

#define TG_SESSION_BAD_COMMANDS_MAX 10

/* Appends the JSON envelope of <m> ({"type":"msg","ch":...,"pos":...,"data":...})
 * to <b>: JSON payloads as they are, text as a string, binary as base64. */
struct tg_sbuf;
void tg_session_envelope(struct tg_sbuf *b, const tg_msgview_t *m);

/* Appends the binary form of <m> (a binary payload) to <b>: a u16 big-endian
 * length, a JSON header {"type":"msg","ch":...,"pos":...} of that length, then
 * the payload raw. WebSocket binary frames and TCP BINARY frames carry it. */
void tg_session_binary(struct tg_sbuf *b, const tg_msgview_t *m);

/* Replies {"type":"error","code":<code>,"message":<msg>[,"id":<id>]}. */
void tg_session_error(tg_session_t *s, const char *code, const char *msg, tg_str_t id);

/* A proto's on_drained for connections carrying a session (c->data points at
 * it): the client took all output, so the hub may send what it held back. */
void tg_session_conn_drained(tg_conn_t *c);

/* The session connection <c> carries, or NULL when it carries none (plain
 * HTTP, a backend link): for code that finds a connection by id. */
tg_session_t *tg_session_of(tg_conn_t *c);
/* Parses a command in <p>,<n> and hands it to the hub, or replies an error
 * (closing after too many bad ones in a row). A hello is the transport's,
 * never the hub's. */
void tg_session_command(tg_session_t *s, const char *p, size_t n);

#endif
