// fuzz_sdpa.c: libFuzzer harness for attn_sdpa_forward (CKernels/sdpa.c).
//
// Each input decodes to one small problem (batch and heads ≤ 3, lengths ≤ 80,
// head and value dims ≤ 40), run on the micro-kernel path the input names, once
// with 1 thread and once with 2, and checked against a scalar double-precision
// reference written here straight from the contract (the same contract as
// Sources/Attention/Reference/ReferenceAttention.swift):
//
//   * logit = scale · q·k (+ additive mask); keep-mask 0, additive −∞, causal
//     hiding and a logit of −∞ all mean "masked": weight 0, the key's values
//     unread (a NaN or Inf there has no effect);
//   * a row with no visible key: output 0 and logsumexp −∞;
//   * a NaN logit makes its row NaN; softmax with the row max subtracted;
//   * dropout keeps the cells attn_philox_keep keeps, scaled by 1/(1 − p), and
//     multiplies the others by 0: a NaN weight stays NaN (NaN is never hidden
//     as 0), and a dropped cell is an arithmetic 0 (0·Inf = NaN), not a masked one.
//
// Any of these aborts (libFuzzer then saves the input as a crash):
//   * an output or logsumexp element further from the reference than a bound
//     derived from float32 rounding (see tolerances_for()), or NaN where the
//     reference is finite or finite where it is NaN, or an infinity of the
//     wrong sign;
//   * 1 and 2 threads disagreeing in any bit (the determinism contract);
//   * an output element left unwritten, or an element written outside the output
//     (outputs sit in padded layouts pre-filled with a sentinel NaN);
//   * a wrong status for a deliberately invalid parameter set, or anything
//     written on an error;
//   * whatever AddressSanitizer / UndefinedBehaviorSanitizer catch (all inputs
//     are allocated at their exact extent, so any read past them is reported).
//
// Where float32 itself overflows (|scale·q·k| sums or value sums beyond 1e37,
// e.g. inputs near FLT_MAX) the float and double answers may legitimately
// differ, so the numeric comparison is skipped for that input; every other
// check still runs. Two more float32 effects are allowed for: a reference weight
// that underflows to 0 times an infinite value is NaN, where the kernel may
// give that infinity (its logits round differently), and the reverse; and a
// known deviation, a nonzero q whose product with scale underflows to 0 meeting
// an infinite k (FUZZ_SDPA_STRICT=1 makes that an error; Fuzz/README.md,
// finding 4). FUZZ_SDPA_DUMP=1 prints every tensor of a failing case.
// See Fuzz/README.md for the input format and how to run.
#include "attention.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BH = 3, MAX_LENGTH = 80, MAX_DIM = 40 };

// ---------------------------------------------------------------------------
// Input decoding. A header of fixed fields, then one byte per tensor element;
// once the input runs out, elements come from a xorshift generator seeded by
// the input, so short inputs still describe full-size problems.

typedef struct reader {
    const uint8_t *data;
    size_t size, at;
    uint64_t state;  // xorshift64 state for bytes past the end
} reader;

static uint8_t next_byte(reader *r) {
    if (r->at < r->size) return r->data[r->at++];
    r->state ^= r->state << 13;
    r->state ^= r->state >> 7;
    r->state ^= r->state << 17;
    return (uint8_t)(r->state >> 32);
}

// Header bytes read as 0 past the end (so an empty input is a valid small case).
static uint8_t header_byte(reader *r) { return r->at < r->size ? r->data[r->at++] : 0; }

static int generated(const reader *r) { return r->at >= r->size; }

// q, k, v elements. Special codes only from real input bytes; generated ones
// are ordinary finite values.
static float decode_value(reader *r) {
    const int from_input = !generated(r);
    uint8_t b = next_byte(r);
    if (!from_input && b < 8) b = (uint8_t)(b + 8);
    switch (b) {
    case 0: return NAN;
    case 1: return INFINITY;
    case 2: return -INFINITY;
    case 3: return 1e15f;
    case 4: return -1e15f;
    case 5: return -0.0f;
    case 6: return 1e-40f;   // subnormal
    case 7: return 3e38f;    // near FLT_MAX: float32 overflow, numeric check skipped
    default: return (float)((int)b - 132) / 16.0f;
    }
}

// Additive-mask elements: a quarter −∞, NaN and +∞ rare, else [-20, 11.9].
static float decode_additive(reader *r) {
    const int from_input = !generated(r);
    uint8_t b = next_byte(r);
    if (!from_input && b < 2) b = 2;
    if (b == 0) return NAN;
    if (b == 1) return INFINITY;
    if (b < 64) return -INFINITY;
    return (float)((int)b - 160) / 8.0f;
}

// ---------------------------------------------------------------------------
// Tensors: a 4-d (or 3-d) view with explicit strides over an allocation of
// exactly its extent, so AddressSanitizer sees any access past the last element.

typedef struct view {
    int64_t size[4], stride[4];
    int64_t extent;  // elements allocated: 1 + Σ (size − 1)·stride, 0 if any size is 0
} view;

