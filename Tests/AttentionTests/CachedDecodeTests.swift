import XCTest
@testable import Attention

/// Decoding with a `KVCache`: a row computed by prefill and decode steps over
/// the cache is bit for bit the same row of one causal forward over the whole
/// sequence with keys and values stored the same way — on every kernel path,
/// under both threading drivers, with grouped-query heads, output projection,
/// ragged batches and key padding.
final class CachedDecodeTests: XCTestCase {
    override func tearDown() {
        KernelThreading.override = nil
    }

    private var drivers: [AttentionThreading.Driver] {
        AttentionThreading.isOpenMPAvailable ? [.openMP, .dispatch] : [.dispatch]
    }

    /// 530 tokens as calls: prefill chunks, then single tokens across the
    /// 512-key chunk (where a decode row's keys split, FlashDecoding), then a chunk.
    private let steps = [5, 1, 1, 60, 1, 440, 1, 1, 1, 1, 1, 1, 1, 15]

    // MARK: Helpers

    /// Rows `range` of `[batch, length, features]`.
    private func rows(_ tensor: Tensor<Float>, _ range: Range<Int>) -> Tensor<Float> {
        let (batch, length, features) = (tensor.shape[0], tensor.shape[1], tensor.shape[2])
        var scalars: [Float] = []
        for b in 0..<batch { scalars += tensor.scalars[((b * length + range.lowerBound) * features)..<((b * length + range.upperBound) * features)] }
        return Tensor(validShape: [batch, range.count, features], scalars: scalars)
    }

    /// `[batch, length, heads · dim]` ↔ `[batch, heads, length, dim]`.
    private func splitHeads(_ tensor: Tensor<Float>, heads: Int) -> Tensor<Float> {
        let (batch, length, dim) = (tensor.shape[0], tensor.shape[1], tensor.shape[2] / heads)
        var out = [Float](repeating: 0, count: tensor.count)
        for b in 0..<batch { for t in 0..<length { for h in 0..<heads { for d in 0..<dim {
            out[((b * heads + h) * length + t) * dim + d] = tensor.scalars[((b * length + t) * heads + h) * dim + d]
        } } } }
        return Tensor(validShape: [batch, heads, length, dim], scalars: out)
    }

    private func mergeHeads(_ tensor: Tensor<Float>) -> Tensor<Float> {
        let (batch, heads, length, dim) = (tensor.shape[0], tensor.shape[1], tensor.shape[2], tensor.shape[3])
        var out = [Float](repeating: 0, count: tensor.count)
        for b in 0..<batch { for h in 0..<heads { for t in 0..<length { for d in 0..<dim {
            out[((b * length + t) * heads + h) * dim + d] = tensor.scalars[((b * heads + h) * length + t) * dim + d]
        } } } }
        return Tensor(validShape: [batch, length, heads * dim], scalars: out)
    }

