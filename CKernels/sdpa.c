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
// The rescale by e^(m − m_new) happens only for rows whose max grew. A call is
// a plan of rounds of independent tasks (plan.h): an optional value check (one
// task per value tile), then either one task per (batch, head, query tile), or,
// split-KV, one task per (head, 512-key chunk) and a round of merges per head.
// Grouped-query decoding stacks the query heads of a kv head in one tile (row
// i of the tile: head head0 + i / Lq, query row i % Lq), so that the head's
// keys and values stream once for all of them. Keys and values stored as
// float16 or bfloat16 are widened exactly to float32 — by the decode kernels
// in registers (qk_panels, pv_tile_stored), otherwise tile by tile into
// scratch (widen_rows) — and take the float32 arithmetic, so they give the
// bits of float32 storage.
// Tasks are handed out by an atomic counter (dynamic balance for causal
// triangles), by whichever driver runs the plan: OpenMP (attn_plan_run) or
// Swift's Dispatch. Each task computes whole rows in a fixed key order, so a
// row's result does not depend on the driver, the thread count or on which
// tile it is in.
#include "attention.h"
#include "microkernels/microkernels.h"
#include "params.h"
#include "plan.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


enum {
    SCRATCH_ALIGNMENT = 64,  // one cache line; also the AVX-512 register width
    // Tiles with at most this many query rows (decoding) read the value rows in
    // place instead of packing them first (see pv_in_place): on 1,32,1,2048,128
    // the copy cost a third of the time.
    IN_PLACE_VALUE_ROWS = 4,
    // Keys per chunk of the online softmax. Each chunk runs from a fresh state
    // and the chunks merge in key order through their logsumexp (FlashDecoding's
    // split-KV): a thread may take a chunk of its own, or go through all of a
    // row's chunks in turn, and the row gets the same bits. Part of the numerical
    // contract, like KEY_TILE, of which it is a multiple.
    KV_CHUNK = 8 * KEY_TILE,
    // Calls with more query tiles than this check their value tiles once, in a
    // round of their own (see attn_sdpa_plan_create).
    VALUE_CHECK_MIN_QUERY_TILES = 2,
};

// Per-thread scratch, each buffer on a cache line. Scores are transposed,
// st[j][i] (see microkernels.h), so the row statistics are QUERY_TILE-lane vectors.
typedef struct row_state {
    float *row_max;      // m      [QUERY_TILE]
    float *row_max_new;  // m_new  [QUERY_TILE]
    float *row_sum;      // l      [QUERY_TILE]
    float *tile_sum;     // Σ_j p  [QUERY_TILE] of the current key tile
    float *alpha;        // e^(m − m_new) [QUERY_TILE], 1 where the max did not grow
    float *qt;           // scale·Qᵀ [head_dim, QUERY_TILE], lines t.ts apart (attn_tile_stride)
    float *scores;       // st / pt  [KEY_TILE, QUERY_TILE], lines t.ts apart
    float *acc;          // unnormalised output [QUERY_TILE, value_dim_padded]
    float *v_packed;     // the value tile, aligned, NaN/±∞ zeroed [KEY_TILE, value_dim_padded]
    float *merged_max;   // the chunks so far, merged: M [QUERY_TILE]
    float *merged_sum;   // L [QUERY_TILE]
    float *merged_acc;   // O [QUERY_TILE, value_dim_padded]
    float *k_wide;       // 16-bit storage: the key tile widened [KEY_TILE, head_dim_padded]
    float *v_wide;       // 16-bit storage: the value tile widened [KEY_TILE, value_dim_padded]
    float *q_rows;       // stacked heads: the tile's query rows gathered [QUERY_TILE, head_dim_padded]
    attn_prefetch_stream prefetch;  // decoding: the operand of the next pass
} row_state;

// ⌈value / divisor⌉ for value ≥ 0, without forming value + divisor − 1 (key_length
// is not bounded by anything the kernel allocates).
static int64_t ceil_div(int64_t value, int64_t divisor) {
    return value / divisor + (value % divisor != 0);
}

static int64_t round_up(int64_t value, int64_t multiple) {
    return (value + multiple - 1) / multiple * multiple;
}

// Floats to a multiple of one cache line.
static int64_t padded_dim(int64_t dim) {
    return round_up(dim > 0 ? dim : 1, SCRATCH_ALIGNMENT / (int64_t)sizeof(float));
}

static int64_t scratch_floats_per_thread(int64_t head_dim, int64_t value_dim_padded) {
    return 7 * QUERY_TILE + head_dim * QUERY_TILE + KEY_TILE * QUERY_TILE +
           (2 * QUERY_TILE + 2 * KEY_TILE) * value_dim_padded +
           (KEY_TILE + QUERY_TILE) * padded_dim(head_dim);
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
    state.merged_max = state.v_packed + KEY_TILE * value_dim_padded;
    state.merged_sum = state.merged_max + QUERY_TILE;
    state.merged_acc = state.merged_sum + QUERY_TILE;
    state.v_wide = state.merged_acc + QUERY_TILE * value_dim_padded;
    state.k_wide = state.v_wide + KEY_TILE * value_dim_padded;
    state.q_rows = state.k_wide + KEY_TILE * padded_dim(head_dim);
    attn_prefetch_start(&state.prefetch, 0, 0, 0, 0);  // nothing to fetch yet
    return state;
}

// ---------------------------------------------------------------------------
// Validation: params.c checks every entry point; the loops below assume valid input.

// `partial`: the call writes a partial state, not params->output.
static attn_status validate(const attn_params *p, int partial) {
    const unsigned writes = partial ? 0 : ATTN_CALL_WRITES_OUTPUT;
    return attn_validate_params(p, ATTN_CALL_ANY_KV_STORAGE | ATTN_CALL_READS_VALUES | writes, 0, 0);
}

// ---------------------------------------------------------------------------
// One task: rows [row0, row0 + rows) of one unit: a (batch, head), or with
// stacked heads a (batch, group of `stacked` query heads of one kv head).

typedef struct task_view {
    const attn_params *p;
    int64_t batch, head, kv_head;  // head: the unit's first query head
    int64_t row0, rows;       // unit rows [row0, row0 + rows): head head + r / Lq, query row r % Lq
    int64_t stacked;          // query heads in the unit (1: the rows of one head)
    int64_t first_row, last_row;  // the tile's smallest and largest query row
    int64_t causal_offset;    // query row r sees keys j <= r + causal_offset (when causal)
    const unsigned char *keep_mask;  // mask at (batch, 0, 0, 0), or NULL
    const float *additive_mask;
    const unsigned char *key_keep;   // key padding at (batch, 0), or NULL
    int64_t kv_element_bytes;        // 4, or 2 for 16-bit storage
    int64_t ts;                      // the line stride of qt and st (attn_tile_stride)
} task_view;

