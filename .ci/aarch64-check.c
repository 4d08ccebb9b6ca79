// aarch64-check.c: the C equivalence check of the micro-kernel paths, run by
// .ci/aarch64 under qemu-user. It builds and runs on any CPU: on x86, with
// --all-paths, it checks the portable, avx2 and avx512 paths the same way.
//
// Through the public C API only (attention.h), on every path this CPU has
// among `neon` and `portable` (or among all paths, with --all-paths):
//   1. attn_sdpa_forward against a double-precision reference written here,
//      over shapes at tile edges (query lengths 1, 3, 63, 64, 65, 129 and 600,
//      key lengths those and 600: a 512-key chunk boundary), head dims 1, 3,
//      33, 64, 80, 128, causal none / top-left / bottom-right, keep and
//      additive masks, key padding, dropout, grouped-query heads, strided
//      layouts, NaN / ±∞ inputs and overflowing scores, with the tolerance of
//      Tests/AttentionTests/Support/Tolerance.swift; and the softmax weight's
//      exp within 6 u relative;
//   2. determinism: a query row computed alone (a decode-size tile) or in a
//      tile of 3 rows equals the same row inside a 64-row tile bit for bit, and
//      a prefill and a split-KV decode step on 2 and 3 worker threads (a plan
//      run by pthreads) equal 1 thread bit for bit;
//   3. attn_linear_forward against a double-precision reference, on 3 worker
//      threads, and a row alone against the same row in a 65-row call, bit for bit.
// Prints one line per failure and `N passed, M failed` last; exits 1 on any failure.
//
// Usage: aarch64-check [--all-paths] | --print-path
#include "attention.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void record(int ok, const char *path, const char *what, const char *detail) {
    if (ok) {
        passed++;
    } else {
        failed++;
        printf("FAIL [%s] %s: %s\n", path, what, detail);
    }
}

// ---------------------------------------------------------------------------
// Seeded inputs (splitmix64), so that a failure reproduces.

static uint64_t rng_state;

static uint64_t next_u64(void) {
    uint64_t z = (rng_state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static float uniform(float low, float high) {  // [low, high)
    return low + (high - low) * (float)((double)(next_u64() >> 40) * 0x1p-24);
}

static float *random_floats(int64_t count, float amplitude) {
    float *values = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1));
    for (int64_t e = 0; e < count; e++) values[e] = uniform(-amplitude, amplitude);
    return values;
}

// ---------------------------------------------------------------------------
// One attention problem: [B, H, L, D] tensors in `layout` (0: BHLD, 1: BLHD).

typedef struct problem {
    int64_t batch, query_heads, kv_heads, query_length, key_length, head_dim, value_dim;
    int layout;
    float scale, dropout_p;
    attn_causal causal;
    attn_mask_kind mask_kind;
    int key_padding;
    float *q, *k, *v;
    unsigned char *keep;      // [B, Hq, Lq, Lk] when mask_kind == KEEP
    float *bias;              // [B, Hq, Lq, Lk] when mask_kind == ADDITIVE
    unsigned char *padding;   // [B, Lk] when key_padding
} problem;

static void strides_of(const problem *p, int64_t heads, int64_t length, int64_t dim, int64_t s[4]) {
    if (p->layout == 0) {
        s[3] = 1, s[2] = dim, s[1] = length * dim, s[0] = heads * length * dim;
    } else {
        s[3] = 1, s[1] = dim, s[2] = heads * dim, s[0] = length * heads * dim;
    }
}

static int64_t at(const int64_t s[4], int64_t b, int64_t h, int64_t i, int64_t d) {
    return b * s[0] + h * s[1] + i * s[2] + d * s[3];
}

