/// Self-attention with trainable weights: `softmax(Q·Kᵀ/√dOut)·V` with
/// `Q = x·W_qᵀ`, `K = x·W_kᵀ`, `V = x·W_vᵀ` (Raschka, "Build a Large Language
/// Model (From Scratch)", §3.4, `SelfAttention_v2`; Vaswani et al. 2017, eq. 1).
public struct SelfAttention: Sendable {
    var projections: QKVProjections
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend = .fused
    /// Worker threads for the fused kernel (and the projections), ≥ 1; `nil` = the driver's default,
    /// ``AttentionThreading/defaultThreadCount``.
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
    /// - Parameters:
    ///   - query: W_q, `weight [dOut, dIn]`.
    ///   - key: W_k, `weight [dOut, dIn]`: the same width as `query`.
    ///   - value: W_v, `weight [dValue, dIn]`; `dValue` is the output width.
    /// - Throws: `AttentionError.invalidShape` naming the weight that does not
    ///   fit (`query.weight`, `key.weight` or `value.weight`, with the expected
    ///   and actual shapes) if the projections do not read the same `dIn` or
    ///   query and key widths differ; one stored `[in, out]` is named, with the
    ///   suggestion to pass `weight.transposed()`.
    public init(query: Linear, key: Linear, value: Linear) throws {
        projections = try QKVProjections(query: query, key: key, value: value, heads: 1, kvHeads: 1, selfAttention: true)
    }

    /// A freshly initialised layer (PyTorch's `nn.Linear` initialisation, seeded).
    ///
    /// W_q, W_k and W_v are matrices 0, 1 and 2 of the parameter stream keyed by
    /// `seed` (Philox-4x32-10, one place per matrix): layers built with different
    /// seeds share no matrix, and the three differ from each other. `seed` is not
    /// `torch.manual_seed`: the book's exact weights are bundled in
    /// `AttentionExamples` (`BookChapter3.load()`); load those, or a checkpoint's,
    /// with ``init(query:key:value:)``.
    ///
    /// - Parameters:
    ///   - dIn: input features, the size of the input's last dimension.
    ///   - dOut: width of the query, key and value vectors, and of the output.
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
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: `softmax(Q·Kᵀ/√dOut)` row by row; each row sums to 1.
    /// - Throws: as ``callAsFunction(_:)``; `AttentionError.insufficientMemory`
    ///   if the matrix cannot be allocated.
    public func attentionWeights(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return try sequence.singleHead(.weights, of: problem, backend: backend, threads: threads)
    }

    /// The attention scores before softmax, `[batch, length, length]` (or
    /// `[length, length]`): the scaled dot products, from the
    /// same float32 path as ``attentionWeights(_:)`` (the oracle's on `.reference`).
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: the scores, one `length × length` matrix per batch entry.
    /// - Throws: as ``attentionWeights(_:)``.
    public func attentionScores(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return try sequence.singleHead(.scores, of: problem, backend: backend, threads: threads)
    }

    func prepare(_ input: Tensor<Float>) throws -> (SequenceBatch, AttentionProblem) {
        let sequence = try SequenceBatch(input, argument: "input", projection: projections.query, weightName: "query.weight")
        let problem = try projections.problem(
            queryInput: sequence, keyInput: sequence, valueInput: sequence, causal: nil,
            dropoutProbability: 0, dropoutSeed: 0, threads: threads)
        return (sequence, problem)
    }
}
