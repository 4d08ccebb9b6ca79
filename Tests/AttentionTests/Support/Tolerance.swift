import XCTest
@testable import Attention

/// The one place that states how close a float32 result must be to the
/// double-precision oracle.
///
/// With unit roundoff u = 2⁻²⁴, a float32 dot product of length D is off by at
/// most D·u·Σ_d|q_d·k_d| (Higham, "Accuracy and Stability of Numerical
/// Algorithms", §3.1), and Σ_d|q_d·k_d| ≤ ‖q‖·‖k‖ (Cauchy–Schwarz). Scaled, a
/// logit is off by at most D·u·S with S = |scale|·max‖q_i‖·max‖k_j‖; exp turns
/// that absolute error into the same relative error of the weight. The online
/// softmax adds about Lk·u relative (running sum and rescales), expf a few u, and
/// the weighted sum of values another Lk·u·max|v|. So, elementwise,
///
///     |fused − oracle| ≤ u·(2·D·S + 2·Lk + 16)·max(|v|, 1)
///
/// with a factor 2 on the terms to cover the rescale products.
enum Tolerance {
    static let unitRoundoff = Float(0x1p-24)

    static func outputBound(queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>, scale: Float) -> Float {
        let headDim = queries.shape.last ?? 0
        let keyLength = keys.rank >= 2 ? keys.shape[keys.rank - 2] : 0
        let maxValue = values.scalars.map(abs).max() ?? 0
        let logitBound = abs(scale) * largestRowNorm(queries) * largestRowNorm(keys)
        return unitRoundoff * (2 * Float(headDim) * logitBound + 2 * Float(keyLength) + 16) * max(maxValue, 1)
    }

    /// max over rows (last dimension) of the Euclidean norm.
    static func largestRowNorm(_ tensor: Tensor<Float>) -> Float {
        guard let width = tensor.shape.last, width > 0 else { return 0 }
        var largest: Float = 0
        for start in stride(from: 0, to: tensor.count, by: width) {
            var sum: Float = 0
            for value in tensor.scalars[start..<start + width] { sum += value * value }
            largest = max(largest, sum.squareRoot())
        }
        return largest
    }
}

/// Asserts elementwise |actual − expected| ≤ tolerance, where NaN matches NaN and
/// equal infinities match; reports the first offending element.
func assertClose(
    _ actual: Tensor<Float>, _ expected: Tensor<Float>, tolerance: Float, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.shape, expected.shape, "shape \(message())", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    for (index, (a, e)) in zip(actual.scalars, expected.scalars).enumerated() {
        if (a.isNaN && e.isNaN) || a == e { continue }
        let difference = abs(a - e)
        if !(difference <= tolerance) {
            XCTFail("element \(index): \(a) vs expected \(e), |Δ| = \(difference) > \(tolerance) \(message())",
                    file: file, line: line)
            return
        }
    }
}
