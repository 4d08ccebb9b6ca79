import CAttention
import XCTest
@testable import Attention

/// One call of the kernel's plan with keys and values in a storage type, run by
/// a chosen driver: query `[B, Hq, Lq, D]`, key `[B, Hkv, Lk, D]`, value
/// `[B, Hkv, Lk, Dv]` contiguous, masks full `[B, Hq, Lq, Lk]`.
struct StoredCall {
    var batch = 1, queryHeads = 1, kvHeads = 1
    var queryLength: Int, keyLength: Int, headDim: Int, valueDim: Int
    var query: [Float]
    /// Float32 storage: `key` / `value`; 16-bit storage: `keyBits` / `valueBits`.
    var key: [Float] = [], value: [Float] = []
    var keyBits: [UInt16] = [], valueBits: [UInt16] = []
    var storage: KernelKVStorage = .float32
    var scale: Float = 0.3
    var causal = ATTN_CAUSAL_NONE
    var keep: [UInt8]? = nil
    var additive: [Float]? = nil
    var dropout: Float = 0
    var seed: UInt64 = 0
    var threads: Int32 = 1
    var driver: AttentionThreading.Driver = .openMP
    /// Keys in panels of `panelWidth` keys (16: ATTN_KEY_LAYOUT_PANELS, 64:
    /// ATTN_KEY_LAYOUT_PANELS64), made from `key`/`keyBits` when the call runs;
    /// the last panel's unused slots hold `panelFill`.
    var keyPanels = false
    var panelWidth = 16
    var panelFill: Float = .nan
    /// Elements between one panel's end and the next one's start (`panelFill` too).
    var panelGap = 0

    /// The number of panels per head.
    var panelCount: Int { (keyLength + panelWidth - 1) / panelWidth }
    /// Elements from a panel to the next (`key_strides[2]`).
    var panelStride: Int { panelWidth * headDim + panelGap }

    /// Elements `[batch·kvHeads, keyLength, headDim]` rearranged into panels
    /// `[batch·kvHeads, ⌈keyLength/w⌉, headDim, w]`, `w` = `panelWidth`
    /// (panels `panelStride` elements apart).
    func panels<T>(_ rows: [T], fill: T) -> [T] {
        let w = panelWidth, panelCount = panelCount, stride = panelStride
        var out = [T](repeating: fill, count: batch * kvHeads * panelCount * stride)
        for head in 0..<(batch * kvHeads) {
            for j in 0..<keyLength {
                for d in 0..<headDim {
                    out[(head * panelCount + j / w) * stride + d * w + j % w] = rows[(head * keyLength + j) * headDim + d]
                }
            }
        }
        return out
    }

    struct Result {
        var status: attn_status
        var output: [Float]
        var logsumexp: [Float]
        var stackedHeads: Int64
    }

    /// Seeded normal data; 16-bit storage holds the normals rounded to it.
    static func random(batch: Int = 1, queryHeads: Int, kvHeads: Int, queryLength: Int, keyLength: Int,
                       headDim: Int, valueDim: Int, storage: KernelKVStorage, seed: UInt64) -> StoredCall {
        var call = StoredCall(batch: batch, queryHeads: queryHeads, kvHeads: kvHeads, queryLength: queryLength,
                              keyLength: keyLength, headDim: headDim, valueDim: valueDim,
                              query: normals(batch * queryHeads * queryLength * headDim, seed: seed))
        let keys = normals(batch * kvHeads * keyLength * headDim, seed: seed + 1)
        let values = normals(batch * kvHeads * keyLength * valueDim, seed: seed + 2)
        call.storage = storage
        if storage == .float32 {
            (call.key, call.value) = (keys, values)
        } else {
            (call.keyBits, call.valueBits) = (keys.map(storage.narrow), values.map(storage.narrow))
        }
        return call
    }

    /// The same call on float32 storage holding the widened keys and values.
    var widened: StoredCall {
        guard storage != .float32 else { return self }
        var call = self
        call.key = keyBits.map(storage.widen)
        call.value = valueBits.map(storage.widen)
        call.keyBits = []
        call.valueBits = []
        call.storage = .float32
        return call
    }

    /// Sets value element `index` (both storages): non-finite values for tests.
    mutating func setValue(_ index: Int, _ newValue: Float) {
        if storage == .float32 { value[index] = newValue } else { valueBits[index] = storage.narrow(newValue) }
    }

