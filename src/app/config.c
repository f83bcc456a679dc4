/* app/config.c - see config.h. */
#include "app/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/accept.h"
#include "core/log.h"

#define F(field) offsetof(tg_config_t, field), sizeof(((tg_config_t *)0)->field)
#define DAY_MS   (24ull * 3600 * 1000)

const tg_config_key_t tg_config_keys[] = {
    { "listen", TG_CFG_ADDRESS, F(listen), 0, 0, "127.0.0.1:8080",
      "client listener, HOST:PORT or [V6]:PORT (port 0: any free port)" },
    { "io_threads", TG_CFG_INT, F(io_threads), 0, TG_LOOP_MAX, "0",
      "IO loops (epoll threads); 0 = one per core" },
    { "workers", TG_CFG_INT, F(workers), 0, 256, "2", "worker threads for blocking work" },
    { "reuseport", TG_CFG_BOOL, F(reuseport), 0, 1, "false",
      "one SO_REUSEPORT listener per IO loop instead of an acceptor thread" },
    { "backlog", TG_CFG_INT, F(backlog), 1, 1 << 20, "4096",
      "listen() backlog (the kernel caps it at net.core.somaxconn)" },
    { "io_uring", TG_CFG_BOOL, F(io_uring), 0, 1, "true",
      "send to many connections in one system call (io_uring) when a loop has a batch" },
    { "sndbuf", TG_CFG_SIZE, F(sndbuf), 0, 64u << 20, "0",
      "kernel send buffer of each client connection (SO_SNDBUF); 0 = the kernel's autotuning" },
    { "log_level", TG_CFG_LOG_LEVEL, F(log_level), 0, 3, "info", "error, warn, info or debug" },
    { "log_file", TG_CFG_STRING, F(log_file), 0, 0, "",
      "append log lines to this file (reopened on SIGHUP); empty = stderr" },
    { "shutdown_grace", TG_CFG_DURATION, F(shutdown_grace_ms), 0, 60000, "1500ms",
      "on SIGTERM, how long requests in flight may take before connections are cut" },
    { "http.max_uri", TG_CFG_SIZE, F(http.max_uri), 16, 1 << 20, "8k",
      "longest request-target; longer gets 414" },
    { "http.max_header_size", TG_CFG_SIZE, F(http.max_header_size), 64, 1 << 20, "16k",
      "longest header section (request line and headers); longer gets 431" },
    { "http.max_headers", TG_CFG_INT, F(http.max_headers), 1, 10000, "100",
      "most header lines; more gets 431" },
    { "http.max_body", TG_CFG_SIZE, F(http.max_body), 0, 1ull << 40, "1m",
      "largest request body; larger gets 413" },
    { "http.header_timeout", TG_CFG_DURATION, F(http.header_timeout_ms), 1, DAY_MS, "10s",
      "from a request's first byte to the end of its headers; later gets 408" },
    { "http.body_timeout", TG_CFG_DURATION, F(http.body_timeout_ms), 1, DAY_MS, "30s",
      "from the end of the headers to the end of the body; later gets 408" },
    { "http.keepalive_timeout", TG_CFG_DURATION, F(http.keepalive_timeout_ms), 1, DAY_MS, "75s",
      "an idle keep-alive connection is closed after this" },
    { "http.send_timeout", TG_CFG_DURATION, F(http.send_timeout_ms), 1, DAY_MS, "60s",
      "a client that reads none of its pending output for this long is cut" },
    { "http.max_output", TG_CFG_SIZE, F(http.max_out), 1024, 1 << 30, "256k",
      "queued output per connection past which reading pauses (pipelining)" },
    { "http.gzip_min", TG_CFG_SIZE, F(http.gzip_min), 1, 1 << 30, "128",
      "whole responses this long or longer are gzipped for clients that accept it" },
    { "http.gzip_level", TG_CFG_INT, F(http.gzip_level), 0, 9, "1",
      "gzip level, 1 (fastest) to 9 (smallest); 0 = never gzip" },
    { "push.history_len", TG_CFG_INT, F(push_history_len), 0, 1000000, "100",
      "messages each channel keeps for resume and pull" },
    { "push.history_age", TG_CFG_DURATION, F(push_history_age_ms), 0, DAY_MS * 30, "0s",
      "messages older than this are dropped from history; 0s = no age limit" },
    { "push.client_publish", TG_CFG_BOOL, F(push_client_publish), 0, 1, "true",
      "connected clients may publish with the pub command" },
    { "push.max_output", TG_CFG_SIZE, F(push_max_output), 4096, 1ull << 32, "1m",
      "output queued for one subscriber past which it is cut as a slow consumer" },
    { "push.coalesce", TG_CFG_DURATION, F(push_coalesce_ms), 0, 1000, "0ms",
      "hold a subscriber's messages this long so several share one write (less CPU, "
      "more latency); 0ms = each goes out at once" },
    { "push.coalesce_busy", TG_CFG_DURATION, F(push_coalesce_busy_ms), 0, 1000, "25ms",
      "with push.coalesce at 0ms: the longest hold while a loop is busy with broadcasts (more "
      "than push.coalesce_above writes a second); a hold ends sooner once it has gathered "
      "enough messages to bring the writes back to that rate; 0ms = never" },
    { "push.coalesce_above", TG_CFG_INT, F(push_coalesce_above), 0, 100000000, "20000",
      "broadcast writes a second past which an IO loop counts as busy (see push.coalesce_busy)" },
    { "ws.max_message", TG_CFG_SIZE, F(ws_max_message), 125, 1ull << 30, "64k",
      "largest WebSocket message a client may send; larger closes with 1009" },
    { "ws.ping_interval", TG_CFG_DURATION, F(ws_ping_ms), 0, DAY_MS, "30s",
      "ping WebSocket clients this often so proxies keep the connection; 0s = never" },
    { "sse.heartbeat", TG_CFG_DURATION, F(sse_heartbeat_ms), 0, DAY_MS, "15s",
      "heartbeat on idle SSE and chunked streams this often; 0s = never" },
    { "poll.timeout", TG_CFG_DURATION, F(poll_timeout_ms), 1, DAY_MS, "30s",
      "a long-poll with nothing to answer gets 204 after this" },
    { "frames.listen", TG_CFG_ADDRESS, F(frames_listen), 0, 0, "",
      "TCP frames listener for native clients, HOST:PORT; empty = none" },
    { "frames.max_frame", TG_CFG_SIZE, F(frames_max), 16, 1 << 30, "1m",
      "largest TCP frame body a client may send; larger closes the connection" },
    { "frames.idle", TG_CFG_DURATION, F(frames_idle_ms), 0, DAY_MS, "60s",
      "ping a silent TCP-frames client after this, close it after twice; 0s = never" },
    { "gate.listen", TG_CFG_ADDRESS, F(gate_listen), 1, 0, "127.0.0.1:7070",
      "backend listener (backends connect here), HOST:PORT; empty = none" },
    { "gate.backends", TG_CFG_STRING, F(gate_backends), 0, 0, "",
      "backends tidegate dials itself, HOST:PORT,... (names resolved asynchronously)" },
    { "gate.auto_routes", TG_CFG_BOOL, F(gate_auto_routes), 0, 1, "true",
      "a route a backend serves but no route.* line names gets /api/NAME/ and call NAME" },
    { "gate.policy", TG_CFG_STRING, F(gate_policy), 0, 0, "round-robin",
      "default dispatch: round-robin, least (fewest jobs in flight) or by-key" },
    { "gate.deadline", TG_CFG_DURATION, F(gate_deadline_ms), 1, DAY_MS, "30s",
      "default: a client waits at most this long for its reply, then gets 504" },
    { "gate.window", TG_CFG_DURATION, F(gate_window_ms), 0, DAY_MS, "30s",
      "default: jobs wait this long for a backend of their route to connect, then 503" },
    { "gate.queue", TG_CFG_INT, F(gate_queue), 0, 10000000, "10000",
      "default: jobs waiting for room per route; past it, 503 with Retry-After" },
    { "gate.max_frame", TG_CFG_SIZE, F(gate_max_frame), 1024, 1 << 30, "16m",
      "largest backend frame body either way; a backend sending a larger one is cut" },
    { "gate.lz4_min", TG_CFG_SIZE, F(gate_lz4_min), 0, 1 << 30, "128",
      "frame bodies this long or longer go LZ4-compressed to backends that take it; 0 = never" },
    { "gate.ping_interval", TG_CFG_DURATION, F(gate_ping_ms), 100, DAY_MS, "5s",
      "PING and DONE_BELOW on every backend link; silent for 3 intervals = link cut" },
    { "gate.cache_size", TG_CFG_SIZE, F(gate_cache_size), 0, 1ull << 40, "64m",
      "bytes the reply cache of routes with a cache TTL may hold; least recently used go first" },
    { "admin.key", TG_CFG_STRING, F(admin_key), 0, 0, "",
      "admin endpoints (/admin/...) want 'Authorization: Bearer KEY'; empty = peers on "
      "127.0.0.1 or ::1 only" },
    { NULL },
};

