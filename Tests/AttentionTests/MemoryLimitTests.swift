import Foundation
import XCTest
@testable import Attention

#if canImport(Glibc)
import Glibc
#endif

/// No crash under memory limits (issue 11, item 2): every allocation sized by
/// the input is checked first and fails with a typed error naming the tensor
/// and the bytes, and the command line holds its result once.
final class MemoryLimitTests: XCTestCase {
    /// A header-only file (about 200 bytes): q [1, 1, L, 0], k [1, 1, 0, 0],
    /// v [1, 1, 0, Dv], whose empty operands imply an output of L·Dv floats.
    private func emptyOperandsInput(queryLength: Int, valueDim: Int, in directory: URL) throws -> URL {
        var file = SafetensorsFile()
        file.set("q", try Tensor<Float>(shape: [1, 1, queryLength, 0], scalars: []))
        file.set("k", try Tensor<Float>(shape: [1, 1, 0, 0], scalars: []))
        file.set("v", try Tensor<Float>(shape: [1, 1, 0, valueDim], scalars: []))
        let url = directory.appendingPathComponent("empty-\(queryLength)x\(valueDim).safetensors")
        try file.write(to: url)
        return url
    }

    /// `attention ARGUMENTS` under `ulimit -v` (KiB) through /bin/sh. Skipped in
    /// sanitizer builds (.ci/sanitizers): AddressSanitizer and ThreadSanitizer
    /// reserve terabytes of address space for their shadow memory, so an
    /// instrumented executable cannot start under such a limit at all.
    private func runUnderAddressSpaceLimit(kibibytes: Int, _ arguments: [String]) throws -> AttentionRun {
        try skipUnderSanitizers()
        let executable = try attentionExecutable().path
        let quoted = ([executable] + arguments).map { "'" + $0.replacingOccurrences(of: "'", with: "'\\''") + "'" }
        return try runProcess("/bin/sh", ["-c", "ulimit -v \(kibibytes) && exec " + quoted.joined(separator: " ")])
    }

    private func skipUnderSanitizers() throws {
        for runtime in ["__asan_init", "__tsan_init"] where dlsym(UnsafeMutableRawPointer(bitPattern: 0), runtime) != nil {
            throw XCTSkip("built with a sanitizer (\(runtime)): its shadow memory does not fit under ulimit -v")
        }
    }

