/* tools/cli/sub.c - tidegate-cli sub CHANNEL: subscribe over WebSocket or TCP frames and print
 * every message the server sends, one JSON line each, flushed, until interrupted, --count
 * messages, or --timeout. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "cli.h"
#include "net/json.h"

static const char help[] =
    "usage: tidegate-cli sub CHANNEL [--from POS] [--count N] [--timeout S]\n"
    "                              [--transport ws|frames]\n"
    "Subscribes to CHANNEL and prints what the server sends, one JSON message a line:\n"
    "the {\"type\":\"sub\",...} answer, then {\"type\":\"msg\",...} messages (and \"gap\"\n"
    "notices), as docs/protocol.md describes them. Ends on Ctrl-C or SIGTERM (exit 0).\n"
    "  --from POS      resume after position EPOCH:SEQ\n"
    "  --count N       stop after N messages of type msg\n"
    "  --timeout S     stop after S seconds (exit 3 if --count was not reached)\n"
    "  --transport T   ws (GET /ws on --server, the default) or frames (--frames)\n"
    CLI_COMMON_HELP;

typedef struct sub_opts {
    const char     *ch, *from;
    uint64_t        count;       /* 0: no limit */
    int64_t         timeout_ms;  /* -1: none */
    cli_transport_t tr;
} sub_opts_t;

static int parse(cli_t *c, int argc, char **argv, sub_opts_t *s)
{
    static const struct option opts[] = {
        { "from", required_argument, NULL, 'f' },
        { "count", required_argument, NULL, 'n' },
        { "timeout", required_argument, NULL, 't' },
        { "transport", required_argument, NULL, 'T' },
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int o;
    while ((o = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        int common = cli_common_opt(c, o, optarg);
        if (common != 0) {
            if (common < 0)
                return CLI_USAGE;
            continue;
        }
        switch (o) {
        case CLI_O_HELP:
            fputs(help, stdout);
            return -1;
        case 'f':
            if (!cli_position_valid(optarg))
                return cli_usage(c, "--from: '%s' is not a position EPOCH:SEQ", optarg);
            s->from = optarg;
            break;
        case 'n':
            if (!cli_parse_uint(optarg, 1, UINT64_MAX, &s->count))
                return cli_usage(c, "--count: '%s' is not a positive number", optarg);
            break;
        case 't':
            if ((s->timeout_ms = cli_parse_seconds(optarg)) < 0)
                return cli_usage(c, "--timeout: '%s' is not a number of seconds", optarg);
            break;
        case 'T':
            if (!cli_transport_parse(optarg, &s->tr))
                return cli_usage(c, "--transport: '%s' is neither ws nor frames", optarg);
            break;
        default:
            return cli_bad_option(c, argv, o);
        }
    }
    if (argc - optind != 1)
        return cli_usage(c, "expected one CHANNEL");
    s->ch = argv[optind];
    if (!cli_channel_valid(s->ch))
        return cli_usage(c, "'%s' is not a channel name (1 to 128 of A-Z a-z 0-9 _ . : @ / = + -)",
                         s->ch);
    return 0;
}

/* Prints messages until the end; returns the exit code. */
static int follow(cli_t *c, cli_client_t *cl, const sub_opts_t *s, int64_t deadline)
{
    uint64_t got = 0;
    for (;;) {
        const char *m, *type;
        size_t n, tl;
        int rc = cli_client_recv(cl, deadline, &m, &n);
        if (rc == -EINTR)
            return CLI_OK;
        if (rc == -ETIMEDOUT) {
            if (!s->count)
                return CLI_OK;
            return cli_error(c, CLI_TIMEOUT, "%llu of %llu messages within the timeout",
                             (unsigned long long)got, (unsigned long long)s->count);
        }
        if (rc != 0)
            return rc;
        if (cli_print_json(m, n, 0) != 0)
            return CLI_FAIL;
        if (!cli_json_member(m, n, "type", &type, &tl))
            continue;
        if (cli_json_is(type, tl, "error"))
            return cli_error(c, CLI_FAIL, "the server refused the subscription");
        if (cli_json_is(type, tl, "unsub"))
            return cli_error(c, CLI_FAIL, "the server ended the subscription");
        if (cli_json_is(type, tl, "msg") && s->count && ++got == s->count)
            return CLI_OK;
    }
}

int cli_sub(cli_t *c, int argc, char **argv)
{
    sub_opts_t s = { .timeout_ms = -1, .tr = CLI_WS };
    int rc = parse(c, argc, argv, &s);
    if (rc != 0)
        return rc < 0 ? CLI_OK : rc;

    cli_catch_interrupts();
    int64_t deadline = cli_deadline(s.timeout_ms);
    tg_sbuf_t cmd = TG_SBUF_INIT;
    tg_sbuf_printf(&cmd, "{\"op\":\"sub\",\"ch\":\"%s\"", s.ch); /* the name needs no escape */
    if (s.from)
        tg_sbuf_printf(&cmd, ",\"from\":\"%s\"", s.from);
    tg_sbuf_put(&cmd, ",\"id\":1}", 8);
    if (cmd.failed) {
        tg_sbuf_free(&cmd);
        return cli_error(c, CLI_FAIL, "out of memory");
    }

    cli_client_t cl;
    /* Connecting is bounded even without --timeout. */
    int64_t connect_by = cli_deadline(s.timeout_ms >= 0 && s.timeout_ms < 10000 ? s.timeout_ms
                                                                                 : 10000);
    rc = cli_client_open(&cl, c, s.tr, connect_by);
    if (rc == 0) {
        rc = cli_client_send(&cl, cmd.p, cmd.len, connect_by);
        if (rc == 0)
            rc = follow(c, &cl, &s, deadline);
        cli_client_close(&cl);
    }
    tg_sbuf_free(&cmd);
    return rc == -EINTR ? CLI_OK : rc;
}
