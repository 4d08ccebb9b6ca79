/// The three projections of a trainable attention layer and the step that turns
/// inputs into an `AttentionProblem`: shared by `SelfAttention`,
/// `CausalSelfAttention` and `MultiHeadAttention`.
struct QKVProjections: Sendable {
    var query: Linear
    var key: Linear
    var value: Linear
    let heads: Int
    let kvHeads: Int

    /// Checks that the projections fit together: query and key project to the
    /// same width, each width splits evenly into its heads, and `kvHeads` divides
    /// `heads`; for self-attention, all three read the same input width.
    init(query: Linear, key: Linear, value: Linear, heads: Int, kvHeads: Int, selfAttention: Bool = false) throws {
        if selfAttention {
            for (name, projection) in [("key.weight", key), ("value.weight", value)] where projection.inFeatures != query.inFeatures {
                throw AttentionError.invalidShape(
                    argument: name, expected: "[out, \(query.inFeatures)] (the query's inFeatures: one input)",
                    actual: projection.weight.shape)
            }
        }
        guard heads >= 1 else {
            throw AttentionError.invalidValue(argument: "heads", expected: "at least 1", actual: "\(heads)")
        }
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw AttentionError.invalidValue(
                argument: "kvHeads", expected: "a divisor of heads = \(heads) (grouped-query attention)", actual: "\(kvHeads)")
        }
        guard query.outFeatures % heads == 0 else {
            throw AttentionError.invalidValue(
                argument: "heads", expected: "a divisor of the query projection width \(query.outFeatures)", actual: "\(heads)")
        }
        let headDim = query.outFeatures / heads
        guard key.outFeatures == kvHeads * headDim else {
            throw AttentionError.invalidShape(
                argument: "key.weight", expected: "[\(kvHeads * headDim), inFeatures] (kvHeads · headDim)", actual: key.weight.shape)
        }
        guard value.outFeatures % kvHeads == 0 else {
            throw AttentionError.invalidShape(
                argument: "value.weight", expected: "[kvHeads · valueDim, inFeatures] with kvHeads = \(kvHeads)", actual: value.weight.shape)
        }
        self.query = query
        self.key = key
        self.value = value
        self.heads = heads
        self.kvHeads = kvHeads
    }

    var headDim: Int { query.outFeatures / heads }
    var outputWidth: Int { value.outFeatures / kvHeads * heads }
    var parameterCount: Int { query.parameterCount + key.parameterCount + value.parameterCount }

    /// Projects `queryInput [B, Lq, inQ]`, `keyInput [B, Lk, inK]`, `valueInput [B, Lk, inV]`
    /// on `threads` workers (the layer's setting reaches its projections).
    func problem(
        queryInput: SequenceBatch, keyInput: SequenceBatch, valueInput: SequenceBatch,
        causal: CausalAlignment?, dropoutProbability: Float, dropoutSeed: UInt64, threads: Int? = nil
    ) throws -> AttentionProblem {
        guard keyInput.batch == queryInput.batch else {
            throw AttentionError.invalidShape(
                argument: "key", expected: "batch \(queryInput.batch) as in query", actual: keyInput.tensor.shape)
        }
        guard valueInput.batch == keyInput.batch, valueInput.length == keyInput.length else {
            throw AttentionError.invalidShape(
                argument: "value", expected: "[\(keyInput.batch), \(keyInput.length), features] matching key",
                actual: valueInput.tensor.shape)
        }
        let problem = AttentionProblem(
            projectedQueries: try query(queryInput.tensor, argument: "query", threads: threads),
            keys: try key(keyInput.tensor, argument: "key", threads: threads),
            values: try value(valueInput.tensor, argument: "value", threads: threads),
            queryHeads: heads, kvHeads: kvHeads, scale: try AttentionProblem.resolveScale(nil, headDim: headDim),
            causal: causal, dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
        try problem.checkResultSizes(argument: "value")
        return problem
    }
}

/// Throws `AttentionError.sequenceTooLong` when `length` exceeds `contextLength`.
func checkContextLength(_ length: Int, contextLength: Int?, argument: String) throws {
    if let contextLength, length > contextLength {
        throw AttentionError.sequenceTooLong(argument: argument, contextLength: contextLength, actual: length)
    }
}
