// Forward-pass throughput of one ONNX model in LANCE.
//
//     lance-forward-bench MODEL.onnx IMAGES.npy BATCH WARMUP ITERATIONS
//
// The batch is built from the rows of IMAGES.npy taken cyclically (batch 32 from 20 images = the 20
// images, then the first 12 again). After WARMUP untimed passes, each of ITERATIONS passes of the whole
// batch is timed; the line printed on stdout is
//
//     lance batch=32 images_per_s=… median_ms=… min_ms=… warmup=… iterations=… threads=… cpu_s=…
//
// where median_ms is the median time of one forward pass of the whole batch, images_per_s is
// BATCH / median and cpu_s the CPU time (user + system, all threads) of the whole process. The same
// format is printed by ort_forward.py for ONNX Runtime.
import Foundation
import LanceCLI
import LanceCore
import LanceData
import LanceLinalg
import LanceONNX
import LanceRuntime

func fail(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("lance-forward-bench: \(message)\n".utf8))
    exit(code)
}

// Like the command-line tools: use the OpenBLAS kernels this CPU supports.
relaunchWithSupportedBLASKernels()

let arguments = CommandLine.arguments
guard arguments.count == 6, let batch = Int(arguments[3]), let warmup = Int(arguments[4]),
      let iterations = Int(arguments[5]), batch >= 1, warmup >= 0, iterations >= 1 else {
    fail("usage: lance-forward-bench MODEL.onnx IMAGES.npy BATCH WARMUP ITERATIONS", code: 64)
}
let modelPath = arguments[1]
let dataPath = arguments[2]

let session: InferenceSession
let images: Tensor
do {
    session = InferenceSession(graph: try ONNXImporter.importModel(at: modelPath))
} catch {
    fail("\(modelPath): \(error)")
}
do {
    images = try NPY.read(dataPath).tensor
} catch {
    fail("\(dataPath): \(error)")
}
guard images.rank == 4, images.shape[0] >= 1 else {
    fail("\(dataPath): expected a float32 [N,C,H,W] array, got shape \(images.shape)")
}

// Rows 0, 1, …, N-1, 0, 1, … until `batch` rows.
let available = images.shape[0]
var parts: [Tensor] = []
var filled = 0
while filled < batch {
    let take = min(available, batch - filled)
    parts.append(images.slice(batch: 0..<take))
    filled += take
}
let input = Tensor.concatenate(batches: parts)

var checksum: Float = 0
func forward() -> Tensor {
    do {
        return try session.run(input)
    } catch {
        fail("\(modelPath): \(error)")
    }
}

for _ in 0..<warmup {
    checksum += forward().scalars.first ?? 0
}
let clock = ContinuousClock()
var milliseconds: [Double] = []
milliseconds.reserveCapacity(iterations)
var outputShape: [Int] = []
for _ in 0..<iterations {
    let start = clock.now
    let output = forward()
    let elapsed = start.duration(to: clock.now)
    let (seconds, attoseconds) = elapsed.components
    milliseconds.append(Double(seconds) * 1e3 + Double(attoseconds) * 1e-15)
    checksum += output.scalars.first ?? 0
    outputShape = output.shape
}
guard outputShape.first == batch else {
    fail("output has shape \(outputShape), expected batch \(batch) first")
}

let sorted = milliseconds.sorted()
let median = sorted.count % 2 == 1
    ? sorted[sorted.count / 2]
    : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
let threads = ProcessInfo.processInfo.activeProcessorCount
var usage = rusage()
#if os(Linux)
getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
#else
getrusage(RUSAGE_SELF, &usage)
#endif
let cpuSeconds = Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec)
    + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
print("lance batch=\(batch) images_per_s=\(String(format: "%.2f", Double(batch) / (median / 1e3)))"
      + " median_ms=\(String(format: "%.3f", median)) min_ms=\(String(format: "%.3f", sorted[0]))"
      + " warmup=\(warmup) iterations=\(iterations) threads=\(threads)"
      + " cpu_s=\(String(format: "%.3f", cpuSeconds)) blas_core=\(BLASThreads.coreName)")
// Keeps the outputs observable so no pass can be optimised away.
if checksum.isNaN { FileHandle.standardError.write(Data("lance-forward-bench: NaN in outputs\n".utf8)) }
