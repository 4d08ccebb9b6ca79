// dispatch.c: chooses the micro-kernel table once per process.
//
// The best path the CPU supports is used (x86: avx512 > avx2 > portable;
// aarch64: neon > portable), unless ATTENTION_KERNEL_PATH=portable|avx2|avx512|neon
// names another; a named path the CPU lacks falls back to the best available
// one rather than faulting on an illegal instruction, and an unknown or
// unsupported name warns once on stderr (environment.h). attn_select_kernel_path
// switches at run time (tests, benchmarks).
#include "../include/attention.h"
#include "../environment.h"
#include "microkernels.h"

#include <stdatomic.h>

#include <stdio.h>

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

// A path of some build (neon is not compiled on x86, avx2 not on AArch64).
static int known_path_name(const char *name) {
    static const char *const names[] = {"avx512", "avx2", "neon", "portable"};
    for (unsigned index = 0; index < sizeof names / sizeof names[0]; index++)
        if (strcmp(names[index], name) == 0) return 1;
    return 0;
}

// The path ATTENTION_KERNEL_PATH names, or the best available one (with the
// warning of environment.h when it names none this CPU can run).
static const attn_microkernels *path_from_environment(void) {
    static atomic_int warned;
    const char *name = attn_environment_value("ATTENTION_KERNEL_PATH");
    const attn_microkernels *forced = named(name), *const best = best_available();
    if (forced && attn_microkernels_supported(forced)) return forced;
    if (name) {
        char problem[160];
        if (!known_path_name(name)) {
            snprintf(problem, sizeof problem, "expected avx512, avx2, neon or portable");
        } else {
            // "this CPU cannot run it (it can run avx2, portable)"; 4 short names fit.
            int used = snprintf(problem, sizeof problem, "this CPU cannot run it (it can run");
            const char *separator = " ";
            for (int index = 0; index < PATH_COUNT; index++)
                if (attn_microkernels_supported(all_paths[index]) && used < (int)sizeof problem) {
                    used += snprintf(problem + used, sizeof problem - (size_t)used, "%s%s", separator,
                                     all_paths[index]->name);
                    separator = ", ";
                }
            if (used < (int)sizeof problem) snprintf(problem + used, sizeof problem - (size_t)used, ")");
        }
        attn_environment_warning(&warned, "ATTENTION_KERNEL_PATH", name, problem, best->name);
    }
    return best;
}

const attn_microkernels *attn_selected_microkernels(void) {
    const attn_microkernels *table = selected;
    if (!table) {  // a benign race: every thread computes the same pointer (and one warns)
        table = path_from_environment();
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

// Whether a decode step prefetches the next tile of keys and values itself.
// On AMD Zen (measured on Zen 5 only: 1,32,1,16384,128, 1,32,1,2048,128,
// 1,32,1,1024,128, 1,4,1,2048,128, 1,8,1,8192,128,2 and 1,16,1,4096,64,4) the
// hardware prefetchers keep up with float32 keys in any layout and with any
// storage in 64-key panels (one sequential stream a tile), and the software
// stream's instructions cost more than they hide: off (16-bit storage in 64-key
// panels: 1.2–1.3× faster without it). 16-bit keys in rows or 16-key panels
// (four 4 KiB streams a tile) gain from it in DRAM there: on. Elsewhere
// (measured on Intel Sapphire Rapids, where it was a gain): on.
static int amd_cpu(void) {
    static atomic_int cached = -1;
    int known = atomic_load(&cached);
    if (known < 0) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_cpu_init();
        known = __builtin_cpu_is("amd") ? 1 : 0;
#else
        known = 0;
#endif
        atomic_store(&cached, known);
    }
    return known;
}

int attn_decode_prefetch(attn_storage storage, attn_key_layout layout) {
    if (!amd_cpu()) return 1;
    return storage != ATTN_STORAGE_F32 && layout != ATTN_KEY_LAYOUT_PANELS64;
}