// The query head and query row of tile row i.
static int64_t head_of(const task_view *t, int64_t i) {
    return t->head + (t->row0 + i) / t->p->query_length;
}

static int64_t query_row_of(const task_view *t, int64_t i) {
    return (t->row0 + i) % t->p->query_length;
}

// Explicit masks on st[j][i]: a kept-out cell becomes −∞, an additive one is
// added (an additive −∞ overwrites, so NaN·K at a masked key has no effect),
// and a padded key is −∞ for every row. Each row reads its own (head, row) of the mask.
static void apply_explicit_mask(const task_view *t, int64_t col0, int64_t cols, float *st) {
    const int64_t *ms = t->p->mask_strides;
    for (int64_t i = 0; i < t->rows; i++) {
        const int64_t row_offset = head_of(t, i) * ms[1] + query_row_of(t, i) * ms[2] + col0 * ms[3];
        if (t->keep_mask) {
            const unsigned char *mask_row = t->keep_mask + row_offset;
            for (int64_t j = 0; j < cols; j++)
                if (!mask_row[j * ms[3]]) st[j * t->ts + i] = -INFINITY;
        } else if (t->additive_mask) {
            const float *mask_row = t->additive_mask + row_offset;
            for (int64_t j = 0; j < cols; j++) {
                const float bias = mask_row[j * ms[3]];
                float *s = st + j * t->ts + i;
                *s = bias == -INFINITY ? -INFINITY : *s + bias;
            }
        }
    }
    if (t->key_keep) {
        const int64_t stride = t->p->key_padding_strides[1];
        for (int64_t j = 0; j < cols; j++)
            if (!t->key_keep[(col0 + j) * stride])
                for (int64_t i = 0; i < t->ts; i++) st[j * t->ts + i] = -INFINITY;
    }
}

// Dropout on the weights: a dropped cell is scaled by 0, which keeps a masked
// cell's −0 sign and a NaN a NaN. The cell is (batch, head, row, column) of the row's own head.
static void apply_dropout(const task_view *t, int64_t col0, int64_t cols, float *pt) {
    const attn_params *p = t->p;
    for (int64_t i = 0; i < t->rows; i++) {
        const int64_t head = head_of(t, i), row = query_row_of(t, i);
        for (int64_t j = 0; j < cols; j++)
            if (!attn_philox_keep(p->dropout_seed, t->batch, head, row, col0 + j, p->dropout_p))
                pt[j * t->ts + i] *= 0.0f;
    }
}

// A value tile with NaN or ±∞ went through pv_tile with those values as 0 (the
// same arithmetic as a finite tile); add them back for the cells that are not
// masked. A masked cell (weight −0) so never turns 0·Inf into NaN, and the
// finite part of every row is bit for bit what it would be without them.
static void add_nonfinite_values(const float *pt, int64_t ts, const float *v, int64_t v_row_stride,
                                 int64_t rows, int64_t cols, int64_t value_dim, float *acc,
                                 int64_t acc_row_stride) {
    for (int64_t j = 0; j < cols; j++)
        for (int64_t d = 0; d < value_dim; d++) {
            const float value = v[j * v_row_stride + d];
            if (isfinite(value)) continue;
            for (int64_t i = 0; i < rows; i++) {
                const float weight = pt[j * ts + i];
                if (weight == 0.0f && signbit(weight)) continue;  // masked
                acc[i * acc_row_stride + d] += weight * value;
            }
        }
}

// P·V through pack_value's aligned copy, NaN and ±∞ zeroed; returns its flag.
static int pv_packed(const attn_params *p, const attn_microkernels *kernels, const task_view *t,
                     const float *pt, const float *v_tile, int64_t v_stride, int64_t cols,
                     int64_t visible_limit, row_state *state, int64_t value_dim_padded) {
    const int finite = kernels->pack_value(v_tile, v_stride, cols, p->value_dim,
                                           state->v_packed, value_dim_padded);
    kernels->pv_tile(pt, t->ts, state->v_packed, value_dim_padded, t->rows, cols, p->value_dim,
                     state->alpha, state->acc, value_dim_padded, visible_limit, 0);
    return finite;
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
                       const float *pt, const float *v_tile, int64_t v_stride, int64_t cols,
                       int64_t visible_limit, row_state *state, int64_t value_dim_padded) {
    const int64_t count = t->rows * value_dim_padded;
    float *saved = state->v_packed;  // unused by this path until the fallback, which restores first
    int finite_before = 1;
    for (int64_t e = 0; e < count; e++) {
        saved[e] = state->acc[e];
        finite_before &= isfinite(state->acc[e]) != 0;
    }
    if (finite_before) {
        kernels->pv_tile(pt, t->ts, v_tile, v_stride, t->rows, cols, p->value_dim, state->alpha,
                         state->acc, value_dim_padded, visible_limit, &state->prefetch);
        int finite_after = 1;
        for (int64_t e = 0; e < count; e++) finite_after &= isfinite(state->acc[e]) != 0;
        if (finite_after) return 1;
        memcpy(state->acc, saved, sizeof(float) * (size_t)count);
    }
    return pv_packed(p, kernels, t, pt, v_tile, v_stride, cols, visible_limit, state, value_dim_padded);
}

// P·V for a decoding tile (as pv_in_place) through pv_tile_stored, which reads
// the caller's value rows in their storage (16-bit ones widened in registers)
// and checks the updated rows as it writes them: acc is saved first (rows ×
// value_dim, a few hundred bytes), and if some updated element is not finite
// it is restored and the tile goes the widened/packed way, which gives NaN and
// ±∞ values their meaning. Returns the finite flag, and in *v_tile, *v_stride
// the float32 rows that add_nonfinite_values must read when it is 0.
static int pv_stored(const attn_params *p, const attn_microkernels *kernels, const task_view *t,
                     const float *pt, const char *v_rows, int64_t cols, int64_t visible_limit,
                     row_state *state, int64_t value_dim_padded, const float **v_tile,
                     int64_t *v_stride) {
    const int64_t count = t->rows * value_dim_padded;
    float *saved = state->v_packed;  // unused by this path until the fallback, which restores first
    memcpy(saved, state->acc, sizeof(float) * (size_t)count);
    *v_tile = (const float *)v_rows;
    *v_stride = p->value_strides[2];
    if (kernels->pv_tile_stored(pt, t->ts, v_rows, p->value_strides[2], p->kv_storage, t->rows, cols,
                                p->value_dim, state->alpha, state->acc, value_dim_padded,
                                visible_limit, &state->prefetch))
        return 1;
    memcpy(state->acc, saved, sizeof(float) * (size_t)count);
    if (p->kv_storage == ATTN_STORAGE_F32)
        return pv_packed(p, kernels, t, pt, *v_tile, *v_stride, cols, visible_limit, state,
                         value_dim_padded);
    const int finite = kernels->widen_rows((const uint16_t *)v_rows, p->value_strides[2], cols,
                                           p->value_dim, p->kv_storage, state->v_wide,
                                           value_dim_padded);
    *v_tile = state->v_wide;
    *v_stride = value_dim_padded;
    if (!finite)
        return pv_packed(p, kernels, t, pt, state->v_wide, value_dim_padded, cols, visible_limit,
                         state, value_dim_padded);
    kernels->pv_tile(pt, t->ts, state->v_wide, value_dim_padded, t->rows, cols, p->value_dim, state->alpha,
                     state->acc, value_dim_padded, visible_limit, 0);
    return 1;
}

