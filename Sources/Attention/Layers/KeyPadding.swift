/// Which keys of a batch to ignore, with the polarity in the name, so that a
/// tokenizer's or checkpoint's attention mask (1 = real token) can be passed as
/// it is and PyTorch's `key_padding_mask` (true = padding) too, and neither can
/// be mistaken for the other.
///
/// Both are `[batch, keyLength]` (`[1, keyLength]` for unbatched inputs); a key
/// that is padding is hidden from every query, combined with any other mask.
public enum KeyPadding: Sendable {
    /// `true` = this key is padding and is ignored: PyTorch's `key_padding_mask`.
    case padding(Tensor<Bool>)
    /// `true` = this key is a real token and is attended to: a tokenizer's
    /// `attention_mask` (Hugging Face), the complement of `.padding`.
    case keep(Tensor<Bool>)

    /// A tokenizer's or checkpoint's attention mask as numbers, as it is stored
    /// (`int64`/`int32` in most checkpoints): nonzero = a real token.
    ///
    /// - Parameter mask: `[batch, keyLength]`.
    /// - Returns: `.keep(mask != 0)`.
    public static func attentionMask(_ mask: Tensor<Int32>) -> KeyPadding { .keep(mask.map { $0 != 0 }) }

    /// A tokenizer's or checkpoint's attention mask stored as `int64` (what most
    /// checkpoints and `SafetensorsFile.int64Tensor` give): nonzero = a real token.
    ///
    /// - Parameter mask: `[batch, keyLength]`.
    /// - Returns: `.keep(mask != 0)`.
    public static func attentionMask(_ mask: Tensor<Int64>) -> KeyPadding { .keep(mask.map { $0 != 0 }) }

    /// A float attention mask (1.0 = real token, 0.0 = padding): nonzero (or
    /// NaN) = a real token.
    ///
    /// - Parameter mask: `[batch, keyLength]`.
    /// - Returns: `.keep(mask != 0)`.
    public static func attentionMask(_ mask: Tensor<Float>) -> KeyPadding { .keep(mask.map { $0 != 0 }) }

    /// The keep flags, `true` = attend.
    var keepFlags: Tensor<Bool> {
        switch self {
        case let .padding(padding): return padding.map { !$0 }
        case let .keep(keep): return keep
        }
    }
}

extension AttentionProblem {
    /// Hides padded keys given as `KeyPadding`, `[batch, keyLength]`.
    ///
    /// The kernel takes key padding as a mask of its own (`key_padding_keep`), so
    /// it combines with any other mask without a `[queryLength, keyLength]` buffer.
    mutating func hideKeys(_ padding: KeyPadding, argument: String) throws {
        let keep = padding.keepFlags
        guard keep.shape == [batch, keyLength] else {
            let polarity: String
            switch padding {
            case .padding: polarity = ".padding: true = padding"
            case .keep: polarity = ".keep: true = real token"
            }
            throw AttentionError.invalidShape(
                argument: argument, expected: "[\(batch), \(keyLength)] (batch, keyLength), \(polarity)", actual: keep.shape)
        }
        keyPaddingKeep = keep.scalars
    }
}
