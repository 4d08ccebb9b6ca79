// microkernels.h: the ISA-specific passes over one score tile, behind one table.
//
// The scheduling loop in sdpa.c owns tiles, masks and the online-softmax
// bookkeeping; the functions here do the arithmetic of one query tile against
// one key/value tile. Scores are kept transposed, st[j][i] for key j and query
// row i, with QUERY_TILE query rows across (one line per key, its stride set
// by attn_tile_stride: see "Line stride" below): the row
// statistics of the softmax (max, sum) then run down columns, lane by lane,
// with no horizontal reductions, and a row's arithmetic is the same whichever
// lane it occupies.
//
//   pack_query:  qt[d][i]   = scale · q[i][d]                       (once per task)
//   qk_tile:     st[j][i]   = Σ_d k[j][d] · qt[d][i]               (FlashAttention-2 S = Q Kᵀ)
//                For attention (row_max not NULL) a score that is ±∞ — an overflow or
//                an infinite input — becomes NaN, so that it cannot pass for a masked
//                cell; if row_max_new is not NULL, the row_max pass is fused in (for
//                tiles that need no mask). linear.c passes NULL for both. Row i sees
//                keys j < i + visible_limit (cols or more: all); scores it cannot see
//                may be left unwritten, for the mask pass to overwrite with −∞.
//   row_max:     m_new[i]   = max(m[i], max_j st[j][i]), NaN wins
//   exp_row_sum: st[j][i]   = exp(st[j][i] − m_new[i]) (−0 where st = −∞),
//                sum[i]     = Σ_j st[j][i]
//                may_hold_minus_infinity = 0 says no cell is −∞ (no explicit mask;
//                qk_tile has turned infinite scores into NaN), so none is looked for.
//                Both apply the causal mask: cells past a row's visible_limit
//                (j ≥ i + visible_limit) are −∞ whatever they hold, unread or
//                left out of the max, and exp_row_sum stores −0 there.
//   pv_tile:     acc[i][:]  = alpha[i] · acc[i][:] + Σ_j st[j][i] · v[j][:]
//                (O = diag(e^(m − m_new)) O + P V; alpha is 1 where the max did not grow)
//                Row i may skip keys j ≥ i + visible_limit, which are masked (weight −0,
//                so skipping them changes no bit); visible_limit ≥ cols means none.
//                v may be the caller's rows (any alignment) or pack_value's copy.
//   pv_tile_stored: pv_tile for decoding tiles on the caller's value rows as they are
//                stored (`storage`; v_row_stride in elements, any alignment): 16-bit
//                values widened in registers exactly as widen_rows widens them, so the
//                bits of pv_tile on widen_rows' copy. Returns 1 if every updated element
//                of acc (rows × value_dim) is finite; 0 if not, and then acc holds
//                garbage: the caller restores it and takes the widen/pack way, which
//                gives NaN and ±∞ values their meaning. (A non-finite value, an
//                overflow, a NaN weight or a non-finite acc all leave some updated
//                element non-finite: w·±∞ is ±∞ or NaN for every w.) NULL where a path
//                has none: sdpa.c widens into scratch first.
//   update_rows: alpha[i] = m_new[i] > m[i] ? e^(m[i] − m_new[i]) : 1,
//                l[i] = l[i]·alpha[i] + sum[i], m[i] = m_new[i]   (the online-softmax step)
//   pack_value:  a value tile copied to aligned scratch with NaN and ±∞ replaced
//                by 0; returns 1 if there were none
//   values_finite: 1 if a value tile holds no NaN or ±∞ (then pv_tile may read it
//                in place: the bits are those of pack_value's copy)
//   widen_rows:  dst[j][d] = float32(src[j][d]) for 16-bit keys or values
//                (ATTN_STORAGE_F16: IEEE binary16, subnormals included, NaN kept
//                NaN with its payload and the quiet bit set; ATTN_STORAGE_BF16: the
//                bits shifted up by 16). Exact: every 16-bit value is a float32.
//                Returns 1 if no element is NaN or ±∞ (so pv_tile may read dst in place).
//                Every path may use the portable one (attn_widen_rows_portable).
//   qk_panels:   qk_tile for attention (any rows, 4 at a time) on keys in panels of
//                `width` keys (16: ATTN_KEY_LAYOUT_PANELS or 64: ATTN_KEY_LAYOUT_PANELS64;
//                `cols` keys from a panel boundary, in `storage`; panels
//                `panel_stride` elements apart): key j, dim d of the tile at element
//                (j / width)·panel_stride + d·width + j % width. Each lane one key,
//                fma(q_d, k_d, ·) over d from 0, the very operations of qk_tile, so
//                the same bits. No fused row max. NULL where a path has none: sdpa.c
//                then unpacks the panels into rows.
//   unpack_panels: keys in panels of `width` keys (addressed as for qk_panels;
//                from a panel boundary, `cols` keys) as float32 rows
//                [cols, dst_row_stride], widened: for tiles of many rows, whose
//                row-in-lanes product beats qk_panels. NULL: sdpa.c's scalar loop.
//
// Line stride. Lines of qt (one per head dim) and st (one per key) are
// attn_tile_stride(kernels, rows) floats apart: QUERY_TILE, except that a
// table with few_rows_stride = 16 packs tiles of at most 16 rows 16 floats (one
// cache line) apart, tiles of 2 to 4 rows 4 floats (16 bytes) apart, and a
// tile of one row (a decode step) 1 float apart, so that its scores are one
// contiguous line. Every pass of such a tile reads and writes only lanes
// 0 … 15 of a line (0 … 3 at stride 4: the passes of ≤ 4 rows move 128-bit
// pieces; at stride 1 they move one vector of 16 keys; a 16-lane load or store
// masks the lanes past the stride), so nothing but the layout changes, no bit
// of any result.
//
// qk_tile and pv_tile take an optional prefetch stream (NULL for none), which
// they advance as they go; a path may ignore it.
//
// qk_tile, row_max and exp_row_sum may skip lanes at or past `rows` (they hold
// no query row), but must give every lane below it the same bits whatever
// `rows` is: a row's result may not depend on how many rows share its tile.
// Row strides are in floats; the innermost dimension of q, k, v and acc is
// contiguous. A table is chosen once per process from the CPU's features (see
// dispatch.c) and can be forced with ATTENTION_KERNEL_PATH.
#ifndef CATTENTION_MICROKERNELS_H
#define CATTENTION_MICROKERNELS_H

