import CAttention
import Foundation

/// A ``Linear`` layer's weights packed for products of a few rows (a decoding
/// step's projections): panels of 16 output columns, `[⌈out/16⌉, inFeatures, 16]`,
/// made by `attn_linear_pack` on the first call with 1…``maximumRows`` rows and
/// kept until the weight changes (the layer then starts a new, empty packing).
///
/// The product on the packing (`attn_linear_packed_forward`) has the bits of the
/// tile product on the unpacked weight, so which one a call takes is invisible
/// but for its speed.
final class LinearPacking: @unchecked Sendable {
    /// Calls with at most this many rows use the packing: a pass over the
    /// weights per 8 rows, where the tile product reads them once per 64.
    static let maximumRows = 8

    private let lock = NSLock()
    private var packed: OpaquePointer?
    private var failed = false

    deinit { attn_linear_packed_destroy(packed) }

    /// The packing of `weight` `[outFeatures, inFeatures]`, made now if it has
    /// not been; `nil` if it cannot be (memory), for the caller to use the
    /// unpacked weight (also when ``MemoryBudget`` refuses its size). It lives as
    /// long as this object, which the layer holds.
    func packedWeight(_ weight: Tensor<Float>) -> OpaquePointer? {
        lock.lock()
        defer { lock.unlock() }
        if let packed { return packed }
        if failed { return nil }
        // The packing is as large as the weight (rounded up to 16 columns): if
        // the process cannot have that much now, keep to the unpacked weight
        // rather than risk an allocation the system would kill us for touching.
        let (outFeatures, inFeatures) = (weight.shape[0], weight.shape[1])
        let (elements, overflow) = ((outFeatures + 15) / 16 * 16).multipliedReportingOverflow(by: inFeatures)
        guard !overflow, (try? MemoryBudget.check(bytes: UInt64(elements) * 4, tensor: "packed weight",
                                                   shape: [(outFeatures + 15) / 16, inFeatures, 16])) != nil
        else {
            failed = true
            return nil
        }
        var made: OpaquePointer?
        let status = weight.withUnsafeBufferPointer { w in
            attn_linear_pack(w.baseAddress, Int64(weight.shape[1]), Int64(weight.shape[0]), &made)
        }
        guard status == ATTN_OK, let made else {
            failed = true
            return nil
        }
        packed = made
        return made
    }
}
