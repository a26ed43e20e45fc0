/* Guess the number. testlib protocol: interactor input tout; KATTIS=1 build: validator input answer feedback. */
#include <stdio.h>
int main(int argc, char **argv)
{
    long long n, g;
    FILE *in = fopen(argv[1], "r");
    if (!in || fscanf(in, "%lld", &n) != 1) return 3;
#ifdef KATTIS
    const int ok = 42, wa = 43;
#else
    const int ok = 0, wa = 1;
#endif
    for (int i = 0; i < 30; i++) {
        if (scanf("%lld", &g) != 1) { fprintf(stderr, "wrong answer: no guess (submission ended?)\n"); return wa; }
        if (g == n) {
            puts("=");
            fflush(stdout);
            fprintf(stderr, "found in %d guesses\n", i + 1);
#ifndef KATTIS
            FILE *t = fopen(argv[2], "w"); /* tout: what a testlib checker then judges */
            if (t) { fprintf(t, "%d\n", i + 1); fclose(t); }
#endif
            return ok;
        }
        puts(g < n ? ">" : "<");
        fflush(stdout);
    }
    fprintf(stderr, "wrong answer: 30 guesses used\n");
    return wa;
}
