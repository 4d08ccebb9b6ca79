import CAttention
import XCTest

/// `attn_read_bandwidth_gbps`, the roof the benchmarks compare against: its
/// threads run their passes in step (a barrier before each), whatever their
/// number, and it answers 0 rather than a made-up figure when there is nothing
/// to measure.
final class ReadBandwidthTests: XCTestCase {
    func testNoBytesGivesZero() {
        XCTAssertEqual(attn_read_bandwidth_gbps(1, 0, 0.01), 0)
        XCTAssertEqual(attn_read_bandwidth_gbps(2, -1, 0.01), 0)
    }

    /// One thread, two, and counts that do not divide the work evenly (or
    /// exceed the cores): every one finishes its synchronised passes and
    /// gives a finite, positive rate.
    func testEveryThreadCountGivesAFinitePositiveRoof() {
        for threads: Int32 in [0, 1, 2, 3, 5] {
            let roof = attn_read_bandwidth_gbps(threads, 1 << 20, 0.01)
            XCTAssertGreaterThan(roof, 0, "threads \(threads)")
            XCTAssertTrue(roof.isFinite, "threads \(threads)")
        }
    }
}
