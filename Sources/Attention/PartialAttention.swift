import CAttention
import Foundation

/// Attention over a slice of the keys, in a form that merges with the other
/// slices into attention over all of them (context parallelism: a cache split
/// across processes or machines; Dao et al. 2023, "Flash-Decoding").
///
/// For each query row, `output` is attention restricted to the slice's keys and
/// `logsumexp` is `log Σ_j exp(scale · q·k_j + mask_j)` over them. Two slices
/// merge through `softmax` over their union:
/// `lse = log(e^lse₁ + e^lse₂)`, `output = e^(lse₁ − lse) · output₁ + e^(lse₂ − lse) · output₂`.
///
/// A partial computed by ``scaledDotProductAttentionPartial(queries:keys:values:keyRange:mask:scale:dropoutProbability:dropoutSeed:threads:)``
/// also keeps the kernel's unnormalised state (row max, row sum, accumulator),
/// so that ``mergeAttentionPartials(_:)`` replays the kernel's own merge of its
/// 512-key chunks: see there for when the merge is bitwise the unsliced call.
public struct AttentionPartial: Sendable {
    /// `[batch, heads, queryLength, valueDim]` (the rank of the queries): attention
    /// over the slice's keys; a row that sees none of them is 0.
    public var output: Tensor<Float>
    /// `[batch, heads, queryLength]`: natural-log sum of the exponentiated logits
    /// over the slice's visible keys, before dropout; −∞ for a row that sees none.
    public var logsumexp: Tensor<Float>

    /// The kernel's state of the slice, per row in [batch, head, row] order:
    /// M, L and O = Σ e^(s − M)·v (dropout applied, not divided by L).
    struct KernelState: Sendable {
        var rowMax: [Float]
        var rowSum: [Float]
        var accumulator: [Float]
        var dropoutProbability: Float
    }

    var state: KernelState?

    /// A partial from its output and logsumexp (for example received from another
    /// process); merged through the logsumexp formula, to rounding.
    ///
    /// - Parameters:
    ///   - output: `[..., queryLength, valueDim]`, rank 2 to 4.
    ///   - logsumexp: the shape of `output` without its last dimension.
    /// - Throws: `AttentionError.invalidShape` naming `output` or `logsumexp`.
    public init(output: Tensor<Float>, logsumexp: Tensor<Float>) throws {
        guard (2...4).contains(output.rank) else {
            throw AttentionError.invalidShape(
                argument: "output", expected: "rank 2 to 4, [batch, heads, queryLength, valueDim]", actual: output.shape)
        }
        guard logsumexp.shape == Array(output.shape.dropLast()) else {
            throw AttentionError.invalidShape(
                argument: "logsumexp", expected: "\(Array(output.shape.dropLast())) (output without valueDim)",
                actual: logsumexp.shape)
        }
        self.output = output
        self.logsumexp = logsumexp
        self.state = nil
    }

    init(output: Tensor<Float>, logsumexp: Tensor<Float>, state: KernelState) {
        self.output = output
        self.logsumexp = logsumexp
        self.state = state
    }
}

/// Scaled dot-product attention over the keys in `keyRange` only, as a
/// partial result to merge with ``mergeAttentionPartials(_:)``.
///
/// Masks, the causal alignment and dropout's cells refer to the whole `keys`
/// (a key's column is its index in `keys`), so the partials of disjoint ranges
/// that cover `0..<keyLength` merge into ``scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:backend:threads:)``.
/// Runs on the fused kernel.
///
/// - Parameters:
///   - queries: `[batch, heads, queryLength, headDim]` (rank 2 to 4, as in
///     ``scaledDotProductAttention(queries:keys:values:mask:scale:dropoutProbability:dropoutSeed:backend:threads:)``).
///   - keys: `[batch, kvHeads, keyLength, headDim]`.
///   - values: `[batch, kvHeads, keyLength, valueDim]`.
///   - keyRange: the slice of `0..<keyLength` to attend to; `nil` = every key.
///   - mask: as for the full call, over all `keyLength` keys.
///   - scale: multiplies the logits; default `1/√headDim`.
///   - dropoutProbability: in [0, 1); the slice's weights are dropped as the
///     full call's would be.
///   - dropoutSeed: Philox key.
///   - threads: worker threads; `nil` = the driver's default.
/// - Returns: the slice's output `[..., heads, queryLength, valueDim]` and logsumexp.
/// - Throws: `AttentionError.invalidShape` as the full call does;
///   `AttentionError.invalidValue` naming `keyRange` for a range outside
///   `0...keyLength`, or for a bad scale, dropout probability or thread count.
public func scaledDotProductAttentionPartial(
    queries: Tensor<Float>, keys: Tensor<Float>, values: Tensor<Float>, keyRange: Range<Int>? = nil,
    mask: AttentionMask = .none, scale: Float? = nil,
    dropoutProbability: Float = 0, dropoutSeed: UInt64 = 0, threads: Int? = nil
) throws -> AttentionPartial {
    let problem = try AttentionProblem(
        queries: queries, keys: keys, values: values, mask: mask, scale: scale,
        dropoutProbability: dropoutProbability, dropoutSeed: dropoutSeed)
    let range = keyRange ?? 0..<problem.keyLength
    guard range.lowerBound >= 0, range.upperBound <= problem.keyLength else {
        throw AttentionError.invalidValue(
            argument: "keyRange", expected: "a range within 0..<\(problem.keyLength) (keyLength)",
            actual: "\(range.lowerBound)..<\(range.upperBound)")
    }
    let state = try problem.runFusedPartial(keyRange: range, threads: threads)
    let rowShape = Array(queries.shape.dropLast())
    let finished = try finish(state, rows: state.rowMax.count, valueDim: problem.valueDim)
    return AttentionPartial(
        output: Tensor(validShape: rowShape + [problem.valueDim], scalars: finished.output),
        logsumexp: Tensor(validShape: rowShape, scalars: finished.logsumexp), state: state)
}

