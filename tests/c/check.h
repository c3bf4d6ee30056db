/* Shared helpers for the shim's test programs.
 *
 * CHECK(cond, fmt, ...) counts a check, or prints "FAIL file:line: cond: ..."
 * to stderr and exits with status 1. Programs print "ok <n> checks" last. */
#ifndef STRATA_TEST_CHECK_H
#define STRATA_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

__attribute__((unused)) static long checks_passed;

#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                         \
            fputc('\n', stderr);                                                  \
            exit(1);                                                              \
        }                                                                         \
        checks_passed++;                                                          \
    } while (0)

#define REPORT_OK() printf("ok %ld checks\n", checks_passed)

/* A field of /proc/self/status in KiB, e.g. status_kib("VmRSS:"). */
static inline long status_kib(const char *field)
{
    char line[256];
    long value = -1;
    FILE *status = fopen("/proc/self/status", "r");
    if (!status) {
        perror("fopen /proc/self/status");
        exit(1);
    }
    while (fgets(line, sizeof line, status)) {
        if (strncmp(line, field, strlen(field)) == 0) {
            value = strtol(line + strlen(field), NULL, 10);
            break;
        }
    }
    fclose(status);
    if (value < 0) {
        fprintf(stderr, "FAIL: no %s in /proc/self/status\n", field);
        exit(1);
    }
    return value;
}

/* Keeps the compiler from proving anything about a block. */
static void *volatile escape_sink;
static inline void escape(void *block) { escape_sink = block; }

/* Fills a block with a byte and checks it later. */
static inline void fill(void *block, int byte, size_t size) { memset(block, byte, size); }

static inline int filled_with(const void *block, int byte, size_t size)
{
    const unsigned char *bytes = (const unsigned char *)block;
    for (size_t i = 0; i < size; i++)
        if (bytes[i] != (unsigned char)byte)
            return 0;
    return 1;
}

/* Forks `count` children in turn; each runs child(round), which must not
 * return (it ends with exit or _exit). Checks that each child exits with
 * status 0 before the next fork. */
__attribute__((unused)) static inline void fork_rounds(int count, void (*child)(int round))
{
    for (int round = 0; round < count; round++) {
        fflush(stdout);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork failed");
        if (pid == 0) {
            child(round);
            _exit(127); /* child() must not return */
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid failed");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d ended with status %#x", round, status);
    }
}

#endif