    /// Runs `body` with the call's parameters filled in (output and logsumexp
    /// contiguous, written by the body).
    func withParams<R>(output: UnsafeMutablePointer<Float>?, logsumexp: UnsafeMutablePointer<Float>?,
                       _ body: (inout attn_params) -> R) -> R {
        var params = attn_params()
        params.batch = Int64(batch)
        params.query_heads = Int64(queryHeads)
        params.kv_heads = Int64(kvHeads)
        params.query_length = Int64(queryLength)
        params.key_length = Int64(keyLength)
        params.head_dim = Int64(headDim)
        params.value_dim = Int64(valueDim)
        params.query_strides = KernelCall.strides([batch, queryHeads, queryLength, headDim])
        params.key_strides = KernelCall.strides([batch, kvHeads, keyLength, headDim])
        params.value_strides = KernelCall.strides([batch, kvHeads, keyLength, valueDim])
        params.output_strides = KernelCall.strides([batch, queryHeads, queryLength, valueDim])
        params.logsumexp_strides = (Int64(queryHeads * queryLength), Int64(queryLength), 1)
        params.scale = scale
        params.causal = causal
        params.dropout_p = dropout
        params.dropout_seed = seed
        params.num_threads = threads
        params.kv_storage = storage.kernelValue
        params.output = output
        params.logsumexp = logsumexp
        let maskStrides = KernelCall.strides([batch, queryHeads, queryLength, keyLength])
        let keepBytes = keep ?? [], additiveValues = additive ?? []
        let key = keyPanels && storage == .float32 ? panels(self.key, fill: panelFill) : self.key
        let keyBits = keyPanels && storage != .float32 ? panels(self.keyBits, fill: storage.narrow(panelFill)) : self.keyBits
        if keyPanels {
            let panelCount = Int64(panelCount), stride = Int64(panelStride)
            params.key_layout = panelWidth == 64 ? ATTN_KEY_LAYOUT_PANELS64 : ATTN_KEY_LAYOUT_PANELS
            params.key_strides = (Int64(kvHeads) * panelCount * stride, panelCount * stride, stride, 1)
        }
        return query.withUnsafeBufferPointer { q in
            key.withUnsafeBufferPointer { k in
                value.withUnsafeBufferPointer { v in
                    keyBits.withUnsafeBufferPointer { kb in
                        valueBits.withUnsafeBufferPointer { vb in
                            keepBytes.withUnsafeBufferPointer { keepBuffer in
                                additiveValues.withUnsafeBufferPointer { additiveBuffer in
                                    params.query = q.baseAddress
                                    if storage == .float32 {
                                        params.key = k.baseAddress
                                        params.value = v.baseAddress
                                    } else {
                                        params.key = kb.baseAddress.map { UnsafePointer(OpaquePointer($0)) }
                                        params.value = vb.baseAddress.map { UnsafePointer(OpaquePointer($0)) }
                                    }
                                    if keep != nil {
                                        params.mask_kind = ATTN_MASK_KEEP
                                        params.mask = UnsafeRawPointer(keepBuffer.baseAddress)
                                        params.mask_strides = maskStrides
                                    } else if additive != nil {
                                        params.mask_kind = ATTN_MASK_ADDITIVE
                                        params.mask = UnsafeRawPointer(additiveBuffer.baseAddress)
                                        params.mask_strides = maskStrides
                                    }
                                    return body(&params)
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    var rows: Int { batch * queryHeads * queryLength }

    /// The whole call, through its plan on `driver`.
    func run() -> Result {
        var output = [Float](repeating: KernelCall.sentinel, count: rows * valueDim)
        var logsumexp = [Float](repeating: KernelCall.sentinel, count: rows)
        var stacked: Int64 = 0
        let status = output.withUnsafeMutableBufferPointer { out in
            logsumexp.withUnsafeMutableBufferPointer { lse in
                withParams(output: out.baseAddress, logsumexp: lse.baseAddress) { params -> attn_status in
                    stacked = attn_sdpa_stacked_heads(&params)
                    var plan: OpaquePointer?
                    let status = attn_sdpa_plan_create(&params, &plan)
                    guard status == ATTN_OK, let plan else { return status }
                    defer { attn_plan_destroy(plan) }
                    return KernelThreading.drive(plan, driver: driver)
                }
            }
        }
        return Result(status: status, output: output, logsumexp: logsumexp, stackedHeads: stacked)
    }

    /// The kernel's state over keys [begin, end), through the partial plan on `driver`.
    func runPartial(_ begin: Int, _ end: Int) -> (status: attn_status, state: AttentionPartial.KernelState) {
        var state = AttentionPartial.KernelState(
            rowMax: Array(repeating: KernelCall.sentinel, count: rows),
            rowSum: Array(repeating: KernelCall.sentinel, count: rows),
            accumulator: Array(repeating: KernelCall.sentinel, count: rows * valueDim),
            dropoutProbability: dropout)
        let status = state.rowMax.withUnsafeMutableBufferPointer { m in
            state.rowSum.withUnsafeMutableBufferPointer { l in
                state.accumulator.withUnsafeMutableBufferPointer { o in
                    withParams(output: nil, logsumexp: nil) { params -> attn_status in
                        var partial = attn_partial(row_max: m.baseAddress, row_sum: l.baseAddress, accumulator: o.baseAddress)
                        var plan: OpaquePointer?
                        let status = attn_sdpa_partial_plan_create(&params, Int64(begin), Int64(end), &partial, &plan)
                        guard status == ATTN_OK, let plan else { return status }
                        defer { attn_plan_destroy(plan) }
                        return KernelThreading.drive(plan, driver: driver)
                    }
                }
            }
        }
        return (status, state)
    }
}

/// The drivers this build can run (OpenMP only where compiled in).
let availableDrivers: [AttentionThreading.Driver] =
    AttentionThreading.isOpenMPAvailable ? [.openMP, .dispatch] : [.dispatch]