static void params_of(const problem *p, float *out, float *lse, attn_params *a) {
    memset(a, 0, sizeof *a);
    a->batch = p->batch, a->query_heads = p->query_heads, a->kv_heads = p->kv_heads;
    a->query_length = p->query_length, a->key_length = p->key_length;
    a->head_dim = p->head_dim, a->value_dim = p->value_dim;
    a->query = p->q, a->key = p->k, a->value = p->v, a->output = out, a->logsumexp = lse;
    strides_of(p, p->query_heads, p->query_length, p->head_dim, a->query_strides);
    strides_of(p, p->kv_heads, p->key_length, p->head_dim, a->key_strides);
    strides_of(p, p->kv_heads, p->key_length, p->value_dim, a->value_strides);
    strides_of(p, p->query_heads, p->query_length, p->value_dim, a->output_strides);
    a->logsumexp_strides[0] = p->query_heads * p->query_length;
    a->logsumexp_strides[1] = p->query_length, a->logsumexp_strides[2] = 1;
    a->scale = p->scale, a->causal = p->causal, a->mask_kind = p->mask_kind;
    a->mask = p->mask_kind == ATTN_MASK_KEEP ? (const void *)p->keep : (const void *)p->bias;
    a->mask_strides[3] = 1, a->mask_strides[2] = p->key_length;
    a->mask_strides[1] = p->query_length * p->key_length;
    a->mask_strides[0] = p->query_heads * p->query_length * p->key_length;
    a->key_padding_keep = p->key_padding ? p->padding : 0;
    a->key_padding_strides[0] = p->key_length, a->key_padding_strides[1] = 1;
    a->dropout_p = p->dropout_p, a->dropout_seed = 0x5EEDull;
    a->num_threads = 1;
}

// The reference, from the contract in attention.h (as the Swift oracle, in C):
// masked cells take no part (NaN or ±∞ there has no effect); scale·q is rounded
// to float32 as in the kernel, everything else is double; a logit that is not
// finite in float32 makes its row NaN; a row with no visible key is 0 with
// logsumexp −∞; a dropped weight is multiplied by 0.
static void reference(const problem *p, double *out, double *lse) {
    const int64_t Lq = p->query_length, Lk = p->key_length, D = p->head_dim, Dv = p->value_dim;
    const int64_t offset = p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? Lk - Lq : 0;
    int64_t qs[4], ks[4], vs[4];
    strides_of(p, p->query_heads, Lq, D, qs);
    strides_of(p, p->kv_heads, Lk, D, ks);
    strides_of(p, p->kv_heads, Lk, Dv, vs);
    double *logit = malloc(sizeof(double) * (size_t)(Lk + 1));
    unsigned char *visible = malloc((size_t)(Lk + 1));
    for (int64_t b = 0; b < p->batch; b++)
        for (int64_t h = 0; h < p->query_heads; h++) {
            const int64_t kvh = h / (p->query_heads / p->kv_heads);
            for (int64_t i = 0; i < Lq; i++) {
                const int64_t row = (b * p->query_heads + h) * Lq + i;
                const int64_t cell0 = row * Lk;
                double m = -INFINITY;
                for (int64_t j = 0; j < Lk; j++) {
                    visible[j] = !(p->causal != ATTN_CAUSAL_NONE && j > i + offset) &&
                                 !(p->key_padding && !p->padding[b * Lk + j]) &&
                                 !(p->mask_kind == ATTN_MASK_KEEP && !p->keep[cell0 + j]) &&
                                 !(p->mask_kind == ATTN_MASK_ADDITIVE && p->bias[cell0 + j] == -INFINITY);
                    if (!visible[j]) continue;
                    double dot = 0.0;
                    for (int64_t d = 0; d < D; d++)
                        dot += (double)(p->scale * p->q[at(qs, b, h, i, d)]) * (double)p->k[at(ks, b, kvh, j, d)];
                    if (p->mask_kind == ATTN_MASK_ADDITIVE) dot += p->bias[cell0 + j];
                    logit[j] = fabs(dot) <= (double)3.4028234663852886e38 ? dot : NAN;
                    if (isnan(logit[j]) || logit[j] > m) m = logit[j];
                }
                if (m == -INFINITY) {  // no visible key
                    for (int64_t d = 0; d < Dv; d++) out[row * Dv + d] = 0.0;
                    lse[row] = -INFINITY;
                    continue;
                }
                double sum = 0.0;
                for (int64_t j = 0; j < Lk; j++)
                    if (visible[j]) sum += exp(logit[j] - m);
                lse[row] = m + log(sum);
                for (int64_t d = 0; d < Dv; d++) out[row * Dv + d] = 0.0;
                for (int64_t j = 0; j < Lk; j++) {
                    if (!visible[j]) continue;
                    double weight = exp(logit[j] - m) / sum;
                    if (p->dropout_p > 0.0f)
                        weight = attn_philox_keep(0x5EEDull, b, h, i, j, p->dropout_p)
                                     ? weight / (1.0 - (double)p->dropout_p)
                                     : weight * 0.0;
                    for (int64_t d = 0; d < Dv; d++) out[row * Dv + d] += weight * (double)p->v[at(vs, b, kvh, j, d)];
                }
            }
        }
    free(logit);
    free(visible);
}

