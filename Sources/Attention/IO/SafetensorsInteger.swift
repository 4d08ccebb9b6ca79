/// The Swift integer types that safetensors integer dtypes decode to and
/// encode from: `Int8`, `Int16`, `Int32`, `Int64`, `UInt8`, `UInt16`, `UInt32`
/// and `UInt64`.
///
/// ``SafetensorsFile/integerTensor(_:as:)`` reads any integer dtype into any of
/// these types, value by value, and throws if a value does not fit;
/// `SafetensorsFile.set(_:_:)` stores a `Tensor` of one of them as its own
/// dtype (``safetensorsDType``).
public protocol SafetensorsInteger: FixedWidthInteger, Sendable, BitwiseCopyable {
    /// The dtype that stores this type exactly (`Int64` ↔ `I64`, …).
    static var safetensorsDType: SafetensorsDType { get }
}

extension Int8: SafetensorsInteger {
    /// `I8`.
    public static var safetensorsDType: SafetensorsDType { .i8 }
}

extension Int16: SafetensorsInteger {
    /// `I16`.
    public static var safetensorsDType: SafetensorsDType { .i16 }
}

extension Int32: SafetensorsInteger {
    /// `I32`.
    public static var safetensorsDType: SafetensorsDType { .i32 }
}

extension Int64: SafetensorsInteger {
    /// `I64`.
    public static var safetensorsDType: SafetensorsDType { .i64 }
}

extension UInt8: SafetensorsInteger {
    /// `U8`.
    public static var safetensorsDType: SafetensorsDType { .u8 }
}

extension UInt16: SafetensorsInteger {
    /// `U16`.
    public static var safetensorsDType: SafetensorsDType { .u16 }
}

extension UInt32: SafetensorsInteger {
    /// `U32`.
    public static var safetensorsDType: SafetensorsDType { .u32 }
}

extension UInt64: SafetensorsInteger {
    /// `U64`.
    public static var safetensorsDType: SafetensorsDType { .u64 }
}
