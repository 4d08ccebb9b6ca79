import Attention
import Foundation

/// One step of the chapter: what it shows in a sentence or two, then text and
/// token-labelled matrices in the order they are read.
public struct ChapterStep: Sendable {
    /// One piece of a step.
    public enum Item: Sendable {
        /// A line of text (a formula spelled out, a row sum, a comparison).
        case text(String)
        /// A labelled matrix.
        case matrix(LabelledMatrix)
    }

    /// The section of the book and what the step does, e.g. "§3.5.1 The causal mask, way 1".
    public let title: String
    /// What the step shows, in one or two sentences.
    public let explanation: String
    /// The step's content, in reading order.
    public let items: [Item]

    /// The matrices of the step, in order.
    public var matrices: [LabelledMatrix] {
        items.compactMap { if case let .matrix(matrix) = $0 { matrix } else { nil } }
    }
}

/// Chapter 3 of Raschka's "Build a Large Language Model (From Scratch)" step by
/// step, in the book's order, on its sentence "Your journey starts with one step"
/// and with its exact weights: every matrix labelled with the tokens, computed by
/// hand with `Reference`'s exact helpers and by the package's layers, and
/// checked against the book's numbers (`book-ch03.json`) where it prints them.
public enum BookSteps {
    /// The steps, from the attention scores of one query to the 12 heads of a
    /// real model (`attention demo --steps` prints them).
    ///
    /// - Parameter backend: the backend of the layers compared with the hand computation.
    /// - Returns: the steps in the book's order.
    /// - Throws: what loading the bundled data or running the layers throws
    ///   (nothing, for the data as shipped).
    public static func run(backend: AttentionBackend = .fused) throws -> [ChapterStep] {
        let book = try BookChapter3.load()
        return try Builder(book: book, backend: backend).steps()
    }
}

/// Builds the steps; one method per part of the chapter.
private struct Builder {
    let book: BookChapter3
    let backend: AttentionBackend
    let tokens: [String]
    let x: Tensor<Float>

    init(book: BookChapter3, backend: AttentionBackend) throws {
        self.book = book
        self.backend = backend
        tokens = book.tokens
        x = try Tensor(matrix: book.inputs)
    }

    func steps() throws -> [ChapterStep] {
        try simpleAttention() + trainableWeights() + causalAttention() + multiHead() + [try miniLM()]
    }

    // MARK: helpers

    /// Row `i` of a matrix as a `[1, columns]` tensor.
    func row(_ matrix: Tensor<Float>, _ i: Int) throws -> Tensor<Float> {
        let columns = matrix.shape[1]
        return try Tensor(shape: [1, columns], scalars: Array(matrix.scalars[(i * columns)..<((i + 1) * columns)]))
    }

    func map(_ title: String, _ values: Tensor<Float>, expected: Tensor<Float>? = nil) throws -> LabelledMatrix {
        try LabelledMatrix(title: title, values: values, rowLabels: tokens, columnLabels: tokens, expected: expected, isAttentionMap: true)
    }

    func table(_ title: String, _ values: Tensor<Float>, rows: [String]? = nil, columns: [String], expected: Tensor<Float>? = nil) throws -> LabelledMatrix {
        try LabelledMatrix(title: title, values: values, rowLabels: rows ?? tokens, columnLabels: columns, expected: expected)
    }

    func labels(_ prefix: String, _ count: Int) -> [String] { (0..<count).map { "\(prefix)\($0)" } }

    func f(_ value: Float) -> String { String(format: "%.4f", value) }

    func list(_ values: [Float]) -> String { "[" + values.map(f).joined(separator: ", ") + "]" }

    func difference(_ a: Tensor<Float>, _ b: Tensor<Float>) -> String {
        a.maxAbsoluteDifference(to: b).map { String(format: "%.1e", $0) } ?? "shapes differ"
    }

    func sums(_ matrix: LabelledMatrix) -> ChapterStep.Item {
        .text("row sums: " + list(matrix.rowSums))
    }

    // MARK: §3.3 attention without trainable weights

