import Foundation

/// A row of PyTorch's timing script (`torch_sdpa_bench.py`), one JSON object per line.
struct PeerBenchmarkRow: Decodable {
    let batch, heads, queryLength, keyLength, headDim: Int
    let kvHeads: Int?
    let causal: Bool
    let threads: Int
    let path: String
    let medianSeconds: Double
    let gflops: Double

    /// Bytes that must cross memory at least once: q, k, v, out (as `BenchmarkShape.bytes`).
    var bytes: Double {
        let kv = kvHeads ?? heads
        return 4 * Double(batch) * (Double(heads * queryLength * headDim * 2) + Double(kv * keyLength * headDim * 2))
    }
}

/// `attention bench --svg FILE`: throughput against sequence length, one line
/// per path × thread count × causal mode, PyTorch's rows (from `--compare`) dashed.
/// GFLOP/s for the compute-bound shapes; GB/s, in a second panel, for decode
/// shapes (few queries, many keys), which are bound by memory.
enum BenchPlot {
    /// Reads `--compare FILE`: JSON lines of `torch_sdpa_bench.py` (blank lines skipped).
    ///
    /// - Throws: `CommandError` naming the file and the line that does not parse.
    static func loadPeerRows(_ path: String) throws -> [PeerBenchmarkRow] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw CommandError("--compare \(path): cannot read the file")
        }
        var rows: [PeerBenchmarkRow] = []
        for (index, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let text = line.trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty else { continue }
            do {
                rows.append(try JSONDecoder().decode(PeerBenchmarkRow.self, from: Data(text.utf8)))
            } catch {
                throw CommandError("--compare \(path): line \(index + 1) is not a row of torch_sdpa_bench.py (\(error))")
            }
        }
        return rows
    }

    struct Point { let length: Int, value: Double, order: Double }
    struct Series { let name: String, dashed: Bool, points: [Point] }

    /// The series of one panel: ours by path/threads/causal, the peer's likewise.
    static func series(_ results: [BenchmarkResult], peers: [PeerBenchmarkRow], decode: Bool) -> [Series] {
        var groups: [String: (dashed: Bool, points: [Point])] = [:]
        var order: [String] = []
        func add(_ name: String, dashed: Bool, _ point: Point) {
            if groups[name] == nil { order.append(name); groups[name] = (dashed, []) }
            groups[name]!.points.append(point)
        }
        // The driver and the idle wait name a line only when the run compared
        // several (a build without OpenMP runs everything on dispatch); otherwise
        // rows that differ only in them would share a line.
        let severalDrivers = Set(results.map(\.driver)).count > 1
        let severalIdleWaits = Set(results.map(\.idleWait)).count > 1
        for r in results where isDecode(r.queryLength, r.keyLength) == decode {
            // A row without figures (a failed case) has no point.
            guard let gflops = r.gflops, let median = r.medianSeconds, let value = decode ? r.gbps : gflops else { continue }
            let name = "\(r.path) \(r.threads)t \(r.causal ? "causal" : "full")"
                + (severalDrivers ? " \(r.driver)" : "") + (severalIdleWaits ? " \(r.idleWait)" : "")
            add(name, dashed: false, Point(length: r.keyLength, value: value, order: gflops * median))
        }
        for r in peers where isDecode(r.queryLength, r.keyLength) == decode {
            let name = "PyTorch \(r.path) \(r.threads)t \(r.causal ? "causal" : "full")"
            add(name, dashed: true, Point(length: r.keyLength, value: decode ? r.bytes / r.medianSeconds / 1e9 : r.gflops,
                                          order: r.gflops * r.medianSeconds))
        }
        return order.map { name in
            Series(name: name, dashed: groups[name]!.dashed,
                   points: groups[name]!.points.sorted { ($0.length, $0.order) < ($1.length, $1.order) })
        }
    }

    /// As `BenchmarkShape.isDecode`.
    static func isDecode(_ queryLength: Int, _ keyLength: Int) -> Bool { queryLength <= 4 && keyLength >= 256 }

    /// Writes the plot; the title names the kernel path and the peak.
    ///
    /// - Throws: `CommandError` if the file cannot be written.
    static func write(_ results: [BenchmarkResult], peers: [PeerBenchmarkRow], kernelPath: String, to path: String) throws {
        let text = svg(results, peers: peers, kernelPath: kernelPath)
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw CommandError("--svg \(path): cannot write the file (\(error.localizedDescription))")
        }
    }

    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]

    /// The SVG document: one panel for GFLOP/s, one for GB/s if there are decode rows.
    static func svg(_ results: [BenchmarkResult], peers: [PeerBenchmarkRow], kernelPath: String) -> String {
        let panels: [(title: String, unit: String, series: [Series])] = [
            ("Throughput against sequence length (compute-bound shapes)", "GFLOP/s", series(results, peers: peers, decode: false)),
            ("Decode: few queries against a long key/value cache (memory-bound)", "GB/s", series(results, peers: peers, decode: true)),
        ].filter { !$0.series.isEmpty }
        let panelWidth = 560.0, panelHeight = 300.0, legendWidth = 250.0
        let width = 70 + panelWidth + 20 + legendWidth
        let height = 50 + Double(max(panels.count, 1)) * (panelHeight + 90)
        var svg = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(f(width))" height="\(f(height))" \
            viewBox="0 0 \(f(width)) \(f(height))" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
            <title>attention bench: throughput against sequence length</title>
            <desc>One line per path, thread count and causal mode (solid: this package; dashed: PyTorch, from --compare). \
            Kernel path \(escape(kernelPath)). Shapes with the same key length are joined in order of their FLOPs.</desc>
            <rect width="100%" height="100%" fill="white"/>
            <text x="12" y="24" font-size="16" font-weight="bold">attention bench (kernel path \(escape(kernelPath)))</text>
            <text x="12" y="42" font-size="12" fill="#444">median throughput; solid: this package, dashed: PyTorch (from --compare)</text>

            """
        if panels.isEmpty { svg += "<text x=\"70\" y=\"80\" font-size=\"13\">no results</text>\n" }
        for (panelIndex, panel) in panels.enumerated() {
            let top = 50 + Double(panelIndex) * (panelHeight + 90) + 30
            let left = 70.0
            svg += "<text x=\"\(f(left))\" y=\"\(f(top - 12))\" font-size=\"13\" font-weight=\"bold\">\(escape(panel.title))</text>\n"
            let points = panel.series.flatMap(\.points)
            let lengths = points.map { log2(Double(max($0.length, 1))) }
            var (xLow, xHigh) = (floor(lengths.min() ?? 0), ceil(lengths.max() ?? 1))
            if xHigh <= xLow { xLow -= 1; xHigh += 1 }
            let yHigh = niceCeiling(points.map(\.value).filter(\.isFinite).max() ?? 1)
            func x(_ length: Int) -> Double { left + (log2(Double(max(length, 1))) - xLow) / (xHigh - xLow) * panelWidth }
            func y(_ value: Double) -> Double { top + panelHeight - min(max(value, 0), yHigh) / yHigh * panelHeight }
            // Axes, grid and ticks.
            svg += "<rect x=\"\(f(left))\" y=\"\(f(top))\" width=\"\(f(panelWidth))\" height=\"\(f(panelHeight))\" fill=\"none\" stroke=\"#333\"/>\n"
            for step in 0...5 {
                let value = yHigh * Double(step) / 5
                svg += "<line x1=\"\(f(left))\" y1=\"\(f(y(value)))\" x2=\"\(f(left + panelWidth))\" y2=\"\(f(y(value)))\" stroke=\"#ddd\"/>"
                svg += "<text x=\"\(f(left - 6))\" y=\"\(f(y(value) + 4))\" font-size=\"11\" text-anchor=\"end\">\(BenchSummary.significant(value))</text>\n"
            }
            for exponent in Int(xLow)...Int(xHigh) {
                let px = left + (Double(exponent) - xLow) / (xHigh - xLow) * panelWidth
                svg += "<line x1=\"\(f(px))\" y1=\"\(f(top))\" x2=\"\(f(px))\" y2=\"\(f(top + panelHeight))\" stroke=\"#eee\"/>"
                svg += "<text x=\"\(f(px))\" y=\"\(f(top + panelHeight + 16))\" font-size=\"11\" text-anchor=\"middle\">\(1 << exponent)</text>\n"
            }
            svg += "<text x=\"\(f(left + panelWidth / 2))\" y=\"\(f(top + panelHeight + 36))\" font-size=\"12\" text-anchor=\"middle\">"
                + "key length Lk (tokens, log scale)</text>\n"
            svg += "<text transform=\"translate(\(f(left - 48)) \(f(top + panelHeight / 2))) rotate(-90)\" font-size=\"12\" "
                + "text-anchor=\"middle\">\(panel.unit)</text>\n"
            // Lines and markers, then the legend.
            for (index, series) in panel.series.enumerated() {
                let colour = palette[index % palette.count]
                let path = series.points.map { "\(f(x($0.length))),\(f(y($0.value)))" }.joined(separator: " ")
                svg += "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(colour)\" stroke-width=\"2\""
                    + (series.dashed ? " stroke-dasharray=\"6 4\"" : "") + "><title>\(escape(series.name))</title></polyline>\n"
                for point in series.points {
                    svg += "<circle cx=\"\(f(x(point.length)))\" cy=\"\(f(y(point.value)))\" r=\"3\" fill=\"\(colour)\">"
                        + "<title>\(escape(series.name)): Lk \(point.length), \(BenchSummary.significant(point.value)) \(panel.unit)</title></circle>\n"
                }
                let legendY = top + 8 + Double(index) * 18
                let legendX = left + panelWidth + 20
                svg += "<line x1=\"\(f(legendX))\" y1=\"\(f(legendY))\" x2=\"\(f(legendX + 24))\" y2=\"\(f(legendY))\" stroke=\"\(colour)\" "
                    + "stroke-width=\"2\"" + (series.dashed ? " stroke-dasharray=\"6 4\"" : "") + "/>"
                svg += "<text x=\"\(f(legendX + 30))\" y=\"\(f(legendY + 4))\" font-size=\"11\">\(escape(series.name))</text>\n"
            }
        }
        svg += "</svg>\n"
        return svg
    }

    /// 1, 2 or 5 times a power of ten, at least `value`.
    static func niceCeiling(_ value: Double) -> Double {
        guard value > 0 else { return 1 }
        let power = pow(10, floor(log10(value)))
        for factor in [1.0, 2, 5, 10] where factor * power >= value { return factor * power }
        return 10 * power
    }

    static func f(_ value: Double) -> String { String(format: "%.1f", value) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
