/* gate/backend.h - the gate's inside: a backend link as the gate sees it, a
 * route's group and queue, a key's turn, and the gate object they belong to.
 * Shared by gate.c (dispatch, jobs) and backend.c (the link protocol); not an
 * API for other layers. Home loop only. */
#ifndef TG_GATE_BACKEND_H
#define TG_GATE_BACKEND_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/idmap.h"
#include "core/list.h"
#include "core/timer.h"
#include "gate/cache.h"
#include "gate/gate.h"
#include "gate/dial.h"
#include "gate/wire.h"

#define TG_BACKEND_ROUTES_MAX 16  /* routes one backend serves */
#define TG_BACKEND_NAME_MAX   64
#define TG_BACKEND_CAPACITY   64  /* when its HELLO says nothing */
#define TG_BACKEND_CAPACITY_MAX 65536
#define TG_DONE_BELOW_STEP    1024 /* settled jobs between two DONE_BELOW outside pings */

typedef struct tg_backend tg_backend_t;

/* One key of a by-key route: the job holding it and those waiting behind. */
typedef struct gate_key {
    uint64_t  hash;
    tg_job_t *holder;  /* queued, in flight or orphaned; NULL never (freed then) */
    tg_link_t waiting; /* tg_job_t.node, arrival order */
} gate_key_t;

/* A route as the home loop runs it: its group, queue and keys. */
typedef struct gate_route {
    tg_route_t     cfg;
    tg_gate_t     *gate;
    tg_backend_t **backends;   /* serving now (HELLO received) */
    uint32_t       nbackends;
    uint32_t       rr;         /* round-robin cursor */
    tg_link_t      queue;      /* tg_job_t.node, QUEUED, oldest first */
    uint32_t       queued;
    tg_idmap_t     keys;       /* key hash -> gate_key_t */
    uint64_t       empty_since_ms;
    bool           refusing;   /* no backend within the window: jobs fail at once */
    tg_timer_t     window;
} gate_route_t;

struct tg_backend {
    tg_gate_t    *gate;
    tg_conn_t    *conn;
    tg_link_t     node;       /* gate->backends */
    tg_link_t     inflight;   /* tg_job_t.node: SENT and ORPHAN jobs */
    char          name[TG_BACKEND_NAME_MAX + 1];
    gate_route_t *routes[TG_BACKEND_ROUTES_MAX];
    uint32_t      nroutes;
    uint32_t      capacity;
    uint32_t      outstanding; /* jobs in <inflight> */
    uint64_t      last_rx_ms;
    uint64_t      done_below;  /* last DONE_BELOW sent */
    bool          hello;
    bool          draining;
    bool          lz4;
    uint8_t      *in;          /* a frame begun but not complete */
    size_t        in_len;
    size_t        in_cap;
};

struct tg_gate {
    tg_gate_cfg_t   cfg;
    tg_routes_t     routes;
    tg_gate_hooks_t hooks;
    tg_loop_t      *home;
    tg_loop_t     **loops;
    int             nloops;
    tg_proto_t      proto;     /* backend links */
    tg_listener_t   listener;
    bool            listening;
    char            bound[80];
    _Atomic uint64_t next_id;  /* job ids: unique across restarts (see tg_gate_create) */
    uint64_t        epoch;
    tg_idmap_t      jobs;      /* id -> job, until settled (orphans included) */
    tg_link_t       live;      /* tg_job_t.live: unsettled, not orphaned, id order */
    tg_link_t       backends;
    gate_route_t  **groutes;
    int             ngroutes;
    bool            stopped;
    atomic_bool     closing;   /* stopped, as client loops may read it (cancels stop then) */
    tg_timer_t      ping;
    tg_dialers_t   *dialers;
    tg_cache_t      cache;     /* replies of caching routes, and flights */
    tg_link_t       gathers;   /* scatters waiting for their parts (scatter.c) */
    tg_gate_stats_t stats;
};

/* gate.c, for backend.c. */
/* The route <name> names, made from the configuration or as an auto route
 * when <create>; NULL when there is none. */
gate_route_t *tg_gate__route(tg_gate_t *g, const char *name, size_t n, bool create);
/* <b> said HELLO: it joins its routes' groups and gets work. */
void          tg_gate__joined(tg_gate_t *g, tg_backend_t *b);
/* <b> has room again, or stopped draining: hand it queued work. */
void          tg_gate__pump(tg_gate_t *g, tg_backend_t *b);
/* <b> answered job <id> with a REPLY or ERROR (<type>) holding <pairs>.
 * Returns 0, or -ENOENT when <b> does not hold that job (a violation). */
int           tg_gate__answered(tg_gate_t *g, tg_backend_t *b, uint8_t type, uint64_t id,
                                const uint8_t *pairs, size_t len);
/* <b>'s link is gone: its jobs are resubmitted, it leaves its groups. */
void          tg_gate__left(tg_gate_t *g, tg_backend_t *b);
/* The lowest id of an unsettled job (or the next id when none). */
uint64_t      tg_gate__low_water(const tg_gate_t *g);

/* gate.c, for scatter.c. */
/* Takes <job> (arrived, not yet known) on route <r>: deadline, key, queue. */
void          tg_gate__admit(tg_gate_t *g, gate_route_t *r, tg_job_t *job);
/* Sends answer <a> (NULL: out of memory) to <job>'s client. */
void          tg_gate__answer(tg_gate_t *g, tg_job_t *job, tg_answer_t *a);
/* Keeps <job> (not admitted) among the unsettled, holding the low water. */
void          tg_gate__hold(tg_gate_t *g, tg_job_t *job);
void          tg_gate__unhold(tg_gate_t *g, tg_job_t *job);
uint64_t      tg_gate__next_id(tg_gate_t *g);

/* backend.c, for gate.c. */
extern const tg_proto_t tg_backend_proto;
/* Writes JOB <job> to <b>. Returns 0 or a negative errno (the link closed). */
int  tg_backend__send_job(tg_backend_t *b, tg_job_t *job, uint64_t now_ms);
/* PING and DONE_BELOW on every link; closes links silent too long. */
void tg_backend__tick(tg_gate_t *g);
/* Sends DONE_BELOW to <b> when the low water moved far enough since the last. */
void tg_backend__done_below(tg_backend_t *b, bool force);

#endif
