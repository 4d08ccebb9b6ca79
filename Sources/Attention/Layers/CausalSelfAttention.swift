/// Causal self-attention: token i attends to tokens j ≤ i only, with dropout on
/// the attention weights in training (Raschka, "Build a Large Language Model
/// (From Scratch)", §3.5, `CausalAttention`).
///
/// The causal mask is PyTorch's `is_causal` (top-left aligned); dropout is
/// inverted dropout on the weights, its cells chosen by Philox keyed by
/// `dropoutSeed` (see `Dropout`), active only while `isTraining` is `true`.
public struct CausalSelfAttention: Sendable {
    var projections: QKVProjections
    /// The longest input this layer accepts (the size of the book's mask buffer).
    public let contextLength: Int
    /// Probability of dropping an attention weight in training, in [0, 1).
    public let dropoutProbability: Float
    /// Dropout applies only while this is `true` (PyTorch's `module.train()`).
    public var isTraining = false
    /// The key of the dropout generator; change it between training steps.
    public var dropoutSeed: UInt64 = 0
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend = .fused
    /// Threads for the fused kernel; `nil` = OpenMP's default.
    public var threads: Int?

    /// W_q, `weight [dOut, dIn]`.
    public var query: Linear { projections.query }
    /// W_k, `weight [dOut, dIn]`.
    public var key: Linear { projections.key }
    /// W_v, `weight [dOut, dIn]`.
    public var value: Linear { projections.value }
    /// The number of trainable numbers.
    public var parameterCount: Int { projections.parameterCount }

    /// A layer from explicit projections.
    ///
    /// - Throws: `AttentionError.invalidShape` if the widths do not fit,
    ///   `AttentionError.invalidValue` for a negative `contextLength` or a dropout
    ///   probability outside [0, 1).
    public init(query: Linear, key: Linear, value: Linear, contextLength: Int, dropoutProbability: Float = 0) throws {
        guard contextLength >= 0 else {
            throw AttentionError.invalidValue(argument: "contextLength", expected: "a non-negative length", actual: "\(contextLength)")
        }
        try AttentionProblem.checkDropout(dropoutProbability)
        projections = try QKVProjections(query: query, key: key, value: value, heads: 1, kvHeads: 1, selfAttention: true)
        self.contextLength = contextLength
        self.dropoutProbability = dropoutProbability
    }

    /// A freshly initialised layer (PyTorch's `nn.Linear` initialisation, seeded).
    ///
    /// - Throws: as `init(query:key:value:contextLength:dropoutProbability:)`.
    public init(dIn: Int, dOut: Int, contextLength: Int, dropoutProbability: Float = 0, qkvBias: Bool = false, seed: UInt64 = 0) throws {
        try self.init(
            query: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, seed: seed),
            key: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, seed: seed &+ 1),
            value: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, seed: seed &+ 2),
            contextLength: contextLength, dropoutProbability: dropoutProbability)
    }

    /// The context vectors.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`, `length ≤ contextLength`.
    /// - Returns: `[batch, length, dOut]` (or `[length, dOut]`).
    /// - Throws: `AttentionError.invalidShape` naming `input`,
    ///   `AttentionError.sequenceTooLong` if `length > contextLength`.
    public func callAsFunction(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return sequence.restoringRank(try problem.runMergingHeads(backend: backend, threads: threads))
    }

    /// The attention weights (after the causal mask, and dropout in training),
    /// from the oracle: `[batch, length, length]` (or `[length, length]`).
    ///
    /// - Throws: as `callAsFunction(_:)`.
    public func attentionWeights(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input)
        return try sequence.singleHeadWeights(of: problem)
    }

    func prepare(_ input: Tensor<Float>) throws -> (SequenceBatch, AttentionProblem) {
        let sequence = try SequenceBatch(input, argument: "input", features: projections.query.inFeatures)
        try checkContextLength(sequence.length, contextLength: contextLength, argument: "input")
        let problem = try projections.problem(
            queryInput: sequence, keyInput: sequence, valueInput: sequence, causal: .topLeft,
            dropoutProbability: isTraining ? dropoutProbability : 0, dropoutSeed: dropoutSeed, threads: threads)
        return (sequence, problem)
    }
}
