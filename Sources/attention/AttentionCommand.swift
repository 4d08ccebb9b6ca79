import ArgumentParser
import Attention
import CAttention

@main
struct AttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Fused scaled-dot-product attention on the CPU: demo, functional op and benchmarks.",
        discussion: """
            Kernel path: \(String(cString: attn_kernel_path())), OpenMP: \(attn_has_openmp() != 0 ? "on" : "off"), \
            default threads: \(attn_default_threads()) (set OMP_NUM_THREADS to change).
            """,
        subcommands: [DemoCommand.self, SDPACommand.self, BenchCommand.self],
        defaultSubcommand: DemoCommand.self
    )
}
