import CAttention
import Foundation
import XCTest
@testable import Attention

/// `KVCache` on its own: memory allocated once and written in place, a length
/// per sequence, storage rounding, accessors, forgetting, and typed errors.
final class KVCacheTests: XCTestCase {
    /// Keys `[batch, kvHeads, n, headDim]` whose number at (b, h, t, d) is unique.
    private func numbered(_ batch: Int, _ heads: Int, _ tokens: Int, _ dim: Int, from start: Int = 0, sign: Float = 1) -> Tensor<Float> {
        Tensor(validShape: [batch, heads, tokens, dim], scalars: (0..<(batch * heads * tokens * dim)).map { sign * Float(start + $0) })
    }

    func testAppendWritesInPlaceAndNeverMovesWhatIsCached() throws {
        let cache = try KVCache(batch: 2, kvHeads: 3, headDim: 4, valueDim: 5, capacity: 10)
        let (keyAddress, valueAddress) = (cache.keyStorageAddress, cache.valueStorageAddress)
        let firstKeys = numbered(2, 3, 1, 4), firstValues = numbered(2, 3, 1, 5, sign: -1)
        try cache.append(keys: firstKeys, values: firstValues)
        // Key (b=1, h=2, t=0) starts at (1·3 + 2)·64·4 in the storage (capacity 10
        // rounded up to a panel of 64 keys), its dims 64 apart (keys innermost).
        XCTAssertEqual(KVCache.keyPanel, 64)
        XCTAssertEqual(KVCache.keyLayout, ATTN_KEY_LAYOUT_PANELS64)
        let stored = cache.keyStorageAddress.assumingMemoryBound(to: Float.self)
        func firstKey() -> [Float] { (0..<4).map { stored[5 * 64 * 4 + $0 * 64] } }
        XCTAssertEqual(firstKey(), [20, 21, 22, 23])
        for step in 1..<10 {
            try cache.append(keys: numbered(2, 3, 1, 4, from: 1000 * step), values: numbered(2, 3, 1, 5, from: 1000 * step))
            XCTAssertEqual(cache.keyStorageAddress, keyAddress, "keys moved at step \(step)")
            XCTAssertEqual(cache.valueStorageAddress, valueAddress, "values moved at step \(step)")
        }
        XCTAssertEqual(firstKey(), [20, 21, 22, 23], "first token rewritten")
        XCTAssertEqual(stored[5 * 64 * 4 + 10], 0, "an unused slot of a started panel holds zero")
        XCTAssertEqual(stored[5 * 64 * 4 + 3 * 64 + 63], 0, "the panel's last slot too")
        XCTAssertEqual(cache.lengths, [10, 10])
        let keys = try cache.keys()
        XCTAssertEqual(keys.shape, [2, 3, 10, 4])
        XCTAssertEqual(keys[1, 2, 0, 3], 23)
        XCTAssertEqual(keys[0, 1, 7, 2], Float(7000 + 4 + 2))
        XCTAssertEqual(try cache.values().shape, [2, 3, 10, 5])
        XCTAssertEqual(try cache.values()[1, 0, 0, 4], -19)
    }

