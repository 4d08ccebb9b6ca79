import XCTest
@testable import Attention

/// DESIGN.md, "Determinism": a query row's result does not depend on the thread
/// count, the batch size, the other rows and heads, or where the row falls in its
/// query tile, bit for bit, on every micro-kernel path this CPU supports.
///
/// The kernel's query tile is 64 rows and its key tile 64 keys (CKernels/
/// microkernels/microkernels.h); the shapes below cross both.
final class DeterminismTests: XCTestCase {
    /// The masks a row is checked under; explicit masks are `[Lq, Lk]`, built by
    /// `makeMask(_:queryLength:keyLength:)` from the cell index alone.
    private enum MaskKind: CaseIterable { case none, causalTopLeft, causalBottomRight, keep, additive }

    private func makeMask(_ kind: MaskKind, queryLength: Int, keyLength: Int) throws -> AttentionMask {
        switch kind {
        case .none: return .none
        case .causalTopLeft: return .causal(.topLeft)
        case .causalBottomRight: return .causal(.bottomRight)
        case .keep:
            return .keep(try Tensor(shape: [queryLength, keyLength], scalars: (0..<(queryLength * keyLength)).map { ($0 * 7) % 5 != 0 }))
        case .additive:
            return .additive(try Tensor(shape: [queryLength, keyLength], scalars: (0..<(queryLength * keyLength)).map {
                $0 % 11 == 0 ? -.infinity : Float($0 % 7) * 0.25 - 0.75
            }))
        }
    }

