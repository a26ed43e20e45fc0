/* copy /bin/true into the work directory and try to execute it */
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void)
{
    int in = open("/bin/true", O_RDONLY), out = open("mytrue", O_WRONLY | O_CREAT | O_TRUNC, 0755);
    if (in < 0 || out < 0) { perror("open"); return 2; }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, n) != n) return 2;
    close(out);
    chmod("mytrue", 0755);
    char *argv[] = {"./mytrue", 0};
    execv("./mytrue", argv);
    puts("BLOCKED");
    return 0;
}
