import CAttention
import Foundation
import XCTest
@testable import Attention

// Helpers of the reliability suites (Semantics, Determinism, Error, Concurrency,
// RandomizedEquivalence): bitwise comparison, a direct call of the C entry point,
// and the `attention` executable as a subprocess.

// MARK: Bits

/// The IEEE bit patterns of a tensor's elements: equal patterns mean the same
/// number, the same sign of zero and the same NaN.
func bitPatterns(_ values: [Float]) -> [UInt32] { values.map(\.bitPattern) }

/// Asserts that two float arrays hold the same bits, element for element, and
/// reports the first element that differs.
func assertBitIdentical(
    _ actual: [Float], _ expected: [Float], _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.count, expected.count, "element count \(message())", file: file, line: line)
    for (index, (a, e)) in zip(actual, expected).enumerated() where a.bitPattern != e.bitPattern {
        XCTFail("element \(index): \(a) (0x\(String(a.bitPattern, radix: 16))) vs \(e) (0x\(String(e.bitPattern, radix: 16))) \(message())",
                file: file, line: line)
        return
    }
}

/// Asserts that two tensors have the same shape and the same bits.
func assertBitIdentical(
    _ actual: Tensor<Float>, _ expected: Tensor<Float>, _ message: @autoclosure () -> String = "",
    file: StaticString = #filePath, line: UInt = #line
) {
    XCTAssertEqual(actual.shape, expected.shape, "shape \(message())", file: file, line: line)
    assertBitIdentical(actual.scalars, expected.scalars, message(), file: file, line: line)
}

/// `count` seeded standard-normal numbers.
func normals(_ count: Int, seed: UInt64) -> [Float] {
    var generator = SplitMix64(seed: seed)
    return (0..<count).map { _ in generator.nextNormal() }
}

// MARK: The C entry point

/// One direct call of `attn_sdpa_forward` on contiguous buffers:
/// query `[B, Hq, Lq, D]`, key `[B, Hkv, Lk, D]`, value `[B, Hkv, Lk, Dv]`,
/// masks full `[B, Hq, Lq, Lk]`.
struct KernelCall {
    var batch = 1, queryHeads = 1, kvHeads = 1
    var queryLength: Int, keyLength: Int, headDim: Int, valueDim: Int
    var query: [Float], key: [Float], value: [Float]
    var scale: Float
    var causal = ATTN_CAUSAL_NONE
    var keep: [UInt8]? = nil
    var additive: [Float]? = nil
    var dropout: Float = 0
    var seed: UInt64 = 0
    var threads: Int32 = 0
    /// Passes NULL for a buffer that holds no element (zero-size dimensions).
    var nullForEmpty = true

    /// What the kernel returned; `output` and `logsumexp` start as `sentinel`
    /// everywhere, so that an element the kernel did not write shows.
    struct Result {
        var status: attn_status
        var output: [Float]
        var logsumexp: [Float]
        /// Whether the kernel split each head's keys across threads (split-KV).
        var splitsKeys = false
    }

    static let sentinel: Float = 12_345

