/* reserve 16 GiB of address space, touch one page: not a memory limit */
#include <stdio.h>
#include <sys/mman.h>
int main(void)
{
    char *p = mmap(0, 16UL << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); return 2; }
    p[0] = 1;
    puts("reserved");
    return 0;
}
