/* gate/gate.c - jobs from submission to settlement: routes' groups and
 * queues, dispatch policies, by-key turns, deadlines, resubmission. See gate.h. */
#include "gate/gate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "gate/backend.h"
#include "gate/dial.h"
#include "gate/scatter.h"

static void enqueue(tg_gate_t *g, tg_job_t *job);
static bool http_answer(tg_conn_t *c, tg_answer_t *a);
static void settle(tg_gate_t *g, tg_job_t *job);
static void window_closed(tg_timer_t *t);
static void route_emptied(tg_gate_t *g, gate_route_t *r);
static void flight_land(tg_gate_t *g, tg_job_t *leader, const tg_answer_t *a);
static void flight_leave(tg_gate_t *g, tg_job_t *job);

/* ---- answers ---- */

/* Client loop: the answer to one of its requests came back. */
static void answer_arrived(tg_mail_t *m, void *arg)
{
    tg_answer_t *a = tg_container_of(m, tg_answer_t, mail);
    tg_loop_t *loop = arg;
    tg_conn_t *c = tg_conn_lookup(loop, a->client);
    bool taken = false;
    if (c && a->kind == TG_JOB_HTTP) {
        taken = http_answer(c, a);
    } else if (c && a->kind == TG_JOB_CALL && tg_session_of(c)) {
        tg_session_t *s = tg_session_of(c);
        tg_str_t user = tg_answer_set_user(a);
        if (user.len && a->gate->hooks.bind_user)
            (void)a->gate->hooks.bind_user(a->gate->hooks.arg, s, user); /* before the reply */
        tg_answer_call(s, a);
        taken = true;
    }
    if (!taken)
        tg_counter_add(&a->gate->stats.answers_dropped, 1);
    tg_answer_free(a);
}

/* Home loop. Settles <job> with answer <a> (or nothing, out of memory); a
 * scatter's part answers its gather instead of a client. */
static void answer(tg_gate_t *g, tg_job_t *job, tg_answer_t *a)
{
    if (job->gather) {
        tg_gather_t *gt = job->gather;
        job->gather = NULL; /* answered once; an orphan's late reply goes nowhere */
        tg_scatter_part(g, gt, job->part, a);
        return;
    }
    if (job->flight && job->flight->leader == job)
        flight_land(g, job, a); /* its waiters get the same */
    if (!a)
        return; /* the client waits for its deadline in vain: count it as nomem */
    a->mail.cb = answer_arrived;
    tg_loop_post(g->loops[tg_conn_id_loop(job->client)], &a->mail);
}

void tg_gate__answer(tg_gate_t *g, tg_job_t *job, tg_answer_t *a)
{
    answer(g, job, a);
}

static void refuse(tg_gate_t *g, tg_job_t *job, int status, const char *code, const char *msg)
{
    answer(g, job, tg_answer_error(job, status, code, msg));
    settle(g, job);
}

/* ---- the reply cache (cache.h): hits, flights, stores ---- */

/* <job> arrived on a caching route with its key. True when it needs nothing
 * more here: answered from the cache, or waiting for an identical job in
 * flight. Otherwise it leads a flight for its key (when none is up) and goes
 * the usual way. */
static bool cache_arrive(tg_gate_t *g, tg_job_t *job)
{
    tg_cache_t *c = &g->cache;
    uint64_t now = g->home->now_ms;
    tg_cache_flight_t *f = tg_cache_flight(c, &job->cache_key);
    if (job->cache & TG_JOB_CACHE_LOOKUP) {
        tg_cache_entry_t *e = tg_cache_get(c, &job->cache_key, now);
        if (e) {
            tg_counter_add(&c->stats->hits, 1);
            tg_answer_t *a = tg_answer_shared(job, e->type, e->pairs);
            if (a) {
                a->cache = TG_ANSWER_HIT;
                a->age_s = tg_cache_age(e, now);
            }
            answer(g, job, a);
            tg_job_free(job);
            return true;
        }
        /* In the jobs' map like any job, so that its id stays its own. */
        if (f && tg_idmap_put(&g->jobs, job->id, job) == 0) {
            tg_counter_add(&c->stats->coalesced, 1);
            job->state = TG_JOB_FLIGHTWAIT;
            job->flight = f;
            tg_list_push(&f->waiters, &job->node);
            f->nwaiters++;
            tg_timer_arm(&g->home->wheel, &job->timer, job->due_ms > now ? job->due_ms - now : 0);
            return true;
        }
    }
    tg_counter_add(&c->stats->misses, 1);
    if (!f) /* a bypass with a flight up runs alone, and stores what it gets */
        job->flight = tg_cache_flight_open(c, &job->cache_key, job);
    return false;
}