// max over rows of the Euclidean norm of the finite rows; max |x| over finite x.
static double largest_row_norm(const float *x, int64_t rows, int64_t width, const int64_t s[4],
                               int64_t heads, int64_t length) {
    double largest = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / (heads * length), h = r / length % heads, i = r % length;
        double sum = 0.0;
        for (int64_t d = 0; d < width; d++) {
            const double value = x[at(s, b, h, i, d)];
            if (isfinite(value)) sum += value * value;
        }
        if (sqrt(sum) > largest) largest = sqrt(sum);
    }
    return largest;
}

// Tolerance.swift's bound, u·(2·D·S + 2·Lk + 16)·max(|v|, 1), with the additive
// mask's largest |bias| added to the logit bound and the dropout scale applied.
static double output_tolerance(const problem *p) {
    const double u = 0x1p-24;
    int64_t qs[4], ks[4];
    strides_of(p, p->query_heads, p->query_length, p->head_dim, qs);
    strides_of(p, p->kv_heads, p->key_length, p->head_dim, ks);
    const double logit_bound = fabs(p->scale) *
        largest_row_norm(p->q, p->batch * p->query_heads * p->query_length, p->head_dim, qs, p->query_heads, p->query_length) *
        largest_row_norm(p->k, p->batch * p->kv_heads * p->key_length, p->head_dim, ks, p->kv_heads, p->key_length);
    double largest_bias = 0.0, largest_value = 1.0;
    const int64_t cells = p->batch * p->query_heads * p->query_length * p->key_length;
    if (p->mask_kind == ATTN_MASK_ADDITIVE)
        for (int64_t e = 0; e < cells; e++)
            if (isfinite(p->bias[e]) && fabs(p->bias[e]) > largest_bias) largest_bias = fabs(p->bias[e]);
    const int64_t values = p->batch * p->kv_heads * p->key_length * p->value_dim;
    for (int64_t e = 0; e < values; e++)
        if (isfinite(p->v[e]) && fabs(p->v[e]) > largest_value) largest_value = fabs(p->v[e]);
    return u * (2.0 * (p->head_dim * logit_bound + largest_bias) + 2.0 * p->key_length + 16.0) *
           largest_value / (1.0 - p->dropout_p);
}

// NaN matches NaN, equal infinities match, else |actual − expected| ≤ tolerance.
static int close_enough(float actual, double expected, double tolerance) {
    if (isnan(expected)) return isnan(actual);
    if (isinf(expected)) return actual == expected;
    return fabs((double)actual - expected) <= tolerance;
}

static void check_against_reference(const char *path, const problem *p, const char *name) {
    const int64_t rows = p->batch * p->query_heads * p->query_length;
    float *out = malloc(sizeof(float) * (size_t)(rows * p->value_dim + 1));
    float *lse = malloc(sizeof(float) * (size_t)(rows + 1));
    double *want = malloc(sizeof(double) * (size_t)(rows * p->value_dim + 1));
    double *want_lse = malloc(sizeof(double) * (size_t)(rows + 1));
    attn_params a;
    params_of(p, out, lse, &a);
    const attn_status status = attn_sdpa_forward(&a);
    reference(p, want, want_lse);
    const double tolerance = output_tolerance(p);
    int64_t os[4];
    strides_of(p, p->query_heads, p->query_length, p->value_dim, os);
    char detail[256] = "";
    int ok = status == ATTN_OK;
    if (!ok) snprintf(detail, sizeof detail, "status %d", (int)status);
    for (int64_t r = 0; ok && r < rows; r++) {
        const int64_t b = r / (p->query_heads * p->query_length), h = r / p->query_length % p->query_heads;
        const int64_t i = r % p->query_length;
        for (int64_t d = 0; ok && d < p->value_dim; d++) {
            const float actual = out[at(os, b, h, i, d)];
            if (!close_enough(actual, want[r * p->value_dim + d], tolerance)) {
                ok = 0;
                snprintf(detail, sizeof detail, "output row %lld col %lld: %.9g vs %.9g (tolerance %.3g)",
                         (long long)r, (long long)d, actual, want[r * p->value_dim + d], tolerance);
            }
        }
        const double lse_tolerance = tolerance + 0x1p-23 * fabs(want_lse[r]);
        if (ok && !close_enough(lse[r], want_lse[r], lse_tolerance)) {
            ok = 0;
            snprintf(detail, sizeof detail, "logsumexp row %lld: %.9g vs %.9g", (long long)r, lse[r], want_lse[r]);
        }
    }
    record(ok, path, name, detail);
    free(out), free(lse), free(want), free(want_lse);
}

