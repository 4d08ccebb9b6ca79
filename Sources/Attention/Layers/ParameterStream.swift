/// The stream a layer's initial parameters are drawn from: one counter-based
/// stream keyed by the layer's seed, in which every matrix has a place of its
/// own.
///
/// Element `e` of matrix `m` is word `e % 4` of Philox-4x32-10 (Salmon et al.
/// 2011) under the key `seed`, at the counter `(e / 4 low 32 bits, e / 4 high
/// 32 bits, m, 0x5EED_1417)`, taken as a 24-bit uniform `(word >> 8) · 2⁻²⁴`.
/// Philox is a bijection of the counter for each key, so two matrices of one
/// layer never share a draw, and the streams of two seeds are unrelated: no
/// layer built with one seed shares a matrix with a layer built with another
/// (consecutive seeds used to shift one stream by one matrix). The last
/// counter word keeps these draws apart from dropout's, whose counters hold
/// (column / 4, row, head, batch).
///
/// A layer numbers its matrices in PyTorch's order of construction: query 0,
/// key 1, value 2, output projection 3; `MultiHeadAttentionWrapper` gives head
/// `h` the matrices `3h`, `3h + 1`, `3h + 2`, so its head 0 is the
/// `CausalSelfAttention` of the same seed. A `Linear` built alone with
/// `seed: s` is matrix 0 of seed `s`. A layer's bias follows its weight in
/// the same matrix's stream (elements `out·in ..< out·in + out`).
struct ParameterStream: Sendable {
    let seed: UInt64
    static let domain: UInt32 = 0x5EED_1417

    /// `count` uniforms in [0, 1) from element `first` of matrix `matrix`.
    func uniforms(matrix: Int, first: Int, count: Int) -> [Float] {
        let key = (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32))
        var result: [Float] = []
        result.reserveCapacity(count)
        var element = first
        let end = first + count
        while element < end {
            let block = UInt64(element / 4)
            let words = Philox.philox4x32_10(
                counter: (UInt32(truncatingIfNeeded: block), UInt32(truncatingIfNeeded: block >> 32),
                          UInt32(truncatingIfNeeded: matrix), Self.domain),
                key: key)
            let all = [words.0, words.1, words.2, words.3]
            for lane in (element % 4)..<4 where element < end {
                result.append(Float(all[lane] >> 8) * 0x1p-24)
                element += 1
            }
        }
        return result
    }
}
