import CAttention
import Dispatch
import Foundation
import XCTest
@testable import Attention
#if canImport(Glibc)
import Glibc
#endif

// Probes from an adversarial review of (1) decode rows reading values in place
// and (2) split-KV, kept as regression tests.
// Every buffer handed to the kernel sits between two PROT_NONE pages, so that a
// load past either end faults; the padding between rows is NaN, so that a read
// of it shows in the result.

// MARK: Guarded buffers and layouts

final class GuardedBuffer {
    let base: UnsafeMutableRawPointer
    let mappedBytes: Int
    let start: UnsafeMutableRawPointer
    init(bytes: Int) {
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let dataPages = max(1, (bytes + page - 1) / page)
        mappedBytes = (dataPages + 2) * page
        let mapped = mmap(nil, mappedBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
        precondition(mapped != MAP_FAILED && mapped != nil)
        base = mapped!
        mprotect(base, page, PROT_NONE)
        mprotect(base + (dataPages + 1) * page, page, PROT_NONE)
        start = base + (dataPages + 1) * page - bytes  // the data ends at the trailing guard page
    }
    deinit { munmap(base, mappedBytes) }
}

struct ProbeLayout {
    var sequenceMajor = false  // [B, L, H, D] in memory
    var rowPad = 0             // elements after each row
    var headPad = 0            // elements after each head (heads-major) or batch (sequence-major)
    var reversed = false       // dimension 2 stored backwards: a negative row stride
    static let packed = ProbeLayout()
    static let slices = ProbeLayout(sequenceMajor: true, rowPad: 3, headPad: 5)
    static let backwards = ProbeLayout(rowPad: 1, headPad: 2, reversed: true)
}

/// A logical [n0, n1, n2, n3] tensor placed with a layout's strides.
final class Placed<T> {
    let buffer: GuardedBuffer?
    let pointer: UnsafeMutablePointer<T>?
    let strides: [Int]
    let shape: [Int]

    init(_ values: [T]?, shape: [Int], layout: ProbeLayout, padding: T) {
        precondition(shape.count == 4)
        self.shape = shape
        let (n0, n1, n2, n3) = (shape[0], shape[1], shape[2], shape[3])
        let width = n3 + layout.rowPad
        var s = [0, 0, 0, 1]
        if layout.sequenceMajor {
            s[2] = n1 * width; s[1] = width; s[0] = n2 * n1 * width + layout.headPad
        } else {
            s[2] = width; s[1] = n2 * width + layout.headPad; s[0] = n1 * s[1]
        }
        let span = shape.contains(0) ? 0 : (n0 - 1) * s[0] + (n1 - 1) * s[1] + (n2 - 1) * s[2] + n3
        if span == 0 {
            buffer = nil
            pointer = nil
        } else {
            let b = GuardedBuffer(bytes: span * MemoryLayout<T>.stride)
            let typed = b.start.bindMemory(to: T.self, capacity: span)
            typed.initialize(repeating: padding, count: span)
            if let values {
                precondition(values.count == n0 * n1 * n2 * n3)
                var index = 0
                for a in 0..<n0 { for h in 0..<n1 { for r in 0..<n2 { for d in 0..<n3 {
                    let row = layout.reversed ? n2 - 1 - r : r
                    typed[a * s[0] + h * s[1] + row * s[2] + d] = values[index]
                    index += 1
                } } } }
            }
            buffer = b
            pointer = layout.reversed ? typed + (n2 - 1) * s[2] : typed
        }
        if layout.reversed { s[2] = -s[2] }
        strides = s
    }

    var tuple: (Int64, Int64, Int64, Int64) { (Int64(strides[0]), Int64(strides[1]), Int64(strides[2]), Int64(strides[3])) }

    func read() -> [T] {
        guard let pointer else { return [] }
        var out: [T] = []
        out.reserveCapacity(shape.reduce(1, *))
        for a in 0..<shape[0] { for h in 0..<shape[1] { for r in 0..<shape[2] { for d in 0..<shape[3] {
            out.append(pointer[a * strides[0] + h * strides[1] + r * strides[2] + d])
        } } } }
        return out
    }
}

enum ProbeDriver: Equatable { case openMP, tasks(Int) }

/// A direct call of the C kernel with any layout, GQA, masks and driver.
struct ProbeCall {
    var batch = 1, queryHeads = 1, kvHeads = 1
    var queryLength: Int, keyLength: Int, headDim: Int, valueDim: Int
    /// Rows allocated per kv head in key/value (≥ keyLength): the call sees a prefix.
    var keyRows: Int? = nil
    var query: [Float], key: [Float], value: [Float]  // logical [B, H, L, D]
    var scale: Float
    var causal = ATTN_CAUSAL_NONE
    var keep: [UInt8]? = nil         // [B, Hq, Lq, Lk]
    var additive: [Float]? = nil     // [B, Hq, Lq, Lk]
    var broadcastMaskRows = false    // mask given as [B, Hq, 1, Lk], row stride 0
    var keyPadding: [UInt8]? = nil   // [B, Lk], 1 = attend
    var dropout: Float = 0
    var seed: UInt64 = 0
    var threads: Int32 = 1
    var driver = ProbeDriver.openMP
    var queryLayout = ProbeLayout.packed, keyLayout = ProbeLayout.packed
    var valueLayout = ProbeLayout.packed, outputLayout = ProbeLayout.packed

