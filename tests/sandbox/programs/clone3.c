#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/sched.h>
int main(void)
{
    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_NEWUSER | CLONE_NEWNS;
    args.exit_signal = 17;
    long r = syscall(SYS_clone3, &args, sizeof args);
    if (r == 0) _exit(42);
    if (r < 0 && errno == ENOSYS) { puts("BLOCKED: ENOSYS"); return 0; }
    printf("ESCAPED: clone3 returned %ld errno %d\n", r, errno);
    return 42;
}
