// dispatch.c: chooses the micro-kernel table once per process.
//
// The best path the CPU supports is used (x86: avx512 > avx2 > portable;
// aarch64: neon > portable), unless ATTENTION_KERNEL_PATH=portable|avx2|avx512|neon
// names another; a named path the CPU lacks falls back to the best available
// one rather than faulting on an illegal instruction. attn_select_kernel_path switches at run time (tests, benchmarks).
#include "../include/attention.h"
#include "microkernels.h"

#include <stdlib.h>
#include <string.h>

static const attn_microkernels *const all_paths[] = {
#if defined(__x86_64__) || defined(__i386__)
    &attn_microkernels_avx512, &attn_microkernels_avx2,
#endif
#if defined(__aarch64__)
    &attn_microkernels_neon,  // Advanced SIMD is mandatory in AArch64: always supported
#endif
    &attn_microkernels_portable,
};
enum { PATH_COUNT = sizeof(all_paths) / sizeof(all_paths[0]) };

int attn_microkernels_supported(const attn_microkernels *table) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (table == &attn_microkernels_avx512) return __builtin_cpu_supports("avx512f");
    if (table == &attn_microkernels_avx2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");  // widen_rows
#elif defined(__aarch64__)
    if (table != &attn_microkernels_neon && table != &attn_microkernels_portable) return 0;
#else
    if (table != &attn_microkernels_portable) return 0;
#endif
    return 1;
}

static const attn_microkernels *named(const char *name) {
    for (int index = 0; index < PATH_COUNT; index++)
        if (name && strcmp(all_paths[index]->name, name) == 0) return all_paths[index];
    return 0;
}

static const attn_microkernels *best_available(void) {
    for (int index = 0; index < PATH_COUNT; index++)
        if (attn_microkernels_supported(all_paths[index])) return all_paths[index];
    return &attn_microkernels_portable;
}

static const attn_microkernels *_Atomic selected = 0;

const attn_microkernels *attn_selected_microkernels(void) {
    const attn_microkernels *table = selected;
    if (!table) {  // a benign race: every thread computes the same pointer
        const attn_microkernels *forced = named(getenv("ATTENTION_KERNEL_PATH"));
        table = forced && attn_microkernels_supported(forced) ? forced : best_available();
        selected = table;
    }
    return table;
}

int attn_select_kernel_path(const char *name) {
    const attn_microkernels *table = named(name);
    if (!table || !attn_microkernels_supported(table)) return 0;
    selected = table;
    return 1;
}

int attn_kernel_path_supported(const char *name) {
    const attn_microkernels *table = named(name);
    return table && attn_microkernels_supported(table);
}
