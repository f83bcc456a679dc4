/* push/push.c - home channels (positions, history, which loops listen), local
 * channels (the subscriptions of one loop) and the mails between them. See
 * push.h for the scheme. */
#include "push/push.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "core/log.h"

#define BUCKETS_MIN 64

/* ---- types ---- */

typedef struct tg_chan { /* home side, owned by the home loop */
    struct tg_chan       *next;      /* hash chain */
    uint64_t              hash;
    const tg_chan_opts_t *opts;
    uint32_t              epoch;
    uint64_t              seq;       /* last assigned */
    tg_msg_t            **ring;      /* history: <cap> slots, grown up to opts->history_len */
    uint32_t              cap;
    uint32_t              head;      /* oldest held */
    uint32_t              count;
    uint64_t             *listening; /* bit per loop with subscribers */
    atomic_uint          *subs;      /* per loop: subscriptions (written by that loop) */
    uint8_t               name_len;
    char                  name[];
} tg_chan_t;

typedef enum { LC_NEW, LC_JOINING, LC_JOINED } lchan_state_t;

typedef struct push_loop push_loop_t;

typedef struct tg_lchan { /* local side, owned by its loop */
    struct tg_lchan      *next;
    uint64_t              hash;
    push_loop_t          *pl;      /* its loop */
    const tg_chan_opts_t *opts;
    tg_chan_t            *home;    /* once joined: for the subscriber count only */
    tg_link_t             live;    /* subscriptions receiving messages */
    tg_link_t             waiting; /* subscriptions waiting for the join */
    uint32_t              nsubs;   /* in any state */
    uint32_t              reqs;    /* requests in flight that point here */
    uint32_t              epoch;   /* what home last told this loop */
    uint64_t              seq;
    uint8_t               state;   /* lchan_state_t */
    uint8_t               name_len;
    char                  name[];
} tg_lchan_t;

typedef struct table {
    void   **buckets;
    uint32_t nbuckets;
    uint32_t n;
} table_t;

struct push_loop {
    tg_push_t      *push;
    tg_loop_t      *loop;
    table_t         homes;  /* tg_chan_t */
    table_t         locals; /* tg_lchan_t */
    tg_push_stats_t stats;
};

struct tg_push {
    int             nloops;
    int             words;     /* uint64_t words in a loop bitmap */
    push_loop_t    *loops;
    tg_chan_opts_t  defaults;
    tg_chan_rule_t  rules[TG_CHAN_RULES_MAX];
    int             nrules;
    uint32_t        epoch_seed;
    atomic_bool     closing;   /* loops are being finalised: post nothing */
};

/* A subscription's or a loop's question to a channel's home, and the answer:
 * the same node goes there and back. */
typedef struct tg_hist_req {
    tg_mail_t    mail;
    push_loop_t *origin;
    tg_lchan_t  *lchan;
    tg_sub_t    *sub;      /* NULL: a join for the loop, or the sub went away */
    bool         has_from;
    tg_pos_t     from;
    /* answer */
    tg_chan_t   *chan;
    tg_pos_t     pos;      /* last position at the time of the answer */
    bool         gap;
    uint32_t     nbacklog;
    tg_msg_t   **backlog;  /* references, oldest first */
} tg_hist_req_t;

typedef struct leave_req {
    tg_mail_t    mail;
    push_loop_t *origin;
    uint64_t     hash;
    uint8_t      name_len;
    char         name[];
} leave_req_t;

typedef struct pub_req {
    tg_mail_t      mail;
    push_loop_t   *origin;
    tg_msg_t      *msg;
    tg_publish_cb *done;
    void          *arg;
} pub_req_t;

/* ---- small helpers ---- */

static uint64_t hash_name(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: names are short */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h ? h : 1;
}

static int home_of(const tg_push_t *p, uint64_t hash)
{
    return (int)((hash >> 17) % (uint64_t)p->nloops);
}

static bool glob_match(const char *pat, const char *s, size_t n)
{
    /* '*' matches any run; iterative with one backtrack point. */
    size_t i = 0, star_i = SIZE_MAX, star_p = 0, k = 0;
    size_t plen = strlen(pat);
    while (i < n) {
        if (k < plen && pat[k] == '*') {
            star_p = ++k;
            star_i = i;
        } else if (k < plen && pat[k] == s[i]) {
            k++;
            i++;
        } else if (star_i != SIZE_MAX) {
            k = star_p;
            i = ++star_i;
        } else {
            return false;
        }
    }
    while (k < plen && pat[k] == '*')
        k++;
    return k == plen;
}

const tg_chan_opts_t *tg_push_opts(const tg_push_t *p, tg_str_t name)
{
    for (int i = 0; i < p->nrules; i++)
        if (glob_match(p->rules[i].pattern, name.p, name.len))
            return &p->rules[i].opts;
    return &p->defaults;
}

