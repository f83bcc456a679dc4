/* net/gzip.c - see gzip.h. */
#include "net/gzip.h"

#include <errno.h>
#include <string.h>
#include <strings.h>

#include "core/common.h"

void tg_gzip_accept_init(tg_gzip_accept_t *a)
{
    a->gzip = a->identity = a->any = -1;
}

static bool ows(char c)
{
    return c == ' ' || c == '\t';
}

static bool named(const char *p, size_t n, const char *name)
{
    return n == strlen(name) && strncasecmp(p, name, n) == 0;
}

/* A qvalue (RFC 9110 12.4.2): "0" ["." 0*3DIGIT] or "1" ["." 0*3"0"], in
 * thousandths; -1 when malformed. */
static int qvalue(const char *p, size_t n)
{
    if (n == 0 || (p[0] != '0' && p[0] != '1'))
        return -1;
    if (n == 1)
        return p[0] == '1' ? 1000 : 0;
    if (p[1] != '.' || n > 5)
        return -1;
    int q = p[0] == '1' ? 1000 : 0, scale = 100;
    for (size_t i = 2; i < n; i++, scale /= 10) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        q += (p[i] - '0') * scale;
    }
    return q > 1000 ? -1 : q;
}

/* The weight of one element's parameters (";q=0.5"): 1000 when none, -1 when
 * a q is malformed. Other parameters are ignored. */
static int weight(const char *p, const char *end)
{
    int q = 1000;
    while (p < end) {
        while (p < end && (ows(*p) || *p == ';'))
            p++;
        const char *start = p;
        while (p < end && *p != ';')
            p++;
        const char *stop = p;
        while (stop > start && ows(stop[-1]))
            stop--;
        const char *eq = memchr(start, '=', (size_t)(stop - start));
        if (!eq)
            continue;
        const char *k_end = eq, *v = eq + 1;
        while (k_end > start && ows(k_end[-1]))
            k_end--;
        while (v < stop && ows(*v))
            v++;
        if (named(start, (size_t)(k_end - start), "q") && (q = qvalue(v, (size_t)(stop - v))) < 0)
            return -1;
    }
    return q;
}

void tg_gzip_accept_parse(tg_gzip_accept_t *a, const char *v, size_t n)
{
    const char *p = v, *end = v + n;
    while (p < end) {
        while (p < end && (ows(*p) || *p == ','))
            p++;
        const char *start = p;
        while (p < end && *p != ',')
            p++;
        const char *elem_end = p;
        const char *name_end = start;
        while (name_end < elem_end && *name_end != ';' && !ows(*name_end))
            name_end++;
        size_t len = (size_t)(name_end - start);
        if (len == 0)
            continue;
        int q = weight(name_end, elem_end);
        if (q < 0)
            continue;
        int16_t *slot = named(start, len, "gzip") || named(start, len, "x-gzip") ? &a->gzip
                        : named(start, len, "identity")                          ? &a->identity
                        : named(start, len, "*")                                 ? &a->any
                                                                                 : NULL;
        if (slot && *slot < 0)
            *slot = (int16_t)q;
    }
}

bool tg_gzip_accept_wants(const tg_gzip_accept_t *a)
{
    int gz = a->gzip >= 0 ? a->gzip : a->any >= 0 ? a->any : 0;
    int id = a->identity >= 0 ? a->identity : a->any >= 0 ? a->any : 0;
    return gz > 0 && gz >= id;
}

bool tg_gzip_type_ok(const char *content_type)
{
    static const char *const packed[] = {
        "application/octet-stream", "application/zip", "application/gzip",
        "application/x-gzip", "application/zstd", "application/x-bzip2",
        "application/x-xz", "application/x-7z-compressed", "application/vnd.rar",
        "application/x-rar-compressed", "font/woff", "font/woff2",
    };
    const char *p = content_type;
    while (ows(*p))
        p++;
    size_t n = strcspn(p, "; \t");
    if (n == 0)
        return false; /* nothing said: nothing guessed */
    if (named(p, n, "image/svg+xml"))
        return true;
    if (strncasecmp(p, "image/", 6) == 0 || strncasecmp(p, "audio/", 6) == 0 ||
        strncasecmp(p, "video/", 6) == 0)
        return false;
    for (size_t i = 0; i < TG_ARRAY_LEN(packed); i++)
        if (named(p, n, packed[i]))
            return false;
    return true;
}

/* The deflater at <level>: made once per loop, then only reset. */
static int ready(tg_gzip_t *g, int level)
{
    if (g->level == level)
        return deflateReset(&g->z) == Z_OK ? 0 : -ENOMEM;
    if (g->level)
        deflateEnd(&g->z);
    g->level = 0;
    memset(&g->z, 0, sizeof(g->z));
    /* 15 + 16: a 32 KiB window with the gzip header and trailer (RFC 1952). */
    if (deflateInit2(&g->z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    g->level = level;
    return 0;
}

int tg_gzip_compress(tg_gzip_t *g, int level, const void *p, size_t n, tg_buf_t *out,
                     tg_pool_t *pool)
{
    TG_ASSERT(level >= 1 && level <= 9);
    int rc = ready(g, level);
    if (rc != 0)
        return rc;
    z_stream *s = &g->z;
    uint8_t tmp[16384];
    const uint8_t *src = p;
    size_t left = n, produced = 0;
    int zrc;
    do {
        uInt k = left > (1u << 30) ? (1u << 30) : (uInt)left;
        s->next_in = (Bytef *)(uintptr_t)src;
        s->avail_in = k;
        src += k;
        left -= k;
        int flush = left ? Z_NO_FLUSH : Z_FINISH;
        do {
            s->next_out = tmp;
            s->avail_out = sizeof(tmp);
            zrc = deflate(s, flush);
            TG_ASSERT(zrc == Z_OK || zrc == Z_STREAM_END || zrc == Z_BUF_ERROR);
            size_t have = sizeof(tmp) - s->avail_out;
            produced += have;
            if (produced >= n) /* no smaller: stop paying for it */
                return -E2BIG;
            if (have && tg_buf_append(out, pool, tmp, have) != 0)
                return -ENOMEM;
        } while (s->avail_out == 0);
    } while (left);
    TG_DASSERT(zrc == Z_STREAM_END);
    return 0;
}

void tg_gzip_fini(tg_gzip_t *g)
{
    if (g->level)
        deflateEnd(&g->z);
    g->level = 0;
}
