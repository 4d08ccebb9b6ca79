import CAttention

/// One step of a layer over a ``KVCache``: project the new tokens, append their
/// keys and values to the cache, and let the new queries attend to every cached
/// key (bottom-right causal). Shared by `MultiHeadAttention` and
/// `CausalSelfAttention`.
///
/// Bits: the kernel's result for a row does not depend on the batch, the
/// number of query rows in the call, the operands' strides or the thread count,
/// and `Linear`'s row does not depend on the other rows; so a row computed here
/// equals the same row of one causal forward over the whole sequence whose keys
/// and values went through the same storage rounding.
extension QKVProjections {
    /// - Parameters:
    ///   - input: `[batch, rows, features]`; sequence `b` appends its first
    ///     `newTokens[b]` rows (all `rows` when `newTokens` is nil).
    ///   - keyPaddingMask: `[batch, longest]`, `true` = padding, over the cached
    ///     and new tokens (`longest` = the longest sequence after appending); a
    ///     sequence reads its own length of it.
    /// - Returns: `[batch, rows, heads · valueDim]`, zeros in rows past `newTokens[b]`.
    func attend(
        _ input: SequenceBatch, cache: KVCache, newTokens: [Int]?, keyPaddingMask: Tensor<Bool>?,
        contextLength: Int?, backend: AttentionBackend, threads: Int?
    ) throws -> (merged: Tensor<Float>, counts: [Int]) {
        let (batch, rows) = (input.batch, input.length)
        let valueDim = value.outFeatures / kvHeads
        guard cache.batch == batch, cache.kvHeads == kvHeads, cache.headDim == headDim, cache.valueDim == valueDim else {
            throw AttentionError.invalidShape(
                argument: "cache",
                expected: "[batch \(batch), kvHeads \(kvHeads), capacity, headDim \(headDim)] keys and valueDim \(valueDim) (the input's batch, the layer's heads)",
                actual: [cache.batch, cache.kvHeads, cache.capacity, cache.headDim, cache.valueDim])
        }
        let counts = newTokens ?? Array(repeating: rows, count: batch)
        guard counts.count == batch, counts.allSatisfy({ (0...rows).contains($0) }) else {
            throw AttentionError.invalidValue(
                argument: "newTokens", expected: "\(batch) counts (one per sequence) in 0...\(rows) (the input's rows)",
                actual: "\(counts)")
        }
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let queries = try query(input.tensor, argument: "input", threads: threads)  // [batch, rows, heads · headDim]
        let keys = try key(input.tensor, argument: "input", threads: threads)      // [batch, rows, kvHeads · headDim]
        let values = try value(input.tensor, argument: "input", threads: threads)  // [batch, rows, kvHeads · valueDim]
        let scale = try AttentionProblem.resolveScale(nil, headDim: headDim)
        var output = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: [batch, rows, heads * valueDim], argument: "input"))

        try cache.locked {
            let before = cache.lengthsLocked
            try cache.checkCapacityLocked(appending: counts)
            let after = zip(before, counts).map { $0 + $1 }
            let longest = after.max() ?? 0
            if let contextLength, longest > contextLength {
                throw AttentionError.sequenceTooLong(argument: "cache", contextLength: contextLength, actual: longest)
            }
            if let keyPaddingMask, keyPaddingMask.shape != [batch, longest] {
                throw AttentionError.invalidShape(
                    argument: "keyPadding",
                    expected: "[\(batch), \(longest)] (batch, cached + new tokens of the longest sequence)",
                    actual: keyPaddingMask.shape)
            }
            keys.withUnsafeBufferPointer { k in
                values.withUnsafeBufferPointer { v in
                    cache.appendLocked(
                        keys: k.baseAddress, keyStrides: (rows * kvHeads * headDim, headDim, kvHeads * headDim),
                        values: v.baseAddress, valueStrides: (rows * kvHeads * valueDim, valueDim, kvHeads * valueDim),
                        counts: counts, sequences: 0..<batch)
                }
            }
            do {
                let step = CachedStep(
                    batch: batch, rows: rows, heads: heads, kvHeads: kvHeads, headDim: headDim, valueDim: valueDim,
                    scale: scale, queries: queries, keepFlags: keyPaddingMask.map { $0.scalars.map { !$0 } }, longest: longest)
                // Sequences with the same lengths run in one call; ragged ones one by one.
                let uniform = Set(counts).count == 1 && Set(after).count == 1
                let groups: [Range<Int>] = uniform ? [0..<batch] : (0..<batch).map { $0..<($0 + 1) }
                for group in groups where counts[group.lowerBound] > 0 {
                    let (queryLength, keyLength) = (counts[group.lowerBound], after[group.lowerBound])
                    try cache.withStoredOperandsLocked(sequences: group) { k, kStrides, v, vStrides in
                        try output.withUnsafeMutableBufferPointer { out in
                            try step.run(
                                sequences: group, queryLength: queryLength, keyLength: keyLength,
                                keys: k, keyStrides: kStrides, values: v, valueStrides: vStrides, cache: cache,
                                output: out.baseAddress!, backend: backend, threads: threads)
                        }
                    }
                }
            } catch {
                cache.lengthsLocked = before  // the step failed: forget its tokens
                throw error
            }
        }
        return (Tensor(validShape: [batch, rows, heads * valueDim], scalars: output), counts)
    }
}