static void free_problem(problem *p) {
    free(p->q), free(p->k), free(p->v), free(p->keep), free(p->bias), free(p->padding);
}

// Fills a problem's tensors: uniform inputs, then the masks it asks for.
static void fill(problem *p, float q_amplitude) {
    const int64_t cells = p->batch * p->query_heads * p->query_length * p->key_length;
    p->q = random_floats(p->batch * p->query_heads * p->query_length * p->head_dim, q_amplitude);
    p->k = random_floats(p->batch * p->kv_heads * p->key_length * p->head_dim, 1.0f);
    p->v = random_floats(p->batch * p->kv_heads * p->key_length * p->value_dim, 1.0f);
    p->keep = 0, p->bias = 0, p->padding = 0;
    if (p->mask_kind == ATTN_MASK_KEEP) {
        p->keep = malloc((size_t)(cells + 1));
        for (int64_t e = 0; e < cells; e++) p->keep[e] = next_u64() % 5 != 0;  // 1 in 5 masked
        if (p->query_length > 2)  // a row that sees nothing
            memset(p->keep + p->key_length, 0, (size_t)p->key_length);
    } else if (p->mask_kind == ATTN_MASK_ADDITIVE) {
        p->bias = malloc(sizeof(float) * (size_t)(cells + 1));
        for (int64_t e = 0; e < cells; e++)
            p->bias[e] = next_u64() % 7 == 0 ? -INFINITY : uniform(-2.0f, 2.0f);
    }
    if (p->key_padding) {
        p->padding = malloc((size_t)(p->batch * p->key_length + 1));
        for (int64_t e = 0; e < p->batch * p->key_length; e++) p->padding[e] = next_u64() % 4 != 0;
        p->padding[p->key_length - 1] = 0;  // the last key of batch 0 is padding
    }
}

// NaN and ±∞ where the contract gives them a meaning: in a padded key's K and V
// row (no effect), in one value (its column propagates to the rows that see it)
// and in one query element (its row is NaN).
static void add_non_finite(problem *p) {
    int64_t ks[4], vs[4], qs[4];
    strides_of(p, p->kv_heads, p->key_length, p->head_dim, ks);
    strides_of(p, p->kv_heads, p->key_length, p->value_dim, vs);
    strides_of(p, p->query_heads, p->query_length, p->head_dim, qs);
    const int64_t last = p->key_length - 1;
    if (p->key_padding) {  // padded in batch 0
        p->k[at(ks, 0, 0, last, 0)] = NAN;
        p->v[at(vs, 0, 0, last, p->value_dim - 1)] = INFINITY;
    }
    if (p->key_length > 1) p->v[at(vs, 0, 0, p->key_length / 2, p->value_dim / 2)] = -INFINITY;
    if (p->key_length > 2) p->v[at(vs, 0, 0, 1, 0)] = NAN;
    p->q[at(qs, 0, 0, p->query_length - 1, 0)] = NAN;
}

