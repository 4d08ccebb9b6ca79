// avx512.c: the passes with AVX-512F intrinsics, 16 query rows per register.
//
// Register blocking (ggml / BLIS style broadcast-FMA): qk_tile keeps a block of
// 6 keys × 64 query rows in 24 zmm accumulators and, per head_dim step, loads 4
// vectors of packed queries and broadcasts 6 key elements; pv_tile keeps 6 query
// rows × 64 value columns in 24 accumulators and, per key, loads 4 vectors of
// the value row and broadcasts 6 weights. Both issue 24 FMAs per 10 loads, so
// the two FMA ports stay busy.
#include "microkernels.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <stdint.h>

// Blocks take their sizes as constants: forced inlining and full unrolling keep
// every accumulator of a block in a register.
#define INLINE __attribute__((always_inline)) inline

#define AVX512 __attribute__((target("avx512f,avx2")))

enum {
    LANES = 16,
    ROW_VECTORS = QUERY_TILE / LANES,  // 4 zmm across a score-tile line
    BLOCK_ACCUMULATORS = 24,           // zmm accumulators per qk block: keys × row vectors
    MAX_BLOCK_KEYS = 24,               // keys per qk block with one row vector
    ROW_BLOCK = 6,                     // query rows per pv register block
    VALUE_VECTORS = 4,                 // zmm per pv register block: 64 value columns
    DECODE_VALUE_VECTORS = 8,          // with one or two query rows: 128 value columns
    FEW_ROWS_STRIDE = 16,              // the line stride of tiles of ≤ 16 rows (attn_tile_stride)
};

// exp(x) for x ≤ 0 (or NaN), accurate to about 1 ulp: x = n·ln2 + r with
// |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by its degree-7 Taylor polynomial
// (truncation < 6e-9 relative), and 2^n applied with scalef. Results below
// FLT_MIN (x < −87.3) are flushed to 0 rather than made denormal: a denormal
// result costs a microcode assist of ~100 cycles per vector on Intel cores.
// Used for the online-softmax rescale e^(m − m_new); the weights themselves go
// through softmax_weight below. NaN stays NaN
// (it passes the compare, and the arithmetic keeps it).
AVX512 INLINE static __m512 exp512(__m512 x) {
    // x < −87.3 (−∞ included) may take the polynomial anywhere, NaN included:
    // the final mask zeroes it.
    const __mmask16 normal = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.3f), _CMP_NLT_UQ);  // x ≥ −87.3 or NaN
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(normal, p, n);
}

// The softmax weight e^x, x = s − m ≤ 0 (or NaN), as 2^t with t = x·log₂e:
// t = n + f with n = round(t) and |f| ≤ 1/2 exact, 2^f by a degree-6
// polynomial fitted to it on [−1/2, 1/2] (relative weights, least squares on
// Chebyshev nodes; under 1 ulp in float32, and exactly 1 at f = 0), and 2^n
// applied with scalef. Two fewer operations on the FMA ports than exp512 (no
// Cody–Waite split, one term less), in the pass that runs 4096 times a tile;
// rounding t costs at most |t|·2⁻²⁴ relative, which is absolute error below
// 2⁻²⁴ for every weight. t < −126 (FLT_MIN) gives 0, as exp512 does below
// −87.3; NaN stays NaN.
AVX512 INLINE static __m512 softmax_weight(__m512 x) {
    const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f));
    const __mmask16 normal = _mm512_cmp_ps_mask(t, _mm512_set1_ps(-126.0f), _CMP_NLT_UQ);  // t ≥ −126 or NaN
    const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    const __m512 f = _mm512_sub_ps(t, n);
    __m512 p = _mm512_set1_ps(0.00015353360504377633f);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.0013398875016719103f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.00961843691766262f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.055503323674201965f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.24022647738456726f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.6931471824645996f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_maskz_scalef_ps(normal, p, n);
}

// Row vectors that hold the first `rows` query rows.
static inline int row_vectors(int64_t rows) {
    const int64_t vectors = (rows + LANES - 1) / LANES;
    return vectors < 1 ? 1 : vectors > ROW_VECTORS ? ROW_VECTORS : (int)vectors;
}

// The lanes of a 16-float vector that lie within one line of qt or st, lines
// ts floats apart (attn_tile_stride: 1, 4, 16 or QUERY_TILE).
static inline __mmask16 lanes_of_line(int64_t ts) {
    return ts < LANES ? (__mmask16)((1u << ts) - 1u) : (__mmask16)0xFFFF;
}

// A 16 × 16 block of floats transposed in registers (unpack, then shuffles
// within and across 128-bit lanes): r[i][j] becomes r[j][i].
AVX512 INLINE static void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        r[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 4; j++) {
            t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
            t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
    }
}

// Qᵀ through in-register transposes of 16 rows × 16 dims (gathers cost twice
// as much: a tenth of a 128 × 128 causal call went to them). Rows past `rows`
// are 0 up to the last row vector that holds a row; later vectors are not
// written (every pass of this path reads only row_vectors(rows) of them).
AVX512 static void pack_query_avx512(const float *q, int64_t q_row_stride, int64_t rows,
                                     int64_t head_dim, float scale, float *qt, int64_t ts) {
    const __m512 scale_vector = _mm512_set1_ps(scale);
    const __mmask16 line_lanes = lanes_of_line(ts);
    for (int c = 0; c < row_vectors(rows); c++) {
        const int64_t first = c * LANES;
        const int64_t left = rows - first;
        const int block_rows = left >= LANES ? LANES : left <= 0 ? 0 : (int)left;
        for (int64_t d0 = 0; d0 < head_dim; d0 += LANES) {
            const int64_t dims = head_dim - d0 < LANES ? head_dim - d0 : LANES;
            const __mmask16 dim_lanes = (__mmask16)((1u << dims) - 1u);
            __m512 block[LANES];
            _Pragma("clang loop unroll(full)")
            for (int j = 0; j < LANES; j++)
                block[j] = j < block_rows ? _mm512_maskz_loadu_ps(dim_lanes, q + (first + j) * q_row_stride + d0)
                                          : _mm512_setzero_ps();
            transpose16(block);  // block[dd]: dim d0 + dd of the 16 rows
            _Pragma("clang loop unroll(full)")
            for (int dd = 0; dd < LANES; dd++)  // constant indices keep the block in registers
                if (dd < dims)
                    _mm512_mask_storeu_ps(qt + (d0 + dd) * ts + first, line_lanes,
                                          _mm512_mul_ps(block[dd], scale_vector));
        }
    }
}

// st[j0 .. j0+keys)[0 .. 16·vectors) = k rows · qt; keys × vectors ≤ 24 accumulators.
AVX512 INLINE static void qk_block(const float *qt, const float *k, int64_t k_row_stride,
                                   int64_t head_dim, float *st, int64_t ts, int attention, float *running_max,
                                   const int keys, const int vectors) {
    __m512 acc[MAX_BLOCK_KEYS][ROW_VECTORS];
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < keys; r++)
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++) acc[r][c] = _mm512_setzero_ps();
    for (int64_t d = 0; d < head_dim; d++) {
        __m512 q[ROW_VECTORS];
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++) q[c] = _mm512_load_ps(qt + d * ts + c * LANES);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < keys; r++) {
            const __m512 key = _mm512_set1_ps(k[r * k_row_stride + d]);
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < vectors; c++) acc[r][c] = _mm512_fmadd_ps(key, q[c], acc[r][c]);
        }
    }
    if (attention) {
        // A score that overflowed, or met an infinite input, becomes NaN, so that
        // it cannot pass for a masked cell (−∞): s + 0·s is s when finite, NaN not.
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < keys; r++)
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < vectors; c++)
                acc[r][c] = _mm512_fmadd_ps(acc[r][c], _mm512_setzero_ps(), acc[r][c]);
    }
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < keys; r++)
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++)
            _mm512_store_ps(st + r * ts + c * LANES, acc[r][c]);
    if (!running_max) return;
    // The row max, fused while the scores are in registers. max(s, m) returns m
    // when either is NaN, so a NaN max sticks; a NaN score is blended in.
    _Pragma("clang loop unroll(full)")
    for (int c = 0; c < vectors; c++) {
        __m512 m = _mm512_load_ps(running_max + c * LANES);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < keys; r++)
            m = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(acc[r][c], acc[r][c], _CMP_UNORD_Q),
                                     _mm512_max_ps(acc[r][c], m), acc[r][c]);
        _mm512_store_ps(running_max + c * LANES, m);
    }
}

