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

// Softmax turns the scores into weights that sum to 1; the context vector is the
// weighted sum of all embeddings.
let weights = try Reference.softmax(scores)
let context = try Reference.matmul(weights, x)
print(weights)
print(context)  // 0.4419, 0.6515, 0.5683

// §3.3.2: every query at once, and the same with the package's layer.
let allWeights = try Reference.softmax(try Reference.matmul(x, Reference.transpose(x)))
let layer = SimpleSelfAttention()
let allContext = try layer(x)
print(allContext)

func check(_ name: String, _ computed: Tensor<Float>, _ expected: [[Float]]) throws {
    let difference = computed.maxAbsoluteDifference(to: try Tensor(matrix: expected)) ?? .infinity
    print("\(name): max |Δ| vs the book = \(difference)")
    precondition(difference < 1e-4, "\(name) differs from the book")
}
try check("weights", allWeights, book.simple.weights)
try check("context", allContext, book.simple.context)