static int64_t extent_of(const int64_t *size, const int64_t *stride, int rank) {
    int64_t last = 0;
    for (int d = 0; d < rank; d++) {
        if (size[d] == 0) return 0;
        last += (size[d] - 1) * stride[d];
    }
    return last + 1;
}

// Layout byte: bit 0 puts the sequence dimension outside the heads ([B, L, H, D],
// what a projection produces), bits 1-2 pad every row by 0-3 elements.
static view make_view(int64_t b, int64_t h, int64_t l, int64_t d, uint8_t layout) {
    view v;
    const int64_t row = d + ((layout >> 1) & 3);
    v.size[0] = b; v.size[1] = h; v.size[2] = l; v.size[3] = d;
    v.stride[3] = 1;
    if (layout & 1) {  // [B, L, H, D]
        v.stride[1] = row;
        v.stride[2] = h * row;
        v.stride[0] = l * h * row;
    } else {           // [B, H, L, D]
        v.stride[2] = row;
        v.stride[1] = l * row;
        v.stride[0] = h * l * row;
    }
    v.extent = extent_of(v.size, v.stride, 4);
    return v;
}

static int64_t at4(const view *v, int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
    return i0 * v->stride[0] + i1 * v->stride[1] + i2 * v->stride[2] + i3 * v->stride[3];
}

// malloc(0) gives a valid pointer to nothing: an empty tensor still has an address.
static void *allocate(int64_t elements, size_t element_size) {
    void *p = malloc((size_t)elements * element_size);
    if (!p && elements > 0) abort();
    return p;
}

// ---------------------------------------------------------------------------
// Failure reporting: describe the case, then abort so libFuzzer keeps the input.

typedef struct problem {
    int64_t B, Hq, Hkv, Lq, Lk, D, Dv;
    attn_causal causal;
    attn_mask_kind mask_kind;
    unsigned broadcast;  // bit d: mask dimension d has size 1, stride 0
    float scale, dropout_p;
    uint64_t seed;
    int first_threads, with_logsumexp;
    const char *path;
    uint8_t layouts[4];
} problem;

static void describe(const problem *p) {
    fprintf(stderr,
            "case: B=%lld Hq=%lld Hkv=%lld Lq=%lld Lk=%lld D=%lld Dv=%lld causal=%d mask=%d "
            "broadcast=0x%x scale=%a dropout=%a seed=%llu threads=%d first, logsumexp=%d "
            "path=%s layouts q=%u k=%u v=%u out=%u\n",
            (long long)p->B, (long long)p->Hq, (long long)p->Hkv, (long long)p->Lq,
            (long long)p->Lk, (long long)p->D, (long long)p->Dv, (int)p->causal,
            (int)p->mask_kind, p->broadcast, (double)p->scale, (double)p->dropout_p,
            (unsigned long long)p->seed, p->first_threads, p->with_logsumexp, p->path,
            p->layouts[0], p->layouts[1], p->layouts[2], p->layouts[3]);
}

// With FUZZ_SDPA_DUMP set, a failure also prints every input and output
// element (set by dump_context below once the tensors exist).
typedef struct dump_context {
    const struct inputs *in;
    const struct outputs *out;
} dump_context;
static dump_context current;
static void dump(const problem *p);

#define FAIL(p, ...)                          \
    do {                                      \
        fprintf(stderr, "fuzz_sdpa: ");       \
        fprintf(stderr, __VA_ARGS__);         \
        fprintf(stderr, "\n");                \
        describe(p);                          \
        if (getenv("FUZZ_SDPA_DUMP")) dump(p); \
        abort();                              \
    } while (0)

// ---------------------------------------------------------------------------
// The reference: double precision, one row at a time, straight from the contract.

enum { UNDERFLOW_PLUS_INFINITY = 1, UNDERFLOW_MINUS_INFINITY = 2 };

typedef struct reference {
    double *out;   // [B, Hq, Lq, Dv]
    double *lse;   // [B, Hq, Lq]
    int *dead;     // [B, Hq, Lq]: no visible key
    // [B, Hq, Lq, Dv]: infinities the kernel may return instead of the NaN in
    // out, which comes only from weights that underflow to 0 in double times an
    // infinite value (see UNDERFLOW_* below).
    uint8_t *also_allowed;
    double max_dot;      // max over cells of Σ_d |fl(scale·q_d)·k_d| (finite terms)
    double max_additive; // max |finite additive mask element|
    double max_value;    // max |finite value element|
    int float_overflow;  // float32 may overflow where double does not: skip numerics
    // A nonzero q element whose product with scale underflows to 0 in float32
    // meets an infinite k element: the kernel (which scales q first) gets
    // 0·Inf = NaN where the contract's scale·(q·k) is ±Inf. A known deviation
    // (Fuzz/README.md, finding 4): numerics skipped unless FUZZ_SDPA_STRICT is set.
    int scaled_query_underflow;
} reference;

