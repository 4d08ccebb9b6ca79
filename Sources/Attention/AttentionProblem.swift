/// A validated attention call: every size, stride and option that the fused
/// kernel and the oracle take, in the kernel's `[batch, heads, length, dim]` terms.
///
/// Building a problem is the one place where shapes are checked; both backends
/// then trust it. Operands are strided views over contiguous storage, so a
/// projection laid out `[batch, length, heads, headDim]` feeds the kernel
/// without a copy.
struct AttentionProblem: Sendable {
    var batch: Int
    var queryHeads: Int
    var kvHeads: Int
    var queryLength: Int
    var keyLength: Int
    var headDim: Int
    var valueDim: Int

    var query: StridedOperand<Float>
    var key: StridedOperand<Float>
    var value: StridedOperand<Float>

    var scale: Float
    var causal: CausalAlignment?
    var mask: BroadcastMask?
    /// Key padding as keep flags `[batch, keyLength]` (`false` = padding), or nil.
    var keyPaddingKeep: [Bool]?
    var dropoutProbability: Float
    var dropoutSeed: UInt64
    /// Keys and values read in place from caller-owned memory (a key/value
    /// cache, possibly 16-bit) instead of `key` and `value`, which are then
    /// ignored by the fused kernel; `nil`: read `key` and `value`.
    var externalKV: ExternalKeyValues? = nil

    /// Query heads that share one key/value head (grouped-query attention).
    var groupSize: Int { kvHeads == 0 ? 1 : queryHeads / kvHeads }
}

/// A 4-D strided view `[batch, heads, length, dim]` into contiguous storage.
struct StridedOperand<Element: Sendable>: Sendable {
    var storage: [Element]
    var offset: Int
    var strides: [Int]  // 4 element strides; the last one is 1 for query/key/value

    func index(_ b: Int, _ h: Int, _ l: Int, _ d: Int) -> Int {
        offset + b * strides[0] + h * strides[1] + l * strides[2] + d * strides[3]
    }

    subscript(_ b: Int, _ h: Int, _ l: Int, _ d: Int) -> Element {
        storage[index(b, h, l, d)]
    }
}

/// An explicit mask broadcast to `[batch, queryHeads, queryLength, keyLength]`
/// by stride-0 dimensions.
enum BroadcastMask: Sendable {
    case keep(StridedOperand<Bool>)
    case additive(StridedOperand<Float>)
}

extension AttentionProblem {
    /// Validates a call of the functional API: `queries [..., Hq, Lq, D]`,
    /// `keys [..., Hkv, Lk, D]`, `values [..., Hkv, Lk, Dv]`, rank 2 to 4 (a missing
    /// heads or batch dimension counts as 1).
    init(
        queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>,
        mask: AttentionMask, scale: Float?, dropoutProbability: Float, dropoutSeed: UInt64
    ) throws {
        for (name, tensor) in [("queries", queries), ("keys", keys), ("values", values)] {
            guard (2...4).contains(tensor.rank) else {
                throw AttentionError.invalidShape(
                    argument: name, expected: "rank 2 to 4, [batch, heads, length, dim]", actual: tensor.shape)
            }
        }
        guard keys.rank == queries.rank else {
            throw AttentionError.invalidShape(
                argument: "keys", expected: "rank \(queries.rank) like queries \(queries.shape)", actual: keys.shape)
        }
        guard values.rank == queries.rank else {
            throw AttentionError.invalidShape(
                argument: "values", expected: "rank \(queries.rank) like queries \(queries.shape)", actual: values.shape)
        }
        let q = Self.padded(queries.shape), k = Self.padded(keys.shape), v = Self.padded(values.shape)
        guard k[0] == q[0] else {
            throw AttentionError.invalidShape(
                argument: "keys", expected: "batch \(q[0]) as in queries \(queries.shape)", actual: keys.shape)
        }
        guard k[3] == q[3] else {
            throw AttentionError.invalidShape(
                argument: "keys", expected: "headDim \(q[3]) as in queries \(queries.shape)", actual: keys.shape)
        }
        guard v[0] == k[0], v[1] == k[1], v[2] == k[2] else {
            throw AttentionError.invalidShape(
                argument: "values", expected: "[\(k[0...2].map(String.init).joined(separator: ", ")), valueDim] matching keys",
                actual: values.shape)
        }
        try Self.checkGroupedQuery(queryHeads: q[1], kvHeads: k[1], argument: "keys", actual: keys.shape)
        let resolvedScale = try Self.resolveScale(scale, headDim: q[3])
        try Self.checkDropout(dropoutProbability)

        self.batch = q[0]
        self.queryHeads = q[1]
        self.kvHeads = k[1]
        self.queryLength = q[2]
        self.keyLength = k[2]
        self.headDim = q[3]
        self.valueDim = v[3]
        self.query = StridedOperand(storage: queries.scalars, offset: 0, strides: Tensor<Float>.contiguousStrides(for: q))
        self.key = StridedOperand(storage: keys.scalars, offset: 0, strides: Tensor<Float>.contiguousStrides(for: k))
        self.value = StridedOperand(storage: values.scalars, offset: 0, strides: Tensor<Float>.contiguousStrides(for: v))
        self.scale = resolvedScale
        self.dropoutProbability = dropoutProbability
        self.dropoutSeed = dropoutSeed
        self.causal = nil
        self.mask = nil
        self.keyPaddingKeep = nil
        try checkResultSizes(argument: "values")
        try apply(mask)
    }

