/// Philox-4x32-10, the counter-based generator behind dropout, written
/// independently of the C kernel's copy so that the equivalence tests check one
/// against the other.
///
/// Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3"
/// (SC 2011); constants as in the paper and Random123.
public enum Philox {
    /// Philox-4x32-10 of a 128-bit `counter` under a 64-bit `key`.
    ///
    /// - Parameters:
    ///   - counter: the four 32-bit words of the counter, low word first.
    ///   - key: the two 32-bit words of the key, low word first.
    /// - Returns: four 32-bit random words, after ten rounds.
    public static func philox4x32_10(counter: (UInt32, UInt32, UInt32, UInt32), key: (UInt32, UInt32))
        -> (UInt32, UInt32, UInt32, UInt32)
    {
        var (c0, c1, c2, c3) = counter
        var (k0, k1) = key
        for round in 0..<10 {
            if round > 0 {
                k0 &+= 0x9E37_79B9
                k1 &+= 0xBB67_AE85
            }
            let product0 = UInt64(0xD251_1F53) * UInt64(c0)
            let product1 = UInt64(0xCD9E_8D57) * UInt64(c2)
            (c0, c1, c2, c3) = (
                UInt32(truncatingIfNeeded: product1 >> 32) ^ c1 ^ k0,
                UInt32(truncatingIfNeeded: product1),
                UInt32(truncatingIfNeeded: product0 >> 32) ^ c3 ^ k1,
                UInt32(truncatingIfNeeded: product0)
            )
        }
        return (c0, c1, c2, c3)
    }

    /// Whether dropout keeps the attention weight at (batch, head, row, column).
    ///
    /// The counter is `(column / 4, row, head, batch)` (low 32 bits of each), the
    /// key is `seed`; word `column % 4` of the output, as a 24-bit uniform
    /// `u = (word >> 8) · 2⁻²⁴` in [0, 1), keeps the cell when `u >= probability`.
    ///
    /// - Parameters:
    ///   - seed: the dropout seed (the generator's key).
    ///   - batch: the batch index.
    ///   - head: the query head index.
    ///   - row: the query row index.
    ///   - column: the key index.
    ///   - probability: the dropout probability, in [0, 1).
    /// - Returns: `true` if the weight is kept (and scaled by 1/(1 − p)).
    public static func keeps(seed: UInt64, batch: Int, head: Int, row: Int, column: Int, probability: Float) -> Bool {
        let words = philox4x32_10(
            counter: (
                UInt32(truncatingIfNeeded: column / 4), UInt32(truncatingIfNeeded: row),
                UInt32(truncatingIfNeeded: head), UInt32(truncatingIfNeeded: batch)
            ),
            key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)))
        let word: UInt32
        switch column % 4 {
        case 0: word = words.0
        case 1: word = words.1
        case 2: word = words.2
        default: word = words.3
        }
        return Float(word >> 8) * 0x1p-24 >= probability
    }
}