// All keys of a tile against the first `vectors` row vectors: blocks of
// 24 / vectors keys, then, for one or two vectors, of 16 / vectors keys (a 16-key group of
// a diagonal tile would otherwise go in blocks of 4 keys, whose 4 or 8 FMA
// chains cannot hide the FMA latency), then blocks of 4, 2, 1 for the rest.
AVX512 INLINE static void qk_keys(const float *qt, const float *k, int64_t k_row_stride,
                                  int64_t cols, int64_t head_dim, float *st, int64_t ts, int attention,
                                  float *running_max, const int vectors) {
    const int block = BLOCK_ACCUMULATORS / vectors;
    int64_t j = 0;
    for (; j + block <= cols; j += block)
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * ts, ts, attention, running_max, block, vectors);
    if (vectors <= 2)
        for (; j + 16 / vectors <= cols; j += 16 / vectors)
            qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * ts, ts, attention, running_max, 16 / vectors, vectors);
    for (; j + 4 <= cols; j += 4)
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * ts, ts, attention, running_max, 4, vectors);
    if (j + 2 <= cols) {
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * ts, ts, attention, running_max, 2, vectors);
        j += 2;
    }
    if (j < cols) qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * ts, ts, attention, running_max, 1, vectors);
}

// A few query rows (decoding): keys in lanes. Sixteen key rows at a time are
// transposed 16 dims at a time in registers, so each key element arrives in a
// vector load instead of a broadcast of its own. Each lane still computes
// fma(q_d, k_d, ·) over d = 0 … D−1 from 0, the very operations of the
// row-in-lanes kernel (a·b = b·a exactly), so a row's scores are bit for bit
// the same as when it shares a tile with 63 others.
//
// One query row has one FMA chain per 16 keys, 4 cycles a link: DECODE_GROUPS
// groups of 16 keys go through the head dims together, so that their chains
// interleave; their transposed blocks wait in `kt` (L1) for the FMAs.
// Tiles of at most FEW_ROWS query rows (decoding) take the softmax with keys in
// lanes: lanes 0 … 3 of 16 score lines, loaded as 128-bit pieces and
// transposed 4 × 4 within each 128-bit lane, give each row's 16 scores in one
// vector (row r, lane e: key j0 + e), so a decode step costs one vector per 16
// keys instead of one per key, with no serial max chain.
enum { FEW_ROWS = 4 };

// r[e] ↔ 4 × 4 transposes within each 128-bit lane (its own inverse): with
// r[e] block b = line 4b + e (lanes 0 … 3), r[i] lane 4b + e becomes line 4b + e, lane i.
AVX512 INLINE static void transpose4_in_lanes(__m512 r[FEW_ROWS]) {
    const __m512 t0 = _mm512_unpacklo_ps(r[0], r[1]), t1 = _mm512_unpackhi_ps(r[0], r[1]);
    const __m512 t2 = _mm512_unpacklo_ps(r[2], r[3]), t3 = _mm512_unpackhi_ps(r[2], r[3]);
    r[0] = _mm512_shuffle_ps(t0, t2, 0x44);
    r[1] = _mm512_shuffle_ps(t0, t2, 0xEE);
    r[2] = _mm512_shuffle_ps(t1, t3, 0x44);
    r[3] = _mm512_shuffle_ps(t1, t3, 0xEE);
}

// Scores of up to 4 rows with keys in lanes (score[i] lane e: key e of row i)
// stored into lanes 0 … 3 of the first `keys` score lines (lanes of no row: 0):
// sixteen 128-bit stores instead of a scatter per row.
AVX512 INLINE static void store_keys_in_lanes(float *st, int64_t ts, int64_t keys, __m512 score[FEW_ROWS]) {
    if (ts == 1) {  // one row, lines one float apart: its 16 scores are 16 lines
        _mm512_mask_storeu_ps(st, (__mmask16)(keys >= LANES ? 0xFFFF : (1u << keys) - 1u), score[0]);
        return;
    }
    transpose4_in_lanes(score);  // score[e] block b: lanes 0 … 3 of line 4b + e
#define FEW_ROWS_STORE(B, E)                                                                 \
    if ((B) * 4 + (E) < keys) _mm_store_ps(st + ((B) * 4 + (E)) * ts, _mm512_extractf32x4_ps(score[E], B));
    FEW_ROWS_STORE(0, 0) FEW_ROWS_STORE(0, 1) FEW_ROWS_STORE(0, 2) FEW_ROWS_STORE(0, 3)
    FEW_ROWS_STORE(1, 0) FEW_ROWS_STORE(1, 1) FEW_ROWS_STORE(1, 2) FEW_ROWS_STORE(1, 3)
    FEW_ROWS_STORE(2, 0) FEW_ROWS_STORE(2, 1) FEW_ROWS_STORE(2, 2) FEW_ROWS_STORE(2, 3)
    FEW_ROWS_STORE(3, 0) FEW_ROWS_STORE(3, 1) FEW_ROWS_STORE(3, 2) FEW_ROWS_STORE(3, 3)
#undef FEW_ROWS_STORE
}

enum { DECODE_GROUPS = 4, MAX_LANE_ROWS = 8 };

