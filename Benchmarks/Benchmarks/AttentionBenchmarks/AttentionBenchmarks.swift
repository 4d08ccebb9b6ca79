// Benchmarks of the fused attention kernel, the oracle and the multi-head layer,
// for ordo-one/benchmark (`swift package benchmark`, from Benchmarks/).
//
// Inputs are made in each benchmark's `setup`, outside the measured iterations;
// every result goes to `blackHole`. One iteration is one call (scalingFactor
// .one), so `throughput` is calls per second: multiply by the FLOPs in the
// benchmark's name (4·B·H·Lq·Lk·D, halved when causal and square) for FLOP/s.

import Attention
import Benchmark

/// `B,H,Lq,Lk,D[,Hkv]`, as in `attention bench --shape`.
struct Shape: CustomStringConvertible {
    var batch, heads, queryLength, keyLength, headDim: Int
    var kvHeads: Int

    init(_ batch: Int, _ heads: Int, _ queryLength: Int, _ keyLength: Int, _ headDim: Int, kvHeads: Int? = nil) {
        (self.batch, self.heads, self.queryLength, self.keyLength, self.headDim) = (batch, heads, queryLength, keyLength, headDim)
        self.kvHeads = kvHeads ?? heads
    }

    var description: String {
        "\(batch),\(heads),\(queryLength),\(keyLength),\(headDim)" + (kvHeads != heads ? ",\(kvHeads)" : "")
    }

    /// 4·B·H·Lq·Lk·D, halved when causal with Lq = Lk (FlashAttention's convention).
    func flops(causal: Bool) -> Double {
        4 * Double(batch * heads * queryLength * keyLength * headDim) * (causal && queryLength == keyLength ? 0.5 : 1)
    }

    /// Top-left when square (PyTorch's is_causal), bottom-right otherwise (a key/value cache).
    var causalMask: AttentionMask { queryLength == keyLength ? .causal(.topLeft) : .causal(.bottomRight) }

    /// Queries, keys and values from fixed seeds.
    func inputs() throws -> (q: Tensor<Float>, k: Tensor<Float>, v: Tensor<Float>) {
        (
            try .randomNormal([batch, heads, queryLength, headDim], seed: 1),
            try .randomNormal([batch, kvHeads, keyLength, headDim], seed: 2),
            try .randomNormal([batch, kvHeads, keyLength, headDim], seed: 3)
        )
    }
}

/// Wall clock and throughput, plus the malloc interposer's counts and the peak
/// resident memory. `maxDuration` and `maxIterations` bound each benchmark (the
/// first bound reached ends it), so the whole suite runs in about a minute.
func configuration(maxIterations: Int, seconds: Int = 2) -> Benchmark.Configuration {
    .init(
        metrics: [.wallClock, .throughput, .mallocCountTotal, .mallocBytesCount, .peakMemoryResident],
        warmupIterations: 2,
        scalingFactor: .one,
        maxDuration: .seconds(seconds),
        maxIterations: maxIterations
    )
}

/// One fused scaled-dot-product-attention benchmark.
func fusedSDPA(_ shape: Shape, causal: Bool, threads: Int, maxIterations: Int = 1_000) {
    let name = "SDPA fused \(shape) \(causal ? "causal" : "full") \(threads)t (\(flopText(shape.flops(causal: causal))))"
    let mask = causal ? shape.causalMask : .none
    Benchmark(name, configuration: configuration(maxIterations: maxIterations)) { benchmark, inputs in
        for _ in benchmark.scaledIterations {
            blackHole(try scaledDotProductAttention(
                queries: inputs.q, keys: inputs.k, values: inputs.v, mask: mask, threads: threads))
        }
    } setup: {
        try shape.inputs()
    }
}

/// "3.22 GFLOP", or "33.55 MFLOP" under 0.1 GFLOP.
func flopText(_ flops: Double) -> String {
    let (value, unit) = flops < 1e8 ? (flops / 1e6, "MFLOP") : (flops / 1e9, "GFLOP")
    let hundredths = Int((value * 100).rounded())
    let fraction = hundredths % 100
    return "\(hundredths / 100).\(fraction < 10 ? "0" : "")\(fraction) \(unit)"
}

/// The multi-head layer and its input.
struct LayerState {
    var layer: MultiHeadAttention
    var input: Tensor<Float>

    init(threads: Int) throws {
        layer = try MultiHeadAttention(dIn: 768, dOut: 768, heads: 12)
        layer.threads = threads
        input = try .randomNormal([1, 256, 768], seed: 4)
    }
}

let benchmarks: @Sendable () -> Void = {
    // The fused kernel: the peer table's square shapes, both masks, 1 and 2 threads.
    for shape in [Shape(1, 12, 512, 512, 64), Shape(1, 12, 1024, 1024, 64)] {
        for causal in [false, true] {
            for threads in [1, 2] { fusedSDPA(shape, causal: causal, threads: threads) }
        }
    }
    // Decode: one query row against a 2048-key cache (bandwidth-bound; causal
    // bottom-right would hide no key, so only the full mask).
    for threads in [1, 2] { fusedSDPA(Shape(1, 32, 1, 2048, 128), causal: false, threads: threads, maxIterations: 5_000) }
    // Grouped-query attention: 32 query heads share 8 key/value heads.
    for causal in [false, true] {
        for threads in [1, 2] { fusedSDPA(Shape(1, 32, 512, 512, 128, kvHeads: 8), causal: causal, threads: threads) }
    }

    // The float64 oracle on a small shape, beside the fused kernel on the same one.
    let small = Shape(1, 2, 64, 64, 32)
    Benchmark("SDPA oracle \(small) full (\(flopText(small.flops(causal: false))))",
              configuration: configuration(maxIterations: 2_000, seconds: 1)) { benchmark, inputs in
        for _ in benchmark.scaledIterations {
            blackHole(try Reference.scaledDotProductAttention(queries: inputs.q, keys: inputs.k, values: inputs.v))
        }
    } setup: {
        try small.inputs()
    }
    fusedSDPA(small, causal: false, threads: 1, maxIterations: 10_000)

    // The layer: GPT-2-small width, projections + fused attention + output projection.
    for threads in [1, 2] {
        Benchmark("MultiHeadAttention 768→768, 12 heads, [1, 256, 768] \(threads)t",
                  configuration: configuration(maxIterations: 1_000)) { benchmark, state in
            for _ in benchmark.scaledIterations {
                blackHole(try state.layer(state.input))
            }
        } setup: {
            try LayerState(threads: threads)
        }
    }
}
