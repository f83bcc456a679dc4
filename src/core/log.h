/* core/log.h - leveled log lines written by a thread of their own.
 * Any thread may log: the line is formatted by the caller and queued to the log
 * thread through a mailbox, so no caller ever blocks on disk. The queue is
 * bounded (TG_LOG_QUEUE_MAX lines); past that, lines are dropped and counted,
 * and the count is logged once the queue has room again. Before tg_log_start()
 * and after tg_log_stop(), lines go straight to stderr (boot and exit). */
#ifndef TG_CORE_LOG_H
#define TG_CORE_LOG_H

#include <stdbool.h>
#include <stdint.h>

typedef enum tg_log_level {
    TG_LOG_ERROR,
    TG_LOG_WARN,
    TG_LOG_INFO,
    TG_LOG_DEBUG,
} tg_log_level_t;

#define TG_LOG_QUEUE_MAX 8192
#define TG_LOG_LINE_MAX  1024

/* Starts the log thread writing to <path> (appended; NULL or "" = stderr).
 * Returns 0 or a negative errno (the file cannot be opened). */
int  tg_log_start(const char *path, tg_log_level_t level);
/* Writes every queued line, then joins the log thread. */
void tg_log_stop(void);
/* Any thread: the log thread reopens its file (after rotation; SIGHUP). */
void tg_log_reopen(void);

void tg_log_set_level(tg_log_level_t level);
bool tg_log_enabled(tg_log_level_t level);
/* Returns the level named <name> ("error", "warn", "info", "debug") or -1. */
int  tg_log_level_parse(const char *name);
const char *tg_log_level_name(tg_log_level_t level);

void tg_log(tg_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Lines dropped because the queue was full, since start. */
uint64_t tg_log_dropped(void);

#define tg_log_error(...) tg_log(TG_LOG_ERROR, __VA_ARGS__)
#define tg_log_warn(...)  tg_log(TG_LOG_WARN, __VA_ARGS__)
#define tg_log_info(...)  tg_log(TG_LOG_INFO, __VA_ARGS__)
#define tg_log_debug(...)                                \
    do {                                                 \
        if (tg_log_enabled(TG_LOG_DEBUG))                \
            tg_log(TG_LOG_DEBUG, __VA_ARGS__);           \
    } while (0)

#endif
