import Foundation

extension SafetensorsFile {
    /// Writes `F32` tensors to a safetensors file straight from their storage:
    /// the result is held once, by the caller, and never copied into a file
    /// image (on a little-endian machine; a big-endian one swaps a copy).
    ///
    /// The file is the one ``serialized()`` would give for the same tensors and
    /// metadata (tensors sorted by name), written through ``OutputFile`` like
    /// ``write(to:)``: a symbolic link is written through, a FIFO or character
    /// device streamed to, a regular file replaced atomically keeping its mode
    /// and owner.
    ///
    /// - Parameters:
    ///   - tensors: names and tensors; names unique and not `"__metadata__"`.
    ///   - metadata: string pairs for `__metadata__` (omitted when empty).
    ///   - url: a `file:` URL; the folder of its final target must exist.
    /// - Throws: `SafetensorsError.duplicateTensorName` for a repeated name,
    ///   `SafetensorsError.invalidEntry` for the reserved name, and
    ///   `SafetensorsError.ioFailure` with the path and the operating system's reason.
    public static func write(
        floatTensors tensors: [(name: String, tensor: Tensor<Float>)], metadata: [String: String] = [:], to url: URL
    ) throws {
        var seen = Set<String>()
        for (name, _) in tensors {
            guard name != metadataKey else {
                throw SafetensorsError.invalidEntry(
                    tensor: name, field: "name", expected: "a tensor name other than \(metadataKey)", actual: "the reserved name")
            }
            guard seen.insert(name).inserted else { throw SafetensorsError.duplicateTensorName(name) }
        }
        let sorted = tensors.sorted { $0.name < $1.name }
        let header = Self.header(
            tensors: sorted.map { (name: $0.name, dtype: .f32, shape: $0.tensor.shape, byteCount: $0.tensor.count * 4) },
            metadata: metadata)
        do {
            try OutputFile.write(to: url) { writer in
                try writer.write(contentsOf: header)
                for (_, tensor) in sorted {
                    #if _endian(big)
                    try writer.write(contentsOf: tensor.scalars.map { $0.bitPattern.littleEndian })
                    #else
                    try tensor.withUnsafeBufferPointer { try writer.write(UnsafeRawBufferPointer($0)) }
                    #endif
                }
            }
        } catch let error as OutputFileError {
            throw SafetensorsError.ioFailure(path: error.path, reason: error.reason)
        }
    }
}
