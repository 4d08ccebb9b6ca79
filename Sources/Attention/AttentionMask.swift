/// Where the diagonal of a causal mask sits when `queryLength != keyLength`.
public enum CausalAlignment: Sendable, Equatable {
    /// Query `i` sees keys `j <= i`: PyTorch's `is_causal=True`
    /// (`torch.ones(L, S).tril(diagonal=0)`).
    case topLeft
    /// Query `i` sees keys `j <= i + keyLength - queryLength`: the last query is
    /// aligned with the last key, as when decoding against a key/value cache
    /// (PyTorch's `causal_lower_right`).
    case bottomRight
}

/// Which query/key pairs take part in attention, following PyTorch's
/// `scaled_dot_product_attention(attn_mask:is_causal:)`.
///
/// Explicit masks broadcast to `[batch, heads, queryLength, keyLength]`: they
/// are aligned on the right, and a dimension of size 1 (or a missing leading
/// one) repeats; any other mismatch throws `AttentionError.invalidShape`, never
/// a silent broadcast. `heads` here are the query heads.
public enum AttentionMask: Sendable {
    /// Every query attends to every key.
    case none
    /// A causal (lower-triangular) mask with the given alignment.
    case causal(CausalAlignment)
    /// A boolean mask, `true` = the query attends to the key (PyTorch's boolean
    /// `attn_mask` polarity).
    case keep(Tensor<Bool>)
    /// A float mask added to the scaled logits; `-infinity` masks a pair.
    case additive(Tensor<Float>)
}
