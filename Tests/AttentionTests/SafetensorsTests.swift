import Foundation
import XCTest
@testable import Attention

final class SafetensorsTests: XCTestCase {
    // MARK: Helpers

    /// A safetensors byte string from a header text and a data buffer.
    private func file(_ header: String, _ buffer: [UInt8] = []) -> Data {
        var data = Data()
        withUnsafeBytes(of: UInt64(header.utf8.count).littleEndian) { data.append(contentsOf: $0) }
        data.append(contentsOf: Array(header.utf8))
        data.append(contentsOf: buffer)
        return data
    }

    /// Asserts that loading `data` throws exactly `expected`.
    private func assertLoadFails(
        _ data: Data, _ expected: SafetensorsError, file: StaticString = #filePath, line: UInt = #line
    ) {
        XCTAssertThrowsError(try SafetensorsFile(data: data), file: file, line: line) { error in
            XCTAssertEqual(error as? SafetensorsError, expected, file: file, line: line)
        }
    }

    /// Asserts that loading `data` throws `SafetensorsError.invalidJSON` (at any offset).
    private func assertInvalidJSON(_ data: Data, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try SafetensorsFile(data: data), file: file, line: line) { error in
            guard case .invalidJSON = error as? SafetensorsError else {
                return XCTFail("expected invalidJSON, got \(error)", file: file, line: line)
            }
        }
    }

    private func goldenURL(_ name: String) throws -> URL {
        let fixtures = try XCTUnwrap(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        return fixtures.appendingPathComponent("golden/\(name).safetensors")
    }

    private func temporaryDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("SafetensorsTests-\(UUID().uuidString)", isDirectory: true)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: directory) }
        return directory
    }

    /// A file with one tensor of each dtype, an empty tensor and a scalar.
    private func sampleFile() throws -> SafetensorsFile {
        var file = SafetensorsFile()
        file.metadata = ["op": "sdpa", "quote \"and\" newline\n": "ünïcødé ✓ \u{1}"]
        file.set("floats", try Tensor<Float>(shape: [2, 3], scalars: [0, -1.5, .pi, .infinity, -.greatestFiniteMagnitude, .leastNonzeroMagnitude]))
        file.set("bytes", try Tensor<UInt8>(shape: [4], scalars: [0, 1, 128, 255]))
        file.set("ints", try Tensor<Int32>(shape: [2, 2], scalars: [.min, -1, 0, .max]))
        file.set("mask", try Tensor<Bool>(shape: [1, 3], scalars: [true, false, true]))
        file.set("empty", try Tensor<Float>(shape: [0, 5], scalars: []))
        file.set("scalar", try Tensor<Float>(shape: [], scalars: [42]))
        return file
    }

    // MARK: Round trips

    func testRoundTripOfEveryDTypeWithMetadata() throws {
        let original = try sampleFile()
        let loaded = try SafetensorsFile(data: original.serialized())

        XCTAssertEqual(loaded.tensorNames, ["bytes", "empty", "floats", "ints", "mask", "scalar"])
        XCTAssertEqual(loaded.metadata, original.metadata)
        XCTAssertEqual(try loaded.floatTensor("floats"), try original.floatTensor("floats"))
        XCTAssertEqual(try loaded.floatTensor("floats").scalars[5], .leastNonzeroMagnitude)  // subnormal survives
        XCTAssertEqual(try loaded.uint8Tensor("bytes").scalars, [0, 1, 128, 255])
        XCTAssertEqual(try loaded.int32Tensor("ints").scalars, [.min, -1, 0, .max])
        XCTAssertEqual(try loaded.boolTensor("mask"), try Tensor<Bool>(shape: [1, 3], scalars: [true, false, true]))
        XCTAssertEqual(try loaded.dtype(of: "mask"), .u8, "Bool tensors are stored as U8")
        XCTAssertEqual(try loaded.uint8Tensor("mask").scalars, [1, 0, 1])

        let empty = try loaded.floatTensor("empty")
        XCTAssertEqual(empty.shape, [0, 5])
        XCTAssertEqual(empty.count, 0)
        let scalar = try loaded.floatTensor("scalar")
        XCTAssertEqual(scalar.shape, [])
        XCTAssertEqual(scalar.scalars, [42])

        XCTAssertEqual(try loaded.shape(of: "ints"), [2, 2])
        XCTAssertEqual(try loaded.dtype(of: "ints"), .i32)
        XCTAssertEqual(loaded, original)
        XCTAssertEqual(loaded.serialized(), original.serialized(), "serialising is deterministic")
    }

    func testNaNPayloadSurvivesBitForBit() throws {
        let nan = Float(bitPattern: 0x7FC0_1234)
        var file = SafetensorsFile()
        file.set("x", try Tensor<Float>(shape: [1], scalars: [nan]))
        let loaded = try SafetensorsFile(data: file.serialized())
        XCTAssertEqual(try loaded.floatTensor("x").scalars[0].bitPattern, 0x7FC0_1234)
    }

    func testNamesWithSpecialCharactersRoundTrip() throws {
        var file = SafetensorsFile()
        let names = ["a\"b", "back\\slash", "tab\tnew\nline", "ctrl\u{7}", "ünï ✓ 🦊", ""]
        for (index, name) in names.enumerated() {
            file.set(name, try Tensor<Int32>(shape: [1], scalars: [Int32(index)]))
        }
        let loaded = try SafetensorsFile(data: file.serialized())
        XCTAssertEqual(loaded.tensorNames, names.sorted())
        for (index, name) in names.enumerated() {
            XCTAssertEqual(try loaded.int32Tensor(name).scalars, [Int32(index)])
        }
    }

    func testSetReplacesATensorOfTheSameName() throws {
        var file = SafetensorsFile()
        file.set("x", try Tensor<Float>(shape: [2], scalars: [1, 2]))
        file.set("x", try Tensor<UInt8>(shape: [3], scalars: [7, 8, 9]))
        XCTAssertEqual(file.tensorNames, ["x"])
        XCTAssertEqual(try file.dtype(of: "x"), .u8)
        XCTAssertEqual(try SafetensorsFile(data: file.serialized()).uint8Tensor("x").scalars, [7, 8, 9])
    }

    func testEmptyFile() throws {
        let data = SafetensorsFile().serialized()
        XCTAssertEqual(Array(data), [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
        let loaded = try SafetensorsFile(data: data)
        XCTAssertEqual(loaded.tensorNames, [])
        XCTAssertEqual(loaded.metadata, [:])
    }

    // MARK: Exact bytes

    /// The writer's output for a tiny file, computed by hand from the format
    /// description: any drift in key order, spacing, padding or layout fails here.
    func testSerializationIsByteExact() throws {
        var file = SafetensorsFile()
        file.metadata = ["k": "vv", "note": "say \"hi\"\n"]
        file.set("c", try Tensor<Bool>(shape: [], scalars: [true]))
        file.set("a", try Tensor<Float>(shape: [2], scalars: [1, -2]))
        file.set("b", try Tensor<Int32>(shape: [1], scalars: [-1]))

        // 209 bytes of JSON + 7 spaces = 216 = 0xD8.
        let header = #"{"__metadata__":{"k":"vv","note":"say \"hi\"\n"},"#
            + #""a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
            + #""b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]},"#
            + #""c":{"dtype":"U8","shape":[],"data_offsets":[12,13]}}"#
            + "       "
        XCTAssertEqual(header.utf8.count, 216)
        var expected: [UInt8] = [0xD8, 0, 0, 0, 0, 0, 0, 0]
        expected += Array(header.utf8)
        expected += [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0]  // 1.0, -2.0
        expected += [0xFF, 0xFF, 0xFF, 0xFF]  // -1
        expected += [0x01]  // true
        XCTAssertEqual(Array(file.serialized()), expected)

        let loaded = try SafetensorsFile(data: Data(expected))
        XCTAssertEqual(loaded.metadata, file.metadata)
        XCTAssertEqual(try loaded.floatTensor("a").scalars, [1, -2])
    }

    // MARK: Reading

    func testReadsGoldenFixture() throws {
        let file = try SafetensorsFile(contentsOf: try goldenURL("p_basic"))
        XCTAssertEqual(file.metadata["op"], "sdpa")
        XCTAssertEqual(file.tensorNames, ["k", "out", "out_ref64", "q", "v"])
        let q = try file.floatTensor("q")
        XCTAssertEqual(q.shape, [1, 2, 8, 16])
        XCTAssertEqual(try file.dtype(of: "q"), .f32)
        XCTAssertTrue(q.scalars.allSatisfy(\.isFinite))
        XCTAssertTrue(q.scalars.contains { $0 != 0 })
        // Re-serialising gives a file that loads to the same tensors.
        XCTAssertEqual(try SafetensorsFile(data: file.serialized()), file)
    }

    func testReadsGoldenMaskAsUInt8AndBool() throws {
        let file = try SafetensorsFile(contentsOf: try goldenURL("p_dead_row"))
        let mask = try file.uint8Tensor("mask_keep")
        XCTAssertEqual(mask.shape, [3, 4])
        XCTAssertTrue(mask.scalars.allSatisfy { $0 <= 1 })
        XCTAssertEqual(try file.boolTensor("mask_keep").scalars, mask.scalars.map { $0 != 0 })
    }

    func testReadsBundledCheckpointQuickly() throws {
        // Sources/AttentionExamples/Resources/minilm-layer0.safetensors, 2.5 MB.
        let url = URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Sources/AttentionExamples/Resources/minilm-layer0.safetensors")
        try XCTSkipUnless(FileManager.default.fileExists(atPath: url.path), "checkpoint not found at \(url.path)")
        let start = Date()
        let file = try SafetensorsFile(contentsOf: url)
        var elements = 0
        for name in file.tensorNames where try file.dtype(of: name) == .f32 {
            elements += try file.floatTensor(name).count
        }
        let seconds = Date().timeIntervalSince(start)
        XCTAssertGreaterThan(elements, 600_000)
        XCTAssertEqual(try file.shape(of: "encoder.layer.0.attention.self.query.weight"), [384, 384])
        XCTAssertEqual(try file.int32Tensor("input_ids").shape, [1, 16])
        XCTAssertEqual(file.metadata["num_heads"], "12")
        XCTAssertLessThan(seconds, 2, "loading and decoding 2.5 MB took \(seconds) s")
    }

    func testReadsBOOLDType() throws {
        let data = file(#"{"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}}"#, [0, 1, 2])
        let loaded = try SafetensorsFile(data: data)
        XCTAssertEqual(try loaded.dtype(of: "m"), .bool)
        XCTAssertEqual(try loaded.boolTensor("m").scalars, [false, true, true])
        XCTAssertThrowsError(try loaded.uint8Tensor("m")) { error in
            XCTAssertEqual(error as? SafetensorsError, .dtypeMismatch(tensor: "m", expected: SafetensorsFile.integerDTypes, actual: .bool))
        }
    }

    func testReadsUnalignedDataAndSlices() throws {
        // A 13-byte header puts the F32 data at file offset 21: not 4-byte aligned.
        let header = #"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#
        let padded = header + String(repeating: " ", count: 3)  // odd total on purpose
        XCTAssertEqual((8 + padded.utf8.count) % 4, 1)
        let bytes = file(padded, [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0])
        XCTAssertEqual(try SafetensorsFile(data: bytes).floatTensor("x").scalars, [1, -2])

        // A slice of a larger Data, whose indices do not start at zero.
        let shifted = Data([0xAA]) + bytes + Data([0xBB])
        let slice = shifted[1..<(shifted.count - 1)]
        XCTAssertEqual(try SafetensorsFile(data: slice).floatTensor("x").scalars, [1, -2])
    }

    func testAcceptsPaddingAndIgnoresUnknownEntryFields() throws {
        let header = #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":[1]}, "__metadata__":null}"# + "   \n\t "
        XCTAssertEqual(try SafetensorsFile(data: file(header, [9])).uint8Tensor("x").scalars, [9])
    }

    func testEmptyTensorsMayShareAnOffset() throws {
        let header = #"{"a":{"dtype":"F32","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[2,0],"data_offsets":[0,0]},"c":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        let loaded = try SafetensorsFile(data: file(header, [5]))
        XCTAssertEqual(try loaded.shape(of: "b"), [2, 0])
        XCTAssertEqual(try loaded.uint8Tensor("c").scalars, [5])
    }

    // MARK: Malformed input

    func testTooShortInputs() {
        assertLoadFails(Data(), .fileTooShort(byteCount: 0))
        assertLoadFails(Data([1, 0, 0, 0, 0, 0, 0]), .fileTooShort(byteCount: 7))
    }

    func testHeaderLengthLargerThanFile() {
        var data = Data([100, 0, 0, 0, 0, 0, 0, 0])
        data.append(contentsOf: Array("{}        ".utf8))
        assertLoadFails(data, .headerLengthExceedsFile(declared: 100, available: 10))

        let maximal = Data(repeating: 0xFF, count: 8) + Data("{}".utf8)
        assertLoadFails(maximal, .headerLengthExceedsFile(declared: .max, available: 2))
        let signBit = Data([0, 0, 0, 0, 0, 0, 0, 0x80]) + Data("{}".utf8)
        assertLoadFails(signBit, .headerLengthExceedsFile(declared: 1 << 63, available: 2))
    }

    func testHeaderThatIsNotJSON() {
        assertInvalidJSON(file("hello, world"))
        assertInvalidJSON(file(""))
        assertInvalidJSON(file(#"{"a":1"#))
        assertInvalidJSON(file(#"{"a":1,}"#))
        assertInvalidJSON(file(#"{"a":01}"#))
        assertInvalidJSON(file(#"{"a":"\x"}"#))
        assertInvalidJSON(file(#"{"a":"\uD800"}"#))
        assertInvalidJSON(file("{\"a\":\"raw\ncontrol\"}"))
        assertInvalidJSON(file(#"{} {}"#))
        assertInvalidJSON(file("{}\0"))
        assertLoadFails(file(#"{"a" 1}"#), .invalidJSON(offset: 5, reason: "expected ':' after a key, got '1'"))
        // Leading whitespace is valid JSON but not a valid safetensors header.
        assertLoadFails(file(" {}"), .invalidJSON(offset: 0, reason: "expected the header to begin with '{', got whitespace"))
    }

    func testDeeplyNestedHeaderIsRejectedWithoutCrashing() {
        let depth = 100_000
        assertInvalidJSON(file("{\"a\":" + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}"))
        assertInvalidJSON(file(String(repeating: "[", count: depth)))
    }

    func testHeaderThatIsNotUTF8() {
        var data = Data([4, 0, 0, 0, 0, 0, 0, 0])
        data.append(contentsOf: [UInt8(ascii: "{"), UInt8(ascii: "\""), 0xC3, 0x28])
        assertLoadFails(data, .headerNotUTF8(offset: 2))
    }

    func testHeaderThatIsAJSONArrayOrScalar() {
        assertLoadFails(file("[1, 2]"), .headerNotObject(actual: "a JSON array"))
        assertLoadFails(file("\"x\""), .headerNotObject(actual: "a JSON string"))
        assertLoadFails(file("3"), .headerNotObject(actual: "a JSON number"))
    }

    func testUnknownDType() {
        assertLoadFails(
            file(#"{"h":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}"#, [UInt8](repeating: 0, count: 16)),
            .unsupportedDType(tensor: "h", dtype: "F128"))
    }

    func testMissingOrIllTypedFields() {
        assertLoadFails(
            file(#"{"x":{"shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "dtype", expected: "a string such as \"F32\"", actual: "no such field"))
        assertLoadFails(
            file(#"{"x":{"dtype":32,"shape":[1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "dtype", expected: "a string such as \"F32\"", actual: "32"))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "shape", expected: "an array of integers", actual: "no such field"))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "shape", expected: "an array of integers", actual: "[1.5]"))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[99999999999999999999],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "shape", expected: "an array of integers", actual: "[99999999999999999999]"))
        let offsets = "[begin, end] with two non-negative integers"
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[1]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "data_offsets", expected: offsets, actual: "no such field"))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "data_offsets", expected: offsets, actual: "[0, 4, 8]"))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "data_offsets", expected: offsets, actual: "[-4, 0]"))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551620]}}"#, [0, 0, 0, 0]),
            .invalidEntry(tensor: "x", field: "data_offsets", expected: offsets, actual: "[0, 18446744073709551620]"))
        assertLoadFails(
            file(#"{"x":[1]}"#),
            .invalidEntry(tensor: "x", field: "entry", expected: "an object with dtype, shape and data_offsets", actual: "[1]"))
        assertLoadFails(
            file(#"{"x":{"dtype":"U8","dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#),
            .invalidEntry(tensor: "x", field: "dtype", expected: "one field", actual: "a repeated field"))
    }

    func testNegativeAndOverflowingShapes() {
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}}"#),
            .invalidShape(tensor: "x", shape: [2, -1]))
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}"#),
            .shapeOverflow(tensor: "x", shape: [4_294_967_296, 4_294_967_296], dtype: .f32))
        // Int.max elements fit, Int.max × 4 bytes do not.
        assertLoadFails(
            file(#"{"x":{"dtype":"I32","shape":[9223372036854775807],"data_offsets":[0,0]}}"#),
            .shapeOverflow(tensor: "x", shape: [.max], dtype: .i32))
        // A zero dimension does not excuse an overflowing product of the others,
        // which row-major strides would overflow on.
        assertLoadFails(
            file(#"{"x":{"dtype":"U8","shape":[0,4294967296,4294967296],"data_offsets":[0,0]}}"#),
            .shapeOverflow(tensor: "x", shape: [0, 4_294_967_296, 4_294_967_296], dtype: .u8))
    }

    func testOffsetsOutOfRangeOrReversed() {
        assertLoadFails(
            file(#"{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, [1, 2]),
            .offsetsOutOfRange(tensor: "x", begin: 0, end: 4, bufferLength: 2))
        assertLoadFails(
            file(#"{"x":{"dtype":"U8","shape":[0],"data_offsets":[3,1]}}"#, [1, 2, 3]),
            .offsetsReversed(tensor: "x", begin: 3, end: 1))
    }

    func testByteCountMismatch() {
        assertLoadFails(
            file(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]),
            .byteCountMismatch(tensor: "x", dtype: .f32, shape: [2], expected: 8, actual: 4))
    }

    func testOverlappingTensors() {
        let header = #"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#
        assertLoadFails(file(header, [0, 1, 2, 3, 4, 5]), .overlappingTensors(first: "a", second: "b", firstEnd: 4, secondBegin: 2))
        let same = #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#
        assertLoadFails(file(same, [0, 1]), .overlappingTensors(first: "a", second: "b", firstEnd: 2, secondBegin: 0))
    }

    func testHolesAndTrailingBytes() {
        let hole = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}"#
        assertLoadFails(file(hole, [0, 1, 2]), .dataBufferGap(begin: 1, end: 2))
        let trailing = #"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#
        assertLoadFails(file(trailing, [0, 1, 2]), .dataBufferGap(begin: 1, end: 3))
        assertLoadFails(file("{}", [0]), .dataBufferGap(begin: 0, end: 1))
    }

    func testDuplicateNames() {
        let header = #"{"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]}}"#
        assertLoadFails(file(header), .duplicateTensorName("a"))
        assertLoadFails(file(#"{"__metadata__":{},"__metadata__":{}}"#), .duplicateTensorName("__metadata__"))
    }

    func testMetadataMustBeStrings() {
        assertLoadFails(file(#"{"__metadata__":{"n":3}}"#), .invalidMetadata(key: "n", expected: "a string", actual: "3"))
        assertLoadFails(
            file(#"{"__metadata__":["a"]}"#),
            .invalidMetadata(key: "__metadata__", expected: "an object of string values", actual: "a JSON array"))
        assertLoadFails(
            file(#"{"__metadata__":{"k":"a","k":"b"}}"#),
            .invalidMetadata(key: "k", expected: "a key that appears once", actual: "a repeated key"))
    }

    func testEveryTruncationOfARealFileThrows() throws {
        let data = try Data(contentsOf: try goldenURL("p_dead_row"))
        XCTAssertNoThrow(try SafetensorsFile(data: data))
        let headerLength = Int(data[0]) | Int(data[1]) << 8
        let bufferLength = data.count - 8 - headerLength
        for length in 0..<data.count {
            XCTAssertThrowsError(try SafetensorsFile(data: data.prefix(length))) { error in
                guard let error = error as? SafetensorsError else { return XCTFail("prefix \(length): \(error)") }
                switch error {
                case .fileTooShort: XCTAssertLessThan(length, 8)
                case .headerLengthExceedsFile: XCTAssertLessThan(length, 8 + headerLength)
                case let .offsetsOutOfRange(_, _, _, available):
                    XCTAssertEqual(available, length - 8 - headerLength)
                    XCTAssertLessThan(available, bufferLength)
                default: XCTFail("prefix \(length): unexpected \(error)")
                }
            }
        }
    }

    func testRandomCorruptionsNeverCrash() throws {
        let original = try Data(contentsOf: try goldenURL("p_dead_row"))
        var generator = SplitMix64(seed: 2024)
        var loaded = 0
        for trial in 0..<3000 {
            var bytes = [UInt8](original)
            for _ in 0..<(1 + trial % 4) {
                // Mostly in the length prefix and the header, where parsing happens.
                let limit = trial % 5 == 0 ? bytes.count : min(bytes.count, 800)
                bytes[Int(generator.next() % UInt64(limit))] = UInt8(truncatingIfNeeded: generator.next())
            }
            do {
                let file = try SafetensorsFile(data: Data(bytes))
                loaded += 1
                for name in file.tensorNames {
                    let dtype = try file.dtype(of: name)
                    if dtype.isFloatingPoint { XCTAssertEqual(try file.floatTensor(name).shape, try file.shape(of: name)) }
                    if dtype.isInteger || dtype == .bool { _ = try file.boolTensor(name) }
                    if dtype.isInteger { _ = try file.int64Tensor(name) }
                }
            } catch {
                XCTAssertTrue(error is SafetensorsError, "trial \(trial): \(error)")
            }
        }
        XCTAssertGreaterThan(loaded, 0, "some corruptions (data bytes) still load")
        for length in 0..<64 {
            let noise = Data((0..<length).map { _ in UInt8(truncatingIfNeeded: generator.next()) })
            XCTAssertThrowsError(try SafetensorsFile(data: noise))
        }
    }

    // MARK: Accessor errors

    func testMissingTensorAndWrongDType() throws {
        let file = try SafetensorsFile(contentsOf: try goldenURL("p_dead_row"))
        let names = ["k", "mask_keep", "out", "out_ref64", "q", "v"]
        XCTAssertEqual(file.tensorNames, names)
        XCTAssertThrowsError(try file.floatTensor("nope")) { error in
            XCTAssertEqual(error as? SafetensorsError, .tensorNotFound(name: "nope", available: names))
        }
        XCTAssertThrowsError(try file.shape(of: "nope")) { error in
            XCTAssertEqual(error as? SafetensorsError, .tensorNotFound(name: "nope", available: names))
        }
        XCTAssertThrowsError(try file.floatTensor("mask_keep")) { error in
            XCTAssertEqual(error as? SafetensorsError, .dtypeMismatch(tensor: "mask_keep", expected: SafetensorsFile.floatDTypes, actual: .u8))
        }
        XCTAssertThrowsError(try file.boolTensor("q")) { error in
            XCTAssertEqual(error as? SafetensorsError, .dtypeMismatch(tensor: "q", expected: SafetensorsFile.boolDTypes, actual: .f32))
        }
        XCTAssertThrowsError(try file.int32Tensor("q")) { error in
            XCTAssertEqual(error as? SafetensorsError, .dtypeMismatch(tensor: "q", expected: SafetensorsFile.integerDTypes, actual: .f32))
        }
    }

    func testErrorMessagesAreOneLineAndSpecific() {
        let cases: [(SafetensorsError, [String])] = [
            (.headerLengthExceedsFile(declared: 100, available: 10), ["100", "10"]),
            (.dtypeMismatch(tensor: "q", expected: [.f32], actual: .u8), ["\"q\"", "F32", "U8"]),
            (.tensorNotFound(name: "x\ny", available: ["a", "b"]), ["\"x\\ny\"", "\"a\"", "\"b\""]),
            (.byteCountMismatch(tensor: "t", dtype: .f32, shape: [2], expected: 8, actual: 4), ["\"t\"", "8", "4", "[2]"]),
            (.unsupportedDType(tensor: "h", dtype: "F128"), ["\"h\"", "F128", "F32, F16, BF16, F64", "BOOL, C64"]),
            (.overlappingTensors(first: "a", second: "b", firstEnd: 4, secondBegin: 2), ["\"a\"", "\"b\"", "4", "2"]),
            (.ioFailure(path: "/x/y", reason: "No such file or directory"), ["/x/y", "No such file"]),
        ]
        for (error, fragments) in cases {
            let message = error.description
            XCTAssertFalse(message.contains("\n"), message)
            for fragment in fragments {
                XCTAssertTrue(message.contains(fragment), "\(message) lacks \(fragment)")
            }
        }
    }

    // MARK: Files

    func testWriteAndReadBackAndOverwrite() throws {
        let directory = try temporaryDirectory()
        let url = directory.appendingPathComponent("out.safetensors")
        let first = try sampleFile()
        try first.write(to: url)
        XCTAssertEqual(try SafetensorsFile(contentsOf: url), first)
        XCTAssertEqual(try Data(contentsOf: url), first.serialized())

        var second = SafetensorsFile()
        second.set("only", try Tensor<Float>(shape: [1], scalars: [3]))
        try second.write(to: url)
        XCTAssertEqual(try SafetensorsFile(contentsOf: url), second)
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["out.safetensors"])
    }

    func testWriteIntoMissingDirectoryThrowsAndLeavesNothing() throws {
        let directory = try temporaryDirectory()
        let missing = directory.appendingPathComponent("missing", isDirectory: true)
        let url = missing.appendingPathComponent("out.safetensors")
        XCTAssertThrowsError(try SafetensorsFile().write(to: url)) { error in
            guard case let .ioFailure(path, reason) = error as? SafetensorsError else {
                return XCTFail("expected ioFailure, got \(error)")
            }
            XCTAssertEqual(path, url.path)
            XCTAssertTrue(reason.contains("No such file or directory"), reason)
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: missing.path))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), [])
    }

    func testFailedRenameLeavesNoTemporaryFile() throws {
        let directory = try temporaryDirectory()
        let occupied = directory.appendingPathComponent("occupied")
        try FileManager.default.createDirectory(at: occupied, withIntermediateDirectories: false)
        XCTAssertTrue(FileManager.default.createFile(atPath: occupied.appendingPathComponent("keep").path, contents: Data([1])))
        XCTAssertThrowsError(try SafetensorsFile().write(to: occupied)) { error in
            guard case .ioFailure = error as? SafetensorsError else { return XCTFail("expected ioFailure, got \(error)") }
        }
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["occupied"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: occupied.path), ["keep"])
    }

    func testReadingMissingFileOrDirectoryThrows() throws {
        let directory = try temporaryDirectory()
        let url = directory.appendingPathComponent("absent.safetensors")
        XCTAssertThrowsError(try SafetensorsFile(contentsOf: url)) { error in
            XCTAssertEqual(error as? SafetensorsError, .ioFailure(path: url.path, reason: "No such file or directory"))
        }
        XCTAssertThrowsError(try SafetensorsFile(contentsOf: directory)) { error in
            XCTAssertEqual(error as? SafetensorsError, .ioFailure(path: directory.path, reason: "is a directory"))
        }
        XCTAssertThrowsError(try SafetensorsFile(contentsOf: URL(string: "https://example.com/x.safetensors")!)) { error in
            guard case .ioFailure = error as? SafetensorsError else { return XCTFail("expected ioFailure, got \(error)") }
        }
    }
}
