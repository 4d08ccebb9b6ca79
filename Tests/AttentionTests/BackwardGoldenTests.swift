import XCTest
@testable import Attention

/// Gradients against PyTorch 2.15's autograd (`Fixtures/backward`, made by
/// `Fixtures/make_backward_golden.py`; provenance in `Fixtures/README.md`):
/// `scaled_dot_product_attention`'s dq, dk, dv for every mask kind, both causal
/// alignments, grouped-query attention, a custom scale and value width, at a tile
/// edge; `nn.MultiheadAttention`'s and the book's `MultiHeadAttention`'s input and
/// parameter gradients (causal, cross-attention with key padding, no bias, GQA).
final class BackwardGoldenTests: XCTestCase {
    struct Index: Decodable {
        let torch: String
        let cases: [Case]
    }

    struct Case: Decodable {
        let name: String
        let op: String
        let params: Params
    }

    struct Params: Decodable {
        let causal: CausalValue?
        let mask: String?
        let scale: Double?
        let num_heads: Int?
        let kv_heads: Int?
        let cross_attention: Bool?
        let bias: Bool?
    }

    /// `causal` is a string for sdpa ("top_left", "bottom_right", null) and a Bool for mha.
    enum CausalValue: Decodable {
        case flag(Bool), alignment(String)
        init(from decoder: Decoder) throws {
            let container = try decoder.singleValueContainer()
            if let flag = try? container.decode(Bool.self) { self = .flag(flag) } else { self = .alignment(try container.decode(String.self)) }
        }
    }

