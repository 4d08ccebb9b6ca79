import ArgumentParser
import Attention

/// The options of one attention call that `attention sdpa` and
/// `attention sdpa-backward` share: the mask, the scale and dropout.
struct SDPAOptions: ParsableArguments {
    @Option(name: .long, help: "Causal mask: top-left (PyTorch is_causal) or bottom-right (key/value cache).")
    var causal: CausalChoice?

    @Option(name: .long, help: "Scale of the logits (default 1/sqrt(D)); any finite value (negative: --scale=-2).")
    var scale: Float?

    @Option(name: .long, help: "Dropout probability on the attention weights, in [0, 1).")
    var dropout: Float = 0

    @Option(name: .long, help: "Seed of the dropout generator (Philox-4x32-10).")
    var seed: UInt64 = 0

    /// Refuses a value the call would refuse, naming the option the user typed
    /// (the library's error names its own argument, `dropoutProbability`).
    ///
    /// - Parameter threads: the command's `--threads`.
    /// - Throws: `CommandError` (one line) for a non-finite `--scale`, a
    ///   `--dropout` outside [0, 1) or a `--threads` below 1.
    func check(threads: Int?) throws {
        if let scale, !scale.isFinite {
            throw CommandError("--scale: expected a finite number, got \(scale)")
        }
        guard dropout >= 0, dropout < 1 else {
            throw CommandError("--dropout: expected a probability in [0, 1), got \(dropout)")
        }
        if let threads, threads < 1 {
            throw CommandError("--threads: expected at least 1, got \(threads)")
        }
    }

    /// How `--output` is written (OutputFile), for the commands' discussions.
    static let outputFileDiscussion = """
        A regular file (new or existing) is replaced atomically: written to a temporary file in its folder, \
        flushed and renamed, keeping an existing file's mode and owner (written in place instead when a rename \
        cannot keep them: other hard links, another owner, a folder that refuses the temporary file), so a \
        failed run leaves no partial file at a path that had none; a symbolic link is written through to its \
        target; a FIFO or character device is streamed to; a directory, socket or block device is refused.
        """

    /// The mask of a call: `mask_keep` or `mask_additive` from the file, or `--causal`.
    ///
    /// - Parameters:
    ///   - file: the input file.
    ///   - input: its path, for the messages.
    /// - Throws: `CommandError` when the file holds both masks, or a mask and
    ///   `--causal` is given (as in PyTorch, the two do not combine);
    ///   `SafetensorsError` for a mask tensor of the wrong dtype.
    func mask(in file: SafetensorsFile, named input: String) throws -> AttentionMask {
        let names = Set(file.tensorNames)
        if names.contains("mask_keep") && names.contains("mask_additive") {
            throw CommandError("\(input): holds both mask_keep and mask_additive; keep one")
        }
        var mask: AttentionMask = .none
        if names.contains("mask_keep") { mask = .keep(try file.boolTensor("mask_keep")) }
        if names.contains("mask_additive") { mask = .additive(try file.floatTensor("mask_additive")) }
        if let causal {
            if case .none = mask {
                mask = .causal(causal.alignment)
            } else {
                throw CommandError("--causal cannot be combined with the mask in \(input) (as in PyTorch)")
            }
        }
        return mask
    }
}

/// The `--causal` option.
enum CausalChoice: String, ExpressibleByArgument, CaseIterable {
    case topLeft = "top-left", bottomRight = "bottom-right"
    var alignment: CausalAlignment { self == .topLeft ? .topLeft : .bottomRight }
}