/* The leader of a flight is answered with <a> (NULL: out of memory), so each
 * waiter gets <a> too (the pairs shared, not copied) and is settled; the
 * flight ends. A failure (an error, the deadline) is the waiters' answer too. */
static void flight_land(tg_gate_t *g, tg_job_t *leader, const tg_answer_t *a)
{
    tg_cache_flight_t *f = leader->flight;
    leader->flight = NULL;
    tg_link_t *l;
    while ((l = tg_list_shift(&f->waiters))) {
        tg_job_t *w = tg_container_of(l, tg_job_t, node);
        f->nwaiters--;
        w->flight = NULL;
        tg_answer_t *wa = a ? tg_answer_copy(a, w)
                            : tg_answer_error(w, 503, "out_of_memory", "the gate is out of memory");
        if (wa)
            wa->cache = TG_ANSWER_HIT; /* served without a job of its own */
        answer(g, w, wa);
        settle(g, w);
    }
    tg_cache_flight_close(&g->cache, f);
}

/* <job> is settled while in a flight: a waiter leaves it (its deadline); a
 * leader never gets here unanswered, but if it did its waiters would not
 * be left behind. */
static void flight_leave(tg_gate_t *g, tg_job_t *job)
{
    tg_cache_flight_t *f = job->flight;
    if (f->leader == job) {
        flight_land(g, job, NULL);
        return;
    }
    tg_link_remove(&job->node);
    f->nwaiters--;
    job->flight = NULL;
}

/* A backend answered <job>, whose reply may be stored: the pairs go in one
 * shared block that the entry (when the reply may be kept) and every answer
 * made from it reference. */
static tg_answer_t *cache_reply(tg_gate_t *g, tg_job_t *job, uint8_t type, const uint8_t *pairs,
                                size_t len)
{
    tg_shared_t *s = tg_shared_new(len);
    if (!s)
        return NULL;
    if (len)
        memcpy(s->data, pairs, len);
    uint64_t ttl = tg_cache_ttl(&job->route->cfg, type, pairs, len);
    if (ttl)
        (void)tg_cache_put(&g->cache, &job->cache_key, job->route, tg_job_path(job), type, s,
                           ttl, g->home->now_ms);
    tg_answer_t *a = tg_answer_shared(job, type, s);
    tg_shared_unref(s);
    return a;
}

/* ---- routes ---- */

gate_route_t *tg_gate__route(tg_gate_t *g, const char *name, size_t n, bool create)
{
    for (int i = 0; i < g->ngroutes; i++)
        if (strlen(g->groutes[i]->cfg.name) == n && memcmp(g->groutes[i]->cfg.name, name, n) == 0)
            return g->groutes[i];
    if (!create)
        return NULL;
    tg_route_t cfg;
    tg_str_t s = { name, n };
    if (!tg_routes_named(&g->routes, s, &cfg)) {
        if (!g->routes.auto_routes || !tg_route_name_valid(name, n))
            return NULL;
        cfg = g->routes.defaults;
        memcpy(cfg.name, name, n);
        cfg.name[n] = '\0';
    }
    gate_route_t **grown = realloc(g->groutes, (size_t)(g->ngroutes + 1) * sizeof(*grown));
    if (!grown)
        return NULL;
    g->groutes = grown;
    gate_route_t *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->cfg = cfg;
    r->gate = g;
    tg_list_init(&r->queue);
    tg_timer_init(&r->window, window_closed);
    g->groutes[g->ngroutes++] = r;
    route_emptied(g, r); /* jobs wait a window for its first backend */
    return r;
}

