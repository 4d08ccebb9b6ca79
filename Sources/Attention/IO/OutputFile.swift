import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writing a file to a path the way a user expects of `--output PATH`: what is
/// at the path keeps what it is.
///
/// The path is resolved through any chain of symbolic links first, so a link is
/// written through and stays a link (its final target gets the new bytes; a
/// dangling link creates its target, as a shell's `>` does). Then, by what the
/// target is:
///
/// | target | what happens |
/// |---|---|
/// | nothing | a new file, written to a temporary file in the same folder, flushed and renamed into place (mode `0666` less the umask) |
/// | a regular file | replaced the same way, atomically, the new file taking the old one's mode and owner; written in place (truncated, then written and flushed) instead when a rename cannot keep them: the file has other hard links, its owner cannot be given to the new file, or the folder does not let us create the temporary file |
/// | a FIFO or a character device | opened and streamed to, never replaced (a FIFO's reader receives the bytes; opening blocks until there is a reader, as with any writer) |
/// | a directory, a socket or a block device | refused with ``OutputFileError``; nothing is touched |
///
/// So a reader of a regular file sees the old file or the complete new one (on
/// the atomic way), a failed write never leaves a partial file at a path that
/// had none, and a device node or FIFO is never turned into a regular file.
/// (Kinds of failure reported against curl, OCRmyPDF, rmlint and bazel.)
public enum OutputFile {
    /// Writes what `body` produces to `url`.
    ///
    /// `body` is called once, with a writer whose bytes go straight to the
    /// destination (or to the temporary file that replaces it), so large
    /// buffers are written from where they are, without a copy.
    ///
    /// - Parameters:
    ///   - url: a `file:` URL; the folder of its final target must exist.
    ///   - body: writes the file's bytes, in order.
    /// - Throws: ``OutputFileError`` with the path and the operating system's
    ///   reason; any error `body` throws, after the temporary file (if any) is
    ///   removed and the destination left as it was.
    public static func write(to url: URL, _ body: (OutputFileWriter) throws -> Void) throws {
        guard url.isFileURL else { throw OutputFileError(path: url.absoluteString, reason: "expected a file URL") }
        let path = url.path
        let target = try resolveLinks(path)
        var info = stat()
        if lstat(target, &info) != 0 {
            guard errno == ENOENT else { throw OutputFileError.system(path, "cannot inspect \(target)") }
            return try replaceAtomically(target, displayPath: path, existing: nil, body)
        }
        switch info.st_mode & S_IFMT {
        case S_IFREG:
            if info.st_nlink > 1 { return try writeInPlace(target, displayPath: path, body) }
            return try replaceAtomically(target, displayPath: path, existing: info, body)
        case S_IFIFO, S_IFCHR:
            return try stream(target, displayPath: path, body)
        case S_IFDIR:
            throw OutputFileError(path: path, reason: "is a directory")
        case S_IFSOCK:
            throw OutputFileError(path: path, reason: "is a socket; refusing to write to it (expected a file, a FIFO or a character device)")
        case S_IFBLK:
            throw OutputFileError(path: path, reason: "is a block device; refusing to write to it (expected a file, a FIFO or a character device)")
        default:
            throw OutputFileError(path: path, reason: "is not a regular file, a FIFO or a character device; refusing to write to it")
        }
    }

    /// Writes `data` to `url`, as ``write(to:_:)``.
    ///
    /// - Throws: as ``write(to:_:)``.
    public static func write(_ data: Data, to url: URL) throws {
        try write(to: url) { try $0.write(data) }
    }

    // MARK: Resolution

