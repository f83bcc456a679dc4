/* net/http.c - HTTP/1.1 server connections. See http.h.
 *
 *  IDLE --first byte--> HEAD --headers done--> BODY --message done--> DONE
 *    ^                                                                  |
 *    +-------------- response queued (keep-alive) ---------------------+
 *  Any phase --limit, malformed, timeout--> error response, close after flush.
 *
 * llhttp is paused at the end of the headers and at the end of each message,
 * so that checks and handlers run outside its callbacks and the exact byte
 * count of the header section is known. */
#include "net/http.h"

#include <ctype.h>
#include <errno.h>
#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/log.h"

/* A request head starts in a small block and moves to a large one (sized by the
 * limits) only when it outgrows it: most heads are a few hundred bytes. */
#define SMALL_TEXT     2048
#define SMALL_HEADERS  32
#define STATES_KEPT    256
#define HEADS_KEPT     64

enum phase { PH_IDLE, PH_HEAD, PH_BODY, PH_DONE };
enum event { EV_NONE, EV_HEADERS, EV_MESSAGE };

typedef struct http_conn {
    llhttp_t          parser;
    tg_http_server_t *srv;
    tg_conn_t        *conn;
    tg_http_req_t     req;
    char             *head;       /* text, then the header index; NULL until needed */
    uint32_t          head_cap;   /* text bytes the block holds */
    uint32_t          hdr_cap;    /* index entries the block holds */
    bool              head_large; /* the block is from the large pool */
    uint32_t          head_len;   /* text bytes stored */
    uint32_t          head_raw;   /* wire bytes of the head so far */
    uint32_t          url_len;
    uint32_t          nheaders;
    uint32_t          field_off;  /* where the header being parsed begins */
    uint32_t          value_off;
    tg_buf_t          body;
    uint64_t          body_len;
    tg_buf_t          pending;    /* read but not parsed: waiting for output to drain */
    uint8_t           phase;
    uint8_t           event;
    uint8_t           error;      /* tg_close_t raised inside a callback */
    bool              expect_continue;
    bool              close_after;
    bool              responded;
    bool              waiting;    /* reads paused until output drains or a deferred answer */
    bool              deferred;   /* the handler answers later */
    bool              in_dispatch; /* the handler is running */
    bool              head_dropped; /* deferred: the head block went back to its pool */
    bool              gzip_ok;      /* then: what its Accept-Encoding said */
    tg_http_abort_cb *abort;      /* told if the connection closes first */
    void             *abort_arg;
    const tg_proto_t *takeover;   /* the protocol the connection switches to */
    void             *takeover_data;
} http_conn_t;

static bool finish_request(http_conn_t *hc);
static void hand_over(http_conn_t *hc, const char *p, size_t n);
static void answered_later(http_conn_t *hc);
static void replay_pending(http_conn_t *hc);
static void http_data(tg_conn_t *c, const char *p, size_t n);
static void settle(tg_conn_t *c);

static tg_http_server_t *server_of(tg_conn_t *c)
{
    return c->proto->ctx;
}

static tg_http_loop_t *loop_of(http_conn_t *hc)
{
    return &hc->srv->loops[hc->conn->loop->id];
}

static tg_http_header_t *index_of(http_conn_t *hc)
{
    return (tg_http_header_t *)(void *)(hc->head + hc->head_cap);
}

void tg_http_limits_default(tg_http_limits_t *l)
{
    l->max_uri = 8192;
    l->max_header_size = 16384;
    l->max_headers = 100;
    l->max_body = 1024 * 1024;
    l->header_timeout_ms = 10000;
    l->body_timeout_ms = 30000;
    l->keepalive_timeout_ms = 75000;
    l->send_timeout_ms = 60000;
    l->max_out = 256 * 1024;
    l->gzip_min = 128;
    l->gzip_level = 1;
}

const char *tg_http_reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 426: return "Upgrade Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default:  return "Unknown";
    }
}

/* ---- head storage ---- */

/* A large block is the small one grown: never smaller than it. */
static uint32_t large_text(const tg_http_limits_t *l)
{
    return l->max_header_size > SMALL_TEXT ? l->max_header_size : SMALL_TEXT;
}

static uint32_t large_headers(const tg_http_limits_t *l)
{
    return l->max_headers > SMALL_HEADERS ? l->max_headers : SMALL_HEADERS;
}

static size_t large_block(const tg_http_limits_t *l)
{
    return large_text(l) + (size_t)large_headers(l) * sizeof(tg_http_header_t);
}

/* Makes room for <n> more text bytes or one more index entry (<n> = 0).
 * Returns 0, or the tg_close_t that refuses the request. */
