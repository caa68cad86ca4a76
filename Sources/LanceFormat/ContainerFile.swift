import CLanceProto
import LanceCore
import LanceModel

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads and writes `.lance` containers (byte layout: `docs/container-format.md`).
///
/// Writing is atomic: the file is written to a temporary file in the same folder, flushed to disk
/// and renamed over the target, so readers see the old file or the complete new one, never a part.
/// Reading memory-maps the file, checks the header, the manifest's and every blob's CRC-32C, and
/// bounds-checks every offset and length before touching the bytes.
public enum ContainerFile {
    /// The format version this build writes; it reads every `majorVersion.x`.
    public static let formatVersion = (major: Int(ContainerLayout.majorVersion), minor: Int(ContainerLayout.minorVersion))

    /// Writes `container` to `path`, replacing any file there only once the new one is complete.
    ///
    /// - Parameter halfPrecision: store calibration bases, protected bases and frozen
    ///   (non-trainable) weights as IEEE float16 (round to nearest even), halving their size;
    ///   trainable weights and optimizer slots stay float32. Reading widens them back to float32.
    /// - Throws: `.invalidContainer` when a name cannot be stored, `.unwritableOutput` when the
    ///   temporary file cannot be created, written, flushed or renamed (it is removed and the old
    ///   file is left as it was).
    public static func write(_ container: Container, to path: String, halfPrecision: Bool = false) throws(ContainerError) {
        try write(container, to: path, halfPrecision: halfPrecision, interruption: nil)
    }

    /// Reads a container, verifying every checksum.
    ///
    /// - Throws: `ContainerError` naming the file and the tensor or field at fault.
    public static func read(_ path: String) throws(ContainerError) -> Container {
        try withMappedFile(path) { file throws(ContainerError) in
            try withManifest(file, path: path) { header, manifest, blobs throws(ContainerError) in
                var decoder = ManifestDecoder(path: path, blobs: blobs)
                decoder.tensors.reserveCapacity(blobs.count)
                for entry in blobs { decoder.tensors.append(try ManifestDecoder.tensor(entry, file: file, path: path)) }
                return try decoder.container(manifest)
            }
        }
    }

    /// Reads only the header and the manifest (checksummed), not the tensor payloads: fast, for
    /// inspection. Blob checksums are not verified.
    public static func readManifestOnly(_ path: String) throws(ContainerError) -> ContainerManifest {
        try withMappedFile(path) { file throws(ContainerError) in
            try withManifest(file, path: path) { header, manifest, blobs throws(ContainerError) in
                try manifestSummary(manifest, header: header, blobs: blobs, path: path)
            }
        }
    }

    // MARK: Writing

    /// A test hook: stop writing after `afterBytes` bytes as a crash would.
    enum WriteInterruption {
        /// The process kills itself with SIGKILL (nothing is cleaned up).
        case killProcess(afterBytes: Int)
        /// The writer returns at that point without renaming or removing the temporary file.
        case abandon(afterBytes: Int)

        var afterBytes: Int {
            switch self {
            case .killProcess(let bytes), .abandon(let bytes): bytes
            }
        }
    }

