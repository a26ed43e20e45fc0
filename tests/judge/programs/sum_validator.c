/* Kattis protocol: validator input answer feedback_dir < output; exit 42 accepted, 43 wrong. */
#include <stdio.h>
#include <string.h>
static void say(const char *dir, const char *file, const char *text)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    FILE *f = fopen(path, "w");
    if (f) { fputs(text, f); fclose(f); }
}
int main(int argc, char **argv)
{
    long long ans, out;
    if (argc < 4) return 1;
    FILE *an = fopen(argv[2], "r");
    if (!an || fscanf(an, "%lld", &ans) != 1) return 1;
    if (scanf("%lld", &out) != 1) { say(argv[3], "judgemessage.txt", "no number in the output"); return 43; }
    if (out == ans) { say(argv[3], "judgemessage.txt", "correct sum"); say(argv[3], "score.txt", "2.5\n"); return 42; }
    say(argv[3], "judgemessage.txt", "wrong sum");
    return 43;
}
