#include <stdio.h>
int main(void)
{
    static char buf[1 << 16];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char r[8];
    printf("500000000\n"); /* never flushed: both sides wait */
    if (scanf("%7s", r) == 1) puts("1");
    return 0;
}
