/// Self-attention without trainable weights: every token attends to every token
/// with the raw dot products as scores, `softmax(x·xᵀ)·x` (Raschka, "Build a
/// Large Language Model (From Scratch)", §3.3; scale 1 as in the book).
public struct SimpleSelfAttention: Sendable {
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend
    /// Worker threads for the fused kernel, ≥ 1; `nil` = the driver's default,
    /// ``AttentionThreading/defaultThreadCount``.
    public var threads: Int?

    /// A layer that runs on `backend` with `threads` workers.
    ///
    /// - Parameters:
    ///   - backend: `.fused` (the C kernel, default) or `.reference` (the oracle).
    ///   - threads: worker threads for the fused kernel, ≥ 1 (checked at each
    ///     call); `nil` = the driver's default
    ///     (``AttentionThreading/defaultThreadCount``).
    public init(backend: AttentionBackend = .fused, threads: Int? = nil) {
        self.backend = backend
        self.threads = threads
    }

    /// The context vectors.
    ///
    /// - Parameter input: `[batch, length, features]` or `[length, features]`.
    /// - Returns: the same shape: row i is Σ_j softmax_j(x_i·x_j)·x_j.
    /// - Throws: `AttentionError.invalidShape` naming `input` for another rank.
    public func callAsFunction(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return sequence.restoringRank(try problem.runMergingHeads(backend: backend, threads: threads))
    }

    /// The attention weights, from the oracle: `[batch, length, length]` (or
    /// `[length, length]` for an unbatched input). O(length²) memory; for inspection.
    ///
    /// - Parameter input: `[batch, length, features]` or `[length, features]`.
    /// - Returns: `softmax(x·xᵀ)` row by row; each row sums to 1.
    /// - Throws: `AttentionError.invalidShape` naming `input` for another rank.
    public func attentionWeights(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return try sequence.singleHeadWeights(of: problem)
    }

    private func prepare(_ input: Tensor<Float>) throws -> (SequenceBatch, AttentionProblem) {
        guard input.rank == 2 || input.rank == 3 else {
            throw AttentionError.invalidShape(argument: "input", expected: "[batch, length, features] or [length, features]", actual: input.shape)
        }
        let sequence = try SequenceBatch(input, argument: "input", features: input.shape.last ?? 0)
        let x = sequence.tensor
        let problem = AttentionProblem(
            projectedQueries: x, keys: x, values: x, queryHeads: 1, kvHeads: 1, scale: 1, causal: nil,
            dropoutProbability: 0, dropoutSeed: 0)
        return (sequence, problem)
    }
}
