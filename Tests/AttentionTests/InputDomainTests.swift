import XCTest
@testable import Attention

/// Inputs at the edge of what float32 and memory can hold: a typed error or a
/// NaN that says "no number here", never a crash and never a plausible wrong number.
final class InputDomainTests: XCTestCase {
    let q = try! Tensor<Float>(shape: [1, 1, 1, 1], scalars: [2])
    let k = try! Tensor<Float>(shape: [1, 1, 1, 1], scalars: [1])
    let v = try! Tensor<Float>(shape: [1, 1, 1, 1], scalars: [7])

    func testLogitsBeyondFloat32GiveNaNNotAFakeMaskedRow() throws {
        for scale: Float in [3e38, -3e38] {
            for backend in [AttentionBackend.fused, .reference] {
                let result = try scaledDotProductAttentionWithLogsumexp(
                    queries: q, keys: k, values: v, scale: scale, backend: backend)
                XCTAssertTrue(result.output.scalars[0].isNaN, "scale \(scale), \(backend)")
                XCTAssertTrue(result.logsumexp.scalars[0].isNaN, "scale \(scale), \(backend)")
            }
        }
    }

    func testInfiniteUnmaskedQueryGivesNaNRow() throws {
        var query = try Tensor<Float>.randomNormal([1, 1, 3, 4], seed: 3)
        query[0, 0, 1, 0] = .infinity
        let keys = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 4)
        let values = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 5)
        for backend in [AttentionBackend.fused, .reference] {
            let out = try scaledDotProductAttention(queries: query, keys: keys, values: values, backend: backend)
            XCTAssertTrue((0..<4).allSatisfy { out[0, 0, 1, $0].isNaN }, "\(backend)")
            XCTAssertTrue((0..<4).allSatisfy { out[0, 0, 0, $0].isFinite && out[0, 0, 2, $0].isFinite }, "\(backend)")
        }
    }

    func testShapeWhoseByteSizeOverflowsIsATypedError() {
        XCTAssertThrowsError(try Tensor<Float>(shape: [1 << 62, 4, 0], scalars: []))
        XCTAssertThrowsError(try Tensor<Float>(shape: [Int.max, 2], repeating: 0))
    }

    func testOutputTooLargeForMemoryIsATypedErrorNotACrash() throws {
        // Zero-byte inputs whose combination implies an output of 2⁶² floats.
        let queries = try Tensor<Float>(shape: [1, 1, 2, 0], scalars: [])
        let keys = try Tensor<Float>(shape: [1, 1, 0, 0], scalars: [])
        let values = try Tensor<Float>(shape: [1, 1, 0, 1 << 60], scalars: [])
        XCTAssertThrowsError(try scaledDotProductAttention(queries: queries, keys: keys, values: values)) { error in
            guard case let .invalidShape(argument, _, _)? = error as? AttentionError else {
                return XCTFail("unexpected \(error)")
            }
            XCTAssertEqual(argument, "values")
        }
    }

    func testLayersWithZeroWidthHeadsAreDefined() throws {
        let x = try Tensor<Float>.randomNormal([3, 4], seed: 1)
        var layer = try SelfAttention(dIn: 4, dOut: 0)
        XCTAssertEqual(try layer(x).shape, [3, 0])
        layer.backend = .reference
        XCTAssertEqual(try layer(x).shape, [3, 0])
        let weights = try layer.attentionWeights(x)
        XCTAssertTrue(weights.scalars.allSatisfy { abs($0 - 1.0 / 3) < 1e-6 }, "all scores 0: uniform weights")
    }
}