static int head_room(http_conn_t *hc, size_t n, int too_large)
{
    const tg_http_limits_t *lim = &hc->srv->limits;
    tg_http_loop_t *hl = loop_of(hc);
    if (hc->head_len + n <= hc->head_cap && hc->nheaders < hc->hdr_cap)
        return 0;
    if (hc->head_len + n > lim->max_header_size)
        return too_large;
    if (hc->nheaders >= lim->max_headers)
        return TG_CLOSE_HEADER_TOO_LARGE;
    if (hc->head_large)
        return too_large;
    /* Outgrew the small block: move to a large one. The index holds offsets
     * until dispatch, so moving is a plain copy. */
    char *big = tg_pool_take(&hl->heads);
    if (!big)
        return TG_CLOSE_NOMEM;
    memcpy(big, hc->head, hc->head_len);
    memcpy(big + large_text(lim), index_of(hc), hc->nheaders * sizeof(tg_http_header_t));
    tg_pool_give(&hl->small_heads, hc->head);
    hc->head = big;
    hc->head_large = true;
    hc->head_cap = large_text(lim);
    hc->hdr_cap = large_headers(lim);
    return 0;
}

static void head_release(http_conn_t *hc)
{
    if (!hc->head)
        return;
    tg_http_loop_t *hl = loop_of(hc);
    tg_pool_give(hc->head_large ? &hl->heads : &hl->small_heads, hc->head);
    hc->head = NULL;
    hc->head_large = false;
    hc->head_cap = hc->hdr_cap = 0;
}

static int head_append(http_conn_t *hc, const char *p, size_t n, int too_large)
{
    int rc = head_room(hc, n, too_large);
    if (rc != 0)
        return rc;
    memcpy(hc->head + hc->head_len, p, n);
    hc->head_len += (uint32_t)n;
    return 0;
}

/* ---- llhttp callbacks: record, check limits, pause at the two events ---- */

static int raise_error(http_conn_t *hc, int reason)
{
    if (!hc->error)
        hc->error = (uint8_t)reason;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    http_conn_t *hc = p->data;
    hc->phase = PH_HEAD;
    if (!hc->head) {
        hc->head = tg_pool_take(&loop_of(hc)->small_heads);
        if (!hc->head)
            return raise_error(hc, TG_CLOSE_NOMEM);
        hc->head_cap = SMALL_TEXT;
        hc->hdr_cap = SMALL_HEADERS;
    }
    tg_conn_timer_arm(hc->conn, hc->srv->limits.header_timeout_ms);
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    if (hc->url_len + n > hc->srv->limits.max_uri)
        return raise_error(hc, TG_CLOSE_URI_TOO_LONG);
    int rc = head_append(hc, at, n, TG_CLOSE_URI_TOO_LONG);
    if (rc)
        return raise_error(hc, rc);
    hc->url_len += (uint32_t)n;
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    http_conn_t *hc = p->data;
    hc->field_off = hc->head_len;
    return 0;
}

static int on_header_text(llhttp_t *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    int rc = head_append(hc, at, n, TG_CLOSE_HEADER_TOO_LARGE);
    return rc ? raise_error(hc, rc) : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    http_conn_t *hc = p->data;
    if (hc->nheaders >= hc->srv->limits.max_headers)
        return raise_error(hc, TG_CLOSE_HEADER_TOO_LARGE);
    int rc = head_room(hc, 0, TG_CLOSE_HEADER_TOO_LARGE);
    if (rc)
        return raise_error(hc, rc);
    hc->value_off = hc->head_len;
    return 0;
}

static bool token_eq(const char *p, size_t n, const char *lit)
{
    return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

/* RFC 9112 6.1: a server that does not understand a transfer coding answers 501.
 * tidegate decodes chunked only. */
static bool only_chunked(const char *v, size_t n)
{
    size_t i = 0;
    while (i < n) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t' && v[i] != ';')
            i++;
        if (i > start && !token_eq(v + start, i - start, "chunked"))
            return false;
        while (i < n && v[i] != ',') /* parameters are not for chunked either */
            if (v[i++] == ';')
                return false;
    }
    return true;
}

