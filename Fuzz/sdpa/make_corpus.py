#!/usr/bin/env python3
"""Writes the hand-made seed inputs of fuzz_sdpa.c into Fuzz/sdpa/corpus/.

The input format (see LLVMFuzzerTestOneInput in fuzz_sdpa.c): a header of one byte per field,
    B, Hq, Hkv, Lq, Lk, D, Dv, causal, mask, scale mode, dropout, run,
    layout q, layout k, layout v, layout out, seed (4 bytes), defect, defect detail,
    [scale as 4 little-endian bytes when scale mode = 4]
then one byte per tensor element (q, k, v, then the mask); elements past the end
of the input are generated. Value bytes 0-7 are NaN, +Inf, -Inf, 1e15, -1e15,
-0, a subnormal and 3e38; byte b >= 8 is (b - 132) / 16.
Run it from anywhere; it overwrites only the files it names.
"""
import os
import random
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
NAN, INF, NINF, HUGE, NHUGE, NZERO, SUB = 0, 1, 2, 3, 4, 5, 6


def mask_byte(kind, broadcast=0):
    """kind 0 none, 1 keep, 2 additive; broadcast bit d = mask dim d has size 1."""
    for b in range(256):
        if b % 3 == kind and (b >> 2) & 15 == broadcast:
            return b
    raise ValueError


def run_byte(path, first_threads=1, logsumexp=True):
    """path 0 avx512, 1 avx2, 2 portable (falls back to one the CPU has)."""
    return path * 4 + (0 if logsumexp else 2) + (first_threads - 1)


def header(B=1, Hq=1, Hkv_all=True, Lq=8, Lk=8, D=4, Dv=4, causal=0, mask=0, scale_mode=0,
           dropout=0, run=0, layouts=(0, 0, 0, 0), seed=1, defect=0, detail=0, scale=None):
    h = [B - 1 if B else 255, Hq - 1 if Hq else 255, 1 if Hkv_all else 0, Lq, Lk, D, Dv,
         causal, mask, scale_mode, dropout, run, *layouts, *struct.pack("<I", seed), defect, detail]
    if scale_mode == 4:
        h += list(struct.pack("<f", scale))
    return bytes(h)


def values(count, seed, specials=()):
    rng = random.Random(seed)
    data = [rng.randrange(8, 256) for _ in range(count)]
    for index, code in specials:
        data[index] = code
    return bytes(data)


def write(name, data):
    with open(os.path.join(HERE, name), "wb") as f:
        f.write(data)