typedef struct inputs {
    const float *q, *k, *v;
    view qv, kv, vv;
    const void *mask;
    int64_t mask_strides[4];
} inputs;

static void dump_tensor(const char *name, const float *x, const view *v) {
    if (!x) return;
    fprintf(stderr, "%s:\n", name);
    for (int64_t a = 0; a < v->size[0]; a++)
        for (int64_t b = 0; b < v->size[1]; b++)
            for (int64_t c = 0; c < v->size[2]; c++) {
                fprintf(stderr, "  [%lld,%lld,%lld]", (long long)a, (long long)b, (long long)c);
                for (int64_t d = 0; d < v->size[3]; d++)
                    fprintf(stderr, " %g", (double)x[at4(v, a, b, c, d)]);
                fprintf(stderr, "\n");
            }
}

static int visible_by_causal(const problem *p, int64_t i, int64_t j) {
    if (p->causal == ATTN_CAUSAL_NONE) return 1;
    const int64_t offset = p->causal == ATTN_CAUSAL_BOTTOM_RIGHT ? p->Lk - p->Lq : 0;
    return j <= i + offset;
}

static void run_reference(const problem *p, const inputs *in, reference *ref) {
    const int64_t group = p->Hq / p->Hkv;
    double *logits = allocate(p->Lk, sizeof(double));
    double *weights = allocate(p->Lk, sizeof(double));
    int *kept = allocate(p->Lk, sizeof(int));
    const double keep_scale = 1.0 / (1.0 - (double)p->dropout_p);
    ref->max_dot = 0;
    ref->max_additive = 0;
    ref->max_value = 0;
    ref->float_overflow = 0;
    ref->scaled_query_underflow = 0;

    for (int64_t e = 0; e < in->vv.extent; e++)
        if (isfinite(in->v[e]) && fabs((double)in->v[e]) > ref->max_value)
            ref->max_value = fabs((double)in->v[e]);
    for (int64_t e = 0; e < in->qv.extent; e++) {
        const double product = fabs((double)in->q[e] * (double)p->scale);
        if (isfinite(in->q[e]) && product > 1e37) ref->float_overflow = 1;  // fl(scale·q) = ±∞
    }

    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->Hq; h++) {
            const int64_t kvh = h / group;
            for (int64_t i = 0; i < p->Lq; i++) {
                const int64_t row = (b * p->Hq + h) * p->Lq + i;
                for (int64_t j = 0; j < p->Lk; j++) {
                    double dot = 0, magnitude = 0;
                    for (int64_t d = 0; d < p->D; d++) {
                        const double qd = in->q[at4(&in->qv, b, h, i, d)];
                        const double kd = in->k[at4(&in->kv, b, kvh, j, d)];
                        const float scaled = (float)(qd * p->scale);  // exactly the kernel's fl(q·scale)
                        dot += (double)scaled * kd;
                        if (qd != 0 && scaled == 0 && isinf(kd)) ref->scaled_query_underflow = 1;
                        const double term = fabs((double)scaled * kd);
                        if (isfinite(term)) magnitude += term;
                    }
                    if (magnitude > ref->max_dot) ref->max_dot = magnitude;
                    // Logits are float32 quantities: one beyond FLT_MAX (an overflow, or
                    // an infinite q or k) is NaN in the contract, never a masked cell.
                    double logit = fabs(dot) <= FLT_MAX ? dot : NAN;
                    const int64_t m = b * in->mask_strides[0] + h * in->mask_strides[1] +
                                      i * in->mask_strides[2] + j * in->mask_strides[3];
                    if (p->mask_kind == ATTN_MASK_KEEP) {
                        if (!((const uint8_t *)in->mask)[m]) logit = -INFINITY;
                    } else if (p->mask_kind == ATTN_MASK_ADDITIVE) {
                        const double added = ((const float *)in->mask)[m];
                        if (isfinite(added) && fabs(added) > ref->max_additive)
                            ref->max_additive = fabs(added);
                        logit = added == -INFINITY ? -INFINITY : logit + added;
                    }
                    if (!visible_by_causal(p, i, j)) logit = -INFINITY;
                    logits[j] = logit;
                }
                double row_max = -INFINITY;
                for (int64_t j = 0; j < p->Lk; j++)
                    if (isnan(logits[j]) || logits[j] > row_max) row_max = logits[j];
                ref->dead[row] = row_max == -INFINITY;
                if (ref->dead[row]) {
                    ref->lse[row] = -INFINITY;
                    for (int64_t d = 0; d < p->Dv; d++) ref->out[row * p->Dv + d] = 0;
                    continue;
                }
                double sum = 0;
                for (int64_t j = 0; j < p->Lk; j++) {
                    weights[j] = logits[j] == -INFINITY ? 0 : exp(logits[j] - row_max);
                    sum += weights[j];
                }
                ref->lse[row] = row_max + log(sum);
                for (int64_t j = 0; j < p->Lk; j++) {
                    double weight = weights[j] / sum;
                    // A dropped weight is multiplied by 0, so a NaN row stays NaN.
                    kept[j] = p->dropout_p == 0 || attn_philox_keep(p->seed, b, h, i, j, p->dropout_p);
                    if (p->dropout_p > 0) weight *= kept[j] ? keep_scale : 0.0;
                    weights[j] = weight;
                }
                for (int64_t d = 0; d < p->Dv; d++) {
                    // A visible, kept weight that is 0 only because exp underflowed
                    // (its logit is finite) times an infinite value is NaN here, but
                    // float32 may round the logits differently and give that weight
                    // a positive value, and the output that infinity: note which.
                    double acc = 0;
                    int positive = 0, negative = 0;
                    for (int64_t j = 0; j < p->Lk; j++) {
                        if (logits[j] == -INFINITY) continue;
                        const double value = in->v[at4(&in->vv, b, kvh, j, d)];
                        if (weights[j] == 0 && kept[j] && isfinite(logits[j]) && isinf(value)) {
                            if (value > 0) positive = 1; else negative = 1;
                            continue;
                        }
                        acc += weights[j] * value;
                    }
                    uint8_t allowed = 0;
                    if (positive && !negative && !isnan(acc) && acc != -INFINITY) allowed |= UNDERFLOW_PLUS_INFINITY;
                    if (negative && !positive && !isnan(acc) && acc != INFINITY) allowed |= UNDERFLOW_MINUS_INFINITY;
                    ref->out[row * p->Dv + d] = positive || negative ? NAN : acc;
                    ref->also_allowed[row * p->Dv + d] = allowed;
                }
            }
        }
    const double limit = 1e37;
    if (ref->max_dot + ref->max_additive > limit) ref->float_overflow = 1;
    if ((double)(p->Lk + 1) * ref->max_value * keep_scale > limit) ref->float_overflow = 1;
    free(logits);
    free(weights);
    free(kept);
}

