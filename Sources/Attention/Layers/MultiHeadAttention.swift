/// Multi-head attention: the inputs are projected once, split into `heads`
/// heads of `headDim = dOut / heads`, attended per head, merged and projected
/// again (Vaswani et al. 2017, §3.2.2; Raschka, "Build a Large Language Model
/// (From Scratch)", §3.6.2, `MultiHeadAttention`).
///
/// Beyond the book, as users of PyTorch's `nn.MultiheadAttention` expect:
/// separate query and key/value inputs (cross-attention, with their own feature
/// sizes), key padding, any `AttentionMask`, causal or not, grouped-query
/// attention (`kvHeads < heads`), and loading PyTorch's packed `in_proj_weight`.
/// Differences from PyTorch: a query that sees no key gives zeros (PyTorch: NaN),
/// and the key padding mask uses `true` = padding, as PyTorch's `key_padding_mask`.
public struct MultiHeadAttention: Sendable {
    var projections: QKVProjections
    /// The output projection `weight [dOut, heads · valueDim]`, or `nil` for none.
    public internal(set) var outputProjection: Linear?
    /// The causal mask applied to every call, or `nil` (PyTorch's default).
    public let causal: CausalAlignment?
    /// If set, inputs longer than this throw `AttentionError.sequenceTooLong`.
    public let contextLength: Int?
    /// Probability of dropping an attention weight in training, in [0, 1).
    public let dropoutProbability: Float
    /// Dropout applies only while this is `true`.
    public var isTraining = false
    /// The key of the dropout generator (Philox); change it between training steps.
    public var dropoutSeed: UInt64 = 0
    /// `.fused` (default) or `.reference`.
    public var backend: AttentionBackend = .fused
    /// Threads for the fused kernel; `nil` = OpenMP's default.
    public var threads: Int?

    /// Query heads.
    public var heads: Int { projections.heads }
    /// Key/value heads; `heads / kvHeads` query heads share each (grouped-query attention).
    public var kvHeads: Int { projections.kvHeads }
    /// Width of each query/key head.
    public var headDim: Int { projections.headDim }
    /// W_q `weight [heads · headDim, queryFeatures]`.
    public var query: Linear { projections.query }
    /// W_k `weight [kvHeads · headDim, keyFeatures]`.
    public var key: Linear { projections.key }
    /// W_v `weight [kvHeads · valueDim, valueFeatures]`.
    public var value: Linear { projections.value }
    /// The number of trainable numbers (GPT-2 size, 768 wide with 12 heads and no
    /// query/key/value bias: 2,360,064).
    public var parameterCount: Int { projections.parameterCount + (outputProjection?.parameterCount ?? 0) }

    /// A layer from explicit projections (PyTorch `nn.Linear` layout `[out, in]`).
    ///
    /// - Parameters:
    ///   - query, key, value: the input projections; `query.outFeatures = heads · headDim`,
    ///     `key.outFeatures = kvHeads · headDim`, `value.outFeatures = kvHeads · valueDim`.
    ///   - outputProjection: `inFeatures = heads · valueDim`, or `nil`.
    ///   - heads: query heads; kvHeads: key/value heads (default `heads`).
    ///   - causal: `nil` (default), `.topLeft` (the book's and PyTorch's `is_causal`) or `.bottomRight`.
    ///   - contextLength: optional maximum sequence length.
    ///   - dropoutProbability: in [0, 1), applied in training only.
    /// - Throws: `AttentionError.invalidValue` if `heads` does not divide the query
    ///   width or `kvHeads` does not divide `heads`, `AttentionError.invalidShape`
    ///   for projections that do not fit together.
    public init(
        query: Linear, key: Linear, value: Linear, outputProjection: Linear?,
        heads: Int, kvHeads: Int? = nil, causal: CausalAlignment? = nil, contextLength: Int? = nil,
        dropoutProbability: Float = 0
    ) throws {
        projections = try QKVProjections(query: query, key: key, value: value, heads: heads, kvHeads: kvHeads ?? heads)
        if let outputProjection, outputProjection.inFeatures != projections.outputWidth {
            throw AttentionError.invalidShape(
                argument: "outputProjection.weight", expected: "[out, \(projections.outputWidth)] (heads · valueDim)",
                actual: outputProjection.weight.shape)
        }
        if let contextLength, contextLength < 0 {
            throw AttentionError.invalidValue(argument: "contextLength", expected: "a non-negative length", actual: "\(contextLength)")
        }
        try AttentionProblem.checkDropout(dropoutProbability)
        self.outputProjection = outputProjection
        self.causal = causal
        self.contextLength = contextLength
        self.dropoutProbability = dropoutProbability
    }

