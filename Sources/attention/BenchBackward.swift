import Attention

/// `attention bench --backward`: the backward pass timed on the same grid.
///
/// The forward runs once, outside the timing (a training step keeps its output
/// and logsumexp); each timed call is `scaledDotProductAttentionBackward`. FLOPs
/// follow FlashAttention-2's convention: 2.5× the forward's (five L×S×D products
/// against two), halved when causal with Lq = Lk. The fused kernel does those
/// five when it has at least two (batch, kv head) tasks a thread, else seven (S
/// and dP recomputed for dQ, see CKernels/sdpa_backward.c).
extension BenchCommand {
    /// 2.5 for the backward, 1 for the forward.
    var flopFactor: Double { backward ? 2.5 : 1 }

    /// A closure running the backward of one case, the forward computed once.
    func backwardCall(
        queries q: Tensor<Float>, keys k: Tensor<Float>, values v: Tensor<Float>, mask: AttentionMask,
        backend: AttentionBackend, threads: Int
    ) throws -> () throws -> Void {
        let forward = try scaledDotProductAttentionWithLogsumexp(
            queries: q, keys: k, values: v, mask: mask, backend: backend, threads: threads)
        let outputGradient = try Tensor<Float>.randomNormal(forward.output.shape, seed: 4)
        return {
            _ = try scaledDotProductAttentionBackward(
                queries: q, keys: k, values: v, output: forward.output, logsumexp: forward.logsumexp,
                outputGradient: outputGradient, mask: mask, backend: backend, threads: threads)
        }
    }
}