static void window_closed(tg_timer_t *t)
{
    gate_route_t *r = tg_container_of(t, gate_route_t, window);
    if (r->nbackends)
        return;
    r->refusing = true;
    tg_log(TG_LOG_WARN, "gate: route %s: no backend for %u ms, refusing its jobs", r->cfg.name,
           r->cfg.window_ms);
    while (!tg_list_empty(&r->queue)) {
        tg_job_t *job = tg_container_of(r->queue.next, tg_job_t, node);
        tg_counter_add(&r->gate->stats.no_backend, 1);
        refuse(r->gate, job, 503, "no_backend", "no backend of this route is connected");
    }
}

static void route_emptied(tg_gate_t *g, gate_route_t *r)
{
    r->empty_since_ms = g->home->now_ms;
    tg_timer_arm(&g->home->wheel, &r->window, r->cfg.window_ms);
}

/* ---- dispatch ---- */

static bool has_room(const tg_backend_t *b)
{
    return b->hello && !b->draining && b->outstanding < b->capacity && tg_conn_open(b->conn);
}

static tg_backend_t *pick(gate_route_t *r)
{
    tg_backend_t *best = NULL;
    if (r->cfg.policy == TG_ROUTE_ROUND_ROBIN) {
        for (uint32_t i = 0; i < r->nbackends; i++) {
            tg_backend_t *b = r->backends[(r->rr + i) % r->nbackends];
            if (has_room(b)) {
                r->rr = (r->rr + i + 1) % r->nbackends;
                return b;
            }
        }
        return NULL;
    }
    for (uint32_t i = 0; i < r->nbackends; i++) {
        tg_backend_t *b = r->backends[i];
        if (has_room(b) && (!best || b->outstanding < best->outstanding))
            best = b;
    }
    return best;
}

static int send_to(tg_gate_t *g, tg_job_t *job, tg_backend_t *b)
{
    job->attempt++;
    if (job->attempt > 1)
        tg_counter_add(&g->stats.resubmitted, 1);
    job->state = TG_JOB_SENT;
    job->backend = b;
    tg_list_push(&b->inflight, &job->node);
    b->outstanding++;
    tg_counter_add(&g->stats.inflight, 1);
    return tg_backend__send_job(b, job, g->home->now_ms);
}

/* Places <job> (holding its key, if any) on a backend with room, or in its
 * route's queue. */
static void enqueue(tg_gate_t *g, tg_job_t *job)
{
    gate_route_t *r = job->route;
    if (g->stopped) {
        refuse(g, job, 503, "shutting_down", "the server is stopping");
        return;
    }
    if (r->refusing) {
        tg_counter_add(&g->stats.no_backend, 1);
        refuse(g, job, 503, "no_backend", "no backend of this route is connected");
        return;
    }
    tg_backend_t *b = tg_list_empty(&r->queue) ? pick(r) : NULL;
    if (job->pin && has_room(job->pin))
        b = job->pin; /* a scatter's part for this backend */
    job->pin = NULL;  /* resubmitted, it goes wherever there is room */
    if (b) {
        send_to(g, job, b);
        return;
    }
    if (r->queued >= r->cfg.queue_max && job->attempt == 0) {
        tg_counter_add(&g->stats.overloaded, 1);
        refuse(g, job, 503, "overloaded", "every backend of this route is busy");
        return;
    }
    job->state = TG_JOB_QUEUED;
    tg_list_push(&r->queue, &job->node);
    r->queued++;
    tg_counter_add(&g->stats.queued, 1);
}

/* A job left after its link dropped goes back in front of its route's queue,
 * in id order among those resubmitted with it. */
