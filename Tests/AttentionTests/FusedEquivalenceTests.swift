import XCTest
@testable import Attention

/// The fused kernel against the oracle over shapes at the tile edges, every mask
/// kind, grouped-query attention, both causal alignments, dropout, and thread
/// counts 1 and 2 (which must agree bit for bit), on every micro-kernel path
/// this CPU supports.
final class FusedEquivalenceTests: XCTestCase {
    /// The kernel's key/value and query tile: 64 rows (CKernels/sdpa.c).
    static let tile = 64
    static let lengths = [1, tile - 1, tile, tile + 1, 2 * tile + 1]
    static let headDims = [1, 3, 33, 64, 80, 128]

    struct Case: CustomStringConvertible {
        var batch = 1, queryHeads = 2, kvHeads = 2
        var queryLength: Int, keyLength: Int, headDim: Int, valueDim: Int? = nil
        var mask: AttentionMask = .none
        var scale: Float? = nil
        var dropout: Float = 0
        var seed: UInt64 = 1

        var description: String {
            "B\(batch) Hq\(queryHeads) Hkv\(kvHeads) Lq\(queryLength) Lk\(keyLength) D\(headDim) Dv\(valueDim ?? headDim) mask \(mask) scale \(String(describing: scale)) p \(dropout)"
        }
    }

    /// Runs one case on the oracle and on the fused kernel with 1 and 2 threads.
    func check(_ c: Case, file: StaticString = #filePath, line: UInt = #line) throws {
        let q = try Tensor<Float>.randomNormal([c.batch, c.queryHeads, c.queryLength, c.headDim], seed: c.seed)
        let k = try Tensor<Float>.randomNormal([c.batch, c.kvHeads, c.keyLength, c.headDim], seed: c.seed + 1)
        let v = try Tensor<Float>.randomNormal([c.batch, c.kvHeads, c.keyLength, c.valueDim ?? c.headDim], seed: c.seed + 2)
        let reference = try Reference.scaledDotProductAttention(
            queries: q, keys: k, values: v, mask: c.mask, scale: c.scale,
            dropoutProbability: c.dropout, dropoutSeed: c.seed)
        let scale = c.scale ?? 1 / Float(c.headDim).squareRoot()
        var tolerance = Tolerance.outputBound(queries: q, keys: k, values: v, scale: scale)
        if c.dropout > 0 { tolerance /= (1 - c.dropout) }
        try forEachKernelPath { path in
            var firstRun: AttentionResult?
            for threads in [1, 2] {
                let fused = try scaledDotProductAttentionWithLogsumexp(
                    queries: q, keys: k, values: v, mask: c.mask, scale: c.scale,
                    dropoutProbability: c.dropout, dropoutSeed: c.seed, threads: threads)
                assertClose(fused.output, reference.output, tolerance: tolerance, "\(c), \(path), \(threads) threads",
                            file: file, line: line)
                assertClose(fused.logsumexp, reference.logsumexp, tolerance: tolerance * 4, "logsumexp \(c), \(path)",
                            file: file, line: line)
                if let firstRun {
                    XCTAssertEqual(firstRun.output, fused.output, "thread count changed bits: \(c), \(path)", file: file, line: line)
                }
                firstRun = fused
            }
        }
    }

    func testTileEdgeLengthsAndHeadDims() throws {
        for length in Self.lengths {
            for headDim in Self.headDims {
                try check(Case(queryLength: length, keyLength: length, headDim: headDim))
            }
        }
    }

    func testDifferentQueryAndKeyLengthsAndValueDim() throws {
        for (queryLength, keyLength) in [(1, 129), (65, 1), (63, 130), (129, 64)] {
            try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 33, valueDim: 17))
        }
    }

    func testCausalBothAlignments() throws {
        for alignment in [CausalAlignment.topLeft, .bottomRight] {
            for (queryLength, keyLength) in [(1, 1), (65, 65), (129, 129), (3, 6), (6, 3), (1, 130), (65, 200), (130, 65)] {
                try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 16, mask: .causal(alignment)))
            }
        }
    }

    func testKeepMaskBroadcasts() throws {
        let (queryLength, keyLength) = (65, 70)
        var generator = SplitMix64(seed: 42)
        for shape in [[2, 2, queryLength, keyLength], [queryLength, keyLength], [1, 2, 1, keyLength], [2, 1, queryLength, 1]] {
            let keep = try Tensor<Bool>(shape: shape, scalars: (0..<shape.reduce(1, *)).map { _ in generator.next() % 4 != 0 })
            try check(Case(batch: 2, queryLength: queryLength, keyLength: keyLength, headDim: 8, mask: .keep(keep)))
        }
    }

    func testAdditiveMaskWithInfinities() throws {
        let (queryLength, keyLength) = (66, 65)
        var generator = SplitMix64(seed: 7)
        let values: [Float] = (0..<queryLength * keyLength).map { _ in
            let draw = generator.next() % 8
            return draw == 0 ? -.infinity : Float(Int(draw) - 4) * 0.5
        }
        let additive = try Tensor<Float>(shape: [queryLength, keyLength], scalars: values)
        try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 12, mask: .additive(additive)))
    }

    func testGroupedQueryAttention() throws {
        try check(Case(batch: 2, queryHeads: 8, kvHeads: 2, queryLength: 65, keyLength: 33, headDim: 16))
        try check(Case(batch: 1, queryHeads: 6, kvHeads: 1, queryLength: 1, keyLength: 129, headDim: 64))
        try check(Case(batch: 1, queryHeads: 4, kvHeads: 2, queryLength: 70, keyLength: 70, headDim: 8, mask: .causal(.topLeft)))
    }

    func testScaleOverrides() throws {
        for scale: Float in [0, 1, -0.5, 3] {
            try check(Case(queryLength: 9, keyLength: 70, headDim: 5, scale: scale))
        }
    }

    func testDropoutDropsTheSameCellsAsTheOracle() throws {
        for p: Float in [0.1, 0.5, 0.9] {
            try check(Case(queryLength: 65, keyLength: 67, headDim: 8, dropout: p, seed: 99))
            try check(Case(queryLength: 40, keyLength: 40, headDim: 8, mask: .causal(.topLeft), dropout: p, seed: 5))
        }
    }
}