AVX512 INLINE static void qk_key_groups(const float *qt, const float *k, int64_t k_row_stride,
                                        int64_t keys, int64_t head_dim, float *st,
                                        int64_t ts, attn_prefetch_stream *prefetch, const int rows,
                                        const int groups, const int attention) {
    _Alignas(64) float kt[DECODE_GROUPS][LANES * LANES];
    __m512 acc[DECODE_GROUPS][MAX_LANE_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++)
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) acc[g][r] = _mm512_setzero_ps();
    for (int64_t d0 = 0; d0 < head_dim; d0 += LANES) {
        const int64_t dims = head_dim - d0 < LANES ? head_dim - d0 : LANES;
        const __mmask16 dim_lanes = (__mmask16)((1u << dims) - 1u);
        _Pragma("clang loop unroll(full)")
        for (int g = 0; g < groups; g++) {
            const float *rows_in = k + (int64_t)g * LANES * k_row_stride + d0;
            attn_prefetch_step(prefetch, LANES);  // 16 lines per 16 × 16 block: a tile's values by the end
            const int64_t group_keys = keys - g * LANES < LANES ? keys - g * LANES : LANES;
            __m512 block[LANES];
            _Pragma("clang loop unroll(full)")
            for (int j = 0; j < LANES; j++)
                block[j] = j < group_keys ? _mm512_maskz_loadu_ps(dim_lanes, rows_in + j * k_row_stride)
                                          : _mm512_setzero_ps();
            transpose16(block);  // block[dd]: dim d0 + dd of the group's 16 keys
            _Pragma("clang loop unroll(full)")
            for (int dd = 0; dd < LANES; dd++) _mm512_store_ps(kt[g] + dd * LANES, block[dd]);
        }
        for (int64_t dd = 0; dd < dims; dd++) {
            __m512 q[MAX_LANE_ROWS];
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < rows; r++) q[r] = _mm512_set1_ps(qt[(d0 + dd) * ts + r]);
            _Pragma("clang loop unroll(full)")
            for (int g = 0; g < groups; g++) {
                const __m512 key = _mm512_load_ps(kt[g] + dd * LANES);
                _Pragma("clang loop unroll(full)")
                for (int r = 0; r < rows; r++) acc[g][r] = _mm512_fmadd_ps(q[r], key, acc[g][r]);
            }
        }
    }
    const __m512i lines = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32((int)ts));
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        const int64_t group_keys = keys - g * LANES < LANES ? keys - g * LANES : LANES;
        const __mmask16 key_lanes = (__mmask16)((1u << group_keys) - 1u);
        if (rows <= FEW_ROWS) {
            __m512 score[FEW_ROWS];
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < FEW_ROWS; r++)  // as in qk_block: an overflowed or infinite score becomes NaN
                score[r] = r >= rows ? _mm512_setzero_ps()
                           : attention ? _mm512_fmadd_ps(acc[g][r], _mm512_setzero_ps(), acc[g][r]) : acc[g][r];
            store_keys_in_lanes(st + g * LANES * ts, ts, group_keys, score);
            continue;
        }
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) {
            // As in qk_block: an overflowed or infinite score becomes NaN.
            const __m512 score = attention ? _mm512_fmadd_ps(acc[g][r], _mm512_setzero_ps(), acc[g][r]) : acc[g][r];
            _mm512_mask_i32scatter_ps(st + g * LANES * ts + r, key_lanes, lines, score, 4);
        }
    }
}

// Rows 1 and 2 take four groups at a time, rows 3 and 4 two, rows 5 to 8 one:
// enough FMA chains to hide the latency, few enough to stay in registers.
// (The group count changes no bit: each lane is its own chain.)
AVX512 INLINE static void qk_keys_in_lanes(const float *qt, const float *k, int64_t k_row_stride,
                                           int64_t cols, int64_t head_dim, float *st,
                                           int64_t ts, attn_prefetch_stream *prefetch, const int rows,
                                           const int attention) {
    // The stream is kept in registers meanwhile (stores to st could alias it).
    attn_prefetch_stream stream = *prefetch, *local = &stream;
    const int most = rows <= 2 ? DECODE_GROUPS : rows <= 4 ? 2 : 1;
    const int64_t step = most * LANES;
    for (int64_t j0 = 0; j0 < cols; j0 += step) {
        const int64_t keys = cols - j0 < step ? cols - j0 : step;
        const float *k_block = k + j0 * k_row_stride;
        float *st_block = st + j0 * ts;
        switch ((keys + LANES - 1) / LANES) {
        case 4: qk_key_groups(qt, k_block, k_row_stride, keys, head_dim, st_block, ts, local, rows, 4, attention); break;
        case 3: qk_key_groups(qt, k_block, k_row_stride, keys, head_dim, st_block, ts, local, rows, 3, attention); break;
        case 2: qk_key_groups(qt, k_block, k_row_stride, keys, head_dim, st_block, ts, local, rows, 2, attention); break;
        default: qk_key_groups(qt, k_block, k_row_stride, keys, head_dim, st_block, ts, local, rows, 1, attention); break;
        }
    }
    *prefetch = stream;
}

// Keys in panels of `width` keys (16: ATTN_KEY_LAYOUT_PANELS, 64:
// ATTN_KEY_LAYOUT_PANELS64): 16 keys in a row of a panel at head dim d are one
// vector, so a decode step needs no transposes: per 16 keys and dim, one load
// (and a widening for 16-bit storage) and one FMA per query row. Each lane
// computes fma(q_d, k_d, ·) over d from 0, as qk_key_groups does, whatever the width.
//
// The first key of 16 (a multiple of 16) of a tile whose panels start at
// `panels`, `panel_bytes` apart: (key / width) panels on, (key % width) elements in.
AVX512 INLINE static const char *panel_group(const char *panels, int64_t panel_bytes, int64_t width,
                                             int64_t key, const attn_storage storage) {
    return panels + key / width * panel_bytes + key % width * (storage == ATTN_STORAGE_F32 ? 4 : 2);
}

// Keys group … group + 15 (of a panel `width` keys wide) at head dim d, widened.
AVX512 INLINE static __m512 panel_keys(const char *group, int64_t width, int64_t d, const attn_storage storage) {
    if (storage == ATTN_STORAGE_F32) return _mm512_loadu_ps((const float *)group + d * width);
    const __m256i bits = _mm256_loadu_si256((const __m256i *)((const uint16_t *)group + d * width));
    if (storage == ATTN_STORAGE_F16) return _mm512_cvtph_ps(bits);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// Keys [key0, key0 + keys) of a tile (key0 a multiple of 16, keys ≤ 16·groups)
// against `rows` rows: st [keys, QUERY_TILE] from key0's, lines ts apart.
AVX512 INLINE static void qk_panel_groups(const float *qt, const char *panels, int64_t panel_bytes,
                                          int64_t width, int64_t key0, int64_t keys, int64_t head_dim,
                                          float *st, int64_t ts, attn_prefetch_stream *prefetch,
                                          const attn_storage storage, const int rows, const int groups) {
    __m512 acc[DECODE_GROUPS][4];
    const char *group[DECODE_GROUPS];
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        group[g] = panel_group(panels, panel_bytes, width, key0 + g * LANES, storage);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) acc[g][r] = _mm512_setzero_ps();
    }
    // Lines of the other operand to fetch per 16 dims: as many as this reads.
    const int lines = groups * (storage == ATTN_STORAGE_F32 ? 16 : 8);
    for (int64_t d = 0; d < head_dim; d++) {
        if ((d & (LANES - 1)) == 0) attn_prefetch_step(prefetch, lines);
        __m512 q[4];
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) q[r] = _mm512_set1_ps(qt[d * ts + r]);
        _Pragma("clang loop unroll(full)")
        for (int g = 0; g < groups; g++) {
            const __m512 key = panel_keys(group[g], width, d, storage);
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < rows; r++) acc[g][r] = _mm512_fmadd_ps(q[r], key, acc[g][r]);
        }
    }
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        const int64_t group_keys = keys - g * LANES < LANES ? keys - g * LANES : LANES;
        __m512 score[FEW_ROWS];
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < FEW_ROWS; r++)  // as in qk_block: an overflowed or infinite score becomes NaN
            score[r] = r < rows ? _mm512_fmadd_ps(acc[g][r], _mm512_setzero_ps(), acc[g][r]) : _mm512_setzero_ps();
        store_keys_in_lanes(st + g * LANES * ts, ts, group_keys, score);
    }
}

