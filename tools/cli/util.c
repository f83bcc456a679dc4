/* tools/cli/util.c - tidegate-cli: messages, numbers, deadlines, JSON arguments and the JSON
 * printer. */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "net/json.h"
#include "net/ws.h"

volatile sig_atomic_t cli_interrupted;

int cli_error(const cli_t *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tidegate-cli: %s%s", c && c->cmd ? c->cmd : "", c && c->cmd ? ": " : "");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int cli_usage(const cli_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "tidegate-cli: %s%s", c->cmd ? c->cmd : "", c->cmd ? ": " : "");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see tidegate-cli %s%s--help)\n", c->cmd ? c->cmd : "", c->cmd ? " " : "");
    va_end(ap);
    return CLI_USAGE;
}

int cli_bad_option(const cli_t *c, char **argv, int opt)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    if (opt == ':')
        return cli_usage(c, "option '%s' needs a value", arg);
    if (optopt)
        return cli_usage(c, "unknown option '-%c'", optopt);
    return cli_usage(c, "unknown option '%s'", arg);
}

int cli_common_opt(cli_t *c, int opt, const char *arg)
{
    const char **slot;
    switch (opt) {
    case CLI_O_SERVER:
        slot = &c->server;
        break;
    case CLI_O_FRAMES:
        slot = &c->frames;
        break;
    case CLI_O_BACKEND:
        slot = &c->backend;
        break;
    default:
        return 0;
    }
    cli_addr_t a;
    if (!cli_addr_parse(arg, &a)) {
        cli_error(c, CLI_USAGE, "'%s' is not HOST:PORT (HOST numeric or localhost)", arg);
        return -1;
    }
    *slot = arg;
    return 1;
}

static void on_interrupt(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_catch_interrupts(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_interrupt; /* no SA_RESTART: poll() returns EINTR */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

int64_t cli_parse_seconds(const char *s)
{
    char *end;
    errno = 0;
    double x = strtod(s, &end);
    if (errno || end == s || *end || !(x >= 0 && x <= 1e6))
        return -1;
    return (int64_t)(x * 1000 + 0.5);
}

bool cli_parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    if (*s < '0' || *s > '9')
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return false;
    *out = v;
    return true;
}

int64_t cli_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t cli_deadline(int64_t after_ms)
{
    return after_ms < 0 ? -1 : cli_now_ms() + after_ms;
}

int cli_ms_left(int64_t deadline)
{
    if (deadline < 0)
        return -1;
    int64_t left = deadline - cli_now_ms();
    if (left <= 0)
        return 0;
    return left > 1000000000 ? 1000000000 : (int)left;
}

/* Reads all of stdin, at most CLI_ARG_MAX bytes. Returns 0 or a negative errno. */
static int read_stdin(tg_sbuf_t *b)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof(buf));
        if (n == 0)
            return b->failed ? -ENOMEM : 0;
        if (n == -1) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (b->len + (size_t)n > CLI_ARG_MAX)
            return -EMSGSIZE;
        tg_sbuf_put(b, buf, (size_t)n);
    }
}

int cli_json_arg(const cli_t *c, const char *what, const char *arg, char **out, size_t *len)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    if (strcmp(arg, "-") == 0) {
        int rc = read_stdin(&b);
        if (rc != 0) {
            tg_sbuf_free(&b);
            return cli_error(c, CLI_USAGE, "%s from stdin: %s", what, strerror(-rc));
        }
    } else {
        tg_sbuf_put(&b, arg, strlen(arg));
    }
    tg_sbuf_put(&b, "", 1); /* the NUL, not counted below */
    if (b.failed) {
        tg_sbuf_free(&b);
        return cli_error(c, CLI_FAIL, "out of memory");
    }
    size_t n = b.len - 1;
    if (!tg_json_valid(b.p, n)) {
        tg_sbuf_free(&b);
        if (strcmp(arg, "-") == 0)
            return cli_error(c, CLI_USAGE, "%s (stdin) is not valid JSON", what);
        return cli_error(c, CLI_USAGE, "%s is not valid JSON: '%.60s%s'", what, arg,
                         strlen(arg) > 60 ? "..." : "");
    }
    *out = b.p;
    *len = n;
    return 0;
}

