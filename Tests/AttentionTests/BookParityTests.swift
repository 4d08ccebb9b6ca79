import XCTest
@testable import Attention
import AttentionExamples

/// The traps a reader of Raschka's chapter 3 would fall into, closed.
final class BookParityTests: XCTestCase {
    func testBookSignatureMultiHeadAttentionIsCausalLikeTheBooksClass() throws {
        let layer = try MultiHeadAttention(dIn: 3, dOut: 2, contextLength: 6, dropout: 0, numHeads: 2)
        XCTAssertEqual(layer.causal, .topLeft)
        XCTAssertEqual(layer.contextLength, 6)
        XCTAssertEqual(layer.heads, 2)
        // The first token's output does not depend on the tokens after it.
        let book = try BookChapter3.load()
        var changed = book.inputs
        changed[5] = [9, -9, 9]
        let original = try layer(try Tensor(matrix: book.inputs))
        let perturbed = try layer(try Tensor(matrix: changed))
        XCTAssertEqual(Array(original.scalars[0..<10]), Array(perturbed.scalars[0..<10]), "rows 0–4 ignore token 5")
        // The other initialiser keeps PyTorch's default: not causal.
        let pytorchDefault = try MultiHeadAttention(dIn: 3, dOut: 2, heads: 2)
        XCTAssertNil(pytorchDefault.causal)
    }

    func testBookSignatureMultiHeadAttentionWithTheBooksWeightsGivesTheBooksContext() throws {
        let book = try BookChapter3.load()
        let mha = book.multiHeadAttention
        let bookSignature = try MultiHeadAttention(
            dIn: mha.dIn, dOut: mha.dOut, contextLength: mha.contextLength, dropout: 0, numHeads: mha.numHeads)
        // The same layer with the book's weights in place of the seeded ones.
        let layer = try MultiHeadAttention(
            query: Linear(weight: Tensor(matrix: mha.Wq)), key: Linear(weight: Tensor(matrix: mha.Wk)),
            value: Linear(weight: Tensor(matrix: mha.Wv)),
            outputProjection: Linear(weight: Tensor(matrix: mha.outWeight), bias: Tensor(shape: [2], scalars: mha.outBias)),
            heads: bookSignature.heads, causal: bookSignature.causal, contextLength: bookSignature.contextLength,
            dropoutProbability: bookSignature.dropoutProbability)
        let context = try layer(try Tensor(matrices: [book.inputs, book.inputs]))
        XCTAssertLessThanOrEqual(try XCTUnwrap(context.maxAbsoluteDifference(to: try Tensor(matrices: mha.context))), 1e-5)
        // Seeded weights are not PyTorch's: seed 123 is not torch.manual_seed(123).
        XCTAssertNotEqual(try MultiHeadAttention(dIn: 3, dOut: 2, contextLength: 6, dropout: 0, numHeads: 2, seed: 123).query.weight,
                          try Tensor(matrix: mha.Wq))
    }

    func testBookSignatureRejectsHeadsThatDoNotDivideDOut() {
        XCTAssertThrowsError(try MultiHeadAttention(dIn: 3, dOut: 3, contextLength: 6, dropout: 0, numHeads: 2)) { error in
            XCTAssertEqual(error as? AttentionError, .invalidValue(argument: "numHeads", expected: "a positive divisor of dOut = 3", actual: "2"))
        }
    }

    func testBookSignatureNamesItsOwnDropoutArgument() {
        XCTAssertThrowsError(try MultiHeadAttention(dIn: 3, dOut: 2, contextLength: 6, dropout: 1, numHeads: 2)) { error in
            XCTAssertEqual(error as? AttentionError, .invalidValue(argument: "dropout", expected: "a probability in [0, 1)", actual: "1.0"))
        }
    }

    func testTransposedWeightIsNamedAndTheTransposeSuggested() throws {
        let book = try BookChapter3.load()
        let v1 = book.selfAttentionV1  // [in, out] = [3, 2], y = x·W
        let layer = try SelfAttention(
            query: Linear(weight: Tensor(matrix: v1.Wq)), key: Linear(weight: Tensor(matrix: v1.Wk)),
            value: Linear(weight: Tensor(matrix: v1.Wv)))
        XCTAssertThrowsError(try layer(try Tensor(matrix: book.inputs))) { error in
            guard case let .invalidShape(argument, expected, actual)? = error as? AttentionError else {
                return XCTFail("expected invalidShape, got \(error)")
            }
            XCTAssertEqual(argument, "query.weight")
            XCTAssertEqual(actual, [3, 2])
            XCTAssertTrue(expected.contains("weight.transposed()"), expected)
            XCTAssertTrue(expected.hasPrefix("[out, 3]"), expected)
        }
        // Transposed as suggested, it reproduces the book.
        let fixed = try SelfAttention(
            query: Linear(weight: Tensor(matrix: v1.Wq).transposed()), key: Linear(weight: Tensor(matrix: v1.Wk).transposed()),
            value: Linear(weight: Tensor(matrix: v1.Wv).transposed()))
        XCTAssertLessThanOrEqual(try XCTUnwrap(try fixed(try Tensor(matrix: book.inputs)).maxAbsoluteDifference(to: try Tensor(matrix: v1.context))), 1e-5)
    }

