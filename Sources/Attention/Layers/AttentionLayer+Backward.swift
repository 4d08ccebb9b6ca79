/// What a trainable attention layer's forward pass keeps for its backward pass:
/// the inputs, the projected queries, keys and values, the attention output and
/// its logsumexp, and the masks and dropout cells of the call.
///
/// Returned by the layers' `forwardForTraining` and handed back to their
/// `backward`: the caller keeps it (there is no hidden tape), and may drop it to
/// free its memory, about `(inputs + 3 projections + output)` floats.
public struct AttentionForwardState: Sendable {
    var queryInput: Tensor<Float>  // [B, Lq, inQ]
    var keyInput: Tensor<Float>    // [B, Lk, inK]
    var valueInput: Tensor<Float>  // [B, Lk, inV]
    var wasUnbatched: Bool
    var batchFirst = true          // false: the caller's inputs and output are [length, batch, features]
    var isSelfAttention: Bool
    var problem: AttentionProblem  // the projections as heads, the masks, dropout
    var merged: [Float]            // attention output [B, Lq, H·Dv], heads side by side
    var logsumexp: [Float]         // [B, H, Lq]
    var backend: AttentionBackend
    var threads: Int?
}

/// The gradients of a loss with respect to an attention layer's inputs and parameters.
public struct AttentionLayerGradients: Sendable {
    /// ∂L/∂input for self-attention (the sum of the three below, in the input's
    /// shape), `nil` for a call with separate query and key/value inputs.
    public var input: Tensor<Float>?
    /// ∂L/∂query input, the query input's shape `[batch, queryLength, queryFeatures]`.
    public var query: Tensor<Float>
    /// ∂L/∂key input, `[batch, keyLength, keyFeatures]`.
    public var key: Tensor<Float>
    /// ∂L/∂value input, `[batch, keyLength, valueFeatures]`.
    public var value: Tensor<Float>
    /// ∂L/∂W_q (and its bias).
    public var queryProjection: LinearParameterGradients
    /// ∂L/∂W_k (and its bias).
    public var keyProjection: LinearParameterGradients
    /// ∂L/∂W_v (and its bias).
    public var valueProjection: LinearParameterGradients
    /// ∂L/∂ of the output projection, `nil` for a layer without one.
    public var outputProjection: LinearParameterGradients?
}

extension QKVProjections {
    /// Runs attention on `problem` (the projections of the inputs), keeping what
    /// the backward pass needs. Returns the merged heads `[B, Lq, H·Dv]`.
    func trainingForward(
        problem: AttentionProblem, queryInput: Tensor<Float>, keyInput: Tensor<Float>, valueInput: Tensor<Float>,
        wasUnbatched: Bool, isSelfAttention: Bool, backend: AttentionBackend, threads: Int?
    ) throws -> AttentionForwardState {
        let result = try problem.run(backend: backend, layout: .sequenceMajor, threads: threads, wantLogsumexp: true)
        return AttentionForwardState(
            queryInput: queryInput, keyInput: keyInput, valueInput: valueInput, wasUnbatched: wasUnbatched,
            isSelfAttention: isSelfAttention, problem: problem, merged: result.output,
            logsumexp: result.logsumexp ?? [], backend: backend, threads: threads)
    }

