import CAttention

/// A fully connected layer, `y = x·Wᵀ + b`, with PyTorch's `nn.Linear` layout.
///
/// `weight` is `[outFeatures, inFeatures]` and `bias` `[outFeatures]`, so a
/// checkpoint's tensors load as they are. The product runs on the kernel's
/// register-blocked tile micro-kernel (`attn_linear_forward`); a call with 1–8
/// rows (a decoding step's projection) runs as a matrix-vector product bound by
/// reading the weight, on a copy of it packed in panels of 16 output columns
/// (`attn_linear_packed_forward`), made on the first such call and kept until
/// the weight changes. Both give a row the same bits. The packed copy takes as
/// much memory again as the weight (`outFeatures` rounded up to a multiple of
/// 16); when it cannot be allocated, few-row calls run on the tile product.
/// Copies of a layer share the packing until one of them changes its weight,
/// and one layer may be called from several threads at once.
public struct Linear: Sendable {
    /// `[outFeatures, inFeatures]`.
    public internal(set) var weight: Tensor<Float> {
        didSet { packing = LinearPacking() }
    }
    /// The weight packed for few-row calls (empty until the first).
    private var packing = LinearPacking()
    /// `[outFeatures]`, or `nil` for a layer without bias.
    public internal(set) var bias: Tensor<Float>?

    /// The size of the input's last dimension.
    public var inFeatures: Int { weight.shape[1] }
    /// The size of the output's last dimension.
    public var outFeatures: Int { weight.shape[0] }
    /// The number of trainable numbers: `out·in (+ out with bias)`.
    public var parameterCount: Int { weight.count + (bias?.count ?? 0) }

    /// A layer with the given weights.
    ///
    /// - Parameters:
    ///   - weight: `[outFeatures, inFeatures]`.
    ///   - bias: `[outFeatures]` or `nil`.
    /// - Throws: `AttentionError.invalidShape` naming `weight` if it is not rank 2,
    ///   or `bias` if it is not `[outFeatures]`.
    public init(weight: Tensor<Float>, bias: Tensor<Float>? = nil) throws {
        guard weight.rank == 2 else {
            throw AttentionError.invalidShape(argument: "weight", expected: "[outFeatures, inFeatures]", actual: weight.shape)
        }
        if let bias, bias.shape != [weight.shape[0]] {
            throw AttentionError.invalidShape(argument: "bias", expected: "[\(weight.shape[0])] (outFeatures)", actual: bias.shape)
        }
        self.weight = weight
        self.bias = bias
    }

    /// A layer with PyTorch's default initialisation, U(−1/√in, 1/√in) for the
    /// weight and the bias (He et al. 2015, as `nn.Linear.reset_parameters`),
    /// drawn from the stream keyed by `seed` (matrix 0 of that seed; see the
    /// attention layers' `seed:`), so that it reproduces: the weight's elements
    /// first, row by row, then the bias's.
    ///
    /// `seed` keys this package's parameter stream (Philox-4x32-10, matrix 0): it is not
    /// `torch.manual_seed`, so `seed: 123` does not reproduce the book's weights
    /// (those are bundled: `AttentionExamples`' `BookChapter3.load()`). Load a
    /// checkpoint's tensors with ``init(weight:bias:)``.
    ///
    /// - Parameters:
    ///   - inFeatures: the size of the input's last dimension, ≥ 0.
    ///   - outFeatures: the size of the output's last dimension, ≥ 0.
    ///   - bias: whether the layer adds a bias `[outFeatures]`.
    ///   - seed: the key of the parameter stream.
    /// - Throws: `AttentionError.invalidValue` if a feature count is negative,
    ///   `AttentionError.insufficientMemory` if the weight cannot be allocated.
    public init(inFeatures: Int, outFeatures: Int, bias: Bool = true, seed: UInt64) throws {
        try self.init(inFeatures: inFeatures, outFeatures: outFeatures, bias: bias, parameters: ParameterStream(seed: seed), matrix: 0)
    }

