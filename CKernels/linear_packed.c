// linear_packed.c: y = x·Wᵀ + b for a few rows (a decoding step's projection),
// a matrix-vector product bound by reading W once, on weights packed in panels.
//
//   x      [rows, in_features]                         (activations, row-major)
//   packed [ceil(out_features / 16), in_features, 16]  panel p, dim d, lane l = W[16p + l][d]
//                                                      (0 past out_features)
//   bias   [out_features] or NULL
//   y      [rows, out_features]
//
// In panels, the 16 output columns of a panel at input dim d are one vector:
// a row's product is a broadcast of x[r][d] times one vector load, one FMA per
// 16 outputs and dim, no transposes, and each task streams its own contiguous
// run of panels. Every output is fma(x[r][d], W[j][d], ·) over d from 0 starting
// at +0, then + bias[j] — the very operations of linear.c's tile path (qk_tile
// of the selected micro-kernel path: fused multiply-add on avx512, avx2 and
// neon, a multiply then an add on portable), so a row has the same bits whatever
// the number of rows, the path taken, the thread count or the driver.
#include "attention.h"
#include "microkernels/microkernels.h"
#include "plan.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    PANEL = 16,            // output columns per panel: one AVX-512 vector
    MAX_CHUNK_ROWS = 8,    // rows of x per pass over the weights
    TASK_MIN_PANELS = 4,   // a task streams at least this many panels (when there are)
    TASKS_PER_WORKER = 4,  // slack for a worker that a shared machine slows down
};

struct attn_linear_packed {
    int64_t in_features, out_features, panels;
    float *panel;  // [panels, in_features, PANEL], 64-byte aligned
};

// ---------------------------------------------------------------------------
// Packing.

