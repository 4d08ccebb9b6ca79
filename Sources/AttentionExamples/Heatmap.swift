import Foundation

/// How a terminal heatmap is coloured.
public enum TerminalColour: Sendable, Equatable {
    /// Plain numbers, no escape sequences (a pipe, a file, or `NO_COLOR`).
    case none
    /// 256-colour backgrounds (`ESC[48;5;Nm`, the 6×6×6 colour cube).
    case palette256
    /// 24-bit backgrounds (`ESC[48;2;R;G;Bm`).
    case trueColour

    /// The mode for standard output: `.none` when it is not a terminal, or when
    /// `NO_COLOR` is set to anything but the empty string (https://no-color.org),
    /// or `TERM` is `dumb`; `.trueColour` when `COLORTERM` is `truecolor` or
    /// `24bit`; `.palette256` otherwise.
    ///
    /// - Parameters:
    ///   - isTerminal: whether standard output is a terminal (`isatty(1)`).
    ///   - environment: the process environment.
    /// - Returns: the colour mode to use.
    public static func detect(isTerminal: Bool, environment: [String: String]) -> TerminalColour {
        guard isTerminal else { return .none }
        if let noColour = environment["NO_COLOR"], !noColour.isEmpty { return .none }
        if environment["TERM"] == "dumb" { return .none }
        let colourTerm = environment["COLORTERM"]?.lowercased() ?? ""
        return colourTerm == "truecolor" || colourTerm == "24bit" ? .trueColour : .palette256
    }
}

/// An RGB colour, 0…255 per channel.
struct RGB: Equatable {
    var red, green, blue: Int

    var hex: String { String(format: "#%02x%02x%02x", red, green, blue) }

    /// Relative luminance (ITU-R BT.709 weights), 0…1: chooses black or white text.
    var luminance: Double { (0.2126 * Double(red) + 0.7152 * Double(green) + 0.0722 * Double(blue)) / 255 }

    /// The nearest colour of xterm's 6×6×6 cube (indices 16…231).
    var palette256Index: Int {
        let levels = [0, 95, 135, 175, 215, 255]
        func nearest(_ value: Int) -> Int { levels.indices.min { abs(levels[$0] - value) < abs(levels[$1] - value) }! }
        return 16 + 36 * nearest(red) + 6 * nearest(green) + nearest(blue)
    }
}

/// The colour scale of every heatmap: viridis (van der Walt & Smith, matplotlib's
/// default), perceptually uniform and readable in grey and by colour-blind
/// readers, from dark purple (low) to yellow (high).
enum ColourScale {
    static let stops: [RGB] = [
        RGB(red: 68, green: 1, blue: 84), RGB(red: 59, green: 82, blue: 139), RGB(red: 33, green: 145, blue: 140),
        RGB(red: 94, green: 201, blue: 98), RGB(red: 253, green: 231, blue: 37),
    ]
    /// Masked (−∞) cells: neutral grey, outside the scale.
    static let masked = RGB(red: 200, green: 200, blue: 200)

    /// The colour of `fraction` in [0, 1] (clamped), linearly between the stops.
    static func colour(_ fraction: Double) -> RGB {
        let t = min(max(fraction.isNaN ? 0 : fraction, 0), 1) * Double(stops.count - 1)
        let index = min(Int(t), stops.count - 2)
        let local = t - Double(index)
        let (a, b) = (stops[index], stops[index + 1])
        func mix(_ x: Int, _ y: Int) -> Int { Int((Double(x) + (Double(y) - Double(x)) * local).rounded()) }
        return RGB(red: mix(a.red, b.red), green: mix(a.green, b.green), blue: mix(a.blue, b.blue))
    }

    /// The value range a matrix is coloured over: its finite minimum (or 0, for a
    /// matrix of non-negative values such as weights) to its finite maximum.
    static func range(of matrix: LabelledMatrix) -> (low: Float, high: Float) {
        let finite = matrix.values.scalars.filter(\.isFinite)
        guard let lowest = finite.min(), let highest = finite.max() else { return (0, 1) }
        let low = lowest >= 0 ? 0 : lowest
        return (low, highest > low ? highest : low + 1)
    }
}

/// Token-labelled heatmaps of a `LabelledMatrix`: in the terminal, and as SVG.
public enum Heatmap {
    /// The width of one cell of the terminal rendering, in characters (more
    /// for a matrix with a value that needs more than 7).
    static let cellWidth = 8