static int on_header_value_complete(llhttp_t *p)
{
    http_conn_t *hc = p->data;
    tg_http_header_t *h = &index_of(hc)[hc->nheaders++];
    /* Offsets until dispatch (the block may still move); see resolve_headers. */
    h->name.p = (const char *)(uintptr_t)hc->field_off;
    h->name.len = hc->value_off - hc->field_off;
    h->value.p = (const char *)(uintptr_t)hc->value_off;
    h->value.len = hc->head_len - hc->value_off;
    const char *name = hc->head + hc->field_off, *value = hc->head + hc->value_off;
    if (token_eq(name, h->name.len, "transfer-encoding") && !only_chunked(value, h->value.len))
        return raise_error(hc, TG_CLOSE_UNSUPPORTED_TE);
    if (token_eq(name, h->name.len, "expect")) {
        if (!token_eq(value, h->value.len, "100-continue"))
            return raise_error(hc, TG_CLOSE_EXPECTATION_FAILED);
        hc->expect_continue = true;
    }
    hc->field_off = hc->head_len;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    http_conn_t *hc = p->data;
    hc->event = EV_HEADERS;
    return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t n)
{
    http_conn_t *hc = p->data;
    if (hc->body_len + n > hc->srv->limits.max_body)
        return raise_error(hc, TG_CLOSE_BODY_TOO_LARGE);
    if (tg_buf_append(&hc->body, &hc->conn->loop->chunks, at, n) != 0)
        return raise_error(hc, TG_CLOSE_NOMEM);
    hc->body_len += n;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    http_conn_t *hc = p->data;
    hc->event = EV_MESSAGE;
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_url_complete = on_url_complete,
    .on_header_field = on_header_text,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value = on_header_text,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---- connection state ---- */

static http_conn_t *state_take(tg_conn_t *c)
{
    tg_http_server_t *srv = c->proto->ctx;
    http_conn_t *hc = tg_pool_take(&srv->loops[c->loop->id].states);
    if (!hc)
        return NULL;
    memset(hc, 0, sizeof(*hc));
    llhttp_init(&hc->parser, HTTP_REQUEST, &parser_settings);
    hc->parser.data = hc;
    hc->srv = srv;
    hc->conn = c;
    c->data = hc;
    return hc;
}

static void request_reset(http_conn_t *hc)
{
    tg_buf_clear(&hc->body, &hc->conn->loop->chunks);
    hc->body_len = 0;
    hc->head_len = hc->head_raw = hc->url_len = hc->nheaders = 0;
    hc->field_off = hc->value_off = 0;
    hc->expect_continue = false;
    hc->responded = false;
    hc->deferred = false;
    hc->head_dropped = false;
    hc->abort = NULL;
    hc->event = EV_NONE;
    hc->phase = PH_IDLE;
}

static void state_give(tg_conn_t *c)
{
    http_conn_t *hc = c->data;
    if (!hc)
        return;
    tg_pool_t *chunks = &c->loop->chunks;
    tg_buf_clear(&hc->body, chunks);
    tg_buf_clear(&hc->pending, chunks);
    head_release(hc);
    tg_pool_give(&loop_of(hc)->states, hc);
    c->data = NULL;
}

/* ---- responses ---- */

static const char *date_line(tg_http_loop_t *hl)
{
    time_t now = time(NULL);
    if (now != hl->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(hl->date, sizeof(hl->date), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        hl->date_sec = now;
    }
    return hl->date;
}

/* Whether header lines <extra> (each ending in CRLF) include one named <name>
 * whose value holds <token> (NULL: any value). Case-insensitive. */
static bool extra_has(const char *extra, const char *name, const char *token)
{
    size_t nlen = strlen(name);
    for (const char *line = extra; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        size_t len = eol ? (size_t)(eol - line) : strlen(line);
        if (len > nlen && line[nlen] == ':' && strncasecmp(line, name, nlen) == 0) {
            if (!token)
                return true;
            size_t tlen = strlen(token);
            for (const char *v = line + nlen + 1; v + tlen <= line + len; v++)
                if (strncasecmp(v, token, tlen) == 0)
                    return true;
        }
        line = eol ? eol + 2 : line + len;
    }
    return false;
}

/* Whether the client takes gzip: every Accept-Encoding line read together. */
static bool accepts_gzip(const tg_http_req_t *req)
{
    tg_gzip_accept_t a;
    tg_gzip_accept_init(&a);
    for (unsigned i = 0; i < req->nheaders; i++) {
        const tg_http_header_t *h = &req->headers[i];
        if (h->name.len == 15 && strncasecmp(h->name.p, "accept-encoding", 15) == 0)
            tg_gzip_accept_parse(&a, h->value.p, h->value.len);
    }
    return tg_gzip_accept_wants(&a);
}

/* Whether this response could be gzipped, were it asked for. No-transform
 * (RFC 9111 5.2.2.6) is a backend's way of saying no. */
static bool gzip_eligible(const tg_http_limits_t *lim, int status, const char *content_type,
                          const char *extra, size_t len)
{
    return lim->gzip_level > 0 && len > 0 && len >= lim->gzip_min && status >= 200 &&
           status != 204 && status != 304 && tg_gzip_type_ok(content_type) &&
           !extra_has(extra, "content-encoding", NULL) &&
           !extra_has(extra, "cache-control", "no-transform");
}

void tg_http_respond(tg_http_req_t *req, int status, const char *content_type, const char *extra,
                     const void *body, size_t len)
{
    http_conn_t *hc = tg_container_of(req, http_conn_t, req);
    tg_conn_t *c = hc->conn;
    tg_http_loop_t *hl = loop_of(hc);
    const tg_http_limits_t *lim = &hc->srv->limits;
    TG_ASSERT(!hc->responded);
    hc->responded = true;
    if (!req->keep_alive)
        hc->close_after = true;
    const char *conn_hdr = hc->close_after ? "Connection: close\r\n"
                           : req->minor == 0 ? "Connection: keep-alive\r\n" : "";
    /* HEAD is not compressed (its length would cost the compression), but
     * says Vary like the GET it stands for. */
    bool vary = gzip_eligible(lim, status, content_type, extra, len);
    tg_buf_t gz = TG_BUF_INIT;
    bool gzipped = false;
    if (vary && !req->head && (hc->head_dropped ? hc->gzip_ok : accepts_gzip(req))) {
        int rc = tg_gzip_compress(&hl->gzip, lim->gzip_level, body, len, &gz, &c->loop->chunks);
        gzipped = rc == 0;
        if (!gzipped)
            tg_buf_clear(&gz, &c->loop->chunks); /* not smaller, or short of memory: as is */
    }
    const char *coding = gzipped ? "Content-Encoding: gzip\r\nVary: Accept-Encoding\r\n"
                         : vary  ? "Vary: Accept-Encoding\r\n"
                                 : "";
    char head[512];
    int n;
    if (status == 204 || status == 304) /* RFC 9110 8.6: no body, no length */
        n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nServer: %s\r\n%s%s", status,
                     tg_http_reason(status), hc->srv->server_name, date_line(hl), conn_hdr);
    else
        n = snprintf(head, sizeof(head),
                     "HTTP/1.1 %d %s\r\nServer: %s\r\n%sContent-Type: %s\r\n"
                     "Content-Length: %zu\r\n%s%s",
                     status, tg_http_reason(status), hc->srv->server_name, date_line(hl),
                     content_type, gzipped ? gz.len : len, coding, conn_hdr);
    if (n < 0 || (size_t)n >= sizeof(head)) {
        n = snprintf(head, sizeof(head), "HTTP/1.1 500 Internal Server Error\r\n"
                                         "Content-Length: 0\r\nConnection: close\r\n");
        gzipped = false;
        len = 0;
        extra = NULL;
    }
    if (tg_conn_write(c, head, (size_t)n) != 0)
        goto done;
    if (extra && tg_conn_write(c, extra, strlen(extra)) != 0)
        goto done;
    if (tg_conn_write(c, "\r\n", 2) != 0)
        goto done;
    if (gzipped) {
        tg_counter_add(&hl->gzip_before, len);
        tg_counter_add(&hl->gzip_after, gz.len);
        struct iovec iov;
        while (!tg_buf_empty(&gz)) {
            tg_buf_iov(&gz, &iov, 1);
            if (tg_conn_write(c, iov.iov_base, iov.iov_len) != 0)
                goto done;
            tg_buf_consume(&gz, &c->loop->chunks, iov.iov_len);
        }
    } else if (!req->head && len > 0 && status != 204 && status != 304) {
        (void)tg_conn_write(c, body, len);
    }
    tg_counter_add(&hl->responses[status / 100 <= 5 ? status / 100 : 0], 1);
    if (hc->deferred) {
        hc->deferred = false;
        hc->abort = NULL;
        /* Answered before the handler even returned: the usual path goes on. */
        if (!hc->in_dispatch)
            answered_later(hc);
    }
done:
    tg_buf_clear(&gz, &c->loop->chunks);
}

void tg_http_respond_head(tg_http_req_t *req, int status, const char *extra)
{
    http_conn_t *hc = tg_container_of(req, http_conn_t, req);
    tg_http_loop_t *hl = loop_of(hc);
    TG_ASSERT(!hc->responded);
    hc->responded = true;
    char head[256];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nServer: %s\r\n%s", status,
                     tg_http_reason(status), hc->srv->server_name, date_line(hl));
    if (tg_conn_write(hc->conn, head, (size_t)n) != 0)
        return;
    if (extra && tg_conn_write(hc->conn, extra, strlen(extra)) != 0)
        return;
    (void)tg_conn_write(hc->conn, "\r\n", 2);
    tg_counter_add(&hl->responses[status / 100 <= 5 ? status / 100 : 0], 1);
}

