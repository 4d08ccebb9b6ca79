import XCTest
@testable import Attention

/// Specifications of the layers: `Linear`, `Dropout` and `MultiHeadAttention`
/// (every feature on both backends, and every input error).
final class LayerTests: XCTestCase {
    // MARK: Linear

    /// W = [[1, 2, 3], [4, 5, 6]], b = [0.5, −1], x = [[1, 0, −1], [2, 1, 0.5]]:
    /// x·Wᵀ = [[−2, −2], [5.5, 16]], plus b = [[−1.5, −3], [6, 15]].
    func testLinearComputesXTimesWTransposedPlusBias() throws {
        let weight = try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        let bias = try Tensor<Float>(shape: [2], scalars: [0.5, -1])
        let x = try Tensor<Float>(shape: [2, 3], scalars: [1, 0, -1, 2, 1, 0.5])

        let linear = try Linear(weight: weight, bias: bias)
        XCTAssertEqual(linear.inFeatures, 3)
        XCTAssertEqual(linear.outFeatures, 2)
        XCTAssertEqual(linear.parameterCount, 8)
        XCTAssertEqual(try linear(x), try Tensor(shape: [2, 2], scalars: [-1.5, -3, 6, 15]))
        XCTAssertEqual(try Linear(weight: weight)(x), try Tensor(shape: [2, 2], scalars: [-2, -2, 5.5, 16]), "no bias")
        XCTAssertEqual(try linear(try x.reshaped([1, 2, 3])), try Tensor(shape: [1, 2, 2], scalars: [-1.5, -3, 6, 15]),
                       "leading dimensions are kept")
        XCTAssertEqual(try linear(try Tensor(shape: [0, 3], scalars: [])).shape, [0, 2], "no rows in, no rows out")
    }

    func testLinearRejectsWrongInputWidthAndMisshapedBias() throws {
        let linear = try Linear(weight: try Tensor(shape: [2, 3], repeating: 1))
        assertThrowsInvalidShape(argument: "input", actual: [2, 4], try linear(try Tensor(shape: [2, 4], repeating: 0)))
        assertThrowsInvalidShape(argument: "query", actual: [4], try linear(try Tensor(shape: [4], repeating: 0), argument: "query"))
        assertThrowsInvalidShape(argument: "bias", actual: [3],
                                 try Linear(weight: try Tensor(shape: [2, 3], repeating: 1), bias: try Tensor(shape: [3], repeating: 0)))
        assertThrowsInvalidShape(argument: "weight", actual: [6], try Linear(weight: try Tensor(shape: [6], repeating: 1)))
    }

    // MARK: Dropout

    func testDropoutInInferenceReturnsTheInputUnchanged() throws {
        let x = try Tensor<Float>.randomNormal([2, 3, 4, 5], seed: 1)
        XCTAssertEqual(try Dropout(probability: 0.5)(x, training: false, seed: 9), x)
        XCTAssertEqual(try Dropout(probability: 0)(x, training: true, seed: 9), x, "p = 0 keeps everything")
    }

    /// Element (b, h, i, j) is kept iff `Philox.keeps` says so, and then scaled by 1/(1 − p).
    func testDropoutInTrainingKeepsPhiloxCellsAndScalesThem() throws {
        let p: Float = 0.3
        let keepScale = 1 / (1 - p)
        let dropout = try Dropout(probability: p)
        let x = try Tensor<Float>.randomNormal([2, 3, 4, 5], seed: 2)
        let y = try dropout(x, training: true, seed: 1234)
        XCTAssertEqual(y.shape, x.shape)
        var kept = 0
        for b in 0..<2 {
            for h in 0..<3 {
                for i in 0..<4 {
                    for j in 0..<5 {
                        let keeps = Philox.keeps(seed: 1234, batch: b, head: h, row: i, column: j, probability: p)
                        XCTAssertEqual(y[b, h, i, j], keeps ? x[b, h, i, j] * keepScale : 0, "(\(b), \(h), \(i), \(j))")
                        if keeps { kept += 1 }
                    }
                }
            }
        }
        XCTAssertTrue((1..<120).contains(kept), "some cells kept and some dropped: \(kept) of 120")
        XCTAssertNotEqual(try dropout(x, training: true, seed: 1235), y, "another seed drops other cells")
    }

