/* gate/route.h - routes: which client requests go to which backend group, and
 * how. A route has a name (the group: backends list it in their HELLO), an
 * HTTP path prefix and a call name that lead to it, a deadline, a window
 * (how long jobs wait for a backend to connect), a queue limit and a dispatch
 * policy, and whether its replies are cached (gate/cache.h).
 *
 * The table is built at boot and read-only afterwards: every IO loop matches
 * against it without locks. With auto routes on, a path "/api/NAME/..." or a
 * call "NAME" not in the table leads to a route NAME with the defaults; the
 * gate answers 404 when no backend ever served it. */
#ifndef TG_GATE_ROUTE_H
#define TG_GATE_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"

#define TG_ROUTES_MAX      64
#define TG_ROUTE_NAME_MAX  48   /* bytes of a route name, without the NUL */
#define TG_ROUTE_PREFIX_MAX 128
#define TG_ROUTE_AUTO_PREFIX "/api/"
#define TG_SCATTER_PARTS_MAX 64 /* parts of one scatter job */

typedef enum tg_route_policy {
    TG_ROUTE_ROUND_ROBIN = 0,
    TG_ROUTE_LEAST,  /* the backend with the fewest jobs in flight */
    TG_ROUTE_BY_KEY, /* jobs of one key one after another, in arrival order */
} tg_route_policy_t;

typedef enum tg_route_key {
    TG_KEY_NONE = 0,
    TG_KEY_HEADER, /* a request header (HTTP) */
    TG_KEY_QUERY,  /* a query-string field (HTTP) */
    TG_KEY_USER,   /* the user the connection is bound to */
    TG_KEY_CONN,   /* the client connection */
    TG_KEY_FIELD,  /* a top-level member of a call's data */
} tg_route_key_t;

/* How a route's job reaches its group: one backend, or every backend (or one
 * part of the request each) with the replies reduced into one. */
typedef enum tg_route_mode { TG_ROUTE_SINGLE = 0, TG_ROUTE_SCATTER } tg_route_mode_t;

typedef enum tg_route_reduce {
    TG_REDUCE_CONCAT = 0, /* parts are JSON arrays: one array, in part order */
    TG_REDUCE_MERGE,      /* parts are JSON objects: one object, later parts win */
    TG_REDUCE_ROUTE,      /* the parts go to a reducer route, whose reply is the answer */
} tg_route_reduce_t;

typedef struct tg_route {
    char     name[TG_ROUTE_NAME_MAX + 1];
    char     prefix[TG_ROUTE_PREFIX_MAX + 1]; /* HTTP path prefix; "" for none */
    char     call[TG_ROUTE_NAME_MAX + 1];     /* call name; "" for none */
    uint8_t  policy;                          /* tg_route_policy_t */
    uint8_t  key;                             /* tg_route_key_t, by-key routes */
    char     key_name[64];                    /* header, query or data field name */
    uint32_t deadline_ms;                     /* client waits at most this long */
    uint32_t window_ms;                       /* jobs wait for a backend this long */
    uint32_t queue_max;                       /* jobs waiting, at most; then 503 */
    uint32_t cache_ttl_ms;                    /* replies kept this long; 0: no cache */
    bool     cache_errors;                    /* errors and non-2xx replies cached too */
    bool     cache_private;                   /* the user is part of the key */
    uint8_t  mode;                            /* tg_route_mode_t */
    uint8_t  reduce;                          /* tg_route_reduce_t, scatter routes */
    uint16_t split;                           /* scatter: parts of the body's array; 0: none */
    char     reducer[TG_ROUTE_NAME_MAX + 1];  /* TG_REDUCE_ROUTE: the reducer route */
} tg_route_t;

typedef struct tg_routes {
    int        n;
    tg_route_t r[TG_ROUTES_MAX];
    bool       auto_routes;
    tg_route_t defaults; /* name and prefix empty: what auto routes and unset fields get */
} tg_routes_t;

/* Whether replies on <r> are cached. Not a scatter's: its parts are jobs of
 * their own, and its one answer is made by the gate, never stored. */
static inline bool tg_route_caches(const tg_route_t *r)
{
    return r->cache_ttl_ms && r->mode != TG_ROUTE_SCATTER;
}

/* Whether <p>,<n> is a route name: 1..TG_ROUTE_NAME_MAX of [A-Za-z0-9_.-]. */
bool tg_route_name_valid(const char *p, size_t n);

/* Boot thread. The route named <name>, added with the defaults if new; NULL
 * when the table is full or the name is not valid. */
tg_route_t *tg_routes_get(tg_routes_t *t, const char *name);

/* Parses "round-robin", "least" or "by-key". Returns 0 or -EINVAL. */
int tg_route_parse_policy(const char *s, uint8_t *out);
/* Parses "header:NAME", "query:NAME", "field:NAME", "user" or "conn". */
int tg_route_parse_key(const char *s, tg_route_t *r);
/* Parses "single" or "scatter". */
int tg_route_parse_mode(const char *s, uint8_t *out);
/* Parses "concat", "merge" or a reducer route's name. */
int tg_route_parse_reduce(const char *s, tg_route_t *r);

/* Any thread. The route an HTTP path leads to, copied into <out>, with the
 * path after the prefix (starting with '/') in <rest>; false when none. The
 * longest matching prefix wins. */
bool tg_routes_http(const tg_routes_t *t, tg_str_t path, tg_route_t *out, tg_str_t *rest);
/* Any thread. The route a call name leads to, copied into <out>. */
bool tg_routes_call(const tg_routes_t *t, tg_str_t name, tg_route_t *out);
/* Any thread. The route named <name> (configured, or an auto route). */
bool tg_routes_named(const tg_routes_t *t, tg_str_t name, tg_route_t *out);

#endif
