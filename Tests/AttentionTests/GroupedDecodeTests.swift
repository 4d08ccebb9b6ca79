import CAttention
import XCTest
@testable import Attention

/// Grouped-query and multi-query decoding stack the query heads of a kv head
/// in one tile, so that its keys and values stream once for all of them. A
/// row's bits must not depend on it: every stacked row equals the same row
/// computed with its head alone in a tile (the call with the kv heads
/// repeated, which stacks nothing), masks, dropout cells and logsumexp included.
final class GroupedDecodeTests: XCTestCase {
    /// The call with each kv head repeated for its query heads: a plain
    /// multi-head call whose rows are not stacked.
    private func repeatedHeads(_ call: StoredCall) -> StoredCall {
        var plain = call
        let group = call.queryHeads / call.kvHeads
        plain.kvHeads = call.queryHeads
        func repeatHeads<T>(_ data: [T], _ dim: Int) -> [T] {
            guard !data.isEmpty else { return data }
            var out: [T] = []
            let headSize = call.keyLength * dim
            for b in 0..<call.batch {
                for h in 0..<call.queryHeads {
                    let start = (b * call.kvHeads + h / group) * headSize
                    out += data[start..<start + headSize]
                }
            }
            return out
        }
        plain.key = repeatHeads(call.key, call.headDim)
        plain.value = repeatHeads(call.value, call.valueDim)
        plain.keyBits = repeatHeads(call.keyBits, call.headDim)
        plain.valueBits = repeatHeads(call.valueBits, call.valueDim)
        return plain
    }

    func testStackedHeadsGiveTheBitsOfEachHeadAloneOnEveryPathDriverAndStorage() {
        // (query heads, kv heads, query rows, keys)
        let shapes = [(8, 2, 1, 1300), (6, 1, 1, 200), (4, 2, 3, 600), (32, 1, 1, 70), (8, 1, 9, 100)]
        let variants: [(String, (inout StoredCall) -> Void)] = [
            ("no mask", { _ in }),
            ("causal, bottom right", { $0.causal = ATTN_CAUSAL_BOTTOM_RIGHT }),
            ("causal, top left", { $0.causal = ATTN_CAUSAL_TOP_LEFT }),
            // Different per head and row: a stacked row must read its own.
            ("keep mask", { c in c.keep = (0..<(c.rows * c.keyLength)).map { ($0 * 7 + $0 / c.keyLength) % 5 == 1 ? 0 : 1 } }),
            ("additive mask", { c in c.additive = (0..<(c.rows * c.keyLength)).map { Float(($0 + $0 / c.keyLength) % 7) * 0.5 - 1.5 } }),
            ("dropout 0.3", { c in c.dropout = 0.3; c.seed = 5 }),
            ("NaN value", { c in c.setValue(17 * c.valueDim + 2, .nan) }),
        ]
        forEachKernelPath { path in
            for storage in [KernelKVStorage.float32, .float16] {
                for (queryHeads, kvHeads, queryLength, keyLength) in shapes {
                    for (name, change) in variants {
                        var call = StoredCall.random(
                            batch: 2, queryHeads: queryHeads, kvHeads: kvHeads, queryLength: queryLength,
                            keyLength: keyLength, headDim: 40, valueDim: 24, storage: storage, seed: 3)
                        change(&call)
                        for (threads, driver) in [(Int32(1), AttentionThreading.Driver.openMP)]
                            + availableDrivers.map({ (Int32(3), $0) }) {
                            call.threads = threads
                            call.driver = driver
                            let context = "\(path) \(storage) \(queryHeads)/\(kvHeads) heads, \(queryLength)×\(keyLength), \(name), \(threads)t \(driver)"
                            let stacked = call.run(), alone = repeatedHeads(call).run()
                            XCTAssertEqual(stacked.status, ATTN_OK, context)
                            XCTAssertEqual(alone.stackedHeads, 1, context)
                            let stacks = call.causal == ATTN_CAUSAL_NONE || queryLength == 1
                            if stacks { XCTAssertGreaterThan(stacked.stackedHeads, 1, context) }
                            assertBitIdentical(stacked.output, alone.output, "output, \(context)")
                            assertBitIdentical(stacked.logsumexp, alone.logsumexp, "logsumexp, \(context)")
                        }
                    }
                }
            }
        }
    }

    func testMultiQueryDecodeStacksEveryQueryHeadOfTheKVHeadInOneTile() {
        func stacked(_ heads: Int, _ kvHeads: Int, _ rows: Int, _ causal: attn_causal) -> Int64 {
            var call = StoredCall.random(queryHeads: heads, kvHeads: kvHeads, queryLength: rows, keyLength: 16,
                                         headDim: 8, valueDim: 8, storage: .float32, seed: 1)
            call.causal = causal
            return call.withParams(output: nil, logsumexp: nil) { attn_sdpa_stacked_heads(&$0) }
        }
        XCTAssertEqual(stacked(32, 1, 1, ATTN_CAUSAL_BOTTOM_RIGHT), 32, "MQA decode: one tile of 32 heads")
        XCTAssertEqual(stacked(32, 8, 1, ATTN_CAUSAL_NONE), 4, "GQA 4:1")
        XCTAssertEqual(stacked(128, 1, 1, ATTN_CAUSAL_NONE), 64, "at most a tile of rows")
        XCTAssertEqual(stacked(8, 1, 16, ATTN_CAUSAL_NONE), 4, "4 heads × 16 rows fill a tile")
        XCTAssertEqual(stacked(8, 1, 3, ATTN_CAUSAL_BOTTOM_RIGHT), 1, "per-row causal diagonals are not stacked")
        XCTAssertEqual(stacked(8, 8, 1, ATTN_CAUSAL_NONE), 1, "multi-head attention has nothing to share")
    }
}
