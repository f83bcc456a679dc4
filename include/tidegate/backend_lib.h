/* tidegate/backend_lib.h - libtidegate-backend, the C reference library for
 * backend services behind tidegate (docs/backend-protocol.md). Link with
 * libtidegate-backend.a and -llz4; nothing else.
 *
 * A backend dials the gate, says HELLO, receives jobs, answers each with a
 * REPLY or an ERROR, and may push to clients. The library owns the link: it
 * answers PING, forgets what DONE_BELOW settles, redials with backoff when the
 * link drops, and drains on request. It gives the effectively-once guarantee
 * of the protocol: every reply sent is remembered by job id, and a job the
 * gate resubmits (same id, after a link dropped) is answered from that memory
 * without running the handler again. Memory survives a redial to a gate of the
 * same epoch and is cleared when the epoch changes (the gate restarted).
 *
 * Threads: one. Every call takes the thread that runs tgb_next or tgb_run,
 * except tgb_drain and tgb_stop, which any thread or a signal handler may
 * call. Handlers run on that thread, one after another; a handler that takes
 * longer than three of the gate's ping intervals gets its link closed.
 *
 * Costs: one malloc per job (its pairs, copied and NUL-terminated), one per
 * remembered reply; replies stay in memory until the gate's DONE_BELOW (every
 * ping interval, 5 s by default). Reads take up to 64 KiB (more for a larger
 * frame); the replies of every job in one read go out in one write().
 *
 *   tgb_connect --dial, HELLO both ways--> LINKED --link lost--> DIALING --> LINKED
 *        LINKED --tgb_drain--> DRAINING: DRAIN and a PING sent, jobs still run
 *        DRAINING --PONG back, no job in flight, output written--> CLOSED
 *        any --tgb_stop--> CLOSED (output written when possible; jobs the gate
 *        still holds are resubmitted elsewhere)
 * DIALING waits 100 ms, doubling to 5 s, between attempts. CLOSED is final:
 * tgb_next returns -ESHUTDOWN and tgb_run returns 0; then tgb_close. */
#ifndef TIDEGATE_BACKEND_LIB_H
#define TIDEGATE_BACKEND_LIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tidegate/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tgb tgb_t;         /* one backend and its link to one gate; opaque */
typedef struct tgb_job tgb_job_t; /* one job, from tgb_next until its reply; opaque */

/* Runs once the reply of job <job_id> was accepted by write(): the record that
 * the job was executed and its answer is on its way (on loopback, already in
 * the gate's socket). Once per job run by a handler, and once for a repeat
 * answered from memory whose first reply never got written (the link dropped
 * first). May call tgb_push_* and tgb_reply, not tgb_next. */
typedef void tgb_done_cb(uint64_t job_id, void *arg);

/* Runs a job on the tgb_run thread. It must reply (tgb_reply, tgb_reply_body,
 * tgb_reply_data or tgb_error) before returning; a job left unanswered gets
 * ERROR 500 "internal". */
typedef void tgb_handler_cb(tgb_t *b, tgb_job_t *job, void *arg);

typedef struct tgb_options {
    const char  *connect;     /* "HOST:PORT" of the gate's backend listener (numeric, a
                               * name getaddrinfo resolves, or "[v6]:PORT");
                               * NULL: "127.0.0.1:7070" */
    const char  *routes;      /* required: routes served, comma-separated ("orders,carts") */
    const char  *name;        /* this instance, for the gate's logs and /stats;
                               * NULL: "<first route>-<pid>" */
    uint32_t     capacity;    /* jobs in flight at most, 1..65536; 0: 64 */
    uint32_t     max_frame;   /* largest body taken from the gate (also after LZ4; the
                               * gate's own max_frame applies as well); 0: 16 MiB */
    int          give_up_ms;  /* without a link this long, tgb_connect, tgb_next and
                               * tgb_run give up with -ETIMEDOUT; 0: never */
    bool         no_reconnect; /* one dial only: a lost link ends tgb_next and tgb_run
                               * with -ECONNRESET instead of redialing */
    bool         no_lz4;      /* neither announce nor send LZ4 bodies */
    bool         quiet;       /* log nothing but errors to stderr */
    tgb_done_cb *on_done;     /* optional, see tgb_done_cb */
    void        *done_arg;
} tgb_options_t;

