// linear.c: the projections of the attention layers, y = x·Wᵀ + b.
//
//   x      [rows, in_features]            (activations, row-major)
//   weight [out_features, in_features]    (PyTorch nn.Linear layout)
//   bias   [out_features] or NULL
//   y      [rows, out_features]
//
// x·Wᵀ has the shape of the attention logits Q·Kᵀ, rows of x against rows of
// W, so it reuses the attention micro-kernels: a tile of QUERY_TILE rows of x is
// packed once (pack_query, scale 1), then multiplied by KEY_TILE rows of W at a
// time (qk_tile), and the transposed result tile is written out with the bias.
#include "attention.h"
#include "microkernels/microkernels.h"

#include <stdlib.h>

#ifdef _OPENMP
int omp_get_max_threads(void);
int omp_get_thread_num(void);
#endif

enum { SCRATCH_ALIGNMENT = 64 };

attn_status attn_linear_forward(const float *x, int64_t rows, int64_t in_features,
                                const float *weight, const float *bias, int64_t out_features,
                                float *y, int32_t num_threads) {
    if (rows < 0 || in_features < 0 || out_features < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    if (rows == 0 || out_features == 0) return ATTN_OK;
    if (!y || (in_features > 0 && (!x || !weight))) return ATTN_ERROR_NULL_POINTER;

    const attn_microkernels *kernels = attn_selected_microkernels();
    const int64_t row_tiles = (rows + QUERY_TILE - 1) / QUERY_TILE;
    int threads = 1;
#ifdef _OPENMP
    threads = num_threads > 0 ? num_threads : omp_get_max_threads();
    if ((int64_t)threads > row_tiles) threads = (int)row_tiles;
#else
    (void)num_threads;
#endif
    // Per thread: packed xᵀ [in_features, QUERY_TILE] and a result tile [KEY_TILE, QUERY_TILE].
    const int64_t per_thread = (in_features + KEY_TILE) * QUERY_TILE;
    float *scratch = aligned_alloc(SCRATCH_ALIGNMENT, sizeof(float) * (size_t)(per_thread * threads));
    if (!scratch) return ATTN_ERROR_OUT_OF_MEMORY;

#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(threads)
#endif
    for (int64_t tile = 0; tile < row_tiles; tile++) {
        int thread = 0;
#ifdef _OPENMP
        thread = omp_get_thread_num();
#endif
        float *xt = scratch + per_thread * thread;
        float *yt = xt + in_features * QUERY_TILE;
        const int64_t row0 = tile * QUERY_TILE;
        const int64_t tile_rows = rows - row0 < QUERY_TILE ? rows - row0 : QUERY_TILE;
        if (in_features > 0) kernels->pack_query(x + row0 * in_features, in_features, tile_rows, in_features, 1.0f, xt);
        for (int64_t out0 = 0; out0 < out_features; out0 += KEY_TILE) {
            const int64_t cols = out_features - out0 < KEY_TILE ? out_features - out0 : KEY_TILE;
            if (in_features > 0)
                kernels->qk_tile(xt, weight + out0 * in_features, in_features, cols, in_features,
                                 tile_rows, cols, yt, 0, 0, 0);
            for (int64_t i = 0; i < tile_rows; i++)
                for (int64_t j = 0; j < cols; j++) {
                    const float sum = in_features > 0 ? yt[j * QUERY_TILE + i] : 0.0f;
                    y[(row0 + i) * out_features + out0 + j] = bias ? sum + bias[out0 + j] : sum;
                }
        }
    }
    free(scratch);
    return ATTN_OK;
}
