// attention.h: the whole C API of the fused attention kernel.
//
// One entry point, `attn_sdpa_forward`, computes FP32 scaled-dot-product
// attention
//
//     out = dropout(softmax(scale * Q Kᵀ + mask)) V
//
// with the FlashAttention-2 loop (Dao 2023, "FlashAttention-2: Faster Attention
// with Better Parallelism and Work Partitioning", Algorithm 1): query tiles
// outer, key/value tiles inner, an online softmax per query row, and never an
// L×S score matrix in memory.
//
// Shapes (element strides are passed, so a [B, L, H, D] projection needs no copy):
//   query     [batch, query_heads, query_length, head_dim]
//   key       [batch, kv_heads,    key_length,   head_dim]
//   value     [batch, kv_heads,    key_length,   value_dim]
//   output    [batch, query_heads, query_length, value_dim]
//   logsumexp [batch, query_heads, query_length]              (optional)
//   mask      [batch, query_heads, query_length, key_length]  (optional; stride 0 broadcasts)
//   key_padding_keep [batch, key_length]                      (optional)
// Keys and values may be stored as float32, float16 or bfloat16 (kv_storage):
// the kernel widens each element exactly to float32 and computes in float32, so
// a call with 16-bit storage gives the bits of a float32 call on the widened values.
// The innermost dimension of query, key, value and output must be contiguous
// (stride 1). Strides and sizes are int64 element counts throughout.
//
// Semantics (pinned by the Swift test suite):
//   * grouped-query attention: kv head = query head / (query_heads / kv_heads).
//   * causal masks: top-left (PyTorch is_causal: query i sees keys j <= i) or
//     bottom-right (key/value cache: query i sees keys j <= i + key_length - query_length).
//   * a keep mask (uint8, nonzero = attend) or an additive mask (float, added to
//     the scaled logits; -inf masks) may be combined with a causal mask.
//   * a query row with no visible key gives a zero output row and logsumexp -inf.
//   * NaN in an unmasked input propagates; NaN or Inf at a masked key has no effect.
//   * dropout (training) drops attention weights with probability dropout_p and
//     scales the kept ones by 1/(1 - dropout_p). The keep decision for the cell
//     (batch, head, row, column) comes from Philox-4x32-10 (Salmon et al. 2011,
//     "Parallel random numbers: as easy as 1, 2, 3"), see attn_philox_keep.
//     logsumexp is that of the softmax before dropout.
//   * a row's result does not depend on the thread count, the batch size or the
//     query tile it falls in, bit for bit.
#ifndef CATTENTION_ATTENTION_H
#define CATTENTION_ATTENTION_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A plan of rounds of tasks (see "Plans" below), owned by the caller until attn_plan_destroy.
typedef struct attn_plan attn_plan;

/// Status codes returned by the entry points. 0 is success.
typedef enum attn_status {
    ATTN_OK = 0,
    ATTN_ERROR_NULL_POINTER = 1,      ///< a required pointer is NULL
    ATTN_ERROR_NEGATIVE_SIZE = 2,     ///< a size is negative
    ATTN_ERROR_GROUPED_QUERY = 3,     ///< query_heads is not a multiple of kv_heads (or kv_heads is 0 with work to do)
    ATTN_ERROR_INNER_STRIDE = 4,      ///< the innermost dimension of query/key/value/output is not contiguous
    ATTN_ERROR_SCALE = 5,             ///< scale is not finite
    ATTN_ERROR_DROPOUT = 6,           ///< dropout_p is not in [0, 1)
    ATTN_ERROR_MASK_KIND = 7,         ///< unknown mask kind or causal value
    ATTN_ERROR_OUT_OF_MEMORY = 8,     ///< per-thread scratch could not be allocated
    ATTN_ERROR_SIZE_OVERFLOW = 9,     ///< a product of sizes (rows, tasks, scratch) overflows int64
    ATTN_ERROR_STORAGE = 10,          ///< unknown kv_storage, or 16-bit where a call reads float32 (weights, scores, backward)
    ATTN_ERROR_KEY_RANGE = 11,        ///< a partial call's key range is not within [0, key_length]
    ATTN_ERROR_KEY_LAYOUT = 12,       ///< unknown key_layout, a panel stride below 16·head_dim (PANELS) or 64·head_dim (PANELS64), or panels where a call reads rows (weights, scores, backward)
} attn_status;