    struct Result { var status: attn_status; var output: [Float]; var logsumexp: [Float]; var splits: Bool }

    init(batch: Int = 1, queryHeads: Int = 1, kvHeads: Int = 1, queryLength: Int, keyLength: Int,
         headDim: Int, valueDim: Int, seed: UInt64, scale: Float = 0.3) {
        self.batch = batch; self.queryHeads = queryHeads; self.kvHeads = kvHeads
        self.queryLength = queryLength; self.keyLength = keyLength
        self.headDim = headDim; self.valueDim = valueDim; self.scale = scale
        query = normals(batch * queryHeads * queryLength * headDim, seed: seed)
        key = normals(batch * kvHeads * keyLength * headDim, seed: seed &+ 1)
        value = normals(batch * kvHeads * keyLength * valueDim, seed: seed &+ 2)
    }

    func run() -> Result {
        let rows = keyRows ?? keyLength
        let q = Placed(query, shape: [batch, queryHeads, queryLength, headDim], layout: queryLayout, padding: Float.nan)
        let k = Placed(key, shape: [batch, kvHeads, rows, headDim], layout: keyLayout, padding: Float.nan)
        let v = Placed(value, shape: [batch, kvHeads, rows, valueDim], layout: valueLayout, padding: Float.nan)
        let out = Placed<Float>(nil, shape: [batch, queryHeads, queryLength, valueDim], layout: outputLayout, padding: 12_345)
        let maskRows = broadcastMaskRows ? 1 : queryLength
        let keepBuffer = keep.map { Placed($0, shape: [batch, queryHeads, maskRows, keyLength], layout: .packed, padding: UInt8(0)) }
        let additiveBuffer = additive.map { Placed($0, shape: [batch, queryHeads, maskRows, keyLength], layout: .packed, padding: Float.nan) }
        let padding = keyPadding.map { Placed($0, shape: [1, 1, batch, keyLength], layout: .packed, padding: UInt8(0)) }
        var lse = [Float](repeating: 12_345, count: batch * queryHeads * queryLength)

        var p = attn_params()
        p.batch = Int64(batch); p.query_heads = Int64(queryHeads); p.kv_heads = Int64(kvHeads)
        p.query_length = Int64(queryLength); p.key_length = Int64(keyLength)
        p.head_dim = Int64(headDim); p.value_dim = Int64(valueDim)
        p.query = UnsafePointer(q.pointer); p.query_strides = q.tuple
        p.key = UnsafePointer(k.pointer); p.key_strides = k.tuple
        p.value = UnsafePointer(v.pointer); p.value_strides = v.tuple
        p.output = out.pointer; p.output_strides = out.tuple
        p.logsumexp_strides = (Int64(queryHeads * queryLength), Int64(queryLength), 1)
        p.scale = scale
        p.causal = causal
        p.dropout_p = dropout
        p.dropout_seed = seed
        p.num_threads = threads
        if let keepBuffer {
            p.mask_kind = ATTN_MASK_KEEP
            p.mask = UnsafeRawPointer(keepBuffer.pointer)
            p.mask_strides = keepBuffer.tuple
        } else if let additiveBuffer {
            p.mask_kind = ATTN_MASK_ADDITIVE
            p.mask = UnsafeRawPointer(additiveBuffer.pointer)
            p.mask_strides = additiveBuffer.tuple
        }
        if broadcastMaskRows { p.mask_strides.2 = 0 }
        if let padding {
            p.key_padding_keep = UnsafePointer(padding.pointer)
            p.key_padding_strides = (Int64(keyLength), 1)
        }
        let status: attn_status = lse.withUnsafeMutableBufferPointer { l in
            p.logsumexp = l.isEmpty ? nil : l.baseAddress
            switch driver {
            case .openMP:
                return attn_sdpa_forward(&p)
            case let .tasks(workers):
                // The call's plan driven by Dispatch, as the Swift API does.
                p.num_threads = Int32(workers)
                var plan: OpaquePointer?
                let created = attn_sdpa_plan_create(&p, &plan)
                guard created == ATTN_OK, let plan else { return created }
                defer { attn_plan_destroy(plan) }
                return KernelThreading.drive(plan, driver: .dispatch)
            }
        }
        let splits = attn_sdpa_splits_keys(&p) != 0
        return Result(status: status, output: out.read(), logsumexp: lse, splits: splits)
    }

