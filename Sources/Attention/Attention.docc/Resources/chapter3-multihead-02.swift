import Attention
import AttentionExamples

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