    /// A rank-2 tensor is (batch 0, head 0); extra leading dimensions fold into the batch.
    func testDropoutViewsTensorsAsBatchHeadsRowsColumns() throws {
        let p: Float = 0.5
        let dropout = try Dropout(probability: p)
        let matrix = try Tensor<Float>(shape: [4, 6], repeating: 1)
        let droppedMatrix = try dropout(matrix, training: true, seed: 7)
        for i in 0..<4 {
            for j in 0..<6 {
                let keeps = Philox.keeps(seed: 7, batch: 0, head: 0, row: i, column: j, probability: p)
                XCTAssertEqual(droppedMatrix[i, j], keeps ? 2 : 0)
            }
        }
        let rank5 = try Tensor<Float>(shape: [2, 3, 2, 2, 2], repeating: 1)
        let droppedRank5 = try dropout(rank5, training: true, seed: 7)
        for a in 0..<2 {
            for b in 0..<3 {
                for h in 0..<2 {
                    for i in 0..<2 {
                        for j in 0..<2 {
                            let keeps = Philox.keeps(seed: 7, batch: a * 3 + b, head: h, row: i, column: j, probability: p)
                            XCTAssertEqual(droppedRank5[a, b, h, i, j], keeps ? 2 : 0)
                        }
                    }
                }
            }
        }
    }

    func testDropoutRejectsProbabilitiesOutsideZeroToOne() {
        assertThrowsInvalidValue(argument: "dropoutProbability", actual: "1.0", try Dropout(probability: 1))
        assertThrowsInvalidValue(argument: "dropoutProbability", actual: "-0.1", try Dropout(probability: -0.1))
        assertThrowsInvalidValue(argument: "dropoutProbability", actual: "nan", try Dropout(probability: .nan))
    }