    /// The double-precision oracle on the same problem (key padding folded into a keep mask).
    func oracle() throws -> (output: [Float], logsumexp: [Float], tolerance: Float) {
        precondition(keyRows == nil || keyRows == keyLength)
        let qt = try Tensor<Float>(shape: [batch, queryHeads, queryLength, headDim], scalars: query)
        let kt = try Tensor<Float>(shape: [batch, kvHeads, keyLength, headDim], scalars: key)
        let vt = try Tensor<Float>(shape: [batch, kvHeads, keyLength, valueDim], scalars: value)
        let maskRows = broadcastMaskRows ? 1 : queryLength
        func expand<T>(_ m: [T]) -> [T] {
            var out: [T] = []
            for b in 0..<batch { for h in 0..<queryHeads { for i in 0..<queryLength { for j in 0..<keyLength {
                out.append(m[((b * queryHeads + h) * maskRows + (broadcastMaskRows ? 0 : i)) * keyLength + j])
            } } } }
            return out
        }
        func padded(_ b: Int, _ j: Int) -> Bool { keyPadding.map { $0[b * keyLength + j] == 0 } ?? false }
        var mask: AttentionMask = .none
        let size = batch * queryHeads * queryLength * keyLength
        if let additive {
            var a = expand(additive)
            for e in 0..<size where padded(e / (queryHeads * queryLength * keyLength), e % keyLength) { a[e] = -.infinity }
            mask = .additive(try Tensor(shape: [batch, queryHeads, queryLength, keyLength], scalars: a))
        } else if keep != nil || keyPadding != nil {
            var m: [UInt8] = keep != nil ? expand(keep!) : [UInt8](repeating: 1, count: size)
            for e in 0..<size where padded(e / (queryHeads * queryLength * keyLength), e % keyLength) { m[e] = 0 }
            mask = .keep(try Tensor(shape: [batch, queryHeads, queryLength, keyLength], scalars: m.map { $0 != 0 }))
        }
        precondition(!(causal != ATTN_CAUSAL_NONE && mask.isExplicit), "oracle: causal with an explicit mask not wired")
        if causal == ATTN_CAUSAL_TOP_LEFT { mask = .causal(.topLeft) }
        if causal == ATTN_CAUSAL_BOTTOM_RIGHT { mask = .causal(.bottomRight) }
        let r = try scaledDotProductAttentionWithLogsumexp(
            queries: qt, keys: kt, values: vt, mask: mask, scale: scale,
            dropoutProbability: dropout, dropoutSeed: seed, backend: .reference)
        let tol = Tolerance.outputBound(queries: qt, keys: kt, values: vt, scale: scale) / max(1 - dropout, 1e-3)
        return (r.output.scalars, r.logsumexp.scalars, tol)
    }
}

extension AttentionMask {
    var isExplicit: Bool {
        switch self { case .keep, .additive: return true; default: return false }
    }
}

/// Rows [from, from + count) of every (batch, head) of a [B, H, L, W] array.
func rowsOf(_ a: [Float], heads: Int, length: Int, width: Int, from: Int, count: Int) -> [Float] {
    var out: [Float] = []
    for h in 0..<heads { out += a[(h * length + from) * width..<(h * length + from + count) * width] }
    return out
}

// MARK: Probes

/// The full grids of the heavier probes run with `ATTENTION_LONG_SWEEP=1`; by
/// default each keeps a slice of its grid, so that the suite stays fast.
let probeLongSweep = ProcessInfo.processInfo.environment["ATTENTION_LONG_SWEEP"] == "1"

final class LayoutAndDecodeProbeTests: XCTestCase {
    let threadCounts: [Int32] = [1, 2, 3, 8]

