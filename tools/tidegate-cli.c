/* tools/tidegate-cli.c - tidegate-cli: publish, subscribe, call routes and read /stats as a
 * client, or stand in for a backend, JSON in and out (docs/cli.md). For people writing a
 * backend before its clients exist, or a client before its backend does.
 *
 *   tidegate-cli [common options] SUBCOMMAND [arguments and options]
 *
 * main reads the common options that come before the subcommand, then hands the rest to
 * the subcommand (tools/cli/), which reads its own and the common ones again. Exit codes:
 * 0 ok, 1 error reply or failed operation, 2 usage error, 3 timed out. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"

typedef struct subcommand {
    const char *name;
    int (*run)(cli_t *c, int argc, char **argv);
    const char *summary;
} subcommand_t;

static const subcommand_t subcommands[] = {
    { "pub", cli_pub, "pub CHANNEL JSON        publish (POST /pub/CHANNEL); prints the position" },
    { "sub", cli_sub, "sub CHANNEL             subscribe; prints each message as a JSON line" },
    { "call", cli_call, "call ROUTE JSON         call a route as a client; prints the reply" },
    { "stats", cli_stats, "stats                   print GET /stats" },
    { "backend", cli_backend, "backend --route NAME    act as a backend: print jobs, answer them" },
};

static void usage(FILE *f)
{
    fputs("usage: tidegate-cli [common options] SUBCOMMAND [arguments] [options]\n"
          "subcommands (tidegate-cli SUBCOMMAND --help for each):\n",
          f);
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
        fprintf(f, "  %s\n", subcommands[i].summary);
    fputs(CLI_COMMON_HELP, f);
}

int main(int argc, char **argv)
{
    /* A closed connection or pipe is an error to report, not a reason to die silently. */
    signal(SIGPIPE, SIG_IGN);

    const char *env = getenv("TIDEGATE");
    cli_t c = {
        .cmd = NULL,
        .server = env && *env ? env : CLI_DEFAULT_SERVER,
        .frames = CLI_DEFAULT_FRAMES,
        .backend = CLI_DEFAULT_BACKEND,
    };
    cli_addr_t a;
    if (!cli_addr_parse(c.server, &a))
        return cli_usage(&c, "TIDEGATE='%s' is not HOST:PORT (HOST numeric or localhost)",
                         c.server);

    static const struct option opts[] = {
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int o;
    /* "+": stop at the subcommand, whose options are its own. */
    while ((o = getopt_long(argc, argv, "+:", opts, NULL)) != -1) {
        int common = cli_common_opt(&c, o, optarg);
        if (common < 0)
            return CLI_USAGE;
        if (common > 0)
            continue;
        if (o == CLI_O_HELP) {
            usage(stdout);
            return CLI_OK;
        }
        return cli_bad_option(&c, argv, o);
    }
    if (optind >= argc) {
        usage(stderr);
        return CLI_USAGE;
    }
    const char *name = argv[optind];
    for (size_t i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
        if (strcmp(name, subcommands[i].name) == 0) {
            c.cmd = subcommands[i].name;
            int sub_argc = argc - optind;
            char **sub_argv = argv + optind;
            optind = 0; /* glibc: start over, on the subcommand's arguments */
            return subcommands[i].run(&c, sub_argc, sub_argv);
        }
    }
    return cli_usage(&c, "unknown subcommand '%s'", name);
}
