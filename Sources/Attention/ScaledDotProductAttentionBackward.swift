/// The gradients of scaled dot-product attention with respect to its three inputs.
public struct AttentionGradients: Sendable {
    /// ∂L/∂queries, the shape of the queries `[..., heads, queryLength, headDim]`.
    public var queries: Tensor<Float>
    /// ∂L/∂keys, the shape of the keys `[..., kvHeads, keyLength, headDim]`; with
    /// grouped-query attention, summed over the query heads of each group.
    public var keys: Tensor<Float>
    /// ∂L/∂values, the shape of the values `[..., kvHeads, keyLength, valueDim]`.
    public var values: Tensor<Float>
}

/// The backward pass of `scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:backend:threads:)`:
/// given the gradient of a loss with respect to the output, the gradients with
/// respect to the queries, keys and values.
///
/// The fused backend computes FlashAttention-2's backward (Dao 2023,
/// Algorithm 2) from the forward's `output` and `logsumexp`, recomputing the
/// attention weights tile by tile: no `queryLength × keyLength` buffer. With
/// `P = softmax(scale·QKᵀ + mask)`, `Z` the dropout factors, `D = rowsum(dO ∘ O)`:
/// `dV = (P∘Z)ᵀ dO`, `dS = P ∘ ((dO Vᵀ)∘Z − D)`, `dQ = scale · dS K`,
/// `dK = scale · dSᵀ Q`. The reference backend is the oracle's backward from the
/// softmax Jacobian in double precision (it does not read `output` or `logsumexp`).
///
/// Pass the forward's own arguments (mask, scale, dropout probability and seed):
/// dropout regenerates the forward's Philox cells from the seed. Semantics:
/// a query row with no visible key gets zero gradients; NaN or ±∞ at a masked
/// key has no effect; NaN elsewhere propagates. The result does not depend on
/// `threads` or the threading driver, bit for bit. As PyTorch's
/// `scaled_dot_product_attention` backward, except where the forward differs
/// (fully masked rows: zeros, not NaN; dropout cells from Philox).
///
/// - Parameters:
///   - queries: `[batch, heads, queryLength, headDim]` (rank 2 to 4, as the forward).
///   - keys: `[batch, kvHeads, keyLength, headDim]`.
///   - values: `[batch, kvHeads, keyLength, valueDim]`.
///   - output: the forward's output `[batch, heads, queryLength, valueDim]`.
///   - logsumexp: the forward's logsumexp `[batch, heads, queryLength]`.
///   - outputGradient: ∂L/∂output, `[batch, heads, queryLength, valueDim]`.
///   - mask: the forward's mask.
///   - scale: the forward's scale (`nil`: `1/√headDim`).
///   - dropoutProbability: the forward's dropout probability, in [0, 1).
///   - dropoutSeed: the forward's dropout seed (its Philox cells are regenerated).
///   - backend: `.fused` (default) or `.reference`.
///   - threads: worker threads for the fused kernel; `nil` = the driver's default.
/// - Returns: ``AttentionGradients`` with the shapes of `queries`, `keys`, `values`.
/// - Throws: `AttentionError.invalidShape` naming `output`, `logsumexp` or
///   `outputGradient` when its shape is not the forward's, and every error of the
///   forward for its arguments; `AttentionError.invalidValue` for fewer than 1 thread.
public func scaledDotProductAttentionBackward(
    queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>,
    output: Tensor<Float>, logsumexp: Tensor<Float>, outputGradient: Tensor<Float>,
    mask: AttentionMask = .none, scale: Float? = nil,
    dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0,
    backend: AttentionBackend = .fused, threads: Int? = nil
) throws -> AttentionGradients {
    let problem = try AttentionProblem(
        queries: queries, keys: keys, values: values, mask: mask, scale: scale,
        dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
    let rowShape = Array(queries.shape.dropLast())
    let outputShape = rowShape + [problem.valueDim]
    for (name, tensor) in [("output", output), ("outputGradient", outputGradient)] where tensor.shape != outputShape {
        throw AttentionError.invalidShape(
            argument: name, expected: "\(outputShape) (the forward's output: queries' shape with valueDim last)",
            actual: tensor.shape)
    }
    guard logsumexp.shape == rowShape else {
        throw AttentionError.invalidShape(
            argument: "logsumexp", expected: "\(rowShape) (the forward's logsumexp: queries' shape without headDim)",
            actual: logsumexp.shape)
    }
    let contiguous = Tensor<Float>.contiguousStrides(
        for: [problem.batch, problem.queryHeads, problem.queryLength, problem.valueDim])
    let dO = StridedOperand(storage: outputGradient.scalars, offset: 0, strides: contiguous)
    let result: BackwardResult
    switch backend {
    case .fused:
        result = try problem.runFusedBackward(
            output: StridedOperand(storage: output.scalars, offset: 0, strides: contiguous),
            logsumexp: logsumexp.scalars, outputGradient: dO,
            queryLayout: .headsMajor, keyLayout: .headsMajor, threads: threads)
    case .reference:
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        result = problem.runReferenceBackward(outputGradient: dO, queryLayout: .headsMajor, keyLayout: .headsMajor)
    }
    return AttentionGradients(
        queries: Tensor(validShape: queries.shape, scalars: result.queryGradient),
        keys: Tensor(validShape: keys.shape, scalars: result.keyGradient),
        values: Tensor(validShape: values.shape, scalars: result.valueGradient))
}

extension Reference {
    /// The oracle's gradients of attention, from the softmax Jacobian in double
    /// precision (O(keyLength²) work per query row): same arguments, contract and
    /// errors as `scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:)`
    /// plus the output gradient.
    ///
    /// - Parameters:
    ///   - queries: `[batch, heads, queryLength, headDim]` (rank 2 to 4, as the forward).
    ///   - keys: `[batch, kvHeads, keyLength, headDim]`.
    ///   - values: `[batch, kvHeads, keyLength, valueDim]`.
    ///   - mask: the forward's mask.
    ///   - scale: the forward's scale (`nil`: `1/√headDim`).
    ///   - dropoutProbability: the forward's dropout probability, in [0, 1).
    ///   - dropoutSeed: the forward's dropout seed.
    ///   - outputGradient: ∂L/∂output, `[batch, heads, queryLength, valueDim]`.
    /// - Returns: ``AttentionGradients`` with the shapes of the inputs.
    /// - Throws: `AttentionError` for shapes or values out of contract.
    public static func scaledDotProductAttentionBackward(
        queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>, outputGradient: Tensor<Float>,
        mask: AttentionMask = .none, scale: Float? = nil,
        dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0
    ) throws -> AttentionGradients {
        let problem = try AttentionProblem(
            queries: queries, keys: keys, values: values, mask: mask, scale: scale,
            dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
        let outputShape = Array(queries.shape.dropLast()) + [problem.valueDim]
        guard outputGradient.shape == outputShape else {
            throw AttentionError.invalidShape(argument: "outputGradient", expected: "\(outputShape)", actual: outputGradient.shape)
        }
        let strides = Tensor<Float>.contiguousStrides(
            for: [problem.batch, problem.queryHeads, problem.queryLength, problem.valueDim])
        let result = problem.runReferenceBackward(
            outputGradient: StridedOperand(storage: outputGradient.scalars, offset: 0, strides: strides),
            queryLayout: .headsMajor, keyLayout: .headsMajor)
        return AttentionGradients(
            queries: Tensor(validShape: queries.shape, scalars: result.queryGradient),
            keys: Tensor(validShape: keys.shape, scalars: result.keyGradient),
            values: Tensor(validShape: values.shape, scalars: result.valueGradient))
    }
}
