import ArgumentParser
import CAttention
import Foundation

/// The element type of keys and values for `attention bench --kv-storage`.
enum KVStorageChoice: String, ExpressibleByArgument, CaseIterable {
    case float32, float16, bfloat16

    var kernelValue: attn_storage {
        switch self {
        case .float32: return ATTN_STORAGE_F32
        case .float16: return ATTN_STORAGE_F16
        case .bfloat16: return ATTN_STORAGE_BF16
        }
    }

    var bytesPerElement: Int { self == .float32 ? 4 : 2 }

    /// The nearest 16-bit element (round to nearest, ties to even).
    func narrow(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if self != .float16 { return UInt16((bits &+ 0x7FFF &+ ((bits >> 16) & 1)) >> 16) }
        let sign = UInt16((bits >> 16) & 0x8000)
        let magnitude = abs(value)
        if magnitude >= 65520 { return sign | 0x7C00 }
        if magnitude < 0x1p-14 { return sign | UInt16((magnitude * 0x1p24).rounded(.toNearestOrEven)) }
        var result = UInt32(Int((bits >> 23) & 0xFF) - 112) << 10 | (bits & 0x7F_FFFF) >> 13
        let rest = bits & 0x1FFF
        if rest > 0x1000 || (rest == 0x1000 && result & 1 == 1) { result += 1 }
        return sign | UInt16(result)
    }
}

/// The key layout for `attention bench --kv-storage … --key-layout …`.
enum KeyLayoutChoice: String, ExpressibleByArgument, CaseIterable {
    /// `[batch, kvHeads, keyLength, headDim]` rows.
    case rows
    /// Panels of 16 keys × headDim (ATTN_KEY_LAYOUT_PANELS).
    case panels
    /// Panels of 64 keys × headDim (ATTN_KEY_LAYOUT_PANELS64), what `KVCache` stores.
    case panels64

    /// Keys per panel (nil for rows).
    var panelWidth: Int? {
        switch self {
        case .rows: return nil
        case .panels: return 16
        case .panels64: return 64
        }
    }
}

/// `attention bench --kv-storage …`: the kernel called directly (C driver) on
/// keys and values stored as float32, float16 or bfloat16, each case against
/// a read-bandwidth roof measured in the same run over the same number of
/// bytes (so from the same level of the memory hierarchy), just before and
/// just after the case: the better of the two is its roof, so that a busy
/// stretch of a shared machine moves the case and its roof together.
struct KVStorageBenchmark {
    var shapes: [BenchmarkShape]
    var storages: [KVStorageChoice]
    var layouts: [KeyLayoutChoice] = [.rows]
    var threadCounts: [Int]
    var repetitions: Int?
    var json: Bool

    struct Row: Encodable {
        let batch, heads, kvHeads, queryLength, keyLength, headDim: Int
        let storage: String
        let keyLayout: String
        let threads: Int
        let medianSeconds, minSeconds: Double
        /// Unique key and value bytes in their storage type, read once per call.
        let keyValueBytes: Double
        let gbps: Double
        /// attn_read_bandwidth_gbps over the same bytes with the same threads
        /// (its best pass), the better of a reading just before and just after the case.
        let roofGbps: Double
        /// gbps / roofGbps: the median call against the roof.
        let roofFraction: Double
        /// The fastest call's GB/s against the roof (best against best, as the
        /// roof is its best pass): the steadier figure on a shared machine.
        let bestRoofFraction: Double
        let kernelPath: String
        let stackedHeads: Int
    }

    func run() throws {
        var rows: [Row] = []
        let kernelPath = String(cString: attn_kernel_path())
        for shape in shapes {
            let data = CaseData(shape: shape)
            for storage in storages {
              for layout in layouts {
                let stored = try data.stored(storage, panelWidth: layout.panelWidth)
                for threads in threadCounts {
                    let bytes = Double(shape.batch * shape.kvHeads * shape.keyLength * shape.headDim * 2 * storage.bytesPerElement)
                    let roofBytes = Int64(max(bytes, 65536))
                    let roofBefore = attn_read_bandwidth_gbps(Int32(threads), roofBytes, 0.15)
                    let (median, fastest, stacked) = try time(data, stored, storage, layout, threads)
                    let roofAfter = attn_read_bandwidth_gbps(Int32(threads), roofBytes, 0.15)
                    let best = max(roofBefore, roofAfter)
                    let roof = best > 0 ? best : .nan
                    let row = Row(
                        batch: shape.batch, heads: shape.heads, kvHeads: shape.kvHeads, queryLength: shape.queryLength,
                        keyLength: shape.keyLength, headDim: shape.headDim, storage: storage.rawValue,
                        keyLayout: layout.rawValue, threads: threads,
                        medianSeconds: median, minSeconds: fastest, keyValueBytes: bytes, gbps: bytes / median / 1e9,
                        roofGbps: roof, roofFraction: bytes / median / 1e9 / roof,
                        bestRoofFraction: bytes / fastest / 1e9 / roof, kernelPath: kernelPath,
                        stackedHeads: stacked)
                    rows.append(row)
                    if json {
                        let encoder = JSONEncoder()
                        encoder.outputFormatting = [.sortedKeys]
                        print(String(decoding: try encoder.encode(row), as: UTF8.self))
                        fflush(nil)
                    }
                }
              }
            }
        }
        if !json { printTable(rows, kernelPath: kernelPath) }
    }

