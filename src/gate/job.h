/* gate/job.h - a job (one client request on its way to a backend) and an
 * answer (its reply or error on the way back), and how client requests become
 * jobs and answers become responses.
 *
 * A job is made on the client's IO loop, which encodes the request as the
 * JOB frame's pairs there (the costly part, spread over every loop), then
 * posted to the gate's loop, which owns it until it is settled. The answer is
 * made on the gate's loop and posted to the client's loop, which owns it from
 * then on: it looks the connection up by id (gone: the answer is dropped)
 * and answers the deferred HTTP request or the session's call. */
#ifndef TG_GATE_JOB_H
#define TG_GATE_JOB_H

#include <stdint.h>

#include "core/conn.h"
#include "core/list.h"
#include "core/mbox.h"
#include "core/shared.h"
#include "core/timer.h"
#include "gate/cache.h"
#include "gate/route.h"
#include "net/cmd.h"
#include "net/http.h"
#include "net/session.h"

#define TG_JOB_CALL_ID_MAX 64 /* bytes of a call's id echoed in its reply */

typedef enum tg_job_kind { TG_JOB_HTTP = 1, TG_JOB_CALL = 2 } tg_job_kind_t;

typedef enum tg_job_state {
    TG_JOB_NEW = 0, /* on its way to the gate's loop */
    TG_JOB_QUEUED,  /* waiting for a backend with room */
    TG_JOB_KEYWAIT, /* waiting for the job before it with the same key */
    TG_JOB_SENT,    /* in flight on a link */
    TG_JOB_ORPHAN,  /* in flight, but its client was answered at the deadline */
    TG_JOB_FLIGHTWAIT, /* waiting for an identical job's answer (cache.h) */
} tg_job_state_t;

/* tg_job_t.cache bits (set by tg_cache_prepare on the client loop). */
enum {
    TG_JOB_CACHE_ROUTE = 1,  /* its route caches: HTTP answers say X-Cache */
    TG_JOB_CACHE_LOOKUP = 2, /* may be answered from the cache or an identical job */
    TG_JOB_CACHE_STORE = 4,  /* its reply may be stored */
};

struct gate_route;
struct tg_backend;
struct gate_key;
struct tg_gather;

typedef struct tg_job {
    tg_mail_t          mail;     /* client loop -> gate loop */
    struct tg_gate    *gate;
    tg_link_t          node;     /* a route's queue, a key's list or a link's in-flight list */
    tg_link_t          live;     /* the gate's unsettled jobs, in id order */
    tg_timer_t         timer;    /* the deadline, on the gate's wheel */
    uint64_t           id;       /* set by the gate */
    uint64_t           due_ms;   /* loop clock (monotonic, the same on every loop) */
    tg_conn_id_t       client;
    uint64_t           key_hash; /* by-key routes; 0 for none */
    struct gate_route *route;    /* gate loop */
    struct tg_backend *backend;  /* while SENT or ORPHAN */
    struct gate_key   *key;      /* while holding or waiting for a key */
    tg_cache_flight_t *flight;   /* while leading or waiting in a flight */
    tg_cache_key_t     cache_key; /* with TG_JOB_CACHE_STORE */
    uint8_t            cache;    /* TG_JOB_CACHE_* bits; 0 on routes that do not cache */
    struct tg_gather  *gather;   /* a scatter's part: its answer goes there, not to a client */
    struct tg_backend *pin;      /* a scatter's part for every backend: its own, while it has room */
    uint16_t           part;     /* a scatter's part: which */
    uint16_t           attempt;
    uint8_t            state;    /* tg_job_state_t */
    uint8_t            kind;     /* tg_job_kind_t */
    uint8_t            call_id_len;
    char               call_id[TG_JOB_CALL_ID_MAX];     /* a call's id, raw JSON */
    char               route_name[TG_ROUTE_NAME_MAX + 1];
    uint32_t           len;      /* bytes of <pairs> */
    uint32_t           path_len; /* cached HTTP routes: the request path, after <pairs> */
    uint8_t            pairs[];  /* the JOB frame's pairs but attempt and deadline_ms */
} tg_job_t;

