#include <signal.h>
#include <string.h>
static void ignore(int s) { (void)s; }
int main(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = ignore;
    sigaction(SIGXCPU, &sa, 0);
    volatile unsigned long x = 0;
    for (;;) x++;
}
