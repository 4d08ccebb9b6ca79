import CAttention
import XCTest
@testable import Attention

/// Regression tests for what the fuzzers in `Fuzz/` found (see Fuzz/README.md);
/// the reproducing inputs are in `Fuzz/sdpa/corpus/found-*`.
final class FuzzFindingsTests: XCTestCase {
    /// A NaN in an unmasked query makes its row NaN even when dropout drops every
    /// cell of the row: a dropped weight is multiplied by 0, and NaN · 0 is NaN.
    /// (The oracle used to set dropped weights to 0, hiding the NaN; the kernel
    /// always kept it.)
    func testNaNRowStaysNaNWhenDropoutDropsEveryCell() throws {
        let probability: Float = 0.9
        let keyLength = 3
        // The first seed whose keep decisions drop every cell of row 0.
        let seed = try XCTUnwrap((UInt64(0)..<10_000).first { seed in
            (0..<keyLength).allSatisfy { column in
                !Philox.keeps(seed: seed, batch: 0, head: 0, row: 0, column: column, probability: probability)
            }
        })
        let q = try Tensor<Float>(shape: [1, 1, 1, 2], scalars: [.nan, 1])
        let k = try Tensor<Float>.randomNormal([1, 1, keyLength, 2], seed: 1)
        let v = try Tensor<Float>.randomNormal([1, 1, keyLength, 2], seed: 2)
        for backend in [AttentionBackend.fused, .reference] {
            let result = try scaledDotProductAttentionWithLogsumexp(
                queries: q, keys: k, values: v, dropoutProbability: probability, dropoutSeed: seed, backend: backend)
            XCTAssertTrue(result.output.scalars.allSatisfy(\.isNaN), "\(backend): \(result.output.scalars)")
            XCTAssertTrue(result.logsumexp.scalars.allSatisfy(\.isNaN), "\(backend): \(result.logsumexp.scalars)")
        }
    }

    /// With no keys, the C API requires neither a query nor a mask pointer (see
    /// attention.h's validation); the kernel must then not read through them
    /// (it used to pack the NULL query, and to offset a NULL mask).
    func testNullQueryAndMaskAreNotTouchedWithoutKeys() {
        var output = [Float](repeating: .nan, count: 2 * 3 * 4)
        var logsumexp = [Float](repeating: .nan, count: 2 * 3)
        var params = attn_params()
        params.batch = 2
        params.query_heads = 1
        params.kv_heads = 1
        params.query_length = 3
        params.key_length = 0
        params.head_dim = 4
        params.value_dim = 4
        params.query_strides = (12, 12, 4, 1)
        params.output_strides = (12, 12, 4, 1)
        params.logsumexp_strides = (3, 3, 1)
        params.scale = 0.5
        params.mask_kind = ATTN_MASK_KEEP
        params.mask_strides = (3, 3, 1, 1)
        let status = output.withUnsafeMutableBufferPointer { out in
            logsumexp.withUnsafeMutableBufferPointer { lse in
                params.output = out.baseAddress
                params.logsumexp = lse.baseAddress
                return attn_sdpa_forward(&params)  // query, key, value and mask are NULL
            }
        }
        XCTAssertEqual(status, ATTN_OK)
        XCTAssertEqual(output, [Float](repeating: 0, count: output.count))
        XCTAssertEqual(logsumexp, [Float](repeating: -.infinity, count: logsumexp.count))
    }
}
