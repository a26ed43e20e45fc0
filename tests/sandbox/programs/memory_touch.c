/* malloc and touch N MiB (default 1024), then exit 0 */
#include <stdlib.h>
#include <string.h>
int main(int argc, char **argv)
{
    long mib = argc > 1 ? atol(argv[1]) : 1024;
    char *p = malloc((size_t)mib << 20);
    if (!p)
        return 2;
    for (long i = 0; i < (mib << 20); i += 4096)
        p[i] = 1;
    return p[4096] - 1;
}
