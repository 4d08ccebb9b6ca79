import Foundation
import XCTest
@testable import Attention

/// The golden set in `Fixtures/golden` (see `Fixtures/README.md`): PyTorch
/// inputs and outputs, listed by `index.json`, one `<name>.safetensors` per case.
enum GoldenFixtures {
    /// `index.json`: the generator and every case.
    struct Index: Decodable {
        let generator: String
        let cases: [Case]
    }

    /// One case of the index. `tensors` gives the shape of every tensor in the file.
    struct Case: Decodable, CustomStringConvertible {
        let name: String
        let op: String
        let params: Params
        let reference: String
        let tensors: [String: [Int]]

        var description: String { name }
        var isSDPA: Bool { op == "sdpa" }
        var isMHA: Bool { op == "mha" }
    }

    /// The parameters of either op . For `mha`,
    /// `scale` is the effective 1/√headDim PyTorch used, not an override.
    struct Params: Decodable {
        // op = sdpa
        let isCausal: Bool?
        let causalAlignment: String?
        let scale: Double?
        let mask: String?
        // op = mha
        let numHeads: Int?
        let causal: Bool?
        let crossAttention: Bool?
        let keyPadding: Bool?
        let bias: Bool?

        enum CodingKeys: String, CodingKey {
            case isCausal = "is_causal", causalAlignment = "causal_alignment", scale, mask
            case numHeads = "num_heads", causal, crossAttention = "cross_attention", keyPadding = "key_padding", bias
        }
    }

    /// `Fixtures/golden` inside the test bundle.
    static var directory: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("golden")
    }

    static func index() throws -> Index {
        let data = try Data(contentsOf: directory.appendingPathComponent("index.json"))
        return try JSONDecoder().decode(Index.self, from: data)
    }

    static func url(of goldenCase: Case) -> URL {
        directory.appendingPathComponent("\(goldenCase.name).safetensors")
    }

    static func file(_ goldenCase: Case) throws -> SafetensorsFile {
        try SafetensorsFile(contentsOf: url(of: goldenCase))
    }

    /// The causal alignment named by the index (`top_left`, `bottom_right`).
    static func alignment(_ name: String?) throws -> CausalAlignment {
        switch name {
        case "top_left", nil: return .topLeft
        case "bottom_right": return .bottomRight
        case let other?: throw FixtureError.unknownValue(field: "causal_alignment", value: other)
        }
    }

    /// Runs an `sdpa` case as PyTorch's call in `reference` does.
    static func runSDPA(_ goldenCase: Case, backend: AttentionBackend) throws -> AttentionResult {
        let file = try file(goldenCase)
        let params = goldenCase.params
        var mask: AttentionMask
        switch params.mask {
        case nil: mask = .none
        case "keep": mask = .keep(try file.boolTensor("mask_keep"))
        case "additive": mask = .additive(try file.floatTensor("mask_additive"))
        case let other?: throw FixtureError.unknownValue(field: "mask", value: other)
        }
        if params.isCausal == true {
            guard case .none = mask else { throw FixtureError.unknownValue(field: "is_causal", value: "with a mask") }
            mask = .causal(try alignment(params.causalAlignment))
        }
        return try scaledDotProductAttentionWithLogsumexp(
            queries: file.floatTensor("q"), keys: file.floatTensor("k"), values: file.floatTensor("v"),
            mask: mask, scale: params.scale.map { Float($0) }, backend: backend)
    }

    /// Runs an `mha` case: `nn.MultiheadAttention(batch_first=True)` in eval mode,
    /// loaded from its packed `in_proj_weight`.
    static func runMHA(_ goldenCase: Case, backend: AttentionBackend) throws -> Tensor<Float> {
        let file = try file(goldenCase)
        let params = goldenCase.params
        let names = Set(file.tensorNames)
        guard let heads = params.numHeads else { throw FixtureError.unknownValue(field: "num_heads", value: "missing") }
        var layer = try MultiHeadAttention(
            packedInProjectionWeight: file.floatTensor("in_proj_weight"),
            packedInProjectionBias: names.contains("in_proj_bias") ? file.floatTensor("in_proj_bias") : nil,
            outputProjectionWeight: file.floatTensor("out_proj_weight"),
            outputProjectionBias: names.contains("out_proj_bias") ? file.floatTensor("out_proj_bias") : nil,
            heads: heads,
            causal: params.causal == true ? try alignment(params.causalAlignment) : nil)
        layer.backend = backend
        let query = try file.floatTensor("x_q")
        var keyValue = query
        if params.crossAttention == true {
            guard let name = file.tensorNames.first(where: { $0.hasPrefix("x_") && $0 != "x_q" }) else {
                throw FixtureError.unknownValue(field: "cross_attention", value: "true without a key/value tensor")
            }
            keyValue = try file.floatTensor(name)
        }
        // PyTorch's key_padding_mask = ~key_padding_keep: true = padding.
        let padding = names.contains("key_padding_keep") ? try file.boolTensor("key_padding_keep").map { !$0 } : nil
        return try layer(query: query, key: keyValue, value: keyValue, keyPaddingMask: padding)
    }

    enum FixtureError: Error, CustomStringConvertible {
        case unknownValue(field: String, value: String)
        var description: String {
            switch self {
            case let .unknownValue(field, value): return "golden index: unexpected \(field) = \(value)"
            }
        }
    }
}

