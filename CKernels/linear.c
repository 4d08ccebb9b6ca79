// linear.c: the projections of the attention layers, y = x·Wᵀ + b.
//
//   x      [rows, in_features]            (activations, row-major)
//   weight [out_features, in_features]    (PyTorch nn.Linear layout)
//   bias   [out_features] or NULL
//   y      [rows, out_features]
//
// x·Wᵀ has the shape of the attention logits Q·Kᵀ (rows of x against rows of W),
// so it reuses the qk_tile micro-kernel on ROW_TILE × OUT_TILE blocks.
#include "attention.h"
#include "microkernels/microkernels.h"

#ifdef _OPENMP
int omp_get_max_threads(void);
#endif

enum {
    ROW_TILE = 64,   // rows of x per task
    OUT_TILE = 64,   // rows of W per micro-kernel call: 64 × in_features floats stay in L2
};

attn_status attn_linear_forward(const float *x, int64_t rows, int64_t in_features,
                                const float *weight, const float *bias, int64_t out_features,
                                float *y, int32_t num_threads) {
    if (rows < 0 || in_features < 0 || out_features < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    if (rows == 0 || out_features == 0) return ATTN_OK;
    if (!y || (in_features > 0 && (!x || !weight))) return ATTN_ERROR_NULL_POINTER;

    const attn_microkernels *kernels = attn_selected_microkernels();
    const int64_t row_tiles = (rows + ROW_TILE - 1) / ROW_TILE;
    int threads = 1;
#ifdef _OPENMP
    threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    if ((int64_t)threads > row_tiles) threads = (int)row_tiles;
#endif
    (void)num_threads;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t tile = 0; tile < row_tiles; tile++) {
        const int64_t row0 = tile * ROW_TILE;
        const int64_t tile_rows = rows - row0 < ROW_TILE ? rows - row0 : ROW_TILE;
        for (int64_t out0 = 0; out0 < out_features; out0 += OUT_TILE) {
            const int64_t cols = out_features - out0 < OUT_TILE ? out_features - out0 : OUT_TILE;
            float *y_block = y + row0 * out_features + out0;
            if (in_features > 0) {
                kernels->qk_tile(x + row0 * in_features, in_features, weight + out0 * in_features,
                                 in_features, tile_rows, cols, in_features, y_block, out_features);
            } else {
                for (int64_t i = 0; i < tile_rows; i++)
                    for (int64_t j = 0; j < cols; j++) y_block[i * out_features + j] = 0.0f;
            }
            if (bias)
                for (int64_t i = 0; i < tile_rows; i++)
                    for (int64_t j = 0; j < cols; j++) y_block[i * out_features + j] += bias[out0 + j];
        }
    }
    return ATTN_OK;
}