// The rows of one task and what they read: rows [row0, row0 + rows) of the
// unit of `stacked` query heads from `head` (1: one head). k and v come back
// as bytes: kv_element_bytes per element.
static task_view task_at(const attn_params *p, const attn_microkernels *kernels, int64_t batch,
                         int64_t head, int64_t stacked, int64_t row0, const float **q_out,
                         const char **k_out, const char **v_out, int64_t *key_end_out) {
    task_view t;
    t.p = p;
    t.batch = batch;
    t.head = head;
    t.kv_head = head / (p->query_heads / p->kv_heads);
    t.stacked = stacked;
    t.row0 = row0;
    const int64_t unit_rows = stacked * p->query_length;
    t.rows = unit_rows - row0 < QUERY_TILE ? unit_rows - row0 : QUERY_TILE;
    t.ts = attn_tile_stride(kernels, t.rows);
    // Stacked tiles hold every query row of their heads, so the smallest and
    // largest query row are those of the head.
    t.first_row = stacked > 1 ? 0 : row0;
    t.last_row = stacked > 1 ? p->query_length - 1 : row0 + t.rows - 1;
    t.causal_offset = p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? p->key_length - p->query_length : 0;
    t.kv_element_bytes = p->kv_storage == ATTN_STORAGE_F32 ? 4 : 2;
    const int64_t mask_offset = batch * p->mask_strides[0];
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
    const char *k = p->key ? (const char *)p->key + (batch * p->key_strides[0] +
                                                     t.kv_head * p->key_strides[1]) * t.kv_element_bytes
                           : 0;
    const char *v = p->value ? (const char *)p->value + (batch * p->value_strides[0] +
                                                         t.kv_head * p->value_strides[1]) * t.kv_element_bytes
                             : 0;

    // Keys past the tile's last visible one are skipped whole (causal block skipping);
    // only tiles that cross the diagonal need the per-cell causal mask.
    int64_t key_end = p->key_length;
    if (p->causal != ATTN_CAUSAL_NONE) {
        const int64_t last_visible = t.last_row + t.causal_offset;
        key_end = last_visible + 1 < key_end ? last_visible + 1 : key_end;
    }
    *q_out = q;
    *k_out = k;
    *v_out = v;
    *key_end_out = key_end;
    return t;
}

// scale·Qᵀ of the task's rows into state->qt. Rows of one head are `query
// stride[2]` apart; stacked rows of several heads are gathered first unless
// they are evenly spaced too (one query row a head: the head stride).
static void pack_task_queries(const attn_params *p, const attn_microkernels *kernels,
                              const task_view *t, const float *q, row_state *state) {
    if (t->stacked == 1 || p->query_length == 1) {
        const int64_t stride = t->stacked == 1 ? p->query_strides[2] : p->query_strides[1];
        kernels->pack_query(q, stride, t->rows, p->head_dim, p->scale, state->qt, t->ts);
        return;
    }
    const int64_t width = padded_dim(p->head_dim);
    const float *base = p->query + t->batch * p->query_strides[0];
    for (int64_t i = 0; i < t->rows; i++)
        memcpy(state->q_rows + i * width,
               base + head_of(t, i) * p->query_strides[1] + query_row_of(t, i) * p->query_strides[2],
               sizeof(float) * (size_t)p->head_dim);
    kernels->pack_query(state->q_rows, width, t->rows, p->head_dim, p->scale, state->qt, t->ts);
}

enum {
    // Tiles of at most this many rows multiply keys in panels as they are
    // (qk_panels, 4 rows at a time); tiles of more unpack them into rows and
    // take the row-in-lanes product, which does fewer operations per key there.
    PANEL_PRODUCT_ROWS = 8,
};

// Keys per panel of the call's key layout: 16 (ATTN_KEY_LAYOUT_PANELS), 64
// (ATTN_KEY_LAYOUT_PANELS64, one key tile), 0 for rows.
static int64_t panel_width(const attn_params *p) {
    return p->key_layout == ATTN_KEY_LAYOUT_PANELS ? 16 : p->key_layout == ATTN_KEY_LAYOUT_PANELS64 ? 64 : 0;
}

// Keys [col0, col0 + cols) of a head in panels of `width` keys, as float32 rows
// [cols, dst_stride] (for the tiles that the panel micro-kernels do not take:
// any col0). Key j, dim d at k + (j / width)·key_strides[2] + d·width + j % width.
static void unpack_panel_keys(const attn_params *p, const char *k, int64_t width, int64_t col0, int64_t cols,
                              float *dst, int64_t dst_stride) {
    const int64_t panel_stride = p->key_strides[2];
    for (int64_t j = 0; j < cols; j++) {
        const int64_t key = col0 + j;
        const int64_t at = key / width * panel_stride + key % width;
        for (int64_t d = 0; d < p->head_dim; d++) {
            const int64_t index = at + d * width;
            dst[j * dst_stride + d] = p->kv_storage == ATTN_STORAGE_F32
                                          ? ((const float *)k)[index]
                                          : attn_widen_one(((const uint16_t *)k)[index], p->kv_storage);
        }
    }
}

// A prefetch stream over keys [first, first + count) of a head (none if count ≤ 0):
// their rows, or (panel_keys > 0: panels of that many keys) the whole panels
// that hold them.
static void start_key_prefetch(const attn_params *p, attn_prefetch_stream *stream, const char *k,
                               int64_t first, int64_t count, int64_t bytes, int64_t panel_keys) {
    const int fetch = count > 0 && k && p->head_dim > 0;
    if (panel_keys) {
        const int64_t first_panel = first / panel_keys;
        const int64_t panel_count = fetch ? (first + count - 1) / panel_keys - first_panel + 1 : 0;
        attn_prefetch_start_bytes(stream, fetch ? k + first_panel * p->key_strides[2] * bytes : 0,
                                  p->key_strides[2] * bytes, panel_count, panel_keys * p->head_dim * bytes);
    } else {
        attn_prefetch_start_bytes(stream, fetch ? k + first * p->key_strides[2] * bytes : 0,
                                  p->key_strides[2] * bytes, fetch ? count : 0, p->head_dim * bytes);
    }
}

