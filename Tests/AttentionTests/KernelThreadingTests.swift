import XCTest
@testable import Attention

/// The kernel's tasks can be driven by OpenMP or by Swift's Dispatch (where the
/// C target has no OpenMP); both must give the same bits for any worker count.
final class KernelThreadingTests: XCTestCase {
    override func tearDown() {
        KernelThreading.override = nil
    }

    func testDispatchDriverMatchesOpenMPBitForBit() throws {
        let q = try Tensor<Float>.randomNormal([2, 4, 130, 24], seed: 11)
        let k = try Tensor<Float>.randomNormal([2, 2, 150, 24], seed: 12)
        let v = try Tensor<Float>.randomNormal([2, 2, 150, 20], seed: 13)
        for mask: AttentionMask in [.none, .causal(.bottomRight)] {
            KernelThreading.override = .openMP
            let expected = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: 2)
            KernelThreading.override = .dispatch
            for workers in [1, 2, 3, 8] {
                let actual = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: workers)
                XCTAssertEqual(actual.output, expected.output, "\(mask), \(workers) Dispatch workers")
                XCTAssertEqual(actual.logsumexp, expected.logsumexp, "\(mask), \(workers) Dispatch workers")
            }
        }
    }
}