/// How the key and value elements are stored in memory.
typedef enum attn_storage {
    /// float32: `key` and `value` point at floats (the default, 0).
    ATTN_STORAGE_F32 = 0,
    /// IEEE 754 binary16: `key` and `value` point at uint16_t bit patterns
    /// (cast to const float *); strides stay in elements. Widened exactly to float32.
    ATTN_STORAGE_F16 = 1,
    /// bfloat16, the high 16 bits of a float32: as ATTN_STORAGE_F16, widened
    /// exactly (a shift).
    ATTN_STORAGE_BF16 = 2,
} attn_storage;

/// How the key elements are laid out (values are always rows).
typedef enum attn_key_layout {
    /// Rows: key (b, h, j, d) at key + b·ks[0] + h·ks[1] + j·ks[2] + d (the default, 0).
    ATTN_KEY_LAYOUT_ROWS = 0,
    /// Panels of 16 keys × head_dim, keys innermost: key (b, h, j, d) at
    /// key + b·ks[0] + h·ks[1] + (j / 16)·ks[2] + d·16 + j % 16, ks[2] being the
    /// distance between panels (≥ 16·head_dim), ks[3] = 1. Every panel holds 16
    /// keys' storage, the last one too (slots past key_length are read, never
    /// used). A decode step (≤ 8 query rows) reads such keys with plain vector
    /// loads, each lane one key, in the FMA order of the tiled kernel, instead
    /// of transposing 16 × 16 blocks of rows: same bits, a fifth of the
    /// instructions per key byte. For a key/value cache, which owns its layout.
    ATTN_KEY_LAYOUT_PANELS = 1,
    /// Panels of 64 keys × head_dim (one kernel key tile), keys innermost: key
    /// (b, h, j, d) at key + b·ks[0] + h·ks[1] + (j / 64)·ks[2] + d·64 + j % 64,
    /// ks[2] being the distance between panels (≥ 64·head_dim), ks[3] = 1.
    /// Every panel holds 64 keys' storage, the last one too (slots past
    /// key_length are read, never used). Read as PANELS is, with the same bits
    /// (as rows), but a decode step's tile of 64 keys is one sequential stream
    /// instead of four interleaved panels, which the hardware prefetchers follow
    /// from DRAM. Tiles that start off a multiple of 64 (a partial call's
    /// key_begin) take a scalar unpacking, still the same bits.
    ATTN_KEY_LAYOUT_PANELS64 = 2,
} attn_key_layout;

/// Which causal mask, if any, the kernel applies.
typedef enum attn_causal {
    ATTN_CAUSAL_NONE = 0,
    ATTN_CAUSAL_TOP_LEFT = 1,     ///< query i sees keys j <= i (PyTorch is_causal)
    ATTN_CAUSAL_BOTTOM_RIGHT = 2, ///< query i sees keys j <= i + key_length - query_length
} attn_causal;

/// The kind of the explicit mask tensor, if any.
typedef enum attn_mask_kind {
    ATTN_MASK_NONE = 0,
    ATTN_MASK_KEEP = 1,      ///< uint8 [B, Hq, Lq, Lk]: nonzero = the query attends to the key
    ATTN_MASK_ADDITIVE = 2,  ///< float [B, Hq, Lq, Lk]: added to the scaled logits
} attn_mask_kind;

/// Everything one call needs. Zero-initialise it, then fill in what applies.
typedef struct attn_params {
    int64_t batch, query_heads, kv_heads;
    int64_t query_length, key_length;
    int64_t head_dim, value_dim;

    const float *query;   int64_t query_strides[4];
    /// Keys and values, in kv_storage's element type: with 16-bit storage these
    /// point at uint16_t elements (pass them cast), strides still in elements.
    const float *key;     int64_t key_strides[4];
    const float *value;   int64_t value_strides[4];
    float *output;        int64_t output_strides[4];
    float *logsumexp;     int64_t logsumexp_strides[3];  ///< optional (NULL): natural log

    float scale;                 ///< multiplies Q Kᵀ; any finite value, 0 included
    attn_causal causal;

    attn_mask_kind mask_kind;
    const void *mask;     int64_t mask_strides[4];      ///< stride 0 broadcasts a dimension

    /// Optional (NULL) key padding, uint8 [batch, key_length]: 0 = the key is
    /// padding and no query attends to it; combines with every other mask, so a
    /// layer's padding never needs a [Lq, Lk] buffer.
    const unsigned char *key_padding_keep;  int64_t key_padding_strides[2];

    float dropout_p;             ///< in [0, 1); 0 disables dropout
    uint64_t dropout_seed;       ///< Philox key

    /// Workers the call's plan is made for: 0 = attn_default_threads(). The C
    /// driver (attn_sdpa_forward) runs them as OpenMP threads, or serially
    /// without OpenMP; another driver runs them as it likes (see attn_plan).
    int32_t num_threads;

    /// The element type of key and value (0: float32).
    attn_storage kv_storage;

    /// The layout of key (0: rows).
    attn_key_layout key_layout;
} attn_params;

