import CAttention
import XCTest
@testable import Attention

/// `Linear` on 1–8 rows (a decoding step's projections) runs as a matrix-vector
/// product on a packed copy of the weight; every row keeps the bits it has in a
/// call of many rows (the tile product on the unpacked weight), on every
/// kernel path, under both drivers and any worker count: a KV-cache decode step
/// that projects one token equals the full causal forward's row.
final class LinearFewRowsTests: XCTestCase {
    override func tearDown() {
        KernelThreading.override = nil
    }

    private var drivers: [AttentionThreading.Driver] {
        AttentionThreading.isOpenMPAvailable ? [.openMP, .dispatch] : [.dispatch]
    }

    private func bits(_ tensor: Tensor<Float>) -> [UInt32] { tensor.scalars.map(\.bitPattern) }

    /// Rows 0 ..< count of a [rows, width] tensor.
    private func firstRows(_ tensor: Tensor<Float>, _ count: Int) throws -> Tensor<Float> {
        let width = tensor.shape[1]
        return try Tensor(shape: [count, width], scalars: Array(tensor.scalars[0..<(count * width)]))
    }

    /// Shapes with `in` and `out` on and off multiples of 16 (the panel width)
    /// and of 64 (the tile), with and without bias.
    func testFewRowsHaveTheBitsOfTheSameRowsInA64RowCall() throws {
        let shapes = [(in: 37, out: 45), (in: 16, out: 16), (in: 100, out: 17), (in: 64, out: 130), (in: 1, out: 1), (in: 300, out: 33)]
        try forEachKernelPath { path in
            for (index, shape) in shapes.enumerated() {
                for hasBias in [false, true] {
                    let layer = try Linear(inFeatures: shape.in, outFeatures: shape.out, bias: hasBias, seed: UInt64(index))
                    let x = try Tensor<Float>.randomNormal([64, shape.in], seed: UInt64(100 + index))
                    KernelThreading.override = .dispatch
                    let full = try layer(x, threads: 1)
                    for driver in drivers {
                        KernelThreading.override = driver
                        for rows in [1, 2, 3, 4, 5, 7, 8, 9] {
                            let few = try firstRows(x, rows)
                            for workers in [1, 2, 3] {
                                XCTAssertEqual(
                                    bits(try layer(few, threads: workers)), bits(try firstRows(full, rows)),
                                    "\(path) \(shape) bias \(hasBias) \(rows) rows \(driver) \(workers) workers")
                            }
                        }
                    }
                }
            }
        }
    }

    /// A decode-sized layer (768 → 768, GPT-2 small): one row equals row 0 of 64.
    func testOneRowOfADecodeSizedLayerEqualsItsRowIn64() throws {
        let layer = try Linear(inFeatures: 768, outFeatures: 768, bias: true, seed: 3)
        let x = try Tensor<Float>.randomNormal([64, 768], seed: 4)
        try forEachKernelPath { path in
            let full = try layer(x, threads: 2)
            for rows in [1, 8] {
                XCTAssertEqual(bits(try layer(try firstRows(x, rows), threads: 1)), bits(try firstRows(full, rows)), "\(path), \(rows) rows")
            }
        }
    }

    /// Infinities, NaN and signed zeros go through the same operations: the same bits.
    func testSpecialValuesGiveTheBitsOfTheTileProduct() throws {
        var weight = try Tensor<Float>.randomNormal([20, 18], seed: 8).scalars
        weight[5] = .infinity
        weight[40] = -.infinity
        weight[77] = .nan
        weight[100] = -0.0
        let layer = try Linear(weight: try Tensor(shape: [20, 18], scalars: weight), bias: try Tensor(shape: [20], repeating: -0.0))
        var x = try Tensor<Float>.randomNormal([64, 18], seed: 9).scalars
        x[3] = 1e38
        x[4] = -0.0
        x[20] = .infinity
        let input = try Tensor(shape: [64, 18], scalars: x)
        try forEachKernelPath { path in
            let full = try layer(input, threads: 1)
            for rows in [1, 2, 6] {
                XCTAssertEqual(bits(try layer(try firstRows(input, rows))), bits(try firstRows(full, rows)), "\(path), \(rows) rows")
            }
        }
    }

