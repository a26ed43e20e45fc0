/* a testlib-protocol checker that always reports its own failure (exit 3) */
#include <stdio.h>
int main(void) { fputs("checker failure: cannot open the answer\n", stderr); return 3; }
