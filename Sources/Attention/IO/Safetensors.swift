import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

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
/// buffer and hold exactly `elements × bitWidth / 8` bytes (a whole number for
/// the sub-byte dtypes), and the ranges must cover the buffer without overlaps,
/// holes or trailing bytes. Any byte string either loads or throws
/// ``SafetensorsError``; none traps.
///
/// Every dtype of the format parses (``SafetensorsDType``), so a checkpoint with
/// `BF16` weights, `I64` ids and `F8_E4M3` experts loads whole. Tensor data read
/// from a file stays a slice of the loaded bytes until an accessor decodes it,
/// so loading is one read plus the header parse, and a tensor that is never
/// asked for is never decoded:
///
/// - ``floatTensor(_:)`` reads `F32` as stored, widens `F16`, `BF16` and the
///   `F8_*` formats exactly, and rounds `F64` to the nearest `Float`;
///   ``doubleTensor(_:)`` reads the same dtypes exactly.
/// - ``integerTensor(_:as:)`` (and ``int64Tensor(_:)``, ``int32Tensor(_:)``,
///   ``uint8Tensor(_:)``) reads any integer dtype, checking that each value fits.
/// - ``boolTensor(_:)`` reads `BOOL` and the integer dtypes (zero is `false`).
/// - ``data(of:)`` returns any tensor's stored bytes, for the dtypes that have
///   no decoder (`F4`, `F6_*`, `C64`).
///
/// An accessor asked for a dtype it does not read throws
/// `SafetensorsError.dtypeMismatch` naming the tensor, the dtypes it reads and
/// the tensor's own: the float accessors read no integer or `BOOL` tensor, the
/// integer accessors no float or `BOOL` tensor, and ``boolTensor(_:)`` no float
/// tensor.
public struct SafetensorsFile: Sendable, Equatable {
    /// One tensor's dtype, shape and raw little-endian bytes.
    struct Entry: Sendable, Equatable {
        var dtype: SafetensorsDType
        var shape: [Int]
        /// Exactly `elements × dtype.bitWidth / 8` bytes; may be a slice of the
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
    /// - Parameter data: the whole file: header length, JSON header and data buffer.
    /// - Throws: `SafetensorsError.fileTooShort`, `.headerLengthExceedsFile`,
    ///   `.headerNotUTF8`, `.invalidJSON`, `.headerNotObject`,
    ///   `.duplicateTensorName`, `.invalidMetadata`, `.invalidEntry`,
    ///   `.unsupportedDType` (a dtype string the format does not define),
    ///   `.invalidShape`, `.shapeOverflow`, `.bitCountNotWholeBytes`,
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
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: its element type.
    /// - Throws: `SafetensorsError.tensorNotFound` if there is no such tensor.
    public func dtype(of name: String) throws -> SafetensorsDType {
        try entry(name).dtype
    }

    /// The shape of a tensor, outermost dimension first; `[]` for a scalar.
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: its dimensions, outermost first.
    /// - Throws: `SafetensorsError.tensorNotFound` if there is no such tensor.
    public func shape(of name: String) throws -> [Int] {
        try entry(name).shape
    }

    // MARK: Reading tensors

    /// The dtypes ``floatTensor(_:)`` and ``doubleTensor(_:)`` read.
    static let floatDTypes = SafetensorsDType.allCases.filter(\.isFloatingPoint)
    /// The dtypes ``integerTensor(_:as:)`` reads.
    static let integerDTypes = SafetensorsDType.allCases.filter(\.isInteger)
    /// The dtypes ``boolTensor(_:)`` reads.
    static let boolDTypes = [SafetensorsDType.bool] + integerDTypes

