// FuzzSafetensors.swift: libFuzzer harness for the safetensors parser,
// SafetensorsFile(data:) in Sources/Attention/IO/.
//
// Built by Fuzz/run.sh with `swiftc -sanitize=fuzzer,address` together with the
// parser's own sources (IO/*.swift, Tensor.swift, AttentionError.swift), so the
// code under test is exactly the package's. For every input:
//
//   * parsing must return or throw SafetensorsError, never trap (a Swift trap —
//     overflow, index out of range, force unwrap — is a crash to libFuzzer, and
//     AddressSanitizer watches every unsafe-pointer access);
//   * the same bytes as a slice of a larger Data (startIndex ≠ 0) must give the
//     same file or the same error;
//   * an accepted file must round-trip: serialized() parses back to an equal
//     file, and serializing that again gives the same bytes;
//   * every tensor of an accepted file must decode through the accessors of its
//     dtype's family with its listed shape and element count, and be refused by
//     the others with dtypeMismatch; an integer accessor may refuse a value only
//     with valueOutOfRange; data(of:) holds elements × bitWidth / 8 bytes;
//   * a floating-point tensor written back as F16 and BF16 reads back as the
//     rounded values: converting those again changes nothing, NaN stays NaN.
import Foundation

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSafetensors(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = data.map { Data(bytes: $0, count: size) } ?? Data()

    let direct = parse(bytes)
    var padded = Data([0xA5, 0x5A, 0xA5])
    padded.append(bytes)
    let sliced = parse(padded[3...])
    check(sliced == direct, "the same bytes as a Data slice parse differently: \(sliced) vs \(direct)")

    guard case let .success(file) = direct else { return 0 }

    let serialized = file.serialized()
    let reparsed: SafetensorsFile
    do {
        reparsed = try SafetensorsFile(data: serialized)
    } catch {
        fail("serialized() of an accepted file does not parse: \(error)")
    }
    check(reparsed == file, "serialized() parses back to a different file")
    check(reparsed.serialized() == serialized, "serializing twice gives different bytes")

    for name in file.tensorNames {
        do {
            try checkAccessors(file, name)
        } catch {
            fail("tensor \(name) of an accepted file cannot be read: \(error)")
        }
    }
    return 0
}

/// The accessor checks for one tensor of an accepted file.
private func checkAccessors(_ file: SafetensorsFile, _ name: String) throws {
    let shape = try file.shape(of: name)
    let dtype = try file.dtype(of: name)
    let count = shape.reduce(1, *)
    check(try file.data(of: name).count == count * dtype.bitWidth / 8, "\(dtype.rawValue) \(name): byte count")

    func refused<T>(_ body: () throws -> T) -> Bool {
        do {
            _ = try body()
            return false
        } catch SafetensorsError.dtypeMismatch(let tensor, _, let actual) {
            return tensor == name && actual == dtype
        } catch {
            return false
        }
    }
    func fitsOrOutOfRange<T: SafetensorsInteger>(_ type: T.Type) -> Bool {
        do {
            let tensor = try file.integerTensor(name, as: type)
            return tensor.shape == shape && tensor.scalars.count == count
        } catch SafetensorsError.valueOutOfRange(let tensor, let index, _, let actual, _, _) {
            return tensor == name && actual == dtype && index >= 0 && index < count
        } catch {
            return false
        }
    }

    if dtype.isFloatingPoint {
        let floats = try file.floatTensor(name)
        check(floats.shape == shape && floats.scalars.count == count, "\(dtype.rawValue) \(name): shape \(floats.shape)")
        let doubles = try file.doubleTensor(name)
        check(doubles.scalars.count == count, "\(dtype.rawValue) \(name): doubleTensor count")
        if dtype != .f64 {
            check(zip(floats.scalars, doubles.scalars).allSatisfy { Double($0).bitPattern == $1.bitPattern || ($0.isNaN && $1.isNaN) },
                  "\(dtype.rawValue) \(name): doubleTensor is not the exact widening of floatTensor")
        }
        var narrowed = SafetensorsFile()
        narrowed.set("h", floats, as: .f16)
        narrowed.set("b", floats, as: .bf16)
        let reread = try SafetensorsFile(data: narrowed.serialized())
        for (key, format) in [("h", SafetensorsFloatDType.f16), ("b", .bf16)] {
            let once = try reread.floatTensor(key)
            var again = SafetensorsFile()
            again.set(key, once, as: format)
            check(try again.data(of: key) == reread.data(of: key), "\(name): \(format) rounding is not idempotent")
            check(zip(floats.scalars, once.scalars).allSatisfy { $0.isNaN == $1.isNaN }, "\(name): \(format) NaN changed")
        }
    } else {
        check(refused { try file.floatTensor(name) } && refused { try file.doubleTensor(name) },
              "\(dtype.rawValue) \(name): floatTensor accepted a non-float tensor")
    }
    if dtype.isInteger {
        check(fitsOrOutOfRange(Int64.self) && fitsOrOutOfRange(UInt64.self) && fitsOrOutOfRange(Int8.self) && fitsOrOutOfRange(UInt16.self),
              "\(dtype.rawValue) \(name): an integer accessor failed otherwise than valueOutOfRange")
        check(dtype == .u64 || (try? file.int64Tensor(name)) != nil, "\(dtype.rawValue) \(name): does not fit in Int64")
    } else {
        check(refused { try file.int64Tensor(name) }, "\(dtype.rawValue) \(name): int64Tensor accepted a non-integer tensor")
    }
    if dtype.isInteger || dtype == .bool {
        let bools = try file.boolTensor(name)
        check(bools.shape == shape && bools.scalars.count == count, "\(dtype.rawValue) \(name): boolTensor shape")
    } else {
        check(refused { try file.boolTensor(name) }, "\(dtype.rawValue) \(name): boolTensor accepted a \(dtype.rawValue) tensor")
    }
}

/// The outcome of a parse, comparable: the file, or the error's description.
private enum Outcome: Equatable, CustomStringConvertible {
    case success(SafetensorsFile)
    case failure(String)

    var description: String {
        switch self {
        case let .success(file): return "a file with tensors \(file.tensorNames)"
        case let .failure(message): return "error \(message)"
        }
    }
}

private func parse(_ data: Data) -> Outcome {
    do {
        return .success(try SafetensorsFile(data: data))
    } catch let error as SafetensorsError {
        return .failure(error.description)
    } catch {
        fail("SafetensorsFile(data:) threw a non-SafetensorsError: \(error)")
    }
}

private func check(_ condition: Bool, _ message: @autoclosure () -> String) {
    if !condition { fail(message()) }
}

private func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("FuzzSafetensors: \(message)\n".utf8))
    abort()
}