/// Merges partial results into attention over the union of their keys.
///
/// Partials computed here are merged with the kernel's own chunk merge on their
/// unnormalised state, in the order given (key order): merging a first slice
/// `0..<b` with slices of at most 512 keys that each start on a multiple of 512
/// gives bit for bit the unsliced call (the kernel computes every call as
/// 512-key chunks merged in key order). Other splits, and partials built from
/// an output and a logsumexp alone, agree with it to rounding (floating-point
/// merges are not associative).
///
/// - Parameter partials: at least one partial, all of one shape, in key order;
///   those computed here must share one dropout probability.
/// - Returns: the merged output `[..., heads, queryLength, valueDim]` and logsumexp;
///   a row that saw no key in any partial is 0 (logsumexp −∞).
/// - Throws: `AttentionError.invalidValue` naming `partials` for an empty list
///   or mixed dropout probabilities; `AttentionError.invalidShape` naming
///   `partials` when the shapes differ.
public func mergeAttentionPartials(_ partials: [AttentionPartial]) throws -> AttentionResult {
    guard let first = partials.first else {
        throw AttentionError.invalidValue(argument: "partials", expected: "at least one partial", actual: "none")
    }
    for (index, partial) in partials.enumerated() where partial.output.shape != first.output.shape {
        throw AttentionError.invalidShape(
            argument: "partials[\(index)]", expected: "output \(first.output.shape) like partials[0]",
            actual: partial.output.shape)
    }
    let rowShape = first.logsumexp.shape
    let valueDim = first.output.shape.last ?? 0
    let rows = first.logsumexp.scalars.count
    let states = partials.compactMap(\.state)
    if states.count == partials.count {
        let dropout = states[0].dropoutProbability
        guard states.allSatisfy({ $0.dropoutProbability == dropout }) else {
            throw AttentionError.invalidValue(
                argument: "partials", expected: "one dropout probability for every partial",
                actual: states.map { "\($0.dropoutProbability)" }.joined(separator: ", "))
        }
        var merged = states[0]
        for next in states.dropFirst() { try mergeStates(&merged, next, rows: rows, valueDim: valueDim) }
        let finished = try finish(merged, rows: rows, valueDim: valueDim)
        return AttentionResult(
            output: Tensor(validShape: first.output.shape, scalars: finished.output),
            logsumexp: Tensor(validShape: rowShape, scalars: finished.logsumexp))
    }
    // softmax over the union, through the logsumexp of each partial.
    var output = [Float](repeating: 0, count: rows * valueDim)
    var logsumexp = [Float](repeating: -.infinity, count: rows)
    for row in 0..<rows {
        let logs = partials.map { $0.logsumexp.scalars[row] }
        let largest = logs.max() ?? -.infinity
        guard largest > -.infinity || largest.isNaN else { continue }
        if largest.isNaN {
            logsumexp[row] = .nan
            for d in 0..<valueDim { output[row * valueDim + d] = .nan }
            continue
        }
        let total = logs.reduce(0) { $0 + (Double($1) - Double(largest)).exponentiated() }
        let rowLogsumexp = Double(largest) + total.logarithm()
        logsumexp[row] = Float(rowLogsumexp)
        for (partial, log) in zip(partials, logs) where log > -.infinity {
            let weight = (Double(log) - rowLogsumexp).exponentiated()
            for d in 0..<valueDim {
                output[row * valueDim + d] += Float(weight * Double(partial.output.scalars[row * valueDim + d]))
            }
        }
    }
    return AttentionResult(
        output: Tensor(validShape: first.output.shape, scalars: output),
        logsumexp: Tensor(validShape: rowShape, scalars: logsumexp))
}

