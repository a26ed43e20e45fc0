/* Helper executable of the Conveyor sandbox: pid 1 of the box.
 *
 * Started by sbx_run() in fresh pid, mount, ipc, uts (and network) namespaces with
 * fd 0..2 = the program's stdio and fd 3 = the report pipe.  It makes the whole
 * filesystem read-only, mounts a private /proc, /tmp and /dev/shm, puts the work
 * directory back writable (noexec unless -x), forks the program, reaps every
 * process of the box, and writes one struct sbx_report to fd 3.  Its exit kills
 * whatever is left in the box, because it is the namespace's init.
 *
 * usage: helper [-u uid] [-t cpu_s] [-m as_bytes] [-f fsize] [-n nproc] [-o nofile]
 *               [-s stack] [-T tmp_bytes] [-w workdir] [-x] [-E] [-c cgroup.procs]...
 *               [-r readonly_path]... -- program args...
 */
#define _GNU_SOURCE
#include "sandbox.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_LIST 64

/* new mount API, spelled out so no particular libc or kernel header version is needed */
struct sbx_mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};
#define SBX_MOUNT_ATTR_RDONLY 0x1
#define SBX_MOUNT_ATTR_NOSUID 0x2
#define SBX_MOUNT_ATTR_NODEV 0x4
#define SBX_MOUNT_ATTR_NOEXEC 0x8
#define SBX_AT_RECURSIVE 0x8000
#define SBX_OPEN_TREE_CLONE 1
#define SBX_MOVE_MOUNT_F_EMPTY_PATH 0x4
#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

struct opts {
    long uid;
    long cpu_s, as_bytes, fsize, nproc, nofile, stack, tmp_bytes;
    int allow_exec;
    int socket_errno;
    const char *workdir;
    const char *cgroups[MAX_LIST];
    int ncgroups;
    const char *ro[MAX_LIST];
    int nro;
    char **argv;
};

static int report_fd = 3;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void report(int stage, int err, int wstatus, int64_t wall_ns, const struct rusage *ru)
{
    struct sbx_report r;
    memset(&r, 0, sizeof r);
    r.magic = SBX_REPORT_MAGIC;
    r.stage = stage;
    r.err = err;
    r.wstatus = wstatus;
    r.wall_ns = wall_ns;
    if (ru) {
        r.utime_us = (int64_t)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec;
        r.stime_us = (int64_t)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec;
        r.maxrss_kib = ru->ru_maxrss;
    }
    if (write(report_fd, &r, sizeof r) < 0) {
        /* nobody left to tell */
    }
}

static void fail(int stage)
{
    report(stage, errno, 0, 0, NULL);
    _exit(126);
}

static int parse(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->uid = -1;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            i++;
            break;
        }
        if (a[0] != '-' || a[1] == '\0' || a[2] != '\0')
            return -1;
        if (a[1] == 'x') {
            o->allow_exec = 1;
            continue;
        }
        if (a[1] == 'E') {
            o->socket_errno = 1;
            continue;
        }
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        switch (a[1]) {
        case 'u': o->uid = atol(v); break;
        case 't': o->cpu_s = atol(v); break;
        case 'm': o->as_bytes = atol(v); break;
        case 'f': o->fsize = atol(v); break;
        case 'n': o->nproc = atol(v); break;
        case 'o': o->nofile = atol(v); break;
        case 's': o->stack = atol(v); break;
        case 'T': o->tmp_bytes = atol(v); break;
        case 'w': o->workdir = v; break;
        case 'c':
            if (o->ncgroups == MAX_LIST)
                return -1;
            o->cgroups[o->ncgroups++] = v;
            break;
        case 'r':
            if (o->nro == MAX_LIST)
                return -1;
            o->ro[o->nro++] = v;
            break;
        default: return -1;
        }
    }
    if (i >= argc || o->uid < 0 || !o->workdir || o->workdir[0] != '/')
        return -1;
    o->argv = argv + i;
    return 0;
}

static int mount_setattr_(int dfd, const char *path, unsigned flags, uint64_t set, uint64_t clr, uint64_t prop)
{
    struct sbx_mount_attr attr = {set, clr, prop, 0};
    return (int)syscall(SYS_mount_setattr, dfd, path, flags, &attr, sizeof attr);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = strlen(path);
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (mkdir(buf, 0755) < 0 && errno != EEXIST)
                return -1;
            *p = c;
            if (c == '\0')
                return 0;
        }
    }
}

/* A directory or empty file at path to mount the tree fd onto (it may sit in a fresh tmpfs). */
static int make_mountpoint(const char *path, int treefd)
{
    struct stat st;
    if (fstat(treefd, &st) < 0)
        return -1;
    if (S_ISDIR(st.st_mode))
        return mkdir_p(path);
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent) {
        *slash = '\0';
        if (mkdir_p(parent) < 0)
            return -1;
    }
    int fd = open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    close(fd);
    return 0;
}

