import ArgumentParser
import Attention
import CAttention
import Foundation

/// `attention bench`: threaded throughput of the fused kernel (and the oracle on
/// small shapes), with ratios measured in the same run.
struct BenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Throughput of scaled-dot-product attention over shapes × causal × threads × path.",
        discussion: """
            Each case runs twice to warm up, then repeats until 5 runs and 1 s have passed (or \
            --repetitions times); the median is reported. FLOPs are 4·B·H·Lq·Lk·D, halved when causal \
            with Lq = Lk. "% peak" is against a register-only FMA loop measured in the same run with \
            the same thread count. --format json prints one object per line in the schema of \
            PyTorch's timing script torch_sdpa_bench.py from the project's reference data (plus \
            minSeconds, gbps, peakFraction, kernelPath, error); scripts/compare_with_pytorch.py runs both. \
            Every figure is finite or absent: null in JSON, empty in CSV, — in the table (a failed \
            measurement, a zero time or an unmeasurable peak never aborts the run). \
            ATTENTION_BENCH_PEAK_GFLOPS=X uses X as the peak instead of measuring it. \
            --linear INxOUT times the Linear layer alone on --rows rows (1–8: a decode step's \
            projections, a matrix-vector product on the packed weight) per --threads count, in GB/s \
            of weight bytes against attn_read_bandwidth_gbps over the same bytes and threads, beside \
            the tile product attn_linear_forward on the unpacked weight (table or json).
            """)

    @Option(name: .long, help: "A shape B,H,Lq,Lk,D[,Hkv]; repeatable. Default: the peer table's grid.")
    var shape: [String] = []

    @Flag(name: .long, help: "Only causal cases (default: both).")
    var causal = false

    @Flag(name: .long, help: "Only non-causal cases (default: both).")
    var nonCausal = false

    @Option(name: .long, help: "Thread count; repeatable. Default: 1 … the number of cores.")
    var threads: [Int] = []

    @Option(name: .long, help: "Timed runs per case (default: until 5 runs and 1 s).")
    var repetitions: Int?

    @Option(name: .long, help: "fused or reference; repeatable. Default: fused, and reference on shapes under 0.2 GFLOP.")
    var path: [BackendChoice] = []

    @Flag(name: .long, help: "Time the backward pass (dq, dk, dv from a kept forward); FLOPs 2.5× the forward's.")
    var backward = false

    @Option(name: .long, help: "table, json or csv.")
    var format: OutputFormat = .table

    @Option(name: .long, help: "Threading driver: openmp or dispatch; repeatable (both: the table gives dispatch ÷ openmp throughput). Default: the current one.")
    var driver: [AttentionThreading.Driver] = []

    @Option(name: .long, help: "What idle OpenMP threads do between calls: spin, sleep or runtime; repeatable (each is a case). Default: the current policy.")
    var idleWait: [AttentionThreading.IdleWait] = []

    enum OutputFormat: String, ExpressibleByArgument { case table, json, csv }

    @Option(name: .long, help: "Also write an SVG plot: GFLOP/s (GB/s for decode) against length, one line per path × threads.")
    var svg: String?

    @Option(name: .long, help: "JSON lines from PyTorch's torch_sdpa_bench.py, plotted dashed beside ours (with --svg).")
    var compare: String?

    @Option(name: .long, help: "float32, float16 or bfloat16; repeatable: time the kernel with keys and values stored that way, in GB/s of K+V bytes and % of a read-bandwidth roof measured just before and after each case (the median call and the fastest against it; table or json).")
    var kvStorage: [KVStorageChoice] = []

    @Option(name: .long, help: "With --kv-storage: rows, panels (keys in panels of 16) or panels64 (panels of 64, what KVCache stores); repeatable. Default: rows.")
    var keyLayout: [KeyLayoutChoice] = []

    @OptionGroup(title: "Decode steps (--decode)")
    var decodeOptions: DecodeBenchOptions

    @OptionGroup(title: "Projections of a few rows (--linear)")
    var linearOptions: LinearBenchOptions

    func validate() throws {
        for text in shape where BenchmarkShape(parsing: text) == nil {
            throw ValidationError("--shape \(text): expected B,H,Lq,Lk,D[,Hkv], non-negative, with Hkv dividing H")
        }
        if causal && nonCausal { throw ValidationError("--causal and --non-causal exclude each other") }
        if threads.contains(where: { $0 < 1 }) { throw ValidationError("--threads must be at least 1") }
        if let repetitions, repetitions < 1 { throw ValidationError("--repetitions must be at least 1") }
        if driver.contains(.openMP) && !AttentionThreading.isOpenMPAvailable {
            throw ValidationError("--driver openmp: this build has no OpenMP (package trait OpenMP off, or not Linux)")
        }
        if !linearOptions.linear.isEmpty, decodeOptions.decode || !kvStorage.isEmpty {
            throw ValidationError("--linear is a run of its own: drop --decode and --kv-storage")
        }
        if compare != nil, svg == nil { throw ValidationError("--compare plots PyTorch's rows beside ours: give --svg FILE too") }
    }

    func run() throws {
        if !linearOptions.linear.isEmpty {
            return try LinearBench(options: linearOptions, threads: threads, repetitions: repetitions, json: format == .json).run()
        }
        if decodeOptions.decode {
            return try DecodeBench(options: decodeOptions, threads: threads, repetitions: repetitions, json: format == .json).run()
        }
        let peerRows = try compare.map(BenchPlot.loadPeerRows) ?? []  // a bad file fails before the long run
        let shapes = shape.isEmpty ? BenchmarkShape.defaultGrid : shape.compactMap(BenchmarkShape.init(parsing:))
        if !kvStorage.isEmpty {
            let threadCounts = threads.isEmpty ? Array(1...max(1, Int(attn_default_threads()))) : threads
            return try KVStorageBenchmark(
                shapes: shape.isEmpty ? BenchmarkShape.decodeGrid : shapes, storages: kvStorage,
                layouts: keyLayout.isEmpty ? [.rows] : keyLayout,
                threadCounts: threadCounts, repetitions: repetitions, json: format == .json
            ).run()
        }
        let causalModes = causal ? [true] : nonCausal ? [false] : [false, true]
        let threadCounts = threads.isEmpty ? Array(1...max(1, Int(attn_default_threads()))) : threads
        let kernelPath = String(cString: attn_kernel_path())
        var peaks: [Int: Double] = [:]
        let pinnedPeak = Self.pinnedPeak()
        for count in threadCounts { peaks[count] = pinnedPeak ?? attn_fma_peak_gflops(Int32(count), 0.3) }

        let drivers = driver.isEmpty ? [AttentionThreading.driver] : driver
        let idleWaits = idleWait.isEmpty ? [AttentionThreading.idleWait] : idleWait
        var cases: [(BenchmarkShape, Bool, Int, BackendChoice, Settings)] = []
        for shape in shapes {
            for isCausal in causalModes where !(isCausal && shape.isDecode) {
                let paths = path.isEmpty ? (!backward && shape.flops(causal: isCausal) < 2e8 ? [.fused, .reference] : [.fused]) : path
                for backend in paths {
                    for count in (backend == .reference ? [1] : threadCounts) {
                        // Driver × idle wait, interleaved per case so that the machine's
                        // noise falls on every setting alike.
                        let settings = backend == .reference ? [Settings(driver: drivers[0], idleWait: idleWaits[0])]
                            : drivers.flatMap { d in idleWaits.map { Settings(driver: d, idleWait: $0) } }
                        for setting in settings { cases.append((shape, isCausal, count, backend, setting)) }
                    }
                }
            }
        }
        guard !cases.isEmpty else {
            throw ValidationError("no case to run: causal is skipped for decode shapes (Lq ≤ 4, Lk ≥ 256); drop --causal")
        }
        let progress = ProgressLine(total: cases.count)
        var results: [BenchmarkResult] = []
        let initialSettings = Settings(driver: AttentionThreading.driver, idleWait: AttentionThreading.idleWait)
        defer { initialSettings.apply() }
        for (index, (shape, isCausal, count, backend, setting)) in cases.enumerated() {
            progress.show(index, "\(shape) \(isCausal ? "causal" : "full") \(backend.rawValue) \(count)t \(setting)")
            setting.apply()
            // A case that cannot be measured (too large for memory, a kernel error)
            // is a row without figures, and the run goes on.
            var measured: (median: Double, fastest: Double, runs: Int)?
            var failure: String?
            do {
                measured = try measure(shape: shape, causal: isCausal, threads: count, backend: backend.backend)
            } catch {
                failure = "\(error)"
            }
            let result = BenchmarkResult(
                shape: shape, causal: isCausal, threads: count, path: backend.rawValue, median: measured?.median,
                fastest: measured?.fastest, repetitions: measured?.runs ?? 0, peakGFLOPS: peaks[count],
                kernelPath: kernelPath, error: failure, driver: setting.driver.rawValue, idleWait: setting.idleWait.rawValue,
                flopFactor: flopFactor)
            results.append(result)
            if format == .json { try BenchTiming.printJSON(result) }
        }
        progress.finish()
        if let svg { try BenchPlot.write(results, peers: peerRows, kernelPath: kernelPath, to: svg) }
        switch format {
        case .json: break
        case .csv: printCSV(results)
        case .table:
            printTable(results, peaks: peaks, kernelPath: kernelPath)
            for line in BenchSummary.crossover(results) { print(line) }
            let largest = shapes.map(\.bytes).max() ?? 0
            print("peak RSS \(fixed(Self.peakResidentMegabytes(), 1)) MB; largest inputs + output \(fixed(largest / 1e6, 1)) MB")
        }
    }

    /// Median and fastest seconds of one case after two warm-up runs.
    func measure(shape: BenchmarkShape, causal: Bool, threads: Int, backend: AttentionBackend) throws -> (Double, Double, Int) {
        let q = try Tensor<Float>.randomNormal([shape.batch, shape.heads, shape.queryLength, shape.headDim], seed: 1)
        let k = try Tensor<Float>.randomNormal([shape.batch, shape.kvHeads, shape.keyLength, shape.headDim], seed: 2)
        let v = try Tensor<Float>.randomNormal([shape.batch, shape.kvHeads, shape.keyLength, shape.headDim], seed: 3)
        let mask = causal ? shape.causalMask : .none
        let call = backward
            ? try backwardCall(queries: q, keys: k, values: v, mask: mask, backend: backend, threads: threads)
            : { _ = try scaledDotProductAttention(queries: q, keys: k, values: v, mask: mask, backend: backend, threads: threads) }
        for _ in 0..<(backend == .reference ? 1 : 2) { try call() }
        // The naive reference is slow: three runs are enough.
        let times = try BenchTiming.sortedSeconds(
            repetitions: repetitions, minimumRuns: 5, minimumTime: .seconds(1), maximumRuns: backend == .reference ? 3 : .max, call)
        let summary = BenchTiming.summary(times)
        return (summary.median, summary.fastest, summary.runs)
    }

    /// The process's peak resident set size (getrusage; kilobytes on Linux).
    static func peakResidentMegabytes() -> Double {
        var usage = rusage()
        getrusage(RUSAGE_SELF_VALUE, &usage)
        #if os(Linux)
        return Double(usage.ru_maxrss) / 1024
        #else
        return Double(usage.ru_maxrss) / 1_048_576
        #endif
    }

    func printCSV(_ results: [BenchmarkResult]) {
        print("batch,heads,kvHeads,queryLength,keyLength,headDim,causal,threads,path,medianSeconds,minSeconds,gflops,gbps,peakFraction,repetitions,kernelPath,driver,idleWait")
        // An absent figure is an empty field.
        func field(_ value: Double?) -> String { BenchmarkResult.finite(value).map { "\($0)" } ?? "" }
        for r in results {
            print("\(r.batch),\(r.heads),\(r.kvHeads),\(r.queryLength),\(r.keyLength),\(r.headDim),\(r.causal),\(r.threads),\(r.path),\(field(r.medianSeconds)),\(field(r.minSeconds)),\(field(r.gflops)),\(field(r.gbps)),\(field(r.peakFraction)),\(r.repetitions),\(r.kernelPath),\(r.driver),\(r.idleWait)")
        }
    }

    func printTable(_ results: [BenchmarkResult], peaks: [Int: Double], kernelPath: String) {
        let peakText = peaks.keys.sorted().map { "\($0)t \(fixed(peaks[$0], 0))" }.joined(separator: ", ")
        print("kernel path \(kernelPath); FMA peak GFLOP/s: \(peakText)")
        let header = ["shape B,H,Lq,Lk,D", "causal", "path", "driver", "idle", "thr", "median ms", "GFLOP/s", "GB/s", "% peak", "× 1 thread", "× reference", "× openmp"]
        var rows: [[String]] = []
        for r in results {
            let key = "\(r.batch),\(r.heads),\(r.queryLength),\(r.keyLength),\(r.headDim)" + (r.kvHeads != r.heads ? ",\(r.kvHeads)" : "")
            let single = results.first {
                $0.path == r.path && $0.causal == r.causal && $0.threads == 1 && same($0, r) && $0.driver == r.driver && $0.idleWait == r.idleWait
            }
            let reference = results.first { $0.path == "reference" && $0.causal == r.causal && same($0, r) }
            // Dispatch's throughput over OpenMP's, the other settings alike.
            let openMP = r.driver == AttentionThreading.Driver.openMP.rawValue ? nil : results.first {
                $0.path == r.path && $0.causal == r.causal && $0.threads == r.threads && same($0, r)
                    && $0.driver == AttentionThreading.Driver.openMP.rawValue && $0.idleWait == r.idleWait
            }
            rows.append([
                key, r.causal ? "yes" : "no", r.path, r.driver, r.idleWait, "\(r.threads)", fixed(r.medianSeconds.map { $0 * 1e3 }, 3), fixed(r.gflops, 1),
                fixed(r.gbps, 1), fixed(r.peakFraction.map { 100 * $0 }, 0),
                single.map { fixed(ratio($0.medianSeconds, r.medianSeconds), 2) } ?? "",
                r.path == "fused" ? reference.map { ratio($0.medianSeconds, r.medianSeconds).map(BenchSummary.significant) ?? "—" } ?? "" : "",
                openMP.map { fixed(ratio($0.medianSeconds, r.medianSeconds), 2) } ?? "",
            ])
        }
        BenchTiming.printColumns(header: header, rows: rows)
        for r in results where r.error != nil {
            print("not measured: \(r.batch),\(r.heads),\(r.queryLength),\(r.keyLength),\(r.headDim) \(r.path) \(r.threads)t: \(r.error!)")
        }
    }

    /// a / b when both are there and the quotient is finite.
    private func ratio(_ a: Double?, _ b: Double?) -> Double? {
        guard let a, let b else { return nil }
        return BenchmarkResult.finite(a / b)
    }

    private func same(_ a: BenchmarkResult, _ b: BenchmarkResult) -> Bool {
        (a.batch, a.heads, a.kvHeads, a.queryLength, a.keyLength, a.headDim) == (b.batch, b.heads, b.kvHeads, b.queryLength, b.keyLength, b.headDim)
    }

    /// `ATTENTION_BENCH_PEAK_GFLOPS` as a number (`nan` included: the reports'
    /// test of an unmeasurable peak), or nil to measure the peak: unset, empty,
    /// or not a number (then one warning on stderr, in the library's words).
    static func pinnedPeak() -> Double? {
        guard let value = ProcessInfo.processInfo.environment["ATTENTION_BENCH_PEAK_GFLOPS"], !value.isEmpty else { return nil }
        if let peak = Double(value) { return peak }
        FileHandle.standardError.write(Data(
            "attention: ignoring ATTENTION_BENCH_PEAK_GFLOPS=\(shownEnvironmentValue(value)): expected a number of GFLOP/s; using the measured peak\n".utf8))
        return nil
    }

    /// The figure with `decimals` decimals, or "—" when it is absent or not finite.
    private func fixed(_ value: Double?, _ decimals: Int) -> String {
        guard let value, value.isFinite else { return "—" }
        return String(format: "%.\(decimals)f", value)
    }
}

/// The threading settings of one benchmark case.
struct Settings: CustomStringConvertible {
    var driver: AttentionThreading.Driver
    var idleWait: AttentionThreading.IdleWait

    func apply() {
        AttentionThreading.driver = driver
        AttentionThreading.idleWait = idleWait
    }

    var description: String { "\(driver.rawValue)/\(idleWait.rawValue)" }
}

extension AttentionThreading.Driver: ExpressibleByArgument {}
extension AttentionThreading.IdleWait: ExpressibleByArgument {}

#if os(Linux)
private let RUSAGE_SELF_VALUE = __rusage_who_t(RUSAGE_SELF.rawValue)
#else
private let RUSAGE_SELF_VALUE = RUSAGE_SELF
#endif

/// A one-line progress display on stderr, only when stderr is a terminal.
final class ProgressLine {
    let total: Int
    let enabled = isatty(2) != 0

    init(total: Int) { self.total = total }

    func show(_ index: Int, _ label: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K[\(index + 1)/\(total)] \(label)".utf8))
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
    }
}
