import LanceCore
import LanceData
import LanceTrain

/// The frozen part's outputs and the labels for `samples` of `source`, computed slice by slice
/// (`Trainer.frozenFeatures(batchSize:images:)`): each slice's samples are read just before the
/// slice runs, so a whole batch of model inputs and early-layer activations is never held. The
/// samples are mirrored where `flip` chooses so in `epoch` (`readSamples`).
///
/// - Throws: the `DataError` of a failed read, or the `TrainingError` of the frozen pass.
func slicedFrozenFeatures(_ trainer: Trainer, source: any DataSource, samples: [Int],
                          flip: HorizontalFlip?, epoch: Int) throws -> (features: [String: Tensor], labels: [Int]) {
    var labels: [Int] = []
    var readError: DataError?
    do {
        let features = try trainer.frozenFeatures(batchSize: samples.count) { range throws(TrainingError) in
            do throws(DataError) {
                let read = try readSamples(source, indices: Array(samples[range]), flip: flip, epoch: epoch)
                labels += read.labels
                return read.images
            } catch {
                readError = error
                throw .data(reason: error.description)
            }
        }
        return (features, labels)
    } catch {
        if let readError { throw readError }
        throw error
    }
}

/// Reads the first `limit` samples of `source` (all when `nil`) in order, `TrainingGraph.frozenSliceSize`
/// at a time, and hands each slice to `body`, which returns `false` to stop early. Evaluation scores
/// every sample on its own, so slices give the batch's results while only one slice of model inputs
/// and activations is alive.
func forEachEvaluationSlice(of source: any DataSource, limit: Int?, _ body: (Batch) throws -> Bool) throws {
    let count = min(limit ?? source.count, source.count)
    let sliceSize = TrainingGraph.frozenSliceSize
    for start in stride(from: 0, to: count, by: sliceSize) {
        guard try body(try readBatch(source, indices: Array(start..<min(count, start + sliceSize)))) else { return }
    }
}

/// The samples `indices` of `source`, read and preprocessed (`readBatch`), then mirrored where
/// `flip` chooses so in `epoch`.
func readSamples(_ source: any DataSource, indices: [Int], flip: HorizontalFlip?, epoch: Int) throws(DataError) -> Batch {
    var batch = try readBatch(source, indices: indices)
    flip?.apply(to: &batch.images, samples: indices, epoch: epoch)
    return batch
}
