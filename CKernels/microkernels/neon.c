// neon.c: the passes with AArch64 Advanced SIMD (NEON) intrinsics, 4 query rows per register.
//
// Register blocking (broadcast-FMA, as in avx512.c and avx2.c) sized for 32
// 128-bit registers. qk_tile keeps a block of up to 5 keys × 16 query rows in
// 20 accumulators; the key elements come four head dims at a time in one load
// per key and feed the FMAs by lane (vfmaq_laneq_f32), so a head-dim step costs
// 4 loads of packed queries and 1.25 key loads for 20 FMAs. pv_tile keeps 4
// query rows × 16 value columns in 16 accumulators; the four rows' weights of a
// key are one load of the transposed score line, used by lane. Every lane
// computes the same chain of fused multiply-adds, in the same order, as in the
// other paths' layouts, so a row's bits do not depend on its lane or on how
// many rows share its tile.
#include "microkernels.h"

#if defined(__aarch64__)

#include <arm_neon.h>
#include <math.h>

// Blocks take their sizes as constants: forced inlining and full unrolling keep
// every accumulator of a block in a register.
#define INLINE __attribute__((always_inline)) inline
#if defined(__clang__)
#define UNROLL _Pragma("clang loop unroll(full)")
#else
#define UNROLL _Pragma("GCC unroll 16")
#endif

enum {
    LANES = 4,
    ROW_VECTORS = QUERY_TILE / LANES,  // 16 vectors across a score-tile line
    GROUP_VECTORS = 4,                 // row vectors per qk register block: 16 query rows
    MAX_BLOCK_KEYS = 12,               // keys per qk block with one row vector
    KEY_GROUP = 16,                    // keys per step of the causal skip on a diagonal tile
    ROW_BLOCK = 4,                     // query rows per pv register block: one weight vector
    VALUE_VECTORS = 4,                 // per pv block: 16 value columns
    DECODE_VALUE_VECTORS = 8,          // with one or two query rows: 32 value columns
};

// exp(x) for x ≤ 0 (or NaN), about 1 ulp, the algorithm of exp256 in avx2.c:
// x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by its degree-7
// Taylor polynomial (truncation < 6e-9 relative), and 2^n built in the exponent
// field. Results below FLT_MIN (x < −87.3, −∞ included) are 0; NaN stays NaN
// (the compare is false for it, and the arithmetic keeps it).
INLINE static float32x4_t exp_neon(float32x4_t x) {
    const uint32x4_t underflow = vcltq_f32(x, vdupq_n_f32(-87.3f));
    x = vmaxq_f32(x, vdupq_n_f32(-87.3f));  // keeps n in range; NaN stays NaN
    const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.0f / 5040.0f);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 720.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
    const int32x4_t exponent = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t result = vmulq_f32(p, vreinterpretq_f32_s32(exponent));
    return vbslq_f32(underflow, vdupq_n_f32(0.0f), result);
}

// The running max of the portable pass, m = s > m || s is NaN ? s : m: a NaN
// score replaces the max (the last one in key order), and stays.
INLINE static float32x4_t max_or_nan(float32x4_t s, float32x4_t m) {
    const uint32x4_t take = vorrq_u32(vcgtq_f32(s, m), vmvnq_u32(vceqq_f32(s, s)));
    return vbslq_f32(take, s, m);
}

// Row vectors that hold the first `rows` query rows.
static inline int row_vectors(int64_t rows) {
    const int64_t vectors = (rows + LANES - 1) / LANES;
    return vectors < 1 ? 1 : vectors > ROW_VECTORS ? ROW_VECTORS : (int)vectors;
}

// Lanes of row vector c that cannot see key j (row i sees keys j < i + visible_limit).
INLINE static uint32x4_t causally_hidden(int64_t j, int c, int64_t visible_limit) {
    int64_t hidden = j - visible_limit - (int64_t)c * LANES + 1;
    hidden = hidden < 0 ? 0 : hidden > LANES ? LANES : hidden;
    const uint32_t lane_index[LANES] = {0, 1, 2, 3};
    return vcltq_u32(vld1q_u32(lane_index), vdupq_n_u32((uint32_t)hidden));
}

// The first `count` (1 … 4) floats at p, the other lanes 0; and the converse store.
INLINE static float32x4_t load_lanes(const float *p, int count) {
    if (count >= LANES) return vld1q_f32(p);
    float32x4_t v = vld1q_lane_f32(p, vdupq_n_f32(0.0f), 0);
    if (count > 1) v = vld1q_lane_f32(p + 1, v, 1);
    if (count > 2) v = vld1q_lane_f32(p + 2, v, 2);
    return v;
}

