/* app/config.h - tidegate's settings: embedded defaults, then a config file,
 * then command-line flags, each overriding the one before. One table lists
 * every key with its type, bounds, default and a line of help: the parser, the
 * defaults, --help and docs/configuration.md all read from it. Boot thread. */
#ifndef TG_APP_CONFIG_H
#define TG_APP_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gate/route.h"
#include "net/http.h"
#include "push/push.h"

/* Per channel-name pattern overrides: "channel.PATTERN.FIELD = value" lines,
 * FIELD one of history_len, history_age, mode (all or latest), client_publish.
 * The first pattern (in order of first appearance) that matches a channel
 * wins; fields a rule does not set come from push.*. */
enum { TG_RULE_LEN = 1, TG_RULE_AGE = 2, TG_RULE_MODE = 4, TG_RULE_PUBLISH = 8 };
typedef struct tg_config_rule {
    char           pattern[TG_CHAN_NAME_MAX + 1];
    uint8_t        set; /* TG_RULE_* bits */
    tg_chan_opts_t opts;
} tg_config_rule_t;

/* Per route settings: "route.NAME.FIELD = value" lines, FIELD one of http
 * (path prefix), call (call name), policy, key, deadline, window, queue,
 * cache (a TTL), cache_errors, private.
 * Fields a route does not set come from gate.*. */
enum { TG_RSET_POLICY = 1, TG_RSET_KEY = 2, TG_RSET_DEADLINE = 4, TG_RSET_WINDOW = 8,
       TG_RSET_QUEUE = 16 };
typedef struct tg_config_route {
    tg_route_t r;
    uint8_t    set; /* TG_RSET_* bits */
} tg_config_route_t;

typedef struct tg_config {
    char             listen[128];
    int              io_threads;    /* 0: one per core */
    int              workers;
    bool             reuseport;
    int              backlog;
    bool             io_uring;      /* batch sends when the kernel allows */
    uint32_t         sndbuf;        /* SO_SNDBUF of client sockets; 0: autotuned */
    int              log_level;     /* tg_log_level_t */
    char             log_file[256]; /* empty: stderr */
    uint32_t         shutdown_grace_ms;
    tg_http_limits_t http;
    uint32_t         push_history_len;    /* messages kept per channel */
    uint32_t         push_history_age_ms; /* 0: no age limit */
    bool             push_client_publish; /* clients may publish over their connection */
    uint64_t         push_max_output;     /* slow consumer cap per connection */
    uint32_t         push_coalesce_ms;    /* hold broadcast output this long; 0: never */
    uint32_t         push_coalesce_busy_ms; /* ... this long while a loop is busy; 0: never */
    uint32_t         push_coalesce_above; /* broadcast writes/s that make a loop busy */
    uint64_t         ws_max_message;
    uint32_t         ws_ping_ms;          /* 0: no pings */
    uint32_t         sse_heartbeat_ms;    /* 0: no heartbeat comments */
    uint32_t         poll_timeout_ms;     /* long-poll answered 204 after this */
    char             frames_listen[128];  /* TCP frames listener; empty: none */
    uint32_t         frames_max;          /* body bytes of one frame */
    uint32_t         frames_idle_ms;      /* ping a silent frames client after this */
    int              nrules;
    tg_config_rule_t rules[TG_CHAN_RULES_MAX];
    char             gate_listen[128];   /* backend listener; empty: none */
    char             gate_backends[1024]; /* backends to dial, HOST:PORT,... */
    bool             gate_auto_routes;
    char             gate_policy[16];
    uint32_t         gate_deadline_ms;
    uint32_t         gate_window_ms;
    uint32_t         gate_queue;
    uint32_t         gate_max_frame;
    uint32_t         gate_lz4_min;
    uint32_t         gate_ping_ms;
    uint64_t         gate_cache_size;    /* bytes the reply cache may hold */
    char             admin_key[128];     /* admin endpoints' bearer key; empty: local peers only */
    int              nroutes;
    tg_config_route_t routes[TG_ROUTES_MAX];
} tg_config_t;

typedef enum tg_config_type {
    TG_CFG_STRING,
    TG_CFG_ADDRESS,  /* HOST:PORT, [V6]:PORT or :PORT, numeric; empty allowed when min is 1 */
    TG_CFG_INT,
    TG_CFG_BOOL,
    TG_CFG_SIZE,     /* bytes, with optional k, m or g (KiB, MiB, GiB) */
    TG_CFG_DURATION, /* with a unit: ms, s, m, h */
    TG_CFG_LOG_LEVEL,
} tg_config_type_t;

typedef struct tg_config_key {
    const char      *name;
    tg_config_type_t type;
    size_t           offset;
    size_t           size;  /* of the field */
    uint64_t         min, max;
    const char      *def;   /* default, as written in a file */
    const char      *help;
} tg_config_key_t;

/* The table, NULL-name terminated. */
extern const tg_config_key_t tg_config_keys[];

/* Every key at its default. */
void tg_config_defaults(tg_config_t *cfg);
/* Per-pattern channel options resolved against the push.* defaults, into
 * <out> (TG_CHAN_RULES_MAX entries); returns how many. */
int  tg_config_chan_rules(const tg_config_t *cfg, tg_chan_opts_t *defaults, tg_chan_rule_t *out);
/* The route table: configured routes with gate.* filling what they leave unset. */
void tg_config_routes(const tg_config_t *cfg, tg_routes_t *out);
/* Sets <key> from its text form. Returns 0, or -EINVAL with a message in <err>
 * ("unknown key", "expects a duration such as 10s", ...). */
int  tg_config_set(tg_config_t *cfg, const char *key, const char *value, char *err, size_t cap);
/* Reads "key = value" lines ('#' comments, blank lines) from <path>. Returns 0,
 * or -EINVAL / a negative errno with "PATH:LINE: message" in <err>. */
int  tg_config_load(tg_config_t *cfg, const char *path, char *err, size_t cap);

#endif
