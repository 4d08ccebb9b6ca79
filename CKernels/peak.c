// peak.c: the machine's FMA peak, measured, so that benchmarks can state what
// fraction of it the kernel reaches in the same run.
//
// Sixteen independent chains of register-only FMAs (more than latency × ports
// on current cores), on the widest vectors the selected micro-kernel path uses.
#include "attention.h"
#include "microkernels/microkernels.h"

#include <string.h>
#include <time.h>

#ifndef _OPENMP
#include <pthread.h>
#endif

enum { CHAINS = 16, ITERATIONS_PER_CHECK = 1 << 16 };

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

#define FMA_LOOP(VEC, SET1, FMADD, ADD, STORE, LANES)                                   \
    VEC acc[CHAINS];                                                                     \
    for (int c = 0; c < CHAINS; c++) acc[c] = SET1(1.0f + 1e-3f * (float)c);            \
    const VEC a = SET1(0.999999f), b = SET1(1e-7f);                                      \
    for (int64_t it = 0; it < iterations; it++)                                          \
        for (int c = 0; c < CHAINS; c++) acc[c] = FMADD(acc[c], a, b);                   \
    VEC total = acc[0];                                                                  \
    for (int c = 1; c < CHAINS; c++) total = ADD(total, acc[c]);                         \
    float lanes[LANES];                                                                  \
    STORE(lanes, total);                                                                 \
    *sink = lanes[0];                                                                    \
    return (double)iterations * CHAINS * LANES * 2.0;

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

__attribute__((target("avx512f"))) static double fma_avx512(int64_t iterations, volatile float *sink) {
    FMA_LOOP(__m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16)
}

__attribute__((target("avx2,fma"))) static double fma_avx2(int64_t iterations, volatile float *sink) {
    FMA_LOOP(__m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8)
}

#endif

// Plain C: the chains are independent, so the compiler vectorises them for the
// baseline ISA, as it does the portable micro-kernels.
static double fma_portable(int64_t iterations, volatile float *sink) {
    float acc[CHAINS * 4];
    for (int c = 0; c < CHAINS * 4; c++) acc[c] = 1.0f + 1e-3f * (float)c;
    for (int64_t it = 0; it < iterations; it++)
        for (int c = 0; c < CHAINS * 4; c++) acc[c] = acc[c] * 0.999999f + 1e-7f;
    float total = 0.0f;
    for (int c = 0; c < CHAINS * 4; c++) total += acc[c];
    *sink = total;
    return (double)iterations * CHAINS * 4 * 2.0;
}

// FLOP/s of one thread running the loop for about `seconds`: the best rate of
// its short chunks (about 0.2 ms each at AVX-512 speed), not the average over
// the whole time. On a shared machine the thread loses its core for whole
// scheduler slices, which an average counts as time and which made the peak
// read 16 GFLOP/s (and the kernel "500% of peak") on a busy 2-core machine;
// the kernel's timed calls are short too, so both are measured on the core
// while the process has it.
static double one_thread(const char *path, double seconds) {
    volatile float sink = 0.0f;
    double best = 0.0;
    const double start = now_seconds();
    double chunk_start = start, now = start;
    do {
        double flops;
#if defined(__x86_64__) || defined(__i386__)
        if (strcmp(path, "avx512") == 0) flops = fma_avx512(ITERATIONS_PER_CHECK, &sink);
        else if (strcmp(path, "avx2") == 0) flops = fma_avx2(ITERATIONS_PER_CHECK, &sink);
        else
#endif
            flops = fma_portable(ITERATIONS_PER_CHECK, &sink);
        now = now_seconds();
        if (now > chunk_start && flops / (now - chunk_start) > best) best = flops / (now - chunk_start);
        chunk_start = now;
    } while (now - start < seconds);
    return best;
}

#ifndef _OPENMP
typedef struct peak_job {
    const char *path;
    double seconds, flops;
} peak_job;

static void *peak_thread(void *argument) {
    peak_job *job = argument;
    job->flops = one_thread(job->path, job->seconds);
    return 0;
}

// Without OpenMP: `threads` POSIX threads side by side (the peak is a property
// of the cores, not of the driver).
static double threads_side_by_side(const char *path, int32_t threads, double seconds) {
    enum { MAX_PEAK_THREADS = 256 };
    if (threads > MAX_PEAK_THREADS) threads = MAX_PEAK_THREADS;
    pthread_t ids[MAX_PEAK_THREADS];
    peak_job jobs[MAX_PEAK_THREADS];
    int32_t started = 0;
    for (int32_t t = 0; t < threads; t++) {
        jobs[t] = (peak_job){path, seconds, 0.0};
        if (t > 0 && pthread_create(&ids[t], 0, peak_thread, &jobs[t]) == 0) started = t;
        else if (t > 0) break;
    }
    peak_thread(&jobs[0]);
    double total = jobs[0].flops;
    for (int32_t t = 1; t <= started; t++) {
        pthread_join(ids[t], 0);
        total += jobs[t].flops;
    }
    return total;
}
#endif

// The best of several short runs: on a shared machine a single run can lose
// its core for a while, and the peak is what the core can do, not the average.
enum { PEAK_TRIALS = 5 };

double attn_fma_peak_gflops(int32_t threads, double seconds) {
    const char *path = attn_selected_microkernels()->name;
    if (threads < 1) threads = 1;
    double best = 0.0;
    for (int trial = 0; trial < PEAK_TRIALS; trial++) {
        double total = 0.0;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads) reduction(+ : total)
        total += one_thread(path, seconds / PEAK_TRIALS);
#else
        total = threads_side_by_side(path, threads, seconds / PEAK_TRIALS);
#endif
        if (total > best) best = total;
    }
    return best / 1e9;
}
