import ArgumentParser
import Attention
import AttentionExamples
import Foundation

/// `attention train`: fits one causal multi-head attention layer on a task that
/// only attention can solve, printing the loss as it falls and the attention
/// pattern before and after.
///
/// The task: a sequence of random tokens; at position i ≥ lag the target is the
/// token at i − lag ("copy the token `lag` positions back"). The input of each
/// position is one-hot(token) ⊕ one-hot(position), so the layer must learn, in
/// W_q and W_k, to make position i attend to position i − lag, and in W_v, the
/// output projection and the read-out, to carry the token over. Chance is
/// ln(vocabulary) nats; the run fails (exit 1) unless the held-out loss ends
/// below `--threshold`.
struct TrainCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "train",
        abstract: "Train a causal multi-head attention layer to copy the token k positions back; show what it learned.",
        discussion: """
            Model: x = one-hot(token) ⊕ one-hot(position) → MultiHeadAttention (causal, with output \
            projection; the book's class) → Linear read-out → softmax over the vocabulary; cross-entropy \
            at positions ≥ lag; Adam. Everything runs on the fused forward and backward kernels. The \
            attention weights of one held-out sequence are shown before and after training as a \
            heatmap (the learning heatmaps of `attention demo`: numbers when NO_COLOR is set or the output is not a terminal); --svg DIR also \
            writes them as SVG files. Exits with status 1 if the final held-out loss is not below \
            --threshold.
            """)

    @Option(name: .long, help: "The lag k: the target at position i is the token at i - k.")
    var lag: Int = 3

    @Option(name: .long, help: "Vocabulary size (chance loss is ln of it).")
    var vocabulary: Int = 8

    @Option(name: .long, help: "Sequence length.")
    var length: Int = 12

    @Option(name: .long, help: "Model width dOut (split into --heads heads).")
    var width: Int = 32

    @Option(name: .long, help: "Attention heads.")
    var heads: Int = 4

    @Option(name: .long, help: "Training steps.")
    var steps: Int = 400

    @Option(name: .long, help: "Sequences per step.")
    var batch: Int = 32

    @Option(name: .long, help: "Adam learning rate.")
    var learningRate: Float = 0.01

    @Option(name: .long, help: "The held-out loss (nats) the run must end below.")
    var threshold: Double = 0.1

    @Option(name: .long, help: "Seed of the data and of the initial weights.")
    var seed: UInt64 = 1

    @Option(name: .long, help: "Threads for the kernels (default: the driver's).")
    var threads: Int?

    @Option(name: .long, help: "Directory to write attention-before.svg and attention-after.svg to.")
    var svg: String?

    func validate() throws {
        guard lag >= 1, length > lag else { throw ValidationError("--lag must be at least 1 and below --length (\(length))") }
        guard vocabulary >= 2 else { throw ValidationError("--vocabulary must be at least 2") }
        guard heads >= 1, width % heads == 0 else { throw ValidationError("--heads must divide --width (\(width))") }
        guard steps >= 0, batch >= 1 else { throw ValidationError("--steps must be ≥ 0 and --batch ≥ 1") }
    }

    func run() throws {
        let features = vocabulary + length
        var attention = try MultiHeadAttention(
            dIn: features, dOut: width, heads: heads, causal: .topLeft, contextLength: length, seed: seed)
        attention.threads = threads
        var readout = try Linear(inFeatures: width, outFeatures: vocabulary, seed: seed &+ 100)
        var adam = Adam(learningRate: learningRate)
        var data = TokenStream(seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ 7)
        let heldOut = data.next(batch: 64, length: length, vocabulary: vocabulary)
        let probe = data.next(batch: 1, length: length, vocabulary: vocabulary)
        let chance = log(Double(vocabulary))

        print("task: copy the token \(lag) positions back; vocabulary \(vocabulary), length \(length); "
              + "one causal MultiHeadAttention (\(heads) heads, width \(width)) + Linear read-out, Adam lr \(learningRate)")
        print(String(format: "chance loss ln %d = %.3f nats; the run must end below %.3f", vocabulary, chance, threshold))
        let before = try attentionPattern(attention, probe)
        let started = Date()
        let terminal = isatty(1) != 0
        for step in 0...steps {
            if step > 0 {
                let tokens = data.next(batch: batch, length: length, vocabulary: vocabulary)
                let x = try inputs(tokens)
                let (hidden, state) = try attention.forwardForTraining(x)
                let logits = try readout(hidden, threads: threads)
                let (_, dLogits) = crossEntropy(logits, tokens)
                let readoutGradients = try readout.backward(input: hidden, outputGradient: dLogits, threads: threads)
                let gradients = try attention.backward(state, outputGradient: readoutGradients.input)
                try attention.update(with: gradients, using: &adam, slot: 0)
                try readout.update(with: readoutGradients.parameters, using: &adam, slot: 8)
            }
            if step % 25 == 0 || step == steps {
                let loss = try evaluate(attention, readout, heldOut)
                let line = String(format: "step %4d/%d  held-out loss %.4f nats  (%.1f s)", step, steps, loss,
                                  Date().timeIntervalSince(started))
                if terminal { print("\r\(line)", terminator: step == steps ? "\n" : ""); fflush(nil) } else { print(line) }
            }
        }
        let finalLoss = try evaluate(attention, readout, heldOut)
        let after = try attentionPattern(attention, probe)

        print("\nattention of head 0 on a held-out sequence (rows: query position, columns: key position)")
        let colour = TerminalColour.detect(isTerminal: isatty(1) != 0, environment: ProcessInfo.processInfo.environment)
        print("before training:")
        print(Heatmap.terminal(try labelled(before, title: "before training"), colour: colour))
        print("after training (position i should look at i - \(lag)):")
        print(Heatmap.terminal(try labelled(after, title: "after training"), colour: colour))
        print(String(format: "mean attention on key i - %d, over rows i >= %d: before %.3f, after %.3f (all heads: %.3f)",
                     lag, lag, lagMass(before), lagMass(after), try allHeadsLagMass(attention, probe)))
        if let svg {
            let directory = URL(fileURLWithPath: svg, isDirectory: true)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            for (name, pattern) in [("attention-before.svg", before), ("attention-after.svg", after)] {
                let text = Heatmap.svg(try labelled(pattern, title: "head 0, \(name)"), subtitle: "copy the token \(lag) positions back",
                                       rowAxis: "query position i", columnAxis: "key position j")
                try text.write(to: directory.appendingPathComponent(name), atomically: true, encoding: .utf8)
            }
            print("wrote attention-before.svg and attention-after.svg to \(svg)")
        }
        let verdict = finalLoss < threshold ? "below" : "NOT below"
        print(String(format: "final held-out loss %.4f nats, %@ the threshold %.3f (chance %.3f)", finalLoss, verdict, threshold, chance))
        if finalLoss >= threshold { throw ExitCode.failure }
    }

    /// [B, L, V + L]: one-hot token ⊕ one-hot position.
    func inputs(_ tokens: [[Int]]) throws -> Tensor<Float> {
        let features = vocabulary + length
        var x = [Float](repeating: 0, count: tokens.count * length * features)
        for (b, sequence) in tokens.enumerated() {
            for (i, token) in sequence.enumerated() {
                x[(b * length + i) * features + token] = 1
                x[(b * length + i) * features + vocabulary + i] = 1
            }
        }
        return try Tensor(shape: [tokens.count, length, features], scalars: x)
    }

    /// Mean cross-entropy over positions i ≥ lag (target: token i − lag) and its
    /// gradient with respect to the logits [B, L, V]: (softmax − one-hot) / count.
    func crossEntropy(_ logits: Tensor<Float>, _ tokens: [[Int]]) -> (Double, Tensor<Float>) {
        var gradient = [Float](repeating: 0, count: logits.count)
        var total = 0.0
        let count = tokens.count * (length - lag)
        for (b, sequence) in tokens.enumerated() {
            for i in lag..<length {
                let row = (b * length + i) * vocabulary
                let z = logits.scalars[row..<(row + vocabulary)]
                let top = z.max() ?? 0
                let sum = z.reduce(0.0) { $0 + exp(Double($1 - top)) }
                let target = sequence[i - lag]
                total += log(sum) - Double(logits.scalars[row + target] - top)
                for c in 0..<vocabulary {
                    let p = exp(Double(logits.scalars[row + c] - top)) / sum
                    gradient[row + c] = Float((p - (c == target ? 1 : 0)) / Double(count))
                }
            }
        }
        return (total / Double(count), try! Tensor(shape: logits.shape, scalars: gradient))
    }

    func evaluate(_ attention: MultiHeadAttention, _ readout: Linear, _ tokens: [[Int]]) throws -> Double {
        crossEntropy(try readout(try attention(try inputs(tokens)), threads: threads), tokens).0
    }

    /// Head 0's weights [L, L] on one sequence.
    func attentionPattern(_ attention: MultiHeadAttention, _ tokens: [[Int]]) throws -> [[Float]] {
        let x = try inputs(tokens)
        let weights = try attention.attentionWeights(query: x, key: x, value: x)  // [1, H, L, L]
        return (0..<length).map { i in (0..<length).map { j in weights[0, 0, i, j] } }
    }

    func allHeadsLagMass(_ attention: MultiHeadAttention, _ tokens: [[Int]]) throws -> Double {
        let x = try inputs(tokens)
        let weights = try attention.attentionWeights(query: x, key: x, value: x)
        var total = 0.0
        for h in 0..<heads {
            for i in lag..<length { total += Double(weights[0, h, i, i - lag]) }
        }
        return total / Double(heads * (length - lag))
    }

    func lagMass(_ pattern: [[Float]]) -> Double {
        (lag..<length).reduce(0.0) { $0 + Double(pattern[$1][$1 - lag]) } / Double(length - lag)
    }
}

/// Random token sequences from SplitMix64, so a run reproduces.
struct TokenStream {
    private var generator: SplitMix64
    init(seed: UInt64) { generator = SplitMix64(seed: seed) }

    mutating func next(batch: Int, length: Int, vocabulary: Int) -> [[Int]] {
        (0..<batch).map { _ in (0..<length).map { _ in Int(generator.next() % UInt64(vocabulary)) } }
    }
}

extension TrainCommand {
    /// The pattern as the learning heatmaps take it: rows and columns named by position.
    func labelled(_ pattern: [[Float]], title: String) throws -> LabelledMatrix {
        let labels = (0..<pattern.count).map { "\($0)" }
        return try LabelledMatrix(
            title: title, values: Tensor(shape: [pattern.count, pattern.count], scalars: pattern.flatMap { $0 }),
            rowLabels: labels, columnLabels: labels, isAttentionMap: true)
    }
}
