// roof.c: the machine's read bandwidth, measured, so that benchmarks can state
// what fraction of it a bandwidth-bound call (a decode step, a projection of
// one row) reaches in the same run.
//
//   Σ_i a[i]·b[i] over two float32 arrays of bytes/2 each, split between the
//   threads: what decoding does with keys and values, a read of every byte once
//   and nothing written.
//
// Each thread dots its own contiguous share (first touched by that thread, so
// that its pages are near it); the best of several passes is kept (a shared
// machine can take a core away for a while; the roof is what the memory
// system can do). Sixteen accumulators, more than FMA latency × ports.
#define _POSIX_C_SOURCE 200809L
#include "attention.h"
#include "microkernels/microkernels.h"
#include "plan.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef _OPENMP
#include <pthread.h>
#endif

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Σ a·b over n floats (n a multiple of 256), in the widest vectors of the path.
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 acc[8];
    for (int c = 0; c < 8; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 128)
        for (int c = 0; c < 8; c++)
            acc[c] = _mm512_fmadd_ps(_mm512_load_ps(a + i + 16 * c), _mm512_load_ps(b + i + 16 * c), acc[c]);
    for (int c = 1; c < 8; c++) acc[0] = _mm512_add_ps(acc[0], acc[c]);
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma"))) static float dot_avx2(const float *a, const float *b, int64_t n) {
    __m256 acc[8];
    for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n; i += 64)
        for (int c = 0; c < 8; c++)
            acc[c] = _mm256_fmadd_ps(_mm256_load_ps(a + i + 8 * c), _mm256_load_ps(b + i + 8 * c), acc[c]);
    for (int c = 1; c < 8; c++) acc[0] = _mm256_add_ps(acc[0], acc[c]);
    float lanes[8];
    _mm256_storeu_ps(lanes, acc[0]);
    float total = 0.0f;
    for (int l = 0; l < 8; l++) total += lanes[l];
    return total;
}
#endif

static float dot_portable(const float *a, const float *b, int64_t n) {
    float acc[64] = {0};
    for (int64_t i = 0; i < n; i += 64)
        for (int c = 0; c < 64; c++) acc[c] += a[i + c] * b[i + c];
    float total = 0.0f;
    for (int c = 0; c < 64; c++) total += acc[c];
    return total;
}

static float dot(const char *path, const float *a, const float *b, int64_t n) {
#if defined(__x86_64__) || defined(__i386__)
    if (strcmp(path, "avx512") == 0) return dot_avx512(a, b, n);
    if (strcmp(path, "avx2") == 0) return dot_avx2(a, b, n);
#endif
    return dot_portable(a, b, n);
}

enum { ROOF_PASSES_MIN = 3, ROOF_PASSES_MAX = 1000, MAX_ROOF_THREADS = 256 };

// One thread's share: the best seconds of a pass over n floats of a and of b,
// passes repeated for about `seconds` (at least ROOF_PASSES_MIN). 0 if its
// memory could not be had.
typedef struct roof_job {
    const char *path;
    int64_t floats;
    double seconds, best;
    volatile float sink;
} roof_job;

static void run_job(roof_job *job) {
    job->best = 0.0;
    // In cache memory, as a KVCache's keys and values are (huge pages where granted).
    const int64_t bytes = (int64_t)sizeof(float) * job->floats;
    float *a = attn_cache_alloc(bytes);
    float *b = attn_cache_alloc(bytes);
    if (a && b) {
        for (int64_t i = 0; i < job->floats; i++) {  // first touch, by this thread
            a[i] = 1.0f + 1e-7f * (float)(i & 1023);
            b[i] = 1.0f - 1e-7f * (float)(i & 511);
        }
        dot(job->path, a, b, job->floats);  // warm the caches (when it fits) and the TLB
        const double start = now_seconds();
        double best = 1e30;
        for (int pass = 0; pass < ROOF_PASSES_MAX; pass++) {
            const double begin = now_seconds();
            job->sink = dot(job->path, a, b, job->floats);
            const double took = now_seconds() - begin;
            if (took < best) best = took;
            if (pass + 1 >= ROOF_PASSES_MIN && now_seconds() - start > job->seconds) break;
        }
        job->best = best;
    }
    attn_cache_free(a, bytes);
    attn_cache_free(b, bytes);
}

#ifndef _OPENMP
static void *roof_thread(void *argument) {
    run_job(argument);
    return 0;
}
#endif

double attn_read_bandwidth_gbps(int32_t threads, int64_t bytes, double seconds) {
    if (threads < 1) threads = 1;
    if (threads > MAX_ROOF_THREADS) threads = MAX_ROOF_THREADS;
    if (bytes < 1) return 0.0;
    // Per thread: two arrays of a multiple of 256 floats (the dot's step).
    int64_t floats = bytes / threads / 2 / (int64_t)sizeof(float) / 256 * 256;
    if (floats < 256) floats = 256;
    const char *path = attn_selected_microkernels()->name;
    roof_job jobs[MAX_ROOF_THREADS];
    for (int32_t t = 0; t < threads; t++) {
        jobs[t].path = path;
        jobs[t].floats = floats;
        jobs[t].seconds = seconds;
    }
#ifdef _OPENMP
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int32_t t = 0; t < threads; t++) run_job(&jobs[t]);
#else
    pthread_t ids[MAX_ROOF_THREADS];
    int started[MAX_ROOF_THREADS] = {0};
    for (int32_t t = 1; t < threads; t++) started[t] = pthread_create(&ids[t], 0, roof_thread, &jobs[t]) == 0;
    run_job(&jobs[0]);
    for (int32_t t = 1; t < threads; t++) {
        if (started[t]) pthread_join(ids[t], 0);
        else run_job(&jobs[t]);  // could not start: runs after, alone (a lower roof, never a fake one)
    }
#endif
    // The threads run side by side, each its best pass: the aggregate rate is
    // the sum of their rates.
    double rate = 0.0;
    for (int32_t t = 0; t < threads; t++) {
        if (jobs[t].best <= 0.0) return 0.0;
        rate += 2.0 * (double)floats * sizeof(float) / jobs[t].best;
    }
    return rate / 1e9;
}
