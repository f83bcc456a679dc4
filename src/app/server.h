/* app/server.h - one tidegate process: its loops, acceptor or per-loop
 * listeners, workers and the HTTP front. The boot thread starts and stops it;
 * everything else runs on the threads it starts. */
#ifndef TG_APP_SERVER_H
#define TG_APP_SERVER_H

#include <stdint.h>

#include "app/config.h"
#include "app/hub.h"
#include "core/accept.h"
#include "core/loop.h"
#include "core/worker.h"
#include "net/http.h"

typedef struct tg_server {
    tg_config_t      cfg;
    int              nloops;
    tg_loop_t       *loops;
    tg_loop_t      **loop_ptrs;
    tg_acceptor_t    acceptor;  /* acceptor mode */
    tg_listener_t   *listeners; /* reuseport mode: one per loop */
    tg_listener_t   *frame_listeners; /* reuseport mode, frames.listen set: one per loop */
    tg_http_server_t http;
    tg_workers_t     workers;
    tg_push_t       *push;
    tg_apphub_t      hub;
    tg_gate_t       *gate;      /* backends; NULL when off (no listener, nothing to dial) */
    uint64_t         started_ms;
    char             bound[80]; /* the address actually listened on */
    char             frames_bound[80];
} tg_server_t;

/* Binds, starts every thread. Returns 0, or a negative errno with a message in <err>. */
int  tg_server_start(tg_server_t *s, const tg_config_t *cfg, char *err, size_t cap);
/* Graceful: stops accepting, lets requests in flight finish within the
 * configured grace, closes the rest, joins every thread, frees everything. */
void tg_server_stop(tg_server_t *s);

/* The built-in endpoints' bodies (app/stats.c). */
struct tg_sbuf;
/* <top>: the busiest channels (presence), <ntop> of them. */
void tg_stats_json(const tg_server_t *s, const tg_chan_count_t *top, int ntop,
                   struct tg_sbuf *out);
void tg_stats_prometheus(const tg_server_t *s, const tg_chan_count_t *top, int ntop,
                         struct tg_sbuf *out);

#endif