// The online softmax of a task's rows over keys [chunk_begin, chunk_end), from a
// fresh state: leaves m, l and the unnormalised output in state.row_max,
// state.row_sum and state.acc. key_end bounds the prefetch of the next tile;
// finite_value_tiles (or NULL: unknown) says which of the head's value tiles
// hold no NaN or ±∞, and so may be read in place rather than packed. Keys and
// values in 16-bit storage are widened a tile at a time into scratch first.
static void attend_chunk(const attn_params *p, const attn_microkernels *kernels, const task_view *task,
                         const char *k, const char *v, const unsigned char *finite_value_tiles,
                         int64_t chunk_begin, int64_t chunk_end, int64_t key_end,
                         row_state *state_in, int64_t value_dim_padded) {
    const task_view t = *task;
    row_state state = *state_in;
    const int64_t bytes = t.kv_element_bytes;
    const int wide = p->kv_storage == ATTN_STORAGE_F32;
    const int64_t head_dim_padded = padded_dim(p->head_dim);
    const int64_t panel_keys = panel_width(p);  // keys per panel; 0: keys in rows
    // Decoding streams K and V one tile ahead: while a tile's keys are
    // multiplied, the next tile's keys come in, and while its values are, the
    // next tile's values, so that each stream's lines have a whole tile's time
    // (softmax included) to arrive. (Not where the hardware prefetchers do
    // better alone: attn_decode_prefetch.)
    const int in_place = t.rows <= IN_PLACE_VALUE_ROWS && p->value_dim > 0;
    const int fetch_ahead = in_place && attn_decode_prefetch(p->kv_storage, p->key_layout);
    for (int64_t i = 0; i < QUERY_TILE; i++) {
        state.row_max[i] = -INFINITY;
        state.row_sum[i] = 0.0f;
    }
    memset(state.acc, 0, sizeof(float) * (size_t)(t.rows * value_dim_padded));
    for (int64_t col0 = chunk_begin; col0 < chunk_end; col0 += KEY_TILE) {
        const int64_t cols = chunk_end - col0 < KEY_TILE ? chunk_end - col0 : KEY_TILE;
        float *st = state.scores;
        // Row i sees keys j < i + visible_limit of this tile (all of them off the diagonal).
        const int diagonal = p->causal != ATTN_CAUSAL_NONE && col0 + cols - 1 > t.first_row + t.causal_offset;
        const int64_t visible_limit = diagonal ? t.first_row + t.causal_offset - col0 + 1 : cols;
        const int explicit_mask = t.keep_mask || t.additive_mask || t.key_keep;
        const int masked = diagonal || explicit_mask;
        const char *v_rows = v ? v + col0 * p->value_strides[2] * bytes : 0;
        const int64_t next = col0 + KEY_TILE;
        const int64_t next_cols = key_end - next < KEY_TILE ? key_end - next : KEY_TILE;
        if (fetch_ahead)
            start_key_prefetch(p, &state.prefetch, k, next, next_cols, bytes, panel_keys);
        int max_taken = 0;  // whether qk_tile took the row max
        // The panel kernels take tiles from a panel boundary; others (a partial
        // call's key_begin off one) unpack key by key, with the same bits.
        const int panel_start = panel_keys && p->head_dim > 0 && col0 % panel_keys == 0;
        const char *k_panels = panel_start ? k + col0 / panel_keys * p->key_strides[2] * bytes : 0;
        if (panel_start && kernels->qk_panels &&
            (t.rows <= PANEL_PRODUCT_ROWS || !kernels->unpack_panels)) {
            // Keys in panels, few rows: plain vector loads, no transposes (4 rows at a time).
            kernels->qk_panels(state.qt, k_panels, p->key_strides[2], panel_keys, p->kv_storage, cols,
                               p->head_dim, t.rows, st, t.ts, in_place ? &state.prefetch : 0);
        } else if (p->head_dim > 0) {
            const char *k_rows = panel_keys ? k : k + col0 * p->key_strides[2] * bytes;  // (unused for panels)
            const float *k_tile = (const float *)k_rows;
            int64_t k_stride = p->key_strides[2];
            if (panel_start && kernels->unpack_panels) {
                kernels->unpack_panels(k_panels, p->key_strides[2], panel_keys, p->kv_storage, cols,
                                       p->head_dim, state.k_wide, head_dim_padded);
                k_tile = state.k_wide;
                k_stride = head_dim_padded;
            } else if (panel_keys) {
                unpack_panel_keys(p, k, panel_keys, col0, cols, state.k_wide, head_dim_padded);
                k_tile = state.k_wide;
                k_stride = head_dim_padded;
            } else if (!wide) {
                kernels->widen_rows((const uint16_t *)k_rows, k_stride, cols, p->head_dim,
                                    p->kv_storage, state.k_wide, head_dim_padded);
                k_tile = state.k_wide;
                k_stride = head_dim_padded;
            }
            // Unmasked tiles take the row max from the micro-kernel, while the scores are in registers.
            kernels->qk_tile(state.qt, k_tile, k_stride, cols, p->head_dim, t.rows, visible_limit, st, t.ts,
                             state.row_max, masked ? 0 : state.row_max_new,
                             in_place ? &state.prefetch : 0);
            max_taken = !masked;
        } else {
            memset(st, 0, sizeof(float) * (size_t)(cols * t.ts));
        }
        if (explicit_mask) apply_explicit_mask(&t, col0, cols, st);

        // Online softmax: rows whose max grew rescale by alpha = e^(m − m_new)
        // (0 when m was −∞); the accumulator's rescale is fused into pv_tile.
        // On a diagonal tile, row_max and exp_row_sum take the cells past each
        // row's visible limit as masked (the causal mask).
        if (!max_taken)
            kernels->row_max(st, t.ts, cols, t.rows, state.row_max, state.row_max_new, visible_limit);
        kernels->exp_row_sum(st, t.ts, cols, t.rows, state.row_max_new, state.tile_sum, visible_limit,
                             explicit_mask || p->head_dim == 0);
        kernels->update_rows(state.row_max, state.row_max_new, state.row_sum, state.tile_sum,
                             state.alpha, t.rows);
        if (p->dropout_p > 0.0f) apply_dropout(&t, col0, cols, st);

        if (p->value_dim > 0) {
            const float *v_tile = (const float *)v_rows;
            int64_t v_stride = p->value_strides[2];
            if (fetch_ahead)
                attn_prefetch_start_bytes(&state.prefetch, next_cols > 0 ? v + next * p->value_strides[2] * bytes : 0,
                                          p->value_strides[2] * bytes, next_cols > 0 ? next_cols : 0,
                                          p->value_dim * bytes);
            int finite;
            if (in_place && kernels->pv_tile_stored) {
                finite = pv_stored(p, kernels, &t, st, v_rows, cols, visible_limit, &state,
                                   value_dim_padded, &v_tile, &v_stride);
            } else if (!wide) {
                // The widened tile is aligned scratch: read it in place when finite.
                finite = kernels->widen_rows((const uint16_t *)v_rows, v_stride, cols, p->value_dim,
                                             p->kv_storage, state.v_wide, value_dim_padded);
                v_tile = state.v_wide;
                v_stride = value_dim_padded;
                if (finite)
                    kernels->pv_tile(st, t.ts, v_tile, v_stride, t.rows, cols, p->value_dim, state.alpha,
                                     state.acc, value_dim_padded, visible_limit,
                                     in_place ? &state.prefetch : 0);
                else
                    finite = pv_packed(p, kernels, &t, st, v_tile, v_stride, cols, visible_limit,
                                       &state, value_dim_padded);
            } else if (in_place) {
                finite = pv_in_place(p, kernels, &t, st, v_tile, v_stride, cols, visible_limit, &state,
                                     value_dim_padded);
            } else if (finite_value_tiles && finite_value_tiles[col0 / KEY_TILE]) {
                // Checked once per call: the copy would hold the very same bits.
                kernels->pv_tile(st, t.ts, v_tile, v_stride, t.rows, cols, p->value_dim,
                                 state.alpha, state.acc, value_dim_padded, visible_limit, 0);
                finite = 1;
            } else {
                finite = pv_packed(p, kernels, &t, st, v_tile, v_stride, cols, visible_limit, &state,
                                   value_dim_padded);
            }
            if (!finite)
                add_nonfinite_values(st, t.ts, v_tile, v_stride, t.rows, cols, p->value_dim,
                                     state.acc, value_dim_padded);
        }
    }

    state_in->prefetch = state.prefetch;
}