static int refuse(char *err, size_t cap, const char *fmt, const char *a, const char *b)
{
    snprintf(err, cap, fmt, a, b);
    return -EINVAL;
}

static const tg_config_key_t *find_key(const char *name)
{
    for (const tg_config_key_t *k = tg_config_keys; k->name; k++)
        if (strcmp(k->name, name) == 0)
            return k;
    return NULL;
}

/* Whole-string unsigned number with an optional suffix from <units>. */
static bool parse_scaled(const char *v, const char *const *units, const uint64_t *scale,
                         bool unit_required, uint64_t *out)
{
    if (!isdigit((unsigned char)*v))
        return false;
    char *end;
    errno = 0;
    unsigned long long n = strtoull(v, &end, 10);
    if (errno)
        return false;
    uint64_t mult = 1;
    if (*end) {
        int i = 0;
        for (; units[i]; i++)
            if (strcmp(end, units[i]) == 0)
                break;
        if (!units[i])
            return false;
        mult = scale[i];
    } else if (unit_required) {
        return false;
    }
    if (mult && n > UINT64_MAX / mult)
        return false;
    *out = n * mult;
    return true;
}

static void store(void *field, size_t size, uint64_t v)
{
    if (size == sizeof(uint64_t))
        *(uint64_t *)field = v;
    else if (size == sizeof(uint32_t))
        *(uint32_t *)field = (uint32_t)v;
    else if (size == sizeof(bool))
        *(bool *)field = v != 0;
}

