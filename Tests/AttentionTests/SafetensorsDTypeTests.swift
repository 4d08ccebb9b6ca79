import Foundation
import XCTest
@testable import Attention

/// Every dtype of the safetensors format: parsing, exact decoding of the float
/// formats, integer range checks, F16/BF16 writing, files produced by the
/// reference writer (Fixtures/dtypes/, made by make_dtype_fixtures.py there),
/// and `attention sdpa` on F16/BF16 inputs.
///
/// The conversions are checked against references written another way: values
/// computed in `Double` from sign, exponent and fraction, and rounding done by
/// `Double.rounded(.toNearestOrEven)` on the value scaled by its quantum.
final class SafetensorsDTypeTests: XCTestCase {
    // MARK: Helpers

    /// A safetensors byte string from a header text and a data buffer.
    private func file(_ header: String, _ buffer: [UInt8] = []) -> Data {
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: buffer)
        return data
    }

    private func fixture(_ name: String) throws -> URL {
        let fixtures = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        return fixtures.appendingPathComponent("dtypes/\(name).safetensors")
    }

    private func assertThrows<T>(
        _ expected: SafetensorsError, _ body: @autoclosure () throws -> T,
        file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try body(), file: file, line: line) { error in
            XCTAssertEqual(error as? SafetensorsError, expected, file: file, line: line)
        }
    }

    /// The value of a binary16 bit pattern, from its fields, in Double.
    private func referenceHalfValue(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 10) & 0x1F
        let fraction = Double(bits & 0x3FF)
        if exponent == 0x1F { return fraction == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * fraction * 0x1p-24 }
        return sign * (1024 + fraction) * pow(2, Double(exponent - 25))
    }

    /// The value of a bfloat16 bit pattern, from its fields, in Double.
    private func referenceBFloat16Value(_ bits: UInt16) -> Double {
        let sign: Double = bits & 0x8000 != 0 ? -1 : 1
        let exponent = Int(bits >> 7) & 0xFF
        let fraction = Double(bits & 0x7F)
        if exponent == 0xFF { return fraction == 0 ? sign * .infinity : .nan }
        if exponent == 0 { return sign * fraction * 0x1p-133 }
        return sign * (128 + fraction) * pow(2, Double(exponent - 134))
    }

    /// The pattern of a format with `fractionBits` fraction bits, smallest
    /// normal exponent `minExponent` and largest finite `maxFinite`, nearest to
    /// `value` (not NaN): rounding in Double on the value divided by its
    /// quantum, then encoding the rounded value field by field.
    private func referenceNarrowBits(_ value: Float, fractionBits: Int, minExponent: Int, maxFinite: Double) -> UInt16 {
        let sign: UInt16 = value.sign == .minus ? 0x8000 : 0
        let magnitude = Double(value.magnitude)
        let exponentBias = 1 - minExponent
        let infinity = sign | UInt16((2 * exponentBias + 1) << fractionBits)
        if magnitude.isInfinite { return infinity }
        if magnitude == 0 { return sign }
        let exponent = max(Int(magnitude.exponent), minExponent)
        let quantum = pow(2, Double(exponent - fractionBits))
        let rounded = (magnitude / quantum).rounded(.toNearestOrEven) * quantum
        if rounded > maxFinite { return infinity }
        let smallestNormal = pow(2, Double(minExponent))
        if rounded < smallestNormal {
            return sign | UInt16(rounded / pow(2, Double(minExponent - fractionBits)))
        }
        let roundedExponent = Int(rounded.exponent)
        let fraction = rounded / pow(2, Double(roundedExponent - fractionBits)) - pow(2, Double(fractionBits))
        return sign | UInt16(roundedExponent + exponentBias) << fractionBits | UInt16(fraction)
    }

    private func referenceHalfBits(_ value: Float) -> UInt16 {
        referenceNarrowBits(value, fractionBits: 10, minExponent: -14, maxFinite: 65504)
    }

    private func referenceBFloat16Bits(_ value: Float) -> UInt16 {
        referenceNarrowBits(value, fractionBits: 7, minExponent: -126, maxFinite: Double(Float(bitPattern: 0x7F7F_0000)))
    }

    /// Random floats: half of them with any bit pattern, half with an exponent
    /// in `exponents` (where the narrow format has its normals and subnormals).
    private func randomFloats(count: Int, exponents: ClosedRange<Int>, seed: UInt64) -> [Float] {
        var generator = SplitMix64(seed: seed)
        return (0..<count).map { index in
            let random = generator.next()
            if index % 2 == 0 { return Float(bitPattern: UInt32(truncatingIfNeeded: random)) }
            let exponent = exponents.lowerBound + Int(random % UInt64(exponents.count))
            let bits = UInt32(truncatingIfNeeded: random >> 32) & 0x8000_0000 | UInt32(exponent + 127) << 23
                | UInt32(truncatingIfNeeded: random >> 8) & 0x007F_FFFF
            return Float(bitPattern: bits)
        }
    }

    // MARK: Every dtype parses

    func testTheDTypesAreExactlyTheFormats() {
        // huggingface/safetensors 0.8, safetensors/src/tensor.rs, enum Dtype and bitsize().
        let reference: [String: Int] = [
            "BOOL": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8,
            "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
            "I32": 32, "U32": 32, "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
        ]
        XCTAssertEqual(Dictionary(uniqueKeysWithValues: SafetensorsDType.allCases.map { ($0.rawValue, $0.bitWidth) }), reference)
        XCTAssertEqual(SafetensorsDType.f4.byteSize, nil)
        XCTAssertEqual(SafetensorsDType.f6E2M3.byteSize, nil)
        XCTAssertEqual(SafetensorsDType.c64.byteSize, 8)
        XCTAssertEqual(SafetensorsDType.bf16.byteSize, 2)
    }

    func testEveryDTypeParsesAndKeepsItsBytes() throws {
        for dtype in SafetensorsDType.allCases {
            // Four elements fill whole bytes for every dtype (F6: 24 bits).
            let byteCount = 4 * dtype.bitWidth / 8
            let bytes = (0..<byteCount).map { UInt8(truncatingIfNeeded: 0x35 &* ($0 + 1)) }
            let header = #"{"__metadata__":{"format":"pt"},"t":{"dtype":"\#(dtype.rawValue)","shape":[2,2],"data_offsets":[0,\#(byteCount)]},"z":{"dtype":"\#(dtype.rawValue)","shape":[0],"data_offsets":[\#(byteCount),\#(byteCount)]}}"#
            let loaded = try SafetensorsFile(data: file(header, bytes))
            XCTAssertEqual(try loaded.dtype(of: "t"), dtype)
            XCTAssertEqual(try loaded.shape(of: "t"), [2, 2])
            XCTAssertEqual(Array(try loaded.data(of: "t")), bytes, "\(dtype)")
            XCTAssertEqual(try loaded.data(of: "z").count, 0)
            XCTAssertEqual(try SafetensorsFile(data: loaded.serialized()), loaded, "\(dtype) round-trips")

            // Exactly the accessors of its family read it.
            XCTAssertEqual((try? loaded.floatTensor("t"))?.shape == [2, 2], dtype.isFloatingPoint, "\(dtype) floatTensor")
            XCTAssertEqual((try? loaded.doubleTensor("t"))?.count == 4, dtype.isFloatingPoint, "\(dtype) doubleTensor")
            XCTAssertEqual((try? loaded.integerTensor("t", as: UInt64.self)) != nil
                           || (try? loaded.integerTensor("t", as: Int64.self)) != nil, dtype.isInteger, "\(dtype) integerTensor")
            XCTAssertEqual((try? loaded.boolTensor("t"))?.count == 4, dtype.isInteger || dtype == .bool, "\(dtype) boolTensor")
        }
    }

    func testSubByteTensorsMustFillWholeBytes() throws {
        assertThrows(
            .bitCountNotWholeBytes(tensor: "w", dtype: .f4, shape: [3], bits: 12),
            try SafetensorsFile(data: file(#"{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, [0, 0])))
        assertThrows(
            .bitCountNotWholeBytes(tensor: "w", dtype: .f6E3M2, shape: [1, 5], bits: 30),
            try SafetensorsFile(data: file(#"{"w":{"dtype":"F6_E3M2","shape":[1,5],"data_offsets":[0,4]}}"#, [0, 0, 0, 0])))
        let packed = try SafetensorsFile(data: file(#"{"w":{"dtype":"F4","shape":[2,3],"data_offsets":[0,3]}}"#, [0x12, 0x34, 0x56]))
        XCTAssertEqual(Array(try packed.data(of: "w")), [0x12, 0x34, 0x56])
        assertThrows(
            .byteCountMismatch(tensor: "w", dtype: .f4, shape: [4], expected: 2, actual: 4),
            try SafetensorsFile(data: file(#"{"w":{"dtype":"F4","shape":[4],"data_offsets":[0,4]}}"#, [0, 0, 0, 0])))
        assertThrows(
            .shapeOverflow(tensor: "w", shape: [4_611_686_018_427_387_904], dtype: .f4),
            try SafetensorsFile(data: file(#"{"w":{"dtype":"F4","shape":[4611686018427387904],"data_offsets":[0,0]}}"#)))
    }

    func testUnknownDTypeStringIsStillATypedError() {
        assertThrows(.unsupportedDType(tensor: "q", dtype: "Q4_K"),
                     try SafetensorsFile(data: file(#"{"q":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}"#, [0])))
        assertThrows(.unsupportedDType(tensor: "q", dtype: "f16"),
                     try SafetensorsFile(data: file(#"{"q":{"dtype":"f16","shape":[1],"data_offsets":[0,2]}}"#, [0, 0])))
    }

    // MARK: A file from the reference writer

    func testPublishedStyleCheckpointLoadsWhole() throws {
        let file = try SafetensorsFile(contentsOf: try fixture("checkpoint"))
        XCTAssertEqual(file.metadata, ["format": "pt"])
        XCTAssertEqual(file.tensorNames.count, 26)
        XCTAssertEqual(try file.dtype(of: "model.layers.0.self_attn.q_proj.weight"), .bf16)
        XCTAssertEqual(try file.dtype(of: "model.embed_tokens.weight"), .f16)
        XCTAssertEqual(try file.shape(of: "model.layers.0.self_attn.k_proj.weight"), [8, 16])

        // Its F32 tensor reads as before, next to BF16, F16, I64, F8 and C64 ones.
        let norm = try file.floatTensor("model.layers.0.input_layernorm.weight")
        XCTAssertEqual(norm.shape, [16])
        XCTAssertTrue(norm.scalars.allSatisfy { abs($0 - 1) < 0.5 })
        XCTAssertEqual(try file.int64Tensor("position_ids"), try Tensor<Int64>(shape: [1, 8], scalars: Array(0..<8)))
        XCTAssertEqual(try file.int32Tensor("position_ids").scalars, Array(0..<8))
        XCTAssertEqual(try file.boolTensor("attention_mask").scalars, [true, true, true, true, true, true, false, false])
        XCTAssertEqual(try file.data(of: "c64.values"), Data([1.0, 2.0, -0.5, -0.25].flatMap { (value: Float) in
            withUnsafeBytes(of: value.bitPattern.littleEndian, Array.init)
        }))
        // Re-serialised in this package's layout, it loads to the same tensors.
        XCTAssertEqual(try SafetensorsFile(data: file.serialized()), file)
    }

    /// Every floating-point tensor of the checkpoint decodes to the float32 that
    /// numpy/ml_dtypes compute (bit for bit; NaN as NaN), every integer tensor to
    /// its values.
    func testCheckpointDecodesAsNumpyAndMLDtypesConvert() throws {
        let file = try SafetensorsFile(contentsOf: try fixture("checkpoint"))
        let expected = try SafetensorsFile(contentsOf: try fixture("checkpoint_expected"))
        XCTAssertEqual(expected.tensorNames.count, 23)
        for name in expected.tensorNames {
            if try file.dtype(of: name).isFloatingPoint {
                let actual = try file.floatTensor(name), reference = try expected.floatTensor(name)
                XCTAssertEqual(actual.shape, reference.shape, name)
                for (index, (a, r)) in zip(actual.scalars, reference.scalars).enumerated() {
                    if r.isNaN {
                        XCTAssertTrue(a.isNaN, "\(name)[\(index)]: expected NaN, got \(a)")
                    } else {
                        XCTAssertEqual(a.bitPattern, r.bitPattern, "\(name)[\(index)]: expected \(r), got \(a)")
                    }
                }
                let doubles = try file.doubleTensor(name)
                if try file.dtype(of: name) != .f64 {
                    XCTAssertEqual(doubles.scalars.map { Float($0).bitPattern }, actual.scalars.map(\.bitPattern), name)
                }
            } else {
                XCTAssertEqual(try file.int64Tensor(name), try expected.int64Tensor(name), name)
            }
        }
    }

    func testEightBitFormatsDecodeToTheirDocumentedValues() throws {
        var file = SafetensorsFile()
        for dtype in [SafetensorsDType.f8E4M3, .f8E5M2, .f8E4M3FNUZ, .f8E5M2FNUZ, .f8E8M0] {
            try file.set(dtype.rawValue, dtype: dtype, shape: [256], data: Data((0...255).map { UInt8($0) }))
        }
        let e4m3 = try file.floatTensor("F8_E4M3").scalars
        XCTAssertEqual([e4m3[0x00], e4m3[0x01], e4m3[0x08], e4m3[0x38], e4m3[0x7E], e4m3[0xBE]], [0, 0x1p-9, 0x1p-6, 1, 448, -1.75 * 0x1p0])
        XCTAssertTrue(e4m3[0x7F].isNaN && e4m3[0xFF].isNaN)
        XCTAssertEqual(e4m3.filter(\.isNaN).count, 2, "E4M3 has two NaNs and no infinities")
        XCTAssertEqual(e4m3[0x80].bitPattern, (-Float.zero).bitPattern)
        let e5m2 = try file.floatTensor("F8_E5M2").scalars
        XCTAssertEqual([e5m2[0x01], e5m2[0x3C], e5m2[0x7B], e5m2[0x7C], e5m2[0xFC]], [0x1p-16, 1, 57344, .infinity, -.infinity])
        XCTAssertEqual(e5m2.filter(\.isNaN).count, 6)
        let e4m3fnuz = try file.floatTensor("F8_E4M3FNUZ").scalars
        XCTAssertEqual([e4m3fnuz[0x00], e4m3fnuz[0x01], e4m3fnuz[0x40], e4m3fnuz[0x7F]], [0, 0x1p-10, 1, 240])
        XCTAssertTrue(e4m3fnuz[0x80].isNaN)
        XCTAssertEqual(e4m3fnuz.filter(\.isNaN).count, 1)
        let e5m2fnuz = try file.floatTensor("F8_E5M2FNUZ").scalars
        XCTAssertEqual([e5m2fnuz[0x01], e5m2fnuz[0x40], e5m2fnuz[0x7F], e5m2fnuz[0xFF]], [0x1p-17, 1, 57344, -57344])
        XCTAssertEqual(e5m2fnuz.filter(\.isNaN).count, 1)
        let e8m0 = try file.floatTensor("F8_E8M0").scalars
        XCTAssertEqual([e8m0[0], e8m0[126], e8m0[127], e8m0[128], e8m0[254]], [0x1p-127, 0.5, 1, 2, 0x1p127])
        XCTAssertTrue(e8m0[255].isNaN)
    }

    // MARK: F16 and BF16 widening

    func testHalfWideningIsExactOnAll65536BitPatterns() {
        for bits in 0...UInt16.max {
            let actual = NarrowFloat.float(fromHalf: bits)
            let reference = referenceHalfValue(bits)
            if reference.isNaN {
                XCTAssertTrue(actual.isNaN, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(actual.sign == .minus, bits & 0x8000 != 0)
                XCTAssertEqual(actual.bitPattern & 0x007F_FFFF, UInt32(bits & 0x3FF) << 13, "payload of 0x\(String(bits, radix: 16))")
            } else {
                XCTAssertEqual(actual.bitPattern, Float(reference).bitPattern, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(Double(actual), reference, "0x\(String(bits, radix: 16)) is exact")
            }
        }
        XCTAssertEqual(NarrowFloat.float(fromHalf: 0x0001), 0x1p-24, "smallest subnormal")
        XCTAssertEqual(NarrowFloat.float(fromHalf: 0x03FF), 1023 * 0x1p-24, "largest subnormal")
        XCTAssertEqual(NarrowFloat.float(fromHalf: 0x0400), 0x1p-14, "smallest normal")
        XCTAssertEqual(NarrowFloat.float(fromHalf: 0x7BFF), 65504, "largest finite")
        XCTAssertEqual(NarrowFloat.float(fromHalf: 0xFC00), -.infinity)
        XCTAssertEqual(NarrowFloat.float(fromHalf: 0x8000).bitPattern, 0x8000_0000, "negative zero")
    }

    func testBFloat16WideningIsExactOnAll65536BitPatterns() {
        for bits in 0...UInt16.max {
            let actual = NarrowFloat.float(fromBFloat16: bits)
            let reference = referenceBFloat16Value(bits)
            if reference.isNaN {
                XCTAssertTrue(actual.isNaN, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(actual.bitPattern, UInt32(bits) << 16)
            } else {
                XCTAssertEqual(Double(actual), reference, "0x\(String(bits, radix: 16))")
                XCTAssertEqual(actual.sign == .minus, bits & 0x8000 != 0)
            }
        }
        XCTAssertEqual(NarrowFloat.float(fromBFloat16: 0x0001), 0x1p-133, "smallest subnormal")
        XCTAssertEqual(NarrowFloat.float(fromBFloat16: 0x7F7F), Float(bitPattern: 0x7F7F_0000), "largest finite")
    }

    // MARK: F16 and BF16 narrowing

    func testHalfNarrowingRoundsToNearestEven() {
        // Every binary16 value converts back to itself; quiet NaNs keep their payload.
        for bits in 0...UInt16.max {
            let value = NarrowFloat.float(fromHalf: bits)
            let back = NarrowFloat.half(from: value)
            if value.isNaN {
                XCTAssertTrue(back & 0x7C00 == 0x7C00 && back & 0x03FF != 0, "NaN 0x\(String(bits, radix: 16)) stays NaN")
                XCTAssertEqual(back & 0x8000, bits & 0x8000, "NaN keeps its sign")
                if bits & 0x0200 != 0 { XCTAssertEqual(back, bits, "quiet NaN payload") }
            } else {
                XCTAssertEqual(back, bits, "0x\(String(bits, radix: 16))")
            }
        }
        // Midpoints between neighbours go to the even one; a float either side of
        // the midpoint goes to the nearer one. The last midpoint, 65520, rounds
        // to infinity (0x7C00 is "even").
        for low in UInt16(0)..<0x7C00 {
            for sign: UInt16 in [0, 0x8000] {
                // Above the largest finite value, infinity stands where 65536 would be.
                let high = low == 0x7BFF ? 65536 : referenceHalfValue(low + 1)
                let midpoint = Float((Double(NarrowFloat.float(fromHalf: low)) + high) / 2)
                let signed = sign == 0 ? midpoint : -midpoint
                XCTAssertEqual(NarrowFloat.half(from: signed), sign | (low & 1 == 0 ? low : low + 1), "midpoint above 0x\(String(low, radix: 16))")
                XCTAssertEqual(NarrowFloat.half(from: sign == 0 ? midpoint.nextDown : -midpoint.nextDown), sign | low)
                XCTAssertEqual(NarrowFloat.half(from: sign == 0 ? midpoint.nextUp : -midpoint.nextUp), sign | (low + 1))
            }
        }
        XCTAssertEqual(NarrowFloat.half(from: 65519.996), 0x7BFF)
        XCTAssertEqual(NarrowFloat.half(from: 65520), 0x7C00)
        XCTAssertEqual(NarrowFloat.half(from: .greatestFiniteMagnitude), 0x7C00)
        XCTAssertEqual(NarrowFloat.half(from: -.infinity), 0xFC00)
        XCTAssertEqual(NarrowFloat.half(from: 0x1p-25), 0x0000, "tie between 0 and the smallest subnormal")
        XCTAssertEqual(NarrowFloat.half(from: Float(0x1p-25).nextUp), 0x0001)
        XCTAssertEqual(NarrowFloat.half(from: 3 * 0x1p-25), 0x0002, "tie between 1 and 2 units")
        XCTAssertEqual(NarrowFloat.half(from: -.leastNonzeroMagnitude), 0x8000)
        XCTAssertEqual(NarrowFloat.half(from: Float(0x1p-14).nextDown), 0x0400, "rounds up into the normals")
        XCTAssertEqual(NarrowFloat.half(from: .nan), 0x7E00)
        XCTAssertEqual(NarrowFloat.half(from: Float(bitPattern: 0x7F80_0001)) & 0x7E00, 0x7E00, "a signalling NaN becomes quiet, not infinity")
        // Random floats against the Double reference.
        for value in randomFloats(count: 200_000, exponents: -26...17, seed: 16) where !value.isNaN {
            XCTAssertEqual(NarrowFloat.half(from: value), referenceHalfBits(value), "\(value) (0x\(String(value.bitPattern, radix: 16)))")
        }
    }

    func testBFloat16NarrowingRoundsToNearestEven() {
        for bits in 0...UInt16.max {
            let value = NarrowFloat.float(fromBFloat16: bits)
            let back = NarrowFloat.bfloat16(from: value)
            if value.isNaN {
                XCTAssertTrue(back & 0x7F80 == 0x7F80 && back & 0x007F != 0, "NaN 0x\(String(bits, radix: 16)) stays NaN")
                XCTAssertEqual(back, bits | 0x0040, "NaN made quiet, sign and payload kept")
            } else {
                XCTAssertEqual(back, bits, "0x\(String(bits, radix: 16))")
            }
        }
        for low in UInt16(0)..<0x7F80 {
            let midpoint = Float(bitPattern: UInt32(low) << 16 | 0x8000)
            if low < 0x7F7F {
                XCTAssertEqual(Double(midpoint), (referenceBFloat16Value(low) + referenceBFloat16Value(low + 1)) / 2)
            }
            XCTAssertEqual(NarrowFloat.bfloat16(from: midpoint), low & 1 == 0 ? low : low + 1, "midpoint above 0x\(String(low, radix: 16))")
            XCTAssertEqual(NarrowFloat.bfloat16(from: -midpoint), 0x8000 | (low & 1 == 0 ? low : low + 1))
            XCTAssertEqual(NarrowFloat.bfloat16(from: midpoint.nextDown), low)
            XCTAssertEqual(NarrowFloat.bfloat16(from: midpoint.nextUp), low + 1)
        }
        XCTAssertEqual(NarrowFloat.bfloat16(from: .greatestFiniteMagnitude), 0x7F80, "rounds past the largest bfloat16")
        XCTAssertEqual(NarrowFloat.bfloat16(from: Float(bitPattern: 0x7F7F_7FFF)), 0x7F7F)
        XCTAssertEqual(NarrowFloat.bfloat16(from: .leastNonzeroMagnitude), 0x0000)
        XCTAssertEqual(NarrowFloat.bfloat16(from: Float(bitPattern: 0x0000_8001)), 0x0001, "subnormals round too")
        XCTAssertEqual(NarrowFloat.bfloat16(from: -.nan) & 0xFFC0, 0xFFC0)
        XCTAssertEqual(NarrowFloat.bfloat16(from: Float(bitPattern: 0x7F80_0001)), 0x7FC0, "a NaN with only low payload bits stays NaN")
        for value in randomFloats(count: 200_000, exponents: -126...127, seed: 17) where !value.isNaN {
            XCTAssertEqual(NarrowFloat.bfloat16(from: value), referenceBFloat16Bits(value), "\(value) (0x\(String(value.bitPattern, radix: 16)))")
        }
    }

    /// All 2³² floats against the Double references: minutes; set
    /// ATTENTION_EXHAUSTIVE_CONVERSIONS=1 to run it (release builds recommended).
    func testNarrowingOfEveryFloatMatchesTheReference() throws {
        try XCTSkipUnless(ProcessInfo.processInfo.environment["ATTENTION_EXHAUSTIVE_CONVERSIONS"] == "1",
                          "set ATTENTION_EXHAUSTIVE_CONVERSIONS=1 for the sweep over all 2^32 floats")
        var mismatches = 0
        for bits in 0...UInt32.max {
            let value = Float(bitPattern: bits)
            if value.isNaN { continue }
            if NarrowFloat.half(from: value) != referenceHalfBits(value) { mismatches += 1 }
            if NarrowFloat.bfloat16(from: value) != referenceBFloat16Bits(value) { mismatches += 1 }
        }
        XCTAssertEqual(mismatches, 0)
    }

    // MARK: F64 narrowing

    func testF64RoundsToNearestFloatTiesToEven() throws {
        let file = try SafetensorsFile(contentsOf: try fixture("checkpoint"))
        XCTAssertEqual(try file.dtype(of: "f64.edges"), .f64)
        let narrowed = try file.floatTensor("f64.edges").scalars.map(\.bitPattern)
        let expected: [UInt32] = [
            0x3F80_0000,  // 1 + 2^-24: tie, to even (1)
            0x3F80_0002,  // 1 + 3·2^-24: tie, to even (1 + 2^-22)
            0x3F80_0001,  // just above a tie: up
            0xBF80_0002,  // negative tie
            0x0000_0000,  // half the smallest subnormal: tie, to even (0)
            0x0000_0002,  // 1.5 subnormal units: tie, to even (2 units)
            0x7F80_0000,  // largest float + half an ulp: tie, to even (infinity)
            0x7F7F_FFFF,  // just below that: the largest float
            0x7F80_0000, 0xFF80_0000,  // 1e39, -1e300: ±infinity
            0x0000_0000, 0x0000_0000, 0x8000_0000,  // 1e-50, 0, -0
            0x7F80_0000, 0xFF80_0000,  // ±infinity
        ]
        XCTAssertEqual(Array(narrowed.prefix(expected.count)), expected)
        XCTAssertTrue(Float(bitPattern: narrowed[15]).isNaN, "NaN stays NaN")
        XCTAssertEqual(narrowed[16], 0x4049_0FDB, "π to nearest (Swift's Float.pi, 0x40490FDA, is rounded down)")
        // doubleTensor reads F64 exactly.
        let exact = try file.doubleTensor("f64.edges").scalars
        XCTAssertEqual(exact[0], 1 + 0x1p-24)
        XCTAssertEqual(exact[9], -1e300)
    }

    // MARK: Integers

    func testIntegerTensorsOfEveryWidthReadWithRangeChecks() throws {
        let file = try SafetensorsFile(contentsOf: try fixture("checkpoint"))
        XCTAssertEqual(try file.integerTensor("i8.extremes", as: Int8.self).scalars, [.min, -1, 0, .max])
        XCTAssertEqual(try file.integerTensor("i16.extremes", as: Int16.self).scalars, [.min, -1, 0, .max])
        XCTAssertEqual(try file.int32Tensor("i32.extremes").scalars, [.min, -1, 0, .max])
        XCTAssertEqual(try file.int64Tensor("i64.extremes").scalars, [.min, -1, 0, .max])
        XCTAssertEqual(try file.uint8Tensor("u8.extremes").scalars, [0, 1, .max])
        XCTAssertEqual(try file.integerTensor("u16.extremes", as: UInt16.self).scalars, [0, 1, .max])
        XCTAssertEqual(try file.integerTensor("u32.extremes", as: UInt32.self).scalars, [0, 1, .max])
        XCTAssertEqual(try file.integerTensor("u64.extremes", as: UInt64.self).scalars, [0, 1, 1 << 63, .max])
        // Widening always works.
        XCTAssertEqual(try file.int64Tensor("u32.extremes").scalars, [0, 1, 4_294_967_295])
        XCTAssertEqual(try file.int32Tensor("i8.extremes").scalars, [-128, -1, 0, 127])
        // A value that does not fit is named, with its index and the target's range.
        assertThrows(
            .valueOutOfRange(tensor: "u64.extremes", index: 2, value: "9223372036854775808", dtype: .u64,
                             targetType: "Int64", targetRange: "-9223372036854775808...9223372036854775807"),
            try file.int64Tensor("u64.extremes"))
        assertThrows(
            .valueOutOfRange(tensor: "i64.extremes", index: 0, value: "-9223372036854775808", dtype: .i64,
                             targetType: "Int32", targetRange: "-2147483648...2147483647"),
            try file.int32Tensor("i64.extremes"))
        assertThrows(
            .valueOutOfRange(tensor: "i8.extremes", index: 0, value: "-128", dtype: .i8, targetType: "UInt8", targetRange: "0...255"),
            try file.uint8Tensor("i8.extremes"))
        assertThrows(
            .valueOutOfRange(tensor: "u8.extremes", index: 2, value: "255", dtype: .u8, targetType: "Int8", targetRange: "-128...127"),
            try file.integerTensor("u8.extremes", as: Int8.self))
        // The wrong family is a dtype mismatch, not a conversion.
        assertThrows(.dtypeMismatch(tensor: "model.norm.weight", expected: SafetensorsFile.integerDTypes, actual: .f16),
                     try file.int64Tensor("model.norm.weight"))
        assertThrows(.dtypeMismatch(tensor: "attention_mask", expected: SafetensorsFile.integerDTypes, actual: .bool),
                     try file.int32Tensor("attention_mask"))
        assertThrows(.dtypeMismatch(tensor: "position_ids", expected: SafetensorsFile.floatDTypes, actual: .i64),
                     try file.floatTensor("position_ids"))
        assertThrows(.dtypeMismatch(tensor: "c64.values", expected: SafetensorsFile.floatDTypes, actual: .c64),
                     try file.doubleTensor("c64.values"))
        assertThrows(.dtypeMismatch(tensor: "model.norm.weight", expected: SafetensorsFile.boolDTypes, actual: .f16),
                     try file.boolTensor("model.norm.weight"))
    }

    func testBoolTensorReadsIntegersAsNonZero() throws {
        let file = try SafetensorsFile(contentsOf: try fixture("checkpoint"))
        XCTAssertEqual(try file.boolTensor("i64.extremes").scalars, [true, true, false, true])
        XCTAssertEqual(try file.boolTensor("u64.extremes").scalars, [false, true, true, true])
        XCTAssertEqual(try file.boolTensor("i16.extremes").scalars, [true, true, false, true])
        XCTAssertEqual(try file.boolTensor("position_ids").scalars, [false] + Array(repeating: true, count: 7))
    }

    // MARK: Writing

    func testWritingF16AndBF16RoundsAndReadsBack() throws {
        let values: [Float] = [1, -2, 0.1, 65504, 65520, 1e-8, 0x1p-24, .infinity, -.infinity, .nan, -0.0, 3.3895314e38, 3.4e38]
        let tensor = try Tensor<Float>(shape: [values.count], scalars: values)
        var file = SafetensorsFile()
        file.set("h", tensor, as: .f16)
        file.set("b", tensor, as: .bf16)
        file.set("d", tensor, as: .f64)
        file.set("f", tensor)
        let loaded = try SafetensorsFile(data: file.serialized())
        XCTAssertEqual(try loaded.dtype(of: "h"), .f16)
        XCTAssertEqual(try loaded.dtype(of: "b"), .bf16)
        XCTAssertEqual(try loaded.dtype(of: "d"), .f64)
        XCTAssertEqual(try loaded.dtype(of: "f"), .f32)

        let halfBits = try loaded.data(of: "h").withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }.map(UInt16.init(littleEndian:))
        XCTAssertEqual(halfBits, [0x3C00, 0xC000, 0x2E66, 0x7BFF, 0x7C00, 0x0000, 0x0001, 0x7C00, 0xFC00, 0x7E00, 0x8000, 0x7C00, 0x7C00])
        let bfloatBits = try loaded.data(of: "b").withUnsafeBytes { Array($0.bindMemory(to: UInt16.self)) }.map(UInt16.init(littleEndian:))
        XCTAssertEqual(bfloatBits, [0x3F80, 0xC000, 0x3DCD, 0x4780, 0x4780, 0x322C, 0x3380, 0x7F80, 0xFF80, 0x7FC0, 0x8000, 0x7F7F, 0x7F80])

        let readHalf = try loaded.floatTensor("h").scalars, readBFloat = try loaded.floatTensor("b").scalars
        for (index, value) in values.enumerated() {
            XCTAssertEqual(readHalf[index].bitPattern, NarrowFloat.float(fromHalf: NarrowFloat.half(from: value)).bitPattern, "\(value)")
            XCTAssertEqual(readBFloat[index].bitPattern, NarrowFloat.float(fromBFloat16: NarrowFloat.bfloat16(from: value)).bitPattern, "\(value)")
        }
        XCTAssertTrue(readHalf[9].isNaN && readBFloat[9].isNaN, "NaN stays NaN")
        XCTAssertEqual(try loaded.floatTensor("d").scalars.map(\.bitPattern), values.map(\.bitPattern), "F32 → F64 → F32 is exact")
        XCTAssertEqual(try loaded.floatTensor("f").scalars.map(\.bitPattern), values.map(\.bitPattern))
        XCTAssertEqual(try loaded.doubleTensor("d").scalars.map { Float($0).bitPattern }, values.map(\.bitPattern))
    }

    func testF16FileIsByteExact() throws {
        var file = SafetensorsFile()
        file.set("x", try Tensor<Float>(shape: [2], scalars: [1, -2]), as: .f16)
        let header = #"{"x":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#  // 54 bytes + 2 spaces
        XCTAssertEqual(Array(file.serialized()), [56, 0, 0, 0, 0, 0, 0, 0] + Array((header + "  ").utf8) + [0x00, 0x3C, 0x00, 0xC0])
    }

    func testIntegerAndDoubleTensorsRoundTripAsTheirOwnDTypes() throws {
        var file = SafetensorsFile()
        file.set("i8", try Tensor<Int8>(shape: [2], scalars: [.min, .max]))
        file.set("i16", try Tensor<Int16>(shape: [2], scalars: [.min, .max]))
        file.set("i32", try Tensor<Int32>(shape: [2], scalars: [.min, .max]))
        file.set("i64", try Tensor<Int64>(shape: [2], scalars: [.min, .max]))
        file.set("u8", try Tensor<UInt8>(shape: [2], scalars: [.min, .max]))
        file.set("u16", try Tensor<UInt16>(shape: [2], scalars: [.min, .max]))
        file.set("u32", try Tensor<UInt32>(shape: [2], scalars: [.min, .max]))
        file.set("u64", try Tensor<UInt64>(shape: [1, 2], scalars: [.min, .max]))
        file.set("f64", try Tensor<Double>(shape: [3], scalars: [1 + 0x1p-40, -.pi, .leastNonzeroMagnitude]))
        let loaded = try SafetensorsFile(data: file.serialized())
        XCTAssertEqual(
            try loaded.tensorNames.map { try loaded.dtype(of: $0) },
            [.f64, .i16, .i32, .i64, .i8, .u16, .u32, .u64, .u8])
        XCTAssertEqual(try loaded.integerTensor("i8", as: Int8.self).scalars, [.min, .max])
        XCTAssertEqual(try loaded.integerTensor("i16", as: Int16.self).scalars, [.min, .max])
        XCTAssertEqual(try loaded.int32Tensor("i32").scalars, [.min, .max])
        XCTAssertEqual(try loaded.int64Tensor("i64").scalars, [.min, .max])
        XCTAssertEqual(try loaded.uint8Tensor("u8").scalars, [.min, .max])
        XCTAssertEqual(try loaded.integerTensor("u16", as: UInt16.self).scalars, [.min, .max])
        XCTAssertEqual(try loaded.integerTensor("u32", as: UInt32.self).scalars, [.min, .max])
        XCTAssertEqual(try loaded.integerTensor("u64", as: UInt64.self), try Tensor<UInt64>(shape: [1, 2], scalars: [.min, .max]))
        XCTAssertEqual(try loaded.doubleTensor("f64").scalars, [1 + 0x1p-40, -.pi, .leastNonzeroMagnitude])
        XCTAssertEqual(Array(try loaded.data(of: "i16")), [0x00, 0x80, 0xFF, 0x7F], "little-endian")
    }

    func testRawSetValidatesTheByteCount() throws {
        var file = SafetensorsFile()
        try file.set("w", dtype: .f4, shape: [2, 2], data: Data([0x21, 0x43]))
        try file.set("s", dtype: .f8E8M0, shape: [2], data: Data([127, 128]))
        XCTAssertThrowsError(try file.set("bad", dtype: .c64, shape: [2], data: Data(count: 8))) { error in
            XCTAssertEqual(error as? SafetensorsError, .byteCountMismatch(tensor: "bad", dtype: .c64, shape: [2], expected: 16, actual: 8))
        }
        XCTAssertThrowsError(try file.set("odd", dtype: .f4, shape: [1], data: Data(count: 1))) { error in
            XCTAssertEqual(error as? SafetensorsError, .bitCountNotWholeBytes(tensor: "odd", dtype: .f4, shape: [1], bits: 4))
        }
        XCTAssertThrowsError(try file.set("neg", dtype: .u8, shape: [-1], data: Data())) { error in
            XCTAssertEqual(error as? SafetensorsError, .invalidShape(tensor: "neg", shape: [-1]))
        }
        XCTAssertEqual(file.tensorNames, ["s", "w"], "failed calls add nothing")
        let loaded = try SafetensorsFile(data: file.serialized())
        XCTAssertEqual(Array(try loaded.data(of: "w")), [0x21, 0x43])
        XCTAssertEqual(try loaded.floatTensor("s").scalars, [1, 2])
    }

    func testNewErrorMessagesAreOneLineAndSpecific() {
        let cases: [(SafetensorsError, [String])] = [
            (.valueOutOfRange(tensor: "ids", index: 3, value: "4294967296", dtype: .i64, targetType: "Int32",
                              targetRange: "-2147483648...2147483647"),
             ["\"ids\"", "element 3", "Int32", "-2147483648...2147483647", "got 4294967296", "I64"]),
            (.bitCountNotWholeBytes(tensor: "w", dtype: .f4, shape: [3], bits: 12), ["\"w\"", "whole number of bytes", "4 bits", "F4", "12 bits", "[3]"]),
            (.dtypeMismatch(tensor: "q", expected: SafetensorsFile.floatDTypes, actual: .i64),
             ["\"q\"", "expected F32, F16, BF16, F64", " or F8_E8M0", "got I64"]),
        ]
        for (error, fragments) in cases {
            let message = error.description
            XCTAssertFalse(message.contains("\n"), message)
            for fragment in fragments {
                XCTAssertTrue(message.contains(fragment), "\(message) lacks \(fragment)")
            }
        }
    }

    // MARK: attention sdpa on F16 and BF16 inputs

    /// `attention sdpa` reads q, k, v stored as F16 (and BF16 with an F16
    /// additive mask), computes in float32 on the widened values, and matches
    /// both the float64 attention of those values (within the golden tolerance)
    /// and, bit for bit, its own run on an F32 copy of them.
    func testSDPACommandReadsF16AndBF16Inputs() throws {
        let directory = try makeTemporaryDirectory()
        for name in ["sdpa_f16", "sdpa_bf16"] {
            let inputURL = try fixture(name)
            let input = try SafetensorsFile(contentsOf: inputURL)
            XCTAssertEqual(try input.dtype(of: "q"), name == "sdpa_f16" ? .f16 : .bf16)

            let outputURL = directory.appendingPathComponent("\(name).out.safetensors")
            let result = try runAttentionExecutable(["sdpa", "--input", inputURL.path, "--output", outputURL.path, "--compare", "out_ref64"])
            XCTAssertEqual(result.status, 0, "\(name): \(result.standardError)")
            XCTAssertTrue(result.standardOutput.contains("max |out - out_ref64| = "), result.standardOutput)
            let output = try SafetensorsFile(contentsOf: outputURL)
            XCTAssertEqual(try output.dtype(of: "out"), .f32)
            assertGoldenClose(try output.floatTensor("out"), try input.floatTensor("out_ref64"), "\(name) via attention sdpa")

            var widened = SafetensorsFile()
            for tensor in input.tensorNames { widened.set(tensor, try input.floatTensor(tensor)) }
            let widenedURL = directory.appendingPathComponent("\(name).f32.safetensors")
            try widened.write(to: widenedURL)
            let widenedOutputURL = directory.appendingPathComponent("\(name).f32.out.safetensors")
            let widenedResult = try runAttentionExecutable(["sdpa", "--input", widenedURL.path, "--output", widenedOutputURL.path])
            XCTAssertEqual(widenedResult.status, 0, widenedResult.standardError)
            XCTAssertEqual(try SafetensorsFile(contentsOf: widenedOutputURL).floatTensor("out").scalars.map(\.bitPattern),
                           try output.floatTensor("out").scalars.map(\.bitPattern), "\(name): same bits as the F32 copy")
        }
    }

    func testSDPAHelpNamesTheInputDTypes() throws {
        let help = try runAttentionExecutable(["sdpa", "--help"])
        XCTAssertEqual(help.status, 0, help.standardError)
        let text = help.standardOutput.split(whereSeparator: \.isWhitespace).joined(separator: " ")
        for fragment in ["(F32, F16, BF16, F64 or F8_*)", "widened to float32 exactly", "rounded to the nearest float32", "always F32"] {
            XCTAssertTrue(text.contains(fragment), "sdpa --help lacks \(fragment): \(text)")
        }
    }

    /// F64 inputs written by this package's own writer run too.
    func testSDPACommandReadsF64Inputs() throws {
        let directory = try makeTemporaryDirectory()
        let q = try Tensor<Float>.randomNormal([1, 1, 3, 4], seed: 1)
        let k = try Tensor<Float>.randomNormal([1, 1, 5, 4], seed: 2)
        let v = try Tensor<Float>.randomNormal([1, 1, 5, 2], seed: 3)
        var input = SafetensorsFile()
        input.set("q", q, as: .f64)
        input.set("k", k, as: .f64)
        input.set("v", v, as: .bf16)
        let inputURL = directory.appendingPathComponent("in.safetensors")
        try input.write(to: inputURL)
        let outputURL = directory.appendingPathComponent("out.safetensors")
        let result = try runAttentionExecutable(["sdpa", "--input", inputURL.path, "--output", outputURL.path])
        XCTAssertEqual(result.status, 0, result.standardError)
        let expected = try scaledDotProductAttention(queries: q, keys: k, values: input.floatTensor("v"))
        XCTAssertEqual(try SafetensorsFile(contentsOf: outputURL).floatTensor("out").scalars.map(\.bitPattern),
                       expected.scalars.map(\.bitPattern))
    }
}