static void requeue(tg_gate_t *g, tg_job_t *job)
{
    gate_route_t *r = job->route;
    tg_link_t *at = r->queue.next;
    while (at != &r->queue && tg_container_of(at, tg_job_t, node)->id < job->id &&
           tg_container_of(at, tg_job_t, node)->attempt > 0)
        at = at->next;
    job->state = TG_JOB_QUEUED;
    job->backend = NULL;
    /* insert before <at> */
    job->node.next = at;
    job->node.prev = at->prev;
    at->prev->next = &job->node;
    at->prev = &job->node;
    r->queued++;
    tg_counter_add(&g->stats.queued, 1);
}

static void unqueue(tg_gate_t *g, tg_job_t *job)
{
    tg_link_remove(&job->node);
    job->route->queued--;
    tg_counter_sub(&g->stats.queued, 1);
}

/* Hands queued jobs of <r> to backends with room, oldest first. */
static void drain_queue(tg_gate_t *g, gate_route_t *r)
{
    while (!tg_list_empty(&r->queue)) {
        tg_backend_t *b = pick(r);
        if (!b)
            return;
        tg_job_t *job = tg_container_of(r->queue.next, tg_job_t, node);
        unqueue(g, job);
        send_to(g, job, b);
    }
}

void tg_gate__pump(tg_gate_t *g, tg_backend_t *b)
{
    /* The route whose oldest queued job is the oldest goes first. */
    while (has_room(b)) {
        gate_route_t *best = NULL;
        for (uint32_t i = 0; i < b->nroutes; i++) {
            gate_route_t *r = b->routes[i];
            if (tg_list_empty(&r->queue))
                continue;
            if (!best || tg_container_of(r->queue.next, tg_job_t, node)->id <
                             tg_container_of(best->queue.next, tg_job_t, node)->id)
                best = r;
        }
        if (!best)
            return;
        tg_job_t *job = tg_container_of(best->queue.next, tg_job_t, node);
        unqueue(g, job);
        send_to(g, job, b);
    }
}

/* ---- settlement ---- */

static void release_key(tg_gate_t *g, tg_job_t *job)
{
    gate_key_t *k = job->key;
    job->key = NULL;
    if (!k)
        return;
    if (k->holder != job) { /* a waiter leaving early */
        tg_link_remove(&job->node);
        return;
    }
    tg_link_t *next = tg_list_shift(&k->waiting);
    if (!next) {
        tg_idmap_del(&job->route->keys, k->hash);
        free(k);
        return;
    }
    tg_job_t *n = tg_container_of(next, tg_job_t, node);
    k->holder = n;
    enqueue(g, n);
}

/* Forgets <job> for good: its key goes to the next in line. */
static void settle(tg_gate_t *g, tg_job_t *job)
{
    if (job->flight)
        flight_leave(g, job);
    tg_timer_cancel(&g->home->wheel, &job->timer);
    tg_link_remove(&job->live);
    if (job->id)
        tg_idmap_del(&g->jobs, job->id);
    if (job->state == TG_JOB_QUEUED)
        unqueue(g, job);
    else if (job->state == TG_JOB_SENT || job->state == TG_JOB_ORPHAN) {
        tg_link_remove(&job->node);
        job->backend->outstanding--;
        tg_counter_sub(&g->stats.inflight, 1);
    }
    release_key(g, job); /* may enqueue the next job of the key */
    tg_job_free(job);
}

int tg_gate__answered(tg_gate_t *g, tg_backend_t *b, uint8_t type, uint64_t id,
                      const uint8_t *pairs, size_t len)
{
    tg_job_t *job = tg_idmap_get(&g->jobs, id);
    if (!job || job->backend != b)
        return -ENOENT;
    if (job->state == TG_JOB_ORPHAN) {
        tg_counter_add(&g->stats.late, 1);
    } else {
        tg_counter_add(type == TG_BK_REPLY ? &g->stats.replies : &g->stats.failed, 1);
        answer(g, job, job->cache & TG_JOB_CACHE_STORE ? cache_reply(g, job, type, pairs, len)
                                                       : tg_answer_create(job, type, pairs, len));
    }
    settle(g, job);
    return 0;
}

