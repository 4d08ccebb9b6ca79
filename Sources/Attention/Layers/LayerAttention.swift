/// What the layers share: input shapes `[batch, length, features]` (or unbatched
/// `[length, features]`), projections viewed as heads without a copy, and the
/// run of attention with heads merged in the output.

/// A layer input normalised to `[batch, length, features]`.
struct SequenceBatch {
    var tensor: Tensor<Float>
    var wasUnbatched: Bool
    var batch: Int { tensor.shape[0] }
    var length: Int { tensor.shape[1] }

    /// Accepts `[batch, length, features]` (`[length, batch, features]` when
    /// `batchFirst` is false, transposed here) or `[length, features]`.
    init(_ input: Tensor<Float>, argument: String, features: Int, batchFirst: Bool = true) throws {
        let layout = batchFirst ? "[batch, length, \(features)]" : "[length, batch, \(features)] (batchFirst: false)"
        let expected = "\(layout) or [length, \(features)]"
        guard input.rank == 2 || input.rank == 3, input.shape.last == features else {
            throw AttentionError.invalidShape(argument: argument, expected: expected, actual: input.shape)
        }
        wasUnbatched = input.rank == 2
        if wasUnbatched {
            tensor = Tensor(validShape: [1] + input.shape, scalars: input.scalars)
        } else {
            tensor = batchFirst ? input : input.swappingLeadingAxes()
        }
    }

    /// The weights (or scores) of a single-head problem over this input:
    /// `[batch, queryLength, keyLength]`, or without `batch` for an unbatched input.
    func singleHead(_ matrix: MaterialisedMatrix, of problem: AttentionProblem, backend: AttentionBackend, threads: Int?) throws -> Tensor<Float> {
        let scalars = try problem.materialise(matrix, backend: backend, threads: threads)
        return restoringRank(Tensor(validShape: [problem.batch, problem.queryLength, problem.keyLength], scalars: scalars))
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

    /// The attention weights (or scores) `[batch, heads, queryLength, keyLength]`.
    func heads(_ matrix: MaterialisedMatrix, backend: AttentionBackend, threads: Int?) throws -> Tensor<Float> {
        Tensor(validShape: maskShape, scalars: try materialise(matrix, backend: backend, threads: threads))
    }
}

extension Tensor {
    /// `[a, b, rest…]` → `[b, a, rest…]` (rank ≥ 2), a copy: PyTorch's
    /// `transpose(0, 1)` for sequence-first layouts.
    func swappingLeadingAxes() -> Tensor {
        precondition(rank >= 2)
        let (a, b) = (shape[0], shape[1])
        let inner = shape.dropFirst(2).reduce(1, *)
        var elements: [Element] = []
        elements.reserveCapacity(count)
        for j in 0..<b {
            for i in 0..<a {
                let start = (i * b + j) * inner
                elements.append(contentsOf: scalars[start..<start + inner])
            }
        }
        return Tensor(validShape: [b, a] + shape.dropFirst(2), scalars: elements)
    }
}
