import CAttention
import Foundation

/// The error a ``KVCache`` throws when an append does not fit.
///
/// Bad arguments (shapes, indices, sizes) throw ``AttentionError`` as everywhere
/// else in the module; running out of room is a condition of its own, which a
/// generation loop catches to stop, evict or start a larger cache.
public enum KVCacheError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Appending `appending` tokens to sequence `sequence`, which holds `length`
    /// tokens, would pass the cache's `capacity`. Nothing was appended.
    case capacityExceeded(sequence: Int, length: Int, appending: Int, capacity: Int)

    /// One line naming the sequence, its length, what was appended and the capacity.
    public var description: String {
        switch self {
        case let .capacityExceeded(sequence, length, appending, capacity):
            return "cache: sequence \(sequence) holds \(length) tokens; appending \(appending) would pass the capacity \(capacity)"
        }
    }
}

/// The keys and values of the tokens seen so far, for one attention layer:
/// what autoregressive decoding reads at every step instead of recomputing
/// them (Pope et al. 2022, "Efficiently Scaling Transformer Inference", §2).
///
/// Memory is allocated once, at creation: keys `[batch, kvHeads, capacity, headDim]`
/// and values `[batch, kvHeads, capacity, valueDim]`, 64-byte aligned (from 2 MiB
/// up: 2 MiB-aligned, in transparent huge pages where Linux grants them, so
/// that a decode step's stream over the cache walks fewer pages;
/// `attn_cache_alloc`), in the
/// element type of ``storage`` (4 or 2 bytes a number). Values are stored as
/// rows; keys in panels of 64 keys × headDim with the keys innermost (capacity
/// rounded up to a multiple of 64; `ATTN_KEY_LAYOUT_PANELS64`), the layout a
/// decode step reads with plain vector loads, one key per lane, in the tiled
/// kernel's order (so with the same bits as rows), each 64-key tile of the
/// step one sequential stream that the hardware prefetchers follow from DRAM.
/// The accessors give the usual `[…, length, headDim]` order. Appending writes the
/// new tokens in place after those already cached, which are never copied or
/// moved; a cache never grows: an append past ``capacity`` throws
/// ``KVCacheError/capacityExceeded(sequence:length:appending:capacity:)`` and
/// changes nothing.
///
/// Each of the `batch` sequences has its own length (``lengths``), so a batch
/// may hold sequences of different lengths (ragged); attention over a sequence
/// reads its own length of keys, never padding.
///
/// With `.float16` or `.bfloat16` storage every key and value is rounded to
/// nearest (ties to even) when it is appended, and widened exactly back to
/// float32 when it is read: attention itself is float32 (see ``KVCacheStorage``).
///
/// Use it with a layer: ``MultiHeadAttention/callAsFunction(_:cache:newTokens:keyPadding:)`` and
/// ``CausalSelfAttention/callAsFunction(_:cache:newTokens:)`` project new tokens, append
/// their keys and values here and attend over the whole cache, or on its own
/// with ``append(keys:values:)`` and the accessors.
///
/// Thread safety: every method takes the cache's lock, so calls from several
/// threads are safe and each one (a layer's whole append-and-attend step
/// included) is atomic; but calls that interleave on one cache append their
/// tokens in whatever order they run. Give each generation stream its own
/// cache (or own batch row, fed from one thread).
public final class KVCache: @unchecked Sendable {
    /// The number of sequences.
    public let batch: Int
    /// Key/value heads (a layer's `kvHeads`).
    public let kvHeads: Int
    /// Width of each key head.
    public let headDim: Int
    /// Width of each value head.
    public let valueDim: Int
    /// Tokens each sequence can hold.
    public let capacity: Int
    /// The element type of the stored keys and values.
    public let storage: KVCacheStorage

    /// Keys per panel of the key storage: one kernel key tile, so that a decode
    /// step reads each tile's keys as one sequential stream.
    static let keyPanel = 64
    /// The kernel's name for the key storage's layout (panels of ``keyPanel`` keys).
    static let keyLayout = ATTN_KEY_LAYOUT_PANELS64
    /// `capacity` rounded up to whole key panels.
    private let paddedCapacity: Int
    private let keyBase: UnsafeMutableRawPointer
    private let valueBase: UnsafeMutableRawPointer
    private let keyBytes: Int
    private let valueBytes: Int
    private var storedLengths: [Int]
    private let lock = NSLock()