    /// A floating-point tensor as `Float`, decoded from its stored dtype.
    ///
    /// - `F32`: bit for bit (NaN payloads included).
    /// - `F16`, `BF16`, `F8_E4M3`, `F8_E5M2`, `F8_E4M3FNUZ`, `F8_E5M2FNUZ`,
    ///   `F8_E8M0`: widened exactly (every value of these formats is a `Float`;
    ///   subnormals, infinities and NaNs included). The 8-bit formats are read
    ///   as the plain numbers they encode: a block scale stored in another
    ///   tensor is not applied.
    /// - `F64`: rounded to the nearest `Float`, ties to even (IEEE 754 default
    ///   rounding, as PyTorch's `tensor.float()`); magnitudes beyond the `Float`
    ///   range (above 3.4028235e38 by at least half a unit in the last place)
    ///   become ±infinity, and tiny values become `Float` subnormals or ±0.
    ///   NaN stays NaN. Use ``doubleTensor(_:)`` to read `F64` exactly.
    ///
    /// Integer and `BOOL` tensors are not converted: they have their own
    /// accessors.
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` (with
    ///   the dtypes listed above and the tensor's own) if it is not a
    ///   floating-point tensor.
    public func floatTensor(_ name: String) throws -> Tensor<Float> {
        let entry = try entry(name, accepting: Self.floatDTypes)
        return Tensor(validShape: entry.shape, scalars: Self.floats(entry))
    }

    /// A floating-point tensor as `Double`: `F64` exactly, every other
    /// floating-point dtype widened exactly (as ``floatTensor(_:)`` reads it,
    /// then to `Double`, which loses nothing).
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` if it is
    ///   not a floating-point tensor.
    public func doubleTensor(_ name: String) throws -> Tensor<Double> {
        let entry = try entry(name, accepting: Self.floatDTypes)
        if entry.dtype == .f64 {
            return Tensor(validShape: entry.shape, scalars: Self.mapLittleEndian(entry.bytes, as: UInt64.self, Double.init(bitPattern:)))
        }
        return Tensor(validShape: entry.shape, scalars: Self.floats(entry).map(Double.init))
    }

    /// An integer tensor of any integer dtype (`I8`, `I16`, `I32`, `I64`, `U8`,
    /// `U16`, `U32`, `U64`) as the Swift integer type `type`, value by value.
    ///
    /// Every value must fit in `type`: reading an `I64` tensor of token ids as
    /// `Int32` works when the ids are below 2³¹, and throws naming the first
    /// value that is not. `BOOL` and floating-point tensors are not read.
    ///
    /// - Parameters:
    ///   - name: the tensor's name in the header.
    ///   - type: the element type of the result, for example `Int64.self`.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`; `.dtypeMismatch` if it is
    ///   not an integer tensor; `.valueOutOfRange` with the first element (in
    ///   row-major order) that `type` cannot hold.
    public func integerTensor<T: SafetensorsInteger>(_ name: String, as type: T.Type = T.self) throws -> Tensor<T> {
        let entry = try entry(name, accepting: Self.integerDTypes)
        let scalars: [T]
        switch entry.dtype {
        case .i8: scalars = try Self.integers(entry, tensor: name, storedAs: Int8.self)
        case .i16: scalars = try Self.integers(entry, tensor: name, storedAs: Int16.self)
        case .i32: scalars = try Self.integers(entry, tensor: name, storedAs: Int32.self)
        case .i64: scalars = try Self.integers(entry, tensor: name, storedAs: Int64.self)
        case .u8: scalars = try Self.integers(entry, tensor: name, storedAs: UInt8.self)
        case .u16: scalars = try Self.integers(entry, tensor: name, storedAs: UInt16.self)
        case .u32: scalars = try Self.integers(entry, tensor: name, storedAs: UInt32.self)
        case .u64: scalars = try Self.integers(entry, tensor: name, storedAs: UInt64.self)
        default: preconditionFailure("entry(_:accepting:) admits integer dtypes only")
        }
        return Tensor(validShape: entry.shape, scalars: scalars)
    }

    /// An integer tensor as `Int64`: ``integerTensor(_:as:)`` with `Int64`.
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`, `.dtypeMismatch` if it is not
    ///   an integer tensor, or `.valueOutOfRange` for a `U64` value above
    ///   `Int64.max`.
    public func int64Tensor(_ name: String) throws -> Tensor<Int64> {
        try integerTensor(name, as: Int64.self)
    }

    /// An integer tensor as `Int32`: ``integerTensor(_:as:)`` with `Int32`.
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`, `.dtypeMismatch` if it is not
    ///   an integer tensor, or `.valueOutOfRange` for a value outside `Int32`.
    public func int32Tensor(_ name: String) throws -> Tensor<Int32> {
        try integerTensor(name, as: Int32.self)
    }