    /// The backward pass from ∂L/∂(merged heads) `[B, Lq, H·Dv]` through
    /// attention and the three projections.
    func backward(
        _ state: AttentionForwardState, mergedGradient: [Float], outputProjection: LinearParameterGradients?
    ) throws -> AttentionLayerGradients {
        let p = state.problem
        let mergedStrides = OutputLayout.sequenceMajor.strides(batch: p.batch, heads: p.queryHeads, length: p.queryLength, dim: p.valueDim)
        let dO = StridedOperand(storage: mergedGradient, offset: 0, strides: mergedStrides)
        let attention: BackwardResult
        switch state.backend {
        case .fused:
            attention = try p.runFusedBackward(
                output: StridedOperand(storage: state.merged, offset: 0, strides: mergedStrides),
                logsumexp: state.logsumexp, outputGradient: dO,
                queryLayout: .sequenceMajor, keyLayout: .sequenceMajor, threads: state.threads)
        case .reference:
            attention = p.runReferenceBackward(outputGradient: dO, queryLayout: .sequenceMajor, keyLayout: .sequenceMajor)
        }
        // The gradients come out as [B, L, heads · dim]: what the projections produced.
        let dq = Tensor(validShape: [p.batch, p.queryLength, p.queryHeads * p.headDim], scalars: attention.queryGradient)
        let dk = Tensor(validShape: [p.batch, p.keyLength, p.kvHeads * p.headDim], scalars: attention.keyGradient)
        let dv = Tensor(validShape: [p.batch, p.keyLength, p.kvHeads * p.valueDim], scalars: attention.valueGradient)
        let q = try query.backward(input: state.queryInput, outputGradient: dq, threads: state.threads)
        let k = try key.backward(input: state.keyInput, outputGradient: dk, threads: state.threads)
        let v = try value.backward(input: state.valueInput, outputGradient: dv, threads: state.threads)
        func restored(_ t: Tensor<Float>) -> Tensor<Float> {
            if state.wasUnbatched { return Tensor(validShape: Array(t.shape.dropFirst()), scalars: t.scalars) }
            return state.batchFirst ? t : t.swappingLeadingAxes()
        }
        var input: Tensor<Float>?
        if state.isSelfAttention {
            var sum = q.input.scalars
            for index in sum.indices { sum[index] = sum[index] + k.input.scalars[index] + v.input.scalars[index] }
            input = restored(Tensor(validShape: q.input.shape, scalars: sum))
        }
        return AttentionLayerGradients(
            input: input, query: restored(q.input), key: restored(k.input), value: restored(v.input),
            queryProjection: q.parameters, keyProjection: k.parameters, valueProjection: v.parameters,
            outputProjection: outputProjection)
    }

    /// The forward pass of training of the single-head layers (``SelfAttention``,
    /// ``CausalSelfAttention``): `prepared`, the layer's input as a sequence and
    /// its problem, run on one input. Returns the output `[B, L, Dv]` in the
    /// input's rank, and the state.
    func singleHeadTrainingForward(
        _ prepared: (SequenceBatch, AttentionProblem), backend: AttentionBackend, threads: Int?
    ) throws -> (output: Tensor<Float>, state: AttentionForwardState) {
        let (sequence, problem) = prepared
        let state = try trainingForward(
            problem: problem, queryInput: sequence.tensor, keyInput: sequence.tensor, valueInput: sequence.tensor,
            wasUnbatched: sequence.wasUnbatched, isSelfAttention: true, backend: backend, threads: threads)
        return (state.restoringRank(state.mergedTensor), state)
    }

    /// The backward pass of the single-head layers, from ∂L/∂output (the
    /// output's shape, checked) through attention and the projections; they have
    /// no output projection.
    func singleHeadBackward(_ state: AttentionForwardState, outputGradient: Tensor<Float>) throws -> AttentionLayerGradients {
        let dy = try state.batchedGradient(outputGradient, width: outputWidth)
        return try backward(state, mergedGradient: dy.scalars, outputProjection: nil)
    }

    /// Applies one optimizer step to the three projections: slots `slot …` `slot + 5`.
    mutating func update(with gradients: AttentionLayerGradients, using optimizer: inout some Optimizer, slot: Int) throws {
        try checkStep(with: gradients)
        try query.update(with: gradients.queryProjection, using: &optimizer, slot: slot, name: "queryProjection")
        try key.update(with: gradients.keyProjection, using: &optimizer, slot: slot + 2, name: "keyProjection")
        try value.update(with: gradients.valueProjection, using: &optimizer, slot: slot + 4, name: "valueProjection")
    }

