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
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <limits.h>
#include <pthread.h>
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

/* Debug builds (-DSBX_TRACE=\"/path\") append "step monotonic_ns" lines to that file. */
#ifdef SBX_TRACE
static void trace(const char *step)
{
    static int fd = -1;
    if (fd < 0)
        fd = open(SBX_TRACE, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    dprintf(fd, "caller %s %lld\n", step, (long long)now_ns());
}
#else
#define trace(step) ((void)0)
#endif

static int present(const char *s) { return s != NULL && s[0] != '\0'; }

/* Open name in a cgroup directory: relative to its descriptor dfd when there is one
 * (no walk down the whole path), else by path. */
static int cg_open(int dfd, const char *dir, const char *name, int flags)
{
    if (dfd >= 0)
        return openat(dfd, name, flags | O_CLOEXEC);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return open(path, flags | O_CLOEXEC);
}

/* Write a short value to dir/name; returns 0 or -errno. */
static int cg_write(int dfd, const char *dir, const char *name, const char *value)
{
    int fd = cg_open(dfd, dir, name, O_WRONLY);
    if (fd < 0)
        return -errno;
    ssize_t n = write(fd, value, strlen(value));
    int e = n < 0 ? -errno : 0;
    close(fd);
    return e;
}

/* Read dir/name into buf; returns bytes read or -1. */
static ssize_t cg_read(int dfd, const char *dir, const char *name, char *buf, size_t len)
{
    int fd = cg_open(dfd, dir, name, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
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

/* ---- run cgroups and namespaces: prepared ahead, removed after the run ---- */

#define NCG 3 /* cgroup2, v1 memory, v1 pids */
#define MAX_FDS 6
#define MAX_SPARES 8

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool_paused; /* keep nothing for later boxes */

/* cgroup limits of a run */
struct limits {
    int valid;
    int64_t memory, pids;
    int v2_memory, v2_pids;
};

/* the files the figures come from: (cgroup index, name) */
enum { SF_CPU, SF_V2_PEAK, SF_V2_EVENTS, SF_V1_MAX, SF_V1_OOM, NSF };
static const struct {
    int cg;
    const char *name;
} stat_files[NSF] = {
    {0, "cpu.stat"}, {0, "memory.peak"}, {0, "memory.events"},
    {1, "memory.max_usage_in_bytes"}, {1, "memory.oom_control"},
};

/* The resources of one box, and what has to go once it is done. */
struct box_res {
    char cg[NCG][PATH_MAX]; /* run cgroups, "" when absent */
    int cgdir[NCG];         /* their directories (O_PATH), or -1 */
    int fds[MAX_FDS];       /* namespaces kept alive past the helper, torn down later */
    int nfds;
    int netfd;              /* its network namespace, or -1 */
    int own_pidns;          /* it had its own pid namespace: the helper's death ends it all */
    unsigned reused;        /* bit i: cg[i] served an earlier box (its limits stay written) */
    int64_t cpu_base_us;    /* usage_usec of a reused cgroup2 cgroup before this box */
    /* a prepared helper (-P) waiting for its run, or pid 0 */
    pid_t pid;
    int pidfd, out, err, rep, req;
    unsigned long mount_gen; /* the caller's mount table it copied (see mounts_changed) */
    struct limits lim;       /* written by the background thread (valid) */
    int sfd[NSF];            /* figures files opened ahead, read with pread */
    struct box_res *next;
};

static struct box_res *box_new(void)
{
    struct box_res *b = calloc(1, sizeof *b);
    if (b) {
        b->pidfd = b->out = b->err = b->rep = b->req = b->netfd = -1;
        for (int i = 0; i < NSF; i++)
            b->sfd[i] = -1;
        for (int i = 0; i < NCG; i++)
            b->cgdir[i] = -1;
    }
    return b;
}

/* Read one of the figures files of the box into buf: the one opened ahead, or by path. */
static ssize_t box_read(const struct box_res *b, int which, char *buf, size_t len)
{
    if (b->sfd[which] < 0)
        return cg_read(b->cgdir[stat_files[which].cg], b->cg[stat_files[which].cg], stat_files[which].name, buf, len);
    ssize_t n = pread(b->sfd[which], buf, len - 1, 0);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

static int64_t box_read_int(const struct box_res *b, int which)
{
    char buf[64];
    if (box_read(b, which, buf, sizeof buf) <= 0 || strncmp(buf, "max", 3) == 0)
        return -1;
    return strtoll(buf, NULL, 10);
}

static int64_t box_keyed(const struct box_res *b, int which, const char *key)
{
    char buf[4096];
    if (box_read(b, which, buf, sizeof buf) <= 0)
        return -1;
    return keyed_value(buf, key);
}

/* Remove a run cgroup; right after the last task exits the kernel may still say EBUSY. */
static void cg_remove(const char *dir)
{
    if (!present(dir))
        return;
    for (int i = 0; i < 2000; i++) {
        if (rmdir(dir) == 0 || errno == ENOENT)
            return;
        if (errno != EBUSY)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

/* Run cgroups emptied by finished boxes, kept for later ones, per hierarchy.  Only
 * those whose figures can be made per-run are: cgroup2 without the memory controller
 * (cpu.stat is read against a base) and v1 pids (nothing is read).  A memory cgroup
 * keeps charges (page cache, kernel objects) past its tasks and its peak cannot be
 * reset below them, so it is always fresh. */
struct kept_cg {
    char path[PATH_MAX];
    int dir;  /* its directory (O_PATH) */
    int stat; /* its cpu.stat (cgroup2), or -1 */
};
static struct kept_cg reuse_cg[NCG][MAX_SPARES];
static int n_reuse_cg[NCG];

static void kept_cg_remove(struct kept_cg *k)
{
    if (k->stat >= 0)
        close(k->stat);
    close(k->dir);
    cg_remove(k->path);
}

static int cg_reusable(const struct box_res *b, int i)
{
    return (i == 0 && b->lim.valid && !b->lim.v2_memory) || i == 2;
}

/* No task in the box's cgroup i (its cgroup.procs reads empty). */
static int cg_empty(const struct box_res *b, int i)
{
    char buf[16];
    return cg_read(b->cgdir[i], b->cg[i], "cgroup.procs", buf, sizeof buf) == 0;
}

/* Keep the box's emptied cgroup i (and its descriptors) for a later box; 0 when it is
 * not wanted. */
static int keep_cgroup(struct box_res *b, int i)
{
    int kept = 0;
    pthread_mutex_lock(&pool_mu);
    if (!pool_paused && n_reuse_cg[i] < MAX_SPARES && b->cgdir[i] >= 0) {
        struct kept_cg *k = &reuse_cg[i][n_reuse_cg[i]++];
        snprintf(k->path, PATH_MAX, "%s", b->cg[i]);
        k->dir = b->cgdir[i];
        k->stat = i == stat_files[SF_CPU].cg ? b->sfd[SF_CPU] : -1;
        b->cgdir[i] = -1;
        if (k->stat >= 0)
            b->sfd[SF_CPU] = -1;
        kept = 1;
    }
    pthread_mutex_unlock(&pool_mu);
    return kept;
}

/* Give the box a kept cgroup i under parent; 0 when there is none. */
static int take_cgroup(struct box_res *b, int i, const char *parent)
{
    int found = 0;
    size_t pl = strlen(parent);
    pthread_mutex_lock(&pool_mu);
    for (int k = n_reuse_cg[i] - 1; k >= 0 && !found; k--) {
        struct kept_cg *c = &reuse_cg[i][k];
        if (strncmp(c->path, parent, pl) == 0 && strncmp(c->path + pl, "/conveyor-sbx-", 14) == 0 &&
            !strchr(c->path + pl + 1, '/')) {
            snprintf(b->cg[i], PATH_MAX, "%s", c->path);
            b->cgdir[i] = c->dir;
            if (c->stat >= 0)
                b->sfd[SF_CPU] = c->stat;
            memmove(c, c + 1, (size_t)(n_reuse_cg[i] - k - 1) * sizeof *c);
            n_reuse_cg[i]--;
            found = 1;
        }
    }
    pthread_mutex_unlock(&pool_mu);
    return found;
}

/* Kill what may be left, tear the namespaces down, remove the cgroups: rmdir fails
 * on a cgroup that still has a task, so a removed cgroup is an empty one.
 * keep: keep what a later box may reuse: emptied cgroups (see reuse_cg), and the
 * network namespace, returned instead of closed when no process of the box can be
 * left in it (its pid namespace died with the helper); else -1 is returned. */
static int box_release(struct box_res *b, int keep)
{
    if (b->req >= 0)
        close(b->req); /* an unused prepared helper exits on EOF */
    if (b->pid > 0) {
        syscall(SYS_pidfd_send_signal, b->pidfd, SIGKILL, NULL, 0);
        while (waitpid(b->pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
    }
    int own[] = {b->pidfd, b->out, b->err, b->rep};
    for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
        if (own[i] >= 0)
            close(own[i]);
    for (int i = 0; i < b->nfds; i++)
        close(b->fds[i]);
    if (present(b->cg[0]))
        cg_write(b->cgdir[0], b->cg[0], "cgroup.kill", "1");
    for (int i = 0; i < NCG; i++) {
        if (!present(b->cg[i]))
            continue;
        if (keep && b->own_pidns && cg_reusable(b, i) && cg_empty(b, i) && keep_cgroup(b, i))
            continue;
        if (b->cgdir[i] >= 0)
            close(b->cgdir[i]);
        cg_remove(b->cg[i]);
    }
    for (int i = 0; i < NSF; i++)
        if (b->sfd[i] >= 0)
            close(b->sfd[i]);
    int net = b->netfd;
    if (net >= 0 && !(keep && b->own_pidns)) {
        close(net);
        net = -1;
    }
    free(b);
    return net;
}

static unsigned long cg_counter;

/* A run cgroup under each present parent: an emptied one kept for reuse where the
 * figures allow it (v2_memory: the cgroup2 one has the memory controller), else a
 * fresh one.  Limits written before stay: write them all (write_limits with over). */
static int box_make_cgroups(struct box_res *b, char parents[NCG][PATH_MAX], int v2_memory)
{
    unsigned long n = __atomic_add_fetch(&cg_counter, 1, __ATOMIC_RELAXED);
    b->cpu_base_us = 0;
    for (int i = 0; i < NCG; i++) {
        b->cg[i][0] = '\0';
        if (!present(parents[i]))
            continue;
        int reusable = i == 2 || (i == 0 && !v2_memory);
        if (reusable && take_cgroup(b, i, parents[i])) {
            b->reused |= 1u << i;
            if (i == 0) {
                int64_t base = box_keyed(b, SF_CPU, "usage_usec");
                b->cpu_base_us = base > 0 ? base : 0;
            }
            continue;
        }
        snprintf(b->cg[i], PATH_MAX, "%s/conveyor-sbx-%d-%lu", parents[i], (int)getpid(), n);
        if (mkdir(b->cg[i], 0755) < 0) {
            int e = errno;
            b->cg[i][0] = '\0';
            for (int j = 0; j < i; j++) {
                if (b->cgdir[j] >= 0)
                    close(b->cgdir[j]);
                b->cgdir[j] = -1;
                rmdir(b->cg[j]);
                b->cg[j][0] = '\0';
            }
            return -e;
        }
        b->cgdir[i] = open(b->cg[i], O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (reusable)
            chmod(b->cg[i], 0700); /* its counters (cpu.stat) will hold earlier boxes' figures */
    }
    return 0;
}

/* A fresh network namespace, made by the calling thread alone, as a descriptor. */
static int make_netns(int home)
{
    if (unshare(CLONE_NEWNET) < 0)
        return -1;
    int fd = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (home >= 0)
        setns(home, CLONE_NEWNET); /* the thread goes back; a failure only strands the thread */
    return fd;
}

/* True when a network namespace holds no unix socket.  A box has no capability there
 * (interfaces, routes and sysctls stay as made) and seccomp lets it create unix sockets
 * only, so once every process of the box is gone an empty namespace is as good as a
 * fresh one: no abstract name bound, nothing queued.  A socket that outlived the box
 * (in flight, awaiting garbage collection, or handed to a process outside) shows here. */
static int netns_empty(int fd, int home)
{
    if (home < 0 || setns(fd, CLONE_NEWNET) < 0)
        return 0;
    int list = open("/proc/thread-self/net/unix", O_RDONLY | O_CLOEXEC);
    char buf[512];
    ssize_t n = 0, got;
    while (list >= 0 && n < (ssize_t)sizeof buf && (got = read(list, buf + n, sizeof buf - n)) > 0)
        n += got;
    if (list >= 0)
        close(list);
    setns(home, CLONE_NEWNET);
    if (list < 0 || n <= 0 || n == (ssize_t)sizeof buf)
        return 0;
    const char *nl = memchr(buf, '\n', (size_t)n);
    return nl != NULL && nl + 1 == buf + n; /* the header line alone */
}

struct spawn_args {
    const char *helper;
    char *const *argv;
    char *const *envp;
    int fds[5]; /* stdin, stdout, stderr, report[, request]: become 0..nfds-1 in the helper */
    int nfds;
    int netfd;  /* prepared network namespace to enter, or -1 */
    volatile int err;
};

/* Runs on a private stack in the caller's memory until execve: syscalls only. */
static int spawn_child(void *p)
{
    struct spawn_args *a = p;
    int high[5];
    /* the box dies with the thread that started it, whatever kills the process (kept across
     * execve: the helper is not set-id); a caller killed before this line is caught by the
     * helper itself (see its report-pipe check) */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        goto fail;
    if (a->netfd >= 0 && setns(a->netfd, CLONE_NEWNET) < 0)
        goto fail;
    for (int i = 0; i < a->nfds; i++) {
        high[i] = fcntl(a->fds[i], F_DUPFD, 10);
        if (high[i] < 0)
            goto fail;
    }
    for (int i = 0; i < a->nfds; i++)
        if (dup2(high[i], i) < 0)
            goto fail;
    execve(a->helper, a->argv, a->envp);
fail:
    a->err = errno;
    _exit(127);
}

/* Start the helper with CLONE_VFORK: returns its pid (and pidfd), or -1 with errno. */
static pid_t spawn_helper(struct spawn_args *args, int flags, int *pidfd)
{
    void *stack = malloc(CHILD_STACK);
    if (!stack)
        return -1;
    if (args->netfd >= 0)
        flags &= ~CLONE_NEWNET; /* a prepared, empty one is entered instead */
    sigset_t all, old;
    sigfillset(&all);
    /* no signal handler of the caller may run on the child's borrowed stack */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(spawn_child, (char *)stack + CHILD_STACK,
                      CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD | flags, args, pidfd);
    int e = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    free(stack);
    if (pid > 0 && args->err) {
        wait4(pid, NULL, __WALL, NULL);
        close(*pidfd);
        *pidfd = -1;
        errno = args->err;
        return -1;
    }
    errno = e;
    return pid;
}

/* pidfd ioctls (Linux 6.11) giving a process's namespaces as descriptors */
#define SBX_PIDFD_GET_IPC_NAMESPACE 0xFF02
#define SBX_PIDFD_GET_MNT_NAMESPACE 0xFF03
#define SBX_PIDFD_GET_NET_NAMESPACE 0xFF04
#define SBX_PIDFD_GET_UTS_NAMESPACE 0xFF0A

/* Hold the box's namespaces: their teardown then happens in the background thread
 * after the run, not in the helper's exit before the caller hears of it.
 * fetch_net: the helper made its own network namespace (not one we hold already). */
static void hold_namespaces(struct box_res *b, int pidfd, int fetch_net)
{
    static const unsigned long ns_req[] = {SBX_PIDFD_GET_MNT_NAMESPACE, SBX_PIDFD_GET_IPC_NAMESPACE,
                                           SBX_PIDFD_GET_UTS_NAMESPACE, SBX_PIDFD_GET_NET_NAMESPACE};
    for (size_t i = 0; i < sizeof ns_req / sizeof ns_req[0] && b->nfds < MAX_FDS; i++) {
        if (ns_req[i] == SBX_PIDFD_GET_NET_NAMESPACE && !fetch_net)
            continue; /* held already, or the caller's own */
        int fd = ioctl(pidfd, ns_req[i], 0);
        if (fd < 0)
            break; /* an older kernel: the helper's exit tears them down */
        if (ns_req[i] == SBX_PIDFD_GET_NET_NAMESPACE)
            b->netfd = fd;
        else
            b->fds[b->nfds++] = fd;
    }
}

static pthread_cond_t pool_work = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_idle = PTHREAD_COND_INITIALIZER;
static int pool_spares = 2;         /* target per kind */
static pid_t pool_tid;              /* the thread, once it runs as SCHED_IDLE; else 0 */
static int pool_flushers;           /* sbx_flush calls waiting for it: it runs normally */
/* scheduling of the thread that asked for the last run: a prepared helper gets it */
static int caller_policy, caller_nice;
static struct sched_param caller_param;
static int pool_started, pool_busy, pool_idle_flag;
static char pool_parents[NCG][PATH_MAX];
static int pool_want_cg, pool_cg_failed, pool_want_net, pool_net_failed;
static int pool_cg_v2_memory = 1; /* of the spare cgroups' layout */
static struct box_res *spare_cg[MAX_SPARES];
static int n_spare_cg;
static int spare_net[MAX_SPARES];
static int n_spare_net;
static int reuse_net[MAX_SPARES]; /* left empty by finished boxes (see netns_empty) */
static int n_reuse_net;
static struct box_res *jobs_head, *jobs_tail;
static int n_jobs;
#define MAX_JOBS (4 * MAX_SPARES) /* spent boxes waiting; past that, runs release their own */
/* prepared boxes: a helper already in its namespaces and cgroups, waiting (-P) */
static int pool_want_ready, pool_ready_failed, pool_ready_flags;
static struct limits pool_lim; /* of the last run: prepared boxes get them ahead */
static char pool_ready_parents[NCG][PATH_MAX];
static char pool_helper[PATH_MAX];
static struct box_res *ready_box[MAX_SPARES];
static int n_ready;
static unsigned long mount_gen; /* bumped whenever the caller's mount table changed */
static int mounts_fd = -1;

/* A network namespace for a box: one a finished box left empty, else a fresh one. */
static int take_netns(int home)
{
    int fd = -1;
    pthread_mutex_lock(&pool_mu);
    if (n_reuse_net > 0)
        fd = reuse_net[--n_reuse_net];
    pthread_mutex_unlock(&pool_mu);
    return fd >= 0 ? fd : make_netns(home);
}

/* Release a spent box in the background thread; its network namespace is kept for a
 * later box when nothing of this one is left in it. */
static void box_release_keep(struct box_res *b, int home)
{
    int net = box_release(b, 1);
    if (net < 0)
        return;
    int keep = netns_empty(net, home);
    pthread_mutex_lock(&pool_mu);
    if (keep && !pool_paused && n_reuse_net < MAX_SPARES) {
        reuse_net[n_reuse_net++] = net;
        net = -1;
    }
    pthread_mutex_unlock(&pool_mu);
    if (net >= 0)
        close(net);
}

/* A prepared box copied the caller's mount table when it was made: after a mount or
 * unmount in the caller's namespace it would show a stale view, so it is not used.
 * /proc/self/mounts polls POLLPRI once per change.  Called with pool_mu held. */
static void mounts_changed_locked(void)
{
    if (mounts_fd < 0) {
        mounts_fd = open("/proc/self/mounts", O_RDONLY | O_CLOEXEC);
        mount_gen++;
        return;
    }
    struct pollfd pf = {mounts_fd, POLLPRI, 0};
    if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLPRI | POLLERR)))
        mount_gen++;
}

/* Write the limits into the box's cgroups.  over: limits were written before (as in
 * a cgroup an earlier box used), so "none" is written out too, and v1 memsw goes around
 * memory (it may not be lower). */
static int write_limits(struct box_res *b, const struct limits *l, int over)
{
    char num[32];
    int e;
    if (present(b->cg[0])) {
        int o = over || (b->reused & 1u);
        if (l->v2_memory && (l->memory > 0 || o)) {
            snprintf(num, sizeof num, l->memory > 0 ? "%lld" : "max", (long long)l->memory);
            if ((e = cg_write(b->cgdir[0], b->cg[0], "memory.max", num)) < 0)
                return e;
            cg_write(b->cgdir[0], b->cg[0], "memory.swap.max", "0");
        }
        if (l->v2_pids && (l->pids > 0 || o)) {
            snprintf(num, sizeof num, l->pids > 0 ? "%lld" : "max", (long long)l->pids);
            if ((e = cg_write(b->cgdir[0], b->cg[0], "pids.max", num)) < 0)
                return e;
        }
    }
    if (present(b->cg[1]) && (l->memory > 0 || over)) { /* never reused */
        snprintf(num, sizeof num, "%lld", (long long)(l->memory > 0 ? l->memory : -1));
        if (over) /* absent without swap accounting; harmless then */
            cg_write(b->cgdir[1], b->cg[1], "memory.memsw.limit_in_bytes", num);
        if ((e = cg_write(b->cgdir[1], b->cg[1], "memory.limit_in_bytes", num)) < 0)
            return e;
        cg_write(b->cgdir[1], b->cg[1], "memory.memsw.limit_in_bytes", num);
    }
    if (present(b->cg[2]) && (l->pids > 0 || over || (b->reused & 4u))) {
        snprintf(num, sizeof num, l->pids > 0 ? "%lld" : "max", (long long)l->pids);
        if ((e = cg_write(b->cgdir[2], b->cg[2], "pids.max", num)) < 0)
            return e;
    }
    b->lim = *l;
    return 0;
}

/* Run cgroups, an empty network namespace if flags ask for one, and a helper started
 * in them with -P: everything of a box but what the run brings. NULL on failure. */
static struct box_res *make_ready(char parents[NCG][PATH_MAX], int flags, const char *helper, int home,
                                  const struct limits *lim)
{
    struct box_res *b = box_new();
    if (!b)
        return NULL;
    char procs[NCG][PATH_MAX + 16];
    char *argv[3 + 2 * NCG] = {(char *)helper, "-P"};
    char *envp[] = {NULL};
    static int devnull = -1; /* stdin until the run's arrives; only this thread uses it */
    int k = 2, netfd = -1;
    int out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1}, req[2] = {-1, -1};
    if (box_make_cgroups(b, parents, !lim->valid || lim->v2_memory) < 0)
        goto fail;
    if (lim->valid && write_limits(b, lim, 0) < 0)
        b->lim.valid = 0; /* the run writes them and reports why */
    for (int i = 0; i < NSF; i++) {
        int cg = stat_files[i].cg;
        if (!present(b->cg[cg]) || b->sfd[i] >= 0 || (lim->valid && !lim->v2_memory && (i == SF_V2_PEAK || i == SF_V2_EVENTS)))
            continue;
        b->sfd[i] = cg_open(b->cgdir[cg], b->cg[cg], stat_files[i].name, O_RDONLY);
    }
    for (int i = 0; i < NCG; i++) {
        if (!present(b->cg[i]))
            continue;
        snprintf(procs[i], sizeof procs[i], "%s/cgroup.procs", b->cg[i]);
        argv[k++] = "-c";
        argv[k++] = procs[i];
    }
    argv[k] = NULL;
    b->own_pidns = (flags & CLONE_NEWPID) != 0;
    if (flags & CLONE_NEWNET) {
        if ((netfd = take_netns(home)) < 0)
            goto fail;
        b->netfd = netfd;
    }
    if (devnull < 0)
        devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (devnull < 0 || pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0 ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, req) < 0)
        goto fail;
    struct spawn_args args = {helper, argv, envp, {devnull, out[1], err[1], rep[1], req[1]}, 5, netfd, 0};
    b->pid = spawn_helper(&args, flags, &b->pidfd);
    if (b->pid < 0) {
        b->pid = 0;
        goto fail;
    }
    hold_namespaces(b, b->pidfd, 0);
    b->out = out[0];
    b->err = err[0];
    b->rep = rep[0];
    b->req = req[0];
    out[0] = err[0] = rep[0] = req[0] = -1;
    fcntl(b->out, F_SETFL, O_NONBLOCK);
    fcntl(b->err, F_SETFL, O_NONBLOCK);
fail:
    for (int i = 0; i < 2; i++) {
        int fds[] = {out[i], err[i], rep[i], req[i]};
        for (size_t j = 0; j < 4; j++)
            if (fds[j] >= 0)
                close(fds[j]);
    }
    if (b->pid <= 0) {
        box_release(b, 0);
        return NULL;
    }
    return b;
}

static void push_job(struct box_res *b)
{
    n_jobs++;
    b->next = NULL;
    if (jobs_tail)
        jobs_tail->next = b;
    else
        jobs_head = b;
    jobs_tail = b;
}

/* Background thread: keeps spares ready first, then cleans up spent boxes. */
static void *pool_main(void *unused)
{
    (void)unused;
    int home = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    /* background work (and prepared helpers until taken) only uses otherwise idle cpu:
     * a waking run preempts it at once */
    struct sched_param none = {0};
    pid_t tid = (pid_t)syscall(SYS_gettid);
    pthread_mutex_lock(&pool_mu);
    if (sched_setscheduler(tid, SCHED_IDLE, &none) == 0) {
        pool_tid = tid;
        if (pool_flushers)
            sched_setscheduler(tid, SCHED_OTHER, &none);
    }
    for (;;) {
        if (!pool_paused && pool_want_ready && !pool_ready_failed && n_ready < pool_spares) {
            char parents[NCG][PATH_MAX], helper[PATH_MAX];
            int flags = pool_ready_flags;
            unsigned long gen = mount_gen;
            struct limits lim = pool_lim;
            memcpy(parents, pool_ready_parents, sizeof parents);
            memcpy(helper, pool_helper, sizeof helper);
            pool_busy = 1;
            pthread_mutex_unlock(&pool_mu);
            struct box_res *b = make_ready(parents, flags, helper, home, &lim);
            pthread_mutex_lock(&pool_mu);
            pool_busy = 0;
            if (b)
                b->mount_gen = gen;
            if (!b)
                pool_ready_failed = 1; /* runs start their own helper */
            else if (pool_paused || flags != pool_ready_flags || memcmp(parents, pool_ready_parents, sizeof parents) ||
                     strcmp(helper, pool_helper) != 0)
                push_job(b);
            else
                ready_box[n_ready++] = b;
            continue;
        }
        if (!pool_paused && pool_want_cg && !pool_cg_failed && n_spare_cg < pool_spares) {
            char parents[NCG][PATH_MAX];
            memcpy(parents, pool_parents, sizeof parents);
            int v2_memory = pool_cg_v2_memory;
            pool_busy = 1;
            pthread_mutex_unlock(&pool_mu);
            struct box_res *b = box_new();
            int e = b ? box_make_cgroups(b, parents, v2_memory) : -ENOMEM;
            pthread_mutex_lock(&pool_mu);
            pool_busy = 0;
            if (e < 0) {
                pool_cg_failed = 1; /* the run makes its own and reports why */
                free(b);
            } else if (pool_paused || memcmp(parents, pool_parents, sizeof parents) != 0 ||
                       n_spare_cg >= MAX_SPARES) {
                push_job(b);
            } else {
                spare_cg[n_spare_cg++] = b;
            }
            continue;
        }
        if (!pool_paused && pool_want_net && !pool_net_failed && n_spare_net < pool_spares) {
            pool_busy = 1;
            pthread_mutex_unlock(&pool_mu);
            int fd = take_netns(home);
            pthread_mutex_lock(&pool_mu);
            pool_busy = 0;
            if (fd < 0)
                pool_net_failed = 1; /* runs fall back to CLONE_NEWNET */
            else if (pool_paused || n_spare_net >= MAX_SPARES)
                close(fd);
            else
                spare_net[n_spare_net++] = fd;
            continue;
        }
        if (jobs_head) {
            struct box_res *b = jobs_head;
            jobs_head = b->next;
            if (!jobs_head)
                jobs_tail = NULL;
            n_jobs--;
            pool_busy = 1;
            pthread_mutex_unlock(&pool_mu);
            box_release_keep(b, home);
            pthread_mutex_lock(&pool_mu);
            pool_busy = 0;
            continue;
        }
        pool_idle_flag = 1;
        pthread_cond_broadcast(&pool_idle);
        pthread_cond_wait(&pool_work, &pool_mu);
        pool_idle_flag = 0;
    }
    return NULL;
}

static void pool_atfork_prepare(void) { pthread_mutex_lock(&pool_mu); }
static void pool_atfork_parent(void) { pthread_mutex_unlock(&pool_mu); }

/* The thread does not survive a fork and the spares are the parent's: forget them. */
static void pool_atfork_child(void)
{
    for (int i = 0; i < n_spare_net; i++)
        close(spare_net[i]);
    n_spare_net = 0;
    for (int i = 0; i < n_reuse_net; i++)
        close(reuse_net[i]);
    n_reuse_net = 0;
    for (int i = 0; i < NCG; i++) {
        for (int k = 0; k < n_reuse_cg[i]; k++) { /* the parent's to reuse or remove */
            close(reuse_cg[i][k].dir);
            if (reuse_cg[i][k].stat >= 0)
                close(reuse_cg[i][k].stat);
        }
        n_reuse_cg[i] = 0;
    }
    for (int i = 0; i < n_spare_cg; i++)
        free(spare_cg[i]);
    n_spare_cg = 0;
    for (int i = 0; i < n_ready; i++) {
        struct box_res *b = ready_box[i];
        int own[] = {b->pidfd, b->out, b->err, b->rep, b->req};
        for (size_t j = 0; j < sizeof own / sizeof own[0]; j++)
            if (own[j] >= 0)
                close(own[j]);
        for (int j = 0; j < b->nfds; j++)
            close(b->fds[j]);
        if (b->netfd >= 0)
            close(b->netfd);
        for (int j = 0; j < NSF; j++)
            if (b->sfd[j] >= 0)
                close(b->sfd[j]);
        free(b);
    }
    n_ready = 0;
    if (mounts_fd >= 0)
        close(mounts_fd); /* its change events are shared with the parent's descriptor */
    mounts_fd = -1;
    while (jobs_head) {
        struct box_res *b = jobs_head;
        jobs_head = b->next;
        for (int i = 0; i < b->nfds; i++)
            close(b->fds[i]);
        if (b->netfd >= 0)
            close(b->netfd);
        free(b);
    }
    jobs_tail = NULL;
    pool_started = pool_busy = 0;
    pool_tid = 0;
    pool_flushers = n_jobs = 0;
    pthread_mutex_init(&pool_mu, NULL);
    pthread_cond_init(&pool_work, NULL);
    pthread_cond_init(&pool_idle, NULL);
}

/* A prepared helper, made by the idle-priority thread, gets the caller's scheduling. */
static int give_caller_sched(pid_t pid)
{
    if (!pool_tid)
        return 0; /* made at the caller's already */
    if (sched_setscheduler(pid, caller_policy, &caller_param) < 0)
        return -1;
    return setpriority(PRIO_PROCESS, (id_t)pid, caller_nice);
}

/* While someone waits for the thread, it runs as a normal thread: a busy host must not
 * starve a flush.  Called with pool_mu held. */
static void pool_boost_locked(int on)
{
    struct sched_param none = {0};
    pool_flushers += on ? 1 : -1;
    if (pool_tid && pool_flushers == (on ? 1 : 0))
        sched_setscheduler(pool_tid, on ? SCHED_OTHER : SCHED_IDLE, &none);
}

static void pool_start_locked(void)
{
    errno = 0;
    int n = getpriority(PRIO_PROCESS, 0); /* the calling thread's */
    caller_nice = errno ? 0 : n;
    caller_policy = sched_getscheduler(0) & ~SCHED_RESET_ON_FORK;
    if (caller_policy < 0 || sched_getparam(0, &caller_param) < 0) {
        caller_policy = SCHED_OTHER;
        caller_param.sched_priority = 0;
    }
    static int atfork_done;
    if (pool_started || pool_spares <= 0)
        return;
    if (!atfork_done) {
        pthread_atfork(pool_atfork_prepare, pool_atfork_parent, pool_atfork_child);
        atfork_done = 1;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the thread takes no signal of the caller's */
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    if (pthread_create(&t, &attr, pool_main, NULL) == 0)
        pool_started = 1;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void sbx_set_spares(int n)
{
    pthread_mutex_lock(&pool_mu);
    pool_spares = n < 0 ? 0 : n > MAX_SPARES ? MAX_SPARES : n;
    pthread_mutex_unlock(&pool_mu);
    if (n <= 0)
        sbx_flush(1);
}

void sbx_flush(int drop_spares)
{
    struct box_res *cgs[2 * MAX_SPARES];
    int nets[2 * MAX_SPARES], ncg = 0, nnet = 0;
    pthread_mutex_lock(&pool_mu);
    if (drop_spares) {
        pool_paused = 1;
        ncg = n_spare_cg;
        memcpy(cgs, spare_cg, sizeof(cgs[0]) * ncg);
        n_spare_cg = 0;
        nnet = n_spare_net;
        memcpy(nets, spare_net, sizeof(nets[0]) * nnet);
        n_spare_net = 0;
        memcpy(cgs + ncg, ready_box, sizeof(cgs[0]) * n_ready);
        ncg += n_ready;
        n_ready = 0;
    }
    pool_idle_flag = 0;
    pthread_cond_signal(&pool_work);
    pool_boost_locked(1);
    /* the thread goes idle only with no job left and every wanted spare made */
    while (pool_started && (jobs_head || pool_busy || !pool_idle_flag))
        pthread_cond_wait(&pool_idle, &pool_mu);
    pool_boost_locked(0);
    if (drop_spares) { /* paused: no more are kept */
        memcpy(nets + nnet, reuse_net, sizeof(nets[0]) * n_reuse_net);
        nnet += n_reuse_net;
        n_reuse_net = 0;
        for (int i = 0; i < NCG; i++) {
            while (n_reuse_cg[i] > 0)
                kept_cg_remove(&reuse_cg[i][--n_reuse_cg[i]]); /* empty: no wait */
        }
    }
    pthread_mutex_unlock(&pool_mu);
    for (int i = 0; i < ncg; i++)
        box_release(cgs[i], 0);
    for (int i = 0; i < nnet; i++)
        close(nets[i]);
}

/* Take this run's cgroups (and network namespace) from the spares, or make them. */
static struct box_res *box_acquire(const struct sbx_config *cfg, int want_net, int allow_ready, int *netfd, int *err)
{
    char parents[NCG][PATH_MAX];
    const char *given[NCG] = {cfg->cg_v2, cfg->cg_v1_memory, cfg->cg_v1_pids};
    int want_cg = 0;
    memset(parents, 0, sizeof parents); /* compared whole with memcmp */
    for (int i = 0; i < NCG; i++) {
        snprintf(parents[i], PATH_MAX, "%s", present(given[i]) ? given[i] : "");
        want_cg |= present(given[i]);
    }
    struct box_res *b = NULL;
    *netfd = -1;
#ifdef SBX_TRACE
    int spare_used = 0;
#endif
    pthread_mutex_lock(&pool_mu);
    pool_paused = 0;
    pool_start_locked();
    allow_ready = allow_ready && pool_started && strlen(cfg->helper) < PATH_MAX;
    if (allow_ready) {
        if (cfg->clone_flags != pool_ready_flags || memcmp(parents, pool_ready_parents, sizeof parents) != 0 ||
            strcmp(cfg->helper, pool_helper) != 0) {
            /* another kind of box: the prepared ones are spent */
            while (n_ready > 0)
                push_job(ready_box[--n_ready]);
            pool_ready_flags = cfg->clone_flags;
            memcpy(pool_ready_parents, parents, sizeof parents);
            snprintf(pool_helper, sizeof pool_helper, "%s", cfg->helper);
            pool_ready_failed = 0;
        }
        pool_want_ready = 1;
        pool_lim = (struct limits){1, cfg->memory_limit, cfg->pids_limit, cfg->cg_v2_memory, cfg->cg_v2_pids};
        mounts_changed_locked();
        while (n_ready > 0 && !b) {
            struct box_res *r = ready_box[--n_ready];
            struct pollfd pf = {r->pidfd, POLLIN, 0};
            if (r->mount_gen == mount_gen && poll(&pf, 1, 0) == 0 && give_caller_sched(r->pid) == 0)
                b = r;
            else
                push_job(r); /* stale view of the mounts, or its helper died waiting */
        }
        if (b || !pool_ready_failed) {
            pool_idle_flag = 0;
            pthread_cond_signal(&pool_work);
            pthread_mutex_unlock(&pool_mu);
            if (b) {
#ifdef SBX_TRACE
                trace("ready_box");
#endif
                return b;
            }
            pthread_mutex_lock(&pool_mu);
            goto make; /* made on the spot this once: no spares of these */
        }
    }
    if (pool_started && want_cg) {
        if (memcmp(parents, pool_parents, sizeof parents) != 0) {
            /* another layout: spares made for the old one are spent */
            while (n_spare_cg > 0)
                push_job(spare_cg[--n_spare_cg]);
            memcpy(pool_parents, parents, sizeof parents);
            pool_cg_failed = 0;
        }
        if (pool_cg_v2_memory != cfg->cg_v2_memory) {
            while (n_spare_cg > 0)
                push_job(spare_cg[--n_spare_cg]);
            pool_cg_v2_memory = cfg->cg_v2_memory;
        }
        pool_want_cg = 1;
        if (n_spare_cg > 0)
            b = spare_cg[--n_spare_cg];
#ifdef SBX_TRACE
        spare_used = b != NULL;
#endif
    }
    if (pool_started && want_net) {
        pool_want_net = 1;
        if (n_spare_net > 0)
            *netfd = spare_net[--n_spare_net];
    }
make:
    if (want_net && *netfd < 0 && n_reuse_net > 0)
        *netfd = reuse_net[--n_reuse_net]; /* rather than a new one on the caller's path */
    if (pool_started) {
        pool_idle_flag = 0;
        pthread_cond_signal(&pool_work);
    }
    pthread_mutex_unlock(&pool_mu);
    if (!b) {
        b = box_new();
        if (!b) {
            *err = ENOMEM;
            goto fail;
        }
        int e = want_cg ? box_make_cgroups(b, parents, cfg->cg_v2_memory) : 0;
        if (e < 0) {
            *err = -e;
            free(b);
            b = NULL;
            goto fail;
        }
    }
    b->netfd = *netfd;
    b->own_pidns = (cfg->clone_flags & CLONE_NEWPID) != 0;
#ifdef SBX_TRACE
    trace(spare_used ? "spare_cg" : "made_cg");
#endif
    return b;
fail:
    if (*netfd >= 0)
        close(*netfd);
    *netfd = -1;
    return NULL;
}

/* Spent: the background thread removes it, or we do it now when there is none. */
static void box_done(struct box_res *b)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_started && n_jobs < MAX_JOBS) { /* the thread may be starved by a busy host */
        push_job(b);
        pool_idle_flag = 0;
        pthread_cond_signal(&pool_work);
        b = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
    if (b)
        box_release(b, 0);
}

static int setup_cgroups(const struct sbx_config *cfg, struct box_res *b)
{
    struct limits want = {1, cfg->memory_limit, cfg->pids_limit, cfg->cg_v2_memory, cfg->cg_v2_pids};
    if (b->lim.valid && b->lim.memory == want.memory && b->lim.pids == want.pids &&
        b->lim.v2_memory == want.v2_memory && b->lim.v2_pids == want.v2_pids)
        return 0; /* written ahead */
    return write_limits(b, &want, b->lim.valid);
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

static void kill_box(const struct box_res *b, int pidfd, struct sbx_result *res)
{
    if (b && present(b->cg[0]) && cg_write(b->cgdir[0], b->cg[0], "cgroup.kill", "1") == 0)
        res->used_cgroup_kill = 1;
    /* the helper is pid 1 of the box: its death takes every process in it along */
    syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0);
}

static int64_t cpu_usage_us(const struct box_res *b)
{
    if (!b || !present(b->cg[0]))
        return -1;
    int64_t used = box_keyed(b, SF_CPU, "usage_usec");
    return used < 0 ? used : used - b->cpu_base_us;
}

static long online_cpus(void)
{
    static long n;
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c < 1 ? 1 : c;
    }
    return n;
}

/* Hand a prepared helper its run: struct sbx_request, the strings, stdin as SCM_RIGHTS. */
static int send_request(int sock, const struct sbx_config *cfg, size_t argc, size_t envc, size_t size)
{
    char *buf = malloc(size);
    if (!buf)
        return -1;
    struct sbx_request h = {SBX_REQUEST_MAGIC, (uint32_t)size, (uint32_t)argc, (uint32_t)envc};
    memcpy(buf, &h, sizeof h);
    size_t n = sizeof h;
    for (size_t i = 0; i < argc; i++) {
        size_t l = strlen(cfg->argv[i]) + 1;
        memcpy(buf + n, cfg->argv[i], l);
        n += l;
    }
    for (size_t i = 0; i < envc; i++) {
        size_t l = strlen(cfg->envp[i]) + 1;
        memcpy(buf + n, cfg->envp[i], l);
        n += l;
    }
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } c;
    memset(&c, 0, sizeof c);
    struct iovec iov = {buf, size};
    struct msghdr mh = {0};
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    mh.msg_control = c.buf;
    mh.msg_controllen = sizeof c.buf;
    struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &cfg->stdin_fd, sizeof(int));
    ssize_t sent;
    do
        sent = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (sent < 0 && errno == EINTR);
    size_t done = sent > 0 ? (size_t)sent : 0;
    while (sent >= 0 && done < size) {
        sent = send(sock, buf + done, size - done, MSG_NOSIGNAL);
        if (sent < 0 && errno == EINTR) {
            sent = 0;
            continue;
        }
        if (sent > 0)
            done += (size_t)sent;
    }
    int e = errno;
    free(buf);
    errno = e;
    return done == size ? 0 : -1;
}

int sbx_run(const struct sbx_config *cfg, struct sbx_result *res)
{
    memset(res, 0, sizeof *res);
    if (!cfg || !present(cfg->helper) || !cfg->argv || !cfg->argv[0] || !cfg->envp || cfg->output_cap < 0)
        return -1;

    int out[2] = {-1, -1}, err[2] = {-1, -1}, rep[2] = {-1, -1};
    int pidfd = -1;
    pid_t pid = -1;
    char **argv = NULL;
    char *procs = NULL;
    int e, netfd = -1;
    int64_t t0 = 0;

    trace("start");
    size_t argc = 0, envc = 0, req_size = sizeof(struct sbx_request);
    for (; cfg->argv[argc]; argc++)
        req_size += strlen(cfg->argv[argc]) + 1;
    for (; cfg->envp[envc]; envc++)
        req_size += strlen(cfg->envp[envc]) + 1;
    int fits = req_size <= SBX_REQUEST_MAX && argc <= SBX_REQUEST_STRINGS && envc <= SBX_REQUEST_STRINGS;
    struct box_res *box = box_acquire(cfg, (cfg->clone_flags & CLONE_NEWNET) != 0, fits, &netfd, &e);
    if (!box) {
        res->stage = SBX_STAGE_CGROUP;
        res->err = e;
        goto cleanup;
    }
    if ((e = setup_cgroups(cfg, box)) < 0) {
        res->stage = SBX_STAGE_CGROUP;
        res->err = -e;
        goto cleanup;
    }
    trace("cgroups");

    if (box->pid > 0) {
        /* a prepared box: its helper waits in its namespaces and cgroups for this run */
        pid = box->pid;
        pidfd = box->pidfd;
        out[0] = box->out;
        err[0] = box->err;
        rep[0] = box->rep;
        box->pid = 0;
        box->pidfd = box->out = box->err = box->rep = -1;
        res->helper_pid = pid;
        t0 = now_ns();
        if (send_request(box->req, cfg, argc, envc, req_size) < 0) {
            res->stage = SBX_STAGE_SPAWN;
            res->err = errno;
            goto cleanup;
        }
        close(box->req);
        box->req = -1;
        trace("sent");
    } else {
        /* the helper's argv with "-c <run cgroup>/cgroup.procs" for each run cgroup */
        argv = calloc(argc + 2 * NCG + 1, sizeof *argv);
        procs = malloc(NCG * (PATH_MAX + 16));
        if (!argv || !procs) {
            res->stage = SBX_STAGE_SPAWN;
            res->err = ENOMEM;
            goto cleanup;
        }
        size_t k = 0;
        argv[k++] = cfg->argv[0];
        for (int i = 0; i < NCG; i++) {
            if (!present(box->cg[i]))
                continue;
            char *pp = procs + i * (PATH_MAX + 16);
            snprintf(pp, PATH_MAX + 16, "%s/cgroup.procs", box->cg[i]);
            argv[k++] = "-c";
            argv[k++] = pp;
        }
        for (size_t i = 1; i < argc; i++)
            argv[k++] = cfg->argv[i];
        argv[k] = NULL;

        if (pipe2(out, O_CLOEXEC) < 0 || pipe2(err, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
            res->stage = SBX_STAGE_SPAWN;
            res->err = errno;
            goto cleanup;
        }
        struct spawn_args args = {cfg->helper, argv, cfg->envp, {cfg->stdin_fd, out[1], err[1], rep[1]}, 4, netfd, 0};
        trace("clone");
        t0 = now_ns();
        pid = spawn_helper(&args, cfg->clone_flags, &pidfd);
        if (pid < 0) {
            res->stage = SBX_STAGE_SPAWN;
            res->err = errno;
            goto cleanup;
        }
        trace("cloned");
        res->helper_pid = pid;
        close(out[1]);
        close(err[1]);
        close(rep[1]);
        out[1] = err[1] = rep[1] = -1;
        fcntl(out[0], F_SETFL, O_NONBLOCK);
        fcntl(err[0], F_SETFL, O_NONBLOCK);
        if (__atomic_load_n(&pool_started, __ATOMIC_RELAXED))
            hold_namespaces(box, pidfd, (cfg->clone_flags & CLONE_NEWNET) && netfd < 0);
    }

    int64_t deadline = cfg->wall_ms > 0 ? t0 + cfg->wall_ms * 1000000LL : 0;
    int helper_done = 0;
    long ncpu = online_cpus();
    int watch_cpu = cfg->cpu_ms > 0 && present(box->cg[0]);
    int64_t drain_deadline = 0;

    while (out[0] >= 0 || err[0] >= 0 || !helper_done) {
        int timeout = -1;
        int64_t now = now_ns();
        if (!helper_done && deadline) {
            if (now >= deadline) {
                res->killed_wall = 1;
                kill_box(box, pidfd, res);
                deadline = 0;
                continue;
            }
            timeout = (int)((deadline - now) / 1000000LL) + 1;
        }
        if (!helper_done && watch_cpu) {
            int64_t used = cpu_usage_us(box);
            int64_t left = cfg->cpu_ms * 1000 - used;
            if (used >= 0 && left <= 0) {
                res->killed_cpu = 1;
                kill_box(box, pidfd, res);
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
            kill_box(box, pidfd, res);
            break;
        }
        if (iout >= 0 && p[iout].revents)
            drain(&out[0], cfg->out_buf, cfg->output_cap, &res->out_len);
        if (ierr >= 0 && p[ierr].revents)
            drain(&err[0], cfg->err_buf, cfg->output_cap, &res->err_len);
        if (ipid >= 0 && p[ipid].revents)
            helper_done = 1;
        if (cfg->output_kill && !res->killed_output && !helper_done &&
            (res->out_len > cfg->output_cap || res->err_len > cfg->output_cap)) {
            /* a flood ends at the cap, not at the cpu limit */
            res->killed_output = 1;
            kill_box(box, pidfd, res);
        }
    }

    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    if (!helper_done)
        kill_box(box, pidfd, res);
    trace("helper_exited");
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
        } else if (!res->killed_wall && !res->killed_cpu && !res->killed_output) {
            res->stage = SBX_STAGE_LOST;
            res->err = 0;
        }
    }
    res->maxrss_kib = rp.maxrss_kib;
    res->disk_full = rp.disk_full;
    res->tmp_bytes = rp.tmp_bytes;
    res->wall_us = (n == (ssize_t)sizeof rp && rp.wall_ns > 0) ? rp.wall_ns / 1000 : (t1 - t0) / 1000;

    int64_t cg_cpu = cpu_usage_us(box);
    if (cg_cpu >= 0) {
        res->cpu_us = cg_cpu;
        res->cpu_from_cgroup = 1;
    } else {
        /* the helper reaps every process of the box, so its children's usage is the box's */
        res->cpu_us = (int64_t)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec +
                      (int64_t)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec;
    }

    if (present(box->cg[0]) && cfg->cg_v2_memory) {
        res->peak_bytes = box_read_int(box, SF_V2_PEAK);
        res->mem_source = res->peak_bytes >= 0 ? SBX_MEM_V2_PEAK : SBX_MEM_NONE;
        res->oom_killed = box_keyed(box, SF_V2_EVENTS, "oom_kill") > 0;
    }
    if (res->mem_source == SBX_MEM_NONE && present(box->cg[1])) {
        res->peak_bytes = box_read_int(box, SF_V1_MAX);
        res->mem_source = res->peak_bytes >= 0 ? SBX_MEM_V1_MAX_USAGE : SBX_MEM_NONE;
        res->oom_killed = box_keyed(box, SF_V1_OOM, "oom_kill") > 0;
    }
    if (res->mem_source == SBX_MEM_NONE && res->maxrss_kib > 0) {
        res->peak_bytes = res->maxrss_kib * 1024;
        res->mem_source = SBX_MEM_RU_MAXRSS;
    }

    trace("figures");
cleanup:
    if (pid > 0) {
        kill_box(box, pidfd, res);
        wait4(pid, NULL, __WALL, NULL);
    }
    if (box) { /* closed with the box, off the caller's path */
        box->pidfd = pidfd;
        box->out = out[0];
        box->err = err[0];
        box->rep = rep[0];
        pidfd = out[0] = err[0] = rep[0] = -1;
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
    free(argv);
    free(procs);
    if (box)
        box_done(box); /* cgroup.kill, namespaces, rmdir: in the background when it runs */
    else if (netfd >= 0)
        close(netfd);
    trace("done");
    return 0;
}