    /// Queries, keys and values of one shape, float32, uniform in [-1.7, 1.7)
    /// (variance 0.96) from SplitMix64 seeded 1, 2, 3: a run reproduces, and
    /// filling takes a few nanoseconds a number (the system generator made a
    /// `getrandom` system call per number, most of a run's time).
    struct CaseData {
        let shape: BenchmarkShape
        let query: [Float], key: [Float], value: [Float]
        init(shape: BenchmarkShape) {
            self.shape = shape
            func uniform(_ count: Int, seed: UInt64) -> [Float] {
                var generator = SplitMix64(seed: seed)
                return generator.uniform(count: count, bound: 1.7)
            }
            query = uniform(shape.batch * shape.heads * shape.queryLength * shape.headDim, seed: 1)
            key = uniform(shape.batch * shape.kvHeads * shape.keyLength * shape.headDim, seed: 2)
            value = uniform(shape.batch * shape.kvHeads * shape.keyLength * shape.headDim, seed: 3)
        }

        /// Keys and values as raw bytes of the storage type, keys in rows or
        /// (panelWidth not nil) in panels of that many keys.
        func stored(_ storage: KVStorageChoice, panelWidth: Int?) throws -> (key: CacheBytes, value: CacheBytes) {
            func bytes(_ values: [Float]) throws -> CacheBytes {
                if storage == .float32 { return try values.withUnsafeBytes { try CacheBytes($0) } }
                return try values.map(storage.narrow).withUnsafeBytes { try CacheBytes($0) }
            }
            guard let w = panelWidth else { return (try bytes(key), try bytes(value)) }
            // [heads, length, dim] → [heads, length/w, dim, w] (length padded to w).
            let (heads, length, dim) = (shape.batch * shape.kvHeads, shape.keyLength, shape.headDim)
            let panelCount = (length + w - 1) / w
            var paneled = [Float](repeating: 0, count: heads * panelCount * w * dim)
            for h in 0..<heads { for j in 0..<length { for d in 0..<dim {
                paneled[(h * panelCount + j / w) * w * dim + d * w + j % w] = key[(h * length + j) * dim + d]
            } } }
            return (try bytes(paneled), try bytes(value))
        }
    }