AVX512 INLINE static void qk_panel_keys(const float *qt, const char *panels, int64_t panel_bytes,
                                        int64_t width, int64_t cols, int64_t head_dim, float *st,
                                        int64_t ts, attn_prefetch_stream *prefetch, const attn_storage storage,
                                        const int rows) {
    attn_prefetch_stream stream = *prefetch, *local = &stream;
    // A 64-key panel in one pass whatever the rows (16 accumulators at 4 rows): two passes
    // over halves of its 256-byte lines would defeat the streaming that it is for.
    const int most = rows <= 2 || width == 64 ? DECODE_GROUPS : 2;
    for (int64_t j0 = 0; j0 < cols; j0 += most * LANES) {
        const int64_t keys = cols - j0 < most * LANES ? cols - j0 : most * LANES;
        float *st_block = st + j0 * ts;
        switch ((keys + LANES - 1) / LANES) {
        case 4: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, ts, local, storage, rows, 4); break;
        case 3: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, ts, local, storage, rows, 3); break;
        case 2: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, ts, local, storage, rows, 2); break;
        default: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, ts, local, storage, rows, 1); break;
        }
    }
    *prefetch = stream;
}

// qt [head_dim, QUERY_TILE] (rows used; lines ts apart), keys [cols] of a tile in panels of
// `width` (16 or 64, each a constant in its own instance) keys × head_dim from
// `panels`, panel_stride elements apart
// → st [cols, QUERY_TILE], lines ts apart.
AVX512 static void qk_panels_avx512(const float *qt, const void *panels, int64_t panel_stride, int64_t width,
                                    attn_storage storage, int64_t cols, int64_t head_dim, int64_t rows,
                                    float *st, int64_t ts, attn_prefetch_stream *prefetch) {
    attn_prefetch_stream no_stream;
    attn_prefetch_start(&no_stream, 0, 0, 0, 0);
    if (!prefetch) prefetch = &no_stream;
    const char *base = panels;
    const int64_t bytes = panel_stride * (storage == ATTN_STORAGE_F32 ? 4 : 2);
#define PANEL_CASES(STORAGE, WIDTH, ROWS)                                                                       \
    switch (ROWS) {                                                                                              \
    case 1: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, ts, prefetch, STORAGE, 1); break;  \
    case 2: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, ts, prefetch, STORAGE, 2); break;  \
    case 3: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, ts, prefetch, STORAGE, 3); break;  \
    default: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, ts, prefetch, STORAGE, 4); break; \
    }
#define PANEL_STORAGES(WIDTH)                                                                                    \
    if (storage == ATTN_STORAGE_F32) { PANEL_CASES(ATTN_STORAGE_F32, WIDTH, left) }                             \
    else if (storage == ATTN_STORAGE_F16) { PANEL_CASES(ATTN_STORAGE_F16, WIDTH, left) }                        \
    else { PANEL_CASES(ATTN_STORAGE_BF16, WIDTH, left) }
    // Four rows at a time (more would not stay in registers); each row's lanes
    // are computed alone, so the split changes no bit.
    for (int64_t r0 = 0; r0 < rows; r0 += 4) {
        const int64_t left = rows - r0;
        const float *qt_rows = qt + r0;
        float *st_rows = st + r0;
        // The width stays a run-time value: an instance per width would double
        // this function's code (and the sanitizer builds' compile time) for one
        // multiply per head dim.
        PANEL_STORAGES(width)
    }
#undef PANEL_STORAGES
#undef PANEL_CASES
}

// Panels (of `width` keys, panel_stride elements apart) back to rows
// dst [cols, dst_row_stride]: each 16 × 16 block (16 dims × 16 keys) is
// transposed in registers into 16 keys × 16 dims.
AVX512 static void unpack_panels_avx512(const void *panels, int64_t panel_stride, int64_t width,
                                        attn_storage storage, int64_t cols, int64_t head_dim, float *dst,
                                        int64_t dst_row_stride) {
    const int64_t bytes = panel_stride * (storage == ATTN_STORAGE_F32 ? 4 : 2);
    for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
        const char *group = panel_group(panels, bytes, width, j0, storage);
        const int64_t keys = cols - j0 < LANES ? cols - j0 : LANES;
        for (int64_t d0 = 0; d0 < head_dim; d0 += LANES) {
            const int64_t dims = head_dim - d0 < LANES ? head_dim - d0 : LANES;
            const __mmask16 dim_lanes = (__mmask16)((1u << dims) - 1u);
            __m512 block[LANES];
            _Pragma("clang loop unroll(full)")
            for (int dd = 0; dd < LANES; dd++)
                block[dd] = dd < dims ? (storage == ATTN_STORAGE_F32 ? panel_keys(group, width, d0 + dd, ATTN_STORAGE_F32)
                                         : storage == ATTN_STORAGE_F16 ? panel_keys(group, width, d0 + dd, ATTN_STORAGE_F16)
                                                                       : panel_keys(group, width, d0 + dd, ATTN_STORAGE_BF16))
                                      : _mm512_setzero_ps();
            transpose16(block);  // block[j]: dims d0 … d0 + 15 of key j0 + j
            _Pragma("clang loop unroll(full)")
            for (int j = 0; j < LANES; j++)
                if (j < keys) _mm512_mask_storeu_ps(dst + (j0 + j) * dst_row_stride + d0, dim_lanes, block[j]);
        }
    }
}

// Only the row vectors that hold query rows are computed: a decode step (one
// query row) costs one vector per key instead of four. Lanes are independent,
// so a row's bits do not depend on how many other rows there are.
AVX512 static void row_max_avx512(const float *st, int64_t ts, int64_t cols, int64_t rows,
                                  const float *row_max, float *row_max_new, int64_t visible_limit);

AVX512 static void qk_tile_avx512(const float *qt, const float *k, int64_t k_row_stride,
                                  int64_t cols, int64_t head_dim, int64_t rows, int64_t visible_limit,
                                  float *st, int64_t ts, const float *row_max, float *row_max_new,
                                  attn_prefetch_stream *prefetch) {
    const int vectors = row_vectors(rows);
    attn_prefetch_stream no_stream;
    attn_prefetch_start(&no_stream, 0, 0, 0, 0);
    if (!prefetch) prefetch = &no_stream;
    // A few query rows (decoding; a projection of up to 8 rows): keys in lanes.
    if (rows >= 1 && rows <= (row_max ? 4 : MAX_LANE_ROWS)) {
        const int attention = row_max != 0;
        switch (rows) {
        case 1: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 1, attention); break;
        case 2: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 2, attention); break;
        case 3: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 3, attention); break;
        case 4: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 4, attention); break;
        case 5: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 5, 0); break;
        case 6: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 6, 0); break;
        case 7: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 7, 0); break;
        default: qk_keys_in_lanes(qt, k, k_row_stride, cols, head_dim, st, ts, prefetch, 8, 0); break;
        }
        if (row_max_new) row_max_avx512(st, ts, cols, rows, row_max, row_max_new, visible_limit);
        return;
    }
    if (visible_limit < cols) {
        // A tile on the causal diagonal: for keys j0 … j0 + 15, the row vectors
        // below row j0 − visible_limit + 1 see none of them and are left to the
        // mask pass (which writes −∞ there); only the others are computed.
        for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
            const int64_t needed_row = j0 - visible_limit + 1;
            const int first = needed_row <= 0 ? 0 : (int)(needed_row / LANES);
            if (first >= vectors) continue;
            const int64_t keys = cols - j0 < LANES ? cols - j0 : LANES;
            const float *qt_part = qt + first * LANES;
            float *st_part = st + j0 * ts + first * LANES;
            const float *k_part = k + j0 * k_row_stride;
            switch (vectors - first) {
            case 1: qk_keys(qt_part, k_part, k_row_stride, keys, head_dim, st_part, ts, row_max != 0, 0, 1); break;
            case 2: qk_keys(qt_part, k_part, k_row_stride, keys, head_dim, st_part, ts, row_max != 0, 0, 2); break;
            case 3: qk_keys(qt_part, k_part, k_row_stride, keys, head_dim, st_part, ts, row_max != 0, 0, 3); break;
            default: qk_keys(qt_part, k_part, k_row_stride, keys, head_dim, st_part, ts, row_max != 0, 0, 4); break;
            }
        }
        if (row_max_new) row_max_avx512(st, ts, cols, rows, row_max, row_max_new, visible_limit);
        return;
    }
    if (row_max_new)
        for (int c = 0; c < vectors; c++)
            _mm512_store_ps(row_max_new + c * LANES, _mm512_load_ps(row_max + c * LANES));
    if (vectors == 1) {
        // Few query rows (decoding): the tile is bandwidth-bound, and the key rows
        // are read interleaved, `block` rows at a time. Touch them in address order
        // first, so that the hardware prefetcher streams them in.
        for (int64_t j = 0; j < cols; j++)
            for (int64_t d = 0; d < head_dim; d += LANES)
                _mm_prefetch((const char *)(k + j * k_row_stride + d), _MM_HINT_T0);
    }
    switch (vectors) {
    case 1: qk_keys(qt, k, k_row_stride, cols, head_dim, st, ts, row_max != 0, row_max_new, 1); break;
    case 2: qk_keys(qt, k, k_row_stride, cols, head_dim, st, ts, row_max != 0, row_max_new, 2); break;
    case 3: qk_keys(qt, k, k_row_stride, cols, head_dim, st, ts, row_max != 0, row_max_new, 3); break;
    default: qk_keys(qt, k, k_row_stride, cols, head_dim, st, ts, row_max != 0, row_max_new, 4); break;
    }
}

