// roof.c: the machine's read bandwidth, measured, so that benchmarks can state
// what fraction of it a bandwidth-bound call (a decode step, a projection of
// one row) reaches in the same run.
//
//   Σ_i a[i]·b[i] over two float32 arrays of bytes/2 each, split between the
//   threads: what decoding does with keys and values, a read of every byte once
//   and nothing written.
//
// Each thread dots its own contiguous share (first touched by that thread, so
// that its pages are near it). The passes are synchronised: a barrier before
// each pass sets all threads off together, each notes when it set off and when
// it finished, and the pass's aggregate rate is all the threads' bytes over the
// pass's time, from the first start to the last finish (the slowest thread's
// own time when they overlap, more when a busy machine has them take turns).
// So no thread's pass counts while another is idle (still touching its pages,
// or done) and it has the memory system to itself. The best pass is kept (a
// shared machine can take a core away for a while; the roof is what the
// memory system can do). Sixteen accumulators, more than FMA latency × ports.
#define _POSIX_C_SOURCE 200809L
#include "attention.h"
#include "microkernels/microkernels.h"
#include "plan.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
// The Swift toolchain's clang ships no omp.h: declare the calls we use.
int omp_get_thread_num(void);
int omp_get_num_threads(void);
#else
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
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

#ifndef _OPENMP
// A barrier of `count` threads from C11 atomics (macOS has no
// pthread_barrier_t): the last to arrive opens the next generation. Waiters
// yield their core, which a machine with fewer free cores than threads needs.
typedef struct roof_barrier {
    _Atomic int32_t arrived, generation;
    int32_t count;
} roof_barrier;

static void roof_barrier_wait(roof_barrier *barrier) {
    const int32_t generation = atomic_load(&barrier->generation);
    if (atomic_fetch_add(&barrier->arrived, 1) + 1 == barrier->count) {
        atomic_store(&barrier->arrived, 0);
        atomic_fetch_add(&barrier->generation, 1);
    } else {
        while (atomic_load(&barrier->generation) == generation) sched_yield();
    }
}
#endif

// One measurement: `shares` shares of `floats` floats of a and of b each (the
// threads asked for), run by `workers` threads (those that started: worker w
// takes the shares s ≡ w mod workers, one each when all started). Worker 0
// keeps the score and decides when to stop; the barriers publish it.
typedef struct roof_run {
    const char *path;
    int32_t shares;
    int64_t floats;
    double seconds;
    int ok[MAX_ROOF_THREADS];        // per worker: its memory could be had
    double began[MAX_ROOF_THREADS];  // per worker: when it set off on this pass
    double ended[MAX_ROOF_THREADS];  // per worker: when it finished this pass
    double start, best_rate;         // worker 0's: when the timed passes began, bytes/s
    int stop;                        // worker 0's: no more passes
#ifndef _OPENMP
    _Atomic int go;                  // the worker count is known: start
    roof_barrier barrier;
#endif
} roof_run;

static void roof_barrier_all(roof_run *run) {
#ifdef _OPENMP
    (void)run;
#pragma omp barrier
#else
    roof_barrier_wait(&run->barrier);
#endif
}

