import XCTest
@testable import Attention

/// Independent seeds (issue 11, item 3): a layer's parameters come from one
/// stream keyed by its seed, so no two layers with different seeds share a
/// matrix (seed 1's W_q used to be seed 0's W_k) and no two matrices of one
/// layer are equal.
final class LayerSeedTests: XCTestCase {
    /// Every weight matrix and bias of the four trainable layers for one seed,
    /// labelled; all are 6 × 6 (biases 6) so that any two can be compared.
    private func parameters(seed: UInt64) throws -> [(label: String, values: [Float])] {
        var result: [(String, [Float])] = []
        func add(_ kind: String, _ name: String, _ linear: Linear?) {
            guard let linear else { return }
            result.append(("\(kind)(seed \(seed)).\(name).weight", linear.weight.scalars))
            if let bias = linear.bias { result.append(("\(kind)(seed \(seed)).\(name).bias", bias.scalars)) }
        }
        let mha = try MultiHeadAttention(dIn: 6, dOut: 6, heads: 2, qkvBias: true, seed: seed)
        for (name, linear) in [("query", mha.query), ("key", mha.key), ("value", mha.value), ("out", mha.outputProjection)] {
            add("MultiHeadAttention", name, linear)
        }
        let single = try SelfAttention(dIn: 6, dOut: 6, qkvBias: true, seed: seed)
        for (name, linear) in [("query", single.query), ("key", single.key), ("value", single.value)] {
            add("SelfAttention", name, linear)
        }
        let wrapper = try MultiHeadAttentionWrapper(dIn: 6, dOut: 6, contextLength: 4, numHeads: 3, qkvBias: true, seed: seed)
        for (index, head) in wrapper.heads.enumerated() {
            for (name, linear) in [("query", head.query), ("key", head.key), ("value", head.value)] {
                add("MultiHeadAttentionWrapper", "heads[\(index)].\(name)", linear)
            }
        }
        return result
    }

    func testNoTwoMatricesAreEqualAcrossSeedsZeroToNineAndWithinALayer() throws {
        var seen: [[UInt32]: (label: String, seed: UInt64)] = [:]
        var checked = 0
        for seed in UInt64(0)...9 {
            let all = try parameters(seed: seed)
            // Within a seed, the same-seed layers of other types may (by design)
            // repeat a matrix: SelfAttention's W_q is MultiHeadAttention's, and
            // the wrapper's head 0 is CausalSelfAttention(seed:). Check within
            // each layer, then across seeds.
            for layer in ["MultiHeadAttention(", "SelfAttention(", "MultiHeadAttentionWrapper("] {
                let own = all.filter { $0.label.hasPrefix(layer) }
                let weights = own.filter { $0.label.hasSuffix(".weight") }
                XCTAssertEqual(Set(weights.map { $0.values.map(\.bitPattern) }).count, weights.count,
                               "two weight matrices of one \(layer)seed \(seed)) are equal")
            }
            for (label, values) in all {
                let key = values.map(\.bitPattern)
                if let earlier = seen[key] {
                    XCTAssertEqual(earlier.seed, seed, "\(label) equals \(earlier.label)")
                } else {
                    seen[key] = (label, seed)
                }
                checked += 1
            }
        }
        XCTAssertGreaterThan(checked, 300)
    }

    func testTheOldShiftIsGoneForEveryLayer() throws {
        for seed in UInt64(0)..<4 {
            let a = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: seed)
            let b = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: seed + 1)
            XCTAssertNotEqual(b.query.weight, a.key.weight)
            XCTAssertNotEqual(b.key.weight, a.value.weight)
            XCTAssertNotEqual(b.value.weight, a.outputProjection?.weight)
            let c = try SelfAttention(dIn: 8, dOut: 8, seed: seed), d = try SelfAttention(dIn: 8, dOut: 8, seed: seed + 1)
            XCTAssertNotEqual(d.query.weight, c.key.weight)
            XCTAssertNotEqual(d.key.weight, c.value.weight)
            let e = try CausalSelfAttention(dIn: 8, dOut: 8, contextLength: 4, seed: seed)
            let f = try CausalSelfAttention(dIn: 8, dOut: 8, contextLength: 4, seed: seed + 1)
            XCTAssertNotEqual(f.query.weight, e.key.weight)
            // The wrapper's heads used to be 16 seeds apart.
            let w = try MultiHeadAttentionWrapper(dIn: 8, dOut: 8, contextLength: 4, numHeads: 2, seed: seed)
            let other = try MultiHeadAttentionWrapper(dIn: 8, dOut: 8, contextLength: 4, numHeads: 2, seed: seed + 16)
            XCTAssertNotEqual(w.heads[1].query.weight, other.heads[0].query.weight)
        }
    }

    func testSameSeedReproducesAndTheDocumentedNumberingHolds() throws {
        let a = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, qkvBias: true, seed: 42)
        let b = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, qkvBias: true, seed: 42)
        XCTAssertEqual(a.query.weight, b.query.weight)
        XCTAssertEqual(a.outputProjection?.bias, b.outputProjection?.bias)
        // A Linear alone is matrix 0 of its seed; the wrapper's head 0 is the causal layer of its seed.
        XCTAssertEqual(try Linear(inFeatures: 8, outFeatures: 8, bias: true, seed: 42).weight, a.query.weight)
        let wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 4, numHeads: 2, seed: 5)
        let causal = try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 4, seed: 5)
        XCTAssertEqual(wrapper.heads[0].key.weight, causal.key.weight)
        // PyTorch's bound: |w| ≤ 1/√in, and the draws fill the interval.
        let weights = try Linear(inFeatures: 64, outFeatures: 64, seed: 3).weight.scalars
        XCTAssertTrue(weights.allSatisfy { abs($0) <= 1.0 / 8 })
        XCTAssertGreaterThan(weights.max()!, 0.12)
        XCTAssertLessThan(weights.min()!, -0.12)
        XCTAssertEqual(weights.reduce(0, +) / Float(weights.count), 0, accuracy: 0.01)
    }
}
