/// Bit-exact conversions between `Float` and the narrow floating-point formats
/// that safetensors files store: IEEE 754 binary16 (`F16`), bfloat16 (`BF16`)
/// and the 8-bit formats (`F8_*`).
///
/// Everything here works on bit patterns with integer arithmetic, so it gives
/// the same bits on every platform and needs neither `Float16` (missing or
/// partial on some x86 toolchains) nor the processor's conversion instructions.
///
/// Widening (narrow → `Float`) is exact: every value of these formats is a
/// `Float`. Narrowing (`Float` → `F16`/`BF16`) rounds to nearest, ties to even
/// (IEEE 754-2019 §4.3.1, the default rounding); magnitudes that round past the
/// largest finite value become infinity; NaN stays NaN (quiet, sign and the
/// leading payload bits kept).
enum NarrowFloat {
    // MARK: binary16 (F16): 1 sign bit, 5 exponent bits (bias 15), 10 fraction bits

    /// The `Float` with the value of the binary16 number `bits`; exact.
    ///
    /// Normal numbers re-bias the exponent (15 → 127); subnormals
    /// `fraction × 2⁻²⁴` are normalised; infinities and NaNs keep their sign and
    /// fraction (a NaN payload moves to the top of the `Float` fraction).
    @inline(__always)
    static func float(fromHalf bits: UInt16) -> Float {
        let sign = UInt32(bits & 0x8000) << 16
        let exponent = UInt32(bits >> 10) & 0x1F
        let fraction = UInt32(bits & 0x03FF)
        if exponent == 0x1F {
            return Float(bitPattern: sign | 0x7F80_0000 | fraction << 13)
        }
        if exponent != 0 {
            return Float(bitPattern: sign | (exponent + (127 - 15)) << 23 | fraction << 13)
        }
        if fraction == 0 { return Float(bitPattern: sign) }
        // Subnormal: fraction × 2⁻²⁴ with the leading one at bit `top` (0…9),
        // i.e. 2^(top − 24) × 1.rest.
        let top = UInt32(31 - fraction.leadingZeroBitCount)
        let rest = (fraction << (23 - top)) & 0x007F_FFFF
        return Float(bitPattern: sign | (top + 127 - 24) << 23 | rest)
    }

    /// The binary16 bit pattern nearest to `value`, ties to even.
    ///
    /// Magnitudes of 65520 and above (halfway between the largest binary16,
    /// 65504, and 65536) become infinity; results below the smallest normal
    /// (2⁻¹⁴) are rounded to a multiple of the smallest subnormal 2⁻²⁴.
    static func half(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        let sign = UInt16(truncatingIfNeeded: bits >> 16) & 0x8000
        let biasedExponent = Int((bits >> 23) & 0xFF)
        let fraction = bits & 0x007F_FFFF
        if biasedExponent == 0xFF {
            // Infinity, or NaN made quiet with the top 9 payload bits kept.
            return fraction == 0 ? sign | 0x7C00 : sign | 0x7E00 | UInt16(truncatingIfNeeded: fraction >> 13)
        }
        let exponent = biasedExponent - 127
        if exponent >= -14 {
            // Normal range (or overflow): keep 10 of the 23 fraction bits. A carry
            // out of the fraction moves into the exponent, and past exponent 15
            // it lands exactly on the infinity pattern 0x7C00.
            if exponent > 15 { return sign | 0x7C00 }
            let truncated = UInt32(exponent + 15) << 10 | fraction >> 13
            return sign | UInt16(truncatingIfNeeded: roundedToNearestEven(truncated, remainder: fraction & 0x1FFF, half: 0x1000))
        }
        // Subnormal or zero: value / 2⁻²⁴ = significand × 2^(exponent + 1) with
        // the 24-bit significand; `shift` = −(exponent + 1) ≥ 14. A Float
        // subnormal (biased exponent 0) is below 2⁻¹²⁶ and rounds to zero.
        guard biasedExponent != 0 else { return sign }
        let significand = fraction | 0x0080_0000
        let shift = -(exponent + 1)
        if shift > 24 { return sign }
        let truncated = significand >> UInt32(shift)
        let remainder = significand & ((1 << UInt32(shift)) - 1)
        return sign | UInt16(truncatingIfNeeded: roundedToNearestEven(truncated, remainder: remainder, half: 1 << UInt32(shift - 1)))
    }

    // MARK: bfloat16 (BF16): the upper 16 bits of a Float

    /// The `Float` with the value of the bfloat16 number `bits`; exact.
    @inline(__always)
    static func float(fromBFloat16 bits: UInt16) -> Float {
        Float(bitPattern: UInt32(bits) << 16)
    }

