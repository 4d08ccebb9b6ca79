import CAttention
import XCTest
@testable import Attention

/// Keys and values stored as float16 or bfloat16: the kernel widens every
/// element exactly to float32 and computes in float32, so a call on 16-bit
/// storage has the bits of the same call on float32 storage holding the
/// widened values, on every micro-kernel path and with either driver.
final class KVStorageTests: XCTestCase {
    /// Every 16-bit pattern, as the values of one-key rows (softmax weight
    /// exactly 1): the output is each value widened, bit for bit (NaN: a NaN;
    /// −0 comes out +0, as 0 + 1·(−0) does in float32).
    func testEverySixteenBitPatternWidensExactlyOnEveryPath() {
        for storage in [KernelKVStorage.float16, .bfloat16] {
            forEachKernelPath { path in
                var call = StoredCall(queryHeads: 256, kvHeads: 256, queryLength: 1, keyLength: 1, headDim: 8,
                                      valueDim: 256, query: Array(repeating: 0, count: 256 * 8))
                call.storage = storage
                call.keyBits = Array(repeating: 0, count: 256 * 8)
                call.valueBits = (0..<65536).map { UInt16($0) }
                let result = call.run()
                XCTAssertEqual(result.status, ATTN_OK)
                for (bits, actual) in zip(call.valueBits, result.output) {
                    let expected = storage.widen(bits) + 0
                    if expected.isNaN {
                        XCTAssertTrue(actual.isNaN, "\(path) \(storage) 0x\(String(bits, radix: 16))")
                    } else if actual.bitPattern != expected.bitPattern {
                        XCTFail("\(path) \(storage) 0x\(String(bits, radix: 16)): \(actual) vs \(expected)")
                        return
                    }
                }
            }
        }
    }

    #if !(os(macOS) && arch(x86_64))
    /// The test's own widening (what the oracle reads) is Swift's Float16 → Float.
    func testFloat16WideningIsSwiftsConversion() {
        for bits in 0...UInt16.max {
            let expected = Float(Float16(bitPattern: bits))
            let actual = KernelKVStorage.float16.widen(bits)
            if expected.isNaN { XCTAssertTrue(actual.isNaN); continue }
            XCTAssertEqual(actual.bitPattern, expected.bitPattern, "0x\(String(bits, radix: 16))")
            if !expected.isNaN {
                XCTAssertEqual(KernelKVStorage.float16.narrow(expected), bits, "round trip 0x\(String(bits, radix: 16))")
            }
        }
        for value in normals(2000, seed: 5) + [65519, 65520, 1e-8, -3e-6, 0x1p-25, 0x1.8p-24] {
            XCTAssertEqual(KernelKVStorage.float16.narrow(value), Float16(value).bitPattern, "\(value)")
        }
    }
    #endif

    /// (query rows, keys, head dim, value dim): decode rows, split chunks,
    /// a full query tile, dims with vector tails.
    private let shapes = [(1, 1300, 64, 64), (3, 530, 40, 24), (64, 200, 72, 40), (70, 130, 16, 130)]

    private func variants() -> [(String, (inout StoredCall) -> Void)] {
        [
            ("no mask", { _ in }),
            ("causal, bottom right", { $0.causal = ATTN_CAUSAL_BOTTOM_RIGHT }),
            ("keep mask", { c in
                c.keep = (0..<(c.rows * c.keyLength)).map { $0 % 5 == 1 ? 0 : 1 }
            }),
            ("additive mask", { c in c.additive = (0..<(c.rows * c.keyLength)).map { Float($0 % 7) * 0.5 - 1.5 } }),
            ("dropout 0.2", { c in c.dropout = 0.2; c.seed = 99 }),
            ("NaN and ∞ values", { c in
                c.setValue((c.keyLength - 1) * c.valueDim + 3, .nan)
                c.setValue(min(100, c.keyLength - 1) * c.valueDim + 5, .infinity)
            }),
        ]
    }

