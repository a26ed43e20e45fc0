#include <signal.h>
#include <stdio.h>
#include <unistd.h>
int main(void)
{
    int a = kill(getppid(), SIGKILL), b = kill(-1, SIGKILL);
    (void)b;
    if (a < 0) { puts("BLOCKED"); return 0; }
    sleep(1);
    puts("ESCAPED: killed parent");
    return 42;
}
