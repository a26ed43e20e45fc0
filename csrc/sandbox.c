/* Caller side of the Conveyor sandbox: cgroups, spawn, supervise, kill, measure. */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

#define CHILD_STACK (64 * 1024)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int present(const char *s) { return s != NULL && s[0] != '\0'; }

/* Write a short value to dir/name; returns 0 or -errno. */
static int cg_write(const char *dir, const char *name, const char *value)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, value, strlen(value));
    int e = n < 0 ? -errno : 0;
    close(fd);
    return e;
}

/* Read dir/name into buf; returns bytes read or -1. */
static ssize_t cg_read(const char *dir, const char *name, char *buf, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

static int64_t cg_read_int(const char *dir, const char *name)
{
    char buf[64];
    if (cg_read(dir, name, buf, sizeof buf) <= 0)
        return -1;
    if (strncmp(buf, "max", 3) == 0)
        return -1;
    return strtoll(buf, NULL, 10);
}

/* The value of "key N" in a flat keyed file such as cpu.stat, or -1. */
static int64_t keyed_value(const char *text, const char *key)
{
    size_t kl = strlen(key);
    const char *p = text;
    while (p && *p) {
        if (strncmp(p, key, kl) == 0 && p[kl] == ' ')
            return strtoll(p + kl + 1, NULL, 10);
        p = strchr(p, '\n');
        if (p)
            p++;
    }
    return -1;
}

static int64_t cg_keyed(const char *dir, const char *name, const char *key)
{
    char buf[4096];
    if (cg_read(dir, name, buf, sizeof buf) <= 0)
        return -1;
    return keyed_value(buf, key);
}

static int cg_make(const char *dir)
{
    if (!present(dir))
        return 0;
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

/* Remove a run cgroup; right after the last task exits the kernel may still say EBUSY. */
static void cg_remove(const char *dir)
{
    if (!present(dir))
        return;
    for (int i = 0; i < 200; i++) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return;
        if (errno != EBUSY)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

static int setup_cgroups(const struct sbx_config *cfg)
{
    char num[32];
    int e;
    if ((e = cg_make(cfg->cg_v2)) < 0)
        return e;
    if (present(cfg->cg_v2)) {
        if (cfg->cg_v2_memory && cfg->memory_limit > 0) {
            snprintf(num, sizeof num, "%lld", (long long)cfg->memory_limit);
            if ((e = cg_write(cfg->cg_v2, "memory.max", num)) < 0)
                return e;
            cg_write(cfg->cg_v2, "memory.swap.max", "0");
        }
        if (cfg->cg_v2_pids && cfg->pids_limit > 0) {
            snprintf(num, sizeof num, "%lld", (long long)cfg->pids_limit);
            if ((e = cg_write(cfg->cg_v2, "pids.max", num)) < 0)
                return e;
        }
    }
    if ((e = cg_make(cfg->cg_v1_memory)) < 0)
        return e;
    if (present(cfg->cg_v1_memory) && cfg->memory_limit > 0) {
        snprintf(num, sizeof num, "%lld", (long long)cfg->memory_limit);
        if ((e = cg_write(cfg->cg_v1_memory, "memory.limit_in_bytes", num)) < 0)
            return e;
        /* absent without swap accounting; harmless then */
        cg_write(cfg->cg_v1_memory, "memory.memsw.limit_in_bytes", num);
    }
    if ((e = cg_make(cfg->cg_v1_pids)) < 0)
        return e;
    if (present(cfg->cg_v1_pids) && cfg->pids_limit > 0) {
        snprintf(num, sizeof num, "%lld", (long long)cfg->pids_limit);
        if ((e = cg_write(cfg->cg_v1_pids, "pids.max", num)) < 0)
            return e;
    }
    return 0;
}

struct spawn_args {
    const struct sbx_config *cfg;
    int fds[4]; /* stdin, stdout, stderr, report: become 0..3 in the helper */
    volatile int err;
};

/* Runs on a private stack in the caller's memory until execve: syscalls only. */
static int spawn_child(void *p)
{
    struct spawn_args *a = p;
    int high[4];
    for (int i = 0; i < 4; i++) {
        high[i] = fcntl(a->fds[i], F_DUPFD, 10);
        if (high[i] < 0)
            goto fail;
    }
    for (int i = 0; i < 4; i++)
        if (dup2(high[i], i) < 0)
            goto fail;
    execve(a->cfg->helper, a->cfg->argv, a->cfg->envp);
fail:
    a->err = errno;
    _exit(127);
}

static void drain(int *fd, char *buf, int64_t cap, int64_t *len)
{
    char scratch[65536];
    for (;;) {
        char *dst = scratch;
        size_t room = sizeof scratch;
        if (*len < cap) {
            dst = buf + *len;
            room = (size_t)(cap - *len);
        }
        ssize_t n = read(*fd, dst, room);
        if (n > 0) {
            *len += n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        close(*fd); /* EOF or error */
        *fd = -1;
        return;
    }
}

static void kill_box(const struct sbx_config *cfg, int pidfd, struct sbx_result *res)
{
    if (present(cfg->cg_v2) && cg_write(cfg->cg_v2, "cgroup.kill", "1") == 0)
        res->used_cgroup_kill = 1;
    /* the helper is pid 1 of the box: its death takes every process in it along */
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
}

static int64_t cpu_usage_us(const struct sbx_config *cfg)
{
    if (!present(cfg->cg_v2))
        return -1;
    return cg_keyed(cfg->cg_v2, "cpu.stat", "usage_usec");
}

int sbx_run(const struct sbx_config *cfg, struct sbx_result *res)
{
    memset(res, 0, sizeof *res);
    if (!cfg || !present(cfg->helper) || !cfg->argv || !cfg->envp || cfg->output_cap < 0)
        return -1;

    int out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    int pidfd = -1;
    pid_t pid = -1;
    void *stack = MAP_FAILED;
    int e;

    if ((e = setup_cgroups(cfg)) < 0) {
        res->stage = SBX_STAGE_CGROUP;
        res->err = -e;
        goto cleanup;
    }
    if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
        res->stage = SBX_STAGE_SPAWN;
        res->err = errno;
        goto cleanup;
    }
    stack = mmap(NULL, CHILD_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        res->stage = SBX_STAGE_SPAWN;
        res->err = errno;
        goto cleanup;
    }

    struct spawn_args args = {cfg, {cfg->stdin_fd, out[1], err[1], rep[1]}, 0};
    sigset_t all, old;
    sigfillset(&all);
    /* no signal handler of the caller may run on the child's borrowed stack */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int64_t t0 = now_ns();
    pid = clone(spawn_child, (char *)stack + CHILD_STACK,
                CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD | cfg->clone_flags, &args, &pidfd);
    int clone_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        res->stage = SBX_STAGE_SPAWN;
        res->err = clone_errno;
        goto cleanup;
    }
    res->helper_pid = pid;
    close(out[1]);
    close(err[1]);
    close(rep[1]);
    out[1] = err[1] = rep[1] = -1;
    if (args.err) {
        struct rusage ru;
        wait4(pid, NULL, 0, &ru);
        pid = -1;
        res->stage = SBX_STAGE_SPAWN;
        res->err = args.err;
        goto cleanup;
    }
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);

    int64_t deadline = cfg->wall_ms > 0 ? t0 + cfg->wall_ms * 1000000LL : 0;
    int helper_done = 0;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
        ncpu = 1;
    int watch_cpu = cfg->cpu_ms > 0 && present(cfg->cg_v2);
    int64_t drain_deadline = 0;

    while (out[0] >= 0 || err[0] >= 0 || !helper_done) {
        int timeout = -1;
        int64_t now = now_ns();
        if (!helper_done && deadline) {
            if (now >= deadline) {
                res->killed_wall = 1;
                kill_box(cfg, pidfd, res);
                deadline = 0;
                continue;
            }
            timeout = (int)((deadline - now) / 1000000LL) + 1;
        }
        if (!helper_done && watch_cpu) {
            int64_t used = cpu_usage_us(cfg);
            int64_t left = cfg->cpu_ms * 1000 - used;
            if (used >= 0 && left <= 0) {
                res->killed_cpu = 1;
                kill_box(cfg, pidfd, res);
                watch_cpu = 0;
                continue;
            }
            /* cpu time cannot grow faster than wall time times the cores */
            int t = used < 0 ? 10 : (int)(left / 1000 / ncpu);
            if (t < 2)
                t = 2;
            if (t > 100)
                t = 100;
            if (timeout < 0 || t < timeout)
                timeout = t;
        }
        if (helper_done) {
            /* every box process is gone; writers that linger are not ours to wait for */
            if (!drain_deadline)
                drain_deadline = now + 2000000000LL;
            if (now >= drain_deadline)
                break;
            timeout = (int)((drain_deadline - now) / 1000000LL) + 1;
        }
        struct pollfd p[3];
        int np = 0, iout = -1, ierr = -1, ipid = -1;
        if (out[0] >= 0) {
            p[np] = (struct pollfd){out[0], POLLIN, 0};
            iout = np++;
        }
        if (err[0] >= 0) {
            p[np] = (struct pollfd){err[0], POLLIN, 0};
            ierr = np++;
        }
        if (!helper_done) {
            p[np] = (struct pollfd){pidfd, POLLIN, 0};
            ipid = np++;
        }
        int r = poll(p, np, timeout);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            res->stage = SBX_STAGE_SUPERVISE;
            res->err = errno;
            kill_box(cfg, pidfd, res);
            break;
        }
        if (iout >= 0 && p[iout].revents)
            drain(&out[0], cfg->out_buf, cfg->output_cap, &res->out_len);
        if (ierr >= 0 && p[ierr].revents)
            drain(&err[0], cfg->err_buf, cfg->output_cap, &res->err_len);
        if (ipid >= 0 && p[ipid].revents)
            helper_done = 1;
    }

    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (!helper_done)
        kill_box(cfg, pidfd, res);
    while (wait4(pid, NULL, __WALL, &ru) < 0 && errno == EINTR)
        ;
    pid = -1;
    int64_t t1 = now_ns();

    struct sbx_report rp;
    memset(&rp, 0, sizeof rp);
    ssize_t n = read(rep[0], &rp, sizeof rp);
    if (res->stage == SBX_STAGE_NONE) {
        if (n == (ssize_t)sizeof rp && rp.magic == SBX_REPORT_MAGIC) {
            if (rp.stage != SBX_STAGE_NONE) {
                res->stage = rp.stage;
                res->err = rp.err;
            } else {
                res->have_status = 1;
                res->wstatus = rp.wstatus;
            }
        } else if (!res->killed_wall && !res->killed_cpu) {
            res->stage = SBX_STAGE_LOST;
            res->err = 0;
        }
    }
    res->maxrss_kib = rp.maxrss_kib;
    res->wall_us = (n == (ssize_t)sizeof rp && rp.wall_ns > 0) ? rp.wall_ns / 1000 : (t1 - t0) / 1000;

    int64_t cg_cpu = cpu_usage_us(cfg);
    if (cg_cpu >= 0) {
        res->cpu_us = cg_cpu;
        res->cpu_from_cgroup = 1;
    } else {
        /* the helper reaps every process of the box, so its children's usage is the box's */
        res->cpu_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
                      (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    }

    if (present(cfg->cg_v2) && cfg->cg_v2_memory) {
        res->peak_bytes = cg_read_int(cfg->cg_v2, "memory.peak");
        res->mem_source = res->peak_bytes >= 0 ? SBX_MEM_V2_PEAK : SBX_MEM_NONE;
        res->oom_killed = cg_keyed(cfg->cg_v2, "memory.events", "oom_kill") > 0;
    }
    if (res->mem_source == SBX_MEM_NONE && present(cfg->cg_v1_memory)) {
        res->peak_bytes = cg_read_int(cfg->cg_v1_memory, "memory.max_usage_in_bytes");
        res->mem_source = res->peak_bytes >= 0 ? SBX_MEM_V1_MAX_USAGE : SBX_MEM_NONE;
        res->oom_killed = cg_keyed(cfg->cg_v1_memory, "memory.oom_control", "oom_kill") > 0;
    }
    if (res->mem_source == SBX_MEM_NONE && res->maxrss_kib > 0) {
        res->peak_bytes = res->maxrss_kib * 1024;
        res->mem_source = SBX_MEM_RU_MAXRSS;
    }

cleanup:
    if (pid > 0) {
        kill_box(cfg, pidfd, res);
        wait4(pid, NULL, __WALL, NULL);
    }
    if (pidfd >= 0)
        close(pidfd);
    for (int i = 0; i < 2; i++) {
        if (out[i] >= 0)
            close(out[i]);
        if (err[i] >= 0)
            close(err[i]);
        if (rep[i] >= 0)
            close(rep[i]);
    }
    if (stack != MAP_FAILED)
        munmap(stack, CHILD_STACK);
    if (present(cfg->cg_v2))
        cg_write(cfg->cg_v2, "cgroup.kill", "1");
    cg_remove(cfg->cg_v2);
    cg_remove(cfg->cg_v1_memory);
    cg_remove(cfg->cg_v1_pids);
    return 0;
}
