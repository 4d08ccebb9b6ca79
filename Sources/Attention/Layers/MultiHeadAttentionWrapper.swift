/// Multi-head attention as a stack of independent single-head causal layers
/// whose outputs are concatenated (Raschka, "Build a Large Language Model (From
/// Scratch)", §3.6.1, `MultiHeadAttentionWrapper`): the output is
/// `heads.count · dOut` wide and has no output projection.
public struct MultiHeadAttentionWrapper: Sendable {
    /// The heads, each a `CausalSelfAttention` with its own weights.
    public var heads: [CausalSelfAttention]

    /// The number of trainable numbers.
    public var parameterCount: Int { heads.reduce(0) { $0 + $1.parameterCount } }

    /// Whether every head is in training mode; setting it sets every head's.
    public var isTraining: Bool {
        get { heads.allSatisfy(\.isTraining) }
        set { for index in heads.indices { heads[index].isTraining = newValue } }
    }

    /// The heads' dropout probability (the first head's; setting it sets
    /// every head's). In [0, 1); a value outside makes the next call throw.
    public var dropoutProbability: Float {
        get { heads.first?.dropoutProbability ?? 0 }
        set { for index in heads.indices { heads[index].dropoutProbability = newValue } }
    }

    /// Reseeds every head's dropout stream from one seed: head `h` gets the
    /// seed `MultiHeadAttentionWrapper.headDropoutSeed(seed, head: h)`, each a
    /// new stream at call 0, so the heads drop unrelated cells and the whole
    /// sequence follows from `seed`. (Each head made without a seed already
    /// has a default seed of its own, see `DropoutStream.nextDefaultSeed()`.)
    ///
    /// - Parameter seed: the wrapper's dropout seed.
    public mutating func setDropoutSeed(_ seed: UInt64) {
        for index in heads.indices { heads[index].dropoutSeed = Self.headDropoutSeed(seed, head: index) }
    }

    /// The dropout seed of head `head` under the wrapper seed `seed`: Philox-4x32-10
    /// under `seed` at the counter `(head, 0, 0xD20F_0118, 0)`, first two words.
    ///
    /// - Returns: the seed of that head's stream.
    public static func headDropoutSeed(_ seed: UInt64, head: Int) -> UInt64 {
        let words = Philox.philox4x32_10(
            counter: (UInt32(truncatingIfNeeded: head), UInt32(truncatingIfNeeded: head >> 32), 0xD20F_0118, 0),
            key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)))
        return UInt64(words.0) | UInt64(words.1) << 32
    }

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
    /// Head `h` takes matrices `3h`, `3h + 1`, `3h + 2` of the parameter stream
    /// keyed by `seed` (as the book's heads draw in turn from one generator), so
    /// head 0 is `CausalSelfAttention(…, seed: seed)` and no two heads, and no
    /// two wrappers of different seeds, share a matrix.
    ///
    /// - Parameters:
    ///   - dIn: input features, the size of the input's last dimension.
    ///   - dOut: the width of each head; the output is `numHeads · dOut` wide.
    ///   - contextLength: the longest input accepted, ≥ 0.
    ///   - numHeads: the number of heads, ≥ 1.
    ///   - dropoutProbability: probability in [0, 1) of dropping an attention
    ///     weight, in each head, while the head's `isTraining` is `true`.
    ///   - qkvBias: whether the projections have a bias (the book: no).
    ///   - seed: the key of the parameter stream (not `torch.manual_seed`).
    /// - Throws: `AttentionError.invalidValue` naming `numHeads` if it is below
    ///   1, or as ``CausalSelfAttention/init(dIn:dOut:contextLength:dropoutProbability:qkvBias:seed:)``.
    public init(
        dIn: Int, dOut: Int, contextLength: Int, numHeads: Int, dropoutProbability: Float = 0,
        qkvBias: Bool = false, seed: UInt64 = 0
    ) throws {
        guard numHeads >= 1 else {
            throw AttentionError.invalidValue(argument: "numHeads", expected: "at least one head", actual: "\(numHeads)")
        }
        let parameters = ParameterStream(seed: seed)
        try self.init(heads: (0..<numHeads).map { index in
            try CausalSelfAttention(
                dIn: dIn, dOut: dOut, contextLength: contextLength, dropoutProbability: dropoutProbability,
                qkvBias: qkvBias, parameters: parameters, firstMatrix: 3 * index)
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