static void equivalence_grid(const char *path) {
    static const int64_t query_lengths[] = {1, 3, 63, 64, 65, 129};
    static const int64_t key_lengths[] = {1, 3, 63, 64, 65, 129, 600};
    static const int64_t head_dims[] = {1, 3, 33, 64, 80, 128};
    enum { QL = 6, KL = 7, DIMS = 6 };
    int index = 0;
    for (int a = 0; a < QL; a++)
        for (int c = 0; c < KL; c++, index++) {
            // Every (query length, key length) pair once, with the other options
            // cycling at different periods so that they meet in many combinations.
            problem p = {0};
            p.batch = index % 5 == 0 ? 2 : 1;
            p.kv_heads = index % 4 == 1 ? 2 : 1;
            p.query_heads = index % 4 == 1 ? 4 : p.kv_heads;
            p.query_length = query_lengths[a], p.key_length = key_lengths[c];
            p.head_dim = head_dims[index % DIMS];
            p.value_dim = index % 7 == 3 ? head_dims[(index + 2) % DIMS] : p.head_dim;
            if (p.key_length == 600 && p.head_dim > 64) p.head_dim = p.value_dim = 33;  // keep qemu fast
            p.layout = index % 3 == 2;
            p.scale = 1.0f / sqrtf((float)p.head_dim);
            p.causal = (attn_causal)(index % 3);
            p.mask_kind = (attn_mask_kind)(index / 3 % 3);
            p.key_padding = index % 2 == 1 && p.key_length > 1;
            p.dropout_p = index % 6 == 4 ? 0.25f : 0.0f;
            fill(&p, index % 8 == 5 ? 4.0f : 1.0f);  // now and then a peaked softmax
            if (index % 5 == 2) add_non_finite(&p);
            char name[160];
            snprintf(name, sizeof name,
                     "sdpa B%lld Hq%lld Hkv%lld Lq%lld Lk%lld D%lld Dv%lld layout%d causal%d mask%d pad%d p%.2f%s",
                     (long long)p.batch, (long long)p.query_heads, (long long)p.kv_heads,
                     (long long)p.query_length, (long long)p.key_length, (long long)p.head_dim,
                     (long long)p.value_dim, p.layout, (int)p.causal, (int)p.mask_kind, p.key_padding,
                     p.dropout_p, index % 5 == 2 ? " non-finite" : "");
            check_against_reference(path, &p, name);
            free_problem(&p);
        }
    // A long prefill: several query tiles, a chunk boundary, causal.
    problem p = {.batch = 1, .query_heads = 2, .kv_heads = 1, .query_length = 600, .key_length = 600,
                 .head_dim = 64, .value_dim = 64, .scale = 0.125f, .causal = ATTN_CAUSAL_TOP_LEFT};
    fill(&p, 1.0f);
    check_against_reference(path, &p, "sdpa Hq2 Hkv1 Lq600 Lk600 D64 causal top-left");
    free_problem(&p);
}

// Scores that are not finite in float32 make their rows NaN (they may not pass
// for a masked cell): an infinite key element, and a product that overflows.
static void non_finite_scores(const char *path) {
    for (int overflow = 0; overflow < 2; overflow++) {
        problem p = {.batch = 1, .query_heads = 1, .kv_heads = 1, .query_length = 65, .key_length = 129,
                     .head_dim = 64, .value_dim = 64, .scale = 0.125f, .causal = ATTN_CAUSAL_BOTTOM_RIGHT};
        fill(&p, 1.0f);
        if (overflow) {  // 1e30 · 1e30 overflows for row 40 at key 100 only
            p.q[40 * p.head_dim + 7] = 1e30f;
            p.k[100 * p.head_dim + 7] = 1e30f;
        } else {  // ±∞ scores for the rows that see key 70 (row i sees j ≤ i + 64)
            p.k[70 * p.head_dim + 3] = INFINITY;
        }
        check_against_reference(path, &p, overflow ? "sdpa: an overflowing score makes its row NaN"
                                                   : "sdpa: an infinite key makes the rows that see it NaN");
        free_problem(&p);
    }
}

