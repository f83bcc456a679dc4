/* app/stats.c - /stats (JSON) and /metrics (Prometheus text) from the counters
 * each loop, listener and module keeps. Reads other threads' counters with
 * relaxed loads: figures are each exact, not a snapshot taken all at once. */
#include <stddef.h>
#include <stdio.h>

#include "app/server.h"
#include "core/log.h"
#include "core/sbuf.h"
#include "net/close.h"

#define C(x) ((unsigned long long)tg_counter_get(&(x)))

static unsigned long long emfile_total(const tg_server_t *s)
{
    unsigned long long n = C(s->acceptor.stats.emfile);
    for (int i = 0; s->listeners && i < s->nloops; i++)
        n += C(s->listeners[i].stats.emfile);
    return n;
}

typedef struct totals {
    unsigned long long live, accepted, closed, bytes_in, bytes_out, requests;
    unsigned long long reasons[TG_CLOSE_MAX];
} totals_t;

static void sum(const tg_server_t *s, totals_t *t)
{
    *t = (totals_t){ 0 };
    for (int i = 0; i < s->nloops; i++) {
        const tg_loop_stats_t *ls = &s->loops[i].stats;
        t->live += C(ls->live);
        t->accepted += C(ls->accepted);
        t->closed += C(ls->closed);
        t->bytes_in += C(ls->bytes_in);
        t->bytes_out += C(ls->bytes_out);
        t->requests += C(s->http.loops[i].requests);
        for (int r = 0; r < TG_CLOSE_MAX; r++)
            t->reasons[r] += C(ls->reasons[r]);
    }
}

/* The gate's figures: one table for /stats and /metrics. */
typedef struct gate_figure {
    const char *name; /* /stats key; the metric is tidegate_gate_<name>[_total] */
    bool        gauge;
    const char *help;
    size_t      off;  /* in tg_gate_stats_t */
} gate_figure_t;

#define G(field) offsetof(tg_gate_stats_t, field)
static const gate_figure_t gate_figures[] = {
    { "jobs", false, "Jobs submitted (HTTP requests and calls on routes).", G(jobs) },
    { "replies", false, "Jobs settled by a backend's reply.", G(replies) },
    { "failed", false, "Jobs settled by a backend's error.", G(failed) },
    { "deadline", false, "Jobs answered 504 at their deadline.", G(deadline) },
    { "overloaded", false, "Jobs refused with 503: the route's queue was full.", G(overloaded) },
    { "no_backend", false, "Jobs refused with 503: no backend within the window.", G(no_backend) },
    { "no_route", false, "Jobs refused with 404: nobody serves the route.", G(no_route) },
    { "resubmitted", false, "Jobs sent again after their backend's link dropped.", G(resubmitted) },
    { "late", false, "Replies that came after the job's deadline (ignored).", G(late) },
    { "violations", false, "Backend links closed for breaking the protocol.", G(violations) },
    { "push_dropped", false, "Backend pushes and orders whose target was gone.", G(push_dropped) },
    { "answers_dropped", false, "Answers whose client had gone.", G(answers_dropped) },
    { "lz4_out", false, "Backend frames sent LZ4-compressed.", G(lz4_out) },
    { "lz4_in", false, "Backend frames received LZ4-compressed.", G(lz4_in) },
    { "scatters", false, "Jobs of scatter routes, made into parts.", G(scatters) },
    { "parts", false, "Parts of scatter jobs, each a job of its own.", G(parts) },
    { "partial", false, "Scatter jobs answered with parts missing.", G(partial) },
    { "links_total", false, "Backend links that said HELLO.", G(links_total) },
    { "links", true, "Backend links open now (HELLO said).", G(links) },
    { "queued", true, "Jobs waiting for a backend with room now.", G(queued) },
    { "inflight", true, "Jobs sent to backends and unanswered now.", G(inflight) },
};
/* The reply cache: /stats gate.cache.<name>, metric tidegate_gate_cache_<name>[_total]. */
static const gate_figure_t cache_figures[] = {
    { "hits", false, "Requests on caching routes answered from the cache.", G(cache.hits) },
    { "misses", false, "Requests on caching routes that sent a job.", G(cache.misses) },
    { "coalesced", false, "Requests that waited for an identical one in flight.",
      G(cache.coalesced) },
    { "stored", false, "Replies stored in the cache.", G(cache.stored) },
    { "evictions", false, "Entries dropped for room, least recently used first.",
      G(cache.evictions) },
    { "expirations", false, "Entries dropped at their TTL.", G(cache.expirations) },
    { "purged", false, "Entries dropped by an admin purge.", G(cache.purged) },
    { "entries", true, "Entries held now.", G(cache.entries) },
    { "bytes", true, "Bytes held now, as counted against gate.cache_size.", G(cache.bytes) },
};
#undef G

