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

    /// `numHeads` freshly initialised heads (PyTorch initialisation, seeded).
    ///
    /// Head `h` takes matrices `3h`, `3h + 1`, `3h + 2` of the parameter stream
    /// keyed by `seed` (as the book's heads draw in turn from one generator), so
    /// head 0 is `CausalSelfAttention(…, seed: seed)` and no two heads, and no
    /// two wrappers of different seeds, share a matrix.
    ///
    /// - Throws: as `init(heads:)` and `CausalSelfAttention.init`.
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
    /// - Throws: as `CausalSelfAttention.callAsFunction(_:)`.
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
