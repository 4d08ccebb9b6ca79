/// Causal self-attention: token i attends to tokens j ≤ i only, with dropout on
/// the attention weights in training (Raschka, "Build a Large Language Model
/// (From Scratch)", §3.5, `CausalAttention`).
///
/// The causal mask is PyTorch's `is_causal` (top-left aligned); dropout is
/// inverted dropout on the weights, active only while `isTraining` is `true`,
/// its cells chosen by Philox keyed by the call's key from `dropoutStream`, which
/// advances with every training call (see `DropoutStream`).
public struct CausalSelfAttention: Sendable {
    var projections: QKVProjections
    /// The longest input this layer accepts (the size of the book's mask buffer).
    public let contextLength: Int
    /// Probability of dropping an attention weight in training, in [0, 1);
    /// settable (a value outside the range makes the next call throw
    /// `AttentionError.invalidValue` naming `dropoutProbability`).
    public var dropoutProbability: Float { didSet { dropoutStream = dropoutStream.copy() } }
    /// Dropout applies only while this is `true` (PyTorch's `module.train()`).
    public var isTraining = false { didSet { dropoutStream = dropoutStream.copy() } }
    /// The stream of dropout keys: each training call takes the next key, so
    /// successive calls drop different cells (see `DropoutStream` for the keys,
    /// sharing between copies and how to replay a call). By default its seed is
    /// `DropoutStream.nextDefaultSeed()`, different for every layer made.
    public var dropoutStream = DropoutStream(seed: DropoutStream.nextDefaultSeed())
    /// The seed of the dropout stream, the key of its call 0; setting it gives
    /// this layer a new stream of its own, at call 0.
    public var dropoutSeed: UInt64 {
        get { dropoutStream.seed }
        set { dropoutStream = DropoutStream(seed: newValue) }
    }
    /// The dropout key of the most recent training call (nil before the first):
    /// `scaledDotProductAttention(…, dropoutSeed: key)` and the oracle drop the
    /// same cells.
    public var lastDropoutKey: UInt64? { dropoutStream.lastKey }
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend = .fused { didSet { dropoutStream = dropoutStream.copy() } }
    /// Worker threads for the fused kernel (and the projections), ≥ 1; `nil` = the driver's default,
    /// ``AttentionThreading/defaultThreadCount``.
    public var threads: Int? { didSet { dropoutStream = dropoutStream.copy() } }

    /// W_q, `weight [dOut, dIn]`.
    public var query: Linear { projections.query }
    /// W_k, `weight [dOut, dIn]`.
    public var key: Linear { projections.key }
    /// W_v, `weight [dOut, dIn]`.
    public var value: Linear { projections.value }
    /// The number of trainable numbers.
    public var parameterCount: Int { projections.parameterCount }

    /// A layer from explicit projections (PyTorch `nn.Linear` layout `[out, in]`).
    ///
    /// - Parameters:
    ///   - query: W_q, `weight [dOut, dIn]`.
    ///   - key: W_k, `weight [dOut, dIn]`: the same width as `query`.
    ///   - value: W_v, `weight [dValue, dIn]`; `dValue` is the output width.
    ///   - contextLength: the longest input accepted, ≥ 0 (the book's mask buffer
    ///     size).
    ///   - dropoutProbability: probability in [0, 1) of dropping an attention
    ///     weight while ``isTraining``.
    /// - Throws: `AttentionError.invalidShape` naming the weight whose width
    ///   does not fit (a weight stored `[in, out]` with the suggestion to pass
    ///   `weight.transposed()`), `AttentionError.invalidValue` for a negative `contextLength` or a dropout
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