    func simpleAttention() throws -> [ChapterStep] {
        let journey = try row(x, 1)
        let scores2 = try Reference.matmul(journey, Reference.transpose(x))
        let spelled = (0..<3).map { "\(f(book.inputs[1][$0]))·\(f(book.inputs[0][$0]))" }.joined(separator: " + ")
        let step1 = ChapterStep(
            title: "§3.3.1 Attention scores for one query, \"journey\"",
            explanation: "Each score ω₂ⱼ is the dot product of the query x⁽²⁾ (\"journey\") with the embedding of token j: "
                + "the more two vectors point the same way, the larger the score.",
            items: [
                .matrix(try table("token embeddings x", x, columns: labels("x", 3), expected: try Tensor(matrix: book.inputs))),
                .text("ω₂₁ = x⁽²⁾·x⁽¹⁾ = \(spelled) = \(f(scores2.scalars[0]))"),
                .matrix(try table("scores ω₂ = x⁽²⁾·xᵀ", scores2, rows: ["journey"], columns: tokens,
                                  expected: try Tensor(matrix: [book.simple.scores[1]]))),
            ])

        let total = scores2.scalars.reduce(0, +)
        let naive = scores2.map { $0 / total }
        let softmax2 = try Reference.softmax(scores2)
        let naiveMatrix = try table("naive normalisation ω₂ / Σω₂", naive, rows: ["journey"], columns: tokens)
        let softmaxMatrix = try table("softmax(ω₂) = exp(ω₂) / Σ exp(ω₂)", softmax2, rows: ["journey"], columns: tokens,
                                      expected: try Tensor(matrix: [book.simple.weights[1]]))
        let step2 = ChapterStep(
            title: "§3.3.1 Normalising the scores: dividing by the sum, or softmax",
            explanation: "Attention weights must be non-negative and sum to 1. Dividing by the sum does that only for "
                + "positive scores; softmax does it for any scores and widens the gaps between them, so it is the one used.",
            items: [.matrix(naiveMatrix), sums(naiveMatrix), .matrix(softmaxMatrix), sums(softmaxMatrix)])

        let context2 = try Reference.matmul(softmax2, x)
        let step3 = ChapterStep(
            title: "§3.3.1 The context vector z⁽²⁾",
            explanation: "The context vector of \"journey\" is the sum of all embeddings weighted by its attention weights: "
                + "its own embedding enriched with what it attends to.",
            items: [.matrix(try table("z⁽²⁾ = Σⱼ α₂ⱼ x⁽ʲ⁾", context2, rows: ["journey"], columns: labels("z", 3),
                                      expected: try Tensor(matrix: [book.simple.context[1]])))])

        let scores = try Reference.matmul(x, Reference.transpose(x))
        let weights = try Reference.softmax(scores)
        let context = try Reference.matmul(weights, x)
        let weightsMatrix = try map("attention weights softmax(x·xᵀ) (§3.3.2)", weights, expected: try Tensor(matrix: book.simple.weights))
        let layer = SimpleSelfAttention(backend: backend)
        let step4 = ChapterStep(
            title: "§3.3.2 Every query at once",
            explanation: "For all tokens together it is two matrix products and a softmax per row: scores = x·xᵀ, "
                + "weights = softmax(scores), context = weights·x. Row i holds the weights of query i over every key.",
            items: [
                .matrix(try map("attention scores x·xᵀ", scores, expected: try Tensor(matrix: book.simple.scores))),
                .matrix(weightsMatrix), sums(weightsMatrix),
                .matrix(try table("context vectors weights·x", context, columns: labels("z", 3), expected: try Tensor(matrix: book.simple.context))),
                .text("SimpleSelfAttention (\(backend)) gives the same: max |Δ| weights \(difference(try layer.attentionWeights(x), weights)), "
                    + "context \(difference(try layer(x), context))"),
            ])
        return [step1, step2, step3, step4]
    }

    // MARK: §3.4 trainable weights

