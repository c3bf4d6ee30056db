/* Memory freed before a program settles into light work goes back within
 * the purge delay: after freeing many 4 KiB objects, the program makes one
 * small malloc/free at a time with a pause between (as a server idling on a
 * timer does), never refilling its thread cache, and the resident set must
 * fall. No timing is asserted: the loop waits for the resident set, for at
 * most ROUNDS rounds.
 *
 * Prints rss_peak_kib, rss_after_kib, rss_base_kib and rounds. */
#include <unistd.h>

#include "check.h"

enum { OBJECTS = 32768, OBJECT_SIZE = 4096, ROUNDS = 400, PAUSE_US = 50000 };

static void *objects[OBJECTS];

int main(void)
{
    long base = status_kib("VmRSS:");
    for (int i = 0; i < OBJECTS; i++) {
        objects[i] = malloc(OBJECT_SIZE);
        CHECK(objects[i] != NULL, "malloc failed");
        memset(objects[i], 0x42, OBJECT_SIZE);
    }
    long peak = status_kib("VmRSS:");
    CHECK(peak - base >= 100 * 1024, "the objects did not become resident (%ld -> %ld KiB)", base, peak);
    for (int i = 0; i < OBJECTS; i++)
        free(objects[i]);
    long target = base + (peak - base) / 8;
    long after = status_kib("VmRSS:");
    int rounds = 0;
    while (after > target && rounds < ROUNDS) {
        void *small = malloc(48);
        CHECK(small != NULL, "malloc(48) failed");
        escape(small);
        free(small);
        usleep(PAUSE_US);
        rounds++;
        after = status_kib("VmRSS:");
    }
    printf("rss_peak_kib=%ld\nrss_after_kib=%ld\nrss_base_kib=%ld\nrounds=%d\n", peak, after, base, rounds);
    CHECK(after <= target, "the resident set stayed at %ld KiB (peak %ld, base %ld) through %d rounds of light work", after, peak, base, rounds);
    REPORT_OK();
    return 0;
}
