/* core/log.c - see log.h. One log per process, so its state is file-static. */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/common.h"
#include "core/mbox.h"

typedef struct line {
    tg_mail_t mail;
    size_t    len;
    char      text[];
} line_t;

static struct {
    tg_mbox_t     mbox;
    pthread_t     thread;
    atomic_bool   running;  /* lines go through the thread */
    atomic_bool   stopping;
    atomic_bool   reopen;
    atomic_int    level;
    atomic_uint   queued;
    tg_counter_t  dropped;  /* written by producers with fetch_add */
    uint64_t      dropped_reported;
    char         *path;
    int           fd;
} L = { .level = TG_LOG_INFO, .fd = STDERR_FILENO };

static const char *const level_names[] = { "error", "warn", "info", "debug" };

const char *tg_log_level_name(tg_log_level_t level)
{
    return (unsigned)level < TG_ARRAY_LEN(level_names) ? level_names[level] : "?";
}

int tg_log_level_parse(const char *name)
{
    for (unsigned i = 0; i < TG_ARRAY_LEN(level_names); i++)
        if (strcmp(name, level_names[i]) == 0)
            return (int)i;
    return -1;
}

void tg_log_set_level(tg_log_level_t level)
{
    atomic_store_explicit(&L.level, level, memory_order_relaxed);
}

bool tg_log_enabled(tg_log_level_t level)
{
    return (int)level <= atomic_load_explicit(&L.level, memory_order_relaxed);
}

uint64_t tg_log_dropped(void)
{
    return tg_counter_get(&L.dropped);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w == -1) {
            if (errno == EINTR)
                continue;
            return; /* nowhere left to report a failing log */
        }
        p += w;
        n -= (size_t)w;
    }
}

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static size_t format_line(char *buf, size_t cap, tg_log_level_t level, const char *fmt,
                          va_list ap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, tg_log_level_name(level));
    int m = vsnprintf(buf + n, cap - (size_t)n - 1, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > cap - 2)
        len = cap - 2; /* truncated: keep the newline */
    buf[len++] = '\n';
    buf[len] = '\0';
    return len;
}

static void write_line(tg_mail_t *m, void *arg)
{
    (void)arg;
    line_t *l = tg_container_of(m, line_t, mail);
    write_all(L.fd, l->text, l->len);
    free(l);
    atomic_fetch_sub_explicit(&L.queued, 1, memory_order_relaxed);
}

/* Wakes the log thread for a flag (stop, reopen) rather than a line. */
static void kick(void)
{
    uint64_t one = 1;
    (void)!write(L.mbox.efd, &one, sizeof(one));
}

void tg_log(tg_log_level_t level, const char *fmt, ...)
{
    if (!tg_log_enabled(level))
        return;
    char buf[TG_LOG_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t len = format_line(buf, sizeof(buf), level, fmt, ap);
    va_end(ap);

    if (!atomic_load_explicit(&L.running, memory_order_acquire)) {
        write_all(STDERR_FILENO, buf, len);
        return;
    }
    if (atomic_fetch_add_explicit(&L.queued, 1, memory_order_relaxed) >= TG_LOG_QUEUE_MAX) {
        atomic_fetch_sub_explicit(&L.queued, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&L.dropped, 1, memory_order_relaxed);
        return;
    }
    line_t *l = malloc(sizeof(*l) + len);
    if (!l) {
        atomic_fetch_sub_explicit(&L.queued, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&L.dropped, 1, memory_order_relaxed);
        return;
    }
    l->mail.cb = write_line;
    l->len = len;
    memcpy(l->text, buf, len);
    tg_mbox_post(&L.mbox, &l->mail);
}

static void reopen_file(void)
{
    if (!L.path)
        return;
    int fd = open_path(L.path);
    if (fd == -1) {
        char buf[256];
        int n = snprintf(buf, sizeof(buf), "tidegate: cannot reopen log %s: %s\n", L.path,
                         strerror(errno));
        write_all(L.fd, buf, (size_t)n);
        return;
    }
    close(L.fd);
    L.fd = fd;
}

static void report_drops(void)
{
    uint64_t d = tg_counter_get(&L.dropped);
    if (d == L.dropped_reported)
        return;
    char buf[128];
    int n = snprintf(buf, sizeof(buf), "log: %llu lines dropped (queue full)\n",
                     (unsigned long long)(d - L.dropped_reported));
    write_all(L.fd, buf, (size_t)n);
    L.dropped_reported = d;
}

static void *log_main(void *arg)
{
    (void)arg;
    for (;;) {
        if (atomic_exchange(&L.reopen, false))
            reopen_file();
        while (tg_mbox_drain(&L.mbox, 256, NULL) > 0)
            ;
        report_drops();
        if (atomic_load(&L.stopping) && tg_mbox_idle(&L.mbox))
            break;
        if (tg_mbox_arm_sleep(&L.mbox)) {
            struct pollfd p = { .fd = L.mbox.efd, .events = POLLIN };
            (void)poll(&p, 1, -1);
            tg_mbox_woke(&L.mbox, (p.revents & POLLIN) != 0);
        }
    }
    return NULL;
}

int tg_log_start(const char *path, tg_log_level_t level)
{
    tg_log_set_level(level);
    if (path && *path) {
        int fd = open_path(path);
        if (fd == -1)
            return -errno;
        L.fd = fd;
        L.path = strdup(path);
    }
    int rc = tg_mbox_init(&L.mbox);
    if (rc != 0)
        return rc;
    atomic_store(&L.stopping, false);
    atomic_store_explicit(&L.running, true, memory_order_release);
    rc = pthread_create(&L.thread, NULL, log_main, NULL);
    if (rc != 0) {
        atomic_store(&L.running, false);
        tg_mbox_fini(&L.mbox);
        return -rc;
    }
    pthread_setname_np(L.thread, "tg-log");
    return 0;
}

void tg_log_stop(void)
{
    if (!atomic_load(&L.running))
        return;
    atomic_store(&L.stopping, true);
    kick();
    pthread_join(L.thread, NULL);
    atomic_store_explicit(&L.running, false, memory_order_release);
    tg_mbox_fini(&L.mbox);
    if (L.path) {
        close(L.fd);
        L.fd = STDERR_FILENO;
        free(L.path);
        L.path = NULL;
    }
}

void tg_log_reopen(void)
{
    atomic_store(&L.reopen, true);
    if (atomic_load(&L.running))
        kick();
}