// Folds one chunk's state (m, l, o) into the merged state (M, L, O) of the
// chunks before it, row by row: M' = max(M, m), L' = L·e^(M − M') + l·e^(m − M'),
// O' = O·e^(M − M') + o·e^(m − M') (Dao et al. 2023, "Flash-Decoding"; the
// logsumexp of the merged chunks is M' + log L'). A chunk that saw no key for a
// row (m = −∞) changes nothing; the first one that did is taken as it is; NaN
// wins. Split and unsplit calls merge the same chunk states in the same order
// through this one function, so they give the same bits.
static void merge_chunk(int64_t rows, int64_t value_dim, int64_t value_dim_padded, float *merged_max,
                        float *merged_sum, float *merged_acc, const float *row_max,
                        const float *row_sum, const float *acc) {
    for (int64_t i = 0; i < rows; i++) {
        const float m = row_max[i], merged = merged_max[i];
        float *out = merged_acc + i * value_dim_padded;
        const float *in = acc + i * value_dim_padded;
        if (m == -INFINITY) continue;
        if (merged == -INFINITY) {
            merged_max[i] = m;
            merged_sum[i] = row_sum[i];
            memcpy(out, in, sizeof(float) * (size_t)value_dim);
            continue;
        }
        const float m_new = m > merged || isnan(m) ? m : merged;
        const float a = expf(merged - m_new), b = expf(m - m_new);
        merged_max[i] = m_new;
        merged_sum[i] = merged_sum[i] * a + row_sum[i] * b;
        for (int64_t d = 0; d < value_dim; d++) out[d] = out[d] * a + in[d] * b;
    }
}

static void swap_pointers(float **a, float **b) {
    float *const t = *a;
    *a = *b;
    *b = t;
}

static void start_merge(int64_t rows, row_state *state) {
    for (int64_t i = 0; i < rows; i++) {
        state->merged_max[i] = -INFINITY;
        state->merged_sum[i] = 0.0f;
    }
}

// Where a call's rows go: the output and logsumexp of params (out = O / L /
// (1 − dropout_p), logsumexp = M + log L; a row that saw no key is 0, −∞), or
// a partial state (M, L, O as they are; a row that saw no key: −∞, 0, 0).
static void write_rows(const attn_params *p, const attn_partial *partial, const task_view *t,
                       const row_state *state, int64_t value_dim_padded) {
    const float keep_scale = 1.0f / (1.0f - p->dropout_p);
    for (int64_t i = 0; i < t->rows; i++) {
        const int64_t head = head_of(t, i), row = query_row_of(t, i);
        const int dead = state->merged_max[i] == -INFINITY;
        const float *restrict acc_row = state->merged_acc + i * value_dim_padded;
        if (partial) {
            const int64_t index = (t->batch * p->query_heads + head) * p->query_length + row;
            partial->row_max[index] = state->merged_max[i];
            partial->row_sum[index] = dead ? 0.0f : state->merged_sum[i];
            if (p->value_dim > 0) {
                float *restrict out = partial->accumulator + index * p->value_dim;
                if (dead) memset(out, 0, sizeof(float) * (size_t)p->value_dim);
                else memcpy(out, acc_row, sizeof(float) * (size_t)p->value_dim);
            }
            continue;
        }
        if (p->value_dim > 0) {
            float *restrict out = p->output + t->batch * p->output_strides[0] +
                                  head * p->output_strides[1] + row * p->output_strides[2];
            if (dead) {
                memset(out, 0, sizeof(float) * (size_t)p->value_dim);
            } else {
                const float inverse = keep_scale / state->merged_sum[i];
                for (int64_t d = 0; d < p->value_dim; d++) out[d] = acc_row[d] * inverse;
            }
        }
        if (p->logsumexp) {
            float *lse = p->logsumexp + t->batch * p->logsumexp_strides[0] +
                         head * p->logsumexp_strides[1] + row * p->logsumexp_strides[2];
            *lse = dead ? -INFINITY : state->merged_max[i] + logf(state->merged_sum[i]);
        }
    }
}

// ---------------------------------------------------------------------------
// The plan of a call: rounds of tasks (plan.h), which any driver runs.