    static func write(_ container: Container, to path: String, halfPrecision: Bool, interruption: WriteInterruption?) throws(ContainerError) {
        var encoder = ManifestEncoder(path: path, halfPrecision: halfPrecision)
        let manifest = try encoder.manifest(container)
        encoder.blobTable(into: manifest)  // with zero offsets: offsets are fixed64, the size does not change
        let manifestLength = lance__manifest__get_packed_size(manifest)
        let dataStart = ContainerLayout.aligned(ContainerLayout.headerSize + manifestLength)
        let fileLength = encoder.assignOffsets(dataStart: dataStart, manifestEnd: ContainerLayout.headerSize + manifestLength)
        encoder.blobTable(into: manifest)
        var manifestBytes = [UInt8](repeating: 0, count: manifestLength)
        let packed = manifestBytes.withUnsafeMutableBufferPointer { lance__manifest__pack(manifest, $0.baseAddress) }
        precondition(packed == manifestLength, "the manifest's size changed when offsets were filled in")
        let header = ContainerHeader(fileLength: UInt64(fileLength), manifestLength: UInt64(manifestLength),
                                     manifestChecksum: CRC32C.checksum(manifestBytes))

        let directory = parentDirectory(of: path)
        let baseName = String(path.split(separator: "/", omittingEmptySubsequences: false).last ?? "")
        let temporaryPath = "\(directory)/.\(baseName).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw .unwritableOutput(path: path, reason: "cannot create a temporary file in \(directory) (\(errorText()))")
        }
        var output = OutputFile(descriptor: descriptor, limit: interruption?.afterBytes)
        do throws(OutputFile.Failure) {
            try output.write(header.encoded())
            try output.write(manifestBytes)
            var position = ContainerLayout.headerSize + manifestLength
            for blob in encoder.blobs {
                try output.writeZeros(blob.offset - position)
                try output.write(blob)
                position = blob.offset + blob.byteLength
            }
            precondition(position == fileLength, "the written length differs from the planned one")
            guard fsync(descriptor) == 0 else { throw OutputFile.Failure.system("flushing to disk failed (\(errorText()))") }
            output.closed = true
            guard close(descriptor) == 0 else { throw OutputFile.Failure.system("closing failed (\(errorText()))") }
            guard rename(temporaryPath, path) == 0 else {
                throw OutputFile.Failure.system("renaming \(temporaryPath) over it failed (\(errorText()))")
            }
        } catch {
            if !output.closed { close(descriptor) }
            switch error {
            case .limitReached:
                if case .killProcess? = interruption { kill(getpid(), SIGKILL) }
                return  // abandoned like a crash: no rename, the temporary file left behind
            case .system(let reason):
                unlink(temporaryPath)
                throw .unwritableOutput(path: path, reason: reason)
            }
        }
        // Make the rename itself durable.
        let directoryDescriptor = open(directory, O_RDONLY | O_CLOEXEC)
        if directoryDescriptor >= 0 {
            _ = fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    /// A file descriptor written in full (partial writes and EINTR retried).
    private struct OutputFile {
        enum Failure: Error {
            case system(String)
            case limitReached
        }

        let descriptor: Int32
        /// The test hook's byte budget.
        let limit: Int?
        var written = 0
        var closed = false

        init(descriptor: Int32, limit: Int?) {
            self.descriptor = descriptor
            self.limit = limit
        }

        mutating func write(_ bytes: [UInt8]) throws(Failure) {
            var failure: Failure?
            bytes.withUnsafeBytes { buffer in
                do throws(Failure) { try write(buffer) } catch { failure = error }
            }
            if let failure { throw failure }
        }

        mutating func write(_ blob: PlannedBlob) throws(Failure) {
            var failure: Failure?
            blob.withUnsafeBytes { buffer in
                do throws(Failure) { try write(buffer) } catch { failure = error }
            }
            if let failure { throw failure }
        }

        mutating func writeZeros(_ count: Int) throws(Failure) {
            if count > 0 { try write([UInt8](repeating: 0, count: count)) }
        }

        mutating func write(_ bytes: UnsafeRawBufferPointer) throws(Failure) {
            guard var pointer = bytes.baseAddress, !bytes.isEmpty else { return }
            var remaining = bytes.count
            if let limit, written + remaining > limit {
                remaining = max(0, limit - written)
                try writeFully(&pointer, &remaining)
                throw .limitReached
            }
            try writeFully(&pointer, &remaining)
        }

        private mutating func writeFully(_ pointer: inout UnsafeRawPointer, _ remaining: inout Int) throws(Failure) {
            while remaining > 0 {
                let result = systemWrite(descriptor, pointer, min(remaining, 1 << 30))
                if result < 0 {
                    if errno == EINTR { continue }
                    throw .system("writing failed (\(errorText()))")
                }
                pointer += result
                remaining -= result
                written += result
            }
        }
    }

    private static func parentDirectory(of path: String) -> String {
        guard let slash = path.lastIndex(of: "/") else { return "." }
        let directory = String(path[..<slash])
        return directory.isEmpty ? "/" : directory
    }

    // MARK: Reading

    /// Maps `path` read-only for the duration of `body`.
    private static func withMappedFile<Result>(_ path: String, _ body: (UnsafeRawBufferPointer) throws(ContainerError) -> Result) throws(ContainerError) -> Result {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { throw .unreadable(path: path, reason: errorText()) }
        defer { close(descriptor) }
        var status = stat()
        guard fstat(descriptor, &status) == 0 else { throw .unreadable(path: path, reason: errorText()) }
        guard (status.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: path, reason: "it is not a regular file") }
        let length = Int(status.st_size)
        guard length > 0 else { return try body(UnsafeRawBufferPointer(start: nil, count: 0)) }
        guard let mapping = mmap(nil, length, PROT_READ, MAP_PRIVATE, descriptor, 0), mapping != MAP_FAILED else {
            throw .unreadable(path: path, reason: "mapping it into memory failed (\(errorText()))")
        }
        defer { munmap(mapping, length) }
        return try body(UnsafeRawBufferPointer(start: mapping, count: length))
    }

