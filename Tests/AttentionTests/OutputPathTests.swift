import Foundation
import XCTest
@testable import Attention

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `--output PATH` keeps what is at the path what it is (issue 11, item 1): a
/// symbolic link is written through, a FIFO or character device is streamed to,
/// an existing regular file keeps its mode, owner and other hard links, and
/// what cannot be written is refused with one line. Never on `/dev/null`
/// itself: FIFOs, nodes and files in a temporary folder.
final class OutputPathTests: XCTestCase {
    private func sample(_ value: Float) throws -> SafetensorsFile {
        var file = SafetensorsFile()
        file.set("x", try Tensor(shape: [2, 3], scalars: (0..<6).map { Float($0) + value }))
        return file
    }

    private func lstatInfo(_ path: String) -> stat? {
        var info = stat()
        return lstat(path, &info) == 0 ? info : nil
    }

    private func fileType(_ path: String) -> mode_t? { lstatInfo(path).map { $0.st_mode & S_IFMT } }

    func testSymbolicLinkIsWrittenThroughAndStaysALink() throws {
        let directory = try makeTemporaryDirectory()
        let target = directory.appendingPathComponent("target.safetensors")
        let link = directory.appendingPathComponent("link.safetensors")
        try sample(1).write(to: target)
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "target.safetensors")
        XCTAssertEqual(chmod(target.path, 0o600), 0)

        try sample(2).write(to: link)