    /// Split against unsplit, OpenMP against the task driver, over key lengths at
    /// and around the chunk size, GQA, odd head and value dims, every mask kind,
    /// and every kernel path. The baseline is one thread.
    func testSplitAndDriversGiveTheBitsOfOneThread() throws {
        let allShapes: [(lq: Int, lk: Int)] = [(1, 511), (1, 512), (1, 513), (2, 1024), (3, 1025), (4, 1536), (5, 513), (17, 1100), (64, 1537)]
        let shapes = probeLongSweep ? allShapes : [allShapes[2], allShapes[4]]
        let dims: [(d: Int, dv: Int)] = [(1, 1), (17, 17), (40, 200), (72, 300), (0, 24), (64, 128), (8, 256)]
        var splitCount = 0
        try forEachKernelPath { path in
            for (n, shape) in shapes.enumerated() {
                for dimIndex in probeLongSweep ? [n % dims.count, (n + 3) % dims.count] : [(2 * n + 2) % dims.count] {
                    let (d, dv) = dims[dimIndex]
                    let variants: [(String, (inout ProbeCall) -> Void)] = [
                        ("none", { _ in }),
                        ("causal TL", { $0.causal = ATTN_CAUSAL_TOP_LEFT }),
                        ("causal BR", { $0.causal = ATTN_CAUSAL_BOTTOM_RIGHT }),
                        ("keep hides chunk 0 for even rows, all for row 1", { c in
                            c.keep = (0..<(c.batch * c.queryHeads * c.queryLength * c.keyLength)).map { e in
                                let (i, j) = ((e / c.keyLength) % c.queryLength, e % c.keyLength)
                                if i == 1 { return 0 }
                                if i % 2 == 0 { return j < 512 ? 0 : 1 }
                                return j % 5 == 0 ? 0 : 1
                            }
                        }),
                        ("additive -inf on chunk 1, large finite elsewhere", { c in
                            c.additive = (0..<(c.batch * c.queryHeads * c.queryLength * c.keyLength)).map { e in
                                let j = e % c.keyLength
                                if j >= 512 && j < 1024 { return -.infinity }
                                return j % 3 == 0 ? -1e30 : Float(j % 7) - 3
                            }
                        }),
                        ("broadcast keep rows + key padding", { c in
                            c.broadcastMaskRows = true
                            c.keep = (0..<(c.batch * c.queryHeads * c.keyLength)).map { $0 % 11 == 0 ? 0 : 1 }
                            c.keyPadding = (0..<(c.batch * c.keyLength)).map { j in j % c.keyLength >= c.keyLength - 70 ? 0 : 1 }
                        }),
                        ("dropout 0.3", { c in c.dropout = 0.3; c.seed = 1234 }),
                        ("NaN/inf values, one NaN key", { c in
                            if c.valueDim > 0 {
                                c.value[(c.keyLength - 1) * c.valueDim] = .nan
                                c.value[(c.keyLength / 2) * c.valueDim + c.valueDim - 1] = -.infinity
                            }
                            if c.headDim > 0 { c.key[(c.keyLength - 3) * c.headDim] = .nan }
                        }),
                    ]
                    for (name, change) in variants {
                        var call = ProbeCall(batch: 1, queryHeads: 4, kvHeads: 2, queryLength: shape.lq, keyLength: shape.lk,
                                             headDim: d, valueDim: dv, seed: UInt64(n * 31 + dimIndex))
                        change(&call)
                        call.threads = 1
                        let base = call.run()
                        XCTAssertEqual(base.status, ATTN_OK)
                        for threads in threadCounts.dropFirst() {
                            call.threads = threads
                            let r = call.run()
                            if r.splits { splitCount += 1 }
                            let ctx = "\(path) lq \(shape.lq) lk \(shape.lk) d \(d) dv \(dv) \(name) threads \(threads) split \(r.splits)"
                            XCTAssertEqual(r.status, ATTN_OK, ctx)
                            assertBitIdentical(r.output, base.output, "output " + ctx)
                            assertBitIdentical(r.logsumexp, base.logsumexp, "lse " + ctx)
                        }
                        call.driver = .tasks(3)
                        let t = call.run()
                        assertBitIdentical(t.output, base.output, "tasks driver \(path) \(shape) \(d)/\(dv) \(name)")
                        assertBitIdentical(t.logsumexp, base.logsumexp, "tasks driver lse \(path) \(shape) \(d)/\(dv) \(name)")
                    }
                }
            }
        }
        XCTAssertGreaterThan(splitCount, probeLongSweep ? 100 : 50, "the probe should exercise split calls")
    }

    /// Non-packed layouts (sequence-major, padded rows filled with NaN, backwards
    /// rows: a negative row stride) against packed buffers, decode and split.
    func testStridedAndBackwardsLayoutsGiveThePackedBits() throws {
        let cases = [(1, 1300, 40, 24), (3, 700, 17, 200), (64, 1100, 24, 17), (70, 300, 33, 130), (2, 513, 128, 300)]
        for (lq, lk, d, dv) in probeLongSweep ? cases : [cases[0], cases[3]] {
            try forEachKernelPath { path in
                for causal in [ATTN_CAUSAL_NONE, ATTN_CAUSAL_BOTTOM_RIGHT] {
                    var call = ProbeCall(batch: 2, queryHeads: 2, kvHeads: 1, queryLength: lq, keyLength: lk, headDim: d, valueDim: dv, seed: 77)
                    call.causal = causal
                    call.threads = 1
                    let base = call.run()
                    for layout in [ProbeLayout.slices, ProbeLayout.backwards] {
                        for threads: Int32 in [1, 3, 8] {
                            var c = call
                            c.queryLayout = layout; c.keyLayout = layout; c.valueLayout = layout
                            c.outputLayout = ProbeLayout(sequenceMajor: layout.sequenceMajor, rowPad: 2, headPad: 1)
                            c.threads = threads
                            let r = c.run()
                            let ctx = "\(path) \(lq)x\(lk) d \(d) dv \(dv) causal \(causal.rawValue) \(layout) threads \(threads) split \(r.splits)"
                            XCTAssertEqual(r.status, ATTN_OK, ctx)
                            assertBitIdentical(r.output, base.output, ctx)
                            assertBitIdentical(r.logsumexp, base.logsumexp, ctx)
                        }
                    }
                }
            }
        }
    }

