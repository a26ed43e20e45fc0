/* burn argv[1] ms of cpu time (measured with CLOCK_PROCESS_CPUTIME_ID) */
#include <stdlib.h>
#include <time.h>
int main(int argc, char **argv)
{
    long ms = argc > 1 ? atol(argv[1]) : 500;
    struct timespec ts;
    volatile unsigned long x = 0;
    for (;;) {
        for (int i = 0; i < 100000; i++) x++;
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
        if (ts.tv_sec * 1000 + ts.tv_nsec / 1000000 >= ms) return 0;
    }
}
