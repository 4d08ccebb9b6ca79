// params.c: the one validator of attn_params (params.h).
//
//   query [B, Hq, Lq, D]   key [B, Hkv, Lk, D]   value [B, Hkv, Lk, Dv]
//   output [B, Hq, Lq, Dv]   logsumexp [B, Hq, Lq]   mask [B, Hq, Lq, Lk]
//   dense [B, Hq, Lq, Lk]    dO, dQ like output and query; dK, dV like key and value
#include "params.h"

#include <math.h>
#include <stddef.h>
#include <stdint.h>

// Sizes past this would let a thread's scratch (bounded through the head and
// value dims) overflow int64 in the loops' products.
static const int64_t LARGEST_DIM = (int64_t)1 << 40;

static int kv_storage_known(const attn_params *p) {
    return p->kv_storage == ATTN_STORAGE_F32 || p->kv_storage == ATTN_STORAGE_F16 ||
           p->kv_storage == ATTN_STORAGE_BF16;
}

// The options every call checks the same way: sizes, masks, scale, dropout.
static attn_status validate_options(const attn_params *p, unsigned flags) {
    const int values = (flags & ATTN_CALL_READS_VALUES) != 0;
    if (flags & ATTN_CALL_ANY_KV_STORAGE) {
        if (!kv_storage_known(p)) return ATTN_ERROR_STORAGE;
        if (p->key_layout != ATTN_KEY_LAYOUT_ROWS && p->key_layout != ATTN_KEY_LAYOUT_PANELS &&
            p->key_layout != ATTN_KEY_LAYOUT_PANELS64)
            return ATTN_ERROR_KEY_LAYOUT;
        // Panels of 16 or 64 keys: the panel stride holds a whole panel.
        const int64_t panel_keys = p->key_layout == ATTN_KEY_LAYOUT_PANELS ? 16
                                   : p->key_layout == ATTN_KEY_LAYOUT_PANELS64 ? 64 : 0;
        int64_t panel_elements;
        if (panel_keys && p->key_length > 0 && p->head_dim > 0 &&
            (__builtin_mul_overflow(panel_keys, p->head_dim, &panel_elements) ||
             p->key_strides[2] < panel_elements))
            return ATTN_ERROR_KEY_LAYOUT;
    } else {
        // Weights, scores and the backward read float32 keys and values in rows.
        if (p->kv_storage != ATTN_STORAGE_F32) return ATTN_ERROR_STORAGE;
        if (p->key_layout != ATTN_KEY_LAYOUT_ROWS) return ATTN_ERROR_KEY_LAYOUT;
    }
    if (p->batch < 0 || p->query_heads < 0 || p->kv_heads < 0 || p->query_length < 0 ||
        p->key_length < 0 || p->head_dim < 0 || (values && p->value_dim < 0))
        return ATTN_ERROR_NEGATIVE_SIZE;
    if (p->causal != ATTN_CAUSAL_NONE && p->causal != ATTN_CAUSAL_TOP_LEFT &&
        p->causal != ATTN_CAUSAL_BOTTOM_RIGHT)
        return ATTN_ERROR_MASK_KIND;
    if (p->mask_kind != ATTN_MASK_NONE && p->mask_kind != ATTN_MASK_KEEP &&
        p->mask_kind != ATTN_MASK_ADDITIVE)
        return ATTN_ERROR_MASK_KIND;
    if (!isfinite(p->scale)) return ATTN_ERROR_SCALE;
    if (!(p->dropout_p >= 0.0f && p->dropout_p < 1.0f)) return ATTN_ERROR_DROPOUT;
    return ATTN_OK;
}

// Every product the loops form from sizes must fit in int64: the query rows
// (which also bound the tasks), the key rows, and the elements each call writes.
// Sets *rows = B·Hq·Lq, *keys = B·Hkv·Lk (backward only, else 0) and
// *elements = what the call writes (B·Hq·Lq·Lk for dense).
static int sizes_overflow(const attn_params *p, unsigned flags, int64_t *rows, int64_t *keys,
                          int64_t *elements) {
    *keys = 0;
    *elements = 0;
    if (p->head_dim > LARGEST_DIM || ((flags & ATTN_CALL_READS_VALUES) && p->value_dim > LARGEST_DIM))
        return 1;
    if (__builtin_mul_overflow(p->batch, p->query_heads, rows) ||
        __builtin_mul_overflow(*rows, p->query_length, rows))
        return 1;
    if (flags & ATTN_CALL_WRITES_DENSE) return __builtin_mul_overflow(*rows, p->key_length, elements);
    if (!(flags & ATTN_CALL_BACKWARD)) return __builtin_mul_overflow(*rows, p->value_dim, elements);
    const int64_t row_elements = p->value_dim + p->head_dim;  // dO and O, dQ and Q; dV and V, dK and K
    return __builtin_mul_overflow(*rows, row_elements, elements) ||
           __builtin_mul_overflow(p->batch, p->kv_heads, keys) ||
           __builtin_mul_overflow(*keys, p->key_length, keys) ||
           __builtin_mul_overflow(*keys, row_elements, elements);
}