attn_status attn_linear_pack(const float *weight, int64_t in_features, int64_t out_features,
                             attn_linear_packed **packed_out) {
    if (!packed_out) return ATTN_ERROR_NULL_POINTER;
    *packed_out = 0;
    if (in_features < 0 || out_features < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    if (in_features > ((int64_t)1 << 40) || out_features > ((int64_t)1 << 40)) return ATTN_ERROR_SIZE_OVERFLOW;
    const int64_t panels = (out_features + PANEL - 1) / PANEL;
    if (in_features > 0 && panels > INT64_MAX / PANEL / in_features / (int64_t)sizeof(float))
        return ATTN_ERROR_SIZE_OVERFLOW;
    const int64_t floats = panels * in_features * PANEL;
    if (floats > 0 && !weight) return ATTN_ERROR_NULL_POINTER;
    attn_linear_packed *packed = calloc(1, sizeof(attn_linear_packed));
    if (!packed) return ATTN_ERROR_OUT_OF_MEMORY;
    packed->in_features = in_features;
    packed->out_features = out_features;
    packed->panels = panels;
    if (floats > 0) {
        packed->panel = attn_aligned_alloc(sizeof(float) * (size_t)floats);
        if (!packed->panel) {
            free(packed);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
        // Panel by panel, 16 weight rows read side by side (each sequentially).
        for (int64_t p = 0; p < panels; p++) {
            float *dst = packed->panel + p * in_features * PANEL;
            const int64_t cols = out_features - p * PANEL < PANEL ? out_features - p * PANEL : PANEL;
            for (int64_t d = 0; d < in_features; d++) {
                for (int64_t l = 0; l < cols; l++) dst[d * PANEL + l] = weight[(p * PANEL + l) * in_features + d];
                for (int64_t l = cols; l < PANEL; l++) dst[d * PANEL + l] = 0.0f;
            }
        }
    }
    *packed_out = packed;
    return ATTN_OK;
}

void attn_linear_packed_destroy(attn_linear_packed *packed) {
    if (!packed) return;
    attn_aligned_free(packed->panel);
    free(packed);
}

int64_t attn_linear_packed_bytes(const attn_linear_packed *packed) {
    return packed ? packed->panels * packed->in_features * PANEL * (int64_t)sizeof(float) : 0;
}

// ---------------------------------------------------------------------------
// The products of `rows` rows of x (rows ≤ MAX_CHUNK_ROWS) with panels
// [p0, p1), written to y with the bias. One function per path, each over
// `groups` panels at a time.

typedef void (*panels_fn)(const float *x, int64_t in, int rows, const float *panel,
                          int64_t p0, int64_t p1, int64_t out, const float *bias, float *y);

// The scalar paths, lanes innermost: with `fused` 0 the multiply-then-add of
// qk_tile_portable (`s += key · q`), with `fused` 1 fmaf lane by lane (any other
// path with a fused multiply-add: neon). Inlined into each with `fused` a
// constant, so each keeps its own arithmetic.
__attribute__((always_inline)) static inline void panels_scalar(
    const float *x, int64_t in, int rows, const float *panel, int64_t p0, int64_t p1, int64_t out,
    const float *bias, float *y, const int fused) {
    for (int64_t p = p0; p < p1; p++) {
        const float *w = panel + p * in * PANEL;
        const int64_t col0 = p * PANEL, cols = out - col0 < PANEL ? out - col0 : PANEL;
        for (int r = 0; r < rows; r++) {
            float s[PANEL];
            for (int l = 0; l < PANEL; l++) s[l] = 0.0f;
            for (int64_t d = 0; d < in; d++) {
                const float q = x[r * in + d];
                if (fused) {
                    for (int l = 0; l < PANEL; l++) s[l] = fmaf(q, w[d * PANEL + l], s[l]);
                } else {
                    for (int l = 0; l < PANEL; l++) s[l] += w[d * PANEL + l] * q;
                }
            }
            for (int64_t l = 0; l < cols; l++) y[r * out + col0 + l] = bias ? s[l] + bias[col0 + l] : s[l];
        }
    }
}

static void panels_portable(const float *x, int64_t in, int rows, const float *panel, int64_t p0,
                            int64_t p1, int64_t out, const float *bias, float *y) {
    panels_scalar(x, in, rows, panel, p0, p1, out, bias, y, 0);
}

static void panels_fused(const float *x, int64_t in, int rows, const float *panel, int64_t p0,
                         int64_t p1, int64_t out, const float *bias, float *y) {
    panels_scalar(x, in, rows, panel, p0, p1, out, bias, y, 1);
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define INLINE __attribute__((always_inline)) inline
#define AVX512 __attribute__((target("avx512f")))
#define AVX2 __attribute__((target("avx2,fma")))

// Lines ahead of the one being read that each panel's stream prefetches (into
// L1): the hardware prefetcher keeps up with a few streams from L3, not always
// from DRAM.
enum { PREFETCH_LINES = 16 };

// `groups` panels side by side, `rows` rows: groups × rows accumulators.
AVX512 INLINE static void block_avx512(const float *x, int64_t in, const float *w, int64_t col0,
                                       int64_t out, const float *bias, float *y, const int rows,
                                       const int groups) {
    __m512 acc[4][MAX_CHUNK_ROWS];
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++)
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) acc[g][r] = _mm512_setzero_ps();
    const int64_t stride = in * PANEL;
    for (int64_t d = 0; d < in; d++) {
        _Pragma("clang loop unroll(full)")
        for (int g = 0; g < groups; g++) {
            _mm_prefetch((const char *)(w + g * stride + (d + PREFETCH_LINES) * PANEL), _MM_HINT_T0);
            const __m512 wv = _mm512_load_ps(w + g * stride + d * PANEL);
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < rows; r++) acc[g][r] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * in + d]), wv, acc[g][r]);
        }
    }
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        const int64_t c = col0 + g * PANEL;
        const int64_t cols = out - c < PANEL ? out - c : PANEL;
        const __mmask16 mask = (__mmask16)(cols >= PANEL ? 0xFFFF : ((1u << cols) - 1u));
        const __m512 b = bias ? _mm512_maskz_loadu_ps(mask, bias + c) : _mm512_setzero_ps();
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) {
            const __m512 v = bias ? _mm512_add_ps(acc[g][r], b) : acc[g][r];
            _mm512_mask_storeu_ps(y + r * out + c, mask, v);
        }
    }
}

// Rows per block and panels per block: at most 16 accumulators of 32 registers.
#define AVX512_ROWS(R)                                                                    \
    AVX512 static void rows##R##_avx512(const float *x, int64_t in, const float *panel, int64_t p0, \
                                        int64_t p1, int64_t out, const float *bias, float *y) { \
        enum { G = R <= 4 ? 4 : 2 };                                                      \
        int64_t p = p0;                                                                   \
        for (; p + G <= p1; p += G)                                                       \
            block_avx512(x, in, panel + p * in * PANEL, p * PANEL, out, bias, y, R, G);   \
        for (; p < p1; p++) block_avx512(x, in, panel + p * in * PANEL, p * PANEL, out, bias, y, R, 1); \
    }
