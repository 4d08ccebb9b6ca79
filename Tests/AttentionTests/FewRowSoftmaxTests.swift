import CAttention
import XCTest
@testable import Attention

/// Tiles of 1–4 query rows (decoding) take the softmax with keys in lanes (a
/// tree max, 16 keys a vector), tiles of more rows one key at a time. A row's
/// bits may not depend on that: each row of a decode call equals the same row
/// of a 64-row call, including scores that are −∞ (masks), NaN (NaN or
/// infinite inputs), all +0 (a zero query row, where the tree max cannot tell
/// the first zero in key order), causal diagonal tiles, key tiles shorter than
/// 64 and head dims that are no multiple of 16, keys in rows and in panels.
final class FewRowSoftmaxTests: XCTestCase {
    /// (query rows, keys, head dim, value dim).
    private let shapes = [(1, 37, 24, 16), (2, 130, 64, 40), (3, 100, 40, 24), (4, 200, 16, 32), (4, 64, 20, 8)]

    private struct Case {
        var name: String
        var causal = ATTN_CAUSAL_NONE
        /// Changes the decode call's inputs: (call, rows); masks are [rows, keys].
        var change: (inout StoredCall, Int) -> Void = { _, _ in }
    }

    private func cases() -> [Case] {
        [
            Case(name: "finite"),
            Case(name: "bottom-right causal (diagonal tiles)", causal: ATTN_CAUSAL_BOTTOM_RIGHT),
            Case(name: "a zero query row (scores +0)") { c, _ in
                for d in 0..<c.headDim { c.query[d] = 0 }
            },
            Case(name: "a NaN query element") { c, rows in
                c.query[(rows - 1) * c.headDim + 1] = .nan
            },
            Case(name: "NaN and ∞ keys") { c, _ in
                c.setKey(5 * c.headDim + 2, .nan)
                c.setKey(min(70, c.keyLength - 1) * c.headDim, .infinity)
            },
            Case(name: "additive mask with −∞ cells and a dead row tile") { c, rows in
                var additive = normals(rows * c.keyLength, seed: 5)
                for index in additive.indices where index % 7 == 3 { additive[index] = -.infinity }
                for j in 0..<min(64, c.keyLength) { additive[j] = -.infinity }  // row 0 sees nothing in tile 0
                additive[rows * c.keyLength - 1] = 0  // keep a key visible at the end
                c.additive = additive
            },
            Case(name: "keep mask, causal", causal: ATTN_CAUSAL_BOTTOM_RIGHT) { c, rows in
                c.keep = (0..<(rows * c.keyLength)).map { $0 % 5 == 1 ? 0 : 1 }
            },
            // Row 0's scores ±0 (the sign of products that underflow): the first zero in
            // key order is the max, which a tree max cannot tell.
            Case(name: "a −0 score, then +0 ones") { c, _ in c.setSignedZeroScores(minusZeroKey: { $0 == 0 }) },
            Case(name: "a +0 score, then −0 ones") { c, _ in c.setSignedZeroScores(minusZeroKey: { $0 != 0 }) },
            Case(name: "zero scores and a NaN, causal", causal: ATTN_CAUSAL_BOTTOM_RIGHT) { c, rows in
                for d in 0..<c.headDim { c.query[(rows - 1) * c.headDim + d] = 0 }
                c.setKey(3 * c.headDim, .nan)
            },
        ]
    }

    func testFewRowTilesHaveTheBitsOfTheSameRowsInAFullTile() {
        forEachKernelPath { path in
            for storage in [KernelKVStorage.float32, .float16] {
                for (rows, keyLength, headDim, valueDim) in shapes {
                    for testCase in cases() {
                        var decode = StoredCall.random(
                            queryHeads: 1, kvHeads: 1, queryLength: rows, keyLength: keyLength,
                            headDim: headDim, valueDim: valueDim, storage: storage, seed: 31)
                        decode.causal = testCase.causal
                        testCase.change(&decode, rows)
                        // The decode rows as the last `rows` of 64 (bottom-right causal
                        // alignment sees the same keys there); the other rows random.
                        var full = decode
                        full.queryLength = 64
                        let first = 64 - rows
                        let extra = normals(64 * headDim, seed: 91)
                        full.query = (0..<(64 * headDim)).map { index in
                            let row = index / headDim, d = index % headDim
                            return row >= first ? decode.query[(row - first) * headDim + d] : extra[index]
                        }
                        if let keep = decode.keep {
                            full.keep = (0..<(64 * keyLength)).map { index in
                                let row = index / keyLength
                                return row >= first ? keep[index - first * keyLength] : 1
                            }
                        }
                        if let additive = decode.additive {
                            full.additive = (0..<(64 * keyLength)).map { index in
                                let row = index / keyLength
                                return row >= first ? additive[index - first * keyLength] : 0
                            }
                        }
                        let large = full.run()
                        let fullPartial = full.runPartial(0, keyLength)
                        XCTAssertEqual(fullPartial.status, ATTN_OK)
                        let fullState = fullPartial.state
                        for width in [0, 16, 64] {  // keys in rows, in panels of 16, of 64
                            decode.keyPanels = width > 0
                            decode.panelWidth = max(width, 16)
                            let small = decode.run()
                            let context = "\(path) \(storage) \(rows)×\(keyLength)×\(headDim)×\(valueDim) \(testCase.name)\(width > 0 ? " panels of \(width)" : "")"
                            XCTAssertEqual(small.status, ATTN_OK, context)
                            XCTAssertEqual(large.status, ATTN_OK, context)
                            let expected = Array(large.output[(first * valueDim)...])
                            assertBitIdentical(small.output, expected, "output, \(context)")
                            assertBitIdentical(small.logsumexp, Array(large.logsumexp[first...]), "logsumexp, \(context)")
                            // The partial state (m, l, O) too: it shows the sign of a zero max.
                            let smallState = decode.runPartial(0, keyLength), largeState = fullState
                            XCTAssertEqual(smallState.status, ATTN_OK, context)
                            assertBitIdentical(smallState.state.rowMax, Array(largeState.rowMax[first...]), "row max, \(context)")
                            assertBitIdentical(smallState.state.rowSum, Array(largeState.rowSum[first...]), "row sum, \(context)")
                            assertBitIdentical(smallState.state.accumulator, Array(largeState.accumulator[(first * valueDim)...]),
                                               "accumulator, \(context)")
                        }
                    }
                }
            }
        }
    }
}

private extension StoredCall {
    /// Sets key element `index` of the rows layout (both storages).
    mutating func setKey(_ index: Int, _ newValue: Float) {
        if storage == .float32 { key[index] = newValue } else { keyBits[index] = storage.narrow(newValue) }
    }
}

private extension StoredCall {
    /// Query row 0 and the keys made tiny (float32 storage only), so that row 0's
    /// scores underflow: −0 for the keys `minusZeroKey` picks, +0 for the others.
    mutating func setSignedZeroScores(minusZeroKey: (Int) -> Bool) {
        guard storage == .float32 else { return }
        for d in 0..<headDim { query[d] = 1e-25 }
        for j in 0..<keyLength {
            for d in 0..<headDim { key[j * headDim + d] = minusZeroKey(j) ? -1e-25 : 1e-25 }
        }
    }
}