    func testTransposedKeyWeightOfMultiHeadAttentionIsNamed() throws {
        let layer = try MultiHeadAttention(
            query: Linear(weight: Tensor(shape: [4, 3], repeating: 0.1)), key: Linear(weight: Tensor(shape: [4, 5], repeating: 0.1)),
            value: Linear(weight: Tensor(shape: [4, 5], repeating: 0.1)), outputProjection: nil, heads: 2)
        let query = try Tensor<Float>(shape: [2, 3], repeating: 1)
        let memory = try Tensor<Float>(shape: [2, 4], repeating: 1)  // 4 features: fits key.weight only transposed
        XCTAssertThrowsError(try layer(query: query, key: memory, value: try Tensor(shape: [2, 5], repeating: 1))) { error in
            guard case let .invalidShape(argument, _, actual)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(argument, "key.weight")
            XCTAssertEqual(actual, [4, 5])
        }
    }

    /// One projection stored [in, out] among [out, in] ones: the error names that one.
    /// `build` throws `invalidShape` naming `name` with the weight's `actual`
    /// shape, an expectation starting `expectedPrefix`, and the transpose suggested.
    private func assertTransposedWeightNamed(
        _ name: String, actual expectedActual: [Int], expectedPrefix: String, _ build: @autoclosure () throws -> Any,
        line: UInt = #line
    ) {
        XCTAssertThrowsError(try build(), line: line) { error in
            guard case let .invalidShape(argument, expected, actual)? = error as? AttentionError else {
                return XCTFail("\(error)", line: line)
            }
            XCTAssertEqual(argument, name, line: line)
            XCTAssertEqual(actual, expectedActual, line: line)
            XCTAssertTrue(expected.hasPrefix(expectedPrefix), expected, line: line)
            XCTAssertTrue(expected.contains("weight.transposed()"), expected, line: line)
        }
    }

    func testTheOneTransposedProjectionOfASingleHeadLayerIsNamed() throws {
        let upright = try Tensor<Float>(shape: [2, 3], repeating: 0.1)  // [dOut, dIn]
        let transposed = try Tensor<Float>(shape: [3, 2], repeating: 0.1)
        for (name, weights) in [("query.weight", [transposed, upright, upright]), ("key.weight", [upright, transposed, upright]),
                                ("value.weight", [upright, upright, transposed])] {
            for causal in [false, true] {
                let (q, k, v) = (try Linear(weight: weights[0]), try Linear(weight: weights[1]), try Linear(weight: weights[2]))
                let build = { () throws -> Any in
                    causal ? try CausalSelfAttention(query: q, key: k, value: v, contextLength: 4)
                           : try SelfAttention(query: q, key: k, value: v)
                }
                assertTransposedWeightNamed(name, actual: [3, 2], expectedPrefix: "[out, 3]", try build())
            }
        }
    }

    func testTheOneTransposedProjectionOfMultiHeadAttentionIsNamed() throws {
        let upright = try Tensor<Float>(shape: [4, 6], repeating: 0.1)  // [dOut, dIn], 2 heads of 2
        let transposed = try Tensor<Float>(shape: [6, 4], repeating: 0.1)
        for (name, query, key) in [("query.weight", transposed, upright), ("key.weight", upright, transposed)] {
            assertTransposedWeightNamed(name, actual: [6, 4], expectedPrefix: "[4, inFeatures]",
                                        try MultiHeadAttention(query: Linear(weight: query), key: Linear(weight: key),
                                                               value: Linear(weight: upright), outputProjection: nil, heads: 2))
        }
    }

    func testLinearSuggestsTheTransposeWhenTheInputFitsTheOtherSide() throws {
        let linear = try Linear(weight: Tensor(shape: [3, 2], repeating: 0))
        XCTAssertThrowsError(try linear(try Tensor(shape: [6, 3], repeating: 1))) { error in
            XCTAssertTrue("\(error)".contains("weight.transposed()"), "\(error)")
        }
    }
}
