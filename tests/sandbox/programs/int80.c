/* a 32-bit system call from a 64-bit process */
#include <stdio.h>
int main(void)
{
    long r;
    __asm__ volatile("int $0x80" : "=a"(r) : "a"(20L) : "memory");
    printf("int 0x80 getpid returned %ld\n", r);
    return 42;
}