/// Computes the fused forward pass described at the top of this file.
/// Validates `params` once and returns an attn_status; on an error nothing is written.
attn_status attn_sdpa_forward(const attn_params *params);

// ---------------------------------------------------------------------------
// Backward pass: the gradients of attn_sdpa_forward.
//
//   dO [B, Hq, Lq, Dv]  →  dQ [B, Hq, Lq, D], dK [B, Hkv, Lk, D], dV [B, Hkv, Lk, Dv]
//
// FlashAttention-2's backward (Dao 2023, Algorithm 2), with no L×S buffer:
// D = rowsum(dO ∘ O); per tile, P = exp(S − logsumexp) recomputed from Q, K and
// the masks; dV += (P ∘ Z)ᵀ dO; dP = (dO Vᵀ) ∘ Z; dS = P ∘ (dP − D);
// dQ += scale · dS K; dK += scale · dSᵀ Q, where Z is the dropout keep mask
// scaled by 1/(1 − dropout_p), regenerated from the same Philox cells as the
// forward call (attn_philox_keep), never stored.
//
// Semantics:
//   * every option of attn_params means what it means for the forward; the
//     output and logsumexp are those the forward call returned (both read).
//   * grouped-query attention: dK and dV of a kv head sum the query heads of its
//     group, in head order.
//   * a query row with no visible key (logsumexp −∞) gets a zero dQ row and adds
//     nothing to dK, dV; NaN or ±∞ at a masked key or query has no effect;
//     NaN elsewhere propagates.
//   * deterministic: the same bits for any thread count, worker count or driver
//     (each gradient row is summed by one task, in a fixed order; no atomics).
//
// The plan (attn_sdpa_backward_plan_create) has two rounds: D per (batch, head,
// query tile), then either one task per (batch, kv head) computing all of its
// gradients (with at least two such tasks a worker, or one worker), or one
// task per (batch, kv head, key tile) computing its dK and dV rows together
// with one task per (batch, head, query tile) computing its dQ rows (S and dP
// recomputed by both). Both orders sum every gradient row alike: same bits.

/// The arguments of one backward call.
typedef struct attn_backward_params {
    /// The forward call's arguments. forward.output (O) and forward.logsumexp
    /// (required) are read, not written; forward.num_threads is the workers.
    attn_params forward;
    const float *grad_output; int64_t grad_output_strides[4];  ///< dO [B, Hq, Lq, Dv]
    float *grad_query;        int64_t grad_query_strides[4];   ///< dQ [B, Hq, Lq, D]
    float *grad_key;          int64_t grad_key_strides[4];     ///< dK [B, Hkv, Lk, D]
    float *grad_value;        int64_t grad_value_strides[4];   ///< dV [B, Hkv, Lk, Dv]
} attn_backward_params;

/// Computes dQ, dK and dV (see above) with the C driver (OpenMP, or serially
/// without it). Validates once; on an error nothing is written. The innermost
/// dimension of every gradient and of dO must be contiguous.
attn_status attn_sdpa_backward(const attn_backward_params *params);

/// The plan of attn_sdpa_backward for params->forward.num_threads workers, for
/// any driver (see "Plans" below). The pointers must stay valid while it runs.
attn_status attn_sdpa_backward_plan_create(const attn_backward_params *params, attn_plan **plan);