/* Compression per transport: bytes before and after, summed over loops and
 * both directions (saved = before - after). */
enum { Z_HTTP_GZIP, Z_WS_DEFLATE, Z_FRAMES_LZ4, Z_BACKEND_LZ4, Z_COUNT };
static const char *const z_names[Z_COUNT] = { "http_gzip", "ws_deflate", "frames_lz4",
                                              "backend_lz4" };

static void compression(const tg_server_t *s, unsigned long long before[Z_COUNT],
                        unsigned long long after[Z_COUNT])
{
    for (int k = 0; k < Z_COUNT; k++)
        before[k] = after[k] = 0;
    for (int i = 0; i < s->nloops; i++) {
        before[Z_HTTP_GZIP] += C(s->http.loops[i].gzip_before);
        after[Z_HTTP_GZIP] += C(s->http.loops[i].gzip_after);
        if (s->hub.ws.loops) {
            before[Z_WS_DEFLATE] += C(s->hub.ws.loops[i].deflate_before);
            after[Z_WS_DEFLATE] += C(s->hub.ws.loops[i].deflate_after);
        }
        if (s->hub.frames.loops) {
            before[Z_FRAMES_LZ4] += C(s->hub.frames.loops[i].lz4_before);
            after[Z_FRAMES_LZ4] += C(s->hub.frames.loops[i].lz4_after);
        }
    }
    if (s->gate) {
        before[Z_BACKEND_LZ4] = C(tg_gate_stats(s->gate)->lz4_before);
        after[Z_BACKEND_LZ4] = C(tg_gate_stats(s->gate)->lz4_after);
    }
}

static unsigned long long gate_value(const tg_server_t *s, const gate_figure_t *f)
{
    return tg_counter_get((const tg_counter_t *)((const char *)tg_gate_stats(s->gate) + f->off));
}

