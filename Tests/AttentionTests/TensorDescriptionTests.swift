import XCTest
@testable import Attention

/// `print(tensor)` follows PyTorch's format (the expected strings are what
/// PyTorch 2.x prints for the same tensor, plus our `shape=` suffix).
final class TensorDescriptionTests: XCTestCase {
    func testMatrixPrintsWithFourDecimalsAlignedRowsAndTheShape() throws {
        let tensor = try Tensor<Float>(shape: [2, 3], scalars: [0.43, 0.15, 0.89, 0.55, 0.87, 0.66])
        XCTAssertEqual(tensor.description, """
            tensor([[0.4300, 0.1500, 0.8900],
                    [0.5500, 0.8700, 0.6600]], shape=[2, 3])
            """)
    }

    func testNegativeNumbersWidenEveryColumnAlike() throws {
        let tensor = try Tensor<Float>(shape: [2], scalars: [-0.43, 0.15])
        XCTAssertEqual(tensor.description, "tensor([-0.4300,  0.1500], shape=[2])")
    }

    func testWholeNumbersPrintWithATrailingDot() throws {
        let tensor = try Tensor<Float>(shape: [2, 2], repeating: 2)
        XCTAssertEqual(tensor.description, "tensor([[2., 2.],\n        [2., 2.]], shape=[2, 2])")
    }

    func testNaNAndInfinitiesPrintByName() throws {
        let tensor = try Tensor<Float>(shape: [3], scalars: [1.5, .nan, -.infinity])
        XCTAssertEqual(tensor.description, "tensor([1.5000,    nan,   -inf], shape=[3])")
    }

    func testWideDynamicRangeSwitchesToScientificNotation() throws {
        let tensor = try Tensor<Float>(shape: [2], scalars: [1e-5, 1])
        XCTAssertEqual(tensor.description, "tensor([1.0000e-05, 1.0000e+00], shape=[2])")
    }

    func testMatricesOfABatchAreSeparatedByABlankLine() throws {
        let tensor = try Tensor<Float>(shape: [2, 1, 2], scalars: [0, 0, 0, 0])
        XCTAssertEqual(tensor.description, "tensor([[[0., 0.]],\n\n        [[0., 0.]]], shape=[2, 1, 2])")
    }

    func testMoreThanAThousandElementsAreSummarisedWithEllipses() throws {
        let vector = try Tensor<Float>(shape: [2000], scalars: (0..<2000).map(Float.init))
        XCTAssertEqual(vector.description, "tensor([   0.,    1.,    2.,  ..., 1997., 1998., 1999.], shape=[2000])")
        let column = try Tensor<Float>(shape: [1001, 1], repeating: 0)
        XCTAssertEqual(column.description, """
            tensor([[0.],
                    [0.],
                    [0.],
                    ...,
                    [0.],
                    [0.],
                    [0.]], shape=[1001, 1])
            """)
    }

    func testLongRowsWrapAtEightyColumns() throws {
        let tensor = try Tensor<Float>(shape: [12], scalars: (0..<12).map { Float($0) + 0.5 })
        XCTAssertEqual(tensor.description, """
            tensor([ 0.5000,  1.5000,  2.5000,  3.5000,  4.5000,  5.5000,  6.5000,  7.5000,
                     8.5000,  9.5000, 10.5000, 11.5000], shape=[12])
            """)
    }

    func testScalarsEmptyTensorsAndBooleans() throws {
        XCTAssertEqual(try Tensor<Float>(shape: [], scalars: [0.25]).description, "tensor(0.2500, shape=[])")
        XCTAssertEqual(try Tensor<Float>(shape: [0, 3], scalars: []).description, "tensor([], shape=[0, 3])")
        XCTAssertEqual(try Tensor<Bool>(shape: [2], scalars: [true, false]).description, "tensor([ True, False], shape=[2])")
    }
}