// The softmax weights' exp, through the API: two keys with logits 0 and x
// (head dim 1, k = (0, 1), q = x, scale 1, all exact), values (0, 1), so the
// output is e^x / (1 + e^x), for x from −80 to 0; its relative error is the
// exp's plus four roundings (the sum, 1/l, the product, the max subtraction is
// exact), and must stay within 6 u. avx512.c's softmax_weight promises less,
// an absolute error below u (its relative error grows with |x|), so on that
// path the bound is absolute: |error| ≤ 4 u.
static void exp_accuracy(const char *path) {
    const int absolute = strcmp(path, "avx512") == 0;
    enum { ROWS = 257 };
    float q[ROWS], k[2] = {0.0f, 1.0f}, v[2] = {0.0f, 1.0f}, out[ROWS];
    for (int i = 0; i < ROWS; i++) q[i] = -80.0f * (float)i / (ROWS - 1) + (i % 3) * 0x1p-9f;
    problem p = {.batch = 1, .query_heads = 1, .kv_heads = 1, .query_length = ROWS, .key_length = 2,
                 .head_dim = 1, .value_dim = 1, .scale = 1.0f, .q = q, .k = k, .v = v};
    attn_params a;
    params_of(&p, out, 0, &a);
    int ok = attn_sdpa_forward(&a) == ATTN_OK;
    double worst = 0.0;
    for (int i = 0; ok && i < ROWS; i++) {
        const double x = q[i], want = exp(x) / (1.0 + exp(x));
        const double error = fabs(out[i] - want) / (absolute ? 1.0 : want) / 0x1p-24;
        if (!(error <= worst)) worst = error;
    }
    char detail[96];
    const double bound = absolute ? 4.0 : 6.0;
    snprintf(detail, sizeof detail, "largest %s error %.2f u > %.0f u", absolute ? "absolute" : "relative",
             worst, bound);
    record(ok && worst <= bound, path, "softmax weight e^x / (1 + e^x) for x in [-80, 0]", detail);
    printf("path %s: softmax weight, largest %s error %.2f u\n", path, absolute ? "absolute" : "relative", worst);
}

// ---------------------------------------------------------------------------
// Determinism.

static int same_bits(const float *a, const float *b, int64_t count) {
    return memcmp(a, b, sizeof(float) * (size_t)count) == 0;
}

// Rows [first, first + count) of a 64-row (and a 130-row) call, computed alone:
// without a causal mask, and bottom-right causal with the keys the rows see
// (a decode step over the cache so far).
static void determinism_rows(const char *path) {
    static const int64_t dims[] = {33, 64, 128};
    static const int64_t key_lengths[] = {65, 600};
    for (int dd = 0; dd < 3; dd++)
        for (int kk = 0; kk < 2; kk++)
            for (int causal = 0; causal < 2; causal++) {
                const int64_t Lq = dd == 1 ? 130 : 64, Lk = key_lengths[kk] + (causal ? Lq : 0), D = dims[dd];
                problem p = {.batch = 1, .query_heads = 1, .kv_heads = 1, .query_length = Lq, .key_length = Lk,
                             .head_dim = D, .value_dim = D, .scale = 1.0f / sqrtf((float)D),
                             .causal = causal ? ATTN_CAUSAL_BOTTOM_RIGHT : ATTN_CAUSAL_NONE};
                fill(&p, 2.0f);
                float *all = malloc(sizeof(float) * (size_t)(Lq * D)), *all_lse = malloc(sizeof(float) * (size_t)Lq);
                attn_params a;
                params_of(&p, all, all_lse, &a);
                int ok = attn_sdpa_forward(&a) == ATTN_OK;
                static const int64_t firsts[] = {0, 1, 5, 37, 61, 64, 127, 128};
                for (int f = 0; f < 8; f++)
                    for (int64_t count = 1; count <= 3; count += 2) {
                        const int64_t first = firsts[f];
                        if (first + count > Lq) continue;
                        float out[3 * 128], lse[3];
                        attn_params one = a;
                        one.query = p.q + first * D;
                        one.query_length = count;
                        one.output = out, one.logsumexp = lse;
                        one.output_strides[0] = one.output_strides[1] = count * D;
                        one.logsumexp_strides[0] = one.logsumexp_strides[1] = count;
                        // Bottom-right: the last of these rows sees keys j ≤ first + count − 1 + Lk − Lq.
                        if (causal) one.key_length = first + count + Lk - Lq;
                        ok &= attn_sdpa_forward(&one) == ATTN_OK;
                        ok &= same_bits(out, all + first * D, count * D) && same_bits(lse, all_lse + first, count);
                    }
                char name[128];
                snprintf(name, sizeof name, "rows alone equal rows in a tile, bit for bit: Lq%lld Lk%lld D%lld causal%d",
                         (long long)Lq, (long long)Lk, (long long)D, causal);
                record(ok, path, name, "bits differ");
                free(all), free(all_lse);
                free_problem(&p);
            }
}