    /// PyTorch's initialisation from matrix `matrix` of a layer's parameter stream.
    init(inFeatures: Int, outFeatures: Int, bias: Bool, parameters: ParameterStream, matrix: Int) throws {
        guard inFeatures >= 0, outFeatures >= 0 else {
            throw AttentionError.invalidValue(
                argument: "inFeatures/outFeatures", expected: "non-negative counts", actual: "\(inFeatures), \(outFeatures)")
        }
        let weightCount = try Tensor<Float>.allocatableCount(of: [outFeatures, inFeatures], argument: "inFeatures/outFeatures", tensor: "weight")
        let bound = inFeatures > 0 ? 1 / Float(inFeatures).squareRoot() : 0
        func uniform(first: Int, count: Int) -> [Float] {
            parameters.uniforms(matrix: matrix, first: first, count: count).map { $0 * 2 * bound - bound }
        }
        self.weight = Tensor(validShape: [outFeatures, inFeatures], scalars: uniform(first: 0, count: weightCount))
        self.bias = bias ? Tensor(validShape: [outFeatures], scalars: uniform(first: weightCount, count: outFeatures)) : nil
    }

    /// Applies the layer to the last dimension.
    ///
    /// - Parameters:
    ///   - input: `[..., inFeatures]`, rank ≥ 1.
    ///   - argument: the name errors give the input (a layer passes its own).
    ///   - threads: worker threads (`nil`: the driver's default, see
    ///     ``AttentionThreading/defaultThreadCount``); the bits do not depend on it.
    /// - Returns: `[..., outFeatures]`.
    /// - Throws: `AttentionError.invalidShape` naming `argument` if the last
    ///   dimension is not `inFeatures`; `AttentionError.invalidValue` for
    ///   `threads` below 1.
    public func callAsFunction(_ input: Tensor<Float>, argument: String = "input", threads: Int? = nil) throws -> Tensor<Float> {
        guard input.rank >= 1, input.shape.last == inFeatures else {
            let transposedHint = input.shape.last == outFeatures && outFeatures != inFeatures
                ? "; weight \(weight.shape) would fit transposed: a weight stored [in, out] (y = x·W) goes in as weight.transposed()"
                : ""
            throw AttentionError.invalidShape(
                argument: argument, expected: "[..., \(inFeatures)] (inFeatures)\(transposedHint)", actual: input.shape)
        }
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let outputShape = Array(input.shape.dropLast()) + [outFeatures]
        var output = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: outputShape, argument: argument, tensor: "\(argument) projection"))
        let rowCount = input.shape.dropLast().contains(0) ? 0 : input.shape.dropLast().reduce(1, *)
        if rowCount >= 1, rowCount <= LinearPacking.maximumRows, outFeatures > 0,
           let packed = packing.packedWeight(weight) {
            let status = input.withUnsafeBufferPointer { x in
                output.withUnsafeMutableBufferPointer { y in
                    withBias { b in
                        KernelThreading.runLinearPacked(
                            x: x.baseAddress, rows: rowCount, packed: packed, bias: b, y: y.baseAddress, threads: threads)
                    }
                }
            }
            guard status == ATTN_OK else {
                throw AttentionError.kernelFailure(code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
            }
            return Tensor(validShape: outputShape, scalars: output)
        }
        let status = input.withUnsafeBufferPointer { x in
            weight.withUnsafeBufferPointer { w in
                output.withUnsafeMutableBufferPointer { y in
                    withBias { b in
                        KernelThreading.runLinear(
                            x: x.baseAddress, rows: rowCount, inFeatures: inFeatures, weight: w.baseAddress,
                            bias: b, outFeatures: outFeatures, y: y.baseAddress, threads: threads)
                    }
                }
            }
        }
        guard status == ATTN_OK else {
            throw AttentionError.kernelFailure(code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
        }
        return Tensor(validShape: outputShape, scalars: output)
    }

    private func withBias<R>(_ body: (UnsafePointer<Float>?) -> R) -> R {
        guard let bias else { return body(nil) }
        return bias.withUnsafeBufferPointer { body($0.baseAddress) }
    }
}
