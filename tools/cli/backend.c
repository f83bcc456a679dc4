/* tools/cli/backend.c - tidegate-cli backend: a stand-in backend on libtidegate-backend. It
 * says HELLO for the routes given, prints every job as one JSON line on stdout, and answers
 * it with a fixed reply, the output of a shell command, or (by default) the job's own data
 * or body. One job at a time, on the library's thread.
 *
 *   connect (redialing up to --give-up) --> LINKED: job -> print -> answer -> ...
 *   SIGINT/SIGTERM: drain (the gate sends no more, the job running finishes); a second: stop */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "cli.h"
#include "net/json.h"
#include "net/ws.h"
#include "tidegate/backend_lib.h"

#define EXEC_OUT_MAX (8u << 20) /* a reply larger than this is not what a stub is for */
#define EXEC_ERR_MAX 2048       /* the start of stderr, for the ERROR's message */

static const char help[] =
    "usage: tidegate-cli backend --route NAME [--route NAME2 ...]\n"
    "                            [--reply JSON | --exec CMD] [options]\n"
    "Connects to the gate's backend listener (--backend) as a backend serving the routes,\n"
    "prints each job as one JSON line on stdout:\n"
    "  {\"id\":JOB,\"route\":...,\"kind\":\"call\"|\"http\",\"attempt\":1,\"conn\":...,\n"
    "   \"method\":...,\"path\":...,\"query\":...,\"headers\":[[NAME,VALUE],...],\n"
    "   \"body\":TEXT (or \"body_base64\"),\"data\":JSON,...}\n"
    "(each member only when the job has it) and answers it:\n"
    "  --reply JSON       with this JSON as the reply's data\n"
    "  --exec CMD         by running /bin/sh -c CMD with the job's JSON line on its stdin:\n"
    "                     exit 0 replies with its stdout (as data when it is JSON, else as a\n"
    "                     text body); another exit sends an ERROR (exec_failed, status 502)\n"
    "                     with its stderr; past --exec-timeout, ERROR exec_timeout (504)\n"
    "  (neither)          with the job's own data (call) or body (http): an echo\n"
    "options:\n"
    "  --route NAME       a route to serve (repeatable, or comma-separated)\n"
    "  --status N         the reply's status (default 200)\n"
    "  --exec-timeout S   seconds a command may run (default 10)\n"
    "  --capacity N       jobs the gate may send at once (default 64; they run one by one)\n"
    "  --name NAME        this backend's name in the gate's logs and /stats\n"
    "  --give-up S        exit 1 after S seconds without a link to the gate (default 30;\n"
    "                     0: keep redialing)\n"
    "  --quiet            no progress lines on stderr, errors only\n"
    "Prints \"tidegate-cli: backend: ready\" on stderr once linked. SIGINT/SIGTERM drain\n"
    "(exit 0); a second one stops at once.\n" CLI_COMMON_HELP;

typedef enum reply_mode { REPLY_ECHO, REPLY_FIXED, REPLY_EXEC } reply_mode_t;

typedef struct backend {
    const cli_t  *c;
    reply_mode_t  mode;
    char         *reply;     /* REPLY_FIXED: validated JSON (owned) */
    size_t        reply_len;
    const char   *exec;      /* REPLY_EXEC: the command */
    int64_t       exec_timeout_ms;
    int           status;
    bool          quiet;
    bool          stdout_lost; /* stdout failed (a closed pipe): stop after this job */
} backend_t;

/* What the signal handler drains; set once linked. A global only because a handler
 * has no argument. */
static tgb_t *volatile running;
static volatile sig_atomic_t signals;

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

/* ---- the job as JSON ---- */

/* Where a pair of a job goes in its JSON line. */
typedef enum pair_place { AS_STRING, AS_NUMBER, AS_BODY, AS_DATA, AS_HEADER, AS_OTHER } place_t;

static place_t place_of(const tgb_pair_t *p)
{
    static const char *const strings[] = { "route", "kind", "user", "key", "method", "path",
                                           "query", NULL };
    static const char *const numbers[] = { "attempt", "deadline_ms", "conn", NULL };
    for (int k = 0; strings[k]; k++)
        if (strcmp(p->key, strings[k]) == 0)
            return tg_utf8_valid((const uint8_t *)p->val, p->vlen) ? AS_STRING : AS_OTHER;
    for (int k = 0; numbers[k]; k++)
        if (strcmp(p->key, numbers[k]) == 0) {
            bool decimal = p->vlen > 0 && p->vlen <= 20 &&
                           strspn(p->val, "0123456789") == p->vlen &&
                           (p->vlen == 1 || p->val[0] != '0');
            return decimal ? AS_NUMBER : AS_OTHER;
        }
    if (strcmp(p->key, "body") == 0)
        return AS_BODY;
    if (strcmp(p->key, "data") == 0)
        return tg_json_valid(p->val, p->vlen) ? AS_DATA : AS_OTHER;
    if (strncmp(p->key, "h:", 2) == 0 && p->klen > 2)
        return AS_HEADER;
    return AS_OTHER;
}

