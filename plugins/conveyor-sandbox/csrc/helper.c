/* Helper executable of the Conveyor sandbox: pid 1 of the box.
 *
 * Started by sbx_run() in fresh pid, mount, ipc and uts namespaces (and an empty
 * network namespace) with fd 0..2 = the program's stdio and fd 3 = the report pipe.
 * It builds the box's root (a fresh tmpfs with read-only binds of an allow-list, a
 * minimal /dev, a private /proc, /tmp and /dev/shm, the work directory writable and
 * noexec unless -x, the -r paths read-only; nothing else of the host), forks the
 * program, reaps every process of the box, and writes one struct sbx_report to fd 3.
 * Its exit kills whatever is left in the box, because it is the namespace's init.
 *
 * usage: helper [-u uid] [-t cpu_s] [-m as_bytes] [-f fsize] [-n nproc] [-o nofile]
 *               [-s stack] [-T tmp_bytes] [-I tmp_inodes] [-w workdir] [-x] [-E]
 *               [-c cgroup.procs]... [-r readonly_path]... -- program args...
 *        helper -P [-c cgroup.procs]...
 *
 * With -P it prepares a box ahead of its run (fd 4 is then a stream socket): it joins
 * the cgroups, builds the root with /proc, /tmp and /dev/shm of the default size,
 * then waits for one request on fd 4 (struct
 * sbx_request, the argv above from "-u" on and the environment, with the program's
 * stdin as SCM_RIGHTS) and goes on as if it had been started with it.
 * EOF instead of a request: the box was not needed, and the helper exits.
 *
 * It is built without a C library (-nostdlib -ffreestanding, raw system calls): a
 * static glibc spends a few hundred microseconds at start-up on CPUID probes, which
 * trap to the hypervisor on virtual machines, and every run pays its start-up once.
 */
#include "sandbox.h"

#include <asm/signal.h>
#include <asm/unistd.h>
#include <linux/audit.h>
#include <linux/errno.h>
#include <linux/fcntl.h>
#include <linux/filter.h>
#include <linux/mount.h>
#include <linux/prctl.h>
#include <linux/resource.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <linux/magic.h>
#include <linux/stat.h>
#include <asm/statfs.h>
#include <linux/time.h>
#include <linux/wait.h>
#include <stddef.h>

#define MAX_LIST 64

#ifndef __NR_open_tree
#define __NR_open_tree 428
#define __NR_move_mount 429
#endif
#ifndef __NR_mount_setattr
#define __NR_mount_setattr 442
#endif
#ifndef __NR_close_range
#define __NR_close_range 436
#endif
#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x1
#define MOUNT_ATTR_NOSUID 0x2
#define MOUNT_ATTR_NODEV 0x4
#define MOUNT_ATTR_NOEXEC 0x8
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#define OPEN_TREE_CLOEXEC O_CLOEXEC
#define MOVE_MOUNT_F_EMPTY_PATH 0x4
#endif
#define SBX_AT_RECURSIVE 0x8000
#ifndef MNT_DETACH
#define MNT_DETACH 2
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif
#ifndef __NR_openat2
#define __NR_openat2 437
#endif
#define SBX_AF_UNIX 1

/* ---- system calls, without a C library ---- */

static long sys6(long n, long a, long b, long c, long d, long e, long f)
{
#if defined(__x86_64__)
    long ret;
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n;
    register long x0 __asm__("x0") = a;
    register long x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c;
    register long x3 __asm__("x3") = d;
    register long x4 __asm__("x4") = e;
    register long x5 __asm__("x5") = f;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5) : "memory");
    return x0;
#else
#error "unsupported architecture"
#endif
}

static int err_no; /* errno of the last failed call: one thread, no TLS */

static long sc(long n, long a, long b, long c, long d, long e, long f)
{
    long r = sys6(n, a, b, c, d, e, f);
    if (r < 0 && r > -4096) {
        err_no = (int)-r;
        return -1;
    }
    return r;
}

#define S0(n) sc(n, 0, 0, 0, 0, 0, 0)
#define S1(n, a) sc(n, (long)(a), 0, 0, 0, 0, 0)
#define S2(n, a, b) sc(n, (long)(a), (long)(b), 0, 0, 0, 0)
#define S3(n, a, b, c) sc(n, (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define S4(n, a, b, c, d) sc(n, (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define S5(n, a, b, c, d, e) sc(n, (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), 0)

static __attribute__((noreturn)) void sys_exit(int code)
{
    for (;;)
        sys6(__NR_exit_group, code, 0, 0, 0, 0, 0);
}

static int sys_open(const char *path, int flags, int mode) { return (int)S4(__NR_openat, AT_FDCWD, path, flags, mode); }
static int sys_close(int fd) { return (int)S1(__NR_close, fd); }
static long sys_read(int fd, void *buf, long n) { return S3(__NR_read, fd, buf, n); }
static long sys_write(int fd, const void *buf, long n) { return S3(__NR_write, fd, buf, n); }
static int sys_mkdir(const char *path, int mode) { return (int)S3(__NR_mkdirat, AT_FDCWD, path, mode); }

/* The compiler may emit calls to these for struct copies and initialisers. */
void *memset(void *d, int c, size_t n)
{
    volatile unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}