    /// Throws what ``update(with:using:slot:)`` would, before any projection is stepped.
    func checkStep(with gradients: AttentionLayerGradients) throws {
        try query.checkStep(with: gradients.queryProjection, name: "gradients.queryProjection")
        try key.checkStep(with: gradients.keyProjection, name: "gradients.keyProjection")
        try value.checkStep(with: gradients.valueProjection, name: "gradients.valueProjection")
    }
}

extension AttentionForwardState {
    /// The output gradient, checked against the shape of the output this state
    /// produced (`width` wide), batched.
    func batchedGradient(_ gradient: Tensor<Float>, width: Int) throws -> Tensor<Float> {
        let batch = queryInput.shape[0], length = queryInput.shape[1]
        let expected = wasUnbatched ? [length, width] : batchFirst ? [batch, length, width] : [length, batch, width]
        guard gradient.shape == expected else {
            throw AttentionError.invalidShape(argument: "outputGradient", expected: "\(expected) (the output's shape)", actual: gradient.shape)
        }
        return batchFirst || wasUnbatched ? gradient : gradient.swappingLeadingAxes()
    }

    /// The merged heads `[B, Lq, H·Dv]` as a tensor.
    var mergedTensor: Tensor<Float> {
        Tensor(validShape: [problem.batch, problem.queryLength, problem.queryHeads * problem.valueDim], scalars: merged)
    }

    func restoringRank(_ output: Tensor<Float>) -> Tensor<Float> {
        if wasUnbatched { return Tensor(validShape: Array(output.shape.dropFirst()), scalars: output.scalars) }
        return batchFirst ? output : output.swappingLeadingAxes()
    }
}

// MARK: - The layers

extension SelfAttention {
    /// The forward pass of training: the context vectors and what ``backward(_:outputGradient:)`` needs.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: the output `[batch, length, dOut]` (as `callAsFunction`) and the state to keep.
    /// - Throws: as `callAsFunction(_:)`.
    public func forwardForTraining(_ input: Tensor<Float>) throws -> (output: Tensor<Float>, state: AttentionForwardState) {
        try projections.singleHeadTrainingForward(try prepare(input), backend: backend, threads: threads)
    }

    /// The backward pass: ∂L/∂input and ∂L/∂W_q, ∂L/∂W_k, ∂L/∂W_v.
    ///
    /// - Parameters:
    ///   - state: what ``forwardForTraining(_:)`` returned.
    ///   - outputGradient: ∂L/∂output, the output's shape.
    /// - Returns: ``AttentionLayerGradients`` (`input` set; no output projection).
    /// - Throws: `AttentionError.invalidShape` naming `outputGradient`.
    public func backward(_ state: AttentionForwardState, outputGradient: Tensor<Float>) throws -> AttentionLayerGradients {
        try projections.singleHeadBackward(state, outputGradient: outputGradient)
    }

    /// One optimizer step on W_q, W_k, W_v (optimizer slots `slot …` `slot + 5`).
    ///
    /// - Parameters:
    ///   - gradients: what ``backward(_:outputGradient:)`` returned.
    ///   - optimizer: ``SGD``, ``Adam`` or another ``Optimizer``, updated in place.
    ///   - slot: the first of the optimizer slots this layer uses.
    /// - Throws: `AttentionError.invalidShape` for a gradient of another shape.
    public mutating func update(with gradients: AttentionLayerGradients, using optimizer: inout some Optimizer, slot: Int = 0) throws {
        try projections.update(with: gradients, using: &optimizer, slot: slot)
    }
}

extension CausalSelfAttention {
    /// The forward pass of training (dropout on while `isTraining`): the context
    /// vectors and what ``backward(_:outputGradient:)`` needs.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`, `length ≤ contextLength`.
    /// - Returns: the output `[batch, length, dOut]` and the state to keep.
    /// - Throws: as `callAsFunction(_:)`.
    public func forwardForTraining(_ input: Tensor<Float>) throws -> (output: Tensor<Float>, state: AttentionForwardState) {
        try projections.singleHeadTrainingForward(try prepare(input), backend: backend, threads: threads)
    }

