// backward_portable.c: the backward's elementwise passes in plain C (see backward.h),
// and the choice of the table by the forward's path.
#include "../include/attention.h"
#include "backward.h"
#include "microkernels.h"

#include <math.h>
#include <string.h>

static void transpose_tile_portable(const float *restrict in, int64_t cols, int64_t rows, float *restrict out) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++) out[i * KEY_TILE + j] = in[j * QUERY_TILE + i];
}

static void score_gradient_portable(const float *restrict pt, float *restrict dst, const float *restrict delta,
                                    int64_t cols, int64_t rows, float scale) {
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < rows; i++) {
            const float p = pt[j * QUERY_TILE + i];
            const float product = p * (dst[j * QUERY_TILE + i] - delta[i]);
            const float ds = product * scale;
            dst[j * QUERY_TILE + i] = p == 0.0f && signbit(p) ? -0.0f : ds;
        }
}

const attn_backward_kernels attn_backward_kernels_portable = {
    .name = "portable",
    .transpose_tile = transpose_tile_portable,
    .score_gradient = score_gradient_portable,
};

const attn_backward_kernels *attn_selected_backward_kernels(void) {
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(attn_kernel_path(), "avx512") == 0) return &attn_backward_kernels_avx512;
#endif
    return &attn_backward_kernels_portable;
}