// Lanes of row vector c that cannot see key j (row i sees keys j < i + visible_limit).
static inline __mmask16 causally_hidden(int64_t j, int c, int64_t visible_limit) {
    const int64_t hidden = j - visible_limit - (int64_t)c * LANES + 1;
    return hidden <= 0 ? 0 : hidden >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << hidden) - 1u);
}

// The causal mask: the keys past the last visible one of a row vector are
// hidden from all its 16 rows (the max skips them, exp stores their −0 unread),
// and the key before those from some of its lanes.
AVX512 static void row_max_lines(const float *st, int64_t ts, int64_t cols, int64_t rows,
                                 const float *row_max, float *row_max_new, int64_t visible_limit) {
    const int vectors = row_vectors(rows);
    // At a stride under 16 the lanes past it belong to the next lines: read as
    // 0, which is what the lanes of no row hold at a wider stride (qt's are 0).
    const __mmask16 line_lanes = lanes_of_line(ts);
    for (int c = 0; c < vectors; c++) {
        const int64_t seen = visible_cols(cols, c * LANES, LANES, visible_limit);
        // As in qk_block's fused max: a NaN score replaces the max (the last one
        // in key order), and max(s, m) keeps m once it is NaN, so that a row's
        // max has the same bits whichever pass takes it.
        __m512 m = _mm512_load_ps(row_max + c * LANES);
        for (int64_t j = 0; j < seen; j++) {
            const __mmask16 visible = (__mmask16)~causally_hidden(j, c, visible_limit);
            const __m512 s = _mm512_maskz_loadu_ps(line_lanes, st + j * ts + c * LANES);
            const __mmask16 nan = _mm512_mask_cmp_ps_mask(visible, s, s, _CMP_UNORD_Q);
            m = _mm512_mask_blend_ps(nan, _mm512_mask_max_ps(m, visible, s, m), s);
        }
        _mm512_store_ps(row_max_new + c * LANES, m);
    }
}

// score[i] lane e = st[j0 + e][i] for lines j0 … j0 + 15 (all within the
// KEY_TILE lines of st; lines past cols hold anything, and callers mask them).
AVX512 INLINE static void load_keys_in_lanes(const float *st, int64_t ts, __m512 score[FEW_ROWS]) {
    if (ts == 1) {  // one row: lines j0 … j0 + 15 are one vector
        score[0] = _mm512_loadu_ps(st);
        score[1] = score[2] = score[3] = _mm512_setzero_ps();
        return;
    }
    _Pragma("clang loop unroll(full)")
    for (int e = 0; e < FEW_ROWS; e++) {
        __m512 z = _mm512_castps128_ps512(_mm_load_ps(st + e * ts));
        z = _mm512_insertf32x4(z, _mm_load_ps(st + (4 + e) * ts), 1);
        z = _mm512_insertf32x4(z, _mm_load_ps(st + (8 + e) * ts), 2);
        z = _mm512_insertf32x4(z, _mm_load_ps(st + (12 + e) * ts), 3);
        score[e] = z;
    }
    transpose4_in_lanes(score);
}

// Lanes of a 16-key group from key j0 that row i cannot see (j ≥ i + visible_limit).
static inline __mmask16 few_rows_hidden(int64_t j0, int i, int64_t visible_limit, int64_t cols) {
    if (visible_limit >= cols) return 0;
    const int64_t seen = i + visible_limit - j0;
    return seen <= 0 ? (__mmask16)0xFFFF : seen >= LANES ? 0 : (__mmask16)~((1u << seen) - 1u);
}

static inline __mmask16 key_lanes_of(int64_t j0, int64_t cols) {
    const int64_t keys = cols - j0;
    return keys >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << keys) - 1u);
}

// row_max for few rows: the largest visible score of each row by a tree (no
// serial chain), then m_new = s_max > m ? s_max : m. That is the sequential
// pass's value, and its bits unless the winner is ±0 (the sequential pass
// keeps the first zero in key order) or a NaN is met (the last NaN wins): then
// 0 is returned and the sequential pass runs instead.
AVX512 INLINE static int row_max_few(const float *st, int64_t ts, int64_t cols, const float *row_max,
                                     float *row_max_new, int64_t visible_limit, const int rows) {
    const __m512 minus_infinity = _mm512_set1_ps(-INFINITY);
    __m512 best[FEW_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) best[i] = minus_infinity;
    __mmask16 nan = 0;
    for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
        __m512 score[FEW_ROWS];
        load_keys_in_lanes(st + j0 * ts, ts, score);
        const __mmask16 keys = key_lanes_of(j0, cols);
        _Pragma("clang loop unroll(full)")
        for (int i = 0; i < rows; i++) {
            const __mmask16 visible = keys & (__mmask16)~few_rows_hidden(j0, i, visible_limit, cols);
            nan |= _mm512_mask_cmp_ps_mask(visible, score[i], score[i], _CMP_UNORD_Q);
            best[i] = _mm512_mask_max_ps(best[i], visible, score[i], best[i]);
        }
    }
    if (nan) return 0;
    float m_new[FEW_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) {
        const float s_max = _mm512_reduce_max_ps(best[i]), m = row_max[i];
        if (s_max == 0.0f || m != m) return 0;
        m_new[i] = s_max > m ? s_max : m;
    }
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) row_max_new[i] = m_new[i];
    for (int i = rows; i < LANES; i++) row_max_new[i] = row_max[i];  // lanes of no row
    return 1;
}

// Only the row vectors that hold query rows are computed: a decode step (one
// query row) costs one vector per key instead of four. Lanes are independent,
// so a row's bits do not depend on how many other rows there are.
AVX512 static void row_max_avx512(const float *st, int64_t ts, int64_t cols, int64_t rows,
                                  const float *row_max, float *row_max_new, int64_t visible_limit) {
    int done = 0;
    switch (rows) {
    case 1: done = row_max_few(st, ts, cols, row_max, row_max_new, visible_limit, 1); break;
    case 2: done = row_max_few(st, ts, cols, row_max, row_max_new, visible_limit, 2); break;
    case 3: done = row_max_few(st, ts, cols, row_max, row_max_new, visible_limit, 3); break;
    case 4: done = row_max_few(st, ts, cols, row_max, row_max_new, visible_limit, 4); break;
    default: break;
    }
    if (!done) row_max_lines(st, ts, cols, rows, row_max, row_max_new, visible_limit);
}

