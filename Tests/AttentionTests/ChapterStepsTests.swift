import Foundation
import XCTest
@testable import Attention
import AttentionExamples

/// `attention demo --steps` and `BookSteps`: the chapter in the book's order,
/// every printed number reproduced, token labels, plain output off a terminal.
final class ChapterStepsTests: XCTestCase {
    func testStepsFollowTheBooksOrderAndMatchEveryNumberItPrints() throws {
        let steps = try BookSteps.run(backend: .fused)
        let sections = steps.map { $0.title.split(separator: " ").first.map(String.init) ?? "" }
        XCTAssertEqual(Array(sections.prefix(15)), [
            "§3.3.1", "§3.3.1", "§3.3.1", "§3.3.2", "§3.4.1", "§3.4.1", "§3.4.1", "§3.4.2",
            "§3.5.1", "§3.5.1", "§3.5.2", "§3.5.2", "§3.5.3", "§3.6.1", "§3.6.2",
        ])
        XCTAssertTrue(steps.last?.title.contains("MiniLM") ?? false)
        var compared = 0
        for step in steps {
            XCTAssertFalse(step.explanation.isEmpty, step.title)
            for matrix in step.matrices {
                guard let difference = matrix.maxAbsoluteDifference else { continue }
                XCTAssertLessThanOrEqual(difference, 1e-5, "\(step.title) / \(matrix.title)")
                compared += 1
            }
        }
        XCTAssertEqual(compared, 21, "matrices with a number from book-ch03.json")
    }

    func testTheTwoWaysOfMaskingGiveTheSameWeights() throws {
        let steps = try BookSteps.run(backend: .reference)
        let wayOne = try XCTUnwrap(steps.first { $0.title.contains("way 1") }?.matrices.first { $0.title.hasPrefix("causal weights") })
        let wayTwo = try XCTUnwrap(steps.first { $0.title.contains("way 2") }?.matrices.first { $0.title.hasPrefix("renormalised") })
        XCTAssertLessThanOrEqual(try XCTUnwrap(wayOne.values.maxAbsoluteDifference(to: wayTwo.values)), 1e-6)
        let masked = try XCTUnwrap(steps.first { $0.title.contains("way 1") }?.matrices.first)
        XCTAssertEqual(masked[0, 1], -.infinity, "scores above the diagonal are −∞")
        XCTAssertEqual(masked.rowLabels, ["Your", "journey", "starts", "with", "one", "step"])
    }

    func testDemoStepsPrintsTheBooksNumbersWithTokenLabelsAndNoColourInAPipe() throws {
        let run = try runAttention(["demo", "--steps"], environment: [:])
        XCTAssertEqual(run.status, 0, run.standardError)
        let output = run.standardOutput
        for expected in [
            "journey  0.9544  1.4950  1.4754  0.8434  0.7070  1.0865",  // ω₂, §3.3.1
            "journey  0.1455  0.2278  0.2249  0.1285  0.1077  0.1656",  // naive normalisation
            "journey  0.1385  0.2379  0.2333  0.1240  0.1082  0.1581",  // softmax
            "journey  0.4419  0.6515  0.5683",  // context z⁽²⁾
            "q⁽²⁾ = x⁽²⁾·W_q = [0.4306, 1.4551]",
            "journey  1.2705  1.8524  1.8111  1.0795  0.5577  1.5440",  // q⁽²⁾·Kᵀ
            "journey  0.3061  0.8210",
            "Your  0.2050    -inf    -inf    -inf    -inf    -inf",  // masked scores
            "journey  0.5517  0.4483  0.0000  0.0000  0.0000  0.0000",  // causal weights
            "Your  2.0000  2.0000  0.0000  2.0000  2.0000  0.0000",  // dropout on ones
            "Your journey  starts    with     one    step",  // column labels
            "[CLS]     the   quick   brown     fox",
            "All results agree with PyTorch",
        ] {
            XCTAssertTrue(output.contains(expected), "missing: \(expected)")
        }
        XCTAssertFalse(output.contains("\u{1B}["), "no escape sequences when stdout is a pipe")
    }