static void deadline(tg_timer_t *t)
{
    tg_job_t *job = tg_container_of(t, tg_job_t, timer);
    tg_gate_t *g = job->route->gate;
    tg_counter_add(&g->stats.deadline, 1);
    answer(g, job, tg_answer_error(job, 504, "deadline", "no reply from a backend in time"));
    if (job->state != TG_JOB_SENT) {
        settle(g, job);
        return;
    }
    /* Its backend may still be running it: it keeps its key and its place
     * until that backend answers (counted late) or its link drops. It is never
     * sent again, so it no longer holds the low water back. */
    job->state = TG_JOB_ORPHAN;
    tg_link_remove(&job->live);
}

/* ---- arrival ---- */

/* Keeps <g->live> in id order: ids are taken on client loops, so arrivals
 * can be slightly out of order. */
static void live_insert(tg_gate_t *g, tg_job_t *job)
{
    tg_link_t *at = g->live.prev;
    while (at != &g->live && tg_container_of(at, tg_job_t, live)->id > job->id)
        at = at->prev;
    job->live.prev = at;
    job->live.next = at->next;
    at->next->prev = &job->live;
    at->next = &job->live;
}

static void arrive(tg_gate_t *g, tg_job_t *job)
{
    if (g->stopped) {
        job->route = NULL;
        answer(g, job, tg_answer_error(job, 503, "shutting_down", "the server is stopping"));
        tg_job_free(job);
        return;
    }
    gate_route_t *r = tg_gate__route(g, job->route_name, strlen(job->route_name), false);
    if (!r) {
        tg_counter_add(&g->stats.no_route, 1);
        answer(g, job, tg_answer_error(job, 404, "no_such_route", "no backend serves this route"));
        tg_job_free(job);
        return;
    }
    if (r->cfg.mode == TG_ROUTE_SCATTER) {
        tg_scatter_start(g, r, job);
        return;
    }
    tg_gate__admit(g, r, job);
}

void tg_gate__hold(tg_gate_t *g, tg_job_t *job)
{
    live_insert(g, job);
}

void tg_gate__unhold(tg_gate_t *g, tg_job_t *job)
{
    (void)g;
    tg_link_remove(&job->live);
}

uint64_t tg_gate__next_id(tg_gate_t *g)
{
    return atomic_fetch_add_explicit(&g->next_id, 1, memory_order_relaxed);
}

void tg_gate__admit(tg_gate_t *g, gate_route_t *r, tg_job_t *job)
{
    tg_timer_init(&job->timer, deadline);
    job->route = r;
    if ((job->cache & TG_JOB_CACHE_STORE) && cache_arrive(g, job))
        return;
    if (tg_idmap_put(&g->jobs, job->id, job) != 0) {
        answer(g, job, tg_answer_error(job, 503, "out_of_memory", "the gate is out of memory"));
        tg_job_free(job);
        return;
    }
    live_insert(g, job);
    uint64_t now = g->home->now_ms;
    tg_timer_arm(&g->home->wheel, &job->timer, job->due_ms > now ? job->due_ms - now : 0);
    if (job->key_hash) {
        gate_key_t *k = tg_idmap_get(&r->keys, job->key_hash);
        if (k) {
            job->key = k;
            job->state = TG_JOB_KEYWAIT;
            tg_list_push(&k->waiting, &job->node);
            return;
        }
        k = calloc(1, sizeof(*k));
        if (!k || tg_idmap_put(&r->keys, job->key_hash, k) != 0) {
            free(k);
            refuse(g, job, 503, "out_of_memory", "the gate is out of memory");
            return;
        }
        k->hash = job->key_hash;
        k->holder = job;
        tg_list_init(&k->waiting);
        job->key = k;
    }
    enqueue(g, job);
}

static void job_arrived(tg_mail_t *m, void *arg)
{
    (void)arg;
    tg_job_t *job = tg_container_of(m, tg_job_t, mail);
    arrive(job->gate, job);
}