/// A fully connected layer, y = x·Wᵀ + b (PyTorch's nn.Linear layout):
///   x [rows, in_features], weight [out_features, in_features], bias [out_features]
///   (optional, NULL for none), y [rows, out_features]; all contiguous.
/// Uses the same micro-kernels as the attention tile product Q·Kᵀ, parallel over
/// (row tile, output-column group) tasks: a plan (attn_linear_plan_create) run by
/// the C driver, on `num_threads` threads (0: attn_default_threads(); 1 without
/// OpenMP). Returns ATTN_ERROR_NULL_POINTER (x, weight or y NULL with something
/// to compute), ATTN_ERROR_NEGATIVE_SIZE, ATTN_ERROR_SIZE_OVERFLOW (in_features
/// above 2^40, or x or y too large to address) or ATTN_ERROR_OUT_OF_MEMORY; on
/// an error y is not written.
/// For 1–8 rows (decoding), attn_linear_packed_forward on weights packed once by
/// attn_linear_pack reads them at memory speed, with the same bits.
attn_status attn_linear_forward(const float *x, int64_t rows, int64_t in_features,
                                const float *weight, const float *bias, int64_t out_features,
                                float *y, int32_t num_threads);

/// Weights of a fully connected layer packed for products of a few rows (a
/// decoding step's projections), made by attn_linear_pack.
typedef struct attn_linear_packed attn_linear_packed;

/// Packs weight [out_features, in_features] (nn.Linear's layout, contiguous)
/// into panels of 16 output columns, [ceil(out/16), in_features, 16] (zero past
/// out_features), in memory the packing owns: a copy, so later changes to
/// `weight` do not reach it (weight may be NULL when in_features or
/// out_features is 0). Free it with attn_linear_packed_destroy.
/// Returns ATTN_ERROR_NULL_POINTER, ATTN_ERROR_NEGATIVE_SIZE,
/// ATTN_ERROR_SIZE_OVERFLOW or ATTN_ERROR_OUT_OF_MEMORY (then *packed is NULL).
attn_status attn_linear_pack(const float *weight, int64_t in_features, int64_t out_features,
                             attn_linear_packed **packed);

/// Frees a packing (NULL: nothing). No product may be using it.
void attn_linear_packed_destroy(attn_linear_packed *packed);

/// The bytes of the packed panels, 4 · 16 · ceil(out/16) · in_features (what a
/// product reads of the weights; the memory the packing holds beyond its
/// header); 0 for NULL.
int64_t attn_linear_packed_bytes(const attn_linear_packed *packed);

/// y = x·Wᵀ + b on packed weights: x [rows, in_features], bias [out_features]
/// (NULL for none), y [rows, out_features], contiguous. A matrix-vector
/// product that reads the weights once per 8 rows (meant for 1–8 rows), in
/// contiguous panel ranges split between the threads. Every output has the
/// bits of attn_linear_forward on the unpacked weights (the same operations,
/// in the same order), whatever `rows`, the kernel path, `num_threads` or driver.
/// `num_threads`: 0 for attn_default_threads() (1 without OpenMP). Returns
/// ATTN_ERROR_NULL_POINTER (packed NULL, or x or y NULL with something to
/// compute; x may be NULL when in_features is 0), ATTN_ERROR_NEGATIVE_SIZE (rows
/// below 0), ATTN_ERROR_SIZE_OVERFLOW (x or y too large to address) or
/// ATTN_ERROR_OUT_OF_MEMORY; on an error y is not written. `packed` is only
/// read: several threads may use one packing at once.
attn_status attn_linear_packed_forward(const float *x, int64_t rows, const attn_linear_packed *packed,
                                       const float *bias, float *y, int32_t num_threads);


// ---------------------------------------------------------------------------
// Plans: a call as rounds of independent tasks, for any threading driver.
//
// attn_sdpa_forward and attn_linear_forward are a plan run by the C driver
// (OpenMP threads, or serially without OpenMP). A program with threads of its
// own (Swift's Dispatch, a thread pool) runs the same plan itself:
//
//     attn_plan *plan;
//     attn_sdpa_plan_create(&params, &plan);          // validates, allocates scratch
//     for (int32_t r = 0; r < attn_plan_rounds(plan); r++)
//         for each w in [0, attn_plan_workers(plan)), concurrently:
//             attn_plan_work(plan, r, w);             // then wait for all of them
//     attn_plan_destroy(plan);
//
// The rounds of an attention call: a check of the value tiles for NaN/±∞ (when
// several query tiles will read them), then either one task per (batch, head,
// query tile), or — split-KV, when there are too few of those for the workers —
// one task per (head, 512-key chunk) followed by one merge task per head. Every
// driver and worker count gives the same bits.