#include "../include/attention.h"

#include <stdint.h>

enum {
    // Query rows per tile, the lane dimension of every score tile: 4 AVX-512,
    // 8 AVX2 or 16 NEON registers across. A score tile (KEY_TILE × QUERY_TILE floats, 16 KiB)
    // and the packed queries (head_dim × QUERY_TILE, 16 KiB at head_dim = 64)
    // share a 48 KiB L1 data cache with the streaming key rows.
    QUERY_TILE = 64,
    // Keys per tile. Part of the numerical contract: it fixes the order of the
    // online-softmax updates, so it is a compile-time constant.
    KEY_TILE = 64,
};

/// Rows of another pass's operand to prefetch into L2 a few cache lines at a
/// time, interleaved with the arithmetic of the current pass. Decoding (a few
/// query rows) does little arithmetic per byte and is bound by streaming K and
/// V, one tile ahead: while the keys of a tile are multiplied, the next tile's
/// keys are fetched, and while its values are, the next tile's values, so that
/// each line has a whole tile's time (the softmax included) to arrive. The
/// hardware prefetcher alone leaves gaps at every switch between the two streams.
typedef struct attn_prefetch_stream {
    const char *row;       // next row to fetch from; NULL when there is nothing (left)
    int64_t row_bytes;     // distance between rows
    int64_t rows_left;
    int64_t line, lines_per_row;
} attn_prefetch_stream;

/// Starts a stream over `count` rows of `width_bytes` bytes, `stride_bytes` apart.
static inline void attn_prefetch_start_bytes(attn_prefetch_stream *s, const void *rows,
                                             int64_t stride_bytes, int64_t count, int64_t width_bytes) {
    s->row = (const char *)rows;
    s->row_bytes = stride_bytes;
    s->rows_left = rows && width_bytes > 0 ? count : 0;
    s->line = 0;
    s->lines_per_row = (width_bytes + 63) / 64;
    if (s->rows_left > 0 && s->row_bytes == s->lines_per_row * 64) {  // contiguous: one long row
        s->lines_per_row *= s->rows_left;
        s->rows_left = 1;
    }
}

