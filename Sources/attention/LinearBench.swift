import ArgumentParser
import Attention
import CAttention
import Foundation

/// The options of `attention bench --linear`.
struct LinearBenchOptions: ParsableArguments {
    @Option(name: .long, help: ArgumentHelp("Time Linear alone on a few rows: INxOUT (nn.Linear(in, out), weight [out, in] float32, no bias), e.g. 4096x1024; repeatable. Reports GB/s of weight bytes and % of a read roof measured in the same run over the same bytes and threads, beside the tile product on the unpacked weight (attn_linear_forward).", valueName: "INxOUT"),
            transform: LinearShape.init(parsing:))
    var linear: [LinearShape] = []

    @Option(name: .long, help: ArgumentHelp("With --linear: input rows per call; repeatable. Default: 1, 2, 4, 8.", valueName: "n"))
    var rows: [Int] = []

    func validate() throws {
        if rows.contains(where: { $0 < 1 }) { throw ValidationError("--rows must be at least 1") }
        if linear.isEmpty, !rows.isEmpty { throw ValidationError("--rows needs --linear") }
    }
}

/// `INxOUT`: a layer nn.Linear(in, out).
struct LinearShape: CustomStringConvertible {
    let inFeatures, outFeatures: Int

    /// Parses `INxOUT` (an `x` or `X` between two integers ≥ 1); a
    /// ValidationError says which part is wrong and what it must be (the
    /// argument parser puts the option and the value typed before it).
    init(parsing argument: String) throws {
        let expected = "expected INxOUT, two integers ≥ 1, e.g. 4096x1024"
        let parts = argument.lowercased().split(separator: "x", omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw ValidationError("\(parts.count < 2 ? "no x between IN and OUT" : "more than one x"); \(expected)")
        }
        func feature(_ name: String, _ text: Substring) throws -> Int {
            if text.isEmpty { throw ValidationError("\(name) is missing; \(expected)") }
            guard let value = Int(text) else { throw ValidationError("\(name) (\(text)) is not an integer; \(expected)") }
            guard value >= 1 else { throw ValidationError("\(name) is \(value); \(expected)") }
            return value
        }
        inFeatures = try feature("IN", parts[0])
        outFeatures = try feature("OUT", parts[1])
    }

    var description: String { "\(inFeatures)x\(outFeatures)" }
}

/// One measured `Linear` case.
struct LinearBenchResult: Encodable {
    let inFeatures, outFeatures, rows, threads: Int
    /// Median and fastest seconds of `Linear.callAsFunction` (1–8 rows: the packed matrix-vector product).
    let medianSeconds, minSeconds: Double
    /// Median seconds of the tile product on the unpacked weight (`attn_linear_plan_create`), on the same driver and threads, timed after.
    let tileSeconds: Double
    /// in · out · 4.
    let weightBytes: Int
    /// weightBytes / medianSeconds.
    let gbps: Double
    /// `attn_read_bandwidth_gbps` over weightBytes, same threads, same run.
    let roofGbps: Double
    let roofFraction: Double
    let repetitions: Int
    let kernelPath: String
    let driver: String
}

/// `attention bench --linear INxOUT`: a projection of a few rows, the
/// decode-step case, against the read-bandwidth roof over its weight bytes.
struct LinearBench {
    var options: LinearBenchOptions
    var threads: [Int]
    var repetitions: Int?
    var json: Bool

    func run() throws {
        let rowCounts = options.rows.isEmpty ? [1, 2, 4, 8] : options.rows
        let threadCounts = threads.isEmpty ? Array(1...max(1, Int(attn_default_threads()))) : threads
        let kernelPath = String(cString: attn_kernel_path())
        let driver = AttentionThreading.driver.rawValue
        let progress = ProgressLine(total: options.linear.count * rowCounts.count * threadCounts.count)
        var results: [LinearBenchResult] = []
        var index = 0
        for shape in options.linear {
            let layer = try Linear(inFeatures: shape.inFeatures, outFeatures: shape.outFeatures, bias: false, seed: 11)
            let weightBytes = shape.inFeatures * shape.outFeatures * 4
            for rows in rowCounts {
                let input = try Tensor<Float>.randomNormal([rows, shape.inFeatures], seed: 5)
                var tileOutput = [Float](repeating: 0, count: rows * shape.outFeatures)
                for count in threadCounts {
                    progress.show(index, "\(shape) \(rows) rows \(count)t")
                    index += 1
                    let ((median, fastest, runs), (tile, _, _)) = try measure({
                        _ = try layer(input, threads: count)
                    }, and: {
                        let status = input.withUnsafeBufferPointer { x in
                            layer.weight.withUnsafeBufferPointer { w in
                                tileOutput.withUnsafeMutableBufferPointer { y in
                                    Self.tileProduct(
                                        x: x.baseAddress, rows: rows, weight: w.baseAddress, shape: shape, y: y.baseAddress,
                                        threads: count)
                                }
                            }
                        }
                        guard status == ATTN_OK else { throw CommandError("attn_linear_plan_create: \(String(cString: attn_status_description(status)))") }
                    })
                    let roof = attn_read_bandwidth_gbps(Int32(count), Int64(weightBytes), 0.3)
                    let gbps = Double(weightBytes) / median / 1e9
                    let result = LinearBenchResult(
                        inFeatures: shape.inFeatures, outFeatures: shape.outFeatures, rows: rows, threads: count,
                        medianSeconds: median, minSeconds: fastest, tileSeconds: tile, weightBytes: weightBytes,
                        gbps: gbps, roofGbps: roof, roofFraction: roof > 0 ? gbps / roof : .nan,
                        repetitions: runs, kernelPath: kernelPath, driver: driver)
                    if json { try BenchTiming.printJSON(result) }
                    results.append(result)
                }
            }
        }
        progress.finish()
        if !json { printTable(results, kernelPath: kernelPath, driver: driver) }
    }