static bool pattern_valid(const char *p, size_t n)
{
    if (n == 0 || n > TG_CHAN_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] != '*' && !tg_chan_name_valid(p + i, 1))
            return false;
    return true;
}

/* "channel.PATTERN.FIELD": the value is parsed as the matching push.* key's. */
static int set_channel_rule(tg_config_t *cfg, const char *key, const char *value, char *err,
                            size_t cap)
{
    const char *pat = key + strlen("channel."), *dot = strrchr(key, '.');
    size_t plen = dot > pat ? (size_t)(dot - pat) : 0;
    if (!pattern_valid(pat, plen))
        return refuse(err, cap, "'%s': the pattern between 'channel.' and the field must be "
                                "channel-name characters and '*'%s", key, "");
    const char *field = dot + 1;
    if (strcmp(field, "mode") && strcmp(field, "history_len") && strcmp(field, "history_age") &&
        strcmp(field, "client_publish"))
        return refuse(err, cap, "'%s': unknown channel field (history_len, history_age, mode, "
                                "client_publish)%s", key, "");
    tg_config_rule_t *r = NULL;
    for (int i = 0; i < cfg->nrules; i++)
        if (strlen(cfg->rules[i].pattern) == plen && memcmp(cfg->rules[i].pattern, pat, plen) == 0)
            r = &cfg->rules[i];
    if (!r) {
        if (cfg->nrules == TG_CHAN_RULES_MAX)
            return refuse(err, cap, "'%s': too many channel patterns (at most 32)%s", key, "");
        r = &cfg->rules[cfg->nrules++];
        memset(r, 0, sizeof(*r));
        memcpy(r->pattern, pat, plen);
    }
    tg_config_t tmp;
    char msg[256];
    if (strcmp(field, "mode") == 0) {
        if (strcmp(value, "all") != 0 && strcmp(value, "latest") != 0)
            return refuse(err, cap, "'%s' expects all or latest, not '%s'", key, value);
        r->opts.mode = value[0] == 'l' ? TG_MODE_LATEST : TG_MODE_ALL;
        r->set |= TG_RULE_MODE;
        return 0;
    }
    static const struct {
        const char *field, *key;
        uint8_t     bit;
    } map[] = {
        { "history_len", "push.history_len", TG_RULE_LEN },
        { "history_age", "push.history_age", TG_RULE_AGE },
        { "client_publish", "push.client_publish", TG_RULE_PUBLISH },
    };
    for (size_t i = 0; i < TG_ARRAY_LEN(map); i++) {
        if (strcmp(field, map[i].field) != 0)
            continue;
        if (tg_config_set(&tmp, map[i].key, value, msg, sizeof(msg)) != 0)
            return refuse(err, cap, "'%s': %s", key, msg);
        if (map[i].bit == TG_RULE_LEN)
            r->opts.history_len = tmp.push_history_len;
        else if (map[i].bit == TG_RULE_AGE)
            r->opts.history_age_ms = tmp.push_history_age_ms;
        else
            r->opts.client_publish = tmp.push_client_publish;
        r->set |= map[i].bit;
        return 0;
    }
    return -EINVAL; /* not reached: the field was checked above */
}