    /// The matrix as text: a header of column labels, then one line per row,
    /// its label first, each cell its value with 4 decimals (`-inf` for a masked
    /// cell). With colour, each cell's background shows its value on the viridis
    /// scale (legend below); without, the numbers alone. A matrix wider than
    /// `width` is printed in blocks of columns, each under a line
    /// `columns 1–8 of 16` and its own header, as PyTorch and NumPy print wide
    /// arrays: every value is still printed, and no line is wider than `width`
    /// (colour codes aside) unless `width` is too narrow for one column.
    /// Every cell is as wide as the widest value needs plus one space
    /// (8 characters at least), so that numbers never run together.
    ///
    /// - Parameters:
    ///   - matrix: the matrix to draw.
    ///   - colour: from `TerminalColour.detect(isTerminal:environment:)`.
    ///   - indent: put before every line.
    ///   - width: the widest line, in columns (characters of the plain text);
    ///     `nil` (the default) for one block however wide.
    /// - Returns: the lines, joined by newlines, without a final newline.
    public static func terminal(_ matrix: LabelledMatrix, colour: TerminalColour, indent: String = "    ", width: Int? = nil) -> String {
        let labelWidth = min(max(matrix.rowLabels.map(\.count).max() ?? 0, 4), 12)
        let (low, high) = ColourScale.range(of: matrix)
        var lines: [String] = []
        // Wider cells when a value needs more than 7 characters (−10 or below,
        // 100 or above): every cell keeps a space before its number.
        let cellWidth = max(Self.cellWidth, 1 + (matrix.values.scalars.map { formatCell($0).count }.max() ?? 0))
        let perBlock = width.map { max(1, ($0 - indent.count - labelWidth) / cellWidth) } ?? matrix.columns
        for first in stride(from: 0, to: max(matrix.columns, 1), by: max(perBlock, 1)) {
            let columns = first..<min(first + perBlock, matrix.columns)
            if columns.count < matrix.columns {
                lines.append(indent + "columns \(columns.lowerBound + 1)–\(columns.upperBound) of \(matrix.columns)")
            }
            let header = columns.map { fit(matrix.columnLabels[$0], cellWidth - 1).leftPadded(cellWidth) }.joined()
            lines.append(indent + String(repeating: " ", count: labelWidth) + header)
            for row in 0..<matrix.rows {
                var line = indent + fit(matrix.rowLabels[row], labelWidth).leftPadded(labelWidth)
                for column in columns {
                    let value = matrix[row, column]
                    let text = formatCell(value).leftPadded(cellWidth)
                    switch colour {
                    case .none:
                        line += text
                    case .palette256, .trueColour:
                        let background = value == -.infinity
                            ? ColourScale.masked : ColourScale.colour(Double((value - low) / (high - low)))
                        let foreground = background.luminance > 0.5 ? "30" : "97"
                        let backgroundCode = colour == .trueColour
                            ? "48;2;\(background.red);\(background.green);\(background.blue)"
                            : "48;5;\(background.palette256Index)"
                        line += "\u{1B}[\(foreground);\(backgroundCode)m\(text)\u{1B}[0m"
                    }
                }
                lines.append(line)
            }
        }
        if colour != .none {
            var legend = indent + "scale: "
            for step in 0...8 {
                let swatch = ColourScale.colour(Double(step) / 8)
                legend += colour == .trueColour
                    ? "\u{1B}[48;2;\(swatch.red);\(swatch.green);\(swatch.blue)m  \u{1B}[0m"
                    : "\u{1B}[48;5;\(swatch.palette256Index)m  \u{1B}[0m"
            }
            legend += " \(formatCell(low).trimmingCharacters(in: .whitespaces)) … \(formatCell(high).trimmingCharacters(in: .whitespaces))"
            if matrix.values.scalars.contains(-.infinity) { legend += "; grey = masked (−∞)" }
            lines.append(legend)
        }
        return lines.joined(separator: "\n")
    }

    /// A value with 4 decimals; `-inf`, `inf`, `nan` by name.
    static func formatCell(_ value: Float) -> String {
        if value.isNaN { return "nan" }
        if value.isInfinite { return value > 0 ? "inf" : "-inf" }
        return String(format: "%.4f", value)
    }

    /// `text` cut to `width` characters (with `…` when cut).
    static func fit(_ text: String, _ width: Int) -> String {
        text.count <= width ? text : String(text.prefix(max(width - 1, 0))) + "…"
    }
}

extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }

    /// The text with `&`, `<`, `>`, `"` and `'` escaped for XML.
    var xmlEscaped: String {
        var escaped = ""
        for character in self {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&apos;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
