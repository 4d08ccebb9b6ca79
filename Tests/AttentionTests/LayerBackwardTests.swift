import XCTest
@testable import Attention

/// The layers' backward passes: `Linear` against its definition, each attention
/// layer's fused gradients against the oracle backend's and against finite
/// differences, grouped-query and cross-attention with key padding, and the
/// optimizers' steps.
final class LayerBackwardTests: XCTestCase {
    private func sum(_ a: Tensor<Float>, times b: Tensor<Float>) -> Double {
        zip(a.scalars, b.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    func testLinearBackwardIsTheProductOfItsDefinition() throws {
        let layer = try Linear(inFeatures: 70, outFeatures: 5, bias: true, seed: 3)
        let x = try Tensor<Float>.randomNormal([2, 67, 70], seed: 1)
        let dy = try Tensor<Float>.randomNormal([2, 67, 5], seed: 2)
        let g = try layer.backward(input: x, outputGradient: dy)
        let rows = 134
        for r in [0, 66, 133] {
            for i in [0, 33, 69] {
                var expected = 0.0
                for o in 0..<5 { expected += Double(dy.scalars[r * 5 + o]) * Double(layer.weight[o, i]) }
                XCTAssertEqual(Double(g.input.scalars[r * 70 + i]), expected, accuracy: 1e-5)
            }
        }
        for o in 0..<5 {
            for i in [0, 17, 69] {
                var expected = 0.0
                for r in 0..<rows { expected += Double(dy.scalars[r * 5 + o]) * Double(x.scalars[r * 70 + i]) }
                XCTAssertEqual(Double(g.parameters.weight[o, i]), expected, accuracy: 1e-4)
            }
            var bias = 0.0
            for r in 0..<rows { bias += Double(dy.scalars[r * 5 + o]) }
            XCTAssertEqual(Double(g.parameters.bias![o]), bias, accuracy: 1e-4)
        }
        XCTAssertThrowsError(try layer.backward(input: x, outputGradient: x))
    }

    /// Fused gradients vs the oracle backend's, for one layer configuration.
    private func assertBackendsAgree(_ fused: AttentionLayerGradients, _ reference: AttentionLayerGradients, tolerance: Float = 2e-4,
                                     file: StaticString = #filePath, line: UInt = #line) {
        let pairs: [(String, Tensor<Float>?, Tensor<Float>?)] = [
            ("input", fused.input, reference.input), ("query", fused.query, reference.query),
            ("key", fused.key, reference.key), ("value", fused.value, reference.value),
            ("W_q", fused.queryProjection.weight, reference.queryProjection.weight),
            ("W_k", fused.keyProjection.weight, reference.keyProjection.weight),
            ("W_v", fused.valueProjection.weight, reference.valueProjection.weight),
            ("W_o", fused.outputProjection?.weight, reference.outputProjection?.weight),
            ("b_o", fused.outputProjection?.bias, reference.outputProjection?.bias),
        ]
        for (name, a, b) in pairs {
            XCTAssertEqual(a == nil, b == nil, name, file: file, line: line)
            if let a, let b { assertClose(a, b, tolerance: tolerance, name, file: file, line: line) }
        }
    }

    func testMultiHeadAttentionGradientsMatchTheOracleWithGroupedQueriesCrossAttentionAndPadding() throws {
        var layer = try MultiHeadAttention(dIn: 12, dOut: 16, heads: 4, kvHeads: 2, causal: nil, qkvBias: true,
                                           keyFeatures: 10, valueFeatures: 10, seed: 5)
        let query = try Tensor<Float>.randomNormal([2, 66, 12], seed: 1)
        let keyValue = try Tensor<Float>.randomNormal([2, 70, 10], seed: 2)
        var padding = [Bool](repeating: false, count: 140)
        padding[69] = true
        padding[70 + 3] = true
        let mask = try Tensor(shape: [2, 70], scalars: padding)
        let dy = try Tensor<Float>.randomNormal([2, 66, 16], seed: 3)
        var results: [AttentionLayerGradients] = []
        for backend in [AttentionBackend.fused, .reference] {
            layer.backend = backend
            let (y, state) = try layer.forwardForTraining(query: query, key: keyValue, value: keyValue, keyPadding: .padding(mask))
            XCTAssertEqual(y, try layer(query: query, key: keyValue, value: keyValue, keyPadding: .padding(mask)))
            results.append(try layer.backward(state, outputGradient: dy))
        }
        XCTAssertNil(results[0].input)
        assertBackendsAgree(results[0], results[1])
        // A padded key gets no gradient through attention: its key input gradient row is zero.
        XCTAssertEqual(Array(results[0].key.scalars[(69 * 10)..<(70 * 10)]), [Float](repeating: 0, count: 10))
    }

    func testCausalLayersGradientsMatchTheOracleAndFiniteDifferences() throws {
        var layer = try CausalSelfAttention(dIn: 4, dOut: 3, contextLength: 8, seed: 2)
        let x = try Tensor<Float>.randomNormal([2, 5, 4], seed: 1)
        let dy = try Tensor<Float>.randomNormal([2, 5, 3], seed: 2)
        let (_, state) = try layer.forwardForTraining(x)
        let fused = try layer.backward(state, outputGradient: dy)
        layer.backend = .reference
        let (_, referenceState) = try layer.forwardForTraining(x)
        assertBackendsAgree(fused, try layer.backward(referenceState, outputGradient: dy), tolerance: 1e-5)
        // Finite differences of L = Σ y ∘ dy in the input and in W_k.
        let h: Float = 1e-2
        for index in [0, 7, 21, 39] {
            var plus = x.scalars, minus = x.scalars
            plus[index] += h
            minus[index] -= h
            let numeric = (sum(try layer(try Tensor(shape: x.shape, scalars: plus)), times: dy)
                           - sum(try layer(try Tensor(shape: x.shape, scalars: minus)), times: dy)) / Double(2 * h)
            XCTAssertEqual(Double(fused.input!.scalars[index]), numeric, accuracy: 2e-3 * max(1, abs(numeric)))
        }
        for index in [0, 5, 11] {
            func loss(_ delta: Float) throws -> Double {
                var weights = layer.key.weight.scalars
                weights[index] += delta
                let moved = try CausalSelfAttention(
                    query: layer.query, key: Linear(weight: Tensor(shape: layer.key.weight.shape, scalars: weights)),
                    value: layer.value, contextLength: 8)
                return sum(try moved(x), times: dy)
            }
            let numeric = (try loss(h) - loss(-h)) / Double(2 * h)
            XCTAssertEqual(Double(fused.keyProjection.weight.scalars[index]), numeric, accuracy: 2e-3 * max(1, abs(numeric)))
        }
    }

    func testSelfAttentionAndWrapperInputGradientsSumTheirParts() throws {
        let single = try SelfAttention(dIn: 5, dOut: 4, seed: 1)
        let x = try Tensor<Float>.randomNormal([6, 5], seed: 1)
        let (y, state) = try single.forwardForTraining(x)
        XCTAssertEqual(y.shape, [6, 4])
        let g = try single.backward(state, outputGradient: try .randomNormal([6, 4], seed: 2))
        XCTAssertEqual(g.input!.shape, [6, 5])
        for i in 0..<30 {
            XCTAssertEqual(g.input!.scalars[i], g.query.scalars[i] + g.key.scalars[i] + g.value.scalars[i], accuracy: 1e-6)
        }
        let wrapper = try MultiHeadAttentionWrapper(dIn: 5, dOut: 3, contextLength: 6, numHeads: 2, seed: 4)
        let dy = try Tensor<Float>.randomNormal([6, 6], seed: 3)
        let (_, wrapperState) = try wrapper.forwardForTraining(x)
        let wg = try wrapper.backward(wrapperState, outputGradient: dy)
        // Head 1 alone sees the right half of the output gradient.
        let (_, headState) = try wrapper.heads[1].forwardForTraining(x)
        var right = [Float]()
        for row in 0..<6 { right += dy.scalars[(row * 6 + 3)..<(row * 6 + 6)] }
        let head = try wrapper.heads[1].backward(headState, outputGradient: try Tensor(shape: [6, 3], scalars: right))
        XCTAssertEqual(wg.heads[1].queryProjection.weight, head.queryProjection.weight)
        XCTAssertEqual(wg.input.shape, [6, 5])
    }

    func testBackwardRejectsAnOutputGradientOfAnotherShape() throws {
        let layer = try MultiHeadAttention(dIn: 4, dOut: 4, heads: 2)
        let (_, state) = try layer.forwardForTraining(try .randomNormal([3, 4], seed: 1))
        XCTAssertThrowsError(try layer.backward(state, outputGradient: try .zeros([3, 5]))) {
            guard case let AttentionError.invalidShape(argument, _, actual) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "outputGradient")
            XCTAssertEqual(actual, [3, 5])
        }
    }

    func testSGDAndAdamStepsFollowTheirDefinitions() throws {
        var parameter = try Tensor<Float>(shape: [2], scalars: [1, -2])
        let gradient = try Tensor<Float>(shape: [2], scalars: [0.5, -1])
        var sgd = SGD(learningRate: 0.1)
        try sgd.update(&parameter, gradient: gradient, slot: 0)
        XCTAssertEqual(parameter.scalars, [0.95, -1.9])
        var adam = Adam(learningRate: 0.01)
        parameter = try Tensor(shape: [2], scalars: [1, -2])
        try adam.update(&parameter, gradient: gradient, slot: 0)
        // First step: m̂ = g, v̂ = g², so the step is lr · sign(g) (up to ε).
        XCTAssertEqual(parameter.scalars[0], 0.99, accuracy: 1e-6)
        XCTAssertEqual(parameter.scalars[1], -1.99, accuracy: 1e-6)
        XCTAssertThrowsError(try adam.update(&parameter, gradient: try .zeros([3]), slot: 0))
    }

    func testAdamStepsLowerTheLossOfAMultiHeadLayer() throws {
        var layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, seed: 1)
        let x = try Tensor<Float>.randomNormal([4, 10, 8], seed: 2)
        let target = try Tensor<Float>.randomNormal([4, 10, 8], seed: 3)
        var adam = Adam(learningRate: 0.01)
        func lossAndGradient() throws -> (Double, Tensor<Float>, AttentionForwardState) {
            let (y, state) = try layer.forwardForTraining(x)
            let diff = zip(y.scalars, target.scalars).map { $0 - $1 }
            return (diff.reduce(0.0) { $0 + Double($1 * $1) } / Double(diff.count),
                    Tensor(validShape: y.shape, scalars: diff.map { 2 * $0 / Float(diff.count) }), state)
        }
        let (initial, _, _) = try lossAndGradient()
        for _ in 0..<30 {
            let (_, dy, state) = try lossAndGradient()
            try layer.update(with: try layer.backward(state, outputGradient: dy), using: &adam)
        }
        let (final, _, _) = try lossAndGradient()
        XCTAssertLessThan(final, 0.9 * initial)
    }