    /// An integer tensor as `UInt8`: ``integerTensor(_:as:)`` with `UInt8`.
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`, `.dtypeMismatch` if it is not
    ///   an integer tensor (`BOOL` included: read it with ``boolTensor(_:)``), or
    ///   `.valueOutOfRange` for a value outside `0...255`.
    public func uint8Tensor(_ name: String) throws -> Tensor<UInt8> {
        try integerTensor(name, as: UInt8.self)
    }

    /// A boolean tensor from a `BOOL` or integer tensor: zero is `false`, any
    /// other value `true` (as PyTorch's `tensor.bool()`).
    ///
    /// Floating-point tensors are not read: a float mask is an additive mask,
    /// whose polarity is the opposite of a keep mask's.
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: the tensor with its stored shape.
    /// - Throws: `SafetensorsError.tensorNotFound`, or `.dtypeMismatch` if the
    ///   tensor is neither `BOOL` nor an integer tensor.
    public func boolTensor(_ name: String) throws -> Tensor<Bool> {
        let entry = try entry(name, accepting: Self.boolDTypes)
        let bytes: [UInt8] = Self.decode(entry.bytes)
        let width = entry.dtype.bitWidth / 8
        if width == 1 {
            return Tensor(validShape: entry.shape, scalars: bytes.map { $0 != 0 })
        }
        // An element is non-zero exactly when one of its bytes is, in either
        // byte order.
        let count = bytes.count / width
        let scalars = bytes.withUnsafeBufferPointer { buffer in
            (0..<count).map { element in
                buffer[(element * width)..<(element * width + width)].contains { $0 != 0 }
            }
        }
        return Tensor(validShape: entry.shape, scalars: scalars)
    }

    /// The stored bytes of a tensor of any dtype, exactly as in the file:
    /// `elements × dtype.bitWidth / 8` bytes, little-endian elements in
    /// row-major order. This is how to read the dtypes that have no decoder
    /// here (`F4` and `F6_*`, packed as the format's writer packed them, and
    /// `C64`).
    ///
    /// - Parameter name: the tensor's name in the header.
    /// - Returns: a copy of the bytes, indexed from zero.
    /// - Throws: `SafetensorsError.tensorNotFound` if there is no such tensor.
    public func data(of name: String) throws -> Data {
        Data(try entry(name).bytes)
    }

    // MARK: Adding tensors

    /// Adds a `Float` tensor, stored as `F32` (bit for bit, the default) or
    /// narrowed to `F16` or `BF16`, or widened to `F64`; replaces any tensor of
    /// the same name.
    ///
    /// `F16` and `BF16` round to nearest, ties to even (IEEE 754 default
    /// rounding, as PyTorch's `tensor.half()` and `tensor.bfloat16()`); values
    /// that round past the format's largest finite value become ±infinity
    /// (65520 and above for `F16`); NaN stays NaN (quiet, sign kept). See
    /// ``SafetensorsFloatDType`` for the ranges.
    ///
    /// - Parameters:
    ///   - name: the tensor's name; not `"__metadata__"`, which the format
    ///     reserves (a precondition).
    ///   - tensor: the values.
    ///   - dtype: the stored dtype.
    public mutating func set(_ name: String, _ tensor: Tensor<Float>, as dtype: SafetensorsFloatDType = .f32) {
        let bytes: Data
        switch dtype {
        case .f32:
            bytes = Self.encode(tensor.scalars.map { $0.bitPattern.littleEndian })
        case .f16:
            bytes = Self.encode(tensor.scalars.map { NarrowFloat.half(from: $0).littleEndian })
        case .bf16:
            bytes = Self.encode(tensor.scalars.map { NarrowFloat.bfloat16(from: $0).littleEndian })
        case .f64:
            bytes = Self.encode(tensor.scalars.map { Double($0).bitPattern.littleEndian })
        }
        store(name, Entry(dtype: dtype.dtype, shape: tensor.shape, bytes: bytes))
    }

    /// Adds a `Double` tensor as `F64` (bit for bit), replacing any tensor of
    /// the same name.
    ///
    /// - Parameters:
    ///   - name: the tensor's name; not `"__metadata__"` (a precondition).
    ///   - tensor: the values.
    public mutating func set(_ name: String, _ tensor: Tensor<Double>) {
        store(name, Entry(dtype: .f64, shape: tensor.shape, bytes: Self.encode(tensor.scalars.map { $0.bitPattern.littleEndian })))
    }

    /// Adds an integer tensor as its own dtype (`Int64` as `I64`, `UInt8` as
    /// `U8`, …; see ``SafetensorsInteger``), replacing any tensor of the same
    /// name.
    ///
    /// - Parameters:
    ///   - name: the tensor's name; not `"__metadata__"` (a precondition).
    ///   - tensor: the values.
    public mutating func set<T: SafetensorsInteger>(_ name: String, _ tensor: Tensor<T>) {
        store(name, Entry(dtype: T.safetensorsDType, shape: tensor.shape, bytes: Self.encode(tensor.scalars.map(\.littleEndian))))
    }

    /// Adds a boolean tensor, replacing any tensor of the same name.
    ///
    /// It is stored as `U8` (`true` = 1, `false` = 0), not as `BOOL`, like the
    /// project's golden masks (`mask_keep`, `key_padding_keep`), so that tools
    /// that read those read this too; ``boolTensor(_:)`` reads it back.
    ///
    /// - Parameters:
    ///   - name: the tensor's name; not `"__metadata__"` (a precondition).
    ///   - tensor: the values.
    public mutating func set(_ name: String, _ tensor: Tensor<Bool>) {
        store(name, Entry(dtype: .u8, shape: tensor.shape, bytes: Data(tensor.scalars.map { $0 ? 1 : 0 })))
    }

    /// Adds a tensor of any dtype from its encoded bytes (little-endian
    /// elements, row-major; sub-byte dtypes packed), replacing any tensor of
    /// the same name. The bytes are not interpreted, only counted.
    ///
    /// - Parameters:
    ///   - name: the tensor's name; not `"__metadata__"` (a precondition).
    ///   - dtype: the stored dtype.
    ///   - shape: the shape, outermost dimension first.
    ///   - data: exactly `elements × dtype.bitWidth / 8` bytes.
    /// - Throws: `SafetensorsError.invalidShape`, `.shapeOverflow`,
    ///   `.bitCountNotWholeBytes`, or `.byteCountMismatch` if `data` has
    ///   another size; the file is then unchanged.
    public mutating func set(_ name: String, dtype: SafetensorsDType, shape: [Int], data: Data) throws {
        let expected = try Self.byteCount(tensor: name, dtype: dtype, shape: shape)
        guard data.count == expected else {
            throw SafetensorsError.byteCountMismatch(tensor: name, dtype: dtype, shape: shape, expected: expected, actual: data.count)
        }
        store(name, Entry(dtype: dtype, shape: shape, bytes: Data(data)))
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

    /// The `Float` values of a floating-point entry (see ``floatTensor(_:)``).
    private static func floats(_ entry: Entry) -> [Float] {
        switch entry.dtype {
        case .f32:
            #if _endian(big)
            return littleEndian(entry.bytes, as: UInt32.self).map(Float.init(bitPattern:))
            #else
            return decode(entry.bytes)
            #endif
        case .f64:
            return mapLittleEndian(entry.bytes, as: UInt64.self) { Float(Double(bitPattern: $0)) }
        case .f16:
            return mapLittleEndian(entry.bytes, as: UInt16.self, NarrowFloat.float(fromHalf:))
        case .bf16:
            return mapLittleEndian(entry.bytes, as: UInt16.self, NarrowFloat.float(fromBFloat16:))
        case .f8E4M3: return lookUp(entry.bytes, in: NarrowFloat.e4m3Table)
        case .f8E5M2: return lookUp(entry.bytes, in: NarrowFloat.e5m2Table)
        case .f8E4M3FNUZ: return lookUp(entry.bytes, in: NarrowFloat.e4m3FNUZTable)
        case .f8E5M2FNUZ: return lookUp(entry.bytes, in: NarrowFloat.e5m2FNUZTable)
        case .f8E8M0: return lookUp(entry.bytes, in: NarrowFloat.e8m0Table)
        default: preconditionFailure("entry(_:accepting:) admits floating-point dtypes only")
        }
    }

    /// Each byte's entry in a 256-value table.
    private static func lookUp(_ bytes: Data, in table: [Float]) -> [Float] {
        let codes: [UInt8] = decode(bytes)
        return table.withUnsafeBufferPointer { table in codes.map { table[Int($0)] } }
    }

    /// The values of an integer entry stored as `Stored`, converted to `T`.
    private static func integers<Stored: SafetensorsInteger, T: SafetensorsInteger>(
        _ entry: Entry, tensor name: String, storedAs: Stored.Type
    ) throws -> [T] {
        let values = littleEndian(entry.bytes, as: Stored.self)
        if Stored.self == T.self { return unsafeBitCast(values, to: [T].self) }
        var result: [T] = []
        result.reserveCapacity(values.count)
        for (index, value) in values.enumerated() {
            guard let converted = T(exactly: value) else {
                throw SafetensorsError.valueOutOfRange(
                    tensor: name, index: index, value: String(value), dtype: entry.dtype,
                    targetType: String(describing: T.self), targetRange: "\(T.min)...\(T.max)")
            }
            result.append(converted)
        }
        return result
    }

    /// `transform` of each little-endian `Raw` element of `bytes`, in one pass
    /// over the bytes (no alignment of `bytes` assumed).
    private static func mapLittleEndian<Raw: FixedWidthInteger & BitwiseCopyable, Result>(
        _ bytes: Data, as: Raw.Type, _ transform: (Raw) -> Result
    ) -> [Result] {
        let width = MemoryLayout<Raw>.size
        let count = bytes.count / width
        return [Result](unsafeUninitializedCapacity: count) { buffer, initialized in
            bytes.withUnsafeBytes { raw in
                for index in 0..<count {
                    let element = Raw(littleEndian: raw.loadUnaligned(fromByteOffset: index * width, as: Raw.self))
                    (buffer.baseAddress! + index).initialize(to: transform(element))
                }
            }
            initialized = count
        }
    }

    /// Little-endian integers of type `T` from raw bytes, in host byte order.
    private static func littleEndian<T: FixedWidthInteger & BitwiseCopyable>(_ bytes: Data, as: T.Type) -> [T] {
        let values: [T] = decode(bytes)
        #if _endian(big)
        return values.map(T.init(littleEndian:))
        #else
        return values
        #endif
    }

    /// The bytes of an array of already little-endian elements.
    private static func encode<T: BitwiseCopyable>(_ values: [T]) -> Data {
        values.withUnsafeBytes { Data($0) }
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
        let expectedBytes = try Self.byteCount(tensor: name, dtype: dtype, shape: shape)

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

    /// The number of bytes a `dtype` tensor of `shape` occupies.
    ///
    /// The product of the non-zero dimensions times the element size must fit,
    /// not just the full product: then every partial product (strides,
    /// row-major indexing) fits. Sub-byte dtypes count bits and must fill
    /// whole bytes.
    static func byteCount(tensor name: String, dtype: SafetensorsDType, shape: [Int]) throws -> Int {
        if shape.contains(where: { $0 < 0 }) {
            throw SafetensorsError.invalidShape(tensor: name, shape: shape)
        }
        var nonZeroProduct = dtype.byteSize ?? dtype.bitWidth
        for dimension in shape where dimension != 0 {
            let (product, overflow) = nonZeroProduct.multipliedReportingOverflow(by: dimension)
            if overflow { throw SafetensorsError.shapeOverflow(tensor: name, shape: shape, dtype: dtype) }
            nonZeroProduct = product
        }
        if shape.contains(0) { return 0 }
        if dtype.byteSize != nil { return nonZeroProduct }
        guard nonZeroProduct % 8 == 0 else {
            throw SafetensorsError.bitCountNotWholeBytes(tensor: name, dtype: dtype, shape: shape, bits: nonZeroProduct)
        }
        return nonZeroProduct / 8
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
