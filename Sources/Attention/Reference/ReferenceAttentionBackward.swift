import Foundation

/// The oracle's backward pass: the gradients of `runReference`'s attention,
/// written straight from the chain rule in double precision, one query row at a
/// time, with the full softmax Jacobian.
///
/// For row i, with logits `s_j = scale · q·k_j (+ mask)`, weights
/// `p = softmax(s)`, dropout factors `z_j` (1/(1 − p) if kept, else 0),
/// `w_j = p_j z_j` and output `o = Σ_j w_j v_j`:
///
///     ∂L/∂v_j += w_j · do                         (o is linear in v)
///     ∂L/∂p_j  = z_j · (do · v_j)
///     ∂L/∂s_j  = Σ_k J_jk ∂L/∂p_k,  J_jk = p_j (δ_jk − p_k)   (the softmax Jacobian)
///     ∂L/∂q   += scale · Σ_j ∂L/∂s_j k_j,   ∂L/∂k_j += scale · ∂L/∂s_j q
///
/// It shares no code with the fused kernel's backward (which never forms J: it
/// uses `Σ_k p_k ∂L/∂p_k = do · o`, FlashAttention-2's D). Masked cells have
/// `p_j = 0` and contribute nothing, not even a NaN from their key or value; a row
/// with no visible key has zero gradients; a NaN logit makes its row's
/// contributions NaN. Gradients are with respect to the float32 inputs: the
/// rounding of `scale · q` to float32 is not differentiated (its derivative is
/// taken as `scale`).
extension AttentionProblem {
    /// The gradients for the output gradient `outputGradient [B, Hq, Lq, Dv]`
    /// (a strided view): flat dQ in `queryLayout` and dK, dV in `keyLayout`.
    func runReferenceBackward(
        outputGradient: StridedOperand<Float>, queryLayout: OutputLayout, keyLayout: OutputLayout
    ) -> BackwardResult {
        let dqStrides = queryLayout.strides(batch: batch, heads: queryHeads, length: queryLength, dim: headDim)
        let dkStrides = keyLayout.strides(batch: batch, heads: kvHeads, length: keyLength, dim: headDim)
        let dvStrides = keyLayout.strides(batch: batch, heads: kvHeads, length: keyLength, dim: valueDim)
        var dq = [Double](repeating: 0, count: batch * queryHeads * queryLength * headDim)
        var dk = [Double](repeating: 0, count: batch * kvHeads * keyLength * headDim)
        var dv = [Double](repeating: 0, count: batch * kvHeads * keyLength * valueDim)
        let causalOffset = causal == .bottomRight ? keyLength - queryLength : 0
        var logits = [Double](repeating: 0, count: keyLength)
        var p = [Double](repeating: 0, count: keyLength)
        var z = [Double](repeating: 0, count: keyLength)
        var dp = [Double](repeating: 0, count: keyLength)
        var ds = [Double](repeating: 0, count: keyLength)
        var scaledQuery = [Double](repeating: 0, count: headDim)

        for b in 0..<batch {
            for h in 0..<queryHeads {
                let kvHead = h / groupSize
                for i in 0..<queryLength {
                    for d in 0..<headDim { scaledQuery[d] = Double(scale * query[b, h, i, d]) }
                    for j in 0..<keyLength {
                        logits[j] = referenceLogit(b: b, h: h, i: i, j: j, kvHead: kvHead, scaledQuery: scaledQuery,
                                                   causalOffset: causalOffset)
                    }
                    var rowMax = -Double.infinity
                    for logit in logits where logit.isNaN || logit > rowMax { rowMax = logit }
                    guard rowMax != -.infinity else { continue }  // no visible key: zero gradients
                    var sum = 0.0
                    for j in 0..<keyLength {
                        p[j] = logits[j] == -.infinity ? 0 : exp(logits[j] - rowMax)
                        sum += p[j]
                    }
                    for j in 0..<keyLength {
                        p[j] /= sum
                        if dropoutProbability > 0 {
                            let kept = Philox.keeps(
                                seed: dropoutSeed, batch: b, head: h, row: i, column: j, probability: dropoutProbability)
                            z[j] = kept ? 1 / (1 - Double(dropoutProbability)) : 0
                        } else {
                            z[j] = 1
                        }
                    }
                    // ∂L/∂v_j and ∂L/∂p_j over the visible keys.
                    for j in 0..<keyLength where logits[j] != -.infinity {
                        var dot = 0.0
                        for d in 0..<valueDim {
                            let g = Double(outputGradient[b, h, i, d])
                            dot += g * Double(value[b, kvHead, j, d])
                            dv[b * dvStrides[0] + kvHead * dvStrides[1] + j * dvStrides[2] + d] += p[j] * z[j] * g
                        }
                        dp[j] = z[j] * dot
                    }
                    // ∂L/∂s = J ∂L/∂p, J = diag(p) − p pᵀ, as a matrix-vector product.
                    for j in 0..<keyLength {
                        guard logits[j] != -.infinity else {
                            ds[j] = 0
                            continue
                        }
                        var total = 0.0
                        for k in 0..<keyLength where logits[k] != -.infinity {
                            let jacobian = p[j] * ((j == k ? 1 : 0) - p[k])
                            total += jacobian * dp[k]
                        }
                        ds[j] = total
                    }
                    for j in 0..<keyLength where logits[j] != -.infinity {
                        for d in 0..<headDim {
                            dq[b * dqStrides[0] + h * dqStrides[1] + i * dqStrides[2] + d] +=
                                Double(scale) * ds[j] * Double(key[b, kvHead, j, d])
                            dk[b * dkStrides[0] + kvHead * dkStrides[1] + j * dkStrides[2] + d] +=
                                Double(scale) * ds[j] * Double(query[b, h, i, d])
                        }
                    }
                }
            }
        }
        return BackwardResult(
            queryGradient: dq.map(Float.init), keyGradient: dk.map(Float.init), valueGradient: dv.map(Float.init))
    }

    /// The logit of cell (b, h, i, j) with every mask applied, as `runReference`
    /// forms it: a float32 quantity (NaN past the float32 range), −∞ when masked.
    func referenceLogit(b: Int, h: Int, i: Int, j: Int, kvHead: Int, scaledQuery: [Double], causalOffset: Int) -> Double {
        var dot = 0.0
        for d in 0..<headDim { dot += scaledQuery[d] * Double(key[b, kvHead, j, d]) }
        var logit = abs(dot) <= Double(Float.greatestFiniteMagnitude) ? dot : .nan
        switch mask {
        case let .keep(keep)?:
            if !keep[b, h, i, j] { logit = -.infinity }
        case let .additive(bias)?:
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
        return logit
    }
}

/// The gradients of one backward run, flat, in the layouts asked for.
struct BackwardResult: Sendable {
    var queryGradient: [Float]
    var keyGradient: [Float]
    var valueGradient: [Float]
}