    /// The backward pass: ∂L/∂input and ∂L/∂W_q, ∂L/∂W_k, ∂L/∂W_v (the forward's
    /// dropout cells regenerated from its seed).
    ///
    /// - Parameters:
    ///   - state: what `forwardForTraining` returned.
    ///   - outputGradient: ∂L/∂output, the output's shape.
    /// - Returns: ``AttentionLayerGradients``.
    /// - Throws: `AttentionError.invalidShape` naming `outputGradient`.
    public func backward(_ state: AttentionForwardState, outputGradient: Tensor<Float>) throws -> AttentionLayerGradients {
        try projections.singleHeadBackward(state, outputGradient: outputGradient)
    }

    /// One optimizer step on W_q, W_k, W_v (optimizer slots `slot …` `slot + 5`).
    ///
    /// - Parameters:
    ///   - gradients: what ``backward(_:outputGradient:)`` returned.
    ///   - optimizer: ``SGD``, ``Adam`` or another ``Optimizer``, updated in place.
    ///   - slot: the first of the optimizer slots this layer uses.
    /// - Throws: `AttentionError.invalidShape` for a gradient of another shape.
    public mutating func update(with gradients: AttentionLayerGradients, using optimizer: inout some Optimizer, slot: Int = 0) throws {
        try projections.update(with: gradients, using: &optimizer, slot: slot)
    }
}

extension MultiHeadAttention {
    /// The forward pass of training for self-attention.
    ///
    /// - Parameter input: `[batch, length, dIn]` (`[length, batch, dIn]` when
    ///   `batchFirst` is false) or `[length, dIn]`.
    /// - Returns: the output `[batch, length, dOut]` (in the input's layout) and the state to keep.
    /// - Throws: as `callAsFunction(_:)`.
    public func forwardForTraining(_ input: Tensor<Float>) throws -> (output: Tensor<Float>, state: AttentionForwardState) {
        try forwardForTraining(query: input, key: input, value: input, isSelfAttention: true)
    }

    /// The forward pass of training, cross-attention included: the output and
    /// what ``backward(_:outputGradient:)`` needs.
    ///
    /// - Parameters:
    ///   - query: `[batch, queryLength, dIn]` (or as `batchFirst` says).
    ///   - key: `[batch, keyLength, keyFeatures]`.
    ///   - value: `[batch, keyLength, valueFeatures]`.
    ///   - keyPadding: which keys are padding, with the polarity in the name.
    ///   - mask: an extra mask, `[batch, heads, queryLength, keyLength]` broadcastable.
    /// - Returns: the output `[batch, queryLength, dOut]` and the state to keep.
    /// - Throws: as `callAsFunction(query:key:value:keyPadding:mask:)`.
    public func forwardForTraining(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding? = nil, mask: AttentionMask = .none
    ) throws -> (output: Tensor<Float>, state: AttentionForwardState) {
        try forwardForTraining(query: query, key: key, value: value, keyPadding: keyPadding, mask: mask, isSelfAttention: false)
    }

    private func forwardForTraining(
        query: Tensor<Float>, key: Tensor<Float>, value: Tensor<Float>,
        keyPadding: KeyPadding? = nil, mask: AttentionMask = .none, isSelfAttention: Bool
    ) throws -> (output: Tensor<Float>, state: AttentionForwardState) {
        let (sequence, problem) = try prepare(
            query: query, key: key, value: value, keyPadding: keyPadding, argument: "keyPadding", mask: mask, forWeights: false)
        let keySequence = try SequenceBatch(key, argument: "key", projection: projections.key, weightName: "key.weight", batchFirst: batchFirst)
        let valueSequence = try SequenceBatch(value, argument: "value", projection: projections.value, weightName: "value.weight", batchFirst: batchFirst)
        var state = try projections.trainingForward(
            problem: problem, queryInput: sequence.tensor, keyInput: keySequence.tensor, valueInput: valueSequence.tensor,
            wasUnbatched: sequence.wasUnbatched, isSelfAttention: isSelfAttention, backend: backend, threads: threads)
        state.batchFirst = batchFirst
        var output = state.mergedTensor
        if let outputProjection { output = try outputProjection(output, threads: threads) }
        return (state.restoringRank(output), state)
    }