INLINE static void store_lanes(float *p, float32x4_t v, int count) {
    if (count >= LANES) {
        vst1q_f32(p, v);
        return;
    }
    vst1q_lane_f32(p, v, 0);
    if (count > 1) vst1q_lane_f32(p + 1, v, 1);
    if (count > 2) vst1q_lane_f32(p + 2, v, 2);
}

// qt [head_dim, QUERY_TILE] = scale · q [rows, head_dim]ᵀ, through 4 × 4
// in-register transposes; rows past `rows` are 0.
static void pack_query_neon(const float *q, int64_t q_row_stride, int64_t rows, int64_t head_dim,
                            float scale, float *qt) {
    const float32x4_t scale_vector = vdupq_n_f32(scale);
    for (int64_t i0 = 0; i0 < QUERY_TILE; i0 += LANES) {
        const int64_t left = rows - i0;
        const int block_rows = left >= LANES ? LANES : left <= 0 ? 0 : (int)left;
        int64_t d = 0;
        if (block_rows == LANES)
            for (; d + LANES <= head_dim; d += LANES) {
                const float *row = q + i0 * q_row_stride + d;
                const float32x4_t r0 = vld1q_f32(row), r1 = vld1q_f32(row + q_row_stride);
                const float32x4_t r2 = vld1q_f32(row + 2 * q_row_stride), r3 = vld1q_f32(row + 3 * q_row_stride);
                const float32x4_t t0 = vtrn1q_f32(r0, r1), t1 = vtrn2q_f32(r0, r1);  // r0₀ r1₀ r0₂ r1₂, r0₁ r1₁ r0₃ r1₃
                const float32x4_t t2 = vtrn1q_f32(r2, r3), t3 = vtrn2q_f32(r2, r3);  // the same of rows 2, 3
                float *out = qt + d * QUERY_TILE + i0;
                vst1q_f32(out, vmulq_f32(vcombine_f32(vget_low_f32(t0), vget_low_f32(t2)), scale_vector));
                vst1q_f32(out + QUERY_TILE, vmulq_f32(vcombine_f32(vget_low_f32(t1), vget_low_f32(t3)), scale_vector));
                vst1q_f32(out + 2 * QUERY_TILE, vmulq_f32(vcombine_f32(vget_high_f32(t0), vget_high_f32(t2)), scale_vector));
                vst1q_f32(out + 3 * QUERY_TILE, vmulq_f32(vcombine_f32(vget_high_f32(t1), vget_high_f32(t3)), scale_vector));
            }
        for (; d < head_dim; d++)
            for (int lane = 0; lane < LANES; lane++)
                qt[d * QUERY_TILE + i0 + lane] =
                    lane < block_rows ? q[(i0 + lane) * q_row_stride + d] * scale : 0.0f;
    }
}

// One head dim of a qk block: acc[r][c] += qt[d + LANE][c] · key[r][LANE].
#define QK_STEP(LANE)                                                                              \
    do {                                                                                           \
        float32x4_t q[GROUP_VECTORS];                                                              \
        UNROLL for (int c = 0; c < vectors; c++)                                                   \
            q[c] = vld1q_f32(qt + (d + LANE) * QUERY_TILE + c * LANES);                            \
        UNROLL for (int r = 0; r < keys; r++)                                                      \
            UNROLL for (int c = 0; c < vectors; c++)                                               \
                acc[r][c] = vfmaq_laneq_f32(acc[r][c], q[c], key[r], LANE);                        \
    } while (0)

