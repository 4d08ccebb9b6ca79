import CAttention
import XCTest
@testable import Attention

/// Keys in panels of 64 keys × headDim (ATTN_KEY_LAYOUT_PANELS64, what `KVCache`
/// stores): the same bits as keys in rows and as panels of 16, on every kernel
/// path, storage and driver; for decode tiles (1–4 rows), stacked tiles of 5–8
/// rows (qk_panels four rows at a time), tiles of more rows (unpack_panels), GQA,
/// key lengths off a multiple of 64 (the last panel's unused slots hold NaN),
/// partial calls starting off a panel boundary (the scalar unpacking) and on
/// one; a gap between panels; and the validation of the panel stride.
final class KeyPanel64Tests: XCTestCase {
    /// The same call with keys in rows, in panels of 16 and in panels of 64.
    private func layouts(_ call: StoredCall) -> (rows: StoredCall, panels16: StoredCall, panels64: StoredCall) {
        var panels16 = call
        panels16.keyPanels = true
        panels16.panelWidth = 16
        var panels64 = panels16
        panels64.panelWidth = 64
        return (call, panels16, panels64)
    }

    func testPanelsOf64GiveTheBitsOfRowsAndOfPanelsOf16() {
        // (query heads, kv heads, query rows, keys): decode rows of one head and
        // of stacked heads (1–4 and 6, 8 rows), GQA, tiles of 12, 64 and 70 rows.
        let shapes = [(2, 2, 1, 1300), (1, 1, 4, 100), (2, 1, 3, 530), (8, 1, 1, 200), (4, 2, 12, 64),
                      (1, 1, 64, 150), (2, 2, 70, 75)]
        let variants: [(String, (inout StoredCall) -> Void)] = [
            ("no mask", { _ in }),
            ("causal, bottom right", { $0.causal = ATTN_CAUSAL_BOTTOM_RIGHT }),
            ("keep mask", { c in c.keep = (0..<(c.rows * c.keyLength)).map { $0 % 5 == 1 ? 0 : 1 } }),
            ("dropout 0.2", { c in c.dropout = 0.2; c.seed = 4 }),
        ]
        forEachKernelPath { path in
            for storage in [KernelKVStorage.float32, .float16, .bfloat16] {
                for (queryHeads, kvHeads, queryLength, keyLength) in shapes {
                    for (name, change) in variants {
                        var call = StoredCall.random(
                            batch: 2, queryHeads: queryHeads, kvHeads: kvHeads, queryLength: queryLength,
                            keyLength: keyLength, headDim: 40, valueDim: 24, storage: storage, seed: 12)
                        change(&call)
                        let configurations = [(Int32(1), AttentionThreading.Driver.openMP)] + availableDrivers.map { (Int32(3), $0) }
                        for (index, (threads, driver)) in configurations.enumerated() {
                            call.threads = threads
                            call.driver = driver
                            let (rows, panels16, panels64) = layouts(call)
                            let context = "\(path) \(storage) \(queryHeads)/\(kvHeads) heads \(queryLength)×\(keyLength) \(name) \(threads)t \(driver)"
                            let expected = rows.run(), sixteen = panels16.run(), result = panels64.run()
                            XCTAssertEqual(result.status, ATTN_OK, context)
                            XCTAssertEqual(expected.status, ATTN_OK, context)
                            assertBitIdentical(result.output, expected.output, "output vs rows, \(context)")
                            assertBitIdentical(result.logsumexp, expected.logsumexp, "logsumexp vs rows, \(context)")
                            assertBitIdentical(result.output, sixteen.output, "output vs panels of 16, \(context)")
                            assertBitIdentical(result.logsumexp, sixteen.logsumexp, "logsumexp vs panels of 16, \(context)")
                            guard index == 0 else { continue }
                            // Slices from off a panel boundary (inside a 16-key panel, then
                            // on one of 16 but not of 64: the scalar unpacking for 64) and
                            // from a 64-key boundary (the panel kernels mid-sequence).
                            for begin in [keyLength / 3 + 1, 80, 128] where begin < keyLength {
                                let slice = rows.runPartial(begin, keyLength), panelSlice = panels64.runPartial(begin, keyLength)
                                XCTAssertEqual(panelSlice.status, ATTN_OK, "slice from \(begin), \(context)")
                                assertBitIdentical(panelSlice.state.accumulator, slice.state.accumulator, "slice from \(begin), \(context)")
                                assertBitIdentical(panelSlice.state.rowMax, slice.state.rowMax, "slice max from \(begin), \(context)")
                                assertBitIdentical(panelSlice.state.rowSum, slice.state.rowSum, "slice sum from \(begin), \(context)")
                            }
                        }
                    }
                }
            }
        }
    }