    /// `batchFirst: false` ([length, batch, features], PyTorch's default layout):
    /// the same gradients as batch-first, in the input's layout.
    func testSequenceFirstLayoutGivesTheTransposedGradients() throws {
        var layer = try MultiHeadAttention(dIn: 6, dOut: 8, heads: 2, causal: .topLeft, seed: 3)
        let x = try Tensor<Float>.randomNormal([2, 5, 6], seed: 1)
        let dy = try Tensor<Float>.randomNormal([2, 5, 8], seed: 2)
        let (_, state) = try layer.forwardForTraining(x)
        let batchFirst = try layer.backward(state, outputGradient: dy)
        layer.batchFirst = false
        let (y, sequenceState) = try layer.forwardForTraining(x.swappingLeadingAxes())
        XCTAssertEqual(y.shape, [5, 2, 8])
        let sequenceFirst = try layer.backward(sequenceState, outputGradient: dy.swappingLeadingAxes())
        XCTAssertEqual(try XCTUnwrap(sequenceFirst.input), try XCTUnwrap(batchFirst.input).swappingLeadingAxes())
        XCTAssertEqual(sequenceFirst.queryProjection.weight, batchFirst.queryProjection.weight)
        XCTAssertThrowsError(try layer.backward(sequenceState, outputGradient: dy))
    }
}