// st[0 .. keys)[0 .. 4·vectors) = k rows [keys, head_dim] · qt [head_dim, 4·vectors]
// (FlashAttention-2 S = Q Kᵀ, transposed), keys × vectors ≤ 20 accumulators;
// with running_max, the row max over these keys is folded in.
INLINE static void qk_block(const float *qt, const float *k, int64_t k_row_stride, int64_t head_dim,
                            float *st, int attention, float *running_max, const int keys,
                            const int vectors) {
    float32x4_t acc[MAX_BLOCK_KEYS][GROUP_VECTORS];
    UNROLL for (int r = 0; r < keys; r++)
        UNROLL for (int c = 0; c < vectors; c++) acc[r][c] = vdupq_n_f32(0.0f);
    int64_t d = 0;
    for (; d + LANES <= head_dim; d += LANES) {
        float32x4_t key[MAX_BLOCK_KEYS];
        UNROLL for (int r = 0; r < keys; r++) key[r] = vld1q_f32(k + r * k_row_stride + d);
        QK_STEP(0);
        QK_STEP(1);
        QK_STEP(2);
        QK_STEP(3);
    }
    for (; d < head_dim; d++) {  // the last head_dim % 4 dims: the same FMA, key broadcast
        float32x4_t q[GROUP_VECTORS];
        UNROLL for (int c = 0; c < vectors; c++) q[c] = vld1q_f32(qt + d * QUERY_TILE + c * LANES);
        UNROLL for (int r = 0; r < keys; r++) {
            const float32x4_t key = vld1q_dup_f32(k + r * k_row_stride + d);
            UNROLL for (int c = 0; c < vectors; c++) acc[r][c] = vfmaq_f32(acc[r][c], q[c], key);
        }
    }
    if (attention) {
        // A score that overflowed, or met an infinite input, becomes NaN, so that
        // it cannot pass for a masked cell (−∞): s + s·0 is s when finite, NaN not.
        UNROLL for (int r = 0; r < keys; r++)
            UNROLL for (int c = 0; c < vectors; c++)
                acc[r][c] = vfmaq_f32(acc[r][c], acc[r][c], vdupq_n_f32(0.0f));
    }
    UNROLL for (int r = 0; r < keys; r++)
        UNROLL for (int c = 0; c < vectors; c++) vst1q_f32(st + r * QUERY_TILE + c * LANES, acc[r][c]);
    if (!running_max) return;
    UNROLL for (int c = 0; c < vectors; c++) {
        float32x4_t m = vld1q_f32(running_max + c * LANES);
        UNROLL for (int r = 0; r < keys; r++) m = max_or_nan(acc[r][c], m);
        vst1q_f32(running_max + c * LANES, m);
    }
}

// All `cols` keys against `vectors` (1 … 4) row vectors: blocks of as many keys
// as the registers hold (12, 8, 6, 5 for 1, 2, 3, 4 vectors), then 4, 2, 1.
// Each block advances the prefetch stream (decoding: the tile's value rows) by
// 8 cache lines per key: a 64-key tile of D = 128 values by the end of the tile.
INLINE static void qk_keys(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                           int64_t head_dim, float *st, int attention, float *running_max,
                           attn_prefetch_stream *prefetch, const int vectors) {
    const int block = vectors == 1 ? 12 : vectors == 2 ? 8 : vectors == 3 ? 6 : 5;
    int64_t j = 0;
    for (; j + block <= cols; j += block) {
        attn_prefetch_step(prefetch, 8 * block);
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, attention,
                 running_max, block, vectors);
    }
    for (; j + 4 <= cols; j += 4) {
        attn_prefetch_step(prefetch, 8 * 4);
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, attention,
                 running_max, 4, vectors);
    }
    if (j + 2 <= cols) {
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, attention,
                 running_max, 2, vectors);
        j += 2;
    }
    if (j < cols)
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, attention,
                 running_max, 1, vectors);
}

// All `cols` keys against `vectors` (1 … 16) row vectors, 16 query rows at a time.
static void qk_rows(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                    int64_t head_dim, float *st, int attention, float *running_max,
                    attn_prefetch_stream *prefetch, int vectors) {
    for (int c0 = 0; c0 < vectors; c0 += GROUP_VECTORS) {
        const int group = vectors - c0 < GROUP_VECTORS ? vectors - c0 : GROUP_VECTORS;
        const float *qt_group = qt + c0 * LANES;
        float *st_group = st + c0 * LANES;
        float *max_group = running_max ? running_max + c0 * LANES : 0;
        switch (group) {  // constant vector counts, so each block unrolls fully
        case 1: qk_keys(qt_group, k, k_row_stride, cols, head_dim, st_group, attention, max_group, prefetch, 1); break;
        case 2: qk_keys(qt_group, k, k_row_stride, cols, head_dim, st_group, attention, max_group, prefetch, 2); break;
        case 3: qk_keys(qt_group, k, k_row_stride, cols, head_dim, st_group, attention, max_group, prefetch, 3); break;
        default: qk_keys(qt_group, k, k_row_stride, cols, head_dim, st_group, attention, max_group, prefetch, 4); break;
        }
    }
}

