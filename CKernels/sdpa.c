// sdpa.c: fused scaled-dot-product attention, the FlashAttention-2 loop on a CPU.
//
//   query     [B, Hq, Lq, D]     key   [B, Hkv, Lk, D]     value [B, Hkv, Lk, Dv]
//   output    [B, Hq, Lq, Dv]    logsumexp [B, Hq, Lq] (optional)
//
// Dao 2023, "FlashAttention-2", Algorithm 1, for one (batch, head, query tile):
//
//   for each key/value tile j:
//       s     = scale · q_tile k_tileᵀ  (+ mask)               qk_tile, then mask pass
//       m_new = max(m, rowmax(s))                                mask pass
//       p     = exp(s − m_new); l = l·e^(m − m_new) + rowsum(p)  exp pass
//       acc   = acc·e^(m − m_new) + p v_tile                     pv_tile
//   out = acc / l,  logsumexp = m + log(l)
//
// The rescale by e^(m − m_new) happens only for rows whose max grew. Work is a
// list of independent tasks, task -> (batch, head, query tile), handed out by an
// atomic counter inside one OpenMP parallel region (dynamic balance for causal
// triangles without OpenMP's dynamic schedule, which libomp 14 cannot link
// against clang 21). Each task computes whole rows in a fixed key order, so a
// row's result does not depend on the thread count or on which tile it is in.
#include "attention.h"
#include "microkernels/microkernels.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
// The Swift toolchain's clang ships no omp.h: declare the three calls we use.
int omp_get_thread_num(void);
int omp_get_max_threads(void);
int omp_get_num_threads(void);
#endif

enum {
    SCRATCH_ALIGNMENT = 64,  // one cache line; also the AVX-512 register width
    // Tiles with at most this many query rows (decoding) read the value rows in
    // place instead of packing them first (see pv_in_place): on 1,32,1,2048,128
    // the copy cost a third of the time.
    IN_PLACE_VALUE_ROWS = 4,
};

// Per-thread scratch, each buffer on a cache line. Scores are transposed,
// st[j][i] (see microkernels.h), so the row statistics are QUERY_TILE-lane vectors.
typedef struct row_state {
    float *row_max;      // m      [QUERY_TILE]
    float *row_max_new;  // m_new  [QUERY_TILE]
    float *row_sum;      // l      [QUERY_TILE]
    float *tile_sum;     // Σ_j p  [QUERY_TILE] of the current key tile
    float *alpha;        // e^(m − m_new) [QUERY_TILE], 1 where the max did not grow
    float *qt;           // scale·Qᵀ [head_dim, QUERY_TILE]
    float *scores;       // st / pt  [KEY_TILE, QUERY_TILE]
    float *acc;          // unnormalised output [QUERY_TILE, value_dim_padded]
    float *v_packed;     // the value tile, aligned, NaN/±∞ zeroed [KEY_TILE, value_dim_padded]
    attn_prefetch_stream prefetch;  // decoding: the operand of the next pass
} row_state;

static int64_t round_up(int64_t value, int64_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}

static int64_t scratch_floats_per_thread(int64_t head_dim, int64_t value_dim_padded) {
    return 5 * QUERY_TILE + head_dim * QUERY_TILE + KEY_TILE * QUERY_TILE +
           (QUERY_TILE + KEY_TILE) * value_dim_padded;
}

static row_state row_state_at(float *scratch, int64_t head_dim, int64_t value_dim_padded) {
    row_state state;
    state.row_max = scratch;
    state.row_max_new = state.row_max + QUERY_TILE;
    state.row_sum = state.row_max_new + QUERY_TILE;
    state.tile_sum = state.row_sum + QUERY_TILE;
    state.alpha = state.tile_sum + QUERY_TILE;
    state.qt = state.alpha + QUERY_TILE;
    state.scores = state.qt + head_dim * QUERY_TILE;
    state.acc = state.scores + KEY_TILE * QUERY_TILE;
    state.v_packed = state.acc + QUERY_TILE * value_dim_padded;
    attn_prefetch_start(&state.prefetch, 0, 0, 0, 0);  // nothing to fetch yet
    return state;
}

