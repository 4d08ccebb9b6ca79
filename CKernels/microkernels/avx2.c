// avx2.c: the passes with AVX2 + FMA intrinsics, 8 query rows per register.
//
// With 16 ymm registers the blocks are smaller than on AVX-512: qk_tile keeps
// 3 keys × 32 query rows in 12 accumulators (the tile's 64 rows in two halves),
// pv_tile 3 query rows × 32 value columns in 12 accumulators.
#include "microkernels.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>

// Blocks take their sizes as constants: forced inlining and full unrolling keep
// every accumulator of a block in a register.
#define INLINE __attribute__((always_inline)) inline

#define AVX2 __attribute__((target("avx2,fma")))

enum {
    LANES = 8,
    HALF_VECTORS = 4,   // ymm per half line of a score tile (32 query rows)
    KEY_BLOCK = 3,      // keys per qk register block
    ROW_BLOCK = 3,      // query rows per pv register block
    VALUE_VECTORS = 4,  // ymm per pv register block: 32 value columns
    DECODE_VALUE_VECTORS = 8,  // with one query row: 64 value columns
    PANEL_GROUPS = 8,   // groups of 8 keys per qk_panels block (one query row)
};

// exp(x) for x ≤ 0 (or NaN), about 1 ulp: as exp512 in avx512.c, with 2^n built
// in the exponent field. Results below FLT_MIN (x < −87.3) flush to 0.
AVX2 INLINE static __m256 exp256(__m256 x) {
    const __m256 underflow = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_max_ps(_mm256_set1_ps(-87.3f), x);  // NaN passes: max returns its 2nd operand
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 5040.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i exponent = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 result = _mm256_mul_ps(p, _mm256_castsi256_ps(exponent));
    return _mm256_andnot_ps(underflow, result);
}

AVX2 static void pack_query_avx2(const float *q, int64_t q_row_stride, int64_t rows,
                                 int64_t head_dim, float scale, float *qt) {
    for (int64_t d = 0; d < head_dim; d++)
        for (int64_t i = 0; i < QUERY_TILE; i++)
            qt[d * QUERY_TILE + i] = i < rows ? q[i * q_row_stride + d] * scale : 0.0f;
}

AVX2 INLINE static void qk_block(const float *qt, const float *k, int64_t k_row_stride,
                                 int64_t head_dim, float *st, int attention, const int keys) {
    for (int half = 0; half < QUERY_TILE / (HALF_VECTORS * LANES); half++) {
        const int64_t lane0 = half * HALF_VECTORS * LANES;
        __m256 acc[KEY_BLOCK][HALF_VECTORS];
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < keys; r++)
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < HALF_VECTORS; c++) acc[r][c] = _mm256_setzero_ps();
        for (int64_t d = 0; d < head_dim; d++) {
            __m256 q[HALF_VECTORS];
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < HALF_VECTORS; c++)
                q[c] = _mm256_load_ps(qt + d * QUERY_TILE + lane0 + c * LANES);
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < keys; r++) {
                const __m256 key = _mm256_broadcast_ss(k + r * k_row_stride + d);
                _Pragma("clang loop unroll(full)")
                for (int c = 0; c < HALF_VECTORS; c++) acc[r][c] = _mm256_fmadd_ps(key, q[c], acc[r][c]);
            }
        }
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < keys; r++)
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < HALF_VECTORS; c++) {
                // Overflowed or infinite scores become NaN (s + 0·s), never a fake mask.
                const __m256 score = attention ? _mm256_fmadd_ps(acc[r][c], _mm256_setzero_ps(), acc[r][c])
                                               : acc[r][c];
                _mm256_store_ps(st + r * QUERY_TILE + lane0 + c * LANES, score);
            }
    }
}

AVX2 static void row_max_avx2(const float *st, int64_t cols, int64_t rows, const float *row_max,
                              float *row_max_new, int64_t visible_limit);

// Lanes of row vector c that cannot see key j (row i sees keys j < i + visible_limit).
AVX2 INLINE static __m256 causally_hidden(int64_t j, int c, int64_t visible_limit) {
    int64_t hidden = j - visible_limit - (int64_t)c * LANES + 1;
    hidden = hidden < 0 ? 0 : hidden > LANES ? LANES : hidden;
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)hidden),
                                                  _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
}

AVX2 static void qk_tile_avx2(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                              int64_t head_dim, int64_t rows, int64_t visible_limit, float *st,
                              const float *row_max, float *row_max_new,
                              attn_prefetch_stream *prefetch) {
    (void)prefetch;  // left to the hardware
    (void)visible_limit;  // every score is computed
    int64_t j = 0;
    for (; j + KEY_BLOCK <= cols; j += KEY_BLOCK)
        qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, row_max != 0, KEY_BLOCK);
    if (cols - j == 2) qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, row_max != 0, 2);
    if (cols - j == 1) qk_block(qt, k + j * k_row_stride, k_row_stride, head_dim, st + j * QUERY_TILE, row_max != 0, 1);
    if (row_max_new) row_max_avx2(st, cols, rows, row_max, row_max_new, cols);
}