    /// The panel stride is read, not assumed: panels further apart than 64·headDim
    /// (the gap full of NaN), for head dims with and without vector tails.
    func testPanelsOf64FurtherApartAndOtherHeadDims() {
        forEachKernelPath { path in
            for storage in [KernelKVStorage.float32, .bfloat16] {
                for headDim in [1, 16, 64, 130] {
                    for (queryLength, keyLength) in [(1, 200), (5, 129), (20, 64)] {
                        var call = StoredCall.random(
                            queryHeads: 2, kvHeads: 1, queryLength: queryLength, keyLength: keyLength,
                            headDim: headDim, valueDim: 8, storage: storage, seed: 5)
                        call.causal = ATTN_CAUSAL_BOTTOM_RIGHT
                        let rows = call
                        var panels64 = layouts(call).panels64
                        panels64.panelGap = 24
                        let context = "\(path) \(storage) d\(headDim) \(queryLength)×\(keyLength)"
                        let expected = rows.run(), result = panels64.run()
                        XCTAssertEqual(result.status, ATTN_OK, context)
                        assertBitIdentical(result.output, expected.output, "output, \(context)")
                        assertBitIdentical(result.logsumexp, expected.logsumexp, "logsumexp, \(context)")
                    }
                }
            }
        }
    }

    /// Through `ExternalKeyValues` (the problem's path for a cache's memory):
    /// panels of 64 give the bits of rows, and the oracle reads the same keys.
    func testTheSwiftExternalPathReadsPanelsOf64AsRows() throws {
        for storage in [KernelKVStorage.float32, .float16] {
            let queries = try Tensor<Float>.randomNormal([1, 4, 1, 32], seed: 1)
            var call = StoredCall.random(queryHeads: 4, kvHeads: 2, queryLength: 1, keyLength: 700, headDim: 32,
                                         valueDim: 16, storage: storage, seed: 2)
            let widened = call.widened
            let keys = Tensor(validShape: [1, 2, 700, 32], scalars: widened.key)
            let values = Tensor(validShape: [1, 2, 700, 16], scalars: widened.value)
            var problem = try AttentionProblem(queries: queries, keys: keys, values: values, mask: .causal(.bottomRight),
                                               scale: nil, dropoutProbability: 0, dropoutSeed: 0)
            call.keyPanels = true
            call.panelWidth = 64
            func bytes(_ rows: Bool) -> [UInt8] {
                if storage == .float32 {
                    return (rows ? call.key : call.panels(call.key, fill: 0)).withUnsafeBytes { Array($0) }
                }
                return (rows ? call.keyBits : call.panels(call.keyBits, fill: 0)).withUnsafeBytes { Array($0) }
            }
            let valueBytes = storage == .float32 ? call.value.withUnsafeBytes { Array($0) } : call.valueBits.withUnsafeBytes { Array($0) }
            let rowBytes = bytes(true), panelBytes = bytes(false)
            XCTAssertEqual(call.panelCount, 11)
            try rowBytes.withUnsafeBytes { rowBuffer in
                try panelBytes.withUnsafeBytes { panelBuffer in
                    try valueBytes.withUnsafeBytes { valueBuffer in
                        let valueStrides = [2 * 700 * 16, 700 * 16, 16, 1]
                        problem.externalKV = ExternalKeyValues(
                            storage: storage, keys: rowBuffer.baseAddress, keyStrides: [2 * 700 * 32, 700 * 32, 32, 1],
                            values: valueBuffer.baseAddress, valueStrides: valueStrides)
                        let rows = try problem.run(backend: .fused, layout: .headsMajor, threads: 2, wantLogsumexp: true)
                        let rowsOracle = try problem.run(backend: .reference, layout: .headsMajor, threads: 1, wantLogsumexp: true)
                        problem.externalKV = ExternalKeyValues(
                            storage: storage, keys: panelBuffer.baseAddress, keyStrides: [2 * 11 * 64 * 32, 11 * 64 * 32, 64 * 32, 1],
                            values: valueBuffer.baseAddress, valueStrides: valueStrides, keyPanels: true, keyPanelWidth: .sixtyFour)
                        XCTAssertEqual(problem.externalKV?.keyLayout, ATTN_KEY_LAYOUT_PANELS64)
                        for driver in availableDrivers {
                            KernelThreading.override = driver
                            defer { KernelThreading.override = nil }
                            let panels = try problem.run(backend: .fused, layout: .headsMajor, threads: 2, wantLogsumexp: true)
                            assertBitIdentical(panels.output, rows.output, "\(storage) \(driver)")
                            assertBitIdentical(panels.logsumexp ?? [], rows.logsumexp ?? [], "\(storage) \(driver)")
                        }
                        let panelOracle = try problem.run(backend: .reference, layout: .headsMajor, threads: 1, wantLogsumexp: true)
                        assertBitIdentical(panelOracle.output, rowsOracle.output, "\(storage): the oracle reads the same keys")
                    }
                }
            }
        }
    }

