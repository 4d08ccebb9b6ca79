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
} attn_status;

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

    int32_t num_threads;         ///< 0: OpenMP's default; ignored without OpenMP
} attn_params;

/// Computes the fused forward pass described at the top of this file.
/// Validates `params` once and returns an attn_status; on an error nothing is written.
attn_status attn_sdpa_forward(const attn_params *params);

/// A fully connected layer, y = x·Wᵀ + b (PyTorch's nn.Linear layout):
///   x [rows, in_features], weight [out_features, in_features], bias [out_features]
///   (optional, NULL for none), y [rows, out_features]; all contiguous.
/// Uses the same micro-kernels as the attention tile product Q·Kᵀ, parallel over
/// row tiles. Returns ATTN_ERROR_NULL_POINTER or ATTN_ERROR_NEGATIVE_SIZE on bad input.
attn_status attn_linear_forward(const float *x, int64_t rows, int64_t in_features,
                                const float *weight, const float *bias, int64_t out_features,
                                float *y, int32_t num_threads);

/// The same computation for a driver other than OpenMP (Swift's Dispatch, a
/// thread pool): start any number of workers, each calling this with the same
/// counter, initialised to 0; each takes task indices (batch, head, query tile)
/// from it atomically until none are left, with scratch of its own. The result
/// is bit for bit that of attn_sdpa_forward. num_threads is ignored.
attn_status attn_sdpa_run_tasks(const attn_params *params, int64_t *next_task);

/// The attention weights, materialised, in float32 (weights.c):
///   query [batch, query_heads, query_length, head_dim], key [batch, kv_heads, key_length, head_dim]
///   and the masks as in params (value, output and logsumexp fields are not read);
///   logsumexp [batch, query_heads, query_length], contiguous: attn_sdpa_forward's
///   for the same params (value_dim may be 0 there, which skips P·V);
///   weights [batch, query_heads, query_length, key_length], contiguous, written:
///     weights[i][j] = exp(scale·q_i·k_j + mask − logsumexp[i]), 0 where masked, NaN on
///     a NaN row, then dropout as in the forward pass (the cells of attn_philox_keep
///     for dropout_seed; kept ·1/(1 − dropout_p), dropped ·0).
/// next_task: NULL runs every (batch, head, query tile) task on the calling thread;
/// otherwise any number of workers may call this with the same counter (initialised
/// to 0), as with attn_sdpa_run_tasks. Costs one Q·Kᵀ and one exp and store per cell.
attn_status attn_sdpa_weights(const attn_params *params, const float *logsumexp, float *weights,
                              int64_t *next_task);

/// The scores before softmax, in float32 (weights.c): scores [batch, query_heads,
/// query_length, key_length], contiguous, written with scale·q_i·k_j (+ the additive
/// mask, in float32), −∞ where masked (causal, keep mask, key padding), NaN where the
/// logit is ±∞. Same operands and next_task as attn_sdpa_weights.
attn_status attn_sdpa_scores(const attn_params *params, float *scores, int64_t *next_task);

/// A static, human-readable description of a status code.
const char *attn_status_description(attn_status status);

/// Whether attn_sdpa_forward would split each head's keys into chunks that
/// different threads compute (split-KV: few query tiles, many keys, and more
/// threads than tasks otherwise, as in decoding with few heads); 0 for invalid
/// params. For diagnostics and tests only: the chunks are part of every call's
/// arithmetic, so splitting them across threads changes no bit of the result.
int attn_sdpa_splits_keys(const attn_params *params);

/// The name of the micro-kernel path in use ("avx512", "avx2", "portable").
const char *attn_kernel_path(void);

/// Switches the micro-kernel path ("avx512", "avx2", "portable") for later calls.
/// Returns 1 on success, 0 if the name is unknown or this CPU cannot run it.
/// Not safe while other threads are inside attn_sdpa_forward; for tests and
/// benchmarks. ATTENTION_KERNEL_PATH sets the initial path the same way.
int attn_select_kernel_path(const char *name);

/// 1 if this CPU can run the named micro-kernel path, else 0.
int attn_kernel_path_supported(const char *name);

/// The FMA throughput of this machine in GFLOP/s, measured for about `seconds`
/// with `threads` threads running register-only FMA chains on the vectors of
/// the selected path (2 FLOPs per lane per FMA). For benchmarks' "% of peak".
double attn_fma_peak_gflops(int32_t threads, double seconds);

/// Whether the library was compiled with OpenMP (1) or runs serially (0).
int attn_has_openmp(void);

/// The number of threads a call with num_threads = 0 uses.
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