void *memcpy(void *d, const void *s, size_t n)
{
    volatile unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

static size_t str_len(const char *s)
{
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

static int str_eq(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

static long parse_long(const char *s)
{
    long v = 0;
    int neg = *s == '-';
    if (neg)
        s++;
    while (*s >= '0' && *s <= '9')
        v = v * 10 + (*s++ - '0');
    return neg ? -v : v;
}

/* Append decimal v to buf at *n (buf has room). */
static void put_num(char *buf, size_t *n, long long v)
{
    char tmp[24];
    int k = 0;
    unsigned long long u = v < 0 ? -(unsigned long long)v : (unsigned long long)v;
    do
        tmp[k++] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0)
        buf[(*n)++] = '-';
    while (k)
        buf[(*n)++] = tmp[--k];
}

static void put_str(char *buf, size_t *n, const char *s)
{
    while (*s)
        buf[(*n)++] = *s++;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    S2(__NR_clock_gettime, CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Debug builds (-DSBX_TRACE) write "helper step monotonic_ns" lines to the program's
 * stderr; a file would stop the root from turning read-only (EBUSY). */
#ifdef SBX_TRACE
static void trace(const char *step)
{
    char line[96];
    size_t n = 0;
    int64_t t = now_ns();
    put_str(line, &n, "helper ");
    put_str(line, &n, step);
    line[n++] = ' ';
    put_num(line, &n, t);
    line[n++] = '\n';
    sys_write(2, line, (long)n);
}
#else
#define trace(step) ((void)0)
#endif

/* ---- the box ---- */

struct opts {
    long uid;
    long cpu_s, as_bytes, fsize, nproc, nofile, stack, tmp_bytes, tmp_inodes;
    int allow_exec;
    int socket_errno;
    int prepared; /* -P */
    const char *workdir;
    const char *cgroups[MAX_LIST];
    int ncgroups;
    const char *ro[MAX_LIST];
    int nro;
    char **argv;
    char **envp;
};

static int report_fd = 3;

static int disk_full;     /* set after the program's end, before the report */
static int64_t tmp_bytes; /* likewise */

static void report_to(int fd, int stage, int err, int wstatus, int64_t wall_ns, const struct rusage *ru)
{
    struct sbx_report r;
    memset(&r, 0, sizeof r);
    r.magic = SBX_REPORT_MAGIC;
    r.stage = stage;
    r.err = err;
    r.wstatus = wstatus;
    r.wall_ns = wall_ns;
    r.disk_full = disk_full;
    r.tmp_bytes = tmp_bytes;
    if (ru) {
        r.utime_us = (int64_t)ru->ru_utime.tv_sec * 1000000 + ru->ru_utime.tv_usec;
        r.stime_us = (int64_t)ru->ru_stime.tv_sec * 1000000 + ru->ru_stime.tv_usec;
        r.maxrss_kib = ru->ru_maxrss;
    }
    sys_write(fd, &r, sizeof r); /* nobody left to tell when it fails */
}

static __attribute__((noreturn)) void fail_to(int fd, int stage)
{
    report_to(fd, stage, err_no, 0, 0, NULL);
    sys_exit(126);
}

static __attribute__((noreturn)) void fail(int stage) { fail_to(report_fd, stage); }

static int parse(int argc, char **argv, struct opts *o)
{
    memset(o, 0, sizeof *o);
    o->uid = -1;
    int i = 1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (str_eq(a, "--")) {
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
        if (a[1] == 'P') {
            o->prepared = 1;
            continue;
        }
        if (i + 1 >= argc)
            return -1;
        const char *v = argv[++i];
        switch (a[1]) {
        case 'u': o->uid = parse_long(v); break;
        case 't': o->cpu_s = parse_long(v); break;
        case 'm': o->as_bytes = parse_long(v); break;
        case 'f': o->fsize = parse_long(v); break;
        case 'n': o->nproc = parse_long(v); break;
        case 'o': o->nofile = parse_long(v); break;
        case 's': o->stack = parse_long(v); break;
        case 'T': o->tmp_bytes = parse_long(v); break;
        case 'I': o->tmp_inodes = parse_long(v); break;
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
    if (o->prepared && i >= argc)
        return 0; /* the rest comes with the request */
    if (i >= argc || o->uid < 0 || !o->workdir || o->workdir[0] != '/')
        return -1;
    o->argv = argv + i;
    return 0;
}

static int mount_setattr_(int dfd, const char *path, unsigned flags, uint64_t set, uint64_t clr, uint64_t prop)
{
    struct mount_attr_ {
        uint64_t attr_set, attr_clr, propagation, userns_fd;
    } attr = {set, clr, prop, 0};
    return (int)S5(__NR_mount_setattr, dfd, path, flags, &attr, sizeof attr);
}

static int sys_mount(const char *src, const char *dst, const char *type, unsigned long flags, const void *data)
{
    return (int)S5(__NR_mount, src, dst, type, flags, data);
}

static int move_mount(int fd, const char *to)
{
    return (int)S5(__NR_move_mount, fd, "", AT_FDCWD, to, MOVE_MOUNT_F_EMPTY_PATH);
}

/* The file type of path (or of dfd with path ""), or -1. */
static int file_type(int dfd, const char *path)
{
    struct statx st;
    int flags = path[0] ? 0 : AT_EMPTY_PATH;
    if (S5(__NR_statx, dfd, path, flags, STATX_TYPE, &st) < 0)
        return -1;
    return st.stx_mode & S_IFMT;
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t len = str_len(path);
    if (len >= sizeof buf)
        return -1;
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == '\0') {
            char c = *p;
            *p = '\0';
            if (sys_mkdir(buf, 0755) < 0 && err_no != EEXIST)
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
    int type = file_type(treefd, "");
    if (type < 0)
        return -1;
    if (type == S_IFDIR)
        return mkdir_p(path);
    char parent[4096];
    size_t len = str_len(path);
    if (len >= sizeof parent)
        return -1;
    memcpy(parent, path, len + 1);
    char *slash = NULL;
    for (char *p = parent; *p; p++)
        if (*p == '/')
            slash = p;
    if (slash && slash != parent) {
        *slash = '\0';
        if (mkdir_p(parent) < 0)
            return -1;
    }
    int fd = sys_open(path, O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    sys_close(fd);
    return 0;
}

/* ---- the box's root: a fresh tmpfs holding only what programs need ----
 *
 * Built the way isolate and nsjail build theirs.  The helper takes a detached copy of
 * its private view of the caller's mounts, mounts a small tmpfs over /tmp, pivots into
 * it and drops the caller's tree; from the copy it binds in, read-only, nodev and
 * nosuid, the allow-list below, then makes a minimal /dev, /proc, /tmp, and for the run
 * the work directory and the caller's read-only paths; then the root turns read-only
 * and the copy is closed.  Nothing else of the host (/var, /srv, /home, /root, /run,
 * /opt, storage, databases, configuration, sockets) exists in the box. */

#define OLD "/.old"

/* system directories; a symlink (merged /usr) is copied as a symlink */
static const char *const root_dirs[] = {"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"};
/* the runtime files of /etc: the loader's cache and configuration, alternatives, time zone */
static const char *const etc_paths[] = {"/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
                                        "/etc/alternatives", "/etc/localtime"};

struct dev_node {
    const char *name;
    unsigned major, minor;
};
static const struct dev_node dev_nodes[] = {
    {"/dev/null", 1, 3}, {"/dev/zero", 1, 5}, {"/dev/full", 1, 7}, {"/dev/random", 1, 8}, {"/dev/urandom", 1, 9},
};
static const char *const dev_links[][2] = {
    {"/dev/fd", "/proc/self/fd"}, {"/dev/stdin", "/proc/self/fd/0"},
    {"/dev/stdout", "/proc/self/fd/1"}, {"/dev/stderr", "/proc/self/fd/2"},
};

static int old_root = -1;    /* the caller's tree while the box is built */
static int old_attached = 0; /* it is still mounted at /.old (kernels that cannot clone from a detached copy) */

struct open_how_ {
    uint64_t flags, mode, resolve;
};
#define SBX_RESOLVE_NO_MAGICLINKS 0x02
#define SBX_RESOLVE_IN_ROOT 0x10

/* An O_PATH descriptor of a caller's path, resolved inside the caller's tree (an absolute
 * symlink on the way means the caller's target, never the box's). */
static int open_old(const char *path)
{
    struct open_how_ how = {O_PATH | O_CLOEXEC, 0, SBX_RESOLVE_IN_ROOT | SBX_RESOLVE_NO_MAGICLINKS};
    return (int)S4(__NR_openat2, old_root, path, &how, sizeof how);
}

/* A read-only, nosuid, nodev clone of a caller's path (recursive: mounts below it come along). */
static int clone_ro(const char *path, int exec_ok)
{
    int pfd = open_old(path);
    if (pfd < 0)
        return -1;
    int fd = (int)S3(__NR_open_tree, pfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | SBX_AT_RECURSIVE);
    sys_close(pfd);
    if (fd < 0)
        return -1;
    uint64_t set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (exec_ok ? 0 : MOUNT_ATTR_NOEXEC);
    if (mount_setattr_(fd, "", AT_EMPTY_PATH | SBX_AT_RECURSIVE, set, exec_ok ? MOUNT_ATTR_NOEXEC : 0, 0) < 0) {
        sys_close(fd);
        return -1;
    }
    return fd;
}

/* The type of a caller's path without following a final symlink, or -1 when it is absent. */
static int old_type(const char *path)
{
    struct statx st;
    const char *rel = path[0] == '/' ? path + 1 : path;
    if (S5(__NR_statx, old_root, rel, AT_SYMLINK_NOFOLLOW, STATX_TYPE, &st) < 0)
        return -1;
    return st.stx_mode & S_IFMT;
}

/* Put a caller's system path into the box: a symlink as a symlink, else a read-only bind. */
static void bind_system(const char *path)
{
    int type = old_type(path);
    if (type < 0)
        return; /* not on this host */
    if (type == S_IFLNK) {
        char target[4096];
        long n = S4(__NR_readlinkat, old_root, path + 1, target, sizeof target - 1);
        if (n < 0)
            fail(SBX_STAGE_MOUNT);
        target[n] = '\0';
        if (S3(__NR_symlinkat, target, AT_FDCWD, path) < 0)
            fail(SBX_STAGE_MOUNT);
        return;
    }
    int fd = clone_ro(path, 1);
    if (fd < 0 || make_mountpoint(path, fd) < 0 || move_mount(fd, path) < 0)
        fail(SBX_STAGE_MOUNT);
    sys_close(fd);
}

static void write_file(const char *path, const char *text, long len)
{
    int fd = sys_open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || sys_write(fd, text, len) != len)
        fail(SBX_STAGE_MOUNT);
    sys_close(fd);
}

static void put_tmpfs(const char *path, unsigned long flags, long bytes, long inodes, const char *mode)
{
    char data[96];
    size_t n = 0;
    put_str(data, &n, "size=");
    put_num(data, &n, bytes);
    put_str(data, &n, ",nr_inodes=");
    put_num(data, &n, inodes);
    put_str(data, &n, ",mode=");
    put_str(data, &n, mode);
    data[n] = '\0';
    if (sys_mount("tmpfs", path, "tmpfs", flags, data) < 0)
        fail(SBX_STAGE_MOUNT);
}

/* A minimal /dev: the five harmless character devices, the fd links, an empty /dev/shm.
 * No pty, no disk, no tty of the host. */
static void make_dev(void)
{
    if (sys_mkdir("/dev", 0755) < 0)
        fail(SBX_STAGE_MOUNT);
    put_tmpfs("/dev", MS_NOSUID | MS_NOEXEC, 64 * 1024, 64, "0755");
    for (size_t i = 0; i < sizeof dev_nodes / sizeof dev_nodes[0]; i++) {
        unsigned long dev = ((unsigned long)dev_nodes[i].major << 8) | dev_nodes[i].minor;
        if (S4(__NR_mknodat, AT_FDCWD, dev_nodes[i].name, S_IFCHR | 0666, dev) < 0 ||
            S4(__NR_fchmodat, AT_FDCWD, dev_nodes[i].name, 0666, 0) < 0)
            fail(SBX_STAGE_MOUNT);
    }
    for (size_t i = 0; i < sizeof dev_links / sizeof dev_links[0]; i++)
        if (S3(__NR_symlinkat, dev_links[i][1], AT_FDCWD, dev_links[i][0]) < 0)
            fail(SBX_STAGE_MOUNT);
    if (sys_mkdir("/dev/shm", 01777) < 0)
        fail(SBX_STAGE_MOUNT);
    if (mount_setattr_(AT_FDCWD, "/dev", 0, MOUNT_ATTR_RDONLY, 0, 0) < 0)
        fail(SBX_STAGE_MOUNT);
}

static const char etc_hosts[] = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost\n";
static const char etc_nsswitch[] = "passwd: files\ngroup: files\nshadow: files\nhosts: files\n";

/* What every box has, made ahead in a prepared box: the fresh root with the system
 * directories, /etc, /dev and /proc, and the caller's tree still at /.old. */
static void build_root(void)
{
    /* A detached copy of the caller's tree (Linux 6.15 and later clone mounts out of it):
     * the box's root is then switched to at once and the caller's tree unmounted ahead of
     * the run, off its path.  Older kernels keep the tree at /.old until the run is set up. */
    int copy = (int)S3(__NR_open_tree, AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | SBX_AT_RECURSIVE);
#ifdef SBX_ATTACHED_OLD /* tests: the older kernels' way, on any kernel */
    sys_close(copy);
    copy = -1;
#endif
    if (copy >= 0) {
        int probe = (int)S3(__NR_open_tree, copy, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
        if (probe >= 0) {
            sys_close(probe);
            old_root = copy;
        } else {
            sys_close(copy);
        }
    }
    if (mount_setattr_(AT_FDCWD, "/", SBX_AT_RECURSIVE, 0, 0, MS_PRIVATE) < 0)
        fail(SBX_STAGE_MOUNT);
    put_tmpfs("/tmp", MS_NOSUID | MS_NODEV, 1L << 20, 4096, "0755");
    if (S1(__NR_chdir, "/tmp") < 0)
        fail(SBX_STAGE_MOUNT);
    if (old_root >= 0) {
        if (S2(__NR_pivot_root, ".", ".") < 0 || S2(__NR_umount2, ".", MNT_DETACH) < 0)
            fail(SBX_STAGE_MOUNT);
    } else {
        if (sys_mkdir(OLD + 1, 0700) < 0 || S2(__NR_pivot_root, ".", OLD + 1) < 0)
            fail(SBX_STAGE_MOUNT);
        old_root = sys_open(OLD, O_PATH | O_DIRECTORY | O_CLOEXEC, 0);
        old_attached = 1;
    }
    if (S1(__NR_chdir, "/") < 0 || old_root < 0)
        fail(SBX_STAGE_MOUNT);
    for (size_t i = 0; i < sizeof root_dirs / sizeof root_dirs[0]; i++)
        bind_system(root_dirs[i]);
    if (sys_mkdir("/etc", 0755) < 0)
        fail(SBX_STAGE_MOUNT);
    for (size_t i = 0; i < sizeof etc_paths / sizeof etc_paths[0]; i++)
        bind_system(etc_paths[i]);
    write_file("/etc/hosts", etc_hosts, sizeof etc_hosts - 1);
    write_file("/etc/nsswitch.conf", etc_nsswitch, sizeof etc_nsswitch - 1);
    make_dev();
    if (sys_mkdir("/proc", 0555) < 0 || sys_mkdir("/tmp", 01777) < 0)
        fail(SBX_STAGE_MOUNT);
    if (sys_mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        fail(SBX_STAGE_MOUNT);
    S2(__NR_sethostname, "sandbox", 7);
}

#define DEFAULT_TMP_BYTES (16L << 20)
#define DEFAULT_TMP_INODES 4096L

static long tmp_size(const struct opts *o) { return o->tmp_bytes > 0 ? o->tmp_bytes : DEFAULT_TMP_BYTES; }
static long tmp_inodes(const struct opts *o) { return o->tmp_inodes > 0 ? o->tmp_inodes : DEFAULT_TMP_INODES; }

/* The private /tmp and /dev/shm of the default size (a prepared box mounts them ahead). */
static void mount_tmp(long bytes, long inodes)
{
    put_tmpfs("/tmp", MS_NOSUID | MS_NODEV, bytes, inodes, "1777");
    put_tmpfs("/dev/shm", MS_NOSUID | MS_NODEV | MS_NOEXEC, bytes, inodes, "1777");
}

/* A prepared box's /tmp and /dev/shm resized to the run's, when it asks for another size. */
static void resize_tmp(const struct opts *o)
{
    if (tmp_size(o) == DEFAULT_TMP_BYTES && tmp_inodes(o) == DEFAULT_TMP_INODES)
        return;
    char data[64];
    size_t n = 0;
    put_str(data, &n, "size=");
    put_num(data, &n, tmp_size(o));
    put_str(data, &n, ",nr_inodes=");
    put_num(data, &n, tmp_inodes(o));
    data[n] = '\0';
    if (sys_mount(NULL, "/tmp", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV, data) < 0 ||
        sys_mount(NULL, "/dev/shm", NULL, MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC, data) < 0)
        fail(SBX_STAGE_MOUNT);
}

/* Whether the bounded tmpfs at path is spent: less than an eighth of its bytes or no
 * inode left.  A write past the end fails with ENOSPC and a failed fallocate gives its
 * blocks back, so "exactly full" would miss a program that filled it in large steps.
 * A host disk, or a failure to ask, is not full. */
static int is_full(const char *path)
{
    struct statfs sf;
    if (S2(__NR_statfs, path, &sf) < 0 || sf.f_type != TMPFS_MAGIC)
        return 0;
    return sf.f_ffree == 0 || sf.f_bavail * 8 < sf.f_blocks;
}

/* Bytes in use on the file system at path (0 when it cannot be asked). */
static int64_t used_bytes(const char *path)
{
    struct statfs sf;
    if (S2(__NR_statfs, path, &sf) < 0)
        return 0;
    return (int64_t)(sf.f_blocks - sf.f_bfree) * sf.f_bsize;
}

/* The run's own part: its work directory (writable, noexec unless -x) and read-only
 * paths at the caller's paths, its passwd; then the caller's tree goes and the root
 * turns read-only. */
static void mount_run(const struct opts *o)
{
    int wfd = open_old(o->workdir);
    int tfd = wfd < 0 ? -1 : (int)S3(__NR_open_tree, wfd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    if (tfd < 0)
        fail(SBX_STAGE_MOUNT);
    sys_close(wfd);
    uint64_t wset = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (o->allow_exec ? 0 : MOUNT_ATTR_NOEXEC);
    uint64_t wclr = MOUNT_ATTR_RDONLY | (o->allow_exec ? MOUNT_ATTR_NOEXEC : 0);
    if (mount_setattr_(tfd, "", AT_EMPTY_PATH | SBX_AT_RECURSIVE, wset, wclr, 0) < 0 || mkdir_p(o->workdir) < 0 ||
        move_mount(tfd, o->workdir) < 0)
        fail(SBX_STAGE_MOUNT);
    sys_close(tfd);
    for (int i = 0; i < o->nro; i++) {
        int fd = clone_ro(o->ro[i], 1);
        if (fd < 0 || make_mountpoint(o->ro[i], fd) < 0 || move_mount(fd, o->ro[i]) < 0)
            fail(SBX_STAGE_MOUNT);
        sys_close(fd);
    }
    char pw[160];
    size_t n = 0;
    put_str(pw, &n, "root:x:0:0:root:/root:/bin/false\nsandbox:x:");
    put_num(pw, &n, o->uid);
    pw[n++] = ':';
    put_num(pw, &n, o->uid);
    put_str(pw, &n, ":sandbox:/tmp:/bin/false\n");
    write_file("/etc/passwd", pw, (long)n);
    n = 0;
    put_str(pw, &n, "root:x:0:\nsandbox:x:");
    put_num(pw, &n, o->uid);
    put_str(pw, &n, ":\n");
    write_file("/etc/group", pw, (long)n);
    if (old_attached) {
        sys_close(old_root);
        old_root = -1;
        if (S2(__NR_umount2, OLD, MNT_DETACH) < 0 || S3(__NR_unlinkat, AT_FDCWD, OLD, AT_REMOVEDIR) < 0)
            fail(SBX_STAGE_MOUNT);
    }
    if (mount_setattr_(AT_FDCWD, "/", 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0) < 0)
        fail(SBX_STAGE_MOUNT);
}

/* ---- a prepared box's request ---- */

#define REQ_STRINGS SBX_REQUEST_STRINGS
static char req_buf[SBX_REQUEST_MAX];
static char *req_argv[REQ_STRINGS + 1];
static char *req_envp[REQ_STRINGS + 1];

struct io_vec {
    void *base;
    size_t len;
};
struct msg_hdr {
    void *name;
    int namelen;
    struct io_vec *iov;
    size_t iovlen;
    void *control;
    size_t controllen;
    int flags;
};
#define SBX_SOL_SOCKET 1
#define SBX_SCM_RIGHTS 1

/* Wait for the run on fd 4; returns argc, or -1 on EOF (not needed) or a bad request. */
static int receive_run(int *stdin_fd)
{
    union {
        char buf[64];
        size_t align;
    } ctl;
    struct io_vec iov = {req_buf, sizeof req_buf};
    struct msg_hdr mh = {NULL, 0, &iov, 1, ctl.buf, sizeof ctl.buf, 0};
    long got;
    do
        got = S3(__NR_recvmsg, 4, &mh, 0);
    while (got < 0 && err_no == EINTR);
    if (got <= 0)
        return -1;
    *stdin_fd = -1;
    if (mh.controllen >= 20) {
        size_t len = *(size_t *)ctl.buf;
        int level = *(int *)(ctl.buf + sizeof(size_t));
        int type = *(int *)(ctl.buf + sizeof(size_t) + sizeof(int));
        if (level == SBX_SOL_SOCKET && type == SBX_SCM_RIGHTS && len >= 20)
            *stdin_fd = *(int *)(ctl.buf + 16);
    }
    struct sbx_request hdr;
    while (got < (long)sizeof hdr) {
        long r = sys_read(4, req_buf + got, (long)sizeof req_buf - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    memcpy(&hdr, req_buf, sizeof hdr);
    if (hdr.magic != SBX_REQUEST_MAGIC || hdr.total > sizeof req_buf || hdr.total < sizeof hdr ||
        hdr.argc > REQ_STRINGS || hdr.envc > REQ_STRINGS || *stdin_fd < 0)
        return -1;
    while (got < (long)hdr.total) {
        long r = sys_read(4, req_buf + got, (long)hdr.total - got);
        if (r <= 0)
            return -1;
        got += r;
    }
    if (req_buf[hdr.total - 1] != '\0')
        return -1;
    char *p = req_buf + sizeof hdr, *end = req_buf + hdr.total;
    for (uint32_t i = 0; i < hdr.argc + hdr.envc; i++) {
        if (p >= end)
            return -1;
        if (i < hdr.argc)
            req_argv[i] = p;
        else
            req_envp[i - hdr.argc] = p;
        p += str_len(p) + 1;
    }
    req_argv[hdr.argc] = NULL;
    req_envp[hdr.envc] = NULL;
    return (int)hdr.argc;
}

/* ---- seccomp: deny what a judged program never needs and what opens a way out ---- */
#if defined(__x86_64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define SBX_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

#define KILL SECCOMP_RET_KILL_PROCESS
/* The newest system call this table was written against (futex_requeue, Linux 6.7, the
 * same number on x86_64 and aarch64).  Anything above it gets ENOSYS, so a kernel that
 * adds system calls (statmount, listmount, open_tree_attr, ...) does not widen the box;
 * libc falls back as it does on an older kernel. */
#define SBX_NR_KNOWN_MAX 456
#define ALLOW SECCOMP_RET_ALLOW

static const int denied[] = {
    __NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev, __NR_kcmp, __NR_pidfd_getfd,
    __NR_mount, __NR_umount2, __NR_pivot_root, __NR_chroot, __NR_open_tree, __NR_move_mount,
    __NR_fsopen, __NR_fsconfig, __NR_fsmount, __NR_fspick, __NR_mount_setattr,
    __NR_kexec_load, __NR_kexec_file_load, __NR_reboot,
    __NR_init_module, __NR_finit_module, __NR_delete_module,
    __NR_bpf, __NR_perf_event_open, __NR_keyctl, __NR_add_key, __NR_request_key,
    __NR_userfaultfd, __NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
    __NR_unshare, __NR_setns, __NR_acct, __NR_swapon, __NR_swapoff, __NR_syslog,
    __NR_name_to_handle_at, __NR_open_by_handle_at, __NR_quotactl, __NR_vhangup,
    __NR_settimeofday, __NR_clock_settime, __NR_clock_adjtime, __NR_adjtimex,
    __NR_sethostname, __NR_setdomainname,
#if defined(__x86_64__)
    __NR_iopl, __NR_ioperm, __NR_uselib, __NR_lookup_dcookie,
#endif
};

#define NS_FLAGS (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | \
                  CLONE_NEWCGROUP | 0x00000080 /* CLONE_NEWTIME */)

/* Every syscall number the filter decides on, with what it does: sorted for a search tree. */
enum { ACT_KILL, ACT_CLONE3, ACT_CLONE, ACT_SOCKET };
struct rule {
    unsigned nr;
    int act;
};

#define MAX_FILTER 256
struct filter {
    struct sock_filter f[MAX_FILTER];
    int n;
};

static void emit(struct filter *p, struct sock_filter ins) { p->f[p->n++] = ins; }

/* Binary search over rules[lo, hi) with nr in the accumulator. Every leaf jumps to a
 * target label; the offsets are patched once the targets are laid out. */
enum { TGT_KILL, TGT_ALLOW, TGT_CLONE3, TGT_CLONE, TGT_SOCKET, NTGT };
struct fixup {
    int at;     /* instruction index */
    int target; /* TGT_* for jt */
};

static int tgt_of(int act)
{
    switch (act) {
    case ACT_CLONE3: return TGT_CLONE3;
    case ACT_CLONE: return TGT_CLONE;
    case ACT_SOCKET: return TGT_SOCKET;
    default: return TGT_KILL;
    }
}

static void tree(struct filter *p, const struct rule *r, int lo, int hi, struct fixup *fx, int *nfx)
{
    if (hi - lo <= 3) {
        /* a few equality tests; falling off the end allows */
        for (int i = lo; i < hi; i++) {
            fx[(*nfx)++] = (struct fixup){p->n, tgt_of(r[i].act)};
            emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, r[i].nr, 0, 0));
        }
        fx[(*nfx)++] = (struct fixup){p->n, TGT_ALLOW};
        emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JA, 0, 0, 0));
        return;
    }
    int mid = (lo + hi) / 2;
    int at = p->n;
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, r[mid].nr, 0, 0));
    tree(p, r, lo, mid, fx, nfx);
    p->f[at].jt = (unsigned char)(p->n - at - 1);
    tree(p, r, mid, hi, fx, nfx);
}

/* Build the filter: arch and x32 checks, a search tree over the decided numbers, then
 * the shared outcomes.  Built in the helper before the fork; installed by the program. */
static int build_filter(struct filter *p, int socket_errno)
{
    struct rule r[96];
    int nr = 0;
    for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++)
        r[nr++] = (struct rule){(unsigned)denied[i], ACT_KILL};
    r[nr++] = (struct rule){__NR_clone3, ACT_CLONE3};
    r[nr++] = (struct rule){__NR_clone, ACT_CLONE};
    r[nr++] = (struct rule){__NR_socket, ACT_SOCKET};
    r[nr++] = (struct rule){__NR_socketpair, ACT_SOCKET}; /* the family is args[0] too */
    for (int i = 1; i < nr; i++) /* insertion sort */
        for (int j = i; j > 0 && r[j - 1].nr > r[j].nr; j--) {
            struct rule t = r[j];
            r[j] = r[j - 1];
            r[j - 1] = t;
        }
    p->n = 0;
    emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)));
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AUDIT_ARCH, 1, 0));
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL));
    emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
