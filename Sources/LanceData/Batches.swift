import Foundation
import LanceCore


/// `0..<count` in an order fixed by `seed`: Fisher–Yates from the last position down, swapping
/// position `i` with `uniform(below: i + 1)` of `SplitMix64(seed:)`. The same on every platform.
public func shuffledIndices(count: Int, seed: UInt64) -> [Int] {
    var indices = Array(0..<count)
    var generator = SplitMix64(seed: seed)
    var position = count - 1
    while position > 0 {
        let other = Int(generator.uniform(below: UInt64(position + 1)))
        indices.swapAt(position, other)
        position -= 1
    }
    return indices
}

/// One batch: preprocessed images and their labels.
public struct Batch: Sendable {
    /// `[B, C, H, W]` float32, NCHW.
    public var images: Tensor
    /// `B` labels (`-1` when the source has no labels).
    public var labels: [Int]
    /// The `B` sample indices in the source.
    public var indices: [Int]
}

/// Reads a source batch by batch, in order or in a seeded shuffled order, holding only the
/// current batch in memory.
///
/// ```swift
/// var batches = try BatchIterator(source: source, batchSize: 32, shuffleSeed: 7)
/// while let batch = try batches.next() { … batch.images: [32, C, H, W] … }
/// ```
///
/// It is not a Swift `Sequence` because reading a sample can fail and `IteratorProtocol.next()`
/// cannot throw; `next()` here throws the `DataError` of the first sample that fails.
///
/// The samples of a batch are decoded and preprocessed on all cores; the result does not depend on
/// the number of cores.
public struct BatchIterator: Sendable {
    /// The source read.
    public let source: any DataSource
    /// Samples per batch (the last batch may be smaller unless `dropLast`).
    public let batchSize: Int
    /// The sample indices in the order they are read: `0..<count`, or `shuffledIndices(count:seed:)`,
    /// cut to `limit`, and cut to whole batches when `dropLast`.
    public let order: [Int]
    private var position = 0

    /// Prepares to read `source`.
    ///
    /// - Parameters:
    ///   - batchSize: samples per batch, at least 1.
    ///   - shuffleSeed: `nil` reads in index order; a seed reads in `shuffledIndices(count:seed:)` order.
    ///   - dropLast: leave out a last batch smaller than `batchSize`.
    ///   - limit: read only the first `limit` samples of the order (a random subset when shuffled).
    /// - Throws: `DataError.invalidOption` for a batch size below 1 or a negative limit.
    public init(source: any DataSource, batchSize: Int, shuffleSeed: UInt64? = nil, dropLast: Bool = false,
                limit: Int? = nil) throws(DataError) {
        guard batchSize >= 1 else { throw .invalidOption(name: "batch size", reason: "\(batchSize) is below 1") }
        if let limit, limit < 0 { throw .invalidOption(name: "limit", reason: "\(limit) is negative") }
        self.source = source
        self.batchSize = batchSize
        var order = shuffleSeed.map { shuffledIndices(count: source.count, seed: $0) } ?? Array(0..<source.count)
        if let limit, limit < order.count { order.removeSubrange(limit...) }
        if dropLast { order.removeSubrange((order.count - order.count % batchSize)...) }
        self.order = order
    }

    /// The number of batches in all.
    public var batchCount: Int { (order.count + batchSize - 1) / batchSize }

    /// The next batch, or `nil` after the last.
    ///
    /// - Throws: the `DataError` of the first sample of the batch that cannot be read or
    ///   preprocessed, and `DataError.inconsistentSampleShapes` when samples preprocess to
    ///   different shapes (no size in the preprocessing).
    public mutating func next() throws(DataError) -> Batch? {
        guard position < order.count else { return nil }
        let indices = Array(order[position..<min(position + batchSize, order.count)])
        position += indices.count
        return try readBatch(source, indices: indices)
    }
}

/// Reads and preprocesses the samples `indices` of `source` into one `[B, C, H, W]` batch, on all cores.
///
/// - Throws: the first failing sample's `DataError` (lowest position in `indices`), or
///   `DataError.inconsistentSampleShapes` when the samples' shapes differ.
public func readBatch(_ source: any DataSource, indices: [Int]) throws(DataError) -> Batch {
    guard !indices.isEmpty else {
        return Batch(images: Tensor(shape: [0]), labels: [], indices: [])
    }
    let results = SampleSlots(count: indices.count)
    let workers = min(indices.count, ProcessInfo.processInfo.activeProcessorCount)
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
        var slot = worker
        while slot < indices.count {
            do throws(DataError) {
                results.store(slot, .success(try source.sample(at: indices[slot])))
            } catch {
                results.store(slot, .failure(error))
            }
            slot += workers
        }
    }
    let first = try results.take(0).get()
    let shape = first.image.shape
    let sampleSize = first.image.count
    var labels = [Int](repeating: -1, count: indices.count)
    var images = Tensor(shape: [indices.count] + shape)
    for slot in 0..<indices.count {
        let sample = if slot == 0 { first } else { try results.take(slot).get() }
        guard sample.image.shape == shape else {
            throw .inconsistentSampleShapes(path: source.samplePath(at: indices[slot]), index: indices[slot],
                                            shape: sample.image.shape, firstShape: shape)
        }
        labels[slot] = sample.label
        images.withUnsafeMutableBufferPointer { target in
            sample.image.withUnsafeBufferPointer { values in
                _ = UnsafeMutableBufferPointer(rebasing: target[(slot * sampleSize)..<((slot + 1) * sampleSize)])
                    .initialize(fromContentsOf: values)
            }
        }
    }
    return Batch(images: images, labels: labels, indices: indices)
}

/// Per-slot results written by worker threads, each slot by exactly one worker.
private final class SampleSlots: @unchecked Sendable {
    private var slots: [Result<(image: Tensor, label: Int), DataError>?]
    private let lock = NSLock()

    init(count: Int) { slots = Array(repeating: nil, count: count) }

    func store(_ slot: Int, _ result: Result<(image: Tensor, label: Int), DataError>) {
        lock.lock()
        slots[slot] = result
        lock.unlock()
    }

    /// The slot's result, removed so the sample's memory is released as soon as it is copied.
    func take(_ slot: Int) -> Result<(image: Tensor, label: Int), DataError> {
        lock.lock()
        defer { lock.unlock() }
        let result = slots[slot]!
        slots[slot] = nil
        return result
    }
}