    func trainableWeights() throws -> [ChapterStep] {
        let v1 = book.selfAttentionV1
        let (wq, wk, wv) = (try Tensor(matrix: v1.Wq), try Tensor(matrix: v1.Wk), try Tensor(matrix: v1.Wv))
        let (q, k, v) = (try Reference.matmul(x, wq), try Reference.matmul(x, wk), try Reference.matmul(x, wv))
        let step1 = ChapterStep(
            title: "§3.4.1 Queries, keys and values (d_out = 2)",
            explanation: "Three trainable matrices map each 3-dimensional embedding to a 2-dimensional query (what the token "
                + "looks for), key (what it is matched on) and value (what it passes on). SelfAttention_v1 stores them [in, out] (y = x·W).",
            items: [
                .matrix(try table("W_q, stored [in, out] (torch.manual_seed(123))", wq, rows: labels("x", 3), columns: labels("q", 2))),
                .matrix(try table("queries Q = x·W_q", q, columns: labels("q", 2))),
                .matrix(try table("keys K = x·W_k", k, columns: labels("k", 2))),
                .matrix(try table("values V = x·W_v", v, columns: labels("v", 2))),
                .text("the query of \"journey\": q⁽²⁾ = x⁽²⁾·W_q = \(list(Array(q.scalars[2..<4])))"),
            ])

        let scores2 = try Reference.matmul(try row(q, 1), Reference.transpose(k))
        let scale = 1 / Float(2).squareRoot()
        let weights2 = try Reference.softmax(scores2.map { $0 * scale })
        let step2 = ChapterStep(
            title: "§3.4.1 Scaled scores for \"journey\"",
            explanation: "Scores now compare the query of \"journey\" with every key; they are divided by √d_k = √2 before the "
                + "softmax, and the context vector sums the values, not the embeddings.",
            items: [
                .matrix(try table("scores ω₂ = q⁽²⁾·Kᵀ", scores2, rows: ["journey"], columns: tokens)),
                .matrix(try table("weights softmax(ω₂ / √2)", weights2, rows: ["journey"], columns: tokens,
                                  expected: try Tensor(matrix: [v1.weights[1]]))),
                .matrix(try table("context z⁽²⁾ = weights·V", try Reference.matmul(weights2, v), rows: ["journey"], columns: labels("z", 2),
                                  expected: try Tensor(matrix: [v1.context[1]]))),
            ])

        let factors: [(String, Float)] = [("×0.25", 0.25), ("×1/√2 (book)", scale), ("×2", 2), ("×8", 8), ("×32", 32)]
        var sweep: [Float] = []
        for (_, factor) in factors { sweep += try Reference.softmax(scores2.map { $0 * factor }).scalars }
        let sweepMatrix = try table("softmax(factor · ω₂)", try Tensor(shape: [factors.count, 6], scalars: sweep),
                                    rows: factors.map(\.0), columns: tokens)
        let largest = (0..<factors.count).map { row in (0..<6).map { sweepMatrix[row, $0] }.max() ?? 0 }
        let step3 = ChapterStep(
            title: "§3.4.1 Why divide by √d_k: softmax saturates",
            explanation: "A dot product of d_k independent unit-variance terms has variance d_k, so scores grow with the "
                + "dimension; large scores push softmax towards one-hot, leaving almost no gradient for the other tokens. "
                + "Below, the same scores multiplied by growing factors: the largest weight heads for 1.",
            items: [.matrix(sweepMatrix), .text("largest weight per row: " + list(largest))])

        let weights = try Reference.softmax(try Reference.matmul(q, Reference.transpose(k)).map { $0 * scale })
        let context = try Reference.matmul(weights, v)
        let v1Layer = try SelfAttention(
            query: Linear(weight: wq.transposed()), key: Linear(weight: wk.transposed()), value: Linear(weight: wv.transposed()))
        let v2 = book.selfAttentionV2
        var v2Layer = try SelfAttention(
            query: Linear(weight: Tensor(matrix: v2.Wq)), key: Linear(weight: Tensor(matrix: v2.Wk)), value: Linear(weight: Tensor(matrix: v2.Wv)))
        v2Layer.backend = backend
        let weightsMatrix = try map("SelfAttention_v1 weights softmax(Q·Kᵀ / √2)", weights, expected: try Tensor(matrix: v1.weights))
        let step4 = ChapterStep(
            title: "§3.4.2 The whole weight matrix; SelfAttention_v1 and _v2",
            explanation: "All queries at once: weights = softmax(Q·Kᵀ/√d_k), context = weights·V. SelfAttention_v2 is the same "
                + "with nn.Linear layers, whose weights are stored [out, in] (y = x·Wᵀ) and drawn from seed 789, so its numbers differ.",
            items: [
                .matrix(weightsMatrix), sums(weightsMatrix),
                .matrix(try table("SelfAttention_v1 context weights·V", context, columns: labels("z", 2), expected: try Tensor(matrix: v1.context))),
                .text("SelfAttention with the v1 weights transposed to [out, in] gives the same: max |Δ| context "
                    + difference(try v1Layer(x), context)),
                .matrix(try map("SelfAttention_v2 weights (nn.Linear, seed 789)", try v2Layer.attentionWeights(x), expected: try Tensor(matrix: v2.weights))),
                .matrix(try table("SelfAttention_v2 context", try v2Layer(x), columns: labels("z", 2), expected: try Tensor(matrix: v2.context))),
            ])
        return [step1, step2, step3, step4]
    }

