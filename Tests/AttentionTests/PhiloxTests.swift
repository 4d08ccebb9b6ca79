import CAttention
import XCTest
@testable import Attention

/// Known-answer vectors of Philox-4x32-10 from Random123's kat_vectors
/// (Salmon et al. 2011), checked against both implementations.
final class PhiloxTests: XCTestCase {
    typealias Vector = (counter: [UInt32], key: [UInt32], expected: [UInt32])
    let knownAnswers: [Vector] = [
        ([0, 0, 0, 0], [0, 0], [0x6627_e8d5, 0xe169_c58d, 0xbc57_ac4c, 0x9b00_dbd8]),
        ([0xffff_ffff, 0xffff_ffff, 0xffff_ffff, 0xffff_ffff], [0xffff_ffff, 0xffff_ffff],
         [0x408f_276d, 0x41c8_3b0e, 0xa20b_c7c6, 0x6d54_51fd]),
        ([0x243f_6a88, 0x85a3_08d3, 0x1319_8a2e, 0x0370_7344], [0xa409_3822, 0x299f_31d0],
         [0xd16c_fe09, 0x94fd_cceb, 0x5001_e420, 0x2412_6ea1]),
    ]

    func testSwiftPhiloxMatchesKnownAnswers() {
        for vector in knownAnswers {
            let out = Philox.philox4x32_10(
                counter: (vector.counter[0], vector.counter[1], vector.counter[2], vector.counter[3]),
                key: (vector.key[0], vector.key[1]))
            XCTAssertEqual([out.0, out.1, out.2, out.3], vector.expected)
        }
    }

    func testKernelPhiloxMatchesKnownAnswers() {
        for vector in knownAnswers {
            var out = [UInt32](repeating: 0, count: 4)
            attn_philox4x32_10(vector.counter, vector.key, &out)
            XCTAssertEqual(out, vector.expected)
        }
    }

    func testKeepDecisionsAgreeAndHaveTheRightRate() {
        let probability: Float = 0.3
        var kept = 0
        let cells = 4096
        for cell in 0..<cells {
            let (row, column) = (cell / 64, cell % 64)
            let swift = Philox.keeps(seed: 0xDEAD_BEEF_1234, batch: 1, head: 2, row: row, column: column, probability: probability)
            let c = attn_philox_keep(0xDEAD_BEEF_1234, 1, 2, Int64(row), Int64(column), probability) != 0
            XCTAssertEqual(swift, c, "cell (\(row), \(column))")
            if swift { kept += 1 }
        }
        // Binomial(4096, 0.7): mean 2867, sd 29; 6 sd either side.
        XCTAssertEqual(Double(kept), 0.7 * Double(cells), accuracy: 6 * 29)
    }
}
