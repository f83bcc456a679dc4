/* tools/cli/call.c - tidegate-cli call ROUTE JSON: a client's call through the gate
 * ({"op":"call","route":ROUTE,"data":JSON,"id":1}), printing its one reply or error. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "net/json.h"

static const char help[] =
    "usage: tidegate-cli call ROUTE JSON [--transport ws|frames] [--timeout S]\n"
    "Calls ROUTE as a client with JSON as the call's data (- reads it from stdin) and prints\n"
    "the answer on one line: {\"type\":\"reply\",\"id\":1,\"status\":200,\"data\":...} or\n"
    "{\"type\":\"error\",\"code\":...,\"message\":...,\"id\":1}. Exit 1 on an error, or on a\n"
    "reply with a status of 400 or more.\n"
    "  --transport T   ws (GET /ws on --server, the default) or frames (--frames)\n"
    "  --timeout S     give up after S seconds (default 60; the gate's own deadline is 30 s)\n"
    CLI_COMMON_HELP;

/* The exit code for answer <m>/<n>: an error, or a reply with status >= 400, fails. */
static int judge(const char *m, size_t n)
{
    const char *v;
    size_t vl;
    uint64_t status = 200;
    if (cli_json_member(m, n, "type", &v, &vl) && cli_json_is(v, vl, "error"))
        return CLI_FAIL;
    if (cli_json_member(m, n, "status", &v, &vl) && tg_json_uint((tg_str_t){ v, vl }, &status) &&
        status >= 400)
        return CLI_FAIL;
    return CLI_OK;
}

/* Whether <m>/<n> is the answer to call id 1: a reply or an error with "id":1. */
static bool is_answer(const char *m, size_t n)
{
    const char *v;
    size_t vl;
    if (!cli_json_member(m, n, "id", &v, &vl) || vl != 1 || v[0] != '1')
        return false;
    return cli_json_member(m, n, "type", &v, &vl) &&
           (cli_json_is(v, vl, "reply") || cli_json_is(v, vl, "error"));
}

int cli_call(cli_t *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "timeout", required_argument, NULL, 't' },
        { "transport", required_argument, NULL, 'T' },
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int64_t timeout_ms = 60000;
    cli_transport_t tr = CLI_WS;
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
        } else if (o == 't') {
            if ((timeout_ms = cli_parse_seconds(optarg)) < 0)
                return cli_usage(c, "--timeout: '%s' is not a number of seconds", optarg);
        } else if (o == 'T') {
            if (!cli_transport_parse(optarg, &tr))
                return cli_usage(c, "--transport: '%s' is neither ws nor frames", optarg);
        } else {
            return cli_bad_option(c, argv, o);
        }
    }
    if (argc - optind != 2)
        return cli_usage(c, "expected ROUTE and JSON");
    const char *route = argv[optind];
    size_t rl = strlen(route);
    if (rl == 0 || rl > 255)
        return cli_usage(c, "a route name has 1 to 255 bytes");
    char *data;
    size_t len;
    int rc = cli_json_arg(c, "the call's data", argv[optind + 1], &data, &len);
    if (rc != 0)
        return rc;

    tg_sbuf_t cmd = TG_SBUF_INIT;
    tg_sbuf_put(&cmd, "{\"op\":\"call\",\"route\":\"", 22);
    tg_json_escape(&cmd, route, rl);
    tg_sbuf_put(&cmd, "\",\"id\":1,\"data\":", 16);
    tg_sbuf_put(&cmd, data, len);
    tg_sbuf_put(&cmd, "}", 1);
    free(data);
    if (cmd.failed) {
        tg_sbuf_free(&cmd);
        return cli_error(c, CLI_FAIL, "out of memory");
    }

    int64_t deadline = cli_deadline(timeout_ms);
    cli_client_t cl;
    rc = cli_client_open(&cl, c, tr, deadline);
    if (rc == 0) {
        rc = cli_client_send(&cl, cmd.p, cmd.len, deadline);
        while (rc == 0) {
            const char *m;
            size_t n;
            rc = cli_client_recv(&cl, deadline, &m, &n);
            if (rc == -ETIMEDOUT)
                rc = cli_error(c, CLI_TIMEOUT, "no answer to the call within %.3g s",
                               (double)timeout_ms / 1000);
            if (rc != 0 || !is_answer(m, n))
                continue; /* pushes and other messages are not the answer */
            rc = cli_print_json(m, n, 0) == 0 ? judge(m, n) : CLI_FAIL;
            break;
        }
        cli_client_close(&cl);
    }
    tg_sbuf_free(&cmd);
    return rc == -EINTR ? CLI_FAIL : rc;
}