    // MARK: §3.5 causal attention and dropout

    func causalAttention() throws -> [ChapterStep] {
        let v2 = book.selfAttentionV2
        let (wq, wk, wv) = (try Tensor(matrix: v2.Wq), try Tensor(matrix: v2.Wk), try Tensor(matrix: v2.Wv))
        let q = try Reference.matmul(x, Reference.transpose(wq))
        let k = try Reference.matmul(x, Reference.transpose(wk))
        let scale = 1 / Float(2).squareRoot()
        let masked = try Reference.attentionScores(queries: q, keys: k, mask: .causal(.topLeft), scale: scale)
        let wayOne = try Reference.softmax(masked)
        let expectedCausal = try Tensor(matrix: v2.causalWeights)
        let wayOneMatrix = try map("causal weights softmax(masked scores)", wayOne, expected: expectedCausal)
        var causalLayer = try CausalSelfAttention(
            query: Linear(weight: wq), key: Linear(weight: wk), value: Linear(weight: wv), contextLength: 6)
        causalLayer.backend = backend
        let step1 = ChapterStep(
            title: "§3.5.1 The causal mask, way 1: −∞ before the softmax",
            explanation: "A language model must not see the tokens after the one it predicts. Setting the scores above the "
                + "diagonal to −∞ gives those cells weight exactly 0, and softmax normalises over the visible tokens only.",
            items: [
                .matrix(try map("masked scores Q·Kᵀ/√2 (SelfAttention_v2 weights)", masked)),
                .matrix(wayOneMatrix), sums(wayOneMatrix),
                .matrix(try table("causal context vectors", try causalLayer(x), columns: labels("z", 2), expected: try Tensor(matrix: v2.causalContext))),
            ])

        let unmasked = try Reference.softmax(try Reference.matmul(q, Reference.transpose(k)).map { $0 * scale })
        var zeroed = unmasked
        for i in 0..<6 { for j in 0..<6 where j > i { zeroed[i, j] = 0 } }
        let zeroedMatrix = try map("softmax weights with the cells above the diagonal zeroed", zeroed)
        let rowSums = zeroedMatrix.rowSums
        var renormalised = zeroed
        for i in 0..<6 { for j in 0..<6 { renormalised[i, j] = zeroed[i, j] / rowSums[i] } }
        let step2 = ChapterStep(
            title: "§3.5.1 The causal mask, way 2: zeros after the softmax, then renormalise",
            explanation: "Zeroing the weights above the diagonal after the softmax leaves rows that no longer sum to 1; "
                + "dividing each row by its sum gives the same weights as way 1, because the softmax's common factor cancels. "
                + "Way 1 saves a step, and it is what the kernel does.",
            items: [
                .matrix(zeroedMatrix), sums(zeroedMatrix),
                .matrix(try map("renormalised: each row divided by its sum", renormalised, expected: expectedCausal)),
                .text("max |way 2 − way 1| = \(difference(renormalised, wayOne))"),
            ])

        let demo = book.dropoutDemo
        let dropout = try Dropout(probability: demo.p)
        let keep = try Tensor(matrix: demo.onOnes).map { $0 != 0 }
        let ones = try Tensor<Float>(shape: [6, 6], repeating: 1)
        let onOnes = try dropout.apply(ones, keep: keep)
        let keptCount = keep.scalars.filter { $0 }.count
        let ourCells = try dropout(ones, training: true, seed: 123)
        let step3 = ChapterStep(
            title: "§3.5.2 Dropout on a matrix of ones",
            explanation: "In training, dropout zeroes each cell with probability p = 0.5 and multiplies the survivors by "
                + "1/(1 − p) = 2, so the expected value of every cell is unchanged.",
            items: [
                .matrix(try map("dropout(0.5) of ones(6, 6), the cells torch.manual_seed(123) kept", onOnes, expected: try Tensor(matrix: demo.onOnes))),
                .text("kept \(keptCount) of 36 cells; sum \(f(onOnes.scalars.reduce(0, +))) (expected value 36)"),
                .text("This package draws its own cells (Philox; seed 123 is not torch.manual_seed(123)): Dropout(probability: 0.5) "
                    + "with seed 123 keeps \(ourCells.scalars.filter { $0 != 0 }.count) of 36, other ones. To match PyTorch, "
                    + "Dropout.apply(_:keep:) takes the cells PyTorch kept."),
            ])

        let droppedWeights = try dropout.apply(wayOne, keep: keep)
        let droppedMatrix = try map("dropout(0.5) of the causal weights", droppedWeights, expected: try Tensor(matrix: demo.onCausalWeights))
        let step4 = ChapterStep(
            title: "§3.5.2 Dropout on the attention weights",
            explanation: "On the weights, dropout makes each token ignore a random subset of the others in a training step. "
                + "The rows no longer sum to 1, only on average; in inference dropout is off.",
            items: [.matrix(droppedMatrix), sums(droppedMatrix)])

        let ca = book.causalAttention
        var batchLayer = try CausalSelfAttention(
            query: Linear(weight: Tensor(matrix: ca.Wq)), key: Linear(weight: Tensor(matrix: ca.Wk)),
            value: Linear(weight: Tensor(matrix: ca.Wv)), contextLength: ca.contextLength, dropoutProbability: ca.dropout)
        batchLayer.backend = backend
        let batch = try Tensor(matrices: [book.inputs, book.inputs])
        let batchContext = try batchLayer(batch)
        let first = try Tensor(shape: [6, 2], scalars: Array(batchContext.scalars[0..<12]))
        let second = try Tensor(shape: [6, 2], scalars: Array(batchContext.scalars[12..<24]))
        let step5 = ChapterStep(
            title: "§3.5.3 CausalAttention on a batch",
            explanation: "The CausalAttention class bundles the projections, the mask and dropout, and takes a batch "
                + "[batch, tokens, d_in]: two copies of the sentence give context [2, 6, 2], the same matrix twice.",
            items: [
                .matrix(try table("context, batch element 0 (CausalAttention(3, 2, 6, 0.0))", first, columns: labels("z", 2),
                                  expected: try Tensor(matrix: ca.context[0]))),
                .text("batch element 1 equals element 0: max |Δ| = \(difference(second, first))"),
            ])
        return [step1, step2, step3, step4, step5]
    }

