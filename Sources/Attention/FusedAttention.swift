import CAttention

/// How the output rows of a problem are laid out in memory.
enum OutputLayout: Sendable {
    /// `[batch, heads, queryLength, valueDim]`: what the functional API returns.
    case headsMajor
    /// `[batch, queryLength, heads, valueDim]`: heads already merged, what a
    /// layer's output projection reads, so no transpose is needed.
    case sequenceMajor

    func strides(batch: Int, heads: Int, length: Int, dim: Int) -> [Int] {
        switch self {
        case .headsMajor: return [heads * length * dim, length * dim, dim, 1]
        case .sequenceMajor: return [length * heads * dim, dim, heads * dim, 1]
        }
    }
}

/// The result of one backend run: flat output in the requested layout and,
/// when asked for, logsumexp `[batch, heads, queryLength]`.
struct BackendResult: Sendable {
    var output: [Float]
    var logsumexp: [Float]?
    /// Attention weights `[batch, heads, queryLength, keyLength]`, after dropout;
    /// only the reference backend produces them.
    var weights: [Float]?
}

extension AttentionProblem {
    /// Runs the fused C kernel (`attn_sdpa_forward`); keys and values come from
    /// `externalKV` when it is set (any storage type), else from `key` and `value`.
    ///
    /// - Parameter threads: OpenMP threads; `nil` uses OpenMP's default
    ///   (`OMP_NUM_THREADS` or the core count).
    /// - Parameter driver: the threading driver (default: the one in force, `AttentionThreading.driver`).
    func runFused(layout: OutputLayout, threads: Int?, wantLogsumexp: Bool, driver: AttentionThreading.Driver? = nil) throws -> BackendResult {
        if let threads, threads < 1 {
            throw AttentionError.invalidValue(argument: "threads", expected: "at least 1", actual: "\(threads)")
        }
        let outputStrides = layout.strides(batch: batch, heads: queryHeads, length: queryLength, dim: valueDim)
        var output = [Float](repeating: 0, count: try Tensor<Float>.allocatableCount(
            of: [batch, queryHeads, queryLength, valueDim], argument: "values", tensor: "output"))
        var logsumexp = [Float](repeating: 0, count: wantLogsumexp ? batch * queryHeads * queryLength : 0)

        let status: attn_status = output.withUnsafeMutableBufferPointer { out in
            logsumexp.withUnsafeMutableBufferPointer { lse in
                withKernelParams(
                    output: out.baseAddress, outputStrides: outputStrides,
                    logsumexp: wantLogsumexp ? lse.baseAddress : nil
                ) { KernelThreading.run(&$0, threads: threads, driver: driver) }
            }
        }
        guard status == ATTN_OK else {
            throw AttentionError.kernelFailure(
                code: Int(status.rawValue), message: String(cString: attn_status_description(status)))
        }
        return BackendResult(output: output, logsumexp: wantLogsumexp ? logsumexp : nil, weights: nil)
    }

    /// The kernel's parameters for this problem without the operand pointers
    /// (sizes, strides, causal alignment, dropout, and a cache's storage type and
    /// layout when `externalKV` is set); the caller sets the pointers inside
    /// `withUnsafeBufferPointer` scopes, as ``withKernelParams`` does.
    func kernelParameters(outputStrides: [Int], threads: Int?) -> attn_params {
        var params = attn_params()
        params.batch = Int64(batch)
        params.query_heads = Int64(queryHeads)
        params.kv_heads = Int64(kvHeads)
        params.query_length = Int64(queryLength)
        params.key_length = Int64(keyLength)
        params.head_dim = Int64(headDim)
        params.value_dim = Int64(valueDim)
        params.query_strides = Self.tuple(query.strides)
        params.key_strides = Self.tuple(key.strides)
        params.value_strides = Self.tuple(value.strides)
        params.output_strides = Self.tuple(outputStrides)
        params.logsumexp_strides = (Int64(queryHeads * queryLength), Int64(queryLength), 1)
        params.scale = scale
        switch causal {
        case .none: params.causal = ATTN_CAUSAL_NONE
        case .topLeft?: params.causal = ATTN_CAUSAL_TOP_LEFT
        case .bottomRight?: params.causal = ATTN_CAUSAL_BOTTOM_RIGHT
        }
        params.dropout_p = dropoutProbability
        params.dropout_seed = dropoutSeed

        if let external = externalKV {
            // A cache's memory, in its storage type: the kernel widens it.
            params.kv_storage = external.storage.kernelValue
            params.key_layout = external.keyLayout
            params.key_strides = Self.tuple(external.keyStrides)
            params.value_strides = Self.tuple(external.valueStrides)
        }
        params.num_threads = Int32(clamping: threads ?? 0)
        return params
    }

