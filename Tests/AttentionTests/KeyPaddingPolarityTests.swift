import XCTest
@testable import Attention

/// Polarity and layout that cannot be mixed up (issue 11, item 6): key padding
/// names its polarity (`.padding`, PyTorch's `key_padding_mask`, or `.keep`, a
/// checkpoint's `attention_mask` as it is), and `batchFirst: false` accepts
/// PyTorch's default `[length, batch, features]`.
final class KeyPaddingPolarityTests: XCTestCase {
    private let layer = try! MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 4)
    private let x = try! Tensor<Float>.randomNormal([2, 6, 8], seed: 2)
    /// A tokenizer's attention mask: 1 = real token; the second sequence has 2 pads.
    private let attentionMask = try! Tensor<Int32>(shape: [2, 6], scalars: [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])

    func testACheckpointsAttentionMaskPassesAsItIs() throws {
        let keep = attentionMask.map { $0 != 0 }
        let padding = keep.map { !$0 }
        let viaPadding = try layer(query: x, key: x, value: x, keyPadding: .padding(padding))
        assertBitIdentical(try layer(query: x, key: x, value: x, keyPadding: .keep(keep)), viaPadding, ".keep = .padding of the complement")
        assertBitIdentical(try layer(query: x, key: x, value: x, keyPadding: .attentionMask(attentionMask)), viaPadding, "Int32 mask")
        assertBitIdentical(try layer(query: x, key: x, value: x, keyPadding: .attentionMask(attentionMask.map(Float.init))),
                           viaPadding, "Float mask")
        assertBitIdentical(try layer(query: x, key: x, value: x, keyPadding: .attentionMask(attentionMask.map(Int64.init))),
                           viaPadding, "Int64 mask")
        // The padded keys are ignored: changing them changes nothing.
        var poisoned = x
        poisoned[1, 4, 0] = 1e3
        poisoned[1, 5, 3] = -7
        let out = try layer(query: x, key: poisoned, value: poisoned, keyPadding: .keep(keep))
        let clean = try layer(query: x, key: x, value: x, keyPadding: .keep(keep))
        XCTAssertEqual(out, clean)
        // Passing the attention mask with the wrong polarity is now a visible choice,
        // and gives other numbers (the silent 3.49 on MiniLM).
        XCTAssertNotEqual(try layer(query: x, key: x, value: x, keyPadding: .padding(keep)), viaPadding)
    }

    /// The golden PyTorch cases with key padding store it as a keep mask
    /// (`key_padding_keep`, 1 = real token, a checkpoint's polarity): passed as
    /// it is with `.keep`, and in PyTorch's sequence-first layout, the layer
    /// reproduces `nn.MultiheadAttention`'s output.
    func testGoldenPaddedCasesPassTheirKeepMaskAsItIsInEitherLayout() throws {
        var checked = 0
        for goldenCase in try GoldenFixtures.index().cases where goldenCase.op == "mha" {
            let file = try GoldenFixtures.file(goldenCase)
            let names = Set(file.tensorNames)
            guard names.contains("key_padding_keep"), goldenCase.params.crossAttention != true else { continue }
            for batchFirst in [true, false] {
                let layer = try MultiHeadAttention(
                    packedInProjectionWeight: file.floatTensor("in_proj_weight"),
                    packedInProjectionBias: names.contains("in_proj_bias") ? file.floatTensor("in_proj_bias") : nil,
                    outputProjectionWeight: file.floatTensor("out_proj_weight"),
                    outputProjectionBias: names.contains("out_proj_bias") ? file.floatTensor("out_proj_bias") : nil,
                    heads: try XCTUnwrap(goldenCase.params.numHeads),
                    causal: goldenCase.params.causal == true ? try GoldenFixtures.alignment(goldenCase.params.causalAlignment) : nil,
                    batchFirst: batchFirst)
                var x = try file.floatTensor("x_q")
                if !batchFirst { x = x.swappingLeadingAxes() }
                var output = try layer(query: x, key: x, value: x, keyPadding: .keep(try file.boolTensor("key_padding_keep")))
                if !batchFirst { output = output.swappingLeadingAxes() }
                assertGoldenClose(output, try file.floatTensor("out_ref64"), "\(goldenCase), batchFirst \(batchFirst)")
            }
            checked += 1
        }
        XCTAssertGreaterThan(checked, 0, "a golden case with key padding")
    }

    @available(*, deprecated)
    func testTheFormerSpellingStillMeansPadding() throws {
        let padding = attentionMask.map { $0 == 0 }
        assertBitIdentical(try layer(query: x, key: x, value: x, keyPaddingMask: padding),
                           try layer(query: x, key: x, value: x, keyPadding: .padding(padding)))
        assertBitIdentical(try layer.attentionWeights(query: x, key: x, value: x, keyPaddingMask: padding),
                           try layer.attentionWeights(query: x, key: x, value: x, keyPadding: .padding(padding)))
    }

    func testAMisshapenMaskNamesItsPolarityAndShape() throws {
        let wrong = try Tensor<Bool>(shape: [6, 2], repeating: true)
        XCTAssertThrowsError(try layer(query: x, key: x, value: x, keyPadding: .keep(wrong))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("keyPadding"), text)
            XCTAssertTrue(text.contains("[2, 6] (batch, keyLength), .keep: true = real token"), text)
        }
        XCTAssertThrowsError(try layer(try Tensor<Float>.randomNormal([2, 6, 5], seed: 1))) { error in
            XCTAssertTrue("\(error)".contains("[batch, length, 8]"), "\(error)")
        }
    }

    func testBatchFirstFalseEqualsBatchFirstOnPermutedInput() throws {
        let query = try Tensor<Float>.randomNormal([3, 5, 8], seed: 7)   // [batch, queryLength, features]
        let memory = try Tensor<Float>.randomNormal([3, 9, 8], seed: 8)  // [batch, keyLength, features]
        let padding = try Tensor<Bool>(shape: [3, 9], scalars: (0..<27).map { $0 % 9 == 8 })
        var sequenceFirst = layer
        sequenceFirst.batchFirst = false
        let expected = try layer(query: query, key: memory, value: memory, keyPadding: .padding(padding))
        let output = try sequenceFirst(
            query: query.swappingLeadingAxes(), key: memory.swappingLeadingAxes(), value: memory.swappingLeadingAxes(),
            keyPadding: .padding(padding))
        XCTAssertEqual(output.shape, [5, 3, 8], "[queryLength, batch, features]")
        assertBitIdentical(output.swappingLeadingAxes(), expected)
        // Weights stay [batch, heads, queryLength, keyLength], as in PyTorch.
        let weights = try sequenceFirst.attentionWeights(
            query: query.swappingLeadingAxes(), key: memory.swappingLeadingAxes(), value: memory.swappingLeadingAxes())
        assertBitIdentical(weights, try layer.attentionWeights(query: query, key: memory, value: memory))
        // Unbatched inputs are the same either way.
        let unbatched = try Tensor<Float>.randomNormal([4, 8], seed: 9)
        assertBitIdentical(try sequenceFirst(unbatched), try layer(unbatched))
        // The initialisers take it, PyTorch's packed one included.
        let built = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 4, batchFirst: false)
        XCTAssertFalse(built.batchFirst)
        assertBitIdentical(try built(query.swappingLeadingAxes()), try layer(query).swappingLeadingAxes())
        var packedWeight: [Float] = []
        for projection in [layer.query, layer.key, layer.value] { packedWeight += projection.weight.scalars }
        let packed = try MultiHeadAttention(
            packedInProjectionWeight: try Tensor(shape: [24, 8], scalars: packedWeight), packedInProjectionBias: nil,
            outputProjectionWeight: layer.outputProjection!.weight, outputProjectionBias: layer.outputProjection!.bias,
            heads: 2, batchFirst: false)
        assertBitIdentical(try packed(query.swappingLeadingAxes()), try layer(query).swappingLeadingAxes())
        // Its errors say the layout it expects.
        XCTAssertThrowsError(try sequenceFirst(try Tensor<Float>.randomNormal([5, 3, 7], seed: 1))) { error in
            XCTAssertTrue("\(error)".contains("[length, batch, 8] (batchFirst: false)"), "\(error)")
        }
    }
}