// ---------------------------------------------------------------------------
// Tolerances from float32 rounding, u = 2^-24 (the argument of
// Tests/AttentionTests/Support/Tolerance.swift, made per-term):
//   logit error     δ ≤ u·(2·D·T + 2·(T + A) + 4), T = max Σ_d|fl(scale·q_d)·k_d|,
//                   A = max |additive|; 2·D·T covers the dot product (Higham §3.1),
//                   the rest the scaling of q, the mask addition and exp.
//   a weight        relative error ≤ e^{2δ} − 1 (numerator and denominator),
//                   plus u·(2·Lk + 32) for the running sum, rescales and the
//                   weighted sum of Lk values;
//   output          ≤ keep·max(|v|, 1)·(e^{2δ} − 1 + u·(2·Lk + 32)), keep = 1/(1 − p);
//   logsumexp       ≤ 2δ + 2·(e^{2δ} − 1) + u·(2·Lk + 16) + 2u·|lse|.

typedef struct tolerances {
    double output, logsumexp_base, bound;  // bound: |out| ≤ keep·max|v|·(1 + slack)
} tolerances;

static tolerances tolerances_for(const problem *p, const reference *ref) {
    const double u = 0x1p-24;
    const double keep = 1.0 / (1.0 - (double)p->dropout_p);
    const double delta = u * (2.0 * (double)p->D * ref->max_dot +
                              2.0 * (ref->max_dot + ref->max_additive) + 4.0);
    const double growth = expm1(2.0 * delta);
    const double rounding = u * (2.0 * (double)p->Lk + 32.0);
    tolerances t;
    t.output = keep * fmax(ref->max_value, 1.0) * (growth + rounding);
    t.logsumexp_base = 2.0 * delta + 2.0 * growth + u * (2.0 * (double)p->Lk + 16.0);
    t.bound = keep * ref->max_value * (1.0 + rounding) + 1e-30;
    return t;
}

// ---------------------------------------------------------------------------
// Running the kernel.

static const uint32_t SENTINEL_BITS = 0x7fa5a5a5u;  // a signalling NaN no arithmetic produces

static void fill_sentinel(float *x, int64_t n) {
    for (int64_t e = 0; e < n; e++) memcpy(x + e, &SENTINEL_BITS, 4);
}

static int is_sentinel(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    return bits == SENTINEL_BITS;
}

typedef struct outputs {
    float *out;
    view ov;
    float *lse;
    int64_t lse_strides[3], lse_extent;
} outputs;

