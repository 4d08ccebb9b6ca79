import Attention
import AttentionExamples

// The book's sentence, "Your journey starts with one step", as six 3-dimensional embeddings.
let book = try BookChapter3.load()
let x = try Tensor(matrix: book.inputs)  // [6, 3]
print(book.tokens)
print(x)

// §3.3.1: the attention scores of the query "journey" (token 2) are dot products
// with every token's embedding: ω₂ = x⁽²⁾ · xᵀ.
let journey = try Tensor(matrix: [book.inputs[1]])  // [1, 3]
let scores = try Reference.matmul(journey, Reference.transpose(x))  // [1, 6]
print(scores)  // 0.9544, 1.4950, 1.4754, 0.8434, 0.7070, 1.0865
