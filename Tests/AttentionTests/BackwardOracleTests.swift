import XCTest
@testable import Attention

/// The oracle's backward checked against central finite differences of the
/// oracle's forward, and the fused backward's contract at the edges: fully
/// masked rows, non-finite inputs at masked keys, NaN propagation, empty sizes
/// and bad arguments.
final class BackwardOracleTests: XCTestCase {
    /// L = Σ output ∘ dO, from the oracle's forward.
    private func loss(_ q: Tensor<Float>, _ k: Tensor<Float>, _ v: Tensor<Float>, _ dO: Tensor<Float>,
                      mask: AttentionMask, scale: Float?, dropout: Float) throws -> Double {
        let out = try Reference.scaledDotProductAttention(
            queries: q, keys: k, values: v, mask: mask, scale: scale, dropoutProbability: dropout, dropoutSeed: 3).output
        return zip(out.scalars, dO.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// Every element's gradient against (L(x + h) − L(x − h)) / 2h, h = 1e-2:
    /// truncation O(h²) and float32 rounding of L over h keep it within 2e-3.
    private func checkFiniteDifferences(
        shape q: [Int], keys k: [Int], valueDim: Int, mask: AttentionMask = .none, scale: Float? = nil,
        dropout: Float = 0, file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let queries = try Tensor<Float>.randomNormal(q, seed: 1)
        let keys = try Tensor<Float>.randomNormal(k, seed: 2)
        let values = try Tensor<Float>.randomNormal(Array(k.dropLast()) + [valueDim], seed: 3)
        let dO = try Tensor<Float>.randomNormal(Array(q.dropLast()) + [valueDim], seed: 4)
        let gradients = try Reference.scaledDotProductAttentionBackward(
            queries: queries, keys: keys, values: values, outputGradient: dO, mask: mask, scale: scale,
            dropoutProbability: dropout, dropoutSeed: 3)
        let h: Float = 1e-2
        for (name, input, gradient) in [("q", queries, gradients.queries), ("k", keys, gradients.keys), ("v", values, gradients.values)] {
            for index in 0..<input.count {
                func perturbed(_ delta: Float) throws -> Double {
                    var x = input.scalars
                    x[index] += delta
                    let moved = try Tensor(shape: input.shape, scalars: x)
                    return try loss(name == "q" ? moved : queries, name == "k" ? moved : keys, name == "v" ? moved : values,
                                    dO, mask: mask, scale: scale, dropout: dropout)
                }
                let numeric = (try perturbed(h) - perturbed(-h)) / Double(2 * h)
                let analytic = Double(gradient.scalars[index])
                XCTAssertEqual(analytic, numeric, accuracy: 2e-3 * max(1, abs(numeric)),
                               "d\(name)[\(index)] mask \(mask) dropout \(dropout)", file: file, line: line)
            }
        }
    }

    func testOracleGradientsMatchFiniteDifferences() throws {
        try checkFiniteDifferences(shape: [1, 2, 3, 4], keys: [1, 2, 5, 4], valueDim: 3)
    }

    func testOracleGradientsMatchFiniteDifferencesWithGroupedQueriesAndCausalMask() throws {
        try checkFiniteDifferences(shape: [2, 2, 4, 3], keys: [2, 1, 4, 3], valueDim: 2, mask: .causal(.topLeft), scale: 0.9)
        try checkFiniteDifferences(shape: [1, 1, 3, 2], keys: [1, 1, 5, 2], valueDim: 2, mask: .causal(.bottomRight))
    }

    func testOracleGradientsMatchFiniteDifferencesWithMasksAndDropout() throws {
        let keep = try Tensor<Bool>(shape: [3, 4], scalars: [true, false, true, true, false, false, true, true, true, true, true, false])
        try checkFiniteDifferences(shape: [1, 1, 3, 2], keys: [1, 1, 4, 2], valueDim: 3, mask: .keep(keep))
        let bias = try Tensor<Float>(shape: [1, 4], scalars: [0.5, -.infinity, -1, 2])
        try checkFiniteDifferences(shape: [1, 2, 3, 2], keys: [1, 2, 4, 2], valueDim: 2, mask: .additive(bias), dropout: 0.4)
    }

    // MARK: - The fused backward's contract at the edges

    private func fusedGradients(
        _ q: Tensor<Float>, _ k: Tensor<Float>, _ v: Tensor<Float>, _ dO: Tensor<Float>, mask: AttentionMask = .none
    ) throws -> AttentionGradients {
        let forward = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask)
        return try scaledDotProductAttentionBackward(
            queries: q, keys: k, values: v, output: forward.output, logsumexp: forward.logsumexp,
            outputGradient: dO, mask: mask)
    }

    func testFullyMaskedRowHasZeroGradientsAndAddsNothing() throws {
        let (lq, lk, d) = (70, 66, 8)
        let q = try Tensor<Float>.randomNormal([1, 1, lq, d], seed: 1)
        let k = try Tensor<Float>.randomNormal([1, 1, lk, d], seed: 2)
        let v = try Tensor<Float>.randomNormal([1, 1, lk, d], seed: 3)
        let dO = try Tensor<Float>.randomNormal([1, 1, lq, d], seed: 4)
        var keep = [Bool](repeating: true, count: lq * lk)
        for j in 0..<lk { keep[5 * lk + j] = false }  // row 5 sees nothing
        let mask = AttentionMask.keep(try Tensor(shape: [lq, lk], scalars: keep))
        let fused = try fusedGradients(q, k, v, dO, mask: mask)
        XCTAssertEqual(Array(fused.queries.scalars[(5 * d)..<(6 * d)]), [Float](repeating: 0, count: d))
        // Row 5 contributes nothing: changing its query and output gradient changes no bit of dK, dV.
        var q2 = q.scalars, dO2 = dO.scalars
        for e in 0..<d { q2[5 * d + e] = 100; dO2[5 * d + e] = -7 }
        let moved = try fusedGradients(try Tensor(shape: q.shape, scalars: q2), k, v, try Tensor(shape: dO.shape, scalars: dO2), mask: mask)
        XCTAssertEqual(moved.keys, fused.keys)
        XCTAssertEqual(moved.values, fused.values)
    }

    func testNaNAndInfinityAtAMaskedKeyHaveNoEffect() throws {
        let (lq, lk, d) = (65, 67, 16)
        let q = try Tensor<Float>.randomNormal([1, 2, lq, d], seed: 1)
        var k = try Tensor<Float>.randomNormal([1, 2, lk, d], seed: 2)
        var v = try Tensor<Float>.randomNormal([1, 2, lk, d], seed: 3)
        let dO = try Tensor<Float>.randomNormal([1, 2, lq, d], seed: 4)
        var keep = [Bool](repeating: true, count: lk)
        keep[66] = false
        let mask = AttentionMask.keep(try Tensor(shape: [1, lk], scalars: keep))
        let clean = try fusedGradients(q, k, v, dO, mask: mask)
        for h in 0..<2 {
            k[0, h, 66, 3] = .nan
            v[0, h, 66, 0] = .infinity
            v[0, h, 66, 1] = .nan
        }
        let dirty = try fusedGradients(q, k, v, dO, mask: mask)
        XCTAssertEqual(dirty.queries, clean.queries)
        XCTAssertEqual(dirty.keys, clean.keys)
        XCTAssertEqual(dirty.values, clean.values)
        XCTAssertEqual(clean.keys[0, 1, 66, 3], 0)
        XCTAssertEqual(clean.values[0, 1, 66, 0], 0)
    }

    func testNaNInAVisibleQueryPropagatesAsInTheOracle() throws {
        var q = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 1)
        q[0, 0, 2, 1] = .nan
        let k = try Tensor<Float>.randomNormal([1, 1, 6, 4], seed: 2)
        let v = try Tensor<Float>.randomNormal([1, 1, 6, 4], seed: 3)
        let dO = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 4)
        let fused = try fusedGradients(q, k, v, dO)
        let oracle = try Reference.scaledDotProductAttentionBackward(queries: q, keys: k, values: v, outputGradient: dO)
        XCTAssertTrue(fused.queries[0, 0, 2, 0].isNaN)
        XCTAssertFalse(fused.queries[0, 0, 1, 0].isNaN)
        XCTAssertTrue(fused.keys[0, 0, 0, 0].isNaN)
        for (f, o) in [(fused.queries, oracle.queries), (fused.keys, oracle.keys), (fused.values, oracle.values)] {
            XCTAssertEqual(f.scalars.map(\.isNaN), o.scalars.map(\.isNaN))
        }
    }

    func testEmptySizesGiveZeroGradients() throws {
        let q = try Tensor<Float>.randomNormal([1, 2, 3, 4], seed: 1)
        let noKeys = try Tensor<Float>.zeros([1, 2, 0, 4])
        let fused = try fusedGradients(q, noKeys, noKeys, try .randomNormal([1, 2, 3, 4], seed: 2))
        XCTAssertEqual(fused.queries, try .zeros([1, 2, 3, 4]))
        XCTAssertEqual(fused.keys.shape, [1, 2, 0, 4])
        let k = try Tensor<Float>.randomNormal([1, 2, 5, 4], seed: 3)
        let noQueries = try Tensor<Float>.zeros([1, 2, 0, 4])
        let none = try fusedGradients(noQueries, k, k, noQueries)
        XCTAssertEqual(none.keys, try .zeros([1, 2, 5, 4]))
        XCTAssertEqual(none.values, try .zeros([1, 2, 5, 4]))
    }

    func testMismatchedOutputAndLogsumexpThrowNamingTheArgument() throws {
        let q = try Tensor<Float>.randomNormal([1, 2, 3, 4], seed: 1)
        let forward = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: q, values: q)
        let wrong = try Tensor<Float>.zeros([1, 2, 3, 5])
        XCTAssertThrowsError(try scaledDotProductAttentionBackward(
            queries: q, keys: q, values: q, output: wrong, logsumexp: forward.logsumexp, outputGradient: forward.output)) {
            guard case let AttentionError.invalidShape(argument, _, actual) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "output")
            XCTAssertEqual(actual, [1, 2, 3, 5])
        }
        XCTAssertThrowsError(try scaledDotProductAttentionBackward(
            queries: q, keys: q, values: q, output: forward.output, logsumexp: forward.output, outputGradient: forward.output)) {
            guard case let AttentionError.invalidShape(argument, _, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "logsumexp")
        }
        XCTAssertThrowsError(try scaledDotProductAttentionBackward(
            queries: q, keys: q, values: q, output: forward.output, logsumexp: forward.logsumexp, outputGradient: wrong)) {
            guard case let AttentionError.invalidShape(argument, _, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "outputGradient")
        }
    }
}
