// sdpa_backward.c: the gradients of fused attention, FlashAttention-2's backward on a CPU.
//
//   query [B, Hq, Lq, D]   key [B, Hkv, Lk, D]   value [B, Hkv, Lk, Dv]
//   output O [B, Hq, Lq, Dv] and logsumexp [B, Hq, Lq] from the forward call
//   grad_output dO [B, Hq, Lq, Dv]
//   → grad_query dQ [B, Hq, Lq, D], grad_key dK [B, Hkv, Lk, D], grad_value dV [B, Hkv, Lk, Dv]
//
// Dao 2023, "FlashAttention-2", Algorithm 2. With S = scale·Q Kᵀ + mask,
// P = softmax(S) = exp(S − logsumexp), Z the dropout keep mask scaled by
// 1/(1 − p) and O = (P ∘ Z) V:
//
//   D_i = Σ_d dO[i][d] · O[i][d]                     (= Σ_j P_ij · dP_ij)
//   for each (query tile, key tile), P recomputed:
//       dV_j += Σ_i (P ∘ Z)_ij · dO_i
//       dP_ij = (dO_i · V_j) · Z_ij
//       dS_ij = scale · P_ij · (dP_ij − D_i)         (the softmax Jacobian)
//       dQ_i += Σ_j dS_ij · K_j,     dK_j += Σ_i dS_ij · Q_i
//
// Rounds (plan.h): D, one task per (batch, head, query tile); then the
// gradients, in one of two ways that sum every row alike:
//   * whole heads (at least two tasks a worker, or one worker): one task per
//     (batch, kv head), key tiles in order, for each the group's query heads
//     and query tiles in order; it owns dK, dV and its group's dQ rows, so it
//     adds dS K into dQ as it goes: Algorithm 2's 5 tile products per pair.
//   * split (too few kv heads for the workers): one task per (batch, kv head,
//     key tile) owning its dK, dV rows, and one per (batch, head, query tile)
//     owning its dQ rows (key tiles in order); S and dP are computed by both,
//     7 tile products per pair, the price of parallelism without atomics.
// A dQ row gets the same pv_tile on the same dS tiles in the same key order
// either way, and a dK, dV row the same query order: the bits do not depend on
// the plan, the driver or the thread count.
//
// The tile products are the forward's micro-kernels (microkernels.h), so every
// path (avx512, avx2, neon, portable) has its register-blocked versions:
//   qk_tile: Sᵀ = K (scale·Q)ᵀ and dPᵀ = V dOᵀ;  exp_row_sum: Pᵀ = exp(Sᵀ − lse)
//   pv_tile: dV += (P∘Z)ᵀ dO, dK += dSᵀ Q, dQ += dS K.
#include "attention.h"
#include "microkernels/backward.h"
#include "microkernels/microkernels.h"
#include "params.h"
#include "plan.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum {
    FLOATS_PER_LINE = PLAN_ALIGNMENT / (int64_t)sizeof(float),
    TILE_FLOATS = KEY_TILE * QUERY_TILE,  // one score tile, 16 KiB
    NO_VISIBLE_LIMIT = KEY_TILE + QUERY_TILE,  // a pv_tile visible_limit past every column
};

static int64_t ceil_div(int64_t value, int64_t divisor) {
    return value / divisor + (value % divisor != 0);
}

