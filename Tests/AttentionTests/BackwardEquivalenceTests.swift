import CAttention
import XCTest
@testable import Attention

/// The fused backward kernel against the oracle's backward at the tile edges,
/// with every mask kind, grouped-query attention, both causal alignments,
/// dropout, on every micro-kernel path, both threading drivers and 1 or 3
/// workers (which must agree bit for bit). `ATTENTION_LONG_SWEEP=1` widens the grid.
final class BackwardEquivalenceTests: XCTestCase {
    static let tile = 64
    static let longSweep = ProcessInfo.processInfo.environment["ATTENTION_LONG_SWEEP"] == "1"

    override func tearDown() {
        KernelThreading.override = nil
    }

    struct Case: CustomStringConvertible {
        var batch = 1, queryHeads = 2, kvHeads = 2
        var queryLength: Int, keyLength: Int, headDim: Int, valueDim: Int? = nil
        var mask: AttentionMask = .none
        var keyPadding: Tensor<Bool>? = nil
        var scale: Float? = nil
        var dropout: Float = 0
        var seed: UInt64 = 1

        var description: String {
            "B\(batch) Hq\(queryHeads) Hkv\(kvHeads) Lq\(queryLength) Lk\(keyLength) D\(headDim) Dv\(valueDim ?? headDim) mask \(mask) scale \(String(describing: scale)) p \(dropout)"
        }
    }

    struct Inputs {
        var q, k, v, dO: Tensor<Float>
    }

    static func inputs(_ c: Case) throws -> Inputs {
        let valueDim = c.valueDim ?? c.headDim
        return Inputs(
            q: try .randomNormal([c.batch, c.queryHeads, c.queryLength, c.headDim], seed: c.seed),
            k: try .randomNormal([c.batch, c.kvHeads, c.keyLength, c.headDim], seed: c.seed + 1),
            v: try .randomNormal([c.batch, c.kvHeads, c.keyLength, valueDim], seed: c.seed + 2),
            dO: try .randomNormal([c.batch, c.queryHeads, c.queryLength, valueDim], seed: c.seed + 3))
    }

    /// The drivers to compare: OpenMP only where compiled in.
    static var drivers: [AttentionThreading.Driver] {
        AttentionThreading.isOpenMPAvailable ? [.openMP, .dispatch] : [.dispatch]
    }

    /// Oracle gradients vs the fused ones on every path, driver and worker count.
    func check(_ c: Case, paths: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
        let x = try Self.inputs(c)
        let expected = try Reference.scaledDotProductAttentionBackward(
            queries: x.q, keys: x.k, values: x.v, outputGradient: x.dO, mask: c.mask, scale: c.scale,
            dropoutProbability: c.dropout, dropoutSeed: c.seed)
        let scale = c.scale ?? (c.headDim > 0 ? 1 / Float(c.headDim).squareRoot() : 1)
        let bounds = GradientTolerance.bounds(
            queries: x.q, keys: x.k, values: x.v, outputGradient: x.dO, scale: scale, dropout: c.dropout)
        let run = { (path: String) throws in
            var first: AttentionGradients?
            for driver in Self.drivers {
                KernelThreading.override = driver
                for threads in [1, 3] {
                    let forward = try scaledDotProductAttentionWithLogsumexp(
                        queries: x.q, keys: x.k, values: x.v, mask: c.mask, scale: c.scale,
                        dropoutProbability: c.dropout, dropoutSeed: c.seed, threads: threads)
                    let fused = try scaledDotProductAttentionBackward(
                        queries: x.q, keys: x.k, values: x.v, output: forward.output, logsumexp: forward.logsumexp,
                        outputGradient: x.dO, mask: c.mask, scale: c.scale, dropoutProbability: c.dropout,
                        dropoutSeed: c.seed, threads: threads)
                    let label = "\(c), \(path), \(driver) × \(threads)"
                    if let first {
                        XCTAssertEqual(fused.queries, first.queries, "dQ bits changed: \(label)", file: file, line: line)
                        XCTAssertEqual(fused.keys, first.keys, "dK bits changed: \(label)", file: file, line: line)
                        XCTAssertEqual(fused.values, first.values, "dV bits changed: \(label)", file: file, line: line)
                        continue
                    }
                    first = fused
                    assertClose(fused.queries, expected.queries, tolerance: bounds.queries, "dQ \(label)", file: file, line: line)
                    assertClose(fused.keys, expected.keys, tolerance: bounds.keys, "dK \(label)", file: file, line: line)
                    assertClose(fused.values, expected.values, tolerance: bounds.values, "dV \(label)", file: file, line: line)
                }
            }
        }
        if paths { try forEachKernelPath(run) } else { try run(String(cString: attn_kernel_path())) }
    }

