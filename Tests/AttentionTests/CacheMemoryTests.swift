import CAttention
import XCTest
@testable import Attention

/// `attn_cache_alloc` / `attn_cache_free`, the memory of a `KVCache`: zeroed,
/// aligned (2 MiB from 2 MiB up, so that huge pages can back it), writable to
/// the last byte, and refused (NULL) for sizes below 1.
final class CacheMemoryTests: XCTestCase {
    func testSizesAroundTheHugePageAreZeroedAlignedAndWritable() throws {
        let hugePage = 2 << 20
        for bytes in [1, 63, 4096, hugePage - 1, hugePage, hugePage + 1, 3 * hugePage + 12345] {
            let memory = try XCTUnwrap(attn_cache_alloc(Int64(bytes)), "\(bytes) bytes")
            let address = Int(bitPattern: memory)
            XCTAssertEqual(address % 64, 0, "\(bytes) bytes: 64-byte aligned")
            if bytes >= hugePage { XCTAssertEqual(address % hugePage, 0, "\(bytes) bytes: 2 MiB aligned") }
            let view = memory.assumingMemoryBound(to: UInt8.self)
            var nonzero = 0
            for i in stride(from: 0, to: bytes, by: 4093) where view[i] != 0 { nonzero += 1 }
            XCTAssertEqual(view[bytes - 1], 0, "\(bytes) bytes: last byte zeroed")
            XCTAssertEqual(nonzero, 0, "\(bytes) bytes: zero-filled")
            view[0] = 7
            view[bytes - 1] = 9  // the last byte is mapped
            XCTAssertEqual(view[0] &+ view[bytes - 1], bytes == 1 ? 18 : 16)
            attn_cache_free(memory, Int64(bytes))
        }
    }

    func testSizesBelowOneAreRefusedAndNullIsFreedQuietly() {
        XCTAssertNil(attn_cache_alloc(0))
        XCTAssertNil(attn_cache_alloc(-1))
        XCTAssertNil(attn_cache_alloc(Int64.max))
        attn_cache_free(nil, 0)
        attn_cache_free(nil, 4 << 20)
    }

    func testAKVCacheOfSeveralMebibytesLivesInCacheMemory() throws {
        // 1·2·1024·128 float32 keys = 1 MiB, values the same: both below the
        // huge page; 4096 tokens: 4 MiB each, 2 MiB aligned.
        for (capacity, aligned) in [(1024, 64), (4096, 2 << 20)] {
            let cache = try KVCache(batch: 1, kvHeads: 2, headDim: 128, capacity: capacity)
            XCTAssertEqual(Int(bitPattern: cache.keyStorageAddress) % aligned, 0, "capacity \(capacity): keys")
            XCTAssertEqual(Int(bitPattern: cache.valueStorageAddress) % aligned, 0, "capacity \(capacity): values")
        }
    }
}