// exp_row_sum for few rows: the weights with keys in lanes (softmax_weight on
// the same inputs, the same masks: the same bits), transposed back into the
// score lines, and each row's sum taken from those lines in key order,
// sum = sum + p_j from +0 as the line pass does (a masked key adds −0, which
// changes no bit: so keys the line pass leaves out may be added here).
AVX512 INLINE static void exp_row_sum_few(float *st, int64_t ts, int64_t cols, const float *row_max_new,
                                          float *tile_sum, int64_t visible_limit,
                                          int may_hold_minus_infinity, const int rows) {
    const __m512 minus_infinity = _mm512_set1_ps(-INFINITY);
    const __m512 masked_weight = _mm512_set1_ps(-0.0f);
    const int look_for_minus_infinity = visible_limit < cols || may_hold_minus_infinity;
    __m512 m[FEW_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) m[i] = _mm512_set1_ps(row_max_new[i]);
    __m128 sum = _mm_setzero_ps();
    for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
        float *lines = st + j0 * ts;
        __m512 score[FEW_ROWS];
        load_keys_in_lanes(lines, ts, score);
        _Pragma("clang loop unroll(full)")
        for (int i = 0; i < FEW_ROWS; i++) {
            if (i >= rows) {
                score[i] = _mm512_setzero_ps();
                continue;
            }
            // Lanes past cols are not stored; masking them keeps junk out of the arithmetic.
            __mmask16 masked = few_rows_hidden(j0, i, visible_limit, cols) | (__mmask16)~key_lanes_of(j0, cols);
            if (look_for_minus_infinity)
                masked |= _mm512_cmp_ps_mask(score[i], minus_infinity, _CMP_EQ_OQ);
            score[i] = _mm512_mask_blend_ps(masked, softmax_weight(_mm512_sub_ps(score[i], m[i])), masked_weight);
        }
        const int64_t keys = cols - j0 < LANES ? cols - j0 : LANES;
        if (rows == 1 && ts == 1) {
            // One row, lines one float apart: the 16 weights are 16 lines, stored
            // as one vector, and added to the sum in key order as below (lane 0 of
            // the 128-bit sum is this float: the same additions, the same bits).
            _mm512_mask_storeu_ps(lines, key_lanes_of(j0, cols), score[0]);
            float weights[LANES];
            _mm512_storeu_ps(weights, score[0]);
            float row_sum = _mm_cvtss_f32(sum);
            for (int64_t e = 0; e < keys; e++) row_sum = row_sum + weights[e];
            sum = _mm_set_ss(row_sum);
            continue;
        }
        transpose4_in_lanes(score);  // score[e] block b: lanes 0 … 3 of line j0 + 4b + e
#define FEW_ROWS_LINE(B, E)                                                    \
        if ((B) * 4 + (E) < keys) {                                            \
            const __m128 p = _mm512_extractf32x4_ps(score[E], B);              \
            _mm_store_ps(lines + ((B) * 4 + (E)) * ts, p);                     \
            sum = _mm_add_ps(sum, p);                                          \
        }
        FEW_ROWS_LINE(0, 0) FEW_ROWS_LINE(0, 1) FEW_ROWS_LINE(0, 2) FEW_ROWS_LINE(0, 3)
        FEW_ROWS_LINE(1, 0) FEW_ROWS_LINE(1, 1) FEW_ROWS_LINE(1, 2) FEW_ROWS_LINE(1, 3)
        FEW_ROWS_LINE(2, 0) FEW_ROWS_LINE(2, 1) FEW_ROWS_LINE(2, 2) FEW_ROWS_LINE(2, 3)
        FEW_ROWS_LINE(3, 0) FEW_ROWS_LINE(3, 1) FEW_ROWS_LINE(3, 2) FEW_ROWS_LINE(3, 3)
#undef FEW_ROWS_LINE
    }
    _mm512_store_ps(tile_sum, _mm512_zextps128_ps512(sum));  // lanes of no row: 0
}

AVX512 static void exp_row_sum_avx512(float *st, int64_t ts, int64_t cols, int64_t rows,
                                      const float *row_max_new, float *tile_sum, int64_t visible_limit,
                                      int may_hold_minus_infinity) {
    switch (rows) {
    case 1: exp_row_sum_few(st, ts, cols, row_max_new, tile_sum, visible_limit, may_hold_minus_infinity, 1); return;
    case 2: exp_row_sum_few(st, ts, cols, row_max_new, tile_sum, visible_limit, may_hold_minus_infinity, 2); return;
    case 3: exp_row_sum_few(st, ts, cols, row_max_new, tile_sum, visible_limit, may_hold_minus_infinity, 3); return;
    case 4: exp_row_sum_few(st, ts, cols, row_max_new, tile_sum, visible_limit, may_hold_minus_infinity, 4); return;
    default: break;
    }
    const __m512 minus_infinity = _mm512_set1_ps(-INFINITY);
    const __m512 masked_weight = _mm512_set1_ps(-0.0f);
    const int vectors = row_vectors(rows);
    for (int c = 0; c < vectors; c++) {
        const int64_t seen = visible_cols(cols, c * LANES, LANES, visible_limit);
        const __m512 m = _mm512_load_ps(row_max_new + c * LANES);
        __m512 sum = _mm512_setzero_ps();
        if (seen == cols && visible_limit >= cols && !may_hold_minus_infinity) {
            // No mask on this tile: no −∞ to look for (an infinite score is NaN by now).
            for (int64_t j = 0; j < cols; j++) {
                float *line = st + j * ts + c * LANES;
                const __m512 p = softmax_weight(_mm512_sub_ps(_mm512_load_ps(line), m));
                _mm512_store_ps(line, p);
                sum = _mm512_add_ps(sum, p);
            }
        }
        for (int64_t j = 0; j < seen && (visible_limit < cols || may_hold_minus_infinity); j++) {
            float *line = st + j * ts + c * LANES;
            const __m512 s = _mm512_load_ps(line);
            const __mmask16 masked = _mm512_cmp_ps_mask(s, minus_infinity, _CMP_EQ_OQ) |
                                     causally_hidden(j, c, visible_limit);
            const __m512 p = _mm512_mask_blend_ps(masked, softmax_weight(_mm512_sub_ps(s, m)), masked_weight);
            _mm512_store_ps(line, p);
            sum = _mm512_add_ps(sum, p);
        }
        // Adding −0 to the sum changes no bit, so the hidden keys add nothing.
        for (int64_t j = seen; j < cols; j++) _mm512_store_ps(st + j * ts + c * LANES, masked_weight);
        _mm512_store_ps(tile_sum + c * LANES, sum);
    }
}

