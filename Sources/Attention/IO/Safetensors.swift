import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The element types this package reads and writes in safetensors files.
///
/// The raw values are the format's `dtype` strings
/// (<https://huggingface.co/docs/safetensors>); elements are stored little-endian.
public enum SafetensorsDType: String, Sendable, CaseIterable {
    /// IEEE 754 binary32, `Float`.
    case f32 = "F32"
    /// Unsigned 8-bit integer, `UInt8`.
    case u8 = "U8"
    /// Signed 32-bit integer, `Int32`.
    case i32 = "I32"
    /// One byte per element; zero is `false`, anything else `true` on reading.
    case bool = "BOOL"

    /// The size of one element in bytes.
    public var byteSize: Int {
        switch self {
        case .f32, .i32: return 4
        case .u8, .bool: return 1
        }
    }
}

/// An in-memory safetensors file: named tensors plus string metadata.
///
/// The format (<https://huggingface.co/docs/safetensors>) is an 8-byte
/// little-endian `UInt64` header length `N`, then `N` bytes of UTF-8 JSON
///
///     {"__metadata__": {"key": "value", …},
///      "name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, …}
///
/// then the data buffer, in which each tensor occupies bytes `begin..<end`
/// (offsets relative to the start of the buffer) as row-major little-endian
/// elements. Loading validates the whole header before any tensor is read, as
/// strictly as the reference implementation: shapes must be non-negative and
/// their byte counts fit in `Int`, each tensor's byte range must lie in the
/// buffer and hold exactly `elements × dtype size` bytes, and the ranges must
/// cover the buffer without overlaps, holes or trailing bytes. Any byte string
/// either loads or throws ``SafetensorsError``; none traps.
///
/// Tensor data read from a file stays a slice of the loaded bytes until an
/// accessor decodes it, so loading is one read plus the header parse.
public struct SafetensorsFile: Sendable, Equatable {
    /// One tensor's dtype, shape and raw little-endian bytes.
    struct Entry: Sendable, Equatable {
        var dtype: SafetensorsDType
        var shape: [Int]
        /// Exactly `elements × dtype.byteSize` bytes; may be a slice of the
        /// loaded file, so its indices need not start at zero.
        var bytes: Data
    }

    /// The reserved header key that holds the metadata; no tensor may have it as
    /// its name.
    static let metadataKey = "__metadata__"

    private var entries: [String: Entry] = [:]

    /// The file's `__metadata__`: free-form string keys and string values
    /// (the format allows nothing else). Written only when non-empty.
    public var metadata: [String: String] = [:]

    /// The names of all tensors, sorted.
    public var tensorNames: [String] { entries.keys.sorted() }

    /// An empty file: no tensors, no metadata.
    public init() {}

    /// Reads and validates a safetensors file.
    ///
    /// - Parameter url: a `file:` URL.
    /// - Throws: `SafetensorsError.ioFailure` (with the path and the operating
    ///   system's reason) if the file cannot be read, or any validation error of
    ///   ``init(data:)``.
    public init(contentsOf url: URL) throws {
        guard url.isFileURL else {
            throw SafetensorsError.ioFailure(path: url.absoluteString, reason: "expected a file URL")
        }
        try self.init(data: try FileIO.readContents(of: url))
    }

