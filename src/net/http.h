/* net/http.h - HTTP/1.1 server side of a connection, on llhttp.
 *
 * Keep-alive, pipelining (answered in request order), HTTP/1.0, HEAD,
 * Connection: close, Expect: 100-continue, Content-Length and chunked bodies.
 * Every limit has its status and a close: URI 414, header section 431, body 413,
 * transfer coding 501, expectation 417, malformed 400, header or body not in
 * time 408. An idle keep-alive connection is closed quietly.
 *
 * Memory: an idle connection holds nothing here (its tg_conn_t.data is NULL).
 * Parser state and the request head are taken from per-loop pools when the
 * first byte of a request arrives and given back once it is answered and no
 * input is left. Output queued past <max_out> stops reading until it drains,
 * so a client that pipelines without reading costs bounded memory.
 *
 * Loop thread only; the server object is shared read-only by every loop,
 * except its per-loop slots, each touched by its own loop only. */
#ifndef TG_NET_HTTP_H
#define TG_NET_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/common.h"
#include "core/conn.h"
#include "core/loop.h"
#include "core/pool.h"
#include "net/close.h"
#include "net/gzip.h"

typedef struct tg_http_limits {
    uint32_t max_uri;              /* request-target bytes: 414 past it */
    uint32_t max_header_size;      /* request line and header lines: 431 */
    uint32_t max_headers;          /* header lines: 431 */
    uint64_t max_body;             /* body bytes: 413 */
    uint32_t header_timeout_ms;    /* first byte to end of headers: 408 */
    uint32_t body_timeout_ms;      /* end of headers to end of body: 408 */
    uint32_t keepalive_timeout_ms; /* idle between requests: quiet close */
    uint32_t send_timeout_ms;      /* output not moving: close */
    uint32_t max_out;              /* queued output that pauses reading */
    uint32_t gzip_min;             /* bodies this long or longer may be gzipped */
    int      gzip_level;           /* 1..9; 0: never gzip */
} tg_http_limits_t;

typedef struct tg_http_header {
    tg_str_t name;
    tg_str_t value;
} tg_http_header_t;

typedef struct tg_http_req {
    tg_conn_t              *conn;
    const char             *method;   /* "GET", ... */
    uint8_t                 method_id; /* llhttp_method_t */
    uint8_t                 major, minor;
    bool                    keep_alive; /* the client allows another request after this one */
    bool                    head;       /* HEAD: the response carries no body */
    tg_str_t                target;     /* as received */
    tg_str_t                path;       /* target up to '?' */
    tg_str_t                query;      /* after '?', empty when none */
    const tg_http_header_t *headers;
    unsigned                nheaders;
    const tg_buf_t         *body;       /* whole body, possibly empty */
} tg_http_req_t;  /* valid until the response is queued; once a handler that
                     deferred it returns, only conn, method, version, keep_alive,
                     head and body remain (target, path, query and headers are
                     emptied: their memory goes back to the pool while it waits) */

/* Answers <req>: must queue exactly one response with tg_http_respond*(). */
typedef void tg_http_handler_cb(tg_http_req_t *req, void *arg);

typedef struct tg_http_loop {
    tg_pool_t    states;   /* per-connection parser state */
    tg_pool_t    small_heads; /* request heads that fit 2 KiB and 32 headers */
    tg_pool_t    heads;    /* larger ones: max_header_size + max_headers index */
    tg_counter_t requests; /* requests dispatched */
    tg_counter_t responses[6]; /* by class: [1] 1xx ... [5] 5xx */
    tg_gzip_t    gzip;     /* the loop's deflater, made on first use */
    tg_counter_t gzip_before; /* body bytes of gzipped responses, before */
    tg_counter_t gzip_after;  /* and after */
    int64_t      date_sec; /* second <date> was formatted for */
    char         date[40]; /* "Date: ...\r\n" */
} tg_http_loop_t;

typedef struct tg_http_server {
    tg_proto_t          proto;   /* what listeners hand connections to */
    tg_http_limits_t    limits;
    tg_http_handler_cb *handler;
    void               *arg;
    int                 nloops;
    tg_http_loop_t     *loops;   /* one per loop, indexed by loop id */
    const char         *server_name; /* "Server:" value */
} tg_http_server_t;

/* Boot thread. Returns 0 or -ENOMEM. */
int  tg_http_server_init(tg_http_server_t *s, const tg_http_limits_t *limits, int nloops,
                         tg_http_handler_cb *handler, void *arg);
/* After every loop has stopped and closed its connections. */
void tg_http_server_fini(tg_http_server_t *s);

/* Queues a whole response. <extra> holds further header lines, each ending in
 * CRLF (may be NULL). For HEAD, the body is counted in Content-Length but not
 * sent. The body is gzipped when the request accepts it, it is at least
 * limits.gzip_min bytes, its type is worth it (tg_gzip_type_ok), <extra> sets
 * no Content-Encoding nor Cache-Control: no-transform, and the status carries
 * a body; such responses say Vary: Accept-Encoding whether gzipped or not.
 * Statuses >= 400 close the connection afterwards only when <req> said so or the error makes the connection unusable; see tg_http_respond_error. */
void tg_http_respond(tg_http_req_t *req, int status, const char *content_type, const char *extra,
                     const void *body, size_t len);

/* Writes only the status line, Server, Date, the lines of <extra> (each ending
 * in CRLF) and the blank line: for responses whose body is streamed by the
 * protocol that takes the connection over (101 for WebSocket, SSE). */
void tg_http_respond_head(tg_http_req_t *req, int status, const char *extra);

/* The handler answers later: <req> stays valid until a tg_http_respond*() for
 * it, or until <abort>(<arg>) runs because the connection closed first (then
 * <req> must not be touched again). Reading pauses meanwhile: pipelined
 * requests wait their turn. */
typedef void tg_http_abort_cb(void *arg);
void tg_http_defer(tg_http_req_t *req, tg_http_abort_cb *abort, void *arg);

/* The <arg> of the request deferred on <c> with <abort>, or NULL when <c> is
 * not an HTTP connection waiting on such a request (an answer that comes back
 * by connection id finds its request this way). */
void *tg_http_deferred(const tg_conn_t *c, tg_http_abort_cb *abort);
/* After tg_http_respond_head: the connection speaks <proto> from now on, with
 * <data> as its state (tg_conn_t.data). Bytes already read past this request
 * are handed to proto->on_data. HTTP's state is released. Synchronous
 * handlers only. */
void tg_http_takeover(tg_http_req_t *req, const tg_proto_t *proto, void *data);

/* The value of the first header named <name> (case-insensitive), or NULL. */
const tg_str_t *tg_http_header(const tg_http_req_t *req, const char *name);
/* Whether the comma-separated header <name> lists <token> (case-insensitive). */
bool tg_http_header_has(const tg_http_req_t *req, const char *name, const char *token);

/* The reason phrase of <status> ("OK", "Not Found", ...). */
const char *tg_http_reason(int status);

/* Default limits (the documented configuration defaults). */
void tg_http_limits_default(tg_http_limits_t *l);

#endif
