#include <stdio.h>
int main(void)
{
    FILE *f = fopen("/etc/shadow", "r");
    if (!f) { puts("BLOCKED"); return 0; }
    puts("ESCAPED: read /etc/shadow");
    return 42;
}
