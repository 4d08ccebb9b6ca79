import XCTest
@testable import Attention

/// The exact helpers that let a learner follow attention by hand.
final class ReferenceMathTests: XCTestCase {
    func testMatmulIsTheRowByColumnProduct() throws {
        let a = try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        let b = try Tensor<Float>(shape: [3, 2], scalars: [7, 8, 9, 10, 11, 12])
        XCTAssertEqual(try Reference.matmul(a, b), try Tensor(shape: [2, 2], scalars: [58, 64, 139, 154]))
    }

    func testMatmulBatchesOverLeadingDimensionsAndNamesAMismatch() throws {
        let a = try Tensor<Float>(shape: [2, 1, 2], scalars: [1, 2, 3, 4])
        let b = try Tensor<Float>(shape: [2, 2, 1], scalars: [1, 1, 2, 0])
        XCTAssertEqual(try Reference.matmul(a, b).scalars, [3, 6])
        XCTAssertThrowsError(try Reference.matmul(a, try Tensor(shape: [2, 3, 1], repeating: 0))) { error in
            XCTAssertEqual(error as? AttentionError, .invalidShape(argument: "b", expected: "[..., 2, n] (k = a's last dimension)", actual: [2, 3, 1]))
        }
    }

    func testTransposeSwapsTheLastTwoDimensions() throws {
        let x = try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try Reference.transpose(x), try Tensor(shape: [3, 2], scalars: [1, 4, 2, 5, 3, 6]))
    }

    func testSoftmaxRowsSumToOneAndMaskedCellsGetZero() throws {
        let x = try Tensor<Float>(shape: [2, 3], scalars: [0, 0, -.infinity, -.infinity, -.infinity, -.infinity])
        XCTAssertEqual(try Reference.softmax(x).scalars, [0.5, 0.5, 0, 0, 0, 0])
    }

    func testAttentionScoresAreScaledDotProductsWithMaskedCellsMinusInfinity() throws {
        let q = try Tensor<Float>(shape: [2, 2], scalars: [1, 0, 0, 2])
        let k = try Tensor<Float>(shape: [2, 2], scalars: [3, 4, 5, 6])
        let scores = try Reference.attentionScores(queries: q, keys: k, mask: .causal(.topLeft), scale: 0.5)
        XCTAssertEqual(scores, try Tensor(shape: [2, 2], scalars: [1.5, -.infinity, 4, 6]))
        // softmax(scores) are the oracle's weights.
        let v = try Tensor<Float>(shape: [2, 1], scalars: [1, 2])
        let weights = try Reference.scaledDotProductAttention(queries: q, keys: k, values: v, mask: .causal(.topLeft), scale: 0.5).weights
        XCTAssertLessThanOrEqual(try XCTUnwrap(try Reference.softmax(scores).maxAbsoluteDifference(to: weights)), 1e-7)
    }
}
