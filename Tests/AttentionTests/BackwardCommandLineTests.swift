import Foundation
import XCTest
@testable import Attention

/// `attention sdpa-backward` on the golden backward cases and `attention train`
/// learning its task, run as subprocesses.
final class BackwardCommandLineTests: XCTestCase {
    /// Every golden sdpa backward case through the command line: dq, dk, dv match
    /// PyTorch's autograd; out and logsumexp are written too.
    func testSDPABackwardCommandReproducesPyTorchsGradients() throws {
        let directory = try makeTemporaryDirectory()
        let fixtures = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("backward")
        for (name, options) in [("b_basic", [String]()), ("b_causal_tile_edge", ["--causal", "top-left"]),
                                ("b_causal_br_q3_k6", ["--causal", "bottom-right"]), ("b_mask_keep", []),
                                ("b_scale_dv", ["--scale", "0.3"]), ("b_gqa_4q_2kv", [])] {
            let input = fixtures.appendingPathComponent("\(name).safetensors")
            let output = directory.appendingPathComponent("\(name).grad.safetensors")
            let result = try runAttentionExecutable(["sdpa-backward", "--input", input.path, "--output", output.path] + options)
            XCTAssertEqual(result.status, 0, "\(name): \(result.standardError)")
            guard result.status == 0 else { continue }
            let written = try SafetensorsFile(contentsOf: output)
            let golden = try SafetensorsFile(contentsOf: input)
            XCTAssertEqual(Set(written.tensorNames), ["dq", "dk", "dv", "out", "logsumexp"])
            for tensor in ["dq", "dk", "dv", "out"] {
                assertGoldenClose(try written.floatTensor(tensor), try golden.floatTensor(tensor),
                                  absolute: 1e-4, relative: 1e-3, negligible: 2e-5, "\(name) \(tensor)")
            }
        }
    }

    func testSDPABackwardWithoutDoutFailsWithOneLine() throws {
        let directory = try makeTemporaryDirectory()
        var file = SafetensorsFile()
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 2], seed: 1)
        file.set("q", q)
        file.set("k", q)
        file.set("v", q)
        let input = directory.appendingPathComponent("in.safetensors")
        try file.write(to: input)
        let output = directory.appendingPathComponent("out.safetensors")
        let result = try runAttentionExecutable(["sdpa-backward", "--input", input.path, "--output", output.path])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.standardError.contains("dout"), result.standardError)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
    }

    /// The demo learns: it ends below its stated threshold (exit 0), prints the
    /// loss falling and both heatmaps, and writes the SVGs.
    func testTrainLearnsToCopyTheTokenKPositionsBack() throws {
        let directory = try makeTemporaryDirectory()
        let result = try runAttentionExecutable(["train", "--steps", "150", "--svg", directory.path])
        XCTAssertEqual(result.status, 0, result.standardOutput + result.standardError)
        XCTAssertTrue(result.standardOutput.contains("below the threshold"), result.standardOutput)
        XCTAssertTrue(result.standardOutput.contains("before training:"))
        XCTAssertTrue(result.standardOutput.contains("after training"))
        for name in ["attention-before.svg", "attention-after.svg"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: directory.appendingPathComponent(name).path), name)
        }
        // Too few steps to learn: the run says so and fails.
        let short = try runAttentionExecutable(["train", "--steps", "2"])
        XCTAssertNotEqual(short.status, 0)
        XCTAssertTrue(short.standardOutput.contains("NOT below"), short.standardOutput)
    }
}