/// Starts a stream over `count` rows of `width` floats, `stride` floats apart.
static inline void attn_prefetch_start(attn_prefetch_stream *s, const float *rows, int64_t stride,
                                       int64_t count, int64_t width) {
    attn_prefetch_start_bytes(s, rows, stride * (int64_t)sizeof(float), count,
                              width * (int64_t)sizeof(float));
}

/// Issues the next `lines` cache lines of the stream (into L2: an L1 prefetch
/// would evict the operand in use); a NULL or finished stream does nothing.
/// The lines of one row go in a tight loop (a decode step issues one for every
/// 64 bytes it reads, so the bookkeeping is kept out of the per-line path).
static inline void attn_prefetch_step(attn_prefetch_stream *s, int lines) {
    if (!s) return;
    while (lines > 0 && s->rows_left > 0) {
        int64_t run = s->lines_per_row - s->line;
        if (run > lines) run = lines;
        const char *at = s->row + s->line * 64;
        for (int64_t l = 0; l < run; l++) __builtin_prefetch(at + l * 64, 0, 2);
        s->line += run;
        lines -= (int)run;
        if (s->line == s->lines_per_row) {
            s->line = 0;
            s->row += s->row_bytes;
            s->rows_left--;
        }
    }
}

typedef struct attn_microkernels {
    const char *name;
    // ts: the line stride of qt, st and pt (see "Line stride" above).
    void (*pack_query)(const float *q, int64_t q_row_stride, int64_t rows, int64_t head_dim,
                       float scale, float *qt, int64_t ts);
    void (*qk_tile)(const float *qt, const float *k, int64_t k_row_stride, int64_t cols,
                    int64_t head_dim, int64_t rows, int64_t visible_limit, float *st, int64_t ts,
                    const float *row_max, float *row_max_new, attn_prefetch_stream *prefetch);
    void (*row_max)(const float *st, int64_t ts, int64_t cols, int64_t rows, const float *row_max,
                    float *row_max_new, int64_t visible_limit);
    void (*exp_row_sum)(float *st, int64_t ts, int64_t cols, int64_t rows, const float *row_max_new,
                        float *tile_sum, int64_t visible_limit, int may_hold_minus_infinity);
    void (*pv_tile)(const float *pt, int64_t ts, const float *v, int64_t v_row_stride, int64_t rows,
                    int64_t cols, int64_t value_dim, const float *alpha, float *acc,
                    int64_t acc_row_stride, int64_t visible_limit, attn_prefetch_stream *prefetch);
    int (*pv_tile_stored)(const float *pt, int64_t ts, const void *v, int64_t v_row_stride, attn_storage storage,
                          int64_t rows, int64_t cols, int64_t value_dim, const float *alpha, float *acc,
                          int64_t acc_row_stride, int64_t visible_limit, attn_prefetch_stream *prefetch);
    void (*update_rows)(float *row_max, const float *row_max_new, float *row_sum,
                        const float *tile_sum, float *alpha, int64_t rows);
    int (*pack_value)(const float *v, int64_t v_row_stride, int64_t cols, int64_t value_dim,
                      float *packed, int64_t packed_row_stride);
    int (*values_finite)(const float *v, int64_t v_row_stride, int64_t cols, int64_t value_dim);
    int (*widen_rows)(const uint16_t *src, int64_t src_row_stride, int64_t rows, int64_t width,
                       attn_storage storage, float *dst, int64_t dst_row_stride);
    void (*qk_panels)(const float *qt, const void *panels, int64_t panel_stride, int64_t width,
                      attn_storage storage, int64_t cols, int64_t head_dim, int64_t rows, float *st,
                      int64_t ts, attn_prefetch_stream *prefetch);
    void (*unpack_panels)(const void *panels, int64_t panel_stride, int64_t width, attn_storage storage,
                          int64_t cols, int64_t head_dim, float *dst, int64_t dst_row_stride);
    // The line stride of tiles of at most 16 rows: 16, or 0 for QUERY_TILE (see
    // above; with 16, tiles of 2 to 4 rows get 4 and one row 1). A table with 0 is always
    // passed ts = QUERY_TILE, and may ignore it.
    int64_t few_rows_stride;
} attn_microkernels;

