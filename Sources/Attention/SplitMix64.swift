import Foundation

/// SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): a seeded 64-bit generator, a few instructions per
/// number, for reproducible data — `Tensor.randomNormal(_:seed:)`, default
/// dropout seeds, tests, and the `attention` command's bench tensors and token
/// streams. Not cryptographic; the same seed gives the same sequence on every
/// platform.
package struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    /// A generator whose first number is the mix of `seed + 0x9E3779B97F4A7C15`.
    package init(seed: UInt64) { state = seed }

    /// The next number: advance the state by the golden-ratio increment, then
    /// mix it (two xor-shift-multiply rounds and a final xor-shift).
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A standard-normal sample by the Box–Muller transform (two numbers).
    package mutating func nextNormal() -> Float {
        let u1 = Double(next() >> 11 | 1) * 0x1p-53  // (0, 1): log stays finite
        let u2 = Double(next() >> 11) * 0x1p-53
        return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
    }

    /// A uniform sample in `[-bound, bound)` from the top 24 bits of one number
    /// (`k · 2⁻²³ − 1` for `k` in `0 ..< 2²⁴`, scaled by `bound`).
    package mutating func nextUniform(_ bound: Float) -> Float {
        (Float(next() >> 40) * 0x1p-23 - 1) * bound
    }

    /// `count` uniform samples in `[-bound, bound)`, in order.
    package mutating func uniform(count: Int, bound: Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            for index in 0..<count { buffer[index] = nextUniform(bound) }
            initialized = count
        }
    }
}