static void dump(const problem *p) {
    const inputs *in = current.in;
    if (!in) return;
    dump_tensor("q", in->q, &in->qv);
    dump_tensor("k", in->k, &in->kv);
    dump_tensor("v", in->v, &in->vv);
    if (p->mask_kind != ATTN_MASK_NONE) {
        fprintf(stderr, "mask (%s), rows [b,h,i]:\n", p->mask_kind == ATTN_MASK_KEEP ? "keep" : "additive");
        for (int64_t b = 0; b < p->B; b++)
            for (int64_t h = 0; h < p->Hq; h++)
                for (int64_t i = 0; i < p->Lq; i++) {
                    fprintf(stderr, "  [%lld,%lld,%lld]", (long long)b, (long long)h, (long long)i);
                    for (int64_t j = 0; j < p->Lk; j++) {
                        const int64_t m = b * in->mask_strides[0] + h * in->mask_strides[1] +
                                          i * in->mask_strides[2] + j * in->mask_strides[3];
                        if (p->mask_kind == ATTN_MASK_KEEP)
                            fprintf(stderr, " %d", ((const uint8_t *)in->mask)[m]);
                        else
                            fprintf(stderr, " %g", (double)((const float *)in->mask)[m]);
                    }
                    fprintf(stderr, "\n");
                }
    }
    if (current.out) dump_tensor("output (1st run)", current.out->out, &current.out->ov);
}

static attn_params params_for(const problem *p, const inputs *in, outputs *o, int threads) {
    attn_params a;
    memset(&a, 0, sizeof a);
    a.batch = p->B;
    a.query_heads = p->Hq;
    a.kv_heads = p->Hkv;
    a.query_length = p->Lq;
    a.key_length = p->Lk;
    a.head_dim = p->D;
    a.value_dim = p->Dv;
    a.query = in->q;
    a.key = in->k;
    a.value = in->v;
    a.output = o->out;
    memcpy(a.query_strides, in->qv.stride, sizeof a.query_strides);
    memcpy(a.key_strides, in->kv.stride, sizeof a.key_strides);
    memcpy(a.value_strides, in->vv.stride, sizeof a.value_strides);
    memcpy(a.output_strides, o->ov.stride, sizeof a.output_strides);
    a.logsumexp = p->with_logsumexp ? o->lse : NULL;
    memcpy(a.logsumexp_strides, o->lse_strides, sizeof a.logsumexp_strides);
    a.scale = p->scale;
    a.causal = p->causal;
    a.mask_kind = p->mask_kind;
    a.mask = in->mask;
    memcpy(a.mask_strides, in->mask_strides, sizeof a.mask_strides);
    a.dropout_p = p->dropout_p;
    a.dropout_seed = p->seed;
    a.num_threads = threads;
    return a;
}

static int64_t lse_index(const outputs *o, int64_t b, int64_t h, int64_t i) {
    return b * o->lse_strides[0] + h * o->lse_strides[1] + i * o->lse_strides[2];
}

// Marks which elements of the padded output buffers the kernel must write.
static void logical_masks(const problem *p, const outputs *o, uint8_t *out_written,
                          uint8_t *lse_written) {
    memset(out_written, 0, (size_t)o->ov.extent);
    memset(lse_written, 0, (size_t)o->lse_extent);
    for (int64_t b = 0; b < p->B; b++)
        for (int64_t h = 0; h < p->Hq; h++)
            for (int64_t i = 0; i < p->Lq; i++) {
                for (int64_t d = 0; d < p->Dv; d++) out_written[at4(&o->ov, b, h, i, d)] = 1;
                if (p->with_logsumexp) lse_written[lse_index(o, b, h, i)] = 1;
            }
}

static void check_element(const problem *p, const char *what, long long index, double expected,
                          float actual, double tolerance, uint8_t also_allowed) {
    if (isnan(expected)) {
        if ((also_allowed & UNDERFLOW_PLUS_INFINITY) && actual == INFINITY) return;
        if ((also_allowed & UNDERFLOW_MINUS_INFINITY) && actual == -INFINITY) return;
        if (!isnan(actual))
            FAIL(p, "%s[%lld]: expected NaN, got %a (%g)", what, index, (double)actual, (double)actual);
        return;
    }
    if (isinf(expected)) {
        // An infinite value times a weight that underflows to 0 in float32 (but
        // not in double) gives NaN: accept NaN or the same infinity.
        if (!(isnan(actual) || actual == expected))
            FAIL(p, "%s[%lld]: expected %g, got %a (%g)", what, index, expected, (double)actual,
                 (double)actual);
        return;
    }
    if (!isfinite(actual))
        FAIL(p, "%s[%lld]: expected finite %a (%.9g), got %a (%g)", what, index, expected, expected,
             (double)actual, (double)actual);
    const double difference = fabs((double)actual - expected);
    if (!(difference <= tolerance))
        FAIL(p, "%s[%lld]: expected %.9g, got %.9g, |diff| = %g > tolerance %g", what, index,
             expected, (double)actual, difference, tolerance);
}

// ---------------------------------------------------------------------------
// Invalid parameter sets: one defect each; the expected status follows the
// order of checks that attention.h documents. Nothing may be written.

