import Foundation
import XCTest
@testable import Attention

/// `attention bench --decode`, run as a subprocess on the smallest case: one
/// JSON object per measured step with the bytes the step must read.
final class DecodeBenchCommandTests: XCTestCase {
    private struct Row: Decodable {
        let model: String
        let cacheLength, threads, weightBytes, cacheBytes, kvHeads, headDim: Int
        let storage: String
        let medianSeconds, tokensPerSecond, gbps, roofGbps, roofFraction: Double
    }

    func testDecodeBenchPrintsOneJSONRowPerStepWithTheBytesItReads() throws {
        let result = try runAttentionExecutable([
            "bench", "--decode", "--model", "gpt2", "--cache-length", "16", "--cache-storage", "float16",
            "--threads", "1", "--repetitions", "1", "--format", "json",
        ])
        XCTAssertEqual(result.status, 0, result.standardError)
        let lines = result.standardOutput.split(separator: "\n")
        XCTAssertEqual(lines.count, 1, result.standardOutput)
        let row = try JSONDecoder().decode(Row.self, from: Data(lines[0].utf8))
        XCTAssertEqual(row.model, "gpt2")
        XCTAssertEqual(row.storage, "float16")
        XCTAssertEqual([row.cacheLength, row.threads, row.kvHeads, row.headDim], [16, 1, 12, 64])
        XCTAssertEqual(row.weightBytes, 4 * (4 * 768 * 768 + 4 * 768), "W_q, W_k, W_v, W_o and biases, float32")
        XCTAssertEqual(row.cacheBytes, 17 * 12 * 64 * 2 * 2, "17 cached tokens after the append, K and V, 2 bytes")
        XCTAssertEqual(row.tokensPerSecond, 1 / row.medianSeconds, accuracy: 1e-9 * row.tokensPerSecond)
        XCTAssertEqual(row.gbps, Double(row.weightBytes + row.cacheBytes) / row.medianSeconds / 1e9, accuracy: 1e-9 * row.gbps)
        XCTAssertGreaterThan(row.roofGbps, 0)
        XCTAssertEqual(row.roofFraction, row.gbps / row.roofGbps, accuracy: 1e-9)
    }

    func testDecodeOptionsWithoutDecodeAreAUsageError() throws {
        let result = try runAttentionExecutable(["bench", "--cache-length", "16"])
        XCTAssertEqual(result.status, 64, result.standardError)
        XCTAssertTrue(result.standardError.contains("--decode"), result.standardError)
    }
}