    /// A freshly initialised layer, the book's `MultiHeadAttention(d_in, d_out,
    /// context_length, dropout, num_heads, qkv_bias)` (PyTorch initialisation, seeded).
    ///
    /// - Parameters:
    ///   - dIn: input features (of the query; `keyFeatures`/`valueFeatures` default to it).
    ///   - dOut: model width, split into `heads` heads; the output is `dOut` wide.
    /// - Throws: as `init(query:key:value:outputProjection:heads:kvHeads:causal:contextLength:dropoutProbability:)`.
    public init(
        dIn: Int, dOut: Int, heads: Int, kvHeads: Int? = nil, causal: CausalAlignment? = nil,
        contextLength: Int? = nil, dropoutProbability: Float = 0, qkvBias: Bool = false, outputBias: Bool = true,
        keyFeatures: Int? = nil, valueFeatures: Int? = nil, seed: UInt64 = 0
    ) throws {
        guard heads >= 1, dOut % heads == 0 else {
            throw AttentionError.invalidValue(argument: "heads", expected: "a positive divisor of dOut = \(dOut)", actual: "\(heads)")
        }
        if let kvHeads, kvHeads < 1 || heads % kvHeads != 0 {
            throw AttentionError.invalidValue(
                argument: "kvHeads", expected: "a divisor of heads = \(heads) (grouped-query attention)", actual: "\(kvHeads)")
        }
        let kvWidth = dOut / heads * (kvHeads ?? heads)
        try self.init(
            query: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, seed: seed),
            key: Linear(inFeatures: keyFeatures ?? dIn, outFeatures: kvWidth, bias: qkvBias, seed: seed &+ 1),
            value: Linear(inFeatures: valueFeatures ?? dIn, outFeatures: kvWidth, bias: qkvBias, seed: seed &+ 2),
            outputProjection: Linear(inFeatures: dOut, outFeatures: dOut, bias: outputBias, seed: seed &+ 3),
            heads: heads, kvHeads: kvHeads, causal: causal, contextLength: contextLength,
            dropoutProbability: dropoutProbability)
    }

    /// A layer from PyTorch's `nn.MultiheadAttention` state: the packed
    /// `in_proj_weight [3E, E]` (rows: query, key, value), `in_proj_bias [3E]`,
    /// `out_proj.weight [E, E]`, `out_proj.bias [E]`.
    ///
    /// - Throws: `AttentionError.invalidShape` naming the tensor that does not fit,
    ///   `AttentionError.invalidValue` if `heads` does not divide E.
    public init(
        packedInProjectionWeight: Tensor<Float>, packedInProjectionBias: Tensor<Float>?,
        outputProjectionWeight: Tensor<Float>, outputProjectionBias: Tensor<Float>?,
        heads: Int, causal: CausalAlignment? = nil, dropoutProbability: Float = 0
    ) throws {
        let shape = packedInProjectionWeight.shape
        guard shape.count == 2, shape[0] == 3 * shape[1] else {
            throw AttentionError.invalidShape(argument: "packedInProjectionWeight", expected: "[3E, E]", actual: shape)
        }
        let width = shape[1]
        if let bias = packedInProjectionBias, bias.shape != [3 * width] {
            throw AttentionError.invalidShape(argument: "packedInProjectionBias", expected: "[\(3 * width)] (3E)", actual: bias.shape)
        }
        func slice(_ part: Int) throws -> Linear {
            let rows = packedInProjectionWeight.scalars[(part * width * width)..<((part + 1) * width * width)]
            let bias = packedInProjectionBias.map {
                Tensor<Float>(validShape: [width], scalars: Array($0.scalars[(part * width)..<((part + 1) * width)]))
            }
            return try Linear(weight: Tensor(validShape: [width, width], scalars: Array(rows)), bias: bias)
        }
        try self.init(
            query: slice(0), key: slice(1), value: slice(2),
            outputProjection: Linear(weight: outputProjectionWeight, bias: outputProjectionBias),
            heads: heads, causal: causal, dropoutProbability: dropoutProbability)
    }

    /// Self-attention: query, key and value all come from `input`.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: `[batch, length, dOut]` (or `[length, dOut]`).
    /// - Throws: as `callAsFunction(query:key:value:keyPaddingMask:mask:)`.
    public func callAsFunction(_ input: Tensor<Float>) throws -> Tensor<Float> {
        try callAsFunction(query: input, key: input, value: input)
    }

    /// Attention of `query` over `key`/`value` (cross-attention when they differ).
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, queryFeatures]` or `[queryLength, queryFeatures]`.
    ///   - key: `[batch, keyLength, keyFeatures]`, same rank as `query`.
    ///   - value: `[batch, keyLength, valueFeatures]`.
    ///   - keyPaddingMask: `[batch, keyLength]`, `true` = padding (ignored key);
    ///     `[1, keyLength]` for unbatched inputs.
    ///   - mask: combined with the layer's `causal`; explicit masks broadcast to
    ///     `[batch, heads, queryLength, keyLength]`.
    /// - Returns: `[batch, queryLength, dOut]` (or unbatched).
    /// - Throws: `AttentionError.invalidShape` naming the argument that does not
    ///   fit, `AttentionError.sequenceTooLong` past `contextLength`,
    ///   `AttentionError.invalidValue` if `mask` is causal with an alignment other
    ///   than the layer's.
    public func callAsFunction(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPaddingMask: Tensor<Bool>? = nil, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(query: query, key: key, value: value, keyPaddingMask: keyPaddingMask, mask: mask)
        var merged = try problem.runMergingHeads(backend: backend, threads: threads)
        if let outputProjection { merged = try outputProjection(merged, threads: threads) }
        return sequence.restoringRank(merged)
    }

    /// The attention weights of each head from the oracle,
    /// `[batch, heads, queryLength, keyLength]` (`[heads, queryLength, keyLength]`
    /// for unbatched inputs), after masks, and dropout in training. O(Lq·Lk)
    /// memory; for inspection.
    ///
    /// - Throws: as `callAsFunction(query:key:value:keyPaddingMask:mask:)`.
    public func attentionWeights(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPaddingMask: Tensor<Bool>? = nil, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(
            query: query, key: key, value: value, keyPaddingMask: keyPaddingMask, mask: mask)
        let weights = try problem.referenceWeights()
        return sequence.wasUnbatched ? Tensor(validShape: Array(weights.shape.dropFirst()), scalars: weights.scalars) : weights
    }

    func prepare(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPaddingMask: Tensor<Bool>?, mask: AttentionMask
    ) throws -> (SequenceBatch, AttentionProblem) {
        let querySequence = try SequenceBatch(query, argument: "query", features: projections.query.inFeatures)
        let keySequence = try SequenceBatch(key, argument: "key", features: projections.key.inFeatures)
        let valueSequence = try SequenceBatch(value, argument: "value", features: projections.value.inFeatures)
        guard keySequence.wasUnbatched == querySequence.wasUnbatched else {
            throw AttentionError.invalidShape(argument: "key", expected: "rank \(query.rank) like query \(query.shape)", actual: key.shape)
        }
        guard valueSequence.wasUnbatched == querySequence.wasUnbatched else {
            throw AttentionError.invalidShape(argument: "value", expected: "rank \(query.rank) like query \(query.shape)", actual: value.shape)
        }
        try checkContextLength(querySequence.length, contextLength: contextLength, argument: "query")
        try checkContextLength(keySequence.length, contextLength: contextLength, argument: "key")
        var problem = try projections.problem(
            queryInput: querySequence, keyInput: keySequence, valueInput: valueSequence, causal: causal,
            dropoutProbability: isTraining ? dropoutProbability : 0, dropoutSeed: dropoutSeed, threads: threads)
        if case let .causal(alignment) = mask, let causal, causal != alignment {
            throw AttentionError.invalidValue(
                argument: "mask", expected: "no causal mask or .causal(\(causal)) (the layer's)", actual: ".causal(\(alignment))")
        }
        try problem.apply(mask)
        if let keyPaddingMask { try problem.hideKeys(padding: keyPaddingMask, argument: "keyPaddingMask") }
        return (querySequence, problem)
    }
}