static void row_max_neon(const float *st, int64_t cols, int64_t rows, const float *row_max,
                         float *row_max_new, int64_t visible_limit);

// qt [head_dim, QUERY_TILE], k [cols, head_dim] (row stride k_row_stride) →
// st [cols, QUERY_TILE]. Only the row vectors that hold query rows are computed
// (a decode step costs one vector per key instead of sixteen).
static void qk_tile_neon(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                         int64_t head_dim, int64_t rows, int64_t visible_limit, float *st,
                         const float *row_max, float *row_max_new, attn_prefetch_stream *prefetch) {
    const int vectors = row_vectors(rows);
    const int attention = row_max != 0;
    attn_prefetch_stream stream, *local = 0;  // in registers meanwhile (stores to st could alias it)
    if (prefetch) {
        stream = *prefetch;
        local = &stream;
    }
    if (visible_limit < cols) {
        // A tile on the causal diagonal: for keys j0 … j0 + 15, the row vectors
        // below row j0 − visible_limit + 1 see none of them and are left to the
        // mask passes, which take such cells as masked whatever they hold.
        for (int64_t j0 = 0; j0 < cols; j0 += KEY_GROUP) {
            const int64_t needed_row = j0 - visible_limit + 1;
            const int first = needed_row <= 0 ? 0 : (int)(needed_row / LANES);
            if (first >= vectors) break;  // and so for every later group
            const int64_t keys = cols - j0 < KEY_GROUP ? cols - j0 : KEY_GROUP;
            qk_rows(qt + first * LANES, k + j0 * k_row_stride, k_row_stride, keys, head_dim,
                    st + j0 * QUERY_TILE + first * LANES, attention, 0, local, vectors - first);
        }
        if (row_max_new) row_max_neon(st, cols, rows, row_max, row_max_new, visible_limit);
    } else {
        if (row_max_new)
            for (int c = 0; c < vectors; c++)
                vst1q_f32(row_max_new + c * LANES, vld1q_f32(row_max + c * LANES));
        qk_rows(qt, k, k_row_stride, cols, head_dim, st, attention, row_max_new, local, vectors);
    }
    if (prefetch) *prefetch = stream;
}

// m_new [QUERY_TILE] = max(m, max over visible j of st[j][:]), NaN wins.
static void row_max_neon(const float *st, int64_t cols, int64_t rows, const float *row_max,
                         float *row_max_new, int64_t visible_limit) {
    const int vectors = row_vectors(rows);
    for (int c = 0; c < vectors; c++) {
        const int64_t seen = visible_cols(cols, c * LANES, LANES, visible_limit);
        float32x4_t m = vld1q_f32(row_max + c * LANES);
        for (int64_t j = 0; j < seen; j++) {
            const float32x4_t s = vld1q_f32(st + j * QUERY_TILE + c * LANES);
            // A hidden cell keeps m: it is −∞ whatever it holds.
            m = vbslq_f32(causally_hidden(j, c, visible_limit), m, max_or_nan(s, m));
        }
        vst1q_f32(row_max_new + c * LANES, m);
    }
}

// st[j][i] = exp(st[j][i] − m_new[i]), −0 where masked; tile_sum[i] = Σ_j st[j][i] in key order.
static void exp_row_sum_neon(float *st, int64_t cols, int64_t rows, const float *row_max_new,
                             float *tile_sum, int64_t visible_limit, int may_hold_minus_infinity) {
    const float32x4_t minus_infinity = vdupq_n_f32(-INFINITY);
    const float32x4_t masked_weight = vdupq_n_f32(-0.0f);
    const int vectors = row_vectors(rows);
    const int unmasked = visible_limit >= cols && !may_hold_minus_infinity;
    for (int c = 0; c < vectors; c++) {
        const int64_t seen = visible_cols(cols, c * LANES, LANES, visible_limit);
        const float32x4_t m = vld1q_f32(row_max_new + c * LANES);
        float32x4_t sum = vdupq_n_f32(0.0f);
        if (unmasked) {
            // No mask on this tile: no −∞ to look for (an infinite score is NaN by now).
            for (int64_t j = 0; j < cols; j++) {
                float *line = st + j * QUERY_TILE + c * LANES;
                const float32x4_t p = exp_neon(vsubq_f32(vld1q_f32(line), m));
                vst1q_f32(line, p);
                sum = vaddq_f32(sum, p);
            }
        } else {
            for (int64_t j = 0; j < seen; j++) {
                float *line = st + j * QUERY_TILE + c * LANES;
                const float32x4_t s = vld1q_f32(line);
                const uint32x4_t masked = vorrq_u32(vceqq_f32(s, minus_infinity),
                                                    causally_hidden(j, c, visible_limit));
                const float32x4_t p = vbslq_f32(masked, masked_weight, exp_neon(vsubq_f32(s, m)));
                vst1q_f32(line, p);
                sum = vaddq_f32(sum, p);
            }
            // Adding −0 to the sum changes no bit, so the hidden keys add nothing.
            for (int64_t j = seen; j < cols; j++) vst1q_f32(st + j * QUERY_TILE + c * LANES, masked_weight);
        }
        vst1q_f32(tile_sum + c * LANES, sum);
    }
}