    /// Rows computed alone (1 … 5 rows: the in-place decode path) against the same
    /// rows inside a 100-row call, for value tiles that overflow, hold NaN/±∞, or
    /// are tiny, with various head and value dims.
    func testDecodeRowsMatchFullTileRowsForHostileValues() throws {
        let lk = 600
        let allDims: [(Int, Int)] = [(1, 1), (17, 17), (40, 128), (64, 200), (16, 300), (0, 33)]
        let dimsList = probeLongSweep ? allDims : [allDims[1], allDims[2], allDims[5]]
        let kinds = ["normal", "overflow", "poison", "tiny", "mixed overflow"]
        try forEachKernelPath { path in
            for (d, dv) in dimsList {
                for kind in kinds {
                    var full = ProbeCall(queryHeads: 2, kvHeads: 2, queryLength: 100, keyLength: lk, headDim: d, valueDim: dv, seed: 5)
                    switch kind {
                    case "overflow":  // every partial sum of a column overflows past a few keys
                        full.value = full.value.enumerated().map { e, x in e % 3 == 0 ? 3e38 : x * 1e37 }
                    case "poison":
                        for (j, c) in [(3, 0), (200, dv - 1), (599, dv / 2)] where dv > 0 { full.value[j * dv + c] = j == 200 ? .nan : .infinity }
                        for (j, c) in [(3 + lk, 0), (64 + lk, dv / 2)] where dv > 0 { full.value[j * dv + c] = -.infinity }
                    case "tiny":
                        full.value = full.value.map { $0 * 1e-44 }
                    case "mixed overflow":  // +FLT_MAX and −FLT_MAX in one column: ∞ − ∞
                        full.value = full.value.enumerated().map { e, x in e % 2 == 0 ? .greatestFiniteMagnitude : -.greatestFiniteMagnitude }
                    default: break
                    }
                    for threads: Int32 in [1, 2] {
                        full.threads = threads
                        let reference = full.run()
                        for rows in probeLongSweep ? Array(1...5) : [1, 4] {
                            var few = full
                            few.queryLength = rows
                            few.query = rowsOf(full.query, heads: 2, length: 100, width: d, from: 37, count: rows)
                            let r = few.run()
                            let ctx = "\(path) d \(d) dv \(dv) \(kind) rows \(rows) threads \(threads)"
                            assertBitIdentical(r.output, rowsOf(reference.output, heads: 2, length: 100, width: dv, from: 37, count: rows), ctx)
                            assertBitIdentical(r.logsumexp, rowsOf(reference.logsumexp, heads: 2, length: 100, width: 1, from: 37, count: rows), "lse " + ctx)
                        }
                    }
                }
            }
        }
    }

    /// The key/value-cache scenario: prefill (64 rows, bottom-right) against decode
    /// steps (1 row over the keys so far), reading a prefix of the same buffers.
    func testDecodeStepsMatchPrefillRows() throws {
        let cases = [(600, 40, 24), (1100, 64, 128), (1600, 17, 300)]
        for (lk, d, dv) in probeLongSweep ? cases : [cases[1]] {
            var prefill = ProbeCall(queryHeads: 4, kvHeads: 1, queryLength: 64, keyLength: lk, headDim: d, valueDim: dv, seed: 9)
            prefill.causal = ATTN_CAUSAL_BOTTOM_RIGHT
            try forEachKernelPath { path in
                prefill.threads = 1
                let full = prefill.run()
                for row in [0, 1, 5, 6, 31, 62, 63] {
                    for threads: Int32 in [1, 2, 3] {
                        var step = prefill
                        step.queryLength = 1
                        step.keyLength = lk - 63 + row
                        step.keyRows = lk
                        step.query = rowsOf(prefill.query, heads: 4, length: 64, width: d, from: row, count: 1)
                        step.causal = ATTN_CAUSAL_NONE
                        step.threads = threads
                        let r = step.run()
                        let ctx = "\(path) lk \(lk) row \(row) threads \(threads) split \(r.splits)"
                        assertBitIdentical(r.output, rowsOf(full.output, heads: 4, length: 64, width: dv, from: row, count: 1), ctx)
                        assertBitIdentical(r.logsumexp, rowsOf(full.logsumexp, heads: 4, length: 64, width: 1, from: row, count: 1), "lse " + ctx)
                    }
                }
            }
        }
    }