        XCTAssertEqual(fileType(link.path), S_IFLNK, "the link is still a link")
        XCTAssertEqual(try FileManager.default.destinationOfSymbolicLink(atPath: link.path), "target.safetensors")
        XCTAssertEqual(try SafetensorsFile(contentsOf: target), try sample(2), "the target has the new bytes")
        XCTAssertEqual(lstatInfo(target.path).map { $0.st_mode & 0o7777 }, 0o600, "the target keeps its mode")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted(),
                       ["link.safetensors", "target.safetensors"], "no temporary file left")
    }

    func testChainOfLinksAndADanglingLinkReachTheirFinalTarget() throws {
        let directory = try makeTemporaryDirectory()
        let sub = directory.appendingPathComponent("sub")
        try FileManager.default.createDirectory(at: sub, withIntermediateDirectories: true)
        // first -> sub/second -> ../final (relative to sub), final does not exist yet.
        try FileManager.default.createSymbolicLink(atPath: sub.appendingPathComponent("second").path, withDestinationPath: "../final")
        try FileManager.default.createSymbolicLink(atPath: directory.appendingPathComponent("first").path, withDestinationPath: "sub/second")
        try sample(3).write(to: directory.appendingPathComponent("first"))
        XCTAssertEqual(fileType(directory.appendingPathComponent("first").path), S_IFLNK)
        XCTAssertEqual(fileType(sub.appendingPathComponent("second").path), S_IFLNK)
        XCTAssertEqual(try SafetensorsFile(contentsOf: directory.appendingPathComponent("final")), try sample(3))
    }

    func testSymbolicLinkLoopIsRefusedWithOneLine() throws {
        let directory = try makeTemporaryDirectory()
        let a = directory.appendingPathComponent("a"), b = directory.appendingPathComponent("b")
        try FileManager.default.createSymbolicLink(atPath: a.path, withDestinationPath: "b")
        try FileManager.default.createSymbolicLink(atPath: b.path, withDestinationPath: "a")
        XCTAssertThrowsError(try sample(1).write(to: a)) { error in
            XCTAssertEqual(error as? SafetensorsError, .ioFailure(path: a.path, reason: "too many levels of symbolic links"))
        }
        XCTAssertEqual(fileType(a.path), S_IFLNK)
    }

    func testRegularFileKeepsModeAndOwner() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory.appendingPathComponent("out.safetensors")
        try sample(1).write(to: file)
        XCTAssertEqual(chmod(file.path, 0o600), 0)
        // Another owner, when the test may give one (root): uid/gid 65534 (nobody).
        let otherOwner = geteuid() == 0 && chown(file.path, 65534, 65534) == 0
        let before = try XCTUnwrap(lstatInfo(file.path))

        try sample(2).write(to: file)

        let after = try XCTUnwrap(lstatInfo(file.path))
        XCTAssertEqual(after.st_mode & S_IFMT, S_IFREG)
        XCTAssertEqual(after.st_mode & 0o7777, 0o600, "mode 0600 kept (not 0644)")
        XCTAssertEqual(after.st_uid, before.st_uid, "owner kept")
        XCTAssertEqual(after.st_gid, before.st_gid, "group kept")
        if otherOwner { XCTAssertEqual(after.st_uid, 65534) }
        XCTAssertEqual(try SafetensorsFile(contentsOf: file), try sample(2))
    }

    func testNewFileGetsTheUmasksMode() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory.appendingPathComponent("new.safetensors")
        let mask = umask(0o027)
        defer { umask(mask) }
        try sample(1).write(to: file)
        XCTAssertEqual(lstatInfo(file.path).map { $0.st_mode & 0o7777 }, 0o640, "0666 less the umask")
    }

    func testHardLinkedFileIsWrittenInPlaceSoEveryNameSeesTheNewBytes() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory.appendingPathComponent("a.safetensors"), other = directory.appendingPathComponent("b.safetensors")
        try sample(1).write(to: file)
        XCTAssertEqual(link(file.path, other.path), 0)
        try sample(2).write(to: file)
        XCTAssertEqual(try SafetensorsFile(contentsOf: other), try sample(2), "the other name sees the new file")
        XCTAssertEqual(lstatInfo(file.path)?.st_ino, lstatInfo(other.path)?.st_ino, "still one inode")
    }

    func testFIFOIsStreamedToAndStaysAFIFO() throws {
        let directory = try makeTemporaryDirectory()
        let fifo = directory.appendingPathComponent("pipe")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        let expected = try sample(4)
        let received = readWhileWritten(fifo) { try expected.write(to: fifo) }
        XCTAssertEqual(fileType(fifo.path), S_IFIFO, "still a FIFO")
        XCTAssertEqual(try SafetensorsFile(data: try XCTUnwrap(received)), expected, "the reader got the file")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["pipe"])
    }

    /// A character device node in the temporary folder (major 1, minor 3: the
    /// null device, under another name), when the test may create one (root).
    func testCharacterDeviceIsWrittenToAndStaysADevice() throws {
        let directory = try makeTemporaryDirectory()
        let node = directory.appendingPathComponent("null-device")
        guard mknod(node.path, S_IFCHR | 0o666, dev_t((1 << 8) | 3)) == 0 else {
            throw XCTSkip("cannot create a device node here (needs CAP_MKNOD): \(String(cString: strerror(errno)))")
        }
        try sample(1).write(to: node)
        XCTAssertEqual(fileType(node.path), S_IFCHR, "the device node is still a device node")
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["null-device"])
    }

    func testDirectorySocketAndMissingFolderAreRefusedWithOneLine() throws {
        let directory = try makeTemporaryDirectory()
        XCTAssertThrowsError(try sample(1).write(to: directory)) { error in
            XCTAssertEqual(error as? SafetensorsError, .ioFailure(path: directory.path, reason: "is a directory"))
        }
        let socketPath = directory.appendingPathComponent("s").path
        let socketDescriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(socketDescriptor) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            let bytes = Array(socketPath.utf8)
            raw.copyBytes(from: bytes.prefix(raw.count - 1))
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(socketDescriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        XCTAssertEqual(bound, 0)
        XCTAssertThrowsError(try sample(1).write(to: URL(fileURLWithPath: socketPath))) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("is a socket"), text)
            XCTAssertFalse(text.contains("\n"))
        }
        XCTAssertEqual(fileType(socketPath), S_IFSOCK, "the socket is left alone")
        let missing = directory.appendingPathComponent("no/such/folder/out.safetensors")
        XCTAssertThrowsError(try sample(1).write(to: missing)) { error in
            guard case let .ioFailure(path, reason)? = error as? SafetensorsError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, missing.path)
            XCTAssertTrue(reason.contains("No such file or directory"), reason)
        }
    }

    func testFailingBodyLeavesTheExistingFileAndNoTemporaryFile() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory.appendingPathComponent("keep.safetensors")
        try sample(1).write(to: file)
        struct Stop: Error {}
        XCTAssertThrowsError(try OutputFile.write(to: file) { writer in
            try writer.write(Data([1, 2, 3]))
            throw Stop()
        })
        XCTAssertEqual(try SafetensorsFile(contentsOf: file), try sample(1))
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: directory.path), ["keep.safetensors"])
    }

    func testStreamingWriteOfFloatTensorsEqualsTheSerializedFile() throws {
        let directory = try makeTemporaryDirectory()
        let file = directory.appendingPathComponent("streamed.safetensors")
        let a = try Tensor<Float>.randomNormal([3, 5], seed: 1), b = try Tensor<Float>.randomNormal([0, 4], seed: 2)
        try SafetensorsFile.write(floatTensors: [("b", b), ("a", a)], metadata: ["k": "v"], to: file)
        var expected = SafetensorsFile()
        expected.set("a", a)
        expected.set("b", b)
        expected.metadata = ["k": "v"]
        XCTAssertEqual(try Data(contentsOf: file), expected.serialized(), "byte for byte")
        XCTAssertThrowsError(try SafetensorsFile.write(floatTensors: [("a", a), ("a", b)], to: file)) { error in
            XCTAssertEqual(error as? SafetensorsError, .duplicateTensorName("a"))
        }
    }

    // MARK: The command line

    func testCommandWritesThroughALinkAndKeepsAFilesMode() throws {
        let directory = try makeTemporaryDirectory()
        let input = try smallSDPAInput(in: directory)
        let target = directory.appendingPathComponent("target.safetensors")
        let link = directory.appendingPathComponent("link.safetensors")
        try sample(1).write(to: target)
        XCTAssertEqual(chmod(target.path, 0o600), 0)
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: target.path)
        let run = try runAttentionExecutable(["sdpa", "--input", input.path, "--output", link.path])
        XCTAssertEqual(run.status, 0, run.standardError)
        XCTAssertEqual(fileType(link.path), S_IFLNK)
        XCTAssertEqual(try SafetensorsFile(contentsOf: target).tensorNames, ["logsumexp", "out"])
        XCTAssertEqual(lstatInfo(target.path).map { $0.st_mode & 0o7777 }, 0o600)
    }

    func testCommandStreamsToAFIFOThatAnotherThreadReads() throws {
        let directory = try makeTemporaryDirectory()
        let input = try smallSDPAInput(in: directory)
        let fifo = directory.appendingPathComponent("out.fifo")
        XCTAssertEqual(mkfifo(fifo.path, 0o600), 0)
        var run: AttentionRun?
        let received = readWhileWritten(fifo) { run = try runAttentionExecutable(["sdpa", "--input", input.path, "--output", fifo.path]) }
        XCTAssertEqual(run?.status, 0, run?.standardError ?? "")
        XCTAssertEqual(fileType(fifo.path), S_IFIFO)
        let file = try SafetensorsFile(data: try XCTUnwrap(received))
        XCTAssertEqual(try file.shape(of: "out"), [1, 2, 3, 4])
    }

    func testCommandRefusesADirectoryWithOneLineAndStatus1() throws {
        let directory = try makeTemporaryDirectory()
        let input = try smallSDPAInput(in: directory)
        let run = try runAttentionExecutable(["sdpa", "--input", input.path, "--output", directory.path])
        XCTAssertEqual(run.status, 1)
        XCTAssertEqual(run.standardErrorLines.count, 1, run.standardError)
        XCTAssertTrue(run.standardError.contains("is a directory"), run.standardError)
    }

    // MARK: Helpers

    /// q [1, 2, 3, 5], k and v [1, 2, 4, 5] and [1, 2, 4, 4].
    private func smallSDPAInput(in directory: URL) throws -> URL {
        var file = SafetensorsFile()
        file.set("q", try Tensor<Float>.randomNormal([1, 2, 3, 5], seed: 1))
        file.set("k", try Tensor<Float>.randomNormal([1, 2, 4, 5], seed: 2))
        file.set("v", try Tensor<Float>.randomNormal([1, 2, 4, 4], seed: 3))
        let url = directory.appendingPathComponent("input.safetensors")
        try file.write(to: url)
        return url
    }

    /// Runs `write` while another thread opens `fifo` for reading and reads it
    /// to the end; returns what the reader received (nil if it could not open).
    private func readWhileWritten(_ fifo: URL, file: StaticString = #filePath, line: UInt = #line,
                                  _ write: () throws -> Void) -> Data? {
        let done = DispatchSemaphore(value: 0)
        let box = ReceivedBytes()
        let path = fifo.path
        Thread.detachNewThread {
            defer { done.signal() }
            let descriptor = open(path, O_RDONLY)
            guard descriptor >= 0 else { return }
            defer { close(descriptor) }
            var data = Data()
            var buffer = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let count = read(descriptor, &buffer, buffer.count)
                if count <= 0 { break }
                data.append(contentsOf: buffer[0..<count])
            }
            box.data = data
        }
        XCTAssertNoThrow(try write(), file: file, line: line)
        XCTAssertEqual(done.wait(timeout: .now() + 60), .success, "the reader finished", file: file, line: line)
        return box.data
    }
}

private final class ReceivedBytes: @unchecked Sendable {
    var data: Data?
}