    /// Appends of uneven sizes that start and end inside 64-key panels and cross
    /// them land at (t / 64)·64·headDim + d·64 + t % 64 of their head, for every
    /// storage; the accessors give them back as rows; what the kernel is given
    /// (withStoredOperandsLocked) is that layout with a panel stride of 64·headDim.
    func testKeysCrossingPanelsOf64LandInPlaceAndReadBackAsRows() throws {
        for storage in [KVCacheStorage.float32, .float16, .bfloat16] {
            let (heads, dim, capacity) = (2, 3, 200)
            let cache = try KVCache(batch: 2, kvHeads: heads, headDim: dim, capacity: capacity, storage: storage)
            XCTAssertEqual(cache.byteCount, 2 * heads * (256 * dim + capacity * dim) * storage.bytesPerElement,
                           "capacity 200 rounded up to 4 panels of 64 keys")
            func key(_ b: Int, _ h: Int, _ t: Int, _ d: Int) -> Float { Float(((b * heads + h) * 200 + t) * dim + d) * 0.37 + 0.1 }
            var appended = 0
            for count in [1, 62, 1, 70, 15, 1, 50] {
                let keys = Tensor(validShape: [2, heads, count, dim], scalars: (0..<(2 * heads * count * dim)).map { i in
                    key(i / (heads * count * dim), i / (count * dim) % heads, appended + i / dim % count, i % dim)
                })
                try cache.append(keys: keys, values: numbered(2, heads, count, dim))
                appended += count
            }
            XCTAssertEqual(appended, 200)
            let keys = try cache.keys()
            XCTAssertEqual(keys.shape, [2, heads, 200, dim])
            for b in 0..<2 { for h in 0..<heads { for t in 0..<200 { for d in 0..<dim {
                XCTAssertEqual(keys[b, h, t, d], storage.rounded(key(b, h, t, d)), "\(storage) accessor (\(b), \(h), \(t), \(d))")
            } } } }
            cache.locked {
                cache.withStoredOperandsLocked(sequences: 0..<2) { k, kStrides, _, _ in
                    XCTAssertEqual(kStrides, [heads * 256 * dim, 256 * dim, 64 * dim, 1], "\(storage)")
                    for b in 0..<2 { for h in 0..<heads { for t in [0, 62, 63, 64, 65, 127, 128, 133, 199] { for d in 0..<dim {
                        let index = b * kStrides[0] + h * kStrides[1] + t / 64 * kStrides[2] + d * 64 + t % 64
                        let stored: Float
                        switch storage {
                        case .float32: stored = k.load(fromByteOffset: index * 4, as: Float.self)
                        case .float16: stored = HalfPrecision.float(fromFloat16Bits: k.load(fromByteOffset: index * 2, as: UInt16.self))
                        case .bfloat16: stored = HalfPrecision.float(fromBFloat16Bits: k.load(fromByteOffset: index * 2, as: UInt16.self))
                        }
                        XCTAssertEqual(stored, storage.rounded(key(b, h, t, d)), "\(storage) stored (\(b), \(h), \(t), \(d))")
                    } } } }
                }
            }
        }
    }

    func testAppendPastCapacityThrowsTypedErrorAndChangesNothing() throws {
        let cache = try KVCache(batch: 2, kvHeads: 1, headDim: 2, capacity: 4)
        try cache.append(keys: numbered(2, 1, 3, 2), values: numbered(2, 1, 3, 2))
        let before = try cache.keys()
        XCTAssertThrowsError(try cache.append(keys: numbered(2, 1, 2, 2, from: 99), values: numbered(2, 1, 2, 2))) { error in
            XCTAssertEqual(error as? KVCacheError, .capacityExceeded(sequence: 0, length: 3, appending: 2, capacity: 4))
        }
        XCTAssertThrowsError(try cache.append(keys: numbered(1, 1, 2, 2), values: numbered(1, 1, 2, 2), sequence: 1)) { error in
            XCTAssertEqual(error as? KVCacheError, .capacityExceeded(sequence: 1, length: 3, appending: 2, capacity: 4))
        }
        XCTAssertEqual(cache.lengths, [3, 3])
        XCTAssertEqual(try cache.keys(), before)
        try cache.append(keys: numbered(2, 1, 1, 2), values: numbered(2, 1, 1, 2))  // exactly full is fine
        XCTAssertEqual(cache.lengths, [4, 4])
        XCTAssertTrue("\(KVCacheError.capacityExceeded(sequence: 0, length: 3, appending: 2, capacity: 4))".contains("capacity 4"))
    }

