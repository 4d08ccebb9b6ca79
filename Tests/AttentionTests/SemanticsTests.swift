import CAttention
import Foundation
import XCTest
@testable import Attention

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The semantics table of DESIGN.md, line by line, through every entry point
/// where the line applies: the C kernel (`attn_sdpa_forward`, called directly),
/// the functional Swift API on both backends, the layers, and the `attention sdpa`
/// command. Each test name states the property; each body shows the input and the
/// exact expectation.
///
/// Pinned elsewhere and not repeated here: `Linear`'s `[out, in]` layout
/// (LayerTests.testLinearComputesXTimesWTransposedPlusBias), key padding as
/// removal of keys (LayerTests.testKeyPaddingHidesKeys…), mask broadcasting
/// against the oracle (FusedEquivalenceTests.testKeepMaskBroadcasts) and the
/// golden dead row (GoldenTests.testFullyMaskedRow…).
final class SemanticsTests: XCTestCase {
    private let backends: [AttentionBackend] = [.fused, .reference]

    // MARK: Fully masked rows: output 0, logsumexp −∞, weights 0, never NaN

    /// A way for a query row to see no key. `mask` is `[Lq, Lk]` (or causal);
    /// `poisonedKey`, when set, is masked for every row and holds NaN in K and V.
    private struct DeadRowCase: CustomStringConvertible {
        var description: String
        var queryLength: Int, keyLength: Int
        var mask: AttentionMask
        var deadRows: Set<Int>
        var poisonedKey: Int?
        let headDim = 8, valueDim = 5

        var queries: Tensor<Float> { try! Tensor(shape: [1, 1, queryLength, headDim], scalars: normals(queryLength * headDim, seed: 1)) }
        var keys: Tensor<Float> { poisoned(try! Tensor(shape: [1, 1, keyLength, headDim], scalars: normals(keyLength * headDim, seed: 2))) }
        var values: Tensor<Float> { poisoned(try! Tensor(shape: [1, 1, keyLength, valueDim], scalars: normals(keyLength * valueDim, seed: 3))) }

        private func poisoned(_ tensor: Tensor<Float>) -> Tensor<Float> {
            guard let poisonedKey else { return tensor }
            var copy = tensor
            for d in 0..<tensor.shape[3] { copy[0, 0, poisonedKey, d] = .nan }
            return copy
        }

        /// The same call on the C entry point.
        func kernelCall(threads: Int32) -> KernelCall {
            var call = KernelCall(
                queryLength: queryLength, keyLength: keyLength, headDim: headDim, valueDim: valueDim,
                query: queries.scalars, key: keys.scalars, value: values.scalars,
                scale: 1 / Float(headDim).squareRoot(), threads: threads)
            switch mask {
            case .none: break
            case let .causal(alignment): call.causal = alignment == .topLeft ? ATTN_CAUSAL_TOP_LEFT : ATTN_CAUSAL_BOTTOM_RIGHT
            case let .keep(keep): call.keep = keep.scalars.map { $0 ? 1 : 0 }
            case let .additive(additive): call.additive = additive.scalars
            }
            return call
        }
    }

    /// Row 1 keeps no key; key 69 is hidden from every row and is NaN.
    private var keepMaskDeadRow: DeadRowCase {
        let (queryLength, keyLength) = (3, 70)
        var keep = try! Tensor<Bool>(shape: [queryLength, keyLength], repeating: true)
        for j in 0..<keyLength {
            keep[1, j] = false
            keep[0, j] = j % 3 != 0
            keep[2, j] = j % 5 != 1
        }
        for i in 0..<queryLength { keep[i, 69] = false }
        return DeadRowCase(description: "keep mask, row 1 all false", queryLength: queryLength, keyLength: keyLength,
                           mask: .keep(keep), deadRows: [1], poisonedKey: 69)
    }

    /// Row 2 is −∞ everywhere; key 69 is −∞ for every row and is NaN.
    private var additiveDeadRow: DeadRowCase {
        let (queryLength, keyLength) = (3, 70)
        var additive = try! Tensor<Float>(shape: [queryLength, keyLength], repeating: 0)
        for j in 0..<keyLength {
            additive[0, j] = Float(j % 4) - 1.5
            additive[1, j] = j % 2 == 0 ? -.infinity : 0.25
            additive[2, j] = -.infinity
        }
        for i in 0..<queryLength { additive[i, 69] = -.infinity }
        return DeadRowCase(description: "additive mask, row 2 all −∞", queryLength: queryLength, keyLength: keyLength,
                           mask: .additive(additive), deadRows: [2], poisonedKey: 69)
    }

    private var deadRowCases: [DeadRowCase] {
        [
            keepMaskDeadRow,
            additiveDeadRow,
            // Query i sees keys j <= i + 3 − 5: rows 0 and 1 see none.
            DeadRowCase(description: "causal bottom-right, Lq 5 > Lk 3", queryLength: 5, keyLength: 3,
                        mask: .causal(.bottomRight), deadRows: [0, 1]),
            DeadRowCase(description: "key length 0", queryLength: 3, keyLength: 0, mask: .none, deadRows: [0, 1, 2]),
        ]
    }

    private func assertDeadRows(
        _ c: DeadRowCase, output: [Float], logsumexp: [Float], _ message: String,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        for i in 0..<c.queryLength {
            let row = Array(output[(i * c.valueDim)..<((i + 1) * c.valueDim)])
            if c.deadRows.contains(i) {
                XCTAssertEqual(row, Array(repeating: 0, count: c.valueDim), "dead row \(i) output, \(c), \(message)", file: file, line: line)
                XCTAssertEqual(logsumexp[i], -.infinity, "dead row \(i) logsumexp, \(c), \(message)", file: file, line: line)
            } else {
                XCTAssertTrue(row.allSatisfy(\.isFinite), "live row \(i) is finite: \(row), \(c), \(message)", file: file, line: line)
                XCTAssertTrue(logsumexp[i].isFinite, "live row \(i) logsumexp \(logsumexp[i]), \(c), \(message)", file: file, line: line)
            }
        }
    }

    func testFullyMaskedRowGivesZeroOutputAndLogsumexpMinusInfinityThroughTheCEntryPoint() throws {
        for c in deadRowCases {
            forEachKernelPath { path in
                for threads: Int32 in [1, 2] {
                    let result = c.kernelCall(threads: threads).run()
                    XCTAssertEqual(result.status, ATTN_OK, "\(c)")
                    assertDeadRows(c, output: result.output, logsumexp: result.logsumexp, "C, \(path), \(threads) threads")
                }
            }
        }
    }

    func testFullyMaskedRowGivesZeroOutputLogsumexpMinusInfinityAndZeroWeightsThroughTheFunctionalAPI() throws {
        for c in deadRowCases {
            for backend in backends {
                let result = try scaledDotProductAttentionWithLogsumexp(
                    queries: c.queries, keys: c.keys, values: c.values, mask: c.mask, backend: backend)
                XCTAssertEqual(result.output.shape, [1, 1, c.queryLength, c.valueDim])
                assertDeadRows(c, output: result.output.scalars, logsumexp: result.logsumexp.scalars, "\(backend)")
            }
            let weights = try Reference.scaledDotProductAttention(queries: c.queries, keys: c.keys, values: c.values, mask: c.mask).weights
            for i in c.deadRows {
                XCTAssertEqual(Array(weights.scalars[(i * c.keyLength)..<((i + 1) * c.keyLength)]),
                               Array(repeating: 0, count: c.keyLength), "dead row \(i) weights, \(c)")
            }
            XCTAssertFalse(weights.scalars.contains { $0.isNaN }, "no NaN weight, \(c)")
        }
    }

