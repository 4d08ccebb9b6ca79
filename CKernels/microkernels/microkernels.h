// microkernels.h: the ISA-specific tile products behind one function table.
//
// The scheduling loop in sdpa.c owns tiles, masks and the online softmax; the
// functions here only compute the two tile products of FlashAttention-2:
//
//   qk_tile:  s[i][j]   = q_i · k_j               i < rows, j < cols, over head_dim
//   pv_tile:  acc[i][:] += Σ_j p[i][j] · v_j       i < rows, j < cols, over value_dim
//
// Row strides are in floats; the innermost dimension of q, k, v, s, p and acc is
// contiguous. A table is chosen once per process from the CPU's features
// (see dispatch.c) and can be forced with ATTENTION_KERNEL_PATH.
#ifndef CATTENTION_MICROKERNELS_H
#define CATTENTION_MICROKERNELS_H

#include <stdint.h>

typedef struct attn_microkernels {
    const char *name;
    void (*qk_tile)(const float *q, int64_t q_row_stride,
                    const float *k, int64_t k_row_stride,
                    int64_t rows, int64_t cols, int64_t head_dim,
                    float *s, int64_t s_row_stride);
    void (*pv_tile)(const float *p, int64_t p_row_stride,
                    const float *v, int64_t v_row_stride,
                    int64_t rows, int64_t cols, int64_t value_dim,
                    float *acc, int64_t acc_row_stride);
} attn_microkernels;

extern const attn_microkernels attn_microkernels_portable;

/// The table in use: chosen on first call, then fixed for the process.
const attn_microkernels *attn_selected_microkernels(void);

#endif
