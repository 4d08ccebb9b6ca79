import CAttention
import Dispatch
import Foundation

/// The threading drivers of the fused kernel, and what idle threads do.
///
/// Every call of the C kernel — attention and the layers' projections — is a
/// *plan*: rounds of independent tasks (a value check, the (batch, head, query
/// tile) tasks, or split-KV chunks and their merges), with scratch per worker.
/// A driver only runs the rounds in turn. Two drivers exist:
///
/// - ``Driver/openMP``: the kernel's own OpenMP parallel region. Compiled in on
///   Linux when the package trait `OpenMP` is on (the default).
/// - ``Driver/dispatch``: Swift's `DispatchQueue.concurrentPerform`, on every
///   platform, with nothing to install.
///
/// Both run the same plan and give the same bits for any thread count.
public enum AttentionThreading {
    /// Who runs the kernel's rounds of tasks.
    public enum Driver: String, Sendable, CaseIterable {
        /// OpenMP threads (libomp); only where ``isOpenMPAvailable``.
        case openMP = "openmp"
        /// Swift's Dispatch (`DispatchQueue.concurrentPerform`).
        case dispatch
    }

    /// What OpenMP's worker threads do after a call, until the next one.
    public enum IdleWait: String, Sendable, CaseIterable {
        /// Spin for 200 ms: a call that follows within that time starts at once,
        /// but each call burns up to 200 ms of CPU per worker afterwards.
        case spin
        /// Sleep at once: no CPU is used between calls; the next call pays a
        /// wake-up of the workers (tens of microseconds).
        case sleep
        /// Leave the OpenMP runtime's own setting (`KMP_BLOCKTIME`) in force.
        case runtime
    }

    /// Whether the C kernel was compiled with OpenMP (trait `OpenMP`, Linux).
    public static var isOpenMPAvailable: Bool { attn_has_openmp() != 0 }

    /// The driver chosen when ``driver`` was never set: OpenMP where compiled in,
    /// else Dispatch; `ATTENTION_THREADING=dispatch|openmp` in the environment
    /// picks one (`openmp` only where available). Another value, or `openmp`
    /// where OpenMP is not compiled in, gives one warning on standard error
    /// (`attention: ignoring ATTENTION_THREADING="…": …; using …`) and the
    /// default; an empty value counts as unset.
    public static let defaultDriver: Driver = {
        let compiled: Driver = isOpenMPAvailable ? .openMP : .dispatch
        guard let value = ProcessInfo.processInfo.environment["ATTENTION_THREADING"], !value.isEmpty else { return compiled }
        switch Driver(rawValue: value) {
        case .dispatch?: return .dispatch
        case .openMP? where isOpenMPAvailable: return .openMP
        case .openMP?:
            warnAboutEnvironment("ATTENTION_THREADING", value, problem: "OpenMP is not compiled in (package trait OpenMP)",
                                 using: compiled.rawValue)
        case nil:
            warnAboutEnvironment("ATTENTION_THREADING", value, problem: "expected openmp or dispatch", using: compiled.rawValue)
        }
        return compiled
    }()

    private static let lock = NSLock()
    nonisolated(unsafe) private static var chosenDriver: Driver?

    /// The driver of later calls, process-wide (default ``defaultDriver``).
    /// Setting ``Driver/openMP`` where it is not available selects
    /// ``Driver/dispatch``. Safe to set from any thread; a call in flight keeps
    /// the driver it started with.
    public static var driver: Driver {
        get { lock.withLock { chosenDriver ?? defaultDriver } }
        set { lock.withLock { chosenDriver = newValue == .openMP && !isOpenMPAvailable ? .dispatch : newValue } }
    }

    /// What OpenMP's workers do after each call (process-wide). The default is
    /// ``IdleWait/sleep`` (measured in the README, "Threads": the decode-step
    /// latency is within noise of spinning, and no CPU is burnt between calls);
    /// `ATTENTION_IDLE_WAIT=spin|sleep|runtime` sets the initial value (another
    /// value gives one warning on standard error and the default), and an
    /// explicit `KMP_BLOCKTIME` alone means ``IdleWait/runtime``. Dispatch's
    /// threads always park between calls, whatever this says.
    public static var idleWait: IdleWait {
        get {
            switch attn_get_idle_wait() {
            case ATTN_IDLE_WAIT_SPIN: return .spin
            case ATTN_IDLE_WAIT_SLEEP: return .sleep
            default: return .runtime
            }
        }
        set {
            switch newValue {
            case .spin: _ = attn_set_idle_wait(ATTN_IDLE_WAIT_SPIN)
            case .sleep: _ = attn_set_idle_wait(ATTN_IDLE_WAIT_SLEEP)
            case .runtime: _ = attn_set_idle_wait(ATTN_IDLE_WAIT_RUNTIME)
            }
        }
    }

    /// The thread count a call with `threads: nil` uses: OpenMP's default
    /// (`OMP_NUM_THREADS` or the cores) under OpenMP, the active processor count
    /// under Dispatch.
    public static var defaultThreadCount: Int {
        driver == .openMP ? Int(attn_default_threads()) : ProcessInfo.processInfo.activeProcessorCount
    }
}

