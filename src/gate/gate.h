/* gate/gate.h - the gate: backends behind tidegate (docs/backend-protocol.md).
 *
 * One IO loop is the gate's home: it owns every backend link, every route's
 * group and queue, and every job from submission to settlement, so dispatch,
 * by-key order, capacity and resubmission need no lock. Client loops build
 * jobs (the JOB pairs) themselves and post them home; answers are posted back
 * to the client's loop by connection id. A job is settled exactly once: by
 * its backend's REPLY or ERROR, at its deadline (504), or refused (503, 404).
 *
 * Threads: tg_gate_http and tg_gate_call on any IO loop; everything else on
 * the home loop, except create/start/destroy (boot thread) and stats (any). */
#ifndef TG_GATE_GATE_H
#define TG_GATE_GATE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/accept.h"
#include "core/loop.h"
#include "gate/cache.h"
#include "gate/job.h"
#include "gate/route.h"
#include "net/http.h"
#include "net/session.h"

typedef struct tg_gate_cfg {
    char     listen[128];    /* backend listener, HOST:PORT; "" for none */
    char     backends[1024]; /* HOST:PORT,... tidegate dials; "" for none */
    uint32_t max_frame;      /* body bytes of one frame, either way */
    uint32_t lz4_min;        /* compress bodies this long towards lz4 backends; 0: never */
    uint32_t ping_ms;        /* PING and DONE_BELOW on every link this often */
    uint32_t hello_ms;       /* a new link must say HELLO within this */
    uint64_t cache_size;     /* bytes the reply cache may hold (gate/cache.h) */
} tg_gate_cfg_t;

/* What backends ask of the rest of the server (push engine, sessions). Run on
 * the home loop; <to> is a connection id (decimal), a user or a channel. */
typedef enum tg_gate_target { TG_GATE_CONN = 1, TG_GATE_USER, TG_GATE_CHANNEL } tg_gate_target_t;
typedef struct tg_gate_hooks {
    void *arg;
    /* Returns 0, or -ENOENT when the target is not there (counted). */
    int (*push)(void *arg, tg_gate_target_t target, tg_str_t to, tg_str_t data);
    int (*subscribe)(void *arg, tg_conn_id_t conn, tg_str_t channel, bool on);
    int (*kick)(void *arg, tg_conn_id_t conn, tg_str_t why);
    /* Client loops: the user session <s> is bound to (empty: none), and
     * binding it (a REPLY's set_user). */
    tg_str_t (*user_of)(void *arg, tg_session_t *s);
    int      (*bind_user)(void *arg, tg_session_t *s, tg_str_t user);
} tg_gate_hooks_t;

typedef struct tg_gate_stats {
    tg_counter_t jobs;         /* submitted */
    tg_counter_t replies;      /* settled by a REPLY */
    tg_counter_t failed;       /* settled by a backend's ERROR */
    tg_counter_t deadline;     /* settled by the gate at the deadline (504) */
    tg_counter_t overloaded;   /* refused: the route's queue was full (503) */
    tg_counter_t no_backend;   /* refused: no backend within the window (503) */
    tg_counter_t no_route;     /* refused: nobody serves the route (404) */
    tg_counter_t resubmitted;  /* sent again after their link dropped */
    tg_counter_t late;         /* replies that came after the deadline */
    tg_counter_t repeats;      /* unused by the gate; backends count theirs */
    tg_counter_t links;        /* links open now (HELLO said) */
    tg_counter_t links_total;  /* links that said HELLO, ever */
    tg_counter_t violations;   /* links closed for breaking the protocol */
    tg_counter_t push_dropped; /* PUSH, SUBSCRIBE, KICK whose target was gone */
    tg_counter_t queued;       /* jobs waiting now */
    tg_counter_t inflight;     /* jobs sent and unanswered now */
    tg_counter_t answers_dropped; /* answers whose client had gone */
    tg_counter_t lz4_out;      /* frames sent LZ4-compressed */
    tg_counter_t lz4_in;       /* frames received LZ4-compressed */
    tg_counter_t lz4_before;   /* those frames (both ways), header included, uncompressed */
    tg_counter_t lz4_after;    /* and as they were on the wire */
    tg_counter_t scatters;     /* jobs of scatter routes, made into parts */
    tg_counter_t parts;        /* their parts */
    tg_counter_t partial;      /* scatters answered with parts missing */
    tg_cache_stats_t cache;    /* the reply cache */
} tg_gate_stats_t;

typedef struct tg_gate tg_gate_t;

/* Boot thread. <home> is the loop that owns the gate; <loops> every loop (for
 * answers). Routes are copied. NULL with a message in <err>. */
tg_gate_t *tg_gate_create(const tg_gate_cfg_t *cfg, const tg_routes_t *routes, tg_loop_t *home,
                          tg_loop_t **loops, int nloops, const tg_gate_hooks_t *hooks, char *err,
                          size_t cap);
/* Boot thread, before the loops start: binds the backend listener and queues
 * the dialing of configured backends. Returns 0 or a negative errno. */
int  tg_gate_start(tg_gate_t *g, char *err, size_t cap);
/* The backend listener's bound address ("" when none). */
const char *tg_gate_bound(const tg_gate_t *g);
/* After every loop has been joined and finalised. */
void tg_gate_destroy(tg_gate_t *g);

/* Home loop, from the loop's on_stop: closes links, settles every job
 * (503 "shutting_down"), stops accepting and dialing. */
void tg_gate_stop(tg_gate_t *g);

/* Client loop. Whether <req> is on a route; if so it is answered (now, or
 * later through the gate). */
bool tg_gate_http(tg_gate_t *g, tg_http_req_t *req);
/* Client loop. Sends call <cmd> of session <s> to its route; the session gets
 * one reply or error with the call's id. */
void tg_gate_call(tg_gate_t *g, tg_session_t *s, const tg_cmd_t *cmd);

const tg_gate_stats_t *tg_gate_stats(const tg_gate_t *g);

/* Home loop. Drops the cached replies of route <route> (empty: every route)
 * whose HTTP path starts with <prefix> (empty: all of them, calls' too).
 * Returns how many, or -ENOENT when no route is named <route>. */
long tg_gate_cache_purge(tg_gate_t *g, tg_str_t route, tg_str_t prefix);

#endif
