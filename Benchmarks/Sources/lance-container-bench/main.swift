// Container conversion and loading times for one model.
//
//     lance-container-bench MODEL.onnx OUTPUT_FOLDER ROUNDS
//
// Per round: import the model and write it as a container (the work of `lance-convert` without
// calibration), then read the container back (memory mapped, every blob checksum verified), in
// float32 and in float16 storage. Prints the medians:
//
//     container import_write_ms=… read_ms=… read_fp16_ms=… bytes=… bytes_fp16=… weights_bytes=…
import Foundation
import LanceFormat
import LanceModel
import LanceONNX

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("lance-container-bench: \(message)\n".utf8))
    exit(1)
}

let arguments = CommandLine.arguments
guard arguments.count == 4, let rounds = Int(arguments[3]), rounds >= 1 else {
    fail("usage: lance-container-bench MODEL.onnx OUTPUT_FOLDER ROUNDS")
}
let model = arguments[1]
let folder = URL(fileURLWithPath: arguments[2])
let output = folder.appendingPathComponent("bench.lance").path
let outputHalf = folder.appendingPathComponent("bench-fp16.lance").path

func milliseconds(_ body: () throws -> Void) rethrows -> Double {
    let start = DispatchTime.now().uptimeNanoseconds
    try body()
    return Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

var importWrite: [Double] = [], read: [Double] = [], readHalf: [Double] = []
var weightsBytes = 0
do {
    for _ in 0..<rounds {
        importWrite.append(try milliseconds {
            let graph = try ONNXImporter.importModel(at: model)
            weightsBytes = graph.parameters.reduce(0) { $0 + $1.tensor.count * 4 }
            try ContainerFile.write(Container(graph: graph, sourceSHA256: ""), to: output)
        })
        read.append(try milliseconds { _ = try ContainerFile.read(output) })
        let container = try ContainerFile.read(output)
        var frozen = container
        for index in frozen.graph.parameters.indices { frozen.graph.parameters[index].trainable = false }
        try ContainerFile.write(frozen, to: outputHalf, halfPrecision: true)
        readHalf.append(try milliseconds { _ = try ContainerFile.read(outputHalf) })
    }
} catch {
    fail("\(error)")
}
func size(_ path: String) -> Int { (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0 }
print(String(format: "container import_write_ms=%.1f read_ms=%.1f read_fp16_ms=%.1f bytes=%d bytes_fp16=%d weights_bytes=%d",
             median(importWrite), median(read), median(readHalf), size(output), size(outputHalf), weightsBytes))