    /// The backward pass: the input gradients (summed in `input` for
    /// self-attention) and the gradients of W_q, W_k, W_v and the output
    /// projection; grouped-query attention's W_k, W_v gradients sum their groups.
    ///
    /// - Parameters:
    ///   - state: what `forwardForTraining` returned.
    ///   - outputGradient: ∂L/∂output, the output's shape.
    /// - Returns: ``AttentionLayerGradients``.
    /// - Throws: `AttentionError.invalidShape` naming `outputGradient`.
    public func backward(_ state: AttentionForwardState, outputGradient: Tensor<Float>) throws -> AttentionLayerGradients {
        let width = outputProjection?.outFeatures ?? projections.outputWidth
        var dy = try state.batchedGradient(outputGradient, width: width)
        if dy.rank == 2 { dy = Tensor(validShape: [1] + dy.shape, scalars: dy.scalars) }
        var outputGradients: LinearParameterGradients?
        var merged = dy.scalars
        if let outputProjection {
            let gradients = try outputProjection.backward(input: state.mergedTensor, outputGradient: dy, threads: threads)
            merged = gradients.input.scalars
            outputGradients = gradients.parameters
        }
        return try projections.backward(state, mergedGradient: merged, outputProjection: outputGradients)
    }

    /// One optimizer step on W_q, W_k, W_v (slots `slot …` `slot + 5`) and the
    /// output projection (slots `slot + 6`, `slot + 7`).
    ///
    /// - Parameters:
    ///   - gradients: what ``backward(_:outputGradient:)`` returned.
    ///   - optimizer: ``SGD``, ``Adam`` or another ``Optimizer``, updated in place.
    ///   - slot: the first of the optimizer slots this layer uses.
    /// - Throws: `AttentionError.invalidShape` for a gradient of another shape,
    ///   or output projection gradients missing for a layer that has one.
    public mutating func update(with gradients: AttentionLayerGradients, using optimizer: inout some Optimizer, slot: Int = 0) throws {
        // Every check first: a failed step changes no projection.
        try projections.checkStep(with: gradients)
        if let outputProjection {
            guard let projectionGradients = gradients.outputProjection else {
                throw AttentionError.invalidValue(argument: "gradients.outputProjection", expected: "gradients for the output projection", actual: "nil")
            }
            try outputProjection.checkStep(with: projectionGradients, name: "gradients.outputProjection")
        }
        try projections.update(with: gradients, using: &optimizer, slot: slot)
        if let projectionGradients = gradients.outputProjection, outputProjection != nil {
            try outputProjection!.update(with: projectionGradients, using: &optimizer, slot: slot + 6, name: "outputProjection")
        }
    }
}

/// What ``MultiHeadAttentionWrapper``'s training forward keeps: one state per head.
public struct AttentionWrapperForwardState: Sendable {
    /// The heads' states, in head order.
    public var heads: [AttentionForwardState]
}

/// The gradients of ``MultiHeadAttentionWrapper``: the input's and each head's.
public struct AttentionWrapperGradients: Sendable {
    /// ∂L/∂input, summed over the heads in head order.
    public var input: Tensor<Float>
    /// Each head's gradients (its `input` is that head's share).
    public var heads: [AttentionLayerGradients]
}