/// The golden tolerance: elementwise |Δ| ≤ `absolute`, and |Δ| / max(|expected|, 1e-6)
/// ≤ `relative` unless |Δ| ≤ `negligible`. NaN matches only NaN.
func assertGoldenClose(
    _ actual: Tensor<Float>, _ expected: Tensor<Float>,
    absolute: Float = 1e-5, relative: Float = 1e-5, negligible: Float = 1e-6,
    _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.shape, expected.shape, "shape \(message())", file: file, line: line)
    guard actual.shape == expected.shape else { return }
    for (index, (a, e)) in zip(actual.scalars, expected.scalars).enumerated() {
        if (a.isNaN && e.isNaN) || a == e { continue }
        let difference = abs(a - e)
        let relativeDifference = difference / max(abs(e), 1e-6)
        if !(difference <= absolute) || (difference > negligible && !(relativeDifference <= relative)) {
            XCTFail("element \(index): \(a) vs expected \(e), |Δ| = \(difference) (limit \(absolute)), "
                    + "relative \(relativeDifference) (limit \(relative)) \(message())", file: file, line: line)
            return
        }
    }
}

/// Asserts that `body` throws exactly `expected`.
func assertThrows<T>(
    _ expected: AttentionError, _ body: @autoclosure () throws -> T,
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        XCTAssertEqual(error as? AttentionError, expected, file: file, line: line)
    }
}

/// Asserts that `body` throws `AttentionError.invalidShape` naming `argument` with
/// the given actual shape (the `expected` text is prose and not pinned).
func assertThrowsInvalidShape<T>(
    argument: String, actual: [Int], _ body: @autoclosure () throws -> T,
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard case let .invalidShape(thrownArgument, _, thrownActual)? = error as? AttentionError else {
            return XCTFail("expected invalidShape(argument: \(argument)), got \(error)", file: file, line: line)
        }
        XCTAssertEqual(thrownArgument, argument, "argument of \(error)", file: file, line: line)
        XCTAssertEqual(thrownActual, actual, "actual shape of \(error)", file: file, line: line)
    }
}

/// Asserts that `body` throws `AttentionError.invalidValue` naming `argument` with
/// the given actual value.
func assertThrowsInvalidValue<T>(
    argument: String, actual: String, _ body: @autoclosure () throws -> T,
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertThrowsError(try body(), file: file, line: line) { error in
        guard case let .invalidValue(thrownArgument, _, thrownActual)? = error as? AttentionError else {
            return XCTFail("expected invalidValue(argument: \(argument)), got \(error)", file: file, line: line)
        }
        XCTAssertEqual(thrownArgument, argument, "argument of \(error)", file: file, line: line)
        XCTAssertEqual(thrownActual, actual, "actual value of \(error)", file: file, line: line)
    }
}
