// backward.h: the elementwise passes of the backward kernel, per ISA, behind one table.
//
// The tile products of sdpa_backward.c are the forward's micro-kernels
// (microkernels.h); what the backward adds is elementwise over one score tile,
// laid out as the forward's, [KEY_TILE][QUERY_TILE] (key j, query row i):
//
//   transpose_tile: out[i][j] = in[j][i] for j < cols, i < rows; out rows are
//                   KEY_TILE floats apart. Cells past cols in a row of out, and
//                   rows past `rows`, may be written with anything.
//   score_gradient: dst[j][i] = masked(pt[j][i]) ? −0 : pt[j][i] · (dst[j][i] − delta[i]) · scale
//                   for j < cols and every lane of the row vectors holding rows
//                   [0, rows) (dS = P ∘ (dP − D), FlashAttention-2, Algorithm 2;
//                   masked = the forward's −0 mark), the product evaluated left
//                   to right with no fused multiply-add, on every path.
//
// The table follows the forward's path (attn_kernel_path()): "avx512" has its
// own, every other path (avx2, neon, portable) the portable one.
#ifndef CATTENTION_BACKWARD_KERNELS_H
#define CATTENTION_BACKWARD_KERNELS_H

#include <stdint.h>

typedef struct attn_backward_kernels {
    const char *name;
    void (*transpose_tile)(const float *in, int64_t cols, int64_t rows, float *out);
    void (*score_gradient)(const float *pt, float *dst, const float *delta, int64_t cols, int64_t rows, float scale);
} attn_backward_kernels;

extern const attn_backward_kernels attn_backward_kernels_portable;
#if defined(__x86_64__) || defined(__i386__)
extern const attn_backward_kernels attn_backward_kernels_avx512;
#endif

/// The table that goes with the forward's selected micro-kernel path.
const attn_backward_kernels *attn_selected_backward_kernels(void);

#endif
