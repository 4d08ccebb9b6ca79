/// Self-attention without trainable weights: every token attends to every token
/// with the raw dot products as scores, `softmax(x·xᵀ)·x` (Raschka, "Build a
/// Large Language Model (From Scratch)", §3.3; scale 1 as in the book).
public struct SimpleSelfAttention: Sendable {
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend
    /// Threads for the fused kernel; `nil` = `AttentionThreading.defaultThreadCount` (OpenMP's default under OpenMP, the active processors under Dispatch).
    public var threads: Int?

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

    /// The attention weights, `[batch, length, length]` (or
    /// `[length, length]` for an unbatched input).
    ///
    /// On `.fused` from the float32 path (`scaledDotProductAttentionWeights`:
    /// the kernel's logsumexp, then `exp(s − logsumexp)` tile by tile), about the
    /// cost of a forward call; on `.reference` from the float64 oracle.
    /// O(length²) memory.
    ///
    /// - Throws: as `callAsFunction(_:)`; `AttentionError.insufficientMemory`
    ///   if the matrix cannot be allocated.
    public func attentionWeights(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return try sequence.singleHead(.weights, of: problem, backend: backend, threads: threads)
    }

    /// The attention scores before softmax, `[batch, length, length]` (or
    /// `[length, length]`): the scaled dot products, from the
    /// same float32 path as ``attentionWeights(_:)`` (the oracle's on `.reference`).
    ///
    /// - Throws: as ``attentionWeights(_:)``.
    public func attentionScores(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return try sequence.singleHead(.scores, of: problem, backend: backend, threads: threads)
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
