/* tools/cli/exec.c - tidegate-cli: run a shell command with bytes on its stdin, collecting
 * its stdout and stderr, bounded in time and size (backend --exec). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli.h"

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Reads what <*fd> has into <b>, keeping at most <cap> bytes (the rest is read and
 * dropped, so the child is not blocked on a full pipe). Closes <*fd> at EOF or error. Sets
 * <*over> when something was dropped. */
static void drain_pipe(int *fd, tg_sbuf_t *b, size_t cap, bool *over)
{
    char buf[65536];
    ssize_t n = read(*fd, buf, sizeof(buf));
    if (n > 0) {
        size_t keep = b->len >= cap ? 0 : cap - b->len;
        if ((size_t)n > keep)
            *over = true;
        tg_sbuf_put(b, buf, (size_t)n < keep ? (size_t)n : keep);
    } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        close_fd(fd);
    }
}

/* Waits for <pid> until <deadline>, then kills its process group and reaps it. */
static int reap(pid_t pid, int64_t deadline, int *status)
{
    for (;;) {
        pid_t r = waitpid(pid, status, WNOHANG);
        if (r == pid)
            return 0;
        if (r == -1 && errno != EINTR)
            return -errno;
        if (cli_ms_left(deadline) == 0)
            break;
        (void)poll(NULL, 0, 5); /* the pipes closed, so the exit is near: a short wait */
    }
    (void)kill(-pid, SIGKILL);
    while (waitpid(pid, status, 0) == -1 && errno == EINTR)
        ;
    return -ETIMEDOUT;
}

int cli_exec(const char *cmd, const char *in, size_t inlen, int64_t timeout_ms,
             const cli_exec_limits_t *lim, cli_exec_result_t *res)
{
    memset(res, 0, sizeof(*res));
    int pin[2] = { -1, -1 }, pout[2] = { -1, -1 }, perr[2] = { -1, -1 };
    int rc = 0;
    if (pipe2(pin, O_CLOEXEC) == -1 || pipe2(pout, O_CLOEXEC) == -1 ||
        pipe2(perr, O_CLOEXEC) == -1) {
        rc = -errno;
        goto out;
    }
    int64_t deadline = cli_deadline(timeout_ms);
    pid_t pid = fork();
    if (pid == -1) {
        rc = -errno;
        goto out;
    }
    if (pid == 0) {
        /* Its own process group, so that a timeout kills the whole pipeline and the
         * terminal's Ctrl-C (which drains us) does not cut the job short. */
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL); /* ignored here; an ignored signal survives exec */
        if (dup2(pin[0], 0) == -1 || dup2(pout[1], 1) == -1 || dup2(perr[1], 2) == -1)
            _exit(127);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    (void)setpgid(pid, pid); /* also here: no race with the kill below */
    close_fd(&pin[0]);
    close_fd(&pout[1]);
    close_fd(&perr[1]);
    fcntl(pin[1], F_SETFL, O_NONBLOCK);
    fcntl(pout[0], F_SETFL, O_NONBLOCK);
    fcntl(perr[0], F_SETFL, O_NONBLOCK);
    if (inlen == 0)
        close_fd(&pin[1]);

    size_t sent = 0;
    bool err_over = false;
    while (pout[0] >= 0 || perr[0] >= 0) {
        struct pollfd pf[3] = {
            { .fd = pout[0], .events = POLLIN },
            { .fd = perr[0], .events = POLLIN },
            { .fd = pin[1], .events = POLLOUT },
        };
        int n = poll(pf, 3, cli_ms_left(deadline));
        if (n == 0) {
            res->timed_out = true;
            break;
        }
        if (n == -1) {
            if (errno == EINTR)
                continue;
            rc = -errno;
            break;
        }
        if (pf[0].revents)
            drain_pipe(&pout[0], &res->out, lim->out_max, &res->out_over);
        if (pf[1].revents)
            drain_pipe(&perr[0], &res->err, lim->err_max, &err_over);
        if (pf[2].revents) {
            ssize_t w = write(pin[1], in + sent, inlen - sent);
            if (w > 0)
                sent += (size_t)w;
            /* A command that does not read its stdin (EPIPE) is not an error. */
            if (sent == inlen || (w == -1 && errno != EAGAIN && errno != EINTR))
                close_fd(&pin[1]);
        }
        if (res->out_over)
            break; /* more output than a reply may carry: no point waiting */
    }
    if (res->timed_out || res->out_over || rc != 0)
        (void)kill(-pid, SIGKILL);
    int status = 0;
    int r = reap(pid, res->timed_out || res->out_over ? cli_deadline(0) : deadline, &status);
    if (r == -ETIMEDOUT)
        res->timed_out = true;
    else if (r != 0 && rc == 0)
        rc = r;
    res->status = status;
out:
    close_fd(&pin[0]);
    close_fd(&pin[1]);
    close_fd(&pout[0]);
    close_fd(&pout[1]);
    close_fd(&perr[0]);
    close_fd(&perr[1]);
    return rc;
}

void cli_exec_free(cli_exec_result_t *res)
{
    tg_sbuf_free(&res->out);
    tg_sbuf_free(&res->err);
}
