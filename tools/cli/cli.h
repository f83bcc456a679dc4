/* tools/cli/cli.h - tidegate-cli: publish, subscribe, call, read /stats and stand in for a
 * backend, JSON in and out (docs/cli.md). Shared contracts of its modules.
 *
 * One thread, blocking sockets, every wait bounded by a deadline (or, where the user asked
 * for "until interrupted", by a signal). Each subcommand owns what it opens and releases it
 * before returning its exit code; nothing lives in globals except the signal flags.
 *
 *   ../tidegate-cli.c  main: common options, the subcommand table, --help
 *   util.c     messages, exit codes, numbers, deadlines, JSON arguments, JSON printing
 *   net.c      addresses (numeric or localhost), dialling, buffered reads, one HTTP exchange
 *   client.c   a client session over WebSocket or TCP frames: send a command, receive messages
 *   exec.c     backend --exec: a shell command with bounded time and output
 *   pub.c sub.c call.c stats.c backend.c   the subcommands */
#ifndef TG_TOOLS_CLI_H
#define TG_TOOLS_CLI_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/sbuf.h"

/* Exit codes (docs/cli.md). */
enum {
    CLI_OK = 0,      /* done; for call, a reply with a status below 400 */
    CLI_FAIL = 1,    /* an error reply, a refused request, a lost or refused connection */
    CLI_USAGE = 2,   /* bad options or arguments: nothing was sent */
    CLI_TIMEOUT = 3, /* no answer within --timeout (sub: fewer than --count messages) */
};

#define CLI_DEFAULT_SERVER  "127.0.0.1:8080"
#define CLI_DEFAULT_FRAMES  "127.0.0.1:7071"
#define CLI_DEFAULT_BACKEND "127.0.0.1:7070"
#define CLI_ARG_MAX         (16u << 20) /* a JSON argument read from stdin */
#define CLI_MSG_MAX         (64u << 20) /* one message or response from the server */

/* What every subcommand gets: its name and the common options. */
typedef struct cli {
    const char *cmd;     /* "pub", "sub"...: prefixes every message */
    const char *server;  /* HOST:PORT of the HTTP and WebSocket listener */
    const char *frames;  /* HOST:PORT of the TCP frames listener */
    const char *backend; /* HOST:PORT of the gate's backend listener */
} cli_t;

/* The common options, for each subcommand's getopt_long table: handled by cli_common_opt. */
enum { CLI_O_SERVER = 1000, CLI_O_FRAMES, CLI_O_BACKEND, CLI_O_HELP };
#define CLI_COMMON_OPTIONS                                                                     \
    { "server", required_argument, NULL, CLI_O_SERVER },                                       \
        { "frames", required_argument, NULL, CLI_O_FRAMES },                                   \
        { "backend", required_argument, NULL, CLI_O_BACKEND },                                 \
        { "help", no_argument, NULL, CLI_O_HELP }
#define CLI_COMMON_HELP                                                                        \
    "common options:\n"                                                                        \
    "  --server HOST:PORT   HTTP and WebSocket listener (default $TIDEGATE, else "             \
    CLI_DEFAULT_SERVER ")\n"                                                                   \
    "  --frames HOST:PORT   TCP frames listener (default " CLI_DEFAULT_FRAMES ")\n"           \
    "  --backend HOST:PORT  backend listener (default " CLI_DEFAULT_BACKEND ")\n"             \
    "  --help               this text\n"                                                       \
    "HOST is numeric (IPv4, or IPv6 in brackets) or localhost.\n"                              \
    "exit: 0 ok, 1 error reply or failed operation, 2 usage error, 3 timed out\n"

/* Set by the SIGINT/SIGTERM handler of the subcommands that run until interrupted. */
extern volatile sig_atomic_t cli_interrupted;

/* ---- util.c ---- */