    /// Checks the header and the manifest, decodes the manifest and validates the blob table.
    private static func withManifest<Result>(
        _ file: UnsafeRawBufferPointer, path: String,
        _ body: (ContainerHeader, Lance__Manifest, [BlobEntry]) throws(ContainerError) -> Result
    ) throws(ContainerError) -> Result {
        let header = try ContainerHeader.decode(file, path: path)
        let manifestLength = Int(header.manifestLength)  // ≤ file length, checked by decode
        let manifestBytes = UnsafeRawBufferPointer(rebasing: file[ContainerLayout.headerSize..<(ContainerLayout.headerSize + manifestLength)])
        guard CRC32C.checksum(manifestBytes) == header.manifestChecksum else { throw .manifestChecksumMismatch(path: path) }
        let unpacked = manifestBytes.withMemoryRebound(to: UInt8.self) {
            lance__manifest__unpack(nil, $0.count, $0.baseAddress)
        }
        guard let unpacked else {
            throw .malformedManifest(path: path, field: "manifest", reason: "the \(manifestLength) bytes are not a valid protobuf lance.Manifest")
        }
        defer { lance__manifest__free_unpacked(unpacked, nil) }
        let blobs = try ManifestDecoder.blobTable(unpacked.pointee, dataStart: ContainerLayout.headerSize + manifestLength,
                                                  fileLength: file.count, path: path)
        return try body(header, unpacked.pointee, blobs)
    }

