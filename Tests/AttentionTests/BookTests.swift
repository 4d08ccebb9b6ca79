import XCTest
@testable import Attention
import AttentionExamples

/// The worked example of Raschka's chapter 3 ("Your journey starts with one
/// step"): every number the book prints, reproduced by the package's layers.
final class BookTests: XCTestCase {
    /// The comparisons of `BookDemo` that have a printed value to match.
    static let comparedValueCount = 13

    func testBookDemoAgreesWithEveryPrintedNumberOnBothBackends() throws {
        for backend in [AttentionBackend.fused, .reference] {
            let sections = try BookDemo.run(backend: backend)
            XCTAssertEqual(sections.count, 4, "the four variants")
            var compared = 0
            for section in sections {
                for comparison in section.comparisons {
                    guard let expected = comparison.expected else { continue }
                    XCTAssertEqual(comparison.computed.shape, expected.shape, "\(section.title) / \(comparison.name) on \(backend)")
                    let difference = try XCTUnwrap(comparison.maxAbsoluteDifference, "\(comparison.name): shapes differ")
                    XCTAssertLessThanOrEqual(difference, 1e-4, "\(section.title) / \(comparison.name) on \(backend)")
                    compared += 1
                }
            }
            XCTAssertEqual(compared, Self.comparedValueCount, "comparisons with a printed value on \(backend)")
        }
    }

    func testSimpleSelfAttentionReproducesScoresWeightsAndContext() throws {
        let book = try BookChapter3.load()
        let inputs = try Tensor(matrix: book.inputs)
        XCTAssertEqual(inputs.shape, [6, 3])
        // scores = x·xᵀ: a Linear layer whose weight is x itself.
        assertClose(try Linear(weight: inputs)(inputs), try Tensor(matrix: book.simple.scores), tolerance: 1e-5, "scores")
        for backend in [AttentionBackend.fused, .reference] {
            let layer = SimpleSelfAttention(backend: backend)
            assertClose(try layer(inputs), try Tensor(matrix: book.simple.context), tolerance: 1e-5, "context on \(backend)")
            assertClose(try layer.attentionWeights(inputs), try Tensor(matrix: book.simple.weights), tolerance: 1e-5, "weights")
        }
    }

    func testSelfAttentionV2ReproducesWeightsAndContext() throws {
        let book = try BookChapter3.load()
        let inputs = try Tensor(matrix: book.inputs)
        let v2 = book.selfAttentionV2
        for backend in [AttentionBackend.fused, .reference] {
            var layer = try SelfAttention(
                query: Linear(weight: Tensor(matrix: v2.Wq)), key: Linear(weight: Tensor(matrix: v2.Wk)),
                value: Linear(weight: Tensor(matrix: v2.Wv)))
            layer.backend = backend
            XCTAssertEqual(layer.parameterCount, 18, "three 2×3 matrices, no bias")
            assertClose(try layer(inputs), try Tensor(matrix: v2.context), tolerance: 1e-5, "context on \(backend)")
            assertClose(try layer.attentionWeights(inputs), try Tensor(matrix: v2.weights), tolerance: 1e-5, "weights")
        }
    }

    func testCausalAttentionWeightsAreLowerTriangularAndMatchTheBook() throws {
        let book = try BookChapter3.load()
        let inputs = try Tensor(matrix: book.inputs)
        let v2 = book.selfAttentionV2
        let layer = try CausalSelfAttention(
            query: Linear(weight: Tensor(matrix: v2.Wq)), key: Linear(weight: Tensor(matrix: v2.Wk)),
            value: Linear(weight: Tensor(matrix: v2.Wv)), contextLength: 6)
        let weights = try layer.attentionWeights(inputs)
        assertClose(weights, try Tensor(matrix: v2.causalWeights), tolerance: 1e-5)
        for i in 0..<6 {
            for j in (i + 1)..<6 { XCTAssertEqual(weights[i, j], 0, "weight (\(i), \(j)) above the diagonal") }
        }
        assertClose(try layer(inputs), try Tensor(matrix: v2.causalContext), tolerance: 1e-5)
    }