AVX512_ROWS(1)
AVX512_ROWS(2)
AVX512_ROWS(3)
AVX512_ROWS(4)
AVX512_ROWS(5)
AVX512_ROWS(6)
AVX512_ROWS(7)
AVX512_ROWS(8)

static void panels_avx512(const float *x, int64_t in, int rows, const float *panel, int64_t p0,
                          int64_t p1, int64_t out, const float *bias, float *y) {
    switch (rows) {
    case 1: rows1_avx512(x, in, panel, p0, p1, out, bias, y); break;
    case 2: rows2_avx512(x, in, panel, p0, p1, out, bias, y); break;
    case 3: rows3_avx512(x, in, panel, p0, p1, out, bias, y); break;
    case 4: rows4_avx512(x, in, panel, p0, p1, out, bias, y); break;
    case 5: rows5_avx512(x, in, panel, p0, p1, out, bias, y); break;
    case 6: rows6_avx512(x, in, panel, p0, p1, out, bias, y); break;
    case 7: rows7_avx512(x, in, panel, p0, p1, out, bias, y); break;
    default: rows8_avx512(x, in, panel, p0, p1, out, bias, y); break;
    }
}

// AVX2: a panel is two vectors; at most 8 accumulators of 16 registers, so
// rows go 4 at a time (panels_avx2 splits larger chunks).
AVX2 INLINE static void block_avx2(const float *x, int64_t in, const float *w, int64_t col0,
                                   int64_t out, const float *bias, float *y, const int rows,
                                   const int groups) {
    __m256 acc[4][4][2];
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++)
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) acc[g][r][0] = acc[g][r][1] = _mm256_setzero_ps();
    const int64_t stride = in * PANEL;
    for (int64_t d = 0; d < in; d++) {
        _Pragma("clang loop unroll(full)")
        for (int g = 0; g < groups; g++) {
            _mm_prefetch((const char *)(w + g * stride + (d + PREFETCH_LINES) * PANEL), _MM_HINT_T0);
            const __m256 w0 = _mm256_load_ps(w + g * stride + d * PANEL);
            const __m256 w1 = _mm256_load_ps(w + g * stride + d * PANEL + 8);
            _Pragma("clang loop unroll(full)")
            for (int r = 0; r < rows; r++) {
                const __m256 q = _mm256_broadcast_ss(x + r * in + d);
                acc[g][r][0] = _mm256_fmadd_ps(q, w0, acc[g][r][0]);
                acc[g][r][1] = _mm256_fmadd_ps(q, w1, acc[g][r][1]);
            }
        }
    }
    _Pragma("clang loop unroll(full)")
    for (int g = 0; g < groups; g++) {
        const int64_t c = col0 + g * PANEL;
        const int64_t cols = out - c < PANEL ? out - c : PANEL;
        _Pragma("clang loop unroll(full)")
        for (int r = 0; r < rows; r++) {
            float *dst = y + r * out + c;
            if (cols == PANEL) {
                __m256 v0 = acc[g][r][0], v1 = acc[g][r][1];
                if (bias) {
                    v0 = _mm256_add_ps(v0, _mm256_loadu_ps(bias + c));
                    v1 = _mm256_add_ps(v1, _mm256_loadu_ps(bias + c + 8));
                }
                _mm256_storeu_ps(dst, v0);
                _mm256_storeu_ps(dst + 8, v1);
            } else {
                float s[PANEL];
                _mm256_storeu_ps(s, acc[g][r][0]);
                _mm256_storeu_ps(s + 8, acc[g][r][1]);
                for (int64_t l = 0; l < cols; l++) dst[l] = bias ? s[l] + bias[c + l] : s[l];
            }
        }
    }
}

