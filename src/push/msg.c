/* push/msg.c - see msg.h. */
#include "push/msg.h"

#include <stdlib.h>
#include <string.h>

#include "net/json.h"
#include "net/ws.h"

tg_msg_t *tg_msg_new_kind(tg_str_t ch, const void *p, size_t n, int nloops, tg_payload_t kind)
{
    if (ch.len > UINT8_MAX || n > UINT32_MAX || nloops < 1 || nloops > UINT16_MAX)
        return NULL;
    /* Mail nodes first after the header's fixed part would misalign nothing,
     * but the bytes are of any length: put the nodes at an aligned offset at
     * the end. */
    size_t bytes = ch.len + n;
    size_t mails_at = (sizeof(tg_msg_t) + bytes + _Alignof(tg_msg_mail_t) - 1) &
                      ~(_Alignof(tg_msg_mail_t) - 1);
    tg_msg_t *m = malloc(mails_at + (size_t)nloops * sizeof(tg_msg_mail_t));
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    m->kind = (uint8_t)kind;
    m->name_len = (uint8_t)ch.len;
    m->nmails = (uint16_t)nloops;
    m->len = (uint32_t)n;
    m->pos = (tg_pos_t){ 0, 0 };
    m->time_ms = 0;
    m->push = NULL;
    m->mails = (tg_msg_mail_t *)(void *)((char *)m + mails_at);
    for (int i = 0; i < nloops; i++)
        m->mails[i].msg = m;
    memcpy(m->data, ch.p, ch.len);
    if (n)
        memcpy(m->data + ch.len, p, n);
    return m;
}

tg_msg_t *tg_msg_new(tg_str_t ch, const void *p, size_t n, int nloops)
{
    tg_payload_t kind = tg_json_valid(p, n)         ? TG_PAYLOAD_JSON
                        : tg_utf8_valid(p, n)        ? TG_PAYLOAD_TEXT
                                                     : TG_PAYLOAD_BINARY;
    return tg_msg_new_kind(ch, p, n, nloops, kind);
}

void tg_msg_unref(tg_msg_t *m)
{
    if (m && atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1)
        free(m);
}