    /// `MultiHeadAttention` without output projection, so the context is the output:
    /// a row masked by the explicit mask, by bottom-right alignment with Lq > Lk, or
    /// whose keys are all padding (and hold NaN and ∞) is exactly 0, and so are its weights.
    func testFullyMaskedRowGivesZerosThroughMultiHeadAttentionForEveryKindOfMaskAndAllPaddingKeys() throws {
        func layer(causal: CausalAlignment?) throws -> MultiHeadAttention {
            try MultiHeadAttention(
                query: Linear(inFeatures: 8, outFeatures: 8, seed: 1), key: Linear(inFeatures: 8, outFeatures: 8, seed: 2),
                value: Linear(inFeatures: 8, outFeatures: 8, seed: 3), outputProjection: nil, heads: 2, causal: causal)
        }
        let query = try Tensor<Float>.randomNormal([2, 5, 8], seed: 10)
        let keyValue = try Tensor<Float>.randomNormal([2, 3, 8], seed: 11)
        var keep = try Tensor<Bool>(shape: [5, 3], repeating: true)
        for j in 0..<3 { keep[1, j] = false }
        var additive = try Tensor<Float>(shape: [5, 3], repeating: 0.5)
        for j in 0..<3 { additive[4, j] = -.infinity }
        var poisoned = keyValue
        for l in 0..<3 {
            for d in 0..<8 { poisoned[1, l, d] = [Float.nan, .infinity, -.infinity][(l + d) % 3] }
        }
        let allPaddingInBatch1 = try Tensor<Bool>(shape: [2, 3], scalars: [false, false, false, true, true, true])

        // (layer, key/value input, padding, mask, dead (batch, row) pairs)
        let cases: [(String, MultiHeadAttention, Tensor<Float>, Tensor<Bool>?, AttentionMask, [(Int, Int)])] = [
            ("keep mask row 1", try layer(causal: nil), keyValue, nil, .keep(keep), [(0, 1), (1, 1)]),
            ("additive −∞ row 4", try layer(causal: nil), keyValue, nil, .additive(additive), [(0, 4), (1, 4)]),
            ("causal bottom-right, Lq 5 > Lk 3", try layer(causal: .bottomRight), keyValue, nil, .none, [(0, 0), (0, 1), (1, 0), (1, 1)]),
            ("every key of batch 1 is padding (NaN, ±∞)", try layer(causal: nil), poisoned, allPaddingInBatch1, .none, (0..<5).map { (1, $0) }),
        ]
        for (name, base, keyValueInput, padding, mask, dead) in cases {
            for backend in backends {
                var run = base
                run.backend = backend
                let output = try run(query: query, key: keyValueInput, value: keyValueInput, keyPaddingMask: padding, mask: mask)
                XCTAssertEqual(output.shape, [2, 5, 8])
                XCTAssertFalse(output.scalars.contains { $0.isNaN }, "\(name) on \(backend): no NaN")
                for (b, i) in dead {
                    XCTAssertEqual(Array(output.scalars[((b * 5 + i) * 8)..<((b * 5 + i + 1) * 8)]), Array(repeating: 0, count: 8),
                                   "\(name) on \(backend): batch \(b) row \(i)")
                }
            }
            let weights = try base.attentionWeights(query: query, key: keyValueInput, value: keyValueInput, keyPaddingMask: padding, mask: mask)
            for (b, i) in dead {
                for h in 0..<2 {
                    XCTAssertEqual((0..<3).map { weights[b, h, i, $0] }, [0, 0, 0], "\(name): weights of batch \(b) head \(h) row \(i)")
                }
            }
        }
    }

    // MARK: NaN in an unmasked input propagates

    /// Causal top-left, Lq = Lk = 70: key j is seen by rows i ≥ j. A NaN in query
    /// row 5 makes row 5 NaN; a NaN in key 40 makes rows 40… NaN (output and
    /// logsumexp); a NaN in value 40, column 1 makes column 1 of rows 40… NaN. Every
    /// other number keeps its bits.
    func testNaNInAnUnmaskedQueryKeyOrValuePropagatesToExactlyTheRowsAndColumnsThatSeeIt() throws {
        let (length, headDim, valueDim) = (70, 8, 6)
        let q = try Tensor<Float>.randomNormal([1, 1, length, headDim], seed: 20)
        let k = try Tensor<Float>.randomNormal([1, 1, length, headDim], seed: 21)
        let v = try Tensor<Float>.randomNormal([1, 1, length, valueDim], seed: 22)
        var nanQuery = q, nanKey = k, nanValue = v
        nanQuery[0, 0, 5, 3] = .nan
        nanKey[0, 0, 40, 2] = .nan
        nanValue[0, 0, 40, 1] = .nan

        func run(_ q: Tensor<Float>, _ k: Tensor<Float>, _ v: Tensor<Float>, _ backend: AttentionBackend) throws -> AttentionResult {
            try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: .causal(.topLeft), backend: backend)
        }
        func check(_ backend: AttentionBackend, _ context: String) throws {
            let clean = try run(q, k, v, backend)
            XCTAssertFalse(clean.output.scalars.contains { $0.isNaN })
            // (name, result, is output (i, d) NaN, is logsumexp i NaN)
            let cases: [(String, AttentionResult, (Int, Int) -> Bool, (Int) -> Bool)] = [
                ("NaN in query row 5", try run(nanQuery, k, v, backend), { i, _ in i == 5 }, { $0 == 5 }),
                ("NaN in key 40", try run(q, nanKey, v, backend), { i, _ in i >= 40 }, { $0 >= 40 }),
                ("NaN in value 40, column 1", try run(q, k, nanValue, backend), { i, d in i >= 40 && d == 1 }, { _ in false }),
            ]
            for (name, result, outputIsNaN, logsumexpIsNaN) in cases {
                for i in 0..<length {
                    for d in 0..<valueDim {
                        let (actual, expected) = (result.output[0, 0, i, d], clean.output[0, 0, i, d])
                        if outputIsNaN(i, d) {
                            XCTAssertTrue(actual.isNaN, "\(name): output (\(i), \(d)) = \(actual), \(context)")
                        } else {
                            XCTAssertEqual(actual.bitPattern, expected.bitPattern, "\(name): output (\(i), \(d)) changed, \(context)")
                        }
                    }
                    let (actual, expected) = (result.logsumexp[0, 0, i], clean.logsumexp[0, 0, i])
                    if logsumexpIsNaN(i) {
                        XCTAssertTrue(actual.isNaN, "\(name): logsumexp \(i) = \(actual), \(context)")
                    } else {
                        XCTAssertEqual(actual.bitPattern, expected.bitPattern, "\(name): logsumexp \(i) changed, \(context)")
                    }
                }
            }
        }
        try forEachKernelPath { path in try check(.fused, "fused \(path)") }
        try check(.reference, "reference")