#if defined(__x86_64__)
    /* x32 numbers carry bit 30 under the native arch value */
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000, 0, 1));
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL));
#endif
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGT | BPF_K, SBX_NR_KNOWN_MAX, 0, 1));
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
    struct fixup fx[MAX_FILTER];
    int nfx = 0;
    tree(p, r, 0, nr, fx, &nfx);
    int label[NTGT];
    label[TGT_KILL] = p->n;
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL));
    label[TGT_ALLOW] = p->n;
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ALLOW));
    /* clone3 passes its flags in memory seccomp cannot read: ENOSYS makes libc use clone */
    label[TGT_CLONE3] = p->n;
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS));
    label[TGT_CLONE] = p->n;
    emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, NS_FLAGS, 0, 1));
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, KILL));
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ALLOW));
    label[TGT_SOCKET] = p->n;
    emit(p, (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, args[0])));
    emit(p, (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SBX_AF_UNIX, 0, 1));
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ALLOW));
    /* -E: runtimes such as the JVM probe AF_INET at start; an error keeps them alive, the net namespace stays empty */
    emit(p, (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, socket_errno ? (SECCOMP_RET_ERRNO | EACCES) : KILL));
    for (int i = 0; i < nfx; i++) {
        int off = label[fx[i].target] - fx[i].at - 1;
        if (off < 0 || off > 255)
            return -1;
        if (BPF_OP(p->f[fx[i].at].code) == BPF_JA)
            p->f[fx[i].at].k = (unsigned)off;
        else
            p->f[fx[i].at].jt = (unsigned char)off;
    }
    return 0;
}

