import CAttention
import XCTest
@testable import Attention

/// Weights without a cliff (issue 11, item 5): the layers' `attentionWeights`
/// and `scaledDotProductAttentionWeights` come from a float32 path (the fused
/// kernel's logsumexp, then `exp(s − logsumexp)` tile by tile in
/// `attn_sdpa_weights`), within the suite's tolerance of the float64 oracle,
/// which stays available as `.reference`. The scores before softmax come from
/// the same path.
final class AttentionWeightsTests: XCTestCase {
    /// The oracle tolerance for weights: `Tolerance.outputBound` with values of
    /// magnitude 1 (a weight is at most 1), scaled by dropout's 1/(1 − p).
    private func weightTolerance(_ q: Tensor<Float>, _ k: Tensor<Float>, scale: Float, dropout: Float = 0) throws -> Float {
        let ones = try Tensor<Float>(shape: [1], repeating: 1)
        return Tolerance.outputBound(queries: q, keys: k, values: ones, scale: scale) / (1 - dropout)
    }

    func testFusedWeightsMatchTheOracleAtTileEdgesForEveryMaskOnEveryKernelPath() throws {
        var cases = 0
        for (queryLength, keyLength, headDim) in [(1, 1, 1), (63, 65, 33), (64, 64, 16), (65, 129, 3), (4, 520, 8)] {
            let (batch, heads, kvHeads) = (1, 2, 1)
            let q = try Tensor<Float>.randomNormal([batch, heads, queryLength, headDim], seed: UInt64(queryLength))
            let k = try Tensor<Float>.randomNormal([batch, kvHeads, keyLength, headDim], seed: UInt64(keyLength) + 1000)
            let keep = try Tensor(shape: [1, 1, queryLength, keyLength],
                                  scalars: (0..<(queryLength * keyLength)).map { $0 % 7 != 3 })
            let additive = try Tensor(shape: [batch, 1, 1, keyLength],
                                      scalars: (0..<(batch * keyLength)).map { $0 % 5 == 1 ? -Float.infinity : Float($0 % 3) * 0.5 })
            let masks: [(String, AttentionMask)] = [
                ("none", .none), ("top-left", .causal(.topLeft)), ("bottom-right", .causal(.bottomRight)),
                ("keep", .keep(keep)), ("additive", .additive(additive)),
            ]
            for (name, mask) in masks {
                for dropout: Float in [0, 0.3] {
                    let scale: Float = 1 / Float(headDim).squareRoot()
                    let oracle = try Reference.scaledDotProductAttention(
                        queries: q, keys: k, values: try .zeros([batch, kvHeads, keyLength, 1]), mask: mask,
                        dropoutProbability: dropout, dropoutSeed: 9).weights
                    try forEachKernelPath { path in
                        let fused = try scaledDotProductAttentionWeights(
                            queries: q, keys: k, mask: mask, dropoutProbability: dropout, dropoutSeed: 9, threads: 2)
                        assertClose(fused, oracle, tolerance: try weightTolerance(q, k, scale: scale, dropout: dropout),
                                    "\(path) \(queryLength)×\(keyLength)×\(headDim) \(name) p \(dropout)")
                        XCTAssertEqual(zip(fused.scalars, oracle.scalars).filter { ($0 == 0) != ($1 == 0) }.count, 0,
                                       "the same cells are zero (masked or dropped) \(path) \(name) p \(dropout)")
                        cases += 1
                    }
                }
            }
        }
        XCTAssertGreaterThanOrEqual(cases, 50)
    }