    func testSixteenBitStorageGivesTheBitsOfFloat32StorageOfTheWidenedValuesOnEveryPathAndDriver() {
        forEachKernelPath { path in
            for storage in [KernelKVStorage.float16, .bfloat16] {
                for (queryLength, keyLength, headDim, valueDim) in shapes {
                    for (name, change) in variants() {
                        var call = StoredCall.random(
                            batch: 2, queryHeads: 2, kvHeads: 1, queryLength: queryLength, keyLength: keyLength,
                            headDim: headDim, valueDim: valueDim, storage: storage, seed: 11)
                        change(&call)
                        for (threads, driver) in [(Int32(1), AttentionThreading.Driver.openMP)]
                            + availableDrivers.map({ (Int32(3), $0) }) {
                            call.threads = threads
                            call.driver = driver
                            let stored = call.run(), wide = call.widened.run()
                            let context = "\(path) \(storage) \(queryLength)×\(keyLength)×\(headDim)×\(valueDim) \(name) \(threads)t \(driver)"
                            XCTAssertEqual(stored.status, ATTN_OK, context)
                            XCTAssertEqual(wide.status, ATTN_OK, context)
                            assertBitIdentical(stored.output, wide.output, "output, \(context)")
                            assertBitIdentical(stored.logsumexp, wide.logsumexp, "logsumexp, \(context)")
                        }
                    }
                }
            }
        }
    }

    /// Through the Swift path a cache uses (`ExternalKeyValues`): the fused
    /// kernel on 16-bit memory against the oracle reading the same widened values.
    func testSixteenBitStorageAgreesWithTheOracleOnTheWidenedValues() throws {
        for storage in [KernelKVStorage.float16, .bfloat16] {
            let queries = try Tensor<Float>.randomNormal([1, 4, 2, 48], seed: 1)
            let keyBits = normals(2 * 700 * 48, seed: 2).map(storage.narrow)
            let valueBits = normals(2 * 700 * 24, seed: 3).map(storage.narrow)
            let keys = Tensor(validShape: [1, 2, 700, 48], scalars: keyBits.map(storage.widen))
            let values = Tensor(validShape: [1, 2, 700, 24], scalars: valueBits.map(storage.widen))
            for mask: AttentionMask in [.none, .causal(.bottomRight)] {
                var problem = try AttentionProblem(
                    queries: queries, keys: keys, values: values, mask: mask, scale: nil,
                    dropoutProbability: 0, dropoutSeed: 0)
                let expected = try problem.run(backend: .reference, layout: .headsMajor, threads: 1, wantLogsumexp: true)
                problem.key = StridedOperand(storage: [], offset: 0, strides: [0, 0, 0, 1])
                problem.value = StridedOperand(storage: [], offset: 0, strides: [0, 0, 0, 1])
                try keyBits.withUnsafeBytes { k in
                    try valueBits.withUnsafeBytes { v in
                        problem.externalKV = ExternalKeyValues(
                            storage: storage, keys: k.baseAddress, keyStrides: [2 * 700 * 48, 700 * 48, 48, 1],
                            values: v.baseAddress, valueStrides: [2 * 700 * 24, 700 * 24, 24, 1])
                        let oracle = try problem.run(backend: .reference, layout: .headsMajor, threads: 1, wantLogsumexp: true)
                        assertBitIdentical(oracle.output, expected.output, "the oracle reads the widened values")
                        for driver in availableDrivers {
                            KernelThreading.override = driver
                            defer { KernelThreading.override = nil }
                            let fused = try problem.run(backend: .fused, layout: .headsMajor, threads: 2, wantLogsumexp: true)
                            let tolerance = Tolerance.outputBound(queries: queries, keys: keys, values: values,
                                                                  scale: 1 / Float(48).squareRoot())
                            assertClose(Tensor(validShape: [1, 4, 2, 24], scalars: fused.output),
                                        Tensor(validShape: [1, 4, 2, 24], scalars: expected.output),
                                        tolerance: tolerance, "\(storage) \(mask) \(driver)")
                        }
                    }
                }
            }
        }
    }

    func testAnUnknownStorageIsATypedError() {
        var call = StoredCall.random(queryHeads: 1, kvHeads: 1, queryLength: 1, keyLength: 8, headDim: 4,
                                     valueDim: 4, storage: .float32, seed: 1)
        call.threads = 1
        let status = call.withParams(output: nil, logsumexp: nil) { params -> attn_status in
            params.kv_storage = attn_storage(rawValue: 7)
            var output = [Float](repeating: 0, count: 4)
            return output.withUnsafeMutableBufferPointer { out in
                params.output = out.baseAddress
                return attn_sdpa_forward(&params)
            }
        }
        XCTAssertEqual(status, ATTN_ERROR_STORAGE)
    }