    func testDropoutWithTheBooksKeptCellsReproducesItsNumbers() throws {
        let book = try BookChapter3.load()
        let dropout = try Dropout(probability: book.dropoutDemo.p)
        let keptOnOnes = try Tensor(matrix: book.dropoutDemo.onOnes)
        let keep = keptOnOnes.map { $0 != 0 }
        // On ones, inverted dropout with p = 0.5 gives exactly 2 or 0.
        XCTAssertEqual(try dropout.apply(try Tensor(shape: [6, 6], repeating: 1), keep: keep), keptOnOnes)
        let v2 = book.selfAttentionV2
        assertClose(try dropout.apply(try Tensor(matrix: v2.causalWeights), keep: keep),
                    try Tensor(matrix: book.dropoutDemo.onCausalWeights), tolerance: 1e-5)
    }

    func testCausalSelfAttentionRejectsMoreTokensThanContextLength() throws {
        let layer = try CausalSelfAttention(dIn: 3, dOut: 2, contextLength: 6)
        let book = try BookChapter3.load()
        let sevenTokens = try Tensor(matrix: book.inputs + [[0.1, 0.2, 0.3]])
        XCTAssertEqual(sevenTokens.shape, [7, 3])
        assertThrows(.sequenceTooLong(argument: "input", contextLength: 6, actual: 7), try layer(sevenTokens))
        assertThrows(.sequenceTooLong(argument: "input", contextLength: 6, actual: 7), try layer.attentionWeights(sevenTokens))
        XCTAssertEqual(try layer(try Tensor(matrix: book.inputs)).shape, [6, 2], "six tokens fit")
    }

    func testGPT2SizedMultiHeadAttentionHas2360064Parameters() throws {
        // 3 · 768² query/key/value weights (no qkv bias) + 768² + 768 output projection.
        let layer = try MultiHeadAttention(dIn: 768, dOut: 768, heads: 12)
        XCTAssertEqual(layer.parameterCount, 2_360_064)
        XCTAssertEqual(layer.parameterCount, 4 * 768 * 768 + 768)
        XCTAssertEqual(layer.headDim, 64)
        XCTAssertEqual(try BookChapter3.load().gpt2SizeParameterCount, 2_360_064)
        let withQKVBias = try MultiHeadAttention(dIn: 768, dOut: 768, heads: 12, qkvBias: true)
        XCTAssertEqual(withQKVBias.parameterCount, 2_360_064 + 3 * 768)
    }

    func testWrapperOutputIsTheHeadsSideBySideHeadsTimesDOutWide() throws {
        let book = try BookChapter3.load()
        let batch = try Tensor(matrices: [book.inputs, book.inputs])
        let wrapper = try MultiHeadAttentionWrapper(dIn: 3, dOut: 2, contextLength: 6, numHeads: 3)
        XCTAssertEqual(wrapper.heads.count, 3)
        let output = try wrapper(batch)
        XCTAssertEqual(output.shape, [2, 6, 3 * 2], "heads · dOut")
        for (h, head) in wrapper.heads.enumerated() {
            let single = try head(batch)
            for b in 0..<2 {
                for i in 0..<6 {
                    for d in 0..<2 { XCTAssertEqual(output[b, i, h * 2 + d], single[b, i, d], "head \(h) at (\(b), \(i), \(d))") }
                }
            }
        }
        XCTAssertEqual(try wrapper(try Tensor(matrix: book.inputs)).shape, [6, 6], "unbatched input")
    }

    func testBookMultiHeadAttentionContextOnBothBackends() throws {
        let book = try BookChapter3.load()
        let mha = book.multiHeadAttention
        let batch = try Tensor(matrices: [book.inputs, book.inputs])
        for backend in [AttentionBackend.fused, .reference] {
            var layer = try MultiHeadAttention(
                query: Linear(weight: Tensor(matrix: mha.Wq)), key: Linear(weight: Tensor(matrix: mha.Wk)),
                value: Linear(weight: Tensor(matrix: mha.Wv)),
                outputProjection: Linear(weight: Tensor(matrix: mha.outWeight), bias: Tensor(shape: [mha.outBias.count], scalars: mha.outBias)),
                heads: mha.numHeads, causal: .topLeft, contextLength: mha.contextLength)
            layer.backend = backend
            assertClose(try layer(batch), try Tensor(matrices: mha.context), tolerance: 1e-5, "on \(backend)")
        }
    }
}
