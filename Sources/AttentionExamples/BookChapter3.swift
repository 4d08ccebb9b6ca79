import Attention
import Foundation

/// The worked example of chapter 3 of Sebastian Raschka's "Build a Large
/// Language Model (From Scratch)": the sentence "Your journey starts with one
/// step" as six 3-dimensional embeddings, the exact weights of every attention
/// variant, and every number the chapter prints (regenerated with PyTorch 2.15;
/// `Resources/README.md` gives the provenance).
public struct BookChapter3: Decodable, Sendable {
    public typealias Matrix = [[Float]]

    /// The six tokens.
    public let tokens: [String]
    /// The token embeddings `[6, 3]`.
    public let inputs: Matrix
    public let simple: Simple
    public let selfAttentionV1: Projections
    public let selfAttentionV2: SelfAttentionV2
    public let dropoutDemo: DropoutDemo
    public let causalAttention: CausalAttention
    public let multiHeadWrapper: MultiHeadWrapper
    public let multiHeadAttention: MultiHeadAttentionExample
    /// The parameter count of a GPT-2-sized `MultiHeadAttention` (768 wide, 12 heads, no qkv bias).
    public let gpt2SizeParameterCount: Int

    /// §3.3: attention without weights; `scores = x·xᵀ` `[6, 6]`, `weights`, `context [6, 3]`.
    public struct Simple: Decodable, Sendable {
        public let scores: Matrix, weights: Matrix, context: Matrix
    }

    /// §3.4.1: `SelfAttention_v1`, weights `[in, out]` used as y = x·W; `weights [6, 6]`, `context [6, 2]`.
    public struct Projections: Decodable, Sendable {
        public let Wq: Matrix, Wk: Matrix, Wv: Matrix
        public let weights: Matrix, context: Matrix
    }

    /// §3.4.2 and §3.5.1: `SelfAttention_v2` (Linear layout `[out, in]`) and the causal weights and context.
    public struct SelfAttentionV2: Decodable, Sendable {
        public let Wq: Matrix, Wk: Matrix, Wv: Matrix
        public let weights: Matrix, context: Matrix
        public let causalWeights: Matrix, causalContext: Matrix
    }

    /// §3.5.2: `nn.Dropout(0.5)` on `ones(6, 6)` and on the causal weights, both under
    /// `torch.manual_seed(123)`, so the same cells survive (2.0 = kept).
    public struct DropoutDemo: Decodable, Sendable {
        public let p: Float
        public let onOnes: Matrix, onCausalWeights: Matrix
    }

    /// §3.5.3: `CausalAttention(3, 2, 6, 0.0)` on two stacked copies of the input: `context [2, 6, 2]`.
    public struct CausalAttention: Decodable, Sendable {
        public let dIn: Int, dOut: Int, contextLength: Int
        public let dropout: Float
        public let Wq: Matrix, Wk: Matrix, Wv: Matrix
        public let context: [Matrix]
    }

    /// §3.6.1: `MultiHeadAttentionWrapper` with two causal heads: `context [2, 6, 4]`.
    public struct MultiHeadWrapper: Decodable, Sendable {
        public let numHeads: Int, dOutPerHead: Int
        public let heads: [Head]
        public let context: [Matrix]
        public struct Head: Decodable, Sendable { public let Wq: Matrix, Wk: Matrix, Wv: Matrix }
    }

    /// §3.6.2: `MultiHeadAttention(3, 2, 6, 0.0, num_heads=2)`: `context [2, 6, 2]`.
    public struct MultiHeadAttentionExample: Decodable, Sendable {
        public let dIn: Int, dOut: Int, numHeads: Int, contextLength: Int
        public let Wq: Matrix, Wk: Matrix, Wv: Matrix
        public let outWeight: Matrix, outBias: [Float]
        public let context: [Matrix]
    }

    /// Loads the bundled `book-ch03.json`.
    ///
    /// - Throws: `ExampleDataError.missingResource` if the resource is not bundled,
    ///   or a `DecodingError` if it does not parse.
    public static func load() throws -> BookChapter3 {
        let data = try Data(contentsOf: try ExampleData.url(forResource: "book-ch03.json"))
        return try JSONDecoder().decode(BookChapter3.self, from: data)
    }
}

extension Tensor where Element == Float {
    /// A `[rows, columns]` tensor from nested rows.
    ///
    /// - Throws: `AttentionError.elementCountMismatch` for ragged rows.
    public init(matrix rows: [[Float]]) throws {
        try self.init(shape: [rows.count, rows.first?.count ?? 0], scalars: rows.flatMap { $0 })
    }

    /// A `[count, rows, columns]` tensor from nested matrices.
    ///
    /// - Throws: `AttentionError.elementCountMismatch` for ragged input.
    public init(matrices: [[[Float]]]) throws {
        let rows = matrices.first?.count ?? 0
        let columns = matrices.first?.first?.count ?? 0
        try self.init(shape: [matrices.count, rows, columns], scalars: matrices.flatMap { $0.flatMap { $0 } })
    }
}
