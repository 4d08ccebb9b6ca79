import Foundation

/// The ratio column and the one-line lesson under `attention bench`'s table.
enum BenchSummary {
    /// `value` with two significant digits: 0.17, 1.3, 12, 120 (never 0 for a positive ratio).
    static func significant(_ value: Double) -> String {
        guard value.isFinite else { return "-" }
        if value == 0 { return "0" }
        var exponent = Int(floor(log10(abs(value))))
        let unit = pow(10, Double(exponent - 1))
        let rounded = (value / unit).rounded() * unit
        if abs(rounded) >= pow(10, Double(exponent + 1)) { exponent += 1 }
        return String(format: "%.\(max(0, 1 - exponent))f", rounded)
    }

    /// One line per causal mode that has reference rows: from which shape on the
    /// fused kernel (at its fastest thread count) beats the naive reference, or
    /// that it never or always does among the shapes measured.
    static func crossover(_ results: [BenchmarkResult]) -> [String] {
        var lines: [String] = []
        for causal in [false, true] {
            let references = results.filter { $0.path == "reference" && $0.causal == causal && $0.medianSeconds != nil }
            var pairs: [(shape: String, flops: Double, ratio: Double)] = []
            for reference in references {
                let fused = results.filter {
                    $0.path == "fused" && $0.causal == causal && sameShape($0, reference) && $0.medianSeconds != nil
                }
                guard let fastest = fused.min(by: { $0.medianSeconds! < $1.medianSeconds! }),
                      let referenceSeconds = reference.medianSeconds, let gflops = reference.gflops else { continue }
                pairs.append((shapeText(reference), gflops * referenceSeconds, referenceSeconds / fastest.medianSeconds!))
            }
            guard !pairs.isEmpty else { continue }
            pairs.sort { $0.flops < $1.flops }
            let mode = causal ? "causal" : "full"
            let firstWinning = pairs.indices.first { index in pairs[index...].allSatisfy { $0.ratio > 1 } }
            let line: String
            switch firstWinning {
            case 0?:
                line = "\(mode): fused beats the naive reference at every shape measured, from the smallest "
                    + "(\(pairs[0].shape), \(significant(pairs[0].ratio))×); try smaller shapes to find where it stops."
            case let index?:
                let before = pairs[index - 1]
                line = "\(mode): fused starts to beat the naive reference at \(pairs[index].shape) (\(significant(pairs[index].ratio))×); "
                    + "at \(before.shape) and below (\(significant(before.ratio))×) its tiles and thread start-up cost more than they save."
            case nil:
                line = "\(mode): fused does not beat the naive reference at any shape measured (up to \(pairs.last!.shape), "
                    + "\(significant(pairs.last!.ratio))×): these shapes are too small for tiling and threads to pay off."
            }
            lines.append(line + " (fused at its fastest thread count vs the single-threaded oracle)")
        }
        return lines
    }

    static func shapeText(_ r: BenchmarkResult) -> String {
        "\(r.batch),\(r.heads),\(r.queryLength),\(r.keyLength),\(r.headDim)" + (r.kvHeads != r.heads ? ",\(r.kvHeads)" : "")
    }

    static func sameShape(_ a: BenchmarkResult, _ b: BenchmarkResult) -> Bool {
        (a.batch, a.heads, a.kvHeads, a.queryLength, a.keyLength, a.headDim) == (b.batch, b.heads, b.kvHeads, b.queryLength, b.keyLength, b.headDim)
    }
}
