import Attention

/// One computed tensor next to the number the book prints for it.
public struct DemoComparison: Sendable {
    /// What was computed, e.g. "context".
    public let name: String
    /// Our result.
    public let computed: Tensor<Float>
    /// The book's (PyTorch's) result, where the book prints one.
    public let expected: Tensor<Float>?
    /// Whether `computed` comes from the oracle whatever the backend. `BookDemo`
    /// sets it for none of its results: the layers' attention weights come from
    /// the chosen backend (the fused kernel's float32 weights pass on `.fused`).
    public var fromReference = false

    /// max |computed − expected|, or `nil` where there is nothing to compare.
    public var maxAbsoluteDifference: Float? {
        expected.flatMap { computed.maxAbsoluteDifference(to: $0) }
    }
}

/// One variant of chapter 3 run through the package's layers.
public struct DemoSection: Sendable {
    public let title: String
    public let detail: String
    public let comparisons: [DemoComparison]
}

/// Runs the four attention variants of the book's chapter 3 (plus its dropout
/// demonstration) through this package's layers with the book's exact weights.
public enum BookDemo {
    /// All sections, in the book's order.
    ///
    /// - Parameter backend: `.fused` (the C kernel) or `.reference` (the oracle).
    /// - Throws: what loading the data or running the layers throws (nothing, for
    ///   the bundled data).
    public static func run(backend: AttentionBackend = .fused) throws -> [DemoSection] {
        let book = try BookChapter3.load()
        let inputs = try Tensor(matrix: book.inputs)
        let batch = try Tensor(matrices: [book.inputs, book.inputs])
        var sections: [DemoSection] = []

        // 1. Simple self-attention: softmax(x·xᵀ)·x, no weights.
        var simple = SimpleSelfAttention()
        simple.backend = backend
        sections.append(DemoSection(
            title: "1. Simple self-attention (§3.3)", detail: "weights = softmax(x·xᵀ), context = weights·x; no trainable weights",
            comparisons: [
                DemoComparison(name: "attention weights", computed: try simple.attentionWeights(inputs), expected: try Tensor(matrix: book.simple.weights)),
                DemoComparison(name: "context vectors", computed: try simple(inputs), expected: try Tensor(matrix: book.simple.context)),
            ]))

        // 2. Self-attention with trainable weights, v1 ([in, out], transposed to Linear) and v2.
        let v1 = book.selfAttentionV1
        var selfV1 = try SelfAttention(
            query: Linear(weight: Tensor(matrix: v1.Wq).transposed()),
            key: Linear(weight: Tensor(matrix: v1.Wk).transposed()),
            value: Linear(weight: Tensor(matrix: v1.Wv).transposed()))
        selfV1.backend = backend
        let v2 = book.selfAttentionV2
        let v2Projections = try (Linear(weight: Tensor(matrix: v2.Wq)), Linear(weight: Tensor(matrix: v2.Wk)), Linear(weight: Tensor(matrix: v2.Wv)))
        var selfV2 = try SelfAttention(query: v2Projections.0, key: v2Projections.1, value: v2Projections.2)
        selfV2.backend = backend
        sections.append(DemoSection(
            title: "2. Self-attention with trainable weights (§3.4)",
            detail: "Q, K, V = x·W_q, x·W_k, x·W_v; weights = softmax(Q·Kᵀ/√2); v1 weights [in, out], v2 nn.Linear [out, in]",
            comparisons: [
                DemoComparison(name: "v1 attention weights", computed: try selfV1.attentionWeights(inputs), expected: try Tensor(matrix: v1.weights)),
                DemoComparison(name: "v1 context vectors", computed: try selfV1(inputs), expected: try Tensor(matrix: v1.context)),
                DemoComparison(name: "v2 attention weights", computed: try selfV2.attentionWeights(inputs), expected: try Tensor(matrix: v2.weights)),
                DemoComparison(name: "v2 context vectors", computed: try selfV2(inputs), expected: try Tensor(matrix: v2.context)),
            ]))

        // 3. Causal attention: the v2 weights under a causal mask, dropout, and the batched class.
        var causalV2 = try CausalSelfAttention(query: v2Projections.0, key: v2Projections.1, value: v2Projections.2, contextLength: 6)
        causalV2.backend = backend
        let causalWeights = try causalV2.attentionWeights(inputs)
        let dropout = try Dropout(probability: book.dropoutDemo.p)
        let bookKeep = try Tensor(matrix: book.dropoutDemo.onOnes).map { $0 != 0 }
        let ca = book.causalAttention
        var causal = try CausalSelfAttention(
            query: Linear(weight: Tensor(matrix: ca.Wq)), key: Linear(weight: Tensor(matrix: ca.Wk)),
            value: Linear(weight: Tensor(matrix: ca.Wv)), contextLength: ca.contextLength, dropoutProbability: ca.dropout)
        causal.backend = backend
        sections.append(DemoSection(
            title: "3. Causal attention with dropout (§3.5)",
            detail: "token i sees tokens j ≤ i; dropout p = 0.5 on the weights reuses the cells PyTorch kept (seed 123); CausalAttention on a batch of 2",
            comparisons: [
                DemoComparison(name: "causal attention weights", computed: causalWeights, expected: try Tensor(matrix: v2.causalWeights)),
                DemoComparison(name: "causal context vectors", computed: try causalV2(inputs), expected: try Tensor(matrix: v2.causalContext)),
                DemoComparison(name: "dropout(0.5) of the causal weights", computed: try dropout.apply(causalWeights, keep: bookKeep),
                               expected: try Tensor(matrix: book.dropoutDemo.onCausalWeights)),
                DemoComparison(name: "CausalAttention context (batch of 2)", computed: try causal(batch), expected: try Tensor(matrices: ca.context)),
            ]))

        // 4. Multi-head attention: the wrapper of single heads, then the one-projection class.
        let wrapperHeads = try book.multiHeadWrapper.heads.map { head in
            var layer = try CausalSelfAttention(
                query: Linear(weight: Tensor(matrix: head.Wq)), key: Linear(weight: Tensor(matrix: head.Wk)),
                value: Linear(weight: Tensor(matrix: head.Wv)), contextLength: ca.contextLength)
            layer.backend = backend
            return layer
        }
        let wrapper = try MultiHeadAttentionWrapper(heads: wrapperHeads)
        let mha = book.multiHeadAttention
        var multiHead = try MultiHeadAttention(
            query: Linear(weight: Tensor(matrix: mha.Wq)), key: Linear(weight: Tensor(matrix: mha.Wk)),
            value: Linear(weight: Tensor(matrix: mha.Wv)),
            outputProjection: Linear(weight: Tensor(matrix: mha.outWeight), bias: Tensor(shape: [mha.outBias.count], scalars: mha.outBias)),
            heads: mha.numHeads, causal: .topLeft, contextLength: mha.contextLength)
        multiHead.backend = backend
        let gpt2 = try MultiHeadAttention(dIn: 768, dOut: 768, contextLength: 1024, dropout: 0, numHeads: 12)
        let gpt2Count = Float(gpt2.parameterCount)
        sections.append(DemoSection(
            title: "4. Multi-head attention (§3.6)",
            detail: "wrapper: 2 causal heads side by side; MultiHeadAttention: 2 heads of 1 split from one projection, then out_proj; GPT-2 size parameter count",
            comparisons: [
                DemoComparison(name: "wrapper context", computed: try wrapper(batch), expected: try Tensor(matrices: book.multiHeadWrapper.context)),
                DemoComparison(name: "MultiHeadAttention attention weights per head",
                               computed: try multiHead.attentionWeights(query: inputs, key: inputs, value: inputs), expected: nil),
                DemoComparison(name: "MultiHeadAttention context", computed: try multiHead(batch), expected: try Tensor(matrices: mha.context)),
                DemoComparison(name: "parameters of MultiHeadAttention(768, 768, heads: 12)",
                               computed: try Tensor(shape: [], scalars: [gpt2Count]),
                               expected: try Tensor(shape: [], scalars: [Float(book.gpt2SizeParameterCount)])),
            ]))
        return sections
    }
}