    func testCommandRefusesAResultBeyondTheAddressSpaceLimitWithOneLineAndStatus1() throws {
        let directory = try makeTemporaryDirectory()
        // 4 GiB of output from a 200-byte file, under a 2 GiB limit.
        let input = try emptyOperandsInput(queryLength: 1 << 20, valueDim: 1024, in: directory)
        XCTAssertLessThan(try FileManager.default.attributesOfItem(atPath: input.path)[.size] as? Int ?? .max, 400)
        let output = directory.appendingPathComponent("out.safetensors")
        let run = try runUnderAddressSpaceLimit(kibibytes: 2 << 20, ["sdpa", "--input", input.path, "--output", output.path])
        XCTAssertEqual(run.status, 1, "exit 1, not a signal: \(run.standardError)")
        XCTAssertEqual(run.standardErrorLines.count, 1, run.standardError)
        XCTAssertTrue(run.standardError.contains("output"), run.standardError)
        XCTAssertTrue(run.standardError.contains("4299161600 bytes"), run.standardError)
        XCTAssertTrue(run.standardError.contains("ulimit -v"), run.standardError)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path), "no output file")
    }

    func testCommandRefusesAResultThatFitsTheLimitButNotWhatIsLeftOfIt() throws {
        let directory = try makeTemporaryDirectory()
        // 2.11 GB: below the 2 GiB (2.147 GB) limit, above what the process has left under it.
        let input = try emptyOperandsInput(queryLength: 515_000, valueDim: 1024, in: directory)
        let output = directory.appendingPathComponent("out.safetensors")
        let run = try runUnderAddressSpaceLimit(kibibytes: 2 << 20, ["sdpa", "--input", input.path, "--output", output.path])
        XCTAssertEqual(run.status, 1, run.standardError)
        XCTAssertEqual(run.standardErrorLines.count, 1, run.standardError)
        XCTAssertTrue(run.standardError.contains("cannot be allocated now"), run.standardError)
        XCTAssertFalse(FileManager.default.fileExists(atPath: output.path))
    }

    /// The case of the issue: 1 GiB of output under a 2 GiB limit crashed
    /// (SIGILL in Data.init, the result held three times); held once and
    /// streamed, it is written. The output goes to a FIFO whose reader counts
    /// the bytes, so nothing lands on disk.
    func testCommandWritesAOneGibibyteResultUnderATwoGibibyteLimit() throws {
        try skipUnderSanitizers()
        let directory = try makeTemporaryDirectory()
        let input = try emptyOperandsInput(queryLength: 1 << 18, valueDim: 1024, in: directory)
        let fifo = directory.appendingPathComponent("out.fifo")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        let counter = ByteCounter()
        let done = DispatchSemaphore(value: 0)
        let path = fifo.path
        Thread.detachNewThread {
            defer { done.signal() }
            let descriptor = open(path, O_RDONLY)
            guard descriptor >= 0 else { return }
            defer { close(descriptor) }
            var buffer = [UInt8](repeating: 0, count: 1 << 20)
            var total = 0
            while true {
                let count = read(descriptor, &buffer, buffer.count)
                if count <= 0 { break }
                total += count
            }
            counter.total = total
        }
        let run = try runUnderAddressSpaceLimit(kibibytes: 2 << 20, ["sdpa", "--input", input.path, "--output", fifo.path])
        XCTAssertEqual(done.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(run.status, 0, run.standardError)
        // 8-byte length + header + 2^28 floats of out + 2^18 of logsumexp.
        XCTAssertGreaterThan(counter.total, (1 << 30) + (1 << 20))
        XCTAssertLessThan(counter.total, (1 << 30) + (1 << 20) + 1024)
    }

    func testLibraryNamesTheTensorAndTheBytes() throws {
        let q = try Tensor<Float>(shape: [1, 1, 1 << 40, 0], scalars: [])
        let k = try Tensor<Float>(shape: [1, 1, 0, 0], scalars: [])
        let v = try Tensor<Float>(shape: [1, 1, 0, 1 << 10], scalars: [])
        for backend in [AttentionBackend.fused, .reference] {
            XCTAssertThrowsError(try scaledDotProductAttention(queries: q, keys: k, values: v, backend: backend)) { error in
                guard case let .insufficientMemory(tensor, shape, bytes, _)? = error as? AttentionError else {
                    return XCTFail("\(error)")
                }
                XCTAssertEqual(tensor, "output (with logsumexp)")
                XCTAssertEqual(shape, [1, 1, 1 << 40, 1 << 10])
                XCTAssertEqual(bytes, UInt64((1 << 50) + (1 << 40)) * 4)
                XCTAssertFalse("\(error)".contains("\n"))
            }
        }
        // Zeros, random tensors and the oracle's weights go through the same check.
        XCTAssertThrowsError(try Tensor<Float>.zeros([1 << 20, 1 << 20, 1 << 10])) { error in
            guard case .insufficientMemory? = error as? AttentionError else { return XCTFail("\(error)") }
        }
        XCTAssertThrowsError(try Tensor<Float>.randomNormal([1 << 30, 1 << 30], seed: 1))
        let keys = try Tensor<Float>(shape: [1, 1, 1 << 40, 0], scalars: [])
        let values = try Tensor<Float>(shape: [1, 1, 1 << 40, 0], scalars: [])
        let queries = try Tensor<Float>(shape: [1, 1, 4, 0], scalars: [])
        XCTAssertThrowsError(try Reference.scaledDotProductAttention(queries: queries, keys: keys, values: values)) { error in
            guard case let .insufficientMemory(tensor, _, _, _)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "weights")
        }
        XCTAssertThrowsError(try scaledDotProductAttention(queries: queries, keys: keys, values: values, backend: .reference)) { error in
            guard case let .insufficientMemory(tensor, _, _, _)? = error as? AttentionError else { return XCTFail("\(error)") }
            XCTAssertEqual(tensor, "reference row scratch")
        }
    }
}

private final class ByteCounter: @unchecked Sendable {
    var total = 0
}

/// Runs a program (with extra environment variables) and collects its exit status and output.
func runProcess(_ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws -> AttentionRun {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if !environment.isEmpty {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    }
    let output = Pipe(), error = Pipe()
    process.standardOutput = output
    process.standardError = error
    try process.run()
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    let errorData = error.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return AttentionRun(status: process.terminationStatus,
                        standardOutput: String(decoding: outputData, as: UTF8.self),
                        standardError: String(decoding: errorData, as: UTF8.self))
}