// A plan's rounds run by
// pthreads, one per worker, with a join between rounds, as a driver of one's own.

typedef struct worker_args {
    attn_plan *plan;
    int32_t round, worker;
} worker_args;

static void *worker(void *argument) {
    const worker_args *w = argument;
    attn_plan_work(w->plan, w->round, w->worker);
    return 0;
}

static attn_status run_on_threads(attn_plan *plan) {
    enum { MOST_WORKERS = 8 };
    const int32_t workers = attn_plan_workers(plan) < MOST_WORKERS ? attn_plan_workers(plan) : MOST_WORKERS;
    for (int32_t round = 0; round < attn_plan_rounds(plan); round++) {
        pthread_t threads[MOST_WORKERS];
        worker_args args[MOST_WORKERS];
        for (int32_t w = 0; w < workers; w++) {
            args[w] = (worker_args){plan, round, w};
            pthread_create(&threads[w], 0, worker, &args[w]);
        }
        for (int32_t w = 0; w < workers; w++) pthread_join(threads[w], 0);
    }
    return ATTN_OK;
}

static attn_status sdpa_on_threads(const attn_params *params) {
    attn_plan *plan;
    const attn_status status = attn_sdpa_plan_create(params, &plan);
    if (status != ATTN_OK) return status;
    run_on_threads(plan);
    attn_plan_destroy(plan);
    return ATTN_OK;
}

static attn_status linear_on_threads(const float *x, int64_t rows, int64_t in, const float *w,
                                     const float *bias, int64_t out, float *y, int32_t workers) {
    attn_plan *plan;
    const attn_status status = attn_linear_plan_create(x, rows, in, w, bias, out, y, workers, &plan);
    if (status != ATTN_OK) return status;
    run_on_threads(plan);
    attn_plan_destroy(plan);
    return ATTN_OK;
}

// A prefill (several query tiles, a value-check round) and a decode step (one
// query row of two heads over 2000 keys: split into 512-key chunks for 3
// workers), each computed on 1 thread and on 2 and 3 worker threads: the same
// bits.
static void determinism_threads(const char *path) {
    for (int decode = 0; decode < 2; decode++) {
        problem p = {.batch = decode ? 1 : 2, .query_heads = 2, .kv_heads = 1,
                     .query_length = decode ? 1 : 129, .key_length = decode ? 2000 : 600,
                     .head_dim = 64, .value_dim = 64, .scale = 0.125f, .causal = ATTN_CAUSAL_BOTTOM_RIGHT,
                     .mask_kind = decode ? ATTN_MASK_NONE : ATTN_MASK_ADDITIVE, .key_padding = 1,
                     .dropout_p = decode ? 0.0f : 0.125f};
        fill(&p, 1.0f);
        add_non_finite(&p);
        const int64_t rows = p.batch * p.query_heads * p.query_length, count = rows * p.value_dim;
        float *one = malloc(sizeof(float) * (size_t)count), *more = malloc(sizeof(float) * (size_t)count);
        float *lse_one = malloc(sizeof(float) * (size_t)rows), *lse_more = malloc(sizeof(float) * (size_t)rows);
        attn_params a, b;
        params_of(&p, one, lse_one, &a);
        int ok = attn_sdpa_forward(&a) == ATTN_OK;
        for (int32_t workers = 2; workers <= 3; workers++) {
            params_of(&p, more, lse_more, &b);
            b.num_threads = workers;
            ok &= sdpa_on_threads(&b) == ATTN_OK;
            ok &= same_bits(one, more, count) && same_bits(lse_one, lse_more, rows);
            if (decode && workers == 3) ok &= attn_sdpa_splits_keys(&b);  // the split-KV rounds ran
            memset(more, 0, sizeof(float) * (size_t)count);
            ok &= attn_sdpa_forward(&b) == ATTN_OK && same_bits(one, more, count);  // the C driver
        }
        record(ok, path, decode ? "decode (split-KV) on 2 and 3 threads equals 1 thread, bit for bit"
                                : "prefill on 2 and 3 threads equals 1 thread, bit for bit",
               "bits differ");
        free(one), free(more), free(lse_one), free(lse_more);
        free_problem(&p);
    }
}

