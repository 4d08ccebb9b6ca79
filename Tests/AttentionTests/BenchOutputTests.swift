import Foundation
import XCTest
@testable import Attention

/// Reports that never fail (issue 11, item 7): every figure `attention bench`
/// prints is finite or explicitly absent — `null` in JSON, empty in CSV, `—` in
/// the table — and a NaN or zero peak, a zero-length case or a failed
/// measurement never aborts the run.
final class BenchOutputTests: XCTestCase {
    /// A zero-length case, a small one, and one too large to allocate.
    private let shapes = ["--shape", "1,1,0,0,8", "--shape", "1,1,16,16,8", "--shape", "1000000,1000,1000,1000,64"]

    private func bench(_ extra: [String], peak: String) throws -> AttentionRun {
        try runProcess(try attentionExecutable().path,
                       ["bench"] + shapes + ["--threads", "1", "--repetitions", "1", "--non-causal", "--path", "fused"] + extra,
                       environment: ["ATTENTION_BENCH_PEAK_GFLOPS": peak])
    }

    func testJSONWithANaNPeakEncodesNullAndKeepsEveryRow() throws {
        let run = try bench(["--format", "json"], peak: "nan")
        XCTAssertEqual(run.status, 0, run.standardError)
        let lines = run.standardOutput.split(separator: "\n")
        XCTAssertEqual(lines.count, 3, run.standardOutput)
        let rows = try lines.map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
        for row in rows {
            XCTAssertTrue(row["peakFraction"] is NSNull, "a NaN peak gives peakFraction null: \(row)")
            for key in ["medianSeconds", "minSeconds", "gflops", "gbps", "peakFraction", "error"] {
                XCTAssertNotNil(row[key], "\(key) is present (null or a value)")
            }
        }
        XCTAssertEqual(rows[0]["queryLength"] as? Int, 0)
        XCTAssertTrue(rows[0]["error"] is NSNull)
        XCTAssertNotNil(rows[1]["gflops"] as? Double, "the small case is measured")
        XCTAssertTrue(rows[2]["medianSeconds"] is NSNull, "the failed case has no time")
        XCTAssertTrue(rows[2]["gflops"] is NSNull)
        XCTAssertTrue((rows[2]["error"] as? String)?.contains("bytes") == true, "\(rows[2])")
    }

    func testTableAndCSVWithAZeroPeakShowAbsentFiguresAndFinishTheRun() throws {
        let table = try bench([], peak: "0")
        XCTAssertEqual(table.status, 0, table.standardError)
        XCTAssertTrue(table.standardOutput.contains("—"), table.standardOutput)
        XCTAssertFalse(table.standardOutput.lowercased().contains("nan"), table.standardOutput)
        XCTAssertFalse(table.standardOutput.contains("inf"), table.standardOutput)
        XCTAssertTrue(table.standardOutput.contains("not measured: 1000000,1000,1000,1000,64"), table.standardOutput)
        XCTAssertTrue(table.standardOutput.contains("peak RSS"), "the run reached its end")

        let csv = try bench(["--format", "csv"], peak: "0")
        XCTAssertEqual(csv.status, 0, csv.standardError)
        let lines = csv.standardOutput.split(separator: "\n", omittingEmptySubsequences: false).filter { !$0.isEmpty }
        XCTAssertEqual(lines.count, 4)
        XCTAssertFalse(csv.standardOutput.lowercased().contains("nan"))
        let failed = lines[3].split(separator: ",", omittingEmptySubsequences: false)
        XCTAssertEqual(failed[9], "", "median of the failed case is an empty field")
        XCTAssertEqual(lines[2].split(separator: ",", omittingEmptySubsequences: false)[13], "", "no peak, no fraction")
    }
}
