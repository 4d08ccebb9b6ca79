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

// The layer: CausalSelfAttention is the book's CausalAttention, on the fused kernel.
let layer = try CausalSelfAttention(query: query, key: key, value: value, contextLength: 6)
let context = try layer(x)
print(context)

// §3.5.2: dropout with p = 0.5 keeps about half the cells and doubles them. To get the
// book's numbers, apply the cells PyTorch kept (this package's generator is Philox:
// seed 123 is not torch.manual_seed(123)).
let dropout = try Dropout(probability: 0.5)
let keptByPyTorch = try Tensor(matrix: book.dropoutDemo.onOnes).map { $0 != 0 }
let dropped = try dropout.apply(causalWeights, keep: keptByPyTorch)
print(dropped)
print(try dropout(causalWeights, training: true, seed: 123))  // this package's own cells

func check(_ name: String, _ computed: Tensor<Float>, _ expected: [[Float]]) throws {
    let difference = computed.maxAbsoluteDifference(to: try Tensor(matrix: expected)) ?? .infinity
    print("\(name): max |Δ| vs the book = \(difference)")
    precondition(difference < 1e-4, "\(name) differs from the book")
}
try check("causal weights", causalWeights, v2.causalWeights)
try check("causal context", context, v2.causalContext)
try check("dropout", dropped, book.dropoutDemo.onCausalWeights)
