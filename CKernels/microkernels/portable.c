// portable.c: plain C tile products, the path for any CPU and the baseline the
// ISA-specific paths are checked against.
//
// Dot products keep 8 independent partial sums so that the compiler can keep
// them in one vector register without -ffast-math; the order of additions is
// fixed by the code, so results are deterministic for a given binary.
#include "microkernels.h"

enum { PARTIAL_SUMS = 8 };

static float dot(const float *a, const float *b, int64_t n) {
    float partial[PARTIAL_SUMS] = {0};
    int64_t d = 0;
    for (; d + PARTIAL_SUMS <= n; d += PARTIAL_SUMS)
        for (int lane = 0; lane < PARTIAL_SUMS; lane++)
            partial[lane] += a[d + lane] * b[d + lane];
    float sum = 0.0f;
    for (int lane = 0; lane < PARTIAL_SUMS; lane++) sum += partial[lane];
    for (; d < n; d++) sum += a[d] * b[d];
    return sum;
}

// s [rows, cols] = q [rows, head_dim] · k [cols, head_dim]ᵀ
static void qk_tile_portable(const float *q, int64_t q_row_stride,
                             const float *k, int64_t k_row_stride,
                             int64_t rows, int64_t cols, int64_t head_dim,
                             float *s, int64_t s_row_stride) {
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            s[i * s_row_stride + j] = dot(q + i * q_row_stride, k + j * k_row_stride, head_dim);
}

// acc [rows, value_dim] += p [rows, cols] · v [cols, value_dim]
static void pv_tile_portable(const float *p, int64_t p_row_stride,
                             const float *v, int64_t v_row_stride,
                             int64_t rows, int64_t cols, int64_t value_dim,
                             float *acc, int64_t acc_row_stride) {
    for (int64_t i = 0; i < rows; i++) {
        float *acc_row = acc + i * acc_row_stride;
        for (int64_t j = 0; j < cols; j++) {
            const float weight = p[i * p_row_stride + j];
            const float *v_row = v + j * v_row_stride;
            for (int64_t d = 0; d < value_dim; d++) acc_row[d] += weight * v_row[d];
        }
    }
}

const attn_microkernels attn_microkernels_portable = {
    .name = "portable",
    .qk_tile = qk_tile_portable,
    .pv_tile = pv_tile_portable,
};