    /// The status of a forward call (and of a partial plan) on `call` after `change`.
    private func statuses(_ call: StoredCall, _ change: (inout attn_params) -> Void) -> [attn_status] {
        call.withParams(output: nil, logsumexp: nil) { params -> [attn_status] in
            change(&params)
            var output = [Float](repeating: 0, count: call.rows * call.valueDim)
            var state = [Float](repeating: 0, count: call.rows * (call.valueDim + 2))
            return output.withUnsafeMutableBufferPointer { out in
                state.withUnsafeMutableBufferPointer { s in
                    params.output = out.baseAddress
                    let forward = attn_sdpa_forward(&params)
                    var partial = attn_partial(row_max: s.baseAddress, row_sum: s.baseAddress! + call.rows,
                                               accumulator: s.baseAddress! + 2 * call.rows)
                    var plan: OpaquePointer?
                    let planned = attn_sdpa_partial_plan_create(&params, 0, Int64(call.keyLength), &partial, &plan)
                    if let plan { attn_plan_destroy(plan) }
                    return [forward, planned]
                }
            }
        }
    }

    func testAPanelStrideBelowSixtyFourKeysIsATypedError() {
        var call = StoredCall.random(queryHeads: 1, kvHeads: 1, queryLength: 1, keyLength: 70, headDim: 8,
                                     valueDim: 4, storage: .float32, seed: 1)
        call.keyPanels = true
        call.panelWidth = 64
        let ok = [ATTN_OK, ATTN_OK], refused = [ATTN_ERROR_KEY_LAYOUT, ATTN_ERROR_KEY_LAYOUT]
        XCTAssertEqual(statuses(call) { _ in }, ok, "a stride of 64·headDim")
        XCTAssertEqual(statuses(call) { $0.key_strides.2 = 64 * 8 - 1 }, refused, "one element short")
        // 16 keys' worth: enough for ATTN_KEY_LAYOUT_PANELS, not for PANELS64.
        XCTAssertEqual(statuses(call) { $0.key_strides.2 = 16 * 8 }, refused, "16·headDim with panels of 64")
        XCTAssertEqual(statuses(call) { $0.key_strides.2 = 16 * 8; $0.key_layout = ATTN_KEY_LAYOUT_PANELS }, ok,
                       "16·headDim with panels of 16")
        XCTAssertEqual(statuses(call) { $0.key_layout = attn_key_layout(rawValue: 3) }, refused, "an unknown layout")
        // 64·headDim overflows int64: refused, not wrapped into a small bound.
        XCTAssertEqual(statuses(call) { $0.head_dim = 1 << 58; $0.key_strides.2 = Int64.max }.first, ATTN_ERROR_KEY_LAYOUT)
        // The message names the argument and both bounds.
        let message = String(cString: attn_status_description(ATTN_ERROR_KEY_LAYOUT))
        for part in ["key_strides[2]", "16 * head_dim", "64 * head_dim"] {
            XCTAssertTrue(message.contains(part), "\(message) names \(part)")
        }
    }
}
