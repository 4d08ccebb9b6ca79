#!/usr/bin/env python3
"""Writes the hand-made seed files of FuzzSafetensors.swift into Fuzz/safetensors/corpus/.

The other seeds there are copies of the golden fixtures
(Tests/AttentionTests/Fixtures/golden/*.safetensors). Overwrites only the files it names.
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
