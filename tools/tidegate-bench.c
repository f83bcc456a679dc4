/* tools/tidegate-bench.c - tidegate-bench: a push load client for tidegate, Nchan and Pushpin on one
 * box (loopback only).
 *
 * N subscribers (WebSocket, SSE, chunked NDJSON stream or long-poll) spread over K channels,
 * one publisher sending M messages at R per second; each payload carries "seq" (per channel)
 * and "t" (send time, ns), so every subscriber counts what it got, lost, got twice or out of
 * order, and the publish-to-receive latency goes into a histogram. Modes: fan-out (default),
 * --idle (hold the connections, publish nothing: memory per connection), --churn (reconnect
 * subscribers while publishing). With --pid, the server's CPU per delivery, memory per
 * connection and descriptors; always, this tool's own CPU and the whole box's per delivery.
 *
 * Phases, bounded by --duration as a whole:
 *   connect (paced, at most --max-connecting in flight) -> settle -> [idle hold]
 *   -> publish -> drain (until every subscriber has everything, or --drain s) -> close
 *
 * Prints a summary and one line starting with RESULT. Exit status: 0; 1 when anything was
 * lost, duplicated, out of order, failed to connect or publish, or was malformed (or, with
 * --idle, a connection closed); 2 on bad usage. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "bench/bench.h"

bench_t B = {
    .transport = T_WS,
    .poll_style = POLL_TIDEGATE,
    .pub_format = PUB_RAW,
    .mode = MODE_FANOUT,
    .prefix = "bench",
    .pp_prefix = "data: ",
    .pp_suffix = "\n\n",
    .subs = 1000,
    .channels = 1,
    .rate = 100,
    .count = 1000,
    .size = 64,
    .pub_conns = 1,
    .duration_s = 60,
    .drain_s = 2,
    .settle_s = 0.3,
    .connect_timeout_s = 10,
    .max_inflight = 512,
};

static const char usage[] =
    "usage: tidegate-bench [options]\n"
    "subscribers:\n"
    "  --transport ws|sse|stream|poll   (ws)\n"
    "  --sub-url TPL          {ch} = channel, {i} = subscriber index\n"
    "                         (ws://127.0.0.1:PORT/sub/{ch}; sse: http://...; stream: ?mode=stream;\n"
    "                          poll: ?mode=poll)\n"
    "  --poll-style tidegate|nchan      since=POS from X-Position or \"next\" | If-Modified-Since"
    "/If-None-Match\n"
    "  --subs N (1000)  --channels K (1)  --channel PREFIX (bench; K > 1: PREFIX0..PREFIXK-1)\n"
    "  --connect-rate R (0 = as fast as possible)  --max-connecting N (512)\n"
    "  --connect-timeout S (10)  --settle S (0.3: after all are up, before publishing)\n"
    "  --resume (ws, tidegate: a subscriber the server closes reconnects from its last\n"
    "           position, ?from=POS, instead of counting as closed early)\n"
    "publisher:\n"
    "  --pub-url TPL          (http://127.0.0.1:PORT/pub/{ch})\n"
    "  --pub-format raw|pushpin  --pushpin-stream-prefix S ('data: ')  --pushpin-stream-suffix S"
    " ('\\n\\n')\n"
    "  --rate R (100/s in all; 0 = as fast as answered)  --count M (1000)  --size B (64)\n"
    "  --pub-conns P (1)  --pub-random\n"
    "modes and bounds:\n"
    "  --idle S  (hold N idle connections S seconds, publish nothing)   --churn R (per second)\n"
    "  --duration S (60: the whole run)  --drain S (2: after the last publish)\n"
    "server figures:\n"
    "  --pid PID (repeatable: CPU, RSS, PSS, descriptors summed)\n"
    "legacy: --port P (the default URLs' port, 8080)\n";

/* Option strings may say \n, \r, \t and \\. */
static void unescape(char *dst, size_t cap, const char *s)
{
    size_t o = 0;
    for (; *s && o + 1 < cap; s++) {
        if (*s == '\\' && s[1]) {
            s++;
            dst[o++] = *s == 'n' ? '\n' : *s == 'r' ? '\r' : *s == 't' ? '\t' : *s;
        } else {
            dst[o++] = *s;
        }
    }
    dst[o] = '\0';
}