/// The distance in floats between lines of qt and st for a tile of `rows`
/// query rows on `kernels` (see "Line stride" above). A decode step (a few rows)
/// touches one line per key and per head dim of each: QUERY_TILE floats apart,
/// those lines fall in a quarter of the L1 sets, where the streaming keys and
/// values evict them every tile; one line apart they spread over all sets;
/// 16 bytes apart (≤ 4 rows) a 64-key tile's scores take 16 cache lines, not 64;
/// and for one row they are 4 lines, which the softmax reads and writes as
/// whole vectors, with no transposes.
static inline int64_t attn_tile_stride(const struct attn_microkernels *kernels, int64_t rows) {
    if (!kernels->few_rows_stride || rows > 16) return QUERY_TILE;
    return rows == 1 ? 1 : rows <= 4 ? 4 : kernels->few_rows_stride;
}

/// The portable widening (any path's table may point at it; neon.c does).
int attn_widen_rows_portable(const uint16_t *src, int64_t src_row_stride, int64_t rows,
                              int64_t width, attn_storage storage, float *dst,
                              int64_t dst_row_stride);

/// One 16-bit element widened exactly (the scalar tail of every path).
static inline float attn_widen_one(uint16_t bits, attn_storage storage) {
    union { uint32_t u; float f; } out;
    if (storage == ATTN_STORAGE_BF16) {
        out.u = (uint32_t)bits << 16;
        return out.f;
    }
    const uint32_t sign = (uint32_t)(bits & 0x8000u) << 16;
    const uint32_t exponent = (bits >> 10) & 0x1Fu, mantissa = bits & 0x3FFu;
    if (exponent == 0x1Fu) {  // ±∞, or NaN made quiet (what F16C's vcvtph2ps gives)
        out.u = sign | 0x7F800000u | (mantissa ? 0x400000u | (mantissa << 13) : 0u);
    } else if (exponent == 0) {  // ±0 or subnormal: mantissa · 2^−24, exact in float32
        out.f = (float)mantissa * 0x1p-24f;
        out.u |= sign;
    } else {
        out.u = sign | ((exponent + 112u) << 23) | (mantissa << 13);
    }
    return out.f;
}

extern const attn_microkernels attn_microkernels_portable;
#if defined(__x86_64__) || defined(__i386__)
extern const attn_microkernels attn_microkernels_avx2;    // avx2.c: AVX2 + FMA
extern const attn_microkernels attn_microkernels_avx512;  // avx512.c: AVX-512F
#endif
#if defined(__aarch64__)
extern const attn_microkernels attn_microkernels_neon;    // neon.c: AArch64 Advanced SIMD
#endif

/// Keys a block of query rows [i, i + block_rows) must visit: past the last
/// row's visible limit every weight of the block is masked.
static inline int64_t visible_cols(int64_t cols, int64_t i, int64_t block_rows, int64_t visible_limit) {
    if (visible_limit >= cols) return cols;
    const int64_t limit = i + block_rows - 1 + visible_limit;
    return limit < 0 ? 0 : limit < cols ? limit : cols;
}

/// Whether this CPU can run the table (checked with __builtin_cpu_supports on x86;
/// NEON is part of every AArch64 CPU).
int attn_microkernels_supported(const attn_microkernels *table);

/// The table in use: chosen on first call, then fixed unless attn_select_kernel_path changes it.
const attn_microkernels *attn_selected_microkernels(void);

/// 1 if a decode step with keys and values in `storage` and keys in `layout`
/// streams them one tile ahead itself (attn_prefetch_stream), 0 where the
/// hardware prefetchers do better alone (dispatch.c says what was measured).
int attn_decode_prefetch(attn_storage storage, attn_key_layout layout);

#endif
