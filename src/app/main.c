/* app/main.c - the tidegate command: flags and config, then run until a signal.
 * Signals are blocked in every thread and taken here with sigwaitinfo, so no
 * handler ever runs inside a loop: SIGTERM/SIGINT stop gracefully, SIGHUP
 * reopens the log file, SIGPIPE is ignored (a write to a closed peer fails with
 * EPIPE instead). */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app/config.h"
#include "app/server.h"
#include "core/log.h"
#include "core/resolve.h"

enum { EXIT_USAGE = 2 };

static void usage(FILE *out)
{
    fprintf(out,
            "usage: tidegate [options]\n"
            "\n"
            "A high-concurrency gateway and push server. With no options it serves\n"
            "HTTP on 127.0.0.1:8080 with embedded defaults.\n"
            "\n"
            "options:\n"
            "  --listen ADDR:PORT   client listener (default 127.0.0.1:8080)\n"
            "  --io-threads N       IO loops (default: one per core)\n"
            "  --workers M          worker threads for blocking work (default 2)\n"
            "  --reuseport          one SO_REUSEPORT listener per IO loop, no acceptor thread\n"
            "  --backend-listen ADDR:PORT\n"
            "                       backend listener of the gate (default 127.0.0.1:7070;\n"
            "                       \"\" for none)\n"
            "  --config FILE        read settings from FILE (key = value lines)\n"
            "  --log-level LEVEL    error, warn, info (default) or debug\n"
            "  --log-file PATH      append logs to PATH instead of stderr\n"
            "  --help               this text\n"
            "  --version            print the version\n"
            "\n"
            "config keys (flags override the file):\n");
    for (const tg_config_key_t *k = tg_config_keys; k->name; k++)
        fprintf(out, "  %-24s %-16s %s\n", k->name, *k->def ? k->def : "\"\"", k->help);
    fprintf(out, "\nendpoints: GET /healthz, GET /stats (JSON), GET /metrics (Prometheus)\n");
}

typedef struct flag_set {
    const char *key;
    const char *value;
    const char *flag; /* as typed, for messages */
} flag_set_t;

/* Fills <cfg>: defaults, then --config, then the other flags. Returns 0, 1 when
 * the command is done (--help, --version), or EXIT_USAGE. */
static int parse_args(int argc, char **argv, tg_config_t *cfg)
{
    static const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "io-threads", required_argument, NULL, 't' },
        { "workers", required_argument, NULL, 'w' },
        { "reuseport", no_argument, NULL, 'r' },
        { "backend-listen", required_argument, NULL, 'b' },
        { "config", required_argument, NULL, 'c' },
        { "log-level", required_argument, NULL, 'L' },
        { "log-file", required_argument, NULL, 'f' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { NULL, 0, NULL, 0 },
    };
    flag_set_t sets[32];
    int nsets = 0;
    const char *config_path = NULL;
    int c, which = 0;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, &which)) != -1) {
        const char *key = NULL;
        switch (c) {
        case 'l': key = "listen"; break;
        case 't': key = "io_threads"; break;
        case 'w': key = "workers"; break;
        case 'r': key = "reuseport"; break;
        case 'b': key = "gate.listen"; break;
        case 'L': key = "log_level"; break;
        case 'f': key = "log_file"; break;
        case 'c': config_path = optarg; break;
        case 'h': usage(stdout); return 1;
        case 'V': printf("tidegate %s\n", TG_VERSION); return 1;
        default:
            if (optopt)
                fprintf(stderr, "tidegate: option '%s' needs a value\n", argv[optind - 1]);
            else
                fprintf(stderr, "tidegate: unknown option '%s'\n", argv[optind - 1]);
            fprintf(stderr, "try 'tidegate --help'\n");
            return EXIT_USAGE;
        }
        if (key && nsets < (int)TG_ARRAY_LEN(sets))
            sets[nsets++] = (flag_set_t){ key, c == 'r' ? "true" : optarg, opts[which].name };
    }
    if (optind < argc) {
        fprintf(stderr, "tidegate: unexpected argument '%s'\ntry 'tidegate --help'\n",
                argv[optind]);
        return EXIT_USAGE;
    }
    char err[512];
    tg_config_defaults(cfg);
    if (config_path && tg_config_load(cfg, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "tidegate: %s\n", err);
        return EXIT_USAGE;
    }
    for (int i = 0; i < nsets; i++) {
        if (tg_config_set(cfg, sets[i].key, sets[i].value, err, sizeof(err)) != 0) {
            fprintf(stderr, "tidegate: --%s: %s\n", sets[i].flag, err);
            return EXIT_USAGE;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    tg_config_t cfg;
    int rc = parse_args(argc, argv, &cfg);
    if (rc != 0)
        return rc == 1 ? EXIT_SUCCESS : rc;

    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL); /* inherited by every thread started below */

    rc = tg_log_start(cfg.log_file, (tg_log_level_t)cfg.log_level);
    if (rc != 0) {
        fprintf(stderr, "tidegate: log_file %s: %s\n", cfg.log_file, strerror(-rc));
        return EXIT_USAGE;
    }
    if (tg_resolve_lib_init() != 0) {
        fprintf(stderr, "tidegate: cannot set up the resolver library\n");
        tg_log_stop();
        return EXIT_FAILURE;
    }
    tg_server_t *srv = calloc(1, sizeof(*srv));
    char err[512] = "";
    if (!srv || (rc = tg_server_start(srv, &cfg, err, sizeof(err))) != 0) {
        tg_log_error("cannot start: %s", srv ? err : "out of memory");
        tg_resolve_lib_fini();
        tg_log_stop();
        free(srv);
        return EXIT_FAILURE;
    }
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(&sigs, &si);
        if (sig == -1)
            continue; /* EINTR */
        if (sig == SIGHUP) {
            tg_log_info("SIGHUP: reopening the log file");
            tg_log_reopen();
            continue;
        }
        tg_log_info("%s: stopping (grace %u ms)", sig == SIGINT ? "SIGINT" : "SIGTERM",
                    cfg.shutdown_grace_ms);
        break;
    }
    tg_server_stop(srv);
    free(srv);
    tg_resolve_lib_fini();
    tg_log_info("stopped");
    tg_log_stop();
    return EXIT_SUCCESS;
}