        // The C entry point, NaN in key 40.
        let call = KernelCall(queryLength: length, keyLength: length, headDim: headDim, valueDim: valueDim,
                              query: q.scalars, key: nanKey.scalars, value: v.scalars,
                              scale: 1 / Float(headDim).squareRoot(), causal: ATTN_CAUSAL_TOP_LEFT)
        let result = call.run()
        XCTAssertEqual(result.status, ATTN_OK)
        XCTAssertTrue(result.output[(40 * valueDim)...].allSatisfy(\.isNaN), "C: rows 40… are NaN")
        XCTAssertTrue(result.output[..<(40 * valueDim)].allSatisfy(\.isFinite), "C: rows …39 are finite")
    }

    /// CausalSelfAttention: NaN in one feature of token 3 reaches its query, key and
    /// value, so rows 3… are NaN and rows 0…2 keep their bits.
    func testNaNInAnUnmaskedTokenPropagatesThroughCausalSelfAttentionToTheLaterRowsOnly() throws {
        let layer = try CausalSelfAttention(dIn: 6, dOut: 4, contextLength: 8, seed: 3)
        let x = try Tensor<Float>.randomNormal([1, 6, 6], seed: 30)
        var poisoned = x
        poisoned[0, 3, 2] = .nan
        for backend in backends {
            var run = layer
            run.backend = backend
            let clean = try run(x), output = try run(poisoned)
            assertBitIdentical(Array(output.scalars[0..<12]), Array(clean.scalars[0..<12]), "rows 0…2 on \(backend)")
            XCTAssertTrue(output.scalars[12...].allSatisfy(\.isNaN), "rows 3… are NaN on \(backend)")
        }
    }

    /// An infinity in a visible value is IEEE arithmetic: +∞ in that column.
    func testInfinityInAnUnmaskedValueGivesInfinityInItsColumn() throws {
        let q = try Tensor<Float>.randomNormal([1, 1, 4, 3], seed: 35)
        let k = try Tensor<Float>.randomNormal([1, 1, 6, 3], seed: 36)
        var v = try Tensor<Float>.randomNormal([1, 1, 6, 2], seed: 37)
        v[0, 0, 4, 0] = .infinity
        for backend in backends {
            try forEachKernelPath { path in
                let output = try scaledDotProductAttention(queries: q, keys: k, values: v, backend: backend)
                for i in 0..<4 {
                    XCTAssertEqual(output[0, 0, i, 0], .infinity, "row \(i) column 0 on \(backend) \(path)")
                    XCTAssertTrue(output[0, 0, i, 1].isFinite, "row \(i) column 1 on \(backend) \(path)")
                }
            }
        }
    }

    // MARK: NaN or ±∞ at a masked key has no effect

    /// Poison (NaN, +∞, −∞) planted in K, in V or in both at keys that a mask
    /// hides from some rows: every row that sees no poisoned key keeps the bits
    /// of the clean call (output and logsumexp); with NaN, a row that sees one is
    /// NaN (K: output and logsumexp; V: output). Lq 70, Lk 130, two query heads on
    /// one key/value head, keys across three tiles, on every kernel path and with 1
    /// and 2 threads.
    func testNaNAndInfinityAtMaskedKeysHaveNoEffectBitForBitForEveryMaskKind() throws {
        let (queryLength, keyLength, headDim, valueDim) = (70, 130, 8, 5)
        let q = try Tensor<Float>.randomNormal([1, 2, queryLength, headDim], seed: 40)
        let k = try Tensor<Float>.randomNormal([1, 1, keyLength, headDim], seed: 41)
        let v = try Tensor<Float>.randomNormal([1, 1, keyLength, valueDim], seed: 42)
        // Keep/additive: odd rows hide the poisoned keys, even rows see everything.
        let poisonedForExplicit = [0, 63, 64, 100, 129]
        var keep = try Tensor<Bool>(shape: [queryLength, keyLength], repeating: true)
        var additive = try Tensor<Float>(shape: [queryLength, keyLength], repeating: 0)
        for i in 0..<queryLength {
            for j in 0..<keyLength {
                let hidden = i % 2 == 1 && (poisonedForExplicit.contains(j) || j % 7 == 3)
                keep[i, j] = !hidden
                additive[i, j] = hidden ? -.infinity : Float((i + j) % 5) * 0.25 - 0.5
            }
        }
        // (mask, poisoned keys, does row i see key j)
        let masks: [(AttentionMask, [Int], (Int, Int) -> Bool)] = [
            (.keep(keep), poisonedForExplicit, { i, j in keep[i, j] }),
            (.additive(additive), poisonedForExplicit, { i, j in additive[i, j] != -.infinity }),
            (.causal(.topLeft), [64, 100, 129], { i, j in j <= i }),
            (.causal(.bottomRight), [100, 129], { i, j in j <= i + keyLength - queryLength }),
        ]
        for (mask, poisonedKeys, sees) in masks {
            // (description, K, V, poisoned in K, poison)
            var poisonings: [(String, Tensor<Float>, Tensor<Float>, Bool, Float)] = []
            for poison in [Float.nan, .infinity, -.infinity] {
                for (inKeys, inValues) in [(true, false), (false, true), (true, true)] {
                    var poisonedK = k, poisonedV = v
                    for j in poisonedKeys {
                        if inKeys { for d in 0..<headDim { poisonedK[0, 0, j, d] = poison } }
                        if inValues { for d in 0..<valueDim { poisonedV[0, 0, j, d] = poison } }
                    }
                    poisonings.append(("\(mask), \(poison) in \(inKeys ? "K" : "")\(inValues ? "V" : "")", poisonedK, poisonedV, inKeys, poison))
                }
            }
            func check(_ result: AttentionResult, _ clean: AttentionResult, poison: Float, inKeys: Bool, _ context: String) {
                for h in 0..<2 {
                    for i in 0..<queryLength {
                        let rowStart = (h * queryLength + i) * valueDim
                        let row = Array(result.output.scalars[rowStart..<(rowStart + valueDim)])
                        if !poisonedKeys.contains(where: { sees(i, $0) }) {
                            assertBitIdentical(row, Array(clean.output.scalars[rowStart..<(rowStart + valueDim)]), "head \(h) row \(i), \(context)")
                            XCTAssertEqual(result.logsumexp[0, h, i].bitPattern, clean.logsumexp[0, h, i].bitPattern,
                                           "logsumexp head \(h) row \(i), \(context)")
                        } else if poison.isNaN {
                            XCTAssertTrue(row.allSatisfy(\.isNaN), "head \(h) row \(i) sees a NaN key: \(row), \(context)")
                            XCTAssertEqual(result.logsumexp[0, h, i].isNaN, inKeys, "logsumexp head \(h) row \(i), \(context)")
                        }
                    }
                }
            }
            try forEachKernelPath { path in
                let clean = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask)
                for (context, poisonedK, poisonedV, inKeys, poison) in poisonings {
                    for threads in [1, 2] {
                        let result = try scaledDotProductAttentionWithLogsumexp(
                            queries: q, keys: poisonedK, values: poisonedV, mask: mask, threads: threads)
                        check(result, clean, poison: poison, inKeys: inKeys, "\(context), fused \(path), \(threads) threads")
                    }
                }
            }
            let cleanReference = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, backend: .reference)
            let (context, poisonedK, poisonedV, _, _) = poisonings[2]  // NaN in K and V
            check(try scaledDotProductAttentionWithLogsumexp(queries: q, keys: poisonedK, values: poisonedV, mask: mask, backend: .reference),
                  cleanReference, poison: .nan, inKeys: true, "\(context), reference")
        }
    }

    /// The C entry point with an additive mask that is −∞ at keys 3 and 64 for
    /// every row, which hold NaN in K and +∞ in V: bit-identical to finite values there.
    func testNaNAndInfinityAtAdditivelyMaskedKeysHaveNoEffectThroughTheCEntryPoint() throws {
        let (queryLength, keyLength, headDim, valueDim) = (5, 66, 4, 3)
        var additive = [Float](repeating: 0, count: queryLength * keyLength)
        for i in 0..<queryLength {
            for j in [3, 64] { additive[i * keyLength + j] = -.infinity }
        }
        let call = KernelCall(queryLength: queryLength, keyLength: keyLength, headDim: headDim, valueDim: valueDim,
                              query: normals(queryLength * headDim, seed: 43), key: normals(keyLength * headDim, seed: 44),
                              value: normals(keyLength * valueDim, seed: 45), scale: 0.5, additive: additive)
        var poisonedCall = call
        for j in [3, 64] {
            for d in 0..<headDim { poisonedCall.key[j * headDim + d] = .nan }
            for d in 0..<valueDim { poisonedCall.value[j * valueDim + d] = .infinity }
        }
        forEachKernelPath { path in
            let clean = call.run(), poisoned = poisonedCall.run()
            XCTAssertEqual(poisoned.status, ATTN_OK)
            assertBitIdentical(poisoned.output, clean.output, "output, \(path)")
            assertBitIdentical(poisoned.logsumexp, clean.logsumexp, "logsumexp, \(path)")
        }
    }

    /// Padded keys holding ±∞ (LayerTests pins NaN) change no bit of the output.
    func testInfinityAtPaddedKeysHasNoEffectOnMultiHeadAttention() throws {
        let layer = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, seed: 46)
        let query = try Tensor<Float>.randomNormal([2, 4, 8], seed: 47)
        let keyValue = try Tensor<Float>.randomNormal([2, 6, 8], seed: 48)
        let padding = try Tensor<Bool>(shape: [2, 6], scalars: [false, true, false, false, false, true,
                                                                true, false, false, false, false, false])
        for poison in [Float.infinity, -.infinity] {
            var poisoned = keyValue
            for (b, l) in [(0, 1), (0, 5), (1, 0)] { for d in 0..<8 { poisoned[b, l, d] = d % 2 == 0 ? poison : -poison } }
            for backend in backends {
                var run = layer
                run.backend = backend
                assertBitIdentical(try run(query: query, key: poisoned, value: poisoned, keyPaddingMask: padding),
                                   try run(query: query, key: keyValue, value: keyValue, keyPaddingMask: padding), "\(poison) on \(backend)")
            }
        }
    }

    // MARK: The most negative finite float is a bias, not a mask

    /// The contract masks with −∞ only; −Float.greatestFiniteMagnitude (PyTorch's
    /// `finfo.min`) is a finite number added to the logits. On every key of a row,
    /// logit + bias rounds to the same −3.4028235e38, so the weights are uniform
    /// (1/4 each), not zero: the row is the mean of the values and its logsumexp
    /// is −3.4028235e38, not −∞.
    func testMostNegativeFiniteBiasOnEveryKeyIsNotAMaskButGivesUniformWeights() throws {
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 4], seed: 50)
        let k = try Tensor<Float>.randomNormal([1, 1, 4, 4], seed: 51)
        let v = try Tensor<Float>(shape: [1, 1, 4, 2], scalars: [1, 10, 2, 20, 3, 30, 6, 60])  // mean [3, 30]
        let additive = try Tensor<Float>(shape: [2, 4], repeating: -.greatestFiniteMagnitude)
        for backend in backends {
            try forEachKernelPath { path in
                let result = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: .additive(additive), backend: backend)
                XCTAssertEqual(result.output.scalars, [3, 30, 3, 30], "\(backend) \(path)")
                XCTAssertEqual(result.logsumexp.scalars, [-.greatestFiniteMagnitude, -.greatestFiniteMagnitude], "\(backend) \(path)")
            }
        }
        XCTAssertEqual(try Reference.scaledDotProductAttention(queries: q, keys: k, values: v, mask: .additive(additive)).weights.scalars,
                       Array(repeating: 0.25, count: 8))
        let call = KernelCall(queryLength: 2, keyLength: 4, headDim: 4, valueDim: 2, query: q.scalars, key: k.scalars,
                              value: v.scalars, scale: 0.5, additive: additive.scalars).run()
        XCTAssertEqual(call.status, ATTN_OK)
        XCTAssertEqual(call.output, [3, 30, 3, 30], "C entry point")
    }

    /// Next to unbiased keys, a key biased by −3.4028235e38 gets weight exactly 0:
    /// the output has the bits of the call that masks it with a keep mask.
    func testMostNegativeFiniteBiasNextToUnbiasedKeysGivesThemWeightZeroLikeAMask() throws {
        let q = try Tensor<Float>.randomNormal([1, 2, 3, 8], seed: 52)
        let k = try Tensor<Float>.randomNormal([1, 2, 70, 8], seed: 53)
        let v = try Tensor<Float>.randomNormal([1, 2, 70, 4], seed: 54)
        let biased: Set<Int> = [1, 2, 64, 69]
        let additive = try Tensor<Float>(shape: [1, 70], scalars: (0..<70).map { biased.contains($0) ? -.greatestFiniteMagnitude : 0 })
        let keep = try Tensor<Bool>(shape: [1, 70], scalars: (0..<70).map { !biased.contains($0) })
        try forEachKernelPath { path in
            assertBitIdentical(try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .additive(additive)),
                               try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .keep(keep)), "fused \(path)")
        }
        let weights = try Reference.scaledDotProductAttention(queries: q, keys: k, values: v, mask: .additive(additive)).weights
        for h in 0..<2 {
            for i in 0..<3 {
                for j in biased { XCTAssertEqual(weights[0, h, i, j], 0, "weight (\(h), \(i), \(j))") }
            }
        }
    }

    /// Because it is not a mask, a NaN at a key biased by −3.4028235e38 propagates.
    func testNaNAtAKeyBiasedByTheMostNegativeFiniteFloatPropagatesBecauseItIsNotMasked() throws {
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 4], seed: 55)
        var k = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 56)
        let v = try Tensor<Float>.randomNormal([1, 1, 5, 3], seed: 57)
        k[0, 0, 2, 0] = .nan
        let additive = try Tensor<Float>(shape: [1, 5], scalars: [0, 0, -.greatestFiniteMagnitude, 0, 0])
        for backend in backends {
            let output = try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .additive(additive), backend: backend)
            XCTAssertTrue(output.scalars.allSatisfy(\.isNaN), "\(backend): \(output.scalars)")
        }
    }

    // MARK: Large logits

    /// Integer queries and keys make every logit exact (|logit| ≤ 10,000), so the
    /// only error left is the softmax's. Row 0 has its largest logit (9,600) in the
    /// last key tile, after smaller maxima in the first two (the online rescales
    /// multiply by e^−9,600 and e^−300, both 0 in float); row 1 has it at key 0 (9,750); row 2 is −10,000
    /// on every key (a naive exp would underflow to 0/0). No row overflows or is
    /// lost: each is within the softmax part of `Tolerance` (u·(2·Lk + 16)·max|v|,
    /// the logit part being 0) of the oracle, its logsumexp within 2 ulps.
    func testLogitsOfMagnitudeTenThousandNeitherOverflowNorLoseTheRow() throws {
        let (queryLength, keyLength) = (3, 130)
        let q = try Tensor<Float>(shape: [1, 1, queryLength, 4], scalars: [150, 0, 0, 0, -150, 0, 0, 0, 0, -10_000, 0, 0])
        let k = try Tensor<Float>(shape: [1, 1, keyLength, 4], scalars: (0..<keyLength).flatMap { j in [Float(j - 65), 1, 0, 0] })
        let v = try Tensor<Float>.randomNormal([1, 1, keyLength, 5], seed: 60)
        let oracle = try Reference.scaledDotProductAttention(queries: q, keys: k, values: v, scale: 1)
        XCTAssertEqual(oracle.logsumexp.scalars[0], 9_600)
        XCTAssertEqual(oracle.logsumexp.scalars[1], 9_750)
        let tolerance = Tolerance.unitRoundoff * Float(2 * keyLength + 16) * v.scalars.map(abs).max()!
        try forEachKernelPath { path in
            let fused = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, scale: 1)
            XCTAssertTrue(fused.output.scalars.allSatisfy(\.isFinite), "\(path): \(fused.output.scalars)")
            assertClose(fused.output, oracle.output, tolerance: tolerance, "fused \(path)")
            for i in 0..<queryLength {
                let expected = oracle.logsumexp.scalars[i]
                XCTAssertEqual(fused.logsumexp.scalars[i], expected, accuracy: 2 * expected.ulp, "logsumexp \(i), \(path)")
            }
            let call = KernelCall(queryLength: queryLength, keyLength: keyLength, headDim: 4, valueDim: 5,
                                  query: q.scalars, key: k.scalars, value: v.scalars, scale: 1).run()
            assertBitIdentical(call.output, fused.output.scalars, "C entry point, \(path)")
        }
    }

    // MARK: Long key sequences

    /// Lq 2, Lk 70,000 (past 2¹⁶), value row j = [j, −j, 0.5]: with a keep mask
    /// that shows row 0 only key 65,536 and row 1 only key 69,999 (and an additive
    /// mask that does the same with −∞), each output row is that value row exactly
    /// and its logsumexp is its logit.
    func testKeyIndicesPast65536AreAddressedExactly() throws {
        let (keyLength, headDim) = (70_000, 4)
        let q = try Tensor<Float>(shape: [1, 1, 2, headDim], repeating: 0.25)
        let k = try Tensor<Float>(shape: [1, 1, keyLength, headDim], scalars: (0..<keyLength).flatMap { j in
            [Float(j % 7), -1, Float(j % 3), 2]
        })
        let v = try Tensor<Float>(shape: [1, 1, keyLength, 3], scalars: (0..<keyLength).flatMap { j in [Float(j), -Float(j), 0.5] })
        let visible = [65_536, 69_999]
        var keep = try Tensor<Bool>(shape: [2, keyLength], repeating: false)
        var additive = try Tensor<Float>(shape: [2, keyLength], repeating: -.infinity)
        for (i, j) in visible.enumerated() {
            keep[i, j] = true
            additive[i, j] = 0
        }
        let expected: [Float] = visible.flatMap { [Float($0), -Float($0), 0.5] }
        // logit = 0.25·(j%7 − 1 + j%3 + 2)·scale, exact in float.
        let expectedLogsumexp: [Float] = visible.map { j in 0.25 * Float(j % 7 - 1 + j % 3 + 2) * 0.5 }
        for (mask, backends) in [(AttentionMask.keep(keep), backends), (.additive(additive), [.fused])] {
            for backend in backends {
                let result = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, scale: 0.5, backend: backend)
                XCTAssertEqual(result.output.scalars, expected, "\(mask) on \(backend)")
                XCTAssertEqual(result.logsumexp.scalars, expectedLogsumexp, "\(mask) on \(backend)")
            }
        }
        forEachKernelPath { path in
            let call = KernelCall(queryLength: 2, keyLength: keyLength, headDim: headDim, valueDim: 3,
                                  query: q.scalars, key: k.scalars, value: v.scalars, scale: 0.5,
                                  keep: keep.scalars.map { $0 ? 1 : 0 }).run()
            XCTAssertEqual(call.status, ATTN_OK)
            XCTAssertEqual(call.output, expected, "C entry point, \(path)")
        }
    }

    /// Bottom-right causal over 70,000 keys: row 0 sees keys …69,998, row 1 every
    /// key. A NaN at key 69,999 reaches row 1 only; row 0 agrees with the oracle.
    func testBottomRightCausalOffsetPast65536KeysHidesExactlyTheLastKeyFromTheFirstRow() throws {
        let keyLength = 70_000
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 4], seed: 61)
        let k = try Tensor<Float>.randomNormal([1, 1, keyLength, 4], seed: 62)
        var v = try Tensor<Float>.randomNormal([1, 1, keyLength, 2], seed: 63)
        let tolerance = Tolerance.outputBound(queries: q, keys: k, values: v, scale: 0.5)
        v[0, 0, keyLength - 1, 1] = .nan
        let oracle = try Reference.scaledDotProductAttention(queries: q, keys: k, values: v, mask: .causal(.bottomRight))
        try forEachKernelPath { path in
            let fused = try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .causal(.bottomRight))
            XCTAssertTrue(fused[0, 0, 0, 1].isFinite, "row 0 does not see key 69,999, \(path)")
            XCTAssertTrue(fused[0, 0, 1, 1].isNaN, "row 1 sees key 69,999, \(path)")
            assertClose(fused, oracle.output, tolerance: tolerance, "\(path)")
        }
    }

    // MARK: 64-bit offsets

    /// Batch and head strides past 2³¹ elements (8 GiB apart for floats, 2 GiB for
    /// mask bytes) without allocating them: one sparse anonymous mapping of 12 GiB of
    /// address space, of which the kernel touches a few pages, holds every
    /// operand of (batch 2, heads 2) at offsets up to ≈ 3·2³⁰ elements. Each
    /// (batch, head) gives the bits of the same problem in small contiguous buffers.
    func testStridesAndOffsetsPast2To31ElementsAreIndexedWith64BitArithmetic() throws {
        #if canImport(Glibc)
        let (batch, heads, queryLength, keyLength, headDim, valueDim) = (2, 2, 3, 5, 4, 4)
        let batchStride = (1 << 31) + 4_096, headStride = (1 << 30) + 2_048  // elements (floats, or bytes for the mask)
        let floats = batchStride + headStride + 8_192
        let byteCount = floats * MemoryLayout<Float>.stride
        guard let mapping = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0),
              mapping != MAP_FAILED else {
            throw XCTSkip("cannot reserve \(byteCount >> 30) GiB of address space: \(String(cString: strerror(errno)))")
        }
        defer { munmap(mapping, byteCount) }
        let base = mapping.bindMemory(to: Float.self, capacity: floats)
        let bytes = mapping.bindMemory(to: UInt8.self, capacity: byteCount)  // the mask, at byte offsets of its own
        // Element offsets of each operand inside a (batch, head) block.
        let (qAt, kAt, vAt, outAt, lseAt, maskAt) = (0, 256, 512, 768, 1_024, 5_120)
        func block(_ b: Int, _ h: Int) -> Int { b * batchStride + h * headStride }

        var compact: [(KernelCall, Int, Int)] = []
        for b in 0..<batch {
            for h in 0..<heads {
                let seed = UInt64(b * heads + h) * 10
                var call = KernelCall(queryLength: queryLength, keyLength: keyLength, headDim: headDim, valueDim: valueDim,
                                      query: normals(queryLength * headDim, seed: seed), key: normals(keyLength * headDim, seed: seed + 1),
                                      value: normals(keyLength * valueDim, seed: seed + 2), scale: 0.5)
                call.keep = (0..<(queryLength * keyLength)).map { UInt8(($0 + b + h) % 3 == 0 ? 0 : 1) }
                for (index, x) in call.query.enumerated() { base[block(b, h) + qAt + index] = x }
                for (index, x) in call.key.enumerated() { base[block(b, h) + kAt + index] = x }
                for (index, x) in call.value.enumerated() { base[block(b, h) + vAt + index] = x }
                for (index, x) in call.keep!.enumerated() { bytes[block(b, h) + maskAt + index] = x }
                compact.append((call, b, h))
            }
        }
        var params = attn_params()
        params.batch = Int64(batch)
        params.query_heads = Int64(heads)
        params.kv_heads = Int64(heads)
        params.query_length = Int64(queryLength)
        params.key_length = Int64(keyLength)
        params.head_dim = Int64(headDim)
        params.value_dim = Int64(valueDim)
        let (bs, hs) = (Int64(batchStride), Int64(headStride))
        params.query = UnsafePointer(base + qAt)
        params.query_strides = (bs, hs, Int64(headDim), 1)
        params.key = UnsafePointer(base + kAt)
        params.key_strides = (bs, hs, Int64(headDim), 1)
        params.value = UnsafePointer(base + vAt)
        params.value_strides = (bs, hs, Int64(valueDim), 1)
        params.output = base + outAt
        params.output_strides = (bs, hs, Int64(valueDim), 1)
        params.logsumexp = base + lseAt
        params.logsumexp_strides = (bs, hs, 1)
        params.mask_kind = ATTN_MASK_KEEP
        params.mask = UnsafeRawPointer(bytes + maskAt)
        params.mask_strides = (bs, hs, Int64(keyLength), 1)
        params.scale = 0.5
        forEachKernelPath { path in
            for threads: Int32 in [1, 2] {
                params.num_threads = threads
                XCTAssertEqual(attn_sdpa_forward(&params), ATTN_OK)
                for (call, b, h) in compact {
                    let expected = call.run()
                    let output = (0..<(queryLength * valueDim)).map { base[block(b, h) + outAt + $0] }
                    let logsumexp = (0..<queryLength).map { base[block(b, h) + lseAt + $0] }
                    assertBitIdentical(output, expected.output, "output (\(b), \(h)) at element offset \(block(b, h)), \(path), \(threads) threads")
                    assertBitIdentical(logsumexp, expected.logsumexp, "logsumexp (\(b), \(h)), \(path), \(threads) threads")
                }
            }
        }
        #else
        throw XCTSkip("needs Linux's MAP_NORESERVE")
        #endif
    }

    // MARK: Zero-size inputs

    /// Batch 0, heads 0 or Lq 0 with every pointer NULL: ATTN_OK. Lk 0: zeros and
    /// logsumexp −∞ (key and value NULL). D 0: every logit is the empty sum 0, so
    /// the weights are uniform and the row is the mean of the values (query and
    /// key NULL). Dv 0: nothing to write (value and output NULL), and the logsumexp
    /// has the bits of the same call with Dv 3.
    func testZeroSizeDimensionsThroughTheCEntryPointNeverFailAndGiveEmptyZeroOrUniformResults() throws {
        func call(batch: Int = 1, heads: Int = 2, kvHeads: Int = 2, queryLength: Int = 3, keyLength: Int = 4,
                  headDim: Int = 4, valueDim: Int = 3) -> KernelCall {
            KernelCall(batch: batch, queryHeads: heads, kvHeads: kvHeads, queryLength: queryLength, keyLength: keyLength,
                       headDim: headDim, valueDim: valueDim,
                       query: normals(batch * heads * queryLength * headDim, seed: 70),
                       key: normals(batch * kvHeads * keyLength * headDim, seed: 71),
                       value: (0..<(batch * kvHeads * keyLength * valueDim)).map { Float($0 % 8) },
                       scale: 0.5, causal: ATTN_CAUSAL_BOTTOM_RIGHT)
        }
        for (name, empty) in [("batch 0", call(batch: 0)), ("heads 0", call(heads: 0, kvHeads: 0)),
                              ("query heads 0 over 2 kv heads", call(heads: 0)), ("Lq 0", call(queryLength: 0))] {
            let result = empty.run()
            XCTAssertEqual(result.status, ATTN_OK, name)
            XCTAssertEqual(result.output, [], name)
        }
        let noKeys = call(keyLength: 0).run()
        XCTAssertEqual(noKeys.status, ATTN_OK)
        XCTAssertEqual(noKeys.output, Array(repeating: 0, count: 18), "Lk 0")
        XCTAssertEqual(noKeys.logsumexp, Array(repeating: -.infinity, count: 6), "Lk 0")

        var noHeadDim = call(headDim: 0)
        noHeadDim.causal = ATTN_CAUSAL_NONE
        let uniform = noHeadDim.run()
        XCTAssertEqual(uniform.status, ATTN_OK)
        // Values of head h, key j, column d: (h·12 + j·3 + d) % 8; mean over j.
        func mean(head h: Int, column d: Int) -> Float {
            var sum = 0
            for j in 0..<4 { sum += (h * 12 + j * 3 + d) % 8 }
            return Float(sum) / 4
        }
        var means: [Float] = []
        for h in 0..<2 {
            for _ in 0..<3 { for d in 0..<3 { means.append(mean(head: h, column: d)) } }
        }
        XCTAssertEqual(uniform.output, means, "D 0")
        XCTAssertEqual(uniform.logsumexp, Array(repeating: log(Float(4)), count: 6), "D 0: log of 4 keys")

        let noValueDim = call(valueDim: 0).run()
        XCTAssertEqual(noValueDim.status, ATTN_OK)
        XCTAssertEqual(noValueDim.output, [])
        assertBitIdentical(noValueDim.logsumexp, call().run().logsumexp, "Dv 0 logsumexp")
    }

    func testZeroSizeDimensionsThroughTheFunctionalAPIGiveEmptyOrZeroResults() throws {
        func run(_ q: [Int], _ k: [Int], _ v: [Int], mask: AttentionMask = .none, backend: AttentionBackend) throws -> AttentionResult {
            try scaledDotProductAttentionWithLogsumexp(
                queries: .randomNormal(q, seed: 1), keys: .randomNormal(k, seed: 2),
                values: try Tensor(shape: v, scalars: (0..<v.reduce(1, *)).map { Float($0 % 4) }), mask: mask, backend: backend)
        }
        for backend in backends {
            // (name, q, k, v, output shape)
            let empties: [(String, [Int], [Int], [Int], [Int])] = [
                ("batch 0", [0, 2, 3, 4], [0, 2, 5, 4], [0, 2, 5, 3], [0, 2, 3, 3]),
                ("heads 0", [1, 0, 3, 4], [1, 0, 5, 4], [1, 0, 5, 3], [1, 0, 3, 3]),
                ("query heads 0 over 2 kv heads", [1, 0, 3, 4], [1, 2, 5, 4], [1, 2, 5, 3], [1, 0, 3, 3]),
                ("Lq 0", [1, 2, 0, 4], [1, 2, 5, 4], [1, 2, 5, 3], [1, 2, 0, 3]),
                ("Lq 0, rank 2", [0, 4], [5, 4], [5, 3], [0, 3]),
            ]
            for (name, q, k, v, shape) in empties {
                let result = try run(q, k, v, backend: backend)
                XCTAssertEqual(result.output.shape, shape, "\(name) on \(backend)")
                XCTAssertEqual(result.logsumexp.shape, Array(shape.dropLast()), "\(name) on \(backend)")
                XCTAssertEqual(result.output.scalars, [], "\(name) on \(backend)")
            }
            for mask in [AttentionMask.none, .causal(.bottomRight), .keep(try Tensor(shape: [3, 0], scalars: [])),
                         .additive(try Tensor(shape: [1, 1, 1, 0], scalars: []))] {
                let noKeys = try run([1, 2, 3, 4], [1, 2, 0, 4], [1, 2, 0, 3], mask: mask, backend: backend)
                XCTAssertEqual(noKeys.output, try Tensor(shape: [1, 2, 3, 3], repeating: 0), "Lk 0, \(mask), on \(backend)")
                XCTAssertEqual(noKeys.logsumexp, try Tensor(shape: [1, 2, 3], repeating: -.infinity), "Lk 0, \(mask), on \(backend)")
            }
            // D 0: default scale 1 (not 1/√0), uniform weights: values (j·3 + d) % 4 over 5 keys.
            let noHeadDim = try run([1, 1, 2, 0], [1, 1, 5, 0], [1, 1, 5, 3], backend: backend)
            var means: [Float] = []
            for d in 0..<3 {
                var sum = 0
                for j in 0..<5 { sum += (j * 3 + d) % 4 }
                means.append(Float(sum) / 5)
            }
            assertClose(noHeadDim.output, try Tensor<Float>(shape: [1, 1, 2, 3], scalars: means + means), tolerance: 1e-6, "D 0 on \(backend)")
            let noValueDim = try run([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 0], backend: backend)
            XCTAssertEqual(noValueDim.output.shape, [1, 2, 3, 0])
            assertBitIdentical(noValueDim.logsumexp, try run([1, 2, 3, 4], [1, 2, 5, 4], [1, 2, 5, 3], backend: backend).logsumexp,
                               "Dv 0 keeps the logsumexp on \(backend)")
        }
    }

    /// Batch 0 and length 0 through every layer: empty in, empty out, the right shape.
    func testZeroSizeInputsThroughEveryLayerGiveEmptyOutputs() throws {
        let mha = try MultiHeadAttention(dIn: 8, dOut: 8, heads: 2, causal: .topLeft, contextLength: 4, seed: 1)
        let layers: [(String, Int, (Tensor<Float>) throws -> Tensor<Float>)] = [
            ("SimpleSelfAttention", 8, { try SimpleSelfAttention()($0) }),
            ("SelfAttention", 6, { try SelfAttention(dIn: 8, dOut: 6, seed: 1)($0) }),
            ("CausalSelfAttention", 6, { try CausalSelfAttention(dIn: 8, dOut: 6, contextLength: 4, seed: 1)($0) }),
            ("MultiHeadAttentionWrapper", 12, { try MultiHeadAttentionWrapper(dIn: 8, dOut: 6, contextLength: 4, numHeads: 2, seed: 1)($0) }),
            ("MultiHeadAttention", 8, { try mha($0) }),
        ]
        for (name, width, layer) in layers {
            for shape in [[0, 4, 8], [2, 0, 8], [0, 8]] {
                let output = try layer(try Tensor(shape: shape, scalars: []))
                XCTAssertEqual(output.shape, Array(shape.dropLast()) + [width], "\(name) on \(shape)")
            }
        }
        XCTAssertEqual(try SimpleSelfAttention()(try Tensor(shape: [2, 3, 0], scalars: [])).shape, [2, 3, 0], "0 features")
    }

    /// Layers of width 0 (head dim 0) give empty outputs on both backends: the
    /// default scale of head dim 0 is 1, as in the functional API, not 1/√0 = ∞.
    /// Input width 0 projects to zeros (no bias): uniform weights over zero values.
    func testZeroWidthLayersGiveEmptyOrZeroOutputsOnBothBackends() throws {
        let x = try Tensor<Float>.randomNormal([2, 3, 8], seed: 5)
        for backend in backends {
            var mha = try MultiHeadAttention(dIn: 8, dOut: 0, heads: 2, seed: 1)
            mha.backend = backend
            XCTAssertEqual(try mha(x).shape, [2, 3, 0], "MultiHeadAttention dOut 0 on \(backend)")
            var selfAttention = try SelfAttention(dIn: 8, dOut: 0, seed: 1)
            selfAttention.backend = backend
            XCTAssertEqual(try selfAttention(x).shape, [2, 3, 0], "SelfAttention dOut 0 on \(backend)")
            var causal = try CausalSelfAttention(dIn: 8, dOut: 0, contextLength: 3, seed: 1)
            causal.backend = backend
            XCTAssertEqual(try causal(x).shape, [2, 3, 0], "CausalSelfAttention dOut 0 on \(backend)")
            var wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 0, contextLength: 3, numHeads: 2, seed: 1)
            for index in wrapper.heads.indices { wrapper.heads[index].backend = backend }
            XCTAssertEqual(try wrapper(x).shape, [2, 3, 0], "MultiHeadAttentionWrapper dOut 0 on \(backend)")
            var noInput = try SelfAttention(dIn: 0, dOut: 4, seed: 1)
            noInput.backend = backend
            XCTAssertEqual(try noInput(try Tensor(shape: [2, 3, 0], scalars: [])), try Tensor(shape: [2, 3, 4], repeating: 0),
                           "SelfAttention dIn 0 on \(backend)")
        }
    }

    // MARK: Scale

    func testDefaultScaleIsOneOverTheSquareRootOfTheHeadDimBitForBit() throws {
        for headDim in [1, 3, 64, 80] {
            let q = try Tensor<Float>.randomNormal([1, 2, 5, headDim], seed: 80)
            let k = try Tensor<Float>.randomNormal([1, 2, 7, headDim], seed: 81)
            let v = try Tensor<Float>.randomNormal([1, 2, 7, 3], seed: 82)
            for backend in backends {
                assertBitIdentical(try scaledDotProductAttention(queries: q, keys: k, values: v, backend: backend),
                                   try scaledDotProductAttention(queries: q, keys: k, values: v, scale: 1 / Float(headDim).squareRoot(), backend: backend),
                                   "D \(headDim) on \(backend)")
            }
        }
    }

    /// Scale 0 makes every visible logit 0: the weights are uniform over the visible
    /// keys and the row is their mean, exactly (integer values, powers of two).
    func testScaleZeroGivesTheMeanOfTheVisibleValuesExactly() throws {
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 4], seed: 83)
        let k = try Tensor<Float>.randomNormal([1, 1, 6, 4], seed: 84)
        let v = try Tensor<Float>(shape: [1, 1, 6, 1], scalars: [1, 2, 4, 8, 16, 32])
        // Row 0 sees keys 0, 1 (mean 1.5); row 1 sees keys 2…5 (mean 15).
        let keep = try Tensor<Bool>(shape: [2, 6], scalars: [true, true, false, false, false, false,
                                                             false, false, true, true, true, true])
        for backend in backends {
            try forEachKernelPath { path in
                XCTAssertEqual(try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .keep(keep), scale: 0, backend: backend).scalars,
                               [1.5, 15], "\(backend) \(path)")
            }
        }
        let call = KernelCall(queryLength: 2, keyLength: 6, headDim: 4, valueDim: 1, query: q.scalars, key: k.scalars,
                              value: v.scalars, scale: 0, keep: keep.scalars.map { $0 ? 1 : 0 }).run()
        XCTAssertEqual(call.output, [1.5, 15], "C entry point")
        XCTAssertEqual(call.logsumexp, [log(Float(2)), log(Float(4))], "C entry point: log of the visible key count")
    }

    /// scale·q·k with scale −s is s·q·(−k), bit for bit: a negative scale is honoured.
    func testNegativeScaleEqualsPositiveScaleWithNegatedKeysBitForBit() throws {
        let q = try Tensor<Float>.randomNormal([2, 2, 65, 16], seed: 85)
        let k = try Tensor<Float>.randomNormal([2, 2, 70, 16], seed: 86)
        let v = try Tensor<Float>.randomNormal([2, 2, 70, 8], seed: 87)
        try forEachKernelPath { path in
            for scale: Float in [-0.25, -3] {
                assertBitIdentical(try scaledDotProductAttention(queries: q, keys: k, values: v, scale: scale),
                                   try scaledDotProductAttention(queries: q, keys: k.map { -$0 }, values: v, scale: -scale), "\(scale), \(path)")
            }
        }
    }

    /// Scale 10⁶ with logits 10⁶·k_j0 (k_j0 ∈ {0.5, 0.25, 0.75, −1}): the largest
    /// logit, 750,000 at key 2, beats the next by 250,000, so its weight is 1 and
    /// the others' exactly 0: the output is value row 2, the logsumexp 750,000.
    func testLargeFiniteScaleIsHonouredAndGivesHardAttention() throws {
        let q = try Tensor<Float>(shape: [1, 1, 1, 2], scalars: [1, 0])
        let k = try Tensor<Float>(shape: [1, 1, 4, 2], scalars: [0.5, 3, 0.25, -2, 0.75, 1, -1, 0])
        let v = try Tensor<Float>(shape: [1, 1, 4, 3], scalars: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])
        for backend in backends {
            try forEachKernelPath { path in
                let result = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, scale: 1e6, backend: backend)
                XCTAssertEqual(result.output.scalars, [7, 8, 9], "\(backend) \(path)")
                XCTAssertEqual(result.logsumexp.scalars, [750_000], "\(backend) \(path)")
            }
        }
        let call = KernelCall(queryLength: 1, keyLength: 4, headDim: 2, valueDim: 3, query: q.scalars, key: k.scalars,
                              value: v.scalars, scale: 1e6).run()
        XCTAssertEqual(call.output, [7, 8, 9], "C entry point")
    }

    /// ±∞ and NaN scales: the C entry point returns ATTN_ERROR_SCALE and writes
    /// nothing; the Swift API throws `invalidValue(scale)` on both backends.
    func testNonFiniteScaleIsRejectedAndNothingIsWritten() throws {
        let q = try Tensor<Float>.randomNormal([1, 1, 2, 4], seed: 88)
        for scale in [Float.infinity, -.infinity, .nan] {
            let call = KernelCall(queryLength: 2, keyLength: 2, headDim: 4, valueDim: 4, query: q.scalars, key: q.scalars,
                                  value: q.scalars, scale: scale).run()
            XCTAssertEqual(call.status, ATTN_ERROR_SCALE, "\(scale)")
            XCTAssertEqual(call.output, Array(repeating: KernelCall.sentinel, count: 8), "nothing written for scale \(scale)")
            XCTAssertEqual(call.logsumexp, Array(repeating: KernelCall.sentinel, count: 2), "nothing written for scale \(scale)")
            for backend in backends {
                assertThrowsInvalidValue(argument: "scale", actual: "\(scale)",
                                         try scaledDotProductAttention(queries: q, keys: q, values: q, scale: scale, backend: backend))
            }
        }
    }

    // MARK: Masks broadcast by stride 0

    /// A broadcast mask gives the bits of its materialised `[B, Hq, Lq, Lk]` copy.
    func testBroadcastMasksGiveTheBitsOfTheirMaterialisedCopies() throws {
        let (batch, heads, queryLength, keyLength) = (2, 2, 65, 66)
        let q = try Tensor<Float>.randomNormal([batch, heads, queryLength, 8], seed: 90)
        let k = try Tensor<Float>.randomNormal([batch, heads, keyLength, 8], seed: 91)
        let v = try Tensor<Float>.randomNormal([batch, heads, keyLength, 4], seed: 92)
        var generator = SplitMix64(seed: 93)
        for shape in [[keyLength], [queryLength, 1], [heads, 1, keyLength], [batch, 1, queryLength, keyLength], [1, heads, 1, 1]] {
            let count = shape.reduce(1, *)
            let keep = try Tensor<Bool>(shape: shape, scalars: (0..<count).map { _ in generator.next() % 3 != 0 })
            let additive = try Tensor<Float>(shape: shape, scalars: (0..<count).map { _ in
                generator.next() % 4 == 0 ? -.infinity : Float(generator.next() % 9) * 0.125 - 0.5
            })
            // Element (b, h, i, j) of the broadcast mask: stride 0 on its size-1 dimensions.
            let padded = Array(repeating: 1, count: 4 - shape.count) + shape
            var strides = Tensor<Bool>.contiguousStrides(for: padded)
            for axis in 0..<4 where padded[axis] == 1 { strides[axis] = 0 }
            func materialised<E: Sendable>(_ mask: Tensor<E>) throws -> Tensor<E> {
                var cells: [E] = []
                cells.reserveCapacity(batch * heads * queryLength * keyLength)
                for b in 0..<batch {
                    for h in 0..<heads {
                        for i in 0..<queryLength {
                            let row = b * strides[0] + h * strides[1] + i * strides[2]
                            for j in 0..<keyLength { cells.append(mask.scalars[row + j * strides[3]]) }
                        }
                    }
                }
                return try Tensor(shape: [batch, heads, queryLength, keyLength], scalars: cells)
            }
            assertBitIdentical(try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .keep(keep)),
                               try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .keep(materialised(keep))), "keep \(shape)")
            assertBitIdentical(try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .additive(additive)),
                               try scaledDotProductAttention(queries: q, keys: k, values: v, mask: .additive(materialised(additive))),
                               "additive \(shape)")
        }
    }

    // MARK: Dropout

    /// `isTraining == false`: a dropout probability of 0.5 changes no bit of
    /// CausalSelfAttention or MultiHeadAttentionWrapper (MultiHeadAttention: LayerTests).
    func testDropoutIsInactiveInInferenceModeInTheCausalLayersBitForBit() throws {
        let x = try Tensor<Float>.randomNormal([2, 6, 8], seed: 100)
        var causal = try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 6, dropoutProbability: 0.5, seed: 1)
        causal.dropoutSeed = 42
        let causalWithout = try CausalSelfAttention(dIn: 8, dOut: 4, contextLength: 6, seed: 1)
        var wrapper = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 6, numHeads: 2, dropoutProbability: 0.5, seed: 2)
        let wrapperWithout = try MultiHeadAttentionWrapper(dIn: 8, dOut: 4, contextLength: 6, numHeads: 2, seed: 2)
        for backend in backends {
            causal.backend = backend
            var plain = causalWithout
            plain.backend = backend
            XCTAssertFalse(causal.isTraining)
            assertBitIdentical(try causal(x), try plain(x), "CausalSelfAttention on \(backend)")
            for index in wrapper.heads.indices { wrapper.heads[index].backend = backend }
            var plainWrapper = wrapperWithout
            for index in plainWrapper.heads.indices { plainWrapper.heads[index].backend = backend }
            assertBitIdentical(try wrapper(x), try plainWrapper(x), "MultiHeadAttentionWrapper on \(backend)")
        }
        causal.isTraining = true
        causal.backend = .fused
        XCTAssertNotEqual(try causal(x), try causalWithout(x), "and active in training")
    }

    /// Scale 0 (every weight 1/70 before dropout) and V = the 70×70 identity, so
    /// output (b, h, i, j) is the weight of cell (b, h, i, j) after dropout: exactly
    /// 0 where Philox drops the cell, (1/(1 − p))/70 (to an ulp) where it keeps it.
    /// Fused (every kernel path, 1, 2, 3 and 8 threads) and oracle give that for
    /// every cell of 2 batches × 2 heads × 130 rows × 70 keys (two key tiles).
    func testDropoutInTrainingDropsExactlyThePhiloxCellsOnBothBackendsWhateverTheThreadCount() throws {
        let (batch, heads, queryLength, keyLength, p, seed): (Int, Int, Int, Int, Float, UInt64) = (2, 2, 130, 70, 0.3, 0xD15EA5E)
        let q = try Tensor<Float>.randomNormal([batch, heads, queryLength, 4], seed: 101)
        let k = try Tensor<Float>.randomNormal([batch, heads, keyLength, 4], seed: 102)
        let identity = try Tensor<Float>(shape: [batch, heads, keyLength, keyLength], scalars: (0..<(batch * heads)).flatMap { _ in
            (0..<(keyLength * keyLength)).map { $0 / keyLength == $0 % keyLength ? 1 : 0 }
        })
        var expected = [Float]()
        var dropped = 0
        for b in 0..<batch {
            for h in 0..<heads {
                for i in 0..<queryLength {
                    for j in 0..<keyLength {
                        let kept = Philox.keeps(seed: seed, batch: b, head: h, row: i, column: j, probability: p)
                        expected.append(kept ? (1 / (1 - p)) / Float(keyLength) : 0)
                        if !kept { dropped += 1 }
                    }
                }
            }
        }
        XCTAssertTrue((expected.count / 5..<expected.count / 2).contains(dropped), "about 30% dropped: \(dropped) of \(expected.count)")
        func check(_ output: Tensor<Float>, _ context: String) {
            for (index, (a, e)) in zip(output.scalars, expected).enumerated() where (a == 0) != (e == 0) || abs(a - e) > e.ulp {
                return XCTFail("cell \(index): \(a), expected \(e), \(context)")
            }
        }
        try forEachKernelPath { path in
            var first: Tensor<Float>?
            for threads in [1, 2, 3, 8] {
                let output = try scaledDotProductAttention(queries: q, keys: k, values: identity, scale: 0,
                                                           dropoutProbability: p, dropoutSeed: seed, threads: threads)
                check(output, "fused \(path), \(threads) threads")
                if let first { assertBitIdentical(output, first, "\(path), \(threads) threads vs 1") }
                first = first ?? output
            }
        }
        // The oracle on rows 0…19 (the cells of a row depend on its index only), to keep it fast.
        let firstRows = 20
        let qFirstRows = try Tensor<Float>.randomNormal([batch, heads, firstRows, 4], seed: 104)
        let reference = try scaledDotProductAttention(queries: qFirstRows, keys: k, values: identity, scale: 0, dropoutProbability: p,
                                                      dropoutSeed: seed, backend: .reference)
        for bh in 0..<(batch * heads) {
            let rows = (bh * firstRows * keyLength)..<((bh + 1) * firstRows * keyLength)
            let expectedRows = (bh * queryLength * keyLength)..<((bh * queryLength + firstRows) * keyLength)
            for (index, (a, e)) in zip(reference.scalars[rows], expected[expectedRows]).enumerated() where (a == 0) != (e == 0) || abs(a - e) > e.ulp {
                XCTFail("reference, (batch·heads) \(bh), cell \(index): \(a), expected \(e)")
                break
            }
        }
    }

    /// CausalSelfAttention in training: the fused output does not depend on the
    /// thread count and agrees with the oracle's (which drops the same cells).
    func testDropoutInTrainingCausalSelfAttentionFusedAgreesWithTheOracleForAnyThreadCount() throws {
        var layer = try CausalSelfAttention(dIn: 8, dOut: 8, contextLength: 80, dropoutProbability: 0.4, seed: 3)
        layer.isTraining = true
        layer.dropoutSeed = 77
        let x = try Tensor<Float>.randomNormal([2, 70, 8], seed: 103)
        layer.threads = 1
        let single = try layer(x)
        // Each training call takes the next dropout key: replay call 0 (key 77).
        for threads in [2, 3, 8] {
            layer.threads = threads
            layer.dropoutStream.position = 0
            assertBitIdentical(try layer(x), single, "\(threads) threads")
        }
        layer.backend = .reference
        layer.dropoutStream.position = 0
        assertClose(single, try layer(x), tolerance: 1e-5 / 0.6, "fused vs oracle in training")
        XCTAssertEqual(layer.lastDropoutKey, 77, "call 0 uses the seed itself")
    }

    // MARK: The command-line tool

    /// `attention sdpa` on a file whose row 1 keeps no key, whose key 3 is hidden
    /// from every row and holds NaN, and whose query row 2 holds NaN: out row 0 has
    /// the bits of the functional API, row 1 is 0 with logsumexp −∞, row 2 is NaN.
    /// With no keys at all, every row is 0 with logsumexp −∞. A NaN or −∞ --scale
    /// fails with one line on stderr and writes nothing.
    func testCommandLineToolFollowsTheDeadRowNaNZeroKeyAndScaleContracts() throws {
        let directory = try makeTemporaryDirectory()
        var q = try Tensor<Float>.randomNormal([1, 1, 3, 4], seed: 110)
        var k = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 111)
        var v = try Tensor<Float>.randomNormal([1, 1, 5, 2], seed: 112)
        q[0, 0, 2, 1] = .nan
        for d in 0..<4 { k[0, 0, 3, d] = .nan }
        for d in 0..<2 { v[0, 0, 3, d] = .nan }
        let keep = try Tensor<Bool>(shape: [3, 5], scalars: [true, true, false, false, true,
                                                            false, false, false, false, false,
                                                            true, false, true, false, true])
        var input = SafetensorsFile()
        input.set("q", q)
        input.set("k", k)
        input.set("v", v)
        input.set("mask_keep", keep)
        let inputURL = directory.appendingPathComponent("input.safetensors")
        try input.write(to: inputURL)
        let outputURL = directory.appendingPathComponent("out.safetensors")
        let run = try runAttentionExecutable(["sdpa", "--input", inputURL.path, "--output", outputURL.path])
        XCTAssertEqual(run.status, 0, run.standardError)
        let written = try SafetensorsFile(contentsOf: outputURL)
        let out = try written.floatTensor("out"), logsumexp = try written.floatTensor("logsumexp")
        let expected = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: .keep(keep))
        assertBitIdentical(Array(out.scalars[0..<2]), Array(expected.output.scalars[0..<2]), "row 0")
        XCTAssertEqual(logsumexp.scalars[0].bitPattern, expected.logsumexp.scalars[0].bitPattern, "row 0 logsumexp")
        XCTAssertEqual(Array(out.scalars[2..<4]), [0, 0], "row 1 sees no key")
        XCTAssertEqual(logsumexp.scalars[1], -.infinity, "row 1 logsumexp")
        XCTAssertTrue(out.scalars[4..<6].allSatisfy(\.isNaN) && logsumexp.scalars[2].isNaN, "row 2 has a NaN query")

        var noKeys = SafetensorsFile()
        noKeys.set("q", q)
        noKeys.set("k", try Tensor<Float>(shape: [1, 1, 0, 4], scalars: []))
        noKeys.set("v", try Tensor<Float>(shape: [1, 1, 0, 2], scalars: []))
        let noKeysURL = directory.appendingPathComponent("no-keys.safetensors")
        try noKeys.write(to: noKeysURL)
        let noKeysOutputURL = directory.appendingPathComponent("no-keys-out.safetensors")
        let noKeysRun = try runAttentionExecutable(["sdpa", "--input", noKeysURL.path, "--output", noKeysOutputURL.path])
        XCTAssertEqual(noKeysRun.status, 0, noKeysRun.standardError)
        let noKeysOutput = try SafetensorsFile(contentsOf: noKeysOutputURL)
        XCTAssertEqual(try noKeysOutput.floatTensor("out"), try Tensor(shape: [1, 1, 3, 2], repeating: 0))
        XCTAssertEqual(try noKeysOutput.floatTensor("logsumexp"), try Tensor(shape: [1, 1, 3], repeating: -.infinity))

        for scale in ["nan", "-inf"] {
            let rejectedURL = directory.appendingPathComponent("rejected.safetensors")
            let rejected = try runAttentionExecutable(["sdpa", "--input", inputURL.path, "--output", rejectedURL.path, "--scale=\(scale)"])
            XCTAssertNotEqual(rejected.status, 0, "--scale \(scale)")
            XCTAssertEqual(rejected.standardError.split(separator: "\n").count, 1, "one line: \(rejected.standardError)")
            XCTAssertTrue(rejected.standardError.contains("scale"), rejected.standardError)
            XCTAssertFalse(FileManager.default.fileExists(atPath: rejectedURL.path), "--scale \(scale) wrote a file")
        }
    }
}
