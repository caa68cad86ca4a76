import LanceCore

/// Runs `forward` on consecutive slices of at most `sliceSize` samples covering `0..<batchSize` and
/// joins every named output into one `[batchSize, ...]` tensor. Each slice's outputs are copied into
/// place as they arrive, so only one slice's intermediate values are alive at a time.
///
/// The forward pass does not depend on how a batch is split (`InferenceSession` computes every
/// sample on its own), so the joined outputs equal those of one pass over the whole batch.
///
/// - Throws: what `forward` throws; `TrainingError.data` when a slice's output does not have the
///   slice's sample count as its first extent.
func joinedSlices(batchSize: Int, sliceSize: Int,
                  _ forward: (Range<Int>) throws(TrainingError) -> [String: Tensor]) throws(TrainingError) -> [String: Tensor] {
    precondition(sliceSize > 0, "joinedSlices: slice size \(sliceSize)")
    var joined: [String: Tensor] = [:]
    var start = 0
    while start < batchSize {
        let range = start..<min(batchSize, start + sliceSize)
        for (name, part) in try forward(range) {
            guard part.shape.first == range.count else {
                throw .data(reason: "'\(name)' of samples \(range) has shape \(part.shape), not \(range.count) samples")
            }
            let perSample = part.count / max(range.count, 1)
            var whole = joined.removeValue(forKey: name) ?? Tensor(shape: [batchSize] + part.shape.dropFirst())
            part.withUnsafeBufferPointer { source in
                whole.withUnsafeMutableBufferPointer { target in
                    (target.baseAddress! + range.lowerBound * perSample).update(from: source.baseAddress!, count: source.count)
                }
            }
            joined[name] = whole
        }
        start = range.upperBound
    }
    return joined
}
