import Foundation

/// Small exact building blocks, so that a learner can follow attention by hand
/// (Raschka ch. 3 writes it as `attn_scores = queries @ keys.T`,
/// `torch.softmax(attn_scores / d_k**0.5, dim=-1)`, `attn_weights @ values`) and
/// compare every step with the layers. Each accumulates in double precision and
/// rounds once to float32, so the result is the correctly rounded float32 of
/// the exact value (up to one rounding of the double sum); none is fast.
extension Reference {
    /// The matrix product `a · b`, batched over leading dimensions
    /// (PyTorch's `a @ b` for equal leading shapes, without broadcasting).
    ///
    /// - Parameters:
    ///   - a: `[..., m, k]`, rank ≥ 2.
    ///   - b: `[..., k, n]`, the same rank and leading dimensions as `a`.
    /// - Returns: `[..., m, n]`; each element is `Σ_p a[i, p]·b[p, j]` summed in
    ///   double precision, rounded to float32.
    /// - Throws: `AttentionError.invalidShape` naming `a` or `b` if a rank is
    ///   below 2, the ranks or leading dimensions differ, or the inner sizes `k`
    ///   disagree.
    public static func matmul(_ a: Tensor<Float>, _ b: Tensor<Float>) throws -> Tensor<Float> {
        guard a.rank >= 2 else {
            throw AttentionError.invalidShape(argument: "a", expected: "[..., m, k], rank ≥ 2", actual: a.shape)
        }
        guard b.rank == a.rank, Array(b.shape.dropLast(2)) == Array(a.shape.dropLast(2)) else {
            let leading = a.shape.dropLast(2).map(String.init).joined(separator: ", ")
            throw AttentionError.invalidShape(
                argument: "b", expected: "[\(leading.isEmpty ? "" : leading + ", ")k, n] (a's leading dimensions)", actual: b.shape)
        }
        let (m, k) = (a.shape[a.rank - 2], a.shape[a.rank - 1])
        let (bk, n) = (b.shape[b.rank - 2], b.shape[b.rank - 1])
        guard bk == k else {
            throw AttentionError.invalidShape(argument: "b", expected: "[..., \(k), n] (k = a's last dimension)", actual: b.shape)
        }
        let outputShape = Array(a.shape.dropLast(2)) + [m, n]
        let count = try Tensor<Float>.allocatableCount(of: outputShape, argument: "b")
        let matrices = m * n == 0 ? 0 : count / (m * n)
        var output = [Float](repeating: 0, count: count)
        for matrix in 0..<matrices {
            let (aBase, bBase, outBase) = (matrix * m * k, matrix * k * n, matrix * m * n)
            for i in 0..<m {
                for j in 0..<n {
                    var sum = 0.0
                    for p in 0..<k { sum += Double(a.scalars[aBase + i * k + p]) * Double(b.scalars[bBase + p * n + j]) }
                    output[outBase + i * n + j] = Float(sum)
                }
            }
        }
        return Tensor(validShape: outputShape, scalars: output)
    }

    /// The last two dimensions swapped (PyTorch's `x.transpose(-2, -1)`, `x.T`
    /// for a matrix), copied into a new contiguous tensor.
    ///
    /// - Parameter x: `[..., rows, columns]`, rank ≥ 2.
    /// - Returns: `[..., columns, rows]`.
    /// - Throws: `AttentionError.invalidShape` naming `x` if its rank is below 2.
    public static func transpose(_ x: Tensor<Float>) throws -> Tensor<Float> {
        guard x.rank >= 2 else {
            throw AttentionError.invalidShape(argument: "x", expected: "[..., rows, columns], rank ≥ 2", actual: x.shape)
        }
        let (rows, columns) = (x.shape[x.rank - 2], x.shape[x.rank - 1])
        let matrices = rows * columns == 0 ? 0 : x.count / (rows * columns)
        var output = [Float](repeating: 0, count: x.count)
        for matrix in 0..<matrices {
            let base = matrix * rows * columns
            for i in 0..<rows {
                for j in 0..<columns { output[base + j * rows + i] = x.scalars[base + i * columns + j] }
            }
        }
        return Tensor(validShape: Array(x.shape.dropLast(2)) + [columns, rows], scalars: output)
    }

