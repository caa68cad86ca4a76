import Foundation
import LanceCore

/// Per-sample outputs of a model's frozen part, kept on disk, so that later epochs skip the frozen
/// forward pass (and the decoding and preprocessing of the images).
///
/// Valid only while preprocessing is deterministic and the frozen weights do not change, which
/// holds for `lance-train`: only the trained layers' parameters change, and no augmentation runs.
/// One file per feature, `samples × elements` float32, in a temporary folder removed on `deinit`.
/// The files are written and read with `pwrite`/`pread`, not mapped: their pages stay in the
/// kernel's page cache (reclaimable) and never count towards the process's resident memory.
///
/// `batch(_:)` only reads, so it may run on another thread (`PrefetchedBatch`) while the caller
/// checks `contains(_:)`; nothing may `store` meanwhile.
final class FeatureCache: @unchecked Sendable {
    private let folder: URL
    private let sampleCount: Int
    private var storage: [String: (shape: [Int], elements: Int, descriptor: Int32, path: String)] = [:]
    private var labels: [Int]
    private var filled: [Bool]

    /// Creates an empty cache for `sampleCount` samples.
    init(sampleCount: Int) throws {
        self.sampleCount = sampleCount
        labels = [Int](repeating: -1, count: sampleCount)
        filled = [Bool](repeating: false, count: sampleCount)
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("lance-feature-cache-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    }

    deinit {
        for entry in storage.values { close(entry.descriptor) }
        try? FileManager.default.removeItem(at: folder)
    }

    /// Bytes the cache files take when every sample is stored.
    var fileBytes: Int { storage.values.reduce(0) { $0 + sampleCount * $1.elements * MemoryLayout<Float>.size } }

    /// Whether every sample of `indices` is stored.
    func contains(_ indices: [Int]) -> Bool { indices.allSatisfy { filled[$0] } }

    /// Stores one batch's features (`[B, ...]` each) and labels for the samples `indices`.
    func store(_ features: [String: Tensor], labels batchLabels: [Int], indices: [Int]) throws {
        for (name, tensor) in features {
            let shape = Array(tensor.shape.dropFirst())
            let elements = shape.reduce(1, *)
            if storage[name] == nil {
                let path = folder.appendingPathComponent("feature\(storage.count).f32").path
                let descriptor = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
                guard descriptor >= 0 else {
                    throw CommandError.dataMismatch(path: path, reason: "cannot create the feature cache: \(String(cString: strerror(errno)))")
                }
                storage[name] = (shape, elements, descriptor, path)
            }
            guard let entry = storage[name], entry.shape == shape else { continue }
            let rowBytes = entry.elements * MemoryLayout<Float>.size
            try tensor.withUnsafeBufferPointer { values in
                for (row, index) in indices.enumerated() {
                    let written = pwrite(entry.descriptor, values.baseAddress! + row * entry.elements, rowBytes, off_t(index * rowBytes))
                    guard written == rowBytes else {
                        throw CommandError.dataMismatch(path: entry.path, reason: "cannot write the feature cache (is the temporary folder full?): \(String(cString: strerror(errno)))")
                    }
                }
            }
        }
        for (row, index) in indices.enumerated() {
            labels[index] = batchLabels[row]
            filled[index] = true
        }
    }

    /// The stored features and labels of `indices`, as one batch.
    func batch(_ indices: [Int]) throws -> (features: [String: Tensor], labels: [Int]) {
        var features: [String: Tensor] = [:]
        for (name, entry) in storage {
            let rowBytes = entry.elements * MemoryLayout<Float>.size
            var failed = false
            features[name] = Tensor(shape: [indices.count] + entry.shape) { out in
                for (row, index) in indices.enumerated() where !failed {
                    failed = pread(entry.descriptor, out.baseAddress! + row * entry.elements, rowBytes, off_t(index * rowBytes)) != rowBytes
                }
            }
            if failed {
                throw CommandError.dataMismatch(path: entry.path, reason: "cannot read the feature cache: \(String(cString: strerror(errno)))")
            }
        }
        return (features, indices.map { labels[$0] })
    }
}

/// One batch read from a `FeatureCache` on a background thread, so that the read (6 MiB per batch
/// for MobileNetV2's last two convolutions at 224×224) overlaps the training step before it.
final class PrefetchedBatch: @unchecked Sendable {
    /// The samples being read.
    let indices: [Int]
    private let done = DispatchSemaphore(value: 0)
    private var result: Result<(features: [String: Tensor], labels: [Int]), Error>?

    /// Starts reading `indices` (all stored) from `cache`.
    init(_ cache: FeatureCache, indices: [Int]) {
        self.indices = indices
        DispatchQueue.global(qos: .userInitiated).async {
            self.result = Result { try cache.batch(indices) }
            self.done.signal()
        }
    }

    /// The batch, once read (or the read's error).
    func wait() throws -> (features: [String: Tensor], labels: [Int]) {
        done.wait()
        defer { result = nil }
        return try result!.get()
    }
}