AVX2 static void row_max_lines(const float *st, int64_t cols, int64_t rows, const float *row_max,
                               float *row_max_new, int64_t visible_limit) {
    const int64_t vectors = rows <= 0 ? 1 : (rows + LANES - 1) / LANES;
    for (int c = 0; c < vectors && c < QUERY_TILE / LANES; c++) {
        // A NaN score replaces the max (the last one in key order), and
        // max(s, m) keeps m once it is NaN, as in the portable pass.
        __m256 m = _mm256_load_ps(row_max + c * LANES);
        for (int64_t j = 0; j < cols; j++) {
            const __m256 s = _mm256_blendv_ps(_mm256_load_ps(st + j * QUERY_TILE + c * LANES),
                                              _mm256_set1_ps(-INFINITY),
                                              causally_hidden(j, c, visible_limit));
            m = _mm256_blendv_ps(_mm256_max_ps(s, m), s, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
        }
        _mm256_store_ps(row_max_new + c * LANES, m);
    }
}

// Tiles of at most FEW_ROWS query rows (decoding) take the softmax with keys in
// lanes, as in avx512.c: lanes 0 … 3 of 8 score lines, loaded as 128-bit pieces
// and transposed 4 × 4 within each 128-bit lane, give each row's 8 scores in one
// vector (row r, lane e: key j0 + e): one vector per 8 keys instead of one per key.
enum { FEW_ROWS = 4 };

// 4 × 4 transposes within each 128-bit lane (their own inverse).
AVX2 INLINE static void transpose4_in_lanes(__m256 r[FEW_ROWS]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    r[0] = _mm256_shuffle_ps(t0, t2, 0x44);
    r[1] = _mm256_shuffle_ps(t0, t2, 0xEE);
    r[2] = _mm256_shuffle_ps(t1, t3, 0x44);
    r[3] = _mm256_shuffle_ps(t1, t3, 0xEE);
}

// score[i] lane e = st[j0 + e][i] for lines j0 … j0 + 7 (all within st's
// KEY_TILE lines; lines past cols hold anything, and callers mask them).
AVX2 INLINE static void load_keys_in_lanes(const float *st, __m256 score[FEW_ROWS]) {
    _Pragma("clang loop unroll(full)")
    for (int e = 0; e < FEW_ROWS; e++)
        score[e] = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_load_ps(st + e * QUERY_TILE)),
                                        _mm_load_ps(st + (4 + e) * QUERY_TILE), 1);
    transpose4_in_lanes(score);
}

// Lanes of an 8-key group from key j0 that row i cannot see (j ≥ i + visible_limit),
// or that hold no key (j ≥ cols): all ones there.
AVX2 INLINE static __m256 few_rows_out(int64_t j0, int i, int64_t visible_limit, int64_t cols) {
    int64_t seen = cols - j0;
    if (visible_limit < cols && i + visible_limit - j0 < seen) seen = i + visible_limit - j0;
    seen = seen < 0 ? 0 : seen > LANES ? LANES : seen;
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 8),
                                                  _mm256_set1_epi32((int)seen)));
}

// row_max for few rows: each row's largest visible score by a tree, then
// m_new = s_max > m ? s_max : m, the sequential pass's bits unless the winner is
// ±0 or a NaN is met; then 0 is returned, for the sequential pass.
AVX2 INLINE static int row_max_few(const float *st, int64_t cols, const float *row_max,
                                   float *row_max_new, int64_t visible_limit, const int rows) {
    const __m256 minus_infinity = _mm256_set1_ps(-INFINITY);
    __m256 best[FEW_ROWS], nan = _mm256_setzero_ps();
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) best[i] = minus_infinity;
    for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
        __m256 score[FEW_ROWS];
        load_keys_in_lanes(st + j0 * QUERY_TILE, score);
        _Pragma("clang loop unroll(full)")
        for (int i = 0; i < rows; i++) {
            const __m256 s = _mm256_blendv_ps(score[i], minus_infinity, few_rows_out(j0, i, visible_limit, cols));
            nan = _mm256_or_ps(nan, _mm256_cmp_ps(s, s, _CMP_UNORD_Q));
            best[i] = _mm256_max_ps(s, best[i]);
        }
    }
    if (_mm256_movemask_ps(nan)) return 0;
    float m_new[FEW_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) {
        __m128 v = _mm_max_ps(_mm256_castps256_ps128(best[i]), _mm256_extractf128_ps(best[i], 1));
        v = _mm_max_ps(v, _mm_movehl_ps(v, v));
        v = _mm_max_ss(v, _mm_shuffle_ps(v, v, 1));
        const float s_max = _mm_cvtss_f32(v), m = row_max[i];
        if (s_max == 0.0f || m != m) return 0;
        m_new[i] = s_max > m ? s_max : m;
    }
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) row_max_new[i] = m_new[i];
    for (int i = rows; i < LANES; i++) row_max_new[i] = row_max[i];  // lanes of no row
    return 1;
}