/// The attention of one cached step, for a group of sequences with the same
/// query and key lengths.
private struct CachedStep {
    let batch, rows, heads, kvHeads, headDim, valueDim: Int
    let scale: Float
    /// `[batch, rows, heads · headDim]`.
    let queries: Tensor<Float>
    /// Keep flags `[batch, longest]` (`false` = padding), or nil.
    let keepFlags: [Bool]?
    let longest: Int

    /// Writes rows `0..<queryLength` of `sequences` into `output [batch, rows, heads · valueDim]`.
    func run(
        sequences: Range<Int>, queryLength: Int, keyLength: Int,
        keys: UnsafeRawPointer, keyStrides: [Int], values: UnsafeRawPointer, valueStrides: [Int], cache: KVCache,
        output: UnsafeMutablePointer<Float>, backend: AttentionBackend, threads: Int?
    ) throws {
        let queryStrides = [rows * heads * headDim, headDim, heads * headDim, 1]
        let outputStrides = [rows * heads * valueDim, valueDim, heads * valueDim, 1]
        let first = sequences.lowerBound
        switch backend {
        case .fused:
            var params = attn_params()
            params.batch = Int64(sequences.count)
            params.query_heads = Int64(heads)
            params.kv_heads = Int64(kvHeads)
            params.query_length = Int64(queryLength)
            params.key_length = Int64(keyLength)
            params.head_dim = Int64(headDim)
            params.value_dim = Int64(valueDim)
            params.query_strides = Self.tuple(queryStrides)
            params.key_strides = Self.tuple(keyStrides)
            params.value_strides = Self.tuple(valueStrides)
            params.output_strides = Self.tuple(outputStrides)
            params.output = output + first * outputStrides[0]
            // 16-bit storage: the kernel reads the UInt16 elements through these
            // pointers (strides in elements) and widens them exactly to float32.
            params.key = keys.assumingMemoryBound(to: Float.self)
            params.key_layout = KVCache.keyLayout  // the cache's 64-key panels (ATTN_KEY_LAYOUT_PANELS64)
            params.value = values.assumingMemoryBound(to: Float.self)
            switch cache.storage {
            case .float32: params.kv_storage = ATTN_STORAGE_F32
            case .float16: params.kv_storage = ATTN_STORAGE_F16
            case .bfloat16: params.kv_storage = ATTN_STORAGE_BF16
            }
            params.scale = scale
            params.causal = ATTN_CAUSAL_BOTTOM_RIGHT
            params.mask_kind = ATTN_MASK_NONE
            params.dropout_p = 0
            let status: attn_status = queries.withUnsafeBufferPointer { q in
                params.query = q.baseAddress.map { UnsafePointer($0 + first * queryStrides[0]) }
                guard let keepFlags else { return KernelThreading.run(&params, threads: threads) }
                return keepFlags.withUnsafeBytes { bytes in
                    // Swift's Bool is one byte holding 0 or 1, the kernel's uint8 flags.
                    params.key_padding_keep = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self).advanced(by: first * longest)
                    params.key_padding_strides = (Int64(longest), 1)
                    return KernelThreading.run(&params, threads: threads)
                }
            }
            guard status == ATTN_OK else {
                throw AttentionError.kernelFailure(code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
            }
        case .reference:
            // The oracle takes tensors: copy this group's operands out (slow, for checking).
            let count = sequences.count
            func gather(_ element: (Int) -> Float, _ strides: [Int], heads: Int, length: Int, dim: Int) -> Tensor<Float> {
                var scalars: [Float] = []
                scalars.reserveCapacity(count * heads * length * dim)
                for b in 0..<count { for h in 0..<heads { for t in 0..<length { for d in 0..<dim {
                    scalars.append(element(b * strides[0] + h * strides[1] + t * strides[2] + d * strides[3]))
                } } } }
                return Tensor(validShape: [count, heads, length, dim], scalars: scalars)
            }
            let q = gather({ queries.scalars[first * queryStrides[0] + $0] }, queryStrides, heads: heads, length: queryLength, dim: headDim)
            let keys = cache.keysLocked(sequences: sequences, length: keyLength)
            let values = cache.valuesLocked(sequences: sequences, length: keyLength)
            var problem = try AttentionProblem(
                queries: q, keys: keys, values: values,
                mask: .causal(.bottomRight), scale: scale, dropoutProbability: 0, dropoutSeed: 0)
            if let keepFlags {
                var padding: [Bool] = []
                for b in sequences { padding += keepFlags[(b * longest)..<(b * longest + keyLength)].map { !$0 } }
                try problem.hideKeys(.padding(Tensor(validShape: [count, keyLength], scalars: padding)), argument: "keyPadding")
            }
            let result = try problem.run(backend: .reference, layout: .sequenceMajor, threads: threads, wantLogsumexp: false)
            let rowWidth = heads * valueDim
            for b in 0..<count {
                for i in 0..<queryLength {
                    let source = (b * queryLength + i) * rowWidth
                    let target = (first + b) * outputStrides[0] + i * rowWidth
                    for j in 0..<rowWidth { output[target + j] = result.output[source + j] }
                }
            }
        }
    }

