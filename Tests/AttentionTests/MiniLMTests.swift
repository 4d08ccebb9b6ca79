import XCTest
@testable import Attention
@testable import AttentionExamples

/// Layer 0 of all-MiniLM-L6-v2 (BERT, 384 wide, 12 heads of 32) on a real
/// sentence, against PyTorch's tensors bundled in AttentionExamples.
final class MiniLMTests: XCTestCase {
    func testDemoOutputAgreesWithPyTorchOnBothBackends() throws {
        for backend in [AttentionBackend.fused, .reference] {
            let report = try MiniLMDemo.run(backend: backend)
            XCTAssertEqual(report.sentence, "The quick brown fox jumps over the lazy dog near the riverbank.")
            XCTAssertEqual(report.tokenCount, 16)
            XCTAssertEqual(report.hiddenSize, 384)
            XCTAssertEqual(report.heads, 12)
            XCTAssertEqual(report.headDim, 32)
            XCTAssertEqual(report.output.shape, [1, 16, 384])
            XCTAssertLessThanOrEqual(report.contextDifference, 1e-4, "merged heads vs PyTorch context on \(backend)")
            XCTAssertLessThanOrEqual(report.outputDifference, 1e-4, "attention output vs PyTorch on \(backend)")
        }
    }

    /// The bundled checkpoint slice (reached through `@testable import`).
    private func checkpoint() throws -> SafetensorsFile {
        try SafetensorsFile(contentsOf: ExampleData.url(forResource: "minilm-layer0.safetensors"))
    }

    private func linear(_ file: SafetensorsFile, _ name: String) throws -> Linear {
        let prefix = "encoder.layer.0.attention."
        return try Linear(weight: file.floatTensor(prefix + name + ".weight"), bias: file.floatTensor(prefix + name + ".bias"))
    }

    /// `[1, L, heads·dim]` → `[1, heads, L, dim]`.
    private func splitHeads(_ tensor: Tensor<Float>, heads: Int) throws -> Tensor<Float> {
        let (length, width) = (tensor.shape[1], tensor.shape[2])
        let dim = width / heads
        var scalars: [Float] = []
        for h in 0..<heads {
            for l in 0..<length { scalars += tensor.scalars[(l * width + h * dim)..<(l * width + (h + 1) * dim)] }
        }
        return try Tensor(shape: [1, heads, length, dim], scalars: scalars)
    }

    func testProjectionsSplitIntoPyTorchsQueryKeyAndValueHeads() throws {
        let file = try checkpoint()
        let hidden = try file.floatTensor("hidden_states")
        for (projection, heads) in [("self.query", "query_heads"), ("self.key", "key_heads"), ("self.value", "value_heads")] {
            let projected = try linear(file, projection)(hidden)
            assertClose(try splitHeads(projected, heads: 12), try file.floatTensor(heads), tolerance: 1e-4, heads)
        }
    }

    func testAttentionOverPyTorchsHeadsGivesItsContext() throws {
        let file = try checkpoint()
        let expected = try splitHeads(try file.floatTensor("context"), heads: 12)
        for backend in [AttentionBackend.fused, .reference] {
            let context = try scaledDotProductAttention(
                queries: file.floatTensor("query_heads"), keys: file.floatTensor("key_heads"),
                values: file.floatTensor("value_heads"), backend: backend)
            XCTAssertEqual(context.shape, [1, 12, 16, 32])
            assertClose(context, expected, tolerance: 1e-5, "on \(backend)")
        }
    }

    func testAttentionMaskOfTheSentenceHidesNothing() throws {
        // The checkpoint's attention_mask is all ones: no key padding in this example.
        let mask = try checkpoint().int32Tensor("attention_mask")
        XCTAssertEqual(mask.shape, [1, 16])
        XCTAssertEqual(Set(mask.scalars), [1])
    }
}