static void set_limit(int fd, int res, long soft, long hard)
{
    struct {
        uint64_t cur, max;
    } rl = {(uint64_t)soft, (uint64_t)hard};
    if (S4(__NR_prlimit64, 0, res, &rl, NULL) < 0)
        fail_to(fd, SBX_STAGE_LIMITS);
}

/* execvp: a name without '/' is looked up in the program's PATH. */
static void exec_program(char **argv, char **envp)
{
    const char *file = argv[0];
    int has_slash = 0;
    for (const char *p = file; *p; p++)
        has_slash |= *p == '/';
    if (has_slash) {
        S3(__NR_execve, file, argv, envp);
        return;
    }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = envp; *e; e++)
        if ((*e)[0] == 'P' && (*e)[1] == 'A' && (*e)[2] == 'T' && (*e)[3] == 'H' && (*e)[4] == '=')
            path = *e + 5;
    size_t flen = str_len(file);
    int seen_eacces = 0;
    char buf[4096];
    for (const char *p = path;; p++) {
        const char *start = p;
        while (*p && *p != ':')
            p++;
        size_t dlen = (size_t)(p - start);
        if (dlen + flen + 2 <= sizeof buf) {
            size_t n = 0;
            if (dlen == 0)
                buf[n++] = '.';
            memcpy(buf + n, start, dlen);
            n += dlen;
            buf[n++] = '/';
            memcpy(buf + n, file, flen + 1);
            S3(__NR_execve, buf, argv, envp);
            if (err_no == EACCES)
                seen_eacces = 1;
            else if (err_no != ENOENT && err_no != ENOTDIR)
                return;
        }
        if (!*p)
            break;
    }
    if (seen_eacces)
        err_no = EACCES;
}