// What every task of one call shares.
typedef struct call_plan {
    const attn_microkernels *kernels;
    // A unit is one (batch, head), or with stacked heads one (batch, group of
    // `stacked` query heads of one kv head): its rows are stacked · query_length.
    int64_t stacked, units, unit_rows;
    int64_t query_tiles, tasks;  // query tiles per unit; units · query_tiles
    int64_t value_dim_padded, per_thread;
    // The keys the call attends to, [key_begin, key_end): all of them, or a
    // partial call's slice; chunks start at key_begin.
    int64_t key_begin, key_end;
    const attn_partial *partial;  // NULL: write params->output and logsumexp
    // Split-KV: with too few query tiles to keep the threads busy (decoding), a
    // task is one chunk of one unit's keys; its state goes to `partials`, and a
    // second round of tasks, one per unit, merges them (split = 0: not split).
    int split;
    int64_t chunks;          // KV_CHUNK chunks of the keys
    int64_t partial_floats;  // per (unit, chunk): m, l [rows], o [rows, value_dim_padded]
    float *partials;
    // Which value tiles hold no NaN or ±∞, [batch, kv_heads, key tiles], found in
    // a first round, so that P·V reads them in place instead of packing each one
    // once per query tile (NULL: not known, pack them).
    unsigned char *finite_value_tiles;
    int64_t key_tiles;
} call_plan;

// The threads a call asks for: num_threads, else the default (OpenMP's, or the
// processors online).
static int requested_threads(const attn_params *p) {
    return p->num_threads > 0 ? p->num_threads : attn_default_threads();
}

// Query heads a tile stacks: the most of a kv head's group (a divisor of it)
// whose rows fit one tile, when no row of the tile has a causal diagonal of
// its own: without a causal mask, or with one query row a head (which sees
// the same keys in every head). Per-row masks, dropout cells and outputs are
// indexed by each row's own head, so stacking changes no bit.
static int64_t stacked_heads(const attn_params *p) {
    if (p->kv_heads == 0 || p->query_length == 0) return 1;
    const int64_t group = p->query_heads / p->kv_heads;
    if (group < 2 || (p->causal != ATTN_CAUSAL_NONE && p->query_length != 1)) return 1;
    for (int64_t heads = group; heads > 1; heads--)
        if (group % heads == 0 && heads * p->query_length <= QUERY_TILE) return heads;
    return 1;
}

static call_plan plan_call(const attn_params *p, int threads, int64_t key_begin, int64_t key_end,
                           const attn_partial *partial) {
    call_plan plan;
    plan.kernels = attn_selected_microkernels();
    plan.stacked = stacked_heads(p);
    plan.units = p->batch * (p->query_heads / plan.stacked);
    plan.unit_rows = plan.stacked * p->query_length;
    plan.query_tiles = ceil_div(plan.unit_rows, QUERY_TILE);
    plan.tasks = plan.units * plan.query_tiles;
    plan.value_dim_padded = padded_dim(p->value_dim);
    plan.per_thread = scratch_floats_per_thread(p->head_dim, plan.value_dim_padded);
    plan.key_begin = key_begin;
    plan.key_end = key_end;
    plan.partial = partial;
    plan.chunks = ceil_div(key_end - key_begin, KV_CHUNK);
    // Only a single query tile is ever split, so this product stays small.
    plan.partial_floats = plan.query_tiles != 1 ? 0 : round_up(plan.unit_rows * (2 + plan.value_dim_padded),
                                   SCRATCH_ALIGNMENT / (int64_t)sizeof(float));
    plan.partials = 0;
    plan.finite_value_tiles = 0;
    plan.key_tiles = ceil_div(p->key_length, KEY_TILE);
    // Split one query tile's keys when there are fewer than two tasks a thread.
    // The bits do not depend on it, so neither may anything else.
    const int64_t partial_bytes_limit = (int64_t)1 << 28;
    plan.split = threads > 1 && plan.query_tiles == 1 && plan.chunks > 1 &&
                 plan.tasks < 2 * (int64_t)threads &&
                 plan.units * plan.chunks <= partial_bytes_limit / 4 / plan.partial_floats;
    return plan;
}

// The unit's first query head.
static int64_t unit_head(const attn_params *p, const call_plan *plan, int64_t unit) {
    return unit % (p->query_heads / plan->stacked) * plan->stacked;
}

static int64_t unit_batch(const attn_params *p, const call_plan *plan, int64_t unit) {
    return unit / (p->query_heads / plan->stacked);
}

// The end of the keys a task attends to: the slice's, or the causal limit before it.
static int64_t task_key_end(const call_plan *plan, int64_t causal_end) {
    return causal_end < plan->key_end ? causal_end : plan->key_end;
}

// One task: all of a query tile's chunks in key order, merged, then written.
static void run_task(const attn_params *p, const call_plan *plan, int64_t unit, int64_t row0,
                     row_state *state) {
    const attn_microkernels *kernels = plan->kernels;
    const int64_t value_dim_padded = plan->value_dim_padded;
    const float *q;
    const char *k, *v;
    int64_t causal_end;
    const task_view t = task_at(p, plan->kernels, unit_batch(p, plan, unit), unit_head(p, plan, unit), plan->stacked,
                                row0, &q, &k, &v, &causal_end);
    const int64_t key_end = task_key_end(plan, causal_end);
    const unsigned char *finite_tiles =
        plan->finite_value_tiles ? plan->finite_value_tiles + (t.batch * p->kv_heads + t.kv_head) * plan->key_tiles
                                 : 0;
    if (p->head_dim > 0 && key_end > plan->key_begin) pack_task_queries(p, kernels, &t, q, state);
    start_merge(t.rows, state);
    for (int64_t begin = plan->key_begin; begin < key_end; begin += KV_CHUNK) {
        const int64_t end = key_end - begin < KV_CHUNK ? key_end : begin + KV_CHUNK;
        attend_chunk(p, kernels, &t, k, v, finite_tiles, begin, end, key_end, state, value_dim_padded);
        if (begin == plan->key_begin) {
            // Merging the first chunk into the empty state copies the rows that
            // saw a key and leaves the others empty (M = −∞, L = 0), which is
            // what the chunk holds for them: swap the buffers instead.
            swap_pointers(&state->row_max, &state->merged_max);
            swap_pointers(&state->row_sum, &state->merged_sum);
            swap_pointers(&state->acc, &state->merged_acc);
        } else {
            merge_chunk(t.rows, p->value_dim, value_dim_padded, state->merged_max, state->merged_sum,
                        state->merged_acc, state->row_max, state->row_sum, state->acc);
        }
    }
    write_rows(p, plan->partial, &t, state, value_dim_padded);
}

