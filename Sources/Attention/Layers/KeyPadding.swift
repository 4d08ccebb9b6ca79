extension AttentionProblem {
    /// Hides padded keys: `padding [batch, keyLength]`, `true` = this key is padding.
    ///
    /// The kernel takes key padding as a mask of its own (`key_padding_keep`), so
    /// it combines with any other mask without a `[queryLength, keyLength]` buffer.
    mutating func hideKeys(padding: Tensor<Bool>, argument: String) throws {
        guard padding.shape == [batch, keyLength] else {
            throw AttentionError.invalidShape(argument: argument, expected: "[\(batch), \(keyLength)] (batch, keyLength)", actual: padding.shape)
        }
        keyPaddingKeep = padding.scalars.map { !$0 }
    }
}