// ---------------------------------------------------------------------------
// Validation: the only place that checks; the loops below assume valid input.

static attn_status validate(const attn_params *p) {
    if (!p) return ATTN_ERROR_NULL_POINTER;
    if (p->batch < 0 || p->query_heads < 0 || p->kv_heads < 0 || p->query_length < 0 ||
        p->key_length < 0 || p->head_dim < 0 || p->value_dim < 0)
        return ATTN_ERROR_NEGATIVE_SIZE;
    if (p->causal != ATTN_CAUSAL_NONE && p->causal != ATTN_CAUSAL_TOP_LEFT &&
        p->causal != ATTN_CAUSAL_BOTTOM_RIGHT)
        return ATTN_ERROR_MASK_KIND;
    if (p->mask_kind != ATTN_MASK_NONE && p->mask_kind != ATTN_MASK_KEEP &&
        p->mask_kind != ATTN_MASK_ADDITIVE)
        return ATTN_ERROR_MASK_KIND;
    if (!isfinite(p->scale)) return ATTN_ERROR_SCALE;
    if (!(p->dropout_p >= 0.0f && p->dropout_p < 1.0f)) return ATTN_ERROR_DROPOUT;

    // Every product the loops form from sizes must fit in int64: the query rows
    // (which also bound the tasks), the output and logsumexp elements, and the
    // scratch of one thread.
    // scratch of one thread (bounded through the head and value dims).
    const int64_t largest_dim = (int64_t)1 << 40;
    int64_t rows, output_elements;
    if (p->head_dim > largest_dim || p->value_dim > largest_dim ||
        __builtin_mul_overflow(p->batch, p->query_heads, &rows) ||
        __builtin_mul_overflow(rows, p->query_length, &rows) ||
        __builtin_mul_overflow(rows, p->value_dim, &output_elements))
        return ATTN_ERROR_SIZE_OVERFLOW;
    if (rows == 0) return ATTN_OK;  // nothing to read or write
    if (p->kv_heads == 0 || p->query_heads % p->kv_heads != 0) return ATTN_ERROR_GROUPED_QUERY;
    if (p->value_dim > 0 && !p->output) return ATTN_ERROR_NULL_POINTER;
    if (p->value_dim > 0 && p->output_strides[3] != 1) return ATTN_ERROR_INNER_STRIDE;
    if (p->key_length > 0) {
        if (p->head_dim > 0 && (!p->query || !p->key)) return ATTN_ERROR_NULL_POINTER;
        if (p->value_dim > 0 && !p->value) return ATTN_ERROR_NULL_POINTER;
        if (p->head_dim > 0 && (p->query_strides[3] != 1 || p->key_strides[3] != 1))
            return ATTN_ERROR_INNER_STRIDE;
        if (p->value_dim > 0 && p->value_strides[3] != 1) return ATTN_ERROR_INNER_STRIDE;
        if (p->mask_kind != ATTN_MASK_NONE && !p->mask) return ATTN_ERROR_NULL_POINTER;
    }
    return ATTN_OK;
}

// ---------------------------------------------------------------------------
// One task: rows [row0, row0 + rows) of one (batch, head).

typedef struct task_view {
    const attn_params *p;
    int64_t batch, head, kv_head;
    int64_t row0, rows;       // query rows [row0, row0 + rows)
    int64_t causal_offset;    // row i sees keys j <= i + causal_offset (when causal)
    const unsigned char *keep_mask;  // mask at (batch, head, row0, 0), or NULL
    const float *additive_mask;
    const unsigned char *key_keep;   // key padding at (batch, 0), or NULL
} task_view;