    /// The oracle, within Tolerance, for split/decode/GQA shapes and masks.
    func testSplitAndDecodeAgreeWithTheOracle() throws {
        let cases: [(Int, Int, Int, Int, attn_causal)] = [
            (1, 1300, 40, 24, ATTN_CAUSAL_NONE), (3, 1025, 17, 200, ATTN_CAUSAL_BOTTOM_RIGHT),
            (5, 2085, 64, 17, ATTN_CAUSAL_TOP_LEFT), (64, 1537, 8, 1, ATTN_CAUSAL_BOTTOM_RIGHT),
            (100, 60, 8, 9, ATTN_CAUSAL_BOTTOM_RIGHT),  // Lq > Lk: rows that see nothing
        ]
        try forEachKernelPath { path in
            for (lq, lk, d, dv, causal) in probeLongSweep ? cases : [cases[0], cases[1], cases[4]] {
                var c = ProbeCall(batch: 2, queryHeads: 4, kvHeads: 2, queryLength: lq, keyLength: lk, headDim: d, valueDim: dv, seed: 17)
                c.causal = causal
                c.threads = 3
                let r = c.run()
                let o = try c.oracle()
                let ctx = "\(path) \(lq)x\(lk) d \(d) dv \(dv) causal \(causal.rawValue) split \(r.splits)"
                assertClose(try Tensor(shape: [r.output.count], scalars: r.output), try Tensor(shape: [o.output.count], scalars: o.output), tolerance: o.tolerance, ctx)
                assertClose(try Tensor(shape: [r.logsumexp.count], scalars: r.logsumexp), try Tensor(shape: [o.logsumexp.count], scalars: o.logsumexp), tolerance: 1e-4, "lse " + ctx)
            }
        }
    }

    /// Masks and dropout against the oracle on a split call.
    func testSplitWithMasksAndDropoutAgreesWithTheOracle() throws {
        var c = ProbeCall(queryHeads: 2, kvHeads: 1, queryLength: 4, keyLength: 1500, headDim: 24, valueDim: 40, seed: 3)
        c.keep = (0..<(2 * 4 * 1500)).map { e in
            let (i, j) = ((e / 1500) % 4, e % 1500)
            return i == 0 ? (j >= 1024 ? 1 : 0) : i == 1 ? 0 : (j % 4 == 0 ? 0 : 1)
        }
        c.keyPadding = (0..<1500).map { $0 < 1400 ? 1 : 0 }
        c.dropout = 0.25
        c.seed = 42
        c.threads = 8
        let o = try c.oracle()
        try forEachKernelPath { path in
            let r = c.run()
            XCTAssertTrue(r.splits)
            assertClose(try Tensor(shape: [r.output.count], scalars: r.output), try Tensor(shape: [o.output.count], scalars: o.output), tolerance: o.tolerance, path)
            for e in 0..<r.logsumexp.count { XCTAssertEqual(r.logsumexp[e], o.logsumexp[e], accuracy: 1e-4, "\(path) lse \(e)") }
            XCTAssertEqual(Array(r.output[40..<80]), [Float](repeating: 0, count: 40), "row 1 sees nothing")
            XCTAssertEqual(r.logsumexp[1], -.infinity)
        }
    }

    /// NaN in one query row, and overflowing scores (scale 1e30): that row (or every
    /// row) is NaN, decode or split, and agrees with the oracle; the other rows keep their bits.
    func testNaNQueryRowAndOverflowingScores() throws {
        try forEachKernelPath { path in
            for (lq, lk) in [(1, 1300), (3, 1300), (64, 700)] {
                var c = ProbeCall(queryHeads: 2, kvHeads: 2, queryLength: lq, keyLength: lk, headDim: 16, valueDim: 24, seed: 8)
                c.threads = 3
                let clean = c.run()
                c.query[(lq - 1) * 16 + 5] = .nan  // head 0, last row
                let r = c.run()
                for e in 0..<24 { XCTAssertTrue(r.output[(lq - 1) * 24 + e].isNaN, "\(path) \(lq)x\(lk) NaN row") }
                XCTAssertTrue(r.logsumexp[lq - 1].isNaN)
                var other = r.output; other.removeSubrange((lq - 1) * 24..<lq * 24)
                var cleanOther = clean.output; cleanOther.removeSubrange((lq - 1) * 24..<lq * 24)
                assertBitIdentical(other, cleanOther, "\(path) rows without NaN")

                var big = ProbeCall(queryHeads: 1, kvHeads: 1, queryLength: lq, keyLength: lk, headDim: 16, valueDim: 24, seed: 8, scale: 1e30)
                big.query = big.query.map { $0 * 1e5 }
                big.key = big.key.map { $0 * 1e5 }
                big.threads = 3
                let o = big.run()
                let oracle = try big.oracle()
                XCTAssertTrue(o.output.allSatisfy(\.isNaN), "\(path) scale 1e30: \(o.output.prefix(4))")
                XCTAssertTrue(oracle.output.allSatisfy(\.isNaN), "oracle scale 1e30")
            }
        }
    }