/* Appends ["<key>",<value>] (each a string, base64 when not UTF-8), after a comma unless
 * <first>. */
static void put_pair(tg_sbuf_t *b, bool first, const char *k, size_t kl, const char *v,
                     size_t vl)
{
    tg_sbuf_put(b, first ? "[" : ",[", first ? 1 : 2);
    cli_json_string(b, k, kl);
    tg_sbuf_put(b, ",", 1);
    cli_json_string(b, v, vl);
    tg_sbuf_put(b, "]", 1);
}

/* Appends the job as one JSON object. Known pairs become members; request headers an array
 * of [name, value] (names repeat); anything else goes under "pairs". */
static void job_json(const tgb_job_t *job, tg_sbuf_t *b)
{
    size_t np = tgb_job_npairs(job), nheaders = 0, nother = 0;
    tg_sbuf_printf(b, "{\"id\":%llu", (unsigned long long)tgb_job_id(job));
    for (size_t i = 0; i < np; i++) {
        const tgb_pair_t *p = tgb_job_pair(job, i);
        switch (place_of(p)) {
        case AS_STRING:
            tg_sbuf_printf(b, ",\"%s\":", p->key);
            cli_json_string(b, p->val, p->vlen);
            break;
        case AS_NUMBER:
            tg_sbuf_printf(b, ",\"%s\":%s", p->key, p->val);
            break;
        case AS_BODY:
            tg_sbuf_printf(b, ",\"%s\":", tg_utf8_valid((const uint8_t *)p->val, p->vlen)
                                              ? "body"
                                              : "body_base64");
            cli_json_string(b, p->val, p->vlen);
            break;
        case AS_DATA:
            tg_sbuf_put(b, ",\"data\":", 8);
            cli_json_format(b, p->val, p->vlen, 0);
            break;
        case AS_HEADER:
            nheaders++;
            break;
        case AS_OTHER:
            nother++;
            break;
        }
    }
    if (nheaders) {
        size_t pos = 0;
        tgb_pair_t h;
        tg_sbuf_put(b, ",\"headers\":[", 12);
        for (bool first = true; tgb_job_header(job, &pos, &h); first = false)
            put_pair(b, first, h.key, h.klen, h.val, h.vlen);
        tg_sbuf_put(b, "]", 1);
    }
    if (nother) {
        bool first = true;
        tg_sbuf_put(b, ",\"pairs\":[", 10);
        for (size_t i = 0; i < np; i++) {
            const tgb_pair_t *p = tgb_job_pair(job, i);
            if (place_of(p) == AS_OTHER) {
                put_pair(b, first, p->key, p->klen, p->val, p->vlen);
                first = false;
            }
        }
        tg_sbuf_put(b, "]", 1);
    }
    tg_sbuf_put(b, "}", 1);
}

/* ---- answers ---- */

static void answer_echo(backend_t *x, tgb_t *b, tgb_job_t *job)
{
    size_t len;
    int rc;
    if (tgb_job_kind(job) == TGB_KIND_CALL) {
        const char *data = tgb_job_data(job, &len);
        rc = tgb_reply_data(b, job, x->status, data, len); /* no data: "null" */
    } else {
        const char *body = tgb_job_body(job, &len);
        const char *type = tgb_job_get(job, "h:content-type", NULL);
        rc = tgb_reply_body(b, job, x->status, type, body, len);
    }
    if (rc != 0)
        tgb_error(b, job, 500, "internal", strerror(-rc));
}

static size_t trim_end(const char *p, size_t n)
{
    while (n > 0 && (p[n - 1] == '\n' || p[n - 1] == '\r' || p[n - 1] == ' ' || p[n - 1] == '\t'))
        n--;
    return n;
}

/* The message of an ERROR for a command that failed: the start of its stderr when that is
 * text, else how it ended. Into <msg>. */
static void failure_message(const cli_exec_result_t *r, char *msg, size_t cap)
{
    size_t n = trim_end(r->err.p ? r->err.p : "", r->err.len);
    if (n > 0 && tg_utf8_valid((const uint8_t *)r->err.p, n)) {
        snprintf(msg, cap, "%.*s", (int)n, r->err.p);
        return;
    }
    if (WIFEXITED(r->status))
        snprintf(msg, cap, "exit status %d", WEXITSTATUS(r->status));
    else if (WIFSIGNALED(r->status))
        snprintf(msg, cap, "killed by signal %d", WTERMSIG(r->status));
    else
        snprintf(msg, cap, "failed");
}

