/// Inverted dropout (Srivastava et al. 2014): in training, each element is zeroed
/// with probability `probability` and the survivors are scaled by 1/(1 − p), so
/// that the expectation is unchanged; in inference it is the identity.
///
/// The attention layers apply dropout inside the kernel, to the attention
/// weights; this layer is the same operation on any tensor, for learning and
/// for inspection. Its keep decisions come from the same Philox generator as
/// the kernel's: a tensor is viewed as `[batch, heads, rows, columns]` (missing
/// leading dimensions are 1, extra ones fold into `batch`), and element
/// (b, h, i, j) is kept when `Philox.keeps(seed:batch:head:row:column:probability:)`
/// says so. Dropout on attention weights `[B, H, Lq, Lk]` therefore drops exactly
/// the cells the fused kernel drops for the same seed.
///
/// Called without a seed, a `Dropout` takes the next key of its own
/// `stream` on every training call, as PyTorch's generator advances: successive
/// calls drop different cells, and the sequence follows from the stream's seed
/// (see `DropoutStream`, also for how to replay a call).
public struct Dropout: Sendable {
    /// The probability of zeroing an element, in [0, 1); settable (a value
    /// outside the range makes the next call throw `AttentionError.invalidValue`).
    public var probability: Float

    /// The keys of the calls without an explicit seed; by default seeded with
    /// `DropoutStream.nextDefaultSeed()`, different for every `Dropout` made.
    public var stream = DropoutStream(seed: DropoutStream.nextDefaultSeed())

    /// A dropout layer with the given probability.
    ///
    /// - Parameter probability: the probability of zeroing an element, in [0, 1).
    /// - Throws: `AttentionError.invalidValue` if `probability` is not in [0, 1).
    public init(probability: Float) throws {
        try AttentionProblem.checkDropout(probability)
        self.probability = probability
    }

    /// Applies dropout in training mode, with the next key of `stream` (which
    /// advances), and returns `input` unchanged otherwise.
    ///
    /// - Parameters:
    ///   - input: any shape.
    ///   - training: `false` (inference) makes this the identity and takes no key.
    /// - Returns: the same shape as `input`; `stream.lastKey` is the key used.
    /// - Throws: `AttentionError.invalidValue` if `probability` is not in [0, 1).
    public func callAsFunction(_ input: Tensor<Float>, training: Bool) throws -> Tensor<Float> {
        guard training else { return input }
        try AttentionProblem.checkDropout(probability)
        return try self(input, training: true, seed: stream.next())
    }

    /// Applies dropout in training mode with the cells of `seed`, and returns
    /// `input` unchanged otherwise.
    ///
    /// - Parameters:
    ///   - input: any shape.
    ///   - training: `false` (inference) makes this the identity.
    ///   - seed: key of the Philox generator.
    /// - Returns: the same shape as `input`.
    /// - Throws: `AttentionError.invalidValue` if `probability` is not in [0, 1).
    public func callAsFunction(_ input: Tensor<Float>, training: Bool, seed: UInt64) throws -> Tensor<Float> {
        guard training else { return input }
        try AttentionProblem.checkDropout(probability)
        guard probability > 0 else { return input }
        let shape4 = Self.asFourDimensions(input.shape)
        let keepScale = 1 / (1 - probability)
        var output = input
        output.withUnsafeMutableBufferPointer { buffer in
            var index = 0
            for b in 0..<shape4[0] {
                for h in 0..<shape4[1] {
                    for i in 0..<shape4[2] {
                        for j in 0..<shape4[3] {
                            let kept = Philox.keeps(seed: seed, batch: b, head: h, row: i, column: j, probability: probability)
                            buffer[index] = kept ? buffer[index] * keepScale : 0
                            index += 1
                        }
                    }
                }
            }
        }
        return output
    }

    /// Applies dropout with a given keep mask instead of a drawn one: `input · keep / (1 − p)`.
    /// This reproduces another library's dropout exactly, given the cells it kept.
    ///
    /// - Parameters:
    ///   - input: any shape.
    ///   - keep: the same shape as `input`; `true` = kept.
    /// - Returns: the same shape as `input`: kept elements scaled by 1/(1 − p),
    ///   the others 0.
    /// - Throws: `AttentionError.invalidShape` naming `keep` if the shapes differ,
    ///   `AttentionError.invalidValue` if `probability` is not in [0, 1).
    public func apply(_ input: Tensor<Float>, keep: Tensor<Bool>) throws -> Tensor<Float> {
        try AttentionProblem.checkDropout(probability)
        guard keep.shape == input.shape else {
            throw AttentionError.invalidShape(argument: "keep", expected: "\(input.shape) (the input's shape)", actual: keep.shape)
        }
        let keepScale = 1 / (1 - probability)
        return Tensor(validShape: input.shape, scalars: zip(input.scalars, keep.scalars).map { $1 ? $0 * keepScale : 0 })
    }

    static func asFourDimensions(_ shape: [Int]) -> [Int] {
        if shape.count <= 4 { return Array(repeating: 1, count: 4 - shape.count) + shape }
        return [shape.dropLast(3).reduce(1, *)] + shape.suffix(3)
    }
}
