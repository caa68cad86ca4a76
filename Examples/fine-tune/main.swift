// Fine-tunes a calibrated .lance container with the library API, the way an app would with its
// own batches: one epoch of LANCE training, then the container is written back.
//
//     swift run lance-example-fine-tune CONTAINER.lance DATA [BATCHES]
//
// DATA is anything `openDataSource` reads (an image folder, .npy/.npz, HDF5, IDX files).
import Foundation
import LanceCore
import LanceData
import LanceFormat
import LanceModel
import LanceTrain

func fineTune(containerPath: String, dataPath: String, batchLimit: Int) throws {
    // 1. The container: model, preprocessing and the calibrated bases of the trained layers.
    var container = try ContainerFile.read(containerPath)
    guard let calibration = container.calibration, let preprocessing = container.preprocessing else {
        print("\(containerPath) has no calibration; run lance-convert --calibration first")
        return
    }
    // 2. The data, preprocessed as the container says; a new head when the classes differ.
    let source = try openDataSource(dataPath, preprocessing: preprocessing)
    var graph = container.graph
    let classes = source.classNames.count
    if let output = graph.outputs.first?.dimensions?.last, case .fixed(let current) = output, current != classes {
        graph = try replaceHead(in: graph, classes: classes, seed: 1)
    }
    // 3. A trainer over the calibrated layers (the head keeps its name when replaced).
    let layers = try graph.trainedLayers(.names(calibration.layers.map(\.layer)))
    var trainer = try Trainer(graph: graph, layers: layers, method: .lance(calibration),
                              configuration: TrainerConfiguration(learningRate: 0.05, scheduleLength: 1))
    // 4. Batches of the calibration batch size (the batch basis is B × r), shuffled with a seed.
    var batches = try BatchIterator(source: source, batchSize: calibration.batchSize, shuffleSeed: 7, dropLast: true,
                                    limit: batchLimit * calibration.batchSize)
    while let batch = try batches.next() {
        let result = try trainer.step(images: batch.images, labels: batch.labels)
        print("loss \(result.loss), accuracy \(result.accuracy), "
              + "\(result.memory.trainedLayerBytes) bytes held for the trained layers' weight gradients")
    }
    trainer.finishEpoch()
    // 5. The updated weights and the optimizer state go back into the container (written atomically).
    container.graph = trainer.graph
    container.optimizerState = trainer.snapshot
    try ContainerFile.write(container, to: containerPath)
}

let arguments = CommandLine.arguments
guard arguments.count >= 3 else {
    print("usage: lance-example-fine-tune CONTAINER.lance DATA [BATCHES]")
    exit(64)
}
do {
    try fineTune(containerPath: arguments[1], dataPath: arguments[2], batchLimit: arguments.count > 3 ? Int(arguments[3]) ?? 4 : 4)
} catch {
    print("error: \(error)")
    exit(1)
}
