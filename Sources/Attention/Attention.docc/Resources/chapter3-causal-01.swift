import Attention
import AttentionExamples

let book = try BookChapter3.load()
let x = try Tensor(matrix: book.inputs)  // [6, 3]

// §3.5.1: SelfAttention_v2's nn.Linear weights, stored [d_out, d_in]: y = x · Wᵀ.
let v2 = book.selfAttentionV2
let query = try Linear(weight: Tensor(matrix: v2.Wq))
let key = try Linear(weight: Tensor(matrix: v2.Wk))
let value = try Linear(weight: Tensor(matrix: v2.Wv))

// Way 1: scores above the diagonal are −∞ before the softmax, so their weights are exactly 0.
let masked = try Reference.attentionScores(queries: query(x), keys: key(x), mask: .causal(.topLeft))
print(masked)  // -inf above the diagonal
let causalWeights = try Reference.softmax(masked)
print(causalWeights)
