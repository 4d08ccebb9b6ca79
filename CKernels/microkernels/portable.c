// portable.c: plain C passes for any CPU, and the baseline the ISA-specific
// paths are checked against. Loops run across query rows (the lanes) innermost,
// where every lane is an independent sum, so the compiler can vectorise them
// without reassociating anything.
#include "microkernels.h"

#include <math.h>

static void pack_query_portable(const float *q, int64_t q_row_stride, int64_t rows,
                                int64_t head_dim, float scale, float *qt) {
    for (int64_t d = 0; d < head_dim; d++)
        for (int64_t i = 0; i < QUERY_TILE; i++)
            qt[d * QUERY_TILE + i] = i < rows ? q[i * q_row_stride + d] * scale : 0.0f;
}

static void row_max_portable(const float *st, int64_t cols, int64_t rows, const float *row_max,
                             float *row_max_new, int64_t visible_limit);

static void qk_tile_portable(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                             int64_t head_dim, int64_t rows, int64_t visible_limit, float *st,
                             const float *row_max, float *row_max_new,
                             attn_prefetch_stream *prefetch) {
    (void)visible_limit;  // every score is computed
    (void)prefetch;       // left to the hardware
    for (int64_t j = 0; j < cols; j++) {
        float *s = st + j * QUERY_TILE;
        for (int64_t i = 0; i < QUERY_TILE; i++) s[i] = 0.0f;
        for (int64_t d = 0; d < head_dim; d++) {
            const float key = k[j * k_row_stride + d];
            const float *q = qt + d * QUERY_TILE;
            for (int64_t i = 0; i < QUERY_TILE; i++) s[i] += key * q[i];
        }
    }
    if (row_max)  // attention: overflowed or infinite scores become NaN (s + 0·s), never a fake mask
        for (int64_t j = 0; j < cols; j++)
            for (int64_t i = 0; i < QUERY_TILE; i++) st[j * QUERY_TILE + i] += 0.0f * st[j * QUERY_TILE + i];
    if (row_max_new) row_max_portable(st, cols, rows, row_max, row_max_new, cols);
}

static void row_max_portable(const float *st, int64_t cols, int64_t rows, const float *row_max,
                             float *row_max_new, int64_t visible_limit) {
    (void)rows;
    for (int64_t i = 0; i < QUERY_TILE; i++) row_max_new[i] = row_max[i];
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < QUERY_TILE; i++) {
            if (j >= i + visible_limit) continue;  // causally masked
            const float s = st[j * QUERY_TILE + i];
            // NaN wins, and stays: nothing compares greater than NaN.
            if (s > row_max_new[i] || s != s) row_max_new[i] = s;
        }
}

static void exp_row_sum_portable(float *st, int64_t cols, int64_t rows,
                                 const float *row_max_new, float *tile_sum, int64_t visible_limit,
                                 int may_hold_minus_infinity) {
    (void)may_hold_minus_infinity;  // every cell is checked
    (void)rows;
    for (int64_t i = 0; i < QUERY_TILE; i++) tile_sum[i] = 0.0f;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t i = 0; i < QUERY_TILE; i++) {
            float *s = st + j * QUERY_TILE + i;
            const int masked = *s == -INFINITY || j >= i + visible_limit;
            *s = masked ? -0.0f : expf(*s - row_max_new[i]);
            tile_sum[i] += *s;
        }
}

static void pv_tile_portable(const float *pt, const float *v, int64_t v_row_stride, int64_t rows,
                             int64_t cols, int64_t value_dim, const float *alpha, float *acc,
                             int64_t acc_row_stride, int64_t visible_limit,
                             attn_prefetch_stream *prefetch) {
    (void)visible_limit;  // the plain loop visits every key; masked weights add nothing
    (void)prefetch;
    for (int64_t i = 0; i < rows; i++) {
        float *acc_row = acc + i * acc_row_stride;
        for (int64_t d = 0; d < value_dim; d++) acc_row[d] *= alpha[i];
        for (int64_t j = 0; j < cols; j++) {
            const float weight = pt[j * QUERY_TILE + i];
            const float *v_row = v + j * v_row_stride;
            for (int64_t d = 0; d < value_dim; d++) acc_row[d] += weight * v_row[d];
        }
    }
}