int tg_config_chan_rules(const tg_config_t *cfg, tg_chan_opts_t *defaults, tg_chan_rule_t *out)
{
    *defaults = (tg_chan_opts_t){
        .history_len = cfg->push_history_len,
        .history_age_ms = cfg->push_history_age_ms,
        .mode = TG_MODE_ALL,
        .client_publish = cfg->push_client_publish,
    };
    for (int i = 0; i < cfg->nrules; i++) {
        const tg_config_rule_t *r = &cfg->rules[i];
        tg_chan_opts_t o = *defaults;
        if (r->set & TG_RULE_LEN)
            o.history_len = r->opts.history_len;
        if (r->set & TG_RULE_AGE)
            o.history_age_ms = r->opts.history_age_ms;
        if (r->set & TG_RULE_MODE)
            o.mode = r->opts.mode;
        if (r->set & TG_RULE_PUBLISH)
            o.client_publish = r->opts.client_publish;
        memcpy(out[i].pattern, r->pattern, sizeof(out[i].pattern));
        out[i].opts = o;
    }
    return cfg->nrules;
}

/* "route.NAME.FIELD". */
static int set_route(tg_config_t *cfg, const char *key, const char *value, char *err, size_t cap)
{
    const char *name = key + strlen("route."), *dot = strrchr(key, '.');
    size_t nlen = dot > name ? (size_t)(dot - name) : 0;
    if (!tg_route_name_valid(name, nlen))
        return refuse(err, cap, "'%s': the route name between 'route.' and the field must be "
                                "1 to 48 of A-Z a-z 0-9 _ . -%s", key, "");
    const char *field = dot + 1;
    tg_config_route_t *r = NULL;
    for (int i = 0; i < cfg->nroutes; i++)
        if (strlen(cfg->routes[i].r.name) == nlen && memcmp(cfg->routes[i].r.name, name, nlen) == 0)
            r = &cfg->routes[i];
    if (!r) {
        if (cfg->nroutes == TG_ROUTES_MAX)
            return refuse(err, cap, "'%s': too many routes (at most 64)%s", key, "");
        r = &cfg->routes[cfg->nroutes++];
        memset(r, 0, sizeof(*r));
        memcpy(r->r.name, name, nlen);
    }
    tg_config_t tmp;
    char msg[256];
    if (strcmp(field, "http") == 0) {
        if (value[0] != '/' || strlen(value) > TG_ROUTE_PREFIX_MAX || strpbrk(value, "?# \t"))
            return refuse(err, cap, "'%s' expects a path prefix such as /api/orders/, not '%s'",
                          key, value);
        strcpy(r->r.prefix, value);
    } else if (strcmp(field, "call") == 0) {
        if (!tg_route_name_valid(value, strlen(value)))
            return refuse(err, cap, "'%s' expects a call name (A-Z a-z 0-9 _ . -), not '%s'",
                          key, value);
        strcpy(r->r.call, value);
    } else if (strcmp(field, "policy") == 0) {
        if (tg_route_parse_policy(value, &r->r.policy) != 0)
            return refuse(err, cap, "'%s' expects round-robin, least or by-key, not '%s'", key,
                          value);
        r->set |= TG_RSET_POLICY;
    } else if (strcmp(field, "key") == 0) {
        if (tg_route_parse_key(value, &r->r) != 0)
            return refuse(err, cap, "'%s' expects header:NAME, query:NAME, field:NAME, user or "
                                    "conn, not '%s'", key, value);
        r->set |= TG_RSET_KEY;
    } else if (strcmp(field, "deadline") == 0 || strcmp(field, "window") == 0) {
        bool dl = field[0] == 'd';
        if (tg_config_set(&tmp, dl ? "gate.deadline" : "gate.window", value, msg, sizeof(msg)))
            return refuse(err, cap, "'%s': %s", key, msg);
        if (dl)
            r->r.deadline_ms = tmp.gate_deadline_ms;
        else
            r->r.window_ms = tmp.gate_window_ms;
        r->set |= dl ? TG_RSET_DEADLINE : TG_RSET_WINDOW;
    } else if (strcmp(field, "queue") == 0) {
        if (tg_config_set(&tmp, "gate.queue", value, msg, sizeof(msg)))
            return refuse(err, cap, "'%s': %s", key, msg);
        r->r.queue_max = tmp.gate_queue;
        r->set |= TG_RSET_QUEUE;
    } else if (strcmp(field, "cache") == 0) {
        static const char *const units[] = { "ms", "s", "m", "h", NULL };
        static const uint64_t scale[] = { 1, 1000, 60000, 3600000 };
        uint64_t ms;
        /* "0" alone means off, as the unit of nothing does not matter. */
        if (strcmp(value, "0") != 0 &&
            (!parse_scaled(value, units, scale, true, &ms) || ms > 30 * DAY_MS))
            return refuse(err, cap, "'%s' expects a duration up to 30 days such as 10s (0 = off), "
                                    "not '%s'", key, value);
        r->r.cache_ttl_ms = strcmp(value, "0") == 0 ? 0 : (uint32_t)ms;
    } else if (strcmp(field, "cache_errors") == 0 || strcmp(field, "private") == 0) {
        bool *b = field[0] == 'c' ? &r->r.cache_errors : &r->r.cache_private;
        if (tg_config_set(&tmp, "gate.auto_routes", value, msg, sizeof(msg)))
            return refuse(err, cap, "'%s' expects true or false, not '%s'", key, value);
        *b = tmp.gate_auto_routes;
    } else if (strcmp(field, "mode") == 0) {
        if (tg_route_parse_mode(value, &r->r.mode) != 0)
            return refuse(err, cap, "'%s' expects single or scatter, not '%s'", key, value);
    } else if (strcmp(field, "split") == 0) {
        char *end;
        unsigned long n = strtoul(value, &end, 10);
        if (!*value || *end || n > TG_SCATTER_PARTS_MAX)
            return refuse(err, cap, "'%s' expects a number of parts from 0 to 64, not '%s'", key,
                          value);
        r->r.split = (uint16_t)n;
    } else if (strcmp(field, "reduce") == 0) {
        if (tg_route_parse_reduce(value, &r->r) != 0)
            return refuse(err, cap, "'%s' expects concat, merge or a reducer route's name, not "
                                    "'%s'", key, value);
    } else {
        return refuse(err, cap, "'%s': unknown route field (http, call, policy, key, deadline, "
                                "window, queue, mode, split, reduce, cache, cache_errors, "
                                "private)%s", key, "");
    }
    return 0;
}