    /// Parses and validates a safetensors file held in memory.
    ///
    /// `data` may be any `Data`, a slice included; nothing about its alignment is
    /// assumed.
    ///
    /// - Throws: `SafetensorsError.fileTooShort`, `.headerLengthExceedsFile`,
    ///   `.headerNotUTF8`, `.invalidJSON`, `.headerNotObject`,
    ///   `.duplicateTensorName`, `.invalidMetadata`, `.invalidEntry`,
    ///   `.unsupportedDType`, `.invalidShape`, `.shapeOverflow`,
    ///   `.offsetsReversed`, `.offsetsOutOfRange`, `.byteCountMismatch`,
    ///   `.overlappingTensors` or `.dataBufferGap`, for the first problem found.
    public init(data: Data) throws {
        let total = data.count
        guard total >= 8 else { throw SafetensorsError.fileTooShort(byteCount: total) }
        let declared = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 0, as: UInt64.self)) }
        let available = total - 8
        guard declared <= UInt64(available) else {
            throw SafetensorsError.headerLengthExceedsFile(declared: declared, available: available)
        }
        let headerLength = Int(declared)
        let headerStart = data.startIndex + 8
        let bufferStart = headerStart + headerLength
        let bufferLength = available - headerLength
        let headerBytes = [UInt8](data[headerStart..<bufferStart])

        let members = try Self.parseHeader(headerBytes)

        var seen = Set<String>()
        var spans: [(name: String, range: Range<Int>)] = []
        var parsed: [String: (dtype: SafetensorsDType, shape: [Int])] = [:]
        for (name, value) in members {
            guard seen.insert(name).inserted else { throw SafetensorsError.duplicateTensorName(name) }
            if name == Self.metadataKey {
                metadata = try Self.parseMetadata(value)
                continue
            }
            let entry = try Self.parseEntry(name: name, value: value, bufferLength: bufferLength)
            parsed[name] = (entry.dtype, entry.shape)
            spans.append((name, entry.range))
        }

        // The ranges must tile the buffer: sorted by position, each begins where
        // the previous one ended, and the last ends at the end of the buffer.
        spans.sort { ($0.range.lowerBound, $0.range.upperBound, $0.name) < ($1.range.lowerBound, $1.range.upperBound, $1.name) }
        var cursor = 0
        var previous: String?
        for span in spans {
            if span.range.lowerBound < cursor, let previous {
                throw SafetensorsError.overlappingTensors(
                    first: previous, second: span.name, firstEnd: cursor, secondBegin: span.range.lowerBound)
            }
            if span.range.lowerBound > cursor {
                throw SafetensorsError.dataBufferGap(begin: cursor, end: span.range.lowerBound)
            }
            if !span.range.isEmpty || previous == nil {
                previous = span.name
            }
            cursor = span.range.upperBound
        }
        if cursor != bufferLength {
            throw SafetensorsError.dataBufferGap(begin: cursor, end: bufferLength)
        }

        for span in spans {
            let info = parsed[span.name]!
            let bytes = data[(bufferStart + span.range.lowerBound)..<(bufferStart + span.range.upperBound)]
            entries[span.name] = Entry(dtype: info.dtype, shape: info.shape, bytes: bytes)
        }
    }

    // MARK: Inspecting

    /// The element type of a tensor.
    ///
    /// - Throws: `SafetensorsError.tensorNotFound` if there is no such tensor.
    public func dtype(of name: String) throws -> SafetensorsDType {
        try entry(name).dtype
    }

    /// The shape of a tensor, outermost dimension first; `[]` for a scalar.
    ///
    /// - Throws: `SafetensorsError.tensorNotFound` if there is no such tensor.
    public func shape(of name: String) throws -> [Int] {
        try entry(name).shape
    }

    // MARK: Reading tensors

    /// A `F32` tensor.
    ///
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` if the
    ///   tensor is not `F32` (no conversion is done).
    public func floatTensor(_ name: String) throws -> Tensor<Float> {
        let entry = try entry(name, accepting: [.f32])
        var scalars: [Float] = Self.decode(entry.bytes)
        #if _endian(big)
        for index in scalars.indices { scalars[index] = Float(bitPattern: UInt32(littleEndian: scalars[index].bitPattern)) }
        #endif
        return Tensor(validShape: entry.shape, scalars: scalars)
    }

    /// A `U8` tensor.
    ///
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` if the
    ///   tensor is not `U8`.
    public func uint8Tensor(_ name: String) throws -> Tensor<UInt8> {
        let entry = try entry(name, accepting: [.u8])
        return Tensor(validShape: entry.shape, scalars: Self.decode(entry.bytes))
    }

    /// An `I32` tensor.
    ///
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` if the
    ///   tensor is not `I32`.
    public func int32Tensor(_ name: String) throws -> Tensor<Int32> {
        let entry = try entry(name, accepting: [.i32])
        var scalars: [Int32] = Self.decode(entry.bytes)
        #if _endian(big)
        for index in scalars.indices { scalars[index] = Int32(littleEndian: scalars[index]) }
        #endif
        return Tensor(validShape: entry.shape, scalars: scalars)
    }

    /// A boolean tensor from a `U8` or `BOOL` tensor: zero is `false`, any other
    /// byte `true`.
    ///
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` if the
    ///   tensor is neither `U8` nor `BOOL`.
    public func boolTensor(_ name: String) throws -> Tensor<Bool> {
        let entry = try entry(name, accepting: [.u8, .bool])
        let bytes: [UInt8] = Self.decode(entry.bytes)
        return Tensor(validShape: entry.shape, scalars: bytes.map { $0 != 0 })
    }

    // MARK: Adding tensors

    /// Adds a tensor as `F32`, replacing any tensor of the same name.
    ///
    /// - Precondition: `name` is not `"__metadata__"`, which the format reserves.
    public mutating func set(_ name: String, _ tensor: Tensor<Float>) {
        #if _endian(big)
        let scalars = tensor.scalars.map { Float(bitPattern: $0.bitPattern.littleEndian) }
        #else
        let scalars = tensor.scalars
        #endif
        store(name, Entry(dtype: .f32, shape: tensor.shape, bytes: scalars.withUnsafeBytes { Data($0) }))
    }

    /// Adds a tensor as `U8`, replacing any tensor of the same name.
    ///
    /// - Precondition: `name` is not `"__metadata__"`, which the format reserves.
    public mutating func set(_ name: String, _ tensor: Tensor<UInt8>) {
        store(name, Entry(dtype: .u8, shape: tensor.shape, bytes: Data(tensor.scalars)))
    }

    /// Adds a tensor as `I32`, replacing any tensor of the same name.
    ///
    /// - Precondition: `name` is not `"__metadata__"`, which the format reserves.
    public mutating func set(_ name: String, _ tensor: Tensor<Int32>) {
        let scalars = tensor.scalars.map(\.littleEndian)
        store(name, Entry(dtype: .i32, shape: tensor.shape, bytes: scalars.withUnsafeBytes { Data($0) }))
    }

    /// Adds a boolean tensor, replacing any tensor of the same name.
    ///
    /// It is stored as `U8` (`true` = 1, `false` = 0), not as `BOOL`, like the
    /// project's golden masks (`mask_keep`, `key_padding_keep`), so that tools
    /// that read those read this too; ``boolTensor(_:)`` reads it back.
    ///
    /// - Precondition: `name` is not `"__metadata__"`, which the format reserves.
    public mutating func set(_ name: String, _ tensor: Tensor<Bool>) {
        store(name, Entry(dtype: .u8, shape: tensor.shape, bytes: Data(tensor.scalars.map { $0 ? 1 : 0 })))
    }

    // MARK: Writing

    /// The file's bytes.
    ///
    /// The output is deterministic: the header is compact JSON with
    /// `__metadata__` first (only if non-empty, its keys sorted), then the
    /// tensors sorted by name, each as `{"dtype":…,"shape":[…],"data_offsets":[begin,end]}`;
    /// it is padded with spaces to a multiple of 8 bytes. The data buffer holds
    /// the tensors in the same order, without gaps.
    public func serialized() -> Data {
        let names = tensorNames
        let header = Self.header(
            tensors: names.map { (name: $0, dtype: entries[$0]!.dtype, shape: entries[$0]!.shape, byteCount: entries[$0]!.bytes.count) },
            metadata: metadata)
        var data = Data(capacity: header.count + names.reduce(0) { $0 + entries[$1]!.bytes.count })
        data.append(contentsOf: header)
        for name in names {
            data.append(entries[name]!.bytes)
        }
        return data
    }

    /// The 8-byte length and the JSON header of a file holding `tensors` in this
    /// order, back to back (the layout ``serialized()`` describes).
    static func header(
        tensors: [(name: String, dtype: SafetensorsDType, shape: [Int], byteCount: Int)], metadata: [String: String]
    ) -> [UInt8] {
        var members: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            members.append("\(jsonString(metadataKey)):{\(pairs.joined(separator: ","))}")
        }
        var offset = 0
        for tensor in tensors {
            let end = offset + tensor.byteCount
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            members.append(
                "\(jsonString(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(offset),\(end)]}")
            offset = end
        }
        var json = Array("{\(members.joined(separator: ","))}".utf8)
        json.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - json.count % 8) % 8))
        var header: [UInt8] = []
        header.reserveCapacity(8 + json.count)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { header.append(contentsOf: $0) }
        header.append(contentsOf: json)
        return header
    }

    /// Writes ``serialized()`` to a file, through ``OutputFile``: the header and
    /// each tensor's bytes go straight to the destination, without first
    /// assembling the file in memory.
    ///
    /// What is at the path keeps what it is: a symbolic link is written through,
    /// a FIFO or character device is streamed to, and a regular file is replaced
    /// atomically (a temporary file in its folder, flushed, renamed over it) with
    /// its mode and owner kept, so a reader sees the old file or the complete new
    /// one; on a failure the temporary file is removed and the destination left
    /// as it was. A new file gets mode 0666 less the umask. See ``OutputFile``.
    ///
    /// - Parameter url: a `file:` URL; the folder of its final target must exist.
    /// - Throws: `SafetensorsError.ioFailure` with the path and the operating
    ///   system's reason (also for a directory, a socket or a block device).
    public func write(to url: URL) throws {
        let names = tensorNames
        let header = Self.header(
            tensors: names.map { (name: $0, dtype: entries[$0]!.dtype, shape: entries[$0]!.shape, byteCount: entries[$0]!.bytes.count) },
            metadata: metadata)
        do {
            try OutputFile.write(to: url) { writer in
                try writer.write(contentsOf: header)
                for name in names { try writer.write(entries[name]!.bytes) }
            }
        } catch let error as OutputFileError {
            throw SafetensorsError.ioFailure(path: error.path, reason: error.reason)
        }
    }

    // MARK: Private

    private func entry(_ name: String) throws -> Entry {
        guard let entry = entries[name] else {
            throw SafetensorsError.tensorNotFound(name: name, available: tensorNames)
        }
        return entry
    }

    private func entry(_ name: String, accepting dtypes: [SafetensorsDType]) throws -> Entry {
        let entry = try entry(name)
        guard dtypes.contains(entry.dtype) else {
            throw SafetensorsError.dtypeMismatch(tensor: name, expected: dtypes, actual: entry.dtype)
        }
        return entry
    }

    private mutating func store(_ name: String, _ entry: Entry) {
        precondition(name != Self.metadataKey, "\"\(Self.metadataKey)\" is reserved for metadata and cannot name a tensor")
        entries[name] = entry
    }

    /// Copies raw bytes into a new array of `T`, byte for byte (no alignment of
    /// `bytes` assumed, no byte swapping).
    private static func decode<T: BitwiseCopyable>(_ bytes: Data) -> [T] {
        let count = bytes.count / MemoryLayout<T>.stride
        return [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 {
                bytes.withUnsafeBytes { raw in
                    UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: raw[0..<count * MemoryLayout<T>.stride]))
                }
            }
            initialized = count
        }
    }

    /// Checks the header bytes and returns the top-level object's members.
    private static func parseHeader(_ bytes: [UInt8]) throws -> [(key: String, value: HeaderJSON)] {
        if let offset = HeaderJSONParser.firstInvalidUTF8Offset(bytes) {
            throw SafetensorsError.headerNotUTF8(offset: offset)
        }
        let json = try HeaderJSONParser.parse(bytes)
        guard case let .object(members) = json else {
            throw SafetensorsError.headerNotObject(actual: json.kindDescription)
        }
        // The format requires the header to begin with "{"; JSON alone would
        // also allow leading whitespace.
        guard bytes.first == UInt8(ascii: "{") else {
            throw SafetensorsError.invalidJSON(offset: 0, reason: "expected the header to begin with '{', got whitespace")
        }
        return members
    }

    private static func parseMetadata(_ value: HeaderJSON) throws -> [String: String] {
        guard case let .object(members) = value else {
            if case .null = value { return [:] }
            throw SafetensorsError.invalidMetadata(
                key: metadataKey, expected: "an object of string values", actual: value.kindDescription)
        }
        var metadata: [String: String] = [:]
        for (key, value) in members {
            guard case let .string(text) = value else {
                throw SafetensorsError.invalidMetadata(key: key, expected: "a string", actual: value.summary)
            }
            guard metadata.updateValue(text, forKey: key) == nil else {
                throw SafetensorsError.invalidMetadata(key: key, expected: "a key that appears once", actual: "a repeated key")
            }
        }
        return metadata
    }

    private static func parseEntry(
        name: String, value: HeaderJSON, bufferLength: Int
    ) throws -> (dtype: SafetensorsDType, shape: [Int], range: Range<Int>) {
        guard case let .object(members) = value else {
            throw SafetensorsError.invalidEntry(
                tensor: name, field: "entry", expected: "an object with dtype, shape and data_offsets",
                actual: value.summary)
        }
        var fields: [String: HeaderJSON] = [:]
        for (key, value) in members where ["dtype", "shape", "data_offsets"].contains(key) {
            guard fields.updateValue(value, forKey: key) == nil else {
                throw SafetensorsError.invalidEntry(tensor: name, field: key, expected: "one field", actual: "a repeated field")
            }
        }

        // dtype
        guard let dtypeValue = fields["dtype"] else {
            throw SafetensorsError.invalidEntry(tensor: name, field: "dtype", expected: "a string such as \"F32\"", actual: "no such field")
        }
        guard case let .string(dtypeName) = dtypeValue else {
            throw SafetensorsError.invalidEntry(tensor: name, field: "dtype", expected: "a string such as \"F32\"", actual: dtypeValue.summary)
        }
        guard let dtype = SafetensorsDType(rawValue: dtypeName) else {
            throw SafetensorsError.unsupportedDType(tensor: name, dtype: dtypeName)
        }

        // shape
        let shapeExpectation = "an array of integers"
        guard let shapeValue = fields["shape"] else {
            throw SafetensorsError.invalidEntry(tensor: name, field: "shape", expected: shapeExpectation, actual: "no such field")
        }
        guard case let .array(dimensionValues) = shapeValue else {
            throw SafetensorsError.invalidEntry(tensor: name, field: "shape", expected: shapeExpectation, actual: shapeValue.summary)
        }
        var shape: [Int] = []
        shape.reserveCapacity(dimensionValues.count)
        for dimensionValue in dimensionValues {
            guard let dimension = dimensionValue.intValue else {
                throw SafetensorsError.invalidEntry(tensor: name, field: "shape", expected: shapeExpectation, actual: shapeValue.summary)
            }
            shape.append(dimension)
        }
        if shape.contains(where: { $0 < 0 }) {
            throw SafetensorsError.invalidShape(tensor: name, shape: shape)
        }
        // The product of the non-zero dimensions must fit, not just the full
        // product: then every partial product (strides, row-major indexing) fits.
        var nonZeroProduct = dtype.byteSize
        for dimension in shape where dimension != 0 {
            let (product, overflow) = nonZeroProduct.multipliedReportingOverflow(by: dimension)
            if overflow { throw SafetensorsError.shapeOverflow(tensor: name, shape: shape, dtype: dtype) }
            nonZeroProduct = product
        }
        let expectedBytes = shape.contains(0) ? 0 : nonZeroProduct

        // data_offsets
        let offsetsExpectation = "[begin, end] with two non-negative integers"
        guard let offsetsValue = fields["data_offsets"] else {
            throw SafetensorsError.invalidEntry(tensor: name, field: "data_offsets", expected: offsetsExpectation, actual: "no such field")
        }
        guard case let .array(offsetValues) = offsetsValue, offsetValues.count == 2,
              let begin = offsetValues[0].intValue, let end = offsetValues[1].intValue, begin >= 0, end >= 0
        else {
            throw SafetensorsError.invalidEntry(tensor: name, field: "data_offsets", expected: offsetsExpectation, actual: offsetsValue.summary)
        }
        guard begin <= end else {
            throw SafetensorsError.offsetsReversed(tensor: name, begin: begin, end: end)
        }
        guard end <= bufferLength else {
            throw SafetensorsError.offsetsOutOfRange(tensor: name, begin: begin, end: end, bufferLength: bufferLength)
        }
        guard end - begin == expectedBytes else {
            throw SafetensorsError.byteCountMismatch(
                tensor: name, dtype: dtype, shape: shape, expected: expectedBytes, actual: end - begin)
        }
        return (dtype, shape, begin..<end)
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped,
    /// everything else as UTF-8.
    static func jsonString(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case "\r": result += "\\r"
            case "\t": result += "\\t"
            case "\u{08}": result += "\\b"
            case "\u{0C}": result += "\\f"
            case "\u{00}"..."\u{1F}":
                let digits = String(scalar.value, radix: 16, uppercase: true)
                result += "\\u" + String(repeating: "0", count: 4 - digits.count) + digits
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// File reading on POSIX file descriptors, so that errors
/// carry the operating system's reason.
private enum FileIO {
    static func readContents(of url: URL) throws -> Data {
        let path = url.path
        return try url.withUnsafeFileSystemRepresentation { cPath -> Data in
            guard let cPath else { throw SafetensorsError.ioFailure(path: path, reason: "not representable as a file system path") }
            let descriptor = retryingOnInterrupt { open(cPath, O_RDONLY | O_CLOEXEC) }
            guard descriptor >= 0 else { throw failure(path) }
            defer { close(descriptor) }

            var info = stat()
            guard fstat(descriptor, &info) == 0 else { throw failure(path) }
            guard (info.st_mode & S_IFMT) != S_IFDIR else {
                throw SafetensorsError.ioFailure(path: path, reason: "is a directory")
            }
            let size = max(0, Int(info.st_size))
            do {
                try MemoryBudget.check(bytes: UInt64(size), tensor: "file", shape: [size])
            } catch let AttentionError.insufficientMemory(_, _, bytes, reason) {
                throw SafetensorsError.ioFailure(path: path, reason: "its \(bytes) bytes cannot be read into memory: \(reason)")
            }
            var data = Data(capacity: size)
            var chunk = [UInt8](repeating: 0, count: 1 << 20)
            while true {
                let count = chunk.withUnsafeMutableBytes { buffer in
                    retryingOnInterrupt { read(descriptor, buffer.baseAddress, buffer.count) }
                }
                if count < 0 { throw failure(path) }
                if count == 0 { return data }
                data.append(contentsOf: chunk[0..<count])
            }
        }
    }

    private static func retryingOnInterrupt<Result: BinaryInteger>(_ call: () -> Result) -> Result {
        while true {
            let result = call()
            if result >= 0 || errno != EINTR { return result }
        }
    }

    /// An I/O error for `path` with `errno`'s message, after an optional context.
    private static func failure(_ path: String, _ context: String? = nil) -> SafetensorsError {
        let reason = String(cString: strerror(errno))
        return .ioFailure(path: path, reason: context.map { "\($0): \(reason)" } ?? reason)
    }
}