/* ---- backends joining and leaving ---- */

void tg_gate__joined(tg_gate_t *g, tg_backend_t *b)
{
    for (uint32_t i = 0; i < b->nroutes; i++) {
        gate_route_t *r = b->routes[i];
        tg_backend_t **grown = realloc(r->backends, (r->nbackends + 1) * sizeof(*grown));
        if (!grown) {
            b->routes[i--] = b->routes[--b->nroutes];
            continue;
        }
        r->backends = grown;
        r->backends[r->nbackends++] = b;
        r->refusing = false;
        tg_timer_cancel(&g->home->wheel, &r->window);
    }
    tg_gate__pump(g, b);
}

void tg_gate__left(tg_gate_t *g, tg_backend_t *b)
{
    for (uint32_t i = 0; b->hello && i < b->nroutes; i++) {
        gate_route_t *r = b->routes[i];
        for (uint32_t k = 0; k < r->nbackends; k++) {
            if (r->backends[k] == b) {
                r->backends[k] = r->backends[--r->nbackends];
                break;
            }
        }
        if (r->nbackends == 0)
            route_emptied(g, r);
    }
    b->nroutes = 0;
    /* Orphans are settled; the rest go back to their queues, then to whoever
     * has room. */
    while (!tg_list_empty(&b->inflight)) {
        tg_job_t *job = tg_container_of(b->inflight.next, tg_job_t, node);
        if (job->state == TG_JOB_ORPHAN || g->stopped) {
            if (job->state != TG_JOB_ORPHAN)
                answer(g, job, tg_answer_error(job, 503, "shutting_down",
                                               "the server is stopping"));
            settle(g, job);
            continue;
        }
        tg_link_remove(&job->node);
        b->outstanding--;
        tg_counter_sub(&g->stats.inflight, 1);
        requeue(g, job);
    }
    for (int i = 0; i < g->ngroutes; i++)
        drain_queue(g, g->groutes[i]);
}

uint64_t tg_gate__low_water(const tg_gate_t *g)
{
    if (!tg_list_empty(&g->live))
        return tg_container_of(g->live.next, tg_job_t, live)->id;
    return atomic_load_explicit(&((tg_gate_t *)g)->next_id, memory_order_relaxed);
}

/* ---- lifecycle ---- */

static void ping_tick(tg_timer_t *t)
{
    tg_gate_t *g = tg_container_of(t, tg_gate_t, ping);
    tg_backend__tick(g);
    if (!g->stopped)
        tg_timer_arm(&g->home->wheel, &g->ping, g->cfg.ping_ms);
}