// Value elements [c·16, c·16 + 16) of a row in `storage`, as float32 (lanes
// past `lanes` are 0): a plain load for float32; for 16-bit storage the exact
// widening of widen_rows (F16C's conversion, or the bfloat16 bits shifted up),
// in registers. A partial 16-bit vector goes through a zeroed buffer (a wider
// load could run past the row's end, and masked 16-bit loads need AVX512BW).
AVX512 INLINE static __m512 value_vector(const void *row, int c, __mmask16 lanes,
                                         const attn_storage storage) {
    if (storage == ATTN_STORAGE_F32) return _mm512_maskz_loadu_ps(lanes, (const float *)row + c * LANES);
    const uint16_t *in = (const uint16_t *)row + c * LANES;
    __m256i bits;
    if (lanes == (__mmask16)0xFFFF) {
        bits = _mm256_loadu_si256((const __m256i *)in);
    } else {
        _Alignas(32) uint16_t part[LANES] = {0};
        const int count = __builtin_popcount((unsigned)lanes);
        for (int e = 0; e < count; e++) part[e] = in[e];
        bits = _mm256_load_si256((const __m256i *)part);
    }
    if (storage == ATTN_STORAGE_F16) return _mm512_cvtph_ps(bits);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

// acc[i0 .. i0+ROWS)[d0 .. d0+64) = alpha·acc + pt · v, with `tail` masking the
// last vector; v in `storage` (v_row_stride in its elements). With `special`
// not NULL, the lanes of the updated rows that are NaN or ±∞ are ORed into it.
AVX512 INLINE static void pv_block(const float *pt, int64_t ts, const void *v, int64_t v_row_stride,
                                   int64_t cols, const float *alpha, float *acc,
                                   int64_t acc_row_stride, attn_prefetch_stream *prefetch,
                                   const int rows, const int vectors, __mmask16 tail,
                                   const attn_storage storage, __mmask16 *special) {
    const int64_t element_bytes = storage == ATTN_STORAGE_F32 ? 4 : 2;
    __m512 sum[ROW_BLOCK][DECODE_VALUE_VECTORS];
    // Once the row maxima settle, alpha is 1 for most blocks: x·1 = x, so the
    // rescale is left out (its multiplies run on the FMA ports).
    int settled = 1;
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < rows; r++) settled &= alpha[r] == 1.0f;
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < rows; r++) {
        const __m512 rescale = _mm512_set1_ps(alpha[r]);
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++) {
            const __mmask16 lanes = c == vectors - 1 ? tail : (__mmask16)0xFFFF;
            sum[r][c] = _mm512_maskz_loadu_ps(lanes, acc + r * acc_row_stride + c * LANES);
            if (!settled) sum[r][c] = _mm512_mul_ps(rescale, sum[r][c]);
        }
    }
    for (int64_t j = 0; j < cols; j++) {
        // As many lines of the other operand per key as this block reads (the
        // stream is the next tile's values: as many lines, in as many keys).
        attn_prefetch_step(prefetch, vectors * (int)element_bytes / 4 > 0 ? vectors * (int)element_bytes / 4 : 1);
        const char *row = (const char *)v + j * v_row_stride * element_bytes;
        __m512 value[DECODE_VALUE_VECTORS];
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++) {
            const __mmask16 lanes = c == vectors - 1 ? tail : (__mmask16)0xFFFF;
            value[c] = value_vector(row, c, lanes, storage);
        }
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) {
            const __m512 weight = _mm512_set1_ps(pt[j * ts + r]);
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < vectors; c++) sum[r][c] = _mm512_fmadd_ps(weight, value[c], sum[r][c]);
        }
    }
    const __m512i exponent = _mm512_set1_epi32(0x7F800000);
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < rows; r++)
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++) {
            const __mmask16 lanes = c == vectors - 1 ? tail : (__mmask16)0xFFFF;
            _mm512_mask_storeu_ps(acc + r * acc_row_stride + c * LANES, lanes, sum[r][c]);
            if (special)
                *special |= _mm512_mask_cmpeq_epi32_mask(
                    lanes, _mm512_and_si512(_mm512_castps_si512(sum[r][c]), exponent), exponent);
        }
}

AVX512 INLINE static void pv_rows(const float *pt, int64_t ts, const void *v, int64_t v_row_stride,
                                  int64_t rows, int64_t cols, const float *alpha, float *acc,
                                  int64_t acc_row_stride, attn_prefetch_stream *prefetch,
                                  const int vectors, __mmask16 tail, int64_t visible_limit,
                                  const attn_storage storage, __mmask16 *special) {
    int64_t i = 0;
    for (; i + ROW_BLOCK <= rows; i += ROW_BLOCK)
        pv_block(pt + i, ts, v, v_row_stride, visible_cols(cols, i, ROW_BLOCK, visible_limit), alpha + i,
                 acc + i * acc_row_stride, acc_row_stride, prefetch, ROW_BLOCK, vectors, tail, storage, special);
    const int rest = (int)(rows - i);
    const int64_t rest_cols = visible_cols(cols, i, rest, visible_limit);
    const float *pt_rest = pt + i, *alpha_rest = alpha + i;
    float *acc_rest = acc + i * acc_row_stride;
#define PV_REST(ROWS)                                                                                    \
    pv_block(pt_rest, ts, v, v_row_stride, rest_cols, alpha_rest, acc_rest, acc_row_stride, prefetch, ROWS, \
             vectors, tail, storage, special)
    switch (rest) {  // the remaining rows in one block of constant size
    case 5: PV_REST(5); break;
    case 4: PV_REST(4); break;
    case 3: PV_REST(3); break;
    case 2: PV_REST(2); break;
    case 1: PV_REST(1); break;
    default: break;
    }
#undef PV_REST
}

AVX512 INLINE static void pv_columns(const float *pt, int64_t ts, const void *v, int64_t v_row_stride,
                                     int64_t rows, int64_t cols, int64_t value_dim,
                                     const float *alpha, float *acc, int64_t acc_row_stride,
                                     int64_t visible_limit, attn_prefetch_stream *local,
                                     const attn_storage storage, __mmask16 *special) {
    const int64_t element_bytes = storage == ATTN_STORAGE_F32 ? 4 : 2;
    const char *base = (const char *)v;
    int64_t d0 = 0;
    // One or two query rows (decoding): 128 columns at once, so that 8 or 16
    // independent FMA chains hide the FMA latency instead of 4. Each column's
    // arithmetic is the same whatever the block width.
    if (rows <= 2)
        for (; d0 + DECODE_VALUE_VECTORS * LANES <= value_dim; d0 += DECODE_VALUE_VECTORS * LANES) {
            if (rows == 1)
                pv_block(pt, ts, base + d0 * element_bytes, v_row_stride, visible_cols(cols, 0, 1, visible_limit),
                         alpha, acc + d0, acc_row_stride, local, 1, DECODE_VALUE_VECTORS, 0xFFFF, storage, special);
            else
                pv_block(pt, ts, base + d0 * element_bytes, v_row_stride, visible_cols(cols, 0, 2, visible_limit),
                         alpha, acc + d0, acc_row_stride, local, 2, DECODE_VALUE_VECTORS, 0xFFFF, storage, special);
        }
    const int64_t block_width = VALUE_VECTORS * LANES;
    for (; d0 < value_dim; d0 += block_width) {
        const int64_t width = value_dim - d0 < block_width ? value_dim - d0 : block_width;
        const int vectors = (int)((width + LANES - 1) / LANES);
        const int tail_lanes = (int)(width - (vectors - 1) * LANES);
        const __mmask16 tail = (__mmask16)((1u << tail_lanes) - 1u);
        const char *part = base + d0 * element_bytes;
        switch (vectors) {  // constant vector counts, so each block unrolls fully
        case 4: pv_rows(pt, ts, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 4, tail, visible_limit, storage, special); break;
        case 3: pv_rows(pt, ts, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 3, tail, visible_limit, storage, special); break;
        case 2: pv_rows(pt, ts, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 2, tail, visible_limit, storage, special); break;
        default: pv_rows(pt, ts, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, local, 1, tail, visible_limit, storage, special); break;
        }
    }
}