    // MARK: §3.6 multi-head attention

    func multiHead() throws -> [ChapterStep] {
        let wrapper = book.multiHeadWrapper
        var items: [ChapterStep.Item] = []
        var contexts: [Tensor<Float>] = []
        for (index, head) in wrapper.heads.enumerated() {
            var layer = try CausalSelfAttention(
                query: Linear(weight: Tensor(matrix: head.Wq)), key: Linear(weight: Tensor(matrix: head.Wk)),
                value: Linear(weight: Tensor(matrix: head.Wv)), contextLength: 6)
            layer.backend = backend
            items.append(.matrix(try map("wrapper head \(index) causal weights", try layer.attentionWeights(x))))
            contexts.append(try layer(x))
        }
        var sideBySide: [Float] = []
        for i in 0..<6 { for context in contexts { sideBySide += context.scalars[(i * 2)..<(i * 2 + 2)] } }
        items.append(.matrix(try table(
            "context: head 0's two columns, then head 1's", try Tensor(shape: [6, 4], scalars: sideBySide),
            columns: ["h0·z0", "h0·z1", "h1·z0", "h1·z1"], expected: try Tensor(matrix: wrapper.context[0]))))
        let step1 = ChapterStep(
            title: "§3.6.1 Two heads side by side (MultiHeadAttentionWrapper)",
            explanation: "Multi-head attention runs several causal attentions, each with its own weights, and puts their "
                + "context vectors side by side: 2 heads with d_out = 2 give 4 columns.",
            items: items)

        let mha = book.multiHeadAttention
        let (wq, wk, wv) = (try Tensor(matrix: mha.Wq), try Tensor(matrix: mha.Wk), try Tensor(matrix: mha.Wv))
        let out = try Linear(weight: Tensor(matrix: mha.outWeight), bias: Tensor(shape: [mha.outBias.count], scalars: mha.outBias))
        var layer = try MultiHeadAttention(
            query: Linear(weight: wq), key: Linear(weight: wk), value: Linear(weight: wv), outputProjection: out,
            heads: mha.numHeads, causal: .topLeft, contextLength: mha.contextLength)
        layer.backend = backend
        var headsOnly = try MultiHeadAttention(
            query: Linear(weight: wq), key: Linear(weight: wk), value: Linear(weight: wv), outputProjection: nil,
            heads: mha.numHeads, causal: .topLeft, contextLength: mha.contextLength)
        headsOnly.backend = backend
        let headWeights = try layer.attentionWeights(query: x, key: x, value: x)
        var mhaItems: [ChapterStep.Item] = [
            .matrix(try table("queries Q = x·W_qᵀ: column h is head h's query (head_dim = 1)",
                              try Reference.matmul(x, Reference.transpose(wq)), columns: ["head 0", "head 1"])),
            .text("head h reads columns h·head_dim ..< (h+1)·head_dim of Q, K and V: one matrix product serves every head."),
        ]
        for head in 0..<mha.numHeads {
            let weights = try Tensor(shape: [6, 6], scalars: Array(headWeights.scalars[(head * 36)..<((head + 1) * 36)]))
            mhaItems.append(.matrix(try map("MultiHeadAttention head \(head) causal weights", weights)))
        }
        let merged = try headsOnly(x)
        mhaItems += [
            .matrix(try table("heads merged, before out_proj", merged, columns: ["head 0", "head 1"])),
            .matrix(try table("out_proj.weight", out.weight, rows: ["out 0", "out 1"], columns: ["head 0", "head 1"])),
            .text("out_proj.bias = \(list(mha.outBias))"),
            .matrix(try table("context = merged·W_oᵀ + b (batch element 0)", try layer(x), columns: ["out 0", "out 1"],
                              expected: try Tensor(matrix: mha.context[0]))),
        ]
        let step2 = ChapterStep(
            title: "§3.6.2 One projection split into heads (MultiHeadAttention)",
            explanation: "MultiHeadAttention computes Q, K and V for all heads with one product each and splits their columns "
                + "into heads; after attention the heads are put back side by side, and out_proj, a Linear layer, mixes them.",
            items: mhaItems)
        return [step1, step2]
    }