#define AVX2_ROWS(R)                                                                      \
    AVX2 static void rows##R##_avx2(const float *x, int64_t in, const float *panel, int64_t p0, \
                                    int64_t p1, int64_t out, const float *bias, float *y) { \
        enum { G = R == 1 ? 4 : R == 2 ? 2 : 1 };                                         \
        int64_t p = p0;                                                                   \
        for (; p + G <= p1; p += G)                                                       \
            block_avx2(x, in, panel + p * in * PANEL, p * PANEL, out, bias, y, R, G);     \
        for (; p < p1; p++) block_avx2(x, in, panel + p * in * PANEL, p * PANEL, out, bias, y, R, 1); \
    }
AVX2_ROWS(1)
AVX2_ROWS(2)
AVX2_ROWS(3)
AVX2_ROWS(4)

static void rows_avx2(const float *x, int64_t in, int rows, const float *panel, int64_t p0, int64_t p1,
                      int64_t out, const float *bias, float *y) {
    switch (rows) {
    case 1: rows1_avx2(x, in, panel, p0, p1, out, bias, y); break;
    case 2: rows2_avx2(x, in, panel, p0, p1, out, bias, y); break;
    case 3: rows3_avx2(x, in, panel, p0, p1, out, bias, y); break;
    default: rows4_avx2(x, in, panel, p0, p1, out, bias, y); break;
    }
}

// 5–8 rows: 4 rows and then the rest, panel by panel (in · 64 bytes), so that
// the second pass reads the panel from cache, not memory. At 8 rows the 256-bit
// FMAs (8 · in · out / 8 of them, 2 a cycle) rather than memory bound AVX2.
static void panels_avx2(const float *x, int64_t in, int rows, const float *panel, int64_t p0,
                        int64_t p1, int64_t out, const float *bias, float *y) {
    if (rows <= 4) {
        rows_avx2(x, in, rows, panel, p0, p1, out, bias, y);
        return;
    }
    for (int64_t p = p0; p < p1; p++) {
        rows4_avx2(x, in, panel, p, p + 1, out, bias, y);
        rows_avx2(x + 4 * in, in, rows - 4, panel, p, p + 1, out, bias, y + 4 * out);
    }
}
#endif

// The panels function of the selected micro-kernel path: the same arithmetic as its qk_tile.
static panels_fn selected_panels(void) {
    const char *name = attn_selected_microkernels()->name;
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(name, "avx512") == 0) return panels_avx512;
    if (strcmp(name, "avx2") == 0) return panels_avx2;
#endif
    if (strcmp(name, "portable") == 0) return panels_portable;
    return panels_fused;
}

// ---------------------------------------------------------------------------
// The plan: one round of (row chunk, panel range) tasks.

typedef struct linear_packed_plan {
    attn_plan base;  // first: the drivers see only this
    panels_fn panels;
    const float *x, *bias, *panel;
    float *y;
    int64_t rows, in_features, out_features, panel_count;
    int64_t chunks, ranges, panels_per_range;
    char *claimed;  // [chunks · ranges]: 1 once a task has taken that (chunk, range)
} linear_packed_plan;

// The (chunk, range) a task computes: the first one not yet taken of worker
// `worker`'s share — the worker-th of `workers` runs of them, in order — and
// then, from the last, of any other share (a late worker loses the end of its
// share, not the start it is about to take). Each task takes one, so the
// round's tasks compute each once. A worker index keeps its share from call to
// call, so that a weight that fits in the threads' caches is found there the
// next call (the task counter alone hands them out in arrival order).
static int64_t claim_part(const linear_packed_plan *plan, int32_t worker) {
    const int64_t parts = plan->chunks * plan->ranges;
    const int64_t share = (parts + plan->base.workers - 1) / plan->base.workers;
    const int64_t first = (int64_t)worker * share, end = first + share < parts ? first + share : parts;
    for (int64_t part = first; part < end; part++)
        if (!__atomic_exchange_n(&plan->claimed[part], 1, __ATOMIC_RELAXED)) return part;
    for (int64_t part = parts - 1; part >= 0; part--)
        if ((part < first || part >= end) && !__atomic_exchange_n(&plan->claimed[part], 1, __ATOMIC_RELAXED))
            return part;
    return -1;  // not reached: there are as many parts as tasks
}

