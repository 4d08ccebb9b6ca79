// Bad input at every public entry point: each gives a typed error (AttentionError,
// SafetensorsError, an attn_status from C) whose message names the argument, the
// expected and the actual value. The bad inputs tried, by entry point:
//
// scaledDotProductAttention (fused and reference), scaledDotProductAttentionWithLogsumexp,
// Reference.scaledDotProductAttention — queries [1, 2, 3, 4], keys [1, 2, 5, 4], values [1, 2, 5, 6]:
//   queries of rank 1 [8] and rank 5 · keys of rank 3 · values of rank 3 · keys of batch 2 ·
//   keys of head dim 5 · values of length 6 · values with 1 head (keys 2) · 3 query heads on
//   2 key/value heads (non-integer GQA ratio) · 0 key/value heads for 2 query heads ·
//   keep mask [3, 6] (key length 5) · additive mask [2, 1, 3, 5] (batch 1) · keep mask of rank 5 ·
//   keep mask [3, 3, 5] (3 heads for 2) · scale +∞, −∞, NaN · dropout 1, 1.5, −0.1, NaN, +∞ ·
//   threads 0 and −3
// Tensor: a negative dimension · scalars of the wrong count · reshaped to another count ·
//   transposed at rank 3 · a shape whose element count overflows Int
// Linear: weight of rank 1 · bias [3] for 2 outputs · input of width 4 for 3 · a rank-0
//   input · a negative feature count
// Dropout: probability 1, −0.1, NaN, +∞ · a keep mask of another shape
// SimpleSelfAttention: input of rank 1 and rank 4
// SelfAttention: input of the wrong width · key and query projections of different widths ·
//   a negative dIn
// CausalSelfAttention: input longer than contextLength · contextLength −1 · dropout 1
// MultiHeadAttention (init): heads not dividing dOut · heads 0 · dOut −8 · kvHeads not dividing
//   heads · heads not dividing the query projection width · output projection of the wrong
//   width · contextLength −1 · dropout 1 · packed in-projection [12, 5] (not [3E, E]) ·
//   packed bias of the wrong length · heads not dividing the packed E
// MultiHeadAttention (call): query or key longer than contextLength · query of the wrong width ·
//   key batch ≠ query batch · value length ≠ key length · an unbatched query with a batched
//   key, or with a batched value · key padding [2, 4] for 5 keys · a mask that cannot
//   broadcast · a causal mask other than the layer's
// MultiHeadAttentionWrapper: no heads · numHeads −1 · heads with different dIn · input longer
//   than contextLength
// SafetensorsFile: 5 bytes · a file cut inside its header · a file missing its last 4 data
//   bytes · a header that is not JSON · reading a U8 tensor as F32 · reading an F32 tensor as
//   Bool · a missing tensor
// attn_sdpa_forward: NULL params · each size negative · 3 query heads on 2 kv heads · 0 kv
//   heads · a non-contiguous innermost stride of query, key, value, output · NULL query,
//   key, value, output, mask · scale ±∞ and NaN · dropout 1, −0.1, NaN · mask kind 7 · causal 9 ·
//   batch 2³² × 2³² query heads (the product overflows int64: a known bug, skipped by default)
// attn_linear_forward: a negative size · NULL x, weight, y
// attention sdpa: k with another head dim than q · v stored as U8
// (What each gives is in the assertions below; the file's tests print nothing.)
import CAttention
import Foundation
import XCTest
@testable import Attention

