import Foundation
import XCTest
@testable import Attention

/// The `attention` executable, run as a subprocess: `attention sdpa` on every
/// golden sdpa case, and its behaviour on bad input (non-zero exit, one line on
/// stderr, no output file).
final class CommandLineTests: XCTestCase {
    typealias Run = AttentionRun

    private func run(_ arguments: [String]) throws -> Run {
        try runAttentionExecutable(arguments)
    }

    private func temporaryDirectory() throws -> URL {
        try makeTemporaryDirectory()
    }

    /// `attention sdpa --input <case> --output <file>` with `--causal top-left` and
    /// `--scale S` from the index; `out` is within the golden tolerance of `out_ref64`.
    func testSDPACommandReproducesEveryGoldenSDPACase() throws {
        let directory = try temporaryDirectory()
        let cases = try GoldenFixtures.index().cases.filter(\.isSDPA)
        XCTAssertEqual(cases.count, 11, "sdpa cases in the index")
        var checked = 0
        for goldenCase in cases {
            let outputURL = directory.appendingPathComponent("\(goldenCase.name).out.safetensors")
            var arguments = ["sdpa", "--input", GoldenFixtures.url(of: goldenCase).path, "--output", outputURL.path]
            if goldenCase.params.isCausal == true {
                let alignment = try GoldenFixtures.alignment(goldenCase.params.causalAlignment)
                arguments += ["--causal", alignment == .topLeft ? "top-left" : "bottom-right"]
            }
            if let scale = goldenCase.params.scale { arguments += ["--scale", "\(scale)"] }

            let result = try run(arguments)
            XCTAssertEqual(result.status, 0, "\(goldenCase): \(result.standardError)")
            XCTAssertEqual(result.standardError, "", "\(goldenCase): nothing on stderr")
            guard result.status == 0 else { continue }
            let written = try SafetensorsFile(contentsOf: outputURL)
            let expected = try GoldenFixtures.file(goldenCase).floatTensor("out_ref64")
            XCTAssertEqual(Set(written.tensorNames), ["out", "logsumexp"], "\(goldenCase)")
            assertGoldenClose(try written.floatTensor("out"), expected, "\(goldenCase) via attention sdpa")
            XCTAssertEqual(try written.shape(of: "logsumexp"), Array(expected.shape.dropLast()), "\(goldenCase) logsumexp shape")
            checked += 1
        }
        XCTAssertEqual(checked, cases.count, "sdpa cases checked through the command line")
    }

    /// `p_causal_br_q3_k6` encodes bottom-right causal alignment as PyTorch keep
    /// mask; the same q, k, v without the mask and `--causal bottom-right` give its
    /// output, on both backends.
    func testCausalBottomRightOptionMatchesPyTorchsBottomRightMask() throws {
        let directory = try temporaryDirectory()
        let goldenCase = try XCTUnwrap(try GoldenFixtures.index().cases.first { $0.name == "p_causal_br_q3_k6" })
        let golden = try GoldenFixtures.file(goldenCase)
        XCTAssertEqual(try golden.boolTensor("mask_keep").scalars, [
            true, true, true, true, false, false,
            true, true, true, true, true, false,
            true, true, true, true, true, true,
        ], "query i sees keys j ≤ i + 3")
        var input = SafetensorsFile()
        for name in ["q", "k", "v", "out_ref64"] { input.set(name, try golden.floatTensor(name)) }
        let inputURL = directory.appendingPathComponent("input.safetensors")
        try input.write(to: inputURL)
        for backend in ["fused", "reference"] {
            let outputURL = directory.appendingPathComponent("out-\(backend).safetensors")
            let result = try run(["sdpa", "--input", inputURL.path, "--output", outputURL.path, "--causal", "bottom-right",
                                  "--backend", backend, "--compare", "out_ref64"])
            XCTAssertEqual(result.status, 0, result.standardError)
            XCTAssertTrue(result.standardOutput.contains("max |out - out_ref64| = "), result.standardOutput)
            assertGoldenClose(try SafetensorsFile(contentsOf: outputURL).floatTensor("out"), try golden.floatTensor("out_ref64"),
                              "--causal bottom-right on \(backend)")
        }
    }