    /// The weights are the float32 path's: bit for bit what the C entry point
    /// writes from the fused kernel's logsumexp, and that entry point uses the
    /// logsumexp it is given (exp(s − 0) = exp(s) for a zero logsumexp), so the
    /// float64 oracle is not involved.
    func testWeightsComeFromTheFloat32PathOfAttnSDPAWeights() throws {
        let (queryLength, keyLength, headDim) = (70, 90, 16)
        let q = try Tensor<Float>.randomNormal([1, 1, queryLength, headDim], seed: 1)
        let k = try Tensor<Float>.randomNormal([1, 1, keyLength, headDim], seed: 2)
        let scale: Float = 0.25
        let weights = try scaledDotProductAttentionWeights(queries: q, keys: k, scale: scale, threads: 1)
        let logsumexp = try scaledDotProductAttentionWithLogsumexp(
            queries: q, keys: k, values: try .zeros([1, 1, keyLength, 0]), scale: scale).logsumexp

        func direct(_ lse: [Float]) -> (attn_status, [Float]) {
            var out = [Float](repeating: .nan, count: queryLength * keyLength)
            var params = attn_params()
            params.batch = 1; params.query_heads = 1; params.kv_heads = 1
            params.query_length = Int64(queryLength); params.key_length = Int64(keyLength); params.head_dim = Int64(headDim)
            params.query_strides = (Int64(queryLength * headDim), Int64(queryLength * headDim), Int64(headDim), 1)
            params.key_strides = (Int64(keyLength * headDim), Int64(keyLength * headDim), Int64(headDim), 1)
            params.scale = scale
            let status = q.withUnsafeBufferPointer { qb in
                k.withUnsafeBufferPointer { kb in
                    out.withUnsafeMutableBufferPointer { o in
                        params.query = qb.baseAddress
                        params.key = kb.baseAddress
                        return attn_sdpa_weights(&params, lse, o.baseAddress)
                    }
                }
            }
            return (status, out)
        }
        let (status, fromC) = direct(logsumexp.scalars)
        XCTAssertEqual(status, ATTN_OK)
        assertBitIdentical(weights.scalars, fromC, "the layers' path is attn_sdpa_weights on the fused logsumexp")
        // Rows sum to 1 within float32 rounding.
        for row in 0..<queryLength {
            let sum = weights.scalars[(row * keyLength)..<((row + 1) * keyLength)].reduce(0, +)
            XCTAssertEqual(sum, 1, accuracy: 1e-5)
        }
        // With logsumexp 0 it writes exp(scores): the logsumexp is used as given.
        let (_, exponentials) = direct([Float](repeating: 0, count: queryLength))
        let scores = try scaledDotProductAttentionScores(queries: q, keys: k, scale: scale)
        for (e, s) in zip(exponentials, scores.scalars) { XCTAssertEqual(e, expf(s), accuracy: 2e-6 * max(1, expf(s))) }
        // A missing logsumexp is an error, not a crash.
        var params = attn_params()
        params.batch = 1; params.query_heads = 1; params.kv_heads = 1; params.query_length = 1; params.key_length = 1
        XCTAssertEqual(attn_sdpa_weights(&params, nil, nil), ATTN_ERROR_NULL_POINTER)
    }