    func testSequencesHaveTheirOwnLengths() throws {
        let cache = try KVCache(batch: 3, kvHeads: 2, headDim: 3, valueDim: 1, capacity: 8)
        try cache.append(keys: numbered(1, 2, 5, 3), values: numbered(1, 2, 5, 1), sequence: 0)
        try cache.append(keys: Tensor(validShape: [2, 2, 3], scalars: (0..<12).map(Float.init)),
                         values: Tensor(validShape: [2, 2, 1], scalars: [1, 2, 3, 4]), sequence: 2)
        XCTAssertEqual(cache.lengths, [5, 0, 2])
        XCTAssertEqual(try cache.length(sequence: 2), 2)
        XCTAssertEqual(try cache.keys(sequence: 0).shape, [1, 2, 5, 3])
        XCTAssertEqual(try cache.keys(sequence: 1).shape, [1, 2, 0, 3])
        XCTAssertEqual(try cache.values(sequence: 2).shape, [1, 2, 2, 1])
        XCTAssertEqual(try cache.keys(sequence: 2).scalars, (0..<12).map(Float.init))
        XCTAssertEqual(try cache.values(sequence: 2).scalars, [1, 2, 3, 4])
        XCTAssertEqual(try cache.keys(sequence: 0), numbered(1, 2, 5, 3))
        assertThrowsInvalidValue(argument: "lengths", actual: "[5, 0, 2]", try cache.keys())
        assertThrowsInvalidValue(argument: "lengths", actual: "[5, 0, 2]", try cache.values())
    }

    func testResetAndTruncateForgetTokensButKeepTheMemory() throws {
        let cache = try KVCache(batch: 2, kvHeads: 1, headDim: 2, capacity: 6)
        let address = cache.keyStorageAddress
        try cache.append(keys: numbered(2, 1, 5, 2), values: numbered(2, 1, 5, 2))
        try cache.truncate(sequence: 1, toLength: 2)
        XCTAssertEqual(cache.lengths, [5, 2])
        try cache.truncate(toLength: 3)  // a shorter sequence is unchanged (crop)
        XCTAssertEqual(cache.lengths, [3, 2])
        XCTAssertEqual(try cache.keys(sequence: 0).scalars, [0, 1, 2, 3, 4, 5], "kept tokens keep their values")
        try cache.truncate(toLength: 9)
        XCTAssertEqual(cache.lengths, [3, 2])
        try cache.append(keys: numbered(1, 1, 1, 2, from: 50), values: numbered(1, 1, 1, 2), sequence: 1)
        XCTAssertEqual(try cache.keys(sequence: 1).scalars, [10, 11, 12, 13, 50, 51], "append follows the truncated length")
        try cache.reset(sequence: 0)
        XCTAssertEqual(cache.lengths, [0, 3])
        cache.reset()
        XCTAssertEqual(cache.lengths, [0, 0])
        try cache.append(keys: numbered(2, 1, 6, 2), values: numbered(2, 1, 6, 2))  // the whole capacity again
        XCTAssertEqual(cache.keyStorageAddress, address)
    }

