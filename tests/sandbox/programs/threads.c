/* honest multi-threaded program: threads, sleep, mremap, writev must all work */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>
static void *work(void *arg)
{
    long *n = arg;
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, 0);
    for (long i = 0; i < 1000000; i++) *n += i & 1;
    return 0;
}
int main(void)
{
    pthread_t t[8];
    long n[8] = {0};
    for (int i = 0; i < 8; i++)
        if (pthread_create(&t[i], 0, work, &n[i]) != 0) { puts("pthread_create failed"); return 2; }
    long sum = 0;
    for (int i = 0; i < 8; i++) { pthread_join(t[i], 0); sum += n[i]; }
    char *p = mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(p, 1, 1 << 20);
    p = mremap(p, 1 << 20, 8 << 20, MREMAP_MAYMOVE);
    if (p == MAP_FAILED) { puts("mremap failed"); return 2; }
    usleep(1000);
    char line[64];
    int len = snprintf(line, sizeof line, "%ld\n", sum);
    struct iovec iov[2] = {{"sum ", 4}, {line, (size_t)len}};
    if (writev(1, iov, 2) < 0) return 2;
    return 0;
}