/* The request path an HTTP job on a caching route came by (for purges). */
static inline tg_str_t tg_job_path(const tg_job_t *job)
{
    return (tg_str_t){ (const char *)job->pairs + job->len, job->path_len };
}

/* tg_answer_t.cache: what an HTTP answer says in X-Cache. */
enum { TG_ANSWER_UNCACHED = 0, TG_ANSWER_MISS, TG_ANSWER_HIT };

/* What comes back: the REPLY or ERROR frame's pairs (the gate's own errors are
 * ERROR pairs too), held inline or, when shared with a cache entry and other
 * answers, by reference. */
typedef struct tg_answer {
    tg_mail_t    mail;   /* gate loop -> client loop */
    struct tg_gate *gate;
    tg_conn_id_t client;
    uint64_t     job_id;
    uint8_t      type;   /* TG_BK_REPLY or TG_BK_ERROR */
    uint8_t      kind;   /* tg_job_kind_t */
    uint8_t      cache;  /* TG_ANSWER_* */
    uint8_t      call_id_len;
    uint32_t     age_s;  /* hits: seconds since the reply was stored */
    char         call_id[TG_JOB_CALL_ID_MAX];
    tg_shared_t *shared; /* one reference: the pairs; NULL when inline */
    uint32_t     len;
    uint8_t      pairs[];
} tg_answer_t;

/* The answer's pairs, wherever they are. */
static inline const uint8_t *tg_answer_pairs(const tg_answer_t *a)
{
    return a->shared ? (const uint8_t *)a->shared->data : a->pairs;
}

/* Client loop. The job for HTTP request <req> on route <r> (<rest>: the path
 * after the route's prefix). NULL with *<status> and *<why> set when the
 * request cannot be a job (400: a by-key route's key is missing; 503: out of
 * memory). */
tg_job_t *tg_job_from_http(const tg_route_t *r, const tg_http_req_t *req, tg_str_t rest,
                           int *status, const char **why);
/* Client loop. The job for call <cmd> from session <s>; NULL with *<why> set. */
tg_job_t *tg_job_from_call(const tg_route_t *r, tg_session_t *s, tg_str_t user,
                           const tg_cmd_t *cmd, const char **why);
void tg_job_free(tg_job_t *job);

/* Gate loop. An answer to <job> holding <pairs> (a REPLY's or an ERROR's). */
tg_answer_t *tg_answer_create(const tg_job_t *job, uint8_t type, const void *pairs, size_t len);
/* Gate loop. An ERROR answer made by the gate: <status>, <code>, <message>. */
tg_answer_t *tg_answer_error(const tg_job_t *job, int status, const char *code,
                             const char *message);
/* Gate loop. An answer to <job> whose pairs are <pairs> (a reference is
 * taken, nothing copied). */
tg_answer_t *tg_answer_shared(const tg_job_t *job, uint8_t type, tg_shared_t *pairs);
/* Gate loop. <a> again, for <job>: shared pairs by reference, inline ones copied. */
tg_answer_t *tg_answer_copy(const tg_answer_t *a, const tg_job_t *job);
/* Any thread: frees <a> and drops its reference. NULL is a no-op. */
void tg_answer_free(tg_answer_t *a);

/* Client loop: answers deferred request <req> with <a> (does not free <a>). */
void tg_answer_http(tg_http_req_t *req, const tg_answer_t *a);
/* The REPLY's set_user, or an empty string. */
tg_str_t tg_answer_set_user(const tg_answer_t *a);
/* Client loop: sends <a> to session <s> as the call's reply or error. */
void tg_answer_call(tg_session_t *s, const tg_answer_t *a);

#endif