AVX2 static void row_max_avx2(const float *st, int64_t cols, int64_t rows, const float *row_max,
                              float *row_max_new, int64_t visible_limit) {
    int done = 0;
    switch (rows) {
    case 1: done = row_max_few(st, cols, row_max, row_max_new, visible_limit, 1); break;
    case 2: done = row_max_few(st, cols, row_max, row_max_new, visible_limit, 2); break;
    case 3: done = row_max_few(st, cols, row_max, row_max_new, visible_limit, 3); break;
    case 4: done = row_max_few(st, cols, row_max, row_max_new, visible_limit, 4); break;
    default: break;
    }
    if (!done) row_max_lines(st, cols, rows, row_max, row_max_new, visible_limit);
}

// exp_row_sum for few rows: the weights with keys in lanes (exp256 on the same
// inputs, the same masks), transposed back into the score lines, and each row's
// sum taken from those lines in key order from +0, as the line pass does.
AVX2 INLINE static void exp_row_sum_few(float *st, int64_t cols, const float *row_max_new,
                                        float *tile_sum, int64_t visible_limit, const int rows) {
    const __m256 minus_infinity = _mm256_set1_ps(-INFINITY);
    const __m256 masked_weight = _mm256_set1_ps(-0.0f);
    __m256 m[FEW_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int i = 0; i < rows; i++) m[i] = _mm256_set1_ps(row_max_new[i]);
    __m128 sum = _mm_setzero_ps();
    for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
        float *lines = st + j0 * QUERY_TILE;
        __m256 score[FEW_ROWS];
        load_keys_in_lanes(lines, score);
        _Pragma("clang loop unroll(full)")
        for (int i = 0; i < FEW_ROWS; i++) {
            if (i >= rows) {
                score[i] = _mm256_setzero_ps();
                continue;
            }
            const __m256 masked = _mm256_or_ps(_mm256_cmp_ps(score[i], minus_infinity, _CMP_EQ_OQ),
                                               few_rows_out(j0, i, visible_limit, cols));
            score[i] = _mm256_blendv_ps(exp256(_mm256_sub_ps(score[i], m[i])), masked_weight, masked);
        }
        transpose4_in_lanes(score);  // score[e] half b: lanes 0 … 3 of line j0 + 4b + e
        const int64_t keys = cols - j0 < LANES ? cols - j0 : LANES;
#define FEW_ROWS_LINE(B, E)                                                                  \
        if ((B) * 4 + (E) < keys) {                                                          \
            const __m128 p = (B) ? _mm256_extractf128_ps(score[E], 1) : _mm256_castps256_ps128(score[E]); \
            _mm_store_ps(lines + ((B) * 4 + (E)) * QUERY_TILE, p);                           \
            sum = _mm_add_ps(sum, p);                                                        \
        }
        FEW_ROWS_LINE(0, 0) FEW_ROWS_LINE(0, 1) FEW_ROWS_LINE(0, 2) FEW_ROWS_LINE(0, 3)
        FEW_ROWS_LINE(1, 0) FEW_ROWS_LINE(1, 1) FEW_ROWS_LINE(1, 2) FEW_ROWS_LINE(1, 3)
#undef FEW_ROWS_LINE
    }
    _mm256_store_ps(tile_sum, _mm256_insertf128_ps(_mm256_setzero_ps(), sum, 0));  // lanes of no row: 0
}

AVX2 static void exp_row_sum_avx2(float *st, int64_t cols, int64_t rows,
                                  const float *row_max_new, float *tile_sum, int64_t visible_limit,
                                  int may_hold_minus_infinity) {
    (void)may_hold_minus_infinity;  // every cell is checked
    switch (rows) {
    case 1: exp_row_sum_few(st, cols, row_max_new, tile_sum, visible_limit, 1); return;
    case 2: exp_row_sum_few(st, cols, row_max_new, tile_sum, visible_limit, 2); return;
    case 3: exp_row_sum_few(st, cols, row_max_new, tile_sum, visible_limit, 3); return;
    case 4: exp_row_sum_few(st, cols, row_max_new, tile_sum, visible_limit, 4); return;
    default: break;
    }
    const __m256 minus_infinity = _mm256_set1_ps(-INFINITY);
    const __m256 masked_weight = _mm256_set1_ps(-0.0f);
    const int64_t vectors = rows <= 0 ? 1 : (rows + LANES - 1) / LANES;
    for (int c = 0; c < vectors && c < QUERY_TILE / LANES; c++) {
        const __m256 m = _mm256_load_ps(row_max_new + c * LANES);
        __m256 sum = _mm256_setzero_ps();
        for (int64_t j = 0; j < cols; j++) {
            float *line = st + j * QUERY_TILE + c * LANES;
            const __m256 s = _mm256_load_ps(line);
            const __m256 masked = _mm256_or_ps(_mm256_cmp_ps(s, minus_infinity, _CMP_EQ_OQ),
                                               causally_hidden(j, c, visible_limit));
            const __m256 p = _mm256_blendv_ps(exp256(_mm256_sub_ps(s, m)), masked_weight, masked);
            _mm256_store_ps(line, p);
            sum = _mm256_add_ps(sum, p);
        }
        _mm256_store_ps(tile_sum + c * LANES, sum);
    }
}

