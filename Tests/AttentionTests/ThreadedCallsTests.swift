import Dispatch
import Foundation
import XCTest
@testable import Attention

/// The kernel called from several threads at once, each call itself running an
/// OpenMP team: results must be bit for bit those of a lone single-threaded
/// call. `.ci/run` runs this under ThreadSanitizer (with OpenMP's Archer tool).
final class ThreadedCallsTests: XCTestCase {
    /// Results written by concurrent iterations, one slot each.
    private final class Slots: @unchecked Sendable {
        private let lock = NSLock()
        private var values: [Int: [Float]] = [:]
        func set(_ index: Int, _ value: [Float]) { lock.lock(); values[index] = value; lock.unlock() }
        func get(_ index: Int) -> [Float]? { lock.lock(); defer { lock.unlock() }; return values[index] }
    }

    func testConcurrentCallsAgreeWithSerialOnesBitForBit() throws {
        struct Problem: Sendable {
            var q, k, v: Tensor<Float>
            var mask: AttentionMask
            var dropout: Float
        }
        let problems: [Problem] = try (0..<4).map { index in
            let seed = UInt64(10 * index + 1)
            let heads = index % 2 == 0 ? 4 : 2
            return Problem(
                q: try .randomNormal([2, 4, 70, 24], seed: seed),
                k: try .randomNormal([2, heads, 90, 24], seed: seed + 1),
                v: try .randomNormal([2, heads, 90, 16], seed: seed + 2),
                mask: index == 1 ? .causal(.bottomRight) : index == 2 ? .causal(.topLeft) : .none,
                dropout: index == 3 ? 0.25 : 0)
        }
        @Sendable func run(_ problem: Problem, threads: Int) throws -> [Float] {
            try scaledDotProductAttention(
                queries: problem.q, keys: problem.k, values: problem.v, mask: problem.mask,
                dropoutProbability: problem.dropout, dropoutSeed: 7, threads: threads
            ).scalars
        }
        let expected = try problems.map { try run($0, threads: 1) }

        let slots = Slots()
        let calls = 8
        DispatchQueue.concurrentPerform(iterations: calls) { call in
            if let result = try? run(problems[call % problems.count], threads: 2) { slots.set(call, result) }
        }
        for call in 0..<calls {
            let result = try XCTUnwrap(slots.get(call), "call \(call) threw")
            XCTAssertEqual(result, expected[call % problems.count], "call \(call) differs from the serial result")
        }
    }

    func testConcurrentLayersAgreeWithSerialOnes() throws {
        let layer = try MultiHeadAttention(dIn: 32, dOut: 32, heads: 4, causal: .topLeft, contextLength: 64)
        let inputs = try (0..<4).map { try Tensor<Float>.randomNormal([2, 40, 32], seed: UInt64(100 + $0)) }
        let expected = try inputs.map { try layer($0).scalars }
        let slots = Slots()
        DispatchQueue.concurrentPerform(iterations: 8) { call in
            if let result = try? layer(inputs[call % inputs.count]).scalars { slots.set(call, result) }
        }
        for call in 0..<8 {
            let result = try XCTUnwrap(slots.get(call), "call \(call) threw")
            XCTAssertEqual(result, expected[call % inputs.count], "call \(call) differs from the serial result")
        }
    }
}
