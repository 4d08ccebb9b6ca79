import ArgumentParser
import Attention
import AttentionExamples
import Foundation

/// `attention demo`: the book's four variants, then MiniLM layer 0; with
/// `--steps`, the chapter step by step; with `--svg DIR`, heatmap files.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the four attention variants on the book's sentence and a real MiniLM layer, checked against PyTorch.",
        discussion: """
            Without options: a compact check of every number chapter 3 of Raschka's "Build a Large Language Model \
            (From Scratch)" prints. --steps walks through the chapter in the book's order, every matrix labelled with \
            its tokens and each step explained. Heatmaps are coloured on a terminal (truecolor when COLORTERM says so, \
            else 256 colours) and plain numbers otherwise or when NO_COLOR is set. --svg DIR writes one SVG heatmap per \
            attention-weight matrix (per head for multi-head attention and MiniLM).
            """)

    @Option(name: .long, help: "Backend: fused (the C kernel) or reference (the Swift oracle).")
    var backend: BackendChoice = .fused

    @Option(name: .long, help: "Largest difference to PyTorch's numbers that counts as agreement.")
    var tolerance: Float = 1e-4

    @Flag(name: .long, help: "Walk through the chapter step by step, in the book's order.")
    var steps = false

    @Option(name: .long, help: "Write one SVG heatmap per attention-weight matrix into this directory (created if missing).")
    var svg: String?

    @Option(name: .long, help: "Colour: auto (a terminal without NO_COLOR), always or never.")
    var color: ColourChoice = .auto

    func validate() throws {
        guard tolerance.isFinite, tolerance >= 0 else {
            throw ValidationError("--tolerance must be a finite number ≥ 0, got \(tolerance)")
        }
    }

    var colour: TerminalColour {
        let environment = ProcessInfo.processInfo.environment
        switch color {
        case .never: return .none
        case .always: return TerminalColour.detect(isTerminal: true, environment: environment.filter { $0.key != "NO_COLOR" && $0.key != "TERM" })
        case .auto: return TerminalColour.detect(isTerminal: isatty(1) != 0, environment: environment)
        }
    }

    func run() throws {
        var worst: Float = 0
        if steps || svg != nil {
            let chapter = try BookSteps.run(backend: backend.backend)
            if steps { worst = printSteps(chapter) }
            if let svg { try writeHeatmaps(chapter, to: svg) }
            if !steps { return }
        } else {
            worst = try printCompactCheck()
        }
        print("")
        let verdict = worst <= tolerance ? "agree" : "DISAGREE"
        print("All results \(verdict) with PyTorch: largest difference \(MatrixFormatting.scientific(worst)) (tolerance \(MatrixFormatting.scientific(tolerance))).")
        if worst > tolerance { throw ExitCode.failure }
    }

    /// The chapter, step by step; returns the largest difference to the book.
    func printSteps(_ chapter: [ChapterStep]) -> Float {
        print(wrap("Chapter 3 of \"Build a Large Language Model (From Scratch)\" step by step: "
            + "\"Your journey starts with one step\"", indent: "", continuation: ""))
        print(wrap("Weights from the book (torch.manual_seed 123 / 789); layers on the \(backend.rawValue) backend, "
            + "matrices by hand with Reference's exact helpers. Δ: the largest difference to the book's number.",
            indent: "", continuation: ""))
        var worst: Float = 0
        for (index, step) in chapter.enumerated() {
            print("")
            print(wrap("== \(index + 1). \(step.title)", indent: "", continuation: "   "))
            print(wrap(step.explanation, indent: "   "))
            for item in step.items {
                switch item {
                case let .text(text):
                    print(wrap(text, indent: "   "))
                case let .matrix(matrix):
                    var heading = "-- \(matrix.title) \(matrix.values.shape)"
                    if let difference = matrix.maxAbsoluteDifference {
                        heading += ": max |Δ| vs book = \(MatrixFormatting.scientific(difference))"
                        worst = max(worst, difference.isNaN ? .infinity : difference)
                    }
                    print(wrap(heading, indent: "", continuation: "   "))
                    print(Heatmap.terminal(matrix, colour: colour, width: Self.lineWidth))
                }
            }
        }
        return worst
    }

    /// The compact check: every printed number of the book and MiniLM's, one block each.
    func printCompactCheck() throws -> Float {
        print(wrap("Attention demo: \"Your journey starts with one step\" (Raschka, ch. 3), backend \(backend.rawValue)",
                   indent: "", continuation: ""))
        print(wrap(backend.backend == .reference
            ? "(every number from the float64 oracle)"
            : "(attention weights from the fused kernel's float32 path: its logsumexp, then exp(s − logsumexp))",
            indent: "", continuation: "") + "\n")
        let tokens = try BookChapter3.load().tokens
        var worst: Float = 0
        for section in try BookDemo.run(backend: backend.backend) {
            print(wrap("== \(section.title)", indent: "", continuation: "   "))
            print(wrap(section.detail, indent: "   "))
            for comparison in section.comparisons {
                var heading = "-- \(comparison.name) \(comparison.computed.shape)"
                if comparison.fromReference { heading += " (reference path)" }
                if let difference = comparison.maxAbsoluteDifference {
                    heading += ": max |Δ| vs book = \(MatrixFormatting.scientific(difference))"
                    worst = max(worst, difference.isNaN ? .infinity : difference)
                }
                print(wrap(heading, indent: "", continuation: "   "))
                print(try render(comparison.computed, tokens: tokens))
            }
            print("")
        }
        let minilm = try MiniLMDemo.run(backend: backend.backend)
        print("== 5. A real model: all-MiniLM-L6-v2, layer 0 self-attention")
        print(wrap("\"\(minilm.sentence)\": \(minilm.tokenCount) tokens, hidden \(minilm.hiddenSize), "
                   + "\(minilm.heads) heads of \(minilm.headDim)", indent: "   "))
        print(wrap("-- attention output [1, \(minilm.tokenCount), \(minilm.hiddenSize)], first 6 features of the first 4 tokens:",
                   indent: "", continuation: "   "))
        print(MatrixFormatting.render(minilm.preview))
        print(wrap("-- max |Δ| vs PyTorch: context \(MatrixFormatting.scientific(minilm.contextDifference)), "
                   + "attention output \(MatrixFormatting.scientific(minilm.outputDifference))", indent: "", continuation: "   "))
        return max(worst, minilm.outputDifference, minilm.contextDifference)
    }

    /// Matrices whose rows are the six tokens, labelled (each of a batch in turn); others as plain numbers.
    func render(_ tensor: Tensor<Float>, tokens: [String]) throws -> String {
        guard tensor.rank >= 2, tensor.shape[tensor.rank - 2] == tokens.count else { return MatrixFormatting.render(tensor) }
        let columns = tensor.shape[tensor.rank - 1]
        let size = tokens.count * columns
        let columnLabels = columns == tokens.count ? tokens : (0..<columns).map { "d\($0)" }
        var blocks: [String] = []
        for start in stride(from: 0, to: tensor.count, by: size) {
            let matrix = try LabelledMatrix(
                title: "", values: Tensor(shape: [tokens.count, columns], scalars: Array(tensor.scalars[start..<(start + size)])),
                rowLabels: tokens, columnLabels: columnLabels)
            blocks.append(Heatmap.terminal(matrix, colour: colour, width: Self.lineWidth))
        }
        return blocks.joined(separator: "\n\n")
    }

    /// One SVG per attention map of the chapter, named after its step and title.
    func writeHeatmaps(_ chapter: [ChapterStep], to directory: String) throws {
        let url = URL(fileURLWithPath: directory, isDirectory: true)
        do {
            try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        } catch {
            throw CommandError("--svg \(directory): cannot create the directory (\(error.localizedDescription))")
        }
        var written = 0
        for (stepIndex, step) in chapter.enumerated() {
            for (matrixIndex, matrix) in step.matrices.enumerated() where matrix.isAttentionMap {
                let name = String(format: "%02d-%02d-", stepIndex + 1, matrixIndex + 1) + Self.fileName(matrix.title) + ".svg"
                let text = Heatmap.svg(matrix, subtitle: step.title)
                do {
                    try Data(text.utf8).write(to: url.appendingPathComponent(name), options: .atomic)
                } catch {
                    throw CommandError("--svg \(directory): cannot write \(name) (\(error.localizedDescription))")
                }
                written += 1
            }
        }
        print("wrote \(written) SVG heatmaps to \(directory)")
    }

    /// A file name from a title: lower-case ASCII letters and digits, words joined by "-".
    static func fileName(_ title: String) -> String {
        var name = ""
        for scalar in title.lowercased().unicodeScalars {
            if scalar.isASCII, CharacterSet.alphanumerics.contains(scalar) {
                name.unicodeScalars.append(scalar)
            } else if !name.isEmpty, name.last != "-" {
                name += "-"
            }
        }
        while name.last == "-" { name.removeLast() }
        return String(name.prefix(60))
    }

    /// The widest line `--steps` prints, in columns.
    static let lineWidth = 80

    /// `text` wrapped at ``lineWidth`` columns: the first line after `indent`,
    /// the others after `continuation` (default: `indent`). A line's width is
    /// counted in UTF-8 bytes, never fewer than its columns, so the lines also
    /// fit for tools that count bytes (`awk 'length > 80'`).
    func wrap(_ text: String, indent: String, continuation: String? = nil) -> String {
        var lines: [String] = [], line = indent
        let next = continuation ?? indent
        var lineIsEmpty = true
        for word in text.split(separator: " ") {
            if !lineIsEmpty, line.utf8.count + 1 + word.utf8.count > Self.lineWidth {
                lines.append(line)
                line = next
                lineIsEmpty = true
            }
            line += (lineIsEmpty ? "" : " ") + word
            lineIsEmpty = false
        }
        if !lineIsEmpty { lines.append(line) }
        return lines.joined(separator: "\n")
    }
}

/// The `--backend` option.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case fused, reference
    var backend: AttentionBackend { self == .fused ? .fused : .reference }
}

/// The `--color` option.
enum ColourChoice: String, ExpressibleByArgument, CaseIterable {
    case auto, always, never
}
