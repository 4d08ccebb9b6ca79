/// Catching the most common loading mistake: a weight in the `[in, out]` layout
/// (y = x·W, as the book's `SelfAttention_v1` and many hand-written models store
/// it) where `Linear` expects PyTorch's `[out, in]` (y = x·Wᵀ).

extension Linear {
    /// Throws when `input`'s last dimension does not fit this weight but would fit
    /// its transpose, naming the weight rather than the input.
    ///
    /// - Throws: `AttentionError.invalidShape` with argument `weightName`.
    func checkLayout(of input: Tensor<Float>, weightName: String) throws {
        guard input.rank >= 1, let features = input.shape.last, features != inFeatures, features == outFeatures else { return }
        throw AttentionError.invalidShape(
            argument: weightName,
            expected: "[out, \(features)] ([outFeatures, inFeatures], nn.Linear's layout, for inputs of \(features) features); "
                + "the weight fits only transposed: if it is stored [in, out] (y = x·W, as the book's SelfAttention_v1), "
                + "pass weight.transposed(); otherwise the input should be [..., \(inFeatures)]",
            actual: weight.shape)
    }
}

extension SequenceBatch {
    /// Accepts `[batch, length, features]` or `[length, features]` for `projection`,
    /// first checking that its weight is not transposed (see `Linear.checkLayout`).
    init(_ input: Tensor<Float>, argument: String, projection: Linear, weightName: String, batchFirst: Bool = true) throws {
        try projection.checkLayout(of: input, weightName: weightName)
        try self.init(input, argument: argument, features: projection.inFeatures, batchFirst: batchFirst)
    }
}
