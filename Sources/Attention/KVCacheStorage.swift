/// How a ``KVCache`` stores its keys and values in memory.
///
/// Attention is always computed in float32: 16-bit keys and values are widened
/// exactly to float32 before they are read (every float16 and bfloat16 number
/// is a float32 number), so the only error a 16-bit cache adds is the rounding
/// of each key and value when it is appended.
///
/// Rounding on append is IEEE 754 round-to-nearest, ties to even (what
/// PyTorch's `tensor.half()` and `tensor.bfloat16()` do on a CPU):
/// - `.float16` (binary16: 1 sign, 5 exponent, 10 fraction bits): magnitudes of
///   65520 and above become ±∞, magnitudes up to 2⁻²⁵ become ±0, those between
///   become float16 subnormals; relative error at most 2⁻¹¹ in the normal range
///   (6.1e−5 … 65504).
/// - `.bfloat16` (1 sign, 8 exponent, 7 fraction bits): float32's range, relative
///   error at most 2⁻⁸; only magnitudes within half an ulp of float32's largest
///   value round to ±∞.
/// - ±∞ stays ±∞, ±0 keeps its sign, and NaN stays NaN (quietened, the top
///   fraction bits of its payload kept).
public enum KVCacheStorage: String, Sendable, CaseIterable, Equatable {
    /// 4 bytes per number, stored as given (no rounding).
    case float32
    /// IEEE 754 binary16, 2 bytes per number.
    case float16
    /// bfloat16 (the top half of a float32), 2 bytes per number.
    case bfloat16

    /// Bytes per stored key or value number: 4 or 2.
    public var bytesPerElement: Int { self == .float32 ? 4 : 2 }

    /// The float32 number that `value` becomes when stored this way and read back
    /// (round-to-nearest-even, see ``KVCacheStorage``).
    ///
    /// - Parameter value: any float32 number, NaN and ±∞ included.
    /// - Returns: `value` itself for `.float32`; else the nearest float16 or
    ///   bfloat16 number (ties to even), widened exactly to float32.
    public func rounded(_ value: Float) -> Float {
        switch self {
        case .float32: return value
        case .float16: return HalfPrecision.float(fromFloat16Bits: HalfPrecision.float16Bits(value))
        case .bfloat16: return HalfPrecision.float(fromBFloat16Bits: HalfPrecision.bfloat16Bits(value))
        }
    }
}

/// Bit-exact conversions between float32 and the 16-bit storage formats,
/// written on the bit patterns so they need no `Float16` type (absent on some
/// platforms) and behave the same everywhere.
enum HalfPrecision {
    /// float32 → IEEE binary16 bits, round-to-nearest-even.
    static func float16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: (bits >> 16) & 0x8000)
        let magnitude = bits & 0x7FFF_FFFF
        if magnitude >= 0x7F80_0000 {  // ±∞ or NaN
            let isNaN = magnitude > 0x7F80_0000
            let payload = UInt16(truncatingIfNeeded: (magnitude >> 13) & 0x03FF)
            return sign | 0x7C00 | (isNaN ? 0x0200 | payload : 0)
        }
        if magnitude >= 0x477F_F000 {  // ≥ 65520, halfway from 65504 to 2¹⁶: rounds (to even) to ∞
            return sign | 0x7C00
        }
        if magnitude < 0x3880_0000 {  // below 2⁻¹⁴: a float16 subnormal or zero
            // Adding 0.5 leaves the sum with an ulp of 2⁻²⁴, float16's subnormal
            // step, and the float32 addition rounds to nearest even: the low bits
            // of the sum are the float16 subnormal (0x400 = rounded up to 2⁻¹⁴).
            let sum = Float(bitPattern: magnitude) + 0.5
            return sign | UInt16(truncatingIfNeeded: sum.bitPattern &- 0x3F00_0000)
        }
        // Normal: rebias the exponent (127 → 15) and round the 13 dropped bits to
        // nearest even; a carry moves into the exponent, as it should.
        let odd = (magnitude >> 13) & 1
        let rounded = magnitude &- 0x3800_0000 &+ 0x0FFF &+ odd
        return sign | UInt16(truncatingIfNeeded: rounded >> 13)
    }

    /// IEEE binary16 bits → float32 (exact).
    static func float(fromFloat16Bits half: UInt16) -> Float {
        let sign = UInt32(half & 0x8000) << 16
        let exponent = UInt32(half >> 10) & 0x1F
        let fraction = UInt32(half & 0x03FF)
        if exponent == 0x1F { return Float(bitPattern: sign | 0x7F80_0000 | fraction << 13) }
        if exponent == 0 {
            let magnitude = Float(fraction) * 0x1p-24  // exact: fraction < 2¹⁰
            return sign == 0 ? magnitude : -magnitude
        }
        return Float(bitPattern: sign | (exponent + 112) << 23 | fraction << 13)
    }

    /// float32 → bfloat16 bits, round-to-nearest-even.
    static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if bits & 0x7FFF_FFFF > 0x7F80_0000 {  // NaN: keep it NaN (quiet), whatever its low bits
            return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040
        }
        let odd = (bits >> 16) & 1
        return UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ odd) >> 16)
    }

    /// bfloat16 bits → float32 (exact).
    static func float(fromBFloat16Bits bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }
}
