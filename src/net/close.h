/* net/close.h - why a client connection closed: one list for every protocol,
 * each reason mapped to the HTTP status, WebSocket close code and name it is
 * reported with. The core counts closes by these numbers per loop; /stats and
 * /metrics name them through tg_close_info(). */
#ifndef TG_NET_CLOSE_H
#define TG_NET_CLOSE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/conn.h"

typedef enum tg_close {
    TG_CLOSE_EOF = TG_CONN_EOF,
    TG_CLOSE_IOERR = TG_CONN_IOERR,
    TG_CLOSE_NOMEM = TG_CONN_NOMEM,
    TG_CLOSE_SHUTDOWN = TG_CONN_SHUTDOWN,
    TG_CLOSE_IDLE = TG_CONN_REASON_USER, /* idle past its timeout: closed quietly */
    TG_CLOSE_DONE,                       /* a response said Connection: close */
    TG_CLOSE_BAD_REQUEST,
    TG_CLOSE_URI_TOO_LONG,
    TG_CLOSE_HEADER_TOO_LARGE,
    TG_CLOSE_BODY_TOO_LARGE,
    TG_CLOSE_UNSUPPORTED_TE,
    TG_CLOSE_EXPECTATION_FAILED,
    TG_CLOSE_HEADER_TIMEOUT,
    TG_CLOSE_BODY_TIMEOUT,
    TG_CLOSE_SEND_TIMEOUT,
    TG_CLOSE_PROTOCOL,      /* WebSocket or frame protocol violation */
    TG_CLOSE_INVALID_DATA,  /* bad UTF-8, or a message that does not inflate */
    TG_CLOSE_TOO_BIG,       /* a message over the size limit */
    TG_CLOSE_UNSUPPORTED,   /* a binary frame where commands are text */
    TG_CLOSE_POLICY,        /* too many bad commands */
    TG_CLOSE_SLOW,          /* output over the cap on an all-mode channel */
    TG_CLOSE_PING_TIMEOUT,  /* no answer to pings */
    TG_CLOSE_KICKED,        /* a backend asked (KICK) */
    TG_CLOSE_MAX
} tg_close_t;

typedef struct tg_close_info {
    const char *name;        /* as in /stats "errors" and the metrics label */
    uint16_t    http_status; /* 0: no response is sent */
    uint16_t    ws_code;     /* RFC 6455 close code */
    bool        error;       /* the client did something wrong, or the server ran short */
} tg_close_info_t;

/* Never NULL: unknown reasons map to an "other" entry. */
const tg_close_info_t *tg_close_info(int reason);
/* NULL for numbers that name no reason (for listing them all). */
const tg_close_info_t *tg_close_named(int reason);

#endif
