import XCTest
@testable import Attention

/// Dropout that advances (issue 11, item 4): each layer owns a dropout stream,
/// successive training calls drop different cells, layers with the default
/// seed drop different cells from each other, the whole sequence reproduces
/// from the seeds, and the fused kernel and the oracle drop the same cells for
/// the same call, whose key is exposed (`lastDropoutKey`) and replayable.
final class DropoutStreamTests: XCTestCase {
    private let x = try! Tensor<Float>.randomNormal([2, 9, 8], seed: 1)

    private func trainingMHA(seed: UInt64 = 3) throws -> MultiHeadAttention {
        var layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, dropoutProbability: 0.5, seed: seed)
        layer.isTraining = true
        return layer
    }

    func testSuccessiveTrainingCallsDropDifferentCells() throws {
        let mha = try trainingMHA()
        let first = try mha(x), second = try mha(x), third = try mha(x)
        XCTAssertNotEqual(first, second)
        XCTAssertNotEqual(second, third)
        XCTAssertEqual(mha.dropoutStream.position, 3, "three training calls")

        var causal = try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 9, dropoutProbability: 0.5, seed: 1)
        causal.isTraining = true
        XCTAssertNotEqual(try causal(x), try causal(x))

        var wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 9, numHeads: 2, dropoutProbability: 0.5, seed: 1)
        wrapper.isTraining = true
        XCTAssertNotEqual(try wrapper(x), try wrapper(x))

        let dropout = try Dropout(probability: 0.5)
        let ones = try Tensor<Float>(shape: [4, 16], repeating: 1)
        XCTAssertNotEqual(try dropout(ones, training: true), try dropout(ones, training: true))
        XCTAssertEqual(try dropout(ones, training: false), ones, "inference takes no key")
        XCTAssertEqual(dropout.stream.position, 2)
    }

    func testLayersWithTheDefaultSeedDropDifferentCells() throws {
        let a = try trainingMHA(), b = try trainingMHA()  // same weights, default dropout seeds
        XCTAssertEqual(a.query.weight, b.query.weight)
        XCTAssertNotEqual(a.dropoutSeed, b.dropoutSeed)
        XCTAssertNotEqual(try a(x), try b(x))
        let seeds = (0..<50).map { _ in DropoutStream.nextDefaultSeed() }
        XCTAssertEqual(Set(seeds).count, 50)
        let heads = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 9, numHeads: 3).heads
        XCTAssertEqual(Set(heads.map(\.dropoutSeed)).count, 3, "the wrapper's heads too")
    }

    func testTheWholeSequenceReproducesFromTheSeeds() throws {
        func run() throws -> [Tensor<Float>] {
            var layer = try trainingMHA()
            layer.dropoutSeed = 2024
            return try (0..<4).map { _ in try layer(x) }
        }
        XCTAssertEqual(try run(), try run())
        var wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 9, numHeads: 2, dropoutProbability: 0.5, seed: 1)
        wrapper.isTraining = true
        wrapper.setDropoutSeed(5)
        let first = try (0..<3).map { _ in try wrapper(x) }
        wrapper.setDropoutSeed(5)
        XCTAssertEqual(try (0..<3).map { _ in try wrapper(x) }, first)
        XCTAssertNotEqual(wrapper.heads[0].dropoutSeed, wrapper.heads[1].dropoutSeed)
        // Keys: call 0 is the seed; no key repeats over seeds 0…9 and calls 0…9.
        XCTAssertEqual(DropoutStream.key(seed: 42, call: 0), 42)
        let keys = (UInt64(0)..<10).flatMap { seed in (UInt64(0)..<10).map { DropoutStream.key(seed: seed, call: $0) } }
        XCTAssertEqual(Set(keys).count, 100)
    }

    func testFusedAndOracleDropTheSameCellsForTheSameCallAndACallReplays() throws {
        var layer = try trainingMHA()
        layer.dropoutSeed = 11
        _ = try layer(x)
        let fused = try layer(x)  // call 1
        let key = try XCTUnwrap(layer.lastDropoutKey)
        XCTAssertEqual(key, DropoutStream.key(seed: 11, call: 1))
        // The weights of that call (the last training call's key) on both backends.
        let fusedWeights = try layer.attentionWeights(query: x, key: x, value: x)
        XCTAssertEqual(layer.dropoutStream.position, 2, "inspection takes no key")
        var oracle = layer
        oracle.backend = .reference  // a stream of its own, at the same position
        let oracleWeights = try oracle.attentionWeights(query: x, key: x, value: x)
        XCTAssertEqual(fusedWeights.scalars.map { $0 == 0 }, oracleWeights.scalars.map { $0 == 0 }, "the same dropped cells")
        assertClose(fusedWeights, oracleWeights, tolerance: 1e-5 / 0.5)
        // Replay call 1 on the oracle and on the fused kernel.
        oracle.dropoutStream.position = 1
        assertClose(try oracle(x), fused, tolerance: 1e-5 / 0.5, "oracle, call 1")
        layer.dropoutStream.position = 1
        XCTAssertEqual(try layer(x), fused, "fused replay, bit for bit")
        // And through the functional API with the exposed key.
        let inference = { () -> MultiHeadAttention in var l = layer; l.isTraining = false; return l }()
        let plain = try inference.attentionWeights(query: x, key: x, value: x)
        let dropped = try Dropout(probability: 0.5)(plain, training: true, seed: key)
        assertClose(fusedWeights, dropped, tolerance: 1e-6, "Dropout with the call's key")
    }

    func testDropoutProbabilityIsSettableAndCheckedAtTheCall() throws {
        var layer = try trainingMHA()
        layer.dropoutProbability = 0
        var inference = layer
        inference.isTraining = false
        XCTAssertEqual(try layer(x), try inference(x), "p = 0 drops nothing")
        layer.dropoutProbability = 1.5
        XCTAssertThrowsError(try layer(x)) { error in
            guard case let .invalidValue(argument, _, actual)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(argument, "dropoutProbability")
            XCTAssertEqual(actual, "1.5")
        }
        var causal = try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 9, seed: 1)
        causal.isTraining = true
        causal.dropoutProbability = 0.9
        XCTAssertNoThrow(try causal(x), "0.9 is a valid probability")
        causal.dropoutProbability = -0.1
        XCTAssertThrowsError(try causal(x))
        var wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 9, numHeads: 2)
        wrapper.dropoutProbability = 0.25
        XCTAssertEqual(wrapper.heads.map(\.dropoutProbability), [0.25, 0.25])
        var dropout = try Dropout(probability: 0.1)
        dropout.probability = 1
        XCTAssertThrowsError(try dropout(x, training: true))
    }
}