static void run_packed_task(attn_plan *base, int32_t round, int64_t ignored_task, int32_t worker) {
    (void)round;
    (void)ignored_task;  // the part is claimed by worker (claim_part)
    const linear_packed_plan *plan = (const linear_packed_plan *)base;
    const int64_t task = claim_part(plan, worker);
    if (task < 0) return;
    const int64_t in = plan->in_features, out = plan->out_features;
    const int64_t row0 = task / plan->ranges * MAX_CHUNK_ROWS;
    const int64_t rows = plan->rows - row0 < MAX_CHUNK_ROWS ? plan->rows - row0 : MAX_CHUNK_ROWS;
    const int64_t p0 = task % plan->ranges * plan->panels_per_range;
    const int64_t p1 = plan->panel_count - p0 < plan->panels_per_range ? plan->panel_count : p0 + plan->panels_per_range;
    const float *x = in > 0 ? plan->x + row0 * in : plan->x;  // x may be NULL when in = 0
    plan->panels(x, in, (int)rows, plan->panel, p0, p1, out, plan->bias, plan->y + row0 * out);
}

static void release_packed_plan(attn_plan *base) {
    free(((linear_packed_plan *)base)->claimed);
    free(base);
}

attn_status attn_linear_packed_plan_create(const float *x, int64_t rows, const attn_linear_packed *packed,
                                           const float *bias, float *y, int32_t num_threads,
                                           attn_plan **plan_out) {
    if (!plan_out) return ATTN_ERROR_NULL_POINTER;
    *plan_out = 0;
    if (!packed) return ATTN_ERROR_NULL_POINTER;
    if (rows < 0) return ATTN_ERROR_NEGATIVE_SIZE;
    const int64_t in = packed->in_features, out = packed->out_features;
    if (plan_rows_overflow(rows, in, out, MAX_CHUNK_ROWS)) return ATTN_ERROR_SIZE_OVERFLOW;
    const int empty = rows == 0 || out == 0;
    if (!empty && (!y || (in > 0 && !x))) return ATTN_ERROR_NULL_POINTER;
    linear_packed_plan *plan = calloc(1, sizeof(linear_packed_plan));
    if (!plan) return ATTN_ERROR_OUT_OF_MEMORY;
    plan->base.run_task = run_packed_task;
    plan->base.release = release_packed_plan;
    plan->panels = selected_panels();
    plan->x = x;
    plan->bias = bias;
    plan->panel = packed->panel;
    plan->y = y;
    plan->rows = rows;
    plan->in_features = in;
    plan->out_features = out;
    plan->panel_count = packed->panels;
    if (!empty) {
        plan->chunks = (rows + MAX_CHUNK_ROWS - 1) / MAX_CHUNK_ROWS;
        const int threads = num_threads > 0 ? num_threads : attn_default_threads();
        // One task for one thread; else a few contiguous panel ranges per worker
        // (TASK_MIN_PANELS at least), so that each streams its own part of W.
        int64_t ranges = 1;
        if (threads > 1 && plan->chunks < (int64_t)threads * TASKS_PER_WORKER) {
            ranges = ((int64_t)threads * TASKS_PER_WORKER + plan->chunks - 1) / plan->chunks;
            const int64_t most = (plan->panel_count + TASK_MIN_PANELS - 1) / TASK_MIN_PANELS;
            if (ranges > most) ranges = most;
            if (ranges < 1) ranges = 1;
        }
        plan->panels_per_range = (plan->panel_count + ranges - 1) / ranges;
        plan->ranges = (plan->panel_count + plan->panels_per_range - 1) / plan->panels_per_range;
        plan_add_round(&plan->base, plan->chunks * plan->ranges);
        plan->claimed = calloc((size_t)(plan->chunks * plan->ranges), 1);
        if (!plan->claimed) {
            release_packed_plan(&plan->base);
            return ATTN_ERROR_OUT_OF_MEMORY;
        }
    }
    plan->base.workers = plan_worker_count(num_threads, plan_widest_round(&plan->base));
    *plan_out = &plan->base;
    return ATTN_OK;
}

attn_status attn_linear_packed_forward(const float *x, int64_t rows, const attn_linear_packed *packed,
                                       const float *bias, float *y, int32_t num_threads) {
#ifndef _OPENMP
    num_threads = 1;  // this driver runs the plan serially without OpenMP
#endif
    attn_plan *plan;
    return plan_run_created(attn_linear_packed_plan_create(x, rows, packed, bias, y, num_threads, &plan), &plan);
}
