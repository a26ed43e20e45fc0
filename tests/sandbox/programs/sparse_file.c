/* a 2 GiB sparse file in the work directory */
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(void)
{
    int fd = open("sparse.bin", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { perror("open"); return 2; }
    if (lseek(fd, (2L << 30) - 1, SEEK_SET) < 0) { perror("lseek"); return 2; }
    if (write(fd, "x", 1) != 1) { perror("write"); return 2; }
    puts("ESCAPED: wrote a 2 GiB file");
    return 42;
}