typedef enum tgb_kind {
    TGB_KIND_OTHER = 0, /* "kind" absent or unknown */
    TGB_KIND_HTTP = 1,  /* an HTTP request: method, path, query, h:*, body */
    TGB_KIND_CALL = 2,  /* a client's call: data (JSON text) */
} tgb_kind_t;

/* One pair of a job, pointing into the job: valid until its reply. Keys and
 * values are NUL-terminated; a value may also hold NUL bytes, <vlen> counts. */
typedef struct tgb_pair {
    const char *key;
    size_t      klen;
    const char *val;
    size_t      vlen;
} tgb_pair_t;

/* A response header line, for tgb_reply. */
typedef struct tgb_header {
    const char *name;  /* lower-case, without "h:"; at most 253 bytes */
    const char *value; /* NUL-terminated */
} tgb_header_t;

/* What tgb_reply sends (docs/backend-protocol.md, REPLY). Borrowed: the
 * library copies what it needs before returning. */
typedef struct tgb_reply {
    int                 status;    /* HTTP status 100..999; 0: 200 */
    const tgb_header_t *headers;   /* <nheaders> response header lines (http) */
    size_t              nheaders;
    const void         *body;      /* sent when not NULL (http; a call gets it as a string) */
    size_t              body_len;
    const void         *data;      /* sent when not NULL: JSON text (call; http without body) */
    size_t              data_len;
    uint32_t            cache_ttl_ms; /* sent when not 0: milliseconds the gate may cache it
                                       * (on a route with a cache; overrides its TTL) */
    bool                no_cache;  /* sends cache_ttl 0: the gate must not cache it */
    const char         *set_user;  /* sent when not NULL: bind the calling connection */
} tgb_reply_t;

typedef struct tgb_stats {
    uint64_t jobs;        /* jobs handed to the application (handler runs) */
    uint64_t repeats;     /* resubmitted jobs answered from memory, handler not run */
    uint64_t joined;      /* resubmissions of a job still running here: not run again,
                           * its one reply goes to the link that asked last */
    uint64_t replies;     /* REPLY and ERROR frames made (repeats not counted) */
    uint64_t unsent;      /* of those, made after their link dropped: kept in memory */
    uint64_t links;       /* links made (HELLO exchanged) */
    uint64_t drops;       /* links lost */
    uint64_t violations;  /* links closed for a malformed or unexpected frame */
    uint64_t pruned;      /* remembered replies forgotten on DONE_BELOW */
    uint64_t remembered;  /* replies in memory now */
    uint64_t remembered_bytes;
    uint64_t inflight;    /* jobs received and not answered yet */
    uint64_t epoch;       /* the gate's epoch (0 before the first HELLO) */
} tgb_stats_t;

/* Lifecycle. */

/* Dials the gate of <o> and exchanges HELLO; retries with backoff until
 * o->give_up_ms (forever when 0; once with no_reconnect). Copies what it needs
 * of <o>. Returns the backend, or NULL with errno set (EINVAL: bad options;
 * ETIMEDOUT; or the last dial's error). */
tgb_t *tgb_connect(const tgb_options_t *o);
/* Writes what is queued when the link is up, closes it and frees everything,
 * jobs not yet answered included. <b> may be NULL. No tgb_drain or tgb_stop
 * may race with it. */
void tgb_close(tgb_t *b);

/* Receiving jobs. */

/* The next job into *<job>, blocking until one comes; repeats are answered
 * inside. Before waiting it writes every queued reply (one write() for all of
 * a batch) and runs on_done hooks. Redials a lost link (see tgb_options_t).
 * Returns 0 with *<job> set (the caller owns it until it replies), or
 * -ESHUTDOWN (drained or stopped: CLOSED), -EBUSY (draining, no job will come,
 * but the caller still holds jobs: reply, then call again), -ECONNRESET (link
 * lost, no_reconnect), -ETIMEDOUT (gave up dialing), -ENOMEM. */
int tgb_next(tgb_t *b, tgb_job_t **job);
/* Runs <h> for every job until CLOSED. Returns 0 after a drain or a stop, or
 * what tgb_next returned. */
int tgb_run(tgb_t *b, tgb_handler_cb *h, void *arg);

/* Answering. Each takes <job>: on success it is freed, and the reply is queued
 * (written by the next tgb_next, tgb_run turn or tgb_flush) and remembered.
 * A job received on a link that has dropped since is answered in memory only:
 * the gate gets it if it resubmits the job here. On error <job> stays the
 * caller's, to answer again (an ERROR, say). */

