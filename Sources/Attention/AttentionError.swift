/// The errors that the attention API throws for bad input.
///
/// Every case names the argument at fault and gives the expected and the actual
/// value, so that the message alone says what to fix.
public enum AttentionError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A tensor's shape does not fit: wrong rank, a dimension that disagrees with
    /// another argument, a mask that cannot broadcast, or a negative dimension.
    case invalidShape(argument: String, expected: String, actual: [Int])
    /// The element count does not match the product of the shape.
    case elementCountMismatch(shape: [Int], expected: Int, actual: Int)
    /// A scalar argument is out of its domain (scale not finite, dropout
    /// probability outside [0, 1), heads not dividing a dimension, …).
    case invalidValue(argument: String, expected: String, actual: String)
    /// An input sequence is longer than the layer's `contextLength`.
    case sequenceTooLong(argument: String, contextLength: Int, actual: Int)
    /// A tensor that the input's sizes call for cannot be allocated: `bytes`
    /// exceed the physical memory or the address-space limit (`ulimit -v`), or
    /// the allocator refused them; `reason` says which. Checked before the
    /// allocation, so the process does not stop.
    case insufficientMemory(tensor: String, shape: [Int], bytes: UInt64, reason: String)
    /// The C kernel rejected its parameters; this indicates a bug in the Swift
    /// layer that should have caught the problem first.
    case kernelFailure(code: Int, message: String)

    /// A one-line message: the argument, then what was expected and what was
    /// given, e.g. `keys: expected shape headDim 64 as in queries [1, 8, 128, 64], got [1, 2, 128, 32]`.
    public var description: String {
        switch self {
        case let .invalidShape(argument, expected, actual):
            return "\(argument): expected shape \(expected), got \(actual)"
        case let .elementCountMismatch(shape, expected, actual):
            return "scalars: shape \(shape) needs \(expected) elements, got \(actual)"
        case let .invalidValue(argument, expected, actual):
            return "\(argument): expected \(expected), got \(actual)"
        case let .sequenceTooLong(argument, contextLength, actual):
            return "\(argument): sequence length \(actual) exceeds contextLength \(contextLength)"
        case let .insufficientMemory(tensor, shape, bytes, reason):
            return "\(tensor) \(shape): needs \(bytes) bytes, \(reason)"
        case let .kernelFailure(code, message):
            return "attention kernel failed with status \(code): \(message)"
        }
    }
}
