import CAttention

extension AttentionProblem {
    /// Runs the fused backward kernel (`attn_sdpa_backward`'s plan, on the driver
    /// in force) for this problem.
    ///
    /// - Parameters:
    ///   - output: the forward's output `[B, Hq, Lq, Dv]`, a strided view.
    ///   - logsumexp: the forward's logsumexp, contiguous `[B, Hq, Lq]`.
    ///   - outputGradient: dO `[B, Hq, Lq, Dv]`, a strided view.
    ///   - queryLayout: the layout of the returned dQ; keyLayout: of dK and dV.
    ///   - threads: workers; `nil` = the driver's default.
    func runFusedBackward(
        output: StridedOperand<Float>, logsumexp: [Float], outputGradient: StridedOperand<Float>,
        queryLayout: OutputLayout, keyLayout: OutputLayout, threads: Int?
    ) throws -> BackwardResult {
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let dqStrides = queryLayout.strides(batch: batch, heads: queryHeads, length: queryLength, dim: headDim)
        let dkStrides = keyLayout.strides(batch: batch, heads: kvHeads, length: keyLength, dim: headDim)
        let dvStrides = keyLayout.strides(batch: batch, heads: kvHeads, length: keyLength, dim: valueDim)
        var dq = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: [batch, queryHeads, queryLength, headDim], argument: "queries"))
        var dk = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: [batch, kvHeads, keyLength, headDim], argument: "keys"))
        var dv = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: [batch, kvHeads, keyLength, valueDim], argument: "values"))

        var params = attn_backward_params()
        params.forward.batch = Int64(batch)
        params.forward.query_heads = Int64(queryHeads)
        params.forward.kv_heads = Int64(kvHeads)
        params.forward.query_length = Int64(queryLength)
        params.forward.key_length = Int64(keyLength)
        params.forward.head_dim = Int64(headDim)
        params.forward.value_dim = Int64(valueDim)
        params.forward.query_strides = Self.tuple(query.strides)
        params.forward.key_strides = Self.tuple(key.strides)
        params.forward.value_strides = Self.tuple(value.strides)
        params.forward.output_strides = Self.tuple(output.strides)
        params.forward.logsumexp_strides = (Int64(queryHeads * queryLength), Int64(queryLength), 1)
        params.forward.scale = scale
        switch causal {
        case .none: params.forward.causal = ATTN_CAUSAL_NONE
        case .topLeft?: params.forward.causal = ATTN_CAUSAL_TOP_LEFT
        case .bottomRight?: params.forward.causal = ATTN_CAUSAL_BOTTOM_RIGHT
        }
        params.forward.dropout_p = dropoutProbability
        params.forward.dropout_seed = dropoutSeed
        params.grad_output_strides = Self.tuple(outputGradient.strides)
        params.grad_query_strides = Self.tuple(dqStrides)
        params.grad_key_strides = Self.tuple(dkStrides)
        params.grad_value_strides = Self.tuple(dvStrides)

        let status: attn_status = query.storage.withUnsafeBufferPointer { q in
            key.storage.withUnsafeBufferPointer { k in
                value.storage.withUnsafeBufferPointer { v in
                    output.storage.withUnsafeBufferPointer { o in
                        logsumexp.withUnsafeBufferPointer { lse in
                            outputGradient.storage.withUnsafeBufferPointer { dO in
                                dq.withUnsafeMutableBufferPointer { dqBuffer in
                                    dk.withUnsafeMutableBufferPointer { dkBuffer in
                                        dv.withUnsafeMutableBufferPointer { dvBuffer in
                                            params.forward.query = q.baseAddress.map { UnsafePointer($0 + query.offset) }
                                            params.forward.key = k.baseAddress.map { UnsafePointer($0 + key.offset) }
                                            params.forward.value = v.baseAddress.map { UnsafePointer($0 + value.offset) }
                                            // Read only: the C struct's output fields are not const.
                                            params.forward.output = o.baseAddress.map { UnsafeMutablePointer(mutating: $0 + output.offset) }
                                            params.forward.logsumexp = lse.baseAddress.map { UnsafeMutablePointer(mutating: $0) }
                                            params.grad_output = dO.baseAddress.map { UnsafePointer($0 + outputGradient.offset) }
                                            params.grad_query = dqBuffer.baseAddress
                                            params.grad_key = dkBuffer.baseAddress
                                            params.grad_value = dvBuffer.baseAddress
                                            var forward = params.forward
                                            let call = params
                                            return withMask(&forward) { forward in
                                                withKeyPadding(&forward) { forward in
                                                    var full = call
                                                    full.forward = forward
                                                    return KernelThreading.runBackward(&full, threads: threads)
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        guard status == ATTN_OK else {
            throw AttentionError.kernelFailure(
                code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
        }
        return BackwardResult(queryGradient: dq, keyGradient: dk, valueGradient: dv)
    }
}

extension KernelThreading {
    /// Runs the backward kernel's plan on `params` with `threads` workers.
    static func runBackward(_ params: inout attn_backward_params, threads: Int?) -> attn_status {
        let driver = current
        params.forward.num_threads = workers(threads, driver: driver)
        var plan: OpaquePointer?
        let status = attn_sdpa_backward_plan_create(&params, &plan)
        guard status == ATTN_OK, let plan else { return status }
        defer { attn_plan_destroy(plan) }
        return drive(plan, driver: driver)
    }
}