// The forward operands of query rows that see keys: query and key (D > 0),
// value (Dv > 0, when read), then their inner strides, then the mask.
static attn_status validate_forward_operands(const attn_params *p, int values) {
    if (p->head_dim > 0 && (!p->query || !p->key)) return ATTN_ERROR_NULL_POINTER;
    if (values && p->value_dim > 0 && !p->value) return ATTN_ERROR_NULL_POINTER;
    if (p->head_dim > 0 && (p->query_strides[3] != 1 || p->key_strides[3] != 1))
        return ATTN_ERROR_INNER_STRIDE;
    if (values && p->value_dim > 0 && p->value_strides[3] != 1) return ATTN_ERROR_INNER_STRIDE;
    if (p->mask_kind != ATTN_MASK_NONE && !p->mask) return ATTN_ERROR_NULL_POINTER;
    return ATTN_OK;
}

// A backward operand and its gradient (or its forward partner), rows of `dim`
// floats (D or Dv; 0 where no row is read).
typedef struct operand_pair {
    int64_t dim;
    const float *a, *b;
    int64_t a_inner_stride, b_inner_stride;
} operand_pair;

// When dim > 0: both there (else NULL_POINTER), then both with unit inner
// stride (else INNER_STRIDE).
static attn_status validate_operand_pair(const operand_pair *pair) {
    if (pair->dim <= 0) return ATTN_OK;
    if (!pair->a || !pair->b) return ATTN_ERROR_NULL_POINTER;
    if (pair->a_inner_stride != 1 || pair->b_inner_stride != 1) return ATTN_ERROR_INNER_STRIDE;
    return ATTN_OK;
}

// The backward operands: per query row, logsumexp, Q and dQ, O and dO; per key
// row, K and dK, V and dV; the mask where both exist.
static attn_status validate_backward_operands(const attn_backward_params *b, int64_t rows,
                                              int64_t keys) {
    const attn_params *p = &b->forward;
    if (rows > 0 && !p->logsumexp) return ATTN_ERROR_NULL_POINTER;
    const int64_t row_d = rows > 0 ? p->head_dim : 0, row_dv = rows > 0 ? p->value_dim : 0;
    const int64_t key_d = keys > 0 ? p->head_dim : 0, key_dv = keys > 0 ? p->value_dim : 0;
    const operand_pair pairs[] = {
        {row_d, b->grad_query, p->query, b->grad_query_strides[3], p->query_strides[3]},
        {row_dv, p->output, b->grad_output, p->output_strides[3], b->grad_output_strides[3]},
        {key_d, b->grad_key, p->key, b->grad_key_strides[3], p->key_strides[3]},
        {key_dv, b->grad_value, p->value, b->grad_value_strides[3], p->value_strides[3]},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) {
        const attn_status status = validate_operand_pair(&pairs[i]);
        if (status != ATTN_OK) return status;
    }
    if (rows > 0 && keys > 0 && p->mask_kind != ATTN_MASK_NONE && !p->mask)
        return ATTN_ERROR_NULL_POINTER;
    return ATTN_OK;
}

attn_status attn_validate_params(const attn_params *p, unsigned flags, const void *dense,
                                 const attn_backward_params *gradients) {
    if (!p) return ATTN_ERROR_NULL_POINTER;
    const attn_status options = validate_options(p, flags);
    if (options != ATTN_OK) return options;
    int64_t rows, keys, elements;
    if (sizes_overflow(p, flags, &rows, &keys, &elements)) return ATTN_ERROR_SIZE_OVERFLOW;

    // Nothing to read or write: no query row (forward), no cell (dense), no
    // query row and no key row (backward).
    const int backward = (flags & ATTN_CALL_BACKWARD) != 0;
    if (backward ? rows == 0 && keys == 0 : (flags & ATTN_CALL_WRITES_DENSE) ? elements == 0 : rows == 0)
        return ATTN_OK;
    if (p->kv_heads == 0 || p->query_heads % p->kv_heads != 0) return ATTN_ERROR_GROUPED_QUERY;

    if (backward) return validate_backward_operands(gradients, rows, keys);
    if (flags & ATTN_CALL_WRITES_DENSE) {
        if (!dense) return ATTN_ERROR_NULL_POINTER;
        return validate_forward_operands(p, 0);  // key_length > 0 here
    }
    if ((flags & ATTN_CALL_WRITES_OUTPUT) && p->value_dim > 0) {
        if (!p->output) return ATTN_ERROR_NULL_POINTER;
        if (p->output_strides[3] != 1) return ATTN_ERROR_INNER_STRIDE;
    }
    if (p->key_length == 0) return ATTN_OK;  // only the output is written
    return validate_forward_operands(p, (flags & ATTN_CALL_READS_VALUES) != 0);
}
