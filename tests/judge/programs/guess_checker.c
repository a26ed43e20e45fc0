/* testlib checker of the guessing problem: output is the interactor's tout (guesses used). */
#include <stdio.h>
int main(int argc, char **argv)
{
    int used;
    FILE *o = fopen(argv[2], "r");
    if (!o || fscanf(o, "%d", &used) != 1) { fprintf(stderr, "tout is empty\n"); return 3; }
    if (used > 12) { fprintf(stderr, "checker: %d guesses, at most 12 allowed\n", used); return 1; }
    fprintf(stderr, "checker: %d guesses\n", used);
    return 0;
}
