/* examples/echo.c - the echo backend, a libtidegate-backend example.
 *
 * An HTTP job gets 200 with the request's body and content-type (else
 * application/octet-stream); a call gets its own data back. SIGTERM or SIGINT
 * drains (no new jobs, finish the ones in flight, close); a second one stops.
 *
 *   echo [--connect HOST:PORT] [--routes LIST] [--name NAME] [--capacity N] [--quiet] */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidegate/backend_lib.h"

static tgb_t *volatile running;      /* what the signal handler drains */
static volatile sig_atomic_t signals; /* how many arrived */

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
    (void)arg;
    size_t len;
    int rc;
    if (tgb_job_kind(job) == TGB_KIND_CALL) {
        const char *data = tgb_job_data(job, &len);
        rc = tgb_reply_data(b, job, 200, data, len); /* NULL data answers "null" */
    } else {
        const char *body = tgb_job_body(job, &len);
        const char *type = tgb_job_get(job, "h:content-type", NULL);
        rc = tgb_reply_body(b, job, 200, type ? type : "application/octet-stream", body, len);
    }
    if (rc != 0) /* too large for the gate, say: tell the client */
        tgb_error(b, job, 500, "echo", strerror(-rc));
}

static void usage(FILE *f)
{
    fprintf(f, "usage: echo [options]\n"
               "  --connect HOST:PORT  the gate's backend listener (127.0.0.1:7070)\n"
               "  --routes LIST        routes served, comma-separated (echo)\n"
               "  --name NAME          this instance's name (echo-<pid>)\n"
               "  --capacity N         jobs in flight at most (256)\n"
               "  --quiet              log errors only\n"
               "  --help\n"
               "HTTP jobs get their body back, calls their data. SIGTERM/SIGINT drain.\n");
}

int main(int argc, char **argv)
{
    static const struct option longs[] = {
        {"connect", required_argument, NULL, 'c'}, {"routes", required_argument, NULL, 'r'},
        {"name", required_argument, NULL, 'n'},    {"capacity", required_argument, NULL, 'k'},
        {"quiet", no_argument, NULL, 'q'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    tgb_options_t o = {.connect = "127.0.0.1:7070", .routes = "echo", .capacity = 256};
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
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
            char *end;
            unsigned long n = strtoul(optarg, &end, 10);
            if (*end || n == 0 || n > 65536) {
                fprintf(stderr, "echo: --capacity takes 1 to 65536\n");
                return 2;
            }
            o.capacity = (uint32_t)n;
            break;
        }
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

    /* Handlers first: a signal during the first dial drains at once. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    tgb_t *b = tgb_connect(&o);
    if (!b) {
        fprintf(stderr, "echo: cannot link to the gate at %s: %s\n", o.connect, strerror(errno));
        return 1;
    }
    running = b;
    int rc = tgb_run(b, handle, NULL);
    running = NULL;

    tgb_stats_t s;
    tgb_stats(b, &s);
    fprintf(stderr, "echo: %llu jobs run, %llu repeats answered from memory\n",
            (unsigned long long)s.jobs, (unsigned long long)s.repeats);
    tgb_close(b);
    if (rc != 0) {
        fprintf(stderr, "echo: %s\n", strerror(-rc));
        return 1;
    }
    return 0;
}
