import CAttention
import XCTest
@testable import Attention

/// Attention over slices of the keys, merged: the kernel computes every call
/// as 512-key chunks merged in key order, so slices of one chunk each (after
/// a first slice of any number of chunks) merge to the unsliced call's bits;
/// any other slicing agrees with it to rounding.
final class PartialAttentionTests: XCTestCase {
    /// Merges kernel states in order and finishes them (the C functions).
    private func mergeAndFinish(_ states: [AttentionPartial.KernelState], rows: Int, valueDim: Int)
        -> (output: [Float], logsumexp: [Float])
    {
        var merged = states[0]
        for var next in states.dropFirst() {
            let status = merged.rowMax.withUnsafeMutableBufferPointer { m in
                merged.rowSum.withUnsafeMutableBufferPointer { l in
                    merged.accumulator.withUnsafeMutableBufferPointer { o in
                        next.rowMax.withUnsafeMutableBufferPointer { nm in
                            next.rowSum.withUnsafeMutableBufferPointer { nl in
                                next.accumulator.withUnsafeMutableBufferPointer { no in
                                    var a = attn_partial(row_max: m.baseAddress, row_sum: l.baseAddress, accumulator: o.baseAddress)
                                    var b = attn_partial(row_max: nm.baseAddress, row_sum: nl.baseAddress, accumulator: no.baseAddress)
                                    return attn_partial_merge(&a, &b, Int64(rows), Int64(valueDim))
                                }
                            }
                        }
                    }
                }
            }
            XCTAssertEqual(status, ATTN_OK)
        }
        var output = [Float](repeating: 0, count: rows * valueDim), logsumexp = [Float](repeating: 0, count: rows)
        let status = merged.rowMax.withUnsafeMutableBufferPointer { m in
            merged.rowSum.withUnsafeMutableBufferPointer { l in
                merged.accumulator.withUnsafeMutableBufferPointer { o in
                    var state = attn_partial(row_max: m.baseAddress, row_sum: l.baseAddress, accumulator: o.baseAddress)
                    return attn_partial_finish(&state, Int64(rows), Int64(valueDim), merged.dropoutProbability,
                                               &output, &logsumexp)
                }
            }
        }
        XCTAssertEqual(status, ATTN_OK)
        return (output, logsumexp)
    }

    func testChunkSlicesMergeToTheBitsOfTheUnslicedCallOnEveryPathAndDriver() {
        // (query rows, keys): decode, a few rows, a full tile; the last chunk is partial.
        let shapes = [(1, 2085), (3, 1600), (64, 1100)]
        let variants: [(String, (inout StoredCall) -> Void)] = [
            ("no mask", { _ in }),
            ("causal, bottom right", { $0.causal = ATTN_CAUSAL_BOTTOM_RIGHT }),
            ("causal, top left", { $0.causal = ATTN_CAUSAL_TOP_LEFT }),
            ("keep mask", { c in c.keep = (0..<(c.rows * c.keyLength)).map { index in
                let (row, key) = (index / c.keyLength, index % c.keyLength)
                return row == 0 && key < 600 ? 0 : key % 3 == 0 ? 0 : 1
            } }),
            ("dropout 0.2", { c in c.dropout = 0.2; c.seed = 9 }),
            ("NaN and ∞ values", { c in
                c.setValue((c.keyLength - 1) * c.valueDim + 3, .nan)
                c.setValue(100 * c.valueDim + 5, .infinity)
            }),
        ]
        forEachKernelPath { path in
            for (queryLength, keyLength) in shapes {
                for (name, change) in variants {
                    var call = StoredCall.random(
                        batch: 1, queryHeads: 4, kvHeads: 2, queryLength: queryLength, keyLength: keyLength,
                        headDim: 40, valueDim: 24, storage: queryLength == 3 ? .bfloat16 : .float32, seed: 21)
                    change(&call)
                    for (threads, driver) in [(Int32(1), AttentionThreading.Driver.openMP)]
                        + availableDrivers.map({ (Int32(3), $0) }) {
                        call.threads = threads
                        call.driver = driver
                        let whole = call.run()
                        // One chunk each; then a first slice of two chunks and single chunks after.
                        let cuts = Array(stride(from: 0, to: keyLength, by: 512)) + [keyLength]
                        for first in [1, 2] where first < cuts.count - 1 {
                            let bounds = [0] + cuts[first...]
                            let states = zip(bounds, bounds.dropFirst()).map { begin, end -> AttentionPartial.KernelState in
                                let (status, state) = call.runPartial(begin, end)
                                XCTAssertEqual(status, ATTN_OK)
                                return state
                            }
                            let merged = mergeAndFinish(states, rows: call.rows, valueDim: call.valueDim)
                            let context = "\(path) \(queryLength)×\(keyLength) \(name) \(threads)t \(driver), slices \(bounds)"
                            assertBitIdentical(merged.output, whole.output, "output, \(context)")
                            assertBitIdentical(merged.logsumexp, whole.logsumexp, "logsumexp, \(context)")
                        }
                    }
                }
            }
        }
    }