    func testStorageRoundsToNearestEvenOnAppend() throws {
        let cases: [(KVCacheStorage, Float, Float)] = [
            (.float16, 1 + 0x1p-11, 1),                 // tie: to even (1)
            (.float16, 1 + 3 * 0x1p-11, 1 + 0x1p-9),    // tie: to even (up)
            (.float16, 1 + 0x1p-11 + 0x1p-20, 1 + 0x1p-10),  // past the tie: up
            (.float16, 65504, 65504),
            (.float16, 65519.99, 65504),
            (.float16, 65520, .infinity),               // tie between 65504 and 2¹⁶: to even, ∞
            (.float16, -70000, -.infinity),
            (.float16, 0x1p-25, 0),                     // tie between 0 and the smallest subnormal
            (.float16, 0x1.8p-25, 0x1p-24),
            (.float16, 0x1.8p-24, 0x1p-23),             // tie between 1 and 2 subnormal steps: to even
            (.float16, 0x1.ffcp-15, 0x1p-14),           // largest-subnormal rounds up into the normals
            (.float16, -0.0, -0.0),
            (.bfloat16, 1 + 0x1p-8, 1),                 // tie: to even (1)
            (.bfloat16, 1 + 3 * 0x1p-8, 1 + 0x1p-6),    // tie: to even (up)
            (.bfloat16, 1 + 0x1p-8 + 0x1p-20, 1 + 0x1p-7),
            (.bfloat16, .greatestFiniteMagnitude, .infinity),
            (.bfloat16, Float(bitPattern: 0x0000_8080), Float(bitPattern: 0x0001_0000)),  // subnormal, past the tie
            (.bfloat16, Float(bitPattern: 0x0001_8000), Float(bitPattern: 0x0002_0000)),  // subnormal tie: to even
            (.float32, 1 + 0x1p-23, 1 + 0x1p-23),
        ]
        for (storage, input, expected) in cases {
            XCTAssertEqual(storage.rounded(input).bitPattern, expected.bitPattern, "\(storage) \(input)")
            let cache = try KVCache(batch: 1, kvHeads: 1, headDim: 1, capacity: 1, storage: storage)
            try cache.append(keys: Tensor(validShape: [1, 1, 1, 1], scalars: [input]), values: Tensor(validShape: [1, 1, 1, 1], scalars: [-input]))
            XCTAssertEqual(try cache.keys().scalars[0].bitPattern, expected.bitPattern, "\(storage) key \(input)")
            XCTAssertEqual(try cache.values().scalars[0].bitPattern, (-expected).bitPattern, "\(storage) value \(-input)")
        }
        for storage in [KVCacheStorage.float16, .bfloat16] {
            for nan in [Float.nan, Float(bitPattern: 0x7F80_0001), Float(bitPattern: 0xFF80_2000)] {
                XCTAssertTrue(storage.rounded(nan).isNaN, "\(storage) keeps \(nan.bitPattern) NaN")
            }
            XCTAssertEqual(storage.rounded(-.infinity), -.infinity)
        }
    }

    #if !(os(macOS) && arch(x86_64))
    /// The bit-level conversions agree with the platform's `Float16` (IEEE
    /// round-to-nearest-even) on every float16 and on 2¹⁶ seeded float32 patterns.
    func testFloat16RoundingMatchesThePlatformFloat16() {
        for bits in 0...UInt16.max {
            let half = Float16(bitPattern: bits)
            let widened = HalfPrecision.float(fromFloat16Bits: bits)
            if half.isNaN { XCTAssertTrue(widened.isNaN); continue }
            XCTAssertEqual(widened.bitPattern, Float(half).bitPattern, "widening \(bits)")
            XCTAssertEqual(HalfPrecision.float16Bits(widened), bits, "round trip \(bits)")
        }
        var generator = SplitMix64(seed: 0xF16)
        for _ in 0..<65536 {
            let value = Float(bitPattern: UInt32(truncatingIfNeeded: generator.next()))
            if value.isNaN { continue }
            XCTAssertEqual(HalfPrecision.float16Bits(value), Float16(value).bitPattern, "\(value)")
        }
    }
    #endif

