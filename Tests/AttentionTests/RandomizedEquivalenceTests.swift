import CAttention
import Foundation
import XCTest
@testable import Attention

/// A seeded randomized sweep of the fused kernel against the double-precision
/// oracle: shapes at and around the 64-row tiles (empty included), every mask
/// kind with a random broadcast shape (dead rows, NaN at keys masked for every
/// row, and the most negative finite bias included), default, zero, negative and
/// large scales, grouped-query attention, both causal alignments, dropout, 1 to 3
/// threads and every micro-kernel path.
///
/// 200 cases by default; `ATTENTION_LONG_SWEEP=1` runs 10,000 (larger ones, too).
/// A failing case prints its seed; `ATTENTION_SWEEP_SEED=<seed>` runs that case
/// alone, and `ATTENTION_SWEEP_VERBOSE=1` prints every case.
final class RandomizedEquivalenceTests: XCTestCase {
    static let baseSeed: UInt64 = 0xA77E_5EED_0000_0000

    /// One random case, drawn from its seed alone.
    struct SweepCase: CustomStringConvertible {
        let seed: UInt64
        var batch: Int, kvHeads: Int, group: Int
        var queryLength: Int, keyLength: Int, headDim: Int, valueDim: Int
        var maskKind: String
        var maskShape: [Int] = []
        var scale: Float?
        var dropout: Float
        var threads: Int
        var path: String
        var poisonedKey: Int?
        var generator: SplitMix64

        var queryHeads: Int { kvHeads * group }
        var cost: Int { batch * queryHeads * queryLength * keyLength * (headDim + valueDim) }

        var description: String {
            "seed 0x\(String(seed, radix: 16)): B\(batch) Hq\(queryHeads) Hkv\(kvHeads) Lq\(queryLength) Lk\(keyLength) "
                + "D\(headDim) Dv\(valueDim) mask \(maskKind)\(maskShape.isEmpty ? "" : " \(maskShape)") "
                + "scale \(scale.map { "\($0)" } ?? "default") p \(dropout) threads \(threads) path \(path)"
                + (poisonedKey.map { " NaN at masked key \($0)" } ?? "")
        }

        init(seed: UInt64, costLimit: Int) {
            self.seed = seed
            generator = SplitMix64(seed: seed)
            func pick<T>(_ options: [T], _ generator: inout SplitMix64) -> T { options[Int(generator.next() % UInt64(options.count))] }
            func uniform(_ range: ClosedRange<Int>, _ generator: inout SplitMix64) -> Int {
                range.lowerBound + Int(generator.next() % UInt64(range.count))
            }
            func length(_ generator: inout SplitMix64) -> Int {
                switch generator.next() % 20 {
                case 0: return 0
                case 1..<10: return pick([1, 2, 63, 64, 65, 127, 128, 129], &generator)
                default: return uniform(1...100, &generator)
                }
            }
            func dim(_ generator: inout SplitMix64) -> Int {
                generator.next() % 3 == 0 ? pick([1, 7, 16, 33, 64, 65, 80], &generator) : uniform(1...12, &generator)
            }
            batch = uniform(1...3, &generator)
            kvHeads = uniform(1...3, &generator)
            group = uniform(1...3, &generator)
            queryLength = length(&generator)
            keyLength = length(&generator)
            headDim = dim(&generator)
            valueDim = generator.next() % 2 == 0 ? headDim : dim(&generator)
            maskKind = pick(["none", "causal top-left", "causal bottom-right", "keep", "additive", "additive finite-min"], &generator)
            switch generator.next() % 8 {
            case 0, 1, 2: scale = nil
            case 3: scale = 0
            case 4: scale = -Float(uniform(1...200, &generator)) / 100
            case 5: scale = Float(uniform(1...40, &generator)) / 4  // up to 10: large logits
            default: scale = Float(uniform(1...300, &generator)) / 300
            }
            dropout = generator.next() % 4 == 0 ? pick([0.1, 0.5, 0.9], &generator) : 0
            threads = uniform(1...3, &generator)
            path = pick(supportedKernelPaths, &generator)
            // Keep the oracle (≈ 0.5 µs per multiply-add in a debug build) within budget:
            // shrink batch and heads first, then dimensions or lengths.
            while cost > costLimit {
                if batch > 1 { batch -= 1 }
                else if group > 1 { group -= 1 }
                else if kvHeads > 1 { kvHeads -= 1 }
                else if headDim + valueDim > 2, generator.next() % 2 == 0 { headDim = max(1, headDim / 2); valueDim = max(1, valueDim / 2) }
                else if queryLength >= keyLength { queryLength /= 2 }
                else { keyLength /= 2 }
            }
        }

