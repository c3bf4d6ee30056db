/*
 * C program for Strata's gcc workload.
 *
 * The preprocessor expands a few macros into two hundred distinct
 * functions, so compiling this small file with -O2 makes gcc (cc1, as, ld)
 * allocate heavily. The built program prints a deterministic checksum, so the
 * output of the compiled program can be compared between allocators as well.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One mixing function per instance: loops, branches and a small table. */
#define MIXER(n)                                                            \
    static uint64_t mix_##n(uint64_t x)                                     \
    {                                                                       \
        uint64_t table[8];                                                  \
        for (int i = 0; i < 8; i++)                                         \
            table[i] = (x + (uint64_t)i * (n##ULL + 1)) * 0x9E3779B97F4A7C15ULL; \
        for (int round = 0; round < 2; round++) {                           \
            for (int i = 0; i < 8; i++) {                                   \
                x ^= table[(i + round) & 7] >> ((n + i) % 31 + 1);          \
                if ((x & 3) == (uint64_t)(n % 4))                           \
                    x = x * 6364136223846793005ULL + 1442695040888963407ULL; \
                else                                                        \
                    x = (x << 7) | (x >> 57);                               \
                table[i] ^= x;                                              \
            }                                                               \
        }                                                                   \
        return x ^ table[n % 8];                                            \
    }

#define MIXER10(n) MIXER(n##0) MIXER(n##1) MIXER(n##2) MIXER(n##3) MIXER(n##4) \
    MIXER(n##5) MIXER(n##6) MIXER(n##7) MIXER(n##8) MIXER(n##9)
#define MIXER100(n) MIXER10(n##0) MIXER10(n##1) MIXER10(n##2) MIXER10(n##3)   \
    MIXER10(n##4) MIXER10(n##5) MIXER10(n##6) MIXER10(n##7) MIXER10(n##8)     \
    MIXER10(n##9)

MIXER100(1)
MIXER100(2)

#define ENTRY(n) mix_##n,
#define ENTRY10(n) ENTRY(n##0) ENTRY(n##1) ENTRY(n##2) ENTRY(n##3) ENTRY(n##4) \
    ENTRY(n##5) ENTRY(n##6) ENTRY(n##7) ENTRY(n##8) ENTRY(n##9)
#define ENTRY100(n) ENTRY10(n##0) ENTRY10(n##1) ENTRY10(n##2) ENTRY10(n##3)   \
    ENTRY10(n##4) ENTRY10(n##5) ENTRY10(n##6) ENTRY10(n##7) ENTRY10(n##8)     \
    ENTRY10(n##9)

/* Every generated function, so none is discarded as unused. */
static uint64_t (*const mixers[])(uint64_t) = {
    ENTRY100(1) ENTRY100(2)
};

int main(void)
{
    size_t count = sizeof mixers / sizeof mixers[0];
    uint64_t checksum = 0;
    char *buffer = malloc(count * 17 + 1);
    if (buffer == NULL)
        return 1;
    buffer[0] = '\0';
    for (size_t i = 0; i < count; i++) {
        checksum = mixers[i](checksum + i);
        if (i % 50 == 0)
            sprintf(buffer + strlen(buffer), "%016llx ", (unsigned long long)checksum);
    }
    printf("functions=%zu checksum=%016llx\n", count, (unsigned long long)checksum);
    printf("samples=%s\n", buffer);
    free(buffer);
    return 0;
}