void tg_config_routes(const tg_config_t *cfg, tg_routes_t *out)
{
    memset(out, 0, sizeof(*out));
    out->auto_routes = cfg->gate_auto_routes;
    tg_route_t *d = &out->defaults;
    (void)tg_route_parse_policy(cfg->gate_policy, &d->policy);
    d->key = TG_KEY_CONN; /* by-key with no key named: one client's jobs in order */
    d->deadline_ms = cfg->gate_deadline_ms;
    d->window_ms = cfg->gate_window_ms;
    d->queue_max = cfg->gate_queue;
    for (int i = 0; i < cfg->nroutes; i++) {
        const tg_config_route_t *c = &cfg->routes[i];
        tg_route_t *r = &out->r[out->n++];
        *r = c->r;
        if (!(c->set & TG_RSET_POLICY))
            r->policy = d->policy;
        if (!(c->set & TG_RSET_KEY))
            r->key = d->key;
        if (!(c->set & TG_RSET_DEADLINE))
            r->deadline_ms = d->deadline_ms;
        if (!(c->set & TG_RSET_WINDOW))
            r->window_ms = d->window_ms;
        if (!(c->set & TG_RSET_QUEUE))
            r->queue_max = d->queue_max;
    }
}

int tg_config_set(tg_config_t *cfg, const char *key, const char *value, char *err, size_t cap)
{
    static const char *const size_units[] = { "k", "K", "m", "M", "g", "G", NULL };
    static const uint64_t size_scale[] = { 1024, 1024, 1 << 20, 1 << 20, 1 << 30, 1 << 30 };
    static const char *const time_units[] = { "ms", "s", "m", "h", NULL };
    static const uint64_t time_scale[] = { 1, 1000, 60000, 3600000 };

    if (strncmp(key, "channel.", 8) == 0)
        return set_channel_rule(cfg, key, value, err, cap);
    if (strncmp(key, "route.", 6) == 0)
        return set_route(cfg, key, value, err, cap);
    uint8_t policy;
    if (strcmp(key, "gate.policy") == 0 && tg_route_parse_policy(value, &policy) != 0)
        return refuse(err, cap, "'%s' expects round-robin, least or by-key, not '%s'", key,
                      value);
    const tg_config_key_t *k = find_key(key);
    if (!k)
        return refuse(err, cap, "unknown key '%s'%s", key, "");
    void *field = (char *)cfg + k->offset;
    uint64_t v = 0;
    const char *expect = NULL;
    switch (k->type) {
    case TG_CFG_ADDRESS: {
        struct sockaddr_storage ss;
        socklen_t len;
        bool may_be_empty = k->def[0] == '\0' || k->min == 1;
        if (strlen(value) >= k->size ||
            ((*value || !may_be_empty) && tg_addr_parse(value, &ss, &len) != 0))
            return refuse(err, cap, "'%s' expects HOST:PORT, [V6]:PORT or :PORT with a numeric "
                                    "host (or localhost) and a port up to 65535, not '%s'",
                          key, value);
        strcpy(field, value);
        return 0;
    }
    case TG_CFG_STRING:
        if (strlen(value) >= k->size)
            return refuse(err, cap, "'%s': value too long%s", key, "");
        strcpy(field, value);
        return 0;
    case TG_CFG_BOOL:
        if (strcmp(value, "true") == 0 || strcmp(value, "yes") == 0 || strcmp(value, "on") == 0)
            *(bool *)field = true;
        else if (strcmp(value, "false") == 0 || strcmp(value, "no") == 0 ||
                 strcmp(value, "off") == 0)
            *(bool *)field = false;
        else
            return refuse(err, cap, "'%s' expects true or false, not '%s'", key, value);
        return 0;
    case TG_CFG_LOG_LEVEL: {
        int lv = tg_log_level_parse(value);
        if (lv < 0)
            return refuse(err, cap, "'%s' expects error, warn, info or debug, not '%s'", key,
                        value);
        *(int *)field = lv;
        return 0;
    }
    case TG_CFG_INT:
        expect = "a whole number";
        if (!parse_scaled(value, (const char *const[]){ NULL }, NULL, false, &v))
            return refuse(err, cap, "'%s' expects a whole number, not '%s'", key, value);
        break;
    case TG_CFG_SIZE:
        expect = "a size";
        if (!parse_scaled(value, size_units, size_scale, false, &v))
            return refuse(err, cap, "'%s' expects a size such as 16k or 1m, not '%s'", key,
                          value);
        break;
    case TG_CFG_DURATION:
        expect = "a duration";
        if (!parse_scaled(value, time_units, time_scale, true, &v))
            return refuse(err, cap, "'%s' expects a duration with a unit (ms, s, m, h) such as "
                                  "10s, not '%s'", key, value);
        break;
    }
    if (v < k->min || v > k->max) {
        char range[96];
        snprintf(range, sizeof(range), "%s between %llu and %llu", expect,
                 (unsigned long long)k->min, (unsigned long long)k->max);
        snprintf(err, cap, "'%s' expects %s%s, not '%s'", key, range,
                 k->type == TG_CFG_DURATION ? " ms" : k->type == TG_CFG_SIZE ? " bytes" : "",
                 value);
        return -EINVAL;
    }
    if (k->type == TG_CFG_INT)
        *(int *)field = (int)v;
    else
        store(field, k->size, v);
    return 0;
}