private extension Double {
    func exponentiated() -> Double { Foundation.exp(self) }
    func logarithm() -> Double { Foundation.log(self) }
}

/// merged ⊕= next through attn_partial_merge (the kernel's chunk merge).
private func mergeStates(_ merged: inout AttentionPartial.KernelState, _ next: AttentionPartial.KernelState,
                         rows: Int, valueDim: Int) throws {
    var next = next
    let status = merged.rowMax.withUnsafeMutableBufferPointer { m in
        merged.rowSum.withUnsafeMutableBufferPointer { l in
            merged.accumulator.withUnsafeMutableBufferPointer { o in
                next.rowMax.withUnsafeMutableBufferPointer { nm in
                    next.rowSum.withUnsafeMutableBufferPointer { nl in
                        next.accumulator.withUnsafeMutableBufferPointer { no in
                            var into = attn_partial(row_max: m.baseAddress, row_sum: l.baseAddress, accumulator: o.baseAddress)
                            var from = attn_partial(row_max: nm.baseAddress, row_sum: nl.baseAddress, accumulator: no.baseAddress)
                            return attn_partial_merge(&into, &from, Int64(rows), Int64(valueDim))
                        }
                    }
                }
            }
        }
    }
    try check(status)
}

/// out = O / L / (1 − p), logsumexp = M + log L (attn_partial_finish).
private func finish(_ state: AttentionPartial.KernelState, rows: Int, valueDim: Int) throws -> (output: [Float], logsumexp: [Float]) {
    var state = state
    var output = [Float](repeating: 0, count: rows * valueDim)
    var logsumexp = [Float](repeating: 0, count: rows)
    let status = state.rowMax.withUnsafeMutableBufferPointer { m in
        state.rowSum.withUnsafeMutableBufferPointer { l in
            state.accumulator.withUnsafeMutableBufferPointer { o in
                output.withUnsafeMutableBufferPointer { out in
                    logsumexp.withUnsafeMutableBufferPointer { lse in
                        var partial = attn_partial(row_max: m.baseAddress, row_sum: l.baseAddress, accumulator: o.baseAddress)
                        return attn_partial_finish(&partial, Int64(rows), Int64(valueDim), state.dropoutProbability,
                                                   out.baseAddress, lse.baseAddress)
                    }
                }
            }
        }
    }
    try check(status)
    return (output, logsumexp)
}

private func check(_ status: attn_status) throws {
    guard status == ATTN_OK else {
        throw AttentionError.kernelFailure(code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
    }
}

extension AttentionProblem {
    /// The kernel's state over keys `keyRange` (attn_sdpa_partial_plan_create),
    /// on the driver in force.
    func runFusedPartial(keyRange: Range<Int>, threads: Int?) throws -> AttentionPartial.KernelState {
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let rows = try Tensor<Float>.allocatableCount(of: [batch, queryHeads, queryLength], argument: "queries")
        var rowMax = [Float](repeating: 0, count: rows)
        var rowSum = [Float](repeating: 0, count: rows)
        var accumulator = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: [batch, queryHeads, queryLength, valueDim], argument: "values"))
        let status = rowMax.withUnsafeMutableBufferPointer { m in
            rowSum.withUnsafeMutableBufferPointer { l in
                accumulator.withUnsafeMutableBufferPointer { o in
                    withKernelParams(output: nil, outputStrides: [0, 0, 0, 1], logsumexp: nil) { params in
                        var partial = attn_partial(row_max: m.baseAddress, row_sum: l.baseAddress, accumulator: o.baseAddress)
                        return KernelThreading.runPartial(
                            &params, keyBegin: keyRange.lowerBound, keyEnd: keyRange.upperBound, partial: &partial,
                            threads: threads)
                    }
                }
            }
        }
        try check(status)
        return AttentionPartial.KernelState(
            rowMax: rowMax, rowSum: rowSum, accumulator: accumulator, dropoutProbability: dropoutProbability)
    }
}

extension KernelThreading {
    /// Runs the partial plan of `params` over keys [keyBegin, keyEnd) with `threads` workers.
    static func runPartial(
        _ params: inout attn_params, keyBegin: Int, keyEnd: Int, partial: inout attn_partial, threads: Int?
    ) -> attn_status {
        let driver = current
        params.num_threads = workers(threads, driver: driver)
        var plan: OpaquePointer?
        let status = attn_sdpa_partial_plan_create(&params, Int64(keyBegin), Int64(keyEnd), &partial, &plan)
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        return drive(plan, driver: driver)
    }
}
