// Training-step times of full backprop, LANCE and per-batch HOSVD on the same batches, interleaved.
//
//     lance-train-bench MODEL.onnx FASHION_MNIST_TRAIN_IDX SIZE LAYERS ROUNDS [ENERGY]
//
// MobileNetV2 (any ONNX image classifier) at SIZE×SIZE with a new 10-class head; the last LAYERS
// convolutions (groups 1) and the head train; batch 32 of Fashion-MNIST (grey → RGB, direct resize,
// ImageNet mean/std). LANCE bases come from 8 calibration batches at ENERGY (default 0.7); HOSVD
// uses the same energy per batch. Per round and method, two optimizer steps from fresh weights are
// timed (a step: frozen forward, trained forward, loss, backward, update), and the trained part
// alone (the step from the frozen part's cached outputs, `Trainer.step(features:)`); and the
// compression of the first trained layer's input alone (LANCE's projection on the fixed bases vs
// the per-batch HOSVD). Prints medians over rounds:
//
//     step_ms full=… lance=… hosvd=…
//     trained_part_ms full=… lance=… hosvd=…
//     compression_ms layer=… lance=… hosvd=… ranks_lance=… ranks_hosvd=…
import Foundation
import LanceCore
import LanceData
import LanceModel
import LanceONNX
import LanceTrain

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("lance-train-bench: \(message)\n".utf8))
    exit(1)
}

func milliseconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

let arguments = CommandLine.arguments
guard arguments.count >= 6, let size = Int(arguments[3]), let layerCount = Int(arguments[4]), let rounds = Int(arguments[5]),
      rounds >= 1 else {
    fail("usage: lance-train-bench MODEL.onnx FASHION_MNIST_TRAIN_IDX SIZE LAYERS ROUNDS [ENERGY]")
}
let energy = arguments.count > 6 ? Float(arguments[6]) ?? 0.7 : 0.7
let batch = 32

do {
    var graph = try ONNXImporter.importModel(at: arguments[1])
    graph.inputs[0].dimensions = [.symbolic("N"), .fixed(3), .fixed(size), .fixed(size)]
    graph = try replaceHead(in: graph, classes: 10, seed: 0)
    let layers = try graph.trainedLayers(.last(layerCount))
    let preprocessing = Preprocessing(size: [size, size], resize: .direct, scale: 1 / 255, mean: [0.485, 0.456, 0.406],
                                      standardDeviation: [0.229, 0.224, 0.225], channels: 3)
    let source = try openDataSource(arguments[2], preprocessing: preprocessing)
    var iterator = try BatchIterator(source: source, batchSize: batch, shuffleSeed: 0, dropLast: true, limit: batch * 10)
    var batches: [Batch] = []
    while let next = try iterator.next() { batches.append(next) }
    let calibration = try calibrateBases(graph: graph, layers: layers, batches: batches.prefix(8).map(\.images),
                                         options: CalibrationOptions(energy: energy))
    let record = CalibrationRecord(energy: energy, batchSize: batch, batches: calibration.batches, accumulation: "plain-sum",
                                   layerRule: "last:\(layerCount)", dataDescription: "", dataFingerprint: "", layers: calibration.layers)
    let methods: [(String, TrainingMethod)] = [("full", .full), ("lance", .lance(record)), ("hosvd", .hosvd(energy: energy))]
    let timed = Array(batches.suffix(2))
    var step: [String: [Double]] = [:], trained: [String: [Double]] = [:]
    var lanceCompression: [Double] = [], hosvdCompression: [Double] = []
    var ranksHOSVD: [Int] = []
    let configuration = TrainerConfiguration(scheduleLength: 1)
    // The first trained layer's input, for the compression alone.
    let probe = try Trainer(graph: graph, layers: layers, method: .full, configuration: configuration)
    let features = try timed.map { try probe.frozenFeatures(images: $0.images) }
    guard let firstInput = features[0][layers[0].input] else { fail("the first trained layer's input is not a frozen value") }
    let firstBases = record.layers[0].modes

    for round in 0..<rounds {
        for (name, method) in (round % 2 == 0 ? methods : methods.reversed()) {
            var trainer = try Trainer(graph: graph, layers: layers, method: method, configuration: configuration)
            _ = try trainer.step(images: timed[0].images, labels: timed[0].labels)  // warm-up
            step[name, default: []].append(try milliseconds {
                _ = try trainer.step(images: timed[1].images, labels: timed[1].labels)
            })
            trained[name, default: []].append(try milliseconds {
                _ = try trainer.step(features: features[1], labels: timed[1].labels)
            })
        }
        lanceCompression.append(milliseconds { _ = TuckerCore(projecting: firstInput, bases: firstBases) })
        var core: TuckerCore?
        hosvdCompression.append(try milliseconds { core = try hosvdCompress(firstInput, energy: energy) })
        ranksHOSVD = core?.ranks ?? []
    }
    func line(_ label: String, _ values: [String: [Double]]) -> String {
        "\(label) " + methods.map { "\($0.0)=\(String(format: "%.1f", median(values[$0.0] ?? [])))" }.joined(separator: " ")
    }
    print(line("step_ms", step))
    print(line("trained_part_ms", trained))
    print(String(format: "compression_ms layer=%@ input=%@ lance=%.2f hosvd=%.2f ranks_lance=%@ ranks_hosvd=%@",
                 layers[0].node, "\(firstInput.shape)", median(lanceCompression), median(hosvdCompression),
                 "\(firstBases.map(\.rank))", "\(ranksHOSVD)"))
} catch {
    fail("\(error)")
}