/* Prints "tidegate-cli: <cmd>: <message>" on stderr; returns <code>. */
int cli_error(const cli_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Handles option <opt> when it is a common one: 1 handled, 0 not common, -1 bad (printed). */
int cli_common_opt(cli_t *c, int opt, const char *arg);
/* Prints "tidegate-cli: <cmd>: <message>" and where to find the usage; returns CLI_USAGE. */
int cli_usage(const cli_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The usage error for what getopt_long (optstring starting with ':') returned as <opt>: '?'
 * for an unknown option, ':' for a missing argument. Returns CLI_USAGE. */
int cli_bad_option(const cli_t *c, char **argv, int opt);
/* Installs the handler that sets cli_interrupted for SIGINT and SIGTERM, without SA_RESTART
 * so that a blocked poll() returns. SIGPIPE is ignored from main on. */
void cli_catch_interrupts(void);

/* Seconds as a decimal ("2", "0.5") in [0, 1e6] into milliseconds; -1 when malformed. */
int64_t cli_parse_seconds(const char *s);
/* A decimal integer in [<lo>, <hi>]; false when malformed or out of range. */
bool cli_parse_uint(const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

/* Monotonic clock in ms; a deadline is an absolute time in it, or -1 for none. */
int64_t cli_now_ms(void);
int64_t cli_deadline(int64_t after_ms); /* -1 stays -1 */
/* Milliseconds left for poll(): -1 for no deadline, 0 once passed. */
int cli_ms_left(int64_t deadline);

/* A JSON argument: <arg> itself, or stdin when <arg> is "-" (at most CLI_ARG_MAX bytes).
 * Validated strictly (RFC 8259). Returns 0 with <*out> (malloc'ed, NUL-terminated, the
 * caller frees) and <*len>, or CLI_USAGE after printing why (<what> names the argument). */
int cli_json_arg(const cli_t *c, const char *what, const char *arg, char **out, size_t *len);
/* Whether <s> is a channel name (1 to 128 of A-Z a-z 0-9 _ . : @ / = + -). */
bool cli_channel_valid(const char *s);
/* Whether <s> is a position EPOCH:SEQ, both decimal. */
bool cli_position_valid(const char *s);

/* Appends valid JSON <p>/<n> re-spaced: <indent> 0 on one line without insignificant
 * whitespace, else pretty with <indent> spaces a level. Strings are copied as they are. */
void cli_json_format(tg_sbuf_t *b, const char *p, size_t n, int indent);
/* Appends <n> bytes as a JSON string, quotes included: escaped text when they are UTF-8
 * (returns true), else their base64 (returns false: the caller says so in the key). */
bool cli_json_string(tg_sbuf_t *b, const char *p, size_t n);
/* Writes <n> bytes of JSON as one line (re-spaced with <indent>) and a newline to stdout,
 * then flushes. Returns 0, or -1 when stdout failed (a closed pipe). */
int cli_print_json(const char *p, size_t n, int indent);
/* The value of top-level member <key> of JSON object <p>/<n>, raw; false when absent. */
bool cli_json_member(const char *p, size_t n, const char *key, const char **v, size_t *vlen);
/* Whether raw member value <v> is the JSON string "<s>" (no escapes). */
bool cli_json_is(const char *v, size_t vlen, const char *s);

/* ---- net.c ---- */

typedef struct cli_addr {
    struct sockaddr_storage sa;
    socklen_t               len;
    char                    host[64]; /* as given, for Host headers and messages */
    char                    text[80]; /* "HOST:PORT", localhost made 127.0.0.1 */
} cli_addr_t;

/* Parses "HOST:PORT": HOST numeric IPv4, "[IPv6]" or localhost; no name lookups. Returns
 * false when malformed. */
bool cli_addr_parse(const char *s, cli_addr_t *a);

/* A blocking socket with a bounded read buffer. */
typedef struct cli_conn {
    int    fd;
    char  *in;   /* read, not yet consumed: in[0..len) */
    size_t len, cap;
    size_t max;  /* <in> never grows past this */
    bool   eof;
} cli_conn_t;

/* Connects to <a> before <deadline>. Returns 0 or a negative errno (-ETIMEDOUT,
 * -ECONNREFUSED, ... and -EINTR when interrupted). */
int cli_conn_open(cli_conn_t *k, const cli_addr_t *a, size_t max, int64_t deadline);
void cli_conn_close(cli_conn_t *k);
/* Writes all of <p> before <deadline>. Returns 0 or a negative errno. */
int cli_conn_write(cli_conn_t *k, const void *p, size_t n, int64_t deadline);
/* Reads once more into <in> before <deadline>. Returns the bytes read, 0 at EOF, or a
 * negative errno (-ETIMEDOUT, -EINTR, -EMSGSIZE when <max> is reached). */
ssize_t cli_conn_fill(cli_conn_t *k, int64_t deadline);
/* Drops the first <n> bytes of <in>. */
void cli_conn_consume(cli_conn_t *k, size_t n);

typedef struct cli_http_resp {
    int    status;
    char  *body;   /* malloc'ed, NUL-terminated; the caller frees with cli_http_free */
    size_t body_len;
} cli_http_resp_t;

/* One request to the server (Connection: close) and its response, before <deadline>.
 * Returns 0, or CLI_FAIL / CLI_TIMEOUT after printing why. */
int cli_http(const cli_t *c, const char *method, const char *path, const char *ctype,
             const char *body, size_t len, int64_t deadline, cli_http_resp_t *r);
void cli_http_free(cli_http_resp_t *r);
/* Appends <s> percent-encoded for a URL path segment or query value. */
void cli_url_escape(tg_sbuf_t *b, const char *s);

/* ---- client.c ---- */

typedef enum cli_transport { CLI_WS, CLI_FRAMES } cli_transport_t;

/* A client session: one connection to the WebSocket or the TCP frames listener. */
typedef struct cli_client {
    const cli_t    *c;
    cli_transport_t tr;
    cli_conn_t      conn;
    tg_sbuf_t       msg; /* the message cli_client_recv returned last (or being assembled) */
    int             frag; /* WebSocket: opcode of a fragmented message in progress, else 0 */
} cli_client_t;

/* Parses "ws" or "frames"; false when neither. */
bool cli_transport_parse(const char *s, cli_transport_t *tr);
/* Connects (and for WebSocket, upgrades GET /ws) before <deadline>. Returns 0, or
 * CLI_FAIL / CLI_TIMEOUT after printing why, or -EINTR when interrupted (nothing printed).
 * On failure nothing stays open. */
int cli_client_open(cli_client_t *cl, const cli_t *c, cli_transport_t tr, int64_t deadline);
/* Sends one JSON command. Same returns as cli_client_open. */
int cli_client_send(cli_client_t *cl, const char *json, size_t n, int64_t deadline);
/* The next message from the server as JSON text in <*p>/<*n> (valid until the next call): a
 * message with a binary payload is given with the payload as base64 in "data" and
 * "enc":"base64", as on the text transports. Pings are answered inside. Returns 0, -EINTR,
 * -ETIMEDOUT (neither printed), or CLI_FAIL after printing why (the server closed, or sent
 * something malformed). */
int cli_client_recv(cli_client_t *cl, int64_t deadline, const char **p, size_t *n);
/* Closes (WebSocket: a close frame first, best effort) and frees. */
void cli_client_close(cli_client_t *cl);

/* ---- exec.c ---- */

typedef struct cli_exec_limits {
    size_t out_max; /* stdout kept at most; more ends the command (out_over) */
    size_t err_max; /* stderr kept at most; more is read and dropped */
} cli_exec_limits_t;

typedef struct cli_exec_result {
    tg_sbuf_t out, err; /* what the command wrote (bounded); cli_exec_free releases */
    int       status;   /* waitpid status, when neither flag below is set */
    bool      timed_out; /* killed at the timeout (its process group) */
    bool      out_over;  /* killed for writing more than out_max */
} cli_exec_result_t;

/* Runs <cmd> with /bin/sh -c in its own process group, <in>/<inlen> on its stdin, for at
 * most <timeout_ms> (then SIGKILL to the group). Returns 0 with <res> filled (free it), or a
 * negative errno when it could not run (pipes, fork). */
int  cli_exec(const char *cmd, const char *in, size_t inlen, int64_t timeout_ms,
              const cli_exec_limits_t *lim, cli_exec_result_t *res);
void cli_exec_free(cli_exec_result_t *res);

/* ---- the subcommands: each returns its exit code ---- */
int cli_pub(cli_t *c, int argc, char **argv);
int cli_sub(cli_t *c, int argc, char **argv);
int cli_call(cli_t *c, int argc, char **argv);
int cli_stats(cli_t *c, int argc, char **argv);
int cli_backend(cli_t *c, int argc, char **argv);

#endif
