import LanceCore
import LanceData
import LanceTrain

/// The frozen part's outputs and the labels for `samples` of `source`, computed slice by slice
/// (`Trainer.frozenFeatures(batchSize:images:)`): each slice's samples are read just before the
/// slice runs, so a whole batch of model inputs and early-layer activations is never held.
///
/// - Throws: the `DataError` of a failed read, or the `TrainingError` of the frozen pass.
func slicedFrozenFeatures(_ trainer: Trainer, source: any DataSource, samples: [Int]) throws -> (features: [String: Tensor], labels: [Int]) {
    var labels: [Int] = []
    var readError: DataError?
    do {
        let features = try trainer.frozenFeatures(batchSize: samples.count) { range throws(TrainingError) in
            do throws(DataError) {
                let read = try readBatch(source, indices: Array(samples[range]))
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