/* Starts fn(arg) in a child that shares our memory (CLONE_VM | CLONE_VFORK) on its own
 * stack, so no page table is copied; we go on when it has exec'd or exited.
 * long sbx_clone_run(unsigned long flags, void *stack_top, int (*fn)(void *), void *arg) */
long sbx_clone_run(unsigned long flags, void *stack_top, int (*fn)(void *), void *arg);
#if defined(__x86_64__)
__asm__(".text\n"
        ".global sbx_clone_run\n"
        "sbx_clone_run:\n"
        "    and $-16, %rsi\n"
        "    sub $16, %rsi\n"
        "    mov %rdx, 0(%rsi)\n"
        "    mov %rcx, 8(%rsi)\n"
        "    xor %edx, %edx\n"
        "    xor %r10d, %r10d\n"
        "    xor %r8d, %r8d\n"
        "    mov $56, %eax\n" /* clone */
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n"
        "    pop %rax\n"
        "    pop %rdi\n"
        "    call *%rax\n"
        "    mov %eax, %edi\n"
        "    mov $231, %eax\n" /* exit_group */
        "    syscall\n"
        "    hlt\n"
        "1:  ret\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".global sbx_clone_run\n"
        "sbx_clone_run:\n"
        "    and x1, x1, #0xfffffffffffffff0\n"
        "    stp x2, x3, [x1, #-16]!\n"
        "    mov x2, #0\n"
        "    mov x3, #0\n"
        "    mov x4, #0\n"
        "    mov x8, #220\n" /* clone */
        "    svc 0\n"
        "    cbnz x0, 1f\n"
        "    ldp x2, x0, [sp], #16\n"
        "    blr x2\n"
        "    mov x8, #94\n" /* exit_group */
        "    svc 0\n"
        "    brk #0\n"
        "1:  ret\n");
