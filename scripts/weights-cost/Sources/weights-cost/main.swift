// The cost of scaledDotProductAttentionWeights (the float32 path) against a forward call
// and against the float64 oracle's weights, measured in one run (medians of 7 runs; the
// oracle once, on the smaller shapes). Argument: the thread count (default 1).
import Attention
import Foundation

// One run: median of forward vs weights (fused float32 path) vs the float64 oracle's weights.
func median(_ body: () throws -> Void, runs: Int) rethrows -> Double {
    try body()
    var times: [Double] = []
    for _ in 0..<runs {
        let start = DispatchTime.now().uptimeNanoseconds
        try body()
        times.append(Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9)
    }
    times.sort()
    return times[times.count / 2]
}
let threads = Int(CommandLine.arguments.dropFirst().first ?? "1") ?? 1
print("shape B,H,L,L,D  causal  forward ms  weights ms  weights/forward  oracle-weights ms  oracle/forward   (threads \(threads))")
for (b, h, l, d) in [(1, 12, 128, 64), (1, 12, 512, 64), (1, 12, 1024, 64), (4, 12, 512, 64), (1, 32, 256, 128)] {
    for causal in [false, true] {
        let q = try Tensor<Float>.randomNormal([b, h, l, d], seed: 1)
        let k = try Tensor<Float>.randomNormal([b, h, l, d], seed: 2)
        let v = try Tensor<Float>.randomNormal([b, h, l, d], seed: 3)
        let mask: AttentionMask = causal ? .causal(.topLeft) : .none
        let forward = try median({ _ = try scaledDotProductAttention(queries: q, keys: k, values: v, mask: mask, threads: threads) }, runs: 7)
        let weights = try median({ _ = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: mask, threads: threads) }, runs: 7)
        var oracleText = "—", ratioText = "—"
        if l <= 512 && b == 1 && d == 64 {
            let oracle = try median({ _ = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: mask, backend: .reference) }, runs: 1)
            oracleText = String(format: "%.1f", oracle * 1e3)
            ratioText = String(format: "%.1f×", oracle / forward)
        }
        let f = String(format: "%9.2f  %10.2f  %14.2f×", forward * 1e3, weights * 1e3, weights / forward)
        print("\(b),\(h),\(l),\(l),\(d)  \(causal ? "yes" : " no")  \(f)  \(oracleText)  \(ratioText)")
    }
}