    func testBadArgumentsThrowErrorsNamingThem() throws {
        assertThrowsInvalidValue(argument: "batch", actual: "0", try KVCache(batch: 0, kvHeads: 1, headDim: 1, capacity: 1))
        assertThrowsInvalidValue(argument: "kvHeads", actual: "-1", try KVCache(batch: 1, kvHeads: -1, headDim: 1, capacity: 1))
        assertThrowsInvalidValue(argument: "headDim", actual: "0", try KVCache(batch: 1, kvHeads: 1, headDim: 0, capacity: 1))
        assertThrowsInvalidValue(argument: "valueDim", actual: "0", try KVCache(batch: 1, kvHeads: 1, headDim: 1, valueDim: 0, capacity: 1))
        assertThrowsInvalidValue(argument: "capacity", actual: "0", try KVCache(batch: 1, kvHeads: 1, headDim: 1, capacity: 0))
        XCTAssertThrowsError(try KVCache(batch: 1 << 20, kvHeads: 1 << 20, headDim: 128, capacity: 1 << 20)) { error in
            guard case let .invalidValue(argument, _, _)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(argument, "capacity")
        }
        XCTAssertThrowsError(try KVCache(batch: 64, kvHeads: 64, headDim: 128, capacity: 1 << 24)) { error in
            guard case let .invalidValue(argument, _, _)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(argument, "capacity", "beyond physical memory")
        }
        let cache = try KVCache(batch: 2, kvHeads: 2, headDim: 3, valueDim: 4, capacity: 5)
        assertThrowsInvalidShape(argument: "keys", actual: [2, 2, 1, 4], try cache.append(keys: numbered(2, 2, 1, 4), values: numbered(2, 2, 1, 4)))
        assertThrowsInvalidShape(argument: "keys", actual: [2, 1, 3], try cache.append(keys: Tensor(validShape: [2, 1, 3], scalars: Array(repeating: 0, count: 6)), values: numbered(2, 2, 1, 4)))
        assertThrowsInvalidShape(argument: "values", actual: [2, 2, 2, 4], try cache.append(keys: numbered(2, 2, 1, 3), values: numbered(2, 2, 2, 4)))
        assertThrowsInvalidShape(argument: "keys", actual: [3, 2, 1, 3], try cache.append(keys: numbered(3, 2, 1, 3), values: numbered(3, 2, 1, 4)))
        assertThrowsInvalidShape(argument: "keys", actual: [2, 2, 1, 3], try cache.append(keys: numbered(2, 2, 1, 3), values: numbered(2, 2, 1, 4), sequence: 0))
        assertThrowsInvalidShape(argument: "values", actual: [1, 2, 1, 3], try cache.append(keys: numbered(1, 2, 1, 3), values: numbered(1, 2, 1, 3), sequence: 0))
        assertThrowsInvalidValue(argument: "sequence", actual: "2", try cache.append(keys: numbered(1, 2, 1, 3), values: numbered(1, 2, 1, 4), sequence: 2))
        assertThrowsInvalidValue(argument: "sequence", actual: "-1", try cache.keys(sequence: -1))
        assertThrowsInvalidValue(argument: "sequence", actual: "2", try cache.values(sequence: 2))
        assertThrowsInvalidValue(argument: "sequence", actual: "5", try cache.length(sequence: 5))
        assertThrowsInvalidValue(argument: "sequence", actual: "2", try cache.reset(sequence: 2))
        assertThrowsInvalidValue(argument: "sequence", actual: "9", try cache.truncate(sequence: 9, toLength: 0))
        assertThrowsInvalidValue(argument: "length", actual: "-1", try cache.truncate(toLength: -1))
        assertThrowsInvalidValue(argument: "length", actual: "-2", try cache.truncate(sequence: 0, toLength: -2))
        XCTAssertEqual(cache.lengths, [0, 0], "nothing was appended by a failed call")
        XCTAssertEqual(cache.byteCount, 2 * 2 * (64 * 3 + 5 * 4) * 4, "keys in whole panels of 64")
        XCTAssertEqual(try KVCache(batch: 1, kvHeads: 1, headDim: 8, capacity: 32, storage: .bfloat16).byteCount, (64 + 32) * 8 * 2)
        XCTAssertEqual(try KVCache(batch: 1, kvHeads: 1, headDim: 8, capacity: 128, storage: .bfloat16).byteCount, 128 * 16 * 2)
    }

    /// Every call takes the lock: appends to their own rows from many threads
    /// all land, and each row holds its own tokens in order.
    func testConcurrentAppendsToTheirOwnSequencesAllLand() throws {
        let cache = try KVCache(batch: 8, kvHeads: 2, headDim: 4, capacity: 64, storage: .float16)
        DispatchQueue.concurrentPerform(iterations: 8) { sequence in
            for step in 0..<64 {
                let keys = Tensor<Float>(validShape: [2, 1, 4], scalars: Array(repeating: Float(sequence * 100 + step), count: 8))
                try! cache.append(keys: keys, values: keys, sequence: sequence)
            }
        }
        XCTAssertEqual(cache.lengths, Array(repeating: 64, count: 8))
        for sequence in 0..<8 {
            let keys = try cache.keys(sequence: sequence)
            XCTAssertEqual(keys[0, 1, 63, 0], Float(sequence * 100 + 63))
            XCTAssertEqual(keys[0, 0, 17, 3], Float(sequence * 100 + 17))
        }
    }
}