void tg_http_defer(tg_http_req_t *req, tg_http_abort_cb *abort, void *arg)
{
    http_conn_t *hc = tg_container_of(req, http_conn_t, req);
    hc->deferred = true;
    hc->abort = abort;
    hc->abort_arg = arg;
}

void *tg_http_deferred(const tg_conn_t *c, tg_http_abort_cb *abort)
{
    if (c->proto->on_data != http_data || !c->data)
        return NULL;
    const http_conn_t *hc = c->data;
    if (!hc->deferred || hc->responded || hc->abort != abort)
        return NULL;
    return hc->abort_arg;
}

void tg_http_takeover(tg_http_req_t *req, const tg_proto_t *proto, void *data)
{
    http_conn_t *hc = tg_container_of(req, http_conn_t, req);
    TG_ASSERT(hc->responded && !hc->deferred);
    hc->takeover = proto;
    hc->takeover_data = data;
}

const tg_str_t *tg_http_header(const tg_http_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (unsigned i = 0; i < req->nheaders; i++)
        if (req->headers[i].name.len == n && strncasecmp(req->headers[i].name.p, name, n) == 0)
            return &req->headers[i].value;
    return NULL;
}

bool tg_http_header_has(const tg_http_req_t *req, const char *name, const char *token)
{
    size_t tlen = strlen(token), nlen = strlen(name);
    for (unsigned i = 0; i < req->nheaders; i++) {
        const tg_http_header_t *h = &req->headers[i];
        if (h->name.len != nlen || strncasecmp(h->name.p, name, nlen) != 0)
            continue;
        const char *v = h->value.p, *end = v + h->value.len;
        while (v < end) {
            while (v < end && (*v == ' ' || *v == '\t' || *v == ','))
                v++;
            const char *start = v;
            while (v < end && *v != ',')
                v++;
            const char *stop = v;
            while (stop > start && (stop[-1] == ' ' || stop[-1] == '\t'))
                stop--;
            if ((size_t)(stop - start) == tlen && strncasecmp(start, token, tlen) == 0)
                return true;
        }
    }
    return false;
}

