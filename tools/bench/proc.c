/* tools/bench/proc.c - a server's figures from /proc, summed over the --pid processes
 * (nginx: the master and its workers): CPU time (utime + stime, every thread; stime,
 * the kernel's share, apart too), VmRSS, Pss
 * (smaps_rollup: shared pages counted once across the processes) and open descriptors;
 * and this tool's own CPU time and the box's busy time, for what a server's CPU
 * figure leaves out. */
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "bench.h"

/* utime + stime of <pid> in microseconds, and stime alone in <*sys_us>; -1
 * when it is gone. */
static long long cpu_us(int pid, long long *sys_us)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    unsigned long long ut, st;
    /* After ")": state (field 3) ... utime (14), stime (15). */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    long hz = sysconf(_SC_CLK_TCK);
    unsigned long long tick_us = 1000000ull / (unsigned long long)(hz > 0 ? hz : 100);
    *sys_us = (long long)(st * tick_us);
    return (long long)((ut + st) * tick_us);
}

/* The "<key>: N kB" line of <file> of <pid>; -1 when absent. */
static long long kb_field(int pid, const char *file, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            sscanf(line + kl + 1, "%lld", &v);
            break;
        }
    fclose(f);
    return v;
}

static int fd_count(int pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static uint64_t tv_us(struct timeval tv)
{
    return (uint64_t)tv.tv_sec * 1000000u + (uint64_t)tv.tv_usec;
}

/* Busy time of the box: the time of every online CPU since boot less its idle,
 * iowait and steal time from the first line of /proc/stat. Those are measured
 * (the kernel times idle spells); busy times there are only sampled at ticks,
 * which a burst of a few milliseconds after an idle spell can miss. On loopback
 * the receiving side of a send may run in the sender's time or, when the send
 * waits for an ACK (Nagle), in the receiver's: this sum does not depend on which. */
static bool box_busy_us(uint64_t *us)
{
    FILE *f = fopen("/proc/stat", "r");
    if (!f)
        return false;
    unsigned long long user, nice, sys, idle, iowait, irq, softirq, steal;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice, &sys, &idle,
                   &iowait, &irq, &softirq, &steal);
    fclose(f);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN), hz = sysconf(_SC_CLK_TCK);
    if (n != 8 || ncpu < 1 || hz < 1)
        return false;
    uint64_t up_us = now_ns() / 1000u * (uint64_t)ncpu; /* CLOCK_MONOTONIC: since boot */
    uint64_t not_busy = (uint64_t)(idle + iowait + steal) * (1000000u / (uint64_t)hz);
    *us = up_us > not_busy ? up_us - not_busy : 0;
    return true;
}

void proc_snap(procsnap_t *s)
{
    memset(s, 0, sizeof(*s));
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        s->self_us = tv_us(ru.ru_utime) + tv_us(ru.ru_stime);
    s->box_ok = box_busy_us(&s->box_us);
    s->ok = B.npids > 0;
    for (int k = 0; k < B.npids; k++) {
        long long sys = 0, c = cpu_us(B.pids[k], &sys), r = kb_field(B.pids[k], "status", "VmRSS"),
                  p = kb_field(B.pids[k], "smaps_rollup", "Pss");
        int f = fd_count(B.pids[k]);
        if (c < 0 || r < 0 || f < 0) {
            s->ok = false;
            continue;
        }
        s->cpu_us += (uint64_t)c;
        s->sys_us += (uint64_t)sys;
        s->rss_kb += (uint64_t)r;
        s->pss_kb += p > 0 ? (uint64_t)p : 0;
        s->fds += f;
    }
}
