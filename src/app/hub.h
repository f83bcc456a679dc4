/* app/hub.h - where sessions meet push: client commands become subscriptions
 * and publishes, push's deliveries become messages on the session's
 * transport; plus the HTTP routes that start sessions (/ws, /sub/...) and
 * publish (/pub/...). Loop threads; the hub itself is read-only after boot. */
#ifndef TG_APP_HUB_H
#define TG_APP_HUB_H

#include <stdbool.h>

#include "gate/gate.h"
#include "net/frameconn.h"
#include "net/http.h"
#include "net/session.h"
#include "net/sse.h"
#include "net/stream.h"
#include "net/wsconn.h"
#include "push/push.h"

typedef struct tg_apphub {
    tg_hub_t           base;
    tg_push_t         *push;
    tg_wsconn_server_t ws;
    tg_stream_server_t streams; /* SSE and chunked */
    tg_frameconn_server_t frames; /* TCP frames, on their own listener */
    int                nloops;
    uint64_t           max_output; /* per connection, all-mode channels: slow past it */
    uint32_t           poll_timeout_ms; /* a long-poll with nothing to answer gets 204 */
    tg_gate_t         *gate;       /* calls go there; NULL when the gate is off */
    tg_loop_t         *gate_home;  /* the loop the gate (and its hooks) runs on */
    tg_loop_t        **loops;      /* every loop, by id */
    tg_counter_t       orders_dropped; /* backend orders whose connection had gone */
} tg_apphub_t;

int  tg_apphub_init(tg_apphub_t *h, tg_push_t *push, int nloops, const tg_wsconn_cfg_t *ws,
                    uint32_t sse_heartbeat_ms, uint32_t poll_timeout_ms, uint64_t max_output,
                    uint32_t max_frame, uint32_t frame_idle_ms);
void tg_apphub_fini(tg_apphub_t *h);
/* Loop thread of <s>: subscribes <s> to <ch> as its own "sub" command would
 * (a backend's SUBSCRIBE); unsubscribes likewise. 0 or a negative errno. */
int  tg_apphub_subscribe(tg_apphub_t *h, tg_session_t *s, tg_str_t ch);
int  tg_apphub_unsubscribe(tg_apphub_t *h, tg_session_t *s, tg_str_t ch);
/* Users: a REPLY's set_user binds the calling session to a user (a login);
 * a PUSH to the user reaches every session bound to it, on any loop. */
#define TG_USER_MAX 64
/* Loop thread of <s>. Binds <s> to <user>, replacing an earlier binding. */
int      tg_apphub_bind_user(tg_apphub_t *h, tg_session_t *s, tg_str_t user);
/* The user <s> is bound to (empty when none); borrowed while the binding lasts. */
tg_str_t tg_apphub_user(tg_session_t *s);
/* The internal channel of <user> into <out>; its length, or 0 when too long. */
size_t   tg_apphub_user_channel(tg_str_t user, char *out, size_t cap);
/* Home loop of the gate: what backends ask of sessions and channels. */
tg_gate_hooks_t tg_apphub_gate_hooks(tg_apphub_t *h);
/* Routes the request if it is the hub's; false when it is not. */
bool tg_apphub_route(tg_apphub_t *h, tg_http_req_t *req);

#endif
