import Foundation

/// A dense, row-major tensor: a shape and its elements in one contiguous array.
///
/// `Tensor` has value semantics: it stores its elements in a Swift `Array`, which
/// is copied on write, so passing a tensor to a function never lets the function
/// change the caller's copy. The last dimension varies fastest (C order), as in
/// PyTorch's contiguous tensors and in safetensors files.
///
/// Attention uses `Tensor<Float>` for activations and weights and `Tensor<Bool>`
/// for keep masks (`true` = attend) and key padding masks (`true` = padding).
public struct Tensor<Element: Sendable>: Sendable {
    /// The size of each dimension, outermost first. `[]` is a scalar (one element).
    public let shape: [Int]
    /// The elements in row-major order; `scalars.count == shape.reduce(1, *)`.
    public private(set) var scalars: [Element]

    /// Creates a tensor from its elements in row-major order.
    ///
    /// - Parameters:
    ///   - shape: the size of each dimension, outermost first; `[]` for a scalar.
    ///   - scalars: the elements, last dimension fastest; exactly
    ///     `shape.reduce(1, *)` of them.
    /// - Throws: `AttentionError.invalidShape` if a dimension is negative or the
    ///   size in bytes of the non-zero dimensions overflows `Int`, or
    ///   `AttentionError.elementCountMismatch` if `scalars.count` is not the
    ///   product of `shape`.
    public init(shape: [Int], scalars: [Element]) throws {
        let expected = try Self.elementCount(of: shape, argument: "shape")
        guard scalars.count == expected else {
            throw AttentionError.elementCountMismatch(shape: shape, expected: expected, actual: scalars.count)
        }
        self.shape = shape
        self.scalars = scalars
    }

    /// Creates a tensor of the given shape with every element equal to `value`.
    ///
    /// - Parameters:
    ///   - shape: the size of each dimension, outermost first; `[]` for a scalar.
    ///   - value: the element repeated in every position.
    /// - Throws: `AttentionError.invalidShape` if a dimension is negative or the
    ///   size in bytes overflows `Int`; `AttentionError.insufficientMemory` if
    ///   the elements cannot be allocated (physical memory, `ulimit -v`).
    public init(shape: [Int], repeating value: Element) throws {
        let count = try Self.allocatableCount(of: shape, argument: "shape", tensor: "tensor")
        self.shape = shape
        self.scalars = Array(repeating: value, count: count)
    }

    /// Internal initialiser for shapes already known to be valid.
    init(validShape shape: [Int], scalars: [Element]) {
        assert(scalars.count == shape.reduce(1, *))
        self.shape = shape
        self.scalars = scalars
    }

    /// The number of dimensions.
    public var rank: Int { shape.count }

    /// The number of elements, the product of `shape`.
    public var count: Int { scalars.count }

    /// Row-major element strides: `strides[i]` is the distance in elements between
    /// neighbours along dimension `i`.
    public var strides: [Int] { Self.contiguousStrides(for: shape) }

    /// The element at a multi-dimensional index; one index per dimension.
    ///
    /// An out-of-range index is a programming error and traps, as with `Array`.
    public subscript(_ indices: Int...) -> Element {
        get { scalars[flatIndex(indices)] }
        set { scalars[flatIndex(indices)] = newValue }
    }

    /// The same elements viewed with another shape of the same element count.
    ///
    /// The elements keep their row-major order; nothing is copied until one of
    /// the two tensors is changed.
    ///
    /// - Parameter newShape: the new size of each dimension; its product must be
    ///   ``count``.
    /// - Returns: a tensor of shape `newShape` with the same ``scalars``.
    /// - Throws: `AttentionError.elementCountMismatch` if the counts differ,
    ///   `AttentionError.invalidShape` if a dimension is negative.
    public func reshaped(_ newShape: [Int]) throws -> Tensor {
        try Tensor(shape: newShape, scalars: scalars)
    }

    /// The transpose of a matrix: `[rows, columns]` → `[columns, rows]`.
    ///
    /// - Returns: a new tensor whose element `[j, i]` is this one's `[i, j]`.
    /// - Throws: `AttentionError.invalidShape` if the tensor is not rank 2.
    public func transposed() throws -> Tensor {
        guard rank == 2 else {
            throw AttentionError.invalidShape(argument: "self", expected: "[rows, columns]", actual: shape)
        }
        let (rows, columns) = (shape[0], shape[1])
        var elements: [Element] = []
        elements.reserveCapacity(count)
        for j in 0..<columns {
            for i in 0..<rows { elements.append(scalars[i * columns + j]) }
        }
        return Tensor(validShape: [columns, rows], scalars: elements)
    }

    /// Applies `transform` to every element.
    ///
    /// - Parameter transform: called once per element, in row-major order.
    /// - Returns: a tensor of the same shape holding the results.
    /// - Throws: whatever `transform` throws.
    public func map<Result: Sendable>(_ transform: (Element) throws -> Result) rethrows -> Tensor<Result> {
        Tensor<Result>(validShape: shape, scalars: try scalars.map(transform))
    }

