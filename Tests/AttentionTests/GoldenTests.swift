import Foundation
import XCTest
@testable import Attention

/// PyTorch's own results (`Fixtures/golden`, PyTorch 2.15): every case of the
/// index, on both backends, within 1e-5 absolute and 1e-5 relative of the
/// float64 reference `out_ref64`.
final class GoldenTests: XCTestCase {
    /// The number of cases in `index.json`; update it when the golden set grows.
    static let expectedCaseCount = 13

    func testIndexListsEveryFixtureFileAndNoOther() throws {
        let index = try GoldenFixtures.index()
        XCTAssertEqual(index.cases.count, Self.expectedCaseCount, "cases in index.json")
        let names = index.cases.map(\.name)
        XCTAssertEqual(Set(names).count, names.count, "case names are unique")
        let files = try FileManager.default.contentsOfDirectory(atPath: GoldenFixtures.directory.path)
            .filter { $0.hasSuffix(".safetensors") }
            .map { String($0.dropLast(".safetensors".count)) }
        XCTAssertEqual(Set(files), Set(names), "golden/*.safetensors and the index's case names")
        XCTAssertEqual(Set(index.cases.map(\.op)), ["sdpa", "mha"])
    }

    func testEveryFileHoldsTheTensorsAndShapesTheIndexLists() throws {
        for goldenCase in try GoldenFixtures.index().cases {
            let file = try GoldenFixtures.file(goldenCase)
            XCTAssertEqual(Set(file.tensorNames), Set(goldenCase.tensors.keys), "\(goldenCase)")
            for (name, shape) in goldenCase.tensors {
                XCTAssertEqual(try file.shape(of: name), shape, "\(goldenCase).\(name)")
            }
            XCTAssertEqual(file.metadata["op"], goldenCase.op, "\(goldenCase) metadata op")
        }
    }

    /// Sanity of the fixtures: PyTorch's float32 `out` is itself within 1e-5 of `out_ref64`.
    func testPyTorchFloat32OutputIsWithinToleranceOfFloat64Reference() throws {
        for goldenCase in try GoldenFixtures.index().cases {
            let file = try GoldenFixtures.file(goldenCase)
            assertGoldenClose(try file.floatTensor("out"), try file.floatTensor("out_ref64"), "\(goldenCase): PyTorch out")
        }
    }

    func testFusedBackendMatchesEveryGoldenCase() throws {
        try checkEveryCase(backend: .fused)
    }

    func testReferenceBackendMatchesEveryGoldenCase() throws {
        try checkEveryCase(backend: .reference)
    }

    /// Runs every case of the index and counts those run, so that a case the
    /// loop cannot run (a renamed file, an unknown op) fails instead of vanishing.
    private func checkEveryCase(backend: AttentionBackend, file: StaticString = #filePath, line: UInt = #line) throws {
        let index = try GoldenFixtures.index()
        var checked = 0
        for goldenCase in index.cases {
            let expected = try GoldenFixtures.file(goldenCase).floatTensor("out_ref64")
            let output: Tensor<Float>
            switch goldenCase.op {
            case "sdpa": output = try GoldenFixtures.runSDPA(goldenCase, backend: backend).output
            case "mha": output = try GoldenFixtures.runMHA(goldenCase, backend: backend)
            default:
                XCTFail("\(goldenCase): unknown op \(goldenCase.op)", file: file, line: line)
                continue
            }
            assertGoldenClose(output, expected, "\(goldenCase) on \(backend)", file: file, line: line)
            checked += 1
        }
        XCTAssertEqual(checked, index.cases.count, "cases checked on \(backend)", file: file, line: line)
        XCTAssertEqual(checked, Self.expectedCaseCount, file: file, line: line)
    }

    /// `p_dead_row`: query row 1 sees no key. Its output is exactly zero (PyTorch's
    /// math path would give NaN), its logsumexp −∞, and the other rows are normal.
    func testFullyMaskedRowGivesZerosAndLogsumexpMinusInfinity() throws {
        let goldenCase = try XCTUnwrap(try GoldenFixtures.index().cases.first { $0.name == "p_dead_row" })
        let file = try GoldenFixtures.file(goldenCase)
        let keep = try file.boolTensor("mask_keep")
        XCTAssertEqual(keep.shape, [3, 4])
        XCTAssertEqual(Array(keep.scalars[4..<8]), [false, false, false, false], "row 1 is fully masked")
        XCTAssertEqual(Array(try file.floatTensor("out_ref64").scalars[4..<8]), [0, 0, 0, 0])

        for backend in [AttentionBackend.fused, .reference] {
            let result = try GoldenFixtures.runSDPA(goldenCase, backend: backend)
            XCTAssertEqual(result.output.shape, [1, 1, 3, 4])
            XCTAssertEqual(Array(result.output.scalars[4..<8]), [0, 0, 0, 0], "dead row output on \(backend)")
            XCTAssertEqual(result.logsumexp.shape, [1, 1, 3])
            XCTAssertEqual(result.logsumexp.scalars[1], -.infinity, "dead row logsumexp on \(backend)")
            XCTAssertTrue(result.logsumexp.scalars[0].isFinite && result.logsumexp.scalars[2].isFinite, "live rows on \(backend)")
            XCTAssertFalse(result.output.scalars.contains { $0.isNaN }, "no NaN on \(backend)")
        }
        let reference = try Reference.scaledDotProductAttention(
            queries: file.floatTensor("q"), keys: file.floatTensor("k"), values: file.floatTensor("v"), mask: .keep(keep))
        XCTAssertEqual(Array(reference.weights.scalars[4..<8]), [0, 0, 0, 0], "dead row weights")
    }
}
