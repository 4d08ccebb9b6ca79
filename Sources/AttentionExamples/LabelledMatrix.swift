import Attention

/// A matrix with a name for every row and column — tokens, for attention
/// weights — as the book's notebooks show them, and the book's value for it
/// where `book-ch03.json` holds one.
public struct LabelledMatrix: Sendable {
    /// What the matrix is, e.g. "causal attention weights (§3.5.1)".
    public let title: String
    /// `[rows, columns]`.
    public let values: Tensor<Float>
    /// One label per row (the queries, for attention weights).
    public let rowLabels: [String]
    /// One label per column (the keys, for attention weights).
    public let columnLabels: [String]
    /// The book's (PyTorch's) numbers, `[rows, columns]`, or `nil` where the book prints none.
    public let expected: Tensor<Float>?
    /// Whether rows and columns are both tokens: an attention map (drawn as a
    /// heatmap file by `attention demo --svg`).
    public let isAttentionMap: Bool

    /// Creates a labelled matrix.
    ///
    /// - Parameters:
    ///   - title: what the matrix is.
    ///   - values: `[rows, columns]`; a vector `[columns]` is taken as one row.
    ///   - rowLabels: `rows` labels.
    ///   - columnLabels: `columns` labels.
    ///   - expected: the book's numbers, the shape of `values` (a vector is taken as one row), or `nil`.
    ///   - isAttentionMap: whether rows and columns are both tokens.
    /// - Throws: `AttentionError.invalidShape` naming `values`, `expected`,
    ///   `rowLabels` or `columnLabels` when they do not fit together.
    public init(
        title: String, values: Tensor<Float>, rowLabels: [String], columnLabels: [String],
        expected: Tensor<Float>? = nil, isAttentionMap: Bool = false
    ) throws {
        let matrix = values.rank == 1 ? try values.reshaped([1, values.count]) : values
        guard matrix.rank == 2 else {
            throw AttentionError.invalidShape(argument: "values", expected: "[rows, columns]", actual: values.shape)
        }
        guard rowLabels.count == matrix.shape[0] else {
            throw AttentionError.invalidShape(
                argument: "rowLabels", expected: "\(matrix.shape[0]) labels (the rows of values)", actual: [rowLabels.count])
        }
        guard columnLabels.count == matrix.shape[1] else {
            throw AttentionError.invalidShape(
                argument: "columnLabels", expected: "\(matrix.shape[1]) labels (the columns of values)", actual: [columnLabels.count])
        }
        let expectedMatrix = try expected.map { $0.rank == 1 ? try $0.reshaped([1, $0.count]) : $0 }
        if let expectedMatrix, expectedMatrix.shape != matrix.shape {
            throw AttentionError.invalidShape(argument: "expected", expected: "\(matrix.shape) (the shape of values)", actual: expectedMatrix.shape)
        }
        self.title = title
        self.values = matrix
        self.rowLabels = rowLabels
        self.columnLabels = columnLabels
        self.expected = expectedMatrix
        self.isAttentionMap = isAttentionMap
    }

    /// The number of rows.
    public var rows: Int { values.shape[0] }
    /// The number of columns.
    public var columns: Int { values.shape[1] }

    /// The element at (`row`, `column`).
    public subscript(row: Int, column: Int) -> Float { values.scalars[row * columns + column] }

    /// max |values − expected| (NaN if either holds NaN at the same place, and
    /// 0 where both are the same infinity), or `nil` without an expected value.
    public var maxAbsoluteDifference: Float? {
        guard let expected else { return nil }
        var largest: Float = 0
        for (a, b) in zip(values.scalars, expected.scalars) where a != b {
            let difference = abs(a - b)
            if difference.isNaN { return .nan }
            largest = max(largest, difference)
        }
        return largest
    }

    /// The sum of each row.
    public var rowSums: [Float] {
        (0..<rows).map { row in (0..<columns).reduce(Float(0)) { $0 + self[row, $1] } }
    }
}
