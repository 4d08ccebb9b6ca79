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

    init?(parsing text: String) {
        let numbers = text.split(separator: ",").map { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard numbers.count == 5 || numbers.count == 6, numbers.allSatisfy({ ($0 ?? 0) > 0 }) else { return nil }
        let n = numbers.map { $0! }
        (batch, heads, queryLength, keyLength, headDim) = (n[0], n[1], n[2], n[3], n[4])
        kvHeads = n.count == 6 ? n[5] : n[1]
        guard heads % kvHeads == 0 else { return nil }
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
struct BenchmarkResult: Encodable {
    let batch, heads, kvHeads, queryLength, keyLength, headDim: Int
    let causal: Bool
    let threads: Int
    let path: String
    let medianSeconds: Double
    let gflops: Double
    let repetitions: Int
    /// Extra fields beyond the peer's schema: the fastest run, bandwidth, the
    /// fraction of the FMA peak measured in the same run, the micro-kernel path.
    let minSeconds: Double
    let gbps: Double
    let peakFraction: Double
    let kernelPath: String
}