// ---------------------------------------------------------------------------
// attn_linear_forward: y [rows, out] = x [rows, in] · W [out, in]ᵀ + b.

static void linear_checks(const char *path) {
    static const int64_t rows_list[] = {1, 3, 64, 65};
    static const int64_t in_list[] = {1, 3, 33, 64, 80};
    static const int64_t out_list[] = {1, 5, 64, 65, 130};
    for (int r = 0; r < 4; r++)
        for (int n = 0; n < 5; n++) {
            const int64_t rows = rows_list[r], in = in_list[n], out = out_list[(r + n) % 5];
            float *x = random_floats(rows * in, 1.0f), *w = random_floats(out * in, 1.0f);
            float *bias = n % 2 ? random_floats(out, 1.0f) : 0;
            float *y = malloc(sizeof(float) * (size_t)(rows * out));
            int ok = attn_linear_forward(x, rows, in, w, bias, out, y, 1) == ATTN_OK;
            char detail[160] = "status";
            for (int64_t i = 0; ok && i < rows; i++)
                for (int64_t o = 0; ok && o < out; o++) {
                    // |error| ≤ γ_n Σ|x·w| for the dot product, plus the bias's rounding.
                    double want = bias ? bias[o] : 0.0, magnitude = bias ? fabs(bias[o]) : 0.0;
                    for (int64_t d = 0; d < in; d++) {
                        want += (double)x[i * in + d] * w[o * in + d];
                        magnitude += fabs((double)x[i * in + d] * w[o * in + d]);
                    }
                    const double tolerance = 0x1p-24 * (2.0 * in + 4.0) * magnitude;
                    if (!(fabs(y[i * out + o] - want) <= tolerance)) {
                        ok = 0;
                        snprintf(detail, sizeof detail, "y[%lld][%lld] = %.9g vs %.9g", (long long)i,
                                 (long long)o, y[i * out + o], want);
                    }
                }
            if (ok) {  // on 3 worker threads, bit for bit
                float *threaded = malloc(sizeof(float) * (size_t)(rows * out));
                ok = linear_on_threads(x, rows, in, w, bias, out, threaded, 3) == ATTN_OK &&
                     same_bits(threaded, y, rows * out);
                if (!ok) snprintf(detail, sizeof detail, "3 worker threads differ from 1");
                free(threaded);
            }
            if (ok && rows > 1) {  // the last row alone, bit for bit
                float *alone = malloc(sizeof(float) * (size_t)out);
                ok = attn_linear_forward(x + (rows - 1) * in, 1, in, w, bias, out, alone, 1) == ATTN_OK &&
                     same_bits(alone, y + (rows - 1) * out, out);
                if (!ok) snprintf(detail, sizeof detail, "a row alone differs from the row in the call");
                free(alone);
            }
            char name[96];
            snprintf(name, sizeof name, "linear rows%lld in%lld out%lld bias%d", (long long)rows,
                     (long long)in, (long long)out, bias != 0);
            record(ok, path, name, detail);
            free(x), free(w), free(bias), free(y);
        }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--print-path") == 0) {
        printf("%s\n", attn_kernel_path());
        return 0;
    }
    const int all_paths = argc > 1 && strcmp(argv[1], "--all-paths") == 0;
    static const char *const paths[] = {"neon", "portable", "avx2", "avx512"};
    int checked = 0;
    for (int index = 0; index < 4; index++) {
        const char *path = paths[index];
        if (!all_paths && index >= 2) break;
        if (!attn_kernel_path_supported(path)) {
            printf("path %s: not supported on this CPU, skipped\n", path);
            continue;
        }
        record(attn_select_kernel_path(path) && strcmp(attn_kernel_path(), path) == 0, path,
               "attn_select_kernel_path selects it", "not selected");
        rng_state = 20261201;  // the same inputs on every path
        equivalence_grid(path);
        non_finite_scores(path);
        exp_accuracy(path);
        determinism_rows(path);
        determinism_threads(path);
        linear_checks(path);
        checked++;
        printf("path %s: checked\n", path);
    }
    if (checked == 0) record(0, "-", "paths", "no path was checked");
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