        /// Draws the operands and the mask (after the shape, from the same generator).
        mutating func operands() throws -> (q: Tensor<Float>, k: Tensor<Float>, v: Tensor<Float>, mask: AttentionMask) {
            var q = try Tensor<Float>.randomNormal([batch, queryHeads, queryLength, headDim], seed: generator.next())
            var k = try Tensor<Float>.randomNormal([batch, kvHeads, keyLength, headDim], seed: generator.next())
            var v = try Tensor<Float>.randomNormal([batch, kvHeads, keyLength, valueDim], seed: generator.next())
            if generator.next() % 4 == 0 { q = q.map { $0 * 3 } }  // wider logits
            let full = [batch, queryHeads, queryLength, keyLength]
            // A random broadcast shape: each dimension full or 1, leading 1s sometimes dropped.
            var shape = full.map { generator.next() % 2 == 0 ? $0 : 1 }
            while shape.count > 2, shape[0] == 1, generator.next() % 2 == 0 { shape.removeFirst() }
            let count = shape.reduce(1, *)
            let fullKeyColumn = shape.last == keyLength && keyLength > 0 && count > 0
            switch maskKind {
            case "causal top-left": return (q, k, v, .causal(.topLeft))
            case "causal bottom-right": return (q, k, v, .causal(.bottomRight))
            case "keep":
                maskShape = shape
                let density = UInt64([1, 5, 9][Int(generator.next() % 3)])
                var cells = (0..<count).map { _ in generator.next() % 10 < density }
                if fullKeyColumn, generator.next() % 3 == 0 {  // a key no row sees, holding NaN
                    let key = Int(generator.next() % UInt64(keyLength))
                    for index in stride(from: key, to: count, by: keyLength) { cells[index] = false }
                    poison(key: key, &k, &v)
                }
                return (q, k, v, .keep(try Tensor(shape: shape, scalars: cells)))
            case "additive", "additive finite-min":
                maskShape = shape
                let floor: Float = maskKind == "additive" ? -.infinity : -.greatestFiniteMagnitude
                var cells: [Float] = (0..<count).map { _ in
                    generator.next() % 5 == 0 ? floor : Float(Int(generator.next() % 17) - 8) * 0.5
                }
                if maskKind == "additive", fullKeyColumn, generator.next() % 3 == 0 {
                    let key = Int(generator.next() % UInt64(keyLength))
                    for index in stride(from: key, to: count, by: keyLength) { cells[index] = -.infinity }
                    poison(key: key, &k, &v)
                }
                return (q, k, v, .additive(try Tensor(shape: shape, scalars: cells)))
            default:
                return (q, k, v, .none)
            }
        }

        private mutating func poison(key: Int, _ k: inout Tensor<Float>, _ v: inout Tensor<Float>) {
            poisonedKey = key
            for b in 0..<batch {
                for h in 0..<kvHeads {
                    for d in 0..<headDim { k[b, h, key, d] = .nan }
                    for d in 0..<valueDim { v[b, h, key, d] = .nan }
                }
            }
        }
    }

    /// Runs one case; returns false (after reporting) if fused and oracle disagree.
    @discardableResult
    func check(seed: UInt64, costLimit: Int) throws -> Bool {
        var c = SweepCase(seed: seed, costLimit: costLimit)
        let (q, k, v, mask) = try c.operands()
        let original = String(cString: attn_kernel_path())
        XCTAssertEqual(attn_select_kernel_path(c.path), 1, "\(c)")
        defer { _ = attn_select_kernel_path(original) }

        let dropoutSeed = seed ^ 0xD0
        let fused = try scaledDotProductAttentionWithLogsumexp(
            queries: q, keys: k, values: v, mask: mask, scale: c.scale,
            dropoutProbability: c.dropout, dropoutSeed: dropoutSeed, threads: c.threads)
        let oracle = try Reference.scaledDotProductAttention(
            queries: q, keys: k, values: v, mask: mask, scale: c.scale,
            dropoutProbability: c.dropout, dropoutSeed: dropoutSeed)
        let scale = c.scale ?? 1 / Float(c.headDim).squareRoot()
        let clean = c.poisonedKey == nil ? v : v.map { $0.isNaN ? 0 : $0 }
        let tolerance = Tolerance.outputBound(queries: q, keys: k.map { $0.isNaN ? 0 : $0 }, values: clean, scale: scale) / (1 - c.dropout)

        if ProcessInfo.processInfo.environment["ATTENTION_SWEEP_VERBOSE"] == "1" { print("case \(c)") }
        let failuresBefore = testRun?.failureCount ?? 0
        let long = costLimit == Self.longCostLimit ? "ATTENTION_LONG_SWEEP=1 " : ""
        let rerun = "rerun with \(long)ATTENTION_SWEEP_SEED=0x\(String(seed, radix: 16))"
        assertClose(fused.output, oracle.output, tolerance: tolerance, "output, \(c); \(rerun)")
        assertClose(fused.logsumexp, oracle.logsumexp, tolerance: 4 * tolerance, "logsumexp, \(c); \(rerun)")
        XCTAssertFalse(fused.output.scalars.contains { $0.isNaN }, "NaN in the output, \(c); \(rerun)")
        let passed = (testRun?.failureCount ?? 0) == failuresBefore
        if !passed { print("RandomizedEquivalenceTests: failing case \(c); \(rerun)") }
        return passed
    }

    func testFusedMatchesTheOracleOnRandomCases() throws {
        let environment = ProcessInfo.processInfo.environment
        if let text = environment["ATTENTION_SWEEP_SEED"] {
            let digits = text.hasPrefix("0x") ? String(text.dropFirst(2)) : text
            let seed = try XCTUnwrap(UInt64(digits, radix: text.hasPrefix("0x") ? 16 : 10), "ATTENTION_SWEEP_SEED=\(text)")
            try check(seed: seed, costLimit: environment["ATTENTION_LONG_SWEEP"] == "1" ? Self.longCostLimit : Self.costLimit)
            return
        }
        let long = environment["ATTENTION_LONG_SWEEP"] == "1"
        let count = long ? 10_000 : 200
        var failures = 0
        for index in 0..<count {
            if try !check(seed: Self.baseSeed &+ UInt64(index), costLimit: long ? Self.longCostLimit : Self.costLimit) {
                failures += 1
                if failures == 5 { return XCTFail("stopped after 5 failing cases of \(index + 1)") }
            }
        }
    }

    /// Multiply-adds (B·Hq·Lq·Lk·(D + Dv)) per case: at most about 70 ms of oracle
    /// in a debug build.
    static let costLimit = 100_000
    static let longCostLimit = 400_000
}
