/* tools/cli/stats.c - tidegate-cli stats: GET /stats (docs/operations.md), printed pretty or
 * on one line. */
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "net/json.h"

static const char help[] =
    "usage: tidegate-cli stats [--compact] [--timeout S]\n"
    "Prints the server's /stats JSON, indented (--compact: on one line).\n"
    "  --timeout S   give up after S seconds (default 10)\n" CLI_COMMON_HELP;

int cli_stats(cli_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "timeout", required_argument, NULL, 't' },
        { "compact", no_argument, NULL, 'c' },
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int64_t timeout_ms = 10000;
    int indent = 2;
    int o;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        int common = cli_common_opt(c, o, optarg);
        if (common < 0)
            return CLI_USAGE;
        if (common > 0)
            continue;
        if (o == CLI_O_HELP) {
            fputs(help, stdout);
            return CLI_OK;
        } else if (o == 'c') {
            indent = 0;
        } else if (o == 't') {
            if ((timeout_ms = cli_parse_seconds(optarg)) < 0)
                return cli_usage(c, "--timeout: '%s' is not a number of seconds", optarg);
        } else {
            return cli_bad_option(c, argv, o);
        }
    }
    if (optind != argc)
        return cli_usage(c, "unexpected argument '%s'", argv[optind]);

    cli_http_resp_t r;
    int rc = cli_http(c, "GET", "/stats", NULL, NULL, 0, cli_deadline(timeout_ms), &r);
    if (rc != CLI_OK)
        return rc;
    if (r.status != 200)
        rc = cli_error(c, CLI_FAIL, "GET /stats: HTTP %d", r.status);
    else if (!tg_json_valid(r.body, r.body_len))
        rc = cli_error(c, CLI_FAIL, "GET /stats: the answer is not JSON");
    else if (cli_print_json(r.body, r.body_len, indent) != 0)
        rc = CLI_FAIL;
    cli_http_free(&r);
    return rc;
}
