import Attention

/// Renders tensors for the terminal the way PyTorch prints them: 4 decimals,
/// one row per line, matrices of a batch one after another.
enum MatrixFormatting {
    static func render(_ tensor: Tensor<Float>, indent: String = "    ") -> String {
        if tensor.rank == 0 { return indent + format(tensor.scalars.first ?? .nan, decimals: 0) }
        let columns = tensor.shape.last ?? 0
        guard columns > 0 else { return indent + "(empty \(tensor.shape))" }
        var lines: [String] = []
        let rowsPerMatrix = tensor.rank >= 2 ? tensor.shape[tensor.rank - 2] : 1
        for (rowIndex, start) in stride(from: 0, to: tensor.count, by: columns).enumerated() {
            if rowIndex > 0, rowIndex % rowsPerMatrix == 0 { lines.append("") }
            let row = tensor.scalars[start..<start + columns].map { format($0, decimals: 4) }
            lines.append(indent + row.joined(separator: " "))
        }
        return lines.joined(separator: "\n")
    }

    static func format(_ value: Float, decimals: Int) -> String {
        if value.isNaN { return "nan".leftPadded(to: 8) }
        if value.isInfinite { return (value > 0 ? "inf" : "-inf").leftPadded(to: 8) }
        var scaled = Double(value)
        for _ in 0..<decimals { scaled *= 10 }
        let rounded = Int64(scaled.rounded())
        let sign = rounded < 0 ? "-" : " "
        let magnitude = rounded.magnitude
        var divisor: UInt64 = 1
        for _ in 0..<decimals { divisor *= 10 }
        let whole = magnitude / divisor
        let fraction = String(magnitude % divisor)
        let text = decimals > 0
            ? "\(sign)\(whole).\(String(repeating: "0", count: decimals - fraction.count))\(fraction)"
            : "\(sign)\(whole)"
        return text.leftPadded(to: 8)
    }

    /// A non-negative difference in scientific notation, e.g. "3.0e-08".
    static func scientific(_ value: Float) -> String {
        if value == 0 { return "0" }
        if !value.isFinite || value < 0 { return "\(value)" }
        var exponent = 0
        var mantissa = Double(value)
        while mantissa >= 10 { mantissa /= 10; exponent += 1 }
        while mantissa < 1 { mantissa *= 10; exponent -= 1 }
        let tenths = Int((mantissa * 10).rounded())
        let (whole, fraction) = tenths == 100 ? (1, 0) : (tenths / 10, tenths % 10)
        let adjusted = tenths == 100 ? exponent + 1 : exponent
        return "\(whole).\(fraction)e\(adjusted < 0 ? "-" : "+")\(abs(adjusted) < 10 ? "0" : "")\(abs(adjusted))"
    }
}

extension String {
    func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