    private static func manifestSummary(_ manifest: Lance__Manifest, header: ContainerHeader, blobs: [BlobEntry],
                                        path: String) throws(ContainerError) -> ContainerManifest {
        let decoder = ManifestDecoder(path: path, blobs: blobs)
        guard let graph = manifest.graph?.pointee else { throw decoder.malformed("graph", "the manifest has no graph") }
        let skeleton = try decoder.graphSkeleton(graph)
        func stored(_ parameter: Lance__Parameter, field: String) throws(ContainerError) -> StoredParameter {
            StoredParameter(name: decoder.string(parameter.name), trainable: parameter.trainable != 0,
                            synthesized: parameter.synthesized != 0, layoutChange: decoder.layoutChange(parameter.layout_change),
                            storage: StoredTensor(try decoder.blobEntry(parameter.has_blob, parameter.blob, field: "\(field).blob")))
        }
        var parameters: [StoredParameter] = []
        for (index, parameter) in try decoder.elements(graph.n_parameters, graph.parameters, field: "graph.parameters").enumerated() {
            parameters.append(try stored(parameter, field: "graph.parameters[\(index)]"))
        }
        var calibration: StoredCalibration?
        if let message = manifest.calibration?.pointee {
            var layers: [(layer: String, inputShape: [Int], modes: [StoredModeBasis])] = []
            for (layerIndex, layer) in try decoder.elements(message.n_layers, message.layers, field: "calibration.layers").enumerated() {
                var modes: [StoredModeBasis] = []
                for (modeIndex, mode) in try decoder.elements(layer.n_modes, layer.modes, field: "calibration.layers[\(layerIndex)].modes").enumerated() {
                    let factor = try decoder.blobEntry(mode.has_factor_blob, mode.factor_blob,
                                                       field: "calibration.layers[\(layerIndex)].modes[\(modeIndex)].factor_blob")
                    modes.append(StoredModeBasis(mode: decoder.string(mode.mode), dimension: Int(truncatingIfNeeded: mode.dimension),
                                                 rank: Int(truncatingIfNeeded: mode.rank),
                                                 spectrum: decoder.floats(mode.n_spectrum, mode.spectrum), factor: StoredTensor(factor)))
                }
                layers.append((decoder.string(layer.layer), decoder.integers(layer.n_input_shape, layer.input_shape), modes))
            }
            calibration = StoredCalibration(energy: message.energy, batchSize: Int(truncatingIfNeeded: message.batch_size),
                                            batches: Int(truncatingIfNeeded: message.batches),
                                            accumulation: decoder.string(message.accumulation), layerRule: decoder.string(message.layer_rule),
                                            dataDescription: decoder.string(message.data_description),
                                            dataFingerprint: decoder.string(message.data_fingerprint), layers: layers)
        }
        var tasks: [StoredTask] = []
        for (taskIndex, task) in try decoder.elements(manifest.n_tasks, manifest.tasks, field: "tasks").enumerated() {
            var head: [StoredParameter] = []
            for (index, parameter) in try decoder.elements(task.n_head, task.head, field: "tasks[\(taskIndex)].head").enumerated() {
                head.append(try stored(parameter, field: "tasks[\(taskIndex)].head[\(index)]"))
            }
            var classNames: [String] = []
            if task.n_class_names > 0, let pointer = task.class_names {
                classNames = (0..<task.n_class_names).map { decoder.string(pointer[$0]) }
            }
            tasks.append(StoredTask(name: decoder.string(task.name), classes: Int(truncatingIfNeeded: task.classes), classNames: classNames,
                                    head: head, metrics: try decoder.namedValues(task.n_metrics, task.metrics, field: "tasks[\(taskIndex)].metrics")))
        }
        var optimizer: StoredOptimizerState?
        if let state = manifest.optimizer_state?.pointee {
            optimizer = StoredOptimizerState(kind: decoder.string(state.kind), step: Int(truncatingIfNeeded: state.step),
                                             epoch: Int(truncatingIfNeeded: state.epoch),
                                             hyperparameters: try decoder.namedValues(state.n_hyperparameters, state.hyperparameters,
                                                                                      field: "optimizer_state.hyperparameters"))
        }
        return ContainerManifest(majorVersion: Int(header.majorVersion), minorVersion: Int(header.minorVersion),
                                 fileByteCount: Int(header.fileLength), writer: decoder.string(manifest.writer),
                                 graphName: skeleton.name, inputs: skeleton.inputs, outputs: skeleton.outputs, nodes: skeleton.nodes,
                                 parameters: parameters, provenance: skeleton.provenance, sourceSHA256: decoder.string(manifest.source_sha256),
                                 preprocessing: try manifest.preprocessing.map { p throws(ContainerError) in try decoder.preprocessing(p.pointee) },
                                 calibration: calibration, tasks: tasks, optimizerState: optimizer,
                                 metrics: try decoder.metrics(manifest), blobs: blobs.map(StoredTensor.init))
    }
}

/// POSIX `write(2)` (the name `write` is taken inside `ContainerFile`).
private func systemWrite(_ descriptor: Int32, _ bytes: UnsafeRawPointer, _ count: Int) -> Int {
    write(descriptor, bytes, count)
}

/// `strerror(errno)`.
func errorText() -> String {
    String(cString: strerror(errno))
}