static void answer_exec(backend_t *x, tgb_t *b, tgb_job_t *job, const tg_sbuf_t *line)
{
    const cli_exec_limits_t lim = { .out_max = EXEC_OUT_MAX, .err_max = EXEC_ERR_MAX };
    cli_exec_result_t r;
    uint64_t id = tgb_job_id(job);
    char msg[EXEC_ERR_MAX + 64];
    int rc = cli_exec(x->exec, line->p, line->len, x->exec_timeout_ms, &lim, &r);
    if (rc != 0) {
        snprintf(msg, sizeof(msg), "cannot run the command: %s", strerror(-rc));
        cli_error(x->c, 0, "job %llu: %s", (unsigned long long)id, msg);
        tgb_error(b, job, 500, "exec_failed", msg);
        return;
    }
    if (r.timed_out || r.out_over) {
        snprintf(msg, sizeof(msg), r.timed_out ? "the command ran past %.3g s"
                                               : "the command wrote more than %.3g MiB",
                 r.timed_out ? (double)x->exec_timeout_ms / 1000 : (double)EXEC_OUT_MAX / 1048576);
        cli_error(x->c, 0, "job %llu: %s", (unsigned long long)id, msg);
        tgb_error(b, job, r.timed_out ? 504 : 502, r.timed_out ? "exec_timeout" : "exec_failed",
                  msg);
    } else if (!WIFEXITED(r.status) || WEXITSTATUS(r.status) != 0 || r.out.failed) {
        failure_message(&r, msg, sizeof(msg));
        if (!x->quiet)
            cli_error(x->c, 0, "job %llu: the command failed: %s", (unsigned long long)id, msg);
        tgb_error(b, job, 502, "exec_failed", msg);
    } else {
        const char *out = r.out.p ? r.out.p : "";
        size_t n = r.out.len;
        if (tg_json_valid(out, n))
            rc = tgb_reply_data(b, job, x->status, out, trim_end(out, n));
        else
            rc = tgb_reply_body(b, job, x->status,
                                tg_utf8_valid((const uint8_t *)out, n) ? "text/plain; charset=utf-8"
                                                                       : "application/octet-stream",
                                out, n);
        if (rc != 0)
            tgb_error(b, job, 500, "internal", strerror(-rc));
    }
    cli_exec_free(&r);
}

static void handle(tgb_t *b, tgb_job_t *job, void *arg)
{
    backend_t *x = arg;
    tg_sbuf_t line = TG_SBUF_INIT;
    job_json(job, &line);
    if (line.failed) {
        tgb_error(b, job, 500, "internal", "out of memory");
        tg_sbuf_free(&line);
        return;
    }
    tg_sbuf_put(&line, "\n", 1);
    if (!x->stdout_lost && (fwrite(line.p, 1, line.len, stdout) != line.len || fflush(stdout)))
        x->stdout_lost = true;

    if (x->mode == REPLY_FIXED) {
        int rc = tgb_reply_data(b, job, x->status, x->reply, x->reply_len);
        if (rc != 0)
            tgb_error(b, job, 500, "internal", strerror(-rc));
    } else if (x->mode == REPLY_EXEC) {
        answer_exec(x, b, job, &line);
    } else {
        answer_echo(x, b, job);
    }
    tg_sbuf_free(&line);
    if (x->stdout_lost)
        tgb_drain(b); /* nobody reads what we print: finish like on SIGTERM */
}

/* ---- options ---- */

/* Appends <names> (comma-separated) to <routes>; false when one is empty. */
static bool add_routes(tg_sbuf_t *routes, const char *names)
{
    if (!*names || names[0] == ',' || names[strlen(names) - 1] == ',' || strstr(names, ",,"))
        return false;
    if (routes->len)
        tg_sbuf_put(routes, ",", 1);
    tg_sbuf_put(routes, names, strlen(names));
    return true;
}