// One row of a pv block: sum[R_][c] += v[j][c] · weight of row R_ (lane R_ of w).
#define PV_ROW(R_)                                                                                 \
    UNROLL for (int c = 0; c < vectors; c++) sum[R_][c] = vfmaq_laneq_f32(sum[R_][c], value[c], w, R_)

// acc rows [rows, width] = alpha · acc + pt [cols, rows of this block]ᵀ · v [cols, width],
// width = 4·(vectors − 1) + tail value columns (tail 1 … 4).
INLINE static void pv_block(const float *pt, const float *v, int64_t v_row_stride, int64_t cols,
                            const float *alpha, float *acc, int64_t acc_row_stride,
                            attn_prefetch_stream *prefetch, const int rows, const int vectors,
                            int tail) {
    float32x4_t sum[ROW_BLOCK][DECODE_VALUE_VECTORS];
    // Once the row maxima settle, alpha is 1 for most blocks: x·1 = x, so the
    // rescale is left out.
    int settled = 1;
    UNROLL for (int r = 0; r < rows; r++) settled &= alpha[r] == 1.0f;
    UNROLL for (int r = 0; r < rows; r++) {
        const float32x4_t rescale = vdupq_n_f32(alpha[r]);
        UNROLL for (int c = 0; c < vectors; c++) {
            sum[r][c] = load_lanes(acc + r * acc_row_stride + c * LANES, c == vectors - 1 ? tail : LANES);
            if (!settled) sum[r][c] = vmulq_f32(rescale, sum[r][c]);
        }
    }
    for (int64_t j = 0; j < cols; j++) {
        attn_prefetch_step(prefetch, 8);  // a 512-byte row per key: D = 128 in one pass
        float32x4_t value[DECODE_VALUE_VECTORS];
        UNROLL for (int c = 0; c < vectors; c++)
            value[c] = load_lanes(v + j * v_row_stride + c * LANES, c == vectors - 1 ? tail : LANES);
        // The weights of this block's rows; lanes past `rows` are other rows' (or
        // unused) cells of the same line, within the tile, and are not used.
        const float32x4_t w = vld1q_f32(pt + j * QUERY_TILE);
        PV_ROW(0);
        if (rows > 1) PV_ROW(1);
        if (rows > 2) PV_ROW(2);
        if (rows > 3) PV_ROW(3);
    }
    UNROLL for (int r = 0; r < rows; r++)
        UNROLL for (int c = 0; c < vectors; c++)
            store_lanes(acc + r * acc_row_stride + c * LANES, sum[r][c], c == vectors - 1 ? tail : LANES);
}

// All rows of a column block: blocks of 4 rows, then the rest in one block of
// constant size. A block visits the keys up to its last row's visible limit.
INLINE static void pv_rows(const float *pt, const float *v, int64_t v_row_stride, int64_t rows,
                           int64_t cols, const float *alpha, float *acc, int64_t acc_row_stride,
                           attn_prefetch_stream *prefetch, const int vectors, int tail,
                           int64_t visible_limit) {
    int64_t i = 0;
    for (; i + ROW_BLOCK <= rows; i += ROW_BLOCK)
        pv_block(pt + i, v, v_row_stride, visible_cols(cols, i, ROW_BLOCK, visible_limit), alpha + i,
                 acc + i * acc_row_stride, acc_row_stride, prefetch, ROW_BLOCK, vectors, tail);
    const int rest = (int)(rows - i);
    const int64_t rest_cols = visible_cols(cols, i, rest, visible_limit);
    const float *pt_rest = pt + i, *alpha_rest = alpha + i;
    float *acc_rest = acc + i * acc_row_stride;
    switch (rest) {
    case 3: pv_block(pt_rest, v, v_row_stride, rest_cols, alpha_rest, acc_rest, acc_row_stride, prefetch, 3, vectors, tail); break;
    case 2: pv_block(pt_rest, v, v_row_stride, rest_cols, alpha_rest, acc_rest, acc_row_stride, prefetch, 2, vectors, tail); break;
    case 1: pv_block(pt_rest, v, v_row_stride, rest_cols, alpha_rest, acc_rest, acc_row_stride, prefetch, 1, vectors, tail); break;
    default: break;
    }
}

