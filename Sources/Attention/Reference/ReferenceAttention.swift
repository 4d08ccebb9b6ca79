import Foundation

/// The correctness oracle: attention written straight from the math, one query
/// row at a time, in double precision, with the full weight matrix.
///
///     weights = dropout(softmax(scale · Q Kᵀ + mask)),   output = weights · V
///
/// (Vaswani et al. 2017, "Attention Is All You Need", eq. 1.) It shares no code
/// with the fused kernel, only the contract: masked cells get logit −∞ and add
/// nothing (a NaN or Inf at a masked key has no effect), a row with no visible key
/// gives zeros and logsumexp −∞, a NaN logit makes its row NaN, and dropout keeps
/// the cells that `Philox.keeps` keeps, scaling them by 1/(1 − p). Logits are
/// float32 quantities: `scale·q` is rounded to float32 as the kernel does, and a
/// logit beyond the float32 range (or from an infinite input) is NaN, as it is in
/// the kernel and in PyTorch; everything else is computed in double precision.
extension AttentionProblem {
    func runReference(layout: OutputLayout, wantWeights: Bool) -> BackendResult {
        let outputStrides = layout.strides(batch: batch, heads: queryHeads, length: queryLength, dim: valueDim)
        var output = [Float](repeating: 0, count: batch * queryHeads * queryLength * valueDim)
        var logsumexp = [Float](repeating: 0, count: batch * queryHeads * queryLength)
        var weights = [Float](repeating: 0, count: wantWeights ? batch * queryHeads * queryLength * keyLength : 0)
        var logits = [Double](repeating: 0, count: keyLength)
        var rowWeights = [Double](repeating: 0, count: keyLength)
        var scaledQuery = [Double](repeating: 0, count: headDim)

        for b in 0..<batch {
            for h in 0..<queryHeads {
                let kvHead = h / groupSize
                for i in 0..<queryLength {
                    referenceLogits(b: b, h: h, i: i, scaledQuery: &scaledQuery, into: &logits)
                    // Softmax with the row max subtracted; NaN anywhere makes the max NaN.
                    var rowMax = -Double.infinity
                    for logit in logits where logit.isNaN || logit > rowMax { rowMax = logit }
                    let rowIndex = (b * queryHeads + h) * queryLength + i
                    guard rowMax != -.infinity else {
                        logsumexp[rowIndex] = -.infinity  // no visible key: zeros
                        continue
                    }
                    var sum = 0.0
                    for j in 0..<keyLength {
                        rowWeights[j] = logits[j] == -.infinity ? 0 : exp(logits[j] - rowMax)
                        sum += rowWeights[j]
                    }
                    logsumexp[rowIndex] = Float(rowMax + log(sum))
                    for j in 0..<keyLength {
                        var weight = rowWeights[j] / sum
                        if dropoutProbability > 0 {
                            let kept = Philox.keeps(
                                seed: dropoutSeed, batch: b, head: h, row: i, column: j,
                                probability: dropoutProbability)
                            // A dropped weight is multiplied by 0, as in the kernel: a NaN
                            // row stays NaN even when every one of its cells is dropped.
                            weight = kept ? weight / (1 - Double(dropoutProbability)) : weight * 0
                        }
                        rowWeights[j] = weight
                        if wantWeights { weights[rowIndex * keyLength + j] = Float(weight) }
                    }
                    // Weighted sum of the visible values.
                    for d in 0..<valueDim {
                        var acc = 0.0
                        for j in 0..<keyLength where logits[j] != -.infinity {
                            acc += rowWeights[j] * Double(value[b, kvHead, j, d])
                        }
                        output[b * outputStrides[0] + h * outputStrides[1] + i * outputStrides[2] + d] = Float(acc)
                    }
                }
            }
        }
        return BackendResult(output: output, logsumexp: logsumexp, weights: wantWeights ? weights : nil)
    }

