import Foundation
import XCTest
@testable import Attention

/// The command line without Python: `sdpa --print/--weights` and `bench`'s
/// ratios, lesson line and plot.
final class LearningCommandLineTests: XCTestCase {
    private func writeProblem(q: [Int], k: [Int], to url: URL) throws {
        var file = SafetensorsFile()
        file.set("q", try Tensor<Float>.randomNormal(q, seed: 1))
        file.set("k", try Tensor<Float>.randomNormal(k, seed: 2))
        file.set("v", try Tensor<Float>.randomNormal(k, seed: 3))
        try file.write(to: url)
    }

    func testSDPAPrintShowsTheOutputAndWeightsInTheTensorFormat() throws {
        let directory = try makeTemporaryDirectory()
        let input = directory.appendingPathComponent("in.safetensors")
        try writeProblem(q: [1, 1, 2, 2], k: [1, 1, 3, 2], to: input)
        let run = try runAttentionExecutable([
            "sdpa", "--input", input.path, "--output", directory.appendingPathComponent("out.safetensors").path,
            "--causal", "bottom-right", "--print", "--weights",
        ])
        XCTAssertEqual(run.status, 0, run.standardError)
        let file = try SafetensorsFile(contentsOf: input)
        let reference = try Reference.scaledDotProductAttention(
            queries: file.floatTensor("q"), keys: file.floatTensor("k"), values: file.floatTensor("v"), mask: .causal(.bottomRight))
        XCTAssertTrue(run.standardOutput.contains("out =\ntensor([[[["), run.standardOutput)
        XCTAssertTrue(run.standardOutput.contains("shape=[1, 1, 2, 2])"))
        XCTAssertTrue(run.standardOutput.contains("attention weights (reference path, after mask and dropout) =\n\(reference.weights)"),
                      run.standardOutput)
        XCTAssertTrue(reference.weights.description.contains("0.0000]"), "bottom-right causal: query 0 does not see key 2")
    }

    func testSDPAWeightsRefusesLargeShapesBeforeWritingAnything() throws {
        let directory = try makeTemporaryDirectory()
        let input = directory.appendingPathComponent("in.safetensors")
        try writeProblem(q: [1, 1, 1100, 1], k: [1, 1, 1000, 1], to: input)
        let output = directory.appendingPathComponent("out.safetensors")
        let run = try runAttentionExecutable(["sdpa", "--input", input.path, "--output", output.path, "--weights"])
        XCTAssertNotEqual(run.status, 0)
        XCTAssertTrue(run.standardError.contains("--weights: 1100000 attention weights"), run.standardError)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
    }

    func testBenchRatiosHaveTwoSignificantDigitsAndTheSVGPlotsBothPathsAndPyTorch() throws {
        let directory = try makeTemporaryDirectory()
        let peer = directory.appendingPathComponent("torch.jsonl")
        try Data("""
            {"batch": 1, "heads": 1, "kvHeads": 1, "queryLength": 6, "keyLength": 6, "headDim": 2, "causal": false, "threads": 1, "path": "torch-sdpa", "medianSeconds": 2e-05, "gflops": 0.014, "repetitions": 5}

            """.utf8).write(to: peer)
        let plot = directory.appendingPathComponent("bench.svg")
        let run = try runAttentionExecutable([
            "bench", "--shape", "1,1,6,6,2", "--shape", "1,1,16,16,8", "--non-causal", "--threads", "1",
            "--repetitions", "2", "--path", "fused", "--path", "reference", "--svg", plot.path, "--compare", peer.path,
        ])
        XCTAssertEqual(run.status, 0, run.standardError)
        let lines = run.standardOutput.split(separator: "\n")
        let fusedRows = lines.filter { $0.hasPrefix(" ") && $0.contains(" fused ") }
        XCTAssertEqual(fusedRows.count, 2)
        for row in fusedRows {
            let ratio = String(row.split(separator: " ").last!)
            XCTAssertNotNil(ratio.range(of: #"^([1-9]\.[0-9]|0\.0*[1-9][0-9]|[1-9][0-9]0*)$"#, options: .regularExpression),
                            "two significant digits: \(ratio)")
        }
        XCTAssertEqual(lines.filter { $0.hasPrefix("full: fused ") && $0.contains("naive reference") }.count, 1, run.standardOutput)
        let document = try SVGDocument(String(contentsOf: plot, encoding: .utf8))
        for label in ["fused 1t full", "reference 1t full", "PyTorch torch-sdpa 1t full", "GFLOP/s", "key length Lk (tokens, log scale)"] {
            XCTAssertTrue(document.texts.contains(label), "legend/axis: \(label)")
        }
        XCTAssertEqual(document.count(of: "polyline"), 3, "one line per path × threads, plus PyTorch")
    }

    func testBenchPlotNamesTheIdleWaitOnlyWhenTheRunComparesSeveral() throws {
        // Rows that differ only in the idle wait (or the driver) are separate lines,
        // and a run with one driver (dispatch alone without OpenMP) does not name it.
        let directory = try makeTemporaryDirectory()
        let plot = directory.appendingPathComponent("bench.svg")
        let run = try runAttentionExecutable([
            "bench", "--shape", "1,1,16,16,8", "--non-causal", "--threads", "1", "--repetitions", "2",
            "--path", "fused", "--idle-wait", "spin", "--idle-wait", "sleep", "--svg", plot.path,
        ])
        XCTAssertEqual(run.status, 0, run.standardError)
        let document = try SVGDocument(String(contentsOf: plot, encoding: .utf8))
        XCTAssertTrue(document.texts.contains("fused 1t full spin"), "\(document.texts)")
        XCTAssertTrue(document.texts.contains("fused 1t full sleep"), "\(document.texts)")
        XCTAssertFalse(document.texts.contains { $0.contains("openmp") || $0.contains("dispatch") }, "\(document.texts)")
        XCTAssertEqual(document.count(of: "polyline"), 2, "one line per idle wait")
    }

    func testBenchCompareNeedsSVGAndAReadableFile() throws {
        let noSVG = try runAttentionExecutable(["bench", "--shape", "1,1,6,6,2", "--compare", "/nonexistent"])
        XCTAssertNotEqual(noSVG.status, 0)
        XCTAssertTrue(noSVG.standardError.contains("--svg"), noSVG.standardError)
        let missing = try runAttentionExecutable(["bench", "--shape", "1,1,6,6,2", "--compare", "/nonexistent", "--svg", "/tmp/x.svg"])
        XCTAssertNotEqual(missing.status, 0)
        XCTAssertTrue(missing.standardError.contains("--compare /nonexistent: cannot read the file"), missing.standardError)
    }
}