// pt [cols, QUERY_TILE] (weights, transposed), v [cols, value_dim] (row stride
// v_row_stride, any alignment), acc [rows, value_dim] (row stride acc_row_stride):
// acc = diag(alpha) acc + P V (FlashAttention-2's O update).
static void pv_tile_neon(const float *pt, const float *v, int64_t v_row_stride, int64_t rows,
                         int64_t cols, int64_t value_dim, const float *alpha, float *acc,
                         int64_t acc_row_stride, int64_t visible_limit, attn_prefetch_stream *prefetch) {
    attn_prefetch_stream stream, *local = 0;  // in registers meanwhile
    if (prefetch) {
        stream = *prefetch;
        local = &stream;
    }
    int64_t d0 = 0;
    // One or two query rows (decoding): 32 columns at once, so that 8 or 16
    // independent FMA chains hide the FMA latency. Each column's arithmetic is
    // the same whatever the block width.
    if (rows <= 2)
        for (; d0 + DECODE_VALUE_VECTORS * LANES <= value_dim; d0 += DECODE_VALUE_VECTORS * LANES) {
            if (rows == 1)
                pv_block(pt, v + d0, v_row_stride, visible_cols(cols, 0, 1, visible_limit), alpha,
                         acc + d0, acc_row_stride, local, 1, DECODE_VALUE_VECTORS, LANES);
            else
                pv_block(pt, v + d0, v_row_stride, visible_cols(cols, 0, 2, visible_limit), alpha,
                         acc + d0, acc_row_stride, local, 2, DECODE_VALUE_VECTORS, LANES);
        }
    const int64_t block_width = VALUE_VECTORS * LANES;
    for (; d0 < value_dim; d0 += block_width) {
        const int64_t width = value_dim - d0 < block_width ? value_dim - d0 : block_width;
        const int vectors = (int)((width + LANES - 1) / LANES);
        const int tail = (int)(width - (vectors - 1) * LANES);
        switch (vectors) {  // constant vector counts, so each block unrolls fully
        case 4: pv_rows(pt, v + d0, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 4, tail, visible_limit); break;
        case 3: pv_rows(pt, v + d0, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 3, tail, visible_limit); break;
        case 2: pv_rows(pt, v + d0, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 2, tail, visible_limit); break;
        default: pv_rows(pt, v + d0, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 1, tail, visible_limit); break;
        }
    }
    if (prefetch) *prefetch = stream;
}

// alpha = m_new > m ? e^(m − m_new) : 1, l = l·alpha + tile_sum, m = m_new, all [QUERY_TILE].
static void update_rows_neon(float *row_max, const float *row_max_new, float *row_sum,
                             const float *tile_sum, float *alpha, int64_t rows) {
    const int vectors = row_vectors(rows);
    for (int c = 0; c < vectors; c++) {
        const float32x4_t m = vld1q_f32(row_max + c * LANES);
        const float32x4_t m_new = vld1q_f32(row_max_new + c * LANES);
        const uint32x4_t grew = vcgtq_f32(m_new, m);
        const float32x4_t a = vbslq_f32(grew, exp_neon(vsubq_f32(m, m_new)), vdupq_n_f32(1.0f));
        vst1q_f32(alpha + c * LANES, a);
        vst1q_f32(row_sum + c * LANES,
                  vfmaq_f32(vld1q_f32(tile_sum + c * LANES), vld1q_f32(row_sum + c * LANES), a));
        vst1q_f32(row_max + c * LANES, m_new);
    }
}

// Lanes whose exponent field is all ones (NaN or ±∞).
INLINE static uint32x4_t special_lanes(float32x4_t value) {
    const uint32x4_t exponent = vdupq_n_u32(0x7F800000u);
    return vceqq_u32(vandq_u32(vreinterpretq_u32_f32(value), exponent), exponent);
}

