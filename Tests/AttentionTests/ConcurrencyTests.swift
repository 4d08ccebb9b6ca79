import XCTest
@testable import Attention

/// Calls from concurrent Swift tasks: each gives the bits of the same call made
/// alone. The public types are value types whose stored properties are value types
/// (arrays of Sendable elements, enums, scalars), so their `Sendable` conformances
/// are checked by the compiler, not asserted; `requireSendable` below fails to
/// compile if one is lost.
final class ConcurrencyTests: XCTestCase {
    private func requireSendable<T: Sendable>(_: T.Type) {}

    func testPublicValueTypesAreSendable() {
        requireSendable(Tensor<Float>.self)
        requireSendable(Tensor<Bool>.self)
        requireSendable(AttentionMask.self)
        requireSendable(CausalAlignment.self)
        requireSendable(AttentionBackend.self)
        requireSendable(AttentionResult.self)
        requireSendable(ReferenceAttentionResult.self)
        requireSendable(AttentionError.self)
        requireSendable(Linear.self)
        requireSendable(Dropout.self)
        requireSendable(SimpleSelfAttention.self)
        requireSendable(SelfAttention.self)
        requireSendable(CausalSelfAttention.self)
        requireSendable(MultiHeadAttention.self)
        requireSendable(MultiHeadAttentionWrapper.self)
        requireSendable(SafetensorsFile.self)
        requireSendable(SafetensorsError.self)
    }

    /// One unit of work: the functional API on inputs of its own, or a
    /// MultiHeadAttention layer (masked, padded, in training for some).
    private struct Job: Sendable {
        var index: Int
        var queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>
        var mask: AttentionMask
        var layer: MultiHeadAttention
        var layerInput: Tensor<Float>
        var keyPadding: Tensor<Bool>?

        func run() throws -> [Float] {
            let attention = try scaledDotProductAttentionWithLogsumexp(
                queries: queries, keys: keys, values: values, mask: mask,
                dropoutProbability: index % 3 == 0 ? 0.2 : 0, dropoutSeed: UInt64(index))
            // A training call takes the next key of the layer's dropout stream
            // (shared by the copies of this job): every run replays call 0.
            var layer = layer
            layer.dropoutStream = DropoutStream(seed: layer.dropoutSeed)
            let layerOutput = try layer(query: layerInput, key: layerInput, value: layerInput, keyPadding: keyPadding.map(KeyPadding.padding))
            return attention.output.scalars + attention.logsumexp.scalars + layerOutput.scalars
        }
    }

    private func makeJobs() throws -> [Job] {
        try (0..<8).map { index in
            let seed = UInt64(index) * 16
            let (queryLength, keyLength) = (40 + 9 * index, 30 + 11 * index)  // across the 64-row tiles
            let masks: [AttentionMask] = [
                .none, .causal(.topLeft), .causal(.bottomRight),
                .keep(try Tensor(shape: [queryLength, keyLength], scalars: (0..<(queryLength * keyLength)).map { $0 % 5 != 2 })),
            ]
            var layer = try MultiHeadAttention(
                dIn: 16, dOut: 16, heads: 4, kvHeads: index % 2 == 0 ? 4 : 2, causal: index % 4 == 1 ? .topLeft : nil,
                dropoutProbability: 0.1, seed: seed)
            layer.isTraining = index % 2 == 1
            layer.dropoutSeed = seed
            let length = 20 + 7 * index
            return Job(
                index: index,
                queries: try .randomNormal([2, 4, queryLength, 16], seed: seed + 1),
                keys: try .randomNormal([2, 2, keyLength, 16], seed: seed + 2),
                values: try .randomNormal([2, 2, keyLength, 8], seed: seed + 3),
                mask: masks[index % masks.count], layer: layer,
                layerInput: try .randomNormal([2, length, 16], seed: seed + 4),
                keyPadding: index % 2 == 0 ? nil : try Tensor(shape: [2, length], scalars: (0..<(2 * length)).map { $0 % 6 == 5 }))
        }
    }

    /// Eight tasks in a TaskGroup, each calling scaledDotProductAttention and a
    /// MultiHeadAttention layer (OpenMP teams from several threads at once), give
    /// the bits of the same eight calls made one after the other.
    func testConcurrentCallsFromEightTasksGiveTheBitsOfSerialCalls() async throws {
        let jobs = try makeJobs()
        let serial = try jobs.map { try $0.run() }
        for round in 0..<2 {
            let concurrent = try await withThrowingTaskGroup(of: (Int, [Float]).self) { group in
                for job in jobs { group.addTask { (job.index, try job.run()) } }
                var results = [[Float]](repeating: [], count: jobs.count)
                for try await (index, result) in group { results[index] = result }
                return results
            }
            for index in jobs.indices {
                assertBitIdentical(concurrent[index], serial[index], "job \(index), round \(round)")
            }
        }
    }
}
