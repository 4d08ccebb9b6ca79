#!/usr/bin/env bash
# Fuzz/run.sh: build a libFuzzer harness and run it for a while.
#
#   Fuzz/run.sh build  sdpa|safetensors          build only
#   Fuzz/run.sh run    sdpa|safetensors SECONDS [libFuzzer options…]
#   Fuzz/run.sh replay sdpa|safetensors FILE…     run the harness once on each file
#
# Builds go to Fuzz/.build/ (gitignored). A run reads the checked-in seeds in
# Fuzz/<name>/corpus/ (never writes there), keeps what it finds in
# Fuzz/.build/<name>/corpus/, and writes a failing input to
# Fuzz/.build/<name>/artifacts/; it exits non-zero if the harness failed.
# Compilers: the Swift toolchain's clang and swiftc (both ship libFuzzer);
# CLANG and SWIFTC override them. The kernel needs libomp-dev.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() { sed -n '3,6p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
command=$1 name=$2
shift 2

swift_bin=$(dirname "$(readlink -f "$(command -v swiftc || command -v swift)")")
CLANG=${CLANG:-$swift_bin/clang}
SWIFTC=${SWIFTC:-$swift_bin/swiftc}
build=Fuzz/.build
binary=$build/fuzz-$name

# libomp.so for the link: Debian's libomp-dev puts it under /usr/lib/llvm-<N>/lib.
omp_dir() {
    local lib
    lib=$(ls /usr/lib/llvm-*/lib/libomp.so 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$lib" ] || { echo "Fuzz/run.sh: libomp.so not found (apt-get install libomp-dev)" >&2; exit 1; }
    dirname "$lib"
}

build_sdpa() {
    local omp
    omp=$(omp_dir)
    # The kernel sources as the package compiles them (-fopenmp, no fast-math),
    # plus coverage, AddressSanitizer and UndefinedBehaviorSanitizer.
    "$CLANG" -g -O1 -std=gnu11 \
        -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -fopenmp -fuse-ld=lld -ICKernels/include -ICKernels \
        Fuzz/sdpa/fuzz_sdpa.c CKernels/*.c CKernels/microkernels/*.c \
        -L"$omp" -Wl,-rpath,"$omp" -lm -o "$binary"
}

build_safetensors() {
    # The parser's sources only (Foundation, no C kernel), with the harness's
    # LLVMFuzzerTestOneInput. -parse-as-library: the harness has no top-level code.
    "$SWIFTC" -g -Onone -parse-as-library -sanitize=fuzzer,address -use-ld=lld \
        -module-name AttentionFuzzSafetensors -package-name AttentionFuzz \
        Fuzz/safetensors/FuzzSafetensors.swift \
        Sources/Attention/IO/*.swift Sources/Attention/Tensor.swift Sources/Attention/AttentionError.swift \
        Sources/Attention/MemoryBudget.swift Sources/Attention/SplitMix64.swift \
        -o "$binary"
}

build_one() {
    mkdir -p "$build"
    case $name in
    sdpa) build_sdpa ;;
    safetensors) build_safetensors ;;
    *) usage ;;
    esac
}

case $command in
build)
    build_one
    ;;
run)
    [ $# -ge 1 ] || usage
    seconds=$1
    shift
    build_one
    mkdir -p "$build/$name/corpus" "$build/$name/artifacts"
    case $name in
    # The kernel's inputs are positional (a header, then tensor elements): mutate
    # at full length from the start (-len_control=0); 4 KiB describe the largest problems.
    sdpa) options=(-len_control=0 -max_len=4096) ;;
    # Room for the largest seed (a 43 KiB golden fixture), which a smaller
    # -max_len would truncate into an invalid file; a dictionary of header tokens.
    safetensors) options=(-max_len=65536 -dict=Fuzz/safetensors/safetensors.dict) ;;
    esac
    log=$build/$name/last-run.log
    echo "Fuzz/run.sh: $name for $seconds s (log: $log)"
    status=0
    "$binary" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -print_final_stats=1 \
        -artifact_prefix="$build/$name/artifacts/" "${options[@]}" "$@" \
        "$build/$name/corpus" "Fuzz/$name/corpus" > "$log" 2>&1 || status=$?
    if [ $status -ne 0 ]; then
        tail -n 120 "$log"
        echo "Fuzz/run.sh: $name FAILED (status $status); the input is in $build/$name/artifacts/" >&2
        exit $status
    fi
    grep -E '^INFO: seed corpus|^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)' "$log" || true
    ;;
replay)
    [ $# -ge 1 ] || usage
    build_one
    "$binary" "$@"
    ;;
*)
    usage
    ;;
esac