/* Refuses the request in progress with its status (if any), then closes. */
static void fail(http_conn_t *hc, int reason)
{
    tg_conn_t *c = hc->conn;
    const tg_close_info_t *info = tg_close_info(reason);
    tg_log_info("http: closing %s connection %llx: %s", info->error ? "faulty" : "idle",
                (unsigned long long)tg_conn_id(c), info->name);
    if (info->http_status && !hc->responded) {
        char body[96];
        int n = snprintf(body, sizeof(body), "%d %s\n", info->http_status,
                         tg_http_reason(info->http_status));
        hc->close_after = true;
        tg_http_req_t req = { .conn = c, .minor = 1, .keep_alive = false };
        hc->req = req;
        tg_http_respond(&hc->req, info->http_status, "text/plain", NULL, body, (size_t)n);
    }
    tg_conn_close_after_flush(c, reason);
}

static int map_parser_error(http_conn_t *hc, enum llhttp_errno e)
{
    if (hc->error)
        return hc->error;
    switch (e) {
    case HPE_INVALID_TRANSFER_ENCODING:
        return TG_CLOSE_UNSUPPORTED_TE;
    default:
        return TG_CLOSE_BAD_REQUEST;
    }
}

/* Turns the index's offsets into pointers: the block stays put from here on. */
static void resolve_headers(http_conn_t *hc)
{
    tg_http_header_t *h = index_of(hc);
    for (uint32_t i = 0; i < hc->nheaders; i++) {
        h[i].name.p = hc->head + (uintptr_t)h[i].name.p;
        h[i].value.p = hc->head + (uintptr_t)h[i].value.p;
    }
}

/* A deferred request may wait long (a long-poll): its head block (2 KiB and
 * more) goes back to the pool once the handler has returned, and the request
 * keeps its scalars only. */
static void drop_head(http_conn_t *hc)
{
    tg_http_req_t *r = &hc->req;
    hc->gzip_ok = accepts_gzip(r);
    hc->head_dropped = true;
    r->target = r->path = r->query = (tg_str_t){ "", 0 };
    r->headers = NULL;
    r->nheaders = 0;
    head_release(hc);
    hc->head_len = hc->url_len = hc->nheaders = 0;
}

