/* tidegate/backend.h - the backend link: the framed key:value protocol between
 * tidegate (the gate) and backend services (docs/backend-protocol.md). What a
 * backend written in C compiles against; other languages follow the document.
 *
 * A frame is a 16-byte header, then a body of key/value pairs:
 *
 *   offset size  field
 *   0      1     magic 'T' (0x54)
 *   1      1     version (1)
 *   2      1     type (enum tg_bk_type)
 *   3      1     flags (TG_BK_F_*)
 *   4      4     body length on the wire, big-endian
 *   8      8     job id, big-endian; 0 when the frame concerns no job
 *
 *   pair:  u16 BE key length, key bytes, u32 BE value length, value bytes
 *
 * Keys are ASCII names; values are opaque bytes (numbers travel as decimal
 * text). A key may repeat (HTTP headers): order is kept. */
#ifndef TIDEGATE_BACKEND_H
#define TIDEGATE_BACKEND_H

#include <stdint.h>

#define TG_BK_MAGIC   0x54 /* 'T' */
#define TG_BK_VERSION 1
#define TG_BK_HEADER  16

/* Limits. A frame past them closes the link (see the document). */
#define TG_BK_MAX_BODY_DEFAULT (16u << 20) /* body bytes, unless configured */
#define TG_BK_MAX_PAIRS        1024        /* pairs per frame */
#define TG_BK_MAX_KEY          255         /* bytes per key */
#define TG_BK_LZ4_MIN_DEFAULT  128         /* bodies this long or longer may be compressed */

/* Flags. */
#define TG_BK_F_LZ4 0x01 /* the body on the wire is a u32 BE length of the pairs, then
                          * one LZ4 block holding them; sent only to a peer whose HELLO
                          * lists "lz4" in its features */
#define TG_BK_F_ALL TG_BK_F_LZ4

enum tg_bk_type {
    TG_BK_HELLO = 1,       /* both: backend first (name, routes, capacity), gate answers */
    TG_BK_JOB = 2,         /* gate -> backend: a request; id = job id */
    TG_BK_REPLY = 3,       /* backend -> gate: the answer to job <id> */
    TG_BK_ERROR = 4,       /* both: a job failed (id), or the link is about to close (id 0) */
    TG_BK_PUSH = 5,        /* backend -> gate: a message to a connection, a user or a channel */
    TG_BK_SUBSCRIBE = 6,   /* backend -> gate: subscribe a client connection to a channel */
    TG_BK_UNSUBSCRIBE = 7, /* backend -> gate */
    TG_BK_KICK = 8,        /* backend -> gate: close a client connection */
    TG_BK_PING = 9,        /* both: answered with PONG carrying the same pairs */
    TG_BK_PONG = 10,       /* both */
    TG_BK_DRAIN = 11,      /* backend -> gate: send me no new jobs, I will exit */
    TG_BK_DONE_BELOW = 12, /* gate -> backend: every job below <id> is settled: forget them */
    TG_BK_TYPE_MAX = 12,
};

/* Well-known keys (docs/backend-protocol.md lists which frame carries which). */
#define TG_BK_K_VERSION   "version"   /* HELLO: protocol version, "1" */
#define TG_BK_K_NAME      "name"      /* HELLO: this backend instance, e.g. "orders-2" */
#define TG_BK_K_ROUTES    "routes"    /* HELLO: comma-separated routes served, e.g. "orders,carts" */
#define TG_BK_K_CAPACITY  "capacity"  /* HELLO: jobs in flight at most */
#define TG_BK_K_FEATURES  "features"  /* HELLO: comma-separated, e.g. "lz4" */
#define TG_BK_K_EPOCH     "epoch"     /* gate HELLO: changes when the gate restarts */
#define TG_BK_K_MAX_FRAME "max_frame" /* gate HELLO: largest body it takes */
#define TG_BK_K_PING_MS   "ping_ms"   /* gate HELLO: interval of its pings */
#define TG_BK_K_ROUTE     "route"     /* JOB: the route it came by */
#define TG_BK_K_KIND      "kind"      /* JOB: "http" or "call" */
#define TG_BK_K_METHOD    "method"    /* JOB (http) */
#define TG_BK_K_PATH      "path"      /* JOB (http): the path after the route's prefix */
#define TG_BK_K_QUERY     "query"     /* JOB (http): after '?', absent when none */
#define TG_BK_K_HEADER    "h:"        /* JOB, REPLY: "h:<lower-case name>", one pair per line */
#define TG_BK_K_BODY      "body"      /* JOB (http), REPLY */
#define TG_BK_K_DATA      "data"      /* JOB (call): JSON; REPLY (call); PUSH */
#define TG_BK_K_CONN      "conn"      /* JOB: the client connection; PUSH, (UN)SUBSCRIBE, KICK */
#define TG_BK_K_USER      "user"      /* JOB: the client's user when known; PUSH */
#define TG_BK_K_CHANNEL   "channel"   /* PUSH, (UN)SUBSCRIBE */
#define TG_BK_K_KEY       "key"       /* JOB: the dispatch key of a by-key route */
#define TG_BK_K_ATTEMPT   "attempt"   /* JOB: 1, then 2... when resubmitted */
#define TG_BK_K_DEADLINE  "deadline_ms" /* JOB: milliseconds left to answer */
#define TG_BK_K_STATUS    "status"    /* REPLY, ERROR: an HTTP status */
#define TG_BK_K_CACHE_TTL "cache_ttl" /* REPLY: milliseconds the gate may cache it; 0: never */
#define TG_BK_K_SET_USER  "set_user"  /* REPLY: bind the calling connection to this user */
#define TG_BK_K_CODE      "code"      /* ERROR: a short name, e.g. "bad_input" */
#define TG_BK_K_MESSAGE   "message"   /* ERROR, KICK: for people */
#define TG_BK_K_PART      "part"      /* JOB (scatter route): this part, from 0 */
#define TG_BK_K_PARTS     "parts"     /* JOB (scatter route, reducer): how many parts */
#define TG_BK_K_MISSING   "missing"   /* JOB (reducer): parts not answered, e.g. "1,3" */

#endif
