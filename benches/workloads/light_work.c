/* The light-work pattern of issue 8: allocate and write 512 MiB of 4 KiB
 * objects, free them all, then make one small malloc/free every 50 ms for
 * 5 s, printing the resident set (from /proc/self/statm) every 0.5 s.
 *
 *   gcc -O2 -o light_work benches/workloads/light_work.c
 *   LD_PRELOAD=target/release/libstrata.so ./light_work
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>
static long rss_kib(void) {
    char t[128]; int fd = open("/proc/self/statm", O_RDONLY); ssize_t n = read(fd, t, 127); close(fd); t[n > 0 ? n : 0] = 0;
    long a = 0, b = 0; sscanf(t, "%ld %ld", &a, &b); return b * 4;
}
int main(void) {
    enum { N = 131072 };
    static void *p[N];
    for (int i = 0; i < N; i++) { p[i] = malloc(4096); memset(p[i], 1, 4096); }
    printf("before free: %ld MiB\n", rss_kib() / 1024);
    for (int i = 0; i < N; i++) free(p[i]);
    printf("t=0.00 s: %ld MiB\n", rss_kib() / 1024);
    for (int t = 1; t <= 100; t++) {
        void *q = malloc(32); *(volatile char *)q = 1; free(q);
        usleep(50000);
        if (t % 10 == 0) printf("t=%.2f s: %ld MiB\n", t * 0.05, rss_kib() / 1024);
    }
    return 0;
}