    func testTileEdgeLengthsAndHeadDims() throws {
        let lengths = [1, Self.tile - 1, Self.tile, Self.tile + 1, 2 * Self.tile + 1]
        let headDims = Self.longSweep ? [1, 3, 64, 80, 128] : [1, 3, 80]
        for length in lengths {
            for headDim in headDims {
                try check(Case(queryLength: length, keyLength: length, headDim: headDim))
            }
        }
        for headDim in [64, 128] where !Self.longSweep {
            try check(Case(queryLength: 65, keyLength: 65, headDim: headDim))
        }
    }

    func testDifferentQueryAndKeyLengthsAndValueDim() throws {
        for (queryLength, keyLength) in [(1, 129), (65, 1), (63, 130), (129, 64)] {
            try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 33, valueDim: 17))
        }
    }

    func testCausalBothAlignmentsSkipHiddenTiles() throws {
        for alignment in [CausalAlignment.topLeft, .bottomRight] {
            for (queryLength, keyLength) in [(1, 1), (65, 65), (129, 129), (3, 6), (6, 3), (1, 130), (65, 200), (130, 65)] {
                try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 16, mask: .causal(alignment)))
            }
        }
    }

    func testGroupedQueryAttentionSumsTheGroupIntoEachKeyHead() throws {
        try check(Case(batch: 2, queryHeads: 6, kvHeads: 2, queryLength: 65, keyLength: 70, headDim: 8))
        try check(Case(batch: 1, queryHeads: 4, kvHeads: 1, queryLength: 63, keyLength: 129, headDim: 3,
                       mask: .causal(.bottomRight)))
    }

    func testKeepAndAdditiveMasksBroadcast() throws {
        let (queryLength, keyLength) = (65, 70)
        var generator = SplitMix64(seed: 42)
        let keep = try Tensor<Bool>(
            shape: [1, 1, queryLength, keyLength],
            scalars: (0..<(queryLength * keyLength)).map { _ in generator.next() % 4 != 0 })
        try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 20, mask: .keep(keep)))
        let bias = try Tensor<Float>(
            shape: [2, 1, keyLength],
            scalars: (0..<(2 * keyLength)).map { index in index % 7 == 0 ? -.infinity : Float(index % 5) * 0.3 - 0.6 })
        try check(Case(batch: 1, queryHeads: 2, kvHeads: 1, queryLength: 1, keyLength: keyLength, headDim: 20,
                       mask: .additive(try bias.reshaped([2, 1, keyLength]))), paths: false)
        let rowBias = try Tensor<Float>.randomNormal([queryLength, keyLength], seed: 5)
        try check(Case(queryLength: queryLength, keyLength: keyLength, headDim: 20, mask: .additive(rowBias)))
    }

    func testDropoutRegeneratesTheForwardCells() throws {
        try check(Case(queryLength: 65, keyLength: 66, headDim: 16, dropout: 0.3, seed: 9))
        try check(Case(queryLength: 130, keyLength: 130, headDim: 8, mask: .causal(.topLeft), dropout: 0.5, seed: 10))
    }

    func testScaleZeroAndNegative() throws {
        try check(Case(queryLength: 65, keyLength: 65, headDim: 4, scale: 0), paths: false)
        try check(Case(queryLength: 65, keyLength: 65, headDim: 4, scale: -0.7), paths: false)
    }

    /// dQ, dK, dV bit for bit the same for 1, 2, 3 and 8 workers under both
    /// drivers: each gradient row is summed by one task in a fixed order.
    func testGradientsAreBitIdenticalWhateverTheWorkersAndDriver() throws {
        let c = Case(batch: 2, queryHeads: 4, kvHeads: 2, queryLength: 130, keyLength: 200, headDim: 24,
                     mask: .causal(.bottomRight), dropout: 0.2, seed: 21)
        let x = try Self.inputs(c)
        var expected: AttentionGradients?
        for driver in Self.drivers {
            KernelThreading.override = driver
            for workers in [1, 2, 3, 8] {
                let forward = try scaledDotProductAttentionWithLogsumexp(
                    queries: x.q, keys: x.k, values: x.v, mask: c.mask, dropoutProbability: c.dropout, dropoutSeed: c.seed,
                    threads: workers)
                let g = try scaledDotProductAttentionBackward(
                    queries: x.q, keys: x.k, values: x.v, output: forward.output, logsumexp: forward.logsumexp,
                    outputGradient: x.dO, mask: c.mask, dropoutProbability: c.dropout, dropoutSeed: c.seed, threads: workers)
                if let expected {
                    XCTAssertEqual(g.queries, expected.queries, "dQ, \(driver) × \(workers)")
                    XCTAssertEqual(g.keys, expected.keys, "dK, \(driver) × \(workers)")
                    XCTAssertEqual(g.values, expected.values, "dV, \(driver) × \(workers)")
                } else {
                    expected = g
                }
            }
        }
    }
}
