#!/usr/bin/env python3
"""Writes the safetensors dtype fixtures of SafetensorsDTypeTests.swift next to this script.

Produced with the reference writer, `safetensors.numpy.save_file` (huggingface/safetensors
0.8.0), numpy 2.4.6 and ml_dtypes 0.7.0 (bfloat16 and the float8 types):

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install safetensors==0.8.0 numpy ml_dtypes
    /tmp/venv/bin/python Tests/AttentionTests/Fixtures/dtypes/make_dtype_fixtures.py

Files (deterministic: seeded generator, fixed values):

- checkpoint.safetensors: a checkpoint shaped like a published one (BF16 projection weights,
  an F16 embedding, F32 norms, I64 position ids, a BOOL mask), plus one tensor of every other
  decodable dtype: integers at their extremes, F64 values at rounding ties and beyond the float32
  range, every byte of each 8-bit float format, and a C64 tensor.
- checkpoint_expected.safetensors: for every floating-point tensor of checkpoint.safetensors, its
  float32 value as numpy/ml_dtypes convert it (`astype(np.float32)`: exact for the narrow types,
  round-to-nearest-even for F64); for every integer tensor that fits, its values as I64.
- sdpa_f16.safetensors, sdpa_bf16.safetensors: q [1, 2, 5, 8], k [1, 2, 7, 8], v [1, 2, 7, 4]
  stored as F16 (BF16, with an F16 mask_additive [5, 7] in the BF16 file), and out_ref64, the
  attention of the stored (widened) values computed in float64 and rounded to float32.
"""
import os

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

HERE = os.path.dirname(os.path.abspath(__file__))


def attention64(q, k, v, additive=None):
    q, k, v = (x.astype(np.float64) for x in (q, k, v))
    logits = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    if additive is not None:
        logits = logits + additive.astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=-1, keepdims=True)
    return (weights @ v).astype(np.float32)


def main():
    rng = np.random.default_rng(2026)
    bf16 = ml_dtypes.bfloat16
    every_byte = np.arange(256, dtype=np.uint8)

    f64_edges = np.array([
        1.0 + 2.0**-24,                   # tie between 1 and 1 + 2^-23: to even, 1
        1.0 + 3 * 2.0**-24,               # tie between 1 + 2^-23 and 1 + 2^-22: to even, 1 + 2^-22
        1.0 + 2.0**-24 + 2.0**-52,        # just above the tie: up
        -(1.0 + 3 * 2.0**-24),            # negative tie
        2.0**-149 * 0.5,                  # half the smallest subnormal: tie, to even, 0
        2.0**-149 * 1.5,                  # tie between 1 and 2 subnormal units: 2 units
        3.4028235677973366e38,            # largest float32 + half an ulp: tie, to even: infinity
        3.4028235677973362e38,            # just below that tie: largest float32
        1e39, -1e300,                     # beyond float32: infinities
        1e-50, 0.0, -0.0,                 # underflow to zero, signed zeros
        np.inf, -np.inf, np.nan,
        np.pi, -np.e,
    ], dtype=np.float64)

    checkpoint = {
        "model.embed_tokens.weight": rng.standard_normal((32, 16)).astype(np.float16),
        "model.layers.0.self_attn.q_proj.weight": (rng.standard_normal((16, 16)) * 0.25).astype(bf16),
        "model.layers.0.self_attn.k_proj.weight": (rng.standard_normal((8, 16)) * 0.25).astype(bf16),
        "model.layers.0.self_attn.v_proj.weight": (rng.standard_normal((8, 16)) * 0.25).astype(bf16),
        "model.layers.0.self_attn.o_proj.weight": (rng.standard_normal((16, 16)) * 0.25).astype(bf16),
        "model.layers.0.input_layernorm.weight": (1 + 0.1 * rng.standard_normal(16)).astype(np.float32),
        "model.norm.weight": (1 + 0.1 * rng.standard_normal(16)).astype(np.float16),
        "position_ids": np.arange(8, dtype=np.int64).reshape(1, 8),
        "attention_mask": np.array([[True] * 6 + [False] * 2]),
        "f16.specials": np.array([0.0, -0.0, 1.0, 65504.0, -65504.0, 2.0**-14, 2.0**-24, -(2.0**-24),
                                  np.inf, -np.inf, np.nan, 0.1], dtype=np.float16),
        "bf16.specials": np.array([0.0, -0.0, 1.0, 3.3895313892515355e38, 2.0**-126, 2.0**-133,
                                   np.inf, -np.inf, np.nan, 0.1], dtype=bf16),
        "f64.edges": f64_edges,
        "f8_e4m3.every_byte": every_byte.view(ml_dtypes.float8_e4m3fn),
        "f8_e5m2.every_byte": every_byte.view(ml_dtypes.float8_e5m2),
        "f8_e4m3fnuz.every_byte": every_byte.view(ml_dtypes.float8_e4m3fnuz),
        "f8_e5m2fnuz.every_byte": every_byte.view(ml_dtypes.float8_e5m2fnuz),
        "f8_e8m0.every_byte": every_byte.view(ml_dtypes.float8_e8m0fnu),
        "i8.extremes": np.array([-128, -1, 0, 127], dtype=np.int8),
        "i16.extremes": np.array([-32768, -1, 0, 32767], dtype=np.int16),
        "i32.extremes": np.array([-2**31, -1, 0, 2**31 - 1], dtype=np.int32),
        "i64.extremes": np.array([-2**63, -1, 0, 2**63 - 1], dtype=np.int64),
        "u8.extremes": np.array([0, 1, 255], dtype=np.uint8),
        "u16.extremes": np.array([0, 1, 65535], dtype=np.uint16),
        "u32.extremes": np.array([0, 1, 2**32 - 1], dtype=np.uint32),
        "u64.extremes": np.array([0, 1, 2**63, 2**64 - 1], dtype=np.uint64),
        "c64.values": np.array([1 + 2j, -0.5 - 0.25j], dtype=np.complex64),
    }
    save_file(checkpoint, os.path.join(HERE, "checkpoint.safetensors"), metadata={"format": "pt"})

    expected = {}
    for name, array in checkpoint.items():
        if array.dtype.kind == "f" or array.dtype in (bf16,) or "f8_" in name:
            expected[name] = array.astype(np.float32)
        elif array.dtype.kind in "iu" and name != "u64.extremes":
            expected[name] = array.astype(np.int64)
    save_file(expected, os.path.join(HERE, "checkpoint_expected.safetensors"),
              metadata={"source": "checkpoint.safetensors converted by numpy/ml_dtypes astype"})

    for dtype, file_name in ((np.float16, "sdpa_f16.safetensors"), (bf16, "sdpa_bf16.safetensors")):
        q = rng.standard_normal((1, 2, 5, 8)).astype(dtype)
        k = rng.standard_normal((1, 2, 7, 8)).astype(dtype)
        v = rng.standard_normal((1, 2, 7, 4)).astype(dtype)
        tensors = {"q": q, "k": k, "v": v}
        additive = None
        if dtype is bf16:
            additive = np.where(rng.random((5, 7)) < 0.3, -4.0, rng.standard_normal((5, 7))).astype(np.float16)
            tensors["mask_additive"] = additive
        tensors["out_ref64"] = attention64(q, k, v, additive)
        save_file(tensors, os.path.join(HERE, file_name), metadata={"op": "sdpa", "dtype": str(np.dtype(dtype))})


if __name__ == "__main__":
    main()