// Explicit masks on st[j][i]: a kept-out cell becomes −∞, an additive one is
// added (an additive −∞ overwrites, so NaN·K at a masked key has no effect),
// and a padded key is −∞ for every row.
static void apply_explicit_mask(const task_view *t, int64_t col0, int64_t cols, float *st) {
    const int64_t *ms = t->p->mask_strides;
    for (int64_t i = 0; i < t->rows; i++) {
        if (t->keep_mask) {
            const unsigned char *mask_row = t->keep_mask + i * ms[2] + col0 * ms[3];
            for (int64_t j = 0; j < cols; j++)
                if (!mask_row[j * ms[3]]) st[j * QUERY_TILE + i] = -INFINITY;
        } else if (t->additive_mask) {
            const float *mask_row = t->additive_mask + i * ms[2] + col0 * ms[3];
            for (int64_t j = 0; j < cols; j++) {
                const float bias = mask_row[j * ms[3]];
                float *s = st + j * QUERY_TILE + i;
                *s = bias == -INFINITY ? -INFINITY : *s + bias;
            }
        }
    }
    if (t->key_keep) {
        const int64_t stride = t->p->key_padding_strides[1];
        for (int64_t j = 0; j < cols; j++)
            if (!t->key_keep[(col0 + j) * stride])
                for (int64_t i = 0; i < QUERY_TILE; i++) st[j * QUERY_TILE + i] = -INFINITY;
    }
}

// The causal mask on a tile that crosses the diagonal: row i hides keys past
// i + causal_offset, i.e. key col0 + j hides rows below col0 + j − causal_offset − row0.
static void apply_causal_mask(const task_view *t, int64_t col0, int64_t cols, float *st) {
    for (int64_t j = 0; j < cols; j++) {
        int64_t hidden_rows = col0 + j - t->causal_offset - t->row0;
        if (hidden_rows <= 0) continue;
        if (hidden_rows > QUERY_TILE) hidden_rows = QUERY_TILE;
        for (int64_t i = 0; i < hidden_rows; i++) st[j * QUERY_TILE + i] = -INFINITY;
    }
}

// Dropout on the weights: a dropped cell is scaled by 0, which keeps a masked
// cell's −0 sign and a NaN a NaN.
static void apply_dropout(const task_view *t, int64_t col0, int64_t cols, float *pt) {
    const attn_params *p = t->p;
    for (int64_t i = 0; i < t->rows; i++)
        for (int64_t j = 0; j < cols; j++)
            if (!attn_philox_keep(p->dropout_seed, t->batch, t->head, t->row0 + i, col0 + j,
                                  p->dropout_p))
                pt[j * QUERY_TILE + i] *= 0.0f;
}

// A value tile with NaN or ±∞ went through pv_tile with those values as 0 (the
// same arithmetic as a finite tile); add them back for the cells that are not
// masked. A masked cell (weight −0) so never turns 0·Inf into NaN, and the
// finite part of every row is bit for bit what it would be without them.
static void add_nonfinite_values(const float *pt, const float *v, int64_t v_row_stride,
                                 int64_t rows, int64_t cols, int64_t value_dim, float *acc,
                                 int64_t acc_row_stride) {
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d++) {
            const float value = v[j * v_row_stride + d];
            if (isfinite(value)) continue;
            for (int64_t i = 0; i < rows; i++) {
                const float weight = pt[j * QUERY_TILE + i];
                if (weight == 0.0f && signbit(weight)) continue;  // masked
                acc[i * acc_row_stride + d] += weight * value;
            }
        }
}

// P·V for a tile of few query rows (decoding), on the caller's value rows in
// place: each row is used by at most IN_PLACE_VALUE_ROWS query rows, too few to
// repay pack_value's copy, and the tile is best streamed from memory once.
// With finite values, pv_tile on the caller's rows does the very arithmetic it
// does on the copy. A NaN or ±∞ value would leave its column of the updated
// rows non-finite (w·±∞ is ±∞ or NaN for every w, and no later sum makes it
// finite), so if the rows come out non-finite (that, an overflow, or a NaN
// weight), they are restored from a copy and the tile goes the packed way,
// which gives such values their defined meaning. Returns pack_value's flag.
static int pv_in_place(const attn_params *p, const attn_microkernels *kernels, const task_view *t,
                       const float *pt, const float *v_tile, int64_t cols, int64_t visible_limit,
                       row_state *state, int64_t value_dim_padded) {
    const int64_t count = t->rows * value_dim_padded;
    float *saved = state->v_packed;  // unused by this path until the fallback, which restores first
    int finite_before = 1;
    for (int64_t e = 0; e < count; e++) {
        saved[e] = state->acc[e];
        finite_before &= isfinite(state->acc[e]) != 0;
    }
    if (finite_before) {
        kernels->pv_tile(pt, v_tile, p->value_strides[2], t->rows, cols, p->value_dim, state->alpha,
                         state->acc, value_dim_padded, visible_limit, &state->prefetch);
        int finite_after = 1;
        for (int64_t e = 0; e < count; e++) finite_after &= isfinite(state->acc[e]) != 0;
        if (finite_after) return 1;
        memcpy(state->acc, saved, sizeof(float) * (size_t)count);
    }
    const int finite = kernels->pack_value(v_tile, p->value_strides[2], cols, p->value_dim,
                                           state->v_packed, value_dim_padded);
    kernels->pv_tile(pt, state->v_packed, value_dim_padded, t->rows, cols, p->value_dim,
                     state->alpha, state->acc, value_dim_padded, visible_limit, 0);
    return finite;
}

