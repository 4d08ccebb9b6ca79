/// Multi-head attention as a stack of independent single-head causal layers
/// whose outputs are concatenated (Raschka, "Build a Large Language Model (From
/// Scratch)", §3.6.1, `MultiHeadAttentionWrapper`): the output is
/// `heads.count · dOut` wide and has no output projection.
public struct MultiHeadAttentionWrapper: Sendable {
    /// The heads, each a `CausalSelfAttention` with its own weights.
    public var heads: [CausalSelfAttention]

    /// The number of trainable numbers.
    public var parameterCount: Int { heads.reduce(0) { $0 + $1.parameterCount } }

    /// A wrapper over given heads.
    ///
    /// - Parameter heads: at least one head; all read the same `dIn`, and their
    ///   outputs are concatenated in this order.
    /// - Throws: `AttentionError.invalidValue` if `heads` is empty or the heads
    ///   disagree on `dIn`.
    public init(heads: [CausalSelfAttention]) throws {
        guard let first = heads.first else {
            throw AttentionError.invalidValue(argument: "heads", expected: "at least one head", actual: "0")
        }
        for head in heads where head.query.inFeatures != first.query.inFeatures {
            throw AttentionError.invalidValue(
                argument: "heads", expected: "every head with dIn = \(first.query.inFeatures)", actual: "\(head.query.inFeatures)")
        }
        self.heads = heads
    }

    /// `numHeads` freshly initialised heads (PyTorch initialisation, seeded), the
    /// book's `MultiHeadAttentionWrapper(d_in, d_out, context_length, dropout,
    /// num_heads, qkv_bias)`.
    ///
    /// - Parameters:
    ///   - dIn: input features, the size of the input's last dimension.
    ///   - dOut: the width of each head; the output is `numHeads · dOut` wide.
    ///   - contextLength: the longest input accepted, ≥ 0.
    ///   - numHeads: the number of heads, ≥ 1.
    ///   - dropoutProbability: probability in [0, 1) of dropping an attention
    ///     weight, in each head, while the head's `isTraining` is `true`.
    ///   - qkvBias: whether the projections have a bias (the book: no).
    ///   - seed: the generator's seed (SplitMix64, not PyTorch's); head `i`
    ///     uses `seed + 16·i` as in ``CausalSelfAttention/init(dIn:dOut:contextLength:dropoutProbability:qkvBias:seed:)``.
    /// - Throws: `AttentionError.invalidValue` naming `numHeads` if it is below
    ///   1, or as ``CausalSelfAttention/init(dIn:dOut:contextLength:dropoutProbability:qkvBias:seed:)``.
    public init(
        dIn: Int, dOut: Int, contextLength: Int, numHeads: Int, dropoutProbability: Float = 0,
        qkvBias: Bool = false, seed: UInt64 = 0
    ) throws {
        guard numHeads >= 1 else {
            throw AttentionError.invalidValue(argument: "numHeads", expected: "at least one head", actual: "\(numHeads)")
        }
        try self.init(heads: (0..<numHeads).map { index in
            try CausalSelfAttention(
                dIn: dIn, dOut: dOut, contextLength: contextLength, dropoutProbability: dropoutProbability,
                qkvBias: qkvBias, seed: seed &+ UInt64(index) &* 16)
        })
    }

    /// The heads' context vectors side by side.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: `[batch, length, Σ dOut]` (or unbatched).
    /// - Throws: as ``CausalSelfAttention/callAsFunction(_:)``.
    public func callAsFunction(_ input: Tensor<Float>) throws -> Tensor<Float> {
        let outputs = try heads.map { try $0(input) }
        let rows = input.shape.dropLast().reduce(1, *)
        let widths = outputs.map { $0.shape.last ?? 0 }
        var merged: [Float] = []
        merged.reserveCapacity(rows * widths.reduce(0, +))
        for row in 0..<rows {
            for (output, width) in zip(outputs, widths) {
                merged.append(contentsOf: output.scalars[(row * width)..<((row + 1) * width)])
            }
        }
        return Tensor(validShape: Array(input.shape.dropLast()) + [widths.reduce(0, +)], scalars: merged)
    }
}
