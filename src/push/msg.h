/* push/msg.h - a published message: immutable once made, reference-counted,
 * shared by the home loop's history and every loop that delivers it. One
 * allocation holds the header, the channel name, the payload and one mail node
 * per loop, so publishing and fanning out allocate nothing more.
 * Any thread may ref and unref. */
#ifndef TG_PUSH_MSG_H
#define TG_PUSH_MSG_H

#include <stdatomic.h>
#include <stdint.h>

#include "core/common.h"
#include "core/mbox.h"
#include "net/cmd.h"

/* What the payload is, decided once at publish (docs/protocol.md). */
typedef enum tg_payload {
    TG_PAYLOAD_JSON,   /* a JSON value: carried as is */
    TG_PAYLOAD_TEXT,   /* UTF-8 text: carried as a JSON string */
    TG_PAYLOAD_BINARY, /* other bytes: base64 on text transports */
} tg_payload_t;

/* A mail node carried by a message: how it reaches each loop. */
typedef struct tg_msg_mail {
    tg_mail_t      mail;
    struct tg_msg *msg;
} tg_msg_mail_t;

typedef struct tg_msg {
    atomic_uint refs;
    uint8_t     kind;      /* tg_payload_t */
    uint8_t     name_len;  /* channel name, at data[0] */
    uint16_t    nmails;    /* mail nodes at the end: one per loop */
    uint32_t    len;       /* payload bytes, at data[name_len] */
    tg_pos_t    pos;       /* set by the channel's home loop when published */
    uint64_t    time_ms;   /* when published (loop clock): history age */
    tg_msg_mail_t *mails;  /* nmails nodes, inside this allocation */
    struct tg_push *push;  /* set when published: whose loops the mails go to */
    char        data[];
} tg_msg_t;

/* A message for channel <ch> with payload <p>,<n>, classified. One reference,
 * the caller's; <nloops> mail nodes. NULL when memory is out. */
tg_msg_t *tg_msg_new(tg_str_t ch, const void *p, size_t n, int nloops);
/* As tg_msg_new, with the class given (a payload already known to be JSON). */
tg_msg_t *tg_msg_new_kind(tg_str_t ch, const void *p, size_t n, int nloops, tg_payload_t kind);

static inline void tg_msg_ref(tg_msg_t *m)
{
    atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed);
}
void tg_msg_unref(tg_msg_t *m);

static inline tg_str_t tg_msg_chan(const tg_msg_t *m)
{
    return (tg_str_t){ m->data, m->name_len };
}
static inline const char *tg_msg_payload(const tg_msg_t *m)
{
    return m->data + m->name_len;
}
#endif