static void run_task(const attn_params *p, const attn_microkernels *kernels, int64_t batch,
                     int64_t head, int64_t row0, row_state state, int64_t value_dim_padded) {
    task_view t;
    t.p = p;
    t.batch = batch;
    t.head = head;
    t.kv_head = head / (p->query_heads / p->kv_heads);
    t.row0 = row0;
    t.rows = p->query_length - row0 < QUERY_TILE ? p->query_length - row0 : QUERY_TILE;
    t.causal_offset = p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? p->key_length - p->query_length : 0;
    const int64_t mask_offset = batch * p->mask_strides[0] + head * p->mask_strides[1] +
                                row0 * p->mask_strides[2];
    // validate() lets query, key, value and mask be NULL when there is no key:
    // no pointer arithmetic on NULL, and nothing read through them below.
    t.keep_mask = p->mask_kind == ATTN_MASK_KEEP && p->mask
                      ? (const unsigned char *)p->mask + mask_offset
                      : 0;
    t.additive_mask = p->mask_kind == ATTN_MASK_ADDITIVE && p->mask
                          ? (const float *)p->mask + mask_offset
                          : 0;
    t.key_keep = p->key_padding_keep && p->key_length > 0
                     ? p->key_padding_keep + batch * p->key_padding_strides[0]
                     : 0;
    const float *q = p->query ? p->query + batch * p->query_strides[0] +
                                    head * p->query_strides[1] + row0 * p->query_strides[2]
                              : 0;
    const float *k = p->key ? p->key + batch * p->key_strides[0] + t.kv_head * p->key_strides[1] : 0;
    const float *v = p->value ? p->value + batch * p->value_strides[0] +
                                    t.kv_head * p->value_strides[1]
                              : 0;

    for (int64_t i = 0; i < QUERY_TILE; i++) {
        state.row_max[i] = -INFINITY;
        state.row_sum[i] = 0.0f;
    }
    memset(state.acc, 0, sizeof(float) * (size_t)(t.rows * value_dim_padded));
    if (p->head_dim > 0 && p->key_length > 0)
        kernels->pack_query(q, p->query_strides[2], t.rows, p->head_dim, p->scale, state.qt);

    // Keys past the tile's last visible one are skipped whole (causal block skipping);
    // only tiles that cross the diagonal need the per-cell causal mask.
    int64_t key_end = p->key_length;
    if (p->causal != ATTN_CAUSAL_NONE) {
        const int64_t last_visible = row0 + t.rows - 1 + t.causal_offset;
        key_end = last_visible + 1 < key_end ? last_visible + 1 : key_end;
    }
    for (int64_t col0 = 0; col0 < key_end; col0 += KEY_TILE) {
        const int64_t cols = key_end - col0 < KEY_TILE ? key_end - col0 : KEY_TILE;
        float *st = state.scores;
        // Row i sees keys j < i + visible_limit of this tile (all of them off the diagonal).
        const int diagonal = p->causal != ATTN_CAUSAL_NONE && col0 + cols - 1 > row0 + t.causal_offset;
        const int64_t visible_limit = diagonal ? row0 + t.causal_offset - col0 + 1 : cols;
        const int explicit_mask = t.keep_mask || t.additive_mask || t.key_keep;
        const int masked = diagonal || explicit_mask;
        const int in_place = t.rows <= IN_PLACE_VALUE_ROWS && p->value_dim > 0;
        if (in_place)  // this tile's value rows come in while its keys are multiplied
            attn_prefetch_start(&state.prefetch, v + col0 * p->value_strides[2], p->value_strides[2],
                                cols, p->value_dim);
        if (p->head_dim > 0) {
            // Unmasked tiles take the row max from the micro-kernel, while the scores are in registers.
            kernels->qk_tile(state.qt, k + col0 * p->key_strides[2], p->key_strides[2], cols,
                             p->head_dim, t.rows, visible_limit, st, state.row_max,
                             masked ? 0 : state.row_max_new, in_place ? &state.prefetch : 0);
        } else {
            memset(st, 0, sizeof(float) * (size_t)(cols * QUERY_TILE));
        }
        if (explicit_mask) apply_explicit_mask(&t, col0, cols, st);
        if (diagonal) apply_causal_mask(&t, col0, cols, st);

        // Online softmax: rows whose max grew rescale by alpha = e^(m − m_new)
        // (0 when m was −∞); the accumulator's rescale is fused into pv_tile.
        if (masked || p->head_dim == 0)
            kernels->row_max(st, cols, t.rows, state.row_max, state.row_max_new);
        kernels->exp_row_sum(st, cols, t.rows, state.row_max_new, state.tile_sum);
        kernels->update_rows(state.row_max, state.row_max_new, state.row_sum, state.tile_sum,
                             state.alpha, t.rows);
        if (p->dropout_p > 0.0f) apply_dropout(&t, col0, cols, st);

        if (p->value_dim > 0) {
            const float *v_tile = v + col0 * p->value_strides[2];
            int finite;
            if (t.rows <= IN_PLACE_VALUE_ROWS) {
                const int64_t next = col0 + KEY_TILE;  // the next tile's keys come in meanwhile
                attn_prefetch_start(&state.prefetch, next < key_end ? k + next * p->key_strides[2] : 0,
                                    p->key_strides[2], key_end - next, p->head_dim);
                finite = pv_in_place(p, kernels, &t, st, v_tile, cols, visible_limit, &state,
                                     value_dim_padded);
            } else {
                finite = kernels->pack_value(v_tile, p->value_strides[2], cols, p->value_dim,
                                             state.v_packed, value_dim_padded);
                kernels->pv_tile(st, state.v_packed, value_dim_padded, t.rows, cols, p->value_dim,
                                 state.alpha, state.acc, value_dim_padded, visible_limit, 0);
            }
            if (!finite)
                add_nonfinite_values(st, v_tile, p->value_strides[2], t.rows, cols, p->value_dim,
                                     state.acc, value_dim_padded);
        }
    }

    // Normalise once: out = acc / l / (1 − dropout_p); a row that saw no key is 0.
    const float keep_scale = 1.0f / (1.0f - p->dropout_p);
    for (int64_t i = 0; i < t.rows; i++) {
        const int64_t row = row0 + i;
        const int dead = state.row_max[i] == -INFINITY;
        const float inverse = dead ? 0.0f : keep_scale / state.row_sum[i];
        if (p->value_dim > 0) {
            float *out = p->output + batch * p->output_strides[0] +
                         head * p->output_strides[1] + row * p->output_strides[2];
            const float *acc_row = state.acc + i * value_dim_padded;
            for (int64_t d = 0; d < p->value_dim; d++) out[d] = dead ? 0.0f : acc_row[d] * inverse;
        }
        if (p->logsumexp) {
            float *lse = p->logsumexp + batch * p->logsumexp_strides[0] +
                         head * p->logsumexp_strides[1] + row * p->logsumexp_strides[2];
            *lse = dead ? -INFINITY : state.row_max[i] + logf(state.row_sum[i]);
        }
    }
}