// Worker `worker` of `workers`: allocates and first-touches its shares, warms
// them up, then runs the passes in step with the others.
static void roof_worker(roof_run *run, int32_t worker, int32_t workers) {
    float *a[MAX_ROOF_THREADS], *b[MAX_ROOF_THREADS];
    int32_t mine = 0;
    int ok = 1;
    for (int32_t s = worker; s < run->shares; s += workers, mine++) {
        // In cache memory, as a KVCache's keys and values are (huge pages where granted).
        a[mine] = attn_cache_alloc((int64_t)sizeof(float) * run->floats);
        b[mine] = attn_cache_alloc((int64_t)sizeof(float) * run->floats);
        if (!a[mine] || !b[mine]) {
            ok = 0;
            continue;
        }
        for (int64_t i = 0; i < run->floats; i++) {  // first touch, by this thread
            a[mine][i] = 1.0f + 1e-7f * (float)(i & 1023);
            b[mine][i] = 1.0f - 1e-7f * (float)(i & 511);
        }
    }
    volatile float sink = 0.0f;
    if (ok)  // warm the caches (when it fits) and the TLB
        for (int32_t m = 0; m < mine; m++) sink = dot(run->path, a[m], b[m], run->floats);
    run->ok[worker] = ok;
    roof_barrier_all(run);  // all set up
    if (worker == 0) {
        run->stop = 0;
        for (int32_t w = 0; w < workers; w++)
            if (!run->ok[w]) run->stop = 1;
        run->best_rate = 0.0;
        run->start = now_seconds();
    }
    const double pass_bytes = 2.0 * (double)run->floats * sizeof(float) * (double)run->shares;
    for (int pass = 0;; pass++) {
        roof_barrier_all(run);  // all set off together, and all see worker 0's stop
        if (run->stop) break;
        run->began[worker] = now_seconds();
        for (int32_t m = 0; m < mine; m++) sink = dot(run->path, a[m], b[m], run->floats);
        run->ended[worker] = now_seconds();
        roof_barrier_all(run);  // all done
        if (worker == 0) {
            // The pass took from the first thread's start to the last one's
            // end: at least the slowest thread's own time, and more when the
            // threads did not overlap (more threads than free cores take turns).
            double first = run->began[0], last = run->ended[0];
            for (int32_t w = 1; w < workers; w++) {
                if (run->began[w] < first) first = run->began[w];
                if (run->ended[w] > last) last = run->ended[w];
            }
            if (last > first && pass_bytes / (last - first) > run->best_rate) run->best_rate = pass_bytes / (last - first);
            run->stop = pass + 1 >= ROOF_PASSES_MAX ||
                        (pass + 1 >= ROOF_PASSES_MIN && now_seconds() - run->start > run->seconds);
        }
    }
    (void)sink;
    for (int32_t m = 0; m < mine; m++) {
        attn_cache_free(a[m], (int64_t)sizeof(float) * run->floats);
        attn_cache_free(b[m], (int64_t)sizeof(float) * run->floats);
    }
}

#ifndef _OPENMP
typedef struct roof_slot {
    roof_run *run;
    int32_t worker;
} roof_slot;

static void *roof_thread(void *argument) {
    roof_slot *slot = argument;
    while (!atomic_load(&slot->run->go)) sched_yield();
    roof_worker(slot->run, slot->worker, slot->run->barrier.count);
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
    roof_run *run = calloc(1, sizeof *run);  // ~5 KB: off the caller's stack
    if (!run) return 0.0;
    run->path = attn_selected_microkernels()->name;
    run->shares = threads;
    run->floats = floats;
    run->seconds = seconds;
#ifndef _OPENMP
    atomic_init(&run->go, 0);
    atomic_init(&run->barrier.arrived, 0);
    atomic_init(&run->barrier.generation, 0);
#endif
    int32_t workers = 1;
#ifdef _OPENMP
#pragma omp parallel num_threads(threads)
    {
        // The team may be smaller than asked (nested, OMP_DYNAMIC, a limit):
        // its threads then take the missing shares.
#pragma omp single
        workers = omp_get_num_threads();
        roof_worker(run, omp_get_thread_num(), omp_get_num_threads());
    }
#else
    // A thread that could not start leaves its share to those that did (run
    // one after another in the same pass: a lower roof, never a fake one).
    pthread_t ids[MAX_ROOF_THREADS];
    roof_slot slots[MAX_ROOF_THREADS];
    for (int32_t t = 1; t < threads; t++) {
        slots[workers] = (roof_slot){run, workers};
        if (pthread_create(&ids[workers], 0, roof_thread, &slots[workers]) == 0) workers++;
    }
    run->barrier.count = workers;
    atomic_store(&run->go, 1);
    roof_worker(run, 0, workers);
    for (int32_t w = 1; w < workers; w++) pthread_join(ids[w], 0);
#endif
    double rate = 0.0;
    int ok = 1;
    for (int32_t w = 0; w < workers; w++)
        if (!run->ok[w]) ok = 0;
    if (ok) rate = run->best_rate;
    free(run);
    return rate / 1e9;
}