    func testThePublicAPIMergesChunkSlicesBitwiseAndAnySlicesWithinTolerance() throws {
        let queries = try Tensor<Float>.randomNormal([2, 4, 3, 32], seed: 1)
        let keys = try Tensor<Float>.randomNormal([2, 2, 1700, 32], seed: 2)
        let values = try Tensor<Float>.randomNormal([2, 2, 1700, 16], seed: 3)
        let tolerance = Tolerance.outputBound(queries: queries, keys: keys, values: values, scale: 1 / Float(32).squareRoot())
        for driver in availableDrivers {
            KernelThreading.override = driver
            defer { KernelThreading.override = nil }
            for mask: AttentionMask in [.none, .causal(.bottomRight)] {
                let whole = try scaledDotProductAttentionWithLogsumexp(
                    queries: queries, keys: keys, values: values, mask: mask, threads: 2)
                func merged(_ bounds: [Int], rebuilt: Bool = false) throws -> AttentionResult {
                    let partials = try zip(bounds, bounds.dropFirst()).map { begin, end in
                        let partial = try scaledDotProductAttentionPartial(
                            queries: queries, keys: keys, values: values, keyRange: begin..<end, mask: mask, threads: 2)
                        return rebuilt ? try AttentionPartial(output: partial.output, logsumexp: partial.logsumexp) : partial
                    }
                    return try mergeAttentionPartials(partials)
                }
                let chunks = try merged([0, 1024, 1536, 1700])
                assertBitIdentical(chunks.output, whole.output, "\(driver) \(mask)")
                assertBitIdentical(chunks.logsumexp, whole.logsumexp, "\(driver) \(mask)")
                for (bounds, rebuilt) in [([0, 700, 1100, 1700], false), ([0, 512, 1024, 1700], true), ([0, 1, 1700], false)] {
                    let result = try merged(bounds, rebuilt: rebuilt)
                    assertClose(result.output, whole.output, tolerance: tolerance, "\(driver) \(mask) \(bounds) rebuilt \(rebuilt)")
                    assertClose(result.logsumexp, whole.logsumexp, tolerance: tolerance, "\(driver) \(mask) \(bounds) logsumexp")
                }
                let single = try mergeAttentionPartials([try scaledDotProductAttentionPartial(
                    queries: queries, keys: keys, values: values, mask: mask)])
                assertBitIdentical(single.output, whole.output, "one partial of every key is the call")
            }
        }
    }

    func testASliceWithNoVisibleKeyGivesZeroRowsAndMinusInfinity() throws {
        let queries = try Tensor<Float>.randomNormal([1, 2, 8], seed: 1)
        let keys = try Tensor<Float>.randomNormal([1, 40, 8], seed: 2)
        let values = try Tensor<Float>.randomNormal([1, 40, 4], seed: 3)
        let empty = try scaledDotProductAttentionPartial(queries: queries, keys: keys, values: values, keyRange: 10..<10)
        XCTAssertEqual(empty.output.scalars, Array(repeating: 0, count: 8))
        XCTAssertEqual(empty.logsumexp.scalars, [-.infinity, -.infinity])
        // Top-left causal: keys past row 1 are hidden from both rows.
        let hidden = try scaledDotProductAttentionPartial(
            queries: queries, keys: keys, values: values, keyRange: 5..<40, mask: .causal(.topLeft))
        XCTAssertEqual(hidden.logsumexp.scalars, [-.infinity, -.infinity])
        let merged = try mergeAttentionPartials([
            try scaledDotProductAttentionPartial(queries: queries, keys: keys, values: values, keyRange: 0..<5, mask: .causal(.topLeft)),
            hidden, empty,
        ])
        let whole = try scaledDotProductAttentionWithLogsumexp(queries: queries, keys: keys, values: values, mask: .causal(.topLeft))
        assertBitIdentical(merged.output, whole.output)
        assertBitIdentical(merged.logsumexp, whole.logsumexp)
    }

    func testBadRangesAndPartialListsAreTypedErrors() throws {
        let queries = try Tensor<Float>.randomNormal([1, 2, 8], seed: 1)
        let keys = try Tensor<Float>.randomNormal([1, 40, 8], seed: 2)
        let values = try Tensor<Float>.randomNormal([1, 40, 4], seed: 3)
        XCTAssertThrowsError(try scaledDotProductAttentionPartial(queries: queries, keys: keys, values: values, keyRange: 30..<41)) {
            guard case let AttentionError.invalidValue(argument, _, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "keyRange")
        }
        XCTAssertThrowsError(try mergeAttentionPartials([])) {
            guard case let AttentionError.invalidValue(argument, _, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "partials")
        }
        let a = try scaledDotProductAttentionPartial(queries: queries, keys: keys, values: values)
        let other = try scaledDotProductAttentionPartial(
            queries: try Tensor<Float>.randomNormal([1, 3, 8], seed: 1), keys: keys, values: values)
        XCTAssertThrowsError(try mergeAttentionPartials([a, other])) {
            guard case AttentionError.invalidShape = $0 else { return XCTFail("\($0)") }
        }
        XCTAssertThrowsError(try AttentionPartial(output: a.output, logsumexp: other.logsumexp)) {
            guard case let AttentionError.invalidShape(argument, _, _) = $0 else { return XCTFail("\($0)") }
            XCTAssertEqual(argument, "logsumexp")
        }
        var call = StoredCall.random(queryHeads: 1, kvHeads: 1, queryLength: 1, keyLength: 8, headDim: 4,
                                     valueDim: 4, storage: .float32, seed: 1)
        call.threads = 1
        XCTAssertEqual(call.runPartial(3, 9).status, ATTN_ERROR_KEY_RANGE)
        XCTAssertEqual(call.runPartial(5, 4).status, ATTN_ERROR_KEY_RANGE)
    }
}