    /// Fills the kernel's parameters for this problem (sizes, operands, masks,
    /// key padding, storage) and calls `body` with them while every pointer in
    /// them is valid. `output` may be NULL for a partial call.
    func withKernelParams(
        output: UnsafeMutablePointer<Float>?, outputStrides: [Int], logsumexp: UnsafeMutablePointer<Float>?,
        _ body: (inout attn_params) -> attn_status
    ) -> attn_status {
        var params = kernelParameters(outputStrides: outputStrides, threads: nil)
        return query.storage.withUnsafeBufferPointer { q in
            key.storage.withUnsafeBufferPointer { k in
                value.storage.withUnsafeBufferPointer { v in
                    params.query = q.baseAddress.map { UnsafePointer($0 + query.offset) }
                    if let external = externalKV {
                        // 16-bit elements travel as `const float *` (attention.h, kv_storage).
                        params.key = external.keys.map { UnsafePointer(OpaquePointer($0)) }
                        params.value = external.values.map { UnsafePointer(OpaquePointer($0)) }
                    } else {
                        params.key = k.baseAddress.map { UnsafePointer($0 + key.offset) }
                        params.value = v.baseAddress.map { UnsafePointer($0 + value.offset) }
                    }
                    params.output = output
                    params.logsumexp = logsumexp
                    return withMask(&params) { params in
                        withKeyPadding(&params) { body(&$0) }
                    }
                }
            }
        }
    }

    /// Fills the mask fields of `params` for the duration of `body`.
    func withMask(_ params: inout attn_params, _ body: (inout attn_params) -> attn_status) -> attn_status {
        switch mask {
        case .none:
            params.mask_kind = ATTN_MASK_NONE
            return body(&params)
        case let .keep(operand)?:
            params.mask_kind = ATTN_MASK_KEEP
            params.mask_strides = Self.tuple(operand.strides)
            return operand.storage.withUnsafeBytes { bytes in
                // Swift's Bool is one byte holding 0 or 1, the kernel's uint8 keep mask.
                params.mask = bytes.baseAddress.map { UnsafeRawPointer($0 + operand.offset) }
                return body(&params)
            }
        case let .additive(operand)?:
            params.mask_kind = ATTN_MASK_ADDITIVE
            params.mask_strides = Self.tuple(operand.strides)
            return operand.storage.withUnsafeBufferPointer { buffer in
                params.mask = buffer.baseAddress.map { UnsafeRawPointer($0 + operand.offset) }
                return body(&params)
            }
        }
    }

    /// Fills the key padding fields of `params` for the duration of `body`.
    func withKeyPadding(_ params: inout attn_params, _ body: (inout attn_params) -> attn_status) -> attn_status {
        guard let keyPaddingKeep else { return body(&params) }
        params.key_padding_strides = (Int64(keyLength), 1)
        return keyPaddingKeep.withUnsafeBytes { bytes in
            // Swift's Bool is one byte holding 0 or 1, the kernel's uint8 flags.
            params.key_padding_keep = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self)
            return body(&params)
        }
    }

    static func tuple(_ strides: [Int]) -> (Int64, Int64, Int64, Int64) {
        (Int64(strides[0]), Int64(strides[1]), Int64(strides[2]), Int64(strides[3]))
    }
}