    /// head_dim 0 and value_dim 0 on split calls; zero key length; more threads than chunks.
    func testDegenerateDimsOnSplitCalls() throws {
        for (d, dv) in [(0, 8), (8, 0), (0, 0)] {
            var c = ProbeCall(queryHeads: 1, kvHeads: 1, queryLength: 2, keyLength: 1100, headDim: d, valueDim: dv, seed: 4)
            c.threads = 1
            let base = c.run()
            XCTAssertEqual(base.status, ATTN_OK)
            for threads: Int32 in [2, 8] {
                c.threads = threads
                let r = c.run()
                XCTAssertEqual(r.status, ATTN_OK)
                assertBitIdentical(r.output, base.output, "d \(d) dv \(dv) threads \(threads)")
                assertBitIdentical(r.logsumexp, base.logsumexp, "lse d \(d) dv \(dv) threads \(threads)")
            }
            if d == 0 {  // scores all 0: lse = log(1100)
                XCTAssertEqual(base.logsumexp[0], logf(1100), accuracy: 1e-5)
            }
        }
        var empty = ProbeCall(queryHeads: 2, kvHeads: 1, queryLength: 1, keyLength: 0, headDim: 8, valueDim: 8, seed: 4)
        empty.threads = 8
        let r = empty.run()
        XCTAssertEqual(r.status, ATTN_OK)
        XCTAssertEqual(r.output, [Float](repeating: 0, count: 16))
        XCTAssertEqual(r.logsumexp, [-.infinity, -.infinity])
    }