    func run() -> Result {
        var output = [Float](repeating: Self.sentinel, count: batch * queryHeads * queryLength * valueDim)
        var logsumexp = [Float](repeating: Self.sentinel, count: batch * queryHeads * queryLength)
        var params = attn_params()
        params.batch = Int64(batch)
        params.query_heads = Int64(queryHeads)
        params.kv_heads = Int64(kvHeads)
        params.query_length = Int64(queryLength)
        params.key_length = Int64(keyLength)
        params.head_dim = Int64(headDim)
        params.value_dim = Int64(valueDim)
        params.query_strides = Self.strides([batch, queryHeads, queryLength, headDim])
        params.key_strides = Self.strides([batch, kvHeads, keyLength, headDim])
        params.value_strides = Self.strides([batch, kvHeads, keyLength, valueDim])
        params.output_strides = Self.strides([batch, queryHeads, queryLength, valueDim])
        params.logsumexp_strides = (Int64(queryHeads * queryLength), Int64(queryLength), 1)
        params.scale = scale
        params.causal = causal
        params.dropout_p = dropout
        params.dropout_seed = seed
        params.num_threads = threads
        let maskStrides = Self.strides([batch, queryHeads, queryLength, keyLength])
        let keepBytes = keep ?? [], additiveValues = additive ?? []
        var splitsKeys = false
        let status = query.withUnsafeBufferPointer { q in
            key.withUnsafeBufferPointer { k in
                value.withUnsafeBufferPointer { v in
                    output.withUnsafeMutableBufferPointer { out in
                        logsumexp.withUnsafeMutableBufferPointer { lse in
                            keepBytes.withUnsafeBufferPointer { keepBuffer in
                                additiveValues.withUnsafeBufferPointer { additiveBuffer in
                                    params.query = pointer(q)
                                    params.key = pointer(k)
                                    params.value = pointer(v)
                                    params.output = nullForEmpty && out.isEmpty ? nil : out.baseAddress
                                    params.logsumexp = nullForEmpty && lse.isEmpty ? nil : lse.baseAddress
                                    if keep != nil {
                                        params.mask_kind = ATTN_MASK_KEEP
                                        params.mask = UnsafeRawPointer(keepBuffer.baseAddress)
                                        params.mask_strides = maskStrides
                                    } else if additive != nil {
                                        params.mask_kind = ATTN_MASK_ADDITIVE
                                        params.mask = UnsafeRawPointer(additiveBuffer.baseAddress)
                                        params.mask_strides = maskStrides
                                    }
                                    splitsKeys = attn_sdpa_splits_keys(&params) != 0
                                    return attn_sdpa_forward(&params)
                                }
                            }
                        }
                    }
                }
            }
        }
        return Result(status: status, output: output, logsumexp: logsumexp, splitsKeys: splitsKeys)
    }

    private func pointer(_ buffer: UnsafeBufferPointer<Float>) -> UnsafePointer<Float>? {
        nullForEmpty && buffer.isEmpty ? nil : buffer.baseAddress
    }

    static func strides(_ shape: [Int]) -> (Int64, Int64, Int64, Int64) {
        let s = Tensor<Float>.contiguousStrides(for: shape).map(Int64.init)
        return (s[0], s[1], s[2], s[3])
    }
}

// MARK: The command-line tool

/// One run of the `attention` executable.
struct AttentionRun {
    var status: Int32
    var standardOutput: String
    var standardError: String
    var standardErrorLines: [Substring] { standardError.split(separator: "\n", omittingEmptySubsequences: true) }
}

/// The `attention` executable that SwiftPM builds next to the test bundle
/// (`swift build --build-tests` and `swift test` build every product). Not
/// finding it fails the test: a CLI test must not pass by not running.
func attentionExecutable() throws -> URL {
    var directories: [URL] = [
        Bundle.main.bundleURL,
        Bundle.main.bundleURL.deletingLastPathComponent(),
        Bundle.module.bundleURL.deletingLastPathComponent(),
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent(),
    ]
    for bundle in Bundle.allBundles where bundle.bundlePath.hasSuffix(".xctest") {
        directories.append(bundle.bundleURL.deletingLastPathComponent())
    }
    for directory in directories {
        let candidate = directory.appendingPathComponent("attention")
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory), !isDirectory.boolValue,
           FileManager.default.isExecutableFile(atPath: candidate.path) {
            return candidate
        }
    }
    XCTFail("the attention executable was not found in \(directories.map(\.path)); build it with `swift build --build-tests`")
    throw CocoaError(.fileNoSuchFile)
}

/// Runs `attention` with `arguments` and collects its exit status and output.
func runAttentionExecutable(_ arguments: [String]) throws -> AttentionRun {
    let process = Process()
    process.executableURL = try attentionExecutable()
    process.arguments = arguments
    let output = Pipe(), error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    // Both streams are a few lines: reading one to its end cannot block the other.
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return AttentionRun(status: process.terminationStatus,
                        standardOutput: String(decoding: outputData, as: UTF8.self),
                        standardError: String(decoding: errorData, as: UTF8.self))
}

extension XCTestCase {
    /// A fresh directory, removed when the test ends.
    func makeTemporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("\(type(of: self))-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        return directory
    }
}
