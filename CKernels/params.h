// params.h: the one validator of attn_params, shared by every entry point
// (internal to the C target).
//
//   forward   (sdpa.c)           query, key, value → output [B, Hq, Lq, Dv]
//   partial   (sdpa.c)           query, key, value → a partial state (output unused)
//   dense     (weights.c)        query, key        → weights or scores [B, Hq, Lq, Lk]
//   backward  (sdpa_backward.c)  forward's operands, dO → dQ, dK, dV
//
// Each entry point states what it reads and writes with the flags below; the
// checks, their order and the status each returns are the same for all of them
// where they overlap. The loops behind a valid call assume valid input.
#ifndef CATTENTION_PARAMS_H
#define CATTENTION_PARAMS_H

#include "include/attention.h"

enum {
    // kv_storage may be any attn_storage and key_layout any attn_key_layout
    // (the forward passes); without it they must be float32 and rows
    // (ATTN_ERROR_STORAGE, ATTN_ERROR_KEY_LAYOUT).
    ATTN_CALL_ANY_KV_STORAGE = 1 << 0,
    // value [B, Hkv, Lk, Dv] is read: value_dim is checked, and value and its
    // inner stride where Dv > 0 (not for weights and scores).
    ATTN_CALL_READS_VALUES = 1 << 1,
    // output [B, Hq, Lq, Dv] is written (the forward pass; not a partial one).
    ATTN_CALL_WRITES_OUTPUT = 1 << 2,
    // a contiguous [B, Hq, Lq, Lk] buffer (`dense`) is written: weights, scores.
    ATTN_CALL_WRITES_DENSE = 1 << 3,
    // the backward pass: `gradients` (whose forward is `params`) gives dO, dQ,
    // dK, dV; output and logsumexp are read.
    ATTN_CALL_BACKWARD = 1 << 4,
};

// ATTN_OK when a call that reads and writes what `flags` says can run on
// `params`; else the first problem found, in the order: pointer, storage and
// layout, negative sizes, causal and mask kinds, scale, dropout, sizes that
// overflow int64, grouped-query heads, then each operand's pointer and stride.
// A call with nothing to read or write is valid once its options are.
// `dense` is read only with ATTN_CALL_WRITES_DENSE, `gradients` only with
// ATTN_CALL_BACKWARD (then params == &gradients->forward).
attn_status attn_validate_params(const attn_params *params, unsigned flags, const void *dense,
                                 const attn_backward_params *gradients);

#endif