// ---------------------------------------------------------------------------
// Entry point.

// What every worker of one call shares.
typedef struct call_plan {
    const attn_microkernels *kernels;
    int64_t query_tiles, heads_total, tasks;
    int64_t value_dim_padded, per_thread;
} call_plan;

static call_plan plan_call(const attn_params *p) {
    call_plan plan;
    plan.kernels = attn_selected_microkernels();
    plan.query_tiles = (p->query_length + QUERY_TILE - 1) / QUERY_TILE;
    plan.heads_total = p->batch * p->query_heads;
    plan.tasks = plan.heads_total * plan.query_tiles;
    plan.value_dim_padded = round_up(p->value_dim > 0 ? p->value_dim : 1,
                                     SCRATCH_ALIGNMENT / (int64_t)sizeof(float));
    plan.per_thread = scratch_floats_per_thread(p->head_dim, plan.value_dim_padded);
    return plan;
}

// One worker: takes task indices from the shared counter until none are left.
// Tasks run from the last query tile to the first: under a causal mask the last
// tiles cost most, and starting with them balances the tail.
static void work(const attn_params *p, const call_plan *plan, float *scratch, int64_t *next_task) {
    const row_state state = row_state_at(scratch, p->head_dim, plan->value_dim_padded);
    for (;;) {
        const int64_t task = __atomic_fetch_add(next_task, 1, __ATOMIC_RELAXED);
        if (task >= plan->tasks) break;
        const int64_t query_tile = plan->query_tiles - 1 - task / plan->heads_total;
        const int64_t batch_head = task % plan->heads_total;
        run_task(p, plan->kernels, batch_head / p->query_heads, batch_head % p->query_heads,
                 query_tile * QUERY_TILE, state, plan->value_dim_padded);
    }
}