static int64_t round_up(int64_t value, int64_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// A masked weight is −0 (exp_row_sum's mark); an underflowed one is +0.
static int is_masked(float weight) { return weight == 0.0f && signbit(weight); }

// ---------------------------------------------------------------------------
// Validation: params.c, the checks of every entry point.

static attn_status validate_backward(const attn_backward_params *b) {
    if (!b) return ATTN_ERROR_NULL_POINTER;
    return attn_validate_params(&b->forward, ATTN_CALL_READS_VALUES | ATTN_CALL_BACKWARD, 0, b);
}

// ---------------------------------------------------------------------------
// Per-worker scratch, each buffer on a cache line.

typedef struct grad_scratch {
    float *qt;        // scale·Qᵀ of the query tile [head_dim, QUERY_TILE]
    float *dot;       // dOᵀ of the query tile [value_dim, QUERY_TILE]
    float *pt;        // Sᵀ, then Pᵀ = exp(Sᵀ − lse) [KEY_TILE, QUERY_TILE] (−0 = masked)
    float *dst;       // dPᵀ, then dSᵀ (scale included) [KEY_TILE, QUERY_TILE]
    float *p_rows;    // P ∘ Z, query-major [QUERY_TILE, KEY_TILE]
    float *ds_rows;   // dS, query-major [QUERY_TILE, KEY_TILE]
    float *lse;       // logsumexp of the tile's rows [QUERY_TILE], 0 past the last row
    float *delta;     // D of the tile's rows [QUERY_TILE]
    float *ones;      // alpha = 1 for pv_tile [QUERY_TILE]
    float *junk;      // row sums and a row max nobody reads [QUERY_TILE]
    float *acc_a;     // dK [KEY_TILE, head_dim_padded] or dQ [QUERY_TILE, head_dim_padded]
    float *acc_b;     // dV [KEY_TILE, value_dim_padded]
    float *packed;    // an operand tile with NaN/±∞ zeroed [64, wide_padded]
} grad_scratch;

typedef struct grad_layout {
    int64_t head_dim_padded, value_dim_padded, wide_padded;
    int64_t per_worker;
} grad_layout;

static grad_layout layout_for(const attn_params *p) {
    grad_layout l;
    l.head_dim_padded = round_up(p->head_dim > 0 ? p->head_dim : 1, FLOATS_PER_LINE);
    l.value_dim_padded = round_up(p->value_dim > 0 ? p->value_dim : 1, FLOATS_PER_LINE);
    l.wide_padded = l.head_dim_padded > l.value_dim_padded ? l.head_dim_padded : l.value_dim_padded;
    l.per_worker = (l.head_dim_padded + l.value_dim_padded) * QUERY_TILE + 4 * TILE_FLOATS +
                   4 * QUERY_TILE + (l.head_dim_padded + l.value_dim_padded + l.wide_padded) * 64;
    return l;
}

static grad_scratch scratch_at(float *base, const grad_layout *l) {
    grad_scratch s;
    s.qt = base;
    s.dot = s.qt + l->head_dim_padded * QUERY_TILE;
    s.pt = s.dot + l->value_dim_padded * QUERY_TILE;
    s.dst = s.pt + TILE_FLOATS;
    s.p_rows = s.dst + TILE_FLOATS;
    s.ds_rows = s.p_rows + TILE_FLOATS;
    s.lse = s.ds_rows + TILE_FLOATS;
    s.delta = s.lse + QUERY_TILE;
    s.ones = s.delta + QUERY_TILE;
    s.junk = s.ones + QUERY_TILE;
    s.acc_a = s.junk + QUERY_TILE;
    s.acc_b = s.acc_a + l->head_dim_padded * 64;
    s.packed = s.acc_b + l->value_dim_padded * 64;
    for (int64_t i = 0; i < QUERY_TILE; i++) s.ones[i] = 1.0f;
    return s;
}

// ---------------------------------------------------------------------------
// What one call shares.

typedef struct backward_plan {
    attn_plan base;  // first: the drivers see only this
    attn_backward_params params;
    const attn_microkernels *kernels;
    const attn_backward_kernels *elementwise;  // transposes and dS, per ISA (microkernels/backward.h)
    grad_layout layout;
    int64_t query_tiles, key_tiles;
    int64_t row_tile_tasks;  // B · Hq · query tiles (the D round and the dQ tasks)
    int64_t key_tile_tasks;  // B · Hkv · key tiles (the dK, dV tasks)
    // One task per (batch, kv head) doing all of it, dQ included, when there are
    // at least two a worker; else key-tile and query-tile tasks. Same bits.
    int whole_heads;
    int delta_round;         // round 0 computes D (without values, D = 0)
    float *delta;            // D [B, Hq, Lq]
    float *scratch;          // per worker: layout.per_worker floats
} backward_plan;

// One query tile of one (batch, head) and what its rows read.
typedef struct row_tile {
    int64_t batch, head, kv_head, row0, rows;
    int64_t causal_offset;  // row i sees keys j <= i + causal_offset (when causal)
    const float *q, *dout;  // at row0
} row_tile;

static row_tile row_tile_at(const backward_plan *plan, int64_t batch, int64_t head, int64_t row0) {
    const attn_backward_params *b = &plan->params;
    const attn_params *p = &b->forward;
    row_tile t;
    t.batch = batch;
    t.head = head;
    t.kv_head = head / (p->query_heads / p->kv_heads);
    t.row0 = row0;
    t.rows = min64(p->query_length - row0, QUERY_TILE);
    t.causal_offset = p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? p->key_length - p->query_length : 0;
    t.q = p->head_dim > 0 ? p->query + batch * p->query_strides[0] + head * p->query_strides[1] +
                                row0 * p->query_strides[2]
                          : 0;
    t.dout = p->value_dim > 0 ? b->grad_output + batch * b->grad_output_strides[0] +
                                    head * b->grad_output_strides[1] + row0 * b->grad_output_strides[2]
                              : 0;
    return t;
}

// The keys a row tile may see: [0, key_end) (causal block skipping).
static int64_t visible_key_end(const attn_params *p, const row_tile *t) {
    if (p->causal == ATTN_CAUSAL_NONE) return p->key_length;
    const int64_t last_visible = t->row0 + t->rows - 1 + t->causal_offset;
    return last_visible + 1 < p->key_length ? (last_visible + 1 < 0 ? 0 : last_visible + 1) : p->key_length;
}

// Packs the row tile's operands and row statistics: scale·Qᵀ, dOᵀ, logsumexp, D.
static void load_row_tile(const backward_plan *plan, const row_tile *t, grad_scratch *s) {
    const attn_params *p = &plan->params.forward;
    const attn_microkernels *kr = plan->kernels;
    if (p->head_dim > 0) kr->pack_query(t->q, p->query_strides[2], t->rows, p->head_dim, p->scale, s->qt, QUERY_TILE);
    if (p->value_dim > 0)
        kr->pack_query(t->dout, plan->params.grad_output_strides[2], t->rows, p->value_dim, 1.0f, s->dot,
                       QUERY_TILE);
    const float *lse = p->logsumexp + t->batch * p->logsumexp_strides[0] + t->head * p->logsumexp_strides[1];
    const float *delta = plan->delta + (t->batch * p->query_heads + t->head) * p->query_length;
    for (int64_t i = 0; i < QUERY_TILE; i++) {
        s->lse[i] = i < t->rows ? lse[(t->row0 + i) * p->logsumexp_strides[2]] : 0.0f;
        s->delta[i] = i < t->rows ? delta[t->row0 + i] : 0.0f;
    }
}

// The forward's explicit masks on Sᵀ: a kept-out cell becomes −∞, an additive
// bias is added (−∞ overwrites), a padded key is −∞ for every row.
static void apply_explicit_mask(const attn_params *p, const row_tile *t, int64_t col0, int64_t cols,
                                float *st) {
    const int64_t *ms = p->mask_strides;
    const int64_t offset = t->batch * ms[0] + t->head * ms[1] + t->row0 * ms[2];
    if (p->mask_kind == ATTN_MASK_KEEP) {
        const unsigned char *mask = (const unsigned char *)p->mask + offset;
        for (int64_t i = 0; i < t->rows; i++)
            for (int64_t j = 0; j < cols; j++)
                if (!mask[i * ms[2] + (col0 + j) * ms[3]]) st[j * QUERY_TILE + i] = -INFINITY;
    } else if (p->mask_kind == ATTN_MASK_ADDITIVE) {
        const float *mask = (const float *)p->mask + offset;
        for (int64_t i = 0; i < t->rows; i++)
            for (int64_t j = 0; j < cols; j++) {
                const float bias = mask[i * ms[2] + (col0 + j) * ms[3]];
                float *s = st + j * QUERY_TILE + i;
                *s = bias == -INFINITY ? -INFINITY : *s + bias;
            }
    }
    if (p->key_padding_keep) {
        const unsigned char *keep = p->key_padding_keep + t->batch * p->key_padding_strides[0];
        for (int64_t j = 0; j < cols; j++)
            if (!keep[(col0 + j) * p->key_padding_strides[1]])
                for (int64_t i = 0; i < QUERY_TILE; i++) st[j * QUERY_TILE + i] = -INFINITY;
    }
}

// One (query tile, key tile) pair: Pᵀ into s->pt, dSᵀ (scale included) into
// s->dst and, if `query_major`, P ∘ Z and dS query-major for the key-side
// products. Returns the tile's causal visible limit (row i sees keys j < i + limit).
//   pt  [cols][QUERY_TILE] = exp(scale·K Qᵀ + mask − lse)
//   dst [cols][QUERY_TILE] = scale · P ∘ ((V dOᵀ) ∘ Z − D)
static int64_t tile_gradients(const backward_plan *plan, const row_tile *t, int64_t col0, int64_t cols,
                              grad_scratch *s, int query_major) {
    const attn_params *p = &plan->params.forward;
    const attn_microkernels *kr = plan->kernels;
    const int diagonal = p->causal != ATTN_CAUSAL_NONE && col0 + cols - 1 > t->row0 + t->causal_offset;
    const int64_t visible_limit = diagonal ? t->row0 + t->causal_offset - col0 + 1 : cols;
    const int explicit_mask = p->mask_kind != ATTN_MASK_NONE || p->key_padding_keep;
    const float *k = p->key + t->batch * p->key_strides[0] + t->kv_head * p->key_strides[1] +
                     col0 * p->key_strides[2];

    // P, as the forward computed it (a NULL-free row_max makes ±∞ scores NaN).
    if (p->head_dim > 0)
        kr->qk_tile(s->qt, k, p->key_strides[2], cols, p->head_dim, t->rows, visible_limit, s->pt,
                    QUERY_TILE, s->junk, 0, 0);
    else
        memset(s->pt, 0, sizeof(float) * (size_t)(cols * QUERY_TILE));
    if (explicit_mask) apply_explicit_mask(p, t, col0, cols, s->pt);
    kr->exp_row_sum(s->pt, QUERY_TILE, cols, t->rows, s->lse, s->junk, visible_limit, explicit_mask || p->head_dim == 0);

    // dP = dO Vᵀ.
    if (p->value_dim > 0) {
        const float *v = p->value + t->batch * p->value_strides[0] + t->kv_head * p->value_strides[1] +
                         col0 * p->value_strides[2];
        kr->qk_tile(s->dot, v, p->value_strides[2], cols, p->value_dim, t->rows, cols, s->dst, QUERY_TILE, 0, 0, 0);
    } else {
        memset(s->dst, 0, sizeof(float) * (size_t)(cols * QUERY_TILE));
    }

    // dS = scale · P ∘ (dP ∘ Z − D); masked cells −0, whatever dP holds there.
    const float scale = p->scale;
    const float keep_scale = 1.0f / (1.0f - p->dropout_p);
    const int dropout = p->dropout_p > 0.0f;
    if (!dropout) {
        plan->elementwise->score_gradient(s->pt, s->dst, s->delta, cols, t->rows, scale);
    } else {
        for (int64_t j = 0; j < cols; j++) {
            const float *restrict pt = s->pt + j * QUERY_TILE;
            float *restrict dst = s->dst + j * QUERY_TILE;
            for (int64_t i = 0; i < t->rows; i++) {
                const int kept = attn_philox_keep(p->dropout_seed, t->batch, t->head, t->row0 + i,
                                                  col0 + j, p->dropout_p);
                const float z = kept ? keep_scale : 0.0f;
                const float product = pt[i] * (dst[i] * z - s->delta[i]);
                const float ds = product * scale;
                dst[i] = is_masked(pt[i]) ? -0.0f : ds;
                if (query_major) s->p_rows[i * KEY_TILE + j] = pt[i] * z;
            }
        }
    }
    if (query_major) {
        if (!dropout) plan->elementwise->transpose_tile(s->pt, cols, t->rows, s->p_rows);
        plan->elementwise->transpose_tile(s->dst, cols, t->rows, s->ds_rows);
    }
    return visible_limit;
}

// acc[r][:] += Σ_c w[c][r] · x[c][:] for r < out_rows, c < in_cols (pv_tile with
// alpha = 1), where mark[c·col_stride + r·row_stride] = −0 flags a masked cell: its weight is ±0 and a
// NaN or ±∞ in its operand row has no effect, as in the forward. A non-finite
// operand tile goes through a zeroed copy, and its specials are added back for
// the cells that are not masked (so NaN elsewhere propagates). `finite`: 1 or 0
// if the caller knows whether the operand tile is finite, −1 to check here.
//   w, mark [in_cols][64]   x [in_cols][width] (row stride x_stride)   acc [out_rows][acc_stride]
static void masked_product(const attn_microkernels *kr, const float *w, const float *mark,
                           int64_t mark_col_stride, int64_t mark_row_stride, const float *x, int64_t x_stride, int64_t out_rows, int64_t in_cols,
                           int64_t width, float *acc, int64_t acc_stride, int64_t visible_limit,
                           grad_scratch *s, int64_t packed_stride, int finite) {
    if (width == 0 || in_cols == 0 || out_rows == 0) return;
    if (finite < 0) finite = kr->values_finite(x, x_stride, in_cols, width);
    if (finite) {
        kr->pv_tile(w, QUERY_TILE, x, x_stride, out_rows, in_cols, width, s->ones, acc, acc_stride, visible_limit, 0);
        return;
    }
    kr->pack_value(x, x_stride, in_cols, width, s->packed, packed_stride);
    kr->pv_tile(w, QUERY_TILE, s->packed, packed_stride, out_rows, in_cols, width, s->ones, acc, acc_stride,
                visible_limit, 0);
    for (int64_t c = 0; c < in_cols; c++)
        for (int64_t d = 0; d < width; d++) {
            const float value = x[c * x_stride + d];
            if (isfinite(value)) continue;
            for (int64_t r = 0; r < out_rows; r++)
                if (!is_masked(mark[c * mark_col_stride + r * mark_row_stride])) acc[r * acc_stride + d] += w[c * 64 + r] * value;
        }
}

static void zero_rows(float *out, int64_t row_stride, int64_t rows, int64_t width) {
    for (int64_t r = 0; r < rows; r++) memset(out + r * row_stride, 0, sizeof(float) * (size_t)width);
}

static void copy_rows(float *out, int64_t out_stride, const float *acc, int64_t acc_stride,
                      int64_t rows, int64_t width) {
    for (int64_t r = 0; r < rows; r++)
        memcpy(out + r * out_stride, acc + r * acc_stride, sizeof(float) * (size_t)width);
}

// ---------------------------------------------------------------------------
// The tasks.

// D round: D[b, h, i] = Σ_d dO[i][d] · O[i][d] for one query tile, summed in
// double precision in dimension order.
static void delta_task(const backward_plan *plan, int64_t task) {
    const attn_backward_params *b = &plan->params;
    const attn_params *p = &b->forward;
    const int64_t batch_head = task / plan->query_tiles, row0 = task % plan->query_tiles * QUERY_TILE;
    const int64_t batch = batch_head / p->query_heads, head = batch_head % p->query_heads;
    const int64_t rows = min64(p->query_length - row0, QUERY_TILE);
    float *delta = plan->delta + batch_head * p->query_length + row0;
    for (int64_t i = 0; i < rows; i++) {
        double sum = 0.0;
        if (p->value_dim > 0) {
            const float *o = p->output + batch * p->output_strides[0] + head * p->output_strides[1] +
                             (row0 + i) * p->output_strides[2];
            const float *d_o = b->grad_output + batch * b->grad_output_strides[0] +
                               head * b->grad_output_strides[1] + (row0 + i) * b->grad_output_strides[2];
            for (int64_t d = 0; d < p->value_dim; d++) sum += (double)d_o[d] * (double)o[d];
        }
        delta[i] = (float)sum;
    }
}

// dK and dV rows of one key tile of one (batch, kv head): the query heads of its
// group in order, each head's visible query tiles in order.
//   dV[j] = Σ_h Σ_i (P ∘ Z)_ij dO_i      dK[j] = Σ_h Σ_i dS_ij Q_i
static void key_tile_work(const backward_plan *plan, int64_t batch, int64_t kv_head, int64_t col0,
                          grad_scratch *s) {
    const attn_backward_params *b = &plan->params;
    const attn_params *p = &b->forward;
    const grad_layout *l = &plan->layout;
    const int64_t cols = min64(p->key_length - col0, KEY_TILE);
    const int64_t group = p->query_heads / p->kv_heads;
    memset(s->acc_a, 0, sizeof(float) * (size_t)(KEY_TILE * l->head_dim_padded));
    memset(s->acc_b, 0, sizeof(float) * (size_t)(KEY_TILE * l->value_dim_padded));
    const int64_t causal_offset = p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? p->key_length - p->query_length : 0;
    // Causal: query rows i < col0 − causal_offset see none of these keys.
    int64_t first_row = p->causal == ATTN_CAUSAL_NONE ? 0 : col0 - causal_offset;
    first_row = first_row < 0 ? 0 : first_row;
    for (int64_t head = kv_head * group; head < (kv_head + 1) * group; head++) {
        for (int64_t row0 = first_row / QUERY_TILE * QUERY_TILE; row0 < p->query_length; row0 += QUERY_TILE) {
            const row_tile t = row_tile_at(plan, batch, head, row0);
            load_row_tile(plan, &t, s);
            tile_gradients(plan, &t, col0, cols, s, 1);
            masked_product(plan->kernels, s->p_rows, s->pt, 1, QUERY_TILE, t.dout, b->grad_output_strides[2], cols,
                           t.rows, p->value_dim, s->acc_b, l->value_dim_padded, NO_VISIBLE_LIMIT, s, l->wide_padded, -1);
            masked_product(plan->kernels, s->ds_rows, s->pt, 1, QUERY_TILE, t.q, p->query_strides[2], cols, t.rows,
                           p->head_dim, s->acc_a, l->head_dim_padded, NO_VISIBLE_LIMIT, s, l->wide_padded, -1);
        }
    }
    if (p->head_dim > 0)
        copy_rows(b->grad_key + batch * b->grad_key_strides[0] + kv_head * b->grad_key_strides[1] +
                      col0 * b->grad_key_strides[2],
                  b->grad_key_strides[2], s->acc_a, l->head_dim_padded, cols, p->head_dim);
    if (p->value_dim > 0)
        copy_rows(b->grad_value + batch * b->grad_value_strides[0] + kv_head * b->grad_value_strides[1] +
                      col0 * b->grad_value_strides[2],
                  b->grad_value_strides[2], s->acc_b, l->value_dim_padded, cols, p->value_dim);
}

static void key_tile_task(const backward_plan *plan, int64_t task, grad_scratch *s) {
    const int64_t batch_kv = task / plan->key_tiles, col0 = task % plan->key_tiles * KEY_TILE;
    const int64_t kv_heads = plan->params.forward.kv_heads;
    key_tile_work(plan, batch_kv / kv_heads, batch_kv % kv_heads, col0, s);
}

// Everything of one (batch, kv head): the group's query heads in order, each
// head's query tiles in order, each tile's visible key tiles in order — the
// order in which key_tile_task sums a dK, dV row over (head, query tile) and
// query_tile_task a dQ row over key tiles, on the same tiles: the same bits.
// The task owns the kv head's dK, dV rows (accumulated in place) and its
// group's dQ rows, so each pair costs Algorithm 2's 5 tile products, and Qᵀ,
// dOᵀ are packed and checked once per query tile.
static void kv_head_task(const backward_plan *plan, int64_t task, grad_scratch *s) {
    const attn_backward_params *b = &plan->params;
    const attn_params *p = &b->forward;
    const grad_layout *l = &plan->layout;
    const attn_microkernels *kr = plan->kernels;
    const int64_t batch = task / p->kv_heads, kv_head = task % p->kv_heads;
    const int64_t group = p->query_heads / p->kv_heads;
    float *dk = p->head_dim > 0 ? b->grad_key + batch * b->grad_key_strides[0] + kv_head * b->grad_key_strides[1] : 0;
    float *dv = p->value_dim > 0 ? b->grad_value + batch * b->grad_value_strides[0] + kv_head * b->grad_value_strides[1] : 0;
    const float *k = p->head_dim > 0 ? p->key + batch * p->key_strides[0] + kv_head * p->key_strides[1] : 0;
    if (dk) zero_rows(dk, b->grad_key_strides[2], p->key_length, p->head_dim);
    if (dv) zero_rows(dv, b->grad_value_strides[2], p->key_length, p->value_dim);
    for (int64_t head = kv_head * group; head < (kv_head + 1) * group; head++) {
        for (int64_t row0 = 0; row0 < p->query_length; row0 += QUERY_TILE) {
            const row_tile t = row_tile_at(plan, batch, head, row0);
            float *dq = p->head_dim > 0 ? b->grad_query + batch * b->grad_query_strides[0] +
                                              head * b->grad_query_strides[1] + row0 * b->grad_query_strides[2]
                                        : 0;
            const int64_t key_end = visible_key_end(p, &t);
            if (key_end == 0) {
                if (dq) zero_rows(dq, b->grad_query_strides[2], t.rows, p->head_dim);
                continue;
            }
            if (dq) memset(s->acc_a, 0, sizeof(float) * (size_t)(QUERY_TILE * l->head_dim_padded));
            load_row_tile(plan, &t, s);
            const int q_finite = p->head_dim > 0 ? kr->values_finite(t.q, p->query_strides[2], t.rows, p->head_dim) : 1;
            const int dout_finite =
                p->value_dim > 0 ? kr->values_finite(t.dout, b->grad_output_strides[2], t.rows, p->value_dim) : 1;
            for (int64_t col0 = 0; col0 < key_end; col0 += KEY_TILE) {
                const int64_t cols = min64(key_end - col0, KEY_TILE);
                const int64_t visible_limit = tile_gradients(plan, &t, col0, cols, s, 1);
                if (dv)
                    masked_product(kr, s->p_rows, s->pt, 1, QUERY_TILE, t.dout, b->grad_output_strides[2], cols, t.rows,
                                   p->value_dim, dv + col0 * b->grad_value_strides[2], b->grad_value_strides[2],
                                   NO_VISIBLE_LIMIT, s, l->wide_padded, dout_finite);
                if (dk) {
                    masked_product(kr, s->ds_rows, s->pt, 1, QUERY_TILE, t.q, p->query_strides[2], cols, t.rows,
                                   p->head_dim, dk + col0 * b->grad_key_strides[2], b->grad_key_strides[2],
                                   NO_VISIBLE_LIMIT, s, l->wide_padded, q_finite);
                    masked_product(kr, s->dst, s->pt, QUERY_TILE, 1, k + col0 * p->key_strides[2], p->key_strides[2],
                                   t.rows, cols, p->head_dim, s->acc_a, l->head_dim_padded, visible_limit, s,
                                   l->wide_padded, -1);
                }
            }
            if (dq) copy_rows(dq, b->grad_query_strides[2], s->acc_a, l->head_dim_padded, t.rows, p->head_dim);
        }
    }
}

// dQ rows of one query tile: its visible key tiles in order.  dQ_i = Σ_j dS_ij K_j
static void query_tile_task(const backward_plan *plan, int64_t task, grad_scratch *s) {
    const attn_backward_params *b = &plan->params;
    const attn_params *p = &b->forward;
    const grad_layout *l = &plan->layout;
    const int64_t batch_head = task / plan->query_tiles;
    const int64_t row0 = (plan->query_tiles - 1 - task % plan->query_tiles) * QUERY_TILE;
    const row_tile t = row_tile_at(plan, batch_head / p->query_heads, batch_head % p->query_heads, row0);
    if (p->head_dim == 0) return;
    float *dq = b->grad_query + t.batch * b->grad_query_strides[0] + t.head * b->grad_query_strides[1] +
                row0 * b->grad_query_strides[2];
    const int64_t key_end = visible_key_end(p, &t);
    if (key_end == 0) {
        zero_rows(dq, b->grad_query_strides[2], t.rows, p->head_dim);
        return;
    }
    memset(s->acc_a, 0, sizeof(float) * (size_t)(QUERY_TILE * l->head_dim_padded));
    load_row_tile(plan, &t, s);
    const float *k = p->key + t.batch * p->key_strides[0] + t.kv_head * p->key_strides[1];
    for (int64_t col0 = 0; col0 < key_end; col0 += KEY_TILE) {
        const int64_t cols = min64(key_end - col0, KEY_TILE);
        const int64_t visible_limit = tile_gradients(plan, &t, col0, cols, s, 0);
        masked_product(plan->kernels, s->dst, s->pt, QUERY_TILE, 1, k + col0 * p->key_strides[2], p->key_strides[2], t.rows,
                       cols, p->head_dim, s->acc_a, l->head_dim_padded, visible_limit, s, l->wide_padded, -1);
    }
    copy_rows(dq, b->grad_query_strides[2], s->acc_a, l->head_dim_padded, t.rows, p->head_dim);
}

// The gradient round holds the key-tile tasks first (they cost most: every
// query head of the group), then the query-tile tasks.
static void run_backward_task(attn_plan *base, int32_t round, int64_t task, int32_t worker) {
    backward_plan *plan = (backward_plan *)base;
    if (plan->delta_round && round == 0) {
        delta_task(plan, task);
        return;
    }
    grad_scratch s = scratch_at(plan->scratch + plan->layout.per_worker * worker, &plan->layout);
    if (plan->whole_heads)
        kv_head_task(plan, task, &s);
    else if (task < plan->key_tile_tasks)
        key_tile_task(plan, task, &s);
    else
        query_tile_task(plan, task - plan->key_tile_tasks, &s);
}

static void release_backward_plan(attn_plan *base) {
    backward_plan *plan = (backward_plan *)base;
    attn_aligned_free(plan->delta);
    attn_aligned_free(plan->scratch);
    free(plan);
}

// Zeroes every gradient when there is no key (dQ) or no query row (dK, dV):
// nothing to sum, and the tasks below assume both.
static void write_empty_gradients(const attn_backward_params *b) {
    const attn_params *p = &b->forward;
    const int no_rows = p->query_length == 0 || p->query_heads == 0;
    for (int64_t batch = 0; batch < p->batch; batch++) {
        if (p->key_length == 0 && p->head_dim > 0 && p->query_length > 0)
            for (int64_t h = 0; h < p->query_heads; h++)
                zero_rows(b->grad_query + batch * b->grad_query_strides[0] + h * b->grad_query_strides[1],
                          b->grad_query_strides[2], p->query_length, p->head_dim);
        if (no_rows && p->key_length > 0)
            for (int64_t h = 0; h < p->kv_heads; h++) {
                if (p->head_dim > 0)
                    zero_rows(b->grad_key + batch * b->grad_key_strides[0] + h * b->grad_key_strides[1],
                              b->grad_key_strides[2], p->key_length, p->head_dim);
                if (p->value_dim > 0)
                    zero_rows(b->grad_value + batch * b->grad_value_strides[0] + h * b->grad_value_strides[1],
                              b->grad_value_strides[2], p->key_length, p->value_dim);
            }
    }
}

attn_status attn_sdpa_backward_plan_create(const attn_backward_params *params, attn_plan **plan_out) {
    if (!plan_out) return ATTN_ERROR_NULL_POINTER;
    *plan_out = 0;
    const attn_status status = validate_backward(params);
    if (status != ATTN_OK) return status;
    backward_plan *plan = calloc(1, sizeof(backward_plan));
    if (!plan) return ATTN_ERROR_OUT_OF_MEMORY;
    plan->base.run_task = run_backward_task;
    plan->base.release = release_backward_plan;
    plan->params = *params;
    const attn_params *p = &plan->params.forward;
    plan->kernels = attn_selected_microkernels();
    plan->elementwise = attn_selected_backward_kernels();
    plan->layout = layout_for(p);
    plan->query_tiles = ceil_div(p->query_length, QUERY_TILE);
    plan->key_tiles = ceil_div(p->key_length, KEY_TILE);
    const int threads = p->num_threads > 0 ? p->num_threads : attn_default_threads();
    const int work = p->batch > 0 && p->query_heads > 0 && p->query_length > 0 && p->key_length > 0;
    if (!work) {
        // Nothing to sum: the gradients that exist are zero, written now (the
        // plan has no rounds). Plan creation is where the call is validated, so
        // writing here keeps "on an error nothing is written".
        write_empty_gradients(&plan->params);
    } else {
        plan->row_tile_tasks = p->batch * p->query_heads * plan->query_tiles;
        plan->key_tile_tasks = p->batch * p->kv_heads * plan->key_tiles;
        const size_t delta_bytes = sizeof(float) * (size_t)(p->batch * p->query_heads * p->query_length);
        plan->delta = attn_aligned_alloc(delta_bytes);
        if (!plan->delta) {
            release_backward_plan(&plan->base);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
        plan->delta_round = p->value_dim > 0;
        if (plan->delta_round)
            plan_add_round(&plan->base, plan->row_tile_tasks);
        else
            memset(plan->delta, 0, delta_bytes);
        plan->whole_heads = p->batch * p->kv_heads >= 2 * (int64_t)threads || threads == 1;
        plan_add_round(&plan->base, plan->whole_heads ? p->batch * p->kv_heads
                                                      : plan->key_tile_tasks + plan->row_tile_tasks);
    }
    plan->base.workers = plan_worker_count(threads, plan_widest_round(&plan->base));
    if (plan->base.rounds > 0) {
        plan->scratch = attn_aligned_alloc(sizeof(float) * (size_t)(plan->layout.per_worker * plan->base.workers));
        if (!plan->scratch) {
            release_backward_plan(&plan->base);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
    }
    *plan_out = &plan->base;
    return ATTN_OK;
}

attn_status attn_sdpa_backward(const attn_backward_params *params) {
    if (!params) return ATTN_ERROR_NULL_POINTER;
    attn_backward_params call = *params;
#ifndef _OPENMP
    call.forward.num_threads = 1;  // this driver runs the plan serially: plan for one worker
#endif
    attn_plan *plan;
    return plan_run_created(attn_sdpa_backward_plan_create(&call, &plan), &plan);
}
