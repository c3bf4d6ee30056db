/* Memory freed before a program settles into light work goes back within
 * the purge delay: after freeing many 4 KiB objects, the program makes one
 * small malloc/free at a time with a pause between (as a server idling on a
 * timer does), never refilling its thread cache, and the resident set must
 * fall. No timing is asserted: the loop waits for the resident set, for at
 * most ROUNDS rounds.
 *
 * Prints rss_peak_kib, rss_after_kib, rss_base_kib and rounds. */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"

/* 200 rounds: the purge delay (250 ms) is 5 of them. Before the shim
 * tidied more often while memory waited, the first purge came only after
 * about a thousand more frees. */
enum { OBJECTS = 32768, OBJECT_SIZE = 4096, ROUNDS = 200, PAUSE_US = 50000 };

/* The resident set in KiB from /proc/self/statm, read without stdio so
 * that measuring makes no malloc or free of its own. */
static long rss_kib(void)
{
    char text[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    CHECK(fd >= 0, "open /proc/self/statm");
    ssize_t length = read(fd, text, sizeof text - 1);
    close(fd);
    CHECK(length > 0, "read /proc/self/statm");
    text[length] = 0;
    long pages_total = 0, pages_resident = 0;
    CHECK(sscanf(text, "%ld %ld", &pages_total, &pages_resident) == 2, "parse statm: %s", text);
    return pages_resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *objects[OBJECTS];

int main(void)
{
    long base = rss_kib();
    for (int i = 0; i < OBJECTS; i++) {
        objects[i] = malloc(OBJECT_SIZE);
        CHECK(objects[i] != NULL, "malloc failed");
        memset(objects[i], 0x42, OBJECT_SIZE);
    }
    long peak = rss_kib();
    CHECK(peak - base >= 100 * 1024, "the objects did not become resident (%ld -> %ld KiB)", base, peak);
    for (int i = 0; i < OBJECTS; i++)
        free(objects[i]);
    long target = base + (peak - base) / 8;
    long after = rss_kib();
    int rounds = 0;
    while (after > target && rounds < ROUNDS) {
        void *small = malloc(48);
        CHECK(small != NULL, "malloc(48) failed");
        escape(small);
        free(small);
        usleep(PAUSE_US);
        rounds++;
        after = rss_kib();
    }
    printf("rss_peak_kib=%ld\nrss_after_kib=%ld\nrss_base_kib=%ld\nrounds=%d\n", peak, after, base, rounds);
    CHECK(after <= target, "the resident set stayed at %ld KiB (peak %ld, base %ld) through %d rounds of light work", after, peak, base, rounds);
    REPORT_OK();
    return 0;
}
