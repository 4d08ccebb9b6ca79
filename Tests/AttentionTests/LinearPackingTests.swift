import Dispatch
import XCTest
@testable import Attention

/// The packed copy of a `Linear` weight (made on the first 1–8 row call) never
/// serves a weight the layer no longer has: after every change the API allows
/// (an optimizer step on the layer, on a layer inside an attention layer, on one
/// of two copies) a few-row call has the bits of a 64-row call on the weight the
/// layer holds now; and one layer serves many threads at once.
final class LinearPackingTests: XCTestCase {
    private func bits(_ tensor: Tensor<Float>) -> [UInt32] { tensor.scalars.map(\.bitPattern) }

    /// Row `row` of a [rows, width] tensor, as [1, width].
    private func row(_ tensor: Tensor<Float>, _ row: Int) throws -> Tensor<Float> {
        let width = tensor.shape[1]
        return try Tensor(shape: [1, width], scalars: Array(tensor.scalars[(row * width)..<((row + 1) * width)]))
    }

    /// Asserts that a 1-row call of `layer` on each of the first rows of `x` has
    /// the bits of the same row in the 64-row call.
    private func assertFewRowsMatch(_ layer: Linear, _ x: Tensor<Float>, _ message: String, line: UInt = #line) throws {
        let full = try layer(x)
        for r in [0, 5] {
            XCTAssertEqual(bits(try layer(try row(x, r))), bits(try row(full, r)), "\(message), row \(r)", line: line)
        }
    }

    func testOptimizerStepsOnALayerAndOnOneOfTwoCopiesReachTheirOwnFewRowCalls() throws {
        var layer = try Linear(inFeatures: 33, outFeatures: 20, bias: true, seed: 11)
        let x = try Tensor<Float>.randomNormal([64, 33], seed: 12)
        let gradients = try layer.backward(input: x, outputGradient: try Tensor<Float>.randomNormal([64, 20], seed: 13))
        try assertFewRowsMatch(layer, x, "packed before any step")
        var adam = Adam(learningRate: 0.1)
        for step in 0..<3 {
            try layer.update(with: gradients.parameters, using: &adam)
            try assertFewRowsMatch(layer, x, "after Adam step \(step)")
        }
        // Copies share the packing until one of them changes its weight.
        let before = layer
        var copy = layer
        var sgd = SGD(learningRate: 1)
        try copy.update(with: gradients.parameters, using: &sgd)
        try assertFewRowsMatch(copy, x, "the stepped copy")
        try assertFewRowsMatch(layer, x, "the original")
        XCTAssertEqual(bits(try layer(try row(x, 0))), bits(try before(try row(x, 0))), "the original keeps its weight")
        XCTAssertNotEqual(bits(try copy(try row(x, 0))), bits(try layer(try row(x, 0))), "the copy's step changed its output")
    }

    /// A decoding loop (1-token steps through the KV cache, every projection
    /// a 1-row call), a training step, then decoding again: the second decode
    /// has the bits of the stepped layer's full forward, not of the old weights.
    func testDecodingAfterATrainingStepUsesTheSteppedProjections() throws {
        var layer = try MultiHeadAttention(dIn: 16, dOut: 16, heads: 2, causal: .topLeft, qkvBias: true, seed: 21)
        let input = try Tensor<Float>.randomNormal([1, 6, 16], seed: 22)
        func decodeOneTokenAtATime() throws -> [Float] {
            let cache = try KVCache(batch: 1, kvHeads: 2, headDim: 8, capacity: 6)
            var scalars: [Float] = []
            for t in 0..<6 {
                let token = try Tensor(shape: [1, 1, 16], scalars: Array(input.scalars[(t * 16)..<((t + 1) * 16)]))
                scalars += try layer(token, cache: cache).scalars
            }
            return scalars
        }
        let first = try decodeOneTokenAtATime()
        XCTAssertEqual(first.map(\.bitPattern), bits(try layer(input)), "decoding equals the full forward")
        let (output, state) = try layer.forwardForTraining(input)
        let gradients = try layer.backward(state, outputGradient: try Tensor<Float>.randomNormal(output.shape, seed: 23))
        var sgd = SGD(learningRate: 0.5)
        try layer.update(with: gradients, using: &sgd)
        let second = try decodeOneTokenAtATime()
        XCTAssertEqual(second.map(\.bitPattern), bits(try layer(input)), "decoding after the step equals the stepped full forward")
        XCTAssertNotEqual(second, first, "the step changed the output")
    }