/// Validates `params` (as attn_sdpa_forward does) and makes the plan of the call
/// for params->num_threads workers (0: attn_default_threads()), allocating all the
/// scratch it needs. The pointers in `params` must stay valid while the plan
/// runs; `params` itself is copied. On an error *plan is NULL.
attn_status attn_sdpa_plan_create(const attn_params *params, attn_plan **plan);

/// The plan of attn_linear_forward, for `num_threads` workers (0: the default).
attn_status attn_linear_plan_create(const float *x, int64_t rows, int64_t in_features,
                                    const float *weight, const float *bias, int64_t out_features,
                                    float *y, int32_t num_threads, attn_plan **plan);

/// The plan of attn_linear_packed_forward, for `num_threads` workers (0: the
/// default). `packed`, x, bias and y must stay valid while it runs.
attn_status attn_linear_packed_plan_create(const float *x, int64_t rows, const attn_linear_packed *packed,
                                           const float *bias, float *y, int32_t num_threads,
                                           attn_plan **plan);

/// The number of rounds (0 for a call with nothing to compute).
int32_t attn_plan_rounds(const attn_plan *plan);

/// The number of tasks in `round`.
int64_t attn_plan_tasks(const attn_plan *plan, int32_t round);

/// The number of workers the plan has scratch for (at least 1): a driver starts
/// at most this many per round, each with a distinct index below it.
int32_t attn_plan_workers(const attn_plan *plan);

/// One worker's share of one round: runs tasks taken from the round's shared
/// atomic counter until none are left. Call it for round r + 1 only after
/// every call for round r has returned. A plan runs once.
void attn_plan_work(attn_plan *plan, int32_t round, int32_t worker);

/// The C driver: runs every round on attn_plan_workers(plan) OpenMP threads
/// (serially without OpenMP), with a barrier between rounds.
attn_status attn_plan_run(attn_plan *plan);

/// Frees the plan and its scratch (NULL is ignored).
void attn_plan_destroy(attn_plan *plan);

/// What OpenMP's workers do between calls.
typedef enum attn_idle_wait {
    ATTN_IDLE_WAIT_RUNTIME = 0,  ///< the OpenMP runtime's own setting (KMP_BLOCKTIME; libomp: spin 200 ms)
    ATTN_IDLE_WAIT_SPIN = 1,     ///< spin for 200 ms after a call: the next call starts at once, CPU is burnt
    ATTN_IDLE_WAIT_SLEEP = 2,    ///< sleep at once: no CPU between calls, a wake-up at the next one
} attn_idle_wait;

/// The policy in force before any call to attn_set_idle_wait and without
/// ATTENTION_IDLE_WAIT or KMP_BLOCKTIME in the environment (README, "Threads").
#define ATTN_IDLE_WAIT_DEFAULT_POLICY ATTN_IDLE_WAIT_SLEEP

/// Sets what OpenMP's workers do after each later call of the C driver (applied
/// by each calling thread at its next call). Returns 0 for an unknown value.
/// The environment sets the initial policy: ATTENTION_IDLE_WAIT=spin|sleep|runtime
/// (another value: one warning on stderr, then the default); an explicit
/// KMP_BLOCKTIME alone means runtime. No effect without OpenMP
/// (Dispatch's threads park in the kernel between calls).
int attn_set_idle_wait(attn_idle_wait policy);

/// The policy in force.
attn_idle_wait attn_get_idle_wait(void);

/// The attention weights, materialised, in float32 (weights.c):
///   query [batch, query_heads, query_length, head_dim], key [batch, kv_heads, key_length, head_dim]
///   and the masks as in params (value, output and logsumexp fields are not read);
///   logsumexp [batch, query_heads, query_length], contiguous: attn_sdpa_forward's
///   for the same params (value_dim may be 0 there, which skips P·V);
///   weights [batch, query_heads, query_length, key_length], contiguous, written:
///     weights[i][j] = exp(scale·q_i·k_j + mask − logsumexp[i]), 0 where masked, NaN on
///     a NaN row, then dropout as in the forward pass (the cells of attn_philox_keep
///     for dropout_seed; kept ·1/(1 − dropout_p), dropped ·0).
/// Runs with the C driver (OpenMP threads for params->num_threads, serially
/// without OpenMP); attn_sdpa_weights_plan_create gives the plan for another
/// driver (one round, one task per (batch, head, query tile)). Costs one Q·Kᵀ and
/// one exp and store per cell.
attn_status attn_sdpa_weights(const attn_params *params, const float *logsumexp, float *weights);