static void dispatch(http_conn_t *hc)
{
    tg_http_req_t *r = &hc->req;
    llhttp_t *p = &hc->parser;
    memset(r, 0, sizeof(*r));
    r->conn = hc->conn;
    r->method_id = p->method;
    r->method = llhttp_method_name(p->method);
    r->major = p->http_major;
    r->minor = p->http_minor;
    r->keep_alive = llhttp_should_keep_alive(p) && !p->upgrade;
    r->head = p->method == HTTP_HEAD;
    r->target = (tg_str_t){ hc->head, hc->url_len };
    const char *q = memchr(hc->head, '?', hc->url_len);
    r->path = (tg_str_t){ hc->head, q ? (size_t)(q - hc->head) : hc->url_len };
    r->query = q ? (tg_str_t){ q + 1, hc->url_len - (size_t)(q - hc->head) - 1 }
                 : (tg_str_t){ hc->head + hc->url_len, 0 };
    r->headers = index_of(hc);
    r->nheaders = hc->nheaders;
    r->body = &hc->body;
    tg_counter_add(&loop_of(hc)->requests, 1);
    hc->in_dispatch = true;
    hc->srv->handler(r, hc->srv->arg);
    hc->in_dispatch = false;
    if (!hc->responded && !hc->deferred && tg_conn_open(hc->conn)) {
        static const char msg[] = "500 no response\n";
        tg_http_respond(r, 500, "text/plain", NULL, msg, sizeof(msg) - 1);
    } else if (hc->deferred && !hc->responded && tg_conn_open(hc->conn)) {
        drop_head(hc);
    }
}


/* Acts on a pause of the parser. Returns false when the bytes after it must
 * not be parsed now (closing, or waiting). */
static bool on_event(http_conn_t *hc)
{
    const tg_http_limits_t *lim = &hc->srv->limits;
    tg_conn_t *c = hc->conn;
    uint8_t ev = hc->event;
    hc->event = EV_NONE;
    if (ev == EV_HEADERS) {
        hc->phase = PH_BODY;
        if (hc->head_raw > lim->max_header_size) {
            fail(hc, TG_CLOSE_HEADER_TOO_LARGE);
            return false;
        }
        llhttp_t *p = &hc->parser;
        bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
        if ((p->flags & F_CONTENT_LENGTH) && p->content_length > lim->max_body) {
            fail(hc, TG_CLOSE_BODY_TOO_LARGE);
            return false;
        }
        if (hc->expect_continue && p->http_major == 1 && p->http_minor >= 1 && has_body) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (tg_conn_write(c, cont, sizeof(cont) - 1) != 0)
                return false;
        }
        if (has_body)
            tg_conn_timer_arm(c, lim->body_timeout_ms);
        return true;
    }
    if (ev != EV_MESSAGE)
        return true;
    hc->phase = PH_DONE;
    tg_conn_timer_cancel(c);
    resolve_headers(hc);
    dispatch(hc);
    if (!tg_conn_open(c) || hc->takeover)
        return false;
    if (hc->deferred && !hc->responded) {
        hc->waiting = true; /* what follows waits for the answer */
        tg_conn_pause(c);
        return true;
    }
    return finish_request(hc);
}

/* The answer to the current request is queued: get ready for the next one.
 * Returns false when the connection is closing. */
static bool finish_request(http_conn_t *hc)
{
    tg_conn_t *c = hc->conn;
    const tg_http_limits_t *lim = &hc->srv->limits;
    if (hc->parser.upgrade)
        hc->close_after = true; /* no protocol to switch to on this route */
    request_reset(hc);
    if (hc->close_after) {
        tg_conn_close_after_flush(c, TG_CLOSE_DONE);
        return false;
    }
    if (tg_conn_pending(c) > lim->max_out) {
        hc->waiting = true;
        tg_conn_pause(c);
        tg_conn_timer_arm(c, lim->send_timeout_ms);
    }
    return true;
}

/* Parses <n> bytes; what cannot be parsed now is kept in hc->pending. */
static void feed(http_conn_t *hc, const char *p, size_t n)
{
    tg_conn_t *c = hc->conn;
    const tg_http_limits_t *lim = &hc->srv->limits;
    /* After a pause at the end of the headers the parser may have more to do
     * with no further input (a request without body completes): run it once
     * more even when nothing is left. */
    bool resumed = false;
    while ((n > 0 || resumed) && tg_conn_open(c)) {
        resumed = false;
        if (hc->waiting) {
            if (n == 0)
                return;
            if (tg_buf_append(&hc->pending, &c->loop->chunks, p, n) != 0)
                tg_conn_close(c, TG_CLOSE_NOMEM);
            return;
        }
        bool in_head = hc->phase <= PH_HEAD;
        enum llhttp_errno e = llhttp_execute(&hc->parser, p, n);
        size_t used = e == HPE_OK ? n : (size_t)(llhttp_get_error_pos(&hc->parser) - p);
        if (in_head || hc->phase == PH_HEAD)
            hc->head_raw += (uint32_t)(used < UINT32_MAX / 2 ? used : UINT32_MAX / 2);
        p += used;
        n -= used;
        if (e == HPE_PAUSED || (e == HPE_PAUSED_UPGRADE && hc->event != EV_NONE)) {
            if (e == HPE_PAUSED)
                llhttp_resume(&hc->parser);
            else
                llhttp_resume_after_upgrade(&hc->parser);
            if (!on_event(hc)) {
                /* Closing gives <hc> back to its pool (and past the pool's
                 * spare count, to the allocator): look at it only if open. */
                if (tg_conn_open(c) && hc->takeover)
                    hand_over(hc, p, n);
                return;
            }
            resumed = e == HPE_PAUSED && hc->phase == PH_BODY;
            continue;
        }
        if (e != HPE_OK) {
            fail(hc, map_parser_error(hc, e));
            return;
        }
        if (hc->phase == PH_HEAD && hc->head_raw > lim->max_header_size) {
            fail(hc, hc->url_len == hc->head_len && hc->nheaders == 0 && hc->url_len > 0
                         ? TG_CLOSE_URI_TOO_LONG : TG_CLOSE_HEADER_TOO_LARGE);
            return;
        }
    }
}

