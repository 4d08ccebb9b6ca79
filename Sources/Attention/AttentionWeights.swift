import CAttention
import Dispatch
import Foundation

/// Which matrix of an attention call to materialise.
enum MaterialisedMatrix: Sendable {
    /// `softmax(scale · Q Kᵀ + mask)`, after dropout.
    case weights
    /// `scale · Q Kᵀ + mask` before softmax, −∞ where masked.
    case scores
}

extension AttentionProblem {
    /// The weights or scores `[batch, queryHeads, queryLength, keyLength]`, row-major.
    ///
    /// `.fused`: the float32 path of `attn_sdpa_weights` / `attn_sdpa_scores`
    /// (for weights, after a forward call with `valueDim = 0` for the
    /// logsumexp), spread over `threads` Dispatch workers. `.reference`: the
    /// float64 oracle (weights), or its logits rounded to float32 (scores).
    func materialise(_ matrix: MaterialisedMatrix, backend: AttentionBackend, threads: Int?) throws -> [Float] {
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let count = try Tensor<Float>.allocatableCount(
            of: maskShape, argument: "keys", tensor: matrix == .weights ? "weights" : "scores")
        if backend == .reference {
            try checkReferenceScratch()
            switch matrix {
            case .weights: return runReference(layout: .headsMajor, wantWeights: true).weights ?? []
            case .scores: return try referenceScores()
            }
        }
        let driver = KernelThreading.current
        var logsumexp: [Float] = []
        if matrix == .weights {
            var rowsOnly = self
            rowsOnly.valueDim = 0
            rowsOnly.dropoutProbability = 0  // the logsumexp is that before dropout
            // The same driver as the weights pass after it: an OpenMP team left
            // spinning would compete with Dispatch workers for the cores.
            logsumexp = try rowsOnly.runFused(
                layout: .headsMajor, threads: threads, wantLogsumexp: true, driver: driver).logsumexp ?? []
        }
        // Every cell is written by the kernel (and 0 stands for an empty call).
        var result = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if batch * queryHeads * queryLength == 0 || keyLength == 0 {
                buffer.initialize(repeating: 0)
            }
            initialized = count
        }
        var params = kernelParameters(outputStrides: [0, 0, 0, 1], threads: threads)
        params.value_dim = 0
        params.num_threads = KernelThreading.workers(threads, driver: driver)
        let status: attn_status = query.storage.withUnsafeBufferPointer { q in
            key.storage.withUnsafeBufferPointer { k in
                logsumexp.withUnsafeBufferPointer { lse in
                    result.withUnsafeMutableBufferPointer { out in
                        params.query = q.baseAddress.map { UnsafePointer($0 + query.offset) }
                        params.key = k.baseAddress.map { UnsafePointer($0 + key.offset) }
                        return withMask(&params) { params in
                            withKeyPadding(&params) { params in
                                Self.run(&params, matrix, logsumexp: lse.baseAddress, out: out.baseAddress, driver: driver)
                            }
                        }
                    }
                }
            }
        }
        guard status == ATTN_OK else {
            throw AttentionError.kernelFailure(code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
        }
        return result
    }

    /// The plan of `attn_sdpa_weights` or `attn_sdpa_scores`, run by `driver`.
    private static func run(
        _ params: inout attn_params, _ matrix: MaterialisedMatrix, logsumexp: UnsafePointer<Float>?,
        out: UnsafeMutablePointer<Float>?, driver: AttentionThreading.Driver
    ) -> attn_status {
        var plan: OpaquePointer?
        let status = switch matrix {
        case .weights: attn_sdpa_weights_plan_create(&params, logsumexp, out, &plan)
        case .scores: attn_sdpa_scores_plan_create(&params, out, &plan)
        }
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        return KernelThreading.drive(plan, driver: driver)
    }
}

