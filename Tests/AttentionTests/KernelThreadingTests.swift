import CAttention
import XCTest
@testable import Attention

/// Every call is a plan of rounds that either driver runs — OpenMP (where the C
/// target has it) or Swift's Dispatch: both must give the same bits for any
/// worker count, split-KV and the layers' projections included.
final class KernelThreadingTests: XCTestCase {
    override func tearDown() {
        KernelThreading.override = nil
    }

    /// The drivers to compare: OpenMP only where compiled in.
    private var drivers: [AttentionThreading.Driver] {
        AttentionThreading.isOpenMPAvailable ? [.openMP, .dispatch] : [.dispatch]
    }

    func testDispatchDriverMatchesOneWorkerBitForBit() throws {
        let q = try Tensor<Float>.randomNormal([2, 4, 130, 24], seed: 11)
        let k = try Tensor<Float>.randomNormal([2, 2, 150, 24], seed: 12)
        let v = try Tensor<Float>.randomNormal([2, 2, 150, 20], seed: 13)
        for mask: AttentionMask in [.none, .causal(.bottomRight)] {
            KernelThreading.override = .dispatch
            let expected = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: 1)
            for driver in drivers {
                KernelThreading.override = driver
                for workers in [1, 2, 3, 8] {
                    let actual = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, mask: mask, threads: workers)
                    XCTAssertEqual(actual.output, expected.output, "\(mask), \(workers) \(driver) workers")
                    XCTAssertEqual(actual.logsumexp, expected.logsumexp, "\(mask), \(workers) \(driver) workers")
                }
            }
        }
    }

    /// Decoding one head over 2000 keys: with two or more workers the plan
    /// splits the keys into 512-key chunks (split-KV) under either driver, with
    /// the bits of the unsplit one-worker call.
    func testSplitKeysRunUnderBothDriversWithTheSameBits() throws {
        let q = try Tensor<Float>.randomNormal([1, 1, 1, 64], seed: 21)
        let k = try Tensor<Float>.randomNormal([1, 1, 2000, 64], seed: 22)
        let v = try Tensor<Float>.randomNormal([1, 1, 2000, 48], seed: 23)
        KernelThreading.override = .dispatch
        let expected = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, threads: 1)
        for driver in drivers {
            KernelThreading.override = driver
            for workers in [2, 3, 4] {
                let actual = try scaledDotProductAttentionWithLogsumexp(queries: q, keys: k, values: v, threads: workers)
                XCTAssertEqual(actual.output, expected.output, "\(driver), \(workers) workers")
                XCTAssertEqual(actual.logsumexp, expected.logsumexp, "\(driver), \(workers) workers")
            }
        }
    }

    /// The plan itself: a split decode has a chunk round and a merge round; a
    /// prefill of several query tiles a value-check round and a row-tile round;
    /// workers never exceed the widest round.
    func testPlansHaveTheRoundsTheHeaderDescribes() throws {
        let query = [Float](repeating: 0.5, count: 200 * 16)
        let key = [Float](repeating: 0.25, count: 1100 * 16)
        var output = [Float](repeating: 0, count: 200 * 16)
        func rounds(queryLength: Int64, workers: Int32) -> [Int64] {
            query.withUnsafeBufferPointer { q in
                key.withUnsafeBufferPointer { k in
                    output.withUnsafeMutableBufferPointer { out in
                        var p = attn_params()
                        p.batch = 1; p.query_heads = 1; p.kv_heads = 1
                        p.query_length = queryLength; p.key_length = 1100; p.head_dim = 16; p.value_dim = 16
                        p.query = q.baseAddress; p.key = k.baseAddress; p.value = k.baseAddress; p.output = out.baseAddress
                        p.query_strides = (0, 0, 16, 1); p.key_strides = (0, 0, 16, 1)
                        p.value_strides = (0, 0, 16, 1); p.output_strides = (0, 0, 16, 1)
                        p.scale = 0.25; p.num_threads = workers
                        var plan: OpaquePointer?
                        XCTAssertEqual(attn_sdpa_plan_create(&p, &plan), ATTN_OK)
                        defer { attn_plan_destroy(plan) }
                        XCTAssertLessThanOrEqual(attn_plan_workers(plan), max(1, workers))
                        return (0..<attn_plan_rounds(plan)).map { attn_plan_tasks(plan, $0) }
                    }
                }
            }
        }
        XCTAssertEqual(rounds(queryLength: 1, workers: 1), [1], "one worker: one task, no split")
        XCTAssertEqual(rounds(queryLength: 1, workers: 2), [3, 1], "split: 3 chunks of 512 keys, then 1 merge")
        XCTAssertEqual(rounds(queryLength: 200, workers: 2), [18, 4], "18 value tiles checked, then 4 query tiles")
        XCTAssertEqual(rounds(queryLength: 128, workers: 2), [2], "two query tiles: no value-check round")
    }

    /// A layer's `threads` reaches its projections: `Linear` under both drivers
    /// and any worker count gives the bits of one worker, for one row (the
    /// decode step, whose columns are split across workers) and for many.
    func testLinearGivesTheSameBitsForAnyWorkersAndDriver() throws {
        let layer = try Linear(inFeatures: 96, outFeatures: 200, seed: 5)
        for rows in [1, 3, 70] {
            let x = try Tensor<Float>.randomNormal([rows, 96], seed: UInt64(rows))
            KernelThreading.override = .dispatch
            let expected = try layer(x, threads: 1)
            for driver in drivers {
                KernelThreading.override = driver
                for workers in [2, 3, 8] {
                    XCTAssertEqual(try layer(x, threads: workers).scalars, expected.scalars, "\(rows) rows, \(driver), \(workers)")
                }
            }
        }
        XCTAssertThrowsError(try layer(try Tensor<Float>.randomNormal([1, 96], seed: 1), threads: 0))
    }

    /// The float32 attention weights and scores are plans too: the same bits
    /// under both drivers and any worker count.
    func testWeightsAndScoresGiveTheSameBitsForAnyWorkersAndDriver() throws {
        let q = try Tensor<Float>.randomNormal([1, 4, 70, 16], seed: 31)
        let k = try Tensor<Float>.randomNormal([1, 2, 90, 16], seed: 32)
        KernelThreading.override = .dispatch
        let weights = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: .causal(.bottomRight), threads: 1)
        let scores = try scaledDotProductAttentionScores(queries: q, keys: k, mask: .causal(.bottomRight), threads: 1)
        for driver in drivers {
            KernelThreading.override = driver
            for workers in [2, 3] {
                let w = try scaledDotProductAttentionWeights(queries: q, keys: k, mask: .causal(.bottomRight), threads: workers)
                let s = try scaledDotProductAttentionScores(queries: q, keys: k, mask: .causal(.bottomRight), threads: workers)
                XCTAssertEqual(w.scalars, weights.scalars, "weights, \(driver), \(workers) workers")
                XCTAssertEqual(s.scalars, scores.scalars, "scores, \(driver), \(workers) workers")
            }
        }
    }

    func testIdleWaitCanBeSetAndReadBack() {
        let before = AttentionThreading.idleWait
        defer { AttentionThreading.idleWait = before }
        for policy in AttentionThreading.IdleWait.allCases {
            AttentionThreading.idleWait = policy
            XCTAssertEqual(AttentionThreading.idleWait, policy)
        }
        XCTAssertEqual(attn_set_idle_wait(attn_idle_wait(rawValue: 7)), 0, "an unknown policy is refused")
    }

    func testChoosingOpenMPWithoutItFallsBackToDispatch() {
        let before = AttentionThreading.driver
        defer { AttentionThreading.driver = before }
        AttentionThreading.driver = .openMP
        XCTAssertEqual(AttentionThreading.driver, AttentionThreading.isOpenMPAvailable ? .openMP : .dispatch)
        AttentionThreading.driver = .dispatch
        XCTAssertEqual(AttentionThreading.driver, .dispatch)
    }
}