def main():
    os.makedirs(HERE, exist_ok=True)
    write("basic", header() + values(96, 1))
    write("tile-edges-65x65-d33", header(Lq=65, Lk=65, D=33, Dv=33) + values(600, 2))
    write("long-80x80-d40-gqa3", header(Hq=3, Hkv_all=False, Lq=80, Lk=80, D=40, Dv=17, run=run_byte(0, 2)) + values(800, 3))
    write("causal-top-left-q3-k6", header(Lq=3, Lk=6, causal=1) + values(60, 4))
    write("causal-bottom-right-q3-k6", header(Lq=3, Lk=6, causal=2) + values(60, 5))
    write("causal-bottom-right-decode-q1-k70", header(Lq=1, Lk=70, D=8, Dv=8, causal=2) + values(400, 6))
    write("gqa-2q-1kv-batch2", header(B=2, Hq=2, Hkv_all=False, Lq=5, Lk=7, D=3, Dv=6) + values(200, 7))
    write("keep-mask-broadcast-batch-head", header(B=2, Hq=3, Lq=6, Lk=9, mask=mask_byte(1, 0b0011)) + values(400, 8))
    write("keep-mask-broadcast-rows", header(Hq=2, Lq=9, Lk=5, mask=mask_byte(1, 0b0100)) + values(200, 9))
    # Additive mask: −∞ cells over keys holding NaN and Inf in k and v.
    kv = 8 * 4
    add = header(Lq=4, Lk=8, mask=mask_byte(2, 0b0111)) + values(16, 10) \
        + values(kv, 11, [(0, NAN), (5, INF)]) + values(kv, 12, [(1, NAN), (6, NINF)]) \
        + bytes([20, 200, 100, 180, 30, 150, 255, 160])  # 20, 30 < 64: −∞ for keys 0 and 4
    write("additive-mask-nonfinite-at-masked-keys", add)
    # A fully masked row: keep mask [1, 1, 2, 4] broadcast over batch and heads, row 1 all 0.
    write("keep-mask-broadcast-keys", header(B=2, Hq=2, Lq=5, Lk=7, mask=mask_byte(1, 0b1000)) + values(300, 30))
    # NaN and Inf in k and v at masked keys, on each micro-kernel path.
    for path, name in ((0, "avx512"), (1, "avx2"), (2, "portable")):
        write(f"masked-nonfinite-{name}", header(Lq=3, Lk=6, D=2, Dv=2, mask=mask_byte(1, 0b0011), run=run_byte(path))
              + values(6, 31) + bytes([NAN, INF, 140, 150, 160, 170, 180, 190, 200, 210, 220, 230])
              + bytes([INF, NINF, 140, 150, 160, 170, 180, 190, 200, 210, NAN, NAN])
              + bytes([0, 255, 255, 255, 255, 0] * 3))
    write("dead-row", header(Lq=2, Lk=4, mask=mask_byte(1, 0b0011)) + values(16 + 16 + 16, 13)
          + bytes([255, 255, 255, 255, 0, 0, 0, 0]))
    write("nan-in-query-row", header(Lq=3, Lk=5) + values(12 + 20 + 20, 14, [(5, NAN)]))
    write("inf-and-huge-values", header(Lq=4, Lk=6, D=3, Dv=3) + values(12 + 18 + 18, 15, [(0, HUGE), (4, NHUGE), (13, INF), (20, NZERO), (30, SUB)]))
    write("float32-overflow", header(Lq=2, Lk=3, D=2, Dv=2) + values(4 + 6 + 6, 16, [(0, 7), (5, 7)]))
    write("dropout-half", header(Lq=7, Lk=70, D=5, Dv=5, dropout=192 + 32, seed=42) + values(800, 17))
    write("dropout-nan-row", header(Lq=3, Lk=12, dropout=192 + 62, seed=7) + values(12 + 48 + 48, 18, [(4, NAN)]))
    write("scale-zero", header(scale_mode=1) + values(96, 19))
    write("scale-negative", header(scale_mode=2) + values(96, 20))
    write("scale-sharp", header(scale_mode=3, Lk=30) + values(300, 21))
    write("scale-explicit-1e-3", header(scale_mode=4, scale=1e-3) + values(96, 22))
    write("zero-key-length", header(Lk=0) + values(40, 23))
    write("zero-head-dim", header(D=0) + values(40, 24))
    write("zero-value-dim", header(Dv=0) + values(40, 25))
    write("zero-batch", header(B=0) + values(8, 26))
    write("layouts-blhd-padded", header(Hq=2, Lq=5, Lk=6, D=3, Dv=5, layouts=(7, 3, 5, 7)) + values(300, 27))
    for path, name in ((0, "avx512"), (1, "avx2"), (2, "portable")):
        write(f"path-{name}", header(Lq=17, Lk=67, D=9, Dv=35, run=run_byte(path)) + values(1200, 28 + path))
    # Found by fuzzing (see Fuzz/README.md): NULL query / mask with no keys.
    write("found-null-query-without-keys", header(Lk=0, D=4, defect=250) + values(40, 1))
    write("found-null-mask-without-keys", header(B=2, Lk=0, Lq=5, D=4, mask=mask_byte(1, 0b1000), defect=253) + values(40, 1))
    # Known deviation (Fuzz/README.md, finding 4): q = 1e-40, scale = 1e-6, k = [-Inf, 1].
    write("known-scaled-query-underflow-meets-infinite-key",
          header(Lq=1, Lk=2, D=1, Dv=1, scale_mode=4, scale=1e-6) + bytes([SUB, NINF, 148, 148, 164]))
    for defect in range(14):
        write(f"invalid-{defect:02d}", header(defect=240 + defect, detail=defect) + values(16, 40 + defect))


if __name__ == "__main__":
    main()