    /// Calls `body` with a pointer to the elements, row-major.
    ///
    /// - Parameter body: reads the ``count`` elements; the pointer is valid only
    ///   for the duration of the call.
    /// - Returns: what `body` returns.
    /// - Throws: whatever `body` throws.
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Element>) throws -> R) rethrows -> R {
        try scalars.withUnsafeBufferPointer(body)
    }

    /// Calls `body` with a mutable pointer to the elements, row-major.
    ///
    /// - Parameter body: reads and writes the ``count`` elements in place; the
    ///   pointer is valid only for the duration of the call, and `body` must not
    ///   replace the buffer.
    /// - Returns: what `body` returns.
    /// - Throws: whatever `body` throws.
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (inout UnsafeMutableBufferPointer<Element>) throws -> R
    ) rethrows -> R {
        try scalars.withUnsafeMutableBufferPointer(body)
    }

    static func contiguousStrides(for shape: [Int]) -> [Int] {
        var strides = Array(repeating: 1, count: shape.count)
        var running = 1
        for axis in shape.indices.reversed() {
            strides[axis] = running
            running *= shape[axis]
        }
        return strides
    }

    /// The element count of a tensor that is about to be allocated, checked like
    /// `elementCount(of:argument:)` and then by `MemoryBudget` (physical memory,
    /// the address-space limit, and whether `malloc` can give the bytes now), so
    /// that a shape the process cannot hold is a typed error, not a crash.
    ///
    /// - Parameters:
    ///   - argument: the argument whose shape it is, for a shape error.
    ///   - tensor: what the allocation is, for a memory error (default `argument`).
    static func allocatableCount(of shape: [Int], argument: String, tensor: String? = nil) throws -> Int {
        let count = try elementCount(of: shape, argument: argument)
        let bytes = UInt64(count) * UInt64(MemoryLayout<Element>.stride)
        try MemoryBudget.check(bytes: bytes, tensor: tensor ?? argument, shape: shape)
        return count
    }

    /// The product of `shape`, checked: no negative dimension, and the byte size
    /// of the non-zero dimensions fits in `Int` (so strides and offsets computed
    /// from the shape never overflow, even for an empty tensor).
    static func elementCount(of shape: [Int], argument: String) throws -> Int {
        if shape.contains(where: { $0 < 0 }) {
            throw AttentionError.invalidShape(argument: argument, expected: "non-negative dimensions", actual: shape)
        }
        var bytes = MemoryLayout<Element>.stride
        for dimension in shape where dimension > 0 {
            let (product, overflow) = bytes.multipliedReportingOverflow(by: dimension)
            guard !overflow else {
                throw AttentionError.invalidShape(
                    argument: argument, expected: "a size in bytes that fits in Int (\(Int.max))", actual: shape)
            }
            bytes = product
        }
        return shape.contains(0) ? 0 : bytes / max(MemoryLayout<Element>.stride, 1)
    }

    private func flatIndex(_ indices: [Int]) -> Int {
        precondition(indices.count == shape.count, "Tensor of rank \(shape.count) indexed with \(indices.count) indices")
        var flat = 0
        for (axis, index) in indices.enumerated() {
            precondition(index >= 0 && index < shape[axis], "index \(index) out of range 0..<\(shape[axis]) on axis \(axis)")
            flat = flat * shape[axis] + index
        }
        return flat
    }
}

extension Tensor: Equatable where Element: Equatable {}

extension Tensor where Element == Float {
    /// A tensor of zeros.
    ///
    /// - Parameter shape: the size of each dimension, outermost first.
    /// - Returns: a tensor of `shape` whose every element is `0`.
    /// - Throws: `AttentionError.invalidShape` if a dimension is negative,
    ///   `AttentionError.insufficientMemory` if it cannot be allocated.
    public static func zeros(_ shape: [Int]) throws -> Tensor {
        try Tensor(shape: shape, repeating: 0)
    }

    /// A tensor of standard-normal samples from a seeded generator, so that a test
    /// or benchmark that uses it reproduces exactly (SplitMix64 + Box–Muller).
    ///
    /// The samples are not those of `torch.randn` for any seed.
    ///
    /// - Parameters:
    ///   - shape: the size of each dimension, outermost first.
    ///   - seed: the generator's seed; the same seed gives the same tensor.
    /// - Returns: a tensor of `shape` with mean 0 and standard deviation 1.
    /// - Throws: `AttentionError.invalidShape` if a dimension is negative,
    ///   `AttentionError.insufficientMemory` if it cannot be allocated.
    public static func randomNormal(_ shape: [Int], seed: UInt64) throws -> Tensor {
        var generator = SplitMix64(seed: seed)
        var tensor = try zeros(shape)
        tensor.withUnsafeMutableBufferPointer { buffer in
            for index in buffer.indices {
                buffer[index] = generator.nextNormal()
            }
        }
        return tensor
    }

    /// The largest absolute elementwise difference to `other` (NaN if either holds NaN
    /// at the same place), or `nil` if the shapes differ.
    ///
    /// - Parameter other: the tensor to compare with, of the same shape.
    /// - Returns: `max |self[i] − other[i]|` over all elements (0 for empty
    ///   tensors), NaN if a difference is NaN, or `nil` if the shapes differ.
    public func maxAbsoluteDifference(to other: Tensor<Float>) -> Float? {
        guard shape == other.shape else { return nil }
        var largest: Float = 0
        for (a, b) in zip(scalars, other.scalars) {
            let difference = abs(a - b)
            if difference.isNaN { return .nan }
            largest = max(largest, difference)
        }
        return largest
    }
}