    /// The softmax along the last dimension (PyTorch's `torch.softmax(x, dim=-1)`):
    /// `exp(x_j − max) / Σ_k exp(x_k − max)` per row, in double precision.
    ///
    /// A `-infinity` element gets weight 0 (that is how a mask works); a row whose
    /// elements are all `-infinity` gives zeros, as this package's attention does
    /// for a query with no visible key (PyTorch gives NaN); a NaN, or `+infinity`,
    /// in a row makes that row NaN, as in PyTorch.
    ///
    /// - Parameter x: `[..., columns]`, rank ≥ 1.
    /// - Returns: the same shape; each row sums to 1 (or is all zeros or NaN as above).
    /// - Throws: `AttentionError.invalidShape` naming `x` if it is a scalar.
    public static func softmax(_ x: Tensor<Float>) throws -> Tensor<Float> {
        guard x.rank >= 1 else {
            throw AttentionError.invalidShape(argument: "x", expected: "[..., columns], rank ≥ 1", actual: x.shape)
        }
        let columns = x.shape[x.rank - 1]
        var output = [Float](repeating: 0, count: x.count)
        guard columns > 0 else { return Tensor(validShape: x.shape, scalars: output) }
        for start in stride(from: 0, to: x.count, by: columns) {
            let row = x.scalars[start..<start + columns].map(Double.init)
            var rowMax = -Double.infinity
            for value in row where value.isNaN || value > rowMax { rowMax = value }
            if rowMax == -.infinity { continue }  // nothing visible: zeros
            if rowMax.isNaN || rowMax == .infinity {
                for j in 0..<columns { output[start + j] = .nan }
                continue
            }
            let exponentials = row.map { $0 == -.infinity ? 0 : exp($0 - rowMax) }
            let sum = exponentials.reduce(0, +)
            for j in 0..<columns { output[start + j] = Float(exponentials[j] / sum) }
        }
        return Tensor(validShape: x.shape, scalars: output)
    }

    /// The attention scores, the logits that the softmax turns into weights:
    /// `scale · Q Kᵀ`, with the mask applied — masked cells are `-infinity`, an
    /// additive mask is added (Vaswani et al. 2017, eq. 1, before the softmax).
    ///
    /// `Reference.softmax(attentionScores(…))` gives the weights that
    /// ``Reference/scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:)``
    /// returns without dropout, up to the float32 rounding of the scores. The book's `attn_scores` (Raschka §3.4) are the
    /// unscaled `Q Kᵀ`: pass `scale: 1` for those. The products are computed in
    /// double precision from `scale·q` rounded to float32, as the kernel does; a
    /// score beyond the float32 range is NaN.
    ///
    /// - Parameters:
    ///   - queries: `[batch, heads, queryLength, headDim]`; rank 2 or 3 drop leading dims.
    ///   - keys: `[batch, kvHeads, keyLength, headDim]`, the same rank; `kvHeads` divides `heads`.
    ///   - mask: see `AttentionMask`; default none.
    ///   - scale: multiplies Q Kᵀ; default 1/√headDim.
    /// - Returns: `[..., heads, queryLength, keyLength]`, the leading dimensions of `queries`.
    /// - Throws: `AttentionError` for shapes or values out of contract, as the attention functions.
    public static func attentionScores(
        queries: Tensor<Float>, keys: Tensor<Float>, mask: AttentionMask = .none, scale: Float? = nil
    ) throws -> Tensor<Float> {
        // The values do not enter the scores: a zero-width stand-in with the keys' shape.
        let values = Tensor<Float>(validShape: Array(keys.shape.dropLast()) + [0], scalars: [])
        let problem = try AttentionProblem(
            queries: queries, keys: keys, values: values, mask: mask, scale: scale, dropoutProbability: 0, dropoutSeed: 0)
        let shape = Array(queries.shape.dropLast()) + [problem.keyLength]
        return Tensor(validShape: shape, scalars: try problem.referenceScores())
    }
}

extension AttentionProblem {
    /// The oracle's logits `[batch, queryHeads, queryLength, keyLength]` as float32,
    /// masked cells −∞.
    func referenceScores() throws -> [Float] {
        let count = try Tensor<Float>.allocatableCount(of: maskShape, argument: "keys")
        var scores = [Float](repeating: 0, count: count)
        var logits = [Double](repeating: 0, count: keyLength)
        var scaledQuery = [Double](repeating: 0, count: headDim)
        for b in 0..<batch {
            for h in 0..<queryHeads {
                for i in 0..<queryLength {
                    referenceLogits(b: b, h: h, i: i, scaledQuery: &scaledQuery, into: &logits)
                    let base = ((b * queryHeads + h) * queryLength + i) * keyLength
                    for j in 0..<keyLength { scores[base + j] = Float(logits[j]) }
                }
            }
        }
        return scores
    }
}