// Without a stream the blocks are built with none, so that no key pays a test.
AVX512 static void pv_tile_avx512(const float *pt, int64_t ts, const float *v, int64_t v_row_stride,
                                  int64_t rows, int64_t cols, int64_t value_dim,
                                  const float *alpha, float *acc, int64_t acc_row_stride,
                                  int64_t visible_limit, attn_prefetch_stream *prefetch) {
    if (!prefetch) {
        pv_columns(pt, ts, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit, 0,
                   ATTN_STORAGE_F32, 0);
        return;
    }
    attn_prefetch_stream stream = *prefetch;  // in registers meanwhile
    pv_columns(pt, ts, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit, &stream,
               ATTN_STORAGE_F32, 0);
    *prefetch = stream;
}

// pv_tile on the caller's value rows in their storage, widened in registers
// (the bits of widen_rows' copy), with the check of the updated rows fused in.
AVX512 static int pv_tile_stored_avx512(const float *pt, int64_t ts, const void *v, int64_t v_row_stride,
                                        attn_storage storage, int64_t rows, int64_t cols,
                                        int64_t value_dim, const float *alpha, float *acc,
                                        int64_t acc_row_stride, int64_t visible_limit,
                                        attn_prefetch_stream *prefetch) {
    attn_prefetch_stream stream;
    if (prefetch) stream = *prefetch;
    else attn_prefetch_start(&stream, 0, 0, 0, 0);
    __mmask16 special = 0;
    if (storage == ATTN_STORAGE_F32)
        pv_columns(pt, ts, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
                   &stream, ATTN_STORAGE_F32, &special);
    else if (storage == ATTN_STORAGE_F16)
        pv_columns(pt, ts, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
                   &stream, ATTN_STORAGE_F16, &special);
    else
        pv_columns(pt, ts, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
                   &stream, ATTN_STORAGE_BF16, &special);
    if (prefetch) *prefetch = stream;
    return special == 0;
}

AVX512 static void update_rows_avx512(float *row_max, const float *row_max_new, float *row_sum,
                                      const float *tile_sum, float *alpha, int64_t rows) {
    const int vectors = row_vectors(rows);
    for (int c = 0; c < vectors; c++) {
        const __m512 m = _mm512_load_ps(row_max + c * LANES);
        const __m512 m_new = _mm512_load_ps(row_max_new + c * LANES);
        const __mmask16 grew = _mm512_cmp_ps_mask(m_new, m, _CMP_GT_OQ);
        const __m512 a = _mm512_mask_blend_ps(grew, _mm512_set1_ps(1.0f), exp512(_mm512_sub_ps(m, m_new)));
        _mm512_store_ps(alpha + c * LANES, a);
        _mm512_store_ps(row_sum + c * LANES, _mm512_fmadd_ps(_mm512_load_ps(row_sum + c * LANES), a,
                                                             _mm512_load_ps(tile_sum + c * LANES)));
        _mm512_store_ps(row_max + c * LANES, m_new);
    }
}

// Copies a value tile to 64-byte-aligned scratch (the caller's rows are rarely
// aligned, and every unaligned 64-byte load in pv_tile would split a cache
// line). NaN and ±∞ (exponent field all ones) are looked for on the way; only a
// tile that has them is copied again with them replaced by 0.
AVX512 static int pack_value_avx512(const float *v, int64_t v_row_stride, int64_t cols,
                                    int64_t value_dim, float *packed, int64_t packed_row_stride) {
    const __m512i exponent = _mm512_set1_epi32(0x7F800000);
    const int64_t full = value_dim / LANES * LANES;
    const int tail = (int)(value_dim - full);
    const __mmask16 tail_lanes = (__mmask16)((1u << tail) - 1u);
    __mmask16 special = 0;
    for (int64_t j = 0; j < cols; j++) {
        const float *row = v + j * v_row_stride;
        float *out = packed + j * packed_row_stride;
        for (int64_t d = 0; d < full; d += LANES) {
            const __m512 value = _mm512_loadu_ps(row + d);
            special |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(value), exponent), exponent);
            _mm512_store_ps(out + d, value);
        }
        if (tail) {
            const __m512 value = _mm512_maskz_loadu_ps(tail_lanes, row + full);
            special |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(value), exponent), exponent);
            _mm512_store_ps(out + full, value);
        }
    }
    if (special == 0) return 1;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d++) {
            const float value = v[j * v_row_stride + d];
            packed[j * packed_row_stride + d] = isfinite(value) ? value : 0.0f;
        }
    return 0;
}

AVX512 static int values_finite_avx512(const float *v, int64_t v_row_stride, int64_t cols,
                                       int64_t value_dim) {
    const __m512i exponent = _mm512_set1_epi32(0x7F800000);
    __mmask16 special = 0;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d += LANES) {
            const int64_t left = value_dim - d;
            const __mmask16 lanes = left >= LANES ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
            const __m512 value = _mm512_maskz_loadu_ps(lanes, v + j * v_row_stride + d);
            special |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(value), exponent), exponent);
        }
    return special == 0;
}

// 16 elements a step: F16C's conversion (exact, subnormals included) or, for
// bfloat16, a zero-extension and a shift; the tail of a row in scalar code.
// NaN and ±∞ (exponent field all ones) are looked for on the 16-bit bits.
AVX512 static int widen_rows_avx512(const uint16_t *src, int64_t src_row_stride, int64_t rows,
                                    int64_t width, attn_storage storage, float *dst,
                                    int64_t dst_row_stride) {
    const int64_t full = width / LANES * LANES;
    const uint16_t exponent_bits = storage == ATTN_STORAGE_F16 ? 0x7C00u : 0x7F80u;
    const __m256i exponent = _mm256_set1_epi16((short)exponent_bits);
    __m256i special = _mm256_setzero_si256();
    int tail_special = 0;
    for (int64_t j = 0; j < rows; j++) {
        const uint16_t *in = src + j * src_row_stride;
        float *out = dst + j * dst_row_stride;
        if (storage == ATTN_STORAGE_F16) {
            for (int64_t d = 0; d < full; d += LANES) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(in + d));
                special = _mm256_or_si256(special, _mm256_cmpeq_epi16(_mm256_and_si256(bits, exponent), exponent));
                _mm512_storeu_ps(out + d, _mm512_cvtph_ps(bits));
            }
        } else {
            for (int64_t d = 0; d < full; d += LANES) {
                const __m256i bits = _mm256_loadu_si256((const __m256i *)(in + d));
                special = _mm256_or_si256(special, _mm256_cmpeq_epi16(_mm256_and_si256(bits, exponent), exponent));
                _mm512_storeu_ps(out + d, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16)));
            }
        }
        for (int64_t d = full; d < width; d++) {
            tail_special |= (in[d] & exponent_bits) == exponent_bits;
            out[d] = attn_widen_one(in[d], storage);
        }
    }
    return !tail_special && _mm256_testz_si256(special, special);
}

const attn_microkernels attn_microkernels_avx512 = {
    .name = "avx512",
    .pack_query = pack_query_avx512,
    .qk_tile = qk_tile_avx512,
    .row_max = row_max_avx512,
    .exp_row_sum = exp_row_sum_avx512,
    .pv_tile = pv_tile_avx512,
    .pv_tile_stored = pv_tile_stored_avx512,
    .update_rows = update_rows_avx512,
    .pack_value = pack_value_avx512,
    .values_finite = values_finite_avx512,
    .widen_rows = widen_rows_avx512,
    .qk_panels = qk_panels_avx512,
    .unpack_panels = unpack_panels_avx512,
    .few_rows_stride = FEW_ROWS_STRIDE,
};

#endif  // x86