    /// B 2, Hq 2 on Hkv 1, Lq 130 (three query tiles: 12 tasks), Lk 70 (two key
    /// tiles): output and logsumexp with 2, 3 and 8 threads have the bits of 1
    /// thread, for every mask kind and with dropout.
    func testEveryRowIsBitIdenticalWhateverTheThreadCount() throws {
        let (queryLength, keyLength) = (130, 70)
        let q = try Tensor<Float>.randomNormal([2, 2, queryLength, 9], seed: 1)
        let k = try Tensor<Float>.randomNormal([2, 1, keyLength, 9], seed: 2)
        let v = try Tensor<Float>.randomNormal([2, 1, keyLength, 7], seed: 3)
        try forEachKernelPath { path in
            for kind in MaskKind.allCases {
                let mask = try makeMask(kind, queryLength: queryLength, keyLength: keyLength)
                for dropout: Float in kind == .causalTopLeft ? [0, 0.25] : [0] {
                    func run(_ threads: Int) throws -> AttentionResult {
                        try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask,
                                                                   dropoutProbability: dropout, dropoutSeed: 9, threads: threads)
                    }
                    let single = try run(1)
                    for threads in [2, 3, 8] {
                        let result = try run(threads)
                        assertBitIdentical(result.output, single.output, "\(kind), p \(dropout), \(threads) threads, \(path)")
                        assertBitIdentical(result.logsumexp, single.logsumexp, "logsumexp \(kind), p \(dropout), \(threads) threads, \(path)")
                    }
                }
            }
        }
    }

    /// A problem of batch 1 gives the bits of the same problem placed at batch index
    /// 2 of 4 (the other batches random).
    func testRowsAreBitIdenticalWhateverTheBatchSizeAndBatchIndex() throws {
        let (heads, queryLength, keyLength, headDim, valueDim) = (2, 70, 75, 16, 12)
        let q = try Tensor<Float>.randomNormal([1, heads, queryLength, headDim], seed: 10)
        let k = try Tensor<Float>.randomNormal([1, heads, keyLength, headDim], seed: 11)
        let v = try Tensor<Float>.randomNormal([1, heads, keyLength, valueDim], seed: 12)
        func embedded(_ tensor: Tensor<Float>, seed: UInt64) throws -> Tensor<Float> {
            let slice = tensor.count
            var scalars = try Tensor<Float>.randomNormal([4 * slice], seed: seed).scalars
            scalars.replaceSubrange((2 * slice)..<(3 * slice), with: tensor.scalars)
            return try Tensor(shape: [4] + tensor.shape.dropFirst(), scalars: scalars)
        }
        let (q4, k4, v4) = (try embedded(q, seed: 13), try embedded(k, seed: 14), try embedded(v, seed: 15))
        let outputSlice = heads * queryLength * valueDim, rows = heads * queryLength
        try forEachKernelPath { path in
            for kind in MaskKind.allCases {
                // A per-batch mask would differ between the two calls; [Lq, Lk] broadcasts over batches.
                let mask = try makeMask(kind, queryLength: queryLength, keyLength: keyLength)
                for threads in [1, 2] {
                    let alone = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: threads)
                    let inBatch = try scaledDotProductAttentionWithLogsumexp(queries: q4, keys: k4, values: v4, mask: mask, threads: threads)
                    assertBitIdentical(Array(inBatch.output.scalars[(2 * outputSlice)..<(3 * outputSlice)]), alone.output.scalars,
                                       "\(kind), \(threads) threads, \(path)")
                    assertBitIdentical(Array(inBatch.logsumexp.scalars[(2 * rows)..<(3 * rows)]), alone.logsumexp.scalars,
                                       "logsumexp \(kind), \(threads) threads, \(path)")
                }
            }
        }
    }

    /// Query head 4 of 6 on key/value head 2 of 3 (grouped-query attention) gives
    /// the bits of one head alone on that key/value head: the other heads, and
    /// how many there are, change nothing.
    func testRowsAreBitIdenticalWhateverTheNumberOfOtherHeads() throws {
        let (queryLength, keyLength, headDim, valueDim) = (66, 130, 32, 8)
        let q = try Tensor<Float>.randomNormal([1, 6, queryLength, headDim], seed: 20)
        let k = try Tensor<Float>.randomNormal([1, 3, keyLength, headDim], seed: 21)
        let v = try Tensor<Float>.randomNormal([1, 3, keyLength, valueDim], seed: 22)
        func head(_ tensor: Tensor<Float>, _ index: Int) throws -> Tensor<Float> {
            let slice = tensor.count / tensor.shape[1]
            return try Tensor(shape: [1, 1] + tensor.shape.suffix(2), scalars: Array(tensor.scalars[(index * slice)..<((index + 1) * slice)]))
        }
        let (q1, k1, v1) = (try head(q, 4), try head(k, 2), try head(v, 2))
        try forEachKernelPath { path in
            for kind in MaskKind.allCases {
                let mask = try makeMask(kind, queryLength: queryLength, keyLength: keyLength)
                let alone = try scaledDotProductAttentionWithLogsumexp(queries: q1, keys: k1, values: v1, mask: mask)
                let among = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: 2)
                assertBitIdentical(try head(among.output, 4), alone.output, "\(kind), \(path)")
                assertBitIdentical(Array(among.logsumexp.scalars[(4 * queryLength)..<(5 * queryLength)]), alone.logsumexp.scalars,
                                   "logsumexp \(kind), \(path)")
            }
        }
    }

    /// The same query row, with the same keep or additive mask row, placed at row
    /// 0, 37, 63, 64 and 130 of queries of lengths 1, 38, 64, 65 and 131 (so at the
    /// first, a middle and the last lane of a query tile, and in later tiles) among
    /// random other rows, against the same 150 keys and values: its output and
    /// logsumexp have the same bits everywhere.
    func testARowIsBitIdenticalWhereverItFallsInItsQueryTile() throws {
        let (keyLength, headDim, valueDim) = (150, 40, 24)
        let k = try Tensor<Float>.randomNormal([1, 1, keyLength, headDim], seed: 30)
        let v = try Tensor<Float>.randomNormal([1, 1, keyLength, valueDim], seed: 31)
        let row = normals(headDim, seed: 32)
        let keepRow = (0..<keyLength).map { $0 % 6 != 1 }
        let additiveRow: [Float] = (0..<keyLength).map { $0 % 9 == 4 ? -.infinity : Float($0 % 5) * 0.5 - 1 }
        let positions = [0, 37, 63, 64, 130]

        try forEachKernelPath { path in
            for maskKind in ["none", "keep", "additive"] {
                var firstOutput: [Float]?, firstLogsumexp: Float?
                for position in positions {
                    let queryLength = position + 1
                    var scalars = normals(queryLength * headDim, seed: UInt64(100 + position))
                    scalars.replaceSubrange((position * headDim)..<((position + 1) * headDim), with: row)
                    let q = try Tensor(shape: [1, 1, queryLength, headDim], scalars: scalars)
                    let mask: AttentionMask
                    switch maskKind {
                    case "keep":
                        var cells = (0..<(queryLength * keyLength)).map { ($0 * 5) % 7 != 0 }
                        cells.replaceSubrange((position * keyLength)..<((position + 1) * keyLength), with: keepRow)
                        mask = .keep(try Tensor(shape: [queryLength, keyLength], scalars: cells))
                    case "additive":
                        var cells = (0..<(queryLength * keyLength)).map { Float($0 % 3) - 1 }
                        cells.replaceSubrange((position * keyLength)..<((position + 1) * keyLength), with: additiveRow)
                        mask = .additive(try Tensor(shape: [queryLength, keyLength], scalars: cells))
                    default:
                        mask = .none
                    }
                    for threads in [1, 2] {
                        let result = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: threads)
                        let output = Array(result.output.scalars[(position * valueDim)..<((position + 1) * valueDim)])
                        let logsumexp = result.logsumexp.scalars[position]
                        if let firstOutput, let firstLogsumexp {
                            assertBitIdentical(output, firstOutput, "row at \(position), \(maskKind), \(threads) threads, \(path)")
                            XCTAssertEqual(logsumexp.bitPattern, firstLogsumexp.bitPattern, "logsumexp at \(position), \(maskKind), \(path)")
                        } else {
                            (firstOutput, firstLogsumexp) = (output, logsumexp)
                        }
                    }
                }
            }
        }
    }

    /// Under a causal mask a row's visible keys depend on its index, so the
    /// position check uses bottom-right alignment instead: the last query row of
    /// a query of any length sees every key, so it is the same row, bit for bit,
    /// whether the query has 1, 64, 65 or 129 rows (its lane 0, 63, 0 and 0 of
    /// tiles 0, 0, 1 and 2), and equals the unmasked call's last row.
    func testTheLastRowUnderBottomRightCausalIsBitIdenticalWhateverTheQueryLength() throws {
        let (keyLength, headDim, valueDim) = (140, 16, 8)
        let k = try Tensor<Float>.randomNormal([1, 1, keyLength, headDim], seed: 40)
        let v = try Tensor<Float>.randomNormal([1, 1, keyLength, valueDim], seed: 41)
        let lastRow = normals(headDim, seed: 42)
        try forEachKernelPath { path in
            var first: [Float]?
            for queryLength in [1, 64, 65, 129] {
                let q = try Tensor(shape: [1, 1, queryLength, headDim],
                                   scalars: normals((queryLength - 1) * headDim, seed: UInt64(queryLength)) + lastRow)
                for mask in [AttentionMask.causal(.bottomRight), .none] {
                    let output = try scaledDotProductAttention(queries: q, keys: k, values: v, mask: mask)
                    let row = Array(output.scalars[((queryLength - 1) * valueDim)...])
                    if let first {
                        assertBitIdentical(row, first, "Lq \(queryLength), \(mask), \(path)")
                    } else {
                        first = row
                    }
                }
            }
        }
    }
}