/* Everything read-only and private; /proc, /tmp, /dev/shm fresh; work dir writable. */
static void setup_mounts(const struct opts *o)
{
    char data[64];
    int wfd = (int)syscall(SYS_open_tree, AT_FDCWD, o->workdir, SBX_OPEN_TREE_CLONE | O_CLOEXEC);
    if (wfd < 0)
        fail(SBX_STAGE_MOUNT);
    uint64_t wset = SBX_MOUNT_ATTR_NOSUID | SBX_MOUNT_ATTR_NODEV | (o->allow_exec ? 0 : SBX_MOUNT_ATTR_NOEXEC);
    uint64_t wclr = SBX_MOUNT_ATTR_RDONLY | (o->allow_exec ? SBX_MOUNT_ATTR_NOEXEC : 0);
    if (mount_setattr_(wfd, "", AT_EMPTY_PATH | SBX_AT_RECURSIVE, wset, wclr, 0) < 0)
        fail(SBX_STAGE_MOUNT);
    int rofd[MAX_LIST];
    for (int i = 0; i < o->nro; i++) {
        rofd[i] = (int)syscall(SYS_open_tree, AT_FDCWD, o->ro[i], SBX_OPEN_TREE_CLONE | O_CLOEXEC);
        if (rofd[i] < 0 ||
            mount_setattr_(rofd[i], "", AT_EMPTY_PATH | SBX_AT_RECURSIVE,
                           SBX_MOUNT_ATTR_RDONLY | SBX_MOUNT_ATTR_NOSUID | SBX_MOUNT_ATTR_NODEV,
                           SBX_MOUNT_ATTR_NOEXEC, 0) < 0)
            fail(SBX_STAGE_MOUNT);
    }
    if (mount_setattr_(AT_FDCWD, "/", SBX_AT_RECURSIVE, SBX_MOUNT_ATTR_RDONLY | SBX_MOUNT_ATTR_NOSUID, 0,
                       MS_PRIVATE) < 0)
        fail(SBX_STAGE_MOUNT);
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        fail(SBX_STAGE_MOUNT);
    snprintf(data, sizeof data, "size=%ld,mode=1777", o->tmp_bytes > 0 ? o->tmp_bytes : 16L << 20);
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, data) < 0)
        fail(SBX_STAGE_MOUNT);
    struct stat st;
    if (stat("/dev/shm", &st) == 0 && mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, data) < 0)
        fail(SBX_STAGE_MOUNT);
    /* the work directory may live under a path the tmpfs mounts above just hid */
    if (mkdir_p(o->workdir) < 0)
        fail(SBX_STAGE_MOUNT);
    if (syscall(SYS_move_mount, wfd, "", AT_FDCWD, o->workdir, SBX_MOVE_MOUNT_F_EMPTY_PATH) < 0)
        fail(SBX_STAGE_MOUNT);
    close(wfd);
    for (int i = 0; i < o->nro; i++) {
        if (make_mountpoint(o->ro[i], rofd[i]) < 0 ||
            syscall(SYS_move_mount, rofd[i], "", AT_FDCWD, o->ro[i], SBX_MOVE_MOUNT_F_EMPTY_PATH) < 0)
            fail(SBX_STAGE_MOUNT);
        close(rofd[i]);
    }
    sethostname("sandbox", 7);
}

/* seccomp: deny what a judged program never needs and what opens a way out. */
#if defined(__x86_64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#else
#error "unsupported architecture"
#endif

#define KILL SECCOMP_RET_KILL_PROCESS
#define ALLOW SECCOMP_RET_ALLOW

static const int denied[] = {
    SYS_ptrace, SYS_process_vm_readv, SYS_process_vm_writev, SYS_kcmp,
    SYS_mount, SYS_umount2, SYS_pivot_root, SYS_chroot, SYS_open_tree, SYS_move_mount,
    SYS_fsopen, SYS_fsconfig, SYS_fsmount, SYS_fspick, SYS_mount_setattr,
    SYS_kexec_load, SYS_kexec_file_load, SYS_reboot,
    SYS_init_module, SYS_finit_module, SYS_delete_module,
    SYS_bpf, SYS_perf_event_open, SYS_keyctl, SYS_add_key, SYS_request_key,
    SYS_userfaultfd, SYS_io_uring_setup, SYS_io_uring_enter, SYS_io_uring_register,
    SYS_unshare, SYS_setns, SYS_acct, SYS_swapon, SYS_swapoff, SYS_syslog,
    SYS_name_to_handle_at, SYS_open_by_handle_at, SYS_quotactl, SYS_vhangup,
    SYS_settimeofday, SYS_clock_settime, SYS_clock_adjtime, SYS_adjtimex,
    SYS_sethostname, SYS_setdomainname,
#if defined(__x86_64__)
    SYS_iopl, SYS_ioperm, SYS_uselib, SYS_lookup_dcookie,
#endif
};

