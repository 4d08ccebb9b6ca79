/// What the layers share: input shapes `[batch, length, features]` (or unbatched
/// `[length, features]`), projections viewed as heads without a copy, and the
/// run of attention with heads merged in the output.

/// A layer input normalised to `[batch, length, features]`.
struct SequenceBatch {
    var tensor: Tensor<Float>
    var wasUnbatched: Bool
    var batch: Int { tensor.shape[0] }
    var length: Int { tensor.shape[1] }

    /// Accepts `[batch, length, features]` or `[length, features]`.
    init(_ input: Tensor<Float>, argument: String, features: Int) throws {
        let expected = "[batch, length, \(features)] or [length, \(features)]"
        guard input.rank == 2 || input.rank == 3, input.shape.last == features else {
            throw AttentionError.invalidShape(argument: argument, expected: expected, actual: input.shape)
        }
        wasUnbatched = input.rank == 2
        tensor = wasUnbatched ? Tensor(validShape: [1] + input.shape, scalars: input.scalars) : input
    }

    /// The oracle's weights of a single-head problem over this input:
    /// `[batch, queryLength, keyLength]`, or without `batch` for an unbatched input.
    func singleHeadWeights(of problem: AttentionProblem) throws -> Tensor<Float> {
        let weights = try problem.referenceWeights()
        return restoringRank(
            Tensor(validShape: [problem.batch, problem.queryLength, problem.keyLength], scalars: weights.scalars))
    }

    /// Gives `output [batch, length, width]` the rank the input had.
    func restoringRank(_ output: Tensor<Float>) -> Tensor<Float> {
        wasUnbatched ? Tensor(validShape: Array(output.shape.dropFirst()), scalars: output.scalars) : output
    }
}

extension AttentionProblem {
    /// Attention over projections `[batch, length, heads · headDim]` (what `Linear`
    /// produces), read as `[batch, heads, length, headDim]` through strides.
    init(
        projectedQueries queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>,
        queryHeads: Int, kvHeads: Int, scale: Float, causal: CausalAlignment?,
        dropoutProbability: Float, dropoutSeed: UInt64
    ) {
        let (batch, queryLength, keyLength) = (queries.shape[0], queries.shape[1], keys.shape[1])
        let headDim = queryHeads > 0 ? queries.shape[2] / queryHeads : 0
        let valueDim = kvHeads > 0 ? values.shape[2] / kvHeads : 0
        func headsView(_ tensor: Tensor<Float>, heads: Int, dim: Int) -> StridedOperand<Float> {
            let length = tensor.shape[1]
            return StridedOperand(storage: tensor.scalars, offset: 0, strides: [length * heads * dim, dim, heads * dim, 1])
        }
        self.batch = batch
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.queryLength = queryLength
        self.keyLength = keyLength
        self.headDim = headDim
        self.valueDim = valueDim
        self.query = headsView(queries, heads: queryHeads, dim: headDim)
        self.key = headsView(keys, heads: kvHeads, dim: headDim)
        self.value = headsView(values, heads: kvHeads, dim: valueDim)
        self.scale = scale
        self.causal = causal
        self.mask = nil
        self.keyPaddingKeep = nil
        self.dropoutProbability = dropoutProbability
        self.dropoutSeed = dropoutSeed
    }

    /// Runs the backend and returns `[batch, queryLength, heads · valueDim]`:
    /// the kernel writes the heads side by side, so merging them costs nothing.
    func runMergingHeads(backend: AttentionBackend, threads: Int?) throws -> Tensor<Float> {
        let result = try run(backend: backend, layout: .sequenceMajor, threads: threads, wantLogsumexp: false)
        return Tensor(validShape: [batch, queryLength, queryHeads * valueDim], scalars: result.output)
    }

    /// The oracle's attention weights `[batch, heads, queryLength, keyLength]`.
    func referenceWeights() throws -> Tensor<Float> {
        _ = try Tensor<Float>.allocatableCount(of: maskShape, argument: "input", tensor: "weights")
        try checkReferenceScratch()
        let result = runReference(layout: .headsMajor, wantWeights: true)
        return Tensor(validShape: [batch, queryHeads, queryLength, keyLength], scalars: result.weights ?? [])
    }
}