/// The attention weights `softmax(scale · Q Kᵀ + mask)` (after dropout), what
/// `scaledDotProductAttention` multiplies the values by — PyTorch's
/// `need_weights` without averaging over heads.
///
/// On `.fused` (default) they come from the float32 path: the fused kernel's
/// logsumexp (a forward call that skips P·V), then one pass that recomputes
/// `scale · Q Kᵀ + mask` tile by tile and writes `exp(s − logsumexp)`
/// (`attn_sdpa_weights`), at the cost of about one forward call plus the
/// `queryLength × keyLength` stores; within the suite's float32 tolerance of
/// the oracle. `.reference` gives the float64 oracle's (`Reference`).
///
/// - Parameters:
///   - queries: `[batch, heads, queryLength, headDim]` (rank 2 or 3 drop leading dims).
///   - keys: `[batch, kvHeads, keyLength, headDim]`, same rank; `kvHeads` divides `heads`.
///   - mask: as for `scaledDotProductAttention`.
///   - scale: default `1/√headDim`; any finite value.
///   - dropoutProbability: in [0, 1); dropped cells are 0, kept ones scaled by 1/(1 − p),
///     the cells `scaledDotProductAttention` drops for the same `dropoutSeed`.
///   - dropoutSeed: the Philox key.
///   - backend: `.fused` (float32) or `.reference` (float64 oracle).
///   - threads: workers for the fused path; `nil` = one per active core.
/// - Returns: `[batch, heads, queryLength, keyLength]` (the rank of `queries`);
///   rows with no visible key are 0, masked cells 0.
/// - Throws: `AttentionError.invalidShape` / `.invalidValue` as
///   `scaledDotProductAttention`, `AttentionError.insufficientMemory` if the
///   `queryLength × keyLength` matrix cannot be allocated.
public func scaledDotProductAttentionWeights(
    queries: Tensor<Float>, keys: Tensor<Float>, mask: AttentionMask = .none, scale: Float? = nil,
    dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0,
    backend: AttentionBackend = .fused, threads: Int? = nil
) throws -> Tensor<Float> {
    try materialised(.weights, queries: queries, keys: keys, mask: mask, scale: scale,
                     dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed, backend: backend, threads: threads)
}

/// The attention scores before softmax, `scale · Q Kᵀ + mask`, with −∞ at every
/// masked cell (causal, keep mask) — the logits the weights are the softmax of.
///
/// `.fused` computes them in float32 with the kernel's own tile products
/// (`attn_sdpa_scores`); `.reference` from the definition in double
/// precision, rounded to float32. A logit beyond the float32 range is NaN, as
/// in the kernel. Same parameters, shapes and errors as
/// `scaledDotProductAttentionWeights(queries:keys:mask:scale:dropoutProbability:dropoutSeed:backend:threads:)`,
/// without dropout (scores come before it).
///
/// - Parameters:
///   - queries: `[batch, heads, queryLength, headDim]` (rank 2 or 3 drop leading dims).
///   - keys: `[batch, kvHeads, keyLength, headDim]`; `kvHeads` divides `heads`.
///   - mask: `.none`, `.causal(_:)`, `.keep(_:)` or `.additive(_:)`; masked cells get −∞.
///   - scale: multiplies Q Kᵀ; default `1/√headDim`; any finite value.
///   - backend: `.fused` (float32) or `.reference` (float64 oracle).
///   - threads: workers for the fused path; `nil` = one per active core.
/// - Returns: `[batch, heads, queryLength, keyLength]` (the rank of `queries`).
/// - Throws: as `scaledDotProductAttentionWeights`.
public func scaledDotProductAttentionScores(
    queries: Tensor<Float>, keys: Tensor<Float>, mask: AttentionMask = .none, scale: Float? = nil,
    backend: AttentionBackend = .fused, threads: Int? = nil
) throws -> Tensor<Float> {
    try materialised(.scores, queries: queries, keys: keys, mask: mask, scale: scale,
                     dropoutProbability: 0, dropoutSeed: 0, backend: backend, threads: threads)
}

private func materialised(
    _ matrix: MaterialisedMatrix, queries: Tensor<Float>, keys: Tensor<Float>, mask: AttentionMask, scale: Float?,
    dropoutProbability: Float, dropoutSeed: UInt64, backend: AttentionBackend, threads: Int?
) throws -> Tensor<Float> {
    // Values are not read: an empty [..., kvHeads, keyLength, 0] stands in for them.
    let valueShape = keys.rank >= 1 ? Array(keys.shape.dropLast()) + [0] : [0]
    let values = try Tensor<Float>(shape: valueShape, scalars: [])
    let problem = try AttentionProblem(
        queries: queries, keys: keys, values: values, mask: mask, scale: scale,
        dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
    let scalars = try problem.materialise(matrix, backend: backend, threads: threads)
    return Tensor(validShape: Array(queries.shape.dropLast()) + [problem.keyLength], scalars: scalars)
}