#define AVX2_F16C __attribute__((target("avx2,fma,f16c")))

// Value elements [c·8, c·8 + 8) of a row in `storage` as float32 (lanes past
// `count` are 0): float32 through maskload; 16-bit storage widened exactly as
// widen_rows widens it, in registers; a partial 16-bit vector goes through a
// zeroed buffer (a full load could run past the row's end).
AVX2_F16C INLINE static __m256 value_vector(const void *row, int c, int count, __m256i mask,
                                           const attn_storage storage) {
    if (storage == ATTN_STORAGE_F32) return _mm256_maskload_ps((const float *)row + c * LANES, mask);
    const uint16_t *in = (const uint16_t *)row + c * LANES;
    __m128i bits;
    if (count == LANES) {
        bits = _mm_loadu_si128((const __m128i *)in);
    } else {
        _Alignas(16) uint16_t part[LANES] = {0};
        for (int e = 0; e < count; e++) part[e] = in[e];
        bits = _mm_load_si128((const __m128i *)part);
    }
    if (storage == ATTN_STORAGE_F16) return _mm256_cvtph_ps(bits);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

// acc rows = alpha·acc + pt · v over `width` ≤ 8·vectors value columns (v in
// `storage`, v_row_stride in its elements); a partial last vector (tail_lanes)
// is handled with maskload/maskstore. With `special` not NULL, the lanes of the
// updated rows that are NaN or ±∞ are ORed into it.
AVX2_F16C INLINE static void pv_block(const float *pt, const void *v, int64_t v_row_stride,
                                      int64_t cols, const float *alpha, float *acc,
                                      int64_t acc_row_stride, const int rows, const int vectors,
                                      __m256i tail, int tail_lanes, const attn_storage storage,
                                      __m256i *special) {
    const int64_t element_bytes = storage == ATTN_STORAGE_F32 ? 4 : 2;
    const __m256i all = _mm256_set1_epi32(-1);
    __m256 sum[ROW_BLOCK][DECODE_VALUE_VECTORS];
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < rows; r++) {
        const __m256 rescale = _mm256_set1_ps(alpha[r]);
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++)
            sum[r][c] = _mm256_mul_ps(rescale, _mm256_maskload_ps(acc + r * acc_row_stride + c * LANES,
                                                                  c == vectors - 1 ? tail : all));
    }
    for (int64_t j = 0; j < cols; j++) {
        const char *row = (const char *)v + j * v_row_stride * element_bytes;
        __m256 value[DECODE_VALUE_VECTORS];
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++)
            value[c] = value_vector(row, c, c == vectors - 1 ? tail_lanes : LANES, c == vectors - 1 ? tail : all,
                                    storage);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) {
            const __m256 weight = _mm256_broadcast_ss(pt + j * QUERY_TILE + r);
            _Pragma("clang loop unroll(full)")
            for (int c = 0; c < vectors; c++) sum[r][c] = _mm256_fmadd_ps(weight, value[c], sum[r][c]);
        }
    }
    const __m256i exponent = _mm256_set1_epi32(0x7F800000);
    _Pragma("clang loop unroll(full)")
    for (int r = 0; r < rows; r++)
        _Pragma("clang loop unroll(full)")
        for (int c = 0; c < vectors; c++) {
            _mm256_maskstore_ps(acc + r * acc_row_stride + c * LANES, c == vectors - 1 ? tail : all, sum[r][c]);
            if (special)  // masked-off lanes hold 0: finite
                *special = _mm256_or_si256(*special, _mm256_cmpeq_epi32(
                    _mm256_and_si256(_mm256_castps_si256(sum[r][c]), exponent), exponent));
        }
}