void tg_stats_json(const tg_server_t *s, const tg_chan_count_t *top, int ntop, tg_sbuf_t *b)
{
    totals_t t;
    sum(s, &t);
    tg_sbuf_printf(b,
                   "{\"version\":\"%s\",\"uptime_ms\":%llu,\"io_threads\":%d,\"workers\":%d,"
                   "\"connections\":{\"live\":%llu,\"accepted\":%llu,\"closed\":%llu},"
                   "\"bytes_in\":%llu,\"bytes_out\":%llu,\"requests\":%llu,\"errors\":{",
                   TG_VERSION, (unsigned long long)(tg_clock_ms() - s->started_ms), s->nloops,
                   s->cfg.workers, t.live, t.accepted, t.closed, t.bytes_in, t.bytes_out,
                   t.requests);
    for (int r = 1; r < TG_CLOSE_MAX; r++) {
        const tg_close_info_t *info = tg_close_named(r);
        if (info && info->error)
            tg_sbuf_printf(b, "\"%s\":%llu,", info->name, t.reasons[r]);
    }
    tg_sbuf_printf(b, "\"emfile\":%llu},\"closes\":{", emfile_total(s));
    const char *sep = "";
    for (int r = 1; r < TG_CLOSE_MAX; r++) {
        const tg_close_info_t *info = tg_close_named(r);
        if (info && !info->error) {
            tg_sbuf_printf(b, "%s\"%s\":%llu", sep, info->name, t.reasons[r]);
            sep = ",";
        }
    }
    tg_sbuf_printf(b, "},\"loops\":[");
    for (int i = 0; i < s->nloops; i++) {
        const tg_loop_stats_t *ls = &s->loops[i].stats;
        tg_sbuf_printf(b,
                       "%s{\"id\":%d,\"live\":%llu,\"accepted\":%llu,\"closed\":%llu,"
                       "\"bytes_in\":%llu,\"bytes_out\":%llu,\"requests\":%llu,"
                       "\"wakeups\":%llu,\"mails\":%llu,\"batches\":%llu,\"batched\":%llu,"
                       "\"coalesced\":%llu}",
                       i ? "," : "", i, C(ls->live), C(ls->accepted), C(ls->closed),
                       C(ls->bytes_in), C(ls->bytes_out), C(s->http.loops[i].requests),
                       C(ls->wakeups), C(ls->mails), C(ls->batches), C(ls->batched),
                       C(ls->coalesced));
    }
    uint64_t ps[6];
    tg_push_stats(s->push, ps);
    tg_sbuf_printf(b,
                   "],\"push\":{\"published\":%llu,\"delivered\":%llu,\"conflated\":%llu,"
                   "\"gaps\":%llu,\"channels\":%llu,\"subscribers\":%llu",
                   (unsigned long long)ps[0], (unsigned long long)ps[1],
                   (unsigned long long)ps[2], (unsigned long long)ps[3],
                   (unsigned long long)ps[4], (unsigned long long)ps[5]);
    tg_sbuf_printf(b, ",\"busiest_channels\":[");
    for (int i = 0, n = 0; i < ntop; i++)
        if (top[i].name[0] != '~') /* internal channels (users) are nobody's business here */
            tg_sbuf_printf(b, "%s{\"ch\":\"%s\",\"subscribers\":%llu}", n++ ? "," : "",
                           top[i].name, (unsigned long long)top[i].subscribers);
    tg_sbuf_printf(b, "]}");
    if (s->gate) {
        tg_sbuf_printf(b, ",\"gate\":{");
        for (size_t i = 0; i < TG_ARRAY_LEN(gate_figures); i++)
            tg_sbuf_printf(b, "%s\"%s\":%llu", i ? "," : "", gate_figures[i].name,
                           gate_value(s, &gate_figures[i]));
        tg_sbuf_printf(b, ",\"orders_dropped\":%llu,\"cache\":{", C(s->hub.orders_dropped));
        for (size_t i = 0; i < TG_ARRAY_LEN(cache_figures); i++)
            tg_sbuf_printf(b, "%s\"%s\":%llu", i ? "," : "", cache_figures[i].name,
                           gate_value(s, &cache_figures[i]));
        tg_sbuf_printf(b, "}}");
    }
    unsigned long long zb[Z_COUNT], za[Z_COUNT];
    compression(s, zb, za);
    tg_sbuf_printf(b, ",\"compression\":{");
    for (int k = 0; k < Z_COUNT; k++)
        tg_sbuf_printf(b, "%s\"%s\":{\"before\":%llu,\"after\":%llu}", k ? "," : "", z_names[k],
                       zb[k], za[k]);
    tg_sbuf_printf(b, "}");
    tg_sbuf_printf(b, ",\"log_dropped\":%llu}\n", (unsigned long long)tg_log_dropped());
}