    /// The logits of query row (b, h, i) over every key, masks applied: `scale·q`
    /// rounded to float32, the dot products in double precision, a logit beyond
    /// the float32 range NaN, masked cells −∞ (an additive mask added).
    func referenceLogits(b: Int, h: Int, i: Int, scaledQuery: inout [Double], into logits: inout [Double]) {
        let kvHead = h / groupSize
        let causalOffset = causal == .bottomRight ? keyLength - queryLength : 0
        // Logits, with every mask applied as −∞ (or added, for an additive mask).
        for d in 0..<headDim { scaledQuery[d] = Double(scale * query[b, h, i, d]) }
        for j in 0..<keyLength {
            var dot = 0.0
            for d in 0..<headDim {
                dot += scaledQuery[d] * Double(key[b, kvHead, j, d])
            }
            // Logits live in float32: one that is not finite there is NaN.
            var logit = abs(dot) <= Double(Float.greatestFiniteMagnitude) ? dot : .nan
            switch mask {
            case let .keep(keep)?:
                if !keep[b, h, i, j] { logit = -.infinity }
            case let .additive(bias)?:
                // The bias is added to the float32 logit, in float32 (as in
                // PyTorch): a sum past the float32 range is −∞ there, which
                // masks the cell, or +∞, which makes the row NaN.
                let added = Double(bias[b, h, i, j])
                if added == -.infinity {
                    logit = -.infinity
                } else {
                    let biased = logit + added
                    let rounded = Float(biased)
                    logit = rounded == -.infinity ? -.infinity : rounded == .infinity ? .nan : biased
                }
            case nil:
                break
            }
            if causal != nil, j > i + causalOffset { logit = -.infinity }
            if let keyPaddingKeep, !keyPaddingKeep[b * keyLength + j] { logit = -.infinity }
            logits[j] = logit
        }
    }
}

/// The oracle's result: what the fused path returns, plus the attention weights.
public struct ReferenceAttentionResult: Sendable {
    /// `[..., heads, queryLength, valueDim]`, the shape of the queries with the last
    /// dimension replaced by the values' `valueDim`.
    public var output: Tensor<Float>
    /// The attention weights after masking, softmax and dropout,
    /// `[..., heads, queryLength, keyLength]`; rows with no visible key are zeros.
    public var weights: Tensor<Float>
    /// `log Σ_j exp(logit_j)` per query row (natural log, before dropout),
    /// `[..., heads, queryLength]`; −∞ for a row with no visible key.
    public var logsumexp: Tensor<Float>
}

/// The naive oracle for ``scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:backend:threads:)``, written straight from the
/// math in double precision. Slow (O(Lq·Lk) memory for the weights): use it to
/// check results and to learn, not in production.
public enum Reference {
    /// Attention from the definition, with the same arguments, contract and errors
    /// as ``Attention/scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:backend:threads:)``.
    ///
    /// - Parameters:
    ///   - queries: `[batch, heads, queryLength, headDim]` (rank 2 or 3 drop leading dims).
    ///   - keys: `[batch, kvHeads, keyLength, headDim]`; `kvHeads` divides `heads`.
    ///   - values: `[batch, kvHeads, keyLength, valueDim]`.
    ///   - mask: see ``AttentionMask``.
    ///   - scale: multiplies Q Kᵀ; default 1/√headDim; any finite value.
    ///   - dropoutProbability: in [0, 1); drops attention weights (Philox, keyed by `dropoutSeed`).
    ///   - dropoutSeed: key of the Philox generator; the same seed drops the same
    ///     cells as the fused kernel (``Philox/keeps(seed:batch:head:row:column:probability:)``).
    /// - Returns: the output `[..., heads, queryLength, valueDim]`, the weights
    ///   `[..., heads, queryLength, keyLength]` and the logsumexp
    ///   `[..., heads, queryLength]`, in float32 (computed in float64).
    /// - Throws: `AttentionError.invalidShape` for ranks, sizes or masks that do
    ///   not fit (naming `keys` if the weights would not fit in memory);
    ///   `AttentionError.invalidValue` for a non-finite scale or a dropout
    ///   probability outside [0, 1).
    public static func scaledDotProductAttention(
        queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>,
        mask: AttentionMask = .none, scale: Float? = nil,
        dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0
    ) throws -> ReferenceAttentionResult {
        let problem = try AttentionProblem(
            queries: queries, keys: keys, values: values, mask: mask, scale: scale,
            dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
        _ = try Tensor<Float>.allocatableCount(of: problem.maskShape, argument: "keys", tensor: "weights")
        try problem.checkReferenceScratch()
        let result = problem.runReference(layout: .headsMajor, wantWeights: true)
        let rowShape = Array(queries.shape.dropLast())
        return ReferenceAttentionResult(
            output: Tensor(validShape: rowShape + [problem.valueDim], scalars: result.output),
            weights: Tensor(validShape: rowShape + [problem.keyLength], scalars: result.weights ?? []),
            logsumexp: Tensor(validShape: rowShape, scalars: result.logsumexp ?? []))
    }
}
