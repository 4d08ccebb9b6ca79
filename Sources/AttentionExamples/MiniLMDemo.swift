import Attention
import Foundation

/// Layer 0 of the sentence-transformers model all-MiniLM-L6-v2 (a BERT encoder:
/// hidden size 384, 12 heads of 32), run through `MultiHeadAttention` on a real
/// sentence and compared with PyTorch (`Resources/README.md` gives the provenance).
public enum MiniLMDemo {
    /// The outcome of one run.
    public struct Report: Sendable {
        public let sentence: String
        public let tokenCount: Int
        public let hiddenSize: Int
        public let heads: Int
        public let headDim: Int
        /// Our attention output `[1, tokens, 384]` (context·Woᵀ + bo).
        public let output: Tensor<Float>
        /// max |Δ| of the merged heads' context against PyTorch's `context`.
        public let contextDifference: Float
        /// max |Δ| of the attention output against PyTorch's `attention_output`.
        public let outputDifference: Float
        /// The first 6 features of the first 4 tokens, for display.
        public var preview: Tensor<Float> {
            let columns = 6, rows = min(4, tokenCount)
            var scalars: [Float] = []
            for row in 0..<rows { scalars += output.scalars[(row * hiddenSize)..<(row * hiddenSize + columns)] }
            return (try? Tensor(shape: [rows, columns], scalars: scalars)) ?? output
        }
    }

    static let prefix = "encoder.layer.0.attention."

    /// The attention weights of every head of the layer, with the tokens.
    public struct HeadWeights: Sendable {
        /// The sentence.
        public let sentence: String
        /// The WordPiece tokens, `[CLS]` … `[SEP]`.
        public let tokens: [String]
        /// `[1, heads, tokens, tokens]`: row i of head h is token i's attention over all tokens.
        public let weights: Tensor<Float>
        /// max |Δ| of the layer's attention output against PyTorch's.
        public let outputDifference: Float
    }

    /// The weights of the 12 heads (from the oracle) and the tokens they are over.
    ///
    /// - Parameter backend: the backend of the output compared with PyTorch's.
    /// - Throws: `SafetensorsError` or `AttentionError` if the bundled file is
    ///   damaged (never for the file as shipped).
    public static func headWeights(backend: AttentionBackend = .fused) throws -> HeadWeights {
        let (file, layer, hidden) = try loadLayer(backend: backend)
        let tokensJSON = Data((file.metadata["tokens"] ?? "[]").utf8)
        let tokens = try JSONDecoder().decode([String].self, from: tokensJSON)
        let weights = try layer.attentionWeights(query: hidden, key: hidden, value: hidden)
        let output = try layer(hidden)
        let difference = output.maxAbsoluteDifference(to: try file.floatTensor("attention_output")) ?? .infinity
        return HeadWeights(sentence: file.metadata["sentence"] ?? "", tokens: tokens, weights: weights, outputDifference: difference)
    }

    /// The bundled file, the layer as BERT runs it, and its input `hidden_states [1, 16, 384]`.
    static func loadLayer(backend: AttentionBackend) throws -> (SafetensorsFile, MultiHeadAttention, Tensor<Float>) {
        let file = try SafetensorsFile(contentsOf: try ExampleData.url(forResource: "minilm-layer0.safetensors"))
        func linear(_ name: String) throws -> Linear {
            try Linear(weight: file.floatTensor(prefix + name + ".weight"), bias: file.floatTensor(prefix + name + ".bias"))
        }
        let heads = Int(file.metadata["num_heads"] ?? "") ?? 12
        var layer = try MultiHeadAttention(
            query: linear("self.query"), key: linear("self.key"), value: linear("self.value"),
            outputProjection: linear("output.dense"), heads: heads)
        layer.backend = backend
        return (file, layer, try file.floatTensor("hidden_states"))
    }

    /// Loads the bundled checkpoint slice and runs the layer.
    ///
    /// - Throws: `SafetensorsError` or `AttentionError` if the bundled file is
    ///   damaged (never for the file as shipped).
    public static func run(backend: AttentionBackend = .fused) throws -> Report {
        let file = try SafetensorsFile(contentsOf: try ExampleData.url(forResource: "minilm-layer0.safetensors"))
        func linear(_ name: String) throws -> Linear {
            try Linear(weight: file.floatTensor(prefix + name + ".weight"), bias: file.floatTensor(prefix + name + ".bias"))
        }
        let heads = Int(file.metadata["num_heads"] ?? "") ?? 12
        let hidden = try file.floatTensor("hidden_states")
        // The layer as BERT runs it: projections, 12 heads, merge, output projection.
        var layer = try MultiHeadAttention(
            query: linear("self.query"), key: linear("self.key"), value: linear("self.value"),
            outputProjection: linear("output.dense"), heads: heads)
        layer.backend = backend
        let output = try layer(hidden)
        // The same layer without its output projection returns the merged heads (BERT's "context").
        var headsOnly = try MultiHeadAttention(
            query: layer.query, key: layer.key, value: layer.value, outputProjection: nil, heads: heads)
        headsOnly.backend = backend
        let context = try headsOnly(hidden)
        let expectedContext = try file.floatTensor("context")
        let expectedOutput = try file.floatTensor("attention_output")
        return Report(
            sentence: file.metadata["sentence"] ?? "",
            tokenCount: hidden.shape[1], hiddenSize: hidden.shape[2], heads: heads,
            headDim: layer.headDim, output: output,
            contextDifference: context.maxAbsoluteDifference(to: expectedContext) ?? .infinity,
            outputDifference: output.maxAbsoluteDifference(to: expectedOutput) ?? .infinity)
    }
}