    func testScoresAreScaledDotProductsWithMinusInfinityAtMaskedCells() throws {
        let q = try Tensor<Float>.randomNormal([2, 2, 67, 8], seed: 5)
        let k = try Tensor<Float>.randomNormal([2, 1, 70, 8], seed: 6)
        let additive = try Tensor<Float>(shape: [70], scalars: (0..<70).map { $0 % 9 == 0 ? -.infinity : 0.25 })
        for mask: AttentionMask in [.causal(.bottomRight), .additive(additive)] {
            let fused = try scaledDotProductAttentionScores(queries: q, keys: k, mask: mask, scale: 0.5)
            let oracle = try scaledDotProductAttentionScores(queries: q, keys: k, mask: mask, scale: 0.5, backend: .reference)
            XCTAssertEqual(fused.shape, [2, 2, 67, 70])
            assertClose(fused, oracle, tolerance: 1e-5, "scores")
            XCTAssertEqual(fused.scalars.map { $0 == -.infinity }, oracle.scalars.map { $0 == -.infinity }, "−∞ exactly at masked cells")
            // softmax(scores) = weights
            let weights = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: mask, scale: 0.5)
            for row in 0..<(2 * 2 * 67) {
                let s = fused.scalars[(row * 70)..<((row + 1) * 70)].map(Double.init)
                let m = s.max()!
                let total = s.reduce(0) { $0 + exp($1 - m) }
                for (j, value) in s.enumerated() {
                    XCTAssertEqual(Double(weights.scalars[row * 70 + j]), exp(value - m) / total, accuracy: 2e-6)
                }
            }
        }
    }

    func testFullyMaskedRowsAreZeroAndNaNRowsNaN() throws {
        var q = try Tensor<Float>.randomNormal([1, 1, 3, 4], seed: 1)
        q[0, 0, 2, 1] = .nan
        let k = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 2)
        let keep = try Tensor<Bool>(shape: [3, 5], scalars: (0..<15).map { $0 >= 5 })  // row 0 sees nothing
        let weights = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: .keep(keep))
        XCTAssertEqual(Array(weights.scalars[0..<5]), [0, 0, 0, 0, 0])
        XCTAssertFalse(weights.scalars[0..<5].contains { $0.sign == .minus }, "+0, not −0")
        XCTAssertTrue(weights.scalars[10..<15].allSatisfy(\.isNaN), "a NaN row is NaN, as in the oracle")
        let oracle = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: .keep(keep), backend: .reference)
        assertClose(weights, oracle, tolerance: 1e-6)
    }

    func testLayersWeightsAndScoresComeFromTheFusedPathAndAgreeWithTheOracle() throws {
        let x = try Tensor<Float>.randomNormal([2, 70, 16], seed: 3)
        var mha = try MultiHeadAttention(dIn: 16, dOut: 16, heads: 4, kvHeads: 2, causal: .topLeft, seed: 1)
        let padding = try Tensor<Bool>(shape: [2, 70], scalars: (0..<140).map { $0 % 70 >= 60 })
        let fused = try mha.attentionWeights(query: x, key: x, value: x, keyPadding: .padding(padding))
        let fusedScores = try mha.attentionScores(query: x, key: x, value: x, keyPadding: .padding(padding))
        mha.backend = .reference
        let oracle = try mha.attentionWeights(query: x, key: x, value: x, keyPadding: .padding(padding))
        let oracleScores = try mha.attentionScores(query: x, key: x, value: x, keyPadding: .padding(padding))
        XCTAssertEqual(fused.shape, [2, 4, 70, 70])
        assertClose(fused, oracle, tolerance: 1e-5, "MultiHeadAttention weights")
        assertClose(fusedScores, oracleScores, tolerance: 1e-5, "MultiHeadAttention scores")
        XCTAssertTrue(fusedScores.scalars.enumerated().allSatisfy { index, s in (index % 70 >= 60) ? s == -.infinity : true },
                      "padded keys score −∞")

        let causal = try CausalSelfAttention(dIn: 16, dOut: 8, contextLength: 80, seed: 2)
        var causalReference = causal
        causalReference.backend = .reference
        assertClose(try causal.attentionWeights(x), try causalReference.attentionWeights(x), tolerance: 1e-5, "causal")
        let causalScores = try causal.attentionScores(x)
        XCTAssertEqual(causalScores.shape, [2, 70, 70])
        XCTAssertEqual(causalScores[0, 3, 4], -.infinity, "above the diagonal")
        XCTAssertTrue(causalScores[0, 4, 3].isFinite)

        let single = try SelfAttention(dIn: 16, dOut: 8, seed: 3)
        var singleReference = single
        singleReference.backend = .reference
        assertClose(try single.attentionWeights(x), try singleReference.attentionWeights(x), tolerance: 1e-5, "self")
        let simple = SimpleSelfAttention()
        let unbatched = try Tensor<Float>.randomNormal([6, 3], seed: 4)
        assertClose(try simple.attentionWeights(unbatched), try SimpleSelfAttention(backend: .reference).attentionWeights(unbatched),
                    tolerance: 1e-5, "simple, unbatched")
        XCTAssertEqual(try simple.attentionWeights(unbatched).shape, [6, 6])
    }

    func testWeightsAskedForMoreMemoryThanThereIsAreATypedError() throws {
        let q = try Tensor<Float>(shape: [1, 1, 1 << 20, 0], scalars: [])
        let k = try Tensor<Float>(shape: [1, 1, 1 << 24, 0], scalars: [])
        XCTAssertThrowsError(try scaledDotProductAttentionWeights(queries: q, keys: k)) { error in
            guard case let .insufficientMemory(tensor, shape, bytes, _)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "weights")
            XCTAssertEqual(shape, [1, 1, 1 << 20, 1 << 24])
            XCTAssertEqual(bytes, UInt64(1) << 46)
        }
    }
}