    /// Allocates an empty cache.
    ///
    /// - Parameters:
    ///   - batch: sequences, at least 1.
    ///   - kvHeads: key/value heads, at least 1.
    ///   - headDim: key width per head, at least 1.
    ///   - valueDim: value width per head, at least 1 (default: `headDim`).
    ///   - capacity: tokens per sequence, at least 1.
    ///   - storage: `.float32` (default), `.float16` or `.bfloat16`.
    /// - Throws: `AttentionError.invalidValue` naming the argument below its
    ///   minimum, or `capacity` when the cache would not fit in the machine's
    ///   physical memory (or its size in bytes overflows `Int`);
    ///   `AttentionError.insufficientMemory` naming `keys` or `values` when the
    ///   system refuses the memory.
    public init(
        batch: Int, kvHeads: Int, headDim: Int, valueDim: Int? = nil, capacity: Int, storage: KVCacheStorage = .float32
    ) throws {
        let valueDim = valueDim ?? headDim
        for (name, value) in [("batch", batch), ("kvHeads", kvHeads), ("headDim", headDim), ("valueDim", valueDim), ("capacity", capacity)]
        where value < 1 {
            throw AttentionError.invalidValue(argument: name, expected: "at least 1", actual: "\(value)")
        }
        var totalBytes = 0
        var overflow = capacity > Int.max - Self.keyPanel
        let paddedCapacity = overflow ? capacity : (capacity + Self.keyPanel - 1) / Self.keyPanel * Self.keyPanel
        for (dim, tokens) in [(headDim, paddedCapacity), (valueDim, capacity)] {
            var bytes = storage.bytesPerElement
            for factor in [batch, kvHeads, tokens, dim] {
                let (product, overflows) = bytes.multipliedReportingOverflow(by: factor)
                overflow = overflow || overflows
                bytes = product
            }
            let (sum, overflows) = totalBytes.addingReportingOverflow(bytes)
            overflow = overflow || overflows
            totalBytes = sum
        }
        let available = ProcessInfo.processInfo.physicalMemory
        guard !overflow, UInt64(totalBytes) <= available else {
            throw AttentionError.invalidValue(
                argument: "capacity",
                expected: "a cache that fits in memory (\(available) bytes for keys and values)",
                actual: overflow ? "\(capacity) (size overflows Int)" : "\(capacity) (\(totalBytes) bytes)")
        }
        self.batch = batch
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.valueDim = valueDim
        self.capacity = capacity
        self.paddedCapacity = paddedCapacity
        self.storage = storage
        let element = storage.bytesPerElement
        keyBytes = batch * kvHeads * paddedCapacity * headDim * element
        valueBytes = batch * kvHeads * capacity * valueDim * element
        guard let keys = attn_cache_alloc(Int64(keyBytes)) else {
            throw AttentionError.insufficientMemory(
                tensor: "keys", shape: [batch, kvHeads, paddedCapacity, headDim], bytes: UInt64(keyBytes),
                reason: "the cache's key memory could not be allocated")
        }
        guard let values = attn_cache_alloc(Int64(valueBytes)) else {
            attn_cache_free(keys, Int64(keyBytes))
            throw AttentionError.insufficientMemory(
                tensor: "values", shape: [batch, kvHeads, capacity, valueDim], bytes: UInt64(valueBytes),
                reason: "the cache's value memory could not be allocated")
        }
        keyBase = keys
        valueBase = values
        storedLengths = Array(repeating: 0, count: batch)
    }

    deinit {
        attn_cache_free(keyBase, Int64(keyBytes))
        attn_cache_free(valueBase, Int64(valueBytes))
    }

    /// The number of tokens each sequence holds, `[batch]`, each in `0...capacity`.
    public var lengths: [Int] { locked { storedLengths } }

    /// The bytes the cache allocated for keys and values (fixed at creation):
    /// `batch · kvHeads · (paddedCapacity · headDim + capacity · valueDim) · bytesPerElement`,
    /// `paddedCapacity` being `capacity` rounded up to a multiple of 64 (key panels).
    public var byteCount: Int { batch * kvHeads * (paddedCapacity * headDim + capacity * valueDim) * storage.bytesPerElement }

    /// The number of tokens sequence `sequence` holds.
    ///
    /// - Parameter sequence: the sequence's index in the batch, in `0..<batch`.
    /// - Returns: its length in tokens.
    /// - Throws: `AttentionError.invalidValue` naming `sequence` outside `0..<batch`.
    public func length(sequence: Int) throws -> Int {
        try checkSequence(sequence)
        return locked { storedLengths[sequence] }
    }

