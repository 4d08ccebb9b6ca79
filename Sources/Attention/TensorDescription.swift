import Foundation

/// `print(tensor)` in PyTorch's format, with the shape appended.
///
///     tensor([[0.4300, 0.1500, 0.8900],
///             [0.5500, 0.8700, 0.6600]], shape=[2, 3])
///
/// The rules are PyTorch's `torch._tensor_str` defaults (precision 4, threshold
/// 1000 elements, 3 edge items, line width 80), so a tensor prints as the book's
/// notebooks print it:
/// - all elements share one width, right-aligned, so rows and columns line up;
/// - 4 decimals, or scientific notation (`1.2346e+05`) when the largest finite
///   magnitude exceeds 1e8, or is more than 1000 times the smallest non-zero one,
///   or the smallest non-zero one is below 1e-4; a tensor of whole numbers
///   prints them with a trailing dot (`2.`), as PyTorch does;
/// - `nan`, `inf` and `-inf` as such;
/// - a tensor of more than 1000 elements shows the first and last 3 entries of
///   each dimension longer than 6, with `...` in between;
/// - rows longer than the line width wrap.
///
/// Differences from PyTorch: the shape is always appended (`shape=[2, 3]`, where
/// PyTorch adds `size=(…)` only for empty tensors), and there is no `dtype=`
/// suffix. `Bool` elements print as `True`/`False`, integers in decimal, other
/// element types through `String(describing:)`.
extension Tensor: CustomStringConvertible {
    /// The tensor in PyTorch's print format with its shape appended, e.g.
    /// `tensor([[0.4300, 0.1500, 0.8900]], shape=[1, 3])`: what `print(tensor)`
    /// shows.
    public var description: String {
        let prefix = "tensor("
        let summarize = count > TensorPrintOptions.threshold
        let strings = TensorElementFormatter.strings(for: self, summarize: summarize)
        let body: String
        if rank == 0 {
            body = strings.first.map { $0.trimmingLeadingSpaces() } ?? ""
        } else if count == 0 {
            body = "[]"
        } else {
            body = TensorLayout(shape: shape, strings: strings, summarize: summarize)
                .render(dimension: 0, offset: 0, indent: prefix.count)
        }
        return prefix + body + ", shape=\(shape))"
    }
}

/// PyTorch's print defaults (`torch.set_printoptions`).
enum TensorPrintOptions {
    static let precision = 4
    static let threshold = 1000
    static let edgeItems = 3
    static let lineWidth = 80
}

/// Formats every element to one common width (only those shown when summarised).
enum TensorElementFormatter {
    /// One string per element, right-aligned to the common width; for a
    /// summarised tensor, elements that are not shown get an empty string.
    static func strings<Element>(for tensor: Tensor<Element>, summarize: Bool) -> [String] {
        let shown = summarize ? shownMask(shape: tensor.shape) : nil
        var raw: [String]
        if let values = doubles(tensor.scalars) {
            var visible: [Double] = []
            for (index, value) in values.enumerated() where shown?[index] ?? true { visible.append(value) }
            let style = FloatStyle(values: visible)
            raw = values.map(style.format)
        } else if let bools = tensor.scalars as? [Bool] {
            raw = bools.map { $0 ? "True" : "False" }
        } else {
            raw = tensor.scalars.map { String(describing: $0) }
        }
        if let shown { for index in raw.indices where !shown[index] { raw[index] = "" } }
        let width = raw.map(\.count).max() ?? 0
        return raw.map { String(repeating: " ", count: width - $0.count) + $0 }
    }

    private static func doubles<Element>(_ scalars: [Element]) -> [Double]? {
        if let floats = scalars as? [Float] { return floats.map(Double.init) }
        if let doubles = scalars as? [Double] { return doubles }
        return nil
    }

    /// Which elements a summarised print shows: along every dimension longer
    /// than 2·edgeItems, the first and last edgeItems indices.
    private static func shownMask(shape: [Int]) -> [Bool] {
        let count = shape.reduce(1, *)
        var mask = [Bool](repeating: true, count: count)
        let strides = Tensor<Float>.contiguousStrides(for: shape)
        for flat in 0..<count {
            for (axis, size) in shape.enumerated() where size > 2 * TensorPrintOptions.edgeItems {
                let index = flat / strides[axis] % size
                if index >= TensorPrintOptions.edgeItems && index < size - TensorPrintOptions.edgeItems {
                    mask[flat] = false
                    break
                }
            }
        }
        return mask
    }

    /// PyTorch's `_Formatter` for floating-point tensors.
    struct FloatStyle {
        enum Mode { case integer, fixed, scientific }
        let mode: Mode

        init(values: [Double]) {
            let finite = values.filter(\.isFinite)
            let magnitudes = finite.map(abs).filter { $0 != 0 }
            if finite.allSatisfy({ $0 == $0.rounded() }) {
                mode = (magnitudes.max() ?? 0) > 1e8 ? .scientific : .integer
            } else if let largest = magnitudes.max(), let smallest = magnitudes.min(),
                      largest / smallest > 1000 || largest > 1e8 || smallest < 1e-4 {
                mode = .scientific
            } else {
                mode = .fixed
            }
        }

        func format(_ value: Double) -> String {
            if value.isNaN { return "nan" }
            if value.isInfinite { return value > 0 ? "inf" : "-inf" }
            switch mode {
            case .integer: return String(format: "%.0f.", value)
            case .fixed: return String(format: "%.\(TensorPrintOptions.precision)f", value)
            case .scientific: return String(format: "%.\(TensorPrintOptions.precision)e", value)
            }
        }
    }
}

/// Nests formatted elements into brackets the way `torch._tensor_str` does.
struct TensorLayout {
    let shape: [Int]
    let strings: [String]
    let summarize: Bool

    /// The bracketed text of the sub-tensor at `dimension` starting at element
    /// `offset`, whose first character sits at column `indent`.
    func render(dimension: Int, offset: Int, indent: Int) -> String {
        let size = shape[dimension]
        let step = shape[(dimension + 1)...].reduce(1, *)
        let edge = TensorPrintOptions.edgeItems
        let elided = summarize && size > 2 * edge
        let indices: [Int?] = elided ? Array(0..<edge) + [nil] + Array((size - edge)..<size) : Array(0..<size)
        if dimension == shape.count - 1 {
            let items = indices.map { $0.map { strings[offset + $0] } ?? " ..." }
            let width = (strings.first?.count ?? 0) + 2
            let perLine = max(1, (TensorPrintOptions.lineWidth - indent) / max(width, 1))
            var lines: [String] = []
            for start in stride(from: 0, to: items.count, by: perLine) {
                lines.append(items[start..<min(start + perLine, items.count)].joined(separator: ", "))
            }
            return "[" + lines.joined(separator: ",\n" + String(repeating: " ", count: indent + 1)) + "]"
        }
        let remaining = shape.count - dimension
        let separator = "," + String(repeating: "\n", count: remaining - 1) + String(repeating: " ", count: indent + 1)
        let slices = indices.map { index in
            index.map { render(dimension: dimension + 1, offset: offset + $0 * step, indent: indent + 1) } ?? "..."
        }
        return "[" + slices.joined(separator: separator) + "]"
    }
}

extension String {
    func trimmingLeadingSpaces() -> String { String(drop { $0 == " " }) }
}