AVX2_F16C INLINE static void pv_rows(const float *pt, const void *v, int64_t v_row_stride, int64_t rows,
                                     int64_t cols, const float *alpha, float *acc, int64_t acc_row_stride,
                                     const int vectors, __m256i tail, int tail_lanes, int64_t visible_limit,
                                     const attn_storage storage, __m256i *special) {
    int64_t i = 0;
    for (; i + ROW_BLOCK <= rows; i += ROW_BLOCK)
        pv_block(pt + i, v, v_row_stride, visible_cols(cols, i, ROW_BLOCK, visible_limit), alpha + i,
                 acc + i * acc_row_stride, acc_row_stride, ROW_BLOCK, vectors, tail, tail_lanes, storage, special);
    if (rows - i == 2)
        pv_block(pt + i, v, v_row_stride, visible_cols(cols, i, 2, visible_limit), alpha + i,
                 acc + i * acc_row_stride, acc_row_stride, 2, vectors, tail, tail_lanes, storage, special);
    if (rows - i == 1)
        pv_block(pt + i, v, v_row_stride, visible_cols(cols, i, 1, visible_limit), alpha + i,
                 acc + i * acc_row_stride, acc_row_stride, 1, vectors, tail, tail_lanes, storage, special);
}

AVX2_F16C INLINE static void pv_columns(const float *pt, const void *v, int64_t v_row_stride, int64_t rows,
                                        int64_t cols, int64_t value_dim, const float *alpha, float *acc,
                                        int64_t acc_row_stride, int64_t visible_limit,
                                        const attn_storage storage, __m256i *special) {
    const int64_t element_bytes = storage == ATTN_STORAGE_F32 ? 4 : 2;
    const char *base = (const char *)v;
    const __m256i all = _mm256_set1_epi32(-1);
    int64_t d0 = 0;
    // One query row (decoding): 64 columns at once, so that 8 independent FMA
    // chains hide the FMA latency instead of 4. Each column's arithmetic is the
    // same whatever the block width.
    if (rows == 1)
        for (; d0 + DECODE_VALUE_VECTORS * LANES <= value_dim; d0 += DECODE_VALUE_VECTORS * LANES)
            pv_block(pt, base + d0 * element_bytes, v_row_stride, visible_cols(cols, 0, 1, visible_limit), alpha,
                     acc + d0, acc_row_stride, 1, DECODE_VALUE_VECTORS, all, LANES, storage, special);
    const int64_t block_width = VALUE_VECTORS * LANES;
    for (; d0 < value_dim; d0 += block_width) {
        const int64_t width = value_dim - d0 < block_width ? value_dim - d0 : block_width;
        const int vectors = (int)((width + LANES - 1) / LANES);
        const int tail_lanes = (int)(width - (vectors - 1) * LANES);
        const __m256i tail = _mm256_cmpgt_epi32(_mm256_set1_epi32(tail_lanes),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        const char *part = base + d0 * element_bytes;
        switch (vectors) {
        case 4: pv_rows(pt, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, 4, tail, tail_lanes, visible_limit, storage, special); break;
        case 3: pv_rows(pt, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, 3, tail, tail_lanes, visible_limit, storage, special); break;
        case 2: pv_rows(pt, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, 2, tail, tail_lanes, visible_limit, storage, special); break;
        default: pv_rows(pt, part, v_row_stride, rows, cols, alpha, acc + d0, acc_row_stride, 1, tail, tail_lanes, visible_limit, storage, special); break;
        }
    }
}

AVX2_F16C static void pv_tile_avx2(const float *pt, const float *v, int64_t v_row_stride, int64_t rows,
                                   int64_t cols, int64_t value_dim, const float *alpha, float *acc,
                                   int64_t acc_row_stride, int64_t visible_limit,
                                   attn_prefetch_stream *prefetch) {
    (void)prefetch;
    pv_columns(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
               ATTN_STORAGE_F32, 0);
}

// pv_tile on the caller's value rows in their storage, widened in registers
// (the bits of widen_rows' copy), with the check of the updated rows fused in.
AVX2_F16C static int pv_tile_stored_avx2(const float *pt, const void *v, int64_t v_row_stride,
                                         attn_storage storage, int64_t rows, int64_t cols,
                                         int64_t value_dim, const float *alpha, float *acc,
                                         int64_t acc_row_stride, int64_t visible_limit,
                                         attn_prefetch_stream *prefetch) {
    (void)prefetch;  // left to the hardware
    __m256i special = _mm256_setzero_si256();
    if (storage == ATTN_STORAGE_F32)
        pv_columns(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
                   ATTN_STORAGE_F32, &special);
    else if (storage == ATTN_STORAGE_F16)
        pv_columns(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
                   ATTN_STORAGE_F16, &special);
    else
        pv_columns(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride, visible_limit,
                   ATTN_STORAGE_BF16, &special);
    return _mm256_testz_si256(special, special);
}

// Keys in panels of `width` keys (16: ATTN_KEY_LAYOUT_PANELS, 64:
// ATTN_KEY_LAYOUT_PANELS64), a few query rows: 8 keys in a row of a panel at
// head dim d are one vector, so no key is broadcast and no lane holds an absent
// query row. Each lane computes fma(q_d, k_d, ·) over d from 0, the operations
// of qk_block (a·b = b·a exactly), so the same bits, whatever the width.
//
// The first key of 8 (a multiple of 8) of a tile whose panels start at
// `panels`, `panel_bytes` apart: (key / width) panels on, (key % width) elements in.
AVX2_F16C INLINE static const char *panel_group(const char *panels, int64_t panel_bytes, int64_t width,
                                                int64_t key, const attn_storage storage) {
    return panels + key / width * panel_bytes + key % width * (storage == ATTN_STORAGE_F32 ? 4 : 2);
}

// Keys group … group + 7 (of a panel `width` keys wide) at head dim d, widened.
AVX2_F16C INLINE static __m256 panel_keys(const char *group, int64_t width, int64_t d, const attn_storage storage) {
    if (storage == ATTN_STORAGE_F32) return _mm256_loadu_ps((const float *)group + d * width);
    const __m128i bits = _mm_loadu_si128((const __m128i *)((const uint16_t *)group + d * width));
    if (storage == ATTN_STORAGE_F16) return _mm256_cvtph_ps(bits);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

// Keys [key0, key0 + keys) of a tile (keys ≤ 8·groups, key0 a multiple of 8)
// against `rows` rows: st [keys, QUERY_TILE] from key0's.
AVX2_F16C INLINE static void qk_panel_groups(const float *qt, const char *panels, int64_t panel_bytes,
                                             int64_t width, int64_t key0, int64_t keys, int64_t head_dim,
                                             float *st, attn_prefetch_stream *prefetch,
                                             const attn_storage storage, const int rows, const int groups) {
    __m256 acc[PANEL_GROUPS][4];
    const char *group[PANEL_GROUPS];
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        group[g] = panel_group(panels, panel_bytes, width, key0 + g * LANES, storage);
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) acc[g][r] = _mm256_setzero_ps();
    }
    const int lines = groups * (storage == ATTN_STORAGE_F32 ? 8 : 4);  // as many as this reads per 16 dims
    for (int64_t d = 0; d < head_dim; d++) {
        if ((d & 15) == 0) attn_prefetch_step(prefetch, lines);
        __m256 q[4];
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) q[r] = _mm256_broadcast_ss(qt + d * QUERY_TILE + r);
        _Pragma("clang loop unroll(full)")
        for (int g = 0; g < groups; g++) {
            const __m256 key = panel_keys(group[g], width, d, storage);
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < rows; r++) acc[g][r] = _mm256_fmadd_ps(q[r], key, acc[g][r]);
        }
    }
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        const int64_t group_keys = keys - g * LANES < LANES ? keys - g * LANES : LANES;
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) {
            // As in qk_block: an overflowed or infinite score becomes NaN.
            _Alignas(32) float score[LANES];
            _mm256_store_ps(score, _mm256_fmadd_ps(acc[g][r], _mm256_setzero_ps(), acc[g][r]));
            for (int64_t j = 0; j < group_keys; j++) st[(g * LANES + j) * QUERY_TILE + r] = score[j];
        }
    }
}

