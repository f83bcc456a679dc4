/* tools/bench/bench.h - tidegate-bench, the push load client: shared state and the modules'
 * contracts.
 *
 * One process, two threads: the main thread owns the subscribers (one epoll loop: connects,
 * handshakes, parsing, latency histogram, churn, /proc readings) and the publisher thread owns
 * the publishing connections (its own epoll loop). They share only the publisher's per-channel
 * tallies, read by the main thread once <pub_done> is set (release/acquire), and the error
 * counters (under a mutex: errors are rare). Nothing here allocates per message.
 *
 *   ../tidegate-bench.c  main: options, phases (connect, settle, hold or publish, drain), figures, RESULT line
 *   sub.c    subscribers: ws, sse, stream, poll (tidegate or nchan style), churn
 *   pub.c    the publisher: raw or pushpin bodies, paced or pipelined, 2xx counted
 *   http.c   URL templates, loopback dialling, strict response heads, chunked bodies,
 *            error counting, the latency histogram, clocks
 *   proc.c   a server's CPU, RSS, PSS and descriptors from /proc */
#ifndef TG_TOOLS_BENCH_H
#define TG_TOOLS_BENCH_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define BENCH_MAX_PIDS     32
#define BENCH_HEAD_MAX     16384     /* a response head longer than this is malformed */
#define BENCH_PENDING_MAX  (4u << 20) /* unparsed input one connection may hold */
#define BENCH_SCRATCH      (256u << 10)

enum transport { T_WS, T_SSE, T_STREAM, T_POLL };
enum poll_style { POLL_TIDEGATE, POLL_NCHAN };
enum pub_format { PUB_RAW, PUB_PUSHPIN };
enum mode { MODE_FANOUT, MODE_IDLE, MODE_CHURN };

/* Error kinds: each is counted, and its first example printed once. */
enum err_kind {
    E_CONNECT,   /* connect() failed or timed out before the response head */
    E_STATUS,    /* an unexpected status code */
    E_HEAD,      /* a malformed response head */
    E_ACCEPT,    /* a missing or wrong Sec-WebSocket-Accept / Upgrade */
    E_FRAME,     /* a malformed WebSocket frame */
    E_CHUNK,     /* a malformed chunked body */
    E_BODY,      /* a malformed body (SSE, NDJSON, poll) or one too large */
    E_CLOSED,    /* the server closed or reset a subscriber */
    E_PUB,       /* a publish answered non-2xx, unanswered or malformed */
    E_KINDS
};

/* A parsed URL of a loopback target. */
typedef struct url {
    bool     ws;          /* ws:// (else http://) */
    uint32_t addr;        /* IPv4, host order: 127.0.0.0/8 only */
    uint16_t port;
    char     host[64];    /* as written, for the Host header */
    char     path[2048];  /* path and query, at least "/" */
} url_t;

/* A response head, the fields this tool reads. */
typedef struct http_head {
    int     status;
    bool    chunked;       /* Transfer-Encoding: chunked */
    bool    close;         /* Connection: close (or HTTP/1.0 without keep-alive) */
    bool    upgrade_ws;    /* Upgrade: websocket */
    int64_t clen;          /* Content-Length, -1 when absent */
    char    accept[40];    /* Sec-WebSocket-Accept */
    char    xpos[64];      /* X-Position (tidegate long-poll) */
    char    lastmod[64];   /* Last-Modified (nchan long-poll) */
    char    etag[128];     /* Etag (nchan long-poll) */
} http_head_t;

/* A chunked-body decoder's state, embedded in its connection. */
typedef struct chunked {
    uint8_t  st;
    uint64_t left;         /* data bytes left in the current chunk */
} chunked_t;

/* The latency histogram: log-linear, 64 buckets per power of two (< 1.6% error). */
#define HIST_BUCKETS (64 * 60)
typedef struct hist {
    uint64_t n, max;
    uint64_t b[HIST_BUCKETS];
} hist_t;

/* Delivery counters of one group of subscribers. */
typedef struct tally {
    uint64_t got, lost, dup, disorder;
} tally_t;

