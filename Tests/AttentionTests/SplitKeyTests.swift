import CAttention
import XCTest
@testable import Attention

/// Split-KV: a call with one query tile and few heads splits each head's keys
/// into chunks of KV_CHUNK (512) keys that different threads compute, then
/// merges the chunks through their logsumexp. Every call computes its chunks
/// that way (one thread goes through them in turn), so a split call must give
/// the bits of an unsplit one, and the oracle's numbers.
final class SplitKeyTests: XCTestCase {
    /// (query rows, keys): one chunk and a bit, chunks that end inside a key
    /// tile, a full query tile, and a last chunk of 37 keys.
    private let shapes = [(1, 1300), (3, 513), (64, 1100), (5, 2085)]

    private func call(queryLength: Int, keyLength: Int, seed: UInt64) -> KernelCall {
        let (headDim, valueDim) = (40, 24)
        return KernelCall(
            queryLength: queryLength, keyLength: keyLength, headDim: headDim, valueDim: valueDim,
            query: normals(queryLength * headDim, seed: seed),
            key: normals(keyLength * headDim, seed: seed + 1),
            value: normals(keyLength * valueDim, seed: seed + 2),
            scale: 0.3)
    }

    func testSplitCallsGiveTheBitsOfUnsplitOnesForEveryMaskKindAndPath() {
        forEachKernelPath { path in
            for (queryLength, keyLength) in shapes {
                // (description, how to change the call)
                let variants: [(String, (inout KernelCall) -> Void)] = [
                    ("no mask", { _ in }),
                    ("causal, bottom right", { $0.causal = ATTN_CAUSAL_BOTTOM_RIGHT }),
                    // Row 0 sees nothing in the first chunk, row 1 nothing at all,
                    // the others every third key.
                    ("keep mask", { c in
                        c.keep = (0..<(c.queryLength * c.keyLength)).map { index in
                            let (row, key) = (index / c.keyLength, index % c.keyLength)
                            if row == 0 { return key >= 512 ? 1 : 0 }
                            if row == 1 { return 0 }
                            return key % 3 == 0 ? 0 : 1
                        }
                    }),
                    ("additive mask", { c in
                        c.additive = (0..<(c.queryLength * c.keyLength)).map { Float($0 % 7) * 0.5 - 1.5 }
                    }),
                    ("dropout 0.2", { c in c.dropout = 0.2; c.seed = 99 }),
                    // A NaN value in the last chunk, an infinite one in the first.
                    ("NaN and ∞ values", { c in
                        c.value[(c.keyLength - 1) * c.valueDim + 3] = .nan
                        c.value[100 * c.valueDim + 5] = .infinity
                    }),
                ]
                for (name, change) in variants {
                    var kernel = call(queryLength: queryLength, keyLength: keyLength, seed: 7)
                    change(&kernel)
                    kernel.threads = 1
                    let unsplit = kernel.run()
                    XCTAssertEqual(unsplit.status, ATTN_OK)
                    XCTAssertFalse(unsplit.splitsKeys, "one thread never splits")
                    for threads: Int32 in [2, 3, 8] {
                        kernel.threads = threads
                        let split = kernel.run()
                        let context = "\(path), \(queryLength)×\(keyLength), \(name), \(threads) threads"
                        XCTAssertEqual(split.status, ATTN_OK, context)
                        XCTAssertTrue(split.splitsKeys, "\(context): expected a split call")
                        assertBitIdentical(split.output, unsplit.output, "output, \(context)")
                        assertBitIdentical(split.logsumexp, unsplit.logsumexp, "logsumexp, \(context)")
                    }
                }
            }
        }
    }

    func testSplitCallsAgreeWithTheOracle() throws {
        let queries = try Tensor<Float>.randomNormal([1, 2, 3, 40], seed: 1)
        let keys = try Tensor<Float>.randomNormal([1, 2, 1500, 40], seed: 2)
        let values = try Tensor<Float>.randomNormal([1, 2, 1500, 24], seed: 3)
        let scale: Float = 0.3
        let tolerance = Tolerance.outputBound(queries: queries, keys: keys, values: values, scale: scale)
        for mask: AttentionMask in [.none, .causal(.bottomRight)] {
            let expected = try scaledDotProductAttentionWithLogsumexp(
                queries: queries, keys: keys, values: values, mask: mask, scale: scale, backend: .reference)
            try forEachKernelPath { path in
                let actual = try scaledDotProductAttentionWithLogsumexp(
                    queries: queries, keys: keys, values: values, mask: mask, scale: scale, threads: 2)
                assertClose(actual.output, expected.output, tolerance: tolerance, "\(path), \(mask)")
                assertClose(actual.logsumexp, expected.logsumexp, tolerance: 1e-5, "\(path), \(mask)")
            }
        }
    }

    /// Many heads keep the threads busy without a split; so does one thread, a
    /// second query tile, or keys that fit one chunk.
    func testOnlyCallsWithTooFewTasksSplit() {
        var decode = call(queryLength: 1, keyLength: 1300, seed: 3)
        decode.threads = 2
        XCTAssertTrue(decode.run().splitsKeys)
        decode.threads = 1
        XCTAssertFalse(decode.run().splitsKeys)

        var oneChunk = call(queryLength: 1, keyLength: 512, seed: 3)
        oneChunk.threads = 2
        XCTAssertFalse(oneChunk.run().splitsKeys)

        var twoTiles = call(queryLength: 65, keyLength: 1300, seed: 3)
        twoTiles.threads = 2
        XCTAssertFalse(twoTiles.run().splitsKeys)

        var manyHeads = call(queryLength: 1, keyLength: 1300, seed: 3)
        manyHeads.queryHeads = 4
        manyHeads.kvHeads = 4
        manyHeads.query = normals(4 * 40, seed: 4)
        manyHeads.key = normals(4 * 1300 * 40, seed: 5)
        manyHeads.value = normals(4 * 1300 * 24, seed: 6)
        manyHeads.threads = 2
        XCTAssertFalse(manyHeads.run().splitsKeys)
    }
}
