extension MultiHeadAttention {
    /// Self-attention of new tokens over a key/value cache: generation, one
    /// step at a time or a whole prompt at once.
    ///
    /// `input` is projected; its keys and values are appended to `cache` (in
    /// place, rounded to the cache's storage type); the new queries attend to
    /// every cached key of their sequence, the new ones included, with
    /// bottom-right causal alignment (new token `i` of `n` sees the cached
    /// tokens and new tokens `0…i`); then the heads are merged and the output
    /// projection applied. Prefill (many new tokens) and decoding (one) are the
    /// same call, and a row's result is bit for bit the same row of one causal
    /// forward over the whole sequence (whose keys and values went through the
    /// same storage rounding), whichever way the tokens were split into calls,
    /// on every kernel path and thread count.
    ///
    /// Cached calls are causal whatever the layer's `causal` (a cache is for
    /// autoregressive decoding); there is no dropout in them.
    ///
    /// Ragged batches: sequence `b` appends only its first `newTokens[b]` rows of
    /// `input` (its other rows are ignored and give zeros), so prompts of
    /// different lengths prefill together and sequences of different lengths
    /// decode together; sequences whose lengths differ are attended one by one,
    /// each over its own length (no padding is computed).
    ///
    /// - Parameters:
    ///   - input: `[batch, rows, dIn]` or unbatched `[rows, dIn]` (then the cache
    ///     has batch 1); `rows` new tokens (1 when decoding).
    ///   - cache: keys `[batch, kvHeads, capacity, headDim]`, values with this
    ///     layer's `valueDim`; it is mutated (the new tokens are appended).
    ///   - newTokens: per sequence, how many of `input`'s rows to append, each in
    ///     `0...rows`; `nil` (default) = all of them.
    ///   - keyPadding: `[batch, longest]` with its polarity in the name
    ///     (``KeyPadding/padding(_:)``: true = padding, a key no query attends to,
    ///     e.g. a left-padded prompt's pad tokens; ``KeyPadding/keep(_:)``), over
    ///     the cached and new tokens; `longest` is the longest sequence after this call's
    ///     append; sequence `b` reads its first `cache.lengths[b]` entries.
    ///     Unbatched inputs pass `[1, longest]`.
    /// - Returns: `[batch, rows, dOut]` (or `[rows, dOut]`), zeros in the rows
    ///   past `newTokens[b]`.
    /// - Throws: `AttentionError.invalidShape` naming `input`, `cache` (batch,
    ///   kvHeads, headDim or valueDim that differ from the layer's) or
    ///   `keyPadding`; `AttentionError.invalidValue` naming `newTokens`,
    ///   `threads`, or `isTraining` with a dropout probability;
    ///   `AttentionError.sequenceTooLong` (argument `cache`) past `contextLength`;
    ///   ``KVCacheError/capacityExceeded(sequence:length:appending:capacity:)``.
    ///   On an error the cache is unchanged.
    public func callAsFunction(
        _ input: Tensor<Float>, cache: KVCache, newTokens: [Int]? = nil, keyPadding: KeyPadding? = nil
    ) throws -> Tensor<Float> {
        let keyPaddingMask = keyPadding.map { $0.keepFlags.map { !$0 } }
        try checkNoDropoutWithCache(isTraining: isTraining, dropoutProbability: dropoutProbability)
        let sequence = try SequenceBatch(input, argument: "input", features: projections.query.inFeatures)
        guard projections.key.inFeatures == projections.query.inFeatures, projections.value.inFeatures == projections.query.inFeatures else {
            throw AttentionError.invalidShape(
                argument: "input", expected: "self-attention: key and value projections that read the query's \(projections.query.inFeatures) features",
                actual: [projections.query.inFeatures, projections.key.inFeatures, projections.value.inFeatures])
        }
        var (merged, counts) = try projections.attend(
            sequence, cache: cache, newTokens: newTokens, keyPaddingMask: keyPaddingMask,
            contextLength: contextLength, backend: backend, threads: threads)
        if let outputProjection { merged = zeroRows(pastCounts: counts, of: try outputProjection(merged, threads: threads)) }
        return sequence.restoringRank(merged)
    }
}