/// The plan of attn_sdpa_weights, for params->num_threads workers.
attn_status attn_sdpa_weights_plan_create(const attn_params *params, const float *logsumexp,
                                          float *weights, attn_plan **plan);

/// The scores before softmax, in float32 (weights.c): scores [batch, query_heads,
/// query_length, key_length], contiguous, written with scale·q_i·k_j (+ the additive
/// mask, in float32), −∞ where masked (causal, keep mask, key padding), NaN where the
/// logit is ±∞. Same operands and drivers as attn_sdpa_weights.
attn_status attn_sdpa_scores(const attn_params *params, float *scores);

/// The plan of attn_sdpa_scores, for params->num_threads workers.
attn_status attn_sdpa_scores_plan_create(const attn_params *params, float *scores, attn_plan **plan);

// ---------------------------------------------------------------------------
// Partial results over a slice of the keys, and their exact merge.
//
// Attention over keys [key_begin, key_end) of a call gives, per query row, the
// online-softmax state of that slice (Dao et al. 2023, "Flash-Decoding"):
//   M = the largest scaled logit seen (−∞ if the row saw no key of the slice),
//   L = Σ_j e^(s_j − M),  O = Σ_j e^(s_j − M)·v_j (dropout applied, not divided by L),
// and states merge in key order: M' = max(M, m), L' = L·e^(M − M') + l·e^(m − M'),
// O' = O·e^(M − M') + o·e^(m − M'); the result is out = O / L / (1 − dropout_p)
// and logsumexp = M + log L. Masks, the causal alignment and dropout's cell
// indices are those of the whole call (columns are absolute key indices), so a
// slice is attention over the whole call's keys restricted to the slice.
//
// Bits: the kernel computes every call as chunks of 512 keys from key 0, merged
// in key order with this very arithmetic (attn_partial_merge). A slice whose
// key_begin is a multiple of 512 computes those same chunks; so merging, in key
// order, a first slice [0, b) with slices of at most one chunk each that start
// on a multiple of 512 gives the unsliced call's bits. Merging two slices of
// several chunks each groups the floating-point sums differently (the merge is
// not associative) and agrees to rounding.

/// The per-row state of a slice, rows = batch · query_heads · query_length in
/// [batch, head, row] order, all contiguous.
typedef struct attn_partial {
    float *row_max;      ///< M [rows]
    float *row_sum;      ///< L [rows]
    float *accumulator;  ///< O [rows, value_dim]
} attn_partial;

/// Attention over keys [key_begin, key_end) of `params` (0 ≤ key_begin ≤ key_end ≤
/// key_length), written to `partial` (params->output and logsumexp are not
/// used and may be NULL). Returns what attn_sdpa_forward would for bad params,
/// ATTN_ERROR_KEY_RANGE for a bad range, ATTN_ERROR_NULL_POINTER for a missing
/// partial buffer. Runs on the C driver.
attn_status attn_sdpa_partial_forward(const attn_params *params, int64_t key_begin,
                                      int64_t key_end, const attn_partial *partial);

/// The plan of attn_sdpa_partial_forward, for any driver (see attn_plan).
attn_status attn_sdpa_partial_plan_create(const attn_params *params, int64_t key_begin,
                                          int64_t key_end, const attn_partial *partial,
                                          attn_plan **plan);

/// merged ⊕= next, row by row in place (next holds the later keys): `rows` rows
/// of `value_dim` values. A row of next with M = −∞ changes nothing; NaN wins.
attn_status attn_partial_merge(const attn_partial *merged, const attn_partial *next, int64_t rows,
                               int64_t value_dim);

/// The result of a (merged) state: output [rows, value_dim] = O / L / (1 −
/// dropout_p), logsumexp [rows] = M + log L (either may be NULL); a row with
/// M = −∞ gives zeros and −∞, as the full call does.
attn_status attn_partial_finish(const attn_partial *state, int64_t rows, int64_t value_dim,
                                float dropout_p, float *output, float *logsumexp);

// ---------------------------------------------------------------------------
// Roofs.

