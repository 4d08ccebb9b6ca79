/// SplitMix64 (Steele, Lea, Flood, "Fast splittable pseudorandom number
/// generators", OOPSLA 2014): a seeded 64-bit generator, a few instructions per
/// number, for the command's reproducible inputs (bench tensors, token streams).
/// Not cryptographic; the same seed gives the same sequence on every platform.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform sample in `[-bound, bound)` from the top 24 bits of one number
    /// (`k · 2⁻²³ − 1` for `k` in `0 ..< 2²⁴`, scaled by `bound`).
    mutating func nextUniform(_ bound: Float) -> Float {
        (Float(next() >> 40) * 0x1p-23 - 1) * bound
    }

    /// `count` uniform samples in `[-bound, bound)`, in order.
    mutating func uniform(count: Int, bound: Float) -> [Float] {
        [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            for index in 0..<count { buffer[index] = nextUniform(bound) }
            initialized = count
        }
    }
}