AVX2_F16C INLINE static void qk_panel_keys(const float *qt, const char *panels, int64_t panel_bytes,
                                           int64_t width, int64_t cols, int64_t head_dim, float *st,
                                           attn_prefetch_stream *prefetch, const attn_storage storage,
                                           const int rows) {
    // Enough FMA chains to hide the latency, few enough for 16 registers.
    const int most = rows == 1 ? 8 : rows == 2 ? 4 : 2;
    for (int64_t j0 = 0; j0 < cols; j0 += most * LANES) {
        const int64_t keys = cols - j0 < most * LANES ? cols - j0 : most * LANES;
        float *st_block = st + j0 * QUERY_TILE;
        switch ((keys + LANES - 1) / LANES) {  // never past the last panel
        case 8: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 8); break;
        case 7: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 7); break;
        case 6: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 6); break;
        case 5: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 5); break;
        case 4: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 4); break;
        case 3: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 3); break;
        case 2: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 2); break;
        default: qk_panel_groups(qt, panels, panel_bytes, width, j0, keys, head_dim, st_block, prefetch, storage, rows, 1); break;
        }
    }
}

// qt [head_dim, QUERY_TILE] (rows used), keys [cols] of a tile in panels of
// `width` (16 or 64, each a constant in its own instance) keys × head_dim from
// `panels`, panel_stride elements apart
// → st [cols, QUERY_TILE].
AVX2_F16C static void qk_panels_avx2(const float *qt, const void *panels, int64_t panel_stride, int64_t width,
                                     attn_storage storage, int64_t cols, int64_t head_dim, int64_t rows,
                                     float *st, attn_prefetch_stream *prefetch) {
    attn_prefetch_stream stream;
    if (prefetch) stream = *prefetch;  // in registers meanwhile (stores to st could alias it)
    else attn_prefetch_start(&stream, 0, 0, 0, 0);
    const char *base = panels;
    const int64_t bytes = panel_stride * (storage == ATTN_STORAGE_F32 ? 4 : 2);
#define PANEL_CASES(STORAGE, WIDTH, ROWS)                                                                       \
    switch (ROWS) {                                                                                              \
    case 1: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, &stream, STORAGE, 1); break;     \
    case 2: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, &stream, STORAGE, 2); break;     \
    case 3: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, &stream, STORAGE, 3); break;     \
    default: qk_panel_keys(qt_rows, base, bytes, WIDTH, cols, head_dim, st_rows, &stream, STORAGE, 4); break;    \
    }
