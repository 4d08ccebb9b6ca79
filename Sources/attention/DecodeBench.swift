import ArgumentParser
import Attention
import CAttention
import Foundation

/// The options of `attention bench --decode`.
struct DecodeBenchOptions: ParsableArguments {
    @Flag(name: .long, help: "Time one decode step of a whole attention block over a KV cache (projections, cache append, attention, output projection) instead of the kernel grid.")
    var decode = false

    @Option(name: .long, help: "With --decode: gpt2 (768 wide, 12 heads) or llama (4096 wide, 32 query heads, 8 kv heads, head dim 128); repeatable. Default: both.")
    var model: [DecodeModel] = []

    @Option(name: .long, help: "With --decode: tokens already cached; repeatable. Default: 512, 1024, …, 32768.")
    var cacheLength: [Int] = []

    @Option(name: .long, help: "With --decode: float32, float16 or bfloat16 cache; repeatable. Default: float32 and float16.")
    var cacheStorage: [KVCacheStorage] = []

    func validate() throws {
        if cacheLength.contains(where: { $0 < 1 }) { throw ValidationError("--cache-length must be at least 1") }
        if !decode, !model.isEmpty || !cacheLength.isEmpty || !cacheStorage.isEmpty {
            throw ValidationError("--model, --cache-length and --cache-storage need --decode")
        }
    }
}

extension KVCacheStorage: ExpressibleByArgument {}

/// The attention block of a decoder layer, in two well-known sizes.
enum DecodeModel: String, ExpressibleByArgument, CaseIterable {
    /// GPT-2 small: 768 wide, 12 heads of 64, biases on every projection.
    case gpt2
    /// Llama-style grouped-query attention (Llama 3 8B): 4096 wide, 32 query
    /// heads and 8 key/value heads of 128, no biases.
    case llama

    var width: Int { self == .gpt2 ? 768 : 4096 }
    var heads: Int { self == .gpt2 ? 12 : 32 }
    var kvHeads: Int { self == .gpt2 ? 12 : 8 }
    var headDim: Int { width / heads }
    var hasBias: Bool { self == .gpt2 }

    func layer(threads: Int) throws -> MultiHeadAttention {
        var layer = try MultiHeadAttention(
            dIn: width, dOut: width, heads: heads, kvHeads: kvHeads, causal: .topLeft,
            qkvBias: hasBias, outputBias: hasBias, seed: 7)
        layer.threads = threads
        return layer
    }

    /// Bytes of weights a step reads: W_q, W_k, W_v, W_o and their biases, float32.
    var weightBytes: Int {
        let kvWidth = kvHeads * headDim
        let weights = width * width * 2 + kvWidth * width * 2
        let biases = hasBias ? width * 2 + kvWidth * 2 : 0
        return 4 * (weights + biases)
    }
}

/// One measured decode step.
struct DecodeBenchResult: Encodable {
    let model: String
    let width, heads, kvHeads, headDim, cacheLength: Int
    let storage: String
    let threads: Int
    let medianSeconds, minSeconds: Double
    let tokensPerSecond: Double
    /// Median seconds of the step's four projections alone (W_q, W_k, W_v, W_o on the one token),
    /// timed in turn with the step: the rest of the step is the cache append and attention.
    let projectionSeconds: Double
    /// Bytes a step must read: the weights and the cached keys and values (after the append).
    let weightBytes, cacheBytes: Int
    /// (weightBytes + cacheBytes) / medianSeconds.
    let gbps: Double
    /// `attn_read_bandwidth_gbps` over the same number of bytes, same threads, same run.
    let roofGbps: Double
    let roofFraction: Double
    let repetitions: Int
    let kernelPath: String
}

/// `attention bench --decode`: tokens per second of one decode step of an
/// attention block against a cache of each length, as GB/s of the bytes the
/// step must read (weights + cache) and a fraction of a read roof measured in
/// the same run over the same number of bytes.
struct DecodeBench {
    var options: DecodeBenchOptions
    var threads: [Int]
    var repetitions: Int?
    var json: Bool

    static let defaultLengths = [512, 1024, 2048, 4096, 8192, 16384, 32768]