static void update_rows_portable(float *row_max, const float *row_max_new, float *row_sum,
                                 const float *tile_sum, float *alpha, int64_t rows) {
    for (int64_t i = 0; i < rows; i++) {
        alpha[i] = row_max_new[i] > row_max[i] ? expf(row_max[i] - row_max_new[i]) : 1.0f;
        row_sum[i] = row_sum[i] * alpha[i] + tile_sum[i];
        row_max[i] = row_max_new[i];
    }
}

static int pack_value_portable(const float *v, int64_t v_row_stride, int64_t cols,
                               int64_t value_dim, float *packed, int64_t packed_row_stride) {
    int finite = 1;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d++) {
            const float value = v[j * v_row_stride + d];
            const int ok = isfinite(value) != 0;
            finite &= ok;
            packed[j * packed_row_stride + d] = ok ? value : 0.0f;
        }
    return finite;
}

static int values_finite_portable(const float *v, int64_t v_row_stride, int64_t cols,
                                  int64_t value_dim) {
    int finite = 1;
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d++) finite &= isfinite(v[j * v_row_stride + d]) != 0;
    return finite;
}

int attn_widen_rows_portable(const uint16_t *src, int64_t src_row_stride, int64_t rows,
                             int64_t width, attn_storage storage, float *dst,
                             int64_t dst_row_stride) {
    // NaN or ±∞: the exponent field all ones (F16: 5 bits, BF16: 8 bits).
    const unsigned exponent = storage == ATTN_STORAGE_F16 ? 0x7C00u : 0x7F80u;
    unsigned special = 0;
    for (int64_t j = 0; j < rows; j++)
        for (int64_t d = 0; d < width; d++) {
            const uint16_t bits = src[j * src_row_stride + d];
            special |= (bits & exponent) == exponent;
            dst[j * dst_row_stride + d] = attn_widen_one(bits, storage);
        }
    return !special;
}

// The table's entries: this path keeps lines QUERY_TILE floats apart (its
// few_rows_stride is 0), so ts is always QUERY_TILE and is not read.

static void pack_query_portable_entry(const float *q, int64_t q_row_stride, int64_t rows,
                                      int64_t head_dim, float scale, float *qt, int64_t ts) {
    (void)ts;
    pack_query_portable(q, q_row_stride, rows, head_dim, scale, qt);
}

static void qk_tile_portable_entry(const float *qt, const float *k, int64_t k_row_stride,
                                   int64_t cols, int64_t head_dim, int64_t rows,
                                   int64_t visible_limit, float *st, int64_t ts,
                                   const float *row_max, float *row_max_new,
                                   attn_prefetch_stream *prefetch) {
    (void)ts;
    qk_tile_portable(qt, k, k_row_stride, cols, head_dim, rows, visible_limit, st, row_max,
                     row_max_new, prefetch);
}

static void row_max_portable_entry(const float *st, int64_t ts, int64_t cols, int64_t rows,
                                   const float *row_max, float *row_max_new,
                                   int64_t visible_limit) {
    (void)ts;
    row_max_portable(st, cols, rows, row_max, row_max_new, visible_limit);
}

static void exp_row_sum_portable_entry(float *st, int64_t ts, int64_t cols, int64_t rows,
                                       const float *row_max_new, float *tile_sum,
                                       int64_t visible_limit, int may_hold_minus_infinity) {
    (void)ts;
    exp_row_sum_portable(st, cols, rows, row_max_new, tile_sum, visible_limit,
                         may_hold_minus_infinity);
}

static void pv_tile_portable_entry(const float *pt, int64_t ts, const float *v,
                                   int64_t v_row_stride, int64_t rows, int64_t cols,
                                   int64_t value_dim, const float *alpha, float *acc,
                                   int64_t acc_row_stride, int64_t visible_limit,
                                   attn_prefetch_stream *prefetch) {
    (void)ts;
    pv_tile_portable(pt, v, v_row_stride, rows, cols, value_dim, alpha, acc, acc_row_stride,
                     visible_limit, prefetch);
}

const attn_microkernels attn_microkernels_portable = {
    .name = "portable",
    .pack_query = pack_query_portable_entry,
    .qk_tile = qk_tile_portable_entry,
    .row_max = row_max_portable_entry,
    .exp_row_sum = exp_row_sum_portable_entry,
    .pv_tile = pv_tile_portable_entry,
    .update_rows = update_rows_portable,
    .pack_value = pack_value_portable,
    .values_finite = values_finite_portable,
    .widen_rows = attn_widen_rows_portable,
};