/// Zero-filled memory for a key/value cache (or any large buffer a decode step
/// streams whole): `bytes` bytes, 64-byte aligned; from 2 MiB up, mapped
/// 2 MiB-aligned and, on Linux, advised to use transparent huge pages
/// (madvise MADV_HUGEPAGE, granted in the "madvise" and "always" modes of
/// /sys/kernel/mm/transparent_hugepage/enabled; not on macOS), so
/// that streaming it costs a TLB entry per 2 MiB instead of per 4 KiB. NULL if
/// `bytes` < 1 or the memory cannot be had. Free it with attn_cache_free and
/// the same `bytes`.
void *attn_cache_alloc(int64_t bytes);

/// Frees memory from attn_cache_alloc(bytes) (NULL is ignored).
void attn_cache_free(void *memory, int64_t bytes);

/// The read bandwidth of this machine in GB/s (10^9 bytes per second): `threads`
/// threads each run a two-array float32 dot product (what a decode step does
/// with keys and values) over its share of `bytes` of data (first touched by
/// that thread), in the widest vectors of the selected path. The passes are
/// synchronised: a barrier sets all threads off on each pass together, and a
/// pass's rate is all the bytes over its time, from the first thread's start
/// to the last one's finish (the slowest thread's time when they overlap); the
/// result is the best pass of several (at least 3) over about `seconds`. OpenMP
/// threads where compiled in, else POSIX threads; a thread that cannot start
/// leaves its share to the others (a lower roof). 0 if the memory cannot be
/// had. For the benchmarks' "% of roof": `bytes` sets where the data lives
/// (above the last-level cache: DRAM).
double attn_read_bandwidth_gbps(int32_t threads, int64_t bytes, double seconds);

/// The number of query heads the plan of this call puts in one tile
/// (grouped-query decoding: the query heads of a kv head share its key and
/// value stream); 1 when heads are not stacked, 0 for invalid params.
/// For tests and diagnostics: stacking changes no bit of the result.
int64_t attn_sdpa_stacked_heads(const attn_params *params);

/// A static, human-readable description of a status code.
const char *attn_status_description(attn_status status);

/// Whether the plan of this call splits each head's keys into chunks that
/// different threads compute (split-KV: few query tiles, many keys, and more
/// threads than tasks otherwise, as in decoding with few heads); 0 for invalid
/// params. For diagnostics and tests only: the chunks are part of every call's
/// arithmetic, so splitting them across threads changes no bit of the result.
int attn_sdpa_splits_keys(const attn_params *params);

/// The name of the micro-kernel path in use ("avx512", "avx2", "neon", "portable").
const char *attn_kernel_path(void);

/// Switches the micro-kernel path ("avx512", "avx2", "neon", "portable") for later calls.
/// Returns 1 on success, 0 if the name is unknown or this CPU cannot run it.
/// Not safe while other threads are inside attn_sdpa_forward; for tests and
/// benchmarks. ATTENTION_KERNEL_PATH sets the initial path the same way (an
/// unknown or unsupported name: one warning on stderr, then the best path).
int attn_select_kernel_path(const char *name);

/// 1 if this CPU can run the named micro-kernel path, else 0.
int attn_kernel_path_supported(const char *name);

/// The FMA throughput of this machine in GFLOP/s, measured for about `seconds`
/// with `threads` threads running register-only FMA chains on the vectors of
/// the selected path (2 FLOPs per lane per FMA). For benchmarks' "% of peak".
double attn_fma_peak_gflops(int32_t threads, double seconds);

/// Whether the library was compiled with OpenMP (1) or runs serially (0).
int attn_has_openmp(void);

/// The number of workers a call with num_threads = 0 is planned for: OpenMP's
/// default (OMP_NUM_THREADS or the cores) with OpenMP, else the processors online.
int attn_default_threads(void);

/// Philox-4x32-10 on one 128-bit counter and a 64-bit key: out[0..3] = philox(counter, key).
void attn_philox4x32_10(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/// The dropout decision for one attention weight: 1 if the cell is kept.
/// counter = (column / 4, row, head, batch), each the low 32 bits of the index,
/// key = (seed low 32 bits, seed high 32 bits); the
/// draw is output word column % 4, taken as a 24-bit uniform u = (word >> 8) * 2^-24,
/// and the cell is kept when u >= dropout_p.
int attn_philox_keep(uint64_t seed, int64_t batch, int64_t head, int64_t row,
                     int64_t column, float dropout_p);

#ifdef __cplusplus
}
#endif

#endif