    /// Dropout on the oracle's weights [B, H, L, S], times V by hand, is what the
    /// kernel computes with the same probability and seed.
    func testDropoutOnReferenceWeightsDropsTheSameCellsAsTheKernel() throws {
        let (p, seed): (Float, UInt64) = (0.4, 2024)
        let (batch, heads, queryLength, keyLength, dim) = (2, 3, 5, 7, 4)
        let q = try Tensor<Float>.randomNormal([batch, heads, queryLength, dim], seed: 11)
        let k = try Tensor<Float>.randomNormal([batch, heads, keyLength, dim], seed: 12)
        let v = try Tensor<Float>.randomNormal([batch, heads, keyLength, dim], seed: 13)

        let weights = try Reference.scaledDotProductAttention(queries: q, keys: k, values: v).weights
        XCTAssertEqual(weights.shape, [batch, heads, queryLength, keyLength])
        let dropped = try Dropout(probability: p)(weights, training: true, seed: seed)
        var expected = try Tensor<Float>.zeros([batch, heads, queryLength, dim])
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<queryLength {
                    for d in 0..<dim {
                        var sum: Float = 0
                        for j in 0..<keyLength { sum += dropped[b, h, i, j] * v[b, h, j, d] }
                        expected[b, h, i, d] = sum
                    }
                }
            }
        }
        let fused = try scaledDotProductAttention(queries: q, keys: k, values: v, dropoutProbability: p, dropoutSeed: seed)
        assertClose(fused, expected, tolerance: 1e-5, "kernel vs Dropout(reference weights)·V")
        let referenceWithDropout = try Reference.scaledDotProductAttention(
            queries: q, keys: k, values: v, dropoutProbability: p, dropoutSeed: seed)
        assertClose(referenceWithDropout.weights, dropped, tolerance: 1e-6, "the oracle's own dropped weights")
        XCTAssertTrue(dropped.scalars.contains(0) && weights.scalars.allSatisfy { $0 > 0 }, "some weights dropped")
    }

    // MARK: MultiHeadAttention on both backends

    /// Runs `call` on the fused and the reference backend, asserts they agree, and
    /// returns the fused result.
    @discardableResult
    private func assertBackendsAgree(
        _ layer: MultiHeadAttention, tolerance: Float = 1e-5, _ message: String,
        file: StaticString = #filePath, line: UInt = #line,
        _ call: (MultiHeadAttention) throws -> Tensor<Float>
    ) throws -> Tensor<Float> {
        var fused = layer
        fused.backend = .fused
        var reference = layer
        reference.backend = .reference
        let fusedOutput = try call(fused)
        assertClose(fusedOutput, try call(reference), tolerance: tolerance, message, file: file, line: line)
        XCTAssertFalse(fusedOutput.scalars.contains { $0.isNaN }, "NaN in \(message)", file: file, line: line)
        return fusedOutput
    }

    func testSelfAttentionFusedMatchesReference() throws {
        let layer = try MultiHeadAttention(dIn: 16, dOut: 16, heads: 4, seed: 1)
        let x = try Tensor<Float>.randomNormal([2, 7, 16], seed: 10)
        let output = try assertBackendsAgree(layer, "self-attention") { try $0(x) }
        XCTAssertEqual(output.shape, [2, 7, 16])
        XCTAssertEqual(try layer(x), try layer(query: x, key: x, value: x), "layer(x) is layer(query: x, key: x, value: x)")
    }

    func testCrossAttentionWithOwnKeyAndValueFeatureSizesAndLengths() throws {
        let layer = try MultiHeadAttention(dIn: 12, dOut: 16, heads: 4, keyFeatures: 10, valueFeatures: 6, seed: 2)
        XCTAssertEqual(layer.key.weight.shape, [16, 10])
        XCTAssertEqual(layer.value.weight.shape, [16, 6])
        let query = try Tensor<Float>.randomNormal([2, 5, 12], seed: 20)
        let key = try Tensor<Float>.randomNormal([2, 9, 10], seed: 21)
        let value = try Tensor<Float>.randomNormal([2, 9, 6], seed: 22)
        let output = try assertBackendsAgree(layer, "cross-attention") { try $0(query: query, key: key, value: value) }
        XCTAssertEqual(output.shape, [2, 5, 16], "[batch, queryLength, dOut]")
    }

    /// Batch 0: no padding; batch 1: keys 3 and 4 are padding; batch 2: every key
    /// is padding, so its context is zero and each output row is the output bias.
    /// Padded keys carry NaN, which must have no effect.
    func testKeyPaddingHidesKeysAndAnAllPaddingRowGivesTheOutputBias() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 3)
        let outputBias = try XCTUnwrap(layer.outputProjection?.bias)
        let x = try Tensor<Float>.randomNormal([3, 5, 8], seed: 30)
        let padding = try Tensor<Bool>(shape: [3, 5], scalars: [
            false, false, false, false, false,
            false, false, false, true, true,
            true, true, true, true, true,
        ])
        var poisoned = x
        for (b, l) in [(1, 3), (1, 4)] + (0..<5).map({ (2, $0) }) {
            for d in 0..<8 { poisoned[b, l, d] = .nan }
        }
        let output = try assertBackendsAgree(layer, "key padding") {
            try $0(query: x, key: poisoned, value: poisoned, keyPaddingMask: padding)
        }
        for backend in [AttentionBackend.fused, .reference] {
            var run = layer
            run.backend = backend
            let clean = try run(query: x, key: x, value: x, keyPaddingMask: padding)
            let withNaN = try run(query: x, key: poisoned, value: poisoned, keyPaddingMask: padding)
            XCTAssertEqual(withNaN, clean, "NaN at padded keys has no effect on \(backend)")
            for i in 0..<5 {
                for d in 0..<8 {
                    XCTAssertEqual(withNaN[2, i, d], outputBias.scalars[d], "all-padding batch row \(i) on \(backend)")
                }
            }
        }
        // Padded keys are as if absent: batch 1 equals attention over its first 3 keys.
        let row1 = try Tensor(shape: [1, 5, 8], scalars: Array(x.scalars[40..<80]))
        let firstThreeKeys = try Tensor(shape: [1, 3, 8], scalars: Array(x.scalars[40..<64]))
        let shortened = try layer(query: row1, key: firstThreeKeys, value: firstThreeKeys)
        assertClose(try Tensor(shape: [1, 5, 8], scalars: Array(output.scalars[40..<80])), shortened, tolerance: 1e-6)
        // Batch 0 is untouched by the padding of the others.
        let row0 = try Tensor(shape: [1, 5, 8], scalars: Array(x.scalars[0..<40]))
        assertClose(try Tensor(shape: [1, 5, 8], scalars: Array(output.scalars[0..<40])), try layer(row0), tolerance: 1e-6)
    }

    func testCausalTopLeftAndBottomRightOnBothBackends() throws {
        let query = try Tensor<Float>.randomNormal([2, 4, 8], seed: 40)
        let keyValue = try Tensor<Float>.randomNormal([2, 7, 8], seed: 41)
        var outputs: [CausalAlignment: Tensor<Float>] = [:]
        for alignment in [CausalAlignment.topLeft, .bottomRight] {
            let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: alignment, seed: 4)
            outputs[alignment] = try assertBackendsAgree(layer, "causal \(alignment), Lq 4 < Lk 7") {
                try $0(query: query, key: keyValue, value: keyValue)
            }
            try assertBackendsAgree(layer, "causal \(alignment) self-attention") { try $0(keyValue) }
        }
        XCTAssertNotEqual(outputs[.topLeft], outputs[.bottomRight], "the alignments differ when Lq ≠ Lk")

        // Top-left: query 0 sees key 0 only, so keys 1... do not change its row.
        let topLeft = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, seed: 4)
        var changed = keyValue
        for l in 1..<7 { for d in 0..<8 { changed[0, l, d] += 1 } }
        let a = try topLeft(query: query, key: keyValue, value: keyValue)
        let b = try topLeft(query: query, key: changed, value: changed)
        XCTAssertEqual(Array(a.scalars[0..<8]), Array(b.scalars[0..<8]), "row 0 sees key 0 only")
        XCTAssertNotEqual(Array(a.scalars[8..<16]), Array(b.scalars[8..<16]), "row 1 sees key 1")
    }

    func testCausalAlignmentsAgreeForSquareAttentionAndBottomRightDecodeSeesEveryKey() throws {
        let x = try Tensor<Float>.randomNormal([2, 6, 8], seed: 42)
        let topLeft = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, seed: 4)
        let bottomRight = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .bottomRight, seed: 4)
        let unmasked = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 4)
        XCTAssertEqual(try topLeft(x), try bottomRight(x), "Lq = Lk: the same diagonal")
        let lastQuery = try Tensor(shape: [2, 1, 8], scalars: Array(x.scalars[40..<48]) + Array(x.scalars[88..<96]))
        assertClose(try bottomRight(query: lastQuery, key: x, value: x), try unmasked(query: lastQuery, key: x, value: x),
                    tolerance: 1e-6, "one query aligned bottom-right sees every key")
        let firstKey = try Tensor(shape: [2, 1, 8], scalars: Array(x.scalars[0..<8]) + Array(x.scalars[48..<56]))
        assertClose(try topLeft(query: lastQuery, key: x, value: x), try unmasked(query: lastQuery, key: firstKey, value: firstKey),
                    tolerance: 1e-6, "one query aligned top-left sees key 0 only")
    }

    /// kvHeads = 2 for 4 query heads; equals full attention with each key/value
    /// head repeated for the two query heads that share it.
    func testGroupedQueryAttentionEqualsRepeatedKeyValueHeads() throws {
        let grouped = try MultiHeadAttention(dIn: 16, dOut: 16, heads: 4, kvHeads: 2, seed: 5)
        XCTAssertEqual(grouped.kvHeads, 2)
        XCTAssertEqual(grouped.headDim, 4)
        XCTAssertEqual(grouped.key.weight.shape, [8, 16], "kvHeads · headDim rows")
        let x = try Tensor<Float>.randomNormal([2, 6, 16], seed: 50)
        let output = try assertBackendsAgree(grouped, "grouped-query") { try $0(x) }
        XCTAssertEqual(output.shape, [2, 6, 16])

        func repeatedHeads(_ weight: Tensor<Float>) throws -> Tensor<Float> {
            var rows: [Float] = []
            for h in 0..<4 {
                let kv = h / 2
                rows += weight.scalars[(kv * 4 * 16)..<((kv + 1) * 4 * 16)]
            }
            return try Tensor(shape: [16, 16], scalars: rows)
        }
        let full = try MultiHeadAttention(
            query: grouped.query, key: Linear(weight: repeatedHeads(grouped.key.weight)),
            value: Linear(weight: repeatedHeads(grouped.value.weight)), outputProjection: grouped.outputProjection, heads: 4)
        assertClose(output, try full(x), tolerance: 1e-6, "GQA vs repeated key/value heads")
    }

    /// An additive mask and key padding combine: padded keys get −∞ on top of the mask.
    func testAdditiveMaskCombinedWithKeyPadding() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 6)
        let query = try Tensor<Float>.randomNormal([2, 4, 8], seed: 60)
        let keyValue = try Tensor<Float>.randomNormal([2, 6, 8], seed: 61)
        let pattern: [Float] = [0, -1, 0.5, -.infinity, 2, 0]
        let additive = try Tensor<Float>(shape: [4, 6], scalars: (0..<24).map { pattern[($0 * 5) % 6] })
        let padding = try Tensor<Bool>(shape: [2, 6], scalars: [
            false, false, false, false, false, true,
            true, true, false, false, false, false,
        ])
        let combined = try assertBackendsAgree(layer, "additive mask + key padding") {
            try $0(query: query, key: keyValue, value: keyValue, keyPaddingMask: padding, mask: .additive(additive))
        }
        var folded = [Float]()
        for b in 0..<2 {
            for i in 0..<4 {
                for j in 0..<6 { folded.append(padding[b, j] ? -.infinity : additive[i, j]) }
            }
        }
        let foldedMask = try Tensor(shape: [2, 1, 4, 6], scalars: folded)
        assertClose(combined, try layer(query: query, key: keyValue, value: keyValue, mask: .additive(foldedMask)),
                    tolerance: 1e-6, "padding folded into the additive mask")

        // The same with a keep mask: logical and.
        let keep = additive.map { $0 != -.infinity }
        let keepCombined = try assertBackendsAgree(layer, "keep mask + key padding") {
            try $0(query: query, key: keyValue, value: keyValue, keyPaddingMask: padding, mask: .keep(keep))
        }
        let foldedKeep = foldedMask.map { $0 != -.infinity }
        assertClose(keepCombined, try layer(query: query, key: keyValue, value: keyValue, mask: .keep(foldedKeep)),
                    tolerance: 1e-6, "padding and-ed into the keep mask")
    }

    func testDropoutInTrainingDropsTheSameCellsOnBothBackends() throws {
        var layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, dropoutProbability: 0.3, seed: 7)
        layer.isTraining = true
        layer.dropoutSeed = 77
        let x = try Tensor<Float>.randomNormal([2, 10, 8], seed: 70)
        let training = try assertBackendsAgree(layer, tolerance: 1e-5 / 0.7, "dropout in training") { try $0(x) }
        var inference = layer
        inference.isTraining = false
        XCTAssertNotEqual(training, try inference(x), "dropout is active in training")

        // The weights in training are Dropout applied to the weights in inference.
        let trainingWeights = try layer.attentionWeights(query: x, key: x, value: x)
        let inferenceWeights = try inference.attentionWeights(query: x, key: x, value: x)
        XCTAssertEqual(trainingWeights.shape, [2, 2, 10, 10])
        let expected = try Dropout(probability: 0.3)(inferenceWeights, training: true, seed: 77)
        assertClose(trainingWeights, expected, tolerance: 1e-6, "per-head weights after dropout")
    }

    func testDropoutIsInactiveOutsideTrainingBitForBit() throws {
        var withDropout = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, dropoutProbability: 0.5, seed: 8)
        withDropout.dropoutSeed = 99
        let withoutDropout = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 8)
        XCTAssertFalse(withDropout.isTraining, "layers start in inference mode")
        let x = try Tensor<Float>.randomNormal([2, 5, 8], seed: 80)
        for backend in [AttentionBackend.fused, .reference] {
            var a = withDropout, b = withoutDropout
            a.backend = backend
            b.backend = backend
            XCTAssertEqual(try a(x), try b(x), "isTraining == false ignores dropout on \(backend)")
        }
    }

    /// Values of their own width (valueDim 6 ≠ headDim 4) with one key/value head
    /// for two query heads: the merged context is heads · valueDim = 12 wide.
    func testValueWidthOtherThanHeadDimWithGroupedQueries() throws {
        let layer = try MultiHeadAttention(
            query: Linear(inFeatures: 8, outFeatures: 8, seed: 1), key: Linear(inFeatures: 8, outFeatures: 4, seed: 2),
            value: Linear(inFeatures: 8, outFeatures: 6, seed: 3), outputProjection: Linear(inFeatures: 12, outFeatures: 5, seed: 4),
            heads: 2, kvHeads: 1)
        XCTAssertEqual(layer.headDim, 4)
        let x = try Tensor<Float>.randomNormal([2, 7, 8], seed: 110)
        let output = try assertBackendsAgree(layer, "valueDim 6, headDim 4, 2 heads on 1 kv head") { try $0(x) }
        XCTAssertEqual(output.shape, [2, 7, 5])
        assertThrowsInvalidShape(argument: "outputProjection.weight", actual: [5, 8], try MultiHeadAttention(
            query: layer.query, key: layer.key, value: layer.value,
            outputProjection: Linear(inFeatures: 8, outFeatures: 5, seed: 4), heads: 2, kvHeads: 1))
    }

    /// Zero-size inputs: no queries give no rows; no keys give a zero context, so
    /// every output row is the output projection's bias.
    func testZeroLengthQueriesAndKeys() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 12)
        let outputBias = try XCTUnwrap(layer.outputProjection?.bias)
        let query = try Tensor<Float>.randomNormal([2, 3, 8], seed: 120)
        let noKeys = try Tensor<Float>.zeros([2, 0, 8])
        for backend in [AttentionBackend.fused, .reference] {
            var run = layer
            run.backend = backend
            XCTAssertEqual(try run(noKeys).shape, [2, 0, 8], "no queries on \(backend)")
            let output = try run(query: query, key: noKeys, value: noKeys)
            XCTAssertEqual(output.shape, [2, 3, 8])
            XCTAssertEqual(output.scalars, Array((0..<6).map { _ in outputBias.scalars }.joined()), "no keys on \(backend)")
        }
    }

    /// NaN in a key that is not masked propagates to every query row of its batch
    /// (never hidden as 0); the other batch is untouched.
    func testNaNInAnUnmaskedKeyPropagates() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 13)
        let x = try Tensor<Float>.randomNormal([2, 4, 8], seed: 130)
        var poisoned = x
        poisoned[1, 2, 0] = .nan
        for backend in [AttentionBackend.fused, .reference] {
            var run = layer
            run.backend = backend
            let output = try run(query: x, key: poisoned, value: poisoned)
            XCTAssertTrue(output.scalars[32..<64].allSatisfy(\.isNaN), "batch 1 is NaN on \(backend)")
            XCTAssertEqual(Array(output.scalars[0..<32]), Array(try run(x).scalars[0..<32]), "batch 0 unaffected on \(backend)")
        }
    }

    func testUnbatchedInputGivesTheSameAsABatchOfOne() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 12, heads: 3, keyFeatures: 5, seed: 9)
        let query = try Tensor<Float>.randomNormal([4, 8], seed: 90)
        let key = try Tensor<Float>.randomNormal([6, 5], seed: 91)
        let value = try Tensor<Float>.randomNormal([6, 8], seed: 92)
        let padding = try Tensor<Bool>(shape: [1, 6], scalars: [false, false, true, false, false, true])
        for backend in [AttentionBackend.fused, .reference] {
            var run = layer
            run.backend = backend
            let unbatched = try run(query: query, key: key, value: value, keyPaddingMask: padding)
            XCTAssertEqual(unbatched.shape, [4, 12])
            let batched = try run(
                query: query.reshaped([1, 4, 8]), key: key.reshaped([1, 6, 5]), value: value.reshaped([1, 6, 8]),
                keyPaddingMask: padding)
            XCTAssertEqual(batched.shape, [1, 4, 12])
            XCTAssertEqual(try batched.reshaped([4, 12]), unbatched, "on \(backend)")
        }
    }

    // MARK: MultiHeadAttention errors

    func testHeadsMustDivideTheWidth() throws {
        assertThrowsInvalidValue(argument: "heads", actual: "4", try MultiHeadAttention(dIn: 8, dOut: 10, heads: 4))
        let query = try Linear(inFeatures: 3, outFeatures: 10, seed: 0)
        assertThrowsInvalidValue(argument: "heads", actual: "4", try MultiHeadAttention(
            query: query, key: query, value: query, outputProjection: nil, heads: 4))
        assertThrowsInvalidValue(argument: "heads", actual: "0", try MultiHeadAttention(dIn: 8, dOut: 8, heads: 0))
    }

    func testKeyValueHeadsMustDivideTheHeads() {
        assertThrowsInvalidValue(argument: "kvHeads", actual: "3", try MultiHeadAttention(dIn: 12, dOut: 12, heads: 4, kvHeads: 3))
    }

    func testCallErrorsNameTheArgumentAtFault() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, seed: 10)
        let x = try Tensor<Float>.randomNormal([2, 5, 8], seed: 100)

        // Key padding of the wrong shape.
        assertThrowsInvalidShape(argument: "keyPaddingMask", actual: [2, 4],
                                 try layer(query: x, key: x, value: x, keyPaddingMask: try Tensor(shape: [2, 4], repeating: false)))
        assertThrowsInvalidShape(argument: "keyPaddingMask", actual: [5],
                                 try layer(query: x, key: x, value: x, keyPaddingMask: try Tensor(shape: [5], repeating: false)))
        // Query and key batches differ.
        let threeBatches = try Tensor<Float>.randomNormal([3, 5, 8], seed: 101)
        assertThrowsInvalidShape(argument: "key", actual: [3, 5, 8], try layer(query: x, key: threeBatches, value: threeBatches))
        // Value length differs from key length.
        let shortValue = try Tensor<Float>.randomNormal([2, 4, 8], seed: 102)
        assertThrowsInvalidShape(argument: "value", actual: [2, 4, 8], try layer(query: x, key: x, value: shortValue))
        // Wrong feature size.
        assertThrowsInvalidShape(argument: "query", actual: [2, 5, 7], try layer(try Tensor(shape: [2, 5, 7], repeating: 0)))
        // A mask that cannot broadcast to [2, 2, 5, 5].
        assertThrowsInvalidShape(argument: "mask", actual: [3, 4],
                                 try layer(query: x, key: x, value: x, mask: .keep(try Tensor(shape: [3, 4], repeating: true))))
        assertThrowsInvalidShape(argument: "mask", actual: [3, 1, 5, 5],
                                 try layer(query: x, key: x, value: x, mask: .additive(try Tensor(shape: [3, 1, 5, 5], repeating: 0))))
        // A causal mask other than the layer's.
        assertThrowsInvalidValue(argument: "mask", actual: ".causal(bottomRight)",
                                 try layer(query: x, key: x, value: x, mask: .causal(.bottomRight)))
    }
}