    static var directory: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("backward")
    }

    func cases(_ op: String) throws -> [Case] {
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: Self.directory.appendingPathComponent("index.json")))
        XCTAssertTrue(index.torch.hasPrefix("2.15"), "fixtures from torch \(index.torch)")
        return index.cases.filter { $0.op == op }
    }

    func file(_ c: Case) throws -> SafetensorsFile {
        try SafetensorsFile(contentsOf: Self.directory.appendingPathComponent("\(c.name).safetensors"))
    }

    /// float32 against float32: both sides round differently; 2e-5 absolute, 1e-3 relative.
    func assertMatches(_ actual: Tensor<Float>, _ expected: Tensor<Float>, _ label: String,
                       file: StaticString = #filePath, line: UInt = #line) {
        assertGoldenClose(actual, expected, absolute: 1e-4, relative: 1e-3, negligible: 2e-5, label, file: file, line: line)
    }

    func testScaledDotProductAttentionGradientsMatchPyTorch() throws {
        let all = try cases("sdpa")
        XCTAssertEqual(all.count, 9)
        for c in all {
            let f = try file(c)
            var mask = AttentionMask.none
            switch c.params.causal {
            case .alignment("top_left")?: mask = .causal(.topLeft)
            case .alignment("bottom_right")?: mask = .causal(.bottomRight)
            default: break
            }
            if c.params.mask == "keep" { mask = .keep(try f.boolTensor("mask_keep")) }
            if c.params.mask == "additive" { mask = .additive(try f.floatTensor("mask_additive")) }
            let (q, k, v, dO) = (try f.floatTensor("q"), try f.floatTensor("k"), try f.floatTensor("v"), try f.floatTensor("dout"))
            let scale = c.params.scale.map { Float($0) }
            try forEachKernelPath { path in
                let forward = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, scale: scale)
                assertMatches(forward.output, try f.floatTensor("out"), "out \(c.name) \(path)")
                let g = try scaledDotProductAttentionBackward(
                    queries: q, keys: k, values: v, output: forward.output, logsumexp: forward.logsumexp,
                    outputGradient: dO, mask: mask, scale: scale)
                assertMatches(g.queries, try f.floatTensor("dq"), "dq \(c.name) \(path)")
                assertMatches(g.keys, try f.floatTensor("dk"), "dk \(c.name) \(path)")
                assertMatches(g.values, try f.floatTensor("dv"), "dv \(c.name) \(path)")
            }
            let oracle = try Reference.scaledDotProductAttentionBackward(
                queries: q, keys: k, values: v, outputGradient: dO, mask: mask, scale: scale)
            assertMatches(oracle.queries, try f.floatTensor("dq"), "oracle dq \(c.name)")
            assertMatches(oracle.keys, try f.floatTensor("dk"), "oracle dk \(c.name)")
            assertMatches(oracle.values, try f.floatTensor("dv"), "oracle dv \(c.name)")
        }
    }

    /// Rows concatenated: PyTorch's packed in_proj layout [3E, E] / [3E].
    func packed(_ parts: [Tensor<Float>]) -> Tensor<Float> {
        let rows = parts.reduce(0) { $0 + $1.shape[0] }
        let tail = Array(parts[0].shape.dropFirst())
        return Tensor(validShape: [rows] + tail, scalars: parts.flatMap(\.scalars))
    }

    func testMultiheadAttentionParameterGradientsMatchPyTorch() throws {
        let all = try cases("mha")
        XCTAssertEqual(all.count, 4)
        for c in all {
            let f = try file(c)
            let names = Set(f.tensorNames)
            let bias = c.params.bias ?? true
            let causal: CausalAlignment? = { if case .flag(true)? = c.params.causal { return .topLeft }; return nil }()
            let layer = try MultiHeadAttention(
                packedInProjectionWeight: f.floatTensor("in_proj_weight"),
                packedInProjectionBias: bias ? f.floatTensor("in_proj_bias") : nil,
                outputProjectionWeight: f.floatTensor("out_proj_weight"),
                outputProjectionBias: bias ? f.floatTensor("out_proj_bias") : nil,
                heads: c.params.num_heads ?? 1, causal: causal)
            let xq = try f.floatTensor("x_q")
            let cross = c.params.cross_attention == true
            let xkv = cross ? try f.floatTensor("x_kv") : xq
            let padding = names.contains("key_padding_keep") ? try f.boolTensor("key_padding_keep").map { !$0 } : nil
            let (y, state) = cross
                ? try layer.forwardForTraining(query: xq, key: xkv, value: xkv, keyPadding: padding.map(KeyPadding.padding))
                : try layer.forwardForTraining(xq)
            assertMatches(y, try f.floatTensor("out"), "out \(c.name)")
            let g = try layer.backward(state, outputGradient: try f.floatTensor("dout"))
            if cross {
                assertMatches(g.query, try f.floatTensor("grad_x_q"), "dx_q \(c.name)")
                let keyValue = Tensor(validShape: g.key.shape, scalars: zip(g.key.scalars, g.value.scalars).map { $0 + $1 })
                assertMatches(keyValue, try f.floatTensor("grad_x_kv"), "dx_kv \(c.name)")
            } else {
                assertMatches(try XCTUnwrap(g.input), try f.floatTensor("grad_x_q"), "dx \(c.name)")
            }
            assertMatches(packed([g.queryProjection.weight, g.keyProjection.weight, g.valueProjection.weight]),
                          try f.floatTensor("grad_in_proj_weight"), "d in_proj_weight \(c.name)")
            assertMatches(try XCTUnwrap(g.outputProjection).weight, try f.floatTensor("grad_out_proj_weight"), "d out_proj.weight \(c.name)")
            if bias {
                assertMatches(packed([g.queryProjection.bias!, g.keyProjection.bias!, g.valueProjection.bias!]),
                              try f.floatTensor("grad_in_proj_bias"), "d in_proj_bias \(c.name)")
                assertMatches(try XCTUnwrap(g.outputProjection?.bias), try f.floatTensor("grad_out_proj_bias"), "d out_proj.bias \(c.name)")
            }
        }
    }

    func testBookMultiHeadAttentionGradientsMatchPyTorchWithGroupedQueries() throws {
        let all = try cases("book_mha")
        XCTAssertEqual(all.count, 2)
        for c in all {
            let f = try file(c)
            let names = Set(f.tensorNames)
            func linear(_ name: String) throws -> Linear {
                try Linear(weight: f.floatTensor("\(name).weight"), bias: names.contains("\(name).bias") ? f.floatTensor("\(name).bias") : nil)
            }
            let layer = try MultiHeadAttention(
                query: linear("W_query"), key: linear("W_key"), value: linear("W_value"), outputProjection: linear("out_proj"),
                heads: c.params.num_heads ?? 1, kvHeads: c.params.kv_heads, causal: .topLeft)
            let (y, state) = try layer.forwardForTraining(try f.floatTensor("x"))
            assertMatches(y, try f.floatTensor("out"), "out \(c.name)")
            let g = try layer.backward(state, outputGradient: try f.floatTensor("dout"))
            assertMatches(try XCTUnwrap(g.input), try f.floatTensor("grad_x"), "dx \(c.name)")
            let pairs: [(String, LinearParameterGradients?)] = [
                ("W_query", g.queryProjection), ("W_key", g.keyProjection), ("W_value", g.valueProjection), ("out_proj", g.outputProjection),
            ]
            for (name, gradients) in pairs {
                let gradients = try XCTUnwrap(gradients)
                assertMatches(gradients.weight, try f.floatTensor("grad_\(name).weight"), "d \(name).weight \(c.name)")
                if names.contains("grad_\(name).bias") {
                    assertMatches(try XCTUnwrap(gradients.bias), try f.floatTensor("grad_\(name).bias"), "d \(name).bias \(c.name)")
                }
            }
        }
    }
}
