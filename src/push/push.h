/* push/push.h - channels, positions, history and fan-out across IO loops.
 *
 * Every channel has a home loop (hash of its name): only that loop assigns
 * positions, keeps the history ring and knows which loops have subscribers.
 * Each loop keeps a local channel (lchan) per channel its connections
 * subscribe to, with the list of those subscriptions.
 *
 *   publish (any loop) --mail--> home: seq+1, history, one mail per loop with
 *   subscribers --> each loop: every local subscription of the channel.
 *
 * No lock anywhere: loops talk by mail, a message is shared by reference and
 * carries its own mail nodes, so a publish allocates one request and a fan-out
 * nothing. A subscription asks home only when its loop has not joined the
 * channel yet or it resumes from a position; home's answer (the backlog, or a
 * gap) reaches the loop before any message published after it, so delivery
 * resumes with no hole and no duplicate.
 *
 * Threads: tg_push_* calls are made on the loop thread that owns the
 * subscription or publishes; callbacks run there too. */
#ifndef TG_PUSH_PUSH_H
#define TG_PUSH_PUSH_H

#include <stdbool.h>
#include <stdint.h>

#include "core/list.h"
#include "core/loop.h"
#include "core/shared.h"
#include "net/cmd.h"
#include "push/msg.h"

typedef enum tg_mode {
    TG_MODE_ALL,    /* every message, in order */
    TG_MODE_LATEST, /* a subscriber that falls behind gets only the newest */
} tg_mode_t;

typedef struct tg_chan_opts {
    uint32_t history_len;    /* messages kept for resume and pull; 0 = none */
    uint32_t history_age_ms; /* older ones are dropped; 0 = kept until pushed out */
    uint8_t  mode;           /* tg_mode_t */
    bool     client_publish; /* connected clients may publish */
} tg_chan_opts_t;

#define TG_CHAN_RULES_MAX 32
typedef struct tg_chan_rule {
    char           pattern[TG_CHAN_NAME_MAX + 1]; /* '*' matches any run of bytes */
    tg_chan_opts_t opts;
} tg_chan_rule_t;

/* A gap: the messages after <from> up to <pos> are not held (docs/protocol.md). */
typedef struct tg_gap {
    tg_pos_t from;
    tg_pos_t pos;
} tg_gap_t;

/* Encodings of one message made during one fan-out on one loop, shared by
 * every subscriber that wants the same one (a slot per wire format, chosen
 * by the transports). Released when the fan-out ends. */
#define TG_DELIVERY_SLOTS 8
typedef struct tg_delivery {
    tg_msg_t    *msg;
    tg_shared_t *frames[TG_DELIVERY_SLOTS];
} tg_delivery_t;

typedef struct tg_sub tg_sub_t;

/* What a subscription's owner (a session) does for push. Loop thread. */
typedef struct tg_sub_ops {
    /* The subscription is live at <pos>. <gap> is set when the requested
     * resume could not be honoured; <backlog> holds the <n> held messages to
     * send first (borrowed for the call). */
    void (*ready)(tg_sub_t *sub, tg_pos_t pos, const tg_gap_t *gap, tg_msg_t *const *backlog,
                  size_t n);
    /* Send <d>->msg (encode it through <d>'s slots). */
    void (*deliver)(tg_sub_t *sub, tg_delivery_t *d);
    /* Bytes of output the subscriber has not taken yet (conflation, caps). */
    size_t (*behind)(tg_sub_t *sub);
} tg_sub_ops_t;

enum { TG_SUB_IDLE, TG_SUB_PENDING, TG_SUB_LIVE };

/* Embedded in its owner's memory; push links it while subscribed. */
struct tg_sub {
    tg_link_t           link;     /* in its lchan's live or waiting list */
    struct tg_lchan    *lchan;
    const tg_sub_ops_t *ops;
    struct tg_hist_req *req;      /* the resume request in flight, if any */
    tg_msg_t           *held;     /* latest mode: the newest message not yet sent */
    uint64_t            last_seq; /* last position delivered or skipped */
    uint8_t             state;
};

typedef struct tg_push tg_push_t;

/* Boot. <rules> (copied) give per-pattern options, first match wins, then
 * <defaults>. Returns NULL when memory is out. */