/// Decoding (one to four query rows) takes its own micro-kernel on AVX-512
/// (keys in lanes); its scores must still be bit for bit those of the tiled one.
final class DecodeDeterminismTests: XCTestCase {
    func testDecodeRowsMatchTheSameRowsInsideAFullTile() throws {
      // One chunk of keys, and three (split across threads for the decode rows).
      for keyLength in [300, 1300] {
        let keys = try Tensor<Float>.randomNormal([1, 2, keyLength, 40], seed: 21)
        let values = try Tensor<Float>.randomNormal([1, 2, keyLength, 24], seed: 22)
        let full = try Tensor<Float>.randomNormal([1, 2, 100, 40], seed: 23)
        try forEachKernelPath { path in
            let reference = try scaledDotProductAttentionWithLogsumexp(queries: full, keys: keys, values: values)
            for rows in 1...5 {
                // Rows 37 … 37 + rows − 1 of the full query, alone.
                var scalars: [Float] = []
                for head in 0..<2 { scalars += full.scalars[(head * 100 + 37) * 40..<(head * 100 + 37 + rows) * 40] }
                let few = try Tensor<Float>(shape: [1, 2, rows, 40], scalars: scalars)
                let result = try scaledDotProductAttentionWithLogsumexp(queries: few, keys: keys, values: values, threads: 2)
                for head in 0..<2 {
                    for row in 0..<rows {
                        for d in 0..<24 {
                            XCTAssertEqual(result.output[0, head, row, d].bitPattern, reference.output[0, head, 37 + row, d].bitPattern,
                                           "\(path): \(keyLength) keys, \(rows) rows, head \(head), row \(row), d \(d)")
                        }
                        XCTAssertEqual(result.logsumexp[0, head, row].bitPattern, reference.logsumexp[0, head, 37 + row].bitPattern)
                    }
                }
            }
        }
      }
    }