// Chunk `chunk` of one unit's keys, its state stored for the merge round.
static void run_chunk_task(const attn_params *p, const call_plan *plan, int64_t unit,
                           int64_t chunk, row_state *state) {
    const float *q;
    const char *k, *v;
    int64_t causal_end;
    const task_view t = task_at(p, plan->kernels, unit_batch(p, plan, unit), unit_head(p, plan, unit), plan->stacked,
                                0, &q, &k, &v, &causal_end);
    const int64_t key_end = task_key_end(plan, causal_end);
    float *partial = plan->partials + (unit * plan->chunks + chunk) * plan->partial_floats;
    float *row_max = partial, *row_sum = partial + t.rows, *acc = partial + 2 * t.rows;
    const int64_t begin = plan->key_begin + chunk * KV_CHUNK;
    if (begin >= key_end) {  // causal: nothing visible in this chunk
        for (int64_t i = 0; i < t.rows; i++) row_max[i] = -INFINITY;
        return;
    }
    const int64_t end = key_end - begin < KV_CHUNK ? key_end : begin + KV_CHUNK;
    if (p->head_dim > 0) pack_task_queries(p, plan->kernels, &t, q, state);
    attend_chunk(p, plan->kernels, &t, k, v, 0, begin, end, end, state, plan->value_dim_padded);
    memcpy(row_max, state->row_max, sizeof(float) * (size_t)t.rows);
    memcpy(row_sum, state->row_sum, sizeof(float) * (size_t)t.rows);
    memcpy(acc, state->acc, sizeof(float) * (size_t)(t.rows * plan->value_dim_padded));
}

// The merge round of a split call: one unit's chunk states, in key order.
static void run_merge_task(const attn_params *p, const call_plan *plan, int64_t unit,
                           row_state *state) {
    const float *q;
    const char *k, *v;
    int64_t causal_end;
    const task_view t = task_at(p, plan->kernels, unit_batch(p, plan, unit), unit_head(p, plan, unit), plan->stacked,
                                0, &q, &k, &v, &causal_end);
    start_merge(t.rows, state);
    for (int64_t chunk = 0; chunk < plan->chunks; chunk++) {
        const float *partial = plan->partials + (unit * plan->chunks + chunk) * plan->partial_floats;
        merge_chunk(t.rows, p->value_dim, plan->value_dim_padded, state->merged_max,
                    state->merged_sum, state->merged_acc, partial, partial + t.rows,
                    partial + 2 * t.rows);
    }
    write_rows(p, plan->partial, &t, state, plan->value_dim_padded);
}

// The value check: whether value tile `task` ([batch, kv_heads, key tiles]) is finite.
static void check_value_tile(const attn_params *p, const call_plan *plan, int64_t task) {
    const int64_t batch_head = task / plan->key_tiles, col0 = task % plan->key_tiles * KEY_TILE;
    const int64_t cols = p->key_length - col0 < KEY_TILE ? p->key_length - col0 : KEY_TILE;
    const float *v_tile = p->value + batch_head / p->kv_heads * p->value_strides[0] +
                          batch_head % p->kv_heads * p->value_strides[1] + col0 * p->value_strides[2];
    plan->finite_value_tiles[task] =
        (unsigned char)plan->kernels->values_finite(v_tile, p->value_strides[2], cols, p->value_dim);
}

// The rounds a call may have.
typedef enum sdpa_round {
    ROUND_VALUE_CHECK,  // one task per value tile: is it finite?
    ROUND_ROW_TILES,    // one task per (unit, query tile): its rows, every chunk
    ROUND_KEY_CHUNKS,   // split-KV: one task per (unit, chunk) of the single query tile
    ROUND_MERGES,       // split-KV: one task per unit, merging its chunks in key order
} sdpa_round;

typedef struct sdpa_plan {
    attn_plan base;      // first: the drivers see only this
    attn_params params;  // the caller's, copied (its pointers must stay valid while the plan runs)
    attn_partial partial;  // a partial call's state buffers (copied), else unused
    call_plan call;
    sdpa_round kind[PLAN_MAX_ROUNDS];
    float *scratch;      // per worker: call.per_thread floats
} sdpa_plan;

// Runs one task. Row tiles go unit by unit, so that a head's keys and values
// stay in L2 while its query tiles pass (one head of 1024 × 64 keys and values
// is 512 KiB), and within a unit from the last query tile to the first: under a
// causal mask the last tiles cost most, and the cheap first tiles of the last
// head fill the tail.
static void run_sdpa_task(attn_plan *base, int32_t round, int64_t task, int32_t worker) {
    sdpa_plan *plan = (sdpa_plan *)base;
    const attn_params *p = &plan->params;
    const call_plan *call = &plan->call;
    row_state state = row_state_at(plan->scratch + call->per_thread * worker, p->head_dim,
                                   call->value_dim_padded);
    switch (plan->kind[round]) {
    case ROUND_VALUE_CHECK:
        check_value_tile(p, call, task);
        break;
    case ROUND_ROW_TILES: {
        const int64_t query_tile = call->query_tiles - 1 - task % call->query_tiles;
        run_task(p, call, task / call->query_tiles, query_tile * QUERY_TILE, &state);
        break;
    }
    case ROUND_KEY_CHUNKS:
        run_chunk_task(p, call, task % call->units, task / call->units, &state);
        break;
    case ROUND_MERGES:
        run_merge_task(p, call, task, &state);
        break;
    }
}

static void release_sdpa_plan(attn_plan *base) {
    sdpa_plan *plan = (sdpa_plan *)base;
    free(plan->call.finite_value_tiles);
    attn_aligned_free(plan->call.partials);
    attn_aligned_free(plan->scratch);
    free(plan);
}

static void add_sdpa_round(sdpa_plan *plan, sdpa_round kind, int64_t tasks) {
    const int32_t before = plan->base.rounds;
    plan_add_round(&plan->base, tasks);
    if (plan->base.rounds > before) plan->kind[before] = kind;
}