    /// Median and fastest seconds of attn_sdpa_forward after two warm-up calls.
    func time(_ data: CaseData, _ stored: (key: CacheBytes, value: CacheBytes), _ storage: KVStorageChoice,
              _ layout: KeyLayoutChoice, _ threads: Int) throws -> (Double, Double, Int) {
        let s = data.shape
        var output = [Float](repeating: 0, count: s.batch * s.heads * s.queryLength * s.headDim)
        var params = attn_params()
        params.batch = Int64(s.batch)
        params.query_heads = Int64(s.heads)
        params.kv_heads = Int64(s.kvHeads)
        params.query_length = Int64(s.queryLength)
        params.key_length = Int64(s.keyLength)
        params.head_dim = Int64(s.headDim)
        params.value_dim = Int64(s.headDim)
        params.query_strides = (Int64(s.heads * s.queryLength * s.headDim), Int64(s.queryLength * s.headDim), Int64(s.headDim), 1)
        params.key_strides = (Int64(s.kvHeads * s.keyLength * s.headDim), Int64(s.keyLength * s.headDim), Int64(s.headDim), 1)
        params.value_strides = params.key_strides
        params.output_strides = params.query_strides
        params.scale = 1 / Float(s.headDim).squareRoot()
        params.num_threads = Int32(threads)
        params.kv_storage = storage.kernelValue
        if let width = layout.panelWidth {
            let w = Int64(width), panelCount = Int64((s.keyLength + width - 1) / width), dim = Int64(s.headDim)
            params.key_layout = width == 64 ? ATTN_KEY_LAYOUT_PANELS64 : ATTN_KEY_LAYOUT_PANELS
            params.key_strides = (Int64(s.kvHeads) * panelCount * w * dim, panelCount * w * dim, w * dim, 1)
        }
        var times: [Double] = []
        var stacked = 1
        let status: attn_status = data.query.withUnsafeBufferPointer { q in
            withExtendedLifetime(stored) {
                output.withUnsafeMutableBufferPointer { out in
                    params.query = q.baseAddress
                    params.key = UnsafePointer(OpaquePointer(stored.key.pointer))
                    params.value = UnsafePointer(OpaquePointer(stored.value.pointer))
                    params.output = out.baseAddress
                    stacked = Int(attn_sdpa_stacked_heads(&params))
                    for _ in 0..<2 {
                        let status = attn_sdpa_forward(&params)
                        if status != ATTN_OK { return status }
                    }
                    let clock = ContinuousClock()
                    let start = clock.now
                    while true {
                        let elapsed = clock.measure { _ = attn_sdpa_forward(&params) }
                        times.append(Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
                        if let repetitions { if times.count >= repetitions { break } } else if times.count >= 5,
                            clock.now - start > .seconds(1) { break }
                    }
                    return ATTN_OK
                }
            }
        }
        guard status == ATTN_OK else {
            throw ValidationError("kernel failed: \(String(cString: attn_status_description(status)))")
        }
        times.sort()
        let middle = times.count / 2
        let median = times.count % 2 == 1 ? times[middle] : (times[middle - 1] + times[middle]) / 2
        return (median, times[0], stacked)
    }

    func printTable(_ rows: [Row], kernelPath: String) {
        print("kernel path \(kernelPath); GB/s of unique K+V bytes in their storage type; roof: attn_read_bandwidth_gbps over the same bytes, same threads, just before and after each case; best % roof: the fastest call against it")
        let header = ["shape B,H,Lq,Lk,D[,Hkv]", "storage", "keys", "thr", "median ms", "GB/s", "roof GB/s", "% roof", "best % roof", "× f32 rows", "heads/tile"]
        var lines: [[String]] = []
        for r in rows {
            let shape = "\(r.batch),\(r.heads),\(r.queryLength),\(r.keyLength),\(r.headDim)" + (r.kvHeads != r.heads ? ",\(r.kvHeads)" : "")
            let f32 = rows.first {
                $0.storage == "float32" && $0.keyLayout == "rows" && $0.threads == r.threads && ($0.batch, $0.heads, $0.kvHeads, $0.queryLength, $0.keyLength, $0.headDim) == (r.batch, r.heads, r.kvHeads, r.queryLength, r.keyLength, r.headDim)
            }
            lines.append([
                shape, r.storage, r.keyLayout, "\(r.threads)", fixed(r.medianSeconds * 1e3, 3), fixed(r.gbps, 1), fixed(r.roofGbps, 1),
                fixed(100 * r.roofFraction, 0), fixed(100 * r.bestRoofFraction, 0), f32.map { fixed($0.medianSeconds / r.medianSeconds, 2) } ?? "", "\(r.stackedHeads)",
            ])
        }
        let widths = header.indices.map { column in ([header] + lines).map { $0[column].count }.max() ?? 0 }
        for line in [header] + lines {
            print(line.enumerated().map { String(repeating: " ", count: widths[$0] - $1.count) + $1 }.joined(separator: "  "))
        }
    }

    private func fixed(_ value: Double, _ decimals: Int) -> String {
        value.isFinite ? String(format: "%.\(decimals)f", value) : "-"
    }
}

/// Keys or values of a bench case in cache memory (`attn_cache_alloc`: 2 MiB
/// pages where the system grants them), as a ``KVCache`` holds them, so that
/// the kernel streams them as it would a cache's.
final class CacheBytes {
    let pointer: UnsafeMutableRawPointer
    let count: Int

    /// Copies `bytes` into new cache memory.
    init(_ bytes: UnsafeRawBufferPointer) throws {
        count = max(bytes.count, 1)
        guard let memory = attn_cache_alloc(Int64(count)) else {
            throw ValidationError("could not allocate \(count) bytes for keys or values")
        }
        pointer = memory
        if let base = bytes.baseAddress { pointer.copyMemory(from: base, byteCount: bytes.count) }
    }

    deinit { attn_cache_free(pointer, Int64(count)) }
}
