import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The check every allocation whose size comes from input goes through before
/// it is made, so that a request the process cannot satisfy is a typed error
/// (``AttentionError/insufficientMemory(tensor:shape:bytes:reason:)``) rather
/// than a trap inside the allocator (Swift's `Array` and `Data` stop the
/// process when `malloc` fails).
///
/// A request is refused when it exceeds the machine's physical memory or the
/// process's address-space limit (`ulimit -v`, `RLIMIT_AS`), or — for requests
/// of 16 MiB or more — when `malloc` of that size fails right now (the limit
/// less what the process already maps, or the kernel's overcommit policy);
/// the probe is released at once and costs a `mmap`/`munmap` pair, no page.
enum MemoryBudget {
    /// Requests below this are not probed: their failure would mean the
    /// process is already out of memory for everything else too.
    static let probeThreshold: UInt64 = 16 << 20

    /// Throws unless `bytes` can be allocated now.
    ///
    /// - Parameters:
    ///   - bytes: the size of the allocation.
    ///   - tensor: what it is for, as the error names it (e.g. `"output"`).
    ///   - shape: its shape, for the message.
    static func check(bytes: UInt64, tensor: String, shape: [Int]) throws {
        let physical = ProcessInfo.processInfo.physicalMemory
        if bytes > physical {
            throw AttentionError.insufficientMemory(
                tensor: tensor, shape: shape, bytes: bytes, reason: "more than the machine's physical memory (\(physical) bytes)")
        }
        let limit = addressSpaceLimit
        if let limit, bytes > limit {
            throw AttentionError.insufficientMemory(
                tensor: tensor, shape: shape, bytes: bytes, reason: "more than the address-space limit (ulimit -v) of \(limit) bytes")
        }
        if bytes >= probeThreshold {
            guard let probe = malloc(Int(bytes)) else {
                let why = limit.map { "within the address-space limit (ulimit -v) of \($0) bytes" } ?? "by the operating system"
                throw AttentionError.insufficientMemory(
                    tensor: tensor, shape: shape, bytes: bytes, reason: "cannot be allocated now \(why)")
            }
            free(probe)
        }
    }

    /// `RLIMIT_AS`'s soft limit in bytes, or nil when there is none.
    static var addressSpaceLimit: UInt64? {
        var limit = rlimit()
        #if os(Linux)
        let resource = __rlimit_resource_t(RLIMIT_AS.rawValue)
        #else
        let resource = RLIMIT_AS
        #endif
        guard getrlimit(resource, &limit) == 0, limit.rlim_cur != rlim_t.max else { return nil }
        return UInt64(limit.rlim_cur)
    }
}
