import Foundation

/// The timing loop, summary and printing shared by `attention bench`'s modes.
enum BenchTiming {
    /// `duration` in seconds.
    static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18
    }

    /// Runs `iteration` (the caller has warmed up) `repetitions` times when that
    /// is given; otherwise until at least `minimumRuns` runs and more than
    /// `minimumTime` since the first began, or `maximumRuns` runs, whichever
    /// comes first.
    static func repeatRuns(
        repetitions: Int?, minimumRuns: Int, minimumTime: Duration, maximumRuns: Int = .max,
        _ iteration: () throws -> Void
    ) rethrows {
        let clock = ContinuousClock()
        let start = clock.now
        var runs = 0
        while true {
            try iteration()
            runs += 1
            if let repetitions {
                if runs >= repetitions { break }
            } else if runs >= minimumRuns, clock.now - start > minimumTime {
                break
            }
            if repetitions == nil, runs >= maximumRuns { break }
        }
    }

    /// Seconds of each run of `body` by `repeatRuns`, fastest first.
    static func sortedSeconds(
        repetitions: Int?, minimumRuns: Int, minimumTime: Duration, maximumRuns: Int = .max,
        _ body: () throws -> Void
    ) rethrows -> [Double] {
        let clock = ContinuousClock()
        var times: [Double] = []
        try repeatRuns(repetitions: repetitions, minimumRuns: minimumRuns, minimumTime: minimumTime, maximumRuns: maximumRuns) {
            times.append(seconds(try clock.measure(body)))
        }
        return times.sorted()
    }

    /// The median (the mean of the middle two of an even count), the fastest
    /// and the number of `times`, which must not be empty.
    static func summary(_ times: [Double]) -> (median: Double, fastest: Double, runs: Int) {
        let sorted = times.sorted(), middle = sorted.count / 2
        return (sorted.count % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2, sorted[0], sorted.count)
    }

    /// `value` as one line of JSON with sorted keys, flushed (line by line for a pipe).
    static func printJSON(_ value: some Encodable) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(value), as: UTF8.self))
        fflush(nil)
    }

    /// `header` and `rows` in columns right-aligned to their widest cell, two spaces apart.
    static func printColumns(header: [String], rows: [[String]]) {
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        for row in [header] + rows {
            print(row.enumerated().map { $1.leftPadded(to: widths[$0]) }.joined(separator: "  "))
        }
    }

    /// The figure with `decimals` decimals, or "-" when it is not finite.
    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return "-" }
        return String(format: "%.\(decimals)f", value)
    }
}
