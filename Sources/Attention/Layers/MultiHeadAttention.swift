/// Multi-head attention: the inputs are projected once, split into `heads`
/// heads of `headDim = dOut / heads`, attended per head, merged and projected
/// again (Vaswani et al. 2017, §3.2.2; Raschka, "Build a Large Language Model
/// (From Scratch)", §3.6.2, `MultiHeadAttention`).
///
/// Causal or not: the book's class is causal, and so is the layer made with the
/// book's signature, ``init(dIn:dOut:contextLength:dropout:numHeads:qkvBias:seed:)``;
/// the other initialisers keep PyTorch's `nn.MultiheadAttention` default (not
/// causal) unless `causal:` says otherwise.
///
/// Beyond the book, as users of PyTorch's `nn.MultiheadAttention` expect:
/// separate query and key/value inputs (cross-attention, with their own feature
/// sizes), key padding, any `AttentionMask`, causal or not, grouped-query
/// attention (`kvHeads < heads`), and loading PyTorch's packed `in_proj_weight`.
/// Differences from PyTorch: a query that sees no key gives zeros (PyTorch: NaN),
/// key padding names its polarity (`KeyPadding.padding`, PyTorch's
/// `key_padding_mask`, or `.keep`, a tokenizer's `attention_mask`), and inputs are
/// batch-first by default (`batchFirst: false` gives PyTorch's default layout).
public struct MultiHeadAttention: Sendable {
    var projections: QKVProjections
    /// The output projection `weight [dOut, heads · valueDim]`, or `nil` for none.
    public internal(set) var outputProjection: Linear?
    /// The causal mask applied to every call, or `nil` (PyTorch's default).
    public let causal: CausalAlignment?
    /// If set, inputs longer than this throw `AttentionError.sequenceTooLong`.
    public let contextLength: Int?
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

