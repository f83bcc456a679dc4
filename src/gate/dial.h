/* gate/dial.h - backends tidegate connects to itself ("gate.backends"): each
 * address is resolved without blocking the loop (c-ares), connected, handed
 * to the backend protocol, and dialed again with backoff (100 ms doubling to
 * 5 s) whenever the link drops or cannot be made. Home loop only. */
#ifndef TG_GATE_DIAL_H
#define TG_GATE_DIAL_H

#include <stdbool.h>
#include <stddef.h>

#include "core/conn.h"
#include "core/loop.h"

#define TG_DIAL_MIN_MS 100
#define TG_DIAL_MAX_MS 5000
#define TG_DIALERS_MAX 32

typedef struct tg_dialers tg_dialers_t;

/* Boot thread: one dialer per address of the comma-separated <list>
 * ("HOST:PORT"); the first dial happens once <loop> runs. NULL with a message
 * in <err> when the list is malformed. */
tg_dialers_t *tg_dialers_create(tg_loop_t *loop, const char *list, const tg_proto_t *proto,
                                char *err, size_t cap);
/* Home loop: no more dialing; links already made stay until they close. */
void          tg_dialers_stop(tg_dialers_t *d);
/* After the loop is finalised. NULL is fine. */
void          tg_dialers_destroy(tg_dialers_t *d);

/* backend.c: connection <c> closed; <up> when it had said HELLO (the backoff
 * starts over). A no-op for links that were accepted, not dialed. */
void tg_dial__closed(tg_dialers_t *d, tg_conn_t *c, bool up);

#endif
