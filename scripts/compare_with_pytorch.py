#!/usr/bin/env python3
"""Run `attention bench` and PyTorch's timing script back to back on the same
shapes and print a Markdown table of GFLOP/s with the ratio fused / PyTorch.

Needs a release build (`swift build -c release`) and PyTorch in a virtual
environment (see the docstring of torch_sdpa_bench.py, about a minute):

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
    scripts/compare_with_pytorch.py --torch-python /tmp/torch-venv/bin/python \
        --torch-script scripts/torch_sdpa_bench.py --threads 1

Each shape is timed by both tools within seconds of each other, ours first,
so that a noisy neighbour affects both alike; with --rounds N each tool times
each case N times, alternating, and keeps its best median. FLOPs are 4·B·H·Lq·Lk·D, halved
when causal with Lq = Lk (both tools).
"""
import argparse, json, math, subprocess, sys

GRID = ["1,12,128,128,64", "1,12,512,512,64", "1,12,1024,1024,64", "1,12,2048,2048,64",
        "4,12,512,512,64", "1,8,4096,4096,64", "1,32,256,256,128", "1,32,1,2048,128"]


def run_json(command):
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attention", default=".build/release/attention")
    ap.add_argument("--torch-python", required=True)
    ap.add_argument("--torch-script", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", action="append", help="B,H,Lq,Lk,D[,Hkv]; default: the peer grid")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time each case this many times, alternating the tools, and keep each tool's "
                         "best median: on a shared machine a neighbour's burst then hits neither tool alone")
    a = ap.parse_args()
    rows, ratios = [], []
    for shape in a.shape or GRID:
        decode = int(shape.split(",")[2]) <= 4
        for causal in ([False] if decode else [False, True]):
            flag = ["--causal"] if causal else ["--non-causal"]
            ours_runs, theirs_runs = [], []
            for _ in range(a.rounds):
                ours_runs += run_json([a.attention, "bench", "--shape", shape, *flag, "--threads", str(a.threads),
                                       "--path", "fused", "--format", "json"])
                theirs_runs += run_json([a.torch_python, a.torch_script, "--shape", shape,
                                         *(["--causal"] if causal else []), "--threads", str(a.threads)])
            ours = min(ours_runs, key=lambda r: r["medianSeconds"])
            theirs = min(theirs_runs, key=lambda r: r["medianSeconds"])
            ratio = ours["gflops"] / theirs["gflops"]
            ratios.append(ratio)
            unit = f'{ours["gbps"]:.1f} GB/s' if decode else f'{100 * ours["peakFraction"]:.0f}%'
            rows.append(f'| {shape} | {"yes" if causal else "no"} | {ours["gflops"]:.1f} | '
                        f'{theirs["gflops"]:.1f} | {ratio:.2f}× | {unit} | '
                        f'{ours["medianSeconds"] * 1e3:.2f} / {theirs["medianSeconds"] * 1e3:.2f} |')
            print(rows[-1], file=sys.stderr)
    print(f"| shape B,H,Lq,Lk,D | causal | fused GFLOP/s | PyTorch GFLOP/s | fused / PyTorch | % FMA peak (decode: GB/s) | median ms (fused / PyTorch) |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    geomean = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    print(f"\nGeometric mean of fused / PyTorch: {geomean:.2f}× over {len(ratios)} cases, {a.threads} thread(s).")


if __name__ == "__main__":
    main()
