/// Self-attention with trainable weights: `softmax(Q·Kᵀ/√dOut)·V` with
/// `Q = x·W_qᵀ`, `K = x·W_kᵀ`, `V = x·W_vᵀ` (Raschka, "Build a Large Language
/// Model (From Scratch)", §3.4, `SelfAttention_v2`; Vaswani et al. 2017, eq. 1).
public struct SelfAttention: Sendable {
    var projections: QKVProjections
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend = .fused
    /// Threads for the fused kernel; `nil` = `AttentionThreading.defaultThreadCount` (OpenMP's default under OpenMP, the active processors under Dispatch).
    public var threads: Int?

    /// The query projection W_q, `weight [dOut, dIn]`.
    public var query: Linear { projections.query }
    /// The key projection W_k, `weight [dOut, dIn]`.
    public var key: Linear { projections.key }
    /// The value projection W_v, `weight [dOut, dIn]`.
    public var value: Linear { projections.value }
    /// The number of trainable numbers.
    public var parameterCount: Int { projections.parameterCount }

    /// A layer from explicit projections (PyTorch `nn.Linear` layout `[out, in]`).
    ///
    /// - Throws: `AttentionError.invalidShape` if query and key widths differ.
    public init(query: Linear, key: Linear, value: Linear) throws {
        projections = try QKVProjections(query: query, key: key, value: value, heads: 1, kvHeads: 1, selfAttention: true)
    }

    /// A freshly initialised layer (PyTorch's `nn.Linear` initialisation, seeded).
    /// `seed` keys this package's SplitMix64 generator, not `torch.manual_seed`:
    /// the book's exact weights are bundled in `AttentionExamples` (`BookChapter3.load()`).
    ///
    /// W_q, W_k and W_v are matrices 0, 1 and 2 of the parameter stream keyed by
    /// `seed` (Philox-4x32-10, one place per matrix): layers built with different
    /// seeds share no matrix, and the three differ from each other.
    ///
    /// - Parameters:
    ///   - dIn: input features.
    ///   - dOut: width of the query, key and value vectors.
    ///   - qkvBias: whether the projections have a bias (the book: no).
    ///   - seed: the key of the parameter stream (not `torch.manual_seed`).
    /// - Throws: `AttentionError.invalidValue` for a negative size.
    public init(dIn: Int, dOut: Int, qkvBias: Bool = false, seed: UInt64 = 0) throws {
        try self.init(
            query: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: ParameterStream(seed: seed), matrix: 0),
            key: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: ParameterStream(seed: seed), matrix: 1),
            value: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: ParameterStream(seed: seed), matrix: 2))
    }

    /// The context vectors.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: `[batch, length, dOut]` (or `[length, dOut]`).
    /// - Throws: `AttentionError.invalidShape` naming `input`.
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
        let sequence = try SequenceBatch(input, argument: "input", projection: projections.query, weightName: "query.weight")
        let problem = try projections.problem(
            queryInput: sequence, keyInput: sequence, valueInput: sequence, causal: nil,
            dropoutProbability: 0, dropoutSeed: 0, threads: threads)
        return (sequence, problem)
    }
}