    func run() throws {
        let models = options.model.isEmpty ? DecodeModel.allCases : options.model
        let lengths = options.cacheLength.isEmpty ? Self.defaultLengths : options.cacheLength
        let storages = options.cacheStorage.isEmpty ? [KVCacheStorage.float32, .float16] : options.cacheStorage
        let threadCounts = threads.isEmpty ? Array(1...max(1, Int(attn_default_threads()))) : threads
        let kernelPath = String(cString: attn_kernel_path())
        let progress = ProgressLine(total: models.count * lengths.count * storages.count * threadCounts.count)
        var results: [DecodeBenchResult] = []
        var index = 0
        for model in models {
            let layers = try Dictionary(uniqueKeysWithValues: threadCounts.map { ($0, try model.layer(threads: $0)) })
            let token = try Tensor<Float>.randomNormal([1, 1, model.width], seed: 3)
            for length in lengths {
                for storage in storages {
                    let cache = try KVCache(
                        batch: 1, kvHeads: model.kvHeads, headDim: model.headDim, capacity: length + 1, storage: storage)
                    try fill(cache, length: length)
                    for count in threadCounts {
                        progress.show(index, "\(model.rawValue) \(length) \(storage.rawValue) \(count)t")
                        index += 1
                        let layer = layers[count]!
                        let merged = try Tensor<Float>.zeros([1, 1, model.heads * model.headDim])
                        // The step and its projections alone, timed in turn (so that both
                        // see the same load on a shared machine).
                        let ((median, fastest, runs), (projections, _, _)) = try measure({
                            _ = try layer(token, cache: cache)
                            try cache.truncate(toLength: length)  // the next step sees the same length
                        }, and: {
                            for projection in [layer.query, layer.key, layer.value] { _ = try projection(token, threads: count) }
                            _ = try layer.outputProjection?(merged, threads: count)
                        })
                        let cacheBytes = (length + 1) * model.kvHeads * model.headDim * 2 * storage.bytesPerElement
                        let bytes = model.weightBytes + cacheBytes
                        let roof = attn_read_bandwidth_gbps(Int32(count), Int64(bytes), 0.3)
                        let gbps = Double(bytes) / median / 1e9
                        let result = DecodeBenchResult(
                            model: model.rawValue, width: model.width, heads: model.heads, kvHeads: model.kvHeads,
                            headDim: model.headDim, cacheLength: length, storage: storage.rawValue, threads: count,
                            medianSeconds: median, minSeconds: fastest, tokensPerSecond: 1 / median, projectionSeconds: projections,
                            weightBytes: model.weightBytes, cacheBytes: cacheBytes, gbps: gbps, roofGbps: roof,
                            roofFraction: roof > 0 ? gbps / roof : .nan, repetitions: runs, kernelPath: kernelPath)
                        if json { try BenchTiming.printJSON(result) }
                        results.append(result)
                    }
                }
            }
        }
        progress.finish()
        if !json { printTable(results, kernelPath: kernelPath) }
    }

    /// Fills `length` tokens of every head with numbers in [−1, 1) (a cheap
    /// seeded generator: the values do not change the time).
    private func fill(_ cache: KVCache, length: Int) throws {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let count = cache.kvHeads * length * cache.headDim
        let scalars = (0..<count).map { _ -> Float in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Float(Int32(truncatingIfNeeded: state >> 32)) * 0x1p-31
        }
        let keys = try Tensor(shape: [1, cache.kvHeads, length, cache.headDim], scalars: scalars)
        try cache.append(keys: keys, values: keys)
    }

    /// Median and fastest seconds of `step` and of `other`, run in turn, after
    /// two warm-up runs each: until 10 runs and 0.5 s (or `repetitions` runs).
    private func measure(
        _ step: () throws -> Void, and other: () throws -> Void
    ) throws -> ((Double, Double, Int), (Double, Double, Int)) {
        for _ in 0..<2 { try step(); try other() }
        var times: [Double] = [], otherTimes: [Double] = []
        let clock = ContinuousClock()
        try BenchTiming.repeatRuns(repetitions: repetitions, minimumRuns: 10, minimumTime: .milliseconds(500)) {
            times.append(BenchTiming.seconds(try clock.measure(step)))
            otherTimes.append(BenchTiming.seconds(try clock.measure(other)))
        }
        return (BenchTiming.summary(times), BenchTiming.summary(otherTimes))
    }

    private func printTable(_ results: [DecodeBenchResult], kernelPath: String) {
        print("kernel path \(kernelPath); one decode step of the attention block (batch 1); proj = its 4 projections alone; bytes = weights (F32) + cached K+V; roof = attn_read_bandwidth_gbps over the same bytes")
        let header = ["model", "cache", "storage", "thr", "median ms", "proj ms", "tokens/s", "MB/step", "GB/s", "roof GB/s", "% roof", "× 1 thread", "× float32"]
        var rows: [[String]] = []
        for r in results {
            let single = results.first { $0.model == r.model && $0.cacheLength == r.cacheLength && $0.storage == r.storage && $0.threads == 1 }
            let float32 = results.first { $0.model == r.model && $0.cacheLength == r.cacheLength && $0.storage == "float32" && $0.threads == r.threads }
            rows.append([
                r.model, "\(r.cacheLength)", r.storage, "\(r.threads)", fixed(r.medianSeconds * 1e3, 3),
                fixed(r.projectionSeconds * 1e3, 3), fixed(r.tokensPerSecond, 0),
                fixed(Double(r.weightBytes + r.cacheBytes) / 1e6, 1), fixed(r.gbps, 1), fixed(r.roofGbps, 1), fixed(100 * r.roofFraction, 0),
                single.map { fixed($0.medianSeconds / r.medianSeconds, 2) } ?? "",
                float32.map { fixed($0.medianSeconds / r.medianSeconds, 2) } ?? "",
            ])
        }
        BenchTiming.printColumns(header: header, rows: rows)
    }

    private func fixed(_ value: Double, _ decimals: Int) -> String { BenchTiming.fixed(value, decimals) }
}