    /// The layout of `query`, `key`, `value` and the output: `true` (default, as
    /// in the book) `[batch, length, features]`, `false` `[length, batch,
    /// features]` — PyTorch's `nn.MultiheadAttention(batch_first=False)`, its
    /// default. Unbatched `[length, features]` inputs, key padding `[batch,
    /// keyLength]` and the weights `[batch, heads, queryLength, keyLength]` are
    /// the same either way.
    public var batchFirst = true

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
    /// Not causal unless `causal` says so (PyTorch's default); for the book's
    /// weights pass `causal: .topLeft`.
    ///
    /// - Parameters:
    ///   - query: W_q, `weight [heads · headDim, queryFeatures]`.
    ///   - key: W_k, `weight [kvHeads · headDim, keyFeatures]`.
    ///   - value: W_v, `weight [kvHeads · valueDim, valueFeatures]`.
    ///   - outputProjection: `weight [dOut, heads · valueDim]`, or `nil` for
    ///     none (the output is then the merged heads, `heads · valueDim` wide).
    ///   - heads: query heads, ≥ 1; must divide `query.outFeatures`.
    ///   - kvHeads: key/value heads (grouped-query attention); must divide
    ///     `heads`; `nil` = `heads`.
    ///   - causal: `nil` (default, not causal, as PyTorch's
    ///     `nn.MultiheadAttention`), `.topLeft` (the book's mask and PyTorch's
    ///     `is_causal`) or `.bottomRight`.
    ///   - contextLength: the longest query or key sequence accepted, or `nil`
    ///     for no limit.
    ///   - dropoutProbability: probability in [0, 1) of dropping an attention
    ///     weight while ``isTraining``.
    ///   - batchFirst: `true` (default) for `[batch, length, features]` inputs and
    ///     outputs, `false` for PyTorch's default `[length, batch, features]`.
    /// - Throws: `AttentionError.invalidValue` if `heads` does not divide the query
    ///   width or `kvHeads` does not divide `heads`, `AttentionError.invalidShape`
    ///   naming the weight that does not fit the others (a query or key weight
    ///   stored `[in, out]` is named, with the suggestion to pass
    ///   `weight.transposed()`).
    public init(
        query: Linear, key: Linear, value: Linear, outputProjection: Linear?,
        heads: Int, kvHeads: Int? = nil, causal: CausalAlignment? = nil, contextLength: Int? = nil,
        dropoutProbability: Float = 0, batchFirst: Bool = true
    ) throws {
        self.batchFirst = batchFirst
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

    /// The book's layer, `MultiHeadAttention(d_in, d_out, context_length, dropout,
    /// num_heads, qkv_bias=False)` (Raschka §3.6.2), freshly initialised: causal
    /// (top-left, each token sees itself and the tokens before it), as the book's
    /// class, which masks with `torch.triu(ones(context_length, context_length), diagonal=1)`.
    ///
    /// The same as `init(dIn:dOut:heads:kvHeads:causal:contextLength:dropoutProbability:qkvBias:outputBias:keyFeatures:valueFeatures:seed:)`
    /// with `heads: numHeads, causal: .topLeft`.
    ///
    /// - Parameters:
    ///   - dIn: input features.
    ///   - dOut: model width, split into `numHeads` heads of `dOut / numHeads`; the output is `dOut` wide.
    ///   - contextLength: the longest input accepted (the size of the book's mask buffer).
    ///   - dropout: probability of dropping an attention weight in training, in [0, 1).
    ///   - numHeads: the number of heads; divides `dOut`.
    ///   - qkvBias: whether the query, key and value projections have a bias (the book: no).
    ///   - seed: keys this package's parameter stream (Philox-4x32-10) for the initial
    ///     weights (PyTorch's `nn.Linear` distribution). It is not `torch.manual_seed`:
    ///     `seed: 123` does not give the book's numbers; the book's exact weights are
    ///     bundled in `AttentionExamples` (`BookChapter3.load().multiHeadAttention`).
    /// - Throws: `AttentionError.invalidValue` if `numHeads` does not divide `dOut`,
    ///   `contextLength` is negative or `dropout` is outside [0, 1).
    public init(
        dIn: Int, dOut: Int, contextLength: Int, dropout: Float, numHeads: Int, qkvBias: Bool = false, seed: UInt64 = 0
    ) throws {
        guard numHeads >= 1, dOut % numHeads == 0 else {
            throw AttentionError.invalidValue(argument: "numHeads", expected: "a positive divisor of dOut = \(dOut)", actual: "\(numHeads)")
        }
        guard dropout >= 0, dropout < 1 else {
            throw AttentionError.invalidValue(argument: "dropout", expected: "a probability in [0, 1)", actual: "\(dropout)")
        }
        try self.init(
            dIn: dIn, dOut: dOut, heads: numHeads, causal: .topLeft, contextLength: contextLength,
            dropoutProbability: dropout, qkvBias: qkvBias, seed: seed)
    }

    /// A freshly initialised layer with every option (PyTorch initialisation,
    /// seeded). Not causal unless `causal` says so: PyTorch's `nn.MultiheadAttention`
    /// default. For the book's causal layer use
    /// ``init(dIn:dOut:contextLength:dropout:numHeads:qkvBias:seed:)``, or pass `causal: .topLeft`.
    ///
    /// `seed` keys this package's parameter stream, not `torch.manual_seed`: it
    /// reproduces these weights, not PyTorch's. The book's exact weights
    /// are bundled in `AttentionExamples` (`BookChapter3.load()`); load those, or
    /// a checkpoint's, with
    /// ``init(query:key:value:outputProjection:heads:kvHeads:causal:contextLength:dropoutProbability:batchFirst:)``.
    ///
    /// - Parameters:
    ///   - dIn: input features (of the query; `keyFeatures`/`valueFeatures` default to it).
    ///   - dOut: model width, split into `heads` heads; the output is `dOut` wide.
    ///   - heads: query heads, ≥ 1, dividing `dOut`; `headDim = dOut / heads`.
    ///   - kvHeads: key/value heads (grouped-query attention), dividing
    ///     `heads`; `nil` = `heads`.
    ///   - causal: `nil` (default, not causal), `.topLeft` (the book's
    ///     `MultiHeadAttention`, PyTorch's `is_causal`) or `.bottomRight`.
    ///   - contextLength: the longest query or key sequence accepted, or `nil`
    ///     for no limit.
    ///   - dropoutProbability: probability in [0, 1) of dropping an attention
    ///     weight while ``isTraining``.
    ///   - qkvBias: whether the query, key and value projections have a bias
    ///     (the book: no).
    ///   - outputBias: whether the output projection has a bias (the book and
    ///     PyTorch: yes).
    ///   - keyFeatures: the key input's features, for cross-attention; `nil` = `dIn`.
    ///   - valueFeatures: the value input's features; `nil` = `dIn`.
    ///   - seed: the key of the parameter stream: W_q, W_k, W_v and the output
    ///     projection are its matrices 0, 1, 2 and 3 (Philox-4x32-10, one place
    ///     per matrix), so layers built with different seeds share no matrix.
    ///     It is not `torch.manual_seed`: the book's exact weights are bundled in
    ///     `AttentionExamples` (`BookChapter3.load()`).
    ///   - batchFirst: `true` (default) for `[batch, length, features]` inputs and
    ///     outputs, `false` for PyTorch's default `[length, batch, features]`.
    /// - Throws: `AttentionError.invalidValue` naming `heads` or `kvHeads` if
    ///   they do not divide `dOut` and `heads`, or as
    ///   ``init(query:key:value:outputProjection:heads:kvHeads:causal:contextLength:dropoutProbability:batchFirst:)``.
    public init(
        dIn: Int, dOut: Int, heads: Int, kvHeads: Int? = nil, causal: CausalAlignment? = nil,
        contextLength: Int? = nil, dropoutProbability: Float = 0, qkvBias: Bool = false, outputBias: Bool = true,
        keyFeatures: Int? = nil, valueFeatures: Int? = nil, seed: UInt64 = 0, batchFirst: Bool = true
    ) throws {
        guard heads >= 1, dOut % heads == 0 else {
            throw AttentionError.invalidValue(argument: "heads", expected: "a positive divisor of dOut = \(dOut)", actual: "\(heads)")
        }
        if let kvHeads, kvHeads < 1 || heads % kvHeads != 0 {
            throw AttentionError.invalidValue(
                argument: "kvHeads", expected: "a divisor of heads = \(heads) (grouped-query attention)", actual: "\(kvHeads)")
        }
        let kvWidth = dOut / heads * (kvHeads ?? heads)
        let parameters = ParameterStream(seed: seed)
        try self.init(
            query: Linear(inFeatures: dIn, outFeatures: dOut, bias: qkvBias, parameters: parameters, matrix: 0),
            key: Linear(inFeatures: keyFeatures ?? dIn, outFeatures: kvWidth, bias: qkvBias, parameters: parameters, matrix: 1),
            value: Linear(inFeatures: valueFeatures ?? dIn, outFeatures: kvWidth, bias: qkvBias, parameters: parameters, matrix: 2),
            outputProjection: Linear(inFeatures: dOut, outFeatures: dOut, bias: outputBias, parameters: parameters, matrix: 3),
            heads: heads, kvHeads: kvHeads, causal: causal, contextLength: contextLength,
            dropoutProbability: dropoutProbability, batchFirst: batchFirst)
    }

    /// A layer from PyTorch's `nn.MultiheadAttention` state: the packed
    /// `in_proj_weight [3E, E]` (rows: query, key, value), `in_proj_bias [3E]`,
    /// `out_proj.weight [E, E]`, `out_proj.bias [E]`.
    ///
    /// - Parameters:
    ///   - packedInProjectionWeight: `in_proj_weight [3E, E]`: rows `0..<E` are
    ///     W_q, `E..<2E` W_k, `2E..<3E` W_v.
    ///   - packedInProjectionBias: `in_proj_bias [3E]`, or `nil` (`bias=False`).
    ///   - outputProjectionWeight: `out_proj.weight [E, E]`.
    ///   - outputProjectionBias: `out_proj.bias [E]`, or `nil`.
    ///   - heads: PyTorch's `num_heads`, dividing E.
    ///   - causal: `nil` (default, not causal) or the causal alignment applied to
    ///     every call.
    ///   - dropoutProbability: PyTorch's `dropout`, in [0, 1), applied to the
    ///     attention weights while ``isTraining``.
    ///   - batchFirst: PyTorch's `batch_first`; `false` reads and writes
    ///     `[length, batch, E]`, the layout of a module built with the default.
    /// - Throws: `AttentionError.invalidShape` naming the tensor that does not fit,
    ///   `AttentionError.invalidValue` if `heads` does not divide E.
    public init(
        packedInProjectionWeight: Tensor<Float>, packedInProjectionBias: Tensor<Float>?,
        outputProjectionWeight: Tensor<Float>, outputProjectionBias: Tensor<Float>?,
        heads: Int, causal: CausalAlignment? = nil, dropoutProbability: Float = 0, batchFirst: Bool = true
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
            heads: heads, causal: causal, dropoutProbability: dropoutProbability, batchFirst: batchFirst)
    }