attn_status attn_sdpa_forward(const attn_params *params) {
    const attn_status status = validate(params);
    if (status != ATTN_OK) return status;
    const attn_params *p = params;
    const call_plan plan = plan_call(p);
    if (plan.tasks == 0) return ATTN_OK;

    int threads = 1;
#ifdef _OPENMP
    threads = p->num_threads > 0 ? p->num_threads : omp_get_max_threads();
    if ((int64_t)threads > plan.tasks) threads = (int)plan.tasks;
#endif
    float *scratch = aligned_alloc(SCRATCH_ALIGNMENT,
                                   sizeof(float) * (size_t)(plan.per_thread * threads));
    if (!scratch) return ATTN_ERROR_OUT_OF_MEMORY;
    int64_t next_task = 0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    work(p, &plan, scratch + plan.per_thread * omp_get_thread_num(), &next_task);
#else
    work(p, &plan, scratch, &next_task);
#endif
    free(scratch);
    return ATTN_OK;
}

attn_status attn_sdpa_run_tasks(const attn_params *params, int64_t *next_task) {
    const attn_status status = validate(params);
    if (status != ATTN_OK) return status;
    if (!next_task) return ATTN_ERROR_NULL_POINTER;
    const call_plan plan = plan_call(params);
    if (plan.tasks == 0) return ATTN_OK;
    float *scratch = aligned_alloc(SCRATCH_ALIGNMENT, sizeof(float) * (size_t)plan.per_thread);
    if (!scratch) return ATTN_ERROR_OUT_OF_MEMORY;
    work(params, &plan, scratch, next_task);
    free(scratch);
    return ATTN_OK;
}

// ---------------------------------------------------------------------------
// Introspection.

const char *attn_status_description(attn_status status) {
    switch (status) {
    case ATTN_OK: return "ok";
    case ATTN_ERROR_NULL_POINTER: return "a required pointer is NULL";
    case ATTN_ERROR_NEGATIVE_SIZE: return "a size is negative";
    case ATTN_ERROR_GROUPED_QUERY: return "query_heads is not a positive multiple of kv_heads";
    case ATTN_ERROR_INNER_STRIDE: return "the innermost dimension is not contiguous";
    case ATTN_ERROR_SCALE: return "scale is not finite";
    case ATTN_ERROR_DROPOUT: return "dropout_p is not in [0, 1)";
    case ATTN_ERROR_MASK_KIND: return "unknown mask kind or causal alignment";
    case ATTN_ERROR_OUT_OF_MEMORY: return "scratch memory could not be allocated";
    case ATTN_ERROR_SIZE_OVERFLOW: return "a product of the sizes overflows int64";
    }
    return "unknown status";
}

const char *attn_kernel_path(void) { return attn_selected_microkernels()->name; }

int attn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int attn_default_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