static attn_status expected_for_defect(const problem *p, int defect) {
    const int work = p->B * p->Hq * p->Lq > 0;
    switch (defect) {
    case 0: return ATTN_ERROR_NEGATIVE_SIZE;      // a negative size
    case 1: return ATTN_ERROR_MASK_KIND;          // causal out of range
    case 2: return ATTN_ERROR_MASK_KIND;          // mask kind out of range
    case 3: return ATTN_ERROR_SCALE;              // non-finite scale
    case 4: return ATTN_ERROR_DROPOUT;            // dropout ≥ 1
    case 5: return ATTN_ERROR_DROPOUT;            // dropout NaN
    case 6: return ATTN_ERROR_DROPOUT;            // dropout < 0
    case 7: return work ? ATTN_ERROR_GROUPED_QUERY : ATTN_OK;  // kv_heads = 0
    case 8: return work && p->Dv > 0 ? ATTN_ERROR_NULL_POINTER : ATTN_OK;   // output NULL
    case 9: return work && p->Dv > 0 ? ATTN_ERROR_INNER_STRIDE : ATTN_OK;   // output stride
    case 10: return work && p->Lk > 0 && p->D > 0 ? ATTN_ERROR_NULL_POINTER : ATTN_OK;  // query NULL
    case 11: return work && p->Lk > 0 && p->D > 0 ? ATTN_ERROR_INNER_STRIDE : ATTN_OK;  // key stride
    case 12: return work && p->Lk > 0 && p->Dv > 0 ? ATTN_ERROR_NULL_POINTER : ATTN_OK; // value NULL
    case 13: return work && p->Lk > 0 && p->mask_kind != ATTN_MASK_NONE ? ATTN_ERROR_NULL_POINTER
                                                                         : ATTN_OK;  // mask NULL
    default: return ATTN_OK;
    }
}

static void apply_defect(attn_params *a, int defect, uint8_t which) {
    switch (defect) {
    case 0: {
        int64_t *sizes[] = {&a->batch, &a->query_heads, &a->kv_heads, &a->query_length,
                            &a->key_length, &a->head_dim, &a->value_dim};
        *sizes[which % 7] = -1 - (int64_t)(which >> 3);
        break;
    }
    case 1: a->causal = (attn_causal)(3 + which); break;
    case 2: a->mask_kind = (attn_mask_kind)(3 + which); break;
    case 3: a->scale = (which & 1) ? NAN : ((which & 2) ? -INFINITY : INFINITY); break;
    case 4: a->dropout_p = 1.0f + (float)which; break;
    case 5: a->dropout_p = NAN; break;
    case 6: a->dropout_p = -0x1p-24f - (float)which; break;
    case 7: a->kv_heads = 0; break;
    case 8: a->output = NULL; break;
    case 9: a->output_strides[3] = 2 + which; break;
    case 10: a->query = NULL; break;
    case 11: a->key_strides[3] = 0; break;
    case 12: a->value = NULL; break;
    case 13: a->mask = NULL; break;
    }
}

// ---------------------------------------------------------------------------

