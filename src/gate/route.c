/* gate/route.c - see route.h. */
#include "gate/route.h"

#include <errno.h>
#include <string.h>

bool tg_route_name_valid(const char *p, size_t n)
{
    if (n == 0 || n > TG_ROUTE_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-'))
            return false;
    }
    return true;
}

tg_route_t *tg_routes_get(tg_routes_t *t, const char *name)
{
    size_t n = strlen(name);
    if (!tg_route_name_valid(name, n))
        return NULL;
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->r[i].name, name) == 0)
            return &t->r[i];
    if (t->n == TG_ROUTES_MAX)
        return NULL;
    tg_route_t *r = &t->r[t->n++];
    *r = t->defaults;
    memcpy(r->name, name, n + 1);
    return r;
}

int tg_route_parse_policy(const char *s, uint8_t *out)
{
    if (strcmp(s, "round-robin") == 0)
        *out = TG_ROUTE_ROUND_ROBIN;
    else if (strcmp(s, "least") == 0)
        *out = TG_ROUTE_LEAST;
    else if (strcmp(s, "by-key") == 0)
        *out = TG_ROUTE_BY_KEY;
    else
        return -EINVAL;
    return 0;
}

int tg_route_parse_key(const char *s, tg_route_t *r)
{
    static const struct {
        const char *prefix;
        uint8_t     key;
    } named[] = { { "header:", TG_KEY_HEADER }, { "query:", TG_KEY_QUERY },
                  { "field:", TG_KEY_FIELD } };
    if (strcmp(s, "user") == 0 || strcmp(s, "conn") == 0) {
        r->key = s[0] == 'u' ? TG_KEY_USER : TG_KEY_CONN;
        r->key_name[0] = '\0';
        return 0;
    }
    for (size_t i = 0; i < TG_ARRAY_LEN(named); i++) {
        size_t pl = strlen(named[i].prefix), n = strlen(s) - pl;
        if (strncmp(s, named[i].prefix, pl) != 0 || n == 0 || n >= sizeof(r->key_name))
            continue;
        r->key = named[i].key;
        memcpy(r->key_name, s + pl, n + 1);
        return 0;
    }
    return -EINVAL;
}

int tg_route_parse_mode(const char *s, uint8_t *out)
{
    if (strcmp(s, "single") == 0)
        *out = TG_ROUTE_SINGLE;
    else if (strcmp(s, "scatter") == 0)
        *out = TG_ROUTE_SCATTER;
    else
        return -EINVAL;
    return 0;
}

int tg_route_parse_reduce(const char *s, tg_route_t *r)
{
    if (strcmp(s, "concat") == 0 || strcmp(s, "merge") == 0) {
        r->reduce = s[0] == 'c' ? TG_REDUCE_CONCAT : TG_REDUCE_MERGE;
        r->reducer[0] = '\0';
        return 0;
    }
    size_t n = strlen(s);
    if (!tg_route_name_valid(s, n))
        return -EINVAL;
    r->reduce = TG_REDUCE_ROUTE;
    memcpy(r->reducer, s, n + 1);
    return 0;
}

static bool auto_route(const tg_routes_t *t, tg_str_t name, tg_route_t *out)
{
    if (!t->auto_routes || !tg_route_name_valid(name.p, name.len))
        return false;
    *out = t->defaults;
    memcpy(out->name, name.p, name.len);
    out->name[name.len] = '\0';
    return true;
}

bool tg_routes_http(const tg_routes_t *t, tg_str_t path, tg_route_t *out, tg_str_t *rest)
{
    const tg_route_t *best = NULL;
    size_t best_len = 0;
    for (int i = 0; i < t->n; i++) {
        size_t n = strlen(t->r[i].prefix);
        if (n && n > best_len && path.len >= n && memcmp(path.p, t->r[i].prefix, n) == 0) {
            best = &t->r[i];
            best_len = n;
        }
    }
    if (best) {
        *out = *best;
        /* The rest keeps its leading '/': a prefix "/api/orders/" leaves "/12". */
        size_t keep = best->prefix[best_len - 1] == '/' ? best_len - 1 : best_len;
        *rest = (tg_str_t){ path.p + keep, path.len - keep };
        if (rest->len == 0)
            *rest = (tg_str_t){ "/", 1 };
        return true;
    }
    size_t pl = strlen(TG_ROUTE_AUTO_PREFIX);
    if (path.len <= pl || memcmp(path.p, TG_ROUTE_AUTO_PREFIX, pl) != 0)
        return false;
    const char *name = path.p + pl, *end = path.p + path.len;
    const char *slash = memchr(name, '/', (size_t)(end - name));
    tg_str_t n = { name, (size_t)((slash ? slash : end) - name) };
    tg_route_t named;
    if (tg_routes_named(t, n, &named)) {
        if (named.prefix[0] || !t->auto_routes)
            return false; /* configured with a prefix: only that one leads to it */
        *out = named;
    } else if (!auto_route(t, n, out)) {
        return false;
    }
    *rest = slash ? (tg_str_t){ slash, (size_t)(end - slash) } : (tg_str_t){ "/", 1 };
    return true;
}

bool tg_routes_call(const tg_routes_t *t, tg_str_t name, tg_route_t *out)
{
    for (int i = 0; i < t->n; i++) {
        if (strlen(t->r[i].call) == name.len && memcmp(t->r[i].call, name.p, name.len) == 0) {
            *out = t->r[i];
            return true;
        }
    }
    tg_route_t named;
    if (tg_routes_named(t, name, &named)) {
        if (named.call[0])
            return false; /* reached by its own call name only */
        *out = named;
        return true;
    }
    return auto_route(t, name, out);
}

bool tg_routes_named(const tg_routes_t *t, tg_str_t name, tg_route_t *out)
{
    for (int i = 0; i < t->n; i++) {
        if (strlen(t->r[i].name) == name.len && memcmp(t->r[i].name, name.p, name.len) == 0) {
            *out = t->r[i];
            return true;
        }
    }
    return false;
}
