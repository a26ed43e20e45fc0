/* Conveyor sandbox: run one untrusted program in a fresh box and measure it.
 *
 * The library side (sandbox.c) is linked into the Python extension: it takes the
 * run's cgroups and network namespace (prepared ahead by a background thread, or made
 * on the spot; an empty network namespace and emptied cgroup2 and pids cgroups may be
 * ones an earlier box used), starts the helper executable (helper.c) with
 * clone(CLONE_VFORK) into new namespaces, drains stdout/stderr, enforces the wall and
 * cpu limits, kills the whole box, reads the figures and hands the spent cgroups and
 * namespaces to the background thread for removal or reuse.  The helper becomes pid 1 of the
 * box, mounts the read-only view, forks the program, drops privileges, installs
 * seccomp and execs.
 */
#ifndef CONVEYOR_SANDBOX_H
#define CONVEYOR_SANDBOX_H

#include <stdint.h>

/* Where a run failed when the failure is the sandbox's, not the program's. */
enum sbx_stage {
    SBX_STAGE_NONE = 0,
    SBX_STAGE_CGROUP = 1,      /* creating or configuring the run's cgroups */
    SBX_STAGE_SPAWN = 2,       /* pipes, clone, pidfd in the caller */
    SBX_STAGE_HELPER = 3,      /* helper could not start or parse its arguments */
    SBX_STAGE_MOUNT = 4,       /* read-only view, /proc, /tmp, work directory */
    SBX_STAGE_CGROUP_JOIN = 5, /* program could not enter its cgroups */
    SBX_STAGE_LIMITS = 6,      /* rlimits */
    SBX_STAGE_CREDS = 7,       /* setgroups / setresgid / setresuid */
    SBX_STAGE_CHDIR = 8,
    SBX_STAGE_SECCOMP = 9,
    SBX_STAGE_EXEC = 10,       /* execve of the program */
    SBX_STAGE_FORK = 11,       /* helper could not fork the program */
    SBX_STAGE_LOST = 12,       /* helper died without a report */
    SBX_STAGE_SUPERVISE = 13   /* poll/read failure while supervising */
};

#define SBX_REPORT_MAGIC 0x43565952 /* "CVYR" */

/* What the helper (pid 1 of the box) tells the caller through fd 3 before it exits. */
struct sbx_report {
    int32_t magic;
    int32_t stage;      /* enum sbx_stage, SBX_STAGE_NONE when the program ran */
    int32_t err;        /* errno of the failing step */
    int32_t wstatus;    /* wait status of the program */
    int64_t wall_ns;    /* fork of the program to its reaping */
    int64_t utime_us;   /* rusage of the program and the children it waited for */
    int64_t stime_us;
    int64_t maxrss_kib;
    int32_t disk_full;  /* /tmp, /dev/shm or a bounded work directory ran out of bytes or inodes */
    int32_t pad;
    int64_t tmp_bytes;  /* what the box left in its /tmp and /dev/shm (tmpfs: charged to its memory) */
};

#define SBX_REQUEST_MAGIC 0x43565951 /* "CVYQ" */

/* What the caller sends a prepared helper (-P) on its request socket: this header,
 * then argc argv strings and envc environment strings, each NUL-terminated, total
 * bytes in all; the program's stdin travels with it as SCM_RIGHTS. */
struct sbx_request {
    uint32_t magic;
    uint32_t total;
    uint32_t argc;
    uint32_t envc;
};
#define SBX_REQUEST_MAX (1 << 20)   /* larger runs start their own helper */
#define SBX_REQUEST_STRINGS 16384

/* One run as the caller describes it. Strings are NUL-terminated; "" means absent. */
struct sbx_config {
    const char *helper;          /* path of the helper executable */
    char *const *argv;           /* helper argv, NULL-terminated; "-c" options are added */
    char *const *envp;           /* program environment, NULL-terminated */
    int stdin_fd;                /* becomes the program's stdin */
    int clone_flags;             /* namespace flags for the helper; CLONE_NEWNET may be
                                    served by a prepared, empty network namespace */
    int64_t wall_ms;             /* 0: none */
    int64_t cpu_ms;              /* 0: none; polled from cgroup cpu.stat when present */
    int64_t output_cap;          /* bytes kept of each of stdout and stderr */
    char *out_buf;               /* output_cap bytes each */
    char *err_buf;
    const char *cg_v2;           /* parent of the run cgroup on the cgroup2 hierarchy */
    int cg_v2_memory;            /* memory controller enabled there */
    int cg_v2_pids;              /* pids controller enabled there */
    const char *cg_v1_memory;    /* parent of the run cgroup on a v1 memory hierarchy */
    const char *cg_v1_pids;      /* parent of the run cgroup on a v1 pids hierarchy */
    int64_t memory_limit;        /* bytes, 0: none */
    int64_t pids_limit;          /* 0: none */
    int output_kill;             /* kill the box once either stream passes output_cap */
};

enum sbx_mem_source {
    SBX_MEM_NONE = 0,
    SBX_MEM_V2_PEAK = 1,      /* memory.peak */
    SBX_MEM_V1_MAX_USAGE = 2, /* memory.max_usage_in_bytes */
    SBX_MEM_RU_MAXRSS = 3     /* the program's own ru_maxrss */
};

/* What happened. */
struct sbx_result {
    int32_t stage;           /* enum sbx_stage; SBX_STAGE_NONE: the program ran */
    int32_t err;             /* errno for stage */
    int32_t have_status;     /* wstatus is the program's */
    int32_t wstatus;
    int64_t cpu_us;
    int32_t cpu_from_cgroup; /* 1: cgroup cpu.stat, 0: rusage */
    int64_t wall_us;
    int64_t peak_bytes;
    int32_t mem_source;      /* enum sbx_mem_source */
    int64_t maxrss_kib;      /* ru_maxrss of the program */
    int64_t out_len;         /* true lengths */
    int64_t err_len;
    int32_t oom_killed;
    int32_t killed_wall;     /* the wall limit ran out and the box was killed */
    int32_t killed_cpu;      /* cgroup cpu time passed the limit and the box was killed */
    int32_t used_cgroup_kill;
    int32_t helper_pid;
    int32_t disk_full;       /* the box's /tmp, /dev/shm or work directory was full at its end */
    int64_t tmp_bytes;       /* bytes the box left in its /tmp and /dev/shm */
    int32_t killed_output;   /* a stream passed output_cap and the box was killed (output_kill) */
};

/* Run one box; returns 0 when the result is filled (check stage), -1 on bad config.
 * Run cgroups are named "conveyor-sbx-<pid>-<n>" under the configured parents. */
int sbx_run(const struct sbx_config *cfg, struct sbx_result *res);

/* How many boxes (and cgroup sets and network namespaces) the background thread keeps
 * ready (0: none, and every run makes and removes its own before it returns).  Each
 * is used by one box at a time; spent ones are removed, or kept for a later box when
 * nothing of the spent box is left in them, after sbx_run returns. */
void sbx_set_spares(int n);

/* Wait until every spent box is cleaned up and the background thread is idle.
 * drop_spares: also remove the spares (until the next run asks for more); do that
 * before exit and wherever nothing may be left behind. */
void sbx_flush(int drop_spares);

#endif
