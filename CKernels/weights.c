// weights.c: the attention weights (or the scores before softmax), materialised,
// in float32, from the same micro-kernels as the fused forward pass.
//
//   query     [B, Hq, Lq, D]     key [B, Hkv, Lk, D]     (value, output: unused)
//   logsumexp [B, Hq, Lq]        contiguous; attn_sdpa_forward's, for the same params
//   weights   [B, Hq, Lq, Lk]    contiguous, written
//
//   scores:  s[i][j] = scale · q_i·k_j (+ additive mask); −∞ where masked
//            (causal, keep mask, key padding); NaN for a logit that is ±∞
//   weights: p[i][j] = exp(s[i][j] − logsumexp[i])        (= softmax_j, since
//            logsumexp = log Σ_j exp s[i][j]), then dropout: kept cells ·1/(1 − p),
//            dropped ·0, by the Philox cells of attn_philox_keep
//
// One pass per (batch, head, query tile), key tile by key tile: qk_tile, the
// masks, and for weights exp_row_sum with the row's logsumexp in place of the
// running max. No online softmax is needed: the logsumexp already holds the
// row's normaliser (FlashAttention-2's backward pass recomputes P the same way,
// Dao 2023, Algorithm 2, line 11). The cost is one Q·Kᵀ plus one exp and one
// store per cell, on top of the forward call that gave the logsumexp.
#include "attention.h"
#include "microkernels/microkernels.h"
#include "params.h"
#include "plan.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// The checks of attn_sdpa_forward that concern the scores (values are not read).
static attn_status validate_scores(const attn_params *p, const void *out) {
    return attn_validate_params(p, ATTN_CALL_WRITES_DENSE, out, 0);
}

// Per-worker scratch, each on a cache line.
typedef struct scores_scratch {
    float *qt;         // scale·Qᵀ [head_dim, QUERY_TILE], lines ts apart (attn_tile_stride)
    float *st;         // Sᵀ [KEY_TILE, QUERY_TILE], lines ts apart
    float *no_max;     // −∞ [QUERY_TILE]: makes qk_tile turn ±∞ scores into NaN
    float *row_lse;    // the tile's logsumexp [QUERY_TILE]
    float *tile_sum;   // exp_row_sum's sums [QUERY_TILE], unused
} scores_scratch;

// The masks of one tile on Sᵀ, as the forward pass applies them: a cell a row
// cannot see becomes −∞ (an additive −∞ overwrites, so NaN·K at a masked key has
// no effect), an additive bias is added in float32.
static void mask_tile(const attn_params *p, int64_t b, int64_t h, int64_t row0, int64_t rows,
                      int64_t col0, int64_t cols, int64_t visible_limit, float *st, int64_t ts) {
    const int64_t *ms = p->mask_strides;
    const int64_t mask_offset = b * ms[0] + h * ms[1] + row0 * ms[2];
    for (int64_t i = 0; i < rows; i++) {
        for (int64_t j = 0; j < cols; j++) {
            float *s = st + j * ts + i;
            if (j >= i + visible_limit) { *s = -INFINITY; continue; }  // causal
            if (p->mask_kind == ATTN_MASK_KEEP) {
                const unsigned char keep = ((const unsigned char *)p->mask)[mask_offset + i * ms[2] + (col0 + j) * ms[3]];
                if (!keep) *s = -INFINITY;
            } else if (p->mask_kind == ATTN_MASK_ADDITIVE) {
                const float bias = ((const float *)p->mask)[mask_offset + i * ms[2] + (col0 + j) * ms[3]];
                *s = bias == -INFINITY ? -INFINITY : *s + bias;
            }
        }
    }
    if (p->key_padding_keep) {
        const unsigned char *keep = p->key_padding_keep + b * p->key_padding_strides[0];
        for (int64_t j = 0; j < cols; j++)
            if (!keep[(col0 + j) * p->key_padding_strides[1]])
                for (int64_t i = 0; i < rows; i++) st[j * ts + i] = -INFINITY;
    }
}