typedef struct bench {
    /* options */
    enum transport  transport;
    enum poll_style poll_style;
    enum pub_format pub_format;
    enum mode       mode;
    char            sub_tpl[2048], pub_tpl[2048], prefix[128];
    char            pp_prefix[256], pp_suffix[256]; /* pushpin http-stream content around it */
    int             subs, channels, rate, count, size, pub_conns, duration_s;
    double          connect_rate, churn_rate, idle_s, drain_s, settle_s, connect_timeout_s;
    bool            pub_random;
    bool            resume;            /* ws: reconnect from the last position when closed */
    int             pids[BENCH_MAX_PIDS], npids;
    int             max_inflight;      /* connects not yet answered, at most */
    uint64_t        deadline_ns;       /* --duration from start: nothing runs past it */
    uint64_t        pub_deadline_ns;   /* the publisher stops here, leaving time to drain */

    /* publisher results, per channel; final once <pub_done> reads true */
    uint64_t       *issued;            /* sequence numbers handed out */
    uint64_t       *failed;            /* of which not answered 2xx */
    uint64_t        published, pub_errors, pub_sent;
    uint64_t        t_first_ns, t_last_ns;
    atomic_bool     pub_done, pub_stop, pub_started;

    /* subscriber results (main thread) */
    hist_t          hist;
    tally_t         main, churn;       /* first connections, and reconnected ones */
    uint64_t        connected, connect_errors, closed_early, churned, other_msgs, resumed;
    uint64_t        t_last_rx_ns;
} bench_t;

extern bench_t B;

/* ---- http.c ---- */
uint64_t now_ns(void);
/* Writes <tpl> with {ch} and {i} replaced into <out>; -ENAMETOOLONG when it does not fit. */
int bench_subst(const char *tpl, const char *ch, int i, char *out, size_t cap);
/* Parses http:// or ws:// URL <s>; refuses hosts outside 127.0.0.0/8 ("localhost" is
 * 127.0.0.1). Returns 0, or -EINVAL with <why> set. */
int bench_url_parse(const char *s, url_t *u, const char **why);
/* A non-blocking TCP socket bound to source 127.0.0.(2 + <i> % 253) with
 * IP_BIND_ADDRESS_NO_PORT, connecting to <u>. Returns the fd or a negative errno. */
int bench_dial(const url_t *u, int i);
/* Parses the response head at <p>/<n>: its length when complete, 0 when more is needed,
 * -1 when malformed (<why> says how). */
int http_parse_head(const char *p, size_t n, http_head_t *h, const char **why);
/* Decodes the chunked body in <buf> in place: raw bytes at [*rpos, len) become data
 * appended at *dlen (never past *rpos). Returns 1 at the body's end, 0 when more input is
 * needed, -1 when malformed. */
int chunked_decode(chunked_t *c, char *buf, size_t *dlen, size_t *rpos, size_t len);
/* Counts an error of <kind>; prints the first of each kind with <n> bytes of <data>. Any thread. */
void bench_error(enum err_kind kind, const char *what, const char *data, size_t n);
uint64_t bench_errors(enum err_kind kind);
uint64_t bench_errors_total(void);
void     hist_add(hist_t *h, uint64_t us);
uint64_t hist_pct(const hist_t *h, double q);
uint64_t bench_rand(void);
/* Base64 of <n> bytes into <out> (4 * ceil(n / 3) + 1 bytes). */
void bench_base64(const uint8_t *p, size_t n, char *out);

/* ---- sub.c ---- */
int  subs_init(void);
/* Runs the subscriber loop for at most <ms> (returns earlier on events). */
void subs_run(int ms);
void subs_start_connects(void);        /* paced by --connect-rate, bounded in flight */
int  subs_pending(void);               /* not yet up nor failed */
int  subs_up(void);
void subs_churn_one(void);
bool subs_all_complete(void);          /* after pub_done: every subscriber has everything */
void subs_finish(void);                /* counts the tails missed, closes everything */
const char *chan_name(int k, char *buf, size_t cap);

/* ---- pub.c ---- */
int  pub_init(void);
void *pub_main(void *arg);

/* ---- proc.c ---- */
typedef struct procsnap {
    bool     ok;
    uint64_t cpu_us;                   /* utime + stime */
    uint64_t sys_us;                   /* stime: in the kernel (sockets, TCP) */
    uint64_t rss_kb, pss_kb;
    int      fds;
    /* Whatever the --pid list: this tool's own CPU (subscribers and publisher), and
     * the whole box's busy time (every process, interrupts and softirqs), which
     * counts the work a server's sockets leave to its clients' time too. */
    uint64_t self_us;
    bool     box_ok;
    uint64_t box_us;
} procsnap_t;
void proc_snap(procsnap_t *s);         /* summed over B.pids; ok false when any is gone */

#endif
