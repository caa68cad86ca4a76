import Foundation
import LanceCore

/// Per-sample outputs of a model's frozen part, kept on disk and memory mapped, so that later
/// epochs skip the frozen forward pass (and the decoding and preprocessing of the images).
///
/// Valid only while preprocessing is deterministic and the frozen weights do not change, which
/// holds for `lance-train`: only the trained layers' parameters change, and no augmentation runs.
/// One file per feature, `samples × elements` float32, in a temporary folder removed on `deinit`.
final class FeatureCache {
    private let folder: URL
    private let sampleCount: Int
    private var storage: [String: (shape: [Int], elements: Int, memory: UnsafeMutablePointer<Float>, bytes: Int)] = [:]
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
        for entry in storage.values { munmap(entry.memory, entry.bytes) }
        try? FileManager.default.removeItem(at: folder)
    }

    /// Bytes the cache files take when every sample is stored.
    var fileBytes: Int { storage.values.reduce(0) { $0 + $1.bytes } }

    /// Whether every sample of `indices` is stored.
    func contains(_ indices: [Int]) -> Bool { indices.allSatisfy { filled[$0] } }

    /// Stores one batch's features (`[B, ...]` each) and labels for the samples `indices`.
    func store(_ features: [String: Tensor], labels batchLabels: [Int], indices: [Int]) throws {
        for (name, tensor) in features {
            let shape = Array(tensor.shape.dropFirst())
            let elements = shape.reduce(1, *)
            if storage[name] == nil {
                let bytes = max(1, sampleCount * elements * MemoryLayout<Float>.size)
                let path = folder.appendingPathComponent("feature\(storage.count).f32").path
                let descriptor = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
                guard descriptor >= 0, ftruncate(descriptor, off_t(bytes)) == 0 else {
                    if descriptor >= 0 { close(descriptor) }
                    throw CommandError.dataMismatch(path: path, reason: "cannot create the feature cache: \(String(cString: strerror(errno)))")
                }
                let mapped = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
                close(descriptor)
                guard let mapped, mapped != MAP_FAILED else {
                    throw CommandError.dataMismatch(path: path, reason: "cannot map the feature cache: \(String(cString: strerror(errno)))")
                }
                storage[name] = (shape, elements, mapped.assumingMemoryBound(to: Float.self), bytes)
            }
            guard let entry = storage[name], entry.shape == shape else { continue }
            tensor.withUnsafeBufferPointer { values in
                for (row, index) in indices.enumerated() {
                    (entry.memory + index * entry.elements).update(from: values.baseAddress! + row * entry.elements, count: entry.elements)
                }
            }
        }
        for (row, index) in indices.enumerated() {
            labels[index] = batchLabels[row]
            filled[index] = true
        }
    }

    /// The stored features and labels of `indices`, as one batch.
    func batch(_ indices: [Int]) -> (features: [String: Tensor], labels: [Int]) {
        var features: [String: Tensor] = [:]
        for (name, entry) in storage {
            features[name] = Tensor(shape: [indices.count] + entry.shape) { out in
                for (row, index) in indices.enumerated() {
                    (out.baseAddress! + row * entry.elements).update(from: entry.memory + index * entry.elements, count: entry.elements)
                }
            }
        }
        return (features, indices.map { labels[$0] })
    }
}