    /// Empty inputs: in = 0 gives the bias (or +0), out = 0 an empty row, 0 rows nothing.
    func testZeroSizesGiveBiasZerosOrNothing() throws {
        let bias = try Tensor<Float>(shape: [3], scalars: [1, -2, -0.0])
        let noInputs = try Linear(weight: try Tensor(shape: [3, 0], scalars: []), bias: bias)
        XCTAssertEqual(bits(try noInputs(try Tensor(shape: [2, 0], scalars: []))), bits(try Tensor(shape: [2, 3], scalars: [1, -2, 0, 1, -2, 0])))
        let noOutputs = try Linear(weight: try Tensor(shape: [0, 5], scalars: []))
        XCTAssertEqual(try noOutputs(try Tensor(shape: [1, 5], repeating: 1)).shape, [1, 0])
        let layer = try Linear(inFeatures: 5, outFeatures: 4, seed: 1)
        XCTAssertEqual(try layer(try Tensor(shape: [0, 5], scalars: [])).shape, [0, 4])
    }

    /// The packing is a copy made on the first few-row call: a changed weight
    /// (an optimizer step) is what the next few-row call uses.
    func testAChangedWeightReachesTheNextFewRowCall() throws {
        var layer = try Linear(inFeatures: 40, outFeatures: 24, seed: 2)
        let x = try Tensor<Float>.randomNormal([64, 40], seed: 6)
        _ = try layer(try firstRows(x, 1))  // packs the first weight
        var sgd = SGD(learningRate: 0.5)
        let gradients = try layer.backward(input: x, outputGradient: try Tensor<Float>.randomNormal([64, 24], seed: 7))
        try layer.update(with: gradients.parameters, using: &sgd)
        let full = try layer(x)
        XCTAssertEqual(bits(try layer(try firstRows(x, 1))), bits(try firstRows(full, 1)))
        var copy = layer  // a copy keeps its own weight and packing
        copy.weight = try Tensor(shape: [24, 40], repeating: 0.25)
        XCTAssertEqual(bits(try layer(try firstRows(x, 1))), bits(try firstRows(full, 1)), "the original is unchanged")
        XCTAssertEqual(try copy(try firstRows(x, 1)).scalars, try copy(x).scalars.prefix(24).map { $0 })
    }

    /// The C entry points: a packing reports its bytes (16-column panels, zero-padded)
    /// and bad arguments get a status, never a crash.
    func testPackedEntryPointsValidateTheirArguments() throws {
        let weight = [Float](repeating: 1, count: 17 * 3)
        var packed: OpaquePointer?
        XCTAssertEqual(attn_linear_pack(weight, 3, 17, &packed), ATTN_OK)
        defer { attn_linear_packed_destroy(packed) }
        XCTAssertEqual(attn_linear_packed_bytes(packed), 32 * 3 * 4)
        var y = [Float](repeating: 0, count: 17)
        XCTAssertEqual(attn_linear_packed_forward(nil, 1, packed, nil, &y, 1), ATTN_ERROR_NULL_POINTER)
        XCTAssertEqual(attn_linear_packed_forward([1, 2, 3], -1, packed, nil, &y, 1), ATTN_ERROR_NEGATIVE_SIZE)
        XCTAssertEqual(attn_linear_packed_forward([1, 2, 3], 1, nil, nil, &y, 1), ATTN_ERROR_NULL_POINTER)
        XCTAssertEqual(attn_linear_packed_forward([1, 2, 3], 1, packed, nil, &y, 1), ATTN_OK)
        XCTAssertEqual(y, [Float](repeating: 6, count: 17))
        XCTAssertEqual(attn_linear_packed_plan_create([1, 2, 3], 1, packed, nil, &y, 1, nil), ATTN_ERROR_NULL_POINTER)
        // A row count whose x or y would not fit in memory is an overflow, not an
        // out-of-bounds read or a wrapped task count.
        for rows in [Int64.max, Int64.max / 4, Int64.max / 17 + 1] {
            XCTAssertEqual(attn_linear_packed_forward([1, 2, 3], rows, packed, nil, &y, 1), ATTN_ERROR_SIZE_OVERFLOW, "\(rows) rows")
            XCTAssertEqual(attn_linear_forward([1, 2, 3], rows, 3, weight, nil, 17, &y, 1), ATTN_ERROR_SIZE_OVERFLOW, "\(rows) rows, tile path")
        }
        var other: OpaquePointer?
        XCTAssertEqual(attn_linear_pack(weight, -1, 17, &other), ATTN_ERROR_NEGATIVE_SIZE)
        XCTAssertEqual(attn_linear_pack(nil, 3, 17, &other), ATTN_ERROR_NULL_POINTER)
        XCTAssertNil(other)
    }
}
