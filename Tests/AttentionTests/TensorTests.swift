import XCTest
@testable import Attention

final class TensorTests: XCTestCase {
    func testElementCountMustMatchShape() {
        XCTAssertThrowsError(try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3])) { error in
            XCTAssertEqual(error as? AttentionError, .elementCountMismatch(shape: [2, 3], expected: 6, actual: 3))
        }
    }

    func testNegativeDimensionIsRejected() {
        XCTAssertThrowsError(try Tensor<Float>(shape: [2, -1], repeating: 0))
    }

    func testRowMajorIndexing() throws {
        let tensor = try Tensor<Float>(shape: [2, 3], scalars: [0, 1, 2, 3, 4, 5])
        XCTAssertEqual(tensor[1, 0], 3)
        XCTAssertEqual(tensor[0, 2], 2)
        XCTAssertEqual(tensor.strides, [3, 1])
    }

    func testSeededNormalsReproduce() throws {
        let a = try Tensor<Float>.randomNormal([4, 5], seed: 7)
        let b = try Tensor<Float>.randomNormal([4, 5], seed: 7)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, try Tensor<Float>.randomNormal([4, 5], seed: 8))
    }
}