tg_gate_t *tg_gate_create(const tg_gate_cfg_t *cfg, const tg_routes_t *routes, tg_loop_t *home,
                          tg_loop_t **loops, int nloops, const tg_gate_hooks_t *hooks, char *err,
                          size_t cap)
{
    tg_gate_t *g = calloc(1, sizeof(*g));
    if (!g) {
        snprintf(err, cap, "gate: out of memory");
        return NULL;
    }
    g->cfg = *cfg;
    g->routes = *routes;
    g->hooks = *hooks;
    g->home = home;
    g->loops = loops;
    g->nloops = nloops;
    g->proto = tg_backend_proto;
    g->proto.ctx = g;
    tg_list_init(&g->live);
    tg_list_init(&g->gathers);
    tg_list_init(&g->backends);
    tg_timer_init(&g->ping, ping_tick);
    tg_cache_init(&g->cache, &home->wheel, cfg->cache_size, &g->stats.cache);
    /* Ids start at the boot time in milliseconds times 2^20: a later run
     * starts above every id this one hands out unless it made over a million
     * jobs per millisecond of its life, so a backend never mistakes a new job
     * for an old one it remembers. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    g->epoch = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000) << 20;
    atomic_init(&g->next_id, g->epoch);
    for (int i = 0; i < g->routes.n; i++)
        if (!tg_gate__route(g, g->routes.r[i].name, strlen(g->routes.r[i].name), true)) {
            snprintf(err, cap, "gate: out of memory");
            tg_gate_destroy(g);
            return NULL;
        }
    return g;
}

int tg_gate_start(tg_gate_t *g, char *err, size_t cap)
{
    if (g->cfg.listen[0]) {
        struct sockaddr_storage ss;
        socklen_t len;
        if (tg_addr_parse(g->cfg.listen, &ss, &len) != 0) {
            snprintf(err, cap, "gate: bad backend listen address '%s'", g->cfg.listen);
            return -EINVAL;
        }
        int fd = tg_listen_open(&ss, len, false, 128);
        if (fd < 0) {
            snprintf(err, cap, "gate: cannot listen on %s: %s", g->cfg.listen, strerror(-fd));
            return fd;
        }
        tg_addr_local(fd, g->bound, sizeof(g->bound));
        int rc = tg_listener_attach(&g->listener, g->home, fd, &g->proto);
        if (rc != 0) {
            snprintf(err, cap, "gate: cannot watch the backend listener: %s", strerror(-rc));
            return rc;
        }
        g->listening = true;
    }
    if (g->cfg.backends[0]) {
        g->dialers = tg_dialers_create(g->home, g->cfg.backends, &g->proto, err, cap);
        if (!g->dialers)
            return -EINVAL;
    }
    tg_timer_arm(&g->home->wheel, &g->ping, g->cfg.ping_ms);
    return 0;
}

const char *tg_gate_bound(const tg_gate_t *g)
{
    return g->bound;
}

void tg_gate_stop(tg_gate_t *g)
{
    if (g->stopped)
        return;
    g->stopped = true;
    atomic_store(&g->closing, true);
    tg_timer_cancel(&g->home->wheel, &g->ping);
    if (g->listening) {
        tg_listener_close(&g->listener);
        g->listening = false;
    }
    if (g->dialers)
        tg_dialers_stop(g->dialers);
    for (int i = 0; i < g->ngroutes; i++) {
        gate_route_t *r = g->groutes[i];
        tg_timer_cancel(&g->home->wheel, &r->window);
        while (!tg_list_empty(&r->queue)) {
            tg_job_t *job = tg_container_of(r->queue.next, tg_job_t, node);
            refuse(g, job, 503, "shutting_down", "the server is stopping");
        }
    }
    /* Jobs in flight finish within the grace: their links close once idle
     * (backend.c's on_stop), or with the loop. */
}

void tg_gate_destroy(tg_gate_t *g)
{
    if (!g)
        return;
    tg_dialers_destroy(g->dialers);
    tg_cache_fini(&g->cache); /* flights only link jobs: those are freed below */
    tg_scatter_destroy_all(g);
    /* Jobs whose clients' loops are gone (a start that failed half-way): their
     * memory only; their timers' wheel is gone too. */
    for (size_t i = 0; i < g->jobs.cap; i++)
        if (g->jobs.slots[i].id)
            tg_job_free(g->jobs.slots[i].val);
    for (int i = 0; i < g->ngroutes; i++) {
        gate_route_t *r = g->groutes[i];
        for (size_t k = 0; k < r->keys.cap; k++)
            if (r->keys.slots[k].id)
                free(r->keys.slots[k].val);
        tg_idmap_fini(&r->keys);
        free(r->backends);
        free(r);
    }
    free(g->groutes);
    tg_idmap_fini(&g->jobs);
    free(g);
}

const tg_gate_stats_t *tg_gate_stats(const tg_gate_t *g)
{
    return &g->stats;
}

long tg_gate_cache_purge(tg_gate_t *g, tg_str_t route, tg_str_t prefix)
{
    gate_route_t *r = NULL;
    if (route.len && !(r = tg_gate__route(g, route.p, route.len, false)))
        return -ENOENT;
    return (long)tg_cache_purge(&g->cache, r, prefix);
}

/* ---- the client side (any IO loop) ---- */