/* After input was handled: give the state back if nothing is in progress. */
static void settle(tg_conn_t *c)
{
    http_conn_t *hc = c->data;
    if (!hc || !tg_conn_open(c) || hc->waiting || hc->phase != PH_IDLE ||
        !tg_buf_empty(&hc->pending))
        return;
    state_give(c);
    if (c->loop->stopping) {
        tg_conn_close_after_flush(c, TG_CLOSE_SHUTDOWN);
        return;
    }
    tg_conn_timer_arm(c, server_of(c)->limits.keepalive_timeout_ms);
}

/* ---- the protocol ---- */

static int http_open(tg_conn_t *c)
{
    /* A connection that never sends a byte is let go quietly at the header
     * timeout (no request, so no 408). */
    tg_conn_timer_arm(c, server_of(c)->limits.header_timeout_ms);
    return 0;
}

static void http_data(tg_conn_t *c, const char *p, size_t n)
{
    http_conn_t *hc = c->data;
    if (!hc && !(hc = state_take(c))) {
        tg_conn_close(c, TG_CLOSE_NOMEM);
        return;
    }
    const tg_proto_t *me = c->proto;
    feed(hc, p, n);
    if (c->proto == me) /* not taken over by another protocol */
        settle(c);
}

static void http_drained(tg_conn_t *c)
{
    http_conn_t *hc = c->data;
    if (!hc) {
        if (c->loop->stopping)
            tg_conn_close_after_flush(c, TG_CLOSE_SHUTDOWN);
        return;
    }
    if (!hc->waiting || hc->deferred)
        return;
    replay_pending(hc);
}

/* Reading resumes: parse what was held back. If reading must pause again,
 * feed() holds the rest back anew, in order, behind what it keeps. */
static void replay_pending(http_conn_t *hc)
{
    tg_conn_t *c = hc->conn;
    const tg_proto_t *me = c->proto;
    hc->waiting = false;
    tg_conn_resume(c);
    const tg_http_limits_t *lim = &hc->srv->limits;
    tg_conn_timer_arm(c, hc->phase == PH_BODY ? lim->body_timeout_ms
                         : hc->phase == PH_HEAD ? lim->header_timeout_ms
                                                : lim->keepalive_timeout_ms);
    tg_buf_t in = hc->pending;
    hc->pending = TG_BUF_INIT;
    struct iovec iov;
    while (!tg_buf_empty(&in) && tg_conn_open(c)) {
        tg_buf_iov(&in, &iov, 1);
        feed(hc, iov.iov_base, iov.iov_len);
        tg_buf_consume(&in, &c->loop->chunks, iov.iov_len);
        if (c->proto != me) { /* taken over: the rest is the new protocol's */
            while (!tg_buf_empty(&in) && tg_conn_open(c) && c->proto->on_data) {
                tg_buf_iov(&in, &iov, 1);
                c->proto->on_data(c, iov.iov_base, iov.iov_len);
                tg_buf_consume(&in, &c->loop->chunks, iov.iov_len);
            }
            tg_buf_clear(&in, &c->loop->chunks);
            return;
        }
        if (tg_conn_open(c) && hc->waiting) {
            while (!tg_buf_empty(&in)) {
                tg_buf_iov(&in, &iov, 1);
                if (tg_buf_append(&hc->pending, &c->loop->chunks, iov.iov_base, iov.iov_len)) {
                    tg_conn_close(c, TG_CLOSE_NOMEM);
                    break;
                }
                tg_buf_consume(&in, &c->loop->chunks, iov.iov_len);
            }
        }
    }
    tg_buf_clear(&in, &c->loop->chunks);
    settle(c);
}