    /// One causal forward over all of `input [batch, length, dIn]` with keys
    /// and values rounded as `storage` stores them, through the public functional API.
    private func fullForward(
        query: Linear, key: Linear, value: Linear, output: Linear?, heads: Int, kvHeads: Int,
        _ input: Tensor<Float>, storage: KVCacheStorage
    ) throws -> Tensor<Float> {
        let q = splitHeads(try query(input, threads: 1), heads: heads)
        let k = splitHeads(try key(input, threads: 1).map(storage.rounded), heads: kvHeads)
        let v = splitHeads(try value(input, threads: 1).map(storage.rounded), heads: kvHeads)
        let merged = mergeHeads(try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .causal(.topLeft), threads: 1))
        return try output.map { try $0(merged, threads: 1) } ?? merged
    }

    /// Runs `input [batch, length, dIn]` through `layer` over a fresh cache in
    /// calls of `steps` tokens and concatenates the outputs.
    private func decode(
        _ input: Tensor<Float>, steps: [Int], cache: KVCache, _ layer: (Tensor<Float>, KVCache) throws -> Tensor<Float>
    ) throws -> Tensor<Float> {
        let (batch, length) = (input.shape[0], input.shape[1])
        var pieces: [Tensor<Float>] = []
        var start = 0
        for count in steps {
            pieces.append(try layer(rows(input, start..<(start + count)), cache))
            start += count
        }
        XCTAssertEqual(start, length)
        XCTAssertEqual(cache.lengths, Array(repeating: length, count: batch))
        let width = pieces[0].shape[2]
        var scalars: [Float] = []
        for b in 0..<batch { for piece in pieces { scalars += piece.scalars[(b * piece.shape[1] * width)..<((b + 1) * piece.shape[1] * width)] } }
        return Tensor(validShape: [batch, length, width], scalars: scalars)
    }

    private func assertBitwiseEqual(_ actual: Tensor<Float>, _ expected: Tensor<Float>, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(actual.shape, expected.shape, message, file: file, line: line)
        guard actual.shape == expected.shape else { return }
        if let index = actual.scalars.indices.first(where: { actual.scalars[$0].bitPattern != expected.scalars[$0].bitPattern }) {
            XCTFail("\(message): element \(index) of \(actual.shape): \(actual.scalars[index]) vs \(expected.scalars[index])", file: file, line: line)
        }
    }

    // MARK: Bitwise equality with the full forward

    func testMultiHeadAttentionDecodesTheRowsOfItsFullForwardBitForBit() throws {
        let input = try Tensor<Float>.randomNormal([2, 530, 16], seed: 901)
        for (heads, kvHeads, dOut) in [(4, 4, 32), (6, 2, 24), (4, 1, 16)] {
            var layer = try MultiHeadAttention(dIn: 16, dOut: dOut, heads: heads, kvHeads: kvHeads, causal: .topLeft, qkvBias: true, seed: 17)
            layer.threads = 2  // two workers: split-KV for the decode rows past 512 keys
            var full = layer
            full.threads = 1
            let headDim = dOut / heads
            for storage in KVCacheStorage.allCases {
                try forEachKernelPath { path in
                    // Each path has its own bits: the full forward runs on the same path.
                    let expected = try fullForward(
                        query: layer.query, key: layer.key, value: layer.value, output: layer.outputProjection,
                        heads: heads, kvHeads: kvHeads, input, storage: storage)
                    if storage == .float32 { assertBitwiseEqual(try full(input), expected, "layer's own forward vs the functional one, \(path)") }
                    for driver in drivers where storage != .bfloat16 || driver == drivers[0] {
                        KernelThreading.override = driver
                        let cache = try KVCache(batch: 2, kvHeads: kvHeads, headDim: headDim, capacity: 530, storage: storage)
                        let decoded = try decode(input, steps: steps, cache: cache) { try layer($0, cache: $1) }
                        assertBitwiseEqual(decoded, expected, "\(heads)/\(kvHeads) heads, \(storage), \(path), \(driver)")
                    }
                }
            }
        }
    }

    func testCausalSelfAttentionDecodesTheRowsOfItsFullForwardBitForBit() throws {
        let input = try Tensor<Float>.randomNormal([1, 530, 12], seed: 902)
        var layer = try CausalSelfAttention(dIn: 12, dOut: 8, contextLength: 600, qkvBias: true, seed: 5)
        layer.threads = 2
        var full = layer
        full.threads = 1
        for storage in [KVCacheStorage.float32, .float16] {
            try forEachKernelPath { path in
                let expected = storage == .float32 ? try full(input) : try fullForward(
                    query: layer.query, key: layer.key, value: layer.value, output: nil, heads: 1, kvHeads: 1, input, storage: storage)
                for driver in drivers {
                    KernelThreading.override = driver
                    let cache = try KVCache(batch: 1, kvHeads: 1, headDim: 8, capacity: 600, storage: storage)
                    let decoded = try decode(input, steps: steps, cache: cache) { try layer($0, cache: $1) }
                    assertBitwiseEqual(decoded, expected, "\(storage), \(path), \(driver)")
                }
            }
        }
    }

    func testReferenceBackendDecodesTheRowsOfItsFullForward() throws {
        let input = try Tensor<Float>.randomNormal([2, 20, 8], seed: 903)
        var layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, kvHeads: 1, causal: .topLeft, seed: 3)
        layer.backend = .reference
        let cache = try KVCache(batch: 2, kvHeads: 1, headDim: 4, capacity: 20)
        let decoded = try decode(input, steps: [7, 1, 1, 11], cache: cache) { try layer($0, cache: $1) }
        assertBitwiseEqual(decoded, try layer(input), "reference backend")
        var fused = layer
        fused.backend = .fused
        XCTAssertLessThan(decoded.maxAbsoluteDifference(to: try fused(input))!, 1e-5)
    }

    // MARK: Ragged batches, padding, shapes

    func testRaggedBatchAttendsEachSequenceOverItsOwnLength() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 12, heads: 3, causal: .topLeft, seed: 8)
        let prompts = [5, 9, 2]
        let totals = [9, 12, 7]  // prompt + decoded tokens of each sequence
        let tokens = try (0..<3).map { try Tensor<Float>.randomNormal([1, totals[$0], 8], seed: 910 + UInt64($0)) }
        let cache = try KVCache(batch: 3, kvHeads: 3, headDim: 4, capacity: 16, storage: .float16)
        // Each call: sequence b appends rows 0..<counts[b] of its slice of the input.
        var produced: [[Float]] = [[], [], []]
        var next = [0, 0, 0]
        func step(_ counts: [Int]) throws {
            let width = counts.max()!
            var scalars: [Float] = []
            for b in 0..<3 {
                for i in 0..<width {
                    let t = min(next[b] + i, totals[b] - 1)
                    scalars += tokens[b].scalars[(t * 8)..<((t + 1) * 8)]
                }
            }
            let out = try layer(Tensor(validShape: [3, width, 8], scalars: scalars), cache: cache, newTokens: counts)
            XCTAssertEqual(out.shape, [3, width, 12])
            for b in 0..<3 {
                produced[b] += out.scalars[(b * width * 12)..<((b * width + counts[b]) * 12)]
                XCTAssertTrue(out.scalars[((b * width + counts[b]) * 12)..<((b + 1) * width * 12)].allSatisfy { $0 == 0 }, "rows past newTokens are zeros")
                next[b] += counts[b]
            }
        }
        try step(prompts)
        XCTAssertEqual(cache.lengths, prompts)
        for _ in 0..<2 { try step([1, 1, 1]) }
        try step([2, 0, 3])
        try step([0, 1, 0])
        XCTAssertEqual(cache.lengths, totals)
        for b in 0..<3 {
            let expected = try fullForward(
                query: layer.query, key: layer.key, value: layer.value, output: layer.outputProjection,
                heads: 3, kvHeads: 3, tokens[b], storage: .float16)
            assertBitwiseEqual(Tensor(validShape: [1, totals[b], 12], scalars: produced[b]), expected, "sequence \(b)")
        }
    }

    func testKeyPaddingOverTheCacheMatchesTheFullForwardWithPadding() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, seed: 9)
        let input = try Tensor<Float>.randomNormal([2, 12, 8], seed: 920)
        // Sequence 1 is left-padded by 3 tokens.
        let padding = Tensor<Bool>(validShape: [2, 12], scalars: Array(repeating: false, count: 12) + [true, true, true] + Array(repeating: false, count: 9))
        let expected = try layer(query: input, key: input, value: input, keyPaddingMask: padding)
        for driver in drivers {
            KernelThreading.override = driver
            let cache = try KVCache(batch: 2, kvHeads: 2, headDim: 4, capacity: 12)
            var start = 0
            var pieces: [Tensor<Float>] = []
            for count in [8, 1, 1, 2] {
                let end = start + count
                let mask = Tensor<Bool>(validShape: [2, end], scalars: (0..<2).flatMap { b in padding.scalars[(b * 12)..<(b * 12 + end)] })
                pieces.append(try layer(rows(input, start..<end), cache: cache, keyPadding: .padding(mask)))
                start = end
            }
            var scalars: [Float] = []
            for b in 0..<2 { for piece in pieces { scalars += piece.scalars[(b * piece.shape[1] * 8)..<((b + 1) * piece.shape[1] * 8)] } }
            assertBitwiseEqual(Tensor(validShape: [2, 12, 8], scalars: scalars), expected, "\(driver)")
        }
    }

    func testUnbatchedInputDecodesWithABatchOfOneCache() throws {
        let layer = try MultiHeadAttention(dIn: 6, dOut: 6, heads: 3, seed: 2)
        let cache = try KVCache(batch: 1, kvHeads: 3, headDim: 2, capacity: 4)
        XCTAssertEqual(try layer(try Tensor<Float>.randomNormal([3, 6], seed: 1), cache: cache).shape, [3, 6])
        XCTAssertEqual(try layer(try Tensor<Float>.randomNormal([1, 6], seed: 2), cache: cache).shape, [1, 6])
        XCTAssertEqual(cache.lengths, [4])
        XCTAssertEqual(try cache.keys().shape, [1, 3, 4, 2])
    }

    // MARK: Errors

    func testBadCachesAndArgumentsThrowAndLeaveTheCacheUnchanged() throws {
        var layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 4, kvHeads: 2, contextLength: 6, dropoutProbability: 0.1, seed: 1)
        let input = try Tensor<Float>.randomNormal([2, 3, 8], seed: 1)
        let cache = try KVCache(batch: 2, kvHeads: 2, headDim: 2, capacity: 8)
        _ = try layer(input, cache: cache)
        let keys = try cache.keys()
        for wrong in [try KVCache(batch: 1, kvHeads: 2, headDim: 2, capacity: 8), try KVCache(batch: 2, kvHeads: 4, headDim: 2, capacity: 8),
                      try KVCache(batch: 2, kvHeads: 2, headDim: 4, capacity: 8), try KVCache(batch: 2, kvHeads: 2, headDim: 2, valueDim: 3, capacity: 8)] {
            assertThrowsInvalidShape(argument: "cache", actual: [wrong.batch, wrong.kvHeads, 8, wrong.headDim, wrong.valueDim], try layer(input, cache: wrong))
        }
        assertThrows(.sequenceTooLong(argument: "cache", contextLength: 6, actual: 7), try layer(try Tensor<Float>.randomNormal([2, 4, 8], seed: 2), cache: cache, newTokens: [1, 4]))
        assertThrowsInvalidValue(argument: "newTokens", actual: "[1]", try layer(input, cache: cache, newTokens: [1]))
        assertThrowsInvalidValue(argument: "newTokens", actual: "[4, 0]", try layer(input, cache: cache, newTokens: [4, 0]))
        assertThrowsInvalidShape(argument: "keyPadding", actual: [2, 5], try layer(rows(input, 0..<1), cache: cache, keyPadding: .padding(Tensor(shape: [2, 5], repeating: false))))
        assertThrowsInvalidShape(argument: "input", actual: [2, 1, 7], try layer(Tensor.zeros([2, 1, 7]), cache: cache))
        layer.isTraining = true
        assertThrowsInvalidValue(argument: "isTraining", actual: "true with dropoutProbability 0.1", try layer(rows(input, 0..<1), cache: cache))
        layer.isTraining = false
        layer.threads = 0
        assertThrowsInvalidValue(argument: "threads", actual: "0", try layer(rows(input, 0..<1), cache: cache))
        layer.threads = nil
        XCTAssertEqual(cache.lengths, [3, 3], "no failed call appended anything")
        let unlimited = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 4, kvHeads: 2, seed: 1)
        let small = try KVCache(batch: 2, kvHeads: 2, headDim: 2, capacity: 4)
        _ = try unlimited(input, cache: small)
        XCTAssertThrowsError(try unlimited(input, cache: small, newTokens: [1, 2])) { error in
            XCTAssertEqual(error as? KVCacheError, .capacityExceeded(sequence: 1, length: 3, appending: 2, capacity: 4))
        }
        XCTAssertEqual(small.lengths, [3, 3])
        XCTAssertEqual(try cache.keys(), keys)
        let cross = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 4, kvHeads: 2, keyFeatures: 5, seed: 1)
        assertThrowsInvalidShape(argument: "input", actual: [8, 5, 8], try cross(input, cache: cache))
        let causal = try CausalSelfAttention(dIn: 8, dOut: 2, contextLength: 4)
        let causalCache = try KVCache(batch: 2, kvHeads: 1, headDim: 2, capacity: 6)
        _ = try causal(input, cache: causalCache)
        assertThrows(.sequenceTooLong(argument: "cache", contextLength: 4, actual: 6), try causal(input, cache: causalCache))
        XCTAssertEqual(causalCache.lengths, [3, 3])
    }
}
