/* write 100 MiB to fd 1 or 2 (argv[1]) */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv)
{
    int fd = argc > 1 ? atoi(argv[1]) : 1;
    static char buf[1 << 16];
    memset(buf, 'x', sizeof buf);
    for (int i = 0; i < 1600; i++)
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf)
            return 2;
    return 0;
}
