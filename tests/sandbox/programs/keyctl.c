#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void)
{
    long r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0);
    printf("keyctl returned %ld\n", r);
    return 42;
}
