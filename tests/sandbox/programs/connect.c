/* connect to 127.0.0.1:5432 */
#include <arpa/inet.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>
int main(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0) { puts("BLOCKED: socket"); return 0; }
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(5432);
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) { puts("BLOCKED: connect"); return 0; }
    puts("ESCAPED: connected");
    return 42;
}