    /// The final target of `path` through symbolic links (relative links are
    /// relative to the link's folder), at most 40 of them as on Linux; a path
    /// that does not exist (or a dangling link's target) is returned as it is.
    static func resolveLinks(_ path: String) throws -> String {
        var current = path
        for _ in 0..<40 {
            var info = stat()
            guard lstat(current, &info) == 0, (info.st_mode & S_IFMT) == S_IFLNK else { return current }
            var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
            let count = readlink(current, &buffer, buffer.count - 1)
            guard count >= 0 else { throw OutputFileError.system(current, "cannot read the symbolic link") }
            let destination = String(decoding: buffer[0..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if destination.hasPrefix("/") {
                current = destination
            } else {
                current = (current as NSString).deletingLastPathComponent
                current = current.isEmpty ? destination : current + "/" + destination
            }
        }
        throw OutputFileError(path: path, reason: "too many levels of symbolic links")
    }

    // MARK: The three ways

    /// A temporary file in the target's folder, renamed over the target. With
    /// `existing`, the temporary file first takes its owner and mode; when that
    /// or the temporary file itself is not possible, the target is written in
    /// place instead.
    private static func replaceAtomically(
        _ target: String, displayPath: String, existing: stat?, _ body: (OutputFileWriter) throws -> Void
    ) throws {
        let folder = (target as NSString).deletingLastPathComponent
        let name = (target as NSString).lastPathComponent
        let temporary = (folder.isEmpty ? "" : folder + "/") + ".\(name).\(UUID().uuidString).tmp"
        let descriptor = retryingOnInterrupt { open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666) }
        guard descriptor >= 0 else {
            let reason = errno
            if existing != nil, [EACCES, EPERM, EROFS].contains(reason) {
                return try writeInPlace(target, displayPath: displayPath, body)
            }
            errno = reason
            throw OutputFileError.system(displayPath, "cannot create a temporary file in \(folder.isEmpty ? "." : folder)")
        }
        var closed = false
        var renamed = false
        defer {
            if !closed { close(descriptor) }
            if !renamed { unlink(temporary) }
        }
        if let existing {
            if existing.st_uid != geteuid() || existing.st_gid != getegid() {
                if fchown(descriptor, existing.st_uid, existing.st_gid) != 0 {
                    // A rename would change the owner: keep it by writing in place.
                    close(descriptor)
                    closed = true
                    return try writeInPlace(target, displayPath: displayPath, body)
                }
            }
            // After fchown, which may clear set-user-ID bits.
            guard fchmod(descriptor, existing.st_mode & 0o7777) == 0 else {
                throw OutputFileError.system(displayPath, "cannot set the mode of the temporary file")
            }
        }
        try body(OutputFileWriter(descriptor: descriptor, path: displayPath))
        guard fsync(descriptor) == 0 else { throw OutputFileError.system(displayPath, "cannot flush the temporary file") }
        closed = true
        guard close(descriptor) == 0 else { throw OutputFileError.system(displayPath, "cannot close the temporary file") }
        guard rename(temporary, target) == 0 else {
            throw OutputFileError.system(displayPath, "cannot rename the temporary file over \(target)")
        }
        renamed = true
        // Make the rename itself durable; a folder that cannot be flushed is no error.
        let folderDescriptor = open(folder.isEmpty ? "." : folder, O_RDONLY | O_CLOEXEC)
        if folderDescriptor >= 0 {
            _ = fsync(folderDescriptor)
            close(folderDescriptor)
        }
    }

    /// Truncates the existing regular file and writes it, keeping its inode
    /// (links, owner, mode, extended attributes).
    private static func writeInPlace(_ target: String, displayPath: String, _ body: (OutputFileWriter) throws -> Void) throws {
        let descriptor = retryingOnInterrupt { open(target, O_WRONLY | O_TRUNC | O_CLOEXEC) }
        guard descriptor >= 0 else { throw OutputFileError.system(displayPath, nil) }
        var closed = false
        defer { if !closed { close(descriptor) } }
        try body(OutputFileWriter(descriptor: descriptor, path: displayPath))
        guard fsync(descriptor) == 0 else { throw OutputFileError.system(displayPath, "cannot flush") }
        closed = true
        guard close(descriptor) == 0 else { throw OutputFileError.system(displayPath, "cannot close") }
    }

    /// Opens a FIFO or character device and streams to it.
    private static func stream(_ target: String, displayPath: String, _ body: (OutputFileWriter) throws -> Void) throws {
        let descriptor = retryingOnInterrupt { open(target, O_WRONLY | O_CLOEXEC) }
        guard descriptor >= 0 else { throw OutputFileError.system(displayPath, nil) }
        var closed = false
        defer { if !closed { close(descriptor) } }
        try body(OutputFileWriter(descriptor: descriptor, path: displayPath))
        closed = true
        guard close(descriptor) == 0 else { throw OutputFileError.system(displayPath, "cannot close") }
    }
}

/// The bytes of one ``OutputFile`` write, passed to its body.
public struct OutputFileWriter {
    let descriptor: Int32
    let path: String

    /// Appends raw bytes, retrying short writes and interrupted calls.
    ///
    /// - Parameter bytes: the bytes to append, in order.
    /// - Throws: ``OutputFileError`` with the operating system's reason (a full
    ///   disk, a FIFO whose reader went away, …).
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            // At most 1 GiB a call: some systems refuse larger single writes.
            let chunk = min(bytes.count - offset, 1 << 30)
            let count = retryingOnInterrupt { Glibc_write(descriptor, base + offset, chunk) }
            guard count > 0 else { throw OutputFileError.system(path, "cannot write") }
            offset += count
        }
    }

    /// Appends `data`.
    ///
    /// - Parameter data: the bytes to append.
    /// - Throws: as the raw-bytes `write(_:)`.
    public func write(_ data: Data) throws {
        try data.withUnsafeBytes { try write($0) }
    }

    /// Appends the elements of `array` as they are in memory.
    ///
    /// - Parameter array: the elements, written in this machine's byte order.
    /// - Throws: as the raw-bytes `write(_:)`.
    public func write<Element: BitwiseCopyable>(contentsOf array: [Element]) throws {
        try array.withUnsafeBytes { try write($0) }
    }
}

/// Writing an output file failed: the path as given and the reason.
public struct OutputFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The path as the caller gave it.
    public let path: String
    /// What went wrong, with the operating system's message where there is one.
    public let reason: String

    /// An error for `path` with its reason.
    ///
    /// - Parameters:
    ///   - path: the path as given.
    ///   - reason: one line.
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }

    /// `"PATH: REASON"`, one line.
    public var description: String { "\(path): \(reason)" }

    static func system(_ path: String, _ context: String?) -> OutputFileError {
        let reason = String(cString: strerror(errno))
        return OutputFileError(path: path, reason: context.map { "\($0): \(reason)" } ?? reason)
    }
}

private func retryingOnInterrupt<Result: BinaryInteger>(_ call: () -> Result) -> Result {
    while true {
        let result = call()
        if result >= 0 || errno != EINTR { return result }
    }
}

/// The C library's `write(2)` (the name `write` is taken by the methods above).
private func Glibc_write(_ descriptor: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Glibc)
    return Glibc.write(descriptor, buffer, count)
    #elseif canImport(Musl)
    return Musl.write(descriptor, buffer, count)
    #else
    return Darwin.write(descriptor, buffer, count)
    #endif
}
