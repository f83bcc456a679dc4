/* net/close.c - the table behind tg_close_info(). */
#include "net/close.h"

static const tg_close_info_t table[TG_CLOSE_MAX] = {
    [TG_CLOSE_EOF]                = { "eof", 0, 1000, false },
    [TG_CLOSE_IOERR]              = { "io_error", 0, 1006, false },
    [TG_CLOSE_NOMEM]              = { "out_of_memory", 503, 1011, true },
    [TG_CLOSE_SHUTDOWN]           = { "shutdown", 503, 1001, false },
    [TG_CLOSE_IDLE]               = { "idle_timeout", 0, 1001, false },
    [TG_CLOSE_DONE]               = { "done", 0, 1000, false },
    [TG_CLOSE_BAD_REQUEST]        = { "bad_request", 400, 1002, true },
    [TG_CLOSE_URI_TOO_LONG]       = { "uri_too_long", 414, 1009, true },
    [TG_CLOSE_HEADER_TOO_LARGE]   = { "header_too_large", 431, 1009, true },
    [TG_CLOSE_BODY_TOO_LARGE]     = { "body_too_large", 413, 1009, true },
    [TG_CLOSE_UNSUPPORTED_TE]     = { "unsupported_te", 501, 1003, true },
    [TG_CLOSE_EXPECTATION_FAILED] = { "expectation_failed", 417, 1002, true },
    [TG_CLOSE_HEADER_TIMEOUT]     = { "header_timeout", 408, 1002, true },
    [TG_CLOSE_BODY_TIMEOUT]       = { "body_timeout", 408, 1002, true },
    [TG_CLOSE_SEND_TIMEOUT]       = { "send_timeout", 0, 1008, true },
    [TG_CLOSE_PROTOCOL]           = { "protocol_error", 400, 1002, true },
    [TG_CLOSE_INVALID_DATA]       = { "invalid_data", 400, 1007, true },
    [TG_CLOSE_TOO_BIG]            = { "message_too_big", 413, 1009, true },
    [TG_CLOSE_UNSUPPORTED]        = { "unsupported_data", 400, 1003, true },
    [TG_CLOSE_POLICY]             = { "policy", 400, 1008, true },
    [TG_CLOSE_SLOW]               = { "slow_consumer", 0, 1008, true },
    [TG_CLOSE_PING_TIMEOUT]       = { "ping_timeout", 0, 1001, true },
    [TG_CLOSE_KICKED]             = { "kicked", 0, 4000, false },
};

static const tg_close_info_t other = { "other", 500, 1011, true };

const tg_close_info_t *tg_close_info(int reason)
{
    if (reason <= 0 || reason >= TG_CLOSE_MAX || !table[reason].name)
        return &other;
    return &table[reason];
}

const tg_close_info_t *tg_close_named(int reason)
{
    const tg_close_info_t *info = tg_close_info(reason);
    return info == &other ? NULL : info;
}
