import CAttention
import Dispatch
import Foundation

/// How the fused kernel's tasks — (batch, head, query tile) — are spread over
/// threads: by the kernel's own OpenMP parallel region where the C target was
/// compiled with OpenMP (Linux), otherwise by Swift's Dispatch, whose workers
/// take tasks from the same atomic counter (`attn_sdpa_run_tasks`). Both give
/// the same bits. `ATTENTION_THREADING=dispatch` picks Dispatch on any platform.
enum KernelThreading: Sendable {
    case openMP, dispatch

    static let automatic: KernelThreading =
        attn_has_openmp() != 0 && ProcessInfo.processInfo.environment["ATTENTION_THREADING"] != "dispatch"
        ? .openMP : .dispatch

    /// Tests set this to compare the two drivers; `nil` means `automatic`.
    nonisolated(unsafe) static var override: KernelThreading?

    static var current: KernelThreading { override ?? automatic }

    /// Runs the kernel on `params` with `threads` workers (`nil`: OpenMP's
    /// default, or the active processor count under Dispatch), on `driver`
    /// (default `current`).
    static func run(_ params: inout attn_params, threads: Int?, driver: KernelThreading? = nil) -> attn_status {
        switch driver ?? current {
        case .openMP:
            return attn_sdpa_forward(&params)
        case .dispatch:
            let workers = max(1, threads ?? ProcessInfo.processInfo.activeProcessorCount)
            let statuses = UnsafeMutableBufferPointer<attn_status>.allocate(capacity: workers)
            let nextTask = UnsafeMutablePointer<Int64>.allocate(capacity: 1)
            defer {
                statuses.deallocate()
                nextTask.deallocate()
            }
            nextTask.initialize(to: 0)
            // The workers share read-only parameters and the task counter, which
            // the kernel only touches atomically; each writes its own status slot.
            // concurrentPerform returns after every worker is done, while all the
            // pointers are still valid.
            let shared = UncheckedSendable((params, statuses, nextTask))
            DispatchQueue.concurrentPerform(iterations: workers) { worker in
                var local = shared.value.0
                shared.value.1[worker] = attn_sdpa_run_tasks(&local, shared.value.2)
            }
            return statuses.first { $0 != ATTN_OK } ?? ATTN_OK
        }
    }
}

/// Hands values that are not `Sendable` to concurrent workers where the caller
/// guarantees, as above, that sharing them is safe.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
