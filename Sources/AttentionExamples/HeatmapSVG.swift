import Foundation

extension Heatmap {
    /// The matrix as a standalone SVG image: a title, the row labels (queries)
    /// down the left, the column labels (keys) along the top, each cell coloured
    /// on the viridis scale (with its value written in it when the cells are
    /// large enough), masked (−∞) cells grey, and a colour bar with its range.
    ///
    /// - Parameters:
    ///   - matrix: the matrix to draw.
    ///   - subtitle: a second, smaller line under the title (e.g. what the picture shows), or `nil`.
    ///   - rowAxis: the name of the vertical axis.
    ///   - columnAxis: the name of the horizontal axis.
    /// - Returns: a complete SVG 1.1 document (UTF-8 text).
    public static func svg(
        _ matrix: LabelledMatrix, subtitle: String? = nil,
        rowAxis: String = "query token (row i)", columnAxis: String = "key token (column j), attended to"
    ) -> String {
        let cell = matrix.columns <= 8 && matrix.rows <= 8 ? 56.0 : 30.0
        let showNumbers = cell >= 40
        let labelCharacter = 7.2  // average glyph width of 12 px sans-serif
        let rowLabelWidth = Double(matrix.rowLabels.map(\.count).max() ?? 0) * labelCharacter
        let columnLabelHeight = Double(matrix.columnLabels.map(\.count).max() ?? 0) * labelCharacter * 0.72 + 12
        let left = 40 + rowLabelWidth + 10
        let top = 34 + (subtitle == nil ? 0 : 18) + 22 + columnLabelHeight
        let gridWidth = Double(matrix.columns) * cell, gridHeight = Double(matrix.rows) * cell
        let barX = left + gridWidth + 28
        let width = max(barX + 18 + 70, 420)
        let height = top + gridHeight + 30
        let (low, high) = ColourScale.range(of: matrix)
        func n(_ value: Double) -> String { String(format: "%.1f", value) }

        var svg = """
            <?xml version="1.0" encoding="UTF-8"?>
            <svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="\(n(width))" height="\(n(height))" \
            viewBox="0 0 \(n(width)) \(n(height))" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">
            <title>\(matrix.title.xmlEscaped)</title>
            <desc>\(matrix.rows)×\(matrix.columns) heatmap; rows: \(matrix.rowLabels.joined(separator: " ").xmlEscaped); \
            columns: \(matrix.columnLabels.joined(separator: " ").xmlEscaped); colour scale viridis from \
            \(formatCell(low)) to \(formatCell(high)).</desc>
            <rect width="100%" height="100%" fill="white"/>
            <text x="12" y="24" font-size="16" font-weight="bold">\(matrix.title.xmlEscaped)</text>

            """
        if let subtitle {
            svg += "<text x=\"12\" y=\"44\" font-size=\"12\" fill=\"#444\">\(subtitle.xmlEscaped)</text>\n"
        }
        // Axis names.
        svg += "<text x=\"\(n(left + gridWidth / 2))\" y=\"\(n(top - columnLabelHeight - 8))\" font-size=\"12\" "
            + "text-anchor=\"middle\" fill=\"#333\">\(columnAxis.xmlEscaped)</text>\n"
        svg += "<text transform=\"translate(18 \(n(top + gridHeight / 2))) rotate(-90)\" font-size=\"12\" "
            + "text-anchor=\"middle\" fill=\"#333\">\(rowAxis.xmlEscaped)</text>\n"
        // Column labels, slanted, and row labels.
        for (column, label) in matrix.columnLabels.enumerated() {
            let x = left + (Double(column) + 0.5) * cell
            svg += "<text transform=\"translate(\(n(x)) \(n(top - 6))) rotate(-45)\" font-size=\"12\">\(label.xmlEscaped)</text>\n"
        }
        for (row, label) in matrix.rowLabels.enumerated() {
            let y = top + (Double(row) + 0.5) * cell + 4
            svg += "<text x=\"\(n(left - 8))\" y=\"\(n(y))\" font-size=\"12\" text-anchor=\"end\">\(label.xmlEscaped)</text>\n"
        }
        // Cells.
        svg += "<g stroke=\"white\" stroke-width=\"1\">\n"
        for row in 0..<matrix.rows {
            for column in 0..<matrix.columns {
                let value = matrix[row, column]
                let colour = value == -.infinity ? ColourScale.masked : ColourScale.colour(Double((value - low) / (high - low)))
                let (x, y) = (left + Double(column) * cell, top + Double(row) * cell)
                svg += "<rect x=\"\(n(x))\" y=\"\(n(y))\" width=\"\(n(cell))\" height=\"\(n(cell))\" fill=\"\(colour.hex)\">"
                svg += "<title>\(matrix.rowLabels[row].xmlEscaped) → \(matrix.columnLabels[column].xmlEscaped): \(formatCell(value))</title></rect>\n"
            }
        }
        svg += "</g>\n"
        if showNumbers {
            svg += "<g font-size=\"11\" text-anchor=\"middle\">\n"
            for row in 0..<matrix.rows {
                for column in 0..<matrix.columns {
                    let value = matrix[row, column]
                    let colour = value == -.infinity ? ColourScale.masked : ColourScale.colour(Double((value - low) / (high - low)))
                    let text = value == -.infinity ? "−∞" : String(format: "%.2f", value)
                    let x = left + (Double(column) + 0.5) * cell, y = top + (Double(row) + 0.5) * cell + 4
                    svg += "<text x=\"\(n(x))\" y=\"\(n(y))\" fill=\"\(colour.luminance > 0.5 ? "black" : "white")\">\(text)</text>\n"
                }
            }
            svg += "</g>\n"
        }
        // Colour bar: high at the top.
        svg += "<defs><linearGradient id=\"scale\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">\n"
        for (index, stop) in ColourScale.stops.enumerated() {
            svg += "<stop offset=\"\(n(100 * Double(index) / Double(ColourScale.stops.count - 1)))%\" stop-color=\"\(stop.hex)\"/>\n"
        }
        svg += "</linearGradient></defs>\n"
        svg += "<rect x=\"\(n(barX))\" y=\"\(n(top))\" width=\"16\" height=\"\(n(gridHeight))\" fill=\"url(#scale)\" stroke=\"#333\" stroke-width=\"0.5\"/>\n"
        for (fraction, value) in [(0.0, low), (0.5, (low + high) / 2), (1.0, high)] {
            let y = top + gridHeight * (1 - fraction)
            svg += "<line x1=\"\(n(barX + 16))\" y1=\"\(n(y))\" x2=\"\(n(barX + 20))\" y2=\"\(n(y))\" stroke=\"#333\"/>"
            svg += "<text x=\"\(n(barX + 23))\" y=\"\(n(y + 4))\" font-size=\"11\">\(formatCell(value))</text>\n"
        }
        if matrix.values.scalars.contains(-.infinity) {
            svg += "<rect x=\"\(n(barX))\" y=\"\(n(top + gridHeight + 8))\" width=\"16\" height=\"10\" fill=\"\(ColourScale.masked.hex)\"/>"
            svg += "<text x=\"\(n(barX + 20))\" y=\"\(n(top + gridHeight + 17))\" font-size=\"11\">masked</text>\n"
        }
        svg += "</svg>\n"
        return svg
    }
}
