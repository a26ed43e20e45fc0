/* try every usual writable place outside the work directory */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    const char *targets[] = {"/etc/conveyor-escape", "/var/tmp/conveyor-escape", "/dev/shm/../conveyor-escape",
                             "/root/conveyor-escape", "/conveyor-escape", argc > 1 ? argv[1] : "/usr/conveyor-escape"};
    for (unsigned i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        int fd = open(targets[i], O_WRONLY | O_CREAT, 0644);
        if (fd >= 0) { printf("ESCAPED: %s\n", targets[i]); return 42; }
    }
    puts("BLOCKED");
    return 0;
}
