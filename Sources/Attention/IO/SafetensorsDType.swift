/// The element types of the safetensors format: every `dtype` string the
/// reference implementation (huggingface/safetensors 0.8) defines.
///
/// The raw values are the format's `dtype` strings
/// (<https://huggingface.co/docs/safetensors>); elements are stored little-endian,
/// row-major. Every dtype parses; which accessor of ``SafetensorsFile`` decodes
/// it:
///
/// | dtypes | accessor |
/// | --- | --- |
/// | `F32`, `F16`, `BF16`, `F64`, `F8_E4M3`, `F8_E5M2`, `F8_E4M3FNUZ`, `F8_E5M2FNUZ`, `F8_E8M0` | ``SafetensorsFile/floatTensor(_:)``, ``SafetensorsFile/doubleTensor(_:)`` |
/// | `I8`, `I16`, `I32`, `I64`, `U8`, `U16`, `U32`, `U64` | ``SafetensorsFile/integerTensor(_:as:)`` and its shorthands, ``SafetensorsFile/boolTensor(_:)`` |
/// | `BOOL` | ``SafetensorsFile/boolTensor(_:)`` |
/// | `F4`, `F6_E2M3`, `F6_E3M2` (packed, under a byte per element), `C64` | ``SafetensorsFile/data(of:)`` (the stored bytes) |
public enum SafetensorsDType: String, Sendable, CaseIterable {
    /// IEEE 754 binary32, `Float`.
    case f32 = "F32"
    /// IEEE 754 binary16 (half precision): 5 exponent bits, 10 fraction bits.
    case f16 = "F16"
    /// bfloat16: the upper half of a binary32 (8 exponent bits, 7 fraction bits).
    case bf16 = "BF16"
    /// IEEE 754 binary64, `Double`.
    case f64 = "F64"
    /// 8-bit float E4M3, OCP variant (PyTorch `float8_e4m3fn`): no infinities,
    /// largest finite 448 (<https://arxiv.org/abs/2209.05433>).
    case f8E4M3 = "F8_E4M3"
    /// 8-bit float E5M2 (PyTorch `float8_e5m2`), with infinities
    /// (<https://arxiv.org/abs/2209.05433>).
    case f8E5M2 = "F8_E5M2"
    /// 8-bit float E4M3 with exponent bias 8, no negative zero, one NaN (`0x80`)
    /// (PyTorch `float8_e4m3fnuz`, <https://arxiv.org/abs/2206.02915>).
    case f8E4M3FNUZ = "F8_E4M3FNUZ"
    /// 8-bit float E5M2 with exponent bias 16, no negative zero, one NaN (`0x80`)
    /// (PyTorch `float8_e5m2fnuz`).
    case f8E5M2FNUZ = "F8_E5M2FNUZ"
    /// 8-bit unsigned power of two `2^(byte − 127)`, `0xFF` = NaN: the OCP
    /// microscaling (MX) block scale (PyTorch `float8_e8m0fnu`).
    case f8E8M0 = "F8_E8M0"
    /// 6-bit float E2M3 of the OCP MX formats, packed; read as bytes only.
    case f6E2M3 = "F6_E2M3"
    /// 6-bit float E3M2 of the OCP MX formats, packed; read as bytes only.
    case f6E3M2 = "F6_E3M2"
    /// 4-bit float E2M1 of the OCP MX formats (MXFP4), two per byte; read as
    /// bytes only.
    case f4 = "F4"
    /// Signed 8-bit integer, `Int8`.
    case i8 = "I8"
    /// Signed 16-bit integer, `Int16`.
    case i16 = "I16"
    /// Signed 32-bit integer, `Int32`.
    case i32 = "I32"
    /// Signed 64-bit integer, `Int64`.
    case i64 = "I64"
    /// Unsigned 8-bit integer, `UInt8`.
    case u8 = "U8"
    /// Unsigned 16-bit integer, `UInt16`.
    case u16 = "U16"
    /// Unsigned 32-bit integer, `UInt32`.
    case u32 = "U32"
    /// Unsigned 64-bit integer, `UInt64`.
    case u64 = "U64"
    /// One byte per element; zero is `false`, anything else `true` on reading.
    case bool = "BOOL"
    /// Complex number of two binary32 parts, real then imaginary; read as bytes
    /// only.
    case c64 = "C64"

    /// The size of one element in bits: 4 for `F4`, 6 for `F6_*`, otherwise
    /// 8 × ``byteSize``.
    ///
    /// A tensor of a sub-byte dtype must hold a whole number of bytes
    /// (`elements × bitWidth` divisible by 8), as the reference implementation
    /// requires.
    public var bitWidth: Int {
        switch self {
        case .f4: return 4
        case .f6E2M3, .f6E3M2: return 6
        case .f8E4M3, .f8E5M2, .f8E4M3FNUZ, .f8E5M2FNUZ, .f8E8M0, .i8, .u8, .bool: return 8
        case .f16, .bf16, .i16, .u16: return 16
        case .f32, .i32, .u32: return 32
        case .f64, .i64, .u64, .c64: return 64
        }
    }

    /// The size of one element in bytes, or `nil` for the packed sub-byte dtypes
    /// `F4`, `F6_E2M3` and `F6_E3M2` (see ``bitWidth``).
    public var byteSize: Int? {
        bitWidth % 8 == 0 ? bitWidth / 8 : nil
    }

    /// Whether ``SafetensorsFile/floatTensor(_:)`` and
    /// ``SafetensorsFile/doubleTensor(_:)`` decode this dtype: the binary
    /// floating-point formats of one or more whole bytes.
    public var isFloatingPoint: Bool {
        switch self {
        case .f64, .f32, .f16, .bf16, .f8E4M3, .f8E5M2, .f8E4M3FNUZ, .f8E5M2FNUZ, .f8E8M0: return true
        default: return false
        }
    }

    /// Whether this is one of the eight integer dtypes (`I8` … `U64`), which
    /// ``SafetensorsFile/integerTensor(_:as:)`` decodes; `BOOL` is not.
    public var isInteger: Bool {
        switch self {
        case .i8, .i16, .i32, .i64, .u8, .u16, .u32, .u64: return true
        default: return false
        }
    }
}

/// The dtypes in which ``SafetensorsFile/set(_:_:as:)`` stores a `Tensor<Float>`.
public enum SafetensorsFloatDType: String, Sendable, CaseIterable {
    /// binary32, bit for bit.
    case f32 = "F32"
    /// binary16: rounded to nearest, ties to even; magnitudes of 65520 and above
    /// become ±infinity, magnitudes up to 2⁻²⁵ become ±0; NaN stays NaN.
    case f16 = "F16"
    /// bfloat16: rounded to nearest, ties to even (8 significant bits, the range
    /// of `Float`); values that round past 3.3895314e38 become ±infinity; NaN
    /// stays NaN.
    case bf16 = "BF16"
    /// binary64: exact.
    case f64 = "F64"

    /// The file's dtype for this choice.
    public var dtype: SafetensorsDType {
        switch self {
        case .f32: return .f32
        case .f16: return .f16
        case .bf16: return .bf16
        case .f64: return .f64
        }
    }
}
