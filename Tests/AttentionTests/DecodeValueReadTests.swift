import CAttention
import XCTest
@testable import Attention

/// Decoding tiles (1–4 query rows) read the value rows as they are stored —
/// float32 in place, float16 and bfloat16 widened in registers — instead of a
/// widened or packed copy. A row's result may not depend on that: each row of
/// a decode call has the bits of the same row computed in a full 64-row tile
/// (which widens and packs), including tiles with NaN and ±∞ values, value
/// dims with vector tails and key tiles shorter than 64, keys in rows or in panels (of 16 or 64 keys).
final class DecodeValueReadTests: XCTestCase {
    /// (query rows, keys, head dim, value dim).
    private let shapes = [(1, 100, 40, 24), (2, 1300, 64, 128), (3, 530, 40, 136), (4, 37, 16, 40), (1, 700, 128, 256)]

    private func variants() -> [(String, (inout StoredCall) -> Void)] {
        [
            ("finite", { _ in }),
            ("NaN in the first tile, ∞ later", { c in
                c.setValue(3, .nan)
                c.setValue(min(100, c.keyLength - 1) * c.valueDim + 5, .infinity)
            }),
            ("−∞ in the last tile", { c in c.setValue((c.keyLength - 1) * c.valueDim + c.valueDim - 1, -.infinity) }),
            ("keep mask over a NaN value", { c in
                c.keep = (0..<(c.rows * c.keyLength)).map { $0 % c.keyLength == 2 ? 0 : 1 }
                c.setValue(2 * c.valueDim + 1, .nan)
            }),
            ("huge values overflow", { c in
                for j in 0..<c.keyLength { c.setValue(j * c.valueDim, storageMax(c.storage)) }
            }),
        ]
    }

    func testDecodeRowsHaveTheBitsOfTheSameRowsInAFullTile() {
        forEachKernelPath { path in
            for storage in [KernelKVStorage.float32, .float16, .bfloat16] {
                for (rows, keyLength, headDim, valueDim) in shapes {
                    for (name, change) in variants() {
                        // Two query heads of one kv head: with one row a head they share a tile.
                        var decode = StoredCall.random(
                            queryHeads: 2, kvHeads: 1, queryLength: rows, keyLength: keyLength,
                            headDim: headDim, valueDim: valueDim, storage: storage, seed: 21)
                        change(&decode)
                        // The same rows, each head's first `rows` of 64.
                        var full = decode
                        full.queryLength = 64
                        let extra = normals(2 * 64 * headDim, seed: 77)
                        full.query = (0..<(2 * 64 * headDim)).map { index in
                            let head = index / (64 * headDim), row = index / headDim % 64, d = index % headDim
                            return row < rows ? decode.query[(head * rows + row) * headDim + d] : extra[index]
                        }
                        if let keep = decode.keep {
                            full.keep = (0..<(2 * 64 * keyLength)).map { keep[$0 % keyLength] }
                        }
                        let large = full.run()
                        // Panel widths 0 (rows), 16 and 64.
                        for (threads, width) in [(Int32(1), 0), (2, 0), (1, 16), (1, 64)] {
                            decode.threads = threads
                            decode.keyPanels = width > 0
                            decode.panelWidth = max(width, 16)
                            let small = decode.run()
                            let context = "\(path) \(storage) \(rows)×\(keyLength)×\(headDim)×\(valueDim) \(name) \(threads)t\(width > 0 ? " panels of \(width)" : "")"
                            XCTAssertEqual(small.status, ATTN_OK, context)
                            XCTAssertEqual(large.status, ATTN_OK, context)
                            var expected: [Float] = [], expectedLse: [Float] = []
                            for head in 0..<2 {
                                for row in 0..<rows {
                                    let at = head * 64 + row
                                    expected += large.output[(at * valueDim)..<((at + 1) * valueDim)]
                                    expectedLse.append(large.logsumexp[at])
                                }
                            }
                            assertBitIdentical(small.output, expected, "output, \(context)")
                            assertBitIdentical(small.logsumexp, expectedLse, "logsumexp, \(context)")
                        }
                    }
                }
            }
        }
    }
}

/// The largest finite value of a storage type: in float32 a few of them sum to ∞, so
/// the updated rows overflow and the tile must take the packed way.
private func storageMax(_ storage: KernelKVStorage) -> Float {
    switch storage {
    case .float32: return .greatestFiniteMagnitude
    case .float16: return 65504
    case .bfloat16: return Float(bitPattern: 0x7F7F_0000)
    }
}