// One task: rows [row0, row0 + rows) of (b, h), every key tile. logsumexp NULL:
// scores; else weights.
static void scores_task(const attn_params *p, const attn_microkernels *kernels, int64_t b, int64_t h,
                        int64_t row0, const float *logsumexp, float *out, scores_scratch *s) {
    const int64_t rows = p->query_length - row0 < QUERY_TILE ? p->query_length - row0 : QUERY_TILE;
    const int64_t ts = attn_tile_stride(kernels, rows);  // the line stride of s->qt and s->st
    const int64_t kv_head = h / (p->query_heads / p->kv_heads);
    const int64_t causal_offset =
        p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? p->key_length - p->query_length : 0;
    const int64_t row_index = (b * p->query_heads + h) * p->query_length + row0;
    const float keep_scale = 1.0f / (1.0f - p->dropout_p);
    if (p->head_dim > 0) {
        const float *q = p->query + b * p->query_strides[0] + h * p->query_strides[1] + row0 * p->query_strides[2];
        kernels->pack_query(q, p->query_strides[2], rows, p->head_dim, p->scale, s->qt, ts);
    }
    if (logsumexp)
        for (int64_t i = 0; i < QUERY_TILE; i++) s->row_lse[i] = i < rows ? logsumexp[row_index + i] : 0.0f;
    const float *k = p->head_dim > 0 ? p->key + b * p->key_strides[0] + kv_head * p->key_strides[1] : 0;
    // Keys past the tile's last visible one are masked for every row: written
    // without a product (causal block skipping, as in the forward pass).
    int64_t key_end = p->key_length;
    if (p->causal != ATTN_CAUSAL_NONE) {
        const int64_t last_visible = row0 + rows - 1 + causal_offset;
        key_end = last_visible + 1 < 0 ? 0 : last_visible + 1 < key_end ? last_visible + 1 : key_end;
    }
    const int explicit_mask = p->mask_kind != ATTN_MASK_NONE || p->key_padding_keep;
    int nan_rows = 0;
    if (logsumexp)
        for (int64_t i = 0; i < rows; i++) nan_rows |= isnan(s->row_lse[i]) != 0;
    float *out_rows = out + row_index * p->key_length;
    for (int64_t col0 = 0; col0 < key_end; col0 += KEY_TILE) {
        const int64_t cols = key_end - col0 < KEY_TILE ? key_end - col0 : KEY_TILE;
        // Row i sees keys j < i + visible_limit of this tile.
        int64_t visible_limit = cols;
        if (p->causal != ATTN_CAUSAL_NONE && col0 + cols - 1 > row0 + causal_offset)
            visible_limit = row0 + causal_offset - col0 + 1;
        if (p->head_dim > 0)
            kernels->qk_tile(s->qt, k + col0 * p->key_strides[2], p->key_strides[2], cols, p->head_dim,
                             rows, visible_limit, s->st, ts, s->no_max, 0, 0);
        else
            memset(s->st, 0, sizeof(float) * (size_t)(cols * ts));
        if (explicit_mask || visible_limit < cols) mask_tile(p, b, h, row0, rows, col0, cols, visible_limit, s->st, ts);
        if (logsumexp) {
            kernels->exp_row_sum(s->st, ts, cols, rows, s->row_lse, s->tile_sum, visible_limit, 1);
            if (nan_rows || p->dropout_p > 0.0f)
                for (int64_t i = 0; i < rows; i++) {
                    const int nan_row = isnan(s->row_lse[i]);  // as in the oracle: NaN everywhere
                    for (int64_t j = 0; j < cols; j++) {
                        float *w = s->st + j * ts + i;
                        if (nan_row) *w = NAN;
                        if (p->dropout_p > 0.0f)
                            *w = attn_philox_keep(p->dropout_seed, b, h, row0 + i, col0 + j, p->dropout_p)
                                     ? *w * keep_scale
                                     : *w * 0.0f;
                    }
                }
            // + 0: a masked cell's −0 is written as +0.
            for (int64_t i = 0; i < rows; i++)
                for (int64_t j = 0; j < cols; j++)
                    out_rows[i * p->key_length + col0 + j] = s->st[j * ts + i] + 0.0f;
        } else {
            for (int64_t i = 0; i < rows; i++)
                for (int64_t j = 0; j < cols; j++) out_rows[i * p->key_length + col0 + j] = s->st[j * ts + i];
        }
    }
    // The keys no row of the tile sees: weight 0 (NaN on a NaN row), score −∞.
    if (key_end < p->key_length)
        for (int64_t i = 0; i < rows; i++) {
            const float fill = logsumexp ? (isnan(s->row_lse[i]) ? NAN : 0.0f) : -INFINITY;
            for (int64_t j = key_end; j < p->key_length; j++) out_rows[i * p->key_length + j] = fill;
        }
}