    /// The output `[batch, queryHeads, queryLength, valueDim]` and the logsumexp
    /// combine sizes of different arguments; check that their shapes are valid
    /// and that both can be held at once.
    func checkResultSizes(argument: String) throws {
        let outputShape = [batch, queryHeads, queryLength, valueDim]
        let outputCount = try Tensor<Float>.elementCount(of: outputShape, argument: argument)
        let rowCount = try Tensor<Float>.elementCount(of: [batch, queryHeads, queryLength], argument: argument)
        try MemoryBudget.check(bytes: UInt64(outputCount + rowCount) * 4, tensor: "output (with logsumexp)", shape: outputShape)
    }

    /// The oracle's per-row scratch: the logits and weights of every key, in Double.
    func checkReferenceScratch() throws {
        _ = try Tensor<Double>.allocatableCount(of: [2, keyLength], argument: "keys", tensor: "reference row scratch")
    }

    /// Adds a mask of the public enum to this problem.
    mutating func apply(_ mask: AttentionMask) throws {
        switch mask {
        case .none:
            break
        case let .causal(alignment):
            causal = alignment
        case let .keep(tensor):
            self.mask = .keep(try broadcast(tensor, argument: "mask"))
        case let .additive(tensor):
            self.mask = .additive(try broadcast(tensor, argument: "mask"))
        }
    }

    /// The shape a full mask would have: `[batch, queryHeads, queryLength, keyLength]`.
    var maskShape: [Int] { [batch, queryHeads, queryLength, keyLength] }

    /// Broadcasts a mask of rank ≤ 4 to `maskShape`, right-aligned, size-1 dimensions
    /// repeating by stride 0.
    func broadcast<Element>(_ tensor: Tensor<Element>, argument: String) throws -> StridedOperand<Element> {
        let target = maskShape
        let expected = "broadcastable to [batch, heads, queryLength, keyLength] = \(target)"
        guard tensor.rank <= 4 else {
            throw AttentionError.invalidShape(argument: argument, expected: expected, actual: tensor.shape)
        }
        let shape = Array(repeating: 1, count: 4 - tensor.rank) + tensor.shape
        var strides = Tensor<Element>.contiguousStrides(for: shape)
        for axis in 0..<4 where shape[axis] != target[axis] {
            guard shape[axis] == 1 else {
                throw AttentionError.invalidShape(argument: argument, expected: expected, actual: tensor.shape)
            }
            strides[axis] = 0
        }
        for axis in 0..<4 where shape[axis] == 1 { strides[axis] = 0 }
        return StridedOperand(storage: tensor.scalars, offset: 0, strides: strides)
    }

    /// Left-pads a rank-2/3 shape to `[batch, heads, length, dim]`.
    static func padded(_ shape: [Int]) -> [Int] {
        Array(repeating: 1, count: 4 - shape.count) + shape
    }

    static func checkGroupedQuery(queryHeads: Int, kvHeads: Int, argument: String, actual: [Int]) throws {
        let divides = kvHeads > 0 ? queryHeads % kvHeads == 0 : queryHeads == 0
        guard divides else {
            throw AttentionError.invalidShape(
                argument: argument,
                expected: "[batch, kvHeads, length, dim] with kvHeads dividing the \(queryHeads) query heads (grouped-query attention)",
                actual: actual)
        }
    }

    /// `scale ?? 1/√headDim`; a given scale must be finite (0 is allowed).
    static func resolveScale(_ scale: Float?, headDim: Int) throws -> Float {
        if let scale {
            guard scale.isFinite else {
                throw AttentionError.invalidValue(argument: "scale", expected: "a finite number", actual: "\(scale)")
            }
            return scale
        }
        return headDim > 0 ? 1 / Float(headDim).squareRoot() : 1
    }

    static func checkDropout(_ probability: Float) throws {
        guard probability >= 0, probability < 1 else {
            throw AttentionError.invalidValue(
                argument: "dropoutProbability", expected: "a probability in [0, 1)", actual: "\(probability)")
        }
    }
}