    /// A freshly initialised layer (PyTorch's `nn.Linear` initialisation, seeded),
    /// the book's `CausalAttention(d_in, d_out, context_length, dropout, qkv_bias)`.
    ///
    /// W_q, W_k and W_v are matrices 0, 1 and 2 of the parameter stream keyed by
    /// `seed` (Philox-4x32-10, one place per matrix): layers built with different
    /// seeds share no matrix, and the three differ from each other. `seed` is not
    /// `torch.manual_seed`: the book's exact weights are bundled in
    /// `AttentionExamples` (`BookChapter3.load()`); load those, or a checkpoint's,
    /// with ``init(query:key:value:contextLength:dropoutProbability:)``.
    ///
    /// - Parameters:
    ///   - dIn: input features, the size of the input's last dimension.
    ///   - dOut: width of the query, key and value vectors, and of the output.
    ///   - contextLength: the longest input accepted, ≥ 0.
    ///   - dropoutProbability: probability in [0, 1) of dropping an attention
    ///     weight while ``isTraining``.
    ///   - qkvBias: whether the projections have a bias (the book: no).
    ///   - seed: the key of the parameter stream.
    /// - Throws: `AttentionError.invalidValue` for a negative size, as
    ///   ``init(query:key:value:contextLength:dropoutProbability:)`` otherwise.
    public init(dIn: Int, dOut: Int, contextLength: Int, dropoutProbability: Float = 0, qkvBias: Bool = false, seed: UInt64 = 0) throws {
        try self.init(
            dIn: dIn, dOut: dOut, contextLength: contextLength, dropoutProbability: dropoutProbability, qkvBias: qkvBias,
            parameters: ParameterStream(seed: seed), firstMatrix: 0)
    }

    /// A layer whose W_q, W_k, W_v are matrices `firstMatrix`, `+ 1`, `+ 2` of `parameters`.
    init(
        dIn: Int, dOut: Int, contextLength: Int, dropoutProbability: Float, qkvBias: Bool,
        parameters: ParameterStream, firstMatrix: Int
    ) throws {
        try self.init(
            query: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: parameters, matrix: firstMatrix),
            key: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: parameters, matrix: firstMatrix + 1),
            value: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: parameters, matrix: firstMatrix + 2),
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

    /// The attention weights (after the causal mask, and dropout in training: the cells of the last training call, see `lastDropoutKey`), `[batch, length, length]` (or
    /// `[length, length]` for an unbatched input).
    ///
    /// On `.fused` from the float32 path (`scaledDotProductAttentionWeights`:
    /// the kernel's logsumexp, then `exp(s − logsumexp)` tile by tile), about the
    /// cost of a forward call; on `.reference` from the float64 oracle.
    /// O(length²) memory.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`, `length ≤ contextLength`.
    /// - Returns: the weights; zero above the diagonal, rows sum to 1 (to
    ///   1/(1 − p) on average with dropout in training).
    /// - Throws: as ``callAsFunction(_:)``; `AttentionError.insufficientMemory`
    ///   if the matrix cannot be allocated.
    public func attentionWeights(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input, forWeights: true)
        return try sequence.singleHead(.weights, of: problem, backend: backend, threads: threads)
    }

    /// The attention scores before softmax, `[batch, length, length]` (or
    /// `[length, length]`): the scaled dot products with −∞ above the diagonal (the causal mask), from the
    /// same float32 path as ``attentionWeights(_:)`` (the oracle's on `.reference`).
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`, `length ≤ contextLength`.
    /// - Returns: the scores, one `length × length` matrix per batch entry.
    /// - Throws: as ``attentionWeights(_:)``.
    public func attentionScores(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(input, forWeights: true)
        return try sequence.singleHead(.scores, of: problem, backend: backend, threads: threads)
    }

    /// The problem of one call; a training forward call (`forWeights` false)
    /// takes the next dropout key.
    func prepare(_ input: Tensor<Float>, forWeights: Bool = false) throws -> (SequenceBatch, AttentionProblem) {
        try AttentionProblem.checkDropout(dropoutProbability)
        let sequence = try SequenceBatch(input, argument: "input", projection: projections.query, weightName: "query.weight")
        try checkContextLength(sequence.length, contextLength: contextLength, argument: "input")
        var problem = try projections.problem(
            queryInput: sequence, keyInput: sequence, valueInput: sequence, causal: .topLeft,
            dropoutProbability: isTraining ? dropoutProbability : 0, dropoutSeed: 0, threads: threads)
        if isTraining { problem.dropoutSeed = dropoutStream.key(advancing: !forWeights) }
        return (sequence, problem)
    }
}