    /// The tile product (`attn_linear_plan_create`, what these rows ran before
    /// the packed product) on the driver and worker count `Linear` runs with:
    /// `attn_linear_forward` would use the C driver, one thread in a build
    /// without OpenMP, and compare unlike thread counts.
    static func tileProduct(
        x: UnsafePointer<Float>?, rows: Int, weight: UnsafePointer<Float>?, shape: LinearShape,
        y: UnsafeMutablePointer<Float>?, threads: Int
    ) -> attn_status {
        var plan: OpaquePointer?
        let status = attn_linear_plan_create(
            x, Int64(rows), Int64(shape.inFeatures), weight, nil, Int64(shape.outFeatures), y, Int32(threads), &plan)
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        if AttentionThreading.driver == .openMP { return attn_plan_run(plan) }
        let workers = Int(attn_plan_workers(plan)), shared = SendablePlan(plan: plan)
        for round in 0..<attn_plan_rounds(plan) {
            if workers == 1 {
                attn_plan_work(plan, round, 0)
            } else {
                DispatchQueue.concurrentPerform(iterations: workers) { attn_plan_work(shared.plan, round, Int32($0)) }
            }
        }
        return ATTN_OK
    }

    /// A plan handed to Dispatch's workers, each of which runs its own share.
    private struct SendablePlan: @unchecked Sendable { let plan: OpaquePointer }

    /// Median and fastest seconds of `step` and of `other`, each timed in a
    /// block of its own runs (interleaving them would make each evict the
    /// other's weights from the caches, which the roof's passes do not suffer),
    /// after two warm-up runs: until 10 runs and 0.3 s (or `repetitions` runs).
    private func measure(
        _ step: () throws -> Void, and other: () throws -> Void
    ) throws -> ((Double, Double, Int), (Double, Double, Int)) {
        (try block(step), try block(other))
    }

    private func block(_ body: () throws -> Void) throws -> (Double, Double, Int) {
        for _ in 0..<2 { try body() }
        let times = try BenchTiming.sortedSeconds(
            repetitions: repetitions, minimumRuns: 10, minimumTime: .milliseconds(300), body)
        return BenchTiming.summary(times)
    }

    private func printTable(_ results: [LinearBenchResult], kernelPath: String, driver: String) {
        print("kernel path \(kernelPath), driver \(driver); Linear(in, out) on `rows` rows, float32 weight [out, in], no bias; GB/s of weight bytes; roof = attn_read_bandwidth_gbps over the same bytes and threads; tile = the tile product on the unpacked weight (what these rows ran before), on the same driver and threads, timed after")
        let header = ["in→out", "rows", "thr", "median ms", "min ms", "MB", "GB/s", "roof GB/s", "% roof", "tile ms", "× tile"]
        var rows: [[String]] = []
        for r in results {
            rows.append([
                "\(r.inFeatures)→\(r.outFeatures)", "\(r.rows)", "\(r.threads)", fixed(r.medianSeconds * 1e3, 3), fixed(r.minSeconds * 1e3, 3),
                fixed(Double(r.weightBytes) / 1e6, 1), fixed(r.gbps, 1), fixed(r.roofGbps, 1), fixed(100 * r.roofFraction, 0),
                fixed(r.tileSeconds * 1e3, 3), fixed(r.tileSeconds / r.medianSeconds, 2),
            ])
        }
        BenchTiming.printColumns(header: header, rows: rows)
    }

    private func fixed(_ value: Double, _ decimals: Int) -> String { BenchTiming.fixed(value, decimals) }
}