    // MARK: Appending

    /// Appends `newTokens` keys and values to every sequence, after its cached ones.
    ///
    /// - Parameters:
    ///   - keys: `[batch, kvHeads, newTokens, headDim]`.
    ///   - values: `[batch, kvHeads, newTokens, valueDim]`.
    /// - Throws: `AttentionError.invalidShape` naming `keys` or `values` that do
    ///   not fit; ``KVCacheError/capacityExceeded(sequence:length:appending:capacity:)``
    ///   if any sequence would pass ``capacity`` (then nothing is appended).
    public func append(keys: Tensor<Float>, values: Tensor<Float>) throws {
        let expectedKeys = [batch, kvHeads, keys.shape.count == 4 ? keys.shape[2] : 0, headDim]
        guard keys.rank == 4, keys.shape == expectedKeys else {
            throw AttentionError.invalidShape(
                argument: "keys", expected: "[\(batch), \(kvHeads), newTokens, \(headDim)] (batch, kvHeads, newTokens, headDim)",
                actual: keys.shape)
        }
        let newTokens = keys.shape[2]
        guard values.shape == [batch, kvHeads, newTokens, valueDim] else {
            throw AttentionError.invalidShape(
                argument: "values", expected: "[\(batch), \(kvHeads), \(newTokens), \(valueDim)] (batch, kvHeads, newTokens, valueDim)",
                actual: values.shape)
        }
        try locked {
            let counts = Array(repeating: newTokens, count: batch)
            try checkCapacityLocked(appending: counts)
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    appendLocked(
                        keys: k.baseAddress, keyStrides: (kvHeads * newTokens * headDim, newTokens * headDim, headDim),
                        values: v.baseAddress, valueStrides: (kvHeads * newTokens * valueDim, newTokens * valueDim, valueDim),
                        counts: counts, sequences: 0..<batch)
                }
            }
        }
    }

    /// Appends `newTokens` keys and values to one sequence (the others are unchanged).
    ///
    /// - Parameters:
    ///   - keys: `[kvHeads, newTokens, headDim]` or `[1, kvHeads, newTokens, headDim]`.
    ///   - values: `[kvHeads, newTokens, valueDim]` or `[1, kvHeads, newTokens, valueDim]`.
    ///   - sequence: the batch row, in `0..<batch`.
    /// - Throws: `AttentionError.invalidValue` naming `sequence`,
    ///   `AttentionError.invalidShape` naming `keys` or `values`;
    ///   ``KVCacheError/capacityExceeded(sequence:length:appending:capacity:)``
    ///   if the sequence would pass ``capacity`` (then nothing is appended).
    public func append(keys: Tensor<Float>, values: Tensor<Float>, sequence: Int) throws {
        try checkSequence(sequence)
        let keyShape = keys.rank == 4 && keys.shape[0] == 1 ? Array(keys.shape.dropFirst()) : keys.shape
        guard keyShape.count == 3, keyShape[0] == kvHeads, keyShape[2] == headDim else {
            throw AttentionError.invalidShape(
                argument: "keys", expected: "[\(kvHeads), newTokens, \(headDim)] (kvHeads, newTokens, headDim), or with a leading 1",
                actual: keys.shape)
        }
        let newTokens = keyShape[1]
        let valueShape = values.rank == 4 && values.shape[0] == 1 ? Array(values.shape.dropFirst()) : values.shape
        guard valueShape == [kvHeads, newTokens, valueDim], values.rank == keys.rank else {
            throw AttentionError.invalidShape(
                argument: "values", expected: "[\(kvHeads), \(newTokens), \(valueDim)] (kvHeads, newTokens, valueDim), rank \(keys.rank) as keys",
                actual: values.shape)
        }
        try locked {
            var counts = Array(repeating: 0, count: batch)
            counts[sequence] = newTokens
            try checkCapacityLocked(appending: counts)
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    appendLocked(
                        keys: k.baseAddress, keyStrides: (0, newTokens * headDim, headDim),
                        values: v.baseAddress, valueStrides: (0, newTokens * valueDim, valueDim),
                        counts: [newTokens], sequences: sequence..<(sequence + 1))
                }
            }
        }
    }

    // MARK: Reading

    /// The cached keys of one sequence, widened to float32.
    ///
    /// - Parameter sequence: the batch row, in `0..<batch`.
    /// - Returns: `[1, kvHeads, length, headDim]`, `length` = ``length(sequence:)``.
    /// - Throws: `AttentionError.invalidValue` naming `sequence`.
    public func keys(sequence: Int) throws -> Tensor<Float> {
        try checkSequence(sequence)
        return locked { keysLocked(sequences: sequence..<(sequence + 1), length: storedLengths[sequence]) }
    }

    /// The cached values of one sequence, widened to float32.
    ///
    /// - Parameter sequence: the batch row, in `0..<batch`.
    /// - Returns: `[1, kvHeads, length, valueDim]`, `length` = ``length(sequence:)``.
    /// - Throws: `AttentionError.invalidValue` naming `sequence`.
    public func values(sequence: Int) throws -> Tensor<Float> {
        try checkSequence(sequence)
        return locked { valuesLocked(sequences: sequence..<(sequence + 1), length: storedLengths[sequence]) }
    }

    /// The cached keys of every sequence, widened to float32.
    ///
    /// - Returns: `[batch, kvHeads, length, headDim]`.
    /// - Throws: `AttentionError.invalidValue` naming `lengths` if the sequences
    ///   have different lengths (read them one by one with ``keys(sequence:)``).
    public func keys() throws -> Tensor<Float> {
        try locked { keysLocked(sequences: 0..<batch, length: try commonLengthLocked()) }
    }

    /// The cached values of every sequence, widened to float32.
    ///
    /// - Returns: `[batch, kvHeads, length, valueDim]`.
    /// - Throws: `AttentionError.invalidValue` naming `lengths` if the sequences
    ///   have different lengths (read them one by one with ``values(sequence:)``).
    public func values() throws -> Tensor<Float> {
        try locked { valuesLocked(sequences: 0..<batch, length: try commonLengthLocked()) }
    }

    // MARK: Forgetting

    /// Empties every sequence; the memory is kept for the next tokens.
    public func reset() {
        locked { storedLengths = Array(repeating: 0, count: batch) }
    }

    /// Empties one sequence (a finished request's row, to reuse it), keeping the others.
    ///
    /// - Parameter sequence: the sequence's index in the batch, in `0..<batch`.
    /// - Throws: `AttentionError.invalidValue` naming `sequence` outside `0..<batch`.
    public func reset(sequence: Int) throws {
        try checkSequence(sequence)
        locked { storedLengths[sequence] = 0 }
    }

    /// Keeps the first `length` tokens of every sequence and forgets the rest
    /// (rejected draft tokens in speculative decoding, a rewound conversation);
    /// a sequence already shorter is unchanged (as Hugging Face's `DynamicCache.crop`).
    ///
    /// - Parameter length: tokens to keep, at least 0.
    /// - Throws: `AttentionError.invalidValue` naming `length` if it is negative.
    public func truncate(toLength length: Int) throws {
        guard length >= 0 else {
            throw AttentionError.invalidValue(argument: "length", expected: "at least 0", actual: "\(length)")
        }
        locked { storedLengths = storedLengths.map { min($0, length) } }
    }

    /// Keeps the first `length` tokens of one sequence; unchanged if it is shorter.
    ///
    /// - Parameters:
    ///   - sequence: the batch row, in `0..<batch`.
    ///   - length: tokens to keep, at least 0.
    /// - Throws: `AttentionError.invalidValue` naming `sequence` or `length`.
    public func truncate(sequence: Int, toLength length: Int) throws {
        try checkSequence(sequence)
        guard length >= 0 else {
            throw AttentionError.invalidValue(argument: "length", expected: "at least 0", actual: "\(length)")
        }
        locked { storedLengths[sequence] = min(storedLengths[sequence], length) }
    }

    // MARK: Internal: what the layers use, under the lock

    /// Runs `body` holding the cache's lock (not reentrant: `body` calls only
    /// the `…Locked` methods).
    func locked<R>(_ body: () throws -> R) rethrows -> R {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    /// The lengths, for a caller holding the lock.
    var lengthsLocked: [Int] {
        get { storedLengths }
        set { storedLengths = newValue }
    }

    /// The first address of the key storage (fixed for the cache's life).
    var keyStorageAddress: UnsafeRawPointer { UnsafeRawPointer(keyBase) }
    /// The first address of the value storage (fixed for the cache's life).
    var valueStorageAddress: UnsafeRawPointer { UnsafeRawPointer(valueBase) }

    /// Throws if appending `counts[b]` tokens to each sequence `b` would pass the capacity.
    func checkCapacityLocked(appending counts: [Int]) throws {
        for (sequence, count) in counts.enumerated() where storedLengths[sequence] + count > capacity {
            throw KVCacheError.capacityExceeded(
                sequence: sequence, length: storedLengths[sequence], appending: count, capacity: capacity)
        }
    }

    /// Appends `counts[i]` tokens to sequence `sequences.lowerBound + i`,
    /// reading its key `(h, t)` at `keys + i·s₀ + h·s₁ + t·s₂` (headDim contiguous
    /// numbers; likewise values), rounded to the storage type. The caller has
    /// checked the capacity.
    func appendLocked(
        keys: UnsafePointer<Float>?, keyStrides: (Int, Int, Int),
        values: UnsafePointer<Float>?, valueStrides: (Int, Int, Int),
        counts: [Int], sequences: Range<Int>
    ) {
        for (row, sequence) in sequences.enumerated() where counts[row] > 0 {
            let start = storedLengths[sequence], count = counts[row]
            for head in 0..<kvHeads {
                if let keys {
                    storeKeys(keys + row * keyStrides.0 + head * keyStrides.1, tokenStride: keyStrides.2,
                              sequence: sequence, head: head, start: start, count: count)
                }
                if let values {
                    storeValues(values + row * valueStrides.0 + head * valueStrides.1, tokenStride: valueStrides.2,
                                sequence: sequence, head: head, start: start, count: count)
                }
            }
            storedLengths[sequence] = start + count
        }
    }

    /// Calls `body` with the stored keys and values of `sequences` as the
    /// kernel reads them, in place, in ``storage``'s element type (`Float` or
    /// `UInt16` bit patterns; the kernel widens 16-bit elements exactly to
    /// float32 itself), strides in elements: keys in panels of 64 (``keyLayout``,
    /// `ATTN_KEY_LAYOUT_PANELS64`: key (b, h, j, d) at `b·s₀ + h·s₁ + (j/64)·s₂ + d·64 + j%64`,
    /// `s₂ = 64·headDim`), values as rows
    /// `[sequences.count, kvHeads, capacity, valueDim]`.
    func withStoredOperandsLocked<R>(
        sequences: Range<Int>,
        _ body: (_ keys: UnsafeRawPointer, _ keyStrides: [Int], _ values: UnsafeRawPointer, _ valueStrides: [Int]) throws -> R
    ) rethrows -> R {
        let element = storage.bytesPerElement
        return try body(
            UnsafeRawPointer(keyBase + sequences.lowerBound * kvHeads * paddedCapacity * headDim * element),
            [kvHeads * paddedCapacity * headDim, paddedCapacity * headDim, Self.keyPanel * headDim, 1],
            UnsafeRawPointer(valueBase + sequences.lowerBound * kvHeads * capacity * valueDim * element),
            [kvHeads * capacity * valueDim, capacity * valueDim, valueDim, 1])
    }

    /// Keys `[sequences.count, kvHeads, length, headDim]` widened to float32 (caller holds the lock).
    func keysLocked(sequences: Range<Int>, length: Int) -> Tensor<Float> {
        gatherLocked(keyBase, dim: headDim, sequences: sequences, length: length) { sequence, head, token, d in
            self.keyOffset(sequence: sequence, head: head, token: token) + d * Self.keyPanel
        }
    }

    /// Values `[sequences.count, kvHeads, length, valueDim]` widened to float32 (caller holds the lock).
    func valuesLocked(sequences: Range<Int>, length: Int) -> Tensor<Float> {
        gatherLocked(valueBase, dim: valueDim, sequences: sequences, length: length) { sequence, head, token, d in
            ((sequence * self.kvHeads + head) * self.capacity + token) * self.valueDim + d
        }
    }

    // MARK: Private

    private func checkSequence(_ sequence: Int) throws {
        guard (0..<batch).contains(sequence) else {
            throw AttentionError.invalidValue(argument: "sequence", expected: "a batch row in 0..<\(batch)", actual: "\(sequence)")
        }
    }

    private func commonLengthLocked() throws -> Int {
        let first = storedLengths[0]
        guard storedLengths.allSatisfy({ $0 == first }) else {
            throw AttentionError.invalidValue(
                argument: "lengths", expected: "equal lengths for a [batch, …] view (read ragged sequences one by one)",
                actual: "\(storedLengths)")
        }
        return first
    }

    /// The element offset of key (sequence, head, token, 0) in the panel layout;
    /// dimension `d` is `d · keyPanel` (64) further.
    private func keyOffset(sequence: Int, head: Int, token: Int) -> Int {
        (sequence * kvHeads + head) * paddedCapacity * headDim
            + token / Self.keyPanel * Self.keyPanel * headDim + token % Self.keyPanel
    }

    /// Writes `count` keys of headDim numbers (key `t` at `source + t·tokenStride`)
    /// at tokens `start…` of (sequence, head), into their panels, rounded to the
    /// storage type. A panel is zeroed when its first key is written, so the
    /// slots past the length that the kernel reads (and never uses) hold zeros.
    private func storeKeys(_ source: UnsafePointer<Float>, tokenStride: Int, sequence: Int, head: Int, start: Int, count: Int) {
        let panelElements = Self.keyPanel * headDim
        for t in 0..<count {
            let token = start + t
            let first = keyOffset(sequence: sequence, head: head, token: token)
            let row = source + t * tokenStride
            let zeroPanel = token % Self.keyPanel == 0
            switch storage {
            case .float32:
                let target = keyBase.assumingMemoryBound(to: Float.self)
                if zeroPanel { (target + first).update(repeating: 0, count: panelElements) }
                for d in 0..<headDim { target[first + d * Self.keyPanel] = row[d] }
            case .float16, .bfloat16:
                let target = keyBase.assumingMemoryBound(to: UInt16.self)
                if zeroPanel { (target + first).update(repeating: 0, count: panelElements) }
                let toBits = storage == .float16 ? HalfPrecision.float16Bits : HalfPrecision.bfloat16Bits
                for d in 0..<headDim { target[first + d * Self.keyPanel] = toBits(row[d]) }
            }
        }
    }

    /// Writes `count` value rows of valueDim numbers (row `t` at `source + t·tokenStride`)
    /// at tokens `start…` of (sequence, head), rounded to the storage type.
    private func storeValues(_ source: UnsafePointer<Float>, tokenStride: Int, sequence: Int, head: Int, start: Int, count: Int) {
        let first = ((sequence * kvHeads + head) * capacity + start) * valueDim
        switch storage {
        case .float32:
            let target = valueBase.assumingMemoryBound(to: Float.self) + first
            for token in 0..<count { (target + token * valueDim).update(from: source + token * tokenStride, count: valueDim) }
        case .float16, .bfloat16:
            let target = valueBase.assumingMemoryBound(to: UInt16.self) + first
            let toBits = storage == .float16 ? HalfPrecision.float16Bits : HalfPrecision.bfloat16Bits
            for token in 0..<count {
                let row = source + token * tokenStride, out = target + token * valueDim
                for d in 0..<valueDim { out[d] = toBits(row[d]) }
            }
        }
    }

    /// The float32 value of stored element `index` of `base` (keys or values storage).
    private func widened(_ base: UnsafeRawPointer, _ index: Int) -> Float {
        switch storage {
        case .float32: return base.assumingMemoryBound(to: Float.self)[index]
        case .float16: return HalfPrecision.float(fromFloat16Bits: base.assumingMemoryBound(to: UInt16.self)[index])
        case .bfloat16: return HalfPrecision.float(fromBFloat16Bits: base.assumingMemoryBound(to: UInt16.self)[index])
        }
    }

    /// `[sequences.count, kvHeads, length, dim]` as float32, element (b, h, t, d)
    /// read at `offset(b, h, t, d)` of `base`.
    private func gatherLocked(
        _ base: UnsafeMutableRawPointer, dim: Int, sequences: Range<Int>, length: Int,
        offset: (Int, Int, Int, Int) -> Int
    ) -> Tensor<Float> {
        var scalars = [Float](repeating: 0, count: sequences.count * kvHeads * length * dim)
        let source = UnsafeRawPointer(base)
        scalars.withUnsafeMutableBufferPointer { out in
            var index = 0
            for sequence in sequences {
                for head in 0..<kvHeads {
                    for token in 0..<length {
                        for d in 0..<dim {
                            out[index] = widened(source, offset(sequence, head, token, d))
                            index += 1
                        }
                    }
                }
            }
        }
        return Tensor(validShape: [sequences.count, kvHeads, length, dim], scalars: scalars)
    }
}
