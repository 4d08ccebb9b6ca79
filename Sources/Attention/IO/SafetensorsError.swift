/// The errors that reading, validating and writing safetensors files throw.
///
/// Every case names the tensor or header field at fault and gives the expected and
/// the actual value, so that the one-line ``description`` alone says what is wrong.
/// Byte offsets inside the data buffer are relative to the start of the buffer
/// (the byte after the JSON header), as `data_offsets` are in the format
/// (<https://huggingface.co/docs/safetensors>).
public enum SafetensorsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input holds fewer than the 8 bytes of the little-endian header length.
    case fileTooShort(byteCount: Int)
    /// The header length in the first 8 bytes is larger than the number of bytes
    /// that follow them.
    case headerLengthExceedsFile(declared: UInt64, available: Int)
    /// The header is not valid UTF-8; `offset` is the first bad byte, counted from
    /// the start of the header.
    case headerNotUTF8(offset: Int)
    /// The header is not valid JSON; `offset` counts bytes from the start of the
    /// header.
    case invalidJSON(offset: Int, reason: String)
    /// The header is valid JSON but not an object (`actual` says what it is).
    case headerNotObject(actual: String)
    /// The header lists a tensor name (or `__metadata__`) more than once.
    case duplicateTensorName(String)
    /// A tensor entry is not an object, or its `dtype`, `shape` or `data_offsets`
    /// field is missing, repeated or of the wrong JSON type. `field` is `"entry"`
    /// when the entry itself is not an object.
    case invalidEntry(tensor: String, field: String, expected: String, actual: String)
    /// A tensor's `dtype` is not one of the format's (``SafetensorsDType``).
    case unsupportedDType(tensor: String, dtype: String)
    /// A tensor's shape has a negative dimension.
    case invalidShape(tensor: String, shape: [Int])
    /// A tensor of a packed sub-byte dtype (`F4`, `F6_E2M3`, `F6_E3M2`) whose
    /// `elements × bitWidth` bits are not a whole number of bytes.
    case bitCountNotWholeBytes(tensor: String, dtype: SafetensorsDType, shape: [Int], bits: Int)
    /// A tensor's element count or byte count does not fit in `Int`.
    case shapeOverflow(tensor: String, shape: [Int], dtype: SafetensorsDType)
    /// A tensor's `data_offsets` has its begin after its end.
    case offsetsReversed(tensor: String, begin: Int, end: Int)
    /// A tensor's `data_offsets` reach past the end of the data buffer.
    case offsetsOutOfRange(tensor: String, begin: Int, end: Int, bufferLength: Int)
    /// A tensor's `data_offsets` span a different number of bytes than its shape
    /// and dtype need (`expected` = element count × dtype size).
    case byteCountMismatch(tensor: String, dtype: SafetensorsDType, shape: [Int], expected: Int, actual: Int)
    /// Two tensors share bytes: `second` begins at `secondBegin`, before `first`
    /// ends at `firstEnd`.
    case overlappingTensors(first: String, second: String, firstEnd: Int, secondBegin: Int)
    /// Bytes `begin..<end` of the data buffer belong to no tensor. The format
    /// forbids holes and trailing bytes, as the reference implementation does.
    case dataBufferGap(begin: Int, end: Int)
    /// `__metadata__` is not an object of string values; `key` is the offending
    /// key, or `"__metadata__"` when the whole value is not an object.
    case invalidMetadata(key: String, expected: String, actual: String)
    /// No tensor of that name; `available` lists the names there are, sorted.
    case tensorNotFound(name: String, available: [String])
    /// The tensor exists but has a dtype that the accessor does not read
    /// (`expected` lists the ones it does).
    case dtypeMismatch(tensor: String, expected: [SafetensorsDType], actual: SafetensorsDType)
    /// An integer accessor met a stored value that the requested Swift type
    /// cannot hold: element `index` (row-major) of a `dtype` tensor is `value`,
    /// outside `targetType`'s range `targetRange` (`min...max`).
    case valueOutOfRange(tensor: String, index: Int, value: String, dtype: SafetensorsDType, targetType: String, targetRange: String)
    /// Reading or writing a file failed; `reason` is the operating system's.
    case ioFailure(path: String, reason: String)

    /// A one-line message naming the tensor or field, the expected and the actual
    /// value; names are quoted with control characters escaped.
    public var description: String {
        switch self {
        case let .fileTooShort(byteCount):
            return "safetensors data: expected at least 8 bytes for the header length, got \(byteCount)"
        case let .headerLengthExceedsFile(declared, available):
            return "safetensors header length: declared \(declared) bytes, but only \(available) bytes follow the 8-byte length"
        case let .headerNotUTF8(offset):
            return "safetensors header: expected UTF-8 JSON, got an invalid UTF-8 sequence at header byte \(offset)"
        case let .invalidJSON(offset, reason):
            return "safetensors header: invalid JSON at header byte \(offset): \(reason)"
        case let .headerNotObject(actual):
            return "safetensors header: expected a JSON object, got \(actual)"
        case let .duplicateTensorName(name):
            return "safetensors header: expected unique names, got \(quoted(name)) more than once"
        case let .invalidEntry(tensor, field, expected, actual):
            return "tensor \(quoted(tensor)) \(field): expected \(expected), got \(actual)"
        case let .unsupportedDType(tensor, dtype):
            let supported = SafetensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            return "tensor \(quoted(tensor)) dtype: expected one of \(supported), got unsupported \(quoted(dtype))"
        case let .invalidShape(tensor, shape):
            return "tensor \(quoted(tensor)) shape: expected non-negative dimensions, got \(shape)"
        case let .bitCountNotWholeBytes(tensor, dtype, shape, bits):
            return "tensor \(quoted(tensor)) shape: expected a whole number of bytes (\(dtype.bitWidth) bits per \(dtype.rawValue) element), got \(bits) bits for \(shape)"
        case let .shapeOverflow(tensor, shape, dtype):
            return "tensor \(quoted(tensor)) shape: expected a byte count that fits in Int, got \(shape) of \(dtype.rawValue)"
        case let .offsetsReversed(tensor, begin, end):
            return "tensor \(quoted(tensor)) data_offsets: expected begin <= end, got [\(begin), \(end)]"
        case let .offsetsOutOfRange(tensor, begin, end, bufferLength):
            return "tensor \(quoted(tensor)) data_offsets: expected end <= \(bufferLength) (data buffer size), got [\(begin), \(end)]"
        case let .byteCountMismatch(tensor, dtype, shape, expected, actual):
            return "tensor \(quoted(tensor)) data_offsets: expected \(expected) bytes for \(dtype.rawValue) \(shape), got \(actual)"
        case let .overlappingTensors(first, second, firstEnd, secondBegin):
            return "tensors \(quoted(first)) and \(quoted(second)) overlap: expected \(quoted(second)) to begin at byte \(firstEnd) or later, got \(secondBegin)"
        case let .dataBufferGap(begin, end):
            return "safetensors data buffer: expected every byte to belong to a tensor, got unused bytes [\(begin), \(end))"
        case let .invalidMetadata(key, expected, actual):
            return "__metadata__ \(quoted(key)): expected \(expected), got \(actual)"
        case let .tensorNotFound(name, available):
            let shown = available.prefix(20).map(quoted).joined(separator: ", ")
            let more = available.count > 20 ? ", … (\(available.count - 20) more)" : ""
            return "tensor \(quoted(name)): not found; available: [\(shown)\(more)]"
        case let .dtypeMismatch(tensor, expected, actual):
            let names = expected.map(\.rawValue)
            let wanted = names.count <= 2
                ? names.joined(separator: " or ")
                : names.dropLast().joined(separator: ", ") + " or " + names.last!
            return "tensor \(quoted(tensor)) dtype: expected \(wanted), got \(actual.rawValue)"
        case let .valueOutOfRange(tensor, index, value, dtype, targetType, targetRange):
            return "tensor \(quoted(tensor)) element \(index): expected a value that fits in \(targetType) (\(targetRange)), got \(value) (\(dtype.rawValue))"
        case let .ioFailure(path, reason):
            return "\(path): \(reason)"
        }
    }
}

/// A name in double quotes with control characters escaped, so that every
/// message stays on one line.
private func quoted(_ name: String) -> String {
    String(reflecting: name)
}
