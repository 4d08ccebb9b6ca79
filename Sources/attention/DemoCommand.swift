import ArgumentParser
import Attention
import AttentionExamples

/// `attention demo`: the book's four variants, then MiniLM layer 0.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run the four attention variants on the book's sentence and a real MiniLM layer, checked against PyTorch.")

    @Option(name: .long, help: "Backend: fused (the C kernel) or reference (the Swift oracle).")
    var backend: BackendChoice = .fused

    @Option(name: .long, help: "Largest difference to PyTorch's numbers that counts as agreement.")
    var tolerance: Float = 1e-4

    func validate() throws {
        guard tolerance.isFinite, tolerance >= 0 else {
            throw ValidationError("--tolerance must be a finite number ≥ 0, got \(tolerance)")
        }
    }

    func run() throws {
        print("Attention demo: \"Your journey starts with one step\" (Raschka, ch. 3), backend \(backend.rawValue)\n")
        var worst: Float = 0
        for section in try BookDemo.run(backend: backend.backend) {
            print("== \(section.title)")
            print("   \(section.detail)")
            for comparison in section.comparisons {
                var heading = "-- \(comparison.name) \(comparison.computed.shape)"
                if let difference = comparison.maxAbsoluteDifference {
                    heading += ": max |Δ| vs book = \(MatrixFormatting.scientific(difference))"
                    worst = max(worst, difference.isNaN ? .infinity : difference)
                }
                print(heading)
                print(MatrixFormatting.render(comparison.computed))
            }
            print("")
        }
        let minilm = try MiniLMDemo.run(backend: backend.backend)
        print("== 5. A real model: all-MiniLM-L6-v2, layer 0 self-attention")
        print("   \"\(minilm.sentence)\": \(minilm.tokenCount) tokens, hidden \(minilm.hiddenSize), \(minilm.heads) heads of \(minilm.headDim)")
        print("-- attention output [1, \(minilm.tokenCount), \(minilm.hiddenSize)], first 6 features of the first 4 tokens:")
        print(MatrixFormatting.render(minilm.preview))
        print("-- max |Δ| vs PyTorch: context \(MatrixFormatting.scientific(minilm.contextDifference)), attention output \(MatrixFormatting.scientific(minilm.outputDifference))")
        worst = max(worst, minilm.outputDifference, minilm.contextDifference)
        print("")
        let verdict = worst <= tolerance ? "agree" : "DISAGREE"
        print("All results \(verdict) with PyTorch: largest difference \(MatrixFormatting.scientific(worst)) (tolerance \(MatrixFormatting.scientific(tolerance))).")
        if worst > tolerance { throw ExitCode.failure }
    }
}

/// The `--backend` option.
enum BackendChoice: String, ExpressibleByArgument, CaseIterable {
    case fused, reference
    var backend: AttentionBackend { self == .fused ? .fused : .reference }
}