static int parse(cli_t *c, int argc, char **argv, backend_t *x, tgb_options_t *o,
                 tg_sbuf_t *routes)
{
    static const struct option opts[] = {
        { "route", required_argument, NULL, 'r' },
        { "reply", required_argument, NULL, 'R' },
        { "exec", required_argument, NULL, 'e' },
        { "exec-timeout", required_argument, NULL, 'E' },
        { "status", required_argument, NULL, 's' },
        { "capacity", required_argument, NULL, 'k' },
        { "name", required_argument, NULL, 'n' },
        { "give-up", required_argument, NULL, 'g' },
        { "quiet", no_argument, NULL, 'q' },
        CLI_COMMON_OPTIONS,
        { NULL, 0, NULL, 0 },
    };
    int64_t give_up_ms = 30000;
    uint64_t v;
    int o_;
    while ((o_ = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
        int common = cli_common_opt(c, o_, optarg);
        if (common != 0) {
            if (common < 0)
                return CLI_USAGE;
            continue;
        }
        switch (o_) {
        case CLI_O_HELP:
            fputs(help, stdout);
            return -1;
        case 'r':
            if (!add_routes(routes, optarg))
                return cli_usage(c, "--route: '%s' is not a route name", optarg);
            break;
        case 'R': {
            if (x->mode != REPLY_ECHO)
                return cli_usage(c, "--reply and --exec exclude each other, and come once");
            int rc = cli_json_arg(c, "--reply", optarg, &x->reply, &x->reply_len);
            if (rc != 0)
                return rc;
            x->mode = REPLY_FIXED;
            break;
        }
        case 'e':
            if (x->mode != REPLY_ECHO)
                return cli_usage(c, "--reply and --exec exclude each other, and come once");
            x->mode = REPLY_EXEC;
            x->exec = optarg;
            break;
        case 'E':
            if ((x->exec_timeout_ms = cli_parse_seconds(optarg)) <= 0)
                return cli_usage(c, "--exec-timeout: '%s' is not a positive number of seconds",
                                 optarg);
            break;
        case 's':
            if (!cli_parse_uint(optarg, 100, 999, &v))
                return cli_usage(c, "--status: '%s' is not an HTTP status (100 to 999)", optarg);
            x->status = (int)v;
            break;
        case 'k':
            if (!cli_parse_uint(optarg, 1, 65536, &v))
                return cli_usage(c, "--capacity: '%s' is not in 1..65536", optarg);
            o->capacity = (uint32_t)v;
            break;
        case 'n':
            o->name = optarg;
            break;
        case 'g':
            if ((give_up_ms = cli_parse_seconds(optarg)) < 0 || give_up_ms > 2000000000)
                return cli_usage(c, "--give-up: '%s' is not a number of seconds", optarg);
            break;
        case 'q':
            x->quiet = o->quiet = true;
            break;
        default:
            return cli_bad_option(c, argv, o_);
        }
    }
    if (optind != argc)
        return cli_usage(c, "unexpected argument '%s'", argv[optind]);
    if (routes->len == 0)
        return cli_usage(c, "at least one --route is needed");
    if (routes->failed)
        return cli_error(c, CLI_FAIL, "out of memory");
    tg_sbuf_put(routes, "", 1);
    o->routes = routes->p;
    o->give_up_ms = (int)give_up_ms;
    return 0;
}

int cli_backend(cli_t *c, int argc, char **argv)
{
    backend_t x = { .c = c, .mode = REPLY_ECHO, .exec_timeout_ms = 10000, .status = 200 };
    tgb_options_t o = { 0 };
    tg_sbuf_t routes = TG_SBUF_INIT;
    int rc = parse(c, argc, argv, &x, &o, &routes);
    if (rc != 0)
        goto out;

    cli_addr_t a;
    if (!cli_addr_parse(c->backend, &a)) {
        rc = cli_usage(c, "'%s' is not HOST:PORT", c->backend);
        goto out;
    }
    o.connect = a.text; /* numeric: the library resolves nothing */
    tgb_t *b = tgb_connect(&o);
    if (!b) {
        if (errno == ETIMEDOUT)
            rc = cli_error(c, CLI_FAIL, "cannot connect to %s: no link within %.3g s", a.text,
                           (double)o.give_up_ms / 1000);
        else
            rc = cli_error(c, CLI_FAIL, "cannot connect to %s: %s", a.text, strerror(errno));
        goto out;
    }
    if (!x.quiet)
        cli_error(c, 0, "ready: routes %s on %s", o.routes, a.text);

    running = b;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int run = tgb_run(b, handle, &x);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    running = NULL;
    tgb_close(b);
    if (run == -ETIMEDOUT)
        rc = cli_error(c, CLI_FAIL, "no link to the gate at %s for %.3g s: giving up", a.text,
                       (double)o.give_up_ms / 1000);
    else if (run != 0)
        rc = cli_error(c, CLI_FAIL, "%s", strerror(-run));
    else
        rc = x.stdout_lost ? CLI_FAIL : CLI_OK;
out:
    free(x.reply);
    tg_sbuf_free(&routes);
    return rc < 0 ? CLI_OK : rc;
}
