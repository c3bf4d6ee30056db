/* fork() while other threads allocate with stdio locks held, as glibc's own
 * stdio does:
 *
 * - a flusher prints to a fully buffered stream and calls fflush(NULL),
 *   which holds the stdio list lock and each stream's lock in turn while it
 *   writes the buffers out; this stream's write function allocates (as a
 *   compressing or encrypting layer would);
 * - a reader calls getline on an fmemopen stream, freeing each line, so
 *   that getdelim grows the line with realloc (past 32 KiB: blocks from the
 *   shared domain) with the stream's lock held;
 * - a printer formats into open_memstream streams, which grow with malloc
 *   under their lock.
 *
 * glibc's fork takes the stdio list lock after the atfork prepare handlers.
 * An allocator whose prepare handler takes its lock then waits for the list
 * lock holding it, while the holder of the list lock (or of a stream lock it
 * waits for) waits for the allocator: a deadlock, which the test harness's
 * hang guard reports. Each child allocates, uses stdio and calls _exit. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

enum { FORKS = 200, LINE = 100000, LINES = 6, WRITE_BLOCK = 256 * 1024 };

static atomic_int stop;
static atomic_long flushes, lines_read, streams_printed;

/* The flusher's stream: each write allocates a span-sized block. */
static ssize_t allocating_write(void *cookie, const char *data, size_t size)
{
    (void)cookie;
    char *copy = malloc(WRITE_BLOCK + size);
    if (!copy)
        return -1;
    memcpy(copy, data, size);
    escape(copy);
    free(copy);
    return (ssize_t)size;
}

static void *flusher(void *arg)
{
    (void)arg;
    static char buffer[1 << 16];
    cookie_io_functions_t io = {.write = allocating_write};
    FILE *out = fopencookie(NULL, "w", io);
    CHECK(out != NULL, "fopencookie failed");
    CHECK(setvbuf(out, buffer, _IOFBF, sizeof buffer) == 0, "setvbuf failed");
    for (unsigned long n = 0; !atomic_load(&stop); n++) {
        fprintf(out, "line %lu: %0*d\n", n, 200, 0);
        fflush(NULL);
        atomic_fetch_add(&flushes, 1);
    }
    fclose(out);
    return NULL;
}

/* LINES lines of LINE bytes each. */
static char *make_text(size_t *size)
{
    *size = (size_t)LINES * (LINE + 1);
    char *text = malloc(*size);
    CHECK(text != NULL, "malloc(%zu) failed", *size);
    for (int i = 0; i < LINES; i++) {
        memset(text + (size_t)i * (LINE + 1), 'a' + i, LINE);
        text[(size_t)i * (LINE + 1) + LINE] = '\n';
    }
    return text;
}

static void *reader(void *arg)
{
    (void)arg;
    size_t size;
    char *text = make_text(&size);
    while (!atomic_load(&stop)) {
        FILE *in = fmemopen(text, size, "r");
        CHECK(in != NULL, "fmemopen failed");
        char *line = NULL;
        size_t capacity = 0;
        ssize_t length;
        while ((length = getline(&line, &capacity, in)) > 0) {
            CHECK(length == LINE + 1, "getline read %zd bytes", length);
            /* Start from nothing again: getline reallocates its way up. */
            free(line);
            line = NULL;
            capacity = 0;
            atomic_fetch_add(&lines_read, 1);
        }
        free(line);
        fclose(in);
    }
    free(text);
    return NULL;
}

static void *printer(void *arg)
{
    (void)arg;
    for (unsigned long n = 0; !atomic_load(&stop); n++) {
        char *text = NULL;
        size_t size = 0;
        FILE *out = open_memstream(&text, &size);
        CHECK(out != NULL, "open_memstream failed");
        for (int i = 0; i < 64; i++)
            fprintf(out, "%lu %d %0*d\n", n, i, 1000, 0);
        fclose(out);
        CHECK(size > 64 * 1000, "open_memstream holds %zu bytes", size);
        free(text);
        atomic_fetch_add(&streams_printed, 1);
    }
    return NULL;
}

/* Runs in the child: allocation and stdio must work. Exits with 0, or the
 * number of the step that failed. */
static void child(int round)
{
    void *blocks[64];
    for (int i = 0; i < 64; i++) {
        size_t size = i % 8 == 0 ? 100000 + (size_t)i : 16 + (size_t)i * 40;
        blocks[i] = malloc(size);
        if (!blocks[i])
            _exit(2);
        memset(blocks[i], i, size);
    }
    for (int i = 0; i < 64; i++)
        free(blocks[i]);

    char *text = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&text, &size);
    if (!out)
        _exit(3);
    fprintf(out, "child %d", round);
    if (fclose(out) != 0 || strncmp(text, "child ", 6) != 0 || size < 7)
        _exit(4);
    free(text);

    char line_text[] = "one\ntwo\n";
    FILE *in = fmemopen(line_text, strlen(line_text), "r");
    char *line = NULL;
    size_t capacity = 0;
    if (!in || getline(&line, &capacity, in) != 4 || strcmp(line, "one\n") != 0)
        _exit(5);
    free(line);
    fclose(in);
    _exit(0);
}

int main(void)
{
    void *(*bodies[])(void *) = {flusher, reader, printer};
    enum { THREADS = sizeof bodies / sizeof bodies[0] };
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&threads[i], NULL, bodies[i], NULL) == 0, "pthread_create failed");
    /* Let every thread get going. */
    while (atomic_load(&flushes) == 0 || atomic_load(&lines_read) == 0 || atomic_load(&streams_printed) == 0)
        sched_yield();
    fork_rounds(FORKS, child);
    atomic_store(&stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    printf("forks=%d\n", FORKS);
    REPORT_OK();
    return 0;
}