static bool table_init(table_t *t)
{
    t->buckets = calloc(BUCKETS_MIN, sizeof(void *));
    t->nbuckets = BUCKETS_MIN;
    t->n = 0;
    return t->buckets != NULL;
}

/* Both entry types start with <next> then <hash>, and end in name_len/name. */
typedef struct entry {
    struct entry *next;
    uint64_t      hash;
} entry_t;

static void table_grow(table_t *t)
{
    uint32_t nb = t->nbuckets * 2;
    void **b = calloc(nb, sizeof(void *));
    if (!b)
        return; /* stays correct, only slower */
    for (uint32_t i = 0; i < t->nbuckets; i++) {
        entry_t *e = t->buckets[i];
        while (e) {
            entry_t *next = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
            e = next;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = nb;
}

static void table_add(table_t *t, entry_t *e)
{
    if (t->n >= t->nbuckets)
        table_grow(t);
    void **slot = &t->buckets[e->hash & (t->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    t->n++;
}

static void table_del(table_t *t, entry_t *e)
{
    entry_t **pp = (entry_t **)&t->buckets[e->hash & (t->nbuckets - 1)];
    while (*pp && *pp != e)
        pp = &(*pp)->next;
    if (*pp) {
        *pp = e->next;
        t->n--;
    }
}

static tg_chan_t *find_chan(table_t *t, uint64_t h, const char *name, size_t len)
{
    for (tg_chan_t *c = t->buckets[h & (t->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && c->name_len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

static tg_lchan_t *find_lchan(table_t *t, uint64_t h, const char *name, size_t len)
{
    for (tg_lchan_t *c = t->buckets[h & (t->nbuckets - 1)]; c; c = c->next)
        if (c->hash == h && c->name_len == len && memcmp(c->name, name, len) == 0)
            return c;
    return NULL;
}

static push_loop_t *pl_of(tg_push_t *p, tg_loop_t *loop)
{
    return &p->loops[loop->id];
}

static bool closing(const tg_push_t *p)
{
    return atomic_load_explicit((atomic_bool *)&p->closing, memory_order_relaxed);
}

/* ---- home side ---- */

static tg_chan_t *chan_open(push_loop_t *pl, uint64_t h, const char *name, size_t len)
{
    tg_push_t *p = pl->push;
    tg_chan_t *c = find_chan(&pl->homes, h, name, len);
    if (c)
        return c;
    const tg_chan_opts_t *opts = tg_push_opts(p, (tg_str_t){ name, len });
    c = calloc(1, sizeof(*c) + len);
    if (!c)
        return NULL;
    c->listening = calloc((size_t)p->words, sizeof(uint64_t));
    c->subs = calloc((size_t)p->nloops, sizeof(atomic_uint));
    if (!c->listening || !c->subs) {
        free(c->listening);
        free(c->subs);
        free(c);
        return NULL;
    }
    c->hash = h;
    c->opts = opts;
    /* A new channel is a new epoch: positions of a forgotten incarnation (or
     * of another server run) never match this one's. */
    c->epoch = (p->epoch_seed ^ (uint32_t)(h >> 32) ^ (uint32_t)tg_clock_ms()) | 1;
    p->epoch_seed = p->epoch_seed * 1664525u + 1013904223u;
    c->name_len = (uint8_t)len;
    memcpy(c->name, name, len);
    table_add(&pl->homes, (entry_t *)c);
    tg_counter_add(&pl->stats.channels, 1);
    return c;
}

static bool chan_listened(const tg_push_t *p, const tg_chan_t *c)
{
    for (int w = 0; w < p->words; w++)
        if (c->listening[w])
            return true;
    return false;
}

static void chan_free(tg_chan_t *c)
{
    for (uint32_t i = 0; i < c->count; i++)
        tg_msg_unref(c->ring[(c->head + i) % c->cap]);
    free(c->ring);
    free(c->listening);
    free(c->subs);
    free(c);
}

/* Forgets <c> when nobody listens and it holds no history. */
static void chan_maybe_forget(push_loop_t *pl, tg_chan_t *c)
{
    if (c->count > 0 || chan_listened(pl->push, c))
        return;
    table_del(&pl->homes, (entry_t *)c);
    tg_counter_sub(&pl->stats.channels, 1);
    chan_free(c);
}

/* Drops what is past its age. */
static void chan_expire(push_loop_t *pl, tg_chan_t *c)
{
    uint32_t age = c->opts->history_age_ms;
    if (!age)
        return;
    while (c->count > 0) {
        tg_msg_t *m = c->ring[c->head];
        if (pl->loop->now_ms - m->time_ms <= age)
            break;
        tg_msg_unref(m);
        c->ring[c->head] = NULL;
        c->head = (c->head + 1) % c->cap;
        c->count--;
    }
}

/* Doubles <c>'s ring (from 4 slots, up to history_len), oldest first at 0:
 * a channel costs no history memory until it holds messages, and only as
 * much as it holds. Returns false when memory is short (the ring stays). */
static bool ring_grow(tg_chan_t *c)
{
    uint32_t want = c->cap ? c->cap * 2 : 4;
    if (want > c->opts->history_len)
        want = c->opts->history_len;
    tg_msg_t **ring = malloc(want * sizeof(*ring));
    if (!ring)
        return false;
    for (uint32_t i = 0; i < c->count; i++)
        ring[i] = c->ring[(c->head + i) % c->cap];
    free(c->ring);
    c->ring = ring;
    c->cap = want;
    c->head = 0;
    return true;
}

static void chan_append(tg_chan_t *c, tg_msg_t *m)
{
    if (!c->opts->history_len)
        return;
    if (c->count == c->cap && c->cap < c->opts->history_len && !ring_grow(c) && !c->cap)
        return; /* no room and no memory: this message is not held (a resume gets a gap) */
    uint32_t cap = c->cap;
    tg_msg_ref(m);
    if (c->count == cap) {
        tg_msg_unref(c->ring[c->head]);
        c->ring[c->head] = m;
        c->head = (c->head + 1) % cap;
    } else {
        c->ring[(c->head + c->count) % cap] = m;
        c->count++;
    }
}

static void deliver_local(push_loop_t *pl, tg_msg_t *m);
static void lchan_maybe_close(push_loop_t *pl, tg_lchan_t *lc);

static void on_deliver_mail(tg_mail_t *mail, void *arg)
{
    tg_loop_t *loop = arg;
    tg_msg_t *m = tg_container_of(mail, tg_msg_mail_t, mail)->msg;
    tg_push_t *p = m->push;
    if (!closing(p))
        deliver_local(pl_of(p, loop), m);
    tg_msg_unref(m);
}

/* Home loop: gives <m> its position, keeps it, and sends it to every loop
 * that listens (one mail each, carried by the message itself). */
static tg_pos_t publish_home(push_loop_t *pl, tg_msg_t *m)
{
    tg_push_t *p = pl->push;
    tg_str_t name = tg_msg_chan(m);
    tg_chan_t *c = chan_open(pl, hash_name(name.p, name.len), name.p, name.len);
    if (!c)
        return (tg_pos_t){ 0, 0 };
    m->pos = (tg_pos_t){ c->epoch, ++c->seq };
    m->time_ms = pl->loop->now_ms;
    m->push = p;
    chan_expire(pl, c);
    chan_append(c, m);
    tg_counter_add(&pl->stats.published, 1);
    for (int i = 0; i < p->nloops; i++) {
        if (!(c->listening[i / 64] & (UINT64_C(1) << (i % 64))))
            continue;
        if (i == pl->loop->id) {
            deliver_local(pl, m);
            continue;
        }
        tg_msg_ref(m);
        m->mails[i].mail.cb = on_deliver_mail;
        tg_loop_post(p->loops[i].loop, &m->mails[i].mail);
    }
    tg_pos_t pos = m->pos;
    chan_maybe_forget(pl, c); /* nobody listens and no history kept */
    return pos;
}

static void on_answer(tg_mail_t *mail, void *arg);

/* Home loop: <req>'s loop listens from now on; answer with where the channel
 * stands and, for a resume, what is held after the position asked. */
static void on_hist_req(tg_mail_t *mail, void *arg)
{
    tg_hist_req_t *r = tg_container_of(mail, tg_hist_req_t, mail);
    push_loop_t *pl = &r->origin->push->loops[((tg_loop_t *)arg)->id];
    tg_lchan_t *lc = r->lchan;
    tg_chan_t *c = closing(pl->push) ? NULL : chan_open(pl, lc->hash, lc->name, lc->name_len);
    r->chan = c;
    if (c) {
        int o = r->origin->loop->id;
        c->listening[o / 64] |= UINT64_C(1) << (o % 64);
        chan_expire(pl, c);
        r->pos = (tg_pos_t){ c->epoch, c->seq };
        if (r->has_from) {
            uint64_t oldest = c->seq - c->count + 1; /* first held */
            if (r->from.epoch != c->epoch || r->from.seq > c->seq ||
                (r->from.seq + 1 < oldest)) {
                r->gap = true;
                tg_counter_add(&pl->stats.gaps, 1);
            } else if (r->from.seq < c->seq) {
                uint32_t n = (uint32_t)(c->seq - r->from.seq);
                r->backlog = malloc(n * sizeof(tg_msg_t *));
                if (r->backlog) {
                    uint32_t skip = c->count - n;
                    for (uint32_t i = 0; i < n; i++) {
                        tg_msg_t *m = c->ring[(c->head + skip + i) % c->cap];
                        tg_msg_ref(m);
                        r->backlog[i] = m;
                    }
                    r->nbacklog = n;
                } else {
                    r->gap = true; /* cannot hand the backlog over: say so */
                }
            }
        }
    }
    r->mail.cb = on_answer;
    /* On its own loop the answer goes at once: publishes here deliver without
     * mail, and one queued before the answer would be in neither the backlog
     * nor the deliveries. */
    if (closing(pl->push) || r->origin == pl) {
        on_answer(&r->mail, r->origin->loop);
        return;
    }
    tg_loop_post(r->origin->loop, &r->mail);
}

static void on_leave(tg_mail_t *mail, void *arg)
{
    leave_req_t *r = tg_container_of(mail, leave_req_t, mail);
    push_loop_t *pl = &r->origin->push->loops[((tg_loop_t *)arg)->id];
    tg_chan_t *c = find_chan(&pl->homes, r->hash, r->name, r->name_len);
    if (c) {
        int o = r->origin->loop->id;
        c->listening[o / 64] &= ~(UINT64_C(1) << (o % 64));
        chan_maybe_forget(pl, c);
    }
    free(r);
}

static void on_pub_done(tg_mail_t *mail, void *arg)
{
    (void)arg;
    pub_req_t *r = tg_container_of(mail, pub_req_t, mail);
    if (r->done)
        r->done(r->arg, r->msg->pos);
    tg_msg_unref(r->msg);
    free(r);
}

static void on_pub_req(tg_mail_t *mail, void *arg)
{
    pub_req_t *r = tg_container_of(mail, pub_req_t, mail);
    tg_push_t *p = r->origin->push;
    push_loop_t *pl = &p->loops[((tg_loop_t *)arg)->id];
    if (!closing(p))
        publish_home(pl, r->msg);
    r->mail.cb = on_pub_done;
    if (closing(p))
        on_pub_done(&r->mail, NULL);
    else
        tg_loop_post(r->origin->loop, &r->mail);
}

int tg_push_publish(tg_push_t *p, tg_loop_t *loop, tg_msg_t *msg, tg_publish_cb *done,
                    void *arg)
{
    push_loop_t *pl = pl_of(p, loop);
    tg_str_t name = tg_msg_chan(msg);
    int home = home_of(p, hash_name(name.p, name.len));
    msg->push = p;
    if (home == loop->id) {
        tg_pos_t pos = publish_home(pl, msg);
        tg_msg_unref(msg);
        if (pos.epoch == 0)
            return -ENOMEM;
        if (done)
            done(arg, pos);
        return 0;
    }
    pub_req_t *r = malloc(sizeof(*r));
    if (!r) {
        tg_msg_unref(msg);
        return -ENOMEM;
    }
    r->mail.cb = on_pub_req;
    r->origin = pl;
    r->msg = msg;
    r->done = done;
    r->arg = arg;
    tg_loop_post(p->loops[home].loop, &r->mail);
    return 0;
}

/* ---- queries (pull API) ---- */

typedef struct query_req {
    tg_mail_t      mail;
    push_loop_t   *origin;
    tg_query_cb   *cb;
    void          *arg;
    bool           has_since;
    tg_pos_t       since;
    uint32_t       limit;
    tg_chan_info_t info;
    tg_msg_t     **msgs;
    uint64_t       hash;
    uint8_t        name_len;
    char           name[];
} query_req_t;

static void on_query_answer(tg_mail_t *mail, void *arg)
{
    (void)arg;
    query_req_t *q = tg_container_of(mail, query_req_t, mail);
    q->info.msgs = q->msgs;
    q->cb(q->arg, &q->info);
    for (uint32_t i = 0; i < q->info.n; i++)
        tg_msg_unref(q->msgs[i]);
    free(q->msgs);
    free(q);
}

static void answer_query(push_loop_t *pl, query_req_t *q)
{
    tg_chan_t *c = find_chan(&pl->homes, q->hash, q->name, q->name_len);
    if (c) {
        chan_expire(pl, c);
        tg_chan_info_t *in = &q->info;
        in->exists = true;
        in->last = (tg_pos_t){ c->epoch, c->seq };
        in->held = c->count;
        for (int i = 0; i < pl->push->nloops; i++)
            in->subscribers += atomic_load_explicit(&c->subs[i], memory_order_relaxed);
        uint64_t oldest = c->seq - c->count + 1;
        uint32_t skip = 0, n = c->count;
        if (q->has_since) {
            if (q->since.epoch != c->epoch || q->since.seq > c->seq ||
                q->since.seq + 1 < oldest) {
                in->gap = true;
                in->gapv = (tg_gap_t){ q->since, in->last };
                n = 0;
            } else {
                n = (uint32_t)(c->seq - q->since.seq);
                skip = c->count - n;
                if (n > q->limit)
                    n = q->limit; /* the oldest first: the rest on the next call */
            }
        } else if (n > q->limit) {
            skip = n - q->limit; /* the newest ones */
            n = q->limit;
        }
        q->msgs = n ? malloc(n * sizeof(tg_msg_t *)) : NULL;
        if (n && !q->msgs)
            n = 0; /* answers what it can: the counts, no messages */
        for (uint32_t i = 0; i < n; i++) {
            q->msgs[i] = c->ring[(c->head + skip + i) % c->cap];
            tg_msg_ref(q->msgs[i]);
        }
        in->n = n;
    }
}

static void on_query(tg_mail_t *mail, void *arg)
{
    query_req_t *q = tg_container_of(mail, query_req_t, mail);
    push_loop_t *pl = &q->origin->push->loops[((tg_loop_t *)arg)->id];
    if (!closing(pl->push))
        answer_query(pl, q);
    q->mail.cb = on_query_answer;
    if (closing(pl->push))
        on_query_answer(&q->mail, NULL);
    else
        tg_loop_post(q->origin->loop, &q->mail);
}

int tg_push_query(tg_push_t *p, tg_loop_t *loop, tg_str_t name, const tg_pos_t *since,
                  uint32_t limit, tg_query_cb *cb, void *arg)
{
    query_req_t *q = calloc(1, sizeof(*q) + name.len);
    if (!q)
        return -ENOMEM;
    q->origin = pl_of(p, loop);
    q->cb = cb;
    q->arg = arg;
    q->limit = limit;
    if (since) {
        q->has_since = true;
        q->since = *since;
    }
    q->hash = hash_name(name.p, name.len);
    q->name_len = (uint8_t)name.len;
    memcpy(q->name, name.p, name.len);
    int home = home_of(p, q->hash);
    if (home == loop->id) {
        answer_query(q->origin, q);
        on_query_answer(&q->mail, NULL);
        return 0;
    }
    q->mail.cb = on_query;
    tg_loop_post(p->loops[home].loop, &q->mail);
    return 0;
}

/* ---- presence: the busiest channels, gathered from every home loop ---- */

typedef struct top_part { /* one per loop, written only by that loop */
    tg_mail_t       mail;
    struct top_req *req;
    int             n;
    tg_chan_count_t top[TG_PUSH_TOP_MAX];
} top_part_t;

typedef struct top_req {
    tg_mail_t   done;     /* to the origin, once every part is in */
    push_loop_t *origin;
    tg_top_cb   *cb;
    void        *arg;
    atomic_int   pending; /* parts not written yet */
    top_part_t  *parts;   /* one per loop */
} top_req_t;

/* Keeps <list> (n entries, most first, at most TG_PUSH_TOP_MAX) with <c> in its place. */
static int top_insert(tg_chan_count_t *list, int n, const tg_chan_count_t *c)
{
    int at = n;
    while (at > 0 && list[at - 1].subscribers < c->subscribers)
        at--;
    if (at >= TG_PUSH_TOP_MAX)
        return n;
    int last = n < TG_PUSH_TOP_MAX ? n : TG_PUSH_TOP_MAX - 1;
    memmove(&list[at + 1], &list[at], (size_t)(last - at) * sizeof(*list));
    list[at] = *c;
    return n < TG_PUSH_TOP_MAX ? n + 1 : n;
}

static void on_top_done(tg_mail_t *mail, void *arg)
{
    (void)arg;
    top_req_t *r = tg_container_of(mail, top_req_t, done);
    tg_chan_count_t merged[TG_PUSH_TOP_MAX];
    int n = 0;
    for (int i = 0; i < r->origin->push->nloops; i++)
        for (int k = 0; k < r->parts[i].n; k++)
            n = top_insert(merged, n, &r->parts[i].top[k]);
    r->cb(r->arg, merged, n);
    free(r->parts);
    free(r);
}

static void on_top_part(tg_mail_t *mail, void *arg)
{
    top_part_t *part = tg_container_of(mail, top_part_t, mail);
    top_req_t *r = part->req;
    tg_push_t *p = r->origin->push;
    push_loop_t *pl = &p->loops[((tg_loop_t *)arg)->id];
    table_t *t = &pl->homes;
    for (uint32_t b = 0; !closing(p) && b < t->nbuckets; b++)
        for (tg_chan_t *c = t->buckets[b]; c; c = c->next) {
            tg_chan_count_t cc = { .subscribers = 0 };
            for (int i = 0; i < p->nloops; i++)
                cc.subscribers += atomic_load_explicit(&c->subs[i], memory_order_relaxed);
            if (cc.subscribers == 0)
                continue;
            memcpy(cc.name, c->name, c->name_len);
            cc.name[c->name_len] = '\0';
            part->n = top_insert(part->top, part->n, &cc);
        }
    /* The last part written sends the whole back; acq_rel makes every part's
     * writes visible to the origin. */
    if (atomic_fetch_sub_explicit(&r->pending, 1, memory_order_acq_rel) == 1) {
        r->done.cb = on_top_done;
        if (closing(p))
            on_top_done(&r->done, NULL);
        else
            tg_loop_post(r->origin->loop, &r->done);
    }
}

int tg_push_top(tg_push_t *p, tg_loop_t *loop, tg_top_cb *cb, void *arg)
{
    top_req_t *r = calloc(1, sizeof(*r));
    top_part_t *parts = r ? calloc((size_t)p->nloops, sizeof(*parts)) : NULL;
    if (!parts) {
        free(r);
        return -ENOMEM;
    }
    r->origin = pl_of(p, loop);
    r->cb = cb;
    r->arg = arg;
    r->parts = parts;
    atomic_init(&r->pending, p->nloops);
    for (int i = 0; i < p->nloops; i++) {
        parts[i].req = r;
        parts[i].mail.cb = on_top_part;
        tg_loop_post(p->loops[i].loop, &parts[i].mail);
    }
    return 0;
}

/* ---- local side ---- */

static void sub_count(tg_lchan_t *lc, push_loop_t *pl, int delta)
{
    if (lc->home)
        atomic_fetch_add_explicit(&lc->home->subs[pl->loop->id], (unsigned)delta,
                                  memory_order_relaxed);
}

/* Hands <m> to <sub>, or holds it (latest mode, subscriber behind). */
static void hand_over(push_loop_t *pl, tg_lchan_t *lc, tg_sub_t *sub, tg_delivery_t *d)
{
    tg_msg_t *m = d->msg;
    if (m->pos.epoch != lc->epoch || m->pos.seq <= sub->last_seq)
        return; /* already had it (backlog), or another incarnation */
    sub->last_seq = m->pos.seq;
    if (lc->opts->mode == TG_MODE_LATEST && (sub->held || sub->ops->behind(sub) > 0)) {
        if (sub->held) {
            tg_msg_unref(sub->held);
            tg_counter_add(&pl->stats.conflated, 1);
        }
        tg_msg_ref(m);
        sub->held = m;
        return;
    }
    tg_counter_add(&pl->stats.delivered, 1);
    sub->ops->deliver(sub, d);
}

static void delivery_done(tg_delivery_t *d)
{
    for (int i = 0; i < TG_DELIVERY_SLOTS; i++)
        tg_shared_unref(d->frames[i]);
}

static void deliver_local(push_loop_t *pl, tg_msg_t *m)
{
    tg_str_t name = tg_msg_chan(m);
    tg_lchan_t *lc = find_lchan(&pl->locals, hash_name(name.p, name.len), name.p, name.len);
    if (!lc || lc->state != LC_JOINED)
        return; /* the join answer, still on its way, covers this message */
    if (m->pos.epoch == lc->epoch && m->pos.seq > lc->seq)
        lc->seq = m->pos.seq;
    tg_delivery_t d = { .msg = m };
    /* A subscriber's callback may unsubscribe it (slow consumer, a long-poll
     * answered): take the next link first, and keep <lc> alive meanwhile. */
    lc->reqs++;
    for (tg_link_t *l = lc->live.next, *next; l != &lc->live; l = next) {
        next = l->next;
        hand_over(pl, lc, tg_container_of(l, tg_sub_t, link), &d);
    }
    lc->reqs--;
    delivery_done(&d);
    lchan_maybe_close(pl, lc);
}

static tg_lchan_t *lchan_open(push_loop_t *pl, tg_str_t name)
{
    uint64_t h = hash_name(name.p, name.len);
    tg_lchan_t *lc = find_lchan(&pl->locals, h, name.p, name.len);
    if (lc)
        return lc;
    lc = calloc(1, sizeof(*lc) + name.len);
    if (!lc)
        return NULL;
    lc->hash = h;
    lc->pl = pl;
    lc->opts = tg_push_opts(pl->push, name);
    tg_list_init(&lc->live);
    tg_list_init(&lc->waiting);
    lc->name_len = (uint8_t)name.len;
    memcpy(lc->name, name.p, name.len);
    table_add(&pl->locals, (entry_t *)lc);
    return lc;
}

/* The loop no longer needs <lc>: tell home (unless it never heard of it) and
 * free it once no request points at it. */
static void lchan_maybe_close(push_loop_t *pl, tg_lchan_t *lc)
{
    if (lc->nsubs > 0 || lc->reqs > 0)
        return;
    table_del(&pl->locals, (entry_t *)lc);
    if (lc->state != LC_NEW && !closing(pl->push)) {
        leave_req_t *r = malloc(sizeof(*r) + lc->name_len);
        if (r) { /* without it, home keeps sending; this loop ignores it */
            r->mail.cb = on_leave;
            r->origin = pl;
            r->hash = lc->hash;
            r->name_len = lc->name_len;
            memcpy(r->name, lc->name, lc->name_len);
            tg_loop_post(pl->push->loops[home_of(pl->push, lc->hash)].loop, &r->mail);
        }
    }
    free(lc);
}

static void sub_go_live(push_loop_t *pl, tg_lchan_t *lc, tg_sub_t *sub, const tg_gap_t *gap,
                        tg_msg_t *const *backlog, size_t n)
{
    tg_link_remove(&sub->link);
    tg_list_push(&lc->live, &sub->link);
    sub->state = TG_SUB_LIVE;
    sub->last_seq = lc->seq;
    tg_counter_add(&pl->stats.delivered, n);
    sub->ops->ready(sub, (tg_pos_t){ lc->epoch, lc->seq }, gap, backlog, n);
}

static tg_hist_req_t *ask_home(push_loop_t *pl, tg_lchan_t *lc, tg_sub_t *sub,
                               const tg_pos_t *from)
{
    tg_hist_req_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->mail.cb = on_hist_req;
    r->origin = pl;
    r->lchan = lc;
    r->sub = sub;
    if (from) {
        r->has_from = true;
        r->from = *from;
    }
    lc->reqs++;
    tg_loop_post(pl->push->loops[home_of(pl->push, lc->hash)].loop, &r->mail);
    return r;
}

/* Origin loop: home answered. */
static void on_answer(tg_mail_t *mail, void *arg)
{
    (void)arg;
    tg_hist_req_t *r = tg_container_of(mail, tg_hist_req_t, mail);
    push_loop_t *pl = r->origin;
    tg_lchan_t *lc = r->lchan;
    /* <lc> stays alive until the end: the callbacks below may unsubscribe. */
    if (r->chan && !closing(pl->push)) {
        bool first = lc->state != LC_JOINED;
        if (first || r->pos.epoch != lc->epoch || r->pos.seq > lc->seq) {
            /* Home's word is newer than anything this loop saw: every message
             * published after it comes behind this answer. */
            lc->epoch = r->pos.epoch;
            lc->seq = r->pos.seq;
        }
        if (first) {
            lc->home = r->chan;
            lc->state = LC_JOINED;
            atomic_fetch_add_explicit(&lc->home->subs[pl->loop->id], lc->nsubs,
                                      memory_order_relaxed);
            while (!tg_list_empty(&lc->waiting)) {
                tg_sub_t *s = tg_container_of(lc->waiting.next, tg_sub_t, link);
                sub_go_live(pl, lc, s, NULL, NULL, 0);
            }
        }
        if (r->sub) {
            tg_sub_t *sub = r->sub;
            sub->req = NULL;
            tg_gap_t gap = { r->from, r->pos };
            if (r->gap)
                tg_log_debug("push: resume of %.*s from %u:%llu is a gap", lc->name_len,
                             lc->name, r->from.epoch, (unsigned long long)r->from.seq);
            /* The backlog ends at r->pos; messages this loop saw after the
             * answer was made are newer still and follow via delivery. */
            sub_go_live(pl, lc, sub, r->gap ? &gap : NULL, r->backlog, r->nbacklog);
        }
    } else if (r->sub) {
        r->sub->req = NULL; /* home could not take it: the sub stays pending */
    }
    for (uint32_t i = 0; i < r->nbacklog; i++)
        tg_msg_unref(r->backlog[i]);
    free(r->backlog);
    free(r);
    lc->reqs--;
    lchan_maybe_close(pl, lc);
}

int tg_push_subscribe(tg_push_t *p, tg_loop_t *loop, tg_sub_t *sub, tg_str_t name,
                      const tg_pos_t *from)
{
    push_loop_t *pl = pl_of(p, loop);
    tg_lchan_t *lc = lchan_open(pl, name);
    if (!lc)
        return -ENOMEM;
    sub->lchan = lc;
    sub->held = NULL;
    sub->req = NULL;
    sub->state = TG_SUB_PENDING;
    sub->last_seq = 0;
    lc->nsubs++;
    tg_counter_add(&pl->stats.subscribers, 1);
    sub_count(lc, pl, 1);
    if (from) {
        /* Not on the waiting list: the loop's join must not start it before
         * its own backlog arrives. */
        if (!(sub->req = ask_home(pl, lc, sub, from)))
            goto nomem;
        if (lc->state == LC_NEW)
            lc->state = LC_JOINING;
        return 0;
    }
    if (lc->state == LC_JOINED) {
        sub_go_live(pl, lc, sub, NULL, NULL, 0);
        return 0;
    }
    tg_list_push(&lc->waiting, &sub->link);
    if (lc->state == LC_NEW) {
        if (!ask_home(pl, lc, NULL, NULL))
            goto nomem;
        lc->state = LC_JOINING;
    }
    return 0; /* waits for the join already asked */
nomem:
    tg_push_unsubscribe(p, sub);
    return -ENOMEM;
}

void tg_push_unsubscribe(tg_push_t *p, tg_sub_t *sub)
{
    if (sub->state == TG_SUB_IDLE)
        return;
    (void)p;
    tg_lchan_t *lc = sub->lchan;
    push_loop_t *pl = lc->pl;
    if (sub->req)
        sub->req->sub = NULL; /* the answer finds no one to give the backlog to */
    tg_link_remove(&sub->link);
    tg_msg_unref(sub->held);
    sub->held = NULL;
    sub->state = TG_SUB_IDLE;
    sub_count(lc, pl, -1);
    lc->nsubs--;
    tg_counter_sub(&pl->stats.subscribers, 1);
    sub->lchan = NULL;
    lchan_maybe_close(pl, lc);
}

void tg_push_sub_drained(tg_push_t *p, tg_sub_t *sub)
{
    if (sub->state != TG_SUB_LIVE || !sub->held)
        return;
    tg_msg_t *m = sub->held;
    sub->held = NULL;
    (void)p;
    tg_delivery_t d = { .msg = m };
    tg_counter_add(&sub->lchan->pl->stats.delivered, 1);
    sub->ops->deliver(sub, &d);
    delivery_done(&d);
    tg_msg_unref(m);
}

tg_str_t tg_sub_chan(const tg_sub_t *sub)
{
    return (tg_str_t){ sub->lchan->name, sub->lchan->name_len };
}

/* ---- lifecycle ---- */

tg_push_t *tg_push_create(tg_loop_t **loops, int nloops, const tg_chan_opts_t *defaults,
                          const tg_chan_rule_t *rules, int nrules)
{
    tg_push_t *p = calloc(1, sizeof(*p));
    if (!p)
        return NULL;
    p->nloops = nloops;
    p->words = (nloops + 63) / 64;
    p->defaults = *defaults;
    p->nrules = nrules < TG_CHAN_RULES_MAX ? nrules : TG_CHAN_RULES_MAX;
    if (p->nrules > 0)
        memcpy(p->rules, rules, (size_t)p->nrules * sizeof(*rules));
    if (getrandom(&p->epoch_seed, sizeof(p->epoch_seed), 0) != sizeof(p->epoch_seed))
        p->epoch_seed = (uint32_t)tg_clock_ms() * 2654435761u;
    p->loops = calloc((size_t)nloops, sizeof(*p->loops));
    if (!p->loops)
        goto fail;
    for (int i = 0; i < nloops; i++) {
        p->loops[i].push = p;
        p->loops[i].loop = loops[i];
        if (!table_init(&p->loops[i].homes) || !table_init(&p->loops[i].locals))
            goto fail;
    }
    return p;
fail:
    tg_push_destroy(p);
    return NULL;
}

/* Call before the loops are finalised (their mailboxes drained). */
void tg_push_closing(tg_push_t *p)
{
    atomic_store(&p->closing, true);
}

void tg_push_destroy(tg_push_t *p)
{
    if (!p)
        return;
    for (int i = 0; p->loops && i < p->nloops; i++) {
        table_t *t = &p->loops[i].homes;
        for (uint32_t b = 0; t->buckets && b < t->nbuckets; b++) {
            tg_chan_t *c = t->buckets[b];
            while (c) {
                tg_chan_t *next = c->next;
                chan_free(c);
                c = next;
            }
        }
        free(t->buckets);
        t = &p->loops[i].locals;
        for (uint32_t b = 0; t->buckets && b < t->nbuckets; b++) {
            tg_lchan_t *c = t->buckets[b];
            while (c) { /* only if sessions left subscriptions behind */
                tg_lchan_t *next = c->next;
                free(c);
                c = next;
            }
        }
        free(t->buckets);
    }
    free(p->loops);
    free(p);
}

void tg_push_stats(const tg_push_t *p, uint64_t out[6])
{
    memset(out, 0, 6 * sizeof(uint64_t));
    for (int i = 0; i < p->nloops; i++) {
        const tg_push_stats_t *s = &p->loops[i].stats;
        out[0] += tg_counter_get(&s->published);
        out[1] += tg_counter_get(&s->delivered);
        out[2] += tg_counter_get(&s->conflated);
        out[3] += tg_counter_get(&s->gaps);
        out[4] += tg_counter_get(&s->channels);
        out[5] += tg_counter_get(&s->subscribers);
    }
}