// packed [cols, value_dim] (row stride packed_row_stride) = v with NaN and ±∞
// replaced by 0; returns 1 if there were none.
static int pack_value_neon(const float *v, int64_t v_row_stride, int64_t cols, int64_t value_dim,
                           float *packed, int64_t packed_row_stride) {
    uint32x4_t special = vdupq_n_u32(0);
    int finite = 1;
    for (int64_t j = 0; j < cols; j++) {
        const float *row = v + j * v_row_stride;
        float *out = packed + j * packed_row_stride;
        int64_t d = 0;
        for (; d + LANES <= value_dim; d += LANES) {
            const float32x4_t value = vld1q_f32(row + d);
            const uint32x4_t bad = special_lanes(value);
            special = vorrq_u32(special, bad);
            vst1q_f32(out + d, vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(value), bad)));
        }
        for (; d < value_dim; d++) {
            const int ok = isfinite(row[d]) != 0;
            finite &= ok;
            out[d] = ok ? row[d] : 0.0f;
        }
    }
    return finite && vmaxvq_u32(special) == 0;
}

// 1 if v [cols, value_dim] (row stride v_row_stride) holds no NaN or ±∞.
static int values_finite_neon(const float *v, int64_t v_row_stride, int64_t cols, int64_t value_dim) {
    uint32x4_t special = vdupq_n_u32(0);
    int finite = 1;
    for (int64_t j = 0; j < cols; j++) {
        const float *row = v + j * v_row_stride;
        int64_t d = 0;
        for (; d + LANES <= value_dim; d += LANES) special = vorrq_u32(special, special_lanes(vld1q_f32(row + d)));
        for (; d < value_dim; d++) finite &= isfinite(row[d]) != 0;
    }
    return finite && vmaxvq_u32(special) == 0;
}

// The table's entries: this path keeps lines QUERY_TILE floats apart (its
// few_rows_stride is 0), so ts is always QUERY_TILE and is not read.

static void pack_query_neon_entry(const float *q, int64_t q_row_stride, int64_t rows,
                                  int64_t head_dim, float scale, float *qt, int64_t ts) {
    (void)ts;
    pack_query_neon(q, q_row_stride, rows, head_dim, scale, qt);
}

static void qk_tile_neon_entry(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                               int64_t head_dim, int64_t rows, int64_t visible_limit, float *st,
                               int64_t ts, const float *row_max, float *row_max_new,
                               attn_prefetch_stream *prefetch) {
    (void)ts;
    qk_tile_neon(qt, k, k_row_stride, cols, head_dim, rows, visible_limit, st, row_max, row_max_new,
                 prefetch);
}

static void row_max_neon_entry(const float *st, int64_t ts, int64_t cols, int64_t rows,
                               const float *row_max, float *row_max_new, int64_t visible_limit) {
    (void)ts;
    row_max_neon(st, cols, rows, row_max, row_max_new, visible_limit);
}

static void exp_row_sum_neon_entry(float *st, int64_t ts, int64_t cols, int64_t rows,
                                   const float *row_max_new, float *tile_sum, int64_t visible_limit,
                                   int may_hold_minus_infinity) {
    (void)ts;
    exp_row_sum_neon(st, cols, rows, row_max_new, tile_sum, visible_limit, may_hold_minus_infinity);
}

static void pv_tile_neon_entry(const float *pt, int64_t ts, const float *v, int64_t v_row_stride,
                               int64_t rows, int64_t cols, int64_t value_dim, const float *alpha,
                               float *acc, int64_t acc_row_stride, int64_t visible_limit,
                               attn_prefetch_stream *prefetch) {
    (void)ts;
    pv_tile_neon(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride,
                 visible_limit, prefetch);
}

const attn_microkernels attn_microkernels_neon = {
    .name = "neon",
    .pack_query = pack_query_neon_entry,
    .qk_tile = qk_tile_neon_entry,
    .row_max = row_max_neon_entry,
    .exp_row_sum = exp_row_sum_neon_entry,
    .pv_tile = pv_tile_neon_entry,
    .update_rows = update_rows_neon,
    .pack_value = pack_value_neon,
    .values_finite = values_finite_neon,
    .widen_rows = attn_widen_rows_portable,  // 16-bit keys and values: the portable widening (microkernels.h)
};

#endif  // aarch64
