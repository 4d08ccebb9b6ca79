import Attention

/// One benchmark shape, `B,H,Lq,Lk,D[,Hkv]` as in `torch_sdpa_bench.py`.
struct BenchmarkShape: Hashable, CustomStringConvertible {
    var batch, heads, queryLength, keyLength, headDim, kvHeads: Int

    /// The default grid: the shapes of the peer table in issue 3 (PyTorch 2.15
    /// CPU flash attention), including one decode shape.
    static let defaultGrid: [BenchmarkShape] = [
        "1,12,128,128,64", "1,12,512,512,64", "1,12,1024,1024,64", "1,12,2048,2048,64",
        "4,12,512,512,64", "1,8,4096,4096,64", "1,32,256,256,128", "1,32,1,2048,128",
    ].map { BenchmarkShape(parsing: $0)! }

    /// The decode shapes of issue 9 (`--kv-storage` without `--shape`): DRAM-
    /// and L3-sized caches, multi-query and grouped-query.
    static let decodeGrid: [BenchmarkShape] = [
        "1,32,1,16384,128", "1,32,1,2048,128", "1,16,1,4096,64,4", "1,32,1,8192,128,1", "1,1,32,8192,128",
    ].map { BenchmarkShape(parsing: $0)! }

    /// Non-negative sizes (a zero-length case is measured like any other);
    /// `Hkv` divides `H` (both 0 is allowed).
    init?(parsing text: String) {
        let numbers = text.split(separator: ",", omittingEmptySubsequences: false).map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard numbers.count == 5 || numbers.count == 6, numbers.allSatisfy({ ($0 ?? -1) >= 0 }) else { return nil }
        let n = numbers.map { $0! }
        (batch, heads, queryLength, keyLength, headDim) = (n[0], n[1], n[2], n[3], n[4])
        kvHeads = n.count == 6 ? n[5] : n[1]
        guard kvHeads > 0 ? heads % kvHeads == 0 : heads == 0 else { return nil }
    }

    var description: String {
        "\(batch),\(heads),\(queryLength),\(keyLength),\(headDim)" + (kvHeads != heads ? ",\(kvHeads)" : "")
    }

    /// Few query rows against many keys: bandwidth-bound, reported in GB/s.
    var isDecode: Bool { queryLength <= 4 && keyLength >= 256 }

    /// FlashAttention's convention: 4·B·H·Lq·Lk·D, halved when causal with Lq = Lk.
    func flops(causal: Bool) -> Double {
        4 * Double(batch * heads) * Double(queryLength) * Double(keyLength) * Double(headDim)
            * (causal && queryLength == keyLength ? 0.5 : 1)
    }

    /// Bytes that must cross memory at least once: q, k, v, out.
    var bytes: Double {
        4 * Double(batch) * (Double(heads * queryLength * headDim * 2) + Double(kvHeads * keyLength * headDim * 2))
    }

    /// The causal mask the benchmark uses: top-left when square (PyTorch's
    /// is_causal), bottom-right (a key/value cache) otherwise.
    var causalMask: AttentionMask { queryLength == keyLength ? .causal(.topLeft) : .causal(.bottomRight) }
}

/// One measured row, in the JSON schema of `shared/tools/torch_sdpa_bench.py`.
///
/// Every figure is finite or absent: a measurement that failed (`error` says
/// why), a zero time, or a peak that could not be measured leaves the figures
/// that depend on it `nil`, encoded as JSON `null` (never a NaN, which
/// `JSONEncoder` refuses, and never a missing key).
struct BenchmarkResult: Encodable {
    let batch, heads, kvHeads, queryLength, keyLength, headDim: Int
    let causal: Bool
    let threads: Int
    let path: String
    let medianSeconds: Double?
    let gflops: Double?
    let repetitions: Int
    /// Extra fields beyond the peer's schema: the fastest run, bandwidth, the
    /// fraction of the FMA peak measured in the same run, the micro-kernel path,
    /// and why the case has no figures (nil when it was measured).
    let minSeconds: Double?
    let gbps: Double?
    let peakFraction: Double?
    let kernelPath: String
    /// The threading driver (`openmp`, `dispatch`) and what idle OpenMP threads did (`spin`, `sleep`, `runtime`).
    let driver: String
    let idleWait: String
    let error: String?

    /// `value` when it is a finite number, else nil.
    static func finite(_ value: Double?) -> Double? {
        guard let value, value.isFinite else { return nil }
        return value
    }

    /// A row from a measurement's times (nil: it failed, `error` says why); the
    /// derived figures are kept only where finite.
    init(shape: BenchmarkShape, causal: Bool, threads: Int, path: String, median: Double?, fastest: Double?,
         repetitions: Int, peakGFLOPS: Double?, kernelPath: String, error: String?, driver: String, idleWait: String,
         flopFactor: Double = 1) {
        (batch, heads, kvHeads, queryLength, keyLength, headDim) =
            (shape.batch, shape.heads, shape.kvHeads, shape.queryLength, shape.keyLength, shape.headDim)
        self.causal = causal
        self.threads = threads
        self.path = path
        let median = Self.finite(median).flatMap { $0 > 0 ? $0 : nil }
        medianSeconds = Self.finite(median)
        minSeconds = Self.finite(fastest)
        let gflops = median.flatMap { Self.finite(shape.flops(causal: causal) * flopFactor / $0 / 1e9) }
        self.gflops = gflops
        gbps = median.flatMap { Self.finite(shape.bytes / $0 / 1e9) }
        let peak = Self.finite(peakGFLOPS).flatMap { $0 > 0 ? $0 : nil }
        peakFraction = gflops.flatMap { g in peak.flatMap { Self.finite(g / $0) } }
        self.repetitions = repetitions
        self.kernelPath = kernelPath
        self.error = error
        self.driver = driver
        self.idleWait = idleWait
    }

    private enum CodingKeys: String, CodingKey {
        case batch, heads, kvHeads, queryLength, keyLength, headDim, causal, threads, path, medianSeconds, gflops
        case repetitions, minSeconds, gbps, peakFraction, kernelPath, error, driver, idleWait
    }

    /// Every key is present; an absent figure is `null`.
    func encode(to encoder: Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(batch, forKey: .batch)
        try container.encode(heads, forKey: .heads)
        try container.encode(kvHeads, forKey: .kvHeads)
        try container.encode(queryLength, forKey: .queryLength)
        try container.encode(keyLength, forKey: .keyLength)
        try container.encode(headDim, forKey: .headDim)
        try container.encode(causal, forKey: .causal)
        try container.encode(threads, forKey: .threads)
        try container.encode(path, forKey: .path)
        try container.encode(Self.finite(medianSeconds), forKey: .medianSeconds)
        try container.encode(Self.finite(gflops), forKey: .gflops)
        try container.encode(repetitions, forKey: .repetitions)
        try container.encode(Self.finite(minSeconds), forKey: .minSeconds)
        try container.encode(Self.finite(gbps), forKey: .gbps)
        try container.encode(Self.finite(peakFraction), forKey: .peakFraction)
        try container.encode(kernelPath, forKey: .kernelPath)
        try container.encode(error, forKey: .error)
        try container.encode(driver, forKey: .driver)
        try container.encode(idleWait, forKey: .idleWait)
    }
}
