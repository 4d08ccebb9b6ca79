// cache_memory.c: memory for a key/value cache, which a decode step streams
// whole, once per token: hundreds of MiB read at the memory bandwidth.
//
// At 4 KiB a page, such a stream needs a new TLB entry every 4 KiB (a page walk
// each once the TLB's reach is passed); in 2 MiB pages it needs one per 2 MiB.
// Buffers of at least ATTN_CACHE_HUGE_PAGE bytes are therefore mapped directly,
// 2 MiB-aligned, and (Linux) advised to use transparent huge pages, which the
// kernel grants in its "madvise" and "always" modes (not "never"; macOS has
// none); smaller ones come from the aligned allocator. Both are zero-filled.
#define _DEFAULT_SOURCE
#include "attention.h"
#include "plan.h"
#include <stdint.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <sys/mman.h>
#define ATTN_HAVE_MMAP 1
#endif

enum { ATTN_CACHE_HUGE_PAGE = 2 << 20 };

// The size of the mapping of a buffer of `bytes` (≥ ATTN_CACHE_HUGE_PAGE): whole huge pages.
static size_t mapped_bytes(int64_t bytes) {
    return ((size_t)bytes + ATTN_CACHE_HUGE_PAGE - 1) / ATTN_CACHE_HUGE_PAGE * ATTN_CACHE_HUGE_PAGE;
}

void *attn_cache_alloc(int64_t bytes) {
    if (bytes < 1 || (uint64_t)bytes > SIZE_MAX - 2u * ATTN_CACHE_HUGE_PAGE) return 0;
#ifdef ATTN_HAVE_MMAP
    if (bytes >= ATTN_CACHE_HUGE_PAGE) {
        // Map one huge page more than needed, then unmap what lies outside the
        // first 2 MiB boundary's span, so that the buffer is exactly mapped.
        const size_t length = mapped_bytes(bytes);
        char *mapping = mmap(0, length + ATTN_CACHE_HUGE_PAGE, PROT_READ | PROT_WRITE,
                             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (mapping == MAP_FAILED) return 0;
        const uintptr_t at = (uintptr_t)mapping;
        char *aligned = mapping + ((ATTN_CACHE_HUGE_PAGE - at % ATTN_CACHE_HUGE_PAGE) % ATTN_CACHE_HUGE_PAGE);
        const size_t head = (size_t)(aligned - mapping), tail = ATTN_CACHE_HUGE_PAGE - head;
        if (head) munmap(mapping, head);
        if (tail) munmap(aligned + length, tail);
#ifdef MADV_HUGEPAGE
        madvise(aligned, length, MADV_HUGEPAGE);  // advice: no error if the kernel declines
#endif
        return aligned;
    }
#endif
    void *memory = attn_aligned_alloc((size_t)bytes);
    if (memory) memset(memory, 0, (size_t)bytes);
    return memory;
}

void attn_cache_free(void *memory, int64_t bytes) {
    if (!memory) return;
#ifdef ATTN_HAVE_MMAP
    if (bytes >= ATTN_CACHE_HUGE_PAGE) {
        munmap(memory, mapped_bytes(bytes));
        return;
    }
#endif
    attn_aligned_free(memory);
}
