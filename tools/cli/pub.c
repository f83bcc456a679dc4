/* tools/cli/pub.c - tidegate-cli pub CHANNEL JSON: POST /pub/CHANNEL (docs/protocol.md,
 * "Publishing over HTTP") and print the answer, {"ch":...,"pos":...}. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "net/json.h"

static const char help[] =
    "usage: tidegate-cli pub CHANNEL JSON [--timeout S]\n"
    "Publishes JSON (a JSON value; - reads it from stdin) on CHANNEL with POST /pub/CHANNEL\n"
    "and prints the server's answer on one line: {\"ch\":CHANNEL,\"pos\":\"EPOCH:SEQ\"}.\n"
    "  --timeout S   give up after S seconds (default 10)\n" CLI_COMMON_HELP;

int cli_pub(cli_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "timeout", required_argument, NULL, 't' },
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int64_t timeout_ms = 10000;
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
        }
        if (o == 't' && (timeout_ms = cli_parse_seconds(optarg)) >= 0)
            continue;
        if (o == 't')
            return cli_usage(c, "--timeout: '%s' is not a number of seconds", optarg);
        return cli_bad_option(c, argv, o);
    }
    if (argc - optind != 2)
        return cli_usage(c, "expected CHANNEL and JSON");
    const char *ch = argv[optind];
    if (!cli_channel_valid(ch))
        return cli_usage(c, "'%s' is not a channel name (1 to 128 of A-Z a-z 0-9 _ . : @ / = + -)",
                         ch);
    char *body;
    size_t len;
    int rc = cli_json_arg(c, "the message", argv[optind + 1], &body, &len);
    if (rc != 0)
        return rc;

    tg_sbuf_t path = TG_SBUF_INIT;
    tg_sbuf_put(&path, "/pub/", 5);
    cli_url_escape(&path, ch);
    tg_sbuf_put(&path, "", 1);
    cli_http_resp_t r;
    rc = path.failed ? cli_error(c, CLI_FAIL, "out of memory")
                     : cli_http(c, "POST", path.p, "application/json", body, len,
                                cli_deadline(timeout_ms), &r);
    if (rc == CLI_OK) {
        bool json = tg_json_valid(r.body, r.body_len);
        if (r.status / 100 != 2)
            rc = cli_error(c, CLI_FAIL, "the server refused the publish: HTTP %d %.*s", r.status,
                           (int)(r.body_len < 200 ? r.body_len : 200), r.body);
        else if (!json)
            rc = cli_error(c, CLI_FAIL, "the server's answer is not JSON: %.*s",
                           (int)(r.body_len < 200 ? r.body_len : 200), r.body);
        else if (cli_print_json(r.body, r.body_len, 0) != 0)
            rc = CLI_FAIL;
        cli_http_free(&r);
    }
    tg_sbuf_free(&path);
    free(body);
    return rc;
}