tg_push_t *tg_push_create(tg_loop_t **loops, int nloops, const tg_chan_opts_t *defaults,
                          const tg_chan_rule_t *rules, int nrules);
/* After every loop has stopped and before they are finalised: mail still
 * queued is then released without being acted on. */
void tg_push_closing(tg_push_t *p);
/* After every loop is finalised: drops the history and the channels. */
void tg_push_destroy(tg_push_t *p);

/* The options for channel <name>. Any thread (read-only). */
const tg_chan_opts_t *tg_push_opts(const tg_push_t *p, tg_str_t name);

/* Loop thread of <loop>. Publishes <msg> (takes the caller's reference).
 * <done> runs later on <loop> with the position, or with pos.epoch == 0 when
 * the server is stopping. May be NULL. Returns 0 or -ENOMEM. */
typedef void tg_publish_cb(void *arg, tg_pos_t pos);
int tg_push_publish(tg_push_t *p, tg_loop_t *loop, tg_msg_t *msg, tg_publish_cb *done,
                    void *arg);

/* Loop thread of <loop>. Subscribes <sub> (ops set, state IDLE) to <name>;
 * with <from>, resumes after it. ops->ready runs once the subscription is
 * live (maybe before this returns). Returns 0 or -ENOMEM. */
int tg_push_subscribe(tg_push_t *p, tg_loop_t *loop, tg_sub_t *sub, tg_str_t name,
                      const tg_pos_t *from);
/* Loop thread. Ends <sub> in any state; no callback runs for it afterwards. */
void tg_push_unsubscribe(tg_push_t *p, tg_sub_t *sub);
/* Loop thread. A latest-mode subscriber caught up: send what was held. */
void tg_push_sub_drained(tg_push_t *p, tg_sub_t *sub);

/* What a channel holds, as its home loop saw it (for the pull API). */
typedef struct tg_chan_info {
    bool             exists;
    tg_pos_t         last;        /* last position given (seq 0: none yet) */
    uint32_t         held;        /* messages in history */
    uint64_t         subscribers; /* on every loop, long-polls included */
    bool             gap;         /* <since> is not reachable: <gapv> */
    tg_gap_t         gapv;
    tg_msg_t *const *msgs;        /* borrowed for the callback, oldest first */
    uint32_t         n;
} tg_chan_info_t;

typedef void tg_query_cb(void *arg, const tg_chan_info_t *info);

/* Loop thread of <loop>. Asks channel <name>'s home what it holds: with
 * <since>, the held messages after it (or a gap); without, the newest held;
 * at most <limit>. <cb> runs later on <loop> (now, if <loop> is home). Never
 * creates the channel. Returns 0 or -ENOMEM. */
int tg_push_query(tg_push_t *p, tg_loop_t *loop, tg_str_t name, const tg_pos_t *since,
                  uint32_t limit, tg_query_cb *cb, void *arg);

/* The channels with the most subscribers, across every loop (presence for
 * /stats and /metrics: bounded however many channels there are). */
#define TG_PUSH_TOP_MAX 20
typedef struct tg_chan_count {
    char     name[TG_CHAN_NAME_MAX + 1];
    uint64_t subscribers;
} tg_chan_count_t;
typedef void tg_top_cb(void *arg, const tg_chan_count_t *top, int n);
/* Loop thread of <loop>. <cb> runs later on <loop> with up to TG_PUSH_TOP_MAX
 * channels, most subscribers first. Returns 0 or -ENOMEM. */
int tg_push_top(tg_push_t *p, tg_loop_t *loop, tg_top_cb *cb, void *arg);

/* The channel's name, for a subscription in any state but IDLE. */
tg_str_t tg_sub_chan(const tg_sub_t *sub);

/* ---- introspection (any thread; figures are relaxed reads) ---- */

typedef struct tg_push_stats {
    tg_counter_t published;  /* messages given positions */
    tg_counter_t delivered;  /* messages handed to subscribers */
    tg_counter_t conflated;  /* latest mode: messages replaced before sending */
    tg_counter_t gaps;       /* resumes answered with a gap */
    tg_counter_t channels;   /* home channels now */
    tg_counter_t subscribers;/* live and pending subscriptions now */
} tg_push_stats_t;

/* Sums over loops into <out>. */
void tg_push_stats(const tg_push_t *p, uint64_t out[6]);

#endif
