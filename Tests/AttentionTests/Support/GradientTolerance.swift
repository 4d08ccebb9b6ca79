import XCTest
@testable import Attention

/// How close the fused backward must be to the oracle's double-precision
/// gradients (one place, as `Tolerance` for the forward).
///
/// With u = 2⁻²⁴, the recomputed weight P_ij carries the forward's relative
/// logit error u·D·S (S = |scale|·max‖q‖·max‖k‖) plus the logsumexp's; dP = dO·v
/// and D = dO·o are each off by about u·Dv·‖dO‖·‖v‖, and dS = P(dP − D) inherits
/// both, absolutely, times P. Summing dS·k over Lk keys (dQ) or dS·q over Lq
/// rows (dK, where a key's weights over the rows may add up to Lq) adds the
/// operand's norm and the length's rounding. So, per gradient,
///
///     |fused − oracle| ≤ u·(4·D·S + 4·Dv + 2·L + 32) · ‖dO‖·max(‖v‖, 1) · (|scale|·‖operand‖ + 1) · c
///
/// with L the summed length, c = Lq/64 + 1 for the key side (the column sums of
/// P), 1 for dQ; dV's bound takes ‖dO‖ alone for the product.
enum GradientTolerance {
    struct Bounds {
        var queries: Float, keys: Float, values: Float
    }

    static func bounds(
        queries q: Tensor<Float>, keys k: Tensor<Float>, values v: Tensor<Float>, outputGradient dO: Tensor<Float>,
        scale: Float, dropout: Float = 0
    ) -> Bounds {
        let u = Tolerance.unitRoundoff
        let headDim = Float(q.shape.last ?? 0), valueDim = Float(v.shape.last ?? 0)
        let queryLength = Float(q.rank >= 2 ? q.shape[q.rank - 2] : 0)
        let keyLength = Float(k.rank >= 2 ? k.shape[k.rank - 2] : 0)
        let qNorm = Tolerance.largestRowNorm(q), kNorm = Tolerance.largestRowNorm(k)
        let vNorm = max(Tolerance.largestRowNorm(v), 1), dONorm = max(Tolerance.largestRowNorm(dO), 1)
        let logit = abs(scale) * qNorm * kNorm
        let keep = 1 / (1 - dropout)
        let base = u * (4 * headDim * logit + 4 * valueDim + 32) * keep
        let group = q.rank >= 3 && k.rank >= 3 && k.shape[k.rank - 3] > 0 ? Float(q.shape[q.rank - 3] / k.shape[k.rank - 3]) : 1
        let columns = queryLength * group / 64 + 1
        return Bounds(
            queries: (base + 2 * u * keyLength) * dONorm * vNorm * (abs(scale) * kNorm + 1),
            keys: (base + 2 * u * queryLength) * dONorm * vNorm * (abs(scale) * qNorm + 1) * columns,
            values: (base + 2 * u * queryLength) * dONorm * columns * keep)
    }
}
