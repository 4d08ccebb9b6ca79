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