    private static func tuple(_ strides: [Int]) -> (Int64, Int64, Int64, Int64) {
        (Int64(strides[0]), Int64(strides[1]), Int64(strides[2]), Int64(strides[3]))
    }
}

/// Zeros rows `counts[b]…` of `merged [batch, rows, width]` (the rows a ragged
/// step did not append), after an output projection put its bias there.
func zeroRows(pastCounts counts: [Int], of merged: Tensor<Float>) -> Tensor<Float> {
    let (rows, width) = (merged.shape[1], merged.shape[2])
    guard counts.contains(where: { $0 < rows }) else { return merged }
    var result = merged
    result.withUnsafeMutableBufferPointer { buffer in
        for (b, count) in counts.enumerated() {
            for i in count..<rows { for j in 0..<width { buffer[(b * rows + i) * width + j] = 0 } }
        }
    }
    return result
}

/// Throws if a layer in training mode with dropout is asked to decode: the
/// dropout cells of a step would not be those of a full forward.
func checkNoDropoutWithCache(isTraining: Bool, dropoutProbability: Float) throws {
    if isTraining && dropoutProbability > 0 {
        throw AttentionError.invalidValue(
            argument: "isTraining",
            expected: "false with a cache (decoding is inference; dropout is not applied to cached steps)",
            actual: "true with dropoutProbability \(dropoutProbability)")
    }
}