// The plan: one round, one task per (batch, head, query tile), with scratch per worker.
typedef struct scores_plan {
    attn_plan base;      // first: the drivers see only this
    attn_params params;  // the caller's, copied
    const attn_microkernels *kernels;
    const float *logsumexp;  // NULL: scores
    float *out;
    int64_t query_tiles, per_worker;
    float *scratch;
} scores_plan;

static void run_scores_task(attn_plan *base, int32_t round, int64_t task, int32_t worker) {
    (void)round;
    scores_plan *plan = (scores_plan *)base;
    const attn_params *p = &plan->params;
    float *scratch = plan->scratch + plan->per_worker * worker;
    scores_scratch s;
    s.qt = scratch;
    s.st = s.qt + p->head_dim * QUERY_TILE;
    s.no_max = s.st + KEY_TILE * QUERY_TILE;
    s.row_lse = s.no_max + QUERY_TILE;
    s.tile_sum = s.row_lse + QUERY_TILE;
    for (int64_t i = 0; i < QUERY_TILE; i++) s.no_max[i] = -INFINITY;
    const int64_t batch_head = task / plan->query_tiles;
    scores_task(p, plan->kernels, batch_head / p->query_heads, batch_head % p->query_heads,
                task % plan->query_tiles * QUERY_TILE, plan->logsumexp, plan->out, &s);
}

static void release_scores_plan(attn_plan *base) {
    scores_plan *plan = (scores_plan *)base;
    attn_aligned_free(plan->scratch);
    free(plan);
}

static attn_status scores_plan_create(const attn_params *p, const float *logsumexp, float *out,
                                      attn_plan **plan_out) {
    if (!plan_out) return ATTN_ERROR_NULL_POINTER;
    *plan_out = 0;
    const attn_status status = validate_scores(p, out);
    if (status != ATTN_OK) return status;
    scores_plan *plan = calloc(1, sizeof(scores_plan));
    if (!plan) return ATTN_ERROR_OUT_OF_MEMORY;
    plan->base.run_task = run_scores_task;
    plan->base.release = release_scores_plan;
    plan->params = *p;
    plan->kernels = attn_selected_microkernels();
    plan->logsumexp = logsumexp;
    plan->out = out;
    plan->query_tiles = p->query_length / QUERY_TILE + (p->query_length % QUERY_TILE != 0);
    if (p->key_length > 0) plan_add_round(&plan->base, p->batch * p->query_heads * plan->query_tiles);
    plan->base.workers = plan_worker_count(p->num_threads, plan_widest_round(&plan->base));
    plan->per_worker = p->head_dim * QUERY_TILE + KEY_TILE * QUERY_TILE + 3 * QUERY_TILE;
    if (plan->base.rounds > 0) {
        plan->scratch = attn_aligned_alloc(sizeof(float) * (size_t)(plan->per_worker * plan->base.workers));
        if (!plan->scratch) {
            release_scores_plan(&plan->base);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
    }
    *plan_out = &plan->base;
    return ATTN_OK;
}

attn_status attn_sdpa_weights_plan_create(const attn_params *params, const float *logsumexp,
                                          float *weights, attn_plan **plan) {
    if (plan) *plan = 0;
    if (params && !logsumexp && params->batch > 0 && params->query_heads > 0 && params->query_length > 0 &&
        params->key_length > 0)
        return ATTN_ERROR_NULL_POINTER;
    return scores_plan_create(params, logsumexp, weights, plan);
}

attn_status attn_sdpa_scores_plan_create(const attn_params *params, float *scores, attn_plan **plan) {
    return scores_plan_create(params, 0, scores, plan);
}

attn_status attn_sdpa_weights(const attn_params *params, const float *logsumexp, float *weights) {
    attn_params serial;
    const attn_params *p = params;
#ifndef _OPENMP
    if (params) {  // this driver runs the plan serially without OpenMP
        serial = *params;
        serial.num_threads = 1;
        p = &serial;
    }
#else
    (void)serial;
#endif
    attn_plan *plan;
    return plan_run_created(attn_sdpa_weights_plan_create(p, logsumexp, weights, &plan), &plan);
}

attn_status attn_sdpa_scores(const attn_params *params, float *scores) {
    attn_params serial;
    const attn_params *p = params;
#ifndef _OPENMP
    if (params) {
        serial = *params;
        serial.num_threads = 1;
        p = &serial;
    }
#else
    (void)serial;
#endif
    attn_plan *plan;
    return plan_run_created(attn_sdpa_scores_plan_create(p, scores, &plan), &plan);
}
