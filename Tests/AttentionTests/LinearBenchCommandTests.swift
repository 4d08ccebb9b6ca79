import Foundation
import XCTest

/// `attention bench --linear INxOUT`, run as a subprocess on small layers: one
/// JSON object per (shape, rows, threads) with the weight bytes and the roof.
final class LinearBenchCommandTests: XCTestCase {
    private struct Row: Decodable {
        let inFeatures, outFeatures, rows, threads, weightBytes, repetitions: Int
        let medianSeconds, minSeconds, tileSeconds, gbps, roofGbps, roofFraction: Double
    }

    func testLinearBenchPrintsOneJSONRowPerCaseWithTheWeightBytes() throws {
        let result = try runAttentionExecutable([
            "bench", "--linear", "40x24", "--linear", "16x33", "--rows", "1", "--rows", "3",
            "--threads", "1", "--repetitions", "2", "--format", "json",
        ])
        XCTAssertEqual(result.status, 0, result.standardError)
        let rows = try result.standardOutput.split(separator: "\n").map { try JSONDecoder().decode(Row.self, from: Data($0.utf8)) }
        XCTAssertEqual(rows.map { [$0.inFeatures, $0.outFeatures, $0.rows, $0.threads] },
                       [[40, 24, 1, 1], [40, 24, 3, 1], [16, 33, 1, 1], [16, 33, 3, 1]])
        for row in rows {
            XCTAssertEqual(row.weightBytes, 4 * row.inFeatures * row.outFeatures)
            XCTAssertEqual(row.repetitions, 2)
            XCTAssertLessThanOrEqual(row.minSeconds, row.medianSeconds)
            XCTAssertGreaterThan(row.tileSeconds, 0)
            XCTAssertEqual(row.gbps, Double(row.weightBytes) / row.medianSeconds / 1e9, accuracy: 1e-9 * row.gbps)
            XCTAssertGreaterThan(row.roofGbps, 0)
            XCTAssertEqual(row.roofFraction, row.gbps / row.roofGbps, accuracy: 1e-9)
        }
    }

    /// The tile product it compares with runs on the driver and threads
    /// `Linear` runs with (not the C driver: one thread without OpenMP).
    func testTheTileProductRunsOnTheSameDriverAndThreads() throws {
        for driver in ["dispatch", "openmp"] {
            let result = try runProcess(
                try attentionExecutable().path, ["bench", "--linear", "40x24", "--rows", "2", "--threads", "2", "--repetitions", "2"],
                environment: ["ATTENTION_THREADING": driver])
            XCTAssertEqual(result.status, 0, result.standardError)
            XCTAssertTrue(result.standardOutput.contains("tile = the tile product on the unpacked weight (what these rows ran before), on the same driver and threads"),
                          result.standardOutput)
        }
    }

    func testMalformedShapesRowsAndMixedModesAreUsageErrors() throws {
        for arguments in [
            ["bench", "--linear", "0x5"], ["bench", "--linear", "4x"], ["bench", "--linear", "4x4", "--rows", "0"],
            ["bench", "--rows", "2"], ["bench", "--linear", "4x4", "--decode"],
        ] {
            let result = try runAttentionExecutable(arguments)
            XCTAssertEqual(result.status, 64, "\(arguments): \(result.standardError)")
        }
    }

    /// A malformed INxOUT says which part is wrong and what is expected, after
    /// the option and the value typed.
    func testAMalformedShapeSaysWhichPartIsWrongAndTheExpectedRange() throws {
        let expected = "expected INxOUT, two integers ≥ 1, e.g. 4096x1024"
        for (value, part) in [
            ("0x5", "IN is 0"), ("4x-2", "OUT is -2"), ("4x", "OUT is missing"), ("ax5", "IN (a) is not an integer"),
            ("45", "no x between IN and OUT"), ("4x4x4", "more than one x"),
        ] {
            let result = try runAttentionExecutable(["bench", "--linear", value])
            XCTAssertEqual(result.status, 64, value)
            XCTAssertTrue(result.standardError.contains("'\(value)' is invalid for '--linear <INxOUT>': \(part); \(expected)"),
                          "\(value): \(result.standardError)")
        }
    }
}
