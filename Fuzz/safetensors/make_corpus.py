#!/usr/bin/env python3
"""Writes the hand-made seed files of FuzzSafetensors.swift into Fuzz/safetensors/corpus/.

The other seeds there are copies of the golden fixtures
(Tests/AttentionTests/Fixtures/golden/*.safetensors) and of the dtype fixtures written by the
reference implementation (Tests/AttentionTests/Fixtures/dtypes/*.safetensors, as dtypes-*).
Overwrites only the files it names. Uses the standard library only.
"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def safetensors(header, data=b"", pad=True):
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(HERE, exist_ok=True)
    write("hand-empty-object", safetensors({}))
    write("hand-metadata-only", safetensors({"__metadata__": {"format": "pt", "note": "a \"quoted\" \\ value\n"}}))
    write("hand-every-dtype", safetensors({
        "__metadata__": {"k": "v"},
        "b": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]},
        "f": {"dtype": "F32", "shape": [2, 1], "data_offsets": [3, 11]},
        "i": {"dtype": "I32", "shape": [1], "data_offsets": [11, 15]},
        "u": {"dtype": "U8", "shape": [], "data_offsets": [15, 16]},
    }, b"\x00\x01\x02" + struct.pack("<ff", 1.5, float("nan")) + struct.pack("<i", -7) + b"\xff"))
    # Every dtype of the format (huggingface/safetensors 0.8), four elements each
    # (whole bytes for F4 and F6), in the reference writer's order.
    bits = {"F64": 64, "I64": 64, "U64": 64, "C64": 64, "F32": 32, "I32": 32, "U32": 32,
            "F16": 16, "BF16": 16, "I16": 16, "U16": 16, "F8_E4M3": 8, "F8_E5M2": 8,
            "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "I8": 8, "U8": 8, "BOOL": 8,
            "F6_E2M3": 6, "F6_E3M2": 6, "F4": 4}
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for index, (dtype, width) in enumerate(bits.items()):
        count = 4 * width // 8
        header["t%02d_%s" % (index, dtype.lower())] = {"dtype": dtype, "shape": [2, 2],
                                                      "data_offsets": [len(data), len(data) + count]}
        data += bytes((0x35 * (i + 1) + index) & 0xFF for i in range(count))
    write("hand-format-every-dtype", safetensors(header, data))
    # F16 and BF16 at their edges (subnormal, largest, infinity, NaN), I64 ids, an F64 tie.
    f16 = struct.pack("<8H", 0x0001, 0x03FF, 0x0400, 0x7BFF, 0x7C00, 0xFC00, 0x7E01, 0x8000)
    bf16 = struct.pack("<8H", 0x0001, 0x007F, 0x0080, 0x7F7F, 0x7F80, 0xFF80, 0x7FC1, 0x8000)
    i64 = struct.pack("<4q", -2**63, -1, 0, 2**63 - 1)
    f64 = struct.pack("<2d", 1.0 + 2.0**-24, 3.4028235677973366e38)
    write("hand-f16-bf16-i64", safetensors({
        "embed": {"dtype": "F16", "shape": [2, 4], "data_offsets": [0, 16]},
        "proj": {"dtype": "BF16", "shape": [4, 2], "data_offsets": [16, 32]},
        "ids": {"dtype": "I64", "shape": [1, 4], "data_offsets": [32, 64]},
        "tie": {"dtype": "F64", "shape": [2], "data_offsets": [64, 80]},
    }, f16 + bf16 + i64 + f64))
    write("hand-u64-beyond-int64", safetensors(
        {"u": {"dtype": "U64", "shape": [2], "data_offsets": [0, 16]}}, struct.pack("<2Q", 1, 2**64 - 1)))
    write("hand-reject-f4-half-byte", safetensors(
        {"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\x12\x34"))
    write("hand-empty-tensors-share-offset", safetensors({
        "a": {"dtype": "F32", "shape": [0, 3], "data_offsets": [0, 0]},
        "b": {"dtype": "U8", "shape": [2, 0], "data_offsets": [0, 0]},
        "c": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
    }, b"\x07\x08"))
    write("hand-unicode-names", safetensors({
        "\u00e9\u4e2d\U0001F600": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
        "tab\there": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2], "extra": [1, {"x": None}]},
    }, b"\x01\x02"))
    write("hand-unpadded-header", safetensors({"x": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]}},
                                              struct.pack("<ii", 1, 2), pad=False))
    write("hand-numbers-and-escapes", safetensors(
        b'{"\\u0041\\n":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"__metadata__":null}', struct.pack("<f", 2.0)))
    # Rejected inputs, to start from near misses.
    write("hand-reject-overlap", safetensors({
        "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
        "b": {"dtype": "U8", "shape": [2], "data_offsets": [1, 3]},
    }, b"\x00" * 3))
    write("hand-reject-huge-shape", safetensors({"a": {"dtype": "F32", "shape": [4611686018427387904, 4], "data_offsets": [0, 0]}}))
    write("hand-reject-deep-nesting", safetensors(b'{"a":' + b"[" * 40 + b"]" * 40 + b"}"))
    write("hand-reject-short", b"\x08\x00\x00")


if __name__ == "__main__":
    main()