    /// Both demos fit an 80-column terminal: prose wrapped, wide matrices in
    /// blocks of columns (counted in bytes, as `awk 'length > 80'` counts).
    func testEveryDemoLineFitsEightyColumns() throws {
        for arguments in [["demo", "--steps"], ["demo"]] {
            let run = try runAttention(arguments, environment: [:])
            XCTAssertEqual(run.status, 0, run.standardError)
            let wide = run.standardOutput.split(separator: "\n").filter { $0.utf8.count > 80 }
            XCTAssertEqual(wide, [], "\(arguments)")
        }
        let steps = try runAttention(["demo", "--steps"], environment: [:]).standardOutput
        XCTAssertTrue(steps.contains("columns 9–16 of 16"), "MiniLM's 16 tokens in two blocks")
        XCTAssertTrue(steps.contains("[SEP]  0.0288  0.0155  0.1419  0.0445  0.0342  0.0202  0.0641  0.1729"),
                      "head 0's last row, columns 9–16")
    }

    func testColorAlwaysColoursAndNoColorStillWinsOverAuto() throws {
        let coloured = try runAttention(["demo", "--steps", "--color", "always"], environment: ["COLORTERM": "truecolor"])
        XCTAssertEqual(coloured.status, 0, coloured.standardError)
        XCTAssertTrue(coloured.standardOutput.contains("\u{1B}[") && coloured.standardOutput.contains(";48;2;"))
        let plain = try runAttention(["demo", "--steps", "--color", "auto"], environment: ["NO_COLOR": "1", "COLORTERM": "truecolor"])
        XCTAssertFalse(plain.standardOutput.contains("\u{1B}["))
    }

    func testDemoSVGWritesOneWellFormedFilePerAttentionMap() throws {
        let directory = try makeTemporaryDirectory().appendingPathComponent("maps")
        let run = try runAttention(["demo", "--svg", directory.path], environment: [:])
        XCTAssertEqual(run.status, 0, run.standardError)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".svg") }.sorted()
        XCTAssertEqual(files.count, 26)
        XCTAssertEqual(files.filter { $0.contains("minilm-layer-0-head") }.count, 12, "one per MiniLM head")
        XCTAssertEqual(files.filter { $0.contains("multiheadattention-head") }.count, 2)
        for file in files {
            let document = try SVGDocument(String(contentsOf: directory.appendingPathComponent(file), encoding: .utf8))
            XCTAssertFalse(document.titles.isEmpty, file)
            XCTAssertTrue(document.elements.contains("linearGradient"), "\(file): colour scale")
            XCTAssertTrue(document.texts.contains("key token (column j), attended to"), "\(file): axis label")
        }
    }

    func testPlainDemoSaysWhichResultsComeFromTheReferencePath() throws {
        let fused = try runAttention(["demo"], environment: [:])
        XCTAssertEqual(fused.status, 0, fused.standardError)
        XCTAssertTrue(fused.standardOutput.contains("attention weights from the fused kernel's float32 path"))
        XCTAssertFalse(fused.standardOutput.contains("(reference path)"), "the fused backend forms the weights itself")
        XCTAssertTrue(fused.standardOutput.contains("journey  0.1385  0.2379"), "token-labelled rows")
        let reference = try runAttention(["demo", "--backend", "reference"], environment: [:])
        XCTAssertEqual(reference.status, 0, reference.standardError)
        XCTAssertTrue(reference.standardOutput.contains("-- causal attention weights [6, 6] (reference path)"))
    }
}

/// Runs `attention` with extra environment variables (stdout is a pipe).
func runAttention(_ arguments: [String], environment: [String: String]) throws -> AttentionRun {
    let process = Process()
    process.executableURL = try attentionExecutable()
    process.arguments = arguments
    var merged = ProcessInfo.processInfo.environment
    merged["NO_COLOR"] = nil
    for (key, value) in environment { merged[key] = value }
    process.environment = merged
    let output = Pipe(), error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return AttentionRun(status: process.terminationStatus,
                        standardOutput: String(decoding: outputData, as: UTF8.self),
                        standardError: String(decoding: errorData, as: UTF8.self))
}