/* Returns 0, -EINVAL (status, header name or body), -EMSGSIZE (past the
 * gate's max_frame) or -ENOMEM. */
int tgb_reply(tgb_t *b, tgb_job_t *job, const tgb_reply_t *r);
/* A reply with <status> (0: 200), a body and its content-type (NULL: none
 * sent, the gate says application/octet-stream). */
int tgb_reply_body(tgb_t *b, tgb_job_t *job, int status, const char *content_type,
                   const void *body, size_t len);
/* A reply with <status> and <json> as data. */
int tgb_reply_data(tgb_t *b, tgb_job_t *job, int status, const char *json, size_t len);
/* An ERROR for <job>: the client gets <status> (0: the gate's 502) and
 * {"error":<code>,"message":<message>}; <message> may be NULL. */
int tgb_error(tgb_t *b, tgb_job_t *job, int status, const char *code, const char *message);

/* The job. Pointers returned live as long as <job>. */

uint64_t   tgb_job_id(const tgb_job_t *job);      /* never 0; kept on resubmission */
tgb_kind_t tgb_job_kind(const tgb_job_t *job);
const char *tgb_job_route(const tgb_job_t *job);  /* "" when absent */
uint64_t   tgb_job_conn(const tgb_job_t *job);    /* the client connection; 0 when absent */
uint32_t   tgb_job_attempt(const tgb_job_t *job); /* 1, 2 when resubmitted...; 1 when absent */
/* The first value of <key> ("path", "h:content-type"...), with its length in
 * *<len> when <len> is not NULL; NULL when absent. */
const char *tgb_job_get(const tgb_job_t *job, const char *key, size_t *len);
/* The request body (http) and the call's data; NULL with *<len> = 0 when absent. */
const char *tgb_job_body(const tgb_job_t *job, size_t *len);
const char *tgb_job_data(const tgb_job_t *job, size_t *len);
/* Every pair, in order: tgb_job_pair(job, i) for i below tgb_job_npairs. */
size_t            tgb_job_npairs(const tgb_job_t *job);
const tgb_pair_t *tgb_job_pair(const tgb_job_t *job, size_t i);
/* Walks the request headers: start with *<pos> = 0; each call fills <h> with
 * the next header (key without "h:") and returns true, then false at the end. */
bool tgb_job_header(const tgb_job_t *job, size_t *pos, tgb_pair_t *h);

/* Backend-initiated frames. Queued like replies (tgb_flush sends them now);
 * lost if the link drops before they are written. Return 0, -ENOTCONN (no
 * link), -EINVAL, -EMSGSIZE or -ENOMEM. */

int tgb_push_conn(tgb_t *b, uint64_t conn, const void *data, size_t len);
int tgb_push_user(tgb_t *b, const char *user, const void *data, size_t len);
int tgb_push_channel(tgb_t *b, const char *channel, const void *data, size_t len);
int tgb_subscribe(tgb_t *b, uint64_t conn, const char *channel);
int tgb_unsubscribe(tgb_t *b, uint64_t conn, const char *channel);
/* Closes client connection <conn> with reason "kicked"; <message> may be NULL. */
int tgb_kick(tgb_t *b, uint64_t conn, const char *message);
/* Writes everything queued now and runs on_done hooks. Returns 0, -ENOTCONN,
 * or the write's error (the link is then dropped by the next tgb_next). */
int tgb_flush(tgb_t *b);

/* Ending. Both are async-signal-safe and may be called from any thread;
 * they set a flag and wake the loop. */

/* Asks to drain: the loop sends DRAIN (the gate sends no new job) and a PING,
 * runs the jobs that arrive until that PING's PONG, then closes once nothing
 * is in flight and the output is written (5 s at most waiting for the PONG).
 * Without a link, CLOSED at once. */
void tgb_drain(tgb_t *b);
/* Asks to stop now: the loop closes the link after writing what is queued. */
void tgb_stop(tgb_t *b);

/* Introspection. */

/* Replies in memory (answered jobs not yet settled by DONE_BELOW). */
size_t tgb_remembered(const tgb_t *b);
void   tgb_stats(const tgb_t *b, tgb_stats_t *s);
bool   tgb_connected(const tgb_t *b);

#ifdef __cplusplus
}
#endif

#endif