// The plan of a whole call (partial NULL) or of a partial one over [key_begin, key_end).
static attn_status create_plan(const attn_params *params, int64_t key_begin, int64_t key_end,
                               const attn_partial *partial, attn_plan **plan_out) {
    sdpa_plan *plan = calloc(1, sizeof(sdpa_plan));
    if (!plan) return ATTN_ERROR_OUT_OF_MEMORY;
    plan->base.run_task = run_sdpa_task;
    plan->base.release = release_sdpa_plan;
    plan->params = *params;
    if (partial) plan->partial = *partial;
    const attn_params *p = &plan->params;
    const int threads = requested_threads(p);
    call_plan *call = &plan->call;
    *call = plan_call(p, threads, key_begin, key_end, partial ? &plan->partial : 0);
    if (call->tasks > 0) {
        if (call->split) {
            call->partials = attn_aligned_alloc(
                sizeof(float) * (size_t)(call->units * call->chunks * call->partial_floats));
            if (!call->partials) call->split = 0;  // the unsplit way needs no more memory, and gives the same bits
        }
        // Tiles of more rows than decoding's pack their value tiles, once per query
        // tile: when there are several query tiles, check the values once instead
        // (a round of its own, so not for two tiles, where the round's barrier —
        // a wake-up of the workers under Dispatch — costs more than one extra
        // copy; the bits are the same either way). 16-bit values are widened
        // into aligned scratch, which needs no check.
        if (!call->split && call->query_tiles > VALUE_CHECK_MIN_QUERY_TILES && p->value_dim > 0 && p->key_length > 0 &&
            p->kv_storage == ATTN_STORAGE_F32)
            call->finite_value_tiles = malloc((size_t)(p->batch * p->kv_heads * call->key_tiles));
        if (call->finite_value_tiles)
            add_sdpa_round(plan, ROUND_VALUE_CHECK, p->batch * p->kv_heads * call->key_tiles);
        if (call->split) {
            add_sdpa_round(plan, ROUND_KEY_CHUNKS, call->units * call->chunks);
            add_sdpa_round(plan, ROUND_MERGES, call->units);
        } else {
            add_sdpa_round(plan, ROUND_ROW_TILES, call->tasks);
        }
    }
    plan->base.workers = plan_worker_count(threads, plan_widest_round(&plan->base));
    if (plan->base.rounds > 0) {
        plan->scratch = attn_aligned_alloc(sizeof(float) *
                                           (size_t)(call->per_thread * plan->base.workers));
        if (!plan->scratch) {
            release_sdpa_plan(&plan->base);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
    }
    *plan_out = &plan->base;
    return ATTN_OK;
}

attn_status attn_sdpa_plan_create(const attn_params *params, attn_plan **plan_out) {
    if (!plan_out) return ATTN_ERROR_NULL_POINTER;
    *plan_out = 0;
    const attn_status status = validate(params, 0);
    if (status != ATTN_OK) return status;
    return create_plan(params, 0, params->key_length, 0, plan_out);
}

// Without OpenMP the C driver runs a plan serially: plan it for one worker.
static attn_params for_c_driver(const attn_params *params) {
    attn_params p = *params;
#ifndef _OPENMP
    p.num_threads = 1;
#endif
    return p;
}

attn_status attn_sdpa_forward(const attn_params *params) {
    if (!params) return ATTN_ERROR_NULL_POINTER;
    const attn_params p = for_c_driver(params);
    attn_plan *plan;
    return plan_run_created(attn_sdpa_plan_create(&p, &plan), &plan);
}

// ---------------------------------------------------------------------------
// Partial calls and their merge.

attn_status attn_sdpa_partial_plan_create(const attn_params *params, int64_t key_begin,
                                          int64_t key_end, const attn_partial *partial,
                                          attn_plan **plan_out) {
    if (!plan_out) return ATTN_ERROR_NULL_POINTER;
    *plan_out = 0;
    const attn_status status = validate(params, 1);
    if (status != ATTN_OK) return status;
    if (key_begin < 0 || key_end < key_begin || key_end > params->key_length) return ATTN_ERROR_KEY_RANGE;
    const int64_t rows = params->batch * params->query_heads * params->query_length;
    if (!partial || (rows > 0 && (!partial->row_max || !partial->row_sum ||
                                  (params->value_dim > 0 && !partial->accumulator))))
        return ATTN_ERROR_NULL_POINTER;
    return create_plan(params, key_begin, key_end, partial, plan_out);
}

attn_status attn_sdpa_partial_forward(const attn_params *params, int64_t key_begin,
                                      int64_t key_end, const attn_partial *partial) {
    if (!params) return ATTN_ERROR_NULL_POINTER;
    const attn_params p = for_c_driver(params);
    attn_plan *plan;
    return plan_run_created(attn_sdpa_partial_plan_create(&p, key_begin, key_end, partial, &plan), &plan);
}

attn_status attn_partial_merge(const attn_partial *merged, const attn_partial *next, int64_t rows,
                               int64_t value_dim) {
    if (rows < 0 || value_dim < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    if (rows == 0) return ATTN_OK;
    if (!merged || !next || !merged->row_max || !merged->row_sum || !next->row_max || !next->row_sum ||
        (value_dim > 0 && (!merged->accumulator || !next->accumulator)))
        return ATTN_ERROR_NULL_POINTER;
    // The kernel's own chunk merge, with the rows value_dim apart.
    merge_chunk(rows, value_dim, value_dim, merged->row_max, merged->row_sum, merged->accumulator,
                next->row_max, next->row_sum, next->accumulator);
    return ATTN_OK;
}

attn_status attn_partial_finish(const attn_partial *state, int64_t rows, int64_t value_dim,
                                float dropout_p, float *output, float *logsumexp) {
    if (rows < 0 || value_dim < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    if (!(dropout_p >= 0.0f && dropout_p < 1.0f)) return ATTN_ERROR_DROPOUT;
    if (rows == 0) return ATTN_OK;
    if (!state || !state->row_max || !state->row_sum || (value_dim > 0 && output && !state->accumulator))
        return ATTN_ERROR_NULL_POINTER;
    // write_rows's arithmetic, so that a finished state has the bits of the full call.
    const float keep_scale = 1.0f / (1.0f - dropout_p);
    for (int64_t i = 0; i < rows; i++) {
        const int dead = state->row_max[i] == -INFINITY;
        if (output && value_dim > 0) {
            float *out = output + i * value_dim;
            const float *acc = state->accumulator + i * value_dim;
            if (dead) {
                memset(out, 0, sizeof(float) * (size_t)value_dim);
            } else {
                const float inverse = keep_scale / state->row_sum[i];
                for (int64_t d = 0; d < value_dim; d++) out[d] = acc[d] * inverse;
            }
        }
        if (logsumexp) logsumexp[i] = dead ? -INFINITY : state->row_max[i] + logf(state->row_sum[i]);
    }
    return ATTN_OK;
}

// ---------------------------------------------------------------------------
// Introspection.

int attn_sdpa_splits_keys(const attn_params *params) {
    if (validate(params, 0) != ATTN_OK) return 0;
    const call_plan plan = plan_call(params, requested_threads(params), 0, params->key_length, 0);
    return plan.tasks > 0 && plan.split;
}

int64_t attn_sdpa_stacked_heads(const attn_params *params) {
    if (validate(params, 1) != ATTN_OK) return 0;  // the output is not needed to tell
    return stacked_heads(params);
}

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
    case ATTN_ERROR_STORAGE: return "unknown key/value storage type, or 16-bit storage for a call that reads float32 (weights, scores, backward)";
    case ATTN_ERROR_KEY_RANGE: return "the key range is not within [0, key_length]";
    case ATTN_ERROR_KEY_LAYOUT: return "unknown key layout, a panel stride (key_strides[2]) below 16 * head_dim (panels) or 64 * head_dim (panels64), or panels for a call that reads rows (weights, scores, backward)";
    }
    return "unknown status";
}

const char *attn_kernel_path(void) { return attn_selected_microkernels()->name; }