    /// The Swift API with the Dispatch driver against OpenMP, decode and split shapes.
    func testDispatchDriverThroughTheSwiftAPI() throws {
        defer { KernelThreading.override = nil }
        for (lq, lk) in [(1, 1300), (4, 2049), (64, 600), (65, 600)] {
            let q = try Tensor<Float>.randomNormal([1, 4, lq, 32], seed: 1)
            let k = try Tensor<Float>.randomNormal([1, 2, lk, 32], seed: 2)
            let v = try Tensor<Float>.randomNormal([1, 2, lk, 48], seed: 3)
            KernelThreading.override = .openMP
            let a = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: .causal(.bottomRight), threads: 8)
            KernelThreading.override = .dispatch
            for threads in [1, 3] {
                let b = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: .causal(.bottomRight), threads: threads)
                assertBitIdentical(b.output, a.output, "\(lq)x\(lk) dispatch \(threads)")
                assertBitIdentical(b.logsumexp, a.logsumexp, "\(lq)x\(lk) dispatch \(threads)")
            }
        }
    }

    /// Concurrent split calls from several threads (nested OpenMP inside Dispatch).
    func testConcurrentSplitCalls() {
        var c = ProbeCall(queryHeads: 1, kvHeads: 1, queryLength: 2, keyLength: 3000, headDim: 32, valueDim: 32, seed: 6)
        c.threads = 1
        let base = c.run()
        c.threads = 3
        let call = c
        let results = UnsafeMutableBufferPointer<[Float]>.allocate(capacity: 6)
        results.initialize(repeating: [])
        defer { results.deallocate() }
        let shared = UncheckedSendable(results)
        DispatchQueue.concurrentPerform(iterations: 6) { i in shared.value[i] = call.run().output }
        for i in 0..<6 { assertBitIdentical(results[i], base.output, "concurrent call \(i)") }
    }

    /// Poisoned values next to the causal diagonal: the last r rows of a 64-row
    /// bottom-right call against an r-row bottom-right call (the same keys per row).
    func testLastRowsOfPrefillWithPoisonNearTheDiagonal() throws {
        for (lk, d, dv) in [(600, 40, 24), (600, 16, 130), (1100, 8, 256)] {
            var prefill = ProbeCall(queryHeads: 2, kvHeads: 2, queryLength: 64, keyLength: lk, headDim: d, valueDim: dv, seed: 12)
            prefill.causal = ATTN_CAUSAL_BOTTOM_RIGHT
            for h in 0..<2 {
                for (j, c, x) in [(lk - 1, 0, Float.infinity), (lk - 2, dv - 1, -.infinity), (lk - 3, 1, .nan), (lk - 64, 2, .infinity)] {
                    prefill.value[(h * lk + j) * dv + c] = x
                }
            }
            try forEachKernelPath { path in
                for threads: Int32 in [1, 3] {
                    prefill.threads = threads
                    let full = prefill.run()
                    for rows in 1...5 {
                        var last = prefill
                        last.queryLength = rows
                        last.query = rowsOf(prefill.query, heads: 2, length: 64, width: d, from: 64 - rows, count: rows)
                        let r = last.run()
                        let ctx = "\(path) lk \(lk) dv \(dv) rows \(rows) threads \(threads)"
                        assertBitIdentical(r.output, rowsOf(full.output, heads: 2, length: 64, width: dv, from: 64 - rows, count: rows), ctx)
                        assertBitIdentical(r.logsumexp, rowsOf(full.logsumexp, heads: 2, length: 64, width: 1, from: 64 - rows, count: rows), "lse " + ctx)
                    }
                }
            }
        }
    }

    /// NaN rows from different sources (NaN query, +inf key: inf·0 = the x86
    /// "indefinite" NaN, overflowing score, NaN value): decode rows against the same
    /// rows in a 100-row tile, NaN bit patterns included.
    func testNaNBitPatternsOfDecodeRowsMatchTileRows() throws {
        let sources = ["NaN query", "+inf key", "overflow", "NaN value", "-NaN key"]
        try forEachKernelPath { path in
            for source in sources {
                for lk in [100, 700] {
                    var full = ProbeCall(queryLength: 100, keyLength: lk, headDim: 16, valueDim: 20, seed: 31)
                    switch source {
                    case "NaN query": full.query[37 * 16 + 3] = .nan
                    case "+inf key": full.key[5 * 16 + 2] = .infinity
                    case "overflow": full.key[5 * 16 + 2] = 1e38; full.scale = 1e10
                    case "NaN value": full.value[5 * 20 + 2] = .nan
                    default: full.key[5 * 16 + 2] = -Float.nan
                    }
                    full.threads = 1
                    let reference = full.run()
                    for rows in [1, 2, 4] {
                        var few = full
                        few.queryLength = rows
                        few.query = rowsOf(full.query, heads: 1, length: 100, width: 16, from: 37, count: rows)
                        for threads: Int32 in [1, 2] {
                            few.threads = threads
                            let r = few.run()
                            let ctx = "\(path) \(source) lk \(lk) rows \(rows) threads \(threads)"
                            assertBitIdentical(r.output, rowsOf(reference.output, heads: 1, length: 100, width: 20, from: 37, count: rows), ctx)
                            assertBitIdentical(r.logsumexp, rowsOf(reference.logsumexp, heads: 1, length: 100, width: 1, from: 37, count: rows), "lse " + ctx)
                        }
                    }
                }
            }
        }
    }

    /// UB probes (run with -Xcc -fsanitize=pointer-overflow,signed-integer-overflow
    /// -Xcc -fsanitize-trap=all): key NULL with head_dim 0 and a nonzero key row
    /// stride on a decode call (the next-tile key prefetch forms NULL + offset).
    func testNullKeyWithHeadDimZeroAndNonzeroStride() {
        var out = [Float](repeating: 9, count: 4)
        let value = normals(100 * 4, seed: 1)
        var p = attn_params()
        p.batch = 1; p.query_heads = 1; p.kv_heads = 1; p.query_length = 1; p.key_length = 100
        p.head_dim = 0; p.value_dim = 4
        p.key_strides = (500, 500, 5, 1); p.query_strides = (5, 5, 5, 1)
        p.value_strides = (400, 400, 4, 1); p.output_strides = (4, 4, 4, 1)
        p.scale = 1; p.num_threads = 1
        let status = value.withUnsafeBufferPointer { v in
            out.withUnsafeMutableBufferPointer { o in
                p.value = v.baseAddress; p.output = o.baseAddress
                return attn_sdpa_forward(&p)
            }
        }
        XCTAssertEqual(status, ATTN_OK)
        for d in 0..<4 {
            var mean: Float = 0
            for j in 0..<100 { mean += value[j * 4 + d] }
            XCTAssertEqual(out[d], mean / 100, accuracy: 1e-5)
        }
    }

    func testDecodeRowNaNBitsMatchTileRow() {  // regression candidate for DecodeDeterminismTests
        var full = KernelCall(queryLength: 100, keyLength: 100, headDim: 16, valueDim: 20,
                              query: normals(1600, seed: 1), key: normals(1600, seed: 2), value: normals(2000, seed: 3), scale: 0.3)
        full.key[5 * 16 + 2] = .infinity  // score ±inf, made NaN by s + 0·s: x86's default NaN 0xffc00000
        forEachKernelPath { path in
            let tile = full.run()
            var one = full
            one.queryLength = 1
            one.query = Array(full.query[37 * 16..<38 * 16])
            let row = one.run()
            assertBitIdentical(row.output, Array(tile.output[37 * 20..<38 * 20]), path)
            assertBitIdentical(row.logsumexp, [tile.logsumexp[37]], path)
        }
    }

    /// An additive bias is added to the float32 logit in float32 (as in PyTorch),
    /// by the kernel and the oracle alike: a sum past the float32 range is +∞
    /// there (the row is NaN) or −∞ (the cell is masked; here the whole row).
    func testAdditiveBiasThatOverflowsTheLogitAgreesWithTheOracle() throws {
        for bias in [Float.greatestFiniteMagnitude, -Float.greatestFiniteMagnitude] {
            var c = ProbeCall(queryLength: 1, keyLength: 2, headDim: 1, valueDim: 1, seed: 1, scale: 1)
            c.query = [1e19]
            c.key = bias > 0 ? [1e19, 0] : [-1e19, -1e19]  // logits 1e38, 0 / −1e38, −1e38
            c.value = [5, 7]
            c.additive = bias > 0 ? [bias, 0] : [bias, bias]
            try forEachKernelPath { path in
                let r = c.run()
                let o = try c.oracle()
                if bias > 0 {
                    XCTAssertTrue(r.output[0].isNaN && o.output[0].isNaN, "\(path): fused \(r.output[0]), oracle \(o.output[0])")
                } else {
                    XCTAssertEqual(r.output[0], 0, path)
                    XCTAssertEqual(o.output[0], 0, path)
                    XCTAssertEqual(r.logsumexp[0], -.infinity, path)
                    XCTAssertEqual(o.logsumexp[0], -.infinity, path)
                }
            }
        }
    }
}
