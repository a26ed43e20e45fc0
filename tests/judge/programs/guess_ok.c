#include <stdio.h>
int main(void)
{
    long long lo = 1, hi = 1000000000;
    char r[8];
    while (lo <= hi) {
        long long m = lo + (hi - lo) / 2;
        printf("%lld\n", m);
        fflush(stdout);
        if (scanf("%7s", r) != 1 || r[0] == '=') return 0;
        if (r[0] == '>') lo = m + 1; else hi = m - 1;
    }
    return 0;
}