bool cli_channel_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:@/=+-") == n;
}

bool cli_position_valid(const char *s)
{
    size_t a = strspn(s, "0123456789");
    if (a == 0 || a > 20 || s[a] != ':')
        return false;
    size_t b = strspn(s + a + 1, "0123456789");
    return b > 0 && b <= 20 && s[a + 1 + b] == '\0';
}

static void newline(tg_sbuf_t *b, int indent, int depth)
{
    tg_sbuf_put(b, "\n", 1);
    for (int i = 0; i < indent * depth; i++)
        tg_sbuf_put(b, " ", 1);
}

static size_t skip_ws(const char *p, size_t n, size_t i)
{
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\n' || p[i] == '\r'))
        i++;
    return i;
}

void cli_json_format(tg_sbuf_t *b, const char *p, size_t n, int indent)
{
    int depth = 0;
    size_t i = skip_ws(p, n, 0);
    while (i < n) {
        char ch = p[i];
        if (ch == '"') {
            /* Valid JSON: a string ends at the first quote not escaped. */
            size_t j = i + 1;
            while (j < n && p[j] != '"')
                j += p[j] == '\\' ? 2 : 1;
            tg_sbuf_put(b, p + i, j + 1 - i);
            i = j + 1;
        } else if (ch == '{' || ch == '[') {
            size_t j = skip_ws(p, n, i + 1);
            if (j < n && (p[j] == '}' || p[j] == ']')) {
                tg_sbuf_put(b, ch == '{' ? "{}" : "[]", 2);
                i = j + 1;
            } else {
                tg_sbuf_put(b, &ch, 1);
                depth++;
                if (indent)
                    newline(b, indent, depth);
                i = j;
            }
        } else if (ch == '}' || ch == ']') {
            depth--;
            if (indent)
                newline(b, indent, depth);
            tg_sbuf_put(b, &ch, 1);
            i++;
        } else if (ch == ',') {
            tg_sbuf_put(b, ",", 1);
            if (indent)
                newline(b, indent, depth);
            i = skip_ws(p, n, i + 1);
        } else if (ch == ':') {
            tg_sbuf_put(b, indent ? ": " : ":", indent ? 2 : 1);
            i = skip_ws(p, n, i + 1);
        } else if (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r') {
            i++;
        } else {
            tg_sbuf_put(b, &ch, 1); /* numbers, true, false, null */
            i++;
        }
    }
}

bool cli_json_string(tg_sbuf_t *b, const char *p, size_t n)
{
    bool text = tg_utf8_valid((const uint8_t *)p, n);
    tg_sbuf_put(b, "\"", 1);
    if (text)
        tg_json_escape(b, p, n);
    else
        tg_base64(b, p, n);
    tg_sbuf_put(b, "\"", 1);
    return text;
}

int cli_print_json(const char *p, size_t n, int indent)
{
    tg_sbuf_t b = TG_SBUF_INIT;
    cli_json_format(&b, p, n, indent);
    tg_sbuf_put(&b, "\n", 1);
    int rc = 0;
    if (b.failed || fwrite(b.p, 1, b.len, stdout) != b.len || fflush(stdout) != 0)
        rc = -1;
    tg_sbuf_free(&b);
    return rc;
}

bool cli_json_member(const char *p, size_t n, const char *key, const char **v, size_t *vlen)
{
    tg_json_member_t m[64];
    int k = tg_json_object(p, n, m, 64);
    size_t kl = strlen(key);
    for (int i = 0; i < k; i++) {
        if (m[i].key.len == kl && memcmp(m[i].key.p, key, kl) == 0) {
            *v = m[i].value.p;
            *vlen = m[i].value.len;
            return true;
        }
    }
    return false;
}

bool cli_json_is(const char *v, size_t vlen, const char *s)
{
    size_t n = strlen(s);
    return vlen == n + 2 && v[0] == '"' && memcmp(v + 1, s, n) == 0 && v[n + 1] == '"';
}
