import CAttention

/// The gradients of a loss with respect to a `Linear` layer's parameters.
public struct LinearParameterGradients: Sendable {
    /// ∂L/∂weight, `[outFeatures, inFeatures]`.
    public var weight: Tensor<Float>
    /// ∂L/∂bias, `[outFeatures]`, or `nil` for a layer without bias.
    public var bias: Tensor<Float>?
}

/// The gradients of a `Linear` layer: its input's and its parameters'.
public struct LinearGradients: Sendable {
    /// ∂L/∂input, the input's shape `[..., inFeatures]`.
    public var input: Tensor<Float>
    /// ∂L/∂weight and ∂L/∂bias.
    public var parameters: LinearParameterGradients
}

extension Linear {
    /// The backward pass of `y = x·Wᵀ + b` over the rows `x [n, in]` of the input:
    ///
    ///     ∂L/∂x = ∂L/∂y · W          [n, out]·[out, in]
    ///     ∂L/∂W = (∂L/∂y)ᵀ · x        [out, n]·[n, in]
    ///     ∂L/∂b = Σ_rows ∂L/∂y
    ///
    /// The products run on the kernel's linear micro-kernel (as the forward), the
    /// bias sum in row order, so the result does not depend on `threads`.
    ///
    /// - Parameters:
    ///   - input: the forward's input `[..., inFeatures]`.
    ///   - outputGradient: ∂L/∂output, `[..., outFeatures]` with the input's leading dimensions.
    ///   - threads: worker threads (`nil`: the driver's default).
    /// - Returns: ``LinearGradients`` with the input's and the parameters' shapes.
    /// - Throws: `AttentionError.invalidShape` naming `input` or `outputGradient`;
    ///   `AttentionError.invalidValue` for `threads` below 1.
    public func backward(input: Tensor<Float>, outputGradient: Tensor<Float>, threads: Int? = nil) throws -> LinearGradients {
        guard input.rank >= 1, input.shape.last == inFeatures else {
            throw AttentionError.invalidShape(argument: "input", expected: "[..., \(inFeatures)] (inFeatures)", actual: input.shape)
        }
        let outputShape = Array(input.shape.dropLast()) + [outFeatures]
        guard outputGradient.shape == outputShape else {
            throw AttentionError.invalidShape(
                argument: "outputGradient", expected: "\(outputShape) (the output's shape)", actual: outputGradient.shape)
        }
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let rows = input.shape.dropLast().contains(0) ? 0 : input.shape.dropLast().reduce(1, *)
        let x = input.scalars, dy = outputGradient.scalars
        // ∂L/∂x [rows, in] = dy [rows, out] · (Wᵀ [in, out])ᵀ
        let inputGradient = try Self.productWithTransposed(
            dy, rows: rows, inner: outFeatures, Self.transpose(weight.scalars, rows: outFeatures, columns: inFeatures),
            columns: inFeatures, threads: threads)
        // ∂L/∂W [out, in] = dyᵀ [out, rows] · (xᵀ [in, rows])ᵀ
        let weightGradient = try Self.productWithTransposed(
            Self.transpose(dy, rows: rows, columns: outFeatures), rows: outFeatures, inner: rows,
            Self.transpose(x, rows: rows, columns: inFeatures), columns: inFeatures, threads: threads)
        var biasGradient: Tensor<Float>?
        if bias != nil {
            var sum = [Float](repeating: 0, count: outFeatures)
            for r in 0..<rows {
                for o in 0..<outFeatures { sum[o] += dy[r * outFeatures + o] }
            }
            biasGradient = Tensor(validShape: [outFeatures], scalars: sum)
        }
        return LinearGradients(
            input: Tensor(validShape: input.shape, scalars: inputGradient),
            parameters: LinearParameterGradients(
                weight: Tensor(validShape: [outFeatures, inFeatures], scalars: weightGradient), bias: biasGradient))
    }

    /// `a [rows, inner] · bᵀ` for `b [columns, inner]`, on `attn_linear_forward`'s plan.
    static func productWithTransposed(
        _ a: [Float], rows: Int, inner: Int, _ b: [Float], columns: Int, threads: Int?
    ) throws -> [Float] {
        var result = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(of: [rows, columns], argument: "input"))
        guard rows > 0, columns > 0 else { return result }
        let status = a.withUnsafeBufferPointer { aBuffer in
            b.withUnsafeBufferPointer { bBuffer in
                result.withUnsafeMutableBufferPointer { out in
                    KernelThreading.runLinear(
                        x: aBuffer.baseAddress, rows: rows, inFeatures: inner, weight: bBuffer.baseAddress,
                        bias: nil, outFeatures: columns, y: out.baseAddress, threads: threads)
                }
            }
        }
        guard status == ATTN_OK else {
            throw AttentionError.kernelFailure(code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
        }
        return result
    }

    /// The transpose of a row-major `[rows, columns]` matrix.
    static func transpose(_ m: [Float], rows: Int, columns: Int) -> [Float] {
        var t = [Float](repeating: 0, count: rows * columns)
        for r in 0..<rows {
            for c in 0..<columns { t[c * rows + r] = m[r * columns + c] }
        }
        return t
    }
}
