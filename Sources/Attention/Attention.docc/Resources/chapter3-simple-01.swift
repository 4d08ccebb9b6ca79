import Attention
import AttentionExamples

// The book's sentence, "Your journey starts with one step", as six 3-dimensional embeddings.
let book = try BookChapter3.load()
let x = try Tensor(matrix: book.inputs)  // [6, 3]
print(book.tokens)
print(x)