static void family(tg_sbuf_t *b, const char *name, const char *type, const char *help)
{
    tg_sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define PER_LOOP(b, s, name, type, help, field)                                          \
    do {                                                                                 \
        family(b, name, type, help);                                                     \
        for (int i_ = 0; i_ < (s)->nloops; i_++)                                         \
            tg_sbuf_printf(b, "%s{loop=\"%d\"} %llu\n", name, i_, C(field));             \
    } while (0)

void tg_stats_prometheus(const tg_server_t *s, const tg_chan_count_t *top, int ntop,
                         tg_sbuf_t *b)
{
    totals_t t;
    sum(s, &t);
    family(b, "tidegate_uptime_seconds", "gauge", "Seconds since the server started.");
    tg_sbuf_printf(b, "tidegate_uptime_seconds %.3f\n",
                   (double)(tg_clock_ms() - s->started_ms) / 1000.0);
    PER_LOOP(b, s, "tidegate_connections", "gauge", "Client connections open now.",
             s->loops[i_].stats.live);
    PER_LOOP(b, s, "tidegate_connections_accepted_total", "counter",
             "Client connections accepted.", s->loops[i_].stats.accepted);
    PER_LOOP(b, s, "tidegate_connections_closed_total", "counter", "Client connections closed.",
             s->loops[i_].stats.closed);
    PER_LOOP(b, s, "tidegate_bytes_received_total", "counter", "Bytes read from clients.",
             s->loops[i_].stats.bytes_in);
    PER_LOOP(b, s, "tidegate_bytes_sent_total", "counter", "Bytes written to clients.",
             s->loops[i_].stats.bytes_out);
    PER_LOOP(b, s, "tidegate_http_requests_total", "counter", "HTTP requests dispatched.",
             s->http.loops[i_].requests);
    family(b, "tidegate_errors_total", "counter",
           "Connections closed for a client error or a server shortage, by kind.");
    for (int r = 1; r < TG_CLOSE_MAX; r++) {
        const tg_close_info_t *info = tg_close_named(r);
        if (info && info->error)
            tg_sbuf_printf(b, "tidegate_errors_total{kind=\"%s\"} %llu\n", info->name,
                           t.reasons[r]);
    }
    tg_sbuf_printf(b, "tidegate_errors_total{kind=\"emfile\"} %llu\n", emfile_total(s));
    uint64_t ps[6];
    tg_push_stats(s->push, ps);
    static const struct {
        const char *name, *type, *help;
    } push_families[6] = {
        { "tidegate_push_published_total", "counter", "Messages given a position." },
        { "tidegate_push_delivered_total", "counter", "Messages handed to subscribers." },
        { "tidegate_push_conflated_total", "counter", "Latest mode: messages replaced unsent." },
        { "tidegate_push_gaps_total", "counter", "Resumes answered with a gap." },
        { "tidegate_push_channels", "gauge", "Channels held now." },
        { "tidegate_push_subscribers", "gauge", "Subscriptions now." },
    };
    for (int i = 0; i < 6; i++) {
        family(b, push_families[i].name, push_families[i].type, push_families[i].help);
        tg_sbuf_printf(b, "%s %llu\n", push_families[i].name, (unsigned long long)ps[i]);
    }
    family(b, "tidegate_channel_subscribers", "gauge",
           "Subscribers of the busiest channels (at most 20, most first).");
    for (int i = 0; i < ntop; i++)
        if (top[i].name[0] != '~')
            tg_sbuf_printf(b, "tidegate_channel_subscribers{channel=\"%s\"} %llu\n", top[i].name,
                           (unsigned long long)top[i].subscribers);
    for (size_t i = 0; s->gate && i < TG_ARRAY_LEN(gate_figures); i++) {
        char name[64];
        snprintf(name, sizeof(name), "tidegate_gate_%s%s", gate_figures[i].name,
                 gate_figures[i].gauge ? "" : "_total");
        family(b, name, gate_figures[i].gauge ? "gauge" : "counter", gate_figures[i].help);
        tg_sbuf_printf(b, "%s %llu\n", name, gate_value(s, &gate_figures[i]));
    }
    for (size_t i = 0; s->gate && i < TG_ARRAY_LEN(cache_figures); i++) {
        char name[64];
        snprintf(name, sizeof(name), "tidegate_gate_cache_%s%s", cache_figures[i].name,
                 cache_figures[i].gauge ? "" : "_total");
        family(b, name, cache_figures[i].gauge ? "gauge" : "counter", cache_figures[i].help);
        tg_sbuf_printf(b, "%s %llu\n", name, gate_value(s, &cache_figures[i]));
    }
    unsigned long long zb[Z_COUNT], za[Z_COUNT];
    compression(s, zb, za);
    family(b, "tidegate_compression_before_bytes_total", "counter",
           "Bytes that went through compression (either way), uncompressed, by transport.");
    for (int k = 0; k < Z_COUNT; k++)
        tg_sbuf_printf(b, "tidegate_compression_before_bytes_total{transport=\"%s\"} %llu\n",
                       z_names[k], zb[k]);
    family(b, "tidegate_compression_after_bytes_total", "counter",
           "The same bytes compressed, as on the wire, by transport.");
    for (int k = 0; k < Z_COUNT; k++)
        tg_sbuf_printf(b, "tidegate_compression_after_bytes_total{transport=\"%s\"} %llu\n",
                       z_names[k], za[k]);
    family(b, "tidegate_log_dropped_total", "counter", "Log lines dropped: queue full.");
    tg_sbuf_printf(b, "tidegate_log_dropped_total %llu\n", (unsigned long long)tg_log_dropped());
}
