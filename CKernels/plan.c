// plan.c: the drivers of a plan of rounds (plan.h), and what they share.
//
//   attn_plan_work: one worker's share of one round: task indices from the
//                   round's atomic counter until none are left.
//   attn_plan_run:  the C driver: one OpenMP parallel region, the rounds in turn
//                   with a barrier between them (serially without OpenMP).
// Swift's Dispatch driver (Sources/Attention/KernelThreading.swift) runs the
// same rounds with DispatchQueue.concurrentPerform; both give the same bits.
#define _POSIX_C_SOURCE 200809L
#include "environment.h"
#include "plan.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
// The Swift toolchain's clang ships no omp.h: declare the calls we use.
int omp_get_thread_num(void);
int omp_get_max_threads(void);
void kmp_set_blocktime(int milliseconds);  // libomp's extension (also in Intel's and LLVM's runtimes)
#endif

void plan_add_round(attn_plan *plan, int64_t tasks) {
    if (tasks <= 0 || plan->rounds >= PLAN_MAX_ROUNDS) return;
    plan->tasks[plan->rounds] = tasks;
    plan->next_task[plan->rounds] = 0;
    plan->rounds++;
}

int64_t plan_widest_round(const attn_plan *plan) {
    int64_t widest = 0;
    for (int32_t r = 0; r < plan->rounds; r++)
        if (plan->tasks[r] > widest) widest = plan->tasks[r];
    return widest;
}

void *attn_aligned_alloc(size_t bytes) {
    void *pointer = 0;
    if (bytes == 0 || posix_memalign(&pointer, PLAN_ALIGNMENT, bytes) != 0) return 0;
    return pointer;
}

void attn_aligned_free(void *pointer) { free(pointer); }

int32_t plan_worker_count(int32_t requested, int64_t useful) {
    int64_t workers = requested > 0 ? requested : attn_default_threads();
    if (workers > useful) workers = useful;
    return workers < 1 ? 1 : (int32_t)workers;
}

int attn_default_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    const long online = sysconf(_SC_NPROCESSORS_ONLN);
    return online > 0 && online < (1 << 20) ? (int)online : 1;
#endif
}

int attn_has_openmp(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

// ---------------------------------------------------------------------------
// What idle OpenMP workers do after a call.

// ATTN_IDLE_WAIT_RUNTIME (0) until set: the runtime's own setting (KMP_BLOCKTIME,
// or libomp's 200 ms of spinning) stays in force.
static int _Atomic idle_wait = -1;  // -1: not read from the environment yet

static const char *idle_wait_name(int policy) {
    return policy == ATTN_IDLE_WAIT_SPIN ? "spin" : policy == ATTN_IDLE_WAIT_SLEEP ? "sleep" : "runtime";
}

static int idle_wait_from_environment(void) {
    static atomic_int warned;
    const char *name = attn_environment_value("ATTENTION_IDLE_WAIT");
    if (name && strcmp(name, "spin") == 0) return ATTN_IDLE_WAIT_SPIN;
    if (name && strcmp(name, "sleep") == 0) return ATTN_IDLE_WAIT_SLEEP;
    if (name && strcmp(name, "runtime") == 0) return ATTN_IDLE_WAIT_RUNTIME;
    // An explicit KMP_BLOCKTIME is the user's choice: leave it in force.
    const int runtime = getenv("KMP_BLOCKTIME") != 0;
    if (name)
        attn_environment_warning(&warned, "ATTENTION_IDLE_WAIT", name, "expected spin, sleep or runtime",
                                 runtime ? "runtime (KMP_BLOCKTIME is set)" : idle_wait_name(ATTN_IDLE_WAIT_DEFAULT_POLICY));
    return runtime ? ATTN_IDLE_WAIT_RUNTIME : ATTN_IDLE_WAIT_DEFAULT_POLICY;
}

attn_idle_wait attn_get_idle_wait(void) {
    int policy = idle_wait;
    if (policy < 0) {  // a benign race: every thread reads the same environment
        policy = idle_wait_from_environment();
        idle_wait = policy;
    }
    return (attn_idle_wait)policy;
}

int attn_set_idle_wait(attn_idle_wait policy) {
    if (policy != ATTN_IDLE_WAIT_RUNTIME && policy != ATTN_IDLE_WAIT_SPIN &&
        policy != ATTN_IDLE_WAIT_SLEEP)
        return 0;
    idle_wait = policy;
    return 1;
}

#ifdef _OPENMP
// libomp's block time is an internal control variable of the thread that forks
// a team, inherited by the team: set it on the calling thread when the policy
// changed since this thread last set it.
static _Thread_local int applied_idle_wait = ATTN_IDLE_WAIT_RUNTIME;

// Spinning workers answer the next call within microseconds; sleeping ones
// cost a futex wake-up (tens of microseconds) but burn no CPU between calls.
enum { SPIN_MILLISECONDS = 200, SLEEP_MILLISECONDS = 0 };

static void apply_idle_wait(void) {
    const int policy = attn_get_idle_wait();
    if (policy == applied_idle_wait || policy == ATTN_IDLE_WAIT_RUNTIME) return;
    kmp_set_blocktime(policy == ATTN_IDLE_WAIT_SPIN ? SPIN_MILLISECONDS : SLEEP_MILLISECONDS);
    applied_idle_wait = policy;
}
#endif

// ---------------------------------------------------------------------------
// Drivers.

int32_t attn_plan_rounds(const attn_plan *plan) { return plan ? plan->rounds : 0; }

int64_t attn_plan_tasks(const attn_plan *plan, int32_t round) {
    return plan && round >= 0 && round < plan->rounds ? plan->tasks[round] : 0;
}

int32_t attn_plan_workers(const attn_plan *plan) { return plan ? plan->workers : 0; }

void attn_plan_work(attn_plan *plan, int32_t round, int32_t worker) {
    if (!plan || round < 0 || round >= plan->rounds || worker < 0 || worker >= plan->workers) return;
    for (;;) {
        const int64_t task = __atomic_fetch_add(&plan->next_task[round], 1, __ATOMIC_RELAXED);
        if (task >= plan->tasks[round]) break;
        plan->run_task(plan, round, task, worker);
    }
}

attn_status attn_plan_run(attn_plan *plan) {
    if (!plan) return ATTN_ERROR_NULL_POINTER;
#ifdef _OPENMP
    if (plan->workers > 1) {
        apply_idle_wait();
        // The runtime may start fewer threads than asked for; the counters hand
        // the tasks to whichever workers there are.
#pragma omp parallel num_threads(plan->workers)
        {
            const int32_t worker = omp_get_thread_num();
            for (int32_t round = 0; round < plan->rounds; round++) {
                if (round > 0) {
#pragma omp barrier
                }
                attn_plan_work(plan, round, worker);
            }
        }
        return ATTN_OK;
    }
#endif
    for (int32_t round = 0; round < plan->rounds; round++) attn_plan_work(plan, round, 0);
    return ATTN_OK;
}

void attn_plan_destroy(attn_plan *plan) {
    if (plan) plan->release(plan);
}

attn_status plan_run_created(attn_status created, attn_plan **plan) {
    if (created != ATTN_OK) return created;
    const attn_status ran = attn_plan_run(*plan);
    attn_plan_destroy(*plan);
    return ran;
}