static int num(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || *end || x < lo || x > hi) {
        fprintf(stderr, "tidegate-bench: --%s: '%s' is not a number in [%g, %g]\n", opt, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_args(int argc, char **argv)
{
    enum {
        O_PORT = 256, O_CHANNEL, O_SUBS, O_RATE, O_COUNT, O_SIZE, O_DURATION, O_SUB_URL,
        O_TRANSPORT, O_POLL_STYLE, O_CHANNELS, O_CONNECT_RATE, O_PUB_URL, O_PUB_FORMAT,
        O_PP_PREFIX, O_PP_SUFFIX, O_PUB_CONNS, O_PUB_RANDOM, O_IDLE, O_CHURN, O_PID, O_DRAIN,
        O_SETTLE, O_CONNECT_TIMEOUT, O_MAX_CONNECTING, O_RESUME, O_HELP,
    };
    static const struct option opts[] = {
        { "port", required_argument, NULL, O_PORT },
        { "channel", required_argument, NULL, O_CHANNEL },
        { "channel-prefix", required_argument, NULL, O_CHANNEL },
        { "subs", required_argument, NULL, O_SUBS },
        { "rate", required_argument, NULL, O_RATE },
        { "count", required_argument, NULL, O_COUNT },
        { "size", required_argument, NULL, O_SIZE },
        { "duration", required_argument, NULL, O_DURATION },
        { "sub-url", required_argument, NULL, O_SUB_URL },
        { "transport", required_argument, NULL, O_TRANSPORT },
        { "poll-style", required_argument, NULL, O_POLL_STYLE },
        { "channels", required_argument, NULL, O_CHANNELS },
        { "connect-rate", required_argument, NULL, O_CONNECT_RATE },
        { "pub-url", required_argument, NULL, O_PUB_URL },
        { "pub-format", required_argument, NULL, O_PUB_FORMAT },
        { "pushpin-stream-prefix", required_argument, NULL, O_PP_PREFIX },
        { "pushpin-stream-suffix", required_argument, NULL, O_PP_SUFFIX },
        { "pub-conns", required_argument, NULL, O_PUB_CONNS },
        { "pub-random", no_argument, NULL, O_PUB_RANDOM },
        { "idle", required_argument, NULL, O_IDLE },
        { "churn", required_argument, NULL, O_CHURN },
        { "pid", required_argument, NULL, O_PID },
        { "drain", required_argument, NULL, O_DRAIN },
        { "settle", required_argument, NULL, O_SETTLE },
        { "connect-timeout", required_argument, NULL, O_CONNECT_TIMEOUT },
        { "max-connecting", required_argument, NULL, O_MAX_CONNECTING },
        { "resume", no_argument, NULL, O_RESUME },
        { "help", no_argument, NULL, O_HELP },
        { NULL, 0, NULL, 0 },
    };
    int port = 8080, c;
    double x;
    bool sub_url = false, pub_url = false;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        const char *name = optind > 0 && optind <= argc ? argv[optind - 1] + 2 : "?";
        switch (c) {
#define NUM(lo, hi) \
    if (num(name, optarg, lo, hi, &x)) \
        return -1;
        case O_PORT: NUM(1, 65535) port = (int)x; break;
        case O_CHANNEL:
            if (!*optarg || strlen(optarg) >= sizeof(B.prefix) - 12) {
                fprintf(stderr, "tidegate-bench: --channel: 1 to %zu bytes\n", sizeof(B.prefix) - 13);
                return -1;
            }
            snprintf(B.prefix, sizeof(B.prefix), "%s", optarg);
            break;
        case O_SUBS: NUM(0, 10000000) B.subs = (int)x; break;
        case O_RATE: NUM(0, 10000000) B.rate = (int)x; break;
        case O_COUNT: NUM(0, 1e9) B.count = (int)x; break;
        case O_SIZE: NUM(0, 1 << 20) B.size = (int)x; break;
        case O_DURATION: NUM(1, 86400) B.duration_s = (int)x; break;
        case O_CHANNELS: NUM(1, 1000000) B.channels = (int)x; break;
        case O_CONNECT_RATE: NUM(0, 1e7) B.connect_rate = x; break;
        case O_PUB_CONNS: NUM(1, 1000) B.pub_conns = (int)x; break;
        case O_IDLE: NUM(0.001, 86400) B.idle_s = x; B.mode = MODE_IDLE; break;
        case O_CHURN: NUM(0.001, 1e6) B.churn_rate = x; B.mode = MODE_CHURN; break;
        case O_DRAIN: NUM(0, 3600) B.drain_s = x; break;
        case O_SETTLE: NUM(0, 3600) B.settle_s = x; break;
        case O_CONNECT_TIMEOUT: NUM(0.1, 3600) B.connect_timeout_s = x; break;
        case O_MAX_CONNECTING: NUM(1, 1000000) B.max_inflight = (int)x; break;
        case O_PID:
            NUM(1, 1 << 30)
            if (B.npids == BENCH_MAX_PIDS) {
                fprintf(stderr, "tidegate-bench: at most %d --pid\n", BENCH_MAX_PIDS);
                return -1;
            }
            B.pids[B.npids++] = (int)x;
            break;
#undef NUM
        case O_SUB_URL:
            snprintf(B.sub_tpl, sizeof(B.sub_tpl), "%s", optarg);
            sub_url = true;
            break;
        case O_PUB_URL:
            snprintf(B.pub_tpl, sizeof(B.pub_tpl), "%s", optarg);
            pub_url = true;
            break;
        case O_TRANSPORT:
            if (!strcmp(optarg, "ws"))
                B.transport = T_WS;
            else if (!strcmp(optarg, "sse"))
                B.transport = T_SSE;
            else if (!strcmp(optarg, "stream"))
                B.transport = T_STREAM;
            else if (!strcmp(optarg, "poll"))
                B.transport = T_POLL;
            else {
                fprintf(stderr, "tidegate-bench: --transport: ws, sse, stream or poll\n");
                return -1;
            }
            break;
        case O_POLL_STYLE:
            if (!strcmp(optarg, "tidegate"))
                B.poll_style = POLL_TIDEGATE;
            else if (!strcmp(optarg, "nchan"))
                B.poll_style = POLL_NCHAN;
            else {
                fprintf(stderr, "tidegate-bench: --poll-style: tidegate or nchan\n");
                return -1;
            }
            break;
        case O_PUB_FORMAT:
            if (!strcmp(optarg, "raw"))
                B.pub_format = PUB_RAW;
            else if (!strcmp(optarg, "pushpin"))
                B.pub_format = PUB_PUSHPIN;
            else {
                fprintf(stderr, "tidegate-bench: --pub-format: raw or pushpin\n");
                return -1;
            }
            break;
        case O_PP_PREFIX: unescape(B.pp_prefix, sizeof(B.pp_prefix), optarg); break;
        case O_PP_SUFFIX: unescape(B.pp_suffix, sizeof(B.pp_suffix), optarg); break;
        case O_PUB_RANDOM: B.pub_random = true; break;
        case O_RESUME: B.resume = true; break;
        case O_HELP: fputs(usage, stdout); exit(0);
        default: fputs(usage, stderr); return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tidegate-bench: unexpected argument '%s'\n%s", argv[optind], usage);
        return -1;
    }
    if (B.idle_s > 0 && B.churn_rate > 0) {
        fprintf(stderr, "tidegate-bench: --idle and --churn exclude each other\n");
        return -1;
    }
    static const char *const sub_default[] = {
        "ws://127.0.0.1:%d/sub/{ch}", "http://127.0.0.1:%d/sub/{ch}",
        "http://127.0.0.1:%d/sub/{ch}?mode=stream", "http://127.0.0.1:%d/sub/{ch}?mode=poll",
    };
    if (!sub_url)
        snprintf(B.sub_tpl, sizeof(B.sub_tpl), sub_default[B.transport], port);
    if (!pub_url)
        snprintf(B.pub_tpl, sizeof(B.pub_tpl), "http://127.0.0.1:%d/pub/{ch}", port);
    /* The templates must give loopback URLs of the right scheme. */
    char ch[160], url[2048];
    url_t u;
    const char *why = "too long";
    chan_name(B.channels - 1, ch, sizeof(ch));
    if (bench_subst(B.sub_tpl, ch, B.subs, url, sizeof(url)) != 0 ||
        bench_url_parse(url, &u, &why) != 0) {
        fprintf(stderr, "tidegate-bench: --sub-url '%s': %s\n", B.sub_tpl, why);
        return -1;
    }
    if (u.ws != (B.transport == T_WS)) {
        fprintf(stderr, "tidegate-bench: --sub-url: ws:// for --transport ws, http:// otherwise\n");
        return -1;
    }
    if (bench_subst(B.pub_tpl, ch, 0, url, sizeof(url)) != 0 ||
        bench_url_parse(url, &u, &why) != 0 || u.ws) {
        fprintf(stderr, "tidegate-bench: --pub-url '%s': %s\n", B.pub_tpl, u.ws ? "http:// only" : why);
        return -1;
    }
    return 0;
}

static void fmt_or_dash(char *buf, size_t cap, bool ok, const char *fmt, double v)
{
    if (ok)
        snprintf(buf, cap, fmt, v);
    else
        snprintf(buf, cap, "-");
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0)
        return 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
        if ((rlim_t)B.subs + (rlim_t)B.pub_conns + 64 > rl.rlim_cur) {
            fprintf(stderr, "tidegate-bench: %d subscribers need %d descriptors; the limit is %llu\n",
                    B.subs, B.subs + B.pub_conns + 64, (unsigned long long)rl.rlim_cur);
            return 2;
        }
    }
    uint64_t start = now_ns();
    B.deadline_ns = start + (uint64_t)B.duration_s * 1000000000ull;
    /* A run cut by --duration still drains: the publisher stops --drain (at most half the
     * run) before the end. */
    double keep = B.drain_s < B.duration_s / 2.0 ? B.drain_s : B.duration_s / 2.0;
    B.pub_deadline_ns = B.deadline_ns - (uint64_t)(keep * 1e9);
    if (subs_init() != 0 || pub_init() != 0) {
        fprintf(stderr, "tidegate-bench: out of memory\n");
        return 1;
    }
    procsnap_t before, up, cpu0, cpu1, end;
    proc_snap(&before);

    /* Connect, then let the subscriptions land before anything is published. */
    uint64_t t0 = now_ns();
    while (subs_pending() > 0 && now_ns() < B.deadline_ns) {
        subs_start_connects();
        subs_run(5);
    }
    double connect_s = (double)(now_ns() - t0) / 1e9;
    uint64_t settle_end = now_ns() + (uint64_t)(B.settle_s * 1e9);
    while (now_ns() < settle_end && now_ns() < B.deadline_ns)
        subs_run(10);
    if (B.mode == MODE_IDLE) {
        uint64_t hold_end = now_ns() + (uint64_t)(B.idle_s * 1e9);
        while (now_ns() < hold_end && now_ns() < B.deadline_ns)
            subs_run(100);
    }
    proc_snap(&up);
    int up_subs = subs_up();

    /* Publish and drain. */
    bool publishing = B.mode != MODE_IDLE && B.count > 0;
    pthread_t pub;
    proc_snap(&cpu0);
    if (publishing && pthread_create(&pub, NULL, pub_main, NULL) != 0) {
        fprintf(stderr, "tidegate-bench: pthread_create failed\n");
        return 1;
    }
    uint64_t drain_end = 0, churn_next = 0, last_check = 0;
    bool complete = false;
    while (publishing) {
        uint64_t now = now_ns();
        if (now > B.deadline_ns)
            break;
        bool done = atomic_load_explicit(&B.pub_done, memory_order_acquire);
        if (done && !drain_end)
            drain_end = now + (uint64_t)(B.drain_s * 1e9);
        if (drain_end && now > drain_end)
            break;
        if (B.mode == MODE_CHURN && !done &&
            atomic_load_explicit(&B.pub_started, memory_order_acquire)) {
            if (!churn_next)
                churn_next = now;
            for (; churn_next <= now; churn_next += (uint64_t)(1e9 / B.churn_rate))
                subs_churn_one();
        }
        subs_run(done ? 5 : 2);
        if (done && now - last_check > 50000000ull) {
            last_check = now;
            if ((complete = subs_all_complete()))
                break;
        }
    }
    if (publishing) {
        atomic_store_explicit(&B.pub_stop, true, memory_order_release);
        pthread_join(pub, NULL);
    }
    proc_snap(&cpu1);
    double run_s = (double)(now_ns() - start) / 1e9;
    subs_finish();

    /* The server should release every connection we held: give it 2 s to notice. */
    proc_snap(&end);
    for (int k = 0; k < 40 && end.ok && before.ok && end.fds > before.fds; k++) {
        struct timespec ts = { 0, 50000000 };
        nanosleep(&ts, NULL);
        proc_snap(&end);
    }

    tally_t all = { B.main.got + B.churn.got, B.main.lost + B.churn.lost,
                    B.main.dup + B.churn.dup, B.main.disorder + B.churn.disorder };
    double pub_s = (double)(B.t_last_ns - B.t_first_ns) / 1e9;
    double rx_s = B.t_last_rx_ns > B.t_first_ns ? (double)(B.t_last_rx_ns - B.t_first_ns) / 1e9 : 0;
    double per_s = pub_s > 0 ? (double)all.got / pub_s : 0.0;
    double dps = rx_s > 0 ? (double)all.got / rx_s : 0.0;
    uint64_t n_conn = B.connected ? B.connected : 1;
    bool cpu_ok = cpu0.ok && cpu1.ok && all.got > 0, mem_ok = before.ok && up.ok && B.connected;
    bool self_ok = all.got > 0, box_ok = self_ok && cpu0.box_ok && cpu1.box_ok;
    char cpu[32], sys[32], self[32], box[32], rss[32], pss[32], fb[16], fu[16], fa[16], ru[24],
        ra[24];
    fmt_or_dash(cpu, sizeof(cpu), cpu_ok, "%.3f",
                cpu_ok ? (double)(cpu1.cpu_us - cpu0.cpu_us) / (double)all.got : 0);
    fmt_or_dash(sys, sizeof(sys), cpu_ok, "%.3f",
                cpu_ok ? (double)(cpu1.sys_us - cpu0.sys_us) / (double)all.got : 0);
    fmt_or_dash(self, sizeof(self), self_ok, "%.3f",
                self_ok ? (double)(cpu1.self_us - cpu0.self_us) / (double)all.got : 0);
    fmt_or_dash(box, sizeof(box), box_ok, "%.3f",
                box_ok ? (double)(cpu1.box_us - cpu0.box_us) / (double)all.got : 0);
    fmt_or_dash(rss, sizeof(rss), mem_ok, "%.0f",
                ((double)up.rss_kb - (double)before.rss_kb) * 1024.0 / (double)n_conn);
    fmt_or_dash(pss, sizeof(pss), mem_ok, "%.0f",
                ((double)up.pss_kb - (double)before.pss_kb) * 1024.0 / (double)n_conn);
    fmt_or_dash(fb, sizeof(fb), before.ok, "%.0f", before.fds);
    fmt_or_dash(fu, sizeof(fu), up.ok, "%.0f", up.fds);
    fmt_or_dash(fa, sizeof(fa), end.ok, "%.0f", end.fds);
    /* RSS with the subscribers up, and once they have all gone: whatever a
     * run of churn or deliveries left behind is the difference. */
    fmt_or_dash(ru, sizeof(ru), up.ok, "%.0f", (double)up.rss_kb);
    fmt_or_dash(ra, sizeof(ra), end.ok, "%.0f", (double)end.rss_kb);
    static const char *const tnames[] = { "ws", "sse", "stream", "poll" };
    static const char *const mnames[] = { "fanout", "idle", "churn" };
    uint64_t errors = bench_errors_total() - bench_errors(E_PUB) - bench_errors(E_CONNECT);
    uint64_t p50 = hist_pct(&B.hist, 0.50), p90 = hist_pct(&B.hist, 0.90),
             p99 = hist_pct(&B.hist, 0.99), pmax = B.hist.max;

    printf("mode %s, transport %s%s, %d channel(s), run %.2f s\n", mnames[B.mode],
           tnames[B.transport],
           B.transport != T_POLL ? "" : B.poll_style == POLL_NCHAN ? " (nchan)" : " (tidegate)",
           B.channels, run_s);
    printf("subscribers %d (connected in %.2f s), published %llu in %.2f s (%d/s asked), "
           "%llu publish errors\n",
           B.subs, connect_s, (unsigned long long)B.published, pub_s, B.rate,
           (unsigned long long)B.pub_errors);
    printf("connected %llu, up when publishing %d, connect errors %llu, protocol errors %llu\n",
           (unsigned long long)B.connected, up_subs, (unsigned long long)B.connect_errors,
           (unsigned long long)errors);
    printf("deliveries %llu (%.0f/s), lost %llu, duplicated %llu, out of order %llu, "
           "closed early %llu\n",
           (unsigned long long)all.got, per_s, (unsigned long long)all.lost,
           (unsigned long long)all.dup, (unsigned long long)all.disorder,
           (unsigned long long)B.closed_early);
    if (B.resume)
        printf("resumed %llu times after the server closed a subscriber\n",
               (unsigned long long)B.resumed);
    if (B.mode == MODE_CHURN)
        printf("churn: %llu reconnects, their deliveries %llu (lost %llu while connected)\n",
               (unsigned long long)B.churned, (unsigned long long)B.churn.got,
               (unsigned long long)B.churn.lost);
    printf("latency publish->receive: p50 %llu us, p90 %llu us, p99 %llu us, max %llu us\n",
           (unsigned long long)p50, (unsigned long long)p90, (unsigned long long)p99,
           (unsigned long long)pmax);
    if (B.npids)
        printf("server: cpu %s us/delivery (%s in the kernel), rss %s B/conn, pss %s B/conn, "
               "fds %s before, %s up, %s after, rss %s KiB up, %s KiB after\n",
               cpu, sys, rss, pss, fb, fu, fa, ru, ra);
    if (self_ok)
        printf("client: cpu %s us/delivery; box: cpu %s us/delivery (every process, "
               "interrupts included)\n",
               self, box);
    printf("RESULT fanout mode=%s transport=%s subs=%d channels=%d connected=%llu "
           "connect_errors=%llu rate=%d count=%d published=%llu pub_errors=%llu deliveries=%llu "
           "per_s=%.0f deliveries_per_s=%.0f lost=%llu dup=%llu disorder=%llu closed=%llu "
           "errors=%llu churned=%llu churn_deliveries=%llu p50_us=%llu p90_us=%llu p99_us=%llu "
           "max_us=%llu cpu_us_per_delivery=%s sys_us_per_delivery=%s client_us_per_delivery=%s "
           "box_us_per_delivery=%s rss_per_conn=%s pss_per_conn=%s fds_before=%s "
           "fds_up=%s fds_after=%s rss_up_kb=%s rss_after_kb=%s resumed=%llu complete=%d\n",
           mnames[B.mode], tnames[B.transport], B.subs, B.channels,
           (unsigned long long)B.connected, (unsigned long long)B.connect_errors, B.rate, B.count,
           (unsigned long long)B.published, (unsigned long long)B.pub_errors,
           (unsigned long long)all.got, per_s, dps, (unsigned long long)all.lost,
           (unsigned long long)all.dup, (unsigned long long)all.disorder,
           (unsigned long long)B.closed_early, (unsigned long long)errors,
           (unsigned long long)B.churned, (unsigned long long)B.churn.got,
           (unsigned long long)p50, (unsigned long long)p90, (unsigned long long)p99,
           (unsigned long long)pmax, cpu, sys, self, box, rss, pss, fb, fu, fa, ru, ra,
           (unsigned long long)B.resumed,
           complete || !publishing);
    fflush(stdout);
    bool bad = all.lost || all.dup || all.disorder || B.pub_errors || B.connect_errors || errors ||
               (B.mode == MODE_IDLE && B.closed_early);
    return bad ? 1 : 0;
}