    /// Weights, scores and the backward read float32 keys and values in rows: a
    /// call with 16-bit storage or key panels (of 16 or 64) is refused, not read as float32 rows.
    func testWeightsScoresAndBackwardRefuse16BitStorageAndKeyPanels() {
        var call = StoredCall.random(queryHeads: 1, kvHeads: 1, queryLength: 2, keyLength: 16, headDim: 4,
                                     valueDim: 4, storage: .float16, seed: 2)
        call.threads = 1
        for (storage, layout, expected) in [(ATTN_STORAGE_F16, ATTN_KEY_LAYOUT_ROWS, ATTN_ERROR_STORAGE),
                                            (ATTN_STORAGE_BF16, ATTN_KEY_LAYOUT_ROWS, ATTN_ERROR_STORAGE),
                                            (ATTN_STORAGE_F32, ATTN_KEY_LAYOUT_PANELS, ATTN_ERROR_KEY_LAYOUT),
                                            (ATTN_STORAGE_F32, ATTN_KEY_LAYOUT_PANELS64, ATTN_ERROR_KEY_LAYOUT)] {
            let statuses = call.withParams(output: nil, logsumexp: nil) { params -> [attn_status] in
                params.kv_storage = storage
                params.key_layout = layout
                params.key_strides.2 = 16 * 4
                var cells = [Float](repeating: 0, count: 2 * 16), lse = [Float](repeating: 0, count: 2)
                var output = [Float](repeating: 0, count: 2 * 4), grads = [Float](repeating: 0, count: 3 * 16 * 4)
                return cells.withUnsafeMutableBufferPointer { cells in
                    lse.withUnsafeMutableBufferPointer { lse in
                        output.withUnsafeMutableBufferPointer { out in
                            grads.withUnsafeMutableBufferPointer { g in
                                params.output = out.baseAddress
                                params.logsumexp = lse.baseAddress
                                var backward = attn_backward_params()
                                backward.forward = params
                                backward.grad_output = UnsafePointer(out.baseAddress)
                                backward.grad_output_strides = (8, 8, 4, 1)
                                backward.grad_query = g.baseAddress
                                backward.grad_query_strides = (8, 8, 4, 1)
                                backward.grad_key = g.baseAddress! + 16 * 4
                                backward.grad_key_strides = (64, 64, 4, 1)
                                backward.grad_value = g.baseAddress! + 2 * 16 * 4
                                backward.grad_value_strides = (64, 64, 4, 1)
                                return [attn_sdpa_weights(&params, lse.baseAddress, cells.baseAddress),
                                        attn_sdpa_scores(&params, cells.baseAddress), attn_sdpa_backward(&backward)]
                            }
                        }
                    }
                }
            }
            XCTAssertEqual(statuses, [expected, expected, expected], "\(storage) \(layout)")
        }
    }
}