#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | \
                  CLONE_NEWCGROUP | 0x00000080 /* CLONE_NEWTIME */)

static int install_seccomp(int socket_errno)
{
    struct sock_filter f[256];
    int n = 0;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AUDIT_ARCH, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
#if defined(__x86_64__)
    /* x32 numbers carry bit 30 under the native arch value */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL);
#endif
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)denied[i], 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL);
    }
    /* clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc use clone */
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone3, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_clone, 0, 4);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ALLOW);
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_socket, 0, 4);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0]));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AF_UNIX, 0, 1);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ALLOW);
    /* -E: runtimes such as the JVM probe AF_INET at start; an error keeps them alive, the net namespace stays empty */
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, socket_errno ? (SECCOMP_RET_ERRNO | EACCES) : KILL);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ALLOW);
    struct sock_fprog prog = {(unsigned short)n, f};
    return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog);
}

static void set_limit(int res, long soft, long hard)
{
    struct rlimit rl = {(rlim_t)soft, (rlim_t)hard};
    if (setrlimit(res, &rl) < 0)
        fail(SBX_STAGE_LIMITS);
}

/* In the forked program: limits, drop to the box uid, seccomp, exec. */
static void child(const struct opts *o, int errpipe)
{
    report_fd = errpipe;
    setsid();
    if (o->cpu_s > 0)
        set_limit(RLIMIT_CPU, o->cpu_s, o->cpu_s + 1);
    if (o->as_bytes > 0)
        set_limit(RLIMIT_AS, o->as_bytes, o->as_bytes);
    if (o->fsize > 0)
        set_limit(RLIMIT_FSIZE, o->fsize, o->fsize);
    if (o->nproc > 0)
        set_limit(RLIMIT_NPROC, o->nproc, o->nproc);
    if (o->nofile > 0)
        set_limit(RLIMIT_NOFILE, o->nofile, o->nofile);
    if (o->stack > 0)
        set_limit(RLIMIT_STACK, o->stack, o->stack);
    set_limit(RLIMIT_CORE, 0, 0);
    set_limit(RLIMIT_MEMLOCK, 0, 0);
    set_limit(RLIMIT_MSGQUEUE, 0, 0);
    gid_t gid = (gid_t)o->uid;
    if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid((uid_t)o->uid, (uid_t)o->uid, (uid_t)o->uid) < 0)
        fail(SBX_STAGE_CREDS);
    if (chdir(o->workdir) < 0)
        fail(SBX_STAGE_CHDIR);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || install_seccomp(o->socket_errno) < 0)
        fail(SBX_STAGE_SECCOMP);
    execvp(o->argv[0], o->argv);
    fail(SBX_STAGE_EXEC);
}

int main(int argc, char **argv)
{
    struct opts o;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* ignored signals survive exec: give the program default dispositions */
    for (int s = 1; s < NSIG; s++)
        signal(s, SIG_DFL);
    if (fcntl(3, F_SETFD, FD_CLOEXEC) < 0)
        _exit(125);
    if (syscall(SYS_close_range, 4, ~0U, 0) < 0) {
        for (int fd = 4; fd < 1024; fd++)
            close(fd);
    }
    if (parse(argc, argv, &o) < 0) {
        errno = EINVAL;
        fail(SBX_STAGE_HELPER);
    }
    /* join before the tree turns read-only; the program inherits the cgroups at fork */
    for (int i = 0; i < o.ncgroups; i++) {
        int fd = open(o.cgroups[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, "0", 1) < 0)
            fail(SBX_STAGE_CGROUP_JOIN);
        close(fd);
    }
    setup_mounts(&o);

    int ep[2];
    if (pipe2(ep, O_CLOEXEC) < 0)
        fail(SBX_STAGE_FORK);
    int64_t t0 = now_ns();
    pid_t pid = fork();
    if (pid < 0)
        fail(SBX_STAGE_FORK);
    if (pid == 0) {
        close(ep[0]);
        child(&o, ep[1]);
    }
    close(ep[1]);
    close(0);
    close(1);
    close(2);

    struct sbx_report early;
    ssize_t n = read(ep[0], &early, sizeof early);
    close(ep[0]);
    int wstatus = 0;
    struct rusage ru;
    for (;;) {
        struct rusage r;
        int st;
        pid_t w = wait4(-1, &st, __WALL, &r);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            break;
        if (w == pid) {
            wstatus = st;
            ru = r;
            break;
        }
    }
    int64_t t1 = now_ns();
    if (n == (ssize_t)sizeof early && early.magic == SBX_REPORT_MAGIC) {
        report(early.stage, early.err, 0, 0, NULL);
        return 0;
    }
    report(SBX_STAGE_NONE, 0, wstatus, t1 - t0, &ru);
    return 0;
}