    /// The bfloat16 bit pattern nearest to `value`, ties to even; NaN stays a
    /// quiet NaN with its sign and top 7 payload bits.
    ///
    /// Rounding the lower 16 bits away as an integer is exact rounding for every
    /// finite input, subnormals included, because the bit patterns of
    /// non-negative floats are ordered like their values; a carry out of the
    /// largest finite bfloat16 gives the infinity pattern 0x7F80.
    static func bfloat16(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        return UInt16(truncatingIfNeeded: roundedToNearestEven(bits >> 16, remainder: bits & 0xFFFF, half: 0x8000))
    }

    /// `truncated`, plus one if the dropped `remainder` is above `half`, or equal
    /// to it and `truncated` is odd.
    @inline(__always)
    private static func roundedToNearestEven(_ truncated: UInt32, remainder: UInt32, half: UInt32) -> UInt32 {
        remainder > half || (remainder == half && truncated & 1 == 1) ? truncated + 1 : truncated
    }

    // MARK: 8-bit formats

    /// The value of every byte in an 8-bit float format, indexed by the byte.
    ///
    /// The formats (all exactly representable as `Float`):
    /// - `F8_E4M3` — OCP 8-bit E4M3 ("FN", PyTorch `float8_e4m3fn`): bias 7,
    ///   subnormals `m × 2⁻⁹`, no infinities, NaN at `S.1111.111`; largest 448.
    /// - `F8_E5M2` — OCP/IEEE-style E5M2 (`float8_e5m2`): bias 15, subnormals
    ///   `m × 2⁻¹⁶`, infinities at `S.11111.00`, NaN at `S.11111.{01,10,11}`.
    /// - `F8_E4M3FNUZ` — Graphcore/AMD E4M3 (`float8_e4m3fnuz`): bias 8, no
    ///   infinities, no negative zero; `0x80` is the only NaN.
    /// - `F8_E5M2FNUZ` — E5M2 with bias 16 (`float8_e5m2fnuz`), likewise with
    ///   `0x80` the only NaN.
    /// - `F8_E8M0` — OCP MX scale (`float8_e8m0fnu`): unsigned, `2^(byte − 127)`,
    ///   `0xFF` is NaN.
    static let e4m3Table: [Float] = table { byte in
        minifloat(byte, exponentBits: 4, bias: 7, isNaN: byte & 0x7F == 0x7F, isInfinity: false)
    }
    /// See `e4m3Table`.
    static let e5m2Table: [Float] = table { byte in
        minifloat(byte, exponentBits: 5, bias: 15, isNaN: byte & 0x7F > 0x7C, isInfinity: byte & 0x7F == 0x7C)
    }
    /// See `e4m3Table`.
    static let e4m3FNUZTable: [Float] = table { byte in
        minifloat(byte, exponentBits: 4, bias: 8, isNaN: byte == 0x80, isInfinity: false)
    }
    /// See `e4m3Table`.
    static let e5m2FNUZTable: [Float] = table { byte in
        minifloat(byte, exponentBits: 5, bias: 16, isNaN: byte == 0x80, isInfinity: false)
    }
    /// See `e4m3Table`.
    static let e8m0Table: [Float] = table { byte in
        byte == 0xFF ? .nan : Float(sign: .plus, exponent: Int(byte) - 127, significand: 1)
    }

    private static func table(_ value: (UInt8) -> Float) -> [Float] {
        (0...255).map { value(UInt8($0)) }
    }

    /// The value of a sign / exponent / fraction byte with `exponentBits`
    /// exponent bits and `7 − exponentBits` fraction bits: subnormal
    /// `(fraction / 2^m) × 2^(1 − bias)` when the exponent field is 0, else
    /// `(1 + fraction / 2^m) × 2^(exponent − bias)`. `Float(sign:exponent:significand:)`
    /// scales by a power of two exactly.
    private static func minifloat(_ byte: UInt8, exponentBits: Int, bias: Int, isNaN: Bool, isInfinity: Bool) -> Float {
        let sign: FloatingPointSign = byte & 0x80 != 0 ? .minus : .plus
        if isNaN { return sign == .minus ? -.nan : .nan }
        if isInfinity { return sign == .minus ? -.infinity : .infinity }
        let fractionBits = 7 - exponentBits
        let exponentField = Int(byte & 0x7F) >> fractionBits
        let fraction = Float(Int(byte) & ((1 << fractionBits) - 1)) / Float(1 << fractionBits)
        if exponentField == 0 {
            return Float(sign: sign, exponent: 1 - bias, significand: fraction)
        }
        return Float(sign: sign, exponent: exponentField - bias, significand: 1 + fraction)
    }
}
