/* always guesses 0: the interactor gives up after 30 guesses, then writes kill this with SIGPIPE */
#include <stdio.h>
#include <signal.h>
int main(void)
{
    signal(SIGPIPE, SIG_DFL);
    char r[8];
    for (;;) {
        printf("0\n");
        fflush(stdout);
        if (scanf("%7s", r) != 1) { for (;;) { printf("0\n"); fflush(stdout); } }
    }
}
