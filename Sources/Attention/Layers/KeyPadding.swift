extension AttentionProblem {
    /// Hides padded keys: `padding [batch, keyLength]`, `true` = this key is padding.
    ///
    /// Alone, it becomes a keep mask `[batch, 1, 1, keyLength]` broadcast by
    /// strides. Together with an explicit mask, the two are combined into one
    /// full `[batch, heads, queryLength, keyLength]` mask (keep: logical and;
    /// additive: −∞ at padded keys).
    mutating func hideKeys(padding: Tensor<Bool>, argument: String) throws {
        guard padding.shape == [batch, keyLength] else {
            throw AttentionError.invalidShape(argument: argument, expected: "[\(batch), \(keyLength)] (batch, keyLength)", actual: padding.shape)
        }
        let keep = padding.scalars.map { !$0 }
        switch mask {
        case nil:
            mask = .keep(StridedOperand(storage: keep, offset: 0, strides: [keyLength, 0, 0, 1]))
        case let .keep(existing)?:
            mask = .keep(materialised(existing) { cell, b, j in cell && keep[b * keyLength + j] })
        case let .additive(existing)?:
            mask = .additive(materialised(existing) { cell, b, j in keep[b * keyLength + j] ? cell : -.infinity })
        }
    }

    /// A full, contiguous copy of a broadcast mask with `combine` applied per cell.
    private func materialised<Element>(
        _ operand: StridedOperand<Element>, _ combine: (Element, Int, Int) -> Element
    ) -> StridedOperand<Element> {
        var cells: [Element] = []
        cells.reserveCapacity(batch * queryHeads * queryLength * keyLength)
        for b in 0..<batch {
            for h in 0..<queryHeads {
                for i in 0..<queryLength {
                    for j in 0..<keyLength { cells.append(combine(operand[b, h, i, j], b, j)) }
                }
            }
        }
        return StridedOperand(storage: cells, offset: 0, strides: Tensor<Element>.contiguousStrides(for: maskShape))
    }
}