/// Runs the C kernel's plans with the driver in force.
enum KernelThreading {
    /// Tests set this to compare the two drivers; `nil` means `AttentionThreading.driver`.
    nonisolated(unsafe) static var override: AttentionThreading.Driver?

    static var current: AttentionThreading.Driver {
        let chosen = override ?? AttentionThreading.driver
        return chosen == .openMP && !AttentionThreading.isOpenMPAvailable ? .dispatch : chosen
    }

    /// The worker count for a call asking for `threads` (`nil`: the driver's default).
    static func workers(_ threads: Int?, driver: AttentionThreading.Driver) -> Int32 {
        if let threads { return Int32(clamping: max(1, threads)) }
        return driver == .openMP ? 0 : Int32(clamping: ProcessInfo.processInfo.activeProcessorCount)
    }

    /// Runs the attention kernel on `params` with `threads` workers, on
    /// `driver` (default: the one in force).
    static func run(_ params: inout attn_params, threads: Int?, driver chosen: AttentionThreading.Driver? = nil) -> attn_status {
        let driver = chosen.map { $0 == .openMP && !AttentionThreading.isOpenMPAvailable ? .dispatch : $0 } ?? current
        params.num_threads = workers(threads, driver: driver)
        var plan: OpaquePointer?
        let status = attn_sdpa_plan_create(&params, &plan)
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        return drive(plan, driver: driver)
    }

    /// Runs `attn_linear_forward`'s plan: `y [rows, out] = x [rows, in] · Wᵀ (+ b)`.
    static func runLinear(
        x: UnsafePointer<Float>?, rows: Int, inFeatures: Int, weight: UnsafePointer<Float>?,
        bias: UnsafePointer<Float>?, outFeatures: Int, y: UnsafeMutablePointer<Float>?, threads: Int?
    ) -> attn_status {
        let driver = current
        var plan: OpaquePointer?
        let status = attn_linear_plan_create(
            x, Int64(rows), Int64(inFeatures), weight, bias, Int64(outFeatures), y,
            workers(threads, driver: driver), &plan)
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        return drive(plan, driver: driver)
    }

    /// `attn_linear_packed_forward` under the current driver: y = x·Wᵀ + b on
    /// weights packed by `attn_linear_pack`, for a few rows.
    static func runLinearPacked(
        x: UnsafePointer<Float>?, rows: Int, packed: OpaquePointer,
        bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>?, threads: Int?
    ) -> attn_status {
        let driver = current
        var plan: OpaquePointer?
        let status = attn_linear_packed_plan_create(x, Int64(rows), packed, bias, y, workers(threads, driver: driver), &plan)
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        return drive(plan, driver: driver)
    }

    /// Runs every round of `plan`, in turn.
    static func drive(_ plan: OpaquePointer, driver: AttentionThreading.Driver) -> attn_status {
        switch driver {
        case .openMP:
            return attn_plan_run(plan)
        case .dispatch:
            let workers = Int(attn_plan_workers(plan))
            let shared = UncheckedSendable(plan)
            for round in 0..<attn_plan_rounds(plan) {
                if workers == 1 {
                    attn_plan_work(plan, round, 0)
                } else {
                    // Each worker index runs once per round, with its own scratch;
                    // concurrentPerform returns when all have, which orders the
                    // rounds (what the OpenMP driver's barrier does).
                    DispatchQueue.concurrentPerform(iterations: workers) { worker in
                        attn_plan_work(shared.value, round, Int32(worker))
                    }
                }
            }
            return ATTN_OK
        }
    }
}

/// Hands values that are not `Sendable` to concurrent workers where the caller
/// guarantees, as above, that sharing them is safe.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// The one warning for an `ATTENTION_*` variable whose value cannot be used, in
/// the words of the C target's (CKernels/environment.h): one line on standard
/// error, `attention: ignoring NAME="value": problem; using fallback`, the value
/// shown as ``shownEnvironmentValue(_:)`` shows it. The caller reads its
/// variable once per process, so it warns once.
func warnAboutEnvironment(_ variable: String, _ value: String, problem: String, using fallback: String) {
    FileHandle.standardError.write(Data("attention: ignoring \(variable)=\(shownEnvironmentValue(value)): \(problem); using \(fallback)\n".utf8))
}

/// `value` quoted as the C target's warning shows it (CKernels/environment.c):
/// at most its first 40 UTF-8 bytes (a longer one as `"first 40 bytes"... (N
/// bytes)`), printable ASCII as is, `"` and `\` as `\"` and `\\`, any other
/// byte as `\xNN`, so that a huge or binary value can neither flood nor corrupt
/// the terminal. (Package-wide: the command-line tool's own variables use it.)
package func shownEnvironmentValue(_ value: String) -> String {
    let shownBytes = 40
    let bytes = Array(value.utf8)
    var shown = ""
    for byte in bytes.prefix(shownBytes) {
        switch byte {
        case UInt8(ascii: "\""), UInt8(ascii: "\\"): shown += "\\" + String(UnicodeScalar(byte))
        case 0x20..<0x7f: shown.unicodeScalars.append(UnicodeScalar(byte))
        default: shown += "\\x" + (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }
    }
    return bytes.count > shownBytes ? "\"\(shown)\"... (\(bytes.count) bytes)" : "\"\(shown)\""
}
