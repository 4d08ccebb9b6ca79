import CAttention

/// The element type keys and values are stored in, as the fused kernel reads
/// them (`attn_storage`). The kernel widens every element exactly to `Float`
/// and computes in `Float`, so a call on 16-bit storage gives the bits of a
/// call on `Float` storage holding the widened values.
enum KernelKVStorage: Sendable, Equatable {
    /// 32-bit IEEE 754.
    case float32
    /// 16-bit IEEE 754 binary16 bit patterns (`UInt16`).
    case float16
    /// bfloat16 bit patterns (`UInt16`): the high half of a `Float`.
    case bfloat16

    /// The kernel's enum value.
    var kernelValue: attn_storage {
        switch self {
        case .float32: return ATTN_STORAGE_F32
        case .float16: return ATTN_STORAGE_F16
        case .bfloat16: return ATTN_STORAGE_BF16
        }
    }

    /// Bytes per element: 4 or 2.
    var bytesPerElement: Int { self == .float32 ? 4 : 2 }

    /// The exact `Float` value of a 16-bit element (the kernel's own widening,
    /// `attn_widen_one`: NaN stays NaN, made quiet).
    func widen(_ bits: UInt16) -> Float {
        switch self {
        case .bfloat16, .float32: return Float(bitPattern: UInt32(bits) << 16)
        case .float16:
            let sign = UInt32(bits & 0x8000) << 16
            let exponent = UInt32(bits >> 10) & 0x1F, mantissa = UInt32(bits & 0x3FF)
            if exponent == 0x1F {
                return Float(bitPattern: sign | 0x7F80_0000 | (mantissa != 0 ? 0x40_0000 | mantissa << 13 : 0))
            }
            if exponent == 0 {
                let magnitude = Float(mantissa) * 0x1p-24
                return sign != 0 ? -magnitude : magnitude
            }
            return Float(bitPattern: sign | (exponent + 112) << 23 | mantissa << 13)
        }
    }

    /// The nearest 16-bit element to `value` (round to nearest, ties to even;
    /// NaN stays NaN). For `.float32` the result is meaningless; use `Float` storage.
    func narrow(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        switch self {
        case .bfloat16, .float32:
            if value.isNaN { return UInt16(bits >> 16) | 0x40 }
            let rounded = bits &+ 0x7FFF &+ ((bits >> 16) & 1)
            return UInt16(rounded >> 16)
        case .float16:
            let sign = UInt16((bits >> 16) & 0x8000)
            if value.isNaN { return sign | 0x7E00 }
            let magnitude = abs(value)
            if magnitude >= 65520 { return sign | 0x7C00 }  // rounds to ∞
            if magnitude < 0x1p-14 {  // subnormal (or 0): multiples of 2^−24
                let units = (magnitude * 0x1p24).rounded(.toNearestOrEven)
                return sign | UInt16(units)
            }
            let exponent = Int((bits >> 23) & 0xFF) - 127 + 15
            var mantissa = bits & 0x7F_FFFF
            var result = UInt32(exponent) << 10 | mantissa >> 13
            mantissa &= 0x1FFF
            if mantissa > 0x1000 || (mantissa == 0x1000 && result & 1 == 1) { result += 1 }
            return sign | UInt16(result)
        }
    }
}

/// Keys and values in memory that the caller owns (a key/value cache), read
/// by the fused kernel in place in their storage type instead of the
/// problem's `key` and `value` operands.
///
/// Shapes, in elements: keys `[batch, kvHeads, keyLength, headDim]` at
/// `keyStrides`, values `[batch, kvHeads, keyLength, valueDim]` at
/// `valueStrides` (4 strides each, the last 1). The memory must stay valid and
/// unchanged while a call runs.
///
/// With `keyPanels`, keys are in panels of `w = keyPanelWidth` keys × headDim,
/// keys innermost (`w` 16: `ATTN_KEY_LAYOUT_PANELS`, the default; 64:
/// `ATTN_KEY_LAYOUT_PANELS64`, what ``KVCache`` stores): key `(b, h, j, d)` at
/// `b·keyStrides[0] + h·keyStrides[1] + (j / w)·keyStrides[2] + d·w + j % w`,
/// `keyStrides[2] ≥ w·headDim`, every panel `w` keys long. Decoding reads that
/// layout without transposes (same bits).
struct ExternalKeyValues: @unchecked Sendable {
    var storage: KernelKVStorage
    var keys: UnsafeRawPointer?
    var keyStrides: [Int]
    var values: UnsafeRawPointer?
    var valueStrides: [Int]
    var keyPanels = false
    /// Keys per panel with `keyPanels`: only the widths the kernel has a layout
    /// for, so that the kernel and the oracle can never read different layouts.
    enum PanelWidth: Int {
        case sixteen = 16     // ATTN_KEY_LAYOUT_PANELS
        case sixtyFour = 64   // ATTN_KEY_LAYOUT_PANELS64
    }
    var keyPanelWidth = PanelWidth.sixteen

    /// The kernel's key layout: rows, or panels of `keyPanelWidth` keys.
    var keyLayout: attn_key_layout {
        guard keyPanels else { return ATTN_KEY_LAYOUT_ROWS }
        switch keyPanelWidth {
        case .sixteen: return ATTN_KEY_LAYOUT_PANELS
        case .sixtyFour: return ATTN_KEY_LAYOUT_PANELS64
        }
    }

    /// The element at a 4-D index of `base` (strides in elements), widened.
    private func element(_ base: UnsafeRawPointer, _ strides: [Int], panels: Bool,
                         _ b: Int, _ h: Int, _ l: Int, _ d: Int) -> Float {
        let w = keyPanelWidth.rawValue
        let index = panels ? b * strides[0] + h * strides[1] + l / w * strides[2] + d * w + l % w
                           : b * strides[0] + h * strides[1] + l * strides[2] + d * strides[3]
        if storage == .float32 { return base.load(fromByteOffset: index * 4, as: Float.self) }
        return storage.widen(base.load(fromByteOffset: index * 2, as: UInt16.self))
    }

    /// The widened keys and values as contiguous operands (what the oracle reads).
    func widenedOperands(batch: Int, kvHeads: Int, keyLength: Int, headDim: Int, valueDim: Int)
        -> (key: StridedOperand<Float>, value: StridedOperand<Float>)
    {
        func widened(_ base: UnsafeRawPointer?, _ strides: [Int], _ dim: Int, panels: Bool) -> StridedOperand<Float> {
            var scalars: [Float] = []
            scalars.reserveCapacity(batch * kvHeads * keyLength * dim)
            if let base {
                for b in 0..<batch { for h in 0..<kvHeads { for l in 0..<keyLength { for d in 0..<dim {
                    scalars.append(element(base, strides, panels: panels, b, h, l, d))
                } } } }
            }
            let shape = [batch, kvHeads, keyLength, dim]
            return StridedOperand(storage: scalars, offset: 0, strides: Tensor<Float>.contiguousStrides(for: shape))
        }
        return (widened(keys, keyStrides, headDim, panels: keyPanels), widened(values, valueStrides, valueDim, panels: false))
    }
}

extension AttentionProblem {
    /// The problem with `externalKV` replaced by its widened values as ordinary
    /// operands: the oracle's view of a problem whose keys live in a cache.
    func withWidenedKeyValues() -> AttentionProblem {
        guard let external = externalKV else { return self }
        var problem = self
        (problem.key, problem.value) = external.widenedOperands(
            batch: batch, kvHeads: kvHeads, keyLength: keyLength, headDim: headDim, valueDim: valueDim)
        problem.externalKV = nil
        return problem
    }
}
