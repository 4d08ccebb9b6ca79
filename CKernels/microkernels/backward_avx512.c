// backward_avx512.c: the backward's elementwise passes with AVX-512F (see backward.h).
#include "backward.h"
#include "microkernels.h"

#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <stdint.h>

#define AVX512 __attribute__((target("avx512f")))
#define INLINE __attribute__((always_inline)) inline

enum { LANES = 16 };

// r[a][b] → r[b][a] for a 16 × 16 block in 16 registers: pairs of rows
// interleaved (unpack), then 2 × 2 blocks of pairs (shuffle within 128-bit
// lanes), then 128-bit lanes exchanged twice (shuffle_f32x4).
AVX512 INLINE static void transpose_block(__m512 r[LANES]) {
    __m512 t[LANES];
    for (int k = 0; k < 8; k++) {
        t[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
        t[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
    }
    for (int k = 0; k < 4; k++) {
        r[4 * k] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * k + 1] = _mm512_shuffle_ps(t[4 * k], t[4 * k + 2], _MM_SHUFFLE(3, 2, 3, 2));
        r[4 * k + 2] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(1, 0, 1, 0));
        r[4 * k + 3] = _mm512_shuffle_ps(t[4 * k + 1], t[4 * k + 3], _MM_SHUFFLE(3, 2, 3, 2));
    }
    for (int half = 0; half < 2; half++)
        for (int k = 0; k < 4; k++) {
            t[8 * half + k] = _mm512_shuffle_f32x4(r[8 * half + k], r[8 * half + 4 + k], _MM_SHUFFLE(2, 0, 2, 0));
            t[8 * half + 4 + k] = _mm512_shuffle_f32x4(r[8 * half + k], r[8 * half + 4 + k], _MM_SHUFFLE(3, 1, 3, 1));
        }
    for (int k = 0; k < 8; k++) {
        r[k] = _mm512_shuffle_f32x4(t[k], t[8 + k], _MM_SHUFFLE(2, 0, 2, 0));
        r[8 + k] = _mm512_shuffle_f32x4(t[k], t[8 + k], _MM_SHUFFLE(3, 1, 3, 1));
    }
}

// Whole 16 × 16 blocks: the scratch tiles are 64 × 64, so reading past cols or
// rows stays inside them, and what lands past them in `out` is never read.
AVX512 static void transpose_tile_avx512(const float *in, int64_t cols, int64_t rows, float *out) {
    for (int64_t j0 = 0; j0 < cols; j0 += LANES)
        for (int64_t i0 = 0; i0 < rows; i0 += LANES) {
            __m512 r[LANES];
            for (int k = 0; k < LANES; k++) r[k] = _mm512_load_ps(in + (j0 + k) * QUERY_TILE + i0);
            transpose_block(r);
            for (int k = 0; k < LANES; k++) _mm512_store_ps(out + (i0 + k) * KEY_TILE + j0, r[k]);
        }
}

AVX512 static void score_gradient_avx512(const float *pt, float *dst, const float *delta, int64_t cols,
                                         int64_t rows, float scale) {
    const int vectors = (int)((rows + LANES - 1) / LANES);
    const __m512i minus_zero = _mm512_set1_epi32((int)0x80000000u);
    const __m512 scale_vector = _mm512_set1_ps(scale);
    for (int c = 0; c < vectors; c++) {
        const __m512 d = _mm512_load_ps(delta + c * LANES);
        for (int64_t j = 0; j < cols; j++) {
            const float *p_line = pt + j * QUERY_TILE + c * LANES;
            float *ds_line = dst + j * QUERY_TILE + c * LANES;
            const __m512 p = _mm512_load_ps(p_line);
            const __m512 ds = _mm512_mul_ps(_mm512_mul_ps(p, _mm512_sub_ps(_mm512_load_ps(ds_line), d)), scale_vector);
            const __mmask16 masked = _mm512_cmpeq_epi32_mask(_mm512_castps_si512(p), minus_zero);
            _mm512_store_ps(ds_line, _mm512_mask_blend_ps(masked, ds, _mm512_castsi512_ps(minus_zero)));
        }
    }
}

const attn_backward_kernels attn_backward_kernels_avx512 = {
    .name = "avx512",
    .transpose_tile = transpose_tile_avx512,
    .score_gradient = score_gradient_avx512,
};

#endif  // x86
