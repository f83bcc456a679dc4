/* examples/counter.c - a counter backend, a libtidegate-backend example of
 * effectively-once execution.
 *
 * Route "counter": every job adds one to a counter and replies the new value
 * (http: the number as text/plain; call: the number as data). A job the gate
 * resubmits (same id, after a link dropped) is answered by the library from
 * its memory of replies: the handler does not run and the counter does not
 * move twice. On exit it prints how many handler runs and how many repeats
 * answered from memory there were.
 *
 * --record FILE appends "JOB_ID VALUE" for each job once its reply has been
 * written to the gate (the library's on_done hook): after a kill -9, the file
 * lists exactly the jobs whose effect the gate will not ask for again.
 * --delay-ms N makes each job take N ms (to kill one mid-job, in a test).
 *
 *   counter [--connect HOST:PORT] [--routes LIST] [--name NAME] [--capacity N]
 *           [--record FILE] [--delay-ms N] [--quiet] */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tidegate/backend_lib.h"

static tgb_t *volatile running;      /* what the signal handler drains */
static volatile sig_atomic_t signals; /* how many arrived */

struct counter {
    uint64_t value;    /* the effect: one per handler run */
    long     delay_ms;
    int      record;   /* fd, or -1 */
    /* The value each recent job got, for the record line written once its
     * reply is out: slot = id % 65536, overwritten only by a job 65536 ids
     * later (the line then says "?"). */
    uint64_t ids[65536];
    uint64_t values[65536];
};

static void on_signal(int sig)
{
    (void)sig;
    tgb_t *b = running;
    if (!b)
        return;
    if (signals++ == 0)
        tgb_drain(b);
    else
        tgb_stop(b);
}

static void handle(tgb_t *b, tgb_job_t *job, void *arg)
{
    struct counter *c = arg;
    if (c->delay_ms > 0) {
        struct timespec ts = {.tv_sec = c->delay_ms / 1000,
                              .tv_nsec = c->delay_ms % 1000 * 1000000};
        while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
            ;
    }
    uint64_t v = ++c->value;
    size_t slot = tgb_job_id(job) % 65536;
    c->ids[slot] = tgb_job_id(job);
    c->values[slot] = v;

    char text[24];
    int n = snprintf(text, sizeof(text), "%llu", (unsigned long long)v);
    int rc = tgb_job_kind(job) == TGB_KIND_CALL
                 ? tgb_reply_data(b, job, 200, text, (size_t)n)
                 : tgb_reply_body(b, job, 200, "text/plain", text, (size_t)n);
    if (rc != 0)
        tgb_error(b, job, 500, "counter", strerror(-rc));
}

/* The reply of <id> was written: record it. One write() per line, O_APPEND,
 * so a kill leaves whole lines. */
static void on_done(uint64_t id, void *arg)
{
    struct counter *c = arg;
    if (c->record < 0)
        return;
    size_t slot = id % 65536;
    char line[48];
    int n;
    if (c->ids[slot] == id)
        n = snprintf(line, sizeof(line), "%llu %llu\n", (unsigned long long)id,
                     (unsigned long long)c->values[slot]);
    else
        n = snprintf(line, sizeof(line), "%llu ?\n", (unsigned long long)id);
    if (write(c->record, line, (size_t)n) != n)
        fprintf(stderr, "counter: record: %s\n", strerror(errno));
}

static void usage(FILE *f)
{
    fprintf(f, "usage: counter [options]\n"
               "  --connect HOST:PORT  the gate's backend listener (127.0.0.1:7070)\n"
               "  --routes LIST        routes served, comma-separated (counter)\n"
               "  --name NAME          this instance's name (counter-<pid>)\n"
               "  --capacity N         jobs in flight at most (256)\n"
               "  --record FILE        append \"JOB_ID VALUE\" once each reply is written\n"
               "  --delay-ms N         each job takes N ms\n"
               "  --quiet              log errors only\n"
               "  --help\n"
               "Each job adds one and replies the new value; a resubmitted job is answered\n"
               "from memory without counting again. SIGTERM/SIGINT drain.\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"connect", required_argument, NULL, 'c'}, {"routes", required_argument, NULL, 'r'},
        {"name", required_argument, NULL, 'n'},    {"capacity", required_argument, NULL, 'k'},
        {"record", required_argument, NULL, 'f'},  {"delay-ms", required_argument, NULL, 'd'},
        {"quiet", no_argument, NULL, 'q'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct counter c = {.record = -1};
    tgb_options_t o = {.connect = "127.0.0.1:7070", .routes = "counter", .capacity = 256};
    const char *record = NULL;
    char *end;
    int opt;
    while ((opt = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (opt) {
        case 'c':
            o.connect = optarg;
            break;
        case 'r':
            o.routes = optarg;
            break;
        case 'n':
            o.name = optarg;
            break;
        case 'k': {
            unsigned long n = strtoul(optarg, &end, 10);
            if (*end || n == 0 || n > 65536) {
                fprintf(stderr, "counter: --capacity takes 1 to 65536\n");
                return 2;
            }
            o.capacity = (uint32_t)n;
            break;
        }
        case 'f':
            record = optarg;
            break;
        case 'd':
            c.delay_ms = strtol(optarg, &end, 10);
            if (*end || c.delay_ms < 0) {
                fprintf(stderr, "counter: --delay-ms takes a number of milliseconds\n");
                return 2;
            }
            break;
        case 'q':
            o.quiet = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        usage(stderr);
        return 2;
    }
    if (record) {
        c.record = open(record, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (c.record == -1) {
            fprintf(stderr, "counter: %s: %s\n", record, strerror(errno));
            return 1;
        }
    }
    o.on_done = on_done;
    o.done_arg = &c;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    tgb_t *b = tgb_connect(&o);
    if (!b) {
        fprintf(stderr, "counter: cannot link to the gate at %s: %s\n", o.connect,
                strerror(errno));
        return 1;
    }
    running = b;
    int rc = tgb_run(b, handle, &c);
    running = NULL;

    tgb_stats_t s;
    tgb_stats(b, &s);
    printf("counter: %llu handler runs, %llu repeats answered from memory, value %llu\n",
           (unsigned long long)s.jobs, (unsigned long long)s.repeats,
           (unsigned long long)c.value);
    fflush(stdout);
    tgb_close(b);
    if (c.record >= 0)
        close(c.record);
    if (rc != 0) {
        fprintf(stderr, "counter: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}
