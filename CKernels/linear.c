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
//
// The plan has one round of tasks, each (row tile, group of output columns):
// with few rows (a decoding step's projection) the output columns are split so
// that every worker streams its own part of W. Each output element is the same
// qk_tile sum whichever task computes it, so the bits do not depend on the split.
#include "attention.h"
#include "microkernels/microkernels.h"
#include "plan.h"

#include <stdlib.h>

typedef struct linear_plan {
    attn_plan base;  // first: the drivers see only this
    const attn_microkernels *kernels;
    const float *x, *weight, *bias;
    float *y;
    int64_t rows, in_features, out_features;
    int64_t row_tiles, column_groups, columns_per_group;  // columns_per_group: a multiple of KEY_TILE
    int64_t per_worker;  // floats: packed xᵀ [in_features, QUERY_TILE], result tile [KEY_TILE, QUERY_TILE]
                         // (both with lines ts apart: attn_tile_stride)
    float *scratch;
} linear_plan;

// Task (row tile, column group): y[row tile][group's columns] = x·Wᵀ + b.
static void run_linear_task(attn_plan *base, int32_t round, int64_t task, int32_t worker) {
    (void)round;
    const linear_plan *plan = (const linear_plan *)base;
    const int64_t in = plan->in_features, out = plan->out_features;
    float *xt = plan->scratch + plan->per_worker * worker;
    float *yt = xt + in * QUERY_TILE;
    const int64_t row0 = task / plan->column_groups * QUERY_TILE;
    const int64_t tile_rows = plan->rows - row0 < QUERY_TILE ? plan->rows - row0 : QUERY_TILE;
    const int64_t ts = attn_tile_stride(plan->kernels, tile_rows);  // the line stride of xt and yt
    const int64_t first = task % plan->column_groups * plan->columns_per_group;
    const int64_t last = out - first < plan->columns_per_group ? out : first + plan->columns_per_group;
    if (in > 0) plan->kernels->pack_query(plan->x + row0 * in, in, tile_rows, in, 1.0f, xt, ts);
    for (int64_t out0 = first; out0 < last; out0 += KEY_TILE) {
        const int64_t cols = last - out0 < KEY_TILE ? last - out0 : KEY_TILE;
        if (in > 0)
            plan->kernels->qk_tile(xt, plan->weight + out0 * in, in, cols, in, tile_rows, cols, yt, ts, 0, 0, 0);
        for (int64_t i = 0; i < tile_rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                const float sum = in > 0 ? yt[j * ts + i] : 0.0f;
                plan->y[(row0 + i) * out + out0 + j] = plan->bias ? sum + plan->bias[out0 + j] : sum;
            }
    }
}

static void release_linear_plan(attn_plan *base) {
    linear_plan *plan = (linear_plan *)base;
    attn_aligned_free(plan->scratch);
    free(plan);
}

attn_status attn_linear_plan_create(const float *x, int64_t rows, int64_t in_features,
                                    const float *weight, const float *bias, int64_t out_features,
                                    float *y, int32_t num_threads, attn_plan **plan_out) {
    if (!plan_out) return ATTN_ERROR_NULL_POINTER;
    *plan_out = 0;
    if (rows < 0 || in_features < 0 || out_features < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    const int empty = rows == 0 || out_features == 0;
    if (!empty && (!y || (in_features > 0 && (!x || !weight)))) return ATTN_ERROR_NULL_POINTER;
    if (in_features > ((int64_t)1 << 40)) return ATTN_ERROR_SIZE_OVERFLOW;
    if (plan_rows_overflow(rows, in_features, out_features, QUERY_TILE)) return ATTN_ERROR_SIZE_OVERFLOW;
    linear_plan *plan = calloc(1, sizeof(linear_plan));
    if (!plan) return ATTN_ERROR_OUT_OF_MEMORY;
    plan->base.run_task = run_linear_task;
    plan->base.release = release_linear_plan;
    plan->kernels = attn_selected_microkernels();
    plan->x = x;
    plan->weight = weight;
    plan->bias = bias;
    plan->y = y;
    plan->rows = rows;
    plan->in_features = in_features;
    plan->out_features = out_features;
    if (!empty) {
        plan->row_tiles = (rows + QUERY_TILE - 1) / QUERY_TILE;
        const int64_t column_tiles = (out_features + KEY_TILE - 1) / KEY_TILE;
        const int threads = num_threads > 0 ? num_threads : attn_default_threads();
        // Enough column groups for two tasks a thread, when the row tiles alone are fewer.
        int64_t groups = 1;
        if (plan->row_tiles < 2 * (int64_t)threads) {
            groups = (2 * (int64_t)threads + plan->row_tiles - 1) / plan->row_tiles;
            if (groups > column_tiles) groups = column_tiles;
        }
        plan->columns_per_group = (column_tiles + groups - 1) / groups * KEY_TILE;
        plan->column_groups = (out_features + plan->columns_per_group - 1) / plan->columns_per_group;
        plan_add_round(&plan->base, plan->row_tiles * plan->column_groups);
    }
    plan->base.workers = plan_worker_count(num_threads, plan_widest_round(&plan->base));
    plan->per_worker = (in_features + KEY_TILE) * QUERY_TILE;
    if (plan->base.rounds > 0) {
        plan->scratch = attn_aligned_alloc(sizeof(float) * (size_t)(plan->per_worker * plan->base.workers));
        if (!plan->scratch) {
            release_linear_plan(&plan->base);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
    }
    *plan_out = &plan->base;
    return ATTN_OK;
}

attn_status attn_linear_forward(const float *x, int64_t rows, int64_t in_features,
                                const float *weight, const float *bias, int64_t out_features,
                                float *y, int32_t num_threads) {
#ifndef _OPENMP
    num_threads = 1;  // this driver runs the plan serially without OpenMP
#endif
    attn_plan *plan;
    return plan_run_created(
        attn_linear_plan_create(x, rows, in_features, weight, bias, out_features, y, num_threads, &plan), &plan);
}