extension MultiHeadAttentionWrapper {
    /// The forward pass of training: the heads' outputs side by side and their states.
    ///
    /// - Parameter input: `[batch, length, dIn]` or `[length, dIn]`.
    /// - Returns: the output `[batch, length, Σ dOut]` and the state to keep.
    /// - Throws: as `callAsFunction(_:)`.
    public func forwardForTraining(_ input: Tensor<Float>) throws -> (output: Tensor<Float>, state: AttentionWrapperForwardState) {
        let runs = try heads.map { try $0.forwardForTraining(input) }
        let rows = input.shape.dropLast().reduce(1, *)
        let widths = runs.map { $0.output.shape.last ?? 0 }
        var merged: [Float] = []
        merged.reserveCapacity(rows * widths.reduce(0, +))
        for row in 0..<rows {
            for (run, width) in zip(runs, widths) {
                merged.append(contentsOf: run.output.scalars[(row * width)..<((row + 1) * width)])
            }
        }
        return (Tensor(validShape: Array(input.shape.dropLast()) + [widths.reduce(0, +)], scalars: merged),
                AttentionWrapperForwardState(heads: runs.map(\.state)))
    }

    /// The backward pass: the output gradient is split by head, each head's
    /// backward runs, and the input gradients are summed in head order.
    ///
    /// - Parameters:
    ///   - state: what `forwardForTraining` returned.
    ///   - outputGradient: ∂L/∂output, the output's shape.
    /// - Returns: the input gradient and each head's parameter gradients.
    /// - Throws: `AttentionError.invalidShape` naming `outputGradient`.
    public func backward(_ state: AttentionWrapperForwardState, outputGradient: Tensor<Float>) throws -> AttentionWrapperGradients {
        let widths = heads.map { $0.projections.outputWidth }
        let total = widths.reduce(0, +)
        guard state.heads.count == heads.count, outputGradient.shape.last == total else {
            throw AttentionError.invalidShape(argument: "outputGradient", expected: "[..., \(total)] (Σ dOut of \(heads.count) heads)", actual: outputGradient.shape)
        }
        let rows = outputGradient.count / max(total, 1)
        var offset = 0
        var perHead: [AttentionLayerGradients] = []
        var input: [Float]?
        for (index, head) in heads.enumerated() {
            let width = widths[index]
            var slice = [Float](repeating: 0, count: rows * width)
            for row in 0..<rows {
                for c in 0..<width { slice[row * width + c] = outputGradient.scalars[row * total + offset + c] }
            }
            offset += width
            let gradients = try head.backward(
                state.heads[index],
                outputGradient: Tensor(validShape: Array(outputGradient.shape.dropLast()) + [width], scalars: slice))
            let share = gradients.input?.scalars ?? []
            if input == nil { input = share } else { for e in share.indices { input![e] += share[e] } }
            perHead.append(gradients)
        }
        let shape = state.heads.first.map { $0.wasUnbatched ? Array($0.queryInput.shape.dropFirst()) : $0.queryInput.shape } ?? []
        return AttentionWrapperGradients(input: Tensor(validShape: shape, scalars: input ?? []), heads: perHead)
    }

    /// One optimizer step on every head (head h uses slots `slot + 6h …`).
    ///
    /// - Parameters:
    ///   - gradients: what ``backward(_:outputGradient:)`` returned.
    ///   - optimizer: ``SGD``, ``Adam`` or another ``Optimizer``, updated in place.
    ///   - slot: the first of the optimizer slots this layer uses.
    /// - Throws: `AttentionError.invalidShape` for gradients that do not fit.
    public mutating func update(with gradients: AttentionWrapperGradients, using optimizer: inout some Optimizer, slot: Int = 0) throws {
        guard gradients.heads.count == heads.count else {
            throw AttentionError.invalidValue(argument: "gradients.heads", expected: "\(heads.count) heads", actual: "\(gradients.heads.count)")
        }
        // Every head's check first: a failed step changes no head.
        for index in heads.indices { try heads[index].projections.checkStep(with: gradients.heads[index]) }
        for index in heads.indices {
            try heads[index].update(with: gradients.heads[index], using: &optimizer, slot: slot + 6 * index)
        }
    }
}
