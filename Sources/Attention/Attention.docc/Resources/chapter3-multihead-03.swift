import Attention
import AttentionExamples
import Foundation

let book = try BookChapter3.load()
let batch = try Tensor(matrices: [book.inputs, book.inputs])  // [2, 6, 3], as in the book

// §3.6.1: two causal heads with their own weights, context vectors side by side.
let heads = try book.multiHeadWrapper.heads.map { head in
    try CausalSelfAttention(
        query: Linear(weight: Tensor(matrix: head.Wq)), key: Linear(weight: Tensor(matrix: head.Wk)),
        value: Linear(weight: Tensor(matrix: head.Wv)), contextLength: 6)
}
let wrapper = try MultiHeadAttentionWrapper(heads: heads)
print(try wrapper(batch))  // [2, 6, 4]

// §3.6.2: one projection per Q, K, V, split into 2 heads of 1, then out_proj mixes them.
// With explicit weights the layer is causal only if you say so, as the book's class is.
let mha = book.multiHeadAttention
let layer = try MultiHeadAttention(
    query: Linear(weight: Tensor(matrix: mha.Wq)), key: Linear(weight: Tensor(matrix: mha.Wk)),
    value: Linear(weight: Tensor(matrix: mha.Wv)),
    outputProjection: Linear(weight: Tensor(matrix: mha.outWeight), bias: Tensor(shape: [2], scalars: mha.outBias)),
    heads: mha.numHeads, causal: .topLeft, contextLength: mha.contextLength)
let context = try layer(batch)
print(context)  // [2, 6, 2]
let x = try Tensor(matrix: book.inputs)
print(try layer.attentionWeights(query: x, key: x, value: x))  // [2 heads, 6, 6]

// The book's signature is causal, like its class; GPT-2's size has 2,360,064 parameters.
let gpt2 = try MultiHeadAttention(dIn: 768, dOut: 768, contextLength: 1024, dropout: 0.0, numHeads: 12)
print(gpt2.parameterCount, gpt2.causal == .topLeft)

// A real model's 12 heads, drawn as SVG heatmaps (open them in a browser).
let miniLM = try MiniLMDemo.headWeights()
let directory = FileManager.default.temporaryDirectory.appendingPathComponent("minilm-heads")
try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
let tokens = miniLM.tokens.count
for head in 0..<miniLM.weights.shape[1] {
    let start = head * tokens * tokens
    let weights = try Tensor(shape: [tokens, tokens], scalars: Array(miniLM.weights.scalars[start..<(start + tokens * tokens)]))
    let map = try LabelledMatrix(title: "MiniLM layer 0, head \(head)", values: weights,
                                 rowLabels: miniLM.tokens, columnLabels: miniLM.tokens, isAttentionMap: true)
    try Heatmap.svg(map).write(to: directory.appendingPathComponent("head-\(head).svg"), atomically: true, encoding: .utf8)
}
print("wrote \(miniLM.weights.shape[1]) heatmaps to \(directory.path)")

func check(_ name: String, _ computed: Tensor<Float>, _ expected: [[[Float]]]) throws {
    let difference = computed.maxAbsoluteDifference(to: try Tensor(matrices: expected)) ?? .infinity
    print("\(name): max |Δ| vs the book = \(difference)")
    precondition(difference < 1e-4, "\(name) differs from the book")
}
try check("wrapper context", try wrapper(batch), book.multiHeadWrapper.context)
try check("MultiHeadAttention context", context, mha.context)
precondition(gpt2.parameterCount == book.gpt2SizeParameterCount, "GPT-2 size parameter count")
precondition(miniLM.outputDifference < 1e-4, "MiniLM output differs from PyTorch")
