import Foundation

/// The sequence of dropout keys of one layer: every training call takes the
/// next key, so successive calls drop different cells, and the whole sequence
/// follows from the seed.
///
/// Call `n` (counting from 0 since the stream was made) uses
/// ``key(seed:call:)``: the seed itself for call 0 — so a layer's first
/// training call after `dropoutSeed = s` drops exactly the cells of
/// `scaledDotProductAttention(…, dropoutSeed: s)` — and for later calls a key
/// drawn from Philox-4x32-10 under the seed at the counter `(n low, n high,
/// 0xD20F_0117, 0)`, so that the keys of two seeds are unrelated (not shifts
/// of each other). The fused kernel and the oracle drop the same cells for the
/// same key, so any call can be replayed:
///
/// ```swift
/// var layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, dropoutProbability: 0.1)
/// layer.isTraining = true
/// layer.dropoutSeed = 7                 // a stream of its own, at call 0
/// let y0 = try layer(x)                 // call 0: key 7
/// let y1 = try layer(x)                 // call 1: other cells
/// let key = layer.lastDropoutKey!       // the key of call 1
/// layer.dropoutStream.position = 1      // replay call 1 …
/// let again = try layer(x)              // … bit for bit y1
/// var oracle = layer                    // or on the oracle, same cells:
/// oracle.backend = .reference
/// oracle.dropoutStream.position = 1
/// let checked = try oracle(x)
/// // and the weights of that call: layer.attentionWeights(…) after it, or
/// // scaledDotProductAttentionWeights(…, dropoutSeed: key)
/// ```
///
/// A stream is a reference shared by copies of a layer, as PyTorch's
/// generator is shared by its modules, and is safe to use from several
/// threads (each call takes its own key). Changing a layer's configuration —
/// `backend`, `threads`, `isTraining`, `dropoutProbability` — gives that copy
/// a stream of its own at the same position (so `var b = a; b.backend =
/// .reference` replays `a`'s next calls), and setting `dropoutSeed` a new one
/// at call 0.
///
/// A layer made without a dropout seed gets ``nextDefaultSeed()``: layer `k`
/// created in the process (counting from 0) gets a seed mixed from `k`, so two
/// layers never drop the same cells, and a program that creates its layers in
/// the same order gets the same seeds; set `dropoutSeed` for reproducibility
/// that does not depend on that order.
public final class DropoutStream: @unchecked Sendable {
    /// The key of call 0; later keys derive from it.
    public let seed: UInt64
    private let lock = NSLock()
    private var nextCall: UInt64
    private var last: UInt64?

    /// A stream at call `position` (default 0).
    ///
    /// - Parameters:
    ///   - seed: the key of call 0 (see ``key(seed:call:)``).
    ///   - position: the index of the next call.
    public init(seed: UInt64, position: UInt64 = 0) {
        self.seed = seed
        self.nextCall = position
    }

    /// The index of the next training call; set it to replay a call (or skip ahead).
    public var position: UInt64 {
        get { lock.withLock { nextCall } }
        set { lock.withLock { nextCall = newValue } }
    }

    /// The key the most recent call took, or nil before the first.
    public var lastKey: UInt64? { lock.withLock { last } }

    /// The key of call `call` of this stream (does not advance).
    ///
    /// - Parameter call: the index of a training call, 0 for the first.
    /// - Returns: the dropout seed that call uses.
    public func key(forCall call: UInt64) -> UInt64 { Self.key(seed: seed, call: call) }

    /// Takes the next call's key and advances.
    public func next() -> UInt64 {
        lock.withLock {
            let key = Self.key(seed: seed, call: nextCall)
            nextCall &+= 1
            last = key
            return key
        }
    }

    /// A stream with the same seed and position, not shared.
    public func copy() -> DropoutStream {
        lock.withLock {
            let copy = DropoutStream(seed: seed, position: nextCall)
            copy.last = last
            return copy
        }
    }

    /// The dropout key of call `call` of the stream keyed by `seed`: `seed` for
    /// call 0, else the first two words of Philox-4x32-10 under `seed` at the
    /// counter `(call low 32 bits, call high 32 bits, 0xD20F_0117, 0)`.
    public static func key(seed: UInt64, call: UInt64) -> UInt64 {
        if call == 0 { return seed }
        let words = Philox.philox4x32_10(
            counter: (UInt32(truncatingIfNeeded: call), UInt32(truncatingIfNeeded: call >> 32), 0xD20F_0117, 0),
            key: (UInt32(truncatingIfNeeded: seed), UInt32(truncatingIfNeeded: seed >> 32)))
        return UInt64(words.0) | UInt64(words.1) << 32
    }

    private static let defaultCounter = DefaultSeedCounter()

    /// The default dropout seed of the next layer created without one: the
    /// SplitMix64 finaliser of `k · 0x9E3779B97F4A7C15` for the `k`-th request
    /// in this process (k = 0, 1, …), so that every layer gets its own.
    public static func nextDefaultSeed() -> UInt64 {
        var mixer = SplitMix64(seed: defaultCounter.take() &* 0x9E37_79B9_7F4A_7C15)
        return mixer.next()
    }
}

/// The process-wide count of default dropout seeds handed out.
private final class DefaultSeedCounter: @unchecked Sendable {
    private let lock = NSLock()
    private var count: UInt64 = 0

    func take() -> UInt64 {
        lock.withLock {
            defer { count &+= 1 }
            return count
        }
    }
}

extension DropoutStream {
    /// The key of a layer call: a training forward call takes the next one;
    /// an inspection (weights, scores) reuses the last call's key, or — before
    /// the first call — the key the first call will take, without advancing.
    func key(advancing: Bool) -> UInt64 {
        advancing ? next() : (lastKey ?? key(forCall: position))
    }
}
