/// Which implementation computes attention.
public enum AttentionBackend: Sendable, Equatable {
    /// The fused, tiled, multi-threaded C kernel (FlashAttention-2 loop). Default.
    case fused
    /// The naive oracle in double precision (`Reference`): slow, for checking.
    case reference
}

/// The output of attention together with the log-sum-exp of each query row.
public struct AttentionResult: Sendable {
    /// `[..., heads, queryLength, valueDim]`.
    public var output: Tensor<Float>
    /// `log Σ_j exp(scale · q·k_j + mask_j)` over the visible keys of each query
    /// row, natural log, before dropout; −∞ for a row with no visible key.
    /// Shape `[..., heads, queryLength]`. With it, partial results over disjoint
    /// key sets can be merged exactly (FlashAttention-2 §3.1).
    public var logsumexp: Tensor<Float>
}

/// Scaled dot-product attention, `softmax(scale · Q Kᵀ + mask) · V`, on the fused
/// C kernel (Vaswani et al. 2017, eq. 1; computed with the FlashAttention-2 loop,
/// Dao 2023, without materialising the `queryLength × keyLength` scores).
///
/// Follows PyTorch's `torch.nn.functional.scaled_dot_product_attention`, except:
/// grouped-query attention is implied whenever `keys` has fewer heads than
/// `queries` (no `enable_gqa` flag); a query row with no visible key gives zeros
/// (PyTorch's math path gives NaN); dropout uses Philox keyed by `dropoutSeed`,
/// so results are reproducible but not PyTorch's random cells.
///
/// - Parameters:
///   - queries: `[batch, heads, queryLength, headDim]`; rank 3 (`[heads, queryLength,
///     headDim]`) and rank 2 (`[queryLength, headDim]`) are accepted.
///   - keys: `[batch, kvHeads, keyLength, headDim]`, same rank as `queries`;
///     `kvHeads` must divide `heads` (query head `h` reads key/value head
///     `h / (heads / kvHeads)`).
///   - values: `[batch, kvHeads, keyLength, valueDim]`.
///   - mask: `.none`, `.causal(.topLeft | .bottomRight)`, `.keep(Bool)` or
///     `.additive(Float)`; explicit masks broadcast to `[batch, heads, queryLength, keyLength]`.
///   - scale: multiplies the logits; default `1/√headDim`; any finite value, 0 included.
///   - dropoutProbability: probability in [0, 1) of dropping each attention weight
///     (kept weights scale by 1/(1 − p)); 0 = off.
///   - dropoutSeed: key of the Philox generator that picks the dropped cells.
///   - backend: `.fused` (default) or `.reference`.
///   - threads: worker threads for the fused kernel; `nil` = `AttentionThreading.defaultThreadCount` (OpenMP's default under OpenMP, the active processors under Dispatch).
/// - Returns: `[batch, heads, queryLength, valueDim]` (the rank of `queries`).
/// - Throws: `AttentionError.invalidShape` for ranks, sizes or masks that do not
///   fit; `AttentionError.invalidValue` for a non-finite scale, a dropout
///   probability outside [0, 1) or fewer than 1 thread.
public func scaledDotProductAttention(
    queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>,
    mask: AttentionMask = .none, scale: Float? = nil,
    dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0,
    backend: AttentionBackend = .fused, threads: Int? = nil
) throws -> Tensor<Float> {
    try scaledDotProductAttentionWithLogsumexp(
        queries: queries, keys: keys, values: values, mask: mask, scale: scale,
        dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed,
        backend: backend, threads: threads
    ).output
}

/// `scaledDotProductAttention` that also returns the logsumexp of each query row
/// `[..., heads, queryLength]`. Same parameters, shapes and errors.
public func scaledDotProductAttentionWithLogsumexp(
    queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>,
    mask: AttentionMask = .none, scale: Float? = nil,
    dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0,
    backend: AttentionBackend = .fused, threads: Int? = nil
) throws -> AttentionResult {
    let problem = try AttentionProblem(
        queries: queries, keys: keys, values: values, mask: mask, scale: scale,
        dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
    let result = try problem.run(backend: backend, layout: .headsMajor, threads: threads, wantLogsumexp: true)
    let rowShape = Array(queries.shape.dropLast())
    return AttentionResult(
        output: Tensor(validShape: rowShape + [problem.valueDim], scalars: result.output),
        logsumexp: Tensor(validShape: rowShape, scalars: result.logsumexp ?? []))
}

extension AttentionProblem {
    /// Runs the chosen backend.
    func run(backend: AttentionBackend, layout: OutputLayout, threads: Int?, wantLogsumexp: Bool) throws -> BackendResult {
        switch backend {
        case .fused:
            return try runFused(layout: layout, threads: threads, wantLogsumexp: wantLogsumexp)
        case .reference:
            if let threads, threads < 1 {
                throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
            }
            try checkReferenceScratch()
            return runReference(layout: layout, wantWeights: false)
        }
    }
}