    /// Decoding reads the value rows in place (no packed copy), so it also makes
    /// its own check for NaN and ±∞: with poisoned values, some of them at a masked
    /// key, decode rows must still be bit for bit the rows of a full tile.
    func testDecodeRowsWithNaNAndInfinityInTheValuesMatchTheSameRowsInsideAFullTile() throws {
        let keys = try Tensor<Float>.randomNormal([1, 2, 300, 40], seed: 24)
        var values = try Tensor<Float>.randomNormal([1, 2, 300, 24], seed: 25)
        let full = try Tensor<Float>.randomNormal([1, 2, 100, 40], seed: 26)
        for head in 0..<2 {
            values[0, head, 10, 3] = .infinity
            values[0, head, 100, 5] = -.infinity
            values[0, head, 200, 7] = .nan
            values[0, head, 250, 1] = .infinity  // hidden from every row by the mask
        }
        func keepMask(rows: Int) throws -> AttentionMask {
            var keep = try Tensor<Bool>(shape: [rows, 300], repeating: true)
            for row in 0..<rows { keep[row, 250] = false }
            return .keep(keep)
        }
        try forEachKernelPath { path in
            let reference = try scaledDotProductAttentionWithLogsumexp(
                queries: full, keys: keys, values: values, mask: keepMask(rows: 100))
            for column in [3, 5, 7] { XCTAssertFalse(reference.output[0, 0, 37, column].isFinite, "\(path): column \(column)") }
            XCTAssertTrue(reference.output[0, 0, 37, 1].isFinite, "\(path): the masked infinity leaked")
            for rows in 1...5 {
                var scalars: [Float] = []
                for head in 0..<2 { scalars += full.scalars[(head * 100 + 37) * 40..<(head * 100 + 37 + rows) * 40] }
                let few = try Tensor<Float>(shape: [1, 2, rows, 40], scalars: scalars)
                let result = try scaledDotProductAttentionWithLogsumexp(
                    queries: few, keys: keys, values: values, mask: keepMask(rows: rows))
                for head in 0..<2 {
                    for row in 0..<rows {
                        for d in 0..<24 {
                            XCTAssertEqual(result.output[0, head, row, d].bitPattern, reference.output[0, head, 37 + row, d].bitPattern,
                                           "\(path): \(rows) rows, head \(head), row \(row), d \(d)")
                        }
                    }
                }
            }
        }
    }
}