#define PANEL_STORAGES(WIDTH)                                                                                    \
    if (storage == ATTN_STORAGE_F32) { PANEL_CASES(ATTN_STORAGE_F32, WIDTH, left) }                             \
    else if (storage == ATTN_STORAGE_F16) { PANEL_CASES(ATTN_STORAGE_F16, WIDTH, left) }                        \
    else { PANEL_CASES(ATTN_STORAGE_BF16, WIDTH, left) }
    // Four rows at a time; each row's lanes are computed alone, so the split changes no bit.
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
    if (prefetch) *prefetch = stream;
}

AVX2 static void update_rows_avx2(float *row_max, const float *row_max_new, float *row_sum,
                                  const float *tile_sum, float *alpha, int64_t rows) {
    const int64_t vectors = rows <= 0 ? 1 : (rows + LANES - 1) / LANES;
    for (int c = 0; c < vectors && c < QUERY_TILE / LANES; c++) {
        const __m256 m = _mm256_load_ps(row_max + c * LANES);
        const __m256 m_new = _mm256_load_ps(row_max_new + c * LANES);
        const __m256 grew = _mm256_cmp_ps(m_new, m, _CMP_GT_OQ);
        const __m256 a = _mm256_blendv_ps(_mm256_set1_ps(1.0f), exp256(_mm256_sub_ps(m, m_new)), grew);
        _mm256_store_ps(alpha + c * LANES, a);
        _mm256_store_ps(row_sum + c * LANES, _mm256_fmadd_ps(_mm256_load_ps(row_sum + c * LANES), a,
                                                             _mm256_load_ps(tile_sum + c * LANES)));
        _mm256_store_ps(row_max + c * LANES, m_new);
    }
}

// Copies a value tile to aligned scratch with NaN and ±∞ (exponent field all
// ones) replaced by 0; returns 1 if there were none.
AVX2 static int pack_value_avx2(const float *v, int64_t v_row_stride, int64_t cols, int64_t value_dim,
                                float *packed, int64_t packed_row_stride) {
    const __m256i exponent = _mm256_set1_epi32(0x7F800000);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i special = _mm256_setzero_si256();
    for (int64_t j = 0; j < cols; j++) {
        const float *row = v + j * v_row_stride;
        float *out = packed + j * packed_row_stride;
        for (int64_t d = 0; d < value_dim; d += LANES) {
            const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(value_dim - d)), lane);
            const __m256 value = _mm256_maskload_ps(row + d, lanes);
            const __m256i bad = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(value), exponent), exponent);
            special = _mm256_or_si256(special, bad);
            _mm256_store_ps(out + d, _mm256_andnot_ps(_mm256_castsi256_ps(bad), value));
        }
    }
    return _mm256_testz_si256(special, special);
}

AVX2 static int values_finite_avx2(const float *v, int64_t v_row_stride, int64_t cols,
                                   int64_t value_dim) {
    const __m256i exponent = _mm256_set1_epi32(0x7F800000);
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256i special = _mm256_setzero_si256();
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d += LANES) {
            const __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(value_dim - d)), lane);
            const __m256 value = _mm256_maskload_ps(v + j * v_row_stride + d, lanes);
            special = _mm256_or_si256(special, _mm256_cmpeq_epi32(
                _mm256_and_si256(_mm256_castps_si256(value), exponent), exponent));
        }
    return _mm256_testz_si256(special, special);
}