/* A deferred request was answered: carry on with the connection. */
static void answered_later(http_conn_t *hc)
{
    if (!finish_request(hc))
        return;
    if (hc->waiting && tg_conn_pending(hc->conn) <= hc->srv->limits.max_out)
        replay_pending(hc);
    else
        settle(hc->conn);
}

/* The connection switches protocol: HTTP lets go of it, and what was read
 * past the request goes to the new protocol. */
static void hand_over(http_conn_t *hc, const char *p, size_t n)
{
    tg_conn_t *c = hc->conn;
    const tg_proto_t *proto = hc->takeover;
    void *data = hc->takeover_data;
    tg_buf_t held = hc->pending;
    hc->pending = TG_BUF_INIT;
    state_give(c); /* the timer is the new protocol's now (HTTP's ended at dispatch) */
    c->proto = proto;
    c->data = data;
    tg_conn_resume(c);
    struct iovec iov;
    while (!tg_buf_empty(&held) && tg_conn_open(c) && c->proto == proto) {
        tg_buf_iov(&held, &iov, 1);
        proto->on_data(c, iov.iov_base, iov.iov_len);
        tg_buf_consume(&held, &c->loop->chunks, iov.iov_len);
    }
    tg_buf_clear(&held, &c->loop->chunks);
    if (n > 0 && tg_conn_open(c) && c->proto == proto)
        proto->on_data(c, p, n);
}

static void http_timer(tg_conn_t *c)
{
    http_conn_t *hc = c->data;
    if (!hc) {
        tg_conn_close(c, tg_conn_pending(c) ? TG_CLOSE_SEND_TIMEOUT : TG_CLOSE_IDLE);
        return;
    }
    if (hc->waiting) {
        tg_log_info("http: closing connection %llx: send_timeout",
                    (unsigned long long)tg_conn_id(c));
        tg_conn_close(c, TG_CLOSE_SEND_TIMEOUT);
    } else if (hc->phase == PH_HEAD) {
        fail(hc, TG_CLOSE_HEADER_TIMEOUT);
    } else if (hc->phase == PH_BODY) {
        fail(hc, TG_CLOSE_BODY_TIMEOUT);
    } else {
        tg_conn_close(c, TG_CLOSE_IDLE);
    }
}

static void http_stop(tg_conn_t *c)
{
    http_conn_t *hc = c->data;
    /* Idle, or only writing a response out: finish writing, then close. A
     * request in progress is answered first (settle closes after it). */
    if (!hc || (hc->phase == PH_IDLE && !hc->waiting && tg_buf_empty(&hc->pending)))
        tg_conn_close_after_flush(c, TG_CLOSE_SHUTDOWN);
}

static void http_close(tg_conn_t *c, int reason)
{
    (void)reason;
    http_conn_t *hc = c->data;
    if (hc && hc->deferred && !hc->responded && hc->abort) {
        tg_http_abort_cb *abort = hc->abort;
        hc->abort = NULL;
        abort(hc->abort_arg);
    }
    state_give(c);
}

int tg_http_server_init(tg_http_server_t *s, const tg_http_limits_t *limits, int nloops,
                        tg_http_handler_cb *handler, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->limits = *limits;
    s->handler = handler;
    s->arg = arg;
    s->nloops = nloops;
    s->server_name = "tidegate";
    s->loops = calloc((size_t)nloops, sizeof(*s->loops));
    if (!s->loops)
        return -ENOMEM;
    for (int i = 0; i < nloops; i++) {
        tg_pool_init(&s->loops[i].states, sizeof(http_conn_t), STATES_KEPT);
        tg_pool_init(&s->loops[i].small_heads,
                     SMALL_TEXT + SMALL_HEADERS * sizeof(tg_http_header_t), STATES_KEPT);
        tg_pool_init(&s->loops[i].heads, large_block(&s->limits), HEADS_KEPT);
    }
    s->proto = (tg_proto_t){
        .name = "http",
        .ctx = s,
        .on_open = http_open,
        .on_data = http_data,
        .on_drained = http_drained,
        .on_timer = http_timer,
        .on_stop = http_stop,
        .on_close = http_close,
    };
    return 0;
}

void tg_http_server_fini(tg_http_server_t *s)
{
    for (int i = 0; i < s->nloops; i++) {
        tg_pool_fini(&s->loops[i].states);
        tg_pool_fini(&s->loops[i].small_heads);
        tg_pool_fini(&s->loops[i].heads);
        tg_gzip_fini(&s->loops[i].gzip);
    }
    free(s->loops);
    s->loops = NULL;
}
