/* testlib protocol: checker input output answer; exit 0 ok, 1 wa, 2 pe, 7 + "points N" partial.
 * Recomputes a+b from the input it is given, so an input changed by the submission would show. */
#include <stdio.h>
int main(int argc, char **argv)
{
    long long a, b, out, ans;
    char extra;
    if (argc < 4) return 3;
    FILE *in = fopen(argv[1], "r"), *o = fopen(argv[2], "r"), *an = fopen(argv[3], "r");
    if (!in || !o || !an) { fprintf(stderr, "cannot open files\n"); return 3; }
    if (fscanf(in, "%lld %lld", &a, &b) != 2 || fscanf(an, "%lld", &ans) != 1) { fprintf(stderr, "bad test\n"); return 3; }
    if (a + b != ans) { fprintf(stderr, "input and answer disagree: input was changed\n"); return 3; }
    if (fscanf(o, "%lld", &out) != 1) { fprintf(stderr, "no number in the output\n"); return 2; }
    if (fscanf(o, " %c", &extra) == 1) { fprintf(stderr, "extra output after the number\n"); return 2; }
    if (out == ans) { fprintf(stderr, "ok %lld\n", out); return 0; }
    if (out == ans + 1 || out == ans - 1) { fprintf(stderr, "points 0.5\noff by one\n"); return 7; }
    fprintf(stderr, "expected %lld, found %lld\n", ans, out);
    return 1;
}
