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
//   * every tensor of an accepted file must decode through its typed accessor
//     with its listed shape and element count.
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
            let shape = try file.shape(of: name)
            let count = shape.reduce(1, *)
            switch try file.dtype(of: name) {
            case .f32:
                let tensor = try file.floatTensor(name)
                check(tensor.shape == shape && tensor.scalars.count == count, "F32 \(name): shape \(tensor.shape)")
            case .u8:
                let tensor = try file.uint8Tensor(name)
                check(tensor.shape == shape && tensor.scalars.count == count, "U8 \(name): shape \(tensor.shape)")
                _ = try file.boolTensor(name)
            case .i32:
                let tensor = try file.int32Tensor(name)
                check(tensor.shape == shape && tensor.scalars.count == count, "I32 \(name): shape \(tensor.shape)")
            case .bool:
                let tensor = try file.boolTensor(name)
                check(tensor.shape == shape && tensor.scalars.count == count, "BOOL \(name): shape \(tensor.shape)")
            }
        } catch {
            fail("tensor \(name) of an accepted file cannot be read: \(error)")
        }
    }
    return 0
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