/* Posts <job> home, where it may be settled and freed at once: returns its id. */
static uint64_t submit(tg_gate_t *g, tg_job_t *job, const tg_route_t *r, tg_loop_t *loop)
{
    job->gate = g;
    uint64_t id = job->id = atomic_fetch_add_explicit(&g->next_id, 1, memory_order_relaxed);
    job->due_ms = loop->now_ms + r->deadline_ms;
    job->mail.cb = job_arrived;
    tg_counter_add(&g->stats.jobs, 1);
    tg_loop_post(g->home, &job->mail);
    return id;
}

/* An HTTP request waiting for its answer. */
typedef struct http_wait {
    tg_mail_t      mail;   /* the cancel of a job that may wait in a flight */
    tg_gate_t     *gate;
    tg_http_req_t *req;
    uint64_t       job_id;
    bool           cancel; /* its job may wait in a flight: tell the gate when the client goes */
} http_wait_t;

/* Home loop: the client of a job has gone. A flight's waiter leaves at once,
 * so it costs nothing more (no answer made for it); any other job runs on. */
static void cancel_arrived(tg_mail_t *m, void *arg)
{
    (void)arg;
    http_wait_t *w = tg_container_of(m, http_wait_t, mail);
    tg_job_t *job = tg_idmap_get(&w->gate->jobs, w->job_id);
    if (job && job->state == TG_JOB_FLIGHTWAIT)
        settle(w->gate, job);
    free(w);
}

static void http_abort(void *arg)
{
    http_wait_t *w = arg;
    /* Once the gate is closing its loop may be finalised: no mail then. */
    if (!w->cancel || atomic_load(&w->gate->closing)) {
        free(w); /* the answer, when it comes, finds no request and is dropped */
        return;
    }
    w->mail.cb = cancel_arrived;
    tg_loop_post(w->gate->home, &w->mail); /* after the job's own mail: it is there first */
}

static bool http_answer(tg_conn_t *c, tg_answer_t *a)
{
    http_wait_t *w = tg_http_deferred(c, http_abort);
    if (!w || w->job_id != a->job_id)
        return false;
    tg_http_req_t *req = w->req;
    free(w);
    tg_answer_http(req, a);
    return true;
}

bool tg_gate_http(tg_gate_t *g, tg_http_req_t *req)
{
    tg_route_t r;
    tg_str_t rest;
    if (!tg_routes_http(&g->routes, req->path, &r, &rest))
        return false;
    int status = 0;
    const char *why = NULL;
    tg_job_t *job = tg_job_from_http(&r, req, rest, &status, &why);
    http_wait_t *w = job ? malloc(sizeof(*w)) : NULL;
    if (!w) {
        char body[160];
        if (!status) {
            status = 503;
            why = "out of memory";
        }
        int n = snprintf(body, sizeof(body), "{\"error\":\"%s\",\"message\":\"%s\"}\n",
                         status == 400 ? "bad_request" : "out_of_memory", why);
        tg_http_respond(req, status, "application/json", NULL, body, (size_t)n);
        tg_job_free(job);
        return true;
    }
    w->gate = g;
    w->req = req;
    w->cancel = job->cache & TG_JOB_CACHE_LOOKUP;
    w->job_id = submit(g, job, &r, req->conn->loop); /* <job> is the home loop's now */
    tg_http_defer(req, http_abort, w);
    return true;
}

void tg_gate_call(tg_gate_t *g, tg_session_t *s, const tg_cmd_t *cmd)
{
    tg_route_t r;
    if (!tg_routes_call(&g->routes, cmd->route, &r)) {
        tg_session_error(s, "no_such_route", "no backend serves this route", cmd->id);
        return;
    }
    const char *why = NULL;
    tg_str_t user = g->hooks.user_of ? g->hooks.user_of(g->hooks.arg, s) : (tg_str_t){ "", 0 };
    tg_job_t *job = tg_job_from_call(&r, s, user, cmd, &why);
    if (!job) {
        tg_session_error(s, "bad_call", why, cmd->id);
        return;
    }
    submit(g, job, &r, s->conn->loop);
}
