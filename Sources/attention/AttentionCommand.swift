import ArgumentParser
import Attention
import CAttention

@main
struct AttentionCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "attention",
        abstract: "Fused scaled-dot-product attention on the CPU: demo, functional op and benchmarks.",
        discussion: """
            Kernel path: \(String(cString: attn_kernel_path())) (ATTENTION_KERNEL_PATH), OpenMP compiled in: \
            \(AttentionThreading.isOpenMPAvailable ? "yes" : "no"), driver: \(AttentionThreading.driver.rawValue) \
            (ATTENTION_THREADING=openmp|dispatch), default threads: \(AttentionThreading.defaultThreadCount) \
            (OMP_NUM_THREADS under OpenMP), idle threads: \(AttentionThreading.idleWait.rawValue) \
            (ATTENTION_IDLE_WAIT=spin|sleep|runtime).
            """,
        subcommands: [DemoCommand.self, SDPACommand.self, SDPABackwardCommand.self, TrainCommand.self, BenchCommand.self],
        defaultSubcommand: DemoCommand.self
    )
}
