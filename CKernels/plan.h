// plan.h: a call as rounds of independent tasks, the shape every driver runs.
//
//   plan = { round 0: tasks 0 … n0−1 | barrier | round 1: tasks 0 … n1−1 | … }
//
// A task writes only what no other task of its round reads or writes, and may
// read what earlier rounds wrote; within a round tasks run in any order, on any
// worker. Each worker owns scratch of its own (indexed by worker, never by
// thread id), so a driver is only: for each round, start up to `workers`
// workers, each calling attn_plan_work(plan, round, worker) with a distinct
// worker index, and wait for all of them. The tasks' results — and so the bits —
// do not depend on the driver, the worker count or the order.
#ifndef CATTENTION_PLAN_H
#define CATTENTION_PLAN_H

#include "include/attention.h"

#include <stddef.h>
#include <stdint.h>

enum {
    PLAN_MAX_ROUNDS = 4,
    PLAN_ALIGNMENT = 64,  // one cache line; also the AVX-512 register width
};

// Runs task `task` of round `round` with the scratch of worker `worker`.
typedef void (*plan_task_fn)(attn_plan *plan, int32_t round, int64_t task, int32_t worker);

// The header every kind of plan (sdpa.c, linear.c) starts with.
struct attn_plan {
    int32_t rounds;
    int32_t workers;
    int64_t tasks[PLAN_MAX_ROUNDS];
    int64_t next_task[PLAN_MAX_ROUNDS];  // shared counters, touched atomically only
    plan_task_fn run_task;
    void (*release)(attn_plan *plan);    // frees what the kind allocated, then the plan
};

// Appends a round of `tasks` tasks (rounds of zero tasks are left out).
void plan_add_round(attn_plan *plan, int64_t tasks);

// The largest task count of any round (what more workers than that would idle on).
int64_t plan_widest_round(const attn_plan *plan);

// Memory aligned to PLAN_ALIGNMENT through posix_memalign (C11's aligned_alloc
// is missing from older macOS SDKs and requires a multiple of the alignment);
// NULL when bytes is 0 or the allocation fails. Freed with attn_aligned_free.
void *attn_aligned_alloc(size_t bytes);
void attn_aligned_free(void *pointer);

// The worker count a call asking for `requested` threads gets: requested if
// positive, else attn_default_threads(), then at most `useful` and at least 1.
int32_t plan_worker_count(int32_t requested, int64_t useful);

// Whether `rows` rows of x [rows, in] and y [rows, out] overflow: they are
// addressed in bytes as int64, and the tile count rounds rows up to a multiple
// of `tile_rows`, so more rows than fit is ATTN_ERROR_SIZE_OVERFLOW.
static inline int plan_rows_overflow(int64_t rows, int64_t in, int64_t out, int64_t tile_rows) {
    const int64_t widest = in > out ? in : out;
    return rows > INT64_MAX / (int64_t)sizeof(float) / (widest > tile_rows ? widest : tile_rows);
}

// A forward call's driver on the plan its create call made: `created` (that
// call's status) if it failed; else runs *plan with attn_plan_run, destroys it
// and returns the run's status. The plan goes by address, so that it is read
// after the create call in the argument list has written it:
//   attn_plan *plan;
//   return plan_run_created(attn_..._plan_create(..., &plan), &plan);
attn_status plan_run_created(attn_status created, attn_plan **plan);

#endif
