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
    /// `heads`; for self-attention, all three read the same input width. When
    /// one weight is the odd one out and would fit transposed (stored `[in, out]`,
    /// y = x·W), the error names that weight and suggests `weight.transposed()`.
    init(query: Linear, key: Linear, value: Linear, heads: Int, kvHeads: Int, selfAttention: Bool = false) throws {
        if selfAttention { try Self.checkOneInput(query: query, key: key, value: value) }
        guard heads >= 1 else {
            throw AttentionError.invalidValue(argument: "heads", expected: "at least 1", actual: "\(heads)")
        }
        guard kvHeads >= 1, heads % kvHeads == 0 else {
            throw AttentionError.invalidValue(
                argument: "kvHeads", expected: "a divisor of heads = \(heads) (grouped-query attention)", actual: "\(kvHeads)")
        }
        // Query and key widths agree: key.outFeatures = kvHeads · headDim, headDim = query.outFeatures / heads.
        // When they do not, and the query's weight fits transposed while the
        // key's does not (or the key reads the value's input width and the query
        // does not), the query's weight is the odd one out.
        func widthsAgree(query: Int, key: Int) -> Bool { query % heads == 0 && query / heads * kvHeads == key }
        if !widthsAgree(query: query.outFeatures, key: key.outFeatures),
           widthsAgree(query: query.inFeatures, key: key.outFeatures),
           !widthsAgree(query: query.outFeatures, key: key.inFeatures)
            || (query.inFeatures != value.inFeatures && key.inFeatures == value.inFeatures) {
            throw AttentionError.invalidShape(
                argument: "query.weight",
                expected: "[\(key.outFeatures / kvHeads * heads), inFeatures] (heads · headDim, headDim from key.weight "
                    + "\(key.weight.shape))" + Self.transposeHint,
                actual: query.weight.shape)
        }
        guard query.outFeatures % heads == 0 else {
            throw AttentionError.invalidValue(
                argument: "heads", expected: "a divisor of the query projection width \(query.outFeatures)", actual: "\(heads)")
        }
        let headDim = query.outFeatures / heads
        guard key.outFeatures == kvHeads * headDim else {
            let hint = key.inFeatures == kvHeads * headDim ? Self.transposeHint : ""
            throw AttentionError.invalidShape(
                argument: "key.weight", expected: "[\(kvHeads * headDim), inFeatures] (kvHeads · headDim)\(hint)",
                actual: key.weight.shape)
        }
        guard value.outFeatures % kvHeads == 0 else {
            let hint = value.inFeatures % kvHeads == 0 ? Self.transposeHint : ""
            throw AttentionError.invalidShape(
                argument: "value.weight", expected: "[kvHeads · valueDim, inFeatures] with kvHeads = \(kvHeads)\(hint)",
                actual: value.weight.shape)
        }
        self.query = query
        self.key = key
        self.value = value
        self.heads = heads
        self.kvHeads = kvHeads
    }

    /// The end of an error on a weight whose transpose would fit.
    private static let transposeHint =
        "; the weight fits transposed: if it is stored [in, out] (y = x·W), pass weight.transposed()"

    /// Self-attention: query, key and value read one input, so their `inFeatures`
    /// agree. The error names the odd one out (the one whose width the other two
    /// share; key, against query, when all three differ) with the shared width.
    private static func checkOneInput(query: Linear, key: Linear, value: Linear) throws {
        let (q, k, v) = (query.inFeatures, key.inFeatures, value.inFeatures)
        guard q != k || k != v else { return }
        let name: String, odd: Linear, expected: String
        if k == v {
            (name, odd, expected) = ("query.weight", query, "[out, \(k)] (the inFeatures of key and value: one input)")
        } else if q == k {
            (name, odd, expected) = ("value.weight", value, "[out, \(q)] (the query's inFeatures: one input)")
        } else {
            (name, odd, expected) = ("key.weight", key, "[out, \(q)] (the query's inFeatures: one input)")
        }
        let shared = k == v ? k : q
        let hint = odd.outFeatures == shared && odd.inFeatures != shared ? transposeHint : ""
        throw AttentionError.invalidShape(argument: name, expected: expected + hint, actual: odd.weight.shape)
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
