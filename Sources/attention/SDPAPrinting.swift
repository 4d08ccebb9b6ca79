import Attention

/// `attention sdpa --print` and `--weights`: the result in `Tensor`'s PyTorch-like
/// format, so that a run can be read without Python.
extension SDPACommand {
    /// The most attention weights `--weights` computes: the reference path holds
    /// all `B·H·Lq·Lk` of them (4 MiB at this limit).
    static let weightLimit = 1 << 20

    /// The text `--print` and `--weights` ask for, or `nil` for neither; computed
    /// before the output file is written, so a refused `--weights` leaves no file.
    ///
    /// - Throws: `CommandError` if the weights would exceed `weightLimit`, or what
    ///   the reference path throws.
    func printedTensors(output: Tensor<Float>, file: SafetensorsFile, mask: AttentionMask) throws -> String? {
        var blocks: [String] = []
        if printOutput { blocks.append("out =\n\(output)") }
        if printWeights {
            let queries = try file.floatTensor("q"), keys = try file.floatTensor("k")
            let rows = queries.shape.dropLast().reduce(1, *)
            let keyLength = keys.rank >= 2 ? keys.shape[keys.rank - 2] : 0
            guard rows * keyLength <= Self.weightLimit else {
                throw CommandError("--weights: \(rows * keyLength) attention weights (q \(queries.shape), k \(keys.shape)); "
                    + "printing them is for small shapes, at most \(Self.weightLimit)")
            }
            let reference = try Reference.scaledDotProductAttention(
                queries: queries, keys: keys, values: file.floatTensor("v"), mask: mask, scale: call.scale,
                dropoutProbability: call.dropout, dropoutSeed: call.seed)
            blocks.append("attention weights (reference path, after mask and dropout) =\n\(reference.weights)")
        }
        return blocks.isEmpty ? nil : blocks.joined(separator: "\n")
    }
}
