extension CausalSelfAttention {
    /// Causal self-attention of new tokens over a key/value cache: generation,
    /// one step at a time or a whole prompt at once.
    ///
    /// As ``MultiHeadAttention/callAsFunction(_:cache:newTokens:keyPadding:)``
    /// with one head: `input` is projected, its keys and values appended to
    /// `cache`, and new token `i` of `n` attends to the cached tokens and new
    /// tokens `0…i` (bottom-right causal). A row is bit for bit the same row of
    /// ``callAsFunction(_:)`` over the whole sequence (for a `.float32` cache;
    /// for a 16-bit one, of a forward whose keys and values were rounded the
    /// same way). No dropout in cached calls.
    ///
    /// - Parameters:
    ///   - input: `[batch, rows, dIn]` or `[rows, dIn]` (then the cache has batch 1).
    ///   - cache: keys `[batch, 1, capacity, dOut]` and values `[batch, 1, capacity, dOut]`; mutated.
    ///   - newTokens: per sequence, how many of `input`'s rows to append (`nil`: all).
    /// - Returns: `[batch, rows, dOut]` (or `[rows, dOut]`), zeros in rows past `newTokens[b]`.
    /// - Throws: `AttentionError.invalidShape` naming `input` or `cache`;
    ///   `AttentionError.invalidValue` naming `newTokens`, `threads` or
    ///   `isTraining` with dropout; `AttentionError.sequenceTooLong` (argument
    ///   `cache`) past `contextLength`;
    ///   ``KVCacheError/capacityExceeded(sequence:length:appending:capacity:)``.
    ///   On an error the cache is unchanged.
    public func callAsFunction(_ input: Tensor<Float>, cache: KVCache, newTokens: [Int]? = nil) throws -> Tensor<Float> {
        try checkNoDropoutWithCache(isTraining: isTraining, dropoutProbability: dropoutProbability)
        let sequence = try SequenceBatch(input, argument: "input", features: projections.query.inFeatures)
        let (merged, _) = try projections.attend(
            sequence, cache: cache, newTokens: newTokens, keyPaddingMask: nil,
            contextLength: contextLength, backend: backend, threads: threads)
        return sequence.restoringRank(merged)
    }
}
