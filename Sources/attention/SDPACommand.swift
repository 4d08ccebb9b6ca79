import ArgumentParser
import Attention
import Foundation

/// `attention sdpa`: the functional op on tensors from a safetensors file.
struct SDPACommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sdpa",
        abstract: "Run scaled-dot-product attention on q, k, v from a safetensors file.",
        discussion: """
            The input holds q [B, Hq, Lq, D], k [B, Hkv, Lk, D], v [B, Hkv, Lk, Dv] (F32, F16, BF16, F64 or F8_*), and \
            optionally mask_keep (BOOL or any integer dtype, non-zero = attend) or mask_additive (as q), each broadcastable \
            to [B, Hq, Lq, Lk]. The output file gets out [B, Hq, Lq, Dv] and logsumexp [B, Hq, Lq]. \
            \(SDPAOptions.outputFileDiscussion)
            F16, BF16 and F8 inputs are widened to float32 exactly and F64 inputs rounded to the nearest float32 \
            before the float32 kernel runs; out and logsumexp are always F32.
            """)

    @Option(name: .long, help: "Input safetensors file with q, k, v (F32, F16, BF16 or F64) and mask_keep or mask_additive.")
    var input: String

    @Option(name: .long, help: "Output safetensors file for out and logsumexp.")
    var output: String

    @OptionGroup var call: SDPAOptions

    @Option(name: .long, help: "Threads for the fused kernel (default: OMP_NUM_THREADS or the cores under OpenMP, the active processors under Dispatch).")
    var threads: Int?

    @Option(name: .long, help: "Backend: fused (the C kernel) or reference (the Swift oracle).")
    var backend: BackendChoice = .fused

    @Option(name: .long, help: "Name of a floating-point tensor in the input to compare out with (e.g. out_ref64); prints max |Δ|.")
    var compare: String?

    @Flag(name: .customLong("print"), help: "Print out in PyTorch's format (long tensors summarised with ...).")
    var printOutput = false

    @Flag(name: .customLong("weights"), help: "Print the attention weights, from the reference path (small shapes only).")
    var printWeights = false

    func run() throws {
        try call.check(threads: threads)
        let file = try SafetensorsFile(contentsOf: URL(fileURLWithPath: input))
        let mask = try call.mask(in: file, named: input)
        let result = try scaledDotProductAttentionWithLogsumexp(
            queries: file.floatTensor("q"), keys: file.floatTensor("k"), values: file.floatTensor("v"),
            mask: mask, scale: call.scale, dropoutProbability: call.dropout, dropoutSeed: call.seed,
            backend: backend.backend, threads: threads)
        // Compare before writing, so that a failed comparison leaves no output file.
        var comparison: String?
        if let compare {
            let expected = try file.floatTensor(compare)
            guard let difference = result.output.maxAbsoluteDifference(to: expected) else {
                throw CommandError("\(compare) has shape \(expected.shape), out has \(result.output.shape)")
            }
            comparison = "max |out - \(compare)| = \(difference)"
        }
        let printed = try printedTensors(output: result.output, file: file, mask: mask)
        // The result is written from where it is, without a file image in memory;
        // a FIFO whose reader goes away is an error (EPIPE), not a silent exit.
        signal(SIGPIPE, SIG_IGN)
        try SafetensorsFile.write(
            floatTensors: [("out", result.output), ("logsumexp", result.logsumexp)],
            metadata: ["producer": "attention sdpa", "input": input], to: URL(fileURLWithPath: output))
        print("wrote out \(result.output.shape) and logsumexp \(result.logsumexp.shape) to \(output)")
        if let comparison { print(comparison) }
        if let printed { print(printed) }
    }
}
