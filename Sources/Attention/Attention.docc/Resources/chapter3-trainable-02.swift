import Attention
import AttentionExamples

let book = try BookChapter3.load()
let x = try Tensor(matrix: book.inputs)  // [6, 3]

// §3.4.1: SelfAttention_v1 stores its weights [d_in, d_out] = [3, 2] and computes x · W.
let v1 = book.selfAttentionV1
let queries = try Reference.matmul(x, Tensor(matrix: v1.Wq))  // [6, 2]
let keys = try Reference.matmul(x, Tensor(matrix: v1.Wk))
let values = try Reference.matmul(x, Tensor(matrix: v1.Wv))
print(queries)  // the row of "journey": 0.4306, 1.4551

// Scores compare queries with keys; dividing by √d_k keeps softmax from saturating.
// attentionScores computes scale · Q·Kᵀ (default scale 1/√d_k); softmax gives the weights.
let scores = try Reference.attentionScores(queries: queries, keys: keys)
let weights = try Reference.softmax(scores)
let context = try Reference.matmul(weights, values)
print(weights)
print(context)  // the row of "journey": 0.3061, 0.8210