/// Keys in panels of 16 keys × headDim (ATTN_KEY_LAYOUT_PANELS, what a cache
/// may store for decoding): the same bits as keys in rows, on every path (the
/// paths without a panel micro-kernel unpack them), storage, driver, row count
/// (decode rows, stacked heads, full tiles) and mask; a partial slice that
/// starts inside a panel too.
final class KeyPanelTests: XCTestCase {
    func testKeysInPanelsGiveTheBitsOfKeysInRows() {
        // (query heads, kv heads, query rows, keys)
        let shapes = [(2, 2, 1, 1300), (2, 1, 3, 530), (8, 1, 1, 200), (1, 1, 64, 150), (2, 2, 70, 75)]
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
                            keyLength: keyLength, headDim: 40, valueDim: 24, storage: storage, seed: 8)
                        change(&call)
                        for (threads, driver) in [(Int32(1), AttentionThreading.Driver.openMP)]
                            + availableDrivers.map({ (Int32(3), $0) }) {
                            call.threads = threads
                            call.driver = driver
                            var panels = call
                            panels.keyPanels = true
                            let context = "\(path) \(storage) \(queryHeads)/\(kvHeads) heads \(queryLength)×\(keyLength) \(name) \(threads)t \(driver)"
                            let rows = call.run(), paneled = panels.run()
                            XCTAssertEqual(paneled.status, ATTN_OK, context)
                            assertBitIdentical(paneled.output, rows.output, "output, \(context)")
                            assertBitIdentical(paneled.logsumexp, rows.logsumexp, "logsumexp, \(context)")
                            let (begin, end) = (keyLength / 3 + 1, keyLength)  // not on a panel boundary
                            let slice = call.runPartial(begin, end).state, panelSlice = panels.runPartial(begin, end).state
                            assertBitIdentical(panelSlice.accumulator, slice.accumulator, "slice, \(context)")
                            assertBitIdentical(panelSlice.rowMax, slice.rowMax, "slice max, \(context)")
                        }
                    }
                }
            }
        }
    }

    /// Through `ExternalKeyValues` (the cache's path): panels give the bits of rows,
    /// and the oracle reads the same widened keys from either layout.
    func testTheSwiftCachePathReadsPanelsAsRows() throws {
        let storage = KernelKVStorage.float16
        let queries = try Tensor<Float>.randomNormal([1, 4, 1, 32], seed: 1)
        var call = StoredCall.random(queryHeads: 4, kvHeads: 2, queryLength: 1, keyLength: 700, headDim: 32,
                                     valueDim: 16, storage: storage, seed: 2)
        let keys = Tensor(validShape: [1, 2, 700, 32], scalars: call.keyBits.map(storage.widen))
        let values = Tensor(validShape: [1, 2, 700, 16], scalars: call.valueBits.map(storage.widen))
        var problem = try AttentionProblem(queries: queries, keys: keys, values: values, mask: .causal(.bottomRight),
                                           scale: nil, dropoutProbability: 0, dropoutSeed: 0)
        call.keyPanels = true
        let panelBits = call.panels(call.keyBits, fill: 0)
        try call.keyBits.withUnsafeBytes { rowBytes in
            try panelBits.withUnsafeBytes { panelBytes in
                try call.valueBits.withUnsafeBytes { valueBytes in
                    let valueStrides = [2 * 700 * 16, 700 * 16, 16, 1]
                    problem.externalKV = ExternalKeyValues(
                        storage: storage, keys: rowBytes.baseAddress, keyStrides: [2 * 700 * 32, 700 * 32, 32, 1],
                        values: valueBytes.baseAddress, valueStrides: valueStrides)
                    let rows = try problem.run(backend: .fused, layout: .headsMajor, threads: 2, wantLogsumexp: true)
                    let rowsOracle = try problem.run(backend: .reference, layout: .headsMajor, threads: 1, wantLogsumexp: true)
                    problem.externalKV = ExternalKeyValues(
                        storage: storage, keys: panelBytes.baseAddress, keyStrides: [2 * 44 * 16 * 32, 44 * 16 * 32, 16 * 32, 1],
                        values: valueBytes.baseAddress, valueStrides: valueStrides, keyPanels: true)
                    for driver in availableDrivers {
                        KernelThreading.override = driver
                        defer { KernelThreading.override = nil }
                        let panels = try problem.run(backend: .fused, layout: .headsMajor, threads: 2, wantLogsumexp: true)
                        assertBitIdentical(panels.output, rows.output, "\(driver)")
                        assertBitIdentical(panels.logsumexp ?? [], rows.logsumexp ?? [], "\(driver)")
                    }
                    let panelOracle = try problem.run(backend: .reference, layout: .headsMajor, threads: 1, wantLogsumexp: true)
                    assertBitIdentical(panelOracle.output, rowsOracle.output, "the oracle reads the same keys")
                }
            }
        }
    }

    func testAPanelStrideBelowSixteenKeysIsATypedError() {
        var call = StoredCall.random(queryHeads: 1, kvHeads: 1, queryLength: 1, keyLength: 20, headDim: 8,
                                     valueDim: 4, storage: .float32, seed: 1)
        call.keyPanels = true
        let status = call.withParams(output: nil, logsumexp: nil) { params -> attn_status in
            params.key_strides.2 = 8 * 15
            var output = [Float](repeating: 0, count: 4)
            return output.withUnsafeMutableBufferPointer { out in
                params.output = out.baseAddress
                return attn_sdpa_forward(&params)
            }
        }
        XCTAssertEqual(status, ATTN_ERROR_KEY_LAYOUT)
    }
}
