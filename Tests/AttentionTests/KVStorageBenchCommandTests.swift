import Foundation
import XCTest
@testable import Attention

/// `attention bench --kv-storage …`, run as a subprocess on small decode cases:
/// one JSON object per shape × storage × layout × threads, with the unique K+V
/// bytes in the storage type and GB/s and % of the roof derived from them.
final class KVStorageBenchCommandTests: XCTestCase {
    private struct Row: Decodable {
        let batch, heads, kvHeads, queryLength, keyLength, headDim, threads, stackedHeads: Int
        let storage, keyLayout, kernelPath: String
        let medianSeconds, minSeconds, keyValueBytes, gbps, roofGbps, roofFraction, bestRoofFraction: Double
    }

    func testKVStorageBenchPrintsOneJSONRowPerCaseWithTheBytesInTheStorageType() throws {
        let result = try runAttentionExecutable([
            "bench", "--kv-storage", "float32", "--kv-storage", "float16", "--kv-storage", "bfloat16",
            "--shape", "1,4,1,300,16,2", "--key-layout", "rows", "--key-layout", "panels", "--key-layout", "panels64",
            "--threads", "1", "--repetitions", "3", "--format", "json",  // 3: the fastest call and the median differ
        ])
        XCTAssertEqual(result.status, 0, result.standardError)
        let rows = try result.standardOutput.split(separator: "\n").map { try JSONDecoder().decode(Row.self, from: Data($0.utf8)) }
        XCTAssertEqual(rows.map { "\($0.storage) \($0.keyLayout)" }, [
            "float32 rows", "float32 panels", "float32 panels64", "float16 rows", "float16 panels", "float16 panels64",
            "bfloat16 rows", "bfloat16 panels", "bfloat16 panels64",
        ])
        for row in rows {
            XCTAssertEqual([row.batch, row.heads, row.kvHeads, row.queryLength, row.keyLength, row.headDim, row.threads],
                           [1, 4, 2, 1, 300, 16, 1])
            let elementBytes = row.storage == "float32" ? 4.0 : 2.0
            XCTAssertEqual(row.keyValueBytes, 2 * 300 * 16 * 2 * elementBytes, "K and V of 2 kv heads, read once")
            XCTAssertGreaterThan(row.medianSeconds, 0)
            XCTAssertLessThanOrEqual(row.minSeconds, row.medianSeconds)
            XCTAssertEqual(row.gbps, row.keyValueBytes / row.medianSeconds / 1e9, accuracy: 1e-9 * row.gbps)
            XCTAssertGreaterThan(row.roofGbps, 0)
            XCTAssertEqual(row.roofFraction, row.gbps / row.roofGbps, accuracy: 1e-9)
            XCTAssertEqual(row.bestRoofFraction, row.keyValueBytes / row.minSeconds / 1e9 / row.roofGbps,
                           accuracy: 1e-9 * row.bestRoofFraction)
            XCTAssertGreaterThanOrEqual(row.bestRoofFraction, row.roofFraction, "the fastest call is no slower than the median")
            XCTAssertFalse(row.kernelPath.isEmpty)
            XCTAssertGreaterThanOrEqual(row.stackedHeads, 1)
        }
    }

    func testKVStorageBenchTableNamesTheRoofAndEveryCase() throws {
        let result = try runAttentionExecutable([
            "bench", "--kv-storage", "float16", "--shape", "1,2,1,256,32", "--threads", "1", "--repetitions", "1",
        ])
        XCTAssertEqual(result.status, 0, result.standardError)
        let lines = result.standardOutput.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, result.standardOutput)
        XCTAssertTrue(lines[0].contains("roof"), result.standardOutput)
        XCTAssertTrue(lines[1].contains("% roof") && lines[1].contains("best % roof"), result.standardOutput)
        XCTAssertTrue(lines[2].contains("1,2,1,256,32") && lines[2].contains("float16"), result.standardOutput)
    }
}