final class ErrorTests: XCTestCase {
    /// Asserts that `body` throws an error of type `E` whose description contains
    /// every fragment (the argument, the expected and the actual value).
    private func assertThrowsError<E: Error, T>(
        _ errorType: E.Type, _ body: @autoclosure () throws -> T, mentions fragments: [String],
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            guard error is E else {
                return XCTFail("expected \(E.self), got \(type(of: error)): \(error)", file: file, line: line)
            }
            let message = String(describing: error)
            XCTAssertFalse(message.contains("\n"), "one line: \(message)", file: file, line: line)
            for fragment in fragments where !message.contains(fragment) {
                XCTFail("\"\(message)\" does not mention \"\(fragment)\"", file: file, line: line)
            }
        }
    }

    private func assertAttentionError<T>(
        _ body: @autoclosure () throws -> T, mentions fragments: [String], file: StaticString = #filePath, line: UInt = #line
    ) {
        assertThrowsError(AttentionError.self, try body(), mentions: fragments, file: file, line: line)
    }

    // MARK: The functional API

    func testFunctionalAPIErrorsNameTheArgumentTheExpectedAndTheActualValue() throws {
        let q = try Tensor<Float>.randomNormal([1, 2, 3, 4], seed: 1)
        let k = try Tensor<Float>.randomNormal([1, 2, 5, 4], seed: 2)
        let v = try Tensor<Float>.randomNormal([1, 2, 5, 6], seed: 3)
        func t(_ shape: [Int]) throws -> Tensor<Float> { try Tensor.randomNormal(shape, seed: 4) }
        func keep(_ shape: [Int]) throws -> AttentionMask { .keep(try Tensor(shape: shape, repeating: true)) }
        let full = "[1, 2, 3, 5]"
        // (queries, keys, values, mask, scale, dropout, threads, fragments of the message)
        typealias Call = (Tensor<Float>, Tensor<Float>, Tensor<Float>, AttentionMask, Float?, Float, Int?, [String])
        var calls: [Call] = [
            (try t([8]), k, v, .none, nil, 0, nil, ["queries", "rank 2 to 4", "[8]"]),
            (try t([1, 1, 2, 3, 4]), k, v, .none, nil, 0, nil, ["queries", "rank 2 to 4", "[1, 1, 2, 3, 4]"]),
            (q, try t([2, 5, 4]), v, .none, nil, 0, nil, ["keys", "rank 4 like queries [1, 2, 3, 4]", "[2, 5, 4]"]),
            (q, k, try t([2, 5, 6]), .none, nil, 0, nil, ["values", "rank 4 like queries [1, 2, 3, 4]", "[2, 5, 6]"]),
            (q, try t([2, 2, 5, 4]), v, .none, nil, 0, nil, ["keys", "batch 1", "[2, 2, 5, 4]"]),
            (q, try t([1, 2, 5, 5]), v, .none, nil, 0, nil, ["keys", "headDim 4", "[1, 2, 5, 5]"]),
            (q, k, try t([1, 2, 6, 6]), .none, nil, 0, nil, ["values", "[1, 2, 5, valueDim]", "[1, 2, 6, 6]"]),
            (q, k, try t([1, 1, 5, 6]), .none, nil, 0, nil, ["values", "[1, 2, 5, valueDim]", "[1, 1, 5, 6]"]),
            (try t([1, 3, 3, 4]), k, v, .none, nil, 0, nil, ["keys", "dividing the 3 query heads", "[1, 2, 5, 4]"]),
            (q, try t([1, 0, 5, 4]), try t([1, 0, 5, 6]), .none, nil, 0, nil, ["keys", "dividing the 2 query heads", "[1, 0, 5, 4]"]),
            (q, k, v, try keep([3, 6]), nil, 0, nil, ["mask", full, "[3, 6]"]),
            (q, k, v, .additive(try t([2, 1, 3, 5])), nil, 0, nil, ["mask", full, "[2, 1, 3, 5]"]),
            (q, k, v, try keep([1, 1, 2, 3, 5]), nil, 0, nil, ["mask", full, "[1, 1, 2, 3, 5]"]),
            (q, k, v, try keep([3, 3, 5]), nil, 0, nil, ["mask", full, "[3, 3, 5]"]),
            (q, k, v, .none, nil, 0, 0, ["threads", "at least 1", "got 0"]),
            (q, k, v, .none, nil, 0, -3, ["threads", "at least 1", "got -3"]),
        ]
        for scale in [Float.infinity, -.infinity, .nan] {
            calls.append((q, k, v, .none, scale, 0, nil, ["scale", "a finite number", "got \(scale)"]))
        }
        for dropout in [Float(1), 1.5, -0.1, .nan, .infinity] {
            calls.append((q, k, v, .none, nil, dropout, nil, ["dropoutProbability", "[0, 1)", "got \(dropout)"]))
        }
        for (queries, keys, values, mask, scale, dropout, threads, fragments) in calls {
            for backend in [AttentionBackend.fused, .reference] {
                assertAttentionError(try scaledDotProductAttention(
                    queries: queries, keys: keys, values: values, mask: mask, scale: scale,
                    dropoutProbability: dropout, backend: backend, threads: threads), mentions: fragments)
                assertAttentionError(try scaledDotProductAttentionWithLogsumexp(
                    queries: queries, keys: keys, values: values, mask: mask, scale: scale,
                    dropoutProbability: dropout, backend: backend, threads: threads), mentions: fragments)
            }
            if threads == nil {
                assertAttentionError(try Reference.scaledDotProductAttention(
                    queries: queries, keys: keys, values: values, mask: mask, scale: scale, dropoutProbability: dropout),
                    mentions: fragments)
            }
        }
    }

    // MARK: Tensor, Linear, Dropout

    func testTensorErrorsNameTheShapeTheExpectedAndTheActualCount() throws {
        assertAttentionError(try Tensor<Float>(shape: [2, -1], repeating: 0), mentions: ["shape", "non-negative dimensions", "[2, -1]"])
        assertAttentionError(try Tensor<Float>.zeros([-3]), mentions: ["shape", "non-negative dimensions", "[-3]"])
        assertAttentionError(try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3, 4, 5]), mentions: ["scalars", "[2, 3]", "6 elements", "got 5"])
        let six = try Tensor<Float>(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        assertAttentionError(try six.reshaped([4]), mentions: ["scalars", "[4]", "4 elements", "got 6"])
        assertAttentionError(try Tensor<Float>(shape: [1, 2, 3], repeating: 0).transposed(), mentions: ["self", "[rows, columns]", "[1, 2, 3]"])
        // A shape whose element count does not fit in Int throws instead of trapping.
        assertAttentionError(try Tensor<Float>(shape: [Int.max, 2], repeating: 0),
                             mentions: ["shape", "a size in bytes that fits in Int", "[\(Int.max), 2]"])
        assertAttentionError(try Tensor<Float>(shape: [1 << 32, 1 << 32], scalars: []),
                             mentions: ["shape", "a size in bytes that fits in Int", "[4294967296, 4294967296]"])
        assertAttentionError(try Tensor<Bool>(shape: [1 << 62, 4], repeating: false),
                             mentions: ["shape", "a size in bytes that fits in Int", "[\(1 << 62), 4]"])
    }

    func testLinearAndDropoutErrorsNameTheArgumentTheExpectedAndTheActualValue() throws {
        let weight = try Tensor<Float>(shape: [2, 3], repeating: 1)
        assertAttentionError(try Linear(weight: try Tensor(shape: [6], repeating: 1)), mentions: ["weight", "[outFeatures, inFeatures]", "[6]"])
        assertAttentionError(try Linear(weight: weight, bias: try Tensor(shape: [3], repeating: 0)), mentions: ["bias", "[2] (outFeatures)", "[3]"])
        let linear = try Linear(weight: weight)
        assertAttentionError(try linear(try Tensor(shape: [2, 4], repeating: 0)), mentions: ["input", "[..., 3]", "[2, 4]"])
        assertAttentionError(try linear(try Tensor(shape: [], scalars: [1])), mentions: ["input", "[..., 3]", "got []"])
        assertAttentionError(try Linear(inFeatures: -1, outFeatures: 2, seed: 0), mentions: ["inFeatures/outFeatures", "non-negative", "-1, 2"])

        for probability in [Float(1), -0.1, .nan, .infinity] {
            assertAttentionError(try Dropout(probability: probability), mentions: ["dropoutProbability", "[0, 1)", "got \(probability)"])
        }
        let dropout = try Dropout(probability: 0.5)
        assertAttentionError(try dropout.apply(weight, keep: try Tensor(shape: [3, 2], repeating: true)),
                             mentions: ["keep", "[2, 3] (the input's shape)", "[3, 2]"])
    }

    // MARK: The layers

    func testSingleHeadLayerErrorsNameTheArgumentTheExpectedAndTheActualValue() throws {
        assertAttentionError(try SimpleSelfAttention()(try Tensor(shape: [8], repeating: 0)),
                             mentions: ["input", "[batch, length, features] or [length, features]", "[8]"])
        assertAttentionError(try SimpleSelfAttention()(try Tensor(shape: [1, 2, 3, 4], repeating: 0)),
                             mentions: ["input", "[batch, length, features] or [length, features]", "[1, 2, 3, 4]"])

        let selfAttention = try SelfAttention(dIn: 8, dOut: 4, seed: 1)
        assertAttentionError(try selfAttention(try Tensor(shape: [2, 3, 7], repeating: 0)),
                             mentions: ["input", "[batch, length, 8] or [length, 8]", "[2, 3, 7]"])
        assertAttentionError(try SelfAttention(query: Linear(inFeatures: 8, outFeatures: 4, seed: 1),
                                               key: Linear(inFeatures: 8, outFeatures: 6, seed: 2),
                                               value: Linear(inFeatures: 8, outFeatures: 4, seed: 3)),
                             mentions: ["key.weight", "[4, inFeatures]", "[6, 8]"])
        assertAttentionError(try SelfAttention(dIn: -1, dOut: 4), mentions: ["inFeatures/outFeatures", "non-negative", "-1, 4"])

        let causal = try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 6, seed: 1)
        assertThrows(.sequenceTooLong(argument: "input", contextLength: 6, actual: 7), try causal(try Tensor(shape: [1, 7, 8], repeating: 0)))
        assertAttentionError(try causal(try Tensor(shape: [7, 8], repeating: 0)), mentions: ["input", "contextLength 6", "length 7"])
        assertAttentionError(try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: -1),
                             mentions: ["contextLength", "a non-negative length", "-1"])
        assertAttentionError(try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 6, dropoutProbability: 1),
                             mentions: ["dropoutProbability", "[0, 1)", "1.0"])
    }

    func testMultiHeadAttentionConstructionErrorsNameTheArgumentTheExpectedAndTheActualValue() throws {
        assertAttentionError(try MultiHeadAttention(dIn: 8, dOut: 10, heads: 4), mentions: ["heads", "a positive divisor of dOut = 10", "got 4"])
        assertAttentionError(try MultiHeadAttention(dIn: 8, dOut: 8, heads: 0), mentions: ["heads", "dOut = 8", "got 0"])
        // A negative width reaches the projections, whose error names their own arguments.
        assertAttentionError(try MultiHeadAttention(dIn: 8, dOut: -8, heads: 4), mentions: ["inFeatures/outFeatures", "non-negative", "8, -8"])
        assertAttentionError(try MultiHeadAttention(dIn: 12, dOut: 12, heads: 4, kvHeads: 3), mentions: ["kvHeads", "a divisor of heads = 4", "got 3"])
        let width10 = try Linear(inFeatures: 3, outFeatures: 10, seed: 0)
        assertAttentionError(try MultiHeadAttention(query: width10, key: width10, value: width10, outputProjection: nil, heads: 4),
                             mentions: ["heads", "a divisor of the query projection width 10", "got 4"])
        let width8 = try Linear(inFeatures: 8, outFeatures: 8, seed: 0)
        assertAttentionError(try MultiHeadAttention(query: width8, key: width8, value: width8,
                                                    outputProjection: Linear(inFeatures: 6, outFeatures: 5, seed: 1), heads: 2),
                             mentions: ["outputProjection.weight", "[out, 8] (heads · valueDim)", "[5, 6]"])
        assertAttentionError(try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, contextLength: -1), mentions: ["contextLength", "non-negative", "-1"])
        assertAttentionError(try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, dropoutProbability: 1), mentions: ["dropoutProbability", "[0, 1)", "1.0"])

        let outWeight = try Tensor<Float>(shape: [5, 5], repeating: 0.1)
        assertAttentionError(try MultiHeadAttention(packedInProjectionWeight: try Tensor(shape: [12, 5], repeating: 0.1), packedInProjectionBias: nil,
                                                    outputProjectionWeight: outWeight, outputProjectionBias: nil, heads: 1),
                             mentions: ["packedInProjectionWeight", "[3E, E]", "[12, 5]"])
        assertAttentionError(try MultiHeadAttention(packedInProjectionWeight: try Tensor(shape: [15, 5], repeating: 0.1),
                                                    packedInProjectionBias: try Tensor(shape: [10], repeating: 0),
                                                    outputProjectionWeight: outWeight, outputProjectionBias: nil, heads: 1),
                             mentions: ["packedInProjectionBias", "[15] (3E)", "[10]"])
        assertAttentionError(try MultiHeadAttention(packedInProjectionWeight: try Tensor(shape: [15, 5], repeating: 0.1), packedInProjectionBias: nil,
                                                    outputProjectionWeight: outWeight, outputProjectionBias: nil, heads: 2),
                             mentions: ["heads", "a divisor of the query projection width 5", "got 2"])
    }

    func testMultiHeadAttentionCallErrorsNameTheArgumentTheExpectedAndTheActualValue() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, contextLength: 5, seed: 1)
        let x = try Tensor<Float>.randomNormal([2, 5, 8], seed: 2)
        let long = try Tensor<Float>.randomNormal([2, 6, 8], seed: 3)
        assertThrows(.sequenceTooLong(argument: "query", contextLength: 5, actual: 6), try layer(query: long, key: x, value: x))
        assertThrows(.sequenceTooLong(argument: "key", contextLength: 5, actual: 6), try layer(query: x, key: long, value: long))
        assertAttentionError(try layer(query: long, key: x, value: x), mentions: ["query", "contextLength 5", "length 6"])
        assertAttentionError(try layer(try Tensor(shape: [2, 5, 7], repeating: 0)), mentions: ["query", "[batch, length, 8] or [length, 8]", "[2, 5, 7]"])
        let threeBatches = try Tensor<Float>.randomNormal([3, 5, 8], seed: 4)
        assertAttentionError(try layer(query: x, key: threeBatches, value: threeBatches), mentions: ["key", "batch 2", "[3, 5, 8]"])
        let shortValue = try Tensor<Float>.randomNormal([2, 4, 8], seed: 5)
        assertAttentionError(try layer(query: x, key: x, value: shortValue), mentions: ["value", "[2, 5, features] matching key", "[2, 4, 8]"])

        // Ranks: an unbatched query [5, 8] with a batched key, or with a batched value.
        let unbatched = try Tensor<Float>.randomNormal([5, 8], seed: 6)
        let batchedOne = try Tensor<Float>.randomNormal([1, 5, 8], seed: 7)
        assertAttentionError(try layer(query: unbatched, key: batchedOne, value: unbatched), mentions: ["key", "rank 2", "[1, 5, 8]"])
        assertAttentionError(try layer(query: unbatched, key: unbatched, value: batchedOne), mentions: ["value", "rank 2", "[1, 5, 8]"])

        assertAttentionError(try layer(query: x, key: x, value: x, keyPaddingMask: try Tensor(shape: [2, 4], repeating: false)),
                             mentions: ["keyPaddingMask", "[2, 5] (batch, keyLength)", "[2, 4]"])
        assertAttentionError(try layer(query: x, key: x, value: x, mask: .keep(try Tensor(shape: [3, 4], repeating: true))),
                             mentions: ["mask", "[2, 2, 5, 5]", "[3, 4]"])
        assertAttentionError(try layer(query: x, key: x, value: x, mask: .causal(.bottomRight)),
                             mentions: ["mask", ".causal(topLeft) (the layer's)", ".causal(bottomRight)"])
    }

    func testMultiHeadAttentionWrapperErrorsNameTheArgumentTheExpectedAndTheActualValue() throws {
        assertAttentionError(try MultiHeadAttentionWrapper(heads: []), mentions: ["heads", "at least one head", "got 0"])
        assertAttentionError(try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 6, numHeads: -1),
                             mentions: ["numHeads", "at least one head", "got -1"])
        let heads = [try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 6, seed: 1),
                     try CausalSelfAttention(dIn: 6, dOut: 4, contextLength: 6, seed: 2)]
        assertAttentionError(try MultiHeadAttentionWrapper(heads: heads), mentions: ["heads", "dIn = 8", "got 6"])
        let wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 4, numHeads: 2)
        assertAttentionError(try wrapper(try Tensor(shape: [1, 5, 8], repeating: 0)), mentions: ["input", "contextLength 4", "length 5"])
    }

    // MARK: Safetensors

    func testTruncatedMalformedAndMistypedSafetensorsNameTheTensorTheExpectedAndTheActualValue() throws {
        var file = SafetensorsFile()
        file.set("q", try Tensor<Float>(shape: [1, 1, 2, 2], scalars: [1, 2, 3, 4]))
        file.set("mask", try Tensor<UInt8>(shape: [2, 2], scalars: [1, 0, 1, 1]))
        let bytes = file.serialized()
        let headerLength = Int(bytes.prefix(8).withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) })
        let bufferLength = bytes.count - 8 - headerLength  // 16 bytes of q + 4 of mask = 20
        XCTAssertEqual(bufferLength, 20)

        assertThrowsError(SafetensorsError.self, try SafetensorsFile(data: bytes.prefix(5)), mentions: ["at least 8 bytes", "got 5"])
        assertThrowsError(SafetensorsError.self, try SafetensorsFile(data: bytes.prefix(8 + headerLength / 2)),
                     mentions: ["header length", "declared \(headerLength)", "only \(headerLength / 2)"])
        // Without the buffer's last 4 bytes, the last tensor's data_offsets end past the 16 that are left.
        assertThrowsError(SafetensorsError.self, try SafetensorsFile(data: bytes.dropLast(4)), mentions: ["data_offsets", "16 (data buffer size)"])
        var notJSON = Data()
        withUnsafeBytes(of: UInt64(6).littleEndian) { notJSON.append(contentsOf: $0) }
        notJSON.append(contentsOf: Array("{\"q\": ".utf8))
        assertThrowsError(SafetensorsError.self, try SafetensorsFile(data: notJSON), mentions: ["invalid JSON", "header byte"])

        let loaded = try SafetensorsFile(data: bytes)
        assertThrowsError(SafetensorsError.self, try loaded.floatTensor("mask"), mentions: ["\"mask\"", "expected F32", "got U8"])
        assertThrowsError(SafetensorsError.self, try loaded.boolTensor("q"), mentions: ["\"q\"", "expected BOOL, I8", "or U64", "got F32"])
        assertThrowsError(SafetensorsError.self, try loaded.floatTensor("k"), mentions: ["\"k\"", "not found", "\"mask\", \"q\""])
    }

    // MARK: The C entry points

    /// Each bad parameter gives its own status, a description that says what is
    /// wrong, and no write: output and logsumexp keep their sentinel values.
    func testCEntryPointReturnsTheStatusOfEachBadParameterAndWritesNothing() throws {
        let good = KernelCall(batch: 1, queryHeads: 2, kvHeads: 2, queryLength: 3, keyLength: 4, headDim: 4, valueDim: 2,
                              query: normals(24, seed: 1), key: normals(32, seed: 2), value: normals(16, seed: 3), scale: 0.5,
                              keep: Array(repeating: 1, count: 24))
        XCTAssertEqual(good.run().status, ATTN_OK)
        XCTAssertEqual(attn_sdpa_forward(nil), ATTN_ERROR_NULL_POINTER, "NULL params")

        func modified(_ change: (inout attn_params) -> Void) -> (attn_status, [Float], [Float]) {
            var output = [Float](repeating: KernelCall.sentinel, count: 12)
            var logsumexp = [Float](repeating: KernelCall.sentinel, count: 6)
            let keep = [UInt8](repeating: 1, count: 24)
            let status = good.query.withUnsafeBufferPointer { q in
                good.key.withUnsafeBufferPointer { k in
                    good.value.withUnsafeBufferPointer { v in
                        output.withUnsafeMutableBufferPointer { out in
                            logsumexp.withUnsafeMutableBufferPointer { lse in
                                keep.withUnsafeBufferPointer { mask in
                                    var p = attn_params()
                                    (p.batch, p.query_heads, p.kv_heads, p.query_length, p.key_length, p.head_dim, p.value_dim) = (1, 2, 2, 3, 4, 4, 2)
                                    p.query = q.baseAddress
                                    p.query_strides = KernelCall.strides([1, 2, 3, 4])
                                    p.key = k.baseAddress
                                    p.key_strides = KernelCall.strides([1, 2, 4, 4])
                                    p.value = v.baseAddress
                                    p.value_strides = KernelCall.strides([1, 2, 4, 2])
                                    p.output = out.baseAddress
                                    p.output_strides = KernelCall.strides([1, 2, 3, 2])
                                    p.logsumexp = lse.baseAddress
                                    p.logsumexp_strides = (6, 3, 1)
                                    p.mask_kind = ATTN_MASK_KEEP
                                    p.mask = UnsafeRawPointer(mask.baseAddress)
                                    p.mask_strides = KernelCall.strides([1, 2, 3, 4])
                                    p.scale = 0.5
                                    change(&p)
                                    return attn_sdpa_forward(&p)
                                }
                            }
                        }
                    }
                }
            }
            return (status, output, logsumexp)
        }
        XCTAssertEqual(modified { _ in }.0, ATTN_OK, "the unmodified parameters are valid")
        let cases: [(String, attn_status, (inout attn_params) -> Void)] = [
            ("batch −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.batch = -1 }),
            ("query_heads −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.query_heads = -1 }),
            ("kv_heads −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.kv_heads = -1 }),
            ("query_length −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.query_length = -1 }),
            ("key_length −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.key_length = -1 }),
            ("head_dim −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.head_dim = -1 }),
            ("value_dim −1", ATTN_ERROR_NEGATIVE_SIZE, { $0.value_dim = -1 }),
            ("3 query heads on 2 kv heads", ATTN_ERROR_GROUPED_QUERY, { $0.query_heads = 3 }),
            ("0 kv heads", ATTN_ERROR_GROUPED_QUERY, { $0.kv_heads = 0 }),
            ("query inner stride 2", ATTN_ERROR_INNER_STRIDE, { $0.query_strides.3 = 2 }),
            ("key inner stride 0", ATTN_ERROR_INNER_STRIDE, { $0.key_strides.3 = 0 }),
            ("value inner stride −1", ATTN_ERROR_INNER_STRIDE, { $0.value_strides.3 = -1 }),
            ("output inner stride 2", ATTN_ERROR_INNER_STRIDE, { $0.output_strides.3 = 2 }),
            ("NULL query", ATTN_ERROR_NULL_POINTER, { $0.query = nil }),
            ("NULL key", ATTN_ERROR_NULL_POINTER, { $0.key = nil }),
            ("NULL value", ATTN_ERROR_NULL_POINTER, { $0.value = nil }),
            ("NULL output", ATTN_ERROR_NULL_POINTER, { $0.output = nil }),
            ("NULL mask", ATTN_ERROR_NULL_POINTER, { $0.mask = nil }),
            ("scale +∞", ATTN_ERROR_SCALE, { $0.scale = .infinity }),
            ("scale −∞", ATTN_ERROR_SCALE, { $0.scale = -.infinity }),
            ("scale NaN", ATTN_ERROR_SCALE, { $0.scale = .nan }),
            ("dropout 1", ATTN_ERROR_DROPOUT, { $0.dropout_p = 1 }),
            ("dropout −0.1", ATTN_ERROR_DROPOUT, { $0.dropout_p = -0.1 }),
            ("dropout NaN", ATTN_ERROR_DROPOUT, { $0.dropout_p = .nan }),
            ("mask kind 7", ATTN_ERROR_MASK_KIND, { $0.mask_kind = attn_mask_kind(rawValue: 7) }),
            ("causal 9", ATTN_ERROR_MASK_KIND, { $0.causal = attn_causal(rawValue: 9) }),
        ]
        let words: [UInt32: String] = [
            ATTN_ERROR_NEGATIVE_SIZE.rawValue: "negative", ATTN_ERROR_GROUPED_QUERY.rawValue: "kv_heads",
            ATTN_ERROR_INNER_STRIDE.rawValue: "innermost", ATTN_ERROR_NULL_POINTER.rawValue: "NULL",
            ATTN_ERROR_SCALE.rawValue: "scale", ATTN_ERROR_DROPOUT.rawValue: "dropout_p", ATTN_ERROR_MASK_KIND.rawValue: "mask",
        ]
        for (name, expected, change) in cases {
            let (status, output, logsumexp) = modified(change)
            XCTAssertEqual(status, expected, name)
            XCTAssertEqual(output, Array(repeating: KernelCall.sentinel, count: 12), "\(name): output untouched")
            XCTAssertEqual(logsumexp, Array(repeating: KernelCall.sentinel, count: 6), "\(name): logsumexp untouched")
            let description = String(cString: attn_status_description(status))
            XCTAssertTrue(description.contains(words[expected.rawValue]!), "\(name): \"\(description)\"")
        }

        var y = [Float](repeating: 0, count: 4)
        let x: [Float] = [1, 2], w: [Float] = [1, 2, 3, 4]
        XCTAssertEqual(attn_linear_forward(x, -1, 2, w, nil, 2, &y, 1), ATTN_ERROR_NEGATIVE_SIZE)
        XCTAssertEqual(attn_linear_forward(nil, 1, 2, w, nil, 2, &y, 1), ATTN_ERROR_NULL_POINTER)
        XCTAssertEqual(attn_linear_forward(x, 1, 2, nil, nil, 2, &y, 1), ATTN_ERROR_NULL_POINTER)
        XCTAssertEqual(attn_linear_forward(x, 1, 2, w, nil, 2, nil, 1), ATTN_ERROR_NULL_POINTER)
    }

    /// Known bug, reported, not fixed here (it needs a new status code in the C
    /// API): validate() in CKernels/sdpa.c multiplies batch · query_heads ·
    /// query_length (and, later, the tile and scratch counts) without overflow
    /// checks. Batch 2³² and 2³² query heads, every outer stride 0 so that a few
    /// floats back the whole problem, wrap the product to 0 (signed overflow,
    /// undefined behaviour): the call returns ATTN_OK and computes nothing,
    /// where an error status is expected.
    func testCEntryPointRejectsSizesWhoseProductOverflowsInt64() throws {
        let q: [Float] = [1], k: [Float] = [1], v: [Float] = [2]
        var output: [Float] = [KernelCall.sentinel]
        let status = q.withUnsafeBufferPointer { q in
            k.withUnsafeBufferPointer { k in
                v.withUnsafeBufferPointer { v in
                    output.withUnsafeMutableBufferPointer { out in
                        var p = attn_params()
                        (p.batch, p.query_heads, p.kv_heads, p.query_length, p.key_length, p.head_dim, p.value_dim) = (1 << 32, 1 << 32, 1, 1, 1, 1, 1)
                        (p.query, p.key, p.value, p.output) = (q.baseAddress, k.baseAddress, v.baseAddress, out.baseAddress)
                        p.query_strides = (0, 0, 1, 1)
                        p.key_strides = (0, 0, 1, 1)
                        p.value_strides = (0, 0, 1, 1)
                        p.output_strides = (0, 0, 1, 1)
                        p.scale = 1
                        p.num_threads = 1
                        return attn_sdpa_forward(&p)
                    }
                }
            }
        }
        XCTAssertEqual(status, ATTN_ERROR_SIZE_OVERFLOW, "2^64 query rows: got \(status) with output \(output)")
    }

    // MARK: The command-line tool

    /// `attention sdpa` on a file whose k has head dim 5 (q: 4), or whose v is U8:
    /// exit status non-zero, and one line naming the argument and both values.
    func testCommandLineToolNamesTheMismatchedTensorAndItsShapeOrDType() throws {
        let directory = try makeTemporaryDirectory()
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 4], seed: 1)
        var wrongHeadDim = SafetensorsFile()
        wrongHeadDim.set("q", q)
        wrongHeadDim.set("k", try Tensor<Float>.randomNormal([1, 1, 3, 5], seed: 2))
        wrongHeadDim.set("v", try Tensor<Float>.randomNormal([1, 1, 3, 2], seed: 3))
        var byteValues = SafetensorsFile()
        byteValues.set("q", q)
        byteValues.set("k", try Tensor<Float>.randomNormal([1, 1, 3, 4], seed: 2))
        byteValues.set("v", try Tensor<UInt8>(shape: [1, 1, 3, 2], scalars: [1, 2, 3, 4, 5, 6]))
        for (name, file, fragments) in [("k head dim 5", wrongHeadDim, ["keys", "headDim 4", "[1, 1, 3, 5]"]),
                                        ("v as U8", byteValues, ["\"v\"", "expected F32", "got U8"])] {
            let inputURL = directory.appendingPathComponent("input.safetensors")
            try file.write(to: inputURL)
            let outputURL = directory.appendingPathComponent("out.safetensors")
            let run = try runAttentionExecutable(["sdpa", "--input", inputURL.path, "--output", outputURL.path])
            XCTAssertNotEqual(run.status, 0, name)
            XCTAssertEqual(run.standardError.split(separator: "\n").count, 1, "\(name): one line: \(run.standardError)")
            for fragment in fragments { XCTAssertTrue(run.standardError.contains(fragment), "\(name): \(run.standardError) lacks \(fragment)") }
            XCTAssertFalse(FileManager.default.fileExists(atPath: outputURL.path), name)
        }
    }
}