    /// Self-attention: query, key and value all come from `input`.
    ///
    /// - Parameter input: `[batch, length, dIn]` (`[length, batch, dIn]` when
    ///   `batchFirst` is false) or `[length, dIn]`.
    /// - Returns: `[batch, length, dOut]` (`[length, batch, dOut]`, or `[length, dOut]`).
    /// - Throws: as `callAsFunction(query:key:value:keyPadding:mask:)`.
    public func callAsFunction(_ input: Tensor<Float>) throws -> Tensor<Float> {
        try callAsFunction(query: input, key: input, value: input)
    }

    /// Attention of `query` over `key`/`value` (cross-attention when they differ).
    ///
    /// A training call (`isTraining`) takes the next key of `dropoutStream`, so
    /// successive calls drop different cells; `lastDropoutKey` tells which.
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, queryFeatures]` or `[queryLength, queryFeatures]`;
    ///     `[queryLength, batch, queryFeatures]` when `batchFirst` is false (PyTorch's default layout).
    ///   - key: `[batch, keyLength, keyFeatures]` (or `[keyLength, batch, keyFeatures]`), same rank as `query`.
    ///   - value: `[batch, keyLength, valueFeatures]` (or `[keyLength, batch, valueFeatures]`).
    ///   - keyPadding: which keys to ignore, `[batch, keyLength]` (`[1, keyLength]` for
    ///     unbatched inputs) with its polarity in the case: `.padding(mask)` (true =
    ///     padding, PyTorch's `key_padding_mask`) or `.keep(mask)` (true = a real token,
    ///     a tokenizer's `attention_mask` as it is; `.attentionMask(_:)` takes it as numbers).
    ///   - mask: combined with the layer's `causal`; explicit masks broadcast to
    ///     `[batch, heads, queryLength, keyLength]`.
    /// - Returns: `[batch, queryLength, dOut]` (`[queryLength, batch, dOut]` when
    ///   `batchFirst` is false, or unbatched).
    /// - Throws: `AttentionError.invalidShape` naming the argument that does not
    ///   fit, `AttentionError.sequenceTooLong` past `contextLength`,
    ///   `AttentionError.invalidValue` if `mask` is causal with an alignment other
    ///   than the layer's or `dropoutProbability` is outside [0, 1).
    public func callAsFunction(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding? = nil, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        try forward(query: query, key: key, value: value, keyPadding: keyPadding, argument: "keyPadding", mask: mask)
    }

    /// The former spelling, with the polarity only in the documentation: a Bool
    /// `[batch, keyLength]` with `true` = padding. A checkpoint's attention mask
    /// (1 = real token) passed here silently gives wrong numbers.
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, queryFeatures]` (or `[queryLength, batch,
    ///     queryFeatures]` when `batchFirst` is false) or `[queryLength, queryFeatures]`.
    ///   - key: `[batch, keyLength, keyFeatures]`, same rank and layout as `query`.
    ///   - value: `[batch, keyLength, valueFeatures]`, same rank and layout as `query`.
    ///   - keyPaddingMask: `[batch, keyLength]`, `true` = padding (ignored key).
    ///   - mask: combined with the layer's `causal`.
    /// - Throws: as `callAsFunction(query:key:value:keyPadding:mask:)`, naming `keyPaddingMask`.
    @available(*, deprecated, message: "use keyPadding: .padding(mask) (true = padding) or .keep(attentionMask) (true = real token)")
    public func callAsFunction(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPaddingMask: Tensor<Bool>?, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        try forward(query: query, key: key, value: value, keyPadding: keyPaddingMask.map(KeyPadding.padding),
                    argument: "keyPaddingMask", mask: mask)
    }

    private func forward(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding?, argument: String, mask: AttentionMask
    ) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(
            query: query, key: key, value: value, keyPadding: keyPadding, argument: argument, mask: mask, forWeights: false)
        var merged = try problem.runMergingHeads(backend: backend, threads: threads)
        if let outputProjection { merged = try outputProjection(merged, threads: threads) }
        let output = sequence.restoringRank(merged)
        return batchFirst || sequence.wasUnbatched ? output : output.swappingLeadingAxes()
    }

    /// The attention weights of each head, `[batch, heads, queryLength, keyLength]`
    /// (`[heads, queryLength, keyLength]` for unbatched inputs, batch first whatever
    /// `batchFirst`, as in PyTorch), after masks, and dropout in training (the cells
    /// of the last training call, `lastDropoutKey`, or before the first, of the
    /// next) — PyTorch's `need_weights=True, average_attn_weights=False`. Does not
    /// advance the dropout stream.
    ///
    /// On `.fused` from the float32 path (`scaledDotProductAttentionWeights`:
    /// the kernel's logsumexp, then `exp(s − logsumexp)` tile by tile), about the
    /// cost of a forward call; on `.reference` from the float64 oracle.
    /// O(Lq·Lk) memory.
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, queryFeatures]` (or `[queryLength, batch,
    ///     queryFeatures]` when `batchFirst` is false) or `[queryLength, queryFeatures]`.
    ///   - key: `[batch, keyLength, keyFeatures]`, same rank and layout as `query`.
    ///   - value: `[batch, keyLength, valueFeatures]`, same rank and layout as `query`.
    ///   - keyPadding: which keys to ignore, `[batch, keyLength]`, with its
    ///     polarity in the case: `.padding(mask)` (true = padding) or
    ///     `.keep(mask)` (true = a real token).
    ///   - mask: combined with the layer's `causal`.
    /// - Throws: as `callAsFunction(query:key:value:keyPadding:mask:)`;
    ///   `AttentionError.insufficientMemory` if the weights cannot be allocated.
    public func attentionWeights(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding? = nil, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        try materialise(.weights, query: query, key: key, value: value, keyPadding: keyPadding, argument: "keyPadding", mask: mask)
    }

    /// The former spelling of `attentionWeights(query:key:value:keyPadding:mask:)`
    /// (`true` = padding).
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, queryFeatures]` (or `[queryLength, batch,
    ///     queryFeatures]` when `batchFirst` is false) or `[queryLength, queryFeatures]`.
    ///   - key: `[batch, keyLength, keyFeatures]`, same rank and layout as `query`.
    ///   - value: `[batch, keyLength, valueFeatures]`, same rank and layout as `query`.
    ///   - keyPaddingMask: `[batch, keyLength]`, `true` = padding (ignored key).
    ///   - mask: combined with the layer's `causal`.
    /// - Throws: as `attentionWeights(query:key:value:keyPadding:mask:)`, naming `keyPaddingMask`.
    @available(*, deprecated, message: "use keyPadding: .padding(mask) (true = padding) or .keep(attentionMask) (true = real token)")
    public func attentionWeights(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPaddingMask: Tensor<Bool>?, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        try materialise(.weights, query: query, key: key, value: value, keyPadding: keyPaddingMask.map(KeyPadding.padding),
                        argument: "keyPaddingMask", mask: mask)
    }

    /// The attention scores of each head before softmax, `[batch, heads,
    /// queryLength, keyLength]` (or unbatched): `Q·Kᵀ/√headDim` plus any additive
    /// mask, −∞ at every masked cell (causal, keep mask, key padding), from the
    /// same float32 path as the weights (the oracle's on `.reference`).
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, queryFeatures]` (or `[queryLength, batch,
    ///     queryFeatures]` when `batchFirst` is false) or `[queryLength, queryFeatures]`.
    ///   - key: `[batch, keyLength, keyFeatures]`, same rank and layout as `query`.
    ///   - value: `[batch, keyLength, valueFeatures]`, same rank and layout as `query`.
    ///   - keyPadding: which keys to ignore, `[batch, keyLength]`, with its
    ///     polarity in the case: `.padding(mask)` (true = padding) or
    ///     `.keep(mask)` (true = a real token).
    ///   - mask: combined with the layer's `causal`.
    /// - Throws: as `attentionWeights(query:key:value:keyPadding:mask:)`.
    public func attentionScores(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding? = nil, mask: AttentionMask = .none
    ) throws -> Tensor<Float> {
        try materialise(.scores, query: query, key: key, value: value, keyPadding: keyPadding, argument: "keyPadding", mask: mask)
    }

    private func materialise(
        _ matrix: MaterialisedMatrix, query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding?, argument: String, mask: AttentionMask
    ) throws -> Tensor<Float> {
        let (sequence, problem) = try prepare(
            query: query, key: key, value: value, keyPadding: keyPadding, argument: argument, mask: mask, forWeights: true)
        let result = try problem.heads(matrix, backend: backend, threads: threads)
        return sequence.wasUnbatched ? Tensor(validShape: Array(result.shape.dropFirst()), scalars: result.scalars) : result
    }

    /// The problem of one call; a training forward call (`forWeights` false)
    /// takes the next dropout key, after every check has passed.
    func prepare(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding?, argument: String, mask: AttentionMask, forWeights: Bool
    ) throws -> (SequenceBatch, AttentionProblem) {
        try AttentionProblem.checkDropout(dropoutProbability)
        let querySequence = try SequenceBatch(query, argument: "query", projection: projections.query, weightName: "query.weight", batchFirst: batchFirst)
        let keySequence = try SequenceBatch(key, argument: "key", projection: projections.key, weightName: "key.weight", batchFirst: batchFirst)
        let valueSequence = try SequenceBatch(value, argument: "value", projection: projections.value, weightName: "value.weight", batchFirst: batchFirst)
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
            dropoutProbability: isTraining ? dropoutProbability : 0, dropoutSeed: 0, threads: threads)
        if case let .causal(alignment) = mask, let causal, causal != alignment {
            throw AttentionError.invalidValue(
                argument: "mask", expected: "no causal mask or .causal(\(causal)) (the layer's)", actual: ".causal(\(alignment))")
        }
        try problem.apply(mask)
        if let keyPadding { try problem.hideKeys(keyPadding, argument: argument) }
        if isTraining { problem.dropoutSeed = dropoutStream.key(advancing: !forWeights) }
        return (querySequence, problem)
    }
}