void tg_config_defaults(tg_config_t *cfg)
{
    char err[256];
    memset(cfg, 0, sizeof(*cfg));
    tg_http_limits_default(&cfg->http); /* fields no key sets */
    for (const tg_config_key_t *k = tg_config_keys; k->name; k++)
        TG_ASSERT(tg_config_set(cfg, k->name, k->def, err, sizeof(err)) == 0);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

int tg_config_load(tg_config_t *cfg, const char *path, char *err, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        int e = errno;
        snprintf(err, cap, "%s: %s", path, strerror(e));
        return -e;
    }
    char line[1024], msg[512];
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f)) {
        lineno++;
        if (!strchr(line, '\n') && !feof(f)) {
            snprintf(err, cap, "%s:%d: line too long", path, lineno);
            rc = -EINVAL;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *s = trim(line);
        if (*s == '\0')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, cap, "%s:%d: expected 'key = value', got '%s'", path, lineno, s);
            rc = -EINVAL;
            break;
        }
        *eq = '\0';
        char *key = trim(s), *value = trim(eq + 1);
        if (tg_config_set(cfg, key, value, msg, sizeof(msg)) != 0) {
            snprintf(err, cap, "%s:%d: %s", path, lineno, msg);
            rc = -EINVAL;
            break;
        }
    }
    fclose(f);
    return rc;
}