    /// Asserts a failed run: non-zero status, exactly one line on stderr, and no output file.
    private func assertFails(
        _ arguments: [String], leavingNo outputURL: URL, _ message: String,
        file: StaticString = #filePath, line: UInt = #line
    ) throws {
        let result = try run(arguments)
        XCTAssertNotEqual(result.status, 0, "\(message): exit status", file: file, line: line)
        XCTAssertEqual(result.standardErrorLines.count, 1, "\(message): stderr is one line: \(result.standardError)", file: file, line: line)
        XCTAssertFalse(FileManager.default.fileExists(atPath: outputURL.path), "\(message): output file created", file: file, line: line)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: outputURL.deletingLastPathComponent().path)
            .filter { $0 != "input.safetensors" }
        XCTAssertEqual(leftovers, [], "\(message): no temporary file left behind", file: file, line: line)
    }

    func testMalformedInputFailsWithOneErrorLineAndNoOutput() throws {
        let basic = try XCTUnwrap(try GoldenFixtures.index().cases.first { $0.name == "p_basic" })
        let fixture = try Data(contentsOf: GoldenFixtures.url(of: basic))
        let inputs: [(String, Data)] = [
            ("5 arbitrary bytes", Data([0x13, 0x37, 0xDE, 0xAD, 0x01])),
            ("a fixture truncated to half", fixture.prefix(fixture.count / 2)),
            ("a fixture without its last byte", fixture.dropLast()),
            ("an empty file", Data()),
        ]
        for (name, bytes) in inputs {
            let directory = try temporaryDirectory()
            let inputURL = directory.appendingPathComponent("input.safetensors")
            try bytes.write(to: inputURL)
            let outputURL = directory.appendingPathComponent("out.safetensors")
            try assertFails(["sdpa", "--input", inputURL.path, "--output", outputURL.path], leavingNo: outputURL, name)
        }
    }

    func testMissingInputFileFails() throws {
        let directory = try temporaryDirectory()
        let outputURL = directory.appendingPathComponent("out.safetensors")
        let missing = directory.appendingPathComponent("does-not-exist.safetensors")
        try assertFails(["sdpa", "--input", missing.path, "--output", outputURL.path], leavingNo: outputURL, "missing input file")
        let withoutOption = try run(["sdpa", "--output", outputURL.path])
        XCTAssertNotEqual(withoutOption.status, 0, "no --input at all")
        XCTAssertFalse(FileManager.default.fileExists(atPath: outputURL.path))
    }

    func testOutOfContractOptionsFailWithOneErrorLineAndNoOutput() throws {
        let basic = GoldenFixtures.url(of: try XCTUnwrap(try GoldenFixtures.index().cases.first { $0.name == "p_basic" }))
        // Both commands (their shared options) name the option the user typed,
        // not the library's argument (dropoutProbability).
        for command in ["sdpa", "sdpa-backward"] {
            for (name, options) in [("infinite scale", ["--scale", "inf"]), ("NaN scale", ["--scale", "nan"]),
                                    ("dropout 1", ["--dropout", "1"]), ("NaN dropout", ["--dropout", "nan"]),
                                    ("0 threads", ["--threads", "0"])] {
                let directory = try temporaryDirectory()
                let outputURL = directory.appendingPathComponent("out.safetensors")
                let arguments = [command, "--input", basic.path, "--output", outputURL.path] + options
                try assertFails(arguments, leavingNo: outputURL, "\(command) \(name)")
                let error = try run(arguments).standardError
                XCTAssertTrue(error.contains("\(options[0]): expected"), "\(command) \(name): \(error)")
            }
        }
        // --causal with a mask in the file is refused (as PyTorch refuses is_causal with attn_mask).
        let keep = GoldenFixtures.url(of: try XCTUnwrap(try GoldenFixtures.index().cases.first { $0.name == "p_mask_keep" }))
        let outputURL = try temporaryDirectory().appendingPathComponent("out.safetensors")
        let result = try run(["sdpa", "--input", keep.path, "--output", outputURL.path, "--causal", "top-left"])
        XCTAssertNotEqual(result.status, 0)
        XCTAssertTrue(result.standardError.contains("--causal cannot be combined"), result.standardError)
        XCTAssertFalse(FileManager.default.fileExists(atPath: outputURL.path))
    }

    func testInputWithoutQueriesFailsAndNamesTheTensor() throws {
        let directory = try temporaryDirectory()
        var file = SafetensorsFile()
        file.set("k", try Tensor<Float>(shape: [1, 1, 2, 2], repeating: 0))
        file.set("v", try Tensor<Float>(shape: [1, 1, 2, 2], repeating: 0))
        let inputURL = directory.appendingPathComponent("input.safetensors")
        try file.write(to: inputURL)
        let outputURL = directory.appendingPathComponent("out.safetensors")
        try assertFails(["sdpa", "--input", inputURL.path, "--output", outputURL.path], leavingNo: outputURL, "no q tensor")
        let result = try run(["sdpa", "--input", inputURL.path, "--output", outputURL.path])
        XCTAssertTrue(result.standardError.contains("tensor \"q\": not found"), "the message names the missing tensor: \(result.standardError)")
    }
}
