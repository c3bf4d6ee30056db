// C++ allocation through libstdc++'s operators: plain, array, sized,
// aligned and nothrow new and delete must all land in Strata. Memory from
// `new` is handed to `free` and memory from `malloc` to `delete`; with two
// allocators in play the checked free would abort on the foreign pointer.
#include <malloc.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

#include "check.h"

struct alignas(64) Line {
    char bytes[64];
};
struct alignas(4096) Page {
    char bytes[100];
};

static void *volatile sink;

static void standard_library_load()
{
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; t++) {
        threads.emplace_back([t] {
            std::map<int, std::string> map;
            for (int i = 0; i < 20000; i++)
                map[i] = std::string(static_cast<size_t>(i % 300), static_cast<char>('a' + t));
            std::vector<std::unique_ptr<Line>> lines;
            for (int i = 0; i < 1000; i++)
                lines.push_back(std::make_unique<Line>());
        });
    }
    for (auto &thread : threads)
        thread.join();
}

int main()
{
    char *array = new char[100];
    CHECK(malloc_usable_size(array) >= 100, "new char[100]: usable size %zu", malloc_usable_size(array));
    delete[] array;

    void *from_new = ::operator new(1000);
    sink = from_new;
    CHECK(malloc_usable_size(from_new) >= 1000, "operator new(1000): usable size %zu", malloc_usable_size(from_new));
    free(from_new);
    void *from_malloc = malloc(1000);
    sink = from_malloc;
    ::operator delete(from_malloc);

    int *number = new int(5);
    sink = number;
    ::operator delete(number, sizeof(int));

    Line *line = new Line;
    CHECK(reinterpret_cast<uintptr_t>(line) % 64 == 0, "new Line = %p", static_cast<void *>(line));
    CHECK(malloc_usable_size(line) >= sizeof(Line), "new Line: usable size %zu", malloc_usable_size(line));
    delete line;
    Page *pages = new Page[3];
    CHECK(reinterpret_cast<uintptr_t>(pages) % 4096 == 0, "new Page[3] = %p", static_cast<void *>(pages));
    delete[] pages;
    void *big = ::operator new(100, std::align_val_t(1 << 20));
    CHECK(reinterpret_cast<uintptr_t>(big) % (1 << 20) == 0, "aligned operator new = %p", big);
    free(big);
    big = ::operator new(5000, std::align_val_t(256), std::nothrow);
    CHECK(big && reinterpret_cast<uintptr_t>(big) % 256 == 0, "aligned nothrow new = %p", big);
    ::operator delete(big, 5000, std::align_val_t(256));

    CHECK(::operator new(SIZE_MAX / 2, std::nothrow) == nullptr, "nothrow new of SIZE_MAX/2 succeeded");
    bool threw = false;
    try {
        sink = ::operator new(SIZE_MAX / 2);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "operator new(SIZE_MAX/2) did not throw bad_alloc");

    size_t before = mallinfo2().uordblks;
    std::vector<std::unique_ptr<char[]>> blocks;
    for (int i = 0; i < 10000; i++)
        blocks.emplace_back(new char[3000]);
    size_t after = mallinfo2().uordblks;
    CHECK(after >= before + 10000 * 3000, "Strata's mallinfo2 counted %zu new bytes for 30 MB of new[]", after - before);
    blocks.clear();

    standard_library_load();
    REPORT_OK();
    return 0;
}