    // MARK: a real model

    /// Where a head's attention mostly goes, in words: the largest of the mean
    /// weight on the previous token, the next token, the token itself, the first
    /// token ([CLS]) and the last ([SEP]).
    static func pattern(of matrix: LabelledMatrix) -> String {
        let n = matrix.rows
        func mean(_ column: (Int) -> Int?) -> Float {
            var total: Float = 0, count: Float = 0
            for i in 0..<n { if let j = column(i), j >= 0, j < n { total += matrix[i, j]; count += 1 } }
            return count > 0 ? total / count : 0
        }
        let candidates: [(String, Float)] = [
            ("the previous token", mean { $0 > 0 ? $0 - 1 : nil }), ("the next token", mean { $0 < n - 1 ? $0 + 1 : nil }),
            ("itself", mean { $0 }), ("the first token, \(matrix.columnLabels.first ?? "")", mean { _ in 0 }),
            ("the last token, \(matrix.columnLabels.last ?? "")", mean { _ in n - 1 }),
        ]
        let best = candidates.max { $0.1 < $1.1 }!
        let strength = best.1 >= 0.5 ? "mostly on" : best.1 >= 0.2 ? "a large share on" : "spread out; at most"
        return "\(strength) \(best.0) (mean weight \(String(format: "%.2f", best.1)) of 1, uniform would be \(String(format: "%.2f", 1 / Float(n))))"
    }

    func miniLM() throws -> ChapterStep {
        let heads = try MiniLMDemo.headWeights(backend: backend)
        var items: [ChapterStep.Item] = [
            .text("\"\(heads.sentence)\": \(heads.tokens.count) tokens, hidden 384, \(heads.weights.shape[1]) heads of 32, "
                + "max |Δ| of the attention output vs PyTorch \(String(format: "%.1e", heads.outputDifference))"),
        ]
        let length = heads.tokens.count
        for head in 0..<heads.weights.shape[1] {
            let start = head * length * length
            let weights = try Tensor(shape: [length, length], scalars: Array(heads.weights.scalars[start..<(start + length * length)]))
            let matrix = try LabelledMatrix(
                title: "MiniLM layer 0, head \(head)", values: weights, rowLabels: heads.tokens, columnLabels: heads.tokens,
                isAttentionMap: true)
            items.append(.text("head \(head): " + Self.pattern(of: matrix)))
            items.append(.matrix(matrix))
        }
        return ChapterStep(
            title: "A real model: all-MiniLM-L6-v2, layer 0, 12 heads",
            explanation: "The same MultiHeadAttention runs layer 0 of a sentence encoder (not causal: an encoder reads the whole "
                + "sentence). Each head has learned its own pattern; the line above each map says where most of its attention goes.",
            items: items)
    }
}