// 8 elements a step: F16C's conversion (every AVX2 CPU has F16C; dispatch.c
// checks it) or, for bfloat16, a zero-extension and a shift. NaN and ±∞
// (exponent field all ones) are looked for on the 16-bit bits.
__attribute__((target("avx2,fma,f16c"))) static int widen_rows_avx2(
    const uint16_t *src, int64_t src_row_stride, int64_t rows, int64_t width,
    attn_storage storage, float *dst, int64_t dst_row_stride) {
    const int64_t full = width / LANES * LANES;
    const uint16_t exponent_bits = storage == ATTN_STORAGE_F16 ? 0x7C00u : 0x7F80u;
    const __m128i exponent = _mm_set1_epi16((short)exponent_bits);
    __m128i special = _mm_setzero_si128();
    int tail_special = 0;
    for (int64_t j = 0; j < rows; j++) {
        const uint16_t *in = src + j * src_row_stride;
        float *out = dst + j * dst_row_stride;
        for (int64_t d = 0; d < full; d += LANES) {
            const __m128i bits = _mm_loadu_si128((const __m128i *)(in + d));
            special = _mm_or_si128(special, _mm_cmpeq_epi16(_mm_and_si128(bits, exponent), exponent));
            _mm256_storeu_ps(out + d, storage == ATTN_STORAGE_F16
                                          ? _mm256_cvtph_ps(bits)
                                          : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16)));
        }
        for (int64_t d = full; d < width; d++) {
            tail_special |= (in[d] & exponent_bits) == exponent_bits;
            out[d] = attn_widen_one(in[d], storage);
        }
    }
    return !tail_special && _mm_testz_si128(special, special);
}

// The table's entries: this path keeps lines QUERY_TILE floats apart (its
// few_rows_stride is 0), so ts is always QUERY_TILE and is not read.

AVX2_F16C static void pack_query_avx2_entry(const float *q, int64_t q_row_stride, int64_t rows,
                                            int64_t head_dim, float scale, float *qt, int64_t ts) {
    (void)ts;
    pack_query_avx2(q, q_row_stride, rows, head_dim, scale, qt);
}

AVX2_F16C static void qk_tile_avx2_entry(const float *qt, const float *k, int64_t k_row_stride,
                                         int64_t cols, int64_t head_dim, int64_t rows,
                                         int64_t visible_limit, float *st, int64_t ts,
                                         const float *row_max, float *row_max_new,
                                         attn_prefetch_stream *prefetch) {
    (void)ts;
    qk_tile_avx2(qt, k, k_row_stride, cols, head_dim, rows, visible_limit, st, row_max, row_max_new,
                 prefetch);
}

AVX2_F16C static void row_max_avx2_entry(const float *st, int64_t ts, int64_t cols, int64_t rows,
                                         const float *row_max, float *row_max_new,
                                         int64_t visible_limit) {
    (void)ts;
    row_max_avx2(st, cols, rows, row_max, row_max_new, visible_limit);
}

AVX2_F16C static void exp_row_sum_avx2_entry(float *st, int64_t ts, int64_t cols, int64_t rows,
                                             const float *row_max_new, float *tile_sum,
                                             int64_t visible_limit, int may_hold_minus_infinity) {
    (void)ts;
    exp_row_sum_avx2(st, cols, rows, row_max_new, tile_sum, visible_limit, may_hold_minus_infinity);
}

AVX2_F16C static void pv_tile_avx2_entry(const float *pt, int64_t ts, const float *v,
                                         int64_t v_row_stride, int64_t rows, int64_t cols,
                                         int64_t value_dim, const float *alpha, float *acc,
                                         int64_t acc_row_stride, int64_t visible_limit,
                                         attn_prefetch_stream *prefetch) {
    (void)ts;
    pv_tile_avx2(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride,
                 visible_limit, prefetch);
}

AVX2_F16C static int pv_tile_stored_avx2_entry(const float *pt, int64_t ts, const void *v,
                                               int64_t v_row_stride, attn_storage storage,
                                               int64_t rows, int64_t cols, int64_t value_dim,
                                               const float *alpha, float *acc,
                                               int64_t acc_row_stride, int64_t visible_limit,
                                               attn_prefetch_stream *prefetch) {
    (void)ts;
    return pv_tile_stored_avx2(pt, v, v_row_stride, storage, rows, cols, value_dim, alpha, acc,
                               acc_row_stride, visible_limit, prefetch);
}

AVX2_F16C static void qk_panels_avx2_entry(const float *qt, const void *panels,
                                           int64_t panel_stride, int64_t width,
                                           attn_storage storage, int64_t cols, int64_t head_dim,
                                           int64_t rows, float *st, int64_t ts,
                                           attn_prefetch_stream *prefetch) {
    (void)ts;
    qk_panels_avx2(qt, panels, panel_stride, width, storage, cols, head_dim, rows, st, prefetch);
}

const attn_microkernels attn_microkernels_avx2 = {
    .name = "avx2",
    .pack_query = pack_query_avx2_entry,
    .qk_tile = qk_tile_avx2_entry,
    .row_max = row_max_avx2_entry,
    .exp_row_sum = exp_row_sum_avx2_entry,
    .pv_tile = pv_tile_avx2_entry,
    .pv_tile_stored = pv_tile_stored_avx2_entry,
    .update_rows = update_rows_avx2,
    .pack_value = pack_value_avx2,
    .values_finite = values_finite_avx2,
    .widen_rows = widen_rows_avx2,
    .qk_panels = qk_panels_avx2_entry,
};

#endif  // x86
