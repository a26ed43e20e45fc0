/* fork, setsid, and keep running after the parent exits */
#include <stdio.h>
#include <unistd.h>
int main(void)
{
    pid_t p = fork();
    if (p < 0)
        return 2;
    if (p == 0) {
        setsid();
        if (fork() == 0) {
            for (;;) sleep(1000);
        }
        for (;;) sleep(1000);
    }
    puts("parent leaving");
    return 0;
}