    /// Many threads call one layer (not yet packed: they race to pack it) with
    /// 1–8 rows at once, while others step their own copies: every call has the
    /// bits of its rows in the 64-row call of the weight it was made with.
    func testOneLayerServesConcurrentFewRowCallsWhileCopiesAreStepped() throws {
        let layer = try Linear(inFeatures: 130, outFeatures: 70, bias: true, seed: 31)
        let x = try Tensor<Float>.randomNormal([64, 130], seed: 32)
        let full = try layer(x)
        let gradients = try layer.backward(input: x, outputGradient: try Tensor<Float>.randomNormal([64, 70], seed: 33))
        let results = UnsafeMutableBufferPointer<Bool>.allocate(capacity: 48)
        results.initialize(repeating: false)
        defer { results.deallocate() }
        let shared = UncheckedSendable(results)
        DispatchQueue.concurrentPerform(iterations: 48) { i in
            do {
                let rows = 1 + i % 8, first = i % (64 - rows)
                let slice = try Tensor(shape: [rows, 130], scalars: Array(x.scalars[(first * 130)..<((first + rows) * 130)]))
                if i % 3 == 2 {
                    var copy = layer
                    var sgd = SGD(learningRate: Float(i) / 100)
                    try copy.update(with: gradients.parameters, using: &sgd)
                    let copyFull = try copy(x)
                    shared.value[i] = try copy(slice, threads: 1 + i % 2).scalars.map(\.bitPattern)
                        == Array(copyFull.scalars[(first * 70)..<((first + rows) * 70)]).map(\.bitPattern)
                } else {
                    shared.value[i] = try layer(slice, threads: 1 + i % 3).scalars.map(\.bitPattern)
                        == Array(full.scalars[(first * 70)..<((first + rows) * 70)]).map(\.bitPattern)
                }
            } catch {
                shared.value[i] = false
            }
        }
        XCTAssertEqual(results.indices.filter { !results[$0] }, [], "calls whose bits differ")
    }

    /// A failed optimizer step (a layer with bias given no bias gradient) leaves
    /// the layer as it was: no half-stepped weight.
    func testAFailedStepChangesNothing() throws {
        var layer = try Linear(inFeatures: 9, outFeatures: 5, bias: true, seed: 41)
        let x = try Tensor<Float>.randomNormal([64, 9], seed: 42)
        var parameters = try layer.backward(input: x, outputGradient: try Tensor<Float>.randomNormal([64, 5], seed: 43)).parameters
        parameters.bias = nil
        let before = layer
        var sgd = SGD(learningRate: 1)
        XCTAssertThrowsError(try layer.update(with: parameters, using: &sgd))
        XCTAssertEqual(bits(layer.weight), bits(before.weight), "weight unchanged")
        try assertFewRowsMatch(layer, x, "after the failed step")
        // The same in an attention layer: a missing output-projection gradient
        // (checked last before) leaves W_q, W_k, W_v unstepped too.
        var attention = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, seed: 44)
        let input = try Tensor<Float>.randomNormal([1, 5, 8], seed: 45)
        let (output, state) = try attention.forwardForTraining(input)
        var layerGradients = try attention.backward(state, outputGradient: try Tensor<Float>.randomNormal(output.shape, seed: 46))
        layerGradients.outputProjection = nil
        let unchanged = attention
        XCTAssertThrowsError(try attention.update(with: layerGradients, using: &sgd))
        for (now, was) in [(attention.query, unchanged.query), (attention.key, unchanged.key), (attention.value, unchanged.value)] {
            XCTAssertEqual(bits(now.weight), bits(was.weight), "projection weight unchanged")
        }
        XCTAssertEqual(bits(try attention(input)), bits(try unchanged(input)))
    }
}