static const char *const PATHS[] = {"avx512", "avx2", "portable"};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    reader r = {data, size, 0, 0x9E3779B97F4A7C15ull};
    for (size_t e = 0; e < size; e++) r.state = (r.state ^ data[e]) * 0x100000001B3ull;
    if (r.state == 0) r.state = 1;

    problem p;
    memset(&p, 0, sizeof p);
    uint8_t b = header_byte(&r);
    p.B = b == 0xFF ? 0 : 1 + b % MAX_BH;
    b = header_byte(&r);
    p.Hq = b == 0xFF ? 0 : 1 + b % MAX_BH;
    b = header_byte(&r);
    // kv heads: a divisor of Hq (1 or Hq); 0 query heads keep 1 kv head.
    p.Hkv = (b & 1) && p.Hq > 0 ? p.Hq : 1;
    p.Lq = header_byte(&r) % (MAX_LENGTH + 1);
    p.Lk = header_byte(&r) % (MAX_LENGTH + 1);
    p.D = header_byte(&r) % (MAX_DIM + 1);
    p.Dv = header_byte(&r) % (MAX_DIM + 1);
    b = header_byte(&r);
    p.causal = (attn_causal)(b % 3);
    b = header_byte(&r);
    p.mask_kind = (attn_mask_kind)(b % 3);
    p.broadcast = (b >> 2) & 15;
    b = header_byte(&r);
    const uint8_t scale_mode = b % 5;
    b = header_byte(&r);
    p.dropout_p = b < 192 ? 0.0f : (float)(b - 192) / 64.0f;  // 0 or [0, 0.984]
    b = header_byte(&r);
    p.first_threads = 1 + (b & 1);
    p.with_logsumexp = !((b >> 1) & 1);
    const int path_choice = (b >> 2) % 3;
    for (int t = 0; t < 4; t++) p.layouts[t] = header_byte(&r) & 7;
    p.seed = 0;
    for (int byte = 0; byte < 4; byte++) p.seed |= (uint64_t)header_byte(&r) << (8 * byte);
    p.seed *= 0x9E3779B97F4A7C15ull;  // spread to both 32-bit halves of the Philox key
    const uint8_t defect_byte = header_byte(&r);
    const uint8_t defect_detail = header_byte(&r);
    const float default_scale = p.D > 0 ? 1.0f / sqrtf((float)p.D) : 1.0f;
    switch (scale_mode) {
    case 0: p.scale = default_scale; break;
    case 1: p.scale = 0.0f; break;
    case 2: p.scale = -default_scale; break;
    case 3: p.scale = default_scale * 64.0f; break;  // sharp softmax
    default: {
        uint32_t bits = 0;
        for (int byte = 0; byte < 4; byte++) bits |= (uint32_t)header_byte(&r) << (8 * byte);
        memcpy(&p.scale, &bits, 4);
        if (!isfinite(p.scale)) p.scale = default_scale;
    }
    }

    // The path: the named one if this CPU runs it, else the next that it does.
    p.path = NULL;
    for (int attempt = 0; attempt < 3 && !p.path; attempt++) {
        const char *name = PATHS[(path_choice + attempt) % 3];
        if (attn_kernel_path_supported(name)) p.path = name;
    }
    if (!p.path || !attn_select_kernel_path(p.path)) FAIL(&p, "no micro-kernel path can be selected");

    // Inputs at their exact extent, in the layouts the header chose.
    inputs in;
    memset(&in, 0, sizeof in);
    in.qv = make_view(p.B, p.Hq, p.Lq, p.D, p.layouts[0]);
    in.kv = make_view(p.B, p.Hkv, p.Lk, p.D, p.layouts[1]);
    in.vv = make_view(p.B, p.Hkv, p.Lk, p.Dv, p.layouts[2]);
    float *q = allocate(in.qv.extent, sizeof(float));
    float *k = allocate(in.kv.extent, sizeof(float));
    float *v = allocate(in.vv.extent, sizeof(float));
    for (int64_t e = 0; e < in.qv.extent; e++) q[e] = decode_value(&r);
    for (int64_t e = 0; e < in.kv.extent; e++) k[e] = decode_value(&r);
    for (int64_t e = 0; e < in.vv.extent; e++) v[e] = decode_value(&r);
    in.q = q;
    in.k = k;
    in.v = v;

    // The mask: broadcast dimensions have size 1 and stride 0, the others are contiguous.
    void *mask = NULL;
    if (p.mask_kind != ATTN_MASK_NONE) {
        const int64_t full[4] = {p.B, p.Hq, p.Lq, p.Lk};
        int64_t shape[4], stride = 1;
        for (int d = 3; d >= 0; d--) {
            shape[d] = (p.broadcast >> d) & 1 ? 1 : full[d];
            in.mask_strides[d] = (p.broadcast >> d) & 1 ? 0 : stride;
            stride *= shape[d];
        }
        const int64_t elements = stride;  // product of the stored shape
        if (p.mask_kind == ATTN_MASK_KEEP) {
            uint8_t *keep = allocate(elements, 1);
            for (int64_t e = 0; e < elements; e++) keep[e] = next_byte(&r) >= 64;
            mask = keep;
        } else {
            float *additive = allocate(elements, sizeof(float));
            for (int64_t e = 0; e < elements; e++) additive[e] = decode_additive(&r);
            mask = additive;
        }
    }
    in.mask = mask;

    // Outputs: padded layouts, sentinel-filled; two copies for the two thread counts.
    outputs o[2];
    for (int run = 0; run < 2; run++) {
        o[run].ov = make_view(p.B, p.Hq, p.Lq, p.Dv, p.layouts[3]);
        o[run].out = allocate(o[run].ov.extent, sizeof(float));
        fill_sentinel(o[run].out, o[run].ov.extent);
        // logsumexp: [B, H, L] or [B, L, H], padded by one element per row of heads.
        const int64_t pad = (p.layouts[3] >> 1) & 1;
        if (p.layouts[3] & 1) {
            o[run].lse_strides[1] = 1;
            o[run].lse_strides[2] = p.Hq + pad;
            o[run].lse_strides[0] = p.Lq * (p.Hq + pad);
        } else {
            o[run].lse_strides[2] = 1;
            o[run].lse_strides[1] = p.Lq + pad;
            o[run].lse_strides[0] = p.Hq * (p.Lq + pad);
        }
        const int64_t lse_size[3] = {p.B, p.Hq, p.Lq};
        o[run].lse_extent = extent_of(lse_size, o[run].lse_strides, 3);
        o[run].lse = allocate(o[run].lse_extent, sizeof(float));
        fill_sentinel(o[run].lse, o[run].lse_extent);
    }

    // A deliberately invalid parameter set for 1 input in 16: the status must be
    // the documented one and nothing may be written.
    if (defect_byte >= 240) {
        const int defect = (defect_byte - 240) % 14;
        attn_params a = params_for(&p, &in, &o[0], p.first_threads);
        apply_defect(&a, defect, defect_detail);
        const attn_status expected = expected_for_defect(&p, defect);
        const attn_status status = attn_sdpa_forward(&a);
        if (status != expected)
            FAIL(&p, "defect %d: status %d (%s), expected %d (%s)", defect, (int)status,
                 attn_status_description(status), (int)expected, attn_status_description(expected));
        if (status != ATTN_OK) {
            for (int64_t e = 0; e < o[0].ov.extent; e++)
                if (!is_sentinel(o[0].out[e])) FAIL(&p, "defect %d: output[%lld] written on error", defect, (long long)e);
            for (int64_t e = 0; e < o[0].lse_extent; e++)
                if (!is_sentinel(o[0].lse[e])) FAIL(&p, "defect %d: logsumexp[%lld] written on error", defect, (long long)e);
        }
        goto done;
    }

    current.in = &in;
    current.out = &o[0];

    // The kernel, with the input's thread count first and then the other.
    for (int run = 0; run < 2; run++) {
        const int threads = run == 0 ? p.first_threads : 3 - p.first_threads;
        attn_params a = params_for(&p, &in, &o[run], threads);
        const attn_status status = attn_sdpa_forward(&a);
        if (status != ATTN_OK)
            FAIL(&p, "status %d (%s) for a valid problem", (int)status, attn_status_description(status));
    }

    // Determinism: both runs agree in every bit, padding included.
    if (o[0].ov.extent && memcmp(o[0].out, o[1].out, sizeof(float) * (size_t)o[0].ov.extent) != 0)
        FAIL(&p, "output differs between 1 and 2 threads");
    if (o[0].lse_extent && memcmp(o[0].lse, o[1].lse, sizeof(float) * (size_t)o[0].lse_extent) != 0)
        FAIL(&p, "logsumexp differs between 1 and 2 threads");

    // Every logical element written, nothing else touched.
    {
        uint8_t *out_written = allocate(o[0].ov.extent, 1);
        uint8_t *lse_written = allocate(o[0].lse_extent, 1);
        logical_masks(&p, &o[0], out_written, lse_written);
        for (int64_t e = 0; e < o[0].ov.extent; e++)
            if (is_sentinel(o[0].out[e]) == out_written[e])
                FAIL(&p, "output element %lld %s", (long long)e,
                     out_written[e] ? "not written" : "written outside the output");
        for (int64_t e = 0; e < o[0].lse_extent; e++)
            if (is_sentinel(o[0].lse[e]) == lse_written[e])
                FAIL(&p, "logsumexp element %lld %s", (long long)e,
                     lse_written[e] ? "not written" : "written outside the logsumexp");
        free(out_written);
        free(lse_written);
    }

    // Against the reference.
    {
        const int64_t rows = p.B * p.Hq * p.Lq;
        reference ref;
        ref.out = allocate(rows * p.Dv, sizeof(double));
        ref.lse = allocate(rows, sizeof(double));
        ref.dead = allocate(rows, sizeof(int));
        ref.also_allowed = allocate(rows * p.Dv, 1);
        run_reference(&p, &in, &ref);
        if (!ref.float_overflow && (!ref.scaled_query_underflow || getenv("FUZZ_SDPA_STRICT"))) {
            const tolerances t = tolerances_for(&p, &ref);
            for (int64_t bb = 0; bb < p.B; bb++)
                for (int64_t h = 0; h < p.Hq; h++)
                    for (int64_t i = 0; i < p.Lq; i++) {
                        const int64_t row = (bb * p.Hq + h) * p.Lq + i;
                        for (int64_t d = 0; d < p.Dv; d++) {
                            const float actual = o[0].out[at4(&o[0].ov, bb, h, i, d)];
                            const double expected = ref.out[row * p.Dv + d];
                            if (ref.dead[row] && !(actual == 0.0f))
                                FAIL(&p, "row %lld has no visible key: output[%lld] = %g, expected 0",
                                     (long long)row, (long long)d, (double)actual);
                            check_element(&p, "output", (long long)(row * p.Dv + d), expected, actual, t.output,
                                          ref.also_allowed[row * p.Dv + d]);
                            if (isfinite(expected) && !(fabs((double)actual) <= t.bound))
                                FAIL(&p, "output[%lld] = %g exceeds keep·max|v| = %g", (long long)(row * p.Dv + d),
                                     (double)actual, t.bound);
                        }
                        if (p.with_logsumexp) {
                            const float actual = o[0].lse[lse_index(&o[0], bb, h, i)];
                            const double expected = ref.lse[row];
                            if (ref.dead[row]) {
                                if (actual != -INFINITY)
                                    FAIL(&p, "row %lld has no visible key: logsumexp %g, expected -inf",
                                         (long long)row, (double)actual);
                            } else {
                                const double tolerance = t.logsumexp_base + 0x1p-23 * fabs(expected);
                                check_element(&p, "logsumexp", (long long)row, expected, actual, tolerance, 0);
                            }
                        }
                    }
        }
        free(ref.out);
        free(ref.lse);
        free(ref.dead);
        free(ref.also_allowed);
    }

done:
    current.in = NULL;
    current.out = NULL;
    for (int run = 0; run < 2; run++) {
        free(o[run].out);
        free(o[run].lse);
    }
    free(mask);
    free(q);
    free(k);
    free(v);
    return 0;
}