#endif

struct child_args {
    const struct opts *o;
    int errpipe;
    const struct filter *flt;
};

/* In the program's process, on its own stack in the helper's memory: limits, drop to
 * the box uid, seccomp, exec.  It writes no global the helper reads afterwards. */
static int child(void *p)
{
    const struct child_args *a = p;
    const struct opts *o = a->o;
    int fd = a->errpipe;
    trace("forked");
    S0(__NR_setsid);
    if (o->cpu_s > 0)
        set_limit(fd, RLIMIT_CPU, o->cpu_s, o->cpu_s + 1);
    if (o->as_bytes > 0)
        set_limit(fd, RLIMIT_AS, o->as_bytes, o->as_bytes);
    if (o->fsize > 0)
        set_limit(fd, RLIMIT_FSIZE, o->fsize, o->fsize);
    if (o->nproc > 0)
        set_limit(fd, RLIMIT_NPROC, o->nproc, o->nproc);
    if (o->nofile > 0)
        set_limit(fd, RLIMIT_NOFILE, o->nofile, o->nofile);
    if (o->stack > 0)
        set_limit(fd, RLIMIT_STACK, o->stack, o->stack);
    long id = o->uid;
    if (S2(__NR_setgroups, 0, NULL) < 0 || S3(__NR_setresgid, id, id, id) < 0 || S3(__NR_setresuid, id, id, id) < 0)
        fail_to(fd, SBX_STAGE_CREDS);
    if (S1(__NR_chdir, o->workdir) < 0)
        fail_to(fd, SBX_STAGE_CHDIR);
    trace("creds");
    struct sock_fprog prog = {(unsigned short)a->flt->n, (struct sock_filter *)a->flt->f};
    if (S5(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 ||
        S3(__NR_prctl, PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
        fail_to(fd, SBX_STAGE_SECCOMP);
    trace("seccomp");
    exec_program(o->argv, o->envp);
    fail_to(fd, SBX_STAGE_EXEC);
}

static int helper_main(int argc, char **argv, char **envp)
{
    struct opts o;
    /* an empty mask, and default dispositions: ignored signals would survive exec */
    uint64_t none = 0;
    S4(__NR_rt_sigprocmask, SIG_SETMASK, &none, NULL, sizeof none);
    struct {
        void *handler;
        unsigned long flags;
        void *restorer;
        uint64_t mask;
    } dfl = {SIG_DFL, 0, NULL, 0};
    for (int s = 1; s <= 64; s++)
        if (s != SIGKILL && s != SIGSTOP)
            S4(__NR_rt_sigaction, s, &dfl, NULL, sizeof dfl.mask);
    if (S3(__NR_fcntl, 3, F_SETFD, FD_CLOEXEC) < 0)
        sys_exit(125);
    int prepared = argc > 1 && str_eq(argv[1], "-P");
    int keep = prepared ? 5 : 4; /* fd 4: the request socket of a prepared box */
    if (prepared && S3(__NR_fcntl, 4, F_SETFD, FD_CLOEXEC) < 0)
        sys_exit(125);
    if (S3(__NR_close_range, keep, ~0U, 0) < 0) {
        for (int fd = keep; fd < 1024; fd++)
            sys_close(fd);
    }
    trace("start");
    /* the parent-death signal was set before execve; a caller that died before it was set
     * has closed the report pipe's other end: nobody waits for this box */
    struct pollfd_ {
        int fd;
        short events, revents;
    } pf = {3, 0x004 /* POLLOUT */, 0};
    struct timespec zero = {0, 0};
    if (S5(__NR_ppoll, &pf, 1, &zero, NULL, 8) > 0 && (pf.revents & 0x008 /* POLLERR */))
        sys_exit(125);
    if (parse(argc, argv, &o) < 0) {
        err_no = EINVAL;
        fail(SBX_STAGE_HELPER);
    }
    o.envp = envp;
    trace("parsed");
    /* join before the tree turns read-only; the program inherits the cgroups at fork */
    for (int i = 0; i < o.ncgroups; i++) {
        int fd = sys_open(o.cgroups[i], O_WRONLY | O_CLOEXEC, 0);
        if (fd < 0 || sys_write(fd, "0", 1) < 0)
            fail(SBX_STAGE_CGROUP_JOIN);
        sys_close(fd);
    }
    trace("joined");
    /* the same for every run: set here, ahead in a prepared box, and inherited */
    set_limit(report_fd, RLIMIT_CORE, 0, 0);
    set_limit(report_fd, RLIMIT_MEMLOCK, 0, 0);
    set_limit(report_fd, RLIMIT_MSGQUEUE, 0, 0);
    static struct filter flt; /* the filter without -E, built ahead too */
    if (build_filter(&flt, 0) < 0) {
        err_no = EINVAL;
        fail(SBX_STAGE_SECCOMP);
    }
    int ep[2]; /* the program's failure report; EOF once it has exec'd */
    if (S2(__NR_pipe2, ep, O_CLOEXEC) < 0)
        fail(SBX_STAGE_FORK);
    build_root();
    if (prepared) {
        mount_tmp(DEFAULT_TMP_BYTES, DEFAULT_TMP_INODES);
        int in_fd;
        int rargc = receive_run(&in_fd);
        if (rargc < 0)
            sys_exit(0); /* not needed after all */
        trace("request");
        if (S3(__NR_dup3, in_fd, 0, 0) < 0)
            fail(SBX_STAGE_HELPER);
        sys_close(in_fd);
        sys_close(4);
        if (parse(rargc, req_argv, &o) < 0 || o.prepared) {
            err_no = EINVAL;
            fail(SBX_STAGE_HELPER);
        }
        o.envp = req_envp;
        resize_tmp(&o);
    } else {
        mount_tmp(tmp_size(&o), tmp_inodes(&o));
    }
    mount_run(&o);
    trace("mounted");

    if (o.socket_errno && build_filter(&flt, 1) < 0) {
        err_no = EINVAL;
        fail(SBX_STAGE_SECCOMP);
    }
    int64_t t0 = now_ns();
    trace("fork");
    static char child_stack[32 * 1024];
    struct child_args ca = {&o, ep[1], &flt};
    long pid = sbx_clone_run(CLONE_VM | CLONE_VFORK | SIGCHLD, child_stack + sizeof child_stack, child, &ca);
    if (pid < 0) {
        err_no = (int)-pid;
        fail(SBX_STAGE_FORK);
    }
    sys_close(ep[1]);
    if (old_root >= 0)
        sys_close(old_root); /* the detached copy goes while the program runs; it was never in its tree */
    /* stdout and stderr stay open until we exit: the caller sees their end and ours at
     * once, and wakes once */

    struct sbx_report early;
    long n = sys_read(ep[0], &early, sizeof early);
    sys_close(ep[0]);
    int wstatus = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    for (;;) {
        struct rusage r;
        int st;
        long w = S4(__NR_wait4, -1, &st, __WALL, &r);
        if (w < 0 && err_no == EINTR)
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
    trace("reaped");
    disk_full = is_full("/tmp") || is_full("/dev/shm") || is_full(o.workdir);
    tmp_bytes = used_bytes("/tmp") + used_bytes("/dev/shm");
    if (n == (long)sizeof early && early.magic == SBX_REPORT_MAGIC) {
        report_to(report_fd, early.stage, early.err, 0, 0, NULL);
        return 0;
    }
    report_to(report_fd, SBX_STAGE_NONE, 0, wstatus, t1 - t0, &ru);
    trace("reported");
    return 0;
}

__attribute__((used)) static void start_c(long *sp)
{
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    sys_exit(helper_main(argc, argv, envp));
}

#if defined(__x86_64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "    xor %rbp, %rbp\n"
        "    mov %rsp, %rdi\n"
        "    and $-16, %rsp\n"
        "    call start_c\n"
        "    hlt\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".global _start\n"
        "_start:\n"
        "    mov x29, #0\n"
        "    mov x30, #0\n"
        "    mov x0, sp\n"
        "    bl start_c\n"
        "    brk #0\n");
#endif
